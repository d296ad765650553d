// The e-mail bridge, assembled (issue 11, docs/email.md). It rides on federation's seams only:
//  * outbound: EmailTransport is a DeliveryTransport, so our users' messages to an e-mail
//    address are queued, ordered, retried and accounted for by the federation outbox;
//  * inbound: mail read over IMAP (INTERTALK_EMAIL_IMAP) or taken by our SMTP listener
//    (INTERTALK_EMAIL_SMTP_LISTEN) becomes messages through Messaging.accept, receipts through
//    Signals, bounces through the outbox's failAfterDelivery;
//  * routing: which domains are e-mail (routing.ts); GET /addresses/{address} tells clients.
// Messaging and federation know nothing about e-mail.
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { SMTPServer } from 'smtp-server';
import type { AppContext } from '../../context.js';
import type { Federation } from '../../federation/service.js';
import { requireUser } from '../../auth/routes.js';
import { HttpError } from '../../http/errors.js';
import { domainOf, parseAddress } from '../../protocol/address.js';
import { EmailStore, conversationOf } from './store.js';
import { EmailRouting, type ResolveMx } from './routing.js';
import { EmailTransport, type OutboundCrypto, type OutboundFormat } from './outbound.js';
import { EmailInbound, type InboundCrypto, type InboundFormat } from './inbound.js';
import { ImapReader } from './imap.js';
import { mailAuthenticator, type Resolver } from './auth.js';

export type EmailFormat = OutboundFormat & InboundFormat;
export type EmailCrypto = OutboundCrypto & InboundCrypto;

/** Encryption off (INTERTALK_EMAIL_ENCRYPTION=off): plain mail both ways. */
export const noEncryption: EmailCrypto = {
  autocryptFor: async () => null,
  keydataFor: async () => null,
  encrypt: async () => null,
  decrypt: async (raw) => (isEncrypted(raw) ? { ok: false, reason: 'encrypted mail, and INTERTALK_EMAIL_ENCRYPTION is off' } : { ok: true, raw, encrypted: false, signedBy: null }),
  learn: async () => undefined,
};

/** A top-level PGP/MIME content type (RFC 3156), looked for in the header block only. */
export function isEncrypted(raw: Buffer): boolean {
  const end = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, end === -1 ? Math.min(raw.length, 64 * 1024) : end).toString('latin1');
  return /^content-type:\s*multipart\/encrypted/im.test(head);
}

export interface EmailParts {
  format: EmailFormat;
  /** Builds the encryption side once the store exists (null → noEncryption). */
  crypto: ((store: EmailStore) => EmailCrypto) | null;
  /** Tests: MX lookups and DNS for DKIM. */
  resolveMx?: ResolveMx;
  dnsResolver?: Resolver;
}

export class EmailBridge {
  readonly store: EmailStore;
  readonly routing: EmailRouting;
  readonly transport: EmailTransport;
  readonly inbound: EmailInbound;
  readonly reader: ImapReader | null;
  private readonly crypto: EmailCrypto;
  private smtpServer: SMTPServer | null = null;

  constructor(
    private readonly ctx: AppContext,
    fed: Federation,
    parts: EmailParts,
  ) {
    const { config, storage, clock, logger } = ctx;
    const e = config.email;
    const log = logger.child({ capability: 'email' });
    this.store = new EmailStore(storage.db, clock);
    const crypto = e.encryption === 'off' || !parts.crypto ? noEncryption : parts.crypto(this.store);
    this.crypto = crypto;
    const isOurs = (d: string) => d === config.domain || d === e.mailDomain || (fed.indieweb?.domains.isOurs(d) ?? false);
    this.routing = new EmailRouting({
      discovery: fed.discovery,
      http: fed.http,
      clock,
      ttlMs: config.federation.discoveryTtlMs,
      always: e.domains,
      isOurs,
      ...(parts.resolveMx ? { resolveMx: parts.resolveMx } : {}),
    });
    const dkim = e.dkim ? { domainName: e.mailDomain, keySelector: e.dkim.selector, privateKey: readFileSync(e.dkim.keyFile, 'utf8') } : null;
    this.transport = new EmailTransport({
      store: this.store,
      routing: this.routing,
      format: parts.format,
      crypto,
      logger: log,
      smtp: e.smtp!,
      mailDomain: e.mailDomain,
      maxBytes: e.maxBytes,
      dkim,
      ownerOf: (a) => ctx.messaging.ownerOf(a),
      blob: (id) => ctx.attachments.blob(id),
      titleOf: async (convId) => (await conversationOf(storage.db, convId))?.title ?? null,
    });
    this.inbound = new EmailInbound({
      db: storage.db,
      store: this.store,
      messaging: ctx.messaging,
      signals: ctx.signals,
      format: parts.format,
      crypto,
      auth: mailAuthenticator({ mta: e.mailDomain, ...(parts.dnsResolver ? { resolver: parts.dnsResolver } : {}) }),
      clock,
      logger: log,
      domain: config.domain,
      mailDomain: e.mailDomain,
      maxBytes: e.maxBytes,
      maxRecipients: config.maxRecipients,
      plainMail: e.plainMail,
      unauthenticated: e.unauthenticated,
      accountExists: async (local) => (await ctx.accounts.findByUsername(local)) !== null,
      storeFile: (sender, f) => ctx.attachments.storeBridged(sender, f.content, f.mediaType, f.name),
      failDelivery: (d, seq, reason) => fed.failAfterDelivery(d, seq, reason),
      isOurs,
    });
    this.reader = e.imap ? new ImapReader({ server: e.imap, store: this.store, handle: (raw) => this.inbound.handle(raw), logger: log, pollMs: e.pollMs, maxBytes: e.maxBytes }) : null;
    // After the personal-domain transports: a personal domain is never taken for e-mail.
    fed.addTransport(this.transport);
  }

  async start(): Promise<void> {
    this.reader?.start();
    if (this.ctx.config.email.smtpListen) await this.listen(this.ctx.config.email.smtpListen);
  }

  async stop(): Promise<void> {
    await this.reader?.stop();
    const s = this.smtpServer;
    this.smtpServer = null;
    if (s) await new Promise<void>((done) => s.close(() => done()));
    this.transport.close();
  }

  /**
   * Our own MX: mail for our users, taken only once it is handled (stored, or dropped for a
   * logged reason), so the sending server keeps and retries it if we fail before that. Recipients
   * are checked at RCPT: only existing accounts at the mail domain.
   */
  private async listen(at: { host: string; port: number }): Promise<void> {
    const e = this.ctx.config.email;
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      size: e.maxBytes,
      logger: false,
      banner: `${e.mailDomain} intertalk`,
      onRcptTo: (address, _session, cb) => {
        const a = address.address.toLowerCase();
        const at = a.lastIndexOf('@');
        if (at < 1 || a.slice(at + 1) !== e.mailDomain) return cb(Object.assign(new Error('relay access denied'), { responseCode: 554 }));
        this.ctx.accounts
          .findByUsername(a.slice(0, at))
          .then((acc) => cb(acc ? null : Object.assign(new Error('no such user here'), { responseCode: 550 })))
          .catch(() => cb(Object.assign(new Error('try again later'), { responseCode: 451 })));
      },
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        let size = 0;
        stream.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= e.maxBytes) chunks.push(c);
        });
        stream.on('end', () => {
          if ((stream as unknown as { sizeExceeded?: boolean }).sizeExceeded || size > e.maxBytes) return cb(Object.assign(new Error('message too big'), { responseCode: 552 }));
          const mailFrom = session.envelope.mailFrom;
          this.inbound
            .handle(Buffer.concat(chunks), { ip: session.remoteAddress, helo: session.hostNameAppearsAs, ...(mailFrom ? { sender: mailFrom.address } : {}) })
            .then(() => cb(null))
            .catch(() => cb(Object.assign(new Error('temporary failure, try again later'), { responseCode: 451 })));
        });
      },
    });
    this.smtpServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => resolve());
    });
    server.on('error', (err) => this.ctx.logger.warn({ err }, 'e-mail SMTP listener error'));
  }

  /** What an address is to our users: one of ours, an intertalk user elsewhere, or e-mail. */
  async kindOf(address: string): Promise<'local' | 'intertalk' | 'email' | 'unknown'> {
    if (this.ctx.messaging.ownerOf(address) !== null) return 'local';
    const d = domainOf(address);
    try {
      return (await withTimeout(this.routing.isEmail(d), 5_000)) ? 'email' : 'intertalk';
    } catch {
      return this.routing.known(d) === true ? 'email' : 'unknown';
    }
  }

  /**
   * The user's contact card (vCard 4.0, as Delta Chat writes and reads it): the e-mail address and
   * the OpenPGP key. A Delta Chat user who imports it can write to the user at once, encrypted —
   * Delta Chat's default (force_encryption) neither sends nor accepts unencrypted mail.
   */
  async contactCard(address: string): Promise<string | null> {
    const mailAddress = this.transport.mailAddressOf(address);
    const keydata = await this.crypto.keydataFor(mailAddress);
    const local = mailAddress.slice(0, mailAddress.lastIndexOf('@'));
    const lines = ['BEGIN:VCARD', 'VERSION:4.0', `EMAIL:${vcardText(mailAddress)}`, `FN:${vcardText(local)}`];
    if (keydata) lines.push(`KEY:data:application/pgp-keys;base64\\,${keydata}`);
    lines.push(`REV:${new Date(this.ctx.clock.now()).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`, 'END:VCARD', '');
    return lines.join('\r\n');
  }

  routes(app: FastifyInstance): void {
    app.get('/me/email/card', async (req, reply) => {
      const user = await requireUser(this.ctx, req);
      const card = await this.contactCard(user.address);
      reply.header('content-type', 'text/vcard; charset=utf-8');
      reply.header('content-disposition', `attachment; filename="${user.address.replace(/[^A-Za-z0-9@._-]/g, '_')}.vcf"`);
      return card;
    });
    app.get('/addresses/:address', async (req) => {
      await requireUser(this.ctx, req);
      const p = parseAddress(String((req.params as { address?: string }).address ?? ''));
      if (!p.ok) throw new HttpError(400, 'invalid_address', p.reason);
      return { address: p.address.full, kind: await this.kindOf(p.address.full) };
    });
  }
}

/** RFC 6350 §3.4 text escaping. */
function vcardText(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/,/g, '\\,').replace(/;/g, '\\;').replace(/\n/g, '\\n');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout')), ms);
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}
