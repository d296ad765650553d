// Hostile peers against a real provider: forged, replayed and mis-scoped federation requests to
// POST /messages must be refused with the right status and a JSON {error, message} body, and must
// store nothing. The attacker is a real HTTPS server (test/helpers/evil-peer.ts) with a
// certificate from the devnet CA, reached by the provider through INTERTALK_RESOLVE.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Agent, fetch } from 'undici';
import { readAnswer, startNetwork, type Network } from './helpers/network.js';
import type { Federation } from '../src/federation/service.js';
import { EvilPeer, Trap, hmacToken, peerKey, signToken, unsecuredToken, type PeerKey } from './helpers/evil-peer.js';
import { deliveries, eventually, fedUser, say } from './helpers/fed.js';

const US = 'chat.test';
const BLOCKER = 'blocker.test';
const EVIL = 'evil.test';
const BOB = `bob@${US}`;
const MALLORY = `mallory@${EVIL}`;

/** Domains served by the main fake peer; down.test has a server of its own (it gets stopped). */
const FAKE_DOMAINS = [EVIL, 'peer.test', 'unk.test', 'oct.test', 'plain.test', 'lo.test', 'ip.test', 'flood.test', 'dot.test', 'nul.test'];

interface Res {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

let net: Network;
let evil: EvilPeer;
let down: EvilPeer;
let trap: Trap;
const agents = new Map<string, Agent>();
const keys: Record<string, PeerKey> = {};

const nowS = () => Math.floor(Date.now() / 1000);

function claims(over: Record<string, unknown> = {}): Record<string, unknown> {
  const t = nowS();
  return { iss: EVIL, sub: MALLORY, aud: US, iat: t, exp: t + 60, jti: randomUUID(), ...over };
}

function message(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: `m-${randomUUID()}`, from: MALLORY, to: [MALLORY, BOB], sentAt: new Date(Date.now() - 1000).toISOString(), message: 'hello bob', ...over };
}

async function post(domain: string, token: string | null, body: unknown, opts: { raw?: boolean; contentType?: string } = {}): Promise<Res> {
  let agent = agents.get(domain);
  if (!agent) {
    agent = new Agent({ connect: { ca: net.ca.caCert, servername: domain } });
    agents.set(domain, agent);
  }
  const headers: Record<string, string> = { 'content-type': opts.contentType ?? 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${net.node(domain).url}/messages`, {
    method: 'POST',
    headers,
    body: opts.raw ? (body as string | Buffer) : JSON.stringify(body),
    dispatcher: agent,
  });
  return { status: res.status, headers: res.headers, ...(await readAnswer(res)) };
}

async function counts(domain: string): Promise<{ messages: number; conversations: number; members: number }> {
  const db = net.provider(domain).ctx.storage.db;
  const n = async (table: 'messages' | 'conversations' | 'conversation_members') =>
    Number((await db.selectFrom(table).select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
  return { messages: await n('messages'), conversations: await n('conversations'), members: await n('conversation_members') };
}

function assertErrorBody(res: Res, error?: string | RegExp): void {
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `not JSON: ${res.text.slice(0, 200)}`);
  assert.ok(res.body && typeof res.body === 'object', `body is not a JSON object: ${res.text.slice(0, 200)}`);
  assert.equal(typeof res.body.error, 'string', `no "error" in ${res.text.slice(0, 200)}`);
  assert.equal(typeof res.body.message, 'string', `no "message" in ${res.text.slice(0, 200)}`);
  if (typeof error === 'string') assert.equal(res.body.error, error, res.text);
  else if (error) assert.match(res.body.error, error, res.text);
}

/** Sends, expects `status` (a number, or a list of allowed ones) and nothing stored. */
async function refused(domain: string, send: () => Promise<Res>, status: number | number[], error?: string | RegExp): Promise<Res> {
  const before = await counts(domain);
  const res = await send();
  const allowed = Array.isArray(status) ? status : [status];
  assert.ok(allowed.includes(res.status), `expected ${allowed.join(' or ')}, got ${res.status}: ${res.text.slice(0, 300)}`);
  assertErrorBody(res, error);
  assert.deepEqual(await counts(domain), before, 'nothing may be stored');
  return res;
}

function retryAfter(res: Res): number {
  const h = res.headers.get('retry-after');
  assert.ok(h !== null, `no Retry-After on ${res.status} ${res.text}`);
  assert.match(h, /^\d+$/);
  const n = Number(h);
  assert.ok(n >= 1 && n <= 300, `Retry-After ${n}`);
  return n;
}

describe('federation: hostile peers are refused and store nothing', () => {
  before(async () => {
    evil = await EvilPeer.listen();
    down = await EvilPeer.listen();
    trap = await Trap.listen();
    net = await startNetwork({
      domains: [US, BLOCKER],
      env: { INTERTALK_FEDERATION_TIMEOUT: '5s' },
      envFor: { [BLOCKER]: { INTERTALK_BLOCKED_DOMAINS: EVIL } },
      extraResolve: { ...Object.fromEntries(FAKE_DOMAINS.map((d) => [d, evil.port])), 'down.test': down.port },
    });
    evil.setCert(await net.ca.issue(FAKE_DOMAINS));
    down.setCert(await net.ca.issue(['down.test']));
    for (const d of [US, BLOCKER]) await net.provider(d).ctx.accounts.create('bob', 'correct horse battery');

    for (const kid of ['k1', 'u1', 'f1', 'd1', 'd2', 'p1', 'l1', 'i1', 'o1']) keys[kid] = await peerKey(kid);
    keys.impostor = await peerKey('k1'); // another key pair under evil.test's kid
    evil.host(EVIL).keys.set('k1', keys.k1!.publicJwk);
    // peer.test publishes evil.test's key under the same kid: a token with iss=peer.test would verify.
    evil.host('peer.test').keys.set('k1', keys.k1!.publicJwk);
    evil.host('unk.test').keys.set('u1', keys.u1!.publicJwk);
    evil.host('flood.test').keys.set('f1', keys.f1!.publicJwk);
    down.host('down.test').keys.set('d1', keys.d1!.publicJwk);
    // A symmetric key made of the public key bytes: must never be used to verify anything.
    const oct = { kty: 'oct', kid: 'o1', k: Buffer.from(JSON.stringify(keys.o1!.publicJwk)).toString('base64url'), alg: 'HS256' };
    evil.host('oct.test').keys.set('o1', oct);
    // Peers that delegate to places we must not fetch keys from; each also publishes a valid key at
    // its bare domain, so that any fallback to "https://{domain}/keys" would show up as a 2xx.
    evil.host('plain.test').wellKnown = { status: 200, json: { server: `http://plain.test:${evil.port}` } };
    evil.host('plain.test').keys.set('p1', keys.p1!.publicJwk);
    evil.host('lo.test').wellKnown = { status: 200, json: { server: `https://localhost:${trap.port}` } };
    evil.host('lo.test').keys.set('l1', keys.l1!.publicJwk);
    evil.host('ip.test').wellKnown = { status: 200, json: { server: `https://127.0.0.1:${trap.port}` } };
    evil.host('ip.test').keys.set('i1', keys.i1!.publicJwk);
  });

  after(async () => {
    for (const a of agents.values()) await a.close();
    await net?.stop();
    await evil?.close();
    await down?.close();
    await trap?.close();
    if (net) rmSync(net.dir, { recursive: true, force: true });
  });

  test('control: a correctly signed request is stored (201); the identical retry is acknowledged and stored once', async () => {
    const before = await counts(US);
    const token = await signToken(keys.k1!, claims());
    const body = message({ message: 'control' });
    const r1 = await post(US, token, body);
    assert.equal(r1.status, 201, r1.text);
    assert.equal(r1.body.id, body.id);
    assert.equal(r1.body.status, 'accepted');
    const mid = await counts(US);
    assert.equal(mid.messages, before.messages + 1);
    assert.equal(mid.conversations, before.conversations + 1);

    const r2 = await post(US, token, body);
    assert.ok(r2.status === 200 || r2.status === 201, `retry: ${r2.status} ${r2.text}`);
    assert.equal(r2.body.id, body.id);
    assert.deepEqual(await counts(US), mid, 'stored once');
    const row = await net.provider(US).ctx.storage.db.selectFrom('messages').selectAll().where('id', '=', body.id as string).executeTakeFirstOrThrow();
    assert.equal(row.sender, MALLORY);
    assert.equal(row.origin, EVIL);
    assert.equal(Number(row.insecure), 0);
    assert.ok(evil.seen(EVIL, '/keys').length >= 1, 'the provider fetched the key from the fake peer');
  });

  test('bad signature (another key under the same kid) → 401, and a burst does not hammer the peer', async () => {
    const fetchesBefore = evil.seen(EVIL, '/keys').length;
    await refused(US, async () => post(US, await signToken(keys.impostor!, claims()), message()), 401, 'bad_signature');
    // The cached key was refreshed once (the peer may have rotated); then the cooldown applies.
    assert.ok(evil.seen(EVIL, '/keys').length - fetchesBefore <= 2);
    const afterFirst = evil.seen(EVIL, '/keys').length;
    for (let i = 0; i < 3; i++) await refused(US, async () => post(US, await signToken(keys.impostor!, claims()), message()), 401, 'bad_signature');
    assert.equal(evil.seen(EVIL, '/keys').length, afterFirst, 'no refetch during the cooldown');
    // The genuine key still works after the failed attempts.
    const ok = await post(US, await signToken(keys.k1!, claims()), message());
    assert.equal(ok.status, 201, ok.text);
  });

  test('alg "none" (unsecured JWT, with or without a signature part) → 401', async () => {
    for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
      for (const sig of ['', 'AAAA']) {
        const token = unsecuredToken({ alg, kid: 'k1', typ: 'JWT' }, claims(), sig);
        await refused(US, () => post(US, token, message()), 401, 'invalid_token');
      }
    }
    // No alg at all.
    await refused(US, () => post(US, unsecuredToken({ kid: 'k1' }, claims(), 'AAAA'), message()), 401, 'invalid_token');
  });

  test('HS256 signed with the public key as the HMAC secret → 401', async () => {
    const jwk = keys.k1!.publicJwk;
    const pem = createPublicKey({ key: jwk as any, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
    const der = createPublicKey({ key: jwk as any, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    const secrets: Array<string | Buffer> = [pem, JSON.stringify(jwk), JSON.stringify({ keys: [jwk] }), der];
    for (const secret of secrets) {
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        const token = hmacToken({ alg, kid: 'k1', typ: 'JWT' }, claims(), secret);
        await refused(US, () => post(US, token, message()), 401, 'invalid_token');
      }
    }
  });

  test('a symmetric (oct) key published by the peer is never used → 401', async () => {
    await refused(US, async () => post(US, await signToken(keys.o1!, claims({ iss: 'oct.test', sub: 'mallory@oct.test' })), message({ from: 'mallory@oct.test', to: ['mallory@oct.test', BOB] })), 401);
    const secret = Buffer.from(JSON.stringify(keys.o1!.publicJwk));
    const token = hmacToken({ alg: 'HS256', kid: 'o1' }, claims({ iss: 'oct.test', sub: 'mallory@oct.test' }), secret);
    await refused(US, () => post(US, token, message({ from: 'mallory@oct.test', to: ['mallory@oct.test', BOB] })), 401);
  });

  test('wrong or missing aud → 401', async () => {
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ aud: BLOCKER })), message()), 401, 'wrong_audience');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ aud: [BLOCKER, 'other.test'] })), message()), 401, 'wrong_audience');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ aud: `${US}.evil.test` })), message()), 401, 'wrong_audience');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ aud: undefined })), message()), 401, 'invalid_token');
  });

  test('iss not the domain of sub → 403 sender_not_delegated (even when the iss publishes a key that verifies)', async () => {
    // peer.test serves evil's key under k1, so the signature verifies for iss=peer.test. The
    // sender's domain could be a personal domain delegated to the issuer (src/indieweb/): its home
    // page names no such server, so the sender is not delegated.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iss: 'peer.test' })), message()), 403, 'sender_not_delegated');
    await refused(
      US,
      async () => post(US, await signToken(keys.k1!, claims({ sub: 'mallory@peer.test' })), message({ from: 'mallory@peer.test', to: ['mallory@peer.test', BOB] })),
      403,
      'sender_not_delegated',
    );
    // An issuer whose keys cannot be fetched: the signature is checked before any delegation, so
    // the request is deferred (503), and nothing is stored.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iss: 'sub.evil.test' })), message()), 503, 'keys_unavailable');
    // Our own domain is never delegated: a peer speaking for our user stays issuer_mismatch.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ sub: BOB })), message({ from: BOB, to: [BOB, MALLORY] })), 401, 'issuer_mismatch');
  });

  test('sub ≠ from → 401', async () => {
    const body = message({ from: `eve@${EVIL}`, to: [`eve@${EVIL}`, MALLORY, BOB] });
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), body), 401, 'sender_mismatch');
  });

  test('from ∉ to → 400 invalid_message (message validation runs first)', async () => {
    const body = message({ to: [BOB] });
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), body), 400, 'invalid_message');
  });

  test('expired, not yet valid, and over-long tokens → 401', async () => {
    const t = nowS();
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iat: t - 200, exp: t - 120 })), message()), 401, 'token_expired');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ nbf: t + 120, iat: t, exp: t + 200 })), message()), 401, 'token_not_yet_valid');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iat: t + 120, exp: t + 200 })), message()), 401, 'token_not_yet_valid');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iat: t, exp: t + 301 })), message()), 401, 'token_lifetime_too_long');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iat: undefined, exp: t + 400 })), message()), 401, 'token_lifetime_too_long');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ exp: undefined })), message()), 401, 'invalid_token');
    // The limits are not stricter than documented: a 300 s lifetime and 30 s of skew are fine.
    const ok = await post(US, await signToken(keys.k1!, claims({ iat: t + 30, exp: t + 300 })), message());
    assert.equal(ok.status, 201, ok.text);
  });

  test('replayed jti with a different body → 401; the very same request retried → 2xx, stored once', async () => {
    const jti = randomUUID();
    const token = await signToken(keys.k1!, claims({ jti }));
    const body = message({ message: 'original' });
    const first = await post(US, token, body);
    assert.equal(first.status, 201, first.text);
    const stored = await counts(US);

    await refused(US, () => post(US, token, message({ message: 'forged' })), 401, 'replayed');
    // Same token, same message id, another text (so not the identical request).
    await refused(US, () => post(US, token, { ...body, message: 'tampered' }), 401, 'replayed');
    // A fresh token reusing the jti, with a different body.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ jti })), message({ message: 'again' })), 401, 'replayed');

    const retry = await post(US, token, body);
    assert.ok(retry.status === 200 || retry.status === 201, `retry: ${retry.status} ${retry.text}`);
    assert.equal(retry.body.id, body.id);
    assert.deepEqual(await counts(US), stored, 'stored once');
  });

  test('a known message id with different content (new token) → 409, not 500, nothing stored', async () => {
    const body = message({ message: 'first version' });
    const r1 = await post(US, await signToken(keys.k1!, claims()), body);
    assert.equal(r1.status, 201, r1.text);
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), { ...body, message: 'second version' }), 409, 'id_conflict');
  });

  // PostgreSQL's text type cannot hold U+0000 (SQLite's can). Wherever a peer's text lands in a
  // text column rather than in a JSON body, it must still be accepted (as U+FFFD), not fail with 500.
  test('U+0000 from a peer: a jti with it works (and is replay-checked), an edit with it is applied', async () => {
    const token = await signToken(keys.k1!, claims({ jti: `nul\u0000${randomUUID()}` }));
    const first = await post(US, token, message({ message: 'a jti with U+0000' }));
    assert.equal(first.status, 201, first.text);
    await refused(US, () => post(US, token, message({ message: 'forged' })), 401, 'replayed');

    const original = message({ message: 'before' });
    assert.equal((await post(US, await signToken(keys.k1!, claims()), original)).status, 201);
    const edit = message({ message: '✎ af\u0000ter', messageFormatted: '*af\u0000ter*', format: 'text/markdown', rich: { type: 'edit', text: 'af\u0000ter', reference: { id: original.id, sender: MALLORY } } });
    const r = await post(US, await signToken(keys.k1!, claims()), edit);
    assert.equal(r.status, 201, r.text);
    const db = net.provider(US).ctx.storage.db;
    const state = await db
      .selectFrom('message_state')
      .innerJoin('messages', 'messages.seq', 'message_state.seq')
      .select(['message_state.text', 'message_state.formatted', 'message_state.edit_count'])
      .where('messages.sender', '=', MALLORY)
      .where('messages.id', '=', original.id as string)
      .executeTakeFirstOrThrow();
    assert.deepEqual({ ...state, edit_count: Number(state.edit_count) }, { text: 'af\uFFFDter', formatted: '*af\uFFFDter*', edit_count: 1 });
  });

  test('a peer refusing a delivery with U+0000 in its reason: failed after one attempt, the reason recorded', async () => {
    evil.host('nul.test').messages = { status: 400, json: { error: 'bad_request', message: 'no\u0000thanks' } };
    const sender = await fedUser(net, US, 'nulsender');
    const m = await say(net, sender, ['someone@nul.test'], 'hello nul.test');
    const d = await eventually('the delivery to nul.test to fail', async () => {
      const list = await deliveries(net, sender, m);
      return list[0]?.state === 'failed' && list;
    });
    assert.equal(d[0].attempts, 1, 'a 4xx is final: one attempt');
    assert.match(d[0].lastError, /nul\.test answered 400: bad_request — no\uFFFDthanks/);
    assert.equal(evil.seen('nul.test', '/messages').length, 1, 'delivered once, not retried');
  });

  test('unknown kid → 401 unknown_key', async () => {
    const token = await signToken(keys.u1!, claims({ iss: 'unk.test', sub: 'mallory@unk.test' }), { kid: 'no-such-kid' });
    await refused(US, () => post(US, token, message({ from: 'mallory@unk.test', to: ['mallory@unk.test', BOB] })), 401, 'unknown_key');
    assert.deepEqual(
      evil.seen('unk.test', '/keys').map((r) => r.path),
      ['/keys/no-such-kid', '/keys'],
    );
  });

  test('a kid of "." or ".." cannot move the key fetch off /keys (URL dot-segment normalisation)', async () => {
    const from = 'mallory@dot.test';
    // dot.test serves a valid key at its root: a fetch of "/keys/.." would be normalised to "/".
    evil.host('dot.test').wellKnown = { status: 404 };
    for (const kid of ['..', '.']) {
      const token = await signToken(keys.u1!, claims({ iss: 'dot.test', sub: from }), { kid });
      await refused(US, () => post(US, token, message({ from, to: [from, BOB] })), [401, 503]);
    }
    const paths = evil.seen('dot.test').map((r) => r.path);
    assert.ok(
      paths.every((p) => p === '/.well-known/intertalk' || p === '/keys' || p.startsWith('/keys/')),
      `key fetches left /keys: ${paths.join(', ')}`,
    );
  });

  test('key server down with an uncached kid → 503 with Retry-After; a cached kid keeps working', async () => {
    const from = 'mallory@down.test';
    const body = () => message({ from, to: [from, BOB] });
    const c = (over: Record<string, unknown> = {}) => claims({ iss: 'down.test', sub: from, ...over });
    const ok = await post(US, await signToken(keys.d1!, c()), body());
    assert.equal(ok.status, 201, ok.text);
    await down.close();
    const res = await refused(US, async () => post(US, await signToken(keys.d2!, c()), body()), 503, 'keys_unavailable');
    retryAfter(res);
    const cached = await post(US, await signToken(keys.d1!, c()), body());
    assert.equal(cached.status, 201, cached.text);
  });

  test('well-known delegating to plain http (no opt-in) → 401, no key fetched anywhere', async () => {
    const tlsErrors = evil.tlsErrors;
    const from = 'mallory@plain.test';
    const token = await signToken(keys.p1!, claims({ iss: 'plain.test', sub: from }));
    await refused(US, () => post(US, token, message({ from, to: [from, BOB] })), 401, 'unknown_key');
    assert.deepEqual(evil.seen('plain.test').map((r) => r.path), ['/.well-known/intertalk']);
    assert.equal(evil.tlsErrors, tlsErrors, 'no plain-http connection reached the peer');
  });

  test('well-known delegating to localhost / an IP literal → refused, and nothing connects there', async () => {
    // localhost: a valid delegation to a non-public address, refused by our policy → final 401.
    let from = 'mallory@lo.test';
    await refused(US, async () => post(US, await signToken(keys.l1!, claims({ iss: 'lo.test', sub: from })), message({ from, to: [from, BOB] })), 401, 'unknown_key');
    // An IP literal makes the discovery document invalid, which discovery treats like an
    // unavailable peer (503 + Retry-After) rather than a policy refusal; either way: refused.
    from = 'mallory@ip.test';
    const ip = await refused(US, async () => post(US, await signToken(keys.i1!, claims({ iss: 'ip.test', sub: from })), message({ from, to: [from, BOB] })), [401, 503]);
    if (ip.status === 503) retryAfter(ip);
    for (const d of ['lo.test', 'ip.test']) {
      assert.deepEqual(evil.seen(d).map((r) => r.path), ['/.well-known/intertalk'], `${d}: no fallback to the bare domain`);
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(trap.connections, 0, 'the provider connected to a loopback address');
  });

  test('no local recipient → 403 no_local_recipient', async () => {
    const remoteOnly = message({ to: [MALLORY, 'carol@other.test'] });
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), remoteOnly), 403, 'no_local_recipient');
    const ghost = message({ to: [MALLORY, `nobody@${US}`] });
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), ghost), 403, 'no_local_recipient');
    const onlySelf = message({ to: [MALLORY] });
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), onlySelf), 403, 'no_local_recipient');
  });

  test('a sender claiming our own domain is never accepted', async () => {
    const body = message({ from: BOB, to: [BOB] });
    const ours = await net.provider(US).ctx.storage.db.selectFrom('signing_keys').select('kid').execute();
    assert.ok(ours.length > 0);
    // Our real kid, signed by evil's key → our own key does not verify it.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iss: US, sub: BOB }), { kid: ours[0]!.kid }), body), 401, 'bad_signature');
    // iss = evil.test, sub = one of our users.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ sub: BOB })), body), 401, 'issuer_mismatch');
    // Even a token genuinely signed with our own key is not a way in (defence in depth).
    const fed = net.provider(US).ctx.federation as unknown as Federation;
    const own = await fed.keys.sign({ aud: US, sub: BOB });
    await refused(US, () => post(US, own, body), 403, 'sender_is_local');
    // evil's kid under iss = our domain: we hold no such key.
    await refused(US, async () => post(US, await signToken(keys.k1!, claims({ iss: US, sub: BOB })), body), 401, 'unknown_key');
  });

  test('a blocked domain (and its subdomains) → 403, without contacting it', async () => {
    const ua = `intertalk/${BLOCKER}`;
    const body = message({ to: [MALLORY, `bob@${BLOCKER}`] });
    await refused(BLOCKER, async () => post(BLOCKER, await signToken(keys.k1!, claims({ aud: BLOCKER })), body), 403, 'domain_blocked');
    await refused(BLOCKER, async () => post(BLOCKER, await signToken(keys.k1!, claims({ aud: BLOCKER, iss: 'EVIL.TEST' })), body), 403, 'domain_blocked');
    const sub = 'mallory@x.evil.test';
    await refused(
      BLOCKER,
      async () => post(BLOCKER, await signToken(keys.k1!, claims({ aud: BLOCKER, iss: 'x.evil.test', sub })), message({ from: sub, to: [sub, `bob@${BLOCKER}`] })),
      403,
      'domain_blocked',
    );
    // A trailing dot does not slip past the blocklist into acceptance.
    await refused(BLOCKER, async () => post(BLOCKER, await signToken(keys.k1!, claims({ aud: BLOCKER, iss: 'evil.test.' })), body), [401, 403]);
    assert.equal(evil.requests.filter((r) => r.userAgent === ua).length, 0, 'the blocking provider contacted the blocked peer');
  });

  test('body too large → 413, broken JSON → 400, all with JSON bodies', async () => {
    const token = await signToken(keys.k1!, claims());
    const big = JSON.stringify(message({ message: 'x'.repeat(net.provider(US).config.maxBody + 1024) }));
    await refused(US, () => post(US, token, big, { raw: true }), 413, 'payload_too_large');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), '{"to": [', { raw: true }), 400, 'invalid_json');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { raw: true }), 400, 'invalid_encoding');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), '[]', { raw: true }), 400, 'invalid_message');
    await refused(US, async () => post(US, await signToken(keys.k1!, claims()), 'to=a', { raw: true, contentType: 'text/plain' }), 415);
  });

  test('20 unknown kids in quick succession → at most 2 key fetches; the rest 503 with Retry-After', async () => {
    const from = 'mallory@flood.test';
    const before = evil.seen('flood.test', '/keys').length;
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const token = await signToken(keys.f1!, claims({ iss: 'flood.test', sub: from }), { kid: `made-up-${i}` });
        return refused(US, () => post(US, token, message({ from, to: [from, BOB] })), [401, 503]);
      }),
    );
    const fetches = evil.seen('flood.test', '/keys').length - before;
    assert.ok(fetches <= 2, `${fetches} key fetches`);
    const statuses = results.map((r) => r.status);
    assert.ok(statuses.filter((s) => s === 401).length <= 1, `statuses ${statuses.join(',')}`);
    for (const r of results.filter((x) => x.status === 503)) {
      assert.equal(r.body.error, 'keys_unavailable');
      retryAfter(r);
    }
    assert.ok(statuses.filter((s) => s === 503).length >= 19);
    // Sequential ones during the cooldown: 503 too, no fetch.
    for (let i = 0; i < 3; i++) {
      const token = await signToken(keys.f1!, claims({ iss: 'flood.test', sub: from }), { kid: `later-${i}` });
      const r = await refused(US, () => post(US, token, message({ from, to: [from, BOB] })), 503, 'keys_unavailable');
      retryAfter(r);
    }
    assert.equal(evil.seen('flood.test', '/keys').length - before, fetches);
    // The flood does not lock out the peer's real key (learnt from its /keys set).
    const ok = await post(US, await signToken(keys.f1!, claims({ iss: 'flood.test', sub: from })), message({ from, to: [from, BOB] }));
    assert.equal(ok.status, 201, ok.text);
  });
});
