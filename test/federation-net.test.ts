// PeerHttp against real servers on real sockets: an HTTPS server with a certificate from a
// throw-away CA (made with openssl), reached through `resolve` overrides.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isPublicAddress, PeerHttp, PeerNetworkError, type PeerHttpOptions } from '../src/federation/net.js';
import { makeCa, type TestCa } from '../src/devnet/ca.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function listen(server: http.Server | https.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function stop(server: http.Server | https.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function closedPort(): Promise<number> {
  const s = http.createServer();
  const port = await listen(s);
  await stop(s);
  return port;
}

async function rejectsWith(p: Promise<unknown>, code: PeerNetworkError['code']): Promise<PeerNetworkError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PeerNetworkError, `expected a PeerNetworkError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a ${code} error, but the request succeeded`);
}

describe('PeerHttp', () => {
  let dir: string;
  let ca: TestCa;
  let good: https.Server; // certificate for peer.test
  let wrong: https.Server; // certificate for other.test only
  let plain: http.Server;
  let goodPort: number;
  let wrongPort: number;
  let plainPort: number;
  const hits = new Map<string, number>();
  const held: http.ServerResponse[] = [];
  let active = 0;
  let maxActive = 0;
  let releaseHeld = false;
  let wrongHits = 0;
  const clients: PeerHttp[] = [];

  const routes: Record<string, Handler> = {
    '/hello': (req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ sni: (req.socket as { servername?: string }).servername ?? null, host: req.headers.host, ua: req.headers['user-agent'] }));
    },
    '/echo': (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.setHeader('x-multi', ['a', 'b']);
        res.end(JSON.stringify({ method: req.method, body: Buffer.concat(chunks).toString(), type: req.headers['content-type'] }));
      });
    },
    '/text': (_req, res) => res.end('not json'),
    '/redirect': (_req, res) => {
      res.writeHead(302, { location: 'https://peer.test/target' });
      res.end();
    },
    '/target': (_req, res) => res.end('you followed a redirect'),
    '/big': (_req, res) => {
      const body = Buffer.alloc(2 * 1024 * 1024, 0x61);
      res.setHeader('content-length', body.length);
      res.end(body);
    },
    '/big-chunked': (_req, res) => {
      // No content-length: the limit must be enforced while streaming.
      let sent = 0;
      const chunk = Buffer.alloc(64 * 1024, 0x62);
      const pump = () => {
        while (sent < 4 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => {});
      pump();
    },
    '/exact': (_req, res) => res.end(Buffer.alloc(1000, 0x63)),
    '/hang': () => {
      /* never answers */
    },
    '/stall': (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial…'); // headers and some body, then nothing
    },
    '/held': (_req, res) => {
      active++;
      maxActive = Math.max(maxActive, active);
      const done = () => {
        active--;
        res.end('held');
      };
      if (releaseHeld) done();
      else held.push(Object.assign(res, { done }));
    },
  };

  const handler: Handler = (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const route = routes[path];
    if (route) route(req, res);
    else {
      res.statusCode = 404;
      res.end();
    }
  };

  function client(extra: Partial<PeerHttpOptions> = {}): PeerHttp {
    const c = new PeerHttp({
      resolve: new Map([
        ['peer.test', { host: '127.0.0.1', port: goodPort }],
        ['peer2.test', { host: '127.0.0.1', port: wrongPort }],
        ['plain.test', { host: '127.0.0.1', port: plainPort }],
      ]),
      insecurePeers: new Set(),
      timeoutMs: 5000,
      perPeerConcurrency: 4,
      userAgent: 'intertalk-test/1',
      ca: ca.caCert,
      ...extra,
    });
    clients.push(c);
    return c;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'intertalk-net-'));
    ca = await makeCa(dir);
    const [goodCert, wrongCert] = await Promise.all([ca.issue(['peer.test']), ca.issue(['other.test'])]);
    good = https.createServer({ cert: goodCert.cert, key: goodCert.key }, handler);
    wrong = https.createServer({ cert: wrongCert.cert, key: wrongCert.key }, (req, res) => {
      wrongHits++;
      handler(req, res);
    });
    plain = http.createServer(handler);
    [goodPort, wrongPort, plainPort] = await Promise.all([listen(good), listen(wrong), listen(plain)]);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([stop(good), stop(wrong), stop(plain)]);
    await rm(dir, { recursive: true, force: true });
  });

  it('connects to the resolve target with SNI, Host and certificate checks for the domain', async () => {
    const c = client();
    const res = await c.getJson('https://peer.test/hello');
    assert.equal(res.status, 200);
    assert.equal(res.insecure, false);
    assert.deepEqual(res.json, { sni: 'peer.test', host: 'peer.test', ua: 'intertalk-test/1' });
    // The URL's port is ignored for a resolved domain: the override decides where to connect.
    const again = await c.getJson('https://peer.test:8443/hello');
    assert.deepEqual(again.json, { sni: 'peer.test', host: 'peer.test:8443', ua: 'intertalk-test/1' });
  });

  it('POSTs a body and returns status, headers and raw body', async () => {
    const c = client();
    const res = await c.request(new URL('https://peer.test/echo'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"a":1}',
    });
    assert.equal(res.status, 200);
    assert.deepEqual(res.headers['x-multi'], ['a', 'b']);
    assert.deepEqual(JSON.parse(res.body.toString()), { method: 'POST', body: '{"a":1}', type: 'application/json' });
  });

  it('getJson: json is undefined for a body that is not JSON, and for an empty body', async () => {
    const c = client();
    const text = await c.getJson('https://peer.test/text');
    assert.equal(text.status, 200);
    assert.equal(text.json, undefined);
    const missing = await c.getJson('https://peer.test/nothing-here');
    assert.equal(missing.status, 404);
    assert.equal(missing.json, undefined);
  });

  it('rejects a certificate issued for another name', async () => {
    const err = await rejectsWith(client().request('https://peer2.test/hello', { method: 'GET' }), 'tls');
    assert.equal(err.policy, false);
    assert.equal(wrongHits, 0, 'no request reached the server behind the wrong certificate');
  });

  it('reports https to a server that does not speak TLS as a TLS failure', async () => {
    const c = client({ resolve: new Map([['peer.test', { host: '127.0.0.1', port: plainPort }]]) });
    await rejectsWith(c.request('https://peer.test/hello', { method: 'GET' }), 'tls');
  });

  it('rejects a certificate from a CA it does not trust', async () => {
    const untrusting = new PeerHttp({
      resolve: new Map([['peer.test', { host: '127.0.0.1', port: goodPort }]]),
      insecurePeers: new Set(),
      timeoutMs: 5000,
      perPeerConcurrency: 1,
      userAgent: 'intertalk-test/1',
    });
    clients.push(untrusting);
    await rejectsWith(untrusting.request('https://peer.test/hello', { method: 'GET' }), 'tls');
  });

  it('refuses plain http unless the host is an insecure peer', async () => {
    const err = await rejectsWith(client().request('http://plain.test/hello', { method: 'GET' }), 'insecure_not_allowed');
    assert.equal(err.policy, true);
    const c = client({ insecurePeers: new Set(['plain.test']) });
    const res = await c.getJson('http://plain.test/hello');
    assert.equal(res.status, 200);
    assert.equal(res.insecure, true);
    assert.deepEqual(res.json, { sni: null, host: 'plain.test', ua: 'intertalk-test/1' });
    await rejectsWith(c.request('ftp://plain.test/x', { method: 'GET' }), 'insecure_not_allowed');
  });

  it('refuses a domain that resolves (real DNS) to loopback without a resolve entry', async () => {
    const err = await rejectsWith(client().request('https://localhost/hello', { method: 'GET' }), 'blocked_address');
    assert.equal(err.policy, true);
    // Insecure peers get no exemption from the address policy.
    const c = client({ insecurePeers: new Set(['localhost']) });
    await rejectsWith(c.request(`http://localhost:${plainPort}/hello`, { method: 'GET' }), 'blocked_address');
  });

  it('refuses literal IP hosts', async () => {
    const c = client({ insecurePeers: new Set(['127.0.0.1']) });
    for (const url of [
      `https://127.0.0.1:${goodPort}/hello`,
      `http://127.0.0.1:${plainPort}/hello`,
      'https://[::1]/hello',
      'https://[::ffff:127.0.0.1]/hello',
      'https://8.8.8.8/hello', // even public addresses: peers are named by domain
      'https://2130706433/hello', // 127.0.0.1 in disguise; URL normalises it to an IP literal
    ]) {
      await rejectsWith(c.request(url, { method: 'GET' }), 'blocked_address');
    }
  });

  it('reports DNS failures and refused connections as peer unavailability', async () => {
    const err = await rejectsWith(client().request('https://no-such-host.invalid/', { method: 'GET' }), 'dns');
    assert.equal(err.policy, false);
    const port = await closedPort();
    const c = client({ resolve: new Map([['down.test', { host: '127.0.0.1', port }]]) });
    await rejectsWith(c.request('https://down.test/', { method: 'GET' }), 'connect_failed');
  });

  it('does not follow redirects', async () => {
    const before = hits.get('/target') ?? 0;
    const res = await client().request('https://peer.test/redirect', { method: 'GET' });
    assert.equal(res.status, 302);
    assert.equal(res.headers.location, 'https://peer.test/target');
    assert.equal(hits.get('/target') ?? 0, before);
  });

  it('aborts oversize bodies, with and without content-length', async () => {
    const c = client();
    await rejectsWith(c.request('https://peer.test/big', { method: 'GET' }), 'too_large'); // default 1 MiB
    await rejectsWith(c.request('https://peer.test/big-chunked', { method: 'GET' }), 'too_large');
    await rejectsWith(c.request('https://peer.test/exact', { method: 'GET', maxResponseBytes: 999 }), 'too_large');
    const ok = await c.request('https://peer.test/exact', { method: 'GET', maxResponseBytes: 1000 });
    assert.equal(ok.body.length, 1000);
    const big = await c.request('https://peer.test/big', { method: 'GET', maxResponseBytes: 4 * 1024 * 1024 });
    assert.equal(big.body.length, 2 * 1024 * 1024);
  });

  it('times out waiting for headers and waiting for the rest of the body', async () => {
    const c = client({ timeoutMs: 300 });
    let t = Date.now();
    await rejectsWith(c.request('https://peer.test/hang', { method: 'GET' }), 'timeout');
    // Generous: only "the timeout fired" is checked, not how promptly (a loaded CI machine).
    assert.ok(Date.now() - t < 10_000);
    t = Date.now();
    await rejectsWith(c.request('https://peer.test/stall', { method: 'GET', timeoutMs: 200 }), 'timeout');
    assert.ok(Date.now() - t < 10_000);
    // The client still works afterwards.
    assert.equal((await c.request('https://peer.test/hello', { method: 'GET' })).status, 200);
  });

  it('allows at most perPeerConcurrency requests in flight per host', async () => {
    const c = client({ perPeerConcurrency: 2 });
    const all = Promise.all(Array.from({ length: 5 }, () => c.request('https://peer.test/held', { method: 'GET' })));
    const deadline = Date.now() + 3000;
    while (held.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(held.length, 2, 'exactly two requests reached the server');
    // Another host is not blocked by the busy one.
    const other = client({ perPeerConcurrency: 2, insecurePeers: new Set(['plain.test']) });
    assert.equal((await other.request('http://plain.test/hello', { method: 'GET' })).status, 200);
    releaseHeld = true;
    for (const r of held.splice(0)) (r as http.ServerResponse & { done(): void }).done();
    const results = await all;
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200]);
    assert.equal(maxActive, 2);
  });

  it('times out while queued behind a busy peer', async () => {
    releaseHeld = false;
    const c = client({ perPeerConcurrency: 1 });
    const first = c.request('https://peer.test/held', { method: 'GET', timeoutMs: 2000 });
    while (held.length < 1) await new Promise((r) => setTimeout(r, 10));
    await rejectsWith(c.request('https://peer.test/hello', { method: 'GET', timeoutMs: 100 }), 'timeout');
    releaseHeld = true;
    for (const r of held.splice(0)) (r as http.ServerResponse & { done(): void }).done();
    assert.equal((await first).status, 200);
    assert.equal((await c.request('https://peer.test/hello', { method: 'GET' })).status, 200);
  });
});

describe('isPublicAddress', () => {
  it('allows only public unicast addresses', () => {
    const blocked = [
      '127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '169.254.169.254',
      '224.0.0.1', '0.0.0.0', '255.255.255.255', '192.0.2.1', '198.18.0.1', '240.0.0.1',
      '::', '::1', 'fc00::1', 'fd12:3456::1', 'fe80::1', 'fe80::1%eth0', 'ff02::1',
      '::ffff:127.0.0.1', '::ffff:10.0.0.1', '::ffff:192.168.0.1', '64:ff9b::10.0.0.1', '64:ff9b::127.0.0.1',
      '2001:db8::1', '2002:7f00:1::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '::7f00:1', 'fec0::1',
      'not an ip', '',
    ];
    const allowed = ['8.8.8.8', '1.1.1.1', '93.184.215.14', '2606:4700:4700::1111', '2a00:1450:4001::200e', '::ffff:8.8.8.8', '64:ff9b::808:808'];
    for (const ip of blocked) assert.equal(isPublicAddress(ip), false, ip);
    for (const ip of allowed) assert.equal(isPublicAddress(ip), true, ip);
  });
});
