import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePrometheusText } from '../../../shared/telemetry/prometheus-text.js';
import { ZtunnelMetrics } from '../../../ztunnel/metrics.js';
import { tcpLabels, type TrackedConnection } from '../../../ztunnel/connections.js';

describe('parsePrometheusText', () => {
  test("reads ztunnel's own exposition back: names, every label and the value", async () => {
    const m = new ZtunnelMetrics();
    const c: TrackedConnection = {
      id: 1,
      direction: 'outbound',
      src: { address: '10.0.0.1:1234', identity: 'spiffe://cluster.local/ns/shop/sa/client', workload: { name: 'client', namespace: 'shop', labels: { app: 'cli"ent\\x\ny' } } },
      dst: { address: '10.0.0.2:80' },
      protocol: 'HBONE',
      mtls: true,
      started: 0,
    };
    const labels = tcpLabels(c, '-');
    m.opened.inc(labels, 3);
    m.received.inc(labels, 1500);
    const samples = parsePrometheusText(await m.registry.metrics());
    const opened = samples.filter((s) => s.name === 'istio_tcp_connections_opened_total');
    assert.equal(opened.length, 1);
    assert.deepEqual(opened[0]!.labels, labels);
    assert.equal(opened[0]!.value, 3);
    assert.equal(opened[0]!.labels.source_app, 'cli"ent\\x\ny');
    assert.equal(samples.find((s) => s.name === 'istio_tcp_received_bytes_total')!.value, 1500);
    assert.ok(samples.some((s) => s.name === 'process_start_time_seconds' && s.value > 0));
  });

  test('special values (in any case, as prom-client writes "Nan"), timestamps, spacing, comments and blank lines', () => {
    const text = [
      '# HELP x a metric',
      '# TYPE x counter',
      '',
      'x 1',
      'x{a="1"} +Inf 1700000000000',
      'x{a="2",} -Inf',
      'x{ a = "3" , b="q" } NaN',
      '   y_total{le="0.5"} 2.5e3  ',
      'w Nan',
      'w{} inf',
      'z:rule{} 7',
    ].join('\n');
    const s = parsePrometheusText(text);
    assert.deepEqual(
      s.map((x) => [x.name, x.labels, x.value]),
      [
        ['x', {}, 1],
        ['x', { a: '1' }, Infinity],
        ['x', { a: '2' }, -Infinity],
        ['x', { a: '3', b: 'q' }, NaN],
        ['y_total', { le: '0.5' }, 2500],
        ['w', {}, NaN],
        ['w', {}, Infinity],
        ['z:rule', {}, 7],
      ],
    );
  });

  test('a malformed line is an error naming its line, not a half-read scrape', () => {
    for (const [text, line] of [
      ['ok 1\n{a="1"} 2', 2],
      ['x{a="1" 2', 1],
      ['x{a=1} 2', 1],
      ['x{a="1"} two', 1],
      ['x{a="unterminated} 2', 1],
      ['ok 1\nok 2\nx', 3],
      ['x 1 2 3', 1],
    ] as const) {
      assert.throws(() => parsePrometheusText(text), new RegExp(`^Error: metrics line ${line}: `), text);
    }
  });
});
