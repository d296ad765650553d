// Real Chromium (Debian's /usr/bin/chromium, driven by playwright-core) against a devnet of real
// providers (src/devnet/network.ts): verified HTTPS with a throw-away CA, each provider at its own
// *.test domain.
//
// How the browser reaches them without a CA import or any global "ignore certificate errors":
// * --host-resolver-rules maps each devnet domain to 127.0.0.1, so pages are opened at
//   https://ecorp.test:PORT/ — the origin the certificates are issued for;
// * --ignore-certificate-errors-spki-list trusts exactly the devnet providers' own keys (SHA-256
//   of each leaf certificate's public key). Any other certificate is still checked, and the pages
//   are secure contexts (crypto, notifications) as in production.
// Chromium gets a fresh profile (--user-data-dir) from chromium.launch, which creates a temporary
// one and deletes it on close (playwright refuses an explicit --user-data-dir with launch()).
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { deflateSync } from 'node:zlib';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import type { Network } from '../../src/devnet/network.js';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** base64(SHA-256(SubjectPublicKeyInfo)) of a PEM private key's public half. */
export function spkiHash(keyPem: string): string {
  const der = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

export async function launchFor(net: Network): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's Chromium (apt-get install chromium)`);
  const nodes = [...net.nodes.values()];
  const rules = nodes.map((n) => `MAP ${n.domain} 127.0.0.1`).join(', ');
  const spki = nodes.map((n) => spkiHash(readFileSync(n.env.INTERTALK_TLS_KEY!, 'utf8'))).join(',');
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [...CHROMIUM_ARGS, `--host-resolver-rules=${rules}`, `--ignore-certificate-errors-spki-list=${spki}`],
  });
}

/** The origin a browser uses for a devnet provider. */
/**
 * A test step of a browser story. When it fails, the error also tells what each page showed,
 * and screenshots of the pages are left in the temp directory (for CI logs), named
 * `intertalk-e2e{prefix}-{step}-{label}.png`.
 */
export function storyStep(prefix: string, pages: () => Array<readonly [string, Page | undefined]>) {
  return (name: string, fn: () => Promise<void> | void) =>
    it(name, async () => {
      try {
        await fn();
      } catch (err) {
        const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40);
        const state: string[] = [];
        for (const [label, p] of pages()) {
          if (!p || p.isClosed()) continue;
          const file = join(tmpdir(), `intertalk-e2e${prefix}-${slug}-${label}.png`);
          await p.screenshot({ path: file, timeout: 5000 }).catch(() => undefined);
          const text = await p.locator('body').innerText({ timeout: 2000 }).catch((e: Error) => `(no text: ${e.message})`);
          state.push(`--- ${label} (${p.url()}; ${file}):\n${text.slice(0, 1500)}`);
        }
        throw new Error(`${err instanceof Error ? err.message : String(err)}\n${state.join('\n')}`, { cause: err });
      }
    });
}

export function originOf(net: Network, domain: string): string {
  return `https://${domain}:${net.node(domain).port}`;
}

/** Polls until `probe` is truthy; fails with `what`. */
export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err instanceof Error ? err.message : err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The accessible names (aria-label) of the elements a locator matches, in document order. */
export async function names(loc: Locator): Promise<string[]> {
  const out: string[] = [];
  for (const l of await loc.all()) out.push((await l.getAttribute('aria-label')) ?? '');
  return out;
}

/** Records console errors, page errors and Content-Security-Policy violations of a page. */
export function watch(page: Page, label: string): { errors: string[]; csp: string[] } {
  const errors: string[] = [];
  const csp: string[] = [];
  page.on('pageerror', (err) => errors.push(`${label}: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content.Security.Policy|Refused to/i.test(text)) csp.push(`${label}: ${text}`);
  });
  return { errors, csp };
}

// A small PNG (no image library): a sunset gradient with a sun, for the attachment test and the
// screenshots.
const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

export function picturePng(width = 320, height = 200): Buffer {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0;
    for (let x = 0; x < width; x++) {
      const t = y / height;
      let r = Math.round(255 * (0.98 - 0.35 * t));
      let g = Math.round(255 * (0.62 - 0.3 * t));
      let b = Math.round(255 * (0.35 + 0.35 * t));
      const dx = x - width * 0.68;
      const dy = y - height * 0.55;
      if (dx * dx + dy * dy < (height * 0.2) ** 2) [r, g, b] = [255, 236, 170];
      if (y > height * 0.72 + Math.sin(x / 23) * 6) [r, g, b] = [Math.round(40 + 20 * t), Math.round(60 + 30 * t), Math.round(110 + 20 * t)];
      raw[row + 1 + x * 3] = r;
      raw[row + 2 + x * 3] = g;
      raw[row + 3 + x * 3] = b;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
