// Opportunistic end-to-end encryption for the bridge (Autocrypt, docs/email-encryption.md), on
// autocrypt.ts's pure functions and the bridge's key tables:
//  * every one of our users who mails gets a key on first use, announced in an `Autocrypt:` header;
//  * a mail is encrypted when every e-mail recipient of it has sent us a usable key (their
//    Autocrypt header, or gossip in a signed group mail); otherwise it goes in the clear;
//  * encrypted mail is decrypted with the keys of the users it is addressed to (the envelope
//    headers our MTA adds, else the To/Cc), its signature checked against what we know of the
//    sender; the newest Autocrypt header of a sender wins.
import type { Logger } from 'pino';
import { autocryptHeader, decryptMime, encryptMime, generateUserKey, gossipHeaders, parseAutocryptHeader, parseGossip, readPublicKey } from './autocrypt.js';
import type { EmailStore } from './store.js';
import type { EmailCrypto } from './service.js';
import { isEncrypted } from './service.js';

/** Header names whose addresses may name the user an encrypted mail is for. */
const ADDRESSED = /^(?:delivered-to|x-original-to|envelope-to|to|cc):(.*(?:\r?\n[ \t].*)*)/gim;

function headerBlock(raw: Buffer): string {
  const end = raw.indexOf('\r\n\r\n');
  const end2 = end === -1 ? raw.indexOf('\n\n') : end;
  return raw.subarray(0, end2 === -1 ? Math.min(raw.length, 256 * 1024) : end2).toString('latin1');
}

/** gossipHeaders() leaves a space every 78 characters of keydata: fold the header there. */
function fold(value: string): string {
  return value.replace(/ (?=[A-Za-z0-9+/=])/g, (m, i: number) => (value.lastIndexOf('keydata=', i) !== -1 ? '\r\n ' : m));
}

/** Adds header lines at the end of a message's header section (before the empty line). */
function withHeaders(raw: Buffer, lines: string[]): Buffer {
  if (lines.length === 0) return raw;
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return raw;
  return Buffer.concat([raw.subarray(0, end), Buffer.from(`\r\n${lines.join('\r\n')}`, 'latin1'), raw.subarray(end)]);
}

export function autocryptCrypto(o: { store: EmailStore; logger: Logger; mailDomain: string; maxBytes: number; now: () => number }): EmailCrypto {
  const { store } = o;
  const keyLocks = new Map<string, Promise<{ publicKey: string; privateKey: string; fingerprint: string }>>();

  async function keyOf(address: string) {
    const have = await store.userKey(address);
    if (have) return have;
    let p = keyLocks.get(address);
    if (!p) {
      p = (async () => {
        const k = await generateUserKey(address);
        return store.putUserKey({ address, fingerprint: k.fingerprint, publicKey: k.publicKeyArmored, privateKey: k.privateKeyArmored });
      })().finally(() => keyLocks.delete(address));
      keyLocks.set(address, p);
    }
    return p;
  }

  async function learnKey(address: string, keydata: string, preferEncrypt: 'mutual' | 'nopreference', seenAt: number): Promise<void> {
    const key = await readPublicKey(keydata);
    if (!key) return;
    await store.putPeerKey({ address: address.toLowerCase(), fingerprint: key.fingerprint, publicKey: key.armored, preferEncrypt, seenAt });
  }

  return {
    async autocryptFor(address) {
      const k = await keyOf(address);
      return autocryptHeader(address, k.publicKey, 'mutual');
    },

    async keydataFor(address) {
      const k = await keyOf(address);
      return parseAutocryptHeader(await autocryptHeader(address, k.publicKey, 'mutual'), address)?.keydata ?? null;
    },

    async encrypt(raw, sender, recipients, members) {
      const keys: string[] = [];
      for (const r of recipients) {
        const k = await store.peerKey(r.toLowerCase());
        if (!k) return null;
        keys.push(k.publicKey);
      }
      const own = await keyOf(sender);
      let inner = raw;
      if (members.length > 1) {
        // Autocrypt-Gossip (inside the encryption): the keys we know of every member.
        const known: Array<{ address: string; publicKeyArmored: string }> = [];
        for (const m of members) {
          const k = (await store.peerKey(m.toLowerCase())) ?? null;
          const ours = k ? null : await store.userKey(m.toLowerCase());
          if (k) known.push({ address: m, publicKeyArmored: k.publicKey });
          else if (ours) known.push({ address: m, publicKeyArmored: ours.publicKey });
        }
        inner = withHeaders(raw, (await gossipHeaders(known)).map((v) => `Autocrypt-Gossip: ${fold(v)}`));
      }
      return encryptMime(inner, { recipientsPublicKeys: keys, senderPrivateKey: own.privateKey });
    },

    async decrypt(raw) {
      if (!isEncrypted(raw)) return { ok: true, raw, encrypted: false, signedBy: null };
      // The users it is for: their keys first; every key only when the headers name none of ours.
      const named = new Set<string>();
      for (const m of headerBlock(raw).matchAll(ADDRESSED)) {
        for (const a of (m[1] ?? '').matchAll(/[^\s<>,;:"()]+@([^\s<>,;:"()]+)/g)) if (a[1]!.toLowerCase() === o.mailDomain) named.add(a[0].toLowerCase());
      }
      const mine = (await Promise.all([...named].map((a) => store.userKey(a)))).filter((k) => k !== null);
      const privateKeys = (mine.length > 0 ? mine : await store.allUserKeys()).map((k) => k.privateKey);
      if (privateKeys.length === 0) return { ok: false, reason: 'encrypted, and no user here has a key' };
      const r = await decryptMime(raw, {
        privateKeys,
        maxBytes: o.maxBytes,
        senderPublicKeys: async (q) => {
          if (!q.from) return [];
          const k = await store.peerKey(q.from);
          return k ? [k.publicKey] : [];
        },
      });
      if (!r.ok) return { ok: false, reason: `${r.reason}${r.detail ? `: ${r.detail}` : ''}` };
      const now = o.now();
      if (r.from && r.autocrypt && r.autocrypt.addr === r.from) await learnKey(r.from, r.autocrypt.keydata, r.autocrypt.preferEncrypt, now).catch(() => undefined);
      // Gossip only from a signed mail (as Delta Chat): keys of the other group members.
      if (r.signedBy) {
        for (const g of await parseGossip(r.inner)) {
          if (!(await store.peerKey(g.addr))) await store.putPeerKey({ address: g.addr, fingerprint: g.fingerprint, publicKey: g.publicKeyArmored, preferEncrypt: 'nopreference', seenAt: now - 1 });
        }
      }
      return { ok: true, raw: r.inner, encrypted: true, signedBy: r.signedBy };
    },

    async learn(mail) {
      const a = mail.autocrypt;
      if (!a || a.addr !== mail.from.address) return;
      const seen = Math.min(mail.date?.getTime() ?? o.now(), o.now());
      await learnKey(a.addr, a.keydata, a.preferEncrypt, seen);
    },
  };
}

