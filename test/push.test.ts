// Web Push end to end: a provider on loopback pushes to a push service on loopback
// (helpers/push-service.ts), which verifies every VAPID JWT and decrypts every body with
// node:crypto (not the library that encrypted it). The provider's clock runs ahead on demand
// (`advance`), so that the push delay, the validation window and retries need no sleeping.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { http, send, startProvider, user, type Started } from './helpers/harness.js';
import { eventually } from './helpers/fed.js';
import { TestPushService, decrypt, verifyVapid, type UaSubscription } from './helpers/push-service.js';
import { MAX_PLAINTEXT } from '../src/push/wire.js';

const SUBJECT = 'mailto:ops@example.org';
const DELAY_MS = 10 * 60_000;

describe('web push', { timeout: 180_000 }, () => {
  let p: Started;
  let svc: TestPushService;
  const clock = { offset: 0, now: () => Date.now() + clock.offset };
  let n = 0;
  const advance = (ms: number) => (clock.offset += ms);

  before(async () => {
    svc = await TestPushService.start();
    p = await startProvider(
      {
        INTERTALK_PUSH: 'on',
        INTERTALK_VAPID_SUBJECT: SUBJECT,
        INTERTALK_PUSH_INSECURE_ENDPOINTS: 'true',
        INTERTALK_PUSH_DELAY: '10m',
        INTERTALK_PUSH_SWEEP: '100ms',
        INTERTALK_PUSH_MAX_SUBSCRIPTIONS: '3',
        INTERTALK_ACCESS_TOKEN_TTL: '30d',
      },
      { clock },
    );
  });
  after(async () => {
    await p?.stop();
    await svc?.close();
  });

  const fresh = async () => user(p.url, `u${++n}x${Date.now().toString(36)}`);
  const body = (s: UaSubscription, extra: Record<string, unknown> = {}) => ({ client: 'test', device: 'laptop', msgtype: 'chat', resource: { endpoint: s.endpoint, keys: s.keys }, ...extra });
  const queued = async () => Number((await p.provider.ctx.storage.db.selectFrom('push_queue').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  /** Past the push delay; then until the queue is empty (everything sent or dropped). */
  const flush = async () => {
    await p.provider.push!.settled();
    advance(DELAY_MS + 1000);
    await eventually('push queue drained', async () => (await queued()) === 0, 30_000).catch(async (err) => {
      const rows = await p.provider.ctx.storage.db.selectFrom('push_queue').select(['kind', 'attempts', 'next_attempt_at', 'lease_until', 'last_error']).execute();
      throw new Error(`${(err as Error).message}: ${JSON.stringify(rows)} now ${clock.now()}`);
    });
  };

  async function subscribe(token: string, id = `sub-${Math.random().toString(36).slice(2, 12)}`): Promise<{ sub: UaSubscription; id: string; validation: string }> {
    const sub = svc.subscription();
    const r = await http(p.url, 'PUT', `/push/subscriptions/${id}`, { token, json: body(sub) });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const [v] = await eventually('validation push', async () => (svc.accepted(sub).length > 0 ? svc.accepted(sub) : null), 30_000);
    return { sub, id, validation: v!.payload.validation };
  }
  async function subscribed(token: string): Promise<{ sub: UaSubscription; id: string }> {
    const s = await subscribe(token);
    const r = await http(p.url, 'POST', `/push/subscriptions/${s.id}/validate`, { token, json: { validation: s.validation } });
    assert.equal(r.status, 204, JSON.stringify(r.body));
    return s;
  }

  test('the VAPID public key is served, as applicationServerKey and as the COI base64 PEM', async () => {
    const u = await fresh();
    assert.equal((await http(p.url, 'GET', '/push/vapid')).status, 401);
    const r = await http(p.url, 'GET', '/push/vapid', { token: u.token });
    assert.equal(r.status, 200);
    const raw = Buffer.from(r.body.publicKey, 'base64url');
    assert.equal(raw.length, 65);
    const pem = Buffer.from(r.body.pem, 'base64').toString();
    assert.match(pem, /^-----BEGIN PUBLIC KEY-----/);
    const jwk = createPublicKey(pem).export({ format: 'jwk' });
    assert.equal(jwk.x, raw.subarray(1, 33).toString('base64url'));
    assert.equal(jwk.y, raw.subarray(33).toString('base64url'));
  });

  test('subscribe: a validation push with WebPush-Validation, VAPID-signed and aes128gcm; confirm it; list shows created/validated', async () => {
    const u = await fresh();
    const { sub, id, validation } = await subscribe(u.token);
    const { r } = svc.accepted(sub)[0]!;
    assert.ok('webpush-validation' in r.headers, 'the WebPush-Validation header is present');
    assert.equal(r.headers['content-encoding'], 'aes128gcm');
    assert.equal(r.headers.urgency, 'high');
    const vapid = await verifyVapid(r.headers as never, svc.origin);
    assert.equal(vapid.sub, SUBJECT);
    assert.equal(vapid.k, (await http(p.url, 'GET', '/push/vapid', { token: u.token })).body.publicKey);
    assert.ok(validation.length > 0 && validation.length <= 1024);
    assert.deepEqual(Object.keys(JSON.parse(decrypt(sub, r.body as Buffer).toString())), ['validation']);

    let list = await http(p.url, 'GET', '/push/subscriptions', { token: u.token });
    assert.equal(list.body.subscriptions.length, 1);
    assert.equal(list.body.subscriptions[0].id, id);
    assert.equal(list.body.subscriptions[0].validated, false);
    assert.ok(!Number.isNaN(Date.parse(list.body.subscriptions[0].created)));
    assert.deepEqual(list.body.subscriptions[0].resource, { endpoint: sub.endpoint, keys: sub.keys });

    const wrong = await http(p.url, 'POST', `/push/subscriptions/${id}/validate`, { token: u.token, json: { validation: validation.slice(0, -2) + 'AA' } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error, 'invalid_validation');
    // Another user cannot validate (or see) it.
    const other = await fresh();
    assert.equal((await http(p.url, 'POST', `/push/subscriptions/${id}/validate`, { token: other.token, json: { validation } })).status, 404);
    const ok = await http(p.url, 'POST', `/push/subscriptions/${id}/validate`, { token: u.token, json: { validation } });
    assert.equal(ok.status, 204);
    list = await http(p.url, 'GET', '/push/subscriptions', { token: u.token });
    assert.equal(list.body.subscriptions[0].validated, true);

    assert.equal((await http(p.url, 'DELETE', `/push/subscriptions/${id}`, { token: u.token })).status, 204);
    assert.equal((await http(p.url, 'DELETE', `/push/subscriptions/${id}`, { token: u.token })).status, 404);
    assert.equal((await http(p.url, 'GET', '/push/subscriptions', { token: u.token })).body.subscriptions.length, 0);
  });

  test('a validation confirmed after 5 minutes is refused, and the unvalidated subscription is discarded', async () => {
    const u = await fresh();
    const { id, validation } = await subscribe(u.token);
    advance(5 * 60_000 + 1000);
    const late = await http(p.url, 'POST', `/push/subscriptions/${id}/validate`, { token: u.token, json: { validation } });
    assert.ok(late.status === 400 || late.status === 404, `${late.status}`);
    await eventually('discarded', async () => (await http(p.url, 'GET', '/push/subscriptions', { token: u.token })).body.subscriptions.length === 0, 30_000);
  });

  test('bad subscriptions are refused with a JSON error and write nothing; the per-user cap is a clear 409', async () => {
    const u = await fresh();
    const s = svc.subscription();
    const bad: Array<[string, unknown]> = [
      ['short', body(s)],
      ['ok-id-12345', { ...body(s), msgtype: 'sms' }],
      ['ok-id-12345', { ...body(s), client: 'x'.repeat(129) }],
      ['ok-id-12345', body(s, { resource: { endpoint: 'ftp://x/y', keys: s.keys } })],
      ['ok-id-12345', body(s, { resource: { endpoint: s.endpoint + 'x'.repeat(520), keys: s.keys } })],
      ['ok-id-12345', body(s, { resource: { endpoint: s.endpoint, keys: { p256dh: 'AAAA', auth: s.keys.auth } } })],
      ['ok-id-12345', body(s, { resource: { endpoint: s.endpoint, keys: { p256dh: s.keys.p256dh, auth: 'AAAA' } } })],
      ['bad id with spaces', body(s)],
    ];
    for (const [id, b] of bad) {
      const r = await http(p.url, 'PUT', `/push/subscriptions/${encodeURIComponent(id)}`, { token: u.token, json: b });
      assert.equal(r.status, 400, `${id} ${JSON.stringify(b).slice(0, 80)}`);
      assert.equal(typeof r.body.error, 'string');
      assert.equal(typeof r.body.message, 'string');
    }
    assert.equal((await http(p.url, 'GET', '/push/subscriptions', { token: u.token })).body.subscriptions.length, 0);

    const ids = ['cap-aaaaaaaa1', 'cap-aaaaaaaa2', 'cap-aaaaaaaa3'];
    for (const id of ids) assert.equal((await http(p.url, 'PUT', `/push/subscriptions/${id}`, { token: u.token, json: body(svc.subscription()) })).status, 201);
    const over = await http(p.url, 'PUT', '/push/subscriptions/cap-aaaaaaaa4', { token: u.token, json: body(svc.subscription()) });
    assert.equal(over.status, 409);
    assert.equal(over.body.error, 'too_many_subscriptions');
    // Replacing one of them is no new subscription.
    assert.equal((await http(p.url, 'PUT', `/push/subscriptions/${ids[0]}`, { token: u.token, json: body(svc.subscription()) })).status, 201);
    assert.equal((await http(p.url, 'GET', '/push/subscriptions', { token: u.token })).body.subscriptions.length, 3);
  });

  test('a user who keeps registering invalid subscriptions is throttled (429)', async () => {
    const u = await fresh();
    const { id } = await subscribe(u.token);
    for (let i = 0; i < 5; i++) {
      const r = await http(p.url, 'POST', `/push/subscriptions/${id}/validate`, { token: u.token, json: { validation: `${id}.1.nope${i}` } });
      assert.equal(r.status, 400);
    }
    const r = await http(p.url, 'PUT', '/push/subscriptions/after-strikes-1', { token: u.token, json: body(svc.subscription()) });
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  });

  test('a new message is pushed to the recipient: decrypted fields, TTL, Urgency, Topic per conversation; not to its sender', async () => {
    const alice = await fresh();
    const bob = await fresh();
    const a = await subscribed(alice.token);
    const b = await subscribed(bob.token);
    const m1 = await send(p.url, alice.token, [alice.address, bob.address], 'hello bob');
    const m2 = await send(p.url, alice.token, [alice.address, bob.address], 'second 🎉');
    assert.equal(m1.status, 201);
    await flush();
    const got = svc.accepted(b.sub).filter((x) => x.payload.type === 'message');
    assert.equal(got.length, 2);
    const [first, second] = got.sort((x, y) => x.payload.seq - y.payload.seq);
    assert.equal(first!.payload['from-email'], alice.address);
    assert.equal(first!.payload.conversation, m1.body.conversationId);
    assert.equal(first!.payload['msg-id'], m1.body.id);
    assert.equal(first!.payload.seq, m1.body.seq);
    assert.equal(first!.payload.date, m1.body.sentAt);
    assert.equal(first!.payload.content, 'hello bob');
    assert.equal(second!.payload.content, 'second 🎉');
    assert.equal(second!.payload['msg-id'], m2.body.id);
    assert.equal('group-id' in first!.payload, false);
    for (const { r } of got) {
      assert.equal(r.headers.urgency, 'high');
      assert.equal(r.headers.ttl, '86400');
      assert.match(String(r.headers.topic), /^[A-Za-z0-9_-]{1,32}$/);
      assert.equal('webpush-validation' in r.headers, false);
      await verifyVapid(r.headers, svc.origin);
    }
    assert.equal(first!.r.headers.topic, second!.r.headers.topic);
    // The sender's own subscription got its validation push only.
    assert.deepEqual(svc.accepted(a.sub).map((x) => Object.keys(x.payload)), [['validation']]);
    // Another conversation has another Topic.
    const carol = await fresh();
    await send(p.url, alice.token, [alice.address, bob.address, carol.address], 'group');
    await flush();
    const g = svc.accepted(b.sub).find((x) => x.payload.content === 'group')!;
    assert.notEqual(g.r.headers.topic, first!.r.headers.topic);
    assert.equal(g.payload['group-id'], g.payload.conversation);
  });

  test('no push for a muted conversation, with pushes turned off, or once the user read it (a live client)', async () => {
    const alice = await fresh();
    const bob = await fresh();
    const b = await subscribed(bob.token);
    const carol = await fresh();
    const muted = await send(p.url, alice.token, [alice.address, bob.address], 'first, before muting');
    const conv = muted.body.conversationId;
    const mute = await http(p.url, 'PUT', `/conversations/${conv}/push`, { token: bob.token, json: { muted: true } });
    assert.equal(mute.status, 200);
    assert.equal((await http(p.url, 'PUT', `/conversations/${conv}/push`, { token: carol.token, json: { muted: true } })).status, 404);
    await send(p.url, alice.token, [alice.address, bob.address], 'while muted');
    assert.deepEqual((await http(p.url, 'GET', '/push/settings', { token: bob.token })).body.mutedConversations, [conv]);
    // Read on a live client within the delay: no push.
    const other = await send(p.url, alice.token, [alice.address, bob.address, carol.address], 'read quickly');
    const read = await http(p.url, 'POST', `/conversations/${other.body.conversationId}/read`, { token: bob.token, json: {} });
    assert.equal(read.status, 200);
    // A barrier that is pushed: a third conversation.
    const dave = await fresh();
    await send(p.url, alice.token, [alice.address, bob.address, dave.address], 'barrier');
    await flush();
    assert.deepEqual(
      svc.accepted(b.sub).filter((x) => x.payload.type === 'message').map((x) => x.payload.content),
      ['barrier'],
    );
    // Unmuted: pushed again. Turned off: nothing.
    await http(p.url, 'PUT', `/conversations/${conv}/push`, { token: bob.token, json: { muted: false } });
    await send(p.url, alice.token, [alice.address, bob.address], 'after unmuting');
    await flush();
    assert.ok(svc.accepted(b.sub).some((x) => x.payload.content === 'after unmuting'));
    const off = await http(p.url, 'PUT', '/push/settings', { token: bob.token, json: { enabled: false } });
    assert.equal(off.body.enabled, false);
    await send(p.url, alice.token, [alice.address, bob.address], 'while off');
    await http(p.url, 'PUT', '/push/settings', { token: bob.token, json: { enabled: true } });
    await send(p.url, alice.token, [alice.address, bob.address, dave.address], 'barrier 2');
    await flush();
    const contents = svc.accepted(b.sub).map((x) => x.payload.content);
    assert.equal(contents.includes('while off'), false);
    assert.ok(contents.includes('barrier 2'));
    assert.equal((await http(p.url, 'PUT', '/push/settings', { token: bob.token, json: { enabled: 'no' } })).status, 400);
  });

  test('content-free pushes carry ids only; a long text is cut on a UTF-8 boundary with U+2026 within 3,993 bytes', async () => {
    const alice = await fresh();
    const bob = await fresh();
    const b = await subscribed(bob.token);
    const long = 'é'.repeat(1000) + '🎉'.repeat(1000) + '"\\\n'.repeat(500);
    const sent = await send(p.url, alice.token, [alice.address, bob.address], long);
    assert.equal(sent.status, 201, JSON.stringify(sent.body));
    await flush();
    const [cut] = svc.accepted(b.sub).filter((x) => x.payload.type === 'message');
    const plain = decrypt(b.sub, cut!.r.body);
    assert.ok(plain.length <= MAX_PLAINTEXT, `${plain.length}`);
    assert.ok(cut!.payload.content.endsWith('\u2026'));
    assert.ok(long.startsWith(cut!.payload.content.slice(0, -1)));
    assert.ok(cut!.payload.content.length > 1000);

    assert.equal((await http(p.url, 'PUT', '/push/settings', { token: bob.token, json: { contentFree: true } })).body.contentFree, true);
    const secret = await send(p.url, alice.token, [alice.address, bob.address], 'secret text');
    await flush();
    const last = svc.accepted(b.sub).find((x) => x.payload['msg-id'] === secret.body.id)!;
    assert.deepEqual(Object.keys(last.payload).sort(), ['conversation', 'msg-id', 'seq', 'type']);
    assert.equal(JSON.stringify(last.payload).includes('secret'), false);
  });

  test('429 and 503 are retried after Retry-After; 410 removes the subscription; 400 and 413 are dropped', async () => {
    const alice = await fresh();
    const bob = await fresh();
    const b = await subscribed(bob.token);
    svc.script(b.sub, [
      { status: 429, retryAfter: '1' },
      { status: 503, retryAfter: '1' },
    ]);
    const m = await send(p.url, alice.token, [alice.address, bob.address], 'eventually');
    await flush();
    const tries = svc.to(b.sub).filter((r) => r.status !== 201 || !('webpush-validation' in r.headers));
    assert.deepEqual(tries.map((r) => r.status), [429, 503, 201]);
    assert.ok(tries[1]!.at - tries[0]!.at >= 900, 'waited for Retry-After');
    assert.ok(tries[2]!.at - tries[1]!.at >= 900, 'waited for Retry-After');
    const ok = svc.accepted(b.sub).find((x) => x.payload['msg-id'] === m.body.id)!;
    assert.equal(ok.payload.content, 'eventually');

    svc.script(b.sub, [{ status: 400 }, { status: 413 }]);
    await send(p.url, alice.token, [alice.address, bob.address], 'refused 1');
    await send(p.url, alice.token, [alice.address, bob.address], 'refused 2');
    await flush();
    assert.deepEqual(svc.to(b.sub).slice(-2).map((r) => r.status), [400, 413]);
    assert.equal((await http(p.url, 'GET', '/push/subscriptions', { token: bob.token })).body.subscriptions.length, 1);

    svc.expire(b.sub);
    await send(p.url, alice.token, [alice.address, bob.address], 'to a gone endpoint');
    await flush();
    assert.equal(svc.to(b.sub).at(-1)!.status, 410);
    assert.equal((await http(p.url, 'GET', '/push/subscriptions', { token: bob.token })).body.subscriptions.length, 0);
  });
});
