// The chat-mail format as the bridge's parts use it: mime-out.ts and mime-in.ts behind the
// OutboundFormat / InboundFormat seams (so the transport and the inbound side are tested with the
// real format, and the format on its own in test/email-format.test.ts).
import { createHash } from 'node:crypto';
import { buildChatMail, groupIdFor, messageIdFor } from './mime-out.js';
import { parseChatMail } from './mime-in.js';
import type { EmailFormat } from './service.js';

export const chatMailFormat: EmailFormat = {
  build: (m) => buildChatMail(m),
  parse: (raw, o) => parseChatMail(raw, o),
  groupIdFor,
  // Derived from (sender, id): a mail re-sent after a crash keeps its Message-ID, so the
  // receiving client shows it once.
  messageIdFor: (sender, id, mailDomain) => messageIdFor(mailDomain, createHash('sha256').update(`intertalk message-id\0${sender}\0${id}`).digest().subarray(0, 16)),
};
