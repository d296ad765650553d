// Delivery transports (src/federation/transports.ts): a destination claimed by a transport gets its
// queue carried by it — with the outbox's order, retries, back-off, cancellation and delivery
// events — and every other destination still goes through federation.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startNetwork, type Network } from './helpers/network.js';
import { FedSocket, api, deliveries, eventually, fed, fedUser, say, type FedUser } from './helpers/fed.js';
import type { DeliveryOutcome, DeliveryTransport, OutboundRow } from '../src/federation/transports.js';

/** A transport for one domain whose answers the test scripts; it records every round. */
class ScriptedTransport implements DeliveryTransport {
  readonly name = 'scripted';
  readonly rounds: Array<{ destination: string; rows: OutboundRow[] }> = [];
  readonly asked = new Set<string>();
  /** Answers to give, one per round; when empty, every row is delivered. */
  readonly script: Array<(rows: OutboundRow[]) => DeliveryOutcome[] | Promise<DeliveryOutcome[]>> = [];
  constructor(private readonly domain: string) {}
  async claims(destination: string): Promise<boolean> {
    this.asked.add(destination);
    return destination === this.domain;
  }
  async deliver(destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]> {
    this.rounds.push({ destination, rows });
    const next = this.script.shift();
    return next ? next(rows) : rows.map(() => ({ kind: 'delivered', insecure: false }) as const);
  }
  delivered(): string[] {
    return this.rounds.flatMap((r) => r.rows.map((row) => JSON.parse(row.body).message as string));
  }
}

describe('delivery transports', () => {
  let net: Network;
  let transport: ScriptedTransport;
  let alice: FedUser;
  before(async () => {
    net = await startNetwork({ domains: ['a.test'], env: { INTERTALK_FEDERATION_SWEEP: '250ms' } });
    transport = new ScriptedTransport('mail.test');
    fed(net.provider('a.test')).addTransport(transport);
    alice = await fedUser(net, 'a.test', 'alice');
  });
  after(async () => net.stop());

  it('carries the destinations it claims, one round per destination, in order; others go to federation', async () => {
    const sock = await FedSocket.open(net, alice, { rich: true });
    const m1 = await say(net, alice, ['x@mail.test', 'y@mail.test'], 'one');
    const m2 = await say(net, alice, ['x@mail.test'], 'two');
    await eventually('both delivered', async () => (await deliveries(net, alice, m2))[0]?.state === 'delivered', 15_000);
    assert.equal((await deliveries(net, alice, m1))[0].state, 'delivered');
    assert.deepEqual(transport.delivered(), ['one', 'two']);
    // One outbox row per destination domain: both mail.test recipients travel in one row.
    assert.deepEqual(JSON.parse(transport.rounds[0]!.rows[0]!.body).to, ['alice@a.test', 'x@mail.test', 'y@mail.test']);
    assert.ok(transport.rounds.every((r) => r.destination === 'mail.test'));
    await sock.until((f) => f.filter((x) => x?.type === 'delivery' && x.state === 'delivered').length >= 2, 10_000, 'delivered events');

    // A domain the transport does not claim takes the federation path (which cannot reach it).
    const m3 = await say(net, alice, ['z@nowhere.test'], 'three');
    const d = await eventually('federation tried nowhere.test', async () => {
      const x = await deliveries(net, alice, m3);
      return x[0]?.attempts >= 1 ? x : undefined;
    }, 15_000);
    assert.equal(d[0].state, 'queued');
    assert.ok(transport.asked.has('nowhere.test'));
    assert.ok(!transport.delivered().includes('three'), 'the transport never carried an unclaimed destination');
    sock.close();
  });

  it('a retry keeps the message and those behind it queued, in order, until the transport takes them', async () => {
    transport.rounds.length = 0;
    transport.script.push(() => [{ kind: 'retry', reason: 'relay busy', retryAfterMs: 300 }]);
    const a = await say(net, alice, ['x@mail.test'], 'after-retry-1');
    const b = await say(net, alice, ['x@mail.test'], 'after-retry-2');
    await eventually('both delivered after the retry', async () => (await deliveries(net, alice, b))[0]?.state === 'delivered', 20_000);
    const da = (await deliveries(net, alice, a))[0];
    assert.equal(da.state, 'delivered');
    assert.ok(da.attempts >= 2, `attempts ${da.attempts}`);
    const carried = transport.delivered();
    // The first round was refused; afterwards both went, the first before the second.
    assert.equal(carried[0], 'after-retry-1');
    assert.ok(carried.lastIndexOf('after-retry-1') < carried.lastIndexOf('after-retry-2'));
    assert.equal(carried.filter((t) => t === 'after-retry-2').length, 1, 'the second went once');
  });

  it('a final failure is shown to the sender; a broken transport counts as a retry', async () => {
    transport.script.push(() => [{ kind: 'fail', reason: 'x@mail.test: mailbox unknown' }]);
    const f = await say(net, alice, ['x@mail.test'], 'will-fail');
    const d = await eventually('failed', async () => {
      const x = await deliveries(net, alice, f);
      return x[0]?.state === 'failed' ? x : undefined;
    }, 15_000);
    assert.match(d[0].lastError, /mailbox unknown/);

    transport.script.push(() => {
      throw new Error('smtp connection reset');
    });
    transport.script.push(() => []); // attempts nothing: also a retry
    const r = await say(net, alice, ['x@mail.test'], 'survives-breakage');
    const seen = await eventually('the breakage recorded', async () => {
      const x = await deliveries(net, alice, r);
      return x[0]?.lastError?.includes('scripted') ? x : undefined;
    }, 15_000);
    assert.equal(seen[0].state, 'queued');
    await eventually('delivered in the end', async () => (await deliveries(net, alice, r))[0]?.state === 'delivered', 30_000);
  });

  it('a message deleted before it left is cancelled, never handed to the transport', async () => {
    transport.script.push(() => [{ kind: 'retry', reason: 'down', retryAfterMs: 1500 }]);
    const before = transport.rounds.length;
    const m = await say(net, alice, ['x@mail.test'], 'regretted');
    await eventually('first attempt made', async () => (await deliveries(net, alice, m))[0]?.attempts >= 1, 15_000);
    const del = await api(net, 'a.test', 'DELETE', `/conversations/${m.conversationId}/messages/${m.seq}`, { token: alice.token });
    assert.equal(del.status, 201, JSON.stringify(del.body));
    await eventually('cancelled', async () => (await deliveries(net, alice, m))[0]?.state === 'cancelled', 20_000);
    const after = transport.rounds.slice(before + 1).flatMap((r) => r.rows.map((row) => JSON.parse(row.body)));
    assert.ok(!after.some((b) => b.message === 'regretted'), 'the content was not carried after the delete');
  });

  it('failAfterDelivery turns a delivered message into a failed one (a bounce) and tells the sender', async () => {
    const sock = await FedSocket.open(net, alice, { rich: true });
    const m = await say(net, alice, ['x@mail.test'], 'bounces later');
    await eventually('delivered', async () => (await deliveries(net, alice, m))[0]?.state === 'delivered', 15_000);
    const federation = fed(net.provider('a.test'));
    assert.equal(await federation.failAfterDelivery('mail.test', m.seq, 'x@mail.test: 550 no such user'), true);
    assert.equal(await federation.failAfterDelivery('mail.test', m.seq, 'again'), false, 'only a delivered row changes');
    const d = (await deliveries(net, alice, m))[0];
    assert.equal(d.state, 'failed');
    assert.match(d.lastError, /550 no such user/);
    await sock.until((f) => f.some((x) => x?.type === 'delivery' && x.seq === m.seq && x.state === 'failed'), 10_000, 'failed event');
    sock.close();
  });
});
