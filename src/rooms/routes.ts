// Room routes (docs/rooms.md). The paths are the later revision's; with a user's session
// token they are this provider's client API for rooms hosted here.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { Counter } from 'prom-client';
import { requireUser } from '../auth/routes.js';
import { intParam, looksLikeJwt } from '../http/app.js';
import { HttpError, badRequest, forbidden, notFound } from '../http/errors.js';
import { clientBucket } from '../auth/limiter.js';
import { peerLimit, type FederationAuthResult } from '../federation/verify.js';
import { isValidDomain, parseAddress } from '../protocol/address.js';
import { isValidCode, isValidRoomName, parseCreateRoom, parsePolicyUpdate, parseReferral, parseRoomAddress, parseRoomMessage } from './protocol.js';
import { MAX_JWS_LENGTH, roomPeersOf } from './peers.js';
import { RoomFanout } from './fanout.js';
import { RemoteRooms, type PeerAnswer } from './remote.js';

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 500;

function obj(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw badRequest('the body must be a JSON object');
  return body as Record<string, unknown>;
}

type RoomAddress = { name: string; domain: string; full: string };

/** A peer's answer relayed to our client, or a peer request's refusal. */
function answer(reply: FastifyReply, a: PeerAnswer): unknown {
  reply.code(a.status).headers(a.headers ?? {});
  return a.status === 204 ? null : a.body;
}

function refused(a: Extract<FederationAuthResult, { ok: false }>): HttpError {
  return new HttpError(a.status, a.error, a.message, a.retryAfterSeconds ? { 'retry-after': String(Math.ceil(a.retryAfterSeconds)) } : undefined);
}

export function roomRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { rooms, config } = ctx;

  // Rooms across providers (peers.ts, fanout.ts, remote.ts), when the provider federates.
  const peers = roomPeersOf(ctx.federation, config.domain);
  const inbound = new Counter({ name: 'intertalk_room_federation_requests_total', help: 'Room requests from peer providers (POST /roomMessages, signed posts, memberships), by route and HTTP status.', labelNames: ['route', 'status'] as const, registers: [ctx.metrics.registry] });
  let remote: RemoteRooms | null = null;
  let fanout: RoomFanout | null = null;
  const peerLimiter = ctx.rateLimiter('fed-rooms-peer', config.federation.inboundRatePerMinute, 60_000);
  const ipLimiter = ctx.rateLimiter('fed-rooms-ip', config.federation.inboundRatePerMinute, 60_000);
  const gate = (iss: string) => peerLimit(peerLimiter, `fed-rooms-peer:${iss}`, iss);
  if (peers) {
    const outcomes = new Counter({ name: 'intertalk_room_fanout_attempts_total', help: 'POST /roomMessages attempts to member providers, by outcome.', labelNames: ['outcome'] as const, registers: [ctx.metrics.registry] });
    fanout = new RoomFanout({
      db: ctx.storage.db,
      domain: config.domain,
      clock: ctx.clock,
      logger: ctx.logger,
      peers,
      sweepIntervalMs: config.federation.sweepIntervalMs,
      timeoutMs: config.federation.requestTimeoutMs,
      onAttempt: (outcome) => outcomes.inc({ outcome }),
      isBlocked: (d) => peers.isBlocked(d),
    });
    const f = fanout;
    remote = new RemoteRooms({
      db: ctx.storage.db,
      domain: config.domain,
      clock: ctx.clock,
      bus: ctx.bus,
      logger: ctx.logger,
      peers,
      timeoutMs: config.federation.requestTimeoutMs,
      skewMs: config.clockSkewMs,
      gate,
      onPeerSeen: (d) => void f.peerIsUp(d).catch(() => undefined),
      reconcileMs: config.roomReconcileMs,
    });
    rooms.federate(peers, fanout, remote);
  }

  // A signed room message as the body of POST /rooms/{room}/messages (the revision: "the JWS in
  // the body"): application/jose, kept as text.
  app.addContentTypeParser(/^application\/jose(\s*;.*)?$/, { parseAs: 'string', bodyLimit: MAX_JWS_LENGTH }, (_req, body, done) => done(null, String(body).trim()));

  /** `:room` is a room name, or `name#domain`: hosted here, or (for our users) elsewhere. */
  function roomTarget(req: FastifyRequest): { local: string } | { remote: RoomAddress } {
    const raw = String((req.params as Record<string, string>).room ?? '');
    if (raw.includes('#')) {
      const a = parseRoomAddress(raw);
      if (!a) throw badRequest(`"${raw.slice(0, 80)}" is not a room name or name#domain`, 'invalid_room');
      if (a.domain !== config.domain) return { remote: a };
      return { local: a.name };
    }
    const name = raw.toLowerCase();
    if (!isValidRoomName(name)) throw badRequest(`"${raw.slice(0, 80)}" is not a room name`, 'invalid_room');
    return { local: name };
  }

  /** `:room` hosted here (a room elsewhere: 404). */
  function roomName(req: FastifyRequest): string {
    const t = roomTarget(req);
    if ('remote' in t) throw notFound(`${t.remote.full} is not hosted here`, 'no_such_room');
    return t.local;
  }

  /** A room hosted elsewhere, for one of our users: the member side, or 501 without federation. */
  function remoteSide(room: RoomAddress): RemoteRooms {
    if (!remote) throw new HttpError(501, 'not_implemented', `this provider does not federate: rooms hosted elsewhere (${room.domain}) are not available`);
    return remote;
  }

  /** The bearer is a peer provider's JWT (not one of our access tokens). */
  function peerToken(req: FastifyRequest): boolean {
    const h = req.headers.authorization;
    if (!h) return false;
    const m = /^Bearer\s+(\S+)$/i.exec(h.trim());
    return looksLikeJwt(m ? m[1]! : h.trim());
  }

  /** Authenticates a peer's request for one of its users (`sub`), bound to method, path and body. */
  async function peerUser(req: FastifyRequest, route: string): Promise<{ sub: string; iss: string }> {
    if (!peers) throw new HttpError(403, 'federation_disabled', 'this provider does not accept requests from other providers');
    const ip = await ipLimiter.hit(`fed-rooms-ip:${clientBucket(req.ip)}`);
    if (!ip.allowed) throw new HttpError(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0);
    const request = Buffer.concat([Buffer.from(`${req.method} ${req.url}\n`, 'utf8'), raw]);
    const auth = await peers.verifyUser(req.headers.authorization, request.toString('latin1'), gate);
    if (!auth.ok) {
      inbound.inc({ route, status: String(auth.status) });
      throw refused(auth);
    }
    if (await peers.isBlocked(auth.iss)) {
      inbound.inc({ route, status: '403' });
      throw forbidden(`${auth.iss} is blocked by this provider`, 'domain_blocked');
    }
    if (auth.iss === config.domain) throw forbidden('a peer cannot act for our own users', 'sender_is_local');
    void fanout?.peerIsUp(auth.iss).catch(() => undefined);
    return { sub: auth.sub, iss: auth.iss };
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
    return { rooms: [...(await rooms.joinedBy(user.address)), ...(remote ? await remote.joinedBy(user.address) : [])] };
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
    if (a.domain !== config.domain) return answer(reply, await remoteSide(a).join(user.address, a, ref.code));
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

  // PUT /rooms/{room}/members/{user}: the token's user must be {user}. With a peer's token
  // (sub = {user}, iss = the user's domain) it joins a user of that provider to a room hosted
  // here; with one of our sessions, to a room here or (name#host) elsewhere.
  app.put('/rooms/:room/members/:user', async (req, reply) => {
    if (peerToken(req)) {
      const name = roomName(req);
      const target = userParam(req);
      const peer = await peerUser(req, 'members');
      if (peer.sub !== target) throw forbidden('the token\'s "sub" must be {user}', 'sub_mismatch');
      const res = await rooms.join(name, target, codeOf(obj(req.body)));
      inbound.inc({ route: 'members', status: res.joined ? '201' : '200' });
      reply.code(res.joined ? 201 : 200);
      // (ours) The room's seq when the member joined: with history "join" they read after it.
      const m = await rooms.member(name, target);
      return { ...res.info, ...(m ? { joinedSeq: m.joined_seq } : {}) };
    }
    const user = await requireUser(ctx, req);
    const t = roomTarget(req);
    const target = userParam(req);
    if (target !== user.address) throw forbidden(`you are ${user.address}: you can only add yourself`, 'sub_mismatch');
    if ('remote' in t) return answer(reply, await remoteSide(t.remote).join(user.address, t.remote, codeOf(obj(req.body))));
    const res = await rooms.join(t.local, target, codeOf(obj(req.body)));
    reply.code(res.joined ? 201 : 200);
    return res.info;
  });

  // DELETE: the user leaves, or a moderator removes them. A peer's token: its user leaves.
  app.delete('/rooms/:room/members/:user', async (req, reply) => {
    if (peerToken(req)) {
      const name = roomName(req);
      const target = userParam(req);
      const peer = await peerUser(req, 'members');
      if (peer.sub !== target) throw forbidden('the token\'s "sub" must be {user}', 'sub_mismatch');
      const left = await rooms.leave(name, target, target);
      inbound.inc({ route: 'members', status: left ? '204' : '404' });
      if (!left) throw notFound('not a member', 'not_a_member');
      reply.code(204);
      return null;
    }
    const user = await requireUser(ctx, req);
    const t = roomTarget(req);
    if ('remote' in t) {
      if (userParam(req) !== user.address) throw forbidden('in a room hosted elsewhere you can only remove yourself', 'not_allowed');
      return answer(reply, await remoteSide(t.remote).leave(user.address, t.remote));
    }
    const left = await rooms.leave(t.local, userParam(req), user.address);
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
    // From a member's provider: the body is the signed room message (application/jose, or a
    // JSON string), no Authorization needed (the revision).
    if (typeof req.body === 'string' && (req.headers.authorization === undefined || peerToken(req))) {
      const name = roomName(req);
      if (!peers) throw new HttpError(403, 'federation_disabled', 'this provider does not accept requests from other providers');
      const ip = await ipLimiter.hit(`fed-rooms-ip:${clientBucket(req.ip)}`);
      if (!ip.allowed) throw new HttpError(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
      let res;
      try {
        res = await rooms.postSigned(name, req.body);
      } catch (e) {
        inbound.inc({ route: 'messages', status: String(e instanceof HttpError ? e.status : 500) });
        throw e;
      }
      inbound.inc({ route: 'messages', status: '201' });
      void fanout?.peerIsUp(res.signer).catch(() => undefined);
      reply.code(201);
      if (res.replayed) reply.header('intertalk-replayed', 'true');
      return res.message;
    }
    const user = await requireUser(ctx, req);
    const t = roomTarget(req);
    const body = obj(req.body);
    const address = 'remote' in t ? t.remote.full : rooms.address(t.local);
    if (body.from !== undefined && body.from !== user.address) throw forbidden(`from: you are ${user.address}`, 'from_mismatch');
    if (body.room !== undefined && parseRoomAddress(body.room)?.full !== address) throw badRequest(`room: this is ${address}`, 'invalid_room');
    const m = parseRoomMessage(body, ctx.clock.now(), config.clockSkewMs);
    if (!m.ok) throw badRequest(m.message, 'invalid_message');
    if ('remote' in t) return answer(reply, await remoteSide(t.remote).post(user.address, t.remote, m.value));
    const res = await rooms.post(t.local, user.address, m.value);
    reply.code(201);
    if (res.replayed) reply.header('intertalk-replayed', 'true');
    return res.message;
  });

  // GET /rooms/{room}/messages?since&limit (since: epoch ms; after: a room seq, to page on).
  app.get('/rooms/:room/messages', async (req) => {
    const q = req.query as Record<string, unknown>;
    const query = {
      since: intParam('since', q.since, { min: 0, max: Number.MAX_SAFE_INTEGER }),
      after: intParam('after', q.after, { min: 0, max: Number.MAX_SAFE_INTEGER }),
      limit: intParam('limit', q.limit, { min: 1, max: MAX_LIMIT }) ?? DEFAULT_LIMIT,
    };
    // A member's provider, with a token for that member: the revision's JSON array of JWS.
    if (peerToken(req)) {
      const name = roomName(req);
      const peer = await peerUser(req, 'history');
      const out = await rooms.signedHistory(name, peer.sub, query);
      inbound.inc({ route: 'history', status: '200' });
      // (ours) `withSeq=true`: [{"seq", "message": JWS}], so the member provider can mirror them in room order.
      return q.withSeq === 'true' ? out : out.map((m) => m.message);
    }
    const user = await requireUser(ctx, req);
    const t = roomTarget(req);
    if ('remote' in t) {
      // A room hosted elsewhere: what its host delivered here (the mirror).
      return { messages: await remoteSide(t.remote).history(user.address, t.remote, query) };
    }
    return { messages: await rooms.history(t.local, user.address, query) };
  });

  // (ours) POST /rooms/{room}/membership from a member provider (provider token bound to the
  // body {"room": "name#host"}): which of its users are members now — it reconciles its mirror.
  app.post('/rooms/:room/membership', async (req) => {
    if (!peers) throw new HttpError(403, 'federation_disabled', 'this provider does not accept requests from other providers');
    const name = roomName(req);
    const ip = await ipLimiter.hit(`fed-rooms-ip:${clientBucket(req.ip)}`);
    if (!ip.allowed) throw new HttpError(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0);
    const auth = await peers.verifyProvider(req.headers.authorization, raw, gate);
    if (!auth.ok) {
      inbound.inc({ route: 'membership', status: String(auth.status) });
      throw refused(auth);
    }
    if (await peers.isBlocked(auth.iss)) throw forbidden(`${auth.iss} is blocked by this provider`, 'domain_blocked');
    if (parseRoomAddress(obj(req.body).room)?.full !== rooms.address(name)) throw badRequest(`room: this is ${rooms.address(name)}`, 'invalid_room');
    const members = await rooms.membersAt(name, auth.iss);
    inbound.inc({ route: 'membership', status: '200' });
    void fanout?.peerIsUp(auth.iss).catch(() => undefined);
    return { room: rooms.address(name), members };
  });

  // (ours) POST /roomNotices from a room's host: something changed (a member of ours removed or
  // banned, a message removed); we drop removed messages and ask the host who is a member.
  app.post('/roomNotices', async (req, reply) => {
    if (!remote) throw new HttpError(403, 'federation_disabled', 'this provider does not accept requests from other providers');
    const ip = await ipLimiter.hit(`fed-rooms-ip:${clientBucket(req.ip)}`);
    if (!ip.allowed) throw new HttpError(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0);
    const res = await remote.notice({ authorization: req.headers.authorization, rawBody: raw, body: req.body });
    inbound.inc({ route: 'roomNotices', status: String(res.status) });
    return answer(reply, res);
  });

  // POST /roomMessages from a room's host: new messages of a room our users are members of.
  app.post('/roomMessages', { bodyLimit: 16 * 1024 * 1024 }, async (req, reply) => {
    if (!remote) throw new HttpError(403, 'federation_disabled', 'this provider does not accept requests from other providers');
    const ip = await ipLimiter.hit(`fed-rooms-ip:${clientBucket(req.ip)}`);
    if (!ip.allowed) throw new HttpError(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0);
    const res = await remote.receive({ authorization: req.headers.authorization, rawBody: raw, body: req.body });
    inbound.inc({ route: 'roomMessages', status: String(res.status) });
    return answer(reply, res);
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
