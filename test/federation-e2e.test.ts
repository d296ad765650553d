// Federation end to end: real providers (a.test, b.test, c.test) in this process, talking verified
// HTTPS to each other through a throw-away CA (src/devnet/network.ts), with users on WebSockets.
// Covers live 1:1 and group chat across three providers, one request per receiving provider, a
// receiver that is down for a while, delivery states, key rotation, blocklists, insecure (plain
// http) peers and `intertalk federation status`.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { freePort, startNetwork, type Network } from './helpers/network.js';
import { federationStatus } from '../src/federation/status.js';
import { api, counter, deliveries, eventually, fed, FedSocket, fedUser, history, say, startPlainProvider, type FedUser } from './helpers/fed.js';

const INBOUND = 'intertalk_federation_inbound_requests_total';
const OUTBOUND = 'intertalk_federation_outbound_attempts_total';

describe('federation end to end (three providers over HTTPS)', () => {
  let net: Network;
  let deadPort: number;
  let plainPort: number;
  const sockets: FedSocket[] = [];
  const stops: Array<() => Promise<void>> = [];
  let a1: FedUser, a2: FedUser, b1: FedUser, b2: FedUser, c1: FedUser;
  /** Outbox rows written on a.test per destination, and how many of them must end failed. */
  const fromA = new Map<string, number>();
  const failedFromA = new Map<string, number>();
  /** plain.test's message to b.test (which has no insecure opt-in) and its sender's token. */
  let refusedByB: any = null;
  let plainToken = '';

  const open = async (u: FedUser, mode: { rich?: boolean; since?: number } = {}) => {
    const s = await FedSocket.open(net, u, mode);
    sockets.push(s);
    return s;
  };

  /** say(), keeping count of a.test's outbox rows per destination (for the status test). */
  const send = async (u: FedUser, to: string[], text: string) => {
    const m = await say(net, u, to, text);
    if (u.domain === 'a.test') {
      for (const d of new Set(to.map((a) => a.slice(a.lastIndexOf('@') + 1)).filter((d) => d !== 'a.test'))) fromA.set(d, (fromA.get(d) ?? 0) + 1);
    }
    return m;
  };

  /** Waits until no provider has a queued delivery (except to the dead domain). */
  const quiesce = async () => {
    for (const d of ['a.test', 'b.test', 'c.test']) {
      const db = net.provider(d).ctx.storage.db;
      await eventually(`${d}'s outbox to drain`, async () => {
        const r = await db.selectFrom('outbox').select('destination').where('state', '=', 'queued').where('destination', '!=', 'dead.test').execute();
        return r.length === 0;
      });
    }
  };

  before(async () => {
    deadPort = await freePort(); // nothing listens here: dead.test has no provider
    plainPort = await freePort();
    net = await startNetwork({
      domains: ['a.test', 'b.test', 'c.test'],
      env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s' },
      envFor: {
        // a.test accepts plain http from (and delivers plain http to) plain.test; b.test does not.
        'a.test': { INTERTALK_INSECURE_PEERS: 'plain.test' },
        // c.test gives up on a delivery after 2 s, so one to a dead domain ends as failed.
        'c.test': { INTERTALK_FEDERATION_MAX_AGE: '2s' },
      },
      extraResolve: { 'dead.test': deadPort, 'plain.test': plainPort },
    });
    a1 = await fedUser(net, 'a.test', 'alice');
    a2 = await fedUser(net, 'a.test', 'amir');
    b1 = await fedUser(net, 'b.test', 'bob');
    b2 = await fedUser(net, 'b.test', 'bea');
    c1 = await fedUser(net, 'c.test', 'carol');
  });

  after(async () => {
    for (const s of sockets) s.close();
    for (const stop of stops) await stop().catch(() => undefined);
    if (net) {
      await net.stop();
      rmSync(net.dir, { recursive: true, force: true });
    }
  });

  it('three providers hold 1:1 and group conversations live; every provider has the same history', async () => {
    const users = [a1, b1, c1];
    const live = new Map<FedUser, FedSocket>();
    for (const u of users) live.set(u, await open(u)); // reference (bare) mode on the user's own provider

    const sentIn = new Map<string, any[]>(); // conversationId → messages as their senders stored them
    const exchange = async (from: FedUser, to: FedUser[], text: string) => {
      const m = await send(from, to.map((u) => u.address), text);
      assert.equal(m.from, from.address);
      for (const r of to) {
        const got = await live.get(r)!.message(m.id, 5000);
        assert.equal(got.from, from.address, `${r.address} sees the sender`);
        assert.equal(got.message, text);
        assert.equal(got.sentAt, m.sentAt);
        assert.deepEqual(got.to, m.to);
        assert.equal(got.conversationId, m.conversationId, 'every provider computes the same conversation id');
        assert.equal(got.insecure, undefined, 'HTTPS with verified keys is not insecure');
      }
      // All messages come over the socket, including one's own.
      await live.get(from)!.message(m.id, 5000);
      sentIn.set(m.conversationId, [...(sentIn.get(m.conversationId) ?? []), m]);
      return m;
    };

    // 1:1 a ↔ b, with replies.
    await exchange(a1, [b1], 'hi bob, alice from a.test');
    await exchange(b1, [a1], 'hi alice, bob here');
    await exchange(a1, [b1], 'how is b.test?');
    // 1:1 b ↔ c.
    await exchange(c1, [b1], 'bob? carol from c.test');
    await exchange(b1, [c1], 'hello carol');
    // A group across all three providers; everyone talks.
    await exchange(a1, [b1, c1], 'group: hello all');
    await exchange(b1, [a1, c1], 'group: bob says hi');
    await exchange(c1, [a1, b1], 'group: carol too');
    await exchange(a1, [b1, c1], 'group: see you');

    assert.equal(sentIn.size, 3);
    for (const [convId, sent] of sentIn) {
      const participants = users.filter((u) => sent[0].to.includes(u.address));
      for (const u of participants) {
        const h = await history(net, u, convId);
        assert.deepEqual(
          h.map((m) => m.id).sort(),
          sent.map((m) => m.id).sort(),
          `${u.address}'s history of ${convId} holds exactly the messages sent`,
        );
        for (const sender of participants) {
          assert.deepEqual(
            h.filter((m) => m.from === sender.address).map((m) => m.id),
            sent.filter((m) => m.from === sender.address).map((m) => m.id),
            `${u.address} sees ${sender.address}'s messages in the order sent`,
          );
        }
        for (const m of h) {
          const orig = sent.find((s) => s.id === m.id)!;
          assert.deepEqual({ from: m.from, to: m.to, sentAt: m.sentAt, message: m.message, conversationId: m.conversationId }, { from: orig.from, to: orig.to, sentAt: orig.sentAt, message: orig.message, conversationId: orig.conversationId });
        }
        // Seqs are per provider, but ascending in history.
        assert.deepEqual(h.map((m) => m.seq), [...h.map((m) => m.seq)].sort((x, y) => x - y));
      }
    }
  });

  it('a group with two users on one provider costs that provider one request per message', async () => {
    await quiesce();
    const sb1 = await open(b1);
    const sb2 = await open(b2);
    const sa1 = await open(a1);
    const sa2 = await open(a2);
    const B = net.provider('b.test');
    const A = net.provider('a.test');
    const C = net.provider('c.test');

    // a.test → b.test, group [alice, bob, bea].
    const bBefore = await counter(B, INBOUND);
    const bCreated = await counter(B, INBOUND, { status: '201' });
    const m = await send(a1, [b1.address, b2.address], 'one request for two people');
    await sb1.message(m.id);
    await sb2.message(m.id);
    const ds = await eventually('a.test to finish its deliveries', async () => {
      const d = await deliveries(net, a1, m);
      return d.every((x: any) => x.state !== 'queued') && d;
    });
    assert.equal(ds.length, 1, `one delivery for b.test's two users: ${JSON.stringify(ds)}`);
    assert.equal(ds[0].state, 'delivered');
    assert.equal(ds[0].destination, 'b.test');
    assert.equal(ds[0].attempts, 1);
    assert.equal((await counter(B, INBOUND)) - bBefore, 1, 'exactly one POST /messages reached b.test');
    assert.equal((await counter(B, INBOUND, { status: '201' })) - bCreated, 1, 'and it was accepted');

    // c.test → a group with two users on a.test and two on b.test: one request to each.
    const aBefore = await counter(A, INBOUND);
    const bBefore2 = await counter(B, INBOUND);
    const cDelivered = await counter(C, OUTBOUND, { outcome: 'delivered' });
    const cAll = await counter(C, OUTBOUND);
    const g = await send(c1, [a1.address, a2.address, b1.address, b2.address], 'five people, three providers');
    for (const s of [sa1, sa2, sb1, sb2]) await s.message(g.id);
    const gd = await eventually('c.test to finish its deliveries', async () => {
      const d = await deliveries(net, c1, g);
      return d.every((x: any) => x.state !== 'queued') && d;
    });
    assert.deepEqual(gd.map((x: any) => [x.destination, x.state, x.attempts]), [['a.test', 'delivered', 1], ['b.test', 'delivered', 1]]);
    assert.equal((await counter(A, INBOUND)) - aBefore, 1, 'one request to a.test for its two users');
    assert.equal((await counter(B, INBOUND)) - bBefore2, 1, 'one request to b.test for its two users');
    assert.equal((await counter(C, OUTBOUND, { outcome: 'delivered' })) - cDelivered, 2);
    assert.equal((await counter(C, OUTBOUND)) - cAll, 2, 'no other attempts');
  });

  it('a receiver that is down gets all 20 messages in order once back; a message from it ends the back-off', async () => {
    await quiesce();
    const sa = await open(a1);
    const first = await open(b1, { rich: true });
    const cursor: number = first.frames.find((f) => f.type === 'ready').cursor;
    assert.ok(Number.isSafeInteger(cursor));

    const adb = net.provider('a.test').ctx.storage.db;
    await net.stopNode('b.test');
    try {
      await downFor20(adb, sa, cursor);
    } finally {
      // Whatever happened, leave b.test running and a.test without a back-off for it.
      await net.startNode('b.test');
      await adb.updateTable('federation_peers').set({ failures: 0, backoff_until: 0 }).where('domain', '=', 'b.test').execute();
      await adb.updateTable('outbox').set({ next_attempt_at: Date.now() }).where('destination', '=', 'b.test').where('state', '=', 'queued').execute();
    }
  });

  const downFor20 = async (adb: ReturnType<Network['provider']>['ctx']['storage']['db'], sa: FedSocket, cursor: number) => {
    const sent: any[] = [];
    for (let i = 0; i < 20; i++) sent.push(await send(a1, [b1.address], `while you were away #${i}`));

    // Every message waits for b.test, with the reason of the failed attempt.
    const states = await eventually('all 20 queued with a lastError', async () => {
      const all = await Promise.all(sent.map((m) => deliveries(net, a1, m)));
      return all.every((d) => d.length === 1 && d[0].state === 'queued' && typeof d[0].lastError === 'string' && d[0].lastError.length > 0) && all;
    });
    for (const [d] of states) {
      assert.equal(d.destination, 'b.test');
      assert.match(d.lastError, /b\.test/);
      assert.equal(d.deliveredAt, null);
      assert.ok(d.nextAttemptAt, 'a queued delivery says when it is tried next');
    }

    // b.test has been away long enough for a long back-off (as after hours of downtime).
    const until = Date.now() + 10 * 60_000;
    await adb.updateTable('federation_peers').set({ failures: 12, backoff_until: until }).where('domain', '=', 'b.test').execute();
    await adb.updateTable('outbox').set({ next_attempt_at: until }).where('destination', '=', 'b.test').where('state', '=', 'queued').execute();
    const held = await deliveries(net, a1, sent[0]);
    assert.equal(held[0].state, 'queued');
    assert.ok(Date.parse(held[0].nextAttemptAt) >= until - 1000, `the back-off holds the queue (${held[0].nextAttemptAt})`);

    await net.startNode('b.test');
    // bob writes to alice: a.test hears from b.test, so it stops backing off and delivers at once.
    const hello = await send(b1, [a1.address], 'back online');
    await sa.message(hello.id, 5000);

    // bob resumes his stream from his cursor: all 20 (and his own message), in order, no duplicates.
    const resumed = await open(b1, { since: cursor });
    await resumed.until(() => resumed.messages().filter((m) => m.from === a1.address).length >= 20, 15_000, 'the 20 queued messages');
    const fromAlice = resumed.messages().filter((m) => m.from === a1.address);
    assert.deepEqual(fromAlice.map((m) => m.id), sent.map((m) => m.id), 'in the order sent, each once');
    assert.deepEqual(fromAlice.map((m) => m.message), sent.map((m) => m.message));
    const ids = resumed.messages().map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates on the resumed stream');
    assert.ok(ids.includes(hello.id));
    const seqs = resumed.messages().map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));

    const h = (await history(net, b1, sent[0].conversationId)).filter((m) => m.message.startsWith('while you were away'));
    assert.deepEqual(h.map((m) => m.id), sent.map((m) => m.id), 'b.test stored each message once, in order');
    // …all within seconds, not after the 10-minute back-off.
    await eventually('a.test to mark all 20 delivered', async () => {
      const all = await Promise.all(sent.map((m) => deliveries(net, a1, m)));
      return all.every((d) => d[0].state === 'delivered' && d[0].lastError === null);
    });
  };

  it('without a message from the receiver, deliveries resume on their own after its back-off', async () => {
    await quiesce();
    await net.stopNode('b.test');
    const sent: any[] = [];
    try {
      for (let i = 0; i < 3; i++) sent.push(await send(a1, [b1.address], `second outage #${i}`));
      await eventually('the first failed attempt', async () => {
        const d = await deliveries(net, a1, sent[2]);
        return d[0].state === 'queued' && d[0].lastError;
      });
    } finally {
      await net.startNode('b.test');
    }
    const h = await eventually(
      'b.test to receive the 3 messages after the back-off',
      async () => {
        const all = (await history(net, b1, sent[0].conversationId)).filter((m) => m.message.startsWith('second outage'));
        return all.length >= 3 && all;
      },
      20_000,
      200,
    );
    assert.deepEqual(h.map((m) => m.id), sent.map((m) => m.id));
  });

  it('the sender sees each delivery state: queued → delivered, and failed with a reason', async () => {
    await quiesce();
    const ra = await open(a1, { rich: true });
    const eventsFor = (s: FedSocket, id: string) => s.deliveryEvents().filter((e) => e.messageId === id);

    // To a peer: queued, then delivered.
    const m = await send(a1, [b1.address], 'track me');
    const evs = await ra.until(() => {
      const e = eventsFor(ra, m.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 5000, 'delivery events');
    assert.deepEqual(evs.map((e) => e.state), ['queued', 'delivered']);
    for (const e of evs) {
      assert.equal(e.destination, 'b.test');
      assert.equal(e.seq, m.seq);
      assert.equal(e.conversationId, m.conversationId);
      assert.equal(e.insecure, false);
    }
    assert.equal(evs[1].error, null);

    // To a user the peer does not have: b.test answers 403 no_local_recipient; no retries.
    const B = net.provider('b.test');
    const b403 = await counter(B, INBOUND, { status: '403' });
    const nobody = await send(a1, ['nobody@b.test'], 'anyone there?');
    const nEvs = await ra.until(() => {
      const e = eventsFor(ra, nobody.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 5000, 'delivery events for nobody@b.test');
    failedFromA.set('b.test', (failedFromA.get('b.test') ?? 0) + 1);
    assert.deepEqual(nEvs.map((e) => e.state), ['queued', 'failed']);
    assert.match(nEvs[1].error, /b\.test answered 403/);
    assert.match(nEvs[1].error, /no_local_recipient/);
    const nd = await deliveries(net, a1, nobody);
    assert.equal(nd.length, 1);
    assert.equal(nd[0].state, 'failed');
    assert.equal(nd[0].attempts, 1, 'a 4xx is final: no retries');
    assert.equal(nd[0].nextAttemptAt, null);
    assert.match(nd[0].lastError, /no_local_recipient/);
    assert.equal((await counter(B, INBOUND, { status: '403' })) - b403, 1);

    // To a domain with no provider (nothing listens): retried, then failed with the reason once
    // c.test's maximum age (2 s) has passed.
    const rc = await open(c1, { rich: true });
    const dead = await send(c1, ['ghost@dead.test'], 'hello, void');
    const dEvs = await rc.until(() => {
      const e = eventsFor(rc, dead.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 15_000, 'dead.test delivery to fail');
    assert.deepEqual(dEvs.map((e) => e.state), ['queued', 'failed']);
    assert.match(dEvs[1].error, /not delivered within/);
    assert.match(dEvs[1].error, /dead\.test/, 'the reason names the unreachable domain');
    const dd = await deliveries(net, c1, dead);
    assert.equal(dd[0].state, 'failed');
    assert.ok(dd[0].attempts >= 2, `retried before giving up (attempts: ${dd[0].attempts})`);

    // a.test (no short maximum age) keeps one queued for dead.test, with its last error.
    const stuck = await send(a1, ['ghost@dead.test'], 'still trying');
    const sd = await eventually('a failed attempt to dead.test', async () => {
      const d = await deliveries(net, a1, stuck);
      return d[0].lastError && d;
    });
    assert.equal(sd[0].state, 'queued');
    assert.match(sd[0].lastError, /dead\.test/);
  });

  it('rotating the signing key (ES256, EdDSA, RS256) mid-conversation loses no message', async () => {
    await quiesce();
    const A = fed(net.provider('a.test'));
    const sb = await open(b1, { rich: true });
    const sent: any[] = [];
    const kids: string[] = [];
    const oldKid = (await A.keys.list()).find((k) => k.active)!.kid;

    sent.push(await send(a1, [b1.address], 'before rotation'));
    await sb.message(sent[0].id);
    for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
      kids.push((await A.keys.rotate(alg)).kid);
      sent.push(await send(a1, [b1.address], `after rotating to ${alg}`));
      // Tokens are signed at delivery, not at send: let this one go out with the new key before
      // the next rotation (otherwise a fast rotation could retire a key before it signed anything).
      await sb.message(sent.at(-1).id, 10_000);
    }
    // And a rotation while deliveries are in flight.
    for (let i = 0; i < 6; i++) {
      sent.push(await send(a1, [b1.address], `burst #${i}`));
      if (i === 2) kids.push((await A.keys.rotate()).kid);
    }

    await sb.until(() => sent.every((m) => sb.messages().some((x) => x.id === m.id)), 15_000, 'every message across rotations');
    const got = sb.messages().filter((m) => m.from === a1.address);
    assert.deepEqual(got.map((m) => m.id), sent.map((m) => m.id), 'all arrive, in order, once');

    const keys = await A.keys.list();
    assert.equal(keys.find((k) => k.active)!.kid, kids[3]);
    assert.deepEqual(
      kids.map((k) => keys.find((x) => x.kid === k)!.alg),
      ['ES256', 'EdDSA', 'RS256', 'ES256'],
    );
    // Retired keys stay published for the grace period.
    const published = await api(net, 'a.test', 'GET', '/keys');
    const pubKids = (published.body.keys as Array<{ kid: string }>).map((k) => k.kid);
    for (const k of [oldKid, ...kids]) assert.ok(pubKids.includes(k), `${k} is still published`);
    // b.test really verified tokens signed with each new key.
    const cached = (fed(net.provider('b.test')).peerKeys as unknown as { issuers: Map<string, { keys: Map<string, unknown> }> }).issuers.get('a.test');
    for (const k of kids) assert.ok(cached?.keys.has(k), `b.test fetched a.test's key ${k}`);
    const all = await Promise.all(sent.map((m) => deliveries(net, a1, m)));
    assert.ok(all.every((d) => d[0].state === 'delivered' && d[0].attempts === 1), 'each delivered on the first attempt');
  });

  it('blocklists: a blocked sender is refused with 403 domain_blocked; posting to a blocked domain fails at once', async () => {
    await quiesce();
    const A = net.provider('a.test');
    const B = net.provider('b.test');
    const ra = await open(a1, { rich: true });

    await fed(B).blocklist.add('a.test', null);
    const m = await send(a1, [b1.address], 'can you hear me?');
    const evs = await ra.until(() => {
      const e = ra.deliveryEvents().filter((x) => x.messageId === m.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 5000, 'delivery to the blocking peer to end');
    failedFromA.set('b.test', (failedFromA.get('b.test') ?? 0) + 1);
    assert.equal(evs.at(-1).state, 'failed');
    assert.match(evs.at(-1).error, /b\.test answered 403/);
    assert.match(evs.at(-1).error, /domain_blocked/);
    const d = await deliveries(net, a1, m);
    assert.equal(d[0].state, 'failed');
    assert.equal(d[0].attempts, 1);
    assert.ok(!(await history(net, b1, m.conversationId)).some((x) => x.id === m.id), 'b.test stored nothing');

    await fed(B).blocklist.remove('a.test');
    const again = await send(a1, [b1.address], 'unblocked');
    await eventually('delivery after unblocking', async () => (await deliveries(net, a1, again))[0].state === 'delivered');

    // a.test's own blocklist: its user cannot write to c.test at all.
    await fed(A).blocklist.add('c.test', null);
    try {
      const rows = async () => (await A.ctx.storage.db.selectFrom('outbox').select('id').where('destination', '=', 'c.test').execute()).length;
      const before = await rows();
      const r = await api(net, 'a.test', 'POST', '/messages', { token: a1.token, json: { to: [a1.address, c1.address], message: 'to a blocked domain' } });
      assert.equal(r.status, 403);
      assert.equal(r.body.error, 'domain_refused');
      assert.match(r.body.message, /c\.test/);
      assert.equal(await rows(), before, 'nothing was queued');
      // Also when the blocked domain is one of several.
      const r2 = await api(net, 'a.test', 'POST', '/messages', { token: a1.token, json: { to: [a1.address, b1.address, c1.address], message: 'group with a blocked domain' } });
      assert.equal(r2.status, 403);
      assert.equal(r2.body.error, 'domain_refused');
    } finally {
      await fed(A).blocklist.remove('c.test');
    }
  });

  it('an insecure (plain http) peer: accepted and marked insecure with the opt-in, refused without', async () => {
    await quiesce();
    const plain = await startPlainProvider(net, { domain: 'plain.test', port: plainPort, env: { INTERTALK_FEDERATION_SWEEP: '250ms', INTERTALK_FEDERATION_TIMEOUT: '5s' } });
    stops.push(plain.stop);
    assert.match(plain.url, /^http:\/\//);
    const p1 = await fedUser(net, 'plain.test', 'pat', plain.provider);
    plainToken = p1.token;
    const sp = await open(p1, { rich: true });
    const sa = await open(a1, { rich: true });

    // plain.test → a.test (which lists plain.test as insecure): accepted, marked insecure.
    const m = await send(p1, [a1.address], 'hello over plain http');
    const got = await sa.message(m.id, 10_000);
    assert.equal(got.insecure, true, 'the receiver marks the message insecure');
    const h = await history(net, a1, m.conversationId);
    assert.equal(h.find((x) => x.id === m.id)?.insecure, true);

    // a.test → plain.test over http: delivered, and the sender is told it went over plain http.
    const reply = await send(a1, [p1.address], 'reply over plain http');
    const evs = await sa.until(() => {
      const e = sa.deliveryEvents().filter((x) => x.messageId === reply.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 10_000, 'delivery to plain.test');
    assert.deepEqual(evs.map((e) => [e.state, e.insecure]), [['queued', true], ['delivered', true]]);
    const atPlain = await sp.message(reply.id, 5000);
    assert.equal(atPlain.insecure, undefined, "a.test's keys came over verified HTTPS");
    // A delivery plain.test refuses says so too.
    const toNobody = await send(a1, ['nobody@plain.test'], 'to nobody over plain http');
    const refusedEvs = await sa.until(() => {
      const e = sa.deliveryEvents().filter((x) => x.messageId === toNobody.id);
      return e.some((x) => x.state !== 'queued') && e;
    }, 10_000, 'refusal by plain.test');
    assert.deepEqual(refusedEvs.map((e) => [e.state, e.insecure]), [['queued', true], ['failed', true]]);
    failedFromA.set('plain.test', (failedFromA.get('plain.test') ?? 0) + 1);

    // plain.test → b.test (no opt-in): b.test cannot fetch plain.test's keys over HTTPS, so it
    // refuses the message.
    const B = net.provider('b.test');
    const bOk = (await counter(B, INBOUND, { status: '200' })) + (await counter(B, INBOUND, { status: '201' }));
    const bAll = await counter(B, INBOUND);
    const refused = await send(p1, [b1.address], 'b.test does not trust plain http');
    refusedByB = refused;
    const d = await eventually('plain.test to hear back from b.test', async () => {
      const x = await deliveries(net, p1, refused);
      return x[0].lastError && x;
    });
    assert.notEqual(d[0].state, 'delivered');
    assert.match(d[0].lastError, /b\.test answered 4|b\.test answered 5/);
    assert.match(d[0].lastError, /plain\.test/, `the reason names the untrusted peer (${d[0].lastError})`);
    assert.ok((await counter(B, INBOUND)) - bAll >= 1, 'b.test was asked');
    assert.equal((await counter(B, INBOUND, { status: '200' })) + (await counter(B, INBOUND, { status: '201' })) - bOk, 0, 'and accepted nothing');
    assert.ok(!(await history(net, b1, refused.conversationId)).some((x) => x.id === refused.id), 'b.test stored nothing');
  });

  // A peer whose keys cannot be fetched over HTTPS is not refused for good: the failure may be a
  // certificate blip, and a 4xx would make the sender drop the message. b.test answers 503 and
  // stores nothing; the sender keeps it queued and the user sees why (docs/decisions.md).
  it('without the opt-in, a plain-HTTP peer is deferred (503), never accepted, and the sender sees why', async () => {
    assert.ok(refusedByB, 'runs after the insecure-peer test');
    const p1 = { domain: 'plain.test', address: refusedByB.from, name: 'pat', token: plainToken };
    const d = await deliveries(net, p1, refusedByB);
    assert.equal(d[0].state, 'queued', JSON.stringify(d));
    assert.match(d[0].lastError, /b\.test answered 503.*keys_unavailable/);
    const stored = await net.provider('b.test').ctx.storage.db.selectFrom('messages').select('seq').where('sender', '=', refusedByB.from).execute();
    assert.equal(stored.length, 0);
  });

  it('`intertalk federation status` lists every destination with its queue counts', async () => {
    await quiesce();
    const db = net.provider('a.test').ctx.storage.db;
    const lines: string[] = [];
    await federationStatus(db, (s) => lines.push(s));
    assert.deepEqual(lines[0]!.split('\t'), ['DESTINATION', 'QUEUED', 'DELIVERED', 'FAILED', 'LAST SUCCESS', 'NEXT ATTEMPT', 'LAST ERROR']);
    const rows = new Map(lines.slice(1).map((l) => {
      const c = l.split('\t');
      return [c[0]!, c] as const;
    }));
    assert.deepEqual([...rows.keys()], [...fromA.keys()].sort(), 'one line per destination, sorted');
    for (const [domain, total] of fromA) {
      const c = rows.get(domain)!;
      const queued = domain === 'dead.test' ? 1 : 0;
      const failed = failedFromA.get(domain) ?? 0;
      assert.deepEqual(c.slice(1, 4).map(Number), [queued, total - queued - failed, failed], `${domain}: ${c.join(' | ')}`);
      if (queued) {
        assert.ok(!Number.isNaN(Date.parse(c[5]!)), `${domain} shows the next attempt (${c[5]})`);
        assert.match(c[6]!, /dead\.test/);
      } else {
        assert.equal(c[5], '-');
        assert.ok(!Number.isNaN(Date.parse(c[4]!)), `${domain} shows its last success (${c[4]})`);
      }
    }
    assert.equal(rows.get('b.test')![2], String(fromA.get('b.test')! - 2));
  });
});
