// End to end: the waypoint's L7 features through the real mesh path (source ztunnel → HBONE →
// waypoint → HBONE → destination ztunnel) with real clients: @grpc/grpc-js, a WebSocket client,
// h2load, curl; and the resilience of routes and destination rules: retries, timeouts, fault
// abort, mirroring, outlier detection. Fixtures: fixtures/waypoint-l7 (pods, Services, routes)
// and fixtures/apps (l7-app, grpc-echo, grpc-client, ws-client, http-load).
// Needs root; the mesh is torn down even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';

interface Load {
  byPod: Record<string, number>;
  byStatus: Record<string, number>;
  errors: number;
}

/** What l7-app answers on /stats. */
interface AppStats {
  pod: string;
  total: number;
  byPrefix: Record<string, number>;
  shadow: number;
}

interface AccessLine {
  method: string;
  path: string;
  protocol: string;
  status: number;
  flags: string;
  attempts: number;
  'dst.workload': string | null;
  'grpc.status': number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const APPS = join(FIXTURES, 'apps');

/** Splits a table into rows of {COLUMN: cell}, by where each header starts. */
function parseTable(text: string): Record<string, string>[] {
  const [header, ...lines] = text.trimEnd().split('\n');
  const cols = [...header!.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], start: m.index! }));
  return lines.map((line) => Object.fromEntries(cols.map((c, i) => [c.name, line.slice(c.start, cols[i + 1]?.start ?? line.length).trim()])));
}

describe('waypoint L7: gRPC, WebSocket, h2load, retries, timeouts, faults, mirroring, outlier detection', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`wpl7${process.pid % 100000}`);
  let st: Awaited<ReturnType<TestMesh['status']>>;
  const pod = (name: string) => {
    const p = st.pods.find((x) => x.name === name);
    assert.ok(p, `pod ${name} runs`);
    return p;
  };

  const load = async (url: string, n: number, concurrency = 4): Promise<Load> => {
    const r = await mesh.exec('shop/client', ['node', join(APPS, 'http-load.mjs'), url, String(n), 'GET', String(concurrency)], 180_000);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Load;
  };
  const curl = async (args: string[]) => mesh.exec('shop/client', ['curl', '-sS', '-m', '10', ...args]);
  const stats = async (service: string): Promise<AppStats> => {
    const r = await curl([`http://${service}.shop/stats`]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as AppStats;
  };
  const waypointLog = async (): Promise<string[]> => (await readFile(join(mesh.stateDir, mesh.name, 'logs', 'pod-shop-waypoint-0-waypoint.log'), 'utf8')).split('\n');
  /**
   * The waypoint's access-log lines that `pick` selects, once there are `n` of them (a line is
   * written when the request is done, which may be just after the client has its answer); after
   * 5 s, whatever there is.
   */
  const accessLog = async (pick: (l: AccessLine) => boolean, n: number): Promise<AccessLine[]> => {
    let lines: AccessLine[] = [];
    for (let i = 0; i < 25; i++) {
      lines = (await waypointLog())
        .filter((l) => l.includes('"type":"access"'))
        .map((l) => JSON.parse(l) as AccessLine)
        .filter(pick);
      if (lines.length >= n) break;
      await sleep(200);
    }
    return lines;
  };
  const waypointGet = async (port: number, path: string): Promise<string> => {
    const r = await httpInNetns(`/run/netns/${pod('waypoint-0').netns}`, { host: '127.0.0.1', port, path });
    assert.equal(r.status, 200);
    return r.body;
  };
  /** Sum of istio_requests_total over the series whose labels match all of `res`. */
  const requests = async (...res: RegExp[]): Promise<number> => {
    const lines = (await waypointGet(15020, '/stats/prometheus')).split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    return lines.filter((l) => res.every((re) => re.test(l))).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  };
  const zcServices = async (): Promise<Record<string, string>[]> => {
    const r = await ambit(['ztunnel-config', 'services', '-n', 'shop', ...mesh.flags()]);
    assert.equal(r.code, 0, r.stderr);
    return parseTable(r.stdout);
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(FIXTURES, 'waypoint-l7', 'mesh'));
    st = await mesh.status();
  });
  after(async () => {
    await mesh.down();
    await rm(mesh.stateDir, { recursive: true, force: true });
  });

  test('ztunnel-config shows WAYPOINT None before the waypoint, and its name once the namespace is enrolled', async () => {
    const unbound = await zcServices();
    assert.equal(unbound.length, 7);
    assert.deepEqual([...new Set(unbound.map((r) => r.WAYPOINT))], ['None']);
    const r = await ambit(['waypoint', 'apply', '-n', 'shop', '--enroll-namespace', '--wait', '--mesh', mesh.name, '--state-dir', mesh.stateDir], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /✅ waypoint shop\/waypoint is ready!/);
    st = await mesh.status();
    // the waypoint's own Service does not use a waypoint
    const expected = ['faulty waypoint', 'grpc waypoint', 'grpc-v1 waypoint', 'grpc-v2 waypoint', 'mirror waypoint', 'pool waypoint', 'waypoint None', 'web waypoint'];
    let rows: string[] = [];
    for (let i = 0; i < 50; i++) {
      rows = (await zcServices()).map((x) => `${x['SERVICE NAME']} ${x.WAYPOINT}`);
      if (rows.join() === expected.join()) break;
      await sleep(200);
    }
    assert.deepEqual(rows, expected);
  });

  test('gRPC (@grpc/grpc-js): unary and server streaming pass the waypoint with status codes and trailers; GRPCRoute sends Canary to v2', async () => {
    const r = await mesh.exec('shop/client', ['node', join(APPS, 'grpc-client.mjs'), 'grpc.shop:50051', '20', '50'], 60_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      echo: { byPod: Record<string, number>; byCode: Record<string, number>; trailerPods: number };
      canary: { byPod: Record<string, number>; byCode: Record<string, number>; trailerPods: number };
      failed: { code: number; details: string; trailers: Record<string, string> | null };
      stream: { received: number; inOrder: boolean; pods: Record<string, number>; code: number; trailers: Record<string, string> | null };
    };
    // the route: Canary to v2, everything else to v1 (without it both would answer both)
    assert.deepEqual(out.echo.byPod, { 'shop/grpc-v1': 20 }, JSON.stringify(out));
    assert.deepEqual(out.canary.byPod, { 'shop/grpc-v2': 20 }, JSON.stringify(out));
    assert.deepEqual(out.echo.byCode, { '0': 20 });
    assert.deepEqual(out.canary.byCode, { '0': 20 });
    // every reply's trailers arrived, naming the pod that answered
    assert.equal(out.echo.trailerPods, 20);
    assert.equal(out.canary.trailerPods, 20);
    // an error status with its message and trailers
    assert.equal(out.failed.code, 5);
    assert.equal(out.failed.details, 'failing with 5 as asked');
    assert.equal(out.failed.trailers?.['x-echo-pod'], 'shop/grpc-v1');
    // server streaming: all replies in order, then status OK and the trailers
    assert.equal(out.stream.received, 50);
    assert.equal(out.stream.inOrder, true);
    assert.deepEqual(out.stream.pods, { 'shop/grpc-v1': 50 });
    assert.equal(out.stream.code, 0);
    assert.deepEqual(out.stream.trailers, { 'x-echo-pod': 'shop/grpc-v1', 'x-echo-count': '50' });
    // every call went through the waypoint (one access-log line each)
    const log = await accessLog((l) => l.path.startsWith('/ambit.test.Echo/'), 42);
    assert.equal(log.length, 42);
    assert.equal(log.filter((l) => l.path === '/ambit.test.Echo/Canary' && l['dst.workload'] === 'shop/grpc-v2').length, 20);
    assert.equal(log.filter((l) => l['grpc.status'] === 5).length, 1);
    // the waypoint saw gRPC and counted grpc_response_status
    const grpc = [/reporter="waypoint"/, /request_protocol="grpc"/, /source_principal="spiffe:\/\/cluster.local\/ns\/shop\/sa\/client"/];
    assert.equal(await requests(...grpc, /destination_service_name="grpc-v1"/, /grpc_response_status="5"/), 1);
    assert.equal(await requests(...grpc, /destination_service_name="grpc-v1"/, /grpc_response_status="0"/), 21);
    assert.equal(await requests(...grpc, /destination_service_name="grpc-v2"/, /grpc_response_status="0"/), 20);
  });

  test('WebSocket: the HTTP/1.1 Upgrade passes the waypoint and messages echo both ways', async () => {
    const r = await mesh.exec('shop/client', ['node', join(APPS, 'ws-client.mjs'), 'ws://web.shop/ws', '8'], 60_000);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    assert.deepEqual(out, { status: 101, acceptOk: true, pod: 'shop/web', echoed: 8, mismatched: 0, closed: true, error: null });
    const log = await accessLog((l) => l.path === '/ws', 1);
    assert.equal(log.length, 1, 'the upgrade went through the waypoint');
    assert.equal(log[0]!.status, 101);
    assert.equal(log[0]!['dst.workload'], 'shop/web');
  });

  test('h2load: 2,000 HTTP/2 (h2c prior knowledge) requests on 4 connections, 10 streams each, all succeed', async (t) => {
    const r = await mesh.exec('shop/client', ['h2load', '-n', '2000', '-c', '4', '-m', '10', 'http://web.shop/h2load'], 120_000);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    t.diagnostic(/finished in .*/.exec(r.stdout)?.[0] ?? '');
    assert.match(r.stdout, /Application protocol: h2c/);
    assert.match(r.stdout, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout/, r.stdout);
    assert.match(r.stdout, /status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx/);
    assert.equal((await stats('web')).byPrefix.h2load, 2000, 'every request reached the backend');
  });

  test('retries: a backend that fails the first attempt of each path answers 200 with the route retry (500 without)', async () => {
    const codes = async (prefix: string) => {
      const r = await curl(['-o', '/dev/null', '-w', '%{http_code}\\n', `http://web.shop/flaky/${prefix}/[1-20]`]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim().split('\n');
    };
    const seen = (await stats('web')).byPrefix.flaky ?? 0;
    // without a retry on 500 (the default retries 503 only) the first attempt's failure shows
    assert.deepEqual(await codes('none'), Array(20).fill('500'));
    assert.deepEqual(await codes('retry'), Array(20).fill('200'));
    assert.equal((await stats('web')).byPrefix.flaky! - seen, 20 + 2 * 20, 'each retried request reached the backend twice');
    const log = await accessLog((l) => l.path.startsWith('/flaky/retry/'), 20);
    assert.equal(log.length, 20);
    assert.ok(log.every((l) => l.status === 200 && l.attempts === 2), JSON.stringify(log[0]));
  });

  test('timeouts: the route timeout (500 ms) answers a slow backend with 504 upstream request timeout, flag UT', async () => {
    const slow = await curl(['-w', '\\n%{http_code} %{time_total}', 'http://web.shop/slow/late?ms=3000']);
    assert.equal(slow.code, 0, slow.stderr);
    const m = /^upstream request timeout\n504 ([\d.]+)$/.exec(slow.stdout);
    assert.ok(m, slow.stdout);
    assert.ok(Number(m[1]) >= 0.45 && Number(m[1]) < 2.5, `answered after ${m[1]} s`);
    const fast = await curl(['-o', '/dev/null', '-w', '%{http_code}', 'http://web.shop/slow/soon?ms=20']);
    assert.equal(fast.stdout, '200');
    const [line] = await accessLog((l) => l.path === '/slow/late?ms=3000', 1);
    assert.equal(line?.status, 504);
    assert.equal(line?.flags, 'UT');
  });

  test('fault abort: 50 % ± 5 % of 1,000 requests get the injected 503 (flag FI), the rest reach the backend', async (t) => {
    const r = await load('http://faulty.shop/fault', 1000);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.deepEqual(Object.keys(r.byStatus).sort(), ['200', '503'], JSON.stringify(r));
    const aborted = r.byStatus['503']!;
    t.diagnostic(`${aborted} of 1000 aborted`);
    assert.ok(aborted >= 450 && aborted <= 550, `${aborted} of 1000 aborted`);
    assert.equal(r.byPod['shop/web'], 1000 - aborted);
    assert.equal(await requests(/destination_service_name="faulty"/, /response_code="503"/, /response_flags="FI"/), aborted);
    // what an aborted request reads (20 tries: all passing has a chance of one in a million)
    const bodies = await curl(['http://faulty.shop/fault-body/[1-20]']);
    assert.match(bodies.stdout, /fault filter abort/);
  });

  test('mirror: the mirror Service gets a copy of each request (host -shadow); clients see only the primary', async () => {
    const r = await load('http://web.shop/mirrored/copy', 50);
    assert.deepEqual(r, { byPod: { 'shop/web': 50 }, byStatus: { '200': 50 }, errors: 0 });
    let m: AppStats | null = null;
    for (let i = 0; i < 25; i++) {
      m = await stats('mirror');
      if (m.total >= 50) break;
      await sleep(200);
    }
    // nothing else (h2load, retries, faults on the same pod) was mirrored
    assert.deepEqual({ total: m!.total, byPrefix: m!.byPrefix, shadow: m!.shadow }, { total: 50, byPrefix: { mirrored: 50 }, shadow: 50 });
  });

  test('outlier detection: 3 consecutive 5xx eject the failing endpoint; it gets traffic again after baseEjectionTime', async () => {
    const bad = `${pod('pool-bad').ip}:8080`;
    // one request at a time, round robin: the bad endpoint gets every other one until its third 500
    const first = await load('http://pool.shop/one', 30, 1);
    assert.deepEqual(first, { byPod: { 'shop/pool-good': 27, 'shop/pool-bad': 3 }, byStatus: { '200': 27, '500': 3 }, errors: 0 });
    const dump = JSON.parse(await waypointGet(15000, '/config_dump')) as { ejections: Record<string, { endpoint: string }[]>; upstream: Record<string, { open: number; idle: number }> };
    assert.deepEqual(dump.ejections['shop/pool:80']?.map((e) => e.endpoint), [bad]);
    // one request at a time: one kept-alive connection per endpoint carried them all (500s included)
    const good = `${pod('pool-good').ip}:8080`;
    assert.deepEqual({ good: dump.upstream[good], bad: dump.upstream[bad] }, { good: { open: 1, idle: 1 }, bad: { open: 1, idle: 1 } });
    await sleep(4500); // baseEjectionTime 4s
    const again = await load('http://pool.shop/two', 20, 1);
    assert.deepEqual(again, { byPod: { 'shop/pool-good': 17, 'shop/pool-bad': 3 }, byStatus: { '200': 17, '500': 3 }, errors: 0 }, 'back in the pool, then ejected again');
    // the waypoint writes its log lines at least once a second, not per line: wait for them
    let ejected: string[] = [];
    for (let i = 0; i < 30 && ejected.length < 2; i++) {
      if (i > 0) await sleep(200);
      ejected = (await waypointLog()).filter((l) => l.includes('"msg":"outlier ejected"'));
    }
    assert.equal(ejected.length, 2);
    assert.match(ejected[0]!, new RegExp(`"endpoint":"${bad.replace(/\./g, '\\.')}".*"reason":"3 consecutive 5xx; ejected for 4000 ms \\(ejection 1\\)"`));
  });

  // last: it deletes the waypoint
  test('deleting the waypoint lets a request under way finish: SIGTERM drains it, then it exits', async () => {
    const slow = curl(['-w', '\\n%{http_code}', 'http://mirror.shop/slow/under-way?ms=3000']);
    await sleep(700);
    const started = Date.now();
    const d = await ambit(['waypoint', 'delete', 'waypoint', '-n', 'shop', '--mesh', mesh.name, '--state-dir', mesh.stateDir], 60_000);
    assert.equal(d.code, 0, d.stderr);
    const r = await slow;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\n200$/, `the request under way was answered: ${r.stdout}`);
    const lines = (await waypointLog()).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const drained = lines.find((l) => l.msg === 'drained');
    assert.ok(drained, 'the waypoint logged the end of its drain');
    assert.equal(drained.cut, 0, JSON.stringify(drained));
    assert.equal(drained.interrupted, false, JSON.stringify(drained));
    assert.ok(Date.now() - started < 20_000, 'it exited well before the grace period ended');
  });
});
