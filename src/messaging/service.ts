// Messages and conversations: accept a message (from our user or from a peer), persist it with
// its conversation and — for participants elsewhere — its outbox rows in one transaction, then
// announce it on the bus. History, conversation lists and read markers.
import { createHash } from 'node:crypto';
import { CompiledQuery, sql, type Insertable, type Transaction } from 'kysely';
import { storableText, type Db } from '../storage/db.js';
import type { Database } from '../storage/schema.js';
import type { Clock } from '../util/clock.js';
import type { BusEvent, EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import { domainOf } from '../protocol/address.js';
import { canonicalParticipants, conversationId } from '../protocol/conversation.js';
import type { IntertalkMessage } from '../protocol/message.js';
import { plainFallback } from '../protocol/rich.js';

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
  /** The display name set by a participant (rich/1 property message), if any. */
  title: string | null;
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
  if (m.rich !== undefined) o.rich = m.rich;
  if (insecure) o.insecure = true;
  return JSON.stringify(o);
}

/**
 * Is a retried (sender, id) the same message? Rich messages compare what the sender wrote, not
 * the fallback (its quote may have changed through an edit since); a deleted original matches.
 */
function sameContent(prior: IntertalkMessage & { deleted?: true }, m: IntertalkMessage): boolean {
  if (prior.deleted) return true;
  if (prior.rich || m.rich) {
    const a = prior.rich;
    const b = m.rich;
    if (!a || !b) return false;
    return (
      a.type === b.type &&
      (a.text ?? null) === (b.text ?? null) &&
      a.reference?.id === b.reference?.id &&
      a.reference?.sender === b.reference?.sender &&
      a.reaction?.emoji === b.reaction?.emoji &&
      !!a.reaction?.remove === !!b.reaction?.remove &&
      a.property?.value === b.property?.value &&
      JSON.stringify((a.attachments ?? []).map((x) => x.id)) === JSON.stringify((b.attachments ?? []).map((x) => x.id))
    );
  }
  return prior.message === m.message && (prior.messageFormatted ?? null) === (m.messageFormatted ?? null) && (prior.format ?? null) === (m.format ?? null);
}

/**
 * PostgreSQL advisory lock taken by every transaction that stores messages when several
 * instances share one database (see Messaging's `serializeCommits`). Any constant works, as long
 * as every instance uses the same one.
 */
const MESSAGE_COMMIT_LOCK = '7460736573657101';

type MessageRow = Required<Omit<Insertable<Database['messages']>, 'seq'>>;
/** The columns of the message INSERT, in the order its compiled SQL takes them. */
const MESSAGE_COLUMNS = ['id', 'sender', 'conversation_id', 'sent_at', 'received_at', 'body', 'origin', 'insecure', 'kind', 'ref_sender', 'ref_id'] as const satisfies ReadonlyArray<keyof MessageRow>;

/** A rule of the rich extension was broken (e.g. editing someone else's message). */
export class RichRuleError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
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
    /** Called after a delete committed: storage scrubs lingering copies. */
    private readonly onContentRemoved: () => void = () => undefined,
    /**
     * PostgreSQL shared by several instances: message-storing transactions take one advisory lock
     * first, so a seq is only drawn while no other such transaction is open and **seq order is
     * commit order** across instances. Live delivery (src/cluster/seq-order.ts) and resume
     * (`since` cursors) rely on it: once seq N is visible, no seq < N can appear later. Without it,
     * instance A could draw 100, instance B 101 and commit first; a client would get 101, move its
     * cursor past 100 and never see 100. (One process commits its batches one at a time, and
     * SQLite has a single writer, so neither needs it.) The lock is held for one group-commit
     * batch, so writes from all instances are serialised batch by batch, not message by message.
     */
    private readonly serializeCommits = false,
  ) {}

  /** A transaction that stores messages (under the commit lock when commits are serialised). */
  private storeTx<T>(fn: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
    return this.db.transaction().execute(async (trx) => {
      if (this.serializeCommits) await sql`select pg_advisory_xact_lock(${sql.raw(MESSAGE_COMMIT_LOCK)})`.execute(trx);
      return fn(trx);
    });
  }

  newId(): string {
    return randomId();
  }

  isLocal(address: string): boolean {
    return domainOf(address) === this.domain;
  }

  private aliasOwner: ((address: string) => string | null) | null = null;

  /**
   * Addresses at personal domains delegated to us (src/indieweb/): `owner` names the local
   * account an address belongs to, or null. Such an address is a participant like any other on
   * the wire; here it is one of ours: no outbox row, and its owner is a member of the conversation.
   */
  useAliases(owner: (address: string) => string | null): void {
    this.aliasOwner = owner;
  }

  /** The local account an address reaches: itself at our domain, a personal domain's owner, or null. */
  ownerOf(address: string): string | null {
    if (this.isLocal(address)) return address;
    return this.aliasOwner?.(address) ?? null;
  }

  /** The local accounts among `participants` (owners of personal-domain addresses included). */
  private localMembers(participants: string[]): string[] {
    const out = new Set<string>();
    for (const p of participants) {
      const o = this.ownerOf(p);
      if (o !== null) out.add(o);
    }
    return [...out];
  }

  /**
   * Stores a validated message. `origin` is 'local' for our users' messages (outbox rows are
   * written for every remote domain) or the sending peer's domain (no relaying: no outbox rows).
   */
  async accept(m: IntertalkMessage, origin: { kind: 'local' } | { kind: 'remote'; domain: string; insecure: boolean }): Promise<AcceptResult> {
    // A delete never carries the content it deletes.
    if (m.rich?.type === 'delete' && m.rich.reference && m.rich.reference.text !== null) {
      m = { ...m, rich: { ...m.rich, reference: { ...m.rich.reference, text: null } } };
    }
    const participants = canonicalParticipants(m.to);
    const convId = conversationId(participants);
    // A peer's quote of a message we hold is replaced by our own copy: quotes cannot be forged.
    if (origin.kind === 'remote' && m.rich?.reference && m.rich.type !== 'delete') {
      const ours = await this.referenceFor(convId, m.rich.reference.sender, m.rich.reference.id);
      if (ours && ours.text !== m.rich.reference.text) {
        const rich = { ...m.rich, reference: { ...m.rich.reference, text: ours.text } };
        m = { ...m, rich, message: plainFallback(rich) };
      }
    }
    const now = this.clock.now();
    const insecure = origin.kind === 'remote' && origin.insecure;
    const body = wireBody({ ...m, to: participants }, insecure);
    const destinations =
      origin.kind === 'local' ? [...new Set(participants.filter((p) => this.ownerOf(p) === null).map(domainOf))].sort() : [];

    const result = await this.enqueueWrite({ convId, participants, m, origin, insecure, body, destinations, now });

    if (result === null) {
      // Not remembered here: a retried or conflicting (sender, id) creates no conversation
      // (write()), and a conversation marked known but absent would fail every later message.
      const existing = await this.db.selectFrom('messages').select(['seq', 'conversation_id', 'body']).where('sender', '=', m.from).where('id', '=', m.id).executeTakeFirstOrThrow();
      const prior = JSON.parse(existing.body) as IntertalkMessage & { deleted?: true };
      if (existing.conversation_id !== convId || !sameContent(prior, m)) throw new MessageConflictError(m.id);
      const json = servedJson(Number(existing.seq), existing.conversation_id, existing.body);
      return { message: JSON.parse(json) as StoredMessage, replayed: true, json, destinations: [] };
    }

    this.rememberConversation(convId);
    if (m.rich?.type === 'delete') this.onContentRemoved();
    const json = servedJson(result, convId, body);
    const localRecipients = this.localMembers(participants);
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
        const seqs = await this.storeTx(async (trx) => {
          const out: Array<number | null> = [];
          let run: PendingWrite[] = [];
          const endRun = async () => {
            if (run.length > 0) out.push(...(await this.writeRun(trx, run)));
            run = [];
          };
          for (const item of batch) {
            if (this.isPlainWrite(item.w)) {
              run.push(item.w);
              continue;
            }
            await endRun();
            out.push(await this.write(trx, item.w));
          }
          await endRun();
          const last = new Map<string, number>();
          batch.forEach((item, i) => {
            const seq = out[i];
            if (seq !== null && seq !== undefined) last.set(item.w.convId, Math.max(seq, last.get(item.w.convId) ?? 0));
          });
          await this.bumpLastSeq(trx, last);
          return out;
        });
        batch.forEach((item, i) => item.resolve(seqs[i]!));
      } catch {
        // One bad write must not sink its neighbours: retry each on its own. A peer's messages
        // keep their order, though: after one of them fails, the later ones from that peer fail
        // too (the peer retries them all, in order, behind the failed one).
        const failedPeers = new Set<string>();
        for (const item of batch) {
          const peer = item.w.origin.kind === 'remote' ? item.w.origin.domain : null;
          if (peer !== null && failedPeers.has(peer)) {
            item.reject(new Error(`an earlier message from ${peer} in this commit failed`));
            continue;
          }
          try {
            item.resolve(
              await this.storeTx(async (trx) => {
                const seq = await this.write(trx, item.w);
                if (seq !== null) await this.bumpLastSeq(trx, new Map([[item.w.convId, seq]]));
                return seq;
              }),
            );
          } catch (err) {
            // A refusal (a broken rich/1 rule: 4xx, nothing stored) does not hold back what follows.
            if (peer !== null && !(err instanceof RichRuleError) && !(err instanceof MessageConflictError)) failedPeers.add(peer);
            item.reject(err);
          }
        }
      }
    }
    this.flushing = false;
  }

  // The message INSERT is the one statement every message runs. Kysely builds and compiles a
  // query tree per call (about 8% of the send path in a profile); its SQL text never changes, so
  // it is compiled once and run with fresh parameters, in MESSAGE_COLUMNS order.
  private insertMessageSql: string | null = null;

  private async insertMessage(trx: Transaction<Database>, row: MessageRow): Promise<{ seq: number } | undefined> {
    if (this.insertMessageSql === null) {
      const compiled = trx.insertInto('messages').values(row).onConflict((oc) => oc.columns(['sender', 'id']).doNothing()).returning('seq').compile();
      // Kysely lists the columns in the order of the object's keys: check it is ours.
      if (compiled.parameters.length !== MESSAGE_COLUMNS.length || MESSAGE_COLUMNS.some((c, i) => compiled.parameters[i] !== row[c])) {
        throw new Error('the compiled message INSERT does not take its parameters in MESSAGE_COLUMNS order');
      }
      this.insertMessageSql = compiled.sql;
    }
    const res = await trx.executeQuery<{ seq: number }>(CompiledQuery.raw(this.insertMessageSql, MESSAGE_COLUMNS.map((c) => row[c])));
    return res.rows[0];
  }

  private messageRow(w: PendingWrite): MessageRow {
    const { m, convId, origin, insecure, body, now } = w;
    return {
      id: m.id,
      sender: m.from,
      conversation_id: convId,
      sent_at: m.sentAt,
      received_at: now,
      body,
      origin: origin.kind === 'local' ? 'local' : origin.domain,
      insecure: insecure ? 1 : 0,
      kind: m.rich?.type ?? 'content',
      ref_sender: m.rich?.reference?.sender ?? null,
      ref_id: m.rich?.reference?.id ?? null,
    };
  }

  /** One queued delivery per remote destination of a stored message. */
  private outboxRows(w: PendingWrite, seq: number) {
    return w.destinations.map((d) => ({
      message_seq: seq,
      destination: d,
      recipients: JSON.stringify(w.participants.filter((p) => domainOf(p) === d)),
      state: 'queued',
      attempts: 0,
      created_at: w.now,
      next_attempt_at: w.now,
      last_error: null,
      delivered_at: null,
      lease_owner: null,
      lease_until: null,
    }));
  }

  /**
   * A plain message (no rich action, no attachments) to a conversation known to exist needs
   * nothing but its row and its outbox rows: consecutive ones are written together (writeRun).
   */
  private isPlainWrite(w: PendingWrite): boolean {
    const r = w.m.rich;
    return this.knownConversations.has(w.convId) && (r === undefined || (r.type === 'content' && !r.attachments?.length));
  }

  /**
   * Stores consecutive plain messages with one multi-row INSERT (and one for their outbox rows):
   * on PostgreSQL a round trip per run instead of two per message. Seqs follow the given order.
   * A message whose (sender, id) is already stored, or repeated within the run, gets null.
   */
  private async writeRun(trx: Transaction<Database>, run: PendingWrite[]): Promise<Array<number | null>> {
    if (run.length === 1) return [await this.write(trx, run[0]!)];
    const inserted = await trx
      .insertInto('messages')
      .values(run.map((w) => this.messageRow(w)))
      .onConflict((oc) => oc.columns(['sender', 'id']).doNothing())
      .returning(['seq', 'sender', 'id'])
      .execute();
    const byKey = new Map(inserted.map((r) => [`${r.sender}\n${r.id}`, Number(r.seq)]));
    const seqs = run.map((w) => {
      const key = `${w.m.from}\n${w.m.id}`;
      const seq = byKey.get(key);
      byKey.delete(key); // a second copy within the run is the duplicate
      return seq ?? null;
    });
    const outbox = run.flatMap((w, i) => (seqs[i] === null || w.destinations.length === 0 ? [] : this.outboxRows(w, seqs[i]!)));
    if (outbox.length > 0) await trx.insertInto('outbox').values(outbox).execute();
    return seqs;
  }

  /** Each conversation's last_seq, once per batch (seqs grow within a batch: the last one wins). */
  private async bumpLastSeq(trx: Transaction<Database>, last: Map<string, number>): Promise<void> {
    for (const [convId, seq] of last) {
      await trx.updateTable('conversations').set({ last_seq: seq }).where('id', '=', convId).where('last_seq', '<', seq).execute();
    }
  }

  /** Stores one message inside a batch's transaction; the caller bumps last_seq (bumpLastSeq). */
  private async write(trx: Transaction<Database>, w: PendingWrite): Promise<number | null> {
    const { convId, participants, m, destinations, now } = w;
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
          .values([
            ...participants.map((p) => ({ conversation_id: convId, address: p, is_local: this.isLocal(p) ? 1 : 0 })),
            // The owner of a personal-domain participant sees the conversation as a member.
            ...this.localMembers(participants).filter((o) => !participants.includes(o)).map((o) => ({ conversation_id: convId, address: o, is_local: 1 })),
          ])
          .onConflict((oc) => oc.columns(['conversation_id', 'address']).doNothing())
          .execute();
      }
    }
    const inserted = await this.insertMessage(trx, this.messageRow(w));
    if (!inserted) return null;
    const seq = Number(inserted.seq);
    if (m.rich && m.rich.type !== 'content') await this.applyRich(trx, seq, convId, m);
    if (m.rich?.attachments?.length) {
      await trx
        .insertInto('attachment_refs')
        .values(m.rich.attachments.map((a) => ({ attachment_id: a.id, conversation_id: convId, message_seq: seq })))
        .onConflict((oc) => oc.columns(['attachment_id', 'conversation_id', 'message_seq']).doNothing())
        .execute();
    }
    if (destinations.length > 0) await trx.insertInto('outbox').values(this.outboxRows(w, seq)).execute();
    return seq;
  }

  // --- rich/1 effects (docs/protocol.md), inside the message's own transaction ----------------

  private async findMessage(trx: Transaction<Database>, sender: string, id: string) {
    return trx
      .selectFrom('messages')
      .select(['seq', 'id', 'sender', 'conversation_id', 'kind', 'ref_sender', 'ref_id', 'body'])
      .where('sender', '=', sender)
      .where('id', '=', id)
      .executeTakeFirst();
  }

  private async applyRich(trx: Transaction<Database>, seq: number, convId: string, m: IntertalkMessage): Promise<void> {
    const r = m.rich!;
    if (r.type === 'property') {
      const at = Date.parse(m.sentAt);
      // Hex, so the comparison means the same under any database collation.
      const key = createHash('sha256').update(`${m.from}\n${m.id}`).digest('hex');
      await trx
        .updateTable('conversations')
        .set({ title: r.property!.value || null, title_seq: seq, title_at: at, title_key: key })
        .where('id', '=', convId)
        .where((eb) => eb.or([eb('title_at', 'is', null), eb('title_at', '<', at), eb.and([eb('title_at', '=', at), eb('title_key', '<', key)])]))
        .execute();
      return;
    }
    const ref = r.reference!;
    const target = await this.findMessage(trx, ref.sender, ref.id);
    if (target && target.conversation_id !== convId) throw new RichRuleError(400, 'wrong_conversation', 'rich.reference: that message belongs to another conversation');
    if (target && (r.type === 'reply' || r.type === 'reaction')) {
      // Replies and reactions go to content, whose quote a later delete can scrub everywhere.
      if (target.kind !== 'content' && target.kind !== 'reply') throw new RichRuleError(400, r.type === 'reply' ? 'not_repliable' : 'not_reactable', `rich.reference: a ${target.kind} message takes no ${r.type === 'reply' ? 'replies' : 'reactions'}`);
      if (r.type === 'reaction') {
        const state = await trx.selectFrom('message_state').select('deleted_at').where('seq', '=', target.seq).executeTakeFirst();
        if (state?.deleted_at) throw new RichRuleError(409, 'deleted', 'rich.reference: that message was deleted');
      }
    }
    if (r.type === 'reply') return;
    if (r.type === 'reaction') {
      if (r.reaction!.remove) {
        await trx.deleteFrom('reactions').where('target_sender', '=', ref.sender).where('target_id', '=', ref.id).where('reactor', '=', m.from).where('emoji', '=', r.reaction!.emoji).execute();
      } else {
        await trx
          .insertInto('reactions')
          .values({ conversation_id: convId, target_sender: ref.sender, target_id: ref.id, reactor: m.from, emoji: r.reaction!.emoji, seq })
          .onConflict((oc) => oc.columns(['target_sender', 'target_id', 'reactor', 'emoji']).doNothing())
          .execute();
      }
      return;
    }
    // edit / delete: only the original sender (COI rule), whoever relays it.
    if (ref.sender !== m.from || (target && target.sender !== m.from)) {
      throw new RichRuleError(403, 'not_your_message', `only ${ref.sender} may ${r.type} that message`);
    }
    // Multiple edits refer to the latest version: follow the chain back to the content message.
    let original = target;
    for (let i = 0; original && original.kind === 'edit' && original.ref_id && i < 1000; i++) {
      original = await this.findMessage(trx, original.ref_sender!, original.ref_id);
    }
    if (original && original.kind !== 'content' && original.kind !== 'reply') throw new RichRuleError(400, 'not_editable', `rich.reference: a ${original.kind} message cannot be changed`);
    if (!original) return; // never seen here (history before we joined): nothing to update
    const originalState = await trx.selectFrom('message_state').select('deleted_at').where('seq', '=', original.seq).executeTakeFirst();
    if (originalState?.deleted_at) throw new RichRuleError(409, 'deleted', `rich.reference: that message was deleted; it cannot be ${r.type === 'edit' ? 'edited' : 'deleted again'}`);
    if (r.type === 'edit') {
      // Raw text columns (the message itself is stored as JSON): see storableText.
      const text = storableText(r.text ?? m.message);
      const formatted = typeof m.messageFormatted === 'string' ? storableText(m.messageFormatted) : null;
      await trx
        .insertInto('message_state')
        .values({ seq: original.seq, text, formatted, format: m.format ?? null, edit_count: 1, last_edit_seq: seq, edited_at: m.sentAt, deleted_at: null })
        .onConflict((oc) =>
          oc
            .column('seq')
            .doUpdateSet((eb) => ({
              text,
              formatted,
              format: m.format ?? null,
              edit_count: eb('message_state.edit_count', '+', 1),
              last_edit_seq: seq,
              edited_at: m.sentAt,
            }))
            .where('message_state.deleted_at', 'is', null),
        )
        .execute();
      return;
    }
    await this.applyDelete(trx, Number(original.seq), original.sender, original.id, m.sentAt);
  }

  /**
   * A delete removes the content from storage, not just from view: the message keeps a tombstone;
   * its text is scrubbed from the message, from its edits, and from the quotes that replies and
   * reactions carry (their fallback text is rebuilt without it). Attachments lose the reference.
   */
  private async applyDelete(trx: Transaction<Database>, seq: number, sender: string, id: string, at: string): Promise<void> {
    await trx
      .insertInto('message_state')
      .values({ seq, text: null, formatted: null, format: null, edit_count: 0, last_edit_seq: null, edited_at: null, deleted_at: at })
      .onConflict((oc) => oc.column('seq').doUpdateSet({ text: null, formatted: null, format: null, deleted_at: at }))
      .execute();
    // The message itself and every edit of it (edits of edits too).
    const scrub = new Set<string>();
    let frontier: Array<{ sender: string; id: string }> = [{ sender, id }];
    const targets: Array<{ sender: string; id: string }> = [];
    while (frontier.length > 0 && targets.length < 10_000) {
      const next: Array<{ sender: string; id: string }> = [];
      for (const t of frontier) {
        targets.push(t);
        const rows = await trx.selectFrom('messages').select(['seq', 'sender', 'id', 'kind', 'body']).where('ref_sender', '=', t.sender).where('ref_id', '=', t.id).execute();
        for (const row of rows) {
          if (row.kind === 'edit') {
            scrub.add(String(row.seq));
            next.push({ sender: row.sender, id: row.id });
          } else if (row.kind === 'reply' || row.kind === 'reaction') {
            const body = JSON.parse(row.body) as IntertalkMessage;
            if (body.rich?.reference) {
              body.rich.reference.text = null;
              body.message = plainFallback(body.rich);
              await trx.updateTable('messages').set({ body: JSON.stringify(body) }).where('seq', '=', row.seq).execute();
            }
          }
        }
      }
      frontier = next;
    }
    // Scrubbed edits are tombstones too (a queued delivery of one is cancelled, not sent empty).
    for (const s of scrub) {
      await trx
        .insertInto('message_state')
        .values({ seq: Number(s), text: null, formatted: null, format: null, edit_count: 0, last_edit_seq: null, edited_at: null, deleted_at: at })
        .onConflict((oc) => oc.column('seq').doUpdateSet({ deleted_at: at }))
        .execute();
    }
    scrub.add(String(seq));
    for (const s of scrub) {
      const row = await trx.selectFrom('messages').select(['body']).where('seq', '=', Number(s)).executeTakeFirst();
      if (!row) continue;
      const body = JSON.parse(row.body) as IntertalkMessage & { deleted?: true };
      body.message = '';
      delete body.messageFormatted;
      delete body.format;
      if (body.rich) {
        delete body.rich.text;
        delete body.rich.attachments;
        if (body.rich.reference) body.rich.reference.text = null;
      }
      body.deleted = true;
      await trx.updateTable('messages').set({ body: JSON.stringify(body) }).where('seq', '=', Number(s)).execute();
    }
    await trx.deleteFrom('attachment_refs').where('message_seq', '=', seq).execute();
  }

  /** The message at `seq` in a conversation, with what rich actions on it need. */
  async messageAt(convId: string, seq: number): Promise<{ seq: number; id: string; sender: string; kind: string; deleted: boolean; latestEdit: { id: string; kind: string } | null } | null> {
    const row = await this.db
      .selectFrom('messages')
      .leftJoin('message_state', 'message_state.seq', 'messages.seq')
      .select(['messages.seq', 'messages.id', 'messages.sender', 'messages.kind', 'message_state.deleted_at', 'message_state.last_edit_seq'])
      .where('messages.seq', '=', seq)
      .where('messages.conversation_id', '=', convId)
      .executeTakeFirst();
    if (!row) return null;
    let latestEdit: { id: string; kind: string } | null = null;
    if (row.last_edit_seq !== null) {
      const e = await this.db.selectFrom('messages').select(['id', 'kind']).where('seq', '=', Number(row.last_edit_seq)).executeTakeFirst();
      if (e) latestEdit = e;
    }
    return { seq: Number(row.seq), id: row.id, sender: row.sender, kind: row.kind, deleted: row.deleted_at !== null, latestEdit };
  }

  /** The current text of a message as a reference would quote it (null once deleted). */
  async referenceFor(convId: string, sender: string, id: string): Promise<{ seq: number; kind: string; text: string | null; sender: string; id: string } | null> {
    const row = await this.db
      .selectFrom('messages')
      .leftJoin('message_state', 'message_state.seq', 'messages.seq')
      .select(['messages.seq', 'messages.kind', 'messages.body', 'messages.conversation_id', 'message_state.text', 'message_state.deleted_at', 'message_state.edit_count'])
      .where('messages.sender', '=', sender)
      .where('messages.id', '=', id)
      .executeTakeFirst();
    if (!row || row.conversation_id !== convId) return null;
    const body = JSON.parse(row.body) as IntertalkMessage;
    const text = row.deleted_at ? null : row.edit_count ? row.text : (body.rich?.text ?? body.message);
    return { seq: Number(row.seq), kind: row.kind, text, sender, id };
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
      return { messages: await this.currentState(convId, page), hasMore: rows.length > q.limit };
    }
    if (q.before !== undefined) query = query.where('seq', '<', q.before);
    const rows = await query.orderBy('seq', 'desc').limit(q.limit + 1).execute();
    const page = rows.slice(0, q.limit).reverse();
    return { messages: await this.currentState(convId, page), hasMore: rows.length > q.limit };
  }

  /**
   * Each message as it stands now: edited text with `edited`/`editedAt`/`editCount`, `deleted`
   * tombstones, aggregated `reactions` ([{emoji, count, by}]). A client rendering any page (any
   * suffix of history) shows the right state without having seen earlier events.
   */
  private async currentState(convId: string, rows: Array<{ seq: number; conversation_id: string; body: string }>): Promise<StoredMessage[]> {
    if (rows.length === 0) return [];
    const seqs = rows.map((r) => Number(r.seq));
    const states = new Map(
      (await this.db.selectFrom('message_state').selectAll().where('seq', 'in', seqs).execute()).map((s) => [Number(s.seq), s]),
    );
    const messages = rows.map((r) => JSON.parse(servedJson(Number(r.seq), r.conversation_id, r.body)) as StoredMessage & Record<string, unknown>);
    const reactions = await this.db
      .selectFrom('reactions')
      .select(['target_sender', 'target_id', 'emoji', 'reactor', 'seq'])
      .where('conversation_id', '=', convId)
      .where('target_id', 'in', messages.map((m) => m.id))
      .orderBy('seq')
      .execute();
    const byTarget = new Map<string, Map<string, string[]>>();
    // By emoji, then reactor, in code-point order: the same list on every provider and database.
    const codePoints = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    reactions.sort((a, b) => codePoints(a.emoji, b.emoji) || codePoints(a.reactor, b.reactor));
    for (const x of reactions) {
      const key = `${x.target_sender}\n${x.target_id}`;
      let emojis = byTarget.get(key);
      if (!emojis) byTarget.set(key, (emojis = new Map()));
      const by = emojis.get(x.emoji) ?? [];
      by.push(x.reactor);
      emojis.set(x.emoji, by);
    }
    for (const m of messages) {
      const st = states.get(m.seq);
      if (st?.deleted_at) {
        m.deleted = true;
        m.deletedAt = st.deleted_at;
      } else if (st && st.edit_count > 0) {
        m.edited = true;
        m.editedAt = st.edited_at;
        m.editCount = Number(st.edit_count);
        m.message = st.text ?? '';
        if (m.rich) m.rich.text = st.text ?? '';
        if (st.formatted !== null) {
          m.messageFormatted = st.formatted;
          m.format = st.format ?? undefined;
        } else {
          delete m.messageFormatted;
          delete m.format;
        }
      }
      const emojis = byTarget.get(`${m.from}\n${m.id}`);
      if (emojis && !m.deleted) m.reactions = [...emojis].map(([emoji, by]) => ({ emoji, count: by.length, by }));
    }
    return messages;
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

  /** The newest committed seq of any conversation (0 when there is none). */
  async maxSeq(): Promise<number> {
    const row = await this.db.selectFrom('messages').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
    return Number(row?.seq ?? 0);
  }

  /**
   * Committed messages with after < seq <= upTo, oldest first, as the 'message' bus events that
   * announced them (recipients: the conversation's local members). Several instances use it to
   * fill gaps in what reached them over a shared bus (src/cluster/seq-order.ts).
   */
  async committedAfter(after: number, upTo: number, limit: number): Promise<Array<Extract<BusEvent, { type: 'message' }>>> {
    const rows = await this.db
      .selectFrom('messages')
      .select(['seq', 'conversation_id', 'body'])
      .where('seq', '>', after)
      .where('seq', '<=', upTo)
      .orderBy('seq', 'asc')
      .limit(limit)
      .execute();
    if (rows.length === 0) return [];
    const convIds = [...new Set(rows.map((r) => r.conversation_id))];
    const members = await this.db.selectFrom('conversation_members').select(['conversation_id', 'address']).where('conversation_id', 'in', convIds).where('is_local', '=', 1).execute();
    const local = new Map<string, string[]>();
    for (const m of members) {
      const list = local.get(m.conversation_id) ?? [];
      list.push(m.address);
      local.set(m.conversation_id, list);
    }
    return rows.map((r) => ({
      type: 'message' as const,
      seq: Number(r.seq),
      conversationId: r.conversation_id,
      recipients: local.get(r.conversation_id) ?? [],
      json: servedJson(Number(r.seq), r.conversation_id, r.body),
    }));
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
        'c.title',
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
      title: r.title,
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
      title: c.title,
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
