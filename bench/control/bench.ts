#!/usr/bin/env node
/**
 * Control plane bench (`npm run bench:control`): the control plane with a large mesh (10,000 pods,
 * 1,000 services by default) as its own process, ztunnel stand-ins over the real gRPC+TLS
 * protocol, and three questions: how long a full snapshot takes to reach a ztunnel, how long a
 * change takes to reach every ztunnel (through setObjects, and end to end through a YAML edit),
 * and how much memory the control plane holds. See bench/control/README.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { translate } from '../../shared/config/translate.js';
import { readObjects } from '../../shared/config/objects.js';
import { diffSnapshots, snapshotUpdate } from '../../shared/control/delta.js';
import { controlService } from '../../shared/control/protocol.js';
import type { MeshSnapshot } from '../../shared/model/types.js';
import { cpuSeconds, machineCpu, memory, otherLoad, runCmd, type MachineCpu } from '../lib/proc.js';
import { CHANGE_KINDS, SyntheticMesh, type Change, type ChangeKind, type MeshShape } from './mesh.js';
import { BenchWatcher, type SnapshotReceipt } from './watcher.js';
import type { ProbeApplied, ProbeChange, ProbeMemory, ProbeMemoryRequest } from './probe.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..', '..');
const DIST = resolve(HERE, '..', '..');

// ---------------------------------------------------------------- flags

interface Options {
  shape: MeshShape;
  /** concurrent watchers for the snapshot rounds */
  concurrency: number[];
  /** changes through setObjects with 10 watchers, and with 50 */
  changes: number;
  changes50: number;
  /** changes through a YAML edit */
  fileChanges: number;
  out: string;
  quick: boolean;
  /** write a V8 CPU profile of the control plane here */
  profile: string | null;
}

const USAGE = `usage: node dist/bench/control/bench.js [--quick] [--pods N] [--services N] [--namespaces N] [--nodes N]
       [--changes N] [--changes-50 N] [--file-changes N] [--concurrency 1,10,50] [--out FILE] [--profile DIR]`;

function parseFlags(argv: string[]): Options {
  const o: Options = {
    shape: { pods: 10_000, services: 1_000, namespaces: 20, nodes: 100 },
    concurrency: [1, 10, 50],
    changes: 300,
    changes50: 100,
    fileChanges: 50,
    out: join(ROOT, 'bench', 'control', 'results.json'),
    quick: false,
    profile: null,
  };
  const int = (v: string | undefined, flag: string, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) throw new Error(`${flag} needs a whole number ≥ ${min}, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case '--quick':
        o.quick = true;
        Object.assign(o, { changes: 30, changes50: 12, fileChanges: 6, concurrency: [1, 10] });
        break;
      case '--pods': o.shape.pods = int(argv[++i], a, 1); break;
      case '--services': o.shape.services = int(argv[++i], a, 1); break;
      case '--namespaces': o.shape.namespaces = int(argv[++i], a, 1); break;
      case '--nodes': o.shape.nodes = int(argv[++i], a, 1); break;
      case '--changes': o.changes = int(argv[++i], a, 0); break;
      case '--changes-50': o.changes50 = int(argv[++i], a, 0); break;
      case '--file-changes': o.fileChanges = int(argv[++i], a, 0); break;
      case '--concurrency': o.concurrency = (argv[++i] ?? '').split(',').map((s) => int(s, a, 1)); break;
      case '--out': o.out = resolve(argv[++i] ?? ''); break;
      case '--profile': o.profile = resolve(argv[++i] ?? ''); break;
      case '-h': case '--help': console.log(USAGE); process.exit(0); break;
      default: throw new Error(`unknown flag ${a}\n${USAGE}`);
    }
  }
  if (o.shape.services > o.shape.pods) throw new Error('--services must not exceed --pods');
  if (o.shape.nodes < 50) throw new Error('--nodes must be at least 50 (one per watcher)');
  return o;
}

// ---------------------------------------------------------------- numbers

/** Nearest-rank percentile. */
function pct(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const r2 = (v: number | null): number | null => (v === null ? null : Math.round(v * 100) / 100);

interface Dist {
  n: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

function dist(xs: number[]): Dist {
  return { n: xs.length, p50: r2(pct(xs, 50)), p90: r2(pct(xs, 90)), p99: r2(pct(xs, 99)), max: r2(xs.length ? Math.max(...xs) : null) };
}

const f1 = (v: number | null | undefined): string => (v === null || v === undefined ? 'n/a' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const say = (s: string): void => console.log(`bench:control: ${s}`);
const now = (): number => performance.now();

function time<T>(f: () => T): [T, number] {
  const t0 = now();
  const r = f();
  return [r, now() - t0];
}

// ---------------------------------------------------------------- the control plane process

class ControlProcess {
  private applied: ProbeApplied[] = [];
  private wake: (() => void) | null = null;
  private memoryReply: ((m: ProbeMemory) => void) | null = null;
  readonly exited: Promise<number>;
  port = 0;
  startMs = 0;
  log = '';

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((res) => child.on('exit', (code, signal) => res(code ?? (signal ? 128 : 1))));
    child.on('message', (m: ProbeApplied | ProbeMemory) => {
      if (m.event === 'memory') this.memoryReply?.(m);
      if (m.event !== 'applied') return;
      this.applied.push(m);
      this.wake?.();
    });
  }

  /** node --import probe dist/control/main.js --config DIR …, until it serves. */
  static async start(args: string[], profile: string | null): Promise<ControlProcess> {
    const t0 = now();
    const prof = profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : [];
    // --expose-gc only lets the probe measure the live heap when asked (see ProbeMemory)
    const child = spawn(process.execPath, [...prof, '--expose-gc', '--import', pathToFileURL(join(HERE, 'probe.js')).href, join(DIST, 'control', 'main.js'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const cp = new ControlProcess(child);
    await new Promise<void>((res, rej) => {
      let partial = '';
      const timer = setTimeout(() => rej(new Error(`control plane did not serve within 120 s:\n${cp.log.slice(-2000)}`)), 120_000);
      const onData = (c: Buffer): void => {
        const s = c.toString();
        cp.log = (cp.log + s).slice(-20_000);
        partial += s;
        let i: number;
        while ((i = partial.indexOf('\n')) >= 0) {
          const line = partial.slice(0, i);
          partial = partial.slice(i + 1);
          if (!line.includes('control plane serving')) continue;
          try {
            cp.port = (JSON.parse(line) as { port: number }).port;
          } catch {
            continue;
          }
          clearTimeout(timer);
          cp.startMs = now() - t0;
          res();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', (c: Buffer) => (cp.log = (cp.log + c.toString()).slice(-20_000)));
      void cp.exited.then((code) => rej(new Error(`control plane exited (${code}) before serving:\n${cp.log.slice(-2000)}`)));
    });
    // keep reading its log so the pipe never fills
    child.stdout!.on('data', (c: Buffer) => (cp.log = (cp.log + c.toString()).slice(-20_000)));
    return cp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  send(m: ProbeChange | ProbeMemoryRequest): void {
    this.child.send(m);
  }

  /** The process's own view of its memory (heap, buffers), with VmRSS and VmHWM from /proc. */
  async memory(): Promise<Record<string, number>> {
    // VmRSS first: the collection the probe then runs (for the live heap) would lower it
    const proc = memory(this.pid);
    const reply = new Promise<ProbeMemory | null>((res) => {
      const t = setTimeout(() => res(null), 10_000);
      this.memoryReply = (m) => {
        clearTimeout(t);
        res(m);
      };
    });
    this.send({ op: 'memory' });
    const m = await reply;
    const r1 = (v: number): number => Math.round(v * 10) / 10;
    return {
      rssMiB: r1(proc.rssMiB),
      hwmMiB: r1(proc.hwmMiB),
      ...(m ? { heapUsedMiB: m.heapUsedMiB, heapTotalMiB: m.heapTotalMiB, externalMiB: m.externalMiB, liveHeapMiB: m.liveHeapMiB ?? NaN, liveExternalMiB: m.liveExternalMiB ?? NaN } : {}),
    };
  }

  /** The next setObjects report that matches, waiting up to timeoutMs. */
  async nextApplied(match: (a: ProbeApplied) => boolean, timeoutMs: number): Promise<ProbeApplied | null> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const i = this.applied.findIndex(match);
      if (i >= 0) return this.applied.splice(i, 1)[0]!;
      const left = deadline - now();
      if (left <= 0) return null;
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = null;
          res();
        };
      });
    }
  }

  /** Reports that arrived and were not asked for (file reloads), dropped. */
  drain(): ProbeApplied[] {
    const a = this.applied;
    this.applied = [];
    return a;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(t);
  }
}

// ---------------------------------------------------------------- phases

interface Setup {
  dir: string;
  configDir: string;
  rootsPem: string;
  tokens: Map<string, string>;
}

async function setUp(mesh: SyntheticMesh): Promise<Setup> {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-bench-control-'));
  const configDir = join(dir, 'mesh');
  await mkdir(configDir);
  await mkdir(join(dir, 'staging'));
  for (const [name, text] of mesh.files()) await writeFile(join(configDir, name), text);
  const ca = await CertificateAuthority.generate();
  await writeFile(join(dir, 'ca.pem'), ca.certPem);
  await writeFile(join(dir, 'ca-key.pem'), ca.keyPem());
  const tokens = new Map<string, string>();
  const byToken: Record<string, string> = {};
  for (let n = 1; n <= mesh.shape.nodes; n++) {
    const t = randomBytes(24).toString('hex');
    tokens.set(`node-${n}`, t);
    byToken[t] = `node-${n}`;
  }
  await writeFile(join(dir, 'node-tokens.json'), JSON.stringify(byToken));
  return { dir, configDir, rootsPem: ca.rootsPem().join('\n'), tokens };
}

/** translate, diff and (de)serialization in this process, without the server around them. */
async function translationCosts(shape: MeshShape, configDir: string, quick: boolean): Promise<Record<string, unknown>> {
  const mesh = new SyntheticMesh(shape);
  const full: number[] = [];
  let snap: MeshSnapshot = translate(mesh.list());
  for (let i = 0; i < (quick ? 2 : 5); i++) full.push(time(() => translate(mesh.list()))[1]);
  const perKind: Record<string, { translateMs: number[]; diffMs: number[] }> = {};
  for (let i = 0; i < CHANGE_KINDS.length * (quick ? 1 : 3); i++) {
    const c = mesh.next();
    const list = mesh.list();
    const [next, tMs] = time(() => translate(list, [], snap));
    const [, dMs] = time(() => diffSnapshots(snap, next, 2));
    snap = next;
    const k = (perKind[c.kind] ??= { translateMs: [], diffMs: [] });
    k.translateMs.push(tMs);
    k.diffMs.push(dMs);
  }
  const update = snapshotUpdate(snap, 1);
  const ser: number[] = [];
  const de: number[] = [];
  let bytes = 0;
  for (let i = 0; i < (quick ? 2 : 5); i++) {
    // a fresh message each time: the protocol serializes each message object only once
    const [buf, sMs] = time(() => controlService.watch.responseSerialize({ ...update }));
    bytes = buf.length;
    ser.push(sMs);
    de.push(time(() => controlService.watch.responseDeserialize(buf))[1]);
  }
  const t0 = now();
  const objects = await readObjects(configDir);
  const readMs = now() - t0;
  const med = (xs: number[]): number | null => r2(pct(xs, 50));
  return {
    translateFullMs: med(full),
    perChange: Object.fromEntries(Object.entries(perKind).map(([k, v]) => [k, { translateMs: med(v.translateMs), diffMs: med(v.diffMs) }])),
    snapshotBytes: bytes,
    serializeSnapshotMs: med(ser),
    deserializeSnapshotMs: med(de),
    readAllYamlMs: r2(readMs),
    yamlObjects: objects.length,
  };
}

interface SnapshotRound {
  concurrency: number;
  ms: number[];
  /** until the last watcher had it */
  allMs: number;
}

async function snapshotRound(cp: ControlProcess, s: Setup, n: number, firstNode: number, keep: boolean): Promise<{ round: SnapshotRound; watchers: BenchWatcher[]; receipts: SnapshotReceipt[] }> {
  const watchers: BenchWatcher[] = [];
  for (let i = 0; i < n; i++) {
    const node = `node-${firstNode + i}`;
    watchers.push(new BenchWatcher(`127.0.0.1:${cp.port}`, s.rootsPem, node, s.tokens.get(node)!));
  }
  const t0 = now();
  const receipts = await Promise.all(watchers.map((w) => w.watch(120_000)));
  const allMs = now() - t0;
  if (!keep) for (const w of watchers) w.close();
  return { round: { concurrency: n, ms: receipts.map((r) => r.ms), allMs }, watchers: keep ? watchers : [], receipts };
}

interface DeltaSample {
  kind: ChangeKind;
  version: number | null;
  /** change sent → delta decoded at each watcher */
  ms: number[];
  buildMs: number;
  readMs: number | null;
  setMs: number;
}

/** Sends changes through setObjects, one at a time, each once every watcher has the last. */
async function directChanges(cp: ControlProcess, mesh: SyntheticMesh, watchers: BenchWatcher[], count: number, startId: number): Promise<DeltaSample[]> {
  const out: DeltaSample[] = [];
  for (let i = 0; i < count; i++) {
    const c = mesh.next();
    const id = startId + i;
    const t0 = now();
    cp.send({ op: 'change', id, put: c.put, remove: c.remove });
    const a = await cp.nextApplied((x) => x.id === id, 30_000);
    if (!a) throw new Error(`change ${id} (${c.kind}): the control plane did not apply it within 30 s`);
    out.push(await arrivals(c, a, watchers, t0));
    await new Promise((r) => setTimeout(r, 5));
  }
  return out;
}

let lastVersion = 0;

async function arrivals(c: Change, a: ProbeApplied, watchers: BenchWatcher[], t0: number): Promise<DeltaSample> {
  const sample: DeltaSample = { kind: c.kind, version: null, ms: [], buildMs: a.buildMs, readMs: a.readMs, setMs: a.setMs };
  if (a.version === lastVersion) return sample; // nothing changed for the mesh: no delta
  lastVersion = a.version;
  sample.version = a.version;
  const ok = await Promise.all(watchers.map((w) => w.waitFor(a.version, 30_000)));
  if (ok.includes(false)) throw new Error(`version ${a.version} (${c.kind}) did not reach every watcher within 30 s`);
  sample.ms = watchers.map((w) => w.arrivalOf(a.version)! - t0);
  return sample;
}

/** Edits one namespace's YAML file per change (written aside, then renamed in, as editors and kubectl-like tools do). */
async function fileChanges(cp: ControlProcess, mesh: SyntheticMesh, s: Setup, watchers: BenchWatcher[], count: number): Promise<DeltaSample[]> {
  const out: DeltaSample[] = [];
  for (let i = 0; i < count; i++) {
    const c = mesh.next();
    const f = mesh.namespaceFile(c.namespace);
    const tmp = join(s.dir, 'staging', f.name);
    await writeFile(tmp, f.text);
    cp.drain();
    const t0 = now();
    await rename(tmp, join(s.configDir, f.name));
    const a = await cp.nextApplied((x) => x.id === null, 60_000);
    if (!a) throw new Error(`file change ${i} (${c.kind}): the control plane did not reload within 60 s`);
    out.push(await arrivals(c, a, watchers, t0));
    // one edit, one reload: let the watcher's debounce and any late event settle
    await new Promise((r) => setTimeout(r, 120));
    for (const late of cp.drain()) if (late.version !== lastVersion) lastVersion = late.version;
  }
  return out;
}

/** Rewrites every file with the mesh as the control plane now has it (after the direct changes), and waits for quiet. */
async function syncFiles(cp: ControlProcess, mesh: SyntheticMesh, s: Setup): Promise<void> {
  for (const [name, text] of mesh.files()) {
    const tmp = join(s.dir, 'staging', name);
    await writeFile(tmp, text);
    await rename(tmp, join(s.configDir, name));
  }
  // reloads run one after another; wait until none comes for a while longer than the last took
  let quiet = 60_000;
  for (;;) {
    const a = await cp.nextApplied((x) => x.id === null, quiet);
    if (!a) break;
    lastVersion = a.version;
    quiet = 3000 + 2 * ((a.readMs ?? 0) + a.setMs);
  }
}

function summary(samples: DeltaSample[]): Record<string, unknown> {
  const all = samples.flatMap((x) => x.ms);
  const slowest = samples.filter((x) => x.ms.length > 0).map((x) => Math.max(...x.ms));
  const byKind: Record<string, Dist> = {};
  for (const k of CHANGE_KINDS) byKind[k] = dist(samples.filter((x) => x.kind === k).flatMap((x) => x.ms));
  return {
    changes: samples.length,
    withoutDelta: samples.filter((x) => x.version === null).length,
    arrivalMs: dist(all),
    lastWatcherMs: dist(slowest),
    setObjectsMs: dist(samples.map((x) => x.setMs)),
    buildMs: dist(samples.map((x) => x.buildMs)),
    readMs: dist(samples.flatMap((x) => (x.readMs === null ? [] : [x.readMs]))),
    arrivalMsByKind: byKind,
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseFlags(process.argv.slice(2));
  const started = now();
  const commit = await gitCommit();
  const machine = {
    nproc: os.availableParallelism(),
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown',
    kernel: os.release(),
    node: process.version,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
  say(`${o.shape.pods} pods, ${o.shape.services} services, ${o.shape.namespaces} namespaces, ${o.shape.nodes} nodes; ${machine.nproc} CPU(s) ${machine.cpuModel}, node ${machine.node}, load ${machine.loadavgAtStart.join(' ')}`);

  const mesh = new SyntheticMesh(o.shape);
  const s = await setUp(mesh);
  let cp: ControlProcess | null = null;
  const watchers: BenchWatcher[] = [];
  const stopAll = async (): Promise<void> => {
    for (const w of watchers.splice(0)) w.close();
    await cp?.stop();
    await rm(s.dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void stopAll().then(() => process.exit(130)));
  try {
    say('translation costs in this process …');
    const costs = await translationCosts(o.shape, s.configDir, o.quick);
    say(`translate ${f1(costs.translateFullMs as number)} ms, snapshot ${((costs.snapshotBytes as number) / 1e6).toFixed(2)} MB serialized in ${f1(costs.serializeSnapshotMs as number)} ms, decoded in ${f1(costs.deserializeSnapshotMs as number)} ms, all YAML read in ${f1(costs.readAllYamlMs as number)} ms`);

    // the same process with (almost) nothing to serve: what Node and the modules it loads cost
    const emptyDir = join(s.dir, 'empty');
    await mkdir(emptyDir);
    await writeFile(join(emptyDir, 'ns.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: empty\n');
    const controlArgs = (config: string): string[] => [
      '--config', config, '--ca-cert', join(s.dir, 'ca.pem'), '--ca-key', join(s.dir, 'ca-key.pem'),
      '--node-tokens', join(s.dir, 'node-tokens.json'), '--listen', '127.0.0.1:0',
    ];
    const empty = await ControlProcess.start(controlArgs(emptyDir), null);
    await new Promise((r) => setTimeout(r, 2000));
    const memoryEmpty = await empty.memory();
    await empty.stop();
    say(`RSS of the control plane with an empty mesh: ${memoryEmpty.rssMiB} MiB`);

    const cpu = (): number => cpuSeconds(cp!.pid);
    const mach = (): MachineCpu => machineCpu([cp!.pid]);
    cp = await ControlProcess.start(controlArgs(s.configDir), o.profile);
    const first = await cp.nextApplied(() => true, 1000);
    lastVersion = first?.version ?? 0;
    say(`control plane (pid ${cp.pid}) serving on port ${cp.port} after ${f1(cp.startMs)} ms`);
    await new Promise((r) => setTimeout(r, 2000));
    const memory0 = await cp.memory();
    say(`RSS with the mesh loaded, no watchers: ${memory0.rssMiB} MiB`);

    // 1. snapshots
    const rounds: SnapshotRound[] = [];
    const cpuSnap0 = cpu();
    const ours0 = process.cpuUsage();
    let served = 0;
    const memoryWith: Record<string, Record<string, number>> = {};
    for (const n of o.concurrency) {
      const reps = n === 1 ? 5 : n <= 10 ? 3 : 2;
      for (let r = 0; r < (o.quick ? Math.min(reps, 2) : reps); r++) {
        const { round, receipts } = await snapshotRound(cp, s, n, 1, false);
        for (const rc of receipts) {
          if (rc.workloads !== o.shape.pods || rc.services !== o.shape.services) throw new Error(`a snapshot came with ${rc.workloads} workloads and ${rc.services} services`);
        }
        served += n;
        rounds.push(round);
        say(`snapshot, ${n} concurrent: p50 ${f1(pct(round.ms, 50))} ms, all ${n} in ${f1(round.allMs)} ms (${receipts[0]!.workloads} workloads, ${receipts[0]!.services} services)`);
        await new Promise((res) => setTimeout(res, 300));
      }
    }
    const cpuSnap = (cpu() - cpuSnap0) / served;
    const ours = process.cpuUsage(ours0);
    const watcherCpuSnap = (ours.user + ours.system) / 1e6 / served;

    // 2. deltas through setObjects, 10 watchers then 50
    const m10 = mach();
    const t10 = now();
    const ten = await snapshotRound(cp, s, 10, 1, true);
    watchers.push(...ten.watchers);
    memoryWith['10'] = await cp.memory();
    say(`RSS with 10 watchers connected: ${memoryWith['10'].rssMiB} MiB`);
    const cpuD0 = cpu();
    const direct10 = await directChanges(cp, mesh, watchers, o.changes, 1);
    const cpuDirect10 = (cpu() - cpuD0) / Math.max(1, o.changes);
    const load10 = otherLoad(m10, mach(), (now() - t10) / 1000);
    const d10 = summary(direct10);
    say(`setObjects → 10 watchers: p50 ${f1((d10.arrivalMs as Dist).p50)} ms, p99 ${f1((d10.arrivalMs as Dist).p99)} ms; setObjects p50 ${f1((d10.setObjectsMs as Dist).p50)} ms (${o.changes} changes)`);

    let d50: Record<string, unknown> | null = null;
    let cpuDirect50: number | null = null;
    let load50: number | null = null;
    if (o.concurrency.includes(50) && o.changes50 > 0) {
      const m50 = mach();
      const t50 = now();
      const more = await snapshotRound(cp, s, 40, 11, true);
      watchers.push(...more.watchers);
      memoryWith['50'] = await cp.memory();
      say(`RSS with 50 watchers connected: ${memoryWith['50'].rssMiB} MiB`);
      const c0 = cpu();
      const direct50 = await directChanges(cp, mesh, watchers, o.changes50, 100_000);
      cpuDirect50 = (cpu() - c0) / o.changes50;
      load50 = otherLoad(m50, mach(), (now() - t50) / 1000);
      d50 = summary(direct50);
      say(`setObjects → 50 watchers: p50 ${f1((d50.arrivalMs as Dist).p50)} ms, p99 ${f1((d50.arrivalMs as Dist).p99)} ms; setObjects p50 ${f1((d50.setObjectsMs as Dist).p50)} ms (${o.changes50} changes)`);
      for (const w of watchers.splice(10)) w.close();
    }

    // 3. deltas through a YAML edit, 10 watchers
    let df: Record<string, unknown> | null = null;
    let cpuFile: number | null = null;
    let loadFile: number | null = null;
    if (o.fileChanges > 0) {
      await syncFiles(cp, mesh, s);
      const mf = mach();
      const tf = now();
      const c0 = cpu();
      const files = await fileChanges(cp, mesh, s, watchers, o.fileChanges);
      cpuFile = (cpu() - c0) / o.fileChanges;
      loadFile = otherLoad(mf, mach(), (now() - tf) / 1000);
      df = summary(files);
      say(`YAML edit → 10 watchers: p50 ${f1((df.arrivalMs as Dist).p50)} ms, p99 ${f1((df.arrivalMs as Dist).p99)} ms; read+parse p50 ${f1((df.readMs as Dist).p50)} ms, setObjects p50 ${f1((df.setObjectsMs as Dist).p50)} ms (${o.fileChanges} changes)`);
    }
    const memoryEnd = await cp.memory();
    say(`RSS at the end (10 watchers): ${memoryEnd.rssMiB} MiB, peak ${memoryEnd.hwmMiB} MiB`);

    const results = {
      bench: 'control plane',
      date: new Date().toISOString(),
      commit,
      quick: o.quick,
      machine: { ...machine, loadavgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
      shape: { ...o.shape, policies: mesh.count('AuthorizationPolicy') + mesh.count('PeerAuthentication'), yamlFiles: mesh.files().size },
      startup: { serveMs: r2(cp.startMs) },
      translation: costs,
      snapshot: {
        rounds: rounds.map((r) => ({ concurrency: r.concurrency, perWatcherMs: dist(r.ms), allMs: r2(r.allMs) })),
        byConcurrency: Object.fromEntries(o.concurrency.map((n) => {
          const rs = rounds.filter((r) => r.concurrency === n);
          return [String(n), { perWatcherMs: dist(rs.flatMap((r) => r.ms)), allMs: dist(rs.map((r) => r.allMs)) }];
        })),
        controlCpuMsPerSnapshot: r2(cpuSnap * 1000),
        /** the bench process (all the watchers: TLS, HTTP/2, decoding) */
        watcherCpuMsPerSnapshot: r2(watcherCpuSnap * 1000),
      },
      deltas: {
        direct10: { ...d10, controlCpuMsPerChange: r2(cpuDirect10 * 1000), otherLoadVcpu: r2(load10) },
        direct50: d50 && { ...d50, controlCpuMsPerChange: r2(cpuDirect50! * 1000), otherLoadVcpu: r2(load50) },
        file10: df && { ...df, controlCpuMsPerChange: r2(cpuFile! * 1000), otherLoadVcpu: r2(loadFile) },
      },
      memory: { emptyMesh: memoryEmpty, idle: memory0, watchers10: memoryWith['10'], watchers50: memoryWith['50'] ?? null, end: memoryEnd },
      runSeconds: r2((now() - started) / 1000),
    };
    await writeFile(o.out, JSON.stringify(results, null, 2) + '\n');
    console.log('\n' + markdown(results));
    say(`results in ${o.out} (${f1(results.runSeconds)} s)`);
  } finally {
    await stopAll();
  }
}

async function gitCommit(): Promise<string | null> {
  try {
    const r = await runCmd('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 5000 });
    if (r.code !== 0) return null;
    const dirty = await runCmd('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 5000 });
    return r.stdout.trim() + (dirty.stdout.trim() ? ' (with uncommitted changes)' : '');
  } catch {
    return null;
  }
}

/** The results as the Markdown tables of bench/control/README.md. */
function markdown(r: any): string {
  const d = (x: Dist | undefined): string => (x ? `${f1(x.p50)} | ${f1(x.p99)} | ${f1(x.max)}` : 'n/a | n/a | n/a');
  const lines: string[] = [];
  lines.push(`ambit control plane bench, ${String(r.date).slice(0, 16).replace('T', ' ')} UTC, commit ${r.commit}${r.quick ? ' (QUICK)' : ''}: ${r.shape.pods} pods, ${r.shape.services} services, ${r.shape.namespaces} namespaces, ${r.shape.nodes} nodes, ${r.shape.policies} policies (${r.shape.yamlFiles} YAML files). Machine: ${r.machine.nproc} CPU(s) ${r.machine.cpuModel}, node ${r.machine.node}, load average ${r.machine.loadavgAtStart[0]} at the start, ${r.machine.loadavgAtEnd[0]} at the end.`);
  lines.push('');
  lines.push('**Full snapshot** (Watch call → snapshot received and decoded, each watcher a new TLS connection):');
  lines.push('');
  lines.push('| concurrent watchers | rounds | per watcher p50 ms | p99 ms | max ms | all received, median ms |');
  lines.push('|---:|---:|---:|---:|---:|---:|');
  for (const [n, v] of Object.entries(r.snapshot.byConcurrency) as [string, { perWatcherMs: Dist; allMs: Dist }][]) {
    lines.push(`| ${n} | ${v.allMs.n} | ${d(v.perWatcherMs)} | ${f1(v.allMs.p50)} |`);
  }
  lines.push('');
  lines.push(`Snapshot: ${(r.translation.snapshotBytes / 1e6).toFixed(2)} MB of MessagePack; serialize ${f1(r.translation.serializeSnapshotMs)} ms, decode ${f1(r.translation.deserializeSnapshotMs)} ms (in one process); control plane CPU ${f1(r.snapshot.controlCpuMsPerSnapshot)} ms per snapshot served; the watchers' CPU (TLS, HTTP/2, decoding, all in the bench process) ${f1(r.snapshot.watcherCpuMsPerSnapshot)} ms per snapshot received.`);
  lines.push('');
  lines.push('**Change → delta at every watcher** (one change at a time; p50/p99/max over every watcher of every change):');
  lines.push('');
  lines.push('| path | watchers | changes | arrival p50 ms | p99 ms | max ms | last watcher p50 / p99 ms | read+parse p50 ms | setObjects p50 / p99 ms | control CPU ms per change | other load vCPU |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  const row = (name: string, w: number, x: any): void => {
    if (!x) return;
    lines.push(`| ${name} | ${w} | ${x.changes} | ${d(x.arrivalMs)} | ${f1(x.lastWatcherMs.p50)} / ${f1(x.lastWatcherMs.p99)} | ${x.readMs.n ? f1(x.readMs.p50) : '—'} | ${f1(x.setObjectsMs.p50)} / ${f1(x.setObjectsMs.p99)} | ${f1(x.controlCpuMsPerChange)} | ${f1(x.otherLoadVcpu)} |`);
  };
  row('setObjects (as an informer)', 10, r.deltas.direct10);
  row('setObjects (as an informer)', 50, r.deltas.direct50);
  row('YAML edit (file source)', 10, r.deltas.file10);
  lines.push('');
  lines.push('By kind of change (setObjects, 10 watchers; p50 / p99 ms): ' + Object.entries(r.deltas.direct10.arrivalMsByKind as Record<string, Dist>).map(([k, v]) => `${k} ${f1(v.p50)} / ${f1(v.p99)}`).join(', ') + '.');
  lines.push('');
  lines.push('**Translation alone** (in the bench process, no server, median):');
  lines.push('');
  lines.push('| | translate ms | diff ms |');
  lines.push('|---|---:|---:|');
  lines.push(`| whole mesh | ${f1(r.translation.translateFullMs)} | — |`);
  for (const [k, v] of Object.entries(r.translation.perChange) as [string, { translateMs: number; diffMs: number }][]) lines.push(`| after ${k} | ${f1(v.translateMs)} | ${f1(v.diffMs)} |`);
  lines.push(`| read and parse all YAML | ${f1(r.translation.readAllYamlMs)} | — |`);
  lines.push('');
  lines.push('**Memory of the control plane process** (VmRSS):');
  lines.push('');
  lines.push('| when | VmRSS MiB | V8 heap used / total MiB | external (buffers) MiB | live heap after a full GC MiB |');
  lines.push('|---|---:|---:|---:|---:|');
  const mrow = (when: string, m: Record<string, number> | null | undefined): void => {
    if (m) lines.push(`| ${when} | ${m.rssMiB} | ${m.heapUsedMiB ?? 'n/a'} / ${m.heapTotalMiB ?? 'n/a'} | ${m.externalMiB ?? 'n/a'} | ${m.liveHeapMiB ?? 'n/a'} |`);
  };
  mrow('empty mesh (the process alone)', r.memory.emptyMesh);
  mrow('mesh loaded, no watchers', r.memory.idle);
  mrow('10 watchers connected', r.memory.watchers10);
  mrow('50 watchers connected', r.memory.watchers50);
  mrow('at the end (10 watchers, after all changes)', r.memory.end);
  lines.push('');
  lines.push(`Peak (VmHWM) over the run: ${r.memory.end.hwmMiB} MiB.`);
  lines.push('');
  lines.push(`Control plane start with this mesh (spawn → serving): ${f1(r.startup.serveMs)} ms. Run time ${f1(r.runSeconds)} s.`);
  return lines.join('\n');
}

main().catch((err: Error) => {
  console.error(`bench:control: FAILED: ${err.stack ?? err.message}`);
  process.exit(1);
});
