// Interop of src/bridges/email/autocrypt.ts with the real Delta Chat core (deltachat-rpc-server
// 2.57.0 from node_modules), without any mail server: Delta Chat takes our generated key as its own
// self key and our public key (in a vCard) as a contact's key; the encrypted mails it then renders
// for sending (read from its SMTP queue, the `smtp` table of its SQLite database: an internal
// detail of 2.57, good enough for a pinned test dependency) decrypt and verify with decryptMime,
// their outer headers are exactly the ones encryptMime writes, and their Autocrypt/Autocrypt-Gossip
// headers parse. The other direction (Delta Chat reading our mails) needs IMAP: see the mail tests.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import MailComposer from 'nodemailer/lib/mail-composer';
import { startDeltaChat, type DeltaChatOverJsonRpcServer } from '@deltachat/stdio-rpc-server';
import {
  generateUserKey,
  autocryptHeader,
  parseAutocryptHeader,
  readPublicKey,
  decryptMime,
  encryptMime,
  parseGossip,
  type UserKey,
} from '../src/bridges/email/autocrypt.js';

let dir: string;
let dc: DeltaChatOverJsonRpcServer;
let acc: number;
let self: UserKey;
let bob: UserKey;
let carol: UserKey;
let bobId: number;
let carolId: number;

async function vcardContact(address: string, key: UserKey): Promise<number> {
  const keydata = parseAutocryptHeader(await autocryptHeader(address, key.publicKeyArmored), address)!.keydata;
  const ids = await dc.rpc.importVcardContents(acc, `BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:${address}\r\nFN:${address.split('@')[0]}\r\nKEY:data:application/pgp-keys;base64,${keydata}\r\nEND:VCARD\r\n`);
  assert.equal(ids.length, 1);
  return ids[0]!;
}

/** The rendered mails Delta Chat has queued for SMTP, oldest first. */
function queued(): Array<{ mime: Buffer; recipients: string }> {
  const accDir = fs.readdirSync(path.join(dir, 'accounts')).map((d) => path.join(dir, 'accounts', d)).find((d) => fs.existsSync(path.join(d, 'dc.db')));
  assert.ok(accDir, 'account database');
  const db = new Database(path.join(accDir, 'dc.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT mime, recipients FROM smtp ORDER BY id').all() as Array<{ mime: string | Buffer; recipients: string }>).map((r) => ({ mime: Buffer.from(r.mime as string), recipients: r.recipients }));
  } finally {
    db.close();
  }
}

const headerNames = (mail: Buffer) =>
  mail
    .toString('latin1')
    .slice(0, mail.indexOf('\r\n\r\n'))
    .split('\r\n')
    .filter((l) => !/^[ \t]/.test(l))
    .map((l) => l.slice(0, l.indexOf(':')).toLowerCase())
    .sort();

describe('Delta Chat core 2.57 and our keys and PGP/MIME', () => {
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'intertalk-dc-'));
    [self, bob, carol] = await Promise.all([generateUserKey('dcuser@example.org'), generateUserKey('bob@example.net'), generateUserKey('carol@example.com')]);
    dc = startDeltaChat(path.join(dir, 'accounts'), { muteStdErr: true });
    acc = await dc.rpc.addAccount();
    // No mail server: mark the account configured by hand so sending renders into the SMTP queue.
    for (const [k, v] of [
      ['addr', 'dcuser@example.org'],
      ['configured_addr', 'dcuser@example.org'],
      ['configured', '1'],
      ['bcc_self', '0'],
    ] as const) {
      await dc.rpc.setConfig(acc, k, v);
    }
    fs.mkdirSync(path.join(dir, 'import'));
    fs.writeFileSync(path.join(dir, 'import', 'private-key-default.asc'), self.privateKeyArmored);
    await dc.rpc.importSelfKeys(acc, path.join(dir, 'import'), null);
    bobId = await vcardContact('bob@example.net', bob);
    carolId = await vcardContact('carol@example.com', carol);
  });

  after(async () => {
    // The client's event loop keeps writing to the server's stdin: swallow the EPIPE after close.
    (dc as unknown as { transport: { input: NodeJS.WritableStream } }).transport.input.on('error', () => {});
    dc.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('Delta Chat takes our generated key as its own and our public keys as key contacts', async () => {
    fs.mkdirSync(path.join(dir, 'export'));
    await dc.rpc.exportSelfKeys(acc, path.join(dir, 'export'), null);
    const files = fs.readdirSync(path.join(dir, 'export'));
    assert.ok(files.some((f) => f.includes(self.fingerprint) && f.startsWith('private-key-')), files.join(', '));
    const pub = fs.readFileSync(path.join(dir, 'export', files.find((f) => f.startsWith('public-key-'))!), 'utf8');
    const kd = parseAutocryptHeader(await autocryptHeader('dcuser@example.org', pub), 'dcuser@example.org')!.keydata;
    assert.equal((await readPublicKey(kd))?.fingerprint, self.fingerprint);

    const contact = await dc.rpc.getContact(acc, bobId);
    assert.equal(contact.isKeyContact, true);
    assert.equal(contact.e2eeAvail, true);
    const info = (await dc.rpc.getContactEncryptionInfo(acc, bobId)).replace(/\s+/g, '');
    assert.ok(info.includes(bob.fingerprint), info);
    assert.ok(info.includes(self.fingerprint), info);
  });

  test('a 1:1 mail Delta Chat encrypts to our key: decrypts, verifies, same outer headers as ours', async () => {
    const chat = await dc.rpc.createChatByContactId(acc, bobId);
    await dc.rpc.miscSendTextMessage(acc, chat, 'hello from Delta Chat');
    const mails = queued();
    assert.equal(mails.length, 1);
    const mail = mails[0]!.mime;
    assert.equal(mails[0]!.recipients, 'bob@example.net');

    const r = await decryptMime(mail, { privateKeys: [bob.privateKeyArmored], senderPublicKeys: () => [self.publicKeyArmored] });
    assert.ok(r.ok, r.ok ? '' : `${r.reason} ${r.detail}`);
    assert.equal(r.signedBy, self.fingerprint);
    assert.equal(r.signature, 'valid');
    assert.equal(r.from, 'dcuser@example.org');
    assert.equal((await readPublicKey(r.autocrypt!.keydata))?.fingerprint, self.fingerprint);
    assert.ok(r.inner.toString('utf8').includes('hello from Delta Chat'));
    assert.match(r.inner.toString('latin1').split('\r\n\r\n')[0]!.replace(/\r\n[ \t]/g, ' '), /^Content-Type: text\/plain; charset="utf-8"; protected-headers="v1"; +hp="cipher"/);

    // Our rendering of a similar mail has the same outer header set as Delta Chat's.
    const ours = await encryptMime(
      await new MailComposer({ from: 'dcuser@example.org', to: 'bob@example.net', subject: 'x', messageId: '<a@b>', text: 'hi', headers: [{ key: 'Chat-Version', value: '1.0' }] }).compile().build(),
      { recipientsPublicKeys: [bob.publicKeyArmored], senderPrivateKey: self.privateKeyArmored },
    );
    assert.deepEqual(headerNames(ours), headerNames(mail));
  });

  test('a group mail: decrypts for each member, Autocrypt-Gossip names the other members', async () => {
    const before = queued().length;
    const group = await dc.rpc.createGroupChat(acc, 'Bridge group', false);
    await dc.rpc.addContactToChat(acc, group, bobId);
    await dc.rpc.addContactToChat(acc, group, carolId);
    await dc.rpc.miscSendTextMessage(acc, group, 'hello group');
    const mails = queued().slice(before);
    const mail = mails.find((m) => m.recipients.includes('bob@example.net') && m.recipients.includes('carol@example.com'));
    assert.ok(mail, mails.map((m) => m.recipients).join(' | '));
    for (const me of [bob, carol]) {
      const r = await decryptMime(mail.mime, { privateKeys: [me.privateKeyArmored], senderPublicKeys: () => [self.publicKeyArmored] });
      assert.ok(r.ok, r.ok ? '' : `${r.reason} ${r.detail}`);
      assert.equal(r.signedBy, self.fingerprint);
      const gossip = await parseGossip(r.inner);
      assert.deepEqual(
        gossip.map((g) => [g.addr, g.fingerprint]).sort(),
        [
          ['bob@example.net', bob.fingerprint],
          ['carol@example.com', carol.fingerprint],
        ],
      );
    }
  });
});
