// The WAL scrub after a delete (storage/db.ts scrubSoon) on a real SQLite file: while another
// connection reads an older snapshot (a backup, the CLI, Litestream), the checkpoint cannot
// finish; it must then try again later rather than wait inside SQLite on the event loop. Once
// the reader is gone, the WAL is checkpointed and truncated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import SQLite from 'better-sqlite3';
import { openStorage } from '../src/storage/db.js';
import { tempDir } from './helpers/harness.js';
import { eventually } from './helpers/fed.js';

const peer = (domain: string) => ({ domain, failures: 0, backoff_until: 0, last_attempt_at: null, last_success_at: null, last_error: null, last_error_at: null, lease_owner: null, lease_until: null });

test('a reader on an old snapshot does not stall the event loop; the scrub finishes once it is gone', async () => {
  const dir = tempDir();
  const file = join(dir, 'intertalk.db');
  const storage = await openStorage(`sqlite:${file}`);
  const reader = new SQLite(file);
  try {
    await storage.db.insertInto('federation_peers').values(peer('before.test')).execute();
    reader.exec('BEGIN');
    reader.prepare('select count(*) from federation_peers').get(); // holds this snapshot
    await storage.db.insertInto('federation_peers').values(peer('after.test')).execute();

    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    storage.scrubSoon();
    await new Promise((r) => setTimeout(r, 1500)); // several attempts, all answered busy
    delay.disable();
    // SQLite's busy timeout is 5 s: an attempt that waited inside SQLite would show here. The
    // bound is generous on purpose: it only tells "never waited" from "waited 5 s".
    assert.ok(delay.max / 1e6 < 2500, `the event loop stalled for ${Math.round(delay.max / 1e6)} ms`);
    assert.ok(statSync(`${file}-wal`).size > 0, 'the WAL cannot be truncated while the reader holds its snapshot');

    reader.exec('COMMIT');
    await eventually('the WAL truncated', async () => statSync(`${file}-wal`).size === 0, 15_000);
    assert.equal((await storage.db.selectFrom('federation_peers').select('domain').execute()).length, 2);
  } finally {
    reader.close();
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
