// What a rich-mode client may ask over its live socket instead of over HTTP (docs/api.md,
// "Sending over the socket"):
//
//   {"type":"send","ref":R,"message":{…the body of POST /messages…}}
//   {"type":"request","ref":R,"method":"POST","path":"/conversations/{id}/reactions","body":{…}}
//
// Each is answered, in any order, by {"type":"ack","ref":R,"status":N,"body":…} (plus
// "replayed":true for an idempotent retry): 201 and the stored message (with its seq) for a
// send, the HTTP route's status and body for a request, and for a refusal the same status and
// JSON error body the HTTP route gives. `send` is the hot path (no HTTP machinery); `request`
// covers every other client route (rich actions, reads) through the HTTP router itself.
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import type { Principal } from '../auth/service.js';
import { HttpError } from '../http/errors.js';
import { submit, type SubmitTurn } from '../messaging/send.js';

export interface CommandResult {
  status: number;
  /** The body as JSON text. */
  body: string;
  replayed?: boolean;
}

export interface ClientCommands {
  /** `turn` keeps one socket's pipelined sends in their order (see SubmitTurn). */
  send(user: Principal, message: unknown, turn?: SubmitTurn): Promise<CommandResult>;
  request(token: string, method: string, path: string, body: unknown): Promise<CommandResult>;
}

/** Client frames: at most this long a `ref`; these methods for `request`. */
export const MAX_REF_LENGTH = 128;
const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

export type ClientFrame =
  | { type: 'ping' }
  | { type: 'send'; ref: string; message: unknown }
  | { type: 'request'; ref: string; method: string; path: string; body: unknown }
  | { type: 'invalid'; ref: string | null; message: string };

/** Parses a client frame (pure). Unknown types are `null` (ignored, for forward compatibility). */
export function parseClientFrame(text: string): ClientFrame | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { type: 'invalid', ref: null, message: 'the frame is not JSON' };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { type: 'invalid', ref: null, message: 'the frame must be a JSON object' };
  const f = v as Record<string, unknown>;
  if (f.type === 'ping') return { type: 'ping' };
  if (f.type !== 'send' && f.type !== 'request') return null;
  if (typeof f.ref !== 'string' || f.ref.length === 0 || f.ref.length > MAX_REF_LENGTH) {
    return { type: 'invalid', ref: null, message: `"ref" must be a string of 1–${MAX_REF_LENGTH} characters` };
  }
  const ref = f.ref;
  if (f.type === 'send') {
    if (typeof f.message !== 'object' || f.message === null || Array.isArray(f.message)) return { type: 'invalid', ref, message: '"message" must be a JSON object (the body of POST /messages)' };
    return { type: 'send', ref, message: f.message };
  }
  const method = typeof f.method === 'string' ? f.method.toUpperCase() : '';
  if (!METHODS.has(method)) return { type: 'invalid', ref, message: `"method" must be one of ${[...METHODS].join(', ')}` };
  // A path of ours: absolute, no scheme or authority, printable ASCII.
  if (typeof f.path !== 'string' || !/^\/(?!\/)[\x21-\x7e]{0,2047}$/.test(f.path)) return { type: 'invalid', ref, message: '"path" must be an absolute path such as /conversations' };
  return { type: 'request', ref, method, path: f.path, body: f.body };
}

/** The commands of one provider: `send` through the same path as POST /messages. */
export function clientCommands(ctx: AppContext, app: FastifyInstance): ClientCommands {
  return {
    async send(user, message, turn) {
      try {
        const res = await submit(ctx, user, message, turn);
        return { status: 201, body: res.json, replayed: res.replayed };
      } catch (err) {
        if (err instanceof HttpError) return { status: err.status, body: JSON.stringify(err.body()) };
        ctx.logger.error({ err }, 'websocket send failed');
        return { status: 500, body: JSON.stringify({ error: 'internal_error', message: 'the server failed to handle this request' }) };
      }
    },
    async request(token, method, path, body) {
      // Through the router, so that every route answers exactly as over HTTP. Upgrading paths
      // and the federation's JWT paths are not reachable: the token is the socket's own.
      const res = await app.inject({
        method: method as 'GET',
        url: path,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
      });
      const type = String(res.headers['content-type'] ?? '');
      if (res.body !== '' && !type.startsWith('application/json')) {
        return { status: 406, body: JSON.stringify({ error: 'not_json', message: `${method} ${path.split('?')[0]} does not answer JSON; use HTTP for it` }) };
      }
      return { status: res.statusCode, body: res.body === '' ? 'null' : res.body, ...(res.headers['intertalk-replayed'] === 'true' ? { replayed: true } : {}) };
    },
  };
}
