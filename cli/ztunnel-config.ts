// `ambit ztunnel-config` (alias `zc`): ztunnel's view of the mesh, read from each node's
// admin endpoint (/config_dump, /connections), in the columns `istioctl ztunnel-config` uses.
// Formatting is pure (views in, text out); only the command at the bottom does I/O.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import type { Service, Waypoint, Workload } from '../shared/model/types.js';
import type { AuthorizationPolicy, PeerAuthentication } from '../shared/policy/types.js';
import { describeCertificate } from '../shared/identity/csr.js';
import { httpInNetns } from '../shared/netns/http.js';
import { netnsPath, readState, type LocalState } from './local/cluster.js';

const DEFAULT_STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';
const ADMIN_PORT = 15000;
/** WAYPOINT of a workload or service that uses none */
const NO_WAYPOINT = 'None';
/** WAYPOINT of one bound to a waypoint the dump does not know (deleted, or not created yet), as istioctl shows it */
const UNKNOWN_WAYPOINT = 'NA';

/** A certificate as ztunnel's /config_dump lists it (dates as ISO text). */
export interface CertificateEntry {
  identity: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  state: 'available' | 'pending' | 'failed';
  error?: string;
  /** serial of the trusted root the leaf chains to */
  root?: string;
}

/** A root the ztunnel trusts (during a root rotation, two). */
export interface TrustRootEntry {
  serial: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  fingerprint: string;
}

/** A pod whose traffic this ztunnel captures. */
export interface CapturedPod {
  uid: string;
  name: string;
  namespace: string;
  ip: string;
  identity: string;
  netns: string;
}

/** What ztunnel's /config_dump answers (ztunnel/admin.ts `configDump`). */
export interface ZtunnelConfigDump {
  node: string;
  version: number;
  workloads: Workload[];
  services: Service[];
  capturedPods: CapturedPod[];
  certificates: CertificateEntry[];
  /** absent from ztunnels older than root rotation */
  trustRoots?: TrustRootEntry[];
  policies: AuthorizationPolicy[];
  peerAuthentications: PeerAuthentication[];
  /** the mesh's waypoints (absent from dumps of ztunnels that predate them) */
  waypoints?: Waypoint[];
  recentDenies: unknown[];
  pool: unknown[];
}

/** One open connection as ztunnel's /connections lists it. */
export interface ConnectionEntry {
  id: number;
  direction: 'inbound' | 'outbound';
  src: string;
  srcIdentity: string | null;
  dst: string;
  dstIdentity: string | null;
  service: string | null;
  protocol: string;
  ageMs: number;
}

/** What one node's ztunnel said: its config dump and, when asked for, its open connections. */
export interface NodeView {
  node: string;
  dump: ZtunnelConfigDump;
  connections: ConnectionEntry[];
}

/** Serial and validity of a certificate that is not in the dump (the mesh's root). */
export interface CertificateSummary {
  serial: string;
  notBefore: string;
  notAfter: string;
}

export type OutputFormat = 'short' | 'json' | 'yaml';

export interface ViewOptions {
  output: OutputFormat;
  /** only objects of this namespace */
  namespace?: string;
  /** workloads: only the one with this IP */
  address?: string;
  /** the trust root every leaf chains to, shown as a Root row per identity */
  root?: CertificateSummary | null;
  /** for VALID CERT; default now */
  now?: Date;
  /** per-node views (certificates, connections) get a NODE column; default: when several nodes answered */
  showNode?: boolean;
}

export const VIEWS = ['workloads', 'services', 'policies', 'certificates', 'connections'] as const;
export type ViewName = (typeof VIEWS)[number];

/** Columns padded to the widest cell, two spaces apart (cells never contain two spaces). */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

function render(data: unknown, output: OutputFormat, short: () => string): string {
  if (output === 'json') return JSON.stringify(data, null, 2);
  if (output === 'yaml') return stringify(data).trimEnd();
  return short();
}

/** Orders by the first differing field. */
function compareFields(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < a.length; i++) {
    const c = (a[i] ?? '').localeCompare(b[i] ?? '');
    if (c !== 0) return c;
  }
  return 0;
}

/** Views newest-config first, so merged objects come from the most recent dump. */
function newestFirst(views: readonly NodeView[]): NodeView[] {
  return [...views].sort((a, b) => b.dump.version - a.dump.version);
}

/** Objects of every node's dump, one per key (every ztunnel holds the whole mesh; the newest dump wins). */
function merged<T>(views: readonly NodeView[], pick: (d: ZtunnelConfigDump) => readonly T[] | undefined, key: (t: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const v of newestFirst(views)) for (const t of pick(v.dump) ?? []) if (!seen.has(key(t))) seen.set(key(t), t);
  return [...seen.values()];
}

/**
 * The WAYPOINT column, as istioctl fills it: the name of the waypoint the object is bound to
 * (Gateway key `ns/name`), None when it uses none, NA when the dumps do not know that waypoint.
 */
export function waypointName(key: string | undefined, waypoints: ReadonlyMap<string, Waypoint>): string {
  if (!key) return NO_WAYPOINT;
  return waypoints.get(key)?.name ?? UNKNOWN_WAYPOINT;
}

function waypointsOf(views: readonly NodeView[]): Map<string, Waypoint> {
  return new Map(merged(views, (d) => d.waypoints, (w) => w.key).map((w) => [w.key, w]));
}

/** The workloads shown: merged across nodes, filtered, sorted by namespace, name, node. */
export function selectWorkloads(views: readonly NodeView[], opts: Pick<ViewOptions, 'namespace' | 'address'>): Workload[] {
  return merged(views, (d) => d.workloads, (w) => w.uid)
    .filter((w) => (opts.namespace === undefined || w.namespace === opts.namespace) && (opts.address === undefined || w.ip === opts.address))
    .sort((a, b) => compareFields([a.namespace, a.name, a.node], [b.namespace, b.name, b.node]));
}

/** NAMESPACE POD NAME ADDRESS NODE WAYPOINT PROTOCOL */
export function formatWorkloads(views: readonly NodeView[], opts: ViewOptions): string {
  const ws = selectWorkloads(views, opts);
  const waypoints = waypointsOf(views);
  return render(ws, opts.output, () =>
    table(
      ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL'],
      ws.map((w) => [w.namespace, w.name, w.ip, w.node, waypointName(w.waypoint, waypoints), w.protocol]),
    ),
  );
}

/** A service with its endpoint counts as the services view shows them. */
export interface ServiceRow {
  service: Service;
  ready: number;
  total: number;
}

/** The services shown, with ready/total endpoints judged by the workloads the same dumps hold. */
export function selectServices(views: readonly NodeView[], opts: Pick<ViewOptions, 'namespace'>): ServiceRow[] {
  const workloads = new Map(merged(views, (d) => d.workloads, (w) => w.uid).map((w) => [w.uid, w]));
  return merged(views, (d) => d.services, (s) => s.key)
    .filter((s) => opts.namespace === undefined || s.namespace === opts.namespace)
    .sort((a, b) => compareFields([a.namespace, a.name, a.hostname], [b.namespace, b.name, b.hostname]))
    .map((service) => ({
      service,
      total: service.endpoints.length,
      ready: service.endpoints.filter((uid) => workloads.get(uid)?.ready === true).length,
    }));
}

/** NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS */
export function formatServices(views: readonly NodeView[], opts: ViewOptions): string {
  const rows = selectServices(views, opts);
  const waypoints = waypointsOf(views);
  return render(
    rows.map((r) => ({ ...r.service, readyEndpoints: r.ready })),
    opts.output,
    () =>
      table(
        ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS'],
        rows.map((r) => [r.service.namespace, r.service.name, r.service.vip ?? 'None', waypointName(r.service.waypoint, waypoints), `${r.ready}/${r.total}`]),
      ),
  );
}

/** ztunnel's names for an action: Allow, Deny, Audit. */
export function actionName(p: Pick<AuthorizationPolicy, 'action' | 'dryRun'>): string {
  const name = p.action.charAt(0) + p.action.slice(1).toLowerCase();
  return p.dryRun ? `${name} (dry-run)` : name;
}

/** ztunnel's names for a scope: Global (mesh-wide), Namespace, WorkloadSelector. */
export function scopeName(scope: AuthorizationPolicy['scope']): string {
  return scope === 'mesh' ? 'Global' : scope === 'namespace' ? 'Namespace' : 'WorkloadSelector';
}

/** The authorization policies shown, sorted by namespace and name. */
export function selectPolicies(views: readonly NodeView[], opts: Pick<ViewOptions, 'namespace'>): AuthorizationPolicy[] {
  return merged(views, (d) => d.policies, (p) => p.key)
    .filter((p) => opts.namespace === undefined || p.namespace === opts.namespace)
    .sort((a, b) => compareFields([a.namespace, a.name], [b.namespace, b.name]));
}

/** NAMESPACE POLICY NAME ACTION SCOPE */
export function formatPolicies(views: readonly NodeView[], opts: ViewOptions): string {
  const ps = selectPolicies(views, opts);
  return render(ps, opts.output, () =>
    table(
      ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'],
      ps.map((p) => [p.namespace, p.name, actionName(p), scopeName(p.scope)]),
    ),
  );
}

/** One row of the certificates view. */
export interface CertificateRow {
  node: string;
  identity: string;
  type: 'Leaf' | 'Root' | 'NA';
  status: 'Available' | 'Initializing' | 'Unavailable';
  valid: boolean;
  serial: string | null;
  notAfter: string | null;
  notBefore: string | null;
  error?: string;
}

/** RFC 3339 to the second, as istioctl prints it: 2033-03-22T13:04:57Z. */
export function certTime(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function within(c: { notBefore: string; notAfter: string }, now: Date): boolean {
  const from = Date.parse(c.notBefore);
  const to = Date.parse(c.notAfter);
  return !Number.isNaN(from) && !Number.isNaN(to) && now.getTime() >= from && now.getTime() < to;
}

/** Each node's certificates: a Leaf per identity (plus the Root it chains to), or an NA row while pending or failed. */
export function selectCertificates(views: readonly NodeView[], opts: Pick<ViewOptions, 'namespace' | 'root' | 'now'>): CertificateRow[] {
  const now = opts.now ?? new Date();
  const rows: CertificateRow[] = [];
  for (const v of [...views].sort((a, b) => a.node.localeCompare(b.node))) {
    const certs = [...(v.dump.certificates ?? [])].sort((a, b) => a.identity.localeCompare(b.identity));
    for (const c of certs) {
      if (opts.namespace !== undefined && identityNamespace(c.identity) !== opts.namespace) continue;
      if (c.state !== 'available') {
        const status = c.state === 'pending' ? 'Initializing' : 'Unavailable';
        rows.push({ node: v.node, identity: c.identity, type: 'NA', status, valid: false, serial: null, notAfter: null, notBefore: null, ...(c.error ? { error: c.error } : {}) });
        continue;
      }
      rows.push({ node: v.node, identity: c.identity, type: 'Leaf', status: 'Available', valid: within(c, now), serial: c.serial, notAfter: certTime(c.notAfter), notBefore: certTime(c.notBefore) });
      // the root this leaf chains to, as its ztunnel says (two roots are trusted during a rotation)
      const r = v.dump.trustRoots?.find((x) => x.serial === c.root) ?? opts.root;
      if (r) rows.push({ node: v.node, identity: c.identity, type: 'Root', status: 'Available', valid: within(r, now), serial: r.serial, notAfter: certTime(r.notAfter), notBefore: certTime(r.notBefore) });
    }
  }
  return rows;
}

/** The namespace of a SPIFFE identity spiffe://TD/ns/NS/sa/SA, or null. */
export function identityNamespace(identity: string): string | null {
  return /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/[^/]+$/.exec(identity)?.[1] ?? null;
}

/** [NODE] CERTIFICATE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE (NODE: see `showNode`). */
export function formatCertificates(views: readonly NodeView[], opts: ViewOptions): string {
  const rows = selectCertificates(views, opts);
  const perNode = opts.showNode ?? views.length > 1;
  return render(rows, opts.output, () =>
    table(
      [...(perNode ? ['NODE'] : []), 'CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE'],
      rows.map((r) => [...(perNode ? [r.node] : []), r.identity, r.type, r.status, String(r.valid), r.serial ?? 'NA', r.notAfter ?? 'NA', r.notBefore ?? 'NA']),
    ),
  );
}

/** One row of the connections view: seen from the local pod (LOCAL is its side, REMOTE the peer's). */
export interface ConnectionRow {
  node: string;
  /** the local pod as NAME.NAMESPACE, or its address when the dump does not know it */
  workload: string;
  namespace: string | null;
  direction: 'Inbound' | 'Outbound';
  local: string;
  remote: string;
  /** the service the client addressed, if any */
  remoteTarget: string;
  protocol: string;
  ageMs: number;
}

function hostOf(addr: string): string {
  const m = /^\[(.+)\]:\d+$/.exec(addr) ?? /^(.+):\d+$/.exec(addr);
  return m ? m[1]! : addr;
}

/** Each node's open connections, named by the local pod, sorted by node, workload, direction, local address. */
export function selectConnections(views: readonly NodeView[], opts: Pick<ViewOptions, 'namespace'>): ConnectionRow[] {
  const rows: ConnectionRow[] = [];
  const byIp = new Map(merged(views, (d) => d.workloads, (w) => w.uid).map((w) => [w.ip, w]));
  for (const v of views) {
    for (const c of v.connections) {
      const inbound = c.direction === 'inbound';
      const local = inbound ? c.dst : c.src;
      const w = byIp.get(hostOf(local));
      if (opts.namespace !== undefined && w?.namespace !== opts.namespace) continue;
      rows.push({
        node: v.node,
        workload: w ? `${w.name}.${w.namespace}` : hostOf(local),
        namespace: w?.namespace ?? null,
        direction: inbound ? 'Inbound' : 'Outbound',
        local,
        remote: inbound ? c.src : c.dst,
        remoteTarget: c.service ?? '',
        protocol: c.protocol,
        ageMs: c.ageMs,
      });
    }
  }
  return rows.sort((a, b) => compareFields([a.node, a.workload, a.direction, a.local], [b.node, b.workload, b.direction, b.local]));
}

/** [NODE] WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL (NODE: see `showNode`). */
export function formatConnections(views: readonly NodeView[], opts: ViewOptions): string {
  const rows = selectConnections(views, opts);
  const perNode = opts.showNode ?? views.length > 1;
  return render(rows, opts.output, () =>
    table(
      [...(perNode ? ['NODE'] : []), 'WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL'],
      rows.map((r) => [...(perNode ? [r.node] : []), r.workload, r.direction, r.local, r.remote, r.remoteTarget, r.protocol]),
    ),
  );
}

/** Every view: tables one after another, or one object with a key per view. */
export function formatAll(views: readonly NodeView[], opts: ViewOptions): string {
  if (opts.output === 'short') return VIEWS.map((v) => formatView(v, views, opts)).join('\n\n');
  const data = {
    workloads: selectWorkloads(views, opts),
    services: selectServices(views, opts).map((r) => ({ ...r.service, readyEndpoints: r.ready })),
    policies: selectPolicies(views, opts),
    certificates: selectCertificates(views, opts),
    connections: selectConnections(views, opts),
  };
  return render(data, opts.output, () => '');
}

/** One view by name. */
export function formatView(view: ViewName | 'all', views: readonly NodeView[], opts: ViewOptions): string {
  switch (view) {
    case 'workloads':
      return formatWorkloads(views, opts);
    case 'services':
      return formatServices(views, opts);
    case 'policies':
      return formatPolicies(views, opts);
    case 'certificates':
      return formatCertificates(views, opts);
    case 'connections':
      return formatConnections(views, opts);
    case 'all':
      return formatAll(views, opts);
  }
}

// ---- I/O: asking the ztunnels of a local mesh ----

async function adminGet<T>(netns: string, node: string, path: string): Promise<T> {
  let r: { status: number; body: string };
  try {
    r = await httpInNetns(netnsPath(netns), { host: '127.0.0.1', port: ADMIN_PORT, path, timeoutMs: 5000 });
  } catch (err) {
    throw new Error(`the ztunnel on ${node} does not answer on its admin port (${(err as Error).message}); is it running? \`ambit local start ztunnel --node ${node}\``, { cause: err });
  }
  if (r.status !== 200) throw new Error(`the ztunnel on ${node} answered ${path} with HTTP ${r.status}: ${r.body.trim()}`);
  return JSON.parse(r.body) as T;
}

/** The mesh's trust root (local mode keeps it in the state folder), or null. */
async function localRoot(s: LocalState): Promise<CertificateSummary | null> {
  const file = join(s.dir, 'ca', 'root-cert.pem');
  if (!existsSync(file)) return null;
  try {
    const d = describeCertificate(await readFile(file, 'utf8'));
    return { serial: d.serial, notBefore: d.notBefore.toISOString(), notAfter: d.notAfter.toISOString() };
  } catch {
    return null;
  }
}

interface CommandOptions {
  output: OutputFormat;
  node?: string;
  namespace?: string;
  address?: string;
  name: string;
  stateDir: string;
}

/** Asks each chosen node's ztunnel; a node that does not answer is reported and skipped unless it was the only one. */
async function collect(o: CommandOptions, withConnections: boolean): Promise<{ views: NodeView[]; root: CertificateSummary | null; asked: number }> {
  const s = await readState(o.stateDir, o.name);
  if (!s) throw new Error(`no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\``);
  if (process.getuid?.() !== 0) throw new Error('ambit ztunnel-config needs root to reach ztunnel\'s admin port inside the node\'s network namespace: run it as root (e.g. with sudo).');
  const nodes = o.node === undefined ? s.plan.nodes : s.plan.nodes.filter((n) => n.name === o.node);
  if (nodes.length === 0) throw new Error(`no node "${o.node}" in mesh "${o.name}"; nodes: ${s.plan.nodes.map((n) => n.name).join(', ')}`);
  const answers = await Promise.allSettled(
    nodes.map(async (n): Promise<NodeView> => {
      const [dump, connections] = await Promise.all([
        adminGet<ZtunnelConfigDump>(n.netns, n.name, '/config_dump'),
        withConnections ? adminGet<ConnectionEntry[]>(n.netns, n.name, '/connections') : Promise.resolve([]),
      ]);
      return { node: n.name, dump, connections };
    }),
  );
  const views: NodeView[] = [];
  const errors: string[] = [];
  for (const a of answers) {
    if (a.status === 'fulfilled') views.push(a.value);
    else errors.push((a.reason as Error).message);
  }
  if (views.length === 0) throw new Error(errors.join('; '));
  for (const e of errors) process.stderr.write(`warning: ${e}\n`);
  return { views, root: await localRoot(s), asked: nodes.length };
}

/** `ambit ztunnel-config` (alias `zc`): workloads, services, policies, certificates and connections as ztunnel sees them. */
export function ztunnelConfigCommand(): Command {
  const zc = new Command('ztunnel-config')
    .alias('zc')
    .description('show ztunnel\'s view of the mesh (read from each node\'s admin endpoint), like `istioctl ztunnel-config`');
  const common = (c: Command, view: ViewName | 'all'): Command => {
    c.addOption(new Option('-o, --output <format>', 'output format').choices(['short', 'json', 'yaml']).default('short'))
      .addOption(new Option('--node <node>', 'ask only this node\'s ztunnel (default: every node, merged)'))
      .addOption(new Option('-n, --namespace <ns>', 'only objects of this namespace'));
    if (view === 'workloads' || view === 'all') c.addOption(new Option('--address <ip>', 'only the workload with this IP'));
    return c
      .addOption(new Option('--name <name>', 'local mesh name').default('ambit'))
      .addOption(new Option('--state-dir <dir>', 'where local meshes keep their state').default(DEFAULT_STATE_ROOT))
      .action(async (o: CommandOptions) => {
        const { views, root, asked } = await collect(o, view === 'connections' || view === 'all');
        const opts: ViewOptions = {
          output: o.output,
          ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
          ...(o.address !== undefined ? { address: o.address } : {}),
          root,
          showNode: asked > 1,
        };
        console.log(formatView(view, views, opts));
      });
  };
  common(zc.command('workloads').aliases(['workload', 'w']).description('workloads: NAMESPACE POD NAME ADDRESS NODE WAYPOINT PROTOCOL'), 'workloads');
  common(zc.command('services').aliases(['service', 'svc', 's']).description('services: NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS (ready/total)'), 'services');
  common(zc.command('policies').aliases(['policy', 'pol']).description('authorization policies: NAMESPACE POLICY NAME ACTION SCOPE'), 'policies');
  common(zc.command('certificates').aliases(['certificate', 'certs', 'cert', 'secret']).description('workload certificates per node: leaf per identity and its root, serial and validity'), 'certificates');
  common(zc.command('connections').aliases(['connection', 'conn']).description('open connections per node: WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL'), 'connections');
  common(zc.command('all').description('every view above'), 'all');
  return zc;
}
