// The e-mail bridge's two data shapes, shared by its parts: what the bridge mails for one
// intertalk message (OutgoingChatMail → mime-out.ts builds the RFC 5322 bytes) and what it reads
// from one inbound mail (mime-in.ts parses bytes → IncomingChatMail). Message-IDs are always
// written here without the angle brackets. No I/O in this file.

export interface MailAddress {
  /** Lower-cased `local@domain`. */
  address: string;
  name?: string;
}

export interface MailFile {
  name: string;
  mediaType: string;
  content: Buffer;
}

/** The chat action one mail carries (Delta Chat / COI semantics). */
export type ChatAction =
  | { type: 'content'; text: string; attachments: MailFile[] }
  /** A reply: `text` is the new text; `quote` the quoted text (for mail clients), if known. */
  | { type: 'reply'; text: string; target: string; quote: string | null; attachments: MailFile[] }
  /** `Chat-Edit: <target>`: the new text of a message the same sender sent. */
  | { type: 'edit'; text: string; target: string }
  /** `Chat-Delete: <target>`: delete for everyone, only honoured from the original sender. */
  | { type: 'delete'; target: string }
  /** RFC 9078 reaction to `target`; emoji '' withdraws the sender's reaction. */
  | { type: 'reaction'; emoji: string; target: string }
  /**
   * Group renamed: `name` is the new name (`Chat-Group-Name`); `previous` the old one, which
   * Delta Chat writes into `Chat-Group-Name-Changed` and shows ("changed from … to …"), if known.
   */
  | { type: 'rename'; name: string; previous?: string | null }
  /** A read receipt (RFC 8098 MDN, disposition "displayed") for `target`. */
  | { type: 'receipt'; target: string }
  /** Member added / removed (`Chat-Group-Member-Added` / `-Removed`). */
  | { type: 'member'; change: 'added' | 'removed'; member: string; text: string };

export interface GroupInfo {
  /** `Chat-Group-ID` (Delta Chat: 11–32 characters of [A-Za-z0-9_-]). */
  id: string;
  name: string | null;
}

export interface OutgoingChatMail {
  from: MailAddress;
  /** Everyone else in the conversation (the mail's To:). */
  to: MailAddress[];
  /** Our Message-ID for this mail, without <> (see mime-out.ts for the form). */
  messageId: string;
  date: Date;
  /** null: a 1:1 chat. */
  group: GroupInfo | null;
  action: ChatAction;
  /** Message-IDs this mail follows (for `References`; the last is `In-Reply-To` unless a reply/reaction/edit names its own). */
  references: string[];
  /** The sender's `Autocrypt:` header value, when the bridge has a key for the sender. */
  autocrypt?: string;
  /** Delta Chat's `Chat-User-Avatar`/display name etc. are not sent. `subject` defaults per mime-out.ts. */
  subject?: string;
}

/** A delivery status notification (RFC 3464) for one of our mails. */
export interface Bounce {
  /** The Message-ID of our mail that failed, when the report names it. */
  originalMessageId: string | null;
  failedRecipients: string[];
  reason: string;
}

export interface IncomingChatMail {
  messageId: string;
  from: MailAddress;
  /** To + Cc, without the sender, lower-cased, de-duplicated. */
  recipients: MailAddress[];
  date: Date | null;
  /** The Subject (Delta Chat shows it for mail from ordinary mail clients), if any. */
  subject: string | null;
  /** `Chat-Version` present: a chat client's mail, not an ordinary one. */
  isChat: boolean;
  group: GroupInfo | null;
  inReplyTo: string | null;
  references: string[];
  action: ChatAction;
  /** Auto-Submitted / Precedence / list mail: never answered or bridged as chat. */
  automated: boolean;
  /** Parsed `Autocrypt:` header of the sender, if any. */
  autocrypt: { addr: string; keydata: string; preferEncrypt: 'mutual' | 'nopreference' } | null;
  /** The mail was PGP/MIME encrypted (and decrypted before parsing). */
  encrypted: boolean;
}

export type ParsedMail =
  | { kind: 'chat'; mail: IncomingChatMail }
  | { kind: 'bounce'; bounce: Bounce; messageId: string }
  | { kind: 'rejected'; reason: string };
