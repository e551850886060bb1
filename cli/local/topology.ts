import { ConfigError, type KubeObject } from '../../shared/config/objects.js';
import { isAmbient, podInfo, serviceSpec } from '../../shared/config/translate.js';

/** Address plan of a local mesh: a fabric netns joins the nodes; each node has a pod bridge. */
export interface NodePlan {
  name: string;
  netns: string;
  /** address on the fabric (node-to-node) network */
  ip: string;
  podCidr: string;
  podGateway: string;
  /** interface name of this node's link in the fabric netns */
  fabricLink: string;
}

export interface PodPlan {
  key: string;
  name: string;
  namespace: string;
  uid: string;
  serviceAccount: string;
  node: string;
  netns: string;
  ip: string;
  /** veth end in the node netns */
  hostLink: string;
  ambient: boolean;
  containers: { name: string; argv: string[]; env: Record<string, string> }[];
  /** folder the pod's YAML came from: commands run there */
  cwd: string;
}

export interface ServicePlan {
  key: string;
  vip: string;
  hostnames: string[];
  ports: { port: number; targetPort: number }[];
}

export interface MeshPlan {
  name: string;
  fabric: { netns: string; bridge: string; ip: string; cidr: string };
  nodes: NodePlan[];
  pods: PodPlan[];
  services: ServicePlan[];
  /** every object, with pods scheduled (nodeName) and addressed (status.podIP) */
  objects: KubeObject[];
}

const FABRIC_PREFIX = '10.248.0';
const POD_PREFIX = '10.249';
const SERVICE_PREFIX = '10.250';
export const CONTROL_PORT = 15012;
/** Where pods and nodes reach the control plane (in the fabric netns). */
export const CONTROL_ADDRESS = `${FABRIC_PREFIX}.1:${CONTROL_PORT}`;
/** The dashboard, on localhost of the control plane's netns (`ambit dashboard` forwards to it). */
export const DASHBOARD_PORT = 15014;

/** Nodes are named like kind's: NAME-control-plane is not needed, so node-1 … node-N. */
export function nodeNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `node-${i + 1}`);
}

function containerSpecs(o: KubeObject): PodPlan['containers'] {
  const spec = (o.spec ?? {}) as Record<string, unknown>;
  const where = `${o.source ?? '<input>'}: Pod "${o.metadata.namespace ?? 'default'}/${o.metadata.name}"`;
  const containers = spec.containers;
  if (!Array.isArray(containers) || containers.length === 0) throw new ConfigError(`${where}: spec.containers must list at least one container`);
  return containers.map((c: unknown, i: number) => {
    const cc = (c ?? {}) as Record<string, unknown>;
    const name = typeof cc.name === 'string' ? cc.name : `c${i}`;
    const strList = (v: unknown, f: string): string[] => {
      if (v === undefined) return [];
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ConfigError(`${where}: spec.containers[${i}].${f} must be a list of strings`);
      return v as string[];
    };
    const argv = [...strList(cc.command, 'command'), ...strList(cc.args, 'args')];
    if (argv.length === 0) throw new ConfigError(`${where}: spec.containers[${i}] needs a command to run (local mode runs processes, not images)`);
    const env: Record<string, string> = {};
    if (cc.env !== undefined) {
      if (!Array.isArray(cc.env)) throw new ConfigError(`${where}: spec.containers[${i}].env must be a list`);
      for (const e of cc.env as unknown[]) {
        const ee = (e ?? {}) as Record<string, unknown>;
        if (typeof ee.name !== 'string' || (ee.value !== undefined && typeof ee.value !== 'string')) {
          throw new ConfigError(`${where}: spec.containers[${i}].env entries need a string name and value`);
        }
        env[ee.name] = (ee.value as string | undefined) ?? '';
      }
    }
    return { name, argv, env };
  });
}

/**
 * Plans a local mesh from the user's objects (pure): schedules pods without spec.nodeName
 * round robin, gives every node, pod and service an address, and checks everything it
 * needs so that `up` fails before creating anything.
 */
export function planMesh(
  name: string,
  nodeCount: number,
  objects: KubeObject[],
  dirOf: (o: KubeObject) => string,
  /** a running mesh's plan: its pods keep their node, IP and netns, its services their VIP */
  previous?: Pick<MeshPlan, 'pods' | 'services'>,
): MeshPlan {
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > 50) throw new ConfigError(`--nodes must be a whole number from 1 to 50, got ${nodeCount}`);
  const nodes: NodePlan[] = nodeNames(nodeCount).map((n, i) => ({
    name: n,
    netns: `${name}-${n}`,
    ip: `${FABRIC_PREFIX}.${11 + i}`,
    podCidr: `${POD_PREFIX}.${i + 1}.0/24`,
    podGateway: `${POD_PREFIX}.${i + 1}.1`,
    fabricLink: `n${i + 1}`,
  }));
  const nsLabels = new Map<string, Record<string, string>>();
  const seen = new Set<string>();
  for (const o of objects) {
    // a namespaced object without a namespace is in "default": the same object as one that says so
    const key = `${o.kind}/${o.kind === 'Namespace' ? '' : (o.metadata.namespace ?? 'default')}/${o.metadata.name}`;
    if (seen.has(key)) throw new ConfigError(`${o.source}: ${o.kind} "${o.metadata.name}" is defined twice`);
    seen.add(key);
    if (o.kind === 'Namespace') nsLabels.set(o.metadata.name, o.metadata.labels ?? {});
  }
  const out: KubeObject[] = [];
  const pods: PodPlan[] = [];
  const perNode = new Map<string, number>();
  const usedIps = new Set(previous?.pods.map((p) => p.ip) ?? []);
  const prevPods = new Map(previous?.pods.map((p) => [p.key, p]) ?? []);
  let nextIndex = Math.max(0, ...(previous?.pods.map((p) => Number(p.netns.slice(p.netns.lastIndexOf('-') + 1))) ?? []));
  let rr = 0;
  for (const o of objects) {
    if (o.kind !== 'Pod') continue;
    const p = podInfo(o);
    const before = prevPods.get(`${p.namespace}/${p.name}`);
    if (before) {
      if (p.nodeName && p.nodeName !== before.node) throw new ConfigError(`${o.source}: Pod "${before.key}": spec.nodeName cannot change on a running pod (it runs on ${before.node})`);
      if (p.serviceAccount !== before.serviceAccount) throw new ConfigError(`${o.source}: Pod "${before.key}": spec.serviceAccountName cannot change on a running pod`);
      if (JSON.stringify(containerSpecs(o)) !== JSON.stringify(before.containers)) throw new ConfigError(`${o.source}: Pod "${before.key}": containers cannot change on a running pod (only labels can)`);
      pods.push({ ...before, ambient: isAmbient(p, nsLabels.get(p.namespace)) });
      perNode.set(before.node, (perNode.get(before.node) ?? 0) + 1);
      continue;
    }
    if (p.hostNetwork) throw new ConfigError(`${o.source}: Pod "${p.namespace}/${p.name}": hostNetwork pods are not supported in local mode`);
    if (p.namespace !== 'default' && !nsLabels.has(p.namespace)) throw new ConfigError(`${o.source}: Pod "${p.namespace}/${p.name}": namespace "${p.namespace}" is not defined`);
    // new pods into a running mesh go to the least loaded node; a fresh mesh deals them round robin
    const leastLoaded = (): string => [...nodes].sort((a, b) => (perNode.get(a.name) ?? 0) - (perNode.get(b.name) ?? 0))[0]!.name;
    const node = p.nodeName ?? (previous ? leastLoaded() : nodes[rr++ % nodes.length]!.name);
    const ni = nodes.findIndex((n) => n.name === node);
    if (ni < 0) throw new ConfigError(`${o.source}: Pod "${p.namespace}/${p.name}": spec.nodeName "${node}" is not one of ${nodes.map((n) => n.name).join(', ')}`);
    let slot = 11;
    while (usedIps.has(`${POD_PREFIX}.${ni + 1}.${slot}`)) slot++;
    if (slot > 210) throw new ConfigError(`node ${node} has more than 200 pods`);
    usedIps.add(`${POD_PREFIX}.${ni + 1}.${slot}`);
    perNode.set(node, (perNode.get(node) ?? 0) + 1);
    const index = ++nextIndex;
    pods.push({
      key: `${p.namespace}/${p.name}`,
      name: p.name,
      namespace: p.namespace,
      uid: p.uid,
      serviceAccount: p.serviceAccount,
      node,
      netns: `${name}-pod-${index}`,
      ip: `${POD_PREFIX}.${ni + 1}.${slot}`,
      hostLink: `v${index}`,
      ambient: isAmbient(p, nsLabels.get(p.namespace)),
      containers: containerSpecs(o),
      cwd: dirOf(o),
    });
  }
  const services: ServicePlan[] = [];
  const usedVips = new Set<string>();
  for (const o of objects) if (o.kind === 'Service') {
    const s = serviceSpec(o);
    const ns = o.metadata.namespace ?? 'default';
    if (ns !== 'default' && !nsLabels.has(ns)) throw new ConfigError(`${o.source}: Service "${ns}/${o.metadata.name}": namespace "${ns}" is not defined`);
    if (s.clusterIP && usedVips.has(s.clusterIP)) throw new ConfigError(`${o.source}: Service "${ns}/${o.metadata.name}": clusterIP ${s.clusterIP} is already used by another Service`);
    if (s.clusterIP) usedVips.add(s.clusterIP);
  }
  const prevVips = new Map(previous?.services.map((v) => [v.key, v.vip]) ?? []);
  for (const v of prevVips.values()) usedVips.add(v);
  let nextVip = 10;
  const podByKey = new Map(pods.map((p) => [p.key, p]));
  for (const o of objects) {
    if (o.kind === 'Pod') {
      const p = podByKey.get(`${o.metadata.namespace ?? 'default'}/${o.metadata.name}`)!;
      out.push({
        ...o,
        metadata: { ...o.metadata, namespace: p.namespace, uid: p.uid },
        spec: { ...(o.spec ?? {}), nodeName: p.node },
        status: { phase: 'Pending', podIP: p.ip, hostIP: nodes.find((n) => n.name === p.node)!.ip },
      });
      continue;
    }
    if (o.kind === 'Service') {
      const s = serviceSpec(o);
      const ns0 = o.metadata.namespace ?? 'default';
      const had = prevVips.get(`${ns0}/${o.metadata.name}`);
      if (had && s.clusterIP && s.clusterIP !== had) throw new ConfigError(`${o.source}: Service "${ns0}/${o.metadata.name}": spec.clusterIP cannot change (it is ${had})`);
      let vip = s.clusterIP ?? had ?? null;
      if (!vip) {
        do vip = `${SERVICE_PREFIX}.0.${nextVip++}`;
        while (usedVips.has(vip));
        if (nextVip > 250) throw new ConfigError('too many services for local mode (240 at most)');
      }
      const ns = o.metadata.namespace ?? 'default';
      services.push({
        key: `${ns}/${o.metadata.name}`,
        vip,
        hostnames: [`${o.metadata.name}.${ns}.svc.cluster.local`, `${o.metadata.name}.${ns}.svc`, `${o.metadata.name}.${ns}`],
        ports: s.ports.map((p) => ({ port: p.port, targetPort: p.targetPort })),
      });
      out.push({ ...o, metadata: { ...o.metadata, namespace: ns }, spec: { ...(o.spec ?? {}), clusterIP: vip } });
      continue;
    }
    out.push(o);
  }
  return {
    name,
    fabric: { netns: `${name}-fabric`, bridge: 'br0', ip: `${FABRIC_PREFIX}.1`, cidr: `${FABRIC_PREFIX}.0/24` },
    nodes,
    pods,
    services,
    objects: out,
  };
}

/** The hosts file a pod sees: itself, and every service by its cluster names. */
export function hostsFile(plan: MeshPlan, pod: PodPlan): string {
  const lines = ['127.0.0.1 localhost', '::1 localhost ip6-localhost ip6-loopback', `${pod.ip} ${pod.name}`];
  for (const s of plan.services) {
    const [ns, name] = s.key.split('/') as [string, string];
    const short = ns === pod.namespace ? [name] : [];
    lines.push(`${s.vip} ${[...s.hostnames, ...short].join(' ')}`);
  }
  return lines.join('\n') + '\n';
}
