/**
 * The waypoint's access log: one JSON line per request, written through the pino logger it is
 * given. For a plain pino logger (no mixin, log formatter, hooks, redaction, message prefix,
 * nested key or serializer of these fields) the line is put together here, field by field with
 * the keys already quoted, and handed to the logger's destination: the same bytes pino would
 * write (level, time, the logger's bindings, the fields, msg), without pino walking, checking and
 * quoting a 24-key object on every request. Any other logger gets `logger.info(record, 'request')`.
 */

import { pino, type Logger } from 'pino';

/** One request as the access log shows it; `undefined` fields are left out, as pino does. */
export interface AccessRecord {
  type: 'access';
  'request.id': string;
  'src.addr': string;
  'src.identity': string | null;
  'src.workload': string | null;
  'dst.service': string | null;
  'dst.addr': string | null;
  'dst.workload': string | null;
  method: string;
  path: string;
  authority: string;
  protocol: string;
  status: number;
  'grpc.status': number | null;
  flags: string;
  route: string | null;
  authz: string | undefined;
  attempts: number;
  'duration.ms': number;
  'bytes.received': number;
  'bytes.sent': number;
  detail: string | undefined;
  traceparent: string | string[] | undefined;
}

export const ACCESS_MESSAGE = 'request';

const sym = pino.symbols as unknown as Record<string, symbol>;
/** pino's own symbol for the metadata flag of multistream destinations (Symbol.for, stable) */
const needsMetadata = Symbol.for('pino.metadata');

type Internals = Record<symbol, unknown>;

/** A JSON value as pino writes it: strings quoted, non-finite numbers as null, objects stringified. */
function v(x: string | number | null | string[]): string {
  if (typeof x === 'string') return JSON.stringify(x);
  if (typeof x === 'number') return Number.isFinite(x) ? String(x) : 'null';
  return JSON.stringify(x);
}

/** The fields of a record, as pino writes an object's properties (each with its leading comma). */
export function formatAccessFields(r: AccessRecord): string {
  let s =
    ',"type":"access","request.id":' +
    v(r['request.id']) +
    ',"src.addr":' +
    v(r['src.addr']) +
    ',"src.identity":' +
    v(r['src.identity']) +
    ',"src.workload":' +
    v(r['src.workload']) +
    ',"dst.service":' +
    v(r['dst.service']) +
    ',"dst.addr":' +
    v(r['dst.addr']) +
    ',"dst.workload":' +
    v(r['dst.workload']) +
    ',"method":' +
    v(r.method) +
    ',"path":' +
    v(r.path) +
    ',"authority":' +
    v(r.authority) +
    ',"protocol":' +
    v(r.protocol) +
    ',"status":' +
    v(r.status) +
    ',"grpc.status":' +
    v(r['grpc.status']) +
    ',"flags":' +
    v(r.flags) +
    ',"route":' +
    v(r.route);
  if (r.authz !== undefined) s += ',"authz":' + v(r.authz);
  s += ',"attempts":' + v(r.attempts) + ',"duration.ms":' + v(r['duration.ms']) + ',"bytes.received":' + v(r['bytes.received']) + ',"bytes.sent":' + v(r['bytes.sent']);
  if (r.detail !== undefined) s += ',"detail":' + v(r.detail);
  if (r.traceparent !== undefined) s += ',"traceparent":' + v(r.traceparent);
  return s;
}

const FIELD_NAMES: readonly (keyof AccessRecord)[] = [
  'type',
  'request.id',
  'src.addr',
  'src.identity',
  'src.workload',
  'dst.service',
  'dst.addr',
  'dst.workload',
  'method',
  'path',
  'authority',
  'protocol',
  'status',
  'grpc.status',
  'flags',
  'route',
  'authz',
  'attempts',
  'duration.ms',
  'bytes.received',
  'bytes.sent',
  'detail',
  'traceparent',
];

/** Whether lines for `logger` can be put together here (else they go through logger.info). */
function formatsHere(logger: Logger): boolean {
  const l = logger as unknown as Internals;
  const needed = ['mixinSym', 'formattersSym', 'hooksSym', 'msgPrefixSym', 'nestedKeySym', 'stringifiersSym', 'serializersSym', 'streamSym', 'lsCacheSym', 'timeSym', 'chindingsSym', 'endSym', 'messageKeySym'];
  if (needed.some((k) => sym[k] === undefined)) return false;
  const formatters = l[sym.formattersSym!] as { log?: unknown } | undefined;
  const hooks = l[sym.hooksSym!] as { logMethod?: unknown; streamWrite?: unknown } | undefined;
  const stringifiers = l[sym.stringifiersSym!] as object | undefined;
  const serializers = (l[sym.serializersSym!] ?? {}) as Record<string, unknown>;
  const stream = l[sym.streamSym!] as ({ write?: unknown } & Record<symbol, unknown>) | undefined;
  const cache = l[sym.lsCacheSym!] as Record<number, string> | undefined;
  return (
    !l[sym.mixinSym!] &&
    formatters?.log === undefined &&
    hooks?.logMethod === undefined &&
    hooks?.streamWrite === undefined &&
    typeof l[sym.msgPrefixSym!] !== 'string' &&
    !l[sym.nestedKeySym!] &&
    stringifiers !== undefined &&
    Reflect.ownKeys(stringifiers).length === 0 &&
    FIELD_NAMES.every((k) => serializers[k] === undefined) &&
    typeof stream?.write === 'function' &&
    stream[needsMetadata] !== true &&
    typeof cache?.[logger.levels.values.info!] === 'string' &&
    typeof l[sym.timeSym!] === 'function' &&
    typeof l[sym.chindingsSym!] === 'string' &&
    typeof l[sym.endSym!] === 'string' &&
    typeof l[sym.messageKeySym!] === 'string'
  );
}

export class AccessLogWriter {
  private readonly fast: boolean;

  constructor(private readonly logger: Logger) {
    this.fast = formatsHere(logger);
  }

  write(r: AccessRecord): void {
    const logger = this.logger;
    if (!this.fast) {
      logger.info(r, ACCESS_MESSAGE);
      return;
    }
    if (!logger.isLevelEnabled('info')) return;
    const l = logger as unknown as Internals;
    const line =
      (l[sym.lsCacheSym!] as Record<number, string>)[logger.levels.values.info!]! +
      (l[sym.timeSym!] as () => string)() +
      (l[sym.chindingsSym!] as string) +
      formatAccessFields(r) +
      ',' +
      JSON.stringify(l[sym.messageKeySym!] as string) +
      ':"' +
      ACCESS_MESSAGE +
      '"' +
      (l[sym.endSym!] as string);
    (l[sym.streamSym!] as { write(s: string): unknown }).write(line);
  }
}

/**
 * pino's `isoTime` (`,"time":"2026-11-22T05:24:22.123Z"`) without a Date and its formatting per
 * line: the text up to the second is kept, the milliseconds appended.
 */
export function isoTimeCached(): () => string {
  let second = Number.NaN;
  let prefix = '';
  return () => {
    const ms = Date.now();
    const rest = ms % 1000;
    const s = ms - rest;
    if (s !== second) {
      const iso = new Date(s).toISOString();
      // only for the 4-digit years toISOString writes as YYYY-…; others are formatted whole
      if (iso.length !== 24) return `,"time":"${new Date(ms).toISOString()}"`;
      second = s;
      prefix = `,"time":"${iso.slice(0, 20)}`;
    }
    return prefix + (rest < 10 ? '00' : rest < 100 ? '0' : '') + rest + 'Z"';
  };
}

/** Where batches go: a pino destination (SonicBoom) or any stream-like writer. */
export interface LineSink {
  write(s: string): unknown;
  flushSync?(): void;
  readonly destroyed?: boolean;
}

/**
 * Gathers access-log lines and hands them on in batches: once `minChars` gathered, at least every
 * `flushMs`, and at exit (as Envoy flushes its access-log files every second). SonicBoom's own
 * `minLength` buffering measures its whole pending string on every write (Buffer.byteLength of
 * a string that grows to 32 KiB, flattened again after each append): per line, a copy and a scan
 * of tens of KiB. Here a line costs an array push; the destination sees one write per batch.
 */
export class LineBatcher {
  private lines: string[] = [];
  private chars = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly out: LineSink,
    private readonly minChars = 32 * 1024,
    flushMs = 1000,
  ) {
    this.timer = setInterval(() => this.flush(), flushMs);
    this.timer.unref();
    process.once('exit', () => {
      this.flush();
      if (!this.out.destroyed) this.out.flushSync?.();
    });
  }

  write(line: string): boolean {
    this.lines.push(line);
    this.chars += line.length;
    if (this.chars >= this.minChars) this.flush();
    return true;
  }

  /** Hands what was gathered to the destination. */
  flush(): void {
    if (this.lines.length === 0) return;
    const batch = this.lines.length === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.chars = 0;
    if (!this.out.destroyed) this.out.write(batch);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
