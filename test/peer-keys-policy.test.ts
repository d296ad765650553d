// The refetch policy of the peer key cache (src/federation/peer-keys.ts) as a property: whatever
// strangers send naming a peer — made-up kids, bad signatures under its real kid — while the peer
// publishes new keys, (1) a kid the peer published before we first heard of it is never refused
// as unknown, (2) one published at P is found by any lookup at P + cooldown or later, (3) made-up
// kids are never found, and (4) the peer is asked at most once per cooldown, plus once per new key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { PeerKeyCache, type FetchJson } from '../src/federation/peer-keys.js';

const COOLDOWN = 30_000;
const ISS = 'peer.test';

type Op =
  | { kind: 'advance'; ms: number }
  | { kind: 'publish' }
  | { kind: 'genuine' }
  | { kind: 'made-up'; n: number }
  | { kind: 'bad-signature' };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 20_000 }).map((ms) => ({ kind: 'advance', ms }) as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'publish' } as const) },
  { weight: 3, arbitrary: fc.constant({ kind: 'genuine' } as const) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 500 }).map((n) => ({ kind: 'made-up', n }) as const) },
  { weight: 3, arbitrary: fc.constant({ kind: 'bad-signature' } as const) },
);

test('property: forged lookups cannot starve a key rotation, and cost the peer one lookup per cooldown', async () => {
  const jwks: JWK[] = [];
  for (let i = 0; i < 8; i++) {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true });
    jwks.push({ ...(await exportJWK(publicKey)), kid: `k${i}`, alg: 'ES256', use: 'sig' });
  }
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async (ops) => {
      let now = 1_700_000_000_000;
      const clock = { now: () => now };
      const published = new Map<string, number>([['k0', now]]); // kid → when it was published
      let requests = 0;
      const fetchJson: FetchJson = async (_domain, path) => {
        requests++;
        if (path === '/keys') return { json: { keys: jwks.filter((k) => published.has(k.kid!)) }, insecure: false };
        const kid = decodeURIComponent(path.slice('/keys/'.length));
        const jwk = jwks.find((k) => k.kid === kid && published.has(kid));
        return jwk ? { json: jwk, insecure: false } : null;
      };
      const cache = new PeerKeyCache({ fetchJson, clock, cooldownMs: COOLDOWN });
      const start = now;
      const firstAsked = new Map<string, number>();
      for (const o of ops) {
        if (o.kind === 'advance') {
          now += o.ms;
        } else if (o.kind === 'publish') {
          const next = `k${published.size}`;
          if (published.size < jwks.length) published.set(next, now);
        } else if (o.kind === 'genuine') {
          const kid = `k${published.size - 1}`;
          if (!firstAsked.has(kid)) firstAsked.set(kid, now);
          const r = await cache.getKey(ISS, kid);
          assert.notEqual(r.status, 'unknown', `${kid}, published at ${published.get(kid)! - start}, refused as unknown at ${now - start}`);
          if (now >= published.get(kid)! + COOLDOWN) assert.equal(r.status, 'found', `${kid} not found ${now - published.get(kid)!} ms after it was published`);
          if (r.status === 'found') assert.equal(r.jwk.x, jwks.find((k) => k.kid === kid)!.x);
        } else if (o.kind === 'made-up') {
          const r = await cache.getKey(ISS, `made-up-${o.n}`);
          assert.notEqual(r.status, 'found');
        } else {
          // A token under the peer's first kid whose signature failed: the verifier forces a refresh.
          const r = await cache.getKey(ISS, 'k0', { forceRefresh: true });
          assert.equal(r.status, 'found');
        }
      }
      // Each lookup is at most two requests (/keys/{kid}, then /keys). Lookups that start a
      // cooldown are at most one per cooldown; the others each find a key we did not hold.
      const bound = 2 * (Math.floor((now - start) / COOLDOWN) + 1 + published.size);
      assert.ok(requests <= bound, `${requests} requests to the peer in ${now - start} ms (bound ${bound})`);
    }),
    { numRuns: 300 },
  );
});
