// What rooms need from federation (src/federation/), adapted from the Federation object when the
// provider federates: verify a peer's user token (PUT/DELETE /rooms/…/members/…) and a host's
// provider token bound to the body (POST /roomMessages) with the same verifier, key cache and
// replay table as inbound POST /messages; sign ours; verify and make signed room messages (JWS);
// reach peers through discovery and PeerHttp (transport policy, SSRF guard, size caps).
import { compactVerify, decodeJwt, decodeProtectedHeader, importJWK, type JWK } from 'jose';
import type { FederationPort } from '../context.js';
import type { Federation } from '../federation/service.js';
import type { BatchAuthResult, FederationAuthResult, IssuerGate } from '../federation/verify.js';
import type { PeerRequestInit, PeerResponse } from '../federation/net.js';
import { FEDERATION_ALGORITHMS } from '../federation/claims.js';
import { BODY_HASH_CLAIM } from '../federation/claims.js';
import { bodySha256 } from '../federation/batch.js';
import { domainOf, parseAddress } from '../protocol/address.js';

export interface RoomPeers {
  /** Our domain. */
  domain: string;
  /**
   * A peer's token on behalf of one of its users (iss = the user's domain, sub = the user, aud =
   * us), checked like POST /messages, bound to `request` (method, path and body) for the replay
   * check: the same token for any other request is refused.
   */
  verifyUser(authorization: string | undefined, request: string, gate?: IssuerGate): Promise<FederationAuthResult>;
  /** A provider token (sub = iss) bound to the exact body by body_sha256 (as batch/1). */
  verifyProvider(authorization: string | undefined, rawBody: Buffer | string, gate?: IssuerGate): Promise<BatchAuthResult>;
  /** Our token for `aud` on behalf of our user `sub`. */
  signUser(aud: string, sub: string): Promise<string>;
  /** Our provider token for `aud`, bound to `body`. */
  signProvider(aud: string, body: string): Promise<string>;
  /** A compact JWS of `payload` with our current key. */
  signJws(payload: Record<string, unknown>): Promise<string>;
  /** Checks a signed room message (see verifyRoomJws). */
  verifyJws(jws: unknown): Promise<JwsResult>;
  /** The peer's intertalk base URL (discovery); throws PeerNetworkError. */
  baseUrl(domain: string): Promise<string>;
  /** A request through PeerHttp; throws PeerNetworkError. */
  request(url: string, init: PeerRequestInit): Promise<PeerResponse>;
  /** Forget what discovery knows of a peer (after a network error). */
  invalidate(domain: string): void;
  /** Our blocklist. */
  isBlocked(domain: string): Promise<boolean>;
}

export type JwsResult =
  | { ok: true; payload: Record<string, unknown>; from: string; insecureKeys: boolean }
  | { ok: false; status: number; error: string; message: string; retryAfterSeconds?: number };

/** Largest signed room message we look at (a message of 16 384 characters, formatted twice). */
export const MAX_JWS_LENGTH = 200_000;
const JWS_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The adapter over a Federation instance, or null when the provider does not federate. */
export function roomPeersOf(port: FederationPort | null, ourDomain: string): RoomPeers | null {
  const f = port as Partial<Federation> | null;
  if (!f || !f.verifier || !f.keys || !f.discovery || !f.http || !f.peerKeys || !f.blocklist) return null;
  const { verifier, keys, discovery, http, peerKeys, blocklist } = f as Federation;
  const imported = new Map<string, Awaited<ReturnType<typeof importJWK>>>();

  const fail = (status: number, error: string, message: string, retryAfterSeconds?: number): JwsResult => ({ ok: false, status, error, message, ...(retryAfterSeconds ? { retryAfterSeconds } : {}) });

  async function check(jws: string, jwk: JWK, alg: string): Promise<'ok' | 'bad' | 'unusable'> {
    if (jwk.alg !== undefined && jwk.alg !== alg) return 'unusable';
    const cacheKey = `${alg}\n${JSON.stringify(jwk)}`;
    let key = imported.get(cacheKey);
    if (key === undefined) {
      try {
        key = await importJWK(jwk, alg);
      } catch {
        return 'unusable';
      }
      if (imported.size >= 1000) imported.clear();
      imported.set(cacheKey, key);
    }
    if (key instanceof Uint8Array) return 'unusable';
    try {
      await compactVerify(jws, key, { algorithms: [...FEDERATION_ALGORITHMS] });
      return 'ok';
    } catch {
      return 'bad';
    }
  }

  /**
   * A signed room message: a compact JWS whose payload is the room message (JSON with `from`),
   * signed with a key of the domain of `from` (ours: from our key table; a peer's: from its
   * /keys, cached, re-fetched once when a cached key does not verify).
   */
  async function verifyJws(jws: unknown): Promise<JwsResult> {
    if (typeof jws !== 'string' || jws.length > MAX_JWS_LENGTH || !JWS_SHAPE.test(jws)) return fail(400, 'invalid_jws', 'the body must be a signed room message: a compact JWS (header.payload.signature)');
    let header: ReturnType<typeof decodeProtectedHeader>;
    let payload: unknown;
    try {
      header = decodeProtectedHeader(jws);
      payload = JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8'));
    } catch {
      return fail(400, 'invalid_jws', 'the JWS header or payload is not JSON');
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return fail(400, 'invalid_jws', 'the JWS payload must be a room message (a JSON object)');
    const p = payload as Record<string, unknown>;
    const from = parseAddress(p.from);
    if (!from.ok) return fail(400, 'invalid_message', `from: ${from.reason}`);
    const alg = header.alg;
    if (typeof alg !== 'string' || !(FEDERATION_ALGORITHMS as readonly string[]).includes(alg)) return fail(401, 'invalid_jws', `the JWS algorithm must be one of ${FEDERATION_ALGORITHMS.join(', ')}`);
    if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > 256) return fail(401, 'invalid_jws', 'the JWS header must name the signing key in "kid"');
    const kid = header.kid;
    const signer = domainOf(from.address.full);
    if (signer === ourDomain) {
      const jwk = await keys.publicJwk(kid);
      if (!jwk) return fail(401, 'unknown_key', `${ourDomain} has no key with this kid`);
      const r = await check(jws, jwk, alg);
      return r === 'ok' ? { ok: true, payload: p, from: from.address.full, insecureKeys: false } : fail(401, 'bad_signature', `the signature does not verify with the key of ${signer}`);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const k = await peerKeys.getKey(signer, kid, attempt === 0 ? {} : { forceRefresh: true });
      if (k.status === 'unknown') return fail(401, 'unknown_key', `${signer} publishes no key with this kid over a channel we trust`);
      if (k.status === 'unavailable') return fail(503, 'keys_unavailable', `the signing keys of ${signer} cannot be fetched right now`, k.retryAfterSeconds);
      const r = await check(jws, k.jwk, alg);
      if (r === 'ok') return { ok: true, payload: p, from: from.address.full, insecureKeys: k.insecure };
      if (r === 'unusable' || !k.cached) break;
    }
    return fail(401, 'bad_signature', `the signature does not verify with the key of ${signer}`);
  }

  return {
    domain: ourDomain,
    async verifyUser(authorization, request, gate) {
      let sub: unknown;
      try {
        sub = decodeJwt((authorization ?? '').replace(/^Bearer\s+/i, '').trim()).sub;
      } catch {
        sub = undefined;
      }
      if (typeof sub !== 'string') return { ok: false, status: 401, error: 'invalid_token', message: 'send a JWT signed by your provider, with sub = the user' };
      // The claims check wants a message: "from" the token's subject to someone here.
      return verifier.verify(authorization, request, { from: sub, to: [sub, `rooms@${ourDomain}`] }, gate);
    },
    verifyProvider: (authorization, rawBody, gate) => verifier.verifyBatch(authorization, rawBody, gate),
    signUser: (aud, sub) => keys.sign({ aud, sub }),
    signProvider: (aud, body) => keys.sign({ aud, sub: ourDomain }, { [BODY_HASH_CLAIM]: bodySha256(body) }),
    signJws: (payload) => keys.signJws(payload),
    verifyJws,
    baseUrl: async (domain) => (await discovery.resolve(domain)).baseUrl,
    request: (url, init) => http.request(url, init),
    invalidate: (domain) => discovery.invalidate(domain),
    isBlocked: (domain) => blocklist.isBlocked(domain),
  };
}
