/**
 * A Kubernetes API server stand-in for tests, speaking the real HTTP protocol for what ambit
 * uses: discovery, list (with resourceVersion), watch streams (?watch=1, resourceVersion,
 * BOOKMARK events, timeoutSeconds, ERROR 410 "Expired" on a too-old resourceVersion, field and
 * label selectors), get/create/update/delete with real Status errors (404 NotFound, 409
 * AlreadyExists/Conflict), merge patch, server-side apply (application/apply-patch+yaml with
 * fieldManager, field ownership, conflicts, force), status subresources, ownerReference garbage
 * collection, TokenReview, bearer-token authentication and — when given the manifests — RBAC
 * authorization, with an audit log of who did what under which rule.
 *
 * It can be stopped and started again on the same port (an API server restart), optionally
 * forgetting its watch history (then old resourceVersions answer 410).
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { CertificateAuthority } from '../../../shared/identity/ca.js';

type Json = Record<string, unknown>;
export type KubeJson = Json & { apiVersion?: string; kind?: string; metadata: Json & { name: string; namespace?: string } };

export interface FakeResource {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** has a /status subresource (status ignored on the main resource, and only status on /status) */
  status?: boolean;
  /** served from a CRD (list items carry apiVersion and kind) */
  crd?: boolean;
  /** not stored: create answers at once (TokenReview) */
  virtual?: boolean;
}

export const FAKE_RESOURCES: FakeResource[] = [
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, status: true },
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true, status: true },
  { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true, status: true },
  { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true },
  { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true },
  { group: '', version: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true },
  { group: '', version: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, status: true },
  { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true, status: true },
  { group: 'apps', version: 'v1', kind: 'DaemonSet', plural: 'daemonsets', namespaced: true, status: true },
  { group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', plural: 'endpointslices', namespaced: true },
  { group: 'authentication.k8s.io', version: 'v1', kind: 'TokenReview', plural: 'tokenreviews', namespaced: false, virtual: true },
  { group: 'security.istio.io', version: 'v1', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', namespaced: true, status: true, crd: true },
  { group: 'security.istio.io', version: 'v1', kind: 'PeerAuthentication', plural: 'peerauthentications', namespaced: true, status: true, crd: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'GatewayClass', plural: 'gatewayclasses', namespaced: false, status: true, crd: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'Gateway', plural: 'gateways', namespaced: true, status: true, crd: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes', namespaced: true, status: true, crd: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'GRPCRoute', plural: 'grpcroutes', namespaced: true, status: true, crd: true },
];

export interface FakeUser {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

/** A projected ServiceAccount token the fake issued (what kubelet would mount into a pod). */
export interface IssuedToken {
  namespace: string;
  serviceAccount: string;
  podName?: string;
  podUid?: string;
  /** only set when the cluster puts node info in tokens (Kubernetes ≥ 1.30) */
  nodeName?: string;
  audiences: string[];
  expiresAt: Date;
}

/** One request, as an audit log line. */
export interface AuditEntry {
  user: string;
  verb: string;
  group: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  status: number;
  /** the RBAC rule that allowed it: "ClusterRole/name#index" (empty when RBAC is off or it was refused) */
  rules: string[];
}

const API_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';
const ADMIN_GROUP = 'system:masters';

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details: Json = {}) {
    super(message);
  }
}

function status(code: number, reason: string, message: string, details: Json = {}): Json {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, details, code };
}

const clone = <T>(v: T): T => structuredClone(v);

function gvOf(r: FakeResource): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

function qualified(r: FakeResource): string {
  return r.group ? `${r.plural}.${r.group}` : r.plural;
}

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function nowIso(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// ---- selectors ----

type LabelTerm = { key: string; op: 'eq' | 'neq' | 'in' | 'notin' | 'exists' | 'notexists'; values: string[] };

function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of s) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur.trim() !== '') out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x !== '');
}

function parseLabelSelector(s: string | null): LabelTerm[] {
  if (!s) return [];
  return splitTop(s).map((t) => {
    let m = /^(\S+?)\s*(==|=|!=)\s*(\S*)$/.exec(t);
    if (m) return { key: m[1]!, op: m[2] === '!=' ? 'neq' : 'eq', values: [m[3]!] };
    m = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(t);
    if (m) return { key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((v) => v.trim()) };
    if (/^![^\s!=]+$/.test(t)) return { key: t.slice(1), op: 'notexists', values: [] };
    if (/^[^\s!=()]+$/.test(t)) return { key: t, op: 'exists', values: [] };
    throw new HttpError(400, 'BadRequest', `unable to parse requirement: ${t}`);
  });
}

function labelsMatch(terms: LabelTerm[], labels: Record<string, string>): boolean {
  return terms.every((t) => {
    const v = labels[t.key];
    switch (t.op) {
      case 'eq':
        return v === t.values[0];
      case 'neq':
        return v !== t.values[0];
      case 'in':
        return v !== undefined && t.values.includes(v);
      case 'notin':
        return v === undefined || !t.values.includes(v);
      case 'exists':
        return v !== undefined;
      case 'notexists':
        return v === undefined;
    }
  });
}

const FIELDS: Record<string, (o: Json) => unknown> = {
  'metadata.name': (o) => (o.metadata as Json).name,
  'metadata.namespace': (o) => (o.metadata as Json).namespace ?? '',
  'spec.nodeName': (o) => (isObj(o.spec) ? o.spec.nodeName : undefined) ?? '',
  'status.phase': (o) => (isObj(o.status) ? o.status.phase : undefined) ?? '',
  'spec.serviceAccountName': (o) => (isObj(o.spec) ? o.spec.serviceAccountName : undefined) ?? '',
};

type FieldTerm = { field: string; neq: boolean; value: string };

function parseFieldSelector(s: string | null, r: FakeResource): FieldTerm[] {
  if (!s) return [];
  return s.split(',').map((t) => {
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(t.trim());
    if (!m) throw new HttpError(400, 'BadRequest', `invalid field selector: ${t}`);
    const field = m[1]!;
    const allowed = field.startsWith('metadata.') || (r.kind === 'Pod' && field in FIELDS);
    if (!(field in FIELDS) || !allowed) throw new HttpError(400, 'BadRequest', `field label not supported: ${field}`);
    return { field, neq: m[2] === '!=', value: m[3]! };
  });
}

function fieldsMatch(terms: FieldTerm[], o: Json): boolean {
  return terms.every((t) => (String(FIELDS[t.field]!(o)) === t.value) !== t.neq);
}

// ---- field paths (server-side apply) ----

const IGNORED_TOP = new Set(['apiVersion', 'kind']);
const IGNORED_META = new Set(['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'managedFields', 'deletionTimestamp', 'selfLink']);

/** Leaf paths of an object (maps recurse, lists and scalars are leaves, as with atomic lists). */
function leaves(o: unknown, prefix: string[] = [], out = new Map<string, unknown>()): Map<string, unknown> {
  if (isObj(o)) {
    for (const [k, v] of Object.entries(o)) {
      if (prefix.length === 0 && IGNORED_TOP.has(k)) continue;
      if (prefix.length === 1 && prefix[0] === 'metadata' && IGNORED_META.has(k)) continue;
      if (isObj(v) && Object.keys(v).length > 0) leaves(v, [...prefix, k], out);
      else out.set(JSON.stringify([...prefix, k]), v);
    }
  }
  return out;
}

function getPath(o: unknown, path: string[]): unknown {
  let cur = o;
  for (const p of path) {
    if (!isObj(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function setPath(o: Json, path: string[], v: unknown): void {
  let cur = o;
  for (const p of path.slice(0, -1)) {
    if (!isObj(cur[p])) cur[p] = {};
    cur = cur[p] as Json;
  }
  cur[path[path.length - 1]!] = clone(v);
}

function deletePath(o: Json, path: string[]): void {
  const parents: Json[] = [o];
  let cur: unknown = o;
  for (const p of path.slice(0, -1)) {
    if (!isObj(cur)) return;
    cur = cur[p];
    parents.push(cur as Json);
  }
  if (!isObj(cur)) return;
  delete cur[path[path.length - 1]!];
  // drop maps left empty by the removal
  for (let i = path.length - 1; i > 0; i--) {
    const parent = parents[i - 1]!;
    const child = parent[path[i - 1]!];
    if (isObj(child) && Object.keys(child).length === 0) delete parent[path[i - 1]!];
    else break;
  }
}

function overlaps(a: string, b: string): boolean {
  const pa = JSON.parse(a) as string[];
  const pb = JSON.parse(b) as string[];
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) if (pa[i] !== pb[i]) return false;
  return true;
}

function fieldsV1(paths: Iterable<string>): Json {
  const root: Json = {};
  for (const p of paths) {
    let cur = root;
    for (const seg of JSON.parse(p) as string[]) {
      const k = `f:${seg}`;
      if (!isObj(cur[k])) cur[k] = {};
      cur = cur[k] as Json;
    }
  }
  return root;
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Json = isObj(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---- RBAC ----

interface RbacRule {
  id: string;
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames: string[];
}

interface Grant {
  namespace: string | null; // null: cluster-wide
  subjects: { kind: string; name: string; namespace?: string }[];
  rules: RbacRule[];
}

function rbacGrants(objects: unknown[]): Grant[] {
  const roles = new Map<string, RbacRule[]>();
  for (const o of objects) {
    if (!isObj(o) || (o.kind !== 'ClusterRole' && o.kind !== 'Role')) continue;
    const meta = o.metadata as Json;
    const id = o.kind === 'ClusterRole' ? `ClusterRole/${String(meta.name)}` : `Role/${String(meta.namespace)}/${String(meta.name)}`;
    const rules = ((o.rules as Json[] | undefined) ?? []).map((r, i) => ({
      id: `${id}#${i}`,
      apiGroups: (r.apiGroups as string[] | undefined) ?? [],
      resources: (r.resources as string[] | undefined) ?? [],
      verbs: (r.verbs as string[] | undefined) ?? [],
      resourceNames: (r.resourceNames as string[] | undefined) ?? [],
    }));
    roles.set(id, rules);
  }
  const grants: Grant[] = [];
  for (const o of objects) {
    if (!isObj(o) || (o.kind !== 'ClusterRoleBinding' && o.kind !== 'RoleBinding')) continue;
    const meta = o.metadata as Json;
    const ref = o.roleRef as Json;
    const roleId = ref.kind === 'ClusterRole' ? `ClusterRole/${String(ref.name)}` : `Role/${String(meta.namespace)}/${String(ref.name)}`;
    grants.push({
      namespace: o.kind === 'ClusterRoleBinding' ? null : String(meta.namespace),
      subjects: ((o.subjects as Json[] | undefined) ?? []).map((s) => ({ kind: String(s.kind), name: String(s.name), ...(s.namespace ? { namespace: String(s.namespace) } : {}) })),
      rules: roles.get(roleId) ?? [],
    });
  }
  return grants;
}

interface Attributes {
  verb: string;
  group: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
}

function subjectMatches(s: { kind: string; name: string; namespace?: string }, user: FakeUser): boolean {
  if (s.kind === 'User') return s.name === user.username;
  if (s.kind === 'Group') return user.groups.includes(s.name);
  if (s.kind === 'ServiceAccount') return user.username === `system:serviceaccount:${s.namespace}:${s.name}`;
  return false;
}

function ruleMatches(r: RbacRule, a: Attributes): boolean {
  const res = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
  if (!r.verbs.includes(a.verb) && !r.verbs.includes('*')) return false;
  if (!r.apiGroups.includes(a.group) && !r.apiGroups.includes('*')) return false;
  if (!r.resources.includes(res) && !r.resources.includes('*')) return false;
  if (r.resourceNames.length > 0 && (a.name === '' || !r.resourceNames.includes(a.name))) return false;
  return true;
}

// ---- the server ----

interface Stored {
  obj: KubeJson;
  managers: Map<string, { operation: 'Apply' | 'Update'; paths: Set<string>; time: string }>;
}

interface WatchEvent {
  rv: number;
  res: FakeResource;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: KubeJson;
  old: KubeJson | null;
}

interface Watcher {
  res: FakeResource;
  namespace: string;
  labels: LabelTerm[];
  fields: FieldTerm[];
  out: http.ServerResponse;
  bookmarks: NodeJS.Timeout | null;
  timeout: NodeJS.Timeout | null;
}

export interface FakeApiServerOptions {
  /** RBAC objects (ClusterRole, Role, bindings) to enforce for users outside system:masters */
  rbac?: unknown[];
  /** how often a watch that asked for bookmarks gets one */
  bookmarkIntervalMs?: number;
  /** watch events kept for resuming; older resourceVersions answer 410 */
  historyLimit?: number;
  /** serve plain HTTP instead of HTTPS */
  plainHttp?: boolean;
}

export class FakeApiServer {
  readonly audit: AuditEntry[] = [];
  readonly disabledGroups = new Set<string>();
  private readonly store = new Map<string, Map<string, Stored>>();
  private readonly users = new Map<string, FakeUser>();
  private readonly tokens = new Map<string, IssuedToken>();
  private history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private grants: Grant[] | null;
  private rv = 100;
  private compactedRv = 0;
  private server: http.Server | https.Server | null = null;
  private tls: { key: string; cert: string; ca: string } | null = null;
  private nextIp = 10;
  port = 0;

  private constructor(private readonly opts: FakeApiServerOptions) {
    this.grants = opts.rbac ? rbacGrants(opts.rbac) : null;
    for (const r of FAKE_RESOURCES) this.store.set(this.resKey(r), new Map());
  }

  /** Starts a server on a free localhost port, with an admin user (token "admin-token") and namespaces default, kube-system. */
  static async start(opts: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(opts);
    if (!opts.plainHttp) {
      const ca = await CertificateAuthority.generate({ commonName: 'fake kube-apiserver CA' });
      const serving = await ca.issueServing({ dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
      s.tls = { key: serving.keyPem, cert: serving.certPem, ca: ca.rootsPem().join('\n') };
    }
    s.addUser('admin-token', { username: 'kubernetes-admin', groups: [ADMIN_GROUP, 'system:authenticated'] });
    for (const ns of ['default', 'kube-system']) s.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { 'kubernetes.io/metadata.name': ns } }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } });
    await s.listen();
    return s;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** The current resourceVersion. */
  get resourceVersion(): number {
    return this.rv;
  }

  private resKey(r: FakeResource): string {
    return `${r.group}/${r.plural}`;
  }

  resource(apiVersion: string, kind: string): FakeResource {
    const r = FAKE_RESOURCES.find((x) => gvOf(x) === apiVersion && x.kind === kind);
    if (!r) throw new Error(`fake apiserver: unknown kind ${apiVersion} ${kind}`);
    return r;
  }

  // ---- test helpers ----

  addUser(token: string, user: FakeUser): void {
    this.users.set(token, user);
  }

  /** Issues a pod-bound projected ServiceAccount token (a JWT, as kubelet mounts it). */
  issueToken(t: Partial<IssuedToken> & { namespace: string; serviceAccount: string }): string {
    const spec: IssuedToken = { audiences: [API_AUDIENCE], expiresAt: new Date(Date.now() + 3600_000), ...t };
    const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
    const iat = Math.floor(Date.now() / 1000);
    const claims: Json = {
      aud: spec.audiences,
      exp: Math.floor(spec.expiresAt.getTime() / 1000),
      iat,
      nbf: iat,
      iss: API_AUDIENCE,
      jti: randomUUID(),
      sub: `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`,
      'kubernetes.io': {
        namespace: spec.namespace,
        serviceaccount: { name: spec.serviceAccount, uid: randomUUID() },
        ...(spec.podName ? { pod: { name: spec.podName, uid: spec.podUid ?? '' } } : {}),
        ...(spec.nodeName ? { node: { name: spec.nodeName, uid: randomUUID() } } : {}),
      },
    };
    const token = `${b64({ alg: 'RS256', kid: 'fake-key' })}.${b64(claims)}.${randomBytes(64).toString('base64url')}`;
    this.tokens.set(token, spec);
    return token;
  }

  /** A kubeconfig (YAML) for this server, authenticating with `token`. */
  kubeconfig(token: string, opts: { context?: string; namespace?: string; server?: string } = {}): string {
    const ctx = opts.context ?? 'fake';
    return stringifyYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake-cluster', cluster: { server: opts.server ?? this.url, ...(this.tls ? { 'certificate-authority-data': Buffer.from(this.tls.ca).toString('base64') } : { 'insecure-skip-tls-verify': true }) } }],
      users: [{ name: 'fake-user', user: { token } }],
      contexts: [{ name: ctx, context: { cluster: 'fake-cluster', user: 'fake-user', ...(opts.namespace ? { namespace: opts.namespace } : {}) } }],
      'current-context': ctx,
    });
  }

  /** Creates or replaces an object directly (as a controller or kubelet would), status included. */
  put(obj: Json, manager = 'fake-apiserver-test'): KubeJson {
    const o = clone(obj) as KubeJson;
    const r = this.resource(String(o.apiVersion), String(o.kind));
    const ns = r.namespaced ? (o.metadata.namespace ?? 'default') : undefined;
    const existing = this.stored(r, ns, o.metadata.name);
    if (ns) o.metadata.namespace = ns;
    if (existing) {
      this.update(r, existing, o, manager, { keepStatus: false, onlyStatus: false });
      return clone(existing.obj);
    }
    return clone(this.create(r, o, manager, { keepStatus: true }).obj);
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): KubeJson | undefined {
    const r = this.resource(apiVersion, kind);
    const s = this.stored(r, r.namespaced ? namespace : undefined, name);
    return s ? clone(s.obj) : undefined;
  }

  list(apiVersion: string, kind: string, namespace?: string): KubeJson[] {
    const r = this.resource(apiVersion, kind);
    return [...this.store.get(this.resKey(r))!.values()].filter((s) => !namespace || s.obj.metadata.namespace === namespace).map((s) => clone(s.obj));
  }

  /** Deletes an object directly (with garbage collection of what it owns). */
  remove(apiVersion: string, kind: string, namespace: string | undefined, name: string): boolean {
    const r = this.resource(apiVersion, kind);
    const s = this.stored(r, r.namespaced ? namespace : undefined, name);
    if (!s) return false;
    this.destroy(r, s);
    return true;
  }

  /** Sets an object's status directly (as its controller would). */
  setStatus(apiVersion: string, kind: string, namespace: string | undefined, name: string, statusValue: Json): KubeJson {
    const r = this.resource(apiVersion, kind);
    const s = this.stored(r, r.namespaced ? namespace : undefined, name);
    if (!s) throw new Error(`fake apiserver: ${kind} ${namespace}/${name} not found`);
    const next = clone(s.obj);
    next.status = clone(statusValue);
    this.update(r, s, next, 'fake-controller', { keepStatus: false, onlyStatus: true });
    return clone(s.obj);
  }

  /** Forgets the watch history: watches from any older resourceVersion now answer 410 Expired. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /**
   * What a real API server does when its watch cache drops a watcher that fell behind: every open
   * watch gets an ERROR event "410 Expired" and is closed, and the history is forgotten.
   */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.watchers]) {
      w.out.write(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${this.rv - 1} (${this.rv})`, reason: 'Expired', code: 410 } }) + '\n');
      this.endWatch(w);
    }
  }

  /** Watch streams open now. */
  get activeWatches(): number {
    return this.watchers.size;
  }

  /** Stops serving, cutting every connection (an API server crash). The store stays, as etcd would. */
  async stop(): Promise<void> {
    for (const w of this.watchers) this.endWatch(w);
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    const srv = this.server;
    this.server = null;
    if (srv) {
      const closed = new Promise<void>((resolve) => srv.close(() => resolve()));
      srv.closeAllConnections();
      for (const s of this.sockets) s.destroy();
      await closed;
    }
  }

  /** Serves again on the same port; `compact` forgets the watch history as a fresh watch cache would. */
  async restart(opts: { compact?: boolean } = {}): Promise<void> {
    if (this.server) await this.stop();
    if (opts.compact) this.compact();
    await this.listen();
  }

  async close(): Promise<void> {
    await this.stop();
  }

  private async listen(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.handle(req, res);
    const srv = this.tls ? https.createServer({ key: this.tls.key, cert: this.tls.cert }, handler) : http.createServer(handler);
    const track = (s: Socket): void => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    };
    srv.on('connection', track);
    if (this.tls) srv.on('secureConnection', track);
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (srv.address() as AddressInfo).port;
    this.server = srv;
  }

  // ---- storage ----

  private stored(r: FakeResource, ns: string | undefined, name: string): Stored | undefined {
    return this.store.get(this.resKey(r))!.get(r.namespaced ? `${ns}/${name}` : name);
  }

  private withManagedFields(s: Stored, r: FakeResource): void {
    s.obj.metadata.managedFields = [...s.managers.entries()]
      .filter(([, m]) => m.paths.size > 0)
      .map(([manager, m]) => ({ manager, operation: m.operation, apiVersion: gvOf(r), time: m.time, fieldsType: 'FieldsV1', fieldsV1: fieldsV1(m.paths) }));
  }

  private record(r: FakeResource, type: WatchEvent['type'], obj: KubeJson, old: KubeJson | null): void {
    const ev: WatchEvent = { rv: this.rv, res: r, type, obj: clone(obj), old: old ? clone(old) : null };
    this.history.push(ev);
    const limit = this.opts.historyLimit ?? 10_000;
    if (this.history.length > limit) {
      const dropped = this.history.splice(0, this.history.length - limit);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.watchers) if (w.res === r) this.deliver(w, ev);
  }

  private create(r: FakeResource, o: KubeJson, manager: string, opts: { keepStatus: boolean }): Stored {
    if (r.namespaced) {
      const ns = o.metadata.namespace!;
      if (!this.stored(this.resource('v1', 'Namespace'), undefined, ns)) throw new HttpError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
    }
    if (r.status && !opts.keepStatus) delete o.status;
    if (r.kind === 'Secret') this.normalizeSecret(o);
    if (r.kind === 'Service') this.allocateClusterIp(o);
    this.rv++;
    o.apiVersion = gvOf(r);
    o.kind = r.kind;
    o.metadata.uid = o.metadata.uid ?? randomUUID();
    o.metadata.resourceVersion = String(this.rv);
    o.metadata.creationTimestamp = nowIso();
    if (r.crd || r.kind === 'Deployment' || r.kind === 'DaemonSet') o.metadata.generation = 1;
    const s: Stored = { obj: o, managers: new Map() };
    const paths = new Set(leaves(o).keys());
    s.managers.set(manager, { operation: 'Update', paths, time: nowIso() });
    this.withManagedFields(s, r);
    this.store.get(this.resKey(r))!.set(r.namespaced ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name, s);
    this.record(r, 'ADDED', s.obj, null);
    return s;
  }

  private normalizeSecret(o: Json): void {
    if (isObj(o.stringData)) {
      const data = isObj(o.data) ? o.data : {};
      for (const [k, v] of Object.entries(o.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
      o.data = data;
      delete o.stringData;
    }
    o.type = o.type ?? 'Opaque';
  }

  private allocateClusterIp(o: Json): void {
    const spec = (isObj(o.spec) ? o.spec : (o.spec = {})) as Json;
    if (spec.clusterIP === undefined || spec.clusterIP === '') {
      spec.clusterIP = `10.96.0.${this.nextIp++}`;
      spec.clusterIPs = [spec.clusterIP];
    }
    spec.type = spec.type ?? 'ClusterIP';
  }

  /** Replaces an object's content; returns false when nothing changed (no new resourceVersion, no event). */
  private update(r: FakeResource, s: Stored, next: KubeJson, manager: string, opts: { keepStatus: boolean; onlyStatus: boolean; ownership?: Map<string, Stored['managers'] extends Map<string, infer V> ? V : never> }): boolean {
    const old = s.obj;
    let candidate = clone(next);
    if (opts.onlyStatus) {
      candidate = clone(old);
      if (next.status === undefined) delete candidate.status;
      else candidate.status = clone(next.status);
    } else if (r.status && opts.keepStatus) {
      if (old.status === undefined) delete candidate.status;
      else candidate.status = clone(old.status);
    }
    if (r.kind === 'Secret') this.normalizeSecret(candidate);
    if (r.kind === 'Service') {
      const oldIp = isObj(old.spec) ? old.spec.clusterIP : undefined;
      if (isObj(candidate.spec) && (candidate.spec.clusterIP === undefined || candidate.spec.clusterIP === '') && oldIp) {
        candidate.spec.clusterIP = oldIp;
        candidate.spec.clusterIPs = [oldIp];
      }
    }
    // identity fields are the server's
    candidate.apiVersion = gvOf(r);
    candidate.kind = r.kind;
    candidate.metadata = { ...candidate.metadata, name: old.metadata.name, uid: old.metadata.uid, creationTimestamp: old.metadata.creationTimestamp, resourceVersion: old.metadata.resourceVersion };
    if (old.metadata.namespace) candidate.metadata.namespace = old.metadata.namespace;
    if (old.metadata.generation !== undefined) candidate.metadata.generation = old.metadata.generation;
    const strip = (o: KubeJson): KubeJson => {
      const c = clone(o);
      delete c.metadata.managedFields;
      return c;
    };
    const ownershipChanged = opts.ownership !== undefined && !isDeepStrictEqual([...opts.ownership.entries()].map(([k, v]) => [k, v.operation, [...v.paths].sort()]), [...s.managers.entries()].map(([k, v]) => [k, v.operation, [...v.paths].sort()]));
    if (isDeepStrictEqual(strip(candidate), strip(old)) && !ownershipChanged) return false;
    const contentChanged = !isDeepStrictEqual(strip(candidate), strip(old));
    // generation moves when anything but metadata and status changes
    const body = (o: KubeJson): Json => {
      const { metadata: _m, status: _s, ...rest } = o;
      return rest;
    };
    if (candidate.metadata.generation !== undefined && !isDeepStrictEqual(body(candidate), body(old))) candidate.metadata.generation = Number(candidate.metadata.generation) + 1;
    if (opts.ownership) {
      s.managers = opts.ownership;
    } else {
      // an update takes ownership of what it changed
      const before = leaves(old);
      const after = leaves(candidate);
      const changed = [...after.keys()].filter((p) => !isDeepStrictEqual(before.get(p), after.get(p)));
      for (const [, m] of s.managers) for (const p of changed) m.paths.delete(p);
      const mine = s.managers.get(manager) ?? { operation: 'Update' as const, paths: new Set<string>(), time: nowIso() };
      for (const p of changed) mine.paths.add(p);
      mine.time = nowIso();
      s.managers.set(manager, mine);
    }
    if (!contentChanged && !ownershipChanged) return false;
    this.rv++;
    candidate.metadata.resourceVersion = String(this.rv);
    s.obj = candidate;
    this.withManagedFields(s, r);
    this.record(r, 'MODIFIED', s.obj, old);
    return true;
  }

  private destroy(r: FakeResource, s: Stored): void {
    const key = r.namespaced ? `${s.obj.metadata.namespace}/${s.obj.metadata.name}` : s.obj.metadata.name;
    this.store.get(this.resKey(r))!.delete(key);
    this.rv++;
    const gone = clone(s.obj);
    gone.metadata.resourceVersion = String(this.rv);
    this.record(r, 'DELETED', gone, s.obj);
    // garbage collection: dependents whose owner is gone go too
    const uid = s.obj.metadata.uid;
    for (const dr of FAKE_RESOURCES) {
      for (const d of [...this.store.get(this.resKey(dr))!.values()]) {
        const refs = (d.obj.metadata.ownerReferences as Json[] | undefined) ?? [];
        if (refs.some((ref) => ref.uid === uid)) this.destroy(dr, d);
      }
    }
  }

  // ---- HTTP ----

  private send(res: http.ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private authenticate(req: http.IncomingMessage): FakeUser | null {
    const h = req.headers.authorization ?? '';
    if (!h.startsWith('Bearer ')) return null;
    const token = h.slice(7);
    const u = this.users.get(token);
    if (u) return u;
    const t = this.tokens.get(token);
    if (t && t.expiresAt.getTime() > Date.now() && t.audiences.includes(API_AUDIENCE)) {
      return { username: `system:serviceaccount:${t.namespace}:${t.serviceAccount}`, groups: ['system:serviceaccounts', `system:serviceaccounts:${t.namespace}`, 'system:authenticated'] };
    }
    return null;
  }

  private authorize(user: FakeUser, a: Attributes): string[] {
    if (!this.grants || user.groups.includes(ADMIN_GROUP)) return [];
    const rules: string[] = [];
    for (const g of this.grants) {
      if (g.namespace !== null && g.namespace !== a.namespace) continue;
      if (!g.subjects.some((s) => subjectMatches(s, user))) continue;
      for (const r of g.rules) if (ruleMatches(r, a)) rules.push(r.id);
    }
    if (rules.length > 0) return rules;
    const res = a.subresource ? `${a.resource}/${a.subresource}` : a.resource;
    const qualifiedRes = a.group ? `${a.resource}.${a.group}` : a.resource;
    const what = a.name ? `${qualifiedRes} "${a.name}"` : qualifiedRes;
    const scope = a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
    throw new HttpError(403, 'Forbidden', `${what} is forbidden: User "${user.username}" cannot ${a.verb} resource "${res}" in API group "${a.group}" ${scope}`, { name: a.name || undefined, kind: a.resource });
  }

  private async readBody(req: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
  }

  private discovery(path: string): unknown {
    if (path === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
    if (path === '/version') return { major: '1', minor: '31', gitVersion: 'v1.31.0-fake', platform: 'linux/amd64' };
    if (path === '/apis') {
      const groups = [...new Set(FAKE_RESOURCES.filter((r) => r.group && !this.disabledGroups.has(r.group)).map((r) => r.group))];
      return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map((g) => ({ name: g, versions: [{ groupVersion: `${g}/v1`, version: 'v1' }], preferredVersion: { groupVersion: `${g}/v1`, version: 'v1' } })) };
    }
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))$/.exec(path);
    if (!m) return null;
    const group = m[1] ? '' : m[2]!;
    const version = m[1] ?? m[3]!;
    if (this.disabledGroups.has(group)) return null;
    const rs = FAKE_RESOURCES.filter((r) => r.group === group && r.version === version);
    if (rs.length === 0) return null;
    const resources = rs.flatMap((r) => [
      { name: r.plural, singularName: r.kind.toLowerCase(), namespaced: r.namespaced, kind: r.kind, verbs: r.virtual ? ['create'] : ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] },
      ...(r.status ? [{ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : []),
    ]);
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
  }

  /** Splits a resource URL into what it addresses. */
  private route(path: string): { r: FakeResource; namespace: string; name: string; sub: string } | null {
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))\/(.+)$/.exec(path);
    if (!m) return null;
    const group = m[1] ? '' : m[2]!;
    const version = m[1] ?? m[3]!;
    if (this.disabledGroups.has(group)) return null;
    const segs = m[4]!.split('/').map(decodeURIComponent);
    const find = (plural: string): FakeResource | undefined => FAKE_RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
    if (segs[0] === 'namespaces' && segs.length >= 3) {
      const r = find(segs[2]!);
      if (r && r.namespaced) return { r, namespace: segs[1]!, name: segs[3] ?? '', sub: segs[4] ?? '' };
    }
    const r = find(segs[0]!);
    if (!r || segs.length > 3) return null;
    return { r, namespace: '', name: segs[1] ?? '', sub: segs[2] ?? '' };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const entry: AuditEntry = { user: '', verb: '', group: '', resource: '', subresource: '', namespace: '', name: '', status: 0, rules: [] };
    try {
      const user = this.authenticate(req);
      if (!user) throw new HttpError(401, 'Unauthorized', 'Unauthorized');
      entry.user = user.username;
      if (req.method === 'GET') {
        const d = this.discovery(url.pathname);
        if (d) return this.send(res, 200, d);
      }
      const route = this.route(url.pathname);
      if (!route) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
      const { r, namespace, name, sub } = route;
      if (sub && (sub !== 'status' || !r.status)) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
      const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
      const verb =
        req.method === 'GET' ? (name ? 'get' : watch ? 'watch' : 'list')
        : req.method === 'POST' ? 'create'
        : req.method === 'PUT' ? 'update'
        : req.method === 'PATCH' ? 'patch'
        : req.method === 'DELETE' ? (name ? 'delete' : 'deletecollection')
        : '';
      if (!verb) throw new HttpError(405, 'MethodNotAllowed', `method ${req.method} not allowed`);
      Object.assign(entry, { verb, group: r.group, resource: r.plural, subresource: sub, namespace, name });
      entry.rules = this.authorize(user, entry);
      const text = ['POST', 'PUT', 'PATCH'].includes(req.method!) ? await this.readBody(req) : '';
      if (r.virtual) {
        if (verb !== 'create') throw new HttpError(405, 'MethodNotAllowed', `${r.plural} only supports create`);
        entry.status = 201;
        return this.send(res, 201, this.tokenReview(JSON.parse(text) as Json));
      }
      if (verb === 'watch') {
        entry.status = 200;
        this.audit.push(entry);
        return this.watch(r, namespace, url, res);
      }
      const result = this.execute(user, entry, r, namespace, name, sub, url, req, text);
      entry.status = result.code;
      this.send(res, result.code, result.body);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, 'InternalError', (err as Error).message);
      entry.status = e.code;
      this.send(res, e.code, status(e.code, e.reason, e.message, e.details));
    } finally {
      if (entry.verb !== 'watch' && entry.verb !== '') this.audit.push(entry);
    }
  }

  private notFound(r: FakeResource, name: string): HttpError {
    return new HttpError(404, 'NotFound', `${qualified(r)} "${name}" not found`, { name, group: r.group || undefined, kind: r.plural });
  }

  private execute(user: FakeUser, entry: AuditEntry, r: FakeResource, namespace: string, name: string, sub: string, url: URL, req: http.IncomingMessage, text: string): { code: number; body: unknown } {
    const ns = r.namespaced ? namespace : undefined;
    const manager = url.searchParams.get('fieldManager') ?? (String(req.headers['user-agent'] ?? 'unknown').split('/')[0] || 'unknown');
    switch (entry.verb) {
      case 'get': {
        const s = this.stored(r, ns, name);
        if (!s) throw this.notFound(r, name);
        return { code: 200, body: s.obj };
      }
      case 'list': {
        const labels = parseLabelSelector(url.searchParams.get('labelSelector'));
        const fields = parseFieldSelector(url.searchParams.get('fieldSelector'), r);
        const items = [...this.store.get(this.resKey(r))!.values()]
          .filter((s) => !namespace || s.obj.metadata.namespace === namespace)
          .filter((s) => labelsMatch(labels, (s.obj.metadata.labels as Record<string, string>) ?? {}) && fieldsMatch(fields, s.obj))
          .map((s) => {
            if (r.crd) return s.obj;
            // built-in kinds leave apiVersion and kind out of list items
            const { apiVersion: _a, kind: _k, ...rest } = s.obj;
            return rest;
          });
        return { code: 200, body: { kind: `${r.kind}List`, apiVersion: gvOf(r), metadata: { resourceVersion: String(this.rv) }, items } };
      }
      case 'create': {
        const o = JSON.parse(text) as KubeJson;
        if (!isObj(o.metadata) || typeof o.metadata.name !== 'string' || o.metadata.name === '') throw new HttpError(422, 'Invalid', `${r.kind} "" is invalid: metadata.name: Required value: name is required`);
        if (r.namespaced) {
          if (o.metadata.namespace && o.metadata.namespace !== namespace) throw new HttpError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
          o.metadata.namespace = namespace;
        }
        if (this.stored(r, ns, o.metadata.name)) throw new HttpError(409, 'AlreadyExists', `${qualified(r)} "${o.metadata.name}" already exists`, { name: o.metadata.name, group: r.group || undefined, kind: r.plural });
        return { code: 201, body: this.create(r, o, manager, { keepStatus: false }).obj };
      }
      case 'update': {
        const s = this.stored(r, ns, name);
        if (!s) throw this.notFound(r, name);
        const o = JSON.parse(text) as KubeJson;
        if (o.metadata?.resourceVersion && o.metadata.resourceVersion !== s.obj.metadata.resourceVersion) {
          throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: r.plural });
        }
        this.update(r, s, o, manager, { keepStatus: sub !== 'status' && !!r.status, onlyStatus: sub === 'status' });
        return { code: 200, body: s.obj };
      }
      case 'patch':
        return this.patch(user, entry, r, ns, name, sub, url, req, text);
      case 'delete': {
        const s = this.stored(r, ns, name);
        if (!s) throw this.notFound(r, name);
        this.destroy(r, s);
        return { code: 200, body: s.obj };
      }
      default:
        throw new HttpError(405, 'MethodNotAllowed', `${entry.verb} is not supported by the fake API server`);
    }
  }

  private patch(user: FakeUser, entry: AuditEntry, r: FakeResource, ns: string | undefined, name: string, sub: string, url: URL, req: http.IncomingMessage, text: string): { code: number; body: unknown } {
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim();
    const s = this.stored(r, ns, name);
    if (type === 'application/apply-patch+yaml' || type === 'application/apply-patch+cbor') {
      const manager = url.searchParams.get('fieldManager');
      if (!manager) throw new HttpError(422, 'Invalid', 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch');
      const force = url.searchParams.get('force') === 'true';
      let applied: KubeJson;
      try {
        applied = parseYaml(text) as KubeJson;
      } catch (err) {
        throw new HttpError(400, 'BadRequest', `error decoding YAML: ${(err as Error).message}`);
      }
      if (!isObj(applied) || !isObj(applied.metadata)) throw new HttpError(400, 'BadRequest', 'apply patch must be an object with metadata');
      if (applied.apiVersion !== gvOf(r) || applied.kind !== r.kind) throw new HttpError(400, 'BadRequest', `apply patch apiVersion/kind ${String(applied.apiVersion)}/${String(applied.kind)} does not match ${gvOf(r)}/${r.kind}`);
      if (applied.metadata.name !== name) throw new HttpError(400, 'BadRequest', `the name of the object (${String(applied.metadata.name)}) does not match the name on the URL (${name})`);
      if (r.namespaced && applied.metadata.namespace && applied.metadata.namespace !== ns) throw new HttpError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      if (!s) {
        if (sub === 'status') throw this.notFound(r, name);
        // creating through apply is also authorized as create
        entry.rules = [...entry.rules, ...this.authorize(user, { ...entry, verb: 'create' })];
        const o = clone(applied);
        if (r.namespaced) o.metadata.namespace = ns;
        const created = this.create(r, o, manager, { keepStatus: false });
        const mine = created.managers.get(manager)!;
        mine.operation = 'Apply';
        this.withManagedFields(created, r);
        return { code: 201, body: created.obj };
      }
      return { code: 200, body: this.apply(r, s, applied, manager, force, sub === 'status') };
    }
    if (!s) throw this.notFound(r, name);
    let patchBody: unknown;
    try {
      patchBody = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `invalid JSON patch body: ${(err as Error).message}`);
    }
    if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
      const next = mergePatch(s.obj, patchBody) as KubeJson;
      const manager = url.searchParams.get('fieldManager') ?? (String(req.headers['user-agent'] ?? 'unknown').split('/')[0] || 'unknown');
      this.update(r, s, next, manager, { keepStatus: sub !== 'status' && !!r.status, onlyStatus: sub === 'status' });
      return { code: 200, body: s.obj };
    }
    throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`);
  }

  /** Server-side apply onto an existing object: ownership, conflicts, removal of fields no longer applied. */
  private apply(r: FakeResource, s: Stored, applied: KubeJson, manager: string, force: boolean, onlyStatus: boolean): KubeJson {
    let config = clone(applied);
    if (onlyStatus) config = { apiVersion: applied.apiVersion, kind: applied.kind, metadata: { name: applied.metadata.name }, ...(applied.status !== undefined ? { status: applied.status } : {}) } as KubeJson;
    else if (r.status) delete config.status;
    const wanted = leaves(config);
    const inScope = (p: string): boolean => {
      const first = (JSON.parse(p) as string[])[0];
      return onlyStatus ? first === 'status' : !r.status || first !== 'status';
    };
    const conflicts: { manager: string; path: string }[] = [];
    for (const [p, v] of wanted) {
      for (const [m, own] of s.managers) {
        if (m === manager) continue;
        for (const q of own.paths) {
          if (overlaps(p, q) && !isDeepStrictEqual(getPath(s.obj, JSON.parse(p) as string[]), v)) conflicts.push({ manager: m, path: p });
        }
      }
    }
    const owners = new Map([...s.managers.entries()].map(([k, v]) => [k, { operation: v.operation, paths: new Set(v.paths), time: v.time }]));
    if (conflicts.length > 0) {
      if (!force) {
        const dotted = (p: string): string => '.' + (JSON.parse(p) as string[]).join('.');
        const uniq = [...new Map(conflicts.map((c) => [`${c.manager}|${c.path}`, c])).values()];
        const lines = uniq.map((c) => `- conflict with "${c.manager}": ${dotted(c.path)}`);
        throw new HttpError(409, 'Conflict', `Apply failed with ${uniq.length} conflict${uniq.length === 1 ? '' : 's'}: ${uniq.length === 1 ? `conflict with "${uniq[0]!.manager}": ${dotted(uniq[0]!.path)}` : '\n' + lines.join('\n')}`, {
          causes: uniq.map((c) => ({ reason: 'FieldManagerConflict', message: `conflict with "${c.manager}"`, field: dotted(c.path) })),
        });
      }
      for (const c of conflicts) for (const q of [...owners.get(c.manager)!.paths]) if (overlaps(c.path, q)) owners.get(c.manager)!.paths.delete(q);
    }
    const next = clone(s.obj);
    const previous = s.managers.get(manager);
    if (previous?.operation === 'Apply') {
      for (const p of previous.paths) {
        if (wanted.has(p) || !inScope(p)) continue;
        const ownedElsewhere = [...owners.entries()].some(([m, o]) => m !== manager && [...o.paths].some((q) => overlaps(p, q)));
        if (!ownedElsewhere) deletePath(next, JSON.parse(p) as string[]);
      }
    }
    for (const [p, v] of wanted) setPath(next, JSON.parse(p) as string[], v);
    // keep the paths this manager owns outside this request's scope (spec vs status)
    const kept = previous?.operation === 'Apply' ? [...previous.paths].filter((p) => !inScope(p)) : [];
    owners.set(manager, { operation: 'Apply', paths: new Set([...kept, ...wanted.keys()]), time: nowIso() });
    for (const [m, o] of owners) if (m !== manager) for (const p of wanted.keys()) o.paths.delete(p);
    this.update(r, s, next, manager, { keepStatus: !onlyStatus && !!r.status, onlyStatus, ownership: owners });
    return s.obj;
  }

  private tokenReview(body: Json): Json {
    const spec = (isObj(body.spec) ? body.spec : {}) as Json;
    const token = typeof spec.token === 'string' ? spec.token : '';
    const wanted = Array.isArray(spec.audiences) && spec.audiences.length > 0 ? (spec.audiences as string[]) : [API_AUDIENCE];
    const review = (st: Json): Json => ({ kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status: st });
    const t = this.tokens.get(token);
    if (!t) return review({ authenticated: false, user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive]' });
    if (t.expiresAt.getTime() <= Date.now()) return review({ authenticated: false, user: {}, error: '[invalid bearer token, service account token has expired]' });
    const audiences = t.audiences.filter((a) => wanted.includes(a));
    if (audiences.length === 0) return review({ authenticated: false, user: {}, error: `[invalid bearer token, token audiences ${JSON.stringify(t.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` });
    if (t.podName) {
      const pod = this.stored(this.resource('v1', 'Pod'), t.namespace, t.podName);
      if (!pod || (t.podUid && pod.obj.metadata.uid !== t.podUid)) return review({ authenticated: false, user: {}, error: '[invalid bearer token, token has been invalidated]' });
    }
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${randomUUID()}`] };
    if (t.podName) {
      extra['authentication.kubernetes.io/pod-name'] = [t.podName];
      extra['authentication.kubernetes.io/pod-uid'] = [t.podUid ?? ''];
    }
    if (t.nodeName) {
      extra['authentication.kubernetes.io/node-name'] = [t.nodeName];
      extra['authentication.kubernetes.io/node-uid'] = [randomUUID()];
    }
    return review({
      authenticated: true,
      user: { username: `system:serviceaccount:${t.namespace}:${t.serviceAccount}`, uid: randomUUID(), groups: ['system:serviceaccounts', `system:serviceaccounts:${t.namespace}`, 'system:authenticated'], extra },
      audiences,
    });
  }

  // ---- watch ----

  private watch(r: FakeResource, namespace: string, url: URL, res: http.ServerResponse): void {
    const labels = parseLabelSelector(url.searchParams.get('labelSelector'));
    const fields = parseFieldSelector(url.searchParams.get('fieldSelector'), r);
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = { res: r, namespace, labels, fields, out: res, bookmarks: null, timeout: null };
    const write = (type: string, object: unknown): void => {
      res.write(JSON.stringify({ type, object }) + '\n');
    };
    if (rvParam !== '' && rvParam !== '0') {
      const from = Number(rvParam);
      if (!Number.isFinite(from) || from < this.compactedRv) {
        write('ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${rvParam} (${this.compactedRv})`, reason: 'Expired', code: 410 });
        res.end();
        return;
      }
      for (const ev of this.history) if (ev.res === r && ev.rv > from) this.deliver(w, ev);
    } else {
      for (const s of this.store.get(this.resKey(r))!.values()) if (this.matches(w, s.obj)) write('ADDED', s.obj);
    }
    this.watchers.add(w);
    if (url.searchParams.get('allowWatchBookmarks') === 'true') {
      w.bookmarks = setInterval(() => write('BOOKMARK', { kind: r.kind, apiVersion: gvOf(r), metadata: { resourceVersion: String(this.rv) } }), this.opts.bookmarkIntervalMs ?? 1000);
    }
    const t = Number(url.searchParams.get('timeoutSeconds') ?? '');
    if (Number.isFinite(t) && t > 0) w.timeout = setTimeout(() => this.endWatch(w), t * 1000);
    res.on('close', () => this.endWatch(w));
  }

  private matches(w: Watcher, o: KubeJson | null): boolean {
    if (!o) return false;
    if (w.namespace && o.metadata.namespace !== w.namespace) return false;
    return labelsMatch(w.labels, (o.metadata.labels as Record<string, string>) ?? {}) && fieldsMatch(w.fields, o);
  }

  private deliver(w: Watcher, ev: WatchEvent): void {
    const now = this.matches(w, ev.obj);
    const before = this.matches(w, ev.old);
    let type: string | null = null;
    if (ev.type === 'ADDED') type = now ? 'ADDED' : null;
    else if (ev.type === 'DELETED') type = before ? 'DELETED' : null;
    else if (now && before) type = 'MODIFIED';
    else if (now) type = 'ADDED';
    else if (before) type = 'DELETED'; // left the selector
    if (type) w.out.write(JSON.stringify({ type, object: ev.obj }) + '\n');
  }

  private endWatch(w: Watcher): void {
    if (!this.watchers.delete(w)) return;
    if (w.bookmarks) clearInterval(w.bookmarks);
    if (w.timeout) clearTimeout(w.timeout);
    w.out.end();
  }
}

/** Waits until `fn` returns a truthy value (polling), or fails with `what`. */
export async function eventually<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
