// A submission server for tests (smtp-server on loopback): keeps every mail it is given with its
// envelope, accepts any login (Delta Chat logs in; nodemailer need not), or refuses DATA on demand
// (`mode`: 451 for now, 550 for good).
import { SMTPServer } from 'smtp-server';
import { freePort } from '../../src/devnet/network.js';

export interface TakenMail {
  from: string;
  /** Envelope recipients, lower-cased. */
  to: string[];
  raw: Buffer;
}

export class SmtpSink {
  readonly mails: TakenMail[] = [];
  mode: 'ok' | 'temporary' | 'permanent' = 'ok';
  port = 0;
  private server: SMTPServer | null = null;

  async start(): Promise<this> {
    this.port = await freePort();
    const server = new SMTPServer({
      authOptional: true,
      allowInsecureAuth: true,
      disabledCommands: ['STARTTLS'],
      disableReverseLookup: true,
      logger: false,
      onAuth: (auth, _session, cb) => cb(null, { user: auth.username }),
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (this.mode === 'temporary') return cb(Object.assign(new Error('try later'), { responseCode: 451 }));
          if (this.mode === 'permanent') return cb(Object.assign(new Error('no such user'), { responseCode: 550 }));
          this.mails.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address.toLowerCase()), raw: Buffer.concat(chunks) });
          cb(null);
        });
      },
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    return this;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((done) => s.close(() => done()));
  }
}
