// Pure rules of rooms (docs/rooms.md): room names, room addresses `name#domain`, room policies,
// referral URIs `room=…&code=…`, and the client's room message body. No I/O.
import { isValidDomain } from '../protocol/address.js';
import { isValidMessageId, isValidMediaType, parseTimestamp } from '../protocol/message.js';

export const MAX_ROOM_NAME = 64;
export const MAX_TITLE = 200;
export const MAX_TOPIC = 1000;
export const MAX_ROOM_MESSAGE = 16_384;

export type Visibility = 'public' | 'invite';
export type HistoryPolicy = 'join' | 'start';

/** A room name: 1–64 of a-z 0-9 . _ - (lower case; never `#`, which separates the domain). */
export function isValidRoomName(name: unknown): name is string {
  return typeof name === 'string' && name.length >= 1 && name.length <= MAX_ROOM_NAME && /^[a-z0-9][a-z0-9._-]*$/.test(name);
}

/** `name#domain` → its parts (the name lower-cased), or null. */
export function parseRoomAddress(input: unknown): { name: string; domain: string; full: string } | null {
  if (typeof input !== 'string' || input.length > MAX_ROOM_NAME + 1 + 253) return null;
  const hash = input.indexOf('#');
  if (hash <= 0 || hash !== input.lastIndexOf('#')) return null;
  const name = input.slice(0, hash).toLowerCase();
  const domain = input.slice(hash + 1).toLowerCase();
  if (!isValidRoomName(name) || !/^[\x21-\x7e]+$/.test(domain) || !isValidDomain(domain)) return null;
  return { name, domain, full: `${name}#${domain}` };
}

/** The referral of the later revision: `room=execs%23ecorp.com&code=…` (code optional). */
export function formatReferral(room: string, code?: string | null): string {
  const p = new URLSearchParams({ room });
  if (code) p.set('code', code);
  return p.toString();
}

export function parseReferral(input: unknown): { room: string; code: string | null } | null {
  if (typeof input !== 'string' || input.length > 2048) return null;
  const p = new URLSearchParams(input.startsWith('?') ? input.slice(1) : input);
  const room = parseRoomAddress(p.get('room'));
  if (!room) return null;
  const code = p.get('code');
  if (code !== null && !isValidCode(code)) return null;
  return { room: room.full, code };
}

export function isValidCode(code: unknown): code is string {
  return typeof code === 'string' && code.length >= 1 && code.length <= 128 && /^[A-Za-z0-9_-]+$/.test(code);
}

export interface RoomPolicyInput {
  name: string;
  visibility: Visibility;
  history: HistoryPolicy;
  title: string | null;
  topic: string | null;
}

type Result<T> = { ok: true; value: T } | { ok: false; message: string };

function optText(o: Record<string, unknown>, key: string, max: number): Result<string | null | undefined> {
  const v = o[key];
  if (v === undefined) return { ok: true, value: undefined };
  if (v === null) return { ok: true, value: null };
  if (typeof v !== 'string' || v.length > max) return { ok: false, message: `${key}: a string of at most ${max} characters, or null` };
  return { ok: true, value: v };
}

/** Body of POST /rooms (create). */
export function parseCreateRoom(input: unknown): Result<RoomPolicyInput> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, message: 'the body must be a JSON object' };
  const o = input as Record<string, unknown>;
  if (!isValidRoomName(o.name)) return { ok: false, message: `name: 1–${MAX_ROOM_NAME} characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit` };
  const policy = parsePolicyUpdate(o);
  if (!policy.ok) return policy;
  return {
    ok: true,
    value: { name: o.name, visibility: policy.value.visibility ?? 'public', history: policy.value.history ?? 'join', title: policy.value.title ?? null, topic: policy.value.topic ?? null },
  };
}

/** Body of PATCH /rooms/{room} (moderators): any of visibility, history, title, topic. */
export function parsePolicyUpdate(input: unknown): Result<Partial<Omit<RoomPolicyInput, 'name'>>> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, message: 'the body must be a JSON object' };
  const o = input as Record<string, unknown>;
  const out: Partial<Omit<RoomPolicyInput, 'name'>> = {};
  if (o.visibility !== undefined) {
    if (o.visibility !== 'public' && o.visibility !== 'invite') return { ok: false, message: 'visibility: "public" or "invite"' };
    out.visibility = o.visibility;
  }
  if (o.history !== undefined) {
    if (o.history !== 'join' && o.history !== 'start') return { ok: false, message: 'history: "join" (from when a member joined) or "start" (everything)' };
    out.history = o.history;
  }
  const title = optText(o, 'title', MAX_TITLE);
  if (!title.ok) return title;
  if (title.value !== undefined) out.title = title.value;
  const topic = optText(o, 'topic', MAX_TOPIC);
  if (!topic.ok) return topic;
  if (topic.value !== undefined) out.topic = topic.value;
  return { ok: true, value: out };
}

export interface RoomMessageInput {
  id: string | null;
  sentAt: string | null;
  message: string;
  messageFormatted?: string;
  format?: string;
}

/** A room message body from a client (the later revision's format without `room`/`from` needed). */
export function parseRoomMessage(input: unknown, now: number, skewMs: number): Result<RoomMessageInput> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { ok: false, message: 'the body must be a JSON object' };
  const o = input as Record<string, unknown>;
  if (typeof o.message !== 'string' || o.message.trim() === '' || o.message.length > MAX_ROOM_MESSAGE) return { ok: false, message: `message: a non-empty string of at most ${MAX_ROOM_MESSAGE} characters` };
  if (o.id !== undefined && !isValidMessageId(o.id)) return { ok: false, message: 'id: 1–128 printable ASCII characters' };
  let sentAt: string | null = null;
  if (o.sentAt !== undefined) {
    const t = typeof o.sentAt === 'string' ? parseTimestamp(o.sentAt) : null;
    if (t === null) return { ok: false, message: 'sentAt: an ISO 8601 timestamp with an offset' };
    if (t > now + skewMs) return { ok: false, message: 'sentAt: lies in the future' };
    sentAt = o.sentAt as string;
  }
  const out: RoomMessageInput = { id: (o.id as string | undefined) ?? null, sentAt, message: o.message };
  if (o.messageFormatted !== undefined || o.format !== undefined) {
    if (typeof o.messageFormatted !== 'string' || o.messageFormatted.length > MAX_ROOM_MESSAGE * 2) return { ok: false, message: 'messageFormatted: a string, with format' };
    if (typeof o.format !== 'string' || !isValidMediaType(o.format)) return { ok: false, message: 'format: a MIME type, with messageFormatted' };
    out.messageFormatted = o.messageFormatted;
    out.format = o.format;
  }
  return { ok: true, value: out };
}
