// Web Push (docs/push.md): the provider's VAPID key pair, the users' subscriptions with the COI
// validation flow, and a durable queue of pushes in the database that every instance drains
// (rows are claimed with a lease, so each push is sent by one instance).
import { createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import webpush from 'web-push';
import { Agent, buildConnector, request } from 'undici';
import { PeerNetworkError, connectPublic, type LookupAll } from '../federation/net.js';
import type { Logger } from 'pino';
import type { Db } from '../storage/db.js';
import { storableText } from '../storage/db.js';
import type { Clock } from '../util/clock.js';
import type { BusEvent, EventBus } from '../bus/bus.js';
import type { RateLimiter } from '../auth/limiter.js';
import type { Config } from '../config/config.js';
import { checkValidation, messagePayload, retryAfterMs, topicOf, validationValue, type SubscriptionInput } from './wire.js';

export interface PushOptions {
  db: Db;
  config: Config['push'];
  domain: string;
  clock: Clock;
  bus: EventBus;
  logger: Logger;
  /** Strikes (invalid subscriptions) per user; refused registrations once exhausted. */
  strikes: RateLimiter;
  /** DNS resolution for push endpoints (default: the system resolver); tests point names at addresses. */
  lookup?: LookupAll;
}

export interface SubscriptionView {
  id: string;
  created: string;
  validated: boolean;
  client: string;
  device: string;
  msgtype: string;
  resource: { endpoint: string; keys: { p256dh: string; auth: string } };
}

export interface PushSettings {
  enabled: boolean;
  contentFree: boolean;
}

export type CreateResult = { ok: true; subscription: SubscriptionView } | { ok: false; reason: 'cap' | 'throttled'; retryAfterMs?: number };

const BATCH = 32;
const CONCURRENCY = 8;
const MAX_ATTEMPTS = 12;
/** Kinds of rich message that notify (a reaction, edit, delete or rename does not). */
const NOTIFYING = new Set([undefined, 'content', 'reply']);

type SubRow = { user_id: number; id: string; client: string; device: string; msgtype: string; endpoint: string; p256dh: string; auth: string; created_at: number; validated: number };

function view(r: SubRow): SubscriptionView {
  return {
    id: r.id,
    created: new Date(Number(r.created_at)).toISOString(),
    validated: Number(r.validated) === 1,
    client: r.client,
    device: r.device,
    msgtype: r.msgtype,
    resource: { endpoint: r.endpoint, keys: { p256dh: r.p256dh, auth: r.auth } },
  };
}

export class Push {
  private readonly db: Db;
  private readonly owner = randomUUID();
  private vapid: { publicKey: string; privateKey: string; secret: string } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private wakeAt = Infinity;
  private running: Promise<void> | null = null;
  private stopped = true;
  private unsubscribe: (() => void) | null = null;
  private readonly bookkeeping = new Set<Promise<unknown>>();
  private chain: Promise<unknown> = Promise.resolve();
  /**
   * Endpoints are URLs chosen by users, so a push must never reach an internal address: the
   * connection goes only to a public address the endpoint's name resolves to (connectPublic), not
   * just to a name that looked public when the subscription was made. Insecure mode (tests) lifts it.
   */
  private readonly agent: Agent;

  constructor(private readonly o: PushOptions) {
    const connector = buildConnector({ rejectUnauthorized: true, timeout: o.config.requestTimeoutMs });
    this.agent = new Agent({
      connections: CONCURRENCY,
      connect: o.config.insecureEndpoints ? connector : (options, callback) => connectPublic(connector, options, callback, o.lookup),
    });
    this.db = o.db;
  }

  get enabled(): boolean {
    return this.o.config.enabled;
  }

  /** Loads the VAPID key pair, generating it on the first start (the first instance's insert wins). */
  async init(): Promise<void> {
    if (!this.enabled) return;
    let row = await this.db.selectFrom('push_vapid').selectAll().where('id', '=', 'default').executeTakeFirst();
    if (!row) {
      const k = webpush.generateVAPIDKeys();
      await this.db
        .insertInto('push_vapid')
        .values({ id: 'default', public_key: k.publicKey, private_key: k.privateKey, validation_secret: randomBytes(32).toString('base64url'), created_at: this.o.clock.now() })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      row = await this.db.selectFrom('push_vapid').selectAll().where('id', '=', 'default').executeTakeFirstOrThrow();
    }
    this.vapid = { publicKey: row.public_key, privateKey: row.private_key, secret: row.validation_secret };
  }

  start(): void {
    if (!this.enabled || !this.stopped) return;
    this.stopped = false;
    this.unsubscribe = this.o.bus.subscribe((e) => this.onEvent(e));
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.running) await this.running;
    await Promise.allSettled([...this.bookkeeping]);
    await this.agent.close().catch(() => undefined);
  }

  /** Resolves once the pushes of every message heard so far are queued (tests). */
  async settled(): Promise<void> {
    await this.chain.catch(() => undefined);
  }

  /** The applicationServerKey (base64url uncompressed point) and the COI form (base64 of the PEM). */
  publicKey(): { publicKey: string; pem: string } {
    const pub = this.keys().publicKey;
    const raw = Buffer.from(pub, 'base64url');
    const key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33, 65).toString('base64url') }, format: 'jwk' });
    const pem = key.export({ type: 'spki', format: 'pem' }).toString();
    return { publicKey: pub, pem: Buffer.from(pem).toString('base64') };
  }

  private keys() {
    if (!this.vapid) throw new Error('push is not enabled');
    return this.vapid;
  }

  // ---- subscriptions ----

  async list(userId: number): Promise<SubscriptionView[]> {
    const rows = await this.db.selectFrom('push_subscriptions').selectAll().where('user_id', '=', userId).orderBy('created_at').orderBy('id').execute();
    return rows.map(view);
  }

  /** Creates (or replaces: a new validation) the subscription `id`, and queues its validation push. */
  async create(userId: number, id: string, s: SubscriptionInput): Promise<CreateResult> {
    const throttle = await this.o.strikes.check(String(userId));
    if (!throttle.allowed) return { ok: false, reason: 'throttled', retryAfterMs: throttle.retryAfterMs };
    const now = this.o.clock.now();
    const validateBy = now + this.o.config.validationTimeoutMs;
    const row = await this.db.transaction().execute(async (trx) => {
      const others = await trx
        .selectFrom('push_subscriptions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('user_id', '=', userId)
        .where('id', '!=', id)
        .executeTakeFirstOrThrow();
      if (Number(others.n) >= this.o.config.maxSubscriptions) return null;
      await trx.deleteFrom('push_queue').where('user_id', '=', userId).where('subscription_id', '=', id).execute();
      await trx.deleteFrom('push_subscriptions').where('user_id', '=', userId).where('id', '=', id).execute();
      const values = {
        user_id: userId,
        id,
        client: storableText(s.client),
        device: storableText(s.device),
        msgtype: s.msgtype,
        endpoint: s.endpoint,
        p256dh: s.p256dh,
        auth: s.auth,
        created_at: now,
        validated: 0,
        validate_by: validateBy,
      };
      await trx.insertInto('push_subscriptions').values(values).execute();
      await trx
        .insertInto('push_queue')
        .values({
          user_id: userId,
          subscription_id: id,
          kind: 'validation',
          message_seq: 0,
          conversation_id: null,
          payload: JSON.stringify({ validation: validationValue(this.keys().secret, userId, id, now, validateBy) }),
          ttl: Math.ceil(this.o.config.validationTimeoutMs / 1000),
          urgency: 'high',
          topic: null,
          created_at: now,
          next_attempt_at: now,
        })
        .execute();
      return values;
    });
    if (!row) return { ok: false, reason: 'cap' };
    this.schedule(0);
    return { ok: true, subscription: view(row) };
  }

  async remove(userId: number, id: string): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('push_queue').where('user_id', '=', userId).where('subscription_id', '=', id).execute();
      const r = await trx.deleteFrom('push_subscriptions').where('user_id', '=', userId).where('id', '=', id).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    });
  }

  /** COI "validate": true when the value is this subscription's and in time (then it is validated). */
  async validate(userId: number, id: string, value: unknown): Promise<'ok' | 'invalid' | 'missing'> {
    const sub = await this.db.selectFrom('push_subscriptions').select(['created_at', 'validated']).where('user_id', '=', userId).where('id', '=', id).executeTakeFirst();
    if (!sub) return 'missing';
    const now = this.o.clock.now();
    if (!checkValidation(this.keys().secret, userId, id, Number(sub.created_at), value, now)) {
      await this.o.strikes.hit(String(userId));
      return 'invalid';
    }
    await this.db.updateTable('push_subscriptions').set({ validated: 1 }).where('user_id', '=', userId).where('id', '=', id).where('created_at', '=', Number(sub.created_at)).execute();
    return 'ok';
  }

  // ---- settings and mutes ----

  async settings(userId: number): Promise<PushSettings> {
    const r = await this.db.selectFrom('push_settings').selectAll().where('user_id', '=', userId).executeTakeFirst();
    return { enabled: r ? Number(r.enabled) === 1 : true, contentFree: r ? Number(r.content_free) === 1 : false };
  }

  async updateSettings(userId: number, patch: Partial<PushSettings>): Promise<PushSettings> {
    const next = { ...(await this.settings(userId)), ...patch };
    const values = { enabled: next.enabled ? 1 : 0, content_free: next.contentFree ? 1 : 0 };
    await this.db
      .insertInto('push_settings')
      .values({ user_id: userId, ...values })
      .onConflict((oc) => oc.column('user_id').doUpdateSet(values))
      .execute();
    return next;
  }

  async mutes(userId: number): Promise<string[]> {
    const rows = await this.db.selectFrom('push_mutes').select('conversation_id').where('user_id', '=', userId).orderBy('conversation_id').execute();
    return rows.map((r) => r.conversation_id);
  }

  async setMuted(userId: number, conversationId: string, muted: boolean): Promise<void> {
    if (muted) {
      await this.db.insertInto('push_mutes').values({ user_id: userId, conversation_id: conversationId }).onConflict((oc) => oc.columns(['user_id', 'conversation_id']).doNothing()).execute();
    } else {
      await this.db.deleteFrom('push_mutes').where('user_id', '=', userId).where('conversation_id', '=', conversationId).execute();
      return;
    }
    // Pushes of this conversation still waiting are dropped.
    await this.db.deleteFrom('push_queue').where('user_id', '=', userId).where('conversation_id', '=', conversationId).where('kind', '=', 'message').execute();
  }

  // ---- triggers ----

  private onEvent(e: BusEvent): void {
    if (e.type !== 'message' || this.stopped) return;
    // One at a time, in bus (seq) order.
    const p = this.chain.then(() => this.enqueueMessage(e)).catch((err) => this.o.logger.warn({ err }, 'could not queue pushes'));
    this.chain = p;
    this.bookkeeping.add(p);
    void p.finally(() => this.bookkeeping.delete(p));
  }

  /** Queues one push per validated subscription of each local recipient but the sender. */
  async enqueueMessage(e: Extract<BusEvent, { type: 'message' }>): Promise<void> {
    let m: { id?: unknown; from?: unknown; to?: unknown; sentAt?: unknown; message?: unknown; rich?: { type?: unknown } };
    try {
      m = JSON.parse(e.json);
    } catch {
      return;
    }
    if (typeof m.id !== 'string' || typeof m.from !== 'string') return;
    if (!NOTIFYING.has(m.rich?.type as string | undefined)) return;
    const suffix = `@${this.o.domain}`;
    const names = e.recipients.filter((a) => a !== m.from && a.endsWith(suffix)).map((a) => a.slice(0, -suffix.length));
    if (names.length === 0) return;
    const subs = await this.db
      .selectFrom('push_subscriptions as s')
      .innerJoin('users as u', 'u.id', 's.user_id')
      .leftJoin('push_settings as p', 'p.user_id', 's.user_id')
      .select(['s.user_id', 's.id', 'p.content_free'])
      .where('u.username', 'in', names)
      .where('u.removed_at', 'is', null)
      .where('s.validated', '=', 1)
      .where('s.msgtype', 'in', ['chat', 'all'])
      .where((eb) => eb.or([eb('p.enabled', 'is', null), eb('p.enabled', '=', 1)]))
      .where(({ not, exists, selectFrom }) =>
        not(exists(selectFrom('push_mutes as x').select('x.user_id').whereRef('x.user_id', '=', 's.user_id').where('x.conversation_id', '=', e.conversationId))),
      )
      .execute();
    if (subs.length === 0) return;
    const info = {
      seq: e.seq,
      conversationId: e.conversationId,
      id: m.id,
      from: m.from,
      sentAt: typeof m.sentAt === 'string' ? m.sentAt : '',
      text: typeof m.message === 'string' ? m.message : '',
      group: Array.isArray(m.to) && new Set([...(m.to as unknown[]), m.from]).size > 2,
    };
    const now = this.o.clock.now();
    const topic = topicOf(e.conversationId);
    for (const s of subs) {
      await this.db
        .insertInto('push_queue')
        .values({
          user_id: Number(s.user_id),
          subscription_id: s.id,
          kind: 'message',
          message_seq: e.seq,
          conversation_id: e.conversationId,
          payload: messagePayload(info, Number(s.content_free ?? 0) === 1),
          ttl: this.o.config.ttlSeconds,
          urgency: 'high',
          topic,
          created_at: now,
          next_attempt_at: now + this.o.config.delayMs,
        })
        .onConflict((oc) => oc.columns(['user_id', 'subscription_id', 'kind', 'message_seq']).doNothing())
        .execute();
    }
    this.schedule(this.o.config.delayMs);
  }

  // ---- delivery ----

  private schedule(inMs: number): void {
    if (this.stopped) return;
    const at = this.o.clock.now() + Math.min(inMs, this.o.config.sweepIntervalMs);
    if (this.timer && at >= this.wakeAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.wakeAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.wakeAt = Infinity;
      if (this.running) {
        this.schedule(50);
        return;
      }
      this.running = this.runDue()
        .catch((err) => this.o.logger.warn({ err }, 'push delivery sweep failed'))
        .finally(() => {
          this.running = null;
          this.schedule(this.o.config.sweepIntervalMs);
        });
    }, Math.max(0, at - this.o.clock.now()));
    this.timer.unref();
  }

  /** Sends every due push (claimed with a lease: one instance per row). */
  async runDue(): Promise<void> {
    await this.expireUnvalidated();
    for (;;) {
      if (this.stopped) return;
      const now = this.o.clock.now();
      const due = await this.db
        .selectFrom('push_queue')
        .select('id')
        .where('next_attempt_at', '<=', now)
        .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
        .orderBy('next_attempt_at')
        .orderBy('id')
        .limit(BATCH)
        .execute();
      if (due.length === 0) return;
      const jobs: Promise<unknown>[] = [];
      let claimed = 0;
      for (const { id } of due) {
        const r = await this.db
          .updateTable('push_queue')
          .set({ lease_owner: this.owner, lease_until: now + this.leaseMs() })
          .where('id', '=', Number(id))
          .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) continue;
        claimed++;
        jobs.push(this.deliver(Number(id)).catch((err) => this.o.logger.warn({ err }, 'push delivery failed')));
        if (jobs.length >= CONCURRENCY) await Promise.allSettled(jobs.splice(0));
      }
      await Promise.allSettled(jobs);
      if (claimed === 0) return;
    }
  }

  private leaseMs(): number {
    return 2 * this.o.config.requestTimeoutMs + 5000;
  }

  /** Unvalidated subscriptions past their time are discarded; each counts as a strike against its user. */
  private async expireUnvalidated(): Promise<void> {
    const now = this.o.clock.now();
    const late = await this.db.selectFrom('push_subscriptions').select(['user_id', 'id', 'created_at']).where('validated', '=', 0).where('validate_by', '<', now).limit(100).execute();
    for (const s of late) {
      const gone = await this.db.transaction().execute(async (trx) => {
        const r = await trx
          .deleteFrom('push_subscriptions')
          .where('user_id', '=', Number(s.user_id))
          .where('id', '=', s.id)
          .where('created_at', '=', Number(s.created_at))
          .where('validated', '=', 0)
          .executeTakeFirst();
        if (Number(r.numDeletedRows) === 0) return false;
        await trx.deleteFrom('push_queue').where('user_id', '=', Number(s.user_id)).where('subscription_id', '=', s.id).execute();
        return true;
      });
      if (gone) {
        await this.o.strikes.hit(String(s.user_id));
        this.o.logger.info({ userId: s.user_id, subscription: s.id }, 'push subscription not validated in time: discarded');
      }
    }
  }

  private async finish(id: number): Promise<void> {
    await this.db.deleteFrom('push_queue').where('id', '=', id).where('lease_owner', '=', this.owner).execute();
  }

  private async deliver(id: number): Promise<void> {
    const job = await this.db.selectFrom('push_queue').selectAll().where('id', '=', id).where('lease_owner', '=', this.owner).executeTakeFirst();
    if (!job) return;
    const userId = Number(job.user_id);
    const sub = await this.db.selectFrom('push_subscriptions').selectAll().where('user_id', '=', userId).where('id', '=', job.subscription_id).executeTakeFirst();
    if (!sub) return this.finish(id);
    if (job.kind === 'message' && (await this.suppressed(userId, job.conversation_id!, Number(job.message_seq), sub.validated))) return this.finish(id);
    const details = webpush.generateRequestDetails({ endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } }, job.payload, {
      vapidDetails: { subject: this.o.config.subject, publicKey: this.keys().publicKey, privateKey: this.keys().privateKey },
      TTL: Number(job.ttl),
      urgency: job.urgency as webpush.Urgency,
      ...(job.topic ? { topic: job.topic } : {}),
      ...(job.kind === 'validation' ? { headers: { 'WebPush-Validation': '' } } : {}),
      contentEncoding: 'aes128gcm',
    });
    const now = this.o.clock.now();
    let status = 0;
    let retryAfter: number | null = null;
    let error = '';
    try {
      const res = await request(details.endpoint, {
        method: 'POST',
        headers: details.headers as Record<string, string>,
        body: details.body ?? undefined,
        headersTimeout: this.o.config.requestTimeoutMs,
        bodyTimeout: this.o.config.requestTimeoutMs,
        maxRedirections: 0,
        dispatcher: this.agent,
      } as Parameters<typeof request>[1]);
      status = res.statusCode;
      retryAfter = retryAfterMs(res.headers['retry-after'], now);
      const text = await res.body.text().catch(() => '');
      error = `${status} ${text.slice(0, 200)}`;
    } catch (err) {
      error = String((err as Error).message ?? err).slice(0, 200);
      const cause = (err as { cause?: unknown }).cause;
      if (err instanceof PeerNetworkError || cause instanceof PeerNetworkError) {
        const e = (err instanceof PeerNetworkError ? err : cause) as PeerNetworkError;
        if (e.code === 'blocked_address') {
          // Not a passing failure: the endpoint's name points inside. Retrying will not help.
          this.o.logger.warn({ userId, subscription: sub.id, kind: job.kind, error: storableText(e.message) }, 'push endpoint resolves to a non-public address: subscription removed');
          await this.remove(userId, sub.id);
          if (job.kind === 'validation') await this.o.strikes.hit(String(userId));
          return;
        }
      }
    }
    const log = { userId, subscription: sub.id, kind: job.kind, status, attempts: Number(job.attempts) + 1 };
    if (status >= 200 && status < 300) {
      this.o.logger.debug(log, 'push sent');
      return this.finish(id);
    }
    if (status === 404 || status === 410) {
      // The push service says the subscription is gone: remove it (the client re-subscribes).
      this.o.logger.info(log, 'push subscription expired at the push service: removed');
      await this.remove(userId, sub.id);
      if (job.kind === 'validation') await this.o.strikes.hit(String(userId));
      return;
    }
    const retryable = status === 0 || status === 429 || status >= 500;
    const attempts = Number(job.attempts) + 1;
    const expired = now - Number(job.created_at) > Number(job.ttl) * 1000;
    if (!retryable || attempts >= MAX_ATTEMPTS || expired) {
      this.o.logger.warn({ ...log, error: storableText(error) }, retryable ? 'push given up after retries' : 'push refused by the push service: dropped');
      if (job.kind === 'validation' && !retryable) await this.o.strikes.hit(String(userId));
      return this.finish(id);
    }
    const delay = retryAfter ?? Math.min(3_600_000, 2000 * 2 ** (attempts - 1));
    await this.db
      .updateTable('push_queue')
      .set({ attempts, next_attempt_at: now + delay, last_error: storableText(error), lease_owner: null, lease_until: null })
      .where('id', '=', id)
      .where('lease_owner', '=', this.owner)
      .execute();
    this.o.logger.info({ ...log, retryInMs: delay }, 'push deferred by the push service');
    this.schedule(delay);
  }

  /** Not pushed: the user read it meanwhile (a live client), muted the conversation, or turned pushes off. */
  private async suppressed(userId: number, conversationId: string, seq: number, validated: number): Promise<boolean> {
    if (Number(validated) !== 1) return true;
    const u = await this.db.selectFrom('users').select('username').where('id', '=', userId).executeTakeFirst();
    if (!u) return true;
    const address = `${u.username}@${this.o.domain}`;
    const marker = await this.db.selectFrom('read_markers').select('last_read_seq').where('address', '=', address).where('conversation_id', '=', conversationId).executeTakeFirst();
    if (marker && Number(marker.last_read_seq) >= seq) return true;
    const muted = await this.db.selectFrom('push_mutes').select('user_id').where('user_id', '=', userId).where('conversation_id', '=', conversationId).executeTakeFirst();
    if (muted) return true;
    return !(await this.settings(userId)).enabled;
  }
}
