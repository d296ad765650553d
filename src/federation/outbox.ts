// Delivery of queued outbox rows to peer providers. One drain per destination at a time (a lease
// in federation_peers, so several instances never interleave one destination's queue) keeps
// deliveries in order; back-off state lives in the database, so a restart forgets nothing.
// A crash between a peer's 2xx and our bookkeeping re-sends the message on restart; the peer
// acknowledges the known (from, id) without storing it twice.
import type { Logger } from 'pino';
import { sql } from 'kysely';
import { storableText, type Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import { KeyedDrains, Periodic } from '../util/drains.js';
import type { SigningKeys } from './keys.js';
import type { Discovery } from './discovery.js';
import { PeerNetworkError, type PeerHttp } from './net.js';
import { backoffDelay, classifyStatus, parseRetryAfter } from './backoff.js';
import { RICH_EXTENSION } from '../protocol/rich.js';
import { BATCH_EXTENSION, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, PIPELINE_EXTENSION, batchBody, bodySha256, parseBatchResults } from './batch.js';
import { BODY_HASH_CLAIM } from './claims.js';
import { Transports, type DeliveryOutcome, type OutboundRow } from './transports.js';

// A drain renews its destination's lease every LEASE_RENEW_MS (and before each attempt), however
// long an attempt takes; so the lease can be short, and after a crash (kill -9: no release) the
// restarted process, or another instance, resumes the destination within LEASE_MS.
const LEASE_MS = 10_000;
const LEASE_RENEW_MS = 3_000;
/** After a peer refused a pipelined batch as such: one batch at a time to it for this long. */
const NO_PIPELINE_MS = 10 * 60_000;

export interface OutboxOptions {
  db: Db;
  /** Our provider domain: the `sub` of batch tokens. */
  domain: string;
  clock: Clock;
  bus: EventBus;
  logger: Logger;
  keys: SigningKeys;
  discovery: Discovery;
  http: PeerHttp;
  maxAgeMs: number;
  sweepIntervalMs: number;
  timeoutMs: number;
  /**
   * INTERTALK_FEDERATION_PIPELINE: batch/1 requests in flight per destination that advertises
   * pipeline/1 (default 1: one at a time).
   */
  pipelineDepth?: number;
  /** Batch requests in flight to all destinations, whenever it changes (a gauge). */
  onBatchesInFlight?: (n: number) => void;
  onAttempt?: (outcome: 'delivered' | 'retry' | 'fail') => void;
  /** INTERTALK_INSECURE_PEERS: domains reached over plain http. */
  insecurePeers?: Set<string>;
  /** Our blocklist: queued deliveries to a domain blocked since are failed, not sent. */
  isBlocked?: (domain: string) => Promise<boolean>;
  /** Other ways to reach a destination (e-mail, …); a destination none claims gets federation. */
  transports?: Transports;
}

export class OutboxWorker {
  readonly instanceId = randomId(8);
  private readonly knownPeers = new Set<string>();
  private readonly drains = new KeyedDrains<string>(
    (d) => d,
    (d) => this.drain(d),
    (err, destination) => this.o.logger.error({ err, destination }, 'outbox drain failed'),
  );
  private readonly sweeper: Periodic;
  private stopped = true;
  /** Destinations that refused a pipelined batch: until when they get one batch at a time. */
  private readonly noPipeline = new Map<string, number>();
  private readonly inFlightTo = new Map<string, number>();
  private batchesInFlight = 0;
  /** The most batch requests seen in flight at once, per destination (for tests and operators). */
  readonly maxInFlight = new Map<string, number>();

  constructor(private readonly o: OutboxOptions) {
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
    this.drains.wake(destination);
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

  /**
   * A transport learned after the fact that a message it took did not arrive (an e-mail bounce):
   * the delivery becomes `failed` with the reason, and the sender is told. Only a delivered row
   * changes; true when one did.
   */
  async failAfterDelivery(destination: string, messageSeq: number, reason: string): Promise<boolean> {
    const row = await this.o.db
      .selectFrom('outbox')
      .innerJoin('messages', 'messages.seq', 'outbox.message_seq')
      .select(['outbox.id', 'messages.id as messageId', 'messages.sender', 'messages.conversation_id'])
      .where('outbox.destination', '=', destination)
      .where('outbox.message_seq', '=', messageSeq)
      .where('outbox.state', '=', 'delivered')
      .executeTakeFirst();
    if (!row) return false;
    const res = await this.o.db.updateTable('outbox').set({ state: 'failed', last_error: errorText(reason), delivered_at: null }).where('id', '=', row.id).where('state', '=', 'delivered').executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) return false;
    this.o.bus.publish({ type: 'delivery', sender: row.sender, messageId: row.messageId, seq: messageSeq, conversationId: row.conversation_id, destination, state: 'failed', error: reason, insecure: this.o.insecurePeers?.has(destination) ?? false });
    return true;
  }

  private async ensurePeer(domain: string): Promise<void> {
    // Peer rows are never deleted: once written (or seen), skip the statement.
    if (this.knownPeers.has(domain)) return;
    await this.o.db
      .insertInto('federation_peers')
      .values({ domain, failures: 0, backoff_until: 0, last_attempt_at: null, last_success_at: null, last_error: null, last_error_at: null, lease_owner: null, lease_until: null })
      .onConflict((oc) => oc.column('domain').doNothing())
      .execute();
    if (this.knownPeers.size >= 100_000) this.knownPeers.clear();
    this.knownPeers.add(domain);
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
    // pipeline/1: this session's stream (a fresh one per lease claimed), and its batches in
    // flight, oldest first. Recorded strictly in the order they were sent.
    const pipe: Pipeline = { stream: randomId(), seq: 0, cursor: 0, inFlight: [] };
    try {
      const retry = await this.rounds(domain, pipe, renew, () => lost);
      if (retry) await this.backOff(domain, retry.reason, retry.retryAfterMs, retry.maxDelayMs);
    } finally {
      // After an error above: what is still in flight is recorded before the lease goes.
      if (pipe.inFlight.length > 0) {
        try {
          const retry = await this.flush(domain, pipe);
          if (retry) await this.backOff(domain, retry.reason, retry.retryAfterMs, retry.maxDelayMs);
        } catch (err) {
          this.o.logger.error({ err, destination: domain }, 'could not record the batches in flight');
        }
      }
      clearInterval(heartbeat);
      await this.release(domain);
    }
  }

  /**
   * The rounds of one drain session. Returns the retry that ends it (the caller backs off), or
   * null when the queue is done (or waits). Nothing is left in flight when it returns normally.
   */
  private async rounds(domain: string, pipe: Pipeline, renew: (extra?: { last_attempt_at?: number }) => Promise<void>, lost: () => boolean): Promise<RetryOutcome | null> {
    while (!this.stopped) {
      const now = this.o.clock.now();
      // The head of the queue, up to one batch. Rows queued later by the same instance have
      // larger ids, so id order is the order the messages were accepted in. Rows already in a
      // batch in flight (id ≤ cursor) are skipped.
      // Bodies of ordinary size come with the rows; a larger one (an inline file: up to
      // ~13 MB) only if the round will send it (loadBodies), so a queue of big messages costs
      // one body per round, not a hundred.
      const head = await this.o.db
        .selectFrom('outbox')
        .innerJoin('messages', 'messages.seq', 'outbox.message_seq')
        .leftJoin('message_state', 'message_state.seq', 'outbox.message_seq')
        .select(['outbox.id', 'outbox.created_at', 'outbox.next_attempt_at', 'messages.seq', 'messages.id as messageId', 'messages.sender', 'messages.conversation_id', 'message_state.deleted_at'])
        // octet_length: PostgreSQL answers it from the stored value's header, without reading
        // (or decompressing) the value; length() would read every body to count characters.
        .select([sql<string | null>`case when octet_length(messages.body) <= ${BODY_WITH_ROW_BYTES} then messages.body end`.as('body'), sql<number>`octet_length(messages.body)`.as('size')])
        .where('outbox.destination', '=', domain)
        .where('outbox.state', '=', 'queued')
        .$if(pipe.cursor > 0, (qb) => qb.where('outbox.id', '>', pipe.cursor))
        .orderBy('outbox.id', 'asc')
        .limit(MAX_BATCH_MESSAGES)
        .execute();
      if (head.length === 0) {
        if (pipe.inFlight.length === 0) return null;
        // Nothing more to send now: wait for the oldest batch in flight, then look again.
        const retry = await this.recordOldest(domain, pipe);
        if (retry) return this.stopWith(domain, pipe, retry);
        continue;
      }
      const rows = await this.loadBodies(roundRows(head));
      if (Number(rows[0]!.next_attempt_at) > now) return this.flush(domain, pipe); // the head of the queue waits: order is kept

      // Rows that will not be sent are settled first; the rest keep their order.
      const blocked = (await this.o.isBlocked?.(domain)) ?? false;
      const sendable: QueuedRow[] = [];
      const settled: Settled[] = [];
      for (const r of rows) {
        if (Number(r.next_attempt_at) > now) break;
        const row: QueuedRow = { id: Number(r.id), body: r.body, ev: { sender: r.sender, messageId: r.messageId, seq: Number(r.seq), conversationId: r.conversation_id, destination: domain } };
        if (now - Number(r.created_at) > this.o.maxAgeMs) {
          settled.push({ row, state: 'failed', error: `not delivered within ${formatAge(this.o.maxAgeMs)}; last error: ${(await this.peerError(domain)) ?? 'none'}` });
        } else if (r.deleted_at) {
          // Deleted before it left: its content is gone; the delete that follows is enough.
          settled.push({ row, state: 'cancelled', error: 'deleted by the sender before delivery' });
        } else if (blocked) {
          settled.push({ row, state: 'failed', error: `${domain} is blocked by this provider` });
        } else {
          sendable.push(row);
        }
      }

      // pipeline/1: the next batch goes out while earlier ones are still in flight.
      const batch = sendable.length > 0 ? await this.pipelinedBatch(domain, sendable, pipe.inFlight.length) : null;
      if (batch) {
        await renew({ last_attempt_at: now });
        if (lost()) {
          this.o.logger.warn({ destination: domain }, 'delivery lease lost to another instance; stopping this drain');
          return this.flush(domain, pipe);
        }
        const last = batch.rows.at(-1)!.id;
        pipe.cursor = last;
        // Rows settled after the batch's last row come back with the next round's head.
        const unit: Unit = { rows: batch.rows, settled: settled.filter((s) => s.row.id < last), result: this.sendTracked(domain, () => this.sendBatch(domain, batch.peer, batch.wires, { stream: pipe.stream, seq: pipe.seq })) };
        pipe.seq++;
        pipe.inFlight.push(unit);
        while (pipe.inFlight.length >= this.depth) {
          const retry = await this.recordOldest(domain, pipe);
          if (retry) return this.stopWith(domain, pipe, retry);
        }
        continue;
      }

      // One round at a time, as without pipeline/1: what is in flight is recorded first.
      const earlier = await this.flush(domain, pipe);
      if (earlier) return earlier;
      if (sendable.length === 0) {
        await this.record(domain, [], settled, false);
        continue;
      }
      // Renew the lease before each attempt. If it expired and another instance took it over
      // (we were stalled for LEASE_MS), stop: that instance now delivers this queue, in order.
      await renew({ last_attempt_at: now });
      if (lost()) {
        this.o.logger.warn({ destination: domain }, 'delivery lease lost to another instance; stopping this drain');
        return null;
      }
      const result = await this.attempt(domain, sendable);
      const retry = await this.recordRound(domain, result.outcomes.map((_, i) => sendable[i]!), settled, result.outcomes);
      if (retry) return retry;
    }
    return this.flush(domain, pipe);
  }

  /** Batches in flight to one destination at most: INTERTALK_FEDERATION_PIPELINE. */
  private get depth(): number {
    return Math.max(1, this.o.pipelineDepth ?? 1);
  }

  /**
   * The batch this round sends pipelined, or null when the round goes as without pipeline/1: the
   * peer does not advertise it (or refused a pipelined batch lately), a transport claims the
   * destination, or the head message is too large for a batch. A lone message with nothing in
   * flight goes alone over POST /messages, as without pipeline/1; behind batches in flight it
   * goes as a batch of one, to keep its place in the stream.
   */
  private async pipelinedBatch(domain: string, rows: QueuedRow[], inFlight: number): Promise<{ peer: PeerTarget; wires: string[]; rows: QueuedRow[] } | null> {
    if (inFlight === 0 && rows.length < 2) return null;
    if (this.depth < 2) return null;
    const off = this.noPipeline.get(domain);
    if (off !== undefined) {
      if (off > this.o.clock.now()) return null;
      this.noPipeline.delete(domain);
    }
    if (this.o.transports && this.o.transports.size > 0) {
      try {
        if (await this.o.transports.pick(domain)) return null;
      } catch {
        return null; // attempt() says why
      }
    }
    let peer: PeerTarget;
    try {
      peer = await this.o.discovery.resolve(domain);
    } catch {
      return null; // attempt() retries with the reason
    }
    if (!peer.extensions.includes(BATCH_EXTENSION) || !peer.extensions.includes(PIPELINE_EXTENSION)) return null;
    const wires = this.cut(peer, rows, 100); // room for the pipeline/1 fields
    if (wires.length === 0 || (wires.length === 1 && inFlight === 0)) return null;
    return { peer, wires, rows: rows.slice(0, wires.length) };
  }

  /** The wire bodies of the head rows that fit one batch (none when the first alone does not). */
  private cut(peer: PeerTarget, rows: QueuedRow[], reserve = 0): string[] {
    const batch: string[] = [];
    let bytes = 20 + reserve; // {"messages":[]} and what else the body carries
    for (const r of rows) {
      const w = wireFor(peer, r);
      const size = Buffer.byteLength(w) + 1;
      if (bytes + size > MAX_BATCH_BYTES) break;
      batch.push(w);
      bytes += size;
    }
    return batch;
  }

  /** Counts a batch request while it is in flight (intertalk_federation_batches_in_flight). */
  private sendTracked<T>(domain: string, send: () => Promise<T>): Promise<T> {
    const n = (this.inFlightTo.get(domain) ?? 0) + 1;
    this.inFlightTo.set(domain, n);
    if (n > (this.maxInFlight.get(domain) ?? 0)) {
      if (this.maxInFlight.size >= 10_000) this.maxInFlight.clear();
      this.maxInFlight.set(domain, n);
    }
    this.batchesInFlight++;
    this.o.onBatchesInFlight?.(this.batchesInFlight);
    return send().finally(() => {
      const left = (this.inFlightTo.get(domain) ?? 1) - 1;
      if (left > 0) this.inFlightTo.set(domain, left);
      else this.inFlightTo.delete(domain);
      this.batchesInFlight--;
      this.o.onBatchesInFlight?.(this.batchesInFlight);
    });
  }

  /** Awaits the oldest batch in flight and records it; its retry, if it has one. */
  private async recordOldest(domain: string, pipe: Pipeline): Promise<RetryOutcome | null> {
    const unit = pipe.inFlight.shift()!;
    let outcomes = await unit.result;
    if ('refused' in outcomes) {
      // The peer refused a pipelined batch as such (not its messages): none after it were
      // applied either (its turn never came). The same rows go again after a short back-off,
      // one round at a time for a while; that path falls back to single messages if need be.
      this.noPipeline.set(domain, this.o.clock.now() + NO_PIPELINE_MS);
      this.o.discovery.invalidate(domain);
      outcomes = [{ kind: 'retry', reason: `${domain} refused a pipelined batch${outcomes.refused}`, retryAfterMs: null }];
    }
    return this.recordRound(domain, outcomes.map((_, i) => unit.rows[i]!), unit.settled, outcomes);
  }

  /** Records every batch still in flight, in order; the first retry among them. */
  private async flush(domain: string, pipe: Pipeline): Promise<RetryOutcome | null> {
    let first: RetryOutcome | null = null;
    while (pipe.inFlight.length > 0) first ??= await this.recordOldest(domain, pipe);
    return first;
  }

  /**
   * A batch needs a retry: nothing more is sent this session. The later batches in flight are
   * recorded as they were answered (one of them may have been delivered: the peer applies a
   * stream's batches in order, so only after the earlier ones); the caller backs off.
   */
  private async stopWith(domain: string, pipe: Pipeline, retry: RetryOutcome): Promise<RetryOutcome> {
    await this.flush(domain, pipe);
    return retry;
  }

  /** The bookkeeping of one round from its outcomes; its retry, if it has one. */
  private async recordRound(domain: string, attempted: QueuedRow[], settledBefore: Settled[], outcomes: Outcome[]): Promise<RetryOutcome | null> {
    const settled = [...settledBefore];
    for (const o of outcomes) this.o.onAttempt?.(o.kind);
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i]!;
      if (o.kind === 'delivered') settled.push({ row: attempted[i]!, state: 'delivered', error: null, insecure: o.insecure });
      else if (o.kind === 'fail') settled.push({ row: attempted[i]!, state: 'failed', error: o.reason });
    }
    const failures = outcomes.filter((o): o is Extract<Outcome, { kind: 'fail' }> => o.kind === 'fail');
    await this.record(domain, attempted, settled, outcomes.some((o) => o.kind === 'delivered'), failures.at(-1)?.reason);
    return outcomes.find((o): o is RetryOutcome => o.kind === 'retry') ?? null;
  }

  /** The rows with every body filled in: those left out by the head query, fetched now. */
  private async loadBodies<R extends { seq: number | string; body: string | null }>(rows: R[]): Promise<Array<R & { body: string }>> {
    const missing = rows.filter((r) => r.body === null).map((r) => Number(r.seq));
    const bodies = new Map<number, string>();
    if (missing.length > 0) {
      for (const b of await this.o.db.selectFrom('messages').select(['seq', 'body']).where('seq', 'in', missing).execute()) bodies.set(Number(b.seq), b.body);
    }
    return rows.map((r) => ({ ...r, body: r.body ?? bodies.get(Number(r.seq)) ?? '' }));
  }

  /**
   * The bookkeeping of one round, in one transaction: attempts counted, rows settled, the peer's
   * success or last error. Then one `delivery` event per settled row.
   */
  private async record(domain: string, attempted: QueuedRow[], settled: Settled[], anyDelivered: boolean, lastFailure?: string): Promise<void> {
    const now = this.o.clock.now();
    await this.o.db.transaction().execute(async (trx) => {
      if (attempted.length > 0) {
        await trx.updateTable('outbox').set((eb) => ({ attempts: eb('attempts', '+', 1) })).where('id', 'in', attempted.map((r) => r.id)).execute();
      }
      const delivered = settled.filter((s) => s.state === 'delivered').map((s) => s.row.id);
      if (delivered.length > 0) {
        await trx.updateTable('outbox').set({ state: 'delivered', last_error: null, delivered_at: now }).where('id', 'in', delivered).execute();
      }
      for (const s of settled) {
        if (s.state === 'delivered') continue;
        await trx.updateTable('outbox').set({ state: s.state, last_error: s.error === null ? null : errorText(s.error), delivered_at: null }).where('id', '=', s.row.id).execute();
      }
      if (anyDelivered) {
        await trx.updateTable('federation_peers').set({ failures: 0, backoff_until: 0, last_success_at: now }).where('domain', '=', domain).execute();
      }
      if (lastFailure !== undefined) {
        await trx.updateTable('federation_peers').set({ last_error: errorText(lastFailure), last_error_at: now }).where('domain', '=', domain).execute();
      }
    });
    // A delivery that did not happen says whether the peer is one we reach over plain http, as
    // the `queued` event did (federation/service.ts).
    const listedInsecure = this.o.insecurePeers?.has(domain) ?? false;
    for (const s of settled) this.o.bus.publish({ type: 'delivery', ...s.row.ev, state: s.state, error: s.error, insecure: s.insecure ?? listedInsecure });
  }

  private async peerError(domain: string): Promise<string | null> {
    const r = await this.o.db.selectFrom('federation_peers').select('last_error').where('domain', '=', domain).executeTakeFirst();
    return r?.last_error ?? null;
  }

  private async backOff(domain: string, reason: string, retryAfterMs: number | null, maxDelayMs?: number): Promise<void> {
    const peer = await this.o.db.selectFrom('federation_peers').select('failures').where('domain', '=', domain).executeTakeFirstOrThrow();
    const failures = Number(peer.failures) + 1;
    const delay = Math.min(Math.max(backoffDelay(failures), retryAfterMs ?? 0), maxDelayMs ?? Infinity);
    const now = this.o.clock.now();
    await this.o.db
      .updateTable('federation_peers')
      .set({ failures, backoff_until: now + delay, last_error: errorText(reason), last_error_at: now })
      .where('domain', '=', domain)
      .execute();
    await this.o.db.updateTable('outbox').set({ next_attempt_at: now + delay, last_error: errorText(reason) }).where('destination', '=', domain).where('state', '=', 'queued').execute();
    this.o.logger.info({ destination: domain, failures, retryInMs: delay, reason }, 'delivery deferred');
  }

  /**
   * Sends the head of the queue: as one batch/1 request when the peer advertises it, else the
   * first message alone over POST /messages. Returns an outcome for each message attempted, in
   * order (a prefix of `rows`); at most the last one is a retry.
   */
  private async attempt(domain: string, rows: QueuedRow[]): Promise<{ outcomes: Outcome[] }> {
    if (this.o.transports && this.o.transports.size > 0) {
      let transport;
      try {
        transport = await this.o.transports.pick(domain);
      } catch (err) {
        return { outcomes: [{ kind: 'retry', reason: `${domain}: cannot tell how to reach it: ${err instanceof Error ? err.message : String(err)}`, retryAfterMs: null }] };
      }
      if (transport) return { outcomes: await Transports.run(transport, domain, rows) };
    }
    let peer: Awaited<ReturnType<Discovery['resolve']>>;
    try {
      peer = await this.o.discovery.resolve(domain);
    } catch (err) {
      return { outcomes: [this.networkOutcome(domain, err)] };
    }
    // rich/1 peers get the stored body; any other peer gets the seed-000 message with the
    // readable fallback only (no `rich`, no other extension fields): wireFor.
    if (peer.extensions.includes(BATCH_EXTENSION) && rows.length > 1) {
      const batch = this.cut(peer, rows);
      if (batch.length > 1) {
        const outcomes = await this.sendTracked(domain, () => this.sendBatch(domain, peer, batch));
        if (!('refused' in outcomes)) return { outcomes };
        // The peer refused the batch as such: send the head alone, the way every peer takes it.
      }
    }
    return { outcomes: [await this.sendOne(domain, peer, rows[0]!, wireFor(peer, rows[0]!))] };
  }

  private async sendOne(domain: string, peer: { baseUrl: string; insecure: boolean }, row: QueuedRow, wire: string): Promise<Outcome> {
    try {
      const token = await this.o.keys.sign({ aud: domain, sub: row.ev.sender });
      const res = await this.o.http.request(`${peer.baseUrl}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: wire,
        timeoutMs: this.o.timeoutMs,
        maxResponseBytes: 64 * 1024,
      });
      return this.statusOutcome(domain, res.status, peerReason(res.body), res.headers['retry-after'], res.insecure || peer.insecure);
    } catch (err) {
      return this.networkOutcome(domain, err);
    }
  }

  /**
   * One batch/1 request (with pipeline/1's stream and seq when given). `refused` (the reason)
   * when the peer refused the batch itself, not its messages.
   */
  private async sendBatch(domain: string, peer: { baseUrl: string; insecure: boolean }, wires: string[], pipe?: { stream: string; seq: number }): Promise<Outcome[] | { refused: string }> {
    const body = batchBody(wires, pipe);
    try {
      const token = await this.o.keys.sign({ aud: domain, sub: this.o.domain }, { [BODY_HASH_CLAIM]: bodySha256(body) });
      const res = await this.o.http.request(`${peer.baseUrl}/messages/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body,
        timeoutMs: this.o.timeoutMs,
        // Room for a verbose peer: each result may carry an error and a message.
        maxResponseBytes: 64 * 1024 + wires.length * 4096,
      });
      const insecure = res.insecure || peer.insecure;
      if (res.status !== 200) {
        const whole = this.statusOutcome(domain, res.status, peerReason(res.body), res.headers['retry-after'], insecure);
        // Busy or down: the whole batch waits. Any other refusal (an older peer without the
        // route, a smaller size limit…): fall back to single messages, which say what is wrong.
        return whole.kind === 'retry' ? [whole] : { refused: ` (${res.status}${peerReason(res.body)})` };
      }
      let json: unknown;
      try {
        json = JSON.parse(res.body.toString('utf8'));
      } catch {
        json = null;
      }
      const results = parseBatchResults(json, wires.length);
      if (!results) return { refused: ': not a batch/1 answer' };
      const outcomes: Outcome[] = [];
      for (const r of results) {
        const reason = r.error || r.message ? `: ${[r.error, r.message].filter(Boolean).join(' — ')}` : '';
        const o = this.statusOutcome(domain, r.status, reason, undefined, insecure);
        outcomes.push(o);
        if (o.kind === 'retry') break; // later messages wait behind it, in order
      }
      return outcomes;
    } catch (err) {
      return [this.networkOutcome(domain, err)];
    }
  }

  private statusOutcome(domain: string, status: number, reasonSuffix: string, retryAfter: string | string[] | undefined, insecure: boolean): Outcome {
    const outcome = classifyStatus(status);
    if (outcome === 'delivered') return { kind: 'delivered', insecure };
    const reason = `${domain} answered ${status}${reasonSuffix}`;
    if (outcome === 'retry') return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(retryAfter, this.o.clock.now()) };
    if (status >= 300 && status < 400) return { kind: 'retry', reason: `${domain} answered with a redirect (${status}), which federation does not follow`, retryAfterMs: null };
    return { kind: 'fail', reason };
  }

  private networkOutcome(domain: string, err: unknown): Outcome {
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

/** Bodies up to this many bytes come with the head query (drain). */
const BODY_WITH_ROW_BYTES = 16 * 1024;

/**
 * The rows one round may send: the head of the queue up to MAX_BATCH_BYTES of stored body
 * (attempt() makes the exact cut on what goes on the wire), at least one row.
 */
export function roundRows<R extends { size: number | string }>(head: R[]): R[] {
  let total = 0;
  for (let i = 0; i < head.length; i++) {
    total += Number(head[i]!.size);
    if (total > MAX_BATCH_BYTES && i > 0) return head.slice(0, i);
  }
  return head;
}

type Outcome = DeliveryOutcome;
type RetryOutcome = Extract<Outcome, { kind: 'retry' }>;
type QueuedRow = OutboundRow;
type PeerTarget = Awaited<ReturnType<Discovery['resolve']>>;

/** pipeline/1: one drain session's stream and its batches in flight. */
interface Pipeline {
  stream: string;
  /** The seq of the next batch sent. */
  seq: number;
  /** The id of the last row in a batch sent this session (0: none yet): the head starts after it. */
  cursor: number;
  /** Sent, not yet recorded; oldest first. */
  inFlight: Unit[];
}

/** One round in flight: the rows of its batch, the rows it settles without sending, the answer. */
interface Unit {
  rows: QueuedRow[];
  settled: Settled[];
  result: Promise<Outcome[] | { refused: string }>;
}

/** rich/1 peers get the stored body; any other peer the seed-000 form (plainWireBody). */
function wireFor(peer: { extensions: string[] }, r: QueuedRow): string {
  return peer.extensions.includes(RICH_EXTENSION) ? r.body : plainWireBody(r.body);
}

interface Settled {
  row: QueuedRow;
  state: 'delivered' | 'failed' | 'cancelled';
  error: string | null;
  insecure?: boolean;
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

export function peerReason(body: Buffer): string {
  try {
    const j = JSON.parse(body.toString('utf8')) as { error?: unknown; message?: unknown };
    const parts = [j.error, j.message].filter((x) => typeof x === 'string') as string[];
    return parts.length ? `: ${parts.join(' — ').slice(0, 300)}` : '';
  } catch {
    return '';
  }
}
