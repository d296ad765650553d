// Sending over the live socket (src/realtime/commands.ts): `send` frames acknowledged with the
// stored message (its seq) in the sender's order although pipelined, the same error bodies as
// POST /messages for refused input (and nothing stored), idempotent retries after a reconnect,
// `request` frames for every other route, and a sender that does not read its acks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import WebSocket from 'ws';
import { http, Socket, startProvider, user, type Started } from './helpers/harness.js';
import { parseClientFrame, MAX_REF_LENGTH } from '../src/realtime/commands.js';

async function rich(s: Started, token: string): Promise<Socket> {
  const sock = await Socket.open(s.wsUrl, '/messageStream', JSON.stringify({ token }));
  await sock.until((f) => f.some((x) => x.type === 'ready'), 15_000);
  return sock;
}

const acks = (sock: Socket) => sock.json().filter((f) => f.type === 'ack');

async function messageCount(s: Started): Promise<number> {
  const r = await s.provider.ctx.storage.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

describe('sending over the socket', () => {
  let s: Started;
  let alice: { token: string; address: string };
  let bob: { token: string; address: string };

  before(async () => {
    s = await startProvider({ INTERTALK_SEND_RATE: '1000000' });
    alice = await user(s.url, 'alice');
    bob = await user(s.url, 'bob');
  });
  after(async () => {
    await s.stop();
  });

  test('200 pipelined sends are acknowledged 201 with their stored seq, in the order sent; the recipient gets each once, in that order', { timeout: 120_000 }, async () => {
    const a = await rich(s, alice.token);
    const b = await rich(s, bob.token);
    const N = 200;
    for (let i = 0; i < N; i++) a.ws.send(JSON.stringify({ type: 'send', ref: `r${i}`, message: { to: [alice.address, bob.address], message: `pipelined ${i}` } }));
    await a.until(() => acks(a).length >= N, 60_000);
    const got = acks(a);
    assert.equal(got.length, N);
    const byRef = new Map(got.map((x) => [x.ref, x]));
    const seqs: number[] = [];
    for (let i = 0; i < N; i++) {
      const ack = byRef.get(`r${i}`);
      assert.ok(ack, `no ack for r${i}`);
      assert.equal(ack.status, 201, JSON.stringify(ack));
      assert.equal(ack.body.message, `pipelined ${i}`);
      assert.equal(ack.body.from, alice.address);
      assert.ok(Number.isSafeInteger(ack.body.seq));
      seqs.push(ack.body.seq);
    }
    for (let i = 1; i < N; i++) assert.ok(seqs[i]! > seqs[i - 1]!, `seq of r${i} (${seqs[i]}) not after r${i - 1} (${seqs[i - 1]})`);
    const texts = await b.until((f) => {
      const t = f.filter((x) => x.type === 'message' && x.message.message.startsWith('pipelined ')).map((x) => x.message.message as string);
      return t.length >= N && t;
    }, 60_000);
    assert.deepEqual(texts, Array.from({ length: N }, (_, i) => `pipelined ${i}`));
    a.ws.close();
    b.ws.close();
  });

  test('a retry with the same id after a reconnect is acknowledged with the same seq, marked replayed, and not delivered twice', { timeout: 60_000 }, async () => {
    const body = { id: 'client-chosen-1', to: [alice.address, bob.address], message: 'once only' };
    const b = await rich(s, bob.token);
    let a = await rich(s, alice.token);
    a.ws.send(JSON.stringify({ type: 'send', ref: 'x', message: body }));
    const first = await a.until((f) => f.find((x) => x.type === 'ack' && x.ref === 'x'), 30_000);
    assert.equal(first.status, 201);
    assert.equal(first.replayed, undefined);
    a.ws.terminate();
    a = await rich(s, alice.token);
    a.ws.send(JSON.stringify({ type: 'send', ref: 'x-again', message: body }));
    const again = await a.until((f) => f.find((x) => x.type === 'ack' && x.ref === 'x-again'), 30_000);
    assert.equal(again.status, 201);
    assert.equal(again.replayed, true);
    assert.equal(again.body.seq, first.body.seq);
    // A marker after it: once it arrives, the retry would have arrived before it.
    a.ws.send(JSON.stringify({ type: 'send', ref: 'm', message: { to: [alice.address, bob.address], message: 'marker after the retry' } }));
    await b.until((f) => f.some((x) => x.type === 'message' && x.message.message === 'marker after the retry'), 30_000);
    assert.equal(b.json().filter((x) => x.type === 'message' && x.message.message === 'once only').length, 1);
    // The same id with other content is a conflict, as over HTTP.
    a.ws.send(JSON.stringify({ type: 'send', ref: 'conflict', message: { ...body, message: 'something else' } }));
    const conflict = await a.until((f) => f.find((x) => x.type === 'ack' && x.ref === 'conflict'), 30_000);
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error, 'id_conflict');
    a.ws.close();
    b.ws.close();
  });

  test('refused sends get the status and JSON error body POST /messages gives for the same input, and nothing is stored', { timeout: 60_000 }, async () => {
    const a = await rich(s, alice.token);
    const bad: unknown[] = [
      { to: [alice.address, "nobody@localhost"], message: 'to a typo' },
      { to: [alice.address, bob.address], message: '' },
      { to: [alice.address, bob.address], message: 'x', from: bob.address },
      { to: [], message: 'to no one' },
      { to: [alice.address, bob.address], message: 'bad rich', rich: { type: 'reaction' } },
      { to: 'not a list', message: 'x' },
    ];
    const before = await messageCount(s);
    for (const [i, m] of bad.entries()) {
      a.ws.send(JSON.stringify({ type: 'send', ref: `bad${i}`, message: m }));
      const ack = await a.until((f) => f.find((x) => x.type === 'ack' && x.ref === `bad${i}`), 30_000);
      const viaHttp = await http(s.url, 'POST', '/messages', { token: alice.token, json: m });
      assert.ok(viaHttp.status >= 400 && viaHttp.status < 500, `HTTP accepted ${JSON.stringify(m)}`);
      assert.equal(ack.status, viaHttp.status, `${JSON.stringify(m)}: socket ${ack.status}, HTTP ${viaHttp.status}`);
      assert.deepEqual(ack.body, viaHttp.body);
      assert.equal(typeof ack.body.error, 'string');
      assert.equal(typeof ack.body.message, 'string');
    }
    assert.equal(await messageCount(s), before, 'a refused send stored something');
    // Frames that are not commands we can run: answered, not dropped silently, and the socket stays.
    a.ws.send('{not json');
    a.ws.send(JSON.stringify({ type: 'send', message: { to: [alice.address, bob.address], message: 'no ref' } }));
    a.ws.send(JSON.stringify({ type: 'send', ref: 'no-message' }));
    a.ws.send(JSON.stringify({ type: 'request', ref: 'bad-path', method: 'GET', path: 'http://example.com/' }));
    const invalid = await a.until((f) => {
      const x = f.filter((y) => y.type === 'ack' && y.body?.error === 'invalid_frame');
      return x.length >= 4 && x;
    }, 30_000);
    assert.deepEqual(invalid.map((x) => x.ref), [null, null, 'no-message', 'bad-path']);
    assert.ok(invalid.every((x) => x.status === 400 && typeof x.body.message === 'string'));
    a.ws.send(JSON.stringify({ type: 'ping' }));
    await a.until((f) => f.some((x) => x.type === 'pong'), 30_000);
    assert.equal(await messageCount(s), before);
    a.ws.close();
  });

  test('request frames reach every other route with the socket\'s session: a reaction, an edit, a list', { timeout: 60_000 }, async () => {
    const a = await rich(s, alice.token);
    a.ws.send(JSON.stringify({ type: 'send', ref: 'orig', message: { to: [alice.address, bob.address], message: 'react to me' } }));
    const orig = await a.until((f) => f.find((x) => x.type === 'ack' && x.ref === 'orig'), 30_000);
    const conv = orig.body.conversationId as string;
    const seq = orig.body.seq as number;
    a.ws.send(JSON.stringify({ type: 'request', ref: 'react', method: 'POST', path: `/conversations/${conv}/messages/${seq}/reactions`, body: { emoji: '👍' } }));
    a.ws.send(JSON.stringify({ type: 'request', ref: 'edit', method: 'PATCH', path: `/conversations/${conv}/messages/${seq}`, body: { text: 'react to me, edited' } }));
    a.ws.send(JSON.stringify({ type: 'request', ref: 'list', method: 'GET', path: '/conversations' }));
    a.ws.send(JSON.stringify({ type: 'request', ref: 'missing', method: 'GET', path: '/conversations/nope' }));
    const [react, edit, list, missing] = await a.until((f) => {
      const want = ['react', 'edit', 'list', 'missing'].map((r) => f.find((x) => x.type === 'ack' && x.ref === r));
      return want.every(Boolean) && want;
    }, 30_000);
    assert.equal(react.status, 201, JSON.stringify(react));
    assert.equal(react.body.rich.type, 'reaction');
    assert.equal(edit.status, 201, JSON.stringify(edit));
    assert.equal(edit.body.rich.type, 'edit');
    assert.equal(list.status, 200);
    assert.ok(list.body.conversations.some((c: { id: string }) => c.id === conv));
    const viaHttp = await http(s.url, 'GET', '/conversations/nope', { token: alice.token });
    assert.equal(missing.status, viaHttp.status);
    assert.deepEqual(missing.body, viaHttp.body);
    const history = await http(s.url, 'GET', `/conversations/${conv}/messages`, { token: bob.token });
    const target = history.body.messages.find((m: { seq: number }) => m.seq === seq);
    assert.equal(target.text ?? target.rich?.text ?? target.message, 'react to me, edited');
    a.ws.close();
  });

  test('a sender that never reads its acks: every send is still stored once, and the server answers other clients meanwhile', { timeout: 180_000 }, async () => {
    const a = new WebSocket(`${s.wsUrl}/messageStream`);
    a.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      a.once('open', () => resolve());
      a.once('error', reject);
    });
    a.send(JSON.stringify({ token: alice.token }));
    await new Promise<void>((resolve) => a.once('message', () => resolve()));
    const sock = (a as unknown as { _socket: import('node:net').Socket })._socket;
    sock.pause(); // reads nothing from now on
    const before = await messageCount(s);
    const N = 2000;
    const text = 'x'.repeat(2000);
    for (let i = 0; i < N; i++) a.send(JSON.stringify({ type: 'send', ref: `f${i}`, message: { id: `flood-${i}`, to: [alice.address, bob.address], message: `${text} ${i}` } }));
    // Meanwhile another client is served.
    const other = await http(s.url, 'GET', '/conversations', { token: bob.token });
    assert.equal(other.status, 200);
    // Every send is stored, exactly once (the ids make retries harmless, so none can be doubled).
    const deadline = Date.now() + 150_000;
    let n = 0;
    while (Date.now() < deadline) {
      n = (await messageCount(s)) - before;
      if (n >= N || a.readyState !== WebSocket.OPEN) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // Either all were taken, or the server dropped the socket that would not read its acks
    // (4005) — but never more than were sent, and none twice.
    assert.ok(n <= N, `${n} stored for ${N} sent`);
    const rows = await s.provider.ctx.storage.db.selectFrom('messages').select('id').where('sender', '=', alice.address).where('id', 'like', 'flood-%').execute();
    assert.equal(new Set(rows.map((r) => r.id)).size, rows.length);
    if (a.readyState === WebSocket.OPEN) assert.equal(n, N);
    a.terminate();
  });
});

test('property: parseClientFrame never throws; send and request frames keep their ref; anything malformed is "invalid" with a reason', () => {
  const ref = fc.string({ minLength: 1, maxLength: MAX_REF_LENGTH });
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.json(), fc.jsonValue().map((v) => JSON.stringify(v))), (text) => {
      const f = parseClientFrame(text);
      if (f && f.type === 'invalid') assert.ok(f.message.length > 0);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(ref, fc.dictionary(fc.string(), fc.jsonValue()), (r, message) => {
      const f = parseClientFrame(JSON.stringify({ type: 'send', ref: r, message }));
      assert.deepEqual(f, { type: 'send', ref: r, message: JSON.parse(JSON.stringify(message)) });
    }),
  );
  fc.assert(
    fc.property(ref, fc.constantFrom('get', 'POST', 'Put', 'patch', 'DELETE'), fc.stringMatching(/^\/([a-z0-9?=&-][a-z0-9/?=&-]{0,40})?$/), (r, method, path) => {
      const f = parseClientFrame(JSON.stringify({ type: 'request', ref: r, method, path }));
      assert.equal(f?.type, 'request');
      if (f?.type === 'request') {
        assert.equal(f.ref, r);
        assert.equal(f.method, method.toUpperCase());
      }
    }),
  );
  fc.assert(
    fc.property(fc.oneof(fc.constant(''), fc.string({ minLength: MAX_REF_LENGTH + 1, maxLength: MAX_REF_LENGTH + 20 })), (r) => {
      assert.equal(parseClientFrame(JSON.stringify({ type: 'send', ref: r, message: {} }))?.type, 'invalid');
    }),
  );
  for (const path of ['//evil.example/x', 'relative', 'http://x/', '/with space']) {
    assert.equal(parseClientFrame(JSON.stringify({ type: 'request', ref: 'r', method: 'GET', path }))?.type, 'invalid', path);
  }
  assert.equal(parseClientFrame(JSON.stringify({ type: 'something-new' })), null);
  assert.deepEqual(parseClientFrame('{"type":"ping"}'), { type: 'ping' });
});
