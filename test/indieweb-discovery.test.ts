// Discovery of a personal domain's server against small web servers on loopback, reached through
// PeerHttp's `resolve` overrides (plain http, the names listed as insecure peers): link element,
// Link header, metadata document, legacy-only rel="pm", failures naming the step, private
// addresses refused.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PeerHttp } from '../src/federation/net.js';
import { discoverPersonalServer } from '../src/indieweb/discovery.js';

type Page = { status?: number; headers?: Record<string, string>; body?: string };

describe('personal domain discovery', () => {
  const sites: Record<string, Record<string, Page>> = {
    'link.test': { '/': { headers: { 'content-type': 'text/html' }, body: '<!doctype html><html><head><link rel="intertalk-server" href="https://pm.provider.test/"></head><body><h1>Alice</h1></body></html>' } },
    'header.test': { '/': { headers: { 'content-type': 'text/plain', link: '<https://pm.provider.test/>; rel="intertalk-server"' }, body: 'hello' } },
    'legacy.test': { '/': { headers: { 'content-type': 'text/html; charset=utf-8' }, body: '<html><head><link rel="pm" href="https://old.provider.test/"></head></html>' } },
    'meta.test': {
      '/': { headers: { 'content-type': 'text/html' }, body: '<html><head><link rel="intertalk-metadata" href="/meta.json"></head><body></body></html>' },
      '/meta.json': { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ server: 'https://pm.provider.test/' }) },
    },
    'badmeta.test': {
      '/': { headers: { 'content-type': 'text/html' }, body: '<html><head><link rel="intertalk-metadata" href="/meta.json"></head></html>' },
      '/meta.json': { headers: { 'content-type': 'application/json' }, body: '{"nope":1}' },
    },
    'private.test': { '/': { headers: { 'content-type': 'text/html' }, body: '<html><head><link rel="intertalk-metadata" href="http://127.0.0.1:9/meta.json"></head></html>' } },
    'nolink.test': { '/': { headers: { 'content-type': 'text/html' }, body: '<html><body><!-- <link rel="intertalk-server" href="https://x.test/"> --><p>rel="intertalk-server"</p></body></html>' } },
    'gone.test': { '/': { status: 404, body: 'no' } },
    'big.test': { '/': { headers: { 'content-type': 'text/html' }, body: `<html><body>${'x'.repeat(300 * 1024)}</body></html>` } },
  };
  let server: http.Server;
  let client: PeerHttp;
  let deadPort: number;

  before(async () => {
    server = http.createServer((req, res) => {
      const host = String(req.headers.host ?? '').split(':')[0]!;
      const page = sites[host]?.[req.url ?? '/'];
      if (!page) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(page.status ?? 200, page.headers ?? {}).end(page.body ?? '');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const dead = http.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    deadPort = (dead.address() as AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const names = [...Object.keys(sites)];
    client = new PeerHttp({
      resolve: new Map([...names.map((n) => [n, { host: '127.0.0.1', port }] as const), ['down.test', { host: '127.0.0.1', port: deadPort }]]),
      insecurePeers: new Set([...names, 'down.test', 'unlisted.test']),
      timeoutMs: 10_000,
      perPeerConcurrency: 4,
      userAgent: 'intertalk-test/1',
    });
  });
  after(async () => {
    await client.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('finds the server from a <link> element, a Link header and a metadata document', async () => {
    assert.deepEqual(await discoverPersonalServer(client, 'http://LINK.test'), {
      ok: true, profile: 'http://link.test/', server: 'https://pm.provider.test/', via: 'html', legacy: false,
    });
    assert.deepEqual(await discoverPersonalServer(client, 'http://header.test/'), {
      ok: true, profile: 'http://header.test/', server: 'https://pm.provider.test/', via: 'link-header', legacy: false,
    });
    assert.deepEqual(await discoverPersonalServer(client, 'http://meta.test/'), {
      ok: true, profile: 'http://meta.test/', server: 'https://pm.provider.test/', via: 'metadata', legacy: false,
    });
  });

  it('accepts a legacy-only rel="pm" page and says so', async () => {
    const r = await discoverPersonalServer(client, 'http://legacy.test/');
    assert.deepEqual(r, { ok: true, profile: 'http://legacy.test/', server: 'https://old.provider.test/', via: 'html', legacy: true });
  });

  it('names the failing step', async () => {
    const step = async (u: string) => {
      const r = await discoverPersonalServer(client, u);
      assert.equal(r.ok, false, u);
      return r.ok ? undefined : r.step;
    };
    assert.equal(await step('http://nolink.test/'), 'no_link');
    assert.equal(await step('http://gone.test/'), 'home_status');
    assert.equal(await step('http://down.test/'), 'home_unreachable');
    assert.equal(await step('http://badmeta.test/'), 'metadata_invalid');
    assert.equal(await step('http://big.test/'), 'home_unreachable');
    assert.equal(await step('ftp://link.test/'), 'bad_url');
  });

  it('refuses private addresses: IP literals, and names that resolve to non-public addresses', async () => {
    const literal = await discoverPersonalServer(client, 'http://127.0.0.1/');
    assert.equal(literal.ok, false);
    assert.equal(!literal.ok && literal.step, 'bad_url');
    const viaMeta = await discoverPersonalServer(client, 'http://private.test/');
    assert.equal(viaMeta.ok, false);
    assert.ok(!viaMeta.ok && viaMeta.step === 'metadata_unreachable' && viaMeta.policy === true, JSON.stringify(viaMeta));
    // localhost.localdomain-style names go through DNS and the address policy: "localhost" has no
    // dot and is refused before any lookup; a listed-insecure name not in `resolve` is looked up and
    // must resolve to a public address (unlisted.test does not resolve at all).
    const unlisted = await discoverPersonalServer(client, 'http://unlisted.test/');
    assert.equal(unlisted.ok, false);
    assert.equal(!unlisted.ok && unlisted.step, 'home_unreachable');
  });
});
