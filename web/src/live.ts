// The live connection: a rich-mode WebSocket at /messages that resumes from the highest `seq`
// received, so after a drop or a provider restart every missed message arrives, in order, once
// (the provider replays everything after `since` before its `ready` frame).
//
// It reconnects by itself with back-off (0.5 s doubling to 8 s, and at once when the browser says
// it is online again), refreshes the access token when the provider says it expired, and pings
// every 15 s so that a connection that died silently is noticed within a few seconds.
import { ApiError, NetworkError, type Session } from './api';
import type { Frame } from './types';

export type LiveState = 'connecting' | 'online' | 'offline';

const PING_EVERY_MS = 15_000;
const PONG_WITHIN_MS = 6_000;
/** A command over the socket without an ack this long fails like a lost request. */
const ACK_WITHIN_MS = 30_000;

interface AckFrame {
  type: 'ack';
  ref: string | null;
  status: number;
  body: unknown;
}

export class Live {
  state: LiveState = 'connecting';
  /** The highest seq seen: the resume point. */
  cursor = 0;
  private ws: WebSocket | null = null;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private pongTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  /** Commands sent over the socket, waiting for their ack (docs/api.md, "Sending over the socket"). */
  private readonly waiting = new Map<string, { resolve(v: unknown): void; reject(e: Error): void; timer: ReturnType<typeof setTimeout> }>();
  private nextRef = 0;
  private readonly onOnline = () => this.reconnectNow();
  private readonly onOffline = () => this.drop();

  constructor(
    private readonly session: Session,
    private readonly on: {
      frame(f: Frame): void;
      state(s: LiveState): void;
      /** The session is over (revoked, or the refresh token was refused). */
      ended(): void;
    },
  ) {}

  /**
   * Runs a client route over the live socket (no HTTP request per message): POST /messages as a
   * `send`, anything else as a `request`. Null when the socket is not ready: use HTTP then.
   * Resolves with the route's body; rejects as Session.request does. A drop rejects with a
   * NetworkError: a retry with the same message id is harmless (the provider deduplicates).
   */
  request<T>(method: string, path: string, json?: unknown): Promise<T> | null {
    const ws = this.ws;
    if (!ws || this.state !== 'online' || ws.readyState !== WebSocket.OPEN) return null;
    const ref = `w${++this.nextRef}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(ref);
        reject(new NetworkError('no answer over the live connection'));
      }, ACK_WITHIN_MS);
      this.waiting.set(ref, { resolve: resolve as (v: unknown) => void, reject, timer });
      ws.send(JSON.stringify(method === 'POST' && path === '/messages' ? { type: 'send', ref, message: json } : { type: 'request', ref, method, path, ...(json === undefined ? {} : { body: json }) }));
    });
  }

  private onAck(a: AckFrame): void {
    const w = a.ref === null ? undefined : this.waiting.get(a.ref);
    if (!w) return;
    this.waiting.delete(a.ref!);
    clearTimeout(w.timer);
    if (a.status < 400) return w.resolve(a.body);
    const b = (a.body ?? {}) as { error?: string; message?: string };
    w.reject(new ApiError(a.status, b.error ?? 'error', b.message ?? `the provider answered ${a.status}`));
  }

  private failWaiting(): void {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new NetworkError('the live connection dropped'));
    }
    this.waiting.clear();
  }

  start(cursor: number): void {
    this.cursor = cursor;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000, 'bye');
    }
  }

  /** Try again now (the banner's button, the browser going online). */
  reconnectNow(): void {
    if (this.stopped || this.ws) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attempt = 0;
    void this.connect();
  }

  private setState(s: LiveState): void {
    if (this.state === s) return;
    this.state = s;
    this.on.state(s);
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.retryTimer = this.pingTimer = this.pongTimer = null;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    if (this.state !== 'offline') this.setState('connecting');
    let token: string;
    try {
      token = await this.session.token();
    } catch (err) {
      if (err instanceof ApiError && this.session.ended) return this.on.ended();
      return this.scheduleRetry();
    }
    if (this.stopped) return;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/messages`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch {
      return this.scheduleRetry();
    }
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ token, since: this.cursor }));
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.alive();
      let f: Frame;
      try {
        f = JSON.parse(String(ev.data)) as Frame;
      } catch {
        return;
      }
      if ((f as unknown as AckFrame).type === 'ack') return this.onAck(f as unknown as AckFrame);
      if (f.type === 'message' && f.message.seq > this.cursor) this.cursor = f.message.seq;
      if (f.type === 'ready') {
        this.attempt = 0;
        if (f.cursor > this.cursor) this.cursor = f.cursor;
        this.setState('online');
        this.startPings(ws);
      }
      this.on.frame(f);
    };
    ws.onerror = () => undefined; // onclose follows
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.closed(ev.code);
    };
  }

  private closed(code: number): void {
    this.ws = null;
    this.failWaiting();
    this.clearTimers();
    if (this.stopped) return;
    if (code === 4003) {
      // Logged out (here, on another device, or by the operator).
      this.on.ended();
      return;
    }
    if (code === 4001 || code === 4002) {
      // The access token expired or was not accepted: refresh, then reconnect.
      this.session.refresh().then(
        () => void this.connect(),
        (err) => (err instanceof ApiError && this.session.ended ? this.on.ended() : this.scheduleRetry()),
      );
      return;
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    this.setState('offline');
    const delay = Math.min(8_000, 500 * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 10);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, delay);
  }

  /** The network is gone (the browser says so, or pings went unanswered): close and retry. */
  private drop(): void {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close(4100, 'connection lost');
    } catch {
      /* ignore */
    }
    this.closed(1006);
  }

  private startPings(ws: WebSocket): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send('{"type":"ping"}');
      if (!this.pongTimer) this.pongTimer = setTimeout(() => this.drop(), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  private alive(): void {
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pongTimer = null;
  }
}
