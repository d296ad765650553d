// Pure rules of the seed's callback flow (src/indieweb/callback-protocol.ts): token and code
// formats, endpoint canonicalisation, request parsing and the token / code checks, with
// property-based tests where input is parsed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CODE_PREFIX,
  MESSAGE_TOKEN_TTL_MS,
  TOKEN_PREFIX,
  canonicalEndpoint,
  checkCodeUse,
  checkTokenUse,
  heldExpiry,
  isSecretFormat,
  newSecret,
  parseCallbackRequest,
  sameEndpoint,
  type IssuedToken,
} from '../src/indieweb/callback-protocol.js';

const label = fc.stringMatching(/^[a-z][a-z0-9]{0,10}$/);
const domain = fc.tuple(label, label, fc.constantFrom('test', 'example', 'org')).map(([a, b, c]) => `${a}.${b}.${c}`);
const path = fc.stringMatching(/^(\/[a-z0-9]{1,5}){0,3}\/?$/);
const mixCase = (s: string, mask: boolean[]) => [...s].map((ch, i) => (mask[i % Math.max(mask.length, 1)] ? ch.toUpperCase() : ch)).join('');
const secretBody = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/);

describe('callback tokens and codes', () => {
  it('new secrets have their format, and only their own', () => {
    for (let i = 0; i < 50; i++) {
      const t = newSecret('token');
      const c = newSecret('code');
      assert.ok(isSecretFormat(t, 'token') && t.startsWith(TOKEN_PREFIX));
      assert.ok(isSecretFormat(c, 'code') && c.startsWith(CODE_PREFIX));
      assert.ok(!isSecretFormat(t, 'code') && !isSecretFormat(c, 'token'));
    }
    assert.notEqual(newSecret('token'), newSecret('token'));
  });

  it('any string that is not prefix + 43 base64url characters is refused, and never throws', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.anything()), (s) => {
        const ok = isSecretFormat(s, 'token');
        assert.equal(ok, typeof s === 'string' && s.startsWith(TOKEN_PREFIX) && /^[A-Za-z0-9_-]{43}$/.test(s.slice(TOKEN_PREFIX.length)));
      }),
    );
    fc.assert(fc.property(secretBody, (b) => isSecretFormat(TOKEN_PREFIX + b, 'token') && !isSecretFormat(TOKEN_PREFIX + b + 'x', 'token')));
  });
});

describe('canonicalEndpoint', () => {
  it('lower-cases scheme and host, drops the default port, gives an empty path "/"; idempotent', () => {
    fc.assert(
      fc.property(domain, fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.constantFrom('http', 'https'), path, fc.boolean(), (d, mask, scheme, p, port) => {
        const defaultPort = scheme === 'https' ? ':443' : ':80';
        const input = `${mixCase(scheme, mask)}://${mixCase(d, mask)}${port ? defaultPort : ''}${p}`;
        const r = canonicalEndpoint(input);
        assert.ok(r.ok, JSON.stringify(r));
        assert.equal(r.url, `${scheme}://${d}${p || '/'}`);
        assert.deepEqual(canonicalEndpoint(r.url), r);
        assert.ok(sameEndpoint(input, r.url));
      }),
    );
  });

  it('keeps a non-default port and tells paths apart (a trailing slash on a longer path matters)', () => {
    assert.equal((canonicalEndpoint('https://A.test:8443') as any).url, 'https://a.test:8443/');
    assert.ok(!sameEndpoint('https://a.test/pm', 'https://a.test/pm/'));
    assert.ok(sameEndpoint('https://a.test', 'https://a.test/'));
    assert.ok(!sameEndpoint('https://a.test/', 'http://a.test/'));
  });

  it('refuses other schemes, credentials, fragments, dot segments, white space; never throws', () => {
    for (const bad of ['ftp://a.test/', 'https://u:p@a.test/', 'https://a.test/#x', 'https://a.test/a/../b', 'https://a.test/%2e%2e/b', 'https://a .test/', 'a.test', '', 'javascript:alert(1)', `https://a.test/${'x'.repeat(3000)}`]) {
      assert.equal(canonicalEndpoint(bad).ok, false, bad);
    }
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.webUrl(), fc.anything()), (s) => {
        const r = canonicalEndpoint(s);
        if (r.ok) {
          assert.match(r.url, /^https?:\/\//);
          assert.deepEqual(canonicalEndpoint(r.url), r);
        }
      }),
    );
  });
});

describe('parseCallbackRequest', () => {
  const token = TOKEN_PREFIX + 'a'.repeat(43);
  const code = CODE_PREFIX + 'b'.repeat(43);

  it('parses the five request types', () => {
    assert.deepEqual(parseCallbackRequest({ type: 'notify', domain: 'alice.test', id: 'm1' }), { ok: true, req: { type: 'notify', domain: 'alice.test', subject: { id: 'm1' } } });
    assert.deepEqual(parseCallbackRequest({ type: 'notify', domain: 'alice.test', code }), { ok: true, req: { type: 'notify', domain: 'alice.test', subject: { code } } });
    assert.deepEqual(parseCallbackRequest({ type: 'check', domain: 'alice.test', id: 'm1', destination: 'HTTPS://PM.Bob.test' }), {
      ok: true,
      req: { type: 'check', domain: 'alice.test', subject: { id: 'm1' }, destination: 'https://pm.bob.test/' },
    });
    const g = parseCallbackRequest({ type: 'grant', domain: 'alice.test', code, destination: 'https://pm.bob.test/', token, expiresAt: '2030-01-01T00:00:00Z' });
    assert.ok(g.ok && g.req.type === 'grant' && g.req.expiresAt === Date.parse('2030-01-01T00:00:00Z'));
    assert.deepEqual(parseCallbackRequest({ type: 'message', token, message: { from: 'a@b.test' } }), { ok: true, req: { type: 'message', token, message: { from: 'a@b.test' } } });
    assert.deepEqual(parseCallbackRequest({ type: 'revoke', token }), { ok: true, req: { type: 'revoke', token } });
  });

  it('names what is wrong', () => {
    const cases: Array<[unknown, string]> = [
      [null, 'invalid_request'],
      [[], 'invalid_request'],
      [{ type: 'hello' }, 'unknown_type'],
      [{ type: 'notify', domain: 'Alice.test', id: 'x' }, 'invalid_domain'],
      [{ type: 'notify', domain: '127.0.0.1', id: 'x' }, 'invalid_domain'],
      [{ type: 'notify', domain: 'alice.test' }, 'invalid_request'],
      [{ type: 'notify', domain: 'alice.test', id: 'x', code }, 'invalid_request'],
      [{ type: 'notify', domain: 'alice.test', code: 'nope' }, 'invalid_code'],
      [{ type: 'notify', domain: 'alice.test', id: 'x', extra: 1 }, 'invalid_request'],
      [{ type: 'check', domain: 'alice.test', id: 'x', destination: 'ftp://x.test/' }, 'invalid_request'],
      [{ type: 'grant', domain: 'alice.test', id: 'x', destination: 'https://x.test/', token: 'short' }, 'invalid_token'],
      [{ type: 'grant', domain: 'alice.test', id: 'x', destination: 'https://x.test/', token, expiresAt: 'tomorrow' }, 'invalid_request'],
      [{ type: 'message', token, message: 'hi' }, 'invalid_request'],
      [{ type: 'message', token: code, message: {} }, 'invalid_token'],
    ];
    for (const [body, error] of cases) {
      const r = parseCallbackRequest(body);
      assert.equal(r.ok, false, JSON.stringify(body));
      assert.equal(!r.ok && r.error, error, JSON.stringify(body));
      assert.ok(!r.ok && r.message.length > 0);
    }
  });

  it('never throws on arbitrary input; what it accepts round-trips', () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything(), fc.record({ type: fc.constantFrom('notify', 'check', 'grant', 'message', 'revoke'), domain: fc.oneof(domain, fc.string()), id: fc.string(), destination: fc.oneof(fc.webUrl(), fc.string()) }, { requiredKeys: ['type'] })), (body) => {
        const r = parseCallbackRequest(body);
        if (r.ok && 'domain' in r.req) assert.equal(r.req.domain, r.req.domain.toLowerCase());
        if (r.ok && 'destination' in r.req) assert.deepEqual(canonicalEndpoint(r.req.destination), { ok: true, url: r.req.destination });
      }),
    );
  });
});

describe('token and code checks', () => {
  const now = 1_000_000;
  const session: IssuedToken = { flow: 'session', domain: 'alice.test', messageId: null, expiresAt: now + 1000, revokedAt: null };

  it('a session token carries any message from its domain until it expires or is revoked', () => {
    fc.assert(
      fc.property(label, fc.string(), fc.integer({ min: 0, max: 999 }), (local, id, dt) => {
        assert.equal(checkTokenUse(session, { now: now + dt, from: `${local}@alice.test`, id }), null);
      }),
    );
    assert.equal(checkTokenUse(session, { now: now + 1000, from: 'a@alice.test', id: 'x' })?.error, 'token_expired');
    assert.equal(checkTokenUse({ ...session, revokedAt: now }, { now, from: 'a@alice.test', id: 'x' })?.error, 'token_revoked');
    const other = checkTokenUse(session, { now, from: 'a@mallory.test', id: 'x' });
    assert.equal(other?.status, 403);
    assert.equal(other?.error, 'sender_not_delegated');
  });

  it('a six-step secret carries its own message only', () => {
    const t: IssuedToken = { flow: 'message', domain: 'alice.test', messageId: 'm1', expiresAt: now + 1000, revokedAt: null };
    assert.equal(checkTokenUse(t, { now, from: 'a@alice.test', id: 'm1' }), null);
    assert.equal(checkTokenUse(t, { now, from: 'a@alice.test', id: 'm2' })?.error, 'token_mismatch');
    assert.equal(checkTokenUse(t, { now, from: 'a@alice.test', id: undefined })?.error, 'token_mismatch');
  });

  it('an auth code is good once, before it expires, for its domain and destination', () => {
    const c = { domain: 'alice.test', destination: 'https://pm.bob.test/', expiresAt: now + 10, usedAt: null };
    assert.equal(checkCodeUse(c, { now, domain: 'alice.test', destination: 'HTTPS://pm.bob.test' }), null);
    assert.equal(checkCodeUse({ ...c, usedAt: now }, { now, domain: 'alice.test', destination: c.destination })?.error, 'unknown_code');
    assert.equal(checkCodeUse(c, { now: now + 10, domain: 'alice.test', destination: c.destination })?.error, 'unknown_code');
    assert.equal(checkCodeUse(c, { now, domain: 'mallory.test', destination: c.destination })?.error, 'unknown_code');
    assert.equal(checkCodeUse(c, { now, domain: 'alice.test', destination: 'https://evil.test/' })?.error, 'destination_mismatch');
  });

  it('a held token lives what the receiver said, capped', () => {
    fc.assert(
      fc.property(fc.option(fc.integer({ min: now + 1, max: now + 10 ** 12 }), { nil: null }), fc.constantFrom('message' as const, 'session' as const), (said, flow) => {
        const e = heldExpiry(now, said, flow, 3_600_000);
        assert.ok(e > now);
        if (flow === 'message') assert.ok(e <= now + MESSAGE_TOKEN_TTL_MS);
        if (said !== null) assert.ok(e <= said);
      }),
    );
  });
});
