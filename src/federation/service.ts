// The federation capability, assembled: keys, discovery, outbound HTTP, the outbox worker,
// inbound verification, and its routes (/keys, /keys/{kid}, /.well-known/intertalk).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { decodeJwt } from 'jose';
import type { AppContext, DeliveryState, FederationPort } from '../context.js';
import { HttpError, notFound } from '../http/errors.js';
import { SigningKeys } from './keys.js';
import { PeerHttp, PeerNetworkError } from './net.js';
import { Discovery, ourWellKnown } from './discovery.js';
import { PeerKeyCache, PeerUnavailableError, type FetchJson } from './peer-keys.js';
import { FederationVerifier } from './verify.js';
import { OutboxWorker } from './outbox.js';
import { Inbound } from './inbound.js';
import { BATCH_EXTENSION, MAX_BATCH_BYTES, PIPELINE_EXTENSION } from './batch.js';
import { StreamOrder } from './stream-order.js';
import { Blocklist } from './blocklist.js';
import { RICH_EXTENSION, SIGNALS_EXTENSION } from '../protocol/rich.js';
import { SignalsFederation } from '../signals/federation.js';
import type { SignalBody } from '../signals/wire.js';
import { Transports, type DeliveryTransport } from './transports.js';
import { Indieweb } from '../indieweb/service.js';
import { EmailBridge, type EmailParts } from '../bridges/email/service.js';
import { chatMailFormat } from '../bridges/email/format.js';
import { autocryptCrypto } from '../bridges/email/crypto.js';

export const PROTOCOL_VERSIONS = ['intertalk-2016', 'intertalk-2017'];
export const EXTENSIONS = ['message-id', 'delivery-ping', RICH_EXTENSION, SIGNALS_EXTENSION, BATCH_EXTENSION];

/**
 * What our well-known advertises. pipeline/1 only when we run as one instance: its ordering state
 * (stream-order.ts) is in this process's memory, and the batches of one stream may reach
 * different instances behind a load balancer (INTERTALK_REDIS: several instances).
 */
export function advertisedExtensions(config: { redis: string | null }): string[] {
  return config.redis === null ? [...EXTENSIONS, PIPELINE_EXTENSION] : [...EXTENSIONS];
}

export interface FederationOptions {
  /** Extra trusted CA (PEM) for outbound TLS; for test networks started in one process. */
  ca?: string;
  /** Test seams of the e-mail bridge (MX lookups, DNS for DKIM). */
  email?: Pick<EmailParts, 'resolveMx' | 'dnsResolver'>;
}

export class Federation implements FederationPort {
  readonly keys: SigningKeys;
  readonly http: PeerHttp;
  readonly discovery: Discovery;
  readonly peerKeys: PeerKeyCache;
  readonly verifier: FederationVerifier;
  readonly outbox: OutboxWorker;
  readonly blocklist: Blocklist;
  /** signals/1: POST /signals from peers, and best-effort signals to peers that advertise it. */
  readonly signals: SignalsFederation;
  /** Other ways to reach a destination than intertalk (src/federation/transports.ts). */
  readonly transports = new Transports();
  readonly inbound: Inbound;
  /** pipeline/1: the order of peers' pipelined batches; null when we run as several instances. */
  readonly streamOrder: StreamOrder | null;
  /** Personal domains (src/indieweb/): set by the factory below. */
  indieweb: Indieweb | null = null;
  /** The e-mail bridge (src/bridges/email/), when INTERTALK_EMAIL is on. */
  email: EmailBridge | null = null;

  constructor(
    private readonly ctx: AppContext,
    opts: FederationOptions = {},
  ) {
    const { config, storage, clock, logger, bus, messaging } = ctx;
    const f = config.federation;
    this.keys = new SigningKeys(storage.db, { domain: config.domain, clock, graceMs: f.keyGraceMs });
    this.http = new PeerHttp({
      resolve: f.resolve,
      insecurePeers: f.insecurePeers,
      timeoutMs: f.requestTimeoutMs,
      perPeerConcurrency: f.peerConcurrency,
      userAgent: `intertalk/${config.domain}`,
      ...(opts.ca ? { ca: opts.ca } : {}),
    });
    this.discovery = new Discovery({ http: this.http, clock, ttlMs: f.discoveryTtlMs, insecurePeers: f.insecurePeers });
    const fetchJson: FetchJson = async (domain, path) => {
      // Our own policy refusing the peer (plain http without opt-in, a non-public address) means
      // it publishes no key we may use: null, so the request is refused (401), not deferred.
      let base: string;
      try {
        base = (await this.discovery.resolve(domain)).baseUrl;
      } catch (err) {
        if (err instanceof PeerNetworkError && err.policy) return null;
        throw new PeerUnavailableError(`cannot resolve ${domain}: ${(err as Error).message}`);
      }
      let res;
      try {
        res = await this.http.getJson(`${base}${path}`, { maxResponseBytes: 256 * 1024 });
      } catch (err) {
        if (err instanceof PeerNetworkError && err.policy) return null;
        throw new PeerUnavailableError(`cannot fetch ${path} from ${domain}: ${(err as Error).message}`);
      }
      if (res.status === 404) return null;
      if (res.status !== 200) throw new PeerUnavailableError(`${domain} answered ${res.status} for ${path}`);
      return { json: res.json, insecure: res.insecure };
    };
    this.peerKeys = new PeerKeyCache({ fetchJson, clock });
    this.verifier = new FederationVerifier({ db: storage.db, keys: this.peerKeys, domain: config.domain, clock, skewMs: config.clockSkewMs });
    this.blocklist = new Blocklist(storage.db, f.blockedDomains, clock);
    this.streamOrder = advertisedExtensions(config).includes(PIPELINE_EXTENSION) ? new StreamOrder({ waitMs: f.pipelineWaitMs, now: () => clock.now() }) : null;
    this.outbox = new OutboxWorker({
      db: storage.db,
      domain: config.domain,
      clock,
      bus,
      logger,
      keys: this.keys,
      discovery: this.discovery,
      http: this.http,
      maxAgeMs: f.maxAgeMs,
      sweepIntervalMs: f.sweepIntervalMs,
      timeoutMs: f.requestTimeoutMs,
      pipelineDepth: f.pipelineDepth,
      onAttempt: (outcome) => ctx.metrics.federationOutbound.inc({ outcome }),
      onBatchesInFlight: (n) => ctx.metrics.federationBatchesInFlight.set(n),
      isBlocked: (domain) => this.blocklist.isBlocked(domain),
      insecurePeers: f.insecurePeers,
      transports: this.transports,
    });
    this.inbound = new Inbound({
      db: storage.db,
      domain: config.domain,
      clock,
      messaging,
      accounts: ctx.accounts,
      verifier: this.verifier,
      blocklist: this.blocklist,
      maxRecipients: config.maxRecipients,
      maxAttachment: config.maxAttachment,
      maxBody: config.maxBody,
      skewMs: config.clockSkewMs,
      perPeer: ctx.rateLimiter('fed-messages-peer', f.inboundRatePerMinute, 60_000),
      perIp: ctx.rateLimiter('fed-messages-ip', f.inboundRatePerMinute, 60_000),
      onAccepted: () => ctx.metrics.messagesAccepted.inc({ origin: 'federation' }),
      onError: (err) => logger.error({ err }, 'storing a message of a batch failed'),
      onPeerSeen: (domain) => void this.outbox.peerIsUp(domain).catch((err) => logger.warn({ err, domain }, 'could not reset back-off')),
      streamOrder: this.streamOrder,
    });
    this.signals = new SignalsFederation({
      domain: config.domain,
      clock,
      logger,
      keys: this.keys,
      discovery: this.discovery,
      http: this.http,
      verifier: this.verifier,
      blocklist: this.blocklist,
      accounts: ctx.accounts,
      signals: () => ctx.signals,
      maxRecipients: config.maxRecipients,
      skewMs: config.clockSkewMs,
      timeoutMs: Math.min(f.requestTimeoutMs, 5_000),
      perPeer: ctx.rateLimiter('fed-signals-peer', 12_000, 60_000),
      perIp: ctx.rateLimiter('fed-signals-ip', 12_000, 60_000),
    });
  }

  async init(): Promise<void> {
    await this.keys.ensure();
  }

  routes(app: FastifyInstance): void {
    const { config } = this.ctx;
    app.get('/keys', async (_req, reply) => {
      reply.header('cache-control', 'public, max-age=300').header('content-type', 'application/jwk-set+json');
      return this.keys.publicJwks();
    });
    app.get('/keys/:kid', async (req, reply) => {
      const kid = (req.params as { kid: string }).kid;
      const jwk = await this.keys.publicJwk(kid);
      if (!jwk) throw notFound(`no key with kid "${kid.slice(0, 100)}"`, 'unknown_key');
      reply.header('cache-control', 'public, max-age=300').header('content-type', 'application/jwk+json');
      return jwk;
    });
    // A signed no-op for `intertalk federation check`: proves a peer can verify our tokens,
    // i.e. that it reaches our /keys. Stores nothing.
    app.post('/federation/ping', async (req, reply) => {
      const auth = req.headers.authorization;
      let sub: unknown;
      try {
        sub = decodeJwt((auth ?? '').replace(/^Bearer\s+/i, '')).sub;
      } catch {
        sub = undefined;
      }
      if (typeof sub !== 'string') throw new HttpError(401, 'invalid_token', 'send a JWT signed by your provider, with sub = an address at your domain');
      const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? '';
      const res = await this.verifier.verify(auth, raw, { from: sub, to: [sub, `postmaster@${config.domain}`] });
      if (!res.ok) {
        if (res.retryAfterSeconds) reply.header('retry-after', String(Math.ceil(res.retryAfterSeconds)));
        throw new HttpError(res.status, res.error, res.message);
      }
      return { ok: true, iss: res.iss, insecureKeys: res.insecureKeys, domain: config.domain };
    });
    // batch/1 from a peer: several messages under one token bound to the body (inbound.ts).
    app.post('/messages/batch', { bodyLimit: MAX_BATCH_BYTES }, async (req, reply) => {
      const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? '';
      const res = await this.inbound.receiveBatch({ authorization: req.headers.authorization, rawBody: raw, body: req.body, remoteIp: req.ip });
      this.ctx.metrics.federationInbound.inc({ status: String(res.status) });
      reply.code(res.status).headers(res.headers ?? {});
      return res.body;
    });
    // signals/1 from a peer: typing and read receipts (src/signals/federation.ts).
    app.post('/signals', async (req, reply) => {
      const raw = (req as FastifyRequest & { rawBody?: Buffer }).rawBody ?? '';
      const res = await this.signals.receive({ authorization: req.headers.authorization, rawBody: raw, body: req.body, remoteIp: req.ip });
      reply.code(res.status).headers(res.headers ?? {});
      return res.body;
    });
    app.get('/.well-known/intertalk', async (_req, reply) => {
      reply.header('cache-control', 'public, max-age=3600');
      return ourWellKnown({ publicUrl: config.publicUrl, versions: PROTOCOL_VERSIONS, extensions: advertisedExtensions(config) });
    });
  }

  async start(): Promise<void> {
    this.outbox.start();
    this.indieweb?.start();
    await this.email?.start();
  }

  async stop(): Promise<void> {
    await this.email?.stop();
    await this.indieweb?.stop();
    this.signals.stop();
    await this.outbox.stop();
    await this.http.close();
  }

  // --- FederationPort --------------------------------------------------------------------------

  receive(input: { token: string; rawBody: Buffer | string; body: unknown; remoteIp: string }) {
    return this.inbound.receive(input);
  }

  checkBeforeBody(input: { token: string; remoteIp: string }) {
    return this.inbound.checkBeforeBody(input);
  }

  enqueued(m: { seq: number; id: string; from: string; conversationId: string }, destinations: string[]): void {
    const insecure = this.ctx.config.federation.insecurePeers;
    for (const d of destinations) {
      this.ctx.bus.publish({ type: 'delivery', sender: m.from, messageId: m.id, seq: m.seq, conversationId: m.conversationId, destination: d, state: 'queued', error: null, insecure: insecure.has(d) });
      this.outbox.wake(d);
    }
  }

  async deliveries(seq: number): Promise<DeliveryState[]> {
    const rows = await this.ctx.storage.db
      .selectFrom('outbox')
      .select(['destination', 'state', 'attempts', 'last_error', 'next_attempt_at', 'delivered_at'])
      .where('message_seq', '=', seq)
      .orderBy('destination')
      .execute();
    const insecure = this.ctx.config.federation.insecurePeers;
    return rows.map((r) => ({
      destination: r.destination,
      state: r.state as DeliveryState['state'],
      attempts: Number(r.attempts),
      lastError: r.last_error,
      nextAttemptAt: r.state === 'queued' ? new Date(Number(r.next_attempt_at)).toISOString() : null,
      deliveredAt: r.delivered_at ? new Date(Number(r.delivered_at)).toISOString() : null,
      insecure: insecure.has(r.destination),
    }));
  }

  addTransport(t: DeliveryTransport): void {
    this.transports.add(t);
  }

  failAfterDelivery(destination: string, messageSeq: number, reason: string): Promise<boolean> {
    return this.outbox.failAfterDelivery(destination, messageSeq, reason);
  }

  sendSignal(domain: string, signal: SignalBody): void {
    if (this.transports.size === 0) return this.signals.send(domain, signal);
    // A destination reached by a transport that carries signals (e-mail) gets them its way.
    void this.transports
      .pick(domain)
      .then((t) => (t?.signal ? t.signal(domain, signal) : this.signals.send(domain, signal)))
      .catch((err: unknown) => this.ctx.logger.debug({ err, domain }, 'signal not sent'));
  }

  async refusal(domain: string): Promise<string | null> {
    if (await this.blocklist.isBlocked(domain)) return `${domain} is blocked by this provider`;
    return null;
  }
}

/** Factory for Provider.create: builds federation once the core exists. */
export function federation(opts: FederationOptions = {}) {
  return async (ctx: AppContext, app: FastifyInstance) => {
    const fed = new Federation(ctx, opts);
    await fed.init();
    fed.routes(app);
    // Personal domains ride on federation: its HTTP client, discovery, keys and verifier.
    fed.indieweb = new Indieweb(ctx, fed);
    await fed.indieweb.init();
    fed.indieweb.routes(app);
    // The e-mail bridge: a transport after the personal-domain ones, and an inbound reader.
    const e = ctx.config.email;
    if (e.enabled) {
      fed.email = new EmailBridge(ctx, fed, {
        format: chatMailFormat,
        crypto: (store) => autocryptCrypto({ store, logger: ctx.logger, mailDomain: e.mailDomain, maxBytes: e.maxBytes, now: () => ctx.clock.now() }),
        ...opts.email,
      });
      fed.email.routes(app);
    }
    return fed;
  };
}
