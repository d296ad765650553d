// Helpers for crash tests of federation over real TLS: an https-aware `serve` child, HTTPS and
// WebSocket clients that trust a test CA and verify a *.test name while connecting to 127.0.0.1,
// and a TCP proxy that slows one direction down (so that a SIGKILL lands mid-delivery).
import { spawn } from 'node:child_process';
import { createServer, connect, type Server, type Socket as NetSocket } from 'node:net';
import { Agent, fetch } from 'undici';
import WebSocket from 'ws';
import { BIN, type Child } from './process.js';

/** HTTPS to 127.0.0.1:port, verifying the certificate for `servername` against `ca`. */
export class TlsClient {
  private readonly agents = new Map<string, Agent>();
  constructor(private readonly ca: string) {}

  private agent(servername: string): Agent {
    let a = this.agents.get(servername);
    if (!a) this.agents.set(servername, (a = new Agent({ connect: { ca: this.ca, servername } })));
    return a;
  }

  async request<T = any>(
    base: string,
    servername: string,
    method: string,
    path: string,
    opts: { token?: string; json?: unknown; form?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<{ status: number; body: T }> {
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
    const res = await fetch(base + path, { method, headers, body, dispatcher: this.agent(servername), signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    return { status: res.status, body: parsed as T };
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.destroy()));
    this.agents.clear();
  }
}

/**
 * `node bin/intertalk.js serve` with TLS: waits until GET /healthz answers over verified HTTPS.
 * NODE_EXTRA_CA_CERTS is set to `caPath` so that the child trusts the CA for outbound federation.
 */
export async function startServeTls(env: Record<string, string>, opts: { port: number; servername: string; client: TlsClient; caPath: string }): Promise<Child> {
  const proc = spawn(process.execPath, [BIN, 'serve'], {
    env: { ...process.env, INTERTALK_LISTEN: `127.0.0.1:${opts.port}`, INTERTALK_LOG_LEVEL: 'warn', NODE_EXTRA_CA_CERTS: opts.caPath, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `https://127.0.0.1:${opts.port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await opts.client.request(url, opts.servername, 'GET', '/healthz', { timeoutMs: 2000 });
      if (r.status === 200) break;
    } catch {
      /* not up yet */
    }
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`server exited early: ${out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`server did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, url, output: () => out, exited };
}

/**
 * A TCP proxy 127.0.0.1:port → 127.0.0.1:target. Bytes from the client are forwarded after
 * `delayMs` (set it at any time); bytes from the target pass at once. When the client vanishes
 * (e.g. it was SIGKILLed), what it had already sent is still delivered to the target, then the
 * target side is ended: the target may thus accept a request whose response nobody reads.
 * `pause()` holds the client's bytes until `resume()`.
 */
export class DelayProxy {
  delayMs: number;
  readonly port: Promise<number>;
  private readonly server: Server;
  private readonly sockets = new Set<NetSocket>();
  private held: Array<() => void> | null = null;

  pause(): void {
    this.held ??= [];
  }

  resume(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const f of held) f();
  }

  constructor(target: number, delayMs: number) {
    this.delayMs = delayMs;
    this.server = createServer((client) => {
      const upstream = connect(target, '127.0.0.1');
      this.sockets.add(client);
      this.sockets.add(upstream);
      // Chunks keep their order: each is released no earlier than the previous one.
      let lastRelease = 0;
      const later = (fn: () => void) => {
        if (this.held) {
          this.held.push(() => later(fn));
          return;
        }
        const at = Math.max(Date.now() + this.delayMs, lastRelease);
        lastRelease = at;
        setTimeout(fn, at - Date.now());
      };
      client.on('data', (d) => later(() => upstream.destroyed || upstream.write(d)));
      client.on('close', () => later(() => upstream.end()));
      upstream.on('data', (d) => client.destroyed || client.write(d));
      upstream.on('close', () => client.destroy());
      client.on('error', () => undefined);
      upstream.on('error', () => client.destroy());
      client.once('close', () => this.sockets.delete(client));
      upstream.once('close', () => this.sockets.delete(upstream));
    });
    this.port = new Promise((resolve, reject) => {
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port));
      this.server.once('error', reject);
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A WebSocket over wss://127.0.0.1 that verifies `servername`; records every text frame. */
export class TlsSocket {
  readonly frames: string[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.frames.push(d.toString()));
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    ws.on('error', () => undefined);
  }

  static async open(url: string, servername: string, ca: string, first: string): Promise<TlsSocket> {
    // `servername` is passed through to tls.connect (ws's typings omit it).
    const ws = new WebSocket(url, { ca, servername } as WebSocket.ClientOptions);
    const s = new TlsSocket(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(first);
    return s;
  }

  json(): any[] {
    return this.frames.map((f) => JSON.parse(f));
  }

  close(): void {
    this.ws.close();
  }
}

/** Polls `fn` until it returns a truthy value; throws `what()` after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false | null | 0> | T | undefined | false | null | 0, timeoutMs: number, what: () => string | Promise<string>, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await fn();
    if (r) return r;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${await what()}`);
    await new Promise((res) => setTimeout(res, everyMs));
  }
}
