/**
 * Requests to endpoints over a transport the caller provides (`connect`: an HBONE stream in the
 * mesh, a TCP socket in tests). HTTP/1.1 connections are kept alive per endpoint through an
 * http.Agent that dials with `connect`; HTTP/2 has one multiplexed session per endpoint (more
 * when `maxRequestsPerConnection` retires one). Failures come back classified for retries and
 * outlier detection: connect failure, reset, refused stream.
 */

import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import http2, { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import type { Endpoint } from './config.js';

/** Opens the transport to an endpoint. */
export type Connector = (backend: Endpoint) => Promise<Duplex>;

export type AttemptFailure = 'connect-failure' | 'reset' | 'refused-stream';

/** A failed attempt, with what kind of failure it was. */
export class AttemptError extends Error {
  constructor(
    readonly kind: AttemptFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AttemptError';
  }
}

export interface UpstreamRequest {
  endpoint: Endpoint;
  protocol: 'http1' | 'http2';
  method: string;
  /** path and query */
  path: string;
  authority: string;
  scheme: string;
  /** lowercase, without pseudo-headers and hop-by-hop headers */
  headers: OutgoingHttpHeaders;
  /** null: no body */
  body: Readable | null;
  maxRequestsPerConnection: number | null;
  idleTimeoutMs: number | null;
}

export interface UpstreamResponse {
  protocol: 'http1' | 'http2';
  status: number;
  /** lowercase, without pseudo-headers */
  headers: IncomingHttpHeaders;
  /** grpc-status in the response headers (a trailers-only gRPC response), else null */
  grpcStatus: number | null;
  /** the response has no body and no trailers (HTTP/2 END_STREAM on the headers) */
  endStream: boolean;
  body: Readable;
  /** trailers, once the body ended (empty when none) */
  trailers(): Record<string, string | string[]>;
}

export interface PendingAttempt {
  response: Promise<UpstreamResponse>;
  /** cancels the request (before or after the response started) */
  abort(): void;
}

const DEFAULT_IDLE_MS = 60_000;

function grpcStatusOf(h: IncomingHttpHeaders): number | null {
  const v = h['grpc-status'];
  if (v === undefined) return null;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) ? n : null;
}

function ignoreError(): void {}

function returnThis<T>(this: T): T {
  return this;
}

/**
 * The server ended its side: the connection is done (a mesh stream stays half-open, so the agent
 * would keep it and send the next request into a closed connection).
 */
function endWhenServerEnded(this: Duplex): void {
  if (!this.writableEnded) this.end();
}

/** An http.Agent whose connections are made by the mesh transport. */
class EndpointAgent extends http.Agent {
  private readonly uses = new WeakMap<Duplex, number>();
  private readonly idle = new WeakMap<Duplex, NodeJS.Timeout>();
  maxRequestsPerConnection: number | null = null;
  idleTimeoutMs = DEFAULT_IDLE_MS;

  constructor(private readonly dial: () => Promise<Duplex>) {
    super({ keepAlive: true, maxSockets: Infinity });
  }

  override createConnection(_options: unknown, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    this.dial().then(
      (s) => {
        // Handlers that outlive this call must not close over it: a pooled connection lives on
        // for minutes, and `callback` holds the request that opened it (with its whole exchange).
        s.on('error', ignoreError); // reported through the request that uses it
        s.once('end', endWhenServerEnded);
        callback?.(null, s);
      },
      (err: unknown) => callback?.(new AttemptError('connect-failure', `connect: ${(err as Error)?.message ?? String(err)}`, { cause: err }), undefined as unknown as Duplex),
    );
    return undefined;
  }

  /** Counts a request on the connection. */
  used(s: Duplex): void {
    this.uses.set(s, (this.uses.get(s) ?? 0) + 1);
  }

  override keepSocketAlive(s: Duplex): boolean {
    if (this.maxRequestsPerConnection !== null && (this.uses.get(s) ?? 0) >= this.maxRequestsPerConnection) return false;
    const t = setTimeout(() => s.destroy(), this.idleTimeoutMs);
    t.unref();
    this.idle.set(s, t);
    return true;
  }

  override reuseSocket(s: Duplex, req: http.ClientRequest): void {
    const t = this.idle.get(s);
    if (t) clearTimeout(t);
    this.idle.delete(s);
    // The base class drops its idle-socket error listener here, then calls ref(), which mesh
    // streams do not have (it only undoes the unref of a pooled net.Socket).
    const sock = s as Duplex & { ref?: () => unknown };
    if (typeof sock.ref !== 'function') sock.ref = returnThis;
    super.reuseSocket(s, req);
  }
}

interface H2Connection {
  session: ClientHttp2Session;
  requests: number;
  active: number;
  retired: boolean;
  idle: NodeJS.Timeout | null;
}

/** Classifies an error of an HTTP/2 stream that failed before its response. */
function h2Failure(stream: ClientHttp2Stream | null, err: unknown): AttemptError {
  if (err instanceof AttemptError) return err;
  const code = stream?.rstCode;
  if (code === h2c.NGHTTP2_REFUSED_STREAM) return new AttemptError('refused-stream', 'upstream refused the stream', { cause: err });
  return new AttemptError('reset', `upstream reset: ${(err as Error)?.message ?? `RST_STREAM ${code ?? '?'}`}`, { cause: err });
}

export class UpstreamPool {
  private readonly agents = new Map<string, EndpointAgent>();
  private readonly sessions = new Map<string, Promise<H2Connection>[]>();
  private closed = false;

  constructor(private readonly connect: Connector) {}

  /** Sends one request; the promise settles with the response headers or an AttemptError. */
  send(req: UpstreamRequest): PendingAttempt {
    return req.protocol === 'http2' ? this.sendH2(req) : this.sendH1(req);
  }

  private agent(e: Endpoint): EndpointAgent {
    let a = this.agents.get(e.key);
    if (!a) {
      a = new EndpointAgent(() => this.connect(e));
      this.agents.set(e.key, a);
    }
    return a;
  }

  private sendH1(r: UpstreamRequest): PendingAttempt {
    const agent = this.agent(r.endpoint);
    agent.maxRequestsPerConnection = r.maxRequestsPerConnection;
    agent.idleTimeoutMs = r.idleTimeoutMs ?? DEFAULT_IDLE_MS;
    const req = http.request({ agent, method: r.method, path: r.path, headers: { ...r.headers, host: r.authority }, setHost: false, host: r.endpoint.ip, port: r.endpoint.port });
    req.on('socket', (s) => agent.used(s));
    const response = new Promise<UpstreamResponse>((resolve, reject) => {
      req.once('response', (res) => {
        resolve({
          protocol: 'http1',
          status: res.statusCode ?? 502,
          headers: res.headers,
          grpcStatus: grpcStatusOf(res.headers),
          endStream: false,
          body: res,
          trailers: () => res.trailers as Record<string, string>,
        });
      });
      req.once('error', (err) => reject(err instanceof AttemptError ? err : new AttemptError('reset', `upstream connection failed: ${err.message}`, { cause: err })));
    });
    response.catch(() => undefined);
    if (r.body === null) req.end();
    else {
      r.body.once('error', () => req.destroy(new AttemptError('reset', 'request body failed')));
      r.body.pipe(req);
    }
    return { response, abort: () => req.destroy() };
  }

  private openSession(r: UpstreamRequest): Promise<H2Connection> {
    const key = r.endpoint.key;
    const p = this.connect(r.endpoint).then(
      (transport) => {
        transport.on('error', () => undefined);
        const session = http2.connect(`http://${r.authority}`, { createConnection: () => transport });
        const c: H2Connection = { session, requests: 0, active: 0, retired: false, idle: null };
        const drop = (): void => {
          c.retired = true;
          const list = this.sessions.get(key);
          const i = list?.indexOf(p) ?? -1;
          if (list && i >= 0) list.splice(i, 1);
          if (c.idle) clearTimeout(c.idle);
        };
        session.on('error', drop);
        session.on('goaway', drop);
        session.on('close', drop);
        return c;
      },
      (err: unknown) => {
        const list = this.sessions.get(key);
        const i = list?.indexOf(p) ?? -1;
        if (list && i >= 0) list.splice(i, 1);
        throw new AttemptError('connect-failure', `connect: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      },
    );
    p.catch(() => undefined);
    let list = this.sessions.get(key);
    if (!list) this.sessions.set(key, (list = []));
    list.push(p);
    return p;
  }

  /** A session with room for one more request (open one when all are retired or full). */
  private async session(r: UpstreamRequest): Promise<H2Connection> {
    const list = this.sessions.get(r.endpoint.key) ?? [];
    for (const p of list) {
      const c = await p.catch(() => null);
      if (c === null || c.retired || c.session.destroyed || c.session.closed) continue;
      if (r.maxRequestsPerConnection !== null && c.requests >= r.maxRequestsPerConnection) continue;
      return c;
    }
    return this.openSession(r);
  }

  private sendH2(r: UpstreamRequest): PendingAttempt {
    let stream: ClientHttp2Stream | null = null;
    let aborted = false;
    const response = (async (): Promise<UpstreamResponse> => {
      const c = await this.session(r);
      if (aborted) throw new AttemptError('reset', 'cancelled');
      c.requests++;
      c.active++;
      if (c.idle) clearTimeout(c.idle);
      c.idle = null;
      if (r.maxRequestsPerConnection !== null && c.requests >= r.maxRequestsPerConnection) c.retired = true;
      const headers: OutgoingHttpHeaders = { ...r.headers, ':method': r.method, ':path': r.path, ':authority': r.authority, ':scheme': r.scheme };
      let s: ClientHttp2Stream;
      try {
        s = c.session.request(headers, { endStream: r.body === null });
      } catch (err) {
        c.active--;
        throw h2Failure(null, err);
      }
      stream = s;
      const done = (): void => {
        c.active--;
        if (c.active === 0) {
          if (c.retired) c.session.close();
          else {
            c.idle = setTimeout(() => c.session.close(), r.idleTimeoutMs ?? DEFAULT_IDLE_MS);
            c.idle.unref();
          }
        }
      };
      s.once('close', done);
      let trailers: Record<string, string | string[]> = {};
      s.on('trailers', (t) => {
        trailers = { ...t } as Record<string, string | string[]>;
      });
      if (r.body !== null) {
        r.body.once('error', () => s.close(h2c.NGHTTP2_CANCEL));
        r.body.pipe(s);
      }
      return new Promise<UpstreamResponse>((resolve, reject) => {
        const onError = (err: Error): void => reject(h2Failure(s, err));
        const onClose = (): void => reject(h2Failure(s, new Error(`stream closed before a response (RST_STREAM ${s.rstCode})`)));
        s.once('error', onError);
        s.once('close', onClose);
        s.once('response', (h, flags) => {
          s.off('error', onError);
          s.off('close', onClose);
          s.on('error', () => undefined);
          const out: IncomingHttpHeaders = {};
          for (const [k, v] of Object.entries(h)) if (!k.startsWith(':')) out[k] = v as string;
          resolve({
            protocol: 'http2',
            status: Number(h[':status'] ?? 502),
            headers: out,
            grpcStatus: grpcStatusOf(out),
            endStream: (flags & h2c.NGHTTP2_FLAG_END_STREAM) !== 0,
            body: s,
            trailers: () => trailers,
          });
        });
      });
    })();
    response.catch(() => undefined);
    return {
      response,
      abort: () => {
        aborted = true;
        const s = stream as ClientHttp2Stream | null;
        if (s && !s.destroyed) s.close(h2c.NGHTTP2_CANCEL);
      },
    };
  }

  /** A raw transport to an endpoint (for upgraded requests, which are not pooled). */
  connectRaw(e: Endpoint): Promise<Duplex> {
    return this.connect(e);
  }

  /** Closes every pooled connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
    for (const list of this.sessions.values()) for (const p of list) void p.then((c) => c.session.destroy(), () => undefined);
    this.sessions.clear();
  }
}
