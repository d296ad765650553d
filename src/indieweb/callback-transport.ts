// Outbound by the seed's callback flow (seed 001): a DeliveryTransport for personal domains whose
// home page names a server that does not speak intertalk federation (transport.ts route()). The
// outbox keeps the queue, order, lease, back-off and age limit, as for federation; this carries
// the head of the queue, one message at a time:
//
//   token variant (INTERTALK_CALLBACK_FLOW=token, the default) — once per (endpoint, sender
//   domain): issue an auth code, POST notify{domain, code}; the receiver calls us back (check,
//   grant: callback.ts) and we keep the token it grants; then POST message{token, message} for
//   every message until the token expires or the receiver refuses it (401 invalid_token,
//   token_expired, token_revoked): then it is dropped and asked for again, once per message.
//   six-step flow (INTERTALK_CALLBACK_FLOW=message) — per message: POST notify{domain, id}; the
//   receiver checks with us (step 3) and grants a secret for that message (step 4), which we
//   accept only when the recipient's home page names that receiver (step 5); then POST
//   message{token, message} (step 6).
//
// A message the receiver stored answers 201 (or 200 for one it had already: a re-send after a
// crash is acknowledged, not stored twice). Answers map like federation's: 2xx delivered;
// 408/429/5xx/3xx and network failures retry; other 4xx fail; our SSRF policy refusing the
// endpoint fails.
import type { Logger } from 'pino';
import type { Clock } from '../util/clock.js';
import { PeerNetworkError, type PeerHttp } from '../federation/net.js';
import type { DeliveryOutcome, DeliveryTransport, OutboundRow } from '../federation/transports.js';
import { classifyStatus, parseRetryAfter } from '../federation/backoff.js';
import { plainWireBody } from '../federation/outbox.js';
import { domainOf } from '../protocol/address.js';
import { canonicalEndpoint } from './callback-protocol.js';
import { CALLBACK_TIMEOUT_MS, postCallback, type CallbackStore } from './callback.js';
import type { PersonalDomainTransport } from './transport.js';

/** How long we wait for the grant (step 4) to be recorded after the receiver answered notify. */
const GRANT_WAIT_MS = 10_000;
const TOKEN_ERRORS = new Set(['invalid_token', 'token_expired', 'token_revoked']);

export class CallbackTransport implements DeliveryTransport {
  readonly name = 'indieweb-callback';
  /** The flow used for sending (INTERTALK_CALLBACK_FLOW); tests may switch it. */
  flow: 'token' | 'message';

  constructor(
    private readonly o: {
      http: PeerHttp;
      store: CallbackStore;
      routes: PersonalDomainTransport;
      clock: Clock;
      logger: Logger;
      flow: 'token' | 'message';
      timeoutMs: number;
    },
  ) {
    this.flow = o.flow;
  }

  async claims(destination: string): Promise<boolean> {
    return (await this.o.routes.route(destination))?.protocol === 'callback';
  }

  async deliver(destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]> {
    const route = await this.o.routes.route(destination);
    if (!route || route.protocol !== 'callback') return [{ kind: 'retry', reason: `${destination}: its home page no longer names a callback server`, retryAfterMs: null }];
    const canon = canonicalEndpoint(route.server);
    if (!canon.ok) return [{ kind: 'fail', reason: `${destination}: its home page names ${route.server}: ${canon.message}` }];
    const endpoint = canon.url;
    const out: DeliveryOutcome[] = [];
    for (const row of rows) {
      let o: DeliveryOutcome;
      try {
        o = this.flow === 'token' ? await this.sendWithToken(destination, endpoint, row) : await this.sendSixStep(destination, endpoint, row);
      } catch (err) {
        o = this.networkOutcome(destination, endpoint, err);
      }
      out.push(o);
      if (o.kind === 'retry') break;
    }
    return out;
  }

  private label(destination: string, endpoint: string): string {
    return `${destination} (callback ${endpoint})`;
  }

  private networkOutcome(destination: string, endpoint: string, err: unknown): DeliveryOutcome {
    this.o.routes.forget(destination);
    const reason = `${this.label(destination, endpoint)}: ${err instanceof Error ? err.message : String(err)}`;
    if (err instanceof PeerNetworkError && err.policy) return { kind: 'fail', reason };
    return { kind: 'retry', reason, retryAfterMs: null };
  }

  private statusOutcome(destination: string, endpoint: string, step: string, r: { status: number; json: any; insecure: boolean; retryAfter?: string }): DeliveryOutcome {
    const kind = classifyStatus(r.status);
    if (kind === 'delivered') return { kind: 'delivered', insecure: r.insecure };
    const why = r.json && typeof r.json === 'object' ? [r.json.error, r.json.message].filter((x: unknown) => typeof x === 'string').join(' — ') : '';
    const reason = `${this.label(destination, endpoint)} answered ${r.status} to ${step}${why ? `: ${why.slice(0, 300)}` : ''}`;
    if (kind === 'retry' || (r.status >= 300 && r.status < 400)) return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(r.retryAfter, this.o.clock.now()) };
    return { kind: 'fail', reason };
  }

  /** Waits for the grant the receiver sends us (callback.ts records it) while it answers notify. */
  private async awaitGrant(endpoint: string, domain: string, messageId: string): Promise<string | null> {
    const deadline = Date.now() + GRANT_WAIT_MS;
    for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
      const t = await this.o.store.held(endpoint, domain, messageId);
      if (t) return t;
      if (Date.now() > deadline) return null;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  private async post(endpoint: string, body: unknown) {
    return postCallback(this.o.http, endpoint, body, Math.max(this.o.timeoutMs, CALLBACK_TIMEOUT_MS * 3));
  }

  /** Steps 1–4 of the token variant: a token for senders at `domain`, or the outcome that stops us. */
  private async authorize(destination: string, endpoint: string, domain: string): Promise<string | DeliveryOutcome> {
    const code = await this.o.store.issueCode(domain, endpoint);
    const r = await this.post(endpoint, { type: 'notify', domain, code });
    if (r.status < 200 || r.status >= 300) return this.statusOutcome(destination, endpoint, 'notify', r);
    const token = await this.awaitGrant(endpoint, domain, '');
    if (!token) return { kind: 'retry', reason: `${this.label(destination, endpoint)} answered notify ${r.status} but granted no token`, retryAfterMs: null };
    return token;
  }

  private async sendWithToken(destination: string, endpoint: string, row: OutboundRow): Promise<DeliveryOutcome> {
    const domain = domainOf(row.ev.sender).toLowerCase();
    const wire = JSON.parse(plainWireBody(row.body)) as Record<string, unknown>;
    for (let attempt = 0; ; attempt++) {
      let token = await this.o.store.held(endpoint, domain, '');
      if (!token) {
        const t = await this.authorize(destination, endpoint, domain);
        if (typeof t !== 'string') return t;
        token = t;
      }
      const r = await this.post(endpoint, { type: 'message', token, message: wire });
      if (r.status === 401 && TOKEN_ERRORS.has(String(r.json?.error)) && attempt === 0) {
        // Expired or revoked at the receiver: forget it and ask once more, for this message.
        await this.o.store.dropHeld(endpoint, domain, '', token);
        continue;
      }
      if (r.status === 401 && TOKEN_ERRORS.has(String(r.json?.error))) await this.o.store.dropHeld(endpoint, domain, '', token);
      return this.statusOutcome(destination, endpoint, 'message', r);
    }
  }

  private async sendSixStep(destination: string, endpoint: string, row: OutboundRow): Promise<DeliveryOutcome> {
    const domain = domainOf(row.ev.sender).toLowerCase();
    const id = row.ev.messageId;
    const wire = JSON.parse(plainWireBody(row.body)) as Record<string, unknown>;
    // Step 2 (step 1, discovery, is route()); steps 3–5 happen while the receiver answers.
    const n = await this.post(endpoint, { type: 'notify', domain, id });
    if (n.status < 200 || n.status >= 300) return this.statusOutcome(destination, endpoint, 'notify', n);
    const token = await this.awaitGrant(endpoint, domain, id);
    if (!token) return { kind: 'retry', reason: `${this.label(destination, endpoint)} answered notify ${n.status} but granted no secret for the message`, retryAfterMs: null };
    // Step 6.
    const r = await this.post(endpoint, { type: 'message', token, message: wire });
    const o = this.statusOutcome(destination, endpoint, 'message', r);
    if (o.kind !== 'retry') await this.o.store.dropHeld(endpoint, domain, id);
    return o;
  }
}
