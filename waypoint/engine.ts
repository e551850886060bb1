/**
 * The waypoint's L7 engine: takes HTTP/1.1, HTTP/2 (prior knowledge) and gRPC requests, runs them
 * through the stages of stages.ts and sends them to endpoints over the transport it is given.
 *
 * Transport-agnostic on both sides. In the mesh, each inbound HBONE CONNECT stream is handed to
 * `serveConnection(stream, ctx)` (which tells HTTP/2 from HTTP/1.1 by the preface), and `connect`
 * opens an HBONE stream to an endpoint. In tests both are plain TCP sockets.
 */

import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import http2, { constants as h2c, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { L7PolicyIndex } from '../shared/policy/l7.js';
import { createBalancer } from '../shared/routing/balancer.js';
import type { HeaderMap } from '../shared/routing/filters.js';
import { RequestLimiter } from '../shared/routing/limits.js';
import { normalizePath, RegexCache } from '../shared/routing/match.js';
import { OutlierTracker, type Ejection } from '../shared/routing/outlier.js';
import { AccessLogWriter } from './access-log.js';
import { ReplayableBody } from './body.js';
import { ServiceDirectory, type Destination, type WaypointConfig } from './config.js';
import { forwardableHeaders, grpcMessage, Http2Downstream, type Downstream } from './downstream.js';
import { SEND_TIMEOUT_MS } from './http1-body.js';
import { Http1Server, KEEP_ALIVE_MS, type Http1Request, type Http1ServerDownstream } from './http1-server.js';
import { flagsText, type Exchange, type RequestContext } from './exchange.js';
import { WaypointMetrics, workloadText } from './metrics.js';
import { authorize, chooseEndpoint, compose, localReply, matchRoute, REQUEST_STAGES, requireRoute, injectFault, respondLocally, splitTraffic, type DestinationState, type Stage, type StageEnv } from './stages.js';
import { UpstreamPool, type Connector } from './upstream.js';
import { WaypointTracer } from './tracing.js';
import type { SpanSink } from '../shared/telemetry/span-exporter.js';

export type { RequestContext } from './exchange.js';
export type { WaypointConfig } from './config.js';

/** What the engine needs from its surroundings. */
export interface WaypointDeps {
  /** opens the transport to an endpoint ({ip, port} plus the workload and its identity) */
  connect: Connector;
  /** milliseconds; for outlier detection and durations */
  now: () => number;
  /** in [0, 1); for splits, faults, balancing, back-off jitter */
  random: () => number;
  log: Logger;
  metrics: Registry;
  /** where spans go (a SpanExporter for `--tracing-endpoint`); absent: no spans, trace headers passed on untouched */
  spans?: SpanSink;
}

export interface WaypointOptions {
  /** request body bytes kept for retries and mirrors (Envoy's per-request buffer limit); default 1 MiB */
  maxReplayBytes?: number;
  /** an HTTP/2 connection without streams for this long is closed (default 60 s, as HTTP/1.1 keep-alive) */
  h2IdleMs?: number;
  /** concurrent streams per client HTTP/2 connection (default H2_MAX_STREAMS) */
  h2MaxStreams?: number;
  /**
   * how long a response may wait for the client to take more of it, and a request body for the
   * endpoint to take more of it (default SEND_TIMEOUT_MS, 60 s: nginx's send_timeout and
   * proxy_send_timeout)
   */
  sendTimeoutMs?: number;
  /** with `deps.spans`: percentage of requests traced when the client did not decide (default 100) */
  tracingSamplePercent?: number;
}

/** Destination state with what it was built from, so config updates can refresh it. */
interface TrackedState extends DestinationState {
  stale: boolean;
  lb: string;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** Concurrent streams per client HTTP/2 connection. */
export const H2_MAX_STREAMS = 1000;

function headerText(v: string | string[] | undefined): string {
  return v === undefined ? '' : Array.isArray(v) ? v.join(',') : v;
}

/** A Downstream for an upgraded (WebSocket) HTTP/1.1 request: local replies are written raw. */
class UpgradeDownstream implements Downstream {
  readonly protocol = 'HTTP/1.1' as const;
  started = false;
  aborted = false;
  bytesSent = 0;
  private cbs: (() => void)[] = [];

  constructor(private readonly socket: Duplex) {
    socket.once('close', () => {
      if (this.started) return;
      this.aborted = true;
      for (const cb of this.cbs.splice(0)) cb();
    });
  }

  reply(status: number, headers: HeaderMap, body: string): void {
    if (this.started) return;
    this.started = true;
    const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`, `content-length: ${Buffer.byteLength(body)}`, 'connection: close'];
    for (const [k, v] of Object.entries(headers)) if (v !== undefined) lines.push(`${k}: ${headerText(v)}`);
    this.bytesSent += Buffer.byteLength(body);
    this.socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  }

  replyGrpc(grpcStatus: number, message: string): void {
    this.reply(200, { 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(message) }, '');
  }

  relay(): Promise<Record<string, string | string[]>> {
    return Promise.reject(new Error('upgraded requests are tunnelled, not relayed'));
  }

  reset(): void {
    this.started = true;
    this.socket.destroy();
  }

  onAbort(cb: () => void): void {
    if (this.aborted) cb();
    else this.cbs.push(cb);
  }
}

/**
 * Whether a stream's request arrived whole (END_STREAM), read or not yet: `readableEnded` only
 * says the body was read to its end, `state.remoteClose` that the client closed its side.
 */
export function requestReceived(st: ServerHttp2Stream): boolean {
  return st.readableEnded || st.state.remoteClose === 1;
}

/** Tunnels an upgraded request (WebSocket) to the chosen endpoint: request head, then bytes both ways. */
function tunnel(socket: Duplex, head: Buffer, upgrade: string): Stage {
  return async (x, env) => {
    const d = x.destination!;
    const e = chooseEndpoint(x, env, d, env.state(d));
    if (e === null) return localReply(x, 503, 'no healthy upstream', { flag: 'UH' });
    x.endpoint = e;
    x.attempts = 1;
    let up: Duplex;
    try {
      up = await env.pool.connectRaw(e);
    } catch (err) {
      return localReply(x, 503, `upstream connect error: ${(err as Error).message}`, { flag: 'UF' });
    }
    const lines = [`${x.method} ${x.path} HTTP/1.1`, `host: ${x.upstreamAuthority}`, 'connection: Upgrade', `upgrade: ${upgrade}`];
    for (const [k, v] of Object.entries(x.headers)) if (v !== undefined && k !== 'host') lines.push(`${k}: ${headerText(v)}`);
    up.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) up.write(head);
    const down = x.down as UpgradeDownstream;
    down.started = true;
    await new Promise<void>((resolve) => {
      let first = true;
      let closed = 0;
      const done = (): void => {
        if (++closed === 2) resolve();
      };
      up.on('data', (c: Buffer) => {
        if (first) {
          first = false;
          const m = /^HTTP\/1\.\d (\d{3})/.exec(c.subarray(0, 16).toString('latin1'));
          x.status = m ? Number(m[1]) : 502;
        }
        down.bytesSent += c.length;
      });
      up.pipe(socket);
      socket.pipe(up);
      up.once('error', () => socket.destroy());
      socket.once('error', () => up.destroy());
      up.once('close', done);
      socket.once('close', done);
    });
  };
}

/**
 * The waypoint's request engine. One per waypoint process; `update` swaps the config without
 * dropping requests in flight (they finish with the config they started with).
 */
export class WaypointEngine {
  /** not listening: connections are handed to them by `serveConnection` */
  private readonly http1Server: Http1Server<RequestContext>;
  private readonly sendTimeoutMs: number;
  readonly http2Server: http2.Http2Server;
  private readonly metrics: WaypointMetrics;
  private readonly accessLog: AccessLogWriter;
  private readonly pool: UpstreamPool;
  private readonly states = new Map<string, TrackedState>();
  private readonly sessions = new Set<ServerHttp2Session>();
  private draining = false;
  private readonly active = new Map<string, number>();
  private readonly contexts = new WeakMap<object, RequestContext>();
  private readonly maxReplayBytes: number;
  private readonly handler = compose(REQUEST_STAGES);
  private readonly tracer: WaypointTracer | null;
  private dir!: ServiceDirectory;
  private policies!: L7PolicyIndex;
  private regexes!: RegexCache;
  private pendingH2Context: RequestContext | null = null;
  /** the connection an HTTP/2 session is being made on (set around emitting 'connection') */
  private pendingH2Socket: Duplex | null = null;
  private stageEnv!: StageEnv;

  constructor(
    cfg: WaypointConfig,
    private readonly deps: WaypointDeps,
    options: WaypointOptions = {},
  ) {
    this.maxReplayBytes = options.maxReplayBytes ?? 1024 * 1024;
    this.metrics = new WaypointMetrics(deps.metrics);
    this.accessLog = new AccessLogWriter(deps.log);
    this.sendTimeoutMs = options.sendTimeoutMs ?? SEND_TIMEOUT_MS;
    this.pool = new UpstreamPool(deps.connect, this.sendTimeoutMs);
    this.tracer = deps.spans ? new WaypointTracer(deps.spans, { samplePercent: options.tracingSamplePercent, random: deps.random }) : null;
    this.update(cfg);
    this.http1Server = new Http1Server<RequestContext>(
      {
        request: (req, down, ctx) => void this.handleHttp1(req, down, ctx),
        upgrade: (req, socket, head, ctx) => void this.handleUpgrade(req, socket, head, ctx),
      },
      Date.now,
      this.sendTimeoutMs,
    );
    // Streams per connection are limited (node's default is 2^32 - 1): beyond it a client's streams
    // are refused, not each given an upstream request.
    this.http2Server = http2.createServer({ maxSessionMemory: 64, settings: { maxConcurrentStreams: options.h2MaxStreams ?? H2_MAX_STREAMS } });
    const h2IdleMs = options.h2IdleMs ?? KEEP_ALIVE_MS;
    this.http2Server.on('session', (session: ServerHttp2Session) => {
      if (this.pendingH2Context) this.contexts.set(session, this.pendingH2Context);
      session.on('error', () => undefined);
      // shutting down: the requests that came with it are served, then GOAWAY
      if (this.draining) setImmediate(() => closeGracefully(session));
      // closed once idle with no stream open (a quiet gRPC stream is not idle)
      const open = new Set<ServerHttp2Stream>();
      session.on('stream', (st: ServerHttp2Stream) => {
        open.add(st);
        st.once('close', () => open.delete(st));
      });
      // The client ended its side (an HBONE stream's END_STREAM, a TCP FIN; the connection is
      // half-open): it sends nothing more, no request body and no WINDOW_UPDATE. Requests still
      // receiving are cancelled (their upstream requests with them); answers under way may
      // finish, within their window; then the session closes. Node's HTTP/2 would otherwise
      // keep the session, and every request waiting on it, for as long as the other side stays.
      this.pendingH2Socket?.once('end', () => {
        for (const st of open) if (!requestReceived(st)) st.close(h2c.NGHTTP2_CANCEL);
        closeGracefully(session);
      });
      session.on('timeout', () => {
        if (open.size === 0) session.destroy();
        // with a stream open, look again after another idle period
        else session.setTimeout(h2IdleMs);
      });
      session.setTimeout(h2IdleMs);
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
    });
    this.http2Server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void this.handleHttp2(stream, headers));
  }

  /** Replaces the config: routes, policies, Services and endpoints. Destination state (outlier ejections, cursors) is kept by key. */
  update(cfg: WaypointConfig): void {
    this.dir = new ServiceDirectory(cfg);
    this.policies = new L7PolicyIndex(cfg.policies, cfg.rootNamespace);
    this.regexes = new RegexCache();
    this.stageEnv = this.makeEnv();
    // destinations keep their ejections and cursors; their policy is refreshed on next use
    for (const st of this.states.values()) st.stale = true;
  }

  private state(d: Destination): DestinationState {
    let st = this.states.get(d.key);
    if (st === undefined) {
      st = {
        balancer: createBalancer(d.policy.loadBalancer),
        tracker: d.policy.outlierDetection ? new OutlierTracker(d.policy.outlierDetection) : null,
        limiter: new RequestLimiter(d.policy.connectionPool),
        lb: JSON.stringify(d.policy.loadBalancer),
        stale: false,
      };
      this.states.set(d.key, st);
    } else if (st.stale) {
      st.stale = false;
      const lbName = JSON.stringify(d.policy.loadBalancer);
      if (st.lb !== lbName) {
        st.balancer = createBalancer(d.policy.loadBalancer);
        st.lb = lbName;
      }
      if (d.policy.outlierDetection === null) st.tracker = null;
      else if (st.tracker === null) st.tracker = new OutlierTracker(d.policy.outlierDetection);
      else st.tracker.setPolicy(d.policy.outlierDetection);
      st.tracker?.retain(new Set(d.endpoints.map((e) => e.key)));
      st.limiter.setLimits(d.policy.connectionPool);
    }
    return st;
  }

  /** What the stages use; made once per config (a request keeps the one it started with). */
  private makeEnv(): StageEnv {
    return {
      dir: this.dir,
      policies: this.policies,
      regexes: this.regexes,
      waypoint: { name: this.dir.config.waypoint.name, namespace: this.dir.config.waypoint.namespace, gatewayClass: this.dir.config.waypoint.gatewayClass ?? 'istio-waypoint' },
      pool: this.pool,
      state: (d) => this.state(d),
      active: this.active,
      now: this.deps.now,
      random: this.deps.random,
      log: this.deps.log,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    };
  }

  /**
   * Serves one client connection (an inbound HBONE stream, or a socket): HTTP/2 when it starts
   * with the HTTP/2 preface, HTTP/1.1 otherwise. `ctx` says who the client is and where it was going.
   */
  serveConnection(socket: Duplex, ctx: RequestContext): void {
    let buf: Buffer = Buffer.alloc(0);
    socket.on('error', () => undefined);
    const onData = (c: Buffer): void => {
      buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
      const n = Math.min(buf.length, H2_PREFACE.length);
      const h2 = buf.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (h2 && buf.length < H2_PREFACE.length) return;
      socket.off('data', onData);
      socket.pause();
      socket.unshift(buf);
      if (h2) {
        this.pendingH2Context = ctx;
        this.pendingH2Socket = socket;
        try {
          this.http2Server.emit('connection', socket);
        } finally {
          this.pendingH2Context = null;
          this.pendingH2Socket = null;
        }
        // after http2 has taken what is buffered (it reads it on the next tick)
        process.nextTick(() => socket.resume());
      } else {
        this.http1Server.serve(socket, ctx);
        socket.resume();
      }
    };
    socket.on('data', onData);
  }

  private contextOf(key: object | null | undefined, fallback: { remoteAddress?: string; remotePort?: number } | null): RequestContext {
    const ctx = key ? this.contexts.get(key) : undefined;
    if (ctx) return ctx;
    return { source: { ip: fallback?.remoteAddress ?? '', port: fallback?.remotePort ?? 0, identity: null }, destination: null };
  }

  private exchange(down: Downstream, ctx: RequestContext, method: string, path: string, authority: string, scheme: string, raw: IncomingHttpHeaders, hasBody: boolean, body: ReplayableBody): Exchange {
    const headers = forwardableHeaders(raw, true);
    delete headers.host;
    // 100-continue is answered by the server in front of us; the backend gets the body straight away
    delete headers.expect;
    if (!headers['x-request-id']) headers['x-request-id'] = randomUUID();
    const ct = headerText(headers['content-type']);
    return {
      id: headerText(headers['x-request-id']),
      start: this.deps.now(),
      ctx,
      down,
      downstreamProtocol: down.protocol,
      method,
      path: normalizePath(path || '/'),
      authority,
      upstreamAuthority: authority,
      scheme: scheme === 'https' ? 'https' : 'http',
      headers,
      grpc: ct.startsWith('application/grpc') && !ct.startsWith('application/grpc-web'),
      hasBody,
      body,
      sourceWorkload: this.dir.workloadByIp(ctx.source.ip) ?? null,
      addressed: null,
      selection: null,
      rule: null,
      overlay: null,
      decision: null,
      backend: null,
      destination: null,
      endpoint: null,
      attempts: 0,
      status: 0,
      grpcStatus: null,
      flags: new Set(),
      detail: null,
      trace: this.tracer?.begin(headers, path || '/') ?? null,
    };
  }

  /** Handles one HTTP/1.1 request. */
  private async handleHttp1(req: Http1Request, down: Http1ServerDownstream, ctx: RequestContext): Promise<void> {
    if (req.method === 'CONNECT') {
      // as over HTTP/2: the waypoint is not a forward proxy (the connection closes after this)
      down.reply(405, {}, '');
      return;
    }
    const x = this.exchange(down, ctx, req.method, req.target, headerText(req.headers.host), 'http', req.headers, req.hasBody, new ReplayableBody(req.body, this.maxReplayBytes));
    await this.run(x, this.handler);
  }

  /** Handles one HTTP/2 stream (from `http2Server`, or from a server of the caller's). */
  async handleHttp2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ctx?: RequestContext): Promise<void> {
    const session = stream.session;
    const sock = session?.socket as { remoteAddress?: string; remotePort?: number } | undefined;
    const c = ctx ?? this.contextOf(session, sock ?? null);
    const down = new Http2Downstream(stream, this.sendTimeoutMs);
    const method = headerText(headers[':method']) || 'GET';
    const authority = headerText(headers[':authority']) || headerText(headers.host);
    if (method === 'CONNECT') {
      stream.respond({ ':status': 405 }, { endStream: true });
      return;
    }
    const x = this.exchange(down, c, method, headerText(headers[':path']), authority, headerText(headers[':scheme']), headers, !stream.endAfterHeaders, new ReplayableBody(stream, this.maxReplayBytes));
    await this.run(x, this.handler);
  }

  /** Handles an HTTP/1.1 Upgrade (WebSocket): routed and authorized like any request, then tunnelled. */
  private async handleUpgrade(req: Http1Request, socket: Duplex, head: Buffer, ctx: RequestContext): Promise<void> {
    socket.on('error', () => undefined);
    const down = new UpgradeDownstream(socket);
    const x = this.exchange(down, ctx, req.method, req.target, headerText(req.headers.host), 'http', req.headers, false, new ReplayableBody(null, 0));
    const stages: Stage[] = [matchRoute, authorize, requireRoute, injectFault, respondLocally, splitTraffic, tunnel(socket, head, headerText(req.headers.upgrade))];
    await this.run(x, compose(stages));
  }

  private async run(x: Exchange, handler: (x: Exchange, env: StageEnv) => Promise<void>): Promise<void> {
    try {
      await handler(x, this.stageEnv);
      if (x.status === 0 && !x.down.started && !x.down.aborted) localReply(x, 500, 'internal error: no response');
    } catch (err) {
      this.deps.log.error({ err, 'request.id': x.id }, 'request failed inside the waypoint');
      x.detail = (err as Error).message;
      if (!x.down.started) localReply(x, 500, 'internal error');
      else x.down.reset();
    }
    this.report(x);
  }

  /** Metrics and the access-log line of one request. */
  private report(x: Exchange): void {
    const durationMs = Math.max(0, this.deps.now() - x.start);
    const a = x.addressed;
    const dstService = x.destination?.service ?? (a?.kind === 'service' ? a.service : null);
    const status = x.status === 0 ? (x.down.aborted ? 0 : 500) : x.status;
    const flags = flagsText(x.flags);
    const w = x.endpoint?.workload ?? null;
    if (x.trace) this.tracer!.end(x, x.trace, { status, flags, durationMs, waypoint: this.dir.config.waypoint });
    this.metrics.record(
      {
        source: x.sourceWorkload,
        sourcePrincipal: x.ctx.source.identity,
        destinationService: dstService,
        destination: w,
        destinationPrincipal: x.endpoint?.identity ?? null,
        protocol: x.grpc ? 'grpc' : 'http',
        status,
        grpcStatus: x.grpc ? x.grpcStatus : null,
        flags,
      },
      durationMs,
      x.body.bytes,
      x.down.bytesSent,
    );
    const route = x.selection ? `${x.selection.route.kind} ${x.selection.route.key} ${x.selection.rule.name}` : x.rule ? 'default' : null;
    this.accessLog.write({
      type: 'access',
      'request.id': x.id,
      'src.addr': `${x.ctx.source.ip}:${x.ctx.source.port}`,
      'src.identity': x.ctx.source.identity,
      'src.workload': x.sourceWorkload ? workloadText(x.sourceWorkload).ref : null,
      'dst.service': dstService?.hostname ?? null,
      'dst.addr': x.endpoint?.key ?? null,
      'dst.workload': w ? workloadText(w).ref : null,
      method: x.method,
      path: x.path,
      authority: x.authority,
      protocol: x.downstreamProtocol,
      status,
      'grpc.status': x.grpcStatus,
      flags,
      route,
      authz: x.decision && (x.decision.policy !== null || !x.decision.allowed) ? x.decision.reason : undefined,
      attempts: x.attempts,
      'duration.ms': durationMs,
      'bytes.received': x.body.bytes,
      'bytes.sent': x.down.bytesSent,
      detail: x.detail ?? undefined,
      traceparent: x.headers.traceparent ?? x.headers['x-b3-traceid'] ?? undefined,
    });
  }

  /** Pooled HTTP/1.1 connections per endpoint (open, idle), for debugging. */
  upstreamConnections(): Record<string, { open: number; idle: number }> {
    return this.pool.http1Stats();
  }

  /** Current outlier ejections per destination, for debugging. */
  ejections(): Record<string, Ejection[]> {
    const out: Record<string, Ejection[]> = {};
    const now = this.deps.now();
    for (const [k, st] of this.states) {
      const e = st.tracker?.ejections(now) ?? [];
      if (e.length > 0) out[k] = e;
    }
    return out;
  }

  /**
   * Shutting down: clients are asked to go, and requests under way finish. HTTP/1.1 connections
   * close after their response under way (`connection: close`), idle ones now; HTTP/2 clients
   * get a GOAWAY, and their sessions close once their streams have ended.
   */
  drain(): void {
    this.draining = true;
    this.http1Server.drain();
    for (const s of this.sessions) closeGracefully(s);
  }

  /** Closes pooled upstream connections and the client connections handed in. */
  async close(): Promise<void> {
    this.pool.close();
    this.http1Server.closeAll();
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }
}

/** GOAWAY, then the session closes once its streams have ended. */
function closeGracefully(session: ServerHttp2Session): void {
  if (!session.closed && !session.destroyed) session.close();
}
