// Addresses are mail addresses (`local@domain`): dot-atom local part (RFC 5322 §3.2.3, no quoted
// strings), LDH domain names. Both are normalised to lower case. Pure functions, no I/O.

export interface Address {
  local: string;
  domain: string;
  /** `local@domain`, lower case. */
  full: string;
}

const ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-";
const LOCAL_PART = new RegExp(`^[${ATEXT}]+(?:\\.[${ATEXT}]+)*$`);
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export const MAX_LOCAL_PART = 64;
export const MAX_ADDRESS = 254;

export function isValidLocalPart(local: string): boolean {
  return local.length >= 1 && local.length <= MAX_LOCAL_PART && LOCAL_PART.test(local);
}

/** A DNS host name of LDH labels (lower case expected), at most 253 characters. */
export function isValidDomain(domain: string): boolean {
  if (domain.length < 1 || domain.length > 253) return false;
  const labels = domain.split('.');
  return labels.every((l) => LABEL.test(l)) && !/^\d+$/.test(labels[labels.length - 1]!);
}

export type AddressResult = { ok: true; address: Address } | { ok: false; reason: string };

export function parseAddress(input: unknown): AddressResult {
  if (typeof input !== 'string') return { ok: false, reason: 'an address must be a string' };
  if (input.length > MAX_ADDRESS) return { ok: false, reason: `an address has at most ${MAX_ADDRESS} characters` };
  const at = input.lastIndexOf('@');
  if (at <= 0 || at === input.length - 1) return { ok: false, reason: `"${clip(input)}" is not of the form name@domain` };
  // Validate before lower-casing: some non-ASCII characters lower-case to ASCII (U+212A → k).
  const rawLocal = input.slice(0, at);
  const rawDomain = input.slice(at + 1);
  if (!/^[\x21-\x7e]+$/.test(input)) return { ok: false, reason: `"${clip(input)}" contains characters other than ASCII letters, digits and symbols` };
  const local = rawLocal.toLowerCase();
  const domain = rawDomain.toLowerCase();
  if (!isValidLocalPart(local)) return { ok: false, reason: `"${clip(input)}" has an invalid name part` };
  if (!isValidDomain(domain)) return { ok: false, reason: `"${clip(input)}" has an invalid domain` };
  return { ok: true, address: { local, domain, full: `${local}@${domain}` } };
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

/**
 * A participant list (`to`): 1..max valid addresses, normalised to lower case (not de-duplicated:
 * callers canonicalise). The error names the first bad entry.
 */
export function parseAddressList(v: unknown[], max: number): { ok: true; addresses: string[] } | { ok: false; reason: string } {
  if (v.length === 0) return { ok: false, reason: 'to: must name at least one participant' };
  if (v.length > max) return { ok: false, reason: `to: at most ${max} participants` };
  const addresses: string[] = [];
  for (const [i, a] of v.entries()) {
    const r = parseAddress(a);
    if (!r.ok) return { ok: false, reason: `to[${i}]: ${r.reason}` };
    addresses.push(r.address.full);
  }
  return { ok: true, addresses };
}

/** Shortens user-supplied text quoted back in error messages. */
export function clip(s: string, max = 80): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
