import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import {
  actionName,
  certTime,
  formatAll,
  formatCertificates,
  formatConnections,
  formatPolicies,
  formatServices,
  formatWorkloads,
  identityNamespace,
  scopeName,
  selectWorkloads,
  waypointName,
  type NodeView,
  type ViewOptions,
  type ZtunnelConfigDump,
} from '../../../cli/ztunnel-config.js';
import type { Waypoint, Workload } from '../../../shared/model/types.js';
import type { AuthorizationPolicy } from '../../../shared/policy/types.js';

const NOW = new Date('2026-06-01T12:00:00Z');
const ROOT = { serial: 'aa01', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2036-01-01T00:00:00.000Z' };

function workload(namespace: string, name: string, node: string, ip: string, protocol: 'HBONE' | 'TCP', ready = true): Workload {
  return { uid: `${namespace}/${name}`, name, namespace, serviceAccount: name, node, ip, labels: { app: name }, protocol, ready };
}

function policy(namespace: string, name: string, action: AuthorizationPolicy['action'], scope: AuthorizationPolicy['scope'], dryRun = false): AuthorizationPolicy {
  return { key: `${namespace}/${name}`, name, namespace, action, scope, selector: scope === 'workload' ? { app: 'echo' } : null, rules: [], dryRun, warnings: [] };
}

const WORKLOADS = [
  workload('shop', 'echo-1', 'node-2', '10.249.2.13', 'HBONE'),
  workload('shop', 'client', 'node-1', '10.249.1.11', 'HBONE'),
  workload('shop', 'echo-2', 'node-1', '10.249.1.12', 'HBONE', false),
  workload('legacy', 'web', 'node-2', '10.249.2.12', 'TCP'),
];

/** A fixed config_dump of node-1; node-2's differs only in node, certificates and (older) version. */
function dump(node: string, version: number, over: Partial<ZtunnelConfigDump> = {}): ZtunnelConfigDump {
  return {
    node,
    version,
    workloads: WORKLOADS,
    services: [
      { key: 'shop/echo', name: 'echo', namespace: 'shop', hostname: 'echo.shop.svc.cluster.local', vip: '10.250.0.11', ports: [{ name: 'http', port: 80, targetPort: 8080 }], endpoints: ['shop/echo-1', 'shop/echo-2'] },
      { key: 'legacy/web', name: 'web', namespace: 'legacy', hostname: 'web.legacy.svc.cluster.local', vip: '10.250.0.10', ports: [{ port: 80, targetPort: 8080 }], endpoints: ['legacy/web'] },
      { key: 'shop/headless', name: 'headless', namespace: 'shop', hostname: 'headless.shop.svc.cluster.local', vip: null, ports: [{ port: 80, targetPort: 80 }], endpoints: [] },
    ],
    capturedPods: [],
    certificates: [],
    policies: [policy('shop', 'deny-legacy', 'DENY', 'namespace'), policy('istio-system', 'mesh-audit', 'AUDIT', 'mesh'), policy('shop', 'allow-client', 'ALLOW', 'workload', true)],
    peerAuthentications: [],
    recentDenies: [],
    pool: [],
    ...over,
  };
}

const node1: NodeView = {
  node: 'node-1',
  dump: dump('node-1', 7, {
    certificates: [
      { identity: 'spiffe://cluster.local/ns/shop/sa/echo', serial: '3c6a', notBefore: '2026-06-01T11:00:00.000Z', notAfter: '2026-06-02T11:00:00.000Z', state: 'available' },
      { identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: '6f20', notBefore: '2026-05-01T00:00:00.000Z', notAfter: '2026-05-02T00:00:00.000Z', state: 'available' },
    ],
  }),
  connections: [
    { id: 1, direction: 'outbound', src: '10.249.1.11:55996', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/client', dst: '10.249.2.13:8080', dstIdentity: 'spiffe://cluster.local/ns/shop/sa/echo', service: 'echo.shop.svc.cluster.local', protocol: 'HBONE', ageMs: 1200 },
    { id: 2, direction: 'outbound', src: '10.249.1.11:41000', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/client', dst: '10.249.2.12:8080', dstIdentity: null, service: null, protocol: 'TCP', ageMs: 300 },
  ],
};

const node2: NodeView = {
  node: 'node-2',
  // older: a workload removed since is still in it, and would show if merging preferred it
  dump: dump('node-2', 5, {
    workloads: [...WORKLOADS.map((w) => (w.uid === 'shop/echo-1' ? { ...w, ip: '10.0.0.99' } : w)), workload('shop', 'gone', 'node-2', '10.249.2.20', 'HBONE')],
    certificates: [
      { identity: 'spiffe://cluster.local/ns/shop/sa/echo', serial: '', notBefore: '1970-01-01T00:00:00.000Z', notAfter: '1970-01-01T00:00:00.000Z', state: 'pending' },
      { identity: 'spiffe://cluster.local/ns/legacy/sa/web', serial: '', notBefore: '1970-01-01T00:00:00.000Z', notAfter: '1970-01-01T00:00:00.000Z', state: 'failed', error: 'control plane unreachable' },
    ],
  }),
  connections: [
    { id: 9, direction: 'inbound', src: '10.249.1.11:52164', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/client', dst: '10.249.2.13:8080', dstIdentity: 'spiffe://cluster.local/ns/shop/sa/echo', service: 'echo.shop.svc.cluster.local', protocol: 'HBONE', ageMs: 1100 },
    { id: 10, direction: 'inbound', src: '10.9.9.9:5000', srcIdentity: null, dst: '10.249.2.77:8080', dstIdentity: null, service: null, protocol: 'TCP', ageMs: 5 },
  ],
};

const short: ViewOptions = { output: 'short', now: NOW, root: ROOT };

describe('ztunnel-config workloads', () => {
  test('one row per workload, merged across nodes, sorted by namespace and name, WAYPOINT None', () => {
    assert.equal(
      formatWorkloads([node1, node2], short),
      [
        'NAMESPACE  POD NAME  ADDRESS      NODE    WAYPOINT  PROTOCOL',
        'legacy     web       10.249.2.12  node-2  None      TCP',
        'shop       client    10.249.1.11  node-1  None      HBONE',
        'shop       echo-1    10.249.2.13  node-2  None      HBONE',
        'shop       echo-2    10.249.1.12  node-1  None      HBONE',
        'shop       gone      10.249.2.20  node-2  None      HBONE',
      ].join('\n'),
    );
  });

  test('the newest dump wins when nodes disagree, whatever order they answered in', () => {
    assert.equal(selectWorkloads([node2, node1], {}).find((w) => w.name === 'echo-1')!.ip, '10.249.2.13');
  });

  test('--namespace and --address filter', () => {
    assert.deepEqual(selectWorkloads([node1], { namespace: 'legacy' }).map((w) => w.uid), ['legacy/web']);
    assert.deepEqual(selectWorkloads([node1], { address: '10.249.1.12' }).map((w) => w.uid), ['shop/echo-2']);
    assert.deepEqual(selectWorkloads([node1], { namespace: 'legacy', address: '10.249.1.12' }), []);
    assert.equal(formatWorkloads([node1], { ...short, namespace: 'nope' }), 'NAMESPACE  POD NAME  ADDRESS  NODE  WAYPOINT  PROTOCOL');
  });

  test('json and yaml carry the workload objects', () => {
    const json = JSON.parse(formatWorkloads([node1], { ...short, output: 'json', namespace: 'legacy' }));
    assert.deepEqual(json, [WORKLOADS[3]]);
    assert.deepEqual(parse(formatWorkloads([node1], { ...short, output: 'yaml', namespace: 'legacy' })), [WORKLOADS[3]]);
  });
});

describe('ztunnel-config services', () => {
  test('ENDPOINTS is ready/total; a service without a VIP shows None', () => {
    assert.equal(
      formatServices([node1, node2], short),
      [
        'NAMESPACE  SERVICE NAME  SERVICE VIP  WAYPOINT  ENDPOINTS',
        'legacy     web           10.250.0.10  None      1/1',
        'shop       echo          10.250.0.11  None      1/2',
        'shop       headless      None         None      0/0',
      ].join('\n'),
    );
  });

  test('json adds readyEndpoints to the service objects', () => {
    const [echo] = JSON.parse(formatServices([node1], { ...short, output: 'json', namespace: 'shop' })) as { key: string; readyEndpoints: number; endpoints: string[] }[];
    assert.equal(echo!.key, 'shop/echo');
    assert.equal(echo!.readyEndpoints, 1);
    assert.deepEqual(echo!.endpoints, ['shop/echo-1', 'shop/echo-2']);
  });
});

describe('ztunnel-config WAYPOINT column', () => {
  const wp: Waypoint = { key: 'shop/waypoint', name: 'waypoint', namespace: 'shop', for: 'service', pods: ['shop/waypoint-0'], problem: null };
  const pods: Waypoint = { key: 'shop/pods', name: 'pods', namespace: 'shop', for: 'workload', pods: [], problem: 'no ready pods' };
  // services of shop use shop/waypoint; echo-1 is bound to a workload waypoint, client to one that was deleted
  const bound: NodeView = {
    node: 'node-1',
    dump: dump('node-1', 9, {
      waypoints: [wp, pods],
      services: dump('node-1', 9).services.map((s) => (s.namespace === 'shop' ? { ...s, waypoint: 'shop/waypoint' } : s)),
      workloads: WORKLOADS.map((w) => (w.name === 'echo-1' ? { ...w, waypoint: 'shop/pods' } : w.name === 'client' ? { ...w, waypoint: 'shop/gone' } : w)),
    }),
    connections: [],
  };

  test("the waypoint's name, None without one, NA for one the dumps do not know (as istioctl)", () => {
    const known = new Map([[wp.key, wp]]);
    assert.equal(waypointName('shop/waypoint', known), 'waypoint');
    assert.equal(waypointName(undefined, known), 'None');
    assert.equal(waypointName('shop/gone', known), 'NA');
  });

  test('services show the waypoint they are bound to', () => {
    assert.equal(
      formatServices([bound], short),
      [
        'NAMESPACE  SERVICE NAME  SERVICE VIP  WAYPOINT  ENDPOINTS',
        'legacy     web           10.250.0.10  None      1/1',
        'shop       echo          10.250.0.11  waypoint  1/2',
        'shop       headless      None         waypoint  0/0',
      ].join('\n'),
    );
  });

  test("workloads show theirs (a waypoint that is not ready still shows its name); waypoints from any node's dump count", () => {
    const expected = [
      'NAMESPACE  POD NAME  ADDRESS      NODE    WAYPOINT  PROTOCOL',
      'legacy     web       10.249.2.12  node-2  None      TCP',
      'shop       client    10.249.1.11  node-1  NA        HBONE',
      'shop       echo-1    10.249.2.13  node-2  pods      HBONE',
      'shop       echo-2    10.249.1.12  node-1  None      HBONE',
    ].join('\n');
    assert.equal(formatWorkloads([bound], short), expected);
    // the newest dump has the workloads; the waypoint is only in an older one
    const newer: NodeView = { node: 'node-2', dump: { ...bound.dump, node: 'node-2', version: 10, waypoints: undefined }, connections: [] };
    assert.equal(formatWorkloads([newer, { ...bound, dump: { ...bound.dump, workloads: [] } }], short), expected);
  });
});

describe('ztunnel-config policies', () => {
  test('NAMESPACE POLICY NAME ACTION SCOPE with ztunnel\'s words for actions and scopes', () => {
    assert.equal(
      formatPolicies([node1, node2], short),
      [
        'NAMESPACE     POLICY NAME   ACTION           SCOPE',
        'istio-system  mesh-audit    Audit            Global',
        'shop          allow-client  Allow (dry-run)  WorkloadSelector',
        'shop          deny-legacy   Deny             Namespace',
      ].join('\n'),
    );
    assert.equal(formatPolicies([node1], { ...short, namespace: 'istio-system' }).split('\n').length, 2);
  });

  test('action and scope names', () => {
    assert.equal(actionName({ action: 'ALLOW', dryRun: false }), 'Allow');
    assert.equal(actionName({ action: 'DENY', dryRun: true }), 'Deny (dry-run)');
    assert.deepEqual((['mesh', 'namespace', 'workload'] as const).map(scopeName), ['Global', 'Namespace', 'WorkloadSelector']);
  });
});

describe('ztunnel-config certificates', () => {
  test('per node: a Leaf and its Root per identity; pending and failed ones as NA rows; VALID CERT against now', () => {
    assert.equal(
      formatCertificates([node1, node2], short),
      [
        'NODE    CERTIFICATE NAME                          TYPE  STATUS        VALID CERT  SERIAL NUMBER  NOT AFTER             NOT BEFORE',
        'node-1  spiffe://cluster.local/ns/shop/sa/client  Leaf  Available     false       6f20           2026-05-02T00:00:00Z  2026-05-01T00:00:00Z',
        'node-1  spiffe://cluster.local/ns/shop/sa/client  Root  Available     true        aa01           2036-01-01T00:00:00Z  2026-01-01T00:00:00Z',
        'node-1  spiffe://cluster.local/ns/shop/sa/echo    Leaf  Available     true        3c6a           2026-06-02T11:00:00Z  2026-06-01T11:00:00Z',
        'node-1  spiffe://cluster.local/ns/shop/sa/echo    Root  Available     true        aa01           2036-01-01T00:00:00Z  2026-01-01T00:00:00Z',
        'node-2  spiffe://cluster.local/ns/legacy/sa/web   NA    Unavailable   false       NA             NA                    NA',
        'node-2  spiffe://cluster.local/ns/shop/sa/echo    NA    Initializing  false       NA             NA                    NA',
      ].join('\n'),
    );
  });

  test('one node: no NODE column; no known root: leaves only; --namespace goes by the identity\'s namespace', () => {
    const text = formatCertificates([node1], { ...short, root: null, namespace: 'shop' });
    assert.match(text, /^CERTIFICATE NAME /);
    assert.equal(text.split('\n').length, 3);
    assert.doesNotMatch(text, /Root/);
    assert.equal(formatCertificates([node2], { ...short, namespace: 'legacy' }).split('\n').length, 2);
  });

  test('during a root rotation each Leaf is followed by the root it chains to, as its ztunnel says', () => {
    const trustRoots = [
      { serial: 'aa01', subject: 'CN=old', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2036-01-01T00:00:00.000Z', fingerprint: 'AA' },
      { serial: 'bb02', subject: 'CN=new', notBefore: '2026-06-01T00:00:00.000Z', notAfter: '2036-06-01T00:00:00.000Z', fingerprint: 'BB' },
    ];
    const rotating: NodeView = {
      node: 'node-1',
      dump: dump('node-1', 8, {
        trustRoots,
        certificates: [
          { identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: '6f20', notBefore: '2026-05-01T00:00:00.000Z', notAfter: '2026-05-02T00:00:00.000Z', state: 'available', root: 'aa01' },
          { identity: 'spiffe://cluster.local/ns/shop/sa/echo', serial: '3c6a', notBefore: '2026-06-01T11:00:00.000Z', notAfter: '2026-06-02T11:00:00.000Z', state: 'available', root: 'bb02' },
        ],
      }),
      connections: [],
    };
    const rows = JSON.parse(formatCertificates([rotating], { ...short, output: 'json' })) as { identity: string; type: string; serial: string }[];
    assert.deepEqual(rows.map((r) => `${r.type} ${r.serial}`), ['Leaf 6f20', 'Root aa01', 'Leaf 3c6a', 'Root bb02']);
  });

  test('showNode keeps the NODE column when only one of several nodes answered', () => {
    assert.match(formatCertificates([node1], { ...short, showNode: true }), /^NODE +CERTIFICATE NAME/);
  });

  test('json rows name node, type, status and validity; the failure reason is kept', () => {
    const rows = JSON.parse(formatCertificates([node2], { ...short, output: 'json' })) as Record<string, unknown>[];
    assert.deepEqual(rows[0], { node: 'node-2', identity: 'spiffe://cluster.local/ns/legacy/sa/web', type: 'NA', status: 'Unavailable', valid: false, serial: null, notAfter: null, notBefore: null, error: 'control plane unreachable' });
  });

  test('times to the second, identity namespaces', () => {
    assert.equal(certTime('2026-11-22T22:39:51.000Z'), '2026-11-22T22:39:51Z');
    assert.equal(certTime('not a date'), 'not a date');
    assert.equal(identityNamespace('spiffe://cluster.local/ns/shop/sa/echo'), 'shop');
    assert.equal(identityNamespace('spiffe://cluster.local/ns/shop'), null);
  });
});

describe('ztunnel-config connections', () => {
  test('per node, named by the local pod: outbound from its source, inbound to its destination', () => {
    assert.equal(
      formatConnections([node1, node2], short),
      [
        'NODE    WORKLOAD     DIRECTION  LOCAL              REMOTE             REMOTE TARGET                PROTOCOL',
        'node-1  client.shop  Outbound   10.249.1.11:41000  10.249.2.12:8080                                TCP',
        'node-1  client.shop  Outbound   10.249.1.11:55996  10.249.2.13:8080   echo.shop.svc.cluster.local  HBONE',
        'node-2  10.249.2.77  Inbound    10.249.2.77:8080   10.9.9.9:5000                                   TCP',
        'node-2  echo-1.shop  Inbound    10.249.2.13:8080   10.249.1.11:52164  echo.shop.svc.cluster.local  HBONE',
      ].join('\n'),
    );
  });

  test('--namespace keeps connections of that namespace\'s pods; json rows keep age', () => {
    const rows = JSON.parse(formatConnections([node1, node2], { ...short, output: 'json', namespace: 'shop' })) as { workload: string; ageMs: number }[];
    assert.deepEqual(rows.map((r) => r.workload), ['client.shop', 'client.shop', 'echo-1.shop']);
    assert.equal(rows[2]!.ageMs, 1100);
  });

  test('no connections: the header only', () => {
    assert.equal(formatConnections([{ ...node1, connections: [] }], short), 'WORKLOAD  DIRECTION  LOCAL  REMOTE  REMOTE TARGET  PROTOCOL');
  });
});

describe('ztunnel-config all', () => {
  test('every table in order, a blank line apart', () => {
    const text = formatAll([node1, node2], short);
    const sections = text.split('\n\n');
    assert.equal(sections.length, 5);
    assert.deepEqual(
      sections.map((s) => s.split('\n')[0]!.split(/\s{2,}/)[sections.indexOf(s) >= 3 ? 1 : 0]),
      ['NAMESPACE', 'NAMESPACE', 'NAMESPACE', 'CERTIFICATE NAME', 'WORKLOAD'],
    );
    assert.equal(sections[0], formatWorkloads([node1, node2], short));
    assert.equal(sections[4], formatConnections([node1, node2], short));
  });

  test('json: one object with a key per view, filters applied to each', () => {
    const all = JSON.parse(formatAll([node1, node2], { ...short, output: 'json', namespace: 'legacy' })) as Record<string, unknown[]>;
    assert.deepEqual(Object.keys(all), ['workloads', 'services', 'policies', 'certificates', 'connections']);
    assert.equal(all.workloads!.length, 1);
    assert.equal(all.services!.length, 1);
    assert.equal(all.policies!.length, 0);
    assert.equal(all.certificates!.length, 1);
    assert.equal(all.connections!.length, 0);
  });
});
