// Client endpoints of Web Push (docs/push.md), with the user's bearer token: the VAPID public key,
// subscriptions (COI WebPush over HTTP), their validation, push settings and conversation mutes.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { requireUser } from '../auth/routes.js';
import { HttpError, badRequest, notFound, tooMany } from '../http/errors.js';
import { CONVERSATION_ID } from '../protocol/conversation.js';
import type { Push, PushSettings } from './service.js';
import { SUBSCRIPTION_ID, parseSubscription } from './wire.js';

function objectBody(req: FastifyRequest): Record<string, unknown> {
  const b = req.body ?? {};
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw badRequest('the body must be a JSON object');
  return b as Record<string, unknown>;
}

function subId(req: FastifyRequest): string {
  const id = (req.params as { id: string }).id;
  if (!SUBSCRIPTION_ID.test(id)) throw badRequest('subscription id: 10 to 36 characters of [0-9A-Za-z_-]');
  return id;
}

export function pushRoutes(app: FastifyInstance, ctx: AppContext, push: Push): void {
  const enabled = () => {
    if (!push.enabled) throw new HttpError(404, 'push_disabled', 'Web Push is not enabled on this provider (INTERTALK_PUSH)');
  };

  app.get('/push/vapid', async (req) => {
    enabled();
    await requireUser(ctx, req);
    return push.publicKey();
  });

  app.get('/push/subscriptions', async (req) => {
    enabled();
    const user = await requireUser(ctx, req);
    return { subscriptions: await push.list(user.userId) };
  });

  app.put('/push/subscriptions/:id', async (req, reply) => {
    enabled();
    const user = await requireUser(ctx, req);
    const id = subId(req);
    const parsed = parseSubscription(req.body, ctx.config.push.insecureEndpoints);
    if (!parsed.ok) throw badRequest(parsed.message);
    const r = await push.create(user.userId, id, parsed.value);
    if (!r.ok) {
      if (r.reason === 'throttled') throw tooMany('too many invalid push subscriptions from this account: try again later', (r.retryAfterMs ?? 60_000) / 1000);
      throw new HttpError(409, 'too_many_subscriptions', `at most ${ctx.config.push.maxSubscriptions} push subscriptions per account: delete one first`);
    }
    reply.code(201);
    return r.subscription;
  });

  app.delete('/push/subscriptions/:id', async (req, reply) => {
    enabled();
    const user = await requireUser(ctx, req);
    if (!(await push.remove(user.userId, subId(req)))) throw notFound('no such push subscription');
    reply.code(204);
  });

  app.post('/push/subscriptions/:id/validate', async (req, reply) => {
    enabled();
    const user = await requireUser(ctx, req);
    const id = subId(req);
    const r = await push.validate(user.userId, id, objectBody(req).validation);
    if (r === 'missing') throw notFound('no such push subscription');
    if (r === 'invalid') throw new HttpError(400, 'invalid_validation', 'not the validation value of this subscription, or too late: subscribe again');
    reply.code(204);
  });

  app.get('/push/settings', async (req) => {
    enabled();
    const user = await requireUser(ctx, req);
    return { ...(await push.settings(user.userId)), mutedConversations: await push.mutes(user.userId) };
  });

  app.put('/push/settings', async (req) => {
    enabled();
    const user = await requireUser(ctx, req);
    const patch: Partial<PushSettings> = {};
    for (const [k, v] of Object.entries(objectBody(req))) {
      if (k !== 'enabled' && k !== 'contentFree') throw badRequest(`unknown push setting "${k.slice(0, 64)}"`);
      if (typeof v !== 'boolean') throw badRequest(`${k}: must be true or false`);
      patch[k] = v;
    }
    return { ...(await push.updateSettings(user.userId, patch)), mutedConversations: await push.mutes(user.userId) };
  });

  // Mute or unmute one conversation's pushes: {"muted": true|false}.
  app.put('/conversations/:id/push', async (req) => {
    enabled();
    const user = await requireUser(ctx, req);
    const id = (req.params as { id: string }).id;
    if (!CONVERSATION_ID.test(id)) throw badRequest('not a conversation id');
    const muted = objectBody(req).muted;
    if (typeof muted !== 'boolean') throw badRequest('muted: must be true or false');
    if (!(await ctx.messaging.isMember(user.address, id))) throw notFound('no such conversation');
    await push.setMuted(user.userId, id, muted);
    return { conversationId: id, muted };
  });
}
