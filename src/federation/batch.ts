// batch/1: several messages to one peer in one request (docs/federation.md, "batch/1"). The
// sender signs one token as the provider (sub = iss) bound to the body by its SHA-256; the
// receiver checks and stores each message on its own, in order, and answers a result for each.
// Pure helpers shared by the outbox (building) and inbound (limits); no I/O.
import { createHash } from 'node:crypto';

export const BATCH_EXTENSION = 'batch/1';
/** Batches may carry `stream` and `seq`; the receiver applies one stream's batches in seq order. */
export const PIPELINE_EXTENSION = 'pipeline/1';
/** Most messages in one batch. */
export const MAX_BATCH_MESSAGES = 100;
/** Largest batch body accepted; a larger message travels alone over POST /messages. */
export const MAX_BATCH_BYTES = 1024 * 1024;

/** The request body of a batch, from message bodies that already are JSON text. */
export function batchBody(messages: readonly string[], pipe?: { stream: string; seq: number }): string {
  const head = pipe ? `"stream":${JSON.stringify(pipe.stream)},"seq":${pipe.seq},` : '';
  return `{${head}"messages":[${messages.join(',')}]}`;
}

/** The `body_sha256` claim for a body: base64url(SHA-256(bytes)). */
export function bodySha256(body: string | Buffer): string {
  return createHash('sha256').update(body).digest('base64url');
}

export interface BatchItemResult {
  /** The message's id, when the receiver could read one. */
  id: string | null;
  /** What POST /messages would have answered for this message alone. */
  status: number;
  error?: string;
  message?: string;
}

/**
 * Reads a peer's answer to a batch: one result per message sent, in order. Null when the answer is
 * not a well-formed batch answer for `count` messages (the caller retries the whole batch).
 */
export function parseBatchResults(json: unknown, count: number): BatchItemResult[] | null {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return null;
  const results = (json as { results?: unknown }).results;
  if (!Array.isArray(results) || results.length !== count) return null;
  const out: BatchItemResult[] = [];
  for (const r of results) {
    if (typeof r !== 'object' || r === null) return null;
    const { id, status, error, message } = r as Record<string, unknown>;
    if (!Number.isInteger(status) || (status as number) < 100 || (status as number) > 599) return null;
    const item: BatchItemResult = { id: typeof id === 'string' ? id : null, status: status as number };
    if (typeof error === 'string') item.error = error.slice(0, 200);
    if (typeof message === 'string') item.message = message.slice(0, 300);
    out.push(item);
  }
  return out;
}
