// Reads the bridge's mailbox (INTERTALK_EMAIL_IMAP) with imapflow: every new mail, in UID order,
// is handed to EmailInbound; the last UID handled is stored (email_inbound) only after the mail
// was handled, so a crash re-reads at most the mail in hand (handled again, stored once). New mail
// is noticed through IMAP IDLE (imapflow idles between commands and emits `exists`), with a poll
// every INTERTALK_EMAIL_POLL as a fallback. One instance reads a mailbox at a time (a lease).
// Handled mail is flagged \Seen and left in the mailbox (the operator's retention applies).
import { ImapFlow } from 'imapflow';
import type { Logger } from 'pino';
import type { EmailServer } from '../../config/config.js';
import type { EmailStore } from './store.js';
import type { InboundResult } from './inbound.js';
import { randomId } from '../../util/ids.js';

const LEASE_MS = 30_000;
const RECONNECT_MIN_MS = 1_000;
const RECONNECT_MAX_MS = 60_000;

export class ImapReader {
  readonly owner = randomId(8);
  private stopped = true;
  private client: ImapFlow | null = null;
  private loop: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private pending = false;

  constructor(
    private readonly o: {
      server: EmailServer & { mailbox: string };
      store: EmailStore;
      handle: (raw: Buffer) => Promise<InboundResult>;
      logger: Logger;
      pollMs: number;
      maxBytes: number;
    },
  ) {}

  private get key(): string {
    const s = this.o.server;
    return `imap://${s.user ?? ''}@${s.host}:${s.port}/${s.mailbox}`;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    const c = this.client;
    this.client = null;
    if (c) await c.logout().catch(() => c.close());
    await this.loop;
    await this.o.store.release(this.key, this.owner).catch(() => undefined);
  }

  /** Reads now (new mail announced, or a test). */
  wake(): void {
    this.pending = true;
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    if (this.pending || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      t.unref();
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!(await this.o.store.lease(this.key, this.owner, LEASE_MS))) {
          await this.sleep(LEASE_MS / 3);
          continue;
        }
        await this.session();
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        failures++;
        const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.min(6, failures - 1));
        this.o.logger.warn({ err: (err as Error).message, mailbox: this.o.server.mailbox, retryInMs: delay }, 'e-mail mailbox: connection failed');
        this.pending = false;
        await this.sleep(delay);
      } finally {
        const c = this.client;
        this.client = null;
        if (c) c.close();
      }
    }
  }

  /** One connection: read what is new, then wait for more until the connection ends. */
  private async session(): Promise<void> {
    const s = this.o.server;
    const client = new ImapFlow({
      host: s.host,
      port: s.port,
      secure: s.secure,
      ...(s.user ? { auth: { user: s.user, pass: s.password ?? '' } } : {}),
      logger: false,
      // Never fall back to sending the password in the clear to a remote server without STARTTLS.
      ...(s.secure || isLoopback(s.host) ? {} : { doSTARTTLS: true }),
    } as ConstructorParameters<typeof ImapFlow>[0]);
    this.client = client;
    let closed = false;
    client.on('exists', () => this.wake());
    client.on('close', () => {
      closed = true;
      this.wake();
    });
    client.on('error', (err: Error) => this.o.logger.warn({ err: err.message }, 'e-mail mailbox: connection error'));
    await client.connect();
    const box = await client.mailboxOpen(s.mailbox);
    const uidValidity = Number(box.uidValidity);
    while (!this.stopped && !closed) {
      this.pending = false;
      if (!(await this.o.store.lease(this.key, this.owner, LEASE_MS))) return; // another instance took over
      await this.readNew(client, uidValidity);
      await this.sleep(Math.min(this.o.pollMs, LEASE_MS / 3));
    }
  }

  private async readNew(client: ImapFlow, uidValidity: number): Promise<void> {
    const cursor = await this.o.store.cursor(this.key);
    // A new UIDVALIDITY means the UIDs were renumbered: read everything again (stored once).
    let last = cursor && cursor.uidValidity === uidValidity ? cursor.lastUid : 0;
    // `N:*` also names the newest mail when N is beyond it: filter by uid.
    const list = (await client.fetchAll(`${last + 1}:*`, { uid: true, size: true }, { uid: true })).filter((m) => m.uid > last).sort((a, b) => a.uid - b.uid);
    for (const item of list) {
      if (this.stopped) return;
      if ((item.size ?? 0) > this.o.maxBytes) {
        this.o.logger.info({ uid: item.uid, size: item.size, reason: `over INTERTALK_EMAIL_MAX_SIZE (${this.o.maxBytes} bytes)` }, 'inbound e-mail dropped');
      } else {
        const msg = await client.fetchOne(String(item.uid), { uid: true, source: true }, { uid: true });
        if (msg && msg.source) await this.o.handle(msg.source);
      }
      last = item.uid;
      await client.messageFlagsAdd(String(item.uid), ['\\Seen'], { uid: true }).catch(() => undefined);
      await this.o.store.setCursor(this.key, uidValidity, last);
    }
    if (!cursor || cursor.uidValidity !== uidValidity) await this.o.store.setCursor(this.key, uidValidity, last);
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
