// startNetwork for tests: every node's database follows INTERTALK_TEST_DATABASE (helpers/database.ts);
// PostgreSQL databases are dropped when the network stops.
import { startNetwork as start, type Network, type NetworkOptions } from '../../src/devnet/network.js';
import { Agent } from 'undici';
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

/**
 * One undici Agent per provider domain, trusting the network's CA with the domain as TLS server
 * name (so a test can talk to a node as a peer would); close() ends them all.
 */
export class DevnetAgents {
  private readonly agents = new Map<string, Agent>();
  constructor(private readonly net: () => Network) {}

  for(domain: string): Agent {
    let agent = this.agents.get(domain);
    if (!agent) {
      agent = new Agent({ connect: { ca: this.net().ca.caCert, servername: domain } });
      this.agents.set(domain, agent);
    }
    return agent;
  }

  async close(): Promise<void> {
    for (const a of this.agents.values()) await a.close();
    this.agents.clear();
  }
}

/** An answer's body as text and, when it is JSON, parsed (undefined when it is not). */
export async function readAnswer(res: { text(): Promise<string> }): Promise<{ text: string; body: any }> {
  const text = await res.text();
  try {
    return { text, body: JSON.parse(text) };
  } catch {
    return { text, body: undefined };
  }
}
