/**
 * The waypoint's HTTP/1.1 server side, on the connections the engine hands it (inbound HBONE
 * streams in the mesh): requests parsed by ./http1.ts, one at a time per connection (a pipelined
 * request waits for the response before it), responses written by hand. It replaces node's http
 * server, whose IncomingMessage, ServerResponse and their stream ticks cost more per request than
 * the routing.
 *
 * As node's server does by default: 100 Continue answered straight away, keep-alive for 60 s,
 * 60 s to receive a request head and 300 s for a whole request. Bad input gets its status and
 * the connection closed: 400 (malformed, smuggling-shaped framing), 431 (head over 64 KiB),
 * 501 (a transfer coding other than chunked), 505 (not HTTP/1.x), 408 (too slow).
 */

import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { HeaderMap } from '../shared/routing/filters.js';
import { grpcMessage, type Downstream } from './downstream.js';
import { Http1ProtocolError, lastChunk, RequestParser, responseHead, type RequestHead, type ResponseFraming } from './http1.js';
import type { UpstreamResponse } from './upstream.js';
import { corkHead, SEND_TIMEOUT_MS, writeBody } from './http1-body.js';
import { BodyStream } from './body-stream.js';

export const KEEP_ALIVE_MS = 60_000;
export const HEADERS_TIMEOUT_MS = 60_000;
export const REQUEST_TIMEOUT_MS = 300_000;
const SWEEP_MS = 5_000;

/** A request as the engine sees it: its head, and its body when it has one. */
export interface Http1Request extends RequestHead {
  /** null: no body */
  body: BodyStream | null;
}

export interface Http1Handlers<C> {
  request(req: Http1Request, down: Http1ServerDownstream, ctx: C): void;
  /** an Upgrade request: the connection is the handler's from now on; `head` is what followed the request head */
  upgrade(req: Http1Request, socket: Duplex, head: Buffer, ctx: C): void;
}

/** The request body: back-pressure pauses the connection. */
function requestBody(conn: ServerConnection<unknown>): BodyStream {
  return new BodyStream(() => conn.wantMore());
}

function ignore(): void {}

/** The response side of one request. */
export class Http1ServerDownstream implements Downstream {
  readonly protocol = 'HTTP/1.1' as const;
  started = false;
  aborted = false;
  bytesSent = 0;
  /** the response was written to its end */
  finished = false;
  private abortCbs: (() => void)[] | null = null;

  constructor(
    private readonly conn: ServerConnection<unknown>,
    private readonly req: RequestHead,
  ) {}

  onAbort(cb: () => void): void {
    if (this.aborted) cb();
    else (this.abortCbs ??= []).push(cb);
  }

  /** The client went away before the response ended. */
  abort(): void {
    if (this.finished || this.aborted) return;
    this.aborted = true;
    const cbs = this.abortCbs;
    this.abortCbs = null;
    if (cbs) for (const cb of cbs) cb();
  }

  /** `connection` for a response head: close after it, or the keep-alive an HTTP/1.0 client asked for. */
  private connectionHeader(framing: ResponseFraming): 'close' | 'keep-alive-1.0' | null {
    if (framing === 'close' || this.conn.closing || this.req.close) return 'close';
    return this.req.minor === 0 ? 'keep-alive-1.0' : null;
  }

  reply(status: number, headers: HeaderMap, body: string): void {
    if (this.started || this.conn.dead) return;
    this.started = true;
    const buf = Buffer.from(body);
    const h = { ...headers, 'content-length': String(buf.length) };
    const head = responseHead(status, h, 'length', this.connectionHeader('length'));
    const s = this.conn.socket;
    if (this.req.method === 'HEAD' || buf.length === 0) s.write(head, 'latin1');
    else {
      s.cork();
      s.write(head, 'latin1');
      s.write(buf);
      s.uncork();
      this.bytesSent += buf.length;
    }
    this.end();
  }

  replyGrpc(grpcStatus: number, message: string, headers: HeaderMap = {}): void {
    this.reply(200, { ...headers, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(message) }, '');
  }

  async relay(up: UpstreamResponse, headers: HeaderMap, headOnly: boolean): Promise<Record<string, string | string[]>> {
    if (this.started || this.conn.dead) throw new Error('the client connection is gone');
    this.started = true;
    const s = this.conn.socket;
    const noBody = headOnly || up.status === 204 || up.status === 304;
    // trailers can only follow a chunked body
    const trailing = up.headers.trailer !== undefined || (up.protocol === 'http2' && !up.endStream && headers['content-length'] === undefined);
    const framing: ResponseFraming = noBody ? 'none' : headers['content-length'] !== undefined && !Array.isArray(headers['content-length']) ? 'length' : this.req.minor === 1 ? 'chunked' : 'close';
    const head = responseHead(up.status, headers, framing, this.connectionHeader(framing));
    if (noBody) {
      up.body.resume();
      s.write(head, 'latin1');
      this.end();
      return {};
    }
    const chunked = framing === 'chunked';
    const uncork = corkHead(s, head);
    try {
      await new Promise<void>((resolve, reject) => {
        writeBody(s, up.body, chunked, {
          live: () => true,
          count: (n) => (this.bytesSent += n),
          flush: uncork,
          end: resolve,
          fail: (err) => reject(err.message === 'the body closed before its end' ? new Error('upstream closed the response before its end') : err),
          stallMs: this.conn.server.sendTimeoutMs,
        });
      });
    } catch (err) {
      uncork();
      throw err;
    }
    const trailers = up.trailers();
    if (chunked) s.write(lastChunk(trailing && Object.keys(trailers).length > 0 ? trailers : null), 'latin1');
    uncork();
    this.end(framing === 'close');
    return trailers;
  }

  reset(): void {
    this.finished = true;
    this.conn.destroy();
  }

  private end(close = false): void {
    this.finished = true;
    this.conn.responseDone(close);
  }
}

interface InFlight {
  /** destroyed when the response ended before it: the rest of the body is read and dropped */
  body: BodyStream | null;
  down: Http1ServerDownstream;
  bodyDone: boolean;
}

/** One client connection. */
class ServerConnection<C> {
  private readonly parser: RequestParser;
  private current: InFlight | null = null;
  dead = false;
  /** close once the response under way is written (the client asked, or it half-closed) */
  closing = false;
  private feeding = false;
  private nextPending = false;
  /** when the head being received began (0: not receiving one) */
  headSince = 0;
  /** when the request under way began */
  requestSince = 0;
  idleSince: number;

  constructor(
    readonly socket: Duplex,
    readonly server: Http1Server<C>,
    private readonly ctx: C,
  ) {
    this.idleSince = server.now();
    if (server.draining) this.closing = true;
    this.parser = new RequestParser({
      head: (h) => this.onHead(h),
      data: (c) => this.onData(c),
      end: () => this.onEnd(),
    });
    socket.on('data', this.onBytes);
    socket.on('end', this.onPeerEnd);
    socket.on('close', this.onClose);
    socket.on('error', ignore);
  }

  private readonly onBytes = (c: Buffer): void => {
    if (this.dead) return;
    if (this.current === null && this.headSince === 0) this.headSince = this.server.now();
    this.parse(() => this.parser.feed(c));
    // a pipelined client gets no further than one request ahead (its bytes wait in the parser)
    if (!this.dead && this.parser.done && this.parser.buffered > 0 && this.current !== null) this.socket.pause();
  };

  private badRequest(err: unknown): void {
    const status = err instanceof Http1ProtocolError ? err.status : 400;
    const cur = this.current;
    if (cur !== null && cur.down.started) {
      // a broken request body after the response began: nothing else can be said
      cur.body?.destroy(err as Error);
      this.destroy();
      return;
    }
    if (cur !== null) {
      cur.body?.destroy(err as Error);
      cur.down.abort();
    }
    this.current = null;
    this.dead = true;
    this.server.forget(this);
    const text = `${(err as Error).message}\n`;
    this.socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Bad Request'}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  }

  /** A request that took too long to arrive (408), or an idle keep-alive connection (closed). */
  expire(now: number): void {
    if (this.dead) return;
    if (this.current === null) {
      if (this.headSince > 0 && now - this.headSince > HEADERS_TIMEOUT_MS) this.badRequest(new Http1ProtocolError('request head not received in time', 408));
      else if (this.headSince === 0 && now - this.idleSince > KEEP_ALIVE_MS) this.close();
    } else if (!this.current.bodyDone && now - this.requestSince > REQUEST_TIMEOUT_MS) {
      if (this.current.down.started) this.destroy();
      else this.badRequest(new Http1ProtocolError('request not received in time', 408));
    }
  }

  private onHead(h: RequestHead): void {
    this.headSince = 0;
    this.requestSince = this.server.now();
    if (h.upgrade) {
      // the connection belongs to the upgrade now
      this.dead = true;
      this.server.forget(this);
      this.socket.off('data', this.onBytes);
      this.socket.off('end', this.onPeerEnd);
      this.socket.off('close', this.onClose);
      this.socket.pause();
      const rest = this.parser.takePending();
      this.server.handlers.upgrade({ ...h, body: null }, this.socket, rest, this.ctx);
      return;
    }
    const body = h.hasBody ? requestBody(this as ServerConnection<unknown>) : null;
    const down = new Http1ServerDownstream(this as ServerConnection<unknown>, h);
    const req: Http1Request = { ...h, body };
    this.current = { body, down, bodyDone: !h.hasBody };
    if (h.close || h.method === 'CONNECT') this.closing = true;
    if (h.expectContinue) this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    this.server.handlers.request(req, down, this.ctx);
  }

  private onData(c: Buffer): void {
    const cur = this.current;
    if (cur === null || cur.body === null || cur.body.destroyed) return;
    if (!cur.body.push(c)) this.socket.pause();
  }

  private onEnd(): void {
    const cur = this.current;
    if (cur === null) return;
    cur.bodyDone = true;
    if (cur.body !== null && !cur.body.destroyed) cur.body.push(null);
    if (cur.down.finished) this.afterExchange();
  }

  /** The body reader wants more. */
  wantMore(): void {
    if (!this.dead && this.socket.isPaused() && !(this.parser.done && this.parser.buffered > 0)) this.socket.resume();
  }

  /** The response was written to its end. `close`: its framing needs the connection closed. */
  responseDone(close: boolean): void {
    const cur = this.current;
    if (close) this.closing = true;
    if (cur === null) return;
    if (!cur.bodyDone) {
      // answered before the body arrived: read the rest and drop it, then carry on
      cur.body?.destroy();
      if (this.closing) {
        this.current = null;
        this.close();
        return;
      }
      if (this.socket.isPaused()) this.socket.resume();
      return;
    }
    this.afterExchange();
  }

  private afterExchange(): void {
    this.current = null;
    this.idleSince = this.server.now();
    if (this.closing) {
      this.close();
      return;
    }
    if (this.feeding) this.nextPending = true;
    else this.next();
  }

  private next(): void {
    if (this.dead) return;
    if (this.socket.isPaused()) this.socket.resume();
    if (this.parser.buffered > 0 && this.headSince === 0) this.headSince = this.server.now();
    this.parse(() => this.parser.next());
  }

  /** Runs the parser; a request finished meanwhile lets the next one be parsed after (never inside the parser). */
  private parse(step: () => void): void {
    this.feeding = true;
    try {
      step();
    } catch (err) {
      this.feeding = false;
      this.badRequest(err);
      return;
    }
    this.feeding = false;
    if (this.nextPending) {
      this.nextPending = false;
      this.next();
    }
  }

  /** The client half-closed: finish the response under way, then close. */
  private readonly onPeerEnd = (): void => {
    if (this.dead) return;
    const cur = this.current;
    if (cur !== null && !cur.bodyDone) {
      cur.body?.destroy(new Error('client closed the request before its end'));
      cur.down.abort();
      this.destroy();
      return;
    }
    this.closing = true;
    if (cur === null) this.close();
  };

  private readonly onClose = (): void => {
    if (this.current !== null) {
      const cur = this.current;
      this.current = null;
      if (!cur.bodyDone) cur.body?.destroy(new Error('client closed the request before its end'));
      cur.down.abort();
    }
    this.dead = true;
    this.server.forget(this);
  };

  /** Closes after the response under way (`connection: close`), or now if there is none. */
  drain(): void {
    if (this.dead) return;
    this.closing = true;
    if (this.current === null && this.headSince === 0) this.close();
  }

  /** Ends the connection after what was written. */
  close(): void {
    if (this.dead) return;
    this.dead = true;
    this.server.forget(this);
    this.socket.end();
  }

  destroy(): void {
    const cur = this.current;
    this.current = null;
    if (cur !== null) {
      if (!cur.bodyDone) cur.body?.destroy(new Error('connection closed'));
      cur.down.abort();
    }
    if (!this.dead) {
      this.dead = true;
      this.server.forget(this);
    }
    this.socket.destroy();
  }
}

/** The connections served: for timeouts and for closing them all. */
export class Http1Server<C> {
  private readonly conns = new Set<ServerConnection<C>>();
  private sweeper: NodeJS.Timeout | null = null;
  /** every response says `connection: close`, and the connection closes after it */
  draining = false;

  constructor(
    readonly handlers: Http1Handlers<C>,
    readonly now: () => number = Date.now,
    /** how long a response may wait for the client to read (SEND_TIMEOUT_MS) */
    readonly sendTimeoutMs: number = SEND_TIMEOUT_MS,
  ) {}

  /** Serves HTTP/1.1 on `socket`; `ctx` is handed to the handlers with every request. */
  serve(socket: Duplex, ctx: C): void {
    this.conns.add(new ServerConnection(socket, this, ctx));
    if (this.sweeper === null) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  /** Applies the timeouts (also called by tests with a clock of their own). */
  sweep(): void {
    const t = this.now();
    for (const c of [...this.conns]) c.expire(t);
    if (this.conns.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  forget(c: ServerConnection<C>): void {
    this.conns.delete(c);
  }

  get size(): number {
    return this.conns.size;
  }

  /** Shutting down: idle connections close now, the others after the response under way, new ones after their first. */
  drain(): void {
    this.draining = true;
    for (const c of [...this.conns]) c.drain();
  }

  /** Closes every connection. */
  closeAll(): void {
    for (const c of [...this.conns]) c.destroy();
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}
