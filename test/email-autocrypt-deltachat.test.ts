// Interop of src/bridges/email/autocrypt.ts with the real Delta Chat core (deltachat-rpc-server
// 2.57.0 from node_modules), without any mail server: Delta Chat takes our generated key as its own
// self key and our public key (in a vCard) as a contact's key; the encrypted mails it then renders
// for sending (read from its SMTP queue, the `smtp` table of its SQLite database: an internal
// detail of 2.57, good enough for a pinned test dependency) decrypt and verify with decryptMime,
// their outer headers are exactly the ones encryptMime writes, and their Autocrypt/Autocrypt-Gossip
// headers parse. The second suite is a real round trip with IMAP: a private Dovecot (when the
// `dovecot` binary is there and we run as root, as in CI) and an smtp-server sink; Delta Chat
// receives our encryptMime mails as encrypted and signed (padlock, key contact with our
// fingerprint, protected subject and display name, gossiped group members as key contacts) and its
// replies decrypt and verify with decryptMime.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { freePort } from '../src/devnet/network.js';
import { SmtpSink } from './helpers/smtp-sink.js';
import { eventually } from './helpers/fed.js';
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
  gossipHeaders,
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

// ---------------------------------------------------------------------------------------------
// With IMAP: our mails into Delta Chat, its replies back.

const dovecotBinary = ['/usr/sbin/dovecot', '/usr/bin/dovecot'].find((p) => fs.existsSync(p));
const canRunDovecot = dovecotBinary !== undefined && process.getuid?.() === 0;

// CI installs Dovecot and runs as root (.ci/run): a machine without them fails here, never skips.
describe('Delta Chat core 2.57 over IMAP: reads our encrypted mails, we read its replies', () => {
  let root: string;
  let imapPort: number;
  let sink: SmtpSink;
  let dc2: DeltaChatOverJsonRpcServer;
  let acc2: number;
  let dcPub: string;
  let bridge: UserKey;
  let dave: UserKey;
  let seq = 0;

  const maildir = () => path.join(root, 'mail', 'dcuser');

  /** Delivers a raw mail into dcuser's INBOX. */
  function deliver(raw: Buffer): void {
    const file = path.join(maildir(), 'new', `${Date.now()}.${++seq}.intertalk-test`);
    fs.writeFileSync(file, raw);
    fs.chownSync(file, 65534, 65534);
  }

  async function incoming(text: string) {
    return eventually(`Delta Chat to show "${text}"`, async () => {
      for (const id of await dc2.rpc.getNextMsgs(acc2)) {
        const m = await dc2.rpc.getMessage(acc2, id);
        if (m.text === text) return m;
      }
      return null;
    }, 20_000, 100);
  }

  before(async () => {
    assert.ok(canRunDovecot, 'this test needs Dovecot (apt-get install dovecot-imapd) and root, as .ci/run provides');
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'intertalk-dc-imap-'));
    fs.chmodSync(root, 0o755); // the mail processes run as nobody
    for (const d of ['run', 'state', 'mail/dcuser/new', 'mail/dcuser/cur', 'mail/dcuser/tmp']) fs.mkdirSync(path.join(root, d), { recursive: true });
    spawnSync('chown', ['-R', 'nobody:nogroup', path.join(root, 'mail')]);
    imapPort = await freePort();
    fs.writeFileSync(
      path.join(root, 'dovecot.conf'),
      [
        'protocols = imap',
        'listen = 127.0.0.1',
        `base_dir = ${root}/run`,
        `state_dir = ${root}/state`,
        `log_path = ${root}/dovecot.log`,
        'ssl = no',
        'disable_plaintext_auth = no',
        'auth_mechanisms = plain login',
        `mail_location = maildir:${root}/mail/%n`,
        'passdb {\n  driver = static\n  args = password=pass\n}',
        `userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=${root}/mail/%n\n}`,
        `service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n    port = ${imapPort}\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}`,
        'protocol imap {\n  mail_max_userip_connections = 50\n}',
        '',
      ].join('\n'),
    );
    // stdio ignored: the daemonised master would otherwise hold spawnSync's pipes open.
    const started = spawnSync(dovecotBinary!, ['-c', path.join(root, 'dovecot.conf')], { stdio: 'ignore' });
    assert.equal(started.status, 0, fs.existsSync(path.join(root, 'dovecot.log')) ? fs.readFileSync(path.join(root, 'dovecot.log'), 'utf8') : 'dovecot failed');
    await eventually('dovecot', () => new Promise<true | null>((resolve) => {
      const s = net.connect(imapPort, '127.0.0.1');
      s.once('data', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(null));
    }), 20_000, 100);

    sink = await new SmtpSink().start();

    dc2 = startDeltaChat(path.join(root, 'accounts'), { muteStdErr: !process.env.INTERTALK_DC_DEBUG });
    acc2 = await dc2.rpc.addAccount();
    await dc2.rpc.addOrUpdateTransport(acc2, {
      addr: 'dcuser@example.org',
      password: 'pass',
      imapServer: '127.0.0.1',
      imapPort,
      imapFolder: null,
      imapSecurity: 'plain',
      imapUser: 'dcuser',
      smtpServer: '127.0.0.1',
      smtpPort: sink.port,
      smtpSecurity: 'plain',
      smtpUser: 'dcuser',
      smtpPassword: 'pass',
      certificateChecks: null,
    });
    await dc2.rpc.startIo(acc2);
    // Delta Chat does not fetch mails that were in the INBOX before its first sync: deliver after it.
    await eventually('Delta Chat to be connected', async () => ((await dc2.rpc.getConnectivity(acc2)) >= 4000 ? true : null), 20_000, 100);
    fs.mkdirSync(path.join(root, 'export'));
    await dc2.rpc.exportSelfKeys(acc2, path.join(root, 'export'), null);
    dcPub = fs.readFileSync(path.join(root, 'export', fs.readdirSync(path.join(root, 'export')).find((f) => f.startsWith('public-key-'))!), 'utf8');
    [bridge, dave] = await Promise.all([generateUserKey('alice@example.org'), generateUserKey('dave@example.com')]);
  });

  after(async () => {
    if (dc2) {
      await dc2.rpc.stopIo(acc2).catch(() => {});
      (dc2 as unknown as { transport: { input: NodeJS.WritableStream } }).transport.input.on('error', () => {});
      dc2.close();
    }
    await sink?.stop();
    const pidFile = root ? path.join(root, 'run', 'master.pid') : '';
    if (pidFile && fs.existsSync(pidFile)) {
      try {
        process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()));
      } catch {
        // already gone
      }
    }
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  test('1:1: padlock, key contact with our fingerprint, protected subject and name; the reply decrypts and verifies', async () => {
    const inner = await new MailComposer({
      from: 'Alice Bridge <alice@example.org>',
      to: 'dcuser@example.org',
      subject: 'A protected subject',
      messageId: '<bridge-1@example.org>',
      date: new Date(),
      text: 'hello Delta Chat, from the bridge',
      headers: [
        { key: 'Chat-Version', value: '1.0' },
        { key: 'Autocrypt', value: await autocryptHeader('alice@example.org', bridge.publicKeyArmored) },
      ],
    })
      .compile()
      .build();
    deliver(await encryptMime(inner, { recipientsPublicKeys: [dcPub], senderPrivateKey: bridge.privateKeyArmored }));
    const msg = await incoming('hello Delta Chat, from the bridge');
    assert.equal(msg.showPadlock, true, 'Delta Chat shows it as end-to-end encrypted');
    assert.equal(msg.error, null);
    assert.equal(msg.subject, 'A protected subject');
    const contact = await dc2.rpc.getContact(acc2, msg.fromId);
    assert.equal(contact.address, 'alice@example.org');
    assert.equal(contact.isKeyContact, true);
    assert.equal(contact.displayName, 'Alice Bridge');
    assert.ok((await dc2.rpc.getContactEncryptionInfo(acc2, msg.fromId)).replace(/\s+/g, '').includes(bridge.fingerprint));
    assert.equal((await dc2.rpc.getFullChatById(acc2, msg.chatId)).isEncrypted, true);

    await dc2.rpc.acceptChat(acc2, msg.chatId);
    await dc2.rpc.miscSendTextMessage(acc2, msg.chatId, 'reply from Delta Chat');
    const reply = await eventually('the reply over SMTP', async () => sink.mails.find((m) => m.to.includes('alice@example.org') && m.raw.includes('multipart/encrypted')), 20_000, 100);
    const r = await decryptMime(reply.raw, { privateKeys: [bridge.privateKeyArmored], senderPublicKeys: () => [dcPub] });
    assert.ok(r.ok, r.ok ? '' : `${r.reason} ${r.detail}`);
    assert.equal(r.signature, 'valid');
    assert.equal(r.signerFromAutocrypt, false);
    assert.ok(r.inner.toString('utf8').includes('reply from Delta Chat'));
    assert.match(r.inner.toString('latin1'), /^In-Reply-To: <bridge-1@example\.org>\r$/m);
  });

  test('group: gossiped members become key contacts of the group', async () => {
    const others = await gossipHeaders([
      { address: 'dcuser@example.org', publicKeyArmored: dcPub },
      { address: 'dave@example.com', publicKeyArmored: dave.publicKeyArmored },
    ]);
    const inner = await new MailComposer({
      from: 'Alice Bridge <alice@example.org>',
      to: ['dcuser@example.org', 'Dave <dave@example.com>'],
      subject: 'Bridge group',
      messageId: '<bridge-2@example.org>',
      date: new Date(),
      text: 'hello group, from the bridge',
      headers: [
        { key: 'Chat-Version', value: '1.0' },
        { key: 'Chat-Group-ID', value: 'intertalkgrp01' },
        { key: 'Chat-Group-Name', value: 'Bridge group' },
        { key: 'Autocrypt', value: await autocryptHeader('alice@example.org', bridge.publicKeyArmored) },
        ...others.map((value) => ({ key: 'Autocrypt-Gossip', value })),
      ],
    })
      .compile()
      .build();
    deliver(await encryptMime(inner, { recipientsPublicKeys: [dcPub, dave.publicKeyArmored], senderPrivateKey: bridge.privateKeyArmored }));
    const msg = await incoming('hello group, from the bridge');
    assert.equal(msg.showPadlock, true);
    const chat = await dc2.rpc.getFullChatById(acc2, msg.chatId);
    assert.equal(chat.name, 'Bridge group');
    assert.equal(chat.isEncrypted, true);
    const members = await Promise.all((await dc2.rpc.getChatContacts(acc2, msg.chatId)).map((id) => dc2.rpc.getContact(acc2, id)));
    const daveContact = members.find((c) => c.address === 'dave@example.com');
    assert.ok(daveContact, members.map((c) => c.address).join(', '));
    assert.equal(daveContact.isKeyContact, true, 'Dave came with his gossiped key');
    assert.ok((await dc2.rpc.getContactEncryptionInfo(acc2, daveContact.id)).replace(/\s+/g, '').includes(dave.fingerprint));
  });
});
