// Waypoints: the pure templates and status, then the controller against the API server:
// Gateway → ServiceAccount, Deployment, Service with owner references (server-side apply,
// field manager ambit) and Accepted / Programmed conditions on the status subresource.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeApiServer, eventually, type KubeJson } from './fake-apiserver.js';
import { captureLogger, deploymentStatus, kubeConfigFor, namespace, waypointGateway } from './fixtures.js';
import { GATEWAY_NAME_LABEL, MANAGED_LABEL, WaypointController, listenerProblem, sameStatus, waypointObjects, waypointStatus, type Condition } from '../../../control/waypoints.js';
import { KubeSource, MESH_RESOURCES, toKubeObject } from '../../../shared/config/kube-source.js';
import type { KubeObject } from '../../../shared/config/objects.js';

const gw = (o: Parameters<typeof waypointGateway>[2] = {}, name = 'waypoint'): KubeObject => {
  const g = toKubeObject(waypointGateway('shop', name, o), MESH_RESOURCES.Gateway);
  g.metadata.uid = '0f3c6c1e-9a5b-4b61-8f0e-2d7f3a1c9e11';
  (g.metadata as Record<string, unknown>).generation = 2;
  return g;
};
const opts = { image: 'registry.example/ambit:1.2.3', trustDomain: 'cluster.local', tokenAudience: 'ambit-ca', rootsPem: ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----'] };
const cond = (s: { conditions: Condition[] }, type: string): Condition => s.conditions.find((c) => c.type === type)!;
type Json = Record<string, unknown>;

describe('waypointObjects (pure)', () => {
  const [sa, dep, svc] = waypointObjects(gw(), opts) as [KubeObject & Json, KubeObject, KubeObject];

  test('a ServiceAccount, a Deployment and a Service named after the Gateway, in its namespace, owned by it', () => {
    assert.deepEqual([sa.kind, dep.kind, svc.kind], ['ServiceAccount', 'Deployment', 'Service']);
    for (const o of [sa, dep, svc]) {
      assert.equal(o.metadata.name, 'waypoint');
      assert.equal(o.metadata.namespace, 'shop');
      assert.deepEqual((o.metadata as Json).ownerReferences, [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid: '0f3c6c1e-9a5b-4b61-8f0e-2d7f3a1c9e11', controller: true }]);
      assert.equal(o.metadata.labels![GATEWAY_NAME_LABEL], 'waypoint');
      assert.equal(o.metadata.labels![MANAGED_LABEL], 'ambit-waypoint-controller');
    }
    assert.equal(sa.automountServiceAccountToken, false);
  });

  test('the Deployment runs node dist/waypoint/main.js --name/--namespace from the given image, as the waypoint identity, not captured itself', () => {
    const spec = dep.spec as Json;
    assert.equal(spec.replicas, undefined, 'left to kubectl scale / HPA');
    const tpl = spec.template as { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: Json };
    assert.deepEqual((spec.selector as Json).matchLabels, { [GATEWAY_NAME_LABEL]: 'waypoint' });
    assert.equal(tpl.metadata.labels[GATEWAY_NAME_LABEL], 'waypoint');
    assert.equal(tpl.metadata.labels['istio.io/dataplane-mode'], 'none');
    assert.equal(tpl.metadata.annotations['prometheus.io/scrape'], 'true');
    assert.equal(tpl.spec.serviceAccountName, 'waypoint');
    const c = (tpl.spec.containers as Json[])[0]!;
    assert.equal(c.image, 'registry.example/ambit:1.2.3');
    assert.deepEqual(c.command, ['node', '--no-allocation-site-pretenuring', 'dist/waypoint/main.js'], "the waypoint's V8 flags (shared/node-flags.ts)");
    assert.deepEqual(c.args, ['--name', 'waypoint', '--namespace', 'shop']);
    assert.deepEqual((c.ports as Json[]).map((p) => p.containerPort), [15008, 15020, 15021]);
    assert.deepEqual((c.readinessProbe as Json).httpGet, { path: '/healthz/ready', port: 15021 });
    const env = Object.fromEntries((c.env as { name: string; value?: string }[]).map((e) => [e.name, e.value ?? 'fieldRef']));
    assert.equal(env.AMBIT_CONTROL_ADDRESS, 'ambit-control.ambit-system.svc:15012');
    assert.match(env.AMBIT_ROOT_CERT!, /BEGIN CERTIFICATE/);
    const vol = (tpl.spec.volumes as Json[])[0] as { projected: { sources: { serviceAccountToken: Json }[] } };
    assert.equal(vol.projected.sources[0]!.serviceAccountToken.audience, 'ambit-ca');
    assert.deepEqual((c.securityContext as Json).capabilities, { drop: ['ALL'] });
  });

  test('the Service exposes 15008 (mesh) to the waypoint pods, with a numeric targetPort the mesh can translate', () => {
    const s = svc.spec as { selector: Json; ports: Json[] };
    assert.deepEqual(s.selector, { [GATEWAY_NAME_LABEL]: 'waypoint' });
    assert.deepEqual(s.ports, [{ name: 'mesh', port: 15008, targetPort: 15008, protocol: 'TCP' }]);
  });

  test('spec.infrastructure labels and annotations are carried onto the objects and the pods', () => {
    const [, d, s] = waypointObjects(gw({ infrastructure: { labels: { team: 'payments' }, annotations: { 'example.com/owner': 'pay' } } }), opts);
    assert.equal(s!.metadata.labels!.team, 'payments');
    assert.equal(s!.metadata.annotations!['example.com/owner'], 'pay');
    const tpl = (d!.spec as { template: { metadata: { labels: Json; annotations: Json } } }).template;
    assert.equal(tpl.metadata.labels.team, 'payments');
    assert.equal(tpl.metadata.annotations['example.com/owner'], 'pay');
  });

  test('listenerProblem: the mesh listener must be {name: mesh, port: 15008, protocol: HBONE}', () => {
    assert.equal(listenerProblem(gw()), null);
    assert.equal(listenerProblem(gw({ listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }, { name: 'extra', port: 80, protocol: 'HTTP' }] })), null);
    assert.match(listenerProblem(gw({ listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }] }))!, /listener "mesh" has port 15009 \(must be 15008\)/);
    assert.match(listenerProblem(gw({ listeners: [{ name: 'mesh', port: 15008, protocol: 'TCP' }] }))!, /protocol TCP \(must be HBONE\)/);
    assert.match(listenerProblem(gw({ listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }))!, /needs the listener \{name: mesh, port: 15008, protocol: HBONE\}; the Gateway has http/);
    assert.match(listenerProblem(gw({ listeners: [] }))!, /has no listeners/);
  });
});

describe('waypointStatus (pure)', () => {
  const now = new Date('2024-05-01T12:00:00Z');
  const dep = (available: number): KubeObject => ({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'waypoint', namespace: 'shop' }, spec: { replicas: 1 }, status: deploymentStatus(available) });
  const svc: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'waypoint', namespace: 'shop' }, spec: { clusterIP: '10.96.0.50' } };

  test('no Deployment yet: Accepted, Programmed=False Pending, saying what it waits for', () => {
    const s = waypointStatus(gw(), undefined, undefined, now);
    assert.deepEqual({ ...cond(s, 'Accepted') }, { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'accepted as a waypoint (ambit)', observedGeneration: 2, lastTransitionTime: '2024-05-01T12:00:00Z' });
    assert.equal(cond(s, 'Programmed').status, 'False');
    assert.equal(cond(s, 'Programmed').reason, 'Pending');
    assert.equal(cond(s, 'Programmed').message, 'waiting for the waypoint Deployment to be created');
    assert.deepEqual(s.addresses, [{ type: 'Hostname', value: 'waypoint.shop.svc.cluster.local' }]);
  });

  test('Deployment not ready: Pending "waiting for the waypoint Deployment to be ready (0/1 replicas available)"', () => {
    const s = waypointStatus(gw(), dep(0), svc, now);
    assert.equal(cond(s, 'Programmed').message, 'waiting for the waypoint Deployment to be ready (0/1 replicas available)');
  });

  test('a Deployment that stopped progressing says why', () => {
    const d = dep(0);
    (d.status as { conditions: Json[] }).conditions.push({ type: 'ReplicaFailure', status: 'True', reason: 'FailedCreate', message: 'pods "waypoint-x" is forbidden: exceeded quota' });
    assert.match(cond(waypointStatus(gw(), d, svc, now), 'Programmed').message, /not progressing: pods "waypoint-x" is forbidden: exceeded quota/);
  });

  test('ready: Programmed=True with the Service address, listener status filled in', () => {
    const s = waypointStatus(gw(), dep(1), svc, now);
    assert.equal(cond(s, 'Programmed').status, 'True');
    assert.equal(cond(s, 'Programmed').reason, 'Programmed');
    assert.deepEqual(s.addresses, [{ type: 'IPAddress', value: '10.96.0.50' }]);
    assert.equal(s.listeners![0]!.name, 'mesh');
    assert.deepEqual(s.listeners![0]!.conditions.map((c) => `${c.type}=${c.status}`), ['Accepted=True', 'Programmed=True', 'ResolvedRefs=True']);
  });

  test('a wrong listener: Accepted=False ListenersNotValid, and Programmed=False Invalid', () => {
    const s = waypointStatus(gw({ listeners: [{ name: 'mesh', port: 8080, protocol: 'HBONE' }] }), undefined, undefined, now);
    assert.equal(cond(s, 'Accepted').status, 'False');
    assert.equal(cond(s, 'Accepted').reason, 'ListenersNotValid');
    assert.match(cond(s, 'Accepted').message, /port 8080 \(must be 15008\)/);
    assert.equal(cond(s, 'Programmed').reason, 'Invalid');
  });

  test('lastTransitionTime moves only when a condition changes status; sameStatus ignores it', () => {
    const g = gw();
    g.status = waypointStatus(g, dep(0), svc, now) as unknown as Record<string, unknown>;
    const later = new Date('2024-05-01T12:05:00Z');
    const still = waypointStatus(g, dep(0), svc, later);
    assert.equal(cond(still, 'Programmed').lastTransitionTime, '2024-05-01T12:00:00Z');
    assert.ok(sameStatus(g.status, still));
    const ready = waypointStatus(g, dep(1), svc, later);
    assert.equal(cond(ready, 'Programmed').lastTransitionTime, '2024-05-01T12:05:00Z');
    assert.equal(cond(ready, 'Accepted').lastTransitionTime, '2024-05-01T12:00:00Z');
    assert.ok(!sameStatus(g.status, ready));
  });
});

describe('WaypointController against the API server', () => {
  let fake: FakeApiServer;
  let source: KubeSource;
  let controller: WaypointController;
  const { log, has } = captureLogger();

  before(async () => {
    fake = await FakeApiServer.start();
    fake.put(namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    const kc = kubeConfigFor(fake);
    const fast = { debounceMs: 10, backoffMinMs: 20, backoffMaxMs: 200 };
    source = new KubeSource({ kubeConfig: kc, log, resources: [MESH_RESOURCES.Gateway, MESH_RESOURCES.Service], ...fast });
    await source.start();
    controller = new WaypointController({
      kubeConfig: kc,
      view: { objects: () => source.objects, on: (e, fn) => source.on(e, fn) },
      log,
      ...opts,
      deployments: new KubeSource({ kubeConfig: kc, log, resources: [{ apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments', namespaced: true, labelSelector: `${MANAGED_LABEL}=ambit-waypoint-controller` }], check: () => undefined, ...fast }),
    });
    await controller.start();
  });
  after(async () => {
    controller.stop();
    source.stop();
    await fake.close();
  });

  const gwStatus = (name = 'waypoint'): { conditions?: Condition[] } => (fake.get('gateway.networking.k8s.io/v1', 'Gateway', 'shop', name)?.status ?? {}) as { conditions?: Condition[] };
  const condition = (type: string, name = 'waypoint'): Condition | undefined => gwStatus(name).conditions?.find((c) => c.type === type);

  test('a waypoint Gateway gets its ServiceAccount, Deployment and Service (owned by it, applied by field manager ambit) and a Pending status', async () => {
    const g = fake.put(waypointGateway('shop', 'waypoint', { for: 'service' }));
    const dep = await eventually(() => fake.get('apps/v1', 'Deployment', 'shop', 'waypoint'), 'the Deployment');
    const svc = await eventually(() => fake.get('v1', 'Service', 'shop', 'waypoint'), 'the Service');
    const sa = await eventually(() => fake.get('v1', 'ServiceAccount', 'shop', 'waypoint'), 'the ServiceAccount');
    for (const o of [dep, svc, sa] as KubeJson[]) {
      const refs = o.metadata.ownerReferences as Json[];
      assert.deepEqual(refs.map((r) => `${String(r.kind)}/${String(r.name)}/${String(r.uid)}/${String(r.controller)}`), [`Gateway/waypoint/${g.metadata.uid as string}/true`]);
      const mf = o.metadata.managedFields as { manager: string; operation: string }[];
      assert.ok(mf.some((m) => m.manager === 'ambit' && m.operation === 'Apply'), `${String(o.kind)} applied by ambit`);
    }
    const programmed = await eventually(() => condition('Programmed'), 'a Programmed condition');
    assert.equal(programmed.status, 'False');
    assert.equal(programmed.reason, 'Pending');
    assert.match(programmed.message, /waiting for the waypoint Deployment to be ready \(0\/1 replicas available\)|to be created/);
    assert.equal(condition('Accepted')!.status, 'True');
    assert.ok(fake.audit.some((a) => a.resource === 'gateways' && a.subresource === 'status' && a.verb === 'patch'), 'written through the status subresource');
  });

  test('once the Deployment has an available replica, the Gateway is Programmed with the Service address', async () => {
    fake.setStatus('apps/v1', 'Deployment', 'shop', 'waypoint', deploymentStatus(1));
    await eventually(() => condition('Programmed')?.status === 'True', 'Programmed=True');
    const st = fake.get('gateway.networking.k8s.io/v1', 'Gateway', 'shop', 'waypoint')!.status as { addresses: { type: string; value: string }[] };
    const ip = (fake.get('v1', 'Service', 'shop', 'waypoint')!.spec as { clusterIP: string }).clusterIP;
    assert.deepEqual(st.addresses, [{ type: 'IPAddress', value: ip }]);
  });

  test('a steady state makes no writes (no status churn, no re-apply)', async () => {
    await controller.settled();
    const rv = fake.resourceVersion;
    await new Promise((r) => setTimeout(r, 300));
    await controller.settled();
    assert.equal(fake.resourceVersion, rv);
  });

  test('a deleted waypoint Deployment is put back', async () => {
    fake.remove('apps/v1', 'Deployment', 'shop', 'waypoint');
    await eventually(() => fake.get('apps/v1', 'Deployment', 'shop', 'waypoint'), 'the Deployment again', 10_000);
    await eventually(() => condition('Programmed')?.status === 'False', 'Programmed=False while it comes back');
  });

  test('a Gateway with a wrong listener is not deployed and says why: Accepted=False ListenersNotValid', async () => {
    fake.put(waypointGateway('shop', 'broken', { listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }] }));
    const accepted = await eventually(() => condition('Accepted', 'broken'), 'an Accepted condition');
    assert.equal(accepted.status, 'False');
    assert.equal(accepted.reason, 'ListenersNotValid');
    assert.match(accepted.message, /listener "mesh" has port 15009 \(must be 15008\)/);
    assert.equal(fake.get('apps/v1', 'Deployment', 'shop', 'broken'), undefined);
    // logged once the status write returned, which can be after the fake API server shows it
    await eventually(() => has('Gateway of class istio-waypoint is not a valid waypoint'), 'the warning in the log');
  });

  test('Gateways of other classes are left alone', async () => {
    fake.put(waypointGateway('shop', 'ingress', { className: 'istio', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }));
    await new Promise((r) => setTimeout(r, 300));
    await controller.settled();
    assert.equal(fake.get('apps/v1', 'Deployment', 'shop', 'ingress'), undefined);
    assert.equal(gwStatus('ingress').conditions, undefined);
  });

  test('deleting the Gateway takes its objects with it (owner references → garbage collection)', async () => {
    fake.remove('gateway.networking.k8s.io/v1', 'Gateway', 'shop', 'waypoint');
    await eventually(() => !fake.get('apps/v1', 'Deployment', 'shop', 'waypoint') && !fake.get('v1', 'Service', 'shop', 'waypoint') && !fake.get('v1', 'ServiceAccount', 'shop', 'waypoint'), 'all gone');
    await new Promise((r) => setTimeout(r, 200));
    await controller.settled();
    assert.equal(fake.get('apps/v1', 'Deployment', 'shop', 'waypoint'), undefined, 'not re-created for a Gateway that is gone');
  });
});
