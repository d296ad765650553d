// Messages and conversations: accept a message (from our user or from a peer), persist it with
// its conversation and — for participants elsewhere — its outbox rows in one transaction, then
// announce it on the bus. History, conversation lists and read markers.
import type { Transaction } from 'kysely';
import type { Db } from '../storage/db.js';
import type { Database } from '../storage/schema.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import { domainOf } from '../protocol/address.js';
import { canonicalParticipants, conversationId } from '../protocol/conversation.js';
import type { IntertalkMessage } from '../protocol/message.js';

export interface StoredMessage extends IntertalkMessage {
  seq: number;
  conversationId: string;
  insecure?: true;
}

export interface AcceptResult {
  message: StoredMessage;
  /** The (sender, id) pair was already stored: this is an idempotent retry. */
  replayed: boolean;
  /** The message as JSON, exactly as clients receive it. */
  json: string;
  /** Remote domains an outbox row was written for. */
  destinations: string[];
}

interface PendingWrite {
  convId: string;
  participants: string[];
  m: IntertalkMessage;
  origin: { kind: 'local' } | { kind: 'remote'; domain: string; insecure: boolean };
  insecure: boolean;
  body: string;
  destinations: string[];
  now: number;
}

export class MessageConflictError extends Error {
  constructor(readonly id: string) {
    super(`id: "${id}" was already used by this sender for a different message`);
  }
}

export interface ConversationSummary {
  id: string;
  participants: string[];
  lastMessage: StoredMessage | null;
  lastSeq: number;
  unread: number;
  lastReadSeq: number;
}

export interface HistoryPage {
  messages: StoredMessage[];
  /** More messages exist beyond this page in the direction asked. */
  hasMore: boolean;
}

/** The stored body lacks seq/conversationId (known only after insert); splice them in once. */
function servedJson(seq: number, conversationId: string, body: string): string {
  return `{"seq":${seq},"conversationId":"${conversationId}",${body.slice(1)}`;
}

function wireBody(m: IntertalkMessage, insecure: boolean): string {
  const o: Record<string, unknown> = { id: m.id, from: m.from, to: m.to, sentAt: m.sentAt, message: m.message };
  if (m.messageFormatted !== undefined) {
    o.messageFormatted = m.messageFormatted;
    o.format = m.format;
  }
  if (insecure) o.insecure = true;
  return JSON.stringify(o);
}

export class Messaging {
  // Conversation ids known to exist: the hot path skips the existence check for them.
  private readonly knownConversations = new Set<string>();

  private rememberConversation(id: string): void {
    if (this.knownConversations.size >= 100_000) this.knownConversations.clear();
    this.knownConversations.add(id);
  }

  constructor(
    private readonly db: Db,
    private readonly domain: string,
    private readonly clock: Clock,
    private readonly bus: EventBus,
  ) {}

  newId(): string {
    return randomId();
  }

  isLocal(address: string): boolean {
    return domainOf(address) === this.domain;
  }

  /**
   * Stores a validated message. `origin` is 'local' for our users' messages (outbox rows are
   * written for every remote domain) or the sending peer's domain (no relaying: no outbox rows).
   */
  async accept(m: IntertalkMessage, origin: { kind: 'local' } | { kind: 'remote'; domain: string; insecure: boolean }): Promise<AcceptResult> {
    const participants = canonicalParticipants(m.to);
    const convId = conversationId(participants);
    const now = this.clock.now();
    const insecure = origin.kind === 'remote' && origin.insecure;
    const body = wireBody({ ...m, to: participants }, insecure);
    const destinations =
      origin.kind === 'local' ? [...new Set(participants.filter((p) => !this.isLocal(p)).map(domainOf))].sort() : [];

    const result = await this.enqueueWrite({ convId, participants, m, origin, insecure, body, destinations, now });
    this.rememberConversation(convId);

    if (result === null) {
      const existing = await this.db.selectFrom('messages').select(['seq', 'conversation_id', 'body']).where('sender', '=', m.from).where('id', '=', m.id).executeTakeFirstOrThrow();
      const prior = JSON.parse(existing.body) as IntertalkMessage;
      const same =
        existing.conversation_id === convId && prior.message === m.message && (prior.messageFormatted ?? null) === (m.messageFormatted ?? null) && (prior.format ?? null) === (m.format ?? null);
      if (!same) throw new MessageConflictError(m.id);
      const json = servedJson(Number(existing.seq), existing.conversation_id, existing.body);
      return { message: JSON.parse(json) as StoredMessage, replayed: true, json, destinations: [] };
    }

    const json = servedJson(result, convId, body);
    const localRecipients = participants.filter((p) => this.isLocal(p));
    this.bus.publish({ type: 'message', seq: result, conversationId: convId, recipients: localRecipients, json });
    const stored: StoredMessage = { seq: result, conversationId: convId, ...m, to: participants };
    if (insecure) stored.insecure = true;
    return { message: stored, replayed: false, json, destinations };
  }

  // --- group commit ---------------------------------------------------------------------------
  // Concurrent accepts share one transaction: a commit (an fsync-class cost) is paid once per
  // batch instead of once per message. Every caller still gets its answer only after COMMIT.
  private readonly writeQueue: Array<{ w: PendingWrite; resolve: (seq: number | null) => void; reject: (err: unknown) => void }> = [];
  private flushing = false;

  private enqueueWrite(w: PendingWrite): Promise<number | null> {
    return new Promise((resolve, reject) => {
      this.writeQueue.push({ w, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    while (this.writeQueue.length > 0) {
      const batch = this.writeQueue.splice(0, 512);
      try {
        const seqs = await this.db.transaction().execute(async (trx) => {
          const out: Array<number | null> = [];
          for (const item of batch) out.push(await this.write(trx, item.w));
          return out;
        });
        batch.forEach((item, i) => item.resolve(seqs[i]!));
      } catch {
        // One bad write must not sink its neighbours: retry each on its own.
        for (const item of batch) {
          try {
            item.resolve(await this.db.transaction().execute((trx) => this.write(trx, item.w)));
          } catch (err) {
            item.reject(err);
          }
        }
      }
    }
    this.flushing = false;
  }

  private async write(trx: Transaction<Database>, w: PendingWrite): Promise<number | null> {
    const { convId, participants, m, origin, insecure, body, destinations, now } = w;
    if (!this.knownConversations.has(convId)) {
      const exists = await trx.selectFrom('conversations').select('id').where('id', '=', convId).executeTakeFirst();
      if (!exists) {
        // A retried (sender, id) never creates anything: the answer comes from the first copy
        // (or is a conflict), and a new conversation must not be left behind empty.
        const dup = await trx.selectFrom('messages').select('seq').where('sender', '=', m.from).where('id', '=', m.id).executeTakeFirst();
        if (dup) return null;
        await trx.insertInto('conversations').values({ id: convId, participants: JSON.stringify(participants), created_at: now, last_seq: 0 }).onConflict((oc) => oc.column('id').doNothing()).execute();
        await trx
          .insertInto('conversation_members')
          .values(participants.map((p) => ({ conversation_id: convId, address: p, is_local: this.isLocal(p) ? 1 : 0 })))
          .onConflict((oc) => oc.columns(['conversation_id', 'address']).doNothing())
          .execute();
      }
    }
    const inserted = await trx
      .insertInto('messages')
      .values({
        id: m.id,
        sender: m.from,
        conversation_id: convId,
        sent_at: m.sentAt,
        received_at: now,
        body,
        origin: origin.kind === 'local' ? 'local' : origin.domain,
        insecure: insecure ? 1 : 0,
      })
      .onConflict((oc) => oc.columns(['sender', 'id']).doNothing())
      .returning('seq')
      .executeTakeFirst();
    if (!inserted) return null;
    const seq = Number(inserted.seq);
    await trx.updateTable('conversations').set({ last_seq: seq }).where('id', '=', convId).where('last_seq', '<', seq).execute();
    if (destinations.length > 0) {
      await trx
        .insertInto('outbox')
        .values(
          destinations.map((d) => ({
            message_seq: seq,
            destination: d,
            recipients: JSON.stringify(participants.filter((p) => domainOf(p) === d)),
            state: 'queued',
            attempts: 0,
            created_at: now,
            next_attempt_at: now,
            last_error: null,
            delivered_at: null,
            lease_owner: null,
            lease_until: null,
          })),
        )
        .execute();
    }
    return seq;
  }

  async isMember(address: string, convId: string): Promise<boolean> {
    const row = await this.db.selectFrom('conversation_members').select('address').where('conversation_id', '=', convId).where('address', '=', address).executeTakeFirst();
    return !!row;
  }

  async history(address: string, convId: string, q: { before?: number; after?: number; limit: number }): Promise<HistoryPage | null> {
    if (!(await this.isMember(address, convId))) return null;
    let query = this.db.selectFrom('messages').select(['seq', 'conversation_id', 'body']).where('conversation_id', '=', convId);
    // `after` pages forward (oldest first); otherwise the newest page before `before`.
    if (q.after !== undefined) {
      query = query.where('seq', '>', q.after);
      if (q.before !== undefined) query = query.where('seq', '<', q.before);
      const rows = await query.orderBy('seq', 'asc').limit(q.limit + 1).execute();
      const page = rows.slice(0, q.limit);
      return { messages: page.map((r) => JSON.parse(servedJson(Number(r.seq), r.conversation_id, r.body))), hasMore: rows.length > q.limit };
    }
    if (q.before !== undefined) query = query.where('seq', '<', q.before);
    const rows = await query.orderBy('seq', 'desc').limit(q.limit + 1).execute();
    const page = rows.slice(0, q.limit).reverse();
    return { messages: page.map((r) => JSON.parse(servedJson(Number(r.seq), r.conversation_id, r.body))), hasMore: rows.length > q.limit };
  }

  /** Messages in any of the address's conversations after `afterSeq`, oldest first (stream resume). */
  async since(address: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; json: string }>> {
    const rows = await this.db
      .selectFrom('messages')
      .innerJoin('conversation_members', 'conversation_members.conversation_id', 'messages.conversation_id')
      .select(['messages.seq', 'messages.conversation_id', 'messages.body'])
      .where('conversation_members.address', '=', address)
      .where('messages.seq', '>', afterSeq)
      .orderBy('messages.seq', 'asc')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ seq: Number(r.seq), json: servedJson(Number(r.seq), r.conversation_id, r.body) }));
  }

  async latestSeq(address: string): Promise<number> {
    const row = await this.db
      .selectFrom('conversation_members')
      .innerJoin('conversations', 'conversations.id', 'conversation_members.conversation_id')
      .select((eb) => eb.fn.max('conversations.last_seq').as('seq'))
      .where('conversation_members.address', '=', address)
      .executeTakeFirst();
    return Number(row?.seq ?? 0);
  }

  async conversations(address: string, q: { before?: number; limit: number }): Promise<ConversationSummary[]> {
    let query = this.db
      .selectFrom('conversation_members as m')
      .innerJoin('conversations as c', 'c.id', 'm.conversation_id')
      .leftJoin('messages as lm', 'lm.seq', 'c.last_seq')
      .leftJoin('read_markers as r', (join) => join.onRef('r.conversation_id', '=', 'c.id').on('r.address', '=', address))
      .select((eb) => [
        'c.id',
        'c.participants',
        'c.last_seq',
        'lm.body',
        'r.last_read_seq',
        eb
          .selectFrom('messages as x')
          .select(eb.fn.countAll<number>().as('n'))
          .whereRef('x.conversation_id', '=', 'c.id')
          .where('x.seq', '>', eb.fn.coalesce('r.last_read_seq', eb.lit(0)))
          .where('x.sender', '!=', address)
          .as('unread'),
      ])
      .where('m.address', '=', address);
    if (q.before !== undefined) query = query.where('c.last_seq', '<', q.before);
    const rows = await query.orderBy('c.last_seq', 'desc').limit(q.limit).execute();
    return rows.map((r) => ({
      id: r.id,
      participants: JSON.parse(r.participants) as string[],
      lastSeq: Number(r.last_seq),
      lastMessage: r.body ? (JSON.parse(servedJson(Number(r.last_seq), r.id, r.body)) as StoredMessage) : null,
      unread: Number(r.unread ?? 0),
      lastReadSeq: Number(r.last_read_seq ?? 0),
    }));
  }

  async conversation(address: string, convId: string): Promise<ConversationSummary | null> {
    if (!(await this.isMember(address, convId))) return null;
    const all = await this.conversationsById(address, convId);
    return all;
  }

  private async conversationsById(address: string, convId: string): Promise<ConversationSummary | null> {
    const c = await this.db.selectFrom('conversations').selectAll().where('id', '=', convId).executeTakeFirst();
    if (!c) return null;
    const last = c.last_seq ? await this.db.selectFrom('messages').select('body').where('seq', '=', c.last_seq).executeTakeFirst() : undefined;
    const marker = await this.db.selectFrom('read_markers').select('last_read_seq').where('address', '=', address).where('conversation_id', '=', convId).executeTakeFirst();
    const lastRead = Number(marker?.last_read_seq ?? 0);
    const unread = await this.db
      .selectFrom('messages')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('conversation_id', '=', convId)
      .where('seq', '>', lastRead)
      .where('sender', '!=', address)
      .executeTakeFirst();
    return {
      id: c.id,
      participants: JSON.parse(c.participants),
      lastSeq: Number(c.last_seq),
      lastMessage: last ? JSON.parse(servedJson(Number(c.last_seq), c.id, last.body)) : null,
      unread: Number(unread?.n ?? 0),
      lastReadSeq: lastRead,
    };
  }

  /** Moves the read marker forward (never back) to `seq`, or to the newest message. */
  async markRead(address: string, convId: string, seq?: number): Promise<number | null> {
    const c = await this.db
      .selectFrom('conversations')
      .innerJoin('conversation_members', 'conversation_members.conversation_id', 'conversations.id')
      .select('conversations.last_seq')
      .where('conversations.id', '=', convId)
      .where('conversation_members.address', '=', address)
      .executeTakeFirst();
    if (!c) return null;
    const target = Math.min(seq ?? Number(c.last_seq), Number(c.last_seq));
    const now = this.clock.now();
    await this.db
      .insertInto('read_markers')
      .values({ address, conversation_id: convId, last_read_seq: target, updated_at: now })
      .onConflict((oc) =>
        oc
          .columns(['address', 'conversation_id'])
          .doUpdateSet({ last_read_seq: target, updated_at: now })
          .where('read_markers.last_read_seq', '<', target),
      )
      .execute();
    const row = await this.db.selectFrom('read_markers').select('last_read_seq').where('address', '=', address).where('conversation_id', '=', convId).executeTakeFirstOrThrow();
    const lastReadSeq = Number(row.last_read_seq);
    this.bus.publish({ type: 'read', address, conversationId: convId, lastReadSeq });
    return lastReadSeq;
  }
}
