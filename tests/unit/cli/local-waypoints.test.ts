import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { localWaypointObjects, reconcileWaypoints } from '../../../cli/local/waypoints.js';
import type { KubeObject } from '../../../shared/config/objects.js';
import { WAYPOINT_NODE_FLAGS } from '../../../shared/node-flags.js';

const opts = { dir: '/run/ambit/m', controlAddress: '10.248.0.1:15012', nodePath: '/usr/bin/node', waypointMain: '/opt/ambit/dist/waypoint/main.js' };
const gateway: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'waypoint', namespace: 'shop' },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
};

describe('local mode waypoint pods', () => {
  test('run the waypoint with its V8 flags, as the Gateway identity, not captured', () => {
    const [pod, service] = localWaypointObjects(gateway, opts);
    const spec = pod!.spec as { serviceAccountName: string; containers: { command: string[]; args: string[] }[] };
    assert.deepEqual(spec.containers[0]!.command, ['/usr/bin/node', '--no-allocation-site-pretenuring', '/opt/ambit/dist/waypoint/main.js']);
    assert.deepEqual(WAYPOINT_NODE_FLAGS, ['--no-allocation-site-pretenuring']);
    assert.deepEqual(spec.containers[0]!.args.slice(0, 4), ['--name', 'waypoint', '--namespace', 'shop']);
    assert.equal(spec.serviceAccountName, 'waypoint');
    assert.equal(pod!.metadata.labels!['istio.io/dataplane-mode'], 'none');
    assert.equal(service!.kind, 'Service');
  });

  test('go away with their Gateway', () => {
    const withGw = reconcileWaypoints([gateway], opts).objects;
    assert.deepEqual(withGw.map((o) => `${o.kind}/${o.metadata.name}`), ['Gateway/waypoint', 'Pod/waypoint-0', 'Service/waypoint']);
    assert.deepEqual(reconcileWaypoints(withGw.slice(1), opts).objects, []);
  });
});
