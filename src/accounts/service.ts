// Local user accounts: creation, password checks (argon2id), listing, removal.
import argon2 from 'argon2';
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { isValidLocalPart } from '../protocol/address.js';

export interface Account {
  id: number;
  username: string;
  address: string;
  createdAt: number;
}

export class AccountError extends Error {
  constructor(
    readonly code: 'invalid_username' | 'invalid_password' | 'username_taken' | 'not_found',
    message: string,
  ) {
    super(message);
  }
}

export const MIN_PASSWORD = 8;
export const MAX_PASSWORD = 1024;
// Names that would confuse users or impersonate the operator.
const RESERVED = new Set(['postmaster', 'abuse', 'admin', 'administrator', 'root', 'hostmaster', 'webmaster', 'security', 'noreply', 'no-reply']);

// argon2id with OWASP's second recommended profile (19 MiB, t=2) — fast enough for a login burst
// on a small machine, far beyond what offline cracking of a leaked database can afford.
const HASH_OPTIONS = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

export function validateUsername(raw: unknown): { ok: true; username: string } | { ok: false; message: string } {
  if (typeof raw !== 'string' || raw.length === 0) return { ok: false, message: 'username: required' };
  if (!/^[\x21-\x7e]+$/.test(raw)) return { ok: false, message: 'username: ASCII letters, digits and symbols only' };
  const name = raw.toLowerCase();
  if (!isValidLocalPart(name)) {
    return { ok: false, message: 'username: must be a valid mail local part (letters, digits and !#$%&\'*+/=?^_`{|}~-, dots between)' };
  }
  if (RESERVED.has(name)) return { ok: false, message: `username: "${name}" is reserved` };
  return { ok: true, username: name };
}

export function validatePassword(raw: unknown): { ok: true; password: string } | { ok: false; message: string } {
  if (typeof raw !== 'string') return { ok: false, message: 'password: required' };
  if ([...raw].length < MIN_PASSWORD) return { ok: false, message: `password: at least ${MIN_PASSWORD} characters` };
  if (raw.length > MAX_PASSWORD) return { ok: false, message: `password: at most ${MAX_PASSWORD} characters` };
  return { ok: true, password: raw };
}

/** How long an account known to exist is taken for granted by existingAddresses. */
const EXISTS_CACHE_MS = 5_000;

export class Accounts {
  private dummyHash: Promise<string> | null = null;
  /** username → until when it is known to be a current account (see existingAddresses). */
  private readonly existing = new Map<string, number>();
  /**
   * Removals committed by this process. A lookup that raced a removal (read the row before the
   * removal committed, answered after it cleared the cache) must not put the name back.
   */
  private removals = 0;

  constructor(
    private readonly db: Db,
    private readonly domain: string,
    private readonly clock: Clock,
  ) {}

  address(username: string): string {
    return `${username}@${this.domain}`;
  }

  private toAccount(row: { id: number; username: string; created_at: number }): Account {
    return { id: Number(row.id), username: row.username, address: this.address(row.username), createdAt: Number(row.created_at) };
  }

  async create(usernameRaw: unknown, passwordRaw: unknown): Promise<Account> {
    const u = validateUsername(usernameRaw);
    if (!u.ok) throw new AccountError('invalid_username', u.message);
    const p = validatePassword(passwordRaw);
    if (!p.ok) throw new AccountError('invalid_password', p.message);
    const prior = await this.db.selectFrom('users').select('removed_at').where('username', '=', u.username).executeTakeFirst();
    if (prior) {
      throw new AccountError('username_taken', prior.removed_at === null ? `username: "${u.username}" is taken` : `username: "${u.username}" belonged to a removed account and cannot be reused`);
    }
    const hash = await argon2.hash(p.password, HASH_OPTIONS);
    const row = await this.db
      .insertInto('users')
      .values({ username: u.username, password_hash: hash, created_at: this.clock.now(), removed_at: null })
      .onConflict((oc) => oc.column('username').doNothing())
      .returning(['id', 'username', 'created_at'])
      .executeTakeFirst();
    if (!row) throw new AccountError('username_taken', `username: "${u.username}" is taken`);
    return this.toAccount(row);
  }

  async findByUsername(username: string): Promise<Account | null> {
    const row = await this.db.selectFrom('users').select(['id', 'username', 'created_at']).where('username', '=', username.toLowerCase()).where('removed_at', 'is', null).executeTakeFirst();
    return row ? this.toAccount(row) : null;
  }

  /**
   * The addresses (at our domain) that belong to current accounts. Every message asks this of its
   * local recipients, so accounts found are remembered for EXISTS_CACHE_MS: a removal made by
   * this process applies at once, one made by the CLI or another instance within that time.
   */
  async existingAddresses(addresses: string[]): Promise<string[]> {
    const now = this.clock.now();
    const found: string[] = [];
    const ask: string[] = [];
    for (const a of addresses) {
      const name = a.slice(0, a.lastIndexOf('@'));
      const until = this.existing.get(name);
      if (until !== undefined && until > now && now >= until - EXISTS_CACHE_MS) found.push(this.address(name));
      else ask.push(name);
    }
    for (let i = 0; i < ask.length; i += 500) {
      const removals = this.removals;
      const rows = await this.db.selectFrom('users').select('username').where('username', 'in', ask.slice(i, i + 500)).where('removed_at', 'is', null).execute();
      for (const r of rows) {
        found.push(this.address(r.username));
        if (removals !== this.removals) continue; // answer this once, remember nothing
        if (this.existing.size >= 100_000) this.existing.clear();
        this.existing.set(r.username, now + EXISTS_CACHE_MS);
      }
    }
    return found;
  }

  async findById(id: number): Promise<Account | null> {
    const row = await this.db.selectFrom('users').select(['id', 'username', 'created_at']).where('id', '=', id).where('removed_at', 'is', null).executeTakeFirst();
    return row ? this.toAccount(row) : null;
  }

  /** Accepts the local part or the full address at our domain. */
  normaliseLogin(login: string): string | null {
    if (!/^[\x21-\x7e]+$/.test(login)) return null;
    const lower = login.toLowerCase();
    const at = lower.lastIndexOf('@');
    if (at === -1) return isValidLocalPart(lower) ? lower : null;
    if (lower.slice(at + 1) !== this.domain) return null;
    const local = lower.slice(0, at);
    return isValidLocalPart(local) ? local : null;
  }

  /** Checks a password; spends the same time whether or not the user exists. */
  async verifyPassword(login: string, password: string): Promise<Account | null> {
    const username = this.normaliseLogin(login);
    const row = username
      ? await this.db.selectFrom('users').select(['id', 'username', 'created_at', 'password_hash']).where('username', '=', username).where('removed_at', 'is', null).executeTakeFirst()
      : undefined;
    if (!row) {
      this.dummyHash ??= argon2.hash('intertalk-timing-equaliser', HASH_OPTIONS);
      await argon2.verify(await this.dummyHash, password).catch(() => false);
      return null;
    }
    const ok = await argon2.verify(row.password_hash, password).catch(() => false);
    return ok ? this.toAccount(row) : null;
  }

  async list(): Promise<Account[]> {
    const rows = await this.db.selectFrom('users').select(['id', 'username', 'created_at']).where('removed_at', 'is', null).orderBy('username').execute();
    return rows.map((r) => this.toAccount(r));
  }

  async setPassword(username: string, passwordRaw: unknown): Promise<void> {
    const p = validatePassword(passwordRaw);
    if (!p.ok) throw new AccountError('invalid_password', p.message);
    const hash = await argon2.hash(p.password, HASH_OPTIONS);
    const res = await this.db.updateTable('users').set({ password_hash: hash }).where('username', '=', username.toLowerCase()).where('removed_at', 'is', null).executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) throw new AccountError('not_found', `no user "${username}"`);
  }

  /**
   * Removes the account: it can no longer log in, its sessions end, its name is never handed out
   * again (a newcomer must not inherit its conversations). Its messages stay in others' histories.
   */
  async remove(username: string): Promise<void> {
    const name = username.toLowerCase();
    const done = await this.db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('users').select('id').where('username', '=', name).where('removed_at', 'is', null).executeTakeFirst();
      if (!row) return false;
      await trx.updateTable('users').set({ removed_at: this.clock.now(), password_hash: '!' }).where('id', '=', row.id).execute();
      await trx.deleteFrom('sessions').where('user_id', '=', row.id).execute();
      return true;
    });
    // After the commit: a lookup that started before it may still answer "exists", once.
    this.removals++;
    this.existing.delete(name);
    if (!done) throw new AccountError('not_found', `no user "${username}"`);
  }
}
