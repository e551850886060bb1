/**
 * What the dashboard shows when a workload is clicked (pure): who it is, its traffic in and
 * out, and from its node's last report its open connections, its certificate and the
 * connections refused to or from it.
 */
import type { ReportedCertificate, ReportedConnection, ReportedDeny } from '../../shared/control/protocol.js';
import type { MeshSnapshot } from '../../shared/model/types.js';
import type { StoredReport } from '../node-reports.js';
import { workloadIdentity, type GraphEdge, type MeshGraph } from './graph.js';

export interface WorkloadDetail {
  id: string;
  name: string;
  namespace: string;
  node: string;
  ip: string;
  serviceAccount: string;
  identity: string;
  inMesh: boolean;
  ready: boolean;
  labels: Record<string, string>;
  /** "ns/name" of the services it backs */
  services: string[];
  inbound: GraphEdge[];
  outbound: GraphEdge[];
  /** as its own node's ztunnel sees them; for a workload outside the mesh, as its peers' ztunnels do */
  connections: (ReportedConnection & { reportedBy: string })[];
  certificates: (ReportedCertificate & { node: string })[];
  denies: (ReportedDeny & { node: string })[];
  /** how old each report used is, in ms (a node missing here has not reported) */
  reports: { node: string; ageMs: number }[];
}

const ipOf = (addr: string): string => (addr.startsWith('[') ? addr.slice(1, addr.indexOf(']')) : addr.slice(0, addr.lastIndexOf(':')));

/** The detail of workload `namespace/name`, or null when the mesh has no such workload. */
export function workloadDetail(
  snapshot: MeshSnapshot,
  graph: MeshGraph | null,
  reports: StoredReport[],
  namespace: string,
  name: string,
  trustDomain: string,
  now: number,
): WorkloadDetail | null {
  const w = snapshot.workloads.find((x) => x.namespace === namespace && x.name === name);
  if (!w) return null;
  const key = `${namespace}/${name}`;
  const id = `workload:${key}`;
  const identity = workloadIdentity(w, trustDomain);
  const inMesh = w.protocol === 'HBONE';
  const connections: WorkloadDetail['connections'] = [];
  const certificates: WorkloadDetail['certificates'] = [];
  const denies: WorkloadDetail['denies'] = [];
  for (const { report } of reports) {
    const own = report.node === w.node;
    for (const c of report.connections) {
      const local = (c.direction === 'outbound' && c.srcWorkload === key) || (c.direction === 'inbound' && c.dstWorkload === key);
      const peer = c.srcWorkload === key || c.dstWorkload === key;
      if ((own && local) || (!inMesh && peer)) connections.push({ ...c, reportedBy: report.node });
    }
    if (own) for (const c of report.certificates) if (c.identity === identity) certificates.push({ ...c, node: report.node });
    for (const d of report.denies) {
      if (d.dstWorkload === key || ipOf(d.src) === w.ip) denies.push({ ...d, node: report.node });
    }
  }
  connections.sort((a, b) => a.ageMs - b.ageMs);
  denies.sort((a, b) => b.time.localeCompare(a.time));
  return {
    id,
    name,
    namespace,
    node: w.node,
    ip: w.ip,
    serviceAccount: w.serviceAccount,
    identity,
    inMesh,
    ready: w.ready,
    labels: w.labels,
    services: snapshot.services.filter((s) => s.endpoints.includes(w.uid)).map((s) => s.key),
    inbound: graph?.edges.filter((e) => e.target === id) ?? [],
    outbound: graph?.edges.filter((e) => e.source === id) ?? [],
    connections,
    certificates,
    denies,
    reports: reports.map((r) => ({ node: r.report.node, ageMs: Math.max(0, now - r.receivedAt) })).sort((a, b) => a.node.localeCompare(b.node)),
  };
}
