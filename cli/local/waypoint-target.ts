/**
 * `ambit waypoint …` against a local mesh: the same commands and output as against a cluster.
 * Gateways are objects of the mesh's config; their status is what the control plane makes of
 * them (the model's waypoint problem) and whether the waypoint process answers its readiness
 * probe inside its pod's netns.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { readObjects, type KubeObject } from '../../shared/config/objects.js';
import { translate } from '../../shared/config/translate.js';
import { isWaypointGateway } from '../../shared/config/waypoint-binding.js';
import { GATEWAY_NAME_LABEL } from '../../shared/config/waypoint-names.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { apply, deleteObjects, label, netnsPath, readState, type LocalState } from './cluster.js';

type Json = Record<string, unknown>;

export const DEFAULT_STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';

/**
 * Which local mesh the waypoint commands use, or null for a cluster: `--mesh` names one; without
 * it, a local mesh is used only when no Kubernetes config is around and exactly one mesh is up.
 */
export function pickLocalMesh(o: { mesh?: string; stateDir?: string; kubeconfig?: string; context?: string }, env: NodeJS.ProcessEnv = process.env): { root: string; name: string } | null {
  const root = o.stateDir ?? DEFAULT_STATE_ROOT;
  if (o.mesh) return { root, name: o.mesh };
  if (o.kubeconfig || o.context || env.KUBECONFIG || env.KUBERNETES_SERVICE_HOST || existsSync(join(homedir(), '.kube', 'config'))) return null;
  let meshes: string[] = [];
  try {
    meshes = readdirSync(root).filter((n) => existsSync(join(root, n, 'state.json')));
  } catch {
    return null;
  }
  return meshes.length === 1 ? { root, name: meshes[0]! } : null;
}

function meta(o: Json): { name: string; namespace: string } {
  const m = (o.metadata ?? {}) as Json;
  return { name: String(m.name ?? ''), namespace: String(m.namespace ?? 'default') };
}

/** A local mesh seen through the calls the waypoint commands make of a cluster. */
export class LocalWaypointTarget {
  constructor(
    private readonly root: string,
    private readonly mesh: string,
    readonly namespace: string,
    private readonly say: (line: string) => void = () => undefined,
  ) {}

  get where(): string {
    return `local mesh "${this.mesh}"`;
  }

  private async state(): Promise<LocalState> {
    const s = await readState(this.root, this.mesh);
    if (!s) throw new Error(`no local mesh named "${this.mesh}" is up (state in ${this.root}); start one with \`ambit local up -f DIR\``);
    return s;
  }

  private async objects(): Promise<{ state: LocalState; objects: KubeObject[] }> {
    const state = await this.state();
    return { state, objects: await readObjects(join(state.dir, 'config')) };
  }

  /** Runs a local apply/delete with objects written to a temporary file. */
  private async withFile(objects: Json[], fn: (file: string) => Promise<unknown>): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-waypoint-'));
    try {
      const file = join(dir, 'objects.yaml');
      await writeFile(file, objects.map((o) => stringify(o)).join('---\n'));
      await fn(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async getNamespace(name: string): Promise<Json> {
    const { objects } = await this.objects();
    const ns = objects.find((o) => o.kind === 'Namespace' && o.metadata.name === name);
    if (!ns) throw new Error(`namespace: ${name} not found`);
    return ns as unknown as Json;
  }

  async labelNamespace(name: string, labels: Record<string, string | null>): Promise<void> {
    const changes = Object.entries(labels).map(([k, v]) => (v === null ? `${k}-` : `${k}=${v}`));
    await label({ stateRoot: this.root, name: this.mesh, kind: 'namespace', ref: name, changes, say: this.say });
  }

  /** Gateways with the status a controller would give them. */
  async listGateways(namespace: string | null, labelSelector?: string): Promise<Json[]> {
    const { state, objects } = await this.objects();
    const snapshot = translate(objects);
    const [lk, lv] = labelSelector ? (labelSelector.split('=', 2) as [string, string | undefined]) : [null, undefined];
    const out: Json[] = [];
    for (const g of objects.filter(isWaypointGateway)) {
      const ns = g.metadata.namespace ?? 'default';
      if (namespace !== null && ns !== namespace) continue;
      if (lk !== null && g.metadata.labels?.[lk] !== lv) continue;
      const w = snapshot.waypoints?.find((x) => x.key === `${ns}/${g.metadata.name}`);
      const problem = !w ? 'not known to the control plane' : w.problem !== null ? w.problem : await this.probe(state, objects, ns, g.metadata.name);
      const conditions = [
        { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Resource accepted' },
        problem === null
          ? { type: 'Programmed', status: 'True', reason: 'Programmed', message: 'Resource programmed, assigned to waypoint pod(s) ' + (w?.pods.join(', ') ?? '') }
          : { type: 'Programmed', status: 'False', reason: 'NotReady', message: problem },
      ];
      out.push({ ...(g as unknown as Json), status: { conditions } });
    }
    return out;
  }

  /** null when a waypoint pod answers its readiness probe, else why not. */
  private async probe(state: LocalState, objects: KubeObject[], namespace: string, name: string): Promise<string | null> {
    const pods = objects.filter((o) => o.kind === 'Pod' && (o.metadata.namespace ?? 'default') === namespace && o.metadata.labels?.[GATEWAY_NAME_LABEL] === name);
    for (const p of pods) {
      const plan = state.plan.pods.find((x) => x.key === `${namespace}/${p.metadata.name}`);
      if (!plan) continue;
      try {
        const r = await httpInNetns(netnsPath(plan.netns), { host: '127.0.0.1', port: 15021, path: '/healthz/ready', timeoutMs: 2000 });
        if (r.status === 200) return null;
        return `waypoint pod ${p.metadata.name} is not ready: ${r.body.trim()}`;
      } catch (err) {
        return `waypoint pod ${p.metadata.name} does not answer its readiness probe: ${(err as Error).message}`;
      }
    }
    return 'no waypoint pod is running';
  }

  async getGateway(namespace: string, name: string): Promise<Json | null> {
    return (await this.listGateways(namespace)).find((g) => meta(g).name === name) ?? null;
  }

  async applyGateway(gw: Json): Promise<void> {
    await this.withFile([gw], (file) => apply({ stateRoot: this.root, name: this.mesh, file, say: this.say }));
  }

  async deleteGateway(namespace: string, name: string): Promise<boolean> {
    const { objects } = await this.objects();
    const g = objects.find((o) => isWaypointGateway(o) && (o.metadata.namespace ?? 'default') === namespace && o.metadata.name === name);
    if (!g) return false;
    await this.withFile([{ apiVersion: g.apiVersion, kind: 'Gateway', metadata: { name, namespace } }], (file) => deleteObjects({ stateRoot: this.root, name: this.mesh, file, say: this.say }));
    return true;
  }
}
