// POST /attachments (upload: raw bytes, Content-Type = the file's type) and
// GET /attachments/{id} (download: our users, peer providers, capability links).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import type { Principal } from '../auth/service.js';
import { requireUser } from '../auth/routes.js';
import { clientBucket, type RateLimiter } from '../auth/limiter.js';
import { bearerToken, looksLikeJwt } from '../http/app.js';
import { HttpError, notFound, tooMany, unauthorized } from '../http/errors.js';
import type { Access, Attachments, Decision } from './service.js';

/** Served as they are and shown inline; every other type is a download. */
const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif', 'image/bmp']);
/** Types a browser would run or render as a document: served as application/octet-stream. */
const ACTIVE = /^(text\/(html|javascript|ecmascript|css|xml|xsl|cache-manifest)|application\/(xhtml\+xml|xml|javascript|ecmascript|x-javascript|wasm|xslt\+xml)|image\/svg\+xml|[a-z0-9.+-]+\/[a-z0-9.+-]*\+xml)$/;

function essence(mediaType: string): string {
  return mediaType.split(';')[0]!.trim().toLowerCase();
}

/** Content-Disposition with an ASCII fallback and the RFC 8187 UTF-8 name. */
function disposition(kind: 'inline' | 'attachment', name: string | null): string {
  if (!name) return kind;
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const utf8 = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${utf8}`;
}

export function attachmentRoutes(app: FastifyInstance, ctx: AppContext, attachments: Attachments): void {
  const uploads = ctx.rateLimiter('att-upload', 60, 60_000);
  const userDownloads = ctx.rateLimiter('att-user', 1200, 60_000);
  const peerDownloads = ctx.rateLimiter('att-peer', 6000, 60_000);
  const linkDownloads = ctx.rateLimiter('att-link', 600, 60_000);
  const max = attachments.maxBytes;

  const limit = async (limiter: RateLimiter, key: string) => {
    const r = await limiter.hit(key);
    if (!r.allowed) throw tooMany('too many attachment requests; slow down', r.retryAfterMs / 1000);
  };

  // The upload takes any Content-Type as raw bytes: a parser for that exists only in this
  // encapsulated scope; every other route keeps JSON and forms only (415 otherwise).
  app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: max }, (_req, body, done) => done(null, body));
    scope.setErrorHandler((err: Error & { code?: string }, _req, reply) => {
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        reply.code(413).send({ error: 'payload_too_large', message: `attachments are limited to ${max} bytes` });
        return;
      }
      if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        reply.code(415).send({ error: 'unsupported_media_type', message: 'Content-Type: the media type of the file, e.g. image/png' });
        return;
      }
      throw err; // the app's handler
    });
    scope.post(
      '/attachments',
      {
        bodyLimit: max,
        // Authenticated and rate-limited before the body is read.
        onRequest: async (req) => {
          const user = await requireUser(ctx, req);
          await limit(uploads, user.address);
          const declared = Number(req.headers['content-length']);
          if (Number.isFinite(declared) && declared > 0 && declared <= max) {
            if ((await attachments.usedQuota(user.address)) + declared > ctx.config.attachmentQuota) {
              throw new HttpError(429, 'quota_exceeded', `you may upload ${ctx.config.attachmentQuota} bytes per 24 hours`, { 'retry-after': '3600' });
            }
          }
          (req as FastifyRequest & { uploader?: Principal }).uploader = user;
        },
      },
      async (req, reply) => {
        const user = (req as FastifyRequest & { uploader?: Principal }).uploader!;
        const body = req.body;
        const data = Buffer.isBuffer(body) ? body : Buffer.alloc(0);
        const q = req.query as Record<string, unknown>;
        if (q.name !== undefined && typeof q.name !== 'string') throw new HttpError(400, 'invalid_request', 'name: once');
        const mediaType = (req.headers['content-type'] ?? 'application/octet-stream').trim();
        const res = await attachments.upload(user.address, data, mediaType, typeof q.name === 'string' ? q.name : null);
        reply.code(201).header('cache-control', 'no-store');
        return res;
      },
    );
  });

  const serve = async (req: FastifyRequest, reply: FastifyReply, access: Access) => {
    const data = await attachments.blob(access.id);
    if (!data) throw notFound('no such attachment');
    const type = essence(access.mediaType);
    const inline = INLINE_IMAGES.has(type);
    const etag = `"${access.id}"`;
    reply
      .header('x-content-type-options', 'nosniff')
      .header('content-security-policy', "sandbox; default-src 'none'; img-src 'self'; media-src 'self'")
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'private, no-cache')
      .header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    reply
      .header('content-type', ACTIVE.test(type) ? 'application/octet-stream' : access.mediaType)
      .header('content-disposition', disposition(inline ? 'inline' : 'attachment', access.name))
      .header('content-length', String(data.length));
    return reply.send(data);
  };

  app.get('/attachments/:id', async (req, reply) => {
    const id = (req.params as { id: string }).id;
    const q = req.query as Record<string, unknown>;
    let decision: Decision;
    if (q.key !== undefined || q.c !== undefined) {
      // A capability link from a plain peer's message: no account, the key is the credential.
      await limit(linkDownloads, clientBucket(req.ip));
      decision = await attachments.forLink(id, q.c, q.key);
    } else {
      const token = bearerToken(req);
      if (looksLikeJwt(token)) {
        // A peer provider fetching a file one of our users sent to one of its users.
        const peers = attachments.peerAccess;
        if (!peers) throw new HttpError(403, 'federation_disabled', 'this provider does not federate');
        const auth = await peers.verify(req.headers.authorization, `GET /attachments/${id}`);
        if (!auth.ok) {
          if (auth.status === 401) throw unauthorized(auth.message, auth.error);
          throw new HttpError(auth.status, auth.error, auth.message, auth.retryAfterSeconds ? { 'retry-after': String(Math.ceil(auth.retryAfterSeconds)) } : {});
        }
        await limit(peerDownloads, auth.iss);
        decision = await attachments.forPeer(auth.sub, id);
      } else {
        const user = await requireUser(ctx, req);
        await limit(userDownloads, user.address);
        decision = await attachments.forUser(user.address, id);
      }
    }
    if (decision.kind === 'none') throw notFound('no such attachment');
    if (decision.kind === 'unavailable') {
      if (decision.retryable) throw new HttpError(503, 'attachment_unavailable', `not fetched yet: ${decision.reason}`, { 'retry-after': '30' });
      throw new HttpError(502, 'attachment_unavailable', decision.reason);
    }
    return serve(req, reply, decision.access);
  });
}
