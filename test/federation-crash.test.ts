// Crash safety of federation: the sending provider (a.test) runs as a real `intertalk serve` child
// over TLS and is killed with SIGKILL while its outbox delivers to two peers (b.test, c.test);
// after a restart on the same database every accepted message reaches every peer exactly once, in
// the order sent, and the recipients' WebSockets (connected throughout) see each one exactly once.
//
// The peers run in this process (their databases, buses and sockets are inspected directly).
// a.test reaches each through a TCP proxy that delays a.test's bytes, so that deliveries are slow
// enough for a kill to land mid-delivery; the proxy still hands the peer what a.test had sent
// before dying, so a peer may accept a request whose answer a.test never saw (the re-send path).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCa, type TestCa } from '../src/devnet/ca.js';
import { loadConfig } from '../src/config/config.js';
import { Provider } from '../src/provider.js';
import { federation } from '../src/federation/service.js';
import { MAX_BATCH_MESSAGES } from '../src/federation/batch.js';
import { openStorage, type Storage } from '../src/storage/db.js';
import { databaseUrl } from './helpers/database.js';
import { freePort, runCli, type Child } from './helpers/process.js';
import { DelayProxy, startServeTls, TlsClient, TlsSocket, waitFor } from './helpers/crash.js';

/** a.test's INTERTALK_FEDERATION_PIPELINE (the default): batches in flight per peer. */
const PIPELINE_DEPTH = 4;
const ALICE = 'alice@a.test';
const PASSWORD = 'correct horse battery';
const PEERS = [
  { domain: 'b.test', user: 'bob' },
  { domain: 'c.test', user: 'carol' },
] as const;
const RECIPIENTS = [ALICE, ...PEERS.map((p) => `${p.user}@${p.domain}`)];

interface Peer {
  domain: string;
  provider: Provider;
  proxy: DelayProxy;
  /** The local recipient's socket, open for the whole file (reference "bare" mode). */
  socket: TlsSocket;
}

interface Row {
  id: string;
  seq: number;
  state: string;
}

describe('federation: SIGKILL of the sending provider', { timeout: 150_000 }, () => {
  let dir: string;
  let ca: TestCa;
  let client: TlsClient;
  const peers: Peer[] = [];
  let pa: number;
  let envA: Record<string, string>;
  /** A second connection to a.test's database (SQLite file or PostgreSQL), fine while a.test runs or after it died. */
  let dbA: Storage | null = null;
  let a: Child | null = null;

  const note = (s: string) => process.stderr.write(`# ${s}\n`);
  const peer = (domain: string): Peer => peers.find((p) => p.domain === domain)!;

  /** alice's messages as stored by a peer, in the peer's seq order. */
  async function storedOn(p: Peer): Promise<Array<{ id: string; message: string }>> {
    const rows = await p.provider.ctx.storage.db.selectFrom('messages').select(['id', 'body']).where('sender', '=', ALICE).orderBy('seq', 'asc').execute();
    return rows.map((r) => ({ id: r.id, message: (JSON.parse(r.body) as { message: string }).message }));
  }
  async function countOn(p: Peer): Promise<number> {
    const r = await p.provider.ctx.storage.db.selectFrom('messages').select((eb) => eb.fn.countAll<number>().as('n')).where('sender', '=', ALICE).executeTakeFirstOrThrow();
    return Number(r.n);
  }
  /** Messages from alice that reached the peer's socket, in arrival order. */
  const framesOn = (p: Peer): string[] => p.socket.json().filter((m) => m.from === ALICE).map((m) => m.id as string);
  /** Duplicates the peer acknowledged (200) without storing them again. */
  async function duplicatesOn(p: Peer): Promise<number> {
    const m = await p.provider.ctx.metrics.federationInbound.get();
    return m.values.find((v) => v.labels.status === '200')?.value ?? 0;
  }

  /** alice's messages on a.test with their outbox state for one destination, in a.test's order. */
  const outboxA = (domain: string): Promise<Row[]> =>
    dbA!.db
      .selectFrom('messages as m')
      .innerJoin('outbox as o', 'o.message_seq', 'm.seq')
      .select(['m.id', 'm.seq', 'o.state'])
      .where('m.sender', '=', ALICE)
      .where('o.destination', '=', domain)
      .orderBy('m.seq')
      .execute();
  const leasesA = async () =>
    (await dbA!.db.selectFrom('federation_peers').select(['domain', 'lease_owner', 'lease_until', 'backoff_until', 'failures', 'last_error']).orderBy('domain').execute()).map((r) => ({ ...r, now: Date.now() }));
  const undeliveredA = async () => {
    let n = 0;
    for (const p of PEERS) n += (await outboxA(p.domain)).filter((r) => r.state !== 'delivered').length;
    return n;
  };
  /** For failure messages: a.test's leases, and whether it is alive and what it printed. */
  const stateA = async (): Promise<string> =>
    `leases ${JSON.stringify(await leasesA())}; ${a ? `a.test (exit: ${a.proc.exitCode ?? a.proc.signalCode ?? 'none, running'}) printed: ${a.output().slice(-3000)}` : 'a.test is not running'}`;

  async function startA(): Promise<Child> {
    assert.equal(a, null, 'a.test is already running');
    a = await startServeTls(envA, { port: pa, servername: 'a.test', client, caPath: ca.caCertPath });
    return a;
  }
  async function killA(): Promise<void> {
    const c = a;
    assert.ok(c, 'a.test is not running');
    c.proc.kill('SIGKILL');
    assert.equal((await c.exited).signal, 'SIGKILL');
    a = null;
  }
  async function token(base: string, servername: string, username: string): Promise<string> {
    const r = await client.request(base, servername, 'POST', '/token', { form: { grant_type: 'password', username, password: PASSWORD } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.access_token as string;
  }

  /** After everything was delivered: each peer holds exactly a.test's messages, once, in order. */
  async function assertConverged(): Promise<void> {
    for (const p of peers) {
      const ids = (await outboxA(p.domain)).map((r) => r.id);
      const stored = await storedOn(p);
      assert.equal(new Set(stored.map((m) => m.id)).size, stored.length, `no duplicates on ${p.domain}`);
      assert.deepEqual(stored.map((m) => m.id), ids, `${p.domain} holds every message of a.test once, in a.test’s order`);
      await waitFor(() => framesOn(p).length >= ids.length, 5000, () => `the socket on ${p.domain} has ${framesOn(p).length} of ${ids.length}`);
      assert.deepEqual(framesOn(p), ids, `the socket on ${p.domain} saw each message exactly once, in order`);
      assert.equal(p.socket.closed, null, `the socket on ${p.domain} stayed open`);
    }
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'intertalk-crash-'));
    ca = await makeCa(dir);
    client = new TlsClient(ca.caCert);
    pa = await freePort();
    const certA = await ca.issue(['a.test']);

    const resolveA = [`a.test=127.0.0.1:${pa}`];
    for (const { domain, user } of PEERS) {
      const port = await freePort();
      const cert = await ca.issue([domain]);
      const env = {
        INTERTALK_DOMAIN: domain,
        INTERTALK_LISTEN: `127.0.0.1:${port}`,
        INTERTALK_PUBLIC_URL: `https://${domain}:${port}`,
        INTERTALK_DATABASE: await databaseUrl(dir, `${domain}.db`),
        INTERTALK_TLS_CERT: cert.certPath,
        INTERTALK_TLS_KEY: cert.keyPath,
        INTERTALK_RESOLVE: `a.test=127.0.0.1:${pa},${domain}=127.0.0.1:${port}`,
        INTERTALK_LOG_LEVEL: 'silent',
        INTERTALK_FEDERATION_SWEEP: '300ms',
      };
      const provider = await Provider.create(loadConfig(env), { federation: federation({ ca: ca.caCert }), defaultMetrics: false });
      await provider.start();
      await provider.ctx.accounts.create(user, PASSWORD);
      const proxy = new DelayProxy(port, 15);
      resolveA.push(`${domain}=127.0.0.1:${await proxy.port}`);
      const base = `https://127.0.0.1:${port}`;
      const socket = await TlsSocket.open(`wss://127.0.0.1:${port}/messages`, domain, ca.caCert, await token(base, domain, user));
      await waitFor(() => provider.realtime.connectionCount === 1, 5000, () => `${user} is not connected`);
      peers.push({ domain, provider, proxy, socket });
    }

    envA = {
      INTERTALK_DOMAIN: 'a.test',
      INTERTALK_PUBLIC_URL: `https://a.test:${pa}`,
      INTERTALK_DATABASE: await databaseUrl(dir, 'a.db'),
      INTERTALK_TLS_CERT: certA.certPath,
      INTERTALK_TLS_KEY: certA.keyPath,
      // a.test reaches the peers only through the slow proxies.
      INTERTALK_RESOLVE: resolveA.join(','),
      INTERTALK_FEDERATION_SWEEP: '300ms',
      NODE_EXTRA_CA_CERTS: ca.caCertPath,
    };
    const add = await runCli(['user', 'add', 'alice'], envA, `${PASSWORD}\n`);
    assert.equal(add.code, 0, add.stderr);
    dbA = await openStorage(envA.INTERTALK_DATABASE!); // the CLI has created the schema
  });

  after(async () => {
    if (a) {
      a.proc.kill('SIGKILL');
      await a.exited;
    }
    for (const p of peers) {
      p.socket.close();
      await p.proxy.close();
      await p.provider.destroy();
    }
    await client?.close();
    await dbA?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('kill -9 while 200 messages are being delivered: after a restart every peer holds each exactly once, in order', { timeout: 60_000 }, async () => {
    const N = 200;
    const b = peer('b.test');
    const c = peer('c.test');
    await startA();
    const alice = await token(a!.url, 'a.test', 'alice');
    // The proxies hold a.test's bytes while alice sends: every message is accepted (201) before
    // the first one reaches a peer.
    for (const p of peers) p.proxy.pause();
    const sent: string[] = [];
    const sendStart = Date.now();
    for (let i = 0; i < N; i++) {
      const r = await client.request(a!.url, 'a.test', 'POST', '/messages', { token: alice, json: { to: RECIPIENTS, message: `burst ${i}` } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      sent.push(r.body.id as string);
    }
    const sendMs = Date.now() - sendStart;
    for (const p of peers) assert.equal(await countOn(p), 0);

    // Kill mid-delivery at the worst moment: b.test has just committed message #k and not yet
    // answered, so a.test cannot know that #k was delivered and must send it again.
    const k = 10 + Math.floor(Math.random() * (N - 50));
    const child = a!;
    const unsubscribe = b.provider.ctx.bus.subscribe((e) => {
      if (e.type === 'message' && JSON.parse(e.json).message === `burst ${k}`) child.proc.kill('SIGKILL');
    });
    for (const p of peers) p.proxy.resume();
    const exit = await child.exited;
    unsubscribe();
    assert.equal(exit.signal, 'SIGKILL');
    a = null;
    await new Promise((r) => setTimeout(r, 300)); // what is still in a proxy lands on its peer
    const onB = await countOn(b);
    const onC = await countOn(c);
    const rowsB = await outboxA('b.test');
    const rowsC = await outboxA('c.test');
    const doneB = rowsB.filter((r) => r.state === 'delivered').length;
    const doneC = rowsC.filter((r) => r.state === 'delivered').length;
    const dupsBefore = [await duplicatesOn(b), await duplicatesOn(c)];
    note(`burst: ${N} sent in ${sendMs} ms; killed when b.test stored #${k}: b.test has ${onB} (a.test marked ${doneB} delivered), c.test has ${onC} (a.test marked ${doneC}); ${JSON.stringify(await leasesA())}`);

    // Nothing was lost by a.test, and both queues stopped mid-way, in order.
    assert.equal(rowsB.length, N, 'every accepted message is queued for b.test');
    assert.equal(rowsC.length, N, 'every accepted message is queued for c.test');
    // Messages travel in batches (batch/1): b.test may hold more than #0..#k, but always a
    // prefix; a.test never saw the answer for the batch holding #k.
    assert.ok(onB >= k + 1, `b.test holds at least #0..#k (${onB})`);
    assert.deepEqual((await storedOn(b)).map((m) => m.id), sent.slice(0, onB), 'b.test holds a prefix of the messages, in order');
    assert.ok(doneB <= k, `a.test never saw b.test accept #k (${doneB} marked delivered)`);
    assert.deepEqual(rowsB.map((r) => r.state), [...Array<string>(doneB).fill('delivered'), ...Array<string>(N - doneB).fill('queued')], 'a.test delivers to b.test in order');
    // pipeline/1: up to INTERTALK_FEDERATION_PIPELINE (default 4) batches are in flight at once.
    assert.ok(onC >= doneC && onC - doneC <= PIPELINE_DEPTH * MAX_BATCH_MESSAGES, `c.test is at most the batches in flight ahead of a.test's bookkeeping (${onC} vs ${doneC})`);
    assert.deepEqual(rowsC.map((r) => r.state), [...Array<string>(doneC).fill('delivered'), ...Array<string>(N - doneC).fill('queued')], 'a.test delivers to c.test in order');

    const t0 = Date.now();
    await startA();
    await waitFor(async () => (await undeliveredA()) === 0, 45_000, async () => `after the restart a.test still has ${await undeliveredA()} undelivered; ${await stateA()}`);
    const resumeMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 500)); // a late duplicate would show up now
    const dups = [(await duplicatesOn(b)) - dupsBefore[0]!, (await duplicatesOn(c)) - dupsBefore[1]!];
    note(`burst: everything delivered ${resumeMs} ms after the restart began; duplicates acknowledged: b.test ${dups[0]}, c.test ${dups[1]}`);

    assert.ok(dups[0]! >= 1, 'a.test sent #k to b.test again, and b.test acknowledged it as a duplicate');
    for (const p of peers) {
      const stored = await storedOn(p);
      assert.deepEqual(stored.map((m) => m.id), sent, `${p.domain} stored each message once, in the order sent`);
      assert.deepEqual(stored.map((m) => m.message), sent.map((_, i) => `burst ${i}`));
    }
    await assertConverged();
  });

  test('kill -9 at random moments, also while sending: every accepted message reaches every peer once, in order', { timeout: 90_000 }, async () => {
    const ROUNDS = 3;
    const accepted: string[] = []; // 201 seen, in send order
    const inFlight: string[] = []; // the request died with a.test: it may or may not have been stored
    const isRound = (id: string) => id.startsWith('round.'); // generated ids are base64url: no '.'
    if (!a) await startA();
    for (let round = 0; round < ROUNDS; round++) {
      // The previous a.test died holding its delivery leases: wait until this one has taken over,
      // so that the kill below can land while this instance delivers.
      const base = await Promise.all(peers.map(countOn));
      await waitFor(
        async () => (await undeliveredA()) === 0 || (await Promise.all(peers.map(countOn))).some((n, i) => n > base[i]!),
        20_000,
        async () => `round ${round}: a.test does not resume delivering; ${await stateA()}`,
      );
      const alice = await token(a!.url, 'a.test', 'alice');
      let stop = false;
      const sender = (async () => {
        for (let i = 0; !stop; i++) {
          const id = `round.${round}.${i}`;
          try {
            const r = await client.request(a!.url, 'a.test', 'POST', '/messages', { token: alice, json: { id, to: RECIPIENTS, message: `round ${round} #${i}` }, timeoutMs: 5000 });
            assert.equal(r.status, 201, JSON.stringify(r.body));
            accepted.push(id);
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            inFlight.push(id);
            return;
          }
          await new Promise((r) => setTimeout(r, 3));
        }
      })();
      // A random moment: while alice sends, or after that while the outboxes drain.
      const killWhileSending = Math.random() < 0.5;
      const sendFor = 50 + Math.floor(Math.random() * 400);
      await new Promise((r) => setTimeout(r, sendFor));
      let drainFor = 0;
      if (!killWhileSending) {
        stop = true;
        await sender;
        drainFor = Math.floor(Math.random() * 400);
        await new Promise((r) => setTimeout(r, drainFor));
      }
      const counts = await Promise.all(peers.map(countOn));
      await killA();
      stop = true;
      await sender;
      const queued = await Promise.all(PEERS.map(async (p) => (await outboxA(p.domain)).filter((r) => r.state === 'queued').length));
      note(`round ${round}: killed ${killWhileSending ? `while sending, after ${sendFor} ms` : `${drainFor} ms after sending for ${sendFor} ms`}; peers had ${counts.join('/')}, a.test had ${queued.join('/')} queued`);
      await startA();
    }

    const t0 = Date.now();
    await waitFor(async () => (await undeliveredA()) === 0, 30_000, async () => `a.test still has ${await undeliveredA()} undelivered; ${await stateA()}`);
    await new Promise((r) => setTimeout(r, 500));
    note(`random: ${accepted.length} accepted, ${inFlight.length} in flight at a kill; all delivered ${Date.now() - t0} ms after the last restart; duplicates acknowledged: ${(await Promise.all(peers.map(duplicatesOn))).join('/')}`);

    // a.test lost nothing it accepted, kept the order of sending, and holds nothing else but
    // requests that were in flight at a kill.
    const acceptedSet = new Set(accepted);
    for (const p of PEERS) {
      const ids = (await outboxA(p.domain)).map((r) => r.id);
      assert.deepEqual(ids.filter((id) => acceptedSet.has(id)), accepted, `a.test kept every accepted message for ${p.domain}, in the order sent`);
      for (const id of ids.filter(isRound)) assert.ok(acceptedSet.has(id) || inFlight.includes(id), `${id} was neither accepted nor in flight`);
    }
    // Every peer holds exactly what a.test holds: nothing lost, nothing twice, same order.
    await assertConverged();
  });
});
