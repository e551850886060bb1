import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { HeaderMap } from '../../../shared/routing/filters.js';
import { continueTrace, formatTraceparent, parseB3Single, parseTraceparent, readTraceHeaders, TraceIds, writeTraceHeaders } from '../../../shared/telemetry/trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT = '00f067aa0ba902b7';

/** Ids in a known order, so expected headers can be written out. */
function fixedIds(): TraceIds {
  let n = 0;
  const ids = new TraceIds();
  ids.traceId = () => 'a'.repeat(32);
  ids.spanId = () => `${++n}`.padStart(16, 'b');
  return ids;
}

const never = (): number => {
  throw new Error('random drawn');
};

describe('traceparent', () => {
  test('a valid header, sampled and not', () => {
    assert.deepEqual(parseTraceparent(`00-${TRACE}-${CLIENT}-01`), { traceId: TRACE, spanId: CLIENT, sampled: true });
    assert.deepEqual(parseTraceparent(`00-${TRACE}-${CLIENT}-00`), { traceId: TRACE, spanId: CLIENT, sampled: false });
    // only bit 0 is the sampled flag
    assert.equal(parseTraceparent(`00-${TRACE}-${CLIENT}-03`)?.sampled, true);
    assert.equal(parseTraceparent(`00-${TRACE}-${CLIENT}-02`)?.sampled, false);
    assert.equal(parseTraceparent(`  00-${TRACE}-${CLIENT}-01 `)?.traceId, TRACE);
  });

  test('invalid headers are ignored', () => {
    for (const bad of [
      '',
      'garbage',
      `00-${TRACE}-${CLIENT}`, // no flags
      `00-${TRACE.toUpperCase()}-${CLIENT}-01`, // upper case
      `00-${'0'.repeat(32)}-${CLIENT}-01`, // zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`, // zero parent id
      `ff-${TRACE}-${CLIENT}-01`, // forbidden version
      `00-${TRACE}-${CLIENT}-01-extra`, // version 00 has four fields
      `00-${TRACE.slice(1)}-${CLIENT}-01`, // short trace id
      `0-${TRACE}-${CLIENT}-01`,
    ]) {
      assert.equal(parseTraceparent(bad), null, bad);
    }
  });

  test('a later version may carry more fields', () => {
    assert.equal(parseTraceparent(`01-${TRACE}-${CLIENT}-01-whatever`)?.traceId, TRACE);
  });
});

describe('reading what the client sent', () => {
  test('W3C with tracestate', () => {
    assert.deepEqual(readTraceHeaders({ traceparent: `00-${TRACE}-${CLIENT}-01`, tracestate: 'congo=t61rcWkgMzE' }), {
      format: 'w3c',
      traceId: TRACE,
      spanId: CLIENT,
      sampled: true,
      debug: false,
      tracestate: 'congo=t61rcWkgMzE',
    });
  });

  test('B3 multi: 128- and 64-bit trace ids, sampled 1/0/true, debug flag, no decision', () => {
    const base = { 'x-b3-traceid': TRACE, 'x-b3-spanid': CLIENT };
    assert.deepEqual(readTraceHeaders({ ...base, 'x-b3-sampled': '1' }), { format: 'b3', traceId: TRACE, spanId: CLIENT, sampled: true, debug: false, tracestate: null });
    assert.equal(readTraceHeaders({ ...base, 'x-b3-sampled': '0' })?.sampled, false);
    assert.equal(readTraceHeaders({ ...base, 'x-b3-sampled': 'true' })?.sampled, true);
    assert.equal(readTraceHeaders(base)?.sampled, null);
    assert.deepEqual(readTraceHeaders({ ...base, 'x-b3-flags': '1' }), { format: 'b3', traceId: TRACE, spanId: CLIENT, sampled: true, debug: true, tracestate: null });
    assert.equal(readTraceHeaders({ 'x-b3-traceid': 'a3ce929d0e0e4736', 'x-b3-spanid': CLIENT })?.traceId, 'a3ce929d0e0e4736');
    // upper-case hex is read as lower case
    assert.equal(readTraceHeaders({ 'x-b3-traceid': TRACE.toUpperCase(), 'x-b3-spanid': CLIENT })?.traceId, TRACE);
  });

  test('B3 multi: a trace id without a valid span id is no trace; a lone x-b3-sampled is a decision', () => {
    assert.equal(readTraceHeaders({ 'x-b3-traceid': 'abc' }), null);
    assert.equal(readTraceHeaders({ 'x-b3-traceid': TRACE, 'x-b3-spanid': 'xyz' }), null);
    assert.deepEqual(readTraceHeaders({ 'x-b3-sampled': '0' }), { format: 'b3', traceId: null, sampled: false, debug: false });
  });

  test('B3 single header', () => {
    assert.deepEqual(parseB3Single(`${TRACE}-${CLIENT}-1-05e3ac9a4f6e3b90`), { format: 'b3-single', traceId: TRACE, spanId: CLIENT, sampled: true, debug: false, tracestate: null });
    assert.equal(parseB3Single(`${TRACE}-${CLIENT}`)?.sampled, null);
    assert.equal(parseB3Single(`${TRACE}-${CLIENT}-0`)?.sampled, false);
    assert.deepEqual(parseB3Single(`${TRACE}-${CLIENT}-d`), { format: 'b3-single', traceId: TRACE, spanId: CLIENT, sampled: true, debug: true, tracestate: null });
    assert.deepEqual(parseB3Single('0'), { format: 'b3-single', traceId: null, sampled: false, debug: false });
    assert.equal(parseB3Single('d')?.sampled, true);
    for (const bad of ['', 'x', `${TRACE}`, `${TRACE}-${CLIENT}-2`, `${TRACE}-${CLIENT}-1-zz`, `${TRACE}-${CLIENT}-1-${CLIENT}-x`, `${'0'.repeat(32)}-${CLIENT}`]) {
      assert.equal(parseB3Single(bad), null, bad);
    }
    assert.equal(readTraceHeaders({ b3: `${TRACE}-${CLIENT}-1` })?.format, 'b3-single');
  });

  test('a valid traceparent wins over B3; an invalid one falls back to B3', () => {
    const b3 = { 'x-b3-traceid': 'a'.repeat(32), 'x-b3-spanid': 'c'.repeat(16), 'x-b3-sampled': '1' };
    assert.equal(readTraceHeaders({ traceparent: `00-${TRACE}-${CLIENT}-01`, ...b3 })?.traceId, TRACE);
    const r = readTraceHeaders({ traceparent: 'broken', tracestate: 'k=v', ...b3 });
    assert.equal(r?.format, 'b3');
    assert.equal(r?.traceId, 'a'.repeat(32));
  });

  test('nothing: no trace', () => {
    assert.equal(readTraceHeaders({}), null);
    assert.equal(readTraceHeaders({ 'x-request-id': 'r1' }), null);
  });
});

describe('the hop continues or starts the trace', () => {
  test('continues: same trace, new span id, the client span as parent, sampling kept', () => {
    const c = continueTrace(readTraceHeaders({ traceparent: `00-${TRACE}-${CLIENT}-00` }), fixedIds(), 100, never);
    assert.deepEqual(c, { traceId: TRACE, spanId: 'bbbbbbbbbbbbbbb1', parentId: CLIENT, sampled: false, debug: false, format: 'w3c', tracestate: null });
  });

  test('starts a trace when none came in; sampling percentage decides', () => {
    const c = continueTrace(null, fixedIds(), 100, never);
    assert.equal(c.traceId, 'a'.repeat(32));
    assert.equal(c.parentId, null);
    assert.equal(c.sampled, true);
    assert.equal(continueTrace(null, fixedIds(), 0, never).sampled, false);
    assert.equal(continueTrace(null, fixedIds(), 10, () => 0.05).sampled, true);
    assert.equal(continueTrace(null, fixedIds(), 10, () => 0.5).sampled, false);
    // B3 with ids but no decision: the percentage decides
    assert.equal(continueTrace(readTraceHeaders({ 'x-b3-traceid': TRACE, 'x-b3-spanid': CLIENT }), fixedIds(), 10, () => 0.5).sampled, false);
  });

  test('a lone "do not sample" starts an unsampled trace', () => {
    const c = continueTrace(readTraceHeaders({ 'x-b3-sampled': '0' }), fixedIds(), 100, never);
    assert.equal(c.sampled, false);
    assert.equal(c.parentId, null);
  });

  test('real ids: 32 and 16 hex digits, not repeated', () => {
    const ids = new TraceIds();
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const t = ids.traceId();
      const s = ids.spanId();
      assert.match(t, /^[0-9a-f]{32}$/);
      assert.match(s, /^[0-9a-f]{16}$/);
      seen.add(s);
    }
    assert.equal(seen.size, 1000);
  });
});

describe('headers sent upstream', () => {
  const write = (h: HeaderMap, percent = 100): HeaderMap => {
    writeTraceHeaders(h, continueTrace(readTraceHeaders(h), fixedIds(), percent, never));
    return h;
  };

  test('from W3C: traceparent with the hop as parent, tracestate kept, B3 added', () => {
    assert.deepEqual(write({ traceparent: `00-${TRACE}-${CLIENT}-01`, tracestate: 'k=v', other: 'x' }), {
      other: 'x',
      traceparent: `00-${TRACE}-bbbbbbbbbbbbbbb1-01`,
      tracestate: 'k=v',
      'x-b3-traceid': TRACE,
      'x-b3-spanid': 'bbbbbbbbbbbbbbb1',
      'x-b3-parentspanid': CLIENT,
      'x-b3-sampled': '1',
    });
  });

  test('from B3 multi, not sampled: both rewritten, sampled 0 passed on', () => {
    assert.deepEqual(write({ 'x-b3-traceid': TRACE, 'x-b3-spanid': CLIENT, 'x-b3-parentspanid': 'ffffffffffffffff', 'x-b3-sampled': '0' }), {
      traceparent: `00-${TRACE}-bbbbbbbbbbbbbbb1-00`,
      'x-b3-traceid': TRACE,
      'x-b3-spanid': 'bbbbbbbbbbbbbbb1',
      'x-b3-parentspanid': CLIENT,
      'x-b3-sampled': '0',
    });
  });

  test('from B3 multi with a 64-bit trace id: traceparent pads it, B3 keeps it', () => {
    const h = write({ 'x-b3-traceid': 'a3ce929d0e0e4736', 'x-b3-spanid': CLIENT, 'x-b3-flags': '1' });
    assert.equal(h.traceparent, '00-0000000000000000a3ce929d0e0e4736-bbbbbbbbbbbbbbb1-01');
    assert.equal(h['x-b3-traceid'], 'a3ce929d0e0e4736');
    assert.equal(h['x-b3-flags'], '1');
    assert.equal(h['x-b3-sampled'], undefined);
  });

  test('from B3 single: answered in B3 single', () => {
    assert.deepEqual(write({ b3: `${TRACE}-${CLIENT}-1` }), { traceparent: `00-${TRACE}-bbbbbbbbbbbbbbb1-01`, b3: `${TRACE}-bbbbbbbbbbbbbbb1-1-${CLIENT}` });
    assert.equal(write({ b3: `${TRACE}-${CLIENT}-d` }).b3, `${TRACE}-bbbbbbbbbbbbbbb1-d-${CLIENT}`);
  });

  test('nothing in: a new trace, no parent; an invalid traceparent and its tracestate are replaced', () => {
    assert.deepEqual(write({}), { traceparent: `00-${'a'.repeat(32)}-bbbbbbbbbbbbbbb1-01`, 'x-b3-traceid': 'a'.repeat(32), 'x-b3-spanid': 'bbbbbbbbbbbbbbb1', 'x-b3-sampled': '1' });
    const h = write({ traceparent: 'nonsense', tracestate: 'k=v' }, 0);
    assert.equal(h.traceparent, `00-${'a'.repeat(32)}-bbbbbbbbbbbbbbb1-00`);
    assert.equal(h.tracestate, undefined);
  });

  test('formatTraceparent', () => {
    assert.equal(formatTraceparent({ traceId: TRACE, spanId: CLIENT, sampled: true }), `00-${TRACE}-${CLIENT}-01`);
  });
});
