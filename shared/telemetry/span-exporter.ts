/**
 * Sends finished spans to a trace collector: Zipkin v2 JSON (`POST /api/v2/spans`, what Istio's
 * default `zipkin` tracer speaks; Jaeger and Tempo take it too) or OTLP/HTTP JSON
 * (`POST /v1/traces`). Spans wait in a bounded queue and leave in batches, by size or after a
 * delay, one request at a time with a timeout. A full queue drops spans and counts them; a slow
 * or absent collector costs the requests being traced nothing.
 */

import http from 'node:http';
import https from 'node:https';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';

/** A finished span, in the terms both formats share. */
export interface Span {
  traceId: string;
  spanId: string;
  parentId: string | null;
  name: string;
  kind: 'SERVER' | 'CLIENT';
  /** wall clock, microseconds since the epoch */
  startUs: number;
  durationUs: number;
  /** the reporting side: service name and address */
  local: { service: string; ip?: string };
  /** the other side, when known */
  remote: { service?: string; ip?: string; port?: number } | null;
  tags: Record<string, string>;
  error: boolean;
  debug: boolean;
}

/** Where finished spans are handed; never blocks and never throws. */
export interface SpanSink {
  add(span: Span): void;
}

export type SpanFormat = 'zipkin' | 'otlp';

export interface SpanExporterOptions {
  /** the collector's URL, path included (`http://zipkin:9411/api/v2/spans`, `http://otel:4318/v1/traces`) */
  endpoint: string;
  /** default: OTLP when the path ends in `/v1/traces`, Zipkin otherwise */
  format?: SpanFormat;
  /** spans kept while waiting to be sent; more are dropped (default 2048) */
  maxQueue?: number;
  /** spans per request (default 256) */
  maxBatch?: number;
  /** how long a span may wait for a batch to fill (default 1000 ms) */
  flushMs?: number;
  /** per request to the collector (default 5000 ms) */
  timeoutMs?: number;
  registry: Registry;
  log: Logger;
}

/** Checks a `--tracing-endpoint` value: an http(s) URL; the format follows from the path. */
export function parseTracingEndpoint(value: string): { url: URL; format: SpanFormat } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`tracing endpoint "${value}" is not a URL (e.g. http://zipkin.istio-system:9411/api/v2/spans)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`tracing endpoint "${value}": only http and https are supported`);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/api/v2/spans';
  return { url, format: /\/v1\/traces\/?$/.test(url.pathname) ? 'otlp' : 'zipkin' };
}

function zipkinSpan(s: Span): Record<string, unknown> {
  const out: Record<string, unknown> = {
    traceId: s.traceId,
    id: s.spanId,
    kind: s.kind,
    name: s.name.toLowerCase(),
    timestamp: Math.round(s.startUs),
    duration: Math.max(1, Math.round(s.durationUs)),
    localEndpoint: endpoint(s.local.service, s.local.ip),
    tags: s.error ? { ...s.tags, error: 'true' } : s.tags,
  };
  if (s.parentId) out.parentId = s.parentId;
  if (s.remote) out.remoteEndpoint = { ...endpoint(s.remote.service, s.remote.ip), ...(s.remote.port ? { port: s.remote.port } : {}) };
  if (s.debug) out.debug = true;
  return out;
}

function endpoint(service: string | undefined, ip: string | undefined): Record<string, string> {
  const e: Record<string, string> = {};
  if (service) e.serviceName = service;
  if (ip) e[ip.includes(':') ? 'ipv6' : 'ipv4'] = ip;
  return e;
}

/** Zipkin v2 JSON: an array of spans. */
export function encodeZipkin(spans: readonly Span[]): string {
  return JSON.stringify(spans.map(zipkinSpan));
}

const OTLP_KIND = { SERVER: 2, CLIENT: 3 } as const;

function attr(key: string, value: string): Record<string, unknown> {
  return { key, value: { stringValue: value } };
}

/** OTLP/HTTP JSON (ids as hex, times as decimal strings of nanoseconds), one resource per service. */
export function encodeOtlp(spans: readonly Span[]): string {
  const byService = new Map<string, Span[]>();
  for (const s of spans) {
    const list = byService.get(s.local.service);
    if (list) list.push(s);
    else byService.set(s.local.service, [s]);
  }
  const ns = (us: number): string => (BigInt(Math.round(us)) * 1000n).toString();
  return JSON.stringify({
    resourceSpans: [...byService].map(([service, list]) => ({
      resource: { attributes: [attr('service.name', service)] },
      scopeSpans: [
        {
          scope: { name: 'ambit' },
          spans: list.map((s) => {
            const attributes = Object.entries(s.tags).map(([k, v]) => attr(k, v));
            if (s.remote?.ip) attributes.push(attr('net.peer.ip', s.remote.ip));
            return {
              traceId: s.traceId.padStart(32, '0'),
              spanId: s.spanId,
              ...(s.parentId ? { parentSpanId: s.parentId } : {}),
              name: s.name,
              kind: OTLP_KIND[s.kind],
              startTimeUnixNano: ns(s.startUs),
              endTimeUnixNano: ns(s.startUs + Math.max(1, s.durationUs)),
              attributes,
              status: s.error ? { code: 2 } : {},
            };
          }),
        },
      ],
    })),
  });
}

/** Batches spans to a collector. `close` sends what is queued (within the timeout) and stops. */
export class SpanExporter implements SpanSink {
  readonly url: URL;
  readonly format: SpanFormat;
  private readonly queue: Span[] = [];
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly flushMs: number;
  private readonly timeoutMs: number;
  private readonly agent: http.Agent;
  private readonly log: Logger;
  private readonly exported: Counter<string>;
  private readonly dropped: Counter<'reason'>;
  private readonly failures: Counter<string>;
  private timer: NodeJS.Timeout | null = null;
  private sending: Promise<void> | null = null;
  private failing = false;
  private closed = false;

  constructor(opts: SpanExporterOptions) {
    const parsed = parseTracingEndpoint(opts.endpoint);
    this.url = parsed.url;
    this.format = opts.format ?? parsed.format;
    this.maxQueue = opts.maxQueue ?? 2048;
    this.maxBatch = opts.maxBatch ?? 256;
    this.flushMs = opts.flushMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.log = opts.log;
    this.agent = this.url.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: 1 }) : new http.Agent({ keepAlive: true, maxSockets: 1 });
    const registers = [opts.registry];
    const get = <T>(name: string): T | undefined => opts.registry.getSingleMetric(name) as T | undefined;
    this.exported = get('ambit_tracing_spans_exported_total') ?? new Counter({ name: 'ambit_tracing_spans_exported_total', help: 'Spans the trace collector accepted', registers });
    this.dropped =
      get('ambit_tracing_spans_dropped_total') ??
      new Counter({ name: 'ambit_tracing_spans_dropped_total', help: 'Spans not sent: queue_full (collector too slow or absent), export_failed, closed (after shutdown)', labelNames: ['reason'], registers });
    this.failures = get('ambit_tracing_export_failures_total') ?? new Counter({ name: 'ambit_tracing_export_failures_total', help: 'Requests to the trace collector that failed or timed out', registers });
    if (!get('ambit_tracing_queue_spans')) {
      const queue = this.queue;
      new Gauge({ name: 'ambit_tracing_queue_spans', help: 'Spans waiting to be sent', registers, collect() { this.set(queue.length); } });
    }
  }

  /** Queues a span; drops it (counted) when the queue is full. Sending happens later, off the request's path. */
  add(span: Span): void {
    if (this.closed || this.queue.length >= this.maxQueue) {
      this.dropped.inc({ reason: this.closed ? 'closed' : 'queue_full' });
      return;
    }
    this.queue.push(span);
    if (this.sending !== null) return;
    if (this.queue.length >= this.maxBatch) this.schedule(0);
    else if (this.timer === null) this.schedule(this.flushMs);
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.startSending(), ms);
    this.timer.unref();
  }

  /** Sends everything queued now; resolves when the queue is empty or a request failed. */
  async flush(): Promise<void> {
    if (this.sending !== null) await this.sending;
    while (this.queue.length > 0) {
      this.startSending();
      await this.sending;
      if (this.failing) return;
    }
  }

  /** Sends what is left (spans left after a failed request are dropped) and releases the connection. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    if (this.queue.length > 0) this.dropped.inc({ reason: 'export_failed' }, this.queue.splice(0).length);
    this.agent.destroy();
  }

  private startSending(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.sending !== null || this.queue.length === 0) return;
    this.sending = this.sendBatches().finally(() => {
      this.sending = null;
      // spans that came while sending wait for their own delay
      if (this.queue.length > 0 && !this.closed && this.timer === null) this.schedule(this.queue.length >= this.maxBatch && !this.failing ? 0 : this.flushMs);
    });
  }

  private async sendBatches(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        await this.post(this.format === 'otlp' ? encodeOtlp(batch) : encodeZipkin(batch));
        this.exported.inc(batch.length);
        if (this.failing) this.log.info({ endpoint: this.url.href }, 'trace collector reachable again');
        this.failing = false;
      } catch (err) {
        this.failures.inc();
        this.dropped.inc({ reason: 'export_failed' }, batch.length);
        // one warning per outage, not one per batch
        if (!this.failing) this.log.warn({ endpoint: this.url.href, err: (err as Error).message, spans: batch.length }, 'trace collector unreachable; spans dropped');
        this.failing = true;
        // don't hammer a dead collector with what piled up: the next batch waits for the timer
        return;
      }
    }
  }

  private post(body: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const mod = this.url.protocol === 'https:' ? https : http;
      const req = mod.request(
        this.url,
        { method: 'POST', agent: this.agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.once('error', reject);
          res.once('end', () => {
            const code = res.statusCode ?? 0;
            if (code >= 200 && code < 300) resolve();
            else reject(new Error(`collector answered ${code}`));
          });
        },
      );
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.once('close', () => clearTimeout(timer));
      req.once('error', reject);
      req.end(body);
    });
  }
}
