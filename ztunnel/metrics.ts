import { Counter, Registry } from 'prom-client';
import { collectProcessMetrics } from '../shared/telemetry/process-metrics.js';

/** Labels of Istio's TCP metrics, as dashboards expect them. */
export const TCP_LABELS = [
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
  'response_flags',
  'connection_security_policy',
] as const;

export type TcpLabels = Record<(typeof TCP_LABELS)[number], string>;

/** ztunnel's node-level metrics (one registry, passed in, never global). */
export class ZtunnelMetrics {
  readonly registry = new Registry();
  readonly opened: Counter<(typeof TCP_LABELS)[number]>;
  readonly closed: Counter<(typeof TCP_LABELS)[number]>;
  readonly received: Counter<(typeof TCP_LABELS)[number]>;
  readonly sent: Counter<(typeof TCP_LABELS)[number]>;
  readonly failed: Counter<(typeof TCP_LABELS)[number]>;
  readonly rejected: Counter<'reason' | 'listener'>;

  constructor() {
    const labelNames = [...TCP_LABELS];
    const registers = [this.registry];
    this.opened = new Counter({ name: 'istio_tcp_connections_opened_total', help: 'TCP connections opened', labelNames, registers });
    this.closed = new Counter({ name: 'istio_tcp_connections_closed_total', help: 'TCP connections closed', labelNames, registers });
    this.received = new Counter({ name: 'istio_tcp_received_bytes_total', help: 'Bytes received from the client side of a connection', labelNames, registers });
    this.sent = new Counter({ name: 'istio_tcp_sent_bytes_total', help: 'Bytes sent to the client side of a connection', labelNames, registers });
    this.failed = new Counter({ name: 'istio_tcp_connections_failed_total', help: 'TCP connections that failed to be established', labelNames, registers });
    this.rejected = new Counter({
      name: 'ambit_ztunnel_rejected_total',
      help: 'Connections or HBONE requests refused before they reached a workload',
      labelNames: ['reason', 'listener'],
      registers,
    });
    collectProcessMetrics(this.registry);
  }
}
