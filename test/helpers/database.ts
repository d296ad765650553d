// Which database the providers of the tests use. By default each gets an SQLite file in its temp
// directory. With INTERTALK_TEST_DATABASE=postgres (the server of this project's machines,
// postgres://postgres@127.0.0.1:5432/test) or INTERTALK_TEST_DATABASE=postgres://user@host:port[/admin-db],
// each gets a fresh PostgreSQL database `it_<random>` instead, created through the admin database
// (`test` unless the URL names another) and dropped when its provider stops for good, or at the
// latest when the test process ends. The same (dir, name) always maps to the same database, so a
// provider restarted on its directory finds its data again.
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';

export type TestBackend = 'sqlite' | 'postgres';

const DEFAULT_SERVER = 'postgres://postgres@127.0.0.1:5432/test';

/** The admin URL of the PostgreSQL server the tests use, or null for SQLite. */
function adminUrl(): string | null {
  const v = (process.env.INTERTALK_TEST_DATABASE ?? '').trim();
  if (v === '' || v === 'sqlite') return null;
  if (v === 'postgres' || v === 'postgresql' || v === 'pg') return DEFAULT_SERVER;
  if (v.startsWith('postgres://') || v.startsWith('postgresql://')) {
    const u = new URL(v);
    if (u.pathname === '' || u.pathname === '/') u.pathname = '/test';
    return u.href;
  }
  throw new Error(`INTERTALK_TEST_DATABASE: "${v}" is not sqlite, postgres or a postgres:// URL`);
}

const ADMIN = adminUrl();

export const testBackend: TestBackend = ADMIN ? 'postgres' : 'sqlite';

/** The admin URL (the `test` database of the server) new databases are created through, or null for SQLite. */
export const postgresAdminUrl: string | null = ADMIN;

/** An SQLite database in `dir`, whatever INTERTALK_TEST_DATABASE says (for tests that read the files). */
export function sqliteUrl(dir: string, name = 'intertalk.db'): string {
  return `sqlite:${join(dir, name)}`;
}

/** (dir, name) → database URL; the PostgreSQL databases this process created and not yet dropped. */
const byKey = new Map<string, Promise<string>>();
const live = new Set<string>();

async function admin(statement: string): Promise<void> {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: ADMIN!, connectionTimeoutMillis: 10_000 });
  try {
    await c.connect();
  } catch (err) {
    throw new Error(`INTERTALK_TEST_DATABASE: cannot reach PostgreSQL at ${redact(ADMIN!)}: ${(err as Error).message}`);
  }
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}

function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.href;
}

function nameOf(url: string): string {
  return new URL(url).pathname.slice(1);
}

/** A fresh PostgreSQL database of its own (INTERTALK_TEST_DATABASE must select PostgreSQL). */
export async function createPostgresDatabase(): Promise<string> {
  if (!ADMIN) throw new Error('createPostgresDatabase: INTERTALK_TEST_DATABASE does not select PostgreSQL');
  const name = `it_${randomBytes(8).toString('hex')}`;
  await admin(`CREATE DATABASE ${name}`);
  const u = new URL(ADMIN);
  u.pathname = `/${name}`;
  live.add(u.href);
  cleanupOnExit();
  return u.href;
}

/**
 * The database of the provider whose data lives in `dir` (`name` tells several apart): the
 * SQLite file dir/name, or the PostgreSQL database made for that path on first use.
 */
export async function databaseUrl(dir: string, name = 'intertalk.db'): Promise<string> {
  if (!ADMIN) return sqliteUrl(dir, name);
  const key = resolve(dir, name);
  let url = byKey.get(key);
  if (!url) {
    url = createPostgresDatabase();
    byKey.set(key, url);
    url.catch(() => byKey.delete(key));
  }
  return url;
}

/** Drops a database made by this helper (for SQLite URLs nothing: the caller removes its dir). */
export async function dropDatabase(url: string): Promise<void> {
  if (!live.delete(url)) return;
  for (const [k, v] of byKey) if ((await v.catch(() => null)) === url) byKey.delete(k);
  // FORCE: a pool that was not closed (a failed test) must not keep the database alive.
  await admin(`DROP DATABASE IF EXISTS ${nameOf(url)} WITH (FORCE)`);
}

let registered = false;
function cleanupOnExit(): void {
  if (registered) return;
  registered = true;
  // The event loop is empty once the tests of this file are done: drop what is left (databases of
  // providers restarted on a directory the test owns, or of a test that failed midway).
  process.on('beforeExit', () => {
    if (live.size === 0) return;
    const urls = [...live];
    void Promise.all(urls.map((u) => dropDatabase(u).catch((err) => process.stderr.write(`# could not drop ${nameOf(u)}: ${(err as Error).message}\n`))));
  });
}
