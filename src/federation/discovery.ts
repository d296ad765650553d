// Well-known discovery of a peer's intertalk server (after MIMI's /.well-known/mimi/ds-domain).
//
// A provider MAY publish `GET https://{domain}/.well-known/intertalk`:
//
//   { "server": "https://chat.example.com", "versions": ["1"], "extensions": ["rooms"] }
//
// `server` (optional) is the absolute base URL of the provider's intertalk endpoints
// (`{server}/messages`, `{server}/keys`, …): http(s), no credentials, query or fragment, the host
// a domain name (not an IP literal); http only when that host is one of our insecure peers.
// `versions` and `extensions` are optional arrays of short tokens (default []). Unknown members
// are ignored for forward compatibility.
//
// Outcomes of resolve(domain):
// * 200 with a valid document → its server / versions / extensions (cached for ttlMs);
// * 404 or 410 → no delegation: baseUrl `{scheme}://{domain}` (cached for ttlMs);
// * network failure, policy refusal, or any other answer → PeerNetworkError, remembered for a
//   short time (FAILURE_TTL_MS, at most ttlMs) so a dead peer is not hammered.
// * 200 with a MALFORMED document → PeerNetworkError('bad_response'), like a failure. We do not
//   fall back to the bare domain: the operator evidently meant to delegate, and sending their
//   users' messages to the bare domain (often an unrelated web server) would turn a fixable
//   misconfiguration into misdelivery or permanent bounces. Treating it as "peer unavailable"
//   keeps deliveries queued and retried until the document is fixed.
// * 3xx is not followed (PeerHttp never follows redirects) and counts as a bad response.
//
// The scheme is https, or http for domains in insecurePeers.
import type { Clock } from '../util/clock.js';
import { isValidDomain } from '../protocol/address.js';
import { PeerNetworkError, type PeerHttp } from './net.js';

export const WELL_KNOWN_PATH = '/.well-known/intertalk';
/** How long a failed lookup is remembered before the next attempt. */
export const FAILURE_TTL_MS = 30_000;
/** Well-known documents are small; anything bigger is refused. */
export const MAX_WELL_KNOWN_BYTES = 64 * 1024;

const MAX_TOKENS = 64;
const TOKEN = /^[\x21-\x7e]{1,128}$/;
const MAX_URL = 2048;

export interface PeerInfo {
  /** Base URL of the peer's intertalk endpoints, without a trailing slash. */
  baseUrl: string;
  versions: string[];
  extensions: string[];
  /** True when baseUrl is somewhere other than the domain itself (another host, a port or a path). */
  delegated: boolean;
  /** True when baseUrl is plain http. */
  insecure: boolean;
  /** Clock time (ms) of the fetch this came from. */
  fetchedAt: number;
}

export type WellKnownResult =
  | { ok: true; value: Omit<PeerInfo, 'fetchedAt'> }
  | { ok: false; reason: string; policy?: boolean };

function tokens(name: string, v: unknown): { ok: true; value: string[] } | { ok: false; reason: string } {
  if (v === undefined) return { ok: true, value: [] };
  if (!Array.isArray(v)) return { ok: false, reason: `"${name}" must be an array of strings` };
  if (v.length > MAX_TOKENS) return { ok: false, reason: `"${name}" has more than ${MAX_TOKENS} entries` };
  const out: string[] = [];
  for (const t of v) {
    if (typeof t !== 'string' || !TOKEN.test(t)) {
      return { ok: false, reason: `"${name}" entries must be 1-128 printable ASCII characters without spaces` };
    }
    if (!out.includes(t)) out.push(t);
  }
  return { ok: true, value: out };
}

/** True when `baseUrl` is somewhere other than the domain itself (another host, a port or a path). */
function isDelegated(baseUrl: string, domain: string): boolean {
  const u = new URL(baseUrl);
  return u.host !== domain || u.pathname !== '/';
}

/** The base URL used when a peer publishes no document. */
export function defaultBaseUrl(domain: string, insecurePeers: Set<string>): string {
  return `${insecurePeers.has(domain) ? 'http' : 'https'}://${domain}`;
}

/**
 * Validates a well-known document fetched for `domain` (lower case). Pure; never throws.
 */
export function parseWellKnown(json: unknown, domain: string, insecurePeers: Set<string>): WellKnownResult {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return { ok: false, reason: 'the document must be a JSON object' };
  }
  const doc = json as Record<string, unknown>;
  const fallback = defaultBaseUrl(domain, insecurePeers);
  let baseUrl = fallback;
  if (doc.server !== undefined) {
    const server = doc.server;
    if (typeof server !== 'string' || server.length === 0 || server.length > MAX_URL) {
      return { ok: false, reason: '"server" must be a URL string' };
    }
    if (/[?#\s\\]/.test(server)) return { ok: false, reason: '"server" must not have a query, fragment, spaces or backslashes' };
    let u: URL;
    try {
      u = new URL(server);
    } catch {
      return { ok: false, reason: '"server" is not an absolute URL' };
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return { ok: false, reason: '"server" must be an http(s) URL' };
    if (u.username !== '' || u.password !== '' || /^[a-z]+:\/\/[^/]*@/i.test(server)) {
      return { ok: false, reason: '"server" must not contain credentials' };
    }
    const host = u.hostname;
    // These two are our policy refusing the peer (final), not a broken document (retried).
    if (!isValidDomain(host)) return { ok: false, reason: '"server" must name a host by domain name', policy: true };
    if (u.protocol === 'http:' && !insecurePeers.has(host)) {
      return { ok: false, reason: `"server" uses plain http but ${host} is not an allowed insecure peer`, policy: true };
    }
    baseUrl = `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
  }
  const versions = tokens('versions', doc.versions);
  if (!versions.ok) return versions;
  const extensions = tokens('extensions', doc.extensions);
  if (!extensions.ok) return extensions;
  return {
    ok: true,
    value: {
      baseUrl,
      versions: versions.value,
      extensions: extensions.value,
      delegated: isDelegated(baseUrl, domain),
      insecure: baseUrl.startsWith('http:'),
    },
  };
}

/** Our own well-known document, served at WELL_KNOWN_PATH. */
export function ourWellKnown(opts: { publicUrl: string; versions: string[]; extensions: string[] }): {
  server: string;
  versions: string[];
  extensions: string[];
} {
  return {
    server: opts.publicUrl.replace(/\/+$/, ''),
    versions: [...new Set(opts.versions)],
    extensions: [...new Set(opts.extensions)],
  };
}

/**
 * At most this many cached domains. A stranger can make us look up any domain (a token naming
 * it as issuer), so the cache is bounded: expired entries are swept first, then the oldest go.
 */
const MAX_CACHED = 10_000;

type Entry =
  | { ok: true; info: PeerInfo; expires: number }
  | { ok: false; error: PeerNetworkError; expires: number };

export class Discovery {
  private readonly http: PeerHttp;
  private readonly clock: Clock;
  private readonly ttlMs: number;
  private readonly insecurePeers: Set<string>;
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<PeerInfo>>();
  /** Bumped by invalidate() so an in-flight lookup does not repopulate the cache. */
  private readonly generation = new Map<string, number>();

  private readonly maxCached: number;

  constructor(opts: { http: PeerHttp; clock: Clock; ttlMs: number; insecurePeers: Set<string>; maxCached?: number }) {
    this.maxCached = opts.maxCached ?? MAX_CACHED;
    this.http = opts.http;
    this.clock = opts.clock;
    this.ttlMs = opts.ttlMs;
    this.insecurePeers = opts.insecurePeers;
  }

  /** How many domains are cached (bounded by maxCached). */
  get cachedCount(): number {
    return this.cache.size;
  }

  async resolve(domainInput: string): Promise<PeerInfo> {
    const domain = domainInput.toLowerCase();
    if (!isValidDomain(domain)) throw new PeerNetworkError('blocked_address', `"${domainInput}" is not a domain name`);
    const now = this.clock.now();
    const hit = this.cache.get(domain);
    if (hit && hit.expires > now) {
      if (hit.ok) return hit.info;
      throw hit.error;
    }
    if (hit) this.cache.delete(domain);
    const pending = this.inflight.get(domain);
    if (pending) return pending;
    const gen = this.generation.get(domain) ?? 0;
    const p = this.fetch(domain).then(
      (info) => {
        if ((this.generation.get(domain) ?? 0) === gen) {
          this.remember(domain, { ok: true, info, expires: this.clock.now() + this.ttlMs });
        }
        return info;
      },
      (err: unknown) => {
        const error = err instanceof PeerNetworkError ? err : new PeerNetworkError('connect_failed', String(err), { cause: err });
        if ((this.generation.get(domain) ?? 0) === gen) {
          this.remember(domain, { ok: false, error, expires: this.clock.now() + Math.min(FAILURE_TTL_MS, this.ttlMs) });
        }
        throw error;
      },
    );
    const tracked = p.finally(() => {
      if (this.inflight.get(domain) === tracked) this.inflight.delete(domain);
    });
    this.inflight.set(domain, tracked);
    return tracked;
  }

  /** The extensions a peer advertises ([] when it publishes no document). */
  async peerExtensions(domain: string): Promise<string[]> {
    return (await this.resolve(domain)).extensions;
  }

  /** Forgets what is known about `domain` (e.g. after deliveries to it start failing). */
  invalidate(domainInput: string): void {
    const domain = domainInput.toLowerCase();
    this.cache.delete(domain);
    this.inflight.delete(domain);
    this.generation.set(domain, (this.generation.get(domain) ?? 0) + 1);
  }

  private remember(domain: string, entry: Entry): void {
    this.cache.delete(domain);
    if (this.cache.size >= this.maxCached) {
      const now = this.clock.now();
      for (const [d, e] of this.cache) if (e.expires <= now) this.cache.delete(d);
      // Map order is insertion order: the oldest entries go first.
      for (const d of this.cache.keys()) {
        if (this.cache.size < this.maxCached) break;
        this.cache.delete(d);
      }
    }
    this.cache.set(domain, entry);
  }

  private async fetch(domain: string): Promise<PeerInfo> {
    const url = `${defaultBaseUrl(domain, this.insecurePeers)}${WELL_KNOWN_PATH}`;
    const res = await this.http.getJson(url, { maxResponseBytes: MAX_WELL_KNOWN_BYTES });
    const fetchedAt = this.clock.now();
    if (res.status === 404 || res.status === 410) {
      const baseUrl = defaultBaseUrl(domain, this.insecurePeers);
      return { baseUrl, versions: [], extensions: [], delegated: false, insecure: baseUrl.startsWith('http:'), fetchedAt };
    }
    if (res.status !== 200) {
      throw new PeerNetworkError('bad_response', `${domain}: ${WELL_KNOWN_PATH} answered HTTP ${res.status}`);
    }
    if (res.json === undefined) throw new PeerNetworkError('bad_response', `${domain}: ${WELL_KNOWN_PATH} is not JSON`);
    const parsed = parseWellKnown(res.json, domain, this.insecurePeers);
    if (!parsed.ok) {
      const code = parsed.policy ? (/plain http/.test(parsed.reason) ? 'insecure_not_allowed' : 'blocked_address') : 'bad_response';
      throw new PeerNetworkError(code, `${domain}: invalid ${WELL_KNOWN_PATH}: ${parsed.reason}`);
    }
    return { ...parsed.value, fetchedAt };
  }
}
