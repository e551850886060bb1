import type { Service, ServicePort, Workload } from './types.js';

/** A chosen backend for a service-addressed connection. */
export interface Endpoint {
  workload: Workload;
  port: number;
}

/** The ready endpoints of a service port, in a stable order. */
export function readyEndpoints(service: Service, port: ServicePort, lookup: (uid: string) => Workload | undefined): Endpoint[] {
  const out: Endpoint[] = [];
  for (const uid of service.endpoints) {
    const w = lookup(uid);
    if (w && w.ready && w.ip) out.push({ workload: w, port: port.targetPort });
  }
  return out;
}

/**
 * Picks an endpoint: round robin over the ready ones, starting from `cursor`,
 * skipping endpoints the caller marked unhealthy (e.g. a connect just failed).
 * Returns null when none is usable.
 */
export function pickEndpoint(endpoints: Endpoint[], cursor: number, unhealthy: ReadonlySet<string> = new Set()): Endpoint | null {
  const n = endpoints.length;
  for (let i = 0; i < n; i++) {
    const e = endpoints[(cursor + i) % n]!;
    if (!unhealthy.has(e.workload.uid)) return e;
  }
  return null;
}
