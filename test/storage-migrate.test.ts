// Several instances of the provider starting at once on one fresh database (a scaled-out
// deployment coming up): every one of them opens, and the schema is migrated exactly once.
// SQLite always (its migration lock does not span connections: openStorage retries); PostgreSQL
// with INTERTALK_TEST_DATABASE=postgres (Kysely's migrator holds an advisory lock there).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { migrations, openStorage, parseDatabaseUrl, type Storage } from '../src/storage/db.js';
import { startProvider, tempDir, user, type Started } from './helpers/harness.js';
import { createPostgresDatabase, dropDatabase, sqliteUrl, testBackend } from './helpers/database.js';

const INSTANCES = 3;

async function openedTogether(url: string): Promise<void> {
  const { dialect } = parseDatabaseUrl(url);
  const results = await Promise.allSettled(Array.from({ length: INSTANCES }, () => openStorage(url)));
  const opened = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  try {
    assert.deepEqual(
      results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error)?.message ?? r.reason)] : [])),
      [],
      'every instance opened the database',
    );
    const [first, ...others] = opened as [Storage, ...Storage[]];
    // Each migration is recorded once, in order.
    const applied = await first.db.selectFrom('kysely_migration' as any).select('name' as any).orderBy('name' as any).execute();
    assert.deepEqual(
      applied.map((r: any) => r.name),
      Object.keys(migrations(dialect)).sort(),
    );
    const tables = (await first.db.introspection.getTables()).map((t) => t.name);
    for (const t of ['users', 'messages', 'outbox', 'receipts', 'attachments', 'attachment_refs']) assert.ok(tables.includes(t), `table ${t} exists`);
    // One database: what one instance writes, the others read.
    await first.db.insertInto('users').values({ username: 'zoe', password_hash: 'x', created_at: 1, removed_at: null }).execute();
    for (const s of others) assert.equal((await s.db.selectFrom('users').select('username').execute()).length, 1);
    // And a later start finds nothing to do.
    const again = await openStorage(url);
    opened.push(again);
    assert.equal((await again.db.selectFrom('kysely_migration' as any).selectAll().execute()).length, applied.length);
  } finally {
    for (const s of opened) await s.close();
  }
}

describe('instances starting together on one fresh database', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test(`SQLite: ${INSTANCES} openStorage at once on a new file all succeed; the schema is migrated once`, async () => {
    const dir = tempDir();
    dirs.push(dir);
    await openedTogether(sqliteUrl(dir));
  });

  // Needs a PostgreSQL server: defined only in the PostgreSQL run (npm run test:postgres).
  if (testBackend === 'postgres') test(
    `PostgreSQL: ${INSTANCES} openStorage at once on a new database all succeed; the schema is migrated once`,
    async () => {
      const url = await createPostgresDatabase();
      try {
        await openedTogether(url);
      } finally {
        await dropDatabase(url);
      }
    },
  );

  test(`${INSTANCES} providers started at once on one new database (${testBackend}) serve the same accounts`, async () => {
    const dir = tempDir();
    dirs.push(dir);
    const url = testBackend === 'postgres' ? await createPostgresDatabase() : sqliteUrl(dir);
    const started: Started[] = [];
    try {
      const results = await Promise.allSettled(Array.from({ length: INSTANCES }, () => startProvider({ INTERTALK_DATABASE: url, INTERTALK_REGISTRATION_RATE: '1000' }, { dir })));
      for (const r of results) if (r.status === 'fulfilled') started.push(r.value);
      assert.deepEqual(results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : [])), []);
      const [a, b, c] = started as [Started, Started, Started];
      // One database behind all three: an account made through one instance works on the others,
      // and its name is taken everywhere.
      const alice = await user(a.url, 'alice');
      const me = await Promise.all([b, c].map((s) => fetch(`${s.url}/me`, { headers: { authorization: `Bearer ${alice.token}` } })));
      assert.deepEqual(me.map((r) => r.status), [200, 200]);
      const again = await fetch(`${c.url}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'another password' }) });
      assert.equal(again.status, 409);
    } finally {
      for (const s of started) await s.stop();
      await dropDatabase(url);
    }
  });
});
