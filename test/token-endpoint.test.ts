// POST /token (RFC 6749 §4.3 password grant, §6 refresh) against a real provider: generated bad
// requests get the exact RFC 6749 §5.2 error, never 200 or 5xx, and no session is written; failed
// logins are throttled per account and per client address.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { sql } from 'kysely';
import { startProvider, http, user, type Started, type Res } from './helpers/harness.js';

const ENV = { INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '1000000' };
const PASSWORD = 'correct horse battery';

async function count(s: Started, table: 'sessions' | 'access_tokens' | 'users'): Promise<number> {
  const r = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(table)}`.execute(s.provider.ctx.storage.db);
  return Number(r.rows[0]!.n);
}

/** Session state: row counts plus every session's refresh hash and revocation (rotation is an update). */
async function sessionState(s: Started): Promise<string> {
  const db = s.provider.ctx.storage.db;
  const sessions = await db.selectFrom('sessions').select(['id', 'refresh_hash', 'revoked_at']).orderBy('id').execute();
  return JSON.stringify({ sessions, accessTokens: await count(s, 'access_tokens'), users: await count(s, 'users') });
}

async function unchanged<T>(s: Started, fn: () => Promise<T>): Promise<T> {
  const before = await sessionState(s);
  const r = await fn();
  assert.equal(await sessionState(s), before, 'sessions or tokens changed');
  return r;
}

function assertOAuthError(r: Res, status: number, error: string | readonly string[], what = ''): void {
  const errors = typeof error === 'string' ? [error] : error;
  assert.equal(r.status, status, `${what}: expected ${status} ${errors.join('|')}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body, 'object', `${what}: not JSON: ${String(r.body)}`);
  assert.ok(errors.includes(r.body.error), `${what}: error ${JSON.stringify(r.body.error)} not in ${errors.join('|')}`);
  assert.equal(typeof r.body.message, 'string');
  assert.ok(r.body.message.length > 0);
  if (r.body.error_description !== undefined) assert.equal(typeof r.body.error_description, 'string');
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(r.body.access_token, undefined);
}

let ipCounter = 1;
/** A fresh client address for each request (the provider trusts X-Forwarded-For in these tests). */
function freshIp(): string {
  const n = ipCounter++;
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

/** POSTs form parameters in the given order (duplicates and odd names allowed). */
function tokenForm(s: Started, params: Array<[string, string]>, ip = freshIp()): Promise<Res> {
  const body = new URLSearchParams();
  for (const [k, v] of params) body.append(k, v);
  return http(s.url, 'POST', '/token', { body: body.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': ip } });
}
function tokenJson(s: Started, body: unknown, ip = freshIp()): Promise<Res> {
  return http(s.url, 'POST', '/token', { json: body, headers: { 'x-forwarded-for': ip } });
}

const KNOWN = new Set(['grant_type', 'username', 'password', 'refresh_token']);
const anyText = fc.oneof(fc.string({ minLength: 1, maxLength: 60 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }));

describe('POST /token', () => {
  let s: Started;
  let alice: { token: string; refresh: string; address: string };

  before(async () => {
    s = await startProvider({ ...ENV, INTERTALK_TRUST_PROXY: 'true' });
    alice = await user(s.url, 'alice');
  });
  after(async () => s.stop());

  test('password grant: form or JSON, local part or full address in any case', async () => {
    for (const [how, send] of [
      ['form', () => tokenForm(s, [['grant_type', 'password'], ['username', 'alice'], ['password', PASSWORD]])],
      ['full address', () => tokenForm(s, [['grant_type', 'password'], ['username', 'ALICE@Localhost'], ['password', PASSWORD]])],
      ['json', () => tokenJson(s, { grant_type: 'password', username: 'alice@localhost', password: PASSWORD })],
    ] as const) {
      const before = await count(s, 'sessions');
      const r = await send();
      assert.equal(r.status, 200, `${how}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.access_token, 'string');
      assert.equal(typeof r.body.refresh_token, 'string');
      assert.equal(String(r.body.token_type).toLowerCase(), 'bearer');
      assert.ok(Number.isInteger(r.body.expires_in) && r.body.expires_in > 0);
      assert.equal(r.body.address, 'alice@localhost');
      assert.match(r.headers.get('cache-control') ?? '', /no-store/);
      assert.equal(await count(s, 'sessions'), before + 1);
      const me = await http(s.url, 'GET', '/me', { token: r.body.access_token });
      assert.equal(me.status, 200);
      assert.equal(me.body.address, 'alice@localhost');
    }
  });

  test('random grant_type strings get 400 unsupported_grant_type and write nothing (property)', async () => {
    await fc.assert(
      fc.asyncProperty(anyText.filter((g) => g !== 'password' && g !== 'refresh_token'), fc.boolean(), fc.boolean(), async (grant, withCreds, asJson) => {
        const params: Record<string, string> = { grant_type: grant };
        if (withCreds) Object.assign(params, { username: 'alice', password: PASSWORD, refresh_token: alice.refresh });
        const r = await unchanged(s, () => (asJson ? tokenJson(s, params) : tokenForm(s, Object.entries(params))));
        assertOAuthError(r, 400, 'unsupported_grant_type', JSON.stringify(grant));
      }),
      { numRuns: 200 },
    );
  });

  test('grant_type absent, empty or not a string gets 400 invalid_request (property)', async () => {
    const badGrant = fc.oneof(fc.constant(undefined), fc.constant(''), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.constant('password'), { minLength: 1, maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }));
    await fc.assert(
      fc.asyncProperty(badGrant, async (grant) => {
        const body: Record<string, unknown> = { username: 'alice', password: PASSWORD };
        if (grant !== undefined) body.grant_type = grant;
        const r = await unchanged(s, () => tokenJson(s, body));
        assertOAuthError(r, 400, 'invalid_request', JSON.stringify(grant));
      }),
      { numRuns: 100 },
    );
    for (const form of [[['username', 'alice'], ['password', PASSWORD]], [['grant_type', ''], ['username', 'alice'], ['password', PASSWORD]]] as Array<Array<[string, string]>>) {
      assertOAuthError(await unchanged(s, () => tokenForm(s, form)), 400, 'invalid_request', JSON.stringify(form));
    }
  });

  test('missing or empty parameters get 400 invalid_request, even with the right password (property)', async () => {
    const grant = fc.constantFrom('password', 'refresh_token');
    await fc.assert(
      fc.asyncProperty(grant, fc.boolean(), fc.boolean(), fc.boolean(), fc.boolean(), async (g, dropUser, dropPass, emptyInstead, asJson) => {
        fc.pre(g === 'refresh_token' || dropUser || dropPass);
        const params: Record<string, unknown> = { grant_type: g };
        const needed = g === 'password' ? { username: dropUser ? null : 'alice', password: dropPass ? null : PASSWORD } : { refresh_token: null };
        for (const [k, v] of Object.entries(needed)) {
          if (v !== null) params[k] = v;
          else if (emptyInstead) params[k] = '';
        }
        // Parameters of the other grant do not stand in for the missing ones.
        if (g === 'refresh_token') Object.assign(params, { username: 'alice', password: PASSWORD });
        const r = await unchanged(s, () => (asJson ? tokenJson(s, params) : tokenForm(s, Object.entries(params) as Array<[string, string]>)));
        assertOAuthError(r, 400, 'invalid_request', JSON.stringify(params));
      }),
      { numRuns: 100 },
    );
  });

  test('parameters of the wrong type in JSON get 400 invalid_request', async () => {
    for (const body of [
      { grant_type: 'password', username: 42, password: PASSWORD },
      { grant_type: 'password', username: 'alice', password: [PASSWORD] },
      { grant_type: 'password', username: { name: 'alice' }, password: PASSWORD },
      { grant_type: 'refresh_token', refresh_token: true },
      { grant_type: 'password', username: 'alice', password: 'x'.repeat(5000) },
    ]) {
      assertOAuthError(await unchanged(s, () => tokenJson(s, body)), 400, 'invalid_request', JSON.stringify(body).slice(0, 100));
    }
  });

  test('a repeated parameter gets 400 invalid_request, even when every value is right (property)', async () => {
    const base: Array<[string, string]> = [['grant_type', 'password'], ['username', 'alice'], ['password', PASSWORD]];
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 2 }), fc.option(anyText, { nil: undefined }), fc.nat(), async (which, other, pos) => {
        const dup = base[which]!;
        const params = [...base];
        params.splice(pos % (params.length + 1), 0, [dup[0], other ?? dup[1]]);
        const r = await unchanged(s, () => tokenForm(s, params));
        assertOAuthError(r, 400, 'invalid_request', JSON.stringify(params));
      }),
      { numRuns: 60 },
    );
  });

  test('random credentials get 400 invalid_grant, never 200 or 5xx, and write nothing (property)', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(anyText, anyText, fc.boolean(), async (name, password, asJson) => {
        // A unique prefix keeps each attempt on its own account (the per-account limit is tested below).
        const username = `${n++}x${name}`;
        const params = { grant_type: 'password', username, password };
        const r = await unchanged(s, () => (asJson ? tokenJson(s, params) : tokenForm(s, Object.entries(params))));
        assertOAuthError(r, 400, 'invalid_grant', JSON.stringify(params));
      }),
      { numRuns: 40 },
    );
  });

  test('a wrong password for a real account gets 400 invalid_grant and writes nothing (property)', async () => {
    await user(s.url, 'wendy');
    await fc.assert(
      fc.asyncProperty(anyText.filter((p) => p !== PASSWORD), fc.constantFrom('wendy', 'WENDY', 'wendy@localhost', 'Wendy@LOCALHOST'), async (password, username) => {
        const r = await unchanged(s, () => tokenForm(s, [['grant_type', 'password'], ['username', username], ['password', password]]));
        assertOAuthError(r, 400, 'invalid_grant', password);
      }),
      { numRuns: 9 }, // stays under the per-account limit of 10 failures
    );
    const ok = await tokenForm(s, [['grant_type', 'password'], ['username', 'wendy'], ['password', PASSWORD]]);
    assert.equal(ok.status, 200);
  });

  test('random refresh tokens get 400 invalid_grant and write nothing (property)', async () => {
    const visible = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
    const refresh = fc.oneof(
      anyText,
      fc.string({ unit: visible, minLength: 1, maxLength: 80 }).map((t) => `itr_${t}`),
      fc.constant(alice.token), // an access token is not a refresh token
      fc.constant(alice.refresh.slice(0, -1)),
      fc.constant(alice.refresh + 'x'),
    );
    await fc.assert(
      fc.asyncProperty(refresh, fc.boolean(), async (t, asJson) => {
        const params = { grant_type: 'refresh_token', refresh_token: t };
        const r = await unchanged(s, () => (asJson ? tokenJson(s, params) : tokenForm(s, Object.entries(params))));
        assertOAuthError(r, 400, 'invalid_grant', t);
      }),
      { numRuns: 150 },
    );
  });

  test('refresh rotates the refresh token: the old one then fails with invalid_grant', async () => {
    const t = await user(s.url, 'rory');
    const r1 = await tokenForm(s, [['grant_type', 'refresh_token'], ['refresh_token', t.refresh]]);
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.notEqual(r1.body.refresh_token, t.refresh);
    assert.notEqual(r1.body.access_token, t.token);
    assert.equal(r1.body.address, 'rory@localhost');
    assert.equal((await http(s.url, 'GET', '/me', { token: r1.body.access_token })).status, 200);

    const old = await unchanged(s, () => tokenForm(s, [['grant_type', 'refresh_token'], ['refresh_token', t.refresh]]));
    assertOAuthError(old, 400, 'invalid_grant', 'old refresh token');

    const r2 = await tokenJson(s, { grant_type: 'refresh_token', refresh_token: r1.body.refresh_token });
    assert.equal(r2.status, 200);
    // Revoking ends the session: its refresh token no longer works.
    assert.equal((await http(s.url, 'POST', '/revoke', { form: { token: r2.body.refresh_token } })).status, 200);
    assertOAuthError(await unchanged(s, () => tokenForm(s, [['grant_type', 'refresh_token'], ['refresh_token', r2.body.refresh_token]])), 400, 'invalid_grant', 'revoked');
    assert.equal((await http(s.url, 'GET', '/me', { token: r2.body.access_token })).status, 401);
  });

  test('concurrent refreshes with one refresh token: exactly one wins', async () => {
    const t = await user(s.url, 'cora');
    const results = await Promise.all(Array.from({ length: 5 }, () => tokenForm(s, [['grant_type', 'refresh_token'], ['refresh_token', t.refresh]])));
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 400, 400, 400, 400], JSON.stringify(results.map((r) => r.body)));
    for (const r of results.filter((x) => x.status === 400)) assertOAuthError(r, 400, 'invalid_grant');
  });

  test('malformed requests: wrong content type, broken JSON, invalid UTF-8, non-object JSON, empty body', async () => {
    const raw = (body: string | Buffer, ct?: string) => unchanged(s, () => http(s.url, 'POST', '/token', { body, headers: { ...(ct ? { 'content-type': ct } : {}), 'x-forwarded-for': freshIp() } }));
    const form = `grant_type=password&username=alice&password=${encodeURIComponent(PASSWORD)}`;
    // The generic codes of the HTTP layer, or RFC 6749's invalid_request for a malformed request.
    const UNSUPPORTED = [415, ['unsupported_media_type']] as const;
    for (const [body, ct, what] of [
      [form, 'text/plain', 'text/plain'],
      [form, 'multipart/form-data; boundary=x', 'multipart'],
      [Buffer.from(form), undefined, 'no content type'],
    ] as const) {
      const r = await raw(body, ct);
      if (r.status === 415) assertOAuthError(r, UNSUPPORTED[0], UNSUPPORTED[1], what);
      else assertOAuthError(r, 400, 'invalid_request', what);
    }
    assertOAuthError(await raw('{"grant_type":"password",', 'application/json'), 400, ['invalid_json', 'invalid_request'], 'broken JSON');
    assertOAuthError(await raw(Buffer.concat([Buffer.from('grant_type=password&username=al'), Buffer.from([0xff, 0xfe]), Buffer.from(`ice&password=x`)]), 'application/x-www-form-urlencoded'), 400, ['invalid_encoding', 'invalid_request'], 'invalid UTF-8 form');
    assertOAuthError(await raw(Buffer.concat([Buffer.from('{"grant_type":"password","username":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('","password":"x"}')]), 'application/json'), 400, ['invalid_encoding', 'invalid_request'], 'invalid UTF-8 JSON');
    for (const v of ['[]', '"password"', '42', 'null', '']) {
      assertOAuthError(await raw(v, 'application/json'), 400, 'invalid_request', `JSON ${v}`);
    }
    assertOAuthError(await raw('', 'application/x-www-form-urlencoded'), 400, 'invalid_request', 'empty form');
  });

  test('unrecognised parameters are ignored (RFC 6749 §3.2) (property)', async () => {
    const extraName = fc.string({ maxLength: 20 }).filter((k) => !KNOWN.has(k) && !(k in Object.prototype));
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(extraName, { minLength: 1, maxLength: 3 }), fc.string({ maxLength: 20 }), async (names, value) => {
        const params: Array<[string, string]> = [['grant_type', 'password'], ['username', 'alice'], ['password', PASSWORD], ...names.map((k): [string, string] => [k, value])];
        const r = await tokenForm(s, params);
        assert.equal(r.status, 200, `${JSON.stringify(names)}: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(typeof r.body.access_token, 'string');
      }),
      { numRuns: 20 },
    );
  });

  test('unrecognised parameters named like Object.prototype members are ignored too, not taken for repeats', async () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      const r = await tokenForm(s, [['grant_type', 'password'], ['username', 'alice'], ['password', PASSWORD], [name, '1']]);
      assert.equal(r.status, 200, `${name}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  });
});

describe('failed-login throttling', () => {
  test('after 10 failures for one account from one client: that client gets 429 slow_down with Retry-After, even with the right password; the user elsewhere does not', async () => {
    const s = await startProvider({ ...ENV, INTERTALK_TRUST_PROXY: 'true' });
    try {
      await user(s.url, 'tess');
      await user(s.url, 'uma');
      // Ten failures from one client (in IPv6, one /64 is one client).
      const stranger = (i: number) => `2001:db8:5:7:${i.toString(16)}::1`;
      for (let i = 0; i < 10; i++) {
        const r = await unchanged(s, () => tokenForm(s, [['grant_type', 'password'], ['username', i % 2 ? 'tess' : 'TESS@localhost'], ['password', `wrong ${i}`]], stranger(i)));
        assertOAuthError(r, 400, 'invalid_grant', `failure ${i + 1}`);
      }
      for (const username of ['tess', 'Tess@Localhost']) {
        const r = await unchanged(s, () => tokenForm(s, [['grant_type', 'password'], ['username', username], ['password', PASSWORD]], stranger(99)));
        assertOAuthError(r, 429, 'slow_down', `throttled ${username}`);
        const retry = Number(r.headers.get('retry-after'));
        assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 15 * 60, `Retry-After ${r.headers.get('retry-after')}`);
      }
      // The stranger could not lock Tess out: from her own client she logs in.
      const own = await tokenForm(s, [['grant_type', 'password'], ['username', 'tess'], ['password', PASSWORD]], '2001:db8:5:8::1');
      assert.equal(own.status, 200, JSON.stringify(own.body));
      // The stranger's client may still try other accounts (up to its own limit).
      const other = await tokenForm(s, [['grant_type', 'password'], ['username', 'uma'], ['password', PASSWORD]], stranger(5));
      assert.equal(other.status, 200);
    } finally {
      await s.stop();
    }
  });

  test('after 100 failures for one account spread over many clients: 429 slow_down for that account from any client; others unaffected', async () => {
    const s = await startProvider({ ...ENV, INTERTALK_TRUST_PROXY: 'true' });
    try {
      await user(s.url, 'wynn');
      await user(s.url, 'xena');
      const attempts = await Promise.all(
        Array.from({ length: 100 }, (_, i) => tokenForm(s, [['grant_type', 'password'], ['username', 'wynn'], ['password', `guess ${i}`]])),
      );
      for (const [i, r] of attempts.entries()) assertOAuthError(r, 400, 'invalid_grant', `failure ${i + 1}`);
      const r = await unchanged(s, () => tokenForm(s, [['grant_type', 'password'], ['username', 'wynn'], ['password', PASSWORD]]));
      assertOAuthError(r, 429, 'slow_down', 'per-account limit');
      const other = await tokenForm(s, [['grant_type', 'password'], ['username', 'xena'], ['password', PASSWORD]]);
      assert.equal(other.status, 200);
    } finally {
      await s.stop();
    }
  });

  test('after 50 failures from one client address: 429 slow_down for any account; a spoofed X-Forwarded-For does not help', async () => {
    // No INTERTALK_TRUST_PROXY: the client address is the socket's, whatever X-Forwarded-For says.
    const s = await startProvider(ENV);
    try {
      await user(s.url, 'vera');
      const attempts = await Promise.all(
        Array.from({ length: 50 }, (_, i) => tokenForm(s, [['grant_type', 'password'], ['username', `nobody${i}`], ['password', 'wrong password']], `198.51.100.${i}`)),
      );
      for (const [i, r] of attempts.entries()) assertOAuthError(r, 400, 'invalid_grant', `failure ${i + 1}`);
      const sessions = await count(s, 'sessions');
      const r = await tokenForm(s, [['grant_type', 'password'], ['username', 'vera'], ['password', PASSWORD]], '203.0.113.9');
      assertOAuthError(r, 429, 'slow_down', 'per-client limit');
      const retry = Number(r.headers.get('retry-after'));
      assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 15 * 60, `Retry-After ${r.headers.get('retry-after')}`);
      assert.equal(await count(s, 'sessions'), sessions);
    } finally {
      await s.stop();
    }
  });
});
