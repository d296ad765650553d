// Pure rules of Web Push (COI WebPush extension adapted to HTTP, RFC 8030/8291/8292): parsing a
// subscription, the push payload within 3,993 bytes of plaintext, the per-conversation Topic, the
// validation value. No I/O here (property tests in test/push-wire.test.ts).
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import ipaddr from 'ipaddr.js';

/** COI: `[0-9A-Za-z_-]`, 10 to 36 characters. */
export const SUBSCRIPTION_ID = /^[0-9A-Za-z_-]{10,36}$/;
export const MSGTYPES = ['chat', 'mail', 'all'] as const;
export type MsgType = (typeof MSGTYPES)[number];

/**
 * A push service need not take more than 4096 octets of body (RFC 8030 §7.2): less the
 * aes128gcm header (86), padding (1) and the AEAD tag (16), 3993 octets of plaintext.
 */
export const MAX_PLAINTEXT = 3993;
const ELLIPSIS = '\u2026';

export interface SubscriptionInput {
  client: string;
  device: string;
  msgtype: MsgType;
  endpoint: string;
  /** base64url, no padding: a 65-octet uncompressed P-256 point. */
  p256dh: string;
  /** base64url, no padding: 16 octets. */
  auth: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

/** base64 or base64url (padded or not) → bytes; null if it is neither. */
function decodeB64(s: string): Buffer | null {
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(s)) return null;
  const url = s.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  const b = Buffer.from(url, 'base64url');
  return b.toString('base64url') === url ? b : null;
}

function shortString(o: Record<string, unknown>, k: string, max: number): Parsed<string> {
  const v = o[k] ?? '';
  if (typeof v !== 'string') return { ok: false, message: `${k}: must be a string` };
  if (bytes(v) > max) return { ok: false, message: `${k}: at most ${max} octets` };
  if (/[\u0000-\u001f\u007f]/.test(v)) return { ok: false, message: `${k}: no control characters` };
  return { ok: true, value: v };
}

/** A push endpoint: https (http only when allowed), ≤ 512 octets, no credentials, no private address unless insecure. */
export function checkEndpoint(endpoint: unknown, insecure: boolean): Parsed<string> {
  if (typeof endpoint !== 'string') return { ok: false, message: 'resource.endpoint: must be a string' };
  if (bytes(endpoint) > 512) return { ok: false, message: 'resource.endpoint: at most 512 octets' };
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    return { ok: false, message: 'resource.endpoint: not a URL' };
  }
  if (u.protocol !== 'https:' && !(insecure && u.protocol === 'http:')) return { ok: false, message: 'resource.endpoint: must be an https URL' };
  if (u.username || u.password) return { ok: false, message: 'resource.endpoint: no credentials in the URL' };
  if (u.hash) return { ok: false, message: 'resource.endpoint: no fragment' };
  if (!insecure) {
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (host === 'localhost' || host.endsWith('.localhost')) return { ok: false, message: 'resource.endpoint: not a public host' };
    if (ipaddr.isValid(host)) {
      let a = ipaddr.parse(host);
      if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
      if (a.range() !== 'unicast') return { ok: false, message: 'resource.endpoint: not a public address' };
    }
  }
  return { ok: true, value: u.href };
}

/** The COI subscription object (unknown keys ignored). */
export function parseSubscription(body: unknown, insecureEndpoints: boolean): Parsed<SubscriptionInput> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, message: 'the body must be a JSON object' };
  const o = body as Record<string, unknown>;
  const client = shortString(o, 'client', 128);
  if (!client.ok) return client;
  const device = shortString(o, 'device', 128);
  if (!device.ok) return device;
  const msgtype = o.msgtype ?? 'chat';
  if (!MSGTYPES.includes(msgtype as MsgType)) return { ok: false, message: `msgtype: one of ${MSGTYPES.join(', ')}` };
  const r = o.resource;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return { ok: false, message: 'resource: must be an object {endpoint, keys: {p256dh, auth}}' };
  const res = r as Record<string, unknown>;
  const endpoint = checkEndpoint(res.endpoint, insecureEndpoints);
  if (!endpoint.ok) return endpoint;
  const keys = res.keys;
  if (typeof keys !== 'object' || keys === null || Array.isArray(keys)) return { ok: false, message: 'resource.keys: must be an object {p256dh, auth}' };
  const k = keys as Record<string, unknown>;
  if (typeof k.p256dh !== 'string' || bytes(k.p256dh) > 256) return { ok: false, message: 'resource.keys.p256dh: a string of at most 256 octets' };
  const p = decodeB64(k.p256dh);
  if (!p || p.length !== 65 || p[0] !== 0x04) return { ok: false, message: 'resource.keys.p256dh: a base64url uncompressed P-256 public key (65 octets)' };
  if (typeof k.auth !== 'string' || bytes(k.auth) > 64) return { ok: false, message: 'resource.keys.auth: a base64url string of 16 octets' };
  const a = decodeB64(k.auth);
  if (!a || a.length !== 16) return { ok: false, message: 'resource.keys.auth: a base64url string of 16 octets' };
  return {
    ok: true,
    value: { client: client.value, device: device.value, msgtype: msgtype as MsgType, endpoint: endpoint.value, p256dh: p.toString('base64url'), auth: a.toString('base64url') },
  };
}

/** The first code points of `s` that fit in `max` UTF-8 octets; with U+2026 appended (within max) when cut. */
export function clip(s: string, max: number): string {
  if (bytes(s) <= max) return s;
  const budget = max - bytes(ELLIPSIS);
  let out = '';
  let used = 0;
  for (const ch of s) {
    const n = bytes(ch);
    if (used + n > budget) break;
    out += ch;
    used += n;
  }
  return out + ELLIPSIS;
}

export interface MessageInfo {
  seq: number;
  conversationId: string;
  id: string;
  from: string;
  sentAt: string;
  text: string;
  /** More than two participants. */
  group: boolean;
}

/**
 * The push payload (COI payload format, adapted): `type`, `conversation`, `msg-id`, `seq`, and
 * unless content-free `from-email`, `date`, `content` (cut to fit) and `group-id`. Always at most
 * MAX_PLAINTEXT octets of UTF-8 JSON.
 */
export function messagePayload(m: MessageInfo, contentFree: boolean): string {
  const base: Record<string, unknown> = { type: 'message', conversation: m.conversationId, 'msg-id': clip(m.id, 100), seq: m.seq };
  if (contentFree) return JSON.stringify(base);
  base['from-email'] = clip(m.from.toLowerCase(), 100);
  base.date = m.sentAt;
  if (m.group) base['group-id'] = m.conversationId;
  const full = JSON.stringify({ ...base, content: m.text });
  if (bytes(full) <= MAX_PLAINTEXT) return full;
  // JSON escapes make the size of a prefix grow unevenly: find the longest prefix that fits.
  const cps = Array.from(m.text);
  let lo = 0;
  let hi = cps.length;
  const withPrefix = (n: number) => JSON.stringify({ ...base, content: cps.slice(0, n).join('') + ELLIPSIS });
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytes(withPrefix(mid)) <= MAX_PLAINTEXT) lo = mid;
    else hi = mid - 1;
  }
  const out = withPrefix(lo);
  return bytes(out) <= MAX_PLAINTEXT ? out : JSON.stringify(base);
}

/** RFC 8030 §5.4: at most 32 characters of the URL-safe base64 alphabet; one per conversation. */
export function topicOf(conversationId: string): string {
  return createHash('sha256').update(conversationId).digest().subarray(0, 24).toString('base64url');
}

/** The validation value: `subscription id . expiry (ms) . HMAC`, well under 1 kB. */
export function validationValue(secret: string, userId: number, subscriptionId: string, created: number, expiresAt: number): string {
  const mac = createHmac('sha256', secret).update(`${userId}\n${subscriptionId}\n${created}\n${expiresAt}`).digest('base64url');
  return `${subscriptionId}.${expiresAt}.${mac}`;
}

/** Whether `value` is the validation value of this subscription (as created) and still in time. */
export function checkValidation(secret: string, userId: number, subscriptionId: string, created: number, value: unknown, now: number): boolean {
  if (typeof value !== 'string' || value.length > 1024) return false;
  const parts = value.split('.');
  if (parts.length !== 3 || parts[0] !== subscriptionId || !/^\d{1,16}$/.test(parts[1]!)) return false;
  const expiresAt = Number(parts[1]);
  if (now > expiresAt) return false;
  const want = Buffer.from(validationValue(secret, userId, subscriptionId, created, expiresAt));
  const got = Buffer.from(value);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Retry-After (RFC 9110 §10.2.3): seconds or an HTTP date → ms from now, bounded; null if absent or unreadable. */
export function retryAfterMs(header: string | string[] | undefined, now: number, maxMs = 3_600_000): number | null {
  const v = Array.isArray(header) ? header[0] : header;
  if (!v) return null;
  const t = v.trim();
  if (/^\d{1,9}$/.test(t)) return Math.min(maxMs, Number(t) * 1000);
  const d = Date.parse(t);
  if (Number.isNaN(d)) return null;
  return Math.min(maxMs, Math.max(0, d - now));
}
