import { ConfigError, type KubeObject } from './objects.js';
import type { MeshSnapshot, Service, ServicePort, Workload } from '../model/types.js';
import type { AuthorizationPolicy, PeerAuthentication } from '../policy/types.js';
import { translateAuthorizationPolicy, translatePeerAuthentication } from '../policy/translate.js';
import { bindWaypoints, translateWaypoints } from './waypoint-binding.js';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
/** Written by the node agent on a pod it enrolled: `enabled` once ztunnel serves it (Istio's name and values). */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

/** Pod fields the mesh reads, checked. */
export interface PodInfo {
  name: string;
  namespace: string;
  uid: string;
  serviceAccount: string;
  nodeName: string | null;
  hostNetwork: boolean;
  labels: Record<string, string>;
  ip: string | null;
  phase: string | null;
  /**
   * false while the pod is being deleted (metadata.deletionTimestamp) or its Ready condition is
   * False (a failing readiness probe, a waypoint draining): it gets no new connections, as
   * kube-proxy sends it none. Without conditions (local mode) a running pod serves.
   */
  serving: boolean;
  /** the node agent's `ambient.istio.io/redirection` annotation: 'enabled' once ztunnel serves the pod */
  redirection: string | null;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isInteger(v) ? v : null;
}

function where(o: KubeObject): string {
  return `${o.source ?? '<input>'}: ${o.kind} "${o.metadata.namespace ?? 'default'}/${o.metadata.name}"`;
}

/** A pod's Ready condition: true, false, or null when it has none. */
function readyCondition(status: Record<string, unknown>): boolean | null {
  if (!Array.isArray(status.conditions)) return null;
  const c = (status.conditions as unknown[]).find((x): x is { type: string; status?: unknown } => typeof x === 'object' && x !== null && (x as { type?: unknown }).type === 'Ready');
  return c ? c.status === 'True' : null;
}

/** Reads a Pod object; throws ConfigError naming it when a field has the wrong type. */
export function podInfo(o: KubeObject): PodInfo {
  const spec = (o.spec ?? {}) as Record<string, unknown>;
  const status = (o.status ?? {}) as Record<string, unknown>;
  const sa = spec.serviceAccountName ?? spec.serviceAccount;
  if (sa !== undefined && typeof sa !== 'string') throw new ConfigError(`${where(o)}: spec.serviceAccountName must be a string`);
  if (spec.nodeName !== undefined && typeof spec.nodeName !== 'string') throw new ConfigError(`${where(o)}: spec.nodeName must be a string`);
  if (spec.hostNetwork !== undefined && typeof spec.hostNetwork !== 'boolean') throw new ConfigError(`${where(o)}: spec.hostNetwork must be true or false`);
  const ns = o.metadata.namespace ?? 'default';
  return {
    name: o.metadata.name,
    namespace: ns,
    uid: o.metadata.uid ?? `${ns}/${o.metadata.name}`,
    serviceAccount: typeof sa === 'string' && sa !== '' ? sa : 'default',
    nodeName: typeof spec.nodeName === 'string' ? spec.nodeName : null,
    hostNetwork: spec.hostNetwork === true,
    labels: o.metadata.labels ?? {},
    ip: typeof status.podIP === 'string' ? status.podIP : null,
    phase: typeof status.phase === 'string' ? status.phase : null,
    serving: !(o.metadata as { deletionTimestamp?: unknown }).deletionTimestamp && readyCondition(status) !== false,
    redirection: o.metadata.annotations?.[REDIRECTION_ANNOTATION] ?? null,
  };
}

/** Reads a Service's ports and selector; throws ConfigError naming the object and field. */
export function serviceSpec(o: KubeObject): { clusterIP: string | null; selector: Record<string, string> | null; ports: ServicePort[] } {
  const spec = (o.spec ?? {}) as Record<string, unknown>;
  const rawPorts = spec.ports;
  if (!Array.isArray(rawPorts) || rawPorts.length === 0) throw new ConfigError(`${where(o)}: spec.ports must list at least one port`);
  const ports: ServicePort[] = rawPorts.map((p: unknown, i: number) => {
    const pp = (p ?? {}) as Record<string, unknown>;
    const port = num(pp.port);
    if (port === null || port < 1 || port > 65535) throw new ConfigError(`${where(o)}: spec.ports[${i}].port must be a number from 1 to 65535`);
    const tp = pp.targetPort === undefined ? port : num(pp.targetPort);
    if (tp === null || tp < 1 || tp > 65535) throw new ConfigError(`${where(o)}: spec.ports[${i}].targetPort must be a number from 1 to 65535 (named ports are not supported)`);
    if (pp.protocol !== undefined && pp.protocol !== 'TCP') throw new ConfigError(`${where(o)}: spec.ports[${i}].protocol ${String(pp.protocol)} is not supported (TCP only)`);
    return { ...(typeof pp.name === 'string' ? { name: pp.name } : {}), port, targetPort: tp };
  });
  const sel = spec.selector;
  if (sel !== undefined && (typeof sel !== 'object' || sel === null || Array.isArray(sel) || Object.values(sel).some((v) => typeof v !== 'string'))) {
    throw new ConfigError(`${where(o)}: spec.selector must be a map of strings`);
  }
  const cip = spec.clusterIP;
  if (cip !== undefined && typeof cip !== 'string') throw new ConfigError(`${where(o)}: spec.clusterIP must be a string`);
  return { clusterIP: typeof cip === 'string' && cip !== 'None' && cip !== '' ? cip : null, selector: (sel as Record<string, string> | undefined) ?? null, ports };
}

/** Whether a pod is meant to be in the mesh, by its own label, then its namespace's (what the node agent acts on). */
export function isAmbient(pod: PodInfo, namespaceLabels: Record<string, string> | undefined): boolean {
  if (pod.hostNetwork) return false;
  const own = pod.labels[DATAPLANE_MODE_LABEL];
  if (own === 'none') return false;
  if (own === 'ambient') return true;
  return namespaceLabels?.[DATAPLANE_MODE_LABEL] === 'ambient';
}

/**
 * How other workloads reach a pod: HBONE once it is meant to be in the mesh *and* its node agent
 * says ztunnel serves it (the redirection annotation is `enabled`), as Istio decides. By the
 * labels alone, a pod just enrolled would be sent HBONE before anything listens on its :15008,
 * and those connections would be refused until its node agent caught up; a pod just released
 * is sent plain TCP at once, which its ztunnel still accepts while the capture is being removed.
 */
export function meshProtocol(pod: PodInfo, namespaceLabels: Record<string, string> | undefined): 'HBONE' | 'TCP' {
  return isAmbient(pod, namespaceLabels) && pod.redirection === 'enabled' ? 'HBONE' : 'TCP';
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/**
 * Workloads by namespace and label, so a selector is matched against the workloads that carry
 * its rarest label rather than against the whole mesh (services × workloads on every change).
 */
class LabelIndex {
  /** namespace → label key → label value → indices of the workloads with it, ascending */
  private index: Map<string, Map<string, Map<string, number[]>>> | null = null;

  constructor(private readonly workloads: Workload[]) {}

  /** The workloads of `namespace` that `selector` (non-empty) matches, in input order. */
  select(namespace: string, selector: Record<string, string>): Workload[] {
    const byKey = (this.index ??= this.build()).get(namespace);
    let fewest: number[] | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const has = byKey?.get(k)?.get(v);
      if (!has) return [];
      if (!fewest || has.length < fewest.length) fewest = has;
    }
    const out: Workload[] = [];
    for (const i of fewest!) if (matches(selector, this.workloads[i]!.labels)) out.push(this.workloads[i]!);
    return out;
  }

  private build(): Map<string, Map<string, Map<string, number[]>>> {
    const index = new Map<string, Map<string, Map<string, number[]>>>();
    for (let i = 0; i < this.workloads.length; i++) {
      const w = this.workloads[i]!;
      let byKey = index.get(w.namespace);
      if (!byKey) index.set(w.namespace, (byKey = new Map()));
      for (const k in w.labels) {
        if (!Object.hasOwn(w.labels, k)) continue;
        let byValue = byKey.get(k);
        if (!byValue) byKey.set(k, (byValue = new Map()));
        const v = w.labels[k]!;
        const list = byValue.get(v);
        if (list) list.push(i);
        else byValue.set(v, [i]);
      }
    }
    return index;
  }
}

/** A policy that could not be honoured as written: what and why (logged, and a status condition in a cluster). */
export interface PolicyProblem {
  object: string;
  severity: 'error' | 'warning';
  message: string;
}

/**
 * Turns Kubernetes objects into the mesh model every ztunnel receives. A policy that fails to
 * translate is reported in `problems` and its previous good version (from `previous`) is kept.
 */
export function translate(objects: KubeObject[], problems: PolicyProblem[] = [], previous?: MeshSnapshot): MeshSnapshot {
  const nsLabels = new Map<string, Record<string, string>>();
  for (const o of objects) if (o.kind === 'Namespace') nsLabels.set(o.metadata.name, o.metadata.labels ?? {});
  const workloads: Workload[] = [];
  for (const o of objects) {
    if (o.kind !== 'Pod') continue;
    const p = podInfo(o);
    if (!p.ip || !p.nodeName || p.hostNetwork) continue;
    workloads.push({
      uid: p.uid,
      name: p.name,
      namespace: p.namespace,
      serviceAccount: p.serviceAccount,
      node: p.nodeName,
      ip: p.ip,
      labels: p.labels,
      protocol: meshProtocol(p, nsLabels.get(p.namespace)),
      ready: p.phase === 'Running' && p.serving,
    });
  }
  const services: Service[] = [];
  const serviceLabels = new Map<string, Record<string, string>>();
  const selectable = new LabelIndex(workloads);
  for (const o of objects) {
    if (o.kind !== 'Service') continue;
    const s = serviceSpec(o);
    const ns = o.metadata.namespace ?? 'default';
    // Kubernetes gives a Service with an empty selector no endpoints (it is not "select everything").
    const endpoints = s.selector && Object.keys(s.selector).length > 0 ? selectable.select(ns, s.selector).map((w) => w.uid) : [];
    services.push({
      key: `${ns}/${o.metadata.name}`,
      name: o.metadata.name,
      namespace: ns,
      hostname: `${o.metadata.name}.${ns}.svc.cluster.local`,
      vip: s.clusterIP,
      ports: s.ports,
      endpoints,
    });
    serviceLabels.set(`${ns}/${o.metadata.name}`, o.metadata.labels ?? {});
  }
  const waypoints = translateWaypoints(objects, workloads);
  bindWaypoints(services, serviceLabels, workloads, nsLabels, waypoints, problems);
  const policies: AuthorizationPolicy[] = [];
  const peerAuthentications: PeerAuthentication[] = [];
  for (const o of objects) {
    if (o.kind !== 'AuthorizationPolicy' && o.kind !== 'PeerAuthentication') continue;
    const key = `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
    const object = `${o.kind} ${key}`;
    try {
      if (o.kind === 'AuthorizationPolicy') {
        const t = translateAuthorizationPolicy(o);
        for (const w of t.warnings) problems.push({ object, severity: 'warning', message: w });
        if (t.policy) policies.push(t.policy);
      } else {
        const t = translatePeerAuthentication(o);
        for (const w of t.warnings) problems.push({ object, severity: 'warning', message: w });
        peerAuthentications.push(t.policy);
      }
    } catch (err) {
      problems.push({ object, severity: 'error', message: `${(err as Error).message}; the previous version stays in force` });
      const old = o.kind === 'AuthorizationPolicy' ? previous?.policies?.find((p) => p.key === key) : previous?.peerAuthentications?.find((p) => p.key === key);
      if (old && o.kind === 'AuthorizationPolicy') policies.push(old as AuthorizationPolicy);
      else if (old) peerAuthentications.push(old as PeerAuthentication);
    }
  }
  return { workloads, services, policies, peerAuthentications, waypoints };
}
