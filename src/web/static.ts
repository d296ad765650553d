// The web client: the browser app in web/, built by Vite into dist/web at install time
// (`npm run build`, run by `prepare`), served by every provider at "/" from the same origin as the
// API, so the app calls relative URLs and needs no CORS. Routes are in the URL's hash (#/c/{id}),
// so no app path ever shadows an API path; only the built files get routes (no wildcard, no SPA
// fallback) and every other path keeps the API's JSON 404.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import fastifyStatic from '@fastify/static';

/** dist/web, next to dist/src where this module is compiled to. */
export const DEFAULT_WEB_ROOT = fileURLToPath(new URL('../../web/', import.meta.url));

/**
 * The page's Content-Security-Policy: scripts, styles and everything else from this origin only
 * (no inline script, no eval, nothing from a CDN); images also from blob: (attachments are fetched
 * with the access token and shown as blob: URLs) and data:; the API and the WebSocket on this
 * origin. Remote images in messages could not load even if a bug let one through.
 */
export const WEB_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  "connect-src 'self' ws: wss:",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Registers the static routes; returns false (and serves nothing) when the app is not built. */
export function webRoutes(app: FastifyInstance, logger: Logger, root: string = DEFAULT_WEB_ROOT): boolean {
  if (!existsSync(join(root, 'index.html'))) {
    logger.warn({ root }, 'the web client is not built (run `npm run build`); "/" is not served');
    return false;
  }
  app.register(fastifyStatic, {
    root,
    prefix: '/',
    wildcard: false,
    index: ['index.html'],
    decorateReply: false,
    serveDotFiles: false,
    cacheControl: false,
    setHeaders(reply, path) {
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
      reply.header('cross-origin-opener-policy', 'same-origin');
      if (path.endsWith('.html')) {
        reply.header('content-security-policy', WEB_CSP);
        reply.header('x-frame-options', 'DENY');
        reply.header('cache-control', 'no-cache');
      } else if (/[\\/]assets[\\/]/.test(path)) {
        // File names carry a content hash.
        reply.header('cache-control', 'public, max-age=31536000, immutable');
      } else {
        reply.header('cache-control', 'public, max-age=3600');
      }
    },
  });
  return true;
}
