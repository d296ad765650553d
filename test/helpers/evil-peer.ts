// A test-only hostile peer provider: a real `node:https` server that answers for any number of
// *.test domains (dispatch by Host header), serves /.well-known/intertalk, /keys and /keys/{kid}
// exactly as each test configures, and records every request it receives. Its keys and tokens are
// made with `jose`, plus hand-built tokens (`alg: none`, HMAC) that no library would sign.
//
//   const peer = await EvilPeer.listen();                 // listening on 127.0.0.1, no cert yet
//   const net = await startNetwork({ …, extraResolve: { 'evil.test': peer.port } });
//   peer.setCert(await net.ca.issue(['evil.test']));      // certificate from the test CA
//   const k = await peerKey('k1');  peer.host('evil.test').keys.set('k1', k.publicJwk);
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHmac } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';

export interface LoggedRequest {
  host: string;
  method: string;
  path: string;
  userAgent: string;
}

export interface HostConfig {
  /** Answer to GET /.well-known/intertalk; default 404. */
  wellKnown: { status: number; json?: unknown };
  /** Served by /keys/{kid} (the value as-is) and, unless `jwks` is set, by /keys. */
  keys: Map<string, unknown>;
  /** Overrides the /keys document. */
  jwks?: unknown;
  /** Answer to POST /messages (deliveries to this domain); default 404. */
  messages?: { status: number; json?: unknown };
  /** Answers POST /messages/batch from the request body; default 404. */
  batch?: (body: Buffer) => Promise<{ status: number; json?: unknown }>;
}

export class EvilPeer {
  readonly requests: LoggedRequest[] = [];
  /** TLS handshakes that failed (e.g. a plain-http client). */
  tlsErrors = 0;
  private readonly hosts = new Map<string, HostConfig>();
  private closed = false;

  private constructor(
    private readonly server: https.Server,
    readonly port: number,
  ) {}

  /** Starts listening on 127.0.0.1 (random port); set a certificate with setCert before use. */
  static async listen(): Promise<EvilPeer> {
    const server = https.createServer({});
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const peer = new EvilPeer(server, (server.address() as AddressInfo).port);
    server.on('request', (req, res) => peer.handle(req, res));
    server.on('tlsClientError', () => {
      peer.tlsErrors++;
    });
    return peer;
  }

  setCert(c: { cert: string; key: string }): void {
    this.server.setSecureContext({ cert: c.cert, key: c.key });
  }

  /** The configuration of one domain (created on first use). */
  host(domain: string): HostConfig {
    let h = this.hosts.get(domain);
    if (!h) {
      h = { wellKnown: { status: 404 }, keys: new Map() };
      this.hosts.set(domain, h);
    }
    return h;
  }

  /** Requests for `domain` (optionally only those whose path starts with `prefix`). */
  seen(domain: string, prefix = ''): LoggedRequest[] {
    return this.requests.filter((r) => r.host === domain && r.path.startsWith(prefix));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase();
    const path = (req.url ?? '/').split('?')[0]!;
    this.requests.push({ host, method: req.method ?? '', path, userAgent: String(req.headers['user-agent'] ?? '') });
    const send = (status: number, json?: unknown) => {
      const body = json === undefined ? JSON.stringify({ error: 'not_found' }) : JSON.stringify(json);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const h = this.hosts.get(host);
    const batch = h?.batch;
    if (batch && req.method === 'POST' && path === '/messages/batch') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        batch(Buffer.concat(chunks)).then(
          (a) => send(a.status, a.json),
          () => send(500, { error: 'internal' }),
        );
      });
      return;
    }
    req.resume();
    if (h?.messages && req.method === 'POST' && path === '/messages') return send(h.messages.status, h.messages.json);
    if (!h || req.method !== 'GET') return send(404);
    if (path === '/.well-known/intertalk') return send(h.wellKnown.status, h.wellKnown.json);
    if (path === '/keys') return send(200, h.jwks ?? { keys: [...h.keys.values()] });
    const m = /^\/keys\/([^/]+)$/.exec(path);
    if (m) {
      const kid = decodeURIComponent(m[1]!);
      return h.keys.has(kid) ? send(200, h.keys.get(kid)) : send(404);
    }
    send(404);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A listener that only counts connections: proves that nobody connected to it. */
export class Trap {
  connections = 0;
  private constructor(
    private readonly servers: import('node:net').Server[],
    readonly port: number,
  ) {}

  static async listen(): Promise<Trap> {
    const { createServer } = await import('node:net');
    const first = createServer();
    await new Promise<void>((resolve, reject) => {
      first.once('error', reject);
      first.listen(0, '127.0.0.1', () => resolve());
    });
    const port = (first.address() as AddressInfo).port;
    const servers = [first];
    // Also ::1 on the same port, where `localhost` may resolve first (best effort: no IPv6 is fine).
    const v6 = createServer();
    await new Promise<void>((resolve) => {
      v6.once('error', () => resolve());
      v6.listen(port, '::1', () => {
        servers.push(v6);
        resolve();
      });
    });
    const trap = new Trap(servers, port);
    for (const s of servers) {
      s.on('connection', (sock) => {
        trap.connections++;
        sock.destroy();
      });
    }
    return trap;
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

export interface PeerKey {
  kid: string;
  alg: 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** The public JWK with kid, alg and use, as a provider publishes it. */
  publicJwk: JWK;
}

export async function peerKey(kid: string): Promise<PeerKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  return { kid, alg: 'ES256', privateKey, publicKey, publicJwk };
}

/** Signs `claims` (undefined members are dropped) with `key`; the header may be overridden. */
export async function signToken(key: PeerKey, claims: Record<string, unknown>, header: { kid?: string } = {}): Promise<string> {
  const payload = Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined));
  return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header }).sign(key.privateKey);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');

/** An unsecured JWT (RFC 7519 §6) built by hand: `header.payload.` or with a bogus signature. */
export function unsecuredToken(header: Record<string, unknown>, claims: Record<string, unknown>, signature = ''): string {
  return `${b64(header)}.${b64(claims)}.${signature}`;
}

/** An HMAC-SHA256 JWT built by hand with an arbitrary secret (e.g. the peer's public key bytes). */
export function hmacToken(header: Record<string, unknown>, claims: Record<string, unknown>, secret: string | Buffer): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}
