// `intertalk federation check DOMAIN`: walks every step between us and a peer and says, in plain
// words, what works and what does not. Against our own domain it shows how others see us.
import { lookup } from 'node:dns/promises';
import type { Config } from '../config/config.js';
import { openStorage } from '../storage/db.js';
import { systemClock } from '../util/clock.js';
import { SigningKeys } from './keys.js';
import { PeerHttp, PeerNetworkError, isPublicAddress } from './net.js';
import { Discovery } from './discovery.js';
import { sanitisePeerJwk } from './peer-keys.js';

export async function federationCheck(config: Config, domain: string, out: (s: string) => void): Promise<boolean> {
  const f = config.federation;
  let ok = true;
  const pass = (s: string) => out(`  ok    ${s}`);
  const fail = (s: string, hint?: string) => {
    ok = false;
    out(`  FAIL  ${s}`);
    if (hint) out(`        → ${hint}`);
  };
  const note = (s: string) => out(`  note  ${s}`);
  const self = domain === config.domain;
  out(`Checking federation between ${config.domain} (us) and ${domain}${self ? ' — our own domain, as other providers see it' : ''}`);

  // 1. Where is it?
  const override = f.resolve.get(domain);
  if (override) note(`INTERTALK_RESOLVE sends ${domain} to ${override.host}:${override.port}`);
  else {
    try {
      const addrs = await lookup(domain, { all: true });
      const pub = addrs.filter((a) => isPublicAddress(a.address));
      if (pub.length === 0) fail(`${domain} resolves only to non-public addresses (${addrs.map((a) => a.address).join(', ')})`, 'federation never connects to private or loopback addresses; publish a public address, or add the domain to INTERTALK_RESOLVE for a test network');
      else pass(`${domain} resolves to ${pub.map((a) => a.address).join(', ')}`);
    } catch (err) {
      fail(`${domain} does not resolve in DNS (${(err as Error).message})`, 'check the domain name and its A/AAAA records');
    }
  }
  if (f.insecurePeers.has(domain)) note(`${domain} is in INTERTALK_INSECURE_PEERS: plain HTTP is used and users are warned`);

  const http = new PeerHttp({ resolve: f.resolve, insecurePeers: f.insecurePeers, timeoutMs: Math.min(f.requestTimeoutMs, 10_000), perPeerConcurrency: 2, userAgent: `intertalk-check/${config.domain}` });
  const discovery = new Discovery({ http, clock: systemClock, ttlMs: 0, insecurePeers: f.insecurePeers });
  const storage = await openStorage(config.database);
  try {
    // 2. Delegation (/.well-known/intertalk) and TLS.
    let base: string;
    try {
      const info = await discovery.resolve(domain);
      base = info.baseUrl;
      if (info.delegated) pass(`/.well-known/intertalk delegates to ${info.baseUrl} (versions: ${info.versions.join(', ') || 'none'}; extensions: ${info.extensions.join(', ') || 'none'})`);
      else pass(`no delegation document; the provider is at ${info.baseUrl}`);
      if (!info.insecure) pass(`TLS certificate of ${domain} is valid and trusted`);
    } catch (err) {
      const e = err as PeerNetworkError;
      fail(`cannot reach https://${domain}/.well-known/intertalk: ${e.message}`, e.code === 'tls' ? 'the certificate must be valid for the domain and chain to a trusted CA (Node trust store + NODE_EXTRA_CA_CERTS)' : 'is the provider running and reachable on port 443 (or delegated)?');
      return false;
    }

    // 3. Keys and clock.
    try {
      const res = await http.request(`${base}/keys`, { method: 'GET', maxResponseBytes: 256 * 1024 });
      const date = res.headers.date;
      if (typeof date === 'string' && Number.isFinite(Date.parse(date))) {
        const skew = Math.abs(Date.parse(date) - Date.now());
        if (skew > config.clockSkewMs) fail(`clock skew with ${domain} is about ${Math.round(skew / 1000)} s`, 'tokens live 60 s; run NTP on both machines');
        else pass(`clocks agree (skew under ${Math.max(1, Math.round(skew / 1000))} s)`);
      }
      if (res.status !== 200) fail(`GET ${base}/keys answered ${res.status}`, 'a provider must publish its JWK Set at /keys');
      else {
        const set = JSON.parse(res.body.toString('utf8')) as { keys?: unknown[] };
        const keys = (Array.isArray(set.keys) ? set.keys : []).map(sanitisePeerJwk).filter((k) => k !== null);
        if (keys.length === 0) fail(`${domain} publishes no usable public key at /keys`);
        else pass(`${domain} publishes ${keys.length} signing key(s): ${keys.map((k) => `${k!.kid ?? '?'} (${k!.alg ?? k!.kty})`).join(', ')}`);
      }
    } catch (err) {
      fail(`cannot fetch ${base}/keys: ${(err as Error).message}`);
    }

    // 4. A signed request both ways: they verify our token against our /keys.
    const keys = new SigningKeys(storage.db, { domain: config.domain, clock: systemClock, graceMs: f.keyGraceMs });
    await keys.ensure();
    const token = await keys.sign({ aud: domain, sub: `postmaster@${config.domain}` });
    try {
      const res = await http.request(`${base}/federation/ping`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
      const body = res.body.toString('utf8');
      if (res.status === 200) pass(`${domain} fetched our keys and accepted a token signed by us`);
      else if (res.status === 404) note(`${domain} does not offer /federation/ping (not an intertalk provider of this kind); the reverse direction cannot be tested from here`);
      else fail(`${domain} refused our signed token: ${res.status} ${body.slice(0, 300)}`, res.status === 503 ? `${domain} cannot fetch our keys: is ${config.publicUrl} reachable from there as https://${config.domain}?` : 'see the reason above');
    } catch (err) {
      fail(`signed test request to ${domain} failed: ${(err as Error).message}`);
    }
  } finally {
    await http.close();
    await storage.close();
  }
  out(ok ? `Federation with ${domain} looks right.` : `Federation with ${domain} has problems (see FAIL lines).`);
  return ok;
}
