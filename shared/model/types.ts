/** The mesh as ztunnels and waypoints see it: plain data, sent over the control protocol. */
import type { AuthorizationPolicy, PeerAuthentication } from '../policy/types.js';

import { isIPv4, isIPv6 } from 'node:net';

/** How a workload is reached: HBONE when its node's ztunnel captures it, plain TCP otherwise. */
export type WorkloadProtocol = 'HBONE' | 'TCP';

export interface Workload {
  /** Stable key: the pod's uid (local mode: namespace/name). */
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string;
  ip: string;
  labels: Record<string, string>;
  protocol: WorkloadProtocol;
  /** Ready to receive traffic (pod Running with an IP). */
  ready: boolean;
  /** the waypoint (Gateway key `ns/name`) that workload-addressed traffic to this pod must pass */
  waypoint?: string;
}

export interface ServicePort {
  name?: string;
  port: number;
  /** Number, or a named container port resolved per workload (named ports need container specs; numbers only for now). */
  targetPort: number;
}

export interface Service {
  /** namespace/name */
  key: string;
  name: string;
  namespace: string;
  hostname: string;
  vip: string | null;
  ports: ServicePort[];
  /** uids of the workloads that back this service (selected and ready) */
  endpoints: string[];
  /** the waypoint (Gateway key `ns/name`) that traffic addressed to this service must pass */
  waypoint?: string;
}

/** Which traffic a waypoint takes (label `istio.io/waypoint-for`). */
export type WaypointFor = 'service' | 'workload' | 'all' | 'none';

/**
 * A waypoint: a Gateway of class `istio-waypoint` and the pods that run it. Traffic bound to a
 * waypoint that is not ready is refused (never sent around it); `problem` says why.
 */
export interface Waypoint {
  /** namespace/name of the Gateway */
  key: string;
  name: string;
  namespace: string;
  for: WaypointFor;
  /** uids of its ready pods (HBONE to `<pod IP>:15008`) */
  pods: string[];
  /** what is wrong with it, null when it takes traffic */
  problem: string | null;
}

export interface MeshSnapshot {
  workloads: Workload[];
  services: Service[];
  /** L4 authorization policies (absent: none) */
  policies?: AuthorizationPolicy[];
  peerAuthentications?: PeerAuthentication[];
  /** waypoints (absent: none) */
  waypoints?: Waypoint[];
}

/** A change to the mesh: full replacement (snapshot) or upserts and removals (delta). */
export interface MeshUpdate {
  type: 'snapshot' | 'delta';
  version: number;
  workloads: Workload[];
  services: Service[];
  removedWorkloads: string[];
  removedServices: string[];
  /** policies are absent from an update that does not change them */
  policies?: AuthorizationPolicy[];
  peerAuthentications?: PeerAuthentication[];
  removedPolicies?: string[];
  removedPeerAuthentications?: string[];
  /** waypoints are absent from an update that does not change them */
  waypoints?: Waypoint[];
  removedWaypoints?: string[];
  /** every root the mesh trusts now (PEM); in each snapshot, and in a delta when it changed (root rotation) */
  roots?: string[];
}

/** A TCP destination as seen by ztunnel. */
export interface SocketAddress {
  ip: string;
  port: number;
}

/** "ip:port", with brackets for IPv6. */
export function formatAddress(a: SocketAddress): string {
  return a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** Parses "ip:port" or "[v6]:port"; null when it is not exactly that. */
export function parseAddress(text: string): SocketAddress | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const ip = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  // the pattern only shapes the text: "[:]:80" or "010.0.0.1:80" are not addresses
  if (m[1] !== undefined ? !isIPv6(ip) : !isIPv4(ip)) return null;
  return { ip, port };
}
