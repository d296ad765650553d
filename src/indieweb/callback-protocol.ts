// The seed's callback flow (seed 001, IndieWeb private-messaging brainstorm), as pure rules:
// request bodies, token and auth-code formats, endpoint canonicalisation and the checks a token
// or a code must pass. No I/O here; callback.ts (the endpoint) and callback-transport.ts (the
// sender) do the fetching and storing. docs/indieweb.md describes the wire protocol.
//
// Every request is `POST {endpoint}` with a JSON body `{"type": …}`, where {endpoint} is the
// exact URL a home page names (rel="intertalk-server", rel="pm", or a metadata document). The
// answers are JSON; a refusal is a 4xx `{"error", "message"}`.
//
//   notify  {type, domain, id}   six-step, step 2: "a message `id` from `domain` waits for you"
//   notify  {type, domain, code} token variant, step 2: "`domain` wants a token; here is a code"
//   check   {type, domain, id|code, destination}         step 3: "is this request legit?"
//   grant   {type, domain, id|code, destination, token, expiresAt}  step 4: "here is the token"
//   message {type, token, message}                       step 6 (and every later message)
//   revoke  {type, token}                                the sender gives a token up
import { randomBytes } from 'node:crypto';
import { isValidDomain } from '../protocol/address.js';

/** The version of the wire protocol, sent nowhere yet but named in the docs. */
export const CALLBACK_PROTOCOL = 'intertalk-callback/1';

/** A receiver's token (the seed's "secret"/"token"): `ict1_` + 43 base64url characters. */
export const TOKEN_PREFIX = 'ict1_';
/** A sender's auth code (token variant, step 2): `icc1_` + 43 base64url characters. */
export const CODE_PREFIX = 'icc1_';
const SECRET_BODY = /^[A-Za-z0-9_-]{43}$/;

/** An auth code is good for this long, once. */
export const CODE_TTL_MS = 5 * 60_000;
/** The six-step flow's per-message secret is good for this long (for that one message). */
export const MESSAGE_TOKEN_TTL_MS = 10 * 60_000;
/** We keep a token a receiver grants us at most this long, whatever it says. */
export const MAX_HELD_TOKEN_MS = 30 * 86_400_000;
/** A held token this close to its expiry is not used any more (a new one is asked for). */
export const EXPIRY_MARGIN_MS = 30_000;

const MAX_ID = 256;
const MAX_URL = 2048;

export function newSecret(kind: 'token' | 'code'): string {
  return (kind === 'token' ? TOKEN_PREFIX : CODE_PREFIX) + randomBytes(32).toString('base64url');
}

/** Is `s` a well-formed token (or code)? Only the format: whether it was issued is the store's business. */
export function isSecretFormat(s: unknown, kind: 'token' | 'code'): s is string {
  if (typeof s !== 'string') return false;
  const prefix = kind === 'token' ? TOKEN_PREFIX : CODE_PREFIX;
  return s.startsWith(prefix) && SECRET_BODY.test(s.slice(prefix.length));
}

export type EndpointResult = { ok: true; url: string } | { ok: false; message: string };

/**
 * The canonical form of a callback endpoint URL, for comparing what a home page names with what
 * a request says (`destination`): http(s) only; no credentials, no fragment; scheme and host
 * lower case; the default port dropped; an empty path is `/`; no dot segments. Two endpoints are
 * the same when their canonical forms are equal (a trailing slash on a longer path matters).
 */
export function canonicalEndpoint(input: unknown): EndpointResult {
  if (typeof input !== 'string' || input.length === 0 || input.length > MAX_URL) return { ok: false, message: 'not a URL (1 to 2048 characters)' };
  if (/[\s\u0000-\u001f\u007f]/.test(input)) return { ok: false, message: 'white space or control characters in the URL' };
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    return { ok: false, message: 'not an absolute URL' };
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return { ok: false, message: 'only http(s) URLs' };
  if (u.username || u.password) return { ok: false, message: 'credentials are not allowed' };
  if (input.includes('#')) return { ok: false, message: 'fragments are not allowed' };
  if (!u.hostname) return { ok: false, message: 'no host' };
  // WHATWG URL already lower-cases the scheme and host, drops the default port and resolves dot
  // segments; a raw dot segment is refused so that "/a/../b" and "/b" are not silently equal.
  const rawPath = input.replace(/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/, '').split(/[?#]/)[0] ?? '';
  if (rawPath.split('/').some((seg) => seg === '.' || seg === '..' || seg.toLowerCase() === '%2e' || seg.toLowerCase() === '%2e%2e')) {
    return { ok: false, message: 'dot segments are not allowed' };
  }
  return { ok: true, url: `${u.protocol}//${u.host}${u.pathname || '/'}${u.search}` };
}

export function sameEndpoint(a: string, b: string): boolean {
  const x = canonicalEndpoint(a);
  const y = canonicalEndpoint(b);
  return x.ok && y.ok && x.url === y.url;
}

/** What a request names: one message (six-step flow) or an auth code (token variant). */
export type Subject = { id: string } | { code: string };

export type CallbackRequest =
  | { type: 'notify'; domain: string; subject: Subject }
  | { type: 'check'; domain: string; subject: Subject; destination: string }
  | { type: 'grant'; domain: string; subject: Subject; destination: string; token: string; expiresAt: number | null }
  | { type: 'message'; token: string; message: Record<string, unknown> }
  | { type: 'revoke'; token: string };

export type ParseResult = { ok: true; req: CallbackRequest } | { ok: false; error: string; message: string };

const bad = (message: string, error = 'invalid_request'): ParseResult => ({ ok: false, error, message });

const ALLOWED: Record<CallbackRequest['type'], string[]> = {
  notify: ['type', 'domain', 'id', 'code'],
  check: ['type', 'domain', 'id', 'code', 'destination'],
  grant: ['type', 'domain', 'id', 'code', 'destination', 'token', 'expiresAt'],
  message: ['type', 'token', 'message'],
  revoke: ['type', 'token'],
};

/** Parses a callback request body. Unknown members are refused: this protocol is small and exact. */
export function parseCallbackRequest(body: unknown): ParseResult {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('the body must be a JSON object with a "type"');
  const b = body as Record<string, unknown>;
  const type = b.type;
  if (typeof type !== 'string' || !Object.hasOwn(ALLOWED, type)) return bad('"type" must be one of notify, check, grant, message, revoke', 'unknown_type');
  const t = type as CallbackRequest['type'];
  const extra = Object.keys(b).filter((k) => !ALLOWED[t].includes(k));
  if (extra.length > 0) return bad(`unknown member(s) for ${t}: ${extra.slice(0, 5).join(', ')}`);

  if (t === 'message' || t === 'revoke') {
    if (!isSecretFormat(b.token, 'token')) return bad('"token" is not a token of this protocol', 'invalid_token');
    if (t === 'revoke') return { ok: true, req: { type: t, token: b.token } };
    if (typeof b.message !== 'object' || b.message === null || Array.isArray(b.message)) return bad('"message" must be an intertalk message object');
    return { ok: true, req: { type: t, token: b.token, message: b.message as Record<string, unknown> } };
  }

  if (typeof b.domain !== 'string' || !isValidDomain(b.domain.toLowerCase()) || b.domain !== b.domain.toLowerCase()) {
    return bad('"domain" must be the sender\'s domain name, in lower case', 'invalid_domain');
  }
  const domain = b.domain;
  const hasId = b.id !== undefined;
  const hasCode = b.code !== undefined;
  if (hasId === hasCode) return bad('give exactly one of "id" (a message) or "code" (an auth code)');
  let subject: Subject;
  if (hasId) {
    if (typeof b.id !== 'string' || b.id.length === 0 || b.id.length > MAX_ID || /[\u0000-\u001f\u007f]/.test(b.id)) return bad(`"id" must be a message id (1 to ${MAX_ID} characters)`);
    subject = { id: b.id };
  } else {
    if (!isSecretFormat(b.code, 'code')) return bad('"code" is not an auth code of this protocol', 'invalid_code');
    subject = { code: b.code };
  }
  if (t === 'notify') return { ok: true, req: { type: t, domain, subject } };

  const dest = canonicalEndpoint(b.destination);
  if (!dest.ok) return bad(`"destination": ${dest.message}`);
  if (t === 'check') return { ok: true, req: { type: t, domain, subject, destination: dest.url } };

  if (!isSecretFormat(b.token, 'token')) return bad('"token" is not a token of this protocol', 'invalid_token');
  let expiresAt: number | null = null;
  if (b.expiresAt !== undefined) {
    const ms = typeof b.expiresAt === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(b.expiresAt) ? Date.parse(b.expiresAt) : Number.NaN;
    if (!Number.isFinite(ms)) return bad('"expiresAt" must be an ISO 8601 time');
    expiresAt = ms;
  }
  return { ok: true, req: { type: t, domain, subject, destination: dest.url, token: b.token, expiresAt } };
}

/** A token we issued, as the store keeps it (receiver side). */
export interface IssuedToken {
  /** `message`: the six-step flow's secret, for one message; `session`: the token variant's. */
  flow: 'message' | 'session';
  domain: string;
  messageId: string | null;
  expiresAt: number;
  revokedAt: number | null;
}

export type Refusal = { status: number; error: string; message: string };

/**
 * May `token` carry this message? The claims a receiver checks at step 6 (and for every later
 * message in the token variant): not revoked, not expired, the sender at the token's domain, and
 * for the six-step secret the very message it was made for.
 */
export function checkTokenUse(token: IssuedToken, use: { now: number; from: string; id: string | undefined }): Refusal | null {
  if (token.revokedAt !== null) return { status: 401, error: 'token_revoked', message: 'this token was revoked; ask for a new one' };
  if (use.now >= token.expiresAt) return { status: 401, error: 'token_expired', message: 'this token has expired; ask for a new one' };
  const at = use.from.lastIndexOf('@');
  const fromDomain = at > 0 ? use.from.slice(at + 1).toLowerCase() : '';
  if (fromDomain !== token.domain) return { status: 403, error: 'sender_not_delegated', message: `the token was issued for senders at ${token.domain}, not ${fromDomain || use.from}` };
  if (token.flow === 'message' && use.id !== token.messageId) return { status: 403, error: 'token_mismatch', message: 'this token was issued for another message' };
  return null;
}

/** An auth code we issued (sender side). */
export interface IssuedCode {
  domain: string;
  destination: string;
  expiresAt: number;
  usedAt: number | null;
}

/** May a receiver use `code` for `domain` at `destination` now (check and grant, token variant)? */
export function checkCodeUse(code: IssuedCode, use: { now: number; domain: string; destination: string }): Refusal | null {
  if (code.usedAt !== null) return { status: 404, error: 'unknown_code', message: 'this auth code was used already' };
  if (use.now >= code.expiresAt) return { status: 404, error: 'unknown_code', message: 'this auth code has expired' };
  if (code.domain !== use.domain) return { status: 404, error: 'unknown_code', message: `this auth code is not for ${use.domain}` };
  if (!sameEndpoint(code.destination, use.destination)) return { status: 403, error: 'destination_mismatch', message: `this auth code was issued for ${code.destination}, not ${use.destination}` };
  return null;
}

/** How long we keep a granted token: what the receiver said, capped; its default when silent. */
export function heldExpiry(now: number, said: number | null, flow: 'message' | 'session', defaultMs: number): number {
  const cap = flow === 'message' ? MESSAGE_TOKEN_TTL_MS : MAX_HELD_TOKEN_MS;
  if (said === null) return now + Math.min(defaultMs, cap);
  return Math.min(said, now + cap);
}
