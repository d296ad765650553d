import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { bearerToken } from '../http/app.js';
import { HttpError, unauthorized } from '../http/errors.js';
import { OAuthError, type Principal } from './service.js';

/** Resolves the request's access token to a user, or answers 401. */
export async function requireUser(ctx: AppContext, req: FastifyRequest): Promise<Principal> {
  const token = bearerToken(req);
  const principal = await ctx.auth.authenticate(token);
  if (!principal) throw unauthorized('the access token is invalid, expired or revoked', 'invalid_token');
  return principal;
}

function params(req: FastifyRequest): Record<string, unknown> {
  const b = req.body;
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new OAuthError(400, 'invalid_request', 'send grant_type and its parameters as application/x-www-form-urlencoded (or a JSON object)');
  return b as Record<string, unknown>;
}

function str(p: Record<string, unknown>, name: string): string {
  const v = p[name];
  if (typeof v !== 'string' || v === '') throw new OAuthError(400, 'invalid_request', `missing parameter "${name}"`);
  if (v.length > 4096) throw new OAuthError(400, 'invalid_request', `parameter "${name}" is too long`);
  return v;
}

export function authRoutes(app: FastifyInstance, ctx: AppContext): void {
  // RFC 6749 §4.3 (password) and §6 (refresh_token). Errors per §5.2.
  app.post('/token', async (req, reply) => {
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache');
    try {
      const p = params(req);
      const grant = str(p, 'grant_type');
      if (grant === 'password') {
        return await ctx.auth.passwordGrant(str(p, 'username'), str(p, 'password'), req.ip);
      }
      if (grant === 'refresh_token') {
        return await ctx.auth.refreshGrant(str(p, 'refresh_token'));
      }
      throw new OAuthError(400, 'unsupported_grant_type', `grant_type "${grant.slice(0, 40)}" is not supported; use password or refresh_token`);
    } catch (err) {
      if (err instanceof OAuthError) {
        const headers: Record<string, string> = {};
        if (err.retryAfterMs > 0) headers['retry-after'] = String(Math.ceil(err.retryAfterMs / 1000));
        throw new HttpError(err.status, err.code, err.message, headers, { error_description: err.message });
      }
      throw err;
    }
  });

  // RFC 7009 token revocation: always 200, whether or not the token was known.
  app.post('/revoke', async (req) => {
    const p = req.body as Record<string, unknown> | undefined;
    if (!p || typeof p !== 'object' || typeof p.token !== 'string' || p.token === '') {
      throw new HttpError(400, 'invalid_request', 'missing parameter "token"', {}, { error_description: 'missing parameter "token"' });
    }
    await ctx.auth.revokeToken(p.token);
    return {};
  });

  // Logout of the calling session.
  app.post('/logout', async (req, reply) => {
    const principal = await requireUser(ctx, req);
    await ctx.auth.revokeSession(principal.sessionId);
    reply.code(204);
  });

  app.get('/me', async (req) => {
    const p = await requireUser(ctx, req);
    return { username: p.username, address: p.address, tokenExpiresAt: new Date(p.expiresAt).toISOString() };
  });
}
