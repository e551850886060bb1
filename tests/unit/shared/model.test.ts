import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkloadIndex } from '../../../shared/model/index.js';
import { pickEndpoint, readyEndpoints, type Endpoint } from '../../../shared/model/endpoints.js';
import { formatAddress, parseAddress, type MeshSnapshot, type MeshUpdate, type Service, type Workload } from '../../../shared/model/types.js';
import { diffSnapshots, snapshotUpdate } from '../../../shared/control/delta.js';

function wl(uid: string, ip: string, over: Partial<Workload> = {}): Workload {
  return { uid, name: uid.split('/').pop()!, namespace: 'shop', serviceAccount: 'default', node: 'node-1', ip, labels: {}, protocol: 'HBONE', ready: true, ...over };
}

function svc(key: string, vip: string | null, endpoints: string[], over: Partial<Service> = {}): Service {
  const [namespace, name] = key.split('/') as [string, string];
  return { key, name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, vip, ports: [{ port: 80, targetPort: 8080 }], endpoints, ...over };
}

function update(type: MeshUpdate['type'], version: number, parts: Partial<Omit<MeshUpdate, 'type' | 'version'>> = {}): MeshUpdate {
  return { type, version, workloads: [], services: [], removedWorkloads: [], removedServices: [], ...parts };
}

describe('WorkloadIndex', () => {
  test('resolves a service VIP port, a pod IP and unknown addresses', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/web-1', '10.0.0.1')], services: [svc('shop/web', '10.96.0.1', ['shop/web-1'])] }));
    const d = idx.resolve('10.96.0.1', 80);
    assert.equal(d.kind, 'service');
    assert.ok(d.kind === 'service');
    assert.equal(d.service.key, 'shop/web');
    assert.deepEqual(d.port, { port: 80, targetPort: 8080 });
    // a port the service does not expose is not the service
    assert.deepEqual(idx.resolve('10.96.0.1', 81), { kind: 'unknown' });
    const w = idx.resolve('10.0.0.1', 12345);
    assert.ok(w.kind === 'workload');
    assert.equal(w.workload.uid, 'shop/web-1');
    assert.deepEqual(idx.resolve('10.0.0.99', 80), { kind: 'unknown' });
    assert.equal(idx.version, 1);
  });

  test('a snapshot replaces everything; a delta keeps what it does not mention', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/a', '10.0.0.1'), wl('shop/b', '10.0.0.2')], services: [svc('shop/s', '10.96.0.1', ['shop/a'])] }));
    idx.apply(update('delta', 2, { workloads: [wl('shop/c', '10.0.0.3')] }));
    assert.ok(idx.workload('shop/a'));
    assert.ok(idx.workload('shop/c'));
    assert.equal(idx.resolve('10.96.0.1', 80).kind, 'service');
    assert.equal(idx.version, 2);

    idx.apply(update('snapshot', 3, { workloads: [wl('shop/c', '10.0.0.3')] }));
    assert.equal(idx.workload('shop/a'), undefined);
    assert.equal(idx.workloadByIp('10.0.0.1'), undefined);
    assert.deepEqual(idx.resolve('10.96.0.1', 80), { kind: 'unknown' });
    assert.deepEqual(
      idx.snapshot().workloads.map((w) => w.uid),
      ['shop/c'],
    );
    assert.deepEqual(idx.snapshot().services, []);
    assert.equal(idx.version, 3);
  });

  test('removals drop workloads by uid and services by key, with their addresses', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/a', '10.0.0.1'), wl('shop/b', '10.0.0.2')], services: [svc('shop/s', '10.96.0.1', ['shop/a']), svc('shop/t', '10.96.0.2', [])] }));
    idx.apply(update('delta', 2, { removedWorkloads: ['shop/a', 'shop/never-existed'], removedServices: ['shop/s'] }));
    assert.equal(idx.workload('shop/a'), undefined);
    assert.deepEqual(idx.resolve('10.0.0.1', 80), { kind: 'unknown' });
    assert.deepEqual(idx.resolve('10.96.0.1', 80), { kind: 'unknown' });
    assert.equal(idx.resolve('10.0.0.2', 80).kind, 'workload');
    assert.equal(idx.resolve('10.96.0.2', 80).kind, 'service');
  });

  test('an updated workload or service moves to its new address', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/a', '10.0.0.1')], services: [svc('shop/s', '10.96.0.1', [])] }));
    idx.apply(update('delta', 2, { workloads: [wl('shop/a', '10.0.0.7')], services: [svc('shop/s', '10.96.0.7', [])] }));
    assert.deepEqual(idx.resolve('10.0.0.1', 80), { kind: 'unknown' });
    assert.equal(idx.workloadByIp('10.0.0.7')?.uid, 'shop/a');
    assert.deepEqual(idx.resolve('10.96.0.1', 80), { kind: 'unknown' });
    assert.equal(idx.resolve('10.96.0.7', 80).kind, 'service');
  });

  test('an IP re-used by a new pod resolves to the new pod, even when the old one is removed later', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/old', '10.0.0.1')] }));
    // same delta: removal and the new pod
    idx.apply(update('delta', 2, { workloads: [wl('shop/new', '10.0.0.1')], removedWorkloads: ['shop/old'] }));
    assert.equal(idx.workloadByIp('10.0.0.1')?.uid, 'shop/new');

    // new pod first, the old one's removal arrives afterwards
    const idx2 = new WorkloadIndex();
    idx2.apply(update('snapshot', 1, { workloads: [wl('shop/old', '10.0.0.1')] }));
    idx2.apply(update('delta', 2, { workloads: [wl('shop/new', '10.0.0.1')] }));
    assert.equal(idx2.workloadByIp('10.0.0.1')?.uid, 'shop/new');
    idx2.apply(update('delta', 3, { removedWorkloads: ['shop/old'] }));
    assert.equal(idx2.workloadByIp('10.0.0.1')?.uid, 'shop/new');
    const d = idx2.resolve('10.0.0.1', 80);
    assert.ok(d.kind === 'workload');
    assert.equal(d.workload.uid, 'shop/new');
  });

  test('servicesOf lists the services a workload backs', () => {
    const idx = new WorkloadIndex();
    idx.apply(update('snapshot', 1, { workloads: [wl('shop/a', '10.0.0.1')], services: [svc('shop/s', '10.96.0.1', ['shop/a']), svc('shop/t', '10.96.0.2', ['shop/b'])] }));
    assert.deepEqual(
      idx.servicesOf('shop/a').map((s) => s.key),
      ['shop/s'],
    );
    assert.deepEqual(idx.servicesOf('shop/z'), []);
  });
});

describe('readyEndpoints and pickEndpoint', () => {
  const workloads = new Map<string, Workload>([
    ['shop/a', wl('shop/a', '10.0.0.1')],
    ['shop/b', wl('shop/b', '10.0.0.2', { ready: false })],
    ['shop/c', wl('shop/c', '10.0.0.3')],
    ['shop/d', wl('shop/d', '10.0.0.4')],
  ]);
  const lookup = (uid: string): Workload | undefined => workloads.get(uid);

  test('only ready, known workloads are endpoints, on the target port', () => {
    const s = svc('shop/web', '10.96.0.1', ['shop/a', 'shop/b', 'shop/gone', 'shop/c']);
    const eps = readyEndpoints(s, s.ports[0]!, lookup);
    assert.deepEqual(
      eps.map((e) => [e.workload.uid, e.port]),
      [
        ['shop/a', 8080],
        ['shop/c', 8080],
      ],
    );
  });

  test('round robin goes through every endpoint in turn', () => {
    const s = svc('shop/web', '10.96.0.1', ['shop/a', 'shop/c', 'shop/d']);
    const eps = readyEndpoints(s, s.ports[0]!, lookup);
    const picked = [0, 1, 2, 3, 4, 5].map((cursor) => pickEndpoint(eps, cursor)!.workload.uid);
    assert.deepEqual(picked, ['shop/a', 'shop/c', 'shop/d', 'shop/a', 'shop/c', 'shop/d']);
  });

  test('unhealthy endpoints are skipped; none usable gives null', () => {
    const s = svc('shop/web', '10.96.0.1', ['shop/a', 'shop/c', 'shop/d']);
    const eps = readyEndpoints(s, s.ports[0]!, lookup);
    assert.equal(pickEndpoint(eps, 1, new Set(['shop/c']))!.workload.uid, 'shop/d');
    assert.equal(pickEndpoint(eps, 2, new Set(['shop/d']))!.workload.uid, 'shop/a');
    assert.equal(pickEndpoint(eps, 0, new Set(['shop/a', 'shop/c', 'shop/d'])), null);
    const none: Endpoint[] = [];
    assert.equal(pickEndpoint(none, 0), null);
    assert.equal(pickEndpoint(readyEndpoints(svc('shop/x', null, ['shop/b']), { port: 80, targetPort: 80 }, lookup), 7), null);
  });
});

describe('parseAddress and formatAddress', () => {
  test('IPv4 and bracketed IPv6 addresses round-trip', () => {
    assert.deepEqual(parseAddress('10.1.2.3:8080'), { ip: '10.1.2.3', port: 8080 });
    assert.deepEqual(parseAddress('[fd00::1]:15008'), { ip: 'fd00::1', port: 15008 });
    assert.deepEqual(parseAddress('[::ffff:10.0.0.1]:80'), { ip: '::ffff:10.0.0.1', port: 80 });
    assert.deepEqual(parseAddress('255.255.255.255:65535'), { ip: '255.255.255.255', port: 65535 });
    assert.equal(formatAddress({ ip: '10.1.2.3', port: 8080 }), '10.1.2.3:8080');
    assert.equal(formatAddress({ ip: 'fd00::1', port: 15008 }), '[fd00::1]:15008');
    for (const text of ['10.1.2.3:1', '[::1]:443']) assert.equal(formatAddress(parseAddress(text)!), text);
  });

  test('ports outside 1..65535 are refused', () => {
    for (const text of ['10.0.0.1:0', '10.0.0.1:65536', '10.0.0.1:99999', '10.0.0.1:123456', '[::1]:0', '10.0.0.1:-1']) assert.equal(parseAddress(text), null, text);
  });

  test('octets above 255 are refused', () => {
    for (const text of ['256.0.0.1:80', '10.0.0.300:80', '999.999.999.999:80']) assert.equal(parseAddress(text), null, text);
  });

  test('anything else is refused', () => {
    const junk = [
      '',
      'web',
      '10.0.0.1',
      '10.0.0.1:',
      ':80',
      'web.shop.svc:80',
      '::1:80',
      '10.0.0:80',
      '10.0.0.1.5:80',
      ' 10.0.0.1:80',
      '10.0.0.1:80 ',
      '10.0.0.1:8o',
      '[::1]',
      '[::1]80',
      '[]:80',
      '[:]:80',
      '[...]:80',
      '[1.2.3.4]:80',
      '[fd00::1::2]:80',
      '[fd00::zz]:80',
      '010.0.0.1:80',
    ];
    for (const text of junk) assert.equal(parseAddress(text), null, JSON.stringify(text));
  });
});

describe('diffSnapshots', () => {
  const base: MeshSnapshot = {
    workloads: [wl('shop/a', '10.0.0.1'), wl('shop/b', '10.0.0.2')],
    services: [svc('shop/s', '10.96.0.1', ['shop/a', 'shop/b'])],
  };

  test('no change gives null, whatever the order', () => {
    assert.equal(diffSnapshots(base, structuredClone(base), 2), null);
    assert.equal(diffSnapshots(base, { workloads: [...base.workloads].reverse(), services: base.services }, 2), null);
  });

  test('new and changed objects are upserts; unchanged ones are not sent', () => {
    const next: MeshSnapshot = {
      workloads: [wl('shop/a', '10.0.0.1'), wl('shop/b', '10.0.0.2', { ready: false }), wl('shop/c', '10.0.0.3')],
      services: [svc('shop/s', '10.96.0.1', ['shop/a', 'shop/b', 'shop/c']), svc('shop/t', null, [])],
    };
    const d = diffSnapshots(base, next, 7)!;
    assert.equal(d.type, 'delta');
    assert.equal(d.version, 7);
    assert.deepEqual(
      d.workloads.map((w) => w.uid),
      ['shop/b', 'shop/c'],
    );
    assert.deepEqual(
      d.services.map((s) => s.key),
      ['shop/s', 'shop/t'],
    );
    assert.deepEqual(d.removedWorkloads, []);
    assert.deepEqual(d.removedServices, []);
  });

  test('objects that disappeared are removals', () => {
    const d = diffSnapshots(base, { workloads: [wl('shop/b', '10.0.0.2')], services: [] }, 3)!;
    assert.deepEqual(d.workloads, []);
    assert.deepEqual(d.services, []);
    assert.deepEqual(d.removedWorkloads, ['shop/a']);
    assert.deepEqual(d.removedServices, ['shop/s']);
    assert.equal(d.version, 3);
  });

  test('applying the delta to an index holding the old snapshot gives the new one', () => {
    const next: MeshSnapshot = {
      workloads: [wl('shop/b', '10.0.0.1'), wl('shop/c', '10.0.0.3')],
      services: [svc('shop/s', '10.96.0.9', ['shop/b', 'shop/c'])],
    };
    const idx = new WorkloadIndex();
    idx.apply(snapshotUpdate(base, 1));
    idx.apply(diffSnapshots(base, next, 2)!);
    const sort = <T extends { uid?: string; key?: string }>(xs: T[]): T[] => [...xs].sort((x, y) => String(x.uid ?? x.key).localeCompare(String(y.uid ?? y.key)));
    assert.deepEqual(sort(idx.snapshot().workloads), sort(next.workloads));
    assert.deepEqual(idx.snapshot().services, next.services);
    assert.equal(idx.workloadByIp('10.0.0.1')?.uid, 'shop/b');
    assert.equal(idx.resolve('10.96.0.9', 80).kind, 'service');
    assert.deepEqual(idx.resolve('10.96.0.1', 80), { kind: 'unknown' });
    assert.equal(idx.version, 2);
  });

  test('snapshotUpdate carries the full state as a snapshot', () => {
    assert.deepEqual(snapshotUpdate(base, 5), { type: 'snapshot', version: 5, workloads: base.workloads, services: base.services, removedWorkloads: [], removedServices: [], policies: [], peerAuthentications: [], waypoints: [] });
  });
});
