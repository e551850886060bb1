import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeObject } from '../../../shared/config/objects.js';
import { translate, type PolicyProblem } from '../../../shared/config/translate.js';
import { requestedWaypoint, waypointRefusal } from '../../../shared/config/waypoint-binding.js';
import { diffSnapshots, snapshotUpdate } from '../../../shared/control/delta.js';
import { WorkloadIndex } from '../../../shared/model/index.js';
import { planOutbound } from '../../../ztunnel/outbound.js';
import { explain } from '../../../shared/policy/explain.js';
import { buildL7Config } from '../../../control/waypoint-config.js';

const ns = (name: string, labels: Record<string, string> = {}): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
// every pod as its node agent leaves it once ztunnel serves it (it only counts where the labels ask for the mesh)
const pod = (namespace: string, name: string, ip: string, labels: Record<string, string> = {}, sa = name, phase = 'Running'): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
  spec: { nodeName: 'node-1', serviceAccountName: sa },
  status: { podIP: ip, phase },
});
const service = (namespace: string, name: string, vip: string, selector: Record<string, string>, labels: Record<string, string> = {}): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace, labels },
  spec: { clusterIP: vip, selector, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
});
const gateway = (namespace: string, name: string, labels: Record<string, string> = {}, listener: Record<string, unknown> = { name: 'mesh', port: 15008, protocol: 'HBONE' }): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace, labels },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [listener] },
});
const waypointPod = (namespace: string, name: string, ip: string, phase = 'Running'): KubeObject =>
  pod(namespace, `${name}-pod`, ip, { 'gateway.networking.k8s.io/gateway-name': name, 'istio.io/dataplane-mode': 'none' }, name, phase);

function mesh(objects: KubeObject[]) {
  const problems: PolicyProblem[] = [];
  const snap = translate(objects, problems);
  const index = new WorkloadIndex();
  index.apply(snapshotUpdate(snap, 1));
  return { snap, problems, ctx: { index, cursors: new Map<string, number>(), trustDomain: 'cluster.local' } };
}

const base = [
  ns('shop', { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' }),
  pod('shop', 'web', '10.0.1.5', { app: 'web' }),
  pod('shop', 'client', '10.0.1.6', { app: 'client' }),
  service('shop', 'web', '10.96.0.10', { app: 'web' }),
];

describe('waypoint binding', () => {
  test('a namespace label binds its services to a ready waypoint; ztunnel tunnels to the waypoint pod with the VIP as authority', () => {
    const { snap, problems, ctx } = mesh([...base, gateway('shop', 'waypoint'), waypointPod('shop', 'waypoint', '10.0.2.9'), service('shop', 'waypoint', '10.96.0.99', { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, { 'gateway.networking.k8s.io/gateway-name': 'waypoint' })]);
    assert.deepEqual(problems, []);
    assert.equal(snap.services.find((s) => s.key === 'shop/web')!.waypoint, 'shop/waypoint');
    assert.equal(snap.services.find((s) => s.key === 'shop/waypoint')!.waypoint, undefined, "the waypoint's own Service never uses a waypoint");
    assert.deepEqual(snap.waypoints, [{ key: 'shop/waypoint', name: 'waypoint', namespace: 'shop', for: 'service', pods: ['shop/waypoint-pod'], problem: null }]);
    const plan = planOutbound(ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'hbone', JSON.stringify(plan));
    assert.deepEqual(plan.target, { ip: '10.0.2.9', port: 15008 });
    assert.equal(plan.authority, '10.96.0.10:80');
    assert.equal(plan.identity, 'spiffe://cluster.local/ns/shop/sa/waypoint');
    assert.equal(plan.waypoint, 'shop/waypoint');
    // the default waypoint-for is service: pod-addressed traffic goes straight to the pod
    const direct = planOutbound(ctx, { ip: '10.0.1.5', port: 8080 });
    assert.ok(direct.kind === 'hbone');
    assert.equal(direct.authority, '10.0.1.5:8080');
    assert.equal(direct.waypoint, undefined);
  });

  test('a missing waypoint refuses service traffic (fail closed) and is reported', () => {
    const { snap, problems, ctx } = mesh(base);
    assert.equal(snap.services.find((s) => s.key === 'shop/web')!.waypoint, 'shop/waypoint');
    assert.match(problems.map((p) => p.message).join('\n'), /uses waypoint shop\/waypoint, which does not exist/);
    const plan = planOutbound(ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'refuse');
    assert.equal(plan.error.flag, 'NO_WAYPOINT');
    assert.match(plan.error.message, /traffic to service web\.shop\.svc\.cluster\.local:80 is refused: waypoint shop\/waypoint does not exist/);
  });

  test('a waypoint without a running pod, or with a wrong listener, refuses with the reason', () => {
    let m = mesh([...base, gateway('shop', 'waypoint')]);
    let plan = planOutbound(m.ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'refuse');
    assert.match(plan.error.message, /waypoint shop\/waypoint is not ready: no waypoint pod is running/);
    m = mesh([...base, gateway('shop', 'waypoint'), waypointPod('shop', 'waypoint', '10.0.2.9', 'Pending')]);
    plan = planOutbound(m.ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'refuse');
    assert.match(plan.error.message, /no waypoint pod is ready/);
    m = mesh([...base, gateway('shop', 'waypoint', {}, { name: 'mesh', port: 15009, protocol: 'HBONE' }), waypointPod('shop', 'waypoint', '10.0.2.9')]);
    plan = planOutbound(m.ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'refuse');
    assert.match(plan.error.message, /listener "mesh" has port 15009/);
  });

  test("a service's own label wins over its namespace's; none opts out", () => {
    const objects = [...base.slice(0, 3), service('shop', 'web', '10.96.0.10', { app: 'web' }, { 'istio.io/use-waypoint': 'none' }), gateway('shop', 'waypoint')];
    const { snap, ctx } = mesh(objects);
    assert.equal(snap.services.find((s) => s.key === 'shop/web')!.waypoint, undefined);
    assert.equal(planOutbound(ctx, { ip: '10.96.0.10', port: 80 }).kind, 'hbone');
    assert.deepEqual(requestedWaypoint({ 'istio.io/use-waypoint': 'wp', 'istio.io/use-waypoint-namespace': 'infra' }, 'shop', {}), { key: 'infra/wp', fromNamespace: false });
    assert.deepEqual(requestedWaypoint({}, 'shop', { 'istio.io/use-waypoint': 'wp' }), { key: 'shop/wp', fromNamespace: true });
    assert.equal(requestedWaypoint({}, 'shop', undefined), null);
  });

  test('waypoint-for: a namespace label only binds the traffic the waypoint takes; a service label naming a workload waypoint is refused', () => {
    const objects = [...base, gateway('shop', 'waypoint', { 'istio.io/waypoint-for': 'workload' }), waypointPod('shop', 'waypoint', '10.0.2.9')];
    let m = mesh(objects);
    assert.equal(m.snap.services.find((s) => s.key === 'shop/web')!.waypoint, undefined);
    assert.equal(m.snap.workloads.find((w) => w.uid === 'shop/web')!.waypoint, 'shop/waypoint');
    const toPod = planOutbound(m.ctx, { ip: '10.0.1.5', port: 8080 });
    assert.ok(toPod.kind === 'hbone');
    assert.equal(toPod.waypoint, 'shop/waypoint');
    assert.equal(toPod.authority, '10.0.1.5:8080');
    m = mesh([...objects.filter((o) => !(o.kind === 'Service')), service('shop', 'web', '10.96.0.10', { app: 'web' }, { 'istio.io/use-waypoint': 'waypoint' })]);
    assert.match(m.problems.map((p) => p.message).join('\n'), /which is for workload traffic/);
    const plan = planOutbound(m.ctx, { ip: '10.96.0.10', port: 80 });
    assert.ok(plan.kind === 'refuse');
    assert.match(plan.error.message, /is for workload traffic, not service traffic/);
    const bad = mesh([...base, gateway('shop', 'waypoint', { 'istio.io/waypoint-for': 'everything' }), waypointPod('shop', 'waypoint', '10.0.2.9')]);
    assert.match(bad.snap.waypoints![0]!.problem!, /waypoint-for="everything" must be one of/);
  });

  test('waypoint changes travel as deltas and are applied by the index', () => {
    const before = mesh([...base, gateway('shop', 'waypoint')]).snap;
    const after = mesh([...base, gateway('shop', 'waypoint'), waypointPod('shop', 'waypoint', '10.0.2.9')]).snap;
    const d = diffSnapshots(before, after, 2)!;
    assert.deepEqual(d.waypoints!.map((w) => [w.key, w.problem]), [['shop/waypoint', null]]);
    const index = new WorkloadIndex();
    index.apply(snapshotUpdate(before, 1));
    assert.match(waypointRefusal('shop/waypoint', index.waypoint('shop/waypoint'), 'service')!, /not ready/);
    index.apply(d);
    assert.equal(waypointRefusal('shop/waypoint', index.waypoint('shop/waypoint'), 'service'), null);
    const gone = diffSnapshots(after, mesh(base).snap, 3)!;
    assert.deepEqual(gone.removedWaypoints, ['shop/waypoint']);
    index.apply(gone);
    assert.equal(index.waypoint('shop/waypoint'), undefined);
  });
});

describe('explain with a waypoint on the path', () => {
  const wpObjects = [...base, gateway('shop', 'waypoint'), waypointPod('shop', 'waypoint', '10.0.2.9')];
  const denyDelete: KubeObject = {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'no-delete', namespace: 'shop' },
    spec: { targetRefs: [{ group: '', kind: 'Service', name: 'web' }], action: 'DENY', rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }] },
  };
  const onlyWaypoint: KubeObject = {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'from-waypoint', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/waypoint'] } }] }] },
  };
  const run = (objects: KubeObject[], request?: { method: string; path: string }) => {
    const snap = translate(objects);
    const l7 = buildL7Config(objects, snap, new Map(), []);
    return explain(snap, { namespace: 'shop', name: 'client' }, { kind: 'service', namespace: 'shop', name: 'web', port: 80 }, 'cluster.local', { policies: l7.policies, ...(request ? { request } : {}) });
  };

  test('a missing waypoint: refused at the source ztunnel, saying why', () => {
    const e = run(base);
    assert.equal(e.allowed, false);
    assert.match(e.summary, /denied at the source ztunnel/);
    assert.match(e.endpoints[0]!.steps[0]!.detail, /waypoint shop\/waypoint does not exist: traffic bound to a waypoint is refused/);
  });

  test('the waypoint lists its L7 policies, and decides a given request; the destination sees the waypoint identity', () => {
    let e = run([...wpObjects, denyDelete, onlyWaypoint]);
    assert.equal(e.allowed, true, e.summary);
    const layers = e.endpoints[0]!.steps.map((s) => s.layer);
    assert.deepEqual(layers, ['source ztunnel', 'waypoint', 'destination ztunnel']);
    assert.match(e.endpoints[0]!.steps[1]!.detail, /L7 policies shop\/no-delete \(DENY\) decide per request/);
    assert.equal(e.endpoints[0]!.steps[2]!.verdict, 'allow', 'ALLOW from the waypoint identity matches at L4');
    e = run([...wpObjects, denyDelete, onlyWaypoint], { method: 'DELETE', path: '/x' });
    assert.equal(e.allowed, false);
    assert.match(e.summary, /denied at the waypoint on node-1 by shop\/no-delete rule 0/);
    e = run([...wpObjects, denyDelete, onlyWaypoint], { method: 'GET', path: '/x' });
    assert.equal(e.allowed, true);
  });
});
