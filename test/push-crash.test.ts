// Pending pushes survive kill -9: a real `intertalk serve` child queues pushes that the push
// service keeps deferring (503 + Retry-After); it is killed with SIGKILL, the push service starts
// accepting, and a new process on the same database sends every one of them (decrypted here
// independently), signed with the same VAPID key (it lives in the database).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { http, send, tempDir, user } from './helpers/harness.js';
import { databaseUrl, dropDatabase } from './helpers/database.js';
import { eventually } from './helpers/fed.js';
import { startServe, type Child } from './helpers/process.js';
import { TestPushService, decrypt, verifyVapid } from './helpers/push-service.js';

describe('web push: SIGKILL with pushes pending', { timeout: 180_000 }, () => {
  let dir: string;
  let env: Record<string, string>;
  let svc: TestPushService;
  const children: Child[] = [];

  before(async () => {
    dir = tempDir();
    svc = await TestPushService.start();
    env = {
      INTERTALK_DATABASE: await databaseUrl(dir),
      INTERTALK_PUSH: 'on',
      INTERTALK_VAPID_SUBJECT: 'mailto:ops@example.org',
      INTERTALK_PUSH_INSECURE_ENDPOINTS: 'true',
      INTERTALK_PUSH_DELAY: '0s',
      INTERTALK_PUSH_SWEEP: '200ms',
      INTERTALK_PUSH_TIMEOUT: '2s',
      INTERTALK_LOG_LEVEL: 'warn',
    };
  });
  after(async () => {
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await svc?.close();
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase(env.INTERTALK_DATABASE!);
  });

  test('every queued push is sent after a restart', async () => {
    const a = await startServe(env);
    children.push(a);
    const alice = await user(a.url, 'alice');
    const bob = await user(a.url, 'bob');
    const vapid = (await http(a.url, 'GET', '/push/vapid', { token: bob.token })).body.publicKey as string;
    const sub = svc.subscription();
    const put = await http(a.url, 'PUT', '/push/subscriptions/bob-phone-1', { token: bob.token, json: { client: 'c', device: 'd', msgtype: 'chat', resource: { endpoint: sub.endpoint, keys: sub.keys } } });
    assert.equal(put.status, 201);
    const [v] = await eventually('validation push', async () => (svc.accepted(sub).length ? svc.accepted(sub) : null), 30_000);
    assert.equal((await http(a.url, 'POST', '/push/subscriptions/bob-phone-1/validate', { token: bob.token, json: { validation: v!.payload.validation } })).status, 204);

    // The push service defers everything now.
    svc.script(sub, [], { status: 503, retryAfter: '1' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await send(a.url, alice.token, [alice.address, bob.address], `message ${i}`);
      assert.equal(r.status, 201);
      ids.push(r.body.id);
    }
    const deferredIds = () => new Set(svc.to(sub).filter((r) => r.status === 503).map((r) => JSON.parse(decrypt(sub, r.body).toString())['msg-id'] as string));
    await eventually('every push tried and deferred', async () => ids.every((id) => deferredIds().has(id)), 60_000);

    a.proc.kill('SIGKILL');
    assert.equal((await a.exited).signal, 'SIGKILL');
    svc.script(sub, []); // 201 from now on

    const b = await startServe(env);
    children.push(b);
    const sent = await eventually(
      'every push sent after the restart',
      async () => {
        const got = svc.accepted(sub).filter((x) => x.payload.type === 'message');
        return ids.every((id) => got.some((x) => x.payload['msg-id'] === id)) ? got : null;
      },
      60_000,
    );
    for (const { r, payload } of sent) {
      assert.ok(ids.includes(payload['msg-id']));
      assert.equal(payload.content, `message ${ids.indexOf(payload['msg-id'])}`);
      assert.equal((await verifyVapid(r.headers, svc.origin)).k, vapid, 'the same VAPID key after the restart');
    }
    const bob2 = await http(b.url, 'POST', '/token', { form: { grant_type: 'password', username: 'bob', password: 'correct horse battery' } });
    assert.equal((await http(b.url, 'GET', '/push/vapid', { token: bob2.body.access_token })).body.publicKey, vapid);
    b.proc.kill('SIGTERM');
    await b.exited;
  });
});
