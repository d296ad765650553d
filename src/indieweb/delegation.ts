// Inbound from a personal-domain sender: a message whose `from` is `x@alice.test`, signed by
// provider P, is accepted only when alice.test's home page names P (discovery.ts: fetched through
// PeerHttp — public addresses only, time and size limited — and cached). Otherwise 403
// `sender_not_delegated` with the failing step, and nothing is stored (verify.ts runs this after
// the signature verified and before the jti is recorded).
import type { Clock } from '../util/clock.js';
import type { PeerHttp } from '../federation/net.js';
import type { Discovery } from '../federation/discovery.js';
import type { Failure } from '../federation/verify.js';
import { sameServer } from './parse.js';
import { discoverPersonalServer, type PersonalDiscovery } from './discovery.js';

/** A failed discovery is remembered this long (at most the TTL). */
const FAILURE_TTL_MS = 30_000;
const MAX_CACHED = 10_000;
/** One home-page check while a peer's request waits. */
const CHECK_TIMEOUT_MS = 5_000;

export class Delegations {
  private readonly cache = new Map<string, { d: PersonalDiscovery; expires: number }>();
  private readonly inflight = new Map<string, Promise<PersonalDiscovery>>();

  constructor(
    private readonly o: {
      http: PeerHttp;
      discovery: Discovery;
      clock: Clock;
      ttlMs: number;
      insecurePeers: Set<string>;
    },
  ) {}

  /** The home page's answer for `domain` (cached). */
  async discover(domain: string): Promise<PersonalDiscovery> {
    const now = this.o.clock.now();
    const hit = this.cache.get(domain);
    if (hit && hit.expires > now) return hit.d;
    const pending = this.inflight.get(domain);
    if (pending) return pending;
    const url = `${this.o.insecurePeers.has(domain) ? 'http' : 'https'}://${domain}/`;
    const p = discoverPersonalServer(this.o.http, url, { timeoutMs: CHECK_TIMEOUT_MS })
      .then((d) => {
        if (this.cache.size >= MAX_CACHED) this.cache.clear();
        this.cache.set(domain, { d, expires: this.o.clock.now() + (d.ok ? this.o.ttlMs : Math.min(FAILURE_TTL_MS, this.o.ttlMs)) });
        return d;
      })
      .finally(() => this.inflight.delete(domain));
    this.inflight.set(domain, p);
    return p;
  }

  forget(domain: string): void {
    this.cache.delete(domain);
  }

  /** Does the server `server` belong to the provider `iss`? Its host is `iss`, or `iss` delegates to it. */
  async isProvider(server: string, iss: string): Promise<boolean> {
    try {
      if (new URL(server).hostname.toLowerCase() === iss) return true;
    } catch {
      return false;
    }
    try {
      return sameServer(server, `${(await this.o.discovery.resolve(iss)).baseUrl}/`);
    } catch {
      return false;
    }
  }

  /** verify.ts's DelegationCheck: null when `domain`'s home page names `iss`; else a 403. */
  check = async (domain: string, iss: string): Promise<Failure | null> => {
    const d = await this.discover(domain);
    const refuse = (message: string): Failure => ({ ok: false, status: 403, error: 'sender_not_delegated', message });
    if (!d.ok) return refuse(`${domain} is not delegated to ${iss}: ${d.step}: ${d.message}`);
    if (!(await this.isProvider(d.server, iss))) return refuse(`${domain} names ${d.server} as its server, not ${iss}`);
    return null;
  };
}
