// Ordered, exactly-once release of 'message' events when several instances share one database and
// one bus (src/cluster/redis-bus.ts).
//
// The problem. Every instance publishes its own messages after they commit. Events therefore
// reach an instance in no guaranteed seq order (instance A's 100 may arrive after instance B's
// 101), and an event can be lost altogether (an instance killed between COMMIT and PUBLISH; a
// Redis outage). The hub (src/realtime/hub.ts) moves each rich client's cursor to the highest seq
// it sent and drops anything at or below it, so an event that arrives late would be dropped, and
// a client resuming with `since` would skip it for good.
//
// The invariant this relies on. On PostgreSQL, Messaging takes an advisory lock around every
// message-storing transaction when instances share the database (`serializeCommits`), so **seq
// order is commit order**: once seq N is committed, every seq below N is either committed or will
// never exist (rolled back, or burnt by an idempotent retry's ON CONFLICT DO NOTHING). SQLite has
// a single writer and gives the same guarantee by itself.
//
// The release rule. `released` (H) is the highest seq such that every seq <= H has been dealt
// with: released to subscribers, or known not to exist. An arriving event:
// * seq <= H: already released (a duplicate, or it was filled from the database): dropped;
// * seq == H + 1: released at once, with every held event that now follows without a gap;
// * otherwise held. If a gap stays open for `gapWaitMs`, the database is asked for everything
//   committed in (H, head] — which is complete, by the invariant — and that range is released in
//   seq order (held copies and database copies are the same message; each seq goes out once).
// A poll every `pollMs` releases what committed long enough ago but never arrived (an event lost
// at the tail, with nothing after it to reveal the gap), and `catchUp()` (after a bus reconnect)
// fills at once. While the bus is down, the poll alone keeps delivery going, just more slowly.
//
// 'delivery' events refer to a message seq; they wait until that message is released, so a
// client never hears about the delivery of a message it has not been sent. Other events are
// passed through at once.
import type { BusEvent } from '../bus/bus.js';

export type MessageEvent = Extract<BusEvent, { type: 'message' }>;

/** Where committed messages are read from (Messaging implements it). */
export interface CommittedMessages {
  /** The newest committed seq (0 when there is none). */
  maxSeq(): Promise<number>;
  /** Committed messages with after < seq <= upTo, oldest first, at most `limit`. */
  committedAfter(after: number, upTo: number, limit: number): Promise<MessageEvent[]>;
}

export interface SeqOrdererOptions {
  source: CommittedMessages;
  /** Receives events in order; must not throw (errors are caught and reported). */
  deliver: (e: BusEvent) => void;
  onError?: (err: unknown, what: string) => void;
  /** How long an out-of-order event waits for the missing ones before the database is asked. */
  gapWaitMs?: number;
  /** Safety net for events that never arrive; 0 disables it. */
  pollMs?: number;
  pageSize?: number;
}

export class SeqOrderer {
  /** H: every seq <= released has been released or is known not to exist. Null until init(). */
  private released: number | null = null;
  private readonly held = new Map<number, MessageEvent>();
  private readonly waiting: Array<{ seq: number; event: BusEvent }> = [];
  private readonly early: BusEvent[] = [];
  private gapTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private filling: Promise<void> | null = null;
  private fillAgain: number | null = null;
  private lastPollMax: number | null = null;
  private stopped = false;
  private readonly gapWaitMs: number;
  private readonly pollMs: number;
  private readonly pageSize: number;
  /** Counters for metrics and tests. */
  readonly stats = { released: 0, filledFromDb: 0, duplicates: 0, fills: 0 };

  constructor(private readonly o: SeqOrdererOptions) {
    this.gapWaitMs = o.gapWaitMs ?? 100;
    this.pollMs = o.pollMs ?? 1000;
    this.pageSize = o.pageSize ?? 500;
  }

  /** Starts from the newest committed seq: older messages are history, served by `since`. */
  async init(): Promise<void> {
    this.released = await this.o.source.maxSeq();
    const early = this.early.splice(0);
    for (const e of early) this.push(e);
    this.drain();
    if (this.pollMs > 0 && !this.stopped) {
      this.pollTimer = setInterval(() => void this.poll(), this.pollMs);
      this.pollTimer.unref();
    }
  }

  get watermark(): number | null {
    return this.released;
  }

  get heldCount(): number {
    return this.held.size + this.waiting.length;
  }

  push(e: BusEvent): void {
    if (this.stopped) return;
    if (this.released === null) {
      this.early.push(e);
      return;
    }
    if (e.type === 'message') {
      if (e.seq <= this.released || this.held.has(e.seq)) {
        this.stats.duplicates++;
        return;
      }
      this.held.set(e.seq, e);
      this.drain();
      return;
    }
    if (e.type === 'delivery' && e.seq > this.released) {
      this.waiting.push({ seq: e.seq, event: e });
      return;
    }
    this.emit(e);
  }

  /** Fills from the database up to the newest committed seq (after a bus reconnect). */
  async catchUp(): Promise<void> {
    if (this.released === null || this.stopped) return;
    try {
      const max = await this.o.source.maxSeq();
      if (max > this.released) await this.fill(max);
    } catch (err) {
      this.o.onError?.(err, 'catch-up from the database failed');
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.gapTimer) clearTimeout(this.gapTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.gapTimer = null;
    this.pollTimer = null;
    this.held.clear();
    this.waiting.length = 0;
  }

  private emit(e: BusEvent): void {
    try {
      this.o.deliver(e);
    } catch (err) {
      this.o.onError?.(err, 'a bus subscriber failed');
    }
  }

  private releaseMessage(e: MessageEvent): void {
    this.released = e.seq;
    this.stats.released++;
    this.emit(e);
  }

  /** Releases what follows H without a gap, then the delivery events that became eligible. */
  private drain(): void {
    if (this.released === null || this.stopped) return;
    for (;;) {
      const next = this.held.get(this.released + 1);
      if (!next) break;
      this.held.delete(next.seq);
      this.releaseMessage(next);
    }
    this.releaseWaiting();
    if (this.held.size === 0) {
      if (this.gapTimer) clearTimeout(this.gapTimer);
      this.gapTimer = null;
    } else if (!this.gapTimer) {
      this.gapTimer = setTimeout(() => {
        this.gapTimer = null;
        const head = this.minHeld();
        if (head !== null) void this.fill(head);
      }, this.gapWaitMs);
      this.gapTimer.unref();
    }
  }

  private releaseWaiting(): void {
    if (this.waiting.length === 0 || this.released === null) return;
    const h = this.released;
    const ready = this.waiting.filter((w) => w.seq <= h);
    if (ready.length === 0) return;
    const rest = this.waiting.filter((w) => w.seq > h);
    this.waiting.length = 0;
    this.waiting.push(...rest);
    for (const w of ready) this.emit(w.event);
  }

  private minHeld(): number | null {
    let min: number | null = null;
    for (const seq of this.held.keys()) if (min === null || seq < min) min = seq;
    return min;
  }

  /**
   * Releases everything committed in (H, upTo], in seq order. `upTo` must be a committed seq
   * (a held event's, or a maxSeq() answer): then, by the invariant, the database's answer for
   * the range is final.
   */
  private fill(upTo: number): Promise<void> {
    if (this.filling) {
      this.fillAgain = Math.max(this.fillAgain ?? 0, upTo);
      return this.filling;
    }
    this.filling = this.doFill(upTo).finally(() => {
      this.filling = null;
      const again = this.fillAgain;
      this.fillAgain = null;
      if (again !== null && this.released !== null && again > this.released) void this.fill(again);
      else this.drain();
    });
    return this.filling;
  }

  private async doFill(upTo: number): Promise<void> {
    this.stats.fills++;
    try {
      while (!this.stopped && this.released !== null && this.released < upTo) {
        const page = await this.o.source.committedAfter(this.released, upTo, this.pageSize);
        if (this.stopped || this.released === null) return;
        // Events that arrived while the query ran may already have moved H on.
        for (const row of page) {
          if (row.seq <= this.released) continue;
          // Held events below this row: committed, so the database should have listed them;
          // release them first rather than lose them (e.g. a row removed in between).
          this.releaseHeldBelow(row.seq);
          const held = this.held.get(row.seq);
          if (held) this.held.delete(row.seq);
          else this.stats.filledFromDb++;
          this.releaseMessage(held ?? row);
        }
        if (page.length < this.pageSize) {
          this.releaseHeldBelow(upTo + 1);
          if (this.released < upTo) this.released = upTo;
          break;
        }
      }
    } catch (err) {
      this.o.onError?.(err, 'could not read missing messages from the database; retrying');
      // Retry later: the held events stay held, in order.
      await new Promise((r) => setTimeout(r, Math.max(this.gapWaitMs, 500)).unref());
      if (!this.stopped) this.fillAgain = Math.max(this.fillAgain ?? 0, upTo);
    }
  }

  private releaseHeldBelow(seq: number): void {
    if (this.released === null) return;
    const below = [...this.held.keys()].filter((s) => s < seq).sort((a, b) => a - b);
    for (const s of below) {
      const e = this.held.get(s)!;
      this.held.delete(s);
      if (s > this.released) this.releaseMessage(e);
    }
  }

  /**
   * Anything committed at the previous poll but still not released now is taken from the
   * database (an event lost at the tail reveals no gap by itself).
   */
  private async poll(): Promise<void> {
    if (this.stopped || this.released === null || this.filling) return;
    try {
      const max = await this.o.source.maxSeq();
      const prev = this.lastPollMax;
      this.lastPollMax = max > this.released ? max : null;
      if (prev !== null && this.released !== null && prev > this.released) await this.fill(prev);
    } catch (err) {
      this.o.onError?.(err, 'could not poll for missed messages');
    }
  }
}
