// KubeSource against an API server that speaks the real list/watch protocol: initial list,
// debounced changes, node-scoped pods, 410 Expired → relist, API server restarts, the last good
// state kept while the server is away, bad objects skipped, CRDs that are not installed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeApiServer, eventually } from './fake-apiserver.js';
import { KubeSource, MESH_RESOURCES, nodeAgentResources, toKubeObject } from '../../../shared/config/kube-source.js';
import type { KubeObject } from '../../../shared/config/objects.js';
import { captureLogger, kubeConfigFor, namespace, pod, service, endpointSlice, authorizationPolicy, peerAuthentication, waypointGateway, httpRoute, grpcRoute } from './fixtures.js';

const fast = { debounceMs: 20, maxDelayMs: 200, backoffMinMs: 20, backoffMaxMs: 200 };
const names = (objs: KubeObject[], kind?: string): string[] => objs.filter((o) => !kind || o.kind === kind).map((o) => `${o.kind}:${o.metadata.namespace ? o.metadata.namespace + '/' : ''}${o.metadata.name}`);
const podNames = (objs: KubeObject[]): string[] => objs.filter((o) => o.kind === 'Pod').map((o) => `${o.metadata.namespace}/${o.metadata.name}`);

describe('KubeSource', () => {
  let fake: FakeApiServer;
  before(async () => {
    fake = await FakeApiServer.start({ bookmarkIntervalMs: 200 });
    fake.put(namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }));
  });
  after(async () => fake.close());

  test('lists every kind the mesh reads, as KubeObjects with apiVersion and kind, without managedFields', async () => {
    fake.put(pod('shop', 'echo-5d8f7', { ip: '10.244.1.7' }));
    fake.put(service('shop', 'echo', { clusterIP: '10.96.0.20' }));
    fake.put(endpointSlice('shop', 'echo', ['10.244.1.7']));
    fake.put(authorizationPolicy('shop', 'allow-client'));
    fake.put(peerAuthentication('shop', 'strict'));
    fake.put(waypointGateway('shop'));
    fake.put(httpRoute('shop', 'echo-canary', 'echo'));
    fake.put(grpcRoute('shop', 'health', 'echo'));
    const { log } = captureLogger();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log, ...fast });
    try {
      const objs = await src.start();
      for (const want of ['Namespace:shop', 'Pod:shop/echo-5d8f7', 'Service:shop/echo', 'EndpointSlice:shop/echo-x2v9q', 'AuthorizationPolicy:shop/allow-client', 'PeerAuthentication:shop/strict', 'Gateway:shop/waypoint', 'HTTPRoute:shop/echo-canary', 'GRPCRoute:shop/health']) {
        assert.ok(names(objs).includes(want), `${want} in ${names(objs).join(', ')}`);
      }
      const p = objs.find((o) => o.kind === 'Pod')!;
      assert.equal(p.apiVersion, 'v1', 'list items lack apiVersion/kind; the source fills them in');
      assert.equal((p.status as { podIP: string }).podIP, '10.244.1.7');
      assert.equal((p.metadata as Record<string, unknown>).managedFields, undefined);
      assert.equal(typeof p.metadata.uid, 'string');
      assert.equal(objs.find((o) => o.kind === 'EndpointSlice')!.apiVersion, 'discovery.k8s.io/v1');
      assert.ok(src.status().every((s) => s.state === 'synced'));
      // a watch per kind, asking for bookmarks and a server-side timeout
      await eventually(() => fake.audit.filter((a) => a.verb === 'watch').length >= 9, 'a watch per kind');
    } finally {
      src.stop();
    }
  });

  test('a burst of changes is one debounced change event with the new state', async () => {
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log: captureLogger().log, ...fast, debounceMs: 100, maxDelayMs: 1000 });
    try {
      await src.start();
      const events: KubeObject[][] = [];
      src.on('change', (o) => events.push(o));
      for (let i = 0; i < 5; i++) fake.put(pod('shop', `burst-${i}`, { ip: `10.244.2.${i + 1}` }));
      fake.remove('v1', 'Pod', 'shop', 'burst-0');
      await eventually(() => events.length >= 1, 'a change event');
      await new Promise((r) => setTimeout(r, 250));
      assert.equal(events.length, 1, 'one event for the burst');
      const pods = podNames(events[0]!);
      assert.ok(pods.includes('shop/burst-4') && !pods.includes('shop/burst-0'));
      assert.deepEqual(podNames(src.objects), pods);
    } finally {
      src.stop();
    }
  });

  test("a node agent's source sees only its node's pods (field selector spec.nodeName), and a pod that moves away leaves it", async () => {
    fake.put(pod('shop', 'on-a', { node: 'node-a', ip: '10.244.3.1' }));
    fake.put(pod('shop', 'on-b', { node: 'node-b', ip: '10.244.3.2' }));
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log: captureLogger().log, resources: nodeAgentResources('node-a'), ...fast });
    try {
      const objs = await src.start();
      assert.deepEqual(podNames(objs), ['shop/on-a']);
      assert.ok(names(objs).includes('Namespace:shop'));
      assert.ok(fake.audit.some((a) => a.verb === 'list' && a.resource === 'pods'), 'listed pods');
      fake.put(pod('shop', 'on-a2', { node: 'node-a', ip: '10.244.3.3' }));
      fake.put(pod('shop', 'on-b2', { node: 'node-b', ip: '10.244.3.4' }));
      await eventually(() => podNames(src.objects).includes('shop/on-a2'), 'the new pod on node-a');
      assert.ok(!podNames(src.objects).includes('shop/on-b2'));
      // evicted and recreated elsewhere under the same name: the filtered watch says DELETED
      fake.put(pod('shop', 'on-a', { node: 'node-b', ip: '10.244.3.1' }));
      await eventually(() => !podNames(src.objects).includes('shop/on-a'), 'on-a gone from node-a');
    } finally {
      src.stop();
    }
  });

  test('410 Expired on an open watch: the source lists again and carries on', async () => {
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log: captureLogger().log, resources: [MESH_RESOURCES.Pod], ...fast });
    try {
      await src.start();
      const lists = (): number => fake.audit.filter((a) => a.verb === 'list' && a.resource === 'pods').length;
      await eventually(() => fake.activeWatches >= 1, 'the watch to be open');
      const before = lists();
      fake.expireWatches();
      await eventually(() => lists() > before, 'a relist after 410');
      await eventually(() => fake.activeWatches > 0, 'a new watch');
      fake.put(pod('shop', 'after-expiry', { ip: '10.244.4.1' }));
      await eventually(() => podNames(src.objects).includes('shop/after-expiry'), 'changes after the relist');
    } finally {
      src.stop();
    }
  });

  test('watches end at their server-side timeout and are renewed from the last resourceVersion (no relist)', async () => {
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log: captureLogger().log, resources: [MESH_RESOURCES.Pod], ...fast, watchTimeoutSeconds: [1, 1] });
    try {
      await src.start();
      const lists = fake.audit.filter((a) => a.verb === 'list' && a.resource === 'pods').length;
      const watches = (): number => fake.audit.filter((a) => a.verb === 'watch' && a.resource === 'pods').length;
      const w0 = watches();
      await eventually(() => watches() >= w0 + 2, 'two renewed watches', 5000);
      assert.equal(fake.audit.filter((a) => a.verb === 'list' && a.resource === 'pods').length, lists, 'renewal resumes, it does not list again');
      fake.put(pod('shop', 'after-renewal', { ip: '10.244.4.2' }));
      await eventually(() => podNames(src.objects).includes('shop/after-renewal'), 'changes on the renewed watch');
    } finally {
      src.stop();
    }
  });

  test('while the API server is away the last state is served; after its restart (history lost → 410) the source relists and sees what changed meanwhile', async () => {
    fake.put(pod('shop', 'survivor', { ip: '10.244.5.1' }));
    fake.put(pod('shop', 'doomed', { ip: '10.244.5.2' }));
    const { log, has } = captureLogger();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log, ...fast });
    const events: KubeObject[][] = [];
    try {
      await src.start();
      src.on('change', (o) => events.push(o));
      const before = src.objects;
      await fake.stop();
      await eventually(() => has('Kubernetes watch failed; serving the last known state and retrying'), 'the source to notice');
      await new Promise((r) => setTimeout(r, 300)); // several failed reconnects
      assert.equal(src.objects, before, 'same state while away');
      assert.equal(events.length, 0, 'no change event while away (never an empty config)');
      assert.ok(src.status().some((s) => s.error !== null), 'status says why');
      // meanwhile, in etcd:
      fake.remove('v1', 'Pod', 'shop', 'doomed');
      fake.put(pod('shop', 'newcomer', { ip: '10.244.5.3' }));
      await fake.restart({ compact: true });
      await eventually(() => podNames(src.objects).includes('shop/newcomer') && !podNames(src.objects).includes('shop/doomed'), 'the state after the restart', 10_000);
      assert.ok(podNames(src.objects).includes('shop/survivor'));
      await eventually(() => has('Kubernetes watch restored'), 'a recovery log line');
      await eventually(() => src.status().every((s) => s.error === null), 'every kind healthy again', 5000);
    } finally {
      src.stop();
    }
  });

  test('after a restart that kept its history, watches resume from their resourceVersion without a relist', async () => {
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log: captureLogger().log, resources: [MESH_RESOURCES.Pod], ...fast });
    try {
      await src.start();
      const lists = fake.audit.filter((a) => a.verb === 'list' && a.resource === 'pods').length;
      await fake.stop();
      fake.put(pod('shop', 'while-down', { ip: '10.244.6.1' }));
      await fake.restart({ compact: false });
      await eventually(() => podNames(src.objects).includes('shop/while-down'), 'the change made while down', 10_000);
      assert.equal(fake.audit.filter((a) => a.verb === 'list' && a.resource === 'pods').length, lists, 'resumed, not relisted');
    } finally {
      src.stop();
    }
  });

  test('a malformed object is logged and skipped, the rest is served; fixed, it appears', async () => {
    const { log, has } = captureLogger();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake), log, resources: [MESH_RESOURCES.Service, MESH_RESOURCES.Pod], ...fast });
    try {
      await src.start();
      // named targetPorts are not something the mesh can translate yet: skipped, not fatal
      fake.put(service('shop', 'named-port', { ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] }));
      fake.put(service('shop', 'fine'));
      await eventually(() => names(src.objects).includes('Service:shop/fine'), 'the good service');
      assert.ok(!names(src.objects).includes('Service:shop/named-port'));
      await eventually(() => has('Kubernetes object skipped: the mesh cannot read it', { kind: 'Service', object: 'shop/named-port' }), 'a log line naming it');
      fake.put(service('shop', 'named-port', { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] }));
      await eventually(() => names(src.objects).includes('Service:shop/named-port'), 'the fixed service');
    } finally {
      src.stop();
    }
  });

  test('toKubeObject refuses objects without a name, or with non-string labels', () => {
    const r = MESH_RESOURCES.Pod;
    assert.throws(() => toKubeObject({ metadata: { namespace: 'x' } }, r), /metadata.name/);
    assert.throws(() => toKubeObject({ metadata: { name: 'a' } }, r), /namespace/);
    assert.throws(() => toKubeObject({ metadata: { name: 'a', namespace: 'x', labels: { a: 1 } } }, r), /labels\.a/);
    assert.throws(() => toKubeObject('nope', r), /not an object/);
    const o = toKubeObject({ metadata: { name: 'a', namespace: 'x', managedFields: [{}] }, spec: null }, r);
    assert.equal(o.kind, 'Pod');
    assert.equal(o.spec, undefined);
  });

  test('a CRD the cluster lacks is "no objects", and picked up once installed', async () => {
    const lonely = await FakeApiServer.start();
    lonely.disabledGroups.add('gateway.networking.k8s.io');
    const { log, has } = captureLogger();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(lonely), log, ...fast });
    try {
      const objs = await src.start();
      assert.equal(objs.filter((o) => o.kind === 'Gateway').length, 0);
      assert.equal(src.status().find((s) => s.kind === 'Gateway')!.state, 'absent');
      assert.ok(has(/CRD not installed/, { kind: 'Gateway' }));
      lonely.put(namespace('shop'));
      lonely.disabledGroups.delete('gateway.networking.k8s.io');
      lonely.put(waypointGateway('shop'));
      await eventually(() => names(src.objects).includes('Gateway:shop/waypoint'), 'the Gateway once the CRD exists', 5000);
    } finally {
      src.stop();
      await lonely.close();
    }
  });

  test('start() waits for an API server that is not up yet, and gives up with a clear error after startTimeoutMs', async () => {
    const later = await FakeApiServer.start();
    await later.stop();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(later), log: captureLogger().log, resources: [MESH_RESOURCES.Namespace], ...fast });
    const started = src.start();
    setTimeout(() => void later.restart(), 300);
    const objs = await started;
    assert.ok(names(objs).includes('Namespace:default'));
    src.stop();
    await later.stop();
    const never = new KubeSource({ kubeConfig: kubeConfigFor(later), log: captureLogger().log, resources: [MESH_RESOURCES.Namespace, MESH_RESOURCES.Pod], ...fast, startTimeoutMs: 400 });
    await assert.rejects(never.start(), /did not list Namespace \(cannot reach .*\), Pod .* within 0s|did not list Namespace .*Pod/);
    await later.close();
  });

  test('credentials the API server refuses are reported, and the source keeps retrying', async () => {
    const { log, has } = captureLogger();
    const src = new KubeSource({ kubeConfig: kubeConfigFor(fake, 'wrong-token'), log, resources: [MESH_RESOURCES.Namespace], ...fast, startTimeoutMs: 500 });
    await assert.rejects(src.start(), /Unauthorized/);
    assert.ok(has('Kubernetes watch failed; serving the last known state and retrying', { status: 401 }));
  });
});
