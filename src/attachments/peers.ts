// What attachments need from federation: verify a peer's download token, sign ours, find a
// peer's base URL (discovery) and GET from it through PeerHttp (transport policy, SSRF guard,
// size cap). Adapted from the Federation object when the provider federates.
import { decodeJwt } from 'jose';
import type { FederationPort } from '../context.js';
import type { Federation } from '../federation/service.js';
import type { FederationAuthResult } from '../federation/verify.js';
import type { PeerResponse } from '../federation/net.js';

export interface AttachmentPeers {
  /**
   * Authenticates a peer provider's request for a file: a JWT signed by the peer (iss = its
   * domain, sub = one of its users, aud = us), bound to `request` for the replay check.
   */
  verify(authorization: string | undefined, request: string): Promise<FederationAuthResult>;
  /** A token of ours for `aud` (the peer's domain), on behalf of our user `sub`. */
  sign(aud: string, sub: string): Promise<string>;
  /** The peer's intertalk base URL (well-known discovery); throws PeerNetworkError. */
  baseUrl(domain: string): Promise<string>;
  /** GET through PeerHttp; throws PeerNetworkError. */
  get(url: string, headers: Record<string, string>, maxResponseBytes: number, timeoutMs?: number): Promise<PeerResponse>;
}

/** The adapter over a Federation instance, or null when the provider does not federate. */
export function peersOf(port: FederationPort | null, ourDomain: string): AttachmentPeers | null {
  const f = port as Partial<Federation> | null;
  if (!f || !f.verifier || !f.keys || !f.discovery || !f.http) return null;
  const { verifier, keys, discovery, http } = f as Federation;
  return {
    async verify(authorization, request) {
      let sub: unknown;
      try {
        sub = decodeJwt((authorization ?? '').replace(/^Bearer\s+/i, '').trim()).sub;
      } catch {
        sub = undefined;
      }
      if (typeof sub !== 'string') return { ok: false, status: 401, error: 'invalid_token', message: 'send a JWT signed by your provider, with sub = one of your users' };
      // The claims check wants a message: "from" the token's subject to a user of ours.
      return verifier.verify(authorization, request, { from: sub, to: [sub, `postmaster@${ourDomain}`] });
    },
    sign: (aud, sub) => keys.sign({ aud, sub }),
    baseUrl: async (domain) => (await discovery.resolve(domain)).baseUrl,
    get: (url, headers, maxResponseBytes, timeoutMs) =>
      http.request(url, { method: 'GET', headers, maxResponseBytes, ...(timeoutMs !== undefined ? { timeoutMs } : {}) }),
  };
}
