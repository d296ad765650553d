// The personal-domain capability, assembled (issue 14, docs/indieweb.md): attached domains and
// their verification (domains.ts), delegation of inbound senders (delegation.ts, through the
// federation verifier), the outbound transport (transport.ts), and the /me/domains routes.
// Messaging learns only one thing: which local account an address at a verified personal domain
// reaches (Messaging.useAliases).
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import type { Federation } from '../federation/service.js';
import { requireUser } from '../auth/routes.js';
import { HttpError, tooMany } from '../http/errors.js';
import type { RateLimiter } from '../auth/limiter.js';
import { PersonalDomains, DomainError } from './domains.js';
import { Delegations } from './delegation.js';
import { PersonalDomainTransport } from './transport.js';
import { CallbackEndpoint, CallbackStore } from './callback.js';
import { CallbackTransport } from './callback-transport.js';

/** PUT /me/domains/{domain} runs a check (a home-page fetch): at most this many per account per hour. */
export const CHECKS_PER_HOUR = 60;

export class Indieweb {
  readonly domains: PersonalDomains;
  readonly delegations: Delegations;
  readonly transport: PersonalDomainTransport;
  /** The seed's callback flow: our endpoint (POST {publicUrl}/), its store, and the sender side. */
  readonly callbackStore: CallbackStore;
  readonly callback: CallbackEndpoint;
  readonly callbackTransport: CallbackTransport;
  private cleanupTimer: NodeJS.Timeout | null = null;
  /** Checks a user may ask for (each fetches a home page): CHECKS_PER_HOUR per account. */
  private readonly checkLimiter: RateLimiter;

  constructor(
    private readonly ctx: AppContext,
    fed: Federation,
  ) {
    const { config, clock, logger, storage } = ctx;
    const insecurePeers = config.federation.insecurePeers;
    this.domains = new PersonalDomains({
      db: storage.db,
      domain: config.domain,
      publicUrl: config.publicUrl,
      clock,
      http: fed.http,
      logger,
      recheckMs: config.indieweb.recheckMs,
      insecurePeers,
    });
    this.delegations = new Delegations({ http: fed.http, discovery: fed.discovery, clock, ttlMs: config.indieweb.cacheTtlMs, insecurePeers });
    this.transport = new PersonalDomainTransport({
      http: fed.http,
      discovery: fed.discovery,
      delegations: this.delegations,
      keys: fed.keys,
      clock,
      logger,
      timeoutMs: config.federation.requestTimeoutMs,
      ttlMs: config.indieweb.cacheTtlMs,
      isOurs: (d) => this.domains.isOurs(d),
      delivery: config.indieweb.delivery,
    });
    this.callbackStore = new CallbackStore({ db: storage.db, clock });
    this.callback = new CallbackEndpoint({
      db: storage.db,
      clock,
      logger,
      http: fed.http,
      store: this.callbackStore,
      delegations: this.delegations,
      domain: config.domain,
      endpoint: this.domains.serverUrl,
      isOurs: (d) => this.domains.isOurs(d),
      isBlocked: (d) => fed.blocklist.isBlocked(d),
      tokenTtlMs: config.indieweb.callbackTokenTtlMs,
      perIp: ctx.rateLimiter('callback-notify-ip', 600, 60_000),
      receive: (input) => fed.inbound.receiveByCallback(input),
    });
    this.callbackTransport = new CallbackTransport({
      http: fed.http,
      store: this.callbackStore,
      routes: this.transport,
      clock,
      logger,
      flow: config.indieweb.callbackFlow,
      timeoutMs: config.federation.requestTimeoutMs,
    });
    this.checkLimiter = ctx.rateLimiter('personal-domain-check', CHECKS_PER_HOUR, 3_600_000);
    ctx.messaging.useAliases((a) => this.domains.owner(a));
    fed.verifier.useDelegation(this.delegations.check, (a) => this.domains.owner(a) !== null);
    fed.addTransport(this.transport);
    fed.addTransport(this.callbackTransport);
  }

  async init(): Promise<void> {
    await this.domains.init();
  }

  start(): void {
    this.domains.start();
    this.cleanupTimer = setInterval(() => void this.callbackStore.cleanup().catch((err) => this.ctx.logger.warn({ err }, 'callback token cleanup failed')), 3_600_000);
    this.cleanupTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.cleanupTimer) clearInterval(this.cleanupTimer);
    this.cleanupTimer = null;
    await this.domains.stop();
  }

  routes(app: FastifyInstance): void {
    const ctx = this.ctx;
    const wrap = async <T>(fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof DomainError) throw new HttpError(err.status, err.code, err.message);
        throw err;
      }
    };
    const param = (req: { params: unknown }) => String((req.params as { domain?: string }).domain ?? '');
    // The seed's callback endpoint: the URL our users' home pages name (callback.ts).
    app.post('/', async (req, reply) => {
      const r = await this.callback.handle(req.body, req.ip);
      reply.code(r.status).headers(r.headers ?? {});
      return r.body;
    });
    app.get('/me/domains', async (req) => {
      const user = await requireUser(ctx, req);
      return { domains: await this.domains.list(user), publish: this.domains.publish('{domain}') };
    });
    app.get('/me/domains/:domain', async (req) => {
      const user = await requireUser(ctx, req);
      return wrap(async () => {
        const d = await this.domains.get(user, this.domains.normalise(param(req)));
        if (!d) throw new DomainError(404, 'not_found', 'this domain is not attached to your account');
        return d;
      });
    });
    // Attach (or re-check) a domain: answers with its state after one check and what to publish.
    app.put('/me/domains/:domain', async (req, reply) => {
      const user = await requireUser(ctx, req);
      const limit = await this.checkLimiter.hit(`check:${user.userId}`);
      if (!limit.allowed) throw tooMany('too many domain checks; try again later', limit.retryAfterMs / 1000);
      return wrap(async () => {
        const r = await this.domains.attach(user, param(req));
        reply.code(r.created ? 201 : 200);
        return r.domain;
      });
    });
    app.delete('/me/domains/:domain', async (req, reply) => {
      const user = await requireUser(ctx, req);
      return wrap(async () => {
        if (!(await this.domains.detach(user, param(req)))) throw new DomainError(404, 'not_found', 'this domain is not attached to your account');
        reply.code(204);
      });
    });
  }
}
