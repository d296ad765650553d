// Compact JWS signing on the calling thread, for the tokens of the hot path (one per federation
// request). jose 6 signs through WebCrypto, whose operations run on libuv's thread pool: ~140 µs
// on an idle machine, and under load the answer waits for the event loop's next turn (1–2 ms per
// token at 1 000 federated msgs/s, docs/performance.md). node:crypto's one-shot sign is the same
// OpenSSL primitive, synchronous (~30 µs for ES256). Only the encoding (RFC 7515 §7.1: two
// base64url JSON segments and the signature, ECDSA in its IEEE P1363 form per RFC 7518 §3.4)
// is ours; keys are generated and imported by jose, and every token is verified by jose
// (test/jws.test.ts checks jose accepts what this signs). docs/decisions.md says why.
import { KeyObject, sign } from 'node:crypto';
import type { CryptoKey } from 'jose';

/** The JWS algorithms we sign with (keys.ts SIGNING_ALGORITHMS) and node:crypto's digest for each. */
const DIGEST: Record<string, string | null> = { ES256: 'sha256', ES384: 'sha384', RS256: 'sha256', EdDSA: null };

export interface SyncSigner {
  alg: string;
  key: KeyObject;
}

/** A signer for `alg` from a private key jose imported. */
export function syncSigner(alg: string, key: CryptoKey | KeyObject): SyncSigner {
  if (!Object.hasOwn(DIGEST, alg)) throw new Error(`unsupported signing algorithm ${alg}`);
  const ko = key instanceof KeyObject ? key : KeyObject.from(key as unknown as Parameters<typeof KeyObject.from>[0]);
  if (ko.type !== 'private') throw new Error('a signer needs a private key');
  return { alg, key: ko };
}

const segment = (json: unknown) => Buffer.from(JSON.stringify(json), 'utf8').toString('base64url');

/** The compact serialisation of the JSON `payload` signed under `header` (alg is always the signer's, and first). */
export function signCompact(signer: SyncSigner, header: Record<string, unknown>, payload: unknown): string {
  const protectedHeader: Record<string, unknown> = { alg: signer.alg, ...header };
  protectedHeader.alg = signer.alg; // a header naming another alg does not win
  const input = `${segment(protectedHeader)}.${segment(payload)}`;
  // dsaEncoding applies to ECDSA only (RS256 and EdDSA ignore it).
  const sig = sign(DIGEST[signer.alg] ?? null, Buffer.from(input, 'ascii'), { key: signer.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}
