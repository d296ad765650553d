// Which destinations are e-mail: a domain that runs no intertalk provider. Asked by the outbox
// before each delivery round (through EmailTransport.claims) and by GET /addresses/{address}, so
// decisions are cached. The rules, in order (docs/email.md "Routing"):
//  1. our own domains are never e-mail;
//  2. INTERTALK_EMAIL_DOMAINS are always e-mail (no lookup);
//  3. a domain whose /.well-known/intertalk names versions, extensions or a delegated server is
//     an intertalk provider;
//  4. a domain without that document (404/410) that serves seed-000 `GET /keys` is an intertalk
//     provider too (the 2016 standard had no discovery document);
//  5. otherwise — no document and no keys, or no web host at all (the name does not resolve) —
//     it is e-mail. When the web host cannot be reached for another reason we cannot tell an
//     intertalk provider that is down from a mail-only domain: a domain with MX records is
//     e-mail, one without is "cannot tell now" (the round is retried later).
import { promises as dns } from 'node:dns';
import type { Clock } from '../../util/clock.js';
import type { Discovery } from '../../federation/discovery.js';
import { PeerNetworkError, type PeerHttp } from '../../federation/net.js';

const POSITIVE_TTL_MS = 60 * 60_000;
const MEMORY = 10_000;

export type ResolveMx = (domain: string) => Promise<Array<{ exchange: string; priority: number }>>;

/** NXDOMAIN / no address records: the name has no web host (as opposed to a resolver failure). */
function isNoSuchHost(err: unknown): boolean {
  for (let e: unknown = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return true;
  }
  return false;
}

export class EmailRouting {
  private readonly decided = new Map<string, { email: boolean; expires: number }>();

  constructor(
    private readonly o: {
      discovery: Discovery;
      http: PeerHttp;
      clock: Clock;
      ttlMs: number;
      /** INTERTALK_EMAIL_DOMAINS. */
      always: Set<string>;
      /** Our provider domain, our mail domain, our users' personal domains. */
      isOurs: (domain: string) => boolean;
      resolveMx?: ResolveMx;
    },
  ) {}

  /** Is `domain` reached by e-mail? Throws when it cannot be told now. */
  async isEmail(domain: string): Promise<boolean> {
    const d = domain.toLowerCase();
    if (this.o.isOurs(d)) return false;
    if (this.o.always.has(d)) return true;
    const now = this.o.clock.now();
    const hit = this.decided.get(d);
    if (hit && hit.expires > now) return hit.email;
    const email = await this.decide(d);
    if (this.decided.size >= MEMORY) this.decided.clear();
    this.decided.set(d, { email, expires: now + Math.min(POSITIVE_TTL_MS, Math.max(this.o.ttlMs, 60_000)) });
    return email;
  }

  /** A cached "e-mail" answer, without asking anyone (null: not decided yet). */
  known(domain: string): boolean | null {
    const d = domain.toLowerCase();
    if (this.o.isOurs(d)) return false;
    if (this.o.always.has(d)) return true;
    const hit = this.decided.get(d);
    return hit && hit.expires > this.o.clock.now() ? hit.email : null;
  }

  private async decide(domain: string): Promise<boolean> {
    try {
      const peer = await this.o.discovery.resolve(domain);
      if (peer.versions.length > 0 || peer.extensions.length > 0 || peer.delegated) return false;
      return !(await this.servesKeys(peer.baseUrl));
    } catch (err) {
      if (isNoSuchHost(err)) return true;
      if (err instanceof PeerNetworkError && err.policy) {
        // Our address policy refuses the web host (e.g. it resolves to a private address): it
        // cannot be an intertalk peer of ours, but it may well receive mail through our relay.
        return true;
      }
      const mx = await (this.o.resolveMx ?? dns.resolveMx)(domain).catch(() => []);
      if (mx.length > 0) return true;
      throw new Error(`${domain}: cannot tell whether it runs an intertalk provider (${(err as Error).message})`);
    }
  }

  /** Seed-000 providers publish `GET /keys` (a JSON object with a `keys` array). */
  private async servesKeys(baseUrl: string): Promise<boolean> {
    try {
      const res = await this.o.http.getJson(`${baseUrl}/keys`, { maxResponseBytes: 256 * 1024 });
      const body = res.json as { keys?: unknown } | null | undefined;
      return res.status === 200 && typeof body === 'object' && body !== null && Array.isArray(body.keys);
    } catch (err) {
      if (err instanceof PeerNetworkError && !err.policy && !isNoSuchHost(err) && err.code !== 'bad_response') {
        // The well-known document answered but /keys did not: a provider having trouble, not mail.
        throw err;
      }
      return false;
    }
  }
}
