// Pure Web Push rules (src/push/wire.ts) and the push settings (src/config/config.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { MAX_PLAINTEXT, SUBSCRIPTION_ID, checkEndpoint, checkValidation, clip, messagePayload, parseSubscription, retryAfterMs, topicOf, validationValue } from '../src/push/wire.js';
import { ConfigError, loadConfig } from '../src/config/config.js';

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const ELLIPSIS = '\u2026';

test('clip: within the byte budget, a code-point prefix of the input, U+2026 when cut', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), fc.integer({ min: 3, max: 300 }), (s, max) => {
      const c = clip(s, max);
      assert.ok(bytes(c) <= max);
      if (bytes(s) <= max) assert.equal(c, s);
      else {
        assert.ok(c.endsWith(ELLIPSIS));
        assert.ok(s.startsWith(c.slice(0, -1)));
        assert.equal(Buffer.from(c, 'utf8').toString('utf8'), c, 'valid UTF-8');
      }
    }),
  );
});

test('messagePayload: JSON within 3,993 bytes, the text or a prefix of it with U+2026; content-free holds ids only', () => {
  const info = fc.record({
    seq: fc.integer({ min: 1, max: 2 ** 40 }),
    conversationId: fc.constant('c' + 'A'.repeat(43)),
    id: fc.string({ minLength: 1, maxLength: 150 }),
    from: fc.constant('alice@example.org'),
    sentAt: fc.constant('2026-12-06T04:00:00.000Z'),
    text: fc.oneof(fc.string({ unit: 'binary', maxLength: 6000 }), fc.string({ unit: 'grapheme', maxLength: 3000 }), fc.string({ unit: fc.constantFrom('"', '\\', '\n', '\u0001', 'é', '🎉'), maxLength: 4000 })),
    group: fc.boolean(),
  });
  fc.assert(
    fc.property(info, fc.boolean(), (m, contentFree) => {
      const out = messagePayload(m, contentFree);
      assert.ok(bytes(out) <= MAX_PLAINTEXT, `${bytes(out)}`);
      const o = JSON.parse(out);
      assert.equal(o.seq, m.seq);
      assert.equal(o.conversation, m.conversationId);
      if (contentFree) {
        assert.deepEqual(Object.keys(o).sort(), ['conversation', 'msg-id', 'seq', 'type']);
        return;
      }
      assert.equal(o['from-email'], m.from);
      assert.equal('group-id' in o, m.group);
      if (o.content === m.text) return;
      assert.ok(o.content.endsWith(ELLIPSIS));
      assert.ok(m.text.startsWith(o.content.slice(0, -1)));
      // The longest prefix that fits: one more code point would not.
      const cps = Array.from(m.text);
      const n = Array.from(o.content as string).length - 1;
      if (n < cps.length) assert.ok(bytes(JSON.stringify({ ...o, content: cps.slice(0, n + 1).join('') + ELLIPSIS })) > MAX_PLAINTEXT);
    }),
    { numRuns: 150 },
  );
});

test('topicOf: at most 32 URL-safe base64 characters, one per conversation', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => {
      assert.match(topicOf(a), /^[A-Za-z0-9_-]{1,32}$/);
      assert.equal(topicOf(a) === topicOf(b), a === b);
    }),
  );
});

test('validation values: accepted for their subscription in time; refused when altered, late, or for another', () => {
  const secret = randomBytes(32).toString('base64url');
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1e6 }), fc.stringMatching(SUBSCRIPTION_ID), fc.integer({ min: 0, max: 2 ** 42 }), fc.integer({ min: 1, max: 600_000 }), fc.string({ maxLength: 40 }), (user, id, created, window, junk) => {
      const v = validationValue(secret, user, id, created, created + window);
      assert.ok(v.length <= 1024);
      assert.equal(checkValidation(secret, user, id, created, v, created), true);
      assert.equal(checkValidation(secret, user, id, created, v, created + window + 1), false);
      assert.equal(checkValidation(secret, user + 1, id, created, v, created), false);
      assert.equal(checkValidation(secret, user, id, created + 1, v, created), false);
      assert.equal(checkValidation(secret, user, id, created, v + junk, created), junk === '');
      assert.equal(checkValidation(secret, user, id, created, junk, created), false);
    }),
  );
});

test('parseSubscription: COI limits, keys decoded (base64 or base64url), unknown keys ignored', () => {
  const ua = createECDH('prime256v1');
  ua.generateKeys();
  const keys = { p256dh: ua.getPublicKey().toString('base64'), auth: randomBytes(16).toString('base64') };
  const ok = parseSubscription({ client: 'c', device: 'd', msgtype: 'all', extra: 1, resource: { endpoint: 'https://push.example.net/p/abc', keys } }, false);
  assert.ok(ok.ok);
  assert.equal(ok.value.p256dh, ua.getPublicKey().toString('base64url'));
  assert.equal(Object.keys(ok.value).includes('extra'), false);
  fc.assert(
    fc.property(fc.anything(), (junk) => {
      const r = parseSubscription(junk, false);
      assert.equal(r.ok, false);
    }),
  );
  for (const endpoint of ['http://push.example.net/x', 'https://127.0.0.1/x', 'https://[::1]/x', 'https://10.1.2.3/x', 'https://localhost/x', 'https://u:p@push.example.net/x', 'https://push.example.net/' + 'a'.repeat(512)]) {
    assert.equal(checkEndpoint(endpoint, false).ok, false, endpoint);
  }
  assert.equal(checkEndpoint('http://127.0.0.1:9999/push/x', true).ok, true);
  assert.equal(parseSubscription({ client: 'x'.repeat(129), resource: { endpoint: 'https://push.example.net/p', keys } }, false).ok, false);
  assert.equal(parseSubscription({ msgtype: 'Chat', resource: { endpoint: 'https://push.example.net/p', keys } }, false).ok, false);
});

test('retryAfterMs: seconds or an HTTP date, bounded; null when absent or unreadable', () => {
  const now = Date.parse('2026-12-06T04:00:00Z');
  assert.equal(retryAfterMs('5', now), 5000);
  assert.equal(retryAfterMs(undefined, now), null);
  assert.equal(retryAfterMs('soon', now), null);
  assert.equal(retryAfterMs('Sun, 06 Dec 2026 04:00:30 GMT', now), 30_000);
  assert.equal(retryAfterMs('999999999', now), 3_600_000);
  assert.equal(retryAfterMs('Sun, 06 Dec 2026 03:00:00 GMT', now), 0);
});

test('config: push is on with a subject; a localhost subject (or mailto:…@localhost by default) refuses to start', () => {
  assert.equal(loadConfig({}).push.enabled, false);
  const on = loadConfig({ INTERTALK_VAPID_SUBJECT: 'mailto:ops@example.org' });
  assert.equal(on.push.enabled, true);
  assert.equal(on.push.subject, 'mailto:ops@example.org');
  assert.equal(loadConfig({ INTERTALK_DOMAIN: 'example.org', INTERTALK_PUSH: 'on' }).push.subject, 'mailto:postmaster@example.org');
  for (const subject of ['mailto:me@localhost', 'https://localhost/contact', 'https://127.0.0.1/', 'https://app.localhost/', 'http://example.org/', 'ops@example.org', 'https://[::1]/']) {
    assert.throws(() => loadConfig({ INTERTALK_VAPID_SUBJECT: subject }), ConfigError, subject);
  }
  assert.throws(() => loadConfig({ INTERTALK_PUSH: 'on' }), /localhost/);
  assert.equal(loadConfig({ INTERTALK_PUSH: 'off', INTERTALK_VAPID_SUBJECT: 'mailto:me@localhost' }).push.enabled, false);
  assert.throws(() => loadConfig({ INTERTALK_PUSH: 'maybe' }), ConfigError);
});
