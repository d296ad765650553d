// Validation of intertalk message objects (seed 000 plus the later revision's `id`).
// Pure: no I/O, the clock is passed in. Used for messages from our users and from peers.
import contentType from 'content-type';
import { canonicalParticipants } from './conversation.js';
import { clip, parseAddress, parseAddressList } from './address.js';
import { validateRich, type Rich } from './rich.js';

export interface IntertalkMessage {
  id: string;
  from: string;
  to: string[];
  sentAt: string;
  message: string;
  messageFormatted?: string;
  format?: string;
  /** The rich/1 extension (docs/protocol.md); absent on plain messages. */
  rich?: Rich;
}

export interface MessageRules {
  now: number;
  maxRecipients: number;
  /** How far in the future a sentAt may lie (clock skew), in ms. */
  skewMs: number;
  /** When sentAt is absent: fill it with `now` (our users) or reject (peers). */
  requireSentAt: boolean;
  /** When id is absent: null leaves it to the caller to assign one. */
  requireId: boolean;
}

export type Invalid = { ok: false; error: string; message: string };
export type MessageResult = { ok: true; value: Omit<IntertalkMessage, 'id' | 'sentAt'> & { id: string | null; sentAt: string | null } } | Invalid;

export const MAX_ID_LENGTH = 128;
const ID = /^[\x21-\x7e]+$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-](\d{2}):(\d{2}))$/;

const bad = (message: string): Invalid => ({ ok: false, error: 'invalid_message', message });

export function isValidMessageId(id: unknown): id is string {
  return typeof id === 'string' && id.length >= 1 && id.length <= MAX_ID_LENGTH && ID.test(id);
}

/** ISO 8601 / RFC 3339 date-time with an explicit offset; returns epoch ms or null. */
export function parseTimestamp(s: string): number | null {
  const m = RFC3339.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, se] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i]));
  if (mo! < 1 || mo! > 12 || d! < 1 || h! > 23 || mi! > 59 || se! > 60) return null;
  const leap = (y! % 4 === 0 && y! % 100 !== 0) || y! % 400 === 0;
  const daysInMonth = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo! - 1]!;
  if (d! > daysInMonth) return null;
  if (m[9] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return null;
  const t = Date.parse(s.replace(' ', 'T'));
  return Number.isFinite(t) ? t : null;
}

export function isValidMediaType(s: string): boolean {
  if (s.length > 255 || s !== s.trim()) return false;
  try {
    const parsed = contentType.parse(s);
    return /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/.test(parsed.type);
  } catch {
    return false;
  }
}

export function validateMessage(input: unknown, rules: MessageRules): MessageResult {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return bad('the body must be a JSON object');
  const o = input as Record<string, unknown>;

  if (o.to === undefined && o.room !== undefined) return { ok: false, error: 'unsupported', message: 'room messages are not supported by this provider' };
  if (!Array.isArray(o.to)) return bad('to: must be an array of addresses');
  const list = parseAddressList(o.to, rules.maxRecipients);
  if (!list.ok) return bad(list.reason);
  const to = list.addresses;

  if (typeof o.from !== 'string') return bad('from: must be the sender\'s address');
  const from = parseAddress(o.from);
  if (!from.ok) return bad(`from: ${from.reason}`);
  const canonical = canonicalParticipants(to);
  if (!canonical.includes(from.address.full)) return bad(`from: the sender ${clip(from.address.full)} must be one of the participants in to`);

  let sentAt: string | null = null;
  if (o.sentAt !== undefined) {
    if (typeof o.sentAt !== 'string') return bad('sentAt: must be an ISO 8601 timestamp string');
    const t = parseTimestamp(o.sentAt);
    if (t === null) return bad(`sentAt: "${clip(o.sentAt)}" is not an ISO 8601 date-time with a time zone`);
    if (t > rules.now + rules.skewMs) return bad('sentAt: lies in the future');
    sentAt = o.sentAt;
  } else if (rules.requireSentAt) {
    return bad('sentAt: is required');
  }

  if (typeof o.message !== 'string') return bad('message: must be a string');

  let id: string | null = null;
  if (o.id !== undefined && o.id !== null) {
    if (!isValidMessageId(o.id)) return bad(`id: must be 1 to ${MAX_ID_LENGTH} printable ASCII characters`);
    id = o.id;
  } else if (rules.requireId) {
    return bad('id: is required');
  }

  const out: Omit<IntertalkMessage, 'id' | 'sentAt'> & { id: string | null; sentAt: string | null } = {
    id,
    from: from.address.full,
    to: canonical,
    sentAt,
    message: o.message,
  };

  if (o.messageFormatted !== undefined && o.messageFormatted !== null) {
    if (typeof o.messageFormatted !== 'string') return bad('messageFormatted: must be a string');
    if (typeof o.format !== 'string') return bad('format: a MIME type is required with messageFormatted');
    if (!isValidMediaType(o.format)) return bad(`format: "${clip(o.format)}" is not a valid MIME type`);
    out.messageFormatted = o.messageFormatted;
    out.format = o.format;
  } else if (o.format !== undefined && o.format !== null) {
    return bad('format: given without messageFormatted');
  }

  if (o.rich !== undefined && o.rich !== null) {
    const r = validateRich(o.rich);
    if (!r.ok) return r;
    out.rich = r.value;
  }

  const hasFiles = (out.rich?.attachments?.length ?? 0) > 0;
  if (out.message.trim() === '' && out.messageFormatted === undefined && !hasFiles) return bad('message: is empty');
  return { ok: true, value: out };
}

/**
 * A stable id for a message that arrived without one (the 2016 format): the same sender, time,
 * participants and text always give the same id, so a retried request is stored once.
 */
export function deriveMessageId(m: { from: string; sentAt: string; to: string[]; message: string; messageFormatted?: string; format?: string }): string {
  return 'd' + sha256Base64url(JSON.stringify([m.from, m.sentAt, [...m.to].sort(), m.message, m.messageFormatted ?? null, m.format ?? null]));
}

import { createHash } from 'node:crypto';
function sha256Base64url(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('base64url').slice(0, 32);
}
