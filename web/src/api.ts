// HTTP access to our own provider (same origin: every URL is relative) and the login session.
//
// Where the tokens live:
// * The access token (1 hour) is kept in memory only.
// * The refresh token is kept in sessionStorage, never in localStorage, cookies or URLs.
//   sessionStorage belongs to this tab: it survives a reload (the app refreshes on load and gets a
//   new access token, so a reload does not log you out) but is gone when the tab is closed, is not
//   shared with other tabs, and is not sent with any request by the browser. Script running in the
//   page could read it — as it could read memory — which the strict Content-Security-Policy (no
//   inline or foreign scripts) and the sanitising of every message (DOMPurify) guard against.
//   localStorage would keep a 30-day credential on disk after the tab is closed; we do not want
//   that for a chat client that may run on shared machines.
// * Refresh tokens are single-use (each refresh returns a new one), so refreshes are serialised:
//   one in flight at a time, and everyone waits for it.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

/** The request never got an answer (offline, provider down). */
export class NetworkError extends Error {}

const REFRESH_KEY = 'intertalk.refresh';

export interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  address: string;
}

async function parse(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  const body = (await parse(res)) as { error?: string; message?: string } | undefined;
  const ra = Number(res.headers.get('retry-after'));
  return new ApiError(res.status, body?.error ?? `http_${res.status}`, body?.message ?? res.statusText ?? `HTTP ${res.status}`, Number.isFinite(ra) && ra > 0 ? ra : null);
}

async function raw(path: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(path, { ...init, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
  } catch (err) {
    throw new NetworkError(err instanceof Error ? err.message : String(err));
  }
}

/** Requests that need no login: sign-up, the provider's domain. */
export async function publicJson<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await raw(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  if (!res.ok) throw await errorOf(res);
  return (await parse(res)) as T;
}

async function tokenRequest(params: Record<string, string>): Promise<TokenAnswer> {
  const res = await raw('/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params).toString(),
  });
  if (!res.ok) throw await errorOf(res);
  return (await parse(res)) as TokenAnswer;
}

export class Session {
  address = '';
  private access = '';
  private expiresAt = 0;
  private refreshing: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Called once when the session is over (logged out here or elsewhere, refresh refused). */
  onEnded: (() => void) | null = null;
  ended = false;

  private constructor() {}

  static hasStored(): boolean {
    try {
      return !!sessionStorage.getItem(REFRESH_KEY);
    } catch {
      return false;
    }
  }

  /** Restores the tab's session from its refresh token; null when there is none or it is dead. */
  static async restore(): Promise<Session | null> {
    let stored: string | null = null;
    try {
      stored = sessionStorage.getItem(REFRESH_KEY);
    } catch {
      return null;
    }
    if (!stored) return null;
    const s = new Session();
    try {
      s.accept(await tokenRequest({ grant_type: 'refresh_token', refresh_token: stored }));
      return s;
    } catch (err) {
      if (err instanceof ApiError) sessionStorage.removeItem(REFRESH_KEY);
      throw err;
    }
  }

  static async login(username: string, password: string): Promise<Session> {
    const s = new Session();
    s.accept(await tokenRequest({ grant_type: 'password', username, password }));
    return s;
  }

  private accept(t: TokenAnswer): void {
    this.access = t.access_token;
    this.address = t.address;
    this.expiresAt = Date.now() + t.expires_in * 1000;
    sessionStorage.setItem(REFRESH_KEY, t.refresh_token);
    // Refresh a minute before the access token expires, so requests rarely meet a 401.
    if (this.timer) clearTimeout(this.timer);
    const lead = Math.max(5_000, t.expires_in * 1000 - 60_000);
    this.timer = setTimeout(() => void this.refresh().catch(() => undefined), lead);
  }

  /** A valid access token (refreshing first when it is about to expire). */
  async token(): Promise<string> {
    if (this.ended) throw new ApiError(401, 'invalid_token', 'logged out');
    if (Date.now() > this.expiresAt - 15_000) await this.refresh();
    return this.access;
  }

  /** Exchanges the refresh token for new tokens; concurrent callers share one request. */
  refresh(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      const stored = sessionStorage.getItem(REFRESH_KEY);
      if (!stored) {
        this.end();
        throw new ApiError(401, 'invalid_grant', 'the session has ended');
      }
      try {
        this.accept(await tokenRequest({ grant_type: 'refresh_token', refresh_token: stored }));
      } catch (err) {
        if (err instanceof ApiError && err.status === 400) this.end();
        throw err;
      }
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** An authenticated request; a 401 gets one refresh and one retry. Returns the parsed body. */
  async request<T = unknown>(method: string, path: string, opts: { json?: unknown; body?: Blob; contentType?: string } = {}): Promise<T> {
    const res = await this.fetch(method, path, opts);
    if (!res.ok) throw await errorOf(res);
    return (await parse(res)) as T;
  }

  /** Like request, but returns the Response (for downloads). */
  async fetch(method: string, path: string, opts: { json?: unknown; body?: Blob; contentType?: string } = {}): Promise<Response> {
    const send = async () => {
      const headers: Record<string, string> = { authorization: `Bearer ${await this.token()}` };
      let body: BodyInit | null = null;
      if (opts.json !== undefined) {
        headers['content-type'] = 'application/json';
        body = JSON.stringify(opts.json);
      } else if (opts.body) {
        headers['content-type'] = opts.contentType || 'application/octet-stream';
        body = opts.body;
      }
      return raw(path, { method, headers, body });
    };
    let res = await send();
    if (res.status === 401 && !this.ended) {
      await this.refresh();
      res = await send();
    }
    if (res.status === 401) this.end();
    return res;
  }

  /** Ends the session at the provider (best effort) and forgets it here. */
  async logout(): Promise<void> {
    let refresh: string | null = null;
    try {
      refresh = sessionStorage.getItem(REFRESH_KEY);
    } catch {
      /* ignore */
    }
    this.end();
    if (!refresh) return;
    try {
      // RFC 7009: revoking the refresh token ends the whole session (its WebSockets close too),
      // even when the access token has already expired.
      await raw('/revoke', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: refresh }).toString() });
    } catch {
      /* offline: the token is forgotten here anyway and expires at the provider */
    }
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.access = '';
    if (this.timer) clearTimeout(this.timer);
    try {
      sessionStorage.removeItem(REFRESH_KEY);
    } catch {
      /* ignore */
    }
    this.onEnded?.();
  }
}

/** A random message id (printable ASCII, 22 characters), so that a retried send is idempotent. */
export function newMessageId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
