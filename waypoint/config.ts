/**
 * What a waypoint is configured with, and the indexes built from it once per update: Services
 * by VIP and hostname, ready endpoints per Service port and subset, and the merged traffic
 * policy per destination. Plain data in (MessagePack-able), lookups out.
 */

import type { Service, Workload } from '../shared/model/types.js';
import type { L7AuthorizationPolicy } from '../shared/policy/l7.js';
import type { BackendTarget, DestinationPolicy, RouteTable, RoutingConfig, TrafficPolicy } from '../shared/routing/types.js';

/** Everything the waypoint needs; replace it whole with `WaypointEngine.update`. */
export interface WaypointConfig {
  /** the waypoint's Gateway, for policies that target it */
  waypoint: { name: string; namespace: string; gatewayClass?: string };
  trustDomain?: string;
  /** Services the waypoint may route to (those it serves and every backend they name) */
  services: Service[];
  workloads: Workload[];
  /** from shared/routing/translate.ts `buildRoutingConfig` */
  routing: RoutingConfig;
  /** from shared/policy/l7.ts `translateL7AuthorizationPolicy` */
  policies: L7AuthorizationPolicy[];
  rootNamespace?: string;
}

/** One endpoint of a destination: a ready workload at the Service's target port. */
export interface Endpoint {
  /** "ip:port" */
  key: string;
  ip: string;
  port: number;
  workload: Workload;
  /** `spiffe://td/ns/NS/sa/SA`: the identity the HBONE connection to it must present */
  identity: string;
}

/** How the waypoint talks to a Service port's endpoints. */
export type UpstreamProtocol = 'http1' | 'http2' | 'auto';

/** Istio's protocol selection from the port name (`grpc`, `grpc-web`, `http2`, `h2c`, `http-x`). */
export function portProtocol(name: string | undefined): UpstreamProtocol {
  if (!name) return 'auto';
  const p = name.split('-')[0]!.toLowerCase();
  if (p === 'grpc' || p === 'http2' || p === 'h2c') return 'http2';
  if (p === 'http') return 'http1';
  return 'auto';
}

/** A resolved destination of one attempt: endpoints of a Service port (and subset), with its policy. */
export interface Destination {
  /** `ns/name:port` or `ns/name:port/subset` */
  key: string;
  service: Service;
  port: number;
  targetPort: number;
  subset: string | null;
  protocol: UpstreamProtocol;
  endpoints: Endpoint[];
  policy: TrafficPolicy;
}

/** Where a request was addressed, once resolved. */
export type Addressed = { kind: 'service'; service: Service; port: number } | { kind: 'workload'; workload: Workload; port: number };

const EMPTY_POLICY: TrafficPolicy = { loadBalancer: null, connectionPool: null, outlierDetection: null };

function merge(base: TrafficPolicy, over: TrafficPolicy | null | undefined): TrafficPolicy {
  if (!over) return base;
  return {
    loadBalancer: over.loadBalancer ?? base.loadBalancer,
    connectionPool: over.connectionPool ?? base.connectionPool,
    outlierDetection: over.outlierDetection ?? base.outlierDetection,
  };
}

function labelsMatch(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

/** Indexes of one config; rebuilt on every update (cheap next to request handling). */
export class ServiceDirectory {
  private readonly byKey = new Map<string, Service>();
  private readonly byVip = new Map<string, Service>();
  private readonly byHost = new Map<string, Service>();
  private readonly workloads = new Map<string, Workload>();
  private readonly workloadsByIp = new Map<string, Workload>();
  private readonly destinations = new Map<string, Destination | null>();
  readonly trustDomain: string;

  constructor(readonly config: WaypointConfig) {
    this.trustDomain = config.trustDomain ?? 'cluster.local';
    for (const w of config.workloads) {
      this.workloads.set(w.uid, w);
      if (w.ip) this.workloadsByIp.set(w.ip, w);
    }
    for (const s of config.services) {
      this.byKey.set(s.key, s);
      if (s.vip) this.byVip.set(s.vip, s);
      for (const h of [s.hostname, `${s.name}.${s.namespace}`, `${s.name}.${s.namespace}.svc`]) this.byHost.set(h, s);
    }
    // short names are ambiguous across namespaces: keep the first, as DNS search in one namespace would
    for (const s of config.services) if (!this.byHost.has(s.name)) this.byHost.set(s.name, s);
  }

  service(key: string): Service | undefined {
    return this.byKey.get(key);
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.workloadsByIp.get(ip);
  }

  table(serviceKey: string): RouteTable | undefined {
    return this.config.routing.tables[serviceKey];
  }

  destinationPolicy(serviceKey: string): DestinationPolicy | undefined {
    return this.config.routing.destinations[serviceKey];
  }

  identityOf(w: Workload): string {
    return `spiffe://${this.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount || 'default'}`;
  }

  /** The Service or workload an HBONE `:authority` (or a Host header) names; null: unknown. */
  resolve(address: { ip: string; port: number } | null, host: string | undefined, defaultPort: number): Addressed | null {
    if (address !== null) {
      const s = this.byVip.get(address.ip);
      if (s && s.ports.some((p) => p.port === address.port)) return { kind: 'service', service: s, port: address.port };
      const w = this.workloadsByIp.get(address.ip);
      if (w) return { kind: 'workload', workload: w, port: address.port };
      if (s) return null;
    }
    if (!host) return null;
    let name = host.toLowerCase();
    let port = defaultPort;
    const m = /^(.*):(\d{1,5})$/.exec(name);
    if (m && !name.endsWith(']')) {
      name = m[1]!;
      port = Number(m[2]);
    }
    const s = this.byHost.get(name) ?? this.byVip.get(name);
    if (!s) return null;
    if (s.ports.some((p) => p.port === port)) return { kind: 'service', service: s, port };
    // a Host without a port (or with the client's view of it): a single-port Service is unambiguous
    if (s.ports.length === 1) return { kind: 'service', service: s, port: s.ports[0]!.port };
    return null;
  }

  /**
   * The destination of a backend reference: endpoints of that Service at the target port of
   * `target.port` (or of the port the request came in on), restricted to the subset's labels.
   * null when the Service or port does not exist.
   */
  destination(target: BackendTarget, requestPort: number): Destination | null {
    const key = `${target.service}:${target.port ?? requestPort}${target.subset ? `/${target.subset}` : ''}`;
    if (this.destinations.has(key)) return this.destinations.get(key)!;
    const d = this.buildDestination(target, requestPort, key);
    this.destinations.set(key, d);
    return d;
  }

  private buildDestination(target: BackendTarget, requestPort: number, key: string): Destination | null {
    const s = this.byKey.get(target.service);
    if (!s) return null;
    let sp = s.ports.find((p) => p.port === (target.port ?? requestPort));
    if (!sp && target.port === null && s.ports.length === 1) sp = s.ports[0];
    if (!sp) return null;
    const dr = this.config.routing.destinations[s.key];
    let policy = merge(EMPTY_POLICY, dr?.trafficPolicy);
    policy = merge(policy, dr?.portLevel.find((p) => p.port === sp.port)?.policy);
    let selector: Record<string, string> | null = null;
    if (target.subset !== null) {
      const subset = dr?.subsets.find((x) => x.name === target.subset);
      // an unknown subset has no endpoints: 503, as Istio answers
      selector = subset?.labels ?? { '\u0000no-such-subset': target.subset };
      policy = merge(policy, subset?.trafficPolicy);
    }
    const endpoints: Endpoint[] = [];
    for (const uid of s.endpoints) {
      const w = this.workloads.get(uid);
      if (!w || !w.ready || !w.ip) continue;
      if (selector !== null && !labelsMatch(selector, w.labels)) continue;
      endpoints.push({ key: `${w.ip.includes(':') ? `[${w.ip}]` : w.ip}:${sp.targetPort}`, ip: w.ip, port: sp.targetPort, workload: w, identity: this.identityOf(w) });
    }
    return { key, service: s, port: sp.port, targetPort: sp.targetPort, subset: target.subset, protocol: portProtocol(sp.name), endpoints, policy };
  }

  /** A workload-addressed destination (no Service): that workload at that port. */
  workloadDestination(w: Workload, port: number): Destination {
    const key = `${w.namespace}/${w.name}@${port}`;
    const service: Service = { key: `${w.namespace}/${w.name}`, name: w.name, namespace: w.namespace, hostname: w.ip, vip: null, ports: [{ port, targetPort: port }], endpoints: [w.uid] };
    return {
      key,
      service,
      port,
      targetPort: port,
      subset: null,
      protocol: 'auto',
      endpoints: [{ key: `${w.ip}:${port}`, ip: w.ip, port, workload: w, identity: this.identityOf(w) }],
      policy: EMPTY_POLICY,
    };
  }
}
