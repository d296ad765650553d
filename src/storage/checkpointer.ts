// A worker thread that checkpoints the SQLite WAL into the database file (storage/db.ts).
// SQLite's automatic checkpoint runs inside whichever commit crosses the WAL size threshold, on
// the event loop, and ends with an fsync: a multi-millisecond stall every few thousand messages
// (the local p99 in docs/performance.md). Here the checkpoint runs on its own connection in its
// own thread; PASSIVE never blocks the writer or readers, it copies what it can.
import { parentPort, workerData } from 'node:worker_threads';
import SQLite from 'better-sqlite3';

const { path, intervalMs } = workerData as { path: string; intervalMs: number };
const conn = new SQLite(path);
conn.pragma('busy_timeout = 1000');

const timer = setInterval(() => {
  try {
    conn.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // busy or closing: the next round does it
  }
}, intervalMs);

parentPort?.on('message', (m: unknown) => {
  if (m !== 'close') return;
  clearInterval(timer);
  try {
    conn.pragma('wal_checkpoint(PASSIVE)');
    conn.close();
  } finally {
    parentPort?.postMessage('closed');
    parentPort?.close();
  }
});
