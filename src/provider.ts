// A whole provider as one object: create (composition root), start (listen), destroy (graceful
// shutdown). Tests start several in one process; the CLI's `serve` starts one.
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { LookupAll } from './federation/net.js';
import type { Config } from './config/config.js';
import type { AppContext, FederationPort } from './context.js';
import { openStorage } from './storage/db.js';
import { systemClock, type Clock } from './util/clock.js';
import { LocalBus, type EventBus } from './bus/bus.js';
import { Accounts } from './accounts/service.js';
import { Auth } from './auth/service.js';
import { MemoryRateLimiter, type RateLimiter } from './auth/limiter.js';
import { Cluster } from './cluster/cluster.js';
import { Messaging } from './messaging/service.js';
import { Realtime } from './realtime/hub.js';
import { clientCommands } from './realtime/commands.js';
import { buildApp } from './http/app.js';
import { HttpError } from './http/errors.js';
import { accountRoutes } from './accounts/routes.js';
import { authRoutes } from './auth/routes.js';
import { messagingRoutes } from './messaging/routes.js';
import { richRoutes } from './messaging/rich-routes.js';
import { Metrics } from './metrics/metrics.js';
import { Attachments } from './attachments/service.js';
import { attachmentRoutes } from './attachments/routes.js';
import { peersOf } from './attachments/peers.js';
import { inlineBinaryOnRoute } from './attachments/inline.js';
import { timingSafeEqual } from 'node:crypto';
import { Signals } from './signals/service.js';
import { signalsRoutes } from './signals/routes.js';
import { webRoutes } from './web/static.js';
import { Push } from './push/service.js';
import { pushRoutes } from './push/routes.js';
import { Rooms } from './rooms/service.js';
import { roomRoutes } from './rooms/routes.js';

export interface ProviderOptions {
  logger?: Logger;
  clock?: Clock;
  bus?: EventBus;
  /** Process-wide metrics (CPU, memory, event loop); off when several providers share a process. */
  defaultMetrics?: boolean;
  /** Builds the federation capability once the core exists (see src/federation/). */
  federation?: (ctx: AppContext, app: FastifyInstance) => Promise<(FederationPort & { start(): void | Promise<void>; stop(): Promise<void> }) | null>;
  /** DNS resolution for outbound requests to user-chosen URLs (Web Push endpoints); tests only. */
  lookup?: LookupAll;
}

export function createLogger(config: Config): Logger {
  return pino({
    level: config.logLevel,
    base: { domain: config.domain },
    // Never log credentials, even if a future log line includes headers or bodies.
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'password', '*.password', 'token', '*.token', 'access_token', 'refresh_token', 'private_jwk', '*.d'],
      censor: '[redacted]',
    },
  });
}

export class Provider {
  private started = false;
  private housekeeping: NodeJS.Timeout | null = null;

  private constructor(
    readonly ctx: AppContext,
    readonly app: FastifyInstance,
    readonly realtime: Realtime,
    private readonly federation: (FederationPort & { start(): void | Promise<void>; stop(): Promise<void> }) | null,
    readonly attachments: Attachments,
    /** Set when INTERTALK_REDIS is (several instances of one provider). */
    readonly cluster: Cluster | null = null,
    readonly push: Push | null = null,
    private readonly shutdown: { closing: boolean } = { closing: false },
  ) {}

  static async create(config: Config, opts: ProviderOptions = {}): Promise<Provider> {
    const logger = opts.logger ?? createLogger(config);
    const clock = opts.clock ?? systemClock;
    const storage = await openStorage(config.database);
    // Several instances (INTERTALK_REDIS): live events, session revocation and rate limits are
    // shared through Redis (src/cluster/). Messaging binds late: the bus fills gaps from it.
    let messagingRef: Messaging | null = null;
    const cluster = config.redis
      ? new Cluster({
          url: config.redis,
          domain: config.domain,
          logger,
          source: {
            maxSeq: () => messagingRef!.maxSeq(),
            committedAfter: (after, upTo, limit) => messagingRef!.committedAfter(after, upTo, limit),
          },
        })
      : null;
    const bus = opts.bus ?? cluster?.bus ?? new LocalBus();
    const now = () => clock.now();
    const limiter = (name: string, limit: number, windowMs: number): RateLimiter =>
      cluster ? cluster.limiter(name, limit, windowMs, now) : new MemoryRateLimiter(limit, windowMs, now);
    const accounts = new Accounts(storage.db, config.domain, clock);
    const auth = new Auth(storage.db, accounts, clock, {
      accessTtlMs: config.accessTokenTtlMs,
      refreshTtlMs: config.refreshTokenTtlMs,
      // Failed logins per 15 minutes: 10 per account from one client, 50 per client, 100 per
      // account from all clients (see Auth.passwordGrant).
      perAccountClient: limiter('login-pair', 10, 15 * 60_000),
      perClient: limiter('login-ip', 50, 15 * 60_000),
      perAccount: limiter('login', 100, 15 * 60_000),
    });
    auth.onRevoke((sessionId) => bus.publish({ type: 'session-revoked', sessionId }));
    // A session ended on another instance: its tokens stop working here at once.
    bus.subscribe((e) => {
      if (e.type === 'session-revoked') auth.dropCachedSession(e.sessionId);
    });
    // Shared database: seq order must be commit order across instances (see Messaging).
    const messaging = new Messaging(storage.db, config.domain, clock, bus, () => storage.scrubSoon(), storage.dialect === 'postgres');
    messagingRef = messaging;
    if (cluster) {
      try {
        await cluster.start();
      } catch (err) {
        await cluster.bus.close().catch(() => undefined);
        await storage.close().catch(() => undefined);
        throw err;
      }
    }
    const attachments = new Attachments({ db: storage.db, config, clock, bus, logger });
    await attachments.init();
    const ctx: AppContext = {
      config,
      logger,
      clock,
      storage,
      bus,
      accounts,
      auth,
      messaging,
      rateLimiter: limiter,
      registrationLimiter: limiter('register', config.registrationsPerHour, 3_600_000),
      sendLimiter: limiter('send', Math.max(1, Math.ceil(config.sendRatePerMinute / 6)), 10_000),
      federation: null,
      attachments,
      metrics: new Metrics({ defaultMetrics: opts.defaultMetrics ?? true, connections: () => realtimeRef?.connectionCount ?? 0 }),
      rooms: new Rooms({ db: storage.db, domain: config.domain, clock, bus, postLimiter: limiter('room-post', config.roomPostRatePerMinute, 60_000) }),
      signals: new Signals({ db: storage.db, domain: config.domain, clock, bus, logger, skewMs: config.clockSkewMs, outbound: () => ctx.federation }),
    };
    let realtimeRef: Realtime | null = null;
    const app = buildApp(config, logger);
    const realtime = new Realtime({
      auth,
      messaging,
      bus,
      logger,
      authTimeoutMs: config.wsAuthTimeoutMs,
      heartbeatMs: config.wsHeartbeatMs,
      allowedOrigins: config.corsOrigins === '*' ? null : config.corsOrigins,
      pendingPerClient: config.wsPendingPerClient,
      commands: clientCommands(ctx, app),
      // As Fastify's req.ip with trustProxy: the first X-Forwarded-For address, else the socket's.
      clientIp: (req) => {
        const forwarded = config.trustProxy ? req.headers['x-forwarded-for'] : undefined;
        const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
        return first || req.socket.remoteAddress || '';
      },
    });
    realtimeRef = realtime;
    const federation = opts.federation ? await opts.federation(ctx, app) : null;
    ctx.federation = federation;
    attachments.usePeers(peersOf(federation, config.domain));
    // Seed-000 inline files (base64 messageFormatted) may make POST /messages bigger than maxBody.
    app.addHook('onRoute', inlineBinaryOnRoute(config));

    app.get('/healthz', async () => {
      await storage.db.selectFrom('users').select('id').limit(1).execute();
      return { status: 'ok', domain: config.domain };
    });
    app.get('/metrics', async (req, reply) => {
      const token = config.metricsToken;
      const given = (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '');
      const allowed = token
        ? given.length === token.length && timingSafeEqual(Buffer.from(given), Buffer.from(token))
        : ['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(req.socket.remoteAddress ?? '');
      if (!allowed) throw new HttpError(403, 'forbidden', token ? 'metrics need the INTERTALK_METRICS_TOKEN bearer token' : 'metrics are served to loopback clients only (set INTERTALK_METRICS_TOKEN)');
      reply.header('content-type', ctx.metrics.registry.contentType);
      return ctx.metrics.registry.metrics();
    });
    accountRoutes(app, ctx);
    authRoutes(app, ctx);
    messagingRoutes(app, ctx);
    richRoutes(app, ctx);
    attachmentRoutes(app, ctx, attachments);
    signalsRoutes(app, ctx);
    const push = new Push({ db: storage.db, config: config.push, domain: config.domain, clock, bus, logger, strikes: limiter('push-invalid', 5, 3_600_000), ...(opts.lookup ? { lookup: opts.lookup } : {}) });
    await push.init();
    pushRoutes(app, ctx, push);
    roomRoutes(app, ctx);
    // The browser client (web/, built into dist/web) at "/".
    webRoutes(app, logger);
    // While we shut down, a response to a request that was already running closes its
    // connection: otherwise a peer's kept-alive connection (pipelined batches in flight) would
    // hold app.close() for the whole keep-alive timeout. New requests get Fastify's 503.
    const shutdown = { closing: false };
    app.addHook('onSend', (_req, reply, payload, done) => {
      if (shutdown.closing) reply.header('connection', 'close');
      done(null, payload);
    });

    app.server.on('upgrade', (req, socket, head) => {
      const path = (req.url ?? '').split('?')[0];
      if (path === '/messages' || path === '/messageStream') realtime.handleUpgrade(req, socket, head);
      else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
    return new Provider(ctx, app, realtime, federation, attachments, cluster, push, shutdown);
  }

  get config(): Config {
    return this.ctx.config;
  }

  /** Listens on INTERTALK_LISTEN (port 0 picks a free port). Returns the base URL. */
  async start(): Promise<string> {
    await this.app.listen({ host: this.config.listen.host, port: this.config.listen.port });
    this.started = true;
    await this.federation?.start();
    this.ctx.rooms.start();
    this.attachments.start();
    this.push?.start();
    this.housekeeping = setInterval(() => {
      this.ctx.auth.purgeExpired().catch((err) => this.ctx.logger.warn({ err }, 'token purge failed'));
    }, 10 * 60_000);
    this.housekeeping.unref();
    const addr = this.app.server.address() as AddressInfo;
    const scheme = this.config.tls ? 'https' : 'http';
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const url = `${scheme}://${host}:${addr.port}`;
    this.ctx.logger.info({ url, domain: this.config.domain, publicUrl: this.config.publicUrl }, 'intertalk provider listening');
    if (this.config.domain !== 'localhost' && !this.config.publicUrl.startsWith('https://')) {
      this.ctx.logger.warn(
        { publicUrl: this.config.publicUrl },
        'INTERTALK_PUBLIC_URL is not https: other providers will not federate with this one (set it to the https URL peers reach, or serve TLS)',
      );
    }
    return url;
  }

  get port(): number {
    return (this.app.server.address() as AddressInfo).port;
  }

  /** Graceful shutdown: stop accepting, let in-flight requests finish, close sockets with 1001. */
  async destroy(): Promise<void> {
    if (this.housekeeping) clearInterval(this.housekeeping);
    await this.attachments.stop();
    await this.push?.stop();
    await this.ctx.rooms.stop();
    await this.federation?.stop();
    await this.realtime.close();
    this.shutdown.closing = true;
    if (this.started) await this.app.close();
    else await this.app.close().catch(() => undefined);
    await this.ctx.bus.close();
    if (this.cluster && this.cluster.bus !== this.ctx.bus) await this.cluster.bus.close();
    await this.ctx.storage.close();
  }
}
