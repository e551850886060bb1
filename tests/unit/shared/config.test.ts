import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, objectKey, parseObjects, type KubeObject } from '../../../shared/config/objects.js';
import { isAmbient, podInfo, serviceSpec, translate, type PodInfo } from '../../../shared/config/translate.js';

const FILE = 'mesh/apps.yaml';

/** Asserts parsing throws a ConfigError whose message contains every fragment. */
function refuses(text: string, ...fragments: string[]): void {
  assert.throws(
    () => parseObjects(text, FILE),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(f)}`);
      return true;
    },
  );
}

function obj(kind: string, name: string, rest: Partial<KubeObject> & { namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> } = {}): KubeObject {
  const { namespace, labels, annotations, ...others } = rest;
  return {
    apiVersion: kind === 'Service' || kind === 'Pod' || kind === 'Namespace' ? 'v1' : 'x/v1',
    kind,
    metadata: { name, ...(namespace ? { namespace } : {}), ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}) },
    source: `${FILE} (document 1)`,
    ...others,
  };
}

function pod(name: string, opts: { namespace?: string; labels?: Record<string, string>; ip?: string | null; node?: string | null; phase?: string; hostNetwork?: boolean; sa?: string; redirection?: string } = {}): KubeObject {
  return obj('Pod', name, {
    ...(opts.namespace ? { namespace: opts.namespace } : {}),
    ...(opts.labels ? { labels: opts.labels } : {}),
    ...(opts.redirection ? { annotations: { 'ambient.istio.io/redirection': opts.redirection } } : {}),
    spec: {
      ...(opts.node === null ? {} : { nodeName: opts.node ?? 'node-1' }),
      ...(opts.hostNetwork !== undefined ? { hostNetwork: opts.hostNetwork } : {}),
      ...(opts.sa ? { serviceAccountName: opts.sa } : {}),
    },
    status: { ...(opts.ip === null ? {} : { podIP: opts.ip ?? '10.0.0.1' }), phase: opts.phase ?? 'Running' },
  });
}

function service(name: string, spec: Record<string, unknown>, namespace?: string): KubeObject {
  return obj('Service', name, { ...(namespace ? { namespace } : {}), spec });
}

function info(labels: Record<string, string> = {}, hostNetwork = false): PodInfo {
  return { name: 'p', namespace: 'ns', uid: 'ns/p', serviceAccount: 'default', nodeName: 'node-1', hostNetwork, labels, ip: '10.0.0.1', phase: 'Running', serving: true, redirection: null };
}

describe('parseObjects', () => {
  test('reads every document of a multi-document file, remembering file and document', () => {
    const objs = parseObjects(
      ['apiVersion: v1', 'kind: Namespace', 'metadata: {name: shop}', '---', 'apiVersion: v1', 'kind: Pod', 'metadata: {name: web, namespace: shop, labels: {app: web}}', 'spec: {}'].join('\n'),
      FILE,
    );
    assert.equal(objs.length, 2);
    assert.equal(objs[0]!.kind, 'Namespace');
    assert.equal(objs[0]!.source, `${FILE} (document 1)`);
    assert.equal(objs[1]!.kind, 'Pod');
    assert.deepEqual(objs[1]!.metadata.labels, { app: 'web' });
    assert.equal(objs[1]!.source, `${FILE} (document 2)`);
    assert.equal(objectKey(objs[0]!), 'shop');
    assert.equal(objectKey(objs[1]!), 'shop/web');
  });

  test('skips empty documents (a leading or trailing ---)', () => {
    const objs = parseObjects('---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n', FILE);
    assert.deepEqual(
      objs.map((o) => o.metadata.name),
      ['a'],
    );
  });

  test('expands a List into its items', () => {
    const objs = parseObjects(
      [
        'apiVersion: v1',
        'kind: List',
        'items:',
        '- {apiVersion: v1, kind: Namespace, metadata: {name: a}}',
        '- {apiVersion: v1, kind: Service, metadata: {name: s, namespace: a}, spec: {ports: [{port: 80}]}}',
      ].join('\n'),
      FILE,
    );
    assert.deepEqual(
      objs.map((o) => `${o.kind}/${o.metadata.name}`),
      ['Namespace/a', 'Service/s'],
    );
  });

  test('a bad item of a List names the file, the document, its kind and name', () => {
    refuses('apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: Bad_Name}}\n', FILE, 'document 1', 'Pod', 'Bad_Name');
  });

  test('missing apiVersion names file, document, kind and name', () => {
    refuses('apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: Pod\nmetadata: {name: web}\n', FILE, 'document 2', 'Pod', '"web"', 'apiVersion');
  });

  test('missing kind names file, document and name', () => {
    refuses('apiVersion: v1\nmetadata: {name: web}\n', FILE, 'document 1', '<no kind>', '"web"', 'kind is missing');
  });

  test('missing metadata names file, document and kind', () => {
    refuses('apiVersion: v1\nkind: Pod\nspec: {}\n', FILE, 'document 1', 'Pod', '<no name>', 'metadata is missing');
    refuses('apiVersion: v1\nkind: Pod\nmetadata: just-a-string\n', FILE, 'document 1', 'Pod', 'metadata is missing');
  });

  test('missing name names file, document and kind', () => {
    refuses('apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n', FILE, 'document 1', 'Service', '<no name>', 'metadata.name');
  });

  test('names that are not lowercase DNS names are refused', () => {
    for (const bad of ['Web', 'web_1', '-web', 'web-', 'a b']) {
      refuses(`apiVersion: v1\nkind: Pod\nmetadata: {name: "${bad}"}\n`, FILE, 'document 1', 'Pod', `"${bad}"`, 'lowercase DNS name');
    }
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: 42}\n', FILE, 'Pod', 'metadata.name');
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: Shop}\n', FILE, 'Pod', '"web"', 'metadata.namespace');
  });

  test('labels and annotations must be maps of strings', () => {
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {version: 2}}\n', FILE, 'document 1', 'Pod', '"web"', 'metadata.labels.version');
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: [app, web]}\n', FILE, 'Pod', '"web"', 'metadata.labels must be a map');
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: web, annotations: {a: true}}\n', FILE, 'Pod', '"web"', 'metadata.annotations.a');
  });

  test('a spec that is not a map is refused', () => {
    refuses('apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: [1]\n', FILE, 'Pod', '"web"', 'spec must be an object');
  });

  test('a document that is not a map is refused', () => {
    refuses('- a\n- b\n', FILE, 'document 1', 'expected an object');
    refuses('just text\n', FILE, 'document 1');
  });

  test('invalid YAML names the file and the document', () => {
    refuses('apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: [unclosed\n', FILE, 'document 2', 'invalid YAML');
  });
});

describe('podInfo', () => {
  test('fills defaults: namespace, uid, service account', () => {
    const p = podInfo(obj('Pod', 'web', { spec: {}, status: {} }));
    assert.deepEqual(p, { name: 'web', namespace: 'default', uid: 'default/web', serviceAccount: 'default', nodeName: null, hostNetwork: false, labels: {}, ip: null, phase: null, serving: true, redirection: null });
  });

  test('reads service account (either field), node, IP, phase and uid', () => {
    const o = obj('Pod', 'web', { namespace: 'shop', spec: { serviceAccount: 'legacy', nodeName: 'node-2' }, status: { podIP: '10.1.0.5', phase: 'Running' } });
    o.metadata.uid = 'abc-123';
    const p = podInfo(o);
    assert.equal(p.serviceAccount, 'legacy');
    assert.equal(p.nodeName, 'node-2');
    assert.equal(p.ip, '10.1.0.5');
    assert.equal(p.phase, 'Running');
    assert.equal(p.uid, 'abc-123');
    assert.equal(podInfo(obj('Pod', 'web', { spec: { serviceAccountName: 'web-sa', serviceAccount: 'legacy' } })).serviceAccount, 'web-sa');
    assert.equal(podInfo(obj('Pod', 'web', { spec: { serviceAccountName: '' } })).serviceAccount, 'default');
  });

  test('fields of the wrong type are refused, naming the pod', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ serviceAccountName: 3 }, 'spec.serviceAccountName'],
      [{ nodeName: ['node-1'] }, 'spec.nodeName'],
      [{ hostNetwork: 'yes' }, 'spec.hostNetwork'],
    ];
    for (const [spec, field] of cases) {
      assert.throws(
        () => podInfo(obj('Pod', 'web', { namespace: 'shop', spec })),
        (err: unknown) => err instanceof ConfigError && err.message.includes(field) && err.message.includes('Pod "shop/web"') && err.message.includes(FILE),
      );
    }
  });
});

describe('serviceSpec', () => {
  test('reads ports (targetPort defaults to port), selector and clusterIP', () => {
    const s = serviceSpec(service('web', { selector: { app: 'web' }, clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }, { port: 9090 }] }));
    assert.deepEqual(s, { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }, { port: 9090, targetPort: 9090 }] });
  });

  test('headless or unset clusterIP reads as none', () => {
    assert.equal(serviceSpec(service('a', { clusterIP: 'None', ports: [{ port: 80 }] })).clusterIP, null);
    assert.equal(serviceSpec(service('a', { ports: [{ port: 80 }] })).clusterIP, null);
    assert.equal(serviceSpec(service('a', { ports: [{ port: 80 }] })).selector, null);
  });

  test('bad specs are refused, naming the service and the field', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{}, 'spec.ports must list'],
      [{ ports: [] }, 'spec.ports must list'],
      [{ ports: [{ port: 0 }] }, 'spec.ports[0].port'],
      [{ ports: [{ port: 80 }, { port: 65536 }] }, 'spec.ports[1].port'],
      [{ ports: [{ port: '80' }] }, 'spec.ports[0].port'],
      [{ ports: [{ port: 80, targetPort: 'http' }] }, 'named ports are not supported'],
      [{ ports: [{ port: 80, targetPort: 70000 }] }, 'spec.ports[0].targetPort'],
      [{ ports: [{ port: 53, protocol: 'UDP' }] }, 'UDP is not supported'],
      [{ ports: [{ port: 80 }], selector: { app: 1 } }, 'spec.selector'],
      [{ ports: [{ port: 80 }], selector: ['app'] }, 'spec.selector'],
      [{ ports: [{ port: 80 }], clusterIP: 10 }, 'spec.clusterIP'],
    ];
    for (const [spec, fragment] of cases) {
      assert.throws(
        () => serviceSpec(service('web', spec, 'shop')),
        (err: unknown) => err instanceof ConfigError && err.message.includes(fragment) && err.message.includes('Service "shop/web"') && err.message.includes(FILE),
        `spec ${JSON.stringify(spec)} should be refused with ${fragment}`,
      );
    }
  });
});

describe('isAmbient', () => {
  test('the namespace label enrolls its pods', () => {
    assert.equal(isAmbient(info(), { 'istio.io/dataplane-mode': 'ambient' }), true);
    assert.equal(isAmbient(info(), {}), false);
    assert.equal(isAmbient(info(), undefined), false);
    assert.equal(isAmbient(info(), { 'istio.io/dataplane-mode': 'sidecar' }), false);
  });

  test("a pod's own label wins over its namespace's", () => {
    assert.equal(isAmbient(info({ 'istio.io/dataplane-mode': 'ambient' }), {}), true);
    assert.equal(isAmbient(info({ 'istio.io/dataplane-mode': 'none' }), { 'istio.io/dataplane-mode': 'ambient' }), false);
  });

  test('host-network pods are never enrolled', () => {
    assert.equal(isAmbient(info({}, true), { 'istio.io/dataplane-mode': 'ambient' }), false);
    assert.equal(isAmbient(info({ 'istio.io/dataplane-mode': 'ambient' }, true), { 'istio.io/dataplane-mode': 'ambient' }), false);
  });
});

describe('translate', () => {
  const ns = (name: string, labels: Record<string, string> = {}): KubeObject => obj('Namespace', name, { labels });

  test('pods become workloads with protocol by enrollment: HBONE once meant for the mesh and enabled by their node agent', () => {
    const snap = translate([
      ns('mesh', { 'istio.io/dataplane-mode': 'ambient' }),
      ns('plain'),
      pod('a', { namespace: 'mesh', ip: '10.0.0.1', sa: 'a-sa', redirection: 'enabled' }),
      pod('b', { namespace: 'plain', ip: '10.0.0.2' }),
      pod('c', { namespace: 'mesh', ip: '10.0.0.3', labels: { 'istio.io/dataplane-mode': 'none' }, redirection: 'enabled' }),
      // labelled, not yet captured by its node agent: nothing listens on its :15008 yet
      pod('d', { namespace: 'mesh', ip: '10.0.0.4' }),
      // captured, ztunnel not serving it (yet): its traffic is refused whatever the protocol
      pod('e', { namespace: 'mesh', ip: '10.0.0.5', redirection: 'pending' }),
      // released (label gone), the agent not done yet: plain TCP at once, which its ztunnel still accepts
      pod('f', { namespace: 'plain', ip: '10.0.0.6', redirection: 'enabled' }),
    ]);
    assert.deepEqual(
      snap.workloads.map((w) => [w.name, w.protocol]),
      [
        ['a', 'HBONE'],
        ['b', 'TCP'],
        ['c', 'TCP'],
        ['d', 'TCP'],
        ['e', 'TCP'],
        ['f', 'TCP'],
      ],
    );
    const a = snap.workloads[0]!;
    assert.deepEqual(a, { uid: 'mesh/a', name: 'a', namespace: 'mesh', serviceAccount: 'a-sa', node: 'node-1', ip: '10.0.0.1', labels: {}, protocol: 'HBONE', ready: true });
  });

  test('pods without an IP or a node, and host-network pods, are not workloads', () => {
    const snap = translate([pod('no-ip', { ip: null }), pod('no-node', { node: null }), pod('host', { hostNetwork: true }), pod('ok', { ip: '10.0.0.9' })]);
    assert.deepEqual(
      snap.workloads.map((w) => w.name),
      ['ok'],
    );
  });

  test('a workload is ready only when its pod is Running', () => {
    const snap = translate([pod('run', { phase: 'Running', ip: '10.0.0.1' }), pod('pend', { phase: 'Pending', ip: '10.0.0.2' }), pod('done', { phase: 'Succeeded', ip: '10.0.0.3' })]);
    assert.deepEqual(
      snap.workloads.map((w) => [w.name, w.ready]),
      [
        ['run', true],
        ['pend', false],
        ['done', false],
      ],
    );
  });

  test('a running pod being deleted, or whose Ready condition is False, is not ready: it gets no new connections', () => {
    const withStatus = (name: string, ip: string, ready: string | null, deleting = false): KubeObject => {
      const o = pod(name, { phase: 'Running', ip });
      if (ready !== null) o.status = { ...o.status, conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: ready }] };
      if (deleting) (o.metadata as Record<string, unknown>).deletionTimestamp = '2026-12-07T10:00:00Z';
      return o;
    };
    const snap = translate([
      withStatus('ready', '10.0.0.1', 'True'),
      withStatus('probe-failing', '10.0.0.2', 'False'),
      withStatus('unknown', '10.0.0.3', 'Unknown'),
      withStatus('no-conditions', '10.0.0.4', null),
      withStatus('terminating', '10.0.0.5', 'True', true),
    ]);
    assert.deepEqual(
      snap.workloads.map((w) => [w.name, w.ready]),
      [
        ['ready', true],
        ['probe-failing', false],
        ['unknown', false],
        ['no-conditions', true],
        ['terminating', false],
      ],
    );
  });

  test('services select endpoints by label, in their own namespace only', () => {
    const snap = translate([
      ns('shop'),
      ns('other'),
      pod('web-1', { namespace: 'shop', labels: { app: 'web', tier: 'a' }, ip: '10.0.0.1' }),
      pod('web-2', { namespace: 'shop', labels: { app: 'web' }, ip: '10.0.0.2' }),
      pod('web-other', { namespace: 'other', labels: { app: 'web' }, ip: '10.0.0.3' }),
      pod('db', { namespace: 'shop', labels: { app: 'db' }, ip: '10.0.0.4' }),
      service('web', { selector: { app: 'web' }, clusterIP: '10.96.0.1', ports: [{ port: 80, targetPort: 8080 }] }, 'shop'),
      service('web-a', { selector: { app: 'web', tier: 'a' }, ports: [{ port: 80 }] }, 'shop'),
    ]);
    const web = snap.services.find((s) => s.name === 'web')!;
    assert.deepEqual(web, {
      key: 'shop/web',
      name: 'web',
      namespace: 'shop',
      hostname: 'web.shop.svc.cluster.local',
      vip: '10.96.0.1',
      ports: [{ port: 80, targetPort: 8080 }],
      endpoints: ['shop/web-1', 'shop/web-2'],
    });
    assert.deepEqual(snap.services.find((s) => s.name === 'web-a')!.endpoints, ['shop/web-1']);
    assert.equal(snap.services.find((s) => s.name === 'web-a')!.vip, null);
  });

  test('services without a selector (or with an empty one) have no endpoints', () => {
    const snap = translate([
      pod('web', { labels: { app: 'web' } }),
      service('external', { ports: [{ port: 80 }] }),
      service('empty', { selector: {}, ports: [{ port: 80 }] }),
    ]);
    assert.deepEqual(snap.services.find((s) => s.name === 'external')!.endpoints, []);
    assert.deepEqual(snap.services.find((s) => s.name === 'empty')!.endpoints, []);
  });

  test('errors in a service or pod stop the translation with a named error', () => {
    assert.throws(() => translate([service('web', { ports: [] }, 'shop')]), /Service "shop\/web"/);
    assert.throws(() => translate([obj('Pod', 'web', { spec: { nodeName: 1 } })]), /Pod "default\/web"/);
  });
});
