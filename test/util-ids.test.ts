// randomId: ids drawn from a pooled CSPRNG buffer are well-formed and never repeat, across pool
// refills and for every requested size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { randomId } from '../src/util/ids.js';

test('property: ids of any size are base64url of that many bytes, and all distinct', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 8, max: 2048 }), { minLength: 1, maxLength: 400 }), (sizes) => {
      const seen = new Set<string>();
      for (const n of sizes) {
        const id = randomId(n);
        assert.match(id, /^[A-Za-z0-9_-]+$/);
        assert.equal(Buffer.from(id, 'base64url').length, n);
        assert.ok(!seen.has(id), 'an id repeated');
        seen.add(id);
      }
    }),
    { numRuns: 50 },
  );
});

test('100,000 default ids (many pool refills) are distinct and 22 characters long', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 100_000; i++) {
    const id = randomId();
    assert.equal(id.length, 22);
    seen.add(id);
  }
  assert.equal(seen.size, 100_000);
});
