/**
 * What the benches that build a local mesh share (bench/run.ts, bench/l7/run.ts): running a bench
 * tool inside a network namespace and reading its JSON line, the `ambit` CLI, removing a mesh,
 * the machine and commit a result belongs to, and Prometheus text.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { flags, nofile, runCmd, sleep, type RunOptions, type RunResult } from './proc.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const CLUSTER_MODULE = join(ROOT, 'dist', 'cli', 'local', 'cluster.js');
export const TOOLS = join(ROOT, 'bench', 'tools');
export const STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';

/** Runs the ambit CLI (the last build, dist/cli/main.js). */
export function cli(args: string[], opts: RunOptions): Promise<RunResult> {
  return runCmd(process.execPath, [CLI, ...args], opts);
}

export interface ToolOptions {
  /** accept a result with ok=false: returns a warning to keep it, or null to treat it as a failure */
  accept?: (parsed: Record<string, unknown>) => string | null;
  /** extra command in front of `ip netns exec` (e.g. prlimit) */
  wrap?: string[];
  /** node flags in front of the tool (e.g. --experimental-websocket) */
  nodeFlags?: string[];
  stdin?: boolean;
  onLine?: RunOptions['onLine'];
  onSpawn?: RunOptions['onSpawn'];
}

function explain(parsed: Record<string, unknown>): string {
  const parts: string[] = [];
  if (typeof parsed.error === 'string') parts.push(parsed.error);
  if (typeof parsed.stopped === 'string') parts.push(`stopped: ${parsed.stopped}`);
  if (Array.isArray(parsed.errorMessages) && parsed.errorMessages.length) parts.push(`errors: ${parsed.errorMessages.join('; ')}`);
  if (typeof parsed.lost === 'number' && parsed.lost > 0) parts.push(`${parsed.lost} of ${String(parsed.sent)} requests unanswered`);
  return parts.length ? parts.join('; ') : JSON.stringify(parsed).slice(0, 400);
}

/** Runs a bench tool (bench/tools/NAME) inside a network namespace; resolves with its JSON result line (and a warning, if accepted with one). */
export async function tool(netns: string, name: string, args: string[], timeoutS: number, t: ToolOptions = {}): Promise<{ result: Record<string, unknown>; warning?: string }> {
  const argv = [...(t.wrap ?? []), 'ip', 'netns', 'exec', netns, process.execPath, ...(t.nodeFlags ?? []), join(TOOLS, name), ...args];
  const r = await runCmd(argv[0]!, argv.slice(1), { timeoutMs: timeoutS * 1000, ...(t.stdin ? { stdin: true } : {}), ...(t.onLine ? { onLine: t.onLine } : {}), ...(t.onSpawn ? { onSpawn: t.onSpawn } : {}) });
  if (flags.aborting) throw new Error('interrupted');
  const lines = r.stdout.trim().split('\n');
  let parsed: Record<string, unknown> | null = null;
  try {
    parsed = JSON.parse(lines[lines.length - 1] ?? '') as Record<string, unknown>;
  } catch {
    /* reported below */
  }
  if (r.timedOut) throw new Error(`${name} in ${netns} did not finish within ${timeoutS} s and was killed${r.stderr ? `: ${r.stderr.trim()}` : ''}`);
  if (!parsed || parsed.phase !== undefined) throw new Error(`${name} in ${netns} exited with ${r.code} without a result${r.stderr ? `: ${r.stderr.trim()}` : ''}`);
  if (parsed.ok !== true) {
    const warning = t.accept?.(parsed) ?? null;
    if (warning !== null) return { result: parsed, warning };
    throw new Error(`${name} in ${netns} failed: ${explain(parsed)}`);
  }
  return { result: parsed };
}

/** `ambit local down`, retried; if the CLI itself is broken for a moment, the library directly. */
export async function meshDown(name: string): Promise<void> {
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    // detached: a second Ctrl-C in the terminal does not kill the clean-up
    const r = await cli(['local', 'down', '--name', name], { timeoutMs: 90_000, echo: '  | ', detached: true });
    if (r.code === 0 && !r.timedOut) return;
    last = r.timedOut ? 'timed out' : `exit ${r.code}`;
    if (attempt < 3) await sleep(3000);
  }
  // The CLI may be broken for a moment (the tree is being rebuilt): call its library directly.
  console.log(`  \`ambit local down\` failed (${last}); trying ${CLUSTER_MODULE} directly`);
  const mod = (await import(pathToFileURL(CLUSTER_MODULE).href)) as { down: (root: string, name: string, say: (l: string) => void) => Promise<boolean> };
  await mod.down(STATE_ROOT, name, (l) => console.log(`  | ${l}`));
}

/** Sum of every series of one metric in Prometheus text. */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

/** The machine a result comes from. */
export async function machine(): Promise<Record<string, unknown>> {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(await readFile('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    /* not Linux */
  }
  return {
    nproc: os.availableParallelism(),
    cpuModel: model,
    kernel: os.release(),
    node: process.version,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    openFilesLimit: nofile('self'),
  };
}

/** Short commit of the tree the bench runs from, marked when it has uncommitted changes. */
export async function gitCommit(): Promise<string | null> {
  try {
    const r = await runCmd('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 5000 });
    if (r.code !== 0) return null;
    const dirty = await runCmd('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 5000 });
    return r.stdout.trim() + (dirty.stdout.trim() ? ' (with uncommitted changes)' : '');
  } catch {
    return null;
  }
}
