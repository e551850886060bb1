#!/usr/bin/env node
/**
 * The waypoint process: HBONE in on :15008 (mTLS, the client's identity from its certificate,
 * `:authority` the Service VIP:port or pod IP:port it addressed), L7 routing and authorization in
 * the engine, HBONE out to the chosen endpoint's node (plain TCP to pods outside the mesh).
 * Config comes from the control plane's WatchWaypoint stream; its certificate from the CA.
 * Until both arrived it answers nothing and reports not ready; when the control plane goes
 * away it keeps serving the last config it had.
 */
import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { constants as h2c, type ClientHttp2Stream, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { Command } from 'commander';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { collectProcessMetrics } from '../shared/telemetry/process-metrics.js';
import { createLogger, parseLevel } from '../shared/telemetry/log.js';
import { ConnectionPool } from '../shared/hbone/pool.js';
import { HboneServer, respondError, type InboundConnect } from '../shared/hbone/server.js';
import { HBONE_PORT } from '../shared/hbone/settings.js';
import { resetStream } from '../shared/hbone/bridge.js';
import { MeshError, asMeshError } from '../shared/errors.js';
import { formatAddress } from '../shared/model/types.js';
import { Identity, DEFAULT_TRUST_DOMAIN } from '../shared/identity/spiffe.js';
import { hostPort, listen } from '../shared/net/listen.js';
import { SpanExporter, parseTracingEndpoint } from '../shared/telemetry/span-exporter.js';
import type { WaypointUpdate } from '../shared/control/protocol.js';
import { ControlLink, TokenFile } from '../ztunnel/control-client.js';
import { CertificateStore } from '../ztunnel/certificates.js';
import { ServiceDirectory, type Endpoint, type WaypointConfig } from './config.js';
import { WaypointEngine, type RequestContext } from './engine.js';
import { isoTimeCached, LineBatcher } from './access-log.js';
import { forwardedFor, isTcpPort } from './inbound.js';
import { dropEmptyWrites } from './streams.js';
import { drainTimes, handleStopSignals } from '../shared/drain.js';

const env = process.env;
const program = new Command()
  .name('waypoint')
  .description("ambit's L7 proxy for a namespace or service: HBONE in, HTTP/gRPC routing and authorization, HBONE out")
  .option('--name <name>', 'name of the waypoint Gateway', env.AMBIT_WAYPOINT_NAME)
  .option('--namespace <ns>', 'namespace of the waypoint Gateway', env.POD_NAMESPACE)
  .option('--service-account <name>', 'service account the waypoint runs as (default: the Gateway name)', env.SERVICE_ACCOUNT)
  .option('--control <host:port>', 'control plane address', env.AMBIT_CONTROL_ADDRESS)
  .option('--ca-root <file>', 'mesh root certificate(s), PEM, to trust the control plane (or $AMBIT_ROOT_CERT)')
  .option('--token-file <file>', 'token that authenticates this waypoint to the control plane', env.AMBIT_TOKEN_FILE)
  .option('--trust-domain <domain>', 'trust domain', env.AMBIT_TRUST_DOMAIN ?? DEFAULT_TRUST_DOMAIN)
  .option('--listen <host:port>', 'HBONE listener', `0.0.0.0:${HBONE_PORT}`)
  .option('--admin <host:port>', 'admin endpoint (keep it on localhost)', '127.0.0.1:15000')
  .option('--metrics <host:port>', 'Prometheus metrics', '0.0.0.0:15020')
  .option('--readiness <host:port>', 'readiness probe', '0.0.0.0:15021')
  .option('--tracing-endpoint <url>', 'send spans to this collector: Zipkin v2 JSON, or OTLP/HTTP JSON when the path ends in /v1/traces', env.AMBIT_TRACING_ENDPOINT)
  .option('--tracing-sample-percent <n>', 'share of new traces sampled when the client did not decide', env.AMBIT_TRACING_SAMPLE_PERCENT ?? '100')
  .option('--handover-seconds <s>', 'on SIGTERM, how long to keep taking new connections while clients learn it is going', '5')
  .option('--drain-seconds <s>', 'on SIGTERM, how long requests and connections under way may take to finish before they are cut', '25')
  .option('--log-level <level>', 'log level', env.AMBIT_LOG_LEVEL ?? 'info');

interface Options {
  name?: string;
  namespace?: string;
  serviceAccount?: string;
  control?: string;
  caRoot?: string;
  tokenFile?: string;
  trustDomain: string;
  listen: string;
  admin: string;
  metrics: string;
  readiness: string;
  tracingEndpoint?: string;
  tracingSamplePercent: string;
  handoverSeconds: string;
  drainSeconds: string;
  logLevel: string;
}

function required(o: Options): Required<Pick<Options, 'name' | 'namespace' | 'control' | 'tokenFile'>> {
  const missing = (['name', 'namespace', 'control', 'tokenFile'] as const).filter((k) => !o[k]);
  if (missing.length > 0) throw new Error(`missing ${missing.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
  for (const [flag, v] of [['--listen', o.listen], ['--admin', o.admin], ['--metrics', o.metrics], ['--readiness', o.readiness], ['--control', o.control!]] as const) hostPort(v, flag);
  if (o.tracingEndpoint) parseTracingEndpoint(o.tracingEndpoint);
  const pct = Number(o.tracingSamplePercent);
  if (!(pct >= 0 && pct <= 100)) throw new Error(`--tracing-sample-percent must be a number from 0 to 100, got "${o.tracingSamplePercent}"`);
  drainTimes(o);
  return { name: o.name!, namespace: o.namespace!, control: o.control!, tokenFile: o.tokenFile! };
}

async function main(): Promise<void> {
  const o = program.parse().opts<Options>();
  const r = required(o);
  const roots = o.caRoot ? await readFile(o.caRoot, 'utf8') : env.AMBIT_ROOT_CERT;
  if (!roots) throw new Error('missing --ca-root (or $AMBIT_ROOT_CERT): the mesh roots, to verify the control plane');
  const key = `${r.namespace}/${r.name}`;
  const log = createLogger('waypoint', o.logLevel).child({ waypoint: key });
  // The request engine writes an access-log line per request: gathered, written when 32 KiB
  // gathered, at least once a second and at exit (as Envoy flushes its access log files every
  // second), instead of one write() per line on the request's path.
  const accessOut = new LineBatcher(pino.destination({ dest: 1, sync: false }));
  const accessLog = pino({ base: { component: 'waypoint', waypoint: key, access: true }, level: log.level, timestamp: isoTimeCached() }, accessOut);
  const identity = new Identity(o.trustDomain, r.namespace, o.serviceAccount || r.name).toString();

  // read for every call: in a cluster the kubelet rotates this projected token
  const link = new ControlLink<WaypointUpdate>(r.control, roots, key, new TokenFile(r.tokenFile), log);
  link.stream = { method: 'watchWaypoint', request: { namespace: r.namespace, name: r.name } };
  const certs = new CertificateStore((id, csr) => link.sign(id, csr), log);
  certs.retain(identity);
  const pool = new ConnectionPool();
  const registry = new Registry();
  collectProcessMetrics(registry);
  const spans = o.tracingEndpoint ? new SpanExporter({ endpoint: o.tracingEndpoint, registry, log }) : undefined;

  /** Opens the transport to an endpoint: HBONE to its node when it is in the mesh, else plain TCP. */
  const connect = async (e: Endpoint): Promise<Duplex> => {
    if (e.workload.protocol !== 'HBONE') {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: e.ip, port: e.port });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    }
    return await pool.open({
      source: identity,
      expected: [e.identity],
      target: { ip: e.ip, port: HBONE_PORT },
      authority: formatAddress({ ip: e.ip, port: e.port }),
      dial: (t) =>
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ host: t.ip, port: t.port });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
      material: () => certs.get(identity),
    });
  };

  let config: WaypointConfig | null = null;
  let dir: ServiceDirectory | null = null;
  let engine: WaypointEngine | null = null;
  link.on('update', (u) => {
    if (u.roots && u.roots.length > 0) {
      link.setRoots(u.roots);
      if (certs.setRoots(u.roots)) log.info({ roots: u.roots.length }, 'trust bundle changed');
    }
    config = u.config;
    dir = new ServiceDirectory(u.config);
    if (engine) engine.update(u.config);
    else engine = new WaypointEngine(u.config, { connect, now: () => performance.now(), random: Math.random, log: accessLog, metrics: registry, ...(spans ? { spans } : {}) }, { tracingSamplePercent: Number(o.tracingSamplePercent) });
    log.info({ version: u.version, services: u.config.services.length, routes: Object.keys(u.config.routing.tables).length, policies: u.config.policies.length }, 'configuration received');
  });
  link.start();

  // the control plane may not know this waypoint yet (its pod is being scheduled): keep asking
  let material;
  for (let delay = 500; ; delay = Math.min(delay * 2, 15_000)) {
    try {
      material = await certs.get(identity);
      break;
    } catch (err) {
      log.warn({ err: (err as Error).message, retryInMs: delay }, 'no certificate yet; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  let tcpCursor = 0;
  const hbone = new HboneServer(material, o.trustDomain, {
    connect: (req) => void serve(req),
    rejected: (flag, reason, peer) => log.warn({ flag, reason, peer }, 'HBONE connection refused'),
  });
  // a renewed certificate or a new trust bundle: new connections in and out use it
  certs.on('renewed', (id, m) => {
    if (id !== identity) return;
    hbone.setMaterial(m);
    pool.retire(id);
  });

  /** One CONNECT: HTTP into the engine, or a plain TCP port passed through to an endpoint. */
  async function serve(req: InboundConnect): Promise<void> {
    if (!engine || !dir || !config) {
      respondError(req.stream, new MeshError('NO_ROUTE', 'waypoint has no configuration yet'));
      return;
    }
    const addressed = dir.resolve(req.target, undefined, req.target.port);
    if (!addressed) {
      respondError(req.stream, new MeshError('NO_ROUTE', `${formatAddress(req.target)} is neither a Service port nor a workload this waypoint knows`));
      return;
    }
    const src = forwardedFor(req.headers.forwarded) ?? req.peerAddress;
    const ctx: RequestContext = { source: { ip: src.ip, port: src.port, identity: req.peer.toString() }, destination: req.target };
    if (addressed.kind === 'service' && isTcpPort(addressed.service, addressed.port)) {
      const d = dir.destination({ service: addressed.service.key, port: addressed.port, subset: null }, addressed.port);
      const eps = d?.endpoints ?? [];
      const ep = eps.length > 0 ? eps[tcpCursor++ % eps.length]! : undefined;
      if (!ep) {
        respondError(req.stream, new MeshError('NO_ROUTE', `service ${addressed.service.hostname}:${addressed.port} has no ready endpoints`));
        return;
      }
      let up: Duplex;
      try {
        up = await connect(ep);
      } catch (err) {
        respondError(req.stream, asMeshError(err, 'CONNECT'));
        return;
      }
      req.stream.respond({ ':status': 200 }, { endStream: false });
      passThrough(req.stream, up);
      return;
    }
    req.stream.respond({ ':status': 200 }, { endStream: false });
    engine.serveConnection(dropEmptyWrites(req.stream), ctx);
  }

  const admin = http.createServer((q, s) => {
    const url = new URL(q.url ?? '/', 'http://localhost');
    const send = (status: number, body: unknown): void => {
      const text = JSON.stringify(body, null, 2);
      s.writeHead(status, { 'content-type': 'application/json' }).end(text);
    };
    if (url.pathname === '/config_dump') return send(200, { waypoint: key, identity, config, certificates: certs.list(), ejections: engine?.ejections() ?? {}, pool: pool.stats(), upstream: engine?.upstreamConnections() ?? {} });
    if (url.pathname === '/logging') {
      const level = url.searchParams.get('level');
      if (level === null) return send(200, { level: log.level });
      const parsed = parseLevel(level);
      if (!parsed) return send(400, { error: `unknown level "${level}"` });
      log.level = parsed;
      accessLog.level = parsed;
      return send(200, { level: log.level });
    }
    send(404, { error: 'not found', paths: ['/config_dump', '/logging?level='] });
  });
  const metrics = http.createServer((q, s) => {
    if (q.url === '/metrics' || q.url === '/stats/prometheus') {
      void registry.metrics().then((text) => s.writeHead(200, { 'content-type': registry.contentType }).end(text));
      return;
    }
    s.writeHead(404).end();
  });
  const readiness = http.createServer((q, s) => {
    const draining = stop.draining;
    const ready = q.url === '/healthz/ready' && engine !== null && !draining;
    s.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : draining ? 'not ready: draining\n' : 'not ready: waiting for configuration\n');
  });
  const exit = (): void => {
    link.stop();
    void Promise.all([engine?.close(), spans?.close()]).finally(() => {
      pool.close();
      certs.close();
      for (const s of [admin, metrics, readiness]) s.close();
      setTimeout(() => process.exit(0), 200).unref();
    });
  };
  const stop = handleStopSignals({
    log,
    times: drainTimes(o),
    now: () => {
      hbone.server.close();
    },
    // a rollout, a scale-down: readiness says draining, so the control plane stops sending
    // clients here; connections keep being taken for the hand-over time, then clients get
    // GOAWAY and `connection: close`, and what is under way may finish
    drain: () => {
      log.info({ hboneConnections: hbone.openSessions, handoverSeconds: Number(o.handoverSeconds), drainSeconds: Number(o.drainSeconds) }, 'draining: clients are sent elsewhere, requests under way may finish');
      return {
        // nobody connected: nobody is sending here
        handOver: () => hbone.openSessions > 0,
        stopAccepting: async () => {
          void hbone.close();
          engine?.drain();
          log.info({ hboneConnections: hbone.openSessions }, 'draining: no longer accepting connections');
        },
        open: () => hbone.openSessions,
        cut: () => void engine?.close(),
      };
    },
    exit,
  });
  await listen(hbone.server, o.listen, '--listen');
  await listen(admin, o.admin, '--admin');
  await listen(metrics, o.metrics, '--metrics');
  await listen(readiness, o.readiness, '--readiness');
  log.info({ identity, listen: o.listen, metrics: o.metrics }, 'waypoint started');
}

/** Carries a TCP port through: bytes both ways, half-close passed on, a reset on either side resets the other. */
function passThrough(down: ServerHttp2Stream, up: Duplex): void {
  down.pipe(up);
  up.pipe(down);
  const cut = (): void => {
    if (!down.destroyed) resetStream(down, h2c.NGHTTP2_CANCEL);
    if (!up.destroyed) {
      const s = up as ClientHttp2Stream | net.Socket;
      if ('resetAndDestroy' in s) s.resetAndDestroy();
      else resetStream(s, h2c.NGHTTP2_CANCEL);
    }
  };
  down.on('error', cut);
  up.on('error', cut);
  down.on('aborted', cut);
}

main().catch((err: Error) => {
  process.stderr.write(`waypoint: ${err.message}\n`);
  process.exit(1);
});
