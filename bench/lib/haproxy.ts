/**
 * The peer on the ambit path's places: two HAProxy instances (the Debian package), run inside the
 * node netns where the two ztunnels run.
 *
 *   node-1: TCP proxy listening on the node's address; for every client connection it opens a TLS 1.3
 *           connection to node-2's HAProxy, presenting a client certificate and verifying the
 *           server's certificate (CA + name).
 *   node-2: terminates TLS 1.3, requires and verifies the client certificate against the same CA,
 *           and opens a plain TCP connection to the server pod.
 *
 * Certificates come from the project's own CA code (shared/identity): a fresh ECDSA P-256 root,
 * a serving certificate for node-2's HAProxy, and a SPIFFE workload certificate (the layout
 * ztunnel presents) for node-1's HAProxy. One thread per HAProxy (see `threads`), no logging.
 */
import { type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';
import { alive, cmdline, runCmd, sleep } from './proc.js';

export const HAPROXY_BIN = 'haproxy';
/** ports of node-1's HAProxy (clients connect here) and node-2's (mTLS) */
export const PEER_PORTS = { sink: 19000, rr: 19001, sinkTls: 19100, rrTls: 19101 } as const;
export const SERVER_NAME = 'haproxy-node-2.bench.internal';

export interface PeerPlan {
  dir: string;
  threads: number;
  maxconn: number;
  node1: { netns: string; ip: string };
  node2: { netns: string; ip: string };
  server: { ip: string; sinkPort: number; rrPort: number };
}

export interface PeerProcess {
  /** node-1, node-2 (or, in the L7 bench, where the middle one runs) */
  node: string;
  pid: number;
  netns: string;
  config: string;
  statsSocket: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

export interface Peer {
  plan: PeerPlan;
  procs: PeerProcess[];
  files: { ca: string; clientPem: string; clientCert: string; clientKey: string; serverPem: string };
  version: string;
}

/** `haproxy -v`, or null when it is not installed. */
export async function haproxyVersion(): Promise<string | null> {
  try {
    const r = await runCmd(HAPROXY_BIN, ['-v'], { timeoutMs: 10_000 });
    if (r.code !== 0) return null;
    return /HAProxy version (\S+)/.exec(r.stdout)?.[1] ?? r.stdout.split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

export async function writeCerts(dir: string): Promise<Peer['files']> {
  const ca = await CertificateAuthority.generate({ trustDomain: 'bench.internal', commonName: 'ambit bench HAProxy peer CA', validDays: 2 });
  const serving = await ca.issueServing({ dnsNames: [SERVER_NAME], ttlSeconds: 86_400 });
  const id = new Identity('bench.internal', 'plain', 'haproxy-node-1');
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const client = await ca.signCsr(csrPem, id, { ttlSeconds: 86_400 });
  const files = {
    ca: join(dir, 'ca.pem'),
    clientPem: join(dir, 'client.pem'),
    clientCert: join(dir, 'client-cert.pem'),
    clientKey: join(dir, 'client-key.pem'),
    serverPem: join(dir, 'server.pem'),
  };
  const nl = (s: string): string => (s.endsWith('\n') ? s : s + '\n');
  await writeFile(files.ca, nl(ca.certPem), { mode: 0o600 });
  // HAProxy's `crt`: certificate and key in one file
  await writeFile(files.clientPem, nl(client.certPem) + nl(keyPem), { mode: 0o600 });
  await writeFile(files.clientCert, nl(client.certPem), { mode: 0o600 });
  await writeFile(files.clientKey, nl(keyPem), { mode: 0o600 });
  await writeFile(files.serverPem, nl(serving.certPem) + nl(serving.keyPem), { mode: 0o600 });
  return files;
}

function globalSection(p: PeerPlan, sock: string): string[] {
  return [
    'global',
    `  nbthread ${p.threads}`,
    `  maxconn ${p.maxconn}`,
    `  stats socket ${sock} mode 600 level user`,
    '  ssl-default-bind-options ssl-min-ver TLSv1.3',
    '  ssl-default-server-options ssl-min-ver TLSv1.3',
    '',
    'defaults',
    '  mode tcp',
    `  maxconn ${p.maxconn}`,
    '  timeout connect 5s',
    '  timeout client 30m',
    '  timeout server 30m',
    '',
  ];
}

function node1Config(p: PeerPlan, f: Peer['files'], sock: string): string {
  const out = globalSection(p, sock);
  for (const [name, listen, target] of [
    ['sink', PEER_PORTS.sink, PEER_PORTS.sinkTls],
    ['rr', PEER_PORTS.rr, PEER_PORTS.rrTls],
  ] as const) {
    out.push(
      `frontend ${name}`,
      `  bind ${p.node1.ip}:${listen}`,
      `  default_backend ${name}`,
      '',
      `backend ${name}`,
      `  server node-2 ${p.node2.ip}:${target} ssl crt ${f.clientPem} ca-file ${f.ca} verify required verifyhost ${SERVER_NAME} sni str(${SERVER_NAME})`,
      '',
    );
  }
  return out.join('\n');
}

function node2Config(p: PeerPlan, f: Peer['files'], sock: string): string {
  const out = globalSection(p, sock);
  for (const [name, listen, port] of [
    ['sink', PEER_PORTS.sinkTls, p.server.sinkPort],
    ['rr', PEER_PORTS.rrTls, p.server.rrPort],
  ] as const) {
    out.push(
      `frontend ${name}`,
      `  bind ${p.node2.ip}:${listen} ssl crt ${f.serverPem} ca-file ${f.ca} verify required`,
      `  default_backend ${name}`,
      '',
      `backend ${name}`,
      `  server app ${p.server.ip}:${port}`,
      '',
    );
  }
  return out.join('\n');
}

/** Kills HAProxy processes an interrupted earlier run left behind (pids recorded in DIR/pids, checked against their command line). */
export async function removeLeftoverPeer(dir: string): Promise<number[]> {
  const file = join(dir, 'pids');
  const killed: number[] = [];
  if (existsSync(file)) {
    for (const pid of readFileSync(file, 'utf8').split(/\s+/).filter(Boolean).map(Number)) {
      if (alive(pid) && cmdline(pid).includes(dir)) {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      }
    }
  }
  await rm(dir, { recursive: true, force: true });
  return killed;
}

/** Writes certificates and configurations, checks them with `haproxy -c`, starts both HAProxies and waits until they listen. */
export async function startPeer(p: PeerPlan, version: string, say: (l: string) => void): Promise<Peer> {
  await mkdir(p.dir, { recursive: true });
  await chmod(p.dir, 0o700);
  const files = await writeCerts(p.dir);
  const procs: PeerProcess[] = [];
  const peer: Peer = { plan: p, procs, files, version };
  for (const node of ['node-1', 'node-2'] as const) {
    const sock = join(p.dir, `${node}.sock`);
    const config = join(p.dir, `haproxy-${node}.cfg`);
    await writeFile(config, node === 'node-1' ? node1Config(p, files, sock) : node2Config(p, files, sock));
    await checkConfig(config);
  }
  for (const node of ['node-1', 'node-2'] as const) {
    const netns = node === 'node-1' ? p.node1.netns : p.node2.netns;
    await startInstance({ dir: p.dir, node, netns, config: join(p.dir, `haproxy-${node}.cfg`), statsSocket: join(p.dir, `${node}.sock`) }, procs, say);
  }
  return peer;
}

/** `haproxy -c`: the configuration is valid. */
export async function checkConfig(config: string): Promise<void> {
  const check = await runCmd(HAPROXY_BIN, ['-c', '-q', '-f', config], { timeoutMs: 15_000 });
  if (check.code !== 0) throw new Error(`haproxy -c -f ${config} failed: ${(check.stderr + check.stdout).trim()}`);
}

export interface InstancePlan {
  /** the peer's folder: its pids file lists every instance started */
  dir: string;
  node: string;
  netns: string;
  config: string;
  statsSocket: string;
  /** append HAProxy's stdout and stderr (its `log stdout` lines) to this file instead of the runner's pipe */
  logFile?: string;
}

/**
 * Starts one HAProxy in a network namespace (foreground, no master process), adds it to `procs`
 * and to DIR/pids, and waits until its stats socket answers.
 */
export async function startInstance(i: InstancePlan, procs: PeerProcess[], say: (l: string) => void): Promise<PeerProcess> {
  let exitCode: number | null = null;
  // -db: foreground, no daemon, no master process; `ip netns exec` (and `sh -c exec`) exec, so the pid is HAProxy's
  const argv = i.logFile
    ? ['ip', 'netns', 'exec', i.netns, 'sh', '-c', 'exec "$0" "$@" >>"$AMBIT_BENCH_HAPROXY_LOG" 2>&1', HAPROXY_BIN, '-db', '-f', i.config]
    : ['ip', 'netns', 'exec', i.netns, HAPROXY_BIN, '-db', '-f', i.config];
  let spawned: ChildProcess | null = null;
  const running = runCmd(argv[0]!, argv.slice(1), {
    timeoutMs: 24 * 3600_000,
    detached: true,
    onSpawn: (c) => (spawned = c),
    ...(i.logFile ? { env: { ...process.env, AMBIT_BENCH_HAPROXY_LOG: i.logFile } } : {}),
  });
  const child = spawned as ChildProcess | null;
  if (!child) throw new Error(`could not start haproxy in ${i.netns}`);
  const exited = running.then(
    (r) => {
      exitCode = r.code;
      if (r.stderr.trim()) say(`haproxy ${i.node} exited (${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      return r.code;
    },
    () => null,
  );
  if (child.pid === undefined) throw new Error(`could not start haproxy in ${i.netns}`);
  const proc: PeerProcess = { node: i.node, pid: child.pid, netns: i.netns, config: i.config, statsSocket: i.statsSocket, child, exited };
  procs.push(proc);
  await writeFile(join(i.dir, 'pids'), procs.map((x) => x.pid).join('\n') + '\n');
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exitCode !== null) throw new Error(`haproxy on ${i.node} exited at start (code ${exitCode}); config ${i.config}`);
    if (/haproxy/.test(cmdline(child.pid)) && existsSync(i.statsSocket)) {
      try {
        await haproxyCommand(i.statsSocket, 'show info');
        break;
      } catch {
        /* not yet */
      }
    }
    if (Date.now() > deadline) throw new Error(`haproxy on ${i.node} did not come up within 10 s (stats socket ${i.statsSocket})`);
    await sleep(50);
  }
  return proc;
}

/** Stops every HAProxy of a peer (SIGTERM, then SIGKILL) and removes its folder. */
export async function stopPeer(peer: { procs: PeerProcess[]; plan: { dir: string } } | null): Promise<void> {
  if (!peer) return;
  await Promise.all(
    peer.procs.map(async (x) => {
      if (!alive(x.pid)) return;
      x.child.kill('SIGTERM');
      const t = await Promise.race([x.exited.then(() => 'exited'), sleep(3000).then(() => 'timeout')]);
      if (t === 'timeout' && alive(x.pid)) x.child.kill('SIGKILL');
      await Promise.race([x.exited, sleep(2000)]);
    }),
  );
  await rm(peer.plan.dir, { recursive: true, force: true });
}

/**
 * Reads a stats socket's whole answer (until it closes its side), after sending `command` and a
 * newline when one is given; fails after 5 s without an answer.
 */
export function askSocket(socket: string, command: string | null): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer from ${socket} within 5 s`));
    }, 5000);
    if (command !== null) s.on('connect', () => s.end(`${command}\n`));
    s.on('data', (c) => (out += c.toString()));
    s.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Sends one command to a HAProxy stats socket and returns the answer. */
export function haproxyCommand(socket: string, command: string): Promise<string> {
  return askSocket(socket, command);
}

/** Cumulative sessions (stot) per frontend, from `show stat`. */
export async function frontendSessions(socket: string): Promise<Record<string, number>> {
  const csv = await haproxyCommand(socket, 'show stat');
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const head = lines[0]!.replace(/^# /, '').split(',');
  const iName = head.indexOf('pxname');
  const iSv = head.indexOf('svname');
  const iStot = head.indexOf('stot');
  const out: Record<string, number> = {};
  for (const l of lines.slice(1)) {
    const f = l.split(',');
    if (f[iSv] === 'FRONTEND') out[f[iName]!] = Number(f[iStot]);
  }
  return out;
}

/** Counters from `show info` that say how TLS went (full handshakes vs resumptions). */
export async function sslInfo(socket: string): Promise<Record<string, number>> {
  const info = await haproxyCommand(socket, 'show info');
  const out: Record<string, number> = {};
  for (const line of info.split('\n')) {
    const m = /^(CumSslConns|SslFrontendMaxKeyRate|SslBackendMaxKeyRate|MaxSslRate|CumConns|Maxconn|Maxsock|Ulimit-n|Nbthread):\s*(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}
