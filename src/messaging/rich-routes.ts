// Client endpoints for rich actions. Each builds a rich/1 message for the conversation's
// participants and sends it through the same path as POST /messages (send.ts).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { requireUser } from '../auth/routes.js';
import { intParam } from '../http/app.js';
import { HttpError, forbidden, notFound } from '../http/errors.js';
import { CONVERSATION_ID } from '../protocol/conversation.js';
import type { Rich } from '../protocol/rich.js';
import { submit } from './send.js';

function obj(req: FastifyRequest): Record<string, unknown> {
  const b = req.body ?? {};
  if (typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'invalid_request', 'the body must be a JSON object');
  return b as Record<string, unknown>;
}

/** A client's optional formatted text ({formatted, format}) as message fields; Markdown by default. */
function formatted(b: Record<string, unknown>): Record<string, unknown> {
  return b.formatted === undefined ? {} : { messageFormatted: b.formatted, format: b.format ?? 'text/markdown' };
}

export function richRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { messaging } = ctx;

  async function conversation(req: FastifyRequest, address: string) {
    const id = (req.params as { id: string }).id;
    if (!CONVERSATION_ID.test(id)) throw new HttpError(400, 'invalid_request', 'not a conversation id');
    const c = await messaging.conversation(address, id);
    if (!c) throw notFound('no such conversation');
    return c;
  }

  async function target(req: FastifyRequest, convId: string) {
    const seq = intParam('seq', (req.params as { seq: string }).seq, { min: 1, max: Number.MAX_SAFE_INTEGER })!;
    const t = await messaging.messageAt(convId, seq);
    if (!t) throw notFound('no such message in this conversation', 'unknown_message');
    return t;
  }

  function send(user: Awaited<ReturnType<typeof requireUser>>, participants: string[], rich: Rich, extra: Record<string, unknown> = {}) {
    return submit(ctx, user, { ...extra, to: participants, rich });
  }

  // Same answer as POST /messages: 201 with the stored message, marked when it was a retry.
  const reply201 = (reply: { code(n: number): unknown; header(k: string, v: string): unknown }, res: { json: string; replayed: boolean }) => {
    reply.code(201);
    reply.header('content-type', 'application/json; charset=utf-8');
    if (res.replayed) reply.header('intertalk-replayed', 'true');
    return res.json;
  };

  // New message in a conversation, optionally a reply and/or with attachments.
  app.post('/conversations/:id/messages', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const c = await conversation(req, user.address);
    const b = obj(req);
    if (b.text !== undefined && typeof b.text !== 'string') throw new HttpError(400, 'invalid_request', 'text: must be a string');
    const rich: Record<string, unknown> = { type: 'content', text: b.text ?? '' };
    if (b.replyTo !== undefined) {
      const seq = typeof b.replyTo === 'number' ? b.replyTo : NaN;
      const t = Number.isSafeInteger(seq) ? await messaging.messageAt(c.id, seq) : null;
      if (!t) throw notFound('replyTo: no such message in this conversation', 'unknown_message');
      rich.type = 'reply';
      rich.reference = { id: t.id, sender: t.sender, type: t.kind, text: null };
    }
    if (b.attachments !== undefined) {
      if (!Array.isArray(b.attachments)) throw new HttpError(400, 'invalid_request', 'attachments: an array of {id, name}');
      // [{id, name}] of the caller's uploads (POST /attachments); send.ts completes them.
      rich.attachments = b.attachments;
    }
    const extra = formatted(b);
    if (b.id !== undefined) extra.id = b.id;
    const res = await send(user, c.participants, rich as unknown as Rich, extra);
    return reply201(reply, res);
  });

  app.post('/conversations/:id/messages/:seq/reactions', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const c = await conversation(req, user.address);
    const t = await target(req, c.id);
    const b = obj(req);
    const rich = { type: 'reaction', reference: { id: t.id, sender: t.sender, type: t.kind, text: null }, reaction: b.remove === true ? { emoji: b.emoji, remove: true } : { emoji: b.emoji } };
    const res = await send(user, c.participants, rich as unknown as Rich);
    return reply201(reply, res);
  });

  // Edit: the new text; the reference is the latest version (COI: edits refer to the last edit).
  app.patch('/conversations/:id/messages/:seq', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const c = await conversation(req, user.address);
    const t = await target(req, c.id);
    if (t.sender !== user.address) throw forbidden('only the sender may edit a message', 'not_your_message');
    if (t.deleted) throw new HttpError(409, 'deleted', 'this message was deleted');
    const b = obj(req);
    if (typeof b.text !== 'string' || b.text.trim() === '') throw new HttpError(400, 'invalid_request', 'text: the new text');
    const latest = t.latestEdit ?? { id: t.id, kind: t.kind };
    const rich = { type: 'edit', text: b.text, reference: { id: latest.id, sender: t.sender, type: latest.kind, text: null } };
    const res = await send(user, c.participants, rich as unknown as Rich, formatted(b));
    return reply201(reply, res);
  });

  app.delete('/conversations/:id/messages/:seq', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const c = await conversation(req, user.address);
    const t = await target(req, c.id);
    if (t.sender !== user.address) throw forbidden('only the sender may delete a message', 'not_your_message');
    if (t.deleted) throw new HttpError(409, 'deleted', 'this message was already deleted');
    const rich = { type: 'delete', reference: { id: t.id, sender: t.sender, type: t.kind, text: null } };
    const res = await send(user, c.participants, rich as unknown as Rich);
    return reply201(reply, res);
  });

  // The conversation's display name (a chat-property change message); "" removes it.
  app.put('/conversations/:id/name', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const c = await conversation(req, user.address);
    const b = obj(req);
    if (typeof b.name !== 'string') throw new HttpError(400, 'invalid_request', 'name: a string ("" removes the name)');
    const res = await send(user, c.participants, { type: 'property', property: { name: 'displayName', value: b.name } });
    return reply201(reply, res);
  });
}
