/**
 * The waypoint's HTTP/1.1 client: request heads written by hand and responses parsed here, over
 * transports the caller opens (HBONE streams in the mesh). It replaces node's http.Agent and
 * ClientRequest on the request path, which cost a ClientRequest, an IncomingMessage, an agent
 * lookup and a dozen stream ticks per request.
 *
 * - `requestHead` and `ResponseParser` are pure: bytes in, decisions out (unit-tested alone).
 * - `Http1Endpoint` keeps the connections to one endpoint: one request at a time per connection,
 *   reused most-recent-first, at most `maxIdle` kept idle (the rest are closed when they come
 *   back), idle ones closed after `idleTimeoutMs`, a connection retired after
 *   `maxRequestsPerConnection`.
 *
 * Strict where a proxy must be (RFC 9112): a response with both Transfer-Encoding and
 * Content-Length, conflicting Content-Lengths, whitespace before a header's colon, a bad chunk
 * size or a head over `MAX_HEAD_BYTES` is an error, never a guess.
 */

import { Readable, type Duplex } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';

/** Response head (status line and headers) and trailer section limit. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** A chunk-size line longer than this (extensions included) is an error. */
const MAX_CHUNK_LINE = 4096;

export class Http1ProtocolError extends Error {
  constructor(message: string) {
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

/** Headers the client adds itself (framing and the connection's own). */
const OWN_HEADERS = new Set(['host', 'connection', 'transfer-encoding', 'keep-alive']);

export type RequestFraming = 'none' | 'length' | 'chunked';

/**
 * The request line and headers. `headers` are lowercase and without hop-by-hop headers (the
 * engine's rule); a body without content-length is sent chunked. Throws on a method, path,
 * header name or value that would break the message (CR/LF injection).
 */
export function requestHead(method: string, path: string, authority: string, headers: Readonly<Record<string, string | string[] | number | undefined>>, hasBody: boolean): { head: string; framing: RequestFraming } {
  if (!TOKEN.test(method)) throw new Http1ProtocolError(`invalid method ${JSON.stringify(method)}`);
  if (path.length === 0 || BAD_PATH.test(path)) throw new Http1ProtocolError(`invalid request path ${JSON.stringify(path)}`);
  if (BAD_VALUE.test(authority)) throw new Http1ProtocolError('invalid host');
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n`;
  let length = false;
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || OWN_HEADERS.has(k)) continue;
    if (!TOKEN.test(k)) throw new Http1ProtocolError(`invalid header name ${JSON.stringify(k)}`);
    if (k === 'content-length') {
      // without a body only "0" is true (some servers want it on a bodiless POST)
      if (!hasBody && String(v) !== '0') continue;
      length = hasBody;
    }
    if (Array.isArray(v)) {
      for (const one of v) {
        if (BAD_VALUE.test(one)) throw new Http1ProtocolError(`invalid value for header ${k}`);
        head += `${k}: ${one}\r\n`;
      }
    } else {
      const s = typeof v === 'number' ? String(v) : v;
      if (BAD_VALUE.test(s)) throw new Http1ProtocolError(`invalid value for header ${k}`);
      head += `${k}: ${s}\r\n`;
    }
  }
  const framing: RequestFraming = !hasBody ? 'none' : length ? 'length' : 'chunked';
  if (framing === 'chunked') head += 'transfer-encoding: chunked\r\n';
  return { head: `${head}\r\n`, framing };
}

/** The framing of one chunk of a chunked body. */
export function chunkHeader(n: number): string {
  return `${n.toString(16)}\r\n`;
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

export interface ParserEvents {
  head(h: ResponseHead): void;
  /** a piece of the body (a view into the parsed buffer: copy it to keep it past the call) */
  data(chunk: Buffer): void;
  /** the response ended; trailers are empty without a chunked trailer section */
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

/** Adds one header to a map the way node's IncomingMessage does for a proxy: joined, set-cookie as a list. */
function addHeader(map: Record<string, string | string[]>, name: string, value: string): void {
  const prev = map[name];
  if (prev === undefined) map[name] = name === 'set-cookie' ? [value] : value;
  else if (Array.isArray(prev)) prev.push(value);
  else map[name] = `${prev}, ${value}`;
}

/** Splits a header section (lines without the final empty line) into a map; throws on malformed lines. */
function parseFields(lines: string[], from: number, map: Record<string, string | string[]>, lengths: string[] | null): void {
  let last: string | null = null;
  for (let i = from; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.length === 0) continue;
    const c0 = line.charCodeAt(0);
    if (c0 === 32 || c0 === 9) {
      // obs-fold: a response's folded value is joined with a space (RFC 9112 §5.2)
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

/**
 * An incremental HTTP/1.1 response parser for one connection. `expect(method)` is called before
 * each response (a HEAD response has no body); `feed` takes bytes as they arrive and calls the
 * events; `finish` says the server closed (ends an until-close body, else an error when a
 * response was under way). Errors are thrown as Http1ProtocolError; the parser is then unusable.
 */
export class ResponseParser {
  private state = State.Done;
  private pending: Buffer | null = null;
  private remaining = 0;
  private headOnly = false;
  private head: ResponseHead | null = null;
  private trailerLines: string[] = [];
  private trailerBytes = 0;

  constructor(private readonly on: ParserEvents) {}

  /** A request was sent: the next bytes are its response. */
  expect(method: string): void {
    if (this.state !== State.Done) throw new Error('a response is still under way');
    this.state = State.Head;
    this.headOnly = method === 'HEAD';
    this.head = null;
    this.pending = null;
  }

  /** Between responses (nothing expected, nothing half-read). */
  get idle(): boolean {
    return this.state === State.Done && this.pending === null;
  }

  /** The response head arrived and its body is still being read. */
  get inBody(): boolean {
    return this.state !== State.Head && this.state !== State.Done;
  }

  feed(input: Buffer): void {
    let buf = this.pending === null ? input : Buffer.concat([this.pending, input]);
    this.pending = null;
    let at = 0;
    while (at < buf.length) {
      switch (this.state) {
        case State.Done:
          throw new Http1ProtocolError('bytes after the response');
        case State.Head: {
          const end = buf.indexOf('\r\n\r\n', at, 'latin1');
          if (end < 0) {
            if (buf.length - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('response head too large');
            this.pending = buf.subarray(at);
            return;
          }
          if (end - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('response head too large');
          const text = buf.toString('latin1', at, end);
          at = end + 4;
          this.onHead(text);
          break;
        }
        case State.Fixed: {
          const n = Math.min(this.remaining, buf.length - at);
          this.remaining -= n;
          const chunk = buf.subarray(at, at + n);
          at += n;
          this.on.data(chunk);
          if (this.remaining === 0) this.complete({});
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
            if (this.trailerBytes + buf.length - at > MAX_HEAD_BYTES) throw new Http1ProtocolError('trailers too large');
            this.pending = buf.subarray(at);
            return;
          }
          const line = buf.toString('latin1', at, end);
          this.trailerBytes += end - at + 2;
          if (this.trailerBytes > MAX_HEAD_BYTES) throw new Http1ProtocolError('trailers too large');
          at = end + 2;
          if (line.length > 0) {
            this.trailerLines.push(line);
            break;
          }
          const trailers: Record<string, string | string[]> = {};
          parseFields(this.trailerLines, 0, trailers, null);
          this.trailerLines = [];
          this.complete(trailers);
          break;
        }
      }
    }
  }

  /** The server closed its side. Throws when that cuts a response short. */
  finish(): void {
    if (this.state === State.UntilClose) {
      this.complete({});
      return;
    }
    if (this.state !== State.Done) throw new Http1ProtocolError(this.state === State.Head ? 'connection closed before a response' : 'connection closed in the middle of the response body');
  }

  private complete(trailers: Record<string, string | string[]>): void {
    this.state = State.Done;
    this.on.end(trailers);
  }

  private onHead(text: string): void {
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
      this.state = State.Head;
      return;
    }
    const minor = minorCh === 49 ? 1 : 0;
    const connection = typeof headers.connection === 'string' ? headers.connection.toLowerCase() : '';
    let close = minor === 0 ? !/\bkeep-alive\b/.test(connection) : /\bclose\b/.test(connection);
    const te = headers['transfer-encoding'];
    if (te !== undefined && lengths.length > 0) throw new Http1ProtocolError('both transfer-encoding and content-length');
    let length = -1;
    if (lengths.length > 0) {
      const first = lengths[0]!;
      if (!/^\d{1,15}$/.test(first) || lengths.some((l) => l !== first)) throw new Http1ProtocolError('invalid content-length');
      length = Number(first);
      headers['content-length'] = first;
    }
    const head: ResponseHead = { status: statusCode, minor, headers: headers as IncomingHttpHeaders, close };
    this.head = head;
    if (this.headOnly || statusCode === 204 || statusCode === 304) {
      this.on.head(head);
      this.complete({});
      return;
    }
    if (te !== undefined) {
      const codings = String(te).toLowerCase().split(',');
      if (codings[codings.length - 1]!.trim() === 'chunked') this.state = State.ChunkSize;
      else {
        this.state = State.UntilClose;
        close = head.close = true;
      }
    } else if (length >= 0) {
      this.remaining = length;
      this.state = State.Fixed;
    } else {
      this.state = State.UntilClose;
      close = head.close = true;
    }
    this.on.head(head);
    if (this.state === State.Fixed && this.remaining === 0) this.complete({});
  }
}

/** The response body as a stream: back-pressure pauses the connection. */
class ResponseBody extends Readable {
  trailers: Record<string, string | string[]> = {};

  constructor(private readonly conn: Duplex) {
    super();
  }

  override _read(): void {
    if (this.conn.isPaused()) this.conn.resume();
  }
}

export interface Http1Response {
  head: ResponseHead;
  body: Readable;
  trailers(): Record<string, string | string[]>;
}

/** What went wrong with one request, for the caller to classify. */
export class Http1RequestError extends Error {
  constructor(
    message: string,
    /** the request may not have reached the server (an idle connection the server had closed) */
    readonly beforeResponse: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'Http1RequestError';
  }
}

interface Exchange {
  resolve(r: Http1Response): void;
  reject(err: Error): void;
  body: ResponseBody | null;
  responded: boolean;
  requestDone: boolean;
  responseDone: boolean;
  close: boolean;
  source: Readable | null;
}

function ignore(): void {}

/** One connection to an endpoint, carrying one request at a time. */
class Connection {
  readonly parser: ResponseParser;
  requests = 0;
  idleSince = 0;
  dead = false;
  private current: Exchange | null = null;

  constructor(
    readonly stream: Duplex,
    private readonly owner: Http1Endpoint,
  ) {
    this.parser = new ResponseParser({
      head: (h) => this.onHead(h),
      data: (c) => this.onData(c),
      end: (t) => this.onEnd(t),
    });
    stream.on('data', (c: Buffer) => this.onBytes(c));
    stream.on('end', () => this.onClosed(null));
    stream.on('close', () => this.onClosed(null));
    stream.on('error', (err: Error) => this.onClosed(err));
  }

  send(method: string, head: string, framing: RequestFraming, body: Readable | null): { response: Promise<Http1Response>; exchange: Exchange } {
    this.requests++;
    this.parser.expect(method);
    let x!: Exchange;
    const response = new Promise<Http1Response>((resolve, reject) => {
      x = { resolve, reject, body: null, responded: false, requestDone: body === null, responseDone: false, close: false, source: body };
      this.current = x;
      const s = this.stream;
      if (body === null) {
        s.write(head, 'latin1');
        return;
      }
      // the head goes out with the first piece of the body (and the whole body when it is already here)
      s.cork();
      s.write(head, 'latin1');
      let corked = true;
      const uncork = (): void => {
        if (corked) {
          corked = false;
          s.uncork();
        }
      };
      setImmediate(uncork);
      const chunked = framing === 'chunked';
      const onDrain = (): void => {
        body.resume();
      };
      body.on('data', (c: Buffer) => {
        if (this.current !== x || this.dead) return;
        if (chunked) {
          if (c.length === 0) return;
          s.write(chunkHeader(c.length), 'latin1');
          s.write(c);
          s.write('\r\n', 'latin1');
        } else s.write(c);
        if (s.writableNeedDrain) {
          uncork();
          body.pause();
          s.once('drain', onDrain);
        }
      });
      body.once('end', () => {
        s.off('drain', onDrain);
        if (this.current !== x || this.dead) return;
        if (chunked) s.write('0\r\n\r\n', 'latin1');
        uncork();
        x.requestDone = true;
        this.maybeDone(x);
      });
      body.once('error', (err: Error) => {
        s.off('drain', onDrain);
        if (this.current === x) this.fail(new Http1RequestError(`request body failed: ${err.message}`, false, { cause: err }));
      });
    });
    return { response, exchange: x };
  }

  /**
   * Cancels a request: while it is under way the connection is closed; once it is over (the
   * connection may already serve another request) only its unread response body is dropped.
   */
  abort(x: Exchange): void {
    if (this.current === x) this.fail(new Http1RequestError('cancelled', false));
    else if (x.body !== null && !x.body.destroyed) x.body.destroy();
  }

  private onBytes(c: Buffer): void {
    if (this.dead) return;
    try {
      this.parser.feed(c);
    } catch (err) {
      this.fail(new Http1RequestError(`upstream sent an invalid response: ${(err as Error).message}`, false, { cause: err }));
    }
  }

  private onHead(h: ResponseHead): void {
    const x = this.current;
    if (x === null) return;
    x.responded = true;
    x.close = h.close;
    const body = new ResponseBody(this.stream);
    x.body = body;
    // the consumer gave up on the body: the rest of it would come down this connection
    body.once('close', () => {
      if (!x.responseDone && this.current === x) this.fail(new Http1RequestError('response abandoned', false));
    });
    x.resolve({ head: h, body, trailers: () => body.trailers });
  }

  private onData(c: Buffer): void {
    const b = this.current?.body;
    if (!b || b.destroyed) return;
    if (!b.push(c)) this.stream.pause();
  }

  private onEnd(trailers: Record<string, string | string[]>): void {
    const x = this.current;
    if (x === null) return;
    x.responseDone = true;
    const b = x.body;
    if (b !== null) {
      b.trailers = trailers;
      b.push(null);
    }
    this.maybeDone(x);
  }

  /** Both directions of the exchange are over: back to the pool, or closed. */
  private maybeDone(x: Exchange): void {
    if (!x.responseDone) return;
    if (!x.requestDone) {
      // answered before the whole request was sent (an early error response): the rest of the
      // request body cannot be told apart from a next request, so this connection is done
      this.current = null;
      x.source?.destroy();
      this.destroy();
      return;
    }
    this.current = null;
    if (x.close) this.destroy();
    else this.owner.release(this);
  }

  private onClosed(err: Error | null): void {
    if (this.dead) return;
    const x = this.current;
    if (x !== null && !x.responseDone) {
      try {
        this.parser.finish();
        // an until-close body ended properly: onEnd ran
        if (x.responseDone) {
          this.destroy();
          return;
        }
      } catch {
        // cut short: reported below
      }
      const why = err ? err.message : x.responded ? 'connection closed in the middle of the response body' : 'connection closed before a response';
      this.fail(new Http1RequestError(`upstream connection failed: ${why}`, !x.responded, { cause: err ?? undefined }));
      return;
    }
    this.destroy();
  }

  private fail(err: Http1RequestError): void {
    const x = this.current;
    this.current = null;
    if (x !== null) {
      // a later attempt reads the body again from its own reader
      if (x.source !== null && !x.requestDone) x.source.destroy();
      if (!x.responded) x.reject(err);
      else if (x.body !== null && !x.responseDone) x.body.destroy(err);
    }
    this.destroy();
  }

  destroy(): void {
    if (this.dead) return;
    if (this.current !== null) {
      this.fail(new Http1RequestError('connection closed', !this.current.responded));
      return;
    }
    this.dead = true;
    this.owner.forget(this);
    this.stream.on('error', ignore);
    this.stream.destroy();
  }
}

export interface Http1Limits {
  maxRequestsPerConnection: number | null;
  idleTimeoutMs: number;
}

/** A pending request on an endpoint. */
export interface Http1Pending {
  response: Promise<Http1Response>;
  abort(): void;
}

/**
 * The connections to one endpoint. Requests take the most recently used idle connection, or dial
 * a new one; a connection comes back when its exchange is over in both directions.
 */
export class Http1Endpoint {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private closed = false;
  limits: Http1Limits = { maxRequestsPerConnection: null, idleTimeoutMs: 60_000 };

  constructor(
    private readonly dial: () => Promise<Duplex>,
    private readonly maxIdle: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Connections open (idle or in use). */
  get size(): number {
    return this.all.size;
  }

  get idleCount(): number {
    return this.idle.length;
  }

  /** Takes an idle connection that is still good, or null. */
  private take(): Connection | null {
    const t = this.now();
    for (;;) {
      const c = this.idle.pop();
      if (c === undefined) return null;
      if (c.dead || c.stream.destroyed || c.stream.readableEnded || c.stream.writableEnded) {
        c.destroy();
        continue;
      }
      if (t - c.idleSince > this.limits.idleTimeoutMs) {
        c.destroy();
        continue;
      }
      return c;
    }
  }

  /**
   * Sends one request. Errors: Http1ProtocolError (the request cannot be written),
   * Http1RequestError (the connection failed), or the dial's error (connect failure, wrapped by
   * the caller's `onConnectError`).
   */
  request(method: string, path: string, authority: string, headers: Readonly<Record<string, string | string[] | number | undefined>>, body: Readable | null, onConnectError: (err: unknown) => Error): Http1Pending {
    let conn: Connection | null = null;
    let exchange: Exchange | null = null;
    let aborted = false;
    const run = async (): Promise<Http1Response> => {
      const { head, framing } = requestHead(method, path, authority, headers, body !== null);
      let c = this.take();
      if (c === null) {
        let stream: Duplex;
        try {
          stream = await this.dial();
        } catch (err) {
          throw onConnectError(err);
        }
        c = new Connection(stream, this);
        this.all.add(c);
        if (this.closed || aborted) {
          c.destroy();
          throw new Http1RequestError('cancelled', true);
        }
      }
      conn = c;
      const sent = c.send(method, head, framing, body);
      exchange = sent.exchange;
      return sent.response;
    };
    const response = run();
    response.catch(ignore);
    return {
      response,
      abort: () => {
        aborted = true;
        if (conn !== null && exchange !== null) conn.abort(exchange);
      },
    };
  }

  /** A connection whose exchange is over, in both directions. */
  release(c: Connection): void {
    const max = this.limits.maxRequestsPerConnection;
    if (this.closed || (max !== null && c.requests >= max) || this.idle.length >= this.maxIdle || !c.parser.idle) {
      c.destroy();
      return;
    }
    c.idleSince = this.now();
    // flowing again if the last body's back-pressure paused it (an idle connection must see the server close)
    if (c.stream.isPaused()) c.stream.resume();
    this.idle.push(c);
  }

  forget(c: Connection): void {
    this.all.delete(c);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** Closes idle connections older than the idle timeout. */
  sweep(): void {
    const t = this.now();
    for (const c of [...this.idle]) if (t - c.idleSince > this.limits.idleTimeoutMs) c.destroy();
  }

  /** Closes every connection (those in use fail their request). */
  close(): void {
    this.closed = true;
    for (const c of [...this.all]) c.destroy();
  }
}
