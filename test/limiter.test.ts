// The in-memory rate limiter: a fixed window per key; costs add up; `granted` says how many of a
// hit's events fit (the first ones), so that a batch can be taken in part (federation/inbound.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { clientBucket, grantedOf, MemoryRateLimiter } from '../src/auth/limiter.js';
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

test('property: clientBucket keeps IPv4 addresses apart and groups IPv6 addresses by /64, however they are written', () => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
  const hextets = (n: number) => fc.array(fc.nat(0xffff), { minLength: n, maxLength: n });
  fc.assert(
    fc.property(v4, v4, (a, b) => {
      assert.equal(clientBucket(a), a);
      assert.equal(clientBucket(`::ffff:${a}`), a, 'IPv4-mapped IPv6 is its IPv4 address');
      assert.equal(clientBucket(a) === clientBucket(b), a === b);
    }),
  );
  fc.assert(
    fc.property(hextets(4), hextets(4), hextets(4), fc.boolean(), (prefix, host1, host2, upper) => {
      const write = (parts: number[]) => {
        const s = parts.map((p) => p.toString(16)).join(':');
        return upper ? s.toUpperCase() : s;
      };
      const a = write([...prefix, ...host1]);
      const b = write([...prefix, ...host2]);
      assert.equal(clientBucket(a), clientBucket(b), `${a} and ${b} share a /64`);
      const other = [...prefix];
      other[3] = (other[3]! + 1) % 0x10000;
      assert.notEqual(clientBucket(write([...other, ...host1])), clientBucket(a));
      // The compressed form names the same bucket.
      assert.equal(clientBucket(`${write(prefix)}::1`), clientBucket(a));
    }),
  );
  assert.equal(clientBucket('not an address'), 'not an address');
});
