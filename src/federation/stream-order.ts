// pipeline/1 (docs/federation.md, "pipeline/1"): a sender may have several batch/1 requests in
// flight; each carries `stream` (one per drain session of the sender) and `seq` (0, 1, 2, …), and
// the receiver applies the batches of one (issuer, stream) in seq order. This is the ordering
// gate: no I/O, no database, only in-memory state per stream (so only a provider running as one
// instance advertises pipeline/1).
//
// A batch whose seq is the stream's next runs at once; the turn passes to seq + 1 when its
// results are all known (done()). A batch ahead of its turn waits, at most `waitMs`, for its
// predecessors; then it is refused and the stream is broken. A batch whose results hold a
// retry-class status (429, 5xx) breaks the stream too: the sender retries from there, on a new
// stream, so every later batch of a broken stream is refused whole. A batch behind the turn (a
// replay of one already applied) runs as any batch: each message's (from, id) answers it.

/** `stream`: opaque, 1–64 characters of [A-Za-z0-9_-]. */
export const STREAM_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface StreamOrderOptions {
  /** How long a batch ahead of its turn waits for its predecessors (default 5 s). */
  waitMs?: number;
  /** A batch more than this far ahead of the stream's next seq is refused at once (default 64). */
  maxAhead?: number;
  /** Streams remembered per issuer (default 16) and in all (default 4096); the oldest idle goes. */
  maxStreamsPerIssuer?: number;
  maxStreams?: number;
  /** A stream nobody used for this long is forgotten (default 10 min). */
  idleMs?: number;
  now?: () => number;
}

export type Admission =
  /** Run the batch now; call done() once every result is known (true: one is retry-class). */
  | { kind: 'run'; done(retryClass: boolean): void }
  /** The stream is broken (an earlier batch waited too long, or needs a retry): refuse it whole. */
  | { kind: 'broken' }
  /** Waited `waitMs` for its predecessors in vain; the stream is broken now. */
  | { kind: 'out_of_order' }
  /** Too far ahead of the stream's next seq (a bound on what we hold). */
  | { kind: 'too_far'; next: number }
  /** Every remembered stream is in use: this new one cannot be tracked now. */
  | { kind: 'busy' };

interface Stream {
  key: string;
  issuer: string;
  next: number;
  /** The batch with seq = next is running. */
  busy: boolean;
  /** Batches that are running as replays (seq < next): the stream is not evicted under them. */
  replays: number;
  broken: boolean;
  lastUsed: number;
  waiters: Set<Waiter>;
}

interface Waiter {
  seq: number;
  /** Re-evaluates the waiter; true when it was answered. */
  poke(): boolean;
}

export class StreamOrder {
  readonly waitMs: number;
  readonly maxAhead: number;
  private readonly maxPerIssuer: number;
  private readonly maxStreams: number;
  private readonly idleMs: number;
  private readonly now: () => number;
  /** In least-recently-used order (a stream is moved to the end when used). */
  private readonly streams = new Map<string, Stream>();
  private lastSweep = 0;

  constructor(o: StreamOrderOptions = {}) {
    this.waitMs = o.waitMs ?? 5_000;
    this.maxAhead = o.maxAhead ?? 64;
    this.maxPerIssuer = o.maxStreamsPerIssuer ?? 16;
    this.maxStreams = o.maxStreams ?? 4096;
    this.idleMs = o.idleMs ?? 10 * 60_000;
    this.now = o.now ?? Date.now;
  }

  /** Streams remembered now (for tests and metrics). */
  get size(): number {
    return this.streams.size;
  }

  /** Admits batch `seq` of `stream` from the (verified) `issuer`; may wait up to waitMs. */
  async enter(issuer: string, stream: string, seq: number): Promise<Admission> {
    const now = this.now();
    this.sweep(now);
    const key = `${issuer}\n${stream}`;
    let s = this.streams.get(key);
    if (s) {
      this.streams.delete(key);
      this.streams.set(key, s);
    } else {
      if (!this.makeRoom(issuer)) return { kind: 'busy' };
      s = { key, issuer, next: 0, busy: false, replays: 0, broken: false, lastUsed: now, waiters: new Set() };
      this.streams.set(key, s);
    }
    s.lastUsed = now;
    const st = s;
    const immediate = this.tryAdmit(st, seq);
    if (immediate) return immediate;
    if (seq > st.next + this.maxAhead) return { kind: 'too_far', next: st.next };
    return new Promise<Admission>((resolve) => {
      const w: Waiter = {
        seq,
        poke: () => {
          const a = this.tryAdmit(st, seq);
          if (!a) return false;
          clearTimeout(timer);
          st.waiters.delete(w);
          resolve(a);
          return true;
        },
      };
      const timer = setTimeout(() => {
        st.waiters.delete(w);
        if (st.broken) return resolve({ kind: 'broken' });
        // The predecessors did not come in time: nothing after them may be applied either.
        st.broken = true;
        st.lastUsed = this.now();
        resolve({ kind: 'out_of_order' });
        this.pokeAll(st);
      }, this.waitMs);
      st.waiters.add(w);
    });
  }

  /** What batch `seq` may do now, or null: it waits. */
  private tryAdmit(s: Stream, seq: number): Admission | null {
    if (s.broken) return { kind: 'broken' };
    if (seq < s.next) {
      s.replays++;
      return { kind: 'run', done: once((retry) => this.finishReplay(s, retry)) };
    }
    if (seq === s.next && !s.busy) {
      s.busy = true;
      return { kind: 'run', done: once((retry) => this.finish(s, seq, retry)) };
    }
    return null;
  }

  private finish(s: Stream, seq: number, retryClass: boolean): void {
    s.busy = false;
    s.lastUsed = this.now();
    if (retryClass) s.broken = true;
    else s.next = seq + 1;
    this.pokeAll(s);
  }

  private finishReplay(s: Stream, retryClass: boolean): void {
    s.replays--;
    s.lastUsed = this.now();
    if (retryClass) {
      s.broken = true;
      this.pokeAll(s);
    }
  }

  private pokeAll(s: Stream): void {
    // In seq order, so that the successor takes the turn before a duplicate of it is answered.
    for (const w of [...s.waiters].sort((a, b) => a.seq - b.seq)) w.poke();
  }

  private inUse(s: Stream): boolean {
    return s.busy || s.replays > 0 || s.waiters.size > 0;
  }

  /** Room for one more stream of `issuer`: the oldest idle ones go. False when there is none. */
  private makeRoom(issuer: string): boolean {
    let ofIssuer = 0;
    for (const s of this.streams.values()) if (s.issuer === issuer) ofIssuer++;
    if (ofIssuer >= this.maxPerIssuer && !this.evictOldest((s) => s.issuer === issuer)) return false;
    if (this.streams.size >= this.maxStreams && !this.evictOldest(() => true)) return false;
    return true;
  }

  private evictOldest(match: (s: Stream) => boolean): boolean {
    for (const s of this.streams.values()) {
      if (match(s) && !this.inUse(s)) {
        this.streams.delete(s.key);
        return true;
      }
    }
    return false;
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < Math.min(60_000, this.idleMs / 4)) return;
    this.lastSweep = now;
    for (const s of this.streams.values()) {
      if (now - s.lastUsed > this.idleMs && !this.inUse(s)) this.streams.delete(s.key);
    }
  }
}

function once(f: (retry: boolean) => void): (retry: boolean) => void {
  let called = false;
  return (retry) => {
    if (called) return;
    called = true;
    f(retry);
  };
}

/**
 * Reads the pipeline/1 fields of a batch body: none (null), both valid ({stream, seq}), or an
 * error message (the batch is refused with 400).
 */
export function parsePipelineFields(body: Record<string, unknown>): { stream: string; seq: number } | null | { error: string } {
  const hasStream = Object.prototype.hasOwnProperty.call(body, 'stream');
  const hasSeq = Object.prototype.hasOwnProperty.call(body, 'seq');
  if (!hasStream && !hasSeq) return null;
  if (!hasStream || !hasSeq) return { error: '"stream" and "seq" come together (pipeline/1)' };
  const { stream, seq } = body;
  if (typeof stream !== 'string' || !STREAM_ID.test(stream)) return { error: '"stream" must be 1 to 64 characters of A-Z, a-z, 0-9, "_" and "-"' };
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return { error: '"seq" must be an integer ≥ 0' };
  return { stream, seq };
}
