// A callback-only messaging server for tests: a small node:http server that implements the seed's
// flow (seed 001: the six-step flow and the "auth code and token" variant, with the JSON wire
// form docs/indieweb.md defines) on its own — its own discovery (a few lines of string handling),
// its own tokens — and nothing from src/. It serves users at personal domains whose home pages
// name it, and speaks no intertalk federation (no /.well-known/intertalk, no /keys).
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export type Target = { port: number; tls: { ca: string } | null };
type Json = any;

const secret = (prefix: string) => prefix + randomBytes(32).toString('base64url');
const domainOf = (a: string) => a.slice(a.lastIndexOf('@') + 1).toLowerCase();
const canon = (u: string) => {
  const x = new URL(u);
  return `${x.protocol}//${x.host}${x.pathname || '/'}${x.search}`;
};

export interface IssuedToken {
  flow: 'six-step' | 'token';
  domain: string;
  id: string | null;
  expiresAt: number;
  revoked: boolean;
}

export class CallbackPeer {
  url = '';
  /** Tokens this peer issued as a receiver. */
  readonly issued = new Map<string, IssuedToken>();
  /** Auth codes it issued as a sender. */
  readonly codes = new Map<string, { domain: string; destination: string; used: boolean }>();
  /** Tokens receivers granted it: `${endpoint}|${domain}|${id or ''}`. */
  readonly held = new Map<string, string>();
  readonly outgoing = new Map<string, { message: Json; recipientDomain: string }>();
  readonly inbox: Json[] = [];
  /** Every request it received: its type. */
  readonly log: string[] = [];
  /** The next this-many messages are stored but answered 503 (an answer lost on the way back). */
  loseAnswers = 0;
  private server!: http.Server;

  constructor(
    readonly host: string,
    /** How to reach a host name (the test's resolve table). */
    private readonly targets: (host: string) => Target | undefined,
  ) {}

  async start(): Promise<number> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const reply = (status: number, body: Json) => void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        if (req.method !== 'POST' || (req.url ?? '/') !== '/') return reply(404, { error: 'not_found', message: 'no such route' });
        let body: Json;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return reply(400, { error: 'invalid_json', message: 'not JSON' });
        }
        this.log.push(String(body?.type));
        this.handle(body).then(
          ([s, b]) => reply(s, b),
          (err) => reply(500, { error: 'internal', message: String(err) }),
        );
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const port = (this.server.address() as AddressInfo).port;
    this.url = `http://${this.host}/`;
    return port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** One HTTP request to `url`, connecting where the resolve table says. */
  async request(url: string, method: 'GET' | 'POST', body?: Json): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string; json: Json }> {
    const u = new URL(url);
    const t = this.targets(u.hostname);
    if (!t) throw new Error(`the peer does not know how to reach ${u.hostname}`);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const opts: https.RequestOptions = {
      host: '127.0.0.1',
      port: t.port,
      method,
      path: u.pathname + u.search,
      headers: { host: u.host, ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) },
      timeout: 30_000,
      ...(t.tls ? { ca: t.tls.ca, servername: u.hostname } : {}),
    };
    return new Promise((resolve, reject) => {
      const req = (t.tls ? https : http).request(opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** The peer's own discovery: rel="intertalk-server" / rel="pm" in a Link header or a <link>, or a metadata document. */
  async discover(domain: string): Promise<string | null> {
    const base = `http://${domain}/`;
    const page = await this.request(base, 'GET');
    if (page.status !== 200) return null;
    const link = String(page.headers.link ?? '');
    const m = /<([^>]+)>\s*;\s*rel="?(intertalk-server|pm)"?/.exec(link);
    if (m) return canon(new URL(m[1]!, base).href);
    let meta: string | null = null;
    for (const tag of page.text.match(/<link\b[^>]*>/gi) ?? []) {
      const rel = /\brel="([^"]*)"/i.exec(tag)?.[1]?.split(/\s+/) ?? [];
      const href = /\bhref="([^"]*)"/i.exec(tag)?.[1];
      if (!href) continue;
      if (rel.includes('intertalk-server') || rel.includes('pm')) return canon(new URL(href, base).href);
      if (rel.includes('intertalk-metadata')) meta = new URL(href, base).href;
    }
    if (!meta) return null;
    const doc = await this.request(meta, 'GET');
    return typeof doc.json?.server === 'string' ? canon(new URL(doc.json.server, meta).href) : null;
  }

  private async handle(b: Json): Promise<[number, Json]> {
    switch (b?.type) {
      // ---- as a receiver ----
      case 'notify': {
        const domain = String(b.domain);
        const server = await this.discover(domain);
        if (!server) return [403, { error: 'sender_not_delegated', message: `no server on ${domain}'s home page` }];
        const subject = b.id !== undefined ? { id: b.id } : { code: b.code };
        const check = await this.request(server, 'POST', { type: 'check', domain, ...subject, destination: this.url });
        if (check.status !== 200 || check.json?.ok !== true) return [403, { error: 'callback_refused', message: `${server} said ${check.status}` }];
        const token = secret('ict1_');
        const six = b.id !== undefined;
        const expiresAt = Date.now() + (six ? 600_000 : 3_600_000);
        this.issued.set(token, { flow: six ? 'six-step' : 'token', domain, id: six ? b.id : null, expiresAt, revoked: false });
        const grant = await this.request(server, 'POST', { type: 'grant', domain, ...subject, destination: this.url, token, expiresAt: new Date(expiresAt).toISOString() });
        if (grant.status < 200 || grant.status >= 300) {
          this.issued.delete(token);
          return [403, { error: 'callback_refused', message: `${server} refused the token: ${grant.status}` }];
        }
        return [202, { status: 'granted' }];
      }
      case 'message': {
        const t = this.issued.get(String(b.token));
        if (!t) return [401, { error: 'invalid_token', message: 'unknown token' }];
        if (t.revoked) return [401, { error: 'token_revoked', message: 'revoked' }];
        if (Date.now() >= t.expiresAt) return [401, { error: 'token_expired', message: 'expired' }];
        const m = b.message;
        if (domainOf(String(m?.from)) !== t.domain) return [403, { error: 'sender_not_delegated', message: 'wrong domain' }];
        if (t.id !== null && m.id !== t.id) return [403, { error: 'token_mismatch', message: 'another message' }];
        if (this.inbox.some((x) => x.from === m.from && x.id === m.id)) return [200, { id: m.id, status: 'duplicate' }];
        this.inbox.push(m);
        if (this.loseAnswers > 0) {
          this.loseAnswers--;
          return [503, { error: 'unavailable', message: 'stored, but the answer is lost' }];
        }
        return [201, { id: m.id, status: 'accepted' }];
      }
      case 'revoke': {
        const t = this.issued.get(String(b.token));
        if (!t) return [404, { error: 'unknown_token', message: 'unknown' }];
        t.revoked = true;
        return [200, { status: 'revoked' }];
      }
      // ---- as a sender, called back ----
      case 'check':
      case 'grant': {
        const domain = String(b.domain);
        const destination = canon(String(b.destination));
        if (b.id !== undefined) {
          const o = this.outgoing.get(String(b.id));
          if (!o || domainOf(o.message.from) !== domain) return [404, { error: 'unknown_message', message: 'no such message' }];
          if (b.type === 'check') return [200, { ok: true }];
          // Step 5: the recipient's home page must name the destination asking for the message.
          const named = await this.discover(o.recipientDomain);
          if (named !== destination) return [403, { error: 'destination_mismatch', message: `${o.recipientDomain} names ${named}` }];
          this.held.set(`${destination}|${domain}|${b.id}`, String(b.token));
          return [202, { status: 'accepted' }];
        }
        const c = this.codes.get(String(b.code));
        if (!c || c.used || c.domain !== domain || c.destination !== destination) return [404, { error: 'unknown_code', message: 'no such code' }];
        if (b.type === 'check') return [200, { ok: true }];
        c.used = true;
        this.held.set(`${destination}|${domain}|`, String(b.token));
        return [202, { status: 'accepted' }];
      }
      default:
        return [400, { error: 'unknown_type', message: String(b?.type) }];
    }
  }

  /**
   * Sends a message from one of its users, by the six-step flow or the token variant: discovers the
   * recipient's server, runs the flow, and answers with the receiver's answer to the message.
   */
  async send(message: Json, flow: 'six-step' | 'token'): Promise<{ status: number; json: Json; step: string }> {
    const recipientDomain = domainOf(message.to.find((t: string) => t !== message.from));
    const server = await this.discover(recipientDomain);
    if (!server) throw new Error(`no server on ${recipientDomain}`);
    const domain = domainOf(message.from);
    this.outgoing.set(message.id, { message, recipientDomain });
    try {
      let token: string | undefined;
      if (flow === 'six-step') {
        const n = await this.request(server, 'POST', { type: 'notify', domain, id: message.id });
        if (n.status !== 202) return { status: n.status, json: n.json, step: 'notify' };
        token = this.held.get(`${server}|${domain}|${message.id}`);
      } else {
        token = this.held.get(`${server}|${domain}|`);
        if (!token) {
          const code = secret('icc1_');
          this.codes.set(code, { domain, destination: server, used: false });
          const n = await this.request(server, 'POST', { type: 'notify', domain, code });
          if (n.status !== 202) return { status: n.status, json: n.json, step: 'notify' };
          token = this.held.get(`${server}|${domain}|`);
        }
      }
      if (!token) throw new Error('no token was granted');
      const r = await this.request(server, 'POST', { type: 'message', token, message });
      return { status: r.status, json: r.json, step: 'message' };
    } finally {
      this.outgoing.delete(message.id);
    }
  }
}
