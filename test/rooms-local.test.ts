// Rooms hosted on one provider with local members (docs/rooms.md): create, policy (public /
// invite-only, history from join / from the start, name and topic), join/leave, post, history
// with since/limit/after, GET /rooms, single- and multi-use invite codes, moderation (remove a
// message or a member, ban a user or a domain), the per-member rate limit, live roomMessage
// frames; every refusal is a 4xx JSON error that stores nothing.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startProvider, http, user, Socket, type Started } from './helpers/harness.js';

type U = Awaited<ReturnType<typeof user>>;

describe('rooms on one provider', () => {
  let p: Started;
  let alice: U, bob: U, carol: U, dave: U;
  const post = (u: U, room: string, message: string, extra: Record<string, unknown> = {}) => http(p.url, 'POST', `/rooms/${room}/messages`, { token: u.token, json: { message, ...extra } });
  const join = (u: U, room: string, code?: string) => http(p.url, 'PUT', `/rooms/${room}/members/${encodeURIComponent(u.address)}`, { token: u.token, json: code ? { code } : {} });
  const history = (u: U, room: string, q = '') => http(p.url, 'GET', `/rooms/${room}/messages${q}`, { token: u.token });
  const count = async () => Number((await p.provider.ctx.storage.db.selectFrom('room_messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst())?.n);

  before(async () => {
    p = await startProvider({ INTERTALK_ROOM_POST_RATE: '20' });
    [alice, bob, carol, dave] = [await user(p.url, 'alice'), await user(p.url, 'bob'), await user(p.url, 'carol'), await user(p.url, 'dave')];
  });
  after(async () => p.stop());

  test('create a public room, name and topic; duplicates and bad names refused', async () => {
    const r = await http(p.url, 'POST', '/rooms', { token: alice.token, json: { name: 'lobby', title: 'The lobby', topic: 'anything goes', history: 'start' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.room, 'lobby#localhost');
    assert.equal(r.body.visibility, 'public');
    assert.equal(r.body.members, 1);
    const again = await http(p.url, 'POST', '/rooms', { token: bob.token, json: { name: 'lobby' } });
    assert.equal(again.status, 409);
    assert.equal(again.body.error, 'room_exists');
    const bad = await http(p.url, 'POST', '/rooms', { token: bob.token, json: { name: 'a#b' } });
    assert.equal(bad.status, 400);
    assert.equal(typeof bad.body.message, 'string');
    assert.equal((await http(p.url, 'POST', '/rooms', { json: { name: 'anon' } })).status, 401);
    const list = await http(p.url, 'GET', '/rooms');
    assert.deepEqual(list.body.rooms.map((x: { room: string }) => x.room), ['lobby#localhost']);
  });

  test('history "start": a late joiner sees everything, in room order; since and limit and after', async () => {
    for (let i = 1; i <= 5; i++) assert.equal((await post(alice, 'lobby', `early ${i}`)).status, 201);
    const outsider = await post(bob, 'lobby', 'not yet a member');
    assert.equal(outsider.status, 403);
    assert.equal(outsider.body.error, 'not_a_member');
    assert.equal((await history(bob, 'lobby')).status, 403);
    assert.equal((await join(bob, 'lobby')).status, 201);
    assert.equal((await join(bob, 'lobby')).status, 200, 'joining again is a no-op');
    const h = await history(bob, 'lobby');
    assert.deepEqual(h.body.messages.map((m: { message: string }) => m.message), ['early 1', 'early 2', 'early 3', 'early 4', 'early 5']);
    assert.deepEqual(h.body.messages.map((m: { seq: number }) => m.seq), [1, 2, 3, 4, 5]);
    assert.equal(h.body.messages[0].from, alice.address);
    assert.equal(h.body.messages[0].room, 'lobby#localhost');
    const limited = await history(bob, 'lobby', '?limit=2&after=2');
    assert.deepEqual(limited.body.messages.map((m: { seq: number }) => m.seq), [3, 4]);
    const future = await history(bob, 'lobby', `?since=${Date.now() + 3_600_000}`);
    assert.deepEqual(future.body.messages, []);
    const since = await history(bob, 'lobby', `?since=${Date.parse(h.body.messages[3].sentAt)}`);
    assert.ok(since.body.messages.length >= 2 && since.body.messages.every((m: { seq: number }) => m.seq >= 4), JSON.stringify(since.body));
    assert.equal((await history(bob, 'lobby', '?limit=0')).status, 400);
  });

  test('history "join": a late joiner sees only what came after joining', async () => {
    assert.equal((await http(p.url, 'POST', '/rooms', { token: alice.token, json: { name: 'fresh', history: 'join' } })).status, 201);
    await post(alice, 'fresh', 'before carol');
    assert.equal((await join(carol, 'fresh')).status, 201);
    await post(alice, 'fresh', 'after carol');
    const h = await history(carol, 'fresh');
    assert.deepEqual(h.body.messages.map((m: { message: string }) => m.message), ['after carol']);
    const owner = await history(alice, 'fresh');
    assert.deepEqual(owner.body.messages.map((m: { message: string }) => m.message), ['before carol', 'after carol']);
  });

  test('an id already used by the sender is a replay: stored once', async () => {
    const before = await count();
    const a = await post(alice, 'lobby', 'once', { id: 'idem-1' });
    const b = await post(alice, 'lobby', 'once', { id: 'idem-1' });
    assert.equal(a.status, 201);
    assert.equal(b.headers.get('intertalk-replayed'), 'true');
    assert.equal(b.body.seq, a.body.seq);
    assert.equal(await count(), before + 1);
  });

  test('invite-only: no code, bad code, single-use used once, multi-use many times; referral form', async () => {
    assert.equal((await http(p.url, 'POST', '/rooms', { token: alice.token, json: { name: 'secret', visibility: 'invite' } })).status, 201);
    assert.deepEqual((await http(p.url, 'GET', '/rooms')).body.rooms.map((x: { room: string }) => x.room).includes('secret#localhost'), false);
    assert.equal((await http(p.url, 'GET', '/rooms/secret', { token: bob.token })).status, 404, 'an invite-only room is not shown to outsiders');
    const none = await join(bob, 'secret');
    assert.equal(none.status, 403);
    assert.equal(none.body.error, 'invite_required');
    assert.equal((await join(bob, 'secret', 'nonsense')).body.error, 'invalid_invite');
    const single = await http(p.url, 'POST', '/rooms/secret/invites', { token: alice.token, json: {} });
    assert.equal(single.status, 201);
    assert.equal(single.body.referral, `room=secret%23localhost&code=${single.body.code}`);
    // Join by referral through the member-side endpoint.
    const byRef = await http(p.url, 'POST', '/me/rooms', { token: bob.token, json: { referral: single.body.referral } });
    assert.equal(byRef.status, 201, JSON.stringify(byRef.body));
    const reused = await join(carol, 'secret', single.body.code);
    assert.equal(reused.status, 403);
    assert.equal(reused.body.error, 'invalid_invite');
    // A plain member of an invite-only room cannot mint invites.
    assert.equal((await http(p.url, 'POST', '/rooms/secret/invites', { token: bob.token, json: {} })).status, 403);
    const multi = await http(p.url, 'POST', '/rooms/secret/invites', { token: alice.token, json: { multiUse: true } });
    assert.equal((await join(carol, 'secret', multi.body.code)).status, 201);
    assert.equal((await join(dave, 'secret', multi.body.code)).status, 201);
    const members = await http(p.url, 'GET', '/rooms/secret/members', { token: dave.token });
    assert.deepEqual(members.body.members.map((m: { address: string }) => m.address).sort(), [alice.address, bob.address, carol.address, dave.address].sort());
    const mine = await http(p.url, 'GET', '/me/rooms', { token: dave.token });
    assert.deepEqual(mine.body.rooms.map((r: { room: string }) => r.room), ['secret#localhost']);
  });

  test('you can only add yourself; leave; a left member cannot post or read', async () => {
    const other = await http(p.url, 'PUT', `/rooms/lobby/members/${encodeURIComponent(carol.address)}`, { token: dave.token, json: {} });
    assert.equal(other.status, 403);
    assert.equal(other.body.error, 'sub_mismatch');
    assert.equal((await join(dave, 'lobby')).status, 201);
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/members/${encodeURIComponent(dave.address)}`, { token: dave.token })).status, 204);
    const before = await count();
    assert.equal((await post(dave, 'lobby', 'ghost')).status, 403);
    assert.equal((await history(dave, 'lobby')).status, 403);
    assert.equal(await count(), before);
  });

  test('moderation: remove a message, remove a member, ban a user and a domain; policy changes', async () => {
    const m = await post(bob, 'lobby', 'spam spam');
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/messages/${m.body.seq}`, { token: bob.token })).status, 403, 'members are not moderators');
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/messages/${m.body.seq}`, { token: alice.token })).status, 204);
    const h = await history(alice, 'lobby', '?limit=500');
    assert.equal(h.body.messages.some((x: { message: string }) => x.message === 'spam spam'), false);
    const raw = await p.provider.ctx.storage.db.selectFrom('room_messages').select('body').where('seq', '=', m.body.seq).where('room', '=', 'lobby').executeTakeFirstOrThrow();
    assert.equal(raw.body.includes('spam spam'), false, 'the removed text is gone from the database');

    assert.equal((await join(carol, 'lobby')).status, 201);
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/members/${encodeURIComponent(carol.address)}`, { token: bob.token })).status, 403);
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/members/${encodeURIComponent(carol.address)}`, { token: alice.token })).status, 204);

    // Bob becomes a moderator and bans carol; she cannot rejoin.
    assert.equal((await http(p.url, 'PUT', `/rooms/lobby/members/${encodeURIComponent(bob.address)}/role`, { token: alice.token, json: { role: 'moderator' } })).status, 200);
    assert.equal((await join(carol, 'lobby')).status, 201);
    const ban = await http(p.url, 'PUT', `/rooms/lobby/bans/${encodeURIComponent(carol.address)}`, { token: bob.token });
    assert.equal(ban.status, 200);
    assert.deepEqual(ban.body.removed, [carol.address]);
    const rejoin = await join(carol, 'lobby');
    assert.equal(rejoin.status, 403);
    assert.equal(rejoin.body.error, 'banned');
    assert.equal((await http(p.url, 'PUT', `/rooms/lobby/bans/localhost`, { token: bob.token })).status, 400, 'a moderator cannot ban their own domain');
    // A whole domain: on a room where the owner is elsewhere would be typical; here a ban of a foreign domain is stored.
    assert.equal((await http(p.url, 'PUT', `/rooms/lobby/bans/evil.example`, { token: alice.token })).status, 200);
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/bans/${encodeURIComponent(carol.address)}`, { token: alice.token })).status, 204);
    assert.equal((await join(carol, 'lobby')).status, 201);

    const patched = await http(p.url, 'PATCH', '/rooms/lobby', { token: bob.token, json: { topic: 'new topic', visibility: 'invite' } });
    assert.equal(patched.status, 200);
    assert.equal(patched.body.topic, 'new topic');
    assert.equal((await join(dave, 'lobby')).body.error, 'invite_required');
    assert.equal((await http(p.url, 'PATCH', '/rooms/lobby', { token: carol.token, json: { topic: 'mine' } })).status, 403);
  });

  test('live roomMessage frames reach local members on rich sockets', async () => {
    const s = await Socket.open(p.wsUrl, '/messageStream', JSON.stringify({ token: carol.token }));
    await s.until((f) => f.find((x) => x.type === 'ready'));
    const sent = await post(alice, 'lobby', 'live hello');
    const frame = await s.until((f) => f.find((x) => x.type === 'roomMessage' && x.message.id === sent.body.id));
    assert.equal(frame.message.room, 'lobby#localhost');
    assert.equal(frame.message.seq, sent.body.seq);
    // A moderator's removal and a policy change are live too (roomMessageRemoved, roomUpdated).
    assert.equal((await http(p.url, 'DELETE', `/rooms/lobby/messages/${sent.body.seq}`, { token: alice.token })).status, 204);
    const gone = await s.until((f) => f.find((x) => x.type === 'roomMessageRemoved' && x.seq === sent.body.seq), 15_000);
    assert.equal(gone.room, 'lobby#localhost');
    assert.equal((await http(p.url, 'PATCH', '/rooms/lobby', { token: alice.token, json: { topic: 'live topic' } })).status, 200);
    const updated = await s.until((f) => f.find((x) => x.type === 'roomUpdated' && x.room.topic === 'live topic'), 15_000);
    assert.equal(updated.room.room, 'lobby#localhost');
    s.close();
  });

  test('per-member rate limit: 429 with Retry-After, nothing stored past it', async () => {
    assert.equal((await http(p.url, 'POST', '/rooms', { token: dave.token, json: { name: 'flood' } })).status, 201);
    const before = await count();
    let refused: Awaited<ReturnType<typeof post>> | null = null;
    let ok = 0;
    for (let i = 0; i < 25 && !refused; i++) {
      const r = await post(dave, 'flood', `m${i}`);
      if (r.status === 201) ok++;
      else refused = r;
    }
    assert.ok(refused, 'the limit was reached');
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal(await count(), before + ok);
  });
});
