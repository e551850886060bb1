import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { readObjects, type KubeObject } from '../../shared/config/objects.js';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { installPodRules, checkRedirectTools } from '../../shared/redirect/apply.js';
import { AgentClient } from '../../shared/nodeagent/protocol.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { CONTROL_PORT, hostsFile, planMesh, type MeshPlan, type PodPlan } from './topology.js';
import { alive, deleteNetns, ipBatch, listNetns, run, spawnInNetns, stopGroup, waitFor } from './system.js';

/** What `local up` made, kept on disk so `status`, `exec` and `down` find it. */
export interface LocalState {
  name: string;
  dir: string;
  createdAt: string;
  plan: Omit<MeshPlan, 'objects'>;
  netns: string[];
  hostsDirs: string[];
  processes: { role: 'control' | 'ztunnel' | 'pod'; name: string; pid: number; log: string }[];
  captured: string[];
  ready: boolean;
}

export interface UpOptions {
  file: string;
  nodes: number;
  name: string;
  stateRoot: string;
  /** progress lines */
  say: (line: string) => void;
  certTtlSeconds?: number;
}

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ZTUNNEL_MAIN = join(DIST, 'ztunnel', 'main.js');
const CONTROL_MAIN = join(DIST, 'control', 'main.js');

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
  const objects = await readObjects(o.file);
  const plan = planMesh(o.name, o.nodes, objects, (obj) => dirname(resolve((obj.source ?? o.file).replace(/ \(document \d+\)$/, ''))));
  const taken = new Set(await listNetns());
  const clash = [plan.fabric.netns, ...plan.nodes.map((n) => n.netns), ...plan.pods.map((p) => p.netns)].find((n) => taken.has(n));
  if (clash) throw new Error(`network namespace ${clash} already exists; run \`ambit local down --name ${o.name}\` or choose another --name`);

  const dir = stateDir(o.stateRoot, o.name);
  await mkdir(join(dir, 'config'), { recursive: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  await mkdir(join(dir, 'ca'), { recursive: true, mode: 0o700 });
  const { objects: _objects, ...planView } = plan;
  const state: LocalState = { name: o.name, dir, createdAt: new Date().toISOString(), plan: planView, netns: [], hostsDirs: [], processes: [], captured: [], ready: false };
  await writeState(state);
  try {
    await buildFabric(state, plan, o.say);
    const ca = await CertificateAuthority.generate({ commonName: `ambit local root (${o.name})` });
    await writeFile(join(dir, 'ca', 'root-cert.pem'), ca.certPem);
    await writeFile(join(dir, 'ca', 'root-key.pem'), ca.keyPem(), { mode: 0o600 });
    const tokens: Record<string, string> = {};
    for (const n of plan.nodes) {
      const t = randomBytes(24).toString('hex');
      tokens[t] = n.name;
      await writeFile(join(dir, 'ca', `${n.name}.token`), t, { mode: 0o600 });
    }
    await writeFile(join(dir, 'ca', 'node-tokens.json'), JSON.stringify(tokens), { mode: 0o600 });
    await writeConfig(dir, plan.objects);
    await startControl(state, plan, o);
    await startZtunnels(state, plan, o.say);
    for (const pod of plan.pods) await createPod(state, plan, pod);
    o.say(`pods: ${plan.pods.length} created, ${plan.pods.filter((p) => p.ambient).length} captured by ztunnel`);
    for (const pod of plan.pods) startPod(state, pod);
    await writeState(state);
    const running = plan.objects.map((obj) => (obj.kind === 'Pod' ? { ...obj, status: { ...obj.status, phase: 'Running' } } : obj));
    await writeConfig(dir, running);
    await waitForConfig(plan, plan.pods.length);
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

async function buildFabric(state: LocalState, plan: MeshPlan, say: (l: string) => void): Promise<void> {
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
    await ipBatch(n.netns, [
      'link set lo up',
      `addr add ${n.ip}/24 dev eth0`,
      'link set eth0 up',
      'link add cni0 type bridge',
      `addr add ${n.podGateway}/24 dev cni0`,
      'link set cni0 up',
      ...plan.nodes.filter((m) => m !== n).map((m) => `route add ${m.podCidr} via ${m.ip}`),
    ]);
    await run('ip', ['netns', 'exec', n.netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  }
  await ipBatch(f.netns, plan.nodes.map((n) => `route add ${n.podCidr} via ${n.ip}`));
  say(`nodes: ${plan.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`);
}

async function startControl(state: LocalState, plan: MeshPlan, o: UpOptions): Promise<void> {
  const log = join(state.dir, 'logs', 'control.log');
  const pid = spawnInNetns(plan.fabric.netns, [
    process.execPath, CONTROL_MAIN,
    '--config', join(state.dir, 'config'),
    '--ca-cert', join(state.dir, 'ca', 'root-cert.pem'),
    '--ca-key', join(state.dir, 'ca', 'root-key.pem'),
    '--node-tokens', join(state.dir, 'ca', 'node-tokens.json'),
    '--listen', `${plan.fabric.ip}:${CONTROL_PORT}`,
    '--ip', plan.fabric.ip,
    '--cert-ttl', String(o.certTtlSeconds ?? 86400),
  ], { log });
  state.processes.push({ role: 'control', name: 'control', pid, log });
  await writeState(state);
  o.say(`control plane: ${plan.fabric.ip}:${CONTROL_PORT} (pid ${pid})`);
}

async function startZtunnels(state: LocalState, plan: MeshPlan, say: (l: string) => void): Promise<void> {
  for (const n of plan.nodes) {
    const log = join(state.dir, 'logs', `ztunnel-${n.name}.log`);
    const pid = spawnInNetns(n.netns, [
      process.execPath, ZTUNNEL_MAIN,
      '--node', n.name,
      '--control', `${plan.fabric.ip}:${CONTROL_PORT}`,
      '--ca-root', join(state.dir, 'ca', 'root-cert.pem'),
      '--token-file', join(state.dir, 'ca', `${n.name}.token`),
      '--agent-socket', join(state.dir, `ztunnel-${n.name}.sock`),
    ], { log });
    state.processes.push({ role: 'ztunnel', name: n.name, pid, log });
  }
  await writeState(state);
  for (const n of plan.nodes) {
    const proc = state.processes.find((p) => p.role === 'ztunnel' && p.name === n.name)!;
    await waitFor(`ztunnel on ${n.name} to be ready (log: ${proc.log})`, async () => {
      if (!alive(proc.pid)) throw new Error('ztunnel exited');
      return (await httpInNetns(netnsPath(n.netns), { host: n.ip, port: 15021, path: '/healthz/ready' })).status === 200;
    }, 20_000);
  }
  say(`ztunnels ready on ${plan.nodes.length} node(s)`);
}

async function createPod(state: LocalState, plan: MeshPlan, pod: PodPlan): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  await run('ip', ['netns', 'add', pod.netns]);
  state.netns.push(pod.netns);
  await writeState(state);
  await ipBatch(node.netns, [`link add ${pod.hostLink} type veth peer name eth0 netns ${pod.netns}`, `link set ${pod.hostLink} master cni0`, `link set ${pod.hostLink} up`]);
  await ipBatch(pod.netns, ['link set lo up', `addr add ${pod.ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${node.podGateway}`]);
  // `ip netns exec` shows /etc/netns/NAME/hosts as the pod's /etc/hosts: service names resolve in the pod.
  const etc = `/etc/netns/${pod.netns}`;
  await mkdir(etc, { recursive: true });
  state.hostsDirs.push(etc);
  await writeFile(join(etc, 'hosts'), hostsFile(plan, pod));
  await writeState(state);
  if (!pod.ambient) return;
  await installPodRules(netnsPath(pod.netns));
  const agent = await AgentClient.connect(join(state.dir, `ztunnel-${pod.node}.sock`));
  try {
    await agent.send({ type: 'add', uid: pod.uid, name: pod.name, namespace: pod.namespace, serviceAccount: pod.serviceAccount, ip: pod.ip, netns: netnsPath(pod.netns) });
  } finally {
    agent.close();
  }
  state.captured.push(pod.key);
  await writeState(state);
}

function startPod(state: LocalState, pod: PodPlan): void {
  for (const c of pod.containers) {
    const log = join(state.dir, 'logs', `pod-${pod.namespace}-${pod.name}-${c.name}.log`);
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', POD_NAME: pod.name, POD_NAMESPACE: pod.namespace, POD_IP: pod.ip, NODE_NAME: pod.node, ...c.env };
    const pid = spawnInNetns(pod.netns, c.argv, { log, cwd: pod.cwd, env });
    state.processes.push({ role: 'pod', name: `${pod.key}/${c.name}`, pid, log });
  }
}

async function waitForConfig(plan: MeshPlan, pods: number): Promise<void> {
  for (const n of plan.nodes) {
    await waitFor(`ztunnel on ${n.name} to receive the running pods`, async () => {
      const r = await httpInNetns(netnsPath(n.netns), { host: '127.0.0.1', port: 15000, path: '/config_dump' });
      const dump = JSON.parse(r.body) as { workloads: { ready: boolean }[] };
      return dump.workloads.filter((w) => w.ready).length >= pods;
    }, 20_000);
  }
}

/** Removes every namespace, veth, rule, file and process a mesh made. Safe to run twice. */
export async function down(root: string, name: string, say: (l: string) => void): Promise<boolean> {
  const state = await readState(root, name);
  const procs = state?.processes ?? [];
  // pods first, then ztunnels (so they drain), then the control plane
  for (const role of ['pod', 'ztunnel', 'control'] as const) {
    await Promise.all(procs.filter((p) => p.role === role).map((p) => stopGroup(p.pid)));
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
