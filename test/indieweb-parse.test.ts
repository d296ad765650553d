// Pure personal-domain rules: IndieAuth-style profile URL canonicalisation and rel-link extraction
// from Link headers (http-link-header) and HTML (microformats-parser), with property tests.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  canonicalProfileUrl,
  relsFromHtml,
  relsFromLinkHeader,
  sameServer,
  serverFromMetadata,
} from '../src/indieweb/parse.js';

const label = fc.stringMatching(/^[a-z][a-z0-9]{0,10}$/);
const domain = fc.tuple(label, label, fc.constantFrom('test', 'example', 'org')).map(([a, b, c]) => `${a}.${b}.${c}`);
const mixCase = (s: string, mask: boolean[]) => [...s].map((ch, i) => (mask[i % Math.max(mask.length, 1)] ? ch.toUpperCase() : ch)).join('');

describe('canonicalProfileUrl', () => {
  it('a bare domain gets https:// and a trailing slash, host lowercased', () => {
    fc.assert(
      fc.property(domain, fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), (d, mask) => {
        const r = canonicalProfileUrl(mixCase(d, mask));
        assert.deepEqual(r, { ok: true, url: `https://${d}/`, host: d });
      }),
    );
  });

  it('is idempotent and keeps the path', () => {
    fc.assert(
      fc.property(domain, fc.constantFrom('http', 'https', 'HTTPS'), fc.stringMatching(/^(\/[a-z0-9]{1,5}){0,3}\/?$/), (d, scheme, path) => {
        const r = canonicalProfileUrl(`${scheme}://${d}${path}`);
        assert.ok(r.ok);
        assert.equal(r.url, `${scheme.toLowerCase()}://${d}${path === '' ? '/' : path}`);
        assert.deepEqual(canonicalProfileUrl(r.url), r);
      }),
    );
  });

  it('refuses other schemes, fragments, credentials, ports, IP addresses and single labels', () => {
    for (const bad of [
      'ftp://alice.test/',
      'javascript:alert(1)',
      'mailto:alice@alice.test',
      'https://alice.test/#me',
      'https://alice.test#',
      'https://bob:pw@alice.test/',
      'https://alice.test:8443/',
      'https://127.0.0.1/',
      'http://[::1]/',
      '10.0.0.1',
      'localhost',
      '',
    ]) {
      assert.equal(canonicalProfileUrl(bad).ok, false, bad);
    }
  });

  it('never throws and any accepted URL is http(s) with a lowercase host and no fragment', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        const r = canonicalProfileUrl(s);
        if (r.ok) {
          const u = new URL(r.url);
          assert.ok(u.protocol === 'https:' || u.protocol === 'http:');
          assert.equal(u.hostname, u.hostname.toLowerCase());
          assert.equal(u.hash, '');
          assert.equal(u.username + u.password, '');
        }
      }),
    );
  });
});

describe('rel links', () => {
  it('finds the server in <link> and <a> elements, resolved against the page', () => {
    const html = `<!doctype html><html><head><title>x</title>
      <link rel="me intertalk-server" href="/pm/">
      <link rel="pm" href="https://pm.alice.example/">
      </head><body><a rel="intertalk-metadata" href="meta.json">m</a>
      <p>rel="intertalk-server" href="https://decoy.example/" in text is not a link</p></body></html>`;
    const r = relsFromHtml(html, 'https://alice.test/home/');
    assert.deepEqual(r.server, ['https://alice.test/pm/']);
    assert.deepEqual(r.legacy, ['https://pm.alice.example/']);
    assert.deepEqual(r.metadata, ['https://alice.test/home/meta.json']);
  });

  it('ignores links inside comments and scripts, and non-http(s) hrefs', () => {
    const html = `<html><head><!-- <link rel="intertalk-server" href="https://c.example/"> -->
      <script>document.write('<link rel="intertalk-server" href="https://s.example/">')</script>
      <link rel="intertalk-server" href="javascript:alert(1)"></head></html>`;
    assert.deepEqual(relsFromHtml(html, 'https://alice.test/').server, []);
  });

  it('reads Link headers, several values and several links per value', () => {
    const r = relsFromLinkHeader(
      ['<https://pm.alice.example/>; rel="intertalk-server", </meta>; rel=intertalk-metadata', '</old>; rel="pm me"'],
      'https://alice.test/',
    );
    assert.deepEqual(r.server, ['https://pm.alice.example/']);
    assert.deepEqual(r.metadata, ['https://alice.test/meta']);
    assert.deepEqual(r.legacy, ['https://alice.test/old']);
  });

  it('never throws on arbitrary header values or HTML', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        relsFromLinkHeader(s, 'https://alice.test/');
        relsFromHtml(s, 'https://alice.test/');
      }),
    );
  });

  it('a generated link element is always found', () => {
    fc.assert(
      fc.property(domain, fc.constantFrom('intertalk-server', 'pm'), fc.boolean(), (d, rel, inHead) => {
        const link = `<link rel="${rel}" href="https://${d}/">`;
        const html = inHead ? `<html><head>${link}</head><body></body></html>` : `<html><body><p>hi</p>${link}</body></html>`;
        const r = relsFromHtml(html, 'https://alice.test/');
        assert.deepEqual(rel === 'pm' ? r.legacy : r.server, [`https://${d}/`]);
      }),
    );
  });

  it('metadata documents and server comparison', () => {
    assert.equal(serverFromMetadata({ server: '/x/' }, 'https://a.test/meta'), 'https://a.test/x/');
    assert.equal(serverFromMetadata({ server: 'ftp://a.test/' }, 'https://a.test/'), undefined);
    assert.equal(serverFromMetadata([], 'https://a.test/'), undefined);
    assert.ok(sameServer('https://PM.a.test/x', 'https://pm.a.test/y'));
    assert.ok(!sameServer('https://pm.a.test/', 'http://pm.a.test/'));
  });
});
