/**
 * Processes and /proc for the bench: bounded child processes (never execSync: ztunnels share this
 * machine), CPU seconds and memory of processes, and the machine's CPU counters.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export const children = new Set<ChildProcess>();
export const flags = { aborting: false };

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  timeoutMs: number;
  /** prefix for echoing output lines to the console */
  echo?: string;
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
  /** called for every complete stdout line as it arrives */
  onLine?: (line: string, child: ChildProcess) => void;
  /** keep stdin open (a pipe) instead of /dev/null */
  stdin?: boolean;
  /** called once the process is spawned */
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs a command asynchronously, bounded by timeoutMs (then SIGKILL). */
export function runCmd(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    if (flags.aborting && !opts.detached) {
      reject(new Error('interrupted'));
      return;
    }
    const child = spawn(file, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], detached: opts.detached ?? false, env: opts.env ?? process.env });
    children.add(child);
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    let partial = '';
    let timedOut = false;
    const echo = (chunk: string): void => {
      if (opts.echo === undefined) return;
      for (const line of chunk.split('\n')) if (line.trim() !== '') console.log(`${opts.echo}${line}`);
    };
    child.stdout!.on('data', (c: Buffer) => {
      const s = c.toString();
      stdout += s;
      echo(s);
      if (opts.onLine) {
        partial += s;
        let i: number;
        while ((i = partial.indexOf('\n')) >= 0) {
          const line = partial.slice(0, i);
          partial = partial.slice(i + 1);
          opts.onLine(line, child);
        }
      }
    });
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      echo(c.toString());
    });
    child.stdin?.on('error', () => {
      /* the child exited first */
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new Error(`cannot run ${file}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolvePromise({ code: code ?? (signal ? 128 : 1), stdout, stderr, timedOut });
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- /proc

export const clock = { ticks: 100 };

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The process that does the work: `pid` itself when its command line matches (ip netns exec execs),
 * else its child whose command line matches.
 */
export function resolvePid(pid: number, match: RegExp, what: string): number {
  if (match.test(cmdline(pid))) return pid;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const p = Number(d);
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && match.test(cmdline(p))) return p;
    } catch {
      /* gone */
    }
  }
  throw new Error(`process ${pid} from the state file is not the ${what} (${cmdline(pid) || 'not running'})`);
}

/** utime+stime of a process, all threads, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15
  return (Number(rest[11]) + Number(rest[12])) / clock.ticks;
}

/** utime and stime of a process separately, all threads, in seconds. */
export function cpuSplit(pid: number): { user: number; sys: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(rest[11]) / clock.ticks, sys: Number(rest[12]) / clock.ticks };
}

export interface Mem {
  rssMiB: number;
  hwmMiB: number;
}

export function memory(pid: number): Mem {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

/** Soft and hard RLIMIT_NOFILE of a process (from /proc/<pid>/limits). */
export function nofile(pid: number | 'self'): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const m = /Max open files\s+(\S+)\s+(\S+)/.exec(line ?? '');
  const n = (s: string | undefined): number => (s === undefined ? NaN : s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

export function kernelThreads(name: RegExp): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (name.test(readFileSync(`/proc/${d}/comm`, 'utf8').trim())) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

export interface MachineCpu {
  /** busy CPU seconds of the whole machine */
  busy: number;
  /** softirq CPU seconds of the whole machine (packet processing, largely the veths) */
  softirq: number;
  /** CPU seconds of this process, its finished children, and the given pids */
  ours: number;
}

/** CPU seconds used on the whole machine, in softirq, and by this bench plus `pids`. */
export function machineCpu(pids: number[]): MachineCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user)
  const busy = (line[0]! + line[1]! + line[2]! + line[5]! + line[6]! + (line[7] ?? 0)) / clock.ticks;
  const self = readFileSync('/proc/self/stat', 'utf8');
  const rest = self.slice(self.lastIndexOf(')') + 2).split(' ');
  let ours = (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / clock.ticks;
  for (const pid of pids) {
    try {
      ours += cpuSeconds(pid);
    } catch {
      /* exited */
    }
  }
  return { busy, softirq: line[6]! / clock.ticks, ours };
}

/**
 * vCPU used by processes that are not the bench's or the mesh's, between two readings. softirq time
 * (not charged to any process; during a run almost all of it is the bench's own packets) is left out.
 */
export function otherLoad(a: MachineCpu, b: MachineCpu, seconds: number): number {
  return Math.max(0, b.busy - a.busy - (b.ours - a.ours) - (b.softirq - a.softirq)) / seconds;
}
