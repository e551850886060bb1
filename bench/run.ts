#!/usr/bin/env node
/**
 * Side-by-side benchmark of ambit L4 against no mesh ("direct"), against a peer made of two
 * HAProxy instances doing L4 mTLS in the ztunnels' places ("HAProxy pair"), and against the naive
 * Node HTTP/2 CONNECT tunnel of BENCH.md in the same places ("naive tunnel", bench/tools/naive-tunnel.mjs),
 * on the same path, in one run.
 *
 * Builds one local mesh from bench/mesh/bench.yaml (two nodes; namespace `bench` is ambient,
 * namespace `plain` is not; each has a client pod on node-1 and a server pod on node-2), starts the
 * two HAProxies and the two ends of the naive tunnel inside the node netns (bench/lib/haproxy.ts,
 * bench/lib/naive.ts), checks which path is which, then, rotating the order of the four paths per
 * repetition, runs the tools of bench/tools inside the
 * client pods' network namespaces:
 *   1. one-stream bulk throughput (1 GiB; --quick 256 MiB) into a sink,
 *   2. open-loop 1 KiB request/response latency at 1000 rps and at a higher rate,
 *   3. connection churn: new connections per second, each one short request/response,
 *   4. CPU seconds (utime+stime from /proc) of every process on the path per unit of work,
 * and once per path at the end 5. RSS per idle proxied connection, holding 10,000 connections.
 * Prints Markdown tables (medians; ratios and differences paired per repetition), writes JSON,
 * Markdown and an SVG chart, and (full runs) pastes the tables into bench/README.md.
 * The HAProxies, the naive tunnel and the mesh are always removed at the end, also after a failure or Ctrl-C.
 *
 *   npm run bench -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME] [--haproxy-threads N]
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { latencySvg } from './lib/chart.js';
import { CLI, cli, gitCommit, machine, meshDown, metricSum, ROOT, STATE_ROOT, TOOLS, tool } from './lib/runner.js';
import { frontendSessions, haproxyVersion, PEER_PORTS, removeLeftoverPeer, SERVER_NAME, sslInfo, startPeer, stopPeer, type Peer } from './lib/haproxy.js';
import { NAIVE_PORTS, naiveStats, startNaive, type Naive } from './lib/naive.js';
import {
  children,
  clock,
  cpuSplit,
  flags,
  kernelThreads,
  machineCpu,
  memory,
  nofile,
  otherLoad,
  resolvePid,
  runCmd,
  sleep,
  type Mem,
} from './lib/proc.js';
import {
  addedTable,
  fmt,
  goals,
  goalsTable,
  lat,
  mainTable,
  median,
  outPathProblem,
  PATH_LABEL,
  PATHS,
  proxyTable,
  Results,
  runsTable,
  sizeLabel,
  splitTable,
  lossTable,
  type Kind,
  type PathName,
  type Run,
  type Tracked,
  type Workload,
} from './lib/report.js';

const MESH_DIR = join(ROOT, 'bench', 'mesh');
const RESULTS_DIR = join(ROOT, 'bench', 'results');
const DEFAULT_OUT = join(RESULTS_DIR, 'latest.json');
/** quick runs (smoke tests) write here by default, so they do not replace the full run's results the README shows */
const DEFAULT_QUICK_OUT = join(RESULTS_DIR, 'quick.json');
const README = join(ROOT, 'bench', 'README.md');
const SINK_PORT = 9000;
const RR_PORT = 9001;
const README_START = '<!-- bench:results:start -->';
const README_END = '<!-- bench:results:end -->';

// ---------------------------------------------------------------- options

interface Options {
  quick: boolean;
  repeat: number;
  out: string;
  name: string;
  /** folder for V8 CPU profiles of the ztunnels; null = no profiling */
  profile: string | null;
  haproxyThreads: number;
  idleConns: number | null;
  /** paste the tables into bench/README.md: null = only for a full, unprofiled run to the default --out */
  readme: boolean | null;
}

function usage(): string {
  return `usage: npm run bench -- [--quick] [--repeat N] [--out FILE.json] [--name benchNAME] [--haproxy-threads N]
  --quick              smoke test within about a minute: 1 repetition, 128 MiB bulk, short latency and churn
                       runs, 2,000 idle connections
  --repeat N           repetitions of each measurement, median reported (default 3; --quick 1)
  --out FILE           JSON results (default bench/results/latest.json, --quick: bench/results/quick.json);
                       the tables go to FILE with .md, the chart to FILE-latency.svg (for the default:
                       bench/results/latency.svg)
  --name NAME          name of the local mesh (must start with "bench"; default bench)
  --haproxy-threads N  nbthread of each HAProxy (default 1: one event loop, like a ztunnel)
  --idle-conns N       idle connections to hold (default 10000; --quick 2000; capped by the fd limit)
  --readme / --no-readme
                       paste the tables into bench/README.md (default: only for a full run to the default --out)
  --profile DIR        run the ztunnels under the V8 sampling profiler: each writes a .cpuprofile into DIR
                       when the mesh is removed (the profiler costs CPU: do not publish those numbers)
Exit status: 0 when every measurement ran, 1 when any failed (the reason is printed), 2 for bad flags.`;
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options {
  let outGiven = false;
  const o: Options = { quick: false, repeat: 0, out: DEFAULT_OUT, name: 'bench', profile: null, haproxyThreads: 1, idleConns: null, readme: null };
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
    }
    else if (a === '--name') {
      o.name = value();
      if (!/^bench[a-z0-9-]{0,20}$/.test(o.name)) throw new UsageError(`--name must start with "bench" (lowercase letters, digits, '-'), got "${o.name}"`);
    } else if (a === '--profile') o.profile = resolve(value());
    else if (a === '--haproxy-threads') o.haproxyThreads = int(a, value(), 1, 64);
    else if (a === '--idle-conns') o.idleConns = int(a, value(), 1, 100_000);
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

/**
 * How many idle connections fit: every 1:1 proxy (HAProxy on both nodes, ztunnel on node-2) holds two
 * sockets per proxied connection, and the hard RLIMIT_NOFILE cannot be raised without CAP_SYS_RESOURCE.
 */
function idleCount(wanted: number): { count: number; note: string | null } {
  const hard = nofile('self').hard;
  const fit = Number.isFinite(hard) ? Math.floor((hard - 120) / 2 / 50) * 50 : wanted;
  if (fit >= wanted) return { count: wanted, note: null };
  return {
    count: Math.max(50, fit),
    note: `${Math.max(50, fit)} instead of ${wanted}: the hard open-files limit here is ${hard} and cannot be raised, and a 1:1 proxy holds two sockets per connection`,
  };
}

function workloadFor(o: Options): Workload {
  const wanted = o.idleConns ?? (o.quick ? 2000 : 10_000);
  const idle = idleCount(wanted);
  const base = { size: 1024, conns: 4 };
  return o.quick
    ? {
        ...base,
        bulkBytes: 128 * 1024 ** 2,
        bulkTimeoutS: 40,
        rates: [
          { rate: 1000, durationS: 2, warmupS: 0.3 },
          { rate: 2000, durationS: 1, warmupS: 0.3 },
        ],
        churn: { workers: 8, durationS: 1, warmupS: 0.2 },
        idle: { wanted, count: idle.count, parallel: 64, settleS: 1, limitNote: idle.note },
      }
    : {
        ...base,
        bulkBytes: 1024 ** 3,
        bulkTimeoutS: 150,
        rates: [
          { rate: 1000, durationS: 15, warmupS: 1 },
          { rate: 4000, durationS: 8, warmupS: 1 },
        ],
        churn: { workers: 8, durationS: 8, warmupS: 0.5 },
        idle: { wanted, count: idle.count, parallel: 64, settleS: 3, limitNote: idle.note },
      };
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
}
interface StateFile {
  processes: { role: string; name: string; pid: number; log: string }[];
}

let meshName = 'bench';
let meshMayExist = false;
let peer: Peer | null = null;
let peerDir = '';
let naive: Naive | null = null;
let naiveDir = '';
let teardownPromise: Promise<void> | null = null;

function teardown(): Promise<void> {
  teardownPromise ??= (async () => {
    if (naive || naiveDir) {
      try {
        if (naive) {
          await stopPeer(naive);
          say('naive tunnel stopped');
        } else await removeLeftoverPeer(naiveDir);
        naive = null;
      } catch (err) {
        console.error(`bench: stopping the naive tunnel failed (${(err as Error).message}); its pids are in ${naiveDir}/pids`);
        process.exitCode = 1;
      }
    }
    if (peer || peerDir) {
      try {
        if (peer) {
          await stopPeer(peer);
          say('HAProxy stopped');
        } else await removeLeftoverPeer(peerDir);
        peer = null;
      } catch (err) {
        console.error(`bench: stopping HAProxy failed (${(err as Error).message}); its pids are in ${peerDir}/pids`);
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

// ---------------------------------------------------------------- /proc readings

let tracked: Tracked[] = [];
/** pids that count as the bench's own load (mesh processes, HAProxies, the naive tunnel, ksoftirqd) */
let ourPids: number[] = [];

/** CPU seconds (utime+stime) and system CPU seconds (stime) of every tracked process */
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

function memoryOrNull(pid: number): Mem | null {
  try {
    return memory(pid);
  } catch {
    return null;
  }
}

function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! - (b[k] ?? 0)]));
}

/**
 * Sums of istio_tcp_connections_opened_total of the ztunnels, read by one process inside the first
 * node's netns (the other nodes' addresses are reachable from there over the fabric).
 */
async function openedTotals(nodes: NodeView[]): Promise<number[]> {
  const urls = JSON.stringify(nodes.map((n) => `http://${n.ip}:15020/metrics`));
  const script = `Promise.all(${urls}.map(u=>fetch(u).then(r=>r.text()))).then(t=>process.stdout.write(JSON.stringify(t)),e=>{console.error(e.message);process.exit(1)})`;
  const r = await runCmd('ip', ['netns', 'exec', nodes[0]!.netns, process.execPath, '-e', script], { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`cannot read the ztunnels' metrics: ${r.stderr.trim()}`);
  return (JSON.parse(r.stdout) as string[]).map((t) => metricSum(t, 'istio_tcp_connections_opened_total'));
}

// ---------------------------------------------------------------- measurements

interface BenchPath {
  name: PathName;
  /** netns the load tools run in (the client pod's) */
  netns: string;
  host: string;
  sinkPort: number;
  rrPort: number;
  client: PodView;
  server: PodView;
}

/** Runs one measurement with CPU accounting around it. */
async function measure(kind: Kind, p: BenchPath, rep: number, rate: number | undefined, run: () => Promise<{ result: Record<string, unknown>; warning?: string; extra?: Partial<Run> }>): Promise<Run> {
  const before = cpuAll();
  const m0 = machineCpu(ourPids);
  const t0 = process.hrtime.bigint();
  const base: Run = { kind, rep, path: p.name, ok: false, ...(rate !== undefined ? { rate } : {}) };
  try {
    const r = await run();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const m1 = machineCpu(ourPids);
    const after = cpuAll();
    const cpu = diff(after.total, before.total);
    const cpuSys = diff(after.sys, before.sys);
    if (typeof r.result.toolCpuSeconds === 'number') cpu.client = r.result.toolCpuSeconds;
    return { ...base, ok: true, ...(r.warning ? { warning: r.warning } : {}), wallSeconds: wall, cpu, cpuSys, softirqSeconds: m1.softirq - m0.softirq, otherVcpu: otherLoad(m0, m1, wall), tool: r.result, ...r.extra };
  } catch (err) {
    return { ...base, error: (err as Error).message };
  }
}

function bulk(p: BenchPath, rep: number, w: Workload): Promise<Run> {
  return measure('bulk', p, rep, undefined, () =>
    tool(p.netns, 'bulk.mjs', ['--host', p.host, '--port', String(p.sinkPort), '--bytes', String(w.bulkBytes), '--timeout', String(w.bulkTimeoutS)], w.bulkTimeoutS + 15),
  );
}

function latency(p: BenchPath, rep: number, w: Workload, r: Workload['rates'][number]): Promise<Run> {
  return measure('latency', p, rep, r.rate, () =>
    tool(
      p.netns,
      'loadgen.mjs',
      ['--host', p.host, '--port', String(p.rrPort), '--rate', String(r.rate), '--conns', String(w.conns), '--size', String(w.size), '--duration', String(r.durationS), '--warmup', String(r.warmupS)],
      r.durationS + r.warmupS + 40,
      {
        // unanswered requests without connection errors: the path did not keep up with the rate;
        // that is a result (shown as "lost"), not a broken harness
        accept: (x) => (x.errors === 0 && x.sent === x.scheduled && typeof x.answered === 'number' && x.answered > 0 ? `${String(x.lost)} of ${String(x.sent)} requests unanswered at ${r.rate} rps (percentiles are over the answered ones)` : null),
      },
    ),
  );
}

function churn(p: BenchPath, rep: number, w: Workload): Promise<Run> {
  const c = w.churn;
  return measure('churn', p, rep, undefined, () =>
    tool(p.netns, 'churn.mjs', ['--host', p.host, '--port', String(p.rrPort), '--size', String(w.size), '--workers', String(c.workers), '--duration', String(c.durationS), '--warmup', String(c.warmupS)], c.durationS + c.warmupS + 30),
  );
}

/** Opens w.idle.count connections through the path, holds them, reads every proxy's RSS before and while holding. */
function idle(p: BenchPath, w: Workload): Promise<Run> {
  const hard = nofile('self').hard;
  const limit = Number.isFinite(hard) ? String(hard) : 'unlimited';
  return measure('idle', p, 1, undefined, async () => {
    const rssBefore = rssAll();
    const holding: { rss: Record<string, number> | null; held: number } = { rss: null, held: 0 };
    const r = await tool(
      p.netns,
      'idle.mjs',
      ['--host', p.host, '--port', String(p.rrPort), '--count', String(w.idle.count), '--parallel', String(w.idle.parallel), '--size', String(w.size), '--hold', '60'],
      200,
      {
        wrap: ['prlimit', `--nofile=${limit}:${limit}`],
        stdin: true,
        onLine: (line, child) => {
          let msg: { phase?: string; held?: number } = {};
          try {
            msg = JSON.parse(line) as typeof msg;
          } catch {
            return;
          }
          if (msg.phase !== 'holding') return;
          holding.held = msg.held ?? 0;
          // read RSS until it stops moving (the proxies may still be settling the last connections)
          void (async () => {
            const until = Date.now() + w.idle.settleS * 1000;
            let last = rssAll();
            for (;;) {
              await sleep(250);
              const cur = rssAll();
              const moved = Math.max(...Object.keys(cur).map((k) => Math.abs(cur[k]! - (last[k] ?? 0))));
              last = cur;
              if (moved < 0.25 || Date.now() >= until) break;
            }
            holding.rss = last;
            child.stdin?.end('release\n');
          })();
        },
      },
    );
    if (!holding.rss) throw new Error('idle.mjs finished without holding its connections');
    return { ...r, extra: { rssBeforeMiB: rssBefore, rssHeldMiB: holding.rss, held: holding.held } };
  });
}

function describe(r: Run, w: Workload): string {
  const label = PATH_LABEL[r.path].padEnd(12);
  const t = r.tool ?? {};
  const cpu = Object.entries(r.cpu ?? {})
    .filter(([k, v]) => v > 0.005 || k === 'client')
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(', ');
  const other = `other load ${fmt(r.otherVcpu, 2)} vCPU`;
  switch (r.kind) {
    case 'bulk':
      return `bulk    ${label} ${fmt(t.gbps as number, 2)} Gbit/s (${fmt(t.seconds as number, 2)} s; CPU s: ${cpu}; ${other})`;
    case 'latency': {
      const l = (k: 'p50' | 'p90' | 'p99' | 'max'): string => fmt(lat(k)(r), 3);
      return `latency ${label} @ ${r.rate} rps: p50 ${l('p50')} p90 ${l('p90')} p99 ${l('p99')} max ${l('max')} ms, lost ${String(t.lost)} (CPU s: ${cpu}; ${other})`;
    }
    case 'churn':
      return `churn   ${label} ${fmt(t.connsPerSecond as number, 0)} conn/s, ${String(t.failuresAll)} failed, conn p99 ${fmt((t.connMs as Record<string, number>)?.p99, 2)} ms (CPU s: ${cpu}; ${other})`;
    case 'idle': {
      const per = Object.keys(r.rssHeldMiB ?? {})
        .filter((k) => !k.startsWith('server'))
        .map((k) => `${k} ${fmt(r.rssBeforeMiB![k], 1)} → ${fmt(r.rssHeldMiB![k], 1)} MiB`)
        .join(', ');
      return `idle    ${label} ${r.held} connections held (opened at ${fmt(t.connsPerSecond as number, 0)}/s); ${per || 'no proxy'}; of ${w.idle.count}`;
    }
  }
}

// ---------------------------------------------------------------- main

const started = Date.now();
const elapsed = (): number => (Date.now() - started) / 1000;
const say = (line: string): void => console.log(`[${elapsed().toFixed(1).padStart(5)} s] ${line}`);
let profiled: { dir: string; pids: Record<string, number> } | null = null;
let quickRun = false;

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
  quickRun = o.quick;
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('the bench builds network namespaces: run it as root on Linux (e.g. sudo npm run bench)');
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
  for (const t of ['server.mjs', 'bulk.mjs', 'loadgen.mjs', 'probe.mjs', 'churn.mjs', 'idle.mjs', 'mtls-check.mjs', 'naive-tunnel.mjs']) if (!existsSync(join(TOOLS, t))) throw new Error(`bench tool ${join(TOOLS, t)} is missing`);
  const hv = await haproxyVersion();
  if (!hv) throw new Error('haproxy is not installed (the peer of the comparison): apt-get install -y haproxy');
  for (const bin of ['prlimit', 'ip']) {
    const r = await runCmd('sh', ['-c', `command -v ${bin}`], { timeoutMs: 5000 });
    if (r.code !== 0) throw new Error(`${bin} is missing (util-linux / iproute2)`);
  }
  const tck = await runCmd('getconf', ['CLK_TCK'], { timeoutMs: 5000 }).catch(() => null);
  if (tck && tck.code === 0 && Number(tck.stdout.trim()) > 0) clock.ticks = Number(tck.stdout.trim());
  const w = workloadFor(o);

  const mach = await machine();
  say(`ambit bench${o.quick ? ' (quick)' : ''}: ${o.repeat} repetition(s), paths direct / ambit L4 / HAProxy ${hv} pair / naive Node HTTP/2 tunnel; ${mach.nproc} CPU(s) ${mach.cpuModel}, kernel ${mach.kernel}, node ${mach.node}, load ${(mach.loadavgAtStart as number[]).join(' ')}`);
  if (w.idle.limitNote) say(`idle connections: ${w.idle.limitNote}`);
  const load0 = os.loadavg()[0]!;
  if (load0 > 0.5 * os.availableParallelism()) say(`note: the machine is already busy (load average ${load0.toFixed(2)} on ${os.availableParallelism()} CPUs): expect noisy numbers`);

  peerDir = join(os.tmpdir(), `ambit-${o.name}-haproxy`);
  const killed = await removeLeftoverPeer(peerDir);
  if (killed.length) say(`stopped HAProxy process(es) ${killed.join(', ')} left over from an earlier run`);
  naiveDir = join(os.tmpdir(), `ambit-${o.name}-naive`);
  const killedNaive = await removeLeftoverPeer(naiveDir);
  if (killedNaive.length) say(`stopped naive tunnel process(es) ${killedNaive.join(', ')} left over from an earlier run`);
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
  if (flags.aborting) return;
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
  const node = (name: string): NodeView => {
    const n = status.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`node ${name} is missing from \`local status\``);
    return n;
  };
  const node1 = node('node-1');
  const node2 = node('node-2');
  const plainClient = pod('plain', 'client');
  const plainServer = pod('plain', 'server');
  const paths: Record<PathName, BenchPath> = {
    direct: { name: 'direct', netns: plainClient.netns, host: plainServer.ip, sinkPort: SINK_PORT, rrPort: RR_PORT, client: plainClient, server: plainServer },
    ambit: { name: 'ambit', netns: pod('bench', 'client').netns, host: pod('bench', 'server').ip, sinkPort: SINK_PORT, rrPort: RR_PORT, client: pod('bench', 'client'), server: pod('bench', 'server') },
    haproxy: { name: 'haproxy', netns: plainClient.netns, host: node1.ip, sinkPort: PEER_PORTS.sink, rrPort: PEER_PORTS.rr, client: plainClient, server: plainServer },
    naive: { name: 'naive', netns: plainClient.netns, host: node1.ip, sinkPort: NAIVE_PORTS.sink, rrPort: NAIVE_PORTS.rr, client: plainClient, server: plainServer },
  };
  if (plainClient.captured || plainServer.captured) throw new Error('namespace "plain" pods are captured by ztunnel: the direct, HAProxy and naive paths would cross the ztunnels');
  if (!paths.ambit.client.captured || !paths.ambit.server.captured) throw new Error('namespace "bench" pods are not captured by ztunnel');
  for (const p of Object.values(paths)) {
    if (p.client.node !== 'node-1' || p.server.node !== 'node-2') throw new Error(`${p.name}: client must be on node-1 and server on node-2 (got ${p.client.node}, ${p.server.node})`);
  }

  const state = JSON.parse(await readFile(join(STATE_ROOT, o.name, 'state.json'), 'utf8')) as StateFile;
  const zs = state.processes.filter((p) => p.role === 'ztunnel').sort((a, b) => a.name.localeCompare(b.name));
  if (zs.length !== 2) throw new Error(`expected 2 ztunnels in ${STATE_ROOT}/${o.name}/state.json, found ${zs.length}`);
  tracked = zs.map((z) => ({ label: `ztunnel ${z.name}`, role: 'ztunnel' as const, node: z.name, pid: resolvePid(z.pid, /ztunnel/, 'ztunnel') }));
  for (const ns of ['plain', 'bench']) {
    const s = state.processes.find((p) => p.role === 'pod' && p.name.startsWith(`${ns}/server/`));
    if (!s) throw new Error(`no process of pod ${ns}/server in the state file`);
    tracked.push({ label: `server ${ns}`, role: 'server', node: ns, pid: resolvePid(s.pid, /server\.mjs/, `server of ${ns}/server`) });
  }
  // ksoftirqd threads carry the bench's own packets when softirq work is deferred: count them as ours
  ourPids = [...state.processes.map((p) => p.pid), ...kernelThreads(/^ksoftirqd\//)];
  const zpids = Object.fromEntries(tracked.filter((t) => t.role === 'ztunnel').map((t) => [t.node, t.pid]));
  if (o.profile) profiled = { dir: o.profile, pids: zpids };
  say(`mesh up in ${upSeconds.toFixed(1)} s; ztunnels: ${Object.entries(zpids).map(([n, p]) => `${n} pid ${p}`).join(', ')}`);

  // Connection churn leaves TIME_WAIT sockets in the pods and nodes (client side, and the proxies'
  // upstream side); without reuse, tens of thousands of connections a minute to one address run out
  // of ephemeral ports. Only in this mesh's namespaces, the same for every path.
  const allNetns = [...new Set([...status.nodes.map((n) => n.netns), ...status.pods.map((p) => p.netns)])];
  for (const ns of allNetns) {
    const r = await runCmd('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1'], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`sysctl net.ipv4.tcp_tw_reuse=1 in ${ns} failed: ${r.stderr.trim()}`);
  }

  // The peer: HAProxy in the node netns, exactly where the ztunnels run.
  const maxconn = Math.max(w.idle.count + 40, 2000);
  peer = await startPeer(
    { dir: peerDir, threads: o.haproxyThreads, maxconn, node1: { netns: node1.netns, ip: node1.ip }, node2: { netns: node2.netns, ip: node2.ip }, server: { ip: plainServer.ip, sinkPort: SINK_PORT, rrPort: RR_PORT } },
    hv,
    say,
  );
  for (const h of peer.procs) tracked.push({ label: `haproxy ${h.node}`, role: 'haproxy', node: h.node, pid: h.pid });
  ourPids.push(...peer.procs.map((h) => h.pid));
  say(`HAProxy ${hv} (${o.haproxyThreads} thread(s) each): node-1 pid ${peer.procs[0]!.pid} on ${node1.ip}:${PEER_PORTS.sink}/${PEER_PORTS.rr} → mTLS → node-2 pid ${peer.procs[1]!.pid} on ${node2.ip}:${PEER_PORTS.sinkTls}/${PEER_PORTS.rrTls} → ${plainServer.ip}:${SINK_PORT}/${RR_PORT}`);

  // The naive Node HTTP/2 tunnel: the same places, the same certificates.
  naive = await startNaive(
    { dir: naiveDir, node1: { netns: node1.netns, ip: node1.ip }, node2: { netns: node2.netns, ip: node2.ip }, server: { ip: plainServer.ip, sinkPort: SINK_PORT, rrPort: RR_PORT }, files: peer.files },
    say,
  );
  const naiveProcs = [...naive.procs].sort((a, b) => a.node.localeCompare(b.node));
  for (const n of naiveProcs) tracked.push({ label: `naive ${n.node}`, role: 'naive', node: n.node, pid: n.pid });
  ourPids.push(...naiveProcs.map((n) => n.pid));
  say(`naive tunnel (node ${process.version}, node:http2 defaults): node-1 pid ${naiveProcs[0]!.pid} on ${node1.ip}:${NAIVE_PORTS.sink}/${NAIVE_PORTS.rr} → HTTP/2 CONNECT over one TLS 1.3 mTLS connection → node-2 pid ${naiveProcs[1]!.pid} on ${node2.ip}:${NAIVE_PORTS.tunnel} → ${plainServer.ip}:${SINK_PORT}/${RR_PORT}`);
  const idleMemory: Record<string, Mem> = Object.fromEntries(tracked.map((t) => [t.label, memory(t.pid)]));
  for (const p of PATHS) say(`${PATH_LABEL[p].padEnd(12)}: from ${paths[p].client.ip} (${paths[p].netns}) to ${paths[p].host}:${paths[p].sinkPort}/${paths[p].rrPort}`);

  // Readiness, and proof of which path is which: ztunnel's, HAProxy's and the naive tunnel's
  // connection counters move on their own path only.
  const haproxyTotal = async (): Promise<number[]> =>
    Promise.all(peer!.procs.map(async (h) => Object.values(await frontendSessions(h.statsSocket)).reduce((a, b) => a + b, 0)));
  // node-1's end counts accepted TCP connections, node-2's the CONNECT streams it received
  const naiveTotal = async (): Promise<number[]> =>
    Promise.all(
      naiveProcs.map(async (n) => {
        const st = await naiveStats(n.statsSocket);
        return n.node === 'node-1' ? st.accepted : st.streams;
      }),
    );
  const verification: Record<string, Record<string, number>> = {};
  for (const p of PATHS.map((x) => paths[x])) {
    const [zBefore, hBefore, nBefore] = await Promise.all([openedTotals([node1, node2]), haproxyTotal(), naiveTotal()]);
    const r = await tool(p.netns, 'probe.mjs', ['--host', p.host, '--rr-port', String(p.rrPort), '--sink-port', String(p.sinkPort), '--timeout', '20'], 30);
    const [zAfter, hAfter, nAfter] = await Promise.all([openedTotals([node1, node2]), haproxyTotal(), naiveTotal()]);
    const moved = {
      'ztunnel node-1': zAfter[0]! - zBefore[0]!,
      'ztunnel node-2': zAfter[1]! - zBefore[1]!,
      'haproxy node-1': hAfter[0]! - hBefore[0]!,
      'haproxy node-2': hAfter[1]! - hBefore[1]!,
      'naive node-1': nAfter[0]! - nBefore[0]!,
      'naive node-2': nAfter[1]! - nBefore[1]!,
    };
    verification[p.name] = moved;
    say(`${PATH_LABEL[p.name]} ready (first answer after ${(r.result.firstMs as number).toFixed(1)} ms); connections counted by ${Object.entries(moved).map(([k, v]) => `${k} +${v}`).join(', ')}`);
    const z = moved['ztunnel node-1'] > 0 || moved['ztunnel node-2'] > 0;
    const zBoth = moved['ztunnel node-1'] > 0 && moved['ztunnel node-2'] > 0;
    const h = moved['haproxy node-1'] > 0 || moved['haproxy node-2'] > 0;
    const hBoth = moved['haproxy node-1'] > 0 && moved['haproxy node-2'] > 0;
    const n = moved['naive node-1'] > 0 || moved['naive node-2'] > 0;
    const nBoth = moved['naive node-1'] > 0 && moved['naive node-2'] > 0;
    if (p.name === 'direct' && (z || h || n)) throw new Error('the direct path went through a proxy (a ztunnel, HAProxy or naive tunnel counter moved): the comparison would be wrong');
    if (p.name === 'ambit' && (!zBoth || h || n)) throw new Error('the ambit path did not go through both ztunnels and only them (their connection counters)');
    if (p.name === 'haproxy' && (!hBoth || z || n)) throw new Error('the HAProxy path did not go through both HAProxies and only them (their session counters)');
    if (p.name === 'naive' && (!nBoth || z || h)) throw new Error('the naive path did not go through both ends of the naive tunnel and only them (their connection counters)');
  }
  // …and that node-2's HAProxy really requires a client certificate from the CA (checked from node-1's netns).
  const mtls: Record<string, Record<string, unknown>> = {};
  for (const withCert of [true, false]) {
    const args = ['--host', node2.ip, '--port', String(PEER_PORTS.rrTls), '--ca', peer.files.ca, '--servername', SERVER_NAME, '--expect', withCert ? 'answer' : 'refused'];
    if (withCert) args.push('--cert', peer.files.clientCert, '--key', peer.files.clientKey);
    const r = await tool(node1.netns, 'mtls-check.mjs', args, 20);
    mtls[withCert ? 'withClientCertificate' : 'withoutClientCertificate'] = r.result;
  }
  const tlsIn = mtls.withClientCertificate!;
  say(`HAProxy mTLS: with the client certificate ${String(tlsIn.protocol)} ${String(tlsIn.cipher)} answered; without one refused (${String(mtls.withoutClientCertificate!.tlsError ?? 'closed').split('\n')[0]!.split(': ')[0]})`);
  // …and that node-2's end of the naive tunnel refuses a client without a certificate (with one it
  // answered the probe above; mtls-check speaks raw bytes, not HTTP/2, so it can only check the refusal).
  {
    const r = await tool(node1.netns, 'mtls-check.mjs', ['--host', node2.ip, '--port', String(NAIVE_PORTS.tunnel), '--ca', peer.files.ca, '--servername', SERVER_NAME, '--expect', 'refused'], 20);
    mtls.naiveWithoutClientCertificate = r.result;
    say(`naive tunnel mTLS: ${String(r.result.protocol)} ${String(r.result.cipher)}; without a client certificate refused (${String(r.result.tlsError ?? 'closed').split('\n')[0]!.split(': ')[0]})`);
  }

  // Measurements: per repetition bulk, latency at each rate, churn; the order of the paths rotates.
  const runs: Run[] = [];
  const failures = new Map<string, number>();
  const record = (r: Run): void => {
    runs.push(r);
    if (!r.ok) {
      const key = `${r.kind}${r.rate ?? ''}/${r.path}`;
      failures.set(key, (failures.get(key) ?? 0) + 1);
      say(`rep ${r.rep}: ${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${PATH_LABEL[r.path]}: FAILED: ${r.error}`);
    } else say(`rep ${r.rep}: ${describe(r, w)}${r.warning ? ` — ${r.warning}` : ''}`);
  };
  const skip = (kind: string, path: PathName): boolean => (failures.get(`${kind}/${path}`) ?? 0) >= 2;
  for (let rep = 1; rep <= o.repeat; rep++) {
    if (flags.aborting) return;
    const order = PATHS.map((_, i) => PATHS[(i + rep - 1) % PATHS.length]!);
    const steps: { key: string; run: (p: BenchPath) => Promise<Run> }[] = [
      { key: 'bulk', run: (p) => bulk(p, rep, w) },
      ...w.rates.map((r) => ({ key: `latency${r.rate}`, run: (p: BenchPath) => latency(p, rep, w, r) })),
      { key: 'churn', run: (p) => churn(p, rep, w) },
    ];
    for (const s of steps) {
      for (const name of order) {
        if (skip(s.key, name)) {
          say(`rep ${rep}: ${s.key} ${PATH_LABEL[name]}: skipped after two failures`);
          continue;
        }
        const r = await s.run(paths[name]);
        if (flags.aborting) return;
        record(r);
      }
    }
  }
  // Idle connections: once per path (a second round in the same processes would reuse memory the
  // first one left behind, and report less than a connection costs).
  say(`idle connections: ${w.idle.count} per path; RSS read while holding them, once it stops moving (at most ${w.idle.settleS} s)`);
  for (const name of PATHS) {
    if (flags.aborting) return;
    record(await idle(paths[name], w));
  }

  // ---------------------------------------------------------------- report
  const res = new Results(runs, w, tracked);
  const finalMemory: Record<string, Mem | null> = Object.fromEntries(tracked.map((t) => [t.label, memoryOrNull(t.pid)]));
  const ssl = Object.fromEntries(await Promise.all(peer.procs.map(async (h) => [h.node, await sslInfo(h.statsSocket).catch((e: Error) => ({ error: e.message }))] as const)));
  const doneReps = res.reps().filter((r) => runs.some((x) => x.rep === r && x.kind !== 'idle')).length;
  const others = runs.map((r) => r.otherVcpu).filter((x): x is number => x !== undefined);
  const now = new Date();
  const commit = await gitCommit();
  const rateText = w.rates.map((r) => `${r.rate} rps for ${r.durationS} s`).join(' and ');
  const header = [
    `${o.profile ? '**PROFILED** (V8 profiler running in the ztunnels: slower than normal, do not publish) ' : ''}ambit bench${o.quick ? ' (quick)' : ''}, ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit ?? 'unknown'}: median of ${doneReps} repetition(s); the four paths run one after the other on the same namespaces, their order rotating per repetition.`,
    `Paths: direct = client pod → server pod; ambit L4 = client pod → (captured) ztunnel node-1 → HBONE mTLS → ztunnel node-2 (listener in the server pod netns) → server pod; HAProxy pair = client pod → HAProxy ${hv} in node-1 netns → TLS 1.3 mTLS → HAProxy in node-2 netns → server pod (${o.haproxyThreads} thread(s) each); naive tunnel = client pod → naive Node HTTP/2 tunnel in node-1 netns → one CONNECT stream per connection over one TLS 1.3 mTLS connection (node:http2 defaults, pipe()) → its other end in node-2 netns → server pod.`,
    `Bulk: ${sizeLabel(w.bulkBytes)} over one TCP connection. Latency: open loop, ${w.size} B requests and responses over ${w.conns} connections at ${rateText} (after a warm-up), from the scheduled send time. Churn: ${w.churn.workers} workers for ${w.churn.durationS} s, each connection one ${w.size} B request/response. Idle: ${w.idle.count} connections held once per path${w.idle.limitNote ? ` (${w.idle.limitNote})` : ''}.`,
    `Ratios and differences are medians of the per-repetition pairs. Machine: ${String(mach.nproc)} CPU(s) ${String(mach.cpuModel)}, ${String(mach.memoryGiB)} GiB, kernel ${String(mach.kernel)}, node ${String(mach.node)}; load average ${load0.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end; CPU used by other processes during the runs: median ${fmt(median(others), 2)}, max ${others.length ? Math.max(...others).toFixed(2) : 'n/a'} vCPU.`,
  ].join('\n');
  const outDir = dirname(o.out);
  const svgPath = o.out === DEFAULT_OUT ? join(outDir, 'latency.svg') : `${o.out.replace(/\.json$/, '')}-latency.svg`;
  const idleMiB = Object.fromEntries(Object.entries(idleMemory).map(([k, v]) => [k, v.rssMiB]));
  const gs = goals(res);
  const failed = runs.filter((r) => !r.ok);
  const warned = runs.filter((r) => r.ok && r.warning);
  const sections = [
    header,
    '**Goals** (ambit L4):',
    goalsTable(gs),
    '**Per path** (medians):',
    mainTable(res),
    '**Added latency** over direct (medians of the per-repetition differences, ms):',
    addedTable(res),
    '**Per proxy process** (ztunnel on the ambit path, HAProxy on the HAProxy path, the naive tunnel\'s ends on the naive path; the ratio columns are ztunnel ÷ HAProxy and ztunnel ÷ naive on the same node):',
    proxyTable(res, idleMiB),
    '**Where the CPU goes**: CPU seconds of each process on the path per unit of work (medians; "kernel softirq" is packet processing not charged to any process, for the whole machine):',
    splitTable(res),
    '**Where ambit L4 spends more than the HAProxy pair**: the ambit row minus the HAProxy row of the table above, split by process (positive: ambit spends more):',
    lossTable(res),
    '**Where ambit L4 spends more than the naive tunnel** (the same, against the naive tunnel\'s row):',
    lossTable(res, 'naive'),
    '**Per run**:',
    runsTable(res),
    ...(failed.length ? [`**Failed measurements**: ${failed.map((r) => `${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${PATH_LABEL[r.path]} (rep ${r.rep}): ${r.error}`).join('; ')}`] : []),
    ...(warned.length ? [`**Caveats**: ${warned.map((r) => `${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} ${PATH_LABEL[r.path]} (rep ${r.rep}): ${r.warning}`).join('; ')}`] : []),
  ];
  const markdown = sections.join('\n\n') + '\n';
  console.log(`\n${markdown}`);

  const chartPanels = w.rates.map((r) => ({
    title: `${r.rate} requests/s (1 KiB each way)`,
    categories: ['p50', 'p90', 'p99', 'max'],
    series: [
      { label: 'direct', color: '#9e9e9e', values: (['p50', 'p90', 'p99', 'max'] as const).map((p) => res.med('latency', 'direct', lat(p), r.rate)) },
      { label: 'ambit L4 (two ztunnels)', color: '#1f77b4', values: (['p50', 'p90', 'p99', 'max'] as const).map((p) => res.med('latency', 'ambit', lat(p), r.rate)) },
      { label: `HAProxy pair (${hv}, mTLS)`, color: '#ff7f0e', values: (['p50', 'p90', 'p99', 'max'] as const).map((p) => res.med('latency', 'haproxy', lat(p), r.rate)) },
      { label: 'naive Node HTTP/2 tunnel', color: '#2ca02c', values: (['p50', 'p90', 'p99', 'max'] as const).map((p) => res.med('latency', 'naive', lat(p), r.rate)) },
    ],
  }));
  const svg = latencySvg({
    title: `Request/response latency per path${o.quick ? ' (quick run)' : ''}${o.profile ? ' (PROFILED)' : ''}`,
    subtitle: [
      `ambit bench ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit ?? 'unknown'}, median of ${doneReps} repetition(s)`,
      `${String(mach.nproc)} CPU(s) ${String(mach.cpuModel)}, kernel ${String(mach.kernel)}, node ${String(mach.node)}`,
    ],
    yLabel: 'latency (ms, log scale)',
    panels: chartPanels,
  });

  const result = {
    bench: 'ambit L4 vs direct vs HAProxy pair vs naive Node HTTP/2 tunnel',
    date: now.toISOString(),
    commit,
    machine: { ...mach, loadavgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
    options: { ...o, repetitionsDone: doneReps },
    workload: w,
    setup: {
      upSeconds,
      paths: Object.fromEntries(PATHS.map((p) => [p, { from: paths[p].client, netns: paths[p].netns, host: paths[p].host, sinkPort: paths[p].sinkPort, rrPort: paths[p].rrPort, server: paths[p].server }])),
      tracked,
      haproxy: { version: hv, threads: o.haproxyThreads, maxconn, configs: peer.procs.map((h) => h.config), ssl },
      naive: {
        commands: Object.fromEntries(naiveProcs.map((n) => [n.node, n.config])),
        stats: Object.fromEntries(await Promise.all(naiveProcs.map(async (n) => [n.node, await naiveStats(n.statsSocket).catch((e: Error) => ({ error: e.message }))] as const))),
      },
      mtls,
      sysctl: { 'net.ipv4.tcp_tw_reuse': 1, namespaces: allNetns },
      clockTicks: clock.ticks,
      connectionsCountedByProbe: verification,
      idleMemory,
      finalMemory,
    },
    goals: gs,
    runs,
    failures: failed.map((r) => ({ kind: r.kind, rate: r.rate, rep: r.rep, path: r.path, error: r.error })),
    markdown,
    totalSeconds: elapsed(),
  };
  await mkdir(outDir, { recursive: true });
  await writeFile(o.out, JSON.stringify(result, null, 2) + '\n');
  const md = o.out.replace(/\.json$/, '') + '.md';
  await writeFile(md, markdown);
  await writeFile(svgPath, svg);
  say(`results: ${o.out}, ${md} and ${svgPath}`);

  const pasteReadme = o.readme ?? (!o.quick && !o.profile && o.out === DEFAULT_OUT);
  if (pasteReadme) {
    const text = await readFile(README, 'utf8');
    const a = text.indexOf(README_START);
    const b = text.indexOf(README_END);
    if (a < 0 || b < a) say(`README: markers ${README_START} … ${README_END} not found in ${README}; not pasted`);
    else {
      const rel = svgPath.startsWith(dirname(README) + '/') ? svgPath.slice(dirname(README).length + 1) : svgPath;
      const block = `${README_START}\n<!-- pasted by bench/run.ts from ${o.out === DEFAULT_OUT ? 'results/latest.json' : o.out}; do not edit by hand -->\n\n![latency percentiles per path](${rel})\n\n${markdown}\n${README_END}`;
      await writeFile(README, text.slice(0, a) + block + text.slice(b + README_END.length));
      say(`README: tables pasted into ${README}`);
    }
  }
  if (failed.length > 0) {
    process.exitCode = 1;
    console.error(`\nbench: FAILED: ${failed.length} measurement(s) did not run:`);
    for (const r of failed) console.error(`  - ${r.kind}${r.rate ? ` @ ${r.rate} rps` : ''} on ${PATH_LABEL[r.path]} (rep ${r.rep}): ${r.error}`);
  }
}

/** After teardown: which profile belongs to which ztunnel. */
function listProfiles(): void {
  if (!profiled) return;
  const files = existsSync(profiled.dir) ? readdirSync(profiled.dir).filter((f) => f.endsWith('.cpuprofile')) : [];
  for (const [n, pid] of Object.entries(profiled.pids)) {
    const f = files.filter((x) => x.endsWith(`-${pid}.cpuprofile`));
    say(f.length ? `CPU profile of ztunnel ${n}: ${f.map((x) => join(profiled!.dir, x)).join(', ')}  (top functions: node bench/tools/cpuprofile-top.mjs FILE)` : `no CPU profile from ztunnel ${n} (pid ${pid}) in ${profiled.dir}: it did not exit cleanly`);
  }
}

let interrupts = 0;
function onSignal(sig: NodeJS.Signals): void {
  interrupts++;
  if (interrupts > 1) {
    console.error(`\nbench: interrupted again; if anything is left, run \`node dist/cli/main.js local down --name ${meshName}\` (HAProxy pids: ${peerDir}/pids, naive tunnel pids: ${naiveDir}/pids)`);
    process.exit(130);
  }
  flags.aborting = true;
  console.error(`\nbench: ${sig}: stopping the load generators, HAProxy and the naive tunnel, removing the mesh`);
  for (const c of children) if (!c.spawnargs.includes('down')) c.kill('SIGKILL');
  void teardown().then(() => process.exit(130));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

main()
  .catch((err: Error) => {
    console.error(`\nbench: FAILED: ${err.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await teardown();
    listProfiles();
    say(`done in ${elapsed().toFixed(1)} s${process.exitCode ? ' (FAILED: see above)' : ''}`);
    if (quickRun && elapsed() > 60) say('note: the quick run took more than a minute (a busy machine?)');
  });
