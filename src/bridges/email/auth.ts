// Who really sent an inbound mail: DKIM (and, for mail we take over SMTP ourselves, SPF) checked
// with mailauth, combined by DMARC alignment. A mail counts as authenticated when DMARC passes, or
// when a valid DKIM signature's domain is the From: domain or a parent of it (relaxed alignment).
// Unauthenticated mail is flagged (stored `insecure`, shown as such) or dropped, per
// INTERTALK_EMAIL_UNAUTHENTICATED.
import { authenticate } from 'mailauth';
import type { MailAuthenticator } from './inbound.js';

export type Resolver = (name: string, rr: string) => Promise<unknown>;

function aligned(signing: string | undefined, from: string | undefined): boolean {
  if (!signing || !from) return false;
  const s = signing.toLowerCase();
  const f = from.toLowerCase();
  return f === s || f.endsWith(`.${s}`);
}

export function mailAuthenticator(o: { mta: string; resolver?: Resolver }): MailAuthenticator {
  return {
    async check(raw, peer) {
      const r = await authenticate(raw, {
        mta: o.mta,
        disableArc: true,
        disableBimi: true,
        ...(o.resolver ? { resolver: o.resolver } : {}),
        ...(peer ? { ip: peer.ip, ...(peer.helo ? { helo: peer.helo } : {}), ...(peer.sender ? { sender: peer.sender } : {}) } : {}),
      });
      const fromDomain = r.dkim?.headerFrom?.[0]?.split('@').pop();
      const dmarc = r.dmarc ? r.dmarc.status?.result : undefined;
      const dkim = (r.dkim?.results ?? []).filter((v) => v.status?.result === 'pass');
      const spf = r.spf ? r.spf.status?.result : undefined;
      const authenticated = dmarc === 'pass' || dkim.some((v) => aligned(v.signingDomain, fromDomain));
      const summary = [`dkim=${dkim.length > 0 ? `pass (${dkim.map((v) => v.signingDomain).join(',')})` : (r.dkim?.results?.[0]?.status?.result ?? 'none')}`, `spf=${spf ?? 'none'}`, `dmarc=${dmarc ?? 'none'}`].join(' ');
      return { authenticated, summary };
    },
  };
}
