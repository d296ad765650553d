// Attachments on one provider: upload (content-addressed, deduplicated, size limit, quota),
// download access control (uploader, participants, outsiders, capability links), deletes and the
// purge of unreferenced blobs, and seed-000 inline files (base64 messageFormatted).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { startProvider, http, user, type Started } from './helpers/harness.js';
import { testBackend } from './helpers/database.js';
import { base64DecodedLength, isBinaryFormat } from '../src/attachments/inline.js';
import { answerAfterRest, partialPost } from './helpers/partial-post.js';

const ENV = {
  INTERTALK_SEND_RATE: '100000000',
  INTERTALK_REGISTRATION_RATE: '1000000',
  INTERTALK_MAX_ATTACHMENT: '64KiB',
  INTERTALK_ATTACHMENT_QUOTA: '1MiB',
};
const MAX = 64 * 1024;

type U = { token: string; address: string };

interface Raw {
  status: number;
  headers: Headers;
  body: Buffer;
  json: any;
}

async function raw(base: string, method: string, path: string, opts: { token?: string; body?: Buffer | string; type?: string; headers?: Record<string, string> } = {}): Promise<Raw> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.type) headers['content-type'] = opts.type;
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(base + path, { method, headers, body: opts.body });
  const body = Buffer.from(await res.arrayBuffer());
  let json: any;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, body, json };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Random bytes that look like a PNG file. */
const png = (n = 2000) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(n)]);

function upload(s: Started, u: U, data: Buffer, type = 'image/png', name?: string): Promise<Raw> {
  return raw(s.url, 'POST', `/attachments${name !== undefined ? `?name=${encodeURIComponent(name)}` : ''}`, { token: u.token, body: data, type });
}

async function sendWith(s: Started, from: U, to: U[], text: string, attachments: unknown[]): Promise<any> {
  const r = await http(s.url, 'POST', '/messages', { token: from.token, json: { to: [from.address, ...to.map((t) => t.address)], rich: { type: 'content', text, attachments } } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

const rows = async (s: Started, table: 'attachments' | 'attachment_uploads' | 'attachment_refs', id: string) =>
  (await s.provider.ctx.storage.db.selectFrom(table).selectAll().where(table === 'attachments' ? 'id' : 'attachment_id', '=', id).execute()).length;

// The database follows INTERTALK_TEST_DATABASE (test/helpers/database.ts): SQLite, or PostgreSQL.
describe(`attachments on one provider (${testBackend})`, () => {
  let s: Started;
  let alice: U, bob: U, carol: U, dave: U;

  before(async () => {
    s = await startProvider(ENV);
    alice = await user(s.url, 'alice');
    bob = await user(s.url, 'bob');
    carol = await user(s.url, 'carol');
    dave = await user(s.url, 'dave');
  });
  after(async () => {
    await s.stop();
  });

  test('upload: 201 {id = SHA-256 hex, mediaType, size, url}; the same bytes twice are stored once', async () => {
    const data = png();
    const r = await upload(s, alice, data, 'image/png', 'cat.png');
    assert.equal(r.status, 201, r.body.toString());
    assert.equal(r.json.id, sha(data));
    assert.equal(r.json.mediaType, 'image/png');
    assert.equal(r.json.size, data.length);
    assert.equal(r.json.url, `${s.provider.config.publicUrl}/attachments/${sha(data)}`);
    assert.equal(r.json.name, 'cat.png');

    const again = await upload(s, alice, data);
    assert.equal(again.status, 201);
    assert.equal(again.json.id, r.json.id);
    const other = await upload(s, bob, data, 'application/octet-stream');
    assert.equal(other.json.id, r.json.id);
    assert.equal(other.json.mediaType, 'application/octet-stream', 'each uploader gets back what it declared');
    assert.equal(await rows(s, 'attachments', r.json.id), 1, 'stored once');
    assert.equal(await rows(s, 'attachment_uploads', r.json.id), 2, 'one upload record per uploader');
  });

  test('upload limits: over INTERTALK_MAX_ATTACHMENT → 413 JSON, exactly the limit → 201, empty → 400, no token → 401', async () => {
    const big = await upload(s, alice, randomBytes(MAX + 1), 'application/octet-stream');
    assert.equal(big.status, 413);
    assert.equal(big.json.error, 'payload_too_large');
    assert.match(big.json.message, new RegExp(String(MAX)));
    assert.match(big.headers.get('content-type') ?? '', /^application\/json/);
    const exact = await upload(s, alice, randomBytes(MAX), 'application/octet-stream');
    assert.equal(exact.status, 201);
    const empty = await upload(s, alice, Buffer.alloc(0));
    assert.equal(empty.status, 400);
    assert.equal(empty.json.error, 'empty_attachment');
    const anon = await raw(s.url, 'POST', '/attachments', { body: png(), type: 'image/png' });
    assert.equal(anon.status, 401);
    const badType = await upload(s, alice, png(), 'not a type');
    assert.equal(badType.status, 415);
    assert.equal(badType.json.error, 'unsupported_media_type');
    const untyped = await raw(s.url, 'POST', '/attachments', { token: alice.token, body: png() });
    assert.equal(untyped.status, 201, untyped.body.toString());
    assert.equal(untyped.json.mediaType, 'application/octet-stream');
    const badName = await upload(s, alice, png(), 'image/png', 'a/b');
    assert.equal(badName.status, 400);
  });

  test('an upload of JSON bytes is stored as bytes, not parsed', async () => {
    const data = Buffer.from('{"to": ["x@y"], "hello": true}');
    const r = await upload(s, alice, data, 'application/json');
    assert.equal(r.status, 201);
    assert.equal(r.json.id, sha(data));
  });

  test('every other route still refuses non-JSON bodies with 415', async () => {
    for (const path of ['/messages', '/users', `/conversations/c${'a'.repeat(43)}/messages`]) {
      const r = await raw(s.url, 'POST', path, { token: alice.token, body: png(), type: 'image/png' });
      assert.equal(r.status, 415, `${path}: ${r.body.toString()}`);
      assert.equal(r.json.error, 'unsupported_media_type');
    }
  });

  test('download: the uploader and the participants get the bytes; outsiders, unknown and malformed ids get 404', async () => {
    const data = png(5000);
    const up = await upload(s, alice, data, 'image/png', 'photo.png');
    const id = up.json.id as string;
    // Before it is sent, only the uploader has it.
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: alice.token })).status, 200);
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: bob.token })).status, 404);

    const m = await sendWith(s, alice, [bob], 'look', [{ id, name: 'holiday.png' }]);
    assert.deepEqual(m.rich.attachments, [{ id, name: 'holiday.png', mediaType: 'image/png', size: data.length, url: `${s.provider.config.publicUrl}/attachments/${id}` }]);
    assert.match(m.message, /^look\n📎 holiday\.png \(5 KB\): http/);

    for (const who of [alice, bob]) {
      const r = await raw(s.url, 'GET', `/attachments/${id}`, { token: who.token });
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(data), 'the same bytes');
      assert.equal(r.headers.get('content-type'), 'image/png');
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      assert.match(r.headers.get('content-security-policy') ?? '', /(^|;\s*)sandbox(;|$)/);
      assert.match(r.headers.get('content-disposition') ?? '', /^inline; filename="holiday\.png"/);
    }
    const outsider = await raw(s.url, 'GET', `/attachments/${id}`, { token: carol.token });
    assert.equal(outsider.status, 404);
    assert.equal(outsider.json.error, 'not_found');
    const unknown = await raw(s.url, 'GET', `/attachments/${sha(randomBytes(8))}`, { token: alice.token });
    assert.deepEqual([unknown.status, unknown.json.error], [404, outsider.json.error], 'unknown looks like not allowed');
    assert.equal((await raw(s.url, 'GET', '/attachments/not-an-id', { token: alice.token })).status, 404);
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`)).status, 401, 'no credentials');
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: 'nonsense' })).status, 401);
  });

  test('non-image files are downloads, active types are served as octet-stream', async () => {
    const html = Buffer.from(`<script>alert(document.domain)</script>${randomBytes(4).toString('hex')}`);
    const up = await upload(s, alice, html, 'text/html', 'page.html');
    await sendWith(s, alice, [bob], '', [{ id: up.json.id, name: 'page.html' }]);
    const r = await raw(s.url, 'GET', `/attachments/${up.json.id}`, { token: bob.token });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/octet-stream');
    assert.match(r.headers.get('content-disposition') ?? '', /^attachment; filename="page\.html"/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.match(r.headers.get('content-security-policy') ?? '', /sandbox/);
    const pdf = await upload(s, alice, Buffer.concat([Buffer.from('%PDF-1.4\n'), randomBytes(100)]), 'application/pdf');
    await sendWith(s, alice, [bob], 'doc', [{ id: pdf.json.id, name: 'résumé "final".pdf' }]);
    const d = await raw(s.url, 'GET', `/attachments/${pdf.json.id}`, { token: bob.token });
    assert.equal(d.headers.get('content-type'), 'application/pdf');
    assert.equal(d.headers.get('content-disposition'), `attachment; filename="r_sum_ _final_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf`);
  });

  test('only one\'s own uploads can be sent; references are completed by the provider, never trusted', async () => {
    const up = await upload(s, alice, png());
    const r = await http(s.url, 'POST', '/messages', { token: carol.token, json: { to: [carol.address, bob.address], rich: { attachments: [{ id: up.json.id, name: 'x.png' }] } } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'unknown_attachment');
    for (const bad of [[{ name: 'x' }], [{ id: 'abc' }], ['x'], 'x', [{ id: up.json.id, name: 7 }], [{ id: up.json.id, name: 'a/b' }]]) {
      const b = await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, bob.address], rich: { attachments: bad } } });
      assert.equal(b.status, 400, JSON.stringify(bad));
    }
    // Whatever else the client claims (size, type, url) is replaced by what was uploaded.
    const m = await sendWith(s, alice, [bob], 'forged', [{ id: up.json.id, name: 'x.png', size: 1, mediaType: 'text/html', url: 'https://evil.example/x' }]);
    assert.equal(m.rich.attachments[0].size, up.json.size);
    assert.equal(m.rich.attachments[0].mediaType, 'image/png');
    assert.equal(m.rich.attachments[0].url, up.json.url);
    // Attachments are for content and replies only.
    const edit = await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, bob.address], rich: { type: 'edit', text: 'x', reference: { id: m.id, sender: alice.address }, attachments: [{ id: up.json.id }] } } });
    assert.equal(edit.status, 400);
  });

  test('the conversation route takes attachments [{id, name}] too', async () => {
    const first = await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, dave.address], message: 'hi' } });
    const conv = first.body.conversationId;
    const up = await upload(s, alice, png(), 'image/png', 'default-name.png');
    const r = await http(s.url, 'POST', `/conversations/${conv}/messages`, { token: alice.token, json: { text: 'pic', attachments: [{ id: up.json.id }] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.rich.attachments[0].name, 'default-name.png', 'the name given at upload');
    assert.equal((await raw(s.url, 'GET', `/attachments/${up.json.id}`, { token: dave.token })).status, 200);
    const bad = await http(s.url, 'POST', `/conversations/${conv}/messages`, { token: dave.token, json: { text: 'pic', attachments: [{ id: up.json.id }] } });
    assert.equal(bad.status, 400);
  });

  test('capability link: works without a token; a wrong key, another conversation or a missing key → 404', async () => {
    const data = png();
    const up = await upload(s, alice, data);
    const m = await sendWith(s, alice, [bob], 'for plain peers', [{ id: up.json.id, name: 'p.png' }]);
    const link = /(https?:\/\/\S+\?c=\S+&key=\S+)/.exec(m.message)?.[1];
    assert.ok(link, m.message);
    const u = new URL(link);
    assert.equal(u.searchParams.get('c'), m.conversationId);
    const path = `${u.pathname}${u.search}`;
    const ok = await raw(s.url, 'GET', path);
    assert.equal(ok.status, 200);
    assert.ok(ok.body.equals(data));
    const key = u.searchParams.get('key')!;
    const wrong = key.slice(0, -2) + (key.endsWith('AA') ? 'BB' : 'AA');
    assert.equal((await raw(s.url, 'GET', `${u.pathname}?c=${m.conversationId}&key=${wrong}`)).status, 404);
    assert.equal((await raw(s.url, 'GET', `${u.pathname}?c=${m.conversationId}`)).status, 404);
    assert.equal((await raw(s.url, 'GET', `${u.pathname}?key=${key}`)).status, 404);
    const other = (await http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, carol.address], message: 'x' } })).body.conversationId;
    assert.equal((await raw(s.url, 'GET', `${u.pathname}?c=${other}&key=${key}`)).status, 404);
    // The key is bound to the file as well.
    const up2 = await upload(s, alice, png());
    assert.equal((await raw(s.url, 'GET', `/attachments/${up2.json.id}?c=${m.conversationId}&key=${key}`)).status, 404);
  });

  test('a delete removes access for everyone and purges the blob when no reference remains', async () => {
    const data = png();
    const up = await upload(s, alice, data);
    const id = up.json.id as string;
    const m = await sendWith(s, alice, [bob], 'oops', [{ id, name: 'oops.png' }]);
    const link = new URL(/(https?:\/\/\S+\?c=\S+&key=\S+)/.exec(m.message)![1]!);
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: bob.token })).status, 200);
    const del = await http(s.url, 'DELETE', `/conversations/${m.conversationId}/messages/${m.seq}`, { token: alice.token });
    assert.equal(del.status, 201, JSON.stringify(del.body));
    await s.provider.attachments.idle();
    for (const who of [alice, bob]) assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: who.token })).status, 404);
    assert.equal((await raw(s.url, 'GET', `${link.pathname}${link.search}`)).status, 404);
    // Purged right away (the bookkeeping runs just after the delete is stored).
    for (let i = 0; i < 50 && (await rows(s, 'attachments', id)) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await rows(s, 'attachments', id), 0, 'the blob is gone');
    // Its upload record stays for the day's quota, without the file's name or type.
    const records = await s.provider.ctx.storage.db.selectFrom('attachment_uploads').select(['name', 'media_type']).where('attachment_id', '=', id).execute();
    assert.ok(records.length >= 1);
    assert.deepEqual(records, records.map(() => ({ name: null, media_type: 'application/octet-stream' })));
    assert.equal(await rows(s, 'attachment_refs', id), 0);
    // The history no longer names it.
    const h = await http(s.url, 'GET', `/conversations/${m.conversationId}/messages`, { token: bob.token });
    assert.ok(!JSON.stringify(h.body).includes(id));
  });

  test('a file sent in two conversations survives the delete in one of them', async () => {
    const data = png();
    const up = await upload(s, alice, data);
    const id = up.json.id as string;
    const m1 = await sendWith(s, alice, [bob], 'one', [{ id, name: 'a.png' }]);
    await sendWith(s, alice, [carol], 'two', [{ id, name: 'a.png' }]);
    assert.equal((await http(s.url, 'DELETE', `/conversations/${m1.conversationId}/messages/${m1.seq}`, { token: alice.token })).status, 201);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: bob.token })).status, 404, 'bob saw it only in the deleted message');
    const c = await raw(s.url, 'GET', `/attachments/${id}`, { token: carol.token });
    assert.equal(c.status, 200);
    assert.ok(c.body.equals(data));
    assert.equal(await rows(s, 'attachments', id), 1);
    assert.equal(await s.provider.attachments.purge({ now: Date.now() + 2 * 3_600_000 }) >= 0, true);
    assert.equal(await rows(s, 'attachments', id), 1, 'still referenced: never purged');
  });

  test('uploads never sent are purged an hour after their upload', async () => {
    const data = png();
    const up = await upload(s, dave, data);
    const id = up.json.id as string;
    await s.provider.attachments.purge();
    assert.equal(await rows(s, 'attachments', id), 1, 'fresh: kept');
    assert.ok((await s.provider.attachments.purge({ now: Date.now() + 61 * 60_000 })) >= 1);
    assert.equal(await rows(s, 'attachments', id), 0);
    assert.equal(await rows(s, 'attachment_uploads', id), 1, 'the upload still counts towards the day\'s quota');
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: dave.token })).status, 404);
    // Uploading the same bytes again brings it back.
    const again = await upload(s, dave, data);
    assert.equal(again.json.id, id);
    assert.equal((await raw(s.url, 'GET', `/attachments/${id}`, { token: dave.token })).status, 200);
  });

  test('per-user quota per 24 hours → 429 quota_exceeded', async () => {
    const q = await user(s.url, 'quota');
    let last: Raw | undefined;
    let accepted = 0;
    for (let i = 0; i < 20; i++) {
      last = await upload(s, q, randomBytes(MAX), 'application/octet-stream');
      if (last.status !== 201) break;
      accepted++;
    }
    assert.equal(accepted, 16, '1 MiB of 64 KiB files');
    assert.equal(last!.status, 429);
    assert.equal(last!.json.error, 'quota_exceeded');
    // The files were never sent: an hour later they are purged, and the quota still holds.
    assert.ok((await s.provider.attachments.purge({ now: Date.now() + 2 * 3_600_000 })) >= 16);
    const later = await upload(s, q, randomBytes(MAX), 'application/octet-stream');
    assert.equal(later.status, 429, 'purging the files does not give the quota back');
    // Out of the window, the records go too.
    await s.provider.attachments.purge({ now: Date.now() + 25 * 3_600_000 });
    assert.equal(Number((await s.provider.ctx.storage.db.selectFrom('attachment_uploads').select((eb) => eb.fn.countAll().as('n')).where('uploader', '=', q.address).executeTakeFirstOrThrow()).n), 0);
  });
});

describe('seed 000: binary formats carry base64 in messageFormatted', () => {
  let s: Started;
  let alice: U, bob: U;

  before(async () => {
    s = await startProvider({ ...ENV, INTERTALK_MAX_BODY: '4096' });
    alice = await user(s.url, 'alice');
    bob = await user(s.url, 'bob');
  });
  after(async () => s.stop());

  const post = (extra: Record<string, unknown>) => http(s.url, 'POST', '/messages', { token: alice.token, json: { to: [alice.address, bob.address], message: 'a picture', ...extra } });

  test('base64 decodedLength matches Node for any bytes, with or without padding and line breaks (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), fc.boolean(), (bytes, unpadded, wrapped) => {
        let b64 = Buffer.from(bytes).toString('base64');
        if (unpadded) b64 = b64.replace(/=+$/, '');
        if (wrapped) b64 = b64.replace(/(.{76})/g, '$1\r\n');
        assert.equal(base64DecodedLength(b64), bytes.length);
      }),
    );
  });

  test('strings that are not base64 are refused (property)', () => {
    const bad = fc.constantFrom('-', '_', '.', '!', 'é', '*', '\u0000', '=A');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 100 }), bad, fc.nat(), (bytes, c, at) => {
        const b64 = Buffer.from(bytes).toString('base64');
        const i = at % (b64.length + 1);
        const s = b64.slice(0, i) + c + b64.slice(i);
        // '=' followed by data is never valid; the rest are outside the alphabet.
        assert.equal(base64DecodedLength(s), null, JSON.stringify(s));
      }),
    );
    assert.equal(base64DecodedLength('A'), null);
    assert.equal(base64DecodedLength('AAAAA'), null);
    assert.equal(base64DecodedLength('AA='), null);
    assert.equal(base64DecodedLength('A==='), null);
  });

  test('which formats are binary', () => {
    for (const f of ['image/png', 'application/octet-stream', 'application/pdf', 'audio/ogg', 'image/png; name=x']) assert.equal(isBinaryFormat(f), true, f);
    for (const f of ['text/markdown', 'text/html', 'application/json', 'application/ld+json', 'image/svg+xml', 'text/plain; charset=utf-8', 'not a type']) assert.equal(isBinaryFormat(f), false, f);
  });

  test('an image within the limit is accepted, though the body exceeds INTERTALK_MAX_BODY', async () => {
    const img = png(40 * 1024);
    const r = await post({ messageFormatted: img.toString('base64'), format: 'image/png' });
    assert.equal(r.status, 201, JSON.stringify(r.body).slice(0, 300));
    assert.equal(r.body.messageFormatted, img.toString('base64'));
    const h = await http(s.url, 'GET', `/conversations/${r.body.conversationId}/messages?limit=1`, { token: bob.token });
    assert.ok(Buffer.from(h.body.messages[0].messageFormatted, 'base64').equals(img));
  });

  test('a body past INTERTALK_MAX_BODY is read only for a sender who shows who they are: others get their 401 before it arrives', async () => {
    const body = Buffer.from(JSON.stringify({ to: [alice.address, bob.address], message: 'a picture', messageFormatted: png(40 * 1024).toString('base64'), format: 'image/png' }));
    const first = body.subarray(0, 1000);
    const json = { 'content-type': 'application/json' };
    const early = async (headers: Record<string, string>, length: number | undefined, status: number, error: string) => {
      const p = await partialPost(s.url, '/messages', { ...json, ...headers }, first, { length });
      try {
        const a = await p.answerWithin(10_000);
        assert.equal(a?.status, status, JSON.stringify(a));
        assert.equal(a?.json?.error, error, JSON.stringify(a));
        assert.equal(typeof a?.json?.message, 'string');
        assert.equal(await p.closedWithin(10_000), true, 'the server closes the connection rather than read the rest');
      } finally {
        p.close();
      }
    };
    await early({}, body.length, 401, 'unauthorized');
    await early({ authorization: 'Bearer not-a-session' }, body.length, 401, 'invalid_token');
    await early({}, undefined, 401, 'unauthorized'); // chunked: the size is unknown, so it counts as large
    await early({ authorization: 'Bearer aaa.bbb.ccc' }, body.length, 403, 'federation_disabled');

    // Alice's session: the server waits for the whole body, then stores the message.
    const p = await partialPost(s.url, '/messages', { ...json, authorization: `Bearer ${alice.token}` }, first, { length: body.length });
    const { early: none, answer } = await answerAfterRest(p, body.subarray(first.length));
    assert.equal(none, null, 'an authenticated sender\'s body is read to the end');
    assert.equal(answer?.status, 201, JSON.stringify(answer));
  });

  test('inline files over INTERTALK_MAX_ATTACHMENT → 413; broken base64 → 400; big text bodies still → 413', async () => {
    const over = await post({ messageFormatted: randomBytes(MAX + 1).toString('base64'), format: 'application/octet-stream' });
    assert.equal(over.status, 413);
    assert.equal(over.body.error, 'payload_too_large');
    const exact = await post({ messageFormatted: randomBytes(MAX).toString('base64'), format: 'application/octet-stream' });
    assert.equal(exact.status, 201);
    const broken = await post({ messageFormatted: 'not base64!', format: 'image/png' });
    assert.equal(broken.status, 400);
    assert.equal(broken.body.error, 'invalid_message');
    const text = await post({ messageFormatted: 'x'.repeat(20_000), format: 'text/markdown' });
    assert.equal(text.status, 413, 'a text format gets no extra room');
    const padded = await post({ message: 'y'.repeat(20_000), messageFormatted: 'AAAA', format: 'image/png' });
    assert.equal(padded.status, 413, 'the room is for the file only');
    // The conversation route (rich clients) checks the same.
    const conv = (await post({})).body.conversationId;
    const rich = await http(s.url, 'POST', `/conversations/${conv}/messages`, { token: alice.token, json: { text: 'x', formatted: '%%%', format: 'image/png' } });
    assert.equal(rich.status, 400);
  });

  test('any bytes within the limit round-trip through messageFormatted (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), fc.constantFrom('image/png', 'application/octet-stream', 'audio/ogg'), async (bytes, format) => {
        const b64 = Buffer.from(bytes).toString('base64');
        const r = await post({ messageFormatted: b64, format });
        assert.equal(r.status, 201, JSON.stringify(r.body).slice(0, 200));
        assert.ok(Buffer.from(r.body.messageFormatted, 'base64').equals(Buffer.from(bytes)));
      }),
      { numRuns: 30 },
    );
  });
});
