// The client's rooms (docs/rooms.md): the rooms we are a member of (GET /me/rooms), the open
// rooms' messages, members and live changes. Rooms live at one address, `name#domain`; in paths
// the whole address is URL-encoded (`/rooms/secret%23ecorp.test/…`).
//
// Room frames are not replayed when the live connection resumes: after every `ready` the loaded
// rooms catch up with `GET /rooms/{room}/messages?after={highest seq seen}`. Everything is applied
// by seq, once (the POST answer, the frame and the catch-up may bring the same message).
// Like store.ts, objects that change are replaced, never mutated.
import { ApiError, newMessageId, type Session } from './api';
import type { Room, RoomChange, RoomMember, RoomMessage, Frame } from './types';

const PAGE = 100;

export type RoomItem = { kind: 'message'; key: string; m: RoomMessage } | { kind: 'event'; key: string; address: string; change: RoomChange; at: string };

export interface RoomView {
  room: string;
  loaded: boolean;
  error: string | null;
  /** Messages in room order, and membership events where they happened (live only). */
  items: RoomItem[];
  /** seqs applied: nothing is shown twice. */
  seen: Set<number>;
  /** The highest seq seen: where a catch-up starts. */
  lastSeq: number;
  members: RoomMember[] | null;
  membersError: string | null;
  /** Why we are no longer in it (shown in its view), when that happened while it was open. */
  gone: RoomChange | null;
}

export interface RoomPolicy {
  name: string;
  title: string;
  topic: string;
  visibility: 'public' | 'invite';
  history: 'join' | 'start';
}

export interface Invite {
  code: string;
  multiUse: boolean;
  /** A link to this web client that joins (#/join?room=…&code=…). */
  link: string;
}

interface Deps {
  me: string;
  domain: string;
  session: Session;
  /** A JSON route over the live socket when it is up, else over HTTP (store.ts). */
  call<T>(method: string, path: string, json?: unknown): Promise<T>;
  emit(): void;
}

/** The path of a room: its full address, URL-encoded. */
export const roomPath = (room: string): string => `/rooms/${encodeURIComponent(room)}`;

/** The link to a room's view in this client. */
export const roomHref = (room: string): string => `#/r/${encodeURIComponent(room)}`;

/** The name people see: the title, or the name. */
export function roomTitle(r: Pick<Room, 'title' | 'name'> | undefined, room: string): string {
  return r?.title || r?.name || room.split('#')[0]!;
}

/** A referral link of this web client for the server's referral (`room=…&code=…`). */
export function referralLink(referral: string): string {
  return `${location.origin}/#/join?${referral}`;
}

/**
 * What someone typed into "Join room": a referral link (or just its `room=…&code=…` part), a room
 * address `name#domain`, or a bare name (a room here).
 */
export function parseJoin(input: string, domain: string): { referral: string } | { room: string } | null {
  const t = input.trim();
  if (!t) return null;
  const i = t.indexOf('room=');
  if (i >= 0) return { referral: t.slice(i).split(/\s/)[0]! };
  if (/\s/.test(t)) return null;
  if (t.includes('#')) return { room: t.replace(/^#/, '') };
  return { room: `${t}#${domain}` };
}

export class RoomStore {
  list = new Map<string, Room>();
  views = new Map<string, RoomView>();
  /** Live messages that arrived while the room was not open. */
  unread = new Map<string, number>();
  listLoaded = false;
  listError: string | null = null;
  selected: string | null = null;
  private readonly catchingUp = new Set<string>();
  private describe: (err: unknown) => string = (e) => String(e);

  constructor(private readonly d: Deps) {}

  /** store.ts's words for errors (set by Chat: avoids an import cycle). */
  setDescribe(f: (err: unknown) => string): void {
    this.describe = f;
  }

  sorted(): Room[] {
    return [...this.list.values()].sort((a, b) => roomTitle(a, a.room).localeCompare(roomTitle(b, b.room)) || a.room.localeCompare(b.room));
  }

  isModerator(room: string): boolean {
    const r = this.list.get(room);
    return !!r && !r.host && (r.role === 'owner' || r.role === 'moderator');
  }

  /** May we make invites? Moderators; in public rooms, any member (of a room hosted here). */
  canInvite(room: string): boolean {
    const r = this.list.get(room);
    return !!r && !r.host && (r.role !== 'member' || r.visibility === 'public');
  }

  async loadList(): Promise<void> {
    try {
      const r = await this.d.session.request<{ rooms: Room[] }>('GET', '/me/rooms');
      const next = new Map<string, Room>();
      for (const x of r.rooms) next.set(x.room, x);
      // Rooms we left while away: their open views say so.
      for (const room of this.list.keys()) {
        const v = this.views.get(room);
        if (!next.has(room) && v && !v.gone) this.views.set(room, { ...v, gone: 'removed' });
      }
      this.list = next;
      this.listLoaded = true;
      this.listError = null;
    } catch (err) {
      this.listError = this.describe(err);
    }
    this.d.emit();
  }

  // ---- the open room ----

  select(room: string | null): void {
    if (this.selected === room) return;
    this.selected = room;
    if (room) {
      this.unread.delete(room);
      const v = this.views.get(room);
      if (!v || (!v.loaded && v.error) || v.gone) void this.loadView(room);
    }
    this.d.emit();
  }

  private fresh(room: string): RoomView {
    return { room, loaded: false, error: null, items: [], seen: new Set(), lastSeq: 0, members: null, membersError: null, gone: null };
  }

  private async loadView(room: string): Promise<void> {
    const v: RoomView = this.fresh(room);
    this.views.set(room, v);
    this.d.emit();
    try {
      await this.fetchAfter(room, 0);
      this.set(room, { loaded: true });
    } catch (err) {
      this.set(room, { error: this.describe(err) });
    }
    // Rooms hosted elsewhere: the member list is the host's (not proxied by our provider).
    if (this.list.has(room) && !this.list.get(room)!.host) void this.loadMembers(room);
  }

  private set(room: string, patch: Partial<RoomView>): void {
    const v = this.views.get(room);
    if (v) this.views.set(room, { ...v, ...patch });
    this.d.emit();
  }

  /** Messages after `after`, page by page, into the view. */
  private async fetchAfter(room: string, after: number): Promise<void> {
    for (let from = after; ; ) {
      const r = await this.d.session.request<{ messages: RoomMessage[] }>('GET', `${roomPath(room)}/messages?limit=${PAGE}${from > 0 ? `&after=${from}` : ''}`);
      for (const m of r.messages) this.apply(m);
      if (r.messages.length < PAGE) return;
      from = r.messages[r.messages.length - 1]!.seq;
    }
  }

  /** After a reconnection: what the frames did not bring (they are not replayed). */
  async catchUp(): Promise<void> {
    await this.loadList();
    for (const v of this.views.values()) {
      if (!v.loaded || v.gone || !this.list.has(v.room) || this.catchingUp.has(v.room)) continue;
      this.catchingUp.add(v.room);
      try {
        await this.fetchAfter(v.room, this.views.get(v.room)?.lastSeq ?? v.lastSeq);
      } catch {
        /* the next reconnection tries again */
      } finally {
        this.catchingUp.delete(v.room);
      }
      if (this.views.get(v.room)?.members) void this.loadMembers(v.room);
    }
  }

  /** Adds one message to its room's view (in seq order, once). */
  private apply(m: RoomMessage): void {
    const v = this.views.get(m.room);
    if (!v || v.seen.has(m.seq)) return;
    const seen = new Set(v.seen).add(m.seq);
    const item: RoomItem = { kind: 'message', key: `m${m.seq}`, m };
    const items = v.items.slice();
    let i = items.length;
    while (i > 0) {
      const prev = items[i - 1]!;
      if (prev.kind === 'message' && prev.m.seq < m.seq) break;
      if (prev.kind === 'event' && i === items.length) break; // live events stay where they happened
      i--;
    }
    items.splice(i, 0, item);
    this.views.set(m.room, { ...v, items, seen, lastSeq: Math.max(v.lastSeq, m.seq) });
  }

  async loadMembers(room: string): Promise<void> {
    try {
      const r = await this.d.session.request<{ members: RoomMember[] }>('GET', `${roomPath(room)}/members`);
      this.set(room, { members: r.members, membersError: null });
    } catch (err) {
      this.set(room, { membersError: this.describe(err) });
    }
  }

  // ---- live frames ----

  onFrame(f: Frame): void {
    switch (f.type) {
      case 'roomMessage': {
        const m = f.message;
        const r = this.list.get(m.room);
        if (r) this.list.set(m.room, { ...r, lastSeq: Math.max(r.lastSeq ?? 0, m.seq) });
        const v = this.views.get(m.room);
        const fresh = !v || !v.seen.has(m.seq);
        this.apply(m);
        if (fresh && m.from !== this.d.me && this.selected !== m.room) this.unread.set(m.room, (this.unread.get(m.room) ?? 0) + 1);
        break;
      }
      case 'roomMessageRemoved': {
        const v = this.views.get(f.room);
        if (v) this.views.set(f.room, { ...v, items: v.items.filter((x) => !(x.kind === 'message' && x.m.seq === f.seq)) });
        break;
      }
      case 'roomUpdated': {
        const r = this.list.get(f.room.room);
        if (r) this.list.set(r.room, { ...r, ...f.room, role: r.role });
        break;
      }
      case 'roomMembers': {
        const v = this.views.get(f.room);
        if (f.address === this.d.me) {
          if (f.change === 'joined') {
            void this.loadList();
            break;
          }
          this.list.delete(f.room);
          this.unread.delete(f.room);
          if (v) this.views.set(f.room, { ...v, gone: f.change, members: null });
          break;
        }
        const r = this.list.get(f.room);
        if (r && r.members !== undefined) this.list.set(f.room, { ...r, members: Math.max(0, r.members + (f.change === 'joined' ? 1 : -1)) });
        if (v) {
          const event: RoomItem = { kind: 'event', key: `e${v.items.length}-${f.address}-${f.change}`, address: f.address, change: f.change, at: new Date().toISOString() };
          let members = v.members;
          if (members && f.change === 'joined' && !members.some((x) => x.address === f.address)) members = [...members, { address: f.address, role: 'member' as const }].sort((a, b) => a.address.localeCompare(b.address));
          else if (members && f.change !== 'joined') members = members.filter((x) => x.address !== f.address);
          this.views.set(f.room, { ...v, items: [...v.items, event], members });
        }
        break;
      }
      default:
        return;
    }
    this.d.emit();
  }

  // ---- actions (they throw ApiError/NetworkError: the caller shows describe(err)) ----

  async create(p: RoomPolicy): Promise<string> {
    const body = { name: p.name.trim(), title: p.title.trim() || null, topic: p.topic.trim() || null, visibility: p.visibility, history: p.history };
    const r = await this.d.session.request<Omit<Room, 'role'>>('POST', '/rooms', { json: body });
    this.list.set(r.room, { ...r, role: 'owner' });
    this.d.emit();
    return r.room;
  }

  /** Joins by referral or by address; returns the room's address. */
  async join(what: { referral: string } | { room: string; code?: string }): Promise<string> {
    const r = await this.d.session.request<Partial<Room>>('POST', '/me/rooms', { json: what });
    const room = r.room ?? ('room' in what ? what.room : new URLSearchParams(what.referral).get('room'));
    await this.loadList();
    if (!room) throw new Error('the provider did not say which room');
    const v = this.views.get(room);
    if (v?.gone) this.views.delete(room);
    return room;
  }

  async send(room: string, text: string): Promise<void> {
    let m: RoomMessage;
    try {
      m = await this.d.call<RoomMessage>('POST', `${roomPath(room)}/messages`, { id: newMessageId(), message: text, messageFormatted: text, format: 'text/markdown' });
    } catch (err) {
      // Removed or banned without our being told (a host elsewhere does not say): our provider
      // has dropped the membership; the list reload shows the room as left.
      if (err instanceof ApiError && (err.code === 'not_a_member' || err.code === 'banned')) void this.loadList();
      throw err;
    }
    this.apply(m);
    this.d.emit();
  }

  async update(room: string, patch: { title?: string | null; topic?: string | null }): Promise<void> {
    const r = await this.d.session.request<Omit<Room, 'role'>>('PATCH', roomPath(room), { json: patch });
    const old = this.list.get(room);
    if (old) this.list.set(room, { ...old, ...r, role: old.role });
    this.d.emit();
  }

  async invite(room: string, multiUse: boolean): Promise<Invite> {
    const r = await this.d.session.request<{ code: string; referral: string; multiUse: boolean }>('POST', `${roomPath(room)}/invites`, { json: { multiUse } });
    return { code: r.code, multiUse: r.multiUse, link: referralLink(r.referral) };
  }

  async removeMessage(room: string, seq: number): Promise<void> {
    await this.d.session.request('DELETE', `${roomPath(room)}/messages/${seq}`);
    this.onFrame({ type: 'roomMessageRemoved', room, seq });
  }

  async removeMember(room: string, address: string): Promise<void> {
    await this.d.session.request('DELETE', `${roomPath(room)}/members/${encodeURIComponent(address)}`);
    void this.loadMembers(room);
  }

  /** Bans an address or a whole domain; returns who was removed. */
  async ban(room: string, subject: string): Promise<string[]> {
    const r = await this.d.session.request<{ removed: string[] }>('PUT', `${roomPath(room)}/bans/${encodeURIComponent(subject.trim())}`);
    void this.loadMembers(room);
    return r.removed;
  }

  async leave(room: string): Promise<void> {
    await this.d.session.request('DELETE', `${roomPath(room)}/members/${encodeURIComponent(this.d.me)}`);
    this.list.delete(room);
    this.unread.delete(room);
    this.views.delete(room);
    this.d.emit();
  }
}
