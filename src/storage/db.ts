import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, type Migration, type MigrationProvider } from 'kysely';
import type { Database } from './schema.js';
import { initial } from './migrations/001_initial.js';
import { rich } from './migrations/002_rich.js';
import { push } from './migrations/004_push.js';
import { rooms } from './migrations/003_rooms.js';
import { roomsFederation } from './migrations/005_rooms_federation.js';
import { personalDomains } from './migrations/006_personal_domains.js';
import { callbackFlow } from './migrations/007_callback_flow.js';
import { email } from './migrations/008_email.js';

export type Dialect = 'sqlite' | 'postgres';
export type Db = Kysely<Database>;

export interface Storage {
  db: Db;
  dialect: Dialect;
  /**
   * Content was deleted: make sure no copy lingers in the files (SQLite's write-ahead log keeps
   * old page images until a checkpoint). Debounced, best effort.
   */
  scrubSoon(): void;
  close(): Promise<void>;
}

/**
 * Free text (not JSON) for a text column. PostgreSQL's text type cannot hold U+0000 (the insert
 * fails), SQLite's can: it is stored as U+FFFD on every engine, so both keep the same value.
 * JSON columns need nothing: JSON.stringify writes U+0000 as the escape \u0000.
 */
export function storableText(s: string): string {
  return s.includes('\u0000') ? s.replaceAll('\u0000', '\uFFFD') : s;
}

/** How long a statement waits for a lock held by another connection (the CLI, another process). */
const BUSY_TIMEOUT_MS = 5000;
/** Attempts of the checkpoint that scrubs the WAL after a delete (about 2 minutes in all). */
const SCRUB_TRIES = 120;

/**
 * How often the checkpointer thread copies the WAL into the database file. Often, so that the
 * commit that reaches wal_autocheckpoint finds almost nothing left to copy: at 200 ms that commit
 * stalled the event loop 6–8 ms every ~0.6 s at 1 000 msgs/s (the local p99); at 10 ms the local
 * p99 fell from 5–8 to 2.5–3 ms at 1 000 msgs/s and from 15–23 to 6–8 ms at 5 000
 * (docs/performance.md). A round with nothing new to copy does no I/O.
 */
const CHECKPOINT_INTERVAL_MS = 10;

/** Parses INTERTALK_DATABASE: `sqlite:PATH`, `sqlite::memory:` or `postgres://…`. */
export function parseDatabaseUrl(url: string): { dialect: Dialect; target: string } {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return { dialect: 'postgres', target: url };
  if (url.startsWith('sqlite:')) {
    const target = url.slice('sqlite:'.length);
    if (!target) throw new Error('INTERTALK_DATABASE: sqlite: needs a file path, e.g. sqlite:./data/intertalk.db');
    return { dialect: 'sqlite', target };
  }
  throw new Error(`INTERTALK_DATABASE: unsupported URL "${url}" (use sqlite:PATH or postgres://…)`);
}

export async function openStorage(url: string): Promise<Storage> {
  const { dialect, target } = parseDatabaseUrl(url);
  let db: Db;
  let sqliteConn: import('better-sqlite3').Database | null = null;
  let checkpointer: Worker | null = null;
  if (dialect === 'sqlite') {
    const { default: SQLite } = await import('better-sqlite3');
    if (target !== ':memory:') mkdirSync(dirname(resolve(target)), { recursive: true });
    const conn = new SQLite(target);
    sqliteConn = conn;
    // WAL + NORMAL sync: durable across process crashes (kill -9), one fsync per checkpoint.
    conn.pragma('journal_mode = WAL');
    conn.pragma('synchronous = NORMAL');
    conn.pragma('foreign_keys = ON');
    conn.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // Deleted message text is overwritten, not just unlinked (see scrubSoon for the WAL).
    conn.pragma('secure_delete = ON');
    // The WAL is checkpointed by a worker thread (checkpointer.ts) every 10 ms, mostly not inside
    // our commits. A PASSIVE checkpoint that runs while we write cannot let the WAL restart, so
    // the commit that finds 16 000 pages (64 MB) in it still checkpoints itself: by then the
    // worker has copied nearly all of them, and the WAL stays bounded. That commit's syncs are
    // a stall of a few ms; at 16 000 pages rather than 4 000 it comes a quarter as often (local
    // p99 @5 000/s 7–8 → ~4 ms, docs/performance.md), for up to 64 MB of -wal file on disk.
    if (target !== ':memory:') {
      conn.pragma('wal_autocheckpoint = 16000');
      checkpointer = new Worker(new URL('./checkpointer.js', import.meta.url), { workerData: { path: resolve(target), intervalMs: CHECKPOINT_INTERVAL_MS } });
      checkpointer.unref();
    }
    // Kysely prepares every query anew; better-sqlite3 statements are reusable, so keep them
    // by SQL text (the hot path runs a handful of distinct statements).
    const statements = new Map<string, ReturnType<typeof conn.prepare>>();
    const cached = Object.create(conn) as typeof conn;
    cached.prepare = ((sqlText: string) => {
      let st = statements.get(sqlText);
      if (!st) {
        if (statements.size >= 1000) statements.clear();
        st = conn.prepare(sqlText);
        statements.set(sqlText, st);
      }
      return st;
    }) as typeof conn.prepare;
    cached.close = () => conn.close();
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: cached }) });
  } else {
    const pg = await import('pg');
    // BIGINT (int8) columns hold millisecond timestamps and sequence numbers, all < 2^53.
    pg.default.types.setTypeParser(20, (v: string) => Number(v));
    const pool = new pg.default.Pool({ connectionString: target, max: 10 });
    // An idle connection that the server ends (restart, failover, pg_terminate_backend) is
    // reported as an 'error' event on the pool, which would crash the process without a listener.
    // The pool has already discarded that client and opens a new one for the next query.
    pool.on('error', () => undefined);
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  }
  // Kysely's migration lock does not span separate SQLite connections: two processes starting on
  // a fresh file can race; the loser retries and then finds the schema in place.
  for (let attempt = 0; ; attempt++) {
    try {
      await migrate(db, dialect);
      break;
    } catch (err) {
      if (dialect !== 'sqlite' || attempt >= 5 || !/already exists|locked|busy/i.test(String((err as Error).message))) throw err;
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 200));
    }
  }
  let timer: NodeJS.Timeout | null = null;
  // After a delete, the WAL still holds the old page images: checkpoint it completely and
  // truncate it. That needs a moment with no transaction open here, no checkpoint running in
  // the checkpointer thread and no reader elsewhere (a backup, the CLI, Litestream) on an older
  // snapshot; while any is the case SQLite answers busy, so try again later — without waiting
  // inside SQLite (busy_timeout 0 for this call), which would stall the event loop for the whole
  // busy timeout, each time. Gives up after SCRUB_TRIES; the next delete tries again.
  const attempt = (tries: number) => {
    if (!sqliteConn || timer) return;
    const conn = sqliteConn;
    timer = setTimeout(() => {
      timer = null;
      let done = false;
      try {
        conn.pragma('busy_timeout = 0');
        try {
          const [r] = conn.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>;
          done = r?.busy === 0;
        } finally {
          conn.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
        }
      } catch {
        // busy (a transaction is open), or the connection closed meanwhile
        if (!conn.open) return;
      }
      if (!done && tries < SCRUB_TRIES) attempt(tries + 1);
    }, tries === 0 ? 200 : Math.min(1000, 50 * 2 ** Math.min(tries, 5)));
    timer.unref();
  };
  const scrubSoon = () => attempt(0);
  return {
    db,
    dialect,
    scrubSoon,
    close: async () => {
      if (timer) clearTimeout(timer);
      if (checkpointer) {
        const w = checkpointer;
        await new Promise<void>((done) => {
          w.once('message', () => done());
          w.once('exit', () => done());
          w.once('error', () => done());
          w.postMessage('close');
        });
        await w.terminate();
      }
      await db.destroy();
    },
  };
}

export function migrations(dialect: Dialect): Record<string, Migration> {
  return { '001_initial': initial(dialect), '002_rich': rich(dialect), '003_rooms': rooms(dialect), '004_push': push(dialect), '005_rooms_federation': roomsFederation(dialect), '006_personal_domains': personalDomains(dialect), '007_callback_flow': callbackFlow(dialect), '008_email': email(dialect) };
}

/** Applies pending migrations; Kysely's migrator takes a lock, so instances may start together. */
export async function migrate(db: Db, dialect: Dialect): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations(dialect) };
  // Unordered: migrations of features merged in another order (001, 002, 004, then 003) still apply.
  const migrator = new Migrator({ db, provider, allowUnorderedMigrations: true });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`);
  }
}
