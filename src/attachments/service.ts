// Files sent with messages: uploaded by our users, stored content-addressed (id = SHA-256 hex) in
// the database (so every instance serves them), referenced from rich messages, served only to the
// participants of a conversation they were sent in. Files of peers' messages are fetched from the
// sending provider with our token, checked against their id, and served to our users from our
// copy. Plain peers' users get a capability link (HMAC of id and conversation).
//
// Who may download a file (anything else: 404, existence is not revealed):
// * its uploader;
// * our users in a conversation where it was sent — by one of our users, or by a peer whose copy
//   we fetched and verified (so a peer cannot claim someone else's file by its hash);
// * a peer provider, for one of its users in a conversation where one of OUR users sent it;
// * anyone with the capability link of a conversation where one of our users sent it.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { ExpressionBuilder } from 'kysely';
import type { Database } from '../storage/schema.js';
import { storableText, type Db } from '../storage/db.js';
import type { Config } from '../config/config.js';
import type { Clock } from '../util/clock.js';
import type { BusEvent, EventBus } from '../bus/bus.js';
import type { AttachmentsPort } from '../context.js';
import { MAX_ATTACHMENTS, type AttachmentRef } from '../protocol/rich.js';
import { isValidMediaType } from '../protocol/message.js';
import { domainOf } from '../protocol/address.js';
import { CONVERSATION_ID } from '../protocol/conversation.js';
import { HttpError } from '../http/errors.js';
import { PeerNetworkError } from '../federation/net.js';
import type { AttachmentPeers } from './peers.js';
import { checkInlineBinary } from './inline.js';

export const ATTACHMENT_ID = /^[0-9a-f]{64}$/;
/** The window of the per-user upload quota (INTERTALK_ATTACHMENT_QUOTA bytes per window). */
const QUOTA_WINDOW_MS = 86_400_000;
/** Blobs nobody references are purged this long after their last upload or send. */
export const UNREFERENCED_TTL_MS = 60 * 60_000;
/** Fetches of a peer's file are given up after this many attempts (about a day of back-off). */
export const MAX_FETCH_ATTEMPTS = 14;
const PURGE_INTERVAL_MS = 10 * 60_000;
const FETCH_LEASE_MS = 60_000;
const FETCH_CONCURRENCY = 4;
const MAX_NAME = 255;
/** A download triggers at most one fetch of the same file from the same peer this often. */
const ON_DEMAND_INTERVAL_MS = 10_000;

export interface UploadResult {
  id: string;
  mediaType: string;
  size: number;
  url: string;
  name?: string;
}

/** What a download is served as, once allowed. */
export interface Access {
  id: string;
  mediaType: string;
  name: string | null;
}

export type Decision =
  | { kind: 'ok'; access: Access }
  | { kind: 'none' }
  /** Allowed, but we do not hold a verified copy (yet): 503 when retryable, else 502. */
  | { kind: 'unavailable'; retryable: boolean; reason: string };

type FetchOutcome = { state: 'done' } | { state: 'retry' | 'failed'; reason: string };

interface FetchJob {
  attachment_id: string;
  domain: string;
  url: string;
  media_type: string;
  size: number;
  sender: string;
  recipient: string;
}

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A file name as rich/1 accepts it, or null. */
export function isFileName(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_NAME && v.trim() !== '' && !/[\p{Cc}/\\]/u.test(v);
}

/** The attachment entry of a stored message body, if it names `id`. */
function refIn(body: string, id: string): AttachmentRef | null {
  try {
    const m = JSON.parse(body) as { rich?: { attachments?: AttachmentRef[] } };
    return m.rich?.attachments?.find((a) => a && a.id === id) ?? null;
  } catch {
    return null;
  }
}

export class Attachments implements AttachmentsPort {
  private peers: AttachmentPeers | null = null;
  private linkSecret: Buffer | null = null;
  private readonly inflight = new Map<string, Promise<FetchOutcome>>();
  /** Last on-demand attempt per (file, peer) and its outcome: clients retrying do not hammer peers. */
  private readonly onDemand = new Map<string, { at: number; outcome: FetchOutcome }>();
  private unsubscribe: (() => void) | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private purgeTimer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  /** Highest message seq whose remote refs were checked for missing fetch rows. */
  private reconciledSeq = 0;

  constructor(
    private readonly o: {
      db: Db;
      config: Config;
      clock: Clock;
      bus: EventBus;
      logger: Logger;
    },
  ) {}

  private get db(): Db {
    return this.o.db;
  }

  get maxBytes(): number {
    return this.o.config.maxAttachment;
  }

  /** Loads (or creates, once for all instances) the capability-link secret. */
  async init(): Promise<void> {
    await this.db
      .insertInto('attachment_link_keys')
      .values({ id: 'link', secret: randomBytes(32).toString('base64url'), created_at: this.o.clock.now() })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
    const row = await this.db.selectFrom('attachment_link_keys').select('secret').where('id', '=', 'link').executeTakeFirstOrThrow();
    this.linkSecret = Buffer.from(row.secret, 'base64url');
  }

  /** Federation is built after the core: it brings peer tokens, discovery and PeerHttp. */
  usePeers(peers: AttachmentPeers | null): void {
    this.peers = peers;
  }

  get peerAccess(): AttachmentPeers | null {
    return this.peers;
  }

  url(id: string): string {
    return `${this.o.config.publicUrl}/attachments/${id}`;
  }

  // --- AttachmentsPort ---------------------------------------------------------------------------

  async describe(uploader: string, refs: unknown): Promise<AttachmentRef[]> {
    const bad = (message: string) => new HttpError(400, 'invalid_rich', `rich.attachments${message}`);
    if (!Array.isArray(refs) || refs.length > MAX_ATTACHMENTS) throw bad(`: an array of at most ${MAX_ATTACHMENTS} {id, name}`);
    const out: AttachmentRef[] = [];
    const now = this.o.clock.now();
    for (const [i, r] of refs.entries()) {
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw bad(`[${i}]: must be an object {id, name}`);
      const { id, name } = r as Record<string, unknown>;
      if (typeof id !== 'string' || !ATTACHMENT_ID.test(id)) throw bad(`[${i}].id: the id POST /attachments answered`);
      if (name !== undefined && typeof name !== 'string') throw bad(`[${i}].name: must be a string`);
      const row = await this.db
        .selectFrom('attachment_uploads as u')
        .innerJoin('attachments as a', 'a.id', 'u.attachment_id')
        .select(['u.media_type', 'u.name', 'a.size'])
        .where('u.attachment_id', '=', id)
        .where('u.uploader', '=', uploader)
        .executeTakeFirst();
      if (!row) throw new HttpError(400, 'unknown_attachment', `attachments: ${id.slice(0, 16)}… is not one of your uploads`);
      // Sending again protects the blob from the purge until the message is stored.
      await this.db.updateTable('attachments').set({ touched_at: now, referenced: 0 }).where('id', '=', id).execute();
      out.push({ id, name: name ?? row.name ?? 'file', mediaType: row.media_type, size: Number(row.size), url: this.url(id) });
    }
    return out;
  }

  /** A rich object from a client with its attachments ({id, name}) completed; otherwise as is. */
  async completeRich(uploader: string, rich: unknown): Promise<unknown> {
    if (typeof rich !== 'object' || rich === null || Array.isArray(rich)) return rich;
    const r = rich as Record<string, unknown>;
    const type = r.type ?? 'content';
    if (r.attachments === undefined || (type !== 'content' && type !== 'reply')) return rich;
    return { ...r, attachments: await this.describe(uploader, r.attachments) };
  }

  plainLink(a: AttachmentRef, conversationId: string): string {
    return `${this.url(a.id)}?c=${conversationId}&key=${this.linkKey(a.id, conversationId)}`;
  }

  checkInline(m: { messageFormatted?: unknown; format?: unknown }): void {
    checkInlineBinary(m, this.maxBytes);
  }

  private linkKey(id: string, conversationId: string): string {
    if (!this.linkSecret) throw new Error('Attachments.init() was not called');
    return createHmac('sha256', this.linkSecret).update(`intertalk-attachment\n${id}\n${conversationId}`).digest('base64url');
  }

  // --- uploads -----------------------------------------------------------------------------------

  /** Bytes uploaded by `uploader` in the last 24 hours (the quota window). */
  async usedQuota(uploader: string): Promise<number> {
    const row = await this.db
      .selectFrom('attachment_uploads')
      .select((eb) => eb.fn.sum<number | string | null>('size').as('n'))
      .where('uploader', '=', uploader)
      .where('created_at', '>', this.o.clock.now() - QUOTA_WINDOW_MS)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async upload(uploader: string, data: Buffer, mediaType: string, name: string | null): Promise<UploadResult> {
    if (data.length === 0) throw new HttpError(400, 'empty_attachment', 'the file is empty');
    if (data.length > this.maxBytes) throw new HttpError(413, 'payload_too_large', `attachments are limited to ${this.maxBytes} bytes`);
    if (!isValidMediaType(mediaType)) throw new HttpError(400, 'invalid_media_type', 'Content-Type: not a media type');
    if (name !== null && !isFileName(name)) throw new HttpError(400, 'invalid_request', `name: 1 to ${MAX_NAME} characters, no control characters or slashes`);
    const id = sha256Hex(data);
    const now = this.o.clock.now();
    const already = await this.db.selectFrom('attachment_uploads').select('created_at').where('attachment_id', '=', id).where('uploader', '=', uploader).executeTakeFirst();
    if (!already && (await this.usedQuota(uploader)) + data.length > this.o.config.attachmentQuota) {
      throw new HttpError(429, 'quota_exceeded', `you may upload ${this.o.config.attachmentQuota} bytes per 24 hours`, { 'retry-after': '3600' });
    }
    await this.db.transaction().execute(async (trx) => {
      // Stored once: the same bytes again only mark the blob as freshly used.
      await trx
        .insertInto('attachments')
        .values({ id, media_type: mediaType, size: data.length, created_at: now, uploader, origin: 'local', data, touched_at: now })
        .onConflict((oc) => oc.column('id').doUpdateSet({ touched_at: now, referenced: 0 }))
        .execute();
      await trx
        .insertInto('attachment_uploads')
        .values({ attachment_id: id, uploader, media_type: mediaType, name, size: data.length, created_at: now })
        .onConflict((oc) => oc.columns(['attachment_id', 'uploader']).doUpdateSet({ media_type: mediaType, name }))
        .execute();
    });
    return { id, mediaType, size: data.length, url: this.url(id), ...(name !== null ? { name } : {}) };
  }

  /**
   * A file that arrived with a message by another transport (an e-mail attachment): we hold the
   * bytes already, so the message's sender domain is recorded as a verified source and no fetch
   * is queued. Call before the message is stored. Files over INTERTALK_MAX_ATTACHMENT are refused
   * (null).
   */
  async storeBridged(sender: string, data: Buffer, mediaType: string, name: string): Promise<AttachmentRef | null> {
    if (data.length === 0 || data.length > this.maxBytes) return null;
    const type = isValidMediaType(mediaType) ? mediaType : 'application/octet-stream';
    const id = sha256Hex(data);
    const now = this.o.clock.now();
    const domain = domainOf(sender);
    await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('attachments')
        .values({ id, media_type: type, size: data.length, created_at: now, uploader: sender, origin: domain, data, touched_at: now })
        .onConflict((oc) => oc.column('id').doUpdateSet({ touched_at: now }))
        .execute();
      await trx
        .insertInto('attachment_fetches')
        .values({ attachment_id: id, domain, url: this.url(id), media_type: type, size: data.length, sender, recipient: sender, state: 'done', attempts: 0, next_attempt_at: now, lease_until: null, last_error: null, created_at: now, fetched_at: now })
        .onConflict((oc) => oc.columns(['attachment_id', 'domain']).doUpdateSet({ state: 'done', fetched_at: now, last_error: null }))
        .execute();
    });
    return { id, name, mediaType: type, size: data.length, url: this.url(id) };
  }

  // --- downloads: who may have what --------------------------------------------------------------

  private async has(id: string): Promise<boolean> {
    return !!(await this.db.selectFrom('attachments').select('id').where('id', '=', id).executeTakeFirst());
  }

  async blob(id: string): Promise<Buffer | null> {
    const row = await this.db.selectFrom('attachments').select('data').where('id', '=', id).executeTakeFirst();
    if (!row) return null;
    return Buffer.isBuffer(row.data) ? row.data : Buffer.from(row.data);
  }

  /** One of our users. */
  async forUser(address: string, id: string): Promise<Decision> {
    if (!ATTACHMENT_ID.test(id)) return { kind: 'none' };
    const refs = await this.db
      .selectFrom('attachment_refs as r')
      .innerJoin('conversation_members as cm', (j) => j.onRef('cm.conversation_id', '=', 'r.conversation_id').on('cm.address', '=', address))
      .innerJoin('messages as m', 'm.seq', 'r.message_seq')
      .select(['m.origin', 'm.body', 'm.sender', 'r.conversation_id'])
      .where('r.attachment_id', '=', id)
      .orderBy('r.message_seq', 'desc')
      .limit(50)
      .execute();
    const upload = await this.db.selectFrom('attachment_uploads').select(['media_type', 'name']).where('attachment_id', '=', id).where('uploader', '=', address).executeTakeFirst();
    if (refs.length === 0 && !upload) return { kind: 'none' };
    const have = await this.has(id);
    const fromRef = (body: string): Decision => {
      const a = refIn(body, id);
      return { kind: 'ok', access: { id, mediaType: a?.mediaType ?? 'application/octet-stream', name: a?.name ?? null } };
    };
    if (have) {
      const local = refs.find((r) => r.origin === 'local');
      if (local) return fromRef(local.body);
      if (upload) return { kind: 'ok', access: { id, mediaType: upload.media_type, name: upload.name } };
    }
    const remote = refs.filter((r) => r.origin !== 'local');
    if (remote.length === 0) return { kind: 'none' };
    const origins = [...new Set(remote.map((r) => r.origin))];
    const fetches = await this.db.selectFrom('attachment_fetches').selectAll().where('attachment_id', '=', id).where('domain', 'in', origins).execute();
    const state = new Map(fetches.map((f) => [f.domain, f]));
    if (have) {
      const verified = remote.find((r) => state.get(r.origin)?.state === 'done');
      if (verified) return fromRef(verified.body);
    }
    // Allowed through a peer's message, but no verified copy yet: fetch it now.
    let last: Decision = { kind: 'unavailable', retryable: false, reason: 'the file could not be fetched from the sender\'s provider' };
    for (const origin of origins) {
      const f = state.get(origin);
      if (f?.state === 'failed') {
        last = { kind: 'unavailable', retryable: false, reason: `the sender's provider did not provide a valid copy (${f.last_error ?? 'failed'})` };
        continue;
      }
      const ref = remote.find((r) => r.origin === origin)!;
      const a = refIn(ref.body, id);
      if (!a) continue;
      const job: FetchJob = f ?? { attachment_id: id, domain: origin, url: a.url, media_type: a.mediaType, size: a.size, sender: ref.sender, recipient: address };
      if (!f) await this.enqueue(job);
      const outcome = await this.fetchOnDemand({ ...job, size: Number(job.size) });
      if (outcome.state === 'done') return fromRef(ref.body);
      last = { kind: 'unavailable', retryable: outcome.state === 'retry', reason: outcome.reason };
    }
    return last;
  }

  /** A peer provider `iss`, for its user `sub`: only files our users sent to a conversation with `sub`. */
  /** Access to a file we hold, described as the referencing message describes it. */
  private async grant(id: string, body: string | undefined): Promise<Decision> {
    if (body === undefined || !(await this.has(id))) return { kind: 'none' };
    const a = refIn(body, id);
    return { kind: 'ok', access: { id, mediaType: a?.mediaType ?? 'application/octet-stream', name: a?.name ?? null } };
  }

  async forPeer(sub: string, id: string): Promise<Decision> {
    if (!ATTACHMENT_ID.test(id)) return { kind: 'none' };
    const ref = await this.db
      .selectFrom('attachment_refs as r')
      .innerJoin('conversation_members as cm', (j) => j.onRef('cm.conversation_id', '=', 'r.conversation_id').on('cm.address', '=', sub))
      .innerJoin('messages as m', 'm.seq', 'r.message_seq')
      .select(['m.body'])
      .where('r.attachment_id', '=', id)
      .where('m.origin', '=', 'local')
      .limit(1)
      .executeTakeFirst();
    return this.grant(id, ref?.body);
  }

  /** A capability link (plain peers' users): HMAC of (id, conversation), still sent there by one of ours. */
  async forLink(id: string, conversationId: unknown, key: unknown): Promise<Decision> {
    if (!ATTACHMENT_ID.test(id) || typeof conversationId !== 'string' || !CONVERSATION_ID.test(conversationId) || typeof key !== 'string') return { kind: 'none' };
    const expected = Buffer.from(this.linkKey(id, conversationId));
    const given = Buffer.from(key);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { kind: 'none' };
    const ref = await this.db
      .selectFrom('attachment_refs as r')
      .innerJoin('messages as m', 'm.seq', 'r.message_seq')
      .select(['m.body'])
      .where('r.attachment_id', '=', id)
      .where('r.conversation_id', '=', conversationId)
      .where('m.origin', '=', 'local')
      .limit(1)
      .executeTakeFirst();
    return this.grant(id, ref?.body);
  }

  // --- files of peers' messages ------------------------------------------------------------------

  /** Records that `job.attachment_id` is to be fetched from `job.domain` (idempotent). */
  private async enqueue(job: FetchJob): Promise<void> {
    const now = this.o.clock.now();
    await this.db
      .insertInto('attachment_fetches')
      .values({ ...job, state: 'pending', attempts: 0, next_attempt_at: now, lease_until: null, last_error: null, created_at: now, fetched_at: null })
      .onConflict((oc) => oc.columns(['attachment_id', 'domain']).doNothing())
      .execute();
  }

  /** A stored message from a peer names files: queue them (off the hot path). */
  private async received(m: { from: string; rich?: { attachments?: AttachmentRef[] } }, recipients: string[]): Promise<void> {
    const recipient = recipients[0];
    if (!recipient) return;
    const domain = domainOf(m.from);
    for (const a of m.rich?.attachments ?? []) {
      if (!a || typeof a.id !== 'string' || !ATTACHMENT_ID.test(a.id)) continue;
      await this.enqueue({ attachment_id: a.id, domain, url: a.url, media_type: a.mediaType, size: a.size, sender: m.from, recipient });
    }
    this.kick();
  }

  /** A download of a file we have no verified copy of: fetch now, unless just tried. */
  private async fetchOnDemand(job: FetchJob): Promise<FetchOutcome> {
    const key = `${job.attachment_id}\n${job.domain}`;
    const now = this.o.clock.now();
    const last = this.onDemand.get(key);
    if (last && now - last.at < ON_DEMAND_INTERVAL_MS && last.outcome.state !== 'done') return last.outcome;
    const outcome = await this.fetchOnce(job, true);
    if (this.onDemand.size >= 10_000) this.onDemand.clear();
    this.onDemand.set(key, { at: now, outcome });
    return outcome;
  }

  /** One fetch per (file, peer) at a time in this process. */
  private fetchOnce(job: FetchJob, onDemand = false): Promise<FetchOutcome> {
    const key = `${job.attachment_id}\n${job.domain}`;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.fetch(job, onDemand)
        .catch((err: unknown): FetchOutcome => ({ state: 'retry', reason: (err as Error).message }))
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /**
   * Fetches one file from the sending provider, verifies it, stores it; records the outcome. A
   * temporary failure of an on-demand fetch leaves the background schedule (attempts) alone.
   */
  private async fetch(job: FetchJob, onDemand: boolean): Promise<FetchOutcome> {
    const outcome = await this.download(job);
    const now = this.o.clock.now();
    const row = await this.db.selectFrom('attachment_fetches').select(['attempts', 'state']).where('attachment_id', '=', job.attachment_id).where('domain', '=', job.domain).executeTakeFirst();
    if (!row || row.state === 'done') return row ? { state: 'done' } : outcome;
    const attempts = Number(row.attempts) + 1;
    if (outcome.state === 'done') {
      await this.db
        .updateTable('attachment_fetches')
        .set({ state: 'done', attempts, fetched_at: now, last_error: null, lease_until: null })
        .where('attachment_id', '=', job.attachment_id)
        .where('domain', '=', job.domain)
        .execute();
      return outcome;
    }
    if (onDemand && outcome.state === 'retry') {
      await this.db
        .updateTable('attachment_fetches')
        .set({ last_error: storableText(outcome.reason.slice(0, 500)) })
        .where('attachment_id', '=', job.attachment_id)
        .where('domain', '=', job.domain)
        .execute();
      return outcome;
    }
    const giveUp = outcome.state === 'failed' || attempts >= MAX_FETCH_ATTEMPTS;
    if (giveUp) this.o.logger.warn({ attachment: job.attachment_id, domain: job.domain, reason: outcome.reason }, 'attachment fetch failed for good');
    const delay = Math.min(6 * 3_600_000, 15_000 * 2 ** Math.min(20, attempts - 1));
    await this.db
      .updateTable('attachment_fetches')
      .set({ state: giveUp ? 'failed' : 'pending', attempts, next_attempt_at: now + delay, last_error: storableText(outcome.reason.slice(0, 500)), lease_until: null })
      .where('attachment_id', '=', job.attachment_id)
      .where('domain', '=', job.domain)
      .where('state', '=', 'pending')
      .execute();
    return giveUp ? { state: 'failed', reason: outcome.reason } : outcome;
  }

  private async download(job: FetchJob): Promise<FetchOutcome> {
    const peers = this.peers;
    if (!peers) return { state: 'retry', reason: 'federation is not running' };
    const fail = (reason: string): FetchOutcome => ({ state: 'failed', reason });
    const retry = (reason: string): FetchOutcome => ({ state: 'retry', reason });
    const size = Number(job.size);
    if (!Number.isSafeInteger(size) || size < 0 || size > this.maxBytes) return fail(`declared size ${job.size} exceeds the limit of ${this.maxBytes} bytes`);
    // Only from the sending provider's own base URL (as discovery finds it), never elsewhere.
    let base: URL;
    try {
      base = new URL(await peers.baseUrl(job.domain));
    } catch (err) {
      return err instanceof PeerNetworkError && err.policy ? fail(err.message) : retry(`cannot resolve ${job.domain}: ${(err as Error).message}`);
    }
    let url: URL;
    try {
      url = new URL(job.url);
    } catch {
      return fail('the url is not a URL');
    }
    const basePath = base.pathname.replace(/\/+$/, '');
    if (url.origin !== base.origin || url.username !== '' || url.password !== '' || !url.pathname.startsWith(`${basePath}/`)) {
      return fail(`the url is not on ${job.domain}'s server (${base.origin})`);
    }
    let res;
    try {
      const token = await peers.sign(job.domain, job.recipient);
      res = await peers.get(url.href, { authorization: `Bearer ${token}`, accept: '*/*' }, size);
    } catch (err) {
      if (err instanceof PeerNetworkError) return err.policy || err.code === 'too_large' ? fail(err.message) : retry(err.message);
      return retry((err as Error).message);
    }
    if (res.status !== 200) return retry(`${job.domain} answered ${res.status}`);
    if (res.body.length !== size) return fail(`${job.domain} sent ${res.body.length} bytes, the message declared ${size}`);
    if (sha256Hex(res.body) !== job.attachment_id) return fail(`${job.domain} sent bytes whose SHA-256 is not the attachment id`);
    const now = this.o.clock.now();
    await this.db
      .insertInto('attachments')
      .values({ id: job.attachment_id, media_type: job.media_type, size, created_at: now, uploader: job.sender, origin: job.domain, data: res.body, touched_at: now, referenced: 1 })
      .onConflict((oc) => oc.column('id').doNothing())
      .execute();
    return { state: 'done' };
  }

  /** Runs due fetches (and finds refs that have none, e.g. after a crash) until none are left. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.runDue();
        } catch (err) {
          if (!this.stopped) this.o.logger.warn({ err }, 'attachment fetches failed');
        }
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
    });
  }

  /** Waits for the fetch worker and the bookkeeping of messages already announced to go idle (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
    await Promise.allSettled([...this.inflight.values(), ...this.bookkeeping]);
  }

  async runDue(): Promise<void> {
    if (!this.peers) return;
    await this.reconcile();
    for (;;) {
      const now = this.o.clock.now();
      const due = await this.db
        .selectFrom('attachment_fetches')
        .select(['attachment_id', 'domain', 'url', 'media_type', 'size', 'sender', 'recipient'])
        .where('state', '=', 'pending')
        .where('next_attempt_at', '<=', now)
        .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
        .orderBy('next_attempt_at')
        .limit(FETCH_CONCURRENCY * 4)
        .execute();
      if (due.length === 0 || this.stopped) return;
      let claimed = 0;
      const jobs: Array<Promise<unknown>> = [];
      for (const job of due) {
        // Several instances share the queue: a lease makes one of them fetch.
        const r = await this.db
          .updateTable('attachment_fetches')
          .set({ lease_until: now + FETCH_LEASE_MS })
          .where('attachment_id', '=', job.attachment_id)
          .where('domain', '=', job.domain)
          .where('state', '=', 'pending')
          .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) continue;
        claimed++;
        jobs.push(this.fetchOnce({ ...job, size: Number(job.size) }));
        if (jobs.length >= FETCH_CONCURRENCY) await Promise.allSettled(jobs.splice(0));
      }
      await Promise.allSettled(jobs);
      if (claimed === 0) return;
    }
  }

  /** Remote refs without a fetch row (the bus event was lost, e.g. a crash after the commit). */
  private async reconcile(): Promise<void> {
    for (;;) {
      const rows = await this.db
        .selectFrom('attachment_refs as r')
        .innerJoin('messages as m', 'm.seq', 'r.message_seq')
        .select(['r.attachment_id', 'r.message_seq', 'r.conversation_id', 'm.origin', 'm.sender', 'm.body'])
        .where('m.origin', '!=', 'local')
        .where('r.message_seq', '>', Math.max(0, this.reconciledSeq - 1000))
        .where(({ not, exists, selectFrom }) =>
          not(exists(selectFrom('attachment_fetches as f').select('f.attachment_id').whereRef('f.attachment_id', '=', 'r.attachment_id').whereRef('f.domain', '=', 'm.origin'))),
        )
        .orderBy('r.message_seq')
        .limit(200)
        .execute();
      for (const row of rows) {
        const a = refIn(row.body, row.attachment_id);
        const member = await this.db.selectFrom('conversation_members').select('address').where('conversation_id', '=', row.conversation_id).where('is_local', '=', 1).limit(1).executeTakeFirst();
        if (a && member) await this.enqueue({ attachment_id: a.id, domain: row.origin, url: a.url, media_type: a.mediaType, size: a.size, sender: row.sender, recipient: member.address });
      }
      if (rows.length < 200) break;
    }
    const top = await this.db.selectFrom('messages').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
    this.reconciledSeq = Math.max(this.reconciledSeq, Number(top?.seq ?? 0));
  }

  // --- purge -------------------------------------------------------------------------------------

  /**
   * Deletes blobs no message references: right away when they had been sent (their last message
   * was deleted), otherwise an hour after their last upload or send. Uploads and fetch records of
   * such files go with them. Returns the number of blobs removed.
   */
  async purge(opts: { deletedOnly?: boolean; now?: number } = {}): Promise<number> {
    const cutoff = (opts.now ?? this.o.clock.now()) - UNREFERENCED_TTL_MS;
    const res = await this.db
      .deleteFrom('attachments')
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('attachment_refs as r').select('r.attachment_id').whereRef('r.attachment_id', '=', 'attachments.id'))))
      .where((eb) => (opts.deletedOnly ? eb('referenced', '=', 1) : eb.or([eb('referenced', '=', 1), eb('touched_at', '<', cutoff)])))
      .executeTakeFirst();
    const removed = Number(res.numDeletedRows);
    // Upload records of purged files go too, but only once out of the quota window: they are
    // what the daily quota counts (else upload, wait for the purge, upload again). Until then
    // only their size and time stay: the file's name and type go with the file.
    const orphan = ({ not, exists, selectFrom }: ExpressionBuilder<Database, 'attachment_uploads'>) =>
      not(exists(selectFrom('attachments as a').select('a.id').whereRef('a.id', '=', 'attachment_uploads.attachment_id')));
    await this.db
      .deleteFrom('attachment_uploads')
      .where(orphan)
      .where('created_at', '<=', (opts.now ?? this.o.clock.now()) - QUOTA_WINDOW_MS)
      .execute();
    await this.db.updateTable('attachment_uploads').set({ name: null, media_type: 'application/octet-stream' }).where(orphan).where((eb) => eb.or([eb('name', 'is not', null), eb('media_type', '!=', 'application/octet-stream')])).execute();
    await this.db
      .deleteFrom('attachment_fetches')
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom('attachment_refs as r')
              .innerJoin('messages as m', 'm.seq', 'r.message_seq')
              .select('r.attachment_id')
              .whereRef('r.attachment_id', '=', 'attachment_fetches.attachment_id')
              .whereRef('m.origin', '=', 'attachment_fetches.domain'),
          ),
        ),
      )
      .execute();
    if (removed > 0) this.o.logger.info({ removed }, 'purged unreferenced attachments');
    return removed;
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  private onEvent(e: BusEvent): void {
    if (e.type !== 'message' || this.stopped) return;
    // Cheap test first: most messages have neither attachments nor a delete.
    if (!e.json.includes('"attachments"') && !e.json.includes('"delete"')) return;
    let m: { from: string; rich?: { type?: string; attachments?: AttachmentRef[] } };
    try {
      m = JSON.parse(e.json);
    } catch {
      return;
    }
    const work = async () => {
      if (m.rich?.type === 'delete') await this.purge({ deletedOnly: true });
      const files = m.rich?.attachments ?? [];
      if (files.length === 0) return;
      if (domainOf(m.from) === this.o.config.domain) {
        const ids = files.map((a) => a.id).filter((id) => typeof id === 'string');
        if (ids.length > 0) await this.db.updateTable('attachments').set({ referenced: 1 }).where('id', 'in', ids).execute();
      } else {
        await this.received(m, e.recipients);
      }
    };
    const done = work().catch((err) => {
      if (!this.stopped) this.o.logger.warn({ err }, 'attachment bookkeeping failed');
    });
    this.bookkeeping.add(done);
    void done.finally(() => this.bookkeeping.delete(done));
  }

  /** Bookkeeping started by message events (purges after deletes, references), until done. */
  private readonly bookkeeping = new Set<Promise<void>>();

  start(): void {
    this.stopped = false;
    this.unsubscribe = this.o.bus.subscribe((e) => this.onEvent(e));
    this.sweepTimer = setInterval(() => this.kick(), Math.max(1000, this.o.config.federation.sweepIntervalMs));
    this.sweepTimer.unref();
    const purge = () => void this.purge().catch((err) => this.o.logger.warn({ err }, 'attachment purge failed'));
    this.purgeTimer = setInterval(purge, PURGE_INTERVAL_MS);
    this.purgeTimer.unref();
    purge();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    // In-flight fetches end with the peer connections; do not hold up shutdown for long.
    const pending = [this.running, ...this.inflight.values(), ...this.bookkeeping].filter(Boolean);
    await Promise.race([Promise.allSettled(pending), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}
