// Client endpoints for signals/1: typing, receipts, and the user's settings. (The read marker
// itself is POST /conversations/:id/read in src/messaging/routes.ts, which also records the
// receipt through Signals.read.)
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppContext } from '../context.js';
import { requireUser } from '../auth/routes.js';
import { HttpError, notFound } from '../http/errors.js';
import { CONVERSATION_ID } from '../protocol/conversation.js';
import { TYPING_STATES, type TypingState } from './wire.js';
import type { UserSettings } from './service.js';

function body(req: FastifyRequest): Record<string, unknown> {
  const b = req.body ?? {};
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new HttpError(400, 'invalid_request', 'the body must be a JSON object');
  return b as Record<string, unknown>;
}

function convParam(req: FastifyRequest): string {
  const id = (req.params as { id: string }).id;
  if (!CONVERSATION_ID.test(id)) throw new HttpError(400, 'invalid_request', 'not a conversation id');
  return id;
}

export function signalsRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { signals } = ctx;

  // "I am typing" / "I stopped". Clients re-send while typing (the indicator lasts 5 s); repeats
  // within a second are accepted and ignored.
  app.post('/conversations/:id/typing', async (req, reply) => {
    const user = await requireUser(ctx, req);
    const id = convParam(req);
    const b = body(req);
    const state = b.state ?? 'typing';
    if (!TYPING_STATES.includes(state as TypingState)) throw new HttpError(400, 'invalid_request', 'state: must be "typing" or "stopped"');
    const r = await signals.typing(user.address, id, state as TypingState);
    if (r === null) throw notFound('no such conversation');
    reply.code(204);
  });

  // The other participants' last read message (shared receipts only).
  app.get('/conversations/:id/receipts', async (req) => {
    const user = await requireUser(ctx, req);
    const r = await signals.receipts(user.address, convParam(req));
    if (r === null) throw notFound('no such conversation');
    return r;
  });

  app.get('/me/settings', async (req) => {
    const user = await requireUser(ctx, req);
    return signals.settings(user.userId);
  });

  app.put('/me/settings', async (req) => {
    const user = await requireUser(ctx, req);
    const b = body(req);
    const patch: Partial<UserSettings> = {};
    for (const [k, v] of Object.entries(b)) {
      if (k === 'sendReadReceipts') {
        if (typeof v !== 'boolean') throw new HttpError(400, 'invalid_request', 'sendReadReceipts: must be true or false');
        patch.sendReadReceipts = v;
      } else {
        throw new HttpError(400, 'invalid_request', `unknown setting "${k.slice(0, 64)}"`);
      }
    }
    return signals.updateSettings(user, patch);
  });
}
