import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { encodeOtlp, encodeZipkin, parseTracingEndpoint, SpanExporter, type Span } from '../../../shared/telemetry/span-exporter.js';
import { parseTraceparent } from '../../../shared/telemetry/trace-context.js';
import { bench, get, httpBackend, service, WEB, type Backend, type Bench, type Pod } from './harness.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT = '00f067aa0ba902b7';

/** A trace collector on 127.0.0.1: records what is POSTed; can answer late or never. */
interface Collector {
  url: string;
  posts: { path: string; contentType: string; body: unknown }[];
  /** Zipkin spans received */
  spans: Record<string, unknown>[];
  /** hold requests without answering */
  hang: boolean;
  close(): Promise<void>;
}

async function collector(): Promise<Collector> {
  const c: Collector = { url: '', posts: [], spans: [], hang: false, close: async () => undefined };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const parsed = JSON.parse(body) as unknown;
      c.posts.push({ path: req.url ?? '', contentType: String(req.headers['content-type']), body: parsed });
      if (req.url === '/api/v2/spans') c.spans.push(...(parsed as Record<string, unknown>[]));
      if (c.hang) return;
      res.statusCode = 202;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  c.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  c.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return c;
}

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function logSink(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) }), lines };
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = m?.values.find((x) => Object.entries(labels).every(([k, want]) => x.labels[k] === want));
  return (v?.value as number | undefined) ?? 0;
}

/** The traceparent the backend saw on its last request. */
function seenTraceparent(b: Backend): { traceId: string; spanId: string; sampled: boolean } {
  const h = b.seen.at(-1)!.headers;
  const tp = parseTraceparent(String(h.traceparent));
  assert.ok(tp, `backend saw traceparent ${String(h.traceparent)}`);
  return tp;
}

describe('waypoint spans reach a Zipkin collector', () => {
  let app: Backend;
  let col: Collector;
  let b: Bench;
  let exporter: SpanExporter;
  const registry = new Registry();
  before(async () => {
    app = await httpBackend('reviews');
    col = await collector();
    exporter = new SpanExporter({ endpoint: `${col.url}/api/v2/spans`, flushMs: 10, registry, log: logSink().log });
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app, labels: { app: 'reviews' } }, { name: 'productpage-1', ip: '10.1.0.9', backend: null, labels: { app: 'productpage' } }];
    b = await bench(pods, [service('reviews', '10.96.0.10', pods.slice(0, 1))], '', { spans: exporter, registry });
  });
  after(async () => {
    await b.close();
    await exporter.close();
    await col.close();
    await app.close();
  });

  test('W3C: the span continues the client trace with the client span as parent; the app sees the waypoint span as its parent', async () => {
    const r = await get(b.port, '/reviews/1?x=1', { headers: { traceparent: `00-${TRACE}-${CLIENT}-01`, 'x-request-id': 'req-w3c', 'user-agent': 'test-client' } });
    assert.equal(r.status, 200);
    await until('the span', () => col.spans.some((s) => s.traceId === TRACE));
    const span = col.spans.find((s) => s.traceId === TRACE)!;
    const up = seenTraceparent(app);
    assert.equal(up.traceId, TRACE);
    assert.equal(span.parentId, CLIENT);
    assert.equal(span.id, up.spanId, 'the app request is the child of the waypoint span');
    assert.notEqual(span.id, CLIENT);
    assert.equal(span.kind, 'SERVER');
    assert.equal(span.name, 'get /reviews/1');
    assert.deepEqual(span.localEndpoint, { serviceName: 'waypoint.default' });
    assert.deepEqual(span.remoteEndpoint, { serviceName: 'productpage.default', ipv4: '10.1.0.9', port: (span.remoteEndpoint as { port: number }).port });
    assert.equal(typeof span.timestamp, 'number');
    assert.ok(Math.abs((span.timestamp as number) / 1000 - Date.now()) < 10_000, 'timestamp is wall-clock microseconds');
    assert.ok((span.duration as number) >= 1);
    const tags = span.tags as Record<string, string>;
    assert.equal(tags['http.method'], 'GET');
    assert.equal(tags['http.url'], 'http://reviews/reviews/1?x=1');
    assert.equal(tags['http.status_code'], '200');
    assert.equal(tags['http.protocol'], 'HTTP/1.1');
    assert.equal(tags['guid:x-request-id'], 'req-w3c');
    assert.equal(tags['upstream_cluster'], 'outbound|80||reviews.default.svc.cluster.local');
    assert.equal(tags['upstream_address'], '10.0.0.1:8080');
    assert.equal(tags['response_flags'], '-');
    assert.equal(tags['istio.source_principal'], WEB);
    assert.equal(tags['istio.destination_principal'], 'spiffe://cluster.local/ns/default/sa/reviews-1');
    assert.equal(tags['user_agent'], 'test-client');
    assert.equal(tags['component'], 'proxy');
    assert.equal(tags['error'], undefined);
    assert.equal(col.posts[0]!.contentType, 'application/json');
  });

  test('B3 multi in: same trace, parent is the client span, B3 and traceparent out', async () => {
    const trace = 'a3ce929d0e0e4736';
    const r = await get(b.port, '/b3', { headers: { 'x-b3-traceid': trace, 'x-b3-spanid': CLIENT, 'x-b3-sampled': '1' } });
    assert.equal(r.status, 200);
    await until('the span', () => col.spans.some((s) => s.traceId === trace));
    const span = col.spans.find((s) => s.traceId === trace)!;
    const h = app.seen.at(-1)!.headers;
    assert.equal(span.parentId, CLIENT);
    assert.equal(h['x-b3-traceid'], trace);
    assert.equal(h['x-b3-spanid'], span.id);
    assert.equal(h['x-b3-parentspanid'], CLIENT);
    assert.equal(h['x-b3-sampled'], '1');
    assert.equal(h.traceparent, `00-0000000000000000${trace}-${String(span.id)}-01`);
  });

  test('B3 single in: answered in B3 single', async () => {
    const trace = 'c'.repeat(32);
    await get(b.port, '/single', { headers: { b3: `${trace}-${CLIENT}-1` } });
    await until('the span', () => col.spans.some((s) => s.traceId === trace));
    const span = col.spans.find((s) => s.traceId === trace)!;
    assert.equal(app.seen.at(-1)!.headers.b3, `${trace}-${String(span.id)}-1-${CLIENT}`);
  });

  test('no trace in: the waypoint starts one; its span has no parent and is the app request parent', async () => {
    const before = col.spans.length;
    await get(b.port, '/fresh', { headers: { 'x-request-id': 'req-fresh' } });
    await until('the span', () => col.spans.length > before);
    const span = col.spans.find((s) => (s.tags as Record<string, string>)['guid:x-request-id'] === 'req-fresh')!;
    assert.equal(span.parentId, undefined);
    const up = seenTraceparent(app);
    assert.equal(up.traceId, span.traceId);
    assert.equal(up.spanId, span.id);
    assert.equal(up.sampled, true);
  });

  test('sampled=0: headers still carried (unsampled), no span exported', async () => {
    const trace = 'd'.repeat(32);
    await get(b.port, '/unsampled', { headers: { traceparent: `00-${trace}-${CLIENT}-00` } });
    // a sampled request after it: once its span is in, the unsampled one would have been too
    await get(b.port, '/marker', { headers: { 'x-request-id': 'req-marker' } });
    await until('the marker span', () => col.spans.some((s) => (s.tags as Record<string, string>)['guid:x-request-id'] === 'req-marker'));
    await exporter.flush();
    assert.equal(col.spans.some((s) => s.traceId === trace), false);
    const h = app.seen.find((s) => s.path === '/unsampled')!.headers;
    const tp = parseTraceparent(String(h.traceparent))!;
    assert.equal(tp.traceId, trace);
    assert.equal(tp.sampled, false);
    assert.notEqual(tp.spanId, CLIENT);
    assert.equal(h['x-b3-sampled'], '0');
  });

  test('a local reply (no route) is a span too, with its status and flag', async () => {
    const trace = 'e'.repeat(32);
    const r = await get(b.port, '/x', { host: 'nowhere.example', headers: { traceparent: `00-${trace}-${CLIENT}-01` } });
    assert.equal(r.status, 404);
    await until('the span', () => col.spans.some((s) => s.traceId === trace));
    const tags = col.spans.find((s) => s.traceId === trace)!.tags as Record<string, string>;
    assert.equal(tags['http.status_code'], '404');
    assert.equal(tags['response_flags'], 'NR');
    assert.equal(tags['upstream_cluster'], undefined);
  });

  test('exported spans are counted', async () => {
    await exporter.flush();
    assert.equal(await metric(registry, 'ambit_tracing_spans_exported_total'), col.spans.length);
    assert.equal(await metric(registry, 'ambit_tracing_spans_dropped_total', { reason: 'queue_full' }), 0);
  });
});

describe('without tracing configured', () => {
  test('trace headers pass through untouched and nothing is added', async () => {
    const app = await httpBackend('reviews');
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app }];
    const b = await bench(pods, [service('reviews', '10.96.0.10', pods)]);
    try {
      await get(b.port, '/', { headers: { traceparent: `00-${TRACE}-${CLIENT}-01` } });
      assert.equal(app.seen[0]!.headers.traceparent, `00-${TRACE}-${CLIENT}-01`);
      await get(b.port, '/');
      assert.equal(app.seen[1]!.headers.traceparent, undefined);
      assert.equal(app.seen[1]!.headers['x-b3-traceid'], undefined);
    } finally {
      await b.close();
      await app.close();
    }
  });
});

describe('sampling percentage', () => {
  test('0%: new traces are not exported but still propagated; a client sampling decision still counts', async () => {
    const app = await httpBackend('reviews');
    const col = await collector();
    const registry = new Registry();
    const exporter = new SpanExporter({ endpoint: `${col.url}/api/v2/spans`, flushMs: 10, registry, log: logSink().log });
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app }];
    const b = await bench(pods, [service('reviews', '10.96.0.10', pods)], '', { spans: exporter, registry, tracingSamplePercent: 0 });
    try {
      await get(b.port, '/a');
      assert.equal(seenTraceparent(app).sampled, false);
      await get(b.port, '/b', { headers: { traceparent: `00-${TRACE}-${CLIENT}-01` } });
      await until('the client-sampled span', () => col.spans.length === 1);
      await exporter.flush();
      assert.equal(col.spans.length, 1);
      assert.equal(col.spans[0]!.traceId, TRACE);
    } finally {
      await b.close();
      await exporter.close();
      await col.close();
      await app.close();
    }
  });
});

describe('OTLP/HTTP JSON', () => {
  test('a span reaches /v1/traces with the right ids', async () => {
    const app = await httpBackend('reviews');
    const col = await collector();
    const registry = new Registry();
    const exporter = new SpanExporter({ endpoint: `${col.url}/v1/traces`, flushMs: 10, registry, log: logSink().log });
    assert.equal(exporter.format, 'otlp');
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app }];
    const b = await bench(pods, [service('reviews', '10.96.0.10', pods)], '', { spans: exporter, registry });
    try {
      await get(b.port, '/otlp', { headers: { traceparent: `00-${TRACE}-${CLIENT}-01` } });
      await until('the OTLP post', () => col.posts.length > 0);
      const body = col.posts[0]!.body as {
        resourceSpans: { resource: { attributes: { key: string; value: { stringValue: string } }[] }; scopeSpans: { spans: Record<string, unknown>[] }[] }[];
      };
      assert.equal(col.posts[0]!.path, '/v1/traces');
      const rs = body.resourceSpans[0]!;
      assert.deepEqual(rs.resource.attributes, [{ key: 'service.name', value: { stringValue: 'waypoint.default' } }]);
      const span = rs.scopeSpans[0]!.spans[0]!;
      assert.equal(span.traceId, TRACE);
      assert.equal(span.parentSpanId, CLIENT);
      assert.equal(span.spanId, seenTraceparent(app).spanId);
      assert.equal(span.kind, 2);
      assert.ok(BigInt(span.endTimeUnixNano as string) > BigInt(span.startTimeUnixNano as string));
    } finally {
      await b.close();
      await exporter.close();
      await col.close();
      await app.close();
    }
  });
});

describe('a collector that is down or slow never holds requests up', () => {
  let app: Backend;
  before(async () => {
    app = await httpBackend('reviews');
  });
  after(() => app.close());

  test('nothing listening: requests succeed, spans dropped and counted, one warning', async () => {
    const closed = await collector();
    const url = closed.url;
    await closed.close();
    const registry = new Registry();
    const logs = logSink();
    const exporter = new SpanExporter({ endpoint: `${url}/api/v2/spans`, flushMs: 10, timeoutMs: 500, registry, log: logs.log });
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app }];
    const b = await bench(pods, [service('reviews', '10.96.0.10', pods)], '', { spans: exporter, registry });
    try {
      for (let i = 0; i < 5; i++) {
        const r = await get(b.port, `/down${i}`);
        assert.equal(r.status, 200);
        await new Promise((r) => setTimeout(r, 20));
      }
      await until('spans dropped', () => logs.lines.some((l) => l.msg === 'trace collector unreachable; spans dropped'));
      await exporter.flush();
      assert.equal(await metric(registry, 'ambit_tracing_spans_exported_total'), 0);
      assert.ok((await metric(registry, 'ambit_tracing_export_failures_total')) >= 1);
      assert.equal(logs.lines.filter((l) => l.msg === 'trace collector unreachable; spans dropped').length, 1);
    } finally {
      await b.close();
      await exporter.close();
    }
    assert.equal(await metric(registry, 'ambit_tracing_spans_dropped_total', { reason: 'export_failed' }), 5);
  });

  test('a collector that never answers: requests stay fast, the queue fills and drops', async () => {
    const col = await collector();
    col.hang = true;
    const registry = new Registry();
    const exporter = new SpanExporter({ endpoint: `${col.url}/api/v2/spans`, flushMs: 60_000, maxBatch: 2, maxQueue: 4, timeoutMs: 2000, registry, log: logSink().log });
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: app }];
    const b = await bench(pods, [service('reviews', '10.96.0.10', pods)], '', { spans: exporter, registry });
    try {
      const t0 = performance.now();
      for (let i = 0; i < 12; i++) assert.equal((await get(b.port, `/slow${i}`)).status, 200);
      const ms = performance.now() - t0;
      assert.ok(ms < 1500, `12 requests took ${ms.toFixed(0)} ms with the collector hanging`);
      await until('the first post', () => col.posts.length === 1);
      // one batch of 2 in flight (sent when the batch filled), 4 queued, the other 6 dropped
      assert.equal(await metric(registry, 'ambit_tracing_spans_dropped_total', { reason: 'queue_full' }), 6);
    } finally {
      await b.close();
      await col.close();
      await exporter.close();
    }
  });
});

describe('span encodings', () => {
  const span: Span = {
    traceId: 'a3ce929d0e0e4736',
    spanId: CLIENT,
    parentId: null,
    name: 'GET /x',
    kind: 'SERVER',
    startUs: 1_700_000_000_000_000,
    durationUs: 0.2,
    local: { service: 'waypoint.default' },
    remote: { ip: 'fd00::1', port: 5000 },
    tags: { 'http.status_code': '503' },
    error: true,
    debug: true,
  };

  test('Zipkin v2: microsecond integers, duration at least 1, error tag, IPv6 endpoint', () => {
    assert.deepEqual(JSON.parse(encodeZipkin([span])), [
      {
        traceId: 'a3ce929d0e0e4736',
        id: CLIENT,
        kind: 'SERVER',
        name: 'get /x',
        timestamp: 1_700_000_000_000_000,
        duration: 1,
        localEndpoint: { serviceName: 'waypoint.default' },
        remoteEndpoint: { ipv6: 'fd00::1', port: 5000 },
        tags: { 'http.status_code': '503', error: 'true' },
        debug: true,
      },
    ]);
  });

  test('OTLP: 128-bit trace id, nanosecond strings, error status', () => {
    const out = JSON.parse(encodeOtlp([span])) as { resourceSpans: { scopeSpans: { spans: Record<string, unknown>[] }[] }[] };
    const s = out.resourceSpans[0]!.scopeSpans[0]!.spans[0]!;
    assert.equal(s.traceId, '0000000000000000a3ce929d0e0e4736');
    assert.equal(s.startTimeUnixNano, '1700000000000000000');
    assert.equal(s.endTimeUnixNano, '1700000000000001000');
    assert.deepEqual(s.status, { code: 2 });
    assert.equal(s.parentSpanId, undefined);
  });

  test('endpoint URLs: format from the path, bad input refused clearly', () => {
    assert.equal(parseTracingEndpoint('http://zipkin:9411/api/v2/spans').format, 'zipkin');
    assert.equal(parseTracingEndpoint('http://otel:4318/v1/traces').format, 'otlp');
    assert.equal(parseTracingEndpoint('http://zipkin:9411').url.pathname, '/api/v2/spans');
    assert.throws(() => parseTracingEndpoint('zipkin:9411'), /only http and https/);
    assert.throws(() => parseTracingEndpoint('not a url'), /is not a URL/);
  });
});
