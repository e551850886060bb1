/**
 * The waypoint's own L7 work, alone: CPU per request of one WaypointEngine in this process, with
 * clients and the backend as in-memory streams (no sockets, no TLS, no HTTP/2 tunnel). What
 * `npm run bench:l7` measures for the waypoint is this plus its transport; this part is where the
 * waypoint's own code runs, so a change to it shows here without the mesh's noise.
 *
 * The traffic is the L7 bench's: HTTP/1.1 `POST /bench` with a 1 KiB body (as
 * bench/tools/loadgen.mjs sends it) through the HTTPRoute of the L7 bench mesh
 * (bench/l7/mesh/l7.yaml) to the Service bench/server and its one pod, which answers 200 with a
 * 1 KiB content-length body and the headers node's http server sends (bench/tools/http-server.mjs).
 * Every answer must be that 200, else the run fails. The process runs with the waypoint's V8
 * flags; the figure is its CPU (user + system) per request over the measured requests, after a
 * warm-up. The in-memory client and backend are part of that figure; they are the same for every
 * build, so a difference between builds is the engine's.
 *
 *   node dist/bench/l7/engine.js [--requests N] [--warmup N] [--conns N] [--repeat N] [--dist DIR[,DIR…]]
 *
 * Closed loop: each of --conns connections sends its next request when the last is answered, so
 * the figure is the work itself. In the mesh at a fixed rate the process also sleeps and wakes
 * about once per request (../wakeup.ts measures what a wake-up costs).
 *
 * With several --dist folders (builds of different trees), each run is a child process of one
 * build, alternating between them, and the medians are printed per build.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { median } from '../lib/report.js';

const HERE = dirname(fileURLToPath(import.meta.url));

interface Options {
  requests: number;
  warmup: number;
  conns: number;
  repeat: number;
  dist: string[];
  child: boolean;
}

function parse(argv: string[]): Options {
  const o: Options = { requests: 50_000, warmup: 10_000, conns: 8, repeat: 5, dist: [], child: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (min: number): number => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < min) throw new Error(`${a} must be an integer ≥ ${min}`);
      return n;
    };
    if (a === '--requests') o.requests = int(1);
    else if (a === '--warmup') o.warmup = int(0);
    else if (a === '--conns') o.conns = int(1);
    else if (a === '--repeat') o.repeat = int(1);
    else if (a === '--dist') o.dist = value().split(',').map((d) => resolve(d));
    else if (a === '--child') o.child = true;
    else throw new Error(`unknown flag ${a}`);
  }
  return o;
}

/**
 * Two connected in-memory duplexes: what one writes, the other reads in a later turn of the event
 * loop (as from a socket: never within the write), in one batch per turn.
 */
function duplexPair(): [Duplex, Duplex] {
  let a: Duplex | null = null;
  let b: Duplex | null = null;
  const make = (peer: () => Duplex): Duplex => {
    let pending: (Buffer | null)[] = [];
    const deliver = (): void => {
      const p = peer();
      const batch = pending;
      pending = [];
      if (p.destroyed) return;
      for (const c of batch) p.push(c);
    };
    const send = (c: Buffer | null): void => {
      if (pending.length === 0) setImmediate(deliver);
      pending.push(c);
    };
    return new Duplex({
      allowHalfOpen: true,
      read() {},
      write(chunk: Buffer, _enc, cb) {
        send(chunk);
        cb();
      },
      writev(chunks, cb) {
        for (const c of chunks) send(c.chunk as Buffer);
        cb();
      },
      final(cb) {
        send(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        setImmediate(() => {
          if (!p.destroyed) p.destroy();
        });
        cb(err);
      },
    });
  };
  a = make(() => b!);
  b = make(() => a!);
  return [a, b];
}

const SIZE = 1024;
const REQUEST = Buffer.concat([
  Buffer.from(`POST /bench HTTP/1.1\r\nhost: server.bench.svc.cluster.local\r\ncontent-type: application/octet-stream\r\ncontent-length: ${SIZE}\r\n\r\n`, 'latin1'),
  Buffer.alloc(SIZE, 0x71),
]);

/**
 * Reads HTTP/1.1 messages with content-length bodies off a stream (the fake backend's requests,
 * the client's responses) and calls `each` per whole message.
 */
function messages(stream: Duplex, each: (head: string) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  let need = -1;
  stream.on('data', (c: Buffer) => {
    buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
    for (;;) {
      if (need < 0) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (!m) throw new Error(`message without content-length: ${head.slice(0, 80)}`);
        need = end + 4 + Number(m[1]);
      }
      if (buf.length < need) return;
      const head = buf.toString('latin1', 0, 16);
      buf = buf.subarray(need);
      need = -1;
      each(head);
    }
  });
}

/** The backend pod: answers every request as node's http server does for http-server.mjs. */
function backend(): Duplex {
  const [engineSide, podSide] = duplexPair();
  const body = Buffer.alloc(SIZE, 0x72);
  messages(podSide, () => {
    const head = `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${SIZE}\r\nDate: ${new Date().toUTCString()}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=120\r\n\r\n`;
    podSide.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  });
  return engineSide;
}

/** The L7 bench mesh: its HTTPRoute is the one route of this bench. */
const MESH_YAML = resolve(HERE, '..', '..', '..', 'bench', 'l7', 'mesh', 'l7.yaml');

/** One run in this process, from the build in `dist`: CPU µs per request. */
async function runOnce(dist: string, o: Options): Promise<{ cpuUsPerRequest: number; requests: number; logLines: number; dials: number }> {
  const imp = <T>(p: string): Promise<T> => import(pathToFileURL(join(dist, p)).href) as Promise<T>;
  const { WaypointEngine } = await imp<typeof import('../../waypoint/engine.js')>('waypoint/engine.js');
  const { parseObjects } = await imp<typeof import('../../shared/config/objects.js')>('shared/config/objects.js');
  const { buildRoutingConfig } = await imp<typeof import('../../shared/routing/translate.js')>('shared/routing/translate.js');
  const server = { uid: 'bench/server', name: 'server', namespace: 'bench', serviceAccount: 'bench-server', node: 'node-2', ip: '10.250.1.7', labels: { app: 'bench-server' }, protocol: 'HBONE' as const, ready: true };
  const client = { ...server, uid: 'bench/client', name: 'client', serviceAccount: 'bench-client', node: 'node-1', ip: '10.250.0.5', labels: { app: 'bench-client' } };
  const services = [{ key: 'bench/server', name: 'server', namespace: 'bench', hostname: 'server.bench.svc.cluster.local', vip: '10.96.0.10', ports: [{ port: 80, targetPort: 8080, name: 'http' }], endpoints: ['bench/server'] }];
  const routes = parseObjects(readFileSync(MESH_YAML, 'utf8'), MESH_YAML).filter((x) => x.kind === 'HTTPRoute');
  if (routes.length !== 1) throw new Error(`${MESH_YAML}: expected one HTTPRoute, found ${routes.length}`);
  const routing = buildRoutingConfig(routes, services);
  if (routing.problems.length > 0) throw routing.problems[0]!.error;
  let logLines = 0;
  let dials = 0;
  // the access log goes through pino as in the waypoint, to a sink that only counts the lines
  const log = pino({ level: 'info' }, { write: (s: string) => void (logLines += s.split('\n').length - 1) });
  const engine = new WaypointEngine(
    { waypoint: { name: 'waypoint', namespace: 'bench' }, services, workloads: [server, client], routing: routing.config, policies: [] },
    { connect: async () => (dials++, backend()), now: () => performance.now(), random: Math.random, log, metrics: new Registry() },
    {},
  );
  const total = o.warmup + o.requests;
  let sent = 0;
  let answered = 0;
  let cpuStart: NodeJS.CpuUsage | null = null;
  let measuredFrom = 0;
  const done = await new Promise<NodeJS.CpuUsage>((resolveRun, reject) => {
    const send = (c: Duplex): void => {
      sent++;
      c.write(REQUEST);
    };
    for (let c = 0; c < o.conns; c++) {
      const [clientSide, engineSide] = duplexPair();
      engine.serveConnection(engineSide, { source: { ip: client.ip, port: 40000 + c, identity: 'spiffe://cluster.local/ns/bench/sa/bench-client' }, destination: { ip: '10.96.0.10', port: 80 } });
      messages(clientSide, (head) => {
        if (!head.startsWith('HTTP/1.1 200 ')) {
          reject(new Error(`the engine answered ${JSON.stringify(head)}, not the backend's 200`));
          return;
        }
        answered++;
        if (answered === o.warmup) {
          cpuStart = process.cpuUsage();
          measuredFrom = answered;
        }
        if (answered === total) resolveRun(process.cpuUsage(cpuStart ?? undefined));
        else if (sent < total) send(clientSide);
      });
      send(clientSide);
    }
    if (o.warmup === 0) cpuStart = process.cpuUsage();
  });
  await engine.close();
  const n = total - measuredFrom;
  return { cpuUsPerRequest: (done.user + done.system) / n, requests: n, logLines, dials };
}


async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const ownDist = resolve(HERE, '..', '..');
  if (o.child) {
    const r = await runOnce(o.dist[0] ?? ownDist, o);
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const dists = o.dist.length > 0 ? o.dist : [ownDist];
  const results = new Map<string, number[]>(dists.map((d) => [d, []]));
  for (let rep = 0; rep < o.repeat; rep++) {
    for (const d of rep % 2 ? [...dists].reverse() : dists) {
      const flags = ((await import(pathToFileURL(join(d, 'shared', 'node-flags.js')).href)) as { WAYPOINT_NODE_FLAGS: readonly string[] }).WAYPOINT_NODE_FLAGS;
      const args = [...flags, fileURLToPath(import.meta.url), '--child', '--dist', d, '--requests', String(o.requests), '--warmup', String(o.warmup), '--conns', String(o.conns)];
      const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`run with ${d} failed: ${r.stderr || r.stdout}`);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { cpuUsPerRequest: number; logLines: number; requests: number };
      if (out.logLines < out.requests) throw new Error(`run with ${d}: ${out.logLines} access-log lines for ${out.requests} requests`);
      results.get(d)!.push(out.cpuUsPerRequest);
      process.stdout.write(`${d}: ${out.cpuUsPerRequest.toFixed(1)} µs CPU per request\n`);
    }
  }
  for (const [d, xs] of results) process.stdout.write(`median ${d}: ${(median(xs) ?? NaN).toFixed(1)} µs CPU per request (${xs.map((x) => x.toFixed(1)).join(', ')})\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`engine bench: ${(err as Error).message}\n`);
  process.exit(1);
});
