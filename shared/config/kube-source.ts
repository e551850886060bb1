import { EventEmitter } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { KubeObject } from './objects.js';
import { podInfo, serviceSpec } from './translate.js';
import { KubeRest, kubeError } from './kube-client.js';
import type { Logger } from '../telemetry/log.js';

/** One kind the source follows, and where it lives in the API. */
export interface KubeResource {
  apiVersion: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** a CRD the cluster may lack: "not found" means none yet, and the list is retried slowly */
  optional?: boolean;
  fieldSelector?: string;
  labelSelector?: string;
}

/** The kinds the mesh reads. */
export const MESH_RESOURCES = {
  Namespace: { apiVersion: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false },
  Pod: { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true },
  Service: { apiVersion: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  EndpointSlice: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', plural: 'endpointslices', namespaced: true },
  AuthorizationPolicy: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', namespaced: true, optional: true },
  PeerAuthentication: { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', plural: 'peerauthentications', namespaced: true, optional: true },
  Gateway: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', plural: 'gateways', namespaced: true, optional: true },
  HTTPRoute: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true, optional: true },
  GRPCRoute: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', plural: 'grpcroutes', namespaced: true, optional: true },
} as const satisfies Record<string, KubeResource>;

/** Everything the control plane serves from. */
export const CONTROL_PLANE_RESOURCES: KubeResource[] = Object.values(MESH_RESOURCES);

/** What a node agent needs: its own node's pods, and namespaces (for their labels). */
export function nodeAgentResources(node: string): KubeResource[] {
  return [MESH_RESOURCES.Namespace, { ...MESH_RESOURCES.Pod, fieldSelector: `spec.nodeName=${node}` }];
}

/** URL path of a resource's collection (all namespaces, or one). */
export function resourcePath(r: Pick<KubeResource, 'apiVersion' | 'plural' | 'namespaced'>, namespace?: string): string {
  const base = r.apiVersion.includes('/') ? `/apis/${r.apiVersion}` : `/api/${r.apiVersion}`;
  return namespace && r.namespaced ? `${base}/namespaces/${encodeURIComponent(namespace)}/${r.plural}` : `${base}/${r.plural}`;
}

const KEY_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function stringMap(v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${field} must be a map`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') throw new Error(`${field}.${k} must be a string`);
}

/**
 * An API object as the mesh reads it: apiVersion and kind filled in (list items lack them),
 * managedFields dropped (large, and nobody here reads them). Throws on a malformed object.
 */
export function toKubeObject(raw: unknown, r: Pick<KubeResource, 'apiVersion' | 'kind' | 'namespaced'>): KubeObject {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('not an object');
  const o = raw as Record<string, unknown>;
  const meta = o.metadata as Record<string, unknown> | undefined;
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new Error('metadata is missing');
  if (typeof meta.name !== 'string' || !KEY_RE.test(meta.name)) throw new Error(`metadata.name ${JSON.stringify(meta.name)} is not a valid name`);
  if (r.namespaced && (typeof meta.namespace !== 'string' || !KEY_RE.test(meta.namespace))) throw new Error('metadata.namespace is missing');
  stringMap(meta.labels, 'metadata.labels');
  stringMap(meta.annotations, 'metadata.annotations');
  for (const f of ['spec', 'status'] as const) {
    const v = o[f];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Array.isArray(v))) throw new Error(`${f} must be an object`);
  }
  const { managedFields: _dropped, ...metadata } = meta;
  const out: KubeObject = { ...(o as object), apiVersion: r.apiVersion, kind: r.kind, metadata: metadata as KubeObject['metadata'], source: 'kubernetes' };
  if (o.spec === null) delete out.spec;
  if (o.status === null) delete out.status;
  return out;
}

/** The checks the mesh's translation would fail on, done per object so one bad object is skipped, not the whole config. */
export function meshCheck(o: KubeObject): void {
  if (o.kind === 'Pod') podInfo(o);
  else if (o.kind === 'Service') serviceSpec(o);
}

function keyOf(o: { metadata?: { name?: string; namespace?: string } }): string {
  const m = o.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name ?? ''}` : (m.name ?? '');
}

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  /** kinds to follow (default: everything the control plane serves from) */
  resources?: KubeResource[];
  /** quiet time before a 'change' is emitted */
  debounceMs?: number;
  /** longest a 'change' waits under constant churn */
  maxDelayMs?: number;
  /** reconnect backoff */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** start() gives up when the API server has not answered for every kind by then */
  startTimeoutMs?: number;
  /** server-side watch timeout range (seconds); the watch is renewed after it, like client-go */
  watchTimeoutSeconds?: [number, number];
  /** extra check per object; throwing skips the object (default: meshCheck) */
  check?: (o: KubeObject) => void;
}

type SyncState = 'starting' | 'synced' | 'absent';

/**
 * The watch request under the informer. It reads the event stream itself, line by line and in
 * order, so the last event before the server closes the stream (typically "ERROR 410 Expired")
 * is always seen before the end — the client library's reader can lose it to the close and then
 * re-watch from the expired resourceVersion forever. It also asks for BOOKMARK events and a
 * server-side timeout, and notices a server that went silent.
 */
class StreamingWatch extends Watch {
  constructor(
    private readonly kc: KubeConfig,
    private readonly hooks: { timeoutSeconds(): number; onEvent(type: string): void; quickCloseDelayMs(): number },
  ) {
    super(kc);
  }

  override async watch(path: string, queryParams: Record<string, string | number | boolean | undefined>, callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    const ctl = new AbortController();
    const timeout = this.hooks.timeoutSeconds();
    const started = Date.now();
    let events = 0;
    let finished = false;
    let idle: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      if (idle) clearTimeout(idle);
      ctl.abort();
      // A watch that ends at once with nothing in it would otherwise be re-opened in a tight loop.
      if (!err && events === 0 && Date.now() - started < 1000) setTimeout(() => done(null), this.hooks.quickCloseDelayMs());
      else setImmediate(() => done(err));
    };
    // A server that vanished without closing the connection sends nothing, not even the end of
    // the watch at its timeout: give it a minute past that, then reconnect.
    const arm = (): void => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => finish(new Error(`watch ${path} silent for ${timeout + 60}s`)), (timeout + 60) * 1000);
    };
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error('no current cluster in the kubeconfig');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries({ ...queryParams, watch: true, allowWatchBookmarks: true, timeoutSeconds: timeout })) if (v !== undefined) url.searchParams.set(k, String(v));
    const options: https.RequestOptions = { headers: {} };
    await this.kc.applyToHTTPSOptions(options);
    const headers: Record<string, string> = { accept: 'application/json' };
    for (const [k, v] of Object.entries((options.headers ?? {}) as Record<string, unknown>)) if (typeof v === 'string') headers[k] = v;
    const req = (url.protocol === 'http:' ? http : https).request(url, { method: 'GET', agent: options.agent, auth: options.auth, headers, signal: ctl.signal }, (res) => {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => finish(Object.assign(new Error(res.statusMessage || `HTTP ${res.statusCode}`), { statusCode: res.statusCode, body: Buffer.concat(chunks).toString('utf8') })));
        res.on('error', finish);
        return;
      }
      arm();
      res.setEncoding('utf8');
      let buf = '';
      const line = (text: string): void => {
        if (text.trim() === '' || finished) return;
        let ev: { type?: string; object?: unknown };
        try {
          ev = JSON.parse(text) as { type?: string; object?: unknown };
        } catch {
          return; // not JSON: nothing the informer could use
        }
        events++;
        arm();
        if (ev.type === 'ERROR') {
          const st = (ev.object ?? {}) as { code?: number; message?: string };
          // 410 goes to the informer (it lists again); any other error waits out the backoff
          if (st.code !== 410) {
            finish(Object.assign(new Error(st.message ?? 'watch error'), { statusCode: st.code ?? 500, body: JSON.stringify(ev.object ?? {}) }));
            return;
          }
        }
        this.hooks.onEvent(String(ev.type));
        try {
          callback(String(ev.type), ev.object, ev);
        } catch {
          // the informer choked on an odd object; the object-level check logs what it can
        }
      };
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          line(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      });
      res.on('end', () => {
        line(buf);
        finish(null);
      });
      res.on('error', finish);
      res.on('aborted', () => finish(new Error('watch stream cut off')));
    });
    req.on('error', finish);
    req.end();
    return ctl;
  }
}

/** One kind: an informer, what it holds, and how it is doing. */
class ResourceWatch {
  readonly objects = new Map<string, KubeObject>();
  state: SyncState = 'starting';
  lastError: string | null = null;
  private informer: ListWatch<KubernetesObject>;
  private backoff: number;
  private retry: NodeJS.Timeout | null = null;
  private failing = false;
  private stopped = false;
  private readonly warned = new Set<string>();
  private readonly rest: KubeRest;

  constructor(
    readonly resource: KubeResource,
    private readonly source: KubeSource,
    private readonly opts: Required<Pick<KubeSourceOptions, 'backoffMinMs' | 'backoffMaxMs' | 'watchTimeoutSeconds' | 'check'>> & { kubeConfig: KubeConfig; log: Logger },
  ) {
    this.backoff = opts.backoffMinMs;
    this.rest = new KubeRest(opts.kubeConfig);
    const [lo, hi] = opts.watchTimeoutSeconds;
    const watch = new StreamingWatch(opts.kubeConfig, {
      timeoutSeconds: () => Math.round(lo + Math.random() * (hi - lo)),
      onEvent: () => this.healthy(),
      quickCloseDelayMs: () => this.nextBackoff(),
    });
    const path = resourcePath(resource);
    this.informer = new ListWatch<KubernetesObject>(path, watch, () => this.list(), false, resource.labelSelector, resource.fieldSelector);
    this.informer.on('add', (o) => this.upsert(o));
    this.informer.on('update', (o) => this.upsert(o));
    this.informer.on('delete', (o) => this.remove(o));
    this.informer.on('error', (err) => this.failed(err));
  }

  private get name(): string {
    return this.resource.kind;
  }

  private async list(): Promise<KubernetesListObject<KubernetesObject>> {
    const list = await this.rest.request<{ metadata?: { resourceVersion?: string }; items?: unknown[] }>('GET', resourcePath(this.resource), {
      query: { labelSelector: this.resource.labelSelector, fieldSelector: this.resource.fieldSelector },
    });
    const items = Array.isArray(list.items) ? list.items : [];
    // The informer files items by metadata; one without any would break it, so it is dropped here.
    const usable = items.filter((i): i is KubernetesObject => typeof i === 'object' && i !== null && typeof (i as KubernetesObject).metadata === 'object');
    // After the informer has filed the items (the await in its list step), the kind counts as synced.
    setImmediate(() => this.synced());
    return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion: list.metadata?.resourceVersion ?? '' }, items: usable };
  }

  start(): void {
    this.stopped = false;
    void this.informer.start();
  }

  stop(): void {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    void this.informer.stop();
  }

  private synced(): void {
    if (this.stopped) return;
    const was = this.state;
    this.state = 'synced';
    this.healthy();
    if (was !== 'synced') this.source.kindSynced();
  }

  private healthy(): void {
    this.backoff = this.opts.backoffMinMs;
    this.lastError = null;
    if (this.failing) {
      this.failing = false;
      this.opts.log.info({ kind: this.name }, 'Kubernetes watch restored');
    }
  }

  private nextBackoff(): number {
    const d = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    return Math.round(d * (0.8 + Math.random() * 0.4));
  }

  private upsert(raw: KubernetesObject): void {
    let o: KubeObject;
    const key = keyOf(raw);
    try {
      o = toKubeObject(raw, this.resource);
      this.opts.check(o);
    } catch (err) {
      const rv = raw?.metadata?.resourceVersion ?? '';
      const tag = `${key}@${rv}`;
      if (!this.warned.has(tag)) {
        this.warned.add(tag);
        if (this.warned.size > 10_000) this.warned.clear();
        this.opts.log.warn({ kind: this.name, object: key, resourceVersion: rv, err: (err as Error).message }, 'Kubernetes object skipped: the mesh cannot read it');
      }
      if (this.objects.delete(key)) this.source.changed();
      return;
    }
    this.objects.set(key, o);
    this.source.changed();
  }

  private remove(raw: KubernetesObject): void {
    if (this.objects.delete(keyOf(raw))) this.source.changed();
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    const e = kubeError(err, this.rest.server);
    if (e.status === 404 && this.resource.optional) {
      // The CRD is not installed (or was removed, taking its objects with it).
      if (this.state !== 'absent') this.opts.log.info({ kind: this.name, apiVersion: this.resource.apiVersion }, 'kind not served by this cluster (CRD not installed); checking again later');
      this.state = 'absent';
      if (this.objects.size > 0) {
        this.objects.clear();
        this.source.changed();
      }
      this.source.kindSynced();
      this.schedule(this.opts.backoffMaxMs);
      return;
    }
    this.lastError = e.message;
    const delay = this.nextBackoff();
    const line = { kind: this.name, status: e.status || undefined, err: e.message, retryInMs: delay };
    if (!this.failing) this.opts.log.warn(line, 'Kubernetes watch failed; serving the last known state and retrying');
    else this.opts.log.debug(line, 'Kubernetes watch still failing');
    this.failing = true;
    this.schedule(delay);
  }

  private schedule(delay: number): void {
    if (this.retry || this.stopped) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stopped) void this.informer.start();
    }, delay);
  }
}

/**
 * Kubernetes objects from an API server, with the same shape as FileSource: `start()` resolves
 * once every kind has been listed, `objects` is the current state, and `'change'` fires
 * (debounced) when it moves. Watches resume after expiry (410 → relist) and API server restarts
 * (reconnect with backoff); while the server is away the last state stays. A malformed object
 * is logged and skipped.
 */
export class KubeSource extends EventEmitter<{ change: [KubeObject[]] }> {
  objects: KubeObject[] = [];
  private readonly watches: ResourceWatch[];
  private started = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private firstPending = 0;
  private waiters: (() => void)[] = [];
  private readonly debounceMs: number;
  private readonly maxDelayMs: number;

  constructor(private readonly opts: KubeSourceOptions) {
    super();
    this.debounceMs = opts.debounceMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 1000;
    const shared = {
      kubeConfig: opts.kubeConfig,
      log: opts.log,
      backoffMinMs: opts.backoffMinMs ?? 200,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? [300, 600],
      check: opts.check ?? meshCheck,
    };
    this.watches = (opts.resources ?? CONTROL_PLANE_RESOURCES).map((r) => new ResourceWatch(r, this, shared));
  }

  /** Lists every kind once (waiting while the API server is unreachable, up to startTimeoutMs), then follows changes. */
  async start(): Promise<KubeObject[]> {
    for (const w of this.watches) w.start();
    const timeoutMs = this.opts.startTimeoutMs ?? 120_000;
    let t: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (this.watches.every((w) => w.state !== 'starting')) resolve();
            else this.waiters.push(check);
          };
          check();
        }),
        new Promise<never>((_, reject) => {
          t = setTimeout(() => {
            const missing = this.watches.filter((w) => w.state === 'starting').map((w) => `${w.resource.kind}${w.lastError ? ` (${w.lastError})` : ''}`);
            reject(new Error(`the Kubernetes API server did not list ${missing.join(', ')} within ${Math.round(timeoutMs / 1000)}s`));
          }, timeoutMs);
        }),
      ]);
    } catch (err) {
      this.stop();
      throw err;
    } finally {
      if (t) clearTimeout(t);
    }
    this.objects = this.collect();
    this.started = true;
    return this.objects;
  }

  /** How each kind is doing (for status views and tests). */
  status(): { kind: string; state: SyncState; objects: number; error: string | null }[] {
    return this.watches.map((w) => ({ kind: w.resource.kind, state: w.state, objects: w.objects.size, error: w.lastError }));
  }

  /** @internal a kind finished its first list (or turned out not to be served). */
  kindSynced(): void {
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w();
  }

  /** @internal something changed: emit after a quiet spell, but never later than maxDelayMs. */
  changed(): void {
    if (!this.started || this.stopped) return;
    const now = Date.now();
    if (!this.timer) this.firstPending = now;
    else clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.debounceMs, this.firstPending + this.maxDelayMs - now));
    this.timer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.timer = null;
    if (this.stopped) return;
    this.objects = this.collect();
    this.emit('change', this.objects);
  }

  private collect(): KubeObject[] {
    const out: KubeObject[] = [];
    for (const w of this.watches) {
      const keys = [...w.objects.keys()].sort();
      for (const k of keys) out.push(w.objects.get(k)!);
    }
    return out;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.watches) w.stop();
  }
}
