// Personal domains attached to accounts (issue 14, slice 2): a user attaches `alice.example`; we
// answer with exactly what to publish on its home page; discovery (discovery.ts) must then find
// this provider there. A verified domain makes the user reachable as `{username}@{domain}`
// (Messaging.ownerOf via `owner()`), re-checked every INTERTALK_PERSONAL_DOMAIN_RECHECK.
// A domain belongs to at most one account (primary key).
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import type { PersonalDomainsTable } from '../storage/schema.js';
import type { Clock } from '../util/clock.js';
import type { PeerHttp } from '../federation/net.js';
import { domainOf, isValidDomain } from '../protocol/address.js';
import { canonicalProfileUrl, REL_METADATA, REL_SERVER, sameServer } from './parse.js';
import { discoverPersonalServer, type DiscoveryStep } from './discovery.js';

export type DomainState = 'pending' | 'verified' | 'failed';
/** A discovery step that failed, or `wrong_server`: the home page names another server. */
export type CheckStep = DiscoveryStep | 'wrong_server';

export interface PersonalDomain {
  domain: string;
  /** The address the user is reachable as once verified. */
  address: string;
  state: DomainState;
  /** When not verified: the step that failed and why (null while never checked). */
  step: CheckStep | null;
  message: string | null;
  /** The server the home page names (when discovery got that far). */
  server: string | null;
  via: string | null;
  checkedAt: string | null;
  verifiedAt: string | null;
  nextCheckAt: string;
  publish: Publish;
}

/** What the domain owner publishes on https://{domain}/ — any one of these. */
export interface Publish {
  profile: string;
  server: string;
  linkElement: string;
  linkHeader: string;
  metadata: { linkElement: string; path: string; document: { server: string } };
}

export class DomainError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** How many domains one account may attach. */
export const MAX_DOMAINS_PER_USER = 10;
/** A failed (or pending) domain is checked again sooner than a verified one. */
const FAILED_RECHECK_MS = 15 * 60_000;
/** One check's deadline (home page plus metadata document). */
const CHECK_TIMEOUT_MS = 10_000;

/** A row of personal_domains (src/storage/schema.ts). */
type Row = PersonalDomainsTable;

const iso = (t: number | null) => (t === null || t === undefined ? null : new Date(Number(t)).toISOString());

export class PersonalDomains {
  /** Verified domain → username: read by Messaging on every message, so kept in memory. */
  private verified = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly o: {
      db: Db;
      /** Our provider domain. */
      domain: string;
      /** INTERTALK_PUBLIC_URL: what a home page must name. */
      publicUrl: string;
      clock: Clock;
      http: PeerHttp;
      logger: Logger;
      recheckMs: number;
      /** Domains reached over plain http (INTERTALK_INSECURE_PEERS): their home page is http://. */
      insecurePeers: Set<string>;
    },
  ) {}

  /** The server URL we ask domain owners to publish. */
  get serverUrl(): string {
    return `${this.o.publicUrl.replace(/\/+$/, '')}/`;
  }

  async init(): Promise<void> {
    await this.reload();
  }

  /** Re-reads the verified domains (another instance or the re-check may have changed them). */
  async reload(): Promise<void> {
    const rows = await this.o.db
      .selectFrom('personal_domains')
      .innerJoin('users', 'users.id', 'personal_domains.user_id')
      .select(['personal_domains.domain', 'users.username'])
      .where('personal_domains.state', '=', 'verified')
      .where('users.removed_at', 'is', null)
      .execute();
    this.verified = new Map(rows.map((r) => [r.domain, r.username]));
  }

  /** Periodic re-check of due domains (every min(recheck, 1 min)); tests call recheckDue() instead. */
  start(): void {
    const every = Math.max(1000, Math.min(this.o.recheckMs, 60_000));
    this.timer = setInterval(() => void this.recheckDue().catch((err) => this.o.logger.warn({ err }, 'personal domain re-check failed')), every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }

  /**
   * The local account address a personal-domain address reaches: `{username}@{domain}` for a
   * verified domain of that user; null otherwise. Synchronous (in-memory), for Messaging.
   */
  owner(address: string): string | null {
    const at = address.lastIndexOf('@');
    if (at <= 0) return null;
    const domain = address.slice(at + 1).toLowerCase();
    const username = this.verified.get(domain);
    if (username === undefined) return null;
    return address.slice(0, at).toLowerCase() === username ? `${username}@${this.o.domain}` : null;
  }

  /** Is `domain` one of our verified personal domains? */
  isOurs(domain: string): boolean {
    return this.verified.has(domain.toLowerCase());
  }

  publish(domain: string): Publish {
    const server = this.serverUrl;
    return {
      profile: this.profileUrl(domain),
      server,
      linkElement: `<link rel="${REL_SERVER}" href="${server}">`,
      linkHeader: `Link: <${server}>; rel="${REL_SERVER}"`,
      metadata: { linkElement: `<link rel="${REL_METADATA}" href="/intertalk.json">`, path: '/intertalk.json', document: { server } },
    };
  }

  private profileUrl(domain: string): string {
    return `${this.o.insecurePeers.has(domain) ? 'http' : 'https'}://${domain}/`;
  }

  /** A bare domain name, lower case, not ours; or a 400. */
  normalise(raw: string): string {
    const canon = canonicalProfileUrl(raw);
    const bad = (m: string) => new DomainError(400, 'invalid_domain', `${JSON.stringify(raw.slice(0, 100))}: ${m}`);
    if (!canon.ok) throw bad(canon.message);
    if (!isValidDomain(canon.host)) throw bad('not a domain name');
    if (new URL(canon.url).pathname !== '/' || canon.url.includes('?')) throw bad('a personal domain is a bare domain name (no path)');
    if (canon.host === this.o.domain) throw bad('this is the provider\'s own domain');
    return canon.host;
  }

  private view(r: Row, username: string): PersonalDomain {
    return {
      domain: r.domain,
      address: `${username}@${r.domain}`,
      state: r.state as DomainState,
      step: r.step as CheckStep | null,
      message: r.message,
      server: r.server,
      via: r.via,
      checkedAt: iso(r.checked_at),
      verifiedAt: iso(r.verified_at),
      nextCheckAt: iso(r.next_check_at)!,
      publish: this.publish(r.domain),
    };
  }

  async list(user: { userId: number; username: string }): Promise<PersonalDomain[]> {
    const rows = await this.o.db.selectFrom('personal_domains').selectAll().where('user_id', '=', user.userId).orderBy('domain').execute();
    return rows.map((r) => this.view(r as Row, user.username));
  }

  async get(user: { userId: number; username: string }, domain: string): Promise<PersonalDomain | null> {
    const r = await this.o.db.selectFrom('personal_domains').selectAll().where('domain', '=', domain).where('user_id', '=', user.userId).executeTakeFirst();
    return r ? this.view(r as Row, user.username) : null;
  }

  /**
   * Attaches `domain` to the user (409 when another account has it), then checks it at once.
   * Attaching it again re-checks it. Returns the state after the check and whether it is new.
   */
  async attach(user: { userId: number; username: string }, raw: string): Promise<{ domain: PersonalDomain; created: boolean }> {
    const domain = this.normalise(raw);
    const now = this.o.clock.now();
    const existing = await this.o.db.selectFrom('personal_domains').select(['user_id']).where('domain', '=', domain).executeTakeFirst();
    let created = false;
    if (existing && Number(existing.user_id) !== user.userId) throw new DomainError(409, 'domain_taken', `${domain} is attached to another account`);
    if (!existing) {
      const count = await this.o.db.selectFrom('personal_domains').select((eb) => eb.fn.countAll<number>().as('n')).where('user_id', '=', user.userId).executeTakeFirstOrThrow();
      if (Number(count.n) >= MAX_DOMAINS_PER_USER) throw new DomainError(409, 'too_many_domains', `an account may attach at most ${MAX_DOMAINS_PER_USER} domains`);
      const res = await this.o.db
        .insertInto('personal_domains')
        .values({ domain, user_id: user.userId, state: 'pending', step: null, message: null, server: null, via: null, created_at: now, checked_at: null, verified_at: null, next_check_at: now })
        .onConflict((oc) => oc.column('domain').doNothing())
        .returning('domain')
        .executeTakeFirst();
      if (!res) throw new DomainError(409, 'domain_taken', `${domain} is attached to another account`);
      created = true;
    }
    await this.check(domain);
    const view = await this.get(user, domain);
    if (!view) throw new DomainError(404, 'not_found', `${domain} was detached meanwhile`);
    return { domain: view, created };
  }

  async detach(user: { userId: number }, raw: string): Promise<boolean> {
    const domain = this.normalise(raw);
    const res = await this.o.db.deleteFrom('personal_domains').where('domain', '=', domain).where('user_id', '=', user.userId).executeTakeFirst();
    this.verified.delete(domain);
    return Number(res.numDeletedRows) > 0;
  }

  /** Verifies one attached domain now: discovery must find this provider on its home page. */
  async check(domain: string): Promise<{ state: DomainState; step: CheckStep | null; message: string | null }> {
    const d = await discoverPersonalServer(this.o.http, this.profileUrl(domain), { timeoutMs: CHECK_TIMEOUT_MS });
    const now = this.o.clock.now();
    let state: DomainState;
    let step: CheckStep | null = null;
    let message: string | null = null;
    if (!d.ok) {
      state = 'failed';
      step = d.step;
      message = d.message;
    } else if (!sameServer(d.server, this.serverUrl)) {
      state = 'failed';
      step = 'wrong_server';
      message = `${d.profile} names ${d.server}, not this provider (${this.serverUrl})`;
    } else {
      state = 'verified';
    }
    const next = now + (state === 'verified' ? this.o.recheckMs : Math.min(this.o.recheckMs, FAILED_RECHECK_MS));
    await this.o.db
      .updateTable('personal_domains')
      .set({
        state,
        step,
        message: message === null ? null : message.slice(0, 500),
        server: d.ok ? d.server : null,
        via: d.ok ? d.via : null,
        checked_at: now,
        next_check_at: next,
        ...(state === 'verified' ? { verified_at: now } : {}),
      })
      .where('domain', '=', domain)
      .execute();
    const owner = await this.o.db
      .selectFrom('personal_domains')
      .innerJoin('users', 'users.id', 'personal_domains.user_id')
      .select(['users.username', 'users.removed_at'])
      .where('personal_domains.domain', '=', domain)
      .executeTakeFirst();
    if (state === 'verified' && owner && owner.removed_at === null) this.verified.set(domain, owner.username);
    else this.verified.delete(domain);
    if (state !== 'verified') this.o.logger.info({ domain, step }, 'personal domain not verified');
    return { state, step, message };
  }

  /** Checks every domain whose next check is due at `now`, one at a time; then reloads. */
  async recheckDue(now = this.o.clock.now()): Promise<number> {
    if (this.running) await this.running.catch(() => undefined);
    let n = 0;
    const run = (async () => {
      const due = await this.o.db.selectFrom('personal_domains').select('domain').where('next_check_at', '<=', now).orderBy('next_check_at').limit(100).execute();
      for (const r of due) {
        await this.check(r.domain);
        n++;
      }
      await this.reload();
    })();
    this.running = run;
    try {
      await run;
    } finally {
      if (this.running === run) this.running = null;
    }
    return n;
  }

  /** The domain of an address, when it is one of our verified personal domains. */
  domainOfAlias(address: string): string | null {
    const d = domainOf(address).toLowerCase();
    return this.verified.has(d) ? d : null;
  }
}
