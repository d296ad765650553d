// Autocrypt (Level 1 + Delta Chat's gossip/header-protection conventions) and RFC 3156 PGP/MIME for
// the e-mail bridge. Pure functions over `openpgp` (v6); no I/O, no database. docs/email-encryption.md
// has the overview; this head is the contract with the MIME builder (mime-out.ts) and the parser
// (mime-in.ts).
//
// Keys (generateUserKey): what Delta Chat core 2.x generates itself (src/pgp.rs create_keypair):
// a v4 Ed25519-legacy signing/certifying primary key, one Curve25519-legacy ECDH encryption subkey,
// the user id `<address>`, no expiry, the SEIPDv2 feature flag. Delta Chat verifies signatures with
// the *primary* key only, so we sign with the primary key (there is no signing subkey). The private
// key is returned unencrypted (armored); the bridge stores it in its database as is for now — a
// passphrase / KMS wrapping of keys at rest is a later step (see the docs).
//
// Sending (encryptMime): the caller builds the complete message exactly as it would send it in the
// clear — From (with display name), To, Date, Message-ID, Subject, In-Reply-To, References, the
// Chat-* headers, `Autocrypt: autocryptHeader(...)` and, for groups, `Autocrypt-Gossip:` headers
// from gossipHeaders(...) — e.g. with nodemailer's MailComposer (`headers: [{ key: 'Autocrypt',
// value }]`; MailComposer folds the value at the spaces autocryptHeader() leaves in the key data).
// encryptMime(thatMessage, keys) returns the bytes to hand to SMTP, as Delta Chat 2.57 writes them
// (src/mimefactory.rs group_headers_by_confidentiality / add_headers_to_encrypted_part /
// wrap_encrypted_part):
//   * every header of the caller's message goes *inside* the encrypted part ("protected headers"),
//     the inner Content-Type gets `protected-headers="v1"; hp="cipher"` (RFC 9788: the inner header
//     section is authoritative), plus one `HP-Outer: <name>: <value>` line per outer header;
//   * outside stay only: MIME-Version, Message-ID, `From: <addr>` (no display name),
//     `To: "hidden-recipients": ;`, Date (randomised 0–6 days into the past, as Delta Chat does, so
//     the server does not learn the exact send time; the real Date is inside), `Subject: [...]`,
//     and copies of Chat-Version / Chat-Is-Post-Message / Autocrypt-Setup-Message when present.
//     In-Reply-To, References, Autocrypt, Autocrypt-Gossip, Chat-Group-* are inside only.
//   * body: multipart/encrypted; protocol="application/pgp-encrypted" with the `Version: 1` part
//     and an application/octet-stream part holding the armored OpenPGP message: the inner MIME
//     entity (CRLF-canonical) as a binary literal, signed by the sender's primary key, compressed
//     (ZLIB), encrypted to every recipient *and to the sender's own key* with anonymous (wildcard)
//     recipient key ids, SEIPDv2 (AES + OCB) when every key advertises it, SEIPDv1 otherwise.
// The SMTP envelope (RCPT TO) is the caller's: the outer To no longer names the recipients.
//
// Receiving (decryptMime): detects PGP/MIME (the RFC 3156 shape, plus the two "mixed-up" shapes
// Delta Chat repairs: Protonmail's and Google Workspace's multipart/mixed wrappings), decrypts with
// any of our private keys, and verifies the signature against the keys the caller knows for the
// sender (looked up through `senderPublicKeys({ from, keyIds })`) and — as Delta Chat does — the key
// in the *inner* `Autocrypt:` header whose addr is the inner From. A signature may be inline in
// the OpenPGP message (Delta Chat) or an RFC 3156 multipart/signed entity inside the encryption
// (Thunderbird; then its signed first part is what is returned). It returns the decrypted inner
// MIME entity for mime-in.ts to parse as the message proper. `signedBy` is the signer's primary-key
// fingerprint (40 upper-case hex digits for v4 keys, as Delta Chat writes them); it says which key
// signed, not who: the caller decides whether that fingerprint is the contact's key (TOFU).
// Never throws; every failure is `{ ok: false, reason }`.

import { randomBytes, randomInt } from 'node:crypto';
import * as openpgp from 'openpgp';
import { simpleParser } from 'mailparser';
import addressparser from 'nodemailer/lib/addressparser';

// ---------------------------------------------------------------------------------------------
// Limits

/** Largest binary key (keydata) we accept in an Autocrypt / Autocrypt-Gossip header. */
export const MAX_KEYDATA_BYTES = 64 * 1024;
/** Longest header value parseAutocryptHeader looks at (base64 of MAX_KEYDATA_BYTES, folding, attributes). */
export const MAX_AUTOCRYPT_HEADER_CHARS = Math.ceil(MAX_KEYDATA_BYTES / 3) * 4 * 2 + 4096;
/** Default bound for a whole encrypted mail as received, and for its decrypted inner entity. */
export const DEFAULT_MAX_MAIL_BYTES = 32 * 1024 * 1024;
/** Most Autocrypt-Gossip headers read from one message (one per group member). */
export const MAX_GOSSIP_HEADERS = 256;
/** The outer Subject of an encrypted mail (Delta Chat 2.x). */
export const OUTER_SUBJECT = '[...]';
/** Delta Chat randomises the outer Date up to this many seconds into the past. */
const OUTER_DATE_SPREAD_SECONDS = 518_400;

// ---------------------------------------------------------------------------------------------
// Keys

export interface UserKey {
  publicKeyArmored: string;
  /** Unencrypted (no passphrase). Store it as a secret; wrapping it at rest is a later step. */
  privateKeyArmored: string;
  /** Primary-key fingerprint, upper-case hex (Delta Chat's form). */
  fingerprint: string;
}

const ADDRESS_RE = /^[^\s<>@,;:"()[\]\\]+@[^\s<>@,;:"()[\]\\]+$/;

/** Lower-cased `local@domain`, or null when the string is not a plain address. */
function normalAddress(address: string): string | null {
  const a = address.trim().toLowerCase();
  return a.length <= 320 && ADDRESS_RE.test(a) ? a : null;
}

/**
 * A new key pair for `address`, as Delta Chat makes its own: v4 Ed25519-legacy primary (certify +
 * sign), Curve25519-legacy ECDH encryption subkey, user id `<address>`, no expiry, SEIPDv2 feature.
 */
export async function generateUserKey(address: string): Promise<UserKey> {
  const addr = normalAddress(address);
  if (addr === null) throw new Error(`generateUserKey: not an e-mail address: ${JSON.stringify(address)}`);
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ email: addr }],
    keyExpirationTime: 0,
    format: 'object',
    // aeadProtect at generation time sets the SEIPDv2 feature and AEAD preferences on the key,
    // like Delta Chat's `feature_seipd_v2(true)`; v6Keys:false keeps it a v4 key like Delta Chat's.
    config: { aeadProtect: true, v6Keys: false },
  });
  return { publicKeyArmored: publicKey.armor(), privateKeyArmored: privateKey.armor(), fingerprint: fpr(publicKey) };
}

function fpr(key: openpgp.Key): string {
  return key.getFingerprint().toUpperCase();
}

export interface ReadKey {
  armored: string;
  fingerprint: string;
  /** Addresses in the key's user ids, lower-cased (informational; Delta Chat does not bind them). */
  addresses: string[];
}

/** Checks a parsed public key: one public (not secret) key, valid and not revoked/expired now, able to encrypt. */
async function usablePublicKey(key: openpgp.Key): Promise<boolean> {
  if (key.isPrivate()) return false;
  try {
    await key.verifyPrimaryKey();
    await key.getEncryptionKey();
    return true;
  } catch {
    return false;
  }
}

function keyAddresses(key: openpgp.Key): string[] {
  const out: string[] = [];
  for (const u of key.users) {
    const email = u.userID?.email;
    const a = email ? normalAddress(email) : null;
    if (a !== null && !out.includes(a)) out.push(a);
  }
  return out;
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeKeydata(keydataBase64: string): Uint8Array | null {
  if (typeof keydataBase64 !== 'string' || keydataBase64.length > MAX_AUTOCRYPT_HEADER_CHARS) return null;
  const b64 = keydataBase64.replace(/[\s]+/g, '');
  if (b64.length === 0 || b64.length % 4 !== 0 || !BASE64_RE.test(b64)) return null;
  if ((b64.length / 4) * 3 > MAX_KEYDATA_BYTES + 2) return null;
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length === 0 || bytes.length > MAX_KEYDATA_BYTES) return null;
  return new Uint8Array(bytes);
}

/**
 * The public key in an Autocrypt `keydata` (base64 of the binary key; whitespace ignored), or null
 * when it is not exactly one usable public key: malformed, secret, revoked, expired, or without a
 * valid encryption subkey.
 */
export async function readPublicKey(keydataBase64: string): Promise<ReadKey | null> {
  try {
    const bytes = decodeKeydata(keydataBase64);
    if (bytes === null) return null;
    const keys = await openpgp.readKeys({ binaryKeys: bytes });
    if (keys.length !== 1) return null;
    const key = keys[0]!;
    if (!(await usablePublicKey(key))) return null;
    return { armored: key.armor(), fingerprint: fpr(key), addresses: keyAddresses(key) };
  } catch {
    return null;
  }
}

/** The armored public key of an armored key (public or private); null when unreadable. */
export async function publicKeyOf(armored: string): Promise<ReadKey | null> {
  try {
    const key = await openpgp.readKey({ armoredKey: armored });
    const pub = key.toPublic();
    return { armored: pub.armor(), fingerprint: fpr(pub), addresses: keyAddresses(pub) };
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Autocrypt / Autocrypt-Gossip header values

export type PreferEncrypt = 'mutual' | 'nopreference';

export interface AutocryptAttributes {
  /** Lower-cased. */
  addr: string;
  /** Base64 of the binary key, whitespace removed (not yet checked as a key: see readPublicKey). */
  keydata: string;
  preferEncrypt: PreferEncrypt;
}

/** Base64 of the binary public key, with a space every 78 characters so the header can be folded. */
async function keydataOf(publicKeyArmored: string): Promise<string> {
  const key = await openpgp.readKey({ armoredKey: publicKeyArmored });
  const b64 = Buffer.from(key.toPublic().write()).toString('base64');
  // Like Delta Chat: no word longer than 78 characters, `keydata=` included in the first.
  const first = 78 - 'keydata='.length;
  return [b64.slice(0, first), ...(b64.slice(first).match(/.{1,78}/g) ?? [])].join(' ');
}

/**
 * The value of our `Autocrypt:` header: `addr=…; prefer-encrypt=mutual; keydata=…` (the
 * prefer-encrypt attribute is left out for 'nopreference', as Delta Chat does). It is one line with
 * a space every 78 characters inside keydata (as Delta Chat writes it): a header builder (nodemailer folds at spaces) folds it
 * per RFC 5322 there, and readers drop whitespace from keydata. Our generated keys are already
 * minimal (primary + user id + encryption subkey, ~0.5 KiB).
 */
export async function autocryptHeader(address: string, publicKeyArmored: string, preferEncrypt: PreferEncrypt = 'mutual'): Promise<string> {
  const addr = normalAddress(address);
  if (addr === null) throw new Error(`autocryptHeader: not an e-mail address: ${JSON.stringify(address)}`);
  const keydata = await keydataOf(publicKeyArmored);
  return `addr=${addr};${preferEncrypt === 'mutual' ? ' prefer-encrypt=mutual;' : ''} keydata=${keydata}`;
}

/** Splits `k=v; k=v` strictly. null on duplicates, pieces without `=`, or too long input. */
function parseAttributes(value: string): Map<string, string> | null {
  if (typeof value !== 'string' || value.length > MAX_AUTOCRYPT_HEADER_CHARS) return null;
  const unfolded = value.replace(/\r?\n(?=[ \t])/g, '');
  if (/[\r\n\0]/.test(unfolded)) return null;
  const attrs = new Map<string, string>();
  const pieces = unfolded.split(';');
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!.trim();
    if (piece === '') {
      if (i === pieces.length - 1) continue; // a trailing ';'
      return null;
    }
    const eq = piece.indexOf('=');
    if (eq <= 0) return null;
    const k = piece.slice(0, eq).trim().toLowerCase();
    const v = piece.slice(eq + 1).trim();
    if (!/^[a-z0-9_-]+$/.test(k) || attrs.has(k)) return null;
    attrs.set(k, v);
  }
  return attrs;
}

const KNOWN_ATTRIBUTES = new Set(['addr', 'keydata', 'prefer-encrypt']);

/** The attributes of an Autocrypt(-Gossip) value, without an addr check. */
function parseAutocryptValue(value: string): AutocryptAttributes | null {
  const attrs = parseAttributes(value);
  if (attrs === null) return null;
  // Autocrypt Level 1: an unknown attribute not starting with `_` makes the header invalid;
  // `_`-attributes (e.g. Delta Chat's `_verified`) are ignored.
  for (const k of attrs.keys()) if (!KNOWN_ATTRIBUTES.has(k) && !k.startsWith('_')) return null;
  const addr = normalAddress(attrs.get('addr') ?? '');
  if (addr === null) return null;
  const raw = attrs.get('keydata');
  if (raw === undefined) return null;
  const keydata = raw.replace(/\s+/g, '');
  if (decodeKeydata(keydata) === null) return null;
  // Like Delta Chat: "mutual" or else no preference (e.g. the obsolete "reset").
  const preferEncrypt: PreferEncrypt = attrs.get('prefer-encrypt') === 'mutual' ? 'mutual' : 'nopreference';
  return { addr, keydata, preferEncrypt };
}

/**
 * Parses an `Autocrypt:` header value (folded or not). null unless it is well formed, its addr is
 * `fromAddress` (case-insensitive), keydata is base64 of at most MAX_KEYDATA_BYTES, and it has no
 * unknown attribute without a leading `_`. Never throws. The key itself is checked by readPublicKey.
 */
export function parseAutocryptHeader(value: string, fromAddress: string): AutocryptAttributes | null {
  try {
    const parsed = parseAutocryptValue(value);
    if (parsed === null) return null;
    const from = normalAddress(typeof fromAddress === 'string' ? fromAddress : '');
    return from !== null && parsed.addr === from ? parsed : null;
  } catch {
    return null;
  }
}

export interface GossipMember {
  address: string;
  publicKeyArmored: string;
}

/**
 * `Autocrypt-Gossip:` header values for the inner (encrypted) part of a group message: one per
 * member (pass the other members, not the sender), `addr=…; keydata=…` without prefer-encrypt
 * (Autocrypt 1.1: SHOULD NOT be included). Folding as for autocryptHeader.
 */
export async function gossipHeaders(members: GossipMember[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const m of members) {
    const addr = normalAddress(m.address);
    if (addr === null) throw new Error(`gossipHeaders: not an e-mail address: ${JSON.stringify(m.address)}`);
    if (seen.has(addr)) continue;
    seen.add(addr);
    out.push(`addr=${addr}; keydata=${await keydataOf(m.publicKeyArmored)}`);
  }
  return out;
}

export interface GossipKey {
  addr: string;
  publicKeyArmored: string;
  fingerprint: string;
}

/**
 * The gossiped keys in a decrypted inner message (decryptMime's `inner`). Only trust them when
 * decryptMime returned a non-null `signedBy` (Delta Chat ignores gossip in unsigned mail). As Delta
 * Chat does, a gossip entry is dropped unless its addr is in the inner To/Cc, and dropped when it is
 * the From address; unusable keys are dropped. Never throws.
 */
export async function parseGossip(inner: Buffer): Promise<GossipKey[]> {
  try {
    const h = parseHeaderSection(inner);
    if (h === null) return [];
    const from = firstAddress(headerValues(h.fields, 'from')[0] ?? '');
    const recipients = new Set<string>();
    for (const name of ['to', 'cc']) for (const v of headerValues(h.fields, name)) for (const a of addressList(v)) recipients.add(a);
    const out: GossipKey[] = [];
    const seen = new Set<string>();
    for (const value of headerValues(h.fields, 'autocrypt-gossip').slice(0, MAX_GOSSIP_HEADERS)) {
      const attrs = parseAutocryptValue(value);
      if (attrs === null || attrs.addr === from || !recipients.has(attrs.addr) || seen.has(attrs.addr)) continue;
      const key = await readPublicKey(attrs.keydata);
      if (key === null) continue;
      seen.add(attrs.addr);
      out.push({ addr: attrs.addr, publicKeyArmored: key.armored, fingerprint: key.fingerprint });
    }
    return out;
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal header-section reader/writer for the inner entity (which we built or just decrypted)

interface HeaderField {
  /** As written. */
  name: string;
  /** The raw (possibly folded) value after `name:`, without the final CRLF. */
  raw: string;
}

interface HeaderSection {
  fields: HeaderField[];
  /** Everything after the empty line that ends the header section. */
  body: Buffer;
}

/** Lone LF or CR → CRLF (RFC 3156: what is signed/encrypted must be canonical). */
function canonicalCrlf(buf: Buffer): Buffer {
  const s = buf.toString('latin1');
  if (!/\r(?!\n)|(?<!\r)\n/.test(s)) return buf;
  return Buffer.from(s.replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');
}

function parseHeaderSection(entity: Buffer): HeaderSection | null {
  const text = canonicalCrlf(entity);
  let end = text.indexOf('\r\n\r\n');
  let head: string;
  let body: Buffer;
  if (text.subarray(0, 2).toString('latin1') === '\r\n') {
    head = '';
    body = text.subarray(2);
  } else if (end < 0) {
    head = text.toString('latin1');
    body = Buffer.alloc(0);
  } else {
    head = text.subarray(0, end).toString('latin1');
    body = text.subarray(end + 4);
  }
  if (head.length > 4 * 1024 * 1024) return null;
  const fields: HeaderField[] = [];
  for (const line of head === '' ? [] : head.split('\r\n')) {
    if (/^[ \t]/.test(line)) {
      const last = fields[fields.length - 1];
      if (last === undefined) return null;
      last.raw += '\r\n' + line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon))) return null;
    fields.push({ name: line.slice(0, colon), raw: line.slice(colon + 1) });
  }
  return { fields, body };
}

function unfold(raw: string): string {
  return raw.replace(/\r\n(?=[ \t])/g, '').trim();
}

/** Unfolded values of every field named `name` (case-insensitive), decoded as UTF-8. */
function headerValues(fields: HeaderField[], name: string): string[] {
  return fields
    .filter((f) => f.name.toLowerCase() === name)
    .map((f) => Buffer.from(unfold(f.raw), 'latin1').toString('utf8'));
}

function addressList(value: string): string[] {
  const out: string[] = [];
  for (const a of addressparser(value, { flatten: true })) {
    const n = normalAddress(a.address ?? '');
    if (n !== null) out.push(n);
  }
  return out;
}

function firstAddress(value: string): string | null {
  return addressList(value)[0] ?? null;
}

/** RFC 5322 date-time in UTC, e.g. `Mon, 07 Dec 2026 09:30:00 +0000`. */
function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

// ---------------------------------------------------------------------------------------------
// Sending

export interface EncryptOptions {
  /** Armored public keys of the recipients (the sender's own key is always added). */
  recipientsPublicKeys: string[];
  /** Armored, unencrypted private key of the sender (signs; its public key is an encryption recipient). */
  senderPrivateKey: string;
  /** Outer Date: 'randomized' (default, Delta Chat: up to 6 days before `now`) or 'same' (the inner Date). */
  outerDate?: 'randomized' | 'same';
  /** ZLIB-compress before encryption (default true, like Delta Chat except for SecureJoin). */
  compress?: boolean;
  /** For tests. */
  now?: Date;
}

/** Outer header names whose value is copied from the inner message (Delta Chat 2.57). */
const COPIED_OUTSIDE = new Set(['chat-version', 'chat-is-post-message', 'autocrypt-setup-message']);
const STRUCTURAL = new Set(['mime-version', 'content-type', 'content-transfer-encoding', 'content-disposition']);

async function readPublicKeys(armored: string[], what: string): Promise<openpgp.PublicKey[]> {
  const out: openpgp.PublicKey[] = [];
  const seen = new Set<string>();
  for (const a of armored) {
    let key: openpgp.Key;
    try {
      key = await openpgp.readKey({ armoredKey: a });
    } catch (err) {
      throw new Error(`encryptMime: unreadable ${what} key: ${(err as Error).message}`);
    }
    const pub = key.toPublic();
    if (!(await usablePublicKey(pub))) throw new Error(`encryptMime: ${what} key ${fpr(pub)} cannot encrypt (revoked, expired or no encryption subkey)`);
    if (seen.has(fpr(pub))) continue;
    seen.add(fpr(pub));
    out.push(pub);
  }
  return out;
}

/**
 * Encrypts and signs a complete message (as the caller would send it unencrypted; see the file head)
 * and returns the complete PGP/MIME message to send. Throws on a malformed inner message (no From /
 * Message-ID header) or unusable keys — those are our own data, not remote input.
 */
export async function encryptMime(innerMime: Buffer, o: EncryptOptions): Promise<Buffer> {
  const h = parseHeaderSection(innerMime);
  if (h === null) throw new Error('encryptMime: the inner message has a malformed header section');
  const get = (name: string) => h.fields.find((f) => f.name.toLowerCase() === name);
  const fromField = get('from');
  const from = fromField ? firstAddress(headerValues([fromField], 'from')[0] ?? '') : null;
  if (from === null) throw new Error('encryptMime: the inner message has no From address');
  const messageId = get('message-id');
  if (messageId === undefined) throw new Error('encryptMime: the inner message has no Message-ID');

  let signingKey: openpgp.PrivateKey;
  try {
    signingKey = await openpgp.readPrivateKey({ armoredKey: o.senderPrivateKey });
  } catch (err) {
    throw new Error(`encryptMime: unreadable sender private key: ${(err as Error).message}`);
  }
  if (!signingKey.isDecrypted()) throw new Error('encryptMime: the sender private key is passphrase-protected');
  const encryptionKeys = await readPublicKeys([signingKey.toPublic().armor(), ...o.recipientsPublicKeys], 'recipient');

  // The outer (unprotected) header section.
  const now = o.now ?? new Date();
  let outerDate: Date;
  const innerDate = get('date');
  if (o.outerDate === 'same' && innerDate !== undefined && !Number.isNaN(Date.parse(unfold(innerDate.raw)))) {
    outerDate = new Date(Date.parse(unfold(innerDate.raw)));
  } else {
    outerDate = new Date(Math.floor(now.getTime() / 1000 - randomInt(0, OUTER_DATE_SPREAD_SECONDS)) * 1000);
  }
  const outer: Array<[string, string]> = [
    ['MIME-Version', '1.0'],
    ['Message-ID', unfold(messageId.raw)],
    ['From', `<${from}>`],
    ['To', '"hidden-recipients": ;'],
    ['Date', rfc5322Date(outerDate)],
    ['Subject', OUTER_SUBJECT],
  ];
  for (const f of h.fields) if (COPIED_OUTSIDE.has(f.name.toLowerCase())) outer.push([f.name, unfold(f.raw)]);

  // The inner entity: the caller's headers (Content-Type marked), HP-Outer lines, the body.
  const innerLines: string[] = [];
  let sawContentType = false;
  for (const f of h.fields) {
    const lname = f.name.toLowerCase();
    if (lname === 'mime-version' || lname === 'hp-outer') continue;
    if (lname === 'content-type' && !sawContentType) {
      sawContentType = true;
      const params = /protected-headers\s*=/i.test(f.raw) ? '' : ';\r\n protected-headers="v1"; hp="cipher"';
      innerLines.push(`${f.name}:${f.raw.replace(/[ \t]*;?[ \t]*$/, '')}${params}`);
      continue;
    }
    innerLines.push(`${f.name}:${f.raw}`);
  }
  if (!sawContentType) innerLines.push('Content-Type: text/plain; charset=us-ascii;\r\n protected-headers="v1"; hp="cipher"');
  for (const [name, value] of outer) if (!STRUCTURAL.has(name.toLowerCase())) innerLines.push(`HP-Outer: ${name}: ${value}`);
  const inner = Buffer.concat([Buffer.from(innerLines.join('\r\n') + '\r\n\r\n', 'latin1'), h.body]);

  const armored = await openpgp.encrypt({
    message: await openpgp.createMessage({ binary: new Uint8Array(inner.buffer, inner.byteOffset, inner.byteLength) }),
    encryptionKeys,
    signingKeys: [signingKey],
    wildcard: true,
    format: 'armored',
    config: {
      preferredCompressionAlgorithm: o.compress === false ? openpgp.enums.compression.uncompressed : openpgp.enums.compression.zlib,
    },
  });

  const boundary = `ic-${randomBytes(12).toString('hex')}`;
  const head = [...outer, ['Content-Type', `multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary="${boundary}"`]]
    .map(([n, v]) => `${n}: ${v}`)
    .join('\r\n');
  const body = [
    `--${boundary}`,
    'Content-Type: application/pgp-encrypted',
    'Content-Description: PGP/MIME version identification',
    '',
    'Version: 1',
    '',
    `--${boundary}`,
    'Content-Type: application/octet-stream; name="encrypted.asc"',
    'Content-Description: OpenPGP encrypted message',
    'Content-Disposition: inline; filename="encrypted.asc"',
    '',
    armored.replace(/\r?\n/g, '\r\n').replace(/(\r\n)+$/, ''),
    '',
    `--${boundary}--`,
    '',
  ].join('\r\n');
  return Buffer.from(`${head}\r\n\r\n${body}`, 'latin1');
}

// ---------------------------------------------------------------------------------------------
// Receiving

export interface SignerQuery {
  /** The sender's address: the inner From when the decrypted entity has one, else the outer From. */
  from: string | null;
  /** Issuer key ids of the signatures (16 lower-case hex digits each; may name a subkey). */
  keyIds: string[];
}

export interface DecryptOptions {
  /** Our armored, unencrypted private keys (all keys of the addressed user; any may decrypt). */
  privateKeys: string[];
  /** Armored public keys we already know for the sender (by address and/or key id); may be []. */
  senderPublicKeys: (q: SignerQuery) => Promise<string[]> | string[];
  /** Bound on the raw mail and on the decrypted inner entity (default DEFAULT_MAX_MAIL_BYTES). */
  maxBytes?: number;
  /** Also try the key in the inner Autocrypt header of the From address (default true, as Delta Chat). */
  useInnerAutocrypt?: boolean;
}

export type DecryptFailure =
  /** Not PGP/MIME at all: parse it as a cleartext mail. */
  | 'not-encrypted'
  | 'too-large'
  /** multipart/encrypted, but not the RFC 3156 shape, or not an OpenPGP message. */
  | 'malformed'
  /** None of our keys can decrypt it (or no usable private key was given). */
  | 'no-key'
  /** Decryption failed: integrity (MDC/AEAD) error, unsupported algorithm, bad packets. */
  | 'decrypt-failed'
  /** The inner From is not the outer From and no signature vouches for it (Delta Chat: "forged"). */
  | 'from-mismatch';

export type SignatureStatus =
  /** Signed, and the signature verifies with `signedBy`. */
  | 'valid'
  | 'unsigned'
  /** Signed by a key we neither know nor found in the inner Autocrypt header. */
  | 'unknown-signer'
  /** A candidate key matches the issuer but the signature does not verify (tampered or wrong). */
  | 'invalid';

export type DecryptResult =
  | {
      ok: true;
      /** The decrypted inner MIME entity (its headers are the protected headers). */
      inner: Buffer;
      /** Primary-key fingerprint (upper-case hex) of the valid signer, else null. */
      signedBy: string | null;
      signature: SignatureStatus;
      /** signedBy's key came from the inner Autocrypt header, not from senderPublicKeys. */
      signerFromAutocrypt: boolean;
      /** The sender's address (inner From when present), lower-cased. */
      from: string | null;
      /** The inner Autocrypt header of `from` (Delta Chat prefers it to the outer one), if any. */
      autocrypt: AutocryptAttributes | null;
    }
  | { ok: false; reason: DecryptFailure; detail?: string };

type Located = { kind: 'found'; data: Buffer; outerFrom: string | null } | { kind: 'none' } | { kind: 'malformed'; detail: string };

function contentTypeOf(v: unknown): { value: string; params: Record<string, string> } | null {
  if (v && typeof v === 'object' && 'value' in v && typeof (v as { value: unknown }).value === 'string') {
    const s = v as { value: string; params?: Record<string, string> };
    return { value: s.value.toLowerCase(), params: s.params ?? {} };
  }
  return null;
}

/** Finds the OpenPGP payload of a PGP/MIME mail (and the shapes Delta Chat repairs). */
async function locateEncrypted(raw: Buffer): Promise<Located> {
  const mail = await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, maxHtmlLengthToParse: 0 });
  const ct = contentTypeOf(mail.headers.get('content-type'));
  const fromValue = mail.from?.value[0]?.address;
  const outerFrom = fromValue ? normalAddress(fromValue) : null;
  const atts = mail.attachments;
  const shaped =
    atts.length === 2 && atts[0]!.contentType.toLowerCase() === 'application/pgp-encrypted' && atts[1]!.contentType.toLowerCase() === 'application/octet-stream';
  if (ct?.value === 'multipart/encrypted') {
    if ((ct.params['protocol'] ?? '').toLowerCase() !== 'application/pgp-encrypted') return { kind: 'malformed', detail: 'multipart/encrypted with another protocol' };
    if (!shaped || (mail.text ?? '').trim() !== '') return { kind: 'malformed', detail: 'not two parts application/pgp-encrypted + application/octet-stream' };
  } else if (ct?.value === 'multipart/mixed' && shaped) {
    // Protonmail (text/plain + the two parts) and Google Workspace (text/plain + multipart/encrypted).
  } else {
    return { kind: 'none' };
  }
  if (!/^\s*Version:\s*1\s*$/i.test(atts[0]!.content.toString('latin1'))) return { kind: 'malformed', detail: 'no "Version: 1" in the application/pgp-encrypted part' };
  return { kind: 'found', data: atts[1]!.content, outerFrom };
}

async function readCandidateKeys(armored: string[]): Promise<openpgp.PublicKey[]> {
  const out: openpgp.PublicKey[] = [];
  for (const a of armored.slice(0, 64)) {
    try {
      const k = await openpgp.readKey({ armoredKey: a });
      const pub = k.toPublic();
      await pub.verifyPrimaryKey();
      out.push(pub);
    } catch {
      // unusable candidate: ignore
    }
  }
  return out;
}

/** A Content-Type parameter of an unfolded header value (quoted or token), lower-cased name. */
function ctParam(value: string, name: string): string | null {
  const re = new RegExp(`;\\s*${name}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^\\s;"]+))`, 'i');
  const m = re.exec(value);
  return m ? (m[1] ?? m[2] ?? '').replace(/\\(.)/g, '$1') : null;
}

/**
 * An RFC 3156 `multipart/signed; protocol="application/pgp-signature"` entity (Thunderbird signs
 * that way inside the encryption): the signed first part exactly as signed, and the armored
 * detached signature. null when `entity` is not one.
 */
function splitSigned(entity: Buffer, section: HeaderSection): { content: Buffer; signature: string } | null {
  const ct = headerValues(section.fields, 'content-type')[0];
  if (ct === undefined || !/^\s*multipart\/signed\s*(;|$)/i.test(ct)) return null;
  if ((ctParam(ct, 'protocol') ?? '').toLowerCase() !== 'application/pgp-signature') return null;
  const boundary = ctParam(ct, 'boundary');
  if (!boundary || boundary.length > 200) return null;
  const body = section.body.toString('latin1');
  const delim = `--${boundary}`;
  // The first delimiter is at the start of the body or after a CRLF (the preamble may precede it).
  const first = body.startsWith(delim + '\r\n') ? 0 : body.indexOf('\r\n' + delim + '\r\n');
  if (first < 0) return null;
  const contentStart = first === 0 ? delim.length + 2 : first + 2 + delim.length + 2;
  const second = body.indexOf('\r\n' + delim + '\r\n', contentStart);
  if (second < 0) return null;
  const content = Buffer.from(body.slice(contentStart, second), 'latin1');
  const sigStart = second + 2 + delim.length + 2;
  const end = body.indexOf('\r\n' + delim + '--', sigStart);
  if (end < 0) return null;
  const sigPart = parseHeaderSection(Buffer.from(body.slice(sigStart, end), 'latin1'));
  if (sigPart === null) return null;
  const sigType = headerValues(sigPart.fields, 'content-type')[0] ?? '';
  if (!/^\s*application\/pgp-signature\s*(;|$)/i.test(sigType)) return null;
  const cte = (headerValues(sigPart.fields, 'content-transfer-encoding')[0] ?? '7bit').trim().toLowerCase();
  const raw = cte === 'base64' ? Buffer.from(sigPart.body.toString('latin1').replace(/\s+/g, ''), 'base64') : sigPart.body;
  return { content, signature: raw.toString('latin1') };
}

/**
 * Decrypts a PGP/MIME mail and checks its signature. Never throws; see the file head and
 * DecryptResult. `inner` is only returned when the ciphertext's integrity check passed.
 */
export async function decryptMime(raw: Buffer, o: DecryptOptions): Promise<DecryptResult> {
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_MAIL_BYTES;
  try {
    if (!Buffer.isBuffer(raw)) return { ok: false, reason: 'malformed', detail: 'not a Buffer' };
    if (raw.length > maxBytes) return { ok: false, reason: 'too-large', detail: `mail is ${raw.length} bytes, limit ${maxBytes}` };

    let located: Located;
    try {
      located = await locateEncrypted(raw);
    } catch (err) {
      return { ok: false, reason: 'malformed', detail: `MIME: ${(err as Error).message}` };
    }
    if (located.kind === 'none') return { ok: false, reason: 'not-encrypted' };
    if (located.kind === 'malformed') return { ok: false, reason: 'malformed', detail: located.detail };

    let message: openpgp.Message<Uint8Array | string>;
    try {
      const text = located.data.toString('latin1');
      message = text.includes('-----BEGIN PGP MESSAGE-----')
        ? await openpgp.readMessage({ armoredMessage: text })
        : await openpgp.readMessage({ binaryMessage: new Uint8Array(located.data) });
    } catch (err) {
      return { ok: false, reason: 'malformed', detail: `OpenPGP: ${(err as Error).message}` };
    }
    const tags = message.packets.map((p) => (p.constructor as unknown as { tag: number }).tag);
    const PKESK = openpgp.enums.packet.publicKeyEncryptedSessionKey;
    if (!tags.includes(PKESK)) return { ok: false, reason: 'no-key', detail: 'not encrypted to a public key (symmetric-only messages are not supported)' };

    const decryptionKeys: openpgp.PrivateKey[] = [];
    for (const a of o.privateKeys) {
      try {
        const k = await openpgp.readPrivateKey({ armoredKey: a });
        if (k.isDecrypted()) decryptionKeys.push(k);
      } catch {
        // unusable private key: ignore
      }
    }
    if (decryptionKeys.length === 0) return { ok: false, reason: 'no-key', detail: 'no usable private key' };

    const config = { ...openpgp.config, maxDecompressedMessageSize: maxBytes };
    // First the session key (which of our keys, if any, it is encrypted to; with wildcard key ids
    // the only way to know is to try), then the data (integrity: SEIPDv1 MDC or SEIPDv2 AEAD tags).
    let sessionKeys: openpgp.SessionKey[];
    try {
      // DecryptedSessionKey is { data, algorithm } (algorithm null for SEIPDv2, whose packet names it).
      sessionKeys = (await openpgp.decryptSessionKeys({ message, decryptionKeys, config: { maxDecompressedMessageSize: maxBytes } })) as unknown as openpgp.SessionKey[];
      if (sessionKeys.length === 0) throw new Error('no session key');
    } catch (err) {
      return { ok: false, reason: 'no-key', detail: (err as Error)?.message ?? String(err) };
    }
    let decrypted: openpgp.Message<Uint8Array | string>;
    let literal: Uint8Array | string | null;
    try {
      decrypted = (await message.decrypt(undefined, undefined, sessionKeys, undefined, config)) as openpgp.Message<Uint8Array | string>;
      literal = decrypted.getLiteralData() as Uint8Array | string | null;
    } catch (err) {
      const msg = (err as Error)?.message ?? String(err);
      if (/decompressed.*size exceeded/i.test(msg)) return { ok: false, reason: 'too-large', detail: msg };
      return { ok: false, reason: 'decrypt-failed', detail: msg };
    }
    if (!(literal instanceof Uint8Array)) return { ok: false, reason: 'decrypt-failed', detail: 'no literal data' };
    if (literal.length > maxBytes) return { ok: false, reason: 'too-large', detail: `inner entity is ${literal.length} bytes, limit ${maxBytes}` };
    let inner = Buffer.from(literal.buffer, literal.byteOffset, literal.byteLength);

    // A detached signature inside the encryption (RFC 3156 multipart/signed, Thunderbird's way):
    // the signed first part is the message proper, as for Delta Chat.
    let detached: { content: Buffer; signature: string } | null = null;
    const outerSection = parseHeaderSection(inner);
    if (outerSection !== null) {
      detached = splitSigned(canonicalCrlf(inner), outerSection);
      if (detached !== null) inner = detached.content;
    }

    // Who claims to have sent it: the inner (protected) From, and its inner Autocrypt header.
    const section = parseHeaderSection(inner);
    const innerFromValue = section ? headerValues(section.fields, 'from')[0] : undefined;
    const innerFrom = innerFromValue !== undefined ? firstAddress(innerFromValue) : null;
    const from = innerFrom ?? located.outerFrom;
    let autocrypt: AutocryptAttributes | null = null;
    if (section && from !== null) {
      // Like Delta Chat, the last valid header for the From address wins.
      for (const v of headerValues(section.fields, 'autocrypt').reverse()) {
        autocrypt = parseAutocryptHeader(v, from);
        if (autocrypt !== null) break;
      }
    }

    // The signature.
    let detachedSig: openpgp.Signature | null = null;
    if (detached !== null) {
      try {
        detachedSig = await openpgp.readSignature({ armoredSignature: detached.signature });
      } catch {
        detachedSig = null;
      }
    }
    const keyIds = [...Array.from(decrypted.getSigningKeyIDs(), (k) => k.toHex()), ...(detachedSig ? Array.from(detachedSig.getSigningKeyIDs(), (k) => k.toHex()) : [])];
    let signedBy: string | null = null;
    let signature: SignatureStatus = keyIds.length === 0 ? 'unsigned' : 'unknown-signer';
    let signerFromAutocrypt = false;
    if (keyIds.length > 0) {
      let known: string[] = [];
      try {
        known = await o.senderPublicKeys({ from, keyIds });
      } catch {
        known = [];
      }
      const candidates: Array<{ key: openpgp.PublicKey; fromAutocrypt: boolean }> = (await readCandidateKeys(Array.isArray(known) ? known : [])).map((key) => ({ key, fromAutocrypt: false }));
      if (autocrypt !== null && o.useInnerAutocrypt !== false) {
        const ak = await readPublicKey(autocrypt.keydata);
        if (ak !== null && !candidates.some((c) => fpr(c.key) === ak.fingerprint)) {
          candidates.push({ key: (await openpgp.readKey({ armoredKey: ak.armored })).toPublic(), fromAutocrypt: true });
        }
      }
      const matching = candidates.filter((c) => c.key.getKeyIDs().some((id) => keyIds.includes(id.toHex())));
      if (matching.length > 0) {
        signature = 'invalid';
        const keysToTry = matching.map((c) => c.key);
        const results = [...(await decrypted.verify(keysToTry, undefined, config))];
        if (detachedSig !== null && detached !== null) {
          const v = await openpgp.verify({
            message: await openpgp.createMessage({ binary: new Uint8Array(detached.content.buffer, detached.content.byteOffset, detached.content.byteLength) }),
            signature: detachedSig,
            verificationKeys: keysToTry,
            format: 'binary',
          });
          results.push(...v.signatures);
        }
        for (const r of results) {
          let good = false;
          try {
            good = (await r.verified) === true;
          } catch {
            good = false;
          }
          if (!good) continue;
          const c = matching.find((m) => m.key.getKeyIDs().some((id) => id.equals(r.keyID)));
          if (c === undefined) continue;
          signedBy = fpr(c.key);
          signerFromAutocrypt = c.fromAutocrypt;
          signature = 'valid';
          break;
        }
      }
    }

    if (innerFrom !== null && located.outerFrom !== null && innerFrom !== located.outerFrom && signedBy === null) {
      return { ok: false, reason: 'from-mismatch', detail: `inner From ${innerFrom}, outer From ${located.outerFrom}, unsigned` };
    }
    return { ok: true, inner, signedBy, signature, signerFromAutocrypt, from, autocrypt };
  } catch (err) {
    return { ok: false, reason: 'decrypt-failed', detail: `unexpected: ${(err as Error)?.message ?? String(err)}` };
  }
}
