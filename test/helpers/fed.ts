// Clients for federation end-to-end tests against a devnet (src/devnet/network.ts): HTTPS and
// WebSocket to providers on 127.0.0.1 that present certificates for their *.test domain from the
// network's throw-away CA, plus polling helpers and a plain-HTTP provider for insecure-peer tests.
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import WebSocket from 'ws';
import type { Network } from '../../src/devnet/network.js';
import { loadConfig } from '../../src/config/config.js';
import { Provider } from '../../src/provider.js';
import { federation, type Federation } from '../../src/federation/service.js';
import { databaseUrl, dropDatabase } from './database.js';

export interface Res<T = any> {
  status: number;
  body: T;
}

/** Where a client reaches `domain`: the devnet node, or a provider registered with `addTarget`. */
interface Target {
  url: string;
  /** TLS: trust this CA and verify the certificate for `servername`. Null for plain http. */
  tls: { ca: string; servername: string } | null;
}

const extraTargets = new Map<string, Target>();
const extraProviders = new Map<string, Provider>();

function providerOf(net: Network, domain: string): Provider | null {
  return extraProviders.get(domain) ?? net.nodes.get(domain)?.provider ?? null;
}

/** Makes `domain` (e.g. a plain-HTTP provider outside the devnet) reachable through api()/FedSocket. */
export function addTarget(domain: string, url: string): void {
  extraTargets.set(domain, { url, tls: null });
}

function target(net: Network, domain: string): Target {
  const extra = extraTargets.get(domain);
  if (extra) return extra;
  const node = net.node(domain);
  return { url: node.url, tls: { ca: net.ca.caCert, servername: domain } };
}

/** One HTTP(S) request to a provider, with a fresh connection (providers are restarted in tests). */
export async function api<T = any>(
  net: Network,
  domain: string,
  method: string,
  path: string,
  opts: { token?: string; json?: unknown; form?: Record<string, string> } = {},
): Promise<Res<T>> {
  const t = target(net, domain);
  const headers: Record<string, string> = {};
  let body: string | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  if (opts.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(opts.form).toString();
  }
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const dispatcher = new Agent(t.tls ? { connect: { ca: t.tls.ca, servername: t.tls.servername } } : {});
  try {
    const res = await undiciFetch(t.url + path, { method, headers, body, dispatcher });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: parsed as T };
  } finally {
    await dispatcher.close();
  }
}

export interface FedUser {
  domain: string;
  name: string;
  address: string;
  token: string;
}

/** Creates an account on the provider and logs in with the password grant over HTTPS. */
export async function fedUser(net: Network, domain: string, name: string, provider?: Provider): Promise<FedUser> {
  const p = provider ?? providerOf(net, domain);
  if (!p) throw new Error(`${domain} is not running`);
  const password = 'correct horse battery staple';
  await p.ctx.accounts.create(name, password);
  const r = await api(net, domain, 'POST', '/token', { form: { grant_type: 'password', username: name, password } });
  if (r.status !== 200) throw new Error(`login ${name}@${domain}: ${r.status} ${JSON.stringify(r.body)}`);
  return { domain, name, address: r.body.address, token: r.body.access_token };
}

/** POST /messages as `u`; throws unless the provider answers 201. Returns the stored message. */
export async function say(net: Network, u: FedUser, to: string[], message: string): Promise<any> {
  const r = await api(net, u.domain, 'POST', '/messages', { token: u.token, json: { to: [u.address, ...to.filter((a) => a !== u.address)], message } });
  if (r.status !== 201) throw new Error(`${u.address} → ${to.join(',')}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The whole history of a conversation as `u` sees it on their own provider, oldest first. */
export async function history(net: Network, u: FedUser, conversationId: string): Promise<any[]> {
  const out: any[] = [];
  let after = 0;
  for (;;) {
    const r = await api(net, u.domain, 'GET', `/conversations/${conversationId}/messages?after=${after}&limit=500`, { token: u.token });
    if (r.status === 404) return out;
    if (r.status !== 200) throw new Error(`history of ${u.address}: ${r.status} ${JSON.stringify(r.body)}`);
    out.push(...r.body.messages);
    if (!r.body.hasMore || r.body.messages.length === 0) return out;
    after = r.body.messages[r.body.messages.length - 1].seq;
  }
}

/** GET /conversations/{id}/messages/{seq}/deliveries as the sender. */
export async function deliveries(net: Network, u: FedUser, m: { conversationId: string; seq: number }): Promise<any[]> {
  const r = await api(net, u.domain, 'GET', `/conversations/${m.conversationId}/messages/${m.seq}/deliveries`, { token: u.token });
  if (r.status !== 200) throw new Error(`deliveries: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.deliveries;
}

/** Polls `probe` until it returns a truthy value; fails with `what` and the last value seen. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const v = await probe();
    if (v) return v;
    last = v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Sum of a counter's values whose labels match `labels` (all of them if omitted). */
export async function counter(p: Provider, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = p.ctx.metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) {
    if (Object.entries(labels).every(([k, x]) => String((v.labels as Record<string, unknown>)[k]) === x)) sum += v.value;
  }
  return sum;
}

export const fed = (p: Provider): Federation => p.ctx.federation as unknown as Federation;

/** A WebSocket client on a provider's /messages stream that records frames and can wait for some. */
export class FedSocket {
  readonly frames: any[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const text = d.toString();
      let v: unknown = text;
      try {
        v = JSON.parse(text);
      } catch {
        /* kept as text */
      }
      this.frames.push(v);
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  /** Bare mode: the first frame is the token. Rich mode: `{token, since?}`; waits for "ready". */
  static async open(net: Network, u: FedUser, mode: { rich?: boolean; since?: number } = {}): Promise<FedSocket> {
    const t = target(net, u.domain);
    const url = t.url.replace(/^http/, 'ws') + '/messages';
    const p = providerOf(net, u.domain);
    const connectedBefore = p?.realtime.connectionCount ?? 0;
    // `servername` reaches tls.connect (SNI and the certificate check) though ws's types omit it.
    const tlsOptions: WebSocket.ClientOptions & { servername?: string } = t.tls ? { ca: t.tls.ca, servername: t.tls.servername } : {};
    const ws = new WebSocket(url, tlsOptions);
    const s = new FedSocket(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const rich = mode.rich || mode.since !== undefined;
    ws.send(rich ? JSON.stringify({ token: u.token, ...(mode.since !== undefined ? { since: mode.since } : {}) }) : u.token);
    if (rich) await s.until((f) => f.some((x) => x?.type === 'ready'), 5000, 'ready');
    else {
      // Bare mode has no acknowledgement: the socket is subscribed once the server has looked the
      // token up. Wait until the provider counts it as connected.
      if (p) await eventually('bare socket registered', async () => p.realtime.connectionCount > connectedBefore, 5000, 10);
    }
    return s;
  }

  /** Message objects received so far (bare frames or rich `message` envelopes). */
  messages(): any[] {
    return this.frames.map((f) => (f && f.type === 'message' && f.message ? f.message : f)).filter((m) => m && typeof m === 'object' && typeof m.id === 'string' && typeof m.from === 'string');
  }

  deliveryEvents(): any[] {
    return this.frames.filter((f) => f && f.type === 'delivery');
  }

  async until<T>(pred: (frames: any[]) => T | undefined | false, timeoutMs = 5000, what = 'frames'): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = pred(this.frames);
      if (r) return r;
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}; last frames: ${this.frames.slice(-5).map((f) => JSON.stringify(f)).join(' | ')}; closed: ${JSON.stringify(this.closed)}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, Math.min(250, deadline - Date.now())));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until a message with this id has arrived; returns it. */
  async message(id: string, timeoutMs = 5000): Promise<any> {
    return this.until(() => this.messages().find((m) => m.id === id), timeoutMs, `message ${id}`);
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * A provider without TLS (plain http) on 127.0.0.1:port for `domain`, federating with the devnet:
 * it trusts the devnet CA for outbound HTTPS.
 */
export async function startPlainProvider(net: Network, opts: { domain: string; port: number; env?: Record<string, string> }): Promise<{ provider: Provider; url: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'intertalk-plain-'));
  mkdirSync(dir, { recursive: true });
  const resolve = [...net.nodes.values()].map((n) => `${n.domain}=127.0.0.1:${n.port}`).join(',');
  const database = await databaseUrl(dir);
  const config = loadConfig({
    INTERTALK_DOMAIN: opts.domain,
    INTERTALK_LISTEN: `127.0.0.1:${opts.port}`,
    INTERTALK_PUBLIC_URL: `http://${opts.domain}:${opts.port}`,
    INTERTALK_DATABASE: database,
    INTERTALK_RESOLVE: resolve,
    INTERTALK_LOG_LEVEL: 'silent',
    ...(opts.env ?? {}),
  });
  const provider = await Provider.create(config, { federation: federation({ ca: net.ca.caCert }), defaultMetrics: false });
  const url = await provider.start();
  addTarget(opts.domain, url);
  extraProviders.set(opts.domain, provider);
  return {
    provider,
    url,
    async stop() {
      extraTargets.delete(opts.domain);
      extraProviders.delete(opts.domain);
      await provider.destroy();
      await dropDatabase(database);
    },
  };
}
