// signals/1 on one provider: typing indicators and read receipts between local users, over a real
// server with real sockets. Rich-mode sockets get the events, bare (reference) sockets never do;
// receipts turned off tell nobody, yet the reader's own unread count clears.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { http, send, Socket, startProvider, user, type Started } from './helpers/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('signals on one provider', () => {
  let p: Started;
  const sockets: Socket[] = [];
  let alice: { token: string; address: string };
  let bob: { token: string; address: string };
  let carol: { token: string; address: string };

  const rich = async (token: string) => {
    const s = await Socket.open(p.wsUrl, '/messages', JSON.stringify({ token }));
    sockets.push(s);
    await s.until((f) => f.some((x) => x.type === 'ready'));
    return s;
  };
  const bare = async (token: string) => {
    const before = p.provider.realtime.connectionCount;
    const s = await Socket.open(p.wsUrl, '/messages', token);
    sockets.push(s);
    for (let i = 0; i < 500 && p.provider.realtime.connectionCount <= before; i++) await sleep(10);
    return s;
  };
  const ofType = (s: Socket, type: string) => s.json().filter((f) => f.type === type);

  before(async () => {
    p = await startProvider();
    alice = await user(p.url, 'alice');
    bob = await user(p.url, 'bob');
    carol = await user(p.url, 'carol');
  });

  after(async () => {
    for (const s of sockets) s.close();
    await p?.stop();
  });

  test('typing reaches the other participants\' rich sockets only, expires by itself and is rate-limited', async () => {
    const m = await send(p.url, alice.token, [alice.address, bob.address], 'hello bob');
    assert.equal(m.status, 201);
    const conv: string = m.body.conversationId;
    const bobRich = await rich(bob.token);
    const bobBare = await bare(bob.token);
    const aliceRich = await rich(alice.token);
    const carolRich = await rich(carol.token);

    const t0 = Date.now();
    const r = await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: alice.token });
    assert.equal(r.status, 204);
    const ev = await bobRich.until((f) => f.find((x) => x.type === 'typing'));
    assert.deepEqual(Object.keys(ev).sort(), ['conversationId', 'expiresAt', 'from', 'state', 'type']);
    assert.equal(ev.conversationId, conv);
    assert.equal(ev.from, alice.address);
    assert.equal(ev.state, 'typing');
    const ttl = Date.parse(ev.expiresAt) - t0;
    assert.ok(ttl > 3000 && ttl <= 6500, `expiresAt about 5 s ahead (${ttl} ms)`);

    // Repeats within a second are no-ops (still 204).
    for (let i = 0; i < 3; i++) assert.equal((await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: alice.token, json: { state: 'typing' } })).status, 204);
    // A change of state goes through at once.
    assert.equal((await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: alice.token, json: { state: 'stopped' } })).status, 204);
    const stopped = await bobRich.until((f) => f.find((x) => x.type === 'typing' && x.state === 'stopped'));
    assert.ok(Date.parse(stopped.expiresAt) <= Date.now() + 1000);
    assert.equal(ofType(bobRich, 'typing').length, 2, 'one typing event, then one stopped');

    // After a second, typing again is announced again.
    await sleep(1100);
    assert.equal((await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: alice.token, json: {} })).status, 204);
    await bobRich.until((f) => f.filter((x) => x.type === 'typing').length === 3);

    await sleep(200);
    assert.deepEqual(bobBare.json().map((f) => f.id), [], 'the bare socket got nothing (the message was sent before it connected)');
    assert.equal(ofType(aliceRich, 'typing').length, 0, 'the typist is not told about herself');
    assert.equal(ofType(carolRich, 'typing').length, 0, 'non-participants hear nothing');

    // Never stored as a message.
    const h = await http(p.url, 'GET', `/conversations/${conv}/messages`, { token: bob.token });
    assert.deepEqual(h.body.messages.map((x: any) => x.message), ['hello bob']);

    // Errors.
    assert.equal((await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: carol.token })).status, 404, 'not a member');
    assert.equal((await http(p.url, 'POST', `/conversations/${conv}/typing`)).status, 401);
    const badState = await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: alice.token, json: { state: 'dancing' } });
    assert.equal(badState.status, 400);
    assert.equal(badState.body.error, 'invalid_request');
    assert.equal((await http(p.url, 'POST', '/conversations/nope/typing', { token: alice.token })).status, 400);
  });

  test('read receipts: recorded by message id, shown to the others, live on rich sockets only', async () => {
    const m1 = await send(p.url, alice.token, [alice.address, bob.address, carol.address], 'group one');
    const conv: string = m1.body.conversationId;
    const m2 = await send(p.url, alice.token, [alice.address, bob.address, carol.address], 'group two');
    const aliceRich = await rich(alice.token);
    const aliceBare = await bare(alice.token);
    const carolRich = await rich(carol.token);
    const bobRich = await rich(bob.token);

    let list = await http(p.url, 'GET', '/conversations', { token: bob.token });
    assert.equal(list.body.conversations.find((c: any) => c.id === conv).unread, 2);

    // Bob reads the first message only.
    const r1 = await http(p.url, 'POST', `/conversations/${conv}/read`, { token: bob.token, json: { seq: m1.body.seq } });
    assert.equal(r1.status, 200);
    assert.deepEqual(r1.body, { conversationId: conv, lastReadSeq: m1.body.seq }, 'the read response is unchanged');
    const ev = await aliceRich.until((f) => f.find((x) => x.type === 'receipt'));
    assert.deepEqual(ev, { type: 'receipt', conversationId: conv, from: bob.address, messageId: m1.body.id, messageSender: alice.address, seq: m1.body.seq, readAt: ev.readAt });
    assert.ok(Math.abs(Date.parse(ev.readAt) - Date.now()) < 5000);
    await carolRich.until((f) => f.find((x) => x.type === 'receipt' && x.from === bob.address));
    list = await http(p.url, 'GET', '/conversations', { token: bob.token });
    assert.equal(list.body.conversations.find((c: any) => c.id === conv).unread, 1);

    // Then everything.
    await http(p.url, 'POST', `/conversations/${conv}/read`, { token: bob.token });
    await aliceRich.until((f) => f.find((x) => x.type === 'receipt' && x.messageId === m2.body.id));
    list = await http(p.url, 'GET', '/conversations', { token: bob.token });
    assert.equal(list.body.conversations.find((c: any) => c.id === conv).unread, 0);

    // Reading the same position again, or an older one, tells nobody anything new.
    await http(p.url, 'POST', `/conversations/${conv}/read`, { token: bob.token });
    await http(p.url, 'POST', `/conversations/${conv}/read`, { token: bob.token, json: { seq: m1.body.seq } });

    const rc = await http(p.url, 'GET', `/conversations/${conv}/receipts`, { token: alice.token });
    assert.equal(rc.status, 200);
    assert.deepEqual(rc.body, [{ address: bob.address, messageId: m2.body.id, messageSender: alice.address, seq: m2.body.seq, readAt: rc.body[0].readAt }]);
    // Bob's own view leaves him out.
    assert.deepEqual((await http(p.url, 'GET', `/conversations/${conv}/receipts`, { token: bob.token })).body, []);
    const outsider = await user(p.url, 'oscar');
    assert.equal((await http(p.url, 'GET', `/conversations/${conv}/receipts`, { token: outsider.token })).status, 404);

    await sleep(200);
    assert.equal(ofType(aliceRich, 'receipt').length, 2, 'exactly two receipts (the repeats were no-ops)');
    assert.equal(ofType(bobRich, 'receipt').length, 0, 'the reader gets no receipt of his own');
    assert.ok(ofType(bobRich, 'read').length >= 1, 'his own devices get the read marker, as before');
    assert.deepEqual(aliceBare.frames, [], 'bare sockets get neither receipts nor typing');

    // Receipts are not messages, and not replayed on resume.
    const h = await http(p.url, 'GET', `/conversations/${conv}/messages`, { token: alice.token });
    assert.deepEqual(h.body.messages.map((x: any) => x.message), ['group one', 'group two']);
    const resumed = await Socket.open(p.wsUrl, '/messages', JSON.stringify({ token: alice.token, since: 0 }));
    sockets.push(resumed);
    await resumed.until((f) => f.some((x) => x.type === 'ready'));
    assert.deepEqual([...new Set(resumed.json().map((f) => f.type))].sort(), ['message', 'ready']);
  });

  test('with receipts turned off, the others get nothing; the reader\'s unread count still clears', async () => {
    const dave = await user(p.url, 'dave');
    const erin = await user(p.url, 'erin');
    assert.deepEqual((await http(p.url, 'GET', '/me/settings', { token: erin.token })).body, { sendReadReceipts: true });
    const erinRich = await rich(erin.token);
    const off = await http(p.url, 'PUT', '/me/settings', { token: erin.token, json: { sendReadReceipts: false } });
    assert.equal(off.status, 200);
    assert.deepEqual(off.body, { sendReadReceipts: false });
    await erinRich.until((f) => f.find((x) => x.type === 'settings' && x.sendReadReceipts === false));
    assert.deepEqual((await http(p.url, 'GET', '/me/settings', { token: erin.token })).body, { sendReadReceipts: false });

    const m = await send(p.url, dave.token, [dave.address, erin.address], 'are you reading this?');
    const conv: string = m.body.conversationId;
    const daveRich = await rich(dave.token);
    const r = await http(p.url, 'POST', `/conversations/${conv}/read`, { token: erin.token });
    assert.deepEqual(r.body, { conversationId: conv, lastReadSeq: m.body.seq });
    const list = await http(p.url, 'GET', '/conversations', { token: erin.token });
    assert.equal(list.body.conversations.find((c: any) => c.id === conv).unread, 0, 'her own unread count clears');
    // A typing signal after the read: once Dave has it, a receipt would have arrived before it.
    await http(p.url, 'POST', `/conversations/${conv}/typing`, { token: erin.token });
    await daveRich.until((f) => f.find((x) => x.type === 'typing'));
    await sleep(100);
    assert.equal(ofType(daveRich, 'receipt').length, 0, 'no receipt was sent');
    assert.deepEqual((await http(p.url, 'GET', `/conversations/${conv}/receipts`, { token: dave.token })).body, [], 'and none is shown');

    // Turned back on, the next read is shared again.
    assert.deepEqual((await http(p.url, 'PUT', '/me/settings', { token: erin.token, json: { sendReadReceipts: true } })).body, { sendReadReceipts: true });
    const m2 = await send(p.url, dave.token, [dave.address, erin.address], 'and now?');
    await http(p.url, 'POST', `/conversations/${conv}/read`, { token: erin.token });
    const ev = await daveRich.until((f) => f.find((x) => x.type === 'receipt'));
    assert.equal(ev.messageId, m2.body.id);
    assert.equal(ev.from, erin.address);
    assert.equal((await http(p.url, 'GET', `/conversations/${conv}/receipts`, { token: dave.token })).body[0].messageId, m2.body.id);

    // Bad settings.
    for (const json of [{ sendReadReceipts: 'no' }, { colour: 'blue' }, [true]]) {
      const bad = await http(p.url, 'PUT', '/me/settings', { token: erin.token, json });
      assert.equal(bad.status, 400, JSON.stringify(json));
      assert.equal(bad.body.error, 'invalid_request');
    }
    assert.equal((await http(p.url, 'GET', '/me/settings')).status, 401);
  });
});
