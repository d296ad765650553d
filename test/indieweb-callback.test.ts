// The seed's callback flow end to end (issue 14): two real providers (a.test, b.test) on real
// sockets and real databases, a loopback web server for the personal domains' home pages, and a
// callback-only peer (helpers/callback-peer.ts: node:http, its own implementation of the flow).
// Personal-domain deliveries go by the callback flow here (INTERTALK_INDIEWEB_DELIVERY=callback),
// so a.test ↔ b.test use it too. Home pages: alice.test (link element → a.test), bob.test (link
// element → b.test), carol.test (Link header → the peer), dave.test (metadata document only →
// the peer), erin.test (legacy rel="pm" only → the peer), ssrf.test (names an IP literal).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startNetwork, type Network } from './helpers/network.js';
import { html, startHomePages, type HomePages } from './helpers/home-pages.js';
import { api, eventually, fed, fedUser, history, type FedUser } from './helpers/fed.js';
import { CallbackPeer } from './helpers/callback-peer.js';
import { PeerHttp } from '../src/federation/net.js';
import { Discovery } from '../src/federation/discovery.js';
import { Delegations } from '../src/indieweb/delegation.js';
import { CallbackEndpoint, CallbackStore } from '../src/indieweb/callback.js';
import { systemClock } from '../src/util/clock.js';
import { randomId } from '../src/util/ids.js';


const SITES = ['alice.test', 'bob.test', 'carol.test', 'dave.test', 'erin.test', 'ssrf.test'];
const PEER = 'pm.cb.test';
const LONG = 60_000;

describe('personal domains: the callback flow', () => {
  let web: HomePages;
  let sites: HomePages['sites'];
  let webPort: number;
  let peer: CallbackPeer;
  let net: Network;
  let alice: FedUser;
  let bob: FedUser;
  let serverA: string;
  let serverB: string;

  const now = () => new Date().toISOString();
  const peerMessage = (from: string, to: string, text: string) => ({ id: `cb-${randomId(8)}`, from, to: [from, to], sentAt: now(), message: text });
  const count = async (domain: string, sender: string) => (await net.provider(domain).ctx.storage.db.selectFrom('messages').select('seq').where('sender', '=', sender).execute()).length;
  // The outbox row of a sent message (a personal-address sender does not see delivery states over
  // the API: they belong to the account address).
  const delivered = (u: FedUser, sent: { seq: number }) =>
    eventually(`delivery of ${sent.seq}`, async () => {
      const d = await net.provider(u.domain).ctx.storage.db.selectFrom('outbox').select(['destination', 'state', 'last_error']).where('message_seq', '=', sent.seq).executeTakeFirst();
      lastDelivery = d;
      return d && d.state !== 'queued' ? d : undefined;
    }, LONG).catch((err: Error) => {
      throw new Error(`${err.message}; last delivery: ${JSON.stringify(lastDelivery)}`);
    });
  let lastDelivery: unknown;

  before(async () => {
    web = await startHomePages();
    sites = web.sites;
    webPort = web.port;
    peer = new CallbackPeer(PEER, (host) => {
      if (SITES.includes(host)) return { port: webPort, tls: null };
      const n = net?.nodes.get(host);
      return n ? { port: n.port, tls: { ca: net.ca.caCert } } : undefined;
    });
    const peerPort = await peer.start();
    net = await startNetwork({
      domains: ['a.test', 'b.test'],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_INSECURE_PEERS: [...SITES, PEER].join(','), INTERTALK_INDIEWEB_DELIVERY: 'callback' },
      extraResolve: { ...Object.fromEntries(SITES.map((s) => [s, webPort])), [PEER]: peerPort },
    });
    serverA = `${net.provider('a.test').config.publicUrl}/`;
    serverB = `${net.provider('b.test').config.publicUrl}/`;
    sites.set('alice.test', { '/': html(`<link rel="intertalk-server" href="${serverA}">`) });
    sites.set('bob.test', { '/': html(`<link rel="intertalk-server" href="${serverB}">`) });
    sites.set('carol.test', { '/': { headers: { 'content-type': 'text/plain', link: `<${peer.url}>; rel="intertalk-server"` }, body: 'carol' } });
    sites.set('dave.test', {
      '/': html('<link rel="intertalk-metadata" href="/intertalk.json">'),
      '/intertalk.json': { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ server: peer.url }) },
    });
    sites.set('erin.test', { '/': html(`<link rel="pm" href="${peer.url}">`) });
    sites.set('ssrf.test', { '/': html(`<link rel="intertalk-server" href="http://127.0.0.1:${peerPort}/">`) });
    alice = await fedUser(net, 'a.test', 'alice');
    bob = await fedUser(net, 'b.test', 'bob');
    for (const [u, d] of [[alice, 'alice.test'], [bob, 'bob.test']] as const) {
      const r = await api(net, u.domain, 'PUT', `/me/domains/${d}`, { token: u.token });
      assert.equal(r.body.state, 'verified', JSON.stringify(r.body));
    }
  });
  after(async () => {
    await net?.stop();
    await peer?.stop();
    await web?.close();
  });

  it('to a callback-only peer, token variant: one token covers several messages, in order', async () => {
    const sent = [];
    for (const text of ['to carol 1', 'to carol 2', 'to carol 3']) {
      const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', 'carol@carol.test'], message: text } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      sent.push(r.body);
    }
    for (const s of sent) assert.equal((await delivered(alice, s)).state, 'delivered');
    const got = peer.inbox.filter((m) => m.from === 'alice@alice.test' && m.to.includes('carol@carol.test'));
    assert.deepEqual(got.map((m) => m.message), ['to carol 1', 'to carol 2', 'to carol 3']);
    const tokens = [...peer.issued.values()].filter((t) => t.domain === 'alice.test');
    assert.equal(tokens.length, 1, 'one token for the three messages');
    assert.equal(tokens[0]!.flow, 'token');
  });

  it('to a callback-only peer, six-step flow: a secret per message (metadata-only home page)', async () => {
    const transport = fed(net.provider('a.test')).indieweb!.callbackTransport;
    transport.flow = 'message';
    try {
      const before = [...peer.issued.values()].filter((t) => t.flow === 'six-step').length;
      const sent = [];
      for (const text of ['to dave 1', 'to dave 2']) {
        const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', 'dave@dave.test'], message: text } });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        sent.push(r.body);
      }
      for (const s of sent) assert.equal((await delivered(alice, s)).state, 'delivered');
      assert.deepEqual(peer.inbox.filter((m) => m.to.includes('dave@dave.test')).map((m) => m.message), ['to dave 1', 'to dave 2']);
      const six = [...peer.issued.values()].filter((t) => t.flow === 'six-step');
      assert.equal(six.length - before, 2);
      assert.deepEqual(six.slice(before).map((t) => t.id), sent.map((s) => s.id));
    } finally {
      transport.flow = 'token';
    }
  });

  it('a token the receiver revoked is given up and asked for again; the message arrives once', async () => {
    for (const t of peer.issued.values()) if (t.domain === 'alice.test') t.revoked = true;
    const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', 'carol@carol.test'], message: 'after revocation' } });
    assert.equal(r.status, 201);
    assert.equal((await delivered(alice, r.body)).state, 'delivered');
    assert.equal(peer.inbox.filter((m) => m.message === 'after revocation').length, 1);
    const live = [...peer.issued.values()].filter((t) => t.domain === 'alice.test' && t.flow === 'token' && !t.revoked);
    assert.equal(live.length, 1);
  });

  it('durable: an answer lost after the peer stored the message is retried and acknowledged as a duplicate — delivered once', async () => {
    peer.loseAnswers = 1;
    const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', 'carol@carol.test'], message: 'lost answer' } });
    assert.equal(r.status, 201);
    const d = await delivered(alice, r.body);
    assert.equal(d.state, 'delivered', JSON.stringify(d));
    assert.equal(peer.loseAnswers, 0);
    assert.equal(peer.inbox.filter((m) => m.message === 'lost answer').length, 1);
    const row = await net.provider('a.test').ctx.storage.db.selectFrom('outbox').select('attempts').where('message_seq', '=', r.body.seq).executeTakeFirstOrThrow();
    assert.ok(Number(row.attempts) >= 2, `attempts: ${row.attempts}`);
  });

  it('from a callback-only peer to our users: six-step (Link header) and token variant (legacy rel="pm")', async () => {
    const m1 = peerMessage('carol@carol.test', 'alice@alice.test', 'carol by six steps');
    const r1 = await peer.send(m1, 'six-step');
    assert.equal(r1.status, 201, JSON.stringify(r1));
    // Steps 3 and 4 reached the peer: a.test called back the server carol.test names.
    assert.ok(peer.log.includes('check') && peer.log.includes('grant'));
    const conv = await eventually('alice has it', async () => {
      const convs = await api(net, 'a.test', 'GET', '/conversations', { token: alice.token });
      for (const c of convs.body.conversations) {
        const h = await history(net, alice, c.id);
        if (h.some((m) => m.id === m1.id)) return c.id as string;
      }
      return undefined;
    }, LONG);
    assert.ok(conv);
    // The same step 6 again (a sender retrying after a lost answer): acknowledged, stored once.
    const again = await peer.request(serverA, 'POST', { type: 'message', token: peer.held.get(`${serverA}|carol.test|${m1.id}`), message: m1 });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.status, 'duplicate');
    assert.equal(await count('a.test', 'carol@carol.test'), 1);

    for (const text of ['erin 1', 'erin 2', 'erin 3']) {
      const r = await peer.send(peerMessage('erin@erin.test', 'alice@alice.test', text), 'token');
      assert.equal(r.status, 201, JSON.stringify(r));
    }
    assert.equal(await count('a.test', 'erin@erin.test'), 3);
    const issued = await net.provider('a.test').ctx.storage.db.selectFrom('callback_tokens').selectAll().where('domain', '=', 'erin.test').execute();
    assert.equal(issued.length, 1, 'one token for erin.test\'s three messages');
    assert.equal(issued[0]!.flow, 'session');
    assert.notEqual(issued[0]!.token_hash, [...peer.held.values()].at(-1), 'only the hash is stored');
  });

  it('an expired, revoked or unknown token is refused (401, JSON error), nothing stored', async () => {
    const db = net.provider('a.test').ctx.storage.db;
    const key = `${serverA}|erin.test|`;
    const token = peer.held.get(key);
    assert.ok(token);
    const before = await count('a.test', 'erin@erin.test');
    await db.updateTable('callback_tokens').set({ expires_at: 0 }).where('domain', '=', 'erin.test').execute();
    const expired = await peer.request(serverA, 'POST', { type: 'message', token, message: peerMessage('erin@erin.test', 'alice@alice.test', 'late') });
    assert.equal(expired.status, 401);
    assert.equal(expired.json.error, 'token_expired');
    // The peer asks again and gets a new token; the sender revokes it; then it is refused.
    peer.held.delete(key);
    const ok = await peer.send(peerMessage('erin@erin.test', 'alice@alice.test', 'with a new token'), 'token');
    assert.equal(ok.status, 201, JSON.stringify(ok));
    const fresh = peer.held.get(key)!;
    const revoke = await peer.request(serverA, 'POST', { type: 'revoke', token: fresh });
    assert.equal(revoke.status, 200, revoke.text);
    const revoked = await peer.request(serverA, 'POST', { type: 'message', token: fresh, message: peerMessage('erin@erin.test', 'alice@alice.test', 'revoked') });
    assert.equal(revoked.status, 401);
    assert.equal(revoked.json.error, 'token_revoked');
    const unknown = await peer.request(serverA, 'POST', { type: 'message', token: `ict1_${'x'.repeat(43)}`, message: peerMessage('erin@erin.test', 'alice@alice.test', 'forged') });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.json.error, 'invalid_token');
    assert.equal(await count('a.test', 'erin@erin.test'), before + 1);
    // Malformed requests: 400 with what is wrong.
    for (const body of [{ type: 'nope' }, { type: 'notify', domain: 'erin.test' }, { type: 'message', token: 'abc', message: {} }]) {
      const r = await peer.request(serverA, 'POST', body);
      assert.equal(r.status, 400, r.text);
      assert.equal(typeof r.json.error, 'string');
      assert.equal(typeof r.json.message, 'string');
    }
  });

  it('spoofing refused: a request claiming alice.test is checked with the server alice.test names (403), nothing stored', async () => {
    const dbB = net.provider('b.test').ctx.storage.db;
    // The peer claims a message from alice.test: b.test calls a.test back, which knows no such message.
    const spoof = peerMessage('alice@alice.test', 'bob@bob.test', 'I am alice');
    const r = await peer.send(spoof, 'six-step');
    assert.equal(r.status, 403, JSON.stringify(r));
    assert.equal(r.json.error, 'callback_refused');
    assert.match(r.json.message, /unknown_message/);
    // Token variant: a.test issued no such code.
    const r2 = await peer.send(peerMessage('alice@alice.test', 'bob@bob.test', 'I am alice'), 'token');
    assert.equal(r2.status, 403, JSON.stringify(r2));
    assert.equal(r2.json.error, 'callback_refused');
    assert.equal((await dbB.selectFrom('callback_tokens').select('token_hash').where('domain', '=', 'alice.test').execute()).length, 0);
    // A token issued to carol.test does not carry a message from alice.test.
    const ok = await peer.send(peerMessage('carol@carol.test', 'bob@bob.test', 'carol to bob'), 'token');
    assert.equal(ok.status, 201, JSON.stringify(ok));
    const carolToken = peer.held.get(`${serverB}|carol.test|`)!;
    const forged = await peer.request(serverB, 'POST', { type: 'message', token: carolToken, message: peerMessage('alice@alice.test', 'bob@bob.test', 'I am alice') });
    assert.equal(forged.status, 403, forged.text);
    assert.equal(forged.json.error, 'sender_not_delegated');
    assert.equal(await count('b.test', 'alice@alice.test'), 0);
    // Nobody may speak for our own personal domain by the callback flow either.
    const own = await peer.request(serverA, 'POST', { type: 'notify', domain: 'alice.test', id: 'x' });
    assert.equal(own.status, 403);
    assert.equal(own.json.error, 'sender_is_local');
  });

  it('a home page naming a private address is not called back (SSRF policy): 403, the address is never contacted', async () => {
    const checksBefore = peer.log.filter((t) => t === 'check').length;
    const r = await peer.request(serverA, 'POST', { type: 'notify', domain: 'ssrf.test', id: 'm-ssrf' });
    assert.equal(r.status, 403, r.text);
    assert.equal(r.json.error, 'sender_not_delegated');
    assert.equal(peer.log.filter((t) => t === 'check').length, checksBefore);
    // In production (no resolve overrides), the home page itself on a private address is refused.
    const client = new PeerHttp({ resolve: new Map(), insecurePeers: new Set(), timeoutMs: 5_000, perPeerConcurrency: 2, userAgent: 'intertalk-test/1', lookup: (_h, cb) => cb(null, [{ address: '127.0.0.1', family: 4 }]) });
    try {
      const delegations = new Delegations({ http: client, discovery: new Discovery({ http: client, clock: systemClock, ttlMs: 60_000, insecurePeers: new Set() }), clock: systemClock, ttlMs: 60_000, insecurePeers: new Set() });
      const db = net.provider('a.test').ctx.storage.db;
      const endpoint = new CallbackEndpoint({
        db,
        clock: systemClock,
        logger: net.provider('a.test').ctx.logger,
        http: client,
        store: new CallbackStore({ db, clock: systemClock }),
        delegations,
        domain: 'a.test',
        endpoint: serverA,
        isOurs: () => false,
        isBlocked: async () => false,
        tokenTtlMs: 3_600_000,
        perIp: { hit: async () => ({ allowed: true, granted: 1, retryAfterMs: 0 }) } as any,
        receive: async () => ({ status: 500, body: {} }),
      });
      const res = await endpoint.handle({ type: 'notify', domain: 'rebind.example', id: 'm' }, '127.0.0.1');
      assert.equal(res.status, 403, JSON.stringify(res.body));
      assert.equal((res.body as any).error, 'sender_not_delegated');
      assert.match((res.body as any).message, /home_unreachable/);
    } finally {
      await client.close();
    }
  });

  it('between two of our providers by the callback flow: alice@alice.test ↔ bob@bob.test', async () => {
    const sent = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', 'bob@bob.test'], message: 'hello bob at home' } });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    assert.equal((await delivered(alice, sent.body)).state, 'delivered');
    const conv = sent.body.conversationId as string;
    const got = await eventually('bob has it', async () => (await history(net, bob, conv)).find((m) => m.message === 'hello bob at home'), LONG);
    assert.equal(got.from, 'alice@alice.test');
    for (const text of ['bob 1', 'bob 2']) {
      const r = await api(net, 'b.test', 'POST', '/messages', { token: bob.token, json: { from: 'bob@bob.test', to: ['alice@alice.test', 'bob@bob.test'], message: text } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.conversationId, conv);
      assert.equal((await delivered(bob, r.body)).state, 'delivered');
    }
    const replies = (await history(net, alice, conv)).filter((m) => m.from === 'bob@bob.test');
    assert.deepEqual(replies.map((m) => m.message), ['bob 1', 'bob 2']);
    // Both sides hold one token of the other (token variant), none of the peer's.
    const heldA = await net.provider('a.test').ctx.storage.db.selectFrom('callback_held').selectAll().where('destination', '=', serverB).execute();
    assert.equal(heldA.length, 1);
    assert.equal(heldA[0]!.domain, 'alice.test');
  });
});
