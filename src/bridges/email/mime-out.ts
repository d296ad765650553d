// Builds the RFC 5322 bytes of one chat mail (OutgoingChatMail → Buffer) as Delta Chat 2.x's
// mimefactory.rs writes it: `Chat-Version: 1.0`, group headers, `Chat-Edit` / `Chat-Delete`,
// RFC 9078 reactions, RFC 8098 read receipts, and a text/plain body that reads well in an ordinary
// mail client. MIME structure comes from nodemailer's MailComposer; see docs/email.md. Pure: no I/O.
import { createHash, randomUUID } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { ChatAction, MailAddress, OutgoingChatMail } from './model.js';

export const CHAT_VERSION = '1.0';
/** RFC 5322 §2.1.1: a line (and so any one-line header value we write) is at most 998 characters. */
export const MAX_HEADER_LINE = 998;
/** How many Message-IDs go into `References` (the newest ones; Delta Chat sends a handful). */
export const MAX_REFERENCES = 20;
/** Delta Chat's marker before an edited text (constants.rs EDITED_PREFIX); receivers strip it. */
export const EDITED_PREFIX = '✏️';
/** Delta Chat's body of a delete request (message.rs); receivers ignore it. */
export const DELETE_BODY = '🚮';
/** Delta Chat's stand-in for a quote whose text is not sent (mimefactory.rs, ProtectQuote). */
export const HIDDEN_QUOTE = '...';

/**
 * Delta Chat's `validate_id` (tools.rs): 11–32 characters of the URL-safe base64 alphabet.
 * Group ids that fail it are ignored by Delta Chat.
 */
export function isValidGroupId(s: string): boolean {
  return /^[A-Za-z0-9_-]{11,32}$/.test(s);
}

/**
 * The Chat-Group-ID of one of our conversations: 24 base64url characters (144 bits, the size of
 * Delta Chat's own `create_id`) of a SHA-256 over the conversation id. Stable, so every mail of the
 * conversation names the same group; one-way, so the bridge keeps (or recomputes) the mapping.
 */
export function groupIdFor(conversationId: string): string {
  return createHash('sha256').update(`intertalk chat-group-id\0${conversationId}`).digest('base64url').slice(0, 24);
}

/**
 * A new Message-ID (without <>): `<uuid v4>@<domain>`, the form Delta Chat 2.x itself uses (it
 * writes `@localhost`). Delta Chat recognises chat mail by `Chat-Version`, not by the Message-ID,
 * and since 1.136 no longer puts the group id into it (`Gr.<grpid>.…` leaked the group id).
 * `seed` (16 bytes) makes it deterministic, for tests.
 */
export function messageIdFor(domain: string, seed?: Uint8Array): string {
  const d = domain.trim().toLowerCase();
  if (!/^[a-z0-9.-]{1,253}$/.test(d)) throw new TypeError('messageIdFor: not a domain name');
  let uuid: string;
  if (seed === undefined) uuid = randomUUID();
  else {
    if (seed.length !== 16) throw new TypeError('messageIdFor: seed must be 16 bytes');
    const b = Buffer.from(seed);
    b[6] = (b[6]! & 0x0f) | 0x40; // version 4
    b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
    const h = b.toString('hex');
    uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return `${uuid}@${d}`;
}

/** A Message-ID as we accept it from the caller: printable ASCII without <>, one header line. */
function checkId(id: string, what: string): string {
  if (!/^[\x21-\x3b\x3d\x3f-\x7e]{1,900}$/.test(id)) throw new TypeError(`buildChatMail: ${what} is not a Message-ID`);
  return id;
}

/** One-line header text: no line breaks (nodemailer would fold them to spaces anyway), bounded. */
function oneLine(s: string, max = 200): string {
  return s.replace(/[\r\n\t]+/g, ' ').trim().slice(0, max);
}

/** CRLF/CR → LF, so a lone CR cannot end a line in one client and not in another. */
const lf = (s: string) => s.replace(/\r\n?/g, '\n');

/**
 * Delta Chat's `escape_message_footer_marks`, extended to every line starting with `--`: a zero
 * width space between the dashes keeps `-- ` (and the nearly-standard `--`) from being read as the
 * start of a signature. Delta Chat's `unescape_message_footer_marks` (and ours) removes it again.
 */
export function escapeFooterMarks(text: string): string {
  return text.replace(/^--/gm, '-\u200B-');
}

/** The `> ` block Delta Chat puts above a reply (mimefactory.rs `quoted_text`), blank line after. */
function quoteBlock(quote: string): string {
  return lf(quote).split('\n').map((l) => `> ${l}`).join('\n') + '\n\n';
}

/** The user-visible text/plain body of a content, reply, edit or system message. */
export function chatBody(text: string, quote: string | null | undefined): string {
  const t = lf(text);
  // A user text that itself starts with `>` gets a blank first line, so that it is not taken for
  // the quote Delta Chat puts on top (mimefactory.rs does the same).
  const top = quote !== undefined ? quoteBlock(quote ?? HIDDEN_QUOTE) : t.startsWith('>') ? '\n' : '';
  return top + escapeFooterMarks(t);
}

const displayName = (a: MailAddress) => (a.name && a.name.trim() !== '' ? oneLine(a.name, 100) : a.address);

/**
 * The Subject Delta Chat writes: the group name in groups, `Message from <name>` in 1:1 chats,
 * with `Re: ` once the mail follows another one, and `Receipt Notification` for receipts
 * (untranslated, as in Delta Chat, so as not to reveal the sender's language).
 */
export function defaultSubject(m: Pick<OutgoingChatMail, 'from' | 'group' | 'action' | 'references'>): string {
  if (m.action.type === 'receipt') return 'Receipt Notification';
  const re = m.references.length > 0 || ('target' in m.action && m.action.type !== 'delete') ? 'Re: ' : '';
  const name = m.action.type === 'rename' ? m.action.name : m.group?.name;
  if (m.group) return re + oneLine(name || m.group.id);
  return `${re}Message from ${displayName(m.from)}`;
}

/**
 * `Autocrypt:` as a prepared, folded header: its `keydata` is a few KB of base64 without spaces,
 * which nodemailer cannot fold, so it is cut into 76-character lines (whitespace inside keydata is
 * ignored by readers, Autocrypt Level 1 §2.1).
 */
function foldAutocrypt(value: string): string {
  const attrs = value.replace(/\s+/g, ' ').split(';').map((a) => a.trim()).filter((a) => a !== '');
  const other = attrs.filter((a) => !/^keydata=/i.test(a));
  const key = attrs.find((a) => /^keydata=/i.test(a))?.slice('keydata='.length).replace(/\s+/g, '') ?? '';
  if (!/^[A-Za-z0-9+/=]+$/.test(key) || other.some((a) => a.length > 300)) throw new TypeError('buildChatMail: autocrypt is not an Autocrypt header value');
  const lines = key.match(/.{1,76}/g) ?? [];
  return `${[...other, 'keydata='].join('; ')}\r\n ${lines.join('\r\n ')}`;
}

type Headers = Record<string, string | { prepared: true; value: string }>;

/** The action's own headers, body text and (for reactions) the Content-Disposition of the body. */
function actionParts(a: Exclude<ChatAction, { type: 'receipt' }>, groupName: string | null, headers: Headers): { text: string; reaction: boolean } {
  switch (a.type) {
    case 'content':
      return { text: chatBody(a.text, undefined), reaction: false };
    case 'reply':
      return { text: chatBody(a.text, a.quote), reaction: false };
    case 'edit':
      headers['Chat-Edit'] = `<${checkId(a.target, 'edit target')}>`;
      return { text: chatBody(EDITED_PREFIX + a.text, undefined), reaction: false };
    case 'delete':
      headers['Chat-Delete'] = `<${checkId(a.target, 'delete target')}>`;
      return { text: DELETE_BODY, reaction: false };
    case 'reaction':
      // RFC 9078: the body is the emoji, no footer; '' withdraws (Delta Chat's extension).
      return { text: oneLine(a.emoji, 64), reaction: true };
    case 'rename':
      // Delta Chat needs a non-empty old name to show the change; when the caller knows none, the
      // group's name as given, else the new name (mime-in.ts reads "old = new" back as unknown).
      headers['Chat-Group-Name-Changed'] = oneLine(a.previous || (groupName && groupName !== a.name ? groupName : a.name));
      const text = a.previous ? `Chat name changed from “${oneLine(a.previous)}” to “${oneLine(a.name)}”.` : `Chat name changed to “${oneLine(a.name)}”.`;
      return { text: chatBody(text, undefined), reaction: false };
    case 'member': {
      const who = a.member.trim().toLowerCase();
      if (!/^[^\s@<>,;"]{1,64}@[^\s@<>,;"]{1,253}$/.test(who)) throw new TypeError('buildChatMail: member is not an address');
      headers[a.change === 'added' ? 'Chat-Group-Member-Added' : 'Chat-Group-Member-Removed'] = who;
      // Delta Chat's placeholder texts (mimefactory.rs), unless the caller has a better one.
      return { text: chatBody(a.text || (a.change === 'added' ? `Member ${who} was added.` : `Member ${who} was removed.`), undefined), reaction: false };
    }
  }
}

/**
 * The raw mail for `m`. Throws TypeError on caller bugs (a Message-ID with spaces or <>, a group
 * without a valid id); everything from users (text, names, file names) is escaped or encoded.
 */
export async function buildChatMail(m: OutgoingChatMail): Promise<Buffer> {
  checkId(m.messageId, 'messageId');
  if (m.group && !isValidGroupId(m.group.id)) throw new TypeError('buildChatMail: group.id is not a valid Chat-Group-ID');
  if (m.group === null && (m.action.type === 'rename' || m.action.type === 'member')) throw new TypeError(`buildChatMail: ${m.action.type} needs a group`);

  const a = m.action;
  if (a.type === 'receipt') return buildReceipt(m, checkId(a.target, 'receipt target'));
  const headers: Headers = {};
  const target = a.type === 'reply' || a.type === 'reaction' || a.type === 'edit' ? checkId(a.target, 'target') : null;
  // References: the thread so far, then the mail this one answers (RFC 5322 §3.6.4), newest last.
  const refs = m.references.map((r) => checkId(r, 'reference')).filter((r) => r !== target);
  if (target !== null) refs.push(target);
  const references = refs.slice(-MAX_REFERENCES);
  const inReplyTo = target ?? references[references.length - 1];

  if (m.group) {
    headers['Chat-Group-ID'] = m.group.id;
    headers['Chat-Group-Name'] = oneLine(a.type === 'rename' ? a.name : (m.group.name ?? m.group.id));
  }
  const { text, reaction } = actionParts(a, m.group?.name ?? null, headers);
  headers['Chat-Version'] = CHAT_VERSION;
  // Delta Chat asks for read receipts on what a user wrote, with its own header: replies to
  // `Disposition-Notification-To` from ordinary clients are mostly free text (mimefactory.rs).
  if (a.type === 'content' || a.type === 'reply') headers['Chat-Disposition-Notification-To'] = m.from.address;
  if (m.autocrypt) headers['Autocrypt'] = { prepared: true, value: foldAutocrypt(m.autocrypt) };

  const body = text.replace(/\n/g, '\r\n');
  const attachments = a.type === 'content' || a.type === 'reply' ? a.attachments : [];
  const composer = new MailComposer({
    from: addr(m.from),
    // No one else in the conversation: an empty group, as Delta Chat's hidden_recipients().
    to: m.to.length > 0 ? m.to.map(addr) : 'hidden-recipients: ;',
    subject: m.subject !== undefined ? oneLine(m.subject, 400) : defaultSubject(m),
    date: m.date,
    messageId: `<${m.messageId}>`,
    inReplyTo: inReplyTo ? `<${inReplyTo}>` : undefined,
    references: references.length > 0 ? references.map((r) => `<${r}>`) : undefined,
    // A reaction is a text/plain body with `Content-Disposition: reaction` (RFC 9078 §3). A Buffer,
    // because MailComposer drops an empty string (an empty reaction withdraws; an empty text next to
    // files still gets its text part, as in Delta Chat).
    text: reaction ? { content: Buffer.from(body), headers: { 'Content-Disposition': 'reaction' } } : Buffer.from(body),
    // Delta Chat sends every file as `attachment` (mimefactory.rs build_body_file: `inline`
    // caused trouble in Outlook); mail clients still show images in place.
    attachments: attachments.map((f) => ({ filename: oneLine(f.name, 255) || 'file', contentType: f.mediaType, content: f.content, contentDisposition: 'attachment' })),
    headers,
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  return composer.compile().build();
}

const addr = (a: MailAddress) => ({ name: a.name ? oneLine(a.name, 100) : '', address: a.address });

/**
 * An RFC 8098 read receipt as Delta Chat's render_mdn writes it: multipart/report;
 * report-type=disposition-notification, a human part and a message/disposition-notification part
 * naming the original Message-ID. MailComposer has no multipart/report, but its tree is the same as
 * multipart/mixed with a text part and one message/* part, so only the root Content-Type is swapped
 * (the boundary is kept). No Chat-Group-* headers and no outer wrapper: Delta Chat and chatmail
 * servers recognise receipts by this Content-Type.
 */
async function buildReceipt(m: OutgoingChatMail, target: string): Promise<Buffer> {
  const me = m.from.address;
  const report =
    `Original-Recipient: rfc822;${me}\r\n` +
    `Final-Recipient: rfc822;${me}\r\n` +
    `Original-Message-ID: <${target}>\r\n` +
    'Disposition: manual-action/MDN-sent-automatically; displayed\r\n';
  const composer = new MailComposer({
    from: addr(m.from),
    to: m.to.map(addr),
    subject: m.subject !== undefined ? oneLine(m.subject, 400) : 'Receipt Notification',
    date: m.date,
    messageId: `<${m.messageId}>`,
    text: 'This is a receipt notification.',
    attachments: [{ contentType: 'message/disposition-notification', content: report, contentDisposition: 'inline' }],
    // RFC 3834: a receipt is an automatic response; Delta Chat still reads it (see mime-in.ts).
    headers: { 'Auto-Submitted': 'auto-replied', 'Chat-Version': CHAT_VERSION },
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  const root = composer.compile();
  root.setHeader('Content-Type', 'multipart/report; report-type=disposition-notification');
  return root.build();
}
