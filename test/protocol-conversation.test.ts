// Property tests for conversation identity (src/protocol/conversation.ts): canonical participant
// sets, conversation ids, and the reference history path segment (base64url JSON array).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { canonicalParticipants, conversationId, CONVERSATION_ID, decodeParticipantsSegment, encodeParticipantsSegment } from '../src/protocol/conversation.js';
import { parseAddress } from '../src/protocol/address.js';

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';
const ATEXT = ALNUM + "!#$%&'*+/=?^_`{|}~-";
const chars = (s: string) => fc.constantFrom(...s.split(''));
const atom = fc.string({ unit: chars(ATEXT), minLength: 1, maxLength: 8 });
const localPart = fc.array(atom, { minLength: 1, maxLength: 3 }).map((a) => a.join('.'));
const label = fc.oneof(chars(ALNUM), fc.tuple(chars(ALNUM), fc.string({ unit: chars(ALNUM + '-'), maxLength: 8 }), chars(ALNUM)).map(([a, b, c]) => a + b + c));
const domain = fc.tuple(fc.array(label, { maxLength: 2 }), label.filter((l) => !/^\d+$/.test(l))).map(([ls, t]) => [...ls, t].join('.'));
const address = fc.tuple(localPart, domain).map(([l, d]) => `${l}@${d}`);
/** Addresses in mixed case, as clients may send them. */
const addresses = fc.array(address, { minLength: 1, maxLength: 12 });

const MAX = 1000;

function isSortedStrict(xs: readonly string[]): boolean {
  for (let i = 1; i < xs.length; i++) if (!(xs[i - 1]! < xs[i]!)) return false;
  return true;
}

function recase(xs: string[], mask: boolean[]): string[] {
  return xs.map((x, i) => (mask[i % mask.length] ? x.toUpperCase() : x.toLowerCase()));
}

const permutation = <T>(xs: T[]) => fc.shuffledSubarray(xs, { minLength: xs.length, maxLength: xs.length });

describe('canonicalParticipants', () => {
  test('is lower case, strictly sorted, de-duplicated and contains exactly the lower-cased inputs', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(address, fc.string({ maxLength: 10 })), { maxLength: 20 }), (xs) => {
        const c = canonicalParticipants(xs);
        assert.ok(isSortedStrict(c), JSON.stringify(c));
        assert.deepEqual(new Set(c), new Set(xs.map((x) => x.toLowerCase())));
        for (const x of c) assert.equal(x, x.toLowerCase());
      }),
      { numRuns: 2000 },
    );
  });

  test('is idempotent', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(address, fc.string({ maxLength: 10 })), { maxLength: 20 }), (xs) => {
        const c = canonicalParticipants(xs);
        assert.deepEqual(canonicalParticipants(c), c);
      }),
      { numRuns: 2000 },
    );
  });

  test('ignores order, case and repetition', () => {
    fc.assert(
      fc.property(
        addresses.chain((xs) => fc.tuple(fc.constant(xs), permutation(xs), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 }), fc.array(fc.nat({ max: xs.length - 1 }), { maxLength: 5 }))),
        ([xs, perm, mask, dupIdx]) => {
          const variant = [...recase(perm, mask), ...dupIdx.map((i) => xs[i]!.toUpperCase())];
          assert.deepEqual(canonicalParticipants(variant), canonicalParticipants(xs));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('conversationId', () => {
  test('is "c" + base64url(SHA-256(participants joined by newline)) over the canonical set', () => {
    fc.assert(
      fc.property(addresses, (xs) => {
        const c = canonicalParticipants(xs);
        const expected = 'c' + createHash('sha256').update(c.join('\n'), 'utf8').digest('base64url');
        const id = conversationId(c);
        assert.equal(id, expected);
        assert.match(id, CONVERSATION_ID);
      }),
      { numRuns: 1000 },
    );
  });

  test('is stable under permutation and re-casing of the participants', () => {
    fc.assert(
      fc.property(
        addresses.chain((xs) => fc.tuple(fc.constant(xs), permutation(xs), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 }))),
        ([xs, perm, mask]) => {
          assert.equal(conversationId(canonicalParticipants(recase(perm, mask))), conversationId(canonicalParticipants(xs)));
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('differs for different participant sets', () => {
    fc.assert(
      fc.property(addresses, addresses, (a, b) => {
        const ca = canonicalParticipants(a);
        const cb = canonicalParticipants(b);
        fc.pre(JSON.stringify(ca) !== JSON.stringify(cb));
        assert.notEqual(conversationId(ca), conversationId(cb));
      }),
      { numRuns: 1000 },
    );
    // A set is not confused with a one-element "set" containing the joined text.
    assert.notEqual(conversationId(['a@x.example', 'b@x.example']), conversationId(['a@x.example b@x.example']));
  });
});

function pad(b64: string): string {
  return b64 + '='.repeat((4 - (b64.length % 4)) % 4);
}
function toStandard(b64url: string): string {
  return pad(b64url.replace(/-/g, '+').replace(/_/g, '/'));
}
const b64url = (bytes: Uint8Array | string) => Buffer.from(bytes).toString('base64url');

describe('decodeParticipantsSegment', () => {
  test('round-trips encodeParticipantsSegment: unpadded, padded and standard base64', () => {
    fc.assert(
      fc.property(addresses, fc.constantFrom('plain', 'padded', 'standard', 'standard-unpadded'), (xs, form) => {
        const seg0 = encodeParticipantsSegment(xs);
        assert.match(seg0, /^[A-Za-z0-9_-]*$/);
        const seg = form === 'plain' ? seg0 : form === 'padded' ? pad(seg0) : form === 'standard' ? toStandard(seg0) : toStandard(seg0).replace(/=+$/, '');
        const r = decodeParticipantsSegment(seg, MAX);
        assert.ok(r.ok, `${form} ${seg}: ${!r.ok ? r.reason : ''}`);
        assert.deepEqual(r.participants, canonicalParticipants(xs));
        for (const p of r.participants) assert.deepEqual(parseAddress(p).ok, true);
      }),
      { numRuns: 2000 },
    );
  });

  test('decoding the same set in any order and case yields the same conversation', () => {
    fc.assert(
      fc.property(
        addresses.chain((xs) => fc.tuple(fc.constant(xs), permutation(xs), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 }))),
        ([xs, perm, mask]) => {
          const a = decodeParticipantsSegment(encodeParticipantsSegment(xs), MAX);
          const b = decodeParticipantsSegment(encodeParticipantsSegment(recase(perm, mask)), MAX);
          assert.ok(a.ok && b.ok);
          assert.equal(conversationId(b.participants), conversationId(a.participants));
        },
      ),
      { numRuns: 500 },
    );
  });

  test('never throws on arbitrary strings; anything accepted is a canonical list of valid addresses', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: chars('ABCxyz019-_+/='), maxLength: 60 }), fc.base64String({ maxLength: 80 })), (s) => {
        const r = decodeParticipantsSegment(s, MAX);
        if (r.ok) {
          assert.ok(r.participants.length > 0);
          assert.deepEqual(canonicalParticipants(r.participants), r.participants);
          for (const p of r.participants) {
            const pa = parseAddress(p);
            assert.ok(pa.ok && pa.address.full === p);
          }
        } else {
          assert.equal(typeof r.reason, 'string');
          assert.ok(r.reason.length > 0);
        }
      }),
      { numRuns: 3000 },
    );
  });

  test('rejects characters outside the base64 alphabets', () => {
    const outside = fc.constantFrom(...'!"#$%&\'()*,.:;<>?@[\\]^`{|}~ \t\n\u00e9\u{1F600}'.split(''));
    fc.assert(
      fc.property(addresses, outside, fc.nat(), (xs, c, i) => {
        const seg = encodeParticipantsSegment(xs);
        const at = i % (seg.length + 1);
        const bad = seg.slice(0, at) + c + seg.slice(at);
        assert.equal(decodeParticipantsSegment(bad, MAX).ok, false, bad);
      }),
      { numRuns: 1000 },
    );
  });

  test('rejects misplaced or excess padding, and impossible lengths', () => {
    fc.assert(
      fc.property(addresses, fc.nat(), (xs, i) => {
        const seg = encodeParticipantsSegment(xs);
        const at = i % seg.length; // strictly inside: padding in the middle
        assert.equal(decodeParticipantsSegment(seg.slice(0, at) + '=' + seg.slice(at), MAX).ok, false);
        assert.equal(decodeParticipantsSegment(seg + '===', MAX).ok, false);
        assert.equal(decodeParticipantsSegment('=' + seg, MAX).ok, false);
      }),
      { numRuns: 500 },
    );
    // 4k+1 base64 characters cannot encode whole bytes.
    fc.assert(
      fc.property(fc.string({ unit: chars(ALNUM + '-_'), minLength: 1, maxLength: 81 }).filter((x) => x.length % 4 === 1), fc.constantFrom('', '=', '=='), (x, p) => {
        assert.equal(decodeParticipantsSegment(x + p, MAX).ok, false, x + p);
      }),
      { numRuns: 500 },
    );
    assert.equal(decodeParticipantsSegment('A', MAX).ok, false);
    assert.equal(decodeParticipantsSegment('AAAAA', MAX).ok, false);
  });

  test('rejects empty and over-long segments', () => {
    assert.equal(decodeParticipantsSegment('', MAX).ok, false);
    assert.equal(decodeParticipantsSegment('=', MAX).ok, false);
    assert.equal(decodeParticipantsSegment('==', MAX).ok, false);
    assert.equal(decodeParticipantsSegment('A'.repeat(200_001), MAX).ok, false);
  });

  test('rejects base64 of non-JSON, invalid UTF-8, and JSON that is not a non-empty array of addresses', () => {
    const notJson = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    });
    const notArray = fc.jsonValue().filter((v) => !Array.isArray(v));
    const invalidEntry = fc.oneof(
      fc.string({ maxLength: 10 }).filter((s) => !parseAddress(s).ok),
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.string(), { maxKeys: 2 })),
    );
    const badArray = fc.tuple(fc.array(address, { maxLength: 4 }), invalidEntry, fc.nat()).map(([xs, bad, i]) => {
      const out: unknown[] = [...xs];
      out.splice(i % (xs.length + 1), 0, bad);
      return out;
    });
    // Bytes that are never valid UTF-8 anywhere in a sequence.
    const invalidUtf8 = fc.tuple(fc.constantFrom([0xff], [0xfe], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x80], [0xf5, 0x80, 0x80, 0x80], [0xe2, 0x82]), fc.nat({ max: 3 })).map(([bad, i]) => {
      const json = Buffer.from(JSON.stringify(['alice@ecorp.com']));
      const at = 2 + (i % 3); // inside the string
      return new Uint8Array([...json.subarray(0, at), ...bad, ...json.subarray(at)]);
    });

    fc.assert(
      fc.property(
        fc.oneof(
          notJson.map((s) => ['not JSON', b64url(s)] as const),
          notArray.map((v) => ['not an array', b64url(JSON.stringify(v))] as const),
          fc.constant(['empty array', b64url('[]')] as const),
          badArray.map((v) => ['bad entry', b64url(JSON.stringify(v))] as const),
          invalidUtf8.map((bytes) => ['invalid UTF-8', b64url(bytes)] as const),
        ),
        ([why, seg]) => {
          const r = decodeParticipantsSegment(seg, MAX);
          assert.equal(r.ok, false, `${why}: ${seg} accepted`);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('rejects more than maxParticipants entries', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 10 }), (max, extra) => {
        const xs = Array.from({ length: max + extra }, (_, i) => `u${i}@x.example`);
        assert.equal(decodeParticipantsSegment(encodeParticipantsSegment(xs), max).ok, false);
        const ok = decodeParticipantsSegment(encodeParticipantsSegment(xs.slice(0, max)), max);
        assert.ok(ok.ok);
        assert.equal(ok.participants.length, max);
      }),
      { numRuns: 200 },
    );
  });

  test('the reference example: base64url of ["alice@ecorp.com","bob@chat.allsafe.io"]', () => {
    const seg = Buffer.from('["bob@chat.allsafe.io","Alice@ECorp.com"]').toString('base64');
    const r = decodeParticipantsSegment(seg, MAX);
    assert.ok(r.ok);
    assert.deepEqual(r.participants, ['alice@ecorp.com', 'bob@chat.allsafe.io']);
  });
});
