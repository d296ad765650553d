// rich/1 on one provider, through the client endpoints (docs/protocol.md, src/messaging/rich-routes.ts):
// replies, reactions and their removal, edits (the second referencing the first), deletes that
// scrub the text from the database, conversation names; live WebSocket events for each action,
// in order, at both participants; refusals for outsiders and non-senders that change nothing;
// references into another conversation.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import { startProvider, http, user, send, Socket, tempDir, type Started } from './helpers/harness.js';
import { sqliteUrl } from './helpers/database.js';

type U = Awaited<ReturnType<typeof user>>;

/** Every text value stored anywhere in the provider's database (SQLite or PostgreSQL), with where it is. */
async function scanDatabase(p: Started, needle: string): Promise<string[]> {
  const db = p.provider.ctx.storage.db as unknown as Kysely<any>;
  const hits: string[] = [];
  for (const { name } of await db.introspection.getTables()) {
    for (const row of (await db.selectFrom(name).selectAll().execute()) as Array<Record<string, unknown>>) {
      for (const [col, v] of Object.entries(row)) {
        const s = typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : '';
        if (s.includes(needle)) hits.push(`${name}.${col}: ${s.slice(0, 200)}`);
      }
    }
  }
  return hits;
}

async function messageBodies(p: Started): Promise<Array<{ seq: number; kind: string; body: string }>> {
  return p.provider.ctx.storage.db.selectFrom('messages').select(['seq', 'kind', 'body']).orderBy('seq').execute();
}

async function richSocket(p: Started, u: U): Promise<Socket> {
  const s = await Socket.open(p.wsUrl, '/messageStream', JSON.stringify({ token: u.token }));
  await s.until((f) => f.find((x) => x.type === 'ready'));
  return s;
}

/** The message frames a socket got (bare frames are message objects; rich ones are envelopes). */
function messagesOf(s: Socket): any[] {
  return s.json().flatMap((f) => (f.type === 'message' && f.message ? [f.message] : f.from && f.to ? [f] : []));
}

describe('rich/1 actions on one provider', () => {
  let p: Started;
  let alice: U, bob: U, carol: U;
  let conv: string;
  let aSock: Socket, bSock: Socket, cSock: Socket;
  let original: any; // alice's message that is replied to, reacted to, edited twice, deleted
  let reply: any, edit1: any, edit2: any;
  const path = (rest = '') => `/conversations/${conv}${rest}`;
  const hist = async (u: U = bob) => {
    const r = await http(p.url, 'GET', path('/messages?limit=500'), { token: u.token });
    assert.equal(r.status, 200);
    return r.body.messages as any[];
  };
  const bySeq = async (seq: number, u: U = bob) => (await hist(u)).find((m) => m.seq === seq);

  before(async () => {
    p = await startProvider();
    alice = await user(p.url, 'alice');
    bob = await user(p.url, 'bob');
    carol = await user(p.url, 'carol');
    // Alice on the reference (bare) socket, Bob on a rich-mode socket, Carol (an outsider) too.
    aSock = await Socket.open(p.wsUrl, '/messages', alice.token);
    bSock = await richSocket(p, bob);
    cSock = await richSocket(p, carol);
    await new Promise((r) => setTimeout(r, 50));
    const r = await send(p.url, alice.token, [alice.address, bob.address], 'secret-kumquat-1 where are you?');
    assert.equal(r.status, 201);
    original = r.body;
    conv = r.body.conversationId;
  });
  after(async () => {
    aSock?.close();
    bSock?.close();
    cSock?.close();
    await p.stop();
  });

  test('reply: quotes the referenced message, with the plain fallback in message', async () => {
    const r = await http(p.url, 'POST', path('/messages'), { token: bob.token, json: { text: 'At home.', replyTo: original.seq } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    reply = r.body;
    assert.equal(reply.from, bob.address);
    assert.deepEqual(reply.to, [alice.address, bob.address]);
    assert.deepEqual(reply.rich, { type: 'reply', text: 'At home.', reference: { id: original.id, sender: alice.address, type: 'content', text: 'secret-kumquat-1 where are you?' } });
    assert.equal(reply.message, '↩ “secret-kumquat-1 where are you?”: At home.');
    await aSock.until(() => messagesOf(aSock).find((m) => m.id === reply.id));
  });

  test('reaction and its removal; history aggregates reactions per emoji', async () => {
    const r1 = await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: bob.token, json: { emoji: '❤️' } });
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.deepEqual(r1.body.rich, { type: 'reaction', reference: { id: original.id, sender: alice.address, type: 'content', text: 'secret-kumquat-1 where are you?' }, reaction: { emoji: '❤️' } });
    assert.equal(r1.body.message, '❤️ to “secret-kumquat-1 where are you?”');
    const r2 = await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: alice.token, json: { emoji: '❤️' } });
    assert.equal(r2.status, 201);
    const r3 = await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: bob.token, json: { emoji: '👍' } });
    assert.equal(r3.status, 201);
    // Reacting twice with the same emoji counts once.
    assert.equal((await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: bob.token, json: { emoji: '👍' } })).status, 201);
    let m = await bySeq(original.seq);
    // Sorted by emoji, then reactor: the same on every provider, whatever the arrival order.
    assert.deepEqual(m.reactions, [
      { emoji: '❤️', count: 2, by: [alice.address, bob.address] },
      { emoji: '👍', count: 1, by: [bob.address] },
    ]);

    const rm = await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: bob.token, json: { emoji: '👍', remove: true } });
    assert.equal(rm.status, 201);
    assert.deepEqual(rm.body.rich.reaction, { emoji: '👍', remove: true });
    assert.equal(rm.body.message, '(withdrew 👍 from “secret-kumquat-1 where are you?”)');
    const rm2 = await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: alice.token, json: { emoji: '❤️', remove: true } });
    assert.equal(rm2.status, 201);
    m = await bySeq(original.seq);
    assert.deepEqual(m.reactions, [{ emoji: '❤️', count: 1, by: [bob.address] }]);

    // Not an emoji, or a reaction to a reaction: refused.
    assert.equal((await http(p.url, 'POST', path(`/messages/${original.seq}/reactions`), { token: bob.token, json: { emoji: 'two words' } })).body.error, 'invalid_rich');
    const onReaction = await http(p.url, 'POST', path(`/messages/${r1.body.seq}/reactions`), { token: alice.token, json: { emoji: '👍' } });
    assert.equal(onReaction.status, 400);
    assert.equal(onReaction.body.error, 'not_reactable');
  });

  test('edit twice: the second edit references the first; history shows the latest text, editCount 2', async () => {
    const e1 = await http(p.url, 'PATCH', path(`/messages/${original.seq}`), { token: alice.token, json: { text: 'secret-kumquat-2 where are you now?' } });
    assert.equal(e1.status, 201, JSON.stringify(e1.body));
    edit1 = e1.body;
    assert.equal(edit1.rich.type, 'edit');
    assert.equal(edit1.rich.text, 'secret-kumquat-2 where are you now?');
    assert.deepEqual(edit1.rich.reference, { id: original.id, sender: alice.address, type: 'content', text: 'secret-kumquat-1 where are you?' });
    assert.equal(edit1.message, '✎ secret-kumquat-2 where are you now?');

    let m = await bySeq(original.seq);
    assert.equal(m.message, 'secret-kumquat-2 where are you now?');
    assert.equal(m.edited, true);
    assert.equal(m.editCount, 1);

    const e2 = await http(p.url, 'PATCH', path(`/messages/${original.seq}`), { token: alice.token, json: { text: 'secret-kumquat-3 where are you, Bob?', formatted: 'secret-kumquat-3 where _are_ you, Bob?' } });
    assert.equal(e2.status, 201, JSON.stringify(e2.body));
    edit2 = e2.body;
    // COI: multiple edits reference the last edited message, not the original.
    assert.deepEqual(edit2.rich.reference, { id: edit1.id, sender: alice.address, type: 'edit', text: 'secret-kumquat-2 where are you now?' });

    m = await bySeq(original.seq);
    assert.equal(m.message, 'secret-kumquat-3 where are you, Bob?');
    assert.equal(m.messageFormatted, 'secret-kumquat-3 where _are_ you, Bob?');
    assert.equal(m.format, 'text/markdown');
    assert.equal(m.edited, true);
    assert.equal(m.editCount, 2);
    assert.equal(m.editedAt, edit2.sentAt);
    assert.equal(m.id, original.id, 'the message keeps its identity');
    assert.equal(m.from, alice.address);
    // A reply made now quotes the current text.
    const r = await http(p.url, 'POST', path('/messages'), { token: bob.token, json: { text: 'ok', replyTo: original.seq } });
    assert.equal(r.status, 201);
    assert.equal(r.body.rich.reference.text, 'secret-kumquat-3 where are you, Bob?');
    assert.equal(r.body.rich.reference.type, 'content');
  });

  test('non-senders and outsiders are refused, and nothing changes', async () => {
    const before = await hist(alice);
    const aFrames = aSock.frames.length;
    const bFrames = bSock.frames.length;
    const refusals: Array<[string, U, string, string, unknown, number, string]> = [
      ['bob edits alice\'s message', bob, 'PATCH', path(`/messages/${original.seq}`), { text: 'forged' }, 403, 'not_your_message'],
      ['bob deletes alice\'s message', bob, 'DELETE', path(`/messages/${original.seq}`), undefined, 403, 'not_your_message'],
      ['carol reads the history', carol, 'GET', path('/messages'), undefined, 404, 'not_found'],
      ['carol replies', carol, 'POST', path('/messages'), { text: 'hi', replyTo: original.seq }, 404, 'not_found'],
      ['carol reacts', carol, 'POST', path(`/messages/${original.seq}/reactions`), { emoji: '👍' }, 404, 'not_found'],
      ['carol edits', carol, 'PATCH', path(`/messages/${original.seq}`), { text: 'forged' }, 404, 'not_found'],
      ['carol deletes', carol, 'DELETE', path(`/messages/${original.seq}`), undefined, 404, 'not_found'],
      ['carol renames', carol, 'PUT', path('/name'), { name: 'pwned' }, 404, 'not_found'],
      ['an unknown seq', bob, 'PATCH', path('/messages/999999'), { text: 'x' }, 404, 'unknown_message'],
    ];
    for (const [why, u, method, url, json, status, error] of refusals) {
      const r = await http(p.url, method, url, { token: u.token, ...(json !== undefined ? { json } : {}) });
      assert.equal(r.status, status, `${why}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, error, why);
    }
    // The same through POST /messages with a hand-made rich object: the provider completes the
    // reference from its store and applies the rule (only the original sender edits/deletes).
    for (const type of ['edit', 'delete'] as const) {
      const r = await send(p.url, bob.token, [alice.address, bob.address], '', { rich: { type, text: 'forged', reference: { id: original.id, sender: alice.address } } });
      assert.equal(r.status, 403, `${type}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, 'not_your_message');
      // …and claiming the message is one's own does not find it.
      const r2 = await send(p.url, bob.token, [alice.address, bob.address], '', { rich: { type, text: 'forged', reference: { id: original.id, sender: bob.address } } });
      assert.equal(r2.status, 404, `${type}: ${JSON.stringify(r2.body)}`);
      assert.equal(r2.body.error, 'unknown_message');
    }
    // Carol cannot reach the conversation by naming its participants either.
    const r = await send(p.url, carol.token, [alice.address, bob.address], 'x', { rich: { type: 'reaction', reaction: { emoji: '👍' }, reference: { id: original.id, sender: alice.address } } });
    assert.equal(r.status, 400); // from must be one of to
    assert.deepEqual(await hist(alice), before, 'history unchanged');
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(aSock.frames.length, aFrames, 'no frame for refused actions');
    assert.equal(bSock.frames.length, bFrames, 'no frame for refused actions');
    assert.equal(messagesOf(cSock).length, 0, 'the outsider saw nothing');
  });

  test('delete: a tombstone in history, and the text gone from the database entirely', async () => {
    assert.ok((await scanDatabase(p, 'secret-kumquat')).length > 0, 'the scan finds the text before the delete');
    const d = await http(p.url, 'DELETE', path(`/messages/${original.seq}`), { token: alice.token });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    assert.deepEqual(d.body.rich, { type: 'delete', reference: { id: original.id, sender: alice.address, type: 'content', text: null } });
    assert.equal(d.body.message, '🗑 (deleted a message)');

    const h = await hist();
    const m = h.find((x) => x.seq === original.seq);
    assert.equal(m.deleted, true);
    assert.equal(m.deletedAt, d.body.sentAt);
    assert.equal(m.message, '');
    assert.equal(m.messageFormatted, undefined);
    assert.equal(m.reactions, undefined, 'a deleted message shows no reactions');
    assert.equal(m.id, original.id);
    // Its edits are tombstones too; replies and reactions keep their own text but lose the quote.
    for (const e of [edit1, edit2]) {
      const x = h.find((y) => y.seq === e.seq);
      assert.equal(x.deleted, true);
      assert.equal(x.message, '');
      assert.equal(x.rich.text, undefined);
      assert.equal(x.rich.reference.text, null);
    }
    const rp = h.find((x) => x.seq === reply.seq);
    assert.equal(rp.rich.text, 'At home.');
    assert.equal(rp.rich.reference.text, null);
    assert.equal(rp.message, '↩ a message: At home.');

    // Gone from every stored message body, and from every other table.
    for (const row of await messageBodies(p)) assert.ok(!row.body.includes('kumquat'), `message ${row.seq} (${row.kind}) still holds the text: ${row.body}`);
    assert.deepEqual(await scanDatabase(p, 'kumquat'), []);

    // Once deleted: no more edits, no second delete.
    const again = await http(p.url, 'DELETE', path(`/messages/${original.seq}`), { token: alice.token });
    assert.equal(again.status, 409);
    assert.equal(again.body.error, 'deleted');
    const edit = await http(p.url, 'PATCH', path(`/messages/${original.seq}`), { token: alice.token, json: { text: 'back' } });
    assert.equal(edit.status, 409);
    // Nor through the generic route with a raw rich edit.
    const raw = await http(p.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, bob.address], rich: { type: 'edit', text: 'back again', reference: { id: original.id, sender: alice.address } } } });
    assert.equal(raw.status, 409, JSON.stringify(raw.body));
    assert.equal(raw.body.error, 'deleted');
    // A reply to it now quotes nothing.
    const late = await http(p.url, 'POST', path('/messages'), { token: bob.token, json: { text: 'what was it?', replyTo: original.seq } });
    assert.equal(late.status, 201);
    assert.equal(late.body.rich.reference.text, null);
    assert.equal(late.body.message, '↩ a message: what was it?');
  });

  test('rename: the conversation title follows property messages; "" removes it', async () => {
    const r = await http(p.url, 'PUT', path('/name'), { token: bob.token, json: { name: '  Weekend plans ' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.deepEqual(r.body.rich, { type: 'property', property: { name: 'displayName', value: 'Weekend plans' } });
    assert.equal(r.body.message, '✎ named the conversation “Weekend plans”');
    let c = await http(p.url, 'GET', path(), { token: alice.token });
    assert.equal(c.body.title, 'Weekend plans');
    const list = await http(p.url, 'GET', '/conversations', { token: alice.token });
    assert.equal(list.body.conversations.find((x: any) => x.id === conv).title, 'Weekend plans');

    const bad = await http(p.url, 'PUT', path('/name'), { token: bob.token, json: { name: 'line\nbreak' } });
    assert.equal(bad.status, 400);
    assert.equal((await http(p.url, 'PUT', path('/name'), { token: bob.token, json: { name: 'n'.repeat(129) } })).status, 400);

    const clear = await http(p.url, 'PUT', path('/name'), { token: alice.token, json: { name: '' } });
    assert.equal(clear.status, 201);
    assert.equal(clear.body.message, '✎ removed the conversation name');
    c = await http(p.url, 'GET', path(), { token: bob.token });
    assert.equal(c.body.title, null);
  });

  test('every action reached both participants live, in the order it was stored', async () => {
    const last = await hist(alice);
    const expected = last.map((m) => [m.seq, m.id, m.rich?.type ?? 'content']);
    // Alice's bare socket and Bob's rich-mode socket each saw every message, in seq order.
    for (const [who, s] of [['alice', aSock], ['bob', bSock]] as const) {
      await s.until(() => messagesOf(s).length >= expected.length);
      const got = messagesOf(s).map((m) => [m.seq, m.id, m.rich?.type ?? 'content']);
      assert.deepEqual(got, expected, `${who}'s socket`);
    }
    const kinds = expected.map((e) => e[2]);
    assert.deepEqual(kinds, ['content', 'reply', 'reaction', 'reaction', 'reaction', 'reaction', 'reaction', 'reaction', 'edit', 'edit', 'reply', 'delete', 'reply', 'property', 'property']);
    assert.equal(messagesOf(cSock).length, 0, 'the outsider received nothing');
  });
});

describe('retried rich actions', () => {
  test('a retried message with the same id is answered with the original and marked as a replay', async () => {
    const p = await startProvider();
    try {
      const alice = await user(p.url, 'alice');
      const bob = await user(p.url, 'bob');
      const first = await send(p.url, alice.token, [alice.address, bob.address], 'hi');
      const path = `/conversations/${first.body.conversationId}/messages`;
      const a = await http(p.url, 'POST', path, { token: bob.token, json: { id: 'reply-1', text: 'hello', replyTo: first.body.seq } });
      const b = await http(p.url, 'POST', path, { token: bob.token, json: { id: 'reply-1', text: 'hello', replyTo: first.body.seq } });
      assert.equal(a.status, 201);
      assert.equal(a.headers.get('intertalk-replayed'), null);
      assert.equal(b.status, 201);
      assert.equal(b.headers.get('intertalk-replayed'), 'true');
      assert.deepEqual(b.body, a.body);
    } finally {
      await p.stop();
    }
  });
});

describe('concurrent renames', () => {
  test('the latest sentAt wins on every provider, whatever order renames arrive in', async () => {
    const p = await startProvider();
    try {
      const alice = await user(p.url, 'alice');
      const bob = await user(p.url, 'bob');
      const to = [alice.address, bob.address];
      const first = await send(p.url, alice.token, to, 'hi');
      const conv = first.body.conversationId;
      const now = Date.now();
      const later = await http(p.url, 'POST', '/messages', { token: alice.token, json: { to, rich: { type: 'property', property: { name: 'displayName', value: 'Later name' } }, sentAt: new Date(now).toISOString() } });
      assert.equal(later.status, 201, JSON.stringify(later.body));
      // Written earlier (as on a provider where it arrived first), stored after it here.
      const earlier = await http(p.url, 'POST', '/messages', { token: bob.token, json: { to, rich: { type: 'property', property: { name: 'displayName', value: 'Earlier name' } }, sentAt: new Date(now - 60_000).toISOString() } });
      assert.equal(earlier.status, 201, JSON.stringify(earlier.body));
      const c = await http(p.url, 'GET', `/conversations/${conv}`, { token: bob.token });
      assert.equal(c.body.title, 'Later name');
    } finally {
      await p.stop();
    }
  });
});

// The files themselves: SQLite keeps old page images in freed pages and in its write-ahead log.
// This looks at the bytes of the database files, so it runs on SQLite whatever
// INTERTALK_TEST_DATABASE says (PostgreSQL's heap files are the server's business).
describe('deleted text on disk (SQLite)', () => {
  let p: Started | undefined;
  const dir = tempDir();
  after(async () => {
    await p?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('delete: no copy of the text is left in the database files (freed pages, WAL)', async () => {
    p = await startProvider({ INTERTALK_DATABASE: sqliteUrl(dir) }, { dir });
    const alice = await user(p.url, 'alice');
    const bob = await user(p.url, 'bob');
    const m = await send(p.url, alice.token, [alice.address, bob.address], 'secret-kumquat-1 where are you?');
    assert.equal(m.status, 201);
    const conv = m.body.conversationId;
    const path = (rest: string) => `/conversations/${conv}${rest}`;
    assert.equal((await http(p.url, 'POST', path('/messages'), { token: bob.token, json: { text: 'At home.', replyTo: m.body.seq } })).status, 201);
    assert.equal((await http(p.url, 'POST', path(`/messages/${m.body.seq}/reactions`), { token: bob.token, json: { emoji: '👍' } })).status, 201);
    assert.equal((await http(p.url, 'PATCH', path(`/messages/${m.body.seq}`), { token: alice.token, json: { text: 'secret-kumquat-2 where are you now?' } })).status, 201);
    assert.equal((await http(p.url, 'PATCH', path(`/messages/${m.body.seq}`), { token: alice.token, json: { text: 'secret-kumquat-3 where are you, Bob?' } })).status, 201);
    const files = () => ['intertalk.db', 'intertalk.db-wal'].filter((f) => existsSync(join(dir, f))).map((f) => readFileSync(join(dir, f)));
    assert.ok(files().some((b) => b.indexOf('kumquat') !== -1), 'the files hold the text before the delete');

    assert.equal((await http(p.url, 'DELETE', path(`/messages/${m.body.seq}`), { token: alice.token })).status, 201);
    assert.deepEqual(await scanDatabase(p, 'kumquat'), []);
    // The WAL is checkpointed and truncated shortly after a delete (storage.scrubSoon).
    const deadline = Date.now() + 5000;
    while (files().some((b) => b.indexOf('kumquat') !== -1)) {
      assert.ok(Date.now() < deadline, 'the deleted text is still in the database files');
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});

describe('quotes of quotes', () => {
  let p: Started;
  after(async () => p?.stop());

  test(
    'deleting a message also scrubs it from replies that quote a reaction to it',
    async () => {
      p = await startProvider();
      const alice = await user(p.url, 'alice');
      const bob = await user(p.url, 'bob');
      const m = await send(p.url, alice.token, [alice.address, bob.address], 'secret-quince');
      const conv = m.body.conversationId;
      const re = await http(p.url, 'POST', `/conversations/${conv}/messages/${m.body.seq}/reactions`, { token: bob.token, json: { emoji: '👍' } });
      assert.equal(re.status, 201);
      const rp = await http(p.url, 'POST', `/conversations/${conv}/messages`, { token: bob.token, json: { text: 'why?', replyTo: re.body.seq } });
      // A reply to a reaction is refused (replies go to content, whose quotes a delete scrubs).
      assert.equal(rp.status, 400, JSON.stringify(rp.body));
      assert.equal(rp.body.error, 'not_repliable');
      assert.equal((await http(p.url, 'DELETE', `/conversations/${conv}/messages/${m.body.seq}`, { token: alice.token })).status, 201);
      assert.deepEqual(await scanDatabase(p, 'secret-quince'), []);
    },
  );
});

describe('references into another conversation', () => {
  let p: Started;
  let alice: U, bob: U, carol: U;
  before(async () => {
    p = await startProvider();
    alice = await user(p.url, 'alice');
    bob = await user(p.url, 'bob');
    carol = await user(p.url, 'carol');
  });
  after(async () => p.stop());

  test('are refused with 404 unknown_message on every path, and store nothing', async () => {
    const inAB = await send(p.url, alice.token, [alice.address, bob.address], 'hello bob');
    const inAC = await send(p.url, alice.token, [alice.address, carol.address], 'private to carol');
    assert.equal(inAB.status, 201);
    assert.equal(inAC.status, 201);
    const ab = inAB.body.conversationId;
    const other = inAC.body;
    const countBefore = (await messageBodies(p)).length;

    const viaRoutes: Array<[string, string, string, unknown]> = [
      ['reply', 'POST', `/conversations/${ab}/messages`, { text: 'x', replyTo: other.seq }],
      ['reaction', 'POST', `/conversations/${ab}/messages/${other.seq}/reactions`, { emoji: '👍' }],
      ['edit', 'PATCH', `/conversations/${ab}/messages/${other.seq}`, { text: 'x' }],
      ['delete', 'DELETE', `/conversations/${ab}/messages/${other.seq}`, undefined],
    ];
    for (const [why, method, url, json] of viaRoutes) {
      const r = await http(p.url, method, url, { token: alice.token, ...(json !== undefined ? { json } : {}) });
      assert.equal(r.status, 404, `${why}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, 'unknown_message', why);
    }
    const rich = {
      reply: { type: 'reply', text: 'x', reference: { id: other.id, sender: alice.address } },
      reaction: { type: 'reaction', reaction: { emoji: '👍' }, reference: { id: other.id, sender: alice.address } },
      edit: { type: 'edit', text: 'x', reference: { id: other.id, sender: alice.address } },
      delete: { type: 'delete', reference: { id: other.id, sender: alice.address } },
    };
    for (const [why, r0] of Object.entries(rich)) {
      const r = await send(p.url, alice.token, [alice.address, bob.address], 'x', { rich: r0 });
      assert.equal(r.status, 404, `${why}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error, 'unknown_message', why);
    }
    assert.equal((await messageBodies(p)).length, countBefore, 'nothing stored');
    // Bob never learns the other conversation's text.
    const h = await http(p.url, 'GET', `/conversations/${ab}/messages`, { token: bob.token });
    assert.ok(!JSON.stringify(h.body).includes('private to carol'));
  });
});
