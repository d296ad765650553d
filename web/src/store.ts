// The client's state and everything that changes it: the conversation list, the open
// conversations' messages, deliveries, receipts, typing, and the live connection. Components read
// it directly and re-render on `subscribe`. Objects that change are replaced (never mutated), so
// memoised components can compare by reference.
import { WebPushClient } from './push.js';
import { ApiError, NetworkError, newMessageId, type Session } from './api';
import { Live, type LiveState } from './live';
import { RoomStore } from './rooms';
import { domainOf, localPart, preview, textOf } from './text';
import { isBubble, keyOf, kindOf, type Conversation, type Delivery, type Frame, type Message, type Reaction } from './types';

const PAGE = 40;

export interface Pending {
  localId: string;
  /** The message id sent to the provider: a retry sends the same one (idempotent). */
  id: string;
  conversationId: string;
  text: string;
  replyTo: Message | null;
  files: File[];
  /** Attachments already uploaded (a retry does not upload them again). */
  uploaded: Array<{ id: string; name: string }>;
  state: 'sending' | 'failed';
  error: string | null;
  sentAt: string;
}

export interface View {
  id: string;
  loaded: boolean;
  error: string | null;
  /** Bubbles (content, reply) and conversation-name events, oldest first. */
  items: Message[];
  hasMore: boolean;
  loadingOlder: boolean;
  pending: Pending[];
  /** seqs already applied: nothing is applied twice (resume, the POST answer and the frame). */
  seen: Set<number>;
  /** Bubbles of the loaded range by (sender, id). */
  byKey: Map<string, Message>;
  /** Edit messages → the message they edit (edits reference the previous edit). */
  aliases: Map<string, string>;
  /** Live messages that arrived while the first page was loading. */
  buffer: Message[] | null;
}

export interface Notice {
  id: number;
  text: string;
}

/** Words for an error, for people. */
export function describe(err: unknown): string {
  if (err instanceof NetworkError) return 'Cannot reach your provider. Check your connection and try again.';
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'unknown_recipient':
        return err.message.replace(/^no such user/, 'No such user');
      case 'domain_refused':
        return `Refused: ${err.message}`;
      case 'federation_disabled':
        return 'Your provider does not talk to other providers.';
      case 'rate_limited':
        return `You are sending too fast. Try again${err.retryAfter ? ` in ${Math.ceil(err.retryAfter)} s` : ' shortly'}.`;
      case 'payload_too_large':
        return 'That is too large to send.';
      case 'quota_exceeded':
        return 'You have reached your upload quota for today.';
      case 'not_your_message':
        return 'Only the sender can do that.';
      case 'deleted':
        return 'That message was deleted.';
      case 'banned':
        return 'You are banned from this room.';
      case 'invite_required':
        return 'This room is invite-only: you need an invite link from one of its moderators.';
      case 'invalid_invite':
        return 'This invite is unknown, used up or revoked.';
      case 'no_such_room':
        return 'There is no such room (or it is invite-only and you are not in it).';
      case 'not_a_member':
        return 'You are not a member of this room.';
      case 'not_a_moderator':
        return 'Only the room’s moderators can do that.';
      default:
        return err.message ? err.message.charAt(0).toUpperCase() + err.message.slice(1) : `Error ${err.status}`;
    }
  }
  return err instanceof Error ? err.message : String(err);
}

/** What a delivery problem means, in words. */
export function deliveryProblem(d: Delivery): string {
  const e = d.error ?? '';
  if (d.state === 'failed') {
    if (/no_local_recipient|unknown_recipient|no such user/i.test(e)) return `No such user at ${d.destination}`;
    if (/blocked/i.test(e)) return `${d.destination} is blocked`;
    if (/not delivered within/i.test(e)) return `Could not reach ${d.destination}; gave up`;
    if (/answered 4\d\d/.test(e)) return `${d.destination} refused the message`;
    return `Not delivered to ${d.destination}`;
  }
  if (d.state === 'queued' && e) return `Cannot reach ${d.destination} yet; retrying`;
  return '';
}

export class Chat {
  readonly me: string;
  readonly domain: string;
  conversations = new Map<string, Conversation>();
  views = new Map<string, View>();
  /** Delivery state of our own messages to other providers, by seq and destination. */
  deliveries = new Map<number, Map<string, Delivery>>();
  /** Who is typing where: conversation → address → hide at (ms). */
  typing = new Map<string, Map<string, number>>();
  listLoaded = false;
  listError: string | null = null;
  connection: LiveState = 'connecting';
  selected: string | null = null;
  notices: Notice[] = [];
  notificationsAllowed = typeof Notification !== 'undefined' && Notification.permission === 'granted';
  ended = false;

  private listeners = new Set<() => void>();
  private scheduled = false;
  private live: Live;
  private readyCount = 0;
  private loadingConversations = new Set<string>();
  private readTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private typingTimer: ReturnType<typeof setInterval> | null = null;
  private deliveryTimer: ReturnType<typeof setTimeout> | null = null;
  private deliveryDelay = 2000;
  private noticeId = 0;
  private lastTypingSent = new Map<string, number>();
  private readonly onVisibility = () => {
    if (document.visibilityState === 'visible' && this.selected) this.scheduleRead(this.selected);
  };

  constructor(
    readonly session: Session,
    private readonly onEnded: () => void,
  ) {
    this.me = session.address;
    this.domain = domainOf(session.address);
    this.live = new Live(session, {
      frame: (f) => this.onFrame(f),
      state: (s) => {
        this.connection = s;
        this.emit();
      },
      ended: () => this.end(),
    });
    session.onEnded = () => this.end();
    this.push = new WebPushClient(session, () => this.emit());
    this.rooms = new RoomStore({ me: this.me, domain: this.domain, session, call: (m, p, j) => this.call(m, p, j), emit: () => this.emit() });
    this.rooms.setDescribe(describe);
  }

  /** Rooms (web/src/rooms.ts). */
  readonly rooms: RoomStore;

  /** Web Push for this browser (web/src/push.ts). */
  readonly push: WebPushClient;

  async start(): Promise<void> {
    document.addEventListener('visibilitychange', this.onVisibility);
    void this.push.init().catch(() => undefined);
    let cursor = 0;
    void this.rooms.loadList();
    try {
      cursor = await this.loadConversations();
    } catch (err) {
      this.listError = describe(err);
    }
    this.live.start(cursor);
    this.emit();
  }

  stop(): void {
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.live.stop();
    if (this.typingTimer) clearInterval(this.typingTimer);
    if (this.deliveryTimer) clearTimeout(this.deliveryTimer);
    for (const t of this.readTimers.values()) clearTimeout(t);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.stop();
    this.onEnded();
  }

  async logout(): Promise<void> {
    this.stop();
    await this.session.logout();
  }

  // ---- change notification ----

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const fn of this.listeners) fn();
    });
  }

  notice(text: string): void {
    const n = { id: ++this.noticeId, text };
    this.notices = [...this.notices, n];
    this.emit();
    setTimeout(() => this.dismiss(n.id), 8000);
  }

  dismiss(id: number): void {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.emit();
  }

  reconnectNow(): void {
    this.live.reconnectNow();
  }

  // ---- conversation list ----

  /** Conversations, newest activity first. */
  sortedConversations(): Conversation[] {
    return [...this.conversations.values()].sort((a, b) => b.lastSeq - a.lastSeq);
  }

  /**
   * Saves the user's contact card (GET /me/email/card: address and OpenPGP key) as a .vcf file,
   * for e-mail correspondents whose app (Delta Chat) needs the key before it writes. Resolves to
   * an error text when the provider has no e-mail bridge.
   */
  async saveContactCard(): Promise<string | null> {
    const res = await this.session.fetch('GET', '/me/email/card');
    if (res.status === 404) return 'This provider does not bridge to e-mail.';
    if (!res.ok) return `The contact card could not be made (${res.status}).`;
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = `${this.me}.vcf`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    return null;
  }

  /** What each address is (GET /addresses/{address}): shown for participants reached by e-mail. */
  private readonly addressKinds = new Map<string, 'local' | 'intertalk' | 'email' | 'unknown' | 'pending'>();

  /** True when `address` is reached by the provider's e-mail bridge (asked once, then cached). */
  isEmail(address: string): boolean {
    const k = this.addressKinds.get(address);
    if (k === undefined) {
      this.addressKinds.set(address, 'pending');
      void this.session
        .request<{ kind: 'local' | 'intertalk' | 'email' | 'unknown' }>('GET', `/addresses/${encodeURIComponent(address)}`)
        .then((r) => {
          this.addressKinds.set(address, r.kind);
          if (r.kind === 'email') this.emit();
        })
        // No bridge on this provider (404), or it cannot tell now: not shown as e-mail.
        .catch(() => this.addressKinds.set(address, 'unknown'));
    }
    return k === 'email';
  }

  /** Loads the list; returns the highest seq in it (where the live stream resumes). */
  private async loadConversations(): Promise<number> {
    const r = await this.session.request<{ conversations: Conversation[] }>('GET', '/conversations?limit=200');
    for (const c of r.conversations) {
      const old = this.conversations.get(c.id);
      this.conversations.set(c.id, old && old.lastSeq > c.lastSeq ? { ...c, lastSeq: old.lastSeq, lastMessage: old.lastMessage } : c);
    }
    this.listLoaded = true;
    this.listError = null;
    this.emit();
    return r.conversations.reduce((max, c) => Math.max(max, c.lastSeq), 0);
  }

  private async fetchConversation(id: string): Promise<void> {
    if (this.loadingConversations.has(id)) return;
    this.loadingConversations.add(id);
    try {
      const c = await this.session.request<Conversation>('GET', `/conversations/${id}`);
      const old = this.conversations.get(id);
      this.conversations.set(id, old ? { ...c, receipts: old.receipts ?? [], lastSeq: Math.max(c.lastSeq, old.lastSeq) } : { ...c, receipts: [] });
      if (this.selected === id) this.scheduleRead(id);
      this.emit();
    } catch {
      /* it appears with the next list load */
    } finally {
      this.loadingConversations.delete(id);
    }
  }

  private updateConversation(id: string, f: (c: Conversation) => Conversation): void {
    const c = this.conversations.get(id);
    if (c) this.conversations.set(id, f(c));
  }

  /** Is the other side of this conversation (partly) at other providers? */
  remoteDomains(c: Conversation): string[] {
    return [...new Set(c.participants.map(domainOf).filter((d) => d !== this.domain))];
  }

  // ---- opening a conversation ----

  select(id: string | null): void {
    if (this.selected === id) return;
    this.selected = id;
    if (id) {
      const v = this.views.get(id);
      if (!v || (!v.loaded && v.error)) void this.loadView(id);
      else this.scheduleDeliveryRefresh(0);
      this.scheduleRead(id);
    }
    this.emit();
  }

  view(id: string): View {
    let v = this.views.get(id);
    if (!v) {
      v = { id, loaded: false, error: null, items: [], hasMore: false, loadingOlder: false, pending: [], seen: new Set(), byKey: new Map(), aliases: new Map(), buffer: [] };
      this.views.set(id, v);
    }
    return v;
  }

  private async loadView(id: string): Promise<void> {
    const v = this.view(id);
    v.error = null;
    v.buffer ??= [];
    this.emit();
    try {
      const page = await this.session.request<{ messages: Message[]; hasMore: boolean }>('GET', `/conversations/${id}/messages?limit=${PAGE}`);
      this.addPage(v, page.messages, 'end');
      v.hasMore = page.hasMore;
      v.loaded = true;
      const buffered = v.buffer ?? [];
      v.buffer = null;
      for (const m of buffered) this.apply(v, m);
      this.scheduleDeliveryRefresh(0);
    } catch (err) {
      v.error = describe(err);
    }
    this.emit();
  }

  async loadOlder(id: string): Promise<void> {
    const v = this.views.get(id);
    if (!v || !v.loaded || !v.hasMore || v.loadingOlder) return;
    const oldest = Math.min(...v.seen);
    v.loadingOlder = true;
    this.emit();
    try {
      const page = await this.session.request<{ messages: Message[]; hasMore: boolean }>('GET', `/conversations/${id}/messages?limit=${PAGE}&before=${oldest}`);
      this.addPage(v, page.messages, 'start');
      v.hasMore = page.hasMore;
    } catch (err) {
      this.notice(`Could not load older messages: ${describe(err)}`);
    } finally {
      v.loadingOlder = false;
      this.emit();
    }
  }

  /** A history page: messages as they stand now (edits, deletes and reactions already applied). */
  private addPage(v: View, messages: Message[], where: 'start' | 'end'): void {
    const shown: Message[] = [];
    for (const m of messages) {
      if (v.seen.has(m.seq)) continue;
      v.seen.add(m.seq);
      const k = kindOf(m);
      if (isBubble(m)) {
        v.byKey.set(keyOf(m.from, m.id), m);
        shown.push(m);
      } else if (k === 'property') {
        shown.push(m);
      } else if (k === 'edit' && m.rich?.reference) {
        v.aliases.set(keyOf(m.from, m.id), this.resolveKey(v, m.rich.reference.sender, m.rich.reference.id));
      }
    }
    v.items = where === 'start' ? [...shown, ...v.items] : [...v.items, ...shown].sort((a, b) => a.seq - b.seq);
  }

  private resolveKey(v: View, sender: string, id: string): string {
    let k = keyOf(sender, id);
    for (let i = 0; i < 1000; i++) {
      const next = v.aliases.get(k);
      if (!next) break;
      k = next;
    }
    return k;
  }

  private replace(v: View, old: Message, next: Message): void {
    v.byKey.set(keyOf(next.from, next.id), next);
    const i = v.items.indexOf(old);
    if (i >= 0) {
      v.items = v.items.slice();
      v.items[i] = next;
    }
  }

  /** Applies one new message (live, replayed, or the answer to our own request) to a view. */
  private apply(v: View, m: Message): void {
    if (v.buffer) {
      v.buffer.push(m);
      return;
    }
    if (v.seen.has(m.seq)) return;
    v.seen.add(m.seq);
    const k = kindOf(m);
    const ref = m.rich?.reference;
    if (isBubble(m)) {
      v.byKey.set(keyOf(m.from, m.id), m);
      v.items = [...v.items, m];
      if (v.items.length > 1 && v.items[v.items.length - 2]!.seq > m.seq) v.items.sort((a, b) => a.seq - b.seq);
      if (m.from === this.me) v.pending = v.pending.filter((p) => p.id !== m.id);
      return;
    }
    if (k === 'property') {
      v.items = [...v.items, m].sort((a, b) => a.seq - b.seq);
      return;
    }
    if (!ref) return;
    const targetKey = this.resolveKey(v, ref.sender, ref.id);
    if (k === 'edit') v.aliases.set(keyOf(m.from, m.id), targetKey);
    const target = v.byKey.get(targetKey);
    if (!target) return; // older than what is loaded: history shows it as it is now
    if (k === 'reaction' && m.rich?.reaction && !target.deleted) {
      this.replace(v, target, { ...target, reactions: withReaction(target.reactions ?? [], m.rich.reaction.emoji, m.from, !!m.rich.reaction.remove) });
    } else if (k === 'edit' && !target.deleted && target.from === m.from) {
      const text = m.rich?.text ?? m.message.replace(/^✎ /, '');
      const next: Message = { ...target, message: text, edited: true, editedAt: m.sentAt, editCount: (target.editCount ?? 0) + 1 };
      if (next.rich) next.rich = { ...next.rich, text };
      if (m.messageFormatted !== undefined && m.format) {
        next.messageFormatted = m.messageFormatted;
        next.format = m.format;
      } else {
        delete next.messageFormatted;
        delete next.format;
      }
      this.replace(v, target, next);
    } else if (k === 'delete' && target.from === m.from) {
      const next: Message = { ...target, message: '', deleted: true, deletedAt: m.sentAt };
      delete next.messageFormatted;
      delete next.format;
      delete next.reactions;
      delete next.edited;
      if (next.rich) next.rich = { type: next.rich.type, ...(next.rich.reference ? { reference: next.rich.reference } : {}) };
      this.replace(v, target, next);
      // Replies that quote it lose the quote, as the provider scrubs them.
      for (const item of v.items) {
        const r = item.rich?.reference;
        if (item.rich?.type === 'reply' && r && this.resolveKey(v, r.sender, r.id) === targetKey && r.text !== null) {
          this.replace(v, item, { ...item, rich: { ...item.rich, reference: { ...r, text: null } } });
        }
      }
    }
  }

  // ---- live frames ----

  private onFrame(f: Frame): void {
    switch (f.type) {
      case 'ready':
        this.readyCount++;
        if (this.readyCount > 1) void this.resync();
        // Room frames are not replayed: whatever came between the history load (or the drop)
        // and this ready is fetched by seq.
        void this.rooms.catchUp();
        break;
      case 'roomMessage':
      case 'roomMembers':
      case 'roomMessageRemoved':
      case 'roomUpdated':
        this.rooms.onFrame(f);
        return;
      case 'message':
        this.onMessage(f.message);
        break;
      case 'delivery': {
        this.setDelivery(f.seq, { destination: f.destination, state: f.state, error: f.error, insecure: f.insecure });
        break;
      }
      case 'read':
        this.updateConversation(f.conversationId, (c) => ({ ...c, lastReadSeq: Math.max(c.lastReadSeq, f.lastReadSeq), unread: f.lastReadSeq >= c.lastSeq ? 0 : c.unread }));
        break;
      case 'typing': {
        let m = this.typing.get(f.conversationId);
        if (!m) this.typing.set(f.conversationId, (m = new Map()));
        if (f.state === 'typing') m.set(f.from, Date.now() + 6000);
        else m.delete(f.from);
        this.sweepTyping();
        break;
      }
      case 'receipt':
        if (f.seq !== null) {
          const seq = f.seq;
          this.updateConversation(f.conversationId, (c) => {
            const list = (c.receipts ?? []).filter((r) => r.address !== f.from);
            const old = (c.receipts ?? []).find((r) => r.address === f.from);
            list.push({ address: f.from, seq: Math.max(seq, old?.seq ?? 0) });
            return { ...c, receipts: list };
          });
        }
        // Whoever read it is not typing any more.
        this.typing.get(f.conversationId)?.delete(f.from);
        break;
      default:
        return;
    }
    this.emit();
  }

  private onMessage(m: Message): void {
    const c = this.conversations.get(m.conversationId);
    const open = this.selected === m.conversationId && document.visibilityState === 'visible';
    if (!c) {
      void this.fetchConversation(m.conversationId);
    } else {
      const next: Conversation = { ...c };
      if (m.seq > c.lastSeq) {
        next.lastSeq = m.seq;
        next.lastMessage = m;
      }
      if (m.from !== this.me && m.seq > c.lastReadSeq && !open) next.unread = c.unread + 1;
      if (kindOf(m) === 'property' && m.rich?.property) next.title = m.rich.property.value || null;
      this.conversations.set(c.id, next);
    }
    // A message from someone ends their typing indicator.
    this.typing.get(m.conversationId)?.delete(m.from);
    const v = this.views.get(m.conversationId);
    if (v) this.apply(v, m);
    if (m.from !== this.me) {
      if (open) this.scheduleRead(m.conversationId);
      if (this.readyCount > 0 && isBubble(m)) this.notify(m);
    }
    this.emit();
  }

  /** After a reconnection: refresh what frames do not replay (read markers, receipts, deliveries). */
  private async resync(): Promise<void> {
    try {
      await this.loadConversations();
    } catch {
      /* next time */
    }
    this.scheduleDeliveryRefresh(0);
    if (this.selected) this.scheduleRead(this.selected);
  }

  private sweepTyping(): void {
    const now = Date.now();
    let any = false;
    for (const [conv, m] of this.typing) {
      for (const [who, until] of m) if (until <= now) m.delete(who);
      if (m.size === 0) this.typing.delete(conv);
      else any = true;
    }
    if (any && !this.typingTimer) {
      this.typingTimer = setInterval(() => {
        this.sweepTyping();
        this.emit();
      }, 1000);
    } else if (!any && this.typingTimer) {
      clearInterval(this.typingTimer);
      this.typingTimer = null;
    }
  }

  typingIn(conversationId: string): string[] {
    return [...(this.typing.get(conversationId)?.keys() ?? [])];
  }

  // ---- read markers ----

  scheduleRead(id: string): void {
    if (this.readTimers.has(id)) return;
    this.readTimers.set(
      id,
      setTimeout(() => {
        this.readTimers.delete(id);
        void this.markRead(id);
      }, 300),
    );
  }

  private async markRead(id: string): Promise<void> {
    if (this.selected !== id || document.visibilityState !== 'visible') return;
    const c = this.conversations.get(id);
    if (!c || (c.unread === 0 && c.lastReadSeq >= c.lastSeq)) return;
    try {
      const r = await this.session.request<{ lastReadSeq: number }>('POST', `/conversations/${id}/read`, { json: {} });
      this.updateConversation(id, (x) => ({ ...x, lastReadSeq: Math.max(x.lastReadSeq, r.lastReadSeq), unread: r.lastReadSeq >= x.lastSeq ? 0 : x.unread }));
      this.emit();
    } catch {
      /* retried when the next message arrives */
    }
  }

  // ---- deliveries ----

  private setDelivery(seq: number, d: Delivery): void {
    const old = this.deliveries.get(seq);
    const next = new Map(old ?? []);
    next.set(d.destination, d);
    this.deliveries.set(seq, next);
  }

  private scheduleDeliveryRefresh(delay: number): void {
    if (this.deliveryTimer) clearTimeout(this.deliveryTimer);
    this.deliveryTimer = setTimeout(() => {
      this.deliveryTimer = null;
      void this.refreshDeliveries();
    }, delay);
  }

  /**
   * Delivery states of our recent messages in the open conversation that are not final yet (or
   * unknown: loaded from history). Frames tell us when a delivery ends; this catches what they do
   * not tell — retries with their reasons, and what happened while we were offline.
   */
  private async refreshDeliveries(): Promise<void> {
    const id = this.selected;
    const c = id ? this.conversations.get(id) : undefined;
    const v = id ? this.views.get(id) : undefined;
    if (!c || !v || !v.loaded || this.remoteDomains(c).length === 0) return;
    const mine = v.items.filter((m) => m.from === this.me && isBubble(m) && !m.deleted).slice(-12);
    let open = false;
    for (const m of mine) {
      const known = this.deliveries.get(m.seq);
      if (known && known.size > 0 && [...known.values()].every((d) => d.state !== 'queued')) continue;
      try {
        const r = await this.session.request<{ deliveries: Array<{ destination: string; state: Delivery['state']; lastError: string | null; insecure: boolean }> }>(
          'GET',
          `/conversations/${c.id}/messages/${m.seq}/deliveries`,
        );
        for (const d of r.deliveries) {
          this.setDelivery(m.seq, { destination: d.destination, state: d.state, error: d.lastError, insecure: d.insecure });
          if (d.state === 'queued') open = true;
        }
      } catch {
        open = true;
        break;
      }
    }
    this.emit();
    if (open) {
      this.scheduleDeliveryRefresh(this.deliveryDelay);
      this.deliveryDelay = Math.min(30_000, this.deliveryDelay * 2);
    } else {
      this.deliveryDelay = 2000;
    }
  }

  /** The state of one of our messages as the user should see it. */
  statusOf(m: Message, c: Conversation): { kind: 'sent' | 'delivered' | 'read' | 'queued' | 'failed'; label: string; detail: string; insecure: boolean } {
    const remote = this.remoteDomains(c);
    const ds = [...(this.deliveries.get(m.seq)?.values() ?? [])].filter((d) => d.state !== 'cancelled');
    const insecure = ds.some((d) => d.insecure);
    const failed = ds.filter((d) => d.state === 'failed');
    if (failed.length > 0) return { kind: 'failed', label: 'Failed', detail: failed.map(deliveryProblem).join('; '), insecure };
    const readers = (c.receipts ?? []).filter((r) => r.seq >= m.seq && r.address !== this.me).map((r) => r.address);
    if (readers.length > 0) {
      const others = c.participants.filter((p) => p !== this.me).length;
      const label = others <= 1 ? 'Read' : readers.length >= others ? 'Read by everyone' : `Read by ${readers.length}`;
      return { kind: 'read', label, detail: `Read by ${readers.join(', ')}`, insecure };
    }
    if (remote.length === 0) return { kind: 'delivered', label: 'Delivered', detail: 'Delivered', insecure };
    const queued = ds.filter((d) => d.state === 'queued');
    const delivered = ds.filter((d) => d.state === 'delivered').map((d) => d.destination);
    if (queued.length === 0 && remote.every((d) => delivered.includes(d))) {
      return { kind: 'delivered', label: 'Delivered', detail: `Delivered to ${delivered.join(', ')}${insecure ? ' over an insecure link' : ''}`, insecure };
    }
    const problems = queued.map(deliveryProblem).filter(Boolean);
    if (problems.length > 0) return { kind: 'queued', label: 'Not delivered yet', detail: problems.join('; '), insecure };
    return { kind: 'sent', label: 'Sent', detail: `Sent; on its way to ${remote.join(', ')}`, insecure };
  }

  // ---- sending ----

  async send(conversationId: string, text: string, opts: { replyTo?: Message | null; files?: File[]; uploaded?: Array<{ id: string; name: string }> } = {}): Promise<void> {
    const v = this.view(conversationId);
    const p: Pending = {
      localId: newMessageId(),
      id: newMessageId(),
      conversationId,
      text,
      replyTo: opts.replyTo ?? null,
      files: opts.files ?? [],
      uploaded: opts.uploaded ?? [],
      state: 'sending',
      error: null,
      sentAt: new Date().toISOString(),
    };
    v.pending = [...v.pending, p];
    this.setTyping(conversationId, false);
    this.emit();
    await this.deliver(p);
  }

  async retry(p: Pending): Promise<void> {
    await this.deliver(p);
  }

  discard(p: Pending): void {
    const v = this.views.get(p.conversationId);
    if (v) v.pending = v.pending.filter((x) => x !== p);
    this.emit();
  }

  private updatePending(p: Pending, patch: Partial<Pending>): void {
    Object.assign(p, patch);
    const v = this.views.get(p.conversationId);
    if (v) v.pending = v.pending.map((x) => (x === p ? p : x));
    this.emit();
  }

  private async deliver(p: Pending): Promise<void> {
    this.updatePending(p, { state: 'sending', error: null });
    try {
      for (let i = p.uploaded.length; i < p.files.length; i++) {
        const f = p.files[i]!;
        const r = await this.session.request<{ id: string }>('POST', `/attachments?name=${encodeURIComponent(f.name)}`, { body: f, contentType: f.type || 'application/octet-stream' });
        p.uploaded = [...p.uploaded, { id: r.id, name: f.name }];
      }
      const body: Record<string, unknown> = { id: p.id, text: p.text };
      if (p.text.trim()) {
        body.formatted = p.text;
        body.format = 'text/markdown';
      }
      if (p.replyTo) body.replyTo = p.replyTo.seq;
      if (p.uploaded.length > 0) body.attachments = p.uploaded;
      const m = await this.call<Message>('POST', `/conversations/${p.conversationId}/messages`, body);
      this.discard(p);
      this.ownMessage(m);
    } catch (err) {
      this.updatePending(p, { state: 'failed', error: describe(err) });
    }
  }

  /** The provider's answer to one of our requests: applied like a frame (the frame may follow). */
  private ownMessage(m: Message): void {
    const c = this.conversations.get(m.conversationId);
    if (c && this.remoteDomains(c).length > 0 && isBubble(m) && !this.deliveries.has(m.seq)) {
      for (const d of this.remoteDomains(c)) this.setDelivery(m.seq, { destination: d, state: 'queued', error: null, insecure: false });
    }
    const v = this.views.get(m.conversationId);
    if (v && !v.seen.has(m.seq)) this.onMessage(m);
    else if (!v) this.onMessage(m);
    this.scheduleDeliveryRefresh(4000);
  }

  /**
   * Starts a conversation (or continues the one with exactly these participants) with a first
   * message. Throws an ApiError/NetworkError with the provider's reason (unknown user, refused).
   */
  async startConversation(addresses: string[], text: string): Promise<string> {
    const to = [this.me, ...addresses.filter((a) => a !== this.me)];
    const body: Record<string, unknown> = { id: newMessageId(), to, message: text };
    if (text.trim()) {
      body.messageFormatted = text;
      body.format = 'text/markdown';
    }
    const m = await this.call<Message>('POST', '/messages', body);
    if (!this.conversations.has(m.conversationId)) {
      this.conversations.set(m.conversationId, { id: m.conversationId, participants: [...new Set(m.to)].sort(), title: null, lastSeq: m.seq, lastMessage: m, unread: 0, lastReadSeq: m.seq, receipts: [] });
      void this.fetchConversation(m.conversationId);
    }
    this.ownMessage(m);
    return m.conversationId;
  }

  /** Resends a message another provider refused or never got, then deletes the failed copy. */
  async resend(m: Message): Promise<void> {
    const v = this.views.get(m.conversationId);
    const ref = m.rich?.reference;
    const replyTo = ref && v ? (v.byKey.get(this.resolveKey(v, ref.sender, ref.id)) ?? null) : null;
    const uploaded = (m.rich?.attachments ?? []).map((a) => ({ id: a.id, name: a.name }));
    await this.send(m.conversationId, textOf(m), { replyTo, uploaded });
    await this.remove(m);
  }

  private async action(what: string, run: () => Promise<Message>): Promise<boolean> {
    try {
      this.ownMessage(await run());
      return true;
    } catch (err) {
      this.notice(`${what}: ${describe(err)}`);
      return false;
    }
  }

  /** A JSON route over the live socket when it is up (the fast path), else over HTTP. */
  private call<T>(method: string, path: string, json?: unknown): Promise<T> {
    return this.live.request<T>(method, path, json) ?? this.session.request<T>(method, path, json === undefined ? {} : { json });
  }

  react(m: Message, emoji: string): Promise<boolean> {
    const mine = m.reactions?.some((r) => r.emoji === emoji && r.by.includes(this.me)) ?? false;
    return this.action('Could not react', () =>
      this.call<Message>('POST', `/conversations/${m.conversationId}/messages/${m.seq}/reactions`, mine ? { emoji, remove: true } : { emoji }),
    );
  }

  edit(m: Message, text: string): Promise<boolean> {
    return this.action('Could not edit', () =>
      this.call<Message>('PATCH', `/conversations/${m.conversationId}/messages/${m.seq}`, { text, formatted: text, format: 'text/markdown' }),
    );
  }

  remove(m: Message): Promise<boolean> {
    return this.action('Could not delete', () => this.call<Message>('DELETE', `/conversations/${m.conversationId}/messages/${m.seq}`));
  }

  rename(conversationId: string, name: string): Promise<boolean> {
    return this.action('Could not rename', () => this.call<Message>('PUT', `/conversations/${conversationId}/name`, { name }));
  }

  /** Tells the others we are typing (re-sent every 3 s while typing) or stopped. */
  setTyping(conversationId: string, active: boolean): void {
    const last = this.lastTypingSent.get(conversationId) ?? 0;
    if (active) {
      if (Date.now() - last < 3000) return;
      this.lastTypingSent.set(conversationId, Date.now());
    } else {
      if (last === 0) return;
      this.lastTypingSent.delete(conversationId);
    }
    this.session.request('POST', `/conversations/${conversationId}/typing`, { json: { state: active ? 'typing' : 'stopped' } }).catch(() => undefined);
  }

  // ---- attachments ----

  private blobs = new Map<string, Promise<string>>();

  /** A blob: URL for an attachment (fetched with our token; tokens never go into URLs). */
  attachmentUrl(id: string): Promise<string> {
    let p = this.blobs.get(id);
    if (!p) {
      p = this.fetchAttachment(id);
      this.blobs.set(id, p);
      p.catch(() => this.blobs.delete(id));
    }
    return p;
  }

  private async fetchAttachment(id: string): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const res = await this.session.fetch('GET', `/attachments/${id}`);
      if (res.ok) return URL.createObjectURL(await res.blob());
      // A peer's file that our provider has not fetched yet: wait and ask again.
      if (res.status === 503 && attempt < 20) {
        const ra = Number(res.headers.get('retry-after'));
        await new Promise((r) => setTimeout(r, Math.min(5000, Math.max(1000, (Number.isFinite(ra) ? ra : 2) * 1000))));
        continue;
      }
      throw new ApiError(res.status, 'attachment_unavailable', res.status === 404 ? 'not available' : `HTTP ${res.status}`);
    }
  }

  // ---- notifications ----

  async enableNotifications(): Promise<void> {
    if (typeof Notification === 'undefined') return;
    const p = await Notification.requestPermission();
    this.notificationsAllowed = p === 'granted';
    if (p === 'denied') this.notice('Notifications are blocked for this site in your browser settings.');
    this.emit();
  }

  private notify(m: Message): void {
    // The permission may have come from the push toggle (push.ts) rather than enableNotifications.
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    if (document.visibilityState === 'visible') return;
    const c = this.conversations.get(m.conversationId);
    const from = localPart(m.from);
    const title = c && c.participants.length > 2 ? `${from} in ${c.title ?? 'a group'}` : `${from} (${m.from})`;
    try {
      const n = new Notification(title, { body: preview({ ...m, from: '' }, this.me).slice(0, 140), tag: m.conversationId });
      n.onclick = () => {
        window.focus();
        location.hash = `#/c/${m.conversationId}`;
        n.close();
      };
    } catch {
      /* some browsers allow notifications only from a service worker */
    }
  }
}

function withReaction(list: Reaction[], emoji: string, who: string, remove: boolean): Reaction[] {
  const out = list.map((r) => ({ ...r, by: [...r.by] }));
  const r = out.find((x) => x.emoji === emoji);
  if (remove) {
    if (!r || !r.by.includes(who)) return list;
    r.by = r.by.filter((x) => x !== who);
    r.count = r.by.length;
    return out.filter((x) => x.count > 0);
  }
  if (r) {
    if (r.by.includes(who)) return list;
    r.by.push(who);
    r.count = r.by.length;
    return out;
  }
  return [...out, { emoji, count: 1, by: [who] }];
}
