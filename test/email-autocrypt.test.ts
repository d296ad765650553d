// Autocrypt + PGP/MIME for the e-mail bridge (src/bridges/email/autocrypt.ts, docs/email-encryption.md):
// keys shaped like Delta Chat's, Autocrypt header round trips and strictness (property tests: mutated
// headers give null, never throw), encryptMime → decryptMime round trips with signature checks, the
// outer/inner header split Delta Chat 2.57 uses, failures (wrong key, tampering, unsigned, foreign
// signer, forged From, size bounds), Autocrypt-Gossip. Keys are generated once for the file.
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as openpgp from 'openpgp';
import MailComposer from 'nodemailer/lib/mail-composer';
import {
  generateUserKey,
  autocryptHeader,
  parseAutocryptHeader,
  readPublicKey,
  publicKeyOf,
  encryptMime,
  decryptMime,
  gossipHeaders,
  parseGossip,
  MAX_KEYDATA_BYTES,
  OUTER_SUBJECT,
  type UserKey,
  type DecryptResult,
} from '../src/bridges/email/autocrypt.js';

// ---------------------------------------------------------------------------------------------
// Fixtures

let alice: UserKey;
let bob: UserKey;
let carol: UserKey;

before(async () => {
  [alice, bob, carol] = await Promise.all([generateUserKey('alice@example.org'), generateUserKey('Bob@Example.NET'), generateUserKey('carol@example.com')]);
});

interface InnerOptions {
  from?: string;
  to?: string[];
  text?: string;
  headers?: Array<{ key: string; value: string }>;
  attachments?: Array<{ filename: string; content: Buffer; contentType: string }>;
}

/** A chat mail as mime-out.ts would build it (MailComposer), before encryption. */
async function innerMail(o: InnerOptions = {}): Promise<Buffer> {
  const composer = new MailComposer({
    from: o.from ?? 'Alice A. <alice@example.org>',
    to: o.to ?? ['bob@example.net'],
    subject: 'Hello Bob, a secret',
    messageId: '<Mr.abc123@example.org>',
    inReplyTo: '<Mr.parent@example.net>',
    references: ['<Mr.parent@example.net>'],
    date: new Date('2026-12-07T09:30:00Z'),
    text: o.text ?? 'Hi Bob! Grüße — this is end-to-end encrypted.\n',
    headers: [{ key: 'Chat-Version', value: '1.0' }, ...(o.headers ?? [])],
    attachments: o.attachments ?? [],
  });
  return composer.compile().build();
}

async function aliceInner(o: InnerOptions = {}): Promise<Buffer> {
  return innerMail({ ...o, headers: [{ key: 'Autocrypt', value: await autocryptHeader('alice@example.org', alice.publicKeyArmored) }, ...(o.headers ?? [])] });
}

/** Header section of a message as [lower-cased name, unfolded value] pairs. */
function headersOf(mail: Buffer): Array<[string, string]> {
  const s = mail.toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  const head = s.slice(0, end < 0 ? s.length : end).replace(/\r\n(?=[ \t])/g, '');
  return head.split('\r\n').map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string];
  });
}

const header = (mail: Buffer, name: string) => headersOf(mail).find(([n]) => n === name)?.[1];

/** Wraps an armored OpenPGP message as RFC 3156 PGP/MIME (for messages encryptMime would not make). */
function pgpMime(armored: string, from = 'alice@example.org'): Buffer {
  return Buffer.from(
    [
      `From: <${from}>`,
      'To: "hidden-recipients": ;',
      'Subject: [...]',
      'Message-ID: <x@example.org>',
      'MIME-Version: 1.0',
      'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="BB"',
      '',
      '--BB',
      'Content-Type: application/pgp-encrypted',
      '',
      'Version: 1',
      '--BB',
      'Content-Type: application/octet-stream',
      '',
      armored.replace(/\r?\n/g, '\r\n'),
      '--BB--',
      '',
    ].join('\r\n'),
    'latin1',
  );
}

async function rawEncrypt(inner: Buffer, to: string[], signer: string | null): Promise<string> {
  return openpgp.encrypt({
    message: await openpgp.createMessage({ binary: new Uint8Array(inner) }),
    encryptionKeys: await Promise.all(to.map((a) => openpgp.readKey({ armoredKey: a }))),
    ...(signer === null ? {} : { signingKeys: await openpgp.readPrivateKey({ armoredKey: signer }) }),
  });
}

const knows =
  (...keys: UserKey[]) =>
  () =>
    keys.map((k) => k.publicKeyArmored);

function assertOk(r: DecryptResult): asserts r is Extract<DecryptResult, { ok: true }> {
  assert.equal(r.ok, true, r.ok ? '' : `${r.reason}: ${r.detail}`);
}

// ---------------------------------------------------------------------------------------------

describe('generateUserKey', () => {
  test('makes what Delta Chat makes: v4 Ed25519-legacy primary, Curve25519-legacy ECDH subkey, uid <address>, SEIPDv2', async () => {
    const priv = await openpgp.readPrivateKey({ armoredKey: alice.privateKeyArmored });
    assert.equal(priv.isDecrypted(), true);
    assert.equal(priv.keyPacket.version, 4);
    assert.deepEqual(priv.getAlgorithmInfo(), { algorithm: 'eddsaLegacy', curve: 'ed25519Legacy' });
    assert.equal(priv.subkeys.length, 1);
    assert.deepEqual(priv.subkeys[0]!.getAlgorithmInfo(), { algorithm: 'ecdh', curve: 'curve25519Legacy' });
    assert.deepEqual(priv.getUserIDs(), ['<alice@example.org>']);
    assert.equal(await priv.getExpirationTime(), Infinity);
    const selfSig = (await priv.getPrimaryUser()).selfCertification;
    assert.ok(selfSig.features && selfSig.features[0]! & 0x08, 'SEIPDv2 feature');
    assert.match(alice.fingerprint, /^[0-9A-F]{40}$/);
    assert.equal(alice.fingerprint, priv.getFingerprint().toUpperCase());
    // The address is lower-cased; the public half is public.
    const b = await openpgp.readKey({ armoredKey: bob.publicKeyArmored });
    assert.equal(b.isPrivate(), false);
    assert.deepEqual(b.getUserIDs(), ['<bob@example.net>']);
    assert.equal((await publicKeyOf(bob.privateKeyArmored))?.fingerprint, bob.fingerprint);
    await assert.rejects(generateUserKey('not an address'));
  });
});

describe('Autocrypt header', () => {
  test('our header: addr, prefer-encrypt=mutual, keydata = the binary public key, foldable', async () => {
    const v = await autocryptHeader('Alice@Example.org', alice.publicKeyArmored);
    assert.match(v, /^addr=alice@example\.org; prefer-encrypt=mutual; keydata=[A-Za-z0-9+/= ]+$/);
    assert.ok(v.split(' ').every((w) => w.length <= 78), 'no word longer than 78 characters (foldable)');
    const p = parseAutocryptHeader(v, 'ALICE@example.org');
    assert.ok(p);
    assert.equal(p.addr, 'alice@example.org');
    assert.equal(p.preferEncrypt, 'mutual');
    const k = await readPublicKey(p.keydata);
    assert.equal(k?.fingerprint, alice.fingerprint);
    assert.deepEqual(k?.addresses, ['alice@example.org']);
    assert.ok(Buffer.from(p.keydata, 'base64').length < 1024, 'minimal key: primary + uid + encryption subkey');
    // From a private key too: only the public part goes out.
    const fromPriv = parseAutocryptHeader(await autocryptHeader('alice@example.org', alice.privateKeyArmored, 'nopreference'), 'alice@example.org');
    assert.equal(fromPriv?.keydata, p.keydata);
    assert.equal(fromPriv?.preferEncrypt, 'nopreference');
  });

  test('round trip over addresses and prefer-encrypt, folded or not', async () => {
    const local = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-'.split('')), minLength: 1, maxLength: 20 });
    const label = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')), minLength: 1, maxLength: 10 });
    const address = fc.tuple(local, label, label).map(([l, d, t]) => `${l}@${d}.${t}`);
    await fc.assert(
      fc.asyncProperty(address, fc.constantFrom('mutual' as const, 'nopreference' as const), fc.boolean(), async (addr, pe, fold) => {
        let v = await autocryptHeader(addr, bob.publicKeyArmored, pe);
        if (fold) v = v.replace(/ /g, '\r\n ');
        const p = parseAutocryptHeader(v, addr.toUpperCase());
        assert.ok(p, v);
        assert.equal(p.addr, addr.toLowerCase());
        assert.equal(p.preferEncrypt, pe);
        assert.equal(parseAutocryptHeader(v, 'someone.else@example.org'), null, 'addr must be the From address');
      }),
      { numRuns: 60 },
    );
  });

  test('strict: unknown critical attributes, duplicates, missing or bad parts → null; _attributes ignored', async () => {
    const v = await autocryptHeader('alice@example.org', alice.publicKeyArmored);
    const keydata = v.slice(v.indexOf('keydata=') + 8);
    const ok = (s: string) => parseAutocryptHeader(s, 'alice@example.org');
    assert.ok(ok(`addr=alice@example.org; _verified=1; _x=y; keydata=${keydata}`));
    assert.equal(ok(`addr=alice@example.org; prefer-encrypt=reset; keydata=${keydata}`)?.preferEncrypt, 'nopreference');
    assert.equal(ok(`addr=alice@example.org; keydata=${keydata}`)?.preferEncrypt, 'nopreference');
    assert.ok(ok(`keydata=${keydata}; addr=alice@example.org;`), 'attribute order and a trailing ; do not matter');
    for (const bad of [
      `addr=alice@example.org; other=me; keydata=${keydata}`,
      `addr=alice@example.org; addr=alice@example.org; keydata=${keydata}`,
      `addr=alice@example.org; prefer-encrypt=mutual`,
      `prefer-encrypt=mutual; keydata=${keydata}`,
      `addr=alice@example.org; keydata=`,
      `addr=alice@example.org; keydata=${keydata}!`,
      `addr=alice@example.org; keydata=${keydata.replace(/ /g, '').slice(1)}`,
      `addr=alice@example.org; ; keydata=${keydata}`,
      `addr=alice@example.org; junk; keydata=${keydata}`,
      `addr=<alice@example.org>; keydata=${keydata}`,
      `addr=alice@example.org; keydata=${'A'.repeat(Math.ceil((MAX_KEYDATA_BYTES + 3) / 3) * 4)}`,
      '',
      ';',
      'x'.repeat(1_000_000),
    ]) {
      assert.equal(ok(bad), null, bad.slice(0, 120));
    }
  });

  test('mutated headers: never throw; whatever parses is well formed', async () => {
    const v = await autocryptHeader('alice@example.org', alice.publicKeyArmored);
    const mutation = fc.array(
      fc.record({ at: fc.nat(), kind: fc.constantFrom('delete', 'insert', 'replace'), ch: fc.constantFrom(';', '=', ' ', '\r\n', '_', 'a', 'Z', '+', '/', '\0', 'é', '@', '<') }),
      { minLength: 1, maxLength: 4 },
    );
    fc.assert(
      fc.property(mutation, fc.oneof(fc.constant('alice@example.org'), fc.string()), (ms, from) => {
        let s = v;
        for (const m of ms) {
          const i = m.at % (s.length + 1);
          s = m.kind === 'delete' ? s.slice(0, i) + s.slice(i + 1) : m.kind === 'insert' ? s.slice(0, i) + m.ch + s.slice(i) : s.slice(0, i) + m.ch + s.slice(i + 1);
        }
        const p = parseAutocryptHeader(s, from);
        if (p !== null) {
          assert.equal(p.addr, from.toLowerCase());
          assert.match(p.keydata, /^[A-Za-z0-9+/]+={0,2}$/);
          assert.ok(p.preferEncrypt === 'mutual' || p.preferEncrypt === 'nopreference');
        }
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.anything(), fc.anything(), (a, b) => {
        assert.equal(parseAutocryptHeader(a as string, b as string), null);
      }),
      { numRuns: 300 },
    );
  });

  test('readPublicKey: rejects garbage, secret keys, revoked, expired and sign-only keys', async () => {
    const b64 = async (k: openpgp.Key) => Buffer.from(k.write()).toString('base64');
    assert.equal(await readPublicKey(''), null);
    assert.equal(await readPublicKey('AAAA'), null);
    assert.equal(await readPublicKey('not base64 at all!'), null);
    assert.equal(await readPublicKey(Buffer.from('x'.repeat(1000)).toString('base64')), null);
    assert.equal(await readPublicKey(await b64(await openpgp.readPrivateKey({ armoredKey: alice.privateKeyArmored }))), null, 'secret key');
    const two = Buffer.concat([Buffer.from((await openpgp.readKey({ armoredKey: alice.publicKeyArmored })).write()), Buffer.from((await openpgp.readKey({ armoredKey: bob.publicKeyArmored })).write())]);
    assert.equal(await readPublicKey(two.toString('base64')), null, 'two keys');

    const { privateKey } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ email: 'r@example.org' }], format: 'object' });
    assert.ok(await readPublicKey(await b64(privateKey.toPublic())));
    const { publicKey: revoked } = await openpgp.revokeKey({ key: privateKey, format: 'object' });
    assert.equal(await readPublicKey(await b64(revoked)), null, 'revoked');

    const past = new Date(Date.now() - 10 * 86_400_000);
    const { publicKey: expired } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ email: 'e@example.org' }], keyExpirationTime: 86_400, date: past, format: 'object' });
    assert.equal(await readPublicKey(await b64(expired)), null, 'expired');

    const { publicKey: signOnly } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ email: 's@example.org' }], subkeys: [{ sign: true }], format: 'object' });
    assert.equal(await readPublicKey(await b64(signOnly)), null, 'no encryption subkey');
  });
});

describe('encryptMime → decryptMime', () => {
  test('1:1 round trip: protected headers inside, Delta Chat outer headers, signature by the sender', async () => {
    const inner = await aliceInner();
    const mail = await encryptMime(inner, { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });

    // Outside: only what Delta Chat leaves outside.
    const outer = headersOf(mail);
    assert.deepEqual(outer.map(([n]) => n).sort(), ['chat-version', 'content-type', 'date', 'from', 'message-id', 'mime-version', 'subject', 'to']);
    assert.equal(header(mail, 'subject'), OUTER_SUBJECT);
    assert.equal(header(mail, 'from'), '<alice@example.org>');
    assert.equal(header(mail, 'to'), '"hidden-recipients": ;');
    assert.equal(header(mail, 'message-id'), '<Mr.abc123@example.org>');
    assert.equal(header(mail, 'chat-version'), '1.0');
    assert.match(header(mail, 'content-type')!, /^multipart\/encrypted; protocol="application\/pgp-encrypted"; boundary="[^"]+"$/);
    const outerDate = Date.parse(header(mail, 'date')!);
    assert.ok(outerDate <= Date.now() + 1000 && outerDate > Date.now() - 6 * 86_400_000 - 1000, 'randomised into the last 6 days');
    const text = mail.toString('latin1');
    assert.ok(!text.includes('Hello Bob') && !text.includes('Mr.parent') && !text.includes('Alice A.'), 'no subject, references or display name in clear');
    assert.match(text, /Content-Type: application\/pgp-encrypted\r\n[^]*?\r\n\r\nVersion: 1\r\n/);
    assert.match(text, /Content-Type: application\/octet-stream[^]*?\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n/);

    // Bob decrypts; the signature is Alice's.
    const r = await decryptMime(mail, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(r);
    assert.equal(r.signedBy, alice.fingerprint);
    assert.equal(r.signature, 'valid');
    assert.equal(r.signerFromAutocrypt, false);
    assert.equal(r.from, 'alice@example.org');
    assert.equal(r.autocrypt?.addr, 'alice@example.org');
    assert.equal((await readPublicKey(r.autocrypt!.keydata))?.fingerprint, alice.fingerprint);

    // Inside: the caller's message, marked and with HP-Outer copies of the outer headers.
    const ih = headersOf(r.inner);
    assert.equal(header(r.inner, 'subject'), 'Hello Bob, a secret');
    assert.equal(header(r.inner, 'from'), '"Alice A." <alice@example.org>');
    assert.equal(header(r.inner, 'in-reply-to'), '<Mr.parent@example.net>');
    assert.ok(header(r.inner, 'autocrypt')?.startsWith('addr=alice@example.org;'));
    assert.match(header(r.inner, 'content-type')!, /protected-headers="v1"; hp="cipher"$/);
    assert.deepEqual(
      ih.filter(([n]) => n === 'hp-outer').map(([, v]) => v.split(':')[0]),
      ['Message-ID', 'From', 'To', 'Date', 'Subject', 'Chat-Version'],
    );
    assert.equal(header(r.inner, 'mime-version'), undefined);
    assert.ok(r.inner.toString('utf8').includes('Gr=C3=BC=C3=9Fe') || r.inner.toString('utf8').includes('Grüße'));
    // The body is the caller's, in canonical CRLF form (RFC 3156).
    const body = (b: Buffer) => b.subarray(b.indexOf('\r\n\r\n') + 4).toString('latin1');
    assert.equal(body(r.inner), body(inner).replace(/\r?\n/g, '\r\n'));

    // Alice's own copy is readable (encrypted to self), even knowing no key: the inner Autocrypt vouches.
    const own = await decryptMime(mail, { privateKeys: [alice.privateKeyArmored], senderPublicKeys: () => [] });
    assertOk(own);
    assert.equal(own.signedBy, alice.fingerprint);
    assert.equal(own.signerFromAutocrypt, true);
    // ...unless the caller opts out of trusting the inner Autocrypt header for verification.
    const strict = await decryptMime(mail, { privateKeys: [alice.privateKeyArmored], senderPublicKeys: () => [], useInnerAutocrypt: false });
    assertOk(strict);
    assert.equal(strict.signedBy, null);
    assert.equal(strict.signature, 'unknown-signer');
  });

  test('the signer lookup gets the From address and the issuer key id', async () => {
    const mail = await encryptMime(await innerMail(), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored, outerDate: 'same' });
    assert.equal(header(mail, 'date'), 'Mon, 07 Dec 2026 09:30:00 +0000');
    const seen: unknown[] = [];
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicKeyArmored });
    const r = await decryptMime(mail, {
      privateKeys: [carol.privateKeyArmored, bob.privateKeyArmored],
      senderPublicKeys: async (q) => {
        seen.push(q);
        return [carol.publicKeyArmored, 'garbage', alice.publicKeyArmored];
      },
    });
    assertOk(r);
    assert.equal(r.signedBy, alice.fingerprint);
    assert.deepEqual(seen, [{ from: 'alice@example.org', keyIds: [aliceKey.getKeyID().toHex()] }]);
    // A throwing lookup is no signer, not a crash.
    const t = await decryptMime(mail, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: () => { throw new Error('db down'); } });
    assertOk(t);
    assert.equal(t.signedBy, null);
    assert.equal(t.autocrypt, null, 'this mail had no Autocrypt header');
  });

  test('groups: several recipients each decrypt; attachments survive; Autocrypt-Gossip', async () => {
    const gossip = await gossipHeaders([
      { address: 'bob@example.net', publicKeyArmored: bob.publicKeyArmored },
      { address: 'carol@example.com', publicKeyArmored: carol.publicKeyArmored },
      { address: 'BOB@example.net', publicKeyArmored: bob.publicKeyArmored },
    ]);
    assert.equal(gossip.length, 2);
    assert.ok(gossip.every((g) => !g.includes('prefer-encrypt')));
    const extra = await gossipHeaders([
      { address: 'dave@example.org', publicKeyArmored: carol.publicKeyArmored },
      { address: 'alice@example.org', publicKeyArmored: carol.publicKeyArmored },
    ]);
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 3, 255, 254, 13, 10, 10, 13]);
    const inner = await aliceInner({
      to: ['bob@example.net', 'Carol <carol@example.com>'],
      headers: [...gossip, ...extra, 'addr=carol@example.com; keydata=AAAA'].map((value) => ({ key: 'Autocrypt-Gossip', value })).concat([{ key: 'Chat-Group-ID', value: 'abcdefghijklmn' }]),
      attachments: [{ filename: 'pic.png', content: png, contentType: 'image/png' }],
    });
    const mail = await encryptMime(inner, { recipientsPublicKeys: [bob.publicKeyArmored, carol.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });
    assert.ok(!mail.toString('latin1').includes('Chat-Group-ID') && !mail.toString('latin1').includes('Autocrypt'));
    for (const me of [bob, carol, alice]) {
      const r = await decryptMime(mail, { privateKeys: [me.privateKeyArmored], senderPublicKeys: knows(alice) });
      assertOk(r);
      assert.equal(r.signedBy, alice.fingerprint);
      assert.ok(r.inner.toString('latin1').includes(png.toString('base64')));
      const g = await parseGossip(r.inner);
      assert.deepEqual(
        g.map((x) => [x.addr, x.fingerprint]),
        [
          ['bob@example.net', bob.fingerprint],
          ['carol@example.com', carol.fingerprint],
        ],
        'dave is not a recipient, alice is the sender, AAAA is no key',
      );
    }
    assert.deepEqual(await parseGossip(Buffer.from('garbage without headers')), []);
  });

  test('wrong key, tampering, no private key → ok:false with a reason', async () => {
    const mail = await encryptMime(await aliceInner(), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });
    const wrong = await decryptMime(mail, { privateKeys: [carol.privateKeyArmored], senderPublicKeys: knows(alice) });
    assert.equal(wrong.ok, false);
    assert.equal(!wrong.ok && wrong.reason, 'no-key');
    const none = await decryptMime(mail, { privateKeys: ['nonsense', bob.publicKeyArmored], senderPublicKeys: knows(alice) });
    assert.equal(!none.ok && none.reason, 'no-key');

    // Flip one base64 character in the middle of the ciphertext (not the header or checksum lines).
    const text = mail.toString('latin1');
    const start = text.indexOf('-----BEGIN PGP MESSAGE-----');
    const lines = text.slice(start).split('\r\n');
    const mid = Math.floor(lines.length / 2);
    const line = lines[mid]!;
    const j = Math.floor(line.length / 2);
    lines[mid] = line.slice(0, j) + (line[j] === 'A' ? 'B' : 'A') + line.slice(j + 1);
    const tampered = Buffer.from(text.slice(0, start) + lines.join('\r\n'), 'latin1');
    const t = await decryptMime(tampered, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assert.equal(t.ok, false, 'tampered ciphertext must not decrypt');
    assert.ok(!t.ok && ['decrypt-failed', 'malformed', 'no-key'].includes(t.reason), !t.ok ? t.reason : '');
  });

  test('unsigned, signed by someone else, forged From', async () => {
    const inner = await innerMail();
    // Unsigned but encrypted.
    const unsigned = await decryptMime(pgpMime(await rawEncrypt(inner, [bob.publicKeyArmored], null)), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(unsigned);
    assert.equal(unsigned.signedBy, null);
    assert.equal(unsigned.signature, 'unsigned');

    // Claims to be from Alice, signed by Carol, with Carol's key in the inner Autocrypt header under Alice's address.
    const forged = await innerMail({ headers: [{ key: 'Autocrypt', value: await autocryptHeader('alice@example.org', carol.publicKeyArmored) }] });
    const byCarol = await decryptMime(pgpMime(await rawEncrypt(forged, [bob.publicKeyArmored], carol.privateKeyArmored)), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(byCarol);
    // The Autocrypt header names Carol's key, so the signature verifies — with Carol's fingerprint, not Alice's:
    // signedBy is a key, and the caller compares it with the key it has for alice@ (TOFU).
    assert.equal(byCarol.signedBy, carol.fingerprint);
    assert.equal(byCarol.signerFromAutocrypt, true);
    const noAc = await decryptMime(pgpMime(await rawEncrypt(inner, [bob.publicKeyArmored], carol.privateKeyArmored)), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(noAc);
    assert.equal(noAc.signedBy, null);
    assert.equal(noAc.signature, 'unknown-signer');

    // Inner From differs from the outer one and nothing vouches for it: rejected, as Delta Chat does.
    const mismatch = await decryptMime(pgpMime(await rawEncrypt(inner, [bob.publicKeyArmored], null), 'mallory@example.org'), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assert.equal(!mismatch.ok && mismatch.reason, 'from-mismatch');
    // Signed by Alice's known key, a differing outer From is accepted (the inner From is authoritative).
    const relayed = await decryptMime(pgpMime(await rawEncrypt(inner, [bob.publicKeyArmored], alice.privateKeyArmored), 'list@example.org'), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(relayed);
    assert.equal(relayed.from, 'alice@example.org');
    assert.equal(relayed.signedBy, alice.fingerprint);
  });

  test('a detached signature inside the encryption (RFC 3156 multipart/signed, as Thunderbird sends)', async () => {
    const canonical = Buffer.from((await innerMail()).toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
    const signingKeys = await openpgp.readPrivateKey({ armoredKey: alice.privateKeyArmored });
    const sig = await openpgp.sign({ message: await openpgp.createMessage({ binary: new Uint8Array(canonical) }), signingKeys, detached: true });
    const signed = (content: Buffer) =>
      Buffer.concat([
        Buffer.from('Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature";\r\n boundary="------------SIG"\r\n\r\nThis is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--------------SIG\r\n'),
        content,
        Buffer.from(`\r\n--------------SIG\r\nContent-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\nContent-Disposition: attachment; filename="OpenPGP_signature"\r\n\r\n${sig}\r\n--------------SIG--\r\n`),
      ]);
    const r = await decryptMime(pgpMime(await rawEncrypt(signed(canonical), [bob.publicKeyArmored], null)), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(r);
    assert.equal(r.signature, 'valid');
    assert.equal(r.signedBy, alice.fingerprint);
    assert.deepEqual(r.inner, canonical, 'inner is the signed part');
    assert.equal(r.from, 'alice@example.org');
    // The signed part changed after signing: the signature is there but does not verify.
    const changed = Buffer.from(canonical.toString('latin1').replace('Hello Bob', 'Hello Rob'), 'latin1');
    const bad = await decryptMime(pgpMime(await rawEncrypt(signed(changed), [bob.publicKeyArmored], null)), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(bad);
    assert.equal(bad.signature, 'invalid');
    assert.equal(bad.signedBy, null);
  });

  test('not PGP/MIME, malformed PGP/MIME, Protonmail mixed-up shape', async () => {
    const plain = await innerMail();
    const r = await decryptMime(plain, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: () => [] });
    assert.equal(!r.ok && r.reason, 'not-encrypted');
    const mail = await encryptMime(plain, { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });
    const text = mail.toString('latin1');
    const bad = [
      text.replace('protocol="application/pgp-encrypted"', 'protocol="application/pkcs7-mime"'),
      text.replace('\r\n\r\nVersion: 1', '\r\n\r\nVersion: 2'),
      text.replace(/-----BEGIN PGP MESSAGE-----[^]*-----END PGP MESSAGE-----/, '-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----'),
      text.replace('Content-Type: application/octet-stream', 'Content-Type: text/plain'),
    ];
    for (const b of bad) {
      const x = await decryptMime(Buffer.from(b, 'latin1'), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: () => [] });
      assert.equal(x.ok, false);
      assert.ok(!x.ok && ['malformed', 'not-encrypted'].includes(x.reason), !x.ok ? `${x.reason} ${x.detail}` : '');
    }
    // Protonmail: multipart/mixed [text/plain, application/pgp-encrypted, application/octet-stream].
    const armored = text.slice(text.indexOf('-----BEGIN PGP MESSAGE-----'), text.indexOf('-----END PGP MESSAGE-----') + 25);
    const proton = Buffer.from(
      ['From: <alice@example.org>', 'MIME-Version: 1.0', 'Content-Type: multipart/mixed; boundary="P"', '', '--P', 'Content-Type: text/plain', '', 'This is an OpenPGP/MIME encrypted message.', '--P', 'Content-Type: application/pgp-encrypted', '', 'Version: 1', '--P', 'Content-Type: application/octet-stream', '', armored, '--P--', ''].join('\r\n'),
      'latin1',
    );
    const p = await decryptMime(proton, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(p);
    assert.equal(p.signedBy, alice.fingerprint);
  });

  test('size bounds: raw mail, and a small ciphertext that decompresses to too much', async () => {
    const mail = await encryptMime(await aliceInner(), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });
    const big = await decryptMime(mail, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice), maxBytes: mail.length - 1 });
    assert.equal(!big.ok && big.reason, 'too-large');
    // 2 MiB of one repeated line compresses to a few KiB.
    const bomb = await aliceInner({ text: 'A'.repeat(75) + '\n'.repeat(1) + ('B'.repeat(75) + '\n').repeat(28_000) });
    const sealed = await encryptMime(bomb, { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored });
    assert.ok(sealed.length < 200_000, `compressed: ${sealed.length}`);
    const r = await decryptMime(sealed, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice), maxBytes: 1024 * 1024 });
    assert.equal(!r.ok && r.reason, 'too-large', !r.ok ? r.detail : 'decrypted');
    const fine = await decryptMime(sealed, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(fine);
    // Uncompressed works too.
    const plainSealed = await encryptMime(await aliceInner(), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored, compress: false });
    assertOk(await decryptMime(plainSealed, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) }));
  });

  test('encryptMime refuses what it cannot do', async () => {
    const inner = await aliceInner();
    await assert.rejects(encryptMime(inner, { recipientsPublicKeys: ['garbage'], senderPrivateKey: alice.privateKeyArmored }), /unreadable recipient key/);
    await assert.rejects(encryptMime(inner, { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.publicKeyArmored }), /private key/);
    await assert.rejects(encryptMime(Buffer.from('Subject: x\r\n\r\nbody'), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored }), /From/);
    const { publicKey: signOnly } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ email: 's@example.org' }], subkeys: [{ sign: true }], format: 'armored' });
    await assert.rejects(encryptMime(inner, { recipientsPublicKeys: [signOnly], senderPrivateKey: alice.privateKeyArmored }), /cannot encrypt/);
  });

  test('mutated encrypted mails: never throw, never a valid signature on changed content', async () => {
    const mail = (await encryptMime(await aliceInner(), { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: alice.privateKeyArmored })).toString('latin1');
    const bodyStart = mail.indexOf('-----BEGIN PGP MESSAGE-----') + 30;
    const bodyEnd = mail.indexOf('-----END PGP MESSAGE-----');
    const original = await decryptMime(Buffer.from(mail, 'latin1'), { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
    assertOk(original);
    await fc.assert(
      fc.asyncProperty(fc.nat(), fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split('')), async (at, ch) => {
        const i = bodyStart + (at % (bodyEnd - bodyStart));
        if (mail[i] === '\r' || mail[i] === '\n') return;
        const mutated = Buffer.from(mail.slice(0, i) + ch + mail.slice(i + 1), 'latin1');
        const r = await decryptMime(mutated, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
        if (r.ok) assert.deepEqual(r.inner, original.inner, 'only a no-op mutation (e.g. of the armor checksum) may decrypt');
      }),
      { numRuns: 40 },
    );
    for (const junk of [Buffer.alloc(0), Buffer.from('\r\n\r\n'), Buffer.from(mail.slice(0, bodyStart + 100), 'latin1')]) {
      const r = await decryptMime(junk, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: knows(alice) });
      assert.equal(r.ok, false);
    }
  });
});
