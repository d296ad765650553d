// batch/1 (docs/federation.md): several messages in one POST /messages/batch under one provider
// token bound to the body. Inbound: a real provider against a fake peer (test/helpers/evil-peer.ts)
// that signs its own batches; every refusal is a JSON 4xx that stores nothing, and each message of
// an accepted batch gets its own result, stored in the order given. Outbound: a real provider
// delivers a burst to another in batches, in order, once; a peer that advertises batch/1 but
// refuses the batch route gets the messages one by one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Agent, fetch } from 'undici';
import { sql } from 'kysely';
import { DevnetAgents, readAnswer, startNetwork, type Network } from './helpers/network.js';
import { EvilPeer, peerKey, signToken, type PeerKey } from './helpers/evil-peer.js';
import { counter, eventually, fed, fedUser, history } from './helpers/fed.js';
import { batchBody, bodySha256, MAX_BATCH_MESSAGES } from '../src/federation/batch.js';
import { canonicalParticipants, conversationId } from '../src/protocol/conversation.js';
import { answerAfterRest, partialPost } from './helpers/partial-post.js';

const US = 'chat.test';
const SMALL = 'small.test'; // INTERTALK_FEDERATION_RATE=10
const OTHER = 'other.test'; // a second real provider, for outbound batches; INTERTALK_MAX_BODY=8192
const EVIL = 'evil.test';
const LEGACY = 'legacy.test'; // advertises batch/1, answers only POST /messages
const GATED = 'gated.test'; // INTERTALK_FEDERATION_RATE=5, client addresses from X-Forwarded-For
const MALLORY = `mallory@${EVIL}`;
const BOB = `bob@${US}`;

let net: Network;
let evil: EvilPeer;
let key: PeerKey;
let impostor: PeerKey;
const agents = new DevnetAgents(() => net);

interface Res {
  status: number;
  text: string;
  body: any;
}

const nowS = () => Math.floor(Date.now() / 1000);

function message(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: `m-${randomUUID()}`, from: MALLORY, to: [MALLORY, BOB], sentAt: new Date(Date.now() - 1000).toISOString(), message: 'hello bob', ...over };
}

/** A token for `body` as evil.test would sign it; `over` replaces or (undefined) drops claims. */
async function batchToken(body: string, over: Record<string, unknown> = {}, aud = US, signer = key): Promise<string> {
  const t = nowS();
  return signToken(signer, { iss: EVIL, sub: EVIL, aud, iat: t, exp: t + 60, jti: randomUUID(), body_sha256: bodySha256(body), ...over });
}

async function postBatch(domain: string, token: string | null, body: string, extraHeaders: Record<string, string> = {}): Promise<Res> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...extraHeaders };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${net.node(domain).url}/messages/batch`, { method: 'POST', headers, body, dispatcher: agentFor(domain) });
  return { status: res.status, ...(await readAnswer(res)) };
}

async function messageCount(domain: string): Promise<number> {
  const db = net.provider(domain).ctx.storage.db;
  return Number((await db.selectFrom('messages').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
}

/** Ids of the stored messages of a conversation, in seq order. */
async function storedIds(domain: string, participants: string[]): Promise<string[]> {
  const db = net.provider(domain).ctx.storage.db;
  const rows = await db.selectFrom('messages').select('id').where('conversation_id', '=', conversationId(canonicalParticipants(participants))).orderBy('seq').execute();
  return rows.map((r) => r.id);
}

/** Expects a JSON {error, message} refusal with `status` and nothing stored. */
async function refused(domain: string, send: () => Promise<Res>, status: number, error: string): Promise<void> {
  const before = await messageCount(domain);
  const res = await send();
  assert.equal(res.status, status, res.text);
  assert.equal(res.body?.error, error, res.text);
  assert.equal(typeof res.body?.message, 'string', res.text);
  assert.equal(await messageCount(domain), before, 'nothing may be stored');
}

describe('federation: batch/1', () => {
  before(async () => {
    evil = await EvilPeer.listen();
    net = await startNetwork({
      domains: [US, SMALL, OTHER, GATED],
      envFor: { [OTHER]: { INTERTALK_MAX_BODY: '8192' }, [SMALL]: { INTERTALK_FEDERATION_RATE: '10' }, [GATED]: { INTERTALK_FEDERATION_RATE: '5', INTERTALK_TRUST_PROXY: 'true' } },
      extraResolve: { [EVIL]: evil.port, [LEGACY]: evil.port },
    });
    evil.setCert(await net.ca.issue([EVIL, LEGACY]));
    for (const d of [US, SMALL, GATED, OTHER]) await net.provider(d).ctx.accounts.create('bob', 'correct horse battery');
    key = await peerKey('k1');
    impostor = await peerKey('k1');
    evil.host(EVIL).keys.set('k1', key.publicJwk);
  });

  after(async () => {
    await agents.close();
    await net?.stop();
    await evil?.close();
    if (net) rmSync(net.dir, { recursive: true, force: true });
  });

  test('the well-known advertises batch/1', async () => {
    const res = await fetch(`${net.node(US).url}/.well-known/intertalk`, { dispatcher: agentFor(US) });
    const doc = (await res.json()) as { extensions: string[] };
    assert.ok(doc.extensions.includes('batch/1'), JSON.stringify(doc));
  });

  test('a signed batch is stored in the order given, one result per message; the identical retry stores nothing more', async () => {
    const carol = `carol@${EVIL}`;
    const ms = [
      message({ message: 'one' }),
      message({ from: carol, to: [carol, BOB], message: 'two (another sender, another conversation)' }),
      message({ message: 'three' }),
      message({ message: 'four' }),
    ];
    const body = batchBody(ms.map((m) => JSON.stringify(m)));
    const token = await batchToken(body);
    const before = await messageCount(US);
    const r1 = await postBatch(US, token, body);
    assert.equal(r1.status, 200, r1.text);
    assert.deepEqual(r1.body.results, ms.map((m) => ({ id: m.id, status: 201 })));
    assert.equal(await messageCount(US), before + 4);
    assert.deepEqual(await storedIds(US, [MALLORY, BOB]), [ms[0]!.id, ms[2]!.id, ms[3]!.id]);
    assert.deepEqual(await storedIds(US, [carol, BOB]), [ms[1]!.id]);

    const r2 = await postBatch(US, token, body);
    assert.equal(r2.status, 200, r2.text);
    assert.deepEqual(r2.body.results, ms.map((m) => ({ id: m.id, status: 200 })));
    assert.equal(await messageCount(US), before + 4, 'stored once');
  });

  test('each message is judged on its own: refused ones get their status and error, the others are stored', async () => {
    const ok1 = message({ message: 'kept 1' });
    const foreign = message({ from: `eve@peer.test`, to: [`eve@peer.test`, BOB] });
    const unknown = message({ to: [MALLORY, `nobody@${US}`] });
    const invalid = { id: 'x', from: MALLORY, to: 'not a list', message: 1 };
    const badInline = message({ messageFormatted: 'not base64 at all!', format: 'image/png' });
    const ok2 = message({ message: 'kept 2' });
    const body = batchBody([ok1, foreign, unknown, invalid, badInline, ok2].map((m) => JSON.stringify(m)));
    const before = await storedIds(US, [MALLORY, BOB]);
    const r = await postBatch(US, await batchToken(body), body);
    assert.equal(r.status, 200, r.text);
    const results = r.body.results as Array<{ id: string | null; status: number; error?: string; message?: string }>;
    assert.deepEqual(results.map((x) => x.status), [201, 403, 403, 400, 400, 201], r.text);
    // peer.test might be a personal domain delegated to the batch's issuer (src/indieweb/); its
    // home page says it is not.
    assert.equal(results[1]!.error, 'sender_not_delegated');
    assert.equal(results[2]!.error, 'no_local_recipient');
    assert.equal(results[4]!.error, 'invalid_message', 'a seed-000 inline file is checked as on POST /messages');
    for (const x of results.slice(1, 5)) assert.equal(typeof x.message, 'string');
    assert.deepEqual(await storedIds(US, [MALLORY, BOB]), [...before, ok1.id, ok2.id]);
    assert.equal(results[4]!.id, badInline.id);
    assert.deepEqual(await storedIds(US, [`eve@peer.test`, BOB]), []);
  });

  test('a token not bound to this body, without jti, naming a user, or signed by another key → 401, nothing stored', async () => {
    const body = batchBody([JSON.stringify(message())]);
    const other = batchBody([JSON.stringify(message({ message: 'something else' }))]);
    await refused(US, async () => postBatch(US, await batchToken(other), body), 401, 'body_mismatch');
    await refused(US, async () => postBatch(US, await batchToken(body, { body_sha256: undefined }), body), 401, 'invalid_token');
    await refused(US, async () => postBatch(US, await batchToken(body, { jti: undefined }), body), 401, 'invalid_token');
    await refused(US, async () => postBatch(US, await batchToken(body, { sub: MALLORY }), body), 401, 'issuer_mismatch');
    await refused(US, async () => postBatch(US, await batchToken(body, {}, 'elsewhere.test'), body), 401, 'wrong_audience');
    await refused(US, async () => postBatch(US, await batchToken(body, {}, US, impostor), body), 401, 'bad_signature');
    await refused(US, async () => postBatch(US, null, body), 401, 'missing_token');
  });

  test('a jti used for another body is a replay → 401', async () => {
    const jti = randomUUID();
    const b1 = batchBody([JSON.stringify(message({ message: 'first' }))]);
    const r = await postBatch(US, await batchToken(b1, { jti }), b1);
    assert.equal(r.status, 200, r.text);
    const b2 = batchBody([JSON.stringify(message({ message: 'second' }))]);
    await refused(US, async () => postBatch(US, await batchToken(b2, { jti }), b2), 401, 'replayed');
  });

  test('malformed batches → 400 invalid_batch, nothing stored', async () => {
    const many = batchBody(Array.from({ length: MAX_BATCH_MESSAGES + 1 }, () => JSON.stringify(message())));
    for (const body of ['{"messages":[]}', '{"messages":{}}', '[]', '{}', many]) {
      await refused(US, async () => postBatch(US, await batchToken(body), body), 400, 'invalid_batch');
    }
  });

  test('a refused message (a rich/1 rule) does not hold back the ones after it', async () => {
    const m1 = message({ message: 'to be deleted' });
    const del = (id: string) => message({ id, message: '🗑 (deleted a message)', rich: { type: 'delete', reference: { id: m1.id, sender: MALLORY } } });
    const b1 = batchBody([JSON.stringify(m1), JSON.stringify(del(`d1-${randomUUID()}`))]);
    const r1 = await postBatch(US, await batchToken(b1), b1);
    assert.deepEqual(r1.body.results.map((x: { status: number }) => x.status), [201, 201], r1.text);
    // Deleted a second time (from another device, say): refused; the messages after it are stored.
    const ms = [del(`d2-${randomUUID()}`), message({ message: 'after 1' }), message({ message: 'after 2' })];
    const b2 = batchBody(ms.map((m) => JSON.stringify(m)));
    const r2 = await postBatch(US, await batchToken(b2), b2);
    const statuses = r2.body.results.map((x: { status: number }) => x.status);
    assert.ok(statuses[0] >= 400 && statuses[0] < 500, r2.text);
    assert.deepEqual(statuses.slice(1), [201, 201], r2.text);
  });

  test('large bodies under refused tokens count against the per-address limit, as small ones do', async () => {
    const body = Buffer.from(JSON.stringify(message({ to: [MALLORY, `bob@${GATED}`], message: 'x'.repeat(70_000) })));
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = nowS();
      const token = await signToken(impostor, { iss: EVIL, sub: MALLORY, aud: GATED, iat: t, exp: t + 60, jti: randomUUID() });
      const p = await partialPost(net.node(GATED).url, '/messages', { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.77', authorization: `Bearer ${token}` }, body.subarray(0, 100), { length: 2 * 1024 * 1024, ca: net.ca.caCert, servername: GATED });
      try {
        statuses.push((await p.answerWithin(10_000))?.status ?? 0);
      } finally {
        p.close();
      }
    }
    // gated.test takes 5 requests a minute from one address.
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429]);
  });

  test('a message that fails to store holds back the ones after it: the retry keeps the order', async () => {
    const storage = net.provider(US).ctx.storage;
    // A fault injected for one message id: its INSERT fails, as on a database error.
    const poison = `m-poison-${randomUUID()}`;
    if (storage.dialect === 'sqlite') {
      await sql.raw(`create trigger poison before insert on messages when new.id = '${poison}' begin select raise(abort, 'injected fault'); end`).execute(storage.db);
    } else {
      await sql.raw(`create function poison() returns trigger language plpgsql as $$ begin if new.id = '${poison}' then raise exception 'injected fault'; end if; return new; end $$`).execute(storage.db);
      await sql.raw('create trigger poison before insert on messages for each row execute function poison()').execute(storage.db);
    }
    const ms = [message({ message: 'p1' }), message({ id: poison, message: 'p2' }), message({ message: 'p3' }), message({ message: 'p4' })];
    const body = batchBody(ms.map((m) => JSON.stringify(m)));
    try {
      const r = await postBatch(US, await batchToken(body), body);
      assert.equal(r.status, 200, r.text);
      const statuses = r.body.results.map((x: { status: number }) => x.status);
      assert.equal(statuses[0], 201, r.text);
      assert.ok(statuses.slice(1).every((st: number) => st >= 500), r.text);
    } finally {
      await sql.raw('drop trigger poison' + (storage.dialect === 'sqlite' ? '' : ' on messages')).execute(storage.db);
      if (storage.dialect !== 'sqlite') await sql.raw('drop function poison()').execute(storage.db);
    }
    const again = await postBatch(US, await batchToken(body), body);
    assert.deepEqual(again.body.results.map((x: { status: number }) => x.status), [200, 201, 201, 201], again.text);
    assert.deepEqual(await storedIds(US, [MALLORY, BOB]).then((ids) => ids.filter((id) => ms.some((m) => m.id === id))), ms.map((m) => m.id));
  });

  test('each message of a batch is held to INTERTALK_MAX_BODY as on POST /messages (an inline file not counted)', async () => {
    const to = [MALLORY, `bob@${OTHER}`];
    const ms = [
      message({ to, message: 'x'.repeat(10_000) }),
      message({ to, message: 'a picture', messageFormatted: randomBytes(6_000).toString('base64'), format: 'image/png' }),
      message({ to, message: 'short' }),
    ];
    const body = batchBody(ms.map((m) => JSON.stringify(m)));
    const r = await postBatch(OTHER, await batchToken(body, {}, OTHER), body);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.results.map((x: { status: number }) => x.status), [413, 201, 201], r.text);
    assert.equal(r.body.results[0].error, 'payload_too_large', r.text);
    assert.deepEqual(await storedIds(OTHER, to), [ms[1]!.id, ms[2]!.id]);
  });

  test('the inbound rate limit counts messages, not requests; a batch only partly within it is taken in part', async () => {
    const to = [MALLORY, `bob@${SMALL}`];
    const nine = batchBody(Array.from({ length: 9 }, () => JSON.stringify(message({ to }))));
    const r = await postBatch(SMALL, await batchToken(nine, {}, SMALL), nine);
    assert.equal(r.status, 200, r.text);
    // One message of the budget (10) is left: the first of three is taken, the other two wait.
    const three = Array.from({ length: 3 }, () => message({ to }));
    const body = batchBody(three.map((m) => JSON.stringify(m)));
    const part = await postBatch(SMALL, await batchToken(body, {}, SMALL), body);
    assert.equal(part.status, 200, part.text);
    assert.deepEqual(part.body.results.map((x: { status: number }) => x.status), [201, 429, 429], part.text);
    assert.equal(part.body.results[1].error, 'rate_limited', part.text);
    const stored = await storedIds(SMALL, to);
    assert.equal(stored.at(-1), three[0]!.id);
    assert.ok(!stored.includes(three[1]!.id as string) && !stored.includes(three[2]!.id as string));
    // Nothing is left: a whole batch is refused.
    const one = batchBody([JSON.stringify(message({ to }))]);
    await refused(SMALL, async () => postBatch(SMALL, await batchToken(one, {}, SMALL), one), 429, 'rate_limited');
  });

  test('tokens that only claim a peer\'s name do not use up its rate limit; the proven peer\'s limit holds and records nothing', async () => {
    const to = [MALLORY, `bob@${GATED}`];
    const batchOf = (n: number) => batchBody(Array.from({ length: n }, () => JSON.stringify(message({ to }))));
    // Twice the peer's budget, claiming to be evil.test, from addresses that each stay within theirs.
    for (const ip of ['198.51.100.1', '198.51.100.2']) {
      const body = batchOf(5);
      await refused(GATED, async () => postBatch(GATED, await batchToken(body, {}, GATED, impostor), body, { 'x-forwarded-for': ip }), 401, 'bad_signature');
    }
    // evil.test itself still has its whole budget.
    const five = batchOf(5);
    const ok = await postBatch(GATED, await batchToken(five, {}, GATED), five, { 'x-forwarded-for': '198.51.100.3' });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.results.map((r: { status: number }) => r.status), [201, 201, 201, 201, 201]);
    // …and no more: the limit applies to the issuer the signature proved. A refusal there
    // records nothing, not even the token's jti (the same request may come back later).
    const one = batchOf(1);
    const jti = randomUUID();
    await refused(GATED, async () => postBatch(GATED, await batchToken(one, { jti }, GATED), one, { 'x-forwarded-for': '198.51.100.4' }), 429, 'rate_limited');
    const db = net.provider(GATED).ctx.storage.db;
    assert.equal((await db.selectFrom('inbound_jti').select('jti').where('jti', '=', jti).execute()).length, 0);
  });

  test('a POST /messages past INTERTALK_MAX_BODY (an inline file) is read only once the peer token\'s claims and signature hold', async () => {
    // A seed-000 image of 900 KB: 1.2 MB of base64, past the 1 MiB INTERTALK_MAX_BODY.
    const m = message({ message: 'a picture', messageFormatted: randomBytes(900_000).toString('base64'), format: 'image/png' });
    const body = Buffer.from(JSON.stringify(m));
    const first = body.subarray(0, 1000);
    const userToken = (over: Record<string, unknown> = {}, signer = key) => {
      const t = nowS();
      return signToken(signer, { iss: EVIL, sub: MALLORY, aud: US, iat: t, exp: t + 60, jti: randomUUID(), ...over });
    };
    const send = async (token: string) =>
      partialPost(net.node(US).url, '/messages', { 'content-type': 'application/json', authorization: `Bearer ${token}` }, first, { length: body.length, ca: net.ca.caCert, servername: US });
    const before = await messageCount(US);
    const SHUNNED = 'shunned.test'; // blocked; nothing resolves it, so only the blocklist can answer 403
    await fed(net.provider(US)).blocklist.add(SHUNNED, null);
    for (const [token, status, error] of [
      [await userToken({}, impostor), 401, 'bad_signature'],
      [await userToken({ aud: OTHER }), 401, 'wrong_audience'],
      [await userToken({ exp: nowS() - 3600, iat: nowS() - 3660 }), 401, 'token_expired'],
      // A sender at another domain: checked for delegation (src/indieweb/) before the body is read.
      [await userToken({ sub: `mallory@${OTHER}` }), 403, 'sender_not_delegated'],
      [await userToken({ iss: SHUNNED, sub: `mallory@${SHUNNED}` }), 403, 'domain_blocked'],
    ] as const) {
      const p = await send(token);
      try {
        const a = await p.answerWithin(10_000);
        assert.equal(a?.status, status, JSON.stringify(a));
        assert.equal(a?.json?.error, error, JSON.stringify(a));
      } finally {
        p.close();
      }
    }
    // A token that holds: the body is read to the end, then the message is checked and stored.
    const { early, answer } = await answerAfterRest(await send(await userToken()), body.subarray(first.length));
    assert.equal(early, null, 'a body under a valid token is read to the end');
    assert.equal(answer?.status, 201, JSON.stringify(answer));
    assert.equal(await messageCount(US), before + 1);
  });

  test('a burst between two real providers travels in batches, arrives once and in order', async () => {
    const N = 150;
    const alice = await fedUser(net, US, 'alice');
    const carl = await fedUser(net, OTHER, 'carl');
    const requestsBefore = await counter(net.provider(OTHER), 'intertalk_federation_inbound_requests_total');
    const texts = Array.from({ length: N }, (_, i) => `burst ${i}`);
    // Sent concurrently: the outbox finds many messages queued behind the first request.
    const bodies = await Promise.all(texts.map((message) => fetch(`${net.node(US).url}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: [alice.address, carl.address], message }),
      dispatcher: agentFor(US),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { seq: number; id: string; conversationId: string } }))));
    for (const b of bodies) assert.equal(b.status, 201);
    const sentOrder = [...bodies].sort((x, y) => x.body.seq - y.body.seq).map((b) => b.body.id);
    const conv = bodies[0]!.body.conversationId;
    const got = await eventually('all messages on other.test', async () => {
      const h = await history(net, carl, conv);
      return h.length >= N ? h : null;
    }, 30_000);
    assert.equal(got.length, N, 'each message once');
    assert.deepEqual(got.map((m: { id: string }) => m.id), sentOrder, 'in the order alice\'s provider accepted them');
    const requests = (await counter(net.provider(OTHER), 'intertalk_federation_inbound_requests_total')) - requestsBefore;
    assert.ok(requests < N / 2, `${N} messages took ${requests} requests`);
    await eventually('all marked delivered', async () => {
      const rows = await net.provider(US).ctx.storage.db.selectFrom('outbox').select('state').where('destination', '=', OTHER).execute();
      return rows.length === N && rows.every((r) => r.state === 'delivered');
    });
  });

  test('a burst larger than the peer\'s rate limit is delivered as far as the limit allows, in order, and the rest waits', async () => {
    // gated.test takes 5 messages a minute from chat.test. Refused whole, a batch of more than
    // that would be refused forever; taken in part, the first five arrive now.
    const alice = await fedUser(net, US, 'amy');
    const bob = `bob@${GATED}`;
    const bodies = await Promise.all(Array.from({ length: 8 }, (_, i) => fetch(`${net.node(US).url}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: [alice.address, bob], message: `limited ${i}` }),
      dispatcher: agentFor(US),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { seq: number; id: string } }))));
    for (const b of bodies) assert.equal(b.status, 201);
    const sentOrder = [...bodies].sort((x, y) => x.body.seq - y.body.seq).map((b) => b.body.id);
    const db = net.provider(US).ctx.storage.db;
    const waiting = await eventually('the rest waiting with the peer\'s reason', async () => {
      const rows = await db.selectFrom('outbox').select(['state', 'last_error']).where('destination', '=', GATED).orderBy('id').execute();
      const queued = rows.filter((r) => r.state === 'queued');
      return rows.length === 8 && queued.length === 3 && queued.every((r) => /rate_limited/.test(r.last_error ?? '')) ? rows : null;
    });
    assert.deepEqual(waiting.map((r) => r.state), ['delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'queued', 'queued', 'queued']);
    assert.deepEqual(await storedIds(GATED, [alice.address, bob]), sentOrder.slice(0, 5));
  });

  test('queued messages with large inline files go out whole and in order between small ones', async () => {
    const ivy = await fedUser(net, US, 'ivy');
    const to = [ivy.address, `bob@${OTHER}`];
    const files = [randomBytes(40_000), randomBytes(700_000)];
    const msgs = [
      { to, message: 'file 1', messageFormatted: files[0]!.toString('base64'), format: 'image/png' },
      { to, message: 'between' },
      { to, message: 'file 2', messageFormatted: files[1]!.toString('base64'), format: 'application/octet-stream' },
      { to, message: 'after' },
    ];
    const sent = await Promise.all(msgs.map((json) => fetch(`${net.node(US).url}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ivy.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(json),
      dispatcher: agentFor(US),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { seq: number; id: string } }))));
    for (const b of sent) assert.equal(b.status, 201);
    const order = [...sent].sort((x, y) => x.body.seq - y.body.seq).map((b) => b.body.id);
    const db = net.provider(OTHER).ctx.storage.db;
    const conv = conversationId(canonicalParticipants(to));
    const rows = await eventually('all four on other.test', async () => {
      const r = await db.selectFrom('messages').select(['id', 'body']).where('conversation_id', '=', conv).orderBy('seq').execute();
      return r.length === 4 ? r : null;
    }, 20_000);
    assert.deepEqual(rows.map((r) => r.id), order);
    const byText = new Map(rows.map((r) => { const m = JSON.parse(r.body); return [m.message, m]; }));
    assert.ok(Buffer.from(byText.get('file 1').messageFormatted, 'base64').equals(files[0]!));
    assert.ok(Buffer.from(byText.get('file 2').messageFormatted, 'base64').equals(files[1]!));
  });

  test('a peer that advertises batch/1 but refuses the batch route gets each message alone', async () => {
    evil.host(LEGACY).wellKnown = { status: 200, json: { server: `https://${LEGACY}:${evil.port}`, extensions: ['batch/1'] } };
    evil.host(LEGACY).messages = { status: 201, json: { status: 'accepted' } };
    const dave = await fedUser(net, US, 'dave');
    const peerUser = `pat@${LEGACY}`;
    const N = 6;
    await Promise.all(Array.from({ length: N }, (_, i) => fetch(`${net.node(US).url}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dave.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: [dave.address, peerUser], message: `legacy ${i}` }),
      dispatcher: agentFor(US),
    }).then((r) => assert.equal(r.status, 201))));
    await eventually('all delivered to legacy.test', async () => {
      const rows = await net.provider(US).ctx.storage.db.selectFrom('outbox').select('state').where('destination', '=', LEGACY).execute();
      return rows.length === N && rows.every((r) => r.state === 'delivered');
    });
    assert.equal(evil.seen(LEGACY).filter((r) => r.method === 'POST' && r.path === '/messages').length, N);
  });
});

const agentFor = (domain: string): Agent => agents.for(domain);
