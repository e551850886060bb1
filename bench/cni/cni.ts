#!/usr/bin/env node
/**
 * The CNI bench (needs root): what ambit's CNI side costs a pod, measured with the real
 * components on a real local mesh (see bench/cni/README.md).
 *
 *   1. Pod start: per-pod wall time of the CNI ADD a runtime runs, for pods on node-1 of the
 *      mesh, through (a) the node's reference chain alone (loopback, then bridge + host-local
 *      from its conflist without ambit-cni), (b) the full chain with ambit-cni for a pod in a
 *      namespace without the ambient label, (c) the full chain for an ambient pod (ADD
 *      installs the redirect rules and hands the pod to ztunnel). Rounds of one pod of each,
 *      the order rotating; each pod's capture is checked afterwards; DEL is timed too.
 *   2. Label to capture: `ambit local label ns late istio.io/dataplane-mode=ambient` (its
 *      library call) on a running pod, then the label removed, timed until the pod is captured
 *      (redirect rules read back from its netns and ztunnel serving it) or released, and until
 *      the first connection from the pod is carried over HBONE (or no longer is).
 *
 *   npm run bench:cni                       # 100 pods per chain, 20 label rounds (≈ 3–4 min)
 *   node dist/bench/cni/cni.js --pods 10 --label-rounds 3     # a short run
 *
 * Writes bench/cni/results.json. The mesh (name cnibench, state under /run/ambit-cnibench) is
 * always removed at the end, also on failure or Ctrl-C.
 */
import net from 'node:net';
import os from 'node:os';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { stringify } from 'yaml';
import { addPodNetwork, label, netnsPath, nodeFiles, readState, redirections, removePodNetwork, type LocalState, type PodNetworkRef } from '../../cli/local/cluster.js';
import type { NodePlan, PodPlan } from '../../cli/local/topology.js';
import { deleteNetns, listNetns, run } from '../../cli/local/system.js';
import { unchainFromConflist } from '../../cni/install.js';
import type { CniResult, PluginExec } from '../../shared/cni/runtime.js';
import { httpInNetns, socketInNetns } from '../../shared/netns/http.js';
import { defaultRunner, podRulesInstalled } from '../../shared/redirect/apply.js';
import { expectedChainRules, parseIptablesSave, type ChainRule } from '../../shared/redirect/rules.js';
import { isDeepStrictEqual } from 'node:util';
import { readFileSync } from 'node:fs';
import { children, clock, flags, machineCpu, runCmd, sleep } from '../lib/proc.js';
import { pairedDifferences, summarize, type Summary } from './stats.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const CLUSTER_MODULE = join(ROOT, 'dist', 'cli', 'local', 'cluster.js');
const MESH_FILE = join(ROOT, 'bench', 'cni', 'mesh.yaml');
const REFERENCE_PLUGINS = '/usr/lib/cni';
/** The bench's pod netns are `<mesh>-pod-<N>` from here on: `ambit local down` removes them with the mesh. */
const NETNS_BASE = 1000;
const LABEL = 'istio.io/dataplane-mode';
const SERVER_PORT = 9001;
const TRANSITION_TIMEOUT_MS = 20_000;

const o = new Command()
  .name('bench-cni')
  .option('--pods <n>', 'pods per chain in the ADD bench', '100')
  .option('--batch <n>', 'rounds (one pod per chain each) created before they are all deleted again', '25')
  .option('--warmup <n>', 'rounds before the measured ones, not counted', '2')
  .option('--label-rounds <n>', 'label / unlabel rounds in the label bench', '20')
  .option('--name <name>', 'local mesh name', 'cnibench')
  .option('--state-dir <dir>', 'state root of the mesh', '/run/ambit-cnibench')
  .option('--out <file>', 'results file', join(ROOT, 'bench', 'cni', 'results.json'))
  .parse()
  .opts<{ pods: string; batch: string; warmup: string; labelRounds: string; name: string; stateDir: string; out: string }>();

function count(flag: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`bench-cni: --${flag} must be a whole number from ${min} to ${max}, got "${v}"`);
    process.exit(2);
  }
  return n;
}
const PODS = count('pods', o.pods, 1, 1000);
const BATCH = count('batch', o.batch, 1, 50); // 3 pods a round, all on node-1's /24
const WARMUP = count('warmup', o.warmup, 0, 10);
const LABEL_ROUNDS = count('label-rounds', o.labelRounds, 1, 500);
if (!/^[a-z][a-z0-9-]{0,20}$/.test(o.name)) {
  console.error(`bench-cni: --name must be lower-case letters, digits and dashes (at most 21), got "${o.name}"`);
  process.exit(2);
}

const t0Run = Date.now();
const say = (l: string): void => console.log(`[${((Date.now() - t0Run) / 1000).toFixed(1).padStart(6)} s] ${l}`);
/** Wall-clock time in ms with sub-ms precision (comparable with file times and log times). */
const now = (): number => performance.timeOrigin + performance.now();
const round = (x: number | null, d = 1): number | null => (x === null ? null : Math.round(x * 10 ** d) / 10 ** d);

// ---------------------------------------------------------------- mesh up / down

let meshMayExist = false;
let teardownPromise: Promise<void> | null = null;

const cli = (args: string[], timeoutMs: number, detached = false) =>
  runCmd(process.execPath, [CLI, ...args, '--name', o.name, '--state-dir', o.stateDir], { timeoutMs, echo: '  | ', detached });

async function meshDown(): Promise<void> {
  // detached: a second Ctrl-C in the terminal does not kill the clean-up
  const r = await cli(['local', 'down'], 120_000, true);
  if (r.code === 0 && !r.timedOut) return;
  say(`\`ambit local down\` failed (${r.timedOut ? 'timed out' : `exit ${r.code}`}); calling ${CLUSTER_MODULE} directly`);
  const mod = (await import(pathToFileURL(CLUSTER_MODULE).href)) as { down: (root: string, name: string, say: (l: string) => void) => Promise<boolean> };
  await mod.down(o.stateDir, o.name, (l) => console.log(`  | ${l}`));
}

function teardown(): Promise<void> {
  teardownPromise ??= (async () => {
    if (!meshMayExist) return;
    say(`removing mesh "${o.name}" (its netns, the bench's pod netns, processes and state)`);
    try {
      await meshDown();
      meshMayExist = false;
    } catch (err) {
      console.error(`bench-cni: removing the mesh failed: ${(err as Error).message}; run \`node dist/cli/main.js local down --name ${o.name} --state-dir ${o.stateDir}\``);
      process.exitCode = 1;
    }
  })();
  return teardownPromise;
}

async function leftovers(): Promise<boolean> {
  if (await readState(o.stateDir, o.name)) return true;
  const own = new RegExp(`^${o.name}-(fabric|node-\\d+|pod-\\d+)$`);
  return (await listNetns()).some((n) => own.test(n));
}

// ---------------------------------------------------------------- part 1: CNI ADD

type Chain = 'reference' | 'plain' | 'ambient';
const CHAINS: Chain[] = ['reference', 'plain', 'ambient'];
const CHAIN_NAMESPACE: Record<Chain, string> = { reference: 'addb-ref', plain: 'addb-plain', ambient: 'addb-amb' };
const CHAIN_LABEL: Record<Chain, string> = {
  reference: 'reference chain alone (loopback; bridge + host-local)',
  plain: 'full chain, pod not ambient (… + ambit-cni)',
  ambient: 'full chain, ambient pod (… + ambit-cni: rules + ztunnel)',
};

interface BenchPod extends PodNetworkRef {
  chain: Chain;
  round: number;
  warmup: boolean;
}

interface AddSample {
  chain: Chain;
  round: number;
  pod: string;
  netns: string;
  ip: string | null;
  /** wall time of the pod's ADD: loopback network, then the node's conflist */
  ms: number;
  /** each plugin invocation, spawn to exit, as the runtime saw it (bridge's run includes host-local) */
  plugins: Record<string, number>;
  delMs?: number;
  delPlugins?: Record<string, number>;
}

let podSeq = 0;
function benchPod(chain: Chain, roundNo: number, warmup: boolean): BenchPod {
  const seq = ++podSeq;
  const name = `${chain[0]}-${warmup ? 'w' : ''}${String(roundNo).padStart(3, '0')}`;
  return { chain, round: roundNo, warmup, netns: `${o.name}-pod-${NETNS_BASE + seq}`, namespace: CHAIN_NAMESPACE[chain], name, uid: `cnib-${chain}-${warmup ? 'w' : ''}${roundNo}` };
}

/** The Pod objects the node agent judges the bench pods by (scheduled, not yet running: as at CNI ADD in a cluster). */
function podObjects(pods: BenchPod[]): string {
  return pods
    .filter((p) => p.chain !== 'reference') // the reference chain never asks the agent
    .map((p) =>
      stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: p.name, namespace: p.namespace, uid: p.uid, labels: { app: 'cni-bench' } },
        spec: { nodeName: 'node-1', containers: [{ name: 'main', command: ['sleep', 'infinity'] }] },
        status: { phase: 'Pending' },
      }),
    )
    .join('---\n');
}

const plugins = (execs: PluginExec[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const e of execs) out[e.plugin] = (out[e.plugin] ?? 0) + e.ms;
  return out;
};

interface ZtunnelDump {
  capturedPods: { uid: string }[];
}
async function capturedUids(node: NodePlan): Promise<Set<string>> {
  const r = await httpInNetns(netnsPath(node.netns), { host: '127.0.0.1', port: 15000, path: '/config_dump' });
  if (r.status !== 200) throw new Error(`ztunnel ${node.name} /config_dump answered ${r.status}`);
  return new Set((JSON.parse(r.body) as ZtunnelDump).capturedPods.map((p) => p.uid));
}

/**
 * ambit's iptables rules in a pod netns (IPv4), read back with one iptables-save. The agent
 * sets the ip rule and route first and the iptables rules last, in one atomic restore, so a
 * complete set here means capture is on (the full read-back, podRulesInstalled, runs five
 * more commands: too slow to poll with).
 */
async function ourIptablesRules(netns: string): Promise<ChainRule[]> {
  return parseIptablesSave((await defaultRunner('nsenter', [`--net=${netnsPath(netns)}`, 'iptables-save'])).stdout);
}
const CAPTURE_RULES = expectedChainRules({}, 4);

async function ipamReservations(state: LocalState, node: NodePlan): Promise<number> {
  const dir = join(nodeFiles(state.dir, node.name).ipamDir, `ambit-${node.name}`);
  if (!existsSync(dir)) return 0;
  return (await readdir(dir)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).length;
}

async function addBench(state: LocalState): Promise<Record<string, unknown>> {
  const node = state.plan.nodes[0]!;
  const referenceConflist = (text: string): string => unchainFromConflist(text);
  const conflistText = await readFile(nodeFiles(state.dir, node.name).conflist, 'utf8');
  const chainTypes = (JSON.parse(conflistText) as { plugins: { type: string }[] }).plugins.map((p) => p.type);
  if (chainTypes.at(-1) !== 'ambit-cni') throw new Error(`node-1's conflist does not end with ambit-cni: ${chainTypes.join(', ')}`);
  say(`node-1 CNI chain: loopback (own network), then ${chainTypes.join(' → ')} (reference chain: the same without ambit-cni)`);

  const rounds: BenchPod[][] = [];
  for (let r = 1; r <= WARMUP; r++) rounds.push(CHAINS.map((c) => benchPod(c, r, true)));
  for (let r = 1; r <= PODS; r++) rounds.push(CHAINS.map((c) => benchPod(c, r, false)));
  const objectsFile = join(state.dir, 'config', 'zz-cni-bench-pods.yaml');
  await writeFile(objectsFile, podObjects(rounds.flat()));
  say(`${PODS} measured rounds (+${WARMUP} warm-up), one pod per chain each, order rotating; Pod objects in ${objectsFile}`);
  await sleep(1000); // the agents and the control plane re-read their config folder (50 ms debounce)

  const ipamBefore = await ipamReservations(state, node);
  const samples: AddSample[] = [];
  let checked = 0;
  const runBatch = async (batch: BenchPod[][]): Promise<AddSample[]> => {
    const made: { pod: BenchPod; sample: AddSample; result: CniResult }[] = [];
    try {
      for (const rnd of batch) {
        const order = rnd.map((_, k) => rnd[(k + rnd[0]!.round) % rnd.length]!);
        for (const pod of order) {
          if (flags.aborting) throw new Error('interrupted');
          await run('ip', ['netns', 'add', pod.netns]);
          const execs: PluginExec[] = [];
          const t = performance.now();
          const result = await addPodNetwork(state.dir, state.name, node, pod, { onExec: (e) => execs.push(e), ...(pod.chain === 'reference' ? { conflist: referenceConflist } : {}) });
          const ms = performance.now() - t;
          const sample: AddSample = { chain: pod.chain, round: pod.round, pod: `${pod.namespace}/${pod.name}`, netns: pod.netns, ip: result.ips[0]?.address ?? null, ms, plugins: plugins(execs) };
          made.push({ pod, sample, result });
        }
      }
      // Checked after the timed ADDs, so the checks do not load the machine while one runs.
      const annotations = await redirections(state);
      const captured = await capturedUids(node);
      for (const { pod, sample } of made) {
        const ambient = pod.chain === 'ambient';
        // ambient: the full read-back of every rule, ip rule and route; others: none of our iptables rules
        const rules = ambient ? await podRulesInstalled(netnsPath(pod.netns)) : (await ourIptablesRules(pod.netns)).length > 0;
        const problems = [
          sample.ip === null ? 'no IP from the chain' : '',
          (annotations[sample.pod] === 'enabled') !== ambient ? `annotation ${annotations[sample.pod] ?? 'none'}` : '',
          captured.has(pod.uid) !== ambient ? `ztunnel ${captured.has(pod.uid) ? 'serves' : 'does not serve'} it` : '',
          rules !== ambient ? `redirect rules ${rules ? 'installed' : 'missing'}` : '',
        ].filter(Boolean);
        if (problems.length) throw new Error(`pod ${sample.pod} (${pod.chain} chain, ${pod.netns}) after ADD: ${problems.join(', ')}`);
        checked++;
      }
    } finally {
      // DEL (timed) and the netns go, also when the batch failed half-way
      for (const { pod, sample } of made) {
        const execs: PluginExec[] = [];
        const t = performance.now();
        try {
          await removePodNetwork(state.dir, state.name, node, pod, { onExec: (e) => execs.push(e), ...(pod.chain === 'reference' ? { conflist: referenceConflist } : {}) });
          sample.delMs = performance.now() - t;
          sample.delPlugins = plugins(execs);
        } catch (err) {
          if (!flags.aborting) say(`DEL of ${sample.pod} failed: ${(err as Error).message}`);
        }
        await deleteNetns(pod.netns);
      }
    }
    const left = await capturedUids(node);
    const stale = made.filter((m) => left.has(m.pod.uid));
    if (stale.length) throw new Error(`ztunnel still serves ${stale.map((m) => m.sample.pod).join(', ')} after DEL`);
    return made.map((m) => m.sample);
  };

  const warm = rounds.slice(0, WARMUP);
  if (warm.length) {
    const w = await runBatch(warm);
    say(`warm-up: ${w.length} pods added, checked, deleted (${w.map((s) => `${s.chain} ${s.ms.toFixed(0)} ms`).join(', ')})`);
  }
  const measured = rounds.slice(WARMUP);
  for (let b = 0; b < measured.length; b += BATCH) {
    const batch = measured.slice(b, b + BATCH);
    const got = await runBatch(batch);
    samples.push(...got);
    const med = (c: Chain): string => `${summarize(got.filter((s) => s.chain === c).map((s) => s.ms)).p50?.toFixed(0)} ms`;
    say(`rounds ${b + 1}–${b + batch.length}: ${got.length} pods added, checked, deleted; ADD p50 reference ${med('reference')}, plain ${med('plain')}, ambient ${med('ambient')}`);
  }
  const ipamAfter = await ipamReservations(state, node);
  if (ipamAfter !== ipamBefore) throw new Error(`host-local on node-1 holds ${ipamAfter} addresses after the bench, ${ipamBefore} before: DEL did not release them all`);
  await rm(objectsFile, { force: true });

  // Start-up cost alone: the plugin answering VERSION (no agent call), against a Go reference
  // plugin and against Node itself doing nothing, each run as the runtime runs plugins.
  const startup: Record<string, string[]> = {
    'ambit-cni': [join(nodeFiles(state.dir, node.name).binDir, 'ambit-cni')],
    loopback: [join(REFERENCE_PLUGINS, 'loopback')],
    node: [process.execPath, '-e', '0'],
  };
  const version: Record<string, number[]> = { 'ambit-cni': [], loopback: [], node: [] };
  const names = Object.keys(startup);
  for (let i = 0; i < 20; i++) {
    for (const p of names.map((_, k) => names[(k + i) % names.length]!)) {
      const t = performance.now();
      const r = await runCmd('ip', ['netns', 'exec', node.netns, ...startup[p]!], { timeoutMs: 10_000, env: { ...process.env, CNI_COMMAND: 'VERSION' } });
      if (r.code !== 0 || (p !== 'node' && !r.stdout.includes('cniVersion'))) throw new Error(`${p} VERSION failed (exit ${r.code}): ${r.stdout} ${r.stderr}`);
      version[p]!.push(performance.now() - t);
    }
  }

  const of = (c: Chain): AddSample[] => samples.filter((s) => s.chain === c).sort((a, b) => a.round - b.round);
  const ms = (c: Chain): number[] => of(c).map((s) => s.ms);
  const plug = (c: Chain, p: string, del = false): number[] => of(c).map((s) => (del ? s.delPlugins?.[p] : s.plugins[p])).filter((x): x is number => x !== undefined);
  const sum: Record<string, Summary> = {};
  for (const c of CHAINS) {
    sum[`add.${c}`] = summarize(ms(c));
    sum[`del.${c}`] = summarize(of(c).map((s) => s.delMs).filter((x): x is number => x !== undefined));
  }
  const added: Record<string, unknown> = {};
  for (const c of ['plain', 'ambient'] as const) {
    added[c] = {
      // the same round's reference pod: paired, so drift of the machine cancels out
      pairedDifference: summarize(pairedDifferences(ms(c), ms('reference'))),
      differenceOfPercentiles: { p50: sum[`add.${c}`]!.p50! - sum['add.reference']!.p50!, p99: sum[`add.${c}`]!.p99! - sum['add.reference']!.p99! },
      ambitCniInvocation: summarize(plug(c, 'ambit-cni')),
      ambitCniDelInvocation: summarize(plug(c, 'ambit-cni', true)),
    };
  }
  return {
    chain: { loopbackNetwork: ['loopback'], conflist: chainTypes, reference: chainTypes.filter((t) => t !== 'ambit-cni') },
    pods: PODS,
    warmupRounds: WARMUP,
    batch: BATCH,
    checkedPods: checked,
    summary: sum,
    added,
    plugins: Object.fromEntries(CHAINS.map((c) => [c, Object.fromEntries(['loopback', 'bridge', 'ambit-cni'].map((p) => [p, summarize(plug(c, p))]).filter(([, s]) => (s as Summary).n > 0))])),
    version: Object.fromEntries(names.map((p) => [p, summarize(version[p]!)])),
    samples: samples.map((s) => ({ ...s, ms: round(s.ms, 2), delMs: round(s.delMs ?? null, 2), plugins: mapRound(s.plugins), delPlugins: s.delPlugins ? mapRound(s.delPlugins) : null })),
  };
}

const mapRound = (r: Record<string, number>): Record<string, number | null> => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v, 2)]));

// ---------------------------------------------------------------- part 2: label → captured

interface Probe {
  start: number;
  end: number;
  ok: boolean;
  /** how node-1's ztunnel carried it: HBONE, TCP, or not at all (null) */
  via: 'HBONE' | 'TCP' | null;
  error?: string;
}

/** One connection from the pod's netns to the server: 1 KiB request, 1 KiB answer, then ztunnel's /connections asked while it is open. */
async function probe(pod: PodPlan, node: NodePlan, serverIp: string): Promise<Probe> {
  const start = now();
  const sock = socketInNetns(netnsPath(pod.netns));
  try {
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error('no answer within 3 s')), 3000);
      let got = 0;
      sock.once('error', (e) => {
        clearTimeout(timer);
        rej(e);
      });
      sock.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= 1024) {
          clearTimeout(timer);
          res();
        }
      });
      sock.connect(SERVER_PORT, serverIp, () => {
        sock.setNoDelay(true);
        sock.write(Buffer.alloc(1024, 0x71));
      });
    });
    const port = sock.localPort;
    const r = await httpInNetns(netnsPath(node.netns), { host: '127.0.0.1', port: 15000, path: '/connections' });
    const mine = (JSON.parse(r.body) as { direction: string; src: string; protocol: 'HBONE' | 'TCP' }[]).find((c) => c.direction === 'outbound' && c.src.endsWith(`:${port}`) && c.src.includes(pod.ip));
    return { start, end: now(), ok: true, via: mine ? mine.protocol : null };
  } catch (err) {
    return { start, end: now(), ok: false, via: null, error: (err as Error).message };
  } finally {
    sock.destroy();
  }
}

interface FirstTrue {
  /** when the first check that saw it ended */
  at: number;
  /** when that check started (the state was reached at most this long before `at`) */
  checkStarted: number;
  checks: number;
}

async function firstTrue(check: () => Promise<boolean>, pauseMs: number, deadline: number, what: string): Promise<FirstTrue> {
  let checks = 0;
  let last = '';
  while (now() < deadline && !flags.aborting) {
    const s = now();
    checks++;
    try {
      if (await check()) return { at: now(), checkStarted: s, checks };
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(pauseMs);
  }
  throw new Error(`${what}: not seen within ${TRANSITION_TIMEOUT_MS} ms${last ? ` (${last})` : ''}`);
}

interface Transition {
  kind: 'enroll' | 'unenroll';
  round: number;
  /** all times in ms from the config change (the `late` Namespace object written) */
  rules: number;
  ztunnel: number;
  captured: number;
  annotation: number;
  agentLog: number | null;
  connection: number;
  /** from the label call (what `ambit local label` costs after its process started) */
  fromCall: { changeWritten: number; captured: number; connection: number; labelReturned: number };
  /** poll resolution: how long the checks that first saw the state took */
  checkMs: { rules: number; ztunnel: number; connection: number };
  probes: number;
  probeFailures: number;
  /** failed probe connections: when they started (ms from the change) and why */
  failedProbes: { at: number; error: string }[];
}

async function agentLogTime(logFile: string, msg: string, pod: string, after: number): Promise<number | null> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  let found: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.includes(msg) || !line.includes(pod)) continue;
    try {
      const v = JSON.parse(line) as { msg?: string; pod?: string; time?: string | number };
      const t = typeof v.time === 'number' ? v.time : Date.parse(String(v.time));
      if (v.msg === msg && v.pod === pod && t >= after - 1) found ??= t;
    } catch {
      /* not a log record */
    }
  }
  return found;
}

async function transition(state: LocalState, kind: 'enroll' | 'unenroll', roundNo: number): Promise<Transition> {
  const node = state.plan.nodes[0]!;
  const pod = state.plan.pods.find((p) => p.key === 'late/client')!;
  const server = state.plan.pods.find((p) => p.key === 'cnib/server')!;
  const enroll = kind === 'enroll';
  const start = now();
  const deadline = start + TRANSITION_TIMEOUT_MS;
  let probes = 0;
  const failed: Probe[] = [];
  const rulesP = firstTrue(async () => {
    const rules = await ourIptablesRules(pod.netns);
    return enroll ? isDeepStrictEqual(rules, CAPTURE_RULES) : rules.every((r) => r.table !== 'nat');
  }, 5, deadline, `${kind}: redirect rules`);
  const ztunnelP = firstTrue(async () => (await capturedUids(node)).has(pod.uid) === enroll, 5, deadline, `${kind}: ztunnel`);
  const annotationP = firstTrue(async () => ((await redirections(state))[pod.key] === 'enabled') === enroll, 5, deadline, `${kind}: annotation`);
  const connectionP = (async (): Promise<Probe> => {
    while (now() < deadline && !flags.aborting) {
      const p = await probe(pod, node, server.ip);
      probes++;
      if (!p.ok) failed.push(p);
      else if (enroll ? p.via === 'HBONE' : p.via === null) return p;
      await sleep(5);
    }
    throw new Error(`${kind}: no connection ${enroll ? 'carried over HBONE' : 'outside ztunnel'} within ${TRANSITION_TIMEOUT_MS} ms`);
  })();
  // every observer is running before the label changes
  await sleep(20);
  const callAt = now();
  const labelReturned = label({ stateRoot: o.stateDir, name: o.name, kind: 'namespace', ref: 'late', changes: [enroll ? `${LABEL}=ambient` : `${LABEL}-`], say: () => undefined }).then(now);
  const [rules, ztunnel, annotation, connection, returned] = await Promise.all([rulesP, ztunnelP, annotationP, connectionP, labelReturned]);
  if (enroll && !(await podRulesInstalled(netnsPath(pod.netns)))) throw new Error('enroll: the full read-back of the redirect rules (iptables, ip rule, route) differs from the expected set');
  // the Namespace change is written to a temporary file that is renamed into place: its mtime is the change
  const changed = (await stat(join(state.dir, 'config', 'cluster.yaml'))).mtimeMs;
  if (changed < callAt) throw new Error(`${kind}: the config was not rewritten by the label call`);
  const agentAt = await agentLogTime(join(state.dir, 'logs', `cni-agent-${node.name}.log`), enroll ? 'pod enrolled' : 'pod left the mesh', pod.key, changed);
  const captured = Math.max(rules.at, ztunnel.at);
  return {
    kind,
    round: roundNo,
    rules: rules.at - changed,
    ztunnel: ztunnel.at - changed,
    captured: captured - changed,
    annotation: annotation.at - changed,
    agentLog: agentAt === null ? null : agentAt - changed,
    connection: connection.start - changed,
    fromCall: { changeWritten: changed - callAt, captured: captured - callAt, connection: connection.start - callAt, labelReturned: returned - callAt },
    checkMs: { rules: rules.at - rules.checkStarted, ztunnel: ztunnel.at - ztunnel.checkStarted, connection: connection.end - connection.start },
    probes,
    probeFailures: failed.length,
    failedProbes: failed.map((p) => ({ at: p.start - changed, error: p.error ?? '' })),
  };
}

async function labelBench(state: LocalState): Promise<Record<string, unknown>> {
  const node = state.plan.nodes[0]!;
  const pod = state.plan.pods.find((p) => p.key === 'late/client')!;
  const server = state.plan.pods.find((p) => p.key === 'cnib/server')!;
  const before = await probe(pod, node, server.ip);
  const capturedNow = (await capturedUids(node)).has(pod.uid);
  if (!before.ok || before.via !== null || capturedNow) throw new Error(`late/client should start outside the mesh: probe ${before.ok ? `carried by ${before.via ?? 'nobody'}` : `failed (${before.error})`}, ztunnel ${capturedNow ? 'serves it' : 'does not serve it'}`);
  say(`label bench: late/client (${pod.ip}, node-1) → cnib/server (${server.ip}:${SERVER_PORT}, node-2, ambient); ${LABEL_ROUNDS} rounds of label + unlabel`);
  const out: Transition[] = [];
  for (let r = 1; r <= LABEL_ROUNDS; r++) {
    for (const kind of ['enroll', 'unenroll'] as const) {
      if (flags.aborting) throw new Error('interrupted');
      const t = await transition(state, kind, r);
      out.push(t);
      await sleep(300);
    }
    if (r === 1 || r % 5 === 0 || r === LABEL_ROUNDS) {
      const last = out.slice(-2);
      say(`  round ${r}: enroll captured ${last[0]!.captured.toFixed(0)} ms, first HBONE connection ${last[0]!.connection.toFixed(0)} ms; release ${last[1]!.captured.toFixed(0)} ms (from the config change)`);
    }
  }
  const pick = (kind: Transition['kind'], f: (t: Transition) => number | null): Summary => summarize(out.filter((t) => t.kind === kind).map(f).filter((x): x is number => x !== null));
  const summary: Record<string, Record<string, Summary>> = {};
  for (const kind of ['enroll', 'unenroll'] as const) {
    summary[kind] = {
      captured: pick(kind, (t) => t.captured),
      rules: pick(kind, (t) => t.rules),
      ztunnel: pick(kind, (t) => t.ztunnel),
      annotation: pick(kind, (t) => t.annotation),
      agentLog: pick(kind, (t) => t.agentLog),
      connection: pick(kind, (t) => t.connection),
      fromCallCaptured: pick(kind, (t) => t.fromCall.captured),
      fromCallConnection: pick(kind, (t) => t.fromCall.connection),
      fromCallChangeWritten: pick(kind, (t) => t.fromCall.changeWritten),
      labelReturned: pick(kind, (t) => t.fromCall.labelReturned),
      rulesCheckMs: pick(kind, (t) => t.checkMs.rules),
      ztunnelCheckMs: pick(kind, (t) => t.checkMs.ztunnel),
      probeMs: pick(kind, (t) => t.checkMs.connection),
    };
  }
  // Where failed probe connections fall: before the rules were seen, between the rules and ztunnel serving the pod, after.
  const failures: Record<string, Record<string, number>> = {};
  for (const t of out) {
    for (const p of t.failedProbes) {
      const phase = p.at < t.rules - t.checkMs.rules ? 'before the rules were seen' : p.at <= t.ztunnel ? 'between the rules and ztunnel serving the pod' : 'after ztunnel served the pod';
      const key = `${t.kind}: ${phase}: ${p.error}`;
      failures[t.kind] ??= {};
      failures[t.kind]![key] = (failures[t.kind]![key] ?? 0) + 1;
    }
  }
  // How long new connections were refused in a transition: first to last failed probe (a lower bound of the window).
  const refusedSpan = (kind: Transition['kind']): Summary =>
    summarize(out.filter((t) => t.kind === kind && t.failedProbes.length > 0).map((t) => t.failedProbes.at(-1)!.at - t.failedProbes[0]!.at));
  const transitionsWithFailures = { enroll: out.filter((t) => t.kind === 'enroll' && t.probeFailures > 0).length, unenroll: out.filter((t) => t.kind === 'unenroll' && t.probeFailures > 0).length };
  const r2 = (t: Transition): Transition => JSON.parse(JSON.stringify(t, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 10) / 10 : v))) as Transition;
  return { rounds: LABEL_ROUNDS, probeFailures: out.reduce((a, t) => a + t.probeFailures, 0), probes: out.reduce((a, t) => a + t.probes, 0), failures, transitionsWithFailures, refusedSpan: { enroll: refusedSpan('enroll'), unenroll: refusedSpan('unenroll') }, summary, samples: out.map(r2) };
}

// ---------------------------------------------------------------- report

/** CPU seconds of the mesh's processes and the children they waited for (the agent's iptables, …). */
function meshCpuSeconds(state: LocalState): number {
  let total = 0;
  for (const p of state.processes) {
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / clock.ticks;
    } catch {
      /* exited */
    }
  }
  return total;
}

/** Measures how busy the machine was with other work (not this bench, not its mesh) while `fn` ran, in vCPU. */
async function withOtherLoad<T>(state: LocalState, fn: () => Promise<T>): Promise<{ value: T; otherVcpu: number; seconds: number }> {
  const a = machineCpu([]);
  const ma = meshCpuSeconds(state);
  const t = Date.now();
  const value = await fn();
  const b = machineCpu([]);
  const seconds = (Date.now() - t) / 1000;
  const other = Math.max(0, b.busy - a.busy - (b.ours - a.ours) - (meshCpuSeconds(state) - ma) - (b.softirq - a.softirq)) / seconds;
  return { value, otherVcpu: Math.round(other * 100) / 100, seconds: Math.round(seconds) };
}

async function machine(): Promise<Record<string, unknown>> {
  const model = /^model name\s*:\s*(.*)$/m.exec(await readFile('/proc/cpuinfo', 'utf8').catch(() => ''))?.[1]?.trim() ?? 'unknown';
  return { nproc: os.availableParallelism(), cpuModel: model, kernel: os.release(), node: process.version, memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10, loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100) };
}

async function gitCommit(): Promise<string | null> {
  const r = await runCmd('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeoutMs: 5000 }).catch(() => null);
  if (!r || r.code !== 0) return null;
  const dirty = await runCmd('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 5000 });
  return r.stdout.trim() + (dirty.stdout.trim() ? ' (with uncommitted changes)' : '');
}

const f = (x: number | null | undefined, d = 1): string => (x === null || x === undefined ? '—' : x.toFixed(d));
const signed = (x: number | null | undefined, d = 1): string => (x === null || x === undefined ? '—' : `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(d)}`);
const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;

function report(add: Record<string, unknown>, lab: Record<string, unknown>, header: string): string {
  const sum = add.summary as Record<string, Summary>;
  const added = add.added as Record<string, { pairedDifference: Summary; differenceOfPercentiles: { p50: number; p99: number }; ambitCniInvocation: Summary; ambitCniDelInvocation: Summary }>;
  const plug = add.plugins as Record<Chain, Record<string, Summary>>;
  const version = add.version as Record<string, Summary>;
  const lines = [header, ''];
  lines.push(`**Pod start: CNI ADD per pod** (ms, ${add.pods as number} pods per chain on node-1; loopback network + the node's conflist, as \`ambit local\` runs them; every pod's capture checked afterwards):`, '');
  lines.push(row(['chain', 'p50', 'p90', 'p99', 'max', 'DEL p50', 'DEL p99']), row(['---', '---:', '---:', '---:', '---:', '---:', '---:']));
  for (const c of CHAINS) lines.push(row([CHAIN_LABEL[c], f(sum[`add.${c}`]!.p50), f(sum[`add.${c}`]!.p90), f(sum[`add.${c}`]!.p99), f(sum[`add.${c}`]!.max), f(sum[`del.${c}`]!.p50), f(sum[`del.${c}`]!.p99)]));
  lines.push('', '**What ambit-cni adds to a pod\'s start** (ms):', '');
  lines.push(row(['', 'p50', 'p99']), row(['---', '---:', '---:']));
  for (const c of ['ambient', 'plain'] as const) {
    const a = added[c]!;
    const who = c === 'ambient' ? 'ambient pod' : 'pod not ambient';
    lines.push(row([`${who}: full chain − reference chain, per round (paired)`, signed(a.pairedDifference.p50), signed(a.pairedDifference.p99)]));
    lines.push(row([`${who}: p50/p99 of the full chain − p50/p99 of the reference chain`, signed(a.differenceOfPercentiles.p50), signed(a.differenceOfPercentiles.p99)]));
    lines.push(row([`${who}: the ambit-cni invocation itself (spawn to exit)`, f(a.ambitCniInvocation.p50), f(a.ambitCniInvocation.p99)]));
  }
  lines.push(row(['ambit-cni answering VERSION (start-up alone, no agent call)', f(version['ambit-cni']!.p50), f(version['ambit-cni']!.p99)]));
  lines.push(row(['for comparison: the Go `loopback` plugin answering VERSION', f(version.loopback!.p50), f(version.loopback!.p99)]));
  lines.push(row(['for comparison: `node -e 0` (Node starting and exiting)', f(version.node!.p50), f(version.node!.p99)]));
  lines.push('', 'Per plugin invocation (p50 ms; bridge includes the host-local it runs): ' + CHAINS.map((c) => `${c}: ${Object.entries(plug[c]).map(([p, s]) => `${p} ${f(s.p50)}`).join(', ')}`).join('; ') + '.');
  const ls = lab.summary as Record<'enroll' | 'unenroll', Record<string, Summary>>;
  lines.push('', `**Label to capture** (ms, ${lab.rounds as number} rounds; pod late/client running on node-1; from the moment the Namespace change is written):`, '');
  lines.push(row(['', 'enroll p50', 'enroll p99', 'release p50', 'release p99']), row(['---', '---:', '---:', '---:', '---:']));
  const lrow = (name: string, k: string): void => {
    lines.push(row([name, f(ls.enroll[k]!.p50), f(ls.enroll[k]!.p99), f(ls.unenroll[k]!.p50), f(ls.unenroll[k]!.p99)]));
  };
  lrow('**captured / released**: redirect rules read back from the pod netns AND ztunnel serving / no longer serving it', 'captured');
  lrow('… redirect rules in place / capture rules gone (read back)', 'rules');
  lrow('… ztunnel lists / no longer lists the pod (`/config_dump`)', 'ztunnel');
  lrow('… annotation `ambient.istio.io/redirection` enabled / removed', 'annotation');
  lrow('… the node agent\'s log line (ztunnel has acknowledged)', 'agentLog');
  lrow('first new connection from the pod carried over HBONE / not through ztunnel', 'connection');
  lrow('from the label call: captured / released', 'fromCallCaptured');
  lrow('from the label call: the change written', 'fromCallChangeWritten');
  lrow('from the label call: `label` returned', 'labelReturned');
  lines.push('', `Poll resolution (p50 ms of the check that first saw the state): rules ${f(ls.enroll.rulesCheckMs!.p50)}, ztunnel ${f(ls.enroll.ztunnelCheckMs!.p50)}, probe connection ${f(ls.enroll.probeMs!.p50)}. Probe connections: ${lab.probes as number}, failed: ${lab.probeFailures as number}.`);
  const failures = lab.failures as Record<string, Record<string, number>>;
  for (const [, byKey] of Object.entries(failures)) for (const [k, n] of Object.entries(byKey)) lines.push(`- failed probes, ${k}: ${n}`);
  const tw = lab.transitionsWithFailures as Record<string, number>;
  const span = lab.refusedSpan as Record<string, Summary>;
  for (const kind of ['enroll', 'unenroll'] as const) {
    if (tw[kind]) lines.push(`- ${kind}s with failed probes: ${tw[kind]} of ${lab.rounds as number}; first to last failed probe start: p50 ${f(span[kind]!.p50)} ms, max ${f(span[kind]!.max)} ms`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the CNI bench needs root (network namespaces): run it as root');
  if (!existsSync(join(REFERENCE_PLUGINS, 'bridge'))) throw new Error(`no reference CNI plugins in ${REFERENCE_PLUGINS}: run \`apt-get install -y containernetworking-plugins\``);
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.json\` first`);
  const mach = await machine();
  say(`machine: ${mach.nproc as number} CPU(s) ${mach.cpuModel as string}, load average ${(mach.loadavgAtStart as number[]).join(' ')}`);
  if (await leftovers()) {
    say(`a mesh named "${o.name}" is left over from an earlier run: removing it`);
    meshMayExist = true;
    await teardown();
    teardownPromise = null;
    if (meshMayExist) throw new Error(`could not remove the leftover mesh "${o.name}"`);
  }
  say(`bringing up mesh "${o.name}" from ${MESH_FILE}`);
  meshMayExist = true;
  const up = await cli(['local', 'up', '-f', MESH_FILE, '--nodes', '2'], 180_000);
  if (flags.aborting) return;
  if (up.code !== 0 || up.timedOut) throw new Error(`\`ambit local up\` ${up.timedOut ? 'did not finish within 180 s' : `failed (exit ${up.code})`}; see its output above`);
  const state = await readState(o.stateDir, o.name);
  if (!state) throw new Error('the mesh is up but its state is missing');

  const addRun = await withOtherLoad(state, () => addBench(state));
  const add = { ...addRun.value, seconds: addRun.seconds, otherLoadVcpu: addRun.otherVcpu };
  say(`ADD bench done in ${addRun.seconds} s; other work on the machine meanwhile: ${addRun.otherVcpu} vCPU`);
  const labRun = await withOtherLoad(state, () => labelBench(state));
  const lab = { ...labRun.value, seconds: labRun.seconds, otherLoadVcpu: labRun.otherVcpu };
  say(`label bench done in ${labRun.seconds} s; other work on the machine meanwhile: ${labRun.otherVcpu} vCPU`);

  const commit = await gitCommit();
  const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const loadEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const header = `ambit CNI bench, ${when} UTC, commit ${commit ?? 'unknown'}. Machine: ${mach.nproc as number} CPU(s) ${mach.cpuModel as string}, ${mach.memoryGiB as number} GiB, kernel ${mach.kernel as string}, node ${mach.node as string}; load average ${(mach.loadavgAtStart as number[])[0]} at the start, ${loadEnd[0]} at the end; CPU used by other work on the machine (not this bench, not its mesh): ${addRun.otherVcpu} vCPU during the ADD bench, ${labRun.otherVcpu} vCPU during the label bench.`;
  const text = report(add, lab, header);
  console.log(`\n${text}\n`);
  await writeFile(o.out, JSON.stringify({ date: new Date().toISOString(), commit, machine: { ...mach, loadavgAtEnd: loadEnd }, seconds: Math.round((Date.now() - t0Run) / 1000), add, label: lab, report: text }, null, 2) + '\n');
  say(`results: ${o.out}`);
}

let interrupts = 0;
function onSignal(sig: NodeJS.Signals): void {
  if (++interrupts > 1) {
    console.error(`\nbench-cni: interrupted again; if anything is left, run \`node dist/cli/main.js local down --name ${o.name} --state-dir ${o.stateDir}\``);
    process.exit(130);
  }
  flags.aborting = true;
  console.error(`\nbench-cni: ${sig}: removing the mesh`);
  for (const c of children) if (!c.spawnargs.includes('down')) c.kill('SIGKILL');
  void teardown().then(() => process.exit(130));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

main()
  .catch((err: Error) => {
    console.error(`\nbench-cni: FAILED: ${err.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await teardown();
    say(`done in ${((Date.now() - t0Run) / 1000).toFixed(0)} s${process.exitCode ? ' (FAILED: see above)' : ''}`);
  });
