// The part of mailauth (CommonJS, no bundled types) the bridge uses.
declare module 'mailauth' {
  interface Verdict {
    status?: { result?: string; aligned?: string | false };
    signingDomain?: string;
    info?: string;
  }
  export function authenticate(
    message: Buffer | string,
    opts?: { ip?: string; helo?: string; sender?: string; mta?: string; resolver?: (name: string, rr: string) => Promise<unknown>; disableArc?: boolean; disableBimi?: boolean; trustReceived?: boolean },
  ): Promise<{ dkim?: { results?: Verdict[]; headerFrom?: string[] }; spf?: Verdict | false; dmarc?: Verdict | false }>;
}
