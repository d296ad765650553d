// The EventBus for several instances of one provider: Redis pub/sub on one channel per provider
// domain, `intertalk:{domain}:bus`, carrying `{"i": instanceId, "e": event}` as JSON.
//
// Own events: delivered locally at once, and skipped when they come back from Redis (by instance
// id). So a user on the instance that stored a message gets it without a Redis round trip, and
// local delivery keeps working while Redis is down; other instances get it through Redis. (The
// other choice, delivering only what comes back from Redis, would make every local delivery
// depend on Redis being up and add its latency.)
//
// Ordering and exactly-once: 'message' events go through a SeqOrderer (./seq-order.ts) before
// they reach subscribers: released in seq order, each once, with gaps (an event still in flight
// from another instance, or lost: an instance killed between COMMIT and PUBLISH, a Redis outage)
// filled from the database. Redis itself is only a fast path; the database is the truth.
//
// Connections: one for commands and PUBLISH (`commands`, which the rate limiters share), one in
// subscriber mode; close() ends both. Both reconnect on their own; after the subscriber is back, the orderer catches up from the database
// what was published while it was away.
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { BusEvent, EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import { SeqOrderer, type CommittedMessages } from './seq-order.js';
import { closeRedis, connectRedis, openRedis } from './redis.js';

export interface RedisBusOptions {
  url: string;
  /** The provider's domain: one channel per provider, so providers may share a Redis. */
  domain: string;
  logger: Logger;
  /** Committed messages, for the orderer (Messaging; may be bound after construction). */
  source: CommittedMessages;
  gapWaitMs?: number;
  pollMs?: number;
}

const BUS_EVENT_TYPES = new Set(['message', 'delivery', 'read', 'typing', 'receipt', 'settings', 'session-revoked']);

export function busChannel(domain: string): string {
  return `intertalk:${domain}:bus`;
}

export class RedisBus implements EventBus {
  readonly instanceId = randomId(12);
  readonly channel: string;
  readonly orderer: SeqOrderer;
  /** The command connection: PUBLISH, and the shared rate limiters (./redis-limiter.ts). */
  readonly commands: Redis;
  private readonly sub: Redis;
  private readonly subs = new Set<(e: BusEvent) => void>();
  private closed = false;
  private subscriberWasDown = false;
  private lastPublishError = 0;

  constructor(private readonly o: RedisBusOptions) {
    this.channel = busChannel(o.domain);
    this.commands = openRedis(o.url, o.logger, 'commands');
    this.sub = openRedis(o.url, o.logger, 'subscriber');
    this.orderer = new SeqOrderer({
      source: o.source,
      deliver: (e) => {
        for (const fn of this.subs) fn(e);
      },
      onError: (err, what) => o.logger.warn({ err }, what),
      gapWaitMs: o.gapWaitMs,
      pollMs: o.pollMs,
    });
    this.sub.on('message', (channel: string, payload: string) => {
      if (channel === this.channel) this.onRemote(payload);
    });
    this.sub.on('close', () => {
      if (!this.closed) this.subscriberWasDown = true;
    });
    this.sub.on('ready', () => {
      if (!this.subscriberWasDown || this.closed) return;
      this.subscriberWasDown = false;
      // ioredis re-subscribes on 'ready'; fill what was published meanwhile once it has.
      setTimeout(() => void this.orderer.catchUp(), 100).unref();
    });
  }

  /** Connects both connections, subscribes, and starts the orderer at the newest committed seq. */
  async start(): Promise<void> {
    await connectRedis(this.commands, this.o.url);
    await connectRedis(this.sub, this.o.url);
    await this.sub.subscribe(this.channel);
    await this.orderer.init();
  }

  publish(event: BusEvent): void {
    if (this.closed) return;
    this.orderer.push(event);
    const payload = JSON.stringify({ i: this.instanceId, e: event });
    this.commands.publish(this.channel, payload).catch((err: Error) => {
      // Other instances recover messages from the database (gap fill, poll); sessions ended
      // here are also noticed by their periodic re-checks.
      const now = Date.now();
      if (now - this.lastPublishError < 10_000) return;
      this.lastPublishError = now;
      this.o.logger.warn({ err: { message: err.message }, type: event.type }, 'could not publish a bus event to redis');
    });
  }

  subscribe(fn: (e: BusEvent) => void): () => void {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }

  private onRemote(payload: string): void {
    let msg: { i?: unknown; e?: unknown };
    try {
      msg = JSON.parse(payload) as { i?: unknown; e?: unknown };
    } catch {
      return;
    }
    if (msg.i === this.instanceId) return; // delivered locally when published
    const e = msg.e as BusEvent | undefined;
    if (!e || typeof e !== 'object' || !BUS_EVENT_TYPES.has((e as { type?: unknown }).type as string)) return;
    if (e.type === 'message' && !(Number.isSafeInteger(e.seq) && typeof e.json === 'string' && Array.isArray(e.recipients))) return;
    this.orderer.push(e);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.orderer.stop();
    this.subs.clear();
    await closeRedis(this.sub);
    await closeRedis(this.commands);
  }
}
