/**
 * Every rejected request is answered with `{"error": code, "message": text}`. Handlers throw
 * HttpError; the app's error handler serialises it. `error` is a stable machine-readable code.
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
  body(): Record<string, unknown> {
    return { error: this.code, message: this.message, ...this.extra };
  }
}

export const badRequest = (message: string, code = 'invalid_request') => new HttpError(400, code, message);
export const unauthorized = (message: string, code = 'unauthorized') =>
  new HttpError(401, code, message, { 'www-authenticate': `Bearer error="invalid_token"` });
export const forbidden = (message: string, code = 'forbidden') => new HttpError(403, code, message);
export const notFound = (message: string, code = 'not_found') => new HttpError(404, code, message);
export const tooMany = (message: string, retryAfterSeconds: number) =>
  new HttpError(429, 'rate_limited', message, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) });
export const unavailable = (message: string, retryAfterSeconds: number) =>
  new HttpError(503, 'temporarily_unavailable', message, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) });
