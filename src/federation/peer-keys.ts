// Public keys of other providers, fetched from `{iss}/keys/{kid}` (seed standard) with a
// fallback to the `{iss}/keys` JWK set (later revision), and cached in memory.
//
// Refetch policy (per issuer), built so that strangers cannot starve a peer's key rotation
// (docs/federation.md, "Fetching the issuer's key"):
// * A key we hold and that is fresh is used without asking.
// * Otherwise we ask the peer, unless we are in the cooldown (`cooldownMs`) that follows a lookup
//   that found nothing, a forced refresh (a failed signature on a cached key) or a failure to
//   reach the peer. So a flood of forged tokens naming the peer costs it at most one lookup per
//   cooldown. Successful lookups do not start a cooldown.
// * A forced refresh asks for the whole /keys set first, and every lookup that reaches the set
//   remembers all of it: whichever request gets the lookup after a cooldown brings every key the
//   peer publishes by then, a new one included.
// * During a cooldown a kid we do not hold is refused ('unknown', 401) if the peer has answered
//   with its whole set since we first heard of the kid, and deferred ('unavailable', 503 until the
//   cooldown ends) if not: we could not ask yet. A genuinely new kid waits one cooldown at most.
// * A held key that went stale is used during a cooldown rather than refused.
import type { JWK } from 'jose';
import type { Clock } from '../util/clock.js';
import { PRIVATE_MEMBERS, publicPart } from './keys.js';

/** Thrown by fetchJson when the peer cannot be reached or answers with a 5xx status. */
export class PeerUnavailableError extends Error {
  override name = 'PeerUnavailableError';
  constructor(
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/**
 * Fetches `path` from the provider at `domain` and parses the JSON answer. Returns null for
 * 404, `{ json, insecure }` otherwise (`insecure`: the answer did not come over authenticated
 * HTTPS); throws PeerUnavailableError when the peer cannot be reached or answers 5xx.
 */
export type FetchJson = (domain: string, path: string) => Promise<{ json: unknown; insecure: boolean } | null>;

export type PeerKeyResult =
  | {
      status: 'found';
      jwk: JWK;
      /** The key was fetched over plain HTTP or unauthenticated TLS. */
      insecure: boolean;
      /** Answered from the cache (a failed signature is then worth one forced refresh). */
      cached: boolean;
    }
  | { status: 'unknown' }
  | { status: 'unavailable'; retryAfterSeconds: number };

interface CachedKey {
  jwk: JWK;
  insecure: boolean;
  fetchedAt: number;
}

interface IssuerState {
  keys: Map<string, CachedKey>;
  cooldownUntil: number;
  /** Lookups started so far; they are numbered 1, 2, … in the order they start. */
  lookups: number;
  /** The number of the last lookup the peer answered with its /keys set; 0 if none. */
  answered: number;
  /**
   * Kids asked for that we did not hold, each with the number of lookups started when we first
   * heard of it: lookup n was made after that iff n > the number (bounded, oldest first).
   */
  firstSeen: Map<string, number>;
  inflight: Promise<unknown> | null;
}

/** Key types we accept from peers (no `oct`: a symmetric key must never verify a token). */
const ACCEPTED_KTY = new Set(['EC', 'OKP', 'RSA']);
const ACCEPTED_CRV: Record<string, readonly string[]> = { EC: ['P-256', 'P-384'], OKP: ['Ed25519'] };
const MAX_KEYS_PER_ISSUER = 32;
/** Unknown kids remembered per issuer; a flood of made-up kids only pushes old ones out. */
const MAX_FIRST_SEEN = 256;
const MAX_ISSUERS = 10_000;
/** A peer's own Retry-After is honoured up to this many seconds. */
const MAX_PEER_RETRY_AFTER_S = 300;

/**
 * The JWK in a sanitised form (public members, kid, alg, use), or null if it is unusable: not
 * an object, kty not EC/OKP/RSA, a private or symmetric member present, or `use` not 'sig'.
 */
export function sanitisePeerJwk(input: unknown): JWK | null {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  if (typeof o.kty !== 'string' || !ACCEPTED_KTY.has(o.kty)) return null;
  for (const m of PRIVATE_MEMBERS) if (Object.hasOwn(o, m)) return null;
  if (o.use !== undefined && o.use !== 'sig') return null;
  if (o.kid !== undefined && typeof o.kid !== 'string') return null;
  if (o.alg !== undefined && typeof o.alg !== 'string') return null;
  const pub = publicPart(o);
  if (!pub) return null;
  const crvs = ACCEPTED_CRV[o.kty];
  if (crvs && !crvs.includes(pub.crv ?? '')) return null;
  const out: Record<string, string> = { ...pub };
  if (typeof o.kid === 'string') out.kid = o.kid;
  if (typeof o.alg === 'string') out.alg = o.alg;
  out.use = 'sig';
  return out as JWK;
}

export class PeerKeyCache {
  private readonly fetchJson: FetchJson;
  private readonly clock: Clock;
  private readonly cooldownMs: number;
  private readonly maxAgeMs: number;
  private readonly issuers = new Map<string, IssuerState>();

  constructor(opts: { fetchJson: FetchJson; clock: Clock; cooldownMs?: number; maxAgeMs?: number }) {
    this.fetchJson = opts.fetchJson;
    this.clock = opts.clock;
    this.cooldownMs = opts.cooldownMs ?? 30_000;
    this.maxAgeMs = opts.maxAgeMs ?? 10 * 60_000;
  }

  /** Looks up `kid` of issuer `iss`. Never throws because of what the peer does. */
  async getKey(iss: string, kid: string, opts: { forceRefresh?: boolean } = {}): Promise<PeerKeyResult> {
    const issuer = iss.toLowerCase();
    let state = this.state(issuer);
    // One fetch per issuer at a time; callers that arrive meanwhile use its outcome.
    while (state.inflight) {
      await state.inflight.catch(() => undefined);
      state = this.state(issuer);
    }

    const now = this.clock.now();
    const cached = state.keys.get(kid);
    const fresh = cached !== undefined && now - cached.fetchedAt < this.maxAgeMs && now >= cached.fetchedAt;
    if (fresh && !opts.forceRefresh) return { status: 'found', jwk: cached.jwk, insecure: cached.insecure, cached: true };
    if (!cached) this.noteFirstSeen(state, kid);

    if (now < state.cooldownUntil) {
      // No lookup allowed yet. A key we hold (a forced refresh, or one gone stale) is used as it
      // is; a kid we do not hold is refused once the peer has answered a lookup made after we
      // first heard of it, and otherwise deferred until we may ask.
      if (cached) return { status: 'found', jwk: cached.jwk, insecure: cached.insecure, cached: true };
      if ((state.firstSeen.get(kid) ?? state.lookups) < state.answered) return { status: 'unknown' };
      return { status: 'unavailable', retryAfterSeconds: this.retryAfter(state, now) };
    }

    const number = ++state.lookups;
    const lookup = this.fetchKey(issuer, kid, opts.forceRefresh === true);
    state.inflight = lookup;
    let outcome: FetchOutcome & { listed: boolean };
    try {
      outcome = await lookup;
    } finally {
      state.inflight = null;
    }

    const after = this.clock.now();
    // Only the whole set tells about kids other than the one asked for.
    if (outcome.listed) state.answered = number;
    if (opts.forceRefresh || outcome.status !== 'found') state.cooldownUntil = after + this.cooldownMs;
    switch (outcome.status) {
      case 'found':
        state.firstSeen.delete(kid);
        return { status: 'found', jwk: outcome.jwk, insecure: outcome.insecure, cached: false };
      case 'unknown':
        state.keys.delete(kid);
        return { status: 'unknown' };
      case 'unavailable':
        if (outcome.retryAfterSeconds !== undefined) {
          state.cooldownUntil = Math.max(state.cooldownUntil, after + outcome.retryAfterSeconds * 1000);
        }
        return { status: 'unavailable', retryAfterSeconds: this.retryAfter(state, after) };
    }
  }

  /** Remembers when a kid we do not hold was first asked for (kept if already known). */
  private noteFirstSeen(state: IssuerState, kid: string): void {
    if (state.firstSeen.has(kid)) return;
    if (state.firstSeen.size >= MAX_FIRST_SEEN) {
      const oldest = state.firstSeen.keys().next();
      if (!oldest.done) state.firstSeen.delete(oldest.value);
    }
    state.firstSeen.set(kid, state.lookups);
  }

  /** Forgets everything about `iss` (or every issuer), including cooldowns. */
  clear(iss?: string): void {
    if (iss === undefined) this.issuers.clear();
    else this.issuers.delete(iss.toLowerCase());
  }

  private retryAfter(state: IssuerState, now: number): number {
    return Math.max(1, Math.ceil((state.cooldownUntil - now) / 1000));
  }

  private state(issuer: string): IssuerState {
    let s = this.issuers.get(issuer);
    if (!s) {
      if (this.issuers.size >= MAX_ISSUERS) {
        // Evict the least recently created idle issuer (Map keeps insertion order).
        for (const [name, st] of this.issuers) {
          if (!st.inflight) {
            this.issuers.delete(name);
            break;
          }
        }
      }
      s = { keys: new Map(), cooldownUntil: 0, lookups: 0, answered: 0, firstSeen: new Map(), inflight: null };
      this.issuers.set(issuer, s);
    }
    return s;
  }

  private remember(issuer: string, kid: string, jwk: JWK, insecure: boolean): void {
    const keys = this.state(issuer).keys;
    keys.delete(kid);
    if (keys.size >= MAX_KEYS_PER_ISSUER) {
      const oldest = keys.keys().next();
      if (!oldest.done) keys.delete(oldest.value);
    }
    keys.set(kid, { jwk, insecure, fetchedAt: this.clock.now() });
  }

  /**
   * Asks the peer: /keys/{kid} first, then the /keys set — or, for a forced refresh, the set
   * first (it renews every kid of the peer at once, and so also brings a key published since).
   * `listed` is true when the set answered: it then tells for every kid whether the peer has it.
   */
  private async fetchKey(issuer: string, kid: string, setFirst: boolean): Promise<FetchOutcome & { listed: boolean }> {
    if (setFirst) {
      const set = await this.fetchSet(issuer, kid);
      if (set.status !== 'missing') return set;
    }
    // GET /keys/{kid}. Not for "." and "..": URL parsing removes them as dot segments (even
    // percent-encoded), so "/keys/.." would fetch the peer's "/". Such kids only come from /keys.
    const single: Awaited<ReturnType<PeerKeyCache['tryFetch']>> =
      kid === '.' || kid === '..' ? { kind: 'missing' } : await this.tryFetch(issuer, `/keys/${encodeURIComponent(kid)}`);
    if (single.kind === 'answer') {
      const jwk = sanitisePeerJwk(single.json);
      // A JWK without kid is accepted here: the peer answered for this kid.
      if (jwk && (jwk.kid === undefined || jwk.kid === kid)) {
        const withKid = { ...jwk, kid } as JWK;
        this.remember(issuer, kid, withKid, single.insecure);
        return { status: 'found', jwk: withKid, insecure: single.insecure, listed: false };
      }
    }
    if (setFirst) return single.kind === 'unavailable' ? { status: 'unavailable', retryAfterSeconds: single.retryAfterSeconds, listed: false } : { status: 'unknown', listed: false };

    // The /keys set. Also tried when /keys/{kid} failed outright: a peer implementing only the
    // later revision may answer that route with an error other than 404.
    const set = await this.fetchSet(issuer, kid);
    if (set.status === 'unavailable') return { ...set, retryAfterSeconds: set.retryAfterSeconds ?? (single.kind === 'unavailable' ? single.retryAfterSeconds : undefined) };
    if (set.status === 'missing') {
      // /keys/{kid} could not be reached but /keys says 404: we cannot tell, so retry later.
      return single.kind === 'unavailable' ? { status: 'unavailable', retryAfterSeconds: single.retryAfterSeconds, listed: false } : { status: 'unknown', listed: false };
    }
    return set;
  }

  /** GET /keys: every usable key of the set is remembered; the one for `kid`, if any, returned. */
  private async fetchSet(issuer: string, kid: string): Promise<(FetchOutcome & { listed: boolean }) | { status: 'missing'; listed: false }> {
    const set = await this.tryFetch(issuer, '/keys');
    if (set.kind === 'unavailable') return { status: 'unavailable', retryAfterSeconds: set.retryAfterSeconds, listed: false };
    if (set.kind === 'missing') return { status: 'missing', listed: false };
    const list = (set.json as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(list)) return { status: 'unknown', listed: false };
    const sanitised = list.slice(0, MAX_KEYS_PER_ISSUER).map(sanitisePeerJwk);
    const count = new Map<string, number>();
    for (const jwk of sanitised) if (typeof jwk?.kid === 'string') count.set(jwk.kid, (count.get(jwk.kid) ?? 0) + 1);
    let found: JWK | null = null;
    for (const jwk of sanitised) {
      if (!jwk || typeof jwk.kid !== 'string') continue;
      // Two keys under one kid are ambiguous: use neither.
      if (count.get(jwk.kid)! > 1) {
        this.state(issuer).keys.delete(jwk.kid);
        continue;
      }
      this.remember(issuer, jwk.kid, jwk, set.insecure);
      if (jwk.kid === kid) found = jwk;
    }
    return found ? { status: 'found', jwk: found, insecure: set.insecure, listed: true } : { status: 'unknown', listed: true };
  }

  private async tryFetch(
    issuer: string,
    path: string,
  ): Promise<
    | { kind: 'answer'; json: unknown; insecure: boolean }
    | { kind: 'missing' }
    | { kind: 'unavailable'; retryAfterSeconds?: number }
  > {
    try {
      const res = await this.fetchJson(issuer, path);
      if (res === null || res === undefined) return { kind: 'missing' };
      return { kind: 'answer', json: res.json, insecure: res.insecure !== false };
    } catch (err) {
      // PeerUnavailableError, or anything else (unparseable answer, a bug in the fetcher): we
      // could not learn the keys, so the sender should retry later rather than be refused.
      const hint = err instanceof PeerUnavailableError ? err.retryAfterSeconds : undefined;
      if (typeof hint === 'number' && Number.isFinite(hint) && hint > 0) {
        return { kind: 'unavailable', retryAfterSeconds: Math.min(hint, MAX_PEER_RETRY_AFTER_S) };
      }
      return { kind: 'unavailable' };
    }
  }
}

type FetchOutcome =
  | { status: 'found'; jwk: JWK; insecure: boolean }
  | { status: 'unknown' }
  | { status: 'unavailable'; retryAfterSeconds?: number };
