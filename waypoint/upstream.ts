/**
 * Requests to endpoints over a transport the caller provides (`connect`: an HBONE stream in the
 * mesh, a TCP socket in tests). HTTP/1.1 connections are kept alive per endpoint by the
 * waypoint's own client (./http1-client.ts: one request at a time per connection, at most
 * `MAX_IDLE_PER_ENDPOINT` kept idle); HTTP/2 has one multiplexed session per endpoint (more when
 * `maxRequestsPerConnection` retires one). Failures come back classified for retries and outlier
 * detection: connect failure, reset, refused stream, and a timeout when an endpoint takes none
 * of the request body for the send timeout (nginx's `proxy_send_timeout`).
 */

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import http2, { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { pipeBody, type Body } from './body-stream.js';
import type { Endpoint } from './config.js';
import { Http1Endpoint } from './http1-client.js';
import { SEND_TIMEOUT_MS, UpstreamStalled } from './http1-body.js';

/** Opens the transport to an endpoint. */
export type Connector = (backend: Endpoint) => Promise<Duplex>;

/** 'timeout': the endpoint took none of the request body for the send timeout (UpstreamStalled) */
export type AttemptFailure = 'connect-failure' | 'reset' | 'refused-stream' | 'timeout';

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
  body: Body | null;
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
  body: Body;
  /** trailers, once the body ended (empty when none) */
  trailers(): Record<string, string | string[]>;
}

export interface PendingAttempt {
  response: Promise<UpstreamResponse>;
  /** cancels the request (before or after the response started) */
  abort(): void;
}

const DEFAULT_IDLE_MS = 60_000;
/**
 * Idle HTTP/1.1 connections kept per endpoint. After a burst (a stall upstream piles up requests,
 * each on its own connection) the ones beyond this are closed as they come back, instead of
 * lingering for the idle timeout.
 */
export const MAX_IDLE_PER_ENDPOINT = 32;
/** How often idle connections past their idle timeout are closed. */
const SWEEP_MS = 5_000;

function grpcStatusOf(h: IncomingHttpHeaders): number | null {
  const v = h['grpc-status'];
  if (v === undefined) return null;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) ? n : null;
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
  private readonly h1 = new Map<string, Http1Endpoint>();
  private readonly sessions = new Map<string, Promise<H2Connection>[]>();
  private closed = false;
  private sweeper: NodeJS.Timeout | null = null;

  constructor(
    private readonly connect: Connector,
    /** how long a request body may wait for an endpoint to take more of it */
    private readonly sendTimeoutMs: number = SEND_TIMEOUT_MS,
  ) {}

  /** Sends one request; the promise settles with the response headers or an AttemptError. */
  send(req: UpstreamRequest): PendingAttempt {
    return req.protocol === 'http2' ? this.sendH2(req) : this.sendH1(req);
  }

  private endpoint(e: Endpoint): Http1Endpoint {
    let p = this.h1.get(e.key);
    if (!p) {
      p = new Http1Endpoint(() => this.connect(e), MAX_IDLE_PER_ENDPOINT, Date.now, this.sendTimeoutMs);
      this.h1.set(e.key, p);
      if (this.sweeper === null) {
        this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
        this.sweeper.unref();
      }
    }
    return p;
  }

  /** Closes idle HTTP/1.1 connections past their timeout; forgets endpoints with none left. */
  private sweep(): void {
    for (const [k, p] of this.h1) {
      p.sweep();
      if (p.size === 0) this.h1.delete(k);
    }
    if (this.h1.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** HTTP/1.1 connections per endpoint key: open and idle (for the debug endpoint and tests). */
  http1Stats(): Record<string, { open: number; idle: number }> {
    const out: Record<string, { open: number; idle: number }> = {};
    for (const [k, p] of this.h1) out[k] = { open: p.size, idle: p.idleCount };
    return out;
  }

  private sendH1(r: UpstreamRequest): PendingAttempt {
    const ep = this.endpoint(r.endpoint);
    ep.limits = { maxRequestsPerConnection: r.maxRequestsPerConnection, idleTimeoutMs: r.idleTimeoutMs ?? DEFAULT_IDLE_MS };
    const pending = ep.request(r.method, r.path, r.authority, r.headers, r.body, (err) => new AttemptError('connect-failure', `connect: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
    const response = pending.response.then(
      (res): UpstreamResponse => ({
        protocol: 'http1',
        status: res.head.status,
        headers: res.head.headers,
        grpcStatus: grpcStatusOf(res.head.headers),
        endStream: false,
        body: res.body,
        trailers: res.trailers,
      }),
      (err: unknown) => {
        if (err instanceof AttemptError) throw err;
        const stalled = (err as Error | undefined)?.cause instanceof UpstreamStalled;
        throw new AttemptError(stalled ? 'timeout' : 'reset', (err as Error)?.message ?? String(err), { cause: err });
      },
    );
    response.catch(() => undefined);
    return { response, abort: pending.abort };
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
      let stalled: UpstreamStalled | null = null;
      if (r.body !== null) {
        r.body.once('error', () => s.close(h2c.NGHTTP2_CANCEL));
        pipeBody(r.body, s, {
          ms: this.sendTimeoutMs,
          onStall: () => {
            stalled = new UpstreamStalled(this.sendTimeoutMs);
            s.close(h2c.NGHTTP2_CANCEL);
          },
        });
      }
      return new Promise<UpstreamResponse>((resolve, reject) => {
        const fail = (err: Error): void => reject(stalled ? new AttemptError('timeout', stalled.message, { cause: stalled }) : h2Failure(s, err));
        const onError = (err: Error): void => fail(err);
        const onClose = (): void => fail(new Error(`stream closed before a response (RST_STREAM ${s.rstCode})`));
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
    for (const p of this.h1.values()) p.close();
    this.h1.clear();
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const list of this.sessions.values()) for (const p of list) void p.then((c) => c.session.destroy(), () => undefined);
    this.sessions.clear();
  }
}
