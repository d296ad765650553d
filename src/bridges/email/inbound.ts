// Inbound e-mail: one raw mail (from the IMAP reader or the SMTP listener) → what it means here.
// Decrypted when it is PGP/MIME, parsed (mime-in.ts), then:
//  * a chat or ordinary mail to our users → an intertalk message from the e-mail address, stored
//    by Messaging like a peer's message (origin: the sender's domain), so it is fanned out, pushed
//    and shown like any other; its Message-ID is recorded (email_messages) so that replies, edits,
//    deletes, reactions and receipts naming it find it;
//  * a read receipt (MDN) for one of our messages → a signals/1 receipt;
//  * a bounce (DSN) for one of our mails → that delivery becomes failed for the sender.
// Everything else is dropped with a logged reason and writes nothing: mail from our own domain
// (never re-bridged), mail to nobody here, automated mail, edits and deletes by anyone but the
// original sender (Messaging refuses them), mail over the size limit, malformed mail.
// Handling the same mail twice stores it once (ids are derived from the Message-ID).
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { domainOf } from '../../protocol/address.js';
import { canonicalParticipants, conversationId } from '../../protocol/conversation.js';
import { isValidMessageId, validateMessage, type IntertalkMessage } from '../../protocol/message.js';
import { plainFallback, type AttachmentRef, type Rich } from '../../protocol/rich.js';
import type { Messaging } from '../../messaging/service.js';
import { MessageConflictError, RichRuleError } from '../../messaging/service.js';
import type { Signals } from '../../signals/service.js';
import type { Clock } from '../../util/clock.js';
import type { Db } from '../../storage/db.js';
import type { IncomingChatMail, MailFile, ParsedMail } from './model.js';
import { conversationOf, type EmailStore, type MappedMessage } from './store.js';

export interface InboundFormat {
  parse(raw: Buffer, o: { maxBytes: number; ourDomains: string[] }): Promise<ParsedMail>;
}

export interface InboundCrypto {
  /**
   * Decrypts a PGP/MIME mail for one of our users. `raw` unchanged with encrypted false when it
   * is not encrypted; an error when it is and cannot be decrypted.
   */
  decrypt(raw: Buffer): Promise<{ ok: true; raw: Buffer; encrypted: boolean; signedBy: string | null } | { ok: false; reason: string }>;
  /** Remembers a correspondent's Autocrypt header. */
  learn(mail: IncomingChatMail): Promise<void>;
}

export interface MailAuthenticator {
  /** DKIM (and, with a client IP, SPF/DMARC) of one raw mail. */
  check(raw: Buffer, peer?: { ip: string; helo?: string; sender?: string }): Promise<{ authenticated: boolean; summary: string }>;
}

export type InboundResult =
  | { outcome: 'stored'; conversationId: string; seq: number }
  | { outcome: 'duplicate' }
  | { outcome: 'receipt' }
  | { outcome: 'bounce'; failed: number }
  | { outcome: 'dropped'; reason: string };

export interface InboundDeps {
  db: Db;
  store: EmailStore;
  messaging: Messaging;
  signals: Signals;
  format: InboundFormat;
  crypto: InboundCrypto;
  auth: MailAuthenticator | null;
  clock: Clock;
  logger: Logger;
  /** Our provider domain (accounts live here). */
  domain: string;
  mailDomain: string;
  maxBytes: number;
  maxRecipients: number;
  plainMail: 'accept' | 'drop';
  unauthenticated: 'flag' | 'drop';
  /** Does an account with this local part exist? */
  accountExists: (localPart: string) => Promise<boolean>;
  storeFile: (sender: string, f: MailFile) => Promise<AttachmentRef | null>;
  /** A bounce: our delivery of message `seq` to `domain` failed after the server took it. */
  failDelivery: (domain: string, seq: number, reason: string) => Promise<boolean>;
  /** Domains that are ours for "never re-bridge our own mail" (provider, mail, personal domains). */
  isOurs: (domain: string) => boolean;
}

/** The intertalk id of a mail: its Message-ID when that is a valid id, else a digest of it. */
export function idForMessageId(messageId: string): string {
  return isValidMessageId(messageId) ? messageId : 'e' + createHash('sha256').update(messageId, 'utf8').digest('base64url').slice(0, 32);
}

export class EmailInbound {
  constructor(private readonly o: InboundDeps) {}

  private drop(reason: string, extra: Record<string, unknown> = {}): InboundResult {
    this.o.logger.info({ ...extra, reason }, 'inbound e-mail dropped');
    return { outcome: 'dropped', reason };
  }

  async handle(raw: Buffer, peer?: { ip: string; helo?: string; sender?: string }): Promise<InboundResult> {
    try {
      return await this.handleUnsafe(raw, peer);
    } catch (err) {
      // A bug or a database failure: logged; the reader keeps the mail for the next pass.
      this.o.logger.error({ err }, 'inbound e-mail failed');
      throw err;
    }
  }

  private async handleUnsafe(raw: Buffer, peer?: { ip: string; helo?: string; sender?: string }): Promise<InboundResult> {
    if (raw.length > this.o.maxBytes) return this.drop(`the mail is ${raw.length} bytes; INTERTALK_EMAIL_MAX_SIZE is ${this.o.maxBytes}`);
    const auth = this.o.auth ? await this.o.auth.check(raw, peer).catch((err: unknown) => ({ authenticated: false, summary: `check failed: ${(err as Error).message}` })) : null;
    const dec = await this.o.crypto.decrypt(raw);
    if (!dec.ok) return this.drop(`cannot decrypt: ${dec.reason}`);
    const parsed = await this.o.format.parse(dec.raw, { maxBytes: this.o.maxBytes, ourDomains: [this.o.mailDomain, this.o.domain] });
    if (parsed.kind === 'rejected') return this.drop(parsed.reason);
    if (parsed.kind === 'bounce') return this.bounce(parsed.bounce, parsed.messageId);
    const mail = parsed.mail;
    mail.encrypted = mail.encrypted || dec.encrypted;
    const log = { messageId: mail.messageId.slice(0, 200), from: mail.from.address };
    const fromDomain = domainOf(mail.from.address);
    if (this.o.isOurs(fromDomain)) return this.drop('the sender is at our own domain (our own mail is never bridged back)', log);
    const known = await this.o.store.byMessageId(mail.messageId);
    if (known?.direction === 'out') return this.drop('this is a mail we sent', log);
    if (known) return { outcome: 'duplicate' };
    // Authenticated: DKIM/DMARC passed, or the mail was encrypted and signed by a key (Autocrypt's
    // trust on first use: the key we hold for the sender, or the one it carries inside).
    const signed = dec.encrypted && dec.signedBy !== null;
    const insecure = !signed && auth !== null && !auth.authenticated;
    if (insecure && this.o.unauthenticated === 'drop') return this.drop(`the sender is not authenticated (${auth!.summary})`, log);
    if (auth) this.o.logger.debug({ ...log, auth: auth.summary }, 'inbound e-mail authentication');
    if (mail.autocrypt) await this.o.crypto.learn(mail).catch((err: unknown) => this.o.logger.warn({ ...log, err: (err as Error).message }, 'autocrypt header not learned'));
    if (mail.action.type === 'receipt') return this.receipt(mail, mail.action.target, log);
    if (mail.automated) return this.drop('automated mail (Auto-Submitted, Precedence or a list) is not bridged', log);
    if (!mail.isChat && this.o.plainMail === 'drop') return this.drop('ordinary mail is dropped (INTERTALK_EMAIL_PLAIN_MAIL=drop)', log);

    const target = 'target' in mail.action ? await this.o.store.byMessageId(mail.action.target) : null;
    const participants = await this.participants(mail, target);
    if (typeof participants === 'string') return this.drop(participants, log);
    const convId = conversationId(participants);
    const rich = await this.rich(mail, target, convId);
    if (typeof rich === 'string') return this.drop(rich, log);
    const now = this.o.clock.now();
    const sentMs = mail.date && Number.isFinite(mail.date.getTime()) ? Math.min(mail.date.getTime(), now) : now;
    const id = idForMessageId(mail.messageId);
    const candidate = {
      id,
      from: mail.from.address,
      to: participants,
      sentAt: new Date(sentMs).toISOString(),
      message: plainFallback(rich),
      // A plain text mail is a plain intertalk message; everything else carries rich/1.
      ...(rich.type === 'content' && !rich.attachments ? {} : { rich }),
    };
    const v = validateMessage(candidate, { now, maxRecipients: this.o.maxRecipients, skewMs: 0, requireSentAt: true, requireId: true });
    if (!v.ok) return this.drop(`not a valid message: ${v.message}`, log);
    const m = { ...v.value, id, sentAt: candidate.sentAt } as IntertalkMessage;
    await this.nameGroup(mail, participants, convId, candidate.sentAt, fromDomain, insecure);
    let stored;
    try {
      stored = await this.o.messaging.accept(m, { kind: 'remote', domain: fromDomain, insecure });
    } catch (err) {
      if (err instanceof RichRuleError || err instanceof MessageConflictError) return this.drop(`refused: ${err.message}`, log);
      throw err;
    }
    await this.o.store.mapMessage({ messageId: mail.messageId, conversationId: convId, sender: m.from, id, direction: 'in' });
    if (mail.group) await this.o.store.setGroup(mail.group.id, convId, mail.group.name);
    if (stored.replayed) return { outcome: 'duplicate' };
    this.o.logger.debug({ ...log, conversationId: convId, participants: participants.length, action: mail.action.type, seq: stored.message.seq }, 'inbound e-mail stored');
    return { outcome: 'stored', conversationId: convId, seq: stored.message.seq };
  }

  /**
   * A group's name (Chat-Group-Name) is the conversation's name: when it differs from the one we
   * have, a rich/1 property message from the sender comes first (its id derived from the mail's).
   */
  private async nameGroup(mail: IncomingChatMail, participants: string[], convId: string, sentAt: string, fromDomain: string, insecure: boolean): Promise<void> {
    const name = mail.group?.name?.trim();
    if (!name || mail.action.type === 'rename') return;
    const conv = await conversationOf(this.o.db, convId);
    if (conv?.title === name) return;
    const known = mail.group ? await this.o.store.group(mail.group.id) : null;
    if (conv && known?.conversationId === convId && known.name === name) return; // renamed here since
    const rich: Rich = { type: 'property', property: { name: 'displayName', value: name } };
    const v = validateMessage({ id: `n${idForMessageId(mail.messageId).slice(0, 100)}`, from: mail.from.address, to: participants, sentAt, message: plainFallback(rich), rich }, { now: this.o.clock.now(), maxRecipients: this.o.maxRecipients, skewMs: 0, requireSentAt: true, requireId: true });
    if (!v.ok) return;
    try {
      await this.o.messaging.accept({ ...v.value, id: v.value.id!, sentAt } as IntertalkMessage, { kind: 'remote', domain: fromDomain, insecure });
    } catch (err) {
      if (!(err instanceof RichRuleError || err instanceof MessageConflictError)) throw err;
    }
  }

  /**
   * Who the conversation is: for an edit, delete or reaction, the conversation of the message it
   * names (mail clients address those to the current members, who may have changed); otherwise
   * the sender and the mail's recipients. At least one recipient must be one of our users.
   */
  private async participants(mail: IncomingChatMail, target: MappedMessage | null): Promise<string[] | string> {
    const from = mail.from.address;
    if (target && (mail.action.type === 'edit' || mail.action.type === 'delete' || mail.action.type === 'reaction')) {
      const conv = await conversationOf(this.o.db, target.conversationId);
      if (conv && conv.participants.includes(from)) return conv.participants;
    }
    const out: string[] = [from];
    let ours = 0;
    for (const r of mail.recipients) {
      const d = domainOf(r.address);
      if (d === this.o.mailDomain || d === this.o.domain) {
        const local = r.address.slice(0, r.address.lastIndexOf('@'));
        if (!(await this.o.accountExists(local))) continue; // nobody here by that name
        out.push(`${local}@${this.o.domain}`);
        ours++;
      } else {
        out.push(r.address);
      }
    }
    if (ours === 0) return 'no recipient is a user of this provider';
    const list = canonicalParticipants(out);
    if (list.length > this.o.maxRecipients) return `more than ${this.o.maxRecipients} participants`;
    return list;
  }

  private async reference(convId: string, target: MappedMessage, withText: boolean) {
    const ours = withText ? await this.o.messaging.referenceFor(convId, target.sender, target.id) : null;
    return { id: target.id, sender: target.sender, type: (ours?.kind ?? 'content') as Rich['type'], text: ours?.text ?? null };
  }

  private async files(mail: IncomingChatMail, list: MailFile[]): Promise<AttachmentRef[]> {
    const out: AttachmentRef[] = [];
    for (const f of list.slice(0, 10)) {
      const ref = await this.o.storeFile(mail.from.address, f);
      if (ref) out.push(ref);
      else this.o.logger.info({ messageId: mail.messageId.slice(0, 200), name: f.name.slice(0, 100), size: f.content.length }, 'inbound e-mail attachment not kept (empty or over INTERTALK_MAX_ATTACHMENT)');
    }
    return out;
  }

  /** The rich/1 form of the mail's action, or why it cannot be stored. */
  private async rich(mail: IncomingChatMail, target: MappedMessage | null, convId: string): Promise<Rich | string> {
    const a = mail.action;
    const withFiles = async (r: Rich, files: MailFile[]): Promise<Rich> => {
      const refs = await this.files(mail, files);
      return refs.length > 0 ? { ...r, attachments: refs } : r;
    };
    switch (a.type) {
      case 'content':
        return withFiles({ type: 'content', text: a.text }, a.attachments);
      case 'reply':
        // A reply to a mail we never saw is just a message.
        if (!target) return withFiles({ type: 'content', text: a.text }, a.attachments);
        return withFiles({ type: 'reply', text: a.text, reference: await this.reference(convId, target, true) }, a.attachments);
      case 'edit':
        if (!target) return 'an edit of a message this provider does not have';
        return { type: 'edit', text: a.text, reference: { ...(await this.reference(convId, target, false)), text: null } };
      case 'delete':
        if (!target) return 'a delete of a message this provider does not have';
        return { type: 'delete', reference: { ...(await this.reference(convId, target, false)), text: null } };
      case 'reaction': {
        if (!target) return 'a reaction to a message this provider does not have';
        // RFC 9078 sends the sender's whole set: store the first new emoji, or withdraw the old one.
        const wanted = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(a.emoji)].map((s) => s.segment).filter((s) => s.trim() !== '');
        const current = await this.o.store.reactionsOf(mail.from.address, { sender: target.sender, id: target.id });
        const added = wanted.find((e) => !current.includes(e));
        const reference = await this.reference(convId, target, true);
        if (added) return { type: 'reaction', reaction: { emoji: added }, reference };
        const removed = current.find((e) => !wanted.includes(e));
        if (removed) return { type: 'reaction', reaction: { emoji: removed, remove: true }, reference };
        return 'a reaction that changes nothing';
      }
      case 'rename':
        return { type: 'property', property: { name: 'displayName', value: a.name } };
      case 'member':
        return { type: 'content', text: a.text };
      case 'receipt':
        return 'a receipt is not a message';
    }
  }

  private async receipt(mail: IncomingChatMail, targetId: string, log: Record<string, unknown>): Promise<InboundResult> {
    const target = await this.o.store.byMessageId(targetId);
    if (!target) return this.drop('a read receipt for a message this provider does not have', log);
    const conv = await conversationOf(this.o.db, target.conversationId);
    const reader = mail.from.address;
    if (!conv || !conv.participants.includes(reader)) return this.drop('a read receipt from someone outside the conversation', log);
    const now = this.o.clock.now();
    const at = mail.date && Number.isFinite(mail.date.getTime()) ? Math.min(mail.date.getTime(), now) : now;
    await this.o.signals.remoteReceipt({ type: 'receipt', from: reader, to: conv.participants, messageId: target.id, messageSender: target.sender, sentAt: new Date(at).toISOString() }, at);
    return { outcome: 'receipt' };
  }

  private async bounce(b: { originalMessageId: string | null; failedRecipients: string[]; reason: string }, messageId: string): Promise<InboundResult> {
    const log = { messageId: messageId.slice(0, 200), original: b.originalMessageId?.slice(0, 200) ?? null };
    if (!b.originalMessageId) return this.drop('a delivery report that names no message', log);
    const ours = await this.o.store.byMessageId(b.originalMessageId);
    if (!ours || ours.direction !== 'out') return this.drop('a delivery report for a mail we did not send', log);
    const seq = await this.o.store.seqOf(ours.sender, ours.id);
    if (seq === null) return this.drop('a delivery report for a message no longer stored', log);
    const conv = await conversationOf(this.o.db, ours.conversationId);
    const participants = new Set(conv?.participants ?? []);
    // Only recipients of that message count; without a list, every remote domain of it.
    const named = b.failedRecipients.map((r) => r.toLowerCase()).filter((r) => participants.has(r));
    const domains = new Set((named.length > 0 ? named : [...participants].filter((p) => !this.o.isOurs(domainOf(p)))).map(domainOf));
    let failed = 0;
    const reason = `the mail bounced: ${b.reason}`.slice(0, 500);
    for (const d of domains) if (await this.o.failDelivery(d, seq, reason)) failed++;
    this.o.logger.info({ ...log, failed }, 'e-mail bounce recorded');
    return { outcome: 'bounce', failed };
  }
}
