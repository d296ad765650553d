// Inbound federation authentication end to end: real SQLite files, a real HTTP key server on
// 127.0.0.1 serving the peers' JWK sets, tokens signed by the peers' SigningKeys.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import { openStorage, type Storage } from '../src/storage/db.js';
import { databaseUrl } from './helpers/database.js';
import { SigningKeys } from '../src/federation/keys.js';
import { PeerKeyCache, PeerUnavailableError, type FetchJson } from '../src/federation/peer-keys.js';
import { FederationVerifier } from '../src/federation/verify.js';

const OUR = 'us.example';
const PEER = 'peer.example';
const SHORT = 'short.example'; // a peer with a short key grace period
const CUSTOM = 'custom.example'; // a peer whose key server answers whatever the test sets
const GONE = 'gone.example'; // a peer whose key server does not listen
const SKEW = 60_000;
const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);

class TestClock {
  constructor(public t = T0) {}
  now(): number {
    return this.t;
  }
}

type Mode = 'normal' | 'set-only' | 'down' | 'garbage';
interface Peer {
  keys: SigningKeys | null;
  clock: TestClock;
  mode: Mode;
  requests: string[];
  custom?: (path: string) => { status: number; body: string };
}

const dir = mkdtempSync(join(tmpdir(), 'intertalk-verify-'));
const storages: Storage[] = [];
const peers = new Map<string, Peer>();
const routes = new Map<string, { base: string; insecure: boolean }>();
let server: Server;
let ours: Storage;
let ourClock: TestClock;
let peer: Peer;
let shortPeer: Peer;
let customPeer: Peer;

async function storage(name: string): Promise<Storage> {
  const s = await openStorage(await databaseUrl(dir, `${name}.db`));
  storages.push(s);
  return s;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const [, prefix = '', ...rest] = url.pathname.split('/');
  const p = peers.get(prefix);
  const path = `/${rest.join('/')}`;
  const send = (status: number, body: string) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body);
  };
  if (!p) return send(404, '{"error":"not_found"}');
  p.requests.push(path);
  if (p.custom) {
    const r = p.custom(path);
    return send(r.status, r.body);
  }
  if (p.mode === 'down') return send(500, '{"error":"internal"}');
  if (p.mode === 'garbage') return send(200, '<html>this is not json');
  if (rest.length === 1 && rest[0] === 'keys') return send(200, JSON.stringify(await p.keys!.publicJwks()));
  if (rest.length === 2 && rest[0] === 'keys') {
    if (p.mode === 'set-only') return send(404, '{"error":"not_found"}');
    const jwk = await p.keys!.publicJwk(decodeURIComponent(rest[1]!));
    return jwk ? send(200, JSON.stringify(jwk)) : send(404, '{"error":"not_found"}');
  }
  return send(404, '{"error":"not_found"}');
}

/** The fetcher the verifier uses: plain fetch against the test server, per the FetchJson contract. */
const fetchJson: FetchJson = async (domain, path) => {
  const route = routes.get(domain);
  if (!route) throw new PeerUnavailableError(`no route to ${domain}`);
  let res: Response;
  try {
    res = await fetch(route.base + path, { signal: AbortSignal.timeout(2000) });
  } catch (err) {
    throw new PeerUnavailableError(`${domain}: ${(err as Error).message}`);
  }
  const text = await res.text();
  if (res.status === 404) return null;
  if (res.status >= 500) throw new PeerUnavailableError(`${domain}: HTTP ${res.status}`);
  if (!res.ok) throw new Error(`${domain}: HTTP ${res.status}`);
  return { json: JSON.parse(text) as unknown, insecure: route.insecure };
};

function newPeer(keys: SigningKeys | null, clock: TestClock): Peer {
  return { keys, clock, mode: 'normal', requests: [] };
}

before(async () => {
  ours = await storage('ours');
  const peerClock = new TestClock();
  peer = newPeer(new SigningKeys((await storage('peer')).db, { domain: PEER, clock: peerClock, graceMs: 5 * 60_000 }), peerClock);
  await peer.keys!.ensure();
  const shortClock = new TestClock();
  shortPeer = newPeer(new SigningKeys((await storage('short')).db, { domain: SHORT, clock: shortClock, graceMs: 10_000 }), shortClock);
  await shortPeer.keys!.ensure();
  customPeer = newPeer(null, new TestClock());
  peers.set('peer', peer).set('short', shortPeer).set('custom', customPeer);

  server = createServer((req, res) => {
    handle(req, res).catch(() => {
      res.statusCode = 500;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  routes.set(PEER, { base: `http://127.0.0.1:${port}/peer`, insecure: false });
  routes.set(SHORT, { base: `http://127.0.0.1:${port}/short`, insecure: true });
  routes.set(CUSTOM, { base: `http://127.0.0.1:${port}/custom`, insecure: false });

  // A port nobody listens on: bind, note the port, close.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const deadPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  routes.set(GONE, { base: `http://127.0.0.1:${deadPort}`, insecure: false });
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  for (const s of storages) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  for (const p of peers.values()) {
    p.mode = 'normal';
    p.requests = [];
    delete p.custom;
  }
  ourClock = new TestClock(peer.clock.t);
});

function makeVerifier(db = ours.db, clock: TestClock = ourClock) {
  const cache = new PeerKeyCache({ fetchJson, clock, cooldownMs: 30_000 });
  const verifier = new FederationVerifier({ db, keys: cache, domain: OUR, clock, skewMs: SKEW });
  return { cache, verifier };
}

const alice = 'alice@peer.example';
const msg = (from = alice, to = [alice, 'bob@us.example']) => ({ from, to });
const body = (m: { from: string; to: string[] }, text = 'hi') => JSON.stringify({ ...m, message: text, sentAt: '2024-05-01T12:00:00Z', id: 'm1' });
const signAs = (p: Peer, sub = alice, aud = OUR) => p.keys!.sign({ aud, sub });
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function currentPeerJwk(p: Peer = peer): Promise<JWK> {
  return (await p.keys!.publicJwks()).keys[0]!;
}

function assertRefused(r: Awaited<ReturnType<FederationVerifier['verify']>>, status: number, error: string): void {
  assert.equal(r.ok, false, `expected ${status} ${error}, got ok`);
  if (!r.ok) {
    assert.equal(r.status, status, `${r.error}: ${r.message}`);
    assert.equal(r.error, error, r.message);
  }
}

test('a correctly signed token for the message is accepted', async () => {
  const { verifier } = makeVerifier();
  const token = await signAs(peer);
  const r = await verifier.verify(`Bearer ${token}`, body(msg()), msg());
  assert.equal(r.ok, true, r.ok ? '' : `${r.error}: ${r.message}`);
  if (r.ok) {
    assert.equal(r.iss, PEER);
    assert.equal(r.sub, alice);
    assert.equal(typeof r.jti, 'string');
    assert.equal(r.insecureKeys, false);
  }
  // The key came from GET /keys/{kid}.
  assert.deepEqual(peer.requests, [`/keys/${encodeURIComponent((await currentPeerJwk()).kid!)}`]);
});

test('the Authorization header: Bearer (any case) or a bare JWT; missing or junk → 401', async () => {
  const { verifier } = makeVerifier();
  for (const header of [`bearer ${await signAs(peer)}`, `BEARER   ${await signAs(peer)}`, await signAs(peer)]) {
    const r = await verifier.verify(header, body(msg()), msg());
    assert.equal(r.ok, true, header);
  }
  assertRefused(await verifier.verify(undefined, body(msg()), msg()), 401, 'missing_token');
  assertRefused(await verifier.verify('', body(msg()), msg()), 401, 'missing_token');
  assertRefused(await verifier.verify('Bearer not-a-jwt', body(msg()), msg()), 401, 'invalid_token');
  assertRefused(await verifier.verify(`Basic ${Buffer.from('a:b').toString('base64')}`, body(msg()), msg()), 401, 'invalid_token');
  assertRefused(await verifier.verify('Bearer a.b.c', body(msg()), msg()), 401, 'invalid_token');
  assertRefused(await verifier.verify(`Bearer ${'x'.repeat(20_000)}.y.z`, body(msg()), msg()), 401, 'invalid_token');
});

test('the issuer\'s key is fetched over insecure transport → insecureKeys', async () => {
  const { verifier } = makeVerifier();
  const from = 'sam@short.example';
  const r = await verifier.verify(`Bearer ${await signAs(shortPeer, from)}`, body(msg(from, [from, 'bob@us.example'])), msg(from, [from, 'bob@us.example']));
  assert.equal(r.ok, true);
  if (r.ok) assert.equal(r.insecureKeys, true);
});

test('a tampered signature is refused with 401', async () => {
  const { verifier } = makeVerifier();
  const token = await signAs(peer);
  const [h, p, s] = token.split('.') as [string, string, string];
  const i = 10;
  const flipped = `${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
  assertRefused(await verifier.verify(`Bearer ${h}.${p}.${flipped}`, body(msg()), msg()), 401, 'bad_signature');
  // A payload changed under a valid signature (different sub is caught by claims; change jti).
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  assertRefused(await verifier.verify(`Bearer ${h}.${b64({ ...payload, jti: 'other' })}.${s}`, body(msg()), msg()), 401, 'bad_signature');
});

test('a token signed by another key under the peer\'s kid is refused with 401 (one refresh at most)', async () => {
  const { verifier } = makeVerifier();
  const kid = (await currentPeerJwk()).kid!;
  assert.equal((await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg())).ok, true); // caches the key
  const { privateKey } = await generateKeyPair('ES256');
  const now = Math.floor(ourClock.t / 1000);
  const forged = await new SignJWT({ iss: PEER, sub: alice, aud: OUR, iat: now, exp: now + 60, jti: 'forged-1' })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
    .sign(privateKey);
  peer.requests = [];
  assertRefused(await verifier.verify(`Bearer ${forged}`, body(msg()), msg()), 401, 'bad_signature');
  assert.equal(peer.requests.length, 1, 'one forced refresh');
  // Within the cooldown another forgery does not make us ask the peer again.
  assertRefused(await verifier.verify(`Bearer ${forged}`, body(msg(), 'again'), msg()), 401, 'bad_signature');
  assert.equal(peer.requests.length, 1);
});

test('alg "none" is refused with 401 and no key is fetched', async () => {
  const { verifier } = makeVerifier();
  const kid = (await currentPeerJwk()).kid!;
  const now = Math.floor(ourClock.t / 1000);
  const claims = { iss: PEER, sub: alice, aud: OUR, iat: now, exp: now + 60, jti: 'none-1' };
  for (const alg of ['none', 'None', 'NONE']) {
    const token = `${b64({ alg, kid, typ: 'JWT' })}.${b64(claims)}.`;
    assertRefused(await verifier.verify(`Bearer ${token}`, body(msg()), msg()), 401, 'invalid_token');
  }
  assert.deepEqual(peer.requests, []);
});

test('an HS256 token MACed with the peer\'s public key bytes is refused with 401', async () => {
  const { verifier } = makeVerifier();
  const jwk = await currentPeerJwk();
  const spki = await exportSPKI((await importJWK(jwk, 'ES256')) as CryptoKey);
  const now = Math.floor(ourClock.t / 1000);
  const secrets = [JSON.stringify(jwk), spki, Buffer.from(jwk.x!, 'base64url')];
  for (const [i, secret] of secrets.entries()) {
    for (const alg of ['HS256', 'HS384', 'HS512']) {
      const input = `${b64({ alg, kid: jwk.kid, typ: 'JWT' })}.${b64({ iss: PEER, sub: alice, aud: OUR, iat: now, exp: now + 60, jti: `hmac-${i}-${alg}` })}`;
      const mac = createHmac(`sha${alg.slice(2)}`, secret).update(input).digest('base64url');
      assertRefused(await verifier.verify(`Bearer ${input}.${mac}`, body(msg()), msg()), 401, 'invalid_token');
    }
  }
});

test('claims: wrong audience, iss ≠ domain of sub, sub ≠ from → 401; from ∉ to → 403', async () => {
  const { verifier } = makeVerifier();
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer, alice, 'other.example')}`, body(msg()), msg()), 401, 'wrong_audience');

  const mallory = 'mallory@evil.example';
  const m1 = msg(mallory, [mallory, 'bob@us.example']);
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer, mallory)}`, body(m1), m1), 401, 'issuer_mismatch');

  const carol = 'carol@peer.example';
  const m2 = msg(carol, [carol, alice, 'bob@us.example']);
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer, alice)}`, body(m2), m2), 401, 'sender_mismatch');

  const m3 = msg(alice, ['bob@us.example']);
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer)}`, body(m3), m3), 403, 'sender_not_participant');

  const m4 = msg(alice, [alice, 'dave@third.example']);
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer)}`, body(m4), m4), 403, 'no_local_recipient');
  assert.deepEqual(peer.requests, [], 'claims are checked before any key is fetched');
});

test('an expired token is refused with 401 (after the allowed skew)', async () => {
  const { verifier } = makeVerifier();
  const token = await signAs(peer); // exp = iat + 60 s
  ourClock.t = peer.clock.t + 60_000 + SKEW - 1000;
  assert.equal((await verifier.verify(`Bearer ${token}`, body(msg()), msg())).ok, true, 'still within skew');
  ourClock.t = peer.clock.t + 60_000 + SKEW + 1000;
  assertRefused(await verifier.verify(`Bearer ${token}`, body(msg()), msg()), 401, 'token_expired');
});

test('a token from the future (iat/nbf beyond the skew) is refused with 401', async () => {
  const { verifier } = makeVerifier();
  ourClock.t = peer.clock.t - SKEW - 2000;
  assertRefused(await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg()), 401, 'token_not_yet_valid');
  ourClock.t = peer.clock.t - SKEW + 2000;
  assert.equal((await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg())).ok, true);
});

test('jti replay: a different request with a used token → 401; the identical retry → accepted', async () => {
  const { verifier } = makeVerifier();
  const token = await signAs(peer);
  const first = await verifier.verify(`Bearer ${token}`, body(msg()), msg());
  assert.equal(first.ok, true);
  const retry = await verifier.verify(`Bearer ${token}`, Buffer.from(body(msg())), msg());
  assert.equal(retry.ok, true, 'same token + same body is an idempotent retry');
  assertRefused(await verifier.verify(`Bearer ${token}`, body(msg(), 'something else'), msg()), 401, 'replayed');

  // Another instance on the same database (its own connection and caches) sees it too.
  const otherDb = await openStorage(await databaseUrl(dir, 'ours.db'));
  storages.push(otherDb);
  const { verifier: other } = makeVerifier(otherDb.db);
  assertRefused(await other.verify(`Bearer ${token}`, body(msg(), 'something else'), msg()), 401, 'replayed');
  assert.equal((await other.verify(`Bearer ${token}`, body(msg()), msg())).ok, true);

  const rows = await ours.db.selectFrom('inbound_jti').selectAll().where('iss', '=', PEER).execute();
  const row = rows.find((r) => r.jti === (first.ok ? first.jti : ''));
  assert.ok(row);
  assert.equal(Number(row.expires_at), (Math.floor(peer.clock.t / 1000) + 60) * 1000 + SKEW);
});

test('expired jti rows are cleaned up', async () => {
  const { verifier } = makeVerifier();
  await ours.db.insertInto('inbound_jti').values({ iss: 'old.example', jti: 'stale', expires_at: ourClock.t - 1, request_hash: 'x' }).execute();
  ourClock.t += 61_000; // past the cleanup interval of any earlier test's verifier... this one is new
  peer.clock.t = ourClock.t;
  assert.equal((await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg())).ok, true);
  const stale = await ours.db.selectFrom('inbound_jti').selectAll().where('iss', '=', 'old.example').execute();
  assert.deepEqual(stale, []);
});

test('an unknown kid → 401 unknown_key, also within the cooldown; a kid first seen during the cooldown → 503, then 401 once asked', async () => {
  const { verifier } = makeVerifier();
  // Keys for peer.example that the peer does not publish.
  const rogueDb = await storage('rogue');
  const rogue = newPeer(new SigningKeys(rogueDb.db, { domain: PEER, clock: peer.clock, graceMs: 1000 }), peer.clock);
  const token = await signAs(rogue);
  assertRefused(await verifier.verify(`Bearer ${token}`, body(msg()), msg()), 401, 'unknown_key');
  assert.equal(peer.requests.length, 2, '/keys/{kid} then /keys');
  assert.equal(peer.requests[1], '/keys');

  // The same kid again: the peer answered after we first heard of it, so it is refused at once.
  assertRefused(await verifier.verify(`Bearer ${await signAs(rogue)}`, body(msg()), msg()), 401, 'unknown_key');
  assert.equal(peer.requests.length, 2, 'no fetch during the cooldown');

  // Another kid, first heard of during the cooldown: we could not ask yet.
  const rogue2Db = await storage('rogue2');
  const rogue2 = newPeer(new SigningKeys(rogue2Db.db, { domain: PEER, clock: peer.clock, graceMs: 1000 }), peer.clock);
  const again = await verifier.verify(`Bearer ${await signAs(rogue2)}`, body(msg()), msg());
  assertRefused(again, 503, 'keys_unavailable');
  if (!again.ok) assert.ok(again.retryAfterSeconds! >= 1 && again.retryAfterSeconds! <= 30, String(again.retryAfterSeconds));
  assert.equal(peer.requests.length, 2, 'no fetch during the cooldown');

  ourClock.t += 30_000;
  peer.clock.t = ourClock.t;
  assertRefused(await verifier.verify(`Bearer ${await signAs(rogue2)}`, body(msg()), msg()), 401, 'unknown_key');
  assert.equal(peer.requests.length, 4);
  // The genuine key of the same issuer is still fine meanwhile (it is a different kid, cached or fetched).
});

test('the key server is down (5xx or connection refused) → 503 keys_unavailable with Retry-After', async () => {
  const { verifier } = makeVerifier();
  peer.mode = 'down';
  const r = await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg());
  assertRefused(r, 503, 'keys_unavailable');
  if (!r.ok) assert.equal(r.retryAfterSeconds, 30);
  assert.deepEqual(peer.requests.map((p) => p.split('/').slice(0, 2).join('/')), ['/keys', '/keys'], '/keys/{kid}, then the /keys set');

  // Up again, but we wait out the cooldown before asking.
  peer.mode = 'normal';
  ourClock.t += 10_000;
  peer.clock.t = ourClock.t;
  const during = await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg());
  assertRefused(during, 503, 'keys_unavailable');
  if (!during.ok) assert.equal(during.retryAfterSeconds, 20);
  ourClock.t += 20_000;
  peer.clock.t = ourClock.t;
  assert.equal((await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg())).ok, true);

  // Nobody listening at all.
  const goneKeys = new SigningKeys((await storage('gone')).db, { domain: GONE, clock: peer.clock, graceMs: 1000 });
  const from = 'gil@gone.example';
  const m = msg(from, [from, 'bob@us.example']);
  const gone = await verifier.verify(`Bearer ${await goneKeys.sign({ aud: OUR, sub: from })}`, body(m), m);
  assertRefused(gone, 503, 'keys_unavailable');
  if (!gone.ok) assert.ok(gone.retryAfterSeconds! >= 1);
});

test('a peer that only serves the /keys set is supported (404 or an error for /keys/{kid})', async () => {
  const { verifier } = makeVerifier();
  peer.mode = 'set-only';
  assert.equal((await verifier.verify(`Bearer ${await signAs(peer)}`, body(msg()), msg())).ok, true);
  assert.deepEqual(peer.requests.map((p) => p.split('/').slice(0, 2).join('/')), ['/keys', '/keys']);

  const from = 'cat@custom.example';
  const m = msg(from, [from, 'bob@us.example']);
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'only-set' };
  customPeer.custom = (path) => (path === '/keys' ? { status: 200, body: JSON.stringify({ keys: [jwk] }) } : { status: 503, body: '{}' });
  const now = Math.floor(ourClock.t / 1000);
  const token = await new SignJWT({ iss: CUSTOM, sub: from, aud: OUR, iat: now, exp: now + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'only-set' }).sign(privateKey);
  const r = await makeVerifier().verifier.verify(`Bearer ${token}`, body(m), m);
  assert.equal(r.ok, true, r.ok ? '' : r.message);
  if (r.ok) assert.equal(r.jti, null, 'a token without jti is accepted');
});

test('a peer rotation is picked up: new kid fetched, retired key still verifies during the grace period', async () => {
  const { verifier } = makeVerifier();
  const before = await signAs(peer);
  assert.equal((await verifier.verify(`Bearer ${before}`, body(msg()), msg())).ok, true);
  const oldKid = (await currentPeerJwk()).kid!;
  const { kid: newKid } = await peer.keys!.rotate('EdDSA');
  const afterRotation = await signAs(peer);
  const r = await verifier.verify(`Bearer ${afterRotation}`, body(msg()), msg());
  assert.equal(r.ok, true, r.ok ? '' : r.message);
  assert.ok(peer.requests.includes(`/keys/${encodeURIComponent(newKid)}`));
  // A token signed with the old key just before the rotation, seen first by a fresh instance.
  const fresh = makeVerifier().verifier;
  assert.equal((await fresh.verify(`Bearer ${before}`, body(msg()), msg())).ok, true);
  assert.ok((await peer.keys!.publicJwks()).keys.some((k) => k.kid === oldKid));
});

test('a retired key disappears after its grace period: then unknown_key', async () => {
  const from = 'sam@short.example';
  const m = msg(from, [from, 'bob@us.example']);
  const clock = new TestClock(shortPeer.clock.t);
  const oldToken = await shortPeer.keys!.sign({ aud: OUR, sub: from });
  const oldKid = (await shortPeer.keys!.publicJwks()).keys[0]!.kid!;
  await shortPeer.keys!.rotate();
  // During the grace period (10 s) the retired key verifies.
  shortPeer.clock.t += 5_000;
  clock.t = shortPeer.clock.t;
  const during = makeVerifier(ours.db, clock).verifier;
  assert.equal((await during.verify(`Bearer ${oldToken}`, body(m), m)).ok, true);
  // After it the key is gone from /keys and /keys/{kid}; the token itself has not expired yet.
  shortPeer.clock.t += 6_000;
  clock.t = shortPeer.clock.t;
  assert.equal(await shortPeer.keys!.publicJwk(oldKid), null);
  const afterGrace = makeVerifier(ours.db, clock).verifier;
  assertRefused(await afterGrace.verify(`Bearer ${oldToken}`, body(m), m), 401, 'unknown_key');
  // The new key works.
  const newToken = await shortPeer.keys!.sign({ aud: OUR, sub: from });
  clock.t += 30_000; // past the cooldown the unknown kid started
  assert.equal((await afterGrace.verify(`Bearer ${newToken}`, body(m), m)).ok, true);
});

test('a key replaced under the same kid is picked up by one forced refresh', async () => {
  const { verifier } = makeVerifier();
  const kid = 'stable-kid';
  const from = 'cat@custom.example';
  const m = msg(from, [from, 'bob@us.example']);
  const a = await generateKeyPair('ES256', { extractable: true });
  const b = await generateKeyPair('ES256', { extractable: true });
  const publish = async (k: CryptoKey) => {
    const jwk = { ...(await exportJWK(k)), kid, alg: 'ES256', use: 'sig' };
    customPeer.custom = (path) => (path === '/keys' || path === `/keys/${kid}` ? { status: 200, body: JSON.stringify(path === '/keys' ? { keys: [jwk] } : jwk) } : { status: 404, body: '{}' });
  };
  const sign = async (k: CryptoKey, jti: string) => {
    const now = Math.floor(ourClock.t / 1000);
    return new SignJWT({ iss: CUSTOM, sub: from, aud: OUR, iat: now, exp: now + 60, jti }).setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' }).sign(k);
  };
  await publish(a.publicKey);
  assert.equal((await verifier.verify(`Bearer ${await sign(a.privateKey, 'a1')}`, body(m), m)).ok, true);
  assert.equal(customPeer.requests.length, 1);
  await publish(b.publicKey);
  const r = await verifier.verify(`Bearer ${await sign(b.privateKey, 'b1')}`, body(m), m);
  assert.equal(r.ok, true, r.ok ? '' : r.message);
  assert.equal(customPeer.requests.length, 2, 'one refresh');
  // The cached key is now B: A's tokens fail, and the cooldown prevents another refresh.
  assertRefused(await verifier.verify(`Bearer ${await sign(a.privateKey, 'a2')}`, body(m), m), 401, 'bad_signature');
  assert.equal(customPeer.requests.length, 2);
});

test('peer misbehaviour: private members, symmetric keys, junk JSON → refused, never thrown', async () => {
  const from = 'cat@custom.example';
  const m = msg(from, [from, 'bob@us.example']);
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const pub = { ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' };
  const priv = { ...(await exportJWK(privateKey)), kid: 'k', alg: 'ES256' };
  const now = () => Math.floor(ourClock.t / 1000);
  let jti = 0;
  const token = () =>
    new SignJWT({ iss: CUSTOM, sub: from, aud: OUR, iat: now(), exp: now() + 60, jti: `j${jti++}` }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(privateKey);
  // A string is served as the raw body, anything else as JSON.
  const serve = (single: unknown, set: unknown) => {
    customPeer.custom = (path) => {
      const v = path === '/keys' ? set : single;
      return { status: 200, body: typeof v === 'string' ? v : JSON.stringify(v) };
    };
  };
  const cases: Array<[string, unknown, unknown, number, string]> = [
    ['private JWK', priv, { keys: [priv] }, 401, 'unknown_key'],
    ['oct key', { kty: 'oct', k: 'c2VjcmV0', kid: 'k', alg: 'HS256' }, { keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'k' }] }, 401, 'unknown_key'],
    ['use enc', { ...pub, use: 'enc' }, { keys: [{ ...pub, use: 'enc' }] }, 401, 'unknown_key'],
    ['not a JWKS', 'null', { keys: 'nope' }, 401, 'unknown_key'],
    ['JSON scalars', 42, 'true', 401, 'unknown_key'],
    ['wrong kid', { ...pub, kid: 'other' }, { keys: [{ ...pub, kid: 'other' }] }, 401, 'unknown_key'],
    ['duplicate kid', 'null', { keys: [pub, { ...pub, x: pub.y }] }, 401, 'unknown_key'],
    ['alg mismatch', { ...pub, alg: 'RS256' }, { keys: [] }, 401, 'invalid_token'],
    ['junk', '<html>', '<html>', 503, 'keys_unavailable'],
  ];
  for (const [name, single, set, status, error] of cases) {
    const { verifier } = makeVerifier();
    serve(single, set);
    const r = await verifier.verify(`Bearer ${await token()}`, body(m), m);
    assert.equal(r.ok, false, name);
    if (!r.ok) assert.deepEqual([r.status, r.error], [status, error], `${name}: ${r.message}`);
  }
  // And the good key works through the same fetcher.
  const { verifier } = makeVerifier();
  serve(pub, { keys: [pub] });
  assert.equal((await verifier.verify(`Bearer ${await token()}`, body(m), m)).ok, true);
});

test('PeerKeyCache: concurrent lookups share one fetch; cached keys expire after maxAgeMs', async () => {
  const clock = new TestClock(peer.clock.t);
  const cache = new PeerKeyCache({ fetchJson, clock, maxAgeMs: 60_000 });
  const kid = (await currentPeerJwk()).kid!;
  const results = await Promise.all(Array.from({ length: 8 }, () => cache.getKey(PEER, kid)));
  assert.ok(results.every((r) => r.status === 'found'));
  assert.equal(peer.requests.length, 1);
  assert.equal((await cache.getKey('PEER.example', kid)).status, 'found');
  assert.equal(peer.requests.length, 1, 'issuer names are case-insensitive; answered from cache');
  clock.t += 60_000;
  const r = await cache.getKey(PEER, kid);
  assert.equal(r.status, 'found');
  if (r.status === 'found') assert.equal(r.cached, false);
  assert.equal(peer.requests.length, 2);
  for (const k of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) if (r.status === 'found') assert.equal(Object.hasOwn(r.jwk, k), false);
});
