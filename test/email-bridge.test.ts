// The e-mail bridge end to end on real sockets, with the mail world reduced to two SMTP servers:
// the submission server our provider sends through (an smtp-server in this test that keeps what
// it is given, or refuses it on demand) and our provider's own SMTP listener (its MX), to which
// the test delivers what "bob@mail.test" writes — mail as Delta Chat writes it (built with the
// bridge's own mime-out.ts, whose output test/email-format.test.ts compares with Delta Chat's),
// ordinary mail, receipts, bounces and bad mail. Delta Chat itself, Postfix and Dovecot are in
// test/email-deltachat.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import { simpleParser } from 'mailparser';
import { startNetwork, freePort, type Network } from './helpers/network.js';
import { SmtpSink, type TakenMail } from './helpers/smtp-sink.js';
import { api, deliveries, eventually, fedUser, history, say, type FedUser } from './helpers/fed.js';
import { buildChatMail, messageIdFor } from '../src/bridges/email/mime-out.js';
import type { ChatAction, OutgoingChatMail } from '../src/bridges/email/model.js';
import { conversationId } from '../src/protocol/conversation.js';

const A = 'a.test';
const B = 'b.test';
const BOB = 'bob@mail.test';

describe('e-mail bridge (SMTP in and out)', () => {
  let net: Network;
  let sink: SmtpSink;
  let mx: number;
  let alice: FedUser;
  let carolB: FedUser;
  const conv = conversationId([`alice@${A}`, BOB]);
  const bobSeed = (n: number) => Buffer.alloc(16, n);

  /** Delivers a raw mail to our provider's MX (as bob's mail server would). */
  async function deliver(raw: Buffer | string, from = BOB, to = [`alice@${A}`]): Promise<void> {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: mx, secure: false, ignoreTLS: true });
    try {
      await t.sendMail({ envelope: { from, to }, raw });
    } finally {
      t.close();
    }
  }

  /** A mail from bob as Delta Chat writes it. */
  function fromBob(n: number, action: ChatAction, extra: Partial<OutgoingChatMail> = {}): { id: string; raw: Promise<Buffer> } {
    const id = messageIdFor('mail.test', bobSeed(n));
    return { id, raw: buildChatMail({ from: { address: BOB, name: 'Bob' }, to: [{ address: `alice@${A}` }], messageId: id, date: new Date(), group: null, action, references: [], ...extra }) };
  }

  const parsed = (t: TakenMail) => simpleParser(t.raw);

  before(async () => {
    sink = await new SmtpSink().start();
    mx = await freePort();
    net = await startNetwork({
      domains: [A, B],
      env: { INTERTALK_FEDERATION_SWEEP: '200ms' },
      envFor: {
        [A]: {
          INTERTALK_EMAIL: 'on',
          INTERTALK_EMAIL_SMTP: `smtp://127.0.0.1:${sink.port}`,
          INTERTALK_EMAIL_SMTP_LISTEN: `127.0.0.1:${mx}`,
          INTERTALK_EMAIL_MAX_SIZE: '256KiB',
        },
      },
    });
    alice = await fedUser(net, A, 'alice');
    carolB = await fedUser(net, B, 'carol');
  });

  after(async () => {
    await net?.stop();
    await sink?.stop();
  });

  it('tells clients which addresses are e-mail', async () => {
    const kind = async (a: string) => (await api(net, A, 'GET', `/addresses/${encodeURIComponent(a)}`, { token: alice.token })).body.kind;
    assert.equal(await kind(BOB), 'email');
    assert.equal(await kind(carolB.address), 'intertalk');
    assert.equal(await kind(alice.address), 'local');
    const bad = await api(net, A, 'GET', '/addresses/not-an-address', { token: alice.token });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, 'invalid_address');
  });

  let first: any;
  let firstMail: TakenMail;

  it('sends a message to an e-mail address as a chat mail', async () => {
    first = await say(net, alice, [BOB], 'Hello Bob, by mail');
    firstMail = await eventually('the mail', async () => sink.mails.find((m) => m.to.includes(BOB)));
    assert.equal(firstMail.from, `alice@${A}`);
    assert.deepEqual(firstMail.to, [BOB]);
    const p = await parsed(firstMail);
    assert.equal(p.headers.get('chat-version'), '1.0');
    assert.match(p.text ?? '', /Hello Bob, by mail/);
    assert.ok(p.headers.get('autocrypt'), 'an Autocrypt header with alice\'s key');
    const d = await eventually('delivered', async () => {
      const list = await deliveries(net, alice, first);
      return list.find((x) => x.destination === 'mail.test' && x.state === 'delivered');
    });
    assert.equal(d.destination, 'mail.test');
  });

  it('stores bob\'s reply in the same conversation, with the quote', async () => {
    const mid = (await parsed(firstMail)).messageId!.replace(/^<|>$/g, '');
    const m = fromBob(1, { type: 'reply', text: 'Hi Alice!', target: mid, quote: 'Hello Bob, by mail', attachments: [] });
    await deliver(await m.raw);
    const h = await eventually('the reply', async () => {
      const list = await history(net, alice, conv);
      return list.find((x) => x.from === BOB) && list;
    });
    const reply = h.find((x: any) => x.from === BOB);
    assert.equal(reply.rich.type, 'reply');
    assert.equal(reply.rich.text, 'Hi Alice!');
    assert.equal(reply.rich.reference.id, first.id);
    assert.equal(reply.rich.reference.sender, alice.address);
    // The same mail again (a retrying server): stored once.
    await deliver(await m.raw);
    assert.equal((await history(net, alice, conv)).filter((x) => x.from === BOB).length, 1);
  });

  it('applies bob\'s edit, reaction and read receipt; refuses his edit of alice\'s message', async () => {
    const replyId = messageIdFor('mail.test', bobSeed(1));
    await deliver(await fromBob(2, { type: 'edit', text: 'Hi Alice!! (edited)', target: replyId }).raw);
    const firstMid = (await parsed(firstMail)).messageId!.replace(/^<|>$/g, '');
    await deliver(await fromBob(3, { type: 'edit', text: 'forged', target: firstMid }).raw);
    await deliver(await fromBob(4, { type: 'reaction', emoji: '👍', target: firstMid }).raw);
    await deliver(await fromBob(5, { type: 'receipt', target: firstMid }).raw);
    const h = await eventually('edit and reaction', async () => {
      const list = await history(net, alice, conv);
      const reply = list.find((x) => x.from === BOB && x.rich?.type === 'reply');
      const mine = list.find((x) => x.id === first.id);
      return reply?.text === 'Hi Alice!! (edited)' || reply?.rich?.text === 'Hi Alice!! (edited)' ? (mine?.reactions?.length ? list : null) : null;
    });
    const mine = h.find((x: any) => x.id === first.id);
    assert.deepEqual(mine.reactions.map((r: any) => r.emoji), ['👍']);
    assert.notEqual(mine.rich?.text ?? mine.message, 'forged');
    assert.ok(!h.some((x: any) => x.message === 'forged' || x.rich?.text === 'forged'), 'the forged edit is not stored');
    const receipts = await eventually('bob\'s receipt', async () => {
      const r = await api(net, A, 'GET', `/conversations/${conv}/receipts`, { token: alice.token });
      return Array.isArray(r.body) && r.body.find((x: any) => x.address === BOB) && r.body;
    });
    assert.equal(receipts.find((x: any) => x.address === BOB).messageId, first.id);
  });

  it('sends a read receipt (MDN) when alice reads bob\'s message', async () => {
    const before = sink.mails.length;
    const r = await api(net, A, 'POST', `/conversations/${conv}/read`, { token: alice.token, json: {} });
    assert.equal(r.status, 200);
    const mdn = await eventually('the MDN', async () => sink.mails.slice(before).find((m) => /disposition-notification/i.test(m.raw.toString('latin1'))));
    assert.deepEqual(mdn.to, [BOB]);
    // For bob's last message alice read that asked for one (his reply; not his edit or reaction).
    assert.match(mdn.raw.toString('latin1'), new RegExp(`Original-Message-ID: <${messageIdFor('mail.test', bobSeed(1)).replace(/[.]/g, '\\.')}>`));
  });

  it('stores an ordinary mail readable, and drops bad mail with nothing written', async () => {
    const plain = await new MailComposer({ from: 'Dave <dave@mail.test>', to: `alice@${A}`, subject: 'Lunch?', text: 'Lunch tomorrow?\n\n> old quoted text\n\n-- \nDave\nsent from my phone' }).compile().build();
    await deliver(plain, 'dave@mail.test');
    const dconv = conversationId([`alice@${A}`, 'dave@mail.test']);
    const h = await eventually('dave\'s mail', async () => (await history(net, alice, dconv))[0]);
    assert.match(h.rich?.text ?? h.message, /Lunch tomorrow\?/);
    assert.doesNotMatch(h.rich?.text ?? h.message, /sent from my phone/);

    const count = async () => Number((await net.provider(A).ctx.storage.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const n0 = await count();
    // Forged From at our own domain, malformed MIME, a delete of alice's message by bob.
    const forged = await new MailComposer({ from: `alice@${A}`, to: `alice@${A}`, subject: 'x', text: 'forged', headers: { 'Chat-Version': '1.0' } }).compile().build();
    await deliver(forged, 'x@mail.test');
    await deliver('From: <bob@mail.test\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n\x00\x01garbage', BOB);
    const firstMid = (await parsed(firstMail)).messageId!.replace(/^<|>$/g, '');
    await deliver(await fromBob(6, { type: 'delete', target: firstMid }).raw);
    // Over INTERTALK_EMAIL_MAX_SIZE: refused (552) while it is sent; nothing is stored.
    const huge = await new MailComposer({ from: BOB, to: `alice@${A}`, subject: 'big', text: 'x'.repeat(400 * 1024) }).compile().build();
    await assert.rejects(deliver(huge), (err: any) => err.responseCode === 552);
    // And a valid one after them, so we know the bad ones were handled first.
    await deliver(await fromBob(7, { type: 'content', text: 'still here', attachments: [] }).raw);
    await eventually('the valid mail', async () => (await history(net, alice, conv)).find((x) => (x.rich?.text ?? x.message) === 'still here'));
    assert.equal(await count(), n0 + 1);
    const mine = (await history(net, alice, conv)).find((x) => x.id === first.id);
    assert.ok(!mine.deleted, 'bob cannot delete alice\'s message');
  });

  it('a mail the server refuses fails; a refusal for now is retried and delivered once', async () => {
    sink.mode = 'permanent';
    const refused = await say(net, alice, [BOB], 'this one is refused');
    await eventually('failed', async () => (await deliveries(net, alice, refused)).find((d) => d.state === 'failed'));
    sink.mode = 'temporary';
    const later = await say(net, alice, [BOB], 'this one waits');
    await eventually('retried', async () => (await deliveries(net, alice, later)).find((d) => d.state === 'queued' && d.attempts >= 1));
    sink.mode = 'ok';
    await eventually('delivered after the retry', async () => (await deliveries(net, alice, later)).find((d) => d.state === 'delivered'), 60_000);
    const copies = sink.mails.filter((m) => m.raw.toString('utf8').includes('this one waits'));
    assert.equal(copies.length, 1);
  });

  it('a bounce marks the message failed for alice', async () => {
    const m = await say(net, alice, [BOB], 'this one bounces');
    const mail = await eventually('the mail', async () => sink.mails.find((x) => x.raw.toString('utf8').includes('this one bounces')));
    await eventually('delivered', async () => (await deliveries(net, alice, m)).find((d) => d.state === 'delivered'));
    const mid = (await parsed(mail)).messageId!;
    const dsn = [
      'From: MAILER-DAEMON@mx.mail.test',
      `To: alice@${A}`,
      'Subject: Undelivered Mail Returned to Sender',
      'Auto-Submitted: auto-replied',
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"',
      `Message-ID: <dsn-1@mx.mail.test>`,
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'I could not deliver your message.',
      '--b1',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.mail.test',
      '',
      `Final-Recipient: rfc822; ${BOB}`,
      'Action: failed',
      'Status: 5.1.1',
      'Diagnostic-Code: smtp; 550 5.1.1 no such user',
      '--b1',
      'Content-Type: text/rfc822-headers',
      '',
      `From: alice@${A}`,
      `To: ${BOB}`,
      `Message-ID: ${mid}`,
      '--b1--',
      '',
    ].join('\r\n');
    await deliver(dsn, '');
    const failed = await eventually('failed after the bounce', async () => (await deliveries(net, alice, m)).find((d) => d.state === 'failed'));
    assert.match(failed.lastError, /bounced/);
  });
});
