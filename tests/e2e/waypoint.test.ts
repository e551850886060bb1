// End to end: a waypoint deployed with `ambit waypoint apply` into a local mesh. Service traffic
// goes source ztunnel → HBONE → waypoint → HBONE → destination ztunnel; routes, L7 policy,
// metrics and access logs are the waypoint's; without a ready waypoint, traffic is refused.
// Needs root; cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { DASHBOARD_PORT } from '../../cli/local/topology.js';
import type { GraphResponse } from '../../control/dashboard/server.js';

interface Load {
  byPod: Record<string, number>;
  byStatus: Record<string, number>;
  errors: number;
}

describe('waypoint', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`wpt${process.pid % 100000}`);
  const dir = join(FIXTURES, 'waypoint');
  const local = () => ['--mesh', mesh.name, '--state-dir', mesh.stateDir];
  let st: Awaited<ReturnType<TestMesh['status']>>;
  const load = async (from: string, url: string, n: number, method = 'GET'): Promise<Load> => {
    const r = await mesh.exec(from, ['node', join(FIXTURES, 'apps', 'http-load.mjs'), url, String(n), method], 180_000);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Load;
  };
  const curl = async (from: string, args: string[]) => {
    const r = await mesh.exec(from, ['curl', '-sS', '-m', '5', ...args]);
    return { ...r, json: (() => { try { return JSON.parse(r.stdout) as Record<string, unknown>; } catch { return null; } })() };
  };
  const waypointLog = async () => readFile(join(mesh.stateDir, mesh.name, 'logs', 'pod-shop-waypoint-0-waypoint.log'), 'utf8');

  before(async () => {
    await mesh.down();
    await mesh.up(join(dir, 'mesh'));
    st = await mesh.status();
  });
  after(async () => {
    await mesh.down();
  });

  test('without a waypoint the route is not applied: service traffic goes straight to the pods', async () => {
    const r = await load('shop/client', 'http://echo.shop/v2', 40);
    assert.equal(r.errors, 0);
    assert.ok((r.byPod['shop/echo-v1'] ?? 0) > 0, `both versions answer /v2 without the waypoint: ${JSON.stringify(r)}`);
  });

  test('ambit waypoint apply --enroll-namespace --wait deploys it; status and list show it programmed', async () => {
    const r = await ambit(['waypoint', 'apply', '-n', 'shop', '--enroll-namespace', '--wait', ...local()], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /✅ waypoint shop\/waypoint applied/);
    assert.match(r.stdout, /✅ waypoint shop\/waypoint is ready!/);
    assert.match(r.stdout, /✅ namespace shop labeled with "istio.io\/use-waypoint: waypoint"/);
    const list = await ambit(['waypoint', 'list', '-n', 'shop', ...local()]);
    assert.match(list.stdout, /^waypoint\s+default\s+service\s+True$/m);
    st = await mesh.status();
    const pod = st.pods.find((p) => p.name === 'waypoint-0');
    assert.ok(pod, 'the waypoint pod runs');
    assert.equal(pod.captured, false, 'the waypoint pod is not captured by ztunnel');
  });

  test('a 90/10 canary splits 2,000 requests within ±3 %, and /v2 always reaches v2, through the waypoint', async () => {
    const r = await load('shop/client', 'http://echo.shop/', 2000);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.equal(r.byStatus['200'], 2000);
    const v2 = (r.byPod['shop/echo-v2'] ?? 0) / 2000;
    assert.ok(Math.abs(v2 - 0.1) <= 0.03, `v2 share ${v2} (${JSON.stringify(r.byPod)})`);
    const only = await load('shop/client', 'http://echo.shop/v2/x', 50);
    assert.deepEqual(only.byPod, { 'shop/echo-v2': 50 });
    // the app sees the waypoint as its client; the waypoint added a request id
    const one = await curl('shop/client', ['http://echo.shop/v2/who']);
    const wp = st.pods.find((p) => p.name === 'waypoint-0')!;
    assert.match(String(one.json?.client), new RegExp(`^${wp.ip.replace(/\./g, '\\.')}:`));
    assert.match(String((one.json?.headers as Record<string, string>)['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  test('HTTP/2 with prior knowledge passes the waypoint', async () => {
    const r = await curl('shop/client', ['--http2-prior-knowledge', 'http://echo.shop/v2/h2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.json?.pod, 'shop/echo-v2');
  });

  test('a tcp- port is passed through as TCP', async () => {
    const r = await curl('shop/client', ['http://echo.shop:9000/raw']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.json?.path, '/raw');
  });

  test('L7 AuthorizationPolicy with targetRefs: DELETE gets 403 RBAC: access denied; /admin only for the client identity', async () => {
    const a = await ambit(['local', 'apply', '-f', join(dir, 'deny'), ...mesh.flags()], 60_000);
    assert.equal(a.code, 0, a.stderr);
    let del: Awaited<ReturnType<typeof curl>> | null = null;
    for (let i = 0; i < 40; i++) {
      del = await curl('shop/client', ['-X', 'DELETE', '-w', '\\n%{http_code}', 'http://echo.shop/item']);
      if (del.stdout.endsWith('403')) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.match(del!.stdout, /RBAC: access denied\n403$/);
    const get = await curl('shop/client', ['-w', '\\n%{http_code}', 'http://echo.shop/item']);
    assert.match(get.stdout, /\n200$/);
    const adminClient = await curl('shop/client', ['-w', '\\n%{http_code}', 'http://echo.shop/admin']);
    assert.match(adminClient.stdout, /\n200$/);
    const adminOther = await curl('shop/other', ['-w', '\\n%{http_code}', 'http://echo.shop/admin']);
    assert.match(adminOther.stdout, /RBAC: access denied\n403$/);
  });

  test('istio_requests_total (reporter waypoint) and the access log show the traffic', async () => {
    const wp = st.pods.find((p) => p.name === 'waypoint-0')!;
    const m = await httpInNetns(`/run/netns/${wp.netns}`, { host: '127.0.0.1', port: 15020, path: '/stats/prometheus' });
    const lines = m.body.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    const count = (re: RegExp) => lines.filter((l) => re.test(l)).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    assert.ok(count(/reporter="waypoint".*source_principal="spiffe:\/\/cluster.local\/ns\/shop\/sa\/client".*destination_service_name="echo-v1".*response_code="200"/) >= 1500, lines.join('\n'));
    assert.ok(count(/response_code="403"/) >= 2);
    // access-log lines are buffered and written at least once a second
    let denied: string[] = [];
    for (let i = 0; i < 30 && denied.length < 2; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 200));
      denied = (await waypointLog()).split('\n').filter((l) => l.includes('"type":"access"') && l.includes('"status":403'));
    }
    assert.ok(denied.length >= 2);
    assert.match(denied[0]!, /"src.identity":"spiffe:\/\/cluster.local\/ns\/shop\/sa\/(client|other)"/);
    assert.match(denied[0]!, /"flags":"RBAC"/);
  });

  test('the dashboard scrapes the waypoint too: the edge from the client to it shows requests per second', async () => {
    // the dashboard listens on localhost of the control plane's netns; rates come from two scrapes at least 1 s apart
    const graph = async (): Promise<GraphResponse> => JSON.parse((await httpInNetns(`/run/netns/${mesh.name}-fabric`, { host: '127.0.0.1', port: DASHBOARD_PORT, path: '/api/graph' })).body) as GraphResponse;
    await graph();
    const started = Date.now();
    const r = await load('shop/client', 'http://echo.shop/', 200);
    assert.equal(r.byStatus['200'], 200, JSON.stringify(r));
    await new Promise((res) => setTimeout(res, Math.max(0, 1100 - (Date.now() - started))));
    const g = await graph();
    const wp = st.pods.find((p) => p.name === 'waypoint-0')!;
    assert.deepEqual(g.targets.filter((t) => t.kind === 'waypoint'), [{ kind: 'waypoint', node: 'shop/waypoint', url: `http://${wp.ip}:15020/metrics`, ok: true }]);
    const edge = g.edges.find((e) => e.source === 'workload:shop/client' && e.target === 'waypoint:shop/waypoint');
    assert.ok(edge && edge.requestsPerSecond !== null && edge.requestsPerSecond > 0, `client → waypoint: ${JSON.stringify(edge)} (window ${g.windowSeconds} s)`);
  });

  test('deleting the waypoint refuses the service traffic (never around it) and says why; applying it again restores it', async () => {
    const d = await ambit(['waypoint', 'delete', 'waypoint', '-n', 'shop', ...local()], 60_000);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /waypoint shop\/waypoint deleted/);
    assert.match(d.stderr, /still has istio.io\/use-waypoint=waypoint/);
    let r: Load | null = null;
    for (let i = 0; i < 20; i++) {
      r = await load('shop/client', 'http://echo.shop/', 10);
      if (r.errors === 10) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    assert.equal(r!.errors, 10, `every request refused: ${JSON.stringify(r)}`);
    const n1 = st.nodes.find((n) => n.name === 'node-1')!;
    const denies = await readFile(join(mesh.stateDir, mesh.name, 'logs', 'ztunnel-node-1.log'), 'utf8');
    assert.match(denies, /"flags":"NO_WAYPOINT","error":"traffic to service echo.shop.svc.cluster.local:80 is refused: waypoint shop\/waypoint does not exist"/);
    const metrics = await httpInNetns(`/run/netns/${n1.netns}`, { host: '127.0.0.1', port: 15020, path: '/metrics' });
    assert.match(metrics.body, /istio_tcp_connections_failed_total\{[^}]*response_flags="NO_WAYPOINT"[^}]*\} [1-9]/);
    const again = await ambit(['waypoint', 'apply', '-n', 'shop', '--wait', ...local()], 120_000);
    assert.equal(again.code, 0, again.stderr);
    let ok: Load | null = null;
    for (let i = 0; i < 20; i++) {
      ok = await load('shop/client', 'http://echo.shop/v2', 10);
      if (ok.errors === 0) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    assert.deepEqual(ok!.byPod, { 'shop/echo-v2': 10 });
  });
});
