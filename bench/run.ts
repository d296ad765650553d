// `npm run bench`: real servers in child processes on loopback, a load generator in this process.
// Every figure is measured in the same run; results go to bench/results/ as JSON and Markdown.
//   - baseline: bare node:http answering 201 to the same POST body (the ceiling on this machine)
//   - local: POST /messages → persisted → delivered to a WebSocket recipient, messages/s
//   - federated: user on provider A → user on provider B over HTTPS with signed JWTs, messages/s
//   - latency: send-to-receive p50/p99/max at fixed offered rates, local and federated
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, Pool } from 'undici';
import WebSocket from 'ws';
import { makeCa } from '../src/devnet/ca.js';
import { freePort } from '../src/devnet/network.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'intertalk.js');
const DURATION_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);

interface Row {
  name: string;
  msgsPerSec?: number;
  ratio?: string;
  p50?: number;
  p99?: number;
  max?: number;
  notes?: string;
}

const children: ChildProcess[] = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

async function waitUp(url: string, ca?: string, servername?: string): Promise<void> {
  const dispatcher = ca ? new Agent({ connect: { ca, servername } }) : undefined;
  for (let i = 0; i < 400; i++) {
    try {
      const { fetch } = await import('undici');
      const r = await fetch(url + '/healthz', dispatcher ? { dispatcher } : {});
      if (r.status < 500) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not come up`);
}

function startChild(args: string[], env: Record<string, string>): ChildProcess {
  const c = spawn(process.execPath, args, { env: { ...process.env, INTERTALK_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(c);
  return c;
}

async function stopChild(c: ChildProcess): Promise<void> {
  c.kill('SIGTERM');
  await new Promise((r) => c.once('exit', r));
}

const BODY_TEMPLATE = (from: string, to: string, i: number) => JSON.stringify({ from, to: [from, to], message: `benchmark message ${i} — a line of ordinary chat text` });

/** Closed loop: CONNECTIONS requests in flight for DURATION_MS. Returns completed requests/s. */
async function closedLoop(pool: Pool, path: string, headers: Record<string, string>, body: (i: number) => string, durationMs: number): Promise<{ rate: number; errors: number; sent: number }> {
  let i = 0;
  let done = 0;
  let errors = 0;
  const end = Date.now() + durationMs;
  const start = Date.now();
  const worker = async () => {
    while (Date.now() < end) {
      const n = i++;
      try {
        const r = await pool.request({ method: 'POST', path, headers, body: body(n) });
        await r.body.dump();
        if (r.statusCode === 201) done++;
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, worker));
  return { rate: (done * 1000) / (Date.now() - start), errors, sent: i };
}

async function token(base: string, dispatcher: Agent | undefined, username: string): Promise<string> {
  const { fetch } = await import('undici');
  const opts = dispatcher ? { dispatcher } : {};
  await fetch(base + '/users', { ...opts, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'benchmark password' }) });
  const r = await fetch(base + '/token', { ...opts, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `grant_type=password&username=${username}&password=benchmark%20password` });
  return ((await r.json()) as { access_token: string }).access_token;
}

async function receiver(wsUrl: string, tok: string, ca?: string, servername?: string): Promise<{ ws: WebSocket; count: () => number; onMessage: (fn: (m: { message: string }) => void) => void }> {
  const ws = new WebSocket(wsUrl + '/messages', ca ? ({ ca, servername } as WebSocket.ClientOptions) : {});
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  let n = 0;
  let fn: ((m: { message: string }) => void) | null = null;
  ws.on('message', (d) => {
    n++;
    if (fn) fn(JSON.parse(d.toString()));
  });
  ws.send(tok);
  await new Promise((r) => setTimeout(r, 100));
  return { ws, count: () => n, onMessage: (f) => (fn = f) };
}

/** Open loop at a fixed rate: each message carries its send time; latency measured on receipt. */
async function latency(pool: Pool, path: string, headers: Record<string, string>, from: string, to: string, rx: Awaited<ReturnType<typeof receiver>>, rate: number, durationMs: number) {
  const sentAt = new Map<string, number>();
  const samples: number[] = [];
  rx.onMessage((m) => {
    const t = sentAt.get(m.message);
    if (t !== undefined) samples.push(performance.now() - t);
  });
  const total = Math.floor((rate * durationMs) / 1000);
  const start = performance.now();
  const inflight: Promise<unknown>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const text = `lat ${rate} ${i}`;
    sentAt.set(text, performance.now());
    inflight.push(pool.request({ method: 'POST', path, headers, body: JSON.stringify({ from, to: [from, to], message: text }) }).then((r) => r.body.dump(), () => undefined));
  }
  await Promise.all(inflight);
  const deadline = Date.now() + 10_000;
  while (samples.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  samples.sort((a, b) => a - b);
  const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), max: samples[samples.length - 1] ?? NaN, received: samples.length, total };
}

async function main() {
  const rows: Row[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'intertalk-bench-'));

  // 1. Baseline: bare node:http.
  const basePort = await freePort();
  const baseline = startChild(['-e', `require('http').createServer((q,s)=>{q.resume();q.on('end',()=>{s.writeHead(201,{'content-type':'application/json'});s.end('{}')})}).listen(${basePort},'127.0.0.1')`], {});
  await new Promise((r) => setTimeout(r, 300));
  const bpool = new Pool(`http://127.0.0.1:${basePort}`, { connections: CONNECTIONS });
  const b = await closedLoop(bpool, '/messages', { 'content-type': 'application/json' }, (i) => BODY_TEMPLATE('a@localhost', 'b@localhost', i), DURATION_MS);
  await bpool.close();
  await stopChild(baseline);
  rows.push({ name: 'baseline: bare node:http 201', msgsPerSec: Math.round(b.rate), ratio: '100%' });

  // 2. Local: one provider on SQLite.
  const lp = await freePort();
  const local = startChild([BIN, 'serve'], { INTERTALK_LISTEN: `127.0.0.1:${lp}`, INTERTALK_DATABASE: `sqlite:${join(dir, 'local.db')}`, INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '100000' });
  const lurl = `http://127.0.0.1:${lp}`;
  await waitUp(lurl);
  const ta = await token(lurl, undefined, 'alice');
  const tb = await token(lurl, undefined, 'bob');
  const rx = await receiver(`ws://127.0.0.1:${lp}`, tb);
  const lpool = new Pool(lurl, { connections: CONNECTIONS });
  const hdr = { 'content-type': 'application/json', authorization: `Bearer ${ta}` };
  const before = rx.count();
  const l = await closedLoop(lpool, '/messages', hdr, (i) => BODY_TEMPLATE('alice@localhost', 'bob@localhost', i), DURATION_MS);
  const deadline = Date.now() + 10_000;
  while (rx.count() - before < l.sent - l.errors && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  rows.push({ name: 'local: POST → SQLite → WebSocket', msgsPerSec: Math.round(l.rate), ratio: `${((l.rate / b.rate) * 100).toFixed(0)}%`, notes: `${rx.count() - before} delivered, ${l.errors} errors` });
  for (const rate of [1000, 5000]) {
    const r = await latency(lpool, '/messages', hdr, 'alice@localhost', 'bob@localhost', rx, rate, Math.min(DURATION_MS, 3000));
    rows.push({ name: `local latency @ ${rate}/s`, p50: r.p50, p99: r.p99, max: r.max, notes: `${r.received}/${r.total} received` });
  }
  rx.ws.close();
  await lpool.close();
  await stopChild(local);

  // 3. Federated: two providers over HTTPS.
  const ca = await makeCa(dir);
  const [pa, pb] = [await freePort(), await freePort()];
  const resolve = `a.test=127.0.0.1:${pa},b.test=127.0.0.1:${pb}`;
  const mk = async (d: string, port: number) => {
    const cert = await ca.issue([d]);
    return startChild([BIN, 'serve'], {
      NODE_EXTRA_CA_CERTS: ca.caCertPath,
      INTERTALK_DOMAIN: d,
      INTERTALK_LISTEN: `127.0.0.1:${port}`,
      INTERTALK_PUBLIC_URL: `https://${d}:${port}`,
      INTERTALK_DATABASE: `sqlite:${join(dir, `${d}.db`)}`,
      INTERTALK_TLS_CERT: cert.certPath,
      INTERTALK_TLS_KEY: cert.keyPath,
      INTERTALK_RESOLVE: resolve,
      INTERTALK_SEND_RATE: '100000000',
      INTERTALK_REGISTRATION_RATE: '100000',
    });
  };
  const A = await mk('a.test', pa);
  const B = await mk('b.test', pb);
  const da = new Agent({ connect: { ca: ca.caCert, servername: 'a.test' } });
  const db = new Agent({ connect: { ca: ca.caCert, servername: 'b.test' } });
  await waitUp(`https://127.0.0.1:${pa}`, ca.caCert, 'a.test');
  await waitUp(`https://127.0.0.1:${pb}`, ca.caCert, 'b.test');
  const fa = await token(`https://127.0.0.1:${pa}`, da, 'alice');
  const fb = await token(`https://127.0.0.1:${pb}`, db, 'bob');
  const frx = await receiver(`wss://127.0.0.1:${pb}`, fb, ca.caCert, 'b.test');
  const fpool = new Pool(`https://127.0.0.1:${pa}`, { connections: CONNECTIONS, connect: { ca: ca.caCert, servername: 'a.test' } });
  const fhdr = { 'content-type': 'application/json', authorization: `Bearer ${fa}` };
  // Warm up: first delivery fetches keys and opens the connection pool.
  await fpool.request({ method: 'POST', path: '/messages', headers: fhdr, body: BODY_TEMPLATE('alice@a.test', 'bob@b.test', -1) }).then((r) => r.body.dump());
  await new Promise((r) => setTimeout(r, 500));
  const fbefore = frx.count();
  const fstart = Date.now();
  const f = await closedLoop(fpool, '/messages', fhdr, (i) => BODY_TEMPLATE('alice@a.test', 'bob@b.test', i), DURATION_MS);
  const fdeadline = Date.now() + 60_000;
  while (frx.count() - fbefore < f.sent - f.errors && Date.now() < fdeadline) await new Promise((r) => setTimeout(r, 20));
  const delivered = frx.count() - fbefore;
  const fedRate = (delivered * 1000) / (Date.now() - fstart);
  rows.push({ name: 'federated: A → HTTPS+JWT → B → WebSocket', msgsPerSec: Math.round(fedRate), ratio: `${((fedRate / b.rate) * 100).toFixed(0)}%`, notes: `${delivered} delivered end to end; ${((fedRate / l.rate) * 100).toFixed(0)}% of local` });
  for (const rate of [1000, 5000]) {
    const r = await latency(fpool, '/messages', fhdr, 'alice@a.test', 'bob@b.test', frx, rate, Math.min(DURATION_MS, 3000));
    rows.push({ name: `federated latency @ ${rate}/s`, p50: r.p50, p99: r.p99, max: r.max, notes: `${r.received}/${r.total} received` });
  }
  frx.ws.close();
  await fpool.close();
  await stopChild(A);
  await stopChild(B);

  const fmt = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? '' : n.toFixed(2));
  const header = '| measurement | msgs/s | vs baseline | p50 ms | p99 ms | max ms | notes |\n|---|---:|---:|---:|---:|---:|---|';
  const md = [header, ...rows.map((r) => `| ${r.name} | ${r.msgsPerSec ?? ''} | ${r.ratio ?? ''} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${r.notes ?? ''} |`)].join('\n');
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
  console.log(`\nintertalk benchmark — ${new Date().toISOString()} — ${machine}\n`);
  console.log(md);
  const out = join(ROOT, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'latest.json'), JSON.stringify({ date: new Date().toISOString(), machine, durationMs: DURATION_MS, connections: CONNECTIONS, rows }, null, 2));
  writeFileSync(join(out, 'latest.md'), `# Benchmark results\n\n${machine}, ${DURATION_MS / 1000} s per throughput run, ${CONNECTIONS} connections.\n\n${md}\n`);
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
