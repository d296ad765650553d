// `intertalk federation check DOMAIN`, first part: is DOMAIN a personal domain? Fetches its home
// page as delivery would (PeerHttp: public addresses only, INTERTALK_RESOLVE and
// INTERTALK_INSECURE_PEERS honoured, time and size limited) and reports the server it names, or
// the step that failed. Returns the provider domain to check federation with, or null.
import type { Config } from '../config/config.js';
import { PeerHttp } from '../federation/net.js';
import { discoverPersonalServer } from './discovery.js';

export async function personalDomainCheck(config: Config, domain: string, out: (s: string) => void): Promise<{ provider: string | null }> {
  const f = config.federation;
  const http = new PeerHttp({ resolve: f.resolve, insecurePeers: f.insecurePeers, timeoutMs: Math.min(f.requestTimeoutMs, 10_000), perPeerConcurrency: 2, userAgent: `intertalk-check/${config.domain}` });
  try {
    const url = `${f.insecurePeers.has(domain) ? 'http' : 'https'}://${domain}/`;
    out(`Checking whether ${domain} is a personal domain (home page ${url})`);
    const d = await discoverPersonalServer(http, url);
    if (!d.ok) {
      out(`  note  not a personal domain: ${d.step}: ${d.message}${d.policy ? ' (refused by our address policy)' : ''}`);
      return { provider: null };
    }
    const provider = new URL(d.server).hostname.toLowerCase();
    out(`  ok    ${domain} names ${d.server} (via ${d.via}${d.legacy ? ', legacy rel="pm"' : ''}); messages to it go to ${provider}`);
    const ours = new URL(`${config.publicUrl}/`).origin === new URL(d.server).origin;
    if (ours) out(`  note  that is this provider: attach it with PUT /me/domains/${domain}`);
    return { provider };
  } finally {
    await http.close();
  }
}
