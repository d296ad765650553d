// Sessions and tokens. Access and refresh tokens are opaque random strings; only their SHA-256
// is stored, so a database leak yields no usable token. A session is one login on one device;
// refreshing rotates the refresh token and issues a new access token.
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { randomId, sha256 } from '../util/ids.js';
import type { Accounts, Account } from '../accounts/service.js';
import { clientBucket, type RateLimiter } from './limiter.js';

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token: string;
  /** Non-standard conveniences for clients. */
  address: string;
}

export interface Principal {
  userId: number;
  username: string;
  address: string;
  sessionId: string;
  expiresAt: number;
}

/** RFC 6749 §5.2 error. */
export class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: 'invalid_request' | 'invalid_client' | 'invalid_grant' | 'unauthorized_client' | 'unsupported_grant_type' | 'invalid_scope' | 'slow_down',
    message: string,
    readonly retryAfterMs = 0,
  ) {
    super(message);
  }
}

const ACCESS_PREFIX = 'ita_';
const RECHECK_MS = 5_000;
const REFRESH_PREFIX = 'itr_';

export class Auth {
  // Verified access tokens, so the hot path (every POST /messages) skips the database.
  private readonly cache = new Map<string, Principal>();
  private readonly checkedAt = new Map<string, number>();
  private readonly maxCache = 50_000;
  private readonly revokeListeners = new Set<(sessionId: string) => void>();
  // Sessions ended in the last RECHECK_MS: a lookup that raced with the revocation (read the row
  // just before it committed) must not put the principal back into the cache.
  private readonly endedRecently = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly accounts: Accounts,
    private readonly clock: Clock,
    private readonly opts: {
      accessTtlMs: number;
      refreshTtlMs: number;
      /** Failed logins per (account, client address). */
      perAccountClient: RateLimiter;
      /** Failed logins per account, from all clients together (looser). */
      perAccount: RateLimiter;
      /** Failed logins per client address, for all accounts together. */
      perClient: RateLimiter;
    },
  ) {}

  onRevoke(fn: (sessionId: string) => void): () => void {
    this.revokeListeners.add(fn);
    return () => this.revokeListeners.delete(fn);
  }

  async passwordGrant(username: string, password: string, clientIp: string): Promise<TokenResponse> {
    const login = this.accounts.normaliseLogin(username) ?? username.toLowerCase();
    // Three budgets, so that a stranger cannot lock a user out by failing on purpose: failures
    // count per (account, client), where the real user's own client keeps its budget; per
    // client, against one address guessing many accounts; and, much looser, per account across
    // all clients, against a guess spread over many addresses. Client = IPv4 address or IPv6 /64.
    const client = clientBucket(clientIp);
    const keys: Array<[RateLimiter, string]> = [
      [this.opts.perAccountClient, `login:${login}:${client}`],
      [this.opts.perClient, `login-ip:${client}`],
      [this.opts.perAccount, `login:${login}`],
    ];
    const checks = await Promise.all(keys.map(([l, k]) => l.check(k)));
    if (checks.some((c) => !c.allowed)) {
      throw new OAuthError(429, 'slow_down', 'too many failed logins; try again later', Math.max(...checks.map((c) => c.retryAfterMs)));
    }
    const account = await this.accounts.verifyPassword(username, password);
    if (!account) {
      await Promise.all(keys.map(([l, k]) => l.hit(k)));
      throw new OAuthError(400, 'invalid_grant', 'wrong username or password');
    }
    await this.opts.perAccountClient.reset(`login:${login}:${client}`);
    return this.createSession(account);
  }

  async createSession(account: Account): Promise<TokenResponse> {
    const now = this.clock.now();
    const sessionId = randomId();
    const refresh = REFRESH_PREFIX + randomId(32);
    const access = ACCESS_PREFIX + randomId(32);
    await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('sessions')
        .values({ id: sessionId, user_id: account.id, refresh_hash: sha256(refresh), created_at: now, refreshed_at: now, expires_at: now + this.opts.refreshTtlMs, revoked_at: null })
        .execute();
      await trx.insertInto('access_tokens').values({ token_hash: sha256(access), session_id: sessionId, user_id: account.id, expires_at: now + this.opts.accessTtlMs }).execute();
    });
    return this.response(access, refresh, account.address);
  }

  private response(access: string, refresh: string, address: string): TokenResponse {
    return { access_token: access, token_type: 'Bearer', expires_in: Math.floor(this.opts.accessTtlMs / 1000), refresh_token: refresh, address };
  }

  async refreshGrant(refreshToken: string): Promise<TokenResponse> {
    const now = this.clock.now();
    const hash = sha256(refreshToken);
    const session = await this.db.selectFrom('sessions').selectAll().where('refresh_hash', '=', hash).executeTakeFirst();
    if (!session || session.revoked_at !== null || Number(session.expires_at) <= now) {
      throw new OAuthError(400, 'invalid_grant', 'the refresh token is invalid, expired or revoked');
    }
    const account = await this.accounts.findById(Number(session.user_id));
    if (!account) throw new OAuthError(400, 'invalid_grant', 'the account no longer exists');
    const refresh = REFRESH_PREFIX + randomId(32);
    const access = ACCESS_PREFIX + randomId(32);
    const rotated = await this.db.transaction().execute(async (trx) => {
      // Compare-and-swap on the old hash: two concurrent refreshes with one token cannot both win.
      const res = await trx
        .updateTable('sessions')
        .set({ refresh_hash: sha256(refresh), refreshed_at: now, expires_at: now + this.opts.refreshTtlMs })
        .where('id', '=', session.id)
        .where('refresh_hash', '=', hash)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) return false;
      await trx.deleteFrom('access_tokens').where('session_id', '=', session.id).where('expires_at', '<=', now).execute();
      await trx.insertInto('access_tokens').values({ token_hash: sha256(access), session_id: session.id, user_id: account.id, expires_at: now + this.opts.accessTtlMs }).execute();
      return true;
    });
    if (!rotated) throw new OAuthError(400, 'invalid_grant', 'the refresh token was already used');
    return this.response(access, refresh, account.address);
  }

  /** Resolves an access token to its principal, or null if unknown, expired or revoked. */
  async authenticate(token: string): Promise<Principal | null> {
    if (!token.startsWith(ACCESS_PREFIX) || token.length > 200) return null;
    const hash = sha256(token);
    const now = this.clock.now();
    const cached = this.cache.get(hash);
    if (cached) {
      // Re-checked against the database now and then: a session ended by another process (the
      // CLI, another instance) stops working within RECHECK_MS.
      if (cached.expiresAt > now && now - this.checkedAt.get(hash)! < RECHECK_MS) return cached;
      this.cache.delete(hash);
      this.checkedAt.delete(hash);
      if (cached.expiresAt <= now) return null;
    }
    const row = await this.db
      .selectFrom('access_tokens')
      .innerJoin('sessions', 'sessions.id', 'access_tokens.session_id')
      .innerJoin('users', 'users.id', 'access_tokens.user_id')
      .select(['access_tokens.expires_at', 'access_tokens.session_id', 'sessions.revoked_at', 'users.id', 'users.username'])
      .where('access_tokens.token_hash', '=', hash)
      .where('users.removed_at', 'is', null)
      .executeTakeFirst();
    if (!row || row.revoked_at !== null || Number(row.expires_at) <= now) return null;
    if (this.endedRecently.has(row.session_id)) return null;
    const principal: Principal = {
      userId: Number(row.id),
      username: row.username,
      address: this.accounts.address(row.username),
      sessionId: row.session_id,
      expiresAt: Number(row.expires_at),
    };
    if (this.cache.size >= this.maxCache) {
      const oldest = this.cache.keys().next().value!;
      this.cache.delete(oldest);
      this.checkedAt.delete(oldest);
    }
    this.cache.set(hash, principal);
    this.checkedAt.set(hash, now);
    return principal;
  }

  /** RFC 7009: revoking either token of a session ends the whole session. Unknown tokens are fine. */
  async revokeToken(token: string): Promise<void> {
    const hash = sha256(token);
    let sessionId: string | undefined;
    if (token.startsWith(REFRESH_PREFIX)) {
      sessionId = (await this.db.selectFrom('sessions').select('id').where('refresh_hash', '=', hash).executeTakeFirst())?.id;
    } else {
      sessionId = (await this.db.selectFrom('access_tokens').select('session_id').where('token_hash', '=', hash).executeTakeFirst())?.session_id;
    }
    if (sessionId) await this.revokeSession(sessionId);
  }

  async revokeSession(sessionId: string): Promise<void> {
    const now = this.clock.now();
    await this.db.transaction().execute(async (trx) => {
      await trx.updateTable('sessions').set({ revoked_at: now }).where('id', '=', sessionId).where('revoked_at', 'is', null).execute();
      await trx.deleteFrom('access_tokens').where('session_id', '=', sessionId).execute();
    });
    this.forgetSession(sessionId);
  }

  /** Ends every session of a user (password change, account removal). */
  async revokeAllForUser(userId: number): Promise<void> {
    const sessions = await this.db.selectFrom('sessions').select('id').where('user_id', '=', userId).where('revoked_at', 'is', null).execute();
    for (const s of sessions) await this.revokeSession(s.id);
  }

  /** Drops cached principals of a session and tells listeners (live sockets close). */
  forgetSession(sessionId: string): void {
    this.dropCachedSession(sessionId);
    for (const fn of this.revokeListeners) fn(sessionId);
  }

  /**
   * Another instance ended this session ('session-revoked' on a shared bus): its tokens stop
   * working here at once rather than at the next re-check. Tells no listener (no echo).
   */
  dropCachedSession(sessionId: string): void {
    const now = this.clock.now();
    for (const [id, at] of this.endedRecently) {
      if (now - at < RECHECK_MS) break; // insertion order: the rest are newer
      this.endedRecently.delete(id);
    }
    this.endedRecently.delete(sessionId);
    this.endedRecently.set(sessionId, now);
    for (const [k, p] of this.cache) {
      if (p.sessionId !== sessionId) continue;
      this.cache.delete(k);
      this.checkedAt.delete(k);
    }
  }

  /** Which of these sessions are still valid (not revoked, not expired, account not removed). */
  async activeSessions(ids: string[]): Promise<Set<string>> {
    const out = new Set<string>();
    const now = this.clock.now();
    for (let i = 0; i < ids.length; i += 500) {
      const rows = await this.db
        .selectFrom('sessions')
        .innerJoin('users', 'users.id', 'sessions.user_id')
        .select('sessions.id')
        .where('sessions.id', 'in', ids.slice(i, i + 500))
        .where('sessions.revoked_at', 'is', null)
        .where('sessions.expires_at', '>', now)
        .where('users.removed_at', 'is', null)
        .execute();
      for (const r of rows) out.add(r.id);
    }
    return out;
  }

  /** Housekeeping: expired access tokens and long-dead sessions. */
  async purgeExpired(): Promise<void> {
    const now = this.clock.now();
    await this.db.deleteFrom('access_tokens').where('expires_at', '<=', now).execute();
    await this.db.deleteFrom('sessions').where('expires_at', '<=', now).execute();
    for (const [k, p] of this.cache) if (p.expiresAt <= now) this.cache.delete(k);
  }
}
