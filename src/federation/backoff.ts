// Retry policy for deliveries to a peer: pure functions, tested without a clock.

export const BASE_DELAY_MS = 1_000;
export const MAX_DELAY_MS = 60 * 60_000;
/** A peer's Retry-After is honoured up to this much. */
export const MAX_RETRY_AFTER_MS = 6 * 60 * 60_000;

/** Exponential back-off with "equal jitter": half fixed, half random, capped. */
export function backoffDelay(failures: number, random: () => number = Math.random): number {
  const exp = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.round(exp / 2 + (exp / 2) * random());
}

/** Retry-After: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). Returns ms from now, or null. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | null {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return null;
  const t = v.trim();
  if (/^\d{1,10}$/.test(t)) return Math.min(MAX_RETRY_AFTER_MS, Number(t) * 1000);
  const date = Date.parse(t);
  if (!Number.isFinite(date)) return null;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, date - now));
}

export type Outcome = 'delivered' | 'retry' | 'fail';

/** What an HTTP status from a peer means for the delivery. */
export function classifyStatus(status: number): Outcome {
  if (status >= 200 && status < 300) return 'delivered';
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  return 'fail';
}
