// Live delivery over WebSocket at /messages and /messageStream.
//
// Reference behaviour ("bare" mode): the first frame is the access token; afterwards each new
// message in the user's conversations arrives as a text frame holding the message object itself.
// Opt-in "rich" mode: the first frame is a JSON object {"token", "since"?}; the server replays
// everything after `since` (no gap, no duplicate), then streams live events as typed envelopes
// ({"type":"message"|"delivery"|"read"|"ready", …}). See docs/api.md. Ephemeral signals/1 events
// ({"type":"typing"|"receipt"|"settings"}) go to rich-mode sockets only and are never replayed.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type { Logger } from 'pino';
import type { Auth, Principal } from '../auth/service.js';
import type { Messaging } from '../messaging/service.js';
import type { BusEvent, EventBus } from '../bus/bus.js';
import { clientBucket } from '../auth/limiter.js';
import { parseClientFrame, type ClientCommands, type CommandResult } from './commands.js';

export const CLOSE = {
  goingAway: 1001,
  badHello: 4000,
  invalidToken: 4001,
  tokenExpired: 4002,
  sessionRevoked: 4003,
  authTimeout: 4004,
  tooSlow: 4005,
} as const;

const MAX_BUFFERED = 8 * 1024 * 1024;
/**
 * Sockets that have not yet sent a valid token cost memory and a timer until the auth timeout:
 * at most `pendingPerClient` per client address (IPv4, or IPv6 /64), and MAX_UNAUTHENTICATED in all. Over it, the
 * upgrade is refused with 429 before any WebSocket state exists.
 */
const MAX_UNAUTHENTICATED = 10_000;
const BACKFILL_PAGE = 500;
/**
 * Commands (send/request frames) one socket may have in flight. At the cap the server stops
 * reading the socket until one completes, so a fast sender meets TCP back-pressure instead of
 * growing our memory; its acknowledgements still count against MAX_BUFFERED.
 */
const MAX_INFLIGHT = 32;

interface Client {
  ws: WebSocket;
  principal: Principal;
  rich: boolean;
  /** While replaying history, live events wait here; then those already sent are dropped. */
  pending: Array<{ seq: number; frame: string }> | null;
  lastSeq: number;
  alive: boolean;
  /** The socket's access token (for `request` frames); never logged. */
  token: string;
  /** Commands in flight (see MAX_INFLIGHT). */
  inflight: number;
  /** Resolves when the socket's latest send has been handed to the store (order of sends). */
  sendTurn: Promise<void>;
  expiry: NodeJS.Timeout;
}

export interface RealtimeOptions {
  auth: Auth;
  messaging: Messaging;
  bus: EventBus;
  logger: Logger;
  authTimeoutMs: number;
  heartbeatMs: number;
  /** null: any origin. */
  allowedOrigins: string[] | null;
  /** Unauthenticated sockets allowed per client address (INTERTALK_WS_PENDING_PER_CLIENT). */
  pendingPerClient?: number;
  /** send/request frames of rich-mode clients (src/realtime/commands.ts); absent: ignored. */
  commands?: ClientCommands;
  /** The client address of an upgrade request (honours X-Forwarded-For when so configured). */
  clientIp?: (req: IncomingMessage) => string;
}

export class Realtime {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false });
  private readonly byAddress = new Map<string, Set<Client>>();
  private readonly unauthenticated = new Set<WebSocket>();
  /** Unauthenticated sockets per client bucket (see pendingPerClient). */
  private readonly pendingByClient = new Map<string, number>();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private closing = false;

  constructor(private readonly opts: RealtimeOptions) {
    this.unsubscribe = opts.bus.subscribe((e) => this.onEvent(e));
    this.heartbeat = setInterval(() => this.beat(), opts.heartbeatMs);
    this.heartbeat.unref();
  }

  get connectionCount(): number {
    let n = 0;
    for (const set of this.byAddress.values()) n += set.size;
    return n;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const origin = req.headers.origin;
    if (this.closing || (origin && this.opts.allowedOrigins && !this.opts.allowedOrigins.includes(origin))) {
      socket.end(`HTTP/1.1 ${this.closing ? '503 Service Unavailable' : '403 Forbidden'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    const bucket = clientBucket(this.opts.clientIp ? this.opts.clientIp(req) : (req.socket.remoteAddress ?? ''));
    const pending = this.pendingByClient.get(bucket) ?? 0;
    if (pending >= (this.opts.pendingPerClient ?? 64) || this.unauthenticated.size >= MAX_UNAUTHENTICATED) {
      const body = JSON.stringify({ error: 'rate_limited', message: 'too many unauthenticated WebSocket connections from this address; send the token first' });
      socket.end(`HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 10\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      return;
    }
    // Counted from the upgrade on, so that handshakes in flight count too.
    this.pendingByClient.set(bucket, pending + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const n = (this.pendingByClient.get(bucket) ?? 1) - 1;
      if (n <= 0) this.pendingByClient.delete(bucket);
      else this.pendingByClient.set(bucket, n);
    };
    socket.once('close', release);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, release));
  }

  private onConnection(ws: WebSocket, release: () => void): void {
    this.unauthenticated.add(ws);
    const timer = setTimeout(() => ws.close(CLOSE.authTimeout, 'no token received in time'), this.opts.authTimeoutMs);
    ws.once('close', () => {
      clearTimeout(timer);
      this.unauthenticated.delete(ws);
      release();
    });
    ws.on('error', () => ws.terminate());
    ws.once('message', (data: RawData, isBinary: boolean) => {
      clearTimeout(timer);
      this.authenticate(ws, isBinary ? '' : data.toString('utf8'), release).catch((err) => {
        this.opts.logger.error({ err }, 'websocket authentication failed unexpectedly');
        ws.close(1011, 'internal error');
      });
    });
  }

  private async authenticate(ws: WebSocket, first: string, release: () => void): Promise<void> {
    let token: string;
    let since: number | null = null;
    let rich = false;
    const trimmed = first.trim();
    if (trimmed.startsWith('{')) {
      let hello: unknown;
      try {
        hello = JSON.parse(trimmed);
      } catch {
        ws.close(CLOSE.badHello, 'hello is not valid JSON');
        return;
      }
      const h = hello as Record<string, unknown>;
      if (typeof h !== 'object' || h === null || typeof h.token !== 'string') {
        ws.close(CLOSE.badHello, 'hello needs a "token" string');
        return;
      }
      if (h.since !== undefined && h.since !== null && !(Number.isSafeInteger(h.since) && (h.since as number) >= 0)) {
        ws.close(CLOSE.badHello, '"since" must be a non-negative integer cursor');
        return;
      }
      rich = true;
      token = h.token;
      since = (h.since as number | undefined) ?? null;
    } else {
      token = trimmed;
    }
    token = token.replace(/^Bearer\s+/i, '');
    const principal = await this.opts.auth.authenticate(token);
    if (ws.readyState !== WebSocket.OPEN) return;
    this.unauthenticated.delete(ws);
    release();
    if (!principal) {
      ws.close(CLOSE.invalidToken, 'invalid or expired token');
      return;
    }

    const delay = Math.max(0, Math.min(principal.expiresAt - Date.now(), 2 ** 31 - 1));
    const client: Client = {
      ws,
      principal,
      rich,
      pending: since !== null ? [] : null,
      lastSeq: since ?? 0,
      alive: true,
      token,
      inflight: 0,
      sendTurn: Promise.resolve(),
      expiry: setTimeout(() => ws.close(CLOSE.tokenExpired, 'token expired'), delay),
    };
    let set = this.byAddress.get(principal.address);
    if (!set) this.byAddress.set(principal.address, (set = new Set()));
    set.add(client);
    ws.on('pong', () => (client.alive = true));
    ws.on('message', (data: RawData) => this.onClientFrame(client, data));
    ws.once('close', () => {
      clearTimeout(client.expiry);
      const s = this.byAddress.get(principal.address);
      s?.delete(client);
      if (s && s.size === 0) this.byAddress.delete(principal.address);
    });

    if (since !== null) await this.backfill(client, since);
    if (rich) {
      const cursor = since !== null ? client.lastSeq : await this.opts.messaging.latestSeq(principal.address);
      this.send(client, JSON.stringify({ type: 'ready', address: principal.address, cursor, expiresAt: new Date(principal.expiresAt).toISOString() }));
    }
  }

  private async backfill(client: Client, since: number): Promise<void> {
    let cursor = since;
    for (;;) {
      const page = await this.opts.messaging.since(client.principal.address, cursor, BACKFILL_PAGE);
      for (const m of page) {
        if (client.ws.readyState !== WebSocket.OPEN) return;
        this.send(client, this.messageFrame(client, m.json));
        cursor = m.seq;
      }
      if (page.length < BACKFILL_PAGE) break;
    }
    client.lastSeq = cursor;
    const pending = client.pending ?? [];
    client.pending = null;
    for (const p of pending) {
      if (p.seq > client.lastSeq) {
        client.lastSeq = p.seq;
        this.send(client, p.frame);
      }
    }
  }

  private onClientFrame(client: Client, data: RawData): void {
    if (!client.rich) return; // the reference protocol sends nothing after the token
    const frame = parseClientFrame(data.toString('utf8'));
    if (!frame) return;
    if (frame.type === 'ping') return this.send(client, '{"type":"pong"}');
    if (frame.type === 'invalid') {
      // A frame we cannot answer by ref is answered without one.
      return this.ack(client, frame.ref, { status: 400, body: JSON.stringify({ error: 'invalid_frame', message: frame.message }) });
    }
    const commands = this.opts.commands;
    if (!commands) return this.ack(client, frame.ref, { status: 501, body: JSON.stringify({ error: 'not_supported', message: 'this server does not take commands over the socket' }) });
    client.inflight++;
    if (client.inflight === MAX_INFLIGHT) client.ws.pause();
    let run: Promise<CommandResult>;
    if (frame.type === 'send') {
      const wait = client.sendTurn;
      let done!: () => void;
      client.sendTurn = new Promise<void>((resolve) => (done = resolve));
      run = commands.send(client.principal, frame.message, { wait, done });
    } else {
      run = commands.request(client.token, frame.method, frame.path, frame.body);
    }
    run
      .catch((err): CommandResult => {
        this.opts.logger.error({ err }, 'websocket command failed');
        return { status: 500, body: JSON.stringify({ error: 'internal_error', message: 'the server failed to handle this request' }) };
      })
      .then((res) => {
        if (client.inflight-- === MAX_INFLIGHT && client.ws.readyState === WebSocket.OPEN) client.ws.resume();
        this.ack(client, frame.ref, res);
      });
  }

  private ack(client: Client, ref: string | null, res: CommandResult): void {
    this.send(client, `{"type":"ack","ref":${JSON.stringify(ref)},"status":${res.status}${res.replayed ? ',"replayed":true' : ''},"body":${res.body}}`);
  }

  private messageFrame(client: Client, json: string): string {
    return client.rich ? `{"type":"message","message":${json}}` : json;
  }

  private onEvent(e: BusEvent): void {
    switch (e.type) {
      case 'message': {
        let rich: string | null = null;
        for (const address of e.recipients) {
          const set = this.byAddress.get(address);
          if (!set) continue;
          for (const c of set) {
            const frame = c.rich ? (rich ??= `{"type":"message","message":${e.json}}`) : e.json;
            if (c.pending) c.pending.push({ seq: e.seq, frame });
            else if (e.seq > c.lastSeq || !c.rich) {
              if (e.seq > c.lastSeq) c.lastSeq = e.seq;
              this.send(c, frame);
            }
          }
        }
        break;
      }
      case 'delivery': {
        const set = this.byAddress.get(e.sender);
        if (!set) break;
        const frame = JSON.stringify({
          type: 'delivery',
          messageId: e.messageId,
          seq: e.seq,
          conversationId: e.conversationId,
          destination: e.destination,
          state: e.state,
          error: e.error,
          insecure: e.insecure,
        });
        for (const c of set) if (c.rich) this.send(c, frame);
        break;
      }
      case 'read': {
        const set = this.byAddress.get(e.address);
        if (!set) break;
        const frame = JSON.stringify({ type: 'read', conversationId: e.conversationId, lastReadSeq: e.lastReadSeq });
        for (const c of set) if (c.rich) this.send(c, frame);
        break;
      }
      // signals/1: ephemeral, to rich-mode sockets only (a bare reference-mode client gets
      // nothing but messages); not seq-numbered, so never buffered for or replayed by resume.
      case 'typing': {
        const frame = JSON.stringify({ type: 'typing', conversationId: e.conversationId, from: e.from, state: e.state, expiresAt: e.expiresAt });
        this.sendRich(e.recipients, frame);
        break;
      }
      case 'receipt': {
        const frame = JSON.stringify({
          type: 'receipt',
          conversationId: e.conversationId,
          from: e.from,
          messageId: e.messageId,
          messageSender: e.messageSender,
          seq: e.seq,
          readAt: e.readAt,
        });
        this.sendRich(e.recipients, frame);
        break;
      }
      case 'settings':
        this.sendRich([e.address], JSON.stringify({ type: 'settings', sendReadReceipts: e.sendReadReceipts }));
        break;
      case 'room':
        this.sendRich(e.recipients, e.frame);
        break;
      case 'session-revoked':
        this.closeSession(e.sessionId);
        break;
    }
  }

  private sendRich(addresses: string[], frame: string): void {
    for (const address of new Set(addresses)) {
      const set = this.byAddress.get(address);
      if (!set) continue;
      for (const c of set) if (c.rich) this.send(c, frame);
    }
  }

  /** Sessions ended elsewhere (the CLI, another instance) close their sockets here too. */
  private async closeEndedSessions(): Promise<void> {
    const ids = new Set<string>();
    for (const set of this.byAddress.values()) for (const c of set) ids.add(c.principal.sessionId);
    if (ids.size === 0) return;
    try {
      const alive = await this.opts.auth.activeSessions([...ids]);
      for (const id of ids) if (!alive.has(id)) this.closeSession(id);
    } catch (err) {
      this.opts.logger.warn({ err }, 'could not check live sessions');
    }
  }

  closeSession(sessionId: string): void {
    for (const set of this.byAddress.values()) {
      for (const c of set) if (c.principal.sessionId === sessionId) c.ws.close(CLOSE.sessionRevoked, 'logged out');
    }
  }

  private send(c: Client, frame: string): void {
    if (c.ws.readyState !== WebSocket.OPEN) return;
    // A client that cannot keep up is disconnected rather than buffered without bound; it can
    // reconnect with its cursor and miss nothing.
    if (c.ws.bufferedAmount > MAX_BUFFERED) {
      c.ws.close(CLOSE.tooSlow, 'client too slow');
      return;
    }
    this.cork(c.ws);
    c.ws.send(frame);
  }

  // Frames for one socket produced in the same tick (a group commit resolves many sends at once:
  // acks, the sender's echo, the recipients' frames) leave in one write instead of one syscall
  // each. The socket is corked at its first frame and uncorked once the tick's microtasks have
  // run (process.nextTick from inside them runs after they drain), so no frame waits for I/O.
  private readonly corked = new Set<Duplex>();
  private readonly uncorkAll = (): void => {
    for (const s of this.corked) s.uncork();
    this.corked.clear();
  };

  private cork(ws: WebSocket): void {
    // ws keeps its socket in a private field; without it (never seen), frames go out one by one.
    const socket = (ws as unknown as { _socket?: Duplex })._socket;
    if (!socket || this.corked.has(socket)) return;
    socket.cork();
    if (this.corked.size === 0) process.nextTick(this.uncorkAll);
    this.corked.add(socket);
  }

  private beat(): void {
    void this.closeEndedSessions();
    for (const set of this.byAddress.values()) {
      for (const c of set) {
        if (!c.alive) {
          c.ws.terminate();
          continue;
        }
        c.alive = false;
        c.ws.ping();
      }
    }
  }

  /** Closes every socket with 1001 (going away); used on graceful shutdown. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeat);
    this.unsubscribe();
    const all: WebSocket[] = [...this.unauthenticated];
    for (const set of this.byAddress.values()) for (const c of set) all.push(c.ws);
    await Promise.all(
      all.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) return resolve();
            const t = setTimeout(() => {
              ws.terminate();
              resolve();
            }, 2000);
            ws.once('close', () => {
              clearTimeout(t);
              resolve();
            });
            ws.close(CLOSE.goingAway, 'server shutting down');
          }),
      ),
    );
    this.wss.close();
  }
}
