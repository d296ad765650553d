// `intertalk <command>`: serve, and the operator's tools. Reads the same INTERTALK_* settings.
import { createInterface } from 'node:readline';
import { loadConfig, ConfigError, type Config } from '../config/config.js';
import { Provider } from '../provider.js';
import { Accounts, AccountError } from '../accounts/service.js';
import { Auth } from '../auth/service.js';
import { MemoryRateLimiter } from '../auth/limiter.js';
import { systemClock } from '../util/clock.js';
import { CliUsage, commandGroups, federationFactory, withDb } from './federation.js';

const USAGE = `usage: intertalk <command>

  serve                     run the provider (settings: INTERTALK_* environment variables)
  user add NAME             create a user; the password is read from standard input
  user passwd NAME          set a user's password (from standard input); ends their sessions
  user list                 list users
  user remove NAME          delete a user and their sessions
${commandGroups.map((g) => g.usage).join('\n')}
  help                      this text`;

export class UsageError extends Error {}

async function readPassword(prompt: string): Promise<string> {
  const input = process.stdin;
  if (input.isTTY) {
    // Interactive: prompt without echo.
    process.stderr.write(prompt);
    const rl = createInterface({ input, output: process.stderr, terminal: true });
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
    const line = await new Promise<string>((resolve) => rl.question('', resolve));
    rl.close();
    process.stderr.write('\n');
    return line;
  }
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

async function withAccounts<T>(config: Config, fn: (a: Accounts, auth: Auth) => Promise<T>): Promise<T> {
  return withDb(config, (db) => {
    const accounts = new Accounts(db, config.domain, systemClock);
    const auth = new Auth(db, accounts, systemClock, {
      accessTtlMs: config.accessTokenTtlMs,
      refreshTtlMs: config.refreshTokenTtlMs,
      perAccountClient: new MemoryRateLimiter(1, 1),
      perAccount: new MemoryRateLimiter(1, 1),
      perClient: new MemoryRateLimiter(1, 1),
    });
    return fn(accounts, auth);
  });
}

async function serve(config: Config): Promise<void> {
  const provider = await Provider.create(config, { federation: federationFactory });
  await provider.start();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    provider.ctx.logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    provider.destroy().then(
      () => process.exit(0),
      (err) => {
        provider.ctx.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function run(args: string[], out: (s: string) => void = (s) => process.stdout.write(s + '\n')): Promise<void> {
  const [cmd, sub, ...rest] = args;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    out(USAGE);
    return;
  }
  const config = loadConfig(process.env);
  if (cmd === 'serve') return serve(config);
  if (cmd === 'user') {
    const name = rest[0];
    switch (sub) {
      case 'add': {
        if (!name) throw new UsageError('usage: intertalk user add NAME  (password on standard input)');
        const password = await readPassword(`Password for ${name}: `);
        const a = await withAccounts(config, (acc) => acc.create(name, password));
        out(`created ${a.address}`);
        return;
      }
      case 'passwd': {
        if (!name) throw new UsageError('usage: intertalk user passwd NAME  (password on standard input)');
        const password = await readPassword(`New password for ${name}: `);
        await withAccounts(config, async (acc, auth) => {
          await acc.setPassword(name, password);
          const a = await acc.findByUsername(name);
          if (a) await auth.revokeAllForUser(a.id);
        });
        out(`password changed for ${name}; their sessions were ended`);
        return;
      }
      case 'list': {
        const users = await withAccounts(config, (acc) => acc.list());
        for (const u of users) out(`${u.address}\t${new Date(u.createdAt).toISOString()}`);
        if (users.length === 0) out('(no users)');
        return;
      }
      case 'remove': {
        if (!name) throw new UsageError('usage: intertalk user remove NAME');
        await withAccounts(config, (acc) => acc.remove(name));
        out(`removed ${name}`);
        return;
      }
      default:
        throw new UsageError('usage: intertalk user add|passwd|list|remove …');
    }
  }
  const group = commandGroups.find((g) => g.name === cmd);
  if (group) return group.run(config, sub, rest, out);
  throw new UsageError(`unknown command "${cmd}"\n\n${USAGE}`);
}

export async function main(args: string[]): Promise<void> {
  try {
    await run(args);
  } catch (err) {
    if (err instanceof UsageError || err instanceof CliUsage || err instanceof ConfigError || err instanceof AccountError) {
      process.stderr.write(`intertalk: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}
