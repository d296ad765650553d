// Reads one inbound mail (raw RFC 5322 bytes → ParsedMail) the way Delta Chat 2.x's mimeparser.rs
// and simplify.rs do: chat mail (`Chat-Version`) and ordinary mail become a ChatAction, RFC 3464
// delivery reports a Bounce, anything unreadable or forged a rejection. MIME decoding is mailparser's
// simpleParser; headers we act on are read from the raw header lines. Never throws. Pure: no I/O.
import { createHash } from 'node:crypto';
import { simpleParser, parseAddressHeader, type Attachment, type ParsedMail as MpMail } from 'mailparser';
import { parseAddress } from '../../protocol/address.js';
import { MAX_ATTACHMENTS, MAX_TEXT } from '../../protocol/rich.js';
import type { Bounce, ChatAction, GroupInfo, IncomingChatMail, MailAddress, MailFile, ParsedMail } from './model.js';
import { EDITED_PREFIX, HIDDEN_QUOTE, isValidGroupId } from './mime-out.js';

export interface ParseOptions {
  /** Larger mails are rejected before parsing. */
  maxBytes: number;
  /** Our own mail domains: mail claiming to be From them did not come from us (bounces excepted). */
  ourDomains: string[];
  /** The caller decrypted the mail (PGP/MIME) before handing it here. */
  encrypted?: boolean;
}

/** RFC 5322 line limit; no Message-ID or header value we keep is longer. */
export const MAX_ID = 998;
/** Header values are cut here before any parsing (Autocrypt keydata is the longest legitimate one). */
const MAX_HEADER_VALUE = 64 * 1024;
export const MAX_REFERENCES = 100;
export const MAX_RECIPIENTS = 200;
/** Delta Chat ignores group names of 200 bytes or more (receive_imf.rs); we cut at 200 characters. */
export const MAX_GROUP_NAME = 200;
const MAX_NAME = 100;
const MAX_SUBJECT = 400;
const MAX_REASON = 500;
/** Delivery reports and receipts are a few KB; longer report parts are read only this far. */
const MAX_REPORT = 64 * 1024;

const reject = (reason: string): ParsedMail => ({ kind: 'rejected', reason });

export async function parseChatMail(raw: Buffer, o: ParseOptions): Promise<ParsedMail> {
  if (!Buffer.isBuffer(raw)) return reject('not a buffer');
  if (raw.length > o.maxBytes) return reject(`mail larger than ${o.maxBytes} bytes`);
  if (raw.length === 0) return reject('empty mail');
  try {
    const mail = await simpleParser(raw, {
      keepDeliveryStatus: true, // the status part as an attachment, not glued to the text
      skipTextToHtml: true,
      skipTextLinks: true,
      skipImageLinks: true,
      maxHtmlLengthToParse: Math.min(o.maxBytes, 2 * 1024 * 1024),
      checksumAlgo: false,
    });
    return read(raw, mail, o);
  } catch (e) {
    return reject(`unreadable MIME: ${String((e as Error)?.message ?? e).slice(0, 200)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Headers

type Raw = Map<string, string[]>;

/** The root header lines, unfolded, by lower-case name, each value bounded. */
function rawHeaders(mail: MpMail): Raw {
  const out: Raw = new Map();
  for (const { key, line } of mail.headerLines ?? []) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    // Unfolding is removing the line break before the whitespace (RFC 5322 §2.2.3).
    const v = line.slice(i + 1, i + 1 + MAX_HEADER_VALUE).replace(/\r?\n(?=[ \t])/g, '').trim();
    const list = out.get(key) ?? [];
    list.push(v);
    out.set(key, list);
  }
  return out;
}

const first = (h: Raw, name: string): string | null => h.get(name)?.[0] ?? null;

/** RFC 2047 encoded words (`=?utf-8?q?…?=`), which mailparser leaves alone in unknown headers. */
export function decodeWords(s: string): string {
  return s.replace(/=\?([^?\s]{1,40})\?([BbQq])\?([^?\s]*)\?=(\s+(?==\?))?/g, (all, charset: string, enc: string, text: string) => {
    try {
      const bytes =
        enc.toUpperCase() === 'B'
          ? Buffer.from(text, 'base64')
          : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
      return new TextDecoder(charset.split('*')[0]!.toLowerCase()).decode(bytes);
    } catch {
      return all;
    }
  });
}

/** One line of user-visible header text: decoded, no control characters, bounded. */
function textHeader(v: string | null, max: number): string | null {
  if (v === null) return null;
  const t = decodeWords(v).replace(/[\p{Cc}\p{Zl}\p{Zp}]+/gu, ' ').trim();
  return t === '' ? null : cut(t, max);
}

/** `s` cut to `max` UTF-16 units without splitting a surrogate pair. */
function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  const t = s.slice(0, max);
  return /[\uD800-\uDBFF]$/.test(t) ? t.slice(0, -1) : t;
}

const ID = /^[\x21-\x3b\x3d\x3f-\x7e]{1,998}$/;

/** The Message-IDs in a header value: `<id>` tokens, or bare ones (old Delta Chat wrote `Message-ID: Mr.x@y`). */
export function messageIds(v: string | null, max = MAX_REFERENCES): string[] {
  if (v === null) return [];
  const bracketed = [...v.matchAll(/<([^<>\s]*)>/g)].map((m) => m[1]!);
  const ids = (bracketed.length > 0 ? bracketed : v.split(/[\s,]+/)).filter((id) => ID.test(id));
  return [...new Set(ids)].slice(-max);
}

// ---------------------------------------------------------------------------------------------
// Addresses

function addressList(values: string[] | undefined): { address: string; name: string }[] {
  const out: { address: string; name: string }[] = [];
  for (const v of values ?? []) {
    // decodePunycode: false keeps the ASCII form our address rules (and SMTP) use.
    for (const a of parseAddressHeader(v, { flatten: true, decodePunycode: false }).value) {
      if (a.address !== undefined) out.push({ address: a.address, name: a.name });
    }
  }
  return out;
}

function mailAddress(a: { address: string; name: string }): MailAddress | null {
  const p = parseAddress(a.address);
  if (!p.ok) return null;
  const name = textHeader(a.name, MAX_NAME);
  return name && name.toLowerCase() !== p.address.full ? { address: p.address.full, name } : { address: p.address.full };
}

// ---------------------------------------------------------------------------------------------
// Text: Delta Chat's simplify.rs, conservatively

/** Delta Chat's `unescape_message_footer_marks`: drops the zero width space mime-out.ts put between `--`. */
export function unescapeFooterMarks(s: string): string {
  return s.replace(/(^|\n)-\u200B-/g, '$1--');
}

const blank = (l: string) => l.trim() === '';
const isQuote = (l: string) => l.startsWith('>');
/** "On …, X wrote:" in any language: a short line ending in a colon (simplify.rs is_quoted_headline). */
const isHeadline = (l: string) => l.length <= 120 && l.trimEnd().endsWith(':');
const unquote = (l: string) => l.replace(/^> ?/, '');

/** simplify.rs remove_message_footer: `-- ` (or `--  `); else `--` between a blank and a non-blank line. */
function removeFooter(lines: string[]): string[] {
  const std = lines.findIndex((l) => l === '-- ' || l === '--  ');
  if (std >= 0) return lines.slice(0, std);
  const near = lines.findIndex((l, i) => l === '--' && (i === 0 || blank(lines[i - 1]!)) && lines[i + 1] !== undefined && !blank(lines[i + 1]!));
  return near >= 0 ? lines.slice(0, near) : lines;
}

/** Blank lines at either end go; everything between is the user's (Delta Chat also collapses runs of them). */
function trimBlankLines(lines: string[]): string[] {
  let a = 0;
  let b = lines.length;
  while (a < b && blank(lines[a]!)) a++;
  while (b > a && blank(lines[b - 1]!)) b--;
  return lines.slice(a, b);
}

const render = (lines: string[]) => unescapeFooterMarks(trimBlankLines(lines).join('\n'));

/**
 * The user's text of a mail body and the quote it answers, if any. Both kinds of mail lose a top
 * quote (a `>` block on the first lines; ordinary mail may put an "… wrote:" line above it) and a
 * `-- ` signature; ordinary mail also a bottom quote (with its "… wrote:" line). Unlike Delta Chat
 * we do not cut "nonstandard footers" (`---`, `____`, …): they are too often the user's own text.
 */
export function simplifyText(input: string, isChat: boolean): { text: string; quote: string | null } {
  let lines = input.replace(/\r\n?/g, '\n').split('\n');
  let quote: string[] | null = null;

  let start = 0;
  if (!isChat && lines[0] !== undefined && isHeadline(lines[0]) && !isQuote(lines[0]) && lines[1] !== undefined && isQuote(lines[1])) start = 1;
  let end = start;
  while (end < lines.length && isQuote(lines[end]!)) end++;
  if (end > start) {
    quote = lines.slice(start, end).map(unquote);
    lines = lines.slice(end);
  }
  const afterQuote = lines;
  lines = removeFooter(lines);

  if (!isChat) {
    let q = lines.length;
    while (q > 0 && blank(lines[q - 1]!)) q--;
    let top = q;
    while (top > 0 && isQuote(lines[top - 1]!)) top--;
    if (top < q) {
      const bottom = lines.slice(top, q).map(unquote);
      let cutAt = top;
      if (cutAt > 0 && blank(lines[cutAt - 1]!)) cutAt--;
      if (cutAt > 0 && isHeadline(lines[cutAt - 1]!)) cutAt--;
      lines = lines.slice(0, cutAt);
      quote ??= bottom;
    }
    // Never fold a whole mail away (simplify.rs keeps the original then).
    if (lines.every(blank)) lines = afterQuote;
    if (quote) quote = removeFooter(quote);
  }
  return { text: cut(render(lines), MAX_TEXT), quote: quote === null ? null : cut(render(quote), MAX_TEXT) };
}

// ---------------------------------------------------------------------------------------------
// Reports (RFC 6522): delivery status (RFC 3464) and disposition notifications (RFC 8098)

/** The header blocks of a report part (`Name: value` lines, blank-line separated), unfolded, lower-case names. */
function fieldBlocks(content: Buffer): Map<string, string>[] {
  const text = content.subarray(0, MAX_REPORT).toString('utf8').replace(/\r\n?/g, '\n').replace(/\n[ \t]+/g, ' ');
  return text
    .split(/\n\s*\n/)
    .map((block) => {
      const m = new Map<string, string>();
      for (const line of block.split('\n')) {
        const i = line.indexOf(':');
        if (i > 0) {
          const k = line.slice(0, i).trim().toLowerCase();
          if (!m.has(k)) m.set(k, line.slice(i + 1).trim());
        }
      }
      return m;
    })
    .filter((m) => m.size > 0);
}

/** `rfc822; a@b` → `a@b`; `smtp; 550 …` → `550 …`. */
const afterType = (v: string) => v.replace(/^[^;]*;\s*/, '');

const STATUS_TYPES = new Set(['message/delivery-status', 'message/global-delivery-status']);
const ORIGINAL_TYPES = new Set(['message/rfc822', 'message/global', 'text/rfc822-headers', 'message/global-headers']);

function bounceOf(mail: MpMail, reportType: string | undefined): Bounce | string {
  const status = mail.attachments.find((a) => STATUS_TYPES.has(a.contentType.toLowerCase()));
  if (!status) return 'delivery report without a delivery-status part';
  const [perMessage, ...perRecipient] = fieldBlocks(status.content);
  const failed = perRecipient.filter((b) => (b.get('action') ?? '').toLowerCase() === 'failed');
  if (failed.length === 0) return `delivery report without failed recipients${reportType ? '' : ' (no report-type)'}`;
  const failedRecipients = [...new Set(failed.map((b) => afterType(b.get('final-recipient') ?? b.get('original-recipient') ?? '').toLowerCase()).filter((a) => parseAddress(a).ok))].slice(0, MAX_RECIPIENTS);
  const f = failed[0]!;
  const reason = cut((f.get('diagnostic-code') ? afterType(f.get('diagnostic-code')!) : f.get('status') ? `status ${f.get('status')}` : 'delivery failed').replace(/\p{Cc}+/gu, ' ').trim(), MAX_REASON);
  // The failed mail's Message-ID: from its returned headers; Gmail also names it in the status part.
  const original = mail.attachments.find((a) => ORIGINAL_TYPES.has(a.contentType.toLowerCase()));
  const fromOriginal = original ? messageIds(fieldBlocks(original.content)[0]?.get('message-id') ?? null, 1)[0] : undefined;
  const fromStatus = messageIds(perMessage?.get('x-original-message-id') ?? null, 1)[0];
  return { originalMessageId: fromOriginal ?? fromStatus ?? null, failedRecipients, reason: reason || 'delivery failed' };
}

/** The Message-ID a "displayed" MDN is for; MS Exchange leaves out Original-Message-ID and uses In-Reply-To. */
function receiptTarget(mail: MpMail, h: Raw): string | string[] {
  const part = mail.attachments.find((a) => a.contentType.toLowerCase() === 'message/disposition-notification');
  if (!part) return 'disposition notification without its message/disposition-notification part';
  const fields = fieldBlocks(part.content)[0] ?? new Map<string, string>();
  const disposition = fields.get('disposition');
  if (!disposition) return 'disposition notification without Disposition';
  if (!/;\s*displayed\b/i.test(disposition)) return `disposition notification "${cut(disposition, 60)}", not "displayed"`;
  const target = messageIds(fields.get('original-message-id') ?? null, 1)[0] ?? messageIds(first(h, 'in-reply-to'), 1)[0];
  return target ? [target] : 'disposition notification without Original-Message-ID';
}

// ---------------------------------------------------------------------------------------------
// Autocrypt (Level 1 §2.1)

function autocryptOf(values: string[] | undefined, from: string): IncomingChatMail['autocrypt'] {
  // More than one Autocrypt header: none is valid (Autocrypt Level 1 §2.3).
  if (!values || values.length !== 1) return null;
  const attrs = new Map<string, string>();
  for (const part of values[0]!.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const k = part.slice(0, i).trim().toLowerCase();
    if (attrs.has(k)) return null;
    attrs.set(k, part.slice(i + 1).trim());
  }
  for (const k of attrs.keys()) if (!['addr', 'prefer-encrypt', 'keydata'].includes(k) && !k.startsWith('_')) return null; // unknown critical attribute
  const addr = attrs.get('addr')?.toLowerCase();
  const keydata = attrs.get('keydata')?.replace(/\s+/g, '');
  if (addr !== from || !keydata || !/^[A-Za-z0-9+/]+={0,2}$/.test(keydata)) return null;
  return { addr, keydata, preferEncrypt: attrs.get('prefer-encrypt')?.toLowerCase() === 'mutual' ? 'mutual' : 'nopreference' };
}

// ---------------------------------------------------------------------------------------------
// Attachments

const REPORT_PARTS = new Set([...STATUS_TYPES, ...ORIGINAL_TYPES, 'message/disposition-notification']);

function fileName(a: Attachment, i: number): string {
  const n = cut((a.filename ?? '').replace(/[\p{Cc}/\\]+/gu, '_').trim(), 255);
  return n !== '' ? n : `attachment-${i + 1}`;
}

function mediaType(a: Attachment): string {
  const t = a.contentType.toLowerCase();
  return /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/.test(t) ? t : 'application/octet-stream';
}

/**
 * Files named by `Chat-User-Avatar` / `Chat-Group-Avatar` are profile and group images, not
 * content. Delta Chat before 1.x wrote these headers into the text part's header (which mailparser
 * does not expose), so the raw mail is searched too; a name counts only if a file carries it.
 */
function avatarNames(raw: Buffer, h: Raw, files: Attachment[]): Set<string> {
  const names = new Set<string>([...(h.get('chat-user-avatar') ?? []), ...(h.get('chat-group-avatar') ?? [])]);
  const head = raw.subarray(0, 256 * 1024).toString('latin1');
  for (const m of head.matchAll(/(?:^|\n)Chat-(?:User|Group)-Avatar:[ \t]*([^\r\n]{1,255})/gi)) names.add(m[1]!.trim());
  return new Set(files.map((f) => f.filename ?? '').filter((n) => n !== '' && names.has(n)));
}

// ---------------------------------------------------------------------------------------------

function read(raw: Buffer, mail: MpMail, o: ParseOptions): ParsedMail {
  const h = rawHeaders(mail);
  const ct = mail.headers.get('content-type') as { value?: string; params?: Record<string, string> } | undefined;
  const type = (ct?.value ?? 'text/plain').toLowerCase();
  const reportType = ct?.params?.['report-type']?.toLowerCase();
  if (type === 'multipart/encrypted') return reject('encrypted mail: decrypt before parsing');

  const messageId = messageIds(first(h, 'message-id'), 1)[0] ?? `${createHash('sha256').update(raw).digest('hex').slice(0, 32)}@generated.invalid`;

  // Delivery reports come from MAILER-DAEMON (often at our own domain), so before the From rules.
  // Tiscali leaves out report-type; Delta Chat then assumes delivery-status, and so do we.
  if (type === 'multipart/report' && (reportType === 'delivery-status' || reportType === undefined)) {
    const b = bounceOf(mail, reportType);
    if (typeof b !== 'string') return { kind: 'bounce', bounce: b, messageId };
    if (reportType === 'delivery-status') return reject(b);
  }

  if ((h.get('from')?.length ?? 0) !== 1) return reject(h.has('from') ? 'more than one From header' : 'no From header');
  const fromList = addressList(h.get('from'));
  if (fromList.length !== 1) return reject('From must name exactly one address');
  const from = mailAddress(fromList[0]!);
  if (!from) return reject('From is not a valid address');
  const ours = new Set(o.ourDomains.map((d) => d.toLowerCase()));
  if (ours.has(from.address.slice(from.address.lastIndexOf('@') + 1))) return reject('From claims one of our domains');

  const seen = new Set([from.address]);
  const recipients: MailAddress[] = [];
  for (const a of addressList([...(h.get('to') ?? []), ...(h.get('cc') ?? [])])) {
    const m = mailAddress(a);
    if (m && !seen.has(m.address) && recipients.length < MAX_RECIPIENTS) {
      seen.add(m.address);
      recipients.push(m);
    }
  }

  const isChat = h.has('chat-version');
  const inReplyTo = messageIds(first(h, 'in-reply-to'), 1)[0] ?? null;
  const references = messageIds((h.get('references') ?? []).join(' '));
  const dateHeader = first(h, 'date');
  const date = dateHeader !== null && Number.isFinite(Date.parse(dateHeader)) ? new Date(Date.parse(dateHeader)) : null;

  let group: GroupInfo | null = null;
  const gid = isChat ? first(h, 'chat-group-id') : null;
  if (gid !== null && isValidGroupId(gid)) group = { id: gid, name: textHeader(first(h, 'chat-group-name'), MAX_GROUP_NAME) };

  const isMdn = type === 'multipart/report' && reportType === 'disposition-notification';
  const action = actionOf(raw, mail, h, { isChat, isMdn, isReport: type === 'multipart/report', inReplyTo, group });
  if (typeof action === 'string') return reject(action);

  // Delta Chat receipts say `Auto-Submitted: auto-replied` (RFC 3834) but are exactly what we want
  // to read, so for them only list headers count.
  const autoSubmitted = (first(h, 'auto-submitted') ?? 'no').toLowerCase().split(';')[0]!.trim();
  const precedence = (first(h, 'precedence') ?? '').toLowerCase().trim();
  const list = h.has('list-id') || h.has('list-unsubscribe') || h.has('list-post');
  const automated = list || (!isMdn && (autoSubmitted !== 'no' || ['bulk', 'list', 'junk'].includes(precedence)));

  return {
    kind: 'chat',
    mail: {
      messageId,
      from,
      recipients,
      date,
      subject: textHeader(mail.subject ?? null, MAX_SUBJECT),
      isChat,
      group,
      inReplyTo,
      references,
      action,
      automated,
      autocrypt: autocryptOf(h.get('autocrypt'), from.address),
      encrypted: o.encrypted === true,
    },
  };
}

function actionOf(raw: Buffer, mail: MpMail, h: Raw, c: { isChat: boolean; isMdn: boolean; isReport: boolean; inReplyTo: string | null; group: GroupInfo | null }): ChatAction | string {
  if (c.isMdn) {
    const t = receiptTarget(mail, h);
    return typeof t === 'string' ? t : { type: 'receipt', target: t[0]! };
  }

  // RFC 9078 is not Delta Chat's own, so reactions count from any client.
  const reactionPart = mail.attachments.find((a) => a.contentDisposition?.toLowerCase() === 'reaction' && a.contentType.toLowerCase() === 'text/plain');
  if (reactionPart) {
    if (c.inReplyTo === null) return 'reaction without In-Reply-To';
    const body = simplifyText(reactionPart.content.subarray(0, 1024).toString('utf8'), true).text.trim();
    if (body.length > 64 || /[\n\r]/.test(body)) return 'reaction is not an emoji';
    return { type: 'reaction', emoji: body, target: c.inReplyTo };
  }

  const body = mail.text ?? '';
  if (c.isChat) {
    const edit = messageIds(first(h, 'chat-edit'), 1)[0];
    if (edit) {
      const t = simplifyText(body, true).text;
      const text = t.startsWith(EDITED_PREFIX) ? trimBlankLines(t.slice(EDITED_PREFIX.length).split('\n')).join('\n') : t;
      return { type: 'edit', text, target: edit };
    }
    // Delta Chat may list several (one request deletes a selection); the model carries one.
    const del = messageIds(first(h, 'chat-delete'), 1)[0];
    if (del) return { type: 'delete', target: del };
    if (c.group && h.has('chat-group-name-changed') && c.group.name !== null) {
      const previous = textHeader(first(h, 'chat-group-name-changed'), MAX_GROUP_NAME);
      return { type: 'rename', name: c.group.name, previous: previous === c.group.name ? null : previous };
    }
    for (const [header, change] of [['chat-group-member-added', 'added'], ['chat-group-member-removed', 'removed']] as const) {
      const v = first(h, header);
      const who = v !== null ? parseAddress(v.replace(/^<|>$/g, '').trim()) : null;
      if (c.group && who?.ok) return { type: 'member', change, member: who.address.full, text: simplifyText(body, true).text };
    }
  }

  const { text, quote } = simplifyText(body, c.isChat);
  // The machine-readable parts of a report are not files (a forwarded message/rfc822 elsewhere is).
  const candidates = mail.attachments.filter((a) => a.contentDisposition?.toLowerCase() !== 'reaction' && !(c.isReport && REPORT_PARTS.has(a.contentType.toLowerCase())));
  const avatars = c.isChat ? avatarNames(raw, h, candidates) : new Set<string>();
  const attachments: MailFile[] = candidates
    .filter((a) => !avatars.has(a.filename ?? ''))
    .slice(0, MAX_ATTACHMENTS)
    .map((a, i) => ({ name: fileName(a, i), mediaType: mediaType(a), content: a.content }));
  // A reply is a quote plus In-Reply-To (Delta Chat sets In-Reply-To on every mail of a chat, so
  // In-Reply-To alone only threads). "> ..." is Delta Chat's quote whose text is not shown.
  if (c.inReplyTo !== null && quote !== null) {
    return { type: 'reply', text, target: c.inReplyTo, quote: quote === HIDDEN_QUOTE ? null : quote, attachments };
  }
  return { type: 'content', text, attachments };
}
