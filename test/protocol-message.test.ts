// Property tests for the message validator and timestamp parser (src/protocol/message.ts):
// validateMessage never throws, accepts generated valid messages, and rejects each class of
// invalid field with error "invalid_message"; parseTimestamp accepts exactly real RFC 3339 times.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { validateMessage, parseTimestamp, isValidMediaType, isValidMessageId, deriveMessageId, MAX_ID_LENGTH, type MessageRules } from '../src/protocol/message.js';

const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);
const SKEW = 60_000;
const RULES: MessageRules = { now: NOW, maxRecipients: 1000, skewMs: SKEW, requireSentAt: false, requireId: false };

// ---------------------------------------------------------------------------------------------
// Generators

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';
const ATEXT = ALNUM + "!#$%&'*+/=?^_`{|}~-";
const chars = (s: string) => fc.constantFrom(...s.split(''));

const atom = fc.string({ unit: chars(ATEXT), minLength: 1, maxLength: 8 });
const localPart = fc.array(atom, { minLength: 1, maxLength: 3 }).map((a) => a.join('.'));
const label = fc.oneof(chars(ALNUM), fc.tuple(chars(ALNUM), fc.string({ unit: chars(ALNUM + '-'), maxLength: 8 }), chars(ALNUM)).map(([a, b, c]) => a + b + c));
const domain = fc.tuple(fc.array(label, { maxLength: 2 }), label.filter((l) => !/^\d+$/.test(l))).map(([ls, t]) => [...ls, t].join('.'));
const address = fc.tuple(localPart, domain).map(([l, d]) => `${l}@${d}`);

/** Strings that are certainly not addresses: no "@", empty parts, bad characters, bad labels. */
const invalidAddress = fc.oneof(
  fc.string({ maxLength: 20 }).filter((s) => !s.includes('@')),
  domain.map((d) => `@${d}`),
  localPart.map((l) => `${l}@`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l}..x@${d}`),
  fc.tuple(localPart, domain).map(([l, d]) => `.${l}@${d}`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l} x@${d}`),
  fc.tuple(localPart, domain).map(([l, d]) => `"${l}"@${d}`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l}@-${d}`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l}@${d}..x`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l}@${d}_x`),
  fc.tuple(localPart, fc.nat({ max: 999 })).map(([l, n]) => `${l}@10.0.0.${n}`),
  fc.tuple(localPart, domain).map(([l, d]) => `${l}é@${d}`),
  domain.map((d) => `${'a'.repeat(65)}@${d}`),
  localPart.map((l) => `${l}@${'x'.repeat(64)}.com`),
);

const nonStringNonNull = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.array(fc.jsonValue(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue(), { maxKeys: 3 }),
);
const nonString = fc.oneof(nonStringNonNull, fc.constant(null));

const tokenChar = chars(LOWER + '0123456789!#$&^_.+-');
const mediaToken = fc.tuple(chars(LOWER + '0123456789'), fc.string({ unit: tokenChar, maxLength: 20 })).map(([a, b]) => a + b);
const validMediaType = fc.oneof(
  fc.constantFrom('text/markdown', 'text/html', 'text/plain; charset=utf-8', 'Text/HTML', 'application/json', 'image/png', 'application/vnd.example+xml'),
  fc.tuple(mediaToken, mediaToken).map(([t, s]) => `${t}/${s}`),
);
const invalidMediaType = fc.oneof(
  fc.constantFrom('', 'text', 'text/', '/html', 'markdown', 'text/html/x', 'text html', 'tëxt/html', '!text/html', 'text/ html', 'text/html\n', `text/${'a'.repeat(300)}`),
  fc.string({ unit: chars(LOWER), minLength: 1, maxLength: 12 }), // no slash
);

const validId = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: MAX_ID_LENGTH });

const pastInstant = fc.integer({ min: Date.UTC(1970, 0, 1), max: NOW + SKEW });
const pastSentAt = fc.oneof(
  pastInstant.map((t) => new Date(t).toISOString()),
  pastInstant.map((t) => new Date(t).toISOString().replace(/\.\d+Z$/, 'Z')),
  // The same instant written with a +02:00 offset.
  pastInstant.map((t) => new Date(t + 2 * 3600_000).toISOString().replace(/\.\d+Z$/, '+02:00')),
);

const nonBlank = fc.string({ minLength: 1, maxLength: 200 }).filter((s) => s.trim() !== '');

interface Generated {
  input: Record<string, unknown>;
  participants: string[];
  from: string;
  message: string;
  id?: string;
  sentAt?: string;
  formatted?: { text: string; format: string };
}

const KNOWN = new Set(['to', 'from', 'sentAt', 'message', 'messageFormatted', 'format', 'id', 'room']);

/** A valid message, with re-cased and duplicated recipients, optional fields and unknown extras. */
const validMessage: fc.Arbitrary<Generated> = fc
  .record({
    participants: fc.uniqueArray(address, { minLength: 1, maxLength: 8, selector: (a) => a.toLowerCase() }),
    fromIndex: fc.nat(),
    upper: fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
    dup: fc.boolean(),
    message: nonBlank,
    id: fc.option(validId, { nil: undefined }),
    sentAt: fc.option(pastSentAt, { nil: undefined }),
    formatted: fc.option(fc.record({ text: fc.string({ maxLength: 50 }), format: validMediaType }), { nil: undefined }),
    extra: fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => !KNOWN.has(k) && k !== '__proto__'), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  })
  .map((g) => {
    const to = g.participants.map((p, i) => (g.upper[i % g.upper.length] ? p.toUpperCase() : p));
    if (g.dup) to.push(g.participants[0]!.toUpperCase());
    const from = g.participants[g.fromIndex % g.participants.length]!;
    const input: Record<string, unknown> = { ...g.extra, to, from: g.upper[0] ? from.toUpperCase() : from, message: g.message };
    if (g.id !== undefined) input.id = g.id;
    if (g.sentAt !== undefined) input.sentAt = g.sentAt;
    if (g.formatted !== undefined) {
      input.messageFormatted = g.formatted.text;
      input.format = g.formatted.format;
    }
    return { input, participants: g.participants, from, message: g.message, id: g.id, sentAt: g.sentAt, formatted: g.formatted };
  });

function expectInvalid(input: unknown, rules: MessageRules = RULES, why = ''): void {
  const r = validateMessage(input, rules);
  assert.equal(r.ok, false, `accepted (${why}): ${JSON.stringify(input)?.slice(0, 300)}`);
  if (!r.ok) {
    assert.equal(r.error, 'invalid_message', `${why}: ${r.message}`);
    assert.equal(typeof r.message, 'string');
    assert.ok(r.message.length > 0);
  }
}

// ---------------------------------------------------------------------------------------------

describe('validateMessage', () => {
  test('never throws on arbitrary values and always answers a well-formed result', () => {
    const anything = fc.anything({ withBoxedValues: true, withMap: true, withSet: true, withNullPrototype: true, withBigInt: true, withDate: true, withTypedArray: true, withSparseArray: true, withObjectString: true });
    const fieldy = fc.record(
      { to: fc.oneof(anything, fc.array(fc.oneof(address, anything), { maxLength: 4 })), from: fc.oneof(address, anything), sentAt: fc.oneof(pastSentAt, anything), message: anything, messageFormatted: anything, format: fc.oneof(validMediaType, anything), id: anything, room: anything },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(anything, fc.jsonValue(), fieldy), (v) => {
        const r = validateMessage(v, RULES);
        assert.equal(typeof r.ok, 'boolean');
        if (!r.ok) {
          assert.equal(typeof r.error, 'string');
          assert.equal(typeof r.message, 'string');
          assert.ok(r.message.length > 0);
        } else {
          assert.ok(Array.isArray(r.value.to) && r.value.to.length > 0);
          assert.ok(r.value.to.includes(r.value.from));
          assert.equal(typeof r.value.message, 'string');
        }
      }),
      { numRuns: 3000 },
    );
  });

  test('accepts generated valid messages, normalising participants and keeping the fields', () => {
    fc.assert(
      fc.property(validMessage, (g) => {
        const r = validateMessage(g.input, RULES);
        assert.ok(r.ok, `rejected: ${!r.ok ? r.message : ''} ${JSON.stringify(g.input)}`);
        const canonical = [...new Set(g.participants.map((p) => p.toLowerCase()))].sort();
        assert.deepEqual(r.value.to, canonical);
        assert.equal(r.value.from, g.from.toLowerCase());
        assert.equal(r.value.message, g.message);
        assert.equal(r.value.id, g.id ?? null);
        assert.equal(r.value.sentAt, g.sentAt ?? null);
        assert.equal(r.value.messageFormatted, g.formatted?.text);
        assert.equal(r.value.format, g.formatted?.format);
        // Unknown extra fields are dropped, not errors.
        assert.deepEqual(Object.keys(r.value).sort(), ['from', 'id', 'message', 'sentAt', 'to', ...(g.formatted ? ['format', 'messageFormatted'] : [])].sort());
      }),
      { numRuns: 2000 },
    );
  });

  test('rejects non-object bodies', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue().filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)), fc.constant(undefined)), (v) => expectInvalid(v, RULES, 'non-object')),
      { numRuns: 500 },
    );
  });

  /** Each class of invalid field, applied to an otherwise valid message. */
  const mutations: Array<[string, fc.Arbitrary<(m: Record<string, unknown>) => void>]> = [
    ['to missing', fc.constant((m) => void delete m.to)],
    ['to not an array', fc.oneof(fc.string(), nonString.filter((v) => !Array.isArray(v))).map((v) => (m) => void (m.to = v))],
    ['to empty', fc.constant((m) => void (m.to = []))],
    ['to has an invalid address', fc.tuple(invalidAddress, fc.nat()).map(([bad, i]) => (m) => {
      const to = [...(m.to as string[])];
      to.splice(i % (to.length + 1), 0, bad);
      m.to = to;
    })],
    ['to has a non-string', fc.tuple(nonString, fc.nat()).map(([bad, i]) => (m) => {
      const to = [...(m.to as unknown[])];
      to.splice(i % (to.length + 1), 0, bad);
      m.to = to;
    })],
    ['from not a string', nonString.map((v) => (m) => void (m.from = v))],
    ['from missing', fc.constant((m) => void delete m.from)],
    ['from invalid', invalidAddress.map((v) => (m) => void (m.from = v))],
    ['from not in to', address.map((a) => (m) => void (m.from = `zz-${a}`))],
    ['sentAt not a string', nonString.map((v) => (m) => void (m.sentAt = v))],
    ['sentAt not a date-time', fc.string({ maxLength: 30 }).filter((s) => !/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}/.test(s)).map((v) => (m) => void (m.sentAt = v))],
    ['sentAt without a time zone', pastInstant.map((t) => (m) => void (m.sentAt = new Date(t).toISOString().replace('Z', '')))],
    ['sentAt date only', pastInstant.map((t) => (m) => void (m.sentAt = new Date(t).toISOString().slice(0, 10)))],
    ['sentAt impossible date', fc.tuple(fc.integer({ min: 1971, max: 2023 }), fc.constantFrom([2, 30], [2, 31], [4, 31], [6, 31], [9, 31], [11, 31], [13, 1], [0, 10], [1, 0], [1, 32])).map(([y, [mo, d]]) => (m) => void (m.sentAt = `${y}-${pad(mo!)}-${pad(d!)}T10:00:00Z`))],
    ['sentAt in the future beyond the skew', fc.integer({ min: 1, max: 100 * 365 * 86_400_000 }).map((dt) => (m) => void (m.sentAt = new Date(NOW + SKEW + dt).toISOString()))],
    ['message missing', fc.constant((m) => void delete m.message)],
    ['message not a string', nonString.map((v) => (m) => void (m.message = v))],
    ['message blank (and no messageFormatted)', fc.string({ unit: chars(' \t\n\r\u00a0\u2003'), maxLength: 5 }).map((v) => (m) => {
      m.message = v;
      delete m.messageFormatted;
      delete m.format;
    })],
    ['id not a string', nonStringNonNull.map((v) => (m) => void (m.id = v))],
    ['id empty', fc.constant((m) => void (m.id = ''))],
    ['id too long', fc.integer({ min: MAX_ID_LENGTH + 1, max: 1000 }).map((n) => (m) => void (m.id = 'x'.repeat(n)))],
    ['id with a non-printable or non-ASCII character', fc.tuple(validId, chars(' \t\n\u0000\u007fé€\u{1F600}')).map(([id, c]) => (m) => void (m.id = id.slice(0, 100) + c))],
    ['messageFormatted not a string', nonStringNonNull.map((v) => (m) => {
      m.messageFormatted = v;
      m.format = 'text/markdown';
    })],
    ['messageFormatted without format', fc.string().map((v) => (m) => {
      m.messageFormatted = v;
      delete m.format;
    })],
    ['messageFormatted with a non-string format', fc.tuple(fc.string(), nonString).map(([v, f]) => (m) => {
      m.messageFormatted = v;
      m.format = f;
    })],
    ['messageFormatted with an invalid format', fc.tuple(fc.string(), invalidMediaType).map(([v, f]) => (m) => {
      m.messageFormatted = v;
      m.format = f;
    })],
    ['format without messageFormatted', validMediaType.map((f) => (m) => {
      delete m.messageFormatted;
      m.format = f;
    })],
  ];

  for (const [name, mutation] of mutations) {
    test(`rejects with invalid_message: ${name}`, () => {
      fc.assert(
        fc.property(validMessage, mutation, (g, mutate) => {
          const m = structuredClone(g.input);
          mutate(m);
          expectInvalid(m, RULES, name);
        }),
        { numRuns: 300 },
      );
    });
  }

  test('rejects more recipients than maxRecipients (counted before de-duplication)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 30 }), (max, extra) => {
        const to = Array.from({ length: max + extra }, (_, i) => `u${i % 3}@example.com`);
        expectInvalid({ to, from: 'u0@example.com', message: 'hi' }, { ...RULES, maxRecipients: max }, 'too many');
        const ok = validateMessage({ to: to.slice(0, max), from: 'u0@example.com', message: 'hi' }, { ...RULES, maxRecipients: max });
        assert.ok(ok.ok);
      }),
      { numRuns: 200 },
    );
    const to1001 = Array.from({ length: 1001 }, (_, i) => `u${i}@example.com`);
    expectInvalid({ to: to1001, from: 'u0@example.com', message: 'hi' }, RULES, '1001 recipients');
    assert.ok(validateMessage({ to: to1001.slice(0, 1000), from: 'u0@example.com', message: 'hi' }, RULES).ok);
  });

  test('sentAt up to the clock skew in the future is kept; one millisecond beyond is rejected', () => {
    const base = { to: ['a@x.example'], from: 'a@x.example', message: 'hi' };
    const edge = new Date(NOW + SKEW).toISOString();
    const r = validateMessage({ ...base, sentAt: edge }, RULES);
    assert.ok(r.ok);
    assert.equal(r.value.sentAt, edge);
    expectInvalid({ ...base, sentAt: new Date(NOW + SKEW + 1).toISOString() }, RULES, 'future');
  });

  test('requireSentAt / requireId reject absent fields; null id and null messageFormatted count as absent', () => {
    const base = { to: ['a@x.example'], from: 'a@x.example', message: 'hi' };
    expectInvalid(base, { ...RULES, requireSentAt: true }, 'sentAt required');
    expectInvalid(base, { ...RULES, requireId: true }, 'id required');
    const r = validateMessage({ ...base, id: null, messageFormatted: null, format: null }, RULES);
    assert.ok(r.ok);
    assert.equal(r.value.id, null);
    assert.equal(r.value.sentAt, null);
    assert.equal(r.value.messageFormatted, undefined);
  });

  test('the protocol example validates', () => {
    const r = validateMessage(
      { to: ['alice@ecorp.com', 'bob@chat.allsafe.io'], from: 'alice@ecorp.com', sentAt: '2016-09-05T15:45:39Z', message: 'Where are you?', messageFormatted: 'Where _are_ you?', format: 'text/markdown' },
      RULES,
    );
    assert.ok(r.ok);
    assert.deepEqual(r.value, { id: null, from: 'alice@ecorp.com', to: ['alice@ecorp.com', 'bob@chat.allsafe.io'], sentAt: '2016-09-05T15:45:39Z', message: 'Where are you?', messageFormatted: 'Where _are_ you?', format: 'text/markdown' });
  });
});

// ---------------------------------------------------------------------------------------------

function pad(n: number, w = 2): string {
  return String(n).padStart(w, '0');
}
function isLeap(y: number): boolean {
  return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
}
function daysIn(y: number, mo: number): number {
  return [31, isLeap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1]!;
}
/** Epoch ms of a proleptic-Gregorian UTC date-time, valid for years 0..9999. */
function utc(y: number, mo: number, d: number, h: number, mi: number, s: number, ms: number): number {
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d);
  date.setUTCHours(h, mi, s, ms);
  return date.getTime();
}

const dateTime = fc
  .record({
    y: fc.integer({ min: 1, max: 9999 }),
    mo: fc.integer({ min: 1, max: 12 }),
    dRaw: fc.integer({ min: 1, max: 31 }),
    h: fc.integer({ min: 0, max: 23 }),
    mi: fc.integer({ min: 0, max: 59 }),
    s: fc.integer({ min: 0, max: 59 }),
    frac: fc.option(fc.string({ unit: chars('0123456789'), minLength: 1, maxLength: 9 }), { nil: undefined }),
    sep: fc.constantFrom('T', 't', ' '),
    zone: fc.oneof(fc.constantFrom('Z', 'z'), fc.record({ sign: fc.constantFrom(1, -1), oh: fc.integer({ min: 0, max: 23 }), om: fc.integer({ min: 0, max: 59 }) })),
  })
  .map((r) => ({ ...r, d: ((r.dRaw - 1) % daysIn(r.y, r.mo)) + 1 }));

describe('parseTimestamp', () => {
  test('accepts every real RFC 3339 date-time and returns its instant', () => {
    fc.assert(
      fc.property(dateTime, (t) => {
        const zone = typeof t.zone === 'string' ? t.zone : `${t.zone.sign > 0 ? '+' : '-'}${pad(t.zone.oh)}:${pad(t.zone.om)}`;
        const s = `${pad(t.y, 4)}-${pad(t.mo)}-${pad(t.d)}${t.sep}${pad(t.h)}:${pad(t.mi)}:${pad(t.s)}${t.frac !== undefined ? '.' + t.frac : ''}${zone}`;
        const ms = t.frac !== undefined ? Math.floor(Number(`0.${t.frac}`) * 1000) : 0;
        const offset = typeof t.zone === 'string' ? 0 : t.zone.sign * (t.zone.oh * 60 + t.zone.om) * 60_000;
        const expected = utc(t.y, t.mo, t.d, t.h, t.mi, t.s, ms) - offset;
        const got = parseTimestamp(s);
        assert.notEqual(got, null, `rejected ${s}`);
        // Sub-millisecond digits may be truncated or rounded.
        assert.ok(Math.abs(got! - expected) <= 1, `${s}: got ${got}, expected ${expected}`);
      }),
      { numRuns: 3000 },
    );
  });

  test('rejects impossible calendar dates and out-of-range fields', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9999 }),
        fc.integer({ min: 1, max: 12 }),
        fc.constantFrom('day', 'month', 'hour', 'minute', 'second', 'offsetHour', 'offsetMinute'),
        fc.integer({ min: 0, max: 60 }),
        (y, mo, which, k) => {
          let d = 1;
          let month = mo;
          let h = 12;
          let mi = 0;
          let s = 0;
          let zone = 'Z';
          if (which === 'day') d = daysIn(y, mo) + 1 + (k % (99 - daysIn(y, mo)));
          if (which === 'month') month = k % 2 === 0 ? 0 : 13 + (k % 87);
          if (which === 'hour') h = 24 + (k % 76);
          if (which === 'minute') mi = 60 + (k % 40);
          if (which === 'second') s = 61 + (k % 39);
          if (which === 'offsetHour') zone = `+${pad(24 + (k % 76))}:00`;
          if (which === 'offsetMinute') zone = `-01:${pad(60 + (k % 40))}`;
          const str = `${pad(y, 4)}-${pad(month)}-${pad(d)}T${pad(h)}:${pad(mi)}:${pad(s)}${zone}`;
          assert.equal(parseTimestamp(str), null, `accepted ${str}`);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('rejects impossible dates such as 2023-02-30 and 2023-02-29, accepts 2024-02-29 and 2000-02-29', () => {
    for (const s of ['2023-02-30T00:00:00Z', '2023-02-29T00:00:00Z', '1900-02-29T00:00:00Z', '2023-04-31T12:00:00Z', '2023-13-01T00:00:00Z', '2023-00-10T00:00:00Z', '2023-01-00T00:00:00Z']) {
      assert.equal(parseTimestamp(s), null, s);
    }
    assert.equal(parseTimestamp('2024-02-29T00:00:00Z'), Date.UTC(2024, 1, 29));
    assert.equal(parseTimestamp('2000-02-29T00:00:00Z'), Date.UTC(2000, 1, 29));
    assert.equal(parseTimestamp('2016-09-05T15:45:39Z'), Date.UTC(2016, 8, 5, 15, 45, 39));
    assert.equal(parseTimestamp('2016-09-05T17:45:39+02:00'), Date.UTC(2016, 8, 5, 15, 45, 39));
  });

  test('year 0000 is a leap year in the proleptic Gregorian calendar: 0000-02-29 is a real date', () => {
    // RFC 3339 date-fullyear is any 4DIGIT; 0000 is divisible by 400, so February has 29 days.
    assert.notEqual(parseTimestamp('0000-02-28T00:00:00Z'), null);
    assert.notEqual(parseTimestamp('0000-03-01T00:00:00Z'), null);
    assert.equal(parseTimestamp('0000-02-29T00:00:00Z'), utc(0, 2, 29, 0, 0, 0, 0));
  });

  test('rejects strings that are not full date-times with a zone, and never throws', () => {
    for (const s of ['', '2016-09-05', '2016-09-05T15:45:39', '2016-09-05T15:45Z', '16-09-05T15:45:39Z', '2016-9-5T15:45:39Z', '2016-09-05T15:45:39.Z', '2016-09-05T15:45:39.1234567890Z', '2016-09-05T15:45:39+0200', '2016-09-05T15:45:39+02', 'Mon, 05 Sep 2016 15:45:39 GMT', '1473090339', ' 2016-09-05T15:45:39Z', '2016-09-05T15:45:39Z ', '2016-09-05X15:45:39Z']) {
      assert.equal(parseTimestamp(s), null, JSON.stringify(s));
    }
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: chars('0123456789-:TZ+. tz'), maxLength: 30 })), (s) => {
        const t = parseTimestamp(s);
        assert.ok(t === null || Number.isFinite(t));
        if (t !== null) assert.match(s, /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('media types, ids, derived ids', () => {
  test('isValidMediaType accepts type/subtype tokens and rejects malformed ones', () => {
    fc.assert(fc.property(validMediaType, (t) => assert.ok(isValidMediaType(t), t)), { numRuns: 1000 });
    fc.assert(fc.property(invalidMediaType, (t) => assert.equal(isValidMediaType(t), false, JSON.stringify(t))), { numRuns: 1000 });
  });

  test('isValidMessageId: exactly 1..128 printable ASCII characters', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 140 }), (s) => {
        const expected = s.length >= 1 && s.length <= MAX_ID_LENGTH && /^[\x21-\x7e]+$/.test(s);
        assert.equal(isValidMessageId(s), expected, JSON.stringify(s));
      }),
      { numRuns: 2000 },
    );
    fc.assert(fc.property(validId, (s) => assert.ok(isValidMessageId(s))), { numRuns: 500 });
  });

  test('deriveMessageId is stable under recipient order and distinguishes different texts', () => {
    fc.assert(
      fc.property(fc.uniqueArray(address, { minLength: 1, maxLength: 6 }), fc.string(), fc.string(), (to, a, b) => {
        const m = { from: to[0]!, sentAt: '2016-09-05T15:45:39Z', to, message: a };
        const id = deriveMessageId(m);
        assert.equal(deriveMessageId({ ...m, to: [...to].reverse() }), id);
        assert.ok(isValidMessageId(id));
        if (a !== b) assert.notEqual(deriveMessageId({ ...m, message: b }), id);
      }),
      { numRuns: 500 },
    );
  });
});
