// Seed 000: "Binary types should have Base 64 encoded values in the messageFormatted field."
// A message whose `format` is not a text type carries a file inline, base64-encoded; it is
// accepted when the base64 is valid and the decoded file is at most INTERTALK_MAX_ATTACHMENT.
// POST /messages therefore takes bodies up to that size (in base64) plus INTERTALK_MAX_BODY for
// the rest; any other body over INTERTALK_MAX_BODY is still refused with 413. Pure, no I/O.
import contentType from 'content-type';
import type { FastifyRequest, RouteOptions } from 'fastify';
import type { Config } from '../config/config.js';
import { HttpError } from '../http/errors.js';
import { isValidMediaType } from '../protocol/message.js';

/** Application types that are text (not base64) in messageFormatted. */
const TEXTUAL_APPLICATION = new Set(['json', 'xml', 'javascript', 'ecmascript', 'x-www-form-urlencoded', 'xhtml+xml', 'x-sh', 'x-tex', 'sql', 'graphql', 'yaml', 'x-yaml', 'toml', 'markdown', 'x-markdown', 'rtf']);

/** True when `format` names a binary type (its messageFormatted must be base64). */
export function isBinaryFormat(format: string): boolean {
  let type: string;
  try {
    type = contentType.parse(format).type;
  } catch {
    return false; // not a media type at all: message validation reports it
  }
  const slash = type.indexOf('/');
  if (slash < 1 || !isValidMediaType(format)) return false;
  const top = type.slice(0, slash);
  const sub = type.slice(slash + 1);
  if (top === 'text' || top === 'message' || top === 'multipart') return false;
  if (sub.endsWith('+json') || sub.endsWith('+xml')) return false;
  if (top === 'application' && TEXTUAL_APPLICATION.has(sub)) return false;
  return true;
}

/**
 * The decoded length of standard base64 (RFC 4648 §4; padding optional, line breaks and spaces
 * ignored as in MIME), or null when `s` is not base64.
 */
export function base64DecodedLength(s: string): number | null {
  let n = 0;
  let pad = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 9 || c === 10 || c === 13 || c === 32) continue;
    if (c === 61) {
      if (++pad > 2) return null;
      continue;
    }
    if (pad > 0) return null; // data after padding
    const ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47;
    if (!ok) return null;
    n++;
  }
  if (pad > 0 ? (n + pad) % 4 !== 0 : n % 4 === 1) return null;
  return Math.floor((n * 3) / 4);
}

/** Throws 400 (not base64) or 413 (too large) for a binary messageFormatted; text passes. */
export function checkInlineBinary(m: { messageFormatted?: unknown; format?: unknown }, maxBytes: number): void {
  if (typeof m.messageFormatted !== 'string' || typeof m.format !== 'string' || !isBinaryFormat(m.format)) return;
  const size = base64DecodedLength(m.messageFormatted);
  if (size === null) throw new HttpError(400, 'invalid_message', `messageFormatted: a ${m.format.slice(0, 100)} value must be base64-encoded`);
  if (size > maxBytes) throw new HttpError(413, 'payload_too_large', `messageFormatted: the ${m.format.slice(0, 100)} file is ${size} bytes; at most ${maxBytes} are accepted`);
}

/** The length of a message's seed-000 inline file in base64 (0 without one): room beyond INTERTALK_MAX_BODY. */
export function inlineLength(m: { messageFormatted?: unknown; format?: unknown }): number {
  return typeof m.messageFormatted === 'string' && typeof m.format === 'string' && isBinaryFormat(m.format) ? m.messageFormatted.length : 0;
}

/** Body limit of POST /messages: a whole inline file in base64 plus an ordinary message. */
export function messagesBodyLimit(config: Config): number {
  return Math.max(config.maxBody, Math.ceil(config.maxAttachment / 3) * 4 + config.maxBody);
}

/**
 * An onRoute hook: raises POST /messages' body limit for inline files and adds the check that
 * keeps every other body within INTERTALK_MAX_BODY.
 */
export function inlineBinaryOnRoute(config: Config): (route: RouteOptions) => void {
  const limit = messagesBodyLimit(config);
  const check = async (req: FastifyRequest) => {
    const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody;
    const body = req.body as Record<string, unknown> | undefined;
    const fields = typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {};
    if (raw && raw.length > config.maxBody) {
      if (raw.length - inlineLength(fields) > config.maxBody) throw new HttpError(413, 'payload_too_large', `the body exceeds ${config.maxBody} bytes`);
    }
    checkInlineBinary(fields, config.maxAttachment);
  };
  return (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (route.url !== '/messages' || !methods.includes('POST')) return;
    route.bodyLimit = limit;
    const existing = route.preValidation;
    route.preValidation = existing === undefined ? [check] : Array.isArray(existing) ? [check, ...existing] : [check, existing];
  };
}
