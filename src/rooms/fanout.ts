// Host side of rooms across providers: every room message goes to each member PROVIDER once
// (POST /roomMessages with the members there in `to`), driven by a durable cursor per (room,
// member provider) — the last room seq it took — so a provider that was down gets everything
// afterwards, in room order. The member provider stores by (room, seq), so a re-send after a
// crash between its 2xx and our bookkeeping is acknowledged without a second copy.
// Retries follow the federation back-off (src/federation/backoff.ts).
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import { storableText } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import { backoffDelay, classifyStatus, parseRetryAfter } from '../federation/backoff.js';
import { PeerNetworkError } from '../federation/net.js';
import { domainOf } from '../protocol/address.js';
import { randomId } from '../util/ids.js';
import { KeyedDrains, Periodic } from '../util/drains.js';
import type { RoomPeers } from './peers.js';

/** Messages per POST /roomMessages when a provider has several to catch up on. */
export const MAX_FANOUT_MESSAGES = 50;
const MAX_FANOUT_BYTES = 2 * 1024 * 1024;
/** A drain holds its cursor's lease this long, renewed before each request (as the outbox does). */
const LEASE_MS = 30_000;
/** A room notice is tried at once, then after these delays. */
const NOTICE_DELAYS_MS = [0, 2_000, 10_000];

export interface FanoutItem {
  seq: number;
  to: string[];
  message: string;
}

/**
 * The body of POST /roomMessages. One message: the later revision's `{"to", "message"}` with
 * `room` and `seq` (ours); several (catching up): `{"room", "messages": [{"seq", "to", "message"}]}`.
 */
export function fanoutBody(room: string, items: FanoutItem[]): string {
  if (items.length === 1) {
    const i = items[0]!;
    return JSON.stringify({ room, seq: i.seq, to: i.to, message: i.message });
  }
  return JSON.stringify({ room, messages: items.map((i) => ({ seq: i.seq, to: i.to, message: i.message })) });
}

export interface FanoutOptions {
  db: Db;
  domain: string;
  clock: Clock;
  logger: Logger;
  peers: RoomPeers;
  sweepIntervalMs: number;
  timeoutMs: number;
  onAttempt?: (outcome: 'delivered' | 'retry' | 'fail') => void;
  isBlocked?: (domain: string) => Promise<boolean>;
}

export class RoomFanout {
  readonly instanceId = randomId(8);
  private readonly drains = new KeyedDrains<{ room: string; domain: string }>(
    (k) => `${k.room}\n${k.domain}`,
    (k) => this.drain(k.room, k.domain),
    (err, k) => this.o.logger.error({ err, room: k.room, destination: k.domain }, 'room fan-out failed'),
  );
  private readonly sweeper: Periodic;
  private stopped = true;

  constructor(private readonly o: FanoutOptions) {
    this.sweeper = new Periodic(o.sweepIntervalMs, () => this.sweep());
  }

  start(): void {
    this.stopped = false;
    this.drains.resume();
    this.sweeper.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sweeper.stop();
    await this.drains.stop();
    await this.o.db.updateTable('room_deliveries').set({ lease_owner: null, lease_until: null }).where('lease_owner', '=', this.instanceId).execute().catch(() => undefined);
  }

  /** Takes (or renews) the cursor's lease: one instance at a time delivers a cursor, in order. */
  private async lease(room: string, domain: string): Promise<boolean> {
    const now = this.o.clock.now();
    const res = await this.o.db
      .updateTable('room_deliveries')
      .set({ lease_owner: this.instanceId, lease_until: now + Math.max(LEASE_MS, 2 * this.o.timeoutMs) })
      .where('room', '=', room)
      .where('domain', '=', domain)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now), eb('lease_owner', '=', this.instanceId)]))
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  /** Every cursor behind its room's log and due: drain it. */
  async sweep(): Promise<void> {
    if (this.stopped) return;
    try {
      const rows = await this.o.db
        .selectFrom('room_deliveries')
        .innerJoin('rooms', 'rooms.name', 'room_deliveries.room')
        .select(['room_deliveries.room', 'room_deliveries.domain'])
        .whereRef('room_deliveries.last_seq', '<', 'rooms.last_seq')
        .where('room_deliveries.next_attempt_at', '<=', this.o.clock.now())
        .execute();
      for (const r of rows) this.wake(r.room, r.domain);
    } catch (err) {
      this.o.logger.error({ err }, 'room fan-out sweep failed');
    }
  }

  /** A new message in `room`: every member provider's cursor there. */
  async wakeRoom(room: string): Promise<void> {
    const rows = await this.o.db.selectFrom('room_deliveries').select('domain').where('room', '=', room).execute();
    for (const r of rows) this.wake(room, r.domain);
  }

  /** A peer talked to us: deliveries to it need not wait for their back-off. */
  async peerIsUp(domain: string): Promise<void> {
    const res = await this.o.db.updateTable('room_deliveries').set({ failures: 0, next_attempt_at: 0 }).where('domain', '=', domain).where('failures', '>', 0).executeTakeFirst();
    if (Number(res.numUpdatedRows) > 0) {
      this.o.peers.invalidate(domain);
      await this.sweep();
    }
  }

  wake(room: string, domain: string): void {
    if (this.stopped) return;
    this.drains.wake({ room, domain });
  }

  private async drain(room: string, domain: string): Promise<void> {
    if (!(await this.lease(room, domain))) return;
    try {
      await this.drainLeased(room, domain);
    } finally {
      await this.o.db.updateTable('room_deliveries').set({ lease_owner: null, lease_until: null }).where('room', '=', room).where('domain', '=', domain).where('lease_owner', '=', this.instanceId).execute();
    }
  }

  private async drainLeased(room: string, domain: string): Promise<void> {
    const address = `${room}#${this.o.domain}`;
    while (!this.stopped) {
      const now = this.o.clock.now();
      const cursor = await this.o.db.selectFrom('room_deliveries').selectAll().where('room', '=', room).where('domain', '=', domain).executeTakeFirst();
      if (!cursor || Number(cursor.next_attempt_at) > now) return;
      const from = Number(cursor.last_seq);
      const msgs = await this.o.db
        .selectFrom('room_messages')
        .select(['seq', 'jws', 'removed_at'])
        .where('room', '=', room)
        .where('seq', '>', from)
        .orderBy('seq')
        .limit(MAX_FANOUT_MESSAGES)
        .execute();
      if (msgs.length === 0) return;
      const members = (await this.o.db.selectFrom('room_members').select(['address', 'joined_seq']).where('room', '=', room).execute()).filter((m) => domainOf(m.address) === domain);
      // Removed messages, and messages from before every member there joined, are skipped.
      const items: FanoutItem[] = [];
      let upTo = from;
      let bytes = 0;
      for (const m of msgs) {
        const seq = Number(m.seq);
        const to = members.filter((x) => Number(x.joined_seq) < seq).map((x) => x.address).sort();
        if (m.jws && m.removed_at === null && to.length > 0) {
          if (items.length > 0 && bytes + m.jws.length > MAX_FANOUT_BYTES) break;
          bytes += m.jws.length;
          items.push({ seq, to, message: m.jws });
        }
        upTo = seq;
      }
      if (items.length === 0) {
        await this.advance(room, domain, from, upTo, null);
        continue;
      }
      // Before each request: still ours? (Stalled past the lease, another instance may have it.)
      if (!(await this.lease(room, domain))) return;
      const blocked = (await this.o.isBlocked?.(domain)) ?? false;
      const outcome = blocked ? { kind: 'fail' as const, reason: `${domain} is blocked by this provider` } : await this.send(domain, fanoutBody(address, items));
      this.o.onAttempt?.(outcome.kind);
      if (outcome.kind === 'retry') {
        const failures = Number(cursor.failures) + 1;
        const delay = Math.max(backoffDelay(failures), outcome.retryAfterMs ?? 0);
        await this.o.db
          .updateTable('room_deliveries')
          .set({ failures, next_attempt_at: now + delay, last_error: storableText(outcome.reason.slice(0, 500)), updated_at: now })
          .where('room', '=', room)
          .where('domain', '=', domain)
          .execute();
        this.o.logger.info({ room: address, destination: domain, failures, retryInMs: delay, reason: outcome.reason }, 'room delivery deferred');
        return;
      }
      if (outcome.kind === 'fail') this.o.logger.warn({ room: address, destination: domain, reason: outcome.reason, seqs: [items[0]!.seq, items.at(-1)!.seq] }, 'room messages refused by the member provider; skipped');
      // Delivered, or refused for good: the cursor moves past them (only if nobody moved it meanwhile).
      await this.advance(room, domain, from, upTo, outcome.kind === 'fail' ? outcome.reason : null);
    }
  }

  private async advance(room: string, domain: string, from: number, to: number, error: string | null): Promise<void> {
    await this.o.db
      .updateTable('room_deliveries')
      .set({ last_seq: to, failures: 0, next_attempt_at: 0, last_error: error === null ? null : storableText(error.slice(0, 500)), updated_at: this.o.clock.now() })
      .where('room', '=', room)
      .where('domain', '=', domain)
      .where('last_seq', '=', from)
      .execute();
  }

  /**
   * POST /roomNotices (ours) to member providers: `{"room", "removedMessages"?, "removedMembers"?}`, under our
   * provider token bound to the body. Best effort, a few tries in the background: the member
   * provider's periodic reconcile makes up for a notice that never arrives.
   */
  notice(room: string, domains: string[], extra: { removedMessages?: number[]; removedMembers?: string[] }): void {
    if (this.stopped) return;
    const body = JSON.stringify({ room, ...extra });
    for (const domain of domains) {
      const run = async (): Promise<void> => {
        for (let attempt = 0; attempt < NOTICE_DELAYS_MS.length && !this.stopped; attempt++) {
          if (NOTICE_DELAYS_MS[attempt]! > 0) await new Promise((r) => setTimeout(r, NOTICE_DELAYS_MS[attempt]).unref());
          if (this.stopped || ((await this.o.isBlocked?.(domain)) ?? false)) return;
          const outcome = await this.send(domain, body, '/roomNotices');
          if (outcome.kind !== 'retry') {
            if (outcome.kind === 'fail') this.o.logger.info({ room, destination: domain, reason: outcome.reason }, 'room notice refused');
            return;
          }
        }
        this.o.logger.info({ room, destination: domain }, 'room notice not delivered; the member provider reconciles later');
      };
      void run().catch((err) => this.o.logger.warn({ err, room, destination: domain }, 'room notice failed'));
    }
  }

  private async send(domain: string, body: string, path = '/roomMessages'): Promise<{ kind: 'delivered' } | { kind: 'retry'; reason: string; retryAfterMs: number | null } | { kind: 'fail'; reason: string }> {
    try {
      const base = await this.o.peers.baseUrl(domain);
      const token = await this.o.peers.signProvider(domain, body);
      const res = await this.o.peers.request(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
        timeoutMs: this.o.timeoutMs,
        maxResponseBytes: 256 * 1024,
      });
      const outcome = classifyStatus(res.status);
      if (outcome === 'delivered') return { kind: 'delivered' };
      const reason = `${domain} answered ${res.status}${peerReason(res.body)}`;
      if (outcome === 'retry' || (res.status >= 300 && res.status < 400)) return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(res.headers['retry-after'], this.o.clock.now()) };
      return { kind: 'fail', reason };
    } catch (err) {
      this.o.peers.invalidate(domain);
      const reason = err instanceof Error ? err.message : String(err);
      if (err instanceof PeerNetworkError && err.policy) return { kind: 'fail', reason };
      return { kind: 'retry', reason, retryAfterMs: null };
    }
  }
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
