import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose';
import { openStorage, type Storage } from '../src/storage/db.js';
import { PRIVATE_MEMBERS, SigningKeys, publicPart, type SigningAlgorithm } from '../src/federation/keys.js';
import { databaseUrl } from './helpers/database.js';

const dir = mkdtempSync(join(tmpdir(), 'intertalk-keys-'));
const opened: Storage[] = [];
after(async () => {
  for (const s of opened) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function freshDb(): Promise<{ url: string; storage: Storage }> {
  const url = await databaseUrl(dir, `keys-${n++}.db`);
  const storage = await openStorage(url);
  opened.push(storage);
  return { url, storage };
}

class TestClock {
  constructor(public t = Date.UTC(2024, 4, 1, 12, 0, 0)) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

const GRACE = 10 * 60_000;

function assertPublicOnly(jwk: JWK): void {
  for (const m of PRIVATE_MEMBERS) assert.equal(Object.hasOwn(jwk, m), false, `published JWK has private member ${m}`);
  assert.equal(typeof jwk.kid, 'string');
  assert.equal(typeof jwk.alg, 'string');
  assert.equal(jwk.use, 'sig');
  const allowed: Record<string, string[]> = { EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'], RSA: ['n', 'e'] };
  assert.ok(jwk.kty && allowed[jwk.kty], `unexpected kty ${jwk.kty}`);
  assert.deepEqual(Object.keys(jwk).sort(), ['kty', 'kid', 'alg', 'use', ...allowed[jwk.kty]!].sort());
}

test('ensure() creates one active ES256 key whose kid is its RFC 7638 thumbprint', async () => {
  const { storage } = await freshDb();
  const clock = new TestClock();
  const keys = new SigningKeys(storage.db, { domain: 'us.example', clock, graceMs: GRACE });
  await keys.ensure();
  await keys.ensure();
  const list = await keys.list();
  assert.equal(list.length, 1);
  assert.equal(list[0]!.alg, 'ES256');
  assert.equal(list[0]!.active, true);
  assert.equal(list[0]!.retiredAt, null);
  assert.equal(list[0]!.createdAt, clock.t);
  const { keys: jwks } = await keys.publicJwks();
  assert.equal(jwks.length, 1);
  const jwk = jwks[0]!;
  assertPublicOnly(jwk);
  assert.equal(jwk.kid, list[0]!.kid);
  assert.equal(jwk.kid, await calculateJwkThumbprint({ kty: jwk.kty!, crv: jwk.crv!, x: jwk.x!, y: jwk.y! } as JWK));
  assert.deepEqual(await keys.publicJwk(jwk.kid!), jwk);
  assert.equal(await keys.publicJwk('no-such-kid'), null);
});

test('ensure() racing on several instances (separate connections) leaves exactly one active key', async () => {
  const { url, storage } = await freshDb();
  const others = await Promise.all([openStorage(url), openStorage(url), openStorage(url)]);
  opened.push(...others);
  const clock = new TestClock();
  const instances = [storage, ...others].map((s) => new SigningKeys(s.db, { domain: 'us.example', clock, graceMs: GRACE }));
  await Promise.all(instances.map((k) => k.ensure()));
  const list = await instances[0]!.list();
  assert.equal(list.filter((k) => k.active).length, 1, JSON.stringify(list));
  // Every instance signs with that same key.
  const activeKid = list.find((k) => k.active)!.kid;
  for (const k of instances) {
    const token = await k.sign({ aud: 'peer.example', sub: 'alice@us.example' });
    assert.equal(decodeProtectedHeader(token).kid, activeKid);
  }
  // Keys that lost the race are retired but still published for the grace period.
  const published = (await instances[1]!.publicJwks()).keys.map((k) => k.kid).sort();
  assert.deepEqual(published, list.map((k) => k.kid).sort());
});

test('sign() produces a JWT with the required header and claims that verifies with the published key', async () => {
  const { storage } = await freshDb();
  const clock = new TestClock(Date.UTC(2024, 4, 1, 12, 0, 0, 500));
  const keys = new SigningKeys(storage.db, { domain: 'US.Example', clock, graceMs: GRACE });
  await keys.ensure();
  const token = await keys.sign({ aud: 'peer.example', sub: 'alice@us.example' }, { iss: 'evil.example', exp: 9e9, custom: 'x' });
  const header = decodeProtectedHeader(token);
  const [{ kid }] = (await keys.publicJwks()).keys as [JWK];
  assert.deepEqual(header, { alg: 'ES256', kid, typ: 'JWT' });
  const claims = decodeJwt(token);
  const iat = Math.floor(clock.t / 1000);
  assert.equal(claims.iss, 'us.example');
  assert.equal(claims.aud, 'peer.example');
  assert.equal(claims.sub, 'alice@us.example');
  assert.equal(claims.iat, iat);
  assert.equal(claims.exp, iat + 60);
  assert.equal(claims.custom, 'x');
  assert.match(String(claims.jti), /^[A-Za-z0-9_-]{22}$/);
  const second = decodeJwt(await keys.sign({ aud: 'peer.example', sub: 'alice@us.example' }));
  assert.notEqual(second.jti, claims.jti);
  const pub = await keys.publicJwk(kid!);
  const verified = await jwtVerify(token, await importJWK(pub!, 'ES256'), { currentDate: new Date(clock.t), algorithms: ['ES256'] });
  assert.equal(verified.payload.sub, 'alice@us.example');
});

test('sign() creates a key on first use if ensure() was never called', async () => {
  const { storage } = await freshDb();
  const keys = new SigningKeys(storage.db, { domain: 'us.example', clock: new TestClock(), graceMs: GRACE });
  const token = await keys.sign({ aud: 'peer.example', sub: 'a@us.example' });
  assert.equal(decodeProtectedHeader(token).kid, (await keys.list())[0]!.kid);
});

test('rotate(): new key active, old one retired and published until the grace period ends', async () => {
  const { storage } = await freshDb();
  const clock = new TestClock();
  const keys = new SigningKeys(storage.db, { domain: 'us.example', clock, graceMs: GRACE });
  await keys.ensure();
  const [oldKey] = await keys.list();
  await keys.sign({ aud: 'peer.example', sub: 'a@us.example' }); // warm the signer cache
  await keys.publicJwks(); // and the JWKS cache
  clock.advance(1000);
  const { kid } = await keys.rotate('EdDSA');
  assert.notEqual(kid, oldKey!.kid);

  const list = await keys.list();
  const now = clock.t;
  assert.deepEqual(
    list.map((k) => ({ kid: k.kid, active: k.active, retiredAt: k.retiredAt, publishUntil: k.publishUntil, alg: k.alg })),
    [
      { kid, active: true, retiredAt: null, publishUntil: null, alg: 'EdDSA' },
      { kid: oldKey!.kid, active: false, retiredAt: now, publishUntil: now + GRACE, alg: 'ES256' },
    ],
  );
  // Caches are invalidated by rotate(): the new key signs and is published at once.
  assert.equal(decodeProtectedHeader(await keys.sign({ aud: 'p.example', sub: 'a@us.example' })).kid, kid);
  assert.deepEqual((await keys.publicJwks()).keys.map((k) => k.kid), [kid, oldKey!.kid]);
  assert.ok(await keys.publicJwk(oldKey!.kid));

  clock.advance(GRACE - 1);
  assert.deepEqual((await keys.publicJwks()).keys.map((k) => k.kid), [kid, oldKey!.kid]);
  clock.advance(1);
  assert.deepEqual((await keys.publicJwks()).keys.map((k) => k.kid), [kid], 'published exactly until publish_until');
  assert.equal(await keys.publicJwk(oldKey!.kid), null);
  assert.equal((await keys.list()).length, 2, 'the CLI still lists the retired key');
});

test('rotate() twice at the same clock reading still leaves the newest key active', async () => {
  const { storage } = await freshDb();
  const clock = new TestClock();
  const keys = new SigningKeys(storage.db, { domain: 'us.example', clock, graceMs: GRACE });
  await keys.ensure();
  const a = await keys.rotate();
  const b = await keys.rotate('ES384');
  const list = await keys.list();
  assert.deepEqual(list.filter((k) => k.active).map((k) => k.kid), [b.kid]);
  assert.equal(list.find((k) => k.kid === a.kid)!.active, false);
  assert.equal(decodeProtectedHeader(await keys.sign({ aud: 'p.example', sub: 'a@us.example' })).alg, 'ES384');
});

test('another instance\'s rotation is picked up by sign() within 30 s', async () => {
  const { url, storage } = await freshDb();
  const other = await openStorage(url);
  opened.push(other);
  const clock = new TestClock();
  const a = new SigningKeys(storage.db, { domain: 'us.example', clock, graceMs: GRACE });
  const b = new SigningKeys(other.db, { domain: 'us.example', clock, graceMs: GRACE });
  await a.ensure();
  const first = decodeProtectedHeader(await a.sign({ aud: 'p.example', sub: 'x@us.example' })).kid;
  const { kid: rotated } = await b.rotate();
  clock.advance(5_000);
  assert.equal(decodeProtectedHeader(await a.sign({ aud: 'p.example', sub: 'x@us.example' })).kid, first, 'cached for a while');
  clock.advance(25_001);
  assert.equal(decodeProtectedHeader(await a.sign({ aud: 'p.example', sub: 'x@us.example' })).kid, rotated);
  // A's JWKS cache (a few seconds) also sees both keys.
  assert.deepEqual((await a.publicJwks()).keys.map((k) => k.kid), [rotated, first]);
});

test('property: publicJwks() never contains private members, for every algorithm', async () => {
  const { storage } = await freshDb();
  const clock = new TestClock();
  const keys = new SigningKeys(storage.db, { domain: 'us.example', clock, graceMs: GRACE });
  const algs = fc.constantFrom<SigningAlgorithm>('ES256', 'ES384', 'EdDSA', 'RS256');
  await fc.assert(
    fc.asyncProperty(fc.array(algs, { minLength: 1, maxLength: 3 }), fc.integer({ min: 0, max: 2 * GRACE }), async (seq, step) => {
      for (const alg of seq) {
        clock.advance(step);
        const { kid } = await keys.rotate(alg);
        const pub = await keys.publicJwk(kid);
        assert.ok(pub, 'the new key is published');
        assert.equal(pub.alg, alg);
        assertPublicOnly(pub);
      }
      const { keys: published } = await keys.publicJwks();
      assert.ok(published.length >= 1);
      for (const jwk of published) assertPublicOnly(jwk);
      // What is published is what verifies: import every key as a public key.
      for (const jwk of published) {
        const k = await importJWK(jwk, jwk.alg);
        assert.equal((k as { type?: string }).type, 'public');
      }
      // And the raw JSON served must not mention a private member either.
      const json = JSON.stringify({ keys: published });
      for (const m of PRIVATE_MEMBERS) assert.equal(json.includes(`"${m}":`), false, m);
    }),
    { numRuns: 8 },
  );
  // Every algorithm was exercised at least once across the runs above or explicitly here.
  for (const alg of ['ES256', 'ES384', 'EdDSA', 'RS256'] as const) {
    const { kid } = await keys.rotate(alg);
    assertPublicOnly((await keys.publicJwk(kid))!);
  }
});

test('property: publicPart() keeps only whitelisted public members of arbitrary JWK-like objects', () => {
  const member = fc.string({ minLength: 1, maxLength: 8 });
  fc.assert(
    fc.property(
      fc.constantFrom('EC', 'OKP', 'RSA', 'oct', 'AKP', 'weird'),
      fc.dictionary(fc.oneof(fc.constantFrom(...PRIVATE_MEMBERS, 'crv', 'x', 'y', 'n', 'e', 'kid', 'ext', 'key_ops'), member), fc.oneof(fc.string({ minLength: 1 }), fc.anything())),
      (kty, rest) => {
        const input = { ...rest, kty };
        const out = publicPart(input);
        if (out === null) return;
        assert.ok(['EC', 'OKP', 'RSA'].includes(kty));
        for (const m of PRIVATE_MEMBERS) assert.equal(Object.hasOwn(out, m), false);
        const allowed: Record<string, string[]> = { EC: ['kty', 'crv', 'x', 'y'], OKP: ['kty', 'crv', 'x'], RSA: ['kty', 'n', 'e'] };
        assert.deepEqual(Object.keys(out).sort(), allowed[kty]!.sort());
      },
    ),
    { numRuns: 500 },
  );
});
