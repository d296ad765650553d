// Pure rules for personal domains (seed 001, IndieWeb private-messaging brainstorm):
// IndieAuth-style canonicalisation of a profile URL and extraction of the rel links that point at
// the server acting for the domain, from an HTTP `Link` header (http-link-header) and from the home
// page HTML (microformats-parser, built on parse5). No regular expressions over HTML.
import LinkHeader from 'http-link-header';
import { mf2 } from 'microformats-parser';

/** The rel we publish and prefer. */
export const REL_SERVER = 'intertalk-server';
/** The seed's placeholder rel, accepted for legacy pages. */
export const REL_LEGACY = 'pm';
/** A rel pointing at a JSON metadata document `{ "server": "https://…" }`. */
export const REL_METADATA = 'intertalk-metadata';

export type CanonicalResult = { ok: true; url: string; host: string } | { ok: false; message: string };

/**
 * IndieAuth profile URL canonicalisation: a bare domain gets `https://` and a trailing slash; the
 * scheme must be http(s); host lowercased; no fragment, no credentials, no port other than the
 * default, no IP address literal; a URL without a path gets `/`.
 */
export function canonicalProfileUrl(input: string): CanonicalResult {
  const raw = input.trim();
  if (raw.length === 0 || raw.length > 2048) return { ok: false, message: 'empty or too long' };
  const withScheme = /^[a-z][a-z0-9+.-]*:/i.test(raw) ? raw : `https://${raw}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    return { ok: false, message: 'not a URL' };
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return { ok: false, message: 'only http(s) URLs' };
  if (u.username || u.password) return { ok: false, message: 'credentials are not allowed' };
  if (u.hash || withScheme.includes('#')) return { ok: false, message: 'fragments are not allowed' };
  if (u.port) return { ok: false, message: 'ports are not allowed' };
  const host = u.hostname.toLowerCase();
  if (host.startsWith('[') || /^[0-9.]+$/.test(host)) return { ok: false, message: 'IP addresses are not allowed' };
  if (!host.includes('.') || host.endsWith('.')) return { ok: false, message: 'not a domain name' };
  if (u.pathname.split('/').some((seg) => seg === '.' || seg === '..')) return { ok: false, message: 'dot segments are not allowed' };
  return { ok: true, url: `${u.protocol}//${host}${u.pathname || '/'}${u.search}`, host };
}

function absolute(href: string, base: string): string | undefined {
  try {
    const u = new URL(href, base);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return undefined;
    u.hash = '';
    return u.href;
  } catch {
    return undefined;
  }
}

export interface RelLinks {
  server: string[];
  legacy: string[];
  metadata: string[];
}

const empty = (): RelLinks => ({ server: [], legacy: [], metadata: [] });

/** Rel links from one or more `Link` header values, resolved against `base`. */
export function relsFromLinkHeader(values: string | string[] | undefined, base: string): RelLinks {
  const out = empty();
  const list = values === undefined ? [] : Array.isArray(values) ? values : [values];
  for (const v of list) {
    let parsed: LinkHeader;
    try {
      parsed = LinkHeader.parse(v);
    } catch {
      continue;
    }
    for (const [rel, key] of [[REL_SERVER, 'server'], [REL_LEGACY, 'legacy'], [REL_METADATA, 'metadata']] as const) {
      for (const ref of parsed.rel(rel)) {
        const abs = absolute(ref.uri, base);
        if (abs && !out[key].includes(abs)) out[key].push(abs);
      }
    }
  }
  return out;
}

/** Rel links from the home page HTML (`<link>` and `<a>` elements), via microformats-parser. */
export function relsFromHtml(html: string, base: string): RelLinks {
  const out = empty();
  let rels: Record<string, string[]>;
  try {
    rels = mf2(html, { baseUrl: base }).rels;
  } catch {
    // microformats-parser refuses a document whose <body> has no element; a page with only
    // <head> links is still valid for us, so parse it once more with an empty element appended.
    try {
      rels = mf2(`${html}<p></p>`, { baseUrl: base }).rels;
    } catch {
      return out;
    }
  }
  for (const [rel, key] of [[REL_SERVER, 'server'], [REL_LEGACY, 'legacy'], [REL_METADATA, 'metadata']] as const) {
    for (const href of rels[rel] ?? []) {
      const abs = absolute(href, base);
      if (abs && !out[key].includes(abs)) out[key].push(abs);
    }
  }
  return out;
}

/** Header links first (they are seen before the body), then HTML. */
export function mergeRels(a: RelLinks, b: RelLinks): RelLinks {
  const out = empty();
  for (const key of ['server', 'legacy', 'metadata'] as const) out[key] = [...new Set([...a[key], ...b[key]])];
  return out;
}

/** The server URL from a metadata document, or undefined when it is malformed. */
export function serverFromMetadata(json: unknown, base: string): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const s = (json as Record<string, unknown>).server;
  return typeof s === 'string' && s.length <= 2048 ? absolute(s, base) : undefined;
}

/** Two server URLs name the same server when their origins are equal (host case-insensitive). */
export function sameServer(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}
