// The seed's callback flow (seed 001), our side of it: the store of tokens and codes, and the
// callback endpoint `POST {INTERTALK_PUBLIC_URL}/` — the URL our users' home pages name.
//
// As a RECEIVER (a callback-only server sends to one of our users):
//   notify  — step 2. We fetch the sender domain's home page (Delegations: PeerHttp, public
//             addresses only, time and size limited, cached) for the server it names, call that
//             server back to check the request (step 3), make a token and send it there (step 4),
//             and answer 202 once it took the token. The server that gets the token is the one the
//             sender's home page names, whoever sent the notify: that is what proves the sender.
//   message — step 6 (and, token variant, every later message): the token must be one we issued
//             to the sender's domain, unexpired, unrevoked, and for the six-step secret the very
//             message id; then the same rules and storage as federation (Inbound.receiveByCallback).
//   revoke  — the sender gives a token up.
// As a SENDER (callback-transport.ts sends to a callback-only server), the receiver calls us back:
//   check   — step 3: is a message with this id from this domain queued here (six-step), or is
//             this an unused, unexpired auth code we issued for this domain and destination?
//   grant   — step 4 and 5: the same, plus (six-step) the recipient's home page must name the
//             destination that asks; then we keep the token for the transport.
// Every refusal is a 4xx with {"error", "message"} and writes nothing.
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { sha256 } from '../util/ids.js';
import { PeerNetworkError, type PeerHttp } from '../federation/net.js';
import type { InboundResult } from '../federation/inbound.js';
import type { RateLimiter } from '../auth/limiter.js';
import { clientBucket } from '../auth/limiter.js';
import { domainOf } from '../protocol/address.js';
import {
  CODE_TTL_MS,
  EXPIRY_MARGIN_MS,
  MESSAGE_TOKEN_TTL_MS,
  canonicalEndpoint,
  checkCodeUse,
  checkTokenUse,
  heldExpiry,
  newSecret,
  parseCallbackRequest,
  sameEndpoint,
  type CallbackRequest,
  type Subject,
} from './callback-protocol.js';
import type { Delegations } from './delegation.js';

/** One call back to a sender's server (steps 3 and 4) while the notify waits. */
export const CALLBACK_TIMEOUT_MS = 5_000;
export const CALLBACK_MAX_RESPONSE_BYTES = 64 * 1024;

const res = (status: number, body: unknown): InboundResult => ({ status, body });
const refuse = (status: number, error: string, message: string): InboundResult => res(status, { error, message });

/** POST a JSON body to a callback endpoint through PeerHttp; the status and parsed answer. */
export async function postCallback(http: PeerHttp, url: string, body: unknown, timeoutMs = CALLBACK_TIMEOUT_MS): Promise<{ status: number; json: any; insecure: boolean; retryAfter?: string }> {
  const r = await http.request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body),
    timeoutMs,
    maxResponseBytes: CALLBACK_MAX_RESPONSE_BYTES,
  });
  let json: unknown;
  try {
    json = JSON.parse(r.body.toString('utf8'));
  } catch {
    json = undefined;
  }
  const ra = r.headers['retry-after'];
  return { status: r.status, json, insecure: r.insecure, ...(typeof ra === 'string' ? { retryAfter: ra } : {}) };
}

/** The tokens and codes of both roles, in the database (multi-instance safe). */
export class CallbackStore {
  constructor(private readonly o: { db: Db; clock: Clock }) {}

  async issueToken(t: { flow: 'message' | 'session'; domain: string; messageId: string | null; peer: string; ttlMs: number }): Promise<{ token: string; expiresAt: number }> {
    const token = newSecret('token');
    const now = this.o.clock.now();
    const expiresAt = now + t.ttlMs;
    await this.o.db
      .insertInto('callback_tokens')
      .values({ token_hash: sha256(token), flow: t.flow, domain: t.domain, message_id: t.messageId, peer: t.peer, created_at: now, expires_at: expiresAt, used_at: null, revoked_at: null })
      .execute();
    return { token, expiresAt };
  }

  async dropToken(token: string): Promise<void> {
    await this.o.db.deleteFrom('callback_tokens').where('token_hash', '=', sha256(token)).execute();
  }

  async findToken(token: string) {
    return this.o.db.selectFrom('callback_tokens').selectAll().where('token_hash', '=', sha256(token)).executeTakeFirst();
  }

  async markUsed(token: string): Promise<void> {
    await this.o.db.updateTable('callback_tokens').set({ used_at: this.o.clock.now() }).where('token_hash', '=', sha256(token)).where('used_at', 'is', null).execute();
  }

  /** Revokes one token; true when it existed and was not revoked yet. */
  async revoke(token: string): Promise<boolean> {
    const r = await this.o.db.updateTable('callback_tokens').set({ revoked_at: this.o.clock.now() }).where('token_hash', '=', sha256(token)).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Revokes every token issued to senders at `domain` (an operator's decision); how many. */
  async revokeDomain(domain: string): Promise<number> {
    const r = await this.o.db.updateTable('callback_tokens').set({ revoked_at: this.o.clock.now() }).where('domain', '=', domain).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async issueCode(domain: string, destination: string): Promise<string> {
    const code = newSecret('code');
    const now = this.o.clock.now();
    await this.o.db.insertInto('callback_codes').values({ code_hash: sha256(code), domain, destination, created_at: now, expires_at: now + CODE_TTL_MS, used_at: null }).execute();
    return code;
  }

  async findCode(code: string) {
    return this.o.db.selectFrom('callback_codes').selectAll().where('code_hash', '=', sha256(code)).executeTakeFirst();
  }

  /** Marks a code used; false when another request used it first. */
  async consumeCode(code: string): Promise<boolean> {
    const r = await this.o.db.updateTable('callback_codes').set({ used_at: this.o.clock.now() }).where('code_hash', '=', sha256(code)).where('used_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async hold(destination: string, domain: string, messageId: string, token: string, expiresAt: number): Promise<void> {
    const now = this.o.clock.now();
    await this.o.db
      .insertInto('callback_held')
      .values({ destination, domain, message_id: messageId, token, created_at: now, expires_at: expiresAt })
      .onConflict((oc) => oc.columns(['destination', 'domain', 'message_id']).doUpdateSet({ token, created_at: now, expires_at: expiresAt }))
      .execute();
  }

  /** A held token still good for a while, or null. */
  async held(destination: string, domain: string, messageId: string): Promise<string | null> {
    const r = await this.o.db
      .selectFrom('callback_held')
      .select(['token', 'expires_at'])
      .where('destination', '=', destination)
      .where('domain', '=', domain)
      .where('message_id', '=', messageId)
      .executeTakeFirst();
    if (!r || Number(r.expires_at) <= this.o.clock.now() + EXPIRY_MARGIN_MS) return null;
    return r.token;
  }

  async dropHeld(destination: string, domain: string, messageId: string, token?: string): Promise<void> {
    let q = this.o.db.deleteFrom('callback_held').where('destination', '=', destination).where('domain', '=', domain).where('message_id', '=', messageId);
    if (token !== undefined) q = q.where('token', '=', token);
    await q.execute();
  }

  /** Deletes what has expired (called from the re-check timer). */
  async cleanup(now = this.o.clock.now()): Promise<void> {
    const day = 86_400_000;
    await this.o.db.deleteFrom('callback_tokens').where('expires_at', '<', now - day).execute();
    await this.o.db.deleteFrom('callback_codes').where('expires_at', '<', now - day).execute();
    await this.o.db.deleteFrom('callback_held').where('expires_at', '<', now).execute();
  }
}

export interface CallbackEndpointOptions {
  db: Db;
  clock: Clock;
  logger: Logger;
  http: PeerHttp;
  store: CallbackStore;
  delegations: Delegations;
  /** Our provider domain. */
  domain: string;
  /** Our callback endpoint: `{INTERTALK_PUBLIC_URL}/` (what our users' home pages name). */
  endpoint: string;
  /** Our own personal domains (a peer cannot speak for them). */
  isOurs: (domain: string) => boolean;
  isBlocked: (domain: string) => Promise<boolean>;
  /** INTERTALK_CALLBACK_TOKEN_TTL. */
  tokenTtlMs: number;
  /** Notifies per client address (each costs a home-page fetch and two call-backs). */
  perIp: RateLimiter;
  /** Inbound.receiveByCallback. */
  receive: (input: Parameters<import('../federation/inbound.js').Inbound['receiveByCallback']>[0]) => Promise<InboundResult>;
}

export class CallbackEndpoint {
  constructor(private readonly o: CallbackEndpointOptions) {}

  async handle(body: unknown, remoteIp: string): Promise<InboundResult> {
    const p = parseCallbackRequest(body);
    if (!p.ok) return refuse(400, p.error, p.message);
    const req = p.req;
    // Each notify costs a home-page fetch and two call-backs; check, grant and revoke a database
    // look-up (and, grant, a home-page fetch): all count against the client address.
    if (req.type !== 'message') {
      const ip = await this.o.perIp.hit(`callback-ip:${clientBucket(remoteIp)}`);
      if (ip.granted === 0) return { status: 429, body: { error: 'rate_limited', message: 'too many callback requests from this address' }, headers: { 'retry-after': String(Math.max(1, Math.ceil(ip.retryAfterMs / 1000))) } };
    }
    switch (req.type) {
      case 'notify':
        return this.notify(req);
      case 'message':
        return this.message(req, remoteIp);
      case 'revoke':
        return (await this.o.store.revoke(req.token)) ? res(200, { status: 'revoked' }) : refuse(404, 'unknown_token', 'no such token (or revoked already)');
      case 'check':
        return this.check(req);
      case 'grant':
        return this.grant(req);
    }
  }

  // --- receiver ---------------------------------------------------------------------------------

  private async notify(req: Extract<CallbackRequest, { type: 'notify' }>): Promise<InboundResult> {
    const domain = req.domain;
    if (domain === this.o.domain || this.o.isOurs(domain)) return refuse(403, 'sender_is_local', `${domain} is this provider's; a peer cannot speak for it`);
    if (await this.o.isBlocked(domain)) return refuse(403, 'domain_blocked', `${domain} is blocked by this provider`);
    // Step 2 → 3: the server the sender's home page names, whoever sent this request.
    const d = await this.o.delegations.discover(domain);
    if (!d.ok) return refuse(403, 'sender_not_delegated', `${domain}: ${d.step}: ${d.message}`);
    const canon = canonicalEndpoint(d.server);
    if (!canon.ok) return refuse(403, 'sender_not_delegated', `${domain} names ${d.server}: ${canon.message}`);
    const server = canon.url;
    if (sameEndpoint(server, this.o.endpoint)) return refuse(403, 'sender_is_local', `${domain} names this provider`);
    const subject = req.subject;
    // Step 3: is the request legit?
    const checked = await this.call(server, { type: 'check', domain, ...subject, destination: this.o.endpoint });
    if ('status' in checked) return checked;
    if (checked.answer.status !== 200 || checked.answer.json?.ok !== true) {
      return refuse(403, 'callback_refused', `${server} (named by ${domain}) did not confirm the request: HTTP ${checked.answer.status}${reason(checked.answer.json)}`);
    }
    // Step 4: a token, sent to that server.
    const flow = 'id' in subject ? 'message' : 'session';
    const issued = await this.o.store.issueToken({ flow, domain, messageId: 'id' in subject ? subject.id : null, peer: server, ttlMs: flow === 'message' ? MESSAGE_TOKEN_TTL_MS : this.o.tokenTtlMs });
    const expiresAt = new Date(issued.expiresAt).toISOString();
    const granted = await this.call(server, { type: 'grant', domain, ...subject, destination: this.o.endpoint, token: issued.token, expiresAt });
    if ('status' in granted || granted.answer.status < 200 || granted.answer.status >= 300) {
      await this.o.store.dropToken(issued.token);
      if ('status' in granted) return granted;
      return refuse(403, 'callback_refused', `${server} (named by ${domain}) refused the token: HTTP ${granted.answer.status}${reason(granted.answer.json)}`);
    }
    return res(202, { status: 'granted', flow: flow === 'message' ? 'six-step' : 'token', expiresAt });
  }

  /** One call back; a refusal when the server cannot be reached (policy: 403, else 503). */
  private async call(server: string, body: Record<string, unknown>): Promise<{ answer: { status: number; json: any } } | InboundResult> {
    try {
      return { answer: await postCallback(this.o.http, server, body) };
    } catch (err) {
      const m = err instanceof Error ? err.message : String(err);
      if (err instanceof PeerNetworkError && err.policy) return refuse(403, 'sender_not_delegated', `${server} may not be called back: ${m}`);
      return { status: 503, body: { error: 'callback_unavailable', message: `cannot call ${server} back: ${m}` }, headers: { 'retry-after': '30' } };
    }
  }

  private async message(req: Extract<CallbackRequest, { type: 'message' }>, remoteIp: string): Promise<InboundResult> {
    const row = await this.o.store.findToken(req.token);
    if (!row) return refuse(401, 'invalid_token', 'this token was not issued here');
    const token = { flow: row.flow as 'message' | 'session', domain: row.domain, messageId: row.message_id, expiresAt: Number(row.expires_at), revokedAt: row.revoked_at === null ? null : Number(row.revoked_at) };
    const result = await this.o.receive({
      body: req.message,
      remoteIp,
      domain: row.domain,
      insecure: row.peer.startsWith('http:'),
      authorize: async (m) => {
        const refused = checkTokenUse(token, { now: this.o.clock.now(), from: m.from, id: m.id });
        return refused ? refuse(refused.status, refused.error, refused.message) : null;
      },
    });
    if (result.status < 300 && token.flow === 'message') await this.o.store.markUsed(req.token);
    return result;
  }

  // --- sender -----------------------------------------------------------------------------------

  /** A message with this id from a sender at `domain`, queued here (six-step): its destination domain. */
  private async queued(domain: string, id: string): Promise<{ destination: string; sender: string } | null> {
    const rows = await this.o.db
      .selectFrom('outbox')
      .innerJoin('messages', 'messages.seq', 'outbox.message_seq')
      .select(['outbox.destination', 'messages.sender'])
      .where('messages.id', '=', id)
      .where('outbox.state', '=', 'queued')
      .limit(50)
      .execute();
    const r = rows.find((x) => domainOf(x.sender).toLowerCase() === domain);
    return r ? { destination: r.destination, sender: r.sender } : null;
  }

  private async verifySubject(domain: string, subject: Subject, destination: string): Promise<InboundResult | { destinationDomain: string | null }> {
    const now = this.o.clock.now();
    if ('code' in subject) {
      const row = await this.o.store.findCode(subject.code);
      if (!row) return refuse(404, 'unknown_code', 'no such auth code was issued here');
      const refused = checkCodeUse({ domain: row.domain, destination: row.destination, expiresAt: Number(row.expires_at), usedAt: row.used_at === null ? null : Number(row.used_at) }, { now, domain, destination });
      return refused ? refuse(refused.status, refused.error, refused.message) : { destinationDomain: null };
    }
    const q = await this.queued(domain, subject.id);
    if (!q) return refuse(404, 'unknown_message', `no message ${JSON.stringify(subject.id.slice(0, 80))} from ${domain} waits for delivery here`);
    return { destinationDomain: q.destination };
  }

  private async check(req: Extract<CallbackRequest, { type: 'check' }>): Promise<InboundResult> {
    const v = await this.verifySubject(req.domain, req.subject, req.destination);
    if ('status' in v) return v;
    return res(200, { ok: true });
  }

  private async grant(req: Extract<CallbackRequest, { type: 'grant' }>): Promise<InboundResult> {
    const v = await this.verifySubject(req.domain, req.subject, req.destination);
    if ('status' in v) return v;
    const now = this.o.clock.now();
    if ('id' in req.subject) {
      // Step 5: the message was sent to a recipient at v.destinationDomain; its home page must name
      // the destination that asks to have it.
      const dest = v.destinationDomain!;
      const d = await this.o.delegations.discover(dest);
      if (!d.ok) return refuse(403, 'destination_mismatch', `${dest}: ${d.step}: ${d.message}`);
      if (!sameEndpoint(d.server, req.destination)) return refuse(403, 'destination_mismatch', `${dest} names ${d.server}, not ${req.destination}`);
      if (req.expiresAt !== null && req.expiresAt <= now) return refuse(400, 'token_expired', '"expiresAt" is in the past');
      await this.o.store.hold(req.destination, req.domain, req.subject.id, req.token, heldExpiry(now, req.expiresAt, 'message', MESSAGE_TOKEN_TTL_MS));
      return res(202, { status: 'accepted' });
    }
    if (req.expiresAt !== null && req.expiresAt <= now) return refuse(400, 'token_expired', '"expiresAt" is in the past');
    if (!(await this.o.store.consumeCode(req.subject.code))) return refuse(404, 'unknown_code', 'this auth code was used already');
    await this.o.store.hold(req.destination, req.domain, '', req.token, heldExpiry(now, req.expiresAt, 'session', this.o.tokenTtlMs));
    return res(202, { status: 'accepted' });
  }
}

function reason(json: unknown): string {
  if (typeof json !== 'object' || json === null) return '';
  const j = json as { error?: unknown; message?: unknown };
  const parts = [j.error, j.message].filter((x) => typeof x === 'string') as string[];
  return parts.length ? `: ${parts.join(' — ').slice(0, 300)}` : '';
}
