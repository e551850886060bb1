import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { defaultRunner, CommandError } from '../../shared/redirect/apply.js';

/** Runs a command, resolving with stdout; the error names the command and its stderr. */
export async function run(file: string, args: string[], input?: string): Promise<string> {
  return (await defaultRunner(file, args, input)).stdout;
}

/** Runs `ip -n NETNS -batch -` with one command per line (one process for many changes). */
export async function ipBatch(netns: string | null, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await run('ip', [...(netns ? ['-n', netns] : []), '-batch', '-'], lines.join('\n') + '\n');
}

/** Names of existing network namespaces. */
export async function listNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Deletes a network namespace; no error when it is already gone. */
export async function deleteNetns(name: string): Promise<void> {
  try {
    await run('ip', ['netns', 'del', name]);
  } catch (err) {
    if (err instanceof CommandError && /No such file|Invalid argument/.test(err.stderr)) return;
    throw err;
  }
}

/** Starts a long-running process in a netns, detached in its own process group, output to a log file. */
export function spawnInNetns(netns: string, argv: string[], opts: { log: string; cwd?: string; env?: NodeJS.ProcessEnv }): number {
  const out = openSync(opts.log, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], {
      detached: true,
      stdio: ['ignore', out, out],
      cwd: opts.cwd,
      env: opts.env ?? process.env,
    });
    if (child.pid === undefined) throw new Error(`could not start ${argv[0]} in ${netns}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/** True while a process exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stops a process group: SIGTERM (or `first`), then SIGKILL after the grace period. */
export async function stopGroup(pid: number, graceMs = 3000, first: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  signal(first);
  const until = Date.now() + graceMs;
  while (alive(pid) && Date.now() < until) await sleep(50);
  if (alive(pid)) signal('SIGKILL');
  const hard = Date.now() + 2000;
  while (alive(pid) && Date.now() < hard) await sleep(20);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns true or the time is up; the error says what was awaited. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    try {
      if (await check()) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${last})` : ''}`);
}
