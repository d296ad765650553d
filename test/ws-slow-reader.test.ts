// A WebSocket client that stops reading must not make the server buffer without bound: the hub
// stops writing to it past 8 MiB unsent (src/realtime/hub.ts) and drops it. Measured on a real
// `intertalk serve` process (its RSS from /proc), while 200 MB are sent to the stuck reader.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { startServe } from './helpers/process.js';
import { tempDir } from './helpers/harness.js';
import { databaseUrl, dropDatabase } from './helpers/database.js';

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

async function json(url: string, init: RequestInit): Promise<any> {
  const r = await fetch(url, init);
  const body = await r.json();
  if (r.status >= 300) throw new Error(`${url}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

test('a reader that stops reading is dropped after about 8 MiB; the server does not grow with what it is asked to send', { timeout: 240_000 }, async () => {
  const dir = tempDir();
  const database = await databaseUrl(dir);
  const server = await startServe({ INTERTALK_DATABASE: database, INTERTALK_SEND_RATE: '100000000', INTERTALK_LOG_LEVEL: 'warn' });
  try {
    const token: Record<string, string> = {};
    for (const name of ['alice', 'bob']) {
      await json(`${server.url}/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password: 'correct horse battery' }) });
      token[name] = (await json(`${server.url}/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'password', username: name, password: 'correct horse battery' }) })).access_token;
    }
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/messageStream`);
    ws.on('error', () => undefined);
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ token: token.bob }));
    await new Promise<void>((resolve) => ws.once('message', () => resolve())); // ready
    const pid = server.proc.pid!;
    const send = (text: string) =>
      fetch(`${server.url}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.alice}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to: ['alice@localhost', 'bob@localhost'], message: text }),
      }).then(async (r) => {
        await r.arrayBuffer();
        assert.equal(r.status, 201);
      });
    const MESSAGE = 100_000;
    // Warm up with the same load while Bob still reads (caches, JIT, statement cache, the heap's
    // working set for 100 kB messages), so that the baseline already holds what the load costs by
    // itself and what follows measures what the stuck reader costs.
    for (let i = 0; i < 300; i++) await send(randomBytes(MESSAGE * 0.75).toString('base64'));
    // Bob's client stops reading: first the kernel's buffers fill, then the server's.
    const sock = (ws as unknown as { _socket: import('node:net').Socket })._socket;
    sock.pause();
    const baseline = rssBytes(pid);
    let peak = baseline;
    const COUNT = 2000; // 200 MB for a reader that reads nothing
    for (let i = 0; i < COUNT; i++) {
      await send(randomBytes(MESSAGE * 0.75).toString('base64'));
      if (i % 20 === 0) peak = Math.max(peak, rssBytes(pid));
    }
    peak = Math.max(peak, rssBytes(pid));
    const grown = peak - baseline;
    // 8 MiB held for the stuck socket, plus the heap's slack (seen: up to 70 MiB on a loaded CI
    // machine); without the limit it would hold all 200 MB.
    assert.ok(grown < 112 * 1024 * 1024, `the server grew by ${(grown / 1048576).toFixed(1)} MiB while 200 MB were sent to a reader that read nothing`);

    // The socket is dropped (its close frame is queued behind data it never read, so the server
    // ends it after the close timeout). Reading again, the client learns it was closed.
    sock.resume();
    const code = await closed;
    assert.ok(code === 4005 || code === 1006, `closed with ${code}`);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  } finally {
    server.proc.kill('SIGTERM');
    await server.exited;
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase(database);
  }
});
