// The "rich/1" extension (docs/protocol.md): MIMI-style message kinds carried in a `rich` object
// on an ordinary intertalk message, whose `message` stays a readable plain-text fallback.
// Pure functions: validation and the fallback text. No I/O.
import { clip, parseAddress } from './address.js';
import { isValidMediaType, isValidMessageId } from './message.js';

export const RICH_EXTENSION = 'rich/1';
export const SIGNALS_EXTENSION = 'signals/1';

export const RICH_KINDS = ['content', 'reply', 'reaction', 'edit', 'delete', 'property'] as const;
export type RichKind = (typeof RICH_KINDS)[number];
/** Kinds that must name the message they act on. */
export const REFERENCING: ReadonlySet<RichKind> = new Set(['reply', 'reaction', 'edit', 'delete']);

export interface Reference {
  id: string;
  sender: string;
  type: RichKind;
  /** The referenced text, so any suffix of history renders; null when deleted or unknown. */
  text: string | null;
}

export interface AttachmentRef {
  /** SHA-256 of the bytes, 64 lower-case hex digits. */
  id: string;
  name: string;
  mediaType: string;
  size: number;
  /** Where the recipient's provider fetches it (the sender's provider). */
  url: string;
}

export interface Rich {
  type: RichKind;
  /** The actual text of content, reply and edit messages (message holds the fallback). */
  text?: string;
  reference?: Reference;
  reaction?: { emoji: string; remove?: true };
  property?: { name: 'displayName'; value: string };
  attachments?: AttachmentRef[];
}

export const MAX_TEXT = 64 * 1024;
export const MAX_NAME = 128;
export const MAX_ATTACHMENTS = 10;

type Invalid = { ok: false; error: string; message: string };
const bad = (message: string): Invalid => ({ ok: false, error: 'invalid_rich', message: `rich.${message}` });

const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** A reaction is one grapheme (an emoji, possibly with modifiers), no control characters. */
export function isValidReaction(s: unknown): s is string {
  if (typeof s !== 'string' || s.length === 0 || s.length > 32) return false;
  if (/[\p{Cc}\p{Z}]/u.test(s)) return false;
  let n = 0;
  for (const _ of segmenter.segment(s)) if (++n > 1) return false;
  return true;
}

function text(name: string, v: unknown, max: number): { ok: true; value: string } | Invalid {
  if (typeof v !== 'string') return bad(`${name}: must be a string`);
  if (v.length > max) return bad(`${name}: at most ${max} characters`);
  return { ok: true, value: v };
}

export function validateReference(v: unknown): { ok: true; value: Reference } | Invalid {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('reference: must be an object');
  const r = v as Record<string, unknown>;
  if (!isValidMessageId(r.id)) return bad('reference.id: not a message id');
  const sender = parseAddress(r.sender);
  if (!sender.ok) return bad(`reference.sender: ${sender.reason}`);
  const type = r.type ?? 'content';
  if (!RICH_KINDS.includes(type as RichKind)) return bad(`reference.type: one of ${RICH_KINDS.join(', ')}`);
  let t: string | null = null;
  if (r.text !== undefined && r.text !== null) {
    const tv = text('reference.text', r.text, MAX_TEXT);
    if (!tv.ok) return tv;
    t = tv.value;
  }
  return { ok: true, value: { id: r.id, sender: sender.address.full, type: type as RichKind, text: t } };
}

export function validateAttachment(v: unknown, i: number): { ok: true; value: AttachmentRef } | Invalid {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(`attachments[${i}]: must be an object`);
  const a = v as Record<string, unknown>;
  if (typeof a.id !== 'string' || !/^[0-9a-f]{64}$/.test(a.id)) return bad(`attachments[${i}].id: must be the SHA-256 of the file in hex`);
  const name = text(`attachments[${i}].name`, a.name, 255);
  if (!name.ok) return name;
  if (/[\p{Cc}/\\]/u.test(name.value) || name.value.trim() === '') return bad(`attachments[${i}].name: not a file name`);
  if (typeof a.mediaType !== 'string' || !isValidMediaType(a.mediaType)) return bad(`attachments[${i}].mediaType: not a MIME type`);
  if (!Number.isSafeInteger(a.size) || (a.size as number) < 0) return bad(`attachments[${i}].size: must be a byte count`);
  if (typeof a.url !== 'string' || a.url.length > 2048 || !/^https?:\/\/[^\s]+$/.test(a.url)) return bad(`attachments[${i}].url: must be an http(s) URL`);
  return { ok: true, value: { id: a.id, name: name.value, mediaType: a.mediaType, size: a.size as number, url: a.url } };
}

/** Validates the `rich` object of a message (absent `rich` means a plain content message). */
export function validateRich(v: unknown): { ok: true; value: Rich } | Invalid {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('type: rich must be an object');
  const r = v as Record<string, unknown>;
  const type = r.type ?? 'content';
  if (!RICH_KINDS.includes(type as RichKind)) return bad(`type: one of ${RICH_KINDS.join(', ')}`);
  const out: Rich = { type: type as RichKind };
  if (REFERENCING.has(out.type)) {
    const ref = validateReference(r.reference);
    if (!ref.ok) return ref;
    out.reference = ref.value;
  } else if (r.reference !== undefined) {
    return bad(`reference: not allowed on ${out.type} messages`);
  }
  if (out.type === 'content' || out.type === 'reply' || out.type === 'edit') {
    if (r.text !== undefined) {
      const t = text('text', r.text, MAX_TEXT);
      if (!t.ok) return t;
      out.text = t.value;
    }
  }
  if (out.type === 'reaction') {
    const re = r.reaction as Record<string, unknown> | undefined;
    if (typeof re !== 'object' || re === null || !isValidReaction(re.emoji)) return bad('reaction.emoji: one emoji');
    if (re.remove !== undefined && typeof re.remove !== 'boolean') return bad('reaction.remove: must be a boolean');
    out.reaction = re.remove === true ? { emoji: re.emoji as string, remove: true } : { emoji: re.emoji as string };
  }
  if (out.type === 'property') {
    const p = r.property as Record<string, unknown> | undefined;
    if (typeof p !== 'object' || p === null || p.name !== 'displayName') return bad('property.name: "displayName"');
    const value = text('property.value', p.value, MAX_NAME);
    if (!value.ok) return value;
    if (/[\p{Cc}\p{Zl}\p{Zp}]/u.test(value.value)) return bad('property.value: no control characters or line breaks');
    out.property = { name: 'displayName', value: value.value.trim() };
  }
  if (r.attachments !== undefined) {
    if (out.type !== 'content' && out.type !== 'reply') return bad(`attachments: not allowed on ${out.type} messages`);
    if (!Array.isArray(r.attachments) || r.attachments.length > MAX_ATTACHMENTS) return bad(`attachments: an array of at most ${MAX_ATTACHMENTS}`);
    const list: AttachmentRef[] = [];
    for (const [i, a] of r.attachments.entries()) {
      const av = validateAttachment(a, i);
      if (!av.ok) return av;
      list.push(av.value);
    }
    if (list.length > 0) out.attachments = list;
  }
  return { ok: true, value: out };
}

const quote = (s: string | null, max = 60) => (s === null ? 'a message' : `“${clip(s.replace(/\s+/g, ' ').trim(), max).replace(/[\uD800-\uDBFF](?=…$)/, '')}”`);

function size(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * The plain `message` a provider that knows only seed-000 intertalk shows: one readable line per
 * action (e.g. `❤ to “Where are you?”`, `✎ Where are you now?`).
 */
export function plainFallback(rich: Rich, plainLinks: (a: AttachmentRef) => string = (a) => a.url): string {
  const t = rich.text ?? '';
  const files = (rich.attachments ?? []).map((a) => `📎 ${a.name} (${size(a.size)}): ${plainLinks(a)}`);
  const withFiles = (s: string) => [s, ...files].filter((x) => x !== '').join('\n');
  switch (rich.type) {
    case 'content':
      return withFiles(t);
    case 'reply':
      return withFiles(`↩ ${quote(rich.reference!.text)}: ${t}`);
    case 'reaction':
      return rich.reaction!.remove ? `(withdrew ${rich.reaction!.emoji} from ${quote(rich.reference!.text)})` : `${rich.reaction!.emoji} to ${quote(rich.reference!.text)}`;
    case 'edit':
      return `✎ ${t}`;
    case 'delete':
      return '🗑 (deleted a message)';
    case 'property':
      return rich.property!.value ? `✎ named the conversation “${rich.property!.value}”` : '✎ removed the conversation name';
  }
}
