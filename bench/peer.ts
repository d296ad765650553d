// The side-by-side phase of `npm run bench -- --peer ejabberd` (or BENCH_PEER=ejabberd): intertalk
// and Debian's ejabberd measured with the same load shape, by the same load generator, in the
// same run — local (one server) and federated (two servers; HTTPS+JWT batches for us, XMPP s2s for
// ejabberd).
//   - throughput: PAIRS sender→receiver pairs, each keeping INFLIGHT messages sent but not yet
//     received (closed loop, end to end); messages received per second.
//   - latency: open loop at each BENCH_RATES rate, spread over the pairs; send → receive.
//   - idle connections: BENCH_PEER_IDLE authenticated idle connections to one server; its RSS
//     growth per connection.
// We send over the WebSocket send path (`send` frames on /messageStream) and receive on /messages;
// ejabberd's clients are @xmpp/client over plain TCP with SASL PLAIN. ejabberd runs with every
// shaper off, no TLS on loopback, no offline storage or archive (it persists nothing); we persist
// every message in SQLite.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, readFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Agent, fetch } from 'undici';
import WebSocket from 'ws';
import { client as xmppClient, xml } from '@xmpp/client';
import type { TestCa } from '../src/devnet/ca.js';
import { freePort } from '../src/devnet/network.js';

export const PAIRS = Number(process.env.BENCH_PEER_PAIRS ?? 50);
export const INFLIGHT = Number(process.env.BENCH_PEER_INFLIGHT ?? 20);
const IDLE = Number(process.env.BENCH_PEER_IDLE ?? 5000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(`# ${s}\n`);

/** One connected user of either system. */
interface Endpoint {
  send(to: string, text: string): void;
  onText(fn: (text: string) => void): void;
  close(): Promise<void>;
}

/** One system under test, local (one server) or federated (senders on one, receivers on another). */
export interface System {
  name: string;
  /** Users `s0…` (senders) and `r0…` (receivers), connected and ready; addresses of the receivers. */
  pairs(n: number): Promise<{ senders: Endpoint[]; receivers: Endpoint[]; to: string[] }>;
  /** n idle authenticated connections to the (first) server; returns how many succeeded. */
  idle(n: number): Promise<{ ok: number; close: () => Promise<void> }>;
  /** The pid whose RSS counts (the server that holds the idle connections). */
  pid(): number;
  stop(): Promise<void>;
}

export interface SideRow {
  measurement: string;
  unit: string;
  intertalk: number;
  ejabberd: number;
  notes: string;
}

// ---------------------------------------------------------------------------------------------
// The drivers: identical for both systems.

async function closedLoop(sys: System, durationMs: number) {
  const { senders, receivers, to } = await sys.pairs(PAIRS);
  const tag = randomBytes(3).toString('hex');
  const pending = Array.from({ length: senders.length }, () => new Set<string>());
  const seen = new Map<string, number>();
  let received = 0;
  let counting = true;
  let seq = 0;
  const end = Date.now() + durationMs;
  const start = Date.now();
  const sendNext = (k: number) => {
    while (pending[k]!.size < INFLIGHT && Date.now() < end) {
      const t = `pp ${tag} ${k} ${seq++} a line of ordinary chat text`;
      pending[k]!.add(t);
      senders[k]!.send(to[k]!, t);
    }
  };
  receivers.forEach((rx, k) =>
    rx.onText((t) => {
      seen.set(t, (seen.get(t) ?? 0) + 1);
      if (pending[k]!.delete(t)) {
        if (counting) received++;
        sendNext(k);
      }
    }),
  );
  senders.forEach((_, k) => sendNext(k));
  await sleep(durationMs);
  const elapsed = Date.now() - start;
  counting = false;
  const rate = (received * 1000) / elapsed;
  // Drain: what is still in flight must arrive too.
  const deadline = Date.now() + 30_000;
  while (pending.some((p) => p.size > 0) && Date.now() < deadline) await sleep(20);
  await sleep(200);
  const lost = pending.reduce((n, p) => n + p.size, 0);
  const duplicated = [...seen.values()].reduce((n, c) => n + Math.max(0, c - 1), 0);
  await Promise.all([...senders, ...receivers].map((e) => e.close()));
  return { rate, lost, duplicated, received };
}

async function openLoop(sys: System, rate: number, durationMs: number) {
  const { senders, receivers, to } = await sys.pairs(PAIRS);
  const tag = randomBytes(3).toString('hex');
  const sentAt = new Map<string, number>();
  const samples: number[] = [];
  let duplicated = 0;
  const done = new Set<string>();
  for (const rx of receivers)
    rx.onText((t) => {
      const s = sentAt.get(t);
      if (s !== undefined) {
        samples.push(performance.now() - s);
        sentAt.delete(t);
        done.add(t);
      } else if (done.has(t)) duplicated++;
    });
  const total = Math.floor((rate * durationMs) / 1000);
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const k = i % senders.length;
    const t = `ol ${tag} ${rate} ${i} a line of ordinary chat text`;
    sentAt.set(t, performance.now());
    senders[k]!.send(to[k]!, t);
  }
  const deadline = Date.now() + 15_000;
  while (sentAt.size > 0 && Date.now() < deadline) await sleep(20);
  await sleep(200);
  await Promise.all([...senders, ...receivers].map((e) => e.close()));
  samples.sort((a, b) => a - b);
  const q = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), max: samples[samples.length - 1] ?? NaN, received: samples.length, total, lost: sentAt.size, duplicated };
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

async function idleMemory(sys: System, n: number) {
  await sleep(1000);
  const before = rssKiB(sys.pid());
  const t0 = Date.now();
  const r = await sys.idle(n);
  const secs = (Date.now() - t0) / 1000;
  await sleep(3000);
  const after = rssKiB(sys.pid());
  await r.close();
  return { ok: r.ok, kib: (after - before) / Math.max(1, r.ok), secs, before, after };
}

/** BENCH_LATENCY_SECONDS: each open-loop latency run (default min(BENCH_SECONDS, 3)); longer runs steady an A/B. */
const LATENCY_MS = process.env.BENCH_LATENCY_SECONDS ? Number(process.env.BENCH_LATENCY_SECONDS) * 1000 : undefined;

/** Runs the same measurements on both systems (one after the other, same process, same run). */
export async function sideBySide(label: string, ours: () => Promise<System>, theirs: () => Promise<System>, durationMs: number, rates: number[], withIdle: boolean): Promise<SideRow[]> {
  const results: Record<'intertalk' | 'ejabberd', { rate: number; lat: Array<{ p50: number; p99: number; max: number; note: string }>; idle?: Awaited<ReturnType<typeof idleMemory>>; notes: string }> = {} as never;
  // BENCH_PEER_SYSTEMS=intertalk measures only us (an A/B of our own change, without ejabberd's minutes).
  const only = process.env.BENCH_PEER_SYSTEMS?.split(',').map((x) => x.trim());
  const none = { rate: NaN, lat: rates.map(() => ({ p50: NaN, p99: NaN, max: NaN, note: 'not measured' })), notes: 'not measured' };
  for (const [key, make] of [['intertalk', ours], ['ejabberd', theirs]] as const) {
    if (only && !only.includes(key)) {
      results[key] = none;
      continue;
    }
    log(`${label}: ${key}`);
    const sys = await make();
    try {
      // Warm up: the first messages open connections (s2s, the federation pool) and fetch keys.
      await openLoop(sys, 200, 500);
      const t = await closedLoop(sys, durationMs);
      log(`${label}: ${key} throughput ${Math.round(t.rate)}/s (lost ${t.lost}, dup ${t.duplicated})`);
      const lat = [];
      for (const r of rates) {
        const l = await openLoop(sys, r, LATENCY_MS ?? Math.min(durationMs, 3000));
        log(`${label}: ${key} @ ${r}/s p50 ${l.p50.toFixed(2)} p99 ${l.p99.toFixed(2)} ms (${l.received}/${l.total})`);
        lat.push({ p50: l.p50, p99: l.p99, max: l.max, note: `${l.received}/${l.total} received, ${l.lost} lost, ${l.duplicated} dup` });
      }
      const idle = withIdle ? await idleMemory(sys, IDLE) : undefined;
      if (idle) log(`${label}: ${key} idle ${idle.ok} connections, ${idle.kib.toFixed(2)} KiB each`);
      results[key] = { rate: t.rate, lat, ...(idle ? { idle } : {}), notes: `${t.received} received, ${t.lost} lost, ${t.duplicated} dup` };
    } finally {
      await sys.stop();
    }
  }
  const o = results.intertalk;
  const e = results.ejabberd;
  const rows: SideRow[] = [{ measurement: `${label}: throughput, ${PAIRS} pairs × ${INFLIGHT} in flight`, unit: 'msgs/s', intertalk: Math.round(o.rate), ejabberd: Math.round(e.rate), notes: `intertalk ${o.notes}; ejabberd ${e.notes}` }];
  rates.forEach((r, i) => {
    rows.push({ measurement: `${label}: p50 @ ${r}/s`, unit: 'ms', intertalk: o.lat[i]!.p50, ejabberd: e.lat[i]!.p50, notes: '' });
    rows.push({ measurement: `${label}: p99 @ ${r}/s`, unit: 'ms', intertalk: o.lat[i]!.p99, ejabberd: e.lat[i]!.p99, notes: `intertalk ${o.lat[i]!.note}, max ${o.lat[i]!.max.toFixed(1)}; ejabberd ${e.lat[i]!.note}, max ${e.lat[i]!.max.toFixed(1)}` });
  });
  if (o.idle && e.idle)
    rows.push({
      measurement: `${label}: idle authenticated connection`,
      unit: 'KiB',
      intertalk: Math.round(o.idle.kib * 100) / 100,
      ejabberd: Math.round(e.idle.kib * 100) / 100,
      notes: `intertalk ${o.idle.ok} in ${o.idle.secs.toFixed(1)} s, RSS ${(o.idle.before / 1024).toFixed(0)} → ${(o.idle.after / 1024).toFixed(0)} MiB; ejabberd ${e.idle.ok} in ${e.idle.secs.toFixed(1)} s, RSS ${(e.idle.before / 1024).toFixed(0)} → ${(e.idle.after / 1024).toFixed(0)} MiB`,
    });
  return rows;
}

// ---------------------------------------------------------------------------------------------
// intertalk

export interface OursServer {
  /** Base URL for HTTP(S) requests and the matching WebSocket URL. */
  url: string;
  wsUrl: string;
  domain: string;
  ca?: string;
  pid: number;
}

async function ourToken(s: OursServer, username: string): Promise<string> {
  const dispatcher = s.ca ? new Agent({ connect: { ca: s.ca, servername: s.domain } }) : undefined;
  const opts = dispatcher ? { dispatcher } : {};
  const u = await fetch(s.url + '/users', { ...opts, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'benchmark password' }) });
  await u.body?.cancel();
  const r = await fetch(s.url + '/token', { ...opts, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `grant_type=password&username=${username}&password=benchmark%20password` });
  if (r.status !== 200) throw new Error(`token for ${username} at ${s.url}: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { access_token: string }).access_token;
}

function openWs(url: string, s: OursServer): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...(s.ca ? { ca: s.ca, servername: s.domain } : {}) });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function closeWs(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => (ws.terminate(), resolve()), 2000);
    ws.once('close', () => (clearTimeout(t), resolve()));
    ws.close();
  });
}

/** Waits for the `ready` frame after authenticating. */
function ready(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    const on = (d: WebSocket.RawData) => {
      if (String(d).includes('"ready"')) {
        ws.off('message', on);
        resolve();
      }
    };
    ws.on('message', on);
    ws.once('close', () => reject(new Error('socket closed before ready')));
  });
}

/** Our system: senders on `a`, receivers on `b` (the same server for the local figures). */
export function ours(a: OursServer, b: OursServer, stop: () => Promise<void>): System {
  const tokens = new Map<string, string>();
  const tok = async (s: OursServer, u: string) => {
    const key = `${u}@${s.domain}`;
    if (!tokens.has(key)) tokens.set(key, await ourToken(s, u));
    return tokens.get(key)!;
  };
  let refSeq = 0;
  return {
    name: 'intertalk',
    async pairs(n) {
      const senders: Endpoint[] = [];
      const receivers: Endpoint[] = [];
      const to: string[] = [];
      for (let k = 0; k < n; k++) {
        const [ts, tr] = [await tok(a, `s${k}`), await tok(b, `r${k}`)];
        const from = `s${k}@${a.domain}`;
        const sw = await openWs(a.wsUrl + '/messageStream', a);
        const sr = ready(sw);
        sw.send(JSON.stringify({ token: ts }));
        await sr;
        const rw = await openWs(b.wsUrl + '/messageStream', b);
        const rr = ready(rw);
        rw.send(JSON.stringify({ token: tr }));
        await rr;
        sw.on('message', (d) => {
          const s = String(d);
          if (s.startsWith('{"type":"ack"') && !s.includes('"status":201')) log(`intertalk send refused: ${s.slice(0, 200)}`);
        });
        let fn: ((t: string) => void) | null = null;
        rw.on('message', (d) => {
          const s = String(d);
          if (!s.startsWith('{"type":"message"')) return;
          const m = JSON.parse(s) as { message: { message: string; from: string } };
          if (fn && m.message.from === from) fn(m.message.message);
        });
        senders.push({
          send: (rcpt, text) => sw.send(`{"type":"send","ref":"${++refSeq}","message":${JSON.stringify({ from, to: [from, rcpt], message: text })}}`),
          onText: () => undefined,
          close: () => closeWs(sw),
        });
        receivers.push({ send: () => undefined, onText: (f) => (fn = f), close: () => closeWs(rw) });
        to.push(`r${k}@${b.domain}`);
      }
      return { senders, receivers, to };
    },
    async idle(n) {
      const USERS = 16;
      const tks: string[] = [];
      for (let u = 0; u < USERS; u++) tks.push(await tok(a, `idle${u}`));
      const sockets: WebSocket[] = [];
      let ok = 0;
      let next = 0;
      const worker = async () => {
        while (next < n) {
          const i = next++;
          try {
            const ws = await openWs(a.wsUrl + '/messages', a);
            sockets.push(ws);
            const r = ready(ws);
            ws.send(JSON.stringify({ token: tks[i % USERS] }));
            await r;
            ok++;
          } catch {
            /* counted as not ok */
          }
        }
      };
      await Promise.all(Array.from({ length: 128 }, worker));
      return { ok, close: async () => void (await Promise.all(sockets.map((w) => closeWs(w)))) };
    },
    pid: () => a.pid,
    stop,
  };
}

// ---------------------------------------------------------------------------------------------
// ejabberd

const EJABBERDCTL = '/usr/sbin/ejabberdctl';

/** Installs Debian's ejabberd when it is missing (needs root, as CI has). */
export function ensureEjabberd(): void {
  if (existsSync(EJABBERDCTL)) return;
  log('installing Debian ejabberd (apt-get)');
  execFileSync('apt-get', ['install', '-y', '-qq', 'ejabberd'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!existsSync(EJABBERDCTL)) throw new Error('ejabberd did not install');
}

interface EjNode {
  domain: string;
  ip: string;
  c2s: number;
  http: number;
  dir: string;
  node: string;
  proc: ChildProcess;
  uid: number;
  gid: number;
}

function ejConfig(domain: string, ip: string, c2s: number, s2s: number, http: number): string {
  // No shapers anywhere, no TLS, nothing stored: the fastest ejabberd can carry a chat message.
  return `hosts:
  - ${domain}
loglevel: warning
listen:
  -
    port: ${c2s}
    ip: "${ip}"
    module: ejabberd_c2s
    shaper: none
    access: c2s
    max_stanza_size: 262144
    backlog: 4096
  -
    port: ${s2s}
    ip: "${ip}"
    module: ejabberd_s2s_in
    shaper: none
    max_stanza_size: 524288
    backlog: 1024
  -
    port: ${http}
    ip: "${ip}"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
outgoing_s2s_port: ${s2s}
s2s_use_starttls: false
s2s_dns_timeout: 1
s2s_dns_retries: 1 # 0 means no lookup at all (p1_xmpp's xmpp_stream_out), not one without retry
auth_method: internal
auth_password_format: plain
# PLAIN over loopback, as intertalk's bearer token: @xmpp/client derives SCRAM keys with 4 096
# sequential WebCrypto HMACs per login (~0.1 s of the load generator's CPU each), which made the
# 5 000 idle logins take longer than the rest of the run. Login cost is not what the bench measures.
disable_sasl_mechanisms:
  - "SCRAM-SHA-1"
  - "SCRAM-SHA-256"
  - "SCRAM-SHA-512"
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  s2s:
    allow: all
api_permissions:
  "bench":
    from:
      - mod_http_api
    who:
      ip: 127.0.0.0/8
    what: "*"
shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
  max_user_sessions: 1000000
modules:
  mod_s2s_dialback: {}
  mod_disco: {}
`;
}

async function startEj(base: string, name: string, domain: string, ip: string, s2s: number): Promise<EjNode> {
  const dir = join(base, name);
  mkdirSync(join(dir, 'spool'), { recursive: true });
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const [c2s, http] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'ejabberd.yml'), ejConfig(domain, ip, c2s, s2s, http));
  const node = `${name}${randomBytes(3).toString('hex')}@localhost`;
  writeFileSync(join(dir, 'ejabberdctl.cfg'), `ERLANG_NODE=${node}\nEJABBERD_BYPASS_WARNINGS=true\nERL_MAX_PORTS=250000\nERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n`);
  // Erlang's resolver (ejabberdctl points ERL_INETRC here): the node's own host name, without DNS.
  writeFileSync(join(dir, 'inetrc'), `{lookup,["file","native"]}.\n{host,{127,0,0,1},["localhost"]}.\n`);
  // ejabberdctl runs the server as the ejabberd user.
  const uid = Number(execFileSync('id', ['-u', 'ejabberd'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'ejabberd'], { encoding: 'utf8' }).trim());
  for (const p of [base, dir, join(dir, 'spool'), join(dir, 'logs'), join(dir, 'ejabberd.yml'), join(dir, 'ejabberdctl.cfg'), join(dir, 'inetrc')]) chownSync(p, uid, gid);
  // The open-file limit: as high as the hard limit allows.
  const nofile = execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--raw', '--noheadings', '--output=HARD'], { encoding: 'utf8' }).trim();
  // Started as the ejabberd user directly (ejabberdctl would otherwise `su`, which resets the limit).
  const proc = spawn('prlimit', [`--nofile=${nofile}:${nofile}`, EJABBERDCTL, '--config-dir', dir, '--spool', join(dir, 'spool'), '--logs', join(dir, 'logs'), 'foreground'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
    uid,
    gid,
    cwd: dir,
    env: { ...process.env, HOME: dir },
  });
  const url = `http://${ip}:${http}/api/status`;
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(url, { method: 'POST', body: '{}' });
      const t = await r.text();
      if (r.status === 200 && t.includes('started')) return { domain, ip, c2s, http, dir, node, proc, uid, gid };
    } catch {
      /* not yet */
    }
    if (proc.exitCode !== null) throw new Error(`ejabberd ${name} exited with ${proc.exitCode} (logs in ${join(dir, 'logs')})`);
    await sleep(100);
  }
  throw new Error(`ejabberd ${name} did not come up`);
}

function beamPid(node: string): number {
  const out = execFileSync('pgrep', ['-f', `beam.smp.*${node.split('@')[0]}`], { encoding: 'utf8' }).trim().split('\n')[0];
  return Number(out);
}

async function stopEj(n: EjNode): Promise<void> {
  try {
    execFileSync(EJABBERDCTL, ['--config-dir', n.dir, 'stop'], { stdio: 'ignore', timeout: 30_000, uid: n.uid, gid: n.gid, cwd: n.dir, env: { ...process.env, HOME: n.dir } });
  } catch {
    /* kill below */
  }
  for (let i = 0; i < 100 && n.proc.exitCode === null; i++) await sleep(100);
  try {
    process.kill(-n.proc.pid!, 'SIGKILL');
  } catch {
    /* gone */
  }
  try {
    process.kill(beamPid(n.node), 'SIGKILL');
  } catch {
    /* gone */
  }
}

async function ejRegister(n: EjNode, user: string): Promise<void> {
  const r = await fetch(`http://${n.ip}:${n.http}/api/register`, { method: 'POST', body: JSON.stringify({ user, host: n.domain, password: 'benchmark password' }) });
  const t = await r.text();
  if (r.status !== 200 && !t.includes('already')) throw new Error(`ejabberd register ${user}: ${r.status} ${t}`);
}

/**
 * An authenticated XMPP session; with `presence` (the pairs) it is also available. The idle
 * connections send no presence: with 16 users, every presence would go to all of that user's
 * other resources (O(n²) stanzas that only load the load generator), and an authenticated
 * intertalk socket announces nothing either.
 */
async function xmppConnect(n: EjNode, user: string, resource: string, presence = true) {
  // PLAIN (the server offers nothing else, see ejConfig); @xmpp/client would not pick it by itself
  // on a connection without TLS, so the mechanism is named here.
  const credentials = async (authenticate: (c: { username: string; password: string }, mechanism: string) => Promise<void>) => authenticate({ username: user, password: 'benchmark password' }, 'PLAIN');
  const c = xmppClient({ service: `xmpp://${n.ip}:${n.c2s}`, domain: n.domain, credentials, resource });
  c.on('error', () => undefined);
  // A failed connection attempt must not be retried behind our back.
  (c as unknown as { reconnect?: { stop(): void } }).reconnect?.stop();
  try {
    await c.start();
    if (presence) await c.send(xml('presence'));
  } catch (err) {
    await stopXmpp(c);
    throw err;
  }
  return c;
}

/** Ends the stream (and its socket) within 5 s. */
async function stopXmpp(c: Awaited<ReturnType<typeof xmppConnect>>): Promise<void> {
  await Promise.race([c.stop().catch(() => undefined), sleep(5000)]);
}

/** ejabberd: senders on `a`, receivers on `b` (the same node for the local figures). */
export async function ejabberd(base: string, federated: boolean): Promise<System> {
  ensureEjabberd();
  const unguard = guardXmppClient();
  const s2s = await freePort();
  // The two servers' domains are their loopback addresses (an IP literal is a valid XMPP
  // domain): ejabberd's s2s resolver asks DNS for SRV records, then libc's getaddrinfo — it never
  // reads Erlang's inetrc, so names mapped there came back remote-server-not-found.
  const a = await startEj(base, 'ejbencha', '127.0.0.1', '127.0.0.1', s2s);
  const b = federated ? await startEj(base, 'ejbenchb', '127.0.0.2', '127.0.0.2', s2s) : a;
  const registered = new Set<string>();
  const reg = async (n: EjNode, u: string) => {
    const key = `${u}@${n.domain}`;
    if (!registered.has(key)) {
      await ejRegister(n, u);
      registered.add(key);
    }
  };
  let conn = 0;
  return {
    name: 'ejabberd',
    async pairs(count) {
      const senders: Endpoint[] = [];
      const receivers: Endpoint[] = [];
      const to: string[] = [];
      for (let k = 0; k < count; k++) {
        await reg(a, `s${k}`);
        await reg(b, `r${k}`);
        const s = await xmppConnect(a, `s${k}`, `bench${++conn}`);
        const r = await xmppConnect(b, `r${k}`, `bench${++conn}`);
        let fn: ((t: string) => void) | null = null;
        r.on('stanza', (st) => {
          if (!st.is('message') || !fn) return;
          const body = st.getChildText('body');
          if (body !== null) fn(body);
        });
        const from = `s${k}@${a.domain}`;
        s.on('stanza', (st) => {
          if (st.is('message') && st.attrs.type === 'error') log(`ejabberd error for ${from}: ${st.toString().slice(0, 200)}`);
        });
        let id = 0;
        senders.push({ send: (rcpt, text) => void s.send(xml('message', { to: rcpt, type: 'chat', id: `m${++id}` }, xml('body', {}, text))).catch(() => undefined), onText: () => undefined, close: () => stopXmpp(s) });
        receivers.push({ send: () => undefined, onText: (f) => (fn = f), close: () => stopXmpp(r) });
        to.push(`r${k}@${b.domain}`);
      }
      return { senders, receivers, to };
    },
    async idle(count) {
      const USERS = 16;
      for (let u = 0; u < USERS; u++) await reg(a, `idle${u}`);
      const clients: Array<Awaited<ReturnType<typeof xmppConnect>>> = [];
      let ok = 0;
      let next = 0;
      const worker = async () => {
        while (next < count) {
          const i = next++;
          try {
            clients.push(await xmppConnect(a, `idle${i % USERS}`, `idle${i}`, false));
            ok++;
          } catch {
            /* counted as not ok */
          }
        }
      };
      await Promise.all(Array.from({ length: 128 }, worker));
      return { ok, close: async () => void (await Promise.all(clients.map(stopXmpp))) };
    },
    pid: () => beamPid(a.node),
    async stop() {
      await stopEj(a);
      if (b !== a) await stopEj(b);
      unguard();
    },
  };
}

/**
 * @xmpp/client answers some stanzas (pings, stream errors) on promises nobody awaits; when the
 * socket is already gone that rejects with "Cannot read properties of null (reading 'write')"
 * and, unhandled, would end the whole bench (it did, in the idle phase). Such a rejection is a
 * connection the load generator lost, not a server fault: it is counted and logged once. Any
 * other error still ends the run. Returns the function that removes the guard.
 */
function guardXmppClient(): () => void {
  let swallowed = 0;
  const fromXmpp = (e: unknown) => e instanceof Error && /[\\/]@xmpp[\\/]/.test(e.stack ?? '');
  const onRejection = (e: unknown) => {
    if (!fromXmpp(e)) throw e;
    if (swallowed++ === 0) log(`ejabberd: the XMPP client lost a connection (${(e as Error).message}); such errors are counted, not fatal`);
  };
  const onException = (e: unknown) => {
    if (fromXmpp(e)) return onRejection(e);
    process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
    if (swallowed > 1) log(`ejabberd: ${swallowed} lost-connection errors in the XMPP client in all`);
  };
}

export type { TestCa };
