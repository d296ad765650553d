// Delivery of queued outbox rows to peer providers. One drain per destination at a time (a lease
// in federation_peers, so several instances never interleave one destination's queue) keeps
// deliveries in order; back-off state lives in the database, so a restart forgets nothing.
// A crash between a peer's 2xx and our bookkeeping re-sends the message on restart; the peer
// acknowledges the known (from, id) without storing it twice.
import type { Logger } from 'pino';
import { storableText, type Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import type { SigningKeys } from './keys.js';
import type { Discovery } from './discovery.js';
import { PeerNetworkError, type PeerHttp } from './net.js';
import { backoffDelay, classifyStatus, parseRetryAfter } from './backoff.js';
import { RICH_EXTENSION } from '../protocol/rich.js';

// A drain renews its destination's lease every LEASE_RENEW_MS (and before each attempt), however
// long an attempt takes; so the lease can be short, and after a crash (kill -9: no release) the
// restarted process, or another instance, resumes the destination within LEASE_MS.
const LEASE_MS = 10_000;
const LEASE_RENEW_MS = 3_000;

export interface OutboxOptions {
  db: Db;
  clock: Clock;
  bus: EventBus;
  logger: Logger;
  keys: SigningKeys;
  discovery: Discovery;
  http: PeerHttp;
  maxAgeMs: number;
  sweepIntervalMs: number;
  timeoutMs: number;
  onAttempt?: (outcome: 'delivered' | 'retry' | 'fail') => void;
  /** Our blocklist: queued deliveries to a domain blocked since are failed, not sent. */
  isBlocked?: (domain: string) => Promise<boolean>;
}

export class OutboxWorker {
  readonly instanceId = randomId(8);
  private readonly draining = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private stopped = true;

  constructor(private readonly o: OutboxOptions) {}

  start(): void {
    this.stopped = false;
    this.sweepTimer = setInterval(() => void this.sweep(), this.o.sweepIntervalMs);
    this.sweepTimer.unref();
    void this.sweep();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await Promise.allSettled([...this.draining.values()]);
    // Hand our leases back so another instance (or our restart) resumes at once.
    await this.o.db.updateTable('federation_peers').set({ lease_owner: null, lease_until: null }).where('lease_owner', '=', this.instanceId).execute().catch(() => undefined);
  }

  /** Wakes every destination with due work. Runs periodically and at start. */
  async sweep(): Promise<void> {
    if (this.stopped) return;
    try {
      const now = this.o.clock.now();
      const rows = await this.o.db
        .selectFrom('outbox')
        .leftJoin('federation_peers', 'federation_peers.domain', 'outbox.destination')
        .select('outbox.destination')
        .distinct()
        .where('outbox.state', '=', 'queued')
        .where('outbox.next_attempt_at', '<=', now)
        .where((eb) => eb.or([eb('federation_peers.backoff_until', 'is', null), eb('federation_peers.backoff_until', '<=', now)]))
        .execute();
      for (const r of rows) this.wake(r.destination);
    } catch (err) {
      this.o.logger.error({ err }, 'outbox sweep failed');
    }
  }

  /** New work for a destination: drain it unless it is backing off. */
  wake(destination: string): void {
    if (this.stopped) return;
    if (this.draining.has(destination)) {
      this.again.add(destination);
      return;
    }
    const run = this.drain(destination)
      .catch((err) => this.o.logger.error({ err, destination }, 'outbox drain failed'))
      .finally(() => {
        this.draining.delete(destination);
        if (this.again.delete(destination)) this.wake(destination);
      });
    this.draining.set(destination, run);
  }

  /** A peer talked to us or took a delivery: forget its back-off and deliver at once. */
  async peerIsUp(domain: string): Promise<void> {
    const res = await this.o.db.updateTable('federation_peers').set({ backoff_until: 0, failures: 0 }).where('domain', '=', domain).where('backoff_until', '>', 0).executeTakeFirst();
    if (Number(res.numUpdatedRows) > 0) {
      this.o.discovery.invalidate(domain);
      await this.o.db.updateTable('outbox').set({ next_attempt_at: this.o.clock.now() }).where('destination', '=', domain).where('state', '=', 'queued').execute();
      this.wake(domain);
    }
  }

  private async ensurePeer(domain: string): Promise<void> {
    await this.o.db
      .insertInto('federation_peers')
      .values({ domain, failures: 0, backoff_until: 0, last_attempt_at: null, last_success_at: null, last_error: null, last_error_at: null, lease_owner: null, lease_until: null })
      .onConflict((oc) => oc.column('domain').doNothing())
      .execute();
  }

  private async claim(domain: string): Promise<boolean> {
    const now = this.o.clock.now();
    const res = await this.o.db
      .updateTable('federation_peers')
      .set({ lease_owner: this.instanceId, lease_until: now + LEASE_MS })
      .where('domain', '=', domain)
      .where('backoff_until', '<=', now)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now), eb('lease_owner', '=', this.instanceId)]))
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  private async release(domain: string): Promise<void> {
    await this.o.db.updateTable('federation_peers').set({ lease_owner: null, lease_until: null }).where('domain', '=', domain).where('lease_owner', '=', this.instanceId).execute();
  }

  private async drain(domain: string): Promise<void> {
    await this.ensurePeer(domain);
    if (!(await this.claim(domain))) return;
    let lost = false;
    const renew = async (extra: { last_attempt_at?: number } = {}): Promise<void> => {
      const res = await this.o.db
        .updateTable('federation_peers')
        .set({ lease_until: this.o.clock.now() + LEASE_MS, ...extra })
        .where('domain', '=', domain)
        .where('lease_owner', '=', this.instanceId)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) lost = true;
    };
    const heartbeat = setInterval(() => void renew().catch((err) => this.o.logger.warn({ err, destination: domain }, 'could not renew the delivery lease')), LEASE_RENEW_MS);
    heartbeat.unref();
    try {
      while (!this.stopped) {
        const now = this.o.clock.now();
        const row = await this.o.db
          .selectFrom('outbox')
          .innerJoin('messages', 'messages.seq', 'outbox.message_seq')
          .leftJoin('message_state', 'message_state.seq', 'outbox.message_seq')
          .select(['outbox.id', 'outbox.attempts', 'outbox.created_at', 'outbox.next_attempt_at', 'messages.seq', 'messages.id as messageId', 'messages.sender', 'messages.conversation_id', 'messages.body', 'message_state.deleted_at'])
          .where('outbox.destination', '=', domain)
          .where('outbox.state', '=', 'queued')
          .orderBy('outbox.id', 'asc')
          .limit(1)
          .executeTakeFirst();
        if (!row) return;
        if (Number(row.next_attempt_at) > now) return; // the head of the queue waits: order is kept
        const ev = { sender: row.sender, messageId: row.messageId, seq: Number(row.seq), conversationId: row.conversation_id, destination: domain };
        if (now - Number(row.created_at) > this.o.maxAgeMs) {
          await this.finish(row.id, 'failed', `not delivered within ${formatAge(this.o.maxAgeMs)}; last error: ${(await this.peerError(domain)) ?? 'none'}`, ev);
          continue;
        }
        if (row.deleted_at) {
          // Deleted before it left: its content is gone; the delete that follows is enough.
          await this.finish(row.id, 'cancelled', 'deleted by the sender before delivery', ev);
          continue;
        }
        if (await this.o.isBlocked?.(domain)) {
          await this.finish(row.id, 'failed', `${domain} is blocked by this provider`, ev);
          continue;
        }
        // Renew the lease before each attempt. If it expired and another instance took it over
        // (we were stalled for LEASE_MS), stop: that instance now delivers this queue, in order.
        await renew({ last_attempt_at: now });
        if (lost) {
          this.o.logger.warn({ destination: domain }, 'delivery lease lost to another instance; stopping this drain');
          return;
        }
        const outcome = await this.attempt(domain, row.sender, row.body);
        this.o.onAttempt?.(outcome.kind);
        await this.o.db.updateTable('outbox').set({ attempts: Number(row.attempts) + 1 }).where('id', '=', row.id).execute();
        if (outcome.kind === 'delivered') {
          await this.finish(row.id, 'delivered', null, ev, outcome.insecure);
          await this.o.db.updateTable('federation_peers').set({ failures: 0, backoff_until: 0, last_success_at: this.o.clock.now() }).where('domain', '=', domain).execute();
        } else if (outcome.kind === 'fail') {
          await this.finish(row.id, 'failed', outcome.reason, ev);
          await this.recordError(domain, outcome.reason);
        } else {
          await this.backOff(domain, outcome.reason, outcome.retryAfterMs);
          return;
        }
      }
    } finally {
      clearInterval(heartbeat);
      await this.release(domain);
    }
  }

  private async peerError(domain: string): Promise<string | null> {
    const r = await this.o.db.selectFrom('federation_peers').select('last_error').where('domain', '=', domain).executeTakeFirst();
    return r?.last_error ?? null;
  }

  private async recordError(domain: string, reason: string): Promise<void> {
    await this.o.db.updateTable('federation_peers').set({ last_error: errorText(reason), last_error_at: this.o.clock.now() }).where('domain', '=', domain).execute();
  }

  private async backOff(domain: string, reason: string, retryAfterMs: number | null): Promise<void> {
    const peer = await this.o.db.selectFrom('federation_peers').select('failures').where('domain', '=', domain).executeTakeFirstOrThrow();
    const failures = Number(peer.failures) + 1;
    const delay = Math.max(backoffDelay(failures), retryAfterMs ?? 0);
    const now = this.o.clock.now();
    await this.o.db
      .updateTable('federation_peers')
      .set({ failures, backoff_until: now + delay, last_error: errorText(reason), last_error_at: now })
      .where('domain', '=', domain)
      .execute();
    await this.o.db.updateTable('outbox').set({ next_attempt_at: now + delay, last_error: errorText(reason) }).where('destination', '=', domain).where('state', '=', 'queued').execute();
    this.o.logger.info({ destination: domain, failures, retryInMs: delay, reason }, 'delivery deferred');
  }

  private async finish(
    id: number,
    state: 'delivered' | 'failed' | 'cancelled',
    error: string | null,
    ev: { sender: string; messageId: string; seq: number; conversationId: string; destination: string },
    insecure = false,
  ): Promise<void> {
    const now = this.o.clock.now();
    await this.o.db
      .updateTable('outbox')
      .set({ state, last_error: error === null ? null : errorText(error), delivered_at: state === 'delivered' ? now : null })
      .where('id', '=', id)
      .execute();
    this.o.bus.publish({ type: 'delivery', ...ev, state, error, insecure });
  }

  private async attempt(domain: string, sender: string, body: string): Promise<{ kind: 'delivered'; insecure: boolean } | { kind: 'fail'; reason: string } | { kind: 'retry'; reason: string; retryAfterMs: number | null }> {
    try {
      const peer = await this.o.discovery.resolve(domain);
      // rich/1 peers get the stored body; any other peer gets the seed-000 message with the
      // readable fallback only (no `rich`, no other extension fields).
      const wire = peer.extensions.includes(RICH_EXTENSION) ? body : plainWireBody(body);
      const token = await this.o.keys.sign({ aud: domain, sub: sender });
      const res = await this.o.http.request(`${peer.baseUrl}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: wire,
        timeoutMs: this.o.timeoutMs,
        maxResponseBytes: 64 * 1024,
      });
      const outcome = classifyStatus(res.status);
      if (outcome === 'delivered') return { kind: 'delivered', insecure: res.insecure || peer.insecure };
      const reason = `${domain} answered ${res.status}${peerReason(res.body)}`;
      if (outcome === 'retry') return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(res.headers['retry-after'], this.o.clock.now()) };
      if (res.status >= 300 && res.status < 400) return { kind: 'retry', reason: `${domain} answered with a redirect (${res.status}), which federation does not follow` , retryAfterMs: null };
      return { kind: 'fail', reason };
    } catch (err) {
      // Look the peer up afresh next time: its delegation may be what changed.
      this.o.discovery.invalidate(domain);
      const text = err instanceof Error ? err.message : String(err);
      const reason = text.startsWith(domain) ? text : `${domain}: ${text}`;
      // Our own policy (a non-public address, plain http without opt-in) will not change by
      // retrying: fail now with the reason, rather than after days.
      if (err instanceof PeerNetworkError && err.policy) return { kind: 'fail', reason };
      return { kind: 'retry', reason, retryAfterMs: null };
    }
  }
}

/**
 * The seed-000 form of a stored message body, for a peer that does not advertise rich/1:
 * {id, from, to, sentAt, message} — `message` already is the readable fallback of a rich action —
 * plus messageFormatted/format only when they format that same text (a plain or content message
 * without attachments); on a reply, edit or attachment message they format something else.
 */
export function plainWireBody(stored: string): string {
  const m = JSON.parse(stored) as Record<string, unknown> & { rich?: { text?: unknown } };
  const o: Record<string, unknown> = { id: m.id, from: m.from, to: m.to, sentAt: m.sentAt, message: m.message };
  const sameText = m.rich === undefined || m.rich === null || (typeof m.rich.text === 'string' && m.rich.text === m.message);
  if (typeof m.messageFormatted === 'string' && typeof m.format === 'string' && sameText) {
    o.messageFormatted = m.messageFormatted;
    o.format = m.format;
  }
  return JSON.stringify(o);
}

/** An error for a last_error column: a peer's answer may hold any text (see storableText). */
function errorText(reason: string): string {
  return storableText(reason.slice(0, 500));
}

function formatAge(ms: number): string {
  if (ms >= 86_400_000 && ms % 86_400_000 === 0) return `${ms / 86_400_000} d`;
  if (ms >= 3_600_000) return `${+(ms / 3_600_000).toFixed(1)} h`;
  if (ms >= 60_000) return `${+(ms / 60_000).toFixed(1)} min`;
  return `${Math.round(ms / 1000)} s`;
}

function peerReason(body: Buffer): string {
  try {
    const j = JSON.parse(body.toString('utf8')) as { error?: unknown; message?: unknown };
    const parts = [j.error, j.message].filter((x) => typeof x === 'string') as string[];
    return parts.length ? `: ${parts.join(' — ').slice(0, 300)}` : '';
  } catch {
    return '';
  }
}
