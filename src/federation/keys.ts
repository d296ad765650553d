// Our provider's signing keys: generated on first start, rotated on demand, published at
// GET /keys and GET /keys/{kid}, and used to sign the tokens we send with outbound messages.
//
// Several instances may share the database. The active key is the newest key with
// retired_at = null; if two instances create or rotate keys at the same moment, every instance
// converges on that same key and retires the others with the usual grace period, so tokens
// already signed with a losing key still verify.
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { randomId } from '../util/ids.js';
import { signCompact, syncSigner, type SyncSigner } from './jws.js';

export type SigningAlgorithm = 'ES256' | 'ES384' | 'EdDSA' | 'RS256';
export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ['ES256', 'ES384', 'EdDSA', 'RS256'];

/** Lifetime of the tokens we sign, in seconds. */
export const TOKEN_LIFETIME_S = 60;
/** How long publicJwks() answers from memory. */
const JWKS_CACHE_MS = 5_000;
/** How long sign() trusts its cached active key before re-reading the database. */
const SIGNER_RECHECK_MS = 30_000;

/** The public members of each key type (RFC 7518 §6, RFC 8037 §2). Everything else is dropped. */
const PUBLIC_MEMBERS: Record<string, readonly string[]> = {
  EC: ['crv', 'x', 'y'],
  OKP: ['crv', 'x'],
  RSA: ['n', 'e'],
};
/** Members that only a private or symmetric key has. */
export const PRIVATE_MEMBERS: readonly string[] = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'];

/**
 * A copy of `jwk` with only its public key material (whitelisted per kty), or null when the key
 * type has no public form we publish (e.g. `oct`) or a member is missing or not a string.
 */
export function publicPart(jwk: Record<string, unknown>): { kty: string; [member: string]: string } | null {
  const kty = jwk.kty;
  if (typeof kty !== 'string' || !Object.hasOwn(PUBLIC_MEMBERS, kty)) return null;
  const out: { kty: string; [member: string]: string } = { kty };
  for (const m of PUBLIC_MEMBERS[kty]!) {
    const v = jwk[m];
    if (typeof v !== 'string' || v.length === 0) return null;
    out[m] = v;
  }
  return out;
}

export interface SigningKeyInfo {
  kid: string;
  alg: string;
  createdAt: number;
  retiredAt: number | null;
  publishUntil: number | null;
  active: boolean;
}

interface KeyRow {
  kid: string;
  alg: string;
  public_jwk: string;
  created_at: number;
  retired_at: number | null;
  publish_until: number | null;
}

interface Signer {
  kid: string;
  alg: string;
  key: SyncSigner;
  loadedAt: number;
}

export class SigningKeys {
  private readonly db: Db;
  private readonly domain: string;
  private readonly clock: Clock;
  private readonly graceMs: number;
  private jwksCache: { rows: KeyRow[]; loadedAt: number } | null = null;
  private signer: Signer | null = null;
  private signerLoading: Promise<Signer> | null = null;
  /** Bumped on rotate(); a signer load that started before a rotation is not cached. */
  private generation = 0;

  constructor(db: Db, opts: { domain: string; clock: Clock; graceMs: number }) {
    this.db = db;
    this.domain = opts.domain.toLowerCase();
    this.clock = opts.clock;
    this.graceMs = opts.graceMs;
  }

  /** Creates an ES256 key if there is no active key. Safe to call from several instances at once. */
  async ensure(): Promise<void> {
    const active = await this.activeRows();
    if (active.length === 1) return;
    if (active.length === 0) await this.insertKey('ES256', this.clock.now());
    await this.converge();
  }

  /** Creates a new active key; the previous one is retired but published for graceMs more. */
  async rotate(alg: SigningAlgorithm = 'ES256'): Promise<{ kid: string }> {
    if (!SIGNING_ALGORITHMS.includes(alg)) throw new Error(`unsupported signing algorithm ${String(alg)}`);
    // The new key must sort after every existing key (created_at, then kid), even if this
    // instance's clock is a little behind the one that created the current key.
    const newest = await this.db
      .selectFrom('signing_keys')
      .select(['created_at'])
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    const createdAt = Math.max(this.clock.now(), newest ? Number(newest.created_at) + 1 : 0);
    const kid = await this.insertKey(alg, createdAt);
    const now = this.clock.now();
    // Retire every active key older than ours. A key created concurrently by another instance
    // that sorts after ours is left alone (its rotate() retires ours), so one key stays active.
    await this.db
      .updateTable('signing_keys')
      .set({ retired_at: now, publish_until: now + this.graceMs })
      .where('retired_at', 'is', null)
      .where((eb) =>
        eb.or([eb('created_at', '<', createdAt), eb.and([eb('created_at', '=', createdAt), eb('kid', '<', kid)])]),
      )
      .execute();
    this.invalidate();
    await this.converge();
    return { kid };
  }

  /** The JWK set served at GET /keys: the active key and retired keys still within their grace. */
  async publicJwks(): Promise<{ keys: JWK[] }> {
    const now = this.clock.now();
    let cache = this.jwksCache;
    if (!cache || now - cache.loadedAt >= JWKS_CACHE_MS || now < cache.loadedAt) {
      const rows = await this.db
        .selectFrom('signing_keys')
        .select(['kid', 'alg', 'public_jwk', 'created_at', 'retired_at', 'publish_until'])
        .where((eb) => eb.or([eb('retired_at', 'is', null), eb('publish_until', '>', now)]))
        .orderBy('created_at', 'desc')
        .orderBy('kid', 'desc')
        .execute();
      cache = { rows: rows.map(normaliseRow), loadedAt: now };
      this.jwksCache = cache;
    }
    const keys: JWK[] = [];
    for (const row of cache.rows) {
      // Re-check the grace period: a cached row may have run out since it was read.
      if (row.retired_at !== null && (row.publish_until === null || row.publish_until <= now)) continue;
      const jwk = toPublishedJwk(row);
      if (jwk) keys.push(jwk);
    }
    return { keys };
  }

  /** The published key with this kid (GET /keys/{kid}), or null. */
  async publicJwk(kid: string): Promise<JWK | null> {
    const { keys } = await this.publicJwks();
    return keys.find((k) => k.kid === kid) ?? null;
  }

  /** Every key in the database, newest first (for the CLI). */
  async list(): Promise<SigningKeyInfo[]> {
    const rows = await this.db
      .selectFrom('signing_keys')
      .select(['kid', 'alg', 'created_at', 'retired_at', 'publish_until'])
      .orderBy('created_at', 'desc')
      .orderBy('kid', 'desc')
      .execute();
    return rows.map((r) => ({
      kid: r.kid,
      alg: r.alg,
      createdAt: Number(r.created_at),
      retiredAt: r.retired_at === null ? null : Number(r.retired_at),
      publishUntil: r.publish_until === null ? null : Number(r.publish_until),
      active: r.retired_at === null,
    }));
  }

  /**
   * Signs a federation token: header {alg, kid, typ: 'JWT'}, claims iss = our domain, aud, sub,
   * iat = now, exp = iat + 60 s, jti = random. `extra` claims cannot override those.
   */
  async sign(claims: { aud: string; sub: string }, extra?: Record<string, unknown>): Promise<string> {
    const signer = await this.currentSigner();
    const iat = Math.floor(this.clock.now() / 1000);
    const payload = {
      ...(extra ?? {}),
      iss: this.domain,
      aud: claims.aud,
      sub: claims.sub,
      iat,
      exp: iat + TOKEN_LIFETIME_S,
      jti: randomId(),
    };
    return signCompact(signer.key, { kid: signer.kid, typ: 'JWT' }, payload);
  }

  /**
   * Signs any JSON payload as a compact JWS with the current key (header {alg, kid}): a signed
   * object that outlives a request, e.g. a room message relayed by the room's host (src/rooms/).
   */
  async signJws(payload: Record<string, unknown>): Promise<string> {
    const signer = await this.currentSigner();
    return signCompact(signer.key, { kid: signer.kid }, payload);
  }

  private invalidate(): void {
    this.generation++;
    this.jwksCache = null;
    this.signer = null;
    this.signerLoading = null;
  }

  private async currentSigner(): Promise<Signer> {
    const now = this.clock.now();
    const s = this.signer;
    if (s && now - s.loadedAt < SIGNER_RECHECK_MS && now >= s.loadedAt) return s;
    if (!this.signerLoading) {
      const generation = this.generation;
      const loading = this.loadSigner(now).then(
        (loaded) => {
          if (this.generation === generation) {
            this.signer = loaded;
            this.signerLoading = null;
          }
          return loaded;
        },
        (err: unknown) => {
          if (this.generation === generation) this.signerLoading = null;
          throw err;
        },
      );
      this.signerLoading = loading;
    }
    return this.signerLoading;
  }

  private async loadSigner(now: number): Promise<Signer> {
    let row = await this.activePrivateRow();
    if (!row) {
      await this.ensure();
      row = await this.activePrivateRow();
      if (!row) throw new Error('no active signing key');
    }
    // Reuse the imported key when the active key has not changed.
    if (this.signer && this.signer.kid === row.kid) return { ...this.signer, loadedAt: now };
    const jwk = JSON.parse(row.private_jwk) as JWK;
    const key = (await importJWK(jwk, row.alg, { extractable: false })) as CryptoKey;
    return { kid: row.kid, alg: row.alg, key: syncSigner(row.alg, key), loadedAt: now };
  }

  private async activePrivateRow(): Promise<{ kid: string; alg: string; private_jwk: string } | undefined> {
    return this.db
      .selectFrom('signing_keys')
      .select(['kid', 'alg', 'private_jwk'])
      .where('retired_at', 'is', null)
      .orderBy('created_at', 'desc')
      .orderBy('kid', 'desc')
      .limit(1)
      .executeTakeFirst();
  }

  private async activeRows(): Promise<Array<{ kid: string; created_at: number }>> {
    return this.db
      .selectFrom('signing_keys')
      .select(['kid', 'created_at'])
      .where('retired_at', 'is', null)
      .orderBy('created_at', 'desc')
      .orderBy('kid', 'desc')
      .execute();
  }

  /**
   * If more than one key is active (instances raced in ensure() or rotate()), keep the newest
   * (created_at, then kid: the same choice on every instance) and retire the older ones with
   * the grace period. Only keys sorting before the kept one are retired, so the newest key is
   * never retired by anyone and exactly one key ends up active.
   */
  private async converge(): Promise<void> {
    const active = await this.activeRows();
    if (active.length <= 1) return;
    const keep = active[0]!;
    const keepCreated = Number(keep.created_at);
    const now = this.clock.now();
    await this.db
      .updateTable('signing_keys')
      .set({ retired_at: now, publish_until: now + this.graceMs })
      .where('retired_at', 'is', null)
      .where((eb) =>
        eb.or([eb('created_at', '<', keepCreated), eb.and([eb('created_at', '=', keepCreated), eb('kid', '<', keep.kid)])]),
      )
      .execute();
    this.invalidate();
  }

  private async insertKey(alg: SigningAlgorithm, createdAt: number): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const publicMembers = publicPart((await exportJWK(publicKey)) as Record<string, unknown>);
    if (!publicMembers) throw new Error(`cannot export the public part of a new ${alg} key`);
    const kid = await calculateJwkThumbprint(publicMembers as JWK, 'sha256');
    const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
    const publicJwk = { ...publicMembers, kid, alg, use: 'sig' };
    await this.db
      .insertInto('signing_keys')
      .values({
        kid,
        alg,
        private_jwk: JSON.stringify(privateJwk),
        public_jwk: JSON.stringify(publicJwk),
        created_at: createdAt,
        retired_at: null,
        publish_until: null,
      })
      .onConflict((oc) => oc.column('kid').doNothing())
      .execute();
    this.invalidate();
    return kid;
  }
}

function normaliseRow(r: KeyRow): KeyRow {
  return {
    ...r,
    created_at: Number(r.created_at),
    retired_at: r.retired_at === null ? null : Number(r.retired_at),
    publish_until: r.publish_until === null ? null : Number(r.publish_until),
  };
}

/** The JWK as published: public members only (re-whitelisted on every read), kid, alg, use. */
function toPublishedJwk(row: KeyRow): JWK | null {
  let stored: unknown;
  try {
    stored = JSON.parse(row.public_jwk);
  } catch {
    return null;
  }
  if (typeof stored !== 'object' || stored === null) return null;
  const pub = publicPart(stored as Record<string, unknown>);
  if (!pub) return null;
  return { ...pub, kid: row.kid, alg: row.alg, use: 'sig' } as JWK;
}
