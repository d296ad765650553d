// A bounded fuzz run over every public route and the WebSocket protocol (fast-check): whatever a
// stranger, a user or a peer sends, the provider answers without a 5xx, without crashing, with a
// JSON {"error","message"} body for every refusal, and a refused request writes nothing. The
// routes are those the running provider registered (src/http/app.ts routesOf), so a capability
// added later is fuzzed without anyone listing it here. FUZZ_RUNS scales the run (default 1000
// HTTP requests, a fifth as many WebSocket sessions).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { sql } from 'kysely';
import { Agent, request } from 'undici';
import WebSocket from 'ws';
import { startNetwork, type Network } from './helpers/network.js';
import { EvilPeer, peerKey, signToken, unsecuredToken, type PeerKey } from './helpers/evil-peer.js';
import { api, fedUser, say, type FedUser } from './helpers/fed.js';
import { routesOf } from '../src/http/app.js';
import { CLOSE } from '../src/realtime/hub.js';
import type { Db } from '../src/storage/db.js';

const US = 'fuzz.test';
const PEER = 'peer.test';
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000);
/**
 * Tables a refused request may still write, and why:
 * - inbound_jti: a peer token's jti is recorded once its signature verified (docs/federation.md
 *   step 19), before the checks of the message's recipients; a replay of it is refused the same.
 */
const MAY_CHANGE_ON_REFUSAL = new Set(['inbound_jti']);

let net: Network;
let peer: EvilPeer;
let agent: Agent;
let db: Db;
let alice: FedUser;
let bob: FedUser;
let peerSigner: PeerKey;
let conversationId = '';

async function tables(): Promise<string[]> {
  const dialect = net.provider(US).ctx.storage.dialect;
  const rows =
    dialect === 'sqlite'
      ? (await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name not like 'sqlite_%'`.execute(db)).rows
      : (await sql<{ name: string }>`select table_name as name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'`.execute(db)).rows;
  return rows.map((r) => r.name).filter((n) => !n.startsWith('kysely_')).sort();
}

async function snapshot(names: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of names) {
    if (MAY_CHANGE_ON_REFUSAL.has(t)) continue;
    const r = await sql<{ n: number | string }>`select count(*) as n from ${sql.table(t)}`.execute(db);
    out[t] = Number(r.rows[0]!.n);
  }
  return out;
}

const nowS = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------------------------
// Generators

const weird = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('..', '.', '%00', '%2e%2e', '-1', '0', '1', '2', '99999999999999999999', '1e9', 'null', '__proto__', 'constructor', ' ', '\u0000', '💥', 'a'.repeat(3000)),
  fc.integer({ min: -5, max: 1_000_000 }).map(String),
);
const paramValue = fc.oneof({ weight: 3, arbitrary: weird }, { weight: 2, arbitrary: fc.constantFrom('@conversation', '@seq', '@alice', '@room') });

const field = fc.constantFrom(
  'to', 'from', 'message', 'messageFormatted', 'format', 'id', 'sentAt', 'text', 'replyTo', 'emoji', 'remove', 'rich', 'name', 'title',
  'username', 'password', 'grant_type', 'refresh_token', 'token', 'receipts', 'messages', 'since', 'limit', 'attachments', 'room', 'code',
  'endpoint', 'keys', 'domain', 'muted', 'type', 'reference', 'property', 'value', 'seq', 'conversationId',
);
const fieldValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom('alice@fuzz.test', 'bob@fuzz.test', `carol@${PEER}`, 'x@', '@', 'text/markdown', 'image/png', 'password', 'refresh_token', '👍', new Date().toISOString()),
  fc.array(fc.constantFrom('alice@fuzz.test', 'bob@fuzz.test', `carol@${PEER}`, 'nobody@fuzz.test', 'bad'), { maxLength: 4 }),
  fc.string({ maxLength: 5000 }),
);
const jsonBody = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(field, fieldValue, { maxKeys: 6 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
);

type Auth = 'none' | 'garbage' | 'alice' | 'bob' | 'peer' | 'peer-bad-signature' | 'peer-none' | 'peer-wrong-aud' | 'basic';
const auth = fc.constantFrom<Auth>('none', 'garbage', 'alice', 'alice', 'bob', 'peer', 'peer', 'peer-bad-signature', 'peer-none', 'peer-wrong-aud', 'basic');

type Body =
  | { kind: 'none' }
  | { kind: 'json'; value: unknown; contentType: string }
  | { kind: 'form'; value: Record<string, string> }
  | { kind: 'bytes'; value: Uint8Array; contentType: string }
  | { kind: 'big'; size: number };
const body: fc.Arbitrary<Body> = fc.oneof(
  { weight: 1, arbitrary: fc.constant({ kind: 'none' } as const) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('json' as const), value: jsonBody, contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'application/jwk+json', 'text/plain') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('form' as const), value: fc.dictionary(field, fc.string({ maxLength: 40 }), { maxKeys: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), value: fc.uint8Array({ maxLength: 300 }), contentType: fc.constantFrom('application/json', 'application/octet-stream', 'image/png', 'x/y', '') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('big' as const), size: fc.constantFrom(1_100_000, 3_000_000) }) },
);

const query = fc.dictionary(fc.constantFrom('since', 'after', 'before', 'limit', 'cursor', 'room', 'x', 'code'), weird.map((s) => s.slice(0, 50)), { maxKeys: 3 });

// ---------------------------------------------------------------------------------------------

async function authorization(kind: Auth, method: string, path: string, raw: string): Promise<string | undefined> {
  const claims = { iss: PEER, sub: `carol@${PEER}`, aud: US, iat: nowS(), exp: nowS() + 60, jti: randomUUID() };
  switch (kind) {
    case 'none':
      return undefined;
    case 'garbage':
      return `Bearer ${randomUUID()}`;
    case 'basic':
      return 'Basic YWxpY2U6cGFzc3dvcmQ=';
    case 'alice':
      return `Bearer ${alice.token}`;
    case 'bob':
      return `Bearer ${bob.token}`;
    case 'peer': {
      // A genuine token of peer.test, bound to the body for batches (body_sha256) as batch/1 asks.
      const { createHash } = await import('node:crypto');
      const extra = path.startsWith('/messages/batch') ? { sub: PEER, body_sha256: createHash('sha256').update(raw).digest('base64url') } : {};
      return `Bearer ${await signToken(peerSigner, { ...claims, ...extra })}`;
    }
    case 'peer-bad-signature':
      return `Bearer ${await signToken({ ...(await peerKey(peerSigner.kid)), kid: peerSigner.kid }, claims)}`;
    case 'peer-none':
      return `Bearer ${unsecuredToken({ alg: 'none', kid: peerSigner.kid }, claims)}`;
    case 'peer-wrong-aud':
      return `Bearer ${await signToken(peerSigner, { ...claims, aud: 'elsewhere.test' })}`;
  }
}

/** A new access token for `u` (the fuzz may have logged it out). fedUser's password. */
async function relogin(u: FedUser): Promise<void> {
  const r = await api(net, US, 'POST', '/token', { form: { grant_type: 'password', username: u.name, password: 'correct horse battery staple' } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  u.token = r.body.access_token;
}

function concretePath(url: string, params: string[]): string {
  let i = 0;
  return url
    .replace(/:[A-Za-z_]+/g, () => {
      const v = params[i++ % params.length] ?? 'x';
      const real = v === '@conversation' ? conversationId : v === '@seq' ? '1' : v === '@alice' ? alice.address : v === '@room' ? `general%23${US}` : v;
      return encodeURIComponent(real);
    })
    .replace(/\*$/, () => encodeURIComponent(params[0] ?? 'index.html'))
    .replace(/^(?!\/)/, '/');
}

describe('fuzz: every route and the WebSocket protocol', () => {
  before(async () => {
    peer = await EvilPeer.listen();
    net = await startNetwork({
      domains: [US],
      env: { INTERTALK_SEND_RATE: '100000000', INTERTALK_REGISTRATION_RATE: '100000', INTERTALK_FEDERATION_RATE: '100000000' },
      extraResolve: { [PEER]: peer.port },
    });
    peer.setCert(await net.ca.issue([PEER]));
    peerSigner = await peerKey('fuzz-k1');
    peer.host(PEER).keys.set(peerSigner.kid, peerSigner.publicJwk);
    db = net.provider(US).ctx.storage.db;
    agent = new Agent({ connect: { ca: net.ca.caCert, servername: US }, connections: 4 });
    alice = await fedUser(net, US, 'alice');
    bob = await fedUser(net, US, 'bob');
    const m = await say(net, alice, [alice.address, bob.address], 'hello');
    conversationId = m.conversationId;
  });
  after(async () => {
    await agent?.close();
    await net?.stop();
    await peer?.close();
  });

  test('HTTP: no 5xx, a JSON error for every refusal, and a refusal writes nothing', { timeout: 600_000 }, async (t) => {
    const routes = routesOf(net.provider(US).app).filter((r) => r.method !== 'HEAD');
    assert.ok(routes.length >= 25, `only ${routes.length} routes registered`);
    const names = await tables();
    const statuses = new Map<string, number>();
    const hit = new Set<string>();
    const base = net.node(US).url;

    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: routes.length - 1 }),
        fc.array(paramValue, { minLength: 1, maxLength: 3 }),
        auth,
        body,
        query,
        fc.nat({ max: 9 }).map((n) => n === 0),
        async (ri, params, authKind, b, q, wrongMethod) => {
          const route = routes[ri]!;
          const method = wrongMethod ? (route.method === 'GET' ? 'DELETE' : 'GET') : route.method;
          const qs = new URLSearchParams(q).toString();
          const path = concretePath(route.url, params) + (qs ? `?${qs}` : '');
          const headers: Record<string, string> = {};
          let payload: string | Buffer | undefined;
          if (b.kind === 'json') {
            payload = JSON.stringify(b.value) ?? 'null';
            headers['content-type'] = b.contentType;
          } else if (b.kind === 'form') {
            payload = new URLSearchParams(b.value).toString();
            headers['content-type'] = 'application/x-www-form-urlencoded';
          } else if (b.kind === 'bytes') {
            payload = Buffer.from(b.value);
            if (b.contentType) headers['content-type'] = b.contentType;
          } else if (b.kind === 'big') {
            payload = JSON.stringify({ to: [alice.address, bob.address], message: 'x'.repeat(b.size) });
            headers['content-type'] = 'application/json';
          }
          if (method === 'GET' || method === 'HEAD') payload = undefined;
          const a = await authorization(authKind, method, path, typeof payload === 'string' ? payload : (payload?.toString('latin1') ?? ''));
          if (a) headers.authorization = a;

          const before = await snapshot(names);
          const res = await request(base + path, { method: method as 'GET', headers, body: payload, dispatcher: agent, headersTimeout: 60_000, bodyTimeout: 60_000 }).catch((err: Error) => ({ error: err }));
          if ('error' in res) {
            // The server may close a connection it refuses to read a huge body on; it must
            // still be alive (checked below).
            statuses.set('closed', (statuses.get('closed') ?? 0) + 1);
            return;
          }
          const text = await res.body.text();
          // A logout or revocation that worked ends the session the fuzz uses: log in again.
          if (res.statusCode < 300 && (authKind === 'alice' || authKind === 'bob') && /^\/(logout|revoke)/.test(path)) await relogin(authKind === 'alice' ? alice : bob);
          const key = `${route.method} ${route.url}`;
          hit.add(key);
          statuses.set(String(res.statusCode), (statuses.get(String(res.statusCode)) ?? 0) + 1);
          const what = `${method} ${path.slice(0, 200)} (${authKind}, ${b.kind}) → ${res.statusCode} ${text.slice(0, 300)}`;
          assert.ok(res.statusCode < 500, what);
          if (res.statusCode >= 400) {
            const contentType = String(res.headers['content-type'] ?? '');
            assert.match(contentType, /^application\/json/, what);
            const json = JSON.parse(text) as { error?: unknown; message?: unknown };
            assert.equal(typeof json.error, 'string', what);
            assert.equal(typeof json.message, 'string', what);
            assert.deepEqual(await snapshot(names), before, `a refused request wrote: ${what}`);
          }
        },
      ),
      { numRuns: RUNS },
    );
    // Still alive and well.
    const health = await request(`${base}/healthz`, { dispatcher: agent });
    assert.equal(health.statusCode, 200);
    await health.body.dump();
    t.diagnostic(`statuses ${JSON.stringify([...statuses].sort())}; ${hit.size} of ${routes.length} routes answered`);
  });

  test('WebSocket: any first frame and any later frames leave the server well; every close has a documented code', { timeout: 300_000 }, async (t) => {
    const p = net.provider(US);
    const wsBase = net.node(US).url.replace(/^http/, 'ws');
    await relogin(alice);
    const codes = new Map<number, number>();
    // Ours (docs/api.md) and the protocol's own: normal, going away, protocol error, invalid
    // UTF-8, too big; 1005/1006 when a side closed without a code.
    const DOCUMENTED = new Set<number>([...Object.values(CLOSE), 1000, 1001, 1002, 1005, 1006, 1007, 1009]);
    const frame = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
      fc.dictionary(fc.constantFrom('type', 'token', 'since', 'id', 'to', 'message', 'conversationId', 'text', 'seq', 'rich'), fieldValue, { maxKeys: 5 }).map((o) => JSON.stringify(o)),
      fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u)),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/messages', '/messageStream'), fc.constantFrom('none', 'bare', 'rich', 'garbage'), fc.array(frame, { maxLength: 6 }), async (path, first, frames) => {
        const ws = new WebSocket(wsBase + path, { ca: net.ca.caCert, servername: US } as WebSocket.ClientOptions);
        const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
        ws.on('error', () => undefined);
        ws.on('message', () => undefined);
        const opened = await new Promise<boolean>((resolve) => {
          ws.once('open', () => resolve(true));
          ws.once('close', () => resolve(false));
        });
        if (opened) {
          if (first === 'bare') ws.send(alice.token);
          else if (first === 'rich') ws.send(JSON.stringify({ token: alice.token, since: 0 }));
          else if (first === 'garbage') ws.send(randomUUID());
          for (const f of frames) if (ws.readyState === WebSocket.OPEN) ws.send(f);
          await new Promise((r) => setTimeout(r, 20));
          if (ws.readyState === WebSocket.OPEN) ws.close(1000);
        }
        const code = await closed;
        codes.set(code, (codes.get(code) ?? 0) + 1);
        assert.ok(DOCUMENTED.has(code), `close code ${code}`);
      }),
      { numRuns: Math.max(20, Math.round(RUNS / 5)) },
    );
    const health = await request(`${net.node(US).url}/healthz`, { dispatcher: agent });
    assert.equal(health.statusCode, 200);
    await health.body.dump();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(p.realtime.connectionCount, 0, 'no socket left behind');
    t.diagnostic(`close codes ${JSON.stringify([...codes].sort())}`);
  });
});
