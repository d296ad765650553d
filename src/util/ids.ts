import { createHash, randomBytes } from 'node:crypto';

// Random bytes are drawn 4 KiB at a time: one call into the CSPRNG per 256 ids instead of one per
// id (randomBytes per call was 3–4% of the send path). Each byte is handed out once.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let offset = POOL_SIZE;

/** 128-bit random id, base64url (22 chars). Used for message ids, jti, session ids. */
export function randomId(bytes = 16): string {
  if (bytes > POOL_SIZE / 4) return randomBytes(bytes).toString('base64url');
  if (offset + bytes > pool.length) {
    pool = randomBytes(POOL_SIZE);
    offset = 0;
  }
  const id = pool.toString('base64url', offset, offset + bytes);
  offset += bytes;
  return id;
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('base64url');
}
