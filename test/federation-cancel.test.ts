// A message deleted while its delivery to a peer is still queued never leaves with its content.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startNetwork, type Network } from './helpers/network.js';
import { api, deliveries, eventually, fedUser, history, say } from './helpers/fed.js';

describe('deleting a message before it was delivered', () => {
  let net: Network;
  before(async () => {
    net = await startNetwork({ domains: ['a.test', 'b.test'], env: { INTERTALK_FEDERATION_SWEEP: '250ms' } });
  });
  after(async () => net.stop());

  it('cancels the queued delivery; the peer gets the delete but never the content', async () => {
    const alice = await fedUser(net, 'a.test', 'alice');
    const bob = await fedUser(net, 'b.test', 'bob');
    await net.stopNode('b.test');
    const m = await say(net, alice, [alice.address, bob.address], 'a secret I regret');
    const del = await api(net, 'a.test', 'DELETE', `/conversations/${m.conversationId}/messages/${m.seq}`, { token: alice.token });
    assert.equal(del.status, 201, JSON.stringify(del.body));
    await net.startNode('b.test');
    // A message from b ends a's back-off for b at once.
    await say(net, bob, [bob.address, alice.address], 'back online');
    const d = await eventually('the original is cancelled', async () => {
      const x = await deliveries(net, alice, m);
      return x[0]?.state === 'cancelled' ? x : undefined;
    }, 20_000);
    assert.match(d[0].lastError, /deleted by the sender/);
    const onB = await eventually('the delete reaches b', async () => {
      const h = await history(net, bob, m.conversationId);
      return h.some((x: any) => x.rich?.type === 'delete') ? h : undefined;
    }, 20_000);
    assert.ok(!JSON.stringify(onB).includes('a secret I regret'), 'the content never reached b');
    const stored = await net.provider('b.test').ctx.storage.db.selectFrom('messages').select('body').execute();
    assert.ok(stored.every((r) => !r.body.includes('a secret I regret')));
  });
});
