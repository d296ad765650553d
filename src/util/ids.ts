import { createHash, randomBytes } from 'node:crypto';

/** 128-bit random id, base64url (22 chars). Used for message ids, jti, session ids. */
export function randomId(bytes = 16): string {
  return randomBytes(bytes).toString('base64url');
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('base64url');
}
