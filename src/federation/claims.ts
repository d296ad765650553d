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
  /**
   * Personal domains (src/indieweb/): a `sub` at a domain other than `iss` (and other than ours)
   * passes here as `delegated`; the caller must then prove the delegation (the domain's home page
   * names the issuer) once the signature verifies. Without it such a token is `issuer_mismatch`.
   */
  allowDelegated?: boolean;
  /** Is an address one of ours (our domain, or a personal domain delegated to us)? Default: our domain. */
  isLocal?: (address: string) => boolean;
}

/** What a checked token says: the claims both kinds of token share. */
interface TokenBasics {
  /** The issuer domain, lower case. */
  iss: string;
  /** The sending user's address, lower case (a batch token: the provider's domain). */
  sub: string;
  /** The token id, or null when the token has none. */
  jti: string | null;
  /** The token's expiry as a JWT NumericDate (seconds since the epoch, may be fractional). */
  exp: number;
  alg: FederationAlgorithm;
  kid: string;
}

export type FederationClaimsResult = ({ ok: true; delegated?: string } & TokenBasics) | { ok: false; status: 401 | 403; error: string; message: string };

type Failure = Extract<FederationClaimsResult, { ok: false }>;

const deny = (error: string, message: string): Failure => ({ ok: false, status: 401, error, message });
const forbid = (error: string, message: string): Failure => ({ ok: false, status: 403, error, message });

export function isFederationAlgorithm(alg: unknown): alg is FederationAlgorithm {
  return typeof alg === 'string' && (FEDERATION_ALGORITHMS as readonly string[]).includes(alg);
}

const isNumericDate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** What both kinds of token share: header, claim shapes, audience, issuer and validity period. */
function checkTokenBasics(input: { header: { alg?: unknown; kid?: unknown }; payload: Record<string, unknown>; ourDomain: string; now: number; skewMs: number }): { ok: true; t: TokenBasics; validity: () => Failure | null } | Failure {
  const { header, payload, now, skewMs } = input;
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

  // --- audience, issuer ---------------------------------------------------------------------
  const audiences = (typeof aud === 'string' ? [aud] : (aud as string[])).map((a) => a.toLowerCase());
  if (!audiences.includes(ourDomain)) return deny('wrong_audience', `token audience does not include ${ourDomain}`);
  const issuer = iss.toLowerCase();
  if (!isValidDomain(issuer)) return deny('issuer_mismatch', '"iss" must be the sending provider\'s domain');

  // --- validity period (checked by the caller after the subject, to keep the error order) ----
  const validity = (): Failure | null => {
    // Same boundary as jose: expired when exp <= now − tolerance.
    if (exp <= nowS - skewS) return deny('token_expired', 'token has expired');
    if (nbf !== undefined && nbf > nowS + skewS) return deny('token_not_yet_valid', 'token is not valid yet ("nbf")');
    if (iat !== undefined && iat > nowS + skewS) return deny('token_not_yet_valid', 'token was issued in the future ("iat")');
    const lifetime = exp - (iat ?? nowS);
    if (lifetime > MAX_TOKEN_LIFETIME_S) {
      return deny('token_lifetime_too_long', `token lifetime exceeds ${MAX_TOKEN_LIFETIME_S} seconds`);
    }
    return null;
  };
  return { ok: true, t: { iss: issuer, sub, jti: typeof jti === 'string' ? jti : null, exp, alg: header.alg, kid: header.kid }, validity };
}

/**
 * `sub` is a user's address at `iss`: the address (lower case), or the refusal. With
 * `allowDelegated`, an address at another domain (never ours) passes as `delegated` (that domain).
 */
function checkSubject(t: TokenBasics, opts: { ourDomain: string; allowDelegated?: boolean; isLocal?: (a: string) => boolean }): { ok: true; sub: string; delegated?: string } | Failure {
  const subject = parseAddress(t.sub);
  if (!subject.ok) return deny('sender_mismatch', '"sub" must be the sending user\'s address');
  const domain = domainOf(subject.address.full);
  if (domain !== t.iss) {
    const ours = domain === opts.ourDomain.toLowerCase() || (opts.isLocal?.(subject.address.full) ?? false);
    if (opts.allowDelegated && !ours) return { ok: true, sub: subject.address.full, delegated: domain };
    return deny('issuer_mismatch', '"iss" must be the domain of the sending user ("sub")');
  }
  return { ok: true, sub: subject.address.full };
}

/**
 * The checks of a user's token (POST /messages) that need no message: everything
 * checkFederationClaims checks except that `sub` is the message's `from` and the recipients.
 * For the early check of a large body, before it is read (messaging/routes.ts).
 */
export function checkTokenWithoutMessage(input: Omit<FederationClaimsInput, 'message'>): FederationClaimsResult {
  const basics = checkTokenBasics(input);
  if (!basics.ok) return basics;
  const subject = checkSubject(basics.t, input);
  if (!subject.ok) return subject;
  return basics.validity() ?? { ok: true, ...basics.t, sub: subject.sub, ...(subject.delegated ? { delegated: subject.delegated } : {}) };
}

export function checkFederationClaims(input: FederationClaimsInput): FederationClaimsResult {
  const { message } = input;
  const ourDomain = input.ourDomain.toLowerCase();
  const basics = checkTokenBasics(input);
  if (!basics.ok) return basics;
  const { t } = basics;

  // --- subject --------------------------------------------------------------------------------
  const subject = checkSubject(t, input);
  if (!subject.ok) return subject;
  const from = message.from.toLowerCase();
  if (subject.sub !== from) return deny('sender_mismatch', '"sub" must be the message\'s "from"');

  const invalid = basics.validity();
  if (invalid) return invalid;

  // --- authorisation: the message itself ----------------------------------------------------
  const to = message.to.map((a) => a.toLowerCase());
  if (!to.includes(from)) return forbid('sender_not_participant', 'the sender ("from") must be one of the participants ("to")');
  const isLocal = input.isLocal ?? ((a: string) => domainOf(a) === ourDomain);
  if (!to.some((a) => isLocal(a))) {
    return forbid('no_local_recipient', `no recipient of this message is a user of ${ourDomain}`);
  }

  return { ok: true, ...t, sub: subject.sub, ...(subject.delegated ? { delegated: subject.delegated } : {}) };
}

/** The claim of a batch token that binds it to the request body: base64url(SHA-256(body)). */
export const BODY_HASH_CLAIM = 'body_sha256';

export interface BatchClaimsInput {
  header: { alg?: unknown; kid?: unknown };
  payload: Record<string, unknown>;
  ourDomain: string;
  now: number;
  skewMs: number;
  /** base64url(SHA-256(the exact request body bytes)). */
  bodySha256: string;
}

export type BatchClaimsResult = { ok: true; iss: string; jti: string; exp: number; alg: FederationAlgorithm; kid: string } | Failure;

/**
 * Checks the token of a batch/1 request (POST /messages/batch, docs/federation.md). The token is
 * the sending *provider's*: `sub` is its own domain (= `iss`), it names no user, and instead of
 * matching one message it is bound to the whole body by `body_sha256`. `jti` is required. Each
 * message of the batch is then checked on its own (sender at `iss`, a recipient here, …).
 */
export function checkBatchClaims(input: BatchClaimsInput): BatchClaimsResult {
  const basics = checkTokenBasics(input);
  if (!basics.ok) return basics;
  const { t } = basics;
  if (t.jti === null) return deny('invalid_token', 'a batch token needs a "jti" claim');
  const bodyHash = input.payload[BODY_HASH_CLAIM];
  if (typeof bodyHash !== 'string' || bodyHash.length === 0) return deny('invalid_token', `a batch token needs a "${BODY_HASH_CLAIM}" claim`);
  if (t.sub.toLowerCase() !== t.iss) return deny('issuer_mismatch', 'the "sub" of a batch token must be the sending provider\'s domain ("iss")');
  const invalid = basics.validity();
  if (invalid) return invalid;
  if (bodyHash !== input.bodySha256) return deny('body_mismatch', `"${BODY_HASH_CLAIM}" does not match the request body`);
  return { ok: true, iss: t.iss, jti: t.jti, exp: t.exp, alg: t.alg, kid: t.kid };
}
