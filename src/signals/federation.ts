// signals/1 between providers (see ./wire.ts for the format).
//
// Inbound, POST /signals: authenticated exactly like POST /messages (verify.ts: aud/iss/sub,
// sub = `from`, `from` ∈ `to`, at least one recipient here, signature, jti) and answered with the
// same statuses on failure (400, 401, 403, 429, 503); 202 when taken. Unknown conversations: 404.
//
// Outbound: best effort. Only to peers whose /.well-known/intertalk (cached by Discovery) lists
// signals/1: any other peer gets no request at all. One attempt with a short timeout, no outbox;
// typing is never retried (and dropped while too many are in flight to one peer). A receipt is
// retried a couple of times in memory on a network failure, 429 or 5xx, and a newer receipt for
// the same reader and conversation replaces one still waiting.
import type { Logger } from 'pino';
import type { Clock } from '../util/clock.js';
import { clientBucket, type RateLimiter } from '../auth/limiter.js';
import type { Accounts } from '../accounts/service.js';
import { domainOf } from '../protocol/address.js';
import { SIGNALS_EXTENSION } from '../protocol/rich.js';
import type { SigningKeys } from '../federation/keys.js';
import type { Discovery } from '../federation/discovery.js';
import { PeerNetworkError, type PeerHttp } from '../federation/net.js';
import { claimedIssuer, extractToken, peerLimit, type FederationVerifier } from '../federation/verify.js';
import type { Blocklist } from '../federation/blocklist.js';
import type { Signals } from './service.js';
import { validateSignal, type SignalBody } from './wire.js';

export interface SignalResult {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const err = (status: number, error: string, message: string, headers?: Record<string, string>): SignalResult => ({ status, body: { error, message }, ...(headers ? { headers } : {}) });

/** Delays before the retries of a receipt (so at most 1 + length attempts). */
export const RECEIPT_RETRY_DELAYS_MS = [1_000, 4_000];
/** Typing signals to one peer beyond this many in flight are dropped. */
const MAX_TYPING_IN_FLIGHT = 32;
/** Receipts waiting (or in flight) at most; newer ones beyond this are dropped. */
const MAX_PENDING_RECEIPTS = 10_000;

type Outcome = 'sent' | 'skipped' | 'final' | 'retry';

interface PendingReceipt {
  domain: string;
  signal: SignalBody;
  retries: number;
  running: boolean;
  timer: NodeJS.Timeout | null;
}

export class SignalsFederation {
  private readonly inFlight = new Map<string, number>();
  private readonly pending = new Map<string, PendingReceipt>();
  private stopped = false;

  constructor(
    private readonly o: {
      domain: string;
      clock: Clock;
      logger: Logger;
      keys: SigningKeys;
      discovery: Discovery;
      http: PeerHttp;
      verifier: FederationVerifier;
      blocklist: Blocklist;
      accounts: Accounts;
      signals: () => Signals;
      maxRecipients: number;
      skewMs: number;
      /** Per attempt; kept short (signals are worthless late). */
      timeoutMs: number;
      perPeer: RateLimiter;
      perIp: RateLimiter;
    },
  ) {}

  // --- inbound ---------------------------------------------------------------------------------

  async receive(input: { authorization: string | undefined; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<SignalResult> {
    const ip = await this.o.perIp.hit(`sig-ip:${clientBucket(input.remoteIp)}`);
    if (!ip.allowed) return err(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.ceil(ip.retryAfterMs / 1000)) });

    // The issuer is not verified yet: it only selects the blocklist check. The per-peer limit
    // applies once the signature proves the issuer (IssuerGate in federation/verify.ts).
    const claimedIss = claimedIssuer(extractToken(input.authorization) ?? '');
    if (claimedIss && (await this.o.blocklist.isBlocked(claimedIss))) return err(403, 'domain_blocked', `${claimedIss} is blocked by this provider`);

    const v = validateSignal(input.body, { now: this.o.clock.now(), skewMs: this.o.skewMs, maxRecipients: this.o.maxRecipients });
    if (!v.ok) return err(400, v.error, v.message);
    const s = v.value;

    const auth = await this.o.verifier.verify(input.authorization, input.rawBody, { from: s.from, to: s.to }, (iss) => peerLimit(this.o.perPeer, `sig-peer:${iss}`, iss));
    if (!auth.ok) return err(auth.status, auth.error, auth.message, auth.retryAfterSeconds ? { 'retry-after': String(Math.ceil(auth.retryAfterSeconds)) } : undefined);
    if (domainOf(s.from) === this.o.domain) return err(403, 'sender_is_local', 'a peer cannot send on behalf of our own users');

    const local = s.to.filter((a) => domainOf(a) === this.o.domain);
    if (local.length === 0) return err(403, 'no_local_recipient', `no recipient is at ${this.o.domain}`);
    const known = new Set(await this.o.accounts.existingAddresses(local));
    const unknown = local.filter((a) => !known.has(a));
    if (unknown.length > 0) return err(403, 'no_local_recipient', `no account at ${this.o.domain} for ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);

    const signals = this.o.signals();
    const taken = s.type === 'typing' ? await signals.remoteTyping(s, v.sentAtMs) : await signals.remoteReceipt(s, v.sentAtMs);
    if (!taken) return err(404, 'unknown_conversation', 'no conversation with exactly these participants exists here');
    return { status: 202, body: { status: 'accepted' } };
  }

  // --- outbound --------------------------------------------------------------------------------

  send(domainInput: string, signal: SignalBody): void {
    if (this.stopped) return;
    const domain = domainInput.toLowerCase();
    if (domain === this.o.domain) return;
    if (signal.type === 'typing') {
      if ((this.inFlight.get(domain) ?? 0) >= MAX_TYPING_IN_FLIGHT) return;
      void this.attempt(domain, signal);
      return;
    }
    const key = `${domain}\n${signal.from}\n${signal.to.join(',')}`;
    const p = this.pending.get(key);
    if (p) {
      // The newest position replaces a waiting one; one in flight is followed by the newest.
      p.signal = signal;
      p.retries = 0;
      if (!p.running) {
        if (p.timer) clearTimeout(p.timer);
        p.timer = null;
        void this.run(key);
      }
      return;
    }
    if (this.pending.size >= MAX_PENDING_RECEIPTS) return;
    this.pending.set(key, { domain, signal, retries: 0, running: false, timer: null });
    void this.run(key);
  }

  private async run(key: string): Promise<void> {
    const p = this.pending.get(key);
    if (!p || this.stopped) return;
    p.timer = null;
    p.running = true;
    const signal = p.signal;
    const outcome = await this.attempt(p.domain, signal);
    p.running = false;
    if (this.stopped || this.pending.get(key) !== p) return;
    if (p.signal !== signal) return void this.run(key);
    const delay = RECEIPT_RETRY_DELAYS_MS[p.retries];
    if (outcome === 'retry' && delay !== undefined) {
      p.retries++;
      p.timer = setTimeout(() => void this.run(key), delay);
      p.timer.unref();
      return;
    }
    this.pending.delete(key);
  }

  /** One request; never throws. */
  private async attempt(domain: string, signal: SignalBody): Promise<Outcome> {
    try {
      if (await this.o.blocklist.isBlocked(domain)) return 'final';
      let peer;
      try {
        peer = await this.o.discovery.resolve(domain);
      } catch (e) {
        return e instanceof PeerNetworkError && e.policy ? 'final' : 'retry';
      }
      // Plain peers never see a signal: they would have nowhere to put it.
      if (!peer.extensions.includes(SIGNALS_EXTENSION)) return 'skipped';
      this.inFlight.set(domain, (this.inFlight.get(domain) ?? 0) + 1);
      try {
        const token = await this.o.keys.sign({ aud: domain, sub: signal.from });
        const res = await this.o.http.request(`${peer.baseUrl}/signals`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify(signal),
          timeoutMs: this.o.timeoutMs,
          maxResponseBytes: 16 * 1024,
        });
        if (res.status >= 200 && res.status < 300) return 'sent';
        this.o.logger.debug({ destination: domain, status: res.status, type: signal.type }, 'signal refused');
        return res.status === 429 || res.status >= 500 ? 'retry' : 'final';
      } finally {
        const n = (this.inFlight.get(domain) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(domain);
        else this.inFlight.set(domain, n);
      }
    } catch (e) {
      this.o.logger.debug({ err: e, destination: domain, type: signal.type }, 'signal not delivered');
      return e instanceof PeerNetworkError && e.policy ? 'final' : 'retry';
    }
  }

  /** Drops waiting receipts (shutdown). */
  stop(): void {
    this.stopped = true;
    for (const p of this.pending.values()) if (p.timer) clearTimeout(p.timer);
    this.pending.clear();
  }
}
