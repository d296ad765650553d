// The provider core as a user meets it: sign up, log in, chat live over WebSocket, history,
// conversations, read markers, restarts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProvider, http, user, send, Socket, type Started } from './helpers/harness.js';
import { encodeParticipantsSegment } from '../src/protocol/conversation.js';

describe('live chat on one provider', () => {
  let p: Started;
  before(async () => {
    p = await startProvider();
  });
  after(async () => p.stop());

  test('two users exchange messages both ways over the reference WebSocket, own messages echoed', async () => {
    const alice = await user(p.url, 'alice');
    const bob = await user(p.url, 'bob');
    const aSock = await Socket.open(p.wsUrl, '/messages', alice.token);
    const bSock = await Socket.open(p.wsUrl, '/messageStream', `Bearer ${bob.token}`);
    await new Promise((r) => setTimeout(r, 50)); // let authentication finish before sending

    const r1 = await send(p.url, alice.token, [alice.address, bob.address], 'Where are you?');
    assert.equal(r1.status, 201);
    assert.equal(r1.body.from, 'alice@localhost');
    assert.deepEqual(r1.body.to, ['alice@localhost', 'bob@localhost']);
    assert.equal(typeof r1.body.id, 'string');
    assert.ok(Date.parse(r1.body.sentAt) > 0);

    const gotB = await bSock.until((f) => f.find((m) => m.message === 'Where are you?'));
    // The reference frame is the message object itself.
    assert.equal(gotB.from, 'alice@localhost');
    assert.deepEqual(gotB.to, ['alice@localhost', 'bob@localhost']);
    assert.equal(gotB.id, r1.body.id);
    await aSock.until((f) => f.find((m) => m.id === r1.body.id)); // the sender's own devices too

    const r2 = await send(p.url, bob.token, [bob.address, alice.address], 'At home.');
    assert.equal(r2.status, 201);
    await aSock.until((f) => f.find((m) => m.message === 'At home.'));
    await bSock.until((f) => f.find((m) => m.message === 'At home.'));
    assert.equal(r2.body.conversationId, r1.body.conversationId, 'same participant set → same conversation');
    aSock.close();
    bSock.close();
  });

  test('a three-person conversation reaches everyone, and only them', async () => {
    const carol = await user(p.url, 'carol');
    const dave = await user(p.url, 'dave');
    const erin = await user(p.url, 'erin');
    const outsider = await user(p.url, 'frank');
    const socks = await Promise.all([carol, dave, erin, outsider].map((u) => Socket.open(p.wsUrl, '/messages', u.token)));
    await new Promise((r) => setTimeout(r, 50));
    const r = await send(p.url, dave.token, [carol.address, dave.address, erin.address], 'group hello');
    assert.equal(r.status, 201);
    for (const s of socks.slice(0, 3)) await s.until((f) => f.find((m) => m.message === 'group hello'));
    await send(p.url, carol.token, [carol.address, dave.address, erin.address], 'marker');
    await socks[0]!.until((f) => f.find((m) => m.message === 'marker'));
    assert.equal(socks[3]!.frames.length, 0, 'the outsider received nothing');
    const convs = await http(p.url, 'GET', '/conversations', { token: erin.token });
    assert.equal(convs.status, 200);
    const c = convs.body.conversations[0];
    assert.deepEqual(c.participants, [carol.address, dave.address, erin.address]);
    assert.equal(c.lastMessage.message, 'marker');
    assert.equal(c.unread, 2);
    const read = await http(p.url, 'POST', `/conversations/${c.id}/read`, { token: erin.token, json: {} });
    assert.equal(read.status, 200);
    assert.equal(read.body.lastReadSeq, c.lastSeq);
    const after = await http(p.url, 'GET', '/conversations', { token: erin.token });
    assert.equal(after.body.conversations[0].unread, 0);
    // The others see how far erin has read (her receipts are on by default).
    const seenByCarol = await http(p.url, 'GET', '/conversations', { token: carol.token });
    assert.deepEqual(seenByCarol.body.conversations[0].receipts, [{ address: erin.address, seq: c.lastSeq }]);
    const forbidden = await http(p.url, 'GET', `/conversations/${c.id}/messages`, { token: outsider.token });
    assert.equal(forbidden.status, 404);
    for (const s of socks) s.close();
  });

  test('several devices of one user all receive; a message sent on one device shows on the other', async () => {
    const gina = await user(p.url, 'gina');
    const hank = await user(p.url, 'hank');
    const second = (await http(p.url, 'POST', '/token', { form: { grant_type: 'password', username: 'gina@localhost', password: 'correct horse battery' } })).body;
    const d1 = await Socket.open(p.wsUrl, '/messages', gina.token);
    const d2 = await Socket.open(p.wsUrl, '/messages', second.access_token);
    await new Promise((r) => setTimeout(r, 50));
    const r = await send(p.url, gina.token, [gina.address, hank.address], 'from device 1');
    assert.equal(r.status, 201);
    await d1.until((f) => f.find((m) => m.id === r.body.id));
    await d2.until((f) => f.find((m) => m.id === r.body.id));
    d1.close();
    d2.close();
  });

  test('history pages with before/after/limit, and in the reference /messages/{base64url} form', async () => {
    const ivy = await user(p.url, 'ivy');
    const jon = await user(p.url, 'jon');
    const ids: number[] = [];
    for (let i = 0; i < 25; i++) ids.push((await send(p.url, ivy.token, [ivy.address, jon.address], `m${i}`)).body.seq);
    const conv = (await send(p.url, jon.token, [jon.address, ivy.address], 'm25')).body.conversationId;
    ids.push(ids[ids.length - 1]! + 1);
    const newest = await http(p.url, 'GET', `/conversations/${conv}/messages?limit=10`, { token: ivy.token });
    assert.deepEqual(newest.body.messages.map((m: any) => m.message), Array.from({ length: 10 }, (_, i) => `m${16 + i}`));
    assert.equal(newest.body.hasMore, true);
    const older = await http(p.url, 'GET', `/conversations/${conv}/messages?limit=10&before=${newest.body.messages[0].seq}`, { token: ivy.token });
    assert.deepEqual(older.body.messages.map((m: any) => m.message), Array.from({ length: 10 }, (_, i) => `m${6 + i}`));
    const forward = await http(p.url, 'GET', `/conversations/${conv}/messages?limit=5&after=${older.body.messages[9].seq}`, { token: ivy.token });
    assert.deepEqual(forward.body.messages.map((m: any) => m.message), ['m16', 'm17', 'm18', 'm19', 'm20']);

    // Reference form: any order, padded or not, any case.
    for (const parts of [[ivy.address, jon.address], ['JON@localhost', 'ivy@LOCALHOST']]) {
      const seg = encodeParticipantsSegment(parts);
      const padded = Buffer.from(JSON.stringify(parts)).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
      for (const s of [seg, padded]) {
        const h = await http(p.url, 'GET', `/messages/${s}?limit=3`, { token: jon.token });
        assert.equal(h.status, 200, JSON.stringify(h.body));
        assert.deepEqual(h.body.messages.map((m: any) => m.message), ['m23', 'm24', 'm25']);
      }
    }
    const notMine = await http(p.url, 'GET', `/messages/${encodeParticipantsSegment([ivy.address, 'zed@localhost'])}`, { token: jon.token });
    assert.equal(notMine.status, 403);
  });

  test('idempotent retry: the same id is stored once and answered with the original', async () => {
    const kim = await user(p.url, 'kim');
    await user(p.url, 'lee');
    const r1 = await send(p.url, kim.token, [kim.address, 'lee@localhost'], 'once', { id: 'retry-1' });
    const r2 = await send(p.url, kim.token, [kim.address, 'lee@localhost'], 'once', { id: 'retry-1' });
    assert.equal(r1.status, 201);
    assert.equal(r2.status, 201);
    assert.equal(r2.headers.get('intertalk-replayed'), 'true');
    assert.deepEqual(r2.body, r1.body);
    const conflict = await send(p.url, kim.token, [kim.address, 'lee@localhost'], 'different', { id: 'retry-1' });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error, 'id_conflict');
    const n = await p.provider.ctx.storage.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).where('id', '=', 'retry-1').executeTakeFirstOrThrow();
    assert.equal(Number(n.n), 1);
  });

  test('a message to an unknown local user is refused and nothing is stored', async () => {
    const nia = await user(p.url, 'nia');
    const r = await send(p.url, nia.token, [nia.address, 'nobody@localhost'], 'hello?');
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'unknown_recipient');
    assert.match(r.body.message, /nobody@localhost/);
    const n = await p.provider.ctx.storage.db.selectFrom('messages').select('seq').where('sender', '=', nia.address).execute();
    assert.equal(n.length, 0);
  });

  test('one group commit of many messages: each stored once, a repeated id answered from its first copy, seqs in call order', async () => {
    const ray = await user(p.url, 'ray');
    const sol = await user(p.url, 'sol');
    const to = [ray.address, sol.address];
    assert.equal((await send(p.url, ray.token, to, 'first: the conversation exists')).status, 201);
    // Called without awaiting: all of them join one batch (one transaction, multi-row INSERTs).
    const sentAt = new Date().toISOString();
    const messages = Array.from({ length: 30 }, (_, i) => ({ id: `burst-${i}`, from: ray.address, to, sentAt, message: `burst ${i}` }));
    const calls = messages.flatMap((m, i) => (i % 3 === 0 ? [m, { ...m }] : [m]));
    const res = await Promise.all(calls.map((m) => p.provider.ctx.messaging.accept(m, { kind: 'local' })));
    assert.equal(res.filter((r) => r.replayed).length, 10, 'each repeated id is a replay');
    const firstSeq = new Map<string, number>();
    for (const r of res) {
      const prior = firstSeq.get(r.message.id);
      if (prior !== undefined) assert.equal(r.message.seq, prior, `both answers for ${r.message.id} name one stored copy`);
      else firstSeq.set(r.message.id, r.message.seq);
    }
    const seqs = messages.map((m) => firstSeq.get(m.id)!);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'seqs follow the order of the calls');
    assert.equal(new Set(seqs).size, 30);
    const conv = res[0]!.message.conversationId;
    const h = await http(p.url, 'GET', `/conversations/${conv}/messages?limit=100`, { token: sol.token });
    assert.deepEqual((h.body.messages as Array<{ id: string }>).slice(1).map((m) => m.id), messages.map((m) => m.id));
    const c = await http(p.url, 'GET', `/conversations/${conv}`, { token: sol.token });
    assert.equal(c.body.lastSeq, Math.max(...seqs), 'the conversation points at its newest message');
  });

  test('one group commit across many conversations: each conversation points at its own newest message', async () => {
    const hub = await user(p.url, 'hub');
    const a = await user(p.url, 'spoke-a');
    const b = await user(p.url, 'spoke-b');
    // Four conversations of hub's (alone, with a, with b, with both), few sign-ups.
    const groups = [[hub.address], [hub.address, a.address], [hub.address, b.address], [hub.address, a.address, b.address]];
    for (const to of groups) assert.equal((await send(p.url, hub.token, to, 'open')).status, 201);
    // Three messages to each, all in one batch: one multi-conversation last_seq update.
    const sentAt = new Date().toISOString();
    const calls = [0, 1, 2].flatMap((k) => groups.map((to, i) => ({ id: `fan-${i}-${k}`, from: hub.address, to, sentAt, message: `fan ${i} ${k}` })));
    const res = await Promise.all(calls.map((m) => p.provider.ctx.messaging.accept(m, { kind: 'local' })));
    const newest = new Map<string, number>();
    for (const r of res) newest.set(r.message.conversationId, Math.max(r.message.seq, newest.get(r.message.conversationId) ?? 0));
    assert.equal(newest.size, 4);
    const convs = await http(p.url, 'GET', '/conversations', { token: hub.token });
    const listed = convs.body.conversations as Array<{ id: string; lastSeq: number; lastMessage: { message: string } }>;
    assert.equal(listed.length, 4);
    for (const c of listed) {
      assert.equal(c.lastSeq, newest.get(c.id), `conversation ${c.id} points at its newest message`);
      assert.match(c.lastMessage.message, / 2$/);
    }
    // Newest first: the list follows last_seq.
    assert.deepEqual(listed.map((c) => c.lastSeq), [...newest.values()].sort((x, y) => y - x));
  });

  test('a removed account stops receiving at once, though it was just written to', async () => {
    const ona = await user(p.url, 'ona');
    await user(p.url, 'pia');
    assert.equal((await send(p.url, ona.token, [ona.address, 'pia@localhost'], 'still there?')).status, 201);
    await p.provider.ctx.accounts.remove('pia');
    const r = await send(p.url, ona.token, [ona.address, 'pia@localhost'], 'and now?');
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error, 'unknown_recipient');
  });

  test('a valid client sentAt is kept; one in the future is refused', async () => {
    const max = await user(p.url, 'max');
    const kept = await send(p.url, max.token, [max.address], 'note to self', { sentAt: '2020-01-02T03:04:05+01:00' });
    assert.equal(kept.status, 201);
    assert.equal(kept.body.sentAt, '2020-01-02T03:04:05+01:00');
    const future = await send(p.url, max.token, [max.address], 'later', { sentAt: new Date(Date.now() + 3_600_000).toISOString() });
    assert.equal(future.status, 400);
    assert.match(future.body.message, /sentAt/);
  });

  test('CORS headers are on answers, errors and preflights', async () => {
    const res = await fetch(p.url + '/conversations', { headers: { origin: 'https://app.example' } });
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const pre = await fetch(p.url + '/messages', { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
    assert.ok(pre.status === 204 || pre.status === 200);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
  });
});

describe('sessions', () => {
  let p: Started;
  before(async () => {
    p = await startProvider({ INTERTALK_ACCESS_TOKEN_TTL: '2s', INTERTALK_WS_AUTH_TIMEOUT: '300ms' });
  });
  after(async () => p.stop());

  test('refresh rotates the refresh token; the old one stops working', async () => {
    const u = await user(p.url, 'rita');
    const r1 = await http(p.url, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: u.refresh } });
    assert.equal(r1.status, 200);
    assert.notEqual(r1.body.refresh_token, u.refresh);
    assert.equal(r1.body.token_type, 'Bearer');
    const again = await http(p.url, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: u.refresh } });
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_grant');
    const me = await http(p.url, 'GET', '/me', { token: r1.body.access_token });
    assert.equal(me.body.address, 'rita@localhost');
  });

  test('logout revokes the token and closes that session\'s sockets', async () => {
    const u = await user(p.url, 'sam');
    const s = await Socket.open(p.wsUrl, '/messages', JSON.stringify({ token: u.token }));
    await s.until((f) => f.find((m) => m.type === 'ready'));
    const out = await http(p.url, 'POST', '/logout', { token: u.token });
    assert.equal(out.status, 204);
    assert.equal((await s.waitClose()).code, 4003);
    const me = await http(p.url, 'GET', '/me', { token: u.token });
    assert.equal(me.status, 401);
    assert.equal(me.body.error, 'invalid_token');
  });

  test('RFC 7009 revocation of the refresh token ends the session', async () => {
    const u = await user(p.url, 'tess');
    const rv = await http(p.url, 'POST', '/revoke', { form: { token: u.refresh } });
    assert.equal(rv.status, 200);
    assert.equal((await http(p.url, 'GET', '/me', { token: u.token })).status, 401);
    assert.equal((await http(p.url, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: u.refresh } })).status, 400);
  });

  test('an unauthenticated socket is closed after the timeout; a bad token at once', async () => {
    const idle = await Socket.open(p.wsUrl, '/messages');
    assert.equal((await idle.waitClose()).code, 4004);
    const bad = await Socket.open(p.wsUrl, '/messages', 'ita_not-a-token');
    assert.equal((await bad.waitClose()).code, 4001);
    const badHello = await Socket.open(p.wsUrl, '/messages', '{"token": 5}');
    assert.equal((await badHello.waitClose()).code, 4000);
  });

  test('an expired token closes the socket with 4002', async () => {
    const u = await user(p.url, 'uma');
    const s = await Socket.open(p.wsUrl, '/messageStream', u.token);
    const closed = await s.waitClose(5000);
    assert.equal(closed.code, 4002);
    assert.equal((await http(p.url, 'GET', '/me', { token: u.token })).status, 401);
  });
});

describe('resume: no gap, no duplicate', () => {
  let p: Started;
  before(async () => {
    p = await startProvider();
  });
  after(async () => p.stop());

  test('a client that was away gets everything it missed, in order, then live traffic', async () => {
    const a = await user(p.url, 'ann');
    const b = await user(p.url, 'ben');
    const first = await Socket.open(p.wsUrl, '/messages', JSON.stringify({ token: b.token, since: 0 }));
    const ready = await first.until((f) => f.find((m) => m.type === 'ready'));
    assert.equal(ready.cursor, 0);
    await send(p.url, a.token, [a.address, b.address], 'seen live');
    const live = await first.until((f) => f.find((m) => m.type === 'message' && m.message.message === 'seen live'));
    const cursor = live.message.seq;
    first.close();
    await first.waitClose();

    const missed: number[] = [];
    for (let i = 0; i < 30; i++) missed.push((await send(p.url, a.token, [a.address, b.address], `away ${i}`)).body.seq);

    // Reconnect while more messages are being sent concurrently.
    const again = await Socket.open(p.wsUrl, '/messages', JSON.stringify({ token: b.token, since: cursor }));
    const during: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) during.push(send(p.url, a.token, [a.address, b.address], `during ${i}`));
    await Promise.all(during);
    await again.until((f) => f.filter((m) => m.type === 'message').length >= 50, 10_000);
    const seqs = again.json().filter((m) => m.type === 'message').map((m) => m.message.seq);
    assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'in order');
    assert.deepEqual(seqs.slice(0, 30), missed, 'everything missed, first');
    assert.equal(seqs.length, 50);
    assert.ok(!seqs.includes(cursor), 'nothing at or before the cursor');
    again.close();
  });
});

describe('restarts keep everything', () => {
  test('stop and start again on the same database: history intact, tokens still valid', async () => {
    const { tempDir } = await import('./helpers/harness.js');
    const dir = tempDir();
    const p1 = await startProvider({}, { dir });
    const a = await user(p1.url, 'olga');
    await user(p1.url, 'pete');
    const sent = await send(p1.url, a.token, [a.address, 'pete@localhost'], 'persisted');
    assert.equal(sent.status, 201);
    await p1.stop();
    const p2 = await startProvider({}, { dir });
    const h = await http(p2.url, 'GET', `/conversations/${sent.body.conversationId}/messages`, { token: a.token });
    assert.equal(h.status, 200);
    assert.deepEqual(h.body.messages, [sent.body]);
    await p2.stop();
  });
});
