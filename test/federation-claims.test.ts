import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkBatchClaims, checkFederationClaims, checkTokenWithoutMessage, MAX_TOKEN_LIFETIME_S, type BatchClaimsInput, type FederationClaimsInput } from '../src/federation/claims.js';

const OUR = 'us.example';
const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);
const NOW_S = NOW / 1000;
const SKEW = 60_000;

function base(): FederationClaimsInput {
  return {
    header: { alg: 'ES256', kid: 'k1' },
    payload: {
      iss: 'peer.example',
      sub: 'alice@peer.example',
      aud: OUR,
      iat: NOW_S - 5,
      exp: NOW_S + 55,
      jti: 'j1',
    },
    ourDomain: OUR,
    now: NOW,
    skewMs: SKEW,
    message: { from: 'alice@peer.example', to: ['alice@peer.example', 'bob@us.example'] },
  };
}

function withChange(change: (c: FederationClaimsInput) => void): FederationClaimsInput {
  const c = base();
  change(c);
  return c;
}

function expectFail(c: FederationClaimsInput, status: number, error: string): void {
  const r = checkFederationClaims(c);
  assert.equal(r.ok, false, `expected ${error}, got ok`);
  if (!r.ok) {
    assert.equal(r.status, status, `status for ${error}: ${r.error} ${r.message}`);
    assert.equal(r.error, error, r.message);
    assert.ok(r.message.length > 0);
  }
}

test('a well-formed token for a message to one of our users is accepted', () => {
  const r = checkFederationClaims(base());
  assert.deepEqual(r, { ok: true, iss: 'peer.example', sub: 'alice@peer.example', jti: 'j1', exp: NOW_S + 55, alg: 'ES256', kid: 'k1' });
});

test('addresses, issuer and audience are compared case-insensitively', () => {
  const r = checkFederationClaims(
    withChange((c) => {
      c.payload.iss = 'Peer.Example';
      c.payload.sub = 'Alice@PEER.example';
      c.payload.aud = ['other.example', 'US.EXAMPLE'];
      c.message = { from: 'ALICE@peer.example', to: ['alice@Peer.Example', 'Bob@Us.Example'] };
    }),
  );
  assert.equal(r.ok, true);
  if (r.ok) {
    assert.equal(r.iss, 'peer.example');
    assert.equal(r.sub, 'alice@peer.example');
  }
});

test('jti is optional; iat is optional (lifetime then counts from now)', () => {
  const r = checkFederationClaims(
    withChange((c) => {
      delete c.payload.jti;
      delete c.payload.iat;
      c.payload.exp = NOW_S + MAX_TOKEN_LIFETIME_S;
    }),
  );
  assert.equal(r.ok, true);
  if (r.ok) assert.equal(r.jti, null);
  expectFail(withChange((c) => { delete c.payload.iat; c.payload.exp = NOW_S + MAX_TOKEN_LIFETIME_S + 1; }), 401, 'token_lifetime_too_long');
});

test('algorithms: none and HMAC are refused, only ES256/ES384/EdDSA/RS256 pass', () => {
  for (const alg of ['none', 'None', 'HS256', 'HS384', 'HS512', 'PS256', 'ES512', '', undefined, 42]) {
    expectFail(withChange((c) => { c.header.alg = alg; }), 401, 'invalid_token');
  }
  for (const alg of ['ES256', 'ES384', 'EdDSA', 'RS256']) {
    assert.equal(checkFederationClaims(withChange((c) => { c.header.alg = alg; })).ok, true, alg);
  }
});

test('kid must be a non-empty string', () => {
  for (const kid of [undefined, '', 7, null, ['k']]) expectFail(withChange((c) => { c.header.kid = kid; }), 401, 'invalid_token');
});

test('audience must include our domain', () => {
  expectFail(withChange((c) => { c.payload.aud = 'other.example'; }), 401, 'wrong_audience');
  expectFail(withChange((c) => { c.payload.aud = ['other.example']; }), 401, 'wrong_audience');
  expectFail(withChange((c) => { c.payload.aud = []; }), 401, 'wrong_audience');
  expectFail(withChange((c) => { delete c.payload.aud; }), 401, 'invalid_token');
  expectFail(withChange((c) => { c.payload.aud = [OUR, 5]; }), 401, 'invalid_token');
});

test('iss must be the domain of sub, and sub the message sender', () => {
  expectFail(withChange((c) => { c.payload.iss = 'evil.example'; }), 401, 'issuer_mismatch');
  expectFail(withChange((c) => { c.payload.iss = 'not a domain'; }), 401, 'issuer_mismatch');
  expectFail(withChange((c) => { delete c.payload.iss; }), 401, 'invalid_token');
  expectFail(withChange((c) => { c.payload.sub = 'mallory@peer.example'; }), 401, 'sender_mismatch');
  expectFail(withChange((c) => { c.payload.sub = 'not-an-address'; }), 401, 'sender_mismatch');
  expectFail(withChange((c) => { delete c.payload.sub; }), 401, 'invalid_token');
  // A user of another provider cannot be vouched for by peer.example.
  expectFail(
    withChange((c) => {
      c.payload.sub = 'eve@evil.example';
      c.message = { from: 'eve@evil.example', to: ['eve@evil.example', 'bob@us.example'] };
    }),
    401,
    'issuer_mismatch',
  );
});

test('validity period: exp required, expiry, nbf, iat and the lifetime bound (with skew)', () => {
  expectFail(withChange((c) => { delete c.payload.exp; }), 401, 'invalid_token');
  expectFail(withChange((c) => { c.payload.exp = String(NOW_S + 10); }), 401, 'invalid_token');
  expectFail(withChange((c) => { c.payload.iat = NOW_S - 200; c.payload.exp = NOW_S - 61; }), 401, 'token_expired');
  expectFail(withChange((c) => { c.payload.iat = NOW_S - 200; c.payload.exp = NOW_S - 60; }), 401, 'token_expired');
  assert.equal(checkFederationClaims(withChange((c) => { c.payload.iat = NOW_S - 200; c.payload.exp = NOW_S - 59; })).ok, true, 'within skew');
  expectFail(withChange((c) => { c.payload.nbf = NOW_S + 61; }), 401, 'token_not_yet_valid');
  assert.equal(checkFederationClaims(withChange((c) => { c.payload.nbf = NOW_S + 59; })).ok, true, 'nbf within skew');
  expectFail(withChange((c) => { c.payload.iat = NOW_S + 61; c.payload.exp = NOW_S + 100; }), 401, 'token_not_yet_valid');
  expectFail(withChange((c) => { c.payload.iat = NOW_S; c.payload.exp = NOW_S + 301; }), 401, 'token_lifetime_too_long');
  assert.equal(checkFederationClaims(withChange((c) => { c.payload.iat = NOW_S; c.payload.exp = NOW_S + 300; })).ok, true);
  expectFail(withChange((c) => { c.payload.nbf = 'soon'; }), 401, 'invalid_token');
});

test('the sender must be a participant and one recipient must be ours (403)', () => {
  expectFail(withChange((c) => { c.message.to = ['bob@us.example']; }), 403, 'sender_not_participant');
  expectFail(withChange((c) => { c.message.to = ['alice@peer.example', 'carol@third.example']; }), 403, 'no_local_recipient');
  expectFail(withChange((c) => { c.message.to = ['alice@peer.example', 'bob@sub.us.example']; }), 403, 'no_local_recipient');
});

test('authentication failures win over authorisation failures', () => {
  expectFail(withChange((c) => { c.payload.aud = 'other.example'; c.message.to = ['alice@peer.example']; }), 401, 'wrong_audience');
});

// ---------------------------------------------------------------------------------------------
// Property tests

const label = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
const peerDomain = fc
  .tuple(label, fc.constantFrom('example', 'org', 'net', 'io'))
  .map(([a, b]) => `${a}.${b}`)
  .filter((d) => d !== OUR);
const local = fc.stringMatching(/^[a-z0-9]{1,10}$/);
const randomCase = (s: string, seed: number) =>
  [...s].map((ch, i) => (((seed >> (i % 30)) & 1) === 1 ? ch.toUpperCase() : ch)).join('');

interface ValidCase {
  input: FederationClaimsInput;
  iss: string;
  sub: string;
}

const validCase: fc.Arbitrary<ValidCase> = fc
  .record({
    domain: peerDomain,
    sender: local,
    locals: fc.array(local, { minLength: 1, maxLength: 3 }),
    others: fc.array(fc.tuple(local, peerDomain), { maxLength: 3 }),
    alg: fc.constantFrom('ES256', 'ES384', 'EdDSA', 'RS256'),
    kid: fc.string({ minLength: 1, maxLength: 40 }),
    skewS: fc.integer({ min: 0, max: 120 }),
    nowS: fc.integer({ min: 1_600_000_000, max: 2_000_000_000 }),
    iatOffset: fc.option(fc.integer({ min: -200, max: 0 }), { nil: undefined }),
    lifetimePick: fc.nat(),
    nbfOffset: fc.option(fc.integer({ min: -300, max: 0 }), { nil: undefined }),
    audArray: fc.boolean(),
    extraAud: fc.array(peerDomain, { maxLength: 2 }),
    jti: fc.option(fc.string({ minLength: 1, maxLength: 40 }), { nil: undefined }),
    caseSeed: fc.integer(),
    shuffleSeed: fc.nat(),
  })
  .map((g) => {
    const sub = `${g.sender}@${g.domain}`;
    const start = g.iatOffset === undefined ? g.nowS : g.nowS + g.iatOffset;
    // exp must be after now − skew and at most 300 s after iat (or now).
    const lo = Math.max(1, g.nowS - g.skewS + 1 - start);
    const lifetime = lo + (g.lifetimePick % (MAX_TOKEN_LIFETIME_S - lo + 1));
    const payload: Record<string, unknown> = { iss: randomCase(g.domain, g.caseSeed), sub: randomCase(sub, g.caseSeed >> 3), exp: start + lifetime };
    if (g.iatOffset !== undefined) payload.iat = start;
    if (g.nbfOffset !== undefined) payload.nbf = g.nowS + g.nbfOffset;
    if (g.jti !== undefined) payload.jti = g.jti;
    const auds = [...g.extraAud, randomCase(OUR, g.caseSeed >> 5)];
    payload.aud = g.audArray || g.extraAud.length > 0 ? auds : auds[auds.length - 1];
    const to = [sub, ...g.locals.map((l) => `${l}@${OUR}`), ...g.others.map(([l, d]) => `${l}@${d}`)];
    // Rotate the recipient list so the sender is not always first.
    const k = g.shuffleSeed % to.length;
    const rotated = [...to.slice(k), ...to.slice(0, k)].map((a, i) => randomCase(a, g.caseSeed >> (i + 7)));
    const input: FederationClaimsInput = {
      header: { alg: g.alg, kid: g.kid },
      payload,
      ourDomain: OUR,
      now: g.nowS * 1000,
      skewMs: g.skewS * 1000,
      message: { from: randomCase(sub, g.caseSeed >> 11), to: rotated },
    };
    return { input, iss: g.domain, sub };
  });

const clone = (c: FederationClaimsInput): FederationClaimsInput => structuredClone(c);

type Mutation = { name: string; status: 401 | 403; error: string; apply: (c: FederationClaimsInput) => void };

const nowS = (c: FederationClaimsInput) => c.now / 1000;
const skewS = (c: FederationClaimsInput) => c.skewMs / 1000;

const mutations: fc.Arbitrary<Mutation>[] = [
  fc.constantFrom('none', 'HS256', 'HS384', 'HS512', 'PS256', 'ES512', '').map((alg) => ({
    name: `alg ${alg}`, status: 401 as const, error: 'invalid_token', apply: (c: FederationClaimsInput) => { c.header.alg = alg; },
  })),
  fc.constantFrom(undefined, '', 0).map((kid) => ({
    name: 'kid', status: 401 as const, error: 'invalid_token', apply: (c: FederationClaimsInput) => { c.header.kid = kid; },
  })),
  peerDomain.map((d) => ({
    name: 'aud', status: 401 as const, error: 'wrong_audience', apply: (c: FederationClaimsInput) => { c.payload.aud = d; },
  })),
  peerDomain.map((d) => ({
    name: 'iss', status: 401 as const, error: 'issuer_mismatch',
    apply: (c: FederationClaimsInput) => {
      if (String(c.payload.iss).toLowerCase() === d) c.payload.iss = `x${d}`;
      else c.payload.iss = d;
    },
  })),
  local.map((l) => ({
    name: 'sub', status: 401 as const, error: 'sender_mismatch',
    apply: (c: FederationClaimsInput) => {
      const sub = String(c.payload.sub);
      const domain = sub.slice(sub.lastIndexOf('@') + 1);
      c.payload.sub = `${l}x${sub.slice(0, sub.lastIndexOf('@'))}@${domain}`;
    },
  })),
  fc.constantFrom('exp missing', 'exp past', 'nbf future', 'iat future', 'too long').map((kind) => ({
    name: kind,
    status: 401 as const,
    error: kind === 'exp missing' ? 'invalid_token' : kind === 'exp past' ? 'token_expired' : kind === 'too long' ? 'token_lifetime_too_long' : 'token_not_yet_valid',
    apply: (c: FederationClaimsInput) => {
      const n = nowS(c);
      const s = skewS(c);
      if (kind === 'exp missing') delete c.payload.exp;
      if (kind === 'exp past') { c.payload.exp = n - s - 1; c.payload.iat = n - s - 100; delete c.payload.nbf; }
      if (kind === 'nbf future') c.payload.nbf = n + s + 1;
      if (kind === 'iat future') { c.payload.iat = n + s + 1; c.payload.exp = n + s + 60; }
      if (kind === 'too long') { c.payload.iat = n; c.payload.exp = n + MAX_TOKEN_LIFETIME_S + 1; }
    },
  })),
  fc.constant({
    name: 'from not in to', status: 403 as const, error: 'sender_not_participant',
    apply: (c: FederationClaimsInput) => { c.message.to = c.message.to.filter((a) => a.toLowerCase() !== c.message.from.toLowerCase()); },
  }),
  fc.constant({
    name: 'no local recipient', status: 403 as const, error: 'no_local_recipient',
    apply: (c: FederationClaimsInput) => { c.message.to = c.message.to.filter((a) => !a.toLowerCase().endsWith(`@${OUR}`)); },
  }),
];

test('property: generated valid claim sets are accepted', () => {
  fc.assert(
    fc.property(validCase, ({ input, iss, sub }) => {
      const r = checkFederationClaims(input);
      assert.equal(r.ok, true, r.ok ? '' : `${r.error}: ${r.message}`);
      if (r.ok) {
        assert.equal(r.iss, iss);
        assert.equal(r.sub, sub);
        assert.equal(r.jti, typeof input.payload.jti === 'string' ? input.payload.jti : null);
      }
    }),
    { numRuns: 500 },
  );
});

test('property: a claim set with one defect is rejected with that defect\'s status and code', () => {
  fc.assert(
    fc.property(validCase, fc.oneof(...mutations), ({ input }, m) => {
      const c = clone(input);
      m.apply(c);
      const r = checkFederationClaims(c);
      assert.equal(r.ok, false, `${m.name} accepted`);
      if (!r.ok) {
        assert.equal(r.status, m.status, `${m.name}: ${r.error}`);
        assert.equal(r.error, m.error, `${m.name}: ${r.message}`);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: several defects → 401 if any is an authentication defect, else 403', () => {
  fc.assert(
    fc.property(validCase, fc.tuple(...mutations).chain((all) => fc.subarray(all, { minLength: 1 })), ({ input }, ms) => {
      const c = clone(input);
      for (const m of ms) m.apply(c);
      const r = checkFederationClaims(c);
      assert.equal(r.ok, false, `${ms.map((m) => m.name).join('+')} accepted`);
      if (!r.ok) assert.equal(r.status, ms.some((m) => m.status === 401) ? 401 : 403, ms.map((m) => m.name).join('+'));
    }),
    { numRuns: 1000 },
  );
});

// --- the early check of a large body (checkTokenWithoutMessage) ----------------------------------

/** The defects only the message shows: the token alone is fine. */
const MESSAGE_DEFECTS = new Set(['sub', 'from not in to', 'no local recipient']);

test('property: without the message, a token defect is refused with its code; defects only the message shows pass', () => {
  fc.assert(
    fc.property(validCase, fc.oneof(...mutations), ({ input }, m) => {
      const c = clone(input);
      m.apply(c);
      const r = checkTokenWithoutMessage(c);
      if (MESSAGE_DEFECTS.has(m.name)) {
        assert.equal(r.ok, true, r.ok ? '' : `${m.name}: ${r.error}`);
      } else {
        assert.equal(r.ok, false, `${m.name} accepted`);
        if (!r.ok) assert.equal(r.error, m.error, `${m.name}: ${r.message}`);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: the check without the message is never stricter than the full check', () => {
  fc.assert(
    fc.property(validCase, fc.tuple(...mutations).chain((all) => fc.subarray(all)), ({ input }, ms) => {
      const c = clone(input);
      for (const m of ms) m.apply(c);
      const alone = checkTokenWithoutMessage(c);
      const full = checkFederationClaims(c);
      if (full.ok) assert.equal(alone.ok, true, ms.map((m) => m.name).join('+'));
      if (!alone.ok) assert.equal(full.ok, false, ms.map((m) => m.name).join('+'));
      if (alone.ok && full.ok) assert.deepEqual(alone, full);
    }),
    { numRuns: 1000 },
  );
});

test('property: arbitrary junk never throws and never passes without our audience', () => {
  fc.assert(
    fc.property(
      fc.record({ alg: fc.anything(), kid: fc.anything() }),
      fc.dictionary(fc.constantFrom('iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'x'), fc.anything()),
      (header, payload) => {
        const r = checkFederationClaims({ header, payload, ourDomain: OUR, now: NOW, skewMs: SKEW, message: { from: 'a@peer.example', to: ['a@peer.example', 'b@us.example'] } });
        if (r.ok) {
          const aud = payload.aud;
          assert.ok(aud === OUR || (Array.isArray(aud) && aud.includes(OUR)));
        }
      },
    ),
    { numRuns: 500 },
  );
});

// --- batch/1 tokens (checkBatchClaims) ----------------------------------------------------------

const BODY_HASH = 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg';

function batchBase(): BatchClaimsInput {
  return {
    header: { alg: 'ES256', kid: 'k1' },
    payload: { iss: 'peer.example', sub: 'peer.example', aud: OUR, iat: NOW_S - 5, exp: NOW_S + 55, jti: 'j1', body_sha256: BODY_HASH },
    ourDomain: OUR,
    now: NOW,
    skewMs: SKEW,
    bodySha256: BODY_HASH,
  };
}

test('batch token: the provider itself (sub = iss), bound to the body, with a jti, is accepted', () => {
  assert.deepEqual(checkBatchClaims(batchBase()), { ok: true, iss: 'peer.example', jti: 'j1', exp: NOW_S + 55, alg: 'ES256', kid: 'k1' });
  const upper = batchBase();
  upper.payload.iss = 'Peer.Example';
  upper.payload.sub = 'PEER.example';
  assert.equal(checkBatchClaims(upper).ok, true);
});

test('batch token: each defect is refused with 401 and its code', () => {
  const cases: Array<[string, (c: BatchClaimsInput) => void]> = [
    ['body_mismatch', (c) => (c.bodySha256 = 'other')],
    ['invalid_token', (c) => delete c.payload.body_sha256],
    ['invalid_token', (c) => (c.payload.body_sha256 = 42)],
    ['invalid_token', (c) => delete c.payload.jti],
    ['issuer_mismatch', (c) => (c.payload.sub = 'alice@peer.example')],
    ['issuer_mismatch', (c) => (c.payload.sub = 'other.example')],
    ['wrong_audience', (c) => (c.payload.aud = 'other.example')],
    ['token_expired', (c) => (c.payload.exp = NOW_S - 120)],
    ['token_lifetime_too_long', (c) => (c.payload.exp = NOW_S + 3600)],
    ['invalid_token', (c) => (c.header.alg = 'HS256')],
    ['invalid_token', (c) => (c.header.alg = 'none')],
  ];
  for (const [error, change] of cases) {
    const c = batchBase();
    change(c);
    const r = checkBatchClaims(c);
    assert.equal(r.ok, false, `${error}: accepted`);
    if (!r.ok) {
      assert.equal(r.status, 401);
      assert.equal(r.error, error, r.message);
    }
  }
});

test('property: a batch token passes only with our audience, the body\'s hash and sub = iss', () => {
  fc.assert(
    fc.property(
      fc.record({ alg: fc.oneof(fc.constantFrom('ES256', 'EdDSA', 'HS256', 'none'), fc.anything()), kid: fc.oneof(fc.constant('k1'), fc.anything()) }),
      fc.dictionary(fc.constantFrom('iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'body_sha256', 'x'), fc.oneof(fc.constantFrom('peer.example', OUR, BODY_HASH, NOW_S + 30, 'j'), fc.anything())),
      fc.constantFrom(BODY_HASH, 'something-else'),
      (header, payload, bodySha256) => {
        const r = checkBatchClaims({ header, payload, ourDomain: OUR, now: NOW, skewMs: SKEW, bodySha256 });
        if (r.ok) {
          assert.ok(payload.aud === OUR || (Array.isArray(payload.aud) && payload.aud.includes(OUR)));
          assert.equal(payload.body_sha256, bodySha256);
          assert.equal(String(payload.sub).toLowerCase(), String(payload.iss).toLowerCase());
          assert.equal(typeof payload.jti, 'string');
        }
      },
    ),
    { numRuns: 1000 },
  );
});
