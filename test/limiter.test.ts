// The in-memory rate limiter: a fixed window per key; costs add up; `granted` says how many of a
// hit's events fit (the first ones), so that a batch can be taken in part (federation/inbound.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { grantedOf, MemoryRateLimiter } from '../src/auth/limiter.js';
import { expectedHits } from './helpers/limits.js';

test('property: each hit is granted the events that still fit, allowed only when all do', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 50 }), fc.array(fc.integer({ min: 1, max: 20 }), { maxLength: 30 }), async (limit, costs) => {
      const l = new MemoryRateLimiter(limit, 60_000);
      const got = [];
      for (const c of costs) {
        const r = await l.hit('k', c);
        got.push({ allowed: r.allowed, granted: r.granted });
        if (!r.allowed) assert.ok(r.retryAfterMs > 0 && r.retryAfterMs <= 60_000);
      }
      assert.deepEqual(got, expectedHits(limit, costs));
    }),
    { numRuns: 300 },
  );
});

test('a new window grants again; keys stay apart', async () => {
  let now = 1_000_000;
  const l = new MemoryRateLimiter(5, 60_000, () => now);
  assert.deepEqual(await l.hit('a', 8), { allowed: false, granted: 5, retryAfterMs: 60_000 });
  assert.equal((await l.hit('a', 1)).granted, 0);
  assert.equal((await l.hit('b', 5)).allowed, true);
  now += 60_000;
  assert.deepEqual(await l.hit('a', 3), { allowed: true, granted: 3, retryAfterMs: 0 });
});

test('grantedOf: never negative, never more than the cost', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: 1000 }), (limit, prior, cost) => {
      const g = grantedOf(limit, prior + cost, cost);
      assert.ok(g >= 0 && g <= cost);
      assert.equal(g, Math.max(0, Math.min(cost, limit - prior)));
    }),
  );
});
