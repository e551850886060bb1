import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hostsFile, nodeNames, planMesh } from '../../../cli/local/topology.js';
import { ConfigError, parseObjects, type KubeObject } from '../../../shared/config/objects.js';

const dirOf = (): string => '/srv/mesh';

function ns(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels }, source: 'ns.yaml (document 1)' };
}

function pod(name: string, opts: { namespace?: string; nodeName?: string; labels?: Record<string, string>; containers?: unknown; hostNetwork?: boolean } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, ...(opts.namespace ? { namespace: opts.namespace } : {}), ...(opts.labels ? { labels: opts.labels } : {}) },
    spec: {
      ...(opts.nodeName ? { nodeName: opts.nodeName } : {}),
      ...(opts.hostNetwork ? { hostNetwork: true } : {}),
      containers: opts.containers ?? [{ name: 'app', command: ['node', 'app.mjs'] }],
    },
    source: `pods.yaml (document 1)`,
  };
}

function service(name: string, namespace: string | undefined, spec: Record<string, unknown> = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, ...(namespace ? { namespace } : {}) },
    spec: { selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }], ...spec },
    source: 'svc.yaml (document 1)',
  };
}

function refuses(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(f)}`);
    return true;
  });
}

describe('planMesh', () => {
  test('gives every node a netns, a fabric address and a pod range', () => {
    const plan = planMesh('demo', 2, [], dirOf);
    assert.deepEqual(nodeNames(2), ['node-1', 'node-2']);
    assert.deepEqual(plan.nodes, [
      { name: 'node-1', netns: 'demo-node-1', ip: '10.248.0.11', podCidr: '10.249.1.0/24', podGateway: '10.249.1.1', fabricLink: 'n1' },
      { name: 'node-2', netns: 'demo-node-2', ip: '10.248.0.12', podCidr: '10.249.2.0/24', podGateway: '10.249.2.1', fabricLink: 'n2' },
    ]);
    assert.equal(plan.fabric.netns, 'demo-fabric');
    assert.deepEqual(plan.pods, []);
    assert.deepEqual(plan.services, []);
  });

  test('--nodes must be a whole number from 1 to 50', () => {
    for (const n of [0, -1, 51, 1.5, Number.NaN]) refuses(() => planMesh('demo', n, [], dirOf), '--nodes');
    assert.equal(planMesh('demo', 1, [], dirOf).nodes.length, 1);
    assert.equal(planMesh('demo', 50, [], dirOf).nodes.length, 50);
  });

  test('schedules pods without a node round robin, and keeps an explicit nodeName', () => {
    const plan = planMesh('demo', 3, [pod('a'), pod('b'), pod('pinned', { nodeName: 'node-3' }), pod('c'), pod('d')], dirOf);
    assert.deepEqual(
      plan.pods.map((p) => [p.name, p.node]),
      [
        ['a', 'node-1'],
        ['b', 'node-2'],
        ['pinned', 'node-3'],
        ['c', 'node-3'],
        ['d', 'node-1'],
      ],
    );
    // addresses come from the node's range and are distinct
    assert.deepEqual(
      plan.pods.map((p) => p.ip),
      ['10.249.1.11', '10.249.2.11', '10.249.3.11', '10.249.3.12', '10.249.1.12'],
    );
    assert.equal(new Set(plan.pods.map((p) => p.netns)).size, plan.pods.length);
    assert.equal(new Set(plan.pods.map((p) => p.hostLink)).size, plan.pods.length);
  });

  test('a nodeName that is not a node of the mesh is refused', () => {
    refuses(() => planMesh('demo', 2, [pod('web', { nodeName: 'node-3' })], dirOf), 'pods.yaml', 'Pod "default/web"', 'node-3', 'node-1, node-2');
  });

  test('a pod in a namespace that is not defined is refused; default needs no definition', () => {
    refuses(() => planMesh('demo', 1, [pod('web', { namespace: 'shop' })], dirOf), 'pods.yaml', 'Pod "shop/web"', 'namespace "shop" is not defined');
    assert.equal(planMesh('demo', 1, [ns('shop'), pod('web', { namespace: 'shop' })], dirOf).pods.length, 1);
    assert.equal(planMesh('demo', 1, [pod('web')], dirOf).pods[0]!.namespace, 'default');
  });

  test('a service in a namespace that is not defined is refused', () => {
    refuses(() => planMesh('demo', 1, [service('web', 'shop')], dirOf), 'svc.yaml', 'Service', 'web', 'namespace "shop" is not defined');
  });

  test('an object defined twice is refused (also when one spells out the default namespace)', () => {
    refuses(() => planMesh('demo', 1, [ns('shop'), pod('web', { namespace: 'shop' }), pod('web', { namespace: 'shop' })], dirOf), 'Pod "web" is defined twice');
    refuses(() => planMesh('demo', 1, [pod('web'), pod('web', { namespace: 'default' })], dirOf), 'Pod "web" is defined twice');
    refuses(() => planMesh('demo', 1, [ns('shop'), ns('shop')], dirOf), 'Namespace "shop" is defined twice');
    // same name, different kind or namespace: fine
    const plan = planMesh('demo', 1, [ns('shop'), pod('web'), pod('web', { namespace: 'shop' }), service('web', undefined)], dirOf);
    assert.equal(plan.pods.length, 2);
    assert.equal(plan.services.length, 1);
  });

  test('host-network pods are refused', () => {
    refuses(() => planMesh('demo', 1, [pod('web', { hostNetwork: true })], dirOf), 'hostNetwork');
  });

  test('every container needs a command; command and args make its argv; env is read', () => {
    refuses(() => planMesh('demo', 1, [pod('web', { containers: [] })], dirOf), 'Pod "default/web"', 'spec.containers must list');
    refuses(() => planMesh('demo', 1, [pod('web', { containers: [{ name: 'app', image: 'nginx' }] })], dirOf), 'Pod "default/web"', 'needs a command');
    refuses(() => planMesh('demo', 1, [pod('web', { containers: [{ command: 'node app.mjs' }] })], dirOf), 'spec.containers[0].command must be a list of strings');
    refuses(() => planMesh('demo', 1, [pod('web', { containers: [{ command: ['node'], env: { A: '1' } }] })], dirOf), 'spec.containers[0].env must be a list');
    refuses(() => planMesh('demo', 1, [pod('web', { containers: [{ command: ['node'], env: [{ name: 'PORT', value: 8080 }] }] })], dirOf), 'env entries need a string name and value');

    const plan = planMesh(
      'demo',
      1,
      [
        pod('web', {
          containers: [
            { name: 'app', command: ['node', 'echo.mjs'], args: ['--port', '8080'], env: [{ name: 'PORT', value: '8080' }, { name: 'EMPTY' }] },
            { args: ['sleep', 'infinity'] },
          ],
        }),
      ],
      (o) => `/srv/${o.metadata.name}`,
    );
    assert.deepEqual(plan.pods[0]!.containers, [
      { name: 'app', argv: ['node', 'echo.mjs', '--port', '8080'], env: { PORT: '8080', EMPTY: '' } },
      { name: 'c1', argv: ['sleep', 'infinity'], env: {} },
    ]);
    assert.equal(plan.pods[0]!.cwd, '/srv/web');
  });

  test('pods carry identity and enrollment', () => {
    const plan = planMesh(
      'demo',
      1,
      [
        ns('shop', { 'istio.io/dataplane-mode': 'ambient' }),
        { ...pod('web', { namespace: 'shop' }), spec: { serviceAccountName: 'web-sa', containers: [{ command: ['x'] }] } },
        pod('opt-out', { namespace: 'shop', labels: { 'istio.io/dataplane-mode': 'none' } }),
        pod('plain'),
      ],
      dirOf,
    );
    assert.deepEqual(
      plan.pods.map((p) => [p.key, p.uid, p.serviceAccount, p.ambient]),
      [
        ['shop/web', 'shop/web', 'web-sa', true],
        ['shop/opt-out', 'shop/opt-out', 'default', false],
        ['default/plain', 'default/plain', 'default', false],
      ],
    );
  });

  test('pods in the planned objects are scheduled, addressed and Pending', () => {
    const plan = planMesh('demo', 2, [pod('a'), pod('b', { nodeName: 'node-1' })], dirOf);
    const [a, b] = plan.objects;
    assert.equal(a!.metadata.namespace, 'default');
    assert.equal(a!.metadata.uid, 'default/a');
    assert.equal(a!.spec!.nodeName, 'node-1');
    assert.deepEqual(a!.status, { phase: 'Pending', podIP: '10.249.1.11', hostIP: '10.248.0.11' });
    assert.equal(b!.spec!.nodeName, 'node-1');
    assert.deepEqual(b!.status, { phase: 'Pending', podIP: '10.249.1.12', hostIP: '10.248.0.11' });
    // the containers are kept
    assert.deepEqual(a!.spec!.containers, [{ name: 'app', command: ['node', 'app.mjs'] }]);
  });

  test('services get VIPs, skipping the clusterIPs users set', () => {
    const plan = planMesh(
      'demo',
      1,
      [ns('shop'), service('a', 'shop'), service('b', 'shop', { clusterIP: '10.250.0.11' }), service('c', 'shop'), service('d', 'shop', { clusterIP: '10.250.0.12' }), service('e', 'shop')],
      dirOf,
    );
    assert.deepEqual(
      plan.services.map((s) => [s.key, s.vip]),
      [
        ['shop/a', '10.250.0.10'],
        ['shop/b', '10.250.0.11'],
        ['shop/c', '10.250.0.13'],
        ['shop/d', '10.250.0.12'],
        ['shop/e', '10.250.0.14'],
      ],
    );
    const a = plan.services[0]!;
    assert.deepEqual(a.hostnames, ['a.shop.svc.cluster.local', 'a.shop.svc', 'a.shop']);
    assert.deepEqual(a.ports, [{ port: 80, targetPort: 8080 }]);
    const objs = plan.objects.filter((o) => o.kind === 'Service');
    assert.deepEqual(
      objs.map((o) => o.spec!.clusterIP),
      ['10.250.0.10', '10.250.0.11', '10.250.0.13', '10.250.0.12', '10.250.0.14'],
    );
    assert.equal(plan.objects.find((o) => o.metadata.name === 'a')!.metadata.namespace, 'shop');
  });

  test('two services asking for the same clusterIP are refused', () => {
    refuses(
      () => planMesh('demo', 1, [service('a', undefined, { clusterIP: '10.250.0.40' }), service('b', undefined, { clusterIP: '10.250.0.40' })], dirOf),
      'svc.yaml',
      'Service',
      '"default/b"',
      '10.250.0.40',
    );
  });

  test('more services than local mode has VIPs for are refused', () => {
    const many = Array.from({ length: 241 }, (_, i) => service(`s${i}`, undefined));
    refuses(() => planMesh('demo', 1, many, dirOf), 'too many services');
    assert.equal(planMesh('demo', 1, many.slice(0, 240), dirOf).services.length, 240);
  });

  test('service errors name the service', () => {
    refuses(() => planMesh('demo', 1, [service('web', undefined, { ports: [] })], dirOf), 'Service "default/web"', 'spec.ports');
  });

  test('other objects pass through unchanged', () => {
    const policy: KubeObject = { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-all', namespace: 'default' }, spec: {}, source: 'p.yaml (document 1)' };
    const plan = planMesh('demo', 1, [policy], dirOf);
    assert.deepEqual(plan.objects, [policy]);
  });

  test('works on objects read from YAML', () => {
    const objs = parseObjects(
      [
        'apiVersion: v1',
        'kind: Namespace',
        'metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}',
        '---',
        'apiVersion: v1',
        'kind: Pod',
        'metadata: {name: web, namespace: shop, labels: {app: web}}',
        'spec:',
        '  containers:',
        '  - name: app',
        '    command: [node, echo.mjs]',
        '    env: [{name: PORT, value: "8080"}]',
      ].join('\n'),
      'mesh/shop.yaml',
    );
    const plan = planMesh('demo', 2, objs, (o) => o.source!.replace(/\/[^/]*$/, ''));
    assert.equal(plan.pods[0]!.ambient, true);
    assert.equal(plan.pods[0]!.cwd, 'mesh');
    assert.deepEqual(plan.pods[0]!.containers[0]!.env, { PORT: '8080' });
  });
});

describe('hostsFile', () => {
  test("lists localhost, the pod itself and every service, short names only in the pod's namespace", () => {
    const plan = planMesh('demo', 1, [ns('shop'), ns('legacy'), pod('web', { namespace: 'shop' }), service('api', 'shop'), service('db', 'legacy')], dirOf);
    const text = hostsFile(plan, plan.pods[0]!);
    assert.equal(
      text,
      [
        '127.0.0.1 localhost',
        '::1 localhost ip6-localhost ip6-loopback',
        '10.249.1.11 web',
        '10.250.0.10 api.shop.svc.cluster.local api.shop.svc api.shop api',
        '10.250.0.11 db.legacy.svc.cluster.local db.legacy.svc db.legacy',
        '',
      ].join('\n'),
    );
  });
});
