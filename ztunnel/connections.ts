import type { Logger } from '../shared/telemetry/log.js';
import type { Service, Workload } from '../shared/model/types.js';
import type { ConnectionAttributes, Decision } from '../shared/policy/evaluate.js';
import type { BridgeResult } from '../shared/hbone/bridge.js';
import { type TcpLabels, type ZtunnelMetrics } from './metrics.js';

/** One side of a proxied connection, as telemetry describes it. */
export interface Peer {
  address: string;
  workload?: Pick<Workload, 'name' | 'namespace' | 'labels'>;
  identity?: string;
}

/** A connection ztunnel carries, from accept to close. */
export interface TrackedConnection {
  id: number;
  direction: 'outbound' | 'inbound';
  src: Peer;
  dst: Peer;
  service?: Pick<Service, 'hostname' | 'namespace' | 'name'>;
  protocol: 'HBONE' | 'TCP';
  mtls: boolean;
  started: number;
  /** inbound: what authorization saw, to decide again when policies change */
  attrs?: ConnectionAttributes;
  /** inbound: the destination workload the policies select on */
  target?: { namespace: string; labels: Record<string, string> };
  /** what carries the connection (the bridge, or the joined sockets): abort() resets both ends */
  link?: { abort(): void };
}

/** A refused connection, kept for the admin view of recent denies. */
export interface DenyRecord {
  time: string;
  direction: 'inbound' | 'outbound';
  src: string;
  srcIdentity: string | null;
  dst: string;
  dstWorkload: string | null;
  policy: string | null;
  rule: number | null;
  reason: string;
}

const RECENT_DENIES = 100;

function canonical(w?: Peer['workload']): string {
  return w?.labels['service.istio.io/canonical-name'] ?? w?.labels['app.kubernetes.io/name'] ?? w?.labels.app ?? w?.name ?? 'unknown';
}

/** The Istio TCP metric labels for a connection (pure). */
export function tcpLabels(c: TrackedConnection, flags: string): TcpLabels {
  const labels: TcpLabels = {
    reporter: c.direction === 'outbound' ? 'source' : 'destination',
    source_workload: c.src.workload?.name ?? 'unknown',
    source_canonical_service: canonical(c.src.workload),
    source_workload_namespace: c.src.workload?.namespace ?? 'unknown',
    source_principal: c.src.identity ?? 'unknown',
    source_app: c.src.workload?.labels.app ?? 'unknown',
    destination_service: c.service?.hostname ?? 'unknown',
    destination_service_namespace: c.service?.namespace ?? 'unknown',
    destination_service_name: c.service?.name ?? 'unknown',
    destination_workload: c.dst.workload?.name ?? 'unknown',
    destination_canonical_service: canonical(c.dst.workload),
    destination_workload_namespace: c.dst.workload?.namespace ?? 'unknown',
    destination_principal: c.dst.identity ?? 'unknown',
    destination_app: c.dst.workload?.labels.app ?? 'unknown',
    request_protocol: 'tcp',
    response_flags: flags,
    connection_security_policy: c.mtls ? 'mutual_tls' : 'unknown',
  };
  return labels;
}

/** Open connections (for the admin view), and metrics plus one access-log line per connection. */
export class ConnectionTracker {
  private nextId = 1;
  readonly open = new Map<number, TrackedConnection>();
  /** the last denies, newest last */
  readonly denies: DenyRecord[] = [];

  constructor(private readonly metrics: ZtunnelMetrics, private readonly log: Logger) {}

  /** Registers an established connection. */
  opened(c: Omit<TrackedConnection, 'id' | 'started'>): TrackedConnection {
    // every field written here, in one order: all open connections share one shape, with their
    // fields inside the object (a spread, then more fields, would give each one more array)
    const t: TrackedConnection = {
      id: this.nextId++,
      direction: c.direction,
      src: c.src,
      dst: c.dst,
      service: c.service,
      protocol: c.protocol,
      mtls: c.mtls,
      started: Date.now(),
      attrs: c.attrs,
      target: c.target,
      link: c.link,
    };
    this.open.set(t.id, t);
    this.metrics.opened.inc(tcpLabels(t, '-'));
    return t;
  }

  /** Records the end of an established connection. `received` is what came from the client side. */
  closed(t: TrackedConnection, received: number, sent: number, outcome: 'closed' | 'reset'): void {
    this.open.delete(t.id);
    const flags = outcome === 'reset' ? 'UPSTREAM_RESET' : '-';
    const labels = tcpLabels(t, '-');
    this.metrics.closed.inc(labels);
    if (received) this.metrics.received.inc(labels, received);
    if (sent) this.metrics.sent.inc(labels, sent);
    this.log.info(
      {
        'src.addr': t.src.address,
        'src.workload': t.src.workload?.name,
        'src.namespace': t.src.workload?.namespace,
        'src.identity': t.src.identity,
        'dst.addr': t.dst.address,
        'dst.service': t.service?.hostname,
        'dst.workload': t.dst.workload?.name,
        'dst.namespace': t.dst.workload?.namespace,
        'dst.identity': t.dst.identity,
        direction: t.direction,
        protocol: t.protocol,
        bytes_sent: sent,
        bytes_recv: received,
        duration_ms: Date.now() - t.started,
        flags,
      },
      'connection complete',
    );
  }

  /** Records an authorization deny: metrics and access log (naming the policy) and the recent-denies list. */
  denied(c: Omit<TrackedConnection, 'id' | 'started'>, d: Decision): void {
    this.denies.push({
      time: new Date().toISOString(),
      direction: c.direction,
      src: c.src.address,
      srcIdentity: c.src.identity ?? null,
      dst: c.dst.address,
      dstWorkload: c.dst.workload ? `${c.dst.workload.namespace}/${c.dst.workload.name}` : null,
      policy: d.policy,
      rule: d.rule,
      reason: d.reason,
    });
    if (this.denies.length > RECENT_DENIES) this.denies.shift();
    this.failed(c, 'DENY', d.reason, d.policy);
  }

  /** Records a connection that never got established, with its reason flag. */
  failed(c: Omit<TrackedConnection, 'id' | 'started'>, flag: string, reason: string, policy?: string | null): void {
    const t: TrackedConnection = { ...c, id: 0, started: Date.now() };
    this.metrics.failed.inc(tcpLabels(t, flag));
    this.log.warn(
      { 'src.addr': c.src.address, 'src.identity': c.src.identity, 'dst.addr': c.dst.address, 'dst.service': c.service?.hostname, direction: c.direction, flags: flag, error: reason, ...(policy ? { policy } : {}) },
      'connection failed',
    );
  }
}

/**
 * The connections of one captured pod, being set up or open: they need the pod's netns
 * (upstream and app sockets are made there) and its certificate, so a released pod keeps them
 * until the last one ended. Its `ended*` functions are each shared by all the pod's
 * connections (given as the bridge's or join's `done`, with the tracked connection as its
 * value): an open connection holds no closure or promise of its own.
 */
export class PodConnections {
  private active = 0;
  private released = false;

  constructor(
    private readonly tracker: ConnectionTracker,
    /** called once the pod was released and nothing uses it any more */
    private readonly onIdle: () => void,
  ) {}

  /** Connections being set up or open. */
  get count(): number {
    return this.active;
  }

  /** Counts a connection while it is being set up, until `work` settles. */
  setUp(work: Promise<void>): void {
    this.active++;
    void work.finally(() => this.leave());
  }

  /** Registers an established connection: it counts until one of the ended functions reports it. */
  opened(c: Omit<TrackedConnection, 'id' | 'started'>): TrackedConnection {
    this.active++;
    return this.tracker.opened(c);
  }

  /** Records the end of an established connection. `received` is what came from the client side. */
  closed(t: TrackedConnection, received: number, sent: number, outcome: 'closed' | 'reset'): void {
    try {
      this.tracker.closed(t, received, sent, outcome);
    } finally {
      this.leave();
    }
  }

  /** The end of a connection whose socket (the bridge's, or the first joined one) is the client's. */
  readonly endedClientSocket = (t: TrackedConnection, r: BridgeResult): void => this.closed(t, r.bytesFromSocket, r.bytesToSocket, r.outcome);

  /** The end of a bridged connection whose client is on the tunnel (the socket is the app's). */
  readonly endedClientStream = (t: TrackedConnection, r: BridgeResult): void => this.closed(t, r.bytesToSocket, r.bytesFromSocket, r.outcome);

  /** The pod is no longer captured: once nothing uses it, onIdle. */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.active === 0) this.onIdle();
  }

  private leave(): void {
    if (--this.active === 0 && this.released) this.onIdle();
  }
}
