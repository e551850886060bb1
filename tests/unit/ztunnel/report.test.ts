import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { NodeReporter, nodeReport } from '../../../ztunnel/report.js';
import type { DenyRecord, TrackedConnection } from '../../../ztunnel/connections.js';
import type { CertificateInfo } from '../../../ztunnel/certificates.js';
import { isNodeReport, MAX_REPORTED_CONNECTIONS, type NodeReport } from '../../../shared/control/protocol.js';

function conn(id: number, over: Partial<TrackedConnection> = {}): TrackedConnection {
  return {
    id,
    direction: 'outbound',
    src: { address: `10.0.1.1:${40000 + id}`, identity: 'spiffe://cluster.local/ns/shop/sa/client', workload: { name: 'client', namespace: 'shop', labels: {} } },
    dst: { address: '10.0.2.1:80', identity: 'spiffe://cluster.local/ns/shop/sa/server', workload: { name: 'server', namespace: 'shop', labels: {} } },
    service: { hostname: 'server.shop.svc.cluster.local', namespace: 'shop', name: 'server' },
    protocol: 'HBONE',
    mtls: true,
    started: 1000 + id,
    link: { abort: () => undefined },
    ...over,
  };
}

const CERT: CertificateInfo = { identity: 'spiffe://cluster.local/ns/shop/sa/client', serial: '0a1b', notBefore: new Date('2026-01-01T00:00:00Z'), notAfter: new Date('2026-01-02T00:00:00Z'), state: 'available' };
const DENY: DenyRecord = { time: '2026-01-01T00:00:00.000Z', direction: 'inbound', src: '10.0.9.9:5000', srcIdentity: null, dst: '10.0.1.1:80', dstWorkload: 'shop/client', policy: 'shop/deny', rule: 0, reason: 'denied by shop/deny' };

describe('nodeReport', () => {
  test('what the admin view shows, in the protocol\'s shape: connections newest first, certificate facts, denies', () => {
    const r = nodeReport('node-1', [conn(1), conn(2, { direction: 'inbound', src: { address: '10.0.9.9:1' }, mtls: false, protocol: 'TCP', service: undefined })], [CERT, { ...CERT, identity: 'x', state: 'failed', error: 'no', serial: '' }], [DENY], 2000);
    assert.ok(isNodeReport(r), 'the report passes the control plane\'s check');
    assert.equal(r.node, 'node-1');
    assert.equal(r.openConnections, 2);
    assert.deepEqual(r.connections[0], { direction: 'inbound', src: '10.0.9.9:1', dst: '10.0.2.1:80', srcWorkload: null, dstWorkload: 'shop/server', srcIdentity: null, dstIdentity: 'spiffe://cluster.local/ns/shop/sa/server', service: null, protocol: 'TCP', mtls: false, ageMs: 998 });
    assert.equal(r.connections[1]!.srcWorkload, 'shop/client');
    assert.equal(r.connections[1]!.service, 'server.shop.svc.cluster.local');
    assert.deepEqual(r.certificates[0], { identity: CERT.identity, serial: '0a1b', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'available' });
    assert.equal(r.certificates[1]!.error, 'no');
    assert.deepEqual(r.denies, [DENY]);
    // nothing of the connection's internals (callbacks, policy attributes) travels
    assert.ok(!JSON.stringify(r).includes('abort') && !JSON.stringify(r).includes('link'));
  });

  test('at most MAX_REPORTED_CONNECTIONS connections (the newest), with the true total', () => {
    const open = Array.from({ length: MAX_REPORTED_CONNECTIONS + 20 }, (_, i) => conn(i + 1));
    const r = nodeReport('node-1', open, [], [], 1_000_000);
    assert.equal(r.openConnections, MAX_REPORTED_CONNECTIONS + 20);
    assert.equal(r.connections.length, MAX_REPORTED_CONNECTIONS);
    assert.equal(r.connections[0]!.src, `10.0.1.1:${40000 + MAX_REPORTED_CONNECTIONS + 20}`);
    assert.ok(isNodeReport(r));
  });
});

describe('isNodeReport', () => {
  const good = nodeReport('node-1', [conn(1)], [CERT], [DENY], 2000);
  test('refuses wrong types and lists over the limits', () => {
    assert.ok(isNodeReport(good));
    const bad: unknown[] = [
      null,
      [],
      { ...good, node: 1 },
      { ...good, openConnections: -1 },
      { ...good, openConnections: 1.5 },
      { ...good, connections: 'x' },
      { ...good, connections: [{ ...good.connections[0], direction: 'sideways' }] },
      { ...good, connections: [{ ...good.connections[0], mtls: 'yes' }] },
      { ...good, connections: [{ ...good.connections[0], srcWorkload: 5 }] },
      { ...good, connections: Array.from({ length: MAX_REPORTED_CONNECTIONS + 1 }, () => good.connections[0]) },
      { ...good, certificates: [{ ...good.certificates[0], state: 'stolen' }] },
      { ...good, certificates: [{ ...good.certificates[0], error: 3 }] },
      { ...good, denies: [{ ...good.denies[0], rule: 'first' }] },
      { ...good, denies: Array.from({ length: 101 }, () => good.denies[0]) },
    ];
    for (const b of bad) assert.equal(isNodeReport(b), false, JSON.stringify(b)?.slice(0, 200));
  });
});

describe('NodeReporter', () => {
  test('reports as often as the control plane asks (within bounds), and keeps trying when it cannot', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const sent: number[] = [];
    const answers: (() => Promise<{ nextReportMs: number }>)[] = [
      async () => ({ nextReportMs: 2000 }),
      async () => ({ nextReportMs: 1 }), // too eager: held to 500 ms
      async () => {
        throw Object.assign(new Error('unavailable'), { code: 14 });
      },
      async () => {
        throw Object.assign(new Error('unimplemented'), { code: 12 });
      },
    ];
    let clock = 0;
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
    const r = new NodeReporter(
      () => ({ node: 'n', openConnections: 0, connections: [], certificates: [], denies: [] }) satisfies NodeReport,
      () => {
        sent.push(clock);
        return (answers.shift() ?? (async () => ({ nextReportMs: 2000 })))();
      },
      log,
    );
    const advance = async (ms: number): Promise<void> => {
      clock += ms;
      t.mock.timers.tick(ms);
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    r.start(1000);
    await advance(1000); // first report
    await advance(2000); // asked for 2 s
    await advance(500); // asked for 1 ms, held to 500
    await advance(10_000); // failed: retry in 10 s
    assert.deepEqual(sent, [1000, 3000, 3500, 13_500]);
    // an older control plane (UNIMPLEMENTED): asked again only after 5 minutes, said once
    await advance(60_000);
    assert.equal(sent.length, 4);
    await advance(240_000);
    assert.equal(sent.length, 5);
    assert.equal(lines.filter((l) => l.includes('takes no node reports')).length, 1);
    r.stop();
    await advance(10_000);
    assert.equal(sent.length, 5);
  });
});
