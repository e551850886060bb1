import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import vm from 'node:vm';
import { pino } from 'pino';
import { allowedHost, Dashboard, type GraphResponse } from '../../../../control/dashboard/server.js';
import { parseDashboardAddress } from '../../../../control/dashboard/start.js';
import { NodeReports, REPORT_ACTIVE_MS, REPORT_IDLE_MS } from '../../../../control/node-reports.js';
import { peerIp } from '../../../../control/server.js';
import { dashboardPage, dashboardScript } from '../../../../control/dashboard/page.js';
import { ZtunnelMetrics } from '../../../../ztunnel/metrics.js';
import { WaypointMetrics } from '../../../../waypoint/metrics.js';
import { Registry } from 'prom-client';
import { tcpLabels } from '../../../../ztunnel/connections.js';
import type { MeshSnapshot, Workload } from '../../../../shared/model/types.js';
import { GATEWAY_NAME_LABEL } from '../../../../shared/config/waypoint-names.js';

function wl(key: string, node: string, ip: string): Workload {
  const [namespace, name] = key.split('/') as [string, string];
  return { uid: key, name, namespace, serviceAccount: name, node, ip, labels: { app: name }, protocol: 'HBONE', ready: true };
}
const MESH: MeshSnapshot = {
  workloads: [wl('shop/client', 'node-1', '10.0.1.1'), wl('shop/server', 'node-2', '10.0.2.1')],
  services: [{ key: 'shop/server', name: 'server', namespace: 'shop', hostname: 'server.shop.svc.cluster.local', vip: '10.96.0.1', ports: [{ port: 80, targetPort: 80 }], endpoints: ['shop/server'] }],
};

function get(port: number, path: string, opts: { method?: string; host?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.host ? { host: opts.host } : {} }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('dashboard server', () => {
  let now = 1_000_000;
  const metrics = new ZtunnelMetrics();
  const reports = new NodeReports();
  const asked: string[] = [];
  const dashboard = new Dashboard(
    {
      current: () => ({ version: 4, snapshot: MESH }),
      connectedNodes: () => [{ node: 'node-1', ip: '10.0.0.1' }, { node: 'node-2', ip: null }, { node: 'node-3', ip: 'fd00::3' }],
      reports,
      trustDomain: 'cluster.local',
    },
    pino({ level: 'silent' }),
    {
      clock: () => now,
      minScrapeGapMs: 0,
      fetchMetrics: async (url) => {
        asked.push(url);
        if (url.includes('fd00')) throw new Error('connect ECONNREFUSED');
        return metrics.registry.metrics();
      },
    },
  );
  let port = 0;
  before(async () => {
    port = await dashboard.listen('127.0.0.1', 0);
  });
  after(() => dashboard.close());

  test('/ is the page: HTML with its script inline, under a content security policy allowing nothing else', async () => {
    const r = await get(port, '/');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/html/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
    assert.match(String(r.headers['content-security-policy']), /connect-src 'self'/);
    assert.equal(r.body, dashboardPage());
    assert.doesNotMatch(r.body, /(src|href)="https?:/, 'no external assets');
    // the script at least compiles (a browser would stop at a syntax error with a blank page)
    assert.doesNotThrow(() => new vm.Script(dashboardScript));
    assert.ok(r.body.includes(dashboardScript));
  });

  test('/api/graph: the mesh, rates from two scrapes of each connected ztunnel, and which scrapes failed', async () => {
    const first = JSON.parse((await get(port, '/api/graph')).body) as GraphResponse;
    assert.equal(first.version, 4);
    assert.deepEqual(first.edges, []);
    assert.equal(first.windowSeconds, 0);
    assert.deepEqual(first.targets, [
      { kind: 'ztunnel', node: 'node-1', url: 'http://10.0.0.1:15020/metrics', ok: true },
      { kind: 'ztunnel', node: 'node-2', url: null, ok: false, error: 'address of its ztunnel unknown' },
      { kind: 'ztunnel', node: 'node-3', url: 'http://[fd00::3]:15020/metrics', ok: false, error: 'connect ECONNREFUSED' },
    ]);
    const labels = tcpLabels(
      { id: 1, direction: 'outbound', src: { address: '10.0.1.1:1', workload: { name: 'client', namespace: 'shop', labels: {} } }, dst: { address: '10.0.2.1:80', workload: { name: 'server', namespace: 'shop', labels: {} } }, service: { hostname: 'server.shop.svc.cluster.local', namespace: 'shop', name: 'server' }, protocol: 'HBONE', mtls: true, started: 0 },
      '-',
    );
    metrics.opened.inc(labels, 20);
    metrics.closed.inc(labels, 19);
    metrics.sent.inc(labels, 5000);
    now += 4000;
    const second = JSON.parse((await get(port, '/api/graph')).body) as GraphResponse;
    assert.equal(second.windowSeconds, 4);
    const e = second.edges.find((x) => x.source === 'workload:shop/client' && x.target === 'service:shop/server')!;
    assert.equal(e.connectionsPerSecond, 5);
    assert.equal(e.bytesPerSecond, 1250);
    assert.equal(e.open, 1);
    assert.equal(e.mtls, 'mutual_tls');
    assert.equal(second.time, new Date(now).toISOString());
  });

  test('asking marks the dashboard watched: ztunnels are asked to report often', async () => {
    const fresh = new NodeReports();
    assert.equal(fresh.nextReportMs(now), REPORT_IDLE_MS);
    assert.equal(reports.nextReportMs(now), REPORT_ACTIVE_MS);
    assert.equal(reports.nextReportMs(now + 120_000), REPORT_IDLE_MS);
  });

  test('/api/workload/NS/NAME: the workload, its traffic and reports; unknown is 404, a bad escape 400', async () => {
    reports.put({ node: 'node-1', openConnections: 0, connections: [], certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: '01', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'available' }], denies: [] }, now - 1500);
    const r = await get(port, '/api/workload/shop/client');
    assert.equal(r.status, 200);
    const d = JSON.parse(r.body) as { identity: string; outbound: { target: string }[]; certificates: { serial: string }[]; reports: { node: string; ageMs: number }[] };
    assert.equal(d.identity, 'spiffe://cluster.local/ns/shop/sa/client');
    assert.deepEqual(d.outbound.map((x) => x.target), ['service:shop/server']);
    assert.deepEqual(d.certificates.map((c) => c.serial), ['01']);
    assert.deepEqual(d.reports, [{ node: 'node-1', ageMs: 1500 }]);
    assert.equal((await get(port, '/api/workload/shop/nobody')).status, 404);
    assert.match((await get(port, '/api/workload/shop/nobody')).body, /no workload shop\/nobody/);
    assert.equal((await get(port, '/api/workload/%E0%A4%A/x')).status, 400);
    assert.equal((await get(port, '/api/nothing')).status, 404);
  });

  test('read-only, and only under an IP or localhost as Host (a rebound DNS name gets nothing)', async () => {
    assert.equal((await get(port, '/api/graph', { method: 'POST' })).status, 405);
    assert.equal((await get(port, '/api/graph', { method: 'DELETE' })).status, 405);
    assert.equal((await get(port, '/api/graph', { host: 'evil.example:15014' })).status, 403);
    assert.equal((await get(port, '/', { host: 'localhost:15014' })).status, 200);
    assert.equal((await get(port, '/', { host: '[::1]:15014' })).status, 200);
  });
});

describe('dashboard server with a waypoint', () => {
  // shop/server is behind the waypoint shop/wp, which runs two pods; one of them is scraped
  const wpPod = (name: string, ip: string): Workload => ({ ...wl(`shop/${name}`, 'node-2', ip), labels: { [GATEWAY_NAME_LABEL]: 'wp' } });
  const mesh: MeshSnapshot = {
    workloads: [...MESH.workloads, wpPod('wp-a', '10.0.3.1'), wpPod('wp-b', '10.0.3.2')],
    services: [{ ...MESH.services[0]!, waypoint: 'shop/wp' }],
    waypoints: [{ key: 'shop/wp', name: 'wp', namespace: 'shop', for: 'service', pods: ['shop/wp-a', 'shop/wp-b'], problem: null }],
  };
  let now = 1_000_000;
  const ztunnel = new ZtunnelMetrics();
  const registry = new Registry();
  const requests = new WaypointMetrics(registry);
  const dashboard = new Dashboard(
    {
      current: () => ({ version: 7, snapshot: mesh }),
      connectedNodes: () => [{ node: 'node-1', ip: '10.0.0.1' }],
      connectedWaypoints: () => [{ waypoint: 'shop/wp', ip: '10.0.3.1' }, { waypoint: 'shop/wp', ip: '10.0.3.2' }],
      reports: new NodeReports(),
      trustDomain: 'cluster.local',
    },
    pino({ level: 'silent' }),
    {
      clock: () => now,
      minScrapeGapMs: 0,
      fetchMetrics: async (url) => {
        if (url === 'http://10.0.0.1:15020/metrics') return ztunnel.registry.metrics();
        if (url === 'http://10.0.3.1:15020/metrics') return registry.metrics();
        throw new Error('connect ECONNREFUSED');
      },
    },
  );
  let port = 0;
  before(async () => {
    port = await dashboard.listen('127.0.0.1', 0);
  });
  after(() => dashboard.close());

  test('/api/graph: each waypoint pod is scraped too, and the requests it reports give the edges through it their requests per second', async () => {
    const [client, server] = MESH.workloads as [Workload, Workload];
    const parts = { source: client, sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/client', destinationService: { hostname: 'server.shop.svc.cluster.local', name: 'server', namespace: 'shop' }, destination: server, destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/server', protocol: 'http' as const, status: 200, grpcStatus: null, flags: '-' };
    requests.record(parts, 1, 10, 10);
    const first = JSON.parse((await get(port, '/api/graph')).body) as GraphResponse;
    assert.deepEqual(first.targets, [
      { kind: 'ztunnel', node: 'node-1', url: 'http://10.0.0.1:15020/metrics', ok: true },
      { kind: 'waypoint', node: 'shop/wp', url: 'http://10.0.3.1:15020/metrics', ok: true },
      { kind: 'waypoint', node: 'shop/wp', url: 'http://10.0.3.2:15020/metrics', ok: false, error: 'connect ECONNREFUSED' },
    ]);
    for (let i = 0; i < 40; i++) requests.record(parts, 1, 10, 10);
    now += 4000;
    const second = JSON.parse((await get(port, '/api/graph')).body) as GraphResponse;
    const rps = (source: string, target: string): number | null | undefined => second.edges.find((e) => e.source === source && e.target === target)?.requestsPerSecond;
    assert.equal(rps('workload:shop/client', 'waypoint:shop/wp'), 10);
    assert.equal(rps('waypoint:shop/wp', 'service:shop/server'), 10);
    assert.equal(rps('service:shop/server', 'workload:shop/server'), 10);
    assert.equal(second.edges.find((e) => e.source === 'workload:shop/client' && e.target === 'service:shop/server'), undefined, 'no edge bypasses the waypoint');
  });

  test('the page says how many ztunnels and waypoints were scraped, and names a waypoint pod that was not', () => {
    // the script's functions, without the lines at its end that start it in a browser
    const context = vm.createContext({});
    vm.runInContext(dashboardScript.slice(0, dashboardScript.lastIndexOf("document.getElementById('metric')")), context);
    const line = vm.runInContext(
      `statusLine({ version: 7, windowSeconds: 4, time: '2026-01-01T00:00:00Z', targets: [{ kind: 'ztunnel', node: 'node-1', ok: true }, { kind: 'waypoint', node: 'shop/wp', url: 'http://10.0.3.2:15020/metrics', ok: false, error: 'connect ECONNREFUSED' }] })`,
      context,
    ) as string;
    assert.match(line, /1 ztunnel and 1 waypoint scraped/);
    assert.match(line, /no metrics from waypoint shop\/wp at http:\/\/10\.0\.3\.2:15020\/metrics \(connect ECONNREFUSED\)/);
  });
});

describe('dashboard helpers', () => {
  test('allowedHost', () => {
    for (const h of ['127.0.0.1', '127.0.0.1:15014', 'localhost', 'localhost:80', '[::1]:15014', '[fd00::1]', '10.0.0.1:8080']) assert.equal(allowedHost(h), true, h);
    for (const h of [undefined, '', 'evil.example', 'evil.example:15014', 'localhost.evil.example', '127.0.0.1.nip.io:80']) assert.equal(allowedHost(h), false, String(h));
  });

  test('parseDashboardAddress: host:port, [v6]:port or off; anything else is a clear error', () => {
    assert.deepEqual(parseDashboardAddress('127.0.0.1:15014'), { host: '127.0.0.1', port: 15014 });
    assert.deepEqual(parseDashboardAddress('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseDashboardAddress('localhost:8080'), { host: 'localhost', port: 8080 });
    assert.equal(parseDashboardAddress('off'), null);
    for (const bad of ['', '15014', '127.0.0.1', '127.0.0.1:99999', ':80', '::1:80', 'a b:80']) assert.throws(() => parseDashboardAddress(bad), /--dashboard must be host:port or "off"/, bad);
  });

  test('peerIp: the address a ztunnel connected from, as grpc-js names peers', () => {
    assert.equal(peerIp('10.248.0.11:43210'), '10.248.0.11');
    assert.equal(peerIp('::ffff:10.248.0.11:43210'), '10.248.0.11');
    assert.equal(peerIp('fd00::1:43210'), 'fd00::1');
    assert.equal(peerIp('[fd00::1]:43210'), 'fd00::1');
    assert.equal(peerIp('nonsense'), null);
  });
});
