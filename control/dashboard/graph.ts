/**
 * The mesh as the dashboard draws it (pure): workloads, services and waypoints as nodes, and
 * traffic between them as edges, from the mesh snapshot and the ztunnels' TCP metrics (and a
 * waypoint's request metrics where a target serves them).
 */
import type { MeshSnapshot, Service, Workload } from '../../shared/model/types.js';
import { GATEWAY_NAME_LABEL } from '../../shared/config/waypoint-names.js';
import type { SeriesRate } from './rates.js';

export type GraphNodeKind = 'workload' | 'service' | 'waypoint' | 'outside';

export interface GraphNode {
  /** "workload:ns/name", "service:ns/name", "waypoint:ns/name" or "outside" */
  id: string;
  kind: GraphNodeKind;
  name: string;
  namespace: string;
  /** workload: where it runs, its address and whether its ztunnel captures it (HBONE) */
  node?: string;
  ip?: string;
  inMesh?: boolean;
  identity?: string;
  /** workload named by metrics but no longer in the mesh */
  gone?: boolean;
  /** service */
  hostname?: string;
  vip?: string | null;
  /** service: ids of the workloads behind it */
  endpoints?: string[];
  /** service or workload: the id of the waypoint its traffic passes */
  waypoint?: string;
}

export type MtlsStatus = 'mutual_tls' | 'plaintext' | 'mixed';

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  /** connections opened per second over the window */
  connectionsPerSecond: number;
  /** bytes per second both ways over the window (ztunnel counts a connection's bytes when it closes) */
  bytesPerSecond: number;
  /** requests per second (where a waypoint reports requests), else null */
  requestsPerSecond: number | null;
  /** failed / (opened + failed) over the window; null when nothing happened in it */
  errorRate: number | null;
  /** connections open now */
  open: number;
  /** connections since the ztunnels started */
  totalConnections: number;
  /** what the window's connections (opened or failed) carried; all of them, when the window was quiet */
  mtls: MtlsStatus;
}

export interface MeshGraph {
  version: number;
  /** seconds the rates span (0 until a second scrape arrives) */
  windowSeconds: number;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** The metric families the graph reads. */
export const GRAPH_COUNTERS: ReadonlySet<string> = new Set([
  'istio_tcp_connections_opened_total',
  'istio_tcp_connections_closed_total',
  'istio_tcp_received_bytes_total',
  'istio_tcp_sent_bytes_total',
  'istio_tcp_connections_failed_total',
  'istio_requests_total',
]);

export const OUTSIDE = 'outside';

const workloadId = (ns: string, name: string): string => `workload:${ns}/${name}`;
const serviceId = (ns: string, name: string): string => `service:${ns}/${name}`;
const waypointId = (key: string): string => `waypoint:${key}`;

/** The spiffe identity of a workload. */
export function workloadIdentity(w: Pick<Workload, 'namespace' | 'serviceAccount'>, trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount || 'default'}`;
}

/** "ns/name" of a waypoint reference: a string, or an object with a key or name/namespace; else null. */
export function waypointKey(ref: unknown, defaultNamespace: string): string | null {
  if (typeof ref === 'string' && ref.length > 0) return ref.includes('/') ? ref : `${defaultNamespace}/${ref}`;
  if (typeof ref !== 'object' || ref === null) return null;
  const r = ref as Record<string, unknown>;
  if (typeof r.key === 'string' && r.key.includes('/')) return r.key;
  if (typeof r.name === 'string') return `${typeof r.namespace === 'string' ? r.namespace : defaultNamespace}/${r.name}`;
  return null;
}

/** The waypoints a snapshot knows, read defensively (the field is newer than this view). */
function snapshotWaypoints(snapshot: MeshSnapshot): string[] {
  const list = (snapshot as { waypoints?: unknown }).waypoints;
  if (!Array.isArray(list)) return [];
  return list.map((w) => waypointKey(w, 'default')).filter((k): k is string => k !== null);
}

interface Totals {
  opened: number;
  openedRate: number;
  closed: number;
  bytesRate: number;
  failedRate: number;
  requestsRate: number;
  hasRequests: boolean;
  mtlsRate: number;
  plainRate: number;
  mtlsTotal: number;
  plainTotal: number;
}

const emptyTotals = (): Totals => ({ opened: 0, openedRate: 0, closed: 0, bytesRate: 0, failedRate: 0, requestsRate: 0, hasRequests: false, mtlsRate: 0, plainRate: 0, mtlsTotal: 0, plainTotal: 0 });

/** Counts a series' connections as carried over mTLS or not. */
function security(t: Totals, mtls: boolean, r: SeriesRate): void {
  if (mtls) {
    t.mtlsRate += r.perSecond;
    t.mtlsTotal += r.total;
  } else {
    t.plainRate += r.perSecond;
    t.plainTotal += r.total;
  }
}

const known = (v: string | undefined): v is string => v !== undefined && v !== '' && v !== 'unknown';

/** Builds the graph (pure). `rates` are the series of every target, over the same window. */
export function buildGraph(snapshot: MeshSnapshot, version: number, rates: SeriesRate[], windowSeconds: number, trustDomain: string): MeshGraph {
  const nodes = new Map<string, GraphNode>();
  const waypointOfPod = new Map<string, string>();
  const workloads = new Map<string, Workload>();
  const services = new Map<string, Service>();

  const addWaypoint = (key: string): string => {
    const id = waypointId(key);
    if (!nodes.has(id)) {
      const [namespace, name] = key.split('/', 2) as [string, string];
      nodes.set(id, { id, kind: 'waypoint', name, namespace });
    }
    return id;
  };
  for (const key of snapshotWaypoints(snapshot)) addWaypoint(key);
  for (const w of snapshot.workloads) {
    const gw = w.labels[GATEWAY_NAME_LABEL];
    if (gw) {
      // a waypoint's own pods are drawn as the waypoint
      waypointOfPod.set(`${w.namespace}/${w.name}`, addWaypoint(`${w.namespace}/${gw}`));
      continue;
    }
    const id = workloadId(w.namespace, w.name);
    workloads.set(id, w);
    const ref = waypointKey((w as { waypoint?: unknown }).waypoint, w.namespace);
    nodes.set(id, {
      id,
      kind: 'workload',
      name: w.name,
      namespace: w.namespace,
      node: w.node,
      ip: w.ip,
      inMesh: w.protocol === 'HBONE',
      identity: workloadIdentity(w, trustDomain),
      ...(ref ? { waypoint: addWaypoint(ref) } : {}),
    });
  }
  const byUid = new Map(snapshot.workloads.map((w) => [w.uid, w]));
  for (const s of snapshot.services) {
    const id = serviceId(s.namespace, s.name);
    services.set(id, s);
    const ref = waypointKey((s as { waypoint?: unknown }).waypoint, s.namespace);
    nodes.set(id, {
      id,
      kind: 'service',
      name: s.name,
      namespace: s.namespace,
      hostname: s.hostname,
      vip: s.vip,
      endpoints: s.endpoints.map((uid) => byUid.get(uid)).filter((w): w is Workload => w !== undefined).map((w) => waypointOfPod.get(`${w.namespace}/${w.name}`) ?? workloadId(w.namespace, w.name)),
      ...(ref ? { waypoint: addWaypoint(ref) } : {}),
    });
  }

  /** The node a metric's workload labels name; a workload no longer in the snapshot is kept, marked gone. */
  const endpoint = (ns: string | undefined, name: string | undefined): string | null => {
    if (!known(ns) || !known(name)) return null;
    const wp = waypointOfPod.get(`${ns}/${name}`);
    if (wp) return wp;
    const id = workloadId(ns, name);
    if (!nodes.has(id)) nodes.set(id, { id, kind: 'workload', name, namespace: ns, gone: true });
    return id;
  };
  const serviceNode = (ns: string | undefined, name: string | undefined): string | null => {
    if (!known(ns) || !known(name)) return null;
    const id = serviceId(ns, name);
    if (!nodes.has(id)) nodes.set(id, { id, kind: 'service', name, namespace: ns, gone: true });
    return id;
  };
  const outside = (): string => {
    if (!nodes.has(OUTSIDE)) nodes.set(OUTSIDE, { id: OUTSIDE, kind: 'outside', name: 'outside the mesh', namespace: '' });
    return OUTSIDE;
  };

  /** The hops a series' traffic took: through its service, and through a waypoint where one stands in the way. */
  const path = (l: Record<string, string>): string[] => {
    const src = endpoint(l.source_workload_namespace, l.source_workload) ?? outside();
    const svc = serviceNode(l.destination_service_namespace, l.destination_service_name);
    const dst = endpoint(l.destination_workload_namespace, l.destination_workload);
    const hops = [src];
    const srcIsWaypoint = nodes.get(src)?.kind === 'waypoint';
    const dstIsWaypoint = dst !== null && nodes.get(dst)?.kind === 'waypoint';
    // traffic to a waypoint ends there; the waypoint reports its own leg onwards
    if (dstIsWaypoint) return [src, dst];
    const via = (svc ? nodes.get(svc)?.waypoint : undefined) ?? (dst ? nodes.get(dst)?.waypoint : undefined);
    if (via && !srcIsWaypoint && via !== src) hops.push(via);
    if (svc) hops.push(svc);
    if (dst) hops.push(dst);
    else if (!svc) hops.push(outside());
    return hops;
  };

  /** Counted once: the client side reports mesh traffic; the server side only what no client ztunnel saw. */
  const counted = (l: Record<string, string>): boolean => {
    if (l.reporter !== 'destination') return true;
    const src = known(l.source_workload_namespace) && known(l.source_workload) ? workloads.get(workloadId(l.source_workload_namespace, l.source_workload)) : undefined;
    return src?.protocol !== 'HBONE';
  };

  const totals = new Map<string, { source: string; target: string; t: Totals }>();
  for (const r of rates) {
    const l = r.labels;
    if (!counted(l)) continue;
    const hops = path(l);
    for (let i = 0; i + 1 < hops.length; i++) {
      const source = hops[i]!;
      const target = hops[i + 1]!;
      if (source === target) continue;
      const id = `${source}->${target}`;
      let e = totals.get(id);
      if (!e) totals.set(id, (e = { source, target, t: emptyTotals() }));
      const t = e.t;
      const mtls = l.connection_security_policy === 'mutual_tls';
      switch (r.name) {
        case 'istio_tcp_connections_opened_total':
          t.opened += r.total;
          t.openedRate += r.perSecond;
          security(t, mtls, r);
          break;
        case 'istio_tcp_connections_closed_total':
          t.closed += r.total;
          break;
        case 'istio_tcp_received_bytes_total':
        case 'istio_tcp_sent_bytes_total':
          t.bytesRate += r.perSecond;
          break;
        case 'istio_tcp_connections_failed_total':
          t.failedRate += r.perSecond;
          security(t, mtls, r);
          break;
        case 'istio_requests_total':
          t.hasRequests = true;
          t.requestsRate += r.perSecond;
          break;
      }
    }
  }

  const edges: GraphEdge[] = [...totals].map(([id, { source, target, t }]) => {
    const attempts = t.openedRate + t.failedRate;
    const [m, p] = t.mtlsRate + t.plainRate > 0 ? [t.mtlsRate, t.plainRate] : [t.mtlsTotal, t.plainTotal];
    return {
      id,
      source,
      target,
      connectionsPerSecond: round(t.openedRate),
      bytesPerSecond: round(t.bytesRate),
      requestsPerSecond: t.hasRequests ? round(t.requestsRate) : null,
      errorRate: attempts > 0 ? round(t.failedRate / attempts) : null,
      open: Math.max(0, t.opened - t.closed),
      totalConnections: t.opened,
      mtls: m > 0 && p === 0 ? 'mutual_tls' : m === 0 ? 'plaintext' : 'mixed',
    };
  });
  edges.sort((a, b) => a.id.localeCompare(b.id));
  const sorted = [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  return { version, windowSeconds: round(windowSeconds), nodes: sorted, edges };
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}
