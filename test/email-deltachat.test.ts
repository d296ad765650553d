// The e-mail bridge against parts nobody here wrote: Debian's Postfix and Dovecot on loopback
// (test/helpers/mail-servers.ts) and Delta Chat's own core (deltachat-rpc-server 2.57.0, driven
// over its JSON-RPC) as the e-mail users dc@mail.test and dc2@mail.test, with Delta Chat's
// default settings. Our provider a.test sends through Postfix (SMTP submission with AUTH) and
// reads its catch-all mailbox (every address @a.test) from Dovecot over IMAP IDLE.
//
// One story, in order. Delta Chat's default (force_encryption) neither sends nor accepts mail in
// the clear, so it starts: dc imports alice's contact card (GET /me/email/card: address and key)
// and writes, encrypted; alice's answers go back encrypted to the key dc's mail carried. Then a
// reply, edits, deletes for everyone, reactions, read receipts both ways, an image both ways, a
// group both ways (dc2's key reaches us by gossip), the same in the clear with a Delta Chat whose
// force_encryption is off (alice writes first) and an ordinary mail client's message, and
// Postfix down for 10 minutes (the bridge retries and delivers each message once, in order).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startDeltaChat, type DeltaChatOverJsonRpcServer } from '@deltachat/stdio-rpc-server';
import { startMailServers, type MailServers } from './helpers/mail-servers.js';
import { startNetwork, type Network } from './helpers/network.js';
import { api, deliveries, eventually, fedUser, history, say, type FedUser } from './helpers/fed.js';
import { canonicalParticipants, conversationId } from '../src/protocol/conversation.js';

const A = 'a.test';
const PW = 'test-password';
const LONG = 90_000;

/** A valid 1×1 PNG (one red pixel). */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC', 'base64');

describe('e-mail bridge with Delta Chat, Postfix and Dovecot', () => {
  let mail: MailServers;
  let net: Network;
  let dcDir: string;
  let dc: DeltaChatOverJsonRpcServer;
  let acc1: number;
  let acc2: number;
  let acc3: number;
  let alice: FedUser;
  const DC1 = 'dc@mail.test';
  const DC2 = 'dc2@mail.test';
  const DC3 = 'dc3@mail.test';
  const conv1 = conversationId([`alice@${A}`, DC1]);

  const text = async (m: any) => m.rich?.text ?? m.message;

  /** A message Delta Chat account `acc` shows, matching `pred` (any chat). */
  async function dcMessage(acc: number, what: string, pred: (m: any) => boolean, timeoutMs = LONG): Promise<any> {
    return eventually(
      `Delta Chat: ${what}`,
      async () => {
        for (const chatId of await dc.rpc.getChatlistEntries(acc, null, null, null)) {
          for (const id of await dc.rpc.getMessageIds(acc, chatId, false, false)) {
            const m = await dc.rpc.getMessage(acc, id);
            if (pred(m)) return m;
          }
        }
        return null;
      },
      timeoutMs,
      250,
    );
  }

  async function dcUser(address: string, config: Record<string, string> = {}): Promise<number> {
    const acc = await dc.rpc.addAccount();
    for (const [k, v] of Object.entries(config)) await dc.rpc.setConfig(acc, k, v);
    await dc.rpc.addOrUpdateTransport(acc, {
      addr: address,
      password: PW,
      imapServer: mail.imap.host,
      imapPort: mail.imap.port,
      imapFolder: null,
      imapSecurity: 'plain',
      imapUser: address,
      smtpServer: mail.smtp.host,
      smtpPort: mail.smtp.port,
      smtpSecurity: 'plain',
      smtpUser: address,
      smtpPassword: PW,
      certificateChecks: null,
    });
    // Delta Chat skips what is in the INBOX before its first fetch: wait until it idles there.
    let idle = false;
    dc.getContextEvents(acc).once('ImapInboxIdle', () => (idle = true));
    await dc.rpc.startIo(acc);
    await eventually(`Delta Chat ${address} idling in its INBOX`, async () => idle, LONG, 100);
    return acc;
  }

  /** The mail Message-ID → our message: alice's view of the conversation. */
  async function aliceSees(convId: string, what: string, pred: (m: any) => boolean | Promise<boolean>): Promise<any> {
    return eventually(
      `alice sees ${what}`,
      async () => {
        for (const m of await history(net, alice, convId)) if (await pred(m)) return m;
        return null;
      },
      LONG,
      200,
    );
  }

  before(async () => {
    mail = await startMailServers({ domains: ['mail.test', A], catchAll: { [A]: `bridge@${A}` } });
    for (const u of [`bridge@${A}`, DC1, DC2, DC3]) await mail.addUser(u, PW);
    net = await startNetwork({
      domains: [A],
      env: { INTERTALK_FEDERATION_SWEEP: '200ms' },
      envFor: {
        [A]: {
          INTERTALK_EMAIL: 'on',
          INTERTALK_EMAIL_SMTP: `smtp://${encodeURIComponent(`bridge@${A}`)}:${PW}@${mail.smtp.host}:${mail.smtp.port}`,
          INTERTALK_EMAIL_IMAP: `imap://${encodeURIComponent(`bridge@${A}`)}:${PW}@${mail.imap.host}:${mail.imap.port}/INBOX`,
          INTERTALK_EMAIL_POLL: '2s',
          ...(process.env.INTERTALK_EMAIL_DEBUG ? { INTERTALK_LOG_LEVEL: 'debug' } : {}),
        },
      },
    });
    alice = await fedUser(net, A, 'alice');
    dcDir = mkdtempSync(join(tmpdir(), 'intertalk-dc-'));
    dc = startDeltaChat(join(dcDir, 'accounts'), { muteStdErr: !process.env.INTERTALK_DC_DEBUG });
    acc1 = await dcUser(DC1);
    acc2 = await dcUser(DC2);
    acc3 = await dcUser(DC3, { force_encryption: '0' });
  });

  after(async () => {
    if (dc) {
      for (const a of [acc1, acc2, acc3]) if (a !== undefined) await dc.rpc.stopIo(a).catch(() => undefined);
      (dc as unknown as { transport: { input: NodeJS.WritableStream } }).transport.input.on('error', () => undefined);
      dc.close();
    }
    await net?.stop();
    await mail?.stop();
    if (dcDir) rmSync(dcDir, { recursive: true, force: true });
  });

  /** alice's message in the 1:1 chat, on our side and as Delta Chat shows it; Delta Chat's first message, both sides. */
  let aliceMsg: any;
  let dcAlice: any;
  let dcMine: any;
  let mine: any;

  it('1:1: Delta Chat (default settings) writes to alice from her contact card; her answer comes back encrypted', async (t) => {
    try {
      const card = await api(net, A, 'GET', '/me/email/card', { token: alice.token });
      assert.equal(card.status, 200);
      assert.match(String(card.body), /^BEGIN:VCARD\r\nVERSION:4\.0\r\nEMAIL:alice@a\.test\r\n/);
      const [contact] = await dc.rpc.importVcardContents(acc1, String(card.body));
      assert.equal((await dc.rpc.getContact(acc1, contact!)).isKeyContact, true, 'Delta Chat takes alice\'s key from the card');
      const chat = await dc.rpc.createChatByContactId(acc1, contact!);
      const id = await dc.rpc.miscSendTextMessage(acc1, chat, 'Hi alice, Delta Chat here');
      dcMine = await dc.rpc.getMessage(acc1, id);
      mine = await aliceSees(conv1, 'Delta Chat\'s first message', async (m) => m.from === DC1 && (await text(m)) === 'Hi alice, Delta Chat here');
      assert.notEqual(mine.insecure, true, 'encrypted and signed by a key alice\'s provider has');
      const r = await api(net, A, 'POST', `/conversations/${conv1}/messages`, { token: alice.token, json: { text: 'Hello Delta Chat, this is intertalk', replyTo: mine.seq } });
      assert.equal(r.status, 201);
      aliceMsg = r.body;
      dcAlice = await dcMessage(acc1, 'alice\'s reply', (m) => m.text === 'Hello Delta Chat, this is intertalk');
      assert.equal(dcAlice.chatId, chat, 'in the same chat');
      assert.equal(dcAlice.showPadlock, true, 'end-to-end encrypted');
      assert.equal(dcAlice.quote?.text, 'Hi alice, Delta Chat here');
      await eventually('delivered', async () => (await deliveries(net, alice, aliceMsg)).find((x) => x.state === 'delivered'), LONG);
    } catch (err) {
      t.diagnostic(mail.logTail());
      throw err;
    }
  });

  it('edits, reactions and deletes both ways', async () => {
    await dc.rpc.sendEditRequest(acc1, dcMine.id, 'Hi alice, Delta Chat here (edited)');
    await aliceSees(conv1, 'the edit', async (m) => m.seq === mine.seq && (await text(m)) === 'Hi alice, Delta Chat here (edited)');
    await dc.rpc.sendReaction(acc1, dcAlice.id, ['👍']);
    await aliceSees(conv1, 'the reaction', (m) => m.id === aliceMsg.id && (m.reactions ?? []).some((r: any) => r.emoji === '👍'));
    const r1 = await api(net, A, 'POST', `/conversations/${conv1}/messages/${mine.seq}/reactions`, { token: alice.token, json: { emoji: '🎉' } });
    assert.equal(r1.status, 201);
    await eventually('Delta Chat shows alice\'s reaction', async () => {
      const r = await dc.rpc.getMessageReactions(acc1, dcMine.id);
      return r && JSON.stringify(r).includes('🎉');
    }, LONG, 250);
    const r2 = await api(net, A, 'PATCH', `/conversations/${conv1}/messages/${aliceMsg.seq}`, { token: alice.token, json: { text: 'Hello Delta Chat (edited)' } });
    assert.equal(r2.status, 201);
    await dcMessage(acc1, 'alice\'s edit', (m) => m.id === dcAlice.id && m.text === 'Hello Delta Chat (edited)' && m.isEdited);
    const gone = await say(net, alice, [DC1], 'this will be deleted');
    const shown = await dcMessage(acc1, 'the message to delete', (m) => m.text === 'this will be deleted');
    const r3 = await api(net, A, 'DELETE', `/conversations/${conv1}/messages/${gone.seq}`, { token: alice.token });
    assert.equal(r3.status, 201);
    await eventually('Delta Chat deleted it', async () => !(await dc.rpc.getMessageIds(acc1, shown.chatId, false, false)).includes(shown.id), LONG, 250);
    const doomed = await dc.rpc.miscSendTextMessage(acc1, dcAlice.chatId, 'Delta Chat deletes this');
    const theirs = await aliceSees(conv1, 'the message Delta Chat deletes', async (m) => (await text(m)) === 'Delta Chat deletes this');
    await dc.rpc.deleteMessagesForAll(acc1, [doomed]);
    await aliceSees(conv1, 'the delete', (m) => m.seq === theirs.seq && m.deleted === true);
  });

  it('read receipts both ways', async () => {
    const unread = await dc.rpc.miscSendTextMessage(acc1, dcAlice.chatId, 'read this, alice');
    await aliceSees(conv1, 'the message to read', async (m) => (await text(m)) === 'read this, alice');
    await dc.rpc.markseenMsgs(acc1, [dcAlice.id]);
    await eventually('alice sees Delta Chat\'s receipt', async () => {
      const r = await api(net, A, 'GET', `/conversations/${conv1}/receipts`, { token: alice.token });
      return Array.isArray(r.body) && r.body.some((x: any) => x.address === DC1);
    }, LONG, 250);
    const r = await api(net, A, 'POST', `/conversations/${conv1}/read`, { token: alice.token, json: {} });
    assert.equal(r.status, 200);
    // Delta Chat's message state 28 = DC_STATE_OUT_MDN_RCVD ("read").
    await eventually('Delta Chat sees alice\'s receipt', async () => (await dc.rpc.getMessage(acc1, unread)).state === 28, LONG, 250);
  });

  it('an image both ways', async () => {
    const file = join(dcDir, 'red.png');
    writeFileSync(file, PNG);
    await dc.rpc.sendMsg(acc1, dcAlice.chatId, { text: 'a picture', html: null, viewtype: 'Image', file, filename: 'red.png', location: null, overrideSenderName: null, quotedMessageId: null, quotedText: null });
    const got = await aliceSees(conv1, 'the image', (m) => m.from === DC1 && (m.rich?.attachments ?? []).length === 1);
    const a = got.rich.attachments[0];
    assert.equal(a.mediaType, 'image/png');
    assert.deepEqual(await fetchAttachment(a.id), PNG);
    const up = await upload(PNG, 'image/png', 'back.png');
    const sent = await api(net, A, 'POST', `/conversations/${conv1}/messages`, { token: alice.token, json: { text: 'one back', attachments: [{ id: up.id, name: 'back.png' }] } });
    assert.equal(sent.status, 201);
    const shown = await dcMessage(acc1, 'alice\'s image', (m) => m.text === 'one back' && m.file !== null);
    assert.equal(shown.viewType, 'Image');
    assert.deepEqual(readFileSync(shown.file), PNG);
  });

  it('a group both ways', async () => {
    // dc knows dc2 by her card, as Delta Chat users share contacts.
    const [c2] = await dc.rpc.importVcardContents(acc1, await dc.rpc.makeVcard(acc2, [1]));
    const ca = dcAlice.fromId;
    const group = await dc.rpc.createGroupChat(acc1, 'Bridge group', false);
    await dc.rpc.addContactToChat(acc1, group, c2!);
    await dc.rpc.addContactToChat(acc1, group, ca);
    const hello = await dc.rpc.miscSendTextMessage(acc1, group, 'hello group');
    const gconv = conversationId(canonicalParticipants([`alice@${A}`, DC1, DC2]));
    try {
      await aliceSees(gconv, 'the group message', async (m) => m.from === DC1 && (await text(m)) === 'hello group');
    } catch (err) {
      const m = await dc.rpc.getMessage(acc1, hello);
      throw new Error(`${(err as Error).message}; Delta Chat's message: state ${m.state}, error ${m.error}\n${mail.logTail(30)}`);
    }
    const conv = await api(net, A, 'GET', `/conversations/${gconv}`, { token: alice.token });
    assert.equal(conv.status, 200);
    assert.equal(conv.body.title, 'Bridge group');
    await say(net, alice, [DC1, DC2], 'hello from alice to the group');
    const at1 = await dcMessage(acc1, 'alice in the group (dc)', (m) => m.text === 'hello from alice to the group');
    assert.equal(at1.chatId, group, 'in the same group chat');
    assert.equal(at1.showPadlock, true);
    const at2 = await dcMessage(acc2, 'alice in the group (dc2)', (m) => m.text === 'hello from alice to the group');
    assert.equal((await dc.rpc.getFullChatById(acc2, at2.chatId)).name, 'Bridge group');
  });

  it('with force_encryption off: alice starts in the clear; an ordinary mail client\'s message arrives readable', async () => {
    const m = await say(net, alice, [DC3], 'Hello plain Delta Chat');
    const shown = await dcMessage(acc3, 'alice\'s plain message', (x) => x.text === 'Hello plain Delta Chat');
    assert.equal(shown.showPadlock, false);
    await eventually('delivered', async () => (await deliveries(net, alice, m)).find((x) => x.state === 'delivered'), LONG);
    await dc.rpc.acceptChat(acc3, shown.chatId);
    await dc.rpc.miscSendTextMessage(acc3, shown.chatId, 'plain answer');
    await aliceSees(conversationId([`alice@${A}`, DC3]), 'the plain answer', async (x) => x.from === DC3 && (await text(x)) === 'plain answer');
    // An ordinary mail client (nodemailer), through Postfix like everyone else.
    const t = nodemailer.createTransport({ host: mail.smtp.host, port: mail.smtp.port, secure: false, auth: { user: DC3, pass: PW } });
    try {
      await t.sendMail({ from: `Dora <${DC3}>`, to: `alice@${A}`, subject: 'Minutes', text: 'The minutes are attached in my head.\n\n-- \nDora\nsent from a desk', html: '<p>The minutes are attached in my head.</p>' });
    } finally {
      t.close();
    }
    const got = await aliceSees(conversationId([`alice@${A}`, DC3]), 'the ordinary mail', async (x) => /minutes are attached/.test(await text(x)));
    assert.doesNotMatch(await text(got), /sent from a desk/);
  });

  it('Postfix down for 10 minutes: the bridge retries and delivers, nothing lost or duplicated', async () => {
    // INTERTALK_TEST_MAIL_OUTAGE shortens the outage for a quick local run; CI takes the 10 minutes.
    const outage = Number(process.env.INTERTALK_TEST_MAIL_OUTAGE ?? 600_000);
    await mail.stopPostfix();
    const texts = ['sent while Postfix was down (1)', 'sent while Postfix was down (2)', 'sent while Postfix was down (3)'];
    const sent: any[] = [];
    for (const t of texts) sent.push(await say(net, alice, [DC1], t));
    await eventually('a failed attempt', async () => (await deliveries(net, alice, sent[0])).find((d) => d.state === 'queued' && d.attempts >= 1), LONG, 250);
    await new Promise((r) => setTimeout(r, outage));
    for (const m of sent) assert.equal((await deliveries(net, alice, m)).find((d) => d.destination === 'mail.test')?.state, 'queued', 'still queued after the outage');
    await mail.startPostfix();
    for (const m of sent) await eventually('delivered', async () => (await deliveries(net, alice, m)).find((d) => d.state === 'delivered'), 180_000, 500);
    const shown: any[] = [];
    for (const t of texts) shown.push(await dcMessage(acc1, t, (x) => x.text === t, 180_000));
    for (const m of shown) assert.equal(m.chatId, dcAlice.chatId);
    // Once each, in the order sent.
    await new Promise((r) => setTimeout(r, 2_000));
    const inChat: string[] = [];
    for (const id of await dc.rpc.getMessageIds(acc1, dcAlice.chatId, false, false)) {
      const t = (await dc.rpc.getMessage(acc1, id)).text;
      if (texts.includes(t)) inChat.push(t);
    }
    assert.deepEqual(inChat, texts);
  });

  it('a real bounce (Postfix\'s DSN, read back over IMAP) shows alice a failed state', async () => {
    const m = await say(net, alice, [`nobody@${mail.bounceDomain}`], 'this one bounces');
    const failed = await eventually('failed after the bounce', async () => (await deliveries(net, alice, m)).find((d) => d.state === 'failed'), LONG, 250);
    assert.match(failed.lastError, /bounced/);
  });

  async function upload(data: Buffer, type: string, name: string): Promise<{ id: string }> {
    const node = net.node(A);
    const { Agent, fetch } = await import('undici');
    const dispatcher = new Agent({ connect: { ca: net.ca.caCert, servername: A } });
    try {
      const res = await fetch(`${node.url}/attachments?name=${encodeURIComponent(name)}`, { method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': type }, body: data, dispatcher });
      assert.equal(res.status, 201, await res.clone().text());
      return (await res.json()) as { id: string };
    } finally {
      await dispatcher.close();
    }
  }

  async function fetchAttachment(id: string): Promise<Buffer> {
    const node = net.node(A);
    const { Agent, fetch } = await import('undici');
    const dispatcher = new Agent({ connect: { ca: net.ca.caCert, servername: A } });
    try {
      const res = await fetch(`${node.url}/attachments/${id}`, { headers: { authorization: `Bearer ${alice.token}` }, dispatcher });
      assert.equal(res.status, 200);
      return Buffer.from(await res.arrayBuffer());
    } finally {
      await dispatcher.close();
    }
  }
});
