// Rate limiting behind an interface: in memory for one instance; a shared store can implement
// the same interface when several instances serve one provider.
import ipaddr from 'ipaddr.js';

export interface RateLimiter {
  /**
   * Records `cost` events (default 1) for `key`. `allowed`: all of them fit within the limit;
   * `granted`: how many of them did (the first ones: 0 to cost), so that a caller may take part
   * of a batch; `retryAfterMs`: how long to wait when not all fit. Refused events count too.
   */
  hit(key: string, cost?: number): Promise<RateHit>;
  /** Would the next event for `key` be refused? Records nothing. */
  check(key: string): Promise<{ allowed: boolean; retryAfterMs: number }>;
  reset(key: string): Promise<void>;
}

export interface RateHit {
  allowed: boolean;
  granted: number;
  retryAfterMs: number;
}

/** Of `cost` events that brought a window's count to `reached`, how many fit within `limit`. */
export function grantedOf(limit: number, reached: number, cost: number): number {
  return Math.max(0, Math.min(cost, limit - (reached - cost)));
}

/** Fixed-window counter: at most `limit` events per `windowMs` per key. Bounded memory. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
    private readonly maxKeys = 100_000,
  ) {}

  private current(key: string) {
    const t = this.now();
    let w = this.windows.get(key);
    if (!w || t - w.start >= this.windowMs) {
      if (!w && this.windows.size >= this.maxKeys) this.evict(t);
      w = { start: t, count: 0 };
      this.windows.set(key, w);
    }
    return { w, t };
  }

  private evict(t: number) {
    for (const [k, w] of this.windows) if (t - w.start >= this.windowMs) this.windows.delete(k);
    // Still full: drop the oldest entries (Map keeps insertion order).
    for (const k of this.windows.keys()) {
      if (this.windows.size < this.maxKeys) break;
      this.windows.delete(k);
    }
  }

  async hit(key: string, cost = 1): Promise<RateHit> {
    const { w, t } = this.current(key);
    w.count += cost;
    const granted = grantedOf(this.limit, w.count, cost);
    return w.count > this.limit ? { allowed: false, granted, retryAfterMs: w.start + this.windowMs - t } : { allowed: true, granted, retryAfterMs: 0 };
  }

  async check(key: string) {
    const { w, t } = this.current(key);
    return w.count >= this.limit ? { allowed: false, retryAfterMs: w.start + this.windowMs - t } : { allowed: true, retryAfterMs: 0 };
  }

  async reset(key: string) {
    this.windows.delete(key);
  }
}

/**
 * The rate-limit bucket of a client address. An IPv6 user (or attacker) is normally given a whole
 * /64, so per-address limits on single IPv6 addresses would cost an attacker nothing: IPv6
 * addresses count per /64, IPv4 (and IPv4-mapped IPv6) per address.
 */
export function clientBucket(ip: string): string {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(ip.replace(/%.*$/, ''));
  } catch {
    return ip;
  }
  if (addr.kind() === 'ipv4') return addr.toString();
  const parts = (addr as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16));
  return `${parts.join(':')}::/64`;
}
