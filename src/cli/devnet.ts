// `intertalk devnet`: three providers on this machine, federating over verified HTTPS, with demo
// users — intertalk in one command.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Config } from '../config/config.js';
import { startNetwork } from '../devnet/network.js';

const DEMO_PASSWORD = 'intertalk-demo';

export async function devnet(_config: Config, args: string[], out: (s: string) => void): Promise<void> {
  const domains = args.length > 0 ? args.map((a) => a.toLowerCase()) : ['ecorp.test', 'allsafe.test', 'fsociety.test'];
  const base = 8441;
  const dir = join(process.cwd(), 'data', 'devnet');
  mkdirSync(dir, { recursive: true });
  const ports = Object.fromEntries(domains.map((d, i) => [d, base + i]));
  const net = await startNetwork({ domains, dir, ports, env: { INTERTALK_LOG_LEVEL: process.env.INTERTALK_LOG_LEVEL ?? 'warn' } });
  const users = ['alice', 'bob'];
  for (const d of domains) {
    for (const u of users) {
      await net
        .provider(d)
        .ctx.accounts.create(u, DEMO_PASSWORD)
        .catch(() => undefined); // already there from an earlier run
    }
  }
  const resolve = domains.map((d) => `--resolve ${d}:${ports[d]}:127.0.0.1`).join(' ');
  out(`intertalk devnet: ${domains.length} providers, data in ${dir}\n`);
  for (const d of domains) out(`  https://${d}:${ports[d]}   users alice@${d}, bob@${d} (password ${DEMO_PASSWORD})`);
  const [a, b] = [domains[0]!, domains[1] ?? domains[0]!];
  out(`
The certificates come from a throw-away CA: ${net.ca.caCertPath}
Try it with curl (it must trust that CA and resolve the .test names to 127.0.0.1):

  C="curl -s --cacert ${net.ca.caCertPath} ${resolve}"
  TOKEN=$($C https://${a}:${ports[a]}/token -d grant_type=password -d username=alice -d password=${DEMO_PASSWORD} | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')
  $C https://${a}:${ports[a]}/messages -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
     -d '{"to":["alice@${a}","bob@${b}"],"message":"Hello from ${a}"}'
  sleep 1   # the first delivery to a new peer fetches its keys
  TOKEN_B=$($C https://${b}:${ports[b]}/token -d grant_type=password -d username=bob -d password=${DEMO_PASSWORD} | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')
  $C https://${b}:${ports[b]}/conversations -H "Authorization: Bearer $TOKEN_B"

Press Ctrl-C to stop.`);
  await new Promise<void>((resolveStop) => {
    const stop = () => resolveStop();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await net.stop();
}
