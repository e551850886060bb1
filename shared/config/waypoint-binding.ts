/**
 * Which traffic passes which waypoint (pure): Gateways of class `istio-waypoint` become the
 * model's waypoints, and `istio.io/use-waypoint` labels bind Services and pods to them.
 *
 * A binding is kept even when the waypoint it names is missing, wrongly labelled or not ready:
 * ztunnel then refuses that traffic and says why. It never sends it around the waypoint.
 */
import type { KubeObject } from './objects.js';
import type { Service, Waypoint, WaypointFor, Workload } from '../model/types.js';
import { GATEWAY_NAME_LABEL, MESH_LISTENER, USE_WAYPOINT_LABEL, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL } from './waypoint-names.js';

/** Names the waypoint's namespace when it is not the labelled object's own (Istio's label). */
export const USE_WAYPOINT_NAMESPACE_LABEL = 'istio.io/use-waypoint-namespace';

const FOR_VALUES: readonly WaypointFor[] = ['service', 'workload', 'all', 'none'];

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why a Gateway cannot be a waypoint, or null when its listeners are right. */
export function listenerProblem(gateway: KubeObject): string | null {
  const listeners = (gateway.spec ?? {}).listeners;
  const want = `{name: ${MESH_LISTENER.name}, port: ${MESH_LISTENER.port}, protocol: ${MESH_LISTENER.protocol}}`;
  if (!Array.isArray(listeners) || listeners.length === 0) return `a waypoint needs the listener ${want}; the Gateway has no listeners`;
  const mesh = listeners.find((l) => isObj(l) && l.name === MESH_LISTENER.name);
  if (!isObj(mesh)) {
    const names = listeners.map((l) => (isObj(l) ? String(l.name) : '?')).join(', ');
    return `a waypoint needs the listener ${want}; the Gateway has ${names}`;
  }
  const bad: string[] = [];
  if (mesh.port !== MESH_LISTENER.port) bad.push(`port ${String(mesh.port)} (must be ${MESH_LISTENER.port})`);
  if (mesh.protocol !== MESH_LISTENER.protocol) bad.push(`protocol ${String(mesh.protocol)} (must be ${MESH_LISTENER.protocol})`);
  return bad.length > 0 ? `listener "${MESH_LISTENER.name}" has ${bad.join(' and ')}` : null;
}

/** Whether an object is a waypoint Gateway. */
export function isWaypointGateway(o: KubeObject): boolean {
  return o.kind === 'Gateway' && o.apiVersion.startsWith('gateway.networking.k8s.io/') && (o.spec ?? {}).gatewayClassName === WAYPOINT_CLASS;
}

/** The waypoints of a config set, with their ready pods and what keeps each from taking traffic. */
export function translateWaypoints(objects: readonly KubeObject[], workloads: readonly Workload[]): Waypoint[] {
  const out: Waypoint[] = [];
  for (const o of objects) {
    if (!isWaypointGateway(o)) continue;
    const namespace = o.metadata.namespace ?? 'default';
    const name = o.metadata.name;
    const raw = o.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? 'service';
    const forValue = (FOR_VALUES as readonly string[]).includes(raw) ? (raw as WaypointFor) : null;
    const pods = workloads.filter((w) => w.namespace === namespace && w.labels[GATEWAY_NAME_LABEL] === name && w.ready && w.ip !== '').map((w) => w.uid);
    let problem: string | null = listenerProblem(o);
    if (problem === null && forValue === null) problem = `label ${WAYPOINT_FOR_LABEL}="${raw}" must be one of ${FOR_VALUES.join(', ')}`;
    if (problem === null && pods.length === 0) {
      const any = workloads.some((w) => w.namespace === namespace && w.labels[GATEWAY_NAME_LABEL] === name);
      problem = any ? 'no waypoint pod is ready' : 'no waypoint pod is running';
    }
    out.push({ key: `${namespace}/${name}`, name, namespace, for: forValue ?? 'none', pods, problem });
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** What a `use-waypoint` label on an object (else its namespace) asks for: a waypoint key, or null for none. */
export function requestedWaypoint(
  own: Record<string, string>,
  namespace: string,
  namespaceLabels: Record<string, string> | undefined,
): { key: string; fromNamespace: boolean } | null {
  const holder = own[USE_WAYPOINT_LABEL] !== undefined ? own : namespaceLabels;
  const name = holder?.[USE_WAYPOINT_LABEL];
  if (name === undefined || name === '' || name === 'none') return null;
  const ns = holder![USE_WAYPOINT_NAMESPACE_LABEL] || namespace;
  return { key: `${ns}/${name}`, fromNamespace: holder !== own };
}

function takes(w: Waypoint, kind: 'service' | 'workload'): boolean {
  return w.for === 'all' || w.for === kind;
}

export interface BindingProblem {
  object: string;
  severity: 'error' | 'warning';
  message: string;
}

/**
 * Sets `waypoint` on the Services and workloads whose labels (or namespace's) ask for one.
 * A namespace label applies only to the traffic the waypoint is for; an object's own label
 * naming a waypoint that does not take its kind of traffic is a mistake: services stay bound
 * (and refused, with the reason), pods are left unbound with a warning. The waypoint's own
 * pods and Service are never bound (that would loop).
 */
export function bindWaypoints(
  services: Service[],
  serviceLabels: ReadonlyMap<string, Record<string, string>>,
  workloads: Workload[],
  namespaceLabels: ReadonlyMap<string, Record<string, string>>,
  waypoints: readonly Waypoint[],
  problems: BindingProblem[] = [],
): void {
  const byKey = new Map(waypoints.map((w) => [w.key, w]));
  for (const s of services) {
    const labels = serviceLabels.get(s.key) ?? {};
    if (labels[GATEWAY_NAME_LABEL] !== undefined) continue;
    const want = requestedWaypoint(labels, s.namespace, namespaceLabels.get(s.namespace));
    if (!want) continue;
    const w = byKey.get(want.key);
    if (w && !takes(w, 'service')) {
      if (want.fromNamespace) continue;
      problems.push({ object: `Service ${s.key}`, severity: 'error', message: `uses waypoint ${want.key}, which is for ${w.for} traffic (label ${WAYPOINT_FOR_LABEL}); traffic to the service is refused until the label or the waypoint is fixed` });
    } else if (!w) {
      problems.push({ object: `Service ${s.key}`, severity: 'error', message: `uses waypoint ${want.key}, which does not exist; traffic to the service is refused until it does` });
    }
    s.waypoint = want.key;
  }
  for (const p of workloads) {
    if (p.labels[GATEWAY_NAME_LABEL] !== undefined) continue;
    const want = requestedWaypoint(p.labels, p.namespace, namespaceLabels.get(p.namespace));
    if (!want) continue;
    const w = byKey.get(want.key);
    if (!w) {
      if (!want.fromNamespace) problems.push({ object: `Pod ${p.namespace}/${p.name}`, severity: 'error', message: `uses waypoint ${want.key}, which does not exist; traffic addressed to the pod is refused until it does` });
      if (!want.fromNamespace) p.waypoint = want.key;
      continue;
    }
    if (!takes(w, 'workload')) {
      if (!want.fromNamespace) problems.push({ object: `Pod ${p.namespace}/${p.name}`, severity: 'warning', message: `uses waypoint ${want.key}, which is for ${w.for} traffic (label ${WAYPOINT_FOR_LABEL}); traffic addressed to the pod does not pass it` });
      continue;
    }
    p.waypoint = want.key;
  }
}

/** Why traffic bound to `key` cannot pass its waypoint now, or null when it can. */
export function waypointRefusal(key: string, waypoint: Waypoint | undefined, kind: 'service' | 'workload'): string | null {
  if (!waypoint) return `waypoint ${key} does not exist`;
  if (waypoint.problem) return `waypoint ${key} is not ready: ${waypoint.problem}`;
  if (!takes(waypoint, kind)) return `waypoint ${key} is for ${waypoint.for} traffic, not ${kind} traffic (label ${WAYPOINT_FOR_LABEL})`;
  return null;
}
