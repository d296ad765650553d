// src/federation/jws.ts signs on the calling thread; jose (which every verifier here uses) must
// accept each token exactly as it accepts its own, and refuse a tampered one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SignJWT, compactVerify, decodeProtectedHeader, generateKeyPair, jwtVerify } from 'jose';
import { signCompact, syncSigner } from '../src/federation/jws.js';
import { SIGNING_ALGORITHMS } from '../src/federation/keys.js';

const keyPairs = Promise.all(SIGNING_ALGORITHMS.map(async (alg) => ({ alg, ...(await generateKeyPair(alg, { extractable: false })) })));

/** JSON objects as payloads: any member names, nested values, non-ASCII text. */
const payload = fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 8 }).map((o) => JSON.parse(JSON.stringify(o)) as Record<string, unknown>);
const kid = fc.string({ minLength: 1, maxLength: 43 });

test('property: jose verifies every token signCompact makes, for every algorithm, with the payload and header intact', async () => {
  const pairs = await keyPairs;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...pairs), payload, kid, async ({ alg, privateKey, publicKey }, body, k) => {
      const token = signCompact(syncSigner(alg, privateKey), { kid: k, typ: 'JWT' }, body);
      const { payload: bytes, protectedHeader } = await compactVerify(token, publicKey, { algorithms: [alg] });
      assert.deepEqual(JSON.parse(new TextDecoder().decode(bytes)), body);
      assert.deepEqual(protectedHeader, { alg, kid: k, typ: 'JWT' });
    }),
    { numRuns: 60 },
  );
});

test('property: a token with any byte of its signing input or signature changed fails jose verification', async () => {
  const pairs = await keyPairs;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...pairs), payload, fc.nat(), fc.integer({ min: 1, max: 63 }), async ({ alg, privateKey, publicKey }, body, at, flip) => {
      const token = signCompact(syncSigner(alg, privateKey), { kid: 'k' }, body);
      const i = at % token.length;
      if (token[i] === '.') return;
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const changed = alphabet[(alphabet.indexOf(token[i]!) + flip) % 64]!;
      const tampered = token.slice(0, i) + changed + token.slice(i + 1);
      // A change in the last character's unused low bits may decode to the same bytes.
      if (Buffer.from(tampered.split('.')[2]!, 'base64url').equals(Buffer.from(token.split('.')[2]!, 'base64url')) && tampered.split('.').slice(0, 2).join('.') === token.split('.').slice(0, 2).join('.')) return;
      await assert.rejects(compactVerify(tampered, publicKey, { algorithms: [alg] }));
    }),
    { numRuns: 80 },
  );
});

test('a header cannot name another algorithm than the key signs with', async () => {
  const { privateKey, publicKey } = (await keyPairs).find((p) => p.alg === 'ES256')!;
  const token = signCompact(syncSigner('ES256', privateKey), { alg: 'none', kid: 'k' }, { a: 1 });
  assert.equal(decodeProtectedHeader(token).alg, 'ES256');
  assert.equal((await jwtVerify(token, publicKey, { algorithms: ['ES256'] })).payload.a, 1);
});

test('the same claims signed by jose and by signCompact verify alike; ECDSA signatures are 64 bytes (IEEE P1363, not DER)', async () => {
  const { privateKey, publicKey } = (await keyPairs).find((p) => p.alg === 'ES256')!;
  const claims = { iss: 'a.example', aud: 'b.example', sub: 'a.example', exp: Math.floor(Date.now() / 1000) + 60 };
  const ours = signCompact(syncSigner('ES256', privateKey), { kid: 'k', typ: 'JWT' }, claims);
  const theirs = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'JWT' }).sign(privateKey);
  assert.equal(ours.split('.')[0], theirs.split('.')[0]);
  assert.equal(ours.split('.')[1], theirs.split('.')[1]);
  assert.equal(Buffer.from(ours.split('.')[2]!, 'base64url').length, 64);
  for (const t of [ours, theirs]) assert.deepEqual((await jwtVerify(t, publicKey, { algorithms: ['ES256'] })).payload, claims);
});

test('a public key or an unknown algorithm is refused when the signer is made', async () => {
  const { publicKey, privateKey } = (await keyPairs).find((p) => p.alg === 'ES256')!;
  assert.throws(() => syncSigner('ES256', publicKey), /private key/);
  assert.throws(() => syncSigner('HS256', privateKey), /unsupported signing algorithm HS256/);
});
