// A push service (RFC 8030) on loopback for the Web Push tests: endpoints per subscription, a
// script of answers per endpoint (201 by default; 410, 429/503 with Retry-After, 400 …), a record
// of every request. It checks what a real push service checks, independently of the library that
// sent the push: the VAPID JWT (RFC 8292, with jose) and, with the user agent's keys, decrypts
// each aes128gcm body (RFC 8188 + RFC 8291) with node:crypto alone.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createDecipheriv, createECDH, hkdfSync, randomBytes } from 'node:crypto';
import { importJWK, jwtVerify, decodeProtectedHeader } from 'jose';

export interface UaSubscription {
  endpoint: string;
  keys: { p256dh: string; auth: string };
  /** The user agent's private ECDH key (never leaves the test). */
  ecdh: ReturnType<typeof createECDH>;
  authSecret: Buffer;
  token: string;
}

export interface Received {
  token: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** What the service answered. */
  status: number;
  at: number;
}

export interface Answer {
  status: number;
  retryAfter?: string;
}

export class TestPushService {
  readonly received: Received[] = [];
  private readonly scripts = new Map<string, Answer[]>();
  private readonly gone = new Set<string>();
  private readonly fallback = new Map<string, Answer>();
  private constructor(private readonly server: Server, readonly origin: string) {}

  static async start(): Promise<TestPushService> {
    let svc: TestPushService | null = null;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const m = /^\/push\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
        if (req.method !== 'POST' || !m) {
          res.writeHead(404).end();
          return;
        }
        const token = m[1]!;
        const a = svc!.answerFor(token);
        svc!.received.push({ token, headers: req.headers, body: Buffer.concat(chunks), status: a.status, at: Date.now() });
        const headers: Record<string, string> = {};
        if (a.retryAfter) headers['retry-after'] = a.retryAfter;
        if (a.status === 201) headers.location = `${svc!.origin}/message/${randomBytes(8).toString('hex')}`;
        res.writeHead(a.status, headers).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    svc = new TestPushService(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return svc;
  }

  private answerFor(token: string): Answer {
    if (this.gone.has(token)) return { status: 410 };
    const s = this.scripts.get(token);
    if (s && s.length > 0) return s.shift()!;
    return this.fallback.get(token) ?? { status: 201 };
  }

  /** A new push resource with fresh user agent keys (as PushManager.subscribe makes). */
  subscription(): UaSubscription {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const authSecret = randomBytes(16);
    const token = randomBytes(12).toString('base64url');
    return {
      endpoint: `${this.origin}/push/${token}`,
      keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: authSecret.toString('base64url') },
      ecdh,
      authSecret,
      token,
    };
  }

  /** The next answers for this subscription's endpoint, in order; then `then` (default 201). */
  script(sub: UaSubscription, answers: Answer[], then?: Answer): void {
    this.scripts.set(sub.token, [...answers]);
    if (then) this.fallback.set(sub.token, then);
    else this.fallback.delete(sub.token);
  }

  /** From now on this endpoint answers 410 Gone (the user agent unsubscribed). */
  expire(sub: UaSubscription): void {
    this.gone.add(sub.token);
  }

  to(sub: UaSubscription): Received[] {
    return this.received.filter((r) => r.token === sub.token);
  }

  /** Pushes to `sub` that the service accepted (201), decrypted. */
  accepted(sub: UaSubscription): Array<{ r: Received; payload: any }> {
    return this.to(sub)
      .filter((r) => r.status === 201)
      .map((r) => ({ r, payload: JSON.parse(decrypt(sub, r.body).toString('utf8')) }));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** RFC 8291 §3.4 + RFC 8188 §2, one record: the plaintext, or an exception. */
export function decrypt(sub: Pick<UaSubscription, 'ecdh' | 'authSecret'>, body: Buffer): Buffer {
  if (body.length < 21) throw new Error('aes128gcm body shorter than its header');
  const salt = body.subarray(0, 16);
  const rs = body.readUInt32BE(16);
  const idlen = body[20]!;
  const keyid = body.subarray(21, 21 + idlen);
  if (idlen !== 65 || keyid[0] !== 0x04) throw new Error('keyid is not the sender\'s uncompressed P-256 public key');
  const records = body.subarray(21 + idlen);
  if (records.length > rs) throw new Error('more than one record');
  const uaPublic = sub.ecdh.getPublicKey();
  const ecdhSecret = sub.ecdh.computeSecret(keyid);
  // IKM = HKDF(salt = auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, keyid]);
  const ikm = Buffer.from(hkdfSync('sha256', ecdhSecret, sub.authSecret, keyInfo, 32));
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const tag = records.subarray(records.length - 16);
  const d = createDecipheriv('aes-128-gcm', cek, nonce);
  d.setAuthTag(tag);
  const padded = Buffer.concat([d.update(records.subarray(0, records.length - 16)), d.final()]);
  // The last record: the data, the delimiter 0x02, then zero or more 0x00.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (end < 0 || padded[end] !== 0x02) throw new Error('no last-record padding delimiter');
  return padded.subarray(0, end);
}

/** RFC 8292: `vapid t=JWT, k=key`; the JWT verifies with k, aud = push origin, exp ≤ 24 h ahead. */
export async function verifyVapid(headers: IncomingHttpHeaders, origin: string, now = Date.now()): Promise<{ sub: string; k: string; exp: number }> {
  const auth = headers.authorization ?? '';
  const m = /^vapid\s+(.*)$/i.exec(auth);
  if (!m) throw new Error(`not a vapid Authorization: ${auth.slice(0, 20)}`);
  const params = new Map<string, string>();
  for (const part of m[1]!.split(',')) {
    const eq = part.indexOf('=');
    params.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const t = params.get('t');
  const k = params.get('k');
  if (!t || !k) throw new Error('vapid needs t and k');
  const raw = Buffer.from(k, 'base64url');
  if (raw.length !== 65 || raw[0] !== 4) throw new Error('k is not an uncompressed P-256 key');
  if (decodeProtectedHeader(t).alg !== 'ES256') throw new Error('VAPID JWT must be ES256');
  const key = await importJWK({ kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33).toString('base64url') }, 'ES256');
  const { payload } = await jwtVerify(t, key, { audience: origin, algorithms: ['ES256'], currentDate: new Date(now) });
  if (typeof payload.exp !== 'number' || payload.exp * 1000 > now + 24 * 3600_000 + 60_000) throw new Error(`exp more than 24 h ahead: ${payload.exp}`);
  if (typeof payload.sub !== 'string' || !/^(mailto:|https:)/.test(payload.sub)) throw new Error(`sub is not mailto:/https: ${payload.sub}`);
  return { sub: payload.sub, k, exp: payload.exp };
}
