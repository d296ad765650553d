// Personal domains end to end (issue 14, slice 2): two real providers (a.test, b.test) on real
// sockets and a small loopback web server playing the users' home pages (plain http, the names
// listed in INTERTALK_INSECURE_PEERS and wired with INTERTALK_RESOLVE, as slice 1's tests do).
// alice@a.test attaches alice.test; bob@b.test and alice@alice.test talk both ways; a sender
// whose home page does not name its provider is refused with nothing stored; the re-check is
// clock-driven; discovery of a name resolving to a private address is refused in production.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startNetwork, type Network } from './helpers/network.js';
import { html, startHomePages, type HomePages } from './helpers/home-pages.js';
import { api, eventually, fed, fedUser, history, type FedUser } from './helpers/fed.js';
import { PeerHttp } from '../src/federation/net.js';
import { Discovery } from '../src/federation/discovery.js';
import { Delegations } from '../src/indieweb/delegation.js';
import { systemClock } from '../src/util/clock.js';


const SITES = ['alice.test', 'hdr.test', 'meta.test', 'spoof.test', 'nolink.test'];

describe('personal domains', () => {
  let web: HomePages;
  let sites: HomePages['sites'];
  let net: Network;
  let alice: FedUser;
  let bob: FedUser;
  let carol: FedUser;
  let serverA: string;
  let serverB: string;

  before(async () => {
    web = await startHomePages();
    sites = web.sites;
    const port = web.port;
    net = await startNetwork({
      domains: ['a.test', 'b.test'],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_INSECURE_PEERS: SITES.join(',') },
      extraResolve: Object.fromEntries(SITES.map((s) => [s, port])),
    });
    serverA = `${net.provider('a.test').config.publicUrl}/`;
    serverB = `${net.provider('b.test').config.publicUrl}/`;
    alice = await fedUser(net, 'a.test', 'alice');
    carol = await fedUser(net, 'a.test', 'carol');
    bob = await fedUser(net, 'b.test', 'bob');
  });
  after(async () => {
    await net?.stop();
    await web?.close();
  });

  it('attaching answers with what to publish; the state names the failing step until the page points here', async () => {
    sites.set('alice.test', { '/': html('<title>Alice</title>') });
    const first = await api(net, 'a.test', 'PUT', '/me/domains/alice.test', { token: alice.token });
    assert.equal(first.status, 201, JSON.stringify(first.body));
    assert.equal(first.body.state, 'failed');
    assert.equal(first.body.step, 'no_link');
    assert.equal(first.body.address, 'alice@alice.test');
    assert.equal(first.body.publish.server, serverA);
    assert.equal(first.body.publish.linkElement, `<link rel="intertalk-server" href="${serverA}">`);
    assert.equal(first.body.publish.linkHeader, `Link: <${serverA}>; rel="intertalk-server"`);
    assert.deepEqual(first.body.publish.metadata.document, { server: serverA });

    // A page naming another provider: wrong_server.
    sites.set('alice.test', { '/': html(`<link rel="intertalk-server" href="${serverB}">`) });
    const wrong = await api(net, 'a.test', 'PUT', '/me/domains/alice.test', { token: alice.token });
    assert.equal(wrong.status, 200);
    assert.equal(wrong.body.state, 'failed');
    assert.equal(wrong.body.step, 'wrong_server');

    sites.set('alice.test', { '/': html(first.body.publish.linkElement) });
    const ok = await api(net, 'a.test', 'PUT', '/me/domains/alice.test', { token: alice.token });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.state, 'verified', JSON.stringify(ok.body));
    assert.equal(ok.body.via, 'html');
    assert.equal(ok.body.step, null);

    const list = await api(net, 'a.test', 'GET', '/me/domains', { token: alice.token });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.domains.map((d: any) => [d.domain, d.state]), [['alice.test', 'verified']]);

    // One account per domain; bad names and unauthenticated calls are refused with a JSON error.
    const taken = await api(net, 'a.test', 'PUT', '/me/domains/alice.test', { token: carol.token });
    assert.equal(taken.status, 409);
    assert.equal(taken.body.error, 'domain_taken');
    const bad = await api(net, 'a.test', 'PUT', '/me/domains/a.test', { token: carol.token });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid_domain');
    const ip = await api(net, 'a.test', 'PUT', '/me/domains/127.0.0.1', { token: carol.token });
    assert.equal(ip.status, 400);
    const anon = await api(net, 'a.test', 'PUT', '/me/domains/x.test');
    assert.equal(anon.status, 401);
    assert.equal(typeof anon.body.error, 'string');
  });

  it('verifies a Link header and a metadata document too; detaching removes the domain', async () => {
    sites.set('hdr.test', { '/': { headers: { 'content-type': 'text/plain', link: `<${serverA}>; rel="intertalk-server"` }, body: 'hi' } });
    sites.set('meta.test', {
      '/': html('<link rel="intertalk-metadata" href="/intertalk.json">'),
      '/intertalk.json': { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ server: serverA }) },
    });
    const h = await api(net, 'a.test', 'PUT', '/me/domains/hdr.test', { token: carol.token });
    assert.equal(h.body.state, 'verified', JSON.stringify(h.body));
    assert.equal(h.body.via, 'link-header');
    const m = await api(net, 'a.test', 'PUT', '/me/domains/meta.test', { token: carol.token });
    assert.equal(m.body.state, 'verified', JSON.stringify(m.body));
    assert.equal(m.body.via, 'metadata');
    assert.equal(fed(net.provider('a.test')).indieweb!.domains.owner('carol@meta.test'), 'carol@a.test');
    const del = await api(net, 'a.test', 'DELETE', '/me/domains/meta.test', { token: carol.token });
    assert.equal(del.status, 204);
    assert.equal(fed(net.provider('a.test')).indieweb!.domains.owner('carol@meta.test'), null);
    const again = await api(net, 'a.test', 'DELETE', '/me/domains/meta.test', { token: carol.token });
    assert.equal(again.status, 404);
    assert.equal(again.body.error, 'not_found');
  });

  it('messages both ways between bob@b.test and alice@alice.test', async () => {
    // b.test → alice@alice.test: b.test finds a.test on alice.test's home page and delivers there.
    const sent = await api(net, 'b.test', 'POST', '/messages', { token: bob.token, json: { to: [bob.address, 'alice@alice.test'], message: 'hello alice at home' } });
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    const conv = sent.body.conversationId as string;
    const got = await eventually('alice sees bob\'s message', async () => {
      const h = await history(net, alice, conv);
      return h.find((m) => m.message === 'hello alice at home');
    }, 30_000);
    assert.equal(got.from, bob.address);
    assert.deepEqual(got.to, ['alice@alice.test', bob.address].sort());
    const d = await eventually('delivered', async () => {
      const r = await api(net, 'b.test', 'GET', `/conversations/${conv}/messages/${sent.body.seq}/deliveries`, { token: bob.token });
      return r.body.deliveries?.[0]?.state === 'delivered' ? r.body.deliveries : undefined;
    }, 30_000);
    assert.equal(d[0].destination, 'alice.test');
    // The conversation is alice's: listed for her account.
    const convs = await api(net, 'a.test', 'GET', '/conversations', { token: alice.token });
    assert.ok(convs.body.conversations.some((c: any) => c.id === conv));

    // alice@alice.test → bob: several at once (b.test advertises batch/1), in order.
    for (const text of ['reply 1', 'reply 2', 'reply 3']) {
      const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', bob.address], message: text } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.conversationId, conv);
    }
    const replies = await eventually('bob has the replies', async () => {
      const h = (await history(net, bob, conv)).filter((m) => m.from === 'alice@alice.test');
      return h.length === 3 ? h : undefined;
    }, 30_000);
    assert.deepEqual(replies.map((m) => m.message), ['reply 1', 'reply 2', 'reply 3']);
    // alice sees her own replies in the conversation.
    assert.equal((await history(net, alice, conv)).filter((m) => m.from === 'alice@alice.test').length, 3);
    // Nobody else may send as alice@alice.test.
    const notYours = await api(net, 'a.test', 'POST', '/messages', { token: carol.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', bob.address], message: 'x' } });
    assert.equal(notYours.status, 403);
    assert.equal(notYours.body.error, 'from_mismatch');
  });

  it('refuses a sender whose home page does not name the signing provider (403 sender_not_delegated), storing nothing', async () => {
    sites.set('spoof.test', { '/': html(`<link rel="intertalk-server" href="${serverB}">`) });
    sites.set('nolink.test', { '/': html('<title>nothing here</title>') });
    const keysA = fed(net.provider('a.test')).keys;
    const dbB = net.provider('b.test').ctx.storage.db;
    for (const [from, why] of [['mallory@spoof.test', /names .* not a\.test/], ['mallory@nolink.test', /no_link/]] as const) {
      const token = await keysA.sign({ aud: 'b.test', sub: from });
      const r = await api(net, 'b.test', 'POST', '/messages', { token, json: { id: `spoof-${from}`, from, to: [from, bob.address], sentAt: new Date().toISOString(), message: 'I am someone else' } });
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal(r.body.error, 'sender_not_delegated');
      assert.match(r.body.message, why);
      const stored = await dbB.selectFrom('messages').select('seq').where('sender', '=', from).execute();
      assert.equal(stored.length, 0);
    }
    // A peer cannot speak for our own personal domain either: it is ours, like our own domain.
    const keysB = fed(net.provider('b.test')).keys;
    const token = await keysB.sign({ aud: 'a.test', sub: 'alice@alice.test' });
    const r = await api(net, 'a.test', 'POST', '/messages', { token, json: { id: 'spoof-own', from: 'alice@alice.test', to: ['alice@alice.test', carol.address], sentAt: new Date().toISOString(), message: 'x' } });
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.equal(r.body.error, 'issuer_mismatch');
    const none = await net.provider('a.test').ctx.storage.db.selectFrom('messages').select('seq').where('id', '=', 'spoof-own').execute();
    assert.equal(none.length, 0);
  });

  it('re-checks on the clock: a page that stops pointing here fails with its step, and the address stops working', async () => {
    const domains = fed(net.provider('a.test')).indieweb!.domains;
    sites.set('alice.test', { '/': html('<title>moved away</title>') });
    // Not due yet: nothing checked.
    assert.equal(await domains.recheckDue(Date.now()), 0);
    const checked = await domains.recheckDue(Date.now() + 6 * 3_600_000 + 60_000);
    assert.ok(checked >= 1);
    const view = await api(net, 'a.test', 'GET', '/me/domains/alice.test', { token: alice.token });
    assert.equal(view.body.state, 'failed');
    assert.equal(view.body.step, 'no_link');
    assert.equal(domains.owner('alice@alice.test'), null);
    const r = await api(net, 'a.test', 'POST', '/messages', { token: alice.token, json: { from: 'alice@alice.test', to: ['alice@alice.test', bob.address], message: 'x' } });
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'from_mismatch');
  });

  it('in production (no resolve overrides), a home page on a private address is refused', async () => {
    const client = new PeerHttp({
      resolve: new Map(),
      insecurePeers: new Set(),
      timeoutMs: 5_000,
      perPeerConcurrency: 2,
      userAgent: 'intertalk-test/1',
      lookup: (_host, cb) => cb(null, [{ address: '127.0.0.1', family: 4 }]),
    });
    try {
      const delegations = new Delegations({ http: client, discovery: new Discovery({ http: client, clock: systemClock, ttlMs: 60_000, insecurePeers: new Set() }), clock: systemClock, ttlMs: 60_000, insecurePeers: new Set() });
      const d = await delegations.discover('rebind.example');
      assert.equal(d.ok, false);
      assert.ok(!d.ok && d.step === 'home_unreachable' && d.policy === true, JSON.stringify(d));
      const refused = await delegations.check('rebind.example', 'a.test');
      assert.equal(refused?.status, 403);
      assert.equal(refused?.error, 'sender_not_delegated');
    } finally {
      await client.close();
    }
  });
});
