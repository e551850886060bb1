/**
 * The waypoint's request metrics, named and labelled as Istio's (dashboards carry over):
 * `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
 * `istio_response_bytes`, reporter="waypoint". Registered in the registry passed in.
 */

import type { Metric, Registry } from 'prom-client';
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

/** One histogram of one label set: counts per bucket (not cumulative), sum and count. */
interface HistogramData {
  buckets: Float64Array;
  sum: number;
  count: number;
}

/** Everything recorded for one label set (one series of each of the four metrics). */
interface RequestSeries {
  labels: RequestLabels;
  requests: number;
  duration: HistogramData;
  requestBytes: HistogramData;
  responseBytes: HistogramData;
}

type HistogramField = 'duration' | 'requestBytes' | 'responseBytes';

/** A metric's values as prom-client's get() gives them (its typings name the type as an enum; at runtime it is this string). */
interface SeriesValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}
interface MetricSnapshot {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: SeriesValue[];
  aggregator: 'sum';
}

function histogramData(bounds: readonly number[]): HistogramData {
  return { buckets: new Float64Array(bounds.length), sum: 0, count: 0 };
}

function observe(h: HistogramData, bounds: readonly number[], value: number): void {
  if (!Number.isFinite(value)) return;
  h.sum += value;
  h.count += 1;
  for (let i = 0; i < bounds.length; i++) {
    if (value <= bounds[i]!) {
      h.buckets[i]! += 1;
      return;
    }
  }
}

/**
 * The series of the four request metrics, kept per label set. A request looks its series up once
 * (prom-client would hash and check the 19 labels once per metric, four times a request) by a
 * key of its parts, each workload's part worked out once (`workloadText`), and adds to plain
 * numbers; the labels are built only for a new series. The registry reads the series when
 * scraped, through the views below.
 */
class RequestSeriesStore {
  readonly series = new Map<string, RequestSeries>();

  get(r: RequestParts): RequestSeries {
    const svc = r.destinationService;
    const key =
      (r.source === null ? '' : workloadText(r.source).key) +
      '\u0002' +
      (r.sourcePrincipal ?? '') +
      '\u0002' +
      (svc === null ? '' : svc.hostname + '\u0001' + svc.namespace + '\u0001' + svc.name) +
      '\u0002' +
      (r.destination === null ? '' : workloadText(r.destination).key) +
      '\u0002' +
      (r.destinationPrincipal ?? '') +
      '\u0002' +
      r.protocol +
      '\u0002' +
      r.status +
      '\u0002' +
      (r.grpcStatus ?? '') +
      '\u0002' +
      r.flags;
    let s = this.series.get(key);
    if (s === undefined) {
      s = { labels: requestLabels(r), requests: 0, duration: histogramData(DURATION_BUCKETS), requestBytes: histogramData(BYTES_BUCKETS), responseBytes: histogramData(BYTES_BUCKETS) };
      this.series.set(key, s);
    }
    return s;
  }
}

/**
 * A metric of the registry read from a RequestSeriesStore: prom-client's Registry takes any
 * object with a name, help, type, aggregator and get() (its values as prom-client's own Counter
 * and Histogram give them: the same exposition text and the same get()).
 */
abstract class StoreView {
  readonly aggregator = 'sum' as const;
  readonly labelNames = [...REQUEST_LABELS];
  abstract readonly type: 'counter' | 'histogram';

  constructor(
    readonly store: RequestSeriesStore,
    readonly name: string,
    readonly help: string,
  ) {}

  abstract get(): Promise<MetricSnapshot>;
  abstract reset(): void;

  collect(): void {}

  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Metric);
    return this;
  }
}

class RequestCounterView extends StoreView {
  readonly type = 'counter' as const;

  async get(): Promise<MetricSnapshot> {
    const values: SeriesValue[] = [];
    for (const s of this.store.series.values()) if (s.requests > 0) values.push({ value: s.requests, labels: s.labels });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const s of this.store.series.values()) s.requests = 0;
  }
}

class RequestHistogramView extends StoreView {
  readonly type = 'histogram' as const;

  constructor(
    store: RequestSeriesStore,
    name: string,
    help: string,
    private readonly field: HistogramField,
    readonly bounds: readonly number[],
  ) {
    super(store, name, help);
  }

  async get(): Promise<MetricSnapshot> {
    const values: SeriesValue[] = [];
    for (const s of this.store.series.values()) {
      const h = s[this.field];
      if (h.count === 0) continue;
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += h.buckets[i]!;
        values.push({ value: acc, labels: { le: this.bounds[i]!, ...s.labels }, metricName: `${this.name}_bucket` });
      }
      values.push({ value: h.count, labels: { le: '+Inf', ...s.labels }, metricName: `${this.name}_bucket` });
      values.push({ value: h.sum, labels: { ...s.labels }, metricName: `${this.name}_sum` });
      values.push({ value: h.count, labels: { ...s.labels }, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const s of this.store.series.values()) {
      const h = s[this.field];
      h.buckets.fill(0);
      h.sum = 0;
      h.count = 0;
    }
  }
}

export class WaypointMetrics {
  private readonly store: RequestSeriesStore;

  /** Reuses the series already in the registry (two engines, one registry). */
  constructor(registry: Registry) {
    const found = registry.getSingleMetric('istio_requests_total') as unknown;
    if (found instanceof StoreView) {
      this.store = found.store;
      return;
    }
    const store = (this.store = new RequestSeriesStore());
    new RequestCounterView(store, 'istio_requests_total', 'Requests handled by the waypoint').register(registry);
    new RequestHistogramView(store, 'istio_request_duration_milliseconds', 'Request duration in milliseconds', 'duration', DURATION_BUCKETS).register(registry);
    new RequestHistogramView(store, 'istio_request_bytes', 'Request body size in bytes', 'requestBytes', BYTES_BUCKETS).register(registry);
    new RequestHistogramView(store, 'istio_response_bytes', 'Response body size in bytes', 'responseBytes', BYTES_BUCKETS).register(registry);
  }

  record(parts: RequestParts, durationMs: number, requestBytes: number, responseBytes: number): void {
    const s = this.store.get(parts);
    s.requests += 1;
    observe(s.duration, DURATION_BUCKETS, durationMs);
    observe(s.requestBytes, BYTES_BUCKETS, requestBytes);
    observe(s.responseBytes, BYTES_BUCKETS, responseBytes);
  }
}

/** What telemetry writes of a workload, worked out once per workload object (a config change brings new objects). */
export interface WorkloadText {
  /** `namespace/name`, as the access log names it */
  readonly ref: string;
  /** the canonical service, as Istio derives it: service.istio.io/canonical-name, app.kubernetes.io/name, app, or the name */
  readonly canonical: string;
  /** the app label, or "unknown" */
  readonly app: string;
  /** its part of a metrics series key: every label it gives */
  readonly key: string;
}

const workloadTexts = new WeakMap<Workload, WorkloadText>();

export function workloadText(w: Workload): WorkloadText {
  let t = workloadTexts.get(w);
  if (t === undefined) {
    const canonical = w.labels['service.istio.io/canonical-name'] ?? w.labels['app.kubernetes.io/name'] ?? w.labels.app ?? w.name;
    const app = w.labels.app ?? 'unknown';
    t = { ref: `${w.namespace}/${w.name}`, canonical, app, key: `${w.namespace}\u0001${w.name}\u0001${canonical}\u0001${app}` };
    workloadTexts.set(w, t);
  }
  return t;
}

/** The parts of a request its metric labels come from. */
export interface RequestParts {
  source: Workload | null;
  sourcePrincipal: string | null;
  destinationService: { hostname: string; name: string; namespace: string } | null;
  destination: Workload | null;
  destinationPrincipal: string | null;
  protocol: 'http' | 'grpc';
  status: number;
  grpcStatus: number | null;
  flags: string;
}

/** Labels of one request (unknown parts read "unknown", as Istio writes them). */
export function requestLabels(r: RequestParts): RequestLabels {
  return {
    reporter: 'waypoint',
    source_workload: r.source?.name ?? 'unknown',
    source_canonical_service: r.source ? workloadText(r.source).canonical : 'unknown',
    source_workload_namespace: r.source?.namespace ?? 'unknown',
    source_principal: r.sourcePrincipal ?? 'unknown',
    source_app: r.source ? workloadText(r.source).app : 'unknown',
    destination_service: r.destinationService?.hostname ?? 'unknown',
    destination_service_namespace: r.destinationService?.namespace ?? 'unknown',
    destination_service_name: r.destinationService?.name ?? 'unknown',
    destination_workload: r.destination?.name ?? 'unknown',
    destination_canonical_service: r.destination ? workloadText(r.destination).canonical : 'unknown',
    destination_workload_namespace: r.destination?.namespace ?? 'unknown',
    destination_principal: r.destinationPrincipal ?? 'unknown',
    destination_app: r.destination ? workloadText(r.destination).app : 'unknown',
    request_protocol: r.protocol,
    response_code: String(r.status),
    grpc_response_status: r.grpcStatus === null ? '' : String(r.grpcStatus),
    response_flags: r.flags,
    connection_security_policy: r.sourcePrincipal ? 'mutual_tls' : 'none',
  };
}
