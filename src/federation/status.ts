// `intertalk federation status`: one line per destination provider.
import type { Db } from '../storage/db.js';

export interface DestinationStatus {
  domain: string;
  queued: number;
  delivered: number;
  failed: number;
  lastSuccessAt: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
  nextAttemptAt: number | null;
  failures: number;
}

export async function destinationStatuses(db: Db): Promise<DestinationStatus[]> {
  const counts = await db
    .selectFrom('outbox')
    .select((eb) => ['destination', 'state', eb.fn.countAll<number>().as('n'), eb.fn.min('next_attempt_at').as('next')])
    .groupBy(['destination', 'state'])
    .execute();
  const peers = await db.selectFrom('federation_peers').selectAll().execute();
  const byDomain = new Map<string, DestinationStatus>();
  const get = (domain: string) => {
    let s = byDomain.get(domain);
    if (!s) byDomain.set(domain, (s = { domain, queued: 0, delivered: 0, failed: 0, lastSuccessAt: null, lastError: null, lastErrorAt: null, nextAttemptAt: null, failures: 0 }));
    return s;
  };
  for (const p of peers) {
    const s = get(p.domain);
    s.lastSuccessAt = p.last_success_at === null ? null : Number(p.last_success_at);
    s.lastError = p.last_error;
    s.lastErrorAt = p.last_error_at === null ? null : Number(p.last_error_at);
    s.failures = Number(p.failures);
    if (Number(p.backoff_until) > 0) s.nextAttemptAt = Number(p.backoff_until);
  }
  for (const c of counts) {
    const s = get(c.destination);
    const n = Number(c.n);
    if (c.state === 'queued') {
      s.queued = n;
      const next = Number(c.next);
      s.nextAttemptAt = Math.max(s.nextAttemptAt ?? 0, next);
    } else if (c.state === 'delivered') s.delivered = n;
    else if (c.state === 'failed') s.failed = n;
  }
  for (const s of byDomain.values()) if (s.queued === 0) s.nextAttemptAt = null;
  return [...byDomain.values()].sort((a, b) => a.domain.localeCompare(b.domain));
}

const fmt = (t: number | null) => (t ? new Date(t).toISOString() : '-');

export async function federationStatus(db: Db, out: (s: string) => void): Promise<void> {
  const all = await destinationStatuses(db);
  if (all.length === 0) {
    out('no deliveries to other providers yet');
    return;
  }
  out(['DESTINATION', 'QUEUED', 'DELIVERED', 'FAILED', 'LAST SUCCESS', 'NEXT ATTEMPT', 'LAST ERROR'].join('\t'));
  for (const s of all) {
    out([s.domain, s.queued, s.delivered, s.failed, fmt(s.lastSuccessAt), s.queued ? fmt(s.nextAttemptAt) : '-', s.lastError ? `${fmt(s.lastErrorAt)} ${s.lastError}` : '-'].join('\t'));
  }
}
