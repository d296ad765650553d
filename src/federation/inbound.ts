// POST /messages from a peer provider: validate the message, authenticate the request
// (verify.ts), apply policy, store for our own recipients only (never relay).
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { MessageConflictError, RichRuleError, type Messaging } from '../messaging/service.js';
import type { RateLimiter } from '../auth/limiter.js';
import type { Accounts } from '../accounts/service.js';
import { deriveMessageId, validateMessage, type IntertalkMessage } from '../protocol/message.js';
import { domainOf } from '../protocol/address.js';
import { decodeJwt } from 'jose';
import type { FederationVerifier } from './verify.js';
import type { Blocklist } from './blocklist.js';

export interface InboundResult {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const err = (status: number, error: string, message: string, headers?: Record<string, string>): InboundResult => ({ status, body: { error, message }, ...(headers ? { headers } : {}) });

export class Inbound {
  constructor(
    private readonly o: {
      db: Db;
      domain: string;
      clock: Clock;
      messaging: Messaging;
      accounts: Accounts;
      verifier: FederationVerifier;
      blocklist: Blocklist;
      maxRecipients: number;
      skewMs: number;
      /** Requests per peer domain (unverified iss) and per client address. */
      perPeer: RateLimiter;
      perIp: RateLimiter;
      /** Called once a peer authenticated: it is up, so deliveries to it may resume. */
      onPeerSeen: (domain: string) => void;
      onAccepted: () => void;
    },
  ) {}

  async receive(input: { token: string; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<InboundResult> {
    const ip = await this.o.perIp.hit(`fed-ip:${input.remoteIp}`);
    if (!ip.allowed) return err(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.ceil(ip.retryAfterMs / 1000)) });

    // The issuer is not verified yet; it only selects the rate-limit bucket and the blocklist.
    let claimedIss: string | null = null;
    try {
      const iss = decodeJwt(input.token).iss;
      claimedIss = typeof iss === 'string' ? iss.toLowerCase() : null;
    } catch {
      /* the verifier explains what is wrong */
    }
    if (claimedIss) {
      if (await this.o.blocklist.isBlocked(claimedIss)) return err(403, 'domain_blocked', `${claimedIss} is blocked by this provider`);
      const peer = await this.o.perPeer.hit(`fed-peer:${claimedIss}`);
      if (!peer.allowed) return err(429, 'rate_limited', `too many requests from ${claimedIss}`, { 'retry-after': String(Math.ceil(peer.retryAfterMs / 1000)) });
    }

    const now = this.o.clock.now();
    const v = validateMessage(input.body, { now, maxRecipients: this.o.maxRecipients, skewMs: this.o.skewMs, requireSentAt: false, requireId: false });
    if (!v.ok) return err(400, v.error, v.message);

    const auth = await this.o.verifier.verify(`Bearer ${input.token}`, input.rawBody, { from: v.value.from, to: v.value.to });
    if (!auth.ok) {
      return err(auth.status, auth.error, auth.message, auth.retryAfterSeconds ? { 'retry-after': String(Math.ceil(auth.retryAfterSeconds)) } : undefined);
    }
    if (domainOf(v.value.from) === this.o.domain) return err(403, 'sender_is_local', 'a peer cannot send on behalf of our own users');

    const local = v.value.to.filter((a) => domainOf(a) === this.o.domain);
    if (local.length === 0) return err(403, 'no_local_recipient', `no recipient is at ${this.o.domain}`);
    // Like a mail server refusing unknown recipients: every address at our domain must be an
    // account (a name registered later must not inherit this conversation).
    const known = new Set(await this.o.accounts.existingAddresses(local));
    const unknown = local.filter((a) => !known.has(a));
    if (unknown.length > 0) return err(403, 'no_local_recipient', `no account at ${this.o.domain} for ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);

    const sentAt = v.value.sentAt ?? new Date(now).toISOString();
    // The 2016 format has no id: derive one from the content so a retry is stored once.
    const message: IntertalkMessage = { ...v.value, sentAt, id: v.value.id ?? deriveMessageId({ ...v.value, sentAt: v.value.sentAt ?? '' }) };
    let res: Awaited<ReturnType<Messaging['accept']>>;
    try {
      res = await this.o.messaging.accept(message, { kind: 'remote', domain: auth.iss, insecure: auth.insecureKeys });
    } catch (e) {
      // The sender already used this id for a different message: the peer's error, not ours (was a 500).
      if (e instanceof MessageConflictError) return err(409, 'id_conflict', e.message);
      // A broken rich/1 rule (editing or deleting someone else's message, a reference into
      // another conversation…): the peer's error, with its status; nothing was stored (was a 500).
      if (e instanceof RichRuleError) return err(e.status, e.code, e.message);
      throw e;
    }
    this.o.onPeerSeen(auth.iss);
    if (!res.replayed) this.o.onAccepted();
    return { status: res.replayed ? 200 : 201, body: { id: message.id, status: res.replayed ? 'duplicate' : 'accepted' } };
  }
}
