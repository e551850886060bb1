import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { readObjects, type KubeObject } from '../../shared/config/objects.js';
import { readRedirections } from '../../shared/config/redirection-files.js';
import { wantsAmbient } from '../../cni/agent.js';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { checkRedirectTools } from '../../shared/redirect/apply.js';
import { cniAdd, cniDel, type Attachment, type CniResult, type RuntimeOptions } from '../../shared/cni/runtime.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { CONTROL_ADDRESS, CONTROL_PORT, DASHBOARD_PORT, hostsFile, planMesh, type MeshPlan, type NodePlan, type PodPlan } from './topology.js';
import { ensureWaypointTokens, ownedBy, reconcileWaypoints } from './waypoints.js';
import { isWaypointGateway } from '../../shared/config/waypoint-binding.js';
import { ConfigError } from '../../shared/config/objects.js';
import { ZTUNNEL_NODE_FLAGS } from '../../shared/node-flags.js';
import { alive, deleteNetns, ipBatch, listNetns, run, spawnInNetns, stopGroup, waitFor } from './system.js';
import type { UpProgress } from './progress.js';

/** A process of the mesh; daemons keep how they were started so they can be restarted. */
export interface MeshProcess {
  /** `draining`: a ztunnel that was replaced and lets its open connections finish */
  role: 'control' | 'ztunnel' | 'agent' | 'pod' | 'draining';
  name: string;
  pid: number;
  log: string;
  netns?: string;
  argv?: string[];
}

/** What `local up` made, kept on disk so `status`, `exec` and `down` find it. */
export interface LocalState {
  name: string;
  dir: string;
  createdAt: string;
  plan: Omit<MeshPlan, 'objects'>;
  netns: string[];
  hostsDirs: string[];
  processes: MeshProcess[];
  ready: boolean;
}

export interface UpOptions {
  file: string;
  nodes: number;
  name: string;
  stateRoot: string;
  /** progress lines */
  say: (line: string) => void;
  /** counts and what is being waited for, for a progress display */
  progress?: (p: UpProgress) => void;
  certTtlSeconds?: number;
}

type Report = (p: UpProgress) => void;

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ZTUNNEL_MAIN = join(DIST, 'ztunnel', 'main.js');
const CONTROL_MAIN = join(DIST, 'control', 'main.js');
const AGENT_MAIN = join(DIST, 'cni', 'main.js');
const WAYPOINT_MAIN = join(DIST, 'waypoint', 'main.js');

/** How long a deleted pod's processes get after SIGTERM before SIGKILL (as in a cluster). */
const POD_GRACE_MS = 30_000;

/** Adds the pods and Services that run waypoint Gateways (and drops those of Gateways gone). */
function withWaypoints(objects: KubeObject[], dir: string): KubeObject[] {
  const r = reconcileWaypoints(objects, { dir, controlAddress: CONTROL_ADDRESS, nodePath: process.execPath, waypointMain: WAYPOINT_MAIN });
  if (r.conflicts.length > 0) throw new ConfigError(r.conflicts.join('; '));
  return r.objects;
}
/** Debian's containernetworking-plugins */
const SYSTEM_CNI_BIN = '/usr/lib/cni';

/** Files of one node: its CNI configuration and binaries, the agent's state, the sockets. */
export function nodeFiles(dir: string, node: string) {
  const base = join(dir, 'nodes', node);
  return {
    base,
    confDir: join(base, 'net.d'),
    conflist: join(base, 'net.d', '10-ambit.conflist'),
    loopback: join(base, 'net.d', '99-loopback.conf'),
    binDir: join(base, 'bin'),
    ipamDir: join(base, 'ipam'),
    agentState: join(base, 'agent'),
    cniSocket: join(base, 'cni.sock'),
    ztunnelSocket: join(base, 'ztunnel.sock'),
    /** the agent's redirection annotations (the control plane reads every node's: --redirection-dir) */
    annotations: join(redirectionDir(dir), `${node}.json`),
  };
}

/** The node agents' redirection annotation files, one per node. */
export function redirectionDir(dir: string): string {
  return join(dir, 'redirection');
}

/** Where a mesh's state lives. */
export function stateDir(root: string, name: string): string {
  return join(root, name);
}

/** A missing prerequisite, said in one sentence. */
export class PrerequisiteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PrerequisiteError';
  }
}

/** Checks root and the system tools local mode uses; throws one clear sentence. */
export async function checkPrerequisites(): Promise<void> {
  if (process.platform !== 'linux') throw new PrerequisiteError('ambit local needs Linux (network namespaces).');
  if (process.getuid?.() !== 0) throw new PrerequisiteError('ambit local needs root to create network namespaces: run it as root (e.g. with sudo).');
  try {
    await checkRedirectTools();
  } catch (err) {
    throw new PrerequisiteError((err as Error).message);
  }
}

export async function readState(root: string, name: string): Promise<LocalState | null> {
  const file = join(stateDir(root, name), 'state.json');
  if (!existsSync(file)) return null;
  return JSON.parse(await readFile(file, 'utf8')) as LocalState;
}

async function writeState(s: LocalState): Promise<void> {
  const tmp = join(s.dir, 'state.json.tmp');
  await writeFile(tmp, JSON.stringify(s, null, 2));
  await rename(tmp, join(s.dir, 'state.json'));
}

async function writeConfig(dir: string, objects: KubeObject[]): Promise<void> {
  const text = objects.map((o) => {
    const { source: _source, ...rest } = o;
    return stringify(rest);
  }).join('---\n');
  const tmp = join(dir, 'config', '.cluster.yaml.tmp');
  await writeFile(tmp, text);
  await rename(tmp, join(dir, 'config', 'cluster.yaml'));
}

/** Path of a named network namespace. */
export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

/** Brings up a local mesh; on any failure removes everything it made and rethrows. */
export async function up(o: UpOptions): Promise<LocalState> {
  await checkPrerequisites();
  const existing = await readState(o.stateRoot, o.name);
  if (existing) throw new Error(`a local mesh named "${o.name}" is already up (${existing.dir}); run \`ambit local down${o.name === 'ambit' ? '' : ` --name ${o.name}`}\` first`);
  const objects = withWaypoints(await readObjects(o.file), stateDir(o.stateRoot, o.name));
  const plan = planMesh(o.name, o.nodes, objects, (obj) => dirname(resolve((obj.source ?? o.file).replace(/ \(document \d+\)$/, ''))));
  const taken = new Set(await listNetns());
  const clash = [plan.fabric.netns, ...plan.nodes.map((n) => n.netns), ...plan.pods.map((p) => p.netns)].find((n) => taken.has(n));
  if (clash) throw new Error(`network namespace ${clash} already exists; run \`ambit local down --name ${o.name}\` or choose another --name`);

  const dir = stateDir(o.stateRoot, o.name);
  await mkdir(join(dir, 'config'), { recursive: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  await mkdir(join(dir, 'ca'), { recursive: true, mode: 0o700 });
  const { objects: _objects, ...planView } = plan;
  const state: LocalState = { name: o.name, dir, createdAt: new Date().toISOString(), plan: planView, netns: [], hostsDirs: [], processes: [], ready: false };
  await writeState(state);
  const report: Report = o.progress ?? (() => undefined);
  const count = (total: number) => ({ done: 0, total });
  const nodes = plan.nodes.length;
  const ambient = plan.pods.filter((p) => p.ambient);
  report({
    nodes: count(nodes), ztunnels: count(nodes), agents: count(nodes), synced: count(nodes),
    pods: count(plan.pods.length), running: count(plan.pods.length), captured: count(ambient.length),
    certificates: count(new Set(ambient.map((p) => `${p.node} ${p.namespace}/${p.serviceAccount}`)).size),
    activity: `creating ${nodes} node(s)`,
  });
  try {
    await buildFabric(state, plan, o.say, report);
    const ca = await CertificateAuthority.generate({ commonName: `ambit local root (${o.name})` });
    await writeFile(join(dir, 'ca', 'root-cert.pem'), ca.certPem);
    await writeFile(join(dir, 'ca', 'root-key.pem'), ca.keyPem(), { mode: 0o600 });
    // roots trusted beside the signer's: empty until `ambit local rotate-ca` adds one
    await writeFile(join(dir, 'ca', 'trusted-roots.pem'), '');
    const tokens: Record<string, string> = {};
    for (const n of plan.nodes) {
      const t = randomBytes(24).toString('hex');
      tokens[t] = n.name;
      await writeFile(join(dir, 'ca', `${n.name}.token`), t, { mode: 0o600 });
    }
    await writeFile(join(dir, 'ca', 'node-tokens.json'), JSON.stringify(tokens), { mode: 0o600 });
    await ensureWaypointTokens(dir, plan.objects);
    await writeConfig(dir, plan.objects);
    report({ activity: 'starting the control plane' });
    await startControl(state, plan, o);
    report({ control: true });
    await startZtunnels(state, plan, o.say, report);
    await startAgents(state, plan, o.say, report);
    for (const [i, pod] of plan.pods.entries()) {
      report({ activity: `creating pod ${pod.key} through the CNI chain` });
      await createPod(state, plan, pod);
      const r = await redirections(state);
      report({ pods: { done: i + 1, total: plan.pods.length }, captured: { done: ambient.filter((p) => r[p.key] === 'enabled').length, total: ambient.length } });
    }
    const captured = Object.values(await redirections(state)).filter((v) => v === 'enabled').length;
    o.say(`pods: ${plan.pods.length} created through the CNI chain, ${captured} captured by ztunnel`);
    for (const pod of plan.pods) startPod(state, pod);
    await writeState(state);
    const running = plan.objects.map((obj) => (obj.kind === 'Pod' ? { ...obj, status: { ...obj.status, phase: 'Running' } } : obj));
    await writeConfig(dir, running);
    let ready = readiness(state, plan, new Map());
    await waitForConfig(plan, plan.pods.length, (dumps) => report((ready = readiness(state, plan, dumps))));
    await waitForProtocols(state, running);
    o.say(`ready: ${ready.running!.done}/${plan.pods.length} pods running and known to every ztunnel; certificates held for ${ready.certificates!.done}/${ready.certificates!.total} pod identities`);
    state.ready = true;
    await writeState(state);
    o.say(`mesh "${o.name}" is up`);
    return state;
  } catch (err) {
    o.say(`bringing the mesh up failed: ${(err as Error).message}`);
    for (const p of state.processes.filter((x) => x.role !== 'pod')) {
      const tail = (await readFile(p.log, 'utf8').catch(() => '')).trimEnd().split('\n').slice(-8);
      if (tail.length && tail[0] !== '') o.say(`last lines of ${p.role} ${p.name} log:\n  ${tail.join('\n  ')}`);
    }
    o.say('removing what was made');
    await down(o.stateRoot, o.name, () => undefined).catch(() => undefined);
    throw err;
  }
}

async function buildFabric(state: LocalState, plan: MeshPlan, say: (l: string) => void, report: Report): Promise<void> {
  const f = plan.fabric;
  await run('ip', ['netns', 'add', f.netns]);
  state.netns.push(f.netns);
  await writeState(state);
  await ipBatch(f.netns, [
    'link set lo up',
    `link add ${f.bridge} type bridge`,
    `addr add ${f.ip}/24 dev ${f.bridge}`,
    `link set ${f.bridge} up`,
  ]);
  for (const n of plan.nodes) {
    await run('ip', ['netns', 'add', n.netns]);
    state.netns.push(n.netns);
    await writeState(state);
    await ipBatch(f.netns, [`link add ${n.fabricLink} type veth peer name eth0 netns ${n.netns}`, `link set ${n.fabricLink} master ${f.bridge}`, `link set ${n.fabricLink} up`]);
    // the pod bridge (cni0) is made by the CNI bridge plugin when the first pod arrives
    await ipBatch(n.netns, [
      'link set lo up',
      `addr add ${n.ip}/24 dev eth0`,
      'link set eth0 up',
      ...plan.nodes.filter((m) => m !== n).map((m) => `route add ${m.podCidr} via ${m.ip}`),
    ]);
    await writeNodeCniConfig(state.dir, n);
    await run('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    report({ nodes: { done: plan.nodes.indexOf(n) + 1, total: plan.nodes.length } });
  }
  await ipBatch(f.netns, plan.nodes.map((n) => `route add ${n.podCidr} via ${n.ip}`));
  say(`nodes: ${plan.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`);
}

async function startControl(state: LocalState, plan: MeshPlan, o: UpOptions): Promise<void> {
  const log = join(state.dir, 'logs', 'control.log');
  const argv = [
    process.execPath, CONTROL_MAIN,
    '--config', join(state.dir, 'config'),
    '--redirection-dir', redirectionDir(state.dir),
    '--ca-cert', join(state.dir, 'ca', 'root-cert.pem'),
    '--ca-key', join(state.dir, 'ca', 'root-key.pem'),
    '--trusted-roots', join(state.dir, 'ca', 'trusted-roots.pem'),
    '--node-tokens', join(state.dir, 'ca', 'node-tokens.json'),
    '--listen', `${plan.fabric.ip}:${CONTROL_PORT}`,
    '--dashboard', `127.0.0.1:${DASHBOARD_PORT}`,
    '--ip', plan.fabric.ip,
    '--cert-ttl', String(o.certTtlSeconds ?? 86400),
  ];
  const pid = spawnInNetns(plan.fabric.netns, argv, { log });
  state.processes.push({ role: 'control', name: 'control', pid, log, netns: plan.fabric.netns, argv });
  await writeState(state);
  o.say(`control plane: ${plan.fabric.ip}:${CONTROL_PORT} (pid ${pid})`);
}

async function startZtunnels(state: LocalState, plan: MeshPlan, say: (l: string) => void, report: Report): Promise<void> {
  for (const n of plan.nodes) {
    const log = join(state.dir, 'logs', `ztunnel-${n.name}.log`);
    const argv = [
      process.execPath, ...ZTUNNEL_NODE_FLAGS, ZTUNNEL_MAIN,
      '--node', n.name,
      '--control', `${plan.fabric.ip}:${CONTROL_PORT}`,
      '--ca-root', join(state.dir, 'ca', 'root-cert.pem'),
      '--token-file', join(state.dir, 'ca', `${n.name}.token`),
      '--agent-socket', nodeFiles(state.dir, n.name).ztunnelSocket,
    ];
    const pid = spawnInNetns(n.netns, argv, { log });
    state.processes.push({ role: 'ztunnel', name: n.name, pid, log, netns: n.netns, argv });
  }
  await writeState(state);
  for (const [i, n] of plan.nodes.entries()) {
    const proc = state.processes.find((p) => p.role === 'ztunnel' && p.name === n.name)!;
    report({ activity: `waiting for ztunnel on ${n.name} to be ready` });
    await waitFor(`ztunnel on ${n.name} to be ready (log: ${proc.log})`, async () => {
      if (!alive(proc.pid)) throw new Error('ztunnel exited');
      return (await httpInNetns(netnsPath(n.netns), { host: n.ip, port: 15021, path: '/healthz/ready' })).status === 200;
    }, 20_000);
    report({ ztunnels: { done: i + 1, total: plan.nodes.length } });
  }
  say(`ztunnels ready on ${plan.nodes.length} node(s)`);
}

/** The node's CNI configuration, as a node image would ship it: bridge + host-local. */
async function writeNodeCniConfig(dir: string, n: NodePlan): Promise<void> {
  const f = nodeFiles(dir, n.name);
  await mkdir(f.confDir, { recursive: true });
  await mkdir(f.binDir, { recursive: true });
  const conflist = {
    cniVersion: '1.0.0',
    name: `ambit-${n.name}`,
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: n.podCidr, gateway: n.podGateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: f.ipamDir },
      },
    ],
  };
  await writeFile(f.conflist, JSON.stringify(conflist, null, 2));
  await writeFile(f.loopback, JSON.stringify({ cniVersion: '1.0.0', name: 'cni-loopback', type: 'loopback' }, null, 2));
}

async function startAgents(state: LocalState, plan: MeshPlan, say: (l: string) => void, report: Report): Promise<void> {
  for (const n of plan.nodes) {
    const f = nodeFiles(state.dir, n.name);
    const log = join(state.dir, 'logs', `cni-agent-${n.name}.log`);
    const argv = [
      process.execPath, AGENT_MAIN,
      '--node', n.name,
      '--config', join(state.dir, 'config'),
      '--ztunnel-socket', f.ztunnelSocket,
      '--cni-socket', f.cniSocket,
      '--state-dir', f.agentState,
      '--cni-conf-dir', f.confDir,
      '--cni-bin-dir', f.binDir,
      '--annotations', f.annotations,
    ];
    const pid = spawnInNetns(n.netns, argv, { log });
    state.processes.push({ role: 'agent', name: n.name, pid, log, netns: n.netns, argv });
  }
  await writeState(state);
  for (const [i, n] of plan.nodes.entries()) {
    const f = nodeFiles(state.dir, n.name);
    const proc = state.processes.find((p) => p.role === 'agent' && p.name === n.name)!;
    report({ activity: `waiting for the node agent on ${n.name} to chain ambit-cni` });
    await waitFor(`the node agent on ${n.name} to chain ambit-cni (log: ${proc.log})`, async () => {
      if (!alive(proc.pid)) throw new Error('node agent exited');
      return (await readFile(f.conflist, 'utf8')).includes('"ambit-cni"') && existsSync(join(f.binDir, 'ambit-cni'));
    }, 20_000);
    report({ agents: { done: i + 1, total: plan.nodes.length } });
  }
  say(`node agents ready; ambit-cni chained into each node's CNI configuration`);
}

/** A pod as the CNI chain of its node sees it. */
export interface PodNetworkRef {
  netns: string;
  namespace: string;
  name: string;
  uid: string;
  /** the address local mode planned for it (host-local's IP argument); absent: host-local picks one */
  ip?: string;
}

export interface PodNetworkOptions {
  /** rewrites the node's conflist text before use (a bench compares chains with it) */
  conflist?: (text: string) => string;
  /** sees every plugin invocation and how long it took */
  onExec?: RuntimeOptions['onExec'];
}

function podAttachment(meshName: string, pod: PodNetworkRef, withIp: boolean): Attachment {
  const id = `${meshName}-${pod.netns}`;
  return {
    containerId: id,
    netns: netnsPath(pod.netns),
    ifname: 'eth0',
    args: { IgnoreUnknown: '1', ...(withIp && pod.ip ? { IP: pod.ip } : {}), K8S_POD_NAMESPACE: pod.namespace, K8S_POD_NAME: pod.name, K8S_POD_UID: pod.uid, K8S_POD_INFRA_CONTAINER_ID: id },
  };
}

/**
 * Connects a pod's netns to its node the way a container runtime does: the loopback
 * network, then the node's conflist (the reference plugins, and ambit-cni chained last by
 * the node agent), run inside the node's netns. Returns the chain's result.
 */
export async function addPodNetwork(dir: string, meshName: string, node: Pick<NodePlan, 'name' | 'netns'>, pod: PodNetworkRef, opts: PodNetworkOptions = {}): Promise<CniResult> {
  const f = nodeFiles(dir, node.name);
  const runtime: RuntimeOptions = { binDirs: [f.binDir, SYSTEM_CNI_BIN], hostNetns: node.netns, ...(opts.onExec ? { onExec: opts.onExec } : {}) };
  const c = podAttachment(meshName, pod, true);
  // a runtime runs the single-plugin loopback .conf as a list of one, before the network itself
  const lo = JSON.parse(await readFile(f.loopback, 'utf8')) as { cniVersion: string; name: string };
  await cniAdd({ cniVersion: lo.cniVersion, name: lo.name, plugins: [lo] }, { ...c, ifname: 'lo' }, runtime);
  const text = await readFile(f.conflist, 'utf8');
  return cniAdd(opts.conflist ? opts.conflist(text) : text, c, runtime);
}

/** Disconnects a pod: CNI DEL through the node's conflist, as a runtime does when the pod goes. */
export async function removePodNetwork(dir: string, meshName: string, node: Pick<NodePlan, 'name' | 'netns'>, pod: PodNetworkRef, opts: PodNetworkOptions = {}): Promise<void> {
  const f = nodeFiles(dir, node.name);
  const text = await readFile(f.conflist, 'utf8');
  await cniDel(opts.conflist ? opts.conflist(text) : text, podAttachment(meshName, pod, false), { binDirs: [f.binDir, SYSTEM_CNI_BIN], hostNetns: node.netns, ...(opts.onExec ? { onExec: opts.onExec } : {}) });
}

/** Creates a pod the way a container runtime does: a netns, then the node's CNI chain. */
async function createPod(state: LocalState, plan: MeshPlan, pod: PodPlan): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  await run('ip', ['netns', 'add', pod.netns]);
  state.netns.push(pod.netns);
  await writeState(state);
  const result = await addPodNetwork(state.dir, state.name, node, pod);
  const got = result.ips.map((i) => i.address.split('/')[0]);
  if (!got.includes(pod.ip)) throw new Error(`CNI gave pod ${pod.key} ${got.join(', ')} instead of ${pod.ip}`);
  // `ip netns exec` shows /etc/netns/NAME/hosts as the pod's /etc/hosts: service names resolve in the pod.
  const etc = `/etc/netns/${pod.netns}`;
  await mkdir(etc, { recursive: true });
  state.hostsDirs.push(etc);
  await writeFile(join(etc, 'hosts'), hostsFile(plan, pod));
  await writeState(state);
}

/** Pods' `ambient.istio.io/redirection` values, as the node agents wrote them. */
export function redirections(state: LocalState): Promise<Record<string, string>> {
  return readRedirections(redirectionDir(state.dir));
}

function startPod(state: LocalState, pod: PodPlan): void {
  for (const c of pod.containers) {
    const log = join(state.dir, 'logs', `pod-${pod.namespace}-${pod.name}-${c.name}.log`);
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', POD_NAME: pod.name, POD_NAMESPACE: pod.namespace, POD_IP: pod.ip, NODE_NAME: pod.node, ...c.env };
    const pid = spawnInNetns(pod.netns, c.argv, { log, cwd: pod.cwd, env });
    state.processes.push({ role: 'pod', name: `${pod.key}/${c.name}`, pid, log });
  }
}

/** What a node's ztunnel says in /config_dump, as far as readiness goes. */
export interface ReadinessDump {
  workloads: { ready: boolean; name?: string; namespace?: string; protocol?: string }[];
  certificates?: { identity: string; state: string }[];
}

/** Waits until every node's ztunnel has `pods` ready workloads; `seen` gets each round of dumps (by node). */
async function waitForConfig(plan: MeshPlan, pods: number, seen?: (dumps: Map<string, ReadinessDump>) => void): Promise<void> {
  const dumps = new Map<string, ReadinessDump>();
  for (const n of plan.nodes) {
    await waitFor(`ztunnel on ${n.name} to receive the running pods`, async () => {
      const dumpOf = async (m: NodePlan): Promise<void> => {
        const r = await httpInNetns(netnsPath(m.netns), { host: '127.0.0.1', port: 15000, path: '/config_dump' });
        dumps.set(m.name, JSON.parse(r.body) as ReadinessDump);
      };
      // with `seen`, every node, so certificates and sync show for all of them while waiting for this one
      const others = seen ? plan.nodes.filter((m) => m !== n).map((m) => dumpOf(m).catch(() => undefined)) : [];
      const mine = dumpOf(n);
      await Promise.allSettled([mine, ...others]);
      seen?.(dumps);
      await mine; // its error is the reason given if this times out
      return (dumps.get(n.name)?.workloads ?? []).filter((w) => w.ready).length >= pods;
    }, 20_000);
  }
}

/**
 * Counts from the nodes' ztunnels: identities of captured pods whose certificate their node's
 * ztunnel holds, nodes that have every pod ready in their config, and pods whose processes run.
 */
export function readiness(state: LocalState, plan: MeshPlan, dumps: ReadonlyMap<string, ReadinessDump>): UpProgress {
  const wanted = new Map<string, Set<string>>();
  for (const p of plan.pods) if (p.ambient) (wanted.get(p.node) ?? wanted.set(p.node, new Set()).get(p.node)!).add(`/ns/${p.namespace}/sa/${p.serviceAccount}`);
  let certs = 0;
  let total = 0;
  for (const [node, ids] of wanted) {
    const held = new Set((dumps.get(node)?.certificates ?? []).filter((c) => c.state === 'available').map((c) => c.identity.replace(/^spiffe:\/\/[^/]+/, '')));
    total += ids.size;
    for (const id of ids) if (held.has(id)) certs++;
  }
  const synced = plan.nodes.filter((n) => (dumps.get(n.name)?.workloads ?? []).filter((w) => w.ready).length >= plan.pods.length).length;
  const running = plan.pods.filter((p) => {
    const procs = state.processes.filter((x) => x.role === 'pod' && x.name.startsWith(`${p.key}/`));
    return procs.every((x) => alive(x.pid));
  }).length;
  return {
    certificates: { done: certs, total },
    synced: { done: synced, total: plan.nodes.length },
    running: { done: running, total: plan.pods.length },
    activity: synced < plan.nodes.length ? `waiting for the ztunnels to receive the running pods (${synced}/${plan.nodes.length} nodes)` : 'ztunnels have every pod',
  };
}

/** Removes every namespace, veth, rule, file and process a mesh made. Safe to run twice. */
export async function down(root: string, name: string, say: (l: string) => void): Promise<boolean> {
  const state = await readState(root, name);
  const procs = state?.processes ?? [];
  // pods first, then ztunnels, then the control plane; ztunnels stop at once (SIGINT), not
  // with the hand-over and drain of SIGTERM: their pods are gone and nobody takes over
  for (const role of ['pod', 'agent', 'draining', 'ztunnel', 'control'] as const) {
    await Promise.all(procs.filter((p) => p.role === role).map((p) => stopGroup(p.pid, 3000, stopSignal(p))));
  }
  const own = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(fabric|node-\\d+|pod-\\d+)$`);
  const names = new Set([...(state?.netns ?? []), ...(await listNetns()).filter((n) => own.test(n))]);
  // veths and rules live inside these namespaces and go with them
  for (const n of [...names].reverse()) await deleteNetns(n);
  for (const n of names) await rm(`/etc/netns/${n}`, { recursive: true, force: true });
  for (const d of state?.hostsDirs ?? []) await rm(d, { recursive: true, force: true });
  const dir = stateDir(root, name);
  const had = state !== null || names.size > 0;
  await rm(dir, { recursive: true, force: true });
  if (had) say(`mesh "${name}" removed`);
  return had;
}

/** A pod's netns by "namespace/name" (or "name" in default). */
export function findPod(state: LocalState, ref: string): PodPlan {
  const key = ref.includes('/') ? ref : `default/${ref}`;
  const pod = state.plan.pods.find((p) => p.key === key);
  if (!pod) throw new Error(`no pod ${key} in mesh "${state.name}"; pods: ${state.plan.pods.map((p) => p.key).join(', ')}`);
  return pod;
}

function objectId(o: KubeObject): string {
  return `${o.kind}/${o.kind === 'Namespace' ? '' : (o.metadata.namespace ?? 'default')}/${o.metadata.name}`;
}

/** Waits until each node agent has brought every pod to what its labels ask for. */
async function waitForEnrollment(state: LocalState, objects: KubeObject[], timeoutMs = 20_000): Promise<void> {
  await waitFor('the node agents to follow the labels', async () => {
    const r = await redirections(state);
    return state.plan.pods.every((p) => (wantsAmbient(objects, p.namespace, p.name) ? r[p.key] === 'enabled' : r[p.key] === undefined));
  }, timeoutMs, 100);
  await waitForProtocols(state, objects, timeoutMs);
}

/**
 * Waits until every node's ztunnel reaches each pod the way the control plane now says: over
 * HBONE once the pod is meant for the mesh and its agent enabled it, plain TCP otherwise.
 */
async function waitForProtocols(state: LocalState, objects: KubeObject[], timeoutMs = 20_000): Promise<void> {
  const r = await redirections(state);
  const expected = new Map(state.plan.pods.map((p) => [p.key, wantsAmbient(objects, p.namespace, p.name) && r[p.key] === 'enabled' ? 'HBONE' : 'TCP']));
  for (const n of state.plan.nodes) {
    await waitFor(`ztunnel on ${n.name} to reach the pods as their enrollment says`, async () => {
      const res = await httpInNetns(netnsPath(n.netns), { host: '127.0.0.1', port: 15000, path: '/config_dump' });
      const dump = JSON.parse(res.body) as ReadinessDump;
      const got = new Map(dump.workloads.map((w) => [`${w.namespace}/${w.name}`, w.protocol]));
      return [...expected].every(([key, protocol]) => got.get(key) === protocol);
    }, timeoutMs, 100);
  }
}

/**
 * `kubectl apply` for a local mesh: objects in the file are created or updated (nothing is
 * pruned). New pods are created through the CNI chain and started; running pods may change
 * only their labels. Everything is checked before anything changes.
 */
export async function apply(o: { stateRoot: string; name: string; file: string; say: (l: string) => void }): Promise<LocalState> {
  await checkPrerequisites();
  const state = await readState(o.stateRoot, o.name);
  if (!state) throw new Error(`no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\``);
  const stored = await readObjects(join(state.dir, 'config'));
  const incoming = await readObjects(o.file);
  const merged = new Map(stored.map((obj) => [objectId(obj), obj]));
  let changed = 0;
  for (const obj of incoming) {
    const id = objectId(obj);
    const old = merged.get(id);
    const next: KubeObject = old ? { ...obj, metadata: { ...obj.metadata, ...(old.metadata.uid ? { uid: old.metadata.uid } : {}) }, ...(old.status ? { status: old.status } : {}) } : obj;
    if (old && JSON.stringify({ ...old, source: undefined }) === JSON.stringify({ ...next, source: undefined })) continue;
    merged.set(id, next);
    changed++;
  }
  const objects = withWaypoints([...merged.values()], state.dir);
  const dirOf = (obj: KubeObject): string => dirname(resolve((obj.source ?? o.file).replace(/ \(document \d+\)$/, '')));
  const plan = planMesh(state.name, state.plan.nodes.length, objects, dirOf, state.plan);
  const had = new Set(state.plan.pods.map((p) => p.key));
  const fresh = plan.pods.filter((p) => !had.has(p.key));
  // planMesh marks every pod Pending; running pods keep their status
  const statusOf = new Map(stored.filter((x) => x.kind === 'Pod').map((x) => [objectId(x), x.status]));
  const withStatus = plan.objects.map((obj) => (obj.kind === 'Pod' && statusOf.has(objectId(obj)) ? { ...obj, status: statusOf.get(objectId(obj)) } : obj));
  const { objects: _objects, ...planView } = plan;
  state.plan = planView;
  await writeState(state);
  await ensureWaypointTokens(state.dir, withStatus);
  await writeConfig(state.dir, withStatus);
  for (const pod of fresh) await createPod(state, plan, pod);
  for (const pod of fresh) startPod(state, pod);
  for (const pod of plan.pods) await writeFile(join(`/etc/netns/${pod.netns}`, 'hosts'), hostsFile(plan, pod));
  await writeState(state);
  if (fresh.length) {
    const running = withStatus.map((obj) => (obj.kind === 'Pod' && fresh.some((p) => objectId(obj) === `Pod/${p.namespace}/${p.name}`) ? { ...obj, status: { ...obj.status, phase: 'Running' } } : obj));
    await writeConfig(state.dir, running);
    await waitForConfig(plan, plan.pods.length);
  }
  await waitForEnrollment(state, withStatus);
  o.say(`${changed} object(s) created or changed, ${fresh.length} new pod(s) started`);
  return state;
}

/** Parses kubectl-style label changes: `key=value` sets, `key-` removes. */
export function parseLabelChanges(changes: string[]): { set: Record<string, string>; remove: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
  const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
  for (const c of changes) {
    if (c.endsWith('-') && !c.includes('=')) {
      const k = c.slice(0, -1);
      if (!KEY.test(k)) throw new Error(`"${k}" is not a valid label key`);
      remove.push(k);
      continue;
    }
    const i = c.indexOf('=');
    if (i <= 0) throw new Error(`"${c}" is not a label change; use key=value or key-`);
    const k = c.slice(0, i);
    const v = c.slice(i + 1);
    if (!KEY.test(k)) throw new Error(`"${k}" is not a valid label key`);
    if (!VALUE.test(v)) throw new Error(`"${v}" is not a valid label value`);
    set[k] = v;
  }
  if (Object.keys(set).length + remove.length === 0) throw new Error('no label changes given');
  return { set, remove };
}

/** `kubectl label` for a local mesh: changes a Namespace's or Pod's labels; running pods are enrolled or released without restart. */
export async function label(o: { stateRoot: string; name: string; kind: 'namespace' | 'pod'; ref: string; changes: string[]; say: (l: string) => void }): Promise<void> {
  await checkPrerequisites();
  const state = await readState(o.stateRoot, o.name);
  if (!state) throw new Error(`no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\``);
  const { set, remove } = parseLabelChanges(o.changes);
  const objects = await readObjects(join(state.dir, 'config'));
  const [ns, name] = o.kind === 'namespace' ? ['', o.ref] : o.ref.includes('/') ? (o.ref.split('/', 2) as [string, string]) : ['default', o.ref];
  const target = objects.find((x) => (o.kind === 'namespace' ? x.kind === 'Namespace' && x.metadata.name === name : x.kind === 'Pod' && x.metadata.name === name && (x.metadata.namespace ?? 'default') === ns));
  if (!target) throw new Error(`no ${o.kind} ${o.ref} in mesh "${state.name}"`);
  const labels = { ...(target.metadata.labels ?? {}), ...set };
  for (const k of remove) delete labels[k];
  target.metadata = { ...target.metadata, labels };
  await writeConfig(state.dir, objects);
  await waitForEnrollment(state, objects);
  o.say(`${o.kind} ${o.ref} labelled`);
}

/** Stops a daemon of a running mesh (control plane, or a node's ztunnel or agent), e.g. to see the mesh fail closed. */
export async function stopDaemon(o: { stateRoot: string; name: string; role: 'control' | 'ztunnel' | 'agent'; node?: string }): Promise<MeshProcess> {
  const state = await readState(o.stateRoot, o.name);
  if (!state) throw new Error(`no local mesh named "${o.name}" is up`);
  const p = state.processes.find((x) => x.role === o.role && (o.role === 'control' || x.name === o.node));
  if (!p) throw new Error(o.role === 'control' ? 'no control plane in this mesh' : `no ${o.role} on node "${o.node ?? ''}"; nodes: ${state.plan.nodes.map((n) => n.name).join(', ')}`);
  await stopGroup(p.pid, 3000, stopSignal(p));
  return p;
}

/** How a process of the mesh is stopped now: ztunnels take SIGTERM as the start of a hand-over and drain. */
function stopSignal(p: MeshProcess): NodeJS.Signals {
  return p.role === 'ztunnel' || p.role === 'draining' ? 'SIGINT' : 'SIGTERM';
}

/** Starts a daemon again the way `up` started it (restarting it if it runs). */
export async function startDaemon(o: { stateRoot: string; name: string; role: 'control' | 'ztunnel' | 'agent'; node?: string }): Promise<MeshProcess> {
  const state = await readState(o.stateRoot, o.name);
  if (!state) throw new Error(`no local mesh named "${o.name}" is up`);
  const running = state.processes.find((x) => x.role === o.role && (o.role === 'control' || x.name === o.node));
  if (running?.role === 'ztunnel' && alive(running.pid)) return replaceZtunnel(state, running);
  const p = await stopDaemon(o);
  if (!p.argv || !p.netns) throw new Error(`${p.role} ${p.name} was not started by this version of ambit; recreate the mesh`);
  p.pid = spawnInNetns(p.netns, p.argv, { log: p.log });
  const i = state.processes.findIndex((x) => x.role === p.role && x.name === p.name);
  state.processes[i] = p;
  await writeState(state);
  if (p.role === 'ztunnel') await waitForZtunnel(state, p);
  return p;
}

async function waitForZtunnel(state: LocalState, p: MeshProcess): Promise<NodePlan> {
  const n = state.plan.nodes.find((x) => x.name === p.name)!;
  await waitFor(`ztunnel on ${n.name} to be ready (log: ${p.log})`, async () => {
    if (!alive(p.pid)) throw new Error('ztunnel exited');
    return (await httpInNetns(netnsPath(n.netns), { host: n.ip, port: 15021, path: '/healthz/ready' })).status === 200;
  }, 20_000);
  return n;
}

/** The pods a node's ztunnel serves, "namespace/name", from its admin endpoint. */
async function capturedBy(n: NodePlan): Promise<string[]> {
  const r = await httpInNetns(netnsPath(n.netns), { host: '127.0.0.1', port: 15000, path: '/config_dump' });
  return (JSON.parse(r.body) as { capturedPods: { namespace: string; name: string }[] }).capturedPods.map((x) => `${x.namespace}/${x.name}`);
}

/**
 * Replaces a running ztunnel the way the DaemonSet's rolling update does (maxSurge): the old
 * one is sent SIGTERM, lets the node agent go and frees its ports, but keeps serving its pods
 * while the new one starts and the agent hands the pods to it; then the old one drains.
 * Resolves with the new one once it serves every pod the old one did.
 */
async function replaceZtunnel(state: LocalState, old: MeshProcess): Promise<MeshProcess> {
  if (!old.argv || !old.netns) throw new Error(`ztunnel ${old.name} was not started by this version of ambit; recreate the mesh`);
  const n = state.plan.nodes.find((x) => x.name === old.name)!;
  const pods = await capturedBy(n);
  process.kill(old.pid, 'SIGTERM');
  // the new one binds the node's admin, metrics and readiness ports, which the old one lets go first
  await waitFor(`the ztunnel on ${n.name} being replaced to free its ports (log: ${old.log})`, async () => {
    if (!alive(old.pid)) return true;
    return httpInNetns(netnsPath(n.netns), { host: n.ip, port: 15021, path: '/healthz/ready' }).then(() => false, () => true);
  }, 5000, 20);
  const next: MeshProcess = { ...old, pid: spawnInNetns(old.netns, old.argv, { log: old.log }) };
  const draining: MeshProcess = { role: 'draining', name: old.name, pid: old.pid, log: old.log };
  state.processes = [...state.processes.filter((x) => x !== old && (x.role !== 'draining' || alive(x.pid))), next, draining];
  await writeState(state);
  await waitForZtunnel(state, next);
  await waitFor(`the node agent on ${n.name} to hand ${pods.length} pod(s) to the new ztunnel`, async () => {
    const now = new Set(await capturedBy(n));
    return pods.every((x) => now.has(x));
  }, 20_000);
  return next;
}

/**
 * `kubectl delete -f` for a local mesh: removes the named objects. Pods are stopped and
 * torn down the way a runtime does it (CNI DEL through the chain, then the netns); a
 * Namespace can only go once it is empty.
 */
export async function deleteObjects(o: { stateRoot: string; name: string; file: string; say: (l: string) => void }): Promise<void> {
  await checkPrerequisites();
  const state = await readState(o.stateRoot, o.name);
  if (!state) throw new Error(`no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\``);
  const stored = await readObjects(join(state.dir, 'config'));
  const named = await readObjects(o.file);
  const gone = new Set(named.map(objectId));
  const missing = [...gone].filter((id) => !stored.some((x) => objectId(x) === id));
  if (missing.length) throw new Error(`not found: ${missing.join(', ')}`);
  // a waypoint Gateway takes its pod and Service with it
  const gatewaysGone = new Set(stored.filter((g) => isWaypointGateway(g) && gone.has(objectId(g))).map((g) => `${g.metadata.namespace ?? 'default'}/${g.metadata.name}`));
  for (const x of ownedBy(stored, gatewaysGone)) gone.add(objectId(x));
  const remaining = stored.filter((x) => !gone.has(objectId(x)));
  for (const ns of stored.filter((x) => x.kind === 'Namespace' && gone.has(objectId(x)))) {
    const left = remaining.filter((x) => x.kind !== 'Namespace' && (x.metadata.namespace ?? 'default') === ns.metadata.name);
    if (left.length) throw new Error(`namespace ${ns.metadata.name} still holds ${left.map((x) => `${x.kind} ${x.metadata.name}`).join(', ')}; delete them first`);
  }
  const pods = state.plan.pods.filter((p) => gone.has(`Pod/${p.namespace}/${p.name}`));
  for (const pod of pods) {
    const procs = state.processes.filter((x) => x.role === 'pod' && x.name.startsWith(`${pod.key}/`));
    // Kubernetes' default terminationGracePeriodSeconds: a waypoint lets what is under way finish
    await Promise.all(procs.map((x) => stopGroup(x.pid, POD_GRACE_MS)));
    await removePodNetwork(state.dir, state.name, state.plan.nodes.find((n) => n.name === pod.node)!, pod);
    await deleteNetns(pod.netns);
    await rm(`/etc/netns/${pod.netns}`, { recursive: true, force: true });
    state.processes = state.processes.filter((x) => !procs.includes(x));
    state.netns = state.netns.filter((n) => n !== pod.netns);
    state.hostsDirs = state.hostsDirs.filter((d) => d !== `/etc/netns/${pod.netns}`);
  }
  state.plan.pods = state.plan.pods.filter((p) => !pods.includes(p));
  state.plan.services = state.plan.services.filter((s) => !gone.has(`Service/${s.key}`));
  await writeState(state);
  await writeConfig(state.dir, remaining);
  const plan = { ...state.plan, objects: remaining } as MeshPlan;
  for (const pod of state.plan.pods) await writeFile(join(`/etc/netns/${pod.netns}`, 'hosts'), hostsFile(plan, pod));
  o.say(`${gone.size} object(s) deleted`);
}
