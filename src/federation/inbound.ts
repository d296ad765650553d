// POST /messages from a peer provider: validate the message, authenticate the request
// (verify.ts), apply policy, store for our own recipients only (never relay).
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { MessageConflictError, RichRuleError, type Messaging } from '../messaging/service.js';
import { clientBucket, type RateLimiter } from '../auth/limiter.js';
import type { Accounts } from '../accounts/service.js';
import { deriveMessageId, validateMessage, type IntertalkMessage, type MessageResult } from '../protocol/message.js';

type ValidMessage = Extract<MessageResult, { ok: true }>['value'];
import { domainOf } from '../protocol/address.js';
import { claimedIssuer, extractToken, overLimit, peerLimit, type Failure, type FederationVerifier, type IssuerGate } from './verify.js';
import type { Blocklist } from './blocklist.js';
import { MAX_BATCH_MESSAGES } from './batch.js';
import { parsePipelineFields, type StreamOrder } from './stream-order.js';
import { checkInlineBinary, inlineLength } from '../attachments/inline.js';
import { HttpError } from '../http/errors.js';
import { classifyStatus } from './backoff.js';

export interface InboundResult {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const err = (status: number, error: string, message: string, headers?: Record<string, string>): InboundResult => ({ status, body: { error, message }, ...(headers ? { headers } : {}) });

/** The answer to a failed authentication (verify.ts), with Retry-After when it says when. */
const refusal = (f: Failure): InboundResult => err(f.status, f.error, f.message, f.retryAfterSeconds ? { 'retry-after': String(Math.ceil(f.retryAfterSeconds)) } : undefined);

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
      /** INTERTALK_MAX_ATTACHMENT: the largest seed-000 inline file (base64 in messageFormatted). */
      maxAttachment: number;
      /** INTERTALK_MAX_BODY: the largest message body, not counting an inline file. */
      maxBody: number;
      skewMs: number;
      /** Messages per peer domain (verified iss) and per client address. */
      perPeer: RateLimiter;
      perIp: RateLimiter;
      /** Called once a peer authenticated: it is up, so deliveries to it may resume. */
      onPeerSeen: (domain: string) => void;
      onAccepted: () => void;
      /** An unexpected error storing one message of a batch (logged; that message gets a 500). */
      onError?: (err: unknown) => void;
      /**
       * pipeline/1: the ordering gate of the batches that carry `stream` and `seq`. Null when we
       * do not advertise pipeline/1 (several instances): such batches are refused (400).
       */
      streamOrder?: StreamOrder | null;
    },
  ) {}

  async receive(input: { token: string; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<InboundResult> {
    // The issuer is not verified yet: it only selects the blocklist check. The per-peer limit
    // applies once the signature proves the issuer (peerGate).
    const limited = await this.limit(input.remoteIp, claimedIssuer(input.token), 1);
    if (typeof limited !== 'number') return limited;

    const now = this.o.clock.now();
    const v = validateMessage(input.body, { now, maxRecipients: this.o.maxRecipients, skewMs: this.o.skewMs, requireSentAt: false, requireId: false });
    if (!v.ok) return err(400, v.error, v.message);

    const auth = await this.o.verifier.verify(`Bearer ${input.token}`, input.rawBody, { from: v.value.from, to: v.value.to }, this.peerGate(1));
    if (!auth.ok) {
      return refusal(auth);
    }
    const admitted = this.admit(v.value, await this.knownLocal(this.localRecipients(v.value)), now);
    if ('status' in admitted) return admitted;
    const res = await this.store(admitted, auth.iss, auth.insecureKeys);
    if (res.status < 300) this.o.onPeerSeen(auth.iss);
    return res;
  }

  /**
   * A message carried by the seed's callback flow (src/indieweb/callback.ts): no JWT, but a
   * token we issued to the sender's domain after calling its server back. `authorize` checks the
   * token against the validated message (null: it may carry it) and returns the sender's domain
   * as proven; then the same policy and storage as POST /messages. Nothing is stored on a refusal.
   */
  async receiveByCallback(input: {
    body: unknown;
    remoteIp: string;
    domain: string;
    insecure: boolean;
    authorize: (m: { from: string; id: string | undefined }) => Promise<InboundResult | null>;
  }): Promise<InboundResult> {
    const limited = await this.limit(input.remoteIp, input.domain, 1);
    if (typeof limited !== 'number') return limited;
    const now = this.o.clock.now();
    const v = validateMessage(input.body, { now, maxRecipients: this.o.maxRecipients, skewMs: this.o.skewMs, requireSentAt: false, requireId: false });
    if (!v.ok) return err(400, v.error, v.message);
    try {
      checkInlineBinary(v.value, this.o.maxAttachment);
    } catch (e) {
      if (e instanceof HttpError) return err(e.status, e.code, e.message);
      throw e;
    }
    const refused = await input.authorize({ from: v.value.from.toLowerCase(), id: v.value.id ?? undefined });
    if (refused) return refused;
    const peer = await peerLimit(this.o.perPeer, `fed-peer:${input.domain}`, input.domain, 1);
    if (peer) return refusal(peer);
    const admitted = this.admit(v.value, await this.knownLocal(this.localRecipients(v.value)), now);
    if ('status' in admitted) return admitted;
    return this.store(admitted, input.domain, input.insecure);
  }

  /**
   * Before a large POST /messages body is read (messaging/routes.ts): steps 1, 2 and 0a of
   * docs/federation.md — the per-address limit (counted here only for a refusal: receive()
   * counts the others), the blocklist, and the token's claims and signature as far as they need
   * no message.
   */
  async checkBeforeBody(input: { token: string; remoteIp: string }): Promise<InboundResult | null> {
    const key = `fed-ip:${clientBucket(input.remoteIp)}`;
    const ip = await this.o.perIp.check(key);
    if (!ip.allowed) return err(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    const refusal = await this.refusalBeforeBody(input.token);
    // A request refused here never reaches receive(), which counts it: count it now, so that
    // refused strangers run into the per-address limit as they do with small bodies.
    if (refusal) await this.o.perIp.hit(key);
    return refusal;
  }

  private async refusalBeforeBody(token: string): Promise<InboundResult | null> {
    const claimedIss = claimedIssuer(token);
    if (claimedIss && (await this.o.blocklist.isBlocked(claimedIss))) return err(403, 'domain_blocked', `${claimedIss} is blocked by this provider`);
    const refused = await this.o.verifier.verifyBeforeBody(`Bearer ${token}`);
    if (!refused) return null;
    return refusal(refused);
  }

  /**
   * POST /messages/batch (batch/1, docs/federation.md): up to MAX_BATCH_MESSAGES messages under one
   * token of the sending provider, bound to the body. Each message is checked and stored on its
   * own, in the order given, and gets its own result: {"results":[{id, status, error?, message?}]}.
   * Rate limits count messages, not requests.
   */
  async receiveBatch(input: { authorization: string | undefined; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<InboundResult> {
    const b = input.body as { messages?: unknown } | null;
    if (typeof b !== 'object' || b === null || Array.isArray(b) || !Array.isArray(b.messages)) {
      return err(400, 'invalid_batch', 'the body must be {"messages": [message, …]}');
    }
    const items = b.messages as unknown[];
    if (items.length === 0 || items.length > MAX_BATCH_MESSAGES) {
      return err(400, 'invalid_batch', `a batch holds 1 to ${MAX_BATCH_MESSAGES} messages (got ${items.length})`);
    }
    // pipeline/1: a batch of a sender's stream, applied in seq order (stream-order.ts).
    const pipe = parsePipelineFields(b as Record<string, unknown>);
    if (pipe && 'error' in pipe) return err(400, 'invalid_batch', pipe.error);
    if (pipe && !this.o.streamOrder) return err(400, 'pipeline_unsupported', 'this provider does not advertise pipeline/1: send batches without "stream" and "seq"');
    // Rate limits count messages. A batch only partly within them is taken in part: the first
    // messages that fit are judged, the rest answered 429 each (they wait at the sender, in
    // order). Refusing it whole would leave a batch larger than the limit refused forever.
    const byAddress = await this.limit(input.remoteIp, claimedIssuer(extractToken(input.authorization) ?? ''), items.length);
    if (typeof byAddress !== 'number') return byAddress;
    let byPeer = items.length;
    const gate: IssuerGate = async (iss) => {
      // Only what the per-address limit let through is charged to the peer.
      const r = await this.o.perPeer.hit(`fed-peer:${iss}`, byAddress);
      if (r.granted === 0) return overLimit(iss, r.retryAfterMs);
      byPeer = r.granted;
      return null;
    };
    const auth = await this.o.verifier.verifyBatch(input.authorization, input.rawBody, gate);
    if (!auth.ok) {
      return refusal(auth);
    }
    const taken = Math.min(byAddress, byPeer);
    // Checked before its turn, so that the checks of pipelined batches overlap.
    const admitted = await this.checkBatch(items, input.rawBody, auth.iss, taken);
    if (!pipe) return this.storeBatch(items, admitted, auth);

    // Verified and checked: now wait for this batch's turn in its stream.
    const turn = await this.o.streamOrder!.enter(auth.iss, pipe.stream, pipe.seq);
    switch (turn.kind) {
      case 'run':
        break;
      case 'too_far':
        return err(400, 'invalid_batch', `"seq" ${pipe.seq} is too far ahead of this stream (next: ${turn.next}, at most ${this.o.streamOrder!.maxAhead} ahead)`);
      case 'out_of_order':
        return err(503, 'out_of_order', `the batches before seq ${pipe.seq} of this stream did not arrive within ${this.o.streamOrder!.waitMs} ms; retry on a new stream`);
      case 'broken':
        return err(503, 'out_of_order', 'an earlier batch of this stream was not applied whole; retry on a new stream');
      case 'busy':
        return err(503, 'out_of_order', 'too many streams in use; retry later on a new stream');
    }
    let retryClass = true;
    try {
      const res = await this.storeBatch(items, admitted, auth);
      const results = (res.body as { results?: Array<{ status: number }> }).results ?? [];
      retryClass = res.status !== 200 || results.some((r) => classifyStatus(r.status) === 'retry');
      return res;
    } finally {
      // The turn passes on only when every message of this batch has its result.
      turn.done(retryClass);
    }
  }

  /** Each message of an authenticated batch: the message to store, or its refusal. */
  private async checkBatch(items: unknown[], rawBody: Buffer | string, iss: string, taken: number): Promise<Array<InboundResult | IntertalkMessage>> {
    const now = this.o.clock.now();
    const batchFits = rawBody.length <= this.o.maxBody; // then so does each message
    const checked: Array<InboundResult | ValidMessage> = [];
    for (const item of items) checked.push(await this.checkBatchItem(item, batchFits, iss, now));
    const wanted = checked.flatMap((c) => ('status' in c ? [] : this.localRecipients(c)));
    const known = wanted.length ? await this.knownLocal([...new Set(wanted)]) : new Set<string>();
    return checked.map((c, i) =>
      i >= taken ? err(429, 'rate_limited', `over the rate limit for ${iss}; retry later`) : 'status' in c ? c : this.admit(c, known, now),
    );
  }

  /** The admitted messages of a batch stored in order; one result each. */
  private async storeBatch(items: unknown[], admitted: Array<InboundResult | IntertalkMessage>, auth: { iss: string; insecureKeys: boolean }): Promise<InboundResult> {

    // Stored in the order given. Messaging.accept queues its write before its first await,
    // except when it first looks up a quoted message; such a message waits for the ones before
    // it to be queued, and the ones after it wait for it.
    // Once one fails with a server error, the ones after it are not stored either (503): the
    // sender retries from the failed one, and order is kept. (Those queued in the same group
    // commit are held back by Messaging's own rule.)
    const results: Array<Promise<InboundResult>> = [];
    let failed = false;
    for (const a of admitted) {
      if ('status' in a) {
        results.push(Promise.resolve(a));
        continue;
      }
      const looksUp = a.rich?.reference !== undefined && a.rich.type !== 'delete';
      if (looksUp) await Promise.allSettled(results);
      if (failed) {
        results.push(Promise.resolve(err(503, 'not_stored', 'an earlier message of this batch could not be stored; retry from there')));
        continue;
      }
      const r = this.store(a, auth.iss, auth.insecureKeys).catch((e: unknown) => {
        this.o.onError?.(e);
        failed = true;
        return err(500, 'internal', 'this message could not be stored; retry it');
      });
      results.push(r);
      if (looksUp) await r;
    }
    const settled = await Promise.all(results);
    this.o.onPeerSeen(auth.iss);
    return {
      status: 200,
      body: {
        results: settled.map((r, i) => {
          const id = (admitted[i] as { id?: unknown }).id ?? (items[i] as { id?: unknown } | null)?.id;
          const body = r.body as { error?: string; message?: string; status?: string };
          return r.status < 300 ? { id, status: r.status } : { id: typeof id === 'string' ? id : null, status: r.status, error: body.error, message: body.message };
        }),
      },
    };
  }

  /** One message of a batch: validated, within size, its sender at the issuer (or delegated to it). */
  private async checkBatchItem(item: unknown, batchFits: boolean, iss: string, now: number): Promise<InboundResult | ValidMessage> {
    const v = validateMessage(item, { now, maxRecipients: this.o.maxRecipients, skewMs: this.o.skewMs, requireSentAt: false, requireId: false });
    if (!v.ok) return err(400, v.error, v.message);
    // The size checks POST /messages runs on its body (step 0), per message here.
    if (!batchFits) {
      const size = Buffer.byteLength(JSON.stringify(item));
      if (size - inlineLength(v.value) > this.o.maxBody) return err(413, 'payload_too_large', `the message exceeds ${this.o.maxBody} bytes, not counting an inline file`);
    }
    try {
      checkInlineBinary(v.value, this.o.maxAttachment);
    } catch (e) {
      if (e instanceof HttpError) return err(e.status, e.code, e.message);
      throw e;
    }
    // The batch token names no user: each sender must be a user of the signing provider.
    const fromDomain = domainOf(v.value.from);
    if (fromDomain !== iss) {
      if (fromDomain === this.o.domain) return err(403, 'sender_mismatch', `"from" must be an address at ${iss}, the provider that signed the batch`);
      if (this.o.messaging.ownerOf(v.value.from) !== null) return err(403, 'sender_is_local', 'a peer cannot send on behalf of our own users');
      // A personal domain delegated to the signing provider (src/indieweb/).
      const refused = await this.o.verifier.checkDelegation(fromDomain, iss);
      if (refused) return err(refused.status, refused.error, refused.message);
    }
    return v.value;
  }

  /**
   * Of our recipients, those that reach a current account: at our domain, an account; at a
   * personal domain delegated to us, its owner's account.
   */
  private async knownLocal(recipients: string[]): Promise<Set<string>> {
    const owners = new Map<string, string>();
    for (const r of recipients) {
      const o = this.o.messaging.ownerOf(r);
      if (o !== null) owners.set(r, o);
    }
    const existing = new Set(await this.o.accounts.existingAddresses([...new Set(owners.values())]));
    return new Set([...owners].filter(([, o]) => existing.has(o)).map(([r]) => r));
  }

  /**
   * Before the token is verified: the per-address rate limit (it bounds the work an anonymous
   * client can cause: parsing, key fetches, signature checks) and the blocklist for the claimed
   * issuer. Counts `cost` messages; a refusal, or how many of them fit (at least 1).
   */
  private async limit(remoteIp: string, claimedIss: string | null, cost: number): Promise<InboundResult | number> {
    const ip = await this.o.perIp.hit(`fed-ip:${clientBucket(remoteIp)}`, cost);
    if (ip.granted === 0) return err(429, 'rate_limited', 'too many requests from this address', { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) });
    if (claimedIss && (await this.o.blocklist.isBlocked(claimedIss))) return err(403, 'domain_blocked', `${claimedIss} is blocked by this provider`);
    return ip.granted;
  }

  /** The per-peer rate limit, on the issuer the signature proved (see IssuerGate). */
  private peerGate(cost: number): IssuerGate {
    return (iss) => peerLimit(this.o.perPeer, `fed-peer:${iss}`, iss, cost);
  }

  private localRecipients(m: { to: string[] }): string[] {
    return m.to.map((a) => a.toLowerCase()).filter((a) => this.o.messaging.ownerOf(a) !== null);
  }

  /** Our policy for one authenticated message: the complete message to store, or the refusal. */
  private admit(m: ValidMessage, known: Set<string>, now: number): IntertalkMessage | InboundResult {
    if (this.o.messaging.ownerOf(m.from.toLowerCase()) !== null) return err(403, 'sender_is_local', 'a peer cannot send on behalf of our own users');
    const to = m.to.map((a) => a.toLowerCase());
    if (!to.includes(m.from.toLowerCase())) return err(403, 'sender_not_participant', 'the sender ("from") must be one of the participants ("to")');
    const local = this.localRecipients(m);
    if (local.length === 0) return err(403, 'no_local_recipient', `no recipient is at ${this.o.domain}`);
    // Like a mail server refusing unknown recipients: every address at our domain must be an
    // account (a name registered later must not inherit this conversation).
    const unknown = local.filter((a) => !known.has(a));
    if (unknown.length > 0) return err(403, 'no_local_recipient', `no account at ${this.o.domain} for ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);
    const sentAt = m.sentAt ?? new Date(now).toISOString();
    // The 2016 format has no id: derive one from the content so a retry is stored once.
    return { ...m, sentAt, id: m.id ?? deriveMessageId({ ...m, sentAt: m.sentAt ?? '' }) };
  }

  private async store(message: IntertalkMessage, iss: string, insecure: boolean): Promise<InboundResult> {
    let res: Awaited<ReturnType<Messaging['accept']>>;
    try {
      res = await this.o.messaging.accept(message, { kind: 'remote', domain: iss, insecure });
    } catch (e) {
      // The sender already used this id for a different message: the peer's error, not ours (was a 500).
      if (e instanceof MessageConflictError) return err(409, 'id_conflict', e.message);
      // A broken rich/1 rule (editing or deleting someone else's message, a reference into
      // another conversation…): the peer's error, with its status; nothing was stored (was a 500).
      if (e instanceof RichRuleError) return err(e.status, e.code, e.message);
      throw e;
    }
    if (!res.replayed) this.o.onAccepted();
    return { status: res.replayed ? 200 : 201, body: { id: message.id, status: res.replayed ? 'duplicate' : 'accepted' } };
  }
}
