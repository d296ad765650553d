// Outbound to a personal-domain address (`bob@bob.example`): the outbox's queue for bob.example
// is carried by this DeliveryTransport when bob.example is not an intertalk provider itself (no
// /.well-known/intertalk) and its home page names a server (rel="intertalk-server", the Link
// header, or a metadata document). That server is an intertalk provider: the message goes to it
// by federation — POST {server}/messages with a token whose `iss` is our domain, `aud` the
// server's host (the provider's domain) and `sub` our sender. The receiving provider stores it
// for the owner of bob.example (src/indieweb/domains.ts on its side).
// A named server that does not speak intertalk federation (its host publishes no
// /.well-known/intertalk with a version) is reached by the seed's callback flow instead
// (callback-transport.ts), which asks route() here.
import type { Logger } from 'pino';
import type { Clock } from '../util/clock.js';
import type { PeerHttp } from '../federation/net.js';
import { PeerNetworkError } from '../federation/net.js';
import type { Discovery } from '../federation/discovery.js';
import type { SigningKeys } from '../federation/keys.js';
import type { DeliveryOutcome, DeliveryTransport, OutboundRow } from '../federation/transports.js';
import { classifyStatus, parseRetryAfter } from '../federation/backoff.js';
import { peerReason, plainWireBody } from '../federation/outbox.js';
import { RICH_EXTENSION } from '../protocol/rich.js';
import type { Delegations } from './delegation.js';

/** How long "not a personal domain" is remembered (it is asked before every delivery round). */
const NEGATIVE_TTL_MS = 60_000;

/** How a personal domain is reached: the server its home page names, and what that server speaks. */
export interface Route {
  server: string;
  protocol: 'federation' | 'callback';
}

export class PersonalDomainTransport implements DeliveryTransport {
  readonly name = 'indieweb';
  private readonly decided = new Map<string, { route: Route | null; expires: number }>();

  constructor(
    private readonly o: {
      http: PeerHttp;
      discovery: Discovery;
      delegations: Delegations;
      keys: SigningKeys;
      clock: Clock;
      logger: Logger;
      timeoutMs: number;
      ttlMs: number;
      /** Our own personal domains never leave (Messaging writes no outbox row for them). */
      isOurs: (domain: string) => boolean;
      /** INTERTALK_INDIEWEB_DELIVERY: `callback` sends by the callback flow even to federation servers. */
      delivery: 'auto' | 'callback';
    },
  ) {}

  /** The server a destination's home page names, or null when it is not a personal domain. */
  async serverFor(destination: string): Promise<string | null> {
    return (await this.route(destination))?.server ?? null;
  }

  /** How a destination is reached when it is a personal domain (null: it is not one). */
  async route(destination: string): Promise<Route | null> {
    const now = this.o.clock.now();
    const hit = this.decided.get(destination);
    if (hit && hit.expires > now) return hit.route;
    const server = await this.decide(destination);
    const route = server === null ? null : { server, protocol: await this.protocolOf(server) };
    if (this.decided.size >= 10_000) this.decided.clear();
    this.decided.set(destination, { route, expires: now + (route ? this.o.ttlMs : NEGATIVE_TTL_MS) });
    return route;
  }

  /** Forgets what was decided for a destination (a delivery failed on the network). */
  forget(destination: string): void {
    this.decided.delete(destination);
    this.o.delegations.forget(destination);
  }

  /**
   * Does the named server speak intertalk federation? Its host publishes /.well-known/intertalk
   * with at least one version. A 404 there means it does not (the callback flow); a network
   * failure means we cannot tell yet (thrown: the round is retried).
   */
  private async protocolOf(server: string): Promise<Route['protocol']> {
    if (this.o.delivery === 'callback') return 'callback';
    let host: string;
    try {
      host = new URL(server).hostname.toLowerCase();
    } catch {
      return 'callback';
    }
    const peer = await this.o.discovery.resolve(host);
    return peer.versions.length > 0 ? 'federation' : 'callback';
  }

  private async decide(destination: string): Promise<string | null> {
    if (this.o.isOurs(destination)) return null;
    try {
      const peer = await this.o.discovery.resolve(destination);
      // It publishes a well-known document: an intertalk provider, reached by federation.
      if (peer.versions.length > 0 || peer.extensions.length > 0 || peer.delegated) return null;
    } catch {
      // No usable well-known document: maybe a personal domain.
    }
    const d = await this.o.delegations.discover(destination);
    return d.ok ? d.server : null;
  }

  async claims(destination: string): Promise<boolean> {
    return (await this.route(destination))?.protocol === 'federation';
  }

  async deliver(destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]> {
    const server = await this.serverFor(destination);
    if (!server) return [{ kind: 'retry', reason: `${destination}: its home page no longer names a server`, retryAfterMs: null }];
    let base: URL;
    try {
      base = new URL(server);
    } catch {
      return [{ kind: 'fail', reason: `${destination}: its home page names ${server}, not a URL` }];
    }
    const provider = base.hostname.toLowerCase();
    let rich = false;
    try {
      rich = (await this.o.discovery.resolve(provider)).extensions.includes(RICH_EXTENSION);
    } catch {
      // The provider's own document is optional; send the plain form.
    }
    const url = `${base.origin}${base.pathname.replace(/\/+$/, '')}/messages`;
    const out: DeliveryOutcome[] = [];
    for (const row of rows) {
      const o = await this.sendOne(destination, provider, url, row, rich);
      out.push(o);
      if (o.kind === 'retry') break;
    }
    return out;
  }

  private async sendOne(destination: string, provider: string, url: string, row: OutboundRow, rich: boolean): Promise<DeliveryOutcome> {
    const label = `${destination} (via ${provider})`;
    try {
      const token = await this.o.keys.sign({ aud: provider, sub: row.ev.sender });
      const res = await this.o.http.request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: rich ? row.body : plainWireBody(row.body),
        timeoutMs: this.o.timeoutMs,
        maxResponseBytes: 64 * 1024,
      });
      const kind = classifyStatus(res.status);
      if (kind === 'delivered') return { kind: 'delivered', insecure: res.insecure };
      const reason = `${label} answered ${res.status}${peerReason(res.body)}`;
      if (kind === 'retry' || (res.status >= 300 && res.status < 400)) return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(res.headers['retry-after'], this.o.clock.now()) };
      return { kind: 'fail', reason };
    } catch (err) {
      this.forget(destination);
      const reason = `${label}: ${err instanceof Error ? err.message : String(err)}`;
      if (err instanceof PeerNetworkError && err.policy) return { kind: 'fail', reason };
      return { kind: 'retry', reason, retryAfterMs: null };
    }
  }
}
