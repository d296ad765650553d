// The HTTP front: Fastify with strict body parsing, JSON errors for every rejection, CORS on
// every answer (errors and preflights included). Capabilities add their routes as plugins.
import { readFileSync } from 'node:fs';
import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { HttpError, unauthorized } from './errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(body: Buffer): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new HttpError(400, 'invalid_encoding', 'the body is not valid UTF-8');
  }
}

/** Every route an app registered (method, URL pattern): for the route fuzzer and docs checks. */
const registered = new WeakMap<FastifyInstance, Array<{ method: string; url: string }>>();

export function routesOf(app: FastifyInstance): ReadonlyArray<{ method: string; url: string }> {
  return registered.get(app) ?? [];
}

/** Options of Node's http(s) server: header size, TCP_NODELAY, TCP keep-alive probes. */
const SERVER_SOCKET_OPTIONS = { maxHeaderSize: 16 * 1024, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 };

export function buildApp(config: Config, logger: Logger): FastifyInstance {
  const https = config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : null;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.maxBody,
    trustProxy: config.trustProxy,
    // The reference history path carries base64url of every participant's address.
    routerOptions: { maxParamLength: 200_000 },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Per-request logs would dominate the message hot path; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // Peers keep a few connections open and send pipelined batches over them (pipeline/1):
    // Nagle off on every accepted socket, and idle connections kept well past a round trip.
    // Fastify hands Node only `https` when it is set (never `http`), so both carry these.
    ...(https ? { https: { ...https, ...SERVER_SOCKET_OPTIONS } } : {}),
    http: SERVER_SOCKET_OPTIONS,
    keepAliveTimeout: 72_000,
    // Malformed URLs and the like get our JSON error body too.
    frameworkErrors: (err: Error, _req: unknown, reply: { code(n: number): { send(b: unknown): void } }) => {
      reply.code(400).send({ error: 'invalid_request', message: err.message });
    },
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;

  const routes: Array<{ method: string; url: string }> = [];
  registered.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const method of Array.isArray(r.method) ? r.method : [r.method]) routes.push({ method, url: r.url });
  });

  app.removeAllContentTypeParsers();
  const parseJson = (req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: unknown) => void) => {
    try {
      // Kept for peer-request replay detection (the same token with the same body).
      (req as FastifyRequest & { rawBody?: Buffer }).rawBody = body;
      const text = decodeUtf8(body);
      if (text.trim() === '') return done(null, undefined);
      done(null, JSON.parse(text));
    } catch (err) {
      done(err instanceof HttpError ? err : new HttpError(400, 'invalid_json', `the body is not valid JSON: ${(err as Error).message}`), undefined);
    }
  };
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => parseJson(req, body as Buffer, done));
  app.addContentTypeParser(/^application\/[a-z0-9.-]+\+json(\s*;.*)?$/, { parseAs: 'buffer' }, (req, body, done) => parseJson(req, body as Buffer, done));
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'buffer' }, (_req, body, done) => {
    try {
      const params = new URLSearchParams(decodeUtf8(body as Buffer));
      const out: Record<string, string> = {};
      for (const [k, v] of params) {
        // RFC 6749 §3.2: parameters must not appear more than once.
        if (Object.hasOwn(out, k)) throw new HttpError(400, 'invalid_request', `parameter "${k}" appears more than once`);
        out[k] = v;
      }
      done(null, out);
    } catch (err) {
      done(err as Error, undefined);
    }
  });

  app.register(cors, {
    origin: config.corsOrigins === '*' ? '*' : config.corsOrigins,
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['Authorization', 'Content-Type'],
    exposedHeaders: ['Retry-After', 'Intertalk-Replayed'],
    maxAge: 86400,
    strictPreflight: false,
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof HttpError) {
      reply.headers(err.headers).code(err.status).send(err.body());
      return;
    }
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      req.log.error({ err }, 'request failed');
      reply.code(500).send({ error: 'internal_error', message: 'the server failed to handle this request' });
      return;
    }
    const code =
      err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? 'payload_too_large'
        : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? 'unsupported_media_type'
          : err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
            ? 'invalid_json'
            : 'invalid_request';
    const message =
      code === 'payload_too_large'
        ? `the body exceeds ${config.maxBody} bytes`
        : code === 'unsupported_media_type'
          ? `unsupported Content-Type "${req.headers['content-type'] ?? ''}"; send application/json`
          : err.message;
    reply.code(status).send({ error: code, message });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: 'not_found', message: `no route for ${req.method} ${req.url.split('?')[0]}` });
  });

  return app;
}

/** The bearer token of a request; the reference provider also accepted it without "Bearer ". */
export function bearerToken(req: FastifyRequest): string {
  const h = req.headers.authorization;
  if (!h) throw unauthorized('missing Authorization header', 'unauthorized');
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  const token = (m ? m[1]! : h).trim();
  if (!token || /\s/.test(token)) throw unauthorized('malformed Authorization header', 'unauthorized');
  return token;
}

/** A JWT (three base64url segments) is a peer provider's token; our access tokens contain no dots. */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/.test(token);
}

export function intParam(name: string, raw: unknown, opts: { min: number; max: number }): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (typeof raw !== 'string' || !/^\d{1,16}$/.test(raw)) throw new HttpError(400, 'invalid_request', `${name}: must be a non-negative integer`);
  const n = Number(raw);
  if (n < opts.min || n > opts.max) throw new HttpError(400, 'invalid_request', `${name}: must be between ${opts.min} and ${opts.max}`);
  return n;
}
