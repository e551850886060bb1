import http from 'node:http';
import { parseLevel, type Logger } from '../shared/telemetry/log.js';
import type { ProxyContext } from './context.js';
import type { PodProxies } from './pods.js';
import { summarizeRoot } from '../shared/identity/trust.js';

/** What ztunnel's admin endpoints read from. */
export interface AdminSources {
  ctx: ProxyContext;
  pods: PodProxies;
  node: string;
  ready: () => boolean;
  log: Logger;
}

function send(res: http.ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** /config_dump: the model, local pods, certificates and pool, as ztunnel sees them now. */
export function configDump(s: AdminSources): unknown {
  const snap = s.ctx.index.snapshot();
  return {
    node: s.node,
    version: s.ctx.index.version,
    workloads: snap.workloads,
    services: snap.services,
    capturedPods: s.pods.list().map((p) => ({ uid: p.uid, name: p.name, namespace: p.namespace, ip: p.ip, identity: p.identity, netns: p.net.netnsPath })),
    certificates: s.ctx.certs.list().map((c) => ({ ...c, notBefore: c.notBefore.toISOString(), notAfter: c.notAfter.toISOString() })),
    trustRoots: s.ctx.certs.trustRoots().map(summarizeRoot),
    policies: snap.policies,
    peerAuthentications: snap.peerAuthentications,
    waypoints: snap.waypoints ?? [],
    recentDenies: s.ctx.tracker.denies.slice(-20),
    pool: s.ctx.pool.stats(),
  };
}

function connections(s: AdminSources): unknown {
  return [...s.ctx.tracker.open.values()].map((c) => ({
    id: c.id,
    direction: c.direction,
    src: c.src.address,
    srcIdentity: c.src.identity ?? null,
    dst: c.dst.address,
    dstIdentity: c.dst.identity ?? null,
    service: c.service?.hostname ?? null,
    protocol: c.protocol,
    ageMs: Date.now() - c.started,
  }));
}

/** Admin (localhost only): /config_dump, /connections, /logging?level=. */
export function adminServer(s: AdminSources): http.Server {
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    switch (url.pathname) {
      case '/config_dump':
        return send(res, 200, configDump(s));
      case '/connections':
        return send(res, 200, connections(s));
      case '/denies':
        return send(res, 200, s.ctx.tracker.denies);
      case '/logging': {
        const level = url.searchParams.get('level');
        if (level === null) return send(res, 200, { level: s.log.level });
        if (req.method !== 'POST' && req.method !== 'PUT') return send(res, 405, { error: 'use POST /logging?level=LEVEL' });
        try {
          s.log.level = parseLevel(level);
        } catch (err) {
          return send(res, 400, { error: (err as Error).message });
        }
        return send(res, 200, { level: s.log.level });
      }
      case '/':
        return send(res, 200, { endpoints: ['/config_dump', '/connections', '/denies', '/logging'] });
      default:
        return send(res, 404, { error: `no such endpoint ${url.pathname}` });
    }
  });
}

/** Metrics for Prometheus on /metrics and /stats/prometheus. */
export function metricsServer(s: AdminSources): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== '/metrics' && path !== '/stats/prometheus') return send(res, 404, 'not found\n', 'text/plain');
    s.ctx.metrics.registry.metrics().then(
      (text) => send(res, 200, text, s.ctx.metrics.registry.contentType),
      (err: Error) => send(res, 500, `${err.message}\n`, 'text/plain'),
    );
  });
}

/** Readiness on /healthz/ready: ready once the first configuration arrived. */
export function readinessServer(s: AdminSources): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== '/healthz/ready') return send(res, 404, 'not found\n', 'text/plain');
    if (s.ready()) send(res, 200, 'ready\n', 'text/plain');
    else send(res, 503, 'waiting for configuration from the control plane\n', 'text/plain');
  });
}
