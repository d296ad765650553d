// Sending as one of our users: the one path behind POST /messages and every rich action
// (replies, reactions, edits, deletes, names, attachments). Validates, applies local policy,
// completes rich references from our own store, stores, and queues federation.
import type { AppContext } from '../context.js';
import type { Principal } from '../auth/service.js';
import { HttpError, forbidden, notFound, tooMany } from '../http/errors.js';
import { validateMessage, type IntertalkMessage } from '../protocol/message.js';
import { plainFallback, validateRich, type Rich } from '../protocol/rich.js';
import { canonicalParticipants, conversationId } from '../protocol/conversation.js';
import { domainOf } from '../protocol/address.js';
import { MessageConflictError, RichRuleError, type AcceptResult } from './service.js';

/**
 * Keeps the messages of one sender in the order they were submitted although their checks run
 * concurrently (a socket's pipelined sends): `wait` resolves when the previous message has been
 * handed to the store; `done` says this one has been (or never will be). The store takes
 * messages in the order they are handed to it.
 */
export interface SubmitTurn {
  wait: Promise<void>;
  done(): void;
}

export async function submit(ctx: AppContext, user: Principal, raw: unknown, turn?: SubmitTurn): Promise<AcceptResult> {
  try {
    return await submitInTurn(ctx, user, raw, turn);
  } finally {
    turn?.done();
  }
}

async function submitInTurn(ctx: AppContext, user: Principal, raw: unknown, turn: SubmitTurn | undefined): Promise<AcceptResult> {
  const { config, messaging } = ctx;
  const limit = await ctx.sendLimiter.hit(`send:${user.address}`);
  if (!limit.allowed) throw tooMany('you are sending too fast; slow down', limit.retryAfterMs / 1000);

  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new HttpError(400, 'invalid_message', 'the body must be a JSON object');
  // The sender may omit `from` (it is always the caller) and, on rich messages, `message`
  // (the plain fallback is ours to write).
  const body: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  if (body.from === undefined) body.from = user.address;
  let rich: Rich | undefined;
  if (body.rich !== undefined && body.rich !== null) {
    // Attachments come as [{id, name}] of the sender's uploads; the rest is ours to fill in.
    body.rich = await ctx.attachments.completeRich(user.address, body.rich);
    const r = validateRich(body.rich);
    if (!r.ok) throw new HttpError(400, r.error, r.message);
    rich = r.value;
    if ((rich.type === 'content' || rich.type === 'reply' || rich.type === 'edit') && rich.text === undefined && typeof body.message === 'string') rich.text = body.message;
  }
  const now = ctx.clock.now();
  // A rich message's `message` is the fallback we write below; validate the rest with a stand-in.
  const forValidation = rich ? { ...body, message: typeof body.message === 'string' && body.message.trim() !== '' ? body.message : '·', rich: undefined } : body;
  const v = validateMessage(forValidation, { now, maxRecipients: config.maxRecipients, skewMs: config.clockSkewMs, requireSentAt: false, requireId: false });
  if (!v.ok) throw new HttpError(400, v.error, v.message);
  const value = v.value;
  // `from` may also be the caller's address at a verified personal domain (src/indieweb/).
  if (value.from !== user.address && messaging.ownerOf(value.from) !== user.address) throw forbidden(`from: you are ${user.address}, not ${value.from}`, 'from_mismatch');
  ctx.attachments.checkInline(value);

  // A typo must not send a message into the void: local recipients must have accounts.
  const localOthers = value.to.filter((a) => a !== user.address && domainOf(a) === config.domain);
  if (localOthers.length > 0) {
    const known = new Set(await ctx.accounts.existingAddresses(localOthers));
    const unknown = localOthers.filter((a) => !known.has(a));
    if (unknown.length > 0) throw new HttpError(400, 'unknown_recipient', `no such user: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);
  }
  const remote = [...new Set(value.to.filter((a) => messaging.ownerOf(a) === null).map(domainOf))];
  if (remote.length > 0) {
    if (!ctx.federation) throw forbidden(`this provider does not federate; ${remote[0]} is not reachable`, 'federation_disabled');
    for (const d of remote) {
      const why = await ctx.federation.refusal(d);
      if (why) throw forbidden(why, 'domain_refused');
    }
  }

  if (rich) {
    const convId = conversationId(canonicalParticipants(value.to));
    if (rich.reference) {
      // Our users' references are completed from our store, never trusted from the client.
      const ref = await messaging.referenceFor(convId, rich.reference.sender, rich.reference.id);
      if (!ref) throw notFound('rich.reference: no such message in this conversation', 'unknown_message');
      rich.reference = { id: ref.id, sender: ref.sender, type: ref.kind as Rich['type'], text: rich.type === 'delete' ? null : ref.text };
    }
    value.message = plainFallback(rich, (a) => ctx.attachments.plainLink(a, convId));
    if (value.message.trim() === '' && !(rich.attachments?.length)) throw new HttpError(400, 'invalid_message', 'message: is empty');
  }

  const message: IntertalkMessage = { ...value, id: value.id ?? messaging.newId(), sentAt: value.sentAt ?? new Date(now).toISOString(), ...(rich ? { rich } : {}) };
  if (turn) await turn.wait;
  try {
    const accepted = messaging.accept(message, { kind: 'local' });
    turn?.done();
    const res = await accepted;
    if (!res.replayed) ctx.metrics.messagesAccepted.inc({ origin: 'local' });
    if (res.destinations.length > 0) ctx.federation?.enqueued(res.message, res.destinations);
    return res;
  } catch (err) {
    if (err instanceof MessageConflictError) throw new HttpError(409, 'id_conflict', err.message);
    if (err instanceof RichRuleError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
}
