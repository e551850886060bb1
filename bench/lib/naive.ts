/**
 * The L4 bench's fourth path: the naive Node HTTP/2 CONNECT tunnel (bench/tools/naive-tunnel.mjs),
 * two plain `node` processes in the places of the two HAProxies (and of the two ztunnels):
 *
 *   node-1: `ip netns exec <mesh>-node-1 node naive-tunnel.mjs --mode client`, listening on node-1's
 *           address; per client connection one CONNECT stream over one shared TLS 1.3 + h2
 *           connection to node-2's, with the HAProxy pair's client certificate.
 *   node-2: `ip netns exec <mesh>-node-2 node naive-tunnel.mjs --mode server` on node-2's address,
 *           with the HAProxy pair's serving certificate; requires and verifies the client
 *           certificate against the same CA; connects to the :authority (the server pod) and pipes.
 *
 * Each has a stats socket (one JSON line of counters per connection) that the runner reads before
 * and after its probe, as it reads HAProxy's.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { askSocket, type Peer, type PeerProcess, SERVER_NAME } from './haproxy.js';
import { cmdline, runCmd, sleep } from './proc.js';
import { TOOLS } from './runner.js';

/** ports of node-1's tunnel end (clients connect here) and node-2's (TLS + h2, one port: the stream's :authority says where to) */
export const NAIVE_PORTS = { sink: 19200, rr: 19201, tunnel: 19300 } as const;

export interface NaivePlan {
  /** folder for the pids file and the stats sockets (removed at the end) */
  dir: string;
  node1: { netns: string; ip: string };
  node2: { netns: string; ip: string };
  server: { ip: string; sinkPort: number; rrPort: number };
  /** the HAProxy pair's certificates */
  files: Peer['files'];
}

export interface Naive {
  plan: NaivePlan;
  procs: PeerProcess[];
}

export interface NaiveStats {
  mode: string;
  pid: number;
  /** TCP connections accepted (node-1) */
  accepted: number;
  /** CONNECT streams opened (node-1) or received (node-2) */
  streams: number;
  /** streams answered 200 (node-1) / upstream connections made (node-2) */
  upstreamConnected: number;
  errors: number;
  sessions: number;
  sessionErrors: number;
  /** TLS handshakes refused (node-2: e.g. no client certificate) */
  tlsRejected: number;
  open: number;
}

/** Starts node-2's end, then node-1's, and waits until both answer on their stats sockets. */
export async function startNaive(p: NaivePlan, say: (l: string) => void): Promise<Naive> {
  await mkdir(p.dir, { recursive: true });
  await chmod(p.dir, 0o700);
  const naive: Naive = { plan: p, procs: [] };
  const script = join(TOOLS, 'naive-tunnel.mjs');
  const common = ['--ca', p.files.ca, '--stats'];
  const ends = [
    {
      node: 'node-2',
      netns: p.node2.netns,
      args: ['--mode', 'server', '--listen', p.node2.ip, '--port', String(NAIVE_PORTS.tunnel), '--cert', p.files.serverPem, '--key', p.files.serverPem, ...common, join(p.dir, 'node-2.sock')],
    },
    {
      node: 'node-1',
      netns: p.node1.netns,
      args: [
        '--mode', 'client',
        '--listen', p.node1.ip,
        '--forward', `${NAIVE_PORTS.sink}=${p.server.ip}:${p.server.sinkPort},${NAIVE_PORTS.rr}=${p.server.ip}:${p.server.rrPort}`,
        '--peer', `${p.node2.ip}:${NAIVE_PORTS.tunnel}`,
        '--servername', SERVER_NAME,
        '--cert', p.files.clientCert, '--key', p.files.clientKey,
        ...common, join(p.dir, 'node-1.sock'),
      ],
    },
  ];
  for (const e of ends) {
    const statsSocket = e.args[e.args.length - 1]!;
    let exitCode: number | null = null;
    let spawned: import('node:child_process').ChildProcess | null = null;
    // plain `node`, no flags: the prototype as it would be run (`ip netns exec` execs, so the pid is node's)
    const argv = ['netns', 'exec', e.netns, process.execPath, script, ...e.args];
    const running = runCmd('ip', argv, { timeoutMs: 24 * 3600_000, detached: true, onSpawn: (c) => (spawned = c) });
    const child = spawned as import('node:child_process').ChildProcess | null;
    if (!child || child.pid === undefined) throw new Error(`could not start the naive tunnel in ${e.netns}`);
    const exited = running.then(
      (r) => {
        exitCode = r.code;
        if (r.stderr.trim()) say(`naive tunnel ${e.node} exited (${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
        return r.code;
      },
      () => null,
    );
    const proc: PeerProcess = { node: e.node, pid: child.pid, netns: e.netns, config: `${script} ${e.args.join(' ')}`, statsSocket, child, exited };
    naive.procs.push(proc);
    await writeFile(join(p.dir, 'pids'), naive.procs.map((x) => x.pid).join('\n') + '\n');
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exitCode !== null) throw new Error(`the naive tunnel on ${e.node} exited at start (code ${exitCode})`);
      if (/naive-tunnel/.test(cmdline(child.pid)) && existsSync(statsSocket)) {
        try {
          await naiveStats(statsSocket);
          break;
        } catch {
          /* not yet */
        }
      }
      if (Date.now() > deadline) throw new Error(`the naive tunnel on ${e.node} did not come up within 15 s (stats socket ${statsSocket})`);
      await sleep(50);
    }
  }
  return naive;
}

/** The counters of one end, from its stats socket (it writes one JSON line and closes). */
export async function naiveStats(socket: string): Promise<NaiveStats> {
  const out = await askSocket(socket, null);
  try {
    return JSON.parse(out) as NaiveStats;
  } catch {
    throw new Error(`${socket} answered ${JSON.stringify(out.slice(0, 200))}`);
  }
}
