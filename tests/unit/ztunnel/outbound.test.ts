import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { planOutbound, type OutboundPlan } from '../../../ztunnel/outbound.js';
import { checkInboundTarget } from '../../../ztunnel/inbound.js';
import { tcpLabels, type TrackedConnection } from '../../../ztunnel/connections.js';
import { MeshError } from '../../../shared/errors.js';
import { WorkloadIndex } from '../../../shared/model/index.js';
import type { Service, Workload } from '../../../shared/model/types.js';

function wl(uid: string, ip: string, over: Partial<Workload> = {}): Workload {
  const [namespace, name] = uid.split('/') as [string, string];
  return { uid, name, namespace, serviceAccount: `${name}-sa`, node: 'node-1', ip, labels: {}, protocol: 'HBONE', ready: true, ...over };
}

function svc(key: string, vip: string, endpoints: string[], ports: Service['ports'] = [{ port: 80, targetPort: 8080 }]): Service {
  const [namespace, name] = key.split('/') as [string, string];
  return { key, name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, vip, ports, endpoints };
}

function context(workloads: Workload[], services: Service[]) {
  const index = new WorkloadIndex();
  index.apply({ type: 'snapshot', version: 1, workloads, services, removedWorkloads: [], removedServices: [] });
  return { index, cursors: new Map<string, number>(), trustDomain: 'cluster.local' };
}

function refused(plan: OutboundPlan): MeshError {
  assert.equal(plan.kind, 'refuse', `expected a refusal, got ${JSON.stringify(plan)}`);
  assert.ok(plan.kind === 'refuse');
  assert.ok(plan.error instanceof MeshError);
  return plan.error;
}

describe('planOutbound', () => {
  const workloads = [
    wl('shop/web-1', '10.0.1.1'),
    wl('shop/web-2', '10.0.2.1'),
    wl('shop/web-3', '10.0.1.2', { ready: false }),
    wl('legacy/db', '10.0.3.1', { protocol: 'TCP' }),
    wl('shop/api', '10.0.1.9', { serviceAccount: 'api' }),
  ];
  const services = [
    svc('shop/web', '10.96.0.10', ['shop/web-1', 'shop/web-3', 'shop/web-2']),
    svc('shop/down', '10.96.0.11', ['shop/web-3']),
    svc('shop/empty', '10.96.0.12', []),
    svc('legacy/db', '10.96.0.13', ['legacy/db'], [{ port: 5432, targetPort: 5432 }]),
    svc('shop/loop', '10.96.0.14', ['shop/web-1'], [{ port: 80, targetPort: 15008 }]),
  ];

  test('a service VIP goes over HBONE to an endpoint on its target port, expecting its identity', () => {
    const plan = planOutbound(context(workloads, services), { ip: '10.96.0.10', port: 80 });
    assert.equal(plan.kind, 'hbone');
    assert.ok(plan.kind === 'hbone');
    assert.equal(plan.workload.uid, 'shop/web-1');
    assert.deepEqual(plan.target, { ip: '10.0.1.1', port: 8080 });
    assert.equal(plan.identity, 'spiffe://cluster.local/ns/shop/sa/web-1-sa');
    assert.equal(plan.service?.key, 'shop/web');
  });

  test('the identity uses the context trust domain', () => {
    const ctx = { ...context(workloads, services), trustDomain: 'corp.example' };
    const plan = planOutbound(ctx, { ip: '10.0.1.9', port: 9000 });
    assert.ok(plan.kind === 'hbone');
    assert.equal(plan.identity, 'spiffe://corp.example/ns/shop/sa/api');
  });

  test('successive connections to a service take its ready endpoints in turn', () => {
    const ctx = context(workloads, services);
    const picked = Array.from({ length: 5 }, () => {
      const plan = planOutbound(ctx, { ip: '10.96.0.10', port: 80 });
      assert.ok(plan.kind === 'hbone');
      return plan.workload.uid;
    });
    // web-3 is not ready and never chosen
    assert.deepEqual(picked, ['shop/web-1', 'shop/web-2', 'shop/web-1', 'shop/web-2', 'shop/web-1']);
  });

  test('a service with no ready endpoint is refused with NO_ROUTE', () => {
    const ctx = context(workloads, services);
    for (const ip of ['10.96.0.11', '10.96.0.12']) {
      const plan = planOutbound(ctx, { ip, port: 80 });
      const err = refused(plan);
      assert.equal(err.flag, 'NO_ROUTE');
      assert.equal(err.status, 503);
      assert.match(err.message, /no ready endpoints/);
      assert.ok(plan.service, 'the refusal still names the service, for metrics');
    }
  });

  test('a pod IP goes directly to that pod on the same port', () => {
    const plan = planOutbound(context(workloads, services), { ip: '10.0.2.1', port: 7070 });
    assert.ok(plan.kind === 'hbone');
    assert.equal(plan.workload.uid, 'shop/web-2');
    assert.deepEqual(plan.target, { ip: '10.0.2.1', port: 7070 });
    assert.equal(plan.service, undefined);
  });

  test('a workload outside the mesh (TCP) is reached in plain text, by pod IP or service', () => {
    const ctx = context(workloads, services);
    const direct = planOutbound(ctx, { ip: '10.0.3.1', port: 5432 });
    assert.equal(direct.kind, 'plain');
    assert.ok(direct.kind === 'plain');
    assert.equal(direct.workload?.uid, 'legacy/db');
    assert.deepEqual(direct.target, { ip: '10.0.3.1', port: 5432 });
    const viaService = planOutbound(ctx, { ip: '10.96.0.13', port: 5432 });
    assert.ok(viaService.kind === 'plain');
    assert.deepEqual(viaService.target, { ip: '10.0.3.1', port: 5432 });
    assert.equal(viaService.service?.key, 'legacy/db');
  });

  test('an address the mesh does not know passes through in plain text, unchanged', () => {
    const ctx = context(workloads, services);
    for (const dst of [
      { ip: '93.184.216.34', port: 443 },
      { ip: '10.96.0.10', port: 8443 }, // the VIP, on a port the service does not have
    ]) {
      const plan = planOutbound(ctx, dst);
      assert.deepEqual(plan, { kind: 'plain', target: dst });
    }
  });

  test("a meshed pod's ztunnel ports are refused as a loop", () => {
    const ctx = context(workloads, services);
    for (const port of [15001, 15006, 15008]) {
      const err = refused(planOutbound(ctx, { ip: '10.0.1.1', port }));
      assert.equal(err.flag, 'LOOP');
    }
    const viaService = planOutbound(ctx, { ip: '10.96.0.14', port: 80 });
    assert.equal(refused(viaService).flag, 'LOOP');
    assert.equal(viaService.service?.key, 'shop/loop');
  });
});

describe('checkInboundTarget', () => {
  const pod = { ip: '10.0.1.1' };

  test("the pod's own IP on an app port is accepted", () => {
    assert.equal(checkInboundTarget(pod, { ip: '10.0.1.1', port: 8080 }), null);
    assert.equal(checkInboundTarget(pod, { ip: '10.0.1.1', port: 15020 }), null);
  });

  test('another IP is not this workload (503)', () => {
    const err = checkInboundTarget(pod, { ip: '10.0.1.2', port: 8080 });
    assert.ok(err instanceof MeshError);
    assert.equal(err.flag, 'NO_WORKLOAD');
    assert.equal(err.status, 503);
  });

  test("ztunnel's own ports are a loop", () => {
    for (const port of [15001, 15006, 15008]) {
      const err = checkInboundTarget(pod, { ip: '10.0.1.1', port });
      assert.equal(err?.flag, 'LOOP', `port ${port}`);
      assert.equal(err?.status, 400);
    }
  });
});

describe('tcpLabels', () => {
  const conn = (over: Partial<TrackedConnection>): TrackedConnection => ({
    id: 1,
    direction: 'outbound',
    src: { address: '10.0.1.1:40000', identity: 'spiffe://cluster.local/ns/shop/sa/web', workload: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } } },
    dst: {
      address: '10.0.2.1:8080',
      identity: 'spiffe://cluster.local/ns/shop/sa/api',
      workload: { name: 'api-7', namespace: 'shop', labels: { app: 'api', 'service.istio.io/canonical-name': 'api-canonical' } },
    },
    service: { hostname: 'api.shop.svc.cluster.local', namespace: 'shop', name: 'api' },
    protocol: 'HBONE',
    mtls: true,
    started: 0,
    ...over,
  });

  test('an outbound HBONE connection is reported by the source, over mutual TLS', () => {
    assert.deepEqual(tcpLabels(conn({}), '-'), {
      reporter: 'source',
      source_workload: 'web-1',
      source_canonical_service: 'web',
      source_workload_namespace: 'shop',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/web',
      source_app: 'web',
      destination_service: 'api.shop.svc.cluster.local',
      destination_service_namespace: 'shop',
      destination_service_name: 'api',
      destination_workload: 'api-7',
      destination_canonical_service: 'api-canonical',
      destination_workload_namespace: 'shop',
      destination_principal: 'spiffe://cluster.local/ns/shop/sa/api',
      destination_app: 'api',
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    });
  });

  test('an inbound connection is reported by the destination', () => {
    assert.equal(tcpLabels(conn({ direction: 'inbound' }), '-').reporter, 'destination');
  });

  test('what is not known reads "unknown"; plain text is not mutual_tls', () => {
    const l = tcpLabels(conn({ src: { address: '192.168.1.5:5555' }, dst: { address: '93.184.216.34:443' }, protocol: 'TCP', mtls: false }), 'CONNECT');
    assert.equal(l.source_workload, 'unknown');
    assert.equal(l.source_canonical_service, 'unknown');
    assert.equal(l.source_workload_namespace, 'unknown');
    assert.equal(l.source_principal, 'unknown');
    assert.equal(l.source_app, 'unknown');
    assert.equal(l.destination_workload, 'unknown');
    assert.equal(l.destination_principal, 'unknown');
    assert.equal(l.destination_app, 'unknown');
    assert.equal(l.connection_security_policy, 'unknown');
    assert.equal(l.response_flags, 'CONNECT');
    const noService = conn({});
    delete noService.service;
    const ls = tcpLabels(noService, '-');
    assert.equal(ls.destination_service, 'unknown');
    assert.equal(ls.destination_service_namespace, 'unknown');
    assert.equal(ls.destination_service_name, 'unknown');
  });

  test('the canonical service falls back from the canonical label to app name labels, then the workload name', () => {
    const labelsOf = (labels: Record<string, string>): string => tcpLabels(conn({ src: { address: 'x', workload: { name: 'pod-1', namespace: 'shop', labels } } }), '-').source_canonical_service;
    assert.equal(labelsOf({ 'service.istio.io/canonical-name': 'c', 'app.kubernetes.io/name': 'k', app: 'a' }), 'c');
    assert.equal(labelsOf({ 'app.kubernetes.io/name': 'k', app: 'a' }), 'k');
    assert.equal(labelsOf({ app: 'a' }), 'a');
    assert.equal(labelsOf({}), 'pod-1');
  });
});
