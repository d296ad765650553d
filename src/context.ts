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

/** What the messaging capability needs from federation (implemented in src/federation/). */
export interface FederationPort {
  /** Handles POST /messages from a peer provider (its token is a JWT). */
  receive(input: { token: string; rawBody: Buffer | string; body: unknown; remoteIp: string }): Promise<{ status: number; body: unknown; headers?: Record<string, string> }>;
  /** New outbox rows were written for these destinations: deliver soon. */
  enqueued(message: { seq: number; id: string; from: string; conversationId: string }, destinations: string[]): void;
  /** Delivery state of a message, per destination provider. */
  deliveries(seq: number): Promise<DeliveryState[]>;
  /** Policy check before accepting a message from our user for a remote domain. */
  refusal(domain: string): Promise<string | null>;
}

export interface DeliveryState {
  destination: string;
  state: 'queued' | 'delivered' | 'failed';
  attempts: number;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  insecure: boolean;
}

/** Files sent with messages (implemented in src/attachments/). */
export interface AttachmentsPort {
  /** Completes the client's attachment references (ids of its uploads) for sending. */
  describe(uploader: string, refs: AttachmentRef[] | Array<{ id: string; name?: string }>): Promise<AttachmentRef[]>;
  /** The link a plain-intertalk recipient gets in the fallback text. */
  plainLink(a: AttachmentRef): string;
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
  registrationLimiter: RateLimiter;
  sendLimiter: RateLimiter;
  federation: FederationPort | null;
  metrics: Metrics;
  attachments: AttachmentsPort;
}
