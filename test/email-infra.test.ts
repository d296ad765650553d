// The e-mail bridge's test infrastructure, tested on its own: private Postfix + Dovecot on
// loopback (helpers/mail-servers.ts) and Delta Chat core as the e-mail user (helpers/deltachat.ts),
// with plain nodemailer/imapflow clients for what Delta Chat does not show.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { ImapFlow } from 'imapflow';
import { simpleParser } from 'mailparser';
import { C } from '@deltachat/jsonrpc-client';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMailServers, type MailServers } from './helpers/mail-servers.js';
import { startDeltaChatUser, type DeltaChatUser } from './helpers/deltachat.js';

const ALICE = 'alice@mail.test';
const BOB = 'bob@mail.test';
const BRIDGE = 'bridge@prov.test';
const PW: Record<string, string> = { [ALICE]: 'alice-pw', [BOB]: 'bob-pw', [BRIDGE]: 'bridge-pw' };

describe('e-mail test infrastructure (Postfix, Dovecot, Delta Chat)', { timeout: 600_000 }, () => {
  let mail: MailServers;
  let alice: DeltaChatUser;
  let bob: DeltaChatUser;
  const users: DeltaChatUser[] = [];
  /** Adds the server and Delta Chat logs to a failure. */
  const explain = async <V>(step: () => Promise<V>): Promise<V> => {
    try {
      return await step();
    } catch (err) {
      const e = err as Error;
      e.message += `\n${mail?.logTail(30) ?? ''}\n${users.map((u) => u.log()).join('\n')}`;
      throw e;
    }
  };
  const smtp = (user: string) =>
    nodemailer.createTransport({ host: mail.smtp.host, port: mail.smtp.port, secure: false, ignoreTLS: true, auth: { user, pass: PW[user]! } });
  const imap = async (user: string) => {
    const c = new ImapFlow({ host: mail.imap.host, port: mail.imap.port, secure: false, doSTARTTLS: false, auth: { user, pass: PW[user]! }, logger: false });
    await c.connect();
    return c;
  };
  /** Raw messages in every folder of `user`'s mailbox. */
  const mailbox = async (user: string): Promise<Buffer[]> => {
    const c = await imap(user);
    try {
      const found: Buffer[] = [];
      for (const box of await c.list()) {
        const lock = await c.getMailboxLock(box.path);
        try {
          for await (const m of c.fetch('1:*', { source: true })) if (m.source) found.push(m.source);
        } finally {
          lock.release();
        }
      }
      return found;
    } finally {
      await c.logout().catch(() => undefined);
    }
  };
  const eventually = async <V>(what: string, probe: () => Promise<V | null | undefined | false>, timeoutMs = 60_000): Promise<V> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  before(async () => {
    mail = await startMailServers({ domains: ['mail.test', 'prov.test'], catchAll: { 'prov.test': BRIDGE } });
    for (const [addr, pw] of Object.entries(PW)) await mail.addUser(addr, pw);
    await explain(async () => {
      alice = await startDeltaChatUser({ address: ALICE, password: PW[ALICE]!, imap: mail.imap, smtp: mail.smtp });
      users.push(alice);
      bob = await startDeltaChatUser({ address: BOB, password: PW[BOB]!, imap: mail.imap, smtp: mail.smtp });
      users.push(bob);
    });
  });
  after(async () => {
    for (const u of users) await u.stop().catch(() => undefined);
    await mail?.stop();
  });

  let encrypted: number; // alice's 1:1 chat with bob after Secure-Join

  test('by default Delta Chat refuses to send unencrypted mail to an address-contact', () =>
    explain(async () => {
      // force_encryption defaults to 1 in 2.57: a chat made from a plain address cannot send.
      const chat = await alice.createChatByAddress(BOB);
      // JSON-RPC errors are plain { code, message } objects.
      await assert.rejects(alice.sendText(chat, 'plain hello'), (e: { message?: string }) => /e2e encryption unavailable/.test(e.message ?? ''));
      const msgs = await alice.getMessages(chat);
      const failed = msgs.find((m) => m.text === 'plain hello');
      assert.equal(failed?.state, C.DC_STATE_OUT_FAILED);
      assert.match(failed?.error ?? '', /requires end-to-end encryption/);
    }));

  test('two Delta Chat users exchange a 1:1 message both ways (encrypted after Secure-Join)', () =>
    explain(async () => {
      encrypted = await alice.secureJoin(await bob.secureJoinQr(), 120_000);
      const sent = await alice.sendText(encrypted, 'hello bob');
      const got = await bob.waitForIncoming((m) => m.text === 'hello bob');
      assert.equal(got.showPadlock, true);
      assert.equal((await bob.chat(got.chatId)).isContactRequest, false);
      await bob.sendText(got.chatId, 'hello alice');
      const back = await alice.waitForIncoming((m) => m.text === 'hello alice');
      assert.equal(back.chatId, encrypted);
      assert.equal(back.showPadlock, true);
      await alice.waitFor('delivered state', async () => (await alice.messageState(sent)) >= C.DC_STATE_OUT_DELIVERED);
    }));

  test('the driver: image, quote, reaction, edit, read receipt and delete over the encrypted chat', () =>
    explain(async () => {
      assert.ok(encrypted, 'needs the Secure-Join chat from the earlier test');
      const png = join(mail.dir, 'pixel.png');
      // A 1×1 PNG.
      writeFileSync(png, Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==', 'base64'));
      const img = await alice.sendImage(encrypted, png, 'a pixel');
      const gotImg = await bob.waitForIncoming((m) => m.text === 'a pixel');
      assert.equal(gotImg.viewType, 'Image');

      const reply = await bob.reply(gotImg.chatId, gotImg.id, 'nice pixel');
      const gotReply = await alice.waitForIncoming((m) => m.text === 'nice pixel');
      assert.equal(gotReply.quote?.kind === 'WithMessage' ? gotReply.quote.messageId : null, img);

      await alice.react(gotReply.id, '👍');
      await bob.waitFor('the reaction', async () => ((await bob.getReactions(reply))?.reactionsByContact ? Object.values((await bob.getReactions(reply))!.reactionsByContact).flat().includes('👍') : false));

      await alice.edit(img, 'a pixel (edited)');
      await bob.waitFor('the edit', async () => {
        const m = await bob.getMessage(gotImg.id);
        return m.isEdited && m.text === 'a pixel (edited)';
      });

      // Read receipts are on by default (mdns_enabled = 1): bob seeing it moves alice's message to MDN_RCVD.
      await bob.markSeen([gotImg.id]);
      await alice.waitFor('the read receipt', async () => (await alice.messageState(img)) === C.DC_STATE_OUT_MDN_RCVD);

      await alice.deleteForAll(img);
      await bob.waitFor('the deletion', async () => !(await bob.getMessages(gotImg.chatId)).some((m) => m.id === gotImg.id));
    }));

  test('by default Delta Chat drops incoming unencrypted mail', () =>
    explain(async () => {
      const subject = `plain ${Date.now()}`;
      await smtp(ALICE).sendMail({ from: ALICE, to: BOB, subject, text: 'unencrypted to bob' });
      // Delivered to the mailbox…
      await eventually('the plain mail in bob’s mailbox', async () => (await mailbox(BOB)).some((m) => m.toString('latin1').includes(subject)));
      // …and then a later encrypted message arrives in Delta Chat while the plain one never shows up.
      await alice.sendText(encrypted, 'after the plain one');
      await bob.waitForIncoming((m) => m.text === 'after the plain one');
      const all = await Promise.all((await bob.dc.rpc.getChatlistEntries(bob.accountId, null, null, null)).map((c) => bob.getMessages(c)));
      assert.equal(all.flat().filter((m) => m.text.includes('unencrypted to bob')).length, 0);
    }));

  test('mail to any address at a catch-all domain lands in one mailbox with its original To:', () =>
    explain(async () => {
      const subject = `catch-all ${Date.now()}`;
      await smtp(ALICE).sendMail({ from: ALICE, to: 'carol.anything@prov.test', subject, text: 'to the bridge' });
      const raw = await eventually('the mail in the bridge mailbox', async () => {
        for (const m of await mailbox(BRIDGE)) if ((await simpleParser(m)).subject === subject) return m;
        return null;
      });
      const parsed = await simpleParser(raw);
      assert.equal(parsed.to && !Array.isArray(parsed.to) ? parsed.to.value[0]?.address : null, 'carol.anything@prov.test');
      assert.match(parsed.text ?? '', /to the bridge/);
    }));

  test('mail to an unknown user is refused at RCPT with 5xx', () =>
    explain(async () => {
      const err = await smtp(ALICE)
        .sendMail({ from: ALICE, to: 'nobody@mail.test', subject: 'nobody', text: 'x' })
        .then(
          () => null,
          (e: Error & { responseCode?: number; command?: string }) => e,
        );
      assert.ok(err, 'the mail was accepted');
      assert.equal(err.command, 'RCPT TO');
      assert.ok(err.responseCode! >= 500 && err.responseCode! < 600, `response code ${err.responseCode}`);
    }));

  test('a message sent while Postfix is down arrives after it is back', () =>
    explain(async () => {
      assert.ok(encrypted, 'needs the Secure-Join chat from the earlier test');
      const chat = encrypted;
      await mail.stopPostfix();
      let id: number;
      try {
        id = await alice.sendText(chat, 'sent while postfix was down');
        // Core tries, fails to connect and keeps the message pending for a retry.
        await new Promise((r) => setTimeout(r, 3000));
        assert.equal(await alice.messageState(id), C.DC_STATE_OUT_PENDING);
      } finally {
        await mail.startPostfix();
      }
      await alice.maybeNetwork();
      await bob.waitForIncoming((m) => m.text === 'sent while postfix was down', 120_000);
      await alice.waitFor('delivered state', async () => (await alice.messageState(id)) >= C.DC_STATE_OUT_DELIVERED);
    }));

  test('a mail to the bounce domain is accepted and comes back as a DSN to the sender', () =>
    explain(async () => {
      // Sent with nodemailer: Delta Chat (force_encryption) would not send to an address without a key.
      const subject = `bounce ${Date.now()}`;
      const to = `someone@${mail.bounceDomain}`;
      const info = await smtp(ALICE).sendMail({ from: ALICE, to, subject, text: 'this one bounces' });
      assert.deepEqual(info.accepted, [to]);
      const dsn = await eventually('a DSN in the sender’s mailbox', async () => {
        for (const m of await mailbox(ALICE)) {
          const raw = m.toString('latin1');
          if (/report-type=\"?delivery-status/i.test(raw) && raw.includes(subject)) return raw;
        }
        return null;
      });
      assert.match(dsn, /Status: 5\.1\.1/);
      assert.ok(dsn.includes(`Final-Recipient: rfc822; ${to}`), dsn.slice(0, 2000));
    }));
});
