import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import { HttpError, tooMany } from '../http/errors.js';
import { AccountError } from './service.js';
import { clientBucket } from '../auth/limiter.js';

export function accountRoutes(app: FastifyInstance, ctx: AppContext): void {
  // Reference provider: POST /users {"username","password"} → 201.
  app.post('/users', async (req, reply) => {
    if (ctx.config.registration === 'closed') throw new HttpError(403, 'registration_closed', 'this provider does not accept new sign-ups');
    const body = req.body as Record<string, unknown> | undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'invalid_request', 'the body must be a JSON object with username and password');
    const limit = await ctx.registrationLimiter.hit(`register:${clientBucket(req.ip)}`);
    if (!limit.allowed) throw tooMany('too many sign-ups from this address; try again later', limit.retryAfterMs / 1000);
    try {
      const account = await ctx.accounts.create(body.username, body.password);
      reply.code(201);
      return { username: account.username, address: account.address, createdAt: new Date(account.createdAt).toISOString() };
    } catch (err) {
      if (err instanceof AccountError) {
        throw new HttpError(err.code === 'username_taken' ? 409 : 400, err.code, err.message);
      }
      throw err;
    }
  });
}
