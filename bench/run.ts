// `npm run bench`: real servers in child processes on loopback, a load generator in this process.
// Every figure is measured in the same run; results go to bench/results/ as JSON and Markdown
// (latest.* and a dated copy).
//   - baseline: bare node:http answering 201 to the same POST body (the ceiling on this machine)
//   - local: POST /messages → persisted → delivered to a WebSocket recipient, messages/s
//   - federated: user on provider A → user on provider B over HTTPS with signed JWTs, messages/s
//   - latency: send-to-receive p50/p99/max at fixed offered rates, local and federated
//   - connections: idle authenticated WebSockets held by one instance, RSS per connection
//   - PostgreSQL + Redis, two instances per provider: the same local and federated figures, and
//     a check that no message was lost or duplicated
// Environment: BENCH_SECONDS (per throughput phase, default 5), BENCH_CONNECTIONS (closed-loop
// HTTP connections, default 32), BENCH_CONNECTIONS_TOTAL (idle WebSockets, default 20000),
// BENCH_POSTGRES (admin URL, default postgres://postgres@127.0.0.1:5432/test; "off" skips),
// BENCH_REDIS (default redis://127.0.0.1:6379), BENCH_RATES (default 1000,5000),
// BENCH_LATENCY_SECONDS (each side-by-side latency run, default min(BENCH_SECONDS, 3)), BENCH_SERVER_FLAGS
// (Node flags for every server, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p" or "--trace-gc").
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Agent, Pool, fetch } from 'undici';
import WebSocket from 'ws';
import { makeCa, type TestCa } from '../src/devnet/ca.js';
import { freePort } from '../src/devnet/network.js';
import { sideBySide, ours, ejabberd, type SideRow } from './peer.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'intertalk.js');
const DURATION_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const LATENCY_MS = Math.min(DURATION_MS, 3000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const WS_TOTAL = Number(process.env.BENCH_CONNECTIONS_TOTAL ?? 20000);
const PG_ADMIN = process.env.BENCH_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = process.env.BENCH_REDIS ?? 'redis://127.0.0.1:6379';
const RATES = (process.env.BENCH_RATES ?? '1000,5000').split(',').map(Number).filter((n) => n > 0);
const NO_LIMITS = { INTERTALK_WS_PENDING_PER_CLIENT: '1000000', INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '100000000', INTERTALK_FEDERATION_RATE: '100000000' };
/** BENCH_ONLY=local,federated,connections,cluster runs only those phases (the baseline always runs). */
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : null;
const phase = (name: 'local' | 'federated' | 'connections' | 'cluster' | 'peer') => (name === 'peer' ? PEER !== null && (ONLY === null || ONLY.has(name)) : ONLY === null || ONLY.has(name));
/** `npm run bench -- --peer ejabberd` or BENCH_PEER=ejabberd: the same load on ejabberd, side by side (bench/peer.ts). */
const PEER = ((): 'ejabberd' | null => {
  const i = process.argv.indexOf('--peer');
  const v = i >= 0 ? process.argv[i + 1] : process.env.BENCH_PEER;
  if (!v || v === 'off') return null;
  if (v !== 'ejabberd') throw new Error(`unknown benchmark peer ${v} (known: ejabberd)`);
  return v;
})();

interface Row {
  name: string;
  msgsPerSec?: number;
  /** Ratio to the baseline, percent. */
  vsBaseline?: number;
  /** Federated rows: ratio to the local figure of the same backend, percent. */
  vsLocal?: number;
  p50?: number;
  p99?: number;
  max?: number;
  lost?: number;
  duplicated?: number;
  connections?: number;
  kibPerConnection?: number;
  notes?: string;
}

const children: ChildProcess[] = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(`# ${s}\n`);

async function waitUp(url: string, ca?: string, servername?: string): Promise<void> {
  const dispatcher = ca ? new Agent({ connect: { ca, servername } }) : undefined;
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(url + '/healthz', dispatcher ? { dispatcher } : {});
      await r.body?.cancel();
      if (r.status < 500) return;
    } catch {
      /* not yet */
    }
    await sleep(50);
  }
  throw new Error(`${url} did not come up`);
}

function startChild(args: string[], env: Record<string, string>, nofile?: number): ChildProcess {
  const fullEnv = { ...process.env, INTERTALK_LOG_LEVEL: 'warn', ...env };
  // BENCH_SERVER_FLAGS: Node flags for every server (e.g. --cpu-prof --cpu-prof-dir=/tmp/p, --trace-gc).
  const flags = process.env.BENCH_SERVER_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  args = [...flags, ...args];
  // prlimit execs the command, so the child's pid is the server's pid (for /proc/<pid>/status).
  const c = nofile ? spawn('prlimit', [`--nofile=${nofile}:${nofile}`, process.execPath, ...args], { env: fullEnv, stdio: ['ignore', 'inherit', 'inherit'] }) : spawn(process.execPath, args, { env: fullEnv, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(c);
  return c;
}

async function stopChild(c: ChildProcess, graceMs = 10_000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const bodyOf = (from: string, to: string, text: string) => JSON.stringify({ from, to: [from, to], message: text });

/**
 * Closed loop: CONNECTIONS requests in flight for durationMs, spread over `pools` (several
 * instances). Returns completed requests/s and the texts of the accepted (201) messages.
 */
async function closedLoop(pools: Pool[], headers: Record<string, string>, text: (i: number) => string, body: (text: string) => string, durationMs: number) {
  let i = 0;
  let errors = 0;
  const statuses = new Map<string, number>();
  const fail = (why: string) => (errors++, statuses.set(why, (statuses.get(why) ?? 0) + 1));
  const accepted: string[] = [];
  const end = Date.now() + durationMs;
  const start = Date.now();
  const worker = async (k: number) => {
    const pool = pools[k % pools.length]!;
    while (Date.now() < end) {
      const t = text(i++);
      try {
        const r = await pool.request({ method: 'POST', path: '/messages', headers, body: body(t) });
        await r.body.dump();
        if (r.statusCode === 201) accepted.push(t);
        else fail(String(r.statusCode));
      } catch (err) {
        fail((err as { code?: string }).code ?? 'error');
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, k) => worker(k)));
  return { rate: (accepted.length * 1000) / (Date.now() - start), errors, sent: i, accepted, why: [...statuses].map(([k, v]) => `${v}×${k}`).join(' ') };
}

async function token(base: string, dispatcher: Agent | undefined, username: string): Promise<string> {
  const opts = dispatcher ? { dispatcher } : {};
  const u = await fetch(base + '/users', { ...opts, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'benchmark password' }) });
  await u.body?.cancel();
  const r = await fetch(base + '/token', { ...opts, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `grant_type=password&username=${username}&password=benchmark%20password` });
  if (r.status !== 200) throw new Error(`token for ${username} at ${base}: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { access_token: string }).access_token;
}

interface Receiver {
  ws: WebSocket;
  count: () => number;
  /** Message text → how many times it arrived. */
  seen: Map<string, number>;
  onMessage: (fn: ((text: string) => void) | null) => void;
}

async function receiver(wsUrl: string, tok: string, ca?: string, servername?: string): Promise<Receiver> {
  const ws = new WebSocket(wsUrl + '/messages', { perMessageDeflate: false, ...(ca ? { ca, servername } : {}) });
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  let n = 0;
  const seen = new Map<string, number>();
  let fn: ((text: string) => void) | null = null;
  ws.on('message', (d) => {
    n++;
    const text = (JSON.parse(d.toString()) as { message: string }).message;
    seen.set(text, (seen.get(text) ?? 0) + 1);
    if (fn) fn(text);
  });
  ws.send(tok);
  await sleep(100);
  return { ws, count: () => n, seen, onMessage: (f) => (fn = f) };
}

/** Waits until every accepted text arrived (or the deadline), then counts lost and duplicated. */
async function settle(rx: Receiver, accepted: string[], timeoutMs: number): Promise<{ lost: number; duplicated: number; doneAt: number }> {
  const deadline = Date.now() + timeoutMs;
  const missing = () => accepted.reduce((n, t) => n + (rx.seen.has(t) ? 0 : 1), 0);
  let doneAt = Date.now();
  let m = missing();
  while (m > 0 && Date.now() < deadline) {
    await sleep(20);
    m = missing();
    doneAt = Date.now();
  }
  // A duplicate may trail the last first copy: give it a moment.
  await sleep(200);
  const duplicated = accepted.reduce((n, t) => n + Math.max(0, (rx.seen.get(t) ?? 0) - 1), 0);
  return { lost: missing(), duplicated, doneAt };
}

/** Open loop at a fixed rate: each message's send time is kept; latency measured on receipt. */
async function latency(pools: Pool[], headers: Record<string, string>, from: string, to: string, rx: Receiver, rate: number, durationMs: number, tag: string) {
  const sentAt = new Map<string, number>();
  const samples: number[] = [];
  rx.onMessage((text) => {
    const t = sentAt.get(text);
    if (t !== undefined) {
      samples.push(performance.now() - t);
      sentAt.delete(text);
    }
  });
  const total = Math.floor((rate * durationMs) / 1000);
  const start = performance.now();
  const inflight: Promise<unknown>[] = [];
  const accepted: string[] = [];
  let errors = 0;
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const text = `lat ${tag} ${rate} ${i}`;
    sentAt.set(text, performance.now());
    inflight.push(
      pools[i % pools.length]!.request({ method: 'POST', path: '/messages', headers, body: bodyOf(from, to, text) }).then(
        (r) => {
          if (r.statusCode === 201) accepted.push(text);
          else errors++;
          return r.body.dump();
        },
        () => errors++,
      ),
    );
  }
  const offered = (total * 1000) / (performance.now() - start);
  await Promise.all(inflight);
  const s = await settle(rx, accepted, 15_000);
  rx.onMessage(null);
  samples.sort((a, b) => a - b);
  const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), max: samples[samples.length - 1] ?? NaN, received: samples.length, total, offered, errors, lost: s.lost, duplicated: s.duplicated };
}

const pct = (a: number, b: number) => Math.round((a / b) * 100);

/** Sender sockets and commands in flight on each, for the WebSocket send path (≤ the server's 32). */
const WS_SENDERS = Number(process.env.BENCH_WS_SENDERS ?? 8);
const WS_INFLIGHT = Number(process.env.BENCH_WS_INFLIGHT ?? 32);

/**
 * Closed loop over the WebSocket send path (docs/api.md, "Sending over the socket"): WS_SENDERS
 * rich sockets of the sender, each keeping WS_INFLIGHT `send` frames unacknowledged.
 */
async function wsClosedLoop(wsUrl: string, tok: string, from: string, to: string, text: (i: number) => string, durationMs: number, ca?: string, servername?: string) {
  let i = 0;
  let errors = 0;
  const accepted: string[] = [];
  const end = Date.now() + durationMs;
  const start = Date.now();
  const one = async () => {
    const ws = new WebSocket(wsUrl + '/messageStream', { perMessageDeflate: false, ...(ca ? { ca, servername } : {}) });
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    ws.send(JSON.stringify({ token: tok }));
    const texts = new Map<string, string>();
    let inflight = 0;
    let finished: () => void;
    const done = new Promise<void>((r) => (finished = r));
    const next = () => {
      while (inflight < WS_INFLIGHT && Date.now() < end) {
        const t = text(i++);
        const ref = String(i);
        texts.set(ref, t);
        inflight++;
        ws.send(`{"type":"send","ref":"${ref}","message":${bodyOf(from, to, t)}}`);
      }
      if (inflight === 0) finished();
    };
    ws.on('message', (d) => {
      const s = String(d);
      if (s.startsWith('{"type":"ready"')) return next();
      if (!s.startsWith('{"type":"ack"')) return;
      const a = JSON.parse(s) as { ref: string; status: number };
      inflight--;
      if (a.status === 201) accepted.push(texts.get(a.ref)!);
      else errors++;
      texts.delete(a.ref);
      next();
    });
    await done;
    ws.close();
  };
  await Promise.all(Array.from({ length: WS_SENDERS }, one));
  return { rate: (accepted.length * 1000) / (Date.now() - start), errors, accepted };
}

/** Throughput over the WebSocket send path, delivered to `rx` (checked for loss and duplicates). */
async function wsSuite(rows: Row[], label: string, wsUrl: string, tok: string, from: string, to: string, rx: Receiver, baseRate: number, localRate: number | null, ca?: string, servername?: string): Promise<number> {
  log(`${label}: throughput`);
  const tag = randomBytes(3).toString('hex');
  const start = Date.now();
  const r = await wsClosedLoop(wsUrl, tok, from, to, (i) => `ws benchmark message ${tag} ${i} — a line of ordinary chat text`, DURATION_MS, ca, servername);
  const s = await settle(rx, r.accepted, 60_000);
  const rate = localRate === null ? r.rate : ((r.accepted.length - s.lost) * 1000) / (s.doneAt - start);
  rows.push({
    name: `${label}: throughput`,
    msgsPerSec: Math.round(rate),
    vsBaseline: pct(rate, baseRate),
    ...(localRate !== null ? { vsLocal: pct(rate, localRate) } : {}),
    lost: s.lost,
    duplicated: s.duplicated,
    notes: `${r.accepted.length} accepted, ${r.errors} errors; ${WS_SENDERS} sockets × ${WS_INFLIGHT} in flight${localRate !== null ? `; accepted at ${Math.round(r.rate)}/s` : ''}`,
  });
  return rate;
}

/** Throughput then latency at each rate: one sending user → one receiving WebSocket. */
async function suite(rows: Row[], label: string, pools: Pool[], hdr: Record<string, string>, from: string, to: string, rx: Receiver, baseRate: number, localRate: number | null): Promise<number> {
  log(`${label}: throughput`);
  const tag = randomBytes(3).toString('hex');
  const start = Date.now();
  const r = await closedLoop(pools, hdr, (i) => `benchmark message ${tag} ${i} — a line of ordinary chat text`, (t) => bodyOf(from, to, t), DURATION_MS);
  const s = await settle(rx, r.accepted, 60_000);
  // Local: accepted/s (delivery keeps up, checked by `lost`). Federated: delivered end to end per
  // second, from the first send to the last arrival, since the outbox may lag behind the accepts.
  const rate = localRate === null ? r.rate : ((r.accepted.length - s.lost) * 1000) / (s.doneAt - start);
  rows.push({
    name: `${label}: throughput`,
    msgsPerSec: Math.round(rate),
    vsBaseline: pct(rate, baseRate),
    ...(localRate !== null ? { vsLocal: pct(rate, localRate) } : {}),
    lost: s.lost,
    duplicated: s.duplicated,
    notes: `${r.accepted.length} accepted, ${r.errors} errors${r.why ? ` (${r.why})` : ''}${localRate !== null ? `; accepted at ${Math.round(r.rate)}/s, last delivered ${((s.doneAt - start) / 1000).toFixed(1)} s after start` : ''}`,
  });
  for (const rateOffered of RATES) {
    log(`${label}: latency @ ${rateOffered}/s`);
    const l = await latency(pools, hdr, from, to, rx, rateOffered, LATENCY_MS, tag);
    rows.push({
      name: `${label}: latency @ ${rateOffered}/s`,
      p50: l.p50,
      p99: l.p99,
      max: l.max,
      lost: l.lost,
      duplicated: l.duplicated,
      notes: `${l.received}/${l.total} received, offered ${Math.round(l.offered)}/s${l.errors ? `, ${l.errors} errors` : ''}`,
    });
  }
  return rate;
}

/** Raises this process's open-file limit (root, or within the hard limit); returns the limit in force. */
function raiseOwnNofile(n: number): number {
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${n}:${n}`], { stdio: 'ignore' });
  } catch {
    /* not allowed: keep what we have */
  }
  try {
    const out = execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '--output=SOFT'], { encoding: 'utf8' });
    return Number(out.trim());
  } catch {
    return n;
  }
}

async function connectionsPhase(rows: Row[], dir: string): Promise<void> {
  const want = WS_TOTAL;
  if (want <= 0) return;
  const limit = raiseOwnNofile(want + 4096);
  const n = Math.min(want, limit - 1024);
  log(`connections: opening ${n} idle authenticated WebSockets (fd limit ${limit})`);
  const port = await freePort();
  // Raised only where allowed (CAP_SYS_RESOURCE); otherwise node raises its soft limit to the hard one itself.
  const raised = limit >= want + 4096;
  const child = startChild([BIN, 'serve'], { INTERTALK_LISTEN: `127.0.0.1:${port}`, INTERTALK_DATABASE: `sqlite:${join(dir, 'conns.db')}`, ...NO_LIMITS }, raised ? want + 4096 : undefined);
  const url = `http://127.0.0.1:${port}`;
  await waitUp(url);
  const USERS = 16;
  const tokens: string[] = [];
  for (let u = 0; u < USERS; u++) tokens.push(await token(url, undefined, `idle${u}`));
  await sleep(1500);
  const before = rssKiB(child.pid!);
  // About 28,000 ephemeral ports per (source, destination) pair: several loopback sources.
  const PER_SOURCE = 20_000;
  const sockets: WebSocket[] = [];
  let ok = 0;
  let failed = 0;
  let next = 0;
  const t0 = Date.now();
  const open = (i: number) =>
    new Promise<void>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/messages`, { perMessageDeflate: false, localAddress: `127.0.0.${2 + Math.floor(i / PER_SOURCE)}` } as WebSocket.ClientOptions);
      sockets.push(ws);
      let done = false;
      const finish = (good: boolean) => {
        if (done) return;
        done = true;
        if (good) ok++;
        else failed++;
        resolve();
      };
      ws.once('open', () => ws.send(JSON.stringify({ token: tokens[i % USERS] })));
      ws.once('message', (d) => finish(String(d).includes('"ready"')));
      ws.once('error', () => finish(false));
      ws.once('close', () => finish(false));
    });
  const worker = async () => {
    while (next < n) await open(next++);
  };
  await Promise.all(Array.from({ length: 256 }, worker));
  const openSecs = (Date.now() - t0) / 1000;
  await sleep(3000);
  const after = rssKiB(child.pid!);
  const stillOpen = sockets.filter((w) => w.readyState === WebSocket.OPEN).length;
  const kib = ok > 0 ? (after - before) / ok : NaN;
  rows.push({
    name: 'connections: idle authenticated WebSockets, one instance (SQLite)',
    connections: ok,
    kibPerConnection: Math.round(kib * 100) / 100,
    notes: `${ok} of ${n} authenticated${failed ? ` (${failed} failed)` : ''}, ${stillOpen} still open after 3 s; opened in ${openSecs.toFixed(1)} s (${Math.round(ok / openSecs)}/s); server RSS ${(before / 1024).toFixed(0)} → ${(after / 1024).toFixed(0)} MiB${n < want ? `; capped from ${want} by the open-file limit (ulimit -n ${limit}, not raisable here)` : ''}`,
  });
  log(`connections: ${ok} open, ${kib.toFixed(2)} KiB each`);
  for (const w of sockets) w.terminate();
  sockets.length = 0;
  await stopChild(child, 3000);
}

interface Federation {
  ca: TestCa;
  issue: (d: string) => Promise<{ certPath: string; keyPath: string }>;
}

function tlsEnv(ca: TestCa, d: string, port: number, cert: { certPath: string; keyPath: string }, resolve: string): Record<string, string> {
  return {
    NODE_EXTRA_CA_CERTS: ca.caCertPath,
    INTERTALK_DOMAIN: d,
    INTERTALK_LISTEN: `127.0.0.1:${port}`,
    INTERTALK_PUBLIC_URL: `https://${d}:${port}`,
    INTERTALK_TLS_CERT: cert.certPath,
    INTERTALK_TLS_KEY: cert.keyPath,
    INTERTALK_RESOLVE: resolve,
    ...NO_LIMITS,
  };
}

async function pgAdmin(statement: string): Promise<void> {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: PG_ADMIN, connectionTimeoutMillis: 5_000 });
  await c.connect();
  try {
    await c.query(statement);
  } finally {
    await c.end();
  }
}

async function redisReachable(): Promise<boolean> {
  const u = new URL(REDIS);
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || 6379) }, () => {
      s.write('PING\r\n');
    });
    s.setTimeout(2000, () => (s.destroy(), resolve(false)));
    s.once('data', (d) => (s.destroy(), resolve(String(d).startsWith('+PONG'))));
    s.once('error', () => resolve(false));
  });
}

async function clusterPhases(rows: Row[], fed: Federation, baseRate: number): Promise<void> {
  if (PG_ADMIN === 'off') return;
  try {
    await pgAdmin('SELECT 1');
  } catch (err) {
    rows.push({ name: 'PostgreSQL + Redis: skipped', notes: `PostgreSQL at ${PG_ADMIN} unreachable: ${(err as Error).message}` });
    return;
  }
  if (!(await redisReachable())) {
    rows.push({ name: 'PostgreSQL + Redis: skipped', notes: `Redis at ${REDIS} unreachable` });
    return;
  }
  const suffix = randomBytes(4).toString('hex');
  const dbs = ['local', 'a', 'b'].map((k) => `bench_${k}_${suffix}`);
  const dbUrl = (name: string) => {
    const u = new URL(PG_ADMIN);
    u.pathname = `/${name}`;
    return u.href;
  };
  const mine: ChildProcess[] = [];
  try {
    for (const d of dbs) await pgAdmin(`CREATE DATABASE ${d}`);
    // Local: two instances of one provider; the sender posts to instance 1, the recipient listens on instance 2.
    const domain = `l${suffix}.bench.test`;
    const [p1, p2] = [await freePort(), await freePort()];
    const common = { INTERTALK_DOMAIN: domain, INTERTALK_DATABASE: dbUrl(dbs[0]!), INTERTALK_REDIS: REDIS, ...NO_LIMITS };
    mine.push(startChild([BIN, 'serve'], { ...common, INTERTALK_LISTEN: `127.0.0.1:${p1}`, INTERTALK_PUBLIC_URL: `http://127.0.0.1:${p1}` }));
    await waitUp(`http://127.0.0.1:${p1}`); // migrations ran: start the second instance
    mine.push(startChild([BIN, 'serve'], { ...common, INTERTALK_LISTEN: `127.0.0.1:${p2}`, INTERTALK_PUBLIC_URL: `http://127.0.0.1:${p1}` }));
    await waitUp(`http://127.0.0.1:${p2}`);
    const ta = await token(`http://127.0.0.1:${p1}`, undefined, 'alice');
    const tb = await token(`http://127.0.0.1:${p1}`, undefined, 'bob');
    const rx = await receiver(`ws://127.0.0.1:${p2}`, tb);
    const pool = new Pool(`http://127.0.0.1:${p1}`, { connections: CONNECTIONS });
    const localRate = await suite(rows, 'PG+Redis ×2 local (send → instance 1, receive ← instance 2)', [pool], { 'content-type': 'application/json', authorization: `Bearer ${ta}` }, `alice@${domain}`, `bob@${domain}`, rx, baseRate, null);
    rx.ws.close();
    await pool.close();
    await Promise.all(mine.splice(0).map((c) => stopChild(c)));

    // Federated: A (two instances, PostgreSQL + Redis) → B (two instances, PostgreSQL + Redis).
    const [da, db] = [`a${suffix}.test`, `b${suffix}.test`];
    const [a1, a2, b1, b2] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const resolve = `${da}=127.0.0.1:${a1},${db}=127.0.0.1:${b1}`;
    const [ca, cb] = [await fed.issue(da), await fed.issue(db)];
    const envA = (port: number) => ({ ...tlsEnv(fed.ca, da, port, ca, resolve), INTERTALK_PUBLIC_URL: `https://${da}:${a1}`, INTERTALK_DATABASE: dbUrl(dbs[1]!), INTERTALK_REDIS: REDIS });
    const envB = (port: number) => ({ ...tlsEnv(fed.ca, db, port, cb, resolve), INTERTALK_PUBLIC_URL: `https://${db}:${b1}`, INTERTALK_DATABASE: dbUrl(dbs[2]!), INTERTALK_REDIS: REDIS });
    mine.push(startChild([BIN, 'serve'], envA(a1)), startChild([BIN, 'serve'], envB(b1)));
    await waitUp(`https://127.0.0.1:${a1}`, fed.ca.caCert, da);
    await waitUp(`https://127.0.0.1:${b1}`, fed.ca.caCert, db);
    mine.push(startChild([BIN, 'serve'], envA(a2)), startChild([BIN, 'serve'], envB(b2)));
    await waitUp(`https://127.0.0.1:${a2}`, fed.ca.caCert, da);
    await waitUp(`https://127.0.0.1:${b2}`, fed.ca.caCert, db);
    const fa = await token(`https://127.0.0.1:${a1}`, new Agent({ connect: { ca: fed.ca.caCert, servername: da } }), 'alice');
    const fb = await token(`https://127.0.0.1:${b1}`, new Agent({ connect: { ca: fed.ca.caCert, servername: db } }), 'bob');
    const frx = await receiver(`wss://127.0.0.1:${b2}`, fb, fed.ca.caCert, db);
    const half = Math.max(1, CONNECTIONS / 2);
    const pools = [a1, a2].map((p) => new Pool(`https://127.0.0.1:${p}`, { connections: half, connect: { ca: fed.ca.caCert, servername: da } }));
    const fhdr = { 'content-type': 'application/json', authorization: `Bearer ${fa}` };
    await warmUp(pools, fhdr, `alice@${da}`, `bob@${db}`, frx);
    await suite(rows, 'PG+Redis ×2 federated (A1+A2 → HTTPS+JWT → B1/B2, receive ← B2)', pools, fhdr, `alice@${da}`, `bob@${db}`, frx, baseRate, localRate);
    frx.ws.close();
    await Promise.all(pools.map((p) => p.close()));
  } finally {
    await Promise.all(mine.splice(0).map((c) => stopChild(c)));
    for (const d of dbs) await pgAdmin(`DROP DATABASE IF EXISTS ${d} WITH (FORCE)`).catch((err) => log(`could not drop ${d}: ${(err as Error).message}`));
  }
}

/** First delivery fetches keys and opens the peer connection pool: keep it out of the figures. */
async function warmUp(pools: Pool[], hdr: Record<string, string>, from: string, to: string, rx: Receiver): Promise<void> {
  const texts: string[] = [];
  for (const [k, p] of pools.entries()) {
    const t = `warm-up ${k} ${randomBytes(3).toString('hex')}`;
    const r = await p.request({ method: 'POST', path: '/messages', headers: hdr, body: bodyOf(from, to, t) });
    await r.body.dump();
    texts.push(t);
  }
  await settle(rx, texts, 15_000);
}

/** intertalk (SQLite, WebSocket send path) and ejabberd under the same load: local, then federated. */
async function peerPhases(side: SideRow[], dir: string, fed: Federation): Promise<void> {
  const ejDir = mkdtempSync(join(tmpdir(), 'intertalk-bench-ejabberd-'));
  chmodSync(ejDir, 0o755); // ejabberd runs as its own user
  try {
    const localOurs = async () => {
      const port = await freePort();
      const c = startChild([BIN, 'serve'], { INTERTALK_LISTEN: `127.0.0.1:${port}`, INTERTALK_DATABASE: `sqlite:${join(dir, `peer-local-${randomBytes(3).toString('hex')}.db`)}`, ...NO_LIMITS });
      const url = `http://127.0.0.1:${port}`;
      await waitUp(url);
      const s = { url, wsUrl: `ws://127.0.0.1:${port}`, domain: 'localhost', pid: c.pid! };
      return ours(s, s, () => stopChild(c));
    };
    // BENCH_PEER_PHASES=federated (or local) runs only that half.
    const halves = process.env.BENCH_PEER_PHASES?.split(',').map((x) => x.trim()) ?? ['local', 'federated'];
    if (halves.includes('local')) side.push(...(await sideBySide('local', localOurs, () => ejabberd(join(ejDir, 'local'), false), DURATION_MS, RATES, true)));
    const fedOurs = async () => {
      const [pa, pb] = [await freePort(), await freePort()];
      const tag = randomBytes(3).toString('hex');
      const [da, db] = [`pa${tag}.test`, `pb${tag}.test`];
      const resolve = `${da}=127.0.0.1:${pa},${db}=127.0.0.1:${pb}`;
      const A = startChild([BIN, 'serve'], { ...tlsEnv(fed.ca, da, pa, await fed.issue(da), resolve), INTERTALK_DATABASE: `sqlite:${join(dir, `${da}.db`)}` });
      const B = startChild([BIN, 'serve'], { ...tlsEnv(fed.ca, db, pb, await fed.issue(db), resolve), INTERTALK_DATABASE: `sqlite:${join(dir, `${db}.db`)}` });
      await waitUp(`https://127.0.0.1:${pa}`, fed.ca.caCert, da);
      await waitUp(`https://127.0.0.1:${pb}`, fed.ca.caCert, db);
      const a = { url: `https://127.0.0.1:${pa}`, wsUrl: `wss://127.0.0.1:${pa}`, domain: da, ca: fed.ca.caCert, pid: A.pid! };
      const b = { url: `https://127.0.0.1:${pb}`, wsUrl: `wss://127.0.0.1:${pb}`, domain: db, ca: fed.ca.caCert, pid: B.pid! };
      return ours(a, b, async () => {
        await stopChild(A);
        await stopChild(B);
      });
    };
    if (halves.includes('federated')) side.push(...(await sideBySide('federated', fedOurs, () => ejabberd(join(ejDir, 'federated'), true), DURATION_MS, RATES, false)));
  } finally {
    rmSync(ejDir, { recursive: true, force: true });
  }
}

async function main() {
  const rows: Row[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'intertalk-bench-'));
  const started = Date.now();

  // 1. Baseline: bare node:http.
  log('baseline');
  const basePort = await freePort();
  const baseline = startChild(['-e', `require('http').createServer((q,s)=>{q.resume();q.on('end',()=>{s.writeHead(201,{'content-type':'application/json'});s.end('{}')})}).listen(${basePort},'127.0.0.1')`], {});
  await sleep(300);
  const bpool = new Pool(`http://127.0.0.1:${basePort}`, { connections: CONNECTIONS });
  const b = await closedLoop([bpool], { 'content-type': 'application/json' }, (i) => `benchmark message ${i} — a line of ordinary chat text`, (t) => bodyOf('a@localhost', 'b@localhost', t), DURATION_MS);
  await bpool.close();
  await stopChild(baseline);
  rows.push({ name: 'baseline: bare node:http 201', msgsPerSec: Math.round(b.rate), vsBaseline: 100 });

  // 2. Local: one provider on SQLite.
  let localRate: number | null = null;
  if (phase('local')) {
    const lp = await freePort();
    const local = startChild([BIN, 'serve'], { INTERTALK_LISTEN: `127.0.0.1:${lp}`, INTERTALK_DATABASE: `sqlite:${join(dir, 'local.db')}`, ...NO_LIMITS });
    const lurl = `http://127.0.0.1:${lp}`;
    await waitUp(lurl);
    const ta = await token(lurl, undefined, 'alice');
    const tb = await token(lurl, undefined, 'bob');
    const rx = await receiver(`ws://127.0.0.1:${lp}`, tb);
    const lpool = new Pool(lurl, { connections: CONNECTIONS });
    const hdr = { 'content-type': 'application/json', authorization: `Bearer ${ta}` };
    localRate = await suite(rows, 'local SQLite (POST → SQLite → WebSocket)', [lpool], hdr, 'alice@localhost', 'bob@localhost', rx, b.rate, null);
    await wsSuite(rows, 'local SQLite (WebSocket send → SQLite → WebSocket)', `ws://127.0.0.1:${lp}`, ta, 'alice@localhost', 'bob@localhost', rx, b.rate, null);
    rx.ws.close();
    await lpool.close();
    await stopChild(local);
  }

  // 3. Federated: two providers (SQLite) over HTTPS.
  const ca = await makeCa(dir);
  const fed: Federation = { ca, issue: (d) => ca.issue([d]) };
  if (phase('federated')) {
    const [pa, pb] = [await freePort(), await freePort()];
    const resolve = `a.test=127.0.0.1:${pa},b.test=127.0.0.1:${pb}`;
    const A = startChild([BIN, 'serve'], { ...tlsEnv(ca, 'a.test', pa, await fed.issue('a.test'), resolve), INTERTALK_DATABASE: `sqlite:${join(dir, 'a.test.db')}` });
    const B = startChild([BIN, 'serve'], { ...tlsEnv(ca, 'b.test', pb, await fed.issue('b.test'), resolve), INTERTALK_DATABASE: `sqlite:${join(dir, 'b.test.db')}` });
    const da = new Agent({ connect: { ca: ca.caCert, servername: 'a.test' } });
    const db = new Agent({ connect: { ca: ca.caCert, servername: 'b.test' } });
    await waitUp(`https://127.0.0.1:${pa}`, ca.caCert, 'a.test');
    await waitUp(`https://127.0.0.1:${pb}`, ca.caCert, 'b.test');
    const fa = await token(`https://127.0.0.1:${pa}`, da, 'alice');
    const fb = await token(`https://127.0.0.1:${pb}`, db, 'bob');
    const frx = await receiver(`wss://127.0.0.1:${pb}`, fb, ca.caCert, 'b.test');
    const fpool = new Pool(`https://127.0.0.1:${pa}`, { connections: CONNECTIONS, connect: { ca: ca.caCert, servername: 'a.test' } });
    const fhdr = { 'content-type': 'application/json', authorization: `Bearer ${fa}` };
    await warmUp([fpool], fhdr, 'alice@a.test', 'bob@b.test', frx);
    await suite(rows, 'federated SQLite (A → HTTPS+JWT → B → WebSocket)', [fpool], fhdr, 'alice@a.test', 'bob@b.test', frx, b.rate, localRate);
    await wsSuite(rows, 'federated SQLite (WebSocket send → A → HTTPS+JWT → B → WebSocket)', `wss://127.0.0.1:${pa}`, fa, 'alice@a.test', 'bob@b.test', frx, b.rate, localRate, ca.caCert, 'a.test');
    frx.ws.close();
    await fpool.close();
    await stopChild(A);
    await stopChild(B);
  }

  // 3b. The same load on ejabberd, side by side.
  const side: SideRow[] = [];
  if (phase('peer')) await peerPhases(side, dir, fed);

  // 4. Idle connections on one instance.
  if (phase('connections')) await connectionsPhase(rows, dir);

  // 5. PostgreSQL + Redis, two instances per provider.
  if (phase('cluster')) await clusterPhases(rows, fed, b.rate);

  rmSync(dir, { recursive: true, force: true });
  const fmt = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? '' : n.toFixed(2));
  const opt = (n: number | undefined, suffix = '') => (n === undefined || Number.isNaN(n) ? '' : `${n}${suffix}`);
  const header = '| measurement | msgs/s | vs baseline | vs local | p50 ms | p99 ms | max ms | lost / dup | connections | KiB/conn | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|';
  const md = [
    header,
    ...rows.map(
      (r) =>
        `| ${r.name} | ${opt(r.msgsPerSec)} | ${opt(r.vsBaseline, '%')} | ${opt(r.vsLocal, '%')} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${r.lost === undefined ? '' : `${r.lost} / ${r.duplicated ?? 0}`} | ${opt(r.connections)} | ${opt(r.kibPerConnection)} | ${r.notes ?? ''} |`,
    ),
  ].join('\n');
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${process.platform}`;
  const date = new Date().toISOString();
  const sideMd = side.length
    ? [
        '| measurement | unit | intertalk | ejabberd | intertalk ÷ ejabberd | notes |',
        '|---|---|---:|---:|---:|---|',
        ...side.map((r) => `| ${r.measurement} | ${r.unit} | ${r.unit === 'ms' ? r.intertalk.toFixed(2) : r.intertalk} | ${r.unit === 'ms' ? r.ejabberd.toFixed(2) : r.ejabberd} | ${r.ejabberd ? (r.intertalk / r.ejabberd).toFixed(2) : ''} | ${r.notes} |`),
      ].join('\n')
    : '';
  const settings = `${DURATION_MS / 1000} s per throughput run, ${LATENCY_MS / 1000} s per latency run, ${CONNECTIONS} HTTP connections, ${WS_TOTAL} idle WebSockets requested; whole run ${((Date.now() - started) / 1000).toFixed(0)} s`;
  console.log(`\nintertalk benchmark — ${date} — ${machine}\n${settings}\n`);
  console.log(md);
  if (sideMd) console.log(`\nSide by side with ${PEER} (same load generator, same run):\n\n${sideMd}`);
  const out = join(ROOT, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const json = JSON.stringify({ date, machine, durationMs: DURATION_MS, latencyMs: LATENCY_MS, connections: CONNECTIONS, websockets: WS_TOTAL, rates: RATES, rows, ...(side.length ? { peer: PEER, sideBySide: side } : {}) }, null, 2) + '\n';
  const mdFile = `# Benchmark results\n\n${date} — ${machine}\n\n${settings}. Command: \`npm run bench${PEER ? ` -- --peer ${PEER}` : ''}\`.\n\n${md}\n${sideMd ? `\n## Side by side with ${PEER}\n\n${sideMd}\n` : ''}`;
  const stamp = date.replace(/[:.]/g, '-');
  writeFileSync(join(out, 'latest.json'), json);
  writeFileSync(join(out, 'latest.md'), mdFile);
  writeFileSync(join(out, `${stamp}.json`), json);
  writeFileSync(join(out, `${stamp}.md`), mdFile);
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
