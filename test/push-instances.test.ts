// Two instances of one provider (one database, one bus, as with INTERTALK_REDIS): both hear every
// message and both sweep the push queue, yet each push is queued once and sent once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { LocalBus } from '../src/bus/bus.js';
import { http, send, startProvider, tempDir, type Started, user } from './helpers/harness.js';
import { databaseUrl, dropDatabase } from './helpers/database.js';
import { eventually } from './helpers/fed.js';
import { TestPushService } from './helpers/push-service.js';

describe('web push with two instances', { timeout: 120_000 }, () => {
  let a: Started;
  let b: Started;
  let svc: TestPushService;
  let dir: string;
  let database: string;

  before(async () => {
    svc = await TestPushService.start();
    dir = tempDir();
    database = await databaseUrl(dir);
    const env = {
      INTERTALK_DATABASE: database,
      INTERTALK_PUSH: 'on',
      INTERTALK_VAPID_SUBJECT: 'https://example.org/contact',
      INTERTALK_PUSH_INSECURE_ENDPOINTS: 'true',
      INTERTALK_PUSH_DELAY: '0s',
      INTERTALK_PUSH_SWEEP: '50ms',
    };
    const bus = new LocalBus();
    a = await startProvider(env, { bus, dir });
    b = await startProvider(env, { bus, dir });
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
    await svc?.close();
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase(database);
  });

  test('one VAPID key; every message pushed exactly once', async () => {
    const alice = await user(a.url, 'alice');
    const bob = await user(a.url, 'bob');
    const keyA = (await http(a.url, 'GET', '/push/vapid', { token: bob.token })).body.publicKey;
    assert.equal((await http(b.url, 'GET', '/push/vapid', { token: bob.token })).body.publicKey, keyA);
    const sub = svc.subscription();
    assert.equal((await http(b.url, 'PUT', '/push/subscriptions/bob-laptop-1', { token: bob.token, json: { resource: { endpoint: sub.endpoint, keys: sub.keys } } })).status, 201);
    const [v] = await eventually('validation push', async () => (svc.accepted(sub).length ? svc.accepted(sub) : null), 30_000);
    assert.equal((await http(a.url, 'POST', '/push/subscriptions/bob-laptop-1/validate', { token: bob.token, json: { validation: v!.payload.validation } })).status, 204);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await send(i % 2 ? a.url : b.url, alice.token, [alice.address, bob.address], `m${i}`);
      assert.equal(r.status, 201);
      ids.push(r.body.id);
    }
    const got = await eventually('all pushed', async () => {
      const m = svc.accepted(sub).filter((x) => x.payload.type === 'message');
      return ids.every((id) => m.some((x) => x.payload['msg-id'] === id)) ? m : null;
    }, 60_000);
    await a.provider.push!.settled();
    await b.provider.push!.settled();
    await eventually('queue empty', async () => Number((await a.provider.ctx.storage.db.selectFrom('push_queue').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n) === 0, 30_000);
    const all = svc.accepted(sub).filter((x) => x.payload.type === 'message');
    assert.equal(all.length, ids.length, 'no push sent twice');
    assert.deepEqual(new Set(got.map((x) => x.payload['msg-id'])), new Set(ids));
  });
});
