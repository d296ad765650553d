// Several instances of ONE provider (INTERTALK_REDIS): three `intertalk serve` children with the
// same domain on one PostgreSQL database and one Redis, each on its own port.
//
// Checked: live delivery across instances in seq order and exactly once (interleaved bursts from
// other instances; a client that keeps resuming with `since` while instances commit concurrently
// never misses a message), shared login throttling, a session ended on one instance closing its
// socket on another, identical signing keys, the outbox shared by all instances delivering to a
// second provider exactly once and in order per sender, a Redis outage, and SIGKILL of the
// instance that is delivering, under load.
//
// Needs PostgreSQL and Redis: runs when INTERTALK_TEST_DATABASE selects PostgreSQL (`postgres`, or
// a postgres:// URL of the server to create a fresh database on), and then FAILS if either is
// unreachable; skipped otherwise. Redis: INTERTALK_TEST_REDIS_URL (default redis://127.0.0.1:6379).
// The ordering core (SeqOrderer) is unit-tested below without either.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { http, login, register, Socket, startProvider, type Started } from './helpers/harness.js';
import { freePort, startServe, type Child } from './helpers/process.js';
import { assertPostgres, assertRedis, createDatabase, pool, postgresAdminUrl, query, randomName, redisTestUrl, sleep, TcpProxy } from './helpers/cluster.js';
import { federation } from '../src/federation/service.js';
import { SeqOrderer, type MessageEvent } from '../src/cluster/seq-order.js';
import type { BusEvent } from '../src/bus/bus.js';

const ADMIN_URL = postgresAdminUrl();
const PASSWORD = 'correct horse battery';
const INBOUND = 'intertalk_federation_inbound_requests_total';
const ACCEPTED = 'intertalk_messages_accepted_total';

// ---------------------------------------------------------------------------------------------
// The ordering core, without Redis or PostgreSQL.

describe('SeqOrderer: ordered, exactly-once release with gaps filled from the database', () => {
  function setup(committed: number[], opts: { pollMs?: number } = {}) {
    const db = new Map<number, MessageEvent>();
    const ev = (seq: number): MessageEvent => ({ type: 'message', seq, conversationId: 'c', recipients: ['a@x.test'], json: `{"seq":${seq}}` });
    for (const s of committed) db.set(s, ev(s));
    const out: BusEvent[] = [];
    let queries = 0;
    const o = new SeqOrderer({
      source: {
        maxSeq: async () => Math.max(0, ...db.keys()),
        committedAfter: async (after, upTo, limit) => {
          queries++;
          return [...db.values()].filter((e) => e.seq > after && e.seq <= upTo).sort((a, b) => a.seq - b.seq).slice(0, limit);
        },
      },
      deliver: (e) => out.push(e),
      gapWaitMs: 20,
      pollMs: opts.pollMs ?? 0,
      pageSize: 2,
    });
    const seqs = () => out.filter((e) => e.type === 'message').map((e) => (e as MessageEvent).seq);
    return { o, db, ev, out, seqs, queries: () => queries };
  }

  test('out-of-order arrival is released in seq order, each once, without the database', async () => {
    const t = setup([10]);
    await t.o.init();
    for (const s of [11, 12, 13]) t.db.set(s, t.ev(s));
    t.o.push(t.ev(12));
    t.o.push(t.ev(13));
    assert.deepEqual(t.seqs(), []);
    t.o.push(t.ev(11));
    t.o.push(t.ev(12)); // a duplicate (e.g. filled earlier)
    assert.deepEqual(t.seqs(), [11, 12, 13]);
    assert.equal(t.queries(), 0);
    t.o.stop();
  });

  test('a burnt seq (rolled back, or an idempotent retry) is skipped after the database says so', async () => {
    const t = setup([10]);
    await t.o.init();
    t.db.set(12, t.ev(12)); // 11 never committed
    t.o.push(t.ev(12));
    await sleep(60);
    assert.deepEqual(t.seqs(), [12]);
    t.o.stop();
  });

  test('an event lost on the way (publisher killed after COMMIT) is filled from the database, in place', async () => {
    const t = setup([10]);
    await t.o.init();
    for (const s of [11, 12, 13, 14, 15]) t.db.set(s, t.ev(s));
    t.o.push(t.ev(15)); // 11..14 committed, their events lost or late
    await sleep(60);
    assert.deepEqual(t.seqs(), [11, 12, 13, 14, 15]);
    t.o.push(t.ev(12)); // the late event: dropped
    assert.deepEqual(t.seqs(), [11, 12, 13, 14, 15]);
    t.db.set(16, t.ev(16));
    t.o.push(t.ev(16));
    assert.deepEqual(t.seqs(), [11, 12, 13, 14, 15, 16]);
    t.o.stop();
  });

  test('a lost event with nothing after it is released by the poll; catchUp() fills at once', async () => {
    const t = setup([10], { pollMs: 30 });
    await t.o.init();
    t.db.set(11, t.ev(11));
    await sleep(150);
    assert.deepEqual(t.seqs(), [11]);
    t.db.set(12, t.ev(12));
    t.db.set(13, t.ev(13));
    await t.o.catchUp();
    assert.deepEqual(t.seqs(), [11, 12, 13]);
    t.o.stop();
  });

  test('delivery events wait for their message; other events pass at once', async () => {
    const t = setup([10]);
    await t.o.init();
    t.db.set(11, t.ev(11));
    t.db.set(12, t.ev(12));
    const delivery = (seq: number): BusEvent => ({ type: 'delivery', sender: 's@x.test', messageId: `m${seq}`, seq, conversationId: 'c', destination: 'y.test', state: 'queued', error: null, insecure: false });
    t.o.push(t.ev(12));
    t.o.push(delivery(12));
    t.o.push({ type: 'session-revoked', sessionId: 's1' });
    assert.deepEqual(t.out.map((e) => e.type), ['session-revoked']);
    t.o.push(t.ev(11));
    assert.deepEqual(t.out.map((e) => e.type), ['session-revoked', 'message', 'message', 'delivery']);
    t.o.stop();
  });

  test('events published before init() are kept and ordered after it', async () => {
    const t = setup([10, 11, 12]);
    t.o.push(t.ev(12)); // before init, and already history when init reads maxSeq (12)
    const init = t.o.init();
    t.db.set(13, t.ev(13)); // commits while init waits for its answer
    t.o.push(t.ev(13));
    await init;
    assert.deepEqual(t.seqs(), [13]);
    t.o.stop();
  });
});

// ---------------------------------------------------------------------------------------------
// Three real instances.

interface Inst {
  name: string;
  port: number;
  url: string;
  wsUrl: string;
  child: Child | null;
  /** This instance's way to the remote provider (delays its deliveries; tells when one is in flight). */
  toRemote: TcpProxy;
  dead: boolean;
}

interface U {
  name: string;
  address: string;
  token: string;
}

function messagesOf(s: Socket): any[] {
  return s.json().filter((f) => f && f.type === 'message').map((f) => f.message);
}

/** Exactly once and in strictly increasing seq order; returns the ids. */
function assertOrderedOnce(list: any[], what: string): string[] {
  const ids = list.map((m) => m.id as string);
  assert.equal(new Set(ids).size, ids.length, `${what}: a message arrived twice: ${ids.filter((x, i) => ids.indexOf(x) !== i).slice(0, 5).join(', ')}`);
  for (let i = 1; i < list.length; i++) assert.ok(list[i].seq > list[i - 1].seq, `${what}: seq ${list[i].seq} after ${list[i - 1].seq}`);
  return ids;
}

// With the switch on, unreachable services are a test failure (not a skip, not only a hook error).
// Defined only in the PostgreSQL run (npm run test:postgres), where PostgreSQL and Redis must be up.
if (ADMIN_URL) describe('multi-instance prerequisites', () => {
  test('PostgreSQL and Redis are reachable', async () => {
    await assertPostgres(ADMIN_URL!);
    await assertRedis(redisTestUrl());
  });
});

if (ADMIN_URL) describe('several instances of one provider (PostgreSQL + Redis)', { timeout: 180_000 }, () => {
  const note = (s: string) => process.stderr.write(`# ${s}\n`);
  const domain = `m${randomName(6)}.test`;
  let db: { name: string; url: string; drop(): Promise<void> } | null = null;
  let remote: Started | null = null;
  let lb: TcpProxy;
  let redisProxy: TcpProxy;
  const insts: Inst[] = [];
  const sockets: Socket[] = [];
  let rita: { address: string; token: string };

  const live = () => insts.filter((i) => !i.dead);
  const addr = (name: string) => `${name}@${domain}`;

  async function newUser(name: string, on: Inst): Promise<U> {
    await register(on.url, name, PASSWORD);
    const t = await login(on.url, name, PASSWORD);
    return { name, address: t.address, token: t.access_token };
  }

  async function openRich(on: Inst | string, token: string, since?: number): Promise<Socket> {
    const wsUrl = typeof on === 'string' ? on : on.wsUrl;
    const s = await Socket.open(wsUrl, '/messages', JSON.stringify({ token, ...(since !== undefined ? { since } : {}) }));
    sockets.push(s);
    await s.until((f) => f.some((x) => x.type === 'ready'), 10_000);
    return s;
  }

  /** POST /messages; status 0 when the instance could not be reached (killed). */
  async function post(on: Inst, u: U, to: string[], id: string, text = id): Promise<number> {
    try {
      const r = await http(on.url, 'POST', '/messages', { token: u.token, json: { id, to: [u.address, ...to], message: text } });
      if (r.status !== 201 && r.status !== 0) note(`POST on ${on.name} → ${r.status} ${JSON.stringify(r.body)}`);
      return r.status;
    } catch {
      return 0;
    }
  }

  async function dbMax(): Promise<number> {
    const [row] = await query<{ m: number | null }>(db!.url, 'select max(seq)::int as m from messages');
    return Number(row?.m ?? 0);
  }

  /** Our database's messages from these senders, in seq order. */
  async function stored(senders: string[]): Promise<Array<{ seq: number; id: string; sender: string }>> {
    const rows = await query<{ seq: string; id: string; sender: string }>(db!.url, 'select seq, id, sender from messages where sender = any($1) order by seq', [senders]);
    return rows.map((r) => ({ seq: Number(r.seq), id: r.id, sender: r.sender }));
  }

  /** The remote provider's copies of messages from these senders, in its seq order. */
  async function remoteStored(senders: string[]): Promise<Array<{ id: string; sender: string }>> {
    return remote!.provider.ctx.storage.db.selectFrom('messages').select(['id', 'sender']).where('sender', 'in', senders).orderBy('seq', 'asc').execute();
  }

  /** Inbound federation requests answered with `status` (all of them if omitted). */
  async function remoteInbound(status?: string): Promise<number> {
    const metric = remote!.provider.ctx.metrics.registry.getSingleMetric(INBOUND);
    const data = await metric!.get();
    return data.values.filter((v) => status === undefined || String(v.labels.status) === status).reduce((a, v) => a + v.value, 0);
  }

  /** Messages the peer stored from other providers (a batch stores several per request). */
  async function remoteAccepted(): Promise<number> {
    const metric = remote!.provider.ctx.metrics.registry.getSingleMetric(ACCEPTED);
    const data = await metric!.get();
    return data.values.filter((v) => String(v.labels.origin) === 'federation').reduce((a, v) => a + v.value, 0);
  }

  async function waitUntil<T>(what: () => string, fn: () => Promise<T | false | null | undefined> | T | false | null | undefined, timeoutMs: number, everyMs = 50): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await fn();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
      await sleep(everyMs);
    }
  }

  before(async () => {
    // Loud failures, not skips: the switch says PostgreSQL and Redis are meant to be here.
    const adminUrl = ADMIN_URL!;
    const redisUrl = redisTestUrl();
    await assertPostgres(adminUrl);
    await assertRedis(redisUrl);
    db = await createDatabase(adminUrl);
    note(`database ${db.name}, domain ${domain}`);

    const redisPort = Number(new URL(redisUrl).port || 6379);
    const redisHost = new URL(redisUrl).hostname;
    assert.ok(['127.0.0.1', 'localhost'].includes(redisHost), 'the Redis outage check proxies a local Redis');
    redisProxy = new TcpProxy(() => [redisPort]);
    const redisViaProxy = new URL(redisUrl);
    redisViaProxy.hostname = '127.0.0.1';
    redisViaProxy.port = String(await redisProxy.port);

    const ports = [await freePort(), await freePort(), await freePort()];
    lb = new TcpProxy(() => live().map((i) => i.port));
    const lbPort = await lb.port;
    const rPort = await freePort();

    // The receiving provider: in this process, plain http, another domain.
    remote = await startProvider(
      {
        INTERTALK_DOMAIN: 'r.test',
        INTERTALK_LISTEN: `127.0.0.1:${rPort}`,
        INTERTALK_PUBLIC_URL: `http://r.test:${rPort}`,
        INTERTALK_RESOLVE: `${domain}=127.0.0.1:${lbPort}`,
        INTERTALK_INSECURE_PEERS: domain,
        INTERTALK_FEDERATION_SWEEP: '500ms',
      },
      { federation: federation(), defaultMetrics: false },
    );
    await remote.provider.ctx.accounts.create('rita', PASSWORD);
    const rt = await login(remote.url, 'rita', PASSWORD);
    rita = { address: rt.address, token: rt.access_token };

    for (const [k, name] of ['A', 'B', 'C'].entries()) {
      const toRemote = new TcpProxy(() => [rPort]);
      await toRemote.port;
      insts.push({ name, port: ports[k]!, url: `http://127.0.0.1:${ports[k]}`, wsUrl: `ws://127.0.0.1:${ports[k]}`, child: null, toRemote, dead: false });
    }
    const envFor = async (i: Inst): Promise<Record<string, string>> => ({
      INTERTALK_DOMAIN: domain,
      INTERTALK_DATABASE: db!.url,
      INTERTALK_REDIS: redisViaProxy.toString(),
      INTERTALK_PUBLIC_URL: `http://${domain}:${lbPort}`,
      INTERTALK_RESOLVE: `r.test=127.0.0.1:${await i.toRemote.port}`,
      INTERTALK_INSECURE_PEERS: 'r.test',
      INTERTALK_FEDERATION_SWEEP: '500ms',
      INTERTALK_FEDERATION_TIMEOUT: '5s',
      INTERTALK_REGISTRATION_RATE: '100000',
      INTERTALK_LOG_LEVEL: 'warn',
    });
    // A first (creates the schema and the signing key), then B and C together.
    const [a, b, c] = insts as [Inst, Inst, Inst];
    a.child = await startServe(await envFor(a), a.port);
    [b.child, c.child] = await Promise.all([startServe(await envFor(b), b.port), startServe(await envFor(c), c.port)]);
  });

  after(async () => {
    for (const s of sockets) s.close();
    await Promise.all(
      insts.map(async (i) => {
        if (!i.child || i.dead) return;
        i.child.proc.kill('SIGTERM');
        const t = setTimeout(() => i.child!.proc.kill('SIGKILL'), 10_000);
        const ex = await i.child.exited;
        clearTimeout(t);
        if (ex.code !== 0) note(`instance ${i.name} exited with ${JSON.stringify(ex)}; output:\n${i.child.output().slice(-3000)}`);
      }),
    );
    await remote?.stop();
    await Promise.all(insts.map((i) => i.toRemote.close()));
    await lb?.close();
    await redisProxy?.close();
    await db?.drop();
  });

  test('the signing key is the same on every instance (GET /keys)', async () => {
    const keys = await waitUntil(
      () => 'GET /keys to agree',
      async () => {
        const all = await Promise.all(insts.map(async (i) => JSON.stringify((await http(i.url, 'GET', '/keys')).body)));
        return all.every((k) => k === all[0]) && all;
      },
      10_000,
      250,
    );
    const jwks = JSON.parse(keys[0]!);
    assert.ok(Array.isArray(jwks.keys) && jwks.keys.length >= 1, keys[0]);
  });

  test('live delivery: a user on A gets bursts posted on B and C in seq order, exactly once, like every instance', async () => {
    const [A, B, C] = insts as [Inst, Inst, Inst];
    const alice = await newUser('alice', A);
    const bob = await newUser('bob', B);
    const carol = await newUser('carol', C);
    const onA = await openRich(A, alice.token);
    const onB = await openRich(B, alice.token);
    const onC = await openRich(C, alice.token);
    const N = 60;
    const burst = (u: U, on: Inst, other: string) =>
      pool(Array.from({ length: N }, (_, i) => i), 4, async (i) => {
        // Three conversations: alice+u, alice+u+other (a group), alternating.
        const to = i % 2 === 0 ? [alice.address] : [alice.address, other];
        const status = await post(on, u, to, `${u.name}-live-${i}`);
        assert.equal(status, 201);
      });
    await Promise.all([burst(bob, B, carol.address), burst(carol, C, bob.address)]);
    const truth = (await stored([bob.address, carol.address])).map((r) => r.id);
    assert.equal(truth.length, 2 * N);
    for (const [name, s] of [['A', onA], ['B', onB], ['C', onC]] as const) {
      await s.until(() => messagesOf(s).length >= 2 * N, 10_000);
      await sleep(100); // nothing more may come
      const ids = assertOrderedOnce(messagesOf(s), `alice on ${name}`);
      assert.deepEqual(ids, truth, `alice on ${name} sees the database's order`);
    }
    // bob resuming from 0 on A: his own and carol's group messages, in order, once.
    const bobOnA = await openRich(A, bob.token, 0);
    const bobTruth = (await stored([bob.address, carol.address])).filter((r) => r.sender === bob.address || Number(r.id.split('-').pop()) % 2 === 1).map((r) => r.id);
    assert.deepEqual(assertOrderedOnce(messagesOf(bobOnA), 'bob resuming from 0'), bobTruth);
  });

  test('resume with `since` never skips a message while several instances commit concurrently', async () => {
    const [A] = insts as [Inst, Inst, Inst];
    const alice = { name: 'alice', address: addr('alice'), token: (await login(A.url, 'alice', PASSWORD)).access_token };
    const posters = await Promise.all(live().map((i, k) => newUser(`poster${k}`, i)));
    const start = await dbMax();
    const M = 80;
    let posting = true;
    const producing = Promise.all(
      posters.map((u, k) =>
        pool(Array.from({ length: M }, (_, i) => i), 8, async (i) => {
          // Each message goes to a different instance than the last: commits interleave.
          const on = insts[(k + i) % insts.length]!;
          assert.equal(await post(on, u, [alice.address], `${u.name}-resume-${i}`), 201);
        }),
      ),
    ).finally(() => (posting = false));

    // A client that keeps dropping and resuming with its cursor, on a different instance each time.
    const got: any[] = [];
    let cursor = start;
    let rounds = 0;
    const resume = async (on: Inst, holdMs: number) => {
      const s = await openRich(on, alice.token, cursor);
      await sleep(holdMs);
      s.close();
      await s.waitClose(5000);
      const ms = messagesOf(s);
      got.push(...ms);
      if (ms.length > 0) cursor = ms[ms.length - 1].seq;
      rounds++;
    };
    while (posting) await resume(insts[rounds % insts.length]!, 20 + Math.floor(Math.random() * 80));
    await producing;
    const truth = (await stored(posters.map((p) => p.address))).filter((r) => r.seq > start).map((r) => r.id);
    assert.equal(truth.length, posters.length * M);
    // Drain what is left, then compare with the database.
    const last = await openRich(insts[rounds % insts.length]!, alice.token, cursor);
    const seen = () => new Set([...got, ...messagesOf(last)].map((m) => m.id));
    await waitUntil(() => `all ${truth.length} messages (have ${seen().size})`, () => truth.every((id) => seen().has(id)), 10_000);
    got.push(...messagesOf(last));
    const ids = assertOrderedOnce(got, `alice resuming ${rounds} times`);
    assert.deepEqual(ids, truth);
    note(`resumed ${rounds} times while ${truth.length} messages were posted on ${insts.length} instances`);
  });

  test('login throttling is shared: 10 failures spread over the instances → 429 on every instance', async () => {
    const [A] = insts as [Inst, Inst, Inst];
    await register(A.url, 'tim', PASSWORD);
    for (let i = 0; i < 10; i++) {
      const r = await http(insts[i % 3]!.url, 'POST', '/token', { form: { grant_type: 'password', username: 'tim', password: 'not the password' } });
      assert.equal(r.status, 400, `failure ${i + 1} on ${insts[i % 3]!.name}`);
    }
    for (const i of insts) {
      const r = await http(i.url, 'POST', '/token', { form: { grant_type: 'password', username: 'tim', password: PASSWORD } });
      assert.equal(r.status, 429, `instance ${i.name} throttles: ${JSON.stringify(r.body)}`);
      assert.ok(Number(r.headers.get('retry-after')) > 0, 'Retry-After is set');
    }
  });

  test('a session ended on B closes its socket on A at once and its token stops working on C', async () => {
    const [A, B, C] = insts as [Inst, Inst, Inst];
    const t = await login(B.url, 'alice', PASSWORD);
    assert.equal((await http(C.url, 'GET', '/me', { token: t.access_token })).status, 200); // cached on C
    const s = await openRich(A, t.access_token);
    const t0 = Date.now();
    assert.equal((await http(B.url, 'POST', '/logout', { token: t.access_token })).status, 204);
    const closed = await s.waitClose(3000); // the heartbeat's own check runs every 30 s
    assert.equal(closed.code, 4003);
    await waitUntil(() => 'token refused on C', async () => (await http(C.url, 'GET', '/me', { token: t.access_token })).status === 401, 1000, 20);
    note(`socket on A closed ${Date.now() - t0} ms after the logout on B`);
  });

  test('the outbox of all instances delivers to another provider exactly once, in order per sender', async () => {
    const senders = await Promise.all(['s1', 's2'].map((n, k) => newUser(n, insts[k]!)));
    const K = 30;
    const acceptedBefore = await remoteAccepted();
    await Promise.all(
      senders.map(async (u, k) => {
        for (let i = 0; i < K; i++) assert.equal(await post(insts[(i + k) % 3]!, u, [rita.address], `${u.name}-out-${i}`), 201);
      }),
    );
    const addrs = senders.map((s) => s.address);
    await waitUntil(() => `remote to hold ${2 * K}`, async () => (await remoteStored(addrs)).length >= 2 * K, 20_000, 100);
    await sleep(300);
    const got = await remoteStored(addrs);
    assert.equal(got.length, 2 * K, 'nothing stored twice');
    for (const u of senders) {
      assert.deepEqual(
        got.filter((m) => m.sender === u.address).map((m) => m.id),
        Array.from({ length: K }, (_, i) => `${u.name}-out-${i}`),
        `${u.name}'s messages arrive in the order sent`,
      );
    }
    assert.equal((await remoteAccepted()) - acceptedBefore, 2 * K, 'the peer stored each message once');
    const states = await query<{ state: string; n: string }>(db!.url, `select state, count(*) as n from outbox group by state`);
    assert.deepEqual(states.map((r) => [r.state, Number(r.n)]), [['delivered', 2 * K]]);
  });

  test('a Redis outage: instances stay up, delivery goes on through the database, and resumes over Redis', async () => {
    const [A, B, C] = insts as [Inst, Inst, Inst];
    const alice = await login(A.url, 'alice', PASSWORD);
    const bob = { name: 'bob', address: addr('bob'), token: (await login(B.url, 'bob', PASSWORD)).access_token };
    const s = await openRich(A, alice.access_token);
    redisProxy.outage(true);
    try {
      for (let i = 0; i < 5; i++) assert.equal(await post(B, bob, [alice.address], `bob-outage-${i}`), 201);
      // Logins keep working (per-instance limits meanwhile).
      assert.equal((await http(C.url, 'POST', '/token', { form: { grant_type: 'password', username: 'carol', password: PASSWORD } })).status, 200);
      await s.until(() => messagesOf(s).length >= 5, 8000);
    } finally {
      redisProxy.outage(false);
    }
    // Back over Redis: wait until the subscribers have reconnected (through the proxy).
    const before = redisProxy.connections;
    await waitUntil(() => 'instances to reconnect to redis', () => redisProxy.connections >= before + 2 * 3, 15_000, 100);
    await sleep(300);
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) assert.equal(await post(C, bob, [alice.address], `bob-after-${i}`), 201);
    await s.until(() => messagesOf(s).length >= 10, 5000);
    note(`after the outage: 5 messages from C reached A in ${Date.now() - t0} ms`);
    assert.deepEqual(assertOrderedOnce(messagesOf(s), 'alice on A'), [...Array.from({ length: 5 }, (_, i) => `bob-outage-${i}`), ...Array.from({ length: 5 }, (_, i) => `bob-after-${i}`)]);
    for (const i of insts) assert.equal(i.child!.proc.exitCode, null, `instance ${i.name} is still running`);
  });

  test('SIGKILL of the delivering instance under load: every 201 reaches the peer once, in order; clients miss nothing', async () => {
    const alice = { token: (await login(insts[0]!.url, 'alice', PASSWORD)).access_token };
    const posters = await Promise.all(['k1', 'k2', 'k3'].map((n, k) => newUser(n, insts[k]!)));
    const addrs = posters.map((p) => p.address);
    const watch = new Map<Inst, Socket>();
    for (const i of insts) watch.set(i, await openRich(i, alice.token));
    const ritaSocket = await openRich(remote!.wsUrl, rita.token);
    const acceptedBefore = await remoteAccepted();
    const requestsBefore = await remoteInbound();
    for (const i of insts) i.toRemote.delayMs = 40;

    const M = 30;
    const accepted = new Map<string, string[]>(addrs.map((a) => [a, []]));
    const failed: string[] = [];
    let sent = 0;
    let victim: Inst | null = null;
    const producing = Promise.all(
      posters.map(async (u, k) => {
        for (let i = 0; i < M; i++) {
          const targets = live();
          const on = targets[(i + k) % targets.length]!;
          const id = `${u.name}-kill-${i}`;
          const status = await post(on, u, [addr('alice'), rita.address], id);
          if (status === 201) accepted.get(u.address)!.push(id);
          else failed.push(`${id}@${on.name}:${status}`);
          sent++;
          await sleep(15);
        }
      }),
    );
    // Once deliveries run, kill the instance that has one in flight (its lease is not released).
    await waitUntil(() => 'some posts', () => sent >= 20, 20_000, 10);
    const deadline = Date.now() + 5000;
    while (!victim && Date.now() < deadline) {
      victim = insts.find((i) => i.toRemote.inFlight) ?? null;
      if (!victim) await sleep(2);
    }
    if (!victim) {
      note('no delivery caught in flight; killing C');
      victim = insts[2]!;
    }
    const midDelivery = victim.toRemote.inFlight;
    victim.child!.proc.kill('SIGKILL');
    victim.dead = true;
    const ex = await victim.child!.exited;
    assert.equal(ex.signal, 'SIGKILL');
    note(`killed ${victim.name} after ${sent} posts (a delivery in flight: ${midDelivery})`);
    await producing;
    for (const i of insts) i.toRemote.delayMs = 0;

    const truth = await stored(addrs);
    const truthIds = truth.map((r) => r.id);
    // Every 201 is stored here; a post cut off by the kill may or may not have been.
    for (const ids of accepted.values()) for (const id of ids) assert.ok(truthIds.includes(id), `${id} got a 201 but is not stored`);
    note(`${[...accepted.values()].reduce((a, l) => a + l.length, 0)} posts got 201, ${failed.length} failed (${failed.slice(0, 4).join(', ')}), ${truth.length} stored`);

    // Clients: survivors saw everything, in order, once; the one on the killed instance resumes.
    const onVictim = watch.get(victim)!;
    await onVictim.waitClose(5000);
    const before = messagesOf(onVictim);
    const cursor = before.length > 0 ? before[before.length - 1].seq : truth[0]!.seq - 1;
    const resumed = await openRich(live()[0]!, alice.token, cursor);
    for (const [i, s] of watch) {
      if (i === victim) continue;
      await s.until(() => messagesOf(s).length >= truth.length, 15_000);
    }
    const resumedIds = () => new Set(messagesOf(resumed).map((m) => m.id));
    await waitUntil(() => 'the resumed client to catch up', () => truthIds.every((id) => before.some((m) => m.id === id) || resumedIds().has(id)), 15_000);
    await sleep(200);
    for (const [i, s] of watch) {
      if (i === victim) continue;
      assert.deepEqual(assertOrderedOnce(messagesOf(s), `alice on ${i.name}`), truthIds, `alice on ${i.name}`);
    }
    assert.deepEqual(assertOrderedOnce([...before, ...messagesOf(resumed)], 'alice resumed after the kill'), truthIds);

    // The peer: everything we stored arrives (the killed instance's lease expires within 10 s),
    // once, in each sender's order.
    let remoteCount = 0;
    await waitUntil(() => `remote to hold ${truth.length} (has ${remoteCount})`, async () => (remoteCount = (await remoteStored(addrs)).length) >= truth.length, 40_000, 200);
    await sleep(500);
    const got = await remoteStored(addrs);
    assert.equal(got.length, truth.length, 'stored once each');
    assert.deepEqual(new Set(got.map((m) => m.id)), new Set(truthIds));
    for (const a of addrs) {
      assert.deepEqual(got.filter((m) => m.sender === a).map((m) => m.id), truth.filter((r) => r.sender === a).map((r) => r.id), `${a} in order at the peer`);
    }
    const storedThere = (await remoteAccepted()) - acceptedBefore;
    assert.equal(storedThere, truth.length, 'the peer stored each message once');
    note(`peer stored ${storedThere} messages from ${(await remoteInbound()) - requestsBefore} requests`);
    const outbox = await query<{ state: string; n: string }>(db!.url, `select o.state, count(*) as n from outbox o join messages m on m.seq = o.message_seq where m.sender = any($1) group by o.state`, [addrs]);
    assert.deepEqual(outbox.map((r) => [r.state, Number(r.n)]), [['delivered', truth.length]]);
    // rita's socket on the peer: each once.
    await ritaSocket.until(() => messagesOf(ritaSocket).filter((m) => addrs.includes(m.from)).length >= truth.length, 5000);
    const ritaIds = messagesOf(ritaSocket).filter((m) => addrs.includes(m.from)).map((m) => m.id);
    assert.equal(new Set(ritaIds).size, ritaIds.length, 'rita got a message twice');
  });
});
