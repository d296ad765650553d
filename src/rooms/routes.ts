// Room routes (docs/rooms.md). The paths are the later revision's; with a user's session
// token they are this provider's client API for rooms hosted here.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { requireUser } from '../auth/routes.js';
import { intParam } from '../http/app.js';
import { HttpError, badRequest, forbidden, notFound } from '../http/errors.js';
import { isValidDomain, parseAddress } from '../protocol/address.js';
import { isValidCode, isValidRoomName, parseCreateRoom, parsePolicyUpdate, parseReferral, parseRoomAddress, parseRoomMessage } from './protocol.js';

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 500;

function obj(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw badRequest('the body must be a JSON object');
  return body as Record<string, unknown>;
}

export function roomRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { rooms, config } = ctx;

  /** `:room` is a room name, or `name#domain` with our domain. */
  function roomName(req: FastifyRequest): string {
    const raw = String((req.params as Record<string, string>).room ?? '');
    if (raw.includes('#')) {
      const a = parseRoomAddress(raw);
      if (!a) throw badRequest(`"${raw.slice(0, 80)}" is not a room name or name#domain`, 'invalid_room');
      if (a.domain !== config.domain) throw notFound(`${a.full} is not hosted here`, 'no_such_room');
      return a.name;
    }
    const name = raw.toLowerCase();
    if (!isValidRoomName(name)) throw badRequest(`"${raw.slice(0, 80)}" is not a room name`, 'invalid_room');
    return name;
  }

  function userParam(req: FastifyRequest): string {
    const a = parseAddress((req.params as Record<string, string>).user);
    if (!a.ok) throw badRequest(`user: ${a.reason}`, 'invalid_address');
    return a.address.full;
  }

  function codeOf(body: Record<string, unknown>): string | null {
    if (body.code === undefined || body.code === null) return null;
    if (!isValidCode(body.code)) throw badRequest('code: 1–128 characters of A-Z a-z 0-9 _ -', 'invalid_invite');
    return body.code;
  }

  app.post('/rooms', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const p = parseCreateRoom(req.body);
    if (!p.ok) throw badRequest(p.message);
    reply.code(201);
    return rooms.create(user.address, p.value);
  });

  // The later revision's optional GET /rooms: public rooms hosted here.
  app.get('/rooms', async () => ({ rooms: await rooms.listPublic() }));

  // The rooms the user is a member of (hosted here).
  app.get('/me/rooms', async (req) => {
    const user = await requireUser(ctx, req);
    return { rooms: await rooms.joinedBy(user.address) };
  });

  // Member side: join by referral (`room=name%23domain&code=…`) or by room address.
  app.post('/me/rooms', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const body = obj(req.body);
    const ref = body.referral !== undefined ? parseReferral(body.referral) : (() => {
      const a = parseRoomAddress(body.room);
      return a ? { room: a.full, code: codeOf(body) } : null;
    })();
    if (!ref) throw badRequest('give {referral: "room=name%23domain&code=…"} or {room: "name#domain", code?}', 'invalid_room');
    const a = parseRoomAddress(ref.room)!;
    if (a.domain !== config.domain) throw new HttpError(501, 'not_implemented', `joining rooms hosted elsewhere (${a.domain}) is not supported yet`);
    const res = await rooms.join(a.name, user.address, ref.code);
    reply.code(res.joined ? 201 : 200);
    return res.info;
  });

  app.get('/rooms/:room', async (req) => {
    const user = await requireUser(ctx, req).catch(() => null);
    return rooms.get(roomName(req), user?.address ?? null);
  });

  app.patch('/rooms/:room', async (req) => {
    const user = await requireUser(ctx, req);
    const p = parsePolicyUpdate(req.body);
    if (!p.ok) throw badRequest(p.message);
    return rooms.updatePolicy(roomName(req), user.address, p.value);
  });

  app.get('/rooms/:room/members', async (req) => {
    const user = await requireUser(ctx, req);
    return { members: await rooms.members(roomName(req), user.address) };
  });

  // PUT /rooms/{room}/members/{user}: the token's user must be {user}.
  app.put('/rooms/:room/members/:user', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const name = roomName(req);
    const target = userParam(req);
    if (target !== user.address) throw forbidden(`you are ${user.address}: you can only add yourself`, 'sub_mismatch');
    const res = await rooms.join(name, target, codeOf(obj(req.body)));
    reply.code(res.joined ? 201 : 200);
    return res.info;
  });

  // DELETE: the user leaves, or a moderator removes them.
  app.delete('/rooms/:room/members/:user', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const left = await rooms.leave(roomName(req), userParam(req), user.address);
    if (!left) throw notFound('not a member', 'not_a_member');
    reply.code(204);
    return null;
  });

  app.put('/rooms/:room/members/:user/role', async (req) => {
    const user = await requireUser(ctx, req);
    const role = obj(req.body).role;
    if (role !== 'moderator' && role !== 'member') throw badRequest('role: "moderator" or "member"');
    await rooms.setRole(roomName(req), user.address, userParam(req), role);
    return { role };
  });

  app.post('/rooms/:room/messages', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const name = roomName(req);
    const body = obj(req.body);
    if (body.from !== undefined && body.from !== user.address) throw forbidden(`from: you are ${user.address}`, 'from_mismatch');
    if (body.room !== undefined && parseRoomAddress(body.room)?.full !== rooms.address(name)) throw badRequest(`room: this is ${rooms.address(name)}`, 'invalid_room');
    const m = parseRoomMessage(body, ctx.clock.now(), config.clockSkewMs);
    if (!m.ok) throw badRequest(m.message, 'invalid_message');
    const res = await rooms.post(name, user.address, m.value);
    reply.code(201);
    if (res.replayed) reply.header('intertalk-replayed', 'true');
    return res.message;
  });

  // GET /rooms/{room}/messages?since&limit (since: epoch ms; after: a room seq, to page on).
  app.get('/rooms/:room/messages', async (req) => {
    const user = await requireUser(ctx, req);
    const q = req.query as Record<string, unknown>;
    return {
      messages: await rooms.history(roomName(req), user.address, {
        since: intParam('since', q.since, { min: 0, max: Number.MAX_SAFE_INTEGER }),
        after: intParam('after', q.after, { min: 0, max: Number.MAX_SAFE_INTEGER }),
        limit: intParam('limit', q.limit, { min: 1, max: MAX_LIMIT }) ?? DEFAULT_LIMIT,
      }),
    };
  });

  app.delete('/rooms/:room/messages/:seq', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const seq = intParam('seq', (req.params as Record<string, string>).seq, { min: 1, max: Number.MAX_SAFE_INTEGER })!;
    if (!(await rooms.removeMessage(roomName(req), user.address, seq))) throw notFound('no such message', 'no_such_message');
    reply.code(204);
    return null;
  });

  app.post('/rooms/:room/invites', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const multi = obj(req.body).multiUse;
    if (multi !== undefined && typeof multi !== 'boolean') throw badRequest('multiUse: true or false');
    reply.code(201);
    return rooms.createInvite(roomName(req), user.address, multi === true);
  });

  app.delete('/rooms/:room/invites/:code', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const code = (req.params as Record<string, string>).code;
    if (!isValidCode(code) || !(await rooms.revokeInvite(roomName(req), user.address, code))) throw notFound('no such invite', 'invalid_invite');
    reply.code(204);
    return null;
  });

  // Bans: {subject} is an address or a whole domain.
  function subjectParam(req: FastifyRequest): string {
    const raw = String((req.params as Record<string, string>).subject ?? '');
    if (raw.includes('@')) return userParam({ params: { user: raw } } as unknown as FastifyRequest);
    const d = raw.toLowerCase();
    if (!/^[\x21-\x7e]+$/.test(d) || !isValidDomain(d)) throw badRequest('subject: an address or a domain', 'invalid_address');
    return d;
  }

  app.put('/rooms/:room/bans/:subject', async (req) => {
    const user = await requireUser(ctx, req);
    const subject = subjectParam(req);
    return { subject, ...(await rooms.ban(roomName(req), user.address, subject)) };
  });

  app.delete('/rooms/:room/bans/:subject', async (req, reply) => {
    const user = await requireUser(ctx, req);
    if (!(await rooms.unban(roomName(req), user.address, subjectParam(req)))) throw notFound('no such ban', 'no_such_ban');
    reply.code(204);
    return null;
  });
}
