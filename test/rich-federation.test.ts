// Rich conversations across two of our providers, both ways, live and after a reload: alice@a.test
// and bob@b.test each hold a rich-mode socket on their own provider and take turns with every
// action — plain message, reply, reaction and its removal, an edit twice, delete, conversation
// rename, read receipt, typing, image attachment. For each action the other side's socket shows
// the matching live event within a deadline; at the end both providers' histories (re-fetched, as
// a client would after a reload) show the same current state for every message, the same title,
// matching receipts, and bob downloads from b.test the bytes alice uploaded to a.test. Plus a
// resume: bob's socket drops, alice acts twice, bob reconnects with `since` and gets exactly those
// two messages, in order.
//
// Seq numbers are local to a provider: whoever acts on a message finds it on their own provider by
// message id (from their socket or history), never by the other side's seq.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Agent, fetch as undiciFetch } from 'undici';
import { startNetwork, type Network } from './helpers/network.js';
import { api, eventually, FedSocket, fedUser, history, type FedUser } from './helpers/fed.js';

const A = 'a.test';
const B = 'b.test';
/** How long the other side may take to show an action live. */
const LIVE_MS = 5000;

/** A request with a raw body (POST /attachments) or a raw answer (GET /attachments/:id). */
async function raw(net: Network, domain: string, method: string, path: string, opts: { token: string; body?: Buffer; type?: string }) {
  const headers: Record<string, string> = { authorization: `Bearer ${opts.token}` };
  if (opts.type) headers['content-type'] = opts.type;
  const dispatcher = new Agent({ connect: { ca: net.ca.caCert, servername: domain } });
  try {
    const res = await undiciFetch(net.node(domain).url + path, { method, headers, body: opts.body, dispatcher });
    const body = Buffer.from(await res.arrayBuffer());
    let json: any;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      json = undefined;
    }
    return { status: res.status, contentType: res.headers.get('content-type'), body, json };
  } finally {
    await dispatcher.close();
  }
}

describe('rich conversations between two of our providers, both ways', { timeout: 30_000 }, () => {
  let net: Network;
  let alice: FedUser;
  let bob: FedUser;
  let aliceSock: FedSocket;
  let bobSock: FedSocket;
  const sockets: FedSocket[] = [];
  let conv: string;
  /** Messages by role, as the acting side's provider stored them (ids are the same everywhere). */
  const m: Record<string, any> = {};
  let image: Buffer;
  let imageId: string;

  const sockOf = (u: FedUser) => (u === alice ? aliceSock : bobSock);
  const otherOf = (u: FedUser) => (u === alice ? bob : alice);

  /** A client call that must succeed (200/201/204); returns the body. */
  const ok = async (u: FedUser, method: string, path: string, json?: unknown) => {
    const r = await api(net, u.domain, method, path, { token: u.token, ...(json !== undefined ? { json } : {}) });
    assert.ok([200, 201, 204].includes(r.status), `${method} ${path} as ${u.address}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };

  /** `u`'s own provider's seq for message `id` (waits until it is there). */
  const seqOn = async (u: FedUser, id: string): Promise<number> => {
    const found = await eventually(`${id} at ${u.domain}`, async () => (await history(net, u, conv)).find((x) => x.id === id), LIVE_MS);
    return found.seq as number;
  };

  /**
   * `actor` acts; the other side's socket must show the resulting message within LIVE_MS, with the
   * expected rich type and reference. Returns [as the actor's provider stored it, as the other got it].
   */
  const act = async (actor: FedUser, expect: { rich?: string; ref?: string }, method: string, path: string, json?: unknown) => {
    const sent = await ok(actor, method, path, json);
    assert.equal(typeof sent.id, 'string', JSON.stringify(sent));
    const started = Date.now();
    const got = await sockOf(otherOf(actor)).message(sent.id, LIVE_MS);
    const what = `${method} ${path} by ${actor.address}`;
    assert.ok(Date.now() - started <= LIVE_MS, `${what}: live within ${LIVE_MS} ms`);
    assert.equal(got.from, actor.address, what);
    assert.equal(got.conversationId, conv, `${what}: the same conversation id on both providers`);
    assert.equal(got.rich?.type, expect.rich, `${what}: arrives as rich ${expect.rich ?? '(none)'}`);
    assert.equal(got.rich?.reference?.id, expect.ref, `${what}: refers to ${expect.ref ?? 'nothing'}`);
    if (expect.ref) assert.equal(typeof got.rich.reference.sender, 'string', what);
    return [sent, got] as const;
  };

  before(async () => {
    net = await startNetwork({
      domains: [A, B],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s', INTERTALK_SEND_RATE: '100000' },
    });
    alice = await fedUser(net, A, 'alice');
    bob = await fedUser(net, B, 'bob');
    // Some local traffic on b.test first, so that its seqs differ from a.test's for the same
    // message: a seq used on the wrong provider would name another message (or none).
    const bea = await fedUser(net, B, 'bea');
    for (const text of ['one', 'two', 'three']) await ok(bob, 'POST', '/messages', { to: [bob.address, bea.address], message: text });
    aliceSock = await FedSocket.open(net, alice, { rich: true });
    bobSock = await FedSocket.open(net, bob, { rich: true });
    sockets.push(aliceSock, bobSock);
  });

  after(async () => {
    for (const s of sockets) s.close();
    if (net) {
      await net.stop();
      rmSync(net.dir, { recursive: true, force: true });
    }
  });

  it('a plain message from alice reaches bob live (no rich object)', async () => {
    const sent = await ok(alice, 'POST', '/messages', { to: [alice.address, bob.address], message: 'Are we still on for Saturday?' });
    conv = sent.conversationId;
    const got = await bobSock.message(sent.id, LIVE_MS);
    assert.equal(got.message, 'Are we still on for Saturday?');
    assert.equal(got.rich, undefined);
    assert.equal(got.conversationId, conv);
    m.first = sent;
  });

  it("bob's reply (by his provider's seq) reaches alice as a reply to her message", async () => {
    const onB = await seqOn(bob, m.first.id);
    assert.notEqual(onB, m.first.seq, 'the providers number the same message differently');
    const [sent, got] = await act(bob, { rich: 'reply', ref: m.first.id }, 'POST', `/conversations/${conv}/messages`, { text: 'Yes! 10 am?', replyTo: onB });
    assert.equal(got.rich.text, 'Yes! 10 am?');
    assert.equal(got.rich.reference.sender, alice.address);
    m.reply = sent;
  });

  it('reactions both ways, and a removal, arrive live', async () => {
    // alice reacts to bob's reply (a.test's seq of it), twice, and takes the second one back.
    const replyOnA = await seqOn(alice, m.reply.id);
    const [, thumbs] = await act(alice, { rich: 'reaction', ref: m.reply.id }, 'POST', `/conversations/${conv}/messages/${replyOnA}/reactions`, { emoji: '👍' });
    assert.deepEqual(thumbs.rich.reaction, { emoji: '👍' });
    await act(alice, { rich: 'reaction', ref: m.reply.id }, 'POST', `/conversations/${conv}/messages/${replyOnA}/reactions`, { emoji: '🎉' });
    const [, removal] = await act(alice, { rich: 'reaction', ref: m.reply.id }, 'POST', `/conversations/${conv}/messages/${replyOnA}/reactions`, { emoji: '🎉', remove: true });
    assert.deepEqual(removal.rich.reaction, { emoji: '🎉', remove: true });
    // bob reacts to alice's first message (b.test's seq of it).
    const firstOnB = await seqOn(bob, m.first.id);
    const [, heart] = await act(bob, { rich: 'reaction', ref: m.first.id }, 'POST', `/conversations/${conv}/messages/${firstOnB}/reactions`, { emoji: '❤' });
    assert.equal(heart.rich.reference.sender, alice.address);
  });

  it('bob edits his reply twice on b.test; alice sees each edit, the second referring to the first', async () => {
    const [e1] = await act(bob, { rich: 'edit', ref: m.reply.id }, 'PATCH', `/conversations/${conv}/messages/${m.reply.seq}`, { text: 'Yes! 10:30?' });
    // Edits refer to the latest version: the second one names the first edit.
    const [e2, got2] = await act(bob, { rich: 'edit', ref: e1.id }, 'PATCH', `/conversations/${conv}/messages/${m.reply.seq}`, { text: 'Yes! 11 at the station?' });
    assert.equal(got2.rich.text, 'Yes! 11 at the station?');
    m.edit1 = e1;
    m.edit2 = e2;
    // Both providers already show the edited text live in their history.
    for (const u of [alice, bob]) {
      await eventually(`the twice-edited reply at ${u.domain}`, async () => {
        const r = (await history(net, u, conv)).find((x) => x.id === m.reply.id);
        return r?.editCount === 2 && r.message === 'Yes! 11 at the station?';
      }, LIVE_MS);
    }
  });

  it('alice deletes a message bob had reacted to; bob sees the delete', async () => {
    const [oops] = await act(alice, { rich: 'content' }, 'POST', `/conversations/${conv}/messages`, { text: 'Bring the tent (the red one)' });
    m.oops = oops;
    const oopsOnB = await seqOn(bob, oops.id);
    await act(bob, { rich: 'reaction', ref: oops.id }, 'POST', `/conversations/${conv}/messages/${oopsOnB}/reactions`, { emoji: '😮' });
    const [del] = await act(alice, { rich: 'delete', ref: oops.id }, 'DELETE', `/conversations/${conv}/messages/${oops.seq}`);
    m.delete = del;
  });

  it('renames by either side arrive live as property changes', async () => {
    const [, r1] = await act(bob, { rich: 'property' }, 'PUT', `/conversations/${conv}/name`, { name: 'Saturday' });
    assert.deepEqual(r1.rich.property, { name: 'displayName', value: 'Saturday' });
    const [, r2] = await act(alice, { rich: 'property' }, 'PUT', `/conversations/${conv}/name`, { name: 'Saturday hike' });
    assert.deepEqual(r2.rich.property, { name: 'displayName', value: 'Saturday hike' });
    for (const u of [alice, bob]) {
      await eventually(`the title at ${u.domain}`, async () => (await api(net, u.domain, 'GET', `/conversations/${conv}`, { token: u.token })).body?.title === 'Saturday hike', LIVE_MS);
    }
  });

  it('typing and read receipts cross live, with each provider\'s own seq', async () => {
    // bob types on b.test → alice's socket on a.test.
    const typingBefore = aliceSock.frames.length;
    assert.equal((await api(net, B, 'POST', `/conversations/${conv}/typing`, { token: bob.token, json: { state: 'typing' } })).status, 204);
    const t = await aliceSock.until((f) => f.slice(typingBefore).find((x) => x?.type === 'typing' && x.from === bob.address), LIVE_MS, 'bob typing at a.test');
    assert.equal(t.conversationId, conv);
    assert.equal(t.state, 'typing');
    // alice types too → bob's socket.
    const bobBefore = bobSock.frames.length;
    assert.equal((await api(net, A, 'POST', `/conversations/${conv}/typing`, { token: alice.token, json: {} })).status, 204);
    const t2 = await bobSock.until((f) => f.slice(bobBefore).find((x) => x?.type === 'typing' && x.from === alice.address), LIVE_MS, 'alice typing at b.test');
    assert.equal(t2.conversationId, conv);

    // alice reads on a.test → bob gets a receipt naming the last message, with b.test's seq.
    const read = await ok(alice, 'POST', `/conversations/${conv}/read`, {});
    const readOnA = (await history(net, alice, conv)).find((x) => x.seq === read.lastReadSeq);
    assert.ok(readOnA, `a.test has its seq ${read.lastReadSeq}`);
    const rc = await bobSock.until((f) => f.find((x) => x?.type === 'receipt' && x.from === alice.address), LIVE_MS, 'alice’s receipt at b.test');
    assert.equal(rc.conversationId, conv);
    assert.equal(rc.messageId, readOnA.id);
    assert.equal(rc.messageSender, readOnA.from);
    assert.equal(rc.seq, await seqOn(bob, readOnA.id), "b.test's seq of that message");
    m.aliceRead = readOnA.id;

    // bob reads on b.test → alice gets his receipt.
    const readB = await ok(bob, 'POST', `/conversations/${conv}/read`, {});
    const readOnB = (await history(net, bob, conv)).find((x) => x.seq === readB.lastReadSeq);
    assert.ok(readOnB);
    const rb = await aliceSock.until((f) => f.find((x) => x?.type === 'receipt' && x.from === bob.address), LIVE_MS, 'bob’s receipt at a.test');
    assert.equal(rb.messageId, readOnB.id);
    assert.equal(rb.seq, await seqOn(alice, readOnB.id), "a.test's seq of that message");
    m.bobRead = readOnB.id;
  });

  it('an image alice uploads to a.test reaches bob, who downloads the same bytes from b.test', async () => {
    image = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(4000)]);
    const up = await raw(net, A, 'POST', '/attachments', { token: alice.token, body: image, type: 'image/png' });
    assert.equal(up.status, 201, up.body.toString());
    imageId = up.json.id;
    const [sent, got] = await act(alice, { rich: 'content' }, 'POST', `/conversations/${conv}/messages`, { text: 'The trail map', attachments: [{ id: imageId, name: 'trail.png' }] });
    m.image = sent;
    assert.equal(got.rich.attachments?.length, 1, JSON.stringify(got.rich));
    const att = got.rich.attachments[0];
    assert.equal(att.id, imageId);
    assert.equal(att.name, 'trail.png');
    assert.equal(att.mediaType, 'image/png');
    assert.equal(att.size, image.length);
    // b.test fetches it from a.test in the background; until then it may answer 503.
    const dl = await eventually(
      'the image at b.test',
      async () => {
        const r = await raw(net, B, 'GET', `/attachments/${imageId}`, { token: bob.token });
        if (r.status === 503) return null;
        return r;
      },
      LIVE_MS,
    );
    assert.equal(dl.status, 200, dl.body.toString());
    assert.ok(dl.body.equals(image), 'the same bytes alice uploaded');
    assert.equal(dl.contentType, 'image/png');
  });

  it('bob resumes with `since` after a drop and gets exactly the two messages he missed, in order', async () => {
    const bobMsgs = bobSock.messages();
    const lastSeq = Math.max(...bobMsgs.map((x) => x.seq as number));
    assert.equal(lastSeq, await net.provider(B).ctx.messaging.latestSeq(bob.address), 'bob had seen everything before the drop');
    bobSock.close();
    await bobSock.until(() => bobSock.closed, 5000, 'bob’s socket closed');
    await eventually('b.test to drop bob’s socket', async () => net.provider(B).realtime.connectionCount === 0, 5000, 10);

    const missed1 = await ok(alice, 'POST', `/conversations/${conv}/messages`, { text: 'Still there?' });
    const imageOnA = await seqOn(alice, m.image.id);
    const missed2 = await ok(alice, 'POST', `/conversations/${conv}/messages/${imageOnA}/reactions`, { emoji: '🗺' });
    // Both reached b.test while bob was away.
    await seqOn(bob, missed1.id);
    await seqOn(bob, missed2.id);

    const resumed = await FedSocket.open(net, bob, { since: lastSeq });
    sockets.push(resumed);
    bobSock = resumed;
    await new Promise((r) => setTimeout(r, 300)); // anything extra would show up by now
    const types = resumed.frames.map((f) => f?.type);
    const readyAt = types.indexOf('ready');
    const replayed = resumed.frames.slice(0, readyAt);
    assert.deepEqual(
      replayed.map((f) => [f.type, f.message?.id]),
      [
        ['message', missed1.id],
        ['message', missed2.id],
      ],
      'the two missed messages, in order, before "ready"',
    );
    assert.equal(resumed.messages().length, 2, `nothing else: ${JSON.stringify(resumed.frames)}`);
    const [r1, r2] = resumed.messages();
    assert.equal(r1.message, 'Still there?');
    assert.equal(r2.rich?.type, 'reaction');
    assert.equal(r2.rich?.reference?.id, m.image.id);
    assert.ok(r1.seq > lastSeq && r2.seq > r1.seq, `seqs after ${lastSeq}: ${r1.seq}, ${r2.seq}`);
    assert.equal(resumed.frames[readyAt].cursor, r2.seq, 'the cursor is the last replayed seq');
    m.missed1 = missed1;
    m.missed2 = missed2;
    // And the stream is live again.
    const later = await ok(alice, 'POST', `/conversations/${conv}/messages`, { text: 'See you at 11' });
    await resumed.message(later.id, LIVE_MS);
    m.last = later;
  });

  it('after a reload both providers show the same current state for every message', async () => {
    const onA = await history(net, alice, conv);
    const onB = await eventually('b.test to have every message', async () => {
      const h = await history(net, bob, conv);
      return h.length >= onA.length && h;
    }, LIVE_MS);
    assert.deepEqual(onB.map((x) => x.id), onA.map((x) => x.id), 'the same messages in the same order');
    const strip = (x: any) => {
      const { seq: _seq, ...rest } = x;
      return rest;
    };
    for (const [i, a] of onA.entries()) assert.deepEqual(strip(onB[i]), strip(a), `message ${a.id} (${a.rich?.type ?? 'plain'}) is the same on both`);

    const byId = new Map(onA.map((x) => [x.id, x]));
    const first = byId.get(m.first.id);
    assert.equal(first.message, 'Are we still on for Saturday?');
    assert.equal(first.edited, undefined);
    assert.deepEqual(first.reactions, [{ emoji: '❤', count: 1, by: [bob.address] }]);

    const reply = byId.get(m.reply.id);
    assert.equal(reply.message, 'Yes! 11 at the station?');
    assert.equal(reply.rich.text, 'Yes! 11 at the station?');
    assert.equal(reply.edited, true);
    assert.equal(reply.editCount, 2);
    assert.deepEqual(reply.reactions, [{ emoji: '👍', count: 1, by: [alice.address] }], 'the withdrawn 🎉 is gone');

    const oops = byId.get(m.oops.id);
    assert.equal(oops.deleted, true);
    assert.equal(oops.message, '');
    assert.equal(oops.reactions, undefined, 'a tombstone shows no reactions');

    const img = byId.get(m.image.id);
    assert.equal(img.rich.attachments[0].id, imageId);
    assert.deepEqual(img.reactions, [{ emoji: '🗺', count: 1, by: [alice.address] }]);
    assert.equal(byId.get(m.missed1.id).message, 'Still there?');

    for (const u of [alice, bob]) {
      const c = await api(net, u.domain, 'GET', `/conversations/${conv}`, { token: u.token });
      assert.equal(c.status, 200);
      assert.equal(c.body.title, 'Saturday hike', `title at ${u.domain}`);
    }

    // Receipts survive the reload: each side sees the other's, under its own seq.
    const recA = await api(net, A, 'GET', `/conversations/${conv}/receipts`, { token: alice.token });
    const recB = await api(net, B, 'GET', `/conversations/${conv}/receipts`, { token: bob.token });
    assert.deepEqual(recA.body.map((r: any) => [r.address, r.messageId, r.seq]), [[bob.address, m.bobRead, byId.get(m.bobRead).seq]]);
    const seqOnB = new Map(onB.map((x) => [x.id, x.seq]));
    assert.deepEqual(recB.body.map((r: any) => [r.address, r.messageId, r.seq]), [[alice.address, m.aliceRead, seqOnB.get(m.aliceRead)]]);

    // The image is still bob's to download from b.test.
    const dl = await raw(net, B, 'GET', `/attachments/${imageId}`, { token: bob.token });
    assert.equal(dl.status, 200);
    assert.ok(dl.body.equals(image));
  });
});
