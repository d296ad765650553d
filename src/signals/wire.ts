// The signals/1 extension on the wire: ephemeral signals (typing indicators, read receipts) that a
// provider sends to a peer's `POST /signals`, never as chat messages, and only to peers whose
// /.well-known/intertalk lists `signals/1`. Authenticated exactly like `POST /messages` (a JWT
// signed by the sender's provider: aud = the receiving domain, iss = the sender's domain,
// sub = `from`), with `to` = every participant of the conversation (at least one at the receiver):
//
//   {"type":"typing",  "from", "to", "state": "typing"|"stopped", "sentAt"}
//   {"type":"receipt", "from", "to", "messageId", "messageSender", "sentAt"}
//
// A receipt names the last message `from` has read by (messageSender, messageId): seq numbers are
// local to each provider. Pure validation, no I/O.
import { clip, parseAddress, parseAddressList } from '../protocol/address.js';
import { canonicalParticipants } from '../protocol/conversation.js';
import { isValidMessageId, parseTimestamp } from '../protocol/message.js';

/** How long a typing indicator lasts unless it is renewed (clients re-send while typing). */
export const TYPING_TTL_MS = 5_000;
/** At most one typing signal per user, conversation and state per this interval. */
export const TYPING_MIN_INTERVAL_MS = 1_000;

export type TypingState = 'typing' | 'stopped';
export const TYPING_STATES: readonly TypingState[] = ['typing', 'stopped'];

export type SignalBody =
  | { type: 'typing'; from: string; to: string[]; state: TypingState; sentAt: string }
  | { type: 'receipt'; from: string; to: string[]; messageId: string; messageSender: string; sentAt: string };

type Invalid = { ok: false; error: string; message: string };
const bad = (message: string): Invalid => ({ ok: false, error: 'invalid_signal', message });

/**
 * Validates a signal from a peer: addresses are normalised (lower case), `to` is made canonical.
 * `sentAt` must not lie in the future (beyond the tolerated skew).
 */
export function validateSignal(input: unknown, rules: { now: number; skewMs: number; maxRecipients: number }): { ok: true; value: SignalBody; sentAtMs: number } | Invalid {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return bad('the body must be a JSON object');
  const o = input as Record<string, unknown>;
  if (o.type !== 'typing' && o.type !== 'receipt') return bad('type: must be "typing" or "receipt"');

  if (!Array.isArray(o.to)) return bad('to: must be an array of addresses (the participants of the conversation)');
  const list = parseAddressList(o.to, rules.maxRecipients);
  if (!list.ok) return bad(list.reason);
  const participants = canonicalParticipants(list.addresses);

  const from = parseAddress(o.from);
  if (!from.ok) return bad(`from: ${from.reason}`);
  if (!participants.includes(from.address.full)) return bad(`from: the sender ${clip(from.address.full)} must be one of the participants in to`);

  if (typeof o.sentAt !== 'string') return bad('sentAt: must be an ISO 8601 timestamp string');
  const sentAtMs = parseTimestamp(o.sentAt);
  if (sentAtMs === null) return bad(`sentAt: "${clip(o.sentAt)}" is not an ISO 8601 date-time with a time zone`);
  if (sentAtMs > rules.now + rules.skewMs) return bad('sentAt: lies in the future');

  if (o.type === 'typing') {
    const state = o.state ?? 'typing';
    if (!TYPING_STATES.includes(state as TypingState)) return bad('state: must be "typing" or "stopped"');
    return { ok: true, value: { type: 'typing', from: from.address.full, to: participants, state: state as TypingState, sentAt: o.sentAt }, sentAtMs };
  }
  if (!isValidMessageId(o.messageId)) return bad('messageId: not a message id');
  const sender = parseAddress(o.messageSender);
  if (!sender.ok) return bad(`messageSender: ${sender.reason}`);
  if (!participants.includes(sender.address.full)) return bad('messageSender: must be one of the participants in to');
  return {
    ok: true,
    value: { type: 'receipt', from: from.address.full, to: participants, messageId: o.messageId, messageSender: sender.address.full, sentAt: o.sentAt },
    sentAtMs,
  };
}
