// Several instances of one provider (INTERTALK_REDIS): what they share besides the database.
//
// * Live events: RedisBus (./redis-bus.ts), ordered and exactly-once per instance through
//   SeqOrderer (./seq-order.ts), which relies on Messaging serialising message commits on
//   PostgreSQL (seq order = commit order).
// * Rate limits (login throttling, registrations, sends): RedisRateLimiter (./redis-limiter.ts).
// * Sessions: 'session-revoked' travels on the bus; every instance closes that session's sockets
//   and drops its cached tokens (wired in src/provider.ts).
// * Already shared through the database, nothing to do here: signing keys (re-read every 30 s,
//   concurrent creation converges), outbox deliveries (a lease per destination in
//   federation_peers, taken over within 10 s when an instance dies), sessions and accounts.
import type { Logger } from 'pino';
import type { RateLimiter } from '../auth/limiter.js';
import { MemoryRateLimiter } from '../auth/limiter.js';
import { RedisBus } from './redis-bus.js';
import { RedisRateLimiter } from './redis-limiter.js';
import { redactRedisUrl } from './redis.js';
import type { CommittedMessages } from './seq-order.js';

export interface ClusterOptions {
  url: string;
  domain: string;
  logger: Logger;
  /** Committed messages for gap filling; may be bound after construction (Messaging needs the bus). */
  source: CommittedMessages;
  gapWaitMs?: number;
  pollMs?: number;
}

export class Cluster {
  /** Also owns the Redis connections: closing it (Provider.destroy) closes them. */
  readonly bus: RedisBus;
  private readonly prefix: string;

  constructor(private readonly o: ClusterOptions) {
    this.prefix = `intertalk:${o.domain}:`;
    this.bus = new RedisBus({ url: o.url, domain: o.domain, logger: o.logger, source: o.source, gapWaitMs: o.gapWaitMs, pollMs: o.pollMs });
  }

  /** Connects to Redis (fails after a few seconds with a clear error if it cannot). */
  async start(): Promise<void> {
    await this.bus.start();
    this.o.logger.info({ redis: redactRedisUrl(this.o.url), instance: this.bus.instanceId }, 'cluster mode: sharing live events and rate limits through redis');
  }

  /** A limiter whose counters all instances share; `name` separates the limiters' keys. */
  limiter(name: string, limit: number, windowMs: number, now: () => number): RateLimiter {
    return new RedisRateLimiter({
      redis: this.bus.commands,
      prefix: `${this.prefix}rl:${name}:`,
      limit,
      windowMs,
      fallback: new MemoryRateLimiter(limit, windowMs, now),
      logger: this.o.logger,
    });
  }
}
