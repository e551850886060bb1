import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ConnectionTracker, PodConnections, type TrackedConnection } from '../../../ztunnel/connections.js';
import { ZtunnelMetrics } from '../../../ztunnel/metrics.js';
import { flatString, StringTable } from '../../../shared/model/strings.js';

type Opened = Omit<TrackedConnection, 'id' | 'started'>;

function setup(): { tracker: ConnectionTracker; metrics: ZtunnelMetrics; lines: Record<string, unknown>[]; idle: { n: number }; pod: PodConnections } {
  const metrics = new ZtunnelMetrics();
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  const tracker = new ConnectionTracker(metrics, log);
  const idle = { n: 0 };
  const pod = new PodConnections(tracker, () => idle.n++);
  return { tracker, metrics, lines, idle, pod };
}

const outbound: Opened = { direction: 'outbound', src: { address: '10.0.1.1:40000' }, dst: { address: '10.0.2.1:80' }, protocol: 'HBONE', mtls: true };
const inbound: Opened = { direction: 'inbound', src: { address: '10.0.9.1:50000' }, dst: { address: '10.0.1.1:80' }, protocol: 'HBONE', mtls: true };

async function counter(metrics: ZtunnelMetrics, name: 'received' | 'sent'): Promise<number> {
  return (await metrics[name].get()).values.reduce((n, v) => n + v.value, 0);
}

describe('PodConnections', () => {
  test('an outbound bridge end: the client socket read what was received, wrote what was sent', async () => {
    const { tracker, metrics, lines, pod } = setup();
    const t = pod.opened(outbound);
    assert.equal(tracker.open.size, 1);
    pod.endedClientSocket(t, { bytesFromSocket: 100, bytesToSocket: 7, outcome: 'closed' });
    assert.equal(tracker.open.size, 0);
    assert.equal(await counter(metrics, 'received'), 100);
    assert.equal(await counter(metrics, 'sent'), 7);
    assert.equal(lines.at(-1)!.bytes_recv, 100);
    assert.equal(lines.at(-1)!.bytes_sent, 7);
  });

  test('an inbound bridge end: the client is on the tunnel, so what reached the app was received', async () => {
    const { metrics, lines, pod } = setup();
    const t = pod.opened(inbound);
    pod.endedClientStream(t, { bytesFromSocket: 5, bytesToSocket: 300, outcome: 'reset' });
    assert.equal(await counter(metrics, 'received'), 300);
    assert.equal(await counter(metrics, 'sent'), 5);
    assert.equal(lines.at(-1)!.flags, 'UPSTREAM_RESET');
  });

  test('a released pod is let go once its last connection, set up or open, ended', async () => {
    const { idle, pod } = setup();
    let settle!: () => void;
    pod.setUp(new Promise<void>((resolve) => (settle = resolve)));
    const a = pod.opened(outbound);
    const b = pod.opened(inbound);
    assert.equal(pod.count, 3);
    pod.release();
    assert.equal(idle.n, 0, 'connections still use the pod');
    settle();
    await new Promise((r) => setImmediate(r));
    pod.endedClientSocket(a, { bytesFromSocket: 0, bytesToSocket: 0, outcome: 'closed' });
    assert.equal(idle.n, 0);
    pod.endedClientStream(b, { bytesFromSocket: 0, bytesToSocket: 0, outcome: 'closed' });
    assert.equal(idle.n, 1, 'the last one lets the pod go');
    pod.release();
    assert.equal(idle.n, 1, 'once');
  });

  test('a pod released with nothing open is let go at once', () => {
    const { idle, pod } = setup();
    pod.release();
    assert.equal(idle.n, 1);
  });

  test('open connections share one shape: every field is set, in one order', () => {
    const { tracker } = setup();
    const a = tracker.opened(outbound);
    const b = tracker.opened({ ...inbound, attrs: { srcIp: '10.0.9.1', srcIdentity: null, dstIp: '10.0.1.1', dstPort: 80 }, target: { namespace: 'shop', labels: {} } });
    assert.deepEqual(Object.keys(a), Object.keys(b));
    assert.ok('link' in a, 'the link is set later without changing the shape');
  });
});

describe('strings kept by open connections', () => {
  test('flatString keeps every character', () => {
    for (const s of ['', '10.0.1.7:8080', `spiffe://cluster.local/ns/${'a'.repeat(40)}/sa/x`, 'ünïcödé 😀', '\ud800 lone', '"quoted" \\ \n']) assert.equal(flatString(s), s);
  });

  test('a StringTable hands out one copy per text, and starts over when full', () => {
    const table = new StringTable(3);
    const a = table.get(`10.0.1.7:${8080}`);
    assert.equal(a, '10.0.1.7:8080');
    assert.equal(table.get(['10.0.1.7', '8080'].join(':')), a);
    assert.equal(table.size, 1);
    table.get('b');
    table.get('c');
    assert.equal(table.size, 3);
    assert.equal(table.get('d'), 'd');
    assert.equal(table.size, 1, 'full: it forgot what it held');
    assert.equal(table.get('10.0.1.7:8080'), '10.0.1.7:8080');
  });
});
