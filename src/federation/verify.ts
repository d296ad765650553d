// Authentication of inbound federation requests (POST /messages from another provider):
// the bearer token's claims are checked against the message (claims.ts), its signature against
// the issuer's published key (peer-keys.ts), and its jti against replays (table inbound_jti).
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, importJWK, jwtVerify, type JWK } from 'jose';
import { storableText, type Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { sha256 } from '../util/ids.js';
import { FEDERATION_ALGORITHMS, checkBatchClaims, checkFederationClaims, checkTokenWithoutMessage } from './claims.js';
import type { PeerKeyCache } from './peer-keys.js';
import type { RateLimiter } from '../auth/limiter.js';
import { bodySha256 } from './batch.js';

export type FederationAuthResult =
  | {
      ok: true;
      /** The sending provider's domain, lower case. */
      iss: string;
      /** The sending user's address, lower case. */
      sub: string;
      jti: string | null;
      /** Set when `sub` is at a personal domain that proved its delegation to `iss` (that domain). */
      delegated?: string;
      /** The issuer's key was not fetched over authenticated HTTPS (tell the user). */
      insecureKeys: boolean;
    }
  | { ok: false; status: number; error: string; message: string; retryAfterSeconds?: number };

export type Failure = Extract<FederationAuthResult, { ok: false }>;

/**
 * A check of the issuer once its signature has verified and before the token's jti is recorded:
 * a per-peer rate limit belongs here, keyed on a domain the request has proven, so that nobody
 * can use up another provider's budget with tokens that only claim its name. A refusal here
 * records nothing (the sender may retry with the same token).
 */
export type IssuerGate = (iss: string) => Promise<Failure | null>;

/**
 * Personal domains (src/indieweb/): proves that `domain` — the domain of a sender that is not
 * `iss` — delegates to the provider `iss` (its home page names it). Null when it does; else the
 * refusal (403 sender_not_delegated). Runs after the signature verified, before the jti is recorded.
 */
export type DelegationCheck = (domain: string, iss: string) => Promise<Failure | null>;

export type BatchAuthResult = { ok: true; iss: string; insecureKeys: boolean } | Failure;

/** Upper bound on the size of a token we bother to parse. */
const MAX_TOKEN_LENGTH = 8192;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
/** Expired inbound_jti rows are deleted at most this often (per instance). */
const JTI_CLEANUP_INTERVAL_MS = 60_000;

const deny = (error: string, message: string): Failure => ({ ok: false, status: 401, error, message });

export class FederationVerifier {
  private readonly db: Db;
  private readonly keys: PeerKeyCache;
  private readonly domain: string;
  private readonly clock: Clock;
  private readonly skewMs: number;
  private lastCleanup = Number.NEGATIVE_INFINITY;
  private readonly imported = new Map<string, Awaited<ReturnType<typeof importJWK>>>();
  private delegation: { check: DelegationCheck; isLocal: (address: string) => boolean } | null = null;

  constructor(opts: { db: Db; keys: PeerKeyCache; domain: string; clock: Clock; skewMs: number }) {
    this.db = opts.db;
    this.keys = opts.keys;
    this.domain = opts.domain.toLowerCase();
    this.clock = opts.clock;
    this.skewMs = opts.skewMs;
  }

  /**
   * Accept senders at personal domains delegated to the issuer (`check` proves it), and count the
   * addresses `isLocal` names (our personal domains) as ours. See src/indieweb/.
   */
  useDelegation(check: DelegationCheck, isLocal: (address: string) => boolean): void {
    this.delegation = { check, isLocal };
  }

  /** What claims.ts needs to know about delegation. */
  private delegationInput(): { allowDelegated?: boolean; isLocal?: (a: string) => boolean } {
    return this.delegation ? { allowDelegated: true, isLocal: (a) => a.slice(a.lastIndexOf('@') + 1) === this.domain || this.delegation!.isLocal(a) } : {};
  }

  /** Is `domain` delegated to `iss`? (batch/1 senders: inbound.ts). Without a checker: no. */
  async checkDelegation(domain: string, iss: string): Promise<Failure | null> {
    if (!this.delegation) return { ok: false, status: 403, error: 'sender_mismatch', message: `"from" must be an address at ${iss}, the provider that signed the batch` };
    return this.delegation.check(domain, iss);
  }

  async verify(
    authorization: string | undefined,
    rawBody: Buffer | string,
    message: { from: string; to: string[] },
    gate?: IssuerGate,
  ): Promise<FederationAuthResult> {
    const decoded = decodeBearer(authorization);
    if (!decoded.ok) return decoded;
    const { token, header, payload } = decoded;

    const now = this.clock.now();
    const claims = checkFederationClaims({
      header: { alg: header.alg, kid: header.kid },
      payload: payload as Record<string, unknown>,
      ourDomain: this.domain,
      now,
      skewMs: this.skewMs,
      message,
      ...this.delegationInput(),
    });
    if (!claims.ok) return claims;

    // A sender at a personal domain: the signature of `iss` must verify first, then the domain
    // must name `iss` (checked before the jti is recorded: a refusal records nothing).
    const delegated = claims.delegated;
    const delegation = this.delegation;
    const fullGate: IssuerGate | undefined =
      delegated && delegation
        ? async (iss) => (await delegation.check(delegated, iss)) ?? (gate ? await gate(iss) : null)
        : gate;
    const checked = await this.checkSignatureAndReplay(token, claims, rawBody, now, fullGate);
    if (!checked.ok) return checked;
    return { ok: true, iss: claims.iss, sub: claims.sub, jti: claims.jti, insecureKeys: checked.insecureKeys, ...(delegated ? { delegated } : {}) };
  }

  /**
   * Authenticates a batch/1 request (POST /messages/batch): a token of the sending provider
   * (sub = iss) bound to the exact body by its SHA-256 (claims.ts `checkBatchClaims`). The
   * messages inside are checked one by one by the caller.
   */
  async verifyBatch(authorization: string | undefined, rawBody: Buffer | string, gate?: IssuerGate): Promise<BatchAuthResult> {
    const decoded = decodeBearer(authorization);
    if (!decoded.ok) return decoded;
    const { token, header, payload } = decoded;
    const now = this.clock.now();
    const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody;
    const claims = checkBatchClaims({
      header: { alg: header.alg, kid: header.kid },
      payload: payload as Record<string, unknown>,
      ourDomain: this.domain,
      now,
      skewMs: this.skewMs,
      bodySha256: bodySha256(body),
    });
    if (!claims.ok) return claims;
    const checked = await this.checkSignatureAndReplay(token, claims, body, now, gate);
    if (!checked.ok) return checked;
    return { ok: true, iss: claims.iss, insecureKeys: checked.insecureKeys };
  }

  /**
   * Before a large body is read (messaging/routes.ts): the token's claims that need no message,
   * and its signature. Null when they hold; the full check (verify) still runs on the message.
   * Records nothing.
   */
  async verifyBeforeBody(authorization: string | undefined): Promise<Failure | null> {
    const decoded = decodeBearer(authorization);
    if (!decoded.ok) return decoded;
    const claims = checkTokenWithoutMessage({
      header: { alg: decoded.header.alg, kid: decoded.header.kid },
      payload: decoded.payload as Record<string, unknown>,
      ourDomain: this.domain,
      now: this.clock.now(),
      skewMs: this.skewMs,
      ...this.delegationInput(),
    });
    if (!claims.ok) return claims;
    const signed = await this.checkSignatureOnly(decoded.token, claims);
    if (!signed.ok) return signed;
    // A sender at a personal domain: its delegation to the issuer, too (src/indieweb/).
    if (claims.delegated && this.delegation) return this.delegation.check(claims.delegated, claims.iss);
    return null;
  }

  /** The signature against the issuer's published key, then the gate, then the jti against replays. */
  private async checkSignatureAndReplay(
    token: string,
    claims: { iss: string; kid: string; alg: string; jti: string | null; exp: number },
    rawBody: Buffer | string,
    now: number,
    gate: IssuerGate | undefined,
  ): Promise<{ ok: true; insecureKeys: boolean } | Failure> {
    const signed = await this.checkSignatureOnly(token, claims);
    if (!signed.ok) return signed;
    const { insecureKeys } = signed;

    if (gate) {
      const refused = await gate(claims.iss);
      if (refused) return refused;
    }

    // --- replay -------------------------------------------------------------------------------
    // The standard makes jti optional. A token without one is bound to its first request by
    // using the token's own hash as its jti: the same request retried is fine, a different
    // message under the same token is a replay.
    {
      const jti = claims.jti ?? `token:${sha256(token)}`;
      const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody;
      const requestHash = sha256(Buffer.concat([Buffer.from(`${token}\n`, 'utf8'), body]));
      // The token cannot verify after exp + skew, so the row is not needed after that.
      const expiresAt = Math.ceil(claims.exp * 1000) + this.skewMs;
      // Stored as storableText: a jti may hold U+0000, which PostgreSQL's text cannot.
      const replay = await this.recordJti(claims.iss, storableText(jti), expiresAt, requestHash, now);
      if (replay) return deny('replayed', 'this token has already been used for a different request');
    }
    await this.cleanupJti(now);
    return { ok: true, insecureKeys };
  }

  /** The signature against the issuer's published key (a cached key is re-fetched once if it fails). */
  private async checkSignatureOnly(token: string, claims: { iss: string; kid: string; alg: string }): Promise<{ ok: true; insecureKeys: boolean } | Failure> {
    let lookup = await this.keys.getKey(claims.iss, claims.kid);
    let insecureKeys = false;
    for (let attempt = 0; ; attempt++) {
      if (lookup.status === 'unknown') {
        return deny('unknown_key', `${claims.iss} publishes no key with this kid over a channel we trust`);
      }
      if (lookup.status === 'unavailable') {
        return {
          ok: false,
          status: 503,
          error: 'keys_unavailable',
          message: `the signing keys of ${claims.iss} cannot be fetched right now`,
          retryAfterSeconds: lookup.retryAfterSeconds,
        };
      }
      const outcome = await this.checkSignature(token, lookup.jwk, claims.alg);
      if (outcome === 'ok') {
        insecureKeys = lookup.insecure;
        break;
      }
      if (outcome === 'bad_signature' && lookup.cached && attempt === 0) {
        // The peer may have replaced the key behind this kid: refresh once (cooldown applies).
        const previous = lookup.jwk;
        lookup = await this.keys.getKey(claims.iss, claims.kid, { forceRefresh: true });
        if (lookup.status !== 'found' || !sameKey(previous, lookup.jwk)) continue;
      }
      return outcome === 'bad_signature'
        ? deny('bad_signature', 'the token signature does not verify with the issuer\'s key')
        : deny('invalid_token', outcome);
    }

    return { ok: true, insecureKeys };
  }

  /** 'ok', 'bad_signature', or a message saying why the key or token is unusable. */
  private async checkSignature(token: string, jwk: JWK, alg: string): Promise<'ok' | 'bad_signature' | string> {
    if (jwk.alg !== undefined && jwk.alg !== alg) return 'the issuer\'s key is not for the token\'s algorithm';
    // Importing a JWK costs more than the verification itself: keep the imported keys.
    const cacheKey = `${alg}\n${JSON.stringify(jwk)}`;
    let key = this.imported.get(cacheKey);
    if (key === undefined) {
      try {
        key = await importJWK(jwk, alg);
      } catch {
        return 'the issuer\'s key cannot be used with the token\'s algorithm';
      }
      if (this.imported.size >= 1000) this.imported.clear();
      this.imported.set(cacheKey, key);
    }
    if (key instanceof Uint8Array) return 'the issuer\'s key is not a public key';
    try {
      await jwtVerify(token, key, {
        algorithms: [...FEDERATION_ALGORITHMS],
        clockTolerance: this.skewMs / 1000,
        currentDate: new Date(this.clock.now()),
      });
      return 'ok';
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad_signature';
      if (err instanceof joseErrors.JWTExpired) return 'the token has expired';
      if (err instanceof joseErrors.JOSEError) return `the token was refused: ${err.message}`;
      // e.g. a TypeError for a key that does not fit the algorithm (RSA < 2048 bits, wrong curve).
      return 'the issuer\'s key cannot verify this token';
    }
  }

  /**
   * Records (iss, jti). Returns true when the jti was already used for a different request; the
   * same token with the same body again (a retried delivery) is not a replay.
   */
  private async recordJti(iss: string, jti: string, expiresAt: number, requestHash: string, now: number): Promise<boolean> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const fresh = await this.db
        .insertInto('inbound_jti')
        .values({ iss, jti, expires_at: expiresAt, request_hash: requestHash })
        .onConflict((oc) => oc.columns(['iss', 'jti']).doNothing())
        .returning('jti')
        .executeTakeFirst();
      if (fresh) return false; // first use: the usual case, one statement
      const row = await this.db
        .selectFrom('inbound_jti')
        .select(['request_hash', 'expires_at'])
        .where('iss', '=', iss)
        .where('jti', '=', jti)
        .executeTakeFirst();
      if (!row) continue; // deleted by a concurrent cleanup between insert and select
      if (row.request_hash === requestHash) return false;
      if (Number(row.expires_at) < now && attempt === 0) {
        // A leftover from an expired token that reused this jti: drop it and record ours.
        await this.db
          .deleteFrom('inbound_jti')
          .where('iss', '=', iss)
          .where('jti', '=', jti)
          .where('expires_at', '<', now)
          .execute();
        continue;
      }
      return true;
    }
    return true;
  }

  private async cleanupJti(now: number): Promise<void> {
    if (now - this.lastCleanup < JTI_CLEANUP_INTERVAL_MS && now >= this.lastCleanup) return;
    this.lastCleanup = now;
    try {
      await this.db.deleteFrom('inbound_jti').where('expires_at', '<', now).execute();
    } catch {
      // Best effort; the next request tries again after the interval.
    }
  }
}

/** The bearer token of a request, its protected header and its (unverified) claims. */
function decodeBearer(authorization: string | undefined): { ok: true; token: string; header: ReturnType<typeof decodeProtectedHeader>; payload: ReturnType<typeof decodeJwt> } | Failure {
  const token = extractToken(authorization);
  if (token === null) {
    return authorization === undefined || authorization.trim() === ''
      ? deny('missing_token', 'a federation request needs "Authorization: Bearer <JWT>" signed by the sending provider')
      : deny('invalid_token', 'the Authorization header does not hold a JWT');
  }
  try {
    return { ok: true, token, header: decodeProtectedHeader(token), payload: decodeJwt(token) };
  } catch {
    return deny('invalid_token', 'the token is not a well-formed JWT');
  }
}

/** `Bearer <jwt>` (scheme case-insensitive) or a bare JWT; null otherwise. */
export function extractToken(authorization: string | undefined): string | null {
  if (authorization === undefined) return null;
  const value = authorization.trim();
  if (value.length === 0 || value.length > MAX_TOKEN_LENGTH + 16) return null;
  const m = /^Bearer[ \t]+(\S+)$/i.exec(value);
  const token = m ? m[1]! : value;
  if (token.length > MAX_TOKEN_LENGTH || !JWT_SHAPE.test(token)) return null;
  return token;
}

function sameKey(a: JWK, b: JWK): boolean {
  const members = ['kty', 'crv', 'x', 'y', 'n', 'e', 'alg'] as const;
  return members.every((m) => a[m] === b[m]);
}

/** An IssuerGate body: one hit of `cost` on `limiter` under `key`; a 429 once the peer is over. */
export async function peerLimit(limiter: RateLimiter, key: string, iss: string, cost = 1): Promise<Failure | null> {
  const r = await limiter.hit(key, cost);
  return r.allowed ? null : overLimit(iss, r.retryAfterMs);
}

/** The refusal of a request over the per-peer rate limit. */
export function overLimit(iss: string, retryAfterMs: number): Failure {
  return { ok: false, status: 429, error: 'rate_limited', message: `too many requests from ${iss}`, retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)) };
}

/** A token's `iss`, lower case, not verified (it selects the blocklist check only); null if none. */
export function claimedIssuer(token: string): string | null {
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === 'string' ? iss.toLowerCase() : null;
  } catch {
    return null; // the verifier explains what is wrong
  }
}
