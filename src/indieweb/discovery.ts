// Discovery of the server acting for a personal domain: fetch the home page through PeerHttp (SSRF
// policy, timeouts, size limit), read rel links from the Link header and the HTML, follow a
// metadata document link if that is all there is. Errors name the failing step.
import { PeerHttp, PeerNetworkError } from '../federation/net.js';
import {
  canonicalProfileUrl,
  mergeRels,
  relsFromHtml,
  relsFromLinkHeader,
  serverFromMetadata,
} from './parse.js';

export type DiscoveryStep = 'bad_url' | 'home_unreachable' | 'home_status' | 'no_link' | 'metadata_unreachable' | 'metadata_invalid';

export type PersonalDiscovery =
  | { ok: true; profile: string; server: string; via: 'link-header' | 'html' | 'metadata'; legacy: boolean }
  | { ok: false; profile: string; step: DiscoveryStep; message: string; policy?: boolean };

export const HOME_PAGE_MAX_BYTES = 256 * 1024;
export const METADATA_MAX_BYTES = 16 * 1024;

export async function discoverPersonalServer(http: PeerHttp, input: string, opts: { timeoutMs?: number } = {}): Promise<PersonalDiscovery> {
  const canon = canonicalProfileUrl(input);
  if (!canon.ok) return { ok: false, profile: input, step: 'bad_url', message: canon.message };
  const profile = canon.url;
  const t = opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {};
  let res;
  try {
    res = await http.request(profile, { method: 'GET', headers: { accept: 'text/html' }, maxResponseBytes: HOME_PAGE_MAX_BYTES, ...t });
  } catch (err) {
    const e = err instanceof PeerNetworkError ? err : undefined;
    return { ok: false, profile, step: 'home_unreachable', message: `home page ${profile}: ${(err as Error).message}`, ...(e ? { policy: e.policy } : {}) };
  }
  if (res.status !== 200) return { ok: false, profile, step: 'home_status', message: `home page ${profile} answered HTTP ${res.status}` };
  const fromHeader = relsFromLinkHeader(res.headers.link, profile);
  const ctype = String(res.headers['content-type'] ?? '');
  const fromHtml = ctype.includes('html') ? relsFromHtml(res.body.toString('utf8'), profile) : relsFromLinkHeader(undefined, profile);
  const rels = mergeRels(fromHeader, fromHtml);
  const pick = (list: string[]) => list[0];
  const headerHas = (u: string | undefined) => u !== undefined && [...fromHeader.server, ...fromHeader.legacy].includes(u);
  const direct = pick(rels.server) ?? pick(rels.legacy);
  if (direct) {
    return { ok: true, profile, server: direct, via: headerHas(direct) ? 'link-header' : 'html', legacy: rels.server.length === 0 };
  }
  const meta = pick(rels.metadata);
  if (!meta) return { ok: false, profile, step: 'no_link', message: `no rel="intertalk-server", rel="pm" or rel="intertalk-metadata" link on ${profile}` };
  let m;
  try {
    m = await http.getJson(meta, { maxResponseBytes: METADATA_MAX_BYTES, ...t });
  } catch (err) {
    const e = err instanceof PeerNetworkError ? err : undefined;
    return { ok: false, profile, step: 'metadata_unreachable', message: `metadata ${meta}: ${(err as Error).message}`, ...(e ? { policy: e.policy } : {}) };
  }
  const server = m.status === 200 ? serverFromMetadata(m.json, meta) : undefined;
  if (!server) return { ok: false, profile, step: 'metadata_invalid', message: `metadata ${meta}: HTTP ${m.status}, no "server" URL` };
  return { ok: true, profile, server, via: 'metadata', legacy: false };
}
