// A network of real providers on one machine, for tests and for trying intertalk out: each
// provider gets its own *.test domain, a certificate from a throw-away CA made on the spot, a
// loopback port, and INTERTALK_RESOLVE wiring so that every provider finds every other one over
// verified HTTPS. `intertalk devnet` starts one from the command line.
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadConfig } from '../config/config.js';
import { Provider } from '../provider.js';
import { federation } from '../federation/service.js';
import { makeCa, type TestCa } from './ca.js';

export interface NetworkNode {
  domain: string;
  port: number;
  /** https://127.0.0.1:port — what a client on this machine connects to. */
  url: string;
  dir: string;
  env: Record<string, string>;
  provider: Provider | null;
}

export interface Network {
  ca: TestCa;
  dir: string;
  nodes: Map<string, NetworkNode>;
  node(domain: string): NetworkNode;
  provider(domain: string): Provider;
  /** Stops one provider (its database stays), e.g. to test a peer that is down. */
  stopNode(domain: string): Promise<void>;
  /** Starts a stopped provider again on the same port and database. */
  startNode(domain: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A loopback port nobody listens on, for a provider that may be stopped and started again on it.
 * Picked at random *below* the kernel's ephemeral range: a port the kernel handed out (listen(0))
 * goes back into the pool of source ports for outgoing connections, so while its provider is
 * down any connection — from this process or another — may take it, and the restart fails with
 * EADDRINUSE. Below the range only another explicit bind can collide, and random picks make that
 * unlikely; listen(0) is the fallback where the range cannot be read.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  const floor = 10_000;
  if (low !== null && low - floor >= 1000) {
    for (let i = 0; i < 50; i++) {
      const port = floor + Math.floor(Math.random() * (low - floor));
      if (await canListen(port)) return port;
    }
  }
  return listenOnce(0);
}

function ephemeralLow(): number | null {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : null;
  } catch {
    return null;
  }
}

function canListen(port: number): Promise<boolean> {
  return listenOnce(port).then(
    () => true,
    () => false,
  );
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => {
      const bound = (s.address() as { port: number }).port;
      s.close(() => resolve(bound));
    });
  });
}

export interface NetworkOptions {
  domains: string[];
  dir?: string;
  /** Settings for every provider (e.g. a short INTERTALK_FEDERATION_SWEEP in tests). */
  env?: Record<string, string>;
  /** Per-domain settings. */
  envFor?: Record<string, Record<string, string>>;
  /** Extra resolve entries (domain → port on 127.0.0.1), e.g. for a test-only peer. */
  extraResolve?: Record<string, number>;
  ports?: Record<string, number>;
  logger?: (domain: string) => Logger | undefined;
  /**
   * Each provider's INTERTALK_DATABASE, from its domain and directory (default: an SQLite file in
   * that directory). Tests use it to run the network on PostgreSQL; `env`/`envFor` still win.
   */
  database?: (domain: string, dir: string) => string | Promise<string>;
}

export async function startNetwork(opts: NetworkOptions): Promise<Network> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'intertalk-net-'));
  mkdirSync(dir, { recursive: true });
  const ca = await makeCa(dir);
  const nodes = new Map<string, NetworkNode>();
  for (const domain of opts.domains) {
    const port = opts.ports?.[domain] ?? (await freePort());
    nodes.set(domain, { domain, port, url: `https://127.0.0.1:${port}`, dir: join(dir, domain), env: {}, provider: null });
  }
  const resolve = [...[...nodes.values()].map((n) => `${n.domain}=127.0.0.1:${n.port}`), ...Object.entries(opts.extraResolve ?? {}).map(([d, p]) => `${d}=127.0.0.1:${p}`)].join(',');
  for (const n of nodes.values()) {
    mkdirSync(n.dir, { recursive: true });
    const cert = await ca.issue([n.domain]);
    n.env = {
      INTERTALK_DOMAIN: n.domain,
      INTERTALK_LISTEN: `127.0.0.1:${n.port}`,
      INTERTALK_PUBLIC_URL: `https://${n.domain}:${n.port}`,
      INTERTALK_DATABASE: opts.database ? await opts.database(n.domain, n.dir) : `sqlite:${join(n.dir, 'intertalk.db')}`,
      INTERTALK_TLS_CERT: cert.certPath,
      INTERTALK_TLS_KEY: cert.keyPath,
      INTERTALK_RESOLVE: resolve,
      INTERTALK_LOG_LEVEL: 'silent',
      ...(opts.env ?? {}),
      ...(opts.envFor?.[n.domain] ?? {}),
    };
  }

  const startNode = async (domain: string) => {
    const n = nodes.get(domain);
    if (!n) throw new Error(`no node ${domain}`);
    if (n.provider) return;
    const config = loadConfig(n.env);
    const logger = opts.logger?.(domain);
    n.provider = await Provider.create(config, { federation: federation({ ca: ca.caCert }), defaultMetrics: false, ...(logger ? { logger } : {}) });
    await n.provider.start();
  };
  const stopNode = async (domain: string) => {
    const n = nodes.get(domain);
    if (!n?.provider) return;
    const p = n.provider;
    n.provider = null;
    await p.destroy();
  };
  try {
    for (const d of nodes.keys()) await startNode(d);
  } catch (err) {
    // e.g. a port taken meanwhile: stop the providers already running, or they keep the process alive.
    for (const d of nodes.keys()) await stopNode(d).catch(() => undefined);
    throw err;
  }

  return {
    ca,
    dir,
    nodes,
    node: (d) => {
      const n = nodes.get(d);
      if (!n) throw new Error(`no node ${d}`);
      return n;
    },
    provider: (d) => {
      const p = nodes.get(d)?.provider;
      if (!p) throw new Error(`${d} is not running`);
      return p;
    },
    stopNode,
    startNode,
    async stop() {
      for (const d of nodes.keys()) await stopNode(d);
    },
  };
}
