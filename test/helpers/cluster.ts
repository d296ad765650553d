// Helpers for multi-instance tests (test/multi-instance.test.ts): a throw-away PostgreSQL
// database, reachability checks that fail loudly, and TCP proxies on 127.0.0.1 — a round-robin
// balancer over instances that skips dead ones, a proxy that can cut Redis off (an outage or a
// restart as the instances see it), and a proxy that delays an instance's outbound deliveries and
// tells when one is in flight (so that a SIGKILL lands mid-delivery).
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket as NetSocket } from 'node:net';
import pg from 'pg';
import { Redis } from 'ioredis';

/**
 * The PostgreSQL server the multi-instance test uses, from INTERTALK_TEST_DATABASE (the switch
 * that runs the suite on PostgreSQL; read like test/helpers/database.ts does): `postgres` (also
 * `postgresql`, `pg`) for postgres://postgres@127.0.0.1:5432/test, or a postgres:// URL whose
 * database (default `test`) new databases are created from. Null: not selected (SQLite).
 */
export function postgresAdminUrl(): string | null {
  const v = (process.env.INTERTALK_TEST_DATABASE ?? '').trim();
  if (v === '' || v === 'sqlite') return null;
  if (v === 'postgres' || v === 'postgresql' || v === 'pg') return 'postgres://postgres@127.0.0.1:5432/test';
  if (v.startsWith('postgres://') || v.startsWith('postgresql://')) {
    const u = new URL(v);
    if (u.pathname === '' || u.pathname === '/') u.pathname = '/test';
    return u.href;
  }
  throw new Error(`INTERTALK_TEST_DATABASE: "${v}" is not sqlite, postgres or a postgres:// URL`);
}

export function redisTestUrl(): string {
  return process.env.INTERTALK_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
}

export function randomName(n = 8): string {
  return randomBytes(n).toString('hex').slice(0, n);
}

/** Throws (never skips) when PostgreSQL does not answer. */
export async function assertPostgres(adminUrl: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('select 1');
  } catch (err) {
    throw new Error(`PostgreSQL is unreachable at ${adminUrl} (INTERTALK_TEST_DATABASE=postgres needs it): ${(err as Error).message}`);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Throws (never skips) when Redis does not answer PING. */
export async function assertRedis(url: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => undefined);
  try {
    await r.connect();
    const pong = await r.ping();
    if (pong !== 'PONG') throw new Error(`PING answered ${pong}`);
  } catch (err) {
    throw new Error(`Redis is unreachable at ${url} (INTERTALK_TEST_DATABASE=postgres runs the multi-instance test, which needs it): ${(err as Error).message}`);
  } finally {
    r.disconnect();
  }
}

/** CREATE DATABASE it_multi_<random>; returns its URL and a dropper. */
export async function createDatabase(adminUrl: string, prefix = 'it_multi_'): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `${prefix}${randomName(10)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** One query on a database, with its own connection. */
export async function query<T extends Record<string, unknown> = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.end();
  }
}

/**
 * A TCP proxy on 127.0.0.1. `targets()` lists the ports to forward to; each new connection goes
 * to the next one round-robin, and to the one after when a target refuses (a dead instance).
 * `delayMs` holds the client's bytes that long before forwarding (in order); the target's bytes
 * pass at once. `outage(true)` cuts every connection and refuses new ones until `outage(false)`.
 * `inFlight` is true while a request has gone out and its answer has not started to come back.
 */
export class TcpProxy {
  delayMs = 0;
  readonly port: Promise<number>;
  /** Time of the last client bytes forwarded / of the last target bytes seen. */
  lastRequestAt = 0;
  lastResponseAt = 0;
  connections = 0;
  private readonly server: Server;
  private readonly sockets = new Set<NetSocket>();
  private next = 0;
  private down = false;

  constructor(private readonly targets: () => number[]) {
    this.server = createServer((client) => this.accept(client));
    this.port = new Promise((resolve, reject) => {
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port));
      this.server.once('error', reject);
    });
  }

  get inFlight(): boolean {
    return this.lastRequestAt > this.lastResponseAt;
  }

  outage(on: boolean): void {
    this.down = on;
    if (on) for (const s of this.sockets) s.destroy();
  }

  private accept(client: NetSocket): void {
    if (this.down) {
      client.destroy();
      return;
    }
    this.connections++;
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.on('error', () => undefined);
    client.pause();
    const list = this.targets();
    const tryTarget = (attempt: number): void => {
      if (attempt >= list.length || client.destroyed) {
        client.destroy();
        return;
      }
      const port = list[this.next++ % list.length]!;
      const upstream = connect(port, '127.0.0.1');
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        this.pipe(client, upstream);
      });
      upstream.once('error', () => {
        if (!connected) tryTarget(attempt + 1);
        else client.destroy();
      });
    };
    tryTarget(0);
  }

  private pipe(client: NetSocket, upstream: NetSocket): void {
    this.sockets.add(upstream);
    upstream.once('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    let lastRelease = 0;
    const later = (fn: () => void) => {
      if (this.delayMs <= 0 && lastRelease <= Date.now()) return fn();
      const at = Math.max(Date.now() + this.delayMs, lastRelease);
      lastRelease = at;
      setTimeout(fn, at - Date.now());
    };
    client.on('data', (d) => {
      this.lastRequestAt = Date.now();
      later(() => upstream.destroyed || upstream.write(d));
    });
    // A client that vanished (SIGKILL) still has what it sent delivered, then the target's side
    // is ended: the target may accept a request whose answer nobody reads.
    client.on('close', () => later(() => upstream.end()));
    upstream.on('data', (d) => {
      this.lastResponseAt = Date.now();
      if (!client.destroyed) client.write(d);
    });
    client.resume();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Runs `fn` over `items` with at most `n` at a time; results in item order. */
export async function pool<T, R>(items: T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) {
        const k = i++;
        out[k] = await fn(items[k]!, k);
      }
    }),
  );
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
