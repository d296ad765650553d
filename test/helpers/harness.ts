// Test harness: real providers on real sockets with real databases: SQLite files in a temp
// directory, or PostgreSQL databases with INTERTALK_TEST_DATABASE=postgres (helpers/database.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config/config.js';
import { Provider, type ProviderOptions } from '../../src/provider.js';
import { databaseUrl, dropDatabase } from './database.js';

export interface Started {
  provider: Provider;
  url: string;
  wsUrl: string;
  dir: string;
  stop(): Promise<void>;
}

export function tempDir(prefix = 'intertalk-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A provider on 127.0.0.1 with its data in `opts.dir` (a new temp dir unless given: pass the same
 * dir again to restart it on the same database). `env.INTERTALK_DATABASE` overrides the database.
 */
export async function startProvider(env: Record<string, string> = {}, opts: ProviderOptions & { dir?: string } = {}): Promise<Started> {
  const dir = opts.dir ?? tempDir();
  const database = env.INTERTALK_DATABASE ?? (await databaseUrl(dir));
  const config = loadConfig({
    INTERTALK_DATABASE: database,
    INTERTALK_LISTEN: '127.0.0.1:0',
    INTERTALK_LOG_LEVEL: 'silent',
    ...env,
  });
  const provider = await Provider.create(config, opts);
  const url = await provider.start();
  return {
    provider,
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    dir,
    async stop() {
      await provider.destroy();
      if (!opts.dir) {
        rmSync(dir, { recursive: true, force: true });
        await dropDatabase(database);
      }
    },
  };
}

export interface Res<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function http<T = any>(base: string, method: string, path: string, opts: { token?: string; json?: unknown; form?: Record<string, string>; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Res<T>> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  let body: string | Buffer | undefined = opts.body;
  if (opts.json !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = JSON.stringify(opts.json);
  }
  if (opts.form) {
    headers['content-type'] ??= 'application/x-www-form-urlencoded';
    body = new URLSearchParams(opts.form).toString();
  }
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export async function register(base: string, username: string, password = 'correct horse battery'): Promise<void> {
  const r = await http(base, 'POST', '/users', { json: { username, password } });
  if (r.status !== 201) throw new Error(`register ${username}: ${r.status} ${JSON.stringify(r.body)}`);
}

export async function login(base: string, username: string, password = 'correct horse battery'): Promise<{ access_token: string; refresh_token: string; address: string }> {
  const r = await http(base, 'POST', '/token', { form: { grant_type: 'password', username, password } });
  if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function user(base: string, username: string): Promise<{ token: string; address: string; refresh: string }> {
  await register(base, username);
  const t = await login(base, username);
  return { token: t.access_token, address: t.address, refresh: t.refresh_token };
}

export async function send(base: string, token: string, to: string[], message: string, extra: Record<string, unknown> = {}): Promise<Res> {
  return http(base, 'POST', '/messages', { token, json: { to, message, ...extra } });
}

/** A WebSocket client that records every text frame and can wait for one. */
export class Socket {
  readonly frames: string[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      this.frames.push(d.toString());
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static async open(wsUrl: string, path = '/messages', first?: string): Promise<Socket> {
    const ws = new WebSocket(wsUrl + path);
    const s = new Socket(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    if (first !== undefined) ws.send(first);
    return s;
  }

  json(): any[] {
    return this.frames.map((f) => JSON.parse(f));
  }

  /** Waits until `pred` holds for the frames seen so far. */
  async until<T>(pred: (frames: any[]) => T | undefined | false, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = pred(this.json());
      if (r) return r;
      if (Date.now() > deadline) throw new Error(`timed out waiting; frames: ${this.frames.slice(-5).join(' | ')}; closed: ${JSON.stringify(this.closed)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitClose(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    await this.until(() => this.closed !== null, timeoutMs);
    return this.closed!;
  }

  close(): void {
    this.ws.close();
  }
}
