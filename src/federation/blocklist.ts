// Domains this provider refuses to talk to: INTERTALK_BLOCKED_DOMAINS plus the blocked_domains
// table (edited with `intertalk block …`, possibly from another process: re-read periodically).
import type { Db } from '../storage/db.js';
import type { Clock } from '../util/clock.js';

const REFRESH_MS = 10_000;

export class Blocklist {
  private fromDb = new Set<string>();
  private loadedAt = -Infinity;
  private loading: Promise<void> | null = null;

  constructor(
    private readonly db: Db,
    private readonly fromConfig: Set<string>,
    private readonly clock: Clock,
  ) {}

  private async refresh(): Promise<void> {
    if (this.clock.now() - this.loadedAt < REFRESH_MS) return;
    this.loading ??= this.db
      .selectFrom('blocked_domains')
      .select('domain')
      .execute()
      .then((rows) => {
        this.fromDb = new Set(rows.map((r) => r.domain));
        this.loadedAt = this.clock.now();
      })
      .finally(() => (this.loading = null));
    await this.loading;
  }

  /** A domain is blocked if it or any parent domain is listed. */
  async isBlocked(domain: string): Promise<boolean> {
    await this.refresh();
    const labels = domain.toLowerCase().split('.');
    // The domain itself and its parents, but not a bare top-level label (unless that is all).
    const candidates = labels.map((_, i) => labels.slice(i).join('.')).slice(0, Math.max(1, labels.length - 1));
    for (const c of candidates) if (this.fromConfig.has(c) || this.fromDb.has(c)) return true;
    return false;
  }

  async add(domain: string, reason: string | null): Promise<void> {
    await this.db.insertInto('blocked_domains').values({ domain: domain.toLowerCase(), reason, created_at: this.clock.now() }).onConflict((oc) => oc.column('domain').doUpdateSet({ reason })).execute();
    this.loadedAt = -Infinity;
  }

  async remove(domain: string): Promise<boolean> {
    const r = await this.db.deleteFrom('blocked_domains').where('domain', '=', domain.toLowerCase()).executeTakeFirst();
    this.loadedAt = -Infinity;
    return Number(r.numDeletedRows) > 0;
  }

  async list(): Promise<Array<{ domain: string; reason: string | null; source: 'config' | 'database' }>> {
    const rows = await this.db.selectFrom('blocked_domains').selectAll().orderBy('domain').execute();
    return [...[...this.fromConfig].map((domain) => ({ domain, reason: null, source: 'config' as const })), ...rows.map((r) => ({ domain: r.domain, reason: r.reason, source: 'database' as const }))];
  }
}
