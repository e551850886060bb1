/**
 * Trace context as it travels in HTTP headers: W3C `traceparent` (+ `tracestate`), B3 multi
 * (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`) and B3
 * single (`b3`). Pure functions: read what came in, decide the hop's own span, write what goes
 * out. A proxy that reports a span for its hop sends its own span id as the parent upstream, so
 * the application's spans hang under the proxy's.
 */

import { randomFillSync } from 'node:crypto';
import type { HeaderMap } from '../routing/filters.js';

/** Which header family the context came in (and is written back in, besides `traceparent`). */
export type TraceFormat = 'w3c' | 'b3' | 'b3-single';

/** What the client sent. `sampled` null: no decision yet (the proxy decides). */
export interface IncomingTrace {
  format: TraceFormat;
  /** lower-case hex, 32 digits (B3 may carry 16) */
  traceId: string;
  /** the client's span: the parent of the proxy's span */
  spanId: string;
  sampled: boolean | null;
  /** B3 debug flag: sampled, whatever the sampling rate */
  debug: boolean;
  /** W3C vendor data, passed on untouched */
  tracestate: string | null;
}

/** A sampling decision without ids (B3 `x-b3-sampled: 0` alone, or `b3: 0`). */
export interface SamplingOnly {
  format: 'b3' | 'b3-single';
  traceId: null;
  sampled: boolean;
  debug: boolean;
}

/** The proxy's own span in the trace. */
export interface TraceContext {
  traceId: string;
  spanId: string;
  /** the client's span; null when this span starts the trace */
  parentId: string | null;
  sampled: boolean;
  debug: boolean;
  /** how it came in (null: a trace started here) */
  format: TraceFormat | null;
  tracestate: string | null;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ZERO32 = '0'.repeat(32);
const ZERO16 = '0'.repeat(16);
const B3_HEADERS = ['x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags', 'b3'] as const;

function one(v: string | string[] | undefined): string | null {
  if (v === undefined) return null;
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined ? null : s.trim();
}

function validTraceId(id: string): boolean {
  return (HEX32.test(id) && id !== ZERO32) || (HEX16.test(id) && id !== ZERO16);
}

function validSpanId(id: string): boolean {
  return HEX16.test(id) && id !== ZERO16;
}

/**
 * W3C trace context level 1: `version-traceid-parentid-flags`. Version ff and all-zero ids are
 * invalid; version 00 has exactly four fields; later versions may append more after a dash.
 */
export function parseTraceparent(value: string): { traceId: string; spanId: string; sampled: boolean } | null {
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/.exec(value.trim());
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (traceId === ZERO32 || spanId === ZERO16) return null;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

function b3Sampled(v: string | null): boolean | null {
  if (v === null) return null;
  const s = v.toLowerCase();
  if (s === '1' || s === 'true' || s === 'd') return true;
  if (s === '0' || s === 'false') return false;
  return null;
}

/** B3 single header: `{traceid}-{spanid}[-{1|0|d}[-{parentspanid}]]`, or the sampling state alone. */
export function parseB3Single(value: string): IncomingTrace | SamplingOnly | null {
  const v = value.trim().toLowerCase();
  if (v === '0' || v === '1' || v === 'd') return { format: 'b3-single', traceId: null, sampled: v !== '0', debug: v === 'd' };
  const parts = v.split('-');
  if (parts.length < 2 || parts.length > 4) return null;
  const [traceId, spanId, state, parent] = parts as [string, string, string | undefined, string | undefined];
  if (!validTraceId(traceId) || !validSpanId(spanId)) return null;
  if (state !== undefined && state !== '0' && state !== '1' && state !== 'd') return null;
  if (parent !== undefined && !validSpanId(parent)) return null;
  return { format: 'b3-single', traceId, spanId, sampled: state === undefined ? null : state !== '0', debug: state === 'd', tracestate: null };
}

/** B3 multi headers; ids without a valid partner are ignored, a lone sampling header is kept. */
export function parseB3Multi(h: Readonly<HeaderMap>): IncomingTrace | SamplingOnly | null {
  const traceId = one(h['x-b3-traceid'])?.toLowerCase() ?? null;
  const spanId = one(h['x-b3-spanid'])?.toLowerCase() ?? null;
  const debug = one(h['x-b3-flags']) === '1';
  const sampledHeader = b3Sampled(one(h['x-b3-sampled']));
  const sampled = debug ? true : sampledHeader;
  if (traceId !== null && spanId !== null && validTraceId(traceId) && validSpanId(spanId)) {
    return { format: 'b3', traceId, spanId, sampled, debug, tracestate: null };
  }
  if (sampled !== null) return { format: 'b3', traceId: null, sampled, debug };
  return null;
}

/**
 * What trace the request belongs to. A valid `traceparent` wins, then B3 multi, then B3 single
 * (Envoy reads B3 first, OpenTelemetry W3C; both are carried out, so the choice only matters when
 * a client sends two different traces). Invalid headers are ignored, as if absent.
 */
export function readTraceHeaders(h: Readonly<HeaderMap>): IncomingTrace | SamplingOnly | null {
  const tp = one(h.traceparent);
  if (tp !== null) {
    const w = parseTraceparent(tp);
    if (w) return { format: 'w3c', ...w, debug: false, tracestate: one(h.tracestate) };
  }
  let samplingOnly: SamplingOnly | null = null;
  const multi = parseB3Multi(h);
  if (multi?.traceId) return multi;
  if (multi) samplingOnly = multi as SamplingOnly;
  const single = one(h.b3);
  if (single !== null) {
    const s = parseB3Single(single);
    if (s?.traceId) return s;
    if (s) samplingOnly ??= s as SamplingOnly;
  }
  return samplingOnly;
}

/** Random trace and span ids, drawn from a refilled buffer (one system call per 256 spans). */
export class TraceIds {
  private readonly buf = Buffer.alloc(4096);
  private at = this.buf.length;

  private take(n: number): string {
    if (this.at + n > this.buf.length) {
      randomFillSync(this.buf);
      this.at = 0;
    }
    const s = this.buf.toString('hex', this.at, this.at + n);
    this.at += n;
    return s;
  }

  traceId(): string {
    const id = this.take(16);
    return id === ZERO32 ? this.traceId() : id;
  }

  spanId(): string {
    const id = this.take(8);
    return id === ZERO16 ? this.spanId() : id;
  }
}

/**
 * The proxy's span: continues the incoming trace with a new span id (the client's span as its
 * parent), or starts a trace. The client's sampling decision is kept; without one, `samplePercent`
 * decides (`random` in [0, 1) is only drawn when the percentage is strictly between 0 and 100).
 */
export function continueTrace(incoming: IncomingTrace | SamplingOnly | null, ids: TraceIds, samplePercent: number, random: () => number): TraceContext {
  const decided = incoming?.sampled ?? null;
  const sampled = decided ?? (samplePercent >= 100 ? true : samplePercent <= 0 ? false : random() * 100 < samplePercent);
  if (incoming === null || incoming.traceId === null) {
    return { traceId: ids.traceId(), spanId: ids.spanId(), parentId: null, sampled, debug: incoming?.debug ?? false, format: null, tracestate: null };
  }
  return { traceId: incoming.traceId, spanId: ids.spanId(), parentId: incoming.spanId, sampled, debug: incoming.debug, format: incoming.format, tracestate: incoming.tracestate };
}

/** `traceparent` for a context (64-bit B3 trace ids are left-padded to 128 bits). */
export function formatTraceparent(c: { traceId: string; spanId: string; sampled: boolean }): string {
  return `00-${c.traceId.padStart(32, '0')}-${c.spanId}-${c.sampled ? '01' : '00'}`;
}

/**
 * Rewrites the trace headers of a request going upstream so its parent is `c.spanId`: always
 * `traceparent` (with the incoming `tracestate`), and B3 in the form it came in (multi when the
 * trace came as W3C or started here, so applications that only forward B3 stay in the trace).
 */
export function writeTraceHeaders(h: HeaderMap, c: TraceContext): void {
  for (const k of B3_HEADERS) delete h[k];
  delete h.tracestate;
  h.traceparent = formatTraceparent(c);
  if (c.tracestate) h.tracestate = c.tracestate;
  if (c.format === 'b3-single') {
    h.b3 = `${c.traceId}-${c.spanId}-${c.debug ? 'd' : c.sampled ? '1' : '0'}${c.parentId ? `-${c.parentId}` : ''}`;
    return;
  }
  h['x-b3-traceid'] = c.traceId;
  h['x-b3-spanid'] = c.spanId;
  if (c.parentId) h['x-b3-parentspanid'] = c.parentId;
  if (c.debug) h['x-b3-flags'] = '1';
  else h['x-b3-sampled'] = c.sampled ? '1' : '0';
}
