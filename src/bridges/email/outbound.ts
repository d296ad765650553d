// Outbound e-mail: the DeliveryTransport that carries the outbox's queue for an e-mail domain.
// The outbox gives every transport its durability (one queue per destination domain, in order,
// lease, back-off, age limit, crash-safe bookkeeping); this file only turns each queued message
// into one mail and hands it to the submission server (INTERTALK_EMAIL_SMTP) with nodemailer.
//
// One mail per (message, destination domain): its To: lists every other participant (so chat
// clients see the whole group) while the SMTP envelope names only the participants at that
// domain — the other domains get their own copy from their own queue. The Message-ID is derived
// from (sender, id), so a copy re-sent after a crash has the same Message-ID and the receiving
// client shows it once.
//
// Outcomes: the server took the mail → delivered (a later bounce turns it into failed, see
// inbound.ts); 5xx for every recipient → fail with the server's answer; 4xx, no connection,
// timeouts → retry (the outbox backs the domain off and tries again).
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import { domainOf } from '../../protocol/address.js';
import type { IntertalkMessage } from '../../protocol/message.js';
import type { DeliveryOutcome, DeliveryTransport, OutboundRow } from '../../federation/transports.js';
import type { EmailServer } from '../../config/config.js';
import type { SignalBody } from '../../signals/wire.js';
import { randomId } from '../../util/ids.js';
import type { ChatAction, MailAddress, MailFile, OutgoingChatMail } from './model.js';
import type { EmailStore } from './store.js';
import type { EmailRouting } from './routing.js';

/** What the transport needs from the mail format (mime-out.ts) and from encryption (autocrypt). */
export interface OutboundFormat {
  build(m: OutgoingChatMail): Promise<Buffer>;
  groupIdFor(conversationId: string): string;
  /** Our Message-ID (without <>) for one of our users' messages. */
  messageIdFor(sender: string, id: string, mailDomain: string): string;
}

export interface OutboundCrypto {
  /** The sender's Autocrypt header value (a key is made on first use); null: encryption off. */
  autocryptFor(address: string): Promise<string | null>;
  /** The base64 binary public key of one of our users (made on first use); null: encryption off. */
  keydataFor(address: string): Promise<string | null>;
  /**
   * The mail encrypted to every envelope recipient (and the sender); null when one has no key.
   * `members` (everyone in To:) are gossiped in group mail, so readers learn each other's keys.
   */
  encrypt(raw: Buffer, sender: string, recipients: string[], members: string[]): Promise<Buffer | null>;
}

export interface OutboundDeps {
  store: EmailStore;
  routing: EmailRouting;
  format: OutboundFormat;
  crypto: OutboundCrypto;
  logger: Logger;
  smtp: EmailServer;
  mailDomain: string;
  maxBytes: number;
  dkim: { domainName: string; keySelector: string; privateKey: string } | null;
  /** The local account an intertalk address belongs to (personal domains included), or null. */
  ownerOf: (address: string) => string | null;
  /** Bytes of a file we hold (attachments), or null. */
  blob: (id: string) => Promise<Buffer | null>;
  /** A conversation's name (rich/1 property), or null. */
  titleOf: (conversationId: string) => Promise<string | null>;
  /** Test seam: nodemailer transport options other than the server (e.g. shorter timeouts). */
  transportOptions?: Record<string, unknown>;
}

/** The longest wait between tries while the submission server does not answer. */
export const SUBMISSION_RETRY_MAX_MS = 30_000;

/** How long one SMTP conversation may take before it counts as a retry. */
const SMTP_TIMEOUT_MS = 60_000;

export class EmailTransport implements DeliveryTransport {
  readonly name = 'email';
  private readonly smtp: Transporter;

  constructor(private readonly o: OutboundDeps) {
    const s = o.smtp;
    this.smtp = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.secure,
      ...(s.user ? { auth: { user: s.user, pass: s.password ?? '' } } : {}),
      pool: true,
      maxConnections: 2,
      connectionTimeout: SMTP_TIMEOUT_MS,
      greetingTimeout: 30_000,
      socketTimeout: SMTP_TIMEOUT_MS,
      ...(o.dkim ? { dkim: o.dkim } : {}),
      ...(o.transportOptions ?? {}),
    } as Parameters<typeof nodemailer.createTransport>[0]);
  }

  close(): void {
    this.smtp.close();
  }

  claims(destination: string): Promise<boolean> {
    return this.o.routing.isEmail(destination);
  }

  /** The address our user has on e-mail: the account's local part at the mail domain. */
  mailAddressOf(address: string): string {
    const owner = this.o.ownerOf(address) ?? address;
    return `${owner.slice(0, owner.lastIndexOf('@'))}@${this.o.mailDomain}`;
  }

  async deliver(destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]> {
    const out: DeliveryOutcome[] = [];
    for (const row of rows) {
      const outcome = await this.deliverOne(destination, row);
      out.push(outcome);
      if (outcome.kind === 'retry') break;
    }
    return out;
  }

  private async deliverOne(destination: string, row: OutboundRow): Promise<DeliveryOutcome> {
    let m: IntertalkMessage;
    try {
      m = JSON.parse(row.body) as IntertalkMessage;
    } catch {
      return { kind: 'fail', reason: 'the stored message is not JSON' };
    }
    const envelopeTo = m.to.filter((p) => domainOf(p) === destination);
    if (envelopeTo.length === 0) return { kind: 'delivered', insecure: false };
    let mail: OutgoingChatMail;
    try {
      mail = await this.compose(m, row.ev.conversationId);
    } catch (err) {
      return { kind: 'fail', reason: `cannot write the mail: ${(err as Error).message}` };
    }
    let raw = await this.o.format.build(mail);
    const encrypted = await this.o.crypto.encrypt(raw, mail.from.address, envelopeTo, mail.to.map((a) => a.address)).catch((err: unknown) => {
      this.o.logger.warn({ err: (err as Error).message, destination }, 'e-mail encryption failed; sending unencrypted');
      return null;
    });
    if (encrypted) raw = encrypted;
    if (raw.length > this.o.maxBytes) return { kind: 'fail', reason: `the mail would be ${raw.length} bytes; INTERTALK_EMAIL_MAX_SIZE is ${this.o.maxBytes}` };
    // Recorded before sending: a reply may come back before our bookkeeping after the send.
    await this.o.store.mapMessage({ messageId: mail.messageId, conversationId: row.ev.conversationId, sender: m.from, id: m.id, direction: 'out' });
    try {
      const info = (await this.smtp.sendMail({ envelope: { from: mail.from.address, to: envelopeTo }, raw })) as { accepted?: unknown[]; rejected?: unknown[] };
      const rejected = (info.rejected ?? []).map(String);
      if (rejected.length > 0) this.o.logger.warn({ destination, rejected, messageId: mail.messageId }, 'the submission server refused some recipients');
      return { kind: 'delivered', insecure: !encrypted };
    } catch (err) {
      return classifySmtpError(destination, err);
    }
  }

  /**
   * signals/1 over e-mail: one of our users read a message that came by mail → a read receipt
   * (MDN) to its sender. Best effort like every signal: not queued, not retried. Typing is not
   * sent by mail.
   */
  async signal(destination: string, s: SignalBody): Promise<void> {
    if (s.type !== 'receipt' || domainOf(s.messageSender) !== destination) return;
    // A receipt names the last message read; mail clients ask receipts only for what a person
    // wrote (content, replies), so it is sent for the sender's last such message up to there.
    const last = await this.o.store.lastReadable(s.messageSender, s.messageId);
    const mapped = last ? await this.o.store.byMessage(last.sender, last.id) : null;
    if (!mapped || mapped.direction !== 'in') return;
    const from = { address: this.mailAddressOf(s.from) };
    const mail: OutgoingChatMail = {
      from,
      to: [{ address: s.messageSender }],
      messageId: this.o.format.messageIdFor(s.from, `mdn-${randomId(16)}`, this.o.mailDomain),
      date: new Date(),
      group: null,
      action: { type: 'receipt', target: mapped.messageId },
      references: [mapped.messageId],
    };
    let raw = await this.o.format.build(mail);
    // Encrypted when we can: Delta Chat (force_encryption) ignores unencrypted receipts too.
    raw = (await this.o.crypto.encrypt(raw, from.address, [s.messageSender], [s.messageSender]).catch(() => null)) ?? raw;
    try {
      await this.smtp.sendMail({ envelope: { from: from.address, to: [s.messageSender] }, raw });
    } catch (err) {
      this.o.logger.info({ destination, err: (err as Error).message }, 'read receipt by e-mail not sent');
    }
  }

  private async compose(m: IntertalkMessage, conversationId: string): Promise<OutgoingChatMail> {
    const from: MailAddress = { address: this.mailAddressOf(m.from) };
    const others = m.to.filter((p) => p !== m.from);
    // Our own users appear under their mail addresses, so that replies-to-all come back to us.
    const to: MailAddress[] = others.map((p) => ({ address: this.o.ownerOf(p) ? this.mailAddressOf(p) : p }));
    const isGroup = m.to.length > 2;
    let group: OutgoingChatMail['group'] = null;
    if (isGroup) {
      const known = await this.o.store.groupFor(conversationId);
      const title = await this.o.titleOf(conversationId);
      group = { id: known?.groupId ?? this.o.format.groupIdFor(conversationId), name: title ?? known?.name ?? null };
    }
    const messageId = this.o.format.messageIdFor(m.from, m.id, this.o.mailDomain);
    const action = await this.action(m);
    const autocrypt = await this.o.crypto.autocryptFor(from.address);
    const references: string[] = [];
    if ('target' in action) references.push(action.target);
    return {
      from,
      to,
      messageId,
      date: new Date(m.sentAt),
      group,
      action,
      references,
      ...(autocrypt ? { autocrypt } : {}),
    };
  }

  /** The Message-ID a reference names: the mail we sent or stored for it, else its derived form. */
  private async targetOf(sender: string, id: string): Promise<string> {
    const mapped = await this.o.store.byMessage(sender, id);
    if (mapped) return mapped.messageId;
    return this.o.ownerOf(sender) ? this.o.format.messageIdFor(sender, id, this.o.mailDomain) : id;
  }

  private async files(m: IntertalkMessage): Promise<{ files: MailFile[]; missing: string[] }> {
    const files: MailFile[] = [];
    const missing: string[] = [];
    for (const a of m.rich?.attachments ?? []) {
      const content = await this.o.blob(a.id);
      if (content) files.push({ name: a.name, mediaType: a.mediaType, content });
      else missing.push(`📎 ${a.name}: ${a.url}`);
    }
    return { files, missing };
  }

  private async action(m: IntertalkMessage): Promise<ChatAction> {
    const r = m.rich;
    const withMissing = (text: string, missing: string[]) => [text, ...missing].filter((s) => s !== '').join('\n');
    if (!r || r.type === 'content') {
      const { files, missing } = await this.files(m);
      return { type: 'content', text: withMissing(r?.text ?? m.message, missing), attachments: files };
    }
    const ref = r.reference;
    switch (r.type) {
      case 'reply': {
        const { files, missing } = await this.files(m);
        return { type: 'reply', text: withMissing(r.text ?? '', missing), target: await this.targetOf(ref!.sender, ref!.id), quote: ref!.text, attachments: files };
      }
      case 'edit': {
        // Mail names the original message, never an earlier edit.
        const original = await this.o.store.originalOf(ref!.sender, ref!.id);
        return { type: 'edit', text: r.text ?? m.message, target: await this.targetOf(original.sender, original.id) };
      }
      case 'delete': {
        const original = await this.o.store.originalOf(ref!.sender, ref!.id);
        return { type: 'delete', target: await this.targetOf(original.sender, original.id) };
      }
      case 'reaction': {
        // RFC 9078: a reaction mail carries all of the sender's current reactions to the message.
        const current = await this.o.store.reactionsOf(m.from, { sender: ref!.sender, id: ref!.id });
        return { type: 'reaction', emoji: current.join(' '), target: await this.targetOf(ref!.sender, ref!.id) };
      }
      case 'property':
        return { type: 'rename', name: r.property?.value ?? '' };
    }
  }
}

/** nodemailer's error → the outbox's outcome: 5xx is final, everything else is tried again. */
export function classifySmtpError(destination: string, err: unknown): DeliveryOutcome {
  const e = err as { responseCode?: number; response?: string; code?: string; message?: string };
  const answer = (e.response ?? e.message ?? String(err)).replace(/\s+/g, ' ').slice(0, 300);
  if (typeof e.responseCode === 'number' && e.responseCode >= 500 && e.responseCode < 600) {
    return { kind: 'fail', reason: `${destination} (email): the mail server refused it: ${answer}` };
  }
  // No SMTP answer at all: our submission server is down or unreachable. It is ours, so it is
  // tried at least every SUBMISSION_RETRY_MAX_MS (the destination itself is not to blame).
  const noAnswer = typeof e.responseCode !== 'number';
  return { kind: 'retry', reason: `${destination} (email): ${e.code ? `${e.code}: ` : ''}${answer}`, retryAfterMs: null, ...(noAnswer ? { maxDelayMs: SUBMISSION_RETRY_MAX_MS } : {}) };
}
