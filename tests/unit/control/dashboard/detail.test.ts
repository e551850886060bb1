import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { workloadDetail } from '../../../../control/dashboard/detail.js';
import type { StoredReport } from '../../../../control/node-reports.js';
import type { NodeReport, ReportedConnection } from '../../../../shared/control/protocol.js';
import type { MeshSnapshot, Workload } from '../../../../shared/model/types.js';
import type { MeshGraph } from '../../../../control/dashboard/graph.js';

function wl(key: string, node: string, ip: string, over: Partial<Workload> = {}): Workload {
  const [namespace, name] = key.split('/') as [string, string];
  return { uid: key, name, namespace, serviceAccount: name, node, ip, labels: { app: name }, protocol: 'HBONE', ready: true, ...over };
}

const MESH: MeshSnapshot = {
  workloads: [wl('shop/client', 'node-1', '10.0.1.1'), wl('shop/server', 'node-2', '10.0.2.1'), wl('legacy/old', 'node-2', '10.0.2.9', { protocol: 'TCP' })],
  services: [{ key: 'shop/server', name: 'server', namespace: 'shop', hostname: 'server.shop.svc.cluster.local', vip: '10.96.0.1', ports: [], endpoints: ['shop/server'] }],
};

function conn(direction: 'inbound' | 'outbound', from: string, to: string, ageMs: number, mtls = true): ReportedConnection {
  return { direction, src: `${from}:40000`, dst: `${to}:80`, srcWorkload: null, dstWorkload: null, srcIdentity: null, dstIdentity: null, service: null, protocol: mtls ? 'HBONE' : 'TCP', mtls, ageMs };
}

const NODE1: NodeReport = {
  node: 'node-1',
  openConnections: 3,
  connections: [
    { ...conn('outbound', '10.0.1.1', '10.0.2.1', 500), srcWorkload: 'shop/client', dstWorkload: 'shop/server', service: 'server.shop.svc.cluster.local' },
    { ...conn('outbound', '10.0.1.1', '10.0.2.9', 100, false), srcWorkload: 'shop/client', dstWorkload: 'legacy/old' },
    { ...conn('inbound', '10.0.2.1', '10.0.1.7', 50), srcWorkload: 'shop/server', dstWorkload: 'shop/other' },
  ],
  certificates: [
    { identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: 'abc', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'available' },
    { identity: 'spiffe://cluster.local/ns/shop/sa/other', serial: 'def', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'available' },
  ],
  denies: [],
};
const NODE2: NodeReport = {
  node: 'node-2',
  openConnections: 1,
  connections: [{ ...conn('inbound', '10.0.1.1', '10.0.2.1', 400), srcWorkload: 'shop/client', dstWorkload: 'shop/server' }],
  // a certificate for the client's identity on another node is not the client's
  certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: 'zzz', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'pending' }],
  denies: [
    { time: '2026-01-01T00:00:01.000Z', direction: 'inbound', src: '10.0.1.1:4000', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/client', dst: '10.0.2.1:80', dstWorkload: 'shop/server', policy: 'shop/deny-client', rule: 0, reason: 'denied by shop/deny-client' },
    { time: '2026-01-01T00:00:02.000Z', direction: 'inbound', src: '10.0.9.9:4000', srcIdentity: null, dst: '10.0.2.1:80', dstWorkload: 'shop/server', policy: null, rule: null, reason: 'plaintext refused (STRICT)' },
  ],
};
const REPORTS: StoredReport[] = [{ report: NODE1, receivedAt: 9_000 }, { report: NODE2, receivedAt: 7_500 }];

describe('workloadDetail', () => {
  test("a mesh workload: its own node's connections where it is the local end, its certificate there, denies to and from it", () => {
    const d = workloadDetail(MESH, null, REPORTS, 'shop', 'client', 'cluster.local', 10_000)!;
    assert.equal(d.identity, 'spiffe://cluster.local/ns/shop/sa/client');
    assert.equal(d.inMesh, true);
    assert.deepEqual(d.services, []);
    assert.deepEqual(d.connections.map((c) => [c.dstWorkload, c.reportedBy]), [['legacy/old', 'node-1'], ['shop/server', 'node-1']]);
    assert.deepEqual(d.certificates.map((c) => [c.serial, c.node]), [['abc', 'node-1']]);
    assert.deepEqual(d.denies.map((x) => [x.policy, x.node]), [['shop/deny-client', 'node-2']]);
    assert.deepEqual(d.reports, [{ node: 'node-1', ageMs: 1000 }, { node: 'node-2', ageMs: 2500 }]);
  });

  test('the server side: inbound connections on its node, the services it backs, every deny aimed at it (newest first)', () => {
    const d = workloadDetail(MESH, null, REPORTS, 'shop', 'server', 'cluster.local', 10_000)!;
    assert.deepEqual(d.services, ['shop/server']);
    assert.deepEqual(d.connections.map((c) => [c.direction, c.srcWorkload, c.reportedBy]), [['inbound', 'shop/client', 'node-2']]);
    assert.deepEqual(d.denies.map((x) => x.reason), ['plaintext refused (STRICT)', 'denied by shop/deny-client']);
    assert.deepEqual(d.certificates, []);
  });

  test('a workload outside the mesh: the connections its peers\' ztunnels carry', () => {
    const d = workloadDetail(MESH, null, REPORTS, 'legacy', 'old', 'cluster.local', 10_000)!;
    assert.equal(d.inMesh, false);
    assert.deepEqual(d.connections.map((c) => [c.srcWorkload, c.reportedBy]), [['shop/client', 'node-1']]);
  });

  test('traffic in and out from the graph; an unknown workload is null', () => {
    const graph: MeshGraph = {
      version: 1,
      windowSeconds: 10,
      nodes: [],
      edges: [
        { id: 'a', source: 'workload:shop/client', target: 'service:shop/server', connectionsPerSecond: 1, bytesPerSecond: 1, requestsPerSecond: null, errorRate: 0, open: 0, totalConnections: 1, mtls: 'mutual_tls' },
        { id: 'b', source: 'service:shop/server', target: 'workload:shop/server', connectionsPerSecond: 1, bytesPerSecond: 1, requestsPerSecond: null, errorRate: 0, open: 0, totalConnections: 1, mtls: 'mutual_tls' },
      ],
    };
    const d = workloadDetail(MESH, graph, [], 'shop', 'server', 'cluster.local', 0)!;
    assert.deepEqual(d.inbound.map((e) => e.id), ['b']);
    assert.deepEqual(d.outbound, []);
    assert.deepEqual(d.reports, []);
    assert.equal(workloadDetail(MESH, graph, [], 'shop', 'nobody', 'cluster.local', 0), null);
  });
});
