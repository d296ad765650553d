// Outbound HTTP to other providers. Every request to a peer (key fetches, discovery, message
// delivery) goes through PeerHttp, which enforces the transport policy in one place:
//
// * HTTPS with full certificate validation for the peer's domain. Plain http only for domains the
//   operator listed in INTERTALK_INSECURE_PEERS (the result then says `insecure: true`).
// * Peers are addressed by domain name. `resolve` (INTERTALK_RESOLVE, like curl's --resolve) sends
//   a domain's connections to a configured host:port while TLS still uses SNI and verifies the
//   certificate for the domain; resolve entries are operator configuration and bypass the address
//   policy below. Everything else is resolved here with dns.lookup and only public unicast
//   addresses are used (no loopback, RFC 1918, ULA, link-local, CGNAT, multicast, reserved, …);
//   the socket connects to the vetted IP itself, so a DNS answer cannot change between the check
//   and the connect (rebinding). IP literals in URLs are refused: keys and discovery are by domain.
//   Insecure peers are subject to the same address policy (reach local test peers via `resolve`).
// * Redirects are never followed (a 3xx is returned as-is), response bodies are capped, and each
//   request has one deadline covering the wait for a per-peer slot, connect, headers and body.
// * At most `perPeerConcurrency` requests are in flight per host; undici keeps keep-alive pools
//   of at most that many connections per origin.
//
// Failures are thrown as PeerNetworkError; `code` says why. `blocked_address` and
// `insecure_not_allowed` are policy refusals (retrying will not help); everything else means the
// peer is unavailable right now.
import { lookup } from 'node:dns';
import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector } from 'undici';
import { isValidDomain } from '../protocol/address.js';

export type PeerNetworkErrorCode =
  | 'blocked_address'
  | 'insecure_not_allowed'
  | 'timeout'
  | 'too_large'
  | 'connect_failed'
  | 'tls'
  | 'dns'
  /** The peer answered, but not with something usable (e.g. a malformed discovery document). */
  | 'bad_response';

export class PeerNetworkError extends Error {
  override name = 'PeerNetworkError';
  constructor(
    readonly code: PeerNetworkErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  /** True for refusals by our own policy; false when the peer is (temporarily) unavailable. */
  get policy(): boolean {
    return this.code === 'blocked_address' || this.code === 'insecure_not_allowed';
  }
}

export interface PeerHttpOptions {
  resolve: Map<string, { host: string; port: number }>;
  insecurePeers: Set<string>;
  timeoutMs: number;
  /** Default 1 MiB. */
  maxResponseBytes?: number;
  perPeerConcurrency: number;
  userAgent: string;
  /**
   * An extra trusted CA (PEM), for tests. When given, the trusted CAs are Node's bundled roots plus
   * this one; NODE_EXTRA_CA_CERTS is then NOT consulted (Node drops it whenever an explicit CA list
   * is passed). When omitted, Node's default store is used, which includes NODE_EXTRA_CA_CERTS.
   */
  ca?: string | Buffer;
  /** DNS resolution (default: the system resolver). */
  lookup?: LookupAll;
}

export interface PeerRequestInit {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
  maxResponseBytes?: number;
}

export interface PeerResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** True when the exchange was plain http (the peer is listed as insecure). */
  insecure: boolean;
}

export interface PeerJsonResponse {
  status: number;
  /** The parsed body, or undefined when the body is empty or not JSON. */
  json: unknown;
  headers: Record<string, string | string[] | undefined>;
  insecure: boolean;
}

export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * True when `ip` is a public unicast address we may connect to. IPv4-mapped IPv6 addresses are
 * judged as the IPv4 address they carry, and NAT64 (64:ff9b::/96) addresses by their embedded
 * IPv4 address; other IPv6 addresses must be global unicast (2000::/3) and not in a special range.
 */
export function isPublicAddress(ip: string): boolean {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(ip.replace(/%.*$/, ''));
  } catch {
    return false;
  }
  if (addr.kind() === 'ipv4') return addr.range() === 'unicast';
  const v6 = addr as ipaddr.IPv6;
  const range = v6.range();
  if (range === 'rfc6052' && v6.parts[0] === 0x64 && v6.parts[1] === 0xff9b && v6.parts.slice(2, 6).every((p) => p === 0)) {
    const [a, b] = [v6.parts[6]!, v6.parts[7]!];
    return new ipaddr.IPv4([a >> 8, a & 0xff, b >> 8, b & 0xff]).range() === 'unicast';
  }
  return range === 'unicast' && (v6.parts[0]! & 0xe000) === 0x2000;
}

/** Aborts a response body we will not read; the resulting abort error is expected, not a crash. */
function discard(body: NodeJS.ReadableStream & { destroy(): unknown }): void {
  body.on('error', () => {});
  body.destroy();
}

const TLS_CODE = /^(ERR_TLS_|ERR_SSL_)|CERT|SELF_SIGNED|_SIGNATURE|_ISSUER|^EPROTO$/;
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME', 'ENODATA', 'ESERVFAIL']);
const RETRY_NEXT_ADDRESS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

function errCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** Maps an error from undici / Node (or its `cause`) to a PeerNetworkError. */
function classify(err: unknown, host: string): PeerNetworkError {
  if (err instanceof PeerNetworkError) return err;
  const cause = (err as { cause?: unknown } | null)?.cause;
  if (cause instanceof PeerNetworkError) return cause;
  const codes = [errCode(err), errCode(cause)].filter(Boolean);
  const msg = err instanceof Error ? err.message : String(err);
  const has = (pred: (c: string) => boolean) => codes.some(pred);
  if (has((c) => c === 'UND_ERR_CONNECT_TIMEOUT' || c === 'UND_ERR_HEADERS_TIMEOUT' || c === 'UND_ERR_BODY_TIMEOUT' || c === 'ETIMEDOUT')) {
    return new PeerNetworkError('timeout', `${host}: timed out (${msg})`, { cause: err });
  }
  if (has((c) => c === 'UND_ERR_RES_EXCEEDED_MAX_SIZE')) {
    return new PeerNetworkError('too_large', `${host}: response too large`, { cause: err });
  }
  if (has((c) => DNS_CODES.has(c))) return new PeerNetworkError('dns', `${host}: DNS lookup failed (${msg})`, { cause: err });
  if (has((c) => TLS_CODE.test(c))) return new PeerNetworkError('tls', `${host}: TLS failed (${msg})`, { cause: err });
  return new PeerNetworkError('connect_failed', `${host}: ${msg}`, { cause: err });
}

/** DNS resolution, all addresses of a host (an interface so tests can point a name at an address). */
export type LookupAll = (host: string, callback: (err: NodeJS.ErrnoException | null, addresses: Array<{ address: string; family: number }>) => void) => void;
export const systemLookup: LookupAll = (host, callback) => lookup(host, { all: true, verbatim: true }, callback);

/**
 * Connects `options.hostname` only to public unicast addresses (isPublicAddress), trying them in
 * resolver order; a host with none fails with `blocked_address`. The socket goes to the vetted IP
 * itself (TLS still verifies the name), so a second DNS answer cannot rebind it. Used by PeerHttp
 * and by every other outbound client a stranger can point at a URL (Web Push endpoints).
 */
export function connectPublic(
  connector: buildConnector.connector,
  options: buildConnector.Options,
  callback: buildConnector.Callback,
  lookupAll: LookupAll = systemLookup,
): void {
  const host = options.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const https = options.protocol === 'https:';
  const port = Number(options.port) || (https ? 443 : 80);
  const attempt = (target: string, cb: buildConnector.Callback) =>
    connector({ ...options, hostname: target, port: String(port), ...(https && !isIP(host) ? { servername: host } : {}) }, cb);
  lookupAll(host, (err, addresses) => {
    if (err) return callback(new PeerNetworkError('dns', `${host}: DNS lookup failed (${err.code ?? err.message})`, { cause: err }), null);
    const usable = addresses.map((a) => a.address).filter(isPublicAddress);
    if (usable.length === 0) {
      const list = addresses.map((a) => a.address).join(', ') || 'no addresses';
      return callback(new PeerNetworkError('blocked_address', `${host} resolves to non-public addresses (${list})`), null);
    }
    // Try the vetted addresses in resolver order; move on only when an address is unreachable.
    const next = (i: number) =>
      attempt(usable[i]!, (...args) => {
        const [e] = args;
        if (e && i + 1 < usable.length && RETRY_NEXT_ADDRESS.has(errCode(e))) return next(i + 1);
        callback(...args);
      });
    next(0);
  });
}

/** A counting semaphore per key; waiters leave the queue when their signal aborts. */
class KeyedSemaphore {
  private readonly slots = new Map<string, { active: number; waiters: Array<() => void> }>();
  constructor(private readonly limit: number) {}

  acquire(key: string, signal: AbortSignal): Promise<() => void> {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { active: 0, waiters: [] };
      this.slots.set(key, slot);
    }
    const s = slot;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = s.waiters.shift();
      if (next) next();
      else if (--s.active === 0) this.slots.delete(key);
    };
    if (s.active < this.limit) {
      s.active++;
      return Promise.resolve(release);
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = s.waiters.indexOf(grant);
        if (i >= 0) s.waiters.splice(i, 1);
        reject(signal.reason);
      };
      // A slot is handed over directly: `active` stays the same.
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        resolve(release);
      };
      if (signal.aborted) return reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      s.waiters.push(grant);
    });
  }
}

export class PeerHttp {
  private readonly resolveMap: Map<string, { host: string; port: number }>;
  private readonly insecurePeers: Set<string>;
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private readonly userAgent: string;
  private readonly agent: Agent;
  private readonly connector: buildConnector.connector;
  private readonly semaphore: KeyedSemaphore;
  private readonly lookupAll: LookupAll;

  constructor(opts: PeerHttpOptions) {
    this.lookupAll = opts.lookup ?? systemLookup;
    this.resolveMap = opts.resolve;
    this.insecurePeers = opts.insecurePeers;
    this.timeoutMs = opts.timeoutMs;
    this.maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.userAgent = opts.userAgent;
    const concurrency = Math.max(1, Math.floor(opts.perPeerConcurrency));
    this.semaphore = new KeyedSemaphore(concurrency);
    this.connector = buildConnector({
      rejectUnauthorized: true,
      timeout: opts.timeoutMs,
      // undici turns Nagle off (TCP_NODELAY) on every socket it connects; keep-alive probes
      // notice a peer that vanished while a connection idles in the pool.
      keepAlive: true,
      keepAliveInitialDelay: 60_000,
      // An explicit CA list replaces Node's default store, so the bundled roots are added back.
      ...(opts.ca !== undefined ? { ca: [...rootCertificates, opts.ca.toString()] } : {}),
    });
    // Connections are kept alive and reused: at most `concurrency` per origin, one request at a
    // time on each (no HTTP/1.1 pipelining: a POST must not be sent twice on a dropped
    // connection). Several batches in flight to a peer (pipeline/1) therefore share a small set
    // of warm connections. Idle ones are kept as long as the peer's Keep-Alive hint says
    // (4 s without one).
    this.agent = new Agent({
      connections: concurrency,
      pipelining: 1,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connect: (options, callback) => this.connect(options, callback),
    });
  }

  /** Picks where to connect for `options.hostname` (a domain: IP literals never get here). */
  private connect(options: buildConnector.Options, callback: buildConnector.Callback): void {
    const host = options.hostname.toLowerCase();
    const https = options.protocol === 'https:';
    const attempt = (target: string, port: number, cb: buildConnector.Callback) =>
      this.connector({ ...options, hostname: target, port: String(port), ...(https ? { servername: host } : {}) }, cb);

    const override = this.resolveMap.get(host);
    if (override) return attempt(override.host, override.port, callback);
    if (isIP(host) || !isValidDomain(host)) {
      return callback(new PeerNetworkError('blocked_address', `${host}: peers are reached by domain name only`), null);
    }
    connectPublic(this.connector, options, callback, this.lookupAll);
  }

  async request(url: URL | string, init: PeerRequestInit): Promise<PeerResponse> {
    let u: URL;
    try {
      u = new URL(typeof url === 'string' ? url : url.href);
    } catch {
      throw new PeerNetworkError('blocked_address', `"${String(url)}" is not a URL`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new PeerNetworkError('insecure_not_allowed', `${u.protocol} URLs are not allowed for peers`);
    }
    const bare = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const host = bare.toLowerCase();
    if (isIP(bare) && !this.resolveMap.has(host)) {
      throw new PeerNetworkError('blocked_address', `${u.host}: IP addresses are not allowed, peers are reached by domain name`);
    }
    if (!isIP(bare) && !isValidDomain(host)) {
      throw new PeerNetworkError('blocked_address', `${u.host}: not a valid domain name`);
    }
    const insecure = u.protocol === 'http:';
    if (insecure && !this.insecurePeers.has(host)) {
      throw new PeerNetworkError('insecure_not_allowed', `${host}: plain http is not allowed (the peer is not listed as insecure)`);
    }

    const timeoutMs = init.timeoutMs ?? this.timeoutMs;
    const maxBytes = init.maxResponseBytes ?? this.maxResponseBytes;
    const controller = new AbortController();
    const timeoutError = new PeerNetworkError('timeout', `${host}: no complete response within ${timeoutMs} ms`);
    const timer = setTimeout(() => controller.abort(timeoutError), timeoutMs);
    let release: (() => void) | undefined;
    try {
      release = await this.semaphore.acquire(host, controller.signal);
      const headers: Record<string, string> = { 'user-agent': this.userAgent };
      for (const [k, v] of Object.entries(init.headers ?? {})) headers[k.toLowerCase()] = v;
      const res = await this.agent.request({
        origin: u.origin,
        path: `${u.pathname}${u.search}`,
        method: init.method,
        headers,
        body: init.body,
        signal: controller.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) {
        discard(res.body);
        throw new PeerNetworkError('too_large', `${host}: response of ${declared} bytes exceeds the limit of ${maxBytes}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > maxBytes) {
          discard(res.body);
          throw new PeerNetworkError('too_large', `${host}: response exceeds the limit of ${maxBytes} bytes`);
        }
        chunks.push(chunk);
      }
      return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), insecure };
    } catch (err) {
      if (controller.signal.aborted) throw timeoutError;
      throw classify(err, host);
    } finally {
      clearTimeout(timer);
      release?.();
    }
  }

  /** GET with `accept: application/json`; `json` is undefined unless the body parses as JSON. */
  async getJson(
    url: URL | string,
    opts: { headers?: Record<string, string>; timeoutMs?: number; maxResponseBytes?: number } = {},
  ): Promise<PeerJsonResponse> {
    const res = await this.request(url, {
      method: 'GET',
      headers: { accept: 'application/json', ...opts.headers },
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.maxResponseBytes !== undefined ? { maxResponseBytes: opts.maxResponseBytes } : {}),
    });
    let json: unknown;
    if (res.body.length > 0) {
      try {
        json = JSON.parse(res.body.toString('utf8'));
      } catch {
        json = undefined;
      }
    }
    return { status: res.status, json, headers: res.headers, insecure: res.insecure };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
