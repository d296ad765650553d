// Delivery transports: the seam for participants reached by something other than intertalk
// federation — an e-mail bridge, the IndieWeb callback flow. The outbox (outbox.ts) keeps one
// queue per destination domain with its lease, order, back-off, age limit, cancellation and
// bookkeeping; a transport only decides whether a destination is its own and carries the head of
// that queue. So every transport gets the same never-lose, in-order, once-only guarantees as
// federation, and messaging knows nothing about transports: it writes one outbox row per remote
// domain, as always.

import type { SignalBody } from '../signals/wire.js';

/** One queued message for a destination, as the outbox hands it over (oldest first). */
export interface OutboundRow {
  /** The outbox row's id. */
  id: number;
  /** The stored message body: the JSON wire form of src/messaging/service.ts (no seq). */
  body: string;
  ev: { sender: string; messageId: string; seq: number; conversationId: string; destination: string };
}

/**
 * What became of one message. `retry` keeps it (and every later one) queued and backs the
 * destination off; `fail` is final and is shown to the sender with its reason.
 */
export type DeliveryOutcome =
  | { kind: 'delivered'; insecure: boolean }
  | { kind: 'fail'; reason: string }
  | {
      kind: 'retry';
      reason: string;
      retryAfterMs: number | null;
      /**
       * At most this long before the next try, however many failures: for a relay of our own
       * (the e-mail bridge's submission server) that is down, where trying often costs little and
       * users wait for every minute of back-off after it is back.
       */
      maxDelayMs?: number;
    };

export interface DeliveryTransport {
  /** A short name for logs and `federation status` (`email`, `indieweb`). */
  readonly name: string;
  /**
   * Is `destination` (a lower-case domain) reached by this transport? Asked before each delivery
   * round, so it must be cheap when it has decided before (cache the decision). Throwing means
   * "cannot tell now": the round is retried later with the error as its reason.
   */
  claims(destination: string): Promise<boolean>;
  /**
   * Carries the head of the destination's queue (1 or more rows, oldest first). Returns one
   * outcome per row it attempted, in order: a non-empty prefix of `rows`, in which only the last
   * outcome may be a retry. Rows not attempted stay queued for the next round. Throwing counts as
   * a retry of the first row.
   */
  deliver(destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]>;
  /**
   * Carries a signals/1 signal (typing, read receipt) to a destination this transport claims, in
   * its own way (e-mail: a read receipt becomes an MDN). Best effort, like signals over
   * federation. Without it, signals go by federation as for any domain.
   */
  signal?(destination: string, s: SignalBody): Promise<void>;
}

/** The transports of one provider, asked in the order they were added; none claims → federation. */
export class Transports {
  private readonly list: DeliveryTransport[] = [];

  add(t: DeliveryTransport): void {
    if (this.list.some((x) => x.name === t.name)) throw new Error(`a delivery transport named ${t.name} is already registered`);
    this.list.push(t);
  }

  get size(): number {
    return this.list.length;
  }

  /** The transport that claims `destination`, or null for intertalk federation. */
  async pick(destination: string): Promise<DeliveryTransport | null> {
    for (const t of this.list) if (await t.claims(destination)) return t;
    return null;
  }

  /**
   * Runs a transport's delivery and holds it to its contract: a non-empty prefix of `rows`, a
   * retry only last. A broken answer or a throw becomes a retry of what was not settled.
   */
  static async run(t: DeliveryTransport, destination: string, rows: OutboundRow[]): Promise<DeliveryOutcome[]> {
    let outcomes: DeliveryOutcome[];
    try {
      outcomes = await t.deliver(destination, rows);
    } catch (err) {
      return [{ kind: 'retry', reason: `${destination} (${t.name}): ${err instanceof Error ? err.message : String(err)}`, retryAfterMs: null }];
    }
    if (!Array.isArray(outcomes) || outcomes.length === 0) return [{ kind: 'retry', reason: `${destination} (${t.name}): the transport attempted nothing`, retryAfterMs: null }];
    const kept = outcomes.slice(0, rows.length);
    const firstRetry = kept.findIndex((o) => o.kind === 'retry');
    return firstRetry === -1 ? kept : kept.slice(0, firstRetry + 1);
  }
}
