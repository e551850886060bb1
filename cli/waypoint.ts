/**
 * `ambit waypoint apply|generate|delete|list|status`: the waypoint commands Istio users know
 * from `istioctl waypoint`, same flags and output, against the cluster of the current kubeconfig.
 */
import { Command, Option } from 'commander';
import { stringify as toYaml } from 'yaml';
import type { CoreV1Api, CustomObjectsApi, KubernetesObjectApi, KubeConfig } from '@kubernetes/client-node';
import type { KubeApiError } from '../shared/config/kube-client.js';
import { GATEWAY_API, MESH_LISTENER, REVISION_LABEL, USE_WAYPOINT_LABEL, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL } from '../shared/config/waypoint-names.js';

// The Kubernetes client takes most of a second to load: only commands that talk to a cluster load it.
type KubeLib = typeof import('@kubernetes/client-node');
type KubeHelpers = typeof import('../shared/config/kube-client.js');

export { USE_WAYPOINT_LABEL, REVISION_LABEL };
export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const TRAFFIC_TYPES = ['all', 'none', 'service', 'workload'] as const;
const FIELD_MANAGER = 'ambit';
const DEFAULT_NAME = 'waypoint';
const NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

type Json = Record<string, unknown>;

interface Common {
  namespace?: string;
  name: string;
  kubeconfig?: string;
  context?: string;
  requestTimeout: string;
  /** a local mesh (`ambit local up`) instead of a cluster */
  mesh?: string;
  stateDir?: string;
}

/** What the waypoint commands need of where waypoints live: a cluster, or a local mesh. */
type Target = Pick<Cluster, 'namespace' | 'getNamespace' | 'labelNamespace' | 'getGateway' | 'listGateways' | 'deleteGateway' | 'applyGateway'>;

/** A Go duration ("90s", "1m30s", "500ms") or a number of seconds, in milliseconds. */
export function parseDuration(v: string): number {
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(v); m; m = re.exec(v)) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== v.length || v === '') throw new Error(`invalid duration "${v}" (use e.g. 90s, 2m, 1m30s)`);
  return total;
}

/** Columns the way Go's tabwriter (minwidth 0, padding 5) lines them up, as istioctl prints. */
export function tabwrite(rows: string[][], padding = 5): string {
  const cols = Math.max(...rows.map((r) => r.length));
  const widths: number[] = [];
  for (let c = 0; c < cols - 1; c++) widths[c] = Math.max(...rows.map((r) => (r[c] ?? '').length)) + padding;
  return rows.map((r) => r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c]!) : cell)).join('') + '\n').join('');
}

/** The waypoint Gateway for a name, namespace and traffic type (what `generate` prints). */
export function waypointGateway(o: { name: string; namespace?: string; for?: string; revision?: string }): Json {
  if (o.name === '') o.name = DEFAULT_NAME;
  if (o.name === 'none') throw new Error("invalid name provided for waypoint, 'none' is a reserved value");
  if (!NAME_RE.test(o.name)) throw new Error(`invalid name provided for waypoint, "${o.name}" is not a lowercase DNS label`);
  const labels: Record<string, string> = {};
  if (o.for !== undefined && o.for !== '') {
    if (!(TRAFFIC_TYPES as readonly string[]).includes(o.for)) throw new Error(`invalid traffic type: ${o.for}. Valid options are: [${TRAFFIC_TYPES.join(' ')}]`);
    labels[WAYPOINT_FOR_LABEL] = o.for;
  }
  if (o.revision) labels[REVISION_LABEL] = o.revision;
  return {
    apiVersion: GATEWAY_API,
    kind: 'Gateway',
    metadata: { ...(Object.keys(labels).length > 0 ? { labels } : {}), name: o.name, ...(o.namespace ? { namespace: o.namespace } : {}) },
    spec: { gatewayClassName: WAYPOINT_CLASS, listeners: [{ name: MESH_LISTENER.name, port: MESH_LISTENER.port, protocol: MESH_LISTENER.protocol }] },
  };
}

/** YAML the way Kubernetes tools print it (sorted keys, lists not indented under their key). */
export function gatewayYaml(gw: Json): string {
  return toYaml(gw, { sortMapEntries: true, indentSeq: false, lineWidth: 0 });
}

interface Condition {
  type?: string;
  status?: string;
  reason?: string;
  message?: string;
}

function conditions(gw: Json): Condition[] {
  const st = gw.status as Json | undefined;
  return Array.isArray(st?.conditions) ? (st.conditions as Condition[]) : [];
}

function programmed(gw: Json): boolean {
  return conditions(gw).some((c) => c.type === 'Programmed' && c.status === 'True');
}

/** The condition worth showing: a refused Accepted first, else Programmed, else "no status yet". */
function shownCondition(gw: Json): Required<Condition> {
  const cs = conditions(gw);
  const accepted = cs.find((c) => c.type === 'Accepted');
  const c = accepted && accepted.status === 'False' ? accepted : cs.find((x) => x.type === 'Programmed');
  if (!c) return { type: 'Programmed', status: 'Unknown', reason: 'Pending', message: 'no controller has reported on this waypoint yet (is ambit-control running?)' };
  return { type: c.type ?? '', status: c.status ?? '', reason: c.reason ?? '', message: c.message ?? '' };
}

function meta(gw: Json): { name: string; namespace: string; labels: Record<string, string> } {
  const m = (gw.metadata ?? {}) as Json;
  return { name: String(m.name ?? ''), namespace: String(m.namespace ?? ''), labels: (m.labels as Record<string, string> | undefined) ?? {} };
}

function isWaypoint(gw: Json): boolean {
  return ((gw.spec ?? {}) as Json).gatewayClassName === WAYPOINT_CLASS;
}

function byNamespaceThenName(a: Json, b: Json): number {
  const x = meta(a);
  const y = meta(b);
  return x.namespace.localeCompare(y.namespace) || x.name.localeCompare(y.name);
}

/** The cluster as the waypoint commands use it. */
class Cluster {
  readonly namespace: string;
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly objects: KubernetesObjectApi;
  private readonly timeoutMs: number;
  private readonly where: string;

  constructor(
    private readonly k8s: KubeLib,
    private readonly helpers: KubeHelpers,
    private readonly kc: KubeConfig,
    namespace: string | undefined,
    timeoutMs: number,
  ) {
    this.namespace = namespace || helpers.contextNamespace(kc);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.timeoutMs = timeoutMs;
    this.where = `the Kubernetes API server at ${kc.getCurrentCluster()?.server ?? '?'}`;
  }

  /** Runs one API call; a network failure becomes one sentence naming the server and context. */
  private async call<T>(what: string, p: () => Promise<T>): Promise<T> {
    try {
      return await this.helpers.withTimeout(p(), this.timeoutMs, what);
    } catch (err) {
      const e = this.helpers.kubeError(err, this.where);
      if (e.unreachable) e.message = `${e.message}; is the cluster running, and is kubeconfig context "${this.kc.getCurrentContext()}" the right one?`;
      if (e.status === 401) e.message = `the Kubernetes API server refused the credentials of kubeconfig context "${this.kc.getCurrentContext()}" (401 Unauthorized)`;
      throw e;
    }
  }

  async getNamespace(name: string): Promise<Json> {
    try {
      return (await this.call(`reading namespace ${name}`, () => this.core.readNamespace({ name }))) as unknown as Json;
    } catch (err) {
      if ((err as KubeApiError).status === 404) throw new Error(`namespace: ${name} not found`);
      throw err;
    }
  }

  async labelNamespace(name: string, labels: Record<string, string | null>): Promise<void> {
    await this.call(`labelling namespace ${name}`, () => this.core.patchNamespace({ name, body: { metadata: { labels } } }, this.k8s.setHeaderOptions('Content-Type', this.k8s.PatchStrategy.MergePatch)));
  }

  async getGateway(namespace: string, name: string): Promise<Json | null> {
    try {
      return (await this.call(`reading gateway ${namespace}/${name}`, () =>
        this.custom.getNamespacedCustomObject({ group: 'gateway.networking.k8s.io', version: 'v1', namespace, plural: 'gateways', name }),
      )) as Json;
    } catch (err) {
      if ((err as KubeApiError).status === 404) return null;
      throw err;
    }
  }

  async listGateways(namespace: string | null, labelSelector?: string): Promise<Json[]> {
    try {
      const list = (await this.call('listing gateways', () =>
        namespace === null
          ? this.custom.listClusterCustomObject({ group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways', labelSelector })
          : this.custom.listNamespacedCustomObject({ group: 'gateway.networking.k8s.io', version: 'v1', namespace, plural: 'gateways', labelSelector }),
      )) as { items?: Json[] };
      return list.items ?? [];
    } catch (err) {
      if ((err as KubeApiError).status === 404 && (err as KubeApiError).message.includes('could not find the requested resource')) {
        throw new Error('the cluster has no Kubernetes Gateway API CRDs, so it has no waypoints; install them first (kubectl apply -k manifests/crds)');
      }
      throw err;
    }
  }

  async deleteGateway(namespace: string, name: string): Promise<boolean> {
    try {
      await this.call(`deleting gateway ${namespace}/${name}`, () => this.custom.deleteNamespacedCustomObject({ group: 'gateway.networking.k8s.io', version: 'v1', namespace, plural: 'gateways', name }));
      return true;
    } catch (err) {
      if ((err as KubeApiError).status === 404) return false;
      throw err;
    }
  }

  async applyGateway(gw: Json, force: boolean): Promise<void> {
    await this.call(`applying gateway ${meta(gw).namespace}/${meta(gw).name}`, () =>
      this.objects.patch(gw as { apiVersion: string; kind: string; metadata: Json }, undefined, undefined, FIELD_MANAGER, force, this.k8s.PatchStrategy.ServerSideApply),
    );
  }
}

/**
 * Options of this command and the `waypoint` group above it: a value the user typed wins over a
 * default, and the subcommand's over the group's (commander's optsWithGlobals lets defaults win).
 */
function common<T extends object = object>(cmd: Command): Common & T {
  const chain: Command[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) chain.unshift(c);
  const out: Json = {};
  const fromUser = new Set<string>();
  for (const c of chain) {
    for (const [k, v] of Object.entries(c.opts())) {
      const given = c.getOptionValueSource(k) === 'cli' || c.getOptionValueSource(k) === 'env';
      if (given || (!fromUser.has(k) && !(k in out))) out[k] = v;
      if (given) fromUser.add(k);
    }
  }
  return out as unknown as Common & T;
}

async function clusterFor(o: Common): Promise<Target> {
  const { pickLocalMesh, LocalWaypointTarget } = await import('./local/waypoint-target.js');
  const local = pickLocalMesh(o);
  if (local) return new LocalWaypointTarget(local.root, local.name, o.namespace || 'default', (l) => process.stderr.write(`${l}\n`));
  const timeoutMs = parseDuration(o.requestTimeout);
  const [k8s, helpers] = await Promise.all([import('@kubernetes/client-node'), import('../shared/config/kube-client.js')]);
  const kc = helpers.loadKubeConfig({ kubeconfig: o.kubeconfig, context: o.context });
  return new Cluster(k8s, helpers, kc, o.namespace, timeoutMs);
}

/** Whether the user gave `--name` (status shows every waypoint unless one is named). */
function nameGiven(cmd: Command): boolean {
  for (let c: Command | null = cmd; c; c = c.parent) if (c.getOptionValueSource('name') === 'cli') return true;
  return false;
}

function namespaceGiven(cmd: Command): boolean {
  for (let c: Command | null = cmd; c; c = c.parent) if (c.getOptionValueSource('namespace') === 'cli') return true;
  return false;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function withCommonOptions(cmd: Command): Command {
  return cmd
    .option('-n, --namespace <namespace>', 'Kubernetes namespace (default: the kubeconfig context\'s, else "default")')
    .option('--name <name>', 'name of the waypoint', DEFAULT_NAME)
    .option('--kubeconfig <file>', 'kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)')
    .option('--context <name>', 'kubeconfig context to use')
    .option('--request-timeout <duration>', 'give up on one API request after this long', '30s')
    .option('--mesh <name>', 'a local mesh (`ambit local up`) instead of a cluster; used by default when no kubeconfig exists and one local mesh is up')
    .option('--state-dir <dir>', 'where local meshes keep their state (with --mesh)');
}

async function apply(cmd: Command, o: Common & { for?: string; revision?: string; enrollNamespace?: boolean; overwrite?: boolean; wait?: boolean; waypointTimeout: string }): Promise<void> {
  const timeout = parseDuration(o.waypointTimeout);
  const gwNoNs = waypointGateway({ name: o.name, for: o.for, revision: o.revision });
  const cluster = await clusterFor(o);
  const ns = cluster.namespace;
  const name = meta(gwNoNs).name;
  const gw = waypointGateway({ name, namespace: ns, for: o.for, revision: o.revision });
  const nsObj = await cluster.getNamespace(ns);
  const nsLabels = ((nsObj.metadata as Json | undefined)?.labels as Record<string, string> | undefined) ?? {};
  if (o.enrollNamespace) {
    const current = nsLabels[USE_WAYPOINT_LABEL];
    if (current && current !== name && !o.overwrite) {
      throw new Error(`namespace ${ns} already uses waypoint "${current}" (${USE_WAYPOINT_LABEL}=${current}); add --overwrite to switch it to "${name}"`);
    }
    if (nsLabels[DATAPLANE_MODE_LABEL] !== 'ambient') {
      process.stdout.write(`⚠️ Warning: namespace is not enrolled in ambient. Consider running\t\`kubectl label namespace ${ns} ${DATAPLANE_MODE_LABEL}=ambient\`\n`);
    }
  }
  const existing = await cluster.getGateway(ns, name).catch((err: KubeApiError) => {
    if (err.status === 404) return null; // no Gateway CRD: reported by the apply below
    throw err;
  });
  if (existing && !isWaypoint(existing)) {
    const cls = String(((existing.spec ?? {}) as Json).gatewayClassName ?? '');
    throw new Error(`gateway ${ns}/${name} already exists with gatewayClassName "${cls}"; it is not a waypoint, so it is left alone: choose another --name`);
  }
  try {
    await cluster.applyGateway(gw, o.overwrite === true);
  } catch (err) {
    const e = err as KubeApiError;
    if (e.status === 404) throw new Error(`missing Kubernetes Gateway CRDs need to be installed before applying a waypoint: ${e.message} (install them with: kubectl apply -k manifests/crds)`);
    if (e.status === 409) throw new Error(`waypoint ${ns}/${name} exists and another tool manages some of its fields (${e.message}); re-run with --overwrite to take them over`);
    throw err;
  }
  process.stdout.write(`✅ waypoint ${ns}/${name} applied\n`);
  if (o.wait) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const now = await cluster.getGateway(ns, name);
      if (now && programmed(now)) break;
      if (Date.now() >= deadline) {
        const c = now ? shownCondition(now) : null;
        throw new Error(`timed out while waiting for waypoint\t${ns}/${name}${c ? `: ${c.type}=${c.status} ${c.reason}: ${c.message}` : ''}`);
      }
      await sleep(Math.min(1000, Math.max(0, deadline - Date.now())));
    }
    process.stdout.write(`✅ waypoint ${ns}/${name} is ready!\n`);
  }
  if (o.enrollNamespace) {
    await cluster.labelNamespace(ns, { [USE_WAYPOINT_LABEL]: name });
    process.stdout.write(`✅ namespace ${ns} labeled with "${USE_WAYPOINT_LABEL}: ${name}"\n`);
  }
}

async function remove(names: string[], o: Common & { all?: boolean; revision?: string }): Promise<void> {
  if ((o.all || o.revision) && names.length > 0) throw new Error('cannot specify waypoint names when deleting all waypoints');
  if (!(o.all || o.revision) && names.length === 0) throw new Error('must specify a waypoint name or delete all using --all or delete specific revision using --revision');
  const cluster = await clusterFor(o);
  const ns = cluster.namespace;
  const targets: string[] = [];
  if (o.all || o.revision) {
    const gws = await cluster.listGateways(ns, o.revision ? `${REVISION_LABEL}=${o.revision}` : undefined);
    for (const g of gws.filter(isWaypoint).sort(byNamespaceThenName)) targets.push(meta(g).name);
  } else {
    const gws = new Map((await cluster.listGateways(ns)).filter(isWaypoint).map((g) => [meta(g).name, g]));
    for (const n of names) {
      if (gws.has(n)) targets.push(n);
      else process.stdout.write(`waypoint ${ns}/${n} not found\n`);
    }
  }
  const deleted: string[] = [];
  for (const n of targets) {
    if (await cluster.deleteGateway(ns, n)) {
      deleted.push(n);
      process.stdout.write(`waypoint ${ns}/${n} deleted\n`);
    } else process.stdout.write(`waypoint ${ns}/${n} not found\n`);
  }
  if (deleted.length > 0) {
    // The namespace label is left: traffic for it fails closed rather than silently skipping L7 policy.
    const nsObj = await cluster.getNamespace(ns).catch(() => null);
    const used = ((nsObj?.metadata as Json | undefined)?.labels as Record<string, string> | undefined)?.[USE_WAYPOINT_LABEL];
    if (used && deleted.includes(used)) {
      process.stderr.write(`⚠️ Warning: namespace ${ns} still has ${USE_WAYPOINT_LABEL}=${used}: its traffic is refused until a waypoint named "${used}" is back (remove the label with \`kubectl label namespace ${ns} ${USE_WAYPOINT_LABEL}-\`)\n`);
    }
  }
}

async function list(o: Common & { allNamespaces?: boolean }): Promise<void> {
  const cluster = await clusterFor(o);
  const gws = (await cluster.listGateways(o.allNamespaces ? null : cluster.namespace)).filter(isWaypoint).sort(byNamespaceThenName);
  if (gws.length === 0) {
    process.stdout.write('No waypoints found.\n');
    return;
  }
  const rows: string[][] = [o.allNamespaces ? ['NAMESPACE', 'NAME', 'REVISION', 'TRAFFIC TYPE', 'PROGRAMMED'] : ['NAME', 'REVISION', 'TRAFFIC TYPE', 'PROGRAMMED']];
  for (const g of gws) {
    const m = meta(g);
    const prog = conditions(g).find((c) => c.type === 'Programmed')?.status ?? 'False';
    // an unlabelled waypoint serves services (the default the mesh applies)
    const row = [m.name, m.labels[REVISION_LABEL] || 'default', m.labels[WAYPOINT_FOR_LABEL] || 'service', prog];
    rows.push(o.allNamespaces ? [m.namespace, ...row] : row);
  }
  process.stdout.write(tabwrite(rows));
}

async function status(cmd: Command, o: Common & { wait?: boolean; waypointTimeout: string }): Promise<void> {
  const timeout = parseDuration(o.waypointTimeout);
  const cluster = await clusterFor(o);
  const ns = cluster.namespace;
  const named = nameGiven(cmd);
  const fetch = async (): Promise<Json[]> => {
    if (named) {
      const g = await cluster.getGateway(ns, o.name);
      if (!g || !isWaypoint(g)) throw new Error(`waypoint ${ns}/${o.name} not found`);
      return [g];
    }
    return (await cluster.listGateways(ns)).filter(isWaypoint).sort(byNamespaceThenName);
  };
  let gws = await fetch();
  if (gws.length === 0) {
    process.stdout.write('No waypoints found.\n');
    return;
  }
  let timedOut: Json | undefined;
  if (o.wait) {
    const deadline = Date.now() + timeout;
    while (gws.some((g) => !programmed(g))) {
      if (Date.now() >= deadline) {
        timedOut = gws.find((g) => !programmed(g));
        break;
      }
      await sleep(Math.min(1000, Math.max(0, deadline - Date.now())));
      gws = await fetch();
    }
  }
  const withNs = !namespaceGiven(cmd);
  const rows: string[][] = [withNs ? ['NAMESPACE', 'NAME', 'STATUS', 'TYPE', 'REASON', 'MESSAGE'] : ['NAME', 'STATUS', 'TYPE', 'REASON', 'MESSAGE']];
  for (const g of gws) {
    const m = meta(g);
    const c = shownCondition(g);
    const row = [m.name, c.status, c.type, c.reason, c.message];
    rows.push(withNs ? [m.namespace, ...row] : row);
  }
  process.stdout.write(tabwrite(rows));
  if (timedOut) throw new Error(`timed out while retrieving status for waypoint\t${meta(timedOut).namespace}/${meta(timedOut).name}`);
}

/** The `ambit waypoint` command group. */
export function waypointCommand(): Command {
  const forOption = (): Option => new Option('--for <type>', `Specify the traffic type [${TRAFFIC_TYPES.join(' ')}] for the waypoint`);
  const revisionOption = (what: string): Option => new Option('-r, --revision <revision>', what);
  const group = withCommonOptions(new Command('waypoint').description('Manage waypoint configuration (Gateways of class istio-waypoint)'));

  group.addCommand(
    withCommonOptions(new Command('generate'))
      .description('Generate a waypoint configuration as YAML')
      .addOption(forOption())
      .addOption(revisionOption('The revision to label the waypoint with'))
      .action(function (this: Command) {
        const opts = common<{ for?: string; revision?: string }>(this);
        const gw = waypointGateway({ name: opts.name, namespace: namespaceGiven(this) ? opts.namespace : undefined, for: opts.for, revision: opts.revision });
        process.stdout.write(gatewayYaml(gw));
      }),
  );

  group.addCommand(
    withCommonOptions(new Command('apply'))
      .description('Apply a waypoint configuration to the cluster (server-side apply)')
      .addOption(forOption())
      .addOption(revisionOption('The revision to label the waypoint with'))
      .option('--enroll-namespace', 'If set, the namespace will be labeled with the waypoint name')
      .option('--overwrite', 'Overwrite the existing Waypoint used by the namespace, and take over fields another tool manages')
      .option('-w, --wait', 'Wait for the waypoint to be ready')
      .option('--waypoint-timeout <duration>', 'Timeout for waiting for waypoint ready', '90s')
      .action(async function (this: Command) {
        await apply(this, common<Parameters<typeof apply>[1]>(this));
      }),
  );

  group.addCommand(
    withCommonOptions(new Command('delete'))
      .description('Delete waypoints by name, or all of a namespace (--all) or of a revision (--revision)')
      .argument('[names...]', 'waypoints to delete')
      .option('--all', 'Delete all waypoints in the namespace')
      .addOption(revisionOption('Delete the specified version of the waypoint in the namespace'))
      .action(async function (this: Command, names: string[]) {
        await remove(names, common<Parameters<typeof remove>[1]>(this));
      }),
  );

  group.addCommand(
    withCommonOptions(new Command('list'))
      .description('List managed waypoint configurations in the cluster')
      .option('-A, --all-namespaces', 'List all waypoints in all namespaces')
      .action(async function (this: Command) {
        await list(common<Parameters<typeof list>[0]>(this));
      }),
  );

  group.addCommand(
    withCommonOptions(new Command('status'))
      .description('Show the status of waypoints in a namespace (or of the one named with --name)')
      .option('-w, --wait', 'Wait until the waypoints are programmed')
      .option('--waypoint-timeout <duration>', 'Timeout for retrieving status for waypoint', '90s')
      .action(async function (this: Command) {
        await status(this, common<Parameters<typeof status>[1]>(this));
      }),
  );
  return group;
}
