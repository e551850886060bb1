#!/usr/bin/env node
/**
 * Side-by-side L7 bench: ambit's waypoint against HAProxy in `mode http` as the L7 proxy on the
 * same path, with no mesh ("direct") and the two L4 paths beside them, in one run.
 *
 * Builds one local mesh from bench/l7/mesh (two nodes; namespace `bench` ambient with a Service
 * and one HTTPRoute, namespace `plain` not; clients on node-1, HTTP servers on node-2), deploys a
 * waypoint with `ambit waypoint apply -n bench --enroll-namespace --wait`, starts three HAProxies
 * in the places of ztunnel node-1, the waypoint and ztunnel node-2 (bench/l7/haproxy.ts), checks
 * which path is which, then, rotating the order of the paths per repetition, measures inside the
 * client pods' network namespaces:
 *   1. requests/s, closed loop (h2load, keep-alive HTTP/1.1, 1 KiB POST bodies and responses),
 *   2. latency at fixed rates, open loop, from the scheduled send time (bench/tools/loadgen.mjs --http),
 *   3. CPU seconds (utime+stime from /proc) of every process on the path per 1000 requests.
 * Prints Markdown tables (medians; differences and ratios paired per repetition), writes JSON and
 * Markdown, and (full runs) pastes the tables into bench/l7/README.md. The HAProxies and the mesh
 * are always removed at the end, also after a failure or Ctrl-C.
 *
 *   npm run bench:l7 -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME] [--rates 1000,2000]
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { frontendSessions, haproxyVersion, removeLeftoverPeer, SERVER_NAME, sslInfo, stopPeer } from '../lib/haproxy.js';
import { children, clock, cpuSplit, flags, kernelThreads, machineCpu, memory, otherLoad, resolvePid, runCmd, sleep } from '../lib/proc.js';
import { fmt, median, outPathProblem } from '../lib/report.js';
import { CLI, cli, gitCommit, machine, meshDown, metricSum, ROOT, STATE_ROOT, TOOLS, tool } from '../lib/runner.js';
import { L7_PORTS, ROUTE_PREFIX, startTrio, type Trio } from './haproxy.js';
import {
  addedTable,
  goals,
  goalsTable,
  L7_PATHS,
  L7Results,
  LABEL,
  lat,
  mainTable,
  memoryTable,
  PATH_PROCS,
  proxyTable,
  rps,
  runsTable,
  splitTable,
  type Kind,
  type L7Path,
  type Run,
  type Workload,
} from './report.js';

const HERE = join(ROOT, 'bench', 'l7');
const MESH_DIR = join(HERE, 'mesh');
const DEFAULT_OUT = join(HERE, 'results.json');
/** quick runs (smoke tests) write here by default, so they do not replace the full run's results the README shows */
const DEFAULT_QUICK_OUT = join(HERE, 'quick.json');
const README = join(HERE, 'README.md');
const README_START = '<!-- bench:l7:results:start -->';
const README_END = '<!-- bench:l7:results:end -->';
const APP_PORT = 8080;
const SERVICE_PORT = 80;
const REQUEST_PATH = `${ROUTE_PREFIX}/rr`;

// ---------------------------------------------------------------- options

interface Options {
  quick: boolean;
  repeat: number;
  out: string;
  name: string;
  haproxyThreads: number;
  paths: L7Path[];
  rates: number[] | null;
  accessLog: boolean;
  /** folder for a V8 CPU profile of the waypoint; null = no profiling */
  profile: string | null;
  readme: boolean | null;
}

const PATH_FLAG: Record<string, L7Path> = { direct: 'direct', 'ambit-l4': 'ambitL4', 'ambit-l7': 'ambitL7', 'haproxy-l4': 'haproxyL4', 'haproxy-l7': 'haproxyL7' };

function usage(): string {
  return `usage: npm run bench:l7 -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME] [--rates R1,R2] [--paths LIST]
  --quick              smoke test within about two minutes: 1 repetition, short runs
  --repeat N           repetitions of each measurement, median reported (default 3; --quick 1)
  --out FILE           JSON results (default bench/l7/results.json, --quick: bench/l7/quick.json); the tables
                       go to FILE with .md
  --name NAME          name of the local mesh (must start with "bench"; default benchl7)
  --rates R1,R2        open-loop request rates (default 1000,2000)
  --paths LIST         which paths, of ${Object.keys(PATH_FLAG).join(',')} (default all; direct, ambit-l7 and
                       haproxy-l7 are always measured)
  --haproxy-threads N  nbthread of each HAProxy (default 1: one event loop, like the waypoint)
  --no-access-log      no access-log line per request: the waypoint's log level set to warn, the middle
                       HAProxy without \`option httplog\` (default: both log every request)
  --readme / --no-readme
                       paste the tables into bench/l7/README.md (default: only for a full run to the default --out)
  --profile DIR        sample the waypoint with the V8 profiler during the runs (through its inspector) and write
                       DIR/waypoint-<pid>.cpuprofile (the profiler costs CPU: do not publish those numbers)
Runs as root (it builds network namespaces); needs haproxy, h2load (nghttp2-client) and curl.
Exit status: 0 when every measurement ran, 1 when any failed (the reason is printed), 2 for bad flags.`;
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options {
  let outGiven = false;
  const o: Options = { quick: false, repeat: 0, out: DEFAULT_OUT, name: 'benchl7', haproxyThreads: 1, paths: [...L7_PATHS], rates: null, accessLog: true, profile: null, readme: null };
  const int = (a: string, v: string, lo: number, hi: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new UsageError(`${a} must be a whole number from ${lo} to ${hi}, got "${v}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--repeat') o.repeat = int(a, value(), 1, 50);
    else if (a === '--out') {
      o.out = resolve(value());
      outGiven = true;
    } else if (a === '--name') {
      o.name = value();
      if (!/^bench[a-z0-9-]{0,20}$/.test(o.name)) throw new UsageError(`--name must start with "bench" (lowercase letters, digits, '-'), got "${o.name}"`);
    } else if (a === '--rates') {
      o.rates = value()
        .split(',')
        .map((x) => int(a, x.trim(), 10, 100_000));
      if (o.rates.length === 0) throw new UsageError('--rates needs at least one rate');
    } else if (a === '--paths') {
      const want = value().split(',').map((x) => x.trim());
      for (const p of want) if (!PATH_FLAG[p]) throw new UsageError(`--paths: unknown path "${p}" (known: ${Object.keys(PATH_FLAG).join(', ')})`);
      const set = new Set<L7Path>(['direct', 'ambitL7', 'haproxyL7', ...want.map((p) => PATH_FLAG[p]!)]);
      o.paths = L7_PATHS.filter((p) => set.has(p));
    } else if (a === '--haproxy-threads') o.haproxyThreads = int(a, value(), 1, 64);
    else if (a === '--no-access-log') o.accessLog = false;
    else if (a === '--profile') o.profile = resolve(value());
    else if (a === '--readme') o.readme = true;
    else if (a === '--no-readme') o.readme = false;
    else if (a === '--help' || a === '-h') {
      console.log(usage());
      process.exit(0);
    } else throw new UsageError(`unknown argument "${a}"`);
  }
  if (o.repeat === 0) o.repeat = o.quick ? 1 : 3;
  if (!outGiven && o.quick) o.out = DEFAULT_QUICK_OUT;
  const outProblem = outPathProblem(o.out);
  if (outProblem) throw new UsageError(outProblem);
  return o;
}

function workloadFor(o: Options): Workload {
  const rates = o.rates ?? [1000, 2000];
  return o.quick
    ? { size: 1024, openConns: 8, closed: { conns: 8, durationS: 2, warmupS: 0.5 }, rates: rates.map((rate, i) => ({ rate, durationS: i === 0 ? 2 : 1, warmupS: 0.3 })) }
    : { size: 1024, openConns: 8, closed: { conns: 8, durationS: 5, warmupS: 1 }, rates: rates.map((rate, i) => ({ rate, durationS: i === 0 ? 8 : 5, warmupS: 1 })) };
}

// ---------------------------------------------------------------- mesh and peer

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
}
interface ServiceView {
  name: string;
  vip: string;
}
interface StateFile {
  processes: { role: string; name: string; pid: number; log: string }[];
}

let meshName = 'benchl7';
let meshMayExist = false;
let trio: Trio | null = null;
let trioDir = '';
let profiler: { child: import('node:child_process').ChildProcess | null; done: Promise<unknown> } | null = null;
let teardownPromise: Promise<void> | null = null;

function teardown(): Promise<void> {
  teardownPromise ??= (async () => {
    if (profiler?.child && profiler.child.exitCode === null) profiler.child.kill('SIGTERM');
    if (trio || trioDir) {
      try {
        if (trio) {
          await stopPeer(trio);
          say('HAProxy stopped');
        } else await removeLeftoverPeer(trioDir);
        trio = null;
      } catch (err) {
        console.error(`bench:l7: stopping HAProxy failed (${(err as Error).message}); its pids are in ${trioDir}/pids`);
        process.exitCode = 1;
      }
    }
    if (!meshMayExist) return;
    console.log(`\ntearing down mesh "${meshName}"…`);
    try {
      await meshDown(meshName);
      meshMayExist = false;
      say(`mesh "${meshName}" removed`);
    } catch (err) {
      console.error(`bench:l7: removing the mesh failed (${(err as Error).message}); run \`node dist/cli/main.js local down --name ${meshName}\` as root`);
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

// ---------------------------------------------------------------- /proc readings

interface Tracked {
  label: string;
  pid: number;
}
let tracked: Tracked[] = [];
/** pids that count as the bench's own load (mesh processes, HAProxies, ksoftirqd) */
let ourPids: number[] = [];

function cpuAll(): { total: Record<string, number>; sys: Record<string, number> } {
  const total: Record<string, number> = {};
  const sys: Record<string, number> = {};
  for (const t of tracked) {
    try {
      const c = cpuSplit(t.pid);
      total[t.label] = c.user + c.sys;
      sys[t.label] = c.sys;
    } catch {
      /* exited: reported as missing */
    }
  }
  return { total, sys };
}

function rssAll(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of tracked) {
    try {
      out[t.label] = memory(t.pid).rssMiB;
    } catch {
      /* exited */
    }
  }
  return out;
}

function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! - (b[k] ?? 0)]));
}

// ---------------------------------------------------------------- measurements

interface BenchPath {
  name: L7Path;
  /** netns the load tools run in (the client pod's) */
  netns: string;
  host: string;
  port: number;
}

/**
 * Runs one measurement with CPU accounting around it. A tool that prints {"phase":"measuring"}
 * (h2load.mjs, after its warm-up) moves the start of the window there.
 */
async function measure(kind: Kind, p: BenchPath, rep: number, rate: number | undefined, run: (onLine: (line: string) => void) => Promise<{ result: Record<string, unknown>; warning?: string }>): Promise<Run> {
  const settleSeconds = await settle();
  let before = cpuAll();
  let m0 = machineCpu(ourPids);
  let t0 = process.hrtime.bigint();
  const base: Run = { kind, rep, path: p.name, ok: false, settleSeconds, ...(rate !== undefined ? { rate } : {}) };
  const onLine = (line: string): void => {
    if (!line.includes('"phase":"measuring"')) return;
    before = cpuAll();
    m0 = machineCpu(ourPids);
    t0 = process.hrtime.bigint();
  };
  try {
    const r = await run(onLine);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const m1 = machineCpu(ourPids);
    const after = cpuAll();
    const cpu = diff(after.total, before.total);
    const cpuSys = diff(after.sys, before.sys);
    const client = typeof r.result.measuredCpuSeconds === 'number' ? r.result.measuredCpuSeconds : r.result.toolCpuSeconds;
    if (typeof client === 'number') cpu.client = client;
    return { ...base, ok: true, ...(r.warning ? { warning: r.warning } : {}), wallSeconds: wall, cpu, cpuSys, softirqSeconds: m1.softirq - m0.softirq, otherVcpu: otherLoad(m0, m1, wall), tool: r.result };
  } catch (err) {
    return { ...base, error: (err as Error).message };
  }
}

/**
 * Waits until the bench's processes are quiet: a proxy that fell behind keeps working through
 * requests it had already read after its load generator left, and that work must not be
 * charged to the next run (nor slow it down). At most 30 s; returns the seconds waited.
 */
async function settle(): Promise<number> {
  const t0 = Date.now();
  const total = (): number => Object.values(cpuAll().total).reduce((a, b) => a + b, 0);
  let last = total();
  while (Date.now() - t0 < 30_000) {
    await sleep(250);
    const now = total();
    // below 12 % of one CPU, all tracked processes together
    if (now - last < 0.03) break;
    last = now;
  }
  return (Date.now() - t0) / 1000;
}

/** Non-200 answers and unanswered requests, when nothing broke: a result of a path that did not keep up (or refused), not a broken harness. */
function overloadNote(x: Record<string, unknown>, what: string): string | null {
  if (x.errors !== 0 || x.sent !== x.scheduled || typeof x.answered !== 'number' || x.answered === 0) return null;
  const parts: string[] = [];
  if (typeof x.lost === 'number' && x.lost > 0) parts.push(`${x.lost} of ${String(x.sent)} requests unanswered`);
  if (typeof x.badStatus === 'number' && x.badStatus > 0) parts.push(`${x.badStatus} answered other than 200 (${JSON.stringify(x.statuses)})`);
  return parts.length ? `${parts.join(', ')} at ${what} (percentiles are over the answered ones)` : null;
}

function closed(p: BenchPath, rep: number, w: Workload): Promise<Run> {
  const c = w.closed;
  return measure('closed', p, rep, undefined, (onLine) =>
    tool(p.netns, 'h2load.mjs', ['--host', p.host, '--port', String(p.port), '--path', REQUEST_PATH, '--conns', String(c.conns), '--duration', String(c.durationS), '--warmup', String(c.warmupS), '--size', String(w.size), '--timeout', String(c.durationS + 30)], c.durationS + c.warmupS + 70, {
      onLine: (line) => onLine(line),
      // answers other than 2xx without connection errors: a result (the proxy refused under load)
      accept: (x) => {
        const q = x.requests as Record<string, number> | undefined;
        return q && q.errored === 0 && q.timeout === 0 && q.done > 0 ? `${q.done - (x.statuses as Record<string, number>)['2xx']!} of ${q.done} answered other than 2xx (${JSON.stringify(x.statuses)})` : null;
      },
    }),
  );
}

function latency(p: BenchPath, rep: number, w: Workload, r: Workload['rates'][number]): Promise<Run> {
  return measure('latency', p, rep, r.rate, () =>
    tool(
      p.netns,
      'loadgen.mjs',
      ['--host', p.host, '--port', String(p.port), '--http', REQUEST_PATH, '--rate', String(r.rate), '--conns', String(w.openConns), '--size', String(w.size), '--duration', String(r.durationS), '--warmup', String(r.warmupS)],
      r.durationS + r.warmupS + 40,
      {
        // unanswered requests without errors: the path did not keep up with the rate; a result, not a broken harness
        accept: (x) => overloadNote(x, `${r.rate} rps`),
      },
    ),
  );
}

function describe(r: Run): string {
  const label = LABEL[r.path].padEnd(19);
  const t = r.tool ?? {};
  const cpu = Object.entries(r.cpu ?? {})
    .filter(([k, v]) => v > 0.005 || k === 'client')
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(', ');
  const other = `other load ${fmt(r.otherVcpu, 2)} vCPU${(r.settleSeconds ?? 0) > 1 ? `; waited ${fmt(r.settleSeconds, 1)} s for the processes to go quiet first` : ''}`;
  if (r.kind === 'closed') return `closed  ${label} ${fmt(rps(r), 0)} req/s (${String((t.requests as Record<string, number> | undefined)?.done)} requests; CPU s: ${cpu}; ${other})`;
  const l = (k: 'p50' | 'p90' | 'p99' | 'max'): string => fmt(lat(k)(r), 3);
  return `latency ${label} @ ${r.rate} rps: p50 ${l('p50')} p90 ${l('p90')} p99 ${l('p99')} max ${l('max')} ms, lost ${String(t.lost)} (CPU s: ${cpu}; ${other})`;
}

// ---------------------------------------------------------------- checks

/** Prometheus texts read by one process in `netns` (the nodes' and pods' addresses are reachable from node-1's). */
async function scrape(netns: string, urls: string[]): Promise<string[]> {
  const script = `Promise.all(${JSON.stringify(urls)}.map(u=>fetch(u).then(r=>r.text()))).then(t=>process.stdout.write(JSON.stringify(t)),e=>{console.error(e.message);process.exit(1)})`;
  const r = await runCmd('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`cannot read metrics (${urls.join(', ')}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as string[];
}

/** One POST through a path, retried until it is answered 200 (at most `timeoutS`). */
async function probe(p: BenchPath, timeoutS: number): Promise<number> {
  const t0 = Date.now();
  let last = '';
  while (Date.now() - t0 < timeoutS * 1000) {
    const r = await runCmd('ip', ['netns', 'exec', p.netns, 'curl', '-sS', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', 'content-type: application/octet-stream', '--data-binary', 'probe', `http://${p.host}:${p.port}${REQUEST_PATH}`], { timeoutMs: 10_000 });
    if (flags.aborting) throw new Error('interrupted');
    if (r.stdout.trim() === '200') return (Date.now() - t0) / 1000;
    last = `${r.stdout.trim() || 'no answer'} ${r.stderr.trim()}`.trim();
    await sleep(250);
  }
  throw new Error(`${LABEL[p.name]}: no 200 answer from http://${p.host}:${p.port}${REQUEST_PATH} within ${timeoutS} s (last: ${last})`);
}

// ---------------------------------------------------------------- main

const started = Date.now();
const elapsed = (): number => (Date.now() - started) / 1000;
const say = (line: string): void => console.log(`[${elapsed().toFixed(1).padStart(5)} s] ${line}`);
let quickRun = false;

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`bench:l7: ${err.message}\n${usage()}`);
      process.exit(2);
    }
    throw err;
  }
  meshName = o.name;
  quickRun = o.quick;
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the bench builds network namespaces: run it as root on Linux (e.g. sudo npm run bench:l7)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
  for (const t of ['http-server.mjs', 'loadgen.mjs', 'h2load.mjs', 'mtls-check.mjs', 'inspector-profile.mjs']) if (!existsSync(join(TOOLS, t))) throw new Error(`bench tool ${join(TOOLS, t)} is missing`);
  const hv = await haproxyVersion();
  if (!hv) throw new Error('haproxy is not installed (the peer of the comparison): apt-get install -y haproxy');
  for (const [bin, pkg] of [['h2load', 'nghttp2-client'], ['curl', 'curl'], ['ip', 'iproute2']] as const) {
    const r = await runCmd('sh', ['-c', `command -v ${bin}`], { timeoutMs: 5000 });
    if (r.code !== 0) throw new Error(`${bin} is missing (apt-get install -y ${pkg})`);
  }
  const tck = await runCmd('getconf', ['CLK_TCK'], { timeoutMs: 5000 }).catch(() => null);
  if (tck && tck.code === 0 && Number(tck.stdout.trim()) > 0) clock.ticks = Number(tck.stdout.trim());
  const w = workloadFor(o);

  const mach = await machine();
  say(`ambit L7 bench${o.quick ? ' (quick)' : ''}: ${o.repeat} repetition(s), paths ${o.paths.map((p) => LABEL[p]).join(' / ')}; HAProxy ${hv}; ${String(mach.nproc)} CPU(s) ${String(mach.cpuModel)}, kernel ${String(mach.kernel)}, node ${String(mach.node)}, load ${(mach.loadavgAtStart as number[]).join(' ')}`);
  const load0 = os.loadavg()[0]!;
  if (load0 > 0.5 * os.availableParallelism()) say(`note: the machine is already busy (load average ${load0.toFixed(2)} on ${os.availableParallelism()} CPUs): expect noisy numbers`);

  trioDir = join(os.tmpdir(), `ambit-${o.name}-haproxy`);
  const killed = await removeLeftoverPeer(trioDir);
  if (killed.length) say(`stopped HAProxy process(es) ${killed.join(', ')} left over from an earlier run`);
  if (await leftovers(o.name)) {
    say(`a mesh named "${o.name}" is left over from an earlier run: removing it`);
    meshMayExist = true;
    await teardown();
    teardownPromise = null;
    if (meshMayExist) throw new Error(`could not remove the leftover mesh "${o.name}"`);
  }

  // ---------------------------------------------------------------- the mesh and its waypoint
  say(`bringing up mesh "${o.name}" from ${MESH_DIR}`);
  meshMayExist = true;
  const tUp = Date.now();
  const up = await cli(['local', 'up', '-f', MESH_DIR, '--name', o.name, '--nodes', '2'], { timeoutMs: 180_000, echo: '  | ' });
  if (flags.aborting) return;
  if (up.code !== 0 || up.timedOut) throw new Error(`\`ambit local up\` ${up.timedOut ? 'did not finish within 180 s' : `failed (exit ${up.code})`}; see its output above`);
  const upSeconds = (Date.now() - tUp) / 1000;
  say(`mesh up in ${upSeconds.toFixed(1)} s; applying the waypoint`);
  const tWp = Date.now();
  const wp = await cli(['waypoint', 'apply', '-n', 'bench', '--enroll-namespace', '--wait', '--mesh', o.name, '--state-dir', STATE_ROOT], { timeoutMs: 180_000, echo: '  | ' });
  if (flags.aborting) return;
  if (wp.code !== 0 || wp.timedOut) throw new Error(`\`ambit waypoint apply\` ${wp.timedOut ? 'did not finish within 180 s' : `failed (exit ${wp.code}): ${wp.stderr.trim()}`}`);
  const waypointSeconds = (Date.now() - tWp) / 1000;

  const st = await cli(['local', 'status', '--name', o.name, '-o', 'json'], { timeoutMs: 30_000 });
  if (st.code !== 0) throw new Error(`\`ambit local status -o json\` failed: ${st.stderr.trim()}`);
  const status = JSON.parse(st.stdout) as { nodes: NodeView[]; pods: PodView[]; services: ServiceView[] };
  const pod = (ns: string, name: string): PodView => {
    const p = status.pods.find((x) => x.namespace === ns && x.name === name);
    if (!p) throw new Error(`pod ${ns}/${name} is missing from \`local status\` (is bench/l7/mesh intact?)`);
    if (!p.running) throw new Error(`pod ${ns}/${name} is not running; its log is in ${STATE_ROOT}/${o.name}/logs/`);
    return p;
  };
  const node = (name: string): NodeView => {
    const n = status.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`node ${name} is missing from \`local status\``);
    return n;
  };
  const node1 = node('node-1');
  const node2 = node('node-2');
  const benchClient = pod('bench', 'client');
  const benchServer = pod('bench', 'server');
  const plainClient = pod('plain', 'client');
  const plainServer = pod('plain', 'server');
  const waypointPod = pod('bench', 'waypoint-0');
  const vip = status.services.find((s) => s.name === 'bench/server')?.vip;
  if (!vip) throw new Error('Service bench/server has no VIP in `local status`');
  if (plainClient.captured || plainServer.captured) throw new Error('namespace "plain" pods are captured by ztunnel: the direct and HAProxy paths would cross the ztunnels');
  if (!benchClient.captured || !benchServer.captured) throw new Error('namespace "bench" pods are not captured by ztunnel');
  if (waypointPod.captured) throw new Error('the waypoint pod is captured by ztunnel');
  for (const [c, s] of [[benchClient, benchServer], [plainClient, plainServer]] as const) {
    if (c.node !== 'node-1' || s.node !== 'node-2') throw new Error(`client must be on node-1 and server on node-2 (got ${c.node}, ${s.node})`);
  }
  // the middle HAProxy runs where the waypoint runs: in a plain pod's netns on the waypoint's node
  const middlePod = pod('plain', waypointPod.node === 'node-1' ? 'proxy-1' : 'proxy-2');
  if (middlePod.node !== waypointPod.node) throw new Error(`plain/${middlePod.name} is on ${middlePod.node}, the waypoint on ${waypointPod.node}`);
  say(`waypoint bench/waypoint ready in ${waypointSeconds.toFixed(1)} s on ${waypointPod.node} (${waypointPod.ip}, netns ${waypointPod.netns}); the middle HAProxy goes into plain/${middlePod.name} (${middlePod.ip}) on the same node`);

  const state = JSON.parse(await readFile(join(STATE_ROOT, o.name, 'state.json'), 'utf8')) as StateFile;
  const zs = state.processes.filter((p) => p.role === 'ztunnel').sort((a, b) => a.name.localeCompare(b.name));
  if (zs.length !== 2) throw new Error(`expected 2 ztunnels in ${STATE_ROOT}/${o.name}/state.json, found ${zs.length}`);
  tracked = zs.map((z) => ({ label: `ztunnel ${z.name}`, pid: resolvePid(z.pid, /ztunnel/, 'ztunnel') }));
  const procOf = (prefix: string, match: RegExp, what: string): number => {
    const s = state.processes.find((p) => p.role === 'pod' && p.name.startsWith(prefix));
    if (!s) throw new Error(`no process of ${what} in the state file`);
    return resolvePid(s.pid, match, what);
  };
  const waypointPid = procOf('bench/waypoint-0/', /waypoint[\\/]main\.js/, 'the waypoint');
  tracked.push({ label: 'waypoint', pid: waypointPid });
  for (const ns of ['plain', 'bench']) tracked.push({ label: `server ${ns}`, pid: procOf(`${ns}/server/`, /http-server\.mjs/, `pod ${ns}/server`) });
  // (the waypoint is one of the mesh's pod processes: `ip netns exec` execs it)
  ourPids = [...new Set([...state.processes.map((p) => p.pid), waypointPid, ...kernelThreads(/^ksoftirqd\//)])];

  if (!o.accessLog) {
    const r = await runCmd('ip', ['netns', 'exec', waypointPod.netns, 'curl', '-sS', '-m', '5', 'http://127.0.0.1:15000/logging?level=warn'], { timeoutMs: 10_000 });
    if (r.code !== 0 || !r.stdout.includes('"warn"')) throw new Error(`could not set the waypoint's log level to warn: ${r.stdout} ${r.stderr}`);
    say('access logs off: waypoint log level warn, middle HAProxy without httplog');
  }

  // ---------------------------------------------------------------- the peer
  trio = await startTrio(
    {
      dir: trioDir,
      threads: o.haproxyThreads,
      maxconn: 2000,
      accessLog: o.accessLog,
      node1: { netns: node1.netns, ip: node1.ip },
      middle: { netns: middlePod.netns, ip: middlePod.ip, node: middlePod.node },
      node2: { netns: node2.netns, ip: node2.ip },
      server: { ip: plainServer.ip, port: APP_PORT },
    },
    say,
  );
  const hp = Object.fromEntries(trio.procs.map((h) => [h.node, h]));
  for (const h of trio.procs) tracked.push({ label: `haproxy ${h.node}`, pid: h.pid });
  ourPids.push(...trio.procs.map((h) => h.pid));
  say(`HAProxy ${hv} (${o.haproxyThreads} thread(s) each): node-1 pid ${hp['node-1']!.pid} → mTLS → middle pid ${hp.middle!.pid} (mode http, in plain/${middlePod.name}) → mTLS → node-2 pid ${hp['node-2']!.pid} → ${plainServer.ip}:${APP_PORT}`);
  const rssStart = rssAll();

  const all: Record<L7Path, BenchPath> = {
    direct: { name: 'direct', netns: plainClient.netns, host: plainServer.ip, port: APP_PORT },
    ambitL4: { name: 'ambitL4', netns: benchClient.netns, host: benchServer.ip, port: APP_PORT },
    ambitL7: { name: 'ambitL7', netns: benchClient.netns, host: vip, port: SERVICE_PORT },
    haproxyL4: { name: 'haproxyL4', netns: plainClient.netns, host: node1.ip, port: L7_PORTS.node1L4 },
    haproxyL7: { name: 'haproxyL7', netns: plainClient.netns, host: node1.ip, port: L7_PORTS.node1L7 },
  };
  for (const p of o.paths) say(`${LABEL[p].padEnd(19)}: from ${all[p].netns} to http://${all[p].host}:${all[p].port}${REQUEST_PATH}`);

  // Readiness, and proof of which path is which: each proxy's counters move on its own paths only.
  const counters = async (): Promise<Record<string, number>> => {
    const [z1, z2, wpm] = await scrape(node1.netns, [`http://${node1.ip}:15020/metrics`, `http://${node2.ip}:15020/metrics`, `http://${waypointPod.ip}:15020/stats/prometheus`]);
    const fe = Object.fromEntries(await Promise.all(trio!.procs.map(async (h) => [h.node, await frontendSessions(h.statsSocket)] as const)));
    return {
      'ztunnel node-1': metricSum(z1!, 'istio_tcp_connections_opened_total'),
      'ztunnel node-2': metricSum(z2!, 'istio_tcp_connections_opened_total'),
      waypoint: metricSum(wpm!, 'istio_requests_total'),
      'haproxy node-1 l4': fe['node-1']!.l4 ?? 0,
      'haproxy node-1 l7': fe['node-1']!.l7 ?? 0,
      'haproxy middle': fe.middle!.l7 ?? 0,
      'haproxy node-2 l4': fe['node-2']!.l4 ?? 0,
      'haproxy node-2 l7': fe['node-2']!.l7 ?? 0,
    };
  };
  const expected: Record<L7Path, string[]> = {
    direct: [],
    ambitL4: ['ztunnel node-1', 'ztunnel node-2'],
    ambitL7: ['ztunnel node-1', 'waypoint', 'ztunnel node-2'],
    haproxyL4: ['haproxy node-1 l4', 'haproxy node-2 l4'],
    haproxyL7: ['haproxy node-1 l7', 'haproxy middle', 'haproxy node-2 l7'],
  };
  const verification: Record<string, Record<string, number>> = {};
  for (const p of o.paths) {
    const before = await counters();
    const firstS = await probe(all[p], 30);
    await sleep(300); // metrics are counted when a connection or request ends
    const after = await counters();
    const moved = Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - before[k]!]));
    verification[p] = moved;
    say(`${LABEL[p]} answers (after ${firstS.toFixed(1)} s); counted by ${Object.entries(moved).filter(([, v]) => v > 0).map(([k, v]) => `${k} +${v}`).join(', ') || 'no proxy'}`);
    const wrong = Object.keys(moved).filter((k) => (moved[k]! > 0) !== expected[p].includes(k));
    if (wrong.length) throw new Error(`${LABEL[p]} did not cross exactly ${expected[p].join(', ') || 'no proxy'}: ${wrong.map((k) => `${k} moved by ${moved[k]}`).join(', ')}; the comparison would be wrong`);
  }
  // …and that the middle HAProxy really requires a client certificate (checked from node-1's netns).
  const mtls: Record<string, Record<string, unknown>> = {};
  for (const withCert of [true, false]) {
    const args = ['--host', middlePod.ip, '--port', String(L7_PORTS.middle), '--ca', trio.files.ca, '--servername', SERVER_NAME, '--http', REQUEST_PATH, '--expect', withCert ? 'answer' : 'refused'];
    if (withCert) args.push('--cert', trio.files.clientCert, '--key', trio.files.clientKey);
    const r = await tool(node1.netns, 'mtls-check.mjs', args, 20);
    mtls[withCert ? 'withClientCertificate' : 'withoutClientCertificate'] = r.result;
  }
  const tlsIn = mtls.withClientCertificate!;
  say(`middle HAProxy mTLS: with the client certificate ${String(tlsIn.protocol)} ${String(tlsIn.cipher)}, HTTP ${String(tlsIn.httpStatus)}; without one refused (${String(mtls.withoutClientCertificate!.tlsError ?? 'closed').split('\n')[0]!.split(': ')[0]})`);

  // ---------------------------------------------------------------- profiling (optional)
  let profileFile: string | null = null;
  if (o.profile) {
    await mkdir(o.profile, { recursive: true });
    profileFile = join(o.profile, `waypoint-${waypointPid}.cpuprofile`);
    let ready: () => void = () => undefined;
    const isReady = new Promise<void>((r) => (ready = r));
    // set before tool() runs: it calls onSpawn at once, and the end of the runs stops the child through it
    const prof: { child: import('node:child_process').ChildProcess | null; done: Promise<unknown> } = { child: null, done: Promise.resolve() };
    profiler = prof;
    const done = tool(waypointPod.netns, 'inspector-profile.mjs', ['--pid', String(waypointPid), '--out', profileFile, '--max-seconds', '900'], 960, {
      nodeFlags: ['--experimental-websocket'],
      stdin: true,
      onSpawn: (c) => {
        prof.child = c;
      },
      onLine: (line) => {
        if (line.includes('"phase":"profiling"')) ready();
      },
    });
    prof.done = done.catch((e: Error) => say(`profiling failed: ${e.message}`));
    await Promise.race([isReady, done.then(() => undefined, () => undefined), sleep(20_000)]);
    say(`profiling the waypoint (pid ${waypointPid}) into ${profileFile}`);
  }

  // ---------------------------------------------------------------- measurements
  const runs: Run[] = [];
  const failures = new Map<string, number>();
  const record = (r: Run): void => {
    runs.push(r);
    if (!r.ok) {
      const key = `${r.kind}${r.rate ?? ''}/${r.path}`;
      failures.set(key, (failures.get(key) ?? 0) + 1);
      say(`rep ${r.rep}: ${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${LABEL[r.path]}: FAILED: ${r.error}`);
    } else say(`rep ${r.rep}: ${describe(r)}${r.warning ? ` — ${r.warning}` : ''}`);
  };
  for (let rep = 1; rep <= o.repeat; rep++) {
    if (flags.aborting) return;
    const order = o.paths.map((_, i) => o.paths[(i + rep - 1) % o.paths.length]!);
    const steps: { key: string; run: (p: BenchPath) => Promise<Run> }[] = [
      { key: 'closed', run: (p) => closed(p, rep, w) },
      ...w.rates.map((r) => ({ key: `latency${r.rate}`, run: (p: BenchPath) => latency(p, rep, w, r) })),
    ];
    for (const s of steps) {
      for (const name of order) {
        if ((failures.get(`${s.key}/${name}`) ?? 0) >= 2) {
          say(`rep ${rep}: ${s.key} ${LABEL[name]}: skipped after two failures`);
          continue;
        }
        const r = await s.run(all[name]);
        if (flags.aborting) return;
        record(r);
      }
    }
  }
  if (profiler?.child) {
    profiler.child.stdin?.end('stop\n');
    await profiler.done;
    say(`waypoint profile: ${profileFile} (top functions: node bench/tools/cpuprofile-top.mjs ${profileFile})`);
  }

  // ---------------------------------------------------------------- report
  const res = new L7Results(runs, w, o.paths);
  const rssEnd = rssAll();
  const ssl = Object.fromEntries(await Promise.all(trio.procs.map(async (h) => [h.node, await sslInfo(h.statsSocket).catch((e: Error) => ({ error: e.message }))] as const)));
  const doneReps = res.reps().length;
  const others = runs.map((r) => r.otherVcpu).filter((x): x is number => x !== undefined);
  const now = new Date();
  const commit = await gitCommit();
  const rateText = w.rates.map((r) => `${r.rate} rps for ${r.durationS} s`).join(' and ');
  const header = [
    `${o.profile ? '**PROFILED** (V8 profiler running in the waypoint: slower than normal, do not publish) ' : ''}ambit L7 bench${o.quick ? ' (quick)' : ''}, ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit ?? 'unknown'}: median of ${doneReps} repetition(s); the paths run one after the other on the same namespaces, their order rotating per repetition.`,
    `Paths: direct = client pod → server pod; ambit L4 = client pod → ztunnel node-1 → HBONE mTLS → ztunnel node-2 → server pod (pod address: no waypoint); ambit L7 = client pod → Service VIP → ztunnel node-1 → HBONE mTLS → waypoint (${waypointPod.node}; one HTTPRoute) → HBONE mTLS → ztunnel node-2 → server pod; HAProxy L4 pair = client pod → HAProxy ${hv} node-1 → TLS 1.3 mTLS → HAProxy node-2 → server pod; HAProxy L7 = client pod → HAProxy node-1 → mTLS → HAProxy mode http (pod netns on ${middlePod.node}; one path rule) → mTLS → HAProxy node-2 → server pod (${o.haproxyThreads} thread(s) each). Access log per request: ${o.accessLog ? 'on in the waypoint and the middle HAProxy' : 'off in both'}.`,
    `Requests: HTTP/1.1 keep-alive, POST ${REQUEST_PATH} with a ${w.size} B body, ${w.size} B response body. Closed loop: h2load, ${w.closed.conns} connections, ${w.closed.durationS} s after a ${w.closed.warmupS} s warm-up. Latency: open loop over ${w.openConns} connections at ${rateText} (after a warm-up), from the scheduled send time.`,
    `Differences and ratios are medians of the per-repetition pairs. Machine: ${String(mach.nproc)} CPU(s) ${String(mach.cpuModel)}, ${String(mach.memoryGiB)} GiB, kernel ${String(mach.kernel)}, node ${String(mach.node)}; load average ${load0.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end; CPU used by other processes during the runs: median ${fmt(median(others), 2)}, max ${others.length ? Math.max(...others).toFixed(2) : 'n/a'} vCPU (the machine is shared).`,
  ].join('\n');
  const gs = goals(res);
  const failed = runs.filter((r) => !r.ok);
  const warned = runs.filter((r) => r.ok && r.warning);
  const markdown =
    [
      header,
      '**Goals** (the waypoint):',
      goalsTable(gs),
      '**Per path** (medians):',
      mainTable(res),
      '**Added latency** (medians of the per-repetition differences):',
      addedTable(res),
      '**The L7 proxy and the whole path, per process**: CPU seconds per 1000 requests (at a fixed rate the same number as vCPU per 1000 rps), medians:',
      proxyTable(res),
      '**Where the CPU goes**: CPU seconds per 1000 requests of every process on each path (medians; "kernel softirq" is packet processing charged to no process, for the whole machine):',
      splitTable(res),
      '**Memory** of the proxies:',
      memoryTable(rssStart, rssEnd),
      '**Per run**:',
      runsTable(res),
      ...(failed.length ? [`**Failed measurements**: ${failed.map((r) => `${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${LABEL[r.path]} (rep ${r.rep}): ${r.error}`).join('; ')}`] : []),
      ...(warned.length ? [`**Caveats**: ${warned.map((r) => `${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${LABEL[r.path]} (rep ${r.rep}): ${r.warning}`).join('; ')}`] : []),
    ].join('\n\n') + '\n';
  console.log(`\n${markdown}`);

  const result = {
    bench: 'ambit L7 (waypoint) vs HAProxy L7 vs direct, with the L4 paths',
    date: now.toISOString(),
    commit,
    machine: { ...mach, loadavgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
    options: { ...o, repetitionsDone: doneReps },
    workload: w,
    setup: {
      upSeconds,
      waypointSeconds,
      waypoint: { pod: `bench/${waypointPod.name}`, node: waypointPod.node, ip: waypointPod.ip, pid: waypointPid },
      paths: Object.fromEntries(o.paths.map((p) => [p, { ...all[p], processes: PATH_PROCS[p] }])),
      tracked,
      haproxy: { version: hv, threads: o.haproxyThreads, middle: { pod: `plain/${middlePod.name}`, node: middlePod.node, ip: middlePod.ip }, configs: trio.configs, ssl },
      mtls,
      clockTicks: clock.ticks,
      countedByProbe: verification,
      rssMiB: { start: rssStart, end: rssEnd },
      profile: profileFile,
    },
    goals: gs,
    runs,
    failures: failed.map((r) => ({ kind: r.kind, rate: r.rate, rep: r.rep, path: r.path, error: r.error })),
    markdown,
    totalSeconds: elapsed(),
  };
  await mkdir(dirname(o.out), { recursive: true });
  await writeFile(o.out, JSON.stringify(result, null, 2) + '\n');
  const md = o.out.replace(/\.json$/, '') + '.md';
  await writeFile(md, markdown);
  say(`results: ${o.out} and ${md}`);

  const pasteReadme = o.readme ?? (!o.quick && !o.profile && o.out === DEFAULT_OUT);
  if (pasteReadme) {
    const text = await readFile(README, 'utf8');
    const a = text.indexOf(README_START);
    const b = text.indexOf(README_END);
    if (a < 0 || b < a) say(`README: markers ${README_START} … ${README_END} not found in ${README}; not pasted`);
    else {
      const block = `${README_START}\n<!-- pasted by bench/l7/run.ts from ${o.out === DEFAULT_OUT ? 'results.json' : o.out}; do not edit by hand -->\n\n${markdown}\n${README_END}`;
      await writeFile(README, text.slice(0, a) + block + text.slice(b + README_END.length));
      say(`README: tables pasted into ${README}`);
    }
  }
  if (failed.length > 0) {
    process.exitCode = 1;
    console.error(`\nbench:l7: FAILED: ${failed.length} measurement(s) did not run:`);
    for (const r of failed) console.error(`  - ${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} on ${LABEL[r.path]} (rep ${r.rep}): ${r.error}`);
  }
}

let interrupts = 0;
function onSignal(sig: NodeJS.Signals): void {
  interrupts++;
  if (interrupts > 1) {
    console.error(`\nbench:l7: interrupted again; if anything is left, run \`node dist/cli/main.js local down --name ${meshName}\` (HAProxy pids: ${trioDir}/pids)`);
    process.exit(130);
  }
  flags.aborting = true;
  console.error(`\nbench:l7: ${sig}: stopping the load generators and HAProxy, removing the mesh`);
  for (const c of children) if (!c.spawnargs.includes('down')) c.kill('SIGKILL');
  void teardown().then(() => process.exit(130));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

main()
  .catch((err: Error) => {
    console.error(`\nbench:l7: FAILED: ${err.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await teardown();
    say(`done in ${elapsed().toFixed(1)} s${process.exitCode ? ' (FAILED: see above)' : ''}`);
    if (quickRun && elapsed() > 120) say('note: the quick run took more than two minutes (a busy machine?)');
  });
