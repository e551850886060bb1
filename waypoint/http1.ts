/**
 * HTTP/1.1 as the waypoint speaks it on both sides, without node's http module: message heads
 * written by hand and messages parsed incrementally. Pure: bytes in, events and decisions out
 * (tests/unit/waypoint/http1.test.ts feeds them in every split). The client and server built on
 * them are ./http1-client.ts and ./http1-server.ts.
 *
 * Strict where a proxy must be (RFC 9112): both Transfer-Encoding and Content-Length, conflicting
 * Content-Lengths, whitespace before a header's colon, a bad chunk size or a head over
 * `MAX_HEAD_BYTES` is an error, never a guess: a smuggled second message cannot get through.
 */

import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';

/** Message head (start line and headers) and trailer section limit (Envoy's default is 60 KiB). */
export const MAX_HEAD_BYTES = 64 * 1024;
/** A chunk-size line longer than this (extensions included) is an error. */
const MAX_CHUNK_LINE = 4096;
/** Header (or trailer) lines per message; more is a 431, as Envoy does beyond its limit (100 by default). */
export const MAX_HEADER_LINES = 500;

/** A message that breaks the protocol; `status` is what a server answers it with. */
export class Http1ProtocolError extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
    this.name = 'Http1ProtocolError';
  }
}

// RFC 9110 token characters
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// field values: visible ASCII, space, tab, obs-text; never CR, LF or NUL
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
// request-target as node's http client allows it (no spaces, no control characters)
const BAD_PATH = /[^\u0021-\u00ff]/;

type OutHeaders = Readonly<Record<string, string | string[] | number | undefined>>;

/** Headers a side adds itself (framing and the connection's own). */
const OWN_HEADERS = new Set(['host', 'connection', 'transfer-encoding', 'keep-alive']);

/** `name: value` lines for `headers`, skipping `skip` and content-length; throws on what would break the message. */
function headerLines(headers: OutHeaders, skip: ReadonlySet<string>): string {
  let out = '';
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || skip.has(k) || k === 'content-length') continue;
    if (!TOKEN.test(k)) throw new Http1ProtocolError(`invalid header name ${JSON.stringify(k)}`);
    if (Array.isArray(v)) {
      for (const one of v) {
        if (BAD_VALUE.test(one)) throw new Http1ProtocolError(`invalid value for header ${k}`);
        out += `${k}: ${one}\r\n`;
      }
    } else {
      const s = typeof v === 'number' ? String(v) : v;
      if (BAD_VALUE.test(s)) throw new Http1ProtocolError(`invalid value for header ${k}`);
      out += `${k}: ${s}\r\n`;
    }
  }
  return out;
}

/** The content-length in `headers` when it is one valid number, else null. */
function contentLengthOf(headers: OutHeaders): string | null {
  const v = headers['content-length'];
  if (v === undefined || Array.isArray(v)) return null;
  const s = String(v);
  return /^\d{1,15}$/.test(s) ? s : null;
}

export type RequestFraming = 'none' | 'length' | 'chunked';

/**
 * The request line and headers. `headers` are lowercase and without hop-by-hop headers (the
 * engine's rule); a body without content-length is sent chunked. Throws on a method, path,
 * header name or value that would break the message (CR/LF injection).
 */
export function requestHead(method: string, path: string, authority: string, headers: OutHeaders, hasBody: boolean): { head: string; framing: RequestFraming } {
  if (!TOKEN.test(method)) throw new Http1ProtocolError(`invalid method ${JSON.stringify(method)}`);
  if (path.length === 0 || BAD_PATH.test(path)) throw new Http1ProtocolError(`invalid request path ${JSON.stringify(path)}`);
  if (BAD_VALUE.test(authority)) throw new Http1ProtocolError('invalid host');
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n${headerLines(headers, OWN_HEADERS)}`;
  const length = contentLengthOf(headers);
  let framing: RequestFraming = 'none';
  // without a body only "0" is true (some servers want it on a bodiless POST)
  if (!hasBody) {
    if (length === '0') head += 'content-length: 0\r\n';
  } else if (length !== null) {
    framing = 'length';
    head += `content-length: ${length}\r\n`;
  } else {
    framing = 'chunked';
    head += 'transfer-encoding: chunked\r\n';
  }
  return { head: `${head}\r\n`, framing };
}

export type ResponseFraming = 'none' | 'length' | 'chunked' | 'close';

let dateSecond = -1;
let dateText = '';
/** The Date header value, formatted once a second. */
function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/**
 * The status line and headers of a response. Framing: `length` keeps the content-length in
 * `headers` (a bodiless response to HEAD keeps it too), `chunked` adds transfer-encoding, `none`
 * (204, 304, HEAD) and `close` (an HTTP/1.0 client, no length) add nothing. A Date is added when
 * missing; `close` adds `connection: close`, `keepAlive10` the keep-alive an HTTP/1.0 client asked for.
 */
export function responseHead(status: number, headers: OutHeaders, framing: ResponseFraming, connection: 'close' | 'keep-alive-1.0' | null): string {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n${headerLines(headers, OWN_HEADERS)}`;
  if (headers.date === undefined) head += `date: ${httpDate()}\r\n`;
  const length = contentLengthOf(headers);
  if (framing === 'chunked') head += 'transfer-encoding: chunked\r\n';
  else if (length !== null && framing !== 'close') head += `content-length: ${length}\r\n`;
  if (connection === 'close') head += 'connection: close\r\n';
  else if (connection === 'keep-alive-1.0') head += 'connection: keep-alive\r\n';
  return `${head}\r\n`;
}

/** The framing of one chunk of a chunked body. */
export function chunkHeader(n: number): string {
  return `${n.toString(16)}\r\n`;
}

/** The last chunk and the trailer section; throws on trailers that would break the message. */
export function lastChunk(trailers: OutHeaders | null): string {
  return trailers === null ? '0\r\n\r\n' : `0\r\n${headerLines(trailers, OWN_HEADERS)}\r\n`;
}

/** Adds one header to a map the way a proxy needs: repeated ones joined, set-cookie as a list, cookie with "; ". */
function addHeader(map: Record<string, string | string[]>, name: string, value: string): void {
  const prev = map[name];
  if (prev === undefined) map[name] = name === 'set-cookie' ? [value] : value;
  else if (Array.isArray(prev)) prev.push(value);
  else map[name] = `${prev}${name === 'cookie' ? '; ' : ', '}${value}`;
}

/** Splits a header section into a map; throws on malformed lines. Content-Length values go to `lengths` when given. */
function parseFields(lines: string[], from: number, map: Record<string, string | string[]>, lengths: string[] | null): void {
  if (lines.length - from > MAX_HEADER_LINES) throw new Http1ProtocolError(`more than ${MAX_HEADER_LINES} header lines`, 431);
  let last: string | null = null;
  for (let i = from; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.length === 0) continue;
    const c0 = line.charCodeAt(0);
    if (c0 === 32 || c0 === 9) {
      // obs-fold: the folded value is joined with a space (RFC 9112 §5.2)
      if (last === null || last === 'content-length' || last === 'transfer-encoding') throw new Http1ProtocolError('folded header line');
      const v = line.trim();
      const prev = map[last]!;
      if (Array.isArray(prev)) prev[prev.length - 1] += ` ${v}`;
      else map[last] = `${prev} ${v}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Http1ProtocolError('header line without a name');
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new Http1ProtocolError(`invalid header name ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new Http1ProtocolError(`invalid value in header ${name}`);
    const lower = name.toLowerCase();
    last = lower;
    if (lengths !== null && lower === 'content-length') {
      lengths.push(value);
      continue;
    }
    addHeader(map, lower, value);
  }
}

/** The one Content-Length of a message (repeats must agree), or -1 without one. */
function oneLength(lengths: string[]): number {
  if (lengths.length === 0) return -1;
  const first = lengths[0]!;
  if (!/^\d{1,15}$/.test(first) || lengths.some((l) => l !== first)) throw new Http1ProtocolError('invalid content-length');
  return Number(first);
}

/** Whether the last transfer coding is chunked (RFC 9112 §6.3). */
function chunkedLast(te: string | string[]): boolean {
  const codings = String(te).toLowerCase().split(',');
  return codings[codings.length - 1]!.trim() === 'chunked';
}

export interface ParserEvents<H> {
  head(h: H): void;
  /** a piece of the body (a view into the parsed bytes: fresh per call, safe to keep) */
  data(chunk: Buffer): void;
  /** the message ended; trailers are empty without a chunked trailer section */
  end(trailers: Record<string, string | string[]>): void;
}

const enum State {
  Head,
  Fixed,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

/** What a head decided about the body that follows. */
type BodyFraming = { kind: 'none' } | { kind: 'fixed'; length: number } | { kind: 'chunked' } | { kind: 'close' } | { kind: 'upgrade' };

/**
 * The body state machine shared by requests and responses: heads are found and handed to
 * `parseHead`, bodies framed by length, chunks (with trailers) or the close.
 */
abstract class MessageParser<H> {
  private state = State.Done;
  protected pending: Buffer | null = null;
  private remaining = 0;
  private trailerLines: string[] = [];
  private trailerBytes = 0;

  constructor(protected readonly on: ParserEvents<H>) {}

  /** Parses a head (without its final empty line): the head for the event, and its body framing; null: skip it (1xx). */
  protected abstract parseHead(text: string): { head: H; framing: BodyFraming } | null;

  /** Bytes arrived in the Done state: throw (a response nobody asked for), or keep them for later (a pipelined request). */
  protected abstract afterMessage(): void;

  /** The next message may begin. */
  protected begin(): void {
    if (this.state !== State.Done) throw new Error('a message is still under way');
    this.state = State.Head;
  }

  /** Between messages, nothing half-read. */
  get idle(): boolean {
    return this.state === State.Done && (this.pending === null || this.pending.length === 0);
  }

  /** Between messages (possibly with the next one's bytes kept). */
  get done(): boolean {
    return this.state === State.Done;
  }

  /** Bytes received and not parsed yet (after the message: the next one's). */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }

  /** Takes the unparsed bytes (an upgrade's first bytes). */
  takePending(): Buffer {
    const p = this.pending ?? Buffer.alloc(0);
    this.pending = null;
    return p;
  }

  feed(input: Buffer): void {
    let buf = this.pending === null || this.pending.length === 0 ? input : input.length === 0 ? this.pending : Buffer.concat([this.pending, input]);
    this.pending = null;
    let at = 0;
    while (at < buf.length) {
      switch (this.state) {
        case State.Done:
          this.pending = buf.subarray(at);
          this.afterMessage();
          return;
        case State.Head: {
          // empty lines before a request line are ignored (RFC 9112 §2.2)
          while (at + 1 < buf.length && buf[at] === 13 && buf[at + 1] === 10) at += 2;
          const end = buf.indexOf('\r\n\r\n', at, 'latin1');
          if (end < 0) {
            if (buf.length - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('message head too large', 431);
            this.pending = buf.subarray(at);
            return;
          }
          if (end - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('message head too large', 431);
          const text = buf.toString('latin1', at, end);
          at = end + 4;
          const parsed = this.parseHead(text);
          if (parsed === null) break;
          const f = parsed.framing;
          if (f.kind === 'upgrade') {
            // what follows belongs to the upgraded protocol: kept for takePending()
            this.state = State.Done;
            this.pending = buf.subarray(at);
            this.on.head(parsed.head);
            return;
          }
          if (f.kind === 'none' || (f.kind === 'fixed' && f.length === 0)) {
            this.state = State.Done;
            this.on.head(parsed.head);
            this.on.end({});
          } else {
            if (f.kind === 'fixed') {
              this.state = State.Fixed;
              this.remaining = f.length;
            } else this.state = f.kind === 'chunked' ? State.ChunkSize : State.UntilClose;
            this.on.head(parsed.head);
          }
          break;
        }
        case State.Fixed: {
          const n = Math.min(this.remaining, buf.length - at);
          this.remaining -= n;
          const chunk = buf.subarray(at, at + n);
          at += n;
          if (this.remaining === 0) this.state = State.Done;
          this.on.data(chunk);
          if (this.state === State.Done) this.on.end({});
          break;
        }
        case State.UntilClose: {
          this.on.data(at === 0 ? buf : buf.subarray(at));
          return;
        }
        case State.ChunkSize: {
          const end = buf.indexOf('\r\n', at, 'latin1');
          if (end < 0) {
            if (buf.length - at > MAX_CHUNK_LINE) throw new Http1ProtocolError('chunk size line too long');
            this.pending = buf.subarray(at);
            return;
          }
          const line = buf.toString('latin1', at, end);
          at = end + 2;
          const semi = line.indexOf(';');
          const hex = (semi < 0 ? line : line.slice(0, semi)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new Http1ProtocolError('invalid chunk size');
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.state = State.Trailers;
            this.trailerLines = [];
            this.trailerBytes = 0;
          } else {
            this.remaining = size;
            this.state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.remaining, buf.length - at);
          this.remaining -= n;
          const chunk = buf.subarray(at, at + n);
          at += n;
          if (this.remaining === 0) this.state = State.ChunkDataEnd;
          this.on.data(chunk);
          break;
        }
        case State.ChunkDataEnd: {
          if (buf.length - at < 2) {
            this.pending = buf.subarray(at);
            return;
          }
          if (buf[at] !== 13 || buf[at + 1] !== 10) throw new Http1ProtocolError('chunk data not followed by CRLF');
          at += 2;
          this.state = State.ChunkSize;
          break;
        }
        case State.Trailers: {
          const end = buf.indexOf('\r\n', at, 'latin1');
          if (end < 0) {
            if (this.trailerBytes + buf.length - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('trailers too large', 431);
            this.pending = buf.subarray(at);
            return;
          }
          const line = buf.toString('latin1', at, end);
          this.trailerBytes += end - at + 2;
          if (this.trailerBytes > MAX_HEAD_BYTES) throw new Http1ProtocolError('trailers too large', 431);
          at = end + 2;
          if (line.length > 0) {
            this.trailerLines.push(line);
            break;
          }
          const trailers: Record<string, string | string[]> = {};
          parseFields(this.trailerLines, 0, trailers, null);
          this.trailerLines = [];
          this.state = State.Done;
          this.on.end(trailers);
          break;
        }
      }
    }
  }

  /** The peer closed its side. Throws when that cuts a message short. */
  finish(): void {
    if (this.state === State.UntilClose) {
      this.state = State.Done;
      this.on.end({});
      return;
    }
    if (this.state !== State.Done) throw new Http1ProtocolError(this.state === State.Head ? 'connection closed before a response' : 'connection closed in the middle of the body');
  }
}

export interface ResponseHead {
  status: number;
  /** HTTP/1.0 or 1.1 */
  minor: 0 | 1;
  /** lowercase names; repeated headers joined with ", " (set-cookie kept as a list) */
  headers: IncomingHttpHeaders;
  /** the connection cannot carry another request after this response */
  close: boolean;
}

/**
 * A client's parser: one response per `expect(method)` (a HEAD response has no body); 1xx
 * responses are skipped; bytes after a response are an error.
 */
export class ResponseParser extends MessageParser<ResponseHead> {
  private headOnly = false;

  /** A request was sent: the next bytes are its response. */
  expect(method: string): void {
    this.begin();
    this.headOnly = method === 'HEAD';
    this.pending = null;
  }

  protected afterMessage(): void {
    throw new Http1ProtocolError('bytes after the response');
  }

  protected parseHead(text: string): { head: ResponseHead; framing: BodyFraming } | null {
    const lines = text.split('\r\n');
    const status = lines[0]!;
    // HTTP/1.x SSS reason
    if (status.length < 12 || !status.startsWith('HTTP/1.') || status.charCodeAt(8) !== 32) throw new Http1ProtocolError(`invalid status line ${JSON.stringify(status.slice(0, 40))}`);
    const minorCh = status.charCodeAt(7);
    if (minorCh !== 48 && minorCh !== 49) throw new Http1ProtocolError('unsupported HTTP version');
    const code = status.slice(9, 12);
    if (!/^[1-9]\d\d$/.test(code) || (status.length > 12 && status.charCodeAt(12) !== 32)) throw new Http1ProtocolError(`invalid status line ${JSON.stringify(status.slice(0, 40))}`);
    const statusCode = Number(code);
    const headers: Record<string, string | string[]> = {};
    const lengths: string[] = [];
    parseFields(lines, 1, headers, lengths);
    if (statusCode < 200) {
      // 1xx: informational, the response proper follows (101 is only for upgrades, not sent through here)
      if (statusCode === 101) throw new Http1ProtocolError('unexpected 101 Switching Protocols');
      return null;
    }
    const minor = minorCh === 49 ? 1 : 0;
    const connection = typeof headers.connection === 'string' ? headers.connection.toLowerCase() : '';
    const head: ResponseHead = { status: statusCode, minor, headers: headers as IncomingHttpHeaders, close: minor === 0 ? !/\bkeep-alive\b/.test(connection) : /\bclose\b/.test(connection) };
    const te = headers['transfer-encoding'];
    if (te !== undefined && lengths.length > 0) throw new Http1ProtocolError('both transfer-encoding and content-length');
    const length = oneLength(lengths);
    if (length >= 0) headers['content-length'] = String(length);
    if (this.headOnly || statusCode === 204 || statusCode === 304) return { head, framing: { kind: 'none' } };
    if (te !== undefined && chunkedLast(te)) return { head, framing: { kind: 'chunked' } };
    if (te === undefined && length >= 0) return { head, framing: { kind: 'fixed', length } };
    head.close = true;
    return { head, framing: { kind: 'close' } };
  }
}

export interface RequestHead {
  method: string;
  /** the request-target as sent */
  target: string;
  minor: 0 | 1;
  /** lowercase names; repeated headers joined (", ", cookie "; "), set-cookie as a list */
  headers: IncomingHttpHeaders;
  /** the client wants the connection closed after the response */
  close: boolean;
  /** a body follows (content-length above 0, or chunked) */
  hasBody: boolean;
  /** Expect: 100-continue */
  expectContinue: boolean;
  /** an Upgrade request (Upgrade, with "upgrade" in Connection): after the head the bytes are not HTTP */
  upgrade: boolean;
}

/**
 * A server's parser: one request at a time. After a request ends, bytes of the next one are kept
 * until `next()` (a pipelined request waits for the response before it). Errors carry the status
 * to answer with (400, 431 for a head over the limit).
 */
export class RequestParser extends MessageParser<RequestHead> {
  constructor(on: ParserEvents<RequestHead>) {
    super(on);
    this.begin();
  }

  /** The response to the last request is done: parse what follows. */
  next(): void {
    this.begin();
    if (this.pending !== null && this.pending.length > 0) this.feed(Buffer.alloc(0));
  }

  protected afterMessage(): void {
    // kept in `pending` for next()
  }

  protected parseHead(text: string): { head: RequestHead; framing: BodyFraming } {
    const lines = text.split('\r\n');
    const line = lines[0]!;
    const sp1 = line.indexOf(' ');
    const sp2 = line.indexOf(' ', sp1 + 1);
    if (sp1 <= 0 || sp2 < 0 || line.indexOf(' ', sp2 + 1) >= 0) throw new Http1ProtocolError('invalid request line');
    const method = line.slice(0, sp1);
    const target = line.slice(sp1 + 1, sp2);
    const version = line.slice(sp2 + 1);
    if (!TOKEN.test(method)) throw new Http1ProtocolError('invalid method');
    if (target.length === 0 || BAD_PATH.test(target)) throw new Http1ProtocolError('invalid request target');
    if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') throw new Http1ProtocolError(version.startsWith('HTTP/') ? 'unsupported HTTP version' : 'invalid request line', version.startsWith('HTTP/') ? 505 : 400);
    const minor = version === 'HTTP/1.1' ? 1 : 0;
    const headers: Record<string, string | string[]> = {};
    const lengths: string[] = [];
    parseFields(lines, 1, headers, lengths);
    const host = headers.host;
    if (minor === 1 && host === undefined) throw new Http1ProtocolError('missing host header');
    if (typeof host === 'string' && host.includes(',')) throw new Http1ProtocolError('more than one host header');
    const te = headers['transfer-encoding'];
    if (te !== undefined && lengths.length > 0) throw new Http1ProtocolError('both transfer-encoding and content-length');
    if (te !== undefined && (minor === 0 || !chunkedLast(te))) throw new Http1ProtocolError('transfer-encoding without chunked last', minor === 0 ? 400 : 501);
    const length = oneLength(lengths);
    if (length >= 0) headers['content-length'] = String(length);
    const connection = typeof headers.connection === 'string' ? headers.connection.toLowerCase() : '';
    const upgrade = headers.upgrade !== undefined && /\bupgrade\b/.test(connection);
    const hasBody = te !== undefined || length > 0;
    const head: RequestHead = {
      method,
      target,
      minor,
      headers: headers as IncomingHttpHeaders,
      close: minor === 0 ? !/\bkeep-alive\b/.test(connection) : /\bclose\b/.test(connection),
      hasBody,
      expectContinue: minor === 1 && hasBody && String(headers.expect ?? '').toLowerCase() === '100-continue',
      upgrade,
    };
    if (upgrade) return { head, framing: { kind: 'upgrade' } };
    if (te !== undefined) return { head, framing: { kind: 'chunked' } };
    return { head, framing: length > 0 ? { kind: 'fixed', length } : { kind: 'none' } };
  }
}
