// The shared rate limiter on a real Redis: concurrent hits for one key are coalesced into one
// INCRBY while a call is in flight, and every caller is still judged by the count its own events
// reached (exactly `limit` allowed, whatever the interleaving); costs add up; a Redis that stops
// answering falls back to the in-memory limiter. Runs with the PostgreSQL + Redis switch (like
// test/multi-instance.test.ts) and then fails loudly if Redis is unreachable.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import pino from 'pino';
import fc from 'fast-check';
import { MemoryRateLimiter } from '../src/auth/limiter.js';
import { RedisRateLimiter } from '../src/cluster/redis-limiter.js';
import { assertRedis, postgresAdminUrl, randomName, redisTestUrl } from './helpers/cluster.js';
import { expectedHits } from './helpers/limits.js';

if (postgresAdminUrl()) describe('RedisRateLimiter on a real Redis', () => {
  let redis: Redis;
  const prefix = `intertalk:test-${randomName()}:rl:`;
  const limiter = (limit: number, windowMs = 60_000) =>
    new RedisRateLimiter({ redis, prefix: `${prefix}${randomName()}:`, limit, windowMs, fallback: new MemoryRateLimiter(limit, windowMs), logger: pino({ level: 'silent' }) });

  before(async () => {
    await assertRedis(redisTestUrl());
    redis = new Redis(redisTestUrl(), { maxRetriesPerRequest: 1 });
  });

  after(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  test('property: N concurrent hits on one key allow exactly min(N, limit), in call order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 120 }), async (limit, n) => {
        const l = limiter(limit);
        const results = await Promise.all(Array.from({ length: n }, () => l.hit('alice')));
        const allowed = results.map((r) => r.allowed);
        assert.deepEqual(allowed, Array.from({ length: n }, (_, i) => i < limit));
        for (const r of results) if (!r.allowed) assert.ok(r.retryAfterMs > 0 && r.retryAfterMs <= 60_000);
      }),
      { numRuns: 40 },
    );
  });

  test('property: concurrent hits of any costs are each granted what still fits, in call order', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 50 }), fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 30 }), async (limit, costs) => {
        const l = limiter(limit);
        const results = await Promise.all(costs.map((c) => l.hit('k', c)));
        assert.deepEqual(results.map((r) => ({ allowed: r.allowed, granted: r.granted })), expectedHits(limit, costs));
      }),
      { numRuns: 40 },
    );
  });

  test('costs add up across callers and keys stay apart', async () => {
    const l = limiter(10);
    const [a, b, c] = await Promise.all([l.hit('k', 4), l.hit('k', 5), l.hit('k', 2)]);
    assert.deepEqual([a.allowed, b.allowed, c.allowed], [true, true, false]);
    assert.equal((await l.hit('other', 10)).allowed, true);
    assert.equal((await l.check('k')).allowed, false);
    await l.reset('k');
    assert.equal((await l.hit('k', 1)).allowed, true);
  });

  test('Redis not answering: the in-memory fallback limits meanwhile', async () => {
    const dead = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
    const l = new RedisRateLimiter({ redis: dead, prefix, limit: 3, windowMs: 60_000, fallback: new MemoryRateLimiter(3, 60_000), logger: pino({ level: 'silent' }) });
    const results = await Promise.all(Array.from({ length: 5 }, () => l.hit('bob')));
    assert.deepEqual(results.map((r) => r.allowed), [true, true, true, false, false]);
    dead.disconnect();
  });
});
