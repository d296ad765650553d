// Hostile and malformed input against a real provider: every bad request gets the exact 4xx with a
// JSON {"error", "message"} body, never a 5xx, and nothing is written to the database.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { sql } from 'kysely';
import { startProvider, http, user, login, type Started, type Res } from './helpers/harness.js';
import { encodeParticipantsSegment } from '../src/protocol/conversation.js';

const ENV = { INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '1000000' };
const TABLES = ['users', 'sessions', 'access_tokens', 'conversations', 'conversation_members', 'messages', 'read_markers', 'outbox'] as const;
type Snapshot = Record<(typeof TABLES)[number], number>;

async function snapshot(s: Started): Promise<Snapshot> {
  const out = {} as Snapshot;
  for (const t of TABLES) {
    const r = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(t)}`.execute(s.provider.ctx.storage.db);
    out[t] = Number(r.rows[0]!.n);
  }
  return out;
}

/** Runs `fn` and asserts that no row was added or removed anywhere. */
async function unchanged<T>(s: Started, fn: () => Promise<T>): Promise<T> {
  const before = await snapshot(s);
  const r = await fn();
  assert.deepEqual(await snapshot(s), before, 'the database changed');
  return r;
}

function assertError(r: Res, status: number, error: string | readonly string[], what = ''): void {
  const errors = typeof error === 'string' ? [error] : error;
  assert.equal(r.status, status, `${what}: expected ${status} ${errors.join('|')}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body, 'object', `${what}: body is not JSON: ${String(r.body)}`);
  assert.ok(errors.includes(r.body.error), `${what}: error ${JSON.stringify(r.body.error)} not in ${errors.join('|')} (${r.body.message})`);
  assert.equal(typeof r.body.message, 'string', `${what}: no message`);
  assert.ok(r.body.message.length > 0);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
}

// ---------------------------------------------------------------------------------------------
// Generators

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';
const chars = (s: string) => fc.constantFrom(...s.split(''));
const local = fc.string({ unit: chars(LOWER + '0123456789._-'), minLength: 1, maxLength: 10 }).filter((l) => /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(l));
const label = fc.oneof(chars(LOWER), fc.tuple(chars(LOWER), fc.string({ unit: chars(LOWER + '0123456789-'), maxLength: 8 }), chars(LOWER)).map(([a, b, c]) => a + b + c));
const remoteDomain = fc.tuple(label, label).map(([a, b]) => `${a}.${b}`);

const invalidAddress = fc.oneof(
  fc.string({ maxLength: 20 }).filter((s) => !s.includes('@')),
  local.map((l) => `${l}@`),
  local.map((l) => `@${l}`),
  local.map((l) => `${l}..x@localhost`),
  local.map((l) => `.${l}@localhost`),
  local.map((l) => `${l} x@localhost`),
  local.map((l) => `"${l}"@localhost`),
  local.map((l) => `${l}@-localhost`),
  local.map((l) => `${l}@local_host`),
  local.map((l) => `${l}@10.0.0.1`),
  local.map((l) => `${l}é@localhost`),
  fc.constant(`${'a'.repeat(65)}@localhost`),
);
const nonStringNonNull = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }));
const nonString = fc.oneof(nonStringNonNull, fc.constant(null));
const invalidMediaType = fc.constantFrom('', 'text', 'text/', '/html', 'markdown', 'text/html/x', 'text html', '!text/html', 'tëxt/html');
const nonBlank = fc.string({ minLength: 1, maxLength: 100 }).filter((s) => s.trim() !== '');

const ALICE = 'alice@localhost';
const BOB = 'bob@localhost';

/** A valid message from alice (to alice, bob and perhaps more local users), before mutation. */
const validBody = fc
  .record({
    more: fc.subarray(['carol@localhost', 'dave@localhost', 'erin@localhost']),
    from: fc.boolean(),
    message: nonBlank,
    id: fc.option(fc.string({ unit: chars(ALNUM + '-_.'), minLength: 1, maxLength: 40 }), { nil: undefined }),
    sentAt: fc.option(fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2020, 0, 1) }).map((t) => new Date(t).toISOString()), { nil: undefined }),
    formatted: fc.option(fc.tuple(fc.string({ maxLength: 30 }), fc.constantFrom('text/markdown', 'text/html')), { nil: undefined }),
  })
  .map((g) => {
    const m: Record<string, unknown> = { to: [ALICE, BOB, ...g.more], message: g.message };
    if (g.from) m.from = ALICE;
    if (g.id !== undefined) m.id = g.id;
    if (g.sentAt !== undefined) m.sentAt = g.sentAt;
    if (g.formatted) {
      m.messageFormatted = g.formatted[0];
      m.format = g.formatted[1];
    }
    return m;
  });

type Mutation = { name: string; status: number; error: string; apply: (m: Record<string, unknown>) => void };
const insertInto = (m: Record<string, unknown>, v: unknown, i: number) => {
  const to = [...(m.to as unknown[])];
  to.splice(i % (to.length + 1), 0, v);
  m.to = to;
};
const bad = (name: string, status: number, error: string) => (apply: (m: Record<string, unknown>) => void): Mutation => ({ name, status, error, apply });

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constant(bad('to missing', 400, 'invalid_message')((m) => void delete m.to)),
  fc.oneof(fc.string(), nonString.filter((v) => !Array.isArray(v))).map((v) => bad('to not an array', 400, 'invalid_message')((m) => void (m.to = v))),
  fc.constant(bad('to empty', 400, 'invalid_message')((m) => void (m.to = []))),
  fc.tuple(invalidAddress, fc.nat()).map(([v, i]) => bad(`to has invalid address ${JSON.stringify(v)}`, 400, 'invalid_message')((m) => insertInto(m, v, i))),
  fc.tuple(nonString, fc.nat()).map(([v, i]) => bad('to has a non-string', 400, 'invalid_message')((m) => insertInto(m, v, i))),
  fc.tuple(local, remoteDomain, fc.nat()).map(([l, d, i]) => bad('to names a remote user (no federation)', 403, 'federation_disabled')((m) => insertInto(m, `${l}@${d}`, i))),
  nonString.map((v) => bad('from not a string', 400, 'invalid_message')((m) => void (m.from = v))),
  invalidAddress.map((v) => bad(`from invalid ${JSON.stringify(v)}`, 400, 'invalid_message')((m) => void (m.from = v))),
  local.map((l) => bad('from not in to', 400, 'invalid_message')((m) => void (m.from = `zz-${l}@localhost`))),
  fc.tuple(local, fc.nat()).map(([l, i]) => bad('to names a local user without an account', 400, 'unknown_recipient')((m) => insertInto(m, `zz-${l}@localhost`, i))),
  fc.constantFrom(BOB, 'BOB@LOCALHOST').map((v) => bad('from another participant', 403, 'from_mismatch')((m) => void (m.from = v))),
  nonString.map((v) => bad('sentAt not a string', 400, 'invalid_message')((m) => void (m.sentAt = v))),
  fc.string({ maxLength: 30 }).filter((s) => !/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}/.test(s)).map((v) => bad('sentAt not a date-time', 400, 'invalid_message')((m) => void (m.sentAt = v))),
  fc.constantFrom('2023-02-30T10:00:00Z', '2023-04-31T10:00:00Z', '2023-13-01T10:00:00Z', '2023-01-01T24:00:00Z', '2016-09-05T15:45:39', '2016-09-05').map((v) => bad(`sentAt ${v}`, 400, 'invalid_message')((m) => void (m.sentAt = v))),
  fc.integer({ min: 3_600_000, max: 50 * 365 * 86_400_000 }).map((dt) => bad('sentAt in the future', 400, 'invalid_message')((m) => void (m.sentAt = new Date(Date.now() + dt).toISOString()))),
  fc.constant(bad('message missing', 400, 'invalid_message')((m) => void delete m.message)),
  nonString.map((v) => bad('message not a string', 400, 'invalid_message')((m) => void (m.message = v))),
  nonStringNonNull.map((v) => bad('id not a string', 400, 'invalid_message')((m) => void (m.id = v))),
  fc.constantFrom('', 'has space', 'x'.repeat(129), 'tab\t', 'é', '\u0000').map((v) => bad(`id ${JSON.stringify(v).slice(0, 20)}`, 400, 'invalid_message')((m) => void (m.id = v))),
  nonStringNonNull.map((v) => bad('messageFormatted not a string', 400, 'invalid_message')((m) => {
    m.messageFormatted = v;
    m.format = 'text/markdown';
  })),
  fc.string().map((v) => bad('messageFormatted without format', 400, 'invalid_message')((m) => {
    m.messageFormatted = v;
    delete m.format;
  })),
  fc.tuple(fc.string(), invalidMediaType).map(([v, f]) => bad(`messageFormatted with format ${JSON.stringify(f)}`, 400, 'invalid_message')((m) => {
    m.messageFormatted = v;
    m.format = f;
  })),
  fc.constantFrom('text/markdown', 'text/html').map((f) => bad('format without messageFormatted', 400, 'invalid_message')((m) => {
    delete m.messageFormatted;
    m.format = f;
  })),
);

const INVALID_UTF8 = [[0xff], [0xfe], [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0x81], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xf0, 0x9f, 0x98]];

// ---------------------------------------------------------------------------------------------

describe('POST /messages rejects bad input cleanly and writes nothing', () => {
  let s: Started;
  let alice: { token: string; address: string };

  before(async () => {
    s = await startProvider(ENV);
    alice = await user(s.url, 'alice');
    for (const name of ['bob', 'carol', 'dave', 'erin']) await user(s.url, name);
  });
  after(async () => s.stop());

  const post = (body: unknown, token = alice.token) => http(s.url, 'POST', '/messages', { token, json: body });

  test('control: a valid message is stored (the row counts do see writes)', async () => {
    const before = await snapshot(s);
    const r = await post({ to: [ALICE, BOB], message: 'control' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const after = await snapshot(s);
    assert.equal(after.messages, before.messages + 1);
  });

  test('unknown extra fields are not an error', async () => {
    const r = await post({ to: [ALICE, BOB], message: 'extras', room: 'ignored', priority: 5, nested: { a: [1, 2] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.room, undefined);
  });

  test('each class of invalid field gets its exact 4xx and nothing is written (property)', async () => {
    await fc.assert(
      fc.asyncProperty(validBody, mutation, async (body, mut) => {
        const m = structuredClone(body);
        mut.apply(m);
        const r = await unchanged(s, () => post(m));
        assertError(r, mut.status, mut.error, mut.name);
      }),
      { numRuns: 300 },
    );
  });

  test('JSON values that are not objects get 400 invalid_message (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue().filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)), async (v) => {
        const r = await unchanged(s, () => post(v));
        assertError(r, 400, 'invalid_message', JSON.stringify(v));
      }),
      { numRuns: 150 },
    );
    const empty = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: '', headers: { 'content-type': 'application/json' } }));
    assertError(empty, 400, 'invalid_message', 'empty body');
  });

  test('arbitrary JSON objects without a usable "to" get 400 and write nothing (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }).filter((o) => !Array.isArray(o.to) && o.room === undefined), async (o) => {
        const r = await unchanged(s, () => post(o));
        assertError(r, 400, 'invalid_message', JSON.stringify(o).slice(0, 200));
      }),
      { numRuns: 150 },
    );
  });

  test('broken JSON gets 400 invalid_json (property)', async () => {
    await fc.assert(
      fc.asyncProperty(validBody, fc.nat(), async (body, cut) => {
        const text = JSON.stringify(body);
        const broken = text.slice(0, 1 + (cut % (text.length - 1)));
        const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: broken, headers: { 'content-type': 'application/json' } }));
        assertError(r, 400, 'invalid_json', broken);
      }),
      { numRuns: 150 },
    );
  });

  test('random bytes as JSON get 400, never 5xx (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), async (bytes) => {
        const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: Buffer.from(bytes), headers: { 'content-type': 'application/json' } }));
        assertError(r, 400, ['invalid_json', 'invalid_encoding', 'invalid_message'], Buffer.from(bytes).toString('hex'));
      }),
      { numRuns: 150 },
    );
  });

  test('invalid UTF-8 gets 400 invalid_encoding (property)', async () => {
    await fc.assert(
      fc.asyncProperty(validBody, fc.constantFrom(...INVALID_UTF8), fc.nat(), async (body, seq, pos) => {
        const m = { ...body, message: 'before|after' };
        const json = Buffer.from(JSON.stringify(m), 'utf8');
        const marker = json.indexOf('|');
        const at = marker + (pos % 2); // just before or after the marker, inside the string
        const bytes = Buffer.concat([json.subarray(0, at), Buffer.from(seq), json.subarray(at)]);
        const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: bytes, headers: { 'content-type': 'application/json' } }));
        assertError(r, 400, 'invalid_encoding', Buffer.from(seq).toString('hex'));
      }),
      { numRuns: 100 },
    );
  });

  test('a wrong or missing content type gets 415 unsupported_media_type (property)', async () => {
    const type = fc.oneof(
      fc.constantFrom('text/plain', 'text/plain;charset=utf-8', 'text/json', 'application/xml', 'application/octet-stream', 'application/javascript', 'application/jsonx', 'application/json-seq', 'multipart/form-data; boundary=xyz', 'image/png'),
      fc.tuple(fc.constantFrom('text', 'image', 'audio', 'video', 'font', 'model', 'multipart', 'message', 'example'), fc.string({ unit: chars(LOWER + '0123456789.+-'), minLength: 1, maxLength: 15 })).map(([t, st]) => `${t}/${st}`),
    );
    await fc.assert(
      fc.asyncProperty(validBody, type, async (body, ct) => {
        const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: JSON.stringify(body), headers: { 'content-type': ct } }));
        assertError(r, 415, 'unsupported_media_type', ct);
      }),
      { numRuns: 100 },
    );
    const none = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: Buffer.from(JSON.stringify({ to: [ALICE], message: 'x' })) }));
    assertError(none, 415, 'unsupported_media_type', 'no content type');
  });

  test('a form-encoded message gets 400 invalid_message', async () => {
    const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, form: { to: ALICE, message: 'hi' } }));
    assertError(r, 400, 'invalid_message', 'form');
  });

  test('application/*+json is parsed as JSON, with or without parameters', async () => {
    for (const ct of ['application/json; charset=utf-8', 'application/vnd.intertalk+json', 'application/vnd.intertalk+json; charset=utf-8']) {
      const r = await http(s.url, 'POST', '/messages', { token: alice.token, body: JSON.stringify({ to: [ALICE, BOB], message: `via ${ct}` }), headers: { 'content-type': ct } });
      assert.equal(r.status, 201, `${ct}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  });

  test('1001 recipients get 400 invalid_message; 1000 are accepted', async () => {
    // Local recipients must have accounts: 999 fixture rows straight into the users table
    // (signing up through the API would spend an argon2 hash on each).
    const db = s.provider.ctx.storage.db;
    const rows = Array.from({ length: 1000 }, (_, i) => ({ username: `r${i}`, password_hash: 'x', created_at: Date.now() }));
    for (let i = 0; i < rows.length; i += 200) await db.insertInto('users').values(rows.slice(i, i + 200)).execute();
    const to = [ALICE, ...Array.from({ length: 1000 }, (_, i) => `r${i}@localhost`)];
    assert.equal(to.length, 1001);
    const r = await unchanged(s, () => post({ to, message: 'too many' }));
    assertError(r, 400, 'invalid_message', '1001');
    assert.match(r.body.message, /1000/);
    const ok = await post({ to: to.slice(0, 1000), message: 'just enough' });
    assert.equal(ok.status, 201, JSON.stringify(ok.body).slice(0, 300));
    assert.equal(ok.body.to.length, 1000);
  });

  test('from may be omitted, any case of the caller is fine; another participant is 403 from_mismatch', async () => {
    const a = await post({ to: [ALICE, BOB], message: 'implicit from' });
    assert.equal(a.status, 201);
    assert.equal(a.body.from, ALICE);
    const b = await post({ to: ['ALICE@LOCALHOST', BOB], from: 'Alice@Localhost', message: 'cased from' });
    assert.equal(b.status, 201);
    assert.equal(b.body.from, ALICE);
    const c = await unchanged(s, () => post({ to: [ALICE, BOB], from: BOB, message: 'spoof' }));
    assertError(c, 403, 'from_mismatch', 'spoof');
    const d = await unchanged(s, () => post({ to: [BOB], message: 'caller not in to' }));
    assertError(d, 400, 'invalid_message', 'from not in to');
  });

  test('sentAt: kept when valid, set by the server when absent, rejected in the future', async () => {
    const kept = await post({ to: [ALICE, BOB], message: 'old', sentAt: '2016-09-05T15:45:39Z' });
    assert.equal(kept.status, 201);
    assert.equal(kept.body.sentAt, '2016-09-05T15:45:39Z');
    const t0 = Date.now();
    const filled = await post({ to: [ALICE, BOB], message: 'now' });
    assert.equal(filled.status, 201);
    assert.ok(Math.abs(Date.parse(filled.body.sentAt) - t0) < 60_000, filled.body.sentAt);
    const future = await unchanged(s, () => post({ to: [ALICE, BOB], message: 'later', sentAt: new Date(Date.now() + 3_600_000).toISOString() }));
    assertError(future, 400, 'invalid_message', 'future');
  });

  test('a repeated id is stored once and answered with the original; a different message is 409 id_conflict', async () => {
    const first = await post({ to: [ALICE, BOB], message: 'once', id: 'dup-1' });
    assert.equal(first.status, 201);
    assert.equal(first.headers.get('intertalk-replayed'), null);
    const again = await unchanged(s, () => post({ to: [BOB, 'Alice@localhost'], message: 'once', id: 'dup-1' }));
    assert.equal(again.status, 201);
    assert.equal(again.headers.get('intertalk-replayed'), 'true');
    assert.deepEqual(again.body, first.body);
    const conflict = await unchanged(s, () => post({ to: [ALICE, BOB], message: 'different', id: 'dup-1' }));
    assertError(conflict, 409, 'id_conflict', 'different text');
  });

  test('id_conflict with a different participant set writes nothing (no phantom conversation)', async () => {
    const carol = await login(s.url, 'carol');
    const first = await post({ to: [ALICE, BOB], message: 'original', id: 'dup-2' });
    assert.equal(first.status, 201);
    const conflict = await unchanged(s, () => post({ to: [ALICE, 'carol@localhost'], message: 'original', id: 'dup-2' }));
    assertError(conflict, 409, 'id_conflict', 'different participants');
    // Carol must not see a conversation she was never sent anything in.
    const list = await http(s.url, 'GET', '/conversations', { token: carol.access_token });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.conversations, []);
    // …and that conversation can still be started afterwards, by anyone in it.
    for (const [token, from] of [[carol.access_token, 'carol'], [alice.token, 'alice']] as const) {
      const fresh = await http(s.url, 'POST', '/messages', { token, json: { to: [ALICE, 'carol@localhost'], message: `hello from ${from}` } });
      assert.equal(fresh.status, 201, JSON.stringify(fresh.body));
    }
  });

  test('deeply nested JSON is answered, never 5xx', async () => {
    const depth = 100_000;
    const nested = '['.repeat(depth) + ']'.repeat(depth);
    const asTo = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: `{"to":${nested},"message":"x"}`, headers: { 'content-type': 'application/json' } }));
    assertError(asTo, 400, 'invalid_message', 'nested to');
    const asMessage = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, body: `{"to":["${ALICE}"],"message":${nested}}`, headers: { 'content-type': 'application/json' } }));
    assertError(asMessage, 400, 'invalid_message', 'nested message');
  });

  test('a header block over 16 KiB gets 431, and the server stays up', async () => {
    const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [ALICE], message: 'big header' }, headers: { 'x-filler': 'a'.repeat(20 * 1024) } }));
    assert.equal(r.status, 431);
    const huge = await http(s.url, 'GET', '/messages/' + 'A'.repeat(20 * 1024), { token: alice.token });
    assert.ok(huge.status >= 400 && huge.status < 500, String(huge.status));
    const health = await http(s.url, 'GET', '/healthz');
    assert.equal(health.status, 200);
    const still = await post({ to: [ALICE, BOB], message: 'after the big header' });
    assert.equal(still.status, 201);
  });
});

// ---------------------------------------------------------------------------------------------

describe('bodies over INTERTALK_MAX_BODY get 413 payload_too_large', () => {
  let s: Started;
  let alice: { token: string };
  const MAX = 4096;

  before(async () => {
    s = await startProvider({ ...ENV, INTERTALK_MAX_BODY: String(MAX) });
    alice = await user(s.url, 'alice');
  });
  after(async () => s.stop());

  /** A valid message whose JSON is exactly `size` bytes. */
  function messageOfSize(size: number): string {
    const base = JSON.stringify({ to: [ALICE], message: '' });
    assert.ok(size >= base.length);
    return JSON.stringify({ to: [ALICE], message: 'x'.repeat(size - base.length) });
  }

  test('a body of exactly the limit is accepted', async () => {
    const body = messageOfSize(MAX);
    assert.equal(Buffer.byteLength(body), MAX);
    const r = await http(s.url, 'POST', '/messages', { token: alice.token, body, headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 201, JSON.stringify(r.body).slice(0, 200));
  });

  test('any larger body is refused with 413 and writes nothing, on every endpoint (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: MAX + 1, max: 64 * 1024 }), fc.constantFrom('/messages', '/token', '/users'), fc.boolean(), async (size, path, utf8Heavy) => {
        let body = messageOfSize(size);
        if (utf8Heavy) body = body.replace(/x{3}/g, '€').slice(0, size); // multi-byte characters: bytes, not characters, count
        assert.ok(Buffer.byteLength(body) > MAX);
        const r = await unchanged(s, () => http(s.url, 'POST', path, { token: alice.token, body, headers: { 'content-type': 'application/json' } }));
        assertError(r, 413, 'payload_too_large', `${path} ${size}`);
      }),
      { numRuns: 100 },
    );
  });

  test('the provider still answers after refusing large bodies', async () => {
    const r = await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [ALICE], message: 'small' } });
    assert.equal(r.status, 201);
  });
});

// ---------------------------------------------------------------------------------------------

describe('unauthorised requests get 401 (or 403 for peer tokens) with JSON, and write nothing', () => {
  let s: Started;
  let alice: { token: string; refresh: string };

  before(async () => {
    s = await startProvider(ENV);
    alice = await user(s.url, 'alice');
  });
  after(async () => s.stop());

  const body = { to: [ALICE], message: 'hello' };
  const withAuth = (authorization: string, path = '/messages', method = 'POST') =>
    http(s.url, method, path, { ...(method === 'POST' ? { json: body } : {}), headers: { authorization } });

  test('a missing Authorization header is 401', async () => {
    const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { json: body }));
    assertError(r, 401, ['unauthorized', 'invalid_token'], 'no header');
    assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
  });

  test('garbage bearer tokens are 401 on every authenticated endpoint (property)', async () => {
    const visible = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
    const jwtish = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/;
    const token = fc.oneof(
      fc.string({ unit: visible, minLength: 1, maxLength: 300 }),
      fc.string({ unit: chars(ALNUM + '-_'), minLength: 1, maxLength: 60 }).map((t) => `ita_${t}`),
      fc.string({ unit: chars(ALNUM + '-_'), minLength: 1, maxLength: 60 }).map((t) => `itr_${t}`),
      fc.constant(alice.refresh), // a refresh token is not an access token
    ).filter((t) => !jwtish.test(t));
    const endpoint = fc.constantFrom<[string, string]>(['POST', '/messages'], ['GET', '/me'], ['GET', '/conversations'], ['POST', '/logout'], ['GET', `/messages/${encodeParticipantsSegment([ALICE])}`]);
    await fc.assert(
      fc.asyncProperty(token, fc.boolean(), endpoint, async (t, scheme, [method, path]) => {
        const r = await unchanged(s, () => withAuth(scheme ? `Bearer ${t}` : t, path, method));
        assertError(r, 401, 'invalid_token', `${method} ${path} ${t}`);
      }),
      { numRuns: 200 },
    );
  });

  test('malformed Authorization headers are 401', async () => {
    for (const h of ['Bearer', 'Bearer ', 'Basic YWxpY2U6cHc=', `Bearer ${alice.token} extra`, 'Bearer a b', `Token ${alice.token}`]) {
      const r = await unchanged(s, () => withAuth(h));
      assertError(r, 401, ['unauthorized', 'invalid_token'], h);
    }
  });

  test('JWT-looking tokens are not 5xx: 403 federation_disabled without federation (property)', async () => {
    const seg = fc.string({ unit: chars(ALNUM + '-_'), maxLength: 80 });
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: chars(ALNUM + '-_'), minLength: 1, maxLength: 80 }), seg, seg, async (a, b, c) => {
        const r = await unchanged(s, () => withAuth(`Bearer ${a}.${b}.${c}`));
        assertError(r, 403, 'federation_disabled', `${a}.${b}.${c}`);
      }),
      { numRuns: 100 },
    );
  });

  test('revoked tokens are 401: after /logout and after /revoke of the refresh token', async () => {
    const t1 = await login(s.url, 'alice');
    assert.equal((await http(s.url, 'GET', '/me', { token: t1.access_token })).status, 200); // cached now
    const out = await http(s.url, 'POST', '/logout', { token: t1.access_token });
    assert.equal(out.status, 204);
    const r1 = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: t1.access_token, json: body }));
    assertError(r1, 401, 'invalid_token', 'after logout');

    const t2 = await login(s.url, 'alice');
    assert.equal((await http(s.url, 'POST', '/messages', { token: t2.access_token, json: body })).status, 201);
    const rev = await http(s.url, 'POST', '/revoke', { form: { token: t2.refresh_token } });
    assert.equal(rev.status, 200);
    const r2 = await unchanged(s, () => http(s.url, 'POST', '/messages', { token: t2.access_token, json: body }));
    assertError(r2, 401, 'invalid_token', 'after revoke');
    const r3 = await unchanged(s, () => http(s.url, 'GET', '/me', { token: t2.access_token }));
    assertError(r3, 401, 'invalid_token', 'GET /me after revoke');
  });
});

describe('expired access tokens are 401', () => {
  let s: Started;
  before(async () => {
    s = await startProvider({ ...ENV, INTERTALK_ACCESS_TOKEN_TTL: '1s' });
  });
  after(async () => s.stop());

  test('a token used before and after its lifetime, and one never used, are refused once expired', async () => {
    const alice = await user(s.url, 'alice');
    const unused = await login(s.url, 'alice');
    assert.equal(unused.refresh_token.length > 0, true);
    const ok = await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [ALICE], message: 'in time' } });
    assert.equal(ok.status, 201);
    await new Promise((r) => setTimeout(r, 1200));
    for (const token of [alice.token, unused.access_token]) {
      const r = await unchanged(s, () => http(s.url, 'POST', '/messages', { token, json: { to: [ALICE], message: 'too late' } }));
      assertError(r, 401, 'invalid_token', 'expired');
      const me = await http(s.url, 'GET', '/me', { token });
      assertError(me, 401, 'invalid_token', 'expired /me');
    }
    // The refresh token still yields a fresh access token.
    const fresh = await http(s.url, 'POST', '/token', { form: { grant_type: 'refresh_token', refresh_token: alice.refresh } });
    assert.equal(fresh.status, 200);
    assert.equal((await http(s.url, 'GET', '/me', { token: fresh.body.access_token })).status, 200);
  });
});

// ---------------------------------------------------------------------------------------------

describe('GET /messages/{participants} with garbage', () => {
  let s: Started;
  let alice: { token: string };
  before(async () => {
    s = await startProvider(ENV);
    alice = await user(s.url, 'alice');
  });
  after(async () => s.stop());

  const b64 = (x: string | Uint8Array) => Buffer.from(x).toString('base64url');

  test('undecodable segments get 400 invalid_participants (property)', async () => {
    const outside = chars('!"#$%&\'()*,.:;<>?@[\\]^`{|}~ é€');
    const garbage = fc.oneof(
      fc.tuple(fc.string({ maxLength: 30 }), outside, fc.string({ maxLength: 30 })).map(([a, c, b]) => a + c + b),
      fc.jsonValue().filter((v) => !Array.isArray(v)).map((v) => b64(JSON.stringify(v))),
      fc.constant(b64('[]')),
      fc.tuple(fc.array(fc.constantFrom(ALICE, 'bob@localhost'), { maxLength: 3 }), fc.oneof(fc.integer(), fc.constant(null), fc.string({ maxLength: 8 }).filter((x) => !x.includes('@')))).map(([xs, bad]) => b64(JSON.stringify([...xs, bad]))),
      fc.string({ minLength: 1, maxLength: 30 }).filter((x) => {
        try {
          JSON.parse(x);
          return false;
        } catch {
          return true;
        }
      }).map((x) => b64(x)),
      fc.constantFrom(b64(new Uint8Array([0x5b, 0x22, 0xff, 0x22, 0x5d])), 'A', 'AAAAA', 'YQ=a', 'abc==='),
    ).filter((x) => x !== '.' && x !== '..' && x.length > 0);
    await fc.assert(
      fc.asyncProperty(garbage, async (g) => {
        const r = await unchanged(s, () => http(s.url, 'GET', `/messages/${encodeURIComponent(g)}`, { token: alice.token }));
        assertError(r, 400, 'invalid_participants', JSON.stringify(g));
      }),
      { numRuns: 200 },
    );
  });

  test('a valid segment the caller is not part of is 403; without a token it is 401', async () => {
    const seg = encodeParticipantsSegment(['bob@localhost', 'carol@localhost']);
    assertError(await http(s.url, 'GET', `/messages/${seg}`, { token: alice.token }), 403, 'not_participant');
    assertError(await http(s.url, 'GET', `/messages/${seg}`), 401, ['unauthorized', 'invalid_token']);
    const mine = await http(s.url, 'GET', `/messages/${encodeParticipantsSegment([ALICE, 'bob@localhost'])}`, { token: alice.token });
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.body, { messages: [], hasMore: false });
  });

  test('bad paging parameters get 400', async () => {
    const seg = encodeParticipantsSegment([ALICE]);
    for (const q of ['limit=abc', 'limit=0', 'limit=100000', 'before=-1', 'after=1.5', 'limit=1&limit=2', 'before=99999999999999999']) {
      assertError(await http(s.url, 'GET', `/messages/${seg}?${q}`, { token: alice.token }), 400, 'invalid_request', q);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('POST /users', () => {
  let s: Started;
  before(async () => {
    s = await startProvider(ENV);
  });
  after(async () => s.stop());

  const PASSWORD = 'correct horse battery';
  const register = (body: unknown) => http(s.url, 'POST', '/users', { json: body });
  let counter = 0;

  test('201 with the address; the same name in any case is then 409 username_taken', async () => {
    const before = await snapshot(s);
    const r = await register({ username: 'Dora', password: PASSWORD });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.username, 'dora');
    assert.equal(r.body.address, 'dora@localhost');
    assert.equal((await snapshot(s)).users, before.users + 1);
    for (const name of ['dora', 'DORA', 'dOrA']) {
      const again = await unchanged(s, () => register({ username: name, password: PASSWORD }));
      assertError(again, 409, 'username_taken', name);
    }
  });

  test('invalid usernames get 400 invalid_username and create nothing (property)', async () => {
    const invalidName = fc.oneof(
      fc.string({ maxLength: 20 }).filter((x) => !/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/.test(x) || x.length > 64),
      fc.string({ unit: chars('ab.'), minLength: 1, maxLength: 10 }).filter((x) => x.startsWith('.') || x.endsWith('.') || x.includes('..')),
      fc.constantFrom('', 'a b', 'a@b', 'al@localhost', '"q"', 'é', '\u212Aate', 'x'.repeat(65), 'admin', 'Postmaster', 'ROOT', 'abuse', 'no-reply'),
      nonString,
    );
    await fc.assert(
      fc.asyncProperty(invalidName, async (name) => {
        const r = await unchanged(s, () => register({ username: name, password: PASSWORD }));
        assertError(r, 400, 'invalid_username', JSON.stringify(name));
      }),
      { numRuns: 150 },
    );
  });

  test('passwords shorter than 8 characters, or not strings, get 400 invalid_password (property)', async () => {
    const shortPassword = fc.oneof(fc.string({ unit: 'binary', maxLength: 7 }), fc.string({ unit: 'grapheme', maxLength: 7 }).filter((p) => [...p].length < 8), fc.constant('😀😀😀😀'), nonString);
    await fc.assert(
      fc.asyncProperty(shortPassword, async (pw) => {
        const name = `pw${counter++}`;
        const r = await unchanged(s, () => register({ username: name, password: pw }));
        assertError(r, 400, 'invalid_password', JSON.stringify(pw));
      }),
      { numRuns: 100 },
    );
  });

  test('bodies that are not JSON objects get 400 and create nothing', async () => {
    for (const v of [null, [], 'alice', 42, true]) {
      assertError(await unchanged(s, () => register(v)), 400, 'invalid_request', JSON.stringify(v));
    }
    assertError(await unchanged(s, () => http(s.url, 'POST', '/users', { body: '{"username":', headers: { 'content-type': 'application/json' } })), 400, 'invalid_json');
    assertError(await unchanged(s, () => http(s.url, 'POST', '/users', { body: 'username=x', headers: { 'content-type': 'text/plain' } })), 415, 'unsupported_media_type');
  });

  test('with INTERTALK_REGISTRATION=closed every sign-up is 403 registration_closed', async () => {
    const closed = await startProvider({ ...ENV, INTERTALK_REGISTRATION: 'closed' });
    try {
      for (const body of [{ username: 'newbie', password: PASSWORD }, { username: 'admin', password: 'x' }, {}]) {
        assertError(await unchanged(closed, () => http(closed.url, 'POST', '/users', { json: body })), 403, 'registration_closed', JSON.stringify(body));
      }
    } finally {
      await closed.stop();
    }
  });
});
