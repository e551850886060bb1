#!/usr/bin/env node
/**
 * Side-by-side benchmark of ambit L4 against no mesh ("direct"), on the same path, in one run.
 *
 * Builds one local mesh from bench/mesh/bench.yaml (two nodes; namespace `bench` is ambient,
 * namespace `plain` is not; each has a client pod on node-1 and a server pod on node-2), then,
 * alternating direct and ambit, repeated, runs the load generators in bench/tools inside the
 * client pods' network namespaces:
 *   1. one-stream bulk throughput (1 GiB; --quick 256 MiB) into a sink,
 *   2. open-loop 1 KiB request/response latency at 1000 rps over 4 connections (20 s; --quick 5 s),
 *   3. CPU seconds (utime+stime from /proc) of each ztunnel per 1000 requests, and their RSS.
 * Prints a Markdown table (medians; ratios and differences paired per repetition) and writes JSON.
 * The mesh is always removed at the end, also after a failure or Ctrl-C.
 *
 *   npm run bench -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const TOOLS = join(ROOT, 'bench', 'tools');
const MESH_DIR = join(ROOT, 'bench', 'mesh');
const STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';
const SINK_PORT = 9000;
const RR_PORT = 9001;

// ---------------------------------------------------------------- options

interface Options {
  quick: boolean;
  repeat: number;
  out: string;
  name: string;
  /** folder for V8 CPU profiles of the ztunnels (and control plane); null = no profiling */
  profile: string | null;
}

interface Workload {
  bulkBytes: number;
  bulkTimeoutS: number;
  rate: number;
  conns: number;
  size: number;
  durationS: number;
  warmupS: number;
  /** a total time budget; repetitions that would not fit are skipped (quick mode) */
  budgetS: number | null;
}

function usage(): string {
  return `usage: npm run bench -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME]
  --quick        256 MiB bulk, 5 s latency runs, whole bench within about a minute
  --repeat N     repetitions of each measurement, median reported (default 3)
  --out FILE     JSON results (default bench/results/latest.json; the table also goes to FILE with .md)
  --name NAME    name of the local mesh (must start with "bench"; default bench)
  --profile DIR  run the ztunnels under the V8 sampling profiler: each writes a .cpuprofile into DIR
                 when the mesh is removed (the profiler costs CPU: do not publish those numbers)`;
}

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, repeat: 3, out: join(ROOT, 'bench', 'results', 'latest.json'), name: 'bench', profile: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--repeat') {
      const v = value();
      o.repeat = Number(v);
      if (!Number.isInteger(o.repeat) || o.repeat < 1 || o.repeat > 50) throw new UsageError(`--repeat must be a whole number from 1 to 50, got "${v}"`);
    } else if (a === '--out') o.out = resolve(value());
    else if (a === '--name') {
      o.name = value();
      if (!/^bench[a-z0-9-]{0,20}$/.test(o.name)) throw new UsageError(`--name must start with "bench" (lowercase letters, digits, '-'), got "${o.name}"`);
    } else if (a === '--profile') o.profile = resolve(value());
    else if (a === '--help' || a === '-h') {
      console.log(usage());
      process.exit(0);
    } else throw new UsageError(`unknown argument "${a}"`);
  }
  return o;
}

class UsageError extends Error {}

function workloadFor(o: Options): Workload {
  return o.quick
    ? { bulkBytes: 256 * 1024 ** 2, bulkTimeoutS: 40, rate: 1000, conns: 4, size: 1024, durationS: 5, warmupS: 0.5, budgetS: 60 }
    : { bulkBytes: 1024 ** 3, bulkTimeoutS: 150, rate: 1000, conns: 4, size: 1024, durationS: 20, warmupS: 2, budgetS: null };
}

// ---------------------------------------------------------------- processes

const children = new Set<ChildProcess>();
let aborting = false;

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command asynchronously (never execSync: ztunnels share this machine), bounded by timeoutMs. */
function runCmd(file: string, args: string[], opts: { timeoutMs: number; echo?: string; detached?: boolean; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    if (aborting && !opts.detached) {
      reject(new Error('interrupted'));
      return;
    }
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: opts.detached ?? false, env: opts.env ?? process.env });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const echo = (chunk: string): void => {
      if (opts.echo === undefined) return;
      for (const line of chunk.split('\n')) if (line.trim() !== '') console.log(`${opts.echo}${line}`);
    };
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      echo(c.toString());
    });
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      echo(c.toString());
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

function cli(args: string[], opts: { timeoutMs: number; echo?: string; detached?: boolean; env?: NodeJS.ProcessEnv }): Promise<RunResult> {
  return runCmd(process.execPath, [CLI, ...args], opts);
}

/** Runs a bench tool inside a pod's netns; resolves with its JSON result line. */
async function tool(netns: string, name: string, args: string[], timeoutS: number): Promise<Record<string, unknown>> {
  const r = await runCmd('ip', ['netns', 'exec', netns, process.execPath, join(TOOLS, name), ...args], { timeoutMs: timeoutS * 1000 });
  if (aborting) throw new Error('interrupted');
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: Record<string, unknown> | null = null;
  try {
    parsed = JSON.parse(line) as Record<string, unknown>;
  } catch {
    /* reported below */
  }
  if (r.timedOut) throw new Error(`${name} in ${netns} did not finish within ${timeoutS} s and was killed${r.stderr ? `: ${r.stderr.trim()}` : ''}`);
  if (!parsed) throw new Error(`${name} in ${netns} exited with ${r.code} without a result${r.stderr ? `: ${r.stderr.trim()}` : ''}`);
  if (parsed.ok !== true) {
    const why = typeof parsed.error === 'string' ? parsed.error : `${JSON.stringify(parsed).slice(0, 400)}`;
    throw new Error(`${name} in ${netns} failed: ${why}`);
  }
  return parsed;
}

// ---------------------------------------------------------------- mesh set-up and teardown

interface PodView {
  namespace: string;
  name: string;
  node: string;
  ip: string;
  netns: string;
  captured: boolean;
  running: boolean;
}
interface NodeView {
  name: string;
  netns: string;
  ip: string;
  ztunnel: string;
}
interface StateFile {
  processes: { role: string; name: string; pid: number; log: string }[];
  dir: string;
}

let meshName = 'bench';
let meshMayExist = false;
let teardownPromise: Promise<void> | null = null;

function teardown(): Promise<void> {
  if (!meshMayExist) return Promise.resolve();
  teardownPromise ??= (async () => {
    console.log(`\ntearing down mesh "${meshName}"…`);
    try {
      // detached: a second Ctrl-C in the terminal does not kill the clean-up
      const r = await cli(['local', 'down', '--name', meshName], { timeoutMs: 90_000, echo: '  | ', detached: true });
      if (r.code !== 0 || r.timedOut) throw new Error(r.timedOut ? 'timed out' : `exit ${r.code}`);
      meshMayExist = false;
    } catch (err) {
      console.error(`bench: removing the mesh failed (${(err as Error).message}); run \`node dist/cli/main.js local down --name ${meshName}\` as root`);
      process.exitCode = 1;
    }
  })();
  return teardownPromise;
}

async function leftovers(name: string): Promise<boolean> {
  if (existsSync(join(STATE_ROOT, name, 'state.json'))) return true;
  const r = await runCmd('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  const own = new RegExp(`^${name}-(fabric|node-\\d+|pod-\\d+)(\\s|$)`);
  return r.stdout.split('\n').some((l) => own.test(l.trim()));
}

/** The node process of a ztunnel: the recorded pid (ip netns exec execs), or its descendant running ztunnel/main.js. */
function ztunnelPid(pid: number): number {
  const cmd = (p: number): string => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      return '';
    }
  };
  if (cmd(pid).includes('ztunnel')) return pid;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const p = Number(d);
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && cmd(p).includes('ztunnel')) return p;
    } catch {
      /* gone */
    }
  }
  throw new Error(`process ${pid} from the state file is not a ztunnel (${cmd(pid) || 'not running'})`);
}

// ---------------------------------------------------------------- /proc

let clockTicks = 100;

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15
  return (Number(rest[11]) + Number(rest[12])) / clockTicks;
}

function memory(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

interface Ztunnel {
  node: string;
  pid: number;
  netns: string;
  ip: string;
  log: string;
}

function cpuAll(zs: Ztunnel[]): Record<string, number> {
  return Object.fromEntries(zs.map((z) => [z.node, cpuSeconds(z.pid)]));
}

/** pids of every process of the mesh (control plane, ztunnels, pod commands), from the state file */
let meshPids: number[] = [];

/**
 * CPU seconds used on the whole machine, and by this bench (itself and its finished children: the
 * load generators) plus the mesh's processes. The difference is load from *other* processes,
 * i.e. how noisy the machine was during a run.
 */
function machineCpu(): { busy: number; ours: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest time is already in user)
  const busy = (line[0]! + line[1]! + line[2]! + line[5]! + line[6]! + (line[7] ?? 0)) / clockTicks;
  const self = readFileSync('/proc/self/stat', 'utf8');
  const rest = self.slice(self.lastIndexOf(')') + 2).split(' ');
  let ours = (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / clockTicks;
  for (const pid of meshPids) {
    try {
      ours += cpuSeconds(pid);
    } catch {
      /* exited */
    }
  }
  return { busy, ours };
}

function kernelThreads(name: RegExp): number[] {
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

/** vCPU used by processes that are not the bench's or the mesh's, between two machineCpu() readings. */
function otherLoad(a: { busy: number; ours: number }, b: { busy: number; ours: number }, seconds: number): number {
  return Math.max(0, b.busy - a.busy - (b.ours - a.ours)) / seconds;
}

function metricSum(text: string, name: string): number {
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

/** Sum of istio_tcp_connections_opened_total of a ztunnel, read from inside its node's netns. */
async function openedTotal(z: Ztunnel): Promise<number> {
  const script = `fetch('http://${z.ip}:15020/metrics').then(r=>r.text()).then(t=>process.stdout.write(t),e=>{console.error(e.message);process.exit(1)})`;
  const r = await runCmd('ip', ['netns', 'exec', z.netns, process.execPath, '-e', script], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`cannot read metrics of ztunnel on ${z.node}: ${r.stderr.trim()}`);
  return metricSum(r.stdout, 'istio_tcp_connections_opened_total');
}

// ---------------------------------------------------------------- measurements

type PathName = 'direct' | 'ambit';
const PATH_LABEL: Record<PathName, string> = { direct: 'direct', ambit: 'ambit L4' };

interface BenchPath {
  name: PathName;
  client: PodView;
  server: PodView;
}

interface LatencySummary {
  count: number;
  mean: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  p999: number | null;
  max: number | null;
}

interface BulkRun {
  kind: 'bulk';
  rep: number;
  path: PathName;
  ok: boolean;
  error?: string;
  gbps?: number;
  seconds?: number;
  bytes?: number;
  ztunnelCpuSeconds?: Record<string, number>;
  /** vCPU used meanwhile by processes outside the bench and the mesh (noise) */
  otherVcpu?: number;
}

interface LatencyRun {
  kind: 'latency';
  rep: number;
  path: PathName;
  ok: boolean;
  error?: string;
  latencyMs?: LatencySummary;
  sendLagMs?: LatencySummary;
  sent?: number;
  answered?: number;
  lost?: number;
  wallSeconds?: number;
  ztunnelCpuSeconds?: Record<string, number>;
  ztunnelCpuPer1000?: Record<string, number>;
  ztunnelVcpu?: Record<string, number>;
  ztunnelMemory?: Record<string, { rssMiB: number; hwmMiB: number }>;
  /** vCPU used meanwhile by processes outside the bench and the mesh (noise) */
  otherVcpu?: number;
}

type Run = BulkRun | LatencyRun;

async function bulkRun(p: BenchPath, rep: number, w: Workload, zs: Ztunnel[]): Promise<BulkRun> {
  const before = cpuAll(zs);
  const m0 = machineCpu();
  const t0 = process.hrtime.bigint();
  try {
    const r = await tool(p.client.netns, 'bulk.mjs', ['--host', p.server.ip, '--port', String(SINK_PORT), '--bytes', String(w.bulkBytes), '--timeout', String(w.bulkTimeoutS)], w.bulkTimeoutS + 15);
    const after = cpuAll(zs);
    const other = otherLoad(m0, machineCpu(), Number(process.hrtime.bigint() - t0) / 1e9);
    return { kind: 'bulk', rep, path: p.name, ok: true, gbps: r.gbps as number, seconds: r.seconds as number, bytes: r.bytes as number, ztunnelCpuSeconds: diff(after, before), otherVcpu: other };
  } catch (err) {
    return { kind: 'bulk', rep, path: p.name, ok: false, error: (err as Error).message };
  }
}

async function latencyRun(p: BenchPath, rep: number, w: Workload, zs: Ztunnel[]): Promise<LatencyRun> {
  const before = cpuAll(zs);
  const m0 = machineCpu();
  const t0 = process.hrtime.bigint();
  try {
    const r = await tool(
      p.client.netns,
      'loadgen.mjs',
      ['--host', p.server.ip, '--port', String(RR_PORT), '--rate', String(w.rate), '--conns', String(w.conns), '--size', String(w.size), '--duration', String(w.durationS), '--warmup', String(w.warmupS)],
      w.durationS + w.warmupS + 40,
    );
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = diff(cpuAll(zs), before);
    const other = otherLoad(m0, machineCpu(), wall);
    const sent = r.sent as number;
    return {
      kind: 'latency',
      rep,
      path: p.name,
      ok: true,
      latencyMs: r.latencyMs as LatencySummary,
      sendLagMs: r.sendLagMs as LatencySummary,
      sent,
      answered: r.answered as number,
      lost: r.lost as number,
      wallSeconds: wall,
      ztunnelCpuSeconds: cpu,
      ztunnelCpuPer1000: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v / (sent / 1000)])),
      // over the generator's whole life (process start, connect, warm-up, run, drain)
      ztunnelVcpu: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v / wall])),
      ztunnelMemory: Object.fromEntries(zs.map((z) => [z.node, memory(z.pid)])),
      otherVcpu: other,
    };
  } catch (err) {
    return { kind: 'latency', rep, path: p.name, ok: false, error: (err as Error).message };
  }
}

function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! - (b[k] ?? 0)]));
}

// ---------------------------------------------------------------- summary

function median(xs: number[]): number | null {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Row {
  key: string;
  label: string;
  unit: string;
  direct: number | null;
  ambit: number | null;
  /** median over repetitions of ambit_i / direct_i */
  ratio: number | null;
  /** median over repetitions of ambit_i - direct_i */
  added: number | null;
  digits: number;
  showRatio: boolean;
  /** a property of the mesh only (ztunnel memory): no direct value, no comparison */
  ambitOnly?: boolean;
}

function summarize(runs: Run[], zs: Ztunnel[], w: Workload, idle: Record<string, { rssMiB: number; hwmMiB: number }>): Row[] {
  const reps = [...new Set(runs.map((r) => r.rep))].sort((a, b) => a - b);
  const pick = <T extends Run>(kind: T['kind'], path: PathName, rep: number): T | undefined => runs.find((r) => r.kind === kind && r.path === path && r.rep === rep && r.ok) as T | undefined;
  const row = (key: string, label: string, unit: string, kind: Run['kind'], get: (r: Run) => number | undefined, digits: number, showRatio = true): Row => {
    const d: number[] = [];
    const a: number[] = [];
    const ratios: number[] = [];
    const diffs: number[] = [];
    for (const rep of reps) {
      const rd = pick(kind, 'direct', rep);
      const ra = pick(kind, 'ambit', rep);
      const vd = rd ? get(rd) : undefined;
      const va = ra ? get(ra) : undefined;
      if (vd !== undefined) d.push(vd);
      if (va !== undefined) a.push(va);
      if (vd !== undefined && va !== undefined) {
        if (vd !== 0) ratios.push(va / vd);
        diffs.push(va - vd);
      }
    }
    return { key, label, unit, direct: median(d), ambit: median(a), ratio: median(ratios), added: median(diffs), digits, showRatio };
  };
  const lat = (p: keyof LatencySummary) => (r: Run) => ((r as LatencyRun).latencyMs?.[p] ?? undefined) as number | undefined;
  const gib = w.bulkBytes / 1024 ** 3;
  const size = gib >= 1 ? `${gib} GiB` : `${w.bulkBytes / 1024 ** 2} MiB`;
  const rows: Row[] = [
    row('bulk_gbps', `bulk throughput, one stream, ${size}`, 'Gbit/s', 'bulk', (r) => (r as BulkRun).gbps, 2),
    row('latency_p50_ms', `latency p50, ${w.size} B req/resp @ ${w.rate} rps`, 'ms', 'latency', lat('p50'), 3),
    row('latency_p90_ms', 'latency p90', 'ms', 'latency', lat('p90'), 3),
    row('latency_p99_ms', 'latency p99', 'ms', 'latency', lat('p99'), 3),
    row('latency_max_ms', 'latency max', 'ms', 'latency', lat('max'), 3),
  ];
  for (const z of zs) {
    rows.push(row(`cpu_per_1000_${z.node}`, `ztunnel ${z.node} CPU per 1000 req`, 'CPU s', 'latency', (r) => (r as LatencyRun).ztunnelCpuPer1000?.[z.node], 4, false));
  }
  for (const z of zs) {
    rows.push(row(`vcpu_${z.node}`, `ztunnel ${z.node} CPU use during the latency run`, 'vCPU', 'latency', (r) => (r as LatencyRun).ztunnelVcpu?.[z.node], 3, false));
  }
  for (const z of zs) {
    rows.push(row(`cpu_per_gib_${z.node}`, `ztunnel ${z.node} CPU per GiB of bulk`, 'CPU s', 'bulk', (r) => {
      const b = r as BulkRun;
      return b.ztunnelCpuSeconds && b.bytes ? b.ztunnelCpuSeconds[z.node]! / (b.bytes / 1024 ** 3) : undefined;
    }, 3, false));
  }
  for (const z of zs) {
    rows.push({ key: `rss_idle_${z.node}`, label: `ztunnel ${z.node} RSS idle (mesh just up)`, unit: 'MiB', direct: null, ambit: idle[z.node]?.rssMiB ?? null, ratio: null, added: null, digits: 1, showRatio: false, ambitOnly: true });
  }
  for (const z of zs) {
    const r = row(`rss_${z.node}`, `ztunnel ${z.node} RSS after the ambit latency run`, 'MiB', 'latency', (r) => (r as LatencyRun).ztunnelMemory?.[z.node]?.rssMiB, 1, false);
    rows.push({ ...r, direct: null, ratio: null, added: null, ambitOnly: true });
  }
  return rows;
}

function fmt(v: number | null, digits: number): string {
  if (v === null) return 'n/a';
  return v.toFixed(digits);
}

function markdownTable(rows: Row[]): string {
  const lines = ['| measure | unit | direct | ambit L4 | ambit / direct | ambit − direct |', '|---|---|---:|---:|---:|---:|'];
  for (const r of rows) {
    const ratio = r.showRatio && r.ratio !== null ? `${r.ratio.toFixed(2)}×` : '';
    const added = r.ambitOnly ? '' : r.added === null ? 'n/a' : `${r.added >= 0 ? '+' : '−'}${Math.abs(r.added).toFixed(r.digits)}`;
    lines.push(`| ${r.label} | ${r.unit} | ${r.ambitOnly ? '—' : fmt(r.direct, r.digits)} | ${fmt(r.ambit, r.digits)} | ${ratio} | ${added} |`);
  }
  return lines.join('\n');
}

function runsTable(runs: Run[], zs: Ztunnel[]): string {
  const lines = [
    `| rep | path | bulk Gbit/s | p50 ms | p90 ms | p99 ms | max ms | lost | ${zs.map((z) => `${z.node} CPU s/1000 req`).join(' | ')} | other load vCPU (bulk, latency) |`,
    `|---:|---|---:|---:|---:|---:|---:|---:|${zs.map(() => '---:').join('|')}|---:|`,
  ];
  const reps = [...new Set(runs.map((r) => r.rep))].sort((a, b) => a - b);
  for (const rep of reps) {
    for (const path of ['direct', 'ambit'] as PathName[]) {
      const b = runs.find((r) => r.kind === 'bulk' && r.rep === rep && r.path === path) as BulkRun | undefined;
      const l = runs.find((r) => r.kind === 'latency' && r.rep === rep && r.path === path) as LatencyRun | undefined;
      const lm = l?.ok ? l.latencyMs : undefined;
      const cell = (v: number | null | undefined, d: number): string => (v === null || v === undefined ? (l && !l.ok ? 'failed' : 'n/a') : v.toFixed(d));
      lines.push(
        `| ${rep} | ${PATH_LABEL[path]} | ${b ? (b.ok ? b.gbps!.toFixed(2) : 'failed') : 'n/a'} | ${cell(lm?.p50, 3)} | ${cell(lm?.p90, 3)} | ${cell(lm?.p99, 3)} | ${cell(lm?.max, 3)} | ${l?.ok ? l.lost : 'n/a'} | ${zs
          .map((z) => cell(l?.ztunnelCpuPer1000?.[z.node], 4))
          .join(' | ')} | ${b?.otherVcpu?.toFixed(2) ?? 'n/a'}, ${l?.otherVcpu?.toFixed(2) ?? 'n/a'} |`,
      );
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- machine

function machine(): Record<string, unknown> {
  let model = 'unknown';
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
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
  };
}

async function gitCommit(): Promise<string | null> {
  try {
    const r = await runCmd('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 5000 });
    return r.code === 0 ? r.stdout.trim() : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- main

const started = Date.now();
const elapsed = (): number => (Date.now() - started) / 1000;
const say = (line: string): void => console.log(`[${elapsed().toFixed(1).padStart(5)} s] ${line}`);

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`bench: ${err.message}\n${usage()}`);
      process.exit(2);
    }
    throw err;
  }
  meshName = o.name;
  const w = workloadFor(o);
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the bench builds network namespaces: run it as root on Linux (e.g. sudo npm run bench)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
  for (const t of ['server.mjs', 'bulk.mjs', 'loadgen.mjs', 'probe.mjs']) if (!existsSync(join(TOOLS, t))) throw new Error(`bench tool ${join(TOOLS, t)} is missing`);
  const tck = await runCmd('getconf', ['CLK_TCK'], { timeoutMs: 5000 }).catch(() => null);
  if (tck && tck.code === 0 && Number(tck.stdout.trim()) > 0) clockTicks = Number(tck.stdout.trim());

  const mach = machine();
  say(`ambit bench${o.quick ? ' (quick)' : ''}: ${o.repeat} repetition(s); ${mach.nproc} CPU(s) ${mach.cpuModel}, kernel ${mach.kernel}, node ${mach.node}, load ${(mach.loadavgAtStart as number[]).join(' ')}`);

  const load0 = os.loadavg()[0]!;
  if (load0 > 0.5 * os.availableParallelism()) say(`note: the machine is already busy (load average ${load0.toFixed(2)} on ${os.availableParallelism()} CPUs): expect noisy numbers`);

  if (await leftovers(o.name)) {
    say(`a mesh named "${o.name}" is left over from an earlier run: removing it`);
    meshMayExist = true;
    await teardown();
    teardownPromise = null;
    if (meshMayExist) throw new Error(`could not remove the leftover mesh "${o.name}"`);
  }

  say(`bringing up mesh "${o.name}" from ${MESH_DIR}`);
  meshMayExist = true;
  const tUp = Date.now();
  let env: NodeJS.ProcessEnv | undefined;
  if (o.profile) {
    await mkdir(o.profile, { recursive: true });
    // local up passes its environment to the control plane and the ztunnels (pods get their own);
    // the preload profiles ztunnel processes only
    const preload = pathToFileURL(join(TOOLS, 'cpu-profile-preload.mjs')).href;
    env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${preload}`.trim(), AMBIT_BENCH_PROFILE_DIR: o.profile };
    say(`profiling: each ztunnel writes a V8 CPU profile to ${o.profile}/ztunnel-<node>-<pid>.cpuprofile when it exits`);
  }
  const up = await cli(['local', 'up', '-f', MESH_DIR, '--name', o.name, '--nodes', '2'], { timeoutMs: 180_000, echo: '  | ', ...(env ? { env } : {}) });
  if (aborting) return;
  if (up.code !== 0 || up.timedOut) throw new Error(`\`ambit local up\` ${up.timedOut ? 'did not finish within 180 s' : `failed (exit ${up.code})`}; see its output above`);
  const upSeconds = (Date.now() - tUp) / 1000;

  const st = await cli(['local', 'status', '--name', o.name, '-o', 'json'], { timeoutMs: 30_000 });
  if (st.code !== 0) throw new Error(`\`ambit local status -o json\` failed: ${st.stderr.trim()}`);
  const status = JSON.parse(st.stdout) as { nodes: NodeView[]; pods: PodView[] };
  const pod = (ns: string, name: string): PodView => {
    const p = status.pods.find((x) => x.namespace === ns && x.name === name);
    if (!p) throw new Error(`pod ${ns}/${name} is missing from \`local status\` (is bench/mesh/bench.yaml intact?)`);
    if (!p.running) throw new Error(`pod ${ns}/${name} is not running; its log is in ${STATE_ROOT}/${o.name}/logs/`);
    return p;
  };
  const paths: Record<PathName, BenchPath> = {
    direct: { name: 'direct', client: pod('plain', 'client'), server: pod('plain', 'server') },
    ambit: { name: 'ambit', client: pod('bench', 'client'), server: pod('bench', 'server') },
  };
  if (paths.direct.client.captured || paths.direct.server.captured) throw new Error('namespace "plain" pods are captured by ztunnel: the direct path would not be direct');
  if (!paths.ambit.client.captured || !paths.ambit.server.captured) throw new Error('namespace "bench" pods are not captured by ztunnel');
  for (const p of Object.values(paths)) {
    if (p.client.node !== 'node-1' || p.server.node !== 'node-2') throw new Error(`${p.name}: client must be on node-1 and server on node-2 (got ${p.client.node}, ${p.server.node})`);
  }

  const state = JSON.parse(await readFile(join(STATE_ROOT, o.name, 'state.json'), 'utf8')) as StateFile;
  // ksoftirqd threads carry the bench's own packets when softirq work is deferred: count them as ours
  meshPids = [...state.processes.map((p) => p.pid), ...kernelThreads(/^ksoftirqd\//)];
  const zs: Ztunnel[] = state.processes
    .filter((p) => p.role === 'ztunnel')
    .map((p) => {
      const n = status.nodes.find((x) => x.name === p.name);
      if (!n) throw new Error(`ztunnel ${p.name} has no node in \`local status\``);
      return { node: p.name, pid: ztunnelPid(p.pid), netns: n.netns, ip: n.ip, log: p.log };
    })
    .sort((a, b) => a.node.localeCompare(b.node));
  if (zs.length !== 2) throw new Error(`expected 2 ztunnels in ${STATE_ROOT}/${o.name}/state.json, found ${zs.length}`);
  if (o.profile) profiled = { dir: o.profile, pids: Object.fromEntries(zs.map((z) => [z.node, z.pid])) };
  const idleMemory = Object.fromEntries(zs.map((z) => [z.node, memory(z.pid)]));
  say(`mesh up in ${upSeconds.toFixed(1)} s; ztunnels: ${zs.map((z) => `${z.node} pid ${z.pid} (RSS ${idleMemory[z.node]!.rssMiB.toFixed(1)} MiB)`).join(', ')}`);
  say(`direct:   ${paths.direct.client.ip} (${paths.direct.client.netns}) → ${paths.direct.server.ip} (${paths.direct.server.netns})`);
  say(`ambit L4: ${paths.ambit.client.ip} (${paths.ambit.client.netns}) → ${paths.ambit.server.ip} (${paths.ambit.server.netns})`);

  // Readiness, and proof of which path is which: ztunnel's connection counters move for ambit only.
  const verification: Record<string, Record<string, number>> = {};
  for (const p of [paths.direct, paths.ambit]) {
    const before = await Promise.all(zs.map(openedTotal));
    const r = await tool(p.client.netns, 'probe.mjs', ['--host', p.server.ip, '--rr-port', String(RR_PORT), '--sink-port', String(SINK_PORT), '--timeout', '20'], 30);
    const after = await Promise.all(zs.map(openedTotal));
    const moved = Object.fromEntries(zs.map((z, i) => [z.node, after[i]! - before[i]!]));
    verification[p.name] = moved;
    say(`${PATH_LABEL[p.name]} ready (first answer after ${(r.firstMs as number).toFixed(1)} ms, ${r.tries} tries); ztunnel connections opened: ${zs.map((z) => `${z.node} +${moved[z.node]}`).join(', ')}`);
    const anyMoved = Object.values(moved).some((v) => v > 0);
    if (p.name === 'direct' && anyMoved) throw new Error('the direct path went through a ztunnel (its connection counter moved): the comparison would be wrong');
    if (p.name === 'ambit' && !Object.values(moved).every((v) => v > 0)) throw new Error('the ambit path did not go through both ztunnels (their connection counters did not move)');
  }

  // Measurements: per repetition bulk then latency; the order of the two paths alternates (ABBA).
  const runs: Run[] = [];
  const failures = new Map<string, number>();
  let skipped = 0;
  let repStart = Date.now();
  let repSeconds = 0;
  for (let rep = 1; rep <= o.repeat; rep++) {
    if (aborting) return;
    if (w.budgetS !== null && rep > 1 && elapsed() + repSeconds + 8 > w.budgetS) {
      skipped = o.repeat - rep + 1;
      say(`quick mode: skipping ${skipped} repetition(s) to stay within ${w.budgetS} s`);
      break;
    }
    repStart = Date.now();
    const order: PathName[] = rep % 2 === 1 ? ['direct', 'ambit'] : ['ambit', 'direct'];
    for (const kind of ['bulk', 'latency'] as const) {
      for (const name of order) {
        const key = `${kind}/${name}`;
        if ((failures.get(key) ?? 0) >= 2) {
          say(`rep ${rep}: ${kind} ${PATH_LABEL[name]}: skipped after two failures`);
          continue;
        }
        const r = kind === 'bulk' ? await bulkRun(paths[name], rep, w, zs) : await latencyRun(paths[name], rep, w, zs);
        if (aborting) return;
        runs.push(r);
        if (!r.ok) {
          failures.set(key, (failures.get(key) ?? 0) + 1);
          say(`rep ${rep}: ${kind} ${PATH_LABEL[name]}: FAILED: ${r.error}`);
          continue;
        }
        if (r.kind === 'bulk') say(`rep ${rep}: bulk    ${PATH_LABEL[name].padEnd(8)} ${r.gbps!.toFixed(2)} Gbit/s (${r.seconds!.toFixed(2)} s; ztunnel CPU ${zs.map((z) => `${z.node} ${r.ztunnelCpuSeconds![z.node]!.toFixed(2)} s`).join(', ')}; other load ${r.otherVcpu!.toFixed(2)} vCPU)`);
        else {
          const l = r.latencyMs!;
          say(
            `rep ${rep}: latency ${PATH_LABEL[name].padEnd(8)} p50 ${l.p50!.toFixed(3)} p90 ${l.p90!.toFixed(3)} p99 ${l.p99!.toFixed(3)} max ${l.max!.toFixed(3)} ms, lost ${r.lost}; ztunnel CPU/1000 req ${zs.map((z) => `${z.node} ${r.ztunnelCpuPer1000![z.node]!.toFixed(4)} s`).join(', ')}; other load ${r.otherVcpu!.toFixed(2)} vCPU`,
          );
        }
      }
    }
    repSeconds = (Date.now() - repStart) / 1000;
  }

  const rows = summarize(runs, zs, w, idleMemory);
  const finalMemory = Object.fromEntries(zs.map((z) => [z.node, memory(z.pid)]));
  const bulkLabel = w.bulkBytes >= 1024 ** 3 ? `${w.bulkBytes / 1024 ** 3} GiB` : `${w.bulkBytes / 1024 ** 2} MiB`;
  const doneReps = new Set(runs.map((r) => r.rep)).size;
  const others = runs.map((r) => r.otherVcpu).filter((x): x is number => x !== undefined);
  const header = [
    `${o.profile ? 'PROFILED (V8 profiler running in the ztunnels: slower than normal, do not publish) ' : ''}ambit bench${o.quick ? ' (quick)' : ''}, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: median of ${doneReps} repetition(s), direct and ambit L4 alternating on the same path`,
    `(pod netns → veth → node-1 → fabric → node-2 → veth → pod netns). Bulk: ${bulkLabel} over one TCP connection. Latency: open loop,`,
    `${w.rate} rps of ${w.size} B requests and ${w.size} B responses over ${w.conns} connections for ${w.durationS} s (after ${w.warmupS} s warm-up), measured from the scheduled send time.`,
    `Ratios and differences are medians of the per-repetition pairs. Machine: ${mach.nproc} CPU(s) ${mach.cpuModel}, kernel ${mach.kernel}, node ${mach.node};`,
    `load average ${load0.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end; CPU used by other processes during the runs: median ${fmt(median(others), 2)}, max ${others.length ? Math.max(...others).toFixed(2) : 'n/a'} vCPU.`,
  ].join('\n');
  const table = markdownTable(rows);
  const perRun = runsTable(runs, zs);
  console.log(`\n${header}\n\n${table}\n\nIdle ztunnel RSS before the runs: ${zs.map((z) => `${z.node} ${idleMemory[z.node]!.rssMiB.toFixed(1)} MiB`).join(', ')}; peak (VmHWM) at the end: ${zs.map((z) => `${z.node} ${finalMemory[z.node]!.hwmMiB.toFixed(1)} MiB`).join(', ')}.\n\nPer run:\n\n${perRun}\n`);

  const failed = runs.filter((r) => !r.ok);
  const result = {
    bench: 'ambit L4 vs direct',
    date: new Date().toISOString(),
    commit: await gitCommit(),
    machine: { ...mach, loadavgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
    options: { quick: o.quick, repeat: o.repeat, repetitionsDone: doneReps, skippedForTimeBudget: skipped, mesh: o.name, profiling: o.profile },
    workload: w,
    setup: {
      upSeconds,
      paths: Object.fromEntries(Object.values(paths).map((p) => [p.name, { client: p.client, server: p.server }])),
      ztunnels: zs.map((z) => ({ node: z.node, pid: z.pid, log: z.log })),
      clockTicks,
      ztunnelConnectionsOpenedByProbe: verification,
      idleMemory,
      finalMemory,
    },
    summary: Object.fromEntries(rows.map((r) => [r.key, { label: r.label, unit: r.unit, direct: r.direct, ambit: r.ambit, ratio: r.ratio, added: r.added }])),
    runs,
    failures: failed.map((r) => ({ kind: r.kind, rep: r.rep, path: r.path, error: r.error })),
    markdown: `${header}\n\n${table}\n`,
    perRunMarkdown: perRun,
    totalSeconds: elapsed(),
  };
  await mkdir(dirname(o.out), { recursive: true });
  await writeFile(o.out, JSON.stringify(result, null, 2) + '\n');
  const md = o.out.replace(/\.json$/, '') + '.md';
  await writeFile(md, `${header}\n\n${table}\n\nPer run:\n\n${perRun}\n`);
  say(`results: ${o.out} and ${md}`);
  if (failed.length > 0) {
    say(`${failed.length} measurement(s) failed; see "failures" in the JSON. ztunnel logs: ${zs.map((z) => z.log).join(', ')} (removed with the mesh)`);
    process.exitCode = 1;
  }
}

let profiled: { dir: string; pids: Record<string, number> } | null = null;

/** After teardown: which profile belongs to which ztunnel. */
function listProfiles(): void {
  if (!profiled) return;
  const files = existsSync(profiled.dir) ? readdirSync(profiled.dir).filter((f) => f.endsWith('.cpuprofile')) : [];
  for (const [node, pid] of Object.entries(profiled.pids)) {
    const f = files.filter((x) => x.endsWith(`-${pid}.cpuprofile`));
    say(f.length ? `CPU profile of ztunnel ${node}: ${f.map((x) => join(profiled!.dir, x)).join(', ')}  (top functions: node bench/tools/cpuprofile-top.mjs FILE)` : `no CPU profile from ztunnel ${node} (pid ${pid}) in ${profiled.dir}: it did not exit cleanly`);
  }
}

let interrupts = 0;
function onSignal(sig: NodeJS.Signals): void {
  interrupts++;
  if (interrupts > 1) {
    console.error(`\nbench: interrupted again; if anything is left, run \`node dist/cli/main.js local down --name ${meshName}\``);
    process.exit(130);
  }
  aborting = true;
  console.error(`\nbench: ${sig}: stopping the load generators and removing the mesh`);
  for (const c of children) if (!c.spawnargs.includes('down')) c.kill('SIGKILL');
  void teardown().then(() => process.exit(130));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

main()
  .catch((err: Error) => {
    console.error(`\nbench: ${err.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await teardown();
    listProfiles();
    say('done');
  });
