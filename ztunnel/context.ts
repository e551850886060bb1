import type { WorkloadIndex } from '../shared/model/index.js';
import type { ConnectionPool } from '../shared/hbone/pool.js';
import type { Logger } from '../shared/telemetry/log.js';
import type { CertificateStore } from './certificates.js';
import type { ConnectionTracker, PodConnections } from './connections.js';
import type { ZtunnelMetrics } from './metrics.js';
import type { PodNetwork } from './pod-network.js';

/** What every proxy path of a ztunnel shares. */
export interface ProxyContext {
  index: WorkloadIndex;
  pool: ConnectionPool;
  certs: CertificateStore;
  tracker: ConnectionTracker;
  metrics: ZtunnelMetrics;
  log: Logger;
  trustDomain: string;
  /** round-robin cursors per service */
  cursors: Map<string, number>;
}

/** A pod this ztunnel captures: who it is and its network namespace. */
export interface LocalPodInfo {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ip: string;
  identity: string;
  net: PodNetwork;
  /** its connections being set up or open, which keep the netns and certificate */
  connections: PodConnections;
}

/** ztunnel's own ports inside a pod; a connection aimed at them is a loop. */
export const ZTUNNEL_PORTS: ReadonlySet<number> = new Set([15001, 15006, 15008]);
