/**
 * The L7 bench's peer: three HAProxy instances (the Debian package) in the places of ambit's
 * ztunnel node-1, waypoint and ztunnel node-2, with the same two mTLS hops.
 *
 *   node-1 (node-1 netns, node-1's address), `mode tcp`:
 *     frontend l7 :19011 → TLS 1.3 with a client certificate → the middle HAProxy
 *     frontend l4 :19010 → TLS 1.3 with a client certificate → node-2 (the L4 pair, for the split)
 *   middle (the netns of a plain pod on the waypoint's node, that pod's address), `mode http`:
 *     frontend l7 :19111, TLS 1.3, client certificate required and verified; one routing rule
 *     (`use_backend app if { path_beg /bench }`, as the bench's one HTTPRoute), x-request-id added
 *     when missing (as the waypoint does), an access-log line per request (as the waypoint, unless
 *     --no-access-log) → backend: TLS 1.3 with a client certificate to node-2, connections kept
 *     alive and reused (`http-reuse safe`)
 *   node-2 (node-2 netns, node-2's address), `mode tcp`:
 *     frontend l7 :19112 and l4 :19110, TLS 1.3, client certificate required → the server pod
 *
 * Certificates: bench/lib/haproxy.ts's (one CA from the project's own CA code, one serving
 * certificate presented by the middle and node-2, one SPIFFE client certificate presented by node-1
 * and the middle). Every client side also verifies the server's name. One thread each by default.
 */
import { mkdir, chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkConfig, SERVER_NAME, startInstance, writeCerts, type Peer, type PeerProcess } from '../lib/haproxy.js';

export const L7_PORTS = { node1L4: 19010, node1L7: 19011, middle: 19111, node2L4: 19110, node2L7: 19112 } as const;
/** the request path the bench sends, and the prefix the route (HTTPRoute and HAProxy rule) matches */
export const ROUTE_PREFIX = '/bench';

export interface TrioPlan {
  dir: string;
  threads: number;
  maxconn: number;
  /** an access-log line per request from the middle HAProxy (to DIR/middle-access.log) */
  accessLog: boolean;
  node1: { netns: string; ip: string };
  middle: { netns: string; ip: string; node: string };
  node2: { netns: string; ip: string };
  server: { ip: string; port: number };
}

export interface Trio {
  plan: TrioPlan;
  /** node-1, middle, node-2 */
  procs: PeerProcess[];
  files: Peer['files'];
  configs: Record<string, string>;
  accessLogFile: string | null;
}

function head(p: TrioPlan, sock: string, mode: 'tcp' | 'http', log: boolean): string[] {
  return [
    'global',
    `  nbthread ${p.threads}`,
    `  maxconn ${p.maxconn}`,
    `  stats socket ${sock} mode 600 level user`,
    '  ssl-default-bind-options ssl-min-ver TLSv1.3',
    '  ssl-default-server-options ssl-min-ver TLSv1.3',
    ...(log ? ['  log stdout format raw local0 info'] : []),
    '',
    'defaults',
    `  mode ${mode}`,
    ...(log ? ['  log global', '  option httplog'] : []),
    `  maxconn ${p.maxconn}`,
    '  timeout connect 5s',
    '  timeout client 30m',
    '  timeout server 30m',
    ...(mode === 'http' ? ['  timeout http-request 30s', '  timeout http-keep-alive 30m'] : []),
    '',
  ];
}

/** TLS towards the next hop: client certificate, server verified against the CA and by name. */
function tlsTo(f: Peer['files']): string {
  return `ssl crt ${f.clientPem} ca-file ${f.ca} verify required verifyhost ${SERVER_NAME} sni str(${SERVER_NAME})`;
}

/** TLS in: serving certificate, a client certificate from the CA required. */
function tlsIn(f: Peer['files']): string {
  return `ssl crt ${f.serverPem} ca-file ${f.ca} verify required`;
}

export function trioConfigs(p: TrioPlan, f: Peer['files'], sockets: Record<'node-1' | 'middle' | 'node-2', string>): Record<'node-1' | 'middle' | 'node-2', string> {
  const node1 = [
    ...head(p, sockets['node-1'], 'tcp', false),
    'frontend l7',
    `  bind ${p.node1.ip}:${L7_PORTS.node1L7}`,
    '  default_backend l7',
    '',
    'backend l7',
    `  server middle ${p.middle.ip}:${L7_PORTS.middle} ${tlsTo(f)}`,
    '',
    'frontend l4',
    `  bind ${p.node1.ip}:${L7_PORTS.node1L4}`,
    '  default_backend l4',
    '',
    'backend l4',
    `  server node-2 ${p.node2.ip}:${L7_PORTS.node2L4} ${tlsTo(f)}`,
    '',
  ];
  const middle = [
    ...head(p, sockets.middle, 'http', p.accessLog),
    'frontend l7',
    `  bind ${p.middle.ip}:${L7_PORTS.middle} ${tlsIn(f)}`,
    '  http-request set-header x-request-id %[uuid()] unless { req.hdr(x-request-id) -m found }',
    `  use_backend app if { path_beg ${ROUTE_PREFIX} }`,
    '',
    'backend app',
    '  http-reuse safe',
    `  server node-2 ${p.node2.ip}:${L7_PORTS.node2L7} ${tlsTo(f)}`,
    '',
  ];
  const node2 = [
    ...head(p, sockets['node-2'], 'tcp', false),
    'frontend l7',
    `  bind ${p.node2.ip}:${L7_PORTS.node2L7} ${tlsIn(f)}`,
    '  default_backend app',
    '',
    'frontend l4',
    `  bind ${p.node2.ip}:${L7_PORTS.node2L4} ${tlsIn(f)}`,
    '  default_backend app',
    '',
    'backend app',
    `  server app ${p.server.ip}:${p.server.port}`,
    '',
  ];
  return { 'node-1': node1.join('\n'), middle: middle.join('\n'), 'node-2': node2.join('\n') };
}

/** Writes certificates and configurations, checks them, starts the three HAProxies (node-1, middle, node-2) and waits until they answer. */
export async function startTrio(p: TrioPlan, say: (l: string) => void): Promise<Trio> {
  await mkdir(p.dir, { recursive: true });
  await chmod(p.dir, 0o700);
  const files = await writeCerts(p.dir);
  const names = ['node-1', 'middle', 'node-2'] as const;
  const sockets = Object.fromEntries(names.map((n) => [n, join(p.dir, `${n}.sock`)])) as Record<(typeof names)[number], string>;
  const texts = trioConfigs(p, files, sockets);
  const configs: Record<string, string> = {};
  for (const n of names) {
    configs[n] = join(p.dir, `haproxy-${n}.cfg`);
    await writeFile(configs[n]!, texts[n]);
    await checkConfig(configs[n]!);
  }
  const accessLogFile = p.accessLog ? join(p.dir, 'middle-access.log') : null;
  const trio: Trio = { plan: p, procs: [], files, configs: texts, accessLogFile };
  const netns = { 'node-1': p.node1.netns, middle: p.middle.netns, 'node-2': p.node2.netns };
  for (const n of names) {
    await startInstance({ dir: p.dir, node: n, netns: netns[n], config: configs[n]!, statsSocket: sockets[n], ...(n === 'middle' && accessLogFile ? { logFile: accessLogFile } : {}) }, trio.procs, say);
  }
  return trio;
}
