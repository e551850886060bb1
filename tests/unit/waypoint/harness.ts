/**
 * Test bench for the waypoint engine without the mesh: backends are real HTTP/1.1, HTTP/2 and
 * gRPC servers on 127.0.0.1; workloads get made-up pod IPs, and the engine's `connect` maps
 * `podIP:targetPort` to the real server (the role HBONE plays in the mesh). Clients reach the
 * engine through a TCP listener that hands each socket to `serveConnection` with a context
 * (source identity, original destination) the test controls.
 */

import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { Service, Workload } from '../../../shared/model/types.js';
import { parseObjects } from '../../../shared/config/objects.js';
import { translateL7AuthorizationPolicy, type L7AuthorizationPolicy } from '../../../shared/policy/l7.js';
import { buildRoutingConfig } from '../../../shared/routing/translate.js';
import type { WaypointConfig } from '../../../waypoint/config.js';
import { WaypointEngine, type RequestContext } from '../../../waypoint/engine.js';
import type { SpanSink } from '../../../shared/telemetry/span-exporter.js';

export interface Backend {
  name: string;
  port: number;
  /** requests seen, with method, path and headers */
  seen: { method: string; path: string; headers: http.IncomingHttpHeaders | http2.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

/** An HTTP/1.1 backend that records what it sees; default answer: 200 "<name> <path>". */
export async function httpBackend(name: string, handler?: Handler): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      if (handler) handler(req, res, body);
      else res.end(`${name} ${req.url}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** An HTTP/2 cleartext backend. */
export async function h2Backend(name: string, handler?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: string) => void): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('stream', (stream, headers) => {
    let body = '';
    stream.on('data', (c: Buffer) => (body += c.toString()));
    stream.on('end', () => {
      seen.push({ method: String(headers[':method']), path: String(headers[':path']), headers, body });
      if (handler) handler(stream, headers, body);
      else {
        stream.respond({ ':status': 200, 'content-type': 'text/plain' });
        stream.end(`${name} ${headers[':path']}`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        for (const s of sessions) s.destroy();
        server.close(() => r());
      }),
  };
}

/** One pod: a made-up IP, backed by a real server. */
export interface Pod {
  name: string;
  namespace?: string;
  ip: string;
  labels?: Record<string, string>;
  serviceAccount?: string;
  backend: Backend | null;
}

export function workload(p: Pod): Workload {
  return {
    uid: `${p.namespace ?? 'default'}/${p.name}`,
    name: p.name,
    namespace: p.namespace ?? 'default',
    serviceAccount: p.serviceAccount ?? p.name,
    node: 'node-1',
    ip: p.ip,
    labels: p.labels ?? {},
    protocol: 'HBONE',
    ready: true,
  };
}

export function service(name: string, vip: string, pods: Pod[], ports: { port: number; targetPort: number; name?: string }[] = [{ port: 80, targetPort: 8080, name: 'http' }], namespace = 'default'): Service {
  return {
    key: `${namespace}/${name}`,
    name,
    namespace,
    hostname: `${name}.${namespace}.svc.cluster.local`,
    vip,
    ports,
    endpoints: pods.map((p) => `${p.namespace ?? 'default'}/${p.name}`),
  };
}

export interface Bench {
  engine: WaypointEngine;
  port: number;
  /** context for the next connections */
  ctx: RequestContext;
  registry: Registry;
  /** log lines written by the engine */
  logs: Record<string, unknown>[];
  /** connections opened to each pod address */
  dials: Map<string, number>;
  /** pod addresses that refuse connections */
  refuse: Set<string>;
  config: WaypointConfig;
  update(yaml: string): void;
  close(): Promise<void>;
}

export const WEB = 'spiffe://cluster.local/ns/default/sa/web';

/** Builds config from pods, Services and YAML (routes, DestinationRules, policies). */
export function buildConfig(pods: Pod[], services: Service[], yaml: string): WaypointConfig {
  const objects = yaml.trim() === '' ? [] : parseObjects(yaml, 'test.yaml');
  const routing = buildRoutingConfig(objects, services);
  if (routing.problems.length > 0) throw routing.problems[0]!.error;
  const policies: L7AuthorizationPolicy[] = [];
  for (const o of objects) {
    if (o.kind !== 'AuthorizationPolicy') continue;
    const { policy } = translateL7AuthorizationPolicy(o);
    if (policy) policies.push(policy);
  }
  return { waypoint: { name: 'waypoint', namespace: 'default' }, services, workloads: pods.map(workload), routing: routing.config, policies };
}

/** Starts an engine in front of the pods. */
export async function bench(
  pods: Pod[],
  services: Service[],
  yaml = '',
  opts: { random?: () => number; now?: () => number; maxReplayBytes?: number; spans?: SpanSink; tracingSamplePercent?: number; registry?: Registry; h2IdleMs?: number; h2MaxStreams?: number; sendTimeoutMs?: number } = {},
): Promise<Bench> {
  const registry = opts.registry ?? new Registry();
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const dials = new Map<string, number>();
  const refuse = new Set<string>();
  const byAddress = new Map<string, Pod>();
  const config = buildConfig(pods, services, yaml);
  for (const s of services) for (const p of s.ports) for (const pod of pods) byAddress.set(`${pod.ip}:${p.targetPort}`, pod);
  const engine = new WaypointEngine(config, {
    connect: (backend) =>
      new Promise((resolve, reject) => {
        const key = `${backend.ip}:${backend.port}`;
        dials.set(key, (dials.get(key) ?? 0) + 1);
        const pod = byAddress.get(key);
        if (!pod?.backend || refuse.has(key)) return reject(new Error(`connection refused by ${key}`));
        const s = net.connect({ host: '127.0.0.1', port: pod.backend.port, allowHalfOpen: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    now: opts.now ?? (() => performance.now()),
    random: opts.random ?? Math.random,
    log,
    metrics: registry,
    spans: opts.spans,
  }, { maxReplayBytes: opts.maxReplayBytes, tracingSamplePercent: opts.tracingSamplePercent, h2IdleMs: opts.h2IdleMs, h2MaxStreams: opts.h2MaxStreams, sendTimeoutMs: opts.sendTimeoutMs });
  const b: Bench = {
    engine,
    port: 0,
    ctx: { source: { ip: '10.1.0.9', port: 40000, identity: WEB }, destination: null },
    registry,
    logs,
    dials,
    refuse,
    config,
    update(yaml: string) {
      b.config = buildConfig(pods, services, yaml);
      engine.update(b.config);
    },
    close: async () => {
      await engine.close();
      await new Promise<void>((r) => front.close(() => r()));
      for (const c of conns) c.destroy();
    },
  };
  const conns = new Set<net.Socket>();
  const front = net.createServer({ allowHalfOpen: true }, (sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    engine.serveConnection(sock, { ...b.ctx, source: { ...b.ctx.source, port: sock.remotePort ?? 0 } });
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  b.port = (front.address() as net.AddressInfo).port;
  return b;
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request through the engine (new connection unless an agent is given). */
export function get(port: number, path: string, opts: { host?: string; method?: string; headers?: Record<string, string>; body?: string; agent?: http.Agent } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', agent: opts.agent ?? false, headers: { host: opts.host ?? 'reviews', ...opts.headers } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Runs curl (asynchronously: the engine runs in this process) and returns status and body. */
export function curl(args: string[]): Promise<{ status: number; body: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-S', '--max-time', '10', '-w', '\n%{http_code}', ...args], (err, stdout, stderr) => {
      if (err && !stdout) return reject(new Error(`curl failed: ${stderr || err.message}`));
      const i = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i), stderr });
    });
  });
}

/** Runs `count` requests, `parallel` at a time. */
export async function many<T>(count: number, parallel: number, one: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await one(i);
      }
    }),
  );
  return out;
}

/** A seeded PRNG (mulberry32), so statistical tests are reproducible. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
