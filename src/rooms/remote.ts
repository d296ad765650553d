// Member side of rooms hosted elsewhere (docs/rooms.md, "Federation"): our users join and leave
// a room `name#host` through us (we call the host's PUT/DELETE /rooms/{room}/members/{user}
// with a token on their behalf), post through us (we sign the room message and POST the JWS to
// the host), and the host's POST /roomMessages lands here: checked (the host's provider token,
// each message's signature by its sender's domain), kept in a local mirror by (room, seq) —
// once, however often the host re-sends — and pushed to our members' live sockets.
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import { storableText } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { EventBus } from '../bus/bus.js';
import { randomId } from '../util/ids.js';
import { Periodic } from '../util/drains.js';
import { PeerNetworkError } from '../federation/net.js';
import { HttpError } from '../http/errors.js';
import type { IssuerGate } from '../federation/verify.js';
import { domainOf } from '../protocol/address.js';
import { parseRoomAddress, parseRoomMessage, type RoomMessageInput } from './protocol.js';
import { signedPayload, type RoomMessage } from './service.js';
import type { RoomPeers } from './peers.js';

export interface PeerAnswer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

type RoomAddress = { name: string; domain: string; full: string };

const err = (status: number, error: string, message: string, headers?: Record<string, string>): PeerAnswer => ({ status, body: { error, message }, ...(headers ? { headers } : {}) });

/** At most this many messages in one POST /roomMessages. */
export const MAX_ROOM_MESSAGES_IN = 500;
/** At most this many older messages are fetched into the mirror when a member joins a history-"start" room. */
export const MAX_BACKFILL = 10_000;
/** Instances' clocks differ a little: a reconcile drops only memberships older than its question by this much. */
const RECONCILE_MARGIN_MS = 5_000;
const MAX_TO = 10_000;

export interface RemoteRoomsOptions {
  db: Db;
  domain: string;
  clock: Clock;
  bus: EventBus;
  logger: Logger;
  peers: RoomPeers;
  timeoutMs: number;
  skewMs: number;
  /** Per-peer rate limit on verified requests (as inbound /messages). */
  gate?: IssuerGate;
  /** A peer proved who it is: deliveries to it need not wait for their back-off. */
  onPeerSeen?: (domain: string) => void;
  /** INTERTALK_ROOM_RECONCILE: how often every room's host is asked who of ours are members. */
  reconcileMs: number;
}

export class RemoteRooms {
  private readonly reconciler: Periodic;

  constructor(private readonly o: RemoteRoomsOptions) {
    this.reconciler = new Periodic(o.reconcileMs, () => this.reconcileAll().catch((e) => this.o.logger.warn({ err: e }, 'room membership reconcile failed')));
  }

  /** The periodic reconcile (not at once: a restart does not ask every host at the same moment). */
  start(): void {
    this.reconciler.start(false);
  }

  stop(): void {
    this.reconciler.stop();
  }

  /** One request to the host on behalf of `user`; the host's answer, or 502/504 when it cannot be reached. */
  private async call(host: string, method: 'PUT' | 'DELETE' | 'POST', path: string, user: string | null, body: string, contentType = 'application/json'): Promise<PeerAnswer> {
    let res;
    try {
      const base = await this.o.peers.baseUrl(host);
      const headers: Record<string, string> = { 'content-type': contentType };
      // A signed room message carries its own proof (the revision: no Authorization needed).
      if (user !== null) headers.authorization = `Bearer ${await this.o.peers.signUser(host, user)}`;
      res = await this.o.peers.request(`${base}${path}`, { method, headers, body, timeoutMs: this.o.timeoutMs, maxResponseBytes: 256 * 1024 });
    } catch (e) {
      this.o.peers.invalidate(host);
      const text = e instanceof Error ? e.message : String(e);
      if (e instanceof PeerNetworkError && e.code === 'timeout') return err(504, 'host_timeout', `${host} did not answer in time`);
      return err(502, 'host_unreachable', `cannot reach ${host}: ${text.slice(0, 300)}`);
    }
    let json: unknown;
    try {
      json = res.body.length ? JSON.parse(res.body.toString('utf8')) : null;
    } catch {
      json = null;
    }
    if (res.status >= 200 && res.status < 300) return { status: res.status, body: json };
    const j = (json ?? {}) as { error?: unknown; message?: unknown };
    const code = typeof j.error === 'string' ? j.error.slice(0, 64) : 'host_refused';
    const text = typeof j.message === 'string' ? j.message.slice(0, 500) : `${host} answered ${res.status}`;
    const retry = res.headers['retry-after'];
    const headers = typeof retry === 'string' && /^\d{1,6}$/.test(retry) ? { 'retry-after': retry } : undefined;
    // The host's refusals (4xx) are passed on; its failures are ours to report as a bad gateway.
    if (res.status >= 400 && res.status < 500) return err(res.status, code, text, headers);
    return err(502, 'host_error', `${host} answered ${res.status}: ${text}`, headers);
  }

  private path(room: RoomAddress, rest: string): string {
    return `/rooms/${encodeURIComponent(room.name)}${rest}`;
  }

  /** Joins `user` to a room hosted elsewhere (the code, if any, goes to the host as is). */
  async join(user: string, room: RoomAddress, code: string | null): Promise<PeerAnswer> {
    // The membership is recorded before the host is asked: its first delivery may come before
    // its answer does, and must find the member here. Undone if the host refuses.
    const fresh = await this.o.db
      .insertInto('remote_room_members')
      .values({ room: room.full, address: user, joined_seq: Number.MAX_SAFE_INTEGER, joined_at: this.o.clock.now() })
      .onConflict((oc) => oc.columns(['room', 'address']).doNothing())
      .returning('address')
      .executeTakeFirst();
    let res: PeerAnswer;
    try {
      res = await this.call(room.domain, 'PUT', this.path(room, `/members/${encodeURIComponent(user)}`), user, JSON.stringify(code ? { code } : {}));
    } catch (e) {
      if (fresh) await this.forget(room.full, user);
      throw e;
    }
    if (res.status === 200 || res.status === 201) {
      const info = (res.body ?? {}) as { lastSeq?: unknown; joinedSeq?: unknown; history?: unknown };
      const seqOf = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
      const lastSeq = seqOf(info.joinedSeq) ?? seqOf(info.lastSeq) ?? 0;
      // History from the mirror: everything it holds (history "start"), or after the join.
      // joined_at: when the host said yes (a reconcile asked before that leaves it alone).
      await this.o.db
        .updateTable('remote_room_members')
        .set(fresh ? { joined_seq: info.history === 'start' ? 0 : lastSeq, joined_at: this.o.clock.now() } : { joined_at: this.o.clock.now() })
        .where('room', '=', room.full)
        .where('address', '=', user)
        .execute();
      // History from the start, and the mirror lacks its beginning: fetch it from the host first.
      if (fresh && info.history === 'start' && lastSeq > 0) {
        const held = await this.o.db.selectFrom('remote_room_messages').select((eb) => eb.fn.countAll<number>().as('n')).where('room', '=', room.full).where('seq', '<=', lastSeq).executeTakeFirst();
        if (Number(held?.n ?? 0) < lastSeq) await this.backfill(user, room, lastSeq);
      }
      return { status: res.status, body: { ...(typeof res.body === 'object' && res.body ? res.body : {}), room: room.full } };
    }
    if (fresh || (res.status === 403 && (res.body as { error?: unknown } | null)?.error === 'banned')) await this.forget(room.full, user);
    return res;
  }

  /** `user` leaves a room hosted elsewhere: the host is told, and our mirror forgets the membership. */
  async leave(user: string, room: RoomAddress): Promise<PeerAnswer> {
    const res = await this.call(room.domain, 'DELETE', this.path(room, `/members/${encodeURIComponent(user)}`), user, '');
    if (res.status === 204 || res.status === 404 || res.status === 403) {
      const gone = await this.o.db.deleteFrom('remote_room_members').where('room', '=', room.full).where('address', '=', user).executeTakeFirst();
      if (res.status === 204 || Number(gone.numDeletedRows) > 0) return { status: 204, body: null };
    }
    return res;
  }

  /** Signs `user`'s message for the room and posts it to the host; the host's answer (201: the stored message, with its seq). */
  async post(user: string, room: RoomAddress, m: RoomMessageInput): Promise<PeerAnswer> {
    const body: Omit<RoomMessage, 'seq'> = { room: room.full, id: m.id ?? randomId(16), from: user, sentAt: m.sentAt ?? new Date(this.o.clock.now()).toISOString(), message: m.message };
    if (m.messageFormatted !== undefined) {
      body.messageFormatted = m.messageFormatted;
      body.format = m.format!;
    }
    const jws = await this.o.peers.signJws(signedPayload(body));
    const res = await this.call(room.domain, 'POST', this.path(room, '/messages'), null, jws, 'application/jose');
    // The host removed or banned them meanwhile (it does not tell us): forget the membership.
    if (res.status === 403 || res.status === 404) {
      const code = (res.body as { error?: unknown } | null)?.error;
      if (code === 'not_a_member' || code === 'no_such_room') await this.forget(room.full, user);
    }
    return res;
  }

  async membership(room: string, user: string): Promise<{ joined_seq: number } | null> {
    const r = await this.o.db.selectFrom('remote_room_members').select('joined_seq').where('room', '=', room).where('address', '=', user).executeTakeFirst();
    return r ? { joined_seq: Number(r.joined_seq) } : null;
  }

  /** GET /rooms/{name#host}/messages: from the mirror, what the host delivered here. */
  async history(user: string, room: RoomAddress, q: { since?: number; after?: number; limit: number }): Promise<RoomMessage[]> {
    const m = await this.membership(room.full, user);
    if (!m) throw new HttpError(403, 'not_a_member', `${user} is not a member of ${room.full}`);
    let query = this.o.db.selectFrom('remote_room_messages').select(['seq', 'body']).where('room', '=', room.full).where('seq', '>', m.joined_seq);
    if (q.since !== undefined) query = query.where('sent_ms', '>=', q.since);
    if (q.after !== undefined) query = query.where('seq', '>', q.after);
    const rows = await query.orderBy('seq').limit(q.limit).execute();
    return rows.map((r) => ({ ...(JSON.parse(r.body) as Omit<RoomMessage, 'seq'>), seq: Number(r.seq) }));
  }

  /** Rooms hosted elsewhere that `user` is a member of. */
  async joinedBy(user: string): Promise<Array<{ room: string; name: string; host: string; role: 'member' }>> {
    const rows = await this.o.db.selectFrom('remote_room_members').select('room').where('address', '=', user).orderBy('room').execute();
    return rows.map((r) => ({ room: r.room, name: r.room.slice(0, r.room.indexOf('#')), host: r.room.slice(r.room.indexOf('#') + 1), role: 'member' as const }));
  }

  /**
   * POST /roomMessages from a room's host: `{"room", "seq", "to", "message": JWS}` or
   * `{"room", "messages": [{"seq", "to", "message"}]}` under the host's provider token bound to the
   * body. Every message is checked before any is stored: one bad message refuses the request.
   */
  async receive(input: { authorization: string | undefined; rawBody: Buffer | string; body: unknown }): Promise<PeerAnswer> {
    const auth = await this.o.peers.verifyProvider(input.authorization, input.rawBody, this.o.gate);
    if (!auth.ok) return err(auth.status, auth.error, auth.message, auth.retryAfterSeconds ? { 'retry-after': String(Math.ceil(auth.retryAfterSeconds)) } : undefined);
    const b = input.body as Record<string, unknown> | null;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) return err(400, 'invalid_request', 'the body must be {"room", "seq", "to", "message"} or {"room", "messages": [...]}');
    const room = parseRoomAddress(b.room);
    if (!room) return err(400, 'invalid_room', 'room: name#domain');
    if (room.domain !== auth.iss) return err(403, 'not_the_host', `${auth.iss} does not host ${room.full}`);
    const raw = Array.isArray(b.messages) ? (b.messages as unknown[]) : b.message !== undefined ? [{ seq: b.seq, to: b.to, message: b.message }] : null;
    if (!raw || raw.length === 0 || raw.length > MAX_ROOM_MESSAGES_IN) return err(400, 'invalid_request', `1 to ${MAX_ROOM_MESSAGES_IN} messages`);
    const members = new Set((await this.o.db.selectFrom('remote_room_members').select('address').where('room', '=', room.full).execute()).map((r) => r.address));
    if (members.size === 0) return err(403, 'not_a_member', `nobody at ${this.o.domain} is a member of ${room.full}`);

    const now = this.o.clock.now();
    const checked: Array<{ seq: number; recipients: string[]; message: RoomMessage; jws: string }> = [];
    const seen = new Set<number>();
    for (const item of raw) {
      const i = item as Record<string, unknown> | null;
      if (typeof i !== 'object' || i === null) return err(400, 'invalid_request', 'each message: {"seq", "to", "message"}');
      if (typeof i.seq !== 'number' || !Number.isSafeInteger(i.seq) || i.seq < 1 || seen.has(i.seq)) return err(400, 'invalid_request', 'seq: the room order, a positive integer (once per request)');
      seen.add(i.seq);
      if (!Array.isArray(i.to) || i.to.length > MAX_TO || !i.to.every((a) => typeof a === 'string')) return err(400, 'invalid_request', 'to: the members at this provider');
      const c = await this.checkSigned(room.full, i.seq, i.message, now);
      if (!c.ok) return c.answer;
      const message = c.message;
      const recipients = [...new Set((i.to as string[]).map((a) => a.toLowerCase()))].filter((a) => domainOf(a) === this.o.domain && members.has(a));
      checked.push({ seq: i.seq, recipients, message, jws: i.message as string });
    }
    this.o.onPeerSeen?.(auth.iss);

    const results: Array<{ seq: number; status: 'accepted' | 'duplicate' | 'ignored' }> = [];
    for (const c of checked) {
      if (c.recipients.length === 0) {
        results.push({ seq: c.seq, status: 'ignored' });
        continue;
      }
      const fresh = await this.mirror(c.message, c.jws, now);
      if (fresh) this.o.bus.publish({ type: 'room', recipients: c.recipients, frame: JSON.stringify({ type: 'roomMessage', message: c.message }) });
      results.push({ seq: c.seq, status: fresh ? 'accepted' : 'duplicate' });
    }
    return { status: 200, body: { results } };
  }

  /** One signed room message from the host (delivered or backfilled), checked as the host checks posts. */
  private async checkSigned(room: string, seq: number, jws: unknown, now: number): Promise<{ ok: true; message: RoomMessage } | { ok: false; answer: PeerAnswer }> {
    const v = await this.o.peers.verifyJws(jws);
    if (!v.ok) return { ok: false, answer: err(v.status, v.error, `message ${seq}: ${v.message}`, v.retryAfterSeconds ? { 'retry-after': String(Math.ceil(v.retryAfterSeconds)) } : undefined) };
    const p = v.payload;
    if (parseRoomAddress(p.room)?.full !== room) return { ok: false, answer: err(400, 'invalid_room', `message ${seq}: signed for another room`) };
    if (typeof p.id !== 'string' || typeof p.sentAt !== 'string') return { ok: false, answer: err(400, 'invalid_message', `message ${seq}: a signed room message needs "id" and "sentAt"`) };
    // Backfilled history may be old: the sentAt window only bounds the future.
    const m = parseRoomMessage(p, now, this.o.skewMs);
    if (!m.ok) return { ok: false, answer: err(400, 'invalid_message', `message ${seq}: ${m.message}`) };
    const message: RoomMessage = { room, seq, id: p.id, from: v.from, sentAt: p.sentAt, message: storableText(m.value.message) };
    if (m.value.messageFormatted !== undefined) {
      message.messageFormatted = storableText(m.value.messageFormatted);
      message.format = m.value.format!;
    }
    return { ok: true, message };
  }

  /** Into the mirror by (room, seq), once: true when it is new here. */
  private async mirror(message: RoomMessage, jws: string, now: number): Promise<boolean> {
    const { seq: _s, ...stored } = message;
    const fresh = await this.o.db
      .insertInto('remote_room_messages')
      .values({ room: message.room, seq: message.seq, id: message.id, sender: message.from, sent_ms: Date.parse(message.sentAt), body: JSON.stringify(stored), jws, created_at: now })
      .onConflict((oc) => oc.columns(['room', 'seq']).doNothing())
      .returning('seq')
      .executeTakeFirst();
    return fresh !== undefined;
  }

  /**
   * A room with history "start" that our provider had no member of before: the host's history up
   * to the join goes into the mirror (GET /rooms/{room}/messages?withSeq=true on behalf of the
   * member), at most MAX_BACKFILL messages. Best effort: what fails is logged, the join stands.
   */
  private async backfill(user: string, room: RoomAddress, upTo: number): Promise<void> {
    let after = 0;
    let taken = 0;
    const now = this.o.clock.now();
    while (after < upTo && taken < MAX_BACKFILL) {
      const path = `${this.path(room, '/messages')}?after=${after}&limit=500&withSeq=true`;
      let page: unknown;
      try {
        const base = await this.o.peers.baseUrl(room.domain);
        const res = await this.o.peers.request(`${base}${path}`, { method: 'GET', headers: { authorization: `Bearer ${await this.o.peers.signUser(room.domain, user)}` }, timeoutMs: this.o.timeoutMs, maxResponseBytes: 64 * 1024 * 1024 });
        if (res.status !== 200) throw new Error(`${room.domain} answered ${res.status}`);
        page = JSON.parse(res.body.toString('utf8'));
      } catch (e) {
        this.o.logger.warn({ room: room.full, reason: e instanceof Error ? e.message : String(e) }, 'room history backfill stopped');
        return;
      }
      if (!Array.isArray(page) || page.length === 0) return;
      let last = after;
      for (const item of page as Array<{ seq?: unknown; message?: unknown }>) {
        const seq = item?.seq;
        if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq <= last) {
          this.o.logger.warn({ room: room.full }, 'room history backfill: the host answered out of order; stopped');
          return;
        }
        last = seq;
        if (seq > upTo) return;
        const c = await this.checkSigned(room.full, seq, item.message, now);
        if (!c.ok) {
          this.o.logger.warn({ room: room.full, seq, reason: (c.answer.body as { message?: string }).message }, 'room history backfill: message skipped');
          continue;
        }
        await this.mirror(c.message, item.message as string, now);
        taken++;
      }
      after = last;
    }
  }

  /**
   * Asks the host which of our users are members of `room` now (POST /rooms/{room}/membership)
   * and makes our membership match: those it does not list are dropped (and told, with a
   * `roomMembers` frame). (Never added: a membership starts with the user's own join.) A host
   * that cannot be reached changes nothing. Returns our members after it, or null when the host
   * did not answer.
   */
  async reconcile(roomFull: string, named: ReadonlySet<string> = new Set()): Promise<string[] | null> {
    const room = parseRoomAddress(roomFull);
    if (!room || room.domain === this.o.domain) return null;
    const body = JSON.stringify({ room: room.full });
    const askedAt = this.o.clock.now();
    let res;
    try {
      const base = await this.o.peers.baseUrl(room.domain);
      res = await this.o.peers.request(`${base}${this.path(room, '/membership')}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await this.o.peers.signProvider(room.domain, body)}` }, body, timeoutMs: this.o.timeoutMs, maxResponseBytes: 4 * 1024 * 1024 });
    } catch (e) {
      this.o.peers.invalidate(room.domain);
      this.o.logger.info({ room: room.full, reason: e instanceof Error ? e.message : String(e) }, 'room membership check: host unreachable');
      return null;
    }
    let listed: Set<string>;
    if (res.status === 404) {
      listed = new Set(); // the room is gone
    } else if (res.status === 200) {
      let j: { members?: unknown };
      try {
        j = JSON.parse(res.body.toString('utf8')) as { members?: unknown };
      } catch {
        return null;
      }
      if (!Array.isArray(j.members)) return null;
      listed = new Set();
      for (const m of j.members as Array<{ address?: unknown }>) if (typeof m?.address === 'string') listed.add(m.address.toLowerCase());
    } else {
      this.o.logger.info({ room: room.full, status: res.status }, 'room membership check refused by the host');
      return null;
    }
    // Only memberships older than the question: a join answered while it was on its way (or still
    // pending) may be missing from the answer; the next reconcile sees it.
    const ours = await this.o.db.selectFrom('remote_room_members').select(['address', 'joined_seq', 'joined_at']).where('room', '=', room.full).execute();
    // (Members a host's notice names as removed need no margin: the host said so, and the answer confirms it.)
    const gone = ours.filter((r) => !listed.has(r.address) && (named.has(r.address) || Number(r.joined_at) < askedAt - RECONCILE_MARGIN_MS) && Number(r.joined_seq) !== Number.MAX_SAFE_INTEGER).map((r) => r.address);
    if (gone.length > 0) {
      await this.o.db.deleteFrom('remote_room_members').where('room', '=', room.full).where('address', 'in', gone).execute();
      const stay = ours.map((r) => r.address).filter((a) => !gone.includes(a));
      for (const a of gone) this.o.bus.publish({ type: 'room', recipients: [...stay, a], frame: JSON.stringify({ type: 'roomMembers', room: room.full, address: a, change: 'removed' }) });
      this.o.logger.info({ room: room.full, removed: gone.length }, 'room membership reconciled: members removed by the host');
    }
    return ours.map((r) => r.address).filter((a) => !gone.includes(a)).sort();
  }

  /** Every room hosted elsewhere that someone here is a member of, reconciled one after another. */
  async reconcileAll(): Promise<void> {
    const rooms = await this.o.db.selectFrom('remote_room_members').select('room').distinct().execute();
    for (const r of rooms) await this.reconcile(r.room).catch((e) => this.o.logger.warn({ err: e, room: r.room }, 'room membership check failed'));
  }

  /**
   * POST /roomNotices from a room's host (ours): `{"room", "removedMessages"?: [seq], "removedMembers"?: [address]}` under its
   * provider token bound to the body. Removed messages leave the mirror (and our members' screens);
   * then we ask the host who is a member (a notice carries no membership itself, so an old or
   * repeated notice cannot undo a newer change).
   */
  async notice(input: { authorization: string | undefined; rawBody: Buffer | string; body: unknown }): Promise<PeerAnswer> {
    const auth = await this.o.peers.verifyProvider(input.authorization, input.rawBody, this.o.gate);
    if (!auth.ok) return err(auth.status, auth.error, auth.message, auth.retryAfterSeconds ? { 'retry-after': String(Math.ceil(auth.retryAfterSeconds)) } : undefined);
    const b = input.body as Record<string, unknown> | null;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) return err(400, 'invalid_request', 'the body must be {"room", "removedMessages"?: [seq], "removedMembers"?: [address]}');
    const room = parseRoomAddress(b.room);
    if (!room) return err(400, 'invalid_room', 'room: name#domain');
    if (room.domain !== auth.iss) return err(403, 'not_the_host', `${auth.iss} does not host ${room.full}`);
    const removed = b.removedMessages ?? [];
    if (!Array.isArray(removed) || removed.length > MAX_ROOM_MESSAGES_IN || !removed.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x > 0)) return err(400, 'invalid_request', `removedMessages: up to ${MAX_ROOM_MESSAGES_IN} room seqs`);
    const removedMembers = b.removedMembers ?? [];
    if (!Array.isArray(removedMembers) || removedMembers.length > MAX_TO || !removedMembers.every((x) => typeof x === 'string' && x.length <= 320)) return err(400, 'invalid_request', 'removedMembers: addresses');
    this.o.onPeerSeen?.(auth.iss);
    const members = (await this.o.db.selectFrom('remote_room_members').select('address').where('room', '=', room.full).execute()).map((r) => r.address);
    if (members.length === 0) return { status: 200, body: { room: room.full, members: [] } };
    if (removed.length > 0) {
      const res = await this.o.db.deleteFrom('remote_room_messages').where('room', '=', room.full).where('seq', 'in', removed as number[]).executeTakeFirst();
      if (Number(res.numDeletedRows) > 0) for (const seq of removed as number[]) this.o.bus.publish({ type: 'room', recipients: members, frame: JSON.stringify({ type: 'roomMessageRemoved', room: room.full, seq }) });
    }
    const now = await this.reconcile(room.full, new Set((removedMembers as string[]).map((a) => a.toLowerCase())));
    return { status: 200, body: { room: room.full, members: now ?? members } };
  }

  /** A member of ours was removed or banned by the host (it answered not_a_member / banned on a post). */
  async forget(room: string, user: string): Promise<void> {
    await this.o.db.deleteFrom('remote_room_members').where('room', '=', room).where('address', '=', user).execute();
  }
}
