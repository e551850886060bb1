/**
 * A large synthetic mesh for the control plane bench: namespaces, pods, services and a few
 * policies as Kubernetes objects, the changes a cluster makes to them, and their YAML files.
 */
import { stringify } from 'yaml';
import type { KubeObject } from '../../shared/config/objects.js';

export interface MeshShape {
  pods: number;
  services: number;
  namespaces: number;
  nodes: number;
}

/** The kinds of change the bench makes, in turn. */
export const CHANGE_KINDS = ['pod-ip', 'pod-ready', 'pod-label', 'service-port', 'pod-add', 'pod-delete'] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];

/** One change: the objects to put (replace or add) and the keys to delete. */
export interface Change {
  kind: ChangeKind;
  put: KubeObject[];
  remove: string[];
  /** namespace whose file holds the changed objects (file mode) */
  namespace: string;
}

const key = (o: KubeObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

function uid(n: number): string {
  const h = n.toString(16).padStart(12, '0');
  return `6f1c2d3e-0a4b-4c5d-8e9f-${h}`;
}

function podIp(n: number): string {
  // 10.128.0.0/9: room for 8 million addresses, none reused within a run
  const v = 0x0a800000 + n;
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function serviceIp(n: number): string {
  return `10.96.${(n >>> 8) & 255}.${n & 255}`;
}

/** The mesh and what changes it: a cluster of `shape.pods` pods spread evenly over namespaces, nodes and services. */
export class SyntheticMesh {
  readonly objects = new Map<string, KubeObject>();
  private nextPod: number;
  private nextIp: number;
  private step = 0;
  private readonly podsPerService: number;
  private readonly servicesPerNs: number;

  constructor(readonly shape: MeshShape) {
    this.servicesPerNs = Math.ceil(shape.services / shape.namespaces);
    this.podsPerService = Math.ceil(shape.pods / shape.services);
    this.nextPod = shape.pods;
    this.nextIp = shape.pods;
    this.add(this.namespace('istio-system', {}));
    for (let n = 0; n < shape.namespaces; n++) {
      // three namespaces in four are enrolled, the rest run plain TCP workloads
      this.add(this.namespace(this.nsName(n), n % 4 === 3 ? {} : { 'istio.io/dataplane-mode': 'ambient' }));
    }
    for (let s = 0; s < shape.services; s++) this.add(this.service(s, 0));
    for (let p = 0; p < shape.pods; p++) this.add(this.pod(p, p, 'Running'));
    for (const o of this.policies()) this.add(o);
  }

  list(): KubeObject[] {
    return [...this.objects.values()];
  }

  count(kind: string): number {
    let n = 0;
    for (const o of this.objects.values()) if (o.kind === kind) n++;
    return n;
  }

  private add(o: KubeObject): void {
    this.objects.set(key(o), o);
  }

  nsName(n: number): string {
    return `team-${n}`;
  }

  /** Service s lives in namespace s mod namespaces and selects app=svc-s. */
  private serviceNs(s: number): number {
    return s % this.shape.namespaces;
  }

  private namespace(name: string, labels: Record<string, string>): KubeObject {
    return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
  }

  private service(s: number, variant: number): KubeObject {
    const ports: Record<string, unknown>[] = [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }];
    if (variant % 2 === 1) ports.push({ name: 'grpc', port: 9090, targetPort: 9090, protocol: 'TCP' });
    return {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `svc-${s}`, namespace: this.nsName(this.serviceNs(s)), labels: { app: `svc-${s}` } },
      spec: { selector: { app: `svc-${s}` }, clusterIP: serviceIp(s), ports },
    };
  }

  /** Pod p belongs to service p mod services (so each service has pods/services pods), on node p mod nodes. */
  private pod(p: number, ip: number, phase: string, app = p % this.shape.services): KubeObject {
    const ns = this.nsName(this.serviceNs(app));
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `svc-${app}-${p.toString(36).padStart(5, '0')}`,
        namespace: ns,
        uid: uid(p),
        labels: { app: `svc-${app}`, version: 'v1', 'pod-template-hash': `7d9f${(p % 97).toString(16)}c` },
      },
      spec: { nodeName: `node-${(p % this.shape.nodes) + 1}`, serviceAccountName: `svc-${app}`, containers: [{ name: 'app', image: 'registry.example/app:1' }] },
      status: { phase, podIP: phase === 'Pending' ? undefined : podIp(ip) },
    };
  }

  private policies(): KubeObject[] {
    const ap = (name: string, namespace: string, spec: Record<string, unknown>): KubeObject => ({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name, namespace },
      spec,
    });
    return [
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'PeerAuthentication',
        metadata: { name: 'default', namespace: 'istio-system' },
        spec: { mtls: { mode: 'STRICT' } },
      },
      ap('deny-legacy', this.nsName(0), { action: 'DENY', rules: [{ from: [{ source: { namespaces: [this.nsName(3)] } }] }] }),
      ap('svc-1-callers', this.nsName(1), {
        selector: { matchLabels: { app: 'svc-1' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: ['cluster.local/ns/team-2/sa/svc-2'] } }], to: [{ operation: { ports: ['8080'] } }] }],
      }),
      ap('no-ssh', this.nsName(2), { action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] }),
      ap('audit-admin', this.nsName(4), { action: 'AUDIT', rules: [{ to: [{ operation: { ports: ['9000'] } }] }] }),
    ];
  }

  private existingPod(): KubeObject {
    // a pod spread evenly over the mesh: stride through the pods by a prime
    const pods = this.podKeys();
    return this.objects.get(pods[(this.step * 7919) % pods.length]!)!;
  }

  private podKeysCache: string[] | null = null;
  private podKeys(): string[] {
    if (!this.podKeysCache) this.podKeysCache = [...this.objects.keys()].filter((k) => k.startsWith('Pod/'));
    return this.podKeysCache;
  }

  /** The next change (kinds in turn), applied to the objects. */
  next(): Change {
    const kind = CHANGE_KINDS[this.step % CHANGE_KINDS.length]!;
    this.step++;
    const c = this.make(kind);
    for (const k of c.remove) this.objects.delete(k);
    for (const o of c.put) this.add(o);
    if (c.remove.length > 0 || kind === 'pod-add') this.podKeysCache = null;
    return c;
  }

  private make(kind: ChangeKind): Change {
    switch (kind) {
      case 'pod-ip': {
        // the pod restarted in place and got a new address
        const o = this.existingPod();
        const status = { ...o.status, phase: 'Running', podIP: podIp(this.nextIp++) };
        return { kind, put: [{ ...o, status }], remove: [], namespace: o.metadata.namespace! };
      }
      case 'pod-ready': {
        // Running → Pending (no longer ready, still has its IP) or back
        const o = this.existingPod();
        const phase = o.status?.phase === 'Running' ? 'Pending' : 'Running';
        return { kind, put: [{ ...o, status: { ...o.status, phase } }], remove: [], namespace: o.metadata.namespace! };
      }
      case 'pod-label': {
        // relabelled to another service of its namespace: one service loses an endpoint, another gains it
        const o = this.existingPod();
        const app = Number(o.metadata.labels!.app!.slice(4));
        const to = (app + this.shape.namespaces) % this.shape.services;
        const labels = { ...o.metadata.labels, app: `svc-${to}` };
        return { kind, put: [{ ...o, metadata: { ...o.metadata, labels } }], remove: [], namespace: o.metadata.namespace! };
      }
      case 'service-port': {
        // a port added to, or removed from, a service
        const s = (this.step * 31) % this.shape.services;
        const old = this.objects.get(`Service/${this.nsName(this.serviceNs(s))}/svc-${s}`)!;
        const variant = ((old.spec!.ports as unknown[]).length === 1 ? 1 : 0);
        return { kind, put: [this.service(s, variant)], remove: [], namespace: old.metadata.namespace! };
      }
      case 'pod-add': {
        const p = this.nextPod++;
        const o = this.pod(p, this.nextIp++, 'Running');
        return { kind, put: [o], remove: [], namespace: o.metadata.namespace! };
      }
      case 'pod-delete': {
        const o = this.existingPod();
        return { kind, put: [], remove: [key(o)], namespace: o.metadata.namespace! };
      }
    }
  }

  /** The objects as YAML files: one per namespace (its pods and services), plus namespaces and policies. */
  files(): Map<string, string> {
    const byFile = new Map<string, KubeObject[]>();
    for (const o of this.objects.values()) {
      const file = o.kind === 'Namespace' ? '00-namespaces.yaml' : o.kind === 'Pod' || o.kind === 'Service' ? `${o.metadata.namespace}.yaml` : '99-policies.yaml';
      let list = byFile.get(file);
      if (!list) byFile.set(file, (list = []));
      list.push(o);
    }
    const out = new Map<string, string>();
    for (const [f, list] of byFile) out.set(f, this.yaml(list));
    return out;
  }

  /** The YAML file of one namespace's pods and services. */
  namespaceFile(ns: string): { name: string; text: string } {
    const list = [...this.objects.values()].filter((o) => (o.kind === 'Pod' || o.kind === 'Service') && o.metadata.namespace === ns);
    return { name: `${ns}.yaml`, text: this.yaml(list) };
  }

  private readonly yamlCache = new WeakMap<KubeObject, string>();
  private yaml(list: KubeObject[]): string {
    return list
      .map((o) => {
        let t = this.yamlCache.get(o);
        if (t === undefined) {
          t = stringify(JSON.parse(JSON.stringify(o)) as unknown);
          this.yamlCache.set(o, t);
        }
        return t;
      })
      .join('---\n');
  }
}
