// Property tests for the rich/1 extension's pure functions (src/protocol/rich.ts, docs/protocol.md):
// validateRich / validateReference / validateAttachment / isValidReaction never throw, accept
// generated valid objects (normalising them), and reject each class of invalid field with
// error "invalid_rich"; plainFallback is always a readable line a seed-000 provider can show.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  validateRich,
  validateReference,
  validateAttachment,
  isValidReaction,
  plainFallback,
  RICH_KINDS,
  REFERENCING,
  MAX_TEXT,
  MAX_NAME,
  MAX_ATTACHMENTS,
  type Rich,
  type RichKind,
  type AttachmentRef,
} from '../src/protocol/rich.js';
import { MAX_ID_LENGTH } from '../src/protocol/message.js';

// ---------------------------------------------------------------------------------------------
// Generators

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';
const chars = (s: string) => fc.constantFrom(...s.split(''));

const label = fc.tuple(chars(LOWER), fc.string({ unit: chars(LOWER + '0123456789'), maxLength: 6 })).map(([a, b]) => a + b);
const address = fc.tuple(fc.string({ unit: chars(ALNUM + '._-'), minLength: 1, maxLength: 10 }).filter((l) => !l.startsWith('.') && !l.endsWith('.') && !l.includes('..')), label, label).map(([l, d, t]) => `${l}@${d}.${t}`);
const messageId = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: MAX_ID_LENGTH });
const kind = fc.constantFrom(...RICH_KINDS);
const EMOJI = ['👍', '❤', '❤️', '😂', '🎉', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇩🇪', '✔', '🤷‍♀️', '1️⃣', '🫠', 'a', 'é', '😀'];
const emoji = fc.constantFrom(...EMOJI);
const hex64 = fc.string({ unit: chars('0123456789abcdef'), minLength: 64, maxLength: 64 });
const fileName = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => s.trim() !== '' && !/[\p{Cc}/\\]/u.test(s));
const mediaType = fc.constantFrom('image/png', 'application/pdf', 'text/plain; charset=utf-8', 'application/octet-stream', 'video/mp4', 'application/vnd.example+json');
const url = fc.tuple(fc.constantFrom('http', 'https'), label, label, fc.string({ unit: chars(ALNUM + '/-_.%?=&'), maxLength: 40 })).map(([s, d, t, p]) => `${s}://${d}.${t}/${p}`);

/** Text a user might type: any Unicode, newlines included. */
const anyText = fc.string({ unit: 'grapheme', maxLength: 200 });

const reference = fc.record({ id: messageId, sender: address, type: kind, text: fc.option(anyText, { nil: null }) }, { noNullPrototype: true });
const attachment: fc.Arbitrary<AttachmentRef> = fc.record({ id: hex64, name: fileName, mediaType, size: fc.nat({ max: 5 * 1024 * 1024 * 1024 }), url }, { noNullPrototype: true });

/** A valid rich object of each kind, with unknown extra members. */
const validRich: fc.Arbitrary<{ input: Record<string, unknown>; type: RichKind }> = fc
  .record({
    type: kind,
    omitType: fc.boolean(),
    text: fc.option(anyText, { nil: undefined }),
    reference,
    emoji,
    remove: fc.option(fc.boolean(), { nil: undefined }),
    name: fc.string({ maxLength: MAX_NAME }).filter((s) => !/\p{Cc}/u.test(s)),
    attachments: fc.option(fc.array(attachment, { maxLength: MAX_ATTACHMENTS }), { nil: undefined }),
    extra: fc.dictionary(fc.constantFrom('x', 'client', 'v', 'zz'), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 2 }),
  })
  .map((g) => {
    const input: Record<string, unknown> = { ...g.extra };
    if (!(g.type === 'content' && g.omitType)) input.type = g.type;
    if (g.type === 'content' || g.type === 'reply' || g.type === 'edit') {
      if (g.text !== undefined) input.text = g.text;
    }
    if (REFERENCING.has(g.type)) input.reference = g.reference;
    if (g.type === 'reaction') input.reaction = g.remove === undefined ? { emoji: g.emoji } : { emoji: g.emoji, remove: g.remove };
    if (g.type === 'property') input.property = { name: 'displayName', value: g.name };
    if ((g.type === 'content' || g.type === 'reply') && g.attachments !== undefined) input.attachments = g.attachments;
    return { input, type: g.type };
  });

const anything = fc.anything({ withBoxedValues: true, withMap: true, withSet: true, withNullPrototype: true, withBigInt: true, withDate: true, withTypedArray: true, withSparseArray: true });
const nonString = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 2 }), fc.dictionary(fc.string({ maxLength: 3 }), fc.jsonValue(), { maxKeys: 2 }));
const nonObject = fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 2 }));

function expectInvalid(r: { ok: boolean; error?: string; message?: string }, why: string, input: unknown): void {
  assert.equal(r.ok, false, `accepted (${why}): ${safeJson(input)}`);
  assert.equal(r.error, 'invalid_rich', why);
  assert.ok(typeof r.message === 'string' && r.message.startsWith('rich.'), `${why}: ${r.message}`);
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v)?.slice(0, 300) ?? String(v);
  } catch {
    return String(v);
  }
}

// ---------------------------------------------------------------------------------------------

describe('validateRich and its parts never throw', () => {
  test('on arbitrary values, and on objects with arbitrary rich-looking members', () => {
    const fieldy = fc.record(
      {
        type: fc.oneof(kind, anything),
        text: fc.oneof(anyText, anything),
        reference: fc.oneof(reference, anything, fc.record({ id: anything, sender: anything, type: anything, text: anything }, { requiredKeys: [] })),
        reaction: fc.oneof(anything, fc.record({ emoji: fc.oneof(emoji, anything), remove: anything }, { requiredKeys: [] })),
        property: fc.oneof(anything, fc.record({ name: fc.oneof(fc.constant('displayName'), anything), value: anything }, { requiredKeys: [] })),
        attachments: fc.oneof(anything, fc.array(fc.oneof(attachment, anything, fc.record({ id: fc.oneof(hex64, anything), name: anything, mediaType: anything, size: anything, url: anything }, { requiredKeys: [] })), { maxLength: 12 })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(anything, fc.jsonValue(), fieldy), fc.nat({ max: 20 }), (v, i) => {
        for (const r of [validateRich(v), validateReference(v), validateAttachment(v, i)]) {
          assert.equal(typeof r.ok, 'boolean');
          if (!r.ok) {
            assert.equal(r.error, 'invalid_rich');
            assert.ok(r.message.startsWith('rich.'));
          }
        }
        assert.equal(typeof isValidReaction(v), 'boolean');
      }),
      { numRuns: 3000 },
    );
  });
});

describe('validateRich accepts valid objects', () => {
  test('every kind, normalised: defaults filled, extras dropped, sender lower-cased', () => {
    fc.assert(
      fc.property(validRich, ({ input, type }) => {
        const r = validateRich(input);
        assert.ok(r.ok, `rejected: ${!r.ok ? r.message : ''} ${safeJson(input)}`);
        const v = r.value;
        assert.equal(v.type, type);
        const allowed = new Set(['type', 'text', 'reference', 'reaction', 'property', 'attachments']);
        for (const k of Object.keys(v)) assert.ok(allowed.has(k), `unexpected member ${k}`);
        if (REFERENCING.has(type)) {
          const ref = input.reference as { id: string; sender: string; type: RichKind; text: string | null };
          assert.deepEqual(v.reference, { id: ref.id, sender: ref.sender.toLowerCase(), type: ref.type, text: ref.text });
        } else {
          assert.equal(v.reference, undefined);
        }
        if (type === 'content' || type === 'reply' || type === 'edit') assert.equal(v.text, input.text);
        else assert.equal(v.text, undefined);
        if (type === 'reaction') {
          const re = input.reaction as { emoji: string; remove?: boolean };
          assert.deepEqual(v.reaction, re.remove ? { emoji: re.emoji, remove: true } : { emoji: re.emoji });
        }
        if (type === 'property') assert.deepEqual(v.property, { name: 'displayName', value: (input.property as { value: string }).value.trim() });
        const files = input.attachments as AttachmentRef[] | undefined;
        assert.deepEqual(v.attachments, files && files.length > 0 ? files : undefined);
      }),
      { numRuns: 2000 },
    );
  });

  test('an absent type means content, and a reference type defaults to content', () => {
    const r = validateRich({ text: 'hi' });
    assert.ok(r.ok);
    assert.equal(r.value.type, 'content');
    const ref = validateReference({ id: 'm1', sender: 'Alice@Example.com' });
    assert.ok(ref.ok);
    assert.deepEqual(ref.value, { id: 'm1', sender: 'alice@example.com', type: 'content', text: null });
  });

  test('validateAttachment accepts generated attachments unchanged', () => {
    fc.assert(
      fc.property(attachment, fc.nat({ max: 9 }), (a, i) => {
        const r = validateAttachment(a, i);
        assert.ok(r.ok, !r.ok ? r.message : '');
        assert.deepEqual(r.value, a);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('validateRich rejects each class of invalid field', () => {
  test('not an object', () => {
    fc.assert(fc.property(nonObject, (v) => expectInvalid(validateRich(v), 'non-object', v)), { numRuns: 300 });
  });

  const byKind = (k: RichKind) => validRich.filter((g) => g.type === k);
  const referencing = validRich.filter((g) => REFERENCING.has(g.type));
  const texty = validRich.filter((g) => g.type === 'content' || g.type === 'reply' || g.type === 'edit');
  const filed = validRich.filter((g) => g.type === 'content' || g.type === 'reply');

  const invalidId = fc.oneof(fc.constant(''), fc.constant('a'.repeat(MAX_ID_LENGTH + 1)), fc.constant('has space'), fc.constant('tab\there'), fc.constant('é'), nonString);
  const invalidSender = fc.oneof(fc.constant(''), fc.constant('nobody'), fc.constant('@example.com'), fc.constant('a@'), fc.constant('a b@example.com'), fc.constant('ä@example.com'), nonString);
  const badEmoji = fc.oneof(
    fc.constant(''),
    fc.constant(' '),
    fc.constant('👍👍'),
    fc.constant('ab'),
    fc.constant('👍 '),
    fc.constant('\u0000'),
    fc.constant('\n'),
    fc.constant('\u00a0'),
    fc.constant('a'.repeat(33)),
    fc.tuple(emoji, emoji).map(([a, b]) => a + b),
    nonString,
  );
  const badFile: Array<[string, fc.Arbitrary<(a: Record<string, unknown>) => void>]> = [
    ['attachment id not hex', fc.oneof(fc.constant(''), fc.constant('A'.repeat(64)), fc.constant('g'.repeat(64)), hex64.map((h) => h.slice(1)), hex64.map((h) => h + '0'), nonString).map((v) => (a) => void (a.id = v))],
    ['attachment name invalid', fc.oneof(fc.constant(''), fc.constant('   '), fc.constant('a/b'), fc.constant('..\\x'), fc.constant('a\nb'), fc.constant('x'.repeat(256)), nonString).map((v) => (a) => void (a.name = v))],
    ['attachment mediaType invalid', fc.oneof(fc.constant(''), fc.constant('image'), fc.constant('image/'), fc.constant(' image/png'), fc.constant('image png'), nonString).map((v) => (a) => void (a.mediaType = v))],
    ['attachment size invalid', fc.oneof(fc.constant(-1), fc.constant(1.5), fc.constant(Number.NaN), fc.constant(Infinity), fc.constant(2 ** 53), fc.constant('10'), fc.constant(null)).map((v) => (a) => void (a.size = v))],
    ['attachment url invalid', fc.oneof(fc.constant('ftp://x.example/a'), fc.constant('javascript:alert(1)'), fc.constant('/relative'), fc.constant('https://x.example/a b'), fc.constant('https://'), fc.constant(`https://x.example/${'a'.repeat(2048)}`), fc.constant('data:text/plain,x'), nonString).map((v) => (a) => void (a.url = v))],
  ];

  const mutations: Array<[string, fc.Arbitrary<{ input: Record<string, unknown>; type: RichKind }>, fc.Arbitrary<(m: Record<string, unknown>) => void>]> = [
    ['type unknown', validRich, fc.oneof(fc.constantFrom('thread', 'Content', 'CONTENT', '', 'react', 'receipt'), nonString.filter((v) => v !== null)).map((v) => (m) => void (m.type = v))],
    ['reference missing', referencing, fc.constant((m) => void delete m.reference)],
    ['reference not an object', referencing, nonObject.map((v) => (m) => void (m.reference = v))],
    ['reference.id invalid', referencing, invalidId.map((v) => (m) => void (m.reference = { ...(m.reference as object), id: v }))],
    ['reference.sender invalid', referencing, invalidSender.map((v) => (m) => void (m.reference = { ...(m.reference as object), sender: v }))],
    ['reference.type invalid', referencing, fc.oneof(fc.constantFrom('thread', 'Reply', ''), fc.integer()).map((v) => (m) => void (m.reference = { ...(m.reference as object), type: v }))],
    ['reference.text not a string', referencing, nonString.filter((v) => v !== null).map((v) => (m) => void (m.reference = { ...(m.reference as object), text: v }))],
    ['reference.text too long', referencing, fc.constant((m) => void (m.reference = { ...(m.reference as object), text: 'x'.repeat(MAX_TEXT + 1) }))],
    ['reference on content', byKind('content'), reference.map((ref) => (m) => void (m.reference = ref))],
    ['reference on property', byKind('property'), reference.map((ref) => (m) => void (m.reference = ref))],
    ['text not a string', texty, nonString.map((v) => (m) => void (m.text = v))],
    ['text too long', texty, fc.constant((m) => void (m.text = 'x'.repeat(MAX_TEXT + 1)))],
    ['reaction missing', byKind('reaction'), fc.constant((m) => void delete m.reaction)],
    ['reaction not an object', byKind('reaction'), nonObject.filter((v) => !Array.isArray(v)).map((v) => (m) => void (m.reaction = v))],
    ['reaction.emoji invalid', byKind('reaction'), badEmoji.map((v) => (m) => void (m.reaction = { emoji: v }))],
    ['reaction.remove not a boolean', byKind('reaction'), fc.oneof(fc.constantFrom('true', 1, 0, 'yes'), fc.constant(null)).map((v) => (m) => void (m.reaction = { ...(m.reaction as object), remove: v }))],
    ['property missing', byKind('property'), fc.constant((m) => void delete m.property)],
    ['property not an object', byKind('property'), nonObject.map((v) => (m) => void (m.property = v))],
    ['property.name not displayName', byKind('property'), fc.oneof(fc.constantFrom('title', 'DisplayName', 'name', ''), nonString).map((v) => (m) => void (m.property = { ...(m.property as object), name: v }))],
    ['property.value not a string', byKind('property'), nonString.map((v) => (m) => void (m.property = { name: 'displayName', value: v }))],
    ['property.value too long', byKind('property'), fc.constant((m) => void (m.property = { name: 'displayName', value: 'n'.repeat(MAX_NAME + 1) }))],
    ['property.value has control characters', byKind('property'), fc.tuple(fc.string({ maxLength: 10 }), fc.integer({ min: 0, max: 0x1f }), fc.string({ maxLength: 10 })).map(([a, c, b]) => (m) => void (m.property = { name: 'displayName', value: (a + String.fromCharCode(c) + b).slice(0, MAX_NAME) }))],
    ['attachments on a kind that takes none', validRich.filter((g) => g.type !== 'content' && g.type !== 'reply'), fc.array(attachment, { minLength: 0, maxLength: 2 }).map((v) => (m) => void (m.attachments = v))],
    ['attachments not an array', filed, nonObject.filter((v) => !Array.isArray(v)).map((v) => (m) => void (m.attachments = v))],
    ['too many attachments', filed, fc.array(attachment, { minLength: MAX_ATTACHMENTS + 1, maxLength: MAX_ATTACHMENTS + 3 }).map((v) => (m) => void (m.attachments = v))],
    ['an attachment not an object', filed, fc.tuple(fc.array(attachment, { maxLength: 3 }), nonObject, fc.nat()).map(([list, bad, i]) => (m) => {
      const l: unknown[] = [...list];
      l.splice(i % (l.length + 1), 0, bad);
      m.attachments = l;
    })],
    ...badFile.map(([why, mut]): [string, fc.Arbitrary<{ input: Record<string, unknown>; type: RichKind }>, fc.Arbitrary<(m: Record<string, unknown>) => void>] => [
      why,
      filed,
      fc.tuple(fc.array(attachment, { minLength: 1, maxLength: 3 }), mut, fc.nat()).map(([list, f, i]) => (m) => {
        const l = list.map((a) => ({ ...a }) as Record<string, unknown>);
        f(l[i % l.length]!);
        m.attachments = l;
      }),
    ]),
  ];

  for (const [why, base, mutation] of mutations) {
    test(why, () => {
      fc.assert(
        fc.property(base, mutation, ({ input }, mutate) => {
          const m = structuredClone(input);
          mutate(m);
          expectInvalid(validateRich(m), why, m);
        }),
        { numRuns: 200 },
      );
    });
  }

  test('validateAttachment names the failing index', () => {
    const r = validateAttachment({ id: 'nope' }, 7);
    assert.ok(!r.ok && r.message.includes('attachments[7]'));
  });
});

describe('isValidReaction', () => {
  test('accepts one grapheme: emoji with modifiers, ZWJ sequences, flags, keycaps', () => {
    for (const e of EMOJI) assert.ok(isValidReaction(e), e);
  });

  test('accepts exactly the strings that are one grapheme without control or space characters', () => {
    const seg = new Intl.Segmenter(undefined, { granularity: 'grapheme' });
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 3 }), fc.string({ maxLength: 4 }), fc.string({ unit: 'binary', maxLength: 3 })), (s) => {
        const one = [...seg.segment(s)].length === 1;
        const expected = one && s.length <= 32 && !/[\p{Cc}\p{Z}]/u.test(s);
        assert.equal(isValidReaction(s), expected, JSON.stringify(s));
      }),
      { numRuns: 3000 },
    );
  });

  test('rejects non-strings', () => {
    fc.assert(fc.property(nonString, (v) => assert.equal(isValidReaction(v), false)), { numRuns: 300 });
  });
});

// ---------------------------------------------------------------------------------------------
// plainFallback: what a provider that knows only seed 000 shows

/** Text without newlines, braces or the word "rich", so anything like that in a fallback came from plainFallback itself. */
const lineText = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 120 }).filter((s) => s.trim() !== '' && !/[\r\n\u2028\u2029\u0085{}]/.test(s) && !/rich/i.test(s));

const validForFallback: fc.Arbitrary<Rich> = fc
  .record({
    type: kind,
    text: lineText,
    ref: fc.record({ id: messageId, sender: address, type: kind, text: fc.option(fc.string({ unit: 'grapheme', maxLength: 300 }).filter((s) => !/[{}]/.test(s) && !/rich/i.test(s)), { nil: null }) }),
    emoji,
    remove: fc.boolean(),
    name: fc.string({ unit: 'grapheme', maxLength: 60 }).filter((s) => !/[{}]/.test(s) && !/rich/i.test(s)),
  })
  .map((g) => {
    const v = validateRich({
      type: g.type,
      text: g.text,
      ...(REFERENCING.has(g.type) ? { reference: g.ref } : {}),
      ...(g.type === 'reaction' ? { reaction: { emoji: g.emoji, remove: g.remove } } : {}),
      ...(g.type === 'property' ? { property: { name: 'displayName', value: g.name } } : {}),
    });
    return v.ok ? v.value : null;
  })
  .filter((r): r is Rich => r !== null);

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('plainFallback', () => {
  test('is a non-empty, single, readable line without JSON braces or the word "rich"', () => {
    fc.assert(
      fc.property(validForFallback, (rich) => {
        const s = plainFallback(rich);
        assert.equal(typeof s, 'string');
        assert.ok(s.trim().length > 0, `empty fallback for ${safeJson(rich)}`);
        assert.ok(!/[\r\n\u2028\u2029\u0085]/.test(s), `not one line: ${JSON.stringify(s)} for ${safeJson(rich)}`);
        assert.ok(!/[{}]/.test(s), `braces in ${JSON.stringify(s)}`);
        assert.ok(!/rich/i.test(s), `"rich" in ${JSON.stringify(s)}`);
        assert.ok(!LONE_SURROGATE.test(s), `lone surrogate in ${JSON.stringify(s)}`);
      }),
      { numRuns: 3000 },
    );
  });

  test('the exact formats of each kind', () => {
    const ref = { id: 'm1', sender: 'alice@ecorp.example', type: 'content' as const, text: 'Where are you?' };
    assert.equal(plainFallback({ type: 'content', text: 'Hello' }), 'Hello');
    assert.equal(plainFallback({ type: 'reply', text: 'At home.', reference: ref }), '↩ “Where are you?”: At home.');
    assert.equal(plainFallback({ type: 'reply', text: 'At home.', reference: { ...ref, text: null } }), '↩ a message: At home.');
    assert.equal(plainFallback({ type: 'reaction', reaction: { emoji: '❤' }, reference: ref }), '❤ to “Where are you?”');
    assert.equal(plainFallback({ type: 'reaction', reaction: { emoji: '❤', remove: true }, reference: ref }), '(withdrew ❤ from “Where are you?”)');
    assert.equal(plainFallback({ type: 'edit', text: 'Where are you now?', reference: ref }), '✎ Where are you now?');
    assert.equal(plainFallback({ type: 'delete', reference: { ...ref, text: null } }), '🗑 (deleted a message)');
    assert.equal(plainFallback({ type: 'property', property: { name: 'displayName', value: 'Weekend' } }), '✎ named the conversation “Weekend”');
    assert.equal(plainFallback({ type: 'property', property: { name: 'displayName', value: '' } }), '✎ removed the conversation name');
    const file: AttachmentRef = { id: 'a'.repeat(64), name: 'plan.pdf', mediaType: 'application/pdf', size: 2_500_000, url: 'https://ecorp.example/attachments/' + 'a'.repeat(64) };
    assert.equal(plainFallback({ type: 'content', text: 'the plan', attachments: [file] }), `the plan\n📎 plan.pdf (2.4 MB): ${file.url}`);
    assert.equal(plainFallback({ type: 'content', text: '', attachments: [{ ...file, size: 900 }] }), `📎 plan.pdf (900 B): ${file.url}`);
    assert.equal(plainFallback({ type: 'content', text: '', attachments: [{ ...file, size: 4096 }] }, () => 'https://cap.example/x'), '📎 plan.pdf (4 KB): https://cap.example/x');
  });

  test('quotes are collapsed to one line and clipped to 60 characters', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 0, maxLength: 400 }), emoji, fc.constantFrom<RichKind>('reply', 'reaction'), (text, e, type) => {
        const reference = { id: 'm', sender: 'a@b.example', type: 'content' as const, text };
        const rich: Rich = type === 'reply' ? { type, text: 'ok', reference } : { type, reaction: { emoji: e }, reference };
        const s = plainFallback(rich);
        const [head, tail] = type === 'reply' ? ['↩ “', '”: ok'] : [`${e} to “`, '”'];
        assert.ok(s.startsWith(head) && s.endsWith(tail), `unexpected form: ${JSON.stringify(s)}`);
        const quoted = s.slice(head.length, s.length - tail.length);
        assert.ok(!LONE_SURROGATE.test(quoted), `clipping split a character: ${JSON.stringify(quoted)}`);
        assert.ok(!/[\r\n\t\u2028\u2029]/.test(quoted), `quote spans lines: ${JSON.stringify(quoted)}`);
        const collapsed = text.replace(/\s+/g, ' ').trim();
        if (collapsed.length <= 60) assert.equal(quoted, collapsed);
        else {
          assert.ok(quoted.endsWith('…'), 'a clipped quote ends with an ellipsis');
          assert.ok(quoted.length <= 61 && quoted.length >= 60);
          assert.ok(collapsed.startsWith(quoted.slice(0, -1)));
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('clipping never splits a surrogate pair (astral characters at the cut)', () => {
    for (const text of ['a' + '😀'.repeat(40), '😀'.repeat(40), 'ab' + '𝒳'.repeat(59)]) {
      const s = plainFallback({ type: 'reaction', reaction: { emoji: '👍' }, reference: { id: 'm', sender: 'a@b.example', type: 'content', text } });
      assert.ok(!LONE_SURROGATE.test(s), JSON.stringify(s));
      assert.ok(s.endsWith('…”'));
    }
  });

  test('a conversation name cannot break the line (U+2028, U+2029, control characters)', () => {
    for (const value of ['Team\u2028evil', 'Team\u2029evil', 'Team\nevil', 'Team\u0085evil', 'Team\revil']) {
      expectInvalid(validateRich({ type: 'property', property: { name: 'displayName', value } }), 'line break in a name', value);
    }
  });

  test('never throws and always answers a string, for every valid rich object', () => {
    fc.assert(
      fc.property(validRich, ({ input }) => {
        const r = validateRich(input);
        assert.ok(r.ok);
        const s = plainFallback(r.value);
        assert.equal(typeof s, 'string');
        if (r.value.type !== 'content') assert.ok(s.trim().length > 0, `empty fallback for ${safeJson(input)}`);
      }),
      { numRuns: 2000 },
    );
  });
});
