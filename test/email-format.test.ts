// The e-mail bridge's chat-mail format (src/bridges/email/mime-out.ts, mime-in.ts, docs/email.md):
// buildChatMail → parseChatMail round-trips every action kind, in groups and 1:1, with arbitrary
// Unicode text and attachments; parseChatMail never throws on arbitrary or mutated bytes and keeps
// every header it returns bounded; and real mails (chatmail/core test data, test/fixtures/email/)
// parse field by field as Delta Chat reads them.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { buildChatMail, defaultSubject, groupIdFor, isValidGroupId, messageIdFor, escapeFooterMarks, HIDDEN_QUOTE } from '../src/bridges/email/mime-out.js';
import { parseChatMail, simplifyText, unescapeFooterMarks, MAX_ID, MAX_GROUP_NAME, MAX_RECIPIENTS, type ParseOptions } from '../src/bridges/email/mime-in.js';
import type { ChatAction, IncomingChatMail, MailFile, OutgoingChatMail, ParsedMail } from '../src/bridges/email/model.js';

// Fixtures live in the source tree; this file runs from dist/test/.
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/email/', import.meta.url));
const fixture = (name: string) => readFileSync(FIXTURES + name);

const OPTS: ParseOptions = { maxBytes: 1024 * 1024, ourDomains: ['bridge.example'] };

async function chat(raw: Buffer, o: ParseOptions = OPTS): Promise<IncomingChatMail> {
  const p = await parseChatMail(raw, o);
  assert.equal(p.kind, 'chat', p.kind === 'rejected' ? p.reason : p.kind);
  return (p as Extract<ParsedMail, { kind: 'chat' }>).mail;
}

async function rejected(raw: Buffer | string, o: ParseOptions = OPTS): Promise<string> {
  const p = await parseChatMail(Buffer.isBuffer(raw) ? raw : Buffer.from(raw), o);
  assert.equal(p.kind, 'rejected');
  return (p as Extract<ParsedMail, { kind: 'rejected' }>).reason;
}

const mail = (headers: string, body = 'hello') => Buffer.from(`${headers.trim().replace(/\n/g, '\r\n')}\r\n\r\n${body}`);

// ---------------------------------------------------------------------------------------------
// Generators

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const chars = (s: string) => fc.constantFrom(...s.split(''));
const label = fc.tuple(chars(LOWER), fc.string({ unit: chars(LOWER + '0123456789'), maxLength: 6 })).map(([a, b]) => a + b);
const domain = fc.tuple(label, label).map(([d, t]) => `${d}.${t}`);
const address = fc.tuple(fc.string({ unit: chars(LOWER + '0123456789._-'), minLength: 1, maxLength: 10 }).filter((l) => /^[a-z0-9_-](?:[a-z0-9._-]*[a-z0-9_-])?$/.test(l) && !l.includes('..')), domain).map(([l, d]) => `${l}@${d}`);
/** Display names with the characters that need quoting or encoding in a header. */
const displayName = fc.option(fc.string({ unit: fc.constantFrom('A', 'z', ' ', 'ä', 'Ж', '😀', '"', ',', "'", '(', '.', '\\', 'é'), minLength: 1, maxLength: 20 }).map((s) => s.trim()).filter((s) => s !== ''), { nil: undefined });
const mailId = fc.tuple(fc.string({ unit: chars(LOWER + 'ABCXYZ0123456789.-_$+'), minLength: 1, maxLength: 30 }), domain).map(([l, d]) => `${l}@${d}`);
/** A user's text: any Unicode, with the lines that look like quotes and signatures mixed in. */
const line = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.constantFrom('> looks like a quote', '>', '-- ', '--', '-- not a signature', '---', '', '   ', 'On Monday, Bob wrote:') },
);
const userText = fc.array(line, { maxLength: 8 }).map((ls) => ls.join('\n')).filter((t) => !t.includes('-\u200B-') && !t.startsWith('\uFEFF'));
const oneLineName = fc.string({ unit: fc.constantFrom('G', 'r', 'u', 'p', ' ', 'ü', '日', '🎉', '-', '"', ':'), minLength: 1, maxLength: 40 }).map((s) => s.trim()).filter((s) => s !== '');
const EMOJI = ['👍', '❤️', '😂', '🎉', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇩🇪', '🫠', ''];
const fileName = fc.string({ unit: fc.constantFrom('a', 'B', '1', ' ', '.', '-', 'ö', '🙂', '(', ')'), minLength: 1, maxLength: 30 }).map((s) => s.trim()).filter((s) => s !== '' && s !== '.' && s !== '..');
// application/octet-stream is left out: mailparser replaces it with a type guessed from the name.
const mediaType = fc.constantFrom('image/png', 'image/jpeg', 'application/pdf', 'text/plain', 'audio/ogg', 'video/mp4', 'application/vnd.example+json');
const file: fc.Arbitrary<MailFile> = fc.record({ name: fileName, mediaType, content: fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)) }, { noNullPrototype: true });
const files = fc.array(file, { maxLength: 3 });

const action: fc.Arbitrary<ChatAction> = fc.oneof(
  fc.record({ type: fc.constant('content' as const), text: userText, attachments: files }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('reply' as const), text: userText, target: mailId, quote: fc.option(userText, { nil: null }), attachments: files }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('edit' as const), text: userText, target: mailId }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('delete' as const), target: mailId }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('reaction' as const), emoji: fc.constantFrom(...EMOJI), target: mailId }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('receipt' as const), target: mailId }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('rename' as const), name: oneLineName, previous: fc.option(oneLineName, { nil: null }) }, { noNullPrototype: true }),
  fc.record({ type: fc.constant('member' as const), change: fc.constantFrom('added' as const, 'removed' as const), member: address, text: fc.oneof(fc.constant(''), userText) }, { noNullPrototype: true }),
);

const outgoing: fc.Arbitrary<OutgoingChatMail> = fc
  .record({
    from: fc.record({ address, name: displayName }, { requiredKeys: ['address'], noNullPrototype: true }),
    to: fc.uniqueArray(fc.record({ address, name: displayName }, { requiredKeys: ['address'], noNullPrototype: true }), { minLength: 1, maxLength: 4, selector: (a) => a.address }),
    seed: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    date: fc.integer({ min: 946684800, max: 4102444800 }).map((s) => new Date(s * 1000)),
    conversation: fc.string({ unit: chars('abcXYZ0189_-'), minLength: 43, maxLength: 43 }).map((s) => `c${s}`),
    groupName: fc.option(oneLineName, { nil: null }),
    action,
    references: fc.uniqueArray(mailId, { maxLength: 5 }),
    autocrypt: fc.option(fc.uint8Array({ minLength: 1, maxLength: 400 }).map((u) => Buffer.from(u).toString('base64')), { nil: undefined }),
  }, { noNullPrototype: true })
  .map((r) => {
    const needsGroup = r.action.type === 'rename' || r.action.type === 'member';
    const to = r.to.filter((t) => t.address !== r.from.address);
    return {
      from: r.from,
      to: to.length > 0 ? to : [{ address: `other.${r.from.address}` }],
      messageId: messageIdFor(r.from.address.split('@')[1]!, r.seed),
      date: r.date,
      group: r.groupName !== null || needsGroup ? { id: groupIdFor(r.conversation), name: r.groupName ?? 'Group' } : null,
      action: r.action,
      references: r.references,
      ...(r.autocrypt ? { autocrypt: `addr=${r.from.address}; prefer-encrypt=mutual; keydata=${r.autocrypt}` } : {}),
    };
  });

// ---------------------------------------------------------------------------------------------
// What a text looks like after the trip: line breaks are LF, and blank lines at either end go
// (mail clients and Delta Chat do not keep them either). Everything else must survive.

const blank = (l: string) => l.trim() === '';
function norm(t: string): string {
  const lines = t.replace(/\r\n?/g, '\n').split('\n');
  while (lines.length > 0 && blank(lines[0]!)) lines.shift();
  while (lines.length > 0 && blank(lines[lines.length - 1]!)) lines.pop();
  return lines.join('\n');
}

function expectedAction(a: ChatAction, groupName: string | null): ChatAction {
  switch (a.type) {
    case 'content':
      return { ...a, text: norm(a.text) };
    case 'reply': {
      const q = a.quote === null ? null : norm(a.quote);
      return { ...a, text: norm(a.text), quote: q === HIDDEN_QUOTE ? null : q };
    }
    case 'edit':
      return { ...a, text: norm(a.text) };
    case 'member':
      return { ...a, text: a.text === '' ? `Member ${a.member} was ${a.change}.` : norm(a.text) };
    case 'rename': {
      // An unknown old name goes out as the group's name (or the new one) and reads back as null when equal.
      const p = a.previous || (groupName !== a.name ? groupName : null);
      return { ...a, previous: p === a.name ? null : p };
    }
    default:
      return a;
  }
}

const uniq = <T>(xs: T[]) => [...new Set(xs)];

describe('buildChatMail → parseChatMail', () => {
  test('every action kind survives the trip, group and 1:1, with the headers Delta Chat reads', async () => {
    await fc.assert(
      fc.asyncProperty(outgoing, async (m) => {
        const raw = await buildChatMail(m);
        const got = await chat(raw);
        const a = m.action;
        assert.deepEqual(got.action, expectedAction(a, m.group?.name ?? null));
        assert.equal(got.messageId, m.messageId);
        assert.equal(got.from.address, m.from.address);
        assert.equal(got.from.name, m.from.name);
        assert.deepEqual(got.recipients.map((r) => r.address), m.to.map((t) => t.address));
        assert.deepEqual(got.recipients.map((r) => r.name), m.to.map((t) => t.name));
        assert.equal(got.date?.getTime(), m.date.getTime());
        assert.equal(got.isChat, true);
        assert.equal(got.encrypted, false);
        assert.equal(got.automated, false, 'receipts too: they are read although Auto-Submitted');
        // Receipts carry no group headers and no thread (as Delta Chat's render_mdn).
        if (a.type === 'receipt') {
          assert.equal(got.group, null);
          assert.deepEqual(got.references, []);
          assert.equal(got.inReplyTo, null);
        } else {
          const name = a.type === 'rename' ? a.name : m.group?.name;
          assert.deepEqual(got.group, m.group ? { id: m.group.id, name } : null);
          const target = 'target' in a && a.type !== 'delete' ? a.target : null;
          const refs = uniq(m.references.filter((r) => r !== target));
          if (target) refs.push(target);
          assert.deepEqual(got.references, refs.slice(-20));
          assert.equal(got.inReplyTo, refs[refs.length - 1] ?? null);
        }
        // Receipts go without Autocrypt, as Delta Chat's (chatmail servers let them through unencrypted).
        assert.deepEqual(got.autocrypt, m.autocrypt && a.type !== 'receipt' ? { addr: m.from.address, keydata: m.autocrypt.split('keydata=')[1], preferEncrypt: 'mutual' } : null);
        // Delta Chat asks for receipts only on what a user wrote.
        assert.equal(/^Chat-Disposition-Notification-To: /im.test(raw.toString('latin1')), a.type === 'content' || a.type === 'reply');
      }),
      { numRuns: 150 },
    );
  });

  test('a user text that starts with ">" is not taken for a quote; "-- " lines are not signatures', async () => {
    const m: OutgoingChatMail = {
      from: { address: 'alice@example.org' },
      to: [{ address: 'bob@example.net' }],
      messageId: messageIdFor('example.org'),
      date: new Date('2026-12-07T09:00:00Z'),
      group: null,
      action: { type: 'content', text: '> not a quote\n\n-- \nnot a signature\n--\nstill text', attachments: [] },
      references: [],
    };
    const raw = await buildChatMail(m);
    assert.match(raw.toString(), /=E2=80=8B|\u200B/, 'the dashes are escaped on the wire');
    const got = await chat(raw);
    assert.deepEqual(got.action, { type: 'content', text: '> not a quote\n\n-- \nnot a signature\n--\nstill text', attachments: [] });
    // The escaping is Delta Chat's: its unescape (and ours) gives back the text.
    assert.equal(unescapeFooterMarks(escapeFooterMarks('-- a\n--\nb')), '-- a\n--\nb');
  });

  test('a reply whose quote is unknown says "> ..." as Delta Chat does, and reads back as quote null', async () => {
    const m: OutgoingChatMail = {
      from: { address: 'alice@example.org', name: 'Alice' },
      to: [{ address: 'bob@example.net' }],
      messageId: messageIdFor('example.org'),
      date: new Date('2026-12-07T09:00:00Z'),
      group: null,
      action: { type: 'reply', text: 'yes', target: 'orig@example.net', quote: null, attachments: [] },
      references: [],
    };
    const raw = (await buildChatMail(m)).toString();
    assert.match(raw, /\r\n\r\n> \.\.\.\r\n\r\nyes/);
    assert.match(raw, /^Subject: Re: Message from Alice\r$/m);
    assert.match(raw, /^In-Reply-To: <orig@example\.net>\r$/m);
    assert.deepEqual((await chat(Buffer.from(raw))).action, { type: 'reply', text: 'yes', target: 'orig@example.net', quote: null, attachments: [] });
  });

  test('headers as Delta Chat writes them: Chat-Version, Chat-Edit/-Delete, reaction disposition, MDN report', async () => {
    const base = { from: { address: 'alice@example.org', name: 'Alice' }, to: [{ address: 'bob@example.net' }], messageId: 'x1@example.org', date: new Date('2026-12-07T09:00:00Z'), references: [] };
    const group = { id: groupIdFor(`c${'a'.repeat(43)}`), name: 'Team' };
    const text = async (m: OutgoingChatMail) => (await buildChatMail(m)).toString();
    const edit = await text({ ...base, group, action: { type: 'edit', text: 'fixed', target: 'o@example.org' } });
    assert.match(edit, /^Chat-Version: 1\.0\r$/m);
    assert.match(edit, /^Chat-Edit: <o@example\.org>\r$/m);
    assert.match(edit, new RegExp(`^Chat-Group-ID: ${group.id}\r$`, 'm'));
    assert.match(edit, /^Chat-Group-Name: Team\r$/m);
    assert.match(edit, /^Subject: Re: Team\r$/m);
    assert.match(edit, /=E2=9C=8F=EF=B8=8Ffixed|✏️fixed/);
    const del = await text({ ...base, group: null, action: { type: 'delete', target: 'o@example.org' } });
    assert.match(del, /^Chat-Delete: <o@example\.org>\r$/m);
    assert.match(del, /^Subject: Message from Alice\r$/m);
    const reaction = await text({ ...base, group: null, action: { type: 'reaction', emoji: '👍', target: 'o@example.org' } });
    assert.match(reaction, /^Content-Disposition: reaction\r$/m);
    assert.match(reaction, /^In-Reply-To: <o@example\.org>\r$/m);
    const mdn = await text({ ...base, group, action: { type: 'receipt', target: 'o@example.org' } });
    assert.match(mdn, /^Content-Type: multipart\/report; report-type=disposition-notification;/m);
    assert.match(mdn, /^Content-Type: message\/disposition-notification\r$/m);
    assert.match(mdn, /^Original-Message-ID: <o@example\.org>\r$/m);
    assert.match(mdn, /^Final-Recipient: rfc822;alice@example\.org\r$/m);
    assert.match(mdn, /^Disposition: manual-action\/MDN-sent-automatically; displayed\r$/m);
    assert.match(mdn, /^Auto-Submitted: auto-replied\r$/m);
    assert.match(mdn, /^Subject: Receipt Notification\r$/m);
    assert.doesNotMatch(mdn, /Chat-Group-ID/);
    const rename = await text({ ...base, group, action: { type: 'rename', name: 'Neu', previous: 'Team' } });
    assert.match(rename, /^Chat-Group-Name: Neu\r$/m);
    assert.match(rename, /^Chat-Group-Name-Changed: Team\r$/m);
    const added = await text({ ...base, group, action: { type: 'member', change: 'added', member: 'Carol@Example.com', text: '' } });
    assert.match(added, /^Chat-Group-Member-Added: carol@example\.com\r$/m);
    assert.match(added, /Member carol@example\.com was added\./);
    const alone = await text({ ...base, to: [], group: null, action: { type: 'content', text: 'note to self', attachments: [] } });
    assert.match(alone, /^To: "hidden-recipients":;\r$/m);
    assert.deepEqual((await chat(Buffer.from(alone))).recipients, []);
    await assert.rejects(buildChatMail({ ...base, group: null, action: { type: 'rename', name: 'x' } }), TypeError);
    await assert.rejects(buildChatMail({ ...base, messageId: '<bad id>', group: null, action: { type: 'content', text: '', attachments: [] } }), TypeError);
  });

  test('defaultSubject follows Delta Chat: group name, "Message from <name>", "Re: " once threaded', () => {
    const from = { address: 'alice@example.org', name: 'Alice' };
    const content: ChatAction = { type: 'content', text: '', attachments: [] };
    assert.equal(defaultSubject({ from, group: null, action: content, references: [] }), 'Message from Alice');
    assert.equal(defaultSubject({ from: { address: 'a@b.c' }, group: null, action: content, references: [] }), 'Message from a@b.c');
    assert.equal(defaultSubject({ from, group: null, action: content, references: ['x@y'] }), 'Re: Message from Alice');
    assert.equal(defaultSubject({ from, group: { id: 'abcdefghijk', name: 'Team' }, action: content, references: [] }), 'Team');
    assert.equal(defaultSubject({ from, group: { id: 'abcdefghijk', name: 'Team' }, action: { type: 'reaction', emoji: '👍', target: 'x@y' }, references: [] }), 'Re: Team');
  });
});

describe('ids', () => {
  test('groupIdFor is stable, distinct per conversation and passes Delta Chat validate_id', () => {
    fc.assert(
      fc.property(fc.string({ unit: chars('abcXYZ0189_-'), minLength: 43, maxLength: 43 }), fc.string({ unit: chars('abcXYZ0189_-'), minLength: 43, maxLength: 43 }), (a, b) => {
        const ga = groupIdFor(`c${a}`);
        assert.ok(isValidGroupId(ga) && /^[A-Za-z0-9_-]{24}$/.test(ga));
        assert.equal(groupIdFor(`c${a}`), ga);
        if (a !== b) assert.notEqual(groupIdFor(`c${b}`), ga);
      }),
      { numRuns: 100 },
    );
    assert.ok(!isValidGroupId('short') && !isValidGroupId('a'.repeat(33)) && !isValidGroupId('has space!!x') && isValidGroupId('WVnDtF5azch'));
  });

  test('messageIdFor: <uuid v4>@domain, deterministic with a seed', () => {
    const seed = new Uint8Array(16).fill(0xff);
    assert.equal(messageIdFor('Example.ORG', seed), 'ffffffff-ffff-4fff-bfff-ffffffffffff@example.org');
    const a = messageIdFor('example.org');
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}@example\.org$/);
    assert.notEqual(messageIdFor('example.org'), a);
    assert.throws(() => messageIdFor('bad domain'), TypeError);
    assert.throws(() => messageIdFor('example.org', new Uint8Array(3)), TypeError);
  });
});

// ---------------------------------------------------------------------------------------------

const KINDS = new Set(['chat', 'bounce', 'rejected']);

function assertBounded(p: ParsedMail): void {
  assert.ok(KINDS.has(p.kind));
  if (p.kind === 'rejected') return assert.equal(typeof p.reason, 'string');
  if (p.kind === 'bounce') {
    assert.ok(p.messageId.length <= MAX_ID);
    assert.ok((p.bounce.originalMessageId ?? '').length <= MAX_ID && p.bounce.reason.length <= 500);
    return;
  }
  const m = p.mail;
  for (const id of [m.messageId, m.inReplyTo ?? '', ...m.references]) assert.ok(id.length <= MAX_ID && !/[\s<>]/.test(id), id);
  assert.ok(m.recipients.length <= MAX_RECIPIENTS);
  assert.ok((m.group?.name ?? '').length <= MAX_GROUP_NAME);
  assert.ok((m.from.name ?? '').length <= 100 && (m.subject ?? '').length <= 400);
}

describe('parseChatMail robustness', () => {
  test('arbitrary bytes never throw and give one of the three kinds', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 2000 }), fc.string({ maxLength: 1000 }).map((s) => new TextEncoder().encode(s))), async (bytes) => {
        assertBounded(await parseChatMail(Buffer.from(bytes), OPTS));
      }),
      { numRuns: 150 },
    );
  });

  test('mutated chat mails never throw and stay bounded', async () => {
    const mutation = fc.array(fc.record({ at: fc.nat(), op: fc.constantFrom('set', 'insert', 'delete', 'truncate'), byte: fc.constantFrom(0x0a, 0x0d, 0x3a, 0x3c, 0x3e, 0x2d, 0x3d, 0x3f, 0x20, 0x00, 0xff, 0x22, 0x3b) }), { minLength: 1, maxLength: 6 });
    await fc.assert(
      fc.asyncProperty(outgoing, mutation, async (m, muts) => {
        let b = Buffer.from(await buildChatMail(m));
        for (const u of muts) {
          const i = b.length === 0 ? 0 : u.at % b.length;
          if (u.op === 'set' && b.length > 0) b[i] = u.byte;
          else if (u.op === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([u.byte]), b.subarray(i)]);
          else if (u.op === 'delete') b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
          else b = b.subarray(0, i);
        }
        assertBounded(await parseChatMail(b, OPTS));
      }),
      { numRuns: 100 },
    );
  });

  test('size, From and encryption rules', async () => {
    assert.match(await rejected(Buffer.alloc(2000, 0x61), { ...OPTS, maxBytes: 1000 }), /larger than 1000/);
    assert.match(await rejected(''), /empty/);
    assert.match(await rejected(mail('To: b@example.net\nSubject: x')), /no From/);
    assert.match(await rejected(mail('From: a@example.org\nFrom: c@example.org\nTo: b@example.net')), /more than one From/);
    assert.match(await rejected(mail('From: a@example.org, c@example.org\nTo: b@example.net')), /exactly one/);
    assert.match(await rejected(mail('From: undisclosed:;\nTo: b@example.net')), /exactly one/);
    assert.match(await rejected(mail('From: not an address\nTo: b@example.net')), /exactly one|not a valid/);
    assert.match(await rejected(mail('From: Mallory <ceo@Bridge.Example>\nTo: b@example.net')), /our domains/);
    assert.match(await rejected(mail('From: a@example.org\nContent-Type: multipart/encrypted; boundary=x; protocol="application/pgp-encrypted"', '--x--')), /decrypt/);
    const ok = await chat(mail('From: "Ann" <Ann@Example.ORG>\nTo: b@example.net, ann@example.org\nCc: c@example.net, B@example.net'), { ...OPTS, encrypted: true });
    assert.deepEqual(ok.from, { address: 'ann@example.org', name: 'Ann' });
    assert.deepEqual(ok.recipients, [{ address: 'b@example.net' }, { address: 'c@example.net' }]);
    assert.equal(ok.encrypted, true);
    assert.equal(ok.date, null, 'no Date header: null, not "now"');
    assert.match(ok.messageId, /^[0-9a-f]{32}@generated\.invalid$/, 'no Message-ID: a stable one from the bytes');
  });

  test('untrusted header values are bounded', async () => {
    const long = 'x'.repeat(3000);
    const m = await chat(mail(`From: a@example.org\nTo: b@example.net\nMessage-ID: <${long}@example.org>\nIn-Reply-To: <${long}@y>\nReferences: ${Array.from({ length: 300 }, (_, i) => `<r${i}@y>`).join(' ')}\nChat-Version: 1.0\nChat-Group-ID: abcdefghijkl\nChat-Group-Name: ${'n'.repeat(5000)}\nSubject: ${'s'.repeat(5000)}`));
    assert.match(m.messageId, /@generated\.invalid$/);
    assert.equal(m.inReplyTo, null);
    assert.equal(m.references.length, 100);
    assert.equal(m.references[99], 'r299@y', 'the newest references are kept');
    assert.equal(m.group?.name?.length, MAX_GROUP_NAME);
    assert.equal(m.subject?.length, 400);
    const bad = await chat(mail('From: a@example.org\nTo: b@example.net\nChat-Version: 1.0\nChat-Group-ID: bad id!'));
    assert.equal(bad.group, null, 'a Chat-Group-ID Delta Chat would not accept is ignored');
  });

  test('automated: Auto-Submitted, Precedence, list headers; receipts are read anyway', async () => {
    const h = 'From: a@example.org\nTo: b@example.net\n';
    assert.equal((await chat(mail(h + 'Auto-Submitted: auto-generated'))).automated, true);
    assert.equal((await chat(mail(h + 'Auto-Submitted: no'))).automated, false);
    assert.equal((await chat(mail(h + 'Precedence: bulk'))).automated, true);
    assert.equal((await chat(mail(h + 'List-Id: <list.example.org>'))).automated, true);
    assert.equal((await chat(mail(h))).automated, false);
    const mdn = await chat(fixture('dc-mdn.eml'));
    assert.equal(mdn.automated, false);
    assert.deepEqual(mdn.action, { type: 'receipt', target: '5d2c7a10-88e4-4b0e-9f3a-6c1d2e3f4a5b@localhost' });
  });

  test('Autocrypt: only a single header whose addr is the sender, no unknown critical attributes', async () => {
    const h = 'From: a@example.org\nTo: b@example.net\n';
    const key = 'xjMEXt3z1xYJKwYBBAHaRw8BAQdAf6MctU';
    assert.deepEqual((await chat(mail(`${h}Autocrypt: addr=A@example.org; keydata=${key.slice(0, 10)}\n ${key.slice(10)}`))).autocrypt, { addr: 'a@example.org', keydata: key, preferEncrypt: 'nopreference' });
    assert.deepEqual((await chat(mail(`${h}Autocrypt: addr=a@example.org; prefer-encrypt=mutual; _x=1; keydata=${key}`))).autocrypt, { addr: 'a@example.org', keydata: key, preferEncrypt: 'mutual' });
    assert.equal((await chat(mail(`${h}Autocrypt: addr=eve@example.org; keydata=${key}`))).autocrypt, null);
    assert.equal((await chat(mail(`${h}Autocrypt: addr=a@example.org; critical=1; keydata=${key}`))).autocrypt, null);
    assert.equal((await chat(mail(`${h}Autocrypt: addr=a@example.org; keydata=${key}\nAutocrypt: addr=a@example.org; keydata=${key}`))).autocrypt, null);
    assert.equal((await chat(mail(`${h}Autocrypt: addr=a@example.org; keydata=not*base64`))).autocrypt, null);
  });

  test('chat headers count only in chat mail; reactions (RFC 9078) from any client', async () => {
    const plain = await chat(mail('From: a@example.org\nTo: b@example.net\nChat-Edit: <x@y>\nChat-Group-ID: abcdefghijkl', 'text'));
    assert.deepEqual(plain.action, { type: 'content', text: 'text', attachments: [] });
    assert.equal(plain.group, null);
    const r = await chat(mail('From: a@example.org\nTo: b@example.net\nIn-Reply-To: <x@y>\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: reaction', '😂'));
    assert.deepEqual(r.action, { type: 'reaction', emoji: '😂', target: 'x@y' });
    assert.match(await rejected(mail('From: a@example.org\nTo: b@example.net\nContent-Disposition: reaction', '😂')), /In-Reply-To/);
  });

  test('delivery reports: failed recipients and reason; delayed or relayed ones are not bounces', async () => {
    const dsn = (action: string) =>
      mail(
        'From: MAILER-DAEMON@bridge.example\nTo: alice@bridge.example\nMessage-ID: <dsn1@bridge.example>\nContent-Type: multipart/report; report-type=delivery-status; boundary=b',
        `--b\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.bridge.example\r\n\r\nFinal-Recipient: rfc822; Bob@Example.net\r\nAction: ${action}\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such\r\n  user\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <ours@bridge.example>\r\nSubject: hi\r\n\r\n--b--\r\n`,
      );
    const p = await parseChatMail(dsn('failed'), OPTS);
    assert.deepEqual(p, { kind: 'bounce', messageId: 'dsn1@bridge.example', bounce: { originalMessageId: 'ours@bridge.example', failedRecipients: ['bob@example.net'], reason: '550 5.1.1 no such user' } });
    assert.match(await rejected(dsn('delayed')), /without failed recipients/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('fixtures (test/fixtures/email/README.md)', () => {
  test('Delta Chat 1:1 text: footer folded away, no attachments', async () => {
    const m = await chat(fixture('dc-text.eml'));
    assert.equal(m.messageId, 'Mr.tsgoJgn-cBf.0TkFWKJzeSp@example.org');
    assert.deepEqual(m.from, { address: 'tunis4@example.org' });
    assert.deepEqual(m.recipients, [{ address: 'tunis3@example' }]);
    assert.equal(m.isChat, true);
    assert.equal(m.group, null);
    assert.equal(m.subject, 'Chat: profile image deleted');
    assert.equal(m.date?.toISOString(), '2019-12-08T23:28:30.000Z');
    assert.deepEqual(m.action, { type: 'content', text: 'profile image deleted', attachments: [] });
    assert.equal(m.automated, false);
  });

  test('Delta Chat group message: group id and name; avatar files are not content', async () => {
    const m = await chat(fixture('dc-group.eml'));
    assert.equal(m.messageId, 'Gr.WVnDtF5azch.c6vUZfnnXYx@testrun.org');
    assert.deepEqual(m.group, { id: 'WVnDtF5azch', name: 'testgr1' });
    assert.deepEqual(m.recipients, [{ address: 'bpetersen@b44t.com' }]);
    assert.equal(m.subject, 'Chat: testgr1: hi!');
    assert.deepEqual(m.action, { type: 'content', text: 'hi! ', attachments: [] });
  });

  test('Delta Chat reply with quote and attachment', async () => {
    const m = await chat(fixture('dc-reply-attachment.eml'));
    assert.equal(m.inReplyTo, 'Mr.7h_HyOuM3Dz.xcp4v8QiQua@testrun.org');
    assert.deepEqual(m.from, { address: 'alice@testrun.org', name: 'Alice' });
    assert.deepEqual(m.recipients, [{ address: 'bob@example.org', name: 'Bob' }]);
    assert.deepEqual(m.action, { type: 'reply', text: 'Reply', target: 'Mr.7h_HyOuM3Dz.xcp4v8QiQua@testrun.org', quote: 'Quote', attachments: [{ name: 'attachment.txt', mediaType: 'text/plain', content: Buffer.from('data to send') }] });
  });

  test('Delta Chat reaction', async () => {
    const m = await chat(fixture('dc-reaction.eml'));
    assert.deepEqual(m.action, { type: 'reaction', emoji: '👍', target: 'Mr.7h_HyOuM3Dz.xcp4v8QiQua@example.net' });
    assert.equal(m.messageId, '3e1f0c2a-6b0d-4f58-9d63-0f6a3c1b2d44@localhost');
    assert.equal(m.isChat, true);
  });

  test('read receipts: Delta Chat and MS Exchange (target from In-Reply-To)', async () => {
    const dc = await chat(fixture('dc-mdn.eml'));
    assert.deepEqual(dc.from, { address: 'bob@example.net', name: 'Bob' });
    assert.equal(dc.subject, 'Receipt Notification');
    assert.deepEqual(dc.action, { type: 'receipt', target: '5d2c7a10-88e4-4b0e-9f3a-6c1d2e3f4a5b@localhost' });
    const ms = await chat(fixture('mdn-exchange.eml'));
    assert.equal(ms.isChat, false);
    assert.deepEqual(ms.from, { address: 'bob@example.net', name: 'Anonymous_2' });
    assert.deepEqual(ms.action, { type: 'receipt', target: 'd5904dc344eeb5deaf9bb44603f0c716@posteo.de' });
  });

  test('Postfix bounce of a Delta Chat message', async () => {
    const p = await parseChatMail(fixture('dsn-postfix.eml'), { ...OPTS, ourDomains: ['hq5.merlinux.eu'] });
    assert.deepEqual(p, {
      kind: 'bounce',
      messageId: '20200613120803.9EBE627A0B2E@hq5.merlinux.eu',
      bounce: {
        originalMessageId: 'Mr.A7pTA5IgrUA.q4bP41vAJOp@testrun.org',
        failedRecipients: ['hcksocnsofoejx@five.chat'],
        reason: '550 5.1.1 <hcksocnsofoejx@five.chat>: Recipient address rejected: User unknown in virtual mailbox table',
      },
    });
  });

  test('ordinary mail client reply: bottom quote with "wrote:" line and signature folded, ">" line in the text kept', async () => {
    const m = await chat(fixture('mua-quote-signature.eml'));
    assert.equal(m.isChat, false);
    assert.deepEqual(m.from, { address: 'carol@example.com', name: 'Carol Example' });
    assert.equal(m.subject, 'Re: Message from Alice');
    assert.deepEqual(m.references, ['3e1f0c2a-6b0d-4f58-9d63-0f6a3c1b2d44@localhost']);
    assert.deepEqual(m.action, {
      type: 'reply',
      text: 'Sounds good, see you at 8.\n> This line starts with a quote mark but is in the middle.\n\nCarol',
      target: '3e1f0c2a-6b0d-4f58-9d63-0f6a3c1b2d44@localhost',
      quote: 'Dinner tonight?',
      attachments: [],
    });
  });

  test('HTML-only mail becomes its text', async () => {
    const m = await chat(mail('From: a@example.org\nTo: b@example.net\nContent-Type: text/html; charset=utf-8', '<p>Hello <b>there</b></p><p>second</p>'));
    assert.deepEqual(m.action, { type: 'content', text: 'Hello there\n\nsecond', attachments: [] });
  });
});

describe('simplifyText', () => {
  test('top quote with "wrote:" line (ordinary mail only), signature, whole-quote mail kept', () => {
    assert.deepEqual(simplifyText('On Mon, Bob wrote:\n> hi\n> there\n\nanswer\n-- \nsig', false), { text: 'answer', quote: 'hi\nthere' });
    assert.deepEqual(simplifyText('On Mon, Bob wrote:\n> hi\n\nanswer', true), { text: 'On Mon, Bob wrote:\n> hi\n\nanswer', quote: null });
    assert.deepEqual(simplifyText('> only a quote', false), { text: '', quote: 'only a quote' });
    assert.deepEqual(simplifyText('text\n\n--\nnearly standard signature', true), { text: 'text', quote: null });
    assert.deepEqual(simplifyText('a\n---\nb', false), { text: 'a\n---\nb', quote: null }, 'no "nonstandard footer" cutting');
    assert.deepEqual(simplifyText('a\r\nb\r\n\r\n', true), { text: 'a\nb', quote: null });
  });
});
