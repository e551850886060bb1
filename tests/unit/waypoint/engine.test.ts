import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { bench, curl, get, h2Backend, httpBackend, many, seeded, service, WEB, type Backend, type Bench, type Pod } from './harness.js';

const ROUTE_HEAD = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 80}]
`;

/** One request in a single write, as curl sends it: preface, empty SETTINGS, HEADERS (END_STREAM). */
function h2RequestBytes(authority: string, path: string): Buffer {
  const field = (name: string, value: string): Buffer => Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
  const block = Buffer.concat([field(':method', 'GET'), field(':scheme', 'http'), field(':path', path), field(':authority', authority)]);
  const frame = (type: number, flags: number, stream: number, payload: Buffer): Buffer => {
    const head = Buffer.alloc(9);
    head.writeUIntBE(payload.length, 0, 3);
    head[3] = type;
    head[4] = flags;
    head.writeUInt32BE(stream, 5);
    return Buffer.concat([head, payload]);
  };
  return Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(0x4, 0, 0, Buffer.alloc(0)), frame(0x1, 0x5, 1, block)]);
}

/** The frames the server sends on stream 1 until it ends (END_STREAM) or resets it (RST_STREAM). */
function h2StreamOneFrames(port: number, request: Buffer): Promise<{ type: number; flags: number; length: number }[]> {
  return new Promise((resolve, reject) => {
    const frames: { type: number; flags: number; length: number }[] = [];
    let buf = Buffer.alloc(0);
    const sock = net.connect(port, '127.0.0.1', () => sock.write(request));
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`stream 1 neither ended nor was reset: ${JSON.stringify(frames)}`));
    }, 5000);
    sock.on('error', reject);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const length = buf.readUIntBE(0, 3);
        const f = { type: buf[3]!, flags: buf[4]!, length, stream: buf.readUInt32BE(5) & 0x7fffffff };
        buf = buf.subarray(9 + length);
        if (f.stream !== 1) continue;
        frames.push({ type: f.type, flags: f.flags, length });
        const ended = (f.type === 0x0 || f.type === 0x1) && (f.flags & 0x1) !== 0;
        if (ended || f.type === 0x3) {
          clearTimeout(timer);
          sock.destroy();
          resolve(frames);
          return;
        }
      }
    });
  });
}

describe('HTTP/1.1 and HTTP/2 through the engine', () => {
  let v1: Backend;
  let b: Bench;
  before(async () => {
    v1 = await httpBackend('v1', (req, res, body) => {
      res.setHeader('x-seen-request-id', String(req.headers['x-request-id'] ?? ''));
      res.setHeader('x-seen-traceparent', String(req.headers.traceparent ?? ''));
      res.setHeader('x-seen-b3', String(req.headers['x-b3-traceid'] ?? ''));
      res.setHeader('x-seen-host', String(req.headers.host ?? ''));
      if (req.url === '/chunked') {
        res.write('part1-');
        setTimeout(() => res.end('part2'), 20);
        return;
      }
      res.end(`v1 ${req.method} ${req.url} ${body}`);
    });
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: v1 }];
    b = await bench(pods, [service('reviews', '10.96.0.10', pods)]);
  });
  after(async () => {
    await b.close();
    await v1.close();
  });

  test('a Service without routes gets everything, x-request-id added, trace headers passed on', async () => {
    const r = await get(b.port, '/hello', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'x-b3-traceid': 'abc' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'v1 GET /hello ');
    assert.match(String(r.headers['x-seen-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(r.headers['x-seen-traceparent'], '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    assert.equal(r.headers['x-seen-b3'], 'abc');
    assert.equal(r.headers['x-seen-host'], 'reviews');
  });

  test('an x-request-id the client sent is kept', async () => {
    const r = await get(b.port, '/', { headers: { 'x-request-id': 'req-42' } });
    assert.equal(r.headers['x-seen-request-id'], 'req-42');
  });

  test('curl HTTP/1.1: POST body, keep-alive over two requests on one connection', async () => {
    const r = await curl(['-v', '-H', 'Host: reviews', '-d', 'payload', `http://127.0.0.1:${b.port}/a`, `http://127.0.0.1:${b.port}/b`]);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'v1 POST /a payload\n200v1 POST /b payload'); // -w writes the first status between them
    assert.match(r.stderr, /Re-using existing connection/);
  });

  test('chunked responses stream through', async () => {
    const r = await curl(['-H', 'Host: reviews', `http://127.0.0.1:${b.port}/chunked`]);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'part1-part2');
  });

  test('curl --http2-prior-knowledge', async () => {
    const r = await curl(['--http2-prior-knowledge', '-H', 'Host: reviews', '-d', 'x=1', `http://127.0.0.1:${b.port}/h2`]);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'v1 POST /h2 x=1');
  });

  test('HTTP/2 responses end with END_STREAM, not RST_STREAM (curl drops a response reset in the same packet)', async () => {
    for (const path of ['/plain', '/chunked']) {
      const frames = await h2StreamOneFrames(b.port, h2RequestBytes('reviews', path));
      const last = frames[frames.length - 1]!;
      assert.notEqual(last.type, 0x3, `${path}: stream 1 was reset: ${JSON.stringify(frames)}`);
      assert.equal(last.flags & 0x1, 0x1, `${path}: ${JSON.stringify(frames)}`);
      const data = frames.filter((f) => f.type === 0x0).reduce((n, f) => n + f.length, 0);
      assert.equal(data, path === '/plain' ? 'v1 GET /plain '.length : 'part1-part2'.length);
    }
  });

  test('node http2 client: several streams on one session', async () => {
    const c = http2.connect(`http://127.0.0.1:${b.port}`);
    try {
      const bodies = await Promise.all(
        [1, 2, 3].map(
          (i) =>
            new Promise<string>((resolve, reject) => {
              const s = c.request({ ':path': `/s${i}`, ':authority': 'reviews' });
              let d = '';
              s.on('data', (x: Buffer) => (d += x.toString()));
              s.on('end', () => resolve(d));
              s.on('error', reject);
            }),
        ),
      );
      assert.deepEqual(bodies, ['v1 GET /s1 ', 'v1 GET /s2 ', 'v1 GET /s3 ']);
    } finally {
      c.close();
    }
  });

  test('the original destination (HBONE :authority) picks the Service, whatever the Host header says', async () => {
    b.ctx.destination = { ip: '10.96.0.10', port: 80 };
    try {
      const r = await get(b.port, '/vip', { host: 'something-else.example' });
      assert.equal(r.status, 200);
      assert.equal(r.body, 'v1 GET /vip ');
    } finally {
      b.ctx.destination = null;
    }
  });

  test('an unknown host is a 404 (no route)', async () => {
    const r = await get(b.port, '/', { host: 'nope.example' });
    assert.equal(r.status, 404);
  });

  test('update() swaps routes for the next requests', async () => {
    b.update(`${ROUTE_HEAD}
  rules:
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: elsewhere.example, statusCode: 302}}]
  - backendRefs: [{name: reviews, port: 80}]
`);
    try {
      const r = await get(b.port, '/moved/x', { host: 'reviews' });
      assert.equal(r.status, 302);
      assert.equal(r.headers.location, 'http://elsewhere.example/moved/x');
      assert.equal((await get(b.port, '/still-here', { host: 'reviews' })).status, 200);
    } finally {
      b.update('');
    }
    assert.equal((await get(b.port, '/moved/x', { host: 'reviews' })).status, 200);
  });

  test('a generic Duplex (as an HBONE stream is) can be served', async () => {
    // two Duplexes wired back to back stand in for an HBONE CONNECT stream
    let client!: Duplex;
    const server: Duplex = new Duplex({
      allowHalfOpen: true,
      read() {},
      write(c, _e, cb) {
        client.push(c);
        cb();
      },
      final(cb) {
        client.push(null);
        cb();
      },
    });
    client = new Duplex({
      allowHalfOpen: true,
      read() {},
      write(c, _e, cb) {
        server.push(c);
        cb();
      },
      final(cb) {
        server.push(null);
        cb();
      },
    });
    b.engine.serveConnection(server, { source: { ip: '10.1.0.9', port: 1, identity: WEB }, destination: { ip: '10.96.0.10', port: 80 } });
    // the authority names nothing: only the context's original destination can route this
    const session = http2.connect('http://nowhere.example', { createConnection: () => client });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const s = session.request({ ':path': '/over-duplex' });
        let d = '';
        s.on('data', (x: Buffer) => (d += x.toString()));
        s.on('end', () => resolve(d));
        s.on('error', reject);
      });
      assert.equal(body, 'v1 GET /over-duplex ');
    } finally {
      session.destroy();
    }
  });
});

/** The last log line that satisfies `pred`. */
function lastLog(b: Bench, pred: (l: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
  for (let i = b.logs.length - 1; i >= 0; i--) if (pred(b.logs[i]!)) return b.logs[i];
  return undefined;
}

/** Keep-alive agent for bulk traffic. */
function agent(): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets: 16 });
}

describe('canary split', () => {
  let v1: Backend;
  let v2: Backend;
  let b: Bench;
  before(async () => {
    v1 = await httpBackend('v1');
    v2 = await httpBackend('v2');
    const p1: Pod = { name: 'reviews-v1', ip: '10.0.0.1', backend: v1 };
    const p2: Pod = { name: 'reviews-v2', ip: '10.0.0.2', backend: v2 };
    b = await bench(
      [p1, p2],
      [service('reviews', '10.96.0.10', [p1, p2]), service('reviews-v1', '10.96.0.11', [p1]), service('reviews-v2', '10.96.0.12', [p2])],
      `${ROUTE_HEAD}
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 80, weight: 90}
    - {name: reviews-v2, port: 80, weight: 10}
`,
      { random: seeded(7) },
    );
  });
  after(async () => {
    await b.close();
    await v1.close();
    await v2.close();
  });

  test('2,000 requests split 90/10 within ±3%', async () => {
    const a = agent();
    const replies = await many(2000, 16, () => get(b.port, '/', { agent: a }));
    a.destroy();
    assert.ok(replies.every((r) => r.status === 200));
    const toV2 = replies.filter((r) => r.body.startsWith('v2')).length;
    assert.ok(toV2 >= 140 && toV2 <= 260, `v2 got ${toV2} of 2000 (expected 10% ± 3%)`);
    assert.equal(v1.seen.length + v2.seen.length, 2000);
  });
});

describe('retries and timeouts', () => {
  let flaky: Backend;
  let slow: Backend;
  let good: Backend;
  let b: Bench;
  const failedOnce = new Set<string>();
  before(async () => {
    // fails the first attempt of every request, answers the second
    flaky = await httpBackend('flaky', (req, res) => {
      const id = String(req.headers['x-request-id']);
      if (!failedOnce.has(id)) {
        failedOnce.add(id);
        res.statusCode = req.url === '/500' ? 500 : 503;
        res.end('try again');
        return;
      }
      res.end(`flaky ok ${req.url}`);
    });
    slow = await httpBackend('slow', (req, res) => {
      const id = String(req.headers['x-request-id']);
      const delay = req.url === '/slow-once' && failedOnce.has(id) ? 0 : 2000;
      failedOnce.add(id);
      const t = setTimeout(() => res.end(`slow ${req.url}`), delay);
      res.on('close', () => clearTimeout(t));
    });
    good = await httpBackend('good');
    const pods: Pod[] = [
      { name: 'flaky-1', ip: '10.0.1.1', backend: flaky },
      { name: 'slow-1', ip: '10.0.2.1', backend: slow },
      { name: 'dead-1', ip: '10.0.3.1', backend: null },
      { name: 'good-1', ip: '10.0.3.2', backend: good },
    ];
    b = await bench(
      pods,
      [service('flaky', '10.96.1.1', [pods[0]!]), service('slow', '10.96.2.1', [pods[1]!]), service('half', '10.96.3.1', [pods[2]!, pods[3]!]), service('dead', '10.96.4.1', [pods[2]!])],
      `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: slow}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /slow-once}}]
    backendRefs: [{name: slow, port: 80}]
    timeouts: {request: 2s, backendRequest: 150ms}
  - backendRefs: [{name: slow, port: 80}]
    timeouts: {request: 200ms}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow]
  http:
  - match: [{uri: {prefix: /slow-once}}]
    route: [{destination: {host: slow}}]
    retries: {attempts: 2, retryOn: gateway-error}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky.default.svc.cluster.local]
  http:
  - match: [{uri: {exact: /no-retry}}]
    route: [{destination: {host: flaky}}]
    retries: {attempts: 0}
  - match: [{uri: {exact: /500}}]
    route: [{destination: {host: flaky}}]
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx"}
  - route: [{destination: {host: flaky}}]
`,
    );
  });
  after(async () => {
    await b.close();
    await Promise.all([flaky.close(), slow.close(), good.close()]);
  });

  test('the default retry policy (503) recovers when the first attempt fails', async () => {
    const r = await get(b.port, '/default', { host: 'flaky' });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'flaky ok /default');
    const line = b.logs.find((l) => l.type === 'access' && l.path === '/default');
    assert.equal(line?.attempts, 2);
  });

  test('VirtualService retries on 5xx recover from a 500', async () => {
    const r = await get(b.port, '/500', { host: 'flaky' });
    assert.equal(r.status, 200);
  });

  test('retries switched off: the 503 reaches the client', async () => {
    const r = await get(b.port, '/no-retry', { host: 'flaky' });
    assert.equal(r.status, 503);
    assert.equal(r.body, 'try again');
  });

  test('a refused connection is retried on another endpoint', async () => {
    for (let i = 0; i < 10; i++) {
      const r = await get(b.port, `/c${i}`, { host: 'half' });
      assert.equal(r.status, 200, `request ${i}: ${r.body}`);
    }
  });

  test('with no endpoint that accepts, the client gets 503 with UF and URX', async () => {
    const r = await get(b.port, '/', { host: 'dead' });
    assert.equal(r.status, 503);
    assert.match(r.body, /connection failure/);
    const line = lastLog(b, (l) => l.type === 'access' && l['dst.service'] === 'dead.default.svc.cluster.local');
    assert.equal(line?.flags, 'UF,URX');
  });

  test('the request timeout answers 504', async () => {
    const started = Date.now();
    const r = await get(b.port, '/slow', { host: 'slow' });
    assert.equal(r.status, 504);
    assert.equal(r.body, 'upstream request timeout');
    assert.ok(Date.now() - started < 1900, 'answered before the backend');
  });

  test('a per-try timeout (backendRequest) is retried under the VirtualService retryOn gateway-error', async () => {
    const r = await get(b.port, '/slow-once', { host: 'slow' });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'slow /slow-once');
  });
});

describe('fault injection', () => {
  let v1: Backend;
  let b: Bench;
  before(async () => {
    v1 = await httpBackend('v1');
    const pods: Pod[] = [{ name: 'ratings-1', ip: '10.0.0.1', backend: v1 }];
    b = await bench(
      pods,
      [service('ratings', '10.96.0.20', pods)],
      `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 100ms, percentage: {value: 100}}}
    route: [{destination: {host: ratings}}]
  - fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: ratings}}]
`,
      { random: seeded(11) },
    );
  });
  after(async () => {
    await b.close();
    await v1.close();
  });

  test('abort at 50% aborts 50% ± 5% of 2,000 requests', async () => {
    const a = agent();
    const replies = await many(2000, 16, () => get(b.port, '/', { host: 'ratings', agent: a }));
    a.destroy();
    const aborted = replies.filter((r) => r.status === 418);
    assert.ok(aborted.length >= 900 && aborted.length <= 1100, `${aborted.length} of 2000 aborted`);
    assert.equal(aborted[0]!.body, 'fault filter abort');
    assert.equal(replies.filter((r) => r.status === 200).length, 2000 - aborted.length);
  });

  test('a fixed delay holds the request, then it goes through', async () => {
    const started = Date.now();
    const r = await get(b.port, '/delay', { host: 'ratings' });
    assert.ok(Date.now() - started >= 90);
    assert.ok(r.status === 200 || r.status === 418);
    const line = lastLog(b, (l) => l.type === 'access' && l.path === '/delay');
    assert.match(String(line?.flags), /DI/);
  });
});

describe('filters: redirect, rewrite, header modifiers, mirror', () => {
  let v1: Backend;
  let shadow: Backend;
  let b: Bench;
  before(async () => {
    v1 = await httpBackend('v1', (req, res) => {
      res.setHeader('x-remove-me', 'secret');
      res.end(`v1 ${req.url} added=${String(req.headers['x-added'])} gone=${String(req.headers['x-gone'])} host=${req.headers.host}`);
    });
    shadow = await httpBackend('shadow', (_req, res) => {
      res.statusCode = 500;
      res.end('shadow answers are dropped');
    });
    const p1: Pod = { name: 'reviews-1', ip: '10.0.0.1', backend: v1 };
    const ps: Pod = { name: 'shadow-1', ip: '10.0.9.1', backend: shadow };
    b = await bench(
      [p1, ps],
      [service('reviews', '10.96.0.10', [p1]), service('reviews-shadow', '10.96.0.19', [ps])],
      `${ROUTE_HEAD}
  rules:
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.reviews, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-added, value: "yes"}], remove: [x-gone]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-resp, value: "1"}], remove: [x-remove-me]}
    backendRefs: [{name: reviews, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: reviews-shadow, port: 80}}
    backendRefs: [{name: reviews, port: 80}]
`,
    );
  });
  after(async () => {
    await b.close();
    await v1.close();
    await shadow.close();
  });

  test('RequestRedirect answers 301 with the new Location', async () => {
    const r = await get(b.port, '/old?q=1', { host: 'reviews' });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, 'http://reviews/new?q=1');
  });

  test('URLRewrite and header modifiers change what the backend and the client see', async () => {
    const r = await get(b.port, '/api/items?x=1', { host: 'reviews', headers: { 'x-gone': 'bye' } });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'v1 /v2/items?x=1 added=yes gone=undefined host=internal.reviews');
    assert.equal(r.headers['x-resp'], '1');
    assert.equal(r.headers['x-remove-me'], undefined);
  });

  test('no route matched: 404', async () => {
    const r = await get(b.port, '/elsewhere', { host: 'reviews' });
    assert.equal(r.status, 404);
  });

  test('RequestMirror sends copies (body included) and drops their answers', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await get(b.port, `/mirrored/${i}`, { host: 'reviews', method: 'POST', body: `copy-${i}` });
      assert.equal(r.status, 200);
      assert.match(r.body, /^v1 \/mirrored/);
    }
    const deadline = Date.now() + 5000;
    while (shadow.seen.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(shadow.seen.length, 5);
    assert.deepEqual(shadow.seen.map((s) => s.body).sort(), ['copy-0', 'copy-1', 'copy-2', 'copy-3', 'copy-4']);
    assert.equal(shadow.seen[0]!.headers.host, 'reviews-shadow');
  });
});

describe('outlier detection', () => {
  let good: Backend;
  let bad: Backend;
  let b: Bench;
  const clock = { t: 1_000_000 };
  before(async () => {
    good = await httpBackend('good');
    bad = await httpBackend('bad', (_req, res) => {
      res.statusCode = 500;
      res.end('broken');
    });
    const pods: Pod[] = [
      { name: 'r-good', ip: '10.0.0.1', backend: good },
      { name: 'r-bad', ip: '10.0.0.2', backend: bad },
    ];
    b = await bench(
      pods,
      [service('reviews', '10.96.0.10', pods)],
      `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
`,
      { now: () => clock.t },
    );
  });
  after(async () => {
    await b.close();
    await good.close();
    await bad.close();
  });

  test('a failing endpoint is ejected, gets no traffic, and comes back after baseEjectionTime', async () => {
    for (let i = 0; i < 6; i++) await get(b.port, '/', { host: 'reviews' });
    assert.equal(bad.seen.length, 3, 'round robin sends every other request to the bad endpoint until 3 failures');
    assert.deepEqual(Object.keys(b.engine.ejections()), ['default/reviews:80']);
    for (let i = 0; i < 10; i++) assert.equal((await get(b.port, '/', { host: 'reviews' })).status, 200);
    assert.equal(bad.seen.length, 3, 'no traffic while ejected');
    clock.t += 30_001;
    for (let i = 0; i < 4; i++) await get(b.port, '/', { host: 'reviews' });
    assert.ok(bad.seen.length > 3, 'traffic again after the ejection time');
    assert.ok(b.logs.some((l) => l.msg === 'outlier ejected'));
  });
});

describe('connection pool limits', () => {
  let slow: Backend;
  let b: Bench;
  before(async () => {
    slow = await httpBackend('slow', (_req, res) => {
      setTimeout(() => res.end('done'), 300);
    });
    const pods: Pod[] = [{ name: 'slow-1', ip: '10.0.0.1', backend: slow }];
    b = await bench(
      pods,
      [service('slow', '10.96.0.30', pods)],
      `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow, namespace: default}
spec:
  host: slow
  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 1}}
`,
    );
  });
  after(async () => {
    await b.close();
    await slow.close();
  });

  test('beyond http2MaxRequests in flight, requests get 503 with flag UO', async () => {
    const first = get(b.port, '/1', { host: 'slow' });
    // the second starts once the first is in flight at the backend
    const deadline = Date.now() + 5000;
    while (slow.seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const replies = await Promise.all([first, get(b.port, '/2', { host: 'slow' })]);
    assert.deepEqual(replies.map((r) => r.status).sort(), [200, 503]);
    const line = b.logs.find((l) => l.type === 'access' && l.status === 503);
    assert.equal(line?.flags, 'UO');
  });
});

describe('L7 authorization', () => {
  let v1: Backend;
  let b: Bench;
  before(async () => {
    v1 = await httpBackend('v1');
    const pods: Pod[] = [{ name: 'reviews-1', ip: '10.0.0.1', backend: v1 }];
    b = await bench(
      pods,
      [service('reviews', '10.96.0.10', pods)],
      `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewers, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/public/*", "/items/{*}"]}}]
  - from: [{source: {principals: [cluster.local/ns/default/sa/admin]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-debug, namespace: default}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/public/debug*"]}}]
`,
    );
  });
  after(async () => {
    await b.close();
    await v1.close();
  });

  const as = async (identity: string | null, fn: () => Promise<{ status: number; body: string }>) => {
    b.ctx.source.identity = identity;
    try {
      return await fn();
    } finally {
      b.ctx.source.identity = WEB;
    }
  };

  test('allowed: the right principal, method and path', async () => {
    assert.equal((await get(b.port, '/public/a', { host: 'reviews' })).status, 200);
    assert.equal((await get(b.port, '/items/7', { host: 'reviews' })).status, 200);
  });

  test('denied by method: 403 "RBAC: access denied"', async () => {
    const r = await get(b.port, '/public/a', { host: 'reviews', method: 'DELETE' });
    assert.equal(r.status, 403);
    assert.equal(r.body, 'RBAC: access denied');
    assert.equal(v1.seen.filter((s) => s.method === 'DELETE').length, 0);
  });

  test('denied by path, also when dot segments try to escape', async () => {
    assert.equal((await get(b.port, '/private', { host: 'reviews' })).status, 403);
    assert.equal((await get(b.port, '/public/../private', { host: 'reviews' })).status, 403);
    assert.equal((await get(b.port, '/items/7/8', { host: 'reviews' })).status, 403);
  });

  test('denied by principal; another principal allowed for everything', async () => {
    assert.equal((await as('spiffe://cluster.local/ns/default/sa/other', () => get(b.port, '/public/a', { host: 'reviews' }))).status, 403);
    assert.equal((await as(null, () => get(b.port, '/public/a', { host: 'reviews' }))).status, 403);
    assert.equal((await as('spiffe://cluster.local/ns/default/sa/admin', () => get(b.port, '/private', { host: 'reviews', method: 'POST' }))).status, 200);
  });

  test('a DENY on the waypoint wins over the ALLOW, and the decision is logged', async () => {
    const r = await as('spiffe://cluster.local/ns/default/sa/admin', () => get(b.port, '/public/debug/vars', { host: 'reviews' }));
    assert.equal(r.status, 403);
    const line = lastLog(b, (l) => l.type === 'access' && l.path === '/public/debug/vars');
    assert.match(String(line?.authz), /denied by DENY policy default\/no-debug rule 0/);
  });
});

/** A gRPC service without .proto files: JSON messages. */
const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown,
};
function method(name: string, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/demo.Greeter/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}
const GREETER: grpc.ServiceDefinition = { SayHello: method('SayHello', false), Count: method('Count', true), Fail: method('Fail', false), Secret: method('Secret', false) };

type UnaryFn = (req: unknown, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void;

describe('gRPC (@grpc/grpc-js client and server)', () => {
  let server: grpc.Server;
  let b: Bench;
  let client: grpc.Client & Record<string, UnaryFn & ((req: unknown) => grpc.ClientReadableStream<unknown>)>;
  before(async () => {
    server = new grpc.Server();
    server.addService(GREETER, {
      SayHello: (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, { msg: `hello ${call.request.name}` }),
      Count: (call: grpc.ServerWritableStream<{ n: number }, unknown>) => {
        for (let i = 1; i <= call.request.n; i++) call.write({ i });
        call.end();
      },
      Fail: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.NOT_FOUND, details: 'no such greeting' }),
      Secret: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { msg: 'secret' }),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const backend: Backend = { name: 'grpc', port, seen: [], close: async () => undefined };
    const pods: Pod[] = [{ name: 'greeter-1', ip: '10.0.5.1', backend }];
    b = await bench(
      pods,
      [service('greeter', '10.96.5.1', pods, [{ port: 9000, targetPort: 9000, name: 'grpc' }])],
      `
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 9000}]
  rules:
  - matches: [{method: {service: demo.Greeter}}]
    backendRefs: [{name: greeter, port: 9000}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter, namespace: default}
spec:
  hosts: [greeter]
  http:
  - match: [{uri: {exact: /demo.Greeter/Count}, headers: {x-fault: {exact: "yes"}}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: greeter}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: greeter}]
  action: DENY
  rules:
  - to: [{operation: {paths: [/demo.Greeter/Secret]}}]
`,
    );
    b.ctx.destination = { ip: '10.96.5.1', port: 9000 };
    const Client = grpc.makeGenericClientConstructor(GREETER, 'Greeter');
    client = new Client(`127.0.0.1:${b.port}`, grpc.credentials.createInsecure()) as typeof client;
  });
  after(async () => {
    client.close();
    await b.close();
    await new Promise<void>((r) => server.tryShutdown(() => r()));
  });

  const unary = (name: string, req: unknown, md?: grpc.Metadata): Promise<{ err: grpc.ServiceError | null; res: unknown }> =>
    new Promise((resolve) => {
      const fn = client[name] as unknown as (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => void;
      fn.call(client, req, md ?? new grpc.Metadata(), (err, res) => resolve({ err, res }));
    });

  test('unary call', async () => {
    const { err, res } = await unary('SayHello', { name: 'mesh' });
    assert.equal(err, null);
    assert.deepEqual(res, { msg: 'hello mesh' });
  });

  test('server streaming: messages then trailers with grpc-status', async () => {
    const got: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.Count!({ n: 3 });
      call.on('data', (m: unknown) => got.push(m));
      call.on('status', (st: grpc.StatusObject) => (st.code === grpc.status.OK ? resolve() : reject(new Error(st.details))));
      call.on('error', reject);
    });
    assert.deepEqual(got, [{ i: 1 }, { i: 2 }, { i: 3 }]);
  });

  test('an error status from the server reaches the client', async () => {
    const { err } = await unary('Fail', {});
    assert.equal(err?.code, grpc.status.NOT_FOUND);
    assert.equal(err?.details, 'no such greeting');
  });

  test('an L7 DENY on a gRPC method is PERMISSION_DENIED', async () => {
    const { err } = await unary('Secret', {});
    assert.equal(err?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(err?.details, 'RBAC: access denied');
  });

  test('a gRPC abort fault gives the configured status', async () => {
    const md = new grpc.Metadata();
    md.set('x-fault', 'yes');
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const fn = client.Count as unknown as (req: unknown, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>;
      const call = fn.call(client, { n: 1 }, md);
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', resolve);
    });
    assert.equal(status.code, grpc.status.UNAVAILABLE);
  });

  test('metrics carry request_protocol grpc and grpc_response_status', async () => {
    const m = await b.registry.getSingleMetric('istio_requests_total')!.get();
    const notFound = m.values.find((v) => v.labels.grpc_response_status === '5');
    assert.equal(notFound?.labels.request_protocol, 'grpc');
    assert.equal(notFound?.labels.response_code, '200');
    assert.equal(notFound?.value, 1);
    const denied = m.values.find((v) => v.labels.grpc_response_status === '7');
    assert.equal(denied?.value, 1);
  });
});

describe('WebSocket (HTTP/1.1 Upgrade) pass-through', () => {
  let ws: http.Server;
  let b: Bench;
  before(async () => {
    ws = http.createServer((_req, res) => res.end('not an upgrade'));
    ws.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${req.headers.upgrade}\r\nconnection: Upgrade\r\nx-path: ${req.url}\r\n\r\n`);
      if (head.length > 0) socket.write(head);
      socket.on('data', (c: Buffer) => socket.write(`echo:${c.toString()}`));
      socket.on('end', () => socket.end());
    });
    await new Promise<void>((r) => ws.listen(0, '127.0.0.1', r));
    const backend: Backend = { name: 'ws', port: (ws.address() as net.AddressInfo).port, seen: [], close: async () => undefined };
    const pods: Pod[] = [{ name: 'chat-1', ip: '10.0.6.1', backend }];
    b = await bench(
      pods,
      [service('chat', '10.96.6.1', pods)],
      `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: chat, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: chat}]
  action: DENY
  rules: [{to: [{operation: {paths: [/forbidden]}}]}]
`,
    );
  });
  after(async () => {
    await b.close();
    ws.closeAllConnections();
    await new Promise<void>((r) => ws.close(() => r()));
  });

  const upgrade = (path: string): Promise<{ head: string; echo: string }> =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: b.port }, () => {
        s.write(`GET ${path} HTTP/1.1\r\nhost: chat\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n`);
      });
      let buf = '';
      let sent = false;
      s.on('data', (c: Buffer) => {
        buf += c.toString();
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!buf.startsWith('HTTP/1.1 101')) {
          s.destroy();
          return resolve({ head: buf.slice(0, end), echo: buf.slice(end + 4) });
        }
        if (!sent) {
          sent = true;
          s.write('ping');
        }
        if (buf.includes('echo:ping')) {
          s.end();
          resolve({ head: buf.slice(0, end), echo: buf.slice(end + 4) });
        }
      });
      s.on('error', reject);
    });

  test('the upgrade is tunnelled and bytes flow both ways', async () => {
    const r = await upgrade('/room');
    assert.match(r.head, /^HTTP\/1\.1 101/);
    assert.match(r.head, /x-path: \/room/);
    assert.equal(r.echo, 'echo:ping');
    // the access-log line is written when the tunnel closes
    const deadline = Date.now() + 5000;
    let line: Record<string, unknown> | undefined;
    while (!(line = lastLog(b, (l) => l.type === 'access' && l.path === '/room')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(line?.status, 101);
  });

  test('an upgrade is authorized like any request', async () => {
    const r = await upgrade('/forbidden');
    assert.match(r.head, /^HTTP\/1\.1 403/);
    assert.equal(r.echo, 'RBAC: access denied');
  });
});

describe('upstream protocol, metrics and the access log', () => {
  let h2: Backend;
  let h1: Backend;
  let b: Bench;
  before(async () => {
    h2 = await h2Backend('h2');
    h1 = await httpBackend('h1', (req, res) => {
      res.statusCode = req.url === '/missing' ? 404 : 200;
      res.end(`h1 ${req.url}`);
    });
    const p2: Pod = { name: 'api-1', ip: '10.0.7.1', labels: { app: 'api' }, backend: h2 };
    const p1: Pod = { name: 'web-1', ip: '10.0.8.1', labels: { app: 'web', version: 'v1' }, backend: h1 };
    const client: Pod = { name: 'web-client', ip: '10.1.0.9', serviceAccount: 'web', labels: { app: 'client' }, backend: null };
    b = await bench([p2, p1, client], [service('api', '10.96.7.1', [p2], [{ port: 80, targetPort: 8080, name: 'http2-api' }]), service('web', '10.96.8.1', [p1])]);
  });
  after(async () => {
    await b.close();
    await h2.close();
    await h1.close();
  });

  test('an HTTP/1.1 client reaches an HTTP/2 backend (port named http2-*)', async () => {
    const r = await get(b.port, '/x', { host: 'api' });
    assert.equal(r.status, 200);
    assert.equal(r.body, 'h2 /x');
    assert.equal(h2.seen[0]!.headers[':authority'], 'api');
  });

  test('istio_* metrics and one access-log line per request after known traffic', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await get(b.port, `/ok${i}`, { host: 'web' })).status, 200);
    assert.equal((await get(b.port, '/missing', { host: 'web' })).status, 404);
    const m = await b.registry.getSingleMetric('istio_requests_total')!.get();
    const web = m.values.filter((v) => v.labels.destination_service === 'web.default.svc.cluster.local');
    const ok = web.find((v) => v.labels.response_code === '200');
    const missing = web.find((v) => v.labels.response_code === '404');
    assert.equal(ok?.value, 3);
    assert.equal(missing?.value, 1);
    assert.deepEqual(
      {
        reporter: ok?.labels.reporter,
        source_workload: ok?.labels.source_workload,
        source_principal: ok?.labels.source_principal,
        destination_workload: ok?.labels.destination_workload,
        destination_app: ok?.labels.destination_app,
        destination_principal: ok?.labels.destination_principal,
        destination_service_name: ok?.labels.destination_service_name,
        request_protocol: ok?.labels.request_protocol,
        response_flags: ok?.labels.response_flags,
        connection_security_policy: ok?.labels.connection_security_policy,
      },
      {
        reporter: 'waypoint',
        source_workload: 'web-client',
        source_principal: WEB,
        destination_workload: 'web-1',
        destination_app: 'web',
        destination_principal: 'spiffe://cluster.local/ns/default/sa/web-1',
        destination_service_name: 'web',
        request_protocol: 'http',
        response_flags: '-',
        connection_security_policy: 'mutual_tls',
      },
    );
    const text = await b.registry.metrics();
    assert.match(text, /istio_request_duration_milliseconds_bucket\{.*destination_service="web\.default\.svc\.cluster\.local".*response_code="200".*\} 3/);
    assert.match(text, /istio_response_bytes_sum\{.*response_code="200".*\} 21/); // "h1 /okN" × 3
    assert.match(text, /istio_request_bytes_count\{.*response_code="404".*\} 1/);
    const lines = b.logs.filter((l) => l.type === 'access' && l['dst.service'] === 'web.default.svc.cluster.local');
    assert.equal(lines.length, 4);
    assert.deepEqual(
      { method: lines[3]!.method, path: lines[3]!.path, status: lines[3]!.status, flags: lines[3]!.flags, dst: lines[3]!['dst.workload'], src: lines[3]!['src.identity'], route: lines[3]!.route },
      { method: 'GET', path: '/missing', status: 404, flags: '-', dst: 'default/web-1', src: WEB, route: 'default' },
    );
  });

  test('a workload whose labels change is counted under its new labels from the next request', async () => {
    const series = async (): Promise<Record<string, number>> => {
      const m = await b.registry.getSingleMetric('istio_requests_total')!.get();
      const out: Record<string, number> = {};
      for (const v of m.values) if (v.labels.destination_workload === 'web-1' && v.labels.response_code === '200') out[`${v.labels.destination_app}/${v.labels.destination_canonical_service}`] = v.value;
      return out;
    };
    const before = await series();
    const web1 = b.config.workloads.find((w) => w.name === 'web-1')!;
    const labels = web1.labels;
    try {
      b.config.workloads = b.config.workloads.map((w) => (w === web1 ? { ...w, labels: { ...w.labels, app: 'web-next', 'service.istio.io/canonical-name': 'web-canonical' } } : w));
      b.engine.update(b.config);
      assert.equal((await get(b.port, '/after', { host: 'web' })).status, 200);
      const after = await series();
      assert.equal(after['web-next/web-canonical'], 1);
      assert.deepEqual({ ...after, 'web-next/web-canonical': undefined }, { ...before, 'web-next/web-canonical': undefined }, 'the series under the old labels keep their counts');
    } finally {
      b.config.workloads = b.config.workloads.map((w) => (w.name === 'web-1' ? { ...w, labels } : w));
      b.engine.update(b.config);
    }
  });
});

describe('upstream connections', () => {
  let v1: Backend;
  let flaky: Backend;
  let b: Bench;
  let big: Bench;
  const seenIds = new Set<string>();
  before(async () => {
    v1 = await httpBackend('v1');
    flaky = await httpBackend('flaky', (req, res, body) => {
      const id = String(req.headers['x-request-id']);
      res.statusCode = seenIds.has(id) ? 200 : 503;
      seenIds.add(id);
      res.end(`${body.length}`);
    });
    const p1: Pod = { name: 'once-1', ip: '10.0.0.1', backend: v1 };
    const p2: Pod = { name: 'pooled-1', ip: '10.0.0.2', backend: v1 };
    const p3: Pod = { name: 'flaky-1', ip: '10.0.0.3', backend: flaky };
    const services = [service('once', '10.96.0.1', [p1]), service('pooled', '10.96.0.2', [p2]), service('flaky', '10.96.0.3', [p3])];
    const dr = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: once, namespace: default}
spec:
  host: once
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
`;
    b = await bench([p1, p2, p3], services, dr);
    big = await bench([p1, p2, p3], services, dr, { maxReplayBytes: 16 });
  });
  after(async () => {
    await b.close();
    await big.close();
    await v1.close();
    await flaky.close();
  });

  test('connections to an endpoint are kept alive and reused', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await get(b.port, '/', { host: 'pooled' })).status, 200);
    assert.equal(b.dials.get('10.0.0.2:8080'), 1);
  });

  test('maxRequestsPerConnection: 1 opens a connection per request', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await get(b.port, '/', { host: 'once' })).status, 200);
    assert.equal(b.dials.get('10.0.0.1:8080'), 5);
  });

  test('a body within the replay limit is sent again on retry', async () => {
    const r = await get(b.port, '/', { host: 'flaky', method: 'POST', body: 'x'.repeat(100) });
    assert.equal(r.status, 200);
    assert.equal(r.body, '100');
  });

  test('a body larger than the replay limit is not retried', async () => {
    const r = await get(big.port, '/', { host: 'flaky', method: 'POST', body: 'x'.repeat(100) });
    assert.equal(r.status, 503);
  });

  test('a client that goes away mid-request is logged with DC', async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: b.port }, () => {
        s.write('POST / HTTP/1.1\r\nhost: pooled\r\ncontent-length: 100\r\n\r\npartial');
        setTimeout(() => {
          s.destroy();
          resolve();
        }, 50);
      });
    });
    const deadline = Date.now() + 5000;
    let line: Record<string, unknown> | undefined;
    while (!(line = lastLog(b, (l) => l.type === 'access' && String(l.flags).includes('DC'))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(line, 'an access-log line with DC');
  });
});

describe('engine drain (SIGTERM)', () => {
  test('an HTTP/2 client gets a GOAWAY, its request under way is answered, and the session then closes', async () => {
    let answer: () => void = () => undefined;
    const backend = await httpBackend('slow', (req, res) => {
      answer = () => res.end(`slow ${req.url}`);
    });
    const pod: Pod = { name: 'slow', ip: '10.1.0.50', backend };
    const b = await bench([pod], [service('reviews', '10.96.0.10', [pod])]);
    const c = http2.connect(`http://127.0.0.1:${b.port}`);
    c.on('error', () => undefined);
    try {
      const goaway = new Promise<number>((resolve) => c.once('goaway', (code: number) => resolve(code)));
      const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
      const body = new Promise<string>((resolve, reject) => {
        const s = c.request({ ':path': '/under-way', ':authority': 'reviews' });
        let d = '';
        s.on('data', (x: Buffer) => (d += x.toString()));
        s.on('end', () => resolve(d));
        s.on('error', reject);
      });
      while (backend.seen.length === 0) await new Promise((r) => setTimeout(r, 10));
      b.engine.drain();
      assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
      answer();
      assert.equal(await body, 'slow /under-way');
      await closed;
    } finally {
      c.destroy();
      await b.close();
      await backend.close();
    }
  });
});
