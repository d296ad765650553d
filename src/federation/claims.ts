// Checks of an inbound federation token's header and claims against the message it came with
// (intertalk "Client Authentication"). Pure: no I/O, no signature check, the time is passed in.
// The signature itself is checked afterwards by FederationVerifier with the issuer's key.
//
// Order matters for the status: every authentication check (401) runs before the authorisation
// checks (403), so a caller without a valid token learns nothing about our users or policy.
import { domainOf, isValidDomain, parseAddress } from '../protocol/address.js';

/** Signature algorithms accepted on federation tokens. Never `none`, never HMAC (HS*). */
export const FEDERATION_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256'] as const;
export type FederationAlgorithm = (typeof FEDERATION_ALGORITHMS)[number];

/** Longest accepted token lifetime (exp − iat, or exp − now without iat), in seconds. */
export const MAX_TOKEN_LIFETIME_S = 300;
export const MAX_KID_LENGTH = 256;
export const MAX_JTI_LENGTH = 256;

export interface FederationClaimsInput {
  header: { alg?: unknown; kid?: unknown };
  payload: Record<string, unknown>;
  /** Our provider domain (lower case). */
  ourDomain: string;
  /** Current time, ms since the epoch. */
  now: number;
  /** Tolerated clock skew, ms. */
  skewMs: number;
  message: { from: string; to: string[] };
}

export type FederationClaimsResult =
  | {
      ok: true;
      /** The issuer domain, lower case. */
      iss: string;
      /** The sending user's address, lower case. */
      sub: string;
      /** The token id, or null when the token has none. */
      jti: string | null;
      /** The token's expiry as a JWT NumericDate (seconds since the epoch, may be fractional). */
      exp: number;
      alg: FederationAlgorithm;
      kid: string;
    }
  | { ok: false; status: 401 | 403; error: string; message: string };

type Failure = Extract<FederationClaimsResult, { ok: false }>;

const deny = (error: string, message: string): Failure => ({ ok: false, status: 401, error, message });
const forbid = (error: string, message: string): Failure => ({ ok: false, status: 403, error, message });

export function isFederationAlgorithm(alg: unknown): alg is FederationAlgorithm {
  return typeof alg === 'string' && (FEDERATION_ALGORITHMS as readonly string[]).includes(alg);
}

const isNumericDate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function checkFederationClaims(input: FederationClaimsInput): FederationClaimsResult {
  const { header, payload, now, skewMs, message } = input;
  const ourDomain = input.ourDomain.toLowerCase();
  const nowS = now / 1000;
  const skewS = skewMs / 1000;

  // --- header -------------------------------------------------------------------------------
  if (!isFederationAlgorithm(header.alg)) {
    const shown = typeof header.alg === 'string' ? `"${header.alg.slice(0, 20)}"` : 'missing';
    return deny('invalid_token', `token algorithm ${shown} is not accepted (use one of ${FEDERATION_ALGORITHMS.join(', ')})`);
  }
  if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > MAX_KID_LENGTH) {
    return deny('invalid_token', 'token header must name the signing key in "kid"');
  }

  // --- shapes of the claims -----------------------------------------------------------------
  const { aud, iss, sub, exp, nbf, iat, jti } = payload;
  if (typeof iss !== 'string' || iss.length === 0) return deny('invalid_token', 'token has no "iss" claim');
  if (typeof sub !== 'string' || sub.length === 0) return deny('invalid_token', 'token has no "sub" claim');
  if (aud === undefined) return deny('invalid_token', 'token has no "aud" claim');
  if (typeof aud !== 'string' && !(Array.isArray(aud) && aud.every((a) => typeof a === 'string'))) {
    return deny('invalid_token', '"aud" must be a string or an array of strings');
  }
  if (exp === undefined) return deny('invalid_token', 'token has no "exp" claim');
  if (!isNumericDate(exp)) return deny('invalid_token', '"exp" must be a number of seconds since the epoch');
  if (nbf !== undefined && !isNumericDate(nbf)) return deny('invalid_token', '"nbf" must be a number of seconds since the epoch');
  if (iat !== undefined && !isNumericDate(iat)) return deny('invalid_token', '"iat" must be a number of seconds since the epoch');
  if (jti !== undefined && (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH)) {
    return deny('invalid_token', `"jti" must be a string of 1 to ${MAX_JTI_LENGTH} characters`);
  }

  // --- audience, issuer, subject ------------------------------------------------------------
  const audiences = (typeof aud === 'string' ? [aud] : (aud as string[])).map((a) => a.toLowerCase());
  if (!audiences.includes(ourDomain)) return deny('wrong_audience', `token audience does not include ${ourDomain}`);

  const issuer = iss.toLowerCase();
  if (!isValidDomain(issuer)) return deny('issuer_mismatch', '"iss" must be the sending provider\'s domain');
  const subject = parseAddress(sub);
  if (!subject.ok) return deny('sender_mismatch', '"sub" must be the sending user\'s address');
  if (domainOf(subject.address.full) !== issuer) {
    return deny('issuer_mismatch', '"iss" must be the domain of the sending user ("sub")');
  }
  const from = message.from.toLowerCase();
  if (subject.address.full !== from) return deny('sender_mismatch', '"sub" must be the message\'s "from"');

  // --- validity period ----------------------------------------------------------------------
  // Same boundary as jose: expired when exp <= now − tolerance.
  if (exp <= nowS - skewS) return deny('token_expired', 'token has expired');
  if (nbf !== undefined && nbf > nowS + skewS) return deny('token_not_yet_valid', 'token is not valid yet ("nbf")');
  if (iat !== undefined && iat > nowS + skewS) return deny('token_not_yet_valid', 'token was issued in the future ("iat")');
  const lifetime = exp - (iat ?? nowS);
  if (lifetime > MAX_TOKEN_LIFETIME_S) {
    return deny('token_lifetime_too_long', `token lifetime exceeds ${MAX_TOKEN_LIFETIME_S} seconds`);
  }

  // --- authorisation: the message itself ----------------------------------------------------
  const to = message.to.map((a) => a.toLowerCase());
  if (!to.includes(from)) return forbid('sender_not_participant', 'the sender ("from") must be one of the participants ("to")');
  if (!to.some((a) => domainOf(a) === ourDomain)) {
    return forbid('no_local_recipient', `no recipient of this message is a user of ${ourDomain}`);
  }

  return {
    ok: true,
    iss: issuer,
    sub: subject.address.full,
    jti: typeof jti === 'string' ? jti : null,
    exp,
    alg: header.alg,
    kid: header.kid,
  };
}
