// A RateLimiter shared by every instance of one provider: a fixed-window counter per key in Redis,
// kept by one Lua script per call (INCR, and PEXPIRE when the window starts: atomic, one round
// trip), with the same semantics as MemoryRateLimiter: at most `limit` events per `windowMs`.
//
// Redis unavailable (down, restarting, slow beyond the command timeout): the call falls back to
// an in-memory limiter of the same shape, so logins and sends keep working with per-instance
// limits rather than failing; the shared counters resume when Redis is back.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { grantedOf, type RateHit, type RateLimiter } from '../auth/limiter.js';

// KEYS[1]: the window's counter; ARGV[1]: window length (ms); ARGV[2]: events to add.
// Returns {count, ms left}.
const HIT = `
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
`;

const CHECK = `
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
return {n, ttl}
`;

type Reply = [number, number];

interface Waiter {
  cost: number;
  resolve: (r: RateHit) => void;
}

interface LimiterCommands {
  intertalkRateHit(key: string, windowMs: number, cost: number): Promise<Reply>;
  intertalkRateCheck(key: string): Promise<Reply>;
}

/** Defines the scripts once per connection (EVALSHA, loaded on first use). */
function commands(redis: Redis): LimiterCommands {
  const r = redis as Redis & Partial<LimiterCommands>;
  if (!r.intertalkRateHit) {
    redis.defineCommand('intertalkRateHit', { numberOfKeys: 1, lua: HIT });
    redis.defineCommand('intertalkRateCheck', { numberOfKeys: 1, lua: CHECK });
  }
  return r as unknown as LimiterCommands;
}

export interface RedisRateLimiterOptions {
  redis: Redis;
  /** Key prefix, e.g. `intertalk:{domain}:rl:login:`. */
  prefix: string;
  limit: number;
  windowMs: number;
  /** Used while Redis cannot answer. */
  fallback: RateLimiter;
  logger: Logger;
}

export class RedisRateLimiter implements RateLimiter {
  private readonly cmd: LimiterCommands;
  private lastWarn = 0;

  constructor(private readonly o: RedisRateLimiterOptions) {
    this.cmd = commands(o.redis);
  }

  /** Keys hold user input (login names, addresses): long ones are hashed to bound their size. */
  private key(key: string): string {
    return this.o.prefix + (key.length > 200 ? `#${createHash('sha256').update(key).digest('base64url')}` : key);
  }

  private degraded(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarn < 10_000) return;
    this.lastWarn = now;
    this.o.logger.warn({ err: { message: (err as Error)?.message ?? String(err) }, prefix: this.o.prefix }, 'redis rate limiter unavailable; limiting per instance meanwhile');
  }

  private get ready(): boolean {
    return this.o.redis.status === 'ready';
  }

  async hit(key: string, cost = 1): Promise<RateHit> {
    if (!this.ready) {
      this.degraded(new Error(`redis is ${this.o.redis.status}`));
      return this.o.fallback.hit(key, cost);
    }
    // While a hit for this key is on its way to Redis, later hits wait and then go together as
    // one INCRBY: under load (one user sending over many connections) a round trip per burst, not
    // per message; alone, no added wait. Each caller is judged by the count its own events
    // reached, exactly as if the INCRs had run one by one.
    return new Promise((resolve) => {
      const queued = this.waiting.get(key);
      if (queued) queued.push({ cost, resolve });
      else {
        this.waiting.set(key, []);
        void this.send(key, [{ cost, resolve }]);
      }
    });
  }

  private readonly waiting = new Map<string, Waiter[]>();

  private async send(key: string, group: Waiter[]): Promise<void> {
    const total = group.reduce((n, w) => n + w.cost, 0);
    try {
      const [count, ttl] = await this.cmd.intertalkRateHit(this.key(key), this.o.windowMs, total);
      let reached = Number(count) - total;
      for (const w of group) {
        reached += w.cost;
        const granted = grantedOf(this.o.limit, reached, w.cost);
        w.resolve(reached > this.o.limit ? { allowed: false, granted, retryAfterMs: Math.max(1, Number(ttl)) } : { allowed: true, granted, retryAfterMs: 0 });
      }
    } catch (err) {
      this.degraded(err);
      for (const w of group) w.resolve(await this.o.fallback.hit(key, w.cost));
    }
    const next = this.waiting.get(key);
    if (next && next.length > 0) {
      this.waiting.set(key, []);
      void this.send(key, next);
    } else {
      this.waiting.delete(key);
    }
  }

  async check(key: string): Promise<{ allowed: boolean; retryAfterMs: number }> {
    if (!this.ready) {
      this.degraded(new Error(`redis is ${this.o.redis.status}`));
      return this.o.fallback.check(key);
    }
    try {
      const [count, ttl] = await this.cmd.intertalkRateCheck(this.key(key));
      return Number(count) >= this.o.limit ? { allowed: false, retryAfterMs: Math.max(1, Number(ttl)) } : { allowed: true, retryAfterMs: 0 };
    } catch (err) {
      this.degraded(err);
      return this.o.fallback.check(key);
    }
  }

  async reset(key: string): Promise<void> {
    await this.o.fallback.reset(key);
    if (!this.ready) return;
    try {
      await this.o.redis.del(this.key(key));
    } catch (err) {
      this.degraded(err);
    }
  }
}
