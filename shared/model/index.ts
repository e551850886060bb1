import type { MeshSnapshot, MeshUpdate, Service, ServicePort, Waypoint, Workload } from './types.js';
import type { AuthorizationPolicy, PeerAuthentication } from '../policy/types.js';
import { PolicyIndex } from '../policy/evaluate.js';

/** What ztunnel resolved a destination address to. */
export type Destination =
  | { kind: 'service'; service: Service; port: ServicePort }
  | { kind: 'workload'; workload: Workload }
  | { kind: 'unknown' };

/** Indexed view of the mesh: workloads by uid and IP, services by key and VIP. */
export class WorkloadIndex {
  private readonly workloads = new Map<string, Workload>();
  private readonly byIp = new Map<string, Workload>();
  private readonly services = new Map<string, Service>();
  private readonly byVip = new Map<string, Service>();
  private readonly policyMap = new Map<string, AuthorizationPolicy>();
  private readonly peerAuthMap = new Map<string, PeerAuthentication>();
  private readonly waypointMap = new Map<string, Waypoint>();
  /** rebuilt whenever policies change; ztunnel evaluates against it */
  policies = new PolicyIndex([]);
  peerAuthentications: PeerAuthentication[] = [];
  version = 0;

  /** Applies a snapshot (replaces everything) or a delta. */
  apply(update: MeshUpdate): void {
    if (update.type === 'snapshot') {
      this.workloads.clear();
      this.byIp.clear();
      this.services.clear();
      this.byVip.clear();
      this.policyMap.clear();
      this.peerAuthMap.clear();
      this.waypointMap.clear();
    }
    for (const uid of update.removedWorkloads) this.removeWorkload(uid);
    for (const key of update.removedServices) this.removeService(key);
    for (const w of update.workloads) {
      this.removeWorkload(w.uid);
      this.workloads.set(w.uid, w);
      if (w.ip) this.byIp.set(w.ip, w);
    }
    for (const s of update.services) {
      this.removeService(s.key);
      this.services.set(s.key, s);
      if (s.vip) this.byVip.set(s.vip, s);
    }
    const policiesChanged = update.type === 'snapshot' || update.policies !== undefined || update.removedPolicies !== undefined;
    for (const k of update.removedPolicies ?? []) this.policyMap.delete(k);
    for (const p of update.policies ?? []) this.policyMap.set(p.key, p);
    for (const k of update.removedPeerAuthentications ?? []) this.peerAuthMap.delete(k);
    for (const p of update.peerAuthentications ?? []) this.peerAuthMap.set(p.key, p);
    for (const k of update.removedWaypoints ?? []) this.waypointMap.delete(k);
    for (const w of update.waypoints ?? []) this.waypointMap.set(w.key, w);
    if (policiesChanged) this.policies = new PolicyIndex([...this.policyMap.values()].sort((a, b) => (a.key < b.key ? -1 : 1)));
    this.peerAuthentications = [...this.peerAuthMap.values()];
    this.version = update.version;
    this.lastPoliciesChanged = policiesChanged || update.peerAuthentications !== undefined || update.removedPeerAuthentications !== undefined;
  }

  /** Whether the last update changed authorization or peer authentication (open connections are then re-checked). */
  lastPoliciesChanged = false;

  private removeWorkload(uid: string): void {
    const old = this.workloads.get(uid);
    if (!old) return;
    this.workloads.delete(uid);
    if (this.byIp.get(old.ip) === old) this.byIp.delete(old.ip);
  }

  private removeService(key: string): void {
    const old = this.services.get(key);
    if (!old) return;
    this.services.delete(key);
    if (old.vip && this.byVip.get(old.vip) === old) this.byVip.delete(old.vip);
  }

  /** A waypoint by its Gateway key (`ns/name`). */
  waypoint(key: string): Waypoint | undefined {
    return this.waypointMap.get(key);
  }

  workload(uid: string): Workload | undefined {
    return this.workloads.get(uid);
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.byIp.get(ip);
  }

  /** Resolves an original destination: a Service VIP port first, then a workload IP. */
  resolve(ip: string, port: number): Destination {
    const svc = this.byVip.get(ip);
    if (svc) {
      const sp = svc.ports.find((p) => p.port === port);
      if (sp) return { kind: 'service', service: svc, port: sp };
      return { kind: 'unknown' };
    }
    const w = this.byIp.get(ip);
    if (w) return { kind: 'workload', workload: w };
    return { kind: 'unknown' };
  }

  /** A service by its cluster hostname (name.namespace.svc.cluster.local). */
  serviceByHostname(hostname: string): Service | undefined {
    const [name, namespace] = hostname.split('.');
    const s = this.services.get(`${namespace}/${name}`);
    return s && s.hostname === hostname ? s : undefined;
  }

  /** The services a workload backs (for metrics' destination_service). */
  servicesOf(uid: string): Service[] {
    const out: Service[] = [];
    for (const s of this.services.values()) if (s.endpoints.includes(uid)) out.push(s);
    return out;
  }

  snapshot(): MeshSnapshot {
    return {
      workloads: [...this.workloads.values()],
      services: [...this.services.values()],
      policies: [...this.policyMap.values()],
      peerAuthentications: [...this.peerAuthMap.values()],
      waypoints: [...this.waypointMap.values()],
    };
  }
}
