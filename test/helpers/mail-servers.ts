// Private Postfix + Dovecot on loopback for the e-mail bridge tests, started from a fresh temp
// directory (the system services stay off). Layout and routing:
//
//   client --SMTP(+AUTH via Dovecot SASL)--> Postfix 127.0.0.1:smtp
//     virtual_mailbox_domains (opts.domains): known users only (hash map, rebuilt by addUser),
//       unknown ones are refused at RCPT with 550; catch-all domains alias every address to one
//       mailbox (virtual_alias_maps `@domain target`, the To: header stays the original one);
//     opts.bounceDomain: accepted (relay_domains), then refused by Dovecot LMTP (no such users),
//       so Postfix sends a real DSN to the sender's mailbox;
//   Postfix --LMTP--> Dovecot 127.0.0.1:lmtp --> maildir in <dir>/home/<address>
//   client --IMAP (plain, no TLS)--> Dovecot 127.0.0.1:imap
//
// Users live in one passwd-file (Dovecot re-reads it when it changes) and one Postfix hash map
// (running Postfix daemons notice the rebuilt .db and restart themselves), so addUser works
// after start. Postfix can be stopped and started again on the same port and queue.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/devnet/network.js';

const run = promisify(execFile);

export interface Endpoint {
  host: string;
  port: number;
}

export interface MailServerOptions {
  /** Domains Postfix delivers to Dovecot mailboxes, e.g. ['mail.test', 'prov.test']. */
  domains: string[];
  /** domain → address: every address at the domain lands in that address's mailbox. */
  catchAll?: Record<string, string>;
  /** A domain Postfix accepts and then bounces (DSN to the sender). Default 'bounce.test'. */
  bounceDomain?: string;
  /** Startup wait per server; the default is generous for loaded CI machines. */
  startTimeoutMs?: number;
}

export interface MailServers {
  dir: string;
  smtp: Endpoint;
  imap: Endpoint;
  bounceDomain: string;
  /** Creates a mailbox (IMAP login = the full address); it can receive mail right away. */
  addUser(address: string, password: string): Promise<void>;
  /** Stops Postfix only (its queue stays); mail sent meanwhile is refused at connect. */
  stopPostfix(): Promise<void>;
  /** Starts Postfix again on the same port, config and queue. */
  startPostfix(): Promise<void>;
  /** The last lines of the Postfix and Dovecot logs, for failure messages. */
  logTail(lines?: number): string;
  /** Stops both servers and removes the directory. */
  stop(): Promise<void>;
}

const POSTFIX_DIRS = { daemon: '/usr/lib/postfix/sbin', command: '/usr/sbin' };
// The unprivileged owner of the test mailboxes (needs first_valid_uid = 1 in Dovecot).
const MAIL_USER = 'dovenull';

export async function startMailServers(opts: MailServerOptions): Promise<MailServers> {
  const timeout = opts.startTimeoutMs ?? 60_000;
  const bounceDomain = opts.bounceDomain ?? 'bounce.test';
  const catchAll = opts.catchAll ?? {};
  for (const d of Object.keys(catchAll)) if (!opts.domains.includes(d)) throw new Error(`catch-all domain ${d} is not in domains`);
  const { uid, gid } = await userIds(MAIL_USER);

  const dir = mkdtempSync(join(tmpdir(), 'intertalk-mail-'));
  // Postfix and Dovecot drop to unprivileged users that must reach sockets, maps and homes in here.
  chmodSync(dir, 0o755);
  const dv = join(dir, 'dovecot');
  const pf = join(dir, 'postfix');
  const pfEtc = join(pf, 'etc');
  const home = join(dir, 'home');
  for (const d of [dv, join(dv, 'state'), pf, pfEtc, join(pf, 'queue'), join(pf, 'data'), home]) mkdirSync(d, { recursive: true, mode: 0o755 });
  const postfixIds = await userIds('postfix');
  chownSync(join(pf, 'data'), postfixIds.uid, postfixIds.gid);

  const [imapPort, lmtpPort, smtpPort] = (await distinctPorts(3)) as [number, number, number];
  const users = join(dv, 'users');
  // Test passwords only; Dovecot's auth process (user dovecot) must read it.
  writeFileSync(users, '', { mode: 0o644 });
  const authSocket = join(dv, 'run', 'auth-postfix');
  const dovecotConf = join(dv, 'dovecot.conf');
  writeFileSync(dovecotConf, dovecotConfig({ dv, users, imapPort, lmtpPort }));

  const vmailbox = join(pfEtc, 'vmailbox');
  const valias = join(pfEtc, 'valias');
  const transport = join(pfEtc, 'transport');
  writeFileSync(vmailbox, '');
  writeFileSync(valias, Object.entries(catchAll).map(([d, to]) => `@${d} ${to}\n`).join(''));
  // Not `error:` — smtpd would then refuse at RCPT. Dovecot LMTP knows no user there and answers
  // 550 after Postfix has accepted the mail, so Postfix sends a DSN.
  writeFileSync(transport, `${bounceDomain} lmtp:inet:[127.0.0.1]:${lmtpPort}\n`);
  writeFileSync(join(pfEtc, 'main.cf'), postfixMain({ pf, domains: opts.domains, bounceDomain, lmtpPort, authSocket, vmailbox, valias, transport }));
  writeFileSync(join(pfEtc, 'master.cf'), postfixMaster(smtpPort));
  for (const map of [vmailbox, valias, transport]) await postmap(map);

  const dovecotLog = join(dv, 'dovecot.log');
  const postfixLog = join(pf, 'postfix.log');
  const logTail = (lines = 40) =>
    [
      ['dovecot', dovecotLog],
      ['postfix', postfixLog],
    ]
      .map(([name, file]) => `--- ${name} log (${file}) ---\n${tail(file!, lines)}`)
      .join('\n');

  let dovecot: Daemon | null = null;
  let postfix: Daemon | null = null;

  const startPostfix = async () => {
    if (postfix) throw new Error('postfix is already running');
    // Errors before the master runs (bad main.cf) go to syslog only; `postfix -c <dir>/postfix/etc
    // check` in a terminal shows them (INTERTALK_KEEP_MAIL_DIR=1 keeps the directory).
    postfix = await startDaemon('postfix', join(POSTFIX_DIRS.command, 'postfix'), ['-c', pfEtc, 'start-fg'], { port: smtpPort, timeout, logTail });
  };
  const stopPostfix = async () => {
    const p = postfix;
    postfix = null;
    if (!p) return;
    // `postfix stop` signals the master through its pid file; start-fg's shell then exits too.
    await run(join(POSTFIX_DIRS.command, 'postfix'), ['-c', pfEtc, 'stop']).catch(() => undefined);
    await p.stop();
  };

  const stop = async () => {
    await stopPostfix().catch(() => undefined);
    const d = dovecot;
    dovecot = null;
    await d?.stop();
    // INTERTALK_KEEP_MAIL_DIR=1 keeps configs, logs and mailboxes for a post-mortem.
    if (!process.env.INTERTALK_KEEP_MAIL_DIR) rmSync(dir, { recursive: true, force: true });
  };

  try {
    dovecot = await startDaemon('dovecot', '/usr/sbin/dovecot', ['-F', '-c', dovecotConf], { port: imapPort, timeout, logTail, alsoPort: lmtpPort, alsoFile: authSocket });
    await startPostfix();
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }

  const addUser = async (address: string, password: string) => {
    const addr = address.toLowerCase();
    const domain = addr.split('@')[1] ?? '';
    if (!opts.domains.includes(domain)) throw new Error(`${address}: domain ${domain} is not one of ${opts.domains.join(', ')}`);
    if (/[:\n]/.test(addr + password)) throw new Error('address and password must not contain ":" or newlines');
    const h = join(home, addr);
    mkdirSync(h, { recursive: true, mode: 0o700 });
    chownSync(h, uid, gid);
    appendFileSync(users, `${addr}:{PLAIN}${password}:${uid}:${gid}::${h}\n`);
    appendFileSync(vmailbox, `${addr} ${addr}\n`);
    await postmap(vmailbox);
  };

  return { dir, smtp: { host: '127.0.0.1', port: smtpPort }, imap: { host: '127.0.0.1', port: imapPort }, bounceDomain, addUser, stopPostfix, startPostfix, logTail, stop };
}

function dovecotConfig(c: { dv: string; users: string; imapPort: number; lmtpPort: number }): string {
  // Dovecot 2.3 syntax (Debian 12's dovecot-core).
  return `
base_dir = ${c.dv}/run
state_dir = ${c.dv}/state
log_path = ${c.dv}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu ${c.users}
}
userdb {
  driver = passwd-file
  args = username_format=%Lu ${c.users}
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${c.imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${c.lmtpPort}
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
`;
}

function postfixMain(c: { pf: string; domains: string[]; bounceDomain: string; lmtpPort: number; authSocket: string; vmailbox: string; valias: string; transport: string }): string {
  return `
compatibility_level = 3.6
queue_directory = ${c.pf}/queue
data_directory = ${c.pf}/data
command_directory = ${POSTFIX_DIRS.command}
daemon_directory = ${POSTFIX_DIRS.daemon}
mail_owner = postfix
setgid_group = postdrop
maillog_file = ${c.pf}/postfix.log
maillog_file_prefixes = ${c.pf}
myhostname = mx.test
mydomain = mx.test
myorigin = mx.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
append_dot_mydomain = no
# No DNS anywhere: every destination is a numeric address or a local transport.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = ${c.authSocket}
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination
virtual_mailbox_domains = ${c.domains.join(' ')}
virtual_mailbox_maps = hash:${c.vmailbox}
virtual_alias_maps = hash:${c.valias}
virtual_transport = lmtp:inet:[127.0.0.1]:${c.lmtpPort}
relay_domains = ${c.bounceDomain}
transport_maps = hash:${c.transport}
message_size_limit = 52428800
# Retry deferred mail quickly, so a test that takes a server down waits seconds, not minutes.
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
delay_warning_time = 0
`;
}

function postfixMaster(smtpPort: number): string {
  // No chroot: the private queue directory has no copies of /etc files and sockets.
  return [
    `127.0.0.1:${smtpPort} inet n - n - - smtpd`,
    'pickup unix n - n 60 1 pickup',
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'proxywrite unix - - n - 1 proxymap',
    'smtp unix - - n - - smtp',
    'relay unix - - n - - smtp',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'lmtp unix - - n - - lmtp',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'postlog unix-dgram n - n - 1 postlogd',
    '',
  ].join('\n');
}

interface Daemon {
  stop(): Promise<void>;
}

/** Spawns a foreground daemon in its own process group and waits until its port accepts connections. */
async function startDaemon(
  name: string,
  bin: string,
  args: string[],
  o: { port: number; timeout: number; logTail: () => string; alsoPort?: number; alsoFile?: string },
): Promise<Daemon> {
  const proc: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-8000));
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let spawnError: Error | null = null;
  proc.once('error', (e) => (spawnError = e));
  const fail = (why: string) => new Error(`${name} ${why}\n--- ${name} output ---\n${out}\n${o.logTail()}`);
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      if (proc.pid) process.kill(-proc.pid, sig);
    } catch {
      /* already gone */
    }
  };
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    killGroup('SIGTERM');
    const t = setTimeout(() => killGroup('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + o.timeout;
  const ready = async () => (await canConnect(o.port)) && (o.alsoPort === undefined || (await canConnect(o.alsoPort))) && (o.alsoFile === undefined || existsSync(o.alsoFile));
  for (;;) {
    if (spawnError) throw fail(`could not be started: ${(spawnError as Error).message}`);
    if (proc.exitCode !== null || proc.signalCode !== null) throw fail(`exited during startup (code ${proc.exitCode}, signal ${proc.signalCode})`);
    if (await ready()) return { stop };
    if (Date.now() > deadline) {
      await stop();
      throw fail(`did not accept connections on 127.0.0.1:${o.port} within ${o.timeout} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setTimeout(2000);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('timeout', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(false));
  });
}

async function postmap(file: string): Promise<void> {
  await run(join(POSTFIX_DIRS.command, 'postmap'), [`hash:${file}`]);
}

async function userIds(name: string): Promise<{ uid: number; gid: number }> {
  const { stdout: u } = await run('id', ['-u', name]);
  const { stdout: g } = await run('id', ['-g', name]);
  return { uid: Number(u.trim()), gid: Number(g.trim()) };
}

/** Distinct free ports (freePort() may repeat itself when called back to back without binding). */
async function distinctPorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '(no log yet)';
  }
}
