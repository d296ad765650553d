// Events that cross capabilities (a stored message → live sockets; a delivery state change → the
// sender's devices). In one process the bus is a simple fan-out; several instances of one
// provider plug in a shared bus (Redis) behind the same interface.

export type BusEvent =
  | {
      type: 'message';
      seq: number;
      conversationId: string;
      /** Local participants to notify. */
      recipients: string[];
      /** The message as served to clients, serialised once. */
      json: string;
    }
  | {
      type: 'delivery';
      sender: string;
      messageId: string;
      seq: number;
      conversationId: string;
      destination: string;
      state: 'queued' | 'delivered' | 'failed' | 'cancelled';
      error: string | null;
      insecure: boolean;
    }
  | { type: 'read'; address: string; conversationId: string; lastReadSeq: number }
  // signals/1 (src/signals/): ephemeral, never stored as messages, never replayed on resume;
  // delivered to rich-mode sockets only.
  | {
      type: 'typing';
      conversationId: string;
      from: string;
      state: 'typing' | 'stopped';
      /** ISO time after which the indicator is gone unless renewed. */
      expiresAt: string;
      /** Local participants to notify (never `from` itself). */
      recipients: string[];
    }
  | {
      type: 'receipt';
      conversationId: string;
      /** The participant who read. */
      from: string;
      messageId: string;
      messageSender: string;
      /** Our seq of that message, null when it has not reached us. */
      seq: number | null;
      readAt: string;
      /** Local participants to notify (never `from` itself). */
      recipients: string[];
    }
  | { type: 'settings'; address: string; sendReadReceipts: boolean }
  // Rooms (src/rooms/): a frame for the rich-mode sockets of local members (roomMessage,
  // roomMembers). Not replayed on resume: clients catch up from the room's history.
  | { type: 'room'; recipients: string[]; frame: string }
  | { type: 'session-revoked'; sessionId: string };

/**
 * The contract every bus keeps (the hub relies on it): an event reaches the subscribers of every
 * instance sharing the bus, this one included; 'message' events reach them in seq order, each
 * once; a 'delivery' event never before the message it refers to.
 */
export interface EventBus {
  publish(event: BusEvent): void;
  subscribe(fn: (event: BusEvent) => void): () => void;
  close(): Promise<void>;
}

export class LocalBus implements EventBus {
  private readonly subs = new Set<(e: BusEvent) => void>();
  publish(event: BusEvent): void {
    for (const fn of this.subs) fn(event);
  }
  subscribe(fn: (e: BusEvent) => void): () => void {
    this.subs.add(fn);
    return () => this.subs.delete(fn);
  }
  async close(): Promise<void> {
    this.subs.clear();
  }
}
