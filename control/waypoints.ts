/**
 * Waypoints in a cluster: for every Gateway of class `istio-waypoint` the controller applies a
 * ServiceAccount, Deployment and Service (server-side apply, field manager `ambit`, owned by the
 * Gateway so Kubernetes removes them with it) and reports on the Gateway's status whether it is
 * Accepted and Programmed, with reasons a user can act on.
 */
import { createHash } from 'node:crypto';
import { CustomObjectsApi, KubernetesObjectApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { KubeObject } from '../shared/config/objects.js';
import { KubeSource } from '../shared/config/kube-source.js';
import { kubeError, withTimeout } from '../shared/config/kube-client.js';
import { CONTROL_SERVER_NAME } from '../shared/control/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';

import { GATEWAY_API, GATEWAY_NAME_LABEL, MESH_LISTENER, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL } from '../shared/config/waypoint-names.js';
import { listenerProblem } from '../shared/config/waypoint-binding.js';
import { WAYPOINT_NODE_FLAGS } from '../shared/node-flags.js';

export { listenerProblem };

export { GATEWAY_API, GATEWAY_NAME_LABEL, MESH_LISTENER, WAYPOINT_CLASS, WAYPOINT_FOR_LABEL };
import { MANAGED_LABEL, MANAGED_VALUE } from '../shared/config/waypoint-names.js';

export { MANAGED_LABEL, MANAGED_VALUE };
export const FIELD_MANAGER = 'ambit';
export const TOKEN_PATH = '/var/run/secrets/tokens/ambit-token';

export interface WaypointOptions {
  /** container image every ambit component runs from */
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** control plane gRPC address the waypoint dials */
  controlAddress?: string;
  trustDomain?: string;
  /** audience of the waypoint's projected ServiceAccount token */
  tokenAudience?: string;
  /** mesh roots, handed to the waypoint so it can verify the control plane */
  rootsPem?: string[];
}

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> {
  if (!isObj(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

function ownerReference(gw: KubeObject): Json {
  return { apiVersion: GATEWAY_API, kind: 'Gateway', name: gw.metadata.name, uid: gw.metadata.uid ?? '', controller: true };
}

/**
 * The objects that make a waypoint run, for one Gateway (pure): its ServiceAccount (the
 * waypoint's identity is spiffe://<td>/ns/<ns>/sa/<gateway name>), a Deployment running
 * `node <WAYPOINT_NODE_FLAGS> dist/waypoint/main.js --name <gw> --namespace <ns>`, and a Service on 15008.
 * Labels and annotations from `spec.infrastructure` are carried onto all of them.
 */
export function waypointObjects(gateway: KubeObject, opts: WaypointOptions): KubeObject[] {
  const name = gateway.metadata.name;
  const namespace = gateway.metadata.namespace ?? 'default';
  const infra = isObj(gateway.spec?.infrastructure) ? gateway.spec.infrastructure : {};
  const infraLabels = stringMap(infra.labels);
  const infraAnnotations = stringMap(infra.annotations);
  const selector = { [GATEWAY_NAME_LABEL]: name };
  const labels = { ...infraLabels, ...selector, [MANAGED_LABEL]: MANAGED_VALUE, 'app.kubernetes.io/component': 'waypoint', 'app.kubernetes.io/managed-by': 'ambit' };
  const meta = (): KubeObject['metadata'] & Json => ({
    name,
    namespace,
    labels: { ...labels },
    ...(Object.keys(infraAnnotations).length > 0 ? { annotations: { ...infraAnnotations } } : {}),
    ownerReferences: [ownerReference(gateway)],
  });
  const audience = opts.tokenAudience ?? 'ambit-ca';
  const env: Json[] = [
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'INSTANCE_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'SERVICE_ACCOUNT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
    { name: 'AMBIT_CONTROL_ADDRESS', value: opts.controlAddress ?? `${CONTROL_SERVER_NAME}:15012` },
    { name: 'AMBIT_TRUST_DOMAIN', value: opts.trustDomain ?? 'cluster.local' },
    { name: 'AMBIT_TOKEN_FILE', value: TOKEN_PATH },
    ...(opts.rootsPem && opts.rootsPem.length > 0 ? [{ name: 'AMBIT_ROOT_CERT', value: opts.rootsPem.map((p) => p.trim() + '\n').join('') }] : []),
  ];
  const serviceAccount = { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(), automountServiceAccountToken: false } as unknown as KubeObject;
  const deployment: KubeObject = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(),
    spec: {
      // replicas left unset: `kubectl scale` or an HPA own it, not this controller
      selector: { matchLabels: selector },
      template: {
        metadata: {
          labels: { ...infraLabels, ...selector, 'istio.io/dataplane-mode': 'none', 'app.kubernetes.io/component': 'waypoint' },
          annotations: { ...infraAnnotations, 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020', 'prometheus.io/path': '/stats/prometheus' },
        },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 30,
          securityContext: { runAsNonRoot: true, runAsUser: 1337, runAsGroup: 1337, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [
            {
              name: 'waypoint',
              image: opts.image,
              imagePullPolicy: opts.imagePullPolicy ?? 'IfNotPresent',
              command: ['node', ...WAYPOINT_NODE_FLAGS, 'dist/waypoint/main.js'],
              args: ['--name', name, '--namespace', namespace],
              env,
              ports: [
                { name: 'hbone', containerPort: MESH_LISTENER.port, protocol: 'TCP' },
                { name: 'metrics', containerPort: 15020, protocol: 'TCP' },
                { name: 'status-port', containerPort: 15021, protocol: 'TCP' },
              ],
              readinessProbe: { httpGet: { path: '/healthz/ready', port: 15021 }, periodSeconds: 5, failureThreshold: 3 },
              resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, privileged: false, capabilities: { drop: ['ALL'] } },
              volumeMounts: [{ name: 'ambit-token', mountPath: '/var/run/secrets/tokens', readOnly: true }],
            },
          ],
          volumes: [{ name: 'ambit-token', projected: { sources: [{ serviceAccountToken: { audience, expirationSeconds: 43200, path: 'ambit-token' } }] } }],
        },
      },
    },
  };
  const service: KubeObject = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(),
    spec: {
      type: 'ClusterIP',
      selector,
      ports: [{ name: MESH_LISTENER.name, port: MESH_LISTENER.port, targetPort: MESH_LISTENER.port, protocol: 'TCP' }],
    },
  };
  return [serviceAccount, deployment, service];
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export interface GatewayStatus {
  conditions: Condition[];
  addresses?: { type: string; value: string }[];
  listeners?: { name: string; supportedKinds: unknown[]; attachedRoutes: number; conditions: Condition[] }[];
}

function deploymentState(d: KubeObject | undefined): { ready: boolean; message: string } {
  if (!d) return { ready: false, message: 'waiting for the waypoint Deployment to be created' };
  const st = (d.status ?? {}) as Json;
  const available = typeof st.availableReplicas === 'number' ? st.availableReplicas : 0;
  const wanted = typeof (d.spec ?? {}).replicas === 'number' ? ((d.spec ?? {}).replicas as number) : 1;
  if (available >= 1) return { ready: true, message: `waypoint Deployment has ${available}/${wanted} replicas available` };
  const conds = Array.isArray(st.conditions) ? (st.conditions as Json[]) : [];
  const stuck = conds.find((c) => (c.type === 'Progressing' && c.status === 'False') || (c.type === 'ReplicaFailure' && c.status === 'True'));
  if (stuck) return { ready: false, message: `waypoint Deployment is not progressing: ${String(stuck.message ?? stuck.reason ?? '')}` };
  return { ready: false, message: `waiting for the waypoint Deployment to be ready (${available}/${wanted} replicas available)` };
}

/**
 * The Gateway status a waypoint should show (pure): Accepted (or ListenersNotValid), and
 * Programmed once its Deployment has an available replica (else Pending, saying what it waits
 * for). lastTransitionTime is kept from `gateway.status` while a condition's status holds.
 */
export function waypointStatus(gateway: KubeObject, deployment: KubeObject | undefined, service: KubeObject | undefined, now: Date = new Date()): GatewayStatus {
  const generation = typeof (gateway.metadata as Json).generation === 'number' ? ((gateway.metadata as Json).generation as number) : undefined;
  const previous = Array.isArray((gateway.status ?? {}).conditions) ? ((gateway.status ?? {}).conditions as Condition[]) : [];
  const prevListeners = Array.isArray((gateway.status ?? {}).listeners) ? ((gateway.status ?? {}).listeners as GatewayStatus['listeners'] & object) : [];
  const at = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const cond = (type: string, ok: boolean, reason: string, message: string, before: Condition[] = previous): Condition => {
    const status = ok ? 'True' : 'False';
    const old = before.find((c) => c.type === type);
    return { type, status, reason, message, ...(generation !== undefined ? { observedGeneration: generation } : {}), lastTransitionTime: old && old.status === status && old.lastTransitionTime ? old.lastTransitionTime : at };
  };
  const problem = listenerProblem(gateway);
  if (problem) {
    return {
      conditions: [
        cond('Accepted', false, 'ListenersNotValid', problem),
        cond('Programmed', false, 'Invalid', `the Gateway is not accepted as a waypoint: ${problem}`),
      ],
    };
  }
  const d = deploymentState(deployment);
  const clusterIP = isObj(service?.spec) && typeof service.spec.clusterIP === 'string' && service.spec.clusterIP !== '' && service.spec.clusterIP !== 'None' ? service.spec.clusterIP : null;
  const ns = gateway.metadata.namespace ?? 'default';
  const programmed = d.ready && clusterIP !== null;
  const why = !d.ready ? d.message : clusterIP === null ? 'waiting for the waypoint Service to get a cluster IP' : `waypoint ready at ${clusterIP}:${MESH_LISTENER.port}`;
  const beforeListener = prevListeners.find((l) => l.name === MESH_LISTENER.name)?.conditions ?? [];
  return {
    conditions: [cond('Accepted', true, 'Accepted', 'accepted as a waypoint (ambit)'), cond('Programmed', programmed, programmed ? 'Programmed' : 'Pending', why)],
    addresses: clusterIP ? [{ type: 'IPAddress', value: clusterIP }] : [{ type: 'Hostname', value: `${gateway.metadata.name}.${ns}.svc.cluster.local` }],
    listeners: [
      {
        name: MESH_LISTENER.name,
        supportedKinds: [],
        attachedRoutes: 0,
        conditions: [
          cond('Accepted', true, 'Accepted', 'HBONE listener accepted', beforeListener),
          cond('Programmed', programmed, programmed ? 'Programmed' : 'Pending', why, beforeListener),
          cond('ResolvedRefs', true, 'ResolvedRefs', 'no references to resolve', beforeListener),
        ],
      },
    ],
  };
}

/** Whether two statuses say the same (timestamps aside). */
export function sameStatus(a: unknown, b: GatewayStatus): boolean {
  const norm = (v: unknown): unknown => JSON.parse(JSON.stringify(v ?? {}, (k, x: unknown) => (k === 'lastTransitionTime' ? undefined : x)));
  const pick = (s: unknown): unknown => {
    const o = isObj(s) ? s : {};
    return norm({ conditions: o.conditions ?? [], addresses: o.addresses, listeners: o.listeners });
  };
  return JSON.stringify(pick(a)) === JSON.stringify(pick(b));
}

/** How the controller writes to the cluster (a seam for tests). */
export interface WaypointWriter {
  apply(o: KubeObject): Promise<void>;
  applyStatus(gateway: KubeObject, status: GatewayStatus): Promise<void>;
}

/** Server-side apply through @kubernetes/client-node. */
export function kubeWaypointWriter(kc: KubeConfig, timeoutMs = 15_000): WaypointWriter {
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const server = kc.getCurrentCluster()?.server;
  return {
    async apply(o) {
      const { source: _s, ...body } = o;
      try {
        await withTimeout(objects.patch(body, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply), timeoutMs, `applying ${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);
      } catch (err) {
        throw kubeError(err, server);
      }
    },
    async applyStatus(gw, status) {
      const namespace = gw.metadata.namespace ?? 'default';
      try {
        await withTimeout(
          custom.patchNamespacedCustomObjectStatus(
            { group: 'gateway.networking.k8s.io', version: 'v1', namespace, plural: 'gateways', name: gw.metadata.name, body: { apiVersion: GATEWAY_API, kind: 'Gateway', metadata: { name: gw.metadata.name, namespace }, status }, fieldManager: FIELD_MANAGER, force: true },
            setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
          ),
          timeoutMs,
          `writing the status of Gateway ${namespace}/${gw.metadata.name}`,
        );
      } catch (err) {
        throw kubeError(err, server);
      }
    },
  };
}

/** Gateways and Services as the control plane sees them. */
export interface GatewayView {
  objects(): KubeObject[];
  on(event: 'change', fn: () => void): unknown;
}

export interface WaypointControllerOptions extends WaypointOptions {
  kubeConfig: KubeConfig;
  /** Gateways and Services (the control plane's KubeSource) */
  view: GatewayView;
  log: Logger;
  writer?: WaypointWriter;
  /** re-apply everything this often, repairing hand edits and deleted objects */
  resyncMs?: number;
  /** Deployments source (default: a KubeSource of the Deployments this controller labels) */
  deployments?: { start(): Promise<KubeObject[]>; objects: KubeObject[]; on(e: 'change', fn: () => void): unknown; stop(): void };
}

/** Keeps every waypoint Gateway's ServiceAccount, Deployment, Service and status in place. */
export class WaypointController {
  private readonly writer: WaypointWriter;
  private readonly deployments: NonNullable<WaypointControllerOptions['deployments']>;
  /** gateway uid → hash of what was last applied for it */
  private readonly applied = new Map<string, { hash: string }>();
  private running = false;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private resync: NodeJS.Timeout | null = null;
  private retryDelay = 500;
  private stopped = false;
  private idle: (() => void)[] = [];

  constructor(private readonly opts: WaypointControllerOptions) {
    this.writer = opts.writer ?? kubeWaypointWriter(opts.kubeConfig);
    this.deployments =
      opts.deployments ??
      new KubeSource({
        kubeConfig: opts.kubeConfig,
        log: opts.log,
        resources: [{ apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments', namespaced: true, labelSelector: `${MANAGED_LABEL}=${MANAGED_VALUE}` }],
        check: () => undefined,
      });
  }

  async start(): Promise<void> {
    await this.deployments.start();
    this.opts.view.on('change', () => this.trigger());
    this.deployments.on('change', () => this.trigger());
    this.resync = setInterval(() => {
      this.applied.clear();
      this.trigger();
    }, this.opts.resyncMs ?? 5 * 60_000);
    this.trigger(0);
  }

  /** Resolves when no reconcile is running or pending (for tests). */
  settled(): Promise<void> {
    if (!this.running && !this.timer) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private trigger(delay = 50): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, delay);
  }

  private async run(): Promise<void> {
    this.running = true;
    let failed = false;
    try {
      failed = await this.reconcileAll();
    } finally {
      this.running = false;
    }
    if (this.stopped) return;
    if (failed) {
      const d = this.retryDelay;
      this.retryDelay = Math.min(this.retryDelay * 2, 30_000);
      this.trigger(d);
    } else {
      this.retryDelay = 500;
      if (this.again) this.trigger();
    }
    this.again = false;
    if (!this.running && !this.timer) for (const fn of this.idle.splice(0)) fn();
  }

  /** One pass over every waypoint Gateway; true when something failed and should be retried. */
  private async reconcileAll(): Promise<boolean> {
    const objects = this.opts.view.objects();
    const gateways = objects.filter((o) => o.kind === 'Gateway' && (o.spec ?? {}).gatewayClassName === WAYPOINT_CLASS);
    const services = new Map(objects.filter((o) => o.kind === 'Service').map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o]));
    const deployments = new Map(this.deployments.objects.map((o) => [`${o.metadata.namespace}/${o.metadata.name}`, o]));
    const live = new Set(gateways.map((g) => g.metadata.uid ?? ''));
    for (const uid of this.applied.keys()) if (!live.has(uid)) this.applied.delete(uid);
    let failed = false;
    for (const gw of gateways) {
      const key = `${gw.metadata.namespace}/${gw.metadata.name}`;
      try {
        await this.reconcile(gw, deployments.get(key), services.get(key));
      } catch (err) {
        failed = true;
        this.opts.log.error({ gateway: key, err: (err as Error).message }, 'waypoint reconcile failed; retrying');
      }
    }
    return failed;
  }

  private async reconcile(gw: KubeObject, deployment: KubeObject | undefined, service: KubeObject | undefined): Promise<void> {
    const key = `${gw.metadata.namespace}/${gw.metadata.name}`;
    const problem = listenerProblem(gw);
    if (!problem) {
      const desired = waypointObjects(gw, this.opts);
      const hash = createHash('sha256').update(JSON.stringify(desired)).digest('hex');
      const uid = gw.metadata.uid ?? key;
      const last = this.applied.get(uid);
      // A Deployment or Service gone from the cluster is applied again. Right after the first apply
      // the informers may not show them yet: that repeat apply changes nothing on the server.
      const missing = !deployment || !service;
      if (!last || last.hash !== hash || missing) {
        for (const o of desired) await this.writer.apply(o);
        this.applied.set(uid, { hash });
        this.opts.log.info({ gateway: key }, 'waypoint objects applied');
      }
    }
    const status = waypointStatus(gw, deployment, service);
    if (!sameStatus(gw.status, status)) {
      await this.writer.applyStatus(gw, status);
      const accepted = status.conditions.find((c) => c.type === 'Accepted')!;
      const programmed = status.conditions.find((c) => c.type === 'Programmed')!;
      if (accepted.status !== 'True') this.opts.log.warn({ gateway: key, reason: accepted.reason, message: accepted.message }, 'Gateway of class istio-waypoint is not a valid waypoint');
      else this.opts.log.info({ gateway: key, programmed: programmed.status, reason: programmed.reason, message: programmed.message }, 'waypoint status updated');
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.resync) clearInterval(this.resync);
    this.deployments.stop();
  }
}
