// The environment is read here and nowhere else: `loadConfig(process.env)` turns INTERTALK_*
// variables into one validated, typed object with defaults. Everything else receives a Config.
import { isValidDomain } from '../protocol/address.js';

export interface Config {
  domain: string;
  listen: { host: string; port: number };
  publicUrl: string;
  database: string;
  tls: { cert: string; key: string } | null;
  registration: 'open' | 'closed';
  maxBody: number;
  maxRecipients: number;
  corsOrigins: '*' | string[];
  accessTokenTtlMs: number;
  refreshTokenTtlMs: number;
  clockSkewMs: number;
  logLevel: string;
  trustProxy: boolean;
  /** Bearer token for GET /metrics; without it, only loopback clients may read metrics. */
  metricsToken: string | null;
  /** Messages one user may send per minute. */
  sendRatePerMinute: number;
  /** Messages one member may post to one room per minute (src/rooms/). */
  roomPostRatePerMinute: number;
  /** INTERTALK_ROOM_RECONCILE: how often a member provider asks each room's host who of its users are members. */
  roomReconcileMs: number;
  /** Accounts one client address may create per hour through POST /users. */
  registrationsPerHour: number;
  /** Largest file (attachment, or seed-000 base64 `messageFormatted` once decoded), in bytes. */
  maxAttachment: number;
  /** Bytes one user may upload as attachments per 24 hours. */
  attachmentQuota: number;
  wsAuthTimeoutMs: number;
  wsHeartbeatMs: number;
  /** Unauthenticated WebSockets one client address (IPv4, IPv6 /64) may hold at once. */
  wsPendingPerClient: number;
  /**
   * INTERTALK_REDIS (redis:// or rediss:// URL): several instances of this provider share live
   * delivery, session revocation and rate limits through it (src/cluster/). Null: one instance.
   */
  redis: string | null;
  /** Web Push (src/push/, docs/push.md). */
  push: {
    enabled: boolean;
    /** VAPID `sub` claim: a mailto: or https: URI of the operator (RFC 8292 §2.1). */
    subject: string;
    maxSubscriptions: number;
    /** Wait before pushing a message, so that a live client can mark it read first. */
    delayMs: number;
    ttlSeconds: number;
    validationTimeoutMs: number;
    requestTimeoutMs: number;
    sweepIntervalMs: number;
    /** Accept http:// push endpoints (tests, a push service on a private network). */
    insecureEndpoints: boolean;
  };
  /** Personal domains (src/indieweb/, docs/indieweb.md). */
  indieweb: {
    /** INTERTALK_PERSONAL_DOMAIN_RECHECK: how often an attached domain is verified again. */
    recheckMs: number;
    /** INTERTALK_PERSONAL_DOMAIN_CACHE: how long a sender's home page (delegation) is trusted. */
    cacheTtlMs: number;
    /**
     * INTERTALK_CALLBACK_FLOW: how we send to a callback-only server (seed 001): `token` (the
     * "auth code and token" variant: one token for many messages) or `message` (the six-step flow,
     * once per message).
     */
    callbackFlow: 'token' | 'message';
    /** INTERTALK_CALLBACK_TOKEN_TTL: lifetime of the tokens we issue in the token variant. */
    callbackTokenTtlMs: number;
    /**
     * INTERTALK_INDIEWEB_DELIVERY: `auto` (federation when the server a home page names speaks it,
     * else the callback flow) or `callback` (always the callback flow).
     */
    delivery: 'auto' | 'callback';
  };
  /** The e-mail bridge (src/bridges/email/, docs/email.md). */
  email: {
    /** INTERTALK_EMAIL: on when asked for, or when an SMTP server is configured. */
    enabled: boolean;
    /** INTERTALK_EMAIL_DOMAIN: the domain of our users' e-mail addresses (default: our domain). */
    mailDomain: string;
    /** INTERTALK_EMAIL_SMTP: submission server, smtp://user:pass@host:587 or smtps://…:465. */
    smtp: EmailServer | null;
    /** INTERTALK_EMAIL_IMAP: the mailbox the bridge reads, imap://user:pass@host:143/INBOX or imaps://. */
    imap: (EmailServer & { mailbox: string }) | null;
    /** INTERTALK_EMAIL_SMTP_LISTEN: host:port of our own SMTP server for inbound mail (point MX here); null: none. */
    smtpListen: { host: string; port: number } | null;
    /** INTERTALK_EMAIL_DOMAINS: domains always reached by e-mail (no discovery asked). */
    domains: Set<string>;
    /** INTERTALK_EMAIL_MAX_SIZE: largest mail read or sent. */
    maxBytes: number;
    /** INTERTALK_EMAIL_PLAIN_MAIL: what ordinary (non-chat) mail becomes: `accept` (a message) or `drop`. */
    plainMail: 'accept' | 'drop';
    /** INTERTALK_EMAIL_UNAUTHENTICATED: mail failing DKIM/SPF/DMARC: `flag` (stored, marked) or `drop`. */
    unauthenticated: 'flag' | 'drop';
    /** INTERTALK_EMAIL_ENCRYPTION: `opportunistic` (Autocrypt when the peer has a key) or `off`. */
    encryption: 'opportunistic' | 'off';
    /** INTERTALK_EMAIL_DKIM_KEY / _SELECTOR: DKIM signing of what we send (PEM file path, selector). */
    dkim: { keyFile: string; selector: string } | null;
    /** INTERTALK_EMAIL_POLL: how often the mailbox is checked when IDLE is unavailable or silent. */
    pollMs: number;
  };
  federation: {
    resolve: Map<string, { host: string; port: number }>;
    insecurePeers: Set<string>;
    blockedDomains: Set<string>;
    maxAgeMs: number;
    requestTimeoutMs: number;
    keyGraceMs: number;
    sweepIntervalMs: number;
    discoveryTtlMs: number;
    peerConcurrency: number;
    /**
     * Messages per minute accepted from one peer domain, and from one client address, over
     * POST /messages and /messages/batch (a batch counts each message it carries).
     */
    inboundRatePerMinute: number;
    /**
     * INTERTALK_FEDERATION_PIPELINE: batch/1 requests in flight per destination that advertises
     * pipeline/1 (1: one at a time, no pipelining).
     */
    pipelineDepth: number;
    /** INTERTALK_FEDERATION_PIPELINE_WAIT: how long a peer's batch waits for its predecessors. */
    pipelineWaitMs: number;
  };
}

export interface EmailServer {
  host: string;
  port: number;
  /** Implicit TLS (smtps:, imaps:); otherwise STARTTLS when the server offers it. */
  secure: boolean;
  user: string | null;
  password: string | null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90", "90s", "15m", "3d" → milliseconds; a bare number is seconds. */
export function parseDuration(name: string, raw: string): number {
  const m = DURATION.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: "${raw}" is not a duration (e.g. 30s, 15m, 3d)`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
}

export function parseSize(name: string, raw: string): number {
  const m = /^(\d+)\s*(k|kb|kib|m|mb|mib)?$/i.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: "${raw}" is not a size in bytes (e.g. 1048576 or 1MiB)`);
  const unit = (m[2] ?? '').toLowerCase();
  const mult = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1;
  return Number(m[1]) * mult;
}

function parseInteger(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name}: "${raw}" is not a whole number`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(`${name}: ${n} is outside ${min}..${max}`);
  return n;
}

export function parseHostPort(name: string, raw: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(raw.trim());
  if (!m) throw new ConfigError(`${name}: "${raw}" is not host:port`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`${name}: port ${port} is out of range`);
  return { host: (m[1] ?? m[2])!, port };
}

function list(raw: string | undefined): string[] {
  return (raw ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function domainList(name: string, raw: string | undefined): Set<string> {
  const out = new Set<string>();
  for (const d of list(raw)) {
    const domain = d.toLowerCase();
    if (!isValidDomain(domain)) throw new ConfigError(`${name}: "${d}" is not a domain name`);
    out.add(domain);
  }
  return out;
}

/** INTERTALK_RESOLVE: `domain=host:port,…` — like curl's --resolve. */
export function parseResolve(raw: string | undefined): Map<string, { host: string; port: number }> {
  const out = new Map<string, { host: string; port: number }>();
  for (const item of list(raw)) {
    const eq = item.indexOf('=');
    if (eq < 1) throw new ConfigError(`INTERTALK_RESOLVE: "${item}" is not domain=host:port`);
    const domain = item.slice(0, eq).trim().toLowerCase();
    if (!isValidDomain(domain)) throw new ConfigError(`INTERTALK_RESOLVE: "${domain}" is not a domain name`);
    out.set(domain, parseHostPort('INTERTALK_RESOLVE', item.slice(eq + 1)));
  }
  return out;
}

function within(name: string, n: number, min: number, max: number): number {
  if (n < min || n > max) throw new ConfigError(`${name}: ${n} is outside ${min}..${max}`);
  return n;
}

/** Retired keys must outlive in-flight tokens (60 s) and the instances' 30 s key refresh. */
function atLeast(name: string, ms: number, min: number): number {
  if (ms < min) throw new ConfigError(`${name}: at least ${min / 1000} s, so tokens signed just before a rotation still verify`);
  return ms;
}

/** INTERTALK_REDIS: unset, or a redis:// / rediss:// URL (optionally with a database number). */
export function parseRedisUrl(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    // Not echoed: the URL may hold a password.
    throw new ConfigError('INTERTALK_REDIS: not a URL (e.g. redis://127.0.0.1:6379)');
  }
  if ((u.protocol !== 'redis:' && u.protocol !== 'rediss:') || !u.hostname) {
    throw new ConfigError('INTERTALK_REDIS: must be a redis:// or rediss:// URL with a host (e.g. redis://127.0.0.1:6379)');
  }
  return raw;
}

/** A VAPID subject must reach the operator: mailto:/https:, never a localhost host. */
export function parseVapidSubject(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(`INTERTALK_VAPID_SUBJECT: "${raw}" is not a URI (use mailto:admin@example.org or https://example.org/contact)`);
  }
  let host: string;
  if (u.protocol === 'mailto:') {
    const at = u.pathname.lastIndexOf('@');
    if (at < 1) throw new ConfigError(`INTERTALK_VAPID_SUBJECT: "${raw}" is not a mailto: address`);
    host = u.pathname.slice(at + 1);
  } else if (u.protocol === 'https:') {
    host = u.hostname;
  } else {
    throw new ConfigError(`INTERTALK_VAPID_SUBJECT: "${raw}" must be a mailto: or https: URI`);
  }
  host = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127\./.test(host) || host === '0.0.0.0' || !host) {
    throw new ConfigError(`INTERTALK_VAPID_SUBJECT: "${raw}" names localhost: push services need a contact they can reach (set a real mailto: or https: URI, or INTERTALK_PUSH=off)`);
  }
  return raw;
}

function oneOf<T extends string>(key: string, raw: string, allowed: readonly T[]): T {
  const v = raw.toLowerCase();
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(`${key}: "${raw}" must be one of ${allowed.join(', ')}`);
  return v as T;
}

/** smtp(s):// or imap(s):// URL with credentials → its parts; never echoes the URL (password). */
export function parseEmailServer(name: string, raw: string | undefined, kind: 'smtp' | 'imap'): (EmailServer & { mailbox: string }) | null {
  if (raw === undefined) return null;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(`${name}: not a URL (e.g. ${kind}://user:password@mail.example.org:${kind === 'smtp' ? 587 : 143})`);
  }
  const plain = `${kind}:`;
  const tls = `${kind}s:`;
  if ((u.protocol !== plain && u.protocol !== tls) || !u.hostname) throw new ConfigError(`${name}: must be a ${kind}:// or ${kind}s:// URL with a host`);
  const secure = u.protocol === tls;
  const port = u.port ? Number(u.port) : kind === 'smtp' ? (secure ? 465 : 587) : secure ? 993 : 143;
  const mailbox = decodeURIComponent(u.pathname.replace(/^\/+/, '')) || 'INBOX';
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    secure,
    user: u.username ? decodeURIComponent(u.username) : null,
    password: u.password ? decodeURIComponent(u.password) : null,
    mailbox,
  };
}

export function loadConfig(env: Env = process.env): Config {
  const get = (k: string) => {
    const v = env[k];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const domain = (get('INTERTALK_DOMAIN') ?? 'localhost').toLowerCase();
  if (!isValidDomain(domain)) throw new ConfigError(`INTERTALK_DOMAIN: "${domain}" is not a domain name`);
  const listen = parseHostPort('INTERTALK_LISTEN', get('INTERTALK_LISTEN') ?? '127.0.0.1:8080');

  const certPath = get('INTERTALK_TLS_CERT');
  const keyPath = get('INTERTALK_TLS_KEY');
  if (!!certPath !== !!keyPath) throw new ConfigError('INTERTALK_TLS_CERT and INTERTALK_TLS_KEY must be set together');
  const tls = certPath && keyPath ? { cert: certPath, key: keyPath } : null;

  const registration = (get('INTERTALK_REGISTRATION') ?? 'open').toLowerCase();
  if (registration !== 'open' && registration !== 'closed') {
    throw new ConfigError(`INTERTALK_REGISTRATION: "${registration}" must be open or closed`);
  }

  const cors = get('INTERTALK_CORS_ORIGINS') ?? '*';
  const corsOrigins = cors === '*' ? '*' : list(cors);

  const defaultPublic = `${tls ? 'https' : 'http'}://${tls ? domain : `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`}`;
  const publicUrl = (get('INTERTALK_PUBLIC_URL') ?? defaultPublic).replace(/\/+$/, '');
  try {
    const u = new URL(publicUrl);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new ConfigError(`INTERTALK_PUBLIC_URL: "${publicUrl}" is not an http(s) URL`);
  }

  const dur = (k: string, d: string) => parseDuration(k, get(k) ?? d);

  return {
    domain,
    listen,
    publicUrl,
    database: get('INTERTALK_DATABASE') ?? 'sqlite:./data/intertalk.db',
    tls,
    registration,
    maxBody: parseSize('INTERTALK_MAX_BODY', get('INTERTALK_MAX_BODY') ?? '1048576'),
    maxRecipients: parseInteger('INTERTALK_MAX_RECIPIENTS', get('INTERTALK_MAX_RECIPIENTS') ?? '1000', 1, 100_000),
    corsOrigins,
    accessTokenTtlMs: dur('INTERTALK_ACCESS_TOKEN_TTL', '1h'),
    refreshTokenTtlMs: dur('INTERTALK_REFRESH_TOKEN_TTL', '30d'),
    clockSkewMs: dur('INTERTALK_CLOCK_SKEW', '60s'),
    logLevel: get('INTERTALK_LOG_LEVEL') ?? 'info',
    trustProxy: (get('INTERTALK_TRUST_PROXY') ?? 'false') === 'true',
    metricsToken: get('INTERTALK_METRICS_TOKEN') ?? null,
    sendRatePerMinute: parseInteger('INTERTALK_SEND_RATE', get('INTERTALK_SEND_RATE') ?? '6000', 1, 100_000_000),
    roomPostRatePerMinute: parseInteger('INTERTALK_ROOM_POST_RATE', get('INTERTALK_ROOM_POST_RATE') ?? '120', 1, 100_000_000),
    roomReconcileMs: within('INTERTALK_ROOM_RECONCILE', dur('INTERTALK_ROOM_RECONCILE', '5m'), 1000, 7 * 86_400_000),
    registrationsPerHour: parseInteger('INTERTALK_REGISTRATION_RATE', get('INTERTALK_REGISTRATION_RATE') ?? '30', 1, 100_000_000),
    maxAttachment: within('INTERTALK_MAX_ATTACHMENT', parseSize('INTERTALK_MAX_ATTACHMENT', get('INTERTALK_MAX_ATTACHMENT') ?? '10MiB'), 1, 1024 * 1024 * 1024),
    attachmentQuota: parseSize('INTERTALK_ATTACHMENT_QUOTA', get('INTERTALK_ATTACHMENT_QUOTA') ?? '1024MiB'),
    wsAuthTimeoutMs: dur('INTERTALK_WS_AUTH_TIMEOUT', '10s'),
    wsHeartbeatMs: dur('INTERTALK_WS_HEARTBEAT', '30s'),
    wsPendingPerClient: parseInteger('INTERTALK_WS_PENDING_PER_CLIENT', get('INTERTALK_WS_PENDING_PER_CLIENT') ?? '64', 1, 10_000_000),
    redis: parseRedisUrl(get('INTERTALK_REDIS')),
    push: (() => {
      const flag = (get('INTERTALK_PUSH') ?? '').toLowerCase();
      if (flag && flag !== 'on' && flag !== 'off') throw new ConfigError(`INTERTALK_PUSH: "${flag}" must be on or off`);
      const subjectRaw = get('INTERTALK_VAPID_SUBJECT');
      // On when asked for, or when a subject is configured; off otherwise.
      const enabled = flag ? flag === 'on' : subjectRaw !== undefined;
      const subject = subjectRaw ?? `mailto:postmaster@${domain}`;
      return {
        enabled,
        subject: enabled ? parseVapidSubject(subject) : subject,
        maxSubscriptions: parseInteger('INTERTALK_PUSH_MAX_SUBSCRIPTIONS', get('INTERTALK_PUSH_MAX_SUBSCRIPTIONS') ?? '10', 1, 1000),
        delayMs: dur('INTERTALK_PUSH_DELAY', '3s'),
        ttlSeconds: Math.round(within('INTERTALK_PUSH_TTL', dur('INTERTALK_PUSH_TTL', '1d'), 0, 28 * 86_400_000) / 1000),
        validationTimeoutMs: dur('INTERTALK_PUSH_VALIDATION_TIMEOUT', '5m'),
        requestTimeoutMs: dur('INTERTALK_PUSH_TIMEOUT', '15s'),
        sweepIntervalMs: within('INTERTALK_PUSH_SWEEP', dur('INTERTALK_PUSH_SWEEP', '2s'), 50, 3_600_000),
        insecureEndpoints: (get('INTERTALK_PUSH_INSECURE_ENDPOINTS') ?? 'false') === 'true',
      };
    })(),
    indieweb: {
      recheckMs: within('INTERTALK_PERSONAL_DOMAIN_RECHECK', dur('INTERTALK_PERSONAL_DOMAIN_RECHECK', '6h'), 1000, 365 * 86_400_000),
      cacheTtlMs: within('INTERTALK_PERSONAL_DOMAIN_CACHE', dur('INTERTALK_PERSONAL_DOMAIN_CACHE', '10m'), 0, 86_400_000),
      callbackFlow: oneOf('INTERTALK_CALLBACK_FLOW', get('INTERTALK_CALLBACK_FLOW') ?? 'token', ['token', 'message'] as const),
      callbackTokenTtlMs: within('INTERTALK_CALLBACK_TOKEN_TTL', dur('INTERTALK_CALLBACK_TOKEN_TTL', '1h'), 60_000, 30 * 86_400_000),
      delivery: oneOf('INTERTALK_INDIEWEB_DELIVERY', get('INTERTALK_INDIEWEB_DELIVERY') ?? 'auto', ['auto', 'callback'] as const),
    },
    email: (() => {
      const flag = (get('INTERTALK_EMAIL') ?? '').toLowerCase();
      if (flag && flag !== 'on' && flag !== 'off') throw new ConfigError(`INTERTALK_EMAIL: "${flag}" must be on or off`);
      const smtp = parseEmailServer('INTERTALK_EMAIL_SMTP', get('INTERTALK_EMAIL_SMTP'), 'smtp');
      const enabled = flag ? flag === 'on' : smtp !== null;
      if (enabled && !smtp) throw new ConfigError('INTERTALK_EMAIL=on needs INTERTALK_EMAIL_SMTP (the submission server the bridge sends through)');
      const mailDomain = (get('INTERTALK_EMAIL_DOMAIN') ?? domain).toLowerCase();
      if (!isValidDomain(mailDomain)) throw new ConfigError(`INTERTALK_EMAIL_DOMAIN: "${mailDomain}" is not a domain name`);
      const dkimKey = get('INTERTALK_EMAIL_DKIM_KEY');
      const smtpParts = smtp ? (({ mailbox: _m, ...rest }) => rest)(smtp) : null;
      return {
        enabled,
        mailDomain,
        smtp: smtpParts,
        imap: parseEmailServer('INTERTALK_EMAIL_IMAP', get('INTERTALK_EMAIL_IMAP'), 'imap'),
        smtpListen: get('INTERTALK_EMAIL_SMTP_LISTEN') ? parseHostPort('INTERTALK_EMAIL_SMTP_LISTEN', get('INTERTALK_EMAIL_SMTP_LISTEN')!) : null,
        domains: domainList('INTERTALK_EMAIL_DOMAINS', get('INTERTALK_EMAIL_DOMAINS')),
        maxBytes: within('INTERTALK_EMAIL_MAX_SIZE', parseSize('INTERTALK_EMAIL_MAX_SIZE', get('INTERTALK_EMAIL_MAX_SIZE') ?? '25MiB'), 64 * 1024, 1024 * 1024 * 1024),
        plainMail: oneOf('INTERTALK_EMAIL_PLAIN_MAIL', get('INTERTALK_EMAIL_PLAIN_MAIL') ?? 'accept', ['accept', 'drop'] as const),
        unauthenticated: oneOf('INTERTALK_EMAIL_UNAUTHENTICATED', get('INTERTALK_EMAIL_UNAUTHENTICATED') ?? 'flag', ['flag', 'drop'] as const),
        encryption: oneOf('INTERTALK_EMAIL_ENCRYPTION', get('INTERTALK_EMAIL_ENCRYPTION') ?? 'opportunistic', ['opportunistic', 'off'] as const),
        dkim: dkimKey ? { keyFile: dkimKey, selector: get('INTERTALK_EMAIL_DKIM_SELECTOR') ?? 'intertalk' } : null,
        pollMs: within('INTERTALK_EMAIL_POLL', dur('INTERTALK_EMAIL_POLL', '60s'), 100, 86_400_000),
      };
    })(),
    federation: {
      resolve: parseResolve(get('INTERTALK_RESOLVE')),
      insecurePeers: domainList('INTERTALK_INSECURE_PEERS', get('INTERTALK_INSECURE_PEERS')),
      blockedDomains: domainList('INTERTALK_BLOCKED_DOMAINS', get('INTERTALK_BLOCKED_DOMAINS')),
      maxAgeMs: dur('INTERTALK_FEDERATION_MAX_AGE', '3d'),
      requestTimeoutMs: dur('INTERTALK_FEDERATION_TIMEOUT', '15s'),
      keyGraceMs: atLeast('INTERTALK_KEY_GRACE', dur('INTERTALK_KEY_GRACE', '7d'), 120_000),
      sweepIntervalMs: dur('INTERTALK_FEDERATION_SWEEP', '5s'),
      discoveryTtlMs: dur('INTERTALK_DISCOVERY_TTL', '1h'),
      peerConcurrency: parseInteger('INTERTALK_PEER_CONCURRENCY', get('INTERTALK_PEER_CONCURRENCY') ?? '4', 1, 256),
      inboundRatePerMinute: parseInteger('INTERTALK_FEDERATION_RATE', get('INTERTALK_FEDERATION_RATE') ?? '60000', 1, 100_000_000),
      pipelineDepth: parseInteger('INTERTALK_FEDERATION_PIPELINE', get('INTERTALK_FEDERATION_PIPELINE') ?? '4', 1, 64),
      pipelineWaitMs: within('INTERTALK_FEDERATION_PIPELINE_WAIT', dur('INTERTALK_FEDERATION_PIPELINE_WAIT', '5s'), 10, 60_000),
    },
  };
}
