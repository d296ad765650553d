// `node dist/bench/profile.js`: one provider (SQLite) under the local closed-loop load of
// bench/run.ts, run with --cpu-prof; prints the functions with the most self time.
// BENCH_SECONDS (default 5), BENCH_CONNECTIONS (default 32), BENCH_PROFILE_TOP (default 15).
// BENCH_PROFILE_PATH=ws: the load of the side-by-side phase instead (bench/peer.ts): BENCH_PEER_PAIRS
// (50) sender→receiver pairs, BENCH_PEER_INFLIGHT (20) `send` frames in flight each, closed loop.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool, fetch } from 'undici';
import WebSocket from 'ws';
import { freePort } from '../src/devnet/network.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DURATION_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const TOP = Number(process.env.BENCH_PROFILE_TOP ?? 15);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'intertalk-profile-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, join(ROOT, 'bin', 'intertalk.js'), 'serve'], {
    env: { ...process.env, INTERTALK_LOG_LEVEL: 'warn', INTERTALK_LISTEN: `127.0.0.1:${port}`, INTERTALK_DATABASE: `sqlite:${join(dir, 'p.db')}`, INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '100000000' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  for (let i = 0; ; i++) {
    try {
      await fetch(url + '/healthz');
      break;
    } catch {
      if (i > 400) throw new Error('provider did not come up');
      await sleep(50);
    }
  }
  const tok = async (u: string) => {
    await fetch(url + '/users', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: u, password: 'benchmark password' }) });
    const r = await fetch(url + '/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `grant_type=password&username=${u}&password=benchmark%20password` });
    return ((await r.json()) as { access_token: string }).access_token;
  };
  if (process.env.BENCH_PROFILE_PATH === 'ws') {
    await wsLoad(port, tok);
  } else {
    await httpLoad(url, port, await tok('alice'), await tok('bob'));
  }
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
  report(dir);
}

/** The side-by-side load: pairs of rich sockets, sends over the socket, closed loop end to end. */
async function wsLoad(port: number, tok: (u: string) => Promise<string>) {
  const PAIRS = Number(process.env.BENCH_PEER_PAIRS ?? 50);
  const INFLIGHT = Number(process.env.BENCH_PEER_INFLIGHT ?? 20);
  const open = async (token: string) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/messageStream`, { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    const ready = new Promise<void>((r) => ws.on('message', (d) => String(d).includes('"ready"') && r()));
    ws.send(JSON.stringify({ token }));
    await ready;
    return ws;
  };
  let received = 0;
  let acked = 0;
  let ref = 0;
  const end = Date.now() + DURATION_MS;
  const sockets: WebSocket[] = [];
  const loops: Array<Promise<void>> = [];
  for (let k = 0; k < PAIRS; k++) {
    const s = await open(await tok(`s${k}`));
    const r = await open(await tok(`r${k}`));
    sockets.push(s, r);
    const from = `s${k}@localhost`;
    const to = [from, `r${k}@localhost`];
    let inflight = 0;
    let finish: () => void = () => undefined;
    loops.push(new Promise<void>((res) => (finish = res)));
    const pump = () => {
      if (Date.now() >= end) return inflight === 0 && finish();
      while (inflight < INFLIGHT) {
        inflight++;
        s.send(`{"type":"send","ref":"${++ref}","message":${JSON.stringify({ from, to, message: `profile ${ref} a line of ordinary chat text` })}}`);
      }
    };
    s.on('message', (d) => String(d).startsWith('{"type":"ack"') && acked++);
    r.on('message', (d) => {
      if (!String(d).startsWith('{"type":"message"')) return;
      received++;
      inflight--;
      pump();
    });
    pump();
  }
  await Promise.race([Promise.all(loops), sleep(DURATION_MS + 10_000)]);
  console.log(`${Math.round((received * 1000) / DURATION_MS)} msgs/s delivered over the socket send path, ${acked} acked (profiled, so slower than npm run bench)`);
  for (const s of sockets) s.close();
}

async function httpLoad(url: string, port: number, ta: string, tb: string) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/messages`, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(tb);
  let received = 0;
  ws.on('message', () => received++);
  const pool = new Pool(url, { connections: CONNECTIONS });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${ta}` };
  let i = 0;
  let ok = 0;
  const end = Date.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (Date.now() < end) {
        const r = await pool.request({ method: 'POST', path: '/messages', headers, body: JSON.stringify({ from: 'alice@localhost', to: ['alice@localhost', 'bob@localhost'], message: `profile ${i++} — a line of ordinary chat text` }) });
        await r.body.dump();
        if (r.statusCode === 201) ok++;
      }
    }),
  );
  await sleep(500);
  console.log(`${Math.round((ok * 1000) / DURATION_MS)} msgs/s accepted, ${received} delivered (profiled, so slower than npm run bench)`);
  ws.close();
  await pool.close();
}

function report(dir: string) {
  // One profile per thread (the SQLite checkpointer is a worker thread): the main thread's is the largest.
  const file = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort((a, b) => statSync(join(dir, b)).size - statSync(join(dir, a)).size)[0];
  if (!file) throw new Error(`no .cpuprofile in ${dir}`);
  const prof = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  prof.samples.forEach((id, k) => {
    const dt = prof.timeDeltas[k + 1] ?? 0;
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^file:\/\//, '').replace(ROOT + '/', '')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  const idle = [...self].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, v]) => s + v, 0);
  console.log(`profile: ${join(dir, file)}; busy ${(((total - idle) / total) * 100).toFixed(0)}% of ${(total / 1e6).toFixed(1)} s`);
  console.log('| self % of busy | function | location |\n|---:|---|---|');
  for (const [k, v] of [...self].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
    const sp = k.indexOf(' ');
    console.log(`| ${((v / (total - idle)) * 100).toFixed(1)} | ${k.slice(0, sp)} | ${k.slice(sp + 1)} |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
