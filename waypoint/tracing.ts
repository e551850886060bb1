/**
 * The waypoint's span for each request (Envoy's tracing in an Istio waypoint): the hop joins the
 * client's trace (W3C or B3) or starts one, sends its own span id upstream as the parent, and
 * when the request is done reports a SERVER span with the tags Istio users look for.
 */

import type { HeaderMap } from '../shared/routing/filters.js';
import type { Span, SpanSink } from '../shared/telemetry/span-exporter.js';
import { continueTrace, readTraceHeaders, TraceIds, writeTraceHeaders, type TraceContext } from '../shared/telemetry/trace-context.js';
import type { Exchange } from './exchange.js';
import { workloadText } from './metrics.js';

/** A request's trace at the waypoint: its context and when it started (wall clock). */
export interface RequestTrace extends TraceContext {
  startUs: number;
  /** the path as the client sent it (before any rewrite) */
  path: string;
}

export interface WaypointTracerOptions {
  /** requests traced when the client made no sampling decision, in percent (default 100) */
  samplePercent?: number;
  /** in [0, 1), for sampling */
  random: () => number;
  /** wall clock in milliseconds (default `performance.timeOrigin + performance.now()`) */
  wallClockMs?: () => number;
}

/** The outcome of a request as the engine reports it. */
export interface RequestOutcome {
  status: number;
  flags: string;
  durationMs: number;
  /** the waypoint (its Gateway), for the span's service name and node id */
  waypoint: { name: string; namespace: string };
}

/** Upstream cluster in Envoy's spelling: `outbound|port|subset|hostname`. */
function clusterName(x: Exchange): string | null {
  const d = x.destination;
  return d ? `outbound|${d.port}|${d.subset ?? ''}|${d.service.hostname}` : null;
}

export class WaypointTracer {
  private readonly ids = new TraceIds();
  private readonly samplePercent: number;
  private readonly wallClockMs: () => number;

  constructor(
    private readonly sink: SpanSink,
    private readonly opts: WaypointTracerOptions,
  ) {
    const p = opts.samplePercent ?? 100;
    if (!Number.isFinite(p) || p < 0 || p > 100) throw new Error(`tracing sample percentage must be between 0 and 100, got ${p}`);
    this.samplePercent = p;
    this.wallClockMs = opts.wallClockMs ?? (() => performance.timeOrigin + performance.now());
  }

  /** Joins or starts the request's trace and rewrites the trace headers going upstream. */
  begin(headers: HeaderMap, path: string): RequestTrace {
    const ctx = continueTrace(readTraceHeaders(headers), this.ids, this.samplePercent, this.opts.random);
    writeTraceHeaders(headers, ctx);
    return { ...ctx, startUs: this.wallClockMs() * 1000, path };
  }

  /** Reports the request's span, if its trace is sampled. */
  end(x: Exchange, trace: RequestTrace, o: RequestOutcome): void {
    if (!trace.sampled) return;
    const service = `${o.waypoint.name}.${o.waypoint.namespace}`;
    const tags: Record<string, string> = {
      component: 'proxy',
      node_id: `waypoint~~${service}~${o.waypoint.namespace}.svc.cluster.local`,
      'istio.canonical_service': o.waypoint.name,
      'istio.namespace': o.waypoint.namespace,
      'guid:x-request-id': x.id,
      'http.method': x.method,
      'http.url': `${x.scheme}://${x.authority}${trace.path}`,
      'http.protocol': x.downstreamProtocol,
      'http.status_code': String(o.status),
      response_flags: o.flags,
      'peer.address': x.ctx.source.ip,
      request_size: String(x.body.bytes),
      response_size: String(x.down.bytesSent),
    };
    const ua = x.headers['user-agent'];
    if (typeof ua === 'string') tags.user_agent = ua;
    if (x.ctx.source.identity) tags['istio.source_principal'] = x.ctx.source.identity;
    const cluster = clusterName(x);
    if (cluster) {
      tags.upstream_cluster = cluster;
      tags['upstream_cluster.name'] = cluster;
    }
    if (x.endpoint) {
      tags.upstream_address = x.endpoint.key;
      tags['istio.destination_principal'] = x.endpoint.identity;
      tags['istio.destination_workload'] = `${x.endpoint.workload.namespace}/${x.endpoint.workload.name}`;
    }
    if (x.selection) tags['route'] = `${x.selection.route.key} ${x.selection.rule.name}`;
    if (x.grpc && x.grpcStatus !== null) tags['grpc.status_code'] = String(x.grpcStatus);
    const error = o.status === 0 || o.status >= 500 || (x.grpc && x.grpcStatus !== null && x.grpcStatus !== 0);
    const span: Span = {
      traceId: trace.traceId,
      spanId: trace.spanId,
      parentId: trace.parentId,
      name: `${x.method} ${trace.path.split('?')[0]}`,
      kind: 'SERVER',
      startUs: trace.startUs,
      durationUs: o.durationMs * 1000,
      local: { service },
      remote: { service: x.sourceWorkload ? `${workloadText(x.sourceWorkload).canonical}.${x.sourceWorkload.namespace}` : undefined, ip: x.ctx.source.ip || undefined, port: x.ctx.source.port || undefined },
      tags,
      error,
      debug: trace.debug,
    };
    this.sink.add(span);
  }
}
