// Ephemeral signals (signals/1): typing indicators and read receipts, and the per-user setting
// that turns sending receipts off. Signals are never stored as messages and never replayed on a
// stream resume: they go out on the bus (→ rich-mode sockets of the other local participants) and
// to the peers that advertise signals/1 (→ their POST /signals, see ./federation.ts).
//
// * Typing: rate-limited per user and conversation; each event carries `expiresAt` (now + 5 s):
//   clients re-send while typing, and the indicator is gone by itself when they stop.
// * Receipts: per participant and conversation, the last message read, by (sender, id) since seq
//   numbers are local to a provider (table `receipts`). Our users' receipts are always recorded;
//   with sendReadReceipts off they are kept private (`shared` = 0) and told to nobody.
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import { domainOf } from '../protocol/address.js';
import { conversationId } from '../protocol/conversation.js';
import { TYPING_MIN_INTERVAL_MS, TYPING_TTL_MS, type SignalBody, type TypingState } from './wire.js';

/** What the signals capability needs from federation (implemented by src/federation/service.ts). */
export interface SignalsOutbound {
  /** Best effort: sends `signal` to `domain` if it advertises signals/1; never throws. */
  sendSignal(domain: string, signal: SignalBody): void;
}

export interface UserSettings {
  sendReadReceipts: boolean;
}

export interface ReceiptView {
  address: string;
  messageId: string;
  messageSender: string;
  /** Our seq of that message; null when it has not reached us (yet). */
  seq: number | null;
  readAt: string;
}

/** At most this many typing state changes per user and conversation per second. */
const MAX_TYPING_PER_SECOND = 3;
const TYPING_MEMORY = 100_000;

const iso = (ms: number) => new Date(ms).toISOString();

export class Signals {
  /** Per user and conversation: the last typing signal let through, and a 1 s window counter. */
  private readonly typingSeen = new Map<string, { state: TypingState; at: number; windowStart: number; count: number }>();

  constructor(
    private readonly o: {
      db: Db;
      domain: string;
      clock: Clock;
      bus: EventBus;
      logger: Logger;
      skewMs: number;
      /** Federation, once it exists (null: signals stay local). */
      outbound: () => Partial<SignalsOutbound> | null;
    },
  ) {}

  private isLocal(address: string): boolean {
    return domainOf(address) === this.o.domain;
  }

  /** The participants of a conversation `address` is a member of; null otherwise. */
  private async participantsFor(address: string, convId: string): Promise<string[] | null> {
    const row = await this.o.db
      .selectFrom('conversations')
      .innerJoin('conversation_members', 'conversation_members.conversation_id', 'conversations.id')
      .select('conversations.participants')
      .where('conversations.id', '=', convId)
      .where('conversation_members.address', '=', address)
      .executeTakeFirst();
    return row ? (JSON.parse(row.participants) as string[]) : null;
  }

  private async conversationExists(convId: string): Promise<boolean> {
    return !!(await this.o.db.selectFrom('conversations').select('id').where('id', '=', convId).executeTakeFirst());
  }

  /** Sends `signal` to every other provider with a participant (those without signals/1 get nothing). */
  private toPeers(participants: string[], signal: SignalBody): void {
    const out = this.o.outbound();
    if (!out?.sendSignal) return;
    const domains = new Set(participants.filter((p) => !this.isLocal(p)).map(domainOf));
    for (const d of domains) {
      try {
        out.sendSignal(d, signal);
      } catch (err) {
        this.o.logger.warn({ err, destination: d }, 'could not send a signal');
      }
    }
  }

  // --- typing ----------------------------------------------------------------------------------

  /** Would this typing signal pass the rate limit? Records it if so. */
  private allowTyping(key: string, state: TypingState, now: number): boolean {
    const seen = this.typingSeen.get(key);
    if (!seen) {
      if (this.typingSeen.size >= TYPING_MEMORY) {
        for (const [k, v] of this.typingSeen) if (now - v.at >= TYPING_TTL_MS) this.typingSeen.delete(k);
        for (const k of this.typingSeen.keys()) {
          if (this.typingSeen.size < TYPING_MEMORY) break;
          this.typingSeen.delete(k);
        }
      }
      this.typingSeen.set(key, { state, at: now, windowStart: now, count: 1 });
      return true;
    }
    if (now - seen.windowStart >= TYPING_MIN_INTERVAL_MS) {
      seen.windowStart = now;
      seen.count = 0;
    }
    // The same state again within a second adds nothing; a change (typing → stopped) goes
    // through at once, but flapping is capped.
    if (seen.state === state && now - seen.at < TYPING_MIN_INTERVAL_MS) return false;
    if (seen.count >= MAX_TYPING_PER_SECOND) return false;
    seen.count++;
    seen.state = state;
    seen.at = now;
    return true;
  }

  /**
   * Our user is typing (or stopped) in a conversation. Null: not a member. False: rate-limited
   * (a no-op). True: announced to the other participants.
   */
  async typing(address: string, convId: string, state: TypingState): Promise<boolean | null> {
    const participants = await this.participantsFor(address, convId);
    if (!participants) return null;
    const now = this.o.clock.now();
    if (!this.allowTyping(`${address}\n${convId}`, state, now)) return false;
    this.o.bus.publish({
      type: 'typing',
      conversationId: convId,
      from: address,
      state,
      expiresAt: iso(state === 'typing' ? now + TYPING_TTL_MS : now),
      recipients: participants.filter((p) => p !== address && this.isLocal(p)),
    });
    this.toPeers(participants, { type: 'typing', from: address, to: participants, state, sentAt: iso(now) });
    return true;
  }

  /** A typing signal from a peer (already authenticated). False: we do not know the conversation. */
  async remoteTyping(s: Extract<SignalBody, { type: 'typing' }>, sentAtMs: number): Promise<boolean> {
    const convId = conversationId(s.to);
    if (!(await this.conversationExists(convId))) return false;
    const now = this.o.clock.now();
    // Long stale (beyond the indicator's life plus clock skew): nothing to show any more.
    if (s.state === 'typing' && now - sentAtMs > TYPING_TTL_MS + this.o.skewMs) return true;
    this.o.bus.publish({
      type: 'typing',
      conversationId: convId,
      from: s.from,
      state: s.state,
      expiresAt: iso(s.state === 'typing' ? now + TYPING_TTL_MS : now),
      recipients: s.to.filter((p) => p !== s.from && this.isLocal(p)),
    });
    return true;
  }

  // --- receipts --------------------------------------------------------------------------------

  /**
   * Our user's read marker moved to `lastReadSeq` (POST /conversations/:id/read): records the
   * receipt (the last message at or before it) and, unless the user turned receipts off, tells
   * the other participants. Never throws: the read itself has already succeeded.
   */
  async read(address: string, convId: string, lastReadSeq: number): Promise<void> {
    try {
      await this.recordRead(address, convId, lastReadSeq);
    } catch (err) {
      this.o.logger.error({ err, conversationId: convId }, 'could not record a read receipt');
    }
  }

  private async recordRead(address: string, convId: string, lastReadSeq: number): Promise<void> {
    if (lastReadSeq <= 0) return;
    const participants = await this.participantsFor(address, convId);
    if (!participants) return;
    const m = await this.o.db
      .selectFrom('messages')
      .select(['seq', 'id', 'sender'])
      .where('conversation_id', '=', convId)
      .where('seq', '<=', lastReadSeq)
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!m) return;
    const seq = Number(m.seq);
    const share = (await this.settingsFor(address)).sendReadReceipts;
    const now = this.o.clock.now();
    const shared = share ? 1 : 0;
    // Forward only; the same position again changes nothing unless it becomes shared now.
    const res = await this.o.db
      .insertInto('receipts')
      .values({ conversation_id: convId, address, message_sender: m.sender, message_id: m.id, message_seq: seq, read_at: now, shared })
      .onConflict((oc) =>
        oc
          .columns(['conversation_id', 'address'])
          .doUpdateSet({ message_sender: m.sender, message_id: m.id, message_seq: seq, read_at: now, shared })
          .where((eb) =>
            eb.or([
              eb('receipts.message_seq', 'is', null),
              eb('receipts.message_seq', '<', seq),
              eb.and([eb('receipts.message_seq', '=', seq), eb('receipts.shared', '<', shared)]),
            ]),
          ),
      )
      .executeTakeFirst();
    if (Number(res.numInsertedOrUpdatedRows ?? 0) === 0 || !share) return;
    this.o.bus.publish({
      type: 'receipt',
      conversationId: convId,
      from: address,
      messageId: m.id,
      messageSender: m.sender,
      seq,
      readAt: iso(now),
      recipients: participants.filter((p) => p !== address && this.isLocal(p)),
    });
    this.toPeers(participants, { type: 'receipt', from: address, to: participants, messageId: m.id, messageSender: m.sender, sentAt: iso(now) });
  }

  /** A receipt from a peer (already authenticated). False: we do not know the conversation. */
  async remoteReceipt(s: Extract<SignalBody, { type: 'receipt' }>, sentAtMs: number): Promise<boolean> {
    const convId = conversationId(s.to);
    if (!(await this.conversationExists(convId))) return false;
    const now = this.o.clock.now();
    const readAt = Math.min(sentAtMs, now);
    const m = await this.o.db
      .selectFrom('messages')
      .select('seq')
      .where('sender', '=', s.messageSender)
      .where('id', '=', s.messageId)
      .where('conversation_id', '=', convId)
      .executeTakeFirst();
    const seq = m ? Number(m.seq) : null;
    const values = { message_sender: s.messageSender, message_id: s.messageId, message_seq: seq, read_at: readAt, shared: 1 };
    // Out-of-order or repeated receipts never move a participant's position back.
    const res = await this.o.db
      .insertInto('receipts')
      .values({ conversation_id: convId, address: s.from, ...values })
      .onConflict((oc) =>
        oc
          .columns(['conversation_id', 'address'])
          .doUpdateSet(values)
          .where((eb) => {
            const newer = eb('receipts.read_at', '<=', readAt);
            if (seq === null) return eb.and([newer, eb.or([eb('receipts.message_id', '!=', s.messageId), eb('receipts.message_sender', '!=', s.messageSender)])]);
            return eb.and([newer, eb.or([eb('receipts.message_seq', 'is', null), eb('receipts.message_seq', '<', seq)])]);
          }),
      )
      .executeTakeFirst();
    if (Number(res.numInsertedOrUpdatedRows ?? 0) === 0) return true;
    this.o.bus.publish({
      type: 'receipt',
      conversationId: convId,
      from: s.from,
      messageId: s.messageId,
      messageSender: s.messageSender,
      seq,
      readAt: iso(readAt),
      recipients: s.to.filter((p) => p !== s.from && this.isLocal(p)),
    });
    return true;
  }

  /** The other participants' shared receipts in a conversation; null when `address` is not a member. */
  async receipts(address: string, convId: string): Promise<ReceiptView[] | null> {
    if (!(await this.participantsFor(address, convId))) return null;
    const rows = await this.o.db
      .selectFrom('receipts as r')
      .leftJoin('messages as m', (join) =>
        join.onRef('m.sender', '=', 'r.message_sender').onRef('m.id', '=', 'r.message_id').onRef('m.conversation_id', '=', 'r.conversation_id'),
      )
      .select(['r.address', 'r.message_id', 'r.message_sender', 'r.read_at', 'm.seq'])
      .where('r.conversation_id', '=', convId)
      .where('r.address', '!=', address)
      .where('r.shared', '=', 1)
      .orderBy('r.address')
      .execute();
    return rows.map((r) => ({
      address: r.address,
      messageId: r.message_id,
      messageSender: r.message_sender,
      seq: r.seq === null || r.seq === undefined ? null : Number(r.seq),
      readAt: iso(Number(r.read_at)),
    }));
  }

  /**
   * Per conversation, the other participants' last read seq (shared receipts of messages we
   * have), for conversation summaries: {conversationId → [{address, seq}]}.
   */
  async receiptSeqs(address: string, convIds: string[]): Promise<Map<string, Array<{ address: string; seq: number }>>> {
    const out = new Map<string, Array<{ address: string; seq: number }>>();
    for (let i = 0; i < convIds.length; i += 500) {
      const rows = await this.o.db
        .selectFrom('receipts as r')
        .innerJoin('messages as m', (join) =>
          join.onRef('m.sender', '=', 'r.message_sender').onRef('m.id', '=', 'r.message_id').onRef('m.conversation_id', '=', 'r.conversation_id'),
        )
        .select(['r.conversation_id', 'r.address', 'm.seq'])
        .where('r.conversation_id', 'in', convIds.slice(i, i + 500))
        .where('r.address', '!=', address)
        .where('r.shared', '=', 1)
        .orderBy('r.address')
        .execute();
      for (const r of rows) {
        let list = out.get(r.conversation_id);
        if (!list) out.set(r.conversation_id, (list = []));
        list.push({ address: r.address, seq: Number(r.seq) });
      }
    }
    return out;
  }

  // --- settings --------------------------------------------------------------------------------

  async settings(userId: number): Promise<UserSettings> {
    const row = await this.o.db.selectFrom('user_settings').select('send_read_receipts').where('user_id', '=', userId).executeTakeFirst();
    return { sendReadReceipts: row ? Number(row.send_read_receipts) !== 0 : true };
  }

  /** The settings of one of our users, by address (defaults for unknown addresses). */
  private async settingsFor(address: string): Promise<UserSettings> {
    const username = address.slice(0, address.lastIndexOf('@'));
    const row = await this.o.db
      .selectFrom('users')
      .leftJoin('user_settings', 'user_settings.user_id', 'users.id')
      .select('user_settings.send_read_receipts')
      .where('users.username', '=', username)
      .where('users.removed_at', 'is', null)
      .executeTakeFirst();
    const v = row?.send_read_receipts;
    return { sendReadReceipts: v === null || v === undefined ? true : Number(v) !== 0 };
  }

  async updateSettings(user: { userId: number; address: string }, patch: Partial<UserSettings>): Promise<UserSettings> {
    if (patch.sendReadReceipts !== undefined) {
      const v = patch.sendReadReceipts ? 1 : 0;
      await this.o.db
        .insertInto('user_settings')
        .values({ user_id: user.userId, send_read_receipts: v })
        .onConflict((oc) => oc.column('user_id').doUpdateSet({ send_read_receipts: v }))
        .execute();
    }
    const settings = await this.settings(user.userId);
    this.o.bus.publish({ type: 'settings', address: user.address, sendReadReceipts: settings.sendReadReceipts });
    return settings;
  }
}
