// Runs the real CLI (`bin/intertalk.js`) as a child process: for crash, signal and CLI tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

// dist/test/helpers → repository root
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = join(ROOT, 'bin', 'intertalk.js');

export { freePort } from '../../src/devnet/network.js';
import { freePort } from '../../src/devnet/network.js';

export interface Child {
  proc: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startServe(env: Record<string, string>, port?: number): Promise<Child> {
  const p = port ?? (await freePort());
  const proc = spawn(process.execPath, [BIN, 'serve'], {
    env: { ...process.env, INTERTALK_LISTEN: `127.0.0.1:${p}`, INTERTALK_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${p}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(url + '/healthz');
      if (r.ok) break;
    } catch {
      /* not up yet */
    }
    if (proc.exitCode !== null) throw new Error(`server exited early: ${out}`);
    if (Date.now() > deadline) throw new Error(`server did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { proc, url, output: () => out, exited };
}

export async function runCli(args: string[], env: Record<string, string>, stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, INTERTALK_LOG_LEVEL: 'silent', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  proc.stdin.end(stdin ?? '');
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}
