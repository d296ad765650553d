// The host side of rooms (docs/rooms.md): rooms hosted on this provider, their policy,
// membership state, the ordered log (seq per room), invite codes, bans, moderation.
// Membership is state here, never presence: members read the log from a seq onwards.
import type { Db } from '../storage/db.js';
import { storableText } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import type { RateLimiter } from '../auth/limiter.js';
import { randomId } from '../util/ids.js';
import { HttpError, badRequest, forbidden, notFound, tooMany } from '../http/errors.js';
import { domainOf } from '../protocol/address.js';
import { formatReferral, parseRoomAddress, parseRoomMessage, type HistoryPolicy, type RoomMessageInput, type RoomPolicyInput, type Visibility } from './protocol.js';
import type { RoomPeers } from './peers.js';
import type { RoomFanout } from './fanout.js';

export type Role = 'owner' | 'moderator' | 'member';

export interface RoomInfo {
  room: string;
  name: string;
  visibility: Visibility;
  history: HistoryPolicy;
  title: string | null;
  topic: string | null;
  members: number;
  lastSeq: number;
}

export interface RoomMessage {
  room: string;
  seq: number;
  id: string;
  from: string;
  sentAt: string;
  message: string;
  messageFormatted?: string;
  format?: string;
}

export interface RoomsDeps {
  db: Db;
  domain: string;
  clock: Clock;
  bus: EventBus;
  /** Posts per member per window (INTERTALK_ROOM_POST_RATE per minute). */
  postLimiter: RateLimiter;
}

const MAX_MEMBERS_LISTED = 1000;

/** The room message as signed (JWS payload): the later revision's fields, in this order. */
export function signedPayload(m: Omit<RoomMessage, 'seq'>): Record<string, unknown> {
  const o: Record<string, unknown> = { room: m.room, from: m.from, sentAt: m.sentAt, message: m.message };
  if (m.messageFormatted !== undefined) {
    o.messageFormatted = m.messageFormatted;
    o.format = m.format;
  }
  o.id = m.id;
  return o;
}

export class Rooms {
  private peers: RoomPeers | null = null;
  private fanout: RoomFanout | null = null;

  constructor(private readonly d: RoomsDeps) {}

  /** Members on other providers (src/rooms/fanout.ts, peers.ts): set once the provider federates. */
  federate(peers: RoomPeers, fanout: RoomFanout): void {
    this.peers = peers;
    this.fanout = fanout;
  }

  /** Starts delivering to member providers (after the provider listens). */
  start(): void {
    this.fanout?.start();
  }

  async stop(): Promise<void> {
    await this.fanout?.stop();
  }

  /**
   * POST /rooms/{room}/messages from a member's provider: the body is the signed room message
   * (JWS) of one of its users. The signature must verify with a key of the sender's domain, the
   * message name this room, the sender be a member; then it is stored like a local post (rate
   * limit, room order, the same id again is a replay) and relayed as it is.
   */
  async postSigned(name: string, jws: unknown): Promise<{ message: RoomMessage; replayed: boolean; signer: string }> {
    if (!this.peers) throw new HttpError(403, 'federation_disabled', 'this provider does not federate');
    await this.roomRow(name);
    const v = await this.peers.verifyJws(jws);
    if (!v.ok) throw new HttpError(v.status, v.error, v.message, v.retryAfterSeconds ? { 'retry-after': String(Math.ceil(v.retryAfterSeconds)) } : undefined);
    const p = v.payload;
    if (domainOf(v.from) === this.d.domain) throw forbidden('a peer cannot post on behalf of our own users', 'sender_is_local');
    if (parseRoomAddress(p.room)?.full !== this.address(name)) throw badRequest(`room: this is ${this.address(name)}`, 'invalid_room');
    if (typeof p.id !== 'string' || typeof p.sentAt !== 'string') throw badRequest('a signed room message needs "id" and "sentAt"', 'invalid_message');
    const m = parseRoomMessage(p, this.d.clock.now(), 5 * 60_000);
    if (!m.ok) throw badRequest(m.message, 'invalid_message');
    const res = await this.post(name, v.from, m.value, jws as string);
    return { ...res, signer: domainOf(v.from) };
  }

  address(name: string): string {
    return `${name}#${this.d.domain}`;
  }

  private info(r: { name: string; visibility: string; history: string; title: string | null; topic: string | null; last_seq: number }, members: number): RoomInfo {
    return { room: this.address(r.name), name: r.name, visibility: r.visibility as Visibility, history: r.history as HistoryPolicy, title: r.title, topic: r.topic, members, lastSeq: Number(r.last_seq) };
  }

  private async roomRow(name: string) {
    const r = await this.d.db.selectFrom('rooms').selectAll().where('name', '=', name).executeTakeFirst();
    if (!r) throw notFound(`no room ${this.address(name)}`, 'no_such_room');
    return r;
  }

  private async memberCount(name: string): Promise<number> {
    const c = await this.d.db.selectFrom('room_members').select((eb) => eb.fn.countAll<number>().as('n')).where('room', '=', name).executeTakeFirst();
    return Number(c?.n ?? 0);
  }

  async member(name: string, address: string): Promise<{ role: Role; joined_seq: number } | null> {
    const m = await this.d.db.selectFrom('room_members').select(['role', 'joined_seq']).where('room', '=', name).where('address', '=', address).executeTakeFirst();
    return m ? { role: m.role as Role, joined_seq: Number(m.joined_seq) } : null;
  }

  private async requireMember(name: string, address: string) {
    await this.roomRow(name);
    const m = await this.member(name, address);
    if (!m) throw forbidden(`${address} is not a member of ${this.address(name)}`, 'not_a_member');
    return m;
  }

  private async requireModerator(name: string, address: string) {
    const m = await this.requireMember(name, address);
    if (m.role === 'member') throw forbidden(`${address} is not a moderator of ${this.address(name)}`, 'not_a_moderator');
    return m;
  }

  async create(owner: string, p: RoomPolicyInput): Promise<RoomInfo> {
    const now = this.d.clock.now();
    try {
      await this.d.db.transaction().execute(async (tx) => {
        await tx.insertInto('rooms').values({ name: p.name, visibility: p.visibility, history: p.history, title: p.title === null ? null : storableText(p.title), topic: p.topic === null ? null : storableText(p.topic), created_by: owner, created_at: now, last_seq: 0 }).execute();
        await tx.insertInto('room_members').values({ room: p.name, address: owner, role: 'owner', joined_at: now, joined_seq: 0 }).execute();
      });
    } catch (err) {
      if (await this.d.db.selectFrom('rooms').select('name').where('name', '=', p.name).executeTakeFirst()) throw new HttpError(409, 'room_exists', `the room ${this.address(p.name)} exists already`);
      throw err;
    }
    return this.get(p.name, owner);
  }

  /** A room's info: for anyone when public, else for members. */
  async get(name: string, viewer: string | null): Promise<RoomInfo> {
    const r = await this.roomRow(name);
    if (r.visibility !== 'public' && !(viewer && (await this.member(name, viewer)))) throw notFound(`no room ${this.address(name)}`, 'no_such_room');
    return this.info(r, await this.memberCount(name));
  }

  async updatePolicy(name: string, by: string, p: Partial<Omit<RoomPolicyInput, 'name'>>): Promise<RoomInfo> {
    await this.requireModerator(name, by);
    if (Object.keys(p).length > 0) {
      await this.d.db
        .updateTable('rooms')
        .set({ ...p, ...(p.title ? { title: storableText(p.title) } : {}), ...(p.topic ? { topic: storableText(p.topic) } : {}) })
        .where('name', '=', name)
        .execute();
    }
    const info = await this.get(name, by);
    // (ours) Local members' clients show the new title/topic/policy live.
    if (Object.keys(p).length > 0) this.d.bus.publish({ type: 'room', recipients: await this.localMembers(name), frame: JSON.stringify({ type: 'roomUpdated', room: info }) });
    return info;
  }

  /** GET /rooms: public rooms, by name. */
  async listPublic(limit = 200): Promise<RoomInfo[]> {
    const rows = await this.d.db.selectFrom('rooms').selectAll().where('visibility', '=', 'public').orderBy('name').limit(limit).execute();
    const out: RoomInfo[] = [];
    for (const r of rows) out.push(this.info(r, await this.memberCount(r.name)));
    return out;
  }

  /** Rooms hosted here that `address` is a member of. */
  async joinedBy(address: string): Promise<Array<RoomInfo & { role: Role }>> {
    const rows = await this.d.db.selectFrom('room_members').innerJoin('rooms', 'rooms.name', 'room_members.room').selectAll('rooms').select('room_members.role').where('room_members.address', '=', address).orderBy('rooms.name').execute();
    const out: Array<RoomInfo & { role: Role }> = [];
    for (const r of rows) out.push({ ...this.info(r, await this.memberCount(r.name)), role: r.role as Role });
    return out;
  }

  async members(name: string, viewer: string): Promise<Array<{ address: string; role: Role }>> {
    await this.requireMember(name, viewer);
    const rows = await this.d.db.selectFrom('room_members').select(['address', 'role']).where('room', '=', name).orderBy('address').limit(MAX_MEMBERS_LISTED).execute();
    return rows.map((r) => ({ address: r.address, role: r.role as Role }));
  }

  private async banned(tx: Db, name: string, address: string): Promise<boolean> {
    const hit = await tx.selectFrom('room_bans').select('subject').where('room', '=', name).where('subject', 'in', [address, domainOf(address)]).executeTakeFirst();
    return !!hit;
  }

  /**
   * PUT /rooms/{room}/members/{user}: joins `address`. Public rooms take anyone not banned;
   * invite-only rooms need a valid code (a single-use code is used up). Joining again is a no-op.
   */
  async join(name: string, address: string, code: string | null): Promise<{ info: RoomInfo; joined: boolean }> {
    const now = this.d.clock.now();
    const joined = await this.d.db.transaction().execute(async (tx) => {
      const r = await tx.selectFrom('rooms').selectAll().where('name', '=', name).executeTakeFirst();
      if (!r) throw notFound(`no room ${this.address(name)}`, 'no_such_room');
      if (await this.banned(tx as unknown as Db, name, address)) throw forbidden(`${address} is banned from ${this.address(name)}`, 'banned');
      const existing = await tx.selectFrom('room_members').select('role').where('room', '=', name).where('address', '=', address).executeTakeFirst();
      if (existing) return false;
      if (code !== null || r.visibility !== 'public') {
        if (code === null) throw forbidden(`${this.address(name)} is invite-only: join with an invite code`, 'invite_required');
        const inv = await tx.selectFrom('room_invites').selectAll().where('code', '=', code).where('room', '=', name).executeTakeFirst();
        if (!inv || (inv.uses_left !== null && Number(inv.uses_left) <= 0)) throw forbidden('the invite code is unknown, used up or revoked', 'invalid_invite');
        if (inv.uses_left !== null) {
          // Single-use: only one concurrent join may take it.
          const res = await tx.updateTable('room_invites').set({ uses_left: Number(inv.uses_left) - 1 }).where('code', '=', code).where('uses_left', '=', inv.uses_left).executeTakeFirst();
          if (Number(res.numUpdatedRows) !== 1) throw forbidden('the invite code is unknown, used up or revoked', 'invalid_invite');
        }
      }
      await tx.insertInto('room_members').values({ room: name, address, role: 'member', joined_at: now, joined_seq: Number(r.last_seq) }).execute();
      // A member on another provider: that provider gets the room's messages from here on.
      const domain = domainOf(address);
      if (domain !== this.d.domain) {
        await tx.insertInto('room_deliveries').values({ room: name, domain, last_seq: Number(r.last_seq), failures: 0, next_attempt_at: 0, last_error: null, updated_at: now, lease_owner: null, lease_until: null }).onConflict((oc) => oc.columns(['room', 'domain']).doNothing()).execute();
      }
      return true;
    });
    if (joined) await this.notifyMembers(name, address, 'joined');
    return { info: await this.get(name, address), joined };
  }

  /** DELETE /rooms/{room}/members/{user}: the user leaves, or a moderator removes them. */
  async leave(name: string, address: string, by: string): Promise<boolean> {
    if (by !== address) {
      const mod = await this.requireModerator(name, by);
      const target = await this.member(name, address);
      if (target?.role === 'owner' && mod.role !== 'owner') throw forbidden('moderators cannot remove the owner', 'not_allowed');
    } else {
      await this.roomRow(name);
    }
    const res = await this.d.db.deleteFrom('room_members').where('room', '=', name).where('address', '=', address).executeTakeFirst();
    const left = Number(res.numDeletedRows) > 0;
    if (left) await this.dropIdleCursors(name);
    if (left) await this.notifyMembers(name, address, by === address ? 'left' : 'removed', [address]);
    return left;
  }

  async createInvite(name: string, by: string, multiUse: boolean): Promise<{ code: string; room: string; multiUse: boolean; referral: string }> {
    const r = await this.roomRow(name);
    const m = await this.requireMember(name, by);
    if (r.visibility !== 'public' && m.role === 'member') throw forbidden('in an invite-only room, moderators create the invites', 'not_a_moderator');
    const code = randomId(18);
    await this.d.db.insertInto('room_invites').values({ code, room: name, uses_left: multiUse ? null : 1, created_by: by, created_at: this.d.clock.now() }).execute();
    return { code, room: this.address(name), multiUse, referral: formatReferral(this.address(name), code) };
  }

  async revokeInvite(name: string, by: string, code: string): Promise<boolean> {
    await this.requireModerator(name, by);
    const res = await this.d.db.deleteFrom('room_invites').where('room', '=', name).where('code', '=', code).executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }

  /** Appends a message from a member to the room's log; an id already used by that sender is a replay. */
  async post(name: string, from: string, m: RoomMessageInput, signed?: string): Promise<{ message: RoomMessage; replayed: boolean }> {
    await this.requireMember(name, from);
    const id = m.id ?? randomId(16);
    const prior = await this.byId(name, from, id);
    if (prior) return { message: prior, replayed: true };
    const hit = await this.d.postLimiter.hit(`${name}\n${from}`);
    if (!hit.allowed) throw tooMany(`at most so many messages per minute in ${this.address(name)}`, hit.retryAfterMs / 1000);
    const now = this.d.clock.now();
    const sentAt = m.sentAt ?? new Date(now).toISOString();
    const body: RoomMessage = { room: this.address(name), seq: 0, id, from, sentAt, message: storableText(m.message) };
    if (m.messageFormatted !== undefined) {
      body.messageFormatted = storableText(m.messageFormatted);
      body.format = m.format!;
    }
    // Relayed as signed: a peer's JWS as it came, ours signed here (null when not federating).
    const jws = signed ?? (this.peers ? await this.peers.signJws(signedPayload(body)) : null);
    let seq: number;
    try {
      seq = await this.d.db.transaction().execute(async (tx) => {
        const row = await tx.updateTable('rooms').set((eb) => ({ last_seq: eb('last_seq', '+', 1) })).where('name', '=', name).returning('last_seq').executeTakeFirstOrThrow();
        const s = Number(row.last_seq);
        const { seq: _s, ...stored } = body;
        await tx.insertInto('room_messages').values({ room: name, seq: s, id, sender: from, sent_at: sentAt, sent_ms: Date.parse(sentAt), body: JSON.stringify(stored), removed_at: null, created_at: now, jws }).execute();
        return s;
      });
    } catch (err) {
      const again = await this.byId(name, from, id);
      if (again) return { message: again, replayed: true };
      throw err;
    }
    const message = { ...body, seq };
    const recipients = await this.localMembers(name);
    this.d.bus.publish({ type: 'room', recipients, frame: JSON.stringify({ type: 'roomMessage', message }) });
    if (this.fanout) void this.fanout.wakeRoom(name).catch(() => undefined);
    return { message, replayed: false };
  }

  /** Members on this provider (who get live frames here; remote members through their providers). */
  async localMembers(name: string): Promise<string[]> {
    const rows = await this.d.db.selectFrom('room_members').select('address').where('room', '=', name).execute();
    return rows.map((r) => r.address).filter((a) => domainOf(a) === this.d.domain);
  }

  /** Cursors of providers with no member left in the room: nothing more goes there. */
  private async dropIdleCursors(name: string): Promise<void> {
    const domains = new Set((await this.d.db.selectFrom('room_members').select('address').where('room', '=', name).execute()).map((m) => domainOf(m.address)));
    const cursors = await this.d.db.selectFrom('room_deliveries').select('domain').where('room', '=', name).execute();
    const idle = cursors.map((c) => c.domain).filter((d) => !domains.has(d));
    if (idle.length > 0) await this.d.db.deleteFrom('room_deliveries').where('room', '=', name).where('domain', 'in', idle).execute();
  }

  private async notifyMembers(name: string, address: string, change: 'joined' | 'left' | 'removed' | 'banned', also: string[] = []): Promise<void> {
    const recipients = [...new Set([...(await this.localMembers(name)), ...also.filter((a) => domainOf(a) === this.d.domain)])];
    this.d.bus.publish({ type: 'room', recipients, frame: JSON.stringify({ type: 'roomMembers', room: this.address(name), address, change }) });
  }

  private toMessage(name: string, r: { seq: number; body: string; removed_at: number | null }): RoomMessage {
    const b = JSON.parse(r.body) as Omit<RoomMessage, 'seq'>;
    return { ...b, room: this.address(name), seq: Number(r.seq) };
  }

  private async byId(name: string, from: string, id: string): Promise<RoomMessage | null> {
    const r = await this.d.db.selectFrom('room_messages').select(['seq', 'body', 'removed_at']).where('room', '=', name).where('sender', '=', from).where('id', '=', id).executeTakeFirst();
    return r ? this.toMessage(name, r) : null;
  }

  /**
   * GET /rooms/{room}/messages?since&limit: the room's log in room order, for a member: from the
   * start or from when they joined (the room's history policy); `since` (epoch ms) keeps messages
   * sent at or after it; `after` (a seq) pages on. Removed messages are left out.
   */
  async history(name: string, viewer: string, q: { since?: number; after?: number; limit: number }): Promise<RoomMessage[]> {
    const r = await this.roomRow(name);
    const m = await this.requireMember(name, viewer);
    let query = this.d.db.selectFrom('room_messages').select(['seq', 'body', 'removed_at']).where('room', '=', name).where('removed_at', 'is', null);
    if (r.history === 'join') query = query.where('seq', '>', m.joined_seq);
    if (q.since !== undefined) query = query.where('sent_ms', '>=', q.since);
    if (q.after !== undefined) query = query.where('seq', '>', q.after);
    const rows = await query.orderBy('seq').limit(q.limit).execute();
    return rows.map((row) => this.toMessage(name, row));
  }

  /**
   * GET /rooms/{room}/messages from a member's provider (the revision): the same messages as
   * history(), as the JSON array of their signed forms (JWS), in room order.
   */
  async signedHistory(name: string, viewer: string, q: { since?: number; after?: number; limit: number }): Promise<string[]> {
    const seqs = (await this.history(name, viewer, q)).map((m) => m.seq);
    if (seqs.length === 0) return [];
    const rows = await this.d.db.selectFrom('room_messages').select(['seq', 'jws']).where('room', '=', name).where('seq', 'in', seqs).orderBy('seq').execute();
    return rows.flatMap((r) => (r.jws ? [r.jws] : []));
  }

  /** A moderator removes a message (its text is scrubbed from the log). */
  async removeMessage(name: string, by: string, seq: number): Promise<boolean> {
    await this.requireModerator(name, by);
    const res = await this.d.db.updateTable('room_messages').set({ removed_at: this.d.clock.now(), body: JSON.stringify({ removed: true }), jws: null }).where('room', '=', name).where('seq', '=', seq).where('removed_at', 'is', null).executeTakeFirst();
    const removed = Number(res.numUpdatedRows) > 0;
    // (ours) Local members' clients drop it from what they show.
    if (removed) this.d.bus.publish({ type: 'room', recipients: await this.localMembers(name), frame: JSON.stringify({ type: 'roomMessageRemoved', room: this.address(name), seq }) });
    return removed;
  }

  /** A moderator bans an address or a whole domain: banned members are removed at once. */
  async ban(name: string, by: string, subject: string): Promise<{ removed: string[] }> {
    await this.requireModerator(name, by);
    const owner = (await this.roomRow(name)).created_by;
    if (subject === owner || (!subject.includes('@') && domainOf(owner) === subject)) throw badRequest('the owner cannot be banned');
    if (subject === by || (!subject.includes('@') && domainOf(by) === subject)) throw badRequest('a moderator cannot ban themselves');
    const removed = await this.d.db.transaction().execute(async (tx) => {
      await tx.insertInto('room_bans').values({ room: name, subject, created_by: by, created_at: this.d.clock.now() }).onConflict((oc) => oc.doNothing()).execute();
      const all = await tx.selectFrom('room_members').select('address').where('room', '=', name).execute();
      const hit = all.map((a) => a.address).filter((a) => a === subject || domainOf(a) === subject);
      if (hit.length > 0) await tx.deleteFrom('room_members').where('room', '=', name).where('address', 'in', hit).execute();
      return hit;
    });
    if (removed.length > 0) await this.dropIdleCursors(name);
    for (const a of removed) await this.notifyMembers(name, a, 'banned', [a]);
    return { removed };
  }

  async unban(name: string, by: string, subject: string): Promise<boolean> {
    await this.requireModerator(name, by);
    const res = await this.d.db.deleteFrom('room_bans').where('room', '=', name).where('subject', '=', subject).executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }

  async setRole(name: string, by: string, address: string, role: 'moderator' | 'member'): Promise<void> {
    const mod = await this.requireModerator(name, by);
    if (mod.role !== 'owner') throw forbidden('only the owner appoints moderators', 'not_allowed');
    const res = await this.d.db.updateTable('room_members').set({ role }).where('room', '=', name).where('address', '=', address).where('role', '!=', 'owner').executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) throw notFound(`${address} is not a member (other than the owner) of ${this.address(name)}`, 'not_a_member');
  }
}
