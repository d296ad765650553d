// The composition root's product: every service, built once by Provider.create and handed to
// route plugins and the CLI. No module-level singletons.
import type { Logger } from 'pino';
import type { Config } from './config/config.js';
import type { Storage } from './storage/db.js';
import type { Clock } from './util/clock.js';
import type { EventBus } from './bus/bus.js';
import type { Accounts } from './accounts/service.js';
import type { Auth } from './auth/service.js';
import type { RateLimiter } from './auth/limiter.js';
import type { Messaging } from './messaging/service.js';
import type { Metrics } from './metrics/metrics.js';
import type { AttachmentRef } from './protocol/rich.js';
import type { Signals } from './signals/service.js';
import type { SignalBody } from './signals/wire.js';
import type { DeliveryTransport } from './federation/transports.js';
import type { Rooms } from './rooms/service.js';

/** What the messaging capability needs from federation (implemented in src/federation/). */
export interface FederationPort {
  /** Handles POST /messages from a peer provider (its token is a JWT). */
  receive(input: { token: string; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<{ status: number; body: unknown; headers?: Record<string, string> }>;
  /**
   * Before a large POST /messages body is read: the per-address limit, the blocklist, and the
   * peer's token as far as it can be checked without the message (claims and signature). Null
   * when all hold; else the refusal.
   */
  checkBeforeBody(input: { token: string; remoteIp: string }): Promise<{ status: number; body: unknown; headers?: Record<string, string> } | null>;
  /** New outbox rows were written for these destinations: deliver soon. */
  enqueued(message: { seq: number; id: string; from: string; conversationId: string }, destinations: string[]): void;
  /** Delivery state of a message, per destination provider. */
  deliveries(seq: number): Promise<DeliveryState[]>;
  /** Policy check before accepting a message from our user for a remote domain. */
  refusal(domain: string): Promise<string | null>;
  /**
   * Registers another way to reach destinations (an e-mail bridge, …): the outbox asks it before
   * federation, and it carries the destinations it claims (src/federation/transports.ts).
   */
  addTransport(t: DeliveryTransport): void;
  /** A transport learned later that a delivered message did not arrive (a bounce): mark it failed. */
  failAfterDelivery(destination: string, messageSeq: number, reason: string): Promise<boolean>;
  /** signals/1: best effort, only to peers that advertise it (src/signals/federation.ts). */
  sendSignal?(domain: string, signal: SignalBody): void;
}

export interface DeliveryState {
  destination: string;
  state: 'queued' | 'delivered' | 'failed' | 'cancelled';
  attempts: number;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  insecure: boolean;
}

/** Files sent with messages (implemented in src/attachments/). */
export interface AttachmentsPort {
  /**
   * Completes the client's attachment references ([{id, name?}], ids of its own uploads) for
   * sending; 400 for anything else. Anything else the client put in a reference is ignored.
   */
  describe(uploader: string, refs: unknown): Promise<AttachmentRef[]>;
  /** A client's `rich` object with its `attachments` completed by describe (otherwise as is). */
  completeRich(uploader: string, rich: unknown): Promise<unknown>;
  /** The capability link a plain-intertalk recipient gets in the fallback text. */
  plainLink(a: AttachmentRef, conversationId: string): string;
  /** Seed 000: a binary `format` needs base64 `messageFormatted` within the size limit (400/413). */
  checkInline(m: { messageFormatted?: unknown; format?: unknown }): void;
  /** The bytes of a file we hold, or null (the e-mail bridge attaches them). */
  blob(id: string): Promise<Buffer | null>;
  /** A file that came with a message by another transport (e-mail): stored as verified. */
  storeBridged(sender: string, data: Buffer, mediaType: string, name: string): Promise<AttachmentRef | null>;
}

export interface AppContext {
  config: Config;
  logger: Logger;
  clock: Clock;
  storage: Storage;
  bus: EventBus;
  accounts: Accounts;
  auth: Auth;
  messaging: Messaging;
  /** A rate limiter shared by every instance of the provider (Redis) or local to this one. */
  rateLimiter(name: string, limit: number, windowMs: number): RateLimiter;
  registrationLimiter: RateLimiter;
  sendLimiter: RateLimiter;
  federation: FederationPort | null;
  metrics: Metrics;
  attachments: AttachmentsPort;
  /** Typing indicators, read receipts and the user's settings for them (src/signals/). */
  signals: Signals;
  /** Rooms hosted here, beside conversations (src/rooms/, docs/rooms.md). */
  rooms: RoomsPort;
}

/** Rooms (src/rooms/): hosting, membership state, policy, the ordered room log. */
export type RoomsPort = Rooms;
