import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { requireUser } from '../auth/routes.js';
import { bearerToken, intParam, looksLikeJwt } from '../http/app.js';
import { HttpError, forbidden, notFound } from '../http/errors.js';
import { CONVERSATION_ID, conversationId, decodeParticipantsSegment } from '../protocol/conversation.js';
import { submit } from './send.js';

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 500;

function pageQuery(req: FastifyRequest) {
  const q = req.query as Record<string, unknown>;
  return {
    before: intParam('before', q.before, { min: 1, max: Number.MAX_SAFE_INTEGER }),
    after: intParam('after', q.after, { min: 0, max: Number.MAX_SAFE_INTEGER }),
    limit: intParam('limit', q.limit, { min: 1, max: MAX_LIMIT }) ?? DEFAULT_LIMIT,
  };
}

export function messagingRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { messaging, config } = ctx;

  /**
   * POST /messages takes bodies past INTERTALK_MAX_BODY for a seed-000 inline file
   * (attachments/inline.ts). Such a body — or one of unknown size — is read and parsed only for a
   * sender who has shown who they are: a user's valid session, or — within the per-address limit
   * and from a domain we do not block — a peer token whose claims and signature hold. A stranger
   * gets the refusal before we buffer megabytes for them.
   */
  async function authenticateLargeBody(req: FastifyRequest): Promise<void> {
    const declared = Number(req.headers['content-length']);
    if (req.headers['content-length'] !== undefined && Number.isFinite(declared) && declared <= config.maxBody) return;
    const token = bearerToken(req);
    if (!looksLikeJwt(token)) {
      await requireUser(ctx, req);
      return;
    }
    if (!ctx.federation) throw new HttpError(403, 'federation_disabled', 'this provider does not accept messages from other providers');
    const refused = await ctx.federation.checkBeforeBody({ token, remoteIp: req.ip });
    if (refused) {
      ctx.metrics.federationInbound.inc({ status: String(refused.status) });
      const b = refused.body as { error: string; message: string };
      throw new HttpError(refused.status, b.error, b.message, refused.headers);
    }
  }

  // A refusal here closes the connection: kept alive, Node would read the rest of the body (and
  // throw it away) before the next request on it.
  const preParsing = async (req: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    try {
      await authenticateLargeBody(req);
    } catch (err) {
      reply.header('connection', 'close');
      throw err;
    }
    return payload;
  };

  app.post('/messages', { preParsing }, async (req, reply) => {
    const token = bearerToken(req);
    // A peer provider's JWT: federation handles it.
    if (looksLikeJwt(token)) {
      if (!ctx.federation) throw new HttpError(403, 'federation_disabled', 'this provider does not accept messages from other providers');
      const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? '';
      const res = await ctx.federation.receive({ token, rawBody: raw, body: req.body, remoteIp: req.ip });
      ctx.metrics.federationInbound.inc({ status: String(res.status) });
      reply.code(res.status).headers(res.headers ?? {});
      return res.body;
    }

    const user = await requireUser(ctx, req);
    const res = await submit(ctx, user, req.body);
    reply.code(201).header('content-type', 'application/json; charset=utf-8');
    if (res.replayed) reply.header('intertalk-replayed', 'true');
    return res.json;
  });

  // Reference form: GET /messages/{base64url(JSON array of participants)}.
  app.get('/messages/:participants', async (req) => {
    const user = await requireUser(ctx, req);
    const seg = (req.params as { participants: string }).participants;
    const d = decodeParticipantsSegment(seg, config.maxRecipients);
    if (!d.ok) throw new HttpError(400, 'invalid_participants', d.reason);
    if (!d.participants.includes(user.address)) throw forbidden('you are not a participant of this conversation', 'not_participant');
    const id = conversationId(d.participants);
    const page = await messaging.history(user.address, id, pageQuery(req));
    return page ?? { messages: [], hasMore: false };
  });

  app.get('/conversations', async (req) => {
    const user = await requireUser(ctx, req);
    const q = pageQuery(req);
    const conversations = await messaging.conversations(user.address, { before: q.before, limit: q.limit });
    // How far each other participant has read (their shared receipts), for read marks in lists.
    const receipts = await ctx.signals.receiptSeqs(user.address, conversations.map((c) => c.id));
    return { conversations: conversations.map((c) => ({ ...c, receipts: receipts.get(c.id) ?? [] })) };
  });

  function convParam(req: FastifyRequest): string {
    const id = (req.params as { id: string }).id;
    if (!CONVERSATION_ID.test(id)) throw new HttpError(400, 'invalid_request', 'not a conversation id');
    return id;
  }

  app.get('/conversations/:id', async (req) => {
    const user = await requireUser(ctx, req);
    const c = await messaging.conversation(user.address, convParam(req));
    if (!c) throw notFound('no such conversation');
    return c;
  });

  app.get('/conversations/:id/messages', async (req) => {
    const user = await requireUser(ctx, req);
    const page = await messaging.history(user.address, convParam(req), pageQuery(req));
    if (!page) throw notFound('no such conversation');
    return page;
  });

  app.post('/conversations/:id/read', async (req) => {
    const user = await requireUser(ctx, req);
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'invalid_request', 'the body must be a JSON object');
    if (body.seq !== undefined && !(Number.isSafeInteger(body.seq) && (body.seq as number) >= 0)) throw new HttpError(400, 'invalid_request', 'seq: must be a non-negative integer');
    const last = await messaging.markRead(user.address, convParam(req), body.seq as number | undefined);
    if (last === null) throw notFound('no such conversation');
    // signals/1: the receipt (the last message read), told to the others unless turned off.
    await ctx.signals.read(user.address, convParam(req), last);
    return { conversationId: convParam(req), lastReadSeq: last };
  });

  // Delivery state of one of the caller's messages to each remote provider.
  app.get('/conversations/:id/messages/:seq/deliveries', async (req) => {
    const user = await requireUser(ctx, req);
    const id = convParam(req);
    const seq = intParam('seq', (req.params as { seq: string }).seq, { min: 1, max: Number.MAX_SAFE_INTEGER })!;
    const page = await messaging.history(user.address, id, { after: seq - 1, limit: 1 });
    const m = page?.messages[0];
    if (!m || m.seq !== seq) throw notFound('no such message');
    if (m.from !== user.address) throw forbidden('only the sender sees delivery states', 'not_sender');
    return { seq, id: m.id, deliveries: ctx.federation ? await ctx.federation.deliveries(seq) : [] };
  });
}
