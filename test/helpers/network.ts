// startNetwork for tests: every node's database follows INTERTALK_TEST_DATABASE (helpers/database.ts);
// PostgreSQL databases are dropped when the network stops.
import { startNetwork as start, type Network, type NetworkOptions } from '../../src/devnet/network.js';
import { databaseUrl, dropDatabase } from './database.js';

export { freePort, type Network, type NetworkNode, type NetworkOptions } from '../../src/devnet/network.js';

export async function startNetwork(opts: NetworkOptions): Promise<Network> {
  const net = await start({ database: (_domain, dir) => databaseUrl(dir), ...opts });
  const stop = net.stop.bind(net);
  net.stop = async () => {
    await stop();
    for (const n of net.nodes.values()) if (n.env.INTERTALK_DATABASE) await dropDatabase(n.env.INTERTALK_DATABASE);
  };
  return net;
}
