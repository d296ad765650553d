// Property tests for the address parser (src/protocol/address.ts): it accepts exactly the
// dot-atom local part @ LDH domain addresses, lower-cases them, and never throws.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseAddress, isValidDomain, isValidLocalPart, domainOf, MAX_ADDRESS, MAX_LOCAL_PART } from '../src/protocol/address.js';

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const UPPER = LOWER.toUpperCase();
const DIGITS = '0123456789';
const ALNUM = LOWER + UPPER + DIGITS;
const ATEXT = ALNUM + "!#$%&'*+/=?^_`{|}~-";
const LDH = ALNUM + '-';

/**
 * Independent reference: RFC 5322 dot-atom local part (1..64 chars), LDH domain labels
 * (1..63 chars, no leading/trailing hyphen, not all-numeric top label, at most 253 chars),
 * at most 254 chars in all. Returns the lower-cased address, or null when invalid.
 */
function reference(s: string): string | null {
  if (s.length > 254) return null;
  const at = s.lastIndexOf('@');
  if (at < 0) return null;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  if (local.length < 1 || local.length > 64) return null;
  for (const atom of local.split('.')) {
    if (atom === '') return null;
    for (const c of atom) if (!ATEXT.includes(c)) return null;
  }
  if (domain.length < 1 || domain.length > 253) return null;
  const labels = domain.split('.');
  for (const l of labels) {
    if (l.length < 1 || l.length > 63) return null;
    for (const c of l) if (!LDH.includes(c)) return null;
    if (l.startsWith('-') || l.endsWith('-')) return null;
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return null;
  return `${local}@${domain}`.toLowerCase();
}

const chars = (s: string) => fc.constantFrom(...s.split(''));
const atom = fc.string({ unit: chars(ATEXT), minLength: 1, maxLength: 12 });
const localPart = fc.array(atom, { minLength: 1, maxLength: 4 }).map((a) => a.join('.')).filter((l) => l.length <= MAX_LOCAL_PART);
const label = fc.oneof(
  chars(ALNUM),
  fc.tuple(chars(ALNUM), fc.string({ unit: chars(LDH), maxLength: 20 }), chars(ALNUM)).map(([a, b, c]) => a + b + c),
);
const topLabel = label.filter((l) => !/^\d+$/.test(l));
const domain = fc.tuple(fc.array(label, { maxLength: 3 }), topLabel).map(([ls, t]) => [...ls, t].join('.'));
const validAddress = fc.tuple(localPart, domain).map(([l, d]) => `${l}@${d}`);

/** Characters that make both valid and invalid addresses likely: atext, separators, specials, non-ASCII. */
const fuzzChar = fc.oneof(
  { weight: 6, arbitrary: chars(ALNUM) },
  { weight: 3, arbitrary: chars('.@-') },
  { weight: 2, arbitrary: chars("!#$%&'*+/=?^_`{|}~") },
  { weight: 1, arbitrary: chars(' "(),:;<>[]\\\t\n\u0000\u007f') },
  { weight: 1, arbitrary: chars('éüßÅİıſ\u00a0\u200b\u{1F600}') },
);
const fuzzAddress = fc.string({ unit: fuzzChar, maxLength: 40 });

function randomCase(s: string, mask: boolean[]): string {
  return [...s].map((c, i) => (mask[i % Math.max(1, mask.length)] ? c.toUpperCase() : c.toLowerCase())).join('');
}

describe('parseAddress', () => {
  test('accepts every generated dot-atom@LDH address and lower-cases it', () => {
    fc.assert(
      fc.property(validAddress, (a) => {
        const r = parseAddress(a);
        assert.ok(r.ok, `rejected ${JSON.stringify(a)}: ${!r.ok ? r.reason : ''}`);
        assert.equal(r.address.full, a.toLowerCase());
        assert.equal(r.address.full, `${r.address.local}@${r.address.domain}`);
        assert.equal(r.address.domain, domainOf(r.address.full));
        assert.equal(r.address.local, a.slice(0, a.lastIndexOf('@')).toLowerCase());
      }),
      { numRuns: 2000 },
    );
  });

  test('accepts exactly what the reference grammar accepts (fuzzed near-addresses)', () => {
    fc.assert(
      fc.property(fuzzAddress, (s) => {
        const r = parseAddress(s);
        const expected = reference(s);
        if (expected === null) {
          assert.equal(r.ok, false, `accepted invalid ${JSON.stringify(s)}`);
          if (!r.ok) assert.ok(typeof r.reason === 'string' && r.reason.length > 0);
        } else {
          assert.ok(r.ok, `rejected valid ${JSON.stringify(s)}: ${!r.ok ? r.reason : ''}`);
          assert.equal(r.address.full, expected);
        }
      }),
      { numRuns: 5000 },
    );
  });

  test('accepts exactly what the reference grammar accepts (local@domain built from fuzzed parts)', () => {
    fc.assert(
      fc.property(fc.oneof(localPart, fc.string({ unit: fuzzChar, maxLength: 15 })), fc.oneof(domain, fc.string({ unit: fuzzChar, maxLength: 15 })), (l, d) => {
        const s = `${l}@${d}`;
        const r = parseAddress(s);
        const expected = reference(s);
        assert.equal(r.ok, expected !== null, `${JSON.stringify(s)}: parser ${r.ok ? 'accepted' : 'rejected'}, reference ${expected !== null ? 'accepts' : 'rejects'}`);
        if (r.ok) assert.equal(r.address.full, expected);
      }),
      { numRuns: 5000 },
    );
  });

  test('never throws on arbitrary strings; any accepted result is ASCII lower case and re-parses to itself', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 80 }), fuzzAddress), (s) => {
        const r = parseAddress(s);
        if (r.ok) {
          assert.match(r.address.full, /^[\x21-\x7e]+$/);
          assert.equal(r.address.full, r.address.full.toLowerCase());
          assert.ok(r.address.full.length <= MAX_ADDRESS);
          const again = parseAddress(r.address.full);
          assert.ok(again.ok);
          assert.deepEqual(again.address, r.address);
        } else {
          assert.equal(typeof r.reason, 'string');
        }
      }),
      { numRuns: 3000 },
    );
  });

  test('is case-insensitive: any re-casing of a valid address parses to the same address', () => {
    fc.assert(
      fc.property(validAddress, fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }), (a, mask) => {
        const x = parseAddress(a);
        const y = parseAddress(randomCase(a, mask));
        assert.ok(x.ok && y.ok);
        assert.deepEqual(y.address, x.address);
      }),
      { numRuns: 1000 },
    );
  });

  test('rejects every non-string input', () => {
    fc.assert(
      fc.property(
        fc.anything({ withBoxedValues: true, withMap: true, withSet: true, withNullPrototype: true, withBigInt: true, withDate: true, withTypedArray: true, withSparseArray: true }).filter((v) => typeof v !== 'string'),
        (v) => {
          const r = parseAddress(v);
          assert.equal(r.ok, false);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('length limits: 64-character local part and 254-character address are the maxima', () => {
    const l64 = 'a'.repeat(64);
    assert.ok(parseAddress(`${l64}@example.com`).ok);
    assert.equal(parseAddress(`${'a'.repeat(65)}@example.com`).ok, false);
    const lab63 = 'b'.repeat(63);
    assert.ok(parseAddress(`a@${lab63}.com`).ok);
    assert.equal(parseAddress(`a@${'b'.repeat(64)}.com`).ok, false);
    // 64 + 1 + 189 = 254 characters: the longest address.
    const d189 = `${'c'.repeat(61)}.${'d'.repeat(63)}.${'e'.repeat(63)}`;
    assert.equal(d189.length, 189);
    assert.ok(parseAddress(`${l64}@${d189}`).ok);
    assert.equal(parseAddress(`${l64}@${d189}x`).ok, false);
    assert.equal(parseAddress(`${l64}@${d189}`.toUpperCase()).ok, true);
  });

  test('examples from the protocol and classic invalid forms', () => {
    const ok = parseAddress('Alice@ECorp.COM');
    assert.ok(ok.ok);
    assert.deepEqual(ok.address, { local: 'alice', domain: 'ecorp.com', full: 'alice@ecorp.com' });
    assert.ok(parseAddress('bob@chat.allsafe.io').ok);
    assert.ok(parseAddress('o\'brien+tag@localhost').ok);
    assert.ok(parseAddress('x@a-b.c0').ok);
    for (const bad of [
      '',
      'alice',
      '@ecorp.com',
      'alice@',
      'alice@@ecorp.com',
      'al@ice@ecorp.com',
      'a..b@ecorp.com',
      '.a@ecorp.com',
      'a.@ecorp.com',
      'a b@ecorp.com',
      '"quoted"@ecorp.com',
      'a(comment)@ecorp.com',
      'a@-ecorp.com',
      'a@ecorp-.com',
      'a@ecorp..com',
      'a@ecorp.com.',
      'a@.ecorp.com',
      'a@ecorp_x.com',
      'a@127.0.0.1',
      'a@[127.0.0.1]',
      'a@ecorp.123',
      'a@ecorp.com ',
      ' a@ecorp.com',
      'a@ecorp.com\n',
      'é@ecorp.com',
      'a@écorp.com',
      'a@xn--écorp.com',
      'a\u0000@ecorp.com',
    ]) {
      assert.equal(parseAddress(bad).ok, false, `accepted ${JSON.stringify(bad)}`);
    }
  });

  test('non-ASCII characters whose lower case is ASCII are rejected, not folded (KELVIN SIGN U+212A)', () => {
    // U+212A KELVIN SIGN lower-cases to ASCII "k". It is not atext and not LDH, so an address
    // containing it is invalid; it must not be silently folded into another user's address.
    for (const s of ['\u212Aate@localhost', 'kate@\u212Aa.example', '\u212A@example.com']) {
      const r = parseAddress(s);
      assert.equal(r.ok, false, `accepted ${JSON.stringify(s)} as ${r.ok ? r.address.full : ''}`);
    }
    assert.equal(isValidLocalPart('\u212Aate'), false);
  });
});

describe('isValidDomain / isValidLocalPart', () => {
  test('agree with the reference grammar on generated parts', () => {
    fc.assert(
      // isValidDomain expects lower case input (parseAddress lower-cases first).
      fc.property(fc.oneof(domain, fc.string({ unit: fuzzChar, maxLength: 20 })).map((d) => d.toLowerCase()), (d) => {
        assert.equal(isValidDomain(d), reference(`a@${d}`) !== null, JSON.stringify(d));
      }),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.oneof(localPart, fc.string({ unit: fuzzChar, maxLength: 20 })), (l) => {
        assert.equal(isValidLocalPart(l), reference(`${l}@example.com`) !== null, JSON.stringify(l));
      }),
      { numRuns: 3000 },
    );
  });
});
