// A POST whose body is sent only in part: does the server answer before the rest arrives?
// Shows that a request is refused before its body is read (a server that reads the body first
// cannot answer until it has all of it).
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface PartialPost {
  /** The status and JSON body of the answer, if one arrives within `ms`; else null. */
  answerWithin(ms: number): Promise<{ status: number; json: any } | null>;
  /** Whether the server closes the connection within `ms`. */
  closedWithin(ms: number): Promise<boolean>;
  /** Sends the rest of the body (chunked requests: the rest, then the last chunk). */
  finish(rest: Buffer): void;
  close(): void;
}

/**
 * Sends `POST path` with `headers` and the first bytes of the body. With `length` the request
 * declares Content-Length: length; without, it is chunked.
 */
export async function partialPost(
  url: string,
  path: string,
  headers: Record<string, string>,
  first: Buffer,
  opts: { length?: number; ca?: string; servername?: string } = {},
): Promise<PartialPost> {
  const u = new URL(url);
  const port = Number(u.port);
  const socket: Socket = await new Promise((resolve, reject) => {
    const s =
      u.protocol === 'https:'
        ? tlsConnect({ host: u.hostname, port, ca: opts.ca, servername: opts.servername }, () => resolve(s))
        : netConnect({ host: u.hostname, port }, () => resolve(s));
    s.once('error', reject);
  });
  let received = Buffer.alloc(0);
  let closed = false;
  const onClose: Array<() => void> = [];
  const closing = () => {
    closed = true;
    for (const f of onClose.splice(0)) f();
  };
  socket.once('end', closing);
  socket.once('close', closing);
  let answered: ((r: { status: number; json: any }) => void) | null = null;
  let answer: { status: number; json: any } | null = null;
  socket.on('error', () => undefined);
  socket.on('data', (d: Buffer) => {
    received = Buffer.concat([received, d]);
    const text = received.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end < 0 || answer) return;
    const head = text.slice(0, end);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
    const body = received.subarray(Buffer.byteLength(head, 'latin1') + 4);
    if (!Number.isFinite(len) || body.length < len) return;
    let json: any;
    try {
      json = JSON.parse(body.subarray(0, len).toString('utf8'));
    } catch {
      json = undefined;
    }
    answer = { status, json };
    answered?.(answer);
  });
  const chunked = opts.length === undefined;
  const lines = [`POST ${path} HTTP/1.1`, `Host: ${u.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${opts.length}`];
  const chunk = (b: Buffer) => (chunked ? Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]) : b);
  socket.write(Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n'), chunk(first)]));
  return {
    answerWithin: (ms) =>
      new Promise((resolve) => {
        if (answer) return resolve(answer);
        const t = setTimeout(() => resolve(null), ms);
        answered = (r) => {
          clearTimeout(t);
          resolve(r);
        };
      }),
    closedWithin: (ms) =>
      new Promise((resolve) => {
        if (closed) return resolve(true);
        const t = setTimeout(() => resolve(false), ms);
        onClose.push(() => {
          clearTimeout(t);
          resolve(true);
        });
      }),
    finish: (rest) => socket.write(chunked ? Buffer.concat([chunk(rest), Buffer.from('0\r\n\r\n')]) : rest),
    close: () => socket.destroy(),
  };
}

/**
 * The answer to `p` once the rest of the body is sent, after checking that none came before it
 * (within `quietMs`: a server that waits for the body says nothing meanwhile). Closes `p`.
 */
export async function answerAfterRest(p: PartialPost, rest: Buffer, quietMs = 300): Promise<{ early: { status: number; json: any } | null; answer: { status: number; json: any } | null }> {
  try {
    const early = await p.answerWithin(quietMs);
    if (early) return { early, answer: null };
    p.finish(rest);
    return { early: null, answer: await p.answerWithin(10_000) };
  } finally {
    p.close();
  }
}
