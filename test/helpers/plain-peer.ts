// A test-only provider that implements plain intertalk (seed 000) and nothing else: a real
// `node:https` server for one domain (e.g. plain.test) with
//
//   POST /messages   verifies the sender's JWT (aud = us, iss = domain of sub, sub = from, the
//                    signature against GET https://{iss}/keys/{kid} over verified HTTPS) and
//                    stores the body as received;
//   GET  /keys       its own ES256 key as a JWK set;  GET /keys/{kid} that key, or 404;
//
// and nothing else: no /.well-known/intertalk (404), so it advertises no extensions. It can also
// send seed-000 messages (signed, without `id`, the 2016 format) to another provider.
//
//   const peer = await PlainPeer.listen('plain.test', ['carol']);
//   const net = await startNetwork({ …, extraResolve: { 'plain.test': peer.port } });
//   peer.setCert(await net.ca.issue(['plain.test']));
//   peer.trust(net);                       // how it reaches the devnet's providers (for /keys)
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Agent, fetch } from 'undici';
import { decodeJwt, decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose';
import type { Network } from '../../src/devnet/network.js';
import { peerKey, signToken, type PeerKey } from './evil-peer.js';

/** The members of a seed-000 message (plus `id`, which later revisions add). */
export const SEED_000_FIELDS = ['id', 'to', 'from', 'sentAt', 'message', 'messageFormatted', 'format'] as const;

export interface PlainRequest {
  method: string;
  path: string;
  host: string;
  status: number;
}

export interface Received {
  /** The body exactly as parsed from the request. */
  body: Record<string, unknown>;
  raw: string;
  claims: Record<string, unknown>;
}

export class PlainPeer {
  /** Every request, with the status it was answered with. */
  readonly requests: PlainRequest[] = [];
  /** Messages accepted by POST /messages, in arrival order. */
  readonly received: Received[] = [];
  /** Why requests to POST /messages were refused (for failure messages). */
  readonly refusals: string[] = [];
  key!: PeerKey;
  private net: Network | null = null;
  private readonly agents = new Map<string, Agent>();
  private closed = false;

  private constructor(
    private readonly server: https.Server,
    readonly port: number,
    readonly domain: string,
    readonly users: Set<string>,
  ) {}

  /** Listens on 127.0.0.1 (random port); set a certificate (setCert) and trust (trust) before use. */
  static async listen(domain: string, users: string[]): Promise<PlainPeer> {
    const server = https.createServer({});
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const peer = new PlainPeer(server, (server.address() as AddressInfo).port, domain, new Set(users.map((u) => `${u}@${domain}`)));
    peer.key = await peerKey('plain-k1');
    server.on('request', (req, res) => void peer.handle(req, res));
    return peer;
  }

  setCert(c: { cert: string; key: string }): void {
    this.server.setSecureContext({ cert: c.cert, key: c.key });
  }

  /** The devnet whose providers this peer talks to (their ports and the CA it verifies them with). */
  trust(net: Network): void {
    this.net = net;
  }

  /** Requests to `path` (exact), optionally of one method. */
  seen(path: string, method?: string): PlainRequest[] {
    return this.requests.filter((r) => r.path === path && (method === undefined || r.method === method));
  }

  private agent(domain: string): Agent {
    let a = this.agents.get(domain);
    if (!a) {
      if (!this.net) throw new Error('PlainPeer.trust(net) was not called');
      a = new Agent({ connect: { ca: this.net.ca.caCert, servername: domain } });
      this.agents.set(domain, a);
    }
    return a;
  }

  /** https://{domain}{path} on the devnet, with the certificate verified for `domain`. */
  private async https(domain: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
    const node = this.net?.nodes.get(domain);
    if (!node) throw new Error(`${domain} is not a provider of the devnet`);
    return fetch(`https://127.0.0.1:${node.port}${path}`, { ...init, dispatcher: this.agent(domain) });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    const entry: PlainRequest = { method: req.method ?? '', path, host: (req.headers.host ?? '').replace(/:\d+$/, ''), status: 0 };
    this.requests.push(entry);
    const send = (status: number, json: unknown) => {
      entry.status = status;
      const body = JSON.stringify(json);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    try {
      if (req.method === 'GET' && path === '/keys') return send(200, { keys: [this.key.publicJwk] });
      const m = /^\/keys\/([^/]+)$/.exec(path);
      if (req.method === 'GET' && m) {
        return decodeURIComponent(m[1]!) === this.key.kid ? send(200, this.key.publicJwk) : send(404, { error: 'not_found', message: 'no such key' });
      }
      if (req.method === 'POST' && path === '/messages') {
        const out = await this.receive(req.headers.authorization, raw);
        if (out.status >= 300) this.refusals.push(`${out.status} ${JSON.stringify(out.body)}`);
        return send(out.status, out.body);
      }
      send(404, { error: 'not_found', message: `${req.method} ${path}: this provider implements plain intertalk only` });
    } catch (err) {
      send(500, { error: 'internal', message: String(err) });
    }
  }

  /** Seed 000 "Client Authentication", then the message shape; stores the body on success. */
  private async receive(authorization: string | undefined, raw: string): Promise<{ status: number; body: unknown }> {
    const deny = (message: string) => ({ status: 401, body: { error: 'unauthorized', message } });
    const token = /^Bearer ([A-Za-z0-9_.-]+)$/.exec(authorization ?? '')?.[1];
    if (!token) return deny('no bearer token');
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      return { status: 400, body: { error: 'bad_request', message: 'not JSON' } };
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return { status: 400, body: { error: 'bad_request', message: 'not an object' } };
    const { to, from, sentAt, message } = body;
    if (!Array.isArray(to) || !to.every((a) => typeof a === 'string') || typeof from !== 'string' || !to.includes(from)) {
      return { status: 400, body: { error: 'bad_request', message: 'to/from' } };
    }
    if (typeof sentAt !== 'string' || Number.isNaN(Date.parse(sentAt))) return { status: 400, body: { error: 'bad_request', message: 'sentAt' } };
    if (typeof message !== 'string') return { status: 400, body: { error: 'bad_request', message: 'message' } };
    if ((body.messageFormatted === undefined) !== (body.format === undefined)) return { status: 400, body: { error: 'bad_request', message: 'messageFormatted/format' } };

    let claims: Record<string, unknown>;
    let kid: unknown;
    try {
      claims = decodeJwt(token) as Record<string, unknown>;
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return deny('malformed token');
    }
    const { iss, sub, aud } = claims;
    if (aud !== this.domain) return deny('aud is not us');
    if (typeof iss !== 'string' || typeof sub !== 'string' || sub.slice(sub.lastIndexOf('@') + 1) !== iss) return deny('iss must be the domain of sub');
    if (sub !== from) return deny('sub must be from');
    if (typeof kid !== 'string') return deny('no kid');
    // GET {iss}/keys/{kid} over authenticated HTTPS.
    const kr = await this.https(iss, `/keys/${encodeURIComponent(kid)}`);
    if (kr.status !== 200) return deny(`${iss} has no key ${kid} (${kr.status})`);
    const jwk = (await kr.json()) as JWK;
    try {
      const key = await importJWK(jwk, typeof jwk.alg === 'string' ? jwk.alg : 'ES256');
      await jwtVerify(token, key, { audience: this.domain, issuer: iss, subject: sub });
    } catch (err) {
      return deny(`bad signature: ${(err as Error).message}`);
    }
    if (!to.some((a) => this.users.has(a as string))) return { status: 403, body: { error: 'forbidden', message: 'no recipient here' } };
    this.received.push({ body, raw, claims });
    return { status: 201, body: { status: 'accepted' } };
  }

  /**
   * Sends a seed-000 message (no `id`: the 2016 format) to `domain`'s POST /messages, signed with
   * this peer's key. `claims` overrides token claims (e.g. a forged iss). Returns status and body.
   */
  async sendTo(domain: string, body: Record<string, unknown>, claims: Record<string, unknown> = {}): Promise<{ status: number; body: any }> {
    const now = Math.floor(Date.now() / 1000);
    const token = await signToken(this.key, { iss: this.domain, sub: body.from, aud: domain, iat: now, exp: now + 60, jti: randomUUID(), ...claims });
    const res = await this.https(domain, '/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* kept as text */
    }
    return { status: res.status, body: parsed };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.agents.values()) await a.close().catch(() => undefined);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
