// signals/1 between providers: two of our providers (a.test, b.test) over verified HTTPS, plus a
// test-only plain peer (plain.test, a node:https server) whose /.well-known/intertalk does not list
// signals/1 and that records every request it gets. Typing and receipts travel on POST /signals,
// authenticated like POST /messages; plain peers never get a signal; nothing becomes a message.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import https from 'node:https';
import { decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { freePort, startNetwork, type Network } from './helpers/network.js';
import { api, eventually, fed, FedSocket, fedUser, history, say, type FedUser } from './helpers/fed.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Recorded {
  method: string;
  path: string;
  body: string;
}

/** plain.test: serves a well-known without signals/1, accepts POST /messages, records everything. */
async function startPlainPeer(net: Network, port: number): Promise<{ requests: Recorded[]; stop(): Promise<void> }> {
  const cert = await net.ca.issue(['plain.test']);
  const requests: Recorded[] = [];
  const server = https.createServer({ cert: cert.cert, key: cert.key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '').split('?')[0]!;
      requests.push({ method: req.method ?? '', path, body: Buffer.concat(chunks).toString('utf8') });
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method === 'GET' && path === '/.well-known/intertalk') return json(200, { server: `https://plain.test:${port}`, versions: ['intertalk-2017'], extensions: ['message-id'] });
      if (req.method === 'POST' && path === '/messages') return json(201, { status: 'accepted' });
      json(404, { error: 'not_found', message: 'no such endpoint' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('signals/1 between providers', () => {
  let net: Network;
  let plain: Awaited<ReturnType<typeof startPlainPeer>>;
  const sockets: FedSocket[] = [];
  let a1: FedUser, a2: FedUser, b1: FedUser, b2: FedUser;
  let ab: any; // the first message of the 1:1 conversation alice ↔ bob, as a.test stored it

  const open = async (u: FedUser, mode: { rich?: boolean } = {}) => {
    const s = await FedSocket.open(net, u, mode);
    sockets.push(s);
    return s;
  };
  const ofType = (s: FedSocket, type: string, conv?: string) => s.frames.filter((f) => f?.type === type && (conv === undefined || f.conversationId === conv));
  /** A token b.test really signs, for hand-made requests to a.test. */
  const bToken = (sub: string) => fed(net.provider('b.test')).keys.sign({ aud: 'a.test', sub });
  const now = () => new Date().toISOString();

  before(async () => {
    const plainPort = await freePort();
    net = await startNetwork({
      domains: ['a.test', 'b.test'],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s' },
      extraResolve: { 'plain.test': plainPort },
    });
    plain = await startPlainPeer(net, plainPort);
    a1 = await fedUser(net, 'a.test', 'alice');
    a2 = await fedUser(net, 'a.test', 'amir');
    b1 = await fedUser(net, 'b.test', 'bob');
    b2 = await fedUser(net, 'b.test', 'bea');
  });

  after(async () => {
    for (const s of sockets) s.close();
    await plain?.stop();
    if (net) {
      await net.stop();
      rmSync(net.dir, { recursive: true, force: true });
    }
  });

  it('our well-known lists signals/1 and rich/1', async () => {
    const r = await api(net, 'a.test', 'GET', '/.well-known/intertalk');
    assert.equal(r.status, 200);
    assert.ok(r.body.extensions.includes('signals/1'), JSON.stringify(r.body));
    assert.ok(r.body.extensions.includes('rich/1'), JSON.stringify(r.body));
  });

  it('typing and receipts cross from one provider to the other, to rich sockets only', async () => {
    const bobRich = await open(b1, { rich: true });
    const bobBare = await open(b1);
    const aliceRich = await open(a1, { rich: true });
    ab = await say(net, a1, [b1.address], 'hello bob, from a.test');
    const conv: string = ab.conversationId;
    await bobRich.message(ab.id);
    await bobBare.message(ab.id);

    // Alice types: Bob's rich socket on b.test shows it, about 5 s long.
    assert.equal((await api(net, 'a.test', 'POST', `/conversations/${conv}/typing`, { token: a1.token, json: { state: 'typing' } })).status, 204);
    const t = await bobRich.until((f) => f.find((x) => x?.type === 'typing'), 5000, 'typing on b.test');
    assert.equal(t.conversationId, conv, 'the same conversation id on both providers');
    assert.equal(t.from, a1.address);
    assert.equal(t.state, 'typing');
    const ttl = Date.parse(t.expiresAt) - Date.now();
    assert.ok(ttl > 2000 && ttl <= 5500, `expires by itself about 5 s ahead (${ttl} ms left)`);
    assert.equal((await api(net, 'a.test', 'POST', `/conversations/${conv}/typing`, { token: a1.token, json: { state: 'stopped' } })).status, 204);
    await bobRich.until((f) => f.find((x) => x?.type === 'typing' && x.state === 'stopped'), 5000, 'stopped on b.test');

    // Bob reads: Alice's rich socket on a.test gets the receipt, with a.test's seq.
    const read = await api(net, 'b.test', 'POST', `/conversations/${conv}/read`, { token: b1.token });
    assert.equal(read.status, 200);
    assert.equal(read.body.conversationId, conv);
    const rc = await aliceRich.until((f) => f.find((x) => x?.type === 'receipt'), 5000, 'receipt on a.test');
    assert.deepEqual(rc, { type: 'receipt', conversationId: conv, from: b1.address, messageId: ab.id, messageSender: a1.address, seq: ab.seq, readAt: rc.readAt });
    const list = await api(net, 'a.test', 'GET', `/conversations/${conv}/receipts`, { token: a1.token });
    assert.deepEqual(list.body, [{ address: b1.address, messageId: ab.id, messageSender: a1.address, seq: ab.seq, readAt: rc.readAt }]);

    // Alice answers and reads; Bob's provider stores her receipt under its own seq.
    const back = await say(net, b1, [a1.address], 'hi alice');
    await aliceRich.message(back.id);
    await api(net, 'a.test', 'POST', `/conversations/${conv}/read`, { token: a1.token });
    const rb = await bobRich.until((f) => f.find((x) => x?.type === 'receipt' && x.from === a1.address), 5000, 'receipt on b.test');
    assert.equal(rb.messageId, back.id);
    assert.equal(rb.messageSender, b1.address);
    assert.equal(rb.seq, back.seq, 'b.test\'s seq of its own message');
    const onB = await api(net, 'b.test', 'GET', `/conversations/${conv}/receipts`, { token: b1.token });
    assert.deepEqual(onB.body.map((r: any) => [r.address, r.messageId, r.seq]), [[a1.address, back.id, back.seq]]);

    // Bob turns receipts off: his next read tells a.test nothing.
    assert.equal((await api(net, 'b.test', 'PUT', '/me/settings', { token: b1.token, json: { sendReadReceipts: false } })).status, 200);
    const more = await say(net, a1, [b1.address], 'still there?');
    await bobRich.message(more.id);
    await api(net, 'b.test', 'POST', `/conversations/${conv}/read`, { token: b1.token });
    assert.equal((await api(net, 'b.test', 'GET', '/conversations', { token: b1.token })).body.conversations.find((c: any) => c.id === conv).unread, 0);
    const before = ofType(aliceRich, 'typing').length;
    await api(net, 'b.test', 'POST', `/conversations/${conv}/typing`, { token: b1.token });
    await aliceRich.until((f) => f.filter((x) => x?.type === 'typing').length > before, 5000, 'bob typing on a.test');
    await sleep(300);
    assert.equal(ofType(aliceRich, 'receipt').length, 1, 'no receipt after Bob turned them off');
    assert.equal((await api(net, 'a.test', 'GET', `/conversations/${conv}/receipts`, { token: a1.token })).body[0].messageId, ab.id);
    await api(net, 'b.test', 'PUT', '/me/settings', { token: b1.token, json: { sendReadReceipts: true } });

    // Bare sockets got messages only; signals never became messages.
    await sleep(100);
    assert.ok(bobBare.frames.every((f) => typeof f?.id === 'string' && typeof f?.message === 'string' && f.type === undefined), JSON.stringify(bobBare.frames));
    for (const [u] of [[a1], [b1]] as const) {
      const h = await history(net, u, conv);
      assert.deepEqual(h.map((m) => m.message), ['hello bob, from a.test', 'hi alice', 'still there?'], `${u.address}'s history`);
    }
  });

  it('a peer that does not advertise signals/1 never gets a request to /signals, nor a message for a signal', async () => {
    const pat = 'pat@plain.test';
    const bobRich = await open(b1, { rich: true });
    const aliceRich = await open(a1, { rich: true });
    const g = await say(net, a1, [b1.address, pat], 'a group with a plain peer');
    const conv: string = g.conversationId;
    await bobRich.message(g.id);
    await eventually('plain.test to get the chat message', async () => plain.requests.some((r) => r.method === 'POST' && r.path === '/messages'));

    // Typing and receipts from both of our providers, in a conversation that includes plain.test.
    await api(net, 'a.test', 'POST', `/conversations/${conv}/typing`, { token: a1.token });
    await bobRich.until((f) => f.find((x) => x?.type === 'typing' && x.conversationId === conv), 5000, 'typing on b.test');
    await api(net, 'b.test', 'POST', `/conversations/${conv}/typing`, { token: b1.token });
    await aliceRich.until((f) => f.find((x) => x?.type === 'typing' && x.conversationId === conv), 5000, 'typing on a.test');
    await api(net, 'b.test', 'POST', `/conversations/${conv}/read`, { token: b1.token });
    await aliceRich.until((f) => f.find((x) => x?.type === 'receipt' && x.conversationId === conv), 5000, 'receipt on a.test');
    const reply = await say(net, b1, [a1.address, pat], 'bob answers the group');
    await aliceRich.message(reply.id);
    await api(net, 'a.test', 'POST', `/conversations/${conv}/read`, { token: a1.token });
    await bobRich.until((f) => f.find((x) => x?.type === 'receipt' && x.conversationId === conv), 5000, 'receipt on b.test');
    await eventually('plain.test to get bob\'s message too', async () => plain.requests.filter((r) => r.method === 'POST' && r.path === '/messages').length >= 2);
    await sleep(500);

    assert.ok(plain.requests.some((r) => r.method === 'GET' && r.path === '/.well-known/intertalk'), 'its capabilities were looked up');
    assert.deepEqual(plain.requests.filter((r) => r.path === '/signals'), [], 'no request to /signals');
    const posts = plain.requests.filter((r) => r.method === 'POST');
    assert.deepEqual(posts.map((r) => [r.path, JSON.parse(r.body).message]), [['/messages', 'a group with a plain peer'], ['/messages', 'bob answers the group']], 'only the two chat messages');
    assert.deepEqual(plain.requests.filter((r) => r.method !== 'GET' && r.method !== 'POST'), []);
  });

  it('POST /signals: 202 when authentic; 400 for a bad body; 401 for a forged or missing token', async () => {
    const conv: string = ab.conversationId;
    const aliceRich = await open(a1, { rich: true });
    const typing = (from: string) => ({ type: 'typing', from, to: [a1.address, b1.address], state: 'typing', sentAt: now() });

    // Hand-made but genuine: b.test's key, sub = from.
    const ok = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b1.address), json: typing(b1.address) });
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    await aliceRich.until((f) => f.find((x) => x?.type === 'typing' && x.from === b1.address && x.conversationId === conv), 5000, 'typing');

    // Signed by b.test for bea, but claiming to come from bob.
    const wrongSub = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b2.address), json: typing(b1.address) });
    assert.equal(wrongSub.status, 401);
    assert.equal(wrongSub.body.error, 'sender_mismatch');
    const receipt = { type: 'receipt', from: b1.address, to: [a1.address, b1.address], messageId: ab.id, messageSender: a1.address, sentAt: now() };
    const wrongSubReceipt = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b2.address), json: receipt });
    assert.equal(wrongSubReceipt.status, 401);

    // b.test cannot speak for a user of a.test (iss ≠ domain of sub).
    const onBehalf = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(a2.address), json: { ...typing(a2.address), to: [a1.address, a2.address, b1.address] } });
    assert.equal(onBehalf.status, 401);
    assert.equal(onBehalf.body.error, 'issuer_mismatch');

    // A token under b.test's kid, signed with some other key.
    const { kid } = decodeProtectedHeader(await bToken(b1.address));
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT({ iss: 'b.test', aud: 'a.test', sub: b1.address, jti: `forged-${Date.now()}` })
      .setProtectedHeader({ alg: 'ES256', kid: kid!, typ: 'JWT' })
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(privateKey);
    const badSig = await api(net, 'a.test', 'POST', '/signals', { token: forged, json: typing(b1.address) });
    assert.equal(badSig.status, 401);
    assert.equal(badSig.body.error, 'bad_signature');

    const none = await api(net, 'a.test', 'POST', '/signals', { json: typing(b1.address) });
    assert.equal(none.status, 401);
    assert.equal(none.body.error, 'missing_token');

    for (const body of [{ ...typing(b1.address), type: 'message' }, { ...typing(b1.address), state: 'dancing' }, { ...receipt, messageId: '' }, { ...typing(b1.address), sentAt: '2999-01-01T00:00:00Z' }]) {
      const r = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b1.address), json: body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.error, 'invalid_signal');
    }

    await sleep(200);
    const typings = ofType(aliceRich, 'typing', conv);
    assert.equal(typings.length, 1, `only the genuine signal reached Alice: ${JSON.stringify(typings)}`);
  });

  it('POST /signals: 403 for a conversation with none of our users; 404 for one we do not know', async () => {
    const aliceRich = await open(a1, { rich: true });
    const before = await history(net, a1, ab.conversationId);

    const theirs = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b1.address), json: { type: 'typing', from: b1.address, to: [b1.address, b2.address], sentAt: now() } });
    assert.equal(theirs.status, 403);
    assert.equal(theirs.body.error, 'no_local_recipient');
    const receipt = await api(net, 'a.test', 'POST', '/signals', {
      token: await bToken(b1.address),
      json: { type: 'receipt', from: b1.address, to: [b1.address, b2.address], messageId: 'x1', messageSender: b2.address, sentAt: now() },
    });
    assert.equal(receipt.status, 403);
    const ghost = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b1.address), json: { type: 'typing', from: b1.address, to: [b1.address, 'ghost@a.test'], sentAt: now() } });
    assert.equal(ghost.status, 403, 'an address here without an account');
    assert.equal(ghost.body.error, 'no_local_recipient');

    const unknown = await api(net, 'a.test', 'POST', '/signals', { token: await bToken(b1.address), json: { type: 'typing', from: b1.address, to: [b1.address, a2.address], sentAt: now() } });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error, 'unknown_conversation');

    await sleep(200);
    assert.deepEqual(ofType(aliceRich, 'typing'), [], 'nobody here heard anything');
    assert.deepEqual(await history(net, a1, ab.conversationId), before, 'nothing became a message');
    assert.equal((await api(net, 'a.test', 'GET', '/conversations', { token: a2.token })).body.conversations.length, 0, 'no conversation was made up');
  });
});
