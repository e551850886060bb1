/**
 * The waypoint's request metrics, named and labelled as Istio's (dashboards carry over):
 * `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
 * `istio_response_bytes`, reporter="waypoint". Registered in the registry passed in.
 */

import { Counter, Histogram, type Registry } from 'prom-client';
import type { Workload } from '../shared/model/types.js';

export const REQUEST_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;

export type RequestLabel = (typeof REQUEST_LABELS)[number];
export type RequestLabels = Record<RequestLabel, string>;

/** Istio's default buckets (ms). */
const DURATION_BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

function existing<T>(registry: Registry, name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

export class WaypointMetrics {
  readonly requests: Counter<RequestLabel>;
  readonly duration: Histogram<RequestLabel>;
  readonly requestBytes: Histogram<RequestLabel>;
  readonly responseBytes: Histogram<RequestLabel>;

  /** Reuses metrics already in the registry (two engines, one registry). */
  constructor(registry: Registry) {
    const labelNames = [...REQUEST_LABELS];
    const registers = [registry];
    this.requests = existing(registry, 'istio_requests_total') ?? new Counter({ name: 'istio_requests_total', help: 'Requests handled by the waypoint', labelNames, registers });
    this.duration =
      existing(registry, 'istio_request_duration_milliseconds') ??
      new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames, buckets: DURATION_BUCKETS, registers });
    this.requestBytes =
      existing(registry, 'istio_request_bytes') ?? new Histogram({ name: 'istio_request_bytes', help: 'Request body size in bytes', labelNames, buckets: BYTES_BUCKETS, registers });
    this.responseBytes =
      existing(registry, 'istio_response_bytes') ?? new Histogram({ name: 'istio_response_bytes', help: 'Response body size in bytes', labelNames, buckets: BYTES_BUCKETS, registers });
  }

  record(labels: RequestLabels, durationMs: number, requestBytes: number, responseBytes: number): void {
    this.requests.inc(labels);
    this.duration.observe(labels, durationMs);
    this.requestBytes.observe(labels, requestBytes);
    this.responseBytes.observe(labels, responseBytes);
  }
}

export function canonicalService(w: Workload | null | undefined): string {
  return w?.labels['service.istio.io/canonical-name'] ?? w?.labels['app.kubernetes.io/name'] ?? w?.labels.app ?? w?.name ?? 'unknown';
}

/** Labels of one request (unknown parts read "unknown", as Istio writes them). */
export function requestLabels(r: {
  source: Workload | null;
  sourcePrincipal: string | null;
  destinationService: { hostname: string; name: string; namespace: string } | null;
  destination: Workload | null;
  destinationPrincipal: string | null;
  protocol: 'http' | 'grpc';
  status: number;
  grpcStatus: number | null;
  flags: string;
}): RequestLabels {
  return {
    reporter: 'waypoint',
    source_workload: r.source?.name ?? 'unknown',
    source_canonical_service: canonicalService(r.source),
    source_workload_namespace: r.source?.namespace ?? 'unknown',
    source_principal: r.sourcePrincipal ?? 'unknown',
    source_app: r.source?.labels.app ?? 'unknown',
    destination_service: r.destinationService?.hostname ?? 'unknown',
    destination_service_namespace: r.destinationService?.namespace ?? 'unknown',
    destination_service_name: r.destinationService?.name ?? 'unknown',
    destination_workload: r.destination?.name ?? 'unknown',
    destination_canonical_service: canonicalService(r.destination),
    destination_workload_namespace: r.destination?.namespace ?? 'unknown',
    destination_principal: r.destinationPrincipal ?? 'unknown',
    destination_app: r.destination?.labels.app ?? 'unknown',
    request_protocol: r.protocol,
    response_code: String(r.status),
    grpc_response_status: r.grpcStatus === null ? '' : String(r.grpcStatus),
    response_flags: r.flags,
    connection_security_policy: r.sourcePrincipal ? 'mutual_tls' : 'none',
  };
}
