// A conversation is its canonical participant set. Its id is computed the same way by every
// provider: "c" + base64url(SHA-256(participants joined by "\n")) over the lower-cased,
// de-duplicated, sorted addresses (docs/protocol.md). Pure functions, no I/O.
import { createHash } from 'node:crypto';
import { parseAddress } from './address.js';

export function canonicalParticipants(addresses: readonly string[]): string[] {
  return [...new Set(addresses.map((a) => a.toLowerCase()))].sort();
}

export function conversationId(canonical: readonly string[]): string {
  return 'c' + createHash('sha256').update(canonical.join('\n'), 'utf8').digest('base64url');
}

export const CONVERSATION_ID = /^c[A-Za-z0-9_-]{43}$/;

export type ParticipantsResult = { ok: true; participants: string[] } | { ok: false; reason: string };

/**
 * The reference provider's history path segment: base64url (padded or not; standard base64
 * accepted too) of a JSON array of participant addresses, in any order.
 */
export function decodeParticipantsSegment(segment: string, maxParticipants: number): ParticipantsResult {
  if (segment.length === 0 || segment.length > 200_000) return { ok: false, reason: 'participant segment is empty or too long' };
  if (!/^[A-Za-z0-9_\-+/]+={0,2}$/.test(segment)) return { ok: false, reason: 'participant segment is not base64url' };
  const normal = segment.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  if (normal.length % 4 === 1) return { ok: false, reason: 'participant segment is not valid base64url' };
  let parsed: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(normal, 'base64url'));
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'participant segment does not decode to JSON' };
  }
  if (!Array.isArray(parsed) || parsed.length === 0) return { ok: false, reason: 'participant segment must be a non-empty JSON array of addresses' };
  if (parsed.length > maxParticipants) return { ok: false, reason: `at most ${maxParticipants} participants` };
  const out: string[] = [];
  for (const p of parsed) {
    const r = parseAddress(p);
    if (!r.ok) return { ok: false, reason: r.reason };
    out.push(r.address.full);
  }
  return { ok: true, participants: canonicalParticipants(out) };
}

export function encodeParticipantsSegment(participants: readonly string[]): string {
  return Buffer.from(JSON.stringify(participants), 'utf8').toString('base64url');
}
