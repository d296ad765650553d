// pipeline/1 (docs/federation.md): several batch/1 requests in flight per destination, each
// carrying the sender's `stream` and `seq`; the receiver applies one stream's batches in seq
// order. Real providers on real sockets: a burst of thousands of messages arrives once and in
// order over a few kept-alive connections; raw signed batches out of order are applied in order,
// a missing one breaks the stream (503 out_of_order), so does a partial 429; a peer without
// pipeline/1 gets one batch at a time; malformed fields are refused; a receiver restart loses
// nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import { Agent, fetch } from 'undici';
import { DevnetAgents, readAnswer, startNetwork, type Network } from './helpers/network.js';
import { EvilPeer, peerKey, signToken, type PeerKey } from './helpers/evil-peer.js';
import { counter, eventually, fed, fedUser, type FedUser } from './helpers/fed.js';
import { batchBody, bodySha256 } from '../src/federation/batch.js';
import { advertisedExtensions } from '../src/federation/service.js';
import { clientBucket } from '../src/auth/limiter.js';
import { canonicalParticipants, conversationId } from '../src/protocol/conversation.js';

const ALPHA = 'alpha.test'; // the sender: INTERTALK_FEDERATION_PIPELINE=4 (the default)
const BETA = 'beta.test'; // a receiver; batches wait up to 15 s for their predecessors
const GAMMA = 'gamma.test'; // INTERTALK_FEDERATION_RATE=250
const DELTA = 'delta.test'; // INTERTALK_FEDERATION_RATE=10, client addresses from X-Forwarded-For, 1.5 s wait
const EVIL = 'evil.test'; // signs raw batches
const PLAIN = 'plain.test'; // advertises batch/1 but not pipeline/1
const MALLORY = `mallory@${EVIL}`;

let net: Network;
let evil: EvilPeer;
let key: PeerKey;
const agents = new DevnetAgents(() => net);

interface Res {
  status: number;
  text: string;
  body: any;
}

const nowS = () => Math.floor(Date.now() / 1000);

function message(to: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: `m-${randomUUID()}`, from: MALLORY, to: [MALLORY, to], sentAt: new Date(Date.now() - 1000).toISOString(), message: 'hello', ...over };
}

async function postRaw(domain: string, body: string, extraHeaders: Record<string, string> = {}): Promise<Res> {
  const t = nowS();
  const token = await signToken(key, { iss: EVIL, sub: EVIL, aud: domain, iat: t, exp: t + 60, jti: randomUUID(), body_sha256: bodySha256(body) });
  const res = await fetch(`${net.node(domain).url}/messages/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...extraHeaders },
    body,
    dispatcher: agentFor(domain),
  });
  return { status: res.status, ...(await readAnswer(res)) };
}

/** A raw pipelined batch of `ms` from evil.test. */
const pipelined = (domain: string, stream: string, seq: number, ms: Array<Record<string, unknown>>, headers: Record<string, string> = {}) =>
  postRaw(domain, batchBody(ms.map((m) => JSON.stringify(m)), { stream, seq }), headers);

async function messageCount(domain: string): Promise<number> {
  const db = net.provider(domain).ctx.storage.db;
  return Number((await db.selectFrom('messages').select(db.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
}

/** Ids of the stored messages of a conversation on `domain`, in seq order. */
async function storedIds(domain: string, conv: string): Promise<string[]> {
  const db = net.provider(domain).ctx.storage.db;
  return (await db.selectFrom('messages').select('id').where('conversation_id', '=', conv).orderBy('seq').execute()).map((r) => r.id);
}

const convOf = (participants: string[]) => conversationId(canonicalParticipants(participants));

/** POST /messages as `u`, `count` times, one after the other; the conversation ids used. */
async function sendMany(u: FedUser, to: string[], count: number, label: string): Promise<Set<string>> {
  const convs = new Set<string>();
  for (let i = 0; i < count; i++) {
    const peer = to[i % to.length]!;
    const res = await fetch(`${net.node(u.domain).url}/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${u.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ to: [u.address, peer], message: `${label} ${i}` }),
      dispatcher: agentFor(u.domain),
    });
    const body = (await res.json()) as { conversationId: string };
    assert.equal(res.status, 201, JSON.stringify(body));
    convs.add(body.conversationId);
  }
  return convs;
}

/** Every conversation arrived at `domain` whole: the same ids, in the same order, once. */
async function arrivedInOrder(from: string, to: string, convs: Iterable<string>): Promise<boolean> {
  for (const c of convs) {
    const [sent, got] = [await storedIds(from, c), await storedIds(to, c)];
    if (got.length !== sent.length) return false;
    assert.deepEqual(got, sent, `conversation ${c}: order or content differs`);
  }
  return true;
}

/** At no point more than a prefix of any conversation: nothing after a gap. */
async function onlyPrefixes(from: string, to: string, convs: Iterable<string>): Promise<number> {
  let total = 0;
  for (const c of convs) {
    const [sent, got] = [await storedIds(from, c), await storedIds(to, c)];
    assert.deepEqual(got, sent.slice(0, got.length), `conversation ${c}: not a prefix of what was sent`);
    total += got.length;
  }
  return total;
}

async function outboxStates(domain: string, destination: string): Promise<Array<{ state: string; last_error: string | null }>> {
  return net.provider(domain).ctx.storage.db.selectFrom('outbox').select(['state', 'last_error']).where('destination', '=', destination).orderBy('id').execute();
}

describe('federation: pipeline/1', () => {
  before(async () => {
    evil = await EvilPeer.listen();
    net = await startNetwork({
      domains: [ALPHA, BETA, GAMMA, DELTA],
      envFor: {
        [ALPHA]: { INTERTALK_FEDERATION_PIPELINE: '4' },
        [BETA]: { INTERTALK_FEDERATION_PIPELINE_WAIT: '15s' },
        [GAMMA]: { INTERTALK_FEDERATION_RATE: '250' },
        [DELTA]: { INTERTALK_FEDERATION_RATE: '10', INTERTALK_TRUST_PROXY: 'true', INTERTALK_FEDERATION_PIPELINE_WAIT: '1500ms' },
      },
      extraResolve: { [EVIL]: evil.port, [PLAIN]: evil.port },
    });
    evil.setCert(await net.ca.issue([EVIL, PLAIN]));
    key = await peerKey('k1');
    evil.host(EVIL).keys.set('k1', key.publicJwk);
    for (const d of [BETA, GAMMA, DELTA]) for (const n of ['bob', 'rita', 'rolf']) await net.provider(d).ctx.accounts.create(n, 'correct horse battery');
  });

  after(async () => {
    await agents.close();
    await net?.stop();
    await evil?.close();
    if (net) rmSync(net.dir, { recursive: true, force: true });
  });

  test('the well-known advertises pipeline/1, unless the provider runs as several instances', async () => {
    const res = await fetch(`${net.node(BETA).url}/.well-known/intertalk`, { dispatcher: agentFor(BETA) });
    const doc = (await res.json()) as { extensions: string[] };
    assert.ok(doc.extensions.includes('batch/1') && doc.extensions.includes('pipeline/1'), JSON.stringify(doc));
    assert.ok(!advertisedExtensions({ redis: 'redis://127.0.0.1:6379' }).includes('pipeline/1'));
    assert.ok(advertisedExtensions({ redis: 'redis://127.0.0.1:6379' }).includes('batch/1'));
  });

  test('thousands of messages from several senders arrive once, in order, over a few connections, several batches in flight', async () => {
    const senders = await Promise.all(['s0', 's1', 's2', 's3'].map((n) => fedUser(net, ALPHA, n)));
    const to = [`rita@${BETA}`, `rolf@${BETA}`];
    // Which connections of BETA carry alpha's batches.
    const server = net.provider(BETA).app.server as Server;
    const sockets = new Set<Socket>();
    let batchRequests = 0;
    const onRequest = (req: IncomingMessage) => {
      if (req.url === '/messages/batch' && req.headers['user-agent'] === `intertalk/${ALPHA}`) {
        sockets.add(req.socket);
        batchRequests++;
      }
    };
    server.on('request', onRequest);
    const beforeCount = await messageCount(BETA);
    const PER_SENDER = 500;
    const convs = new Set<string>();
    try {
      // A backlog first (the outbox paused, as while a peer is down): the drain then finds far
      // more than one batch queued. The second half is sent while it drains.
      const outbox = fed(net.provider(ALPHA)).outbox;
      await outbox.stop();
      for (const c of (await Promise.all(senders.map((u) => sendMany(u, to, PER_SENDER / 2, `${u.name} a`)))).flatMap((s) => [...s])) convs.add(c);
      outbox.start();
      await outbox.sweep();
      for (const c of (await Promise.all(senders.map((u) => sendMany(u, to, PER_SENDER / 2, `${u.name} b`)))).flatMap((s) => [...s])) convs.add(c);
      assert.equal(convs.size, senders.length * to.length);
      await eventually('every message at beta.test', () => arrivedInOrder(ALPHA, BETA, convs), 180_000, 250);
    } finally {
      server.off('request', onRequest);
    }
    assert.equal((await messageCount(BETA)) - beforeCount, senders.length * PER_SENDER, 'each message once');
    await eventually('all marked delivered', async () => (await outboxStates(ALPHA, BETA)).every((r) => r.state === 'delivered'), 30_000);
    const maxInFlight = fed(net.provider(ALPHA)).outbox.maxInFlight.get(BETA) ?? 0;
    assert.ok(maxInFlight > 1, `at most ${maxInFlight} batch in flight`);
    assert.ok(maxInFlight <= 4, `${maxInFlight} batches in flight, more than INTERTALK_FEDERATION_PIPELINE`);
    // INTERTALK_PEER_CONCURRENCY (4) connections at most, kept alive and reused; a little slack
    // for one the server may have closed.
    assert.ok(batchRequests >= 20, `${batchRequests} batch requests`);
    assert.ok(sockets.size <= 6, `${batchRequests} batches over ${sockets.size} connections`);
  });

  test('raw batches out of order (seq 1 before seq 0) are applied 0, then 1', async () => {
    const bob = `bob@${BETA}`;
    const ms = [0, 1, 2, 3].map((i) => message(bob, { message: `ordered ${i}` }));
    const stream = `raw-${randomUUID()}`;
    const gate = fed(net.provider(BETA)).streamOrder!;
    const streamsBefore = gate.size;
    const second = pipelined(BETA, stream, 1, ms.slice(2));
    // seq 1 is verified and waits for its turn (the gate knows the stream) before seq 0 is sent.
    await eventually('seq 1 waiting', async () => gate.size > streamsBefore, 10_000, 10);
    const first = await pipelined(BETA, stream, 0, ms.slice(0, 2));
    const later = await second;
    assert.equal(first.status, 200, first.text);
    assert.equal(later.status, 200, later.text);
    assert.deepEqual(first.body.results.map((r: { status: number }) => r.status), [201, 201]);
    assert.deepEqual(later.body.results.map((r: { status: number }) => r.status), [201, 201]);
    assert.deepEqual(await storedIds(BETA, convOf([MALLORY, bob])), ms.map((m) => m.id));
    // A replay of an applied batch is answered as duplicates.
    const replay = await pipelined(BETA, stream, 0, ms.slice(0, 2));
    assert.deepEqual(replay.body.results.map((r: { status: number }) => r.status), [200, 200], replay.text);
  });

  test('seq 1 alone waits, then is refused 503 out_of_order with nothing stored; the stream stays refused', async () => {
    const bob = `bob@${DELTA}`;
    const stream = `lonely-${randomUUID()}`;
    const headers = { 'x-forwarded-for': '203.0.113.1' };
    const before = await messageCount(DELTA);
    const lonely = await pipelined(DELTA, stream, 1, [message(bob)], headers);
    assert.equal(lonely.status, 503, lonely.text);
    assert.equal(lonely.body?.error, 'out_of_order', lonely.text);
    assert.equal(typeof lonely.body?.message, 'string');
    const next = await pipelined(DELTA, stream, 2, [message(bob)], { 'x-forwarded-for': '203.0.113.2' });
    assert.equal(next.status, 503, next.text);
    assert.equal(next.body?.error, 'out_of_order', next.text);
    // Even the missing predecessor, late: the sender starts a new stream instead.
    const late = await pipelined(DELTA, stream, 0, [message(bob)], { 'x-forwarded-for': '203.0.113.3' });
    assert.equal(late.status, 503, late.text);
    assert.equal(await messageCount(DELTA), before, 'nothing stored');
  });

  test('a partial 429 breaks the stream: the next batch is refused whole', async () => {
    // delta.test takes 10 messages a minute from evil.test (3 used above): 12 cannot all fit.
    const bob = `bob@${DELTA}`;
    const stream = `limited-${randomUUID()}`;
    const ms = Array.from({ length: 12 }, (_, i) => message(bob, { message: `limited ${i}` }));
    const part = await pipelined(DELTA, stream, 0, ms, { 'x-forwarded-for': '203.0.113.4' });
    assert.equal(part.status, 200, part.text);
    const statuses: number[] = part.body.results.map((r: { status: number }) => r.status);
    const taken = statuses.filter((s) => s === 201).length;
    assert.ok(taken >= 1 && taken < 12, part.text);
    assert.deepEqual(statuses, [...Array(taken).fill(201), ...Array(12 - taken).fill(429)], part.text);
    // A new window (as a minute later): the next batch passes the limit, and the stream's gate
    // refuses it.
    await limits(DELTA).perPeer.reset(`fed-peer:${EVIL}`);
    const next = await pipelined(DELTA, stream, 1, [message(bob)], { 'x-forwarded-for': '203.0.113.5' });
    assert.equal(next.status, 503, next.text);
    assert.equal(next.body?.error, 'out_of_order', next.text);
    assert.deepEqual(await storedIds(DELTA, convOf([MALLORY, bob])), ms.slice(0, taken).map((m) => m.id));
  });

  test('end to end, a peer\'s rate limit met mid-pipeline loses, duplicates and reorders nothing', async () => {
    const senders = await Promise.all(['g0', 'g1'].map((n) => fedUser(net, ALPHA, n)));
    const to = [`rita@${GAMMA}`, `rolf@${GAMMA}`];
    const outbox = fed(net.provider(ALPHA)).outbox;
    // 400 messages queued at once for a peer taking 250 a minute: several batches in flight
    // when the limit is met part-way through one of them.
    await outbox.stop();
    const convs = new Set((await Promise.all(senders.map((u) => sendMany(u, to, 200, `${u.name}`)))).flatMap((s) => [...s]));
    outbox.start();
    await outbox.sweep();
    const waiting = await eventually('the rest waiting with the peer\'s reason', async () => {
      const rows = await outboxStates(ALPHA, GAMMA);
      const queued = rows.filter((r) => r.state === 'queued');
      return rows.length === 400 && queued.length > 0 && queued.length < 400 && queued.some((r) => /rate_limited|out_of_order/.test(r.last_error ?? '')) ? queued : null;
    }, 60_000, 100);
    assert.ok(waiting.length >= 150, `${waiting.length} waiting`);
    const stored = await onlyPrefixes(ALPHA, GAMMA, convs);
    assert.ok(stored <= 250, `${stored} stored`);
    // A new window: gamma.test's limits start again (as a minute later), and alpha.test learns
    // it may go on (as when gamma.test talks to it).
    await limits(GAMMA).perPeer.reset(`fed-peer:${ALPHA}`);
    await limits(GAMMA).perIp.reset(`fed-ip:${clientBucket('127.0.0.1')}`);
    await outbox.peerIsUp(GAMMA);
    await eventually('every message at gamma.test', () => arrivedInOrder(ALPHA, GAMMA, convs), 120_000, 250);
    let total = 0;
    for (const c of convs) total += (await storedIds(GAMMA, c)).length;
    assert.equal(total, 400, 'each message once');
    await eventually('all marked delivered', async () => (await outboxStates(ALPHA, GAMMA)).every((r) => r.state === 'delivered'), 30_000);
  });

  test('a peer without pipeline/1 gets one batch at a time, without stream or seq', async () => {
    evil.host(PLAIN).wellKnown = { status: 200, json: { server: `https://${PLAIN}:${evil.port}`, extensions: ['batch/1'] } };
    let running = 0;
    let maxRunning = 0;
    const bodies: any[] = [];
    evil.host(PLAIN).batch = async (raw) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        const b = JSON.parse(raw.toString('utf8'));
        bodies.push(b);
        await new Promise((r) => setTimeout(r, 30));
        return { status: 200, json: { results: b.messages.map((m: { id: string }) => ({ id: m.id, status: 201 })) } };
      } finally {
        running--;
      }
    };
    const u = await fedUser(net, ALPHA, 'pia');
    const outbox = fed(net.provider(ALPHA)).outbox;
    await outbox.stop();
    await sendMany(u, [`pat@${PLAIN}`], 250, 'plain');
    outbox.start();
    await outbox.sweep();
    await eventually('all delivered to plain.test', async () => {
      const rows = await outboxStates(ALPHA, PLAIN);
      return rows.length === 250 && rows.every((r) => r.state === 'delivered');
    }, 60_000);
    assert.ok(bodies.length >= 3, `${bodies.length} batches`);
    assert.equal(maxRunning, 1, 'one batch at a time');
    assert.equal(outbox.maxInFlight.get(PLAIN), 1);
    for (const b of bodies) assert.deepEqual(Object.keys(b), ['messages']);
    assert.deepEqual(bodies.flatMap((b) => b.messages.map((m: { message: string }) => m.message)), Array.from({ length: 250 }, (_, i) => `plain ${i}`));
  });

  test('malformed stream or seq → 400 with a JSON error, nothing stored', async () => {
    const bob = `bob@${BETA}`;
    const wire = () => JSON.stringify(message(bob));
    const raw = (fields: string) => `{${fields}"messages":[${wire()}]}`;
    const cases = [
      raw('"stream":"","seq":0,'),
      raw(`"stream":"${'x'.repeat(65)}","seq":0,`),
      raw('"stream":"a b","seq":0,'),
      raw('"stream":"ä","seq":0,'),
      raw('"stream":7,"seq":0,'),
      raw('"stream":null,"seq":0,'),
      raw('"stream":["s"],"seq":0,'),
      raw('"stream":"s","seq":-1,'),
      raw('"stream":"s","seq":1.5,'),
      raw('"stream":"s","seq":"1",'),
      raw('"stream":"s","seq":null,'),
      raw('"stream":"s","seq":9007199254740992,'),
      raw('"stream":"s",'),
      raw('"seq":0,'),
      // Far ahead of the stream's turn: refused at once rather than held.
      raw(`"stream":"far-${randomUUID()}","seq":65,`),
    ];
    for (const body of cases) {
      const before = await messageCount(BETA);
      const res = await postRaw(BETA, body);
      assert.equal(res.status, 400, `${body.slice(0, 80)}: ${res.text}`);
      assert.equal(res.body?.error, 'invalid_batch', res.text);
      assert.equal(typeof res.body?.message, 'string', res.text);
      assert.equal(await messageCount(BETA), before, 'nothing stored');
    }
  });

  test('the receiver restarting mid-burst: nothing lost, duplicated or reordered', async () => {
    const u = await fedUser(net, ALPHA, 'rick');
    const to = [`rita@${BETA}`, `bob@${BETA}`];
    const outbox = fed(net.provider(ALPHA)).outbox;
    await outbox.stop();
    const convs = await sendMany(u, to, 600, 'restart');
    const beforeCount = await messageCount(BETA);
    outbox.start();
    await outbox.sweep();
    await eventually('some at beta.test', async () => (await messageCount(BETA)) > beforeCount, 60_000, 20);
    await net.stopNode(BETA);
    await net.startNode(BETA);
    await outbox.peerIsUp(BETA);
    await eventually('every message at beta.test', () => arrivedInOrder(ALPHA, BETA, convs), 180_000, 250);
    assert.equal((await messageCount(BETA)) - beforeCount, 600, 'each message once');
    await eventually('all marked delivered', async () => (await outboxStates(ALPHA, BETA)).every((r) => r.state === 'delivered'), 60_000);
    assert.ok((await counter(net.provider(ALPHA), 'intertalk_federation_batches_in_flight')) >= 0);
  });
});

/** A provider's inbound federation rate limiters (to start a new window without waiting a minute). */
function limits(domain: string): { perPeer: { reset(k: string): Promise<void> }; perIp: { reset(k: string): Promise<void> } } {
  return (fed(net.provider(domain)).inbound as unknown as { o: ReturnType<typeof limits> }).o;
}

const agentFor = (domain: string): Agent => agents.for(domain);
