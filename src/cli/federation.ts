// Federation's CLI commands (keys, federation, block) and its factory for `serve`.
import type { Config } from '../config/config.js';
import type { ProviderOptions } from '../provider.js';
import { openStorage } from '../storage/db.js';
import { systemClock } from '../util/clock.js';
import { isValidDomain } from '../protocol/address.js';
import { SigningKeys, SIGNING_ALGORITHMS, type SigningAlgorithm } from '../federation/keys.js';
import { Blocklist } from '../federation/blocklist.js';
import { federation } from '../federation/service.js';
import { federationStatus } from '../federation/status.js';
import { federationCheck } from '../federation/check.js';
import { personalDomainCheck } from '../indieweb/check.js';
import { devnet } from './devnet.js';

export interface CommandGroup {
  name: string;
  usage: string;
  run(config: Config, sub: string | undefined, rest: string[], out: (s: string) => void): Promise<void>;
}

class CliUsage extends Error {}

/** Opens the configured database for one CLI command and closes it afterwards. */
export async function withDb<T>(config: Config, fn: (db: Awaited<ReturnType<typeof openStorage>>['db']) => Promise<T>): Promise<T> {
  const storage = await openStorage(config.database);
  try {
    return await fn(storage.db);
  } finally {
    await storage.close();
  }
}

const fmt = (t: number | null | undefined) => (t ? new Date(t).toISOString() : '-');

export const commandGroups: CommandGroup[] = [
  {
    name: 'devnet',
    usage: `  devnet [DOMAIN …]         run three (or the named) providers here, federating over HTTPS
                            with a throw-away CA; demo users alice and bob on each`,
    async run(config, sub, rest, out) {
      await devnet(config, sub ? [sub, ...rest] : [], out);
    },
  },
  {
    name: 'keys',
    usage: `  keys list                 list this provider's signing keys
  keys rotate [ALG]         make a new signing key (ES256 default; ES384, EdDSA, RS256);
                            the old one stays published for INTERTALK_KEY_GRACE`,
    async run(config, sub, rest, out) {
      await withDb(config, async (db) => {
        const keys = new SigningKeys(db, { domain: config.domain, clock: systemClock, graceMs: config.federation.keyGraceMs });
        if (sub === 'list') {
          await keys.ensure();
          for (const k of await keys.list()) {
            out(`${k.kid}\t${k.alg}\t${k.active ? 'active' : `retired ${fmt(k.retiredAt)}, published until ${fmt(k.publishUntil)}`}\tcreated ${fmt(k.createdAt)}`);
          }
        } else if (sub === 'rotate') {
          const alg = (rest[0] ?? 'ES256') as SigningAlgorithm;
          if (!SIGNING_ALGORITHMS.includes(alg)) throw new CliUsage(`unknown algorithm ${alg}; use one of ${SIGNING_ALGORITHMS.join(', ')}`);
          await keys.ensure();
          const { kid } = await keys.rotate(alg);
          out(`new signing key ${kid} (${alg}) is active; running instances pick it up within 30 s`);
        } else throw new CliUsage('usage: intertalk keys list|rotate [ALG]');
      });
    },
  },
  {
    name: 'federation',
    usage: `  federation status         every destination's queue, last success, last error, next attempt
  federation check DOMAIN   explain what works and what fails between us and DOMAIN
                            (a personal domain: the server its home page names, or the failing step)`,
    async run(config, sub, rest, out) {
      if (sub === 'status') return withDb(config, (db) => federationStatus(db, out));
      if (sub === 'check') {
        const domain = rest[0]?.toLowerCase();
        if (!domain || !isValidDomain(domain)) throw new CliUsage('usage: intertalk federation check DOMAIN');
        // A personal domain (src/indieweb/): federation is with the provider its home page names.
        const personal = await personalDomainCheck(config, domain, out);
        const ok = await federationCheck(config, personal.provider ?? domain, out);
        if (!ok) process.exitCode = 1;
        return;
      }
      throw new CliUsage('usage: intertalk federation status|check DOMAIN');
    },
  },
  {
    name: 'block',
    usage: `  block add DOMAIN [REASON] refuse messages from and to DOMAIN (and its subdomains)
  block remove DOMAIN       lift a block
  block list                list blocked domains`,
    async run(config, sub, rest, out) {
      await withDb(config, async (db) => {
        const list = new Blocklist(db, config.federation.blockedDomains, systemClock);
        const domain = rest[0]?.toLowerCase();
        if (sub === 'add' || sub === 'remove') {
          if (!domain || !isValidDomain(domain)) throw new CliUsage(`usage: intertalk block ${sub} DOMAIN`);
          if (sub === 'add') {
            await list.add(domain, rest.slice(1).join(' ') || null);
            out(`blocked ${domain}`);
          } else {
            out((await list.remove(domain)) ? `unblocked ${domain}` : `${domain} was not blocked here${config.federation.blockedDomains.has(domain) ? ' (it is blocked by INTERTALK_BLOCKED_DOMAINS)' : ''}`);
          }
        } else if (sub === 'list') {
          const all = await list.list();
          for (const b of all) out(`${b.domain}\t${b.source}${b.reason ? `\t${b.reason}` : ''}`);
          if (all.length === 0) out('(no blocked domains)');
        } else throw new CliUsage('usage: intertalk block add|remove|list');
      });
    },
  },
];

export { CliUsage };
export const federationFactory: ProviderOptions['federation'] = federation();
