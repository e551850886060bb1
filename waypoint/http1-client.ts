/**
 * The waypoint's HTTP/1.1 client on the request path: the connections to one endpoint
 * (`Http1Endpoint`), over transports the caller opens (HBONE streams in the mesh). It replaces
 * node's http.Agent and ClientRequest, which cost a ClientRequest, an IncomingMessage, an agent
 * lookup and a dozen stream ticks per request.
 *
 * One request at a time per connection, reused most-recent-first, at most `maxIdle` kept idle
 * (the rest are closed when they come back), idle ones closed after `idleTimeoutMs`, a connection
 * retired after `maxRequestsPerConnection`. Heads and parsing: ./http1.ts.
 */

import type { Duplex } from 'node:stream';
import { BodyStream, type Body } from './body-stream.js';
import { lastChunk, requestHead, ResponseParser, type RequestFraming, type ResponseHead } from './http1.js';
import { corkHead, SEND_TIMEOUT_MS, UpstreamStalled, writeBody } from './http1-body.js';

/** The response body: back-pressure pauses the connection. */
class ResponseBody extends BodyStream {
  trailers: Record<string, string | string[]> = {};
}

export interface Http1Response {
  head: ResponseHead;
  body: BodyStream;
  trailers(): Record<string, string | string[]>;
}

/** What went wrong with one request, for the caller to classify. */
export class Http1RequestError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
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
  source: Body | null;
}

function ignore(): void {}

function upstreamStalled(ms: number): Error {
  return new UpstreamStalled(ms);
}

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

  send(method: string, head: string, framing: RequestFraming, body: Body | null): { response: Promise<Http1Response>; exchange: Exchange } {
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
      const uncork = corkHead(s, head);
      writeBody(s, body, framing === 'chunked', {
        live: () => this.current === x && !this.dead,
        flush: uncork,
        end: () => {
          if (framing === 'chunked') s.write(lastChunk(null), 'latin1');
          uncork();
          x.requestDone = true;
          this.maybeDone(x);
        },
        fail: (err) => {
          if (this.current === x && !x.requestDone) this.fail(new Http1RequestError(`request body failed: ${err.message}`, { cause: err }));
        },
        stallMs: this.owner.sendTimeoutMs,
        stalled: upstreamStalled,
      });
    });
    return { response, exchange: x };
  }

  /**
   * Cancels a request: while it is under way the connection is closed; once it is over (the
   * connection may already serve another request) only its unread response body is dropped.
   */
  abort(x: Exchange): void {
    if (this.current === x) this.fail(new Http1RequestError('cancelled'));
    else if (x.body !== null && !x.body.destroyed) x.body.destroy();
  }

  private onBytes(c: Buffer): void {
    if (this.dead) return;
    try {
      this.parser.feed(c);
    } catch (err) {
      this.fail(new Http1RequestError(`upstream sent an invalid response: ${(err as Error).message}`, { cause: err }));
    }
  }

  private onHead(h: ResponseHead): void {
    const x = this.current;
    if (x === null) return;
    x.responded = true;
    x.close = h.close;
    // once the response is over the connection may carry another one: only this response resumes it
    const body = new ResponseBody(() => {
      if (this.current === x && this.stream.isPaused()) this.stream.resume();
    });
    x.body = body;
    // the consumer gave up on the body: the rest of it would come down this connection
    body.once('close', () => {
      if (!x.responseDone && this.current === x) this.fail(new Http1RequestError('response abandoned'));
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
      this.fail(new Http1RequestError(`upstream connection failed: ${why}`, { cause: err ?? undefined }));
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
      this.fail(new Http1RequestError('connection closed'));
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
    /** how long a request body may wait for the endpoint to take more of it (UpstreamStalled) */
    readonly sendTimeoutMs: number = SEND_TIMEOUT_MS,
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
  request(method: string, path: string, authority: string, headers: Readonly<Record<string, string | string[] | number | undefined>>, body: Body | null, onConnectError: (err: unknown) => Error): Http1Pending {
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
          throw new Http1RequestError('cancelled');
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
