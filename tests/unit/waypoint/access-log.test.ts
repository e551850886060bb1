import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino, type LoggerOptions } from 'pino';
import { AccessLogWriter, ACCESS_MESSAGE, isoTimeCached, LineBatcher, type AccessRecord } from '../../../waypoint/access-log.js';

const base: AccessRecord = {
  type: 'access',
  'request.id': '6f1c1e2a-4b8e-4a47-9a51-3b0c8d3c2f10',
  'src.addr': '10.0.1.4:40312',
  'src.identity': 'spiffe://cluster.local/ns/bench/sa/client',
  'src.workload': 'bench/client',
  'dst.service': 'server.bench.svc.cluster.local',
  'dst.addr': '10.0.2.5:8080',
  'dst.workload': 'bench/server-0',
  method: 'POST',
  path: '/bench/rr',
  authority: 'server.bench:80',
  protocol: 'HTTP/1.1',
  status: 200,
  'grpc.status': null,
  flags: '-',
  route: 'HTTPRoute bench/bench rule-0',
  authz: undefined,
  attempts: 1,
  'duration.ms': 1.2345678901234,
  'bytes.received': 1024,
  'bytes.sent': 1024,
  detail: undefined,
  traceparent: undefined,
};

const records: AccessRecord[] = [
  base,
  { ...base, 'src.identity': null, 'src.workload': null, 'dst.service': null, 'dst.addr': null, 'dst.workload': null, route: null, status: 0, attempts: 0 },
  { ...base, authz: 'denied by bench/deny-all', detail: 'upstream connect error: "quoted" \\ back\nslash\ttab \u0001 ünïcødé €', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  { ...base, traceparent: ['a', 'b'], 'grpc.status': 14, 'duration.ms': Number.NaN, path: '/x?q="<>"&y=\u2028', authority: '[fd00::1]:80' },
];

/** The lines a logger made with `opts` writes, through AccessLogWriter and through pino's own info(). */
function both(opts: LoggerOptions, bindings?: Record<string, unknown>): { ours: string[]; pinos: string[]; fast: boolean } {
  const out: string[] = [];
  const root = pino(opts, { write: (s: string) => out.push(s) });
  const logger = bindings ? root.child(bindings) : root;
  const w = new AccessLogWriter(logger);
  for (const r of records) w.write(r);
  const ours = out.splice(0);
  for (const r of records) logger.info(r, ACCESS_MESSAGE);
  return { ours, pinos: out.splice(0), fast: (w as unknown as { fast: boolean }).fast };
}

describe('access log', () => {
  test('a plain pino logger gets byte for byte the line pino writes, without pino formatting it', () => {
    const fixed = () => ',"time":"2026-11-22T04:00:00.000Z"';
    for (const [opts, bindings] of [
      [{ timestamp: fixed }, undefined],
      [{ base: { component: 'waypoint', waypoint: 'bench/waypoint', access: true }, timestamp: fixed }, undefined],
      [{ level: 'debug', timestamp: fixed }, { waypoint: 'a"b' }],
      [{ timestamp: false, messageKey: 'message' }, undefined],
    ] as [LoggerOptions, Record<string, unknown> | undefined][]) {
      const { ours, pinos, fast } = both(opts, bindings);
      assert.ok(fast, 'formatted by the writer');
      assert.deepEqual(ours, pinos);
      for (const l of ours) assert.equal(JSON.parse(l).type, 'access');
    }
  });

  test('the level is honoured, also when changed later', () => {
    const out: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (s: string) => out.push(s) });
    const w = new AccessLogWriter(logger);
    w.write(base);
    assert.equal(out.length, 0);
    logger.level = 'info';
    w.write(base);
    assert.equal(out.length, 1);
  });

  test('loggers that change lines (mixin, formatters, redaction) get logger.info', () => {
    const fixed = () => ',"time":1';
    for (const opts of [
      { timestamp: fixed, mixin: () => ({ extra: 1 }) },
      { timestamp: fixed, formatters: { log: (o: Record<string, unknown>) => ({ ...o, seen: true }) } },
      { timestamp: fixed, redact: ['path'] },
      { timestamp: fixed, msgPrefix: '[wp] ' },
      { timestamp: fixed, serializers: { path: () => 'hidden' } },
    ] as LoggerOptions[]) {
      const { ours, pinos, fast } = both(opts);
      assert.equal(fast, false);
      assert.deepEqual(ours, pinos);
    }
  });

  test('lines are handed on in order: in batches once enough gathered, and after the flush interval', async () => {
    const writes: string[] = [];
    const b = new LineBatcher({ write: (s: string) => writes.push(s) }, 20, 50);
    try {
      b.write('one 67890\n');
      assert.deepEqual(writes, []);
      b.write('two 67890\n');
      assert.deepEqual(writes, ['one 67890\ntwo 67890\n']);
      b.write('three\n');
      await new Promise((r) => setTimeout(r, 120));
      assert.deepEqual(writes, ['one 67890\ntwo 67890\n', 'three\n']);
    } finally {
      b.close();
    }
  });

  test("the cached ISO time reads as pino's isoTime", (t) => {
    const time = isoTimeCached();
    for (const ms of [Date.UTC(2026, 10, 22, 5, 24, 22, 7), Date.UTC(2026, 10, 22, 5, 24, 22, 45), Date.UTC(2026, 10, 22, 5, 24, 22, 999), Date.UTC(2026, 10, 22, 5, 24, 23, 0), Date.UTC(2027, 0, 1, 0, 0, 0, 120), 0]) {
      t.mock.method(Date, 'now', () => ms);
      assert.equal(time(), pino.stdTimeFunctions.isoTime());
      t.mock.restoreAll();
    }
  });
});
