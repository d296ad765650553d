// Discovery against real HTTPS / HTTP servers (throw-away CA, `resolve` overrides) with a fake
// clock for the caches, plus property tests of the pure document parser.
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  Discovery,
  FAILURE_TTL_MS,
  ourWellKnown,
  parseWellKnown,
  WELL_KNOWN_PATH,
} from '../src/federation/discovery.js';
import { PeerHttp, PeerNetworkError } from '../src/federation/net.js';
import { isValidDomain } from '../src/protocol/address.js';
import { makeCa, type TestCa } from '../src/devnet/ca.js';

type Reply = { status: number; body?: string; headers?: Record<string, string> };

async function listen(server: http.Server | https.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function stop(server: http.Server | https.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function rejectsWith(p: Promise<unknown>, code: PeerNetworkError['code']): Promise<PeerNetworkError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PeerNetworkError, `expected a PeerNetworkError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a ${code} error, but it succeeded`);
}

const TTL = 60 * 60 * 1000;

describe('Discovery', () => {
  let dir: string;
  let ca: TestCa;
  let secure: https.Server;
  let plain: http.Server;
  let securePort: number;
  let plainPort: number;
  let deadPort: number;
  let reply: Reply = { status: 404 };
  let hits = 0;
  let clock: { t: number; now(): number };
  let resolveMap: Map<string, { host: string; port: number }>;
  let peerHttp: PeerHttp;
  const insecurePeers = new Set(['plain.test']);
  const clients: PeerHttp[] = [];

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url !== WELL_KNOWN_PATH) {
      res.statusCode = 404;
      return void res.end();
    }
    hits++;
    res.writeHead(reply.status, reply.headers ?? { 'content-type': 'application/json' });
    res.end(reply.body ?? '');
  };

  const json = (doc: unknown): Reply => ({ status: 200, body: JSON.stringify(doc) });

  function discovery(): Discovery {
    return new Discovery({ http: peerHttp, clock, ttlMs: TTL, insecurePeers });
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'intertalk-discovery-'));
    ca = await makeCa(dir);
    const cert = await ca.issue(['peer.test', 'other.test']);
    secure = https.createServer({ cert: cert.cert, key: cert.key }, handler);
    plain = http.createServer(handler);
    [securePort, plainPort] = await Promise.all([listen(secure), listen(plain)]);
    const s = http.createServer();
    deadPort = await listen(s);
    await stop(s);
  });

  beforeEach(async () => {
    reply = { status: 404 };
    hits = 0;
    clock = { t: 1_000_000, now() { return this.t; } };
    resolveMap = new Map([
      ['peer.test', { host: '127.0.0.1', port: securePort }],
      ['plain.test', { host: '127.0.0.1', port: plainPort }],
      ['down.test', { host: '127.0.0.1', port: deadPort }],
    ]);
    peerHttp = new PeerHttp({ resolve: resolveMap, insecurePeers, timeoutMs: 5000, perPeerConcurrency: 4, userAgent: 'intertalk-test', ca: ca.caCert });
    clients.push(peerHttp);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([stop(secure), stop(plain)]);
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps at most maxCached domains however many a stranger makes it look up; the newest stay', async () => {
    const d = new Discovery({ http: peerHttp, clock, ttlMs: TTL, insecurePeers, maxCached: 20 });
    const names = Array.from({ length: 60 }, (_, i) => `d${i}.plain.test`);
    for (const n of names) {
      resolveMap.set(n, { host: '127.0.0.1', port: plainPort });
      insecurePeers.add(n);
    }
    try {
      for (const n of names) await d.resolve(n);
      assert.equal(hits, 60);
      assert.equal(d.cachedCount, 20);
      // The last 20 are still cached (no new request); an early one was evicted and is fetched again.
      for (const n of names.slice(40)) await d.resolve(n);
      assert.equal(hits, 60);
      await d.resolve(names[0]!);
      assert.equal(hits, 61);
      assert.equal(d.cachedCount, 20);
    } finally {
      for (const n of names) insecurePeers.delete(n);
    }
  });

  it('follows a delegation document and caches it for the TTL', async () => {
    reply = json({ server: 'https://chat.peer.test/intertalk/', versions: ['1', '1'], extensions: ['rooms', 'ids'], future: true });
    const d = discovery();
    const info = await d.resolve('Peer.Test');
    assert.deepEqual(info, {
      baseUrl: 'https://chat.peer.test/intertalk',
      versions: ['1'],
      extensions: ['rooms', 'ids'],
      delegated: true,
      insecure: false,
      fetchedAt: 1_000_000,
    });
    assert.deepEqual(await d.peerExtensions('peer.test'), ['rooms', 'ids']);
    clock.t += TTL - 1;
    assert.equal((await d.resolve('peer.test')).fetchedAt, 1_000_000);
    assert.equal(hits, 1);
    clock.t += 1;
    reply = json({ versions: ['1', '2'] });
    const fresh = await d.resolve('peer.test');
    assert.equal(hits, 2);
    assert.deepEqual(fresh, {
      baseUrl: 'https://peer.test',
      versions: ['1', '2'],
      extensions: [],
      delegated: false,
      insecure: false,
      fetchedAt: 1_000_000 + TTL,
    });
  });

  it('falls back to the domain on 404 and caches that too', async () => {
    const d = discovery();
    const info = await d.resolve('peer.test');
    assert.deepEqual(info, { baseUrl: 'https://peer.test', versions: [], extensions: [], delegated: false, insecure: false, fetchedAt: 1_000_000 });
    clock.t += TTL / 2;
    await d.resolve('peer.test');
    assert.equal(hits, 1);
  });

  it('treats a malformed document as a (briefly cached) failure, not as "no delegation"', async () => {
    const d = discovery();
    // Plain http for a host that is not an insecure peer is our policy refusing it.
    reply = json({ server: 'http://chat.peer.test' });
    d.invalidate('peer.test');
    const refused = await rejectsWith(d.resolve('peer.test'), 'insecure_not_allowed');
    assert.equal(refused.policy, true);
    // So is delegation to an IP literal (federation goes by domain names only).
    reply = json({ server: 'https://127.0.0.1:8443' });
    d.invalidate('peer.test');
    const literal = await rejectsWith(d.resolve('peer.test'), 'blocked_address');
    assert.equal(literal.policy, true);
    for (const bad of [
      { status: 200, body: 'this is not json' },
      json(['not', 'an', 'object']),
      json({ server: 'ftp://peer.test' }),
      json({ server: 'https://user:pw@chat.peer.test' }),
      json({ server: 'https://chat.peer.test/?q=1' }),
      json({ versions: '1' }),
      json({ extensions: [1] }),
    ] satisfies Reply[]) {
      reply = bad;
      d.invalidate('peer.test');
      const before = hits;
      const err = await rejectsWith(d.resolve('peer.test'), 'bad_response');
      assert.equal(err.policy, false);
      assert.equal(hits, before + 1);
    }
    // The failure is remembered for FAILURE_TTL_MS, then retried.
    reply = json({ server: 'https://chat.peer.test' });
    clock.t += FAILURE_TTL_MS - 1;
    await rejectsWith(d.resolve('peer.test'), 'bad_response');
    const hitsBefore = hits;
    clock.t += 1;
    assert.equal((await d.resolve('peer.test')).baseUrl, 'https://chat.peer.test');
    assert.equal(hits, hitsBefore + 1);
  });

  it('treats other statuses, including redirects, as bad responses', async () => {
    const d = discovery();
    for (const status of [500, 503, 403, 301, 302]) {
      reply = { status, body: '', headers: { location: 'https://elsewhere.test/' } };
      d.invalidate('peer.test');
      await rejectsWith(d.resolve('peer.test'), 'bad_response');
    }
  });

  it('throws network failures, remembers them for ~30 s, then retries', async () => {
    const d = discovery();
    const err = await rejectsWith(d.resolve('down.test'), 'connect_failed');
    assert.equal(err.policy, false);
    // The peer comes up, but the failure is still remembered…
    resolveMap.set('down.test', { host: '127.0.0.1', port: securePort });
    clock.t += FAILURE_TTL_MS - 1;
    await rejectsWith(d.resolve('down.test'), 'connect_failed');
    assert.equal(hits, 0);
    // …until it expires. (The certificate is for peer.test, other.test: down.test fails TLS.)
    clock.t += 1;
    await rejectsWith(d.resolve('down.test'), 'tls');
    resolveMap.set('other.test', { host: '127.0.0.1', port: securePort });
    assert.equal((await d.resolve('other.test')).baseUrl, 'https://other.test');
  });

  it('uses http for insecure peers and accepts an http server for them', async () => {
    const d = discovery();
    assert.deepEqual(await d.resolve('plain.test'), {
      baseUrl: 'http://plain.test',
      versions: [],
      extensions: [],
      delegated: false,
      insecure: true,
      fetchedAt: 1_000_000,
    });
    reply = json({ server: 'http://plain.test:8080', extensions: ['x'] });
    d.invalidate('plain.test');
    const info = await d.resolve('plain.test');
    assert.equal(info.baseUrl, 'http://plain.test:8080');
    assert.equal(info.insecure, true);
    assert.equal(info.delegated, true);
    // An insecure peer may still delegate to https.
    reply = json({ server: 'https://secure.plain.test' });
    d.invalidate('plain.test');
    assert.equal((await d.resolve('plain.test')).insecure, false);
  });

  it('refuses a domain that resolves to a private address, as policy', async () => {
    const d = discovery();
    const err = await rejectsWith(d.resolve('localhost'), 'blocked_address');
    assert.equal(err.policy, true);
    await rejectsWith(d.resolve('not a domain'), 'blocked_address');
    await rejectsWith(d.resolve('127.0.0.1'), 'blocked_address');
  });

  it('shares one fetch between concurrent lookups; invalidate forces a refetch', async () => {
    reply = json({ server: 'https://chat.peer.test' });
    const d = discovery();
    const all = await Promise.all([d.resolve('peer.test'), d.resolve('peer.test'), d.resolve('PEER.test')]);
    assert.equal(hits, 1);
    assert.ok(all.every((i) => i.baseUrl === 'https://chat.peer.test'));
    d.invalidate('peer.test');
    reply = { status: 404 };
    assert.equal((await d.resolve('peer.test')).baseUrl, 'https://peer.test');
    assert.equal(hits, 2);
  });

  it('an invalidate during a fetch keeps that stale result out of the cache', async () => {
    reply = json({ server: 'https://old.peer.test' });
    const d = discovery();
    const pending = d.resolve('peer.test');
    d.invalidate('peer.test');
    assert.equal((await pending).baseUrl, 'https://old.peer.test');
    reply = json({ server: 'https://new.peer.test' });
    assert.equal((await d.resolve('peer.test')).baseUrl, 'https://new.peer.test');
  });
});

// ---------------------------------------------------------------------------------------------
// Pure functions.

const domainArb = fc.domain().map((d) => d.toLowerCase()).filter(isValidDomain);
const tokenArb = fc.stringMatching(/^[\x21-\x7e]{1,20}$/);
const pathArb = fc.array(fc.stringMatching(/^[a-z0-9_~.-]{1,12}$/).filter((s) => s !== '.' && s !== '..'), { maxLength: 3 });

describe('parseWellKnown', () => {
  it('accepts any well-formed document and normalises it idempotently', () => {
    fc.assert(
      fc.property(
        domainArb,
        domainArb,
        fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
        pathArb,
        fc.boolean(),
        fc.array(tokenArb, { maxLength: 10 }),
        fc.array(tokenArb, { maxLength: 10 }),
        (domain, host, port, segments, slash, versions, extensions) => {
          const server = `https://${host}${port === undefined ? '' : `:${port}`}${segments.map((s) => `/${s}`).join('')}${slash ? '/' : ''}`;
          const r = parseWellKnown({ server, versions, extensions }, domain, new Set());
          assert.ok(r.ok, r.ok ? '' : r.reason);
          const v = r.value;
          assert.equal(v.insecure, false);
          assert.ok(!v.baseUrl.endsWith('/'));
          assert.equal(new URL(v.baseUrl).hostname, host);
          assert.deepEqual(v.versions, [...new Set(versions)]);
          assert.deepEqual(v.extensions, [...new Set(extensions)]);
          assert.equal(v.delegated, v.baseUrl !== `https://${domain}`);
          // Feeding the result back in gives the same result.
          const again = parseWellKnown({ server: v.baseUrl, versions: v.versions, extensions: v.extensions }, domain, new Set());
          assert.deepEqual(again, r);
        },
      ),
    );
  });

  it('never throws, and whatever it accepts satisfies the transport policy', () => {
    const serverArb = fc.oneof(
      fc.webUrl({ withQueryParameters: true, withFragments: true, authoritySettings: { withUserInfo: true, withIPv4: true, withIPv6: true, withPort: true } }),
      fc.webUrl(),
      fc.string(),
      fc.constantFrom('https://peer.test', 'http://plain.test', 'http://peer.test', 'https://[::1]', 'https://@x.test', 'javascript:alert(1)', 'https://x.test\\@evil.test', ''),
      fc.jsonValue(),
    );
    const listArb = fc.oneof(fc.array(fc.string(), { maxLength: 5 }), fc.array(tokenArb, { maxLength: 5 }), fc.jsonValue());
    const docArb = fc.oneof(
      fc.record({ server: serverArb, versions: listArb, extensions: listArb }, { requiredKeys: [] }),
      fc.jsonValue(),
      fc.anything(),
    );
    const insecure = new Set(['plain.test']);
    fc.assert(
      fc.property(docArb, fc.constantFrom('peer.test', 'plain.test'), (doc, domain) => {
        const r = parseWellKnown(doc, domain, insecure);
        if (!r.ok) {
          assert.equal(typeof r.reason, 'string');
          return;
        }
        const u = new URL(r.value.baseUrl);
        assert.ok(u.protocol === 'https:' || (u.protocol === 'http:' && insecure.has(u.hostname)), r.value.baseUrl);
        assert.equal(r.value.insecure, u.protocol === 'http:');
        assert.equal(u.username + u.password + u.search + u.hash, '');
        assert.ok(!/[?#]/.test(r.value.baseUrl) && !/^[a-z]+:\/\/[^/]*@/i.test(r.value.baseUrl), r.value.baseUrl);
        assert.ok(isValidDomain(u.hostname), r.value.baseUrl);
        for (const list of [r.value.versions, r.value.extensions]) {
          assert.ok(Array.isArray(list) && list.every((t) => typeof t === 'string' && t.length > 0));
          assert.equal(new Set(list).size, list.length);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('ourWellKnown round-trips through parseWellKnown', () => {
    fc.assert(
      fc.property(
        domainArb,
        fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
        pathArb,
        fc.array(tokenArb, { maxLength: 5 }),
        fc.array(tokenArb, { maxLength: 5 }),
        (domain, port, segments, versions, extensions) => {
          const publicUrl = new URL(`https://${domain}${port === undefined ? '' : `:${port}`}${segments.map((s) => `/${s}`).join('')}/`).href;
          const doc = ourWellKnown({ publicUrl, versions, extensions });
          assert.deepEqual(Object.keys(doc).sort(), ['extensions', 'server', 'versions']);
          assert.ok(!doc.server.endsWith('/'));
          const r = parseWellKnown(JSON.parse(JSON.stringify(doc)), domain, new Set());
          assert.ok(r.ok, r.ok ? '' : r.reason);
          assert.equal(r.value.baseUrl, doc.server);
          assert.deepEqual(r.value.versions, [...new Set(versions)]);
          assert.deepEqual(r.value.extensions, [...new Set(extensions)]);
          assert.equal(r.value.delegated, doc.server !== `https://${domain}`);
        },
      ),
    );
  });

  it('examples', () => {
    const none = new Set<string>();
    assert.deepEqual(parseWellKnown({}, 'a.test', none), {
      ok: true,
      value: { baseUrl: 'https://a.test', versions: [], extensions: [], delegated: false, insecure: false },
    });
    const r = parseWellKnown({ server: 'https://A.test:443/' }, 'a.test', none);
    assert.ok(r.ok && r.value.baseUrl === 'https://a.test' && !r.value.delegated);
    const port = parseWellKnown({ server: 'https://a.test:8443' }, 'a.test', none);
    assert.ok(port.ok && port.value.delegated);
    for (const bad of [null, [], 'x', 1, { server: 1 }, { server: 'https://a.test#x' }, { server: 'https://a.test.' }, { versions: [''] }, { extensions: ['a b'] }, { versions: Array.from({ length: 65 }, (_, i) => `v${i}`) }]) {
      assert.equal(parseWellKnown(bad, 'a.test', none).ok, false, JSON.stringify(bad));
    }
  });
});
