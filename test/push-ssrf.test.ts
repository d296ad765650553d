// A push endpoint is a URL a user chooses, so its host name must never lead us to an internal
// address — not when the subscription is made (wire.ts refuses IP literals and localhost) and not
// at delivery, when the name may resolve somewhere else (DNS rebinding). Here the provider's
// resolver points a public-looking name at loopback, where a TCP server counts connections.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { http, startProvider, user, type Started } from './helpers/harness.js';
import { eventually } from './helpers/fed.js';
import { TestPushService } from './helpers/push-service.js';

describe('web push endpoints that resolve to private addresses', { timeout: 120_000 }, () => {
  let p: Started;
  let svc: TestPushService;
  let trap: Server;
  let connections = 0;
  const answers = new Map<string, string[]>();
  // Lookups wait for this gate, so the test can see the subscription stored before it is tried.
  let gate: Promise<void> = Promise.resolve();
  let release = () => {};

  before(async () => {
    svc = await TestPushService.start();
    trap = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
    p = await startProvider(
      { INTERTALK_PUSH: 'on', INTERTALK_VAPID_SUBJECT: 'mailto:ops@example.org', INTERTALK_PUSH_SWEEP: '100ms' },
      {
        lookup: (host, cb) => {
          void gate.then(() => {
            const a = answers.get(host);
            if (!a) return cb(Object.assign(new Error(`no such host ${host}`), { code: 'ENOTFOUND' }), []);
            cb(null, a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
          });
        },
      },
    );
  });
  after(async () => {
    await p?.stop();
    await svc?.close();
    await new Promise((resolve) => trap?.close(resolve));
  });

  for (const [name, addrs] of [
    ['loopback', ['127.0.0.1']],
    ['private and link-local', ['10.1.2.3', '169.254.169.254', '::1']],
  ] as const) {
    test(`a name resolving to ${name} addresses: no connection is made and the subscription is removed`, async () => {
      const host = `push-${name.replace(/\W+/g, '-')}.example.test`;
      answers.set(host, [...addrs]);
      gate = new Promise((resolve) => (release = resolve));
      const u = await user(p.url, `ssrf${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`);
      const port = (trap.address() as AddressInfo).port;
      const ua = svc.subscription();
      const id = `ssrf-${Math.random().toString(36).slice(2, 14)}`;
      const r = await http(p.url, 'PUT', `/push/subscriptions/${id}`, {
        token: u.token,
        json: { client: 'test', device: 'laptop', msgtype: 'chat', resource: { endpoint: `https://${host}:${port}/push/x`, keys: ua.keys } },
      });
      // The name itself looks public, so the subscription is accepted; the validation push then
      // finds out where it points.
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const before = await http(p.url, 'GET', '/push/subscriptions', { token: u.token });
      assert.ok((before.body.subscriptions as Array<{ id: string }>).some((s) => s.id === id), 'stored until it is tried');
      release();
      await eventually(
        'subscription removed',
        async () => {
          const list = await http(p.url, 'GET', '/push/subscriptions', { token: u.token });
          assert.equal(list.status, 200);
          return (list.body.subscriptions as Array<{ id: string }>).every((s) => s.id !== id);
        },
        30_000,
      );
      const queued = await p.provider.ctx.storage.db.selectFrom('push_queue').select('id').where('subscription_id', '=', id).execute();
      assert.equal(queued.length, 0, 'no push is left queued for it');
      assert.equal(connections, 0, 'nothing connected to the internal address');
    });
  }
});
