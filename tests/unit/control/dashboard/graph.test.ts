import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildGraph, waypointKey, type GraphEdge, type MeshGraph } from '../../../../control/dashboard/graph.js';
import type { SeriesRate } from '../../../../control/dashboard/rates.js';
import type { MeshSnapshot, Service, Workload } from '../../../../shared/model/types.js';
import { TCP_LABELS } from '../../../../ztunnel/metrics.js';

function wl(key: string, node: string, ip: string, over: Partial<Workload> = {}): Workload {
  const [namespace, name] = key.split('/') as [string, string];
  return { uid: key, name, namespace, serviceAccount: name, node, ip, labels: { app: name }, protocol: 'HBONE', ready: true, ...over };
}
function svc(key: string, endpoints: string[], extra: Record<string, unknown> = {}): Service {
  const [namespace, name] = key.split('/') as [string, string];
  return { key, name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, vip: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }], endpoints, ...extra } as Service;
}

/** A series with Istio's labels: `from`/`to` are "ns/name" workloads, `via` a "ns/name" service. */
function series(name: string, o: { reporter?: string; from?: string; to?: string; via?: string; mtls?: boolean }, total: number, perSecond: number): SeriesRate {
  const labels: Record<string, string> = Object.fromEntries(TCP_LABELS.map((l) => [l, 'unknown']));
  labels.reporter = o.reporter ?? 'source';
  if (o.from) [labels.source_workload_namespace, labels.source_workload] = o.from.split('/') as [string, string];
  if (o.to) [labels.destination_workload_namespace, labels.destination_workload] = o.to.split('/') as [string, string];
  if (o.via) [labels.destination_service_namespace, labels.destination_service_name] = o.via.split('/') as [string, string];
  labels.connection_security_policy = o.mtls === false ? 'unknown' : 'mutual_tls';
  return { name, labels, total, perSecond };
}
const opened = (o: Parameters<typeof series>[1], total: number, ps: number) => series('istio_tcp_connections_opened_total', o, total, ps);
const closed = (o: Parameters<typeof series>[1], total: number) => series('istio_tcp_connections_closed_total', o, total, 0);
const failed = (o: Parameters<typeof series>[1], total: number, ps: number) => series('istio_tcp_connections_failed_total', o, total, ps);
const bytes = (o: Parameters<typeof series>[1], total: number, ps: number) => series('istio_tcp_received_bytes_total', o, total, ps);

const MESH: MeshSnapshot = {
  workloads: [
    wl('shop/client', 'node-1', '10.0.1.1'),
    wl('shop/server-a', 'node-2', '10.0.2.1'),
    wl('shop/server-b', 'node-1', '10.0.1.2'),
    wl('legacy/old', 'node-2', '10.0.2.9', { protocol: 'TCP' }),
  ],
  services: [svc('shop/server', ['shop/server-a', 'shop/server-b'])],
};

function edge(g: MeshGraph, source: string, target: string): GraphEdge {
  const e = g.edges.find((x) => x.source === source && x.target === target);
  assert.ok(e, `no edge ${source} -> ${target}; edges: ${g.edges.map((x) => x.id).join(', ')}`);
  return e;
}

describe('buildGraph', () => {
  test('nodes: every workload (with identity, node, capture), every service with its endpoints', () => {
    const g = buildGraph(MESH, 7, [], 0, 'example.org');
    assert.equal(g.version, 7);
    assert.deepEqual(g.nodes.map((n) => n.id), ['service:shop/server', 'workload:legacy/old', 'workload:shop/client', 'workload:shop/server-a', 'workload:shop/server-b']);
    const client = g.nodes.find((n) => n.id === 'workload:shop/client')!;
    assert.deepEqual(client, { id: 'workload:shop/client', kind: 'workload', name: 'client', namespace: 'shop', node: 'node-1', ip: '10.0.1.1', inMesh: true, identity: 'spiffe://example.org/ns/shop/sa/client' });
    assert.equal(g.nodes.find((n) => n.id === 'workload:legacy/old')!.inMesh, false);
    assert.deepEqual(g.nodes.find((n) => n.id === 'service:shop/server')!.endpoints, ['workload:shop/server-a', 'workload:shop/server-b']);
    assert.deepEqual(g.edges, []);
  });

  test('client → service → endpoints from the client side; the server side of the same traffic is not counted twice', () => {
    const a = { from: 'shop/client', via: 'shop/server', to: 'shop/server-a' };
    const b = { from: 'shop/client', via: 'shop/server', to: 'shop/server-b' };
    const g = buildGraph(MESH, 1, [
      opened(a, 30, 2), closed(a, 28), bytes(a, 3000, 200),
      opened(b, 10, 1), closed(b, 10), bytes(b, 1000, 100),
      // the servers' ztunnels report the same connections
      opened({ ...a, reporter: 'destination' }, 30, 2), opened({ ...b, reporter: 'destination' }, 10, 1), bytes({ ...a, reporter: 'destination' }, 3000, 200),
    ], 10, 'cluster.local');
    assert.deepEqual(g.edges.map((e) => e.id), ['service:shop/server->workload:shop/server-a', 'service:shop/server->workload:shop/server-b', 'workload:shop/client->service:shop/server']);
    assert.deepEqual(edge(g, 'workload:shop/client', 'service:shop/server'), {
      id: 'workload:shop/client->service:shop/server', source: 'workload:shop/client', target: 'service:shop/server',
      connectionsPerSecond: 3, bytesPerSecond: 300, requestsPerSecond: null, errorRate: 0, open: 2, totalConnections: 40, mtls: 'mutual_tls',
    });
    assert.equal(edge(g, 'service:shop/server', 'workload:shop/server-a').connectionsPerSecond, 2);
    assert.equal(edge(g, 'service:shop/server', 'workload:shop/server-a').open, 2);
    assert.equal(edge(g, 'service:shop/server', 'workload:shop/server-b').open, 0);
    assert.equal(g.windowSeconds, 10);
  });

  test('traffic only the server side saw (a source outside the mesh, or an unknown one) is counted from there, as plaintext', () => {
    const g = buildGraph(MESH, 1, [
      opened({ reporter: 'destination', from: 'legacy/old', to: 'shop/server-a', mtls: false }, 4, 0.5),
      opened({ reporter: 'destination', to: 'shop/server-b', mtls: false }, 2, 0.25),
    ], 10, 'cluster.local');
    const e = edge(g, 'workload:legacy/old', 'workload:shop/server-a');
    assert.equal(e.connectionsPerSecond, 0.5);
    assert.equal(e.mtls, 'plaintext');
    assert.equal(edge(g, 'outside', 'workload:shop/server-b').connectionsPerSecond, 0.25);
    assert.deepEqual(g.nodes.find((n) => n.id === 'outside'), { id: 'outside', kind: 'outside', name: 'outside the mesh', namespace: '' });
  });

  test('a mesh pod to a destination outside the mesh: plaintext, reported by the client side', () => {
    const g = buildGraph(MESH, 1, [opened({ from: 'shop/client', to: 'legacy/old', mtls: false }, 3, 1)], 10, 'cluster.local');
    assert.equal(edge(g, 'workload:shop/client', 'workload:legacy/old').mtls, 'plaintext');
    const g2 = buildGraph(MESH, 1, [opened({ from: 'shop/client', mtls: false }, 3, 1)], 10, 'cluster.local');
    assert.equal(edge(g2, 'workload:shop/client', 'outside').connectionsPerSecond, 1);
  });

  test('error rate = failed / (opened + failed) in the window; null when the window saw nothing', () => {
    const o = { from: 'shop/client', to: 'shop/server-a' };
    const g = buildGraph(MESH, 1, [opened(o, 10, 3), failed(o, 4, 1)], 10, 'cluster.local');
    assert.equal(edge(g, 'workload:shop/client', 'workload:shop/server-a').errorRate, 0.25);
    const quiet = buildGraph(MESH, 1, [opened(o, 10, 0), failed(o, 4, 0)], 10, 'cluster.local');
    assert.equal(edge(quiet, 'workload:shop/client', 'workload:shop/server-a').errorRate, null);
    // only refused connections: an edge all errors
    const denied = buildGraph(MESH, 1, [failed(o, 4, 2)], 10, 'cluster.local');
    assert.equal(edge(denied, 'workload:shop/client', 'workload:shop/server-a').errorRate, 1);
    assert.equal(edge(denied, 'workload:shop/client', 'workload:shop/server-a').mtls, 'mutual_tls');
  });

  test('mTLS status: from the window when it carried traffic, else from all connections so far', () => {
    const o = { from: 'shop/client', to: 'shop/server-a' };
    const now = buildGraph(MESH, 1, [opened(o, 10, 1), opened({ ...o, mtls: false }, 5, 0)], 10, 'cluster.local');
    assert.equal(edge(now, 'workload:shop/client', 'workload:shop/server-a').mtls, 'mutual_tls');
    const history = buildGraph(MESH, 1, [opened(o, 10, 0), opened({ ...o, mtls: false }, 5, 0)], 10, 'cluster.local');
    assert.equal(edge(history, 'workload:shop/client', 'workload:shop/server-a').mtls, 'mixed');
  });

  test('a workload the metrics name but the mesh no longer has is drawn, marked gone', () => {
    const g = buildGraph(MESH, 1, [opened({ from: 'shop/deleted', to: 'shop/server-a' }, 1, 0)], 10, 'cluster.local');
    assert.deepEqual(g.nodes.find((n) => n.id === 'workload:shop/deleted'), { id: 'workload:shop/deleted', kind: 'workload', name: 'deleted', namespace: 'shop', gone: true });
  });

  describe('waypoints (read defensively: the model may or may not carry them)', () => {
    const withWaypoint: MeshSnapshot = {
      workloads: [...MESH.workloads, wl('shop/wp-7f9c', 'node-2', '10.0.2.7', { labels: { 'gateway.networking.k8s.io/gateway-name': 'wp' }, protocol: 'TCP' })],
      services: [svc('shop/server', ['shop/server-a', 'shop/server-b'], { waypoint: 'shop/wp' })],
    };

    test('a service with a waypoint: its traffic is drawn through the waypoint; the waypoint pod is the waypoint', () => {
      const g = buildGraph(withWaypoint, 1, [opened({ from: 'shop/client', via: 'shop/server', to: 'shop/server-a' }, 5, 1)], 10, 'cluster.local');
      assert.ok(!g.nodes.some((n) => n.id === 'workload:shop/wp-7f9c'), 'the waypoint pod is not drawn as a workload');
      assert.deepEqual(g.nodes.find((n) => n.id === 'waypoint:shop/wp'), { id: 'waypoint:shop/wp', kind: 'waypoint', name: 'wp', namespace: 'shop' });
      assert.equal(g.nodes.find((n) => n.id === 'service:shop/server')!.waypoint, 'waypoint:shop/wp');
      assert.deepEqual(g.edges.map((e) => e.id), [
        'service:shop/server->workload:shop/server-a',
        'waypoint:shop/wp->service:shop/server',
        'workload:shop/client->waypoint:shop/wp',
      ]);
    });

    test('traffic addressed to the waypoint pod ends there; the waypoint\'s own leg continues to the endpoint', () => {
      const g = buildGraph(withWaypoint, 1, [
        opened({ from: 'shop/client', via: 'shop/server', to: 'shop/wp-7f9c' }, 5, 1),
        opened({ reporter: 'destination', from: 'shop/wp-7f9c', via: 'shop/server', to: 'shop/server-b' }, 5, 1),
        series('istio_requests_total', { reporter: 'waypoint', from: 'shop/client', via: 'shop/server', to: 'shop/server-b' }, 50, 10),
      ], 10, 'cluster.local');
      assert.equal(edge(g, 'workload:shop/client', 'waypoint:shop/wp').connectionsPerSecond, 1);
      assert.equal(edge(g, 'waypoint:shop/wp', 'service:shop/server').connectionsPerSecond, 1);
      assert.equal(edge(g, 'waypoint:shop/wp', 'service:shop/server').requestsPerSecond, 10);
      assert.equal(edge(g, 'service:shop/server', 'workload:shop/server-b').requestsPerSecond, 10);
      assert.equal(edge(g, 'workload:shop/client', 'waypoint:shop/wp').requestsPerSecond, 10);
      assert.ok(!g.edges.some((e) => e.source === e.target));
    });

    test('snapshot.waypoints and workload waypoints are read when well formed and skipped otherwise', () => {
      const snap = {
        workloads: [wl('shop/client', 'node-1', '10.0.1.1'), { ...wl('shop/db', 'node-1', '10.0.1.5'), waypoint: { name: 'db-wp' } }],
        services: [],
        waypoints: [{ key: 'shop/wp' }, 'bad', 42, null, { name: 'other', namespace: 'x' }, 'ns2/plain'],
      } as unknown as MeshSnapshot;
      const g = buildGraph(snap, 1, [opened({ from: 'shop/client', to: 'shop/db' }, 1, 1)], 10, 'cluster.local');
      assert.deepEqual(g.nodes.filter((n) => n.kind === 'waypoint').map((n) => n.id), ['waypoint:default/bad', 'waypoint:ns2/plain', 'waypoint:shop/db-wp', 'waypoint:shop/wp', 'waypoint:x/other']);
      assert.deepEqual(g.edges.map((e) => e.id), ['waypoint:shop/db-wp->workload:shop/db', 'workload:shop/client->waypoint:shop/db-wp']);
      const odd = { ...MESH, waypoints: 'not a list' } as unknown as MeshSnapshot;
      assert.equal(buildGraph(odd, 1, [], 0, 'cluster.local').nodes.filter((n) => n.kind === 'waypoint').length, 0);
    });
  });
});

describe('waypointKey', () => {
  test('a string (with or without namespace), {key}, {name, namespace}; anything else is none', () => {
    assert.equal(waypointKey('ns/wp', 'd'), 'ns/wp');
    assert.equal(waypointKey('wp', 'd'), 'd/wp');
    assert.equal(waypointKey({ key: 'ns/wp' }, 'd'), 'ns/wp');
    assert.equal(waypointKey({ name: 'wp' }, 'd'), 'd/wp');
    assert.equal(waypointKey({ name: 'wp', namespace: 'n' }, 'd'), 'n/wp');
    for (const bad of [undefined, null, '', 3, [], { key: 'noslash' }, { namespace: 'x' }]) assert.equal(waypointKey(bad, 'd'), null, JSON.stringify(bad));
  });
});
