// Delta Chat core (deltachat-rpc-server from @deltachat/stdio-rpc-server) driven over JSON-RPC
// as an e-mail user, for the e-mail bridge tests. One server process per user, each with its own
// accounts directory; the account is configured against the loopback Postfix/Dovecot
// (test/helpers/mail-servers.ts) without TLS and otherwise keeps Delta Chat's default settings.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { getRPCServerPath } from '@deltachat/stdio-rpc-server';
import { C, StdioDeltaChat, type T } from '@deltachat/jsonrpc-client';
import type { Endpoint } from './mail-servers.js';

export interface DeltaChatUserOptions {
  address: string;
  password: string;
  imap: Endpoint;
  smtp: Endpoint;
}

export interface DeltaChatUser {
  address: string;
  accountId: number;
  dc: StdioDeltaChat;
  /** The 1:1 chat with an address (an address-contact: unencrypted), created if missing. */
  createChatByAddress(address: string): Promise<number>;
  /** An unencrypted group (address-contacts only) with these members; unpromoted until the first message. */
  createGroup(name: string, members: string[]): Promise<number>;
  sendText(chatId: number, text: string): Promise<number>;
  sendImage(chatId: number, path: string, text?: string): Promise<number>;
  /** A text quoting `quotedMsgId`. */
  reply(chatId: number, quotedMsgId: number, text: string): Promise<number>;
  edit(msgId: number, text: string): Promise<void>;
  deleteForAll(msgId: number): Promise<void>;
  /** Sets this user's reaction (replacing an earlier one); '' removes it. */
  react(msgId: number, emoji: string): Promise<void>;
  /** Marks messages seen, which sends read receipts (MDNs) when the sender asked for them. */
  markSeen(msgIds: number[]): Promise<void>;
  acceptChat(chatId: number): Promise<void>;
  chat(chatId: number): Promise<T.BasicChat>;
  getMessage(msgId: number): Promise<T.Message>;
  getMessages(chatId: number): Promise<T.Message[]>;
  getReactions(msgId: number): Promise<T.Reactions | null>;
  /** C.DC_STATE_* of a message (e.g. OUT_DELIVERED 26, OUT_MDN_RCVD 28, OUT_FAILED 24). */
  messageState(msgId: number): Promise<number>;
  /**
   * The first incoming message (not from self, not an info message) in any chat — contact
   * requests included — that matches; messages that arrived before the call count too.
   */
  waitForIncoming(predicate: (m: T.Message) => boolean, timeoutMs?: number): Promise<T.Message>;
  /** This user's Secure-Join QR text (contact invite), for another user's secureJoin(). */
  secureJoinQr(): Promise<string>;
  /**
   * Scans another user's QR and waits until the handshake is done, so both sides hold each other's
   * key (key-contacts) and can send encrypted mail; returns the encrypted 1:1 chat.
   */
  secureJoin(qr: string, timeoutMs?: number): Promise<number>;
  /** Polls until `probe` returns a truthy value; the error names `what` and the recent core log. */
  waitFor<V>(what: string, probe: () => Promise<V | null | undefined | false>, timeoutMs?: number): Promise<V>;
  /** Tells core the network may be back: retries SMTP and reconnects IMAP now instead of after its backoff. */
  maybeNetwork(): Promise<void>;
  /** Recent warnings, errors and connection events from core, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

const WAIT_MS = 60_000;
// Event kinds worth keeping for a failure message (Info is too chatty to keep all of it).
const LOGGED = new Set(['Warning', 'Error', 'ErrorSelfNotInGroup', 'ConfigureProgress', 'ImapConnected', 'SmtpConnected', 'SmtpMessageSent', 'MsgFailed', 'MsgDelivered', 'MsgRead', 'IncomingMsg', 'SecurejoinJoinerProgress', 'SecurejoinInviterProgress']);

export async function startDeltaChatUser(o: DeltaChatUserOptions): Promise<DeltaChatUser> {
  const dir = mkdtempSync(join(tmpdir(), 'intertalk-dc-'));
  const proc = spawn(getRPCServerPath(), [], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, DC_ACCOUNTS_PATH: join(dir, 'accounts') },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.once('error', () => undefined); // surfaces as a failed RPC below, with stderr in the message
  const dc = new StdioDeltaChat(proc.stdin, proc.stdout, true);
  const rpc = dc.rpc;

  const events: string[] = [];
  const recent: T.EventType[] = []; // every non-Info event, for waits on protocol progress
  const wakers = new Set<() => void>();
  dc.on('ALL', (_account, ev) => {
    if (LOGGED.has(ev.kind)) events.push(`${new Date().toISOString().slice(11, 23)} ${ev.kind} ${JSON.stringify(ev).slice(0, 400)}`);
    if (events.length > 150) events.splice(0, events.length - 150);
    if (ev.kind !== 'Info') recent.push(ev);
    if (recent.length > 2000) recent.splice(0, recent.length - 2000);
    if (ev.kind.startsWith('Securejoin') || ev.kind === 'IncomingMsg' || ev.kind === 'MsgsChanged' || ev.kind === 'IncomingReaction' || ev.kind === 'MsgRead' || ev.kind === 'MsgDelivered' || ev.kind === 'MsgFailed') for (const w of wakers) w();
  });
  const log = () => `--- delta chat ${o.address} ---\n${events.join('\n')}${stderr ? `\n--- rpc server stderr ---\n${stderr}` : ''}`;

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      await rpc.stopIoForAllAccounts().catch(() => undefined);
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  /** Sleeps until an event of interest or `ms`, whichever comes first. */
  const nap = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => (clearTimeout(t), wakers.delete(done), resolve());
      const t = setTimeout(done, ms);
      wakers.add(done);
    });
  const waitFor = async <V>(what: string, probe: () => Promise<V | null | undefined | false>, timeoutMs = WAIT_MS): Promise<V> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`${o.address}: timed out after ${timeoutMs} ms waiting for ${what}\n${log()}`);
      await nap(1000);
    }
  };

  let accountId: number;
  try {
    accountId = await rpc.addAccount();
    // Only what is needed to reach loopback servers without TLS; everything else stays default.
    await rpc.addOrUpdateTransport(accountId, {
      addr: o.address,
      password: o.password,
      imapServer: o.imap.host,
      imapPort: o.imap.port,
      imapSecurity: 'plain',
      imapUser: null,
      imapFolder: null,
      smtpServer: o.smtp.host,
      smtpPort: o.smtp.port,
      smtpSecurity: 'plain',
      smtpUser: null,
      smtpPassword: null,
      certificateChecks: null,
    });
    await rpc.startIo(accountId);
  } catch (err) {
    await stop();
    throw new Error(`${o.address}: Delta Chat setup failed: ${(err as Error)?.message ?? JSON.stringify(err)}\n${log()}`);
  }
  const id = accountId;

  const contactFor = async (address: string) => (await rpc.lookupContactIdByAddr(id, address)) ?? (await rpc.createContact(id, address, null));
  const getMessages = async (chatId: number) => {
    const ids = await rpc.getMessageIds(id, chatId, false, false);
    const loaded = await rpc.getMessages(id, ids);
    return ids.map((m) => loaded[m]).filter((r): r is T.MessageLoadResult & { kind: 'message' } => r?.kind === 'message');
  };
  const allChats = async () => {
    const normal = await rpc.getChatlistEntries(id, null, null, null);
    const archived = await rpc.getChatlistEntries(id, C.DC_GCL_ARCHIVED_ONLY, null, null);
    return [...new Set([...normal, ...archived])];
  };
  const send = (chatId: number, data: Partial<T.MessageData>) =>
    rpc.sendMsg(id, chatId, { text: null, html: null, viewtype: null, file: null, filename: null, location: null, overrideSenderName: null, quotedMessageId: null, quotedText: null, ...data });

  return {
    address: o.address,
    accountId: id,
    dc,
    createChatByAddress: async (address) => rpc.createChatByContactId(id, await contactFor(address)),
    createGroup: async (name, members) => {
      const chatId = await rpc.createGroupChatUnencrypted(id, name);
      for (const m of members) await rpc.addContactToChat(id, chatId, await contactFor(m));
      return chatId;
    },
    sendText: (chatId, text) => send(chatId, { text }),
    sendImage: (chatId, path, text) => send(chatId, { viewtype: 'Image', file: path, filename: basename(path), text: text ?? null }),
    reply: (chatId, quotedMsgId, text) => send(chatId, { text, quotedMessageId: quotedMsgId }),
    edit: async (msgId, text) => void (await rpc.sendEditRequest(id, msgId, text)),
    deleteForAll: async (msgId) => void (await rpc.deleteMessagesForAll(id, [msgId])),
    react: async (msgId, emoji) => void (await rpc.sendReaction(id, msgId, emoji ? [emoji] : [])),
    markSeen: async (msgIds) => void (await rpc.markseenMsgs(id, msgIds)),
    acceptChat: async (chatId) => void (await rpc.acceptChat(id, chatId)),
    chat: (chatId) => rpc.getBasicChatInfo(id, chatId),
    getMessage: (msgId) => rpc.getMessage(id, msgId),
    getMessages,
    getReactions: (msgId) => rpc.getMessageReactions(id, msgId),
    messageState: async (msgId) => (await rpc.getMessage(id, msgId)).state,
    waitForIncoming: (predicate, timeoutMs = WAIT_MS) =>
      waitFor(
        'an incoming message that matches',
        async () => {
          for (const chatId of await allChats()) {
            const hit = (await getMessages(chatId)).find((m) => m.fromId !== C.DC_CONTACT_ID_SELF && !m.isInfo && predicate(m));
            if (hit) return hit;
          }
          return null;
        },
        timeoutMs,
      ),
    secureJoinQr: () => rpc.getChatSecurejoinQrCode(id, null),
    secureJoin: async (qr, timeoutMs = WAIT_MS) => {
      const chatId = await rpc.secureJoin(id, qr);
      await waitFor('the Secure-Join handshake (joiner progress 1000)', async () => recent.some((e) => e.kind === 'SecurejoinJoinerProgress' && e.progress === 1000), timeoutMs);
      return chatId;
    },
    waitFor,
    maybeNetwork: async () => void (await rpc.maybeNetwork()),
    log,
    stop,
  };
}
