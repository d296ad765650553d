// One drain per key at a time, and no wake-up lost: the scheduling skeleton that the federation
// outbox (a key per destination) and room fan-out (a key per room × member provider) share.
// A wake while the key drains marks it to run once more when the current drain ends (work that
// arrived during the drain might have missed its query), however many wakes came meanwhile.
// Leases (which instance may drain a key) stay with the callers: each keeps them in its own table.

export class KeyedDrains<K> {
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Map<string, K>();
  private stopped = false;

  constructor(
    private readonly name: (key: K) => string,
    private readonly drain: (key: K) => Promise<void>,
    private readonly onError: (err: unknown, key: K) => void,
  ) {}

  wake(key: K): void {
    if (this.stopped) return;
    const id = this.name(key);
    if (this.running.has(id)) {
      this.again.set(id, key);
      return;
    }
    const run = Promise.resolve()
      .then(() => this.drain(key))
      .catch((err) => this.onError(err, key))
      .finally(() => {
        this.running.delete(id);
        const next = this.again.get(id);
        if (next !== undefined) {
          this.again.delete(id);
          this.wake(next);
        }
      });
    this.running.set(id, run);
  }

  get size(): number {
    return this.running.size;
  }

  /** No new drains from now on; resolves when the running ones have ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.again.clear();
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  resume(): void {
    this.stopped = false;
  }
}

/** A periodic task that never overlaps itself and does not keep the process alive. */
export class Periodic {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly everyMs: number,
    private readonly task: () => Promise<void>,
  ) {}

  start(runNow = true): void {
    if (this.timer) return;
    let busy = false;
    const tick = (): void => {
      if (busy) return;
      busy = true;
      void this.task().finally(() => {
        busy = false;
      });
    };
    this.timer = setInterval(tick, this.everyMs);
    this.timer.unref();
    if (runNow) tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
