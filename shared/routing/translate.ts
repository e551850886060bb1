/**
 * Gateway API (`gateway.networking.k8s.io/v1` HTTPRoute, GRPCRoute, ReferenceGrant) and Istio
 * (`networking.istio.io` VirtualService, DestinationRule) objects into the route tables and
 * destination policies of types.ts.
 *
 * Each object translates on its own and throws ConfigError naming the file, the object and the
 * field. `buildRoutingConfig` translates a whole set, collects the errors as problems (the caller
 * decides whether to keep an object's previous good translation) and resolves references to
 * Services: routes whose parent is unknown are not attached, backends that cannot be used get
 * the 500 Gateway API prescribes for their share of traffic.
 */

import { ConfigError, type KubeObject } from '../config/objects.js';
import { checkRegex, orderEntries } from './match.js';
import { DEFAULT_RETRY_ON } from './retry.js';
import type {
  BackendTarget,
  ConnectionPoolPolicy,
  DestinationPolicy,
  FaultPolicy,
  HeaderModifier,
  HeaderPair,
  LoadBalancerPolicy,
  NamedMatch,
  OutlierDetectionPolicy,
  PathMatch,
  PathModifier,
  RequestMirror,
  RequestRedirect,
  ResilienceOverlay,
  RetryCondition,
  RetryPolicy,
  Route,
  RouteKind,
  RouteMatch,
  RouteRule,
  RouteTable,
  RoutingConfig,
  Subset,
  TrafficPolicy,
  UrlRewrite,
  ValueMatch,
  WeightedBackend,
} from './types.js';

type Raw = Record<string, unknown>;

/** What the translator needs to know about a Service. The model's Service fits. */
export interface ServiceRef {
  /** namespace/name */
  key: string;
  name: string;
  namespace: string;
  /** `name.namespace.svc.cluster.local` */
  hostname: string;
  ports: { port: number; name?: string }[];
}

/** One object that failed to translate; the caller may keep its previous translation. */
export interface RoutingProblem {
  /** `Kind namespace/name` */
  object: string;
  error: ConfigError;
}

export interface RoutingBuild {
  config: RoutingConfig;
  problems: RoutingProblem[];
  warnings: string[];
}

const GATEWAY_GROUP = 'gateway.networking.k8s.io';

// ---------------------------------------------------------------------------------------------
// Small readers

function where(o: KubeObject): string {
  return `${o.source ?? '<input>'}: ${o.kind} "${o.metadata.namespace ?? 'default'}/${o.metadata.name}"`;
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function fail(at: string, path: string, message: string): never {
  throw new ConfigError(`${at}: ${path}${message.startsWith(':') ? '' : ' '}${message}`);
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** Refuses fields the schema does not know, so a typo does not silently change routing. */
function checkKeys(obj: Raw, allowed: readonly string[], at: string, path: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) fail(at, path, `: unknown field "${k}" (expected one of: ${allowed.join(', ')})`);
  }
}

function object(v: unknown, at: string, path: string): Raw {
  if (!isObject(v)) fail(at, path, `must be an object, got ${show(v)}`);
  return v;
}

function optObject(v: unknown, at: string, path: string): Raw | null {
  return present(v) ? object(v, at, path) : null;
}

function list(v: unknown, at: string, path: string, max?: number): unknown[] {
  if (!present(v)) return [];
  if (!Array.isArray(v)) fail(at, path, `must be a list, got ${show(v)}`);
  if (max !== undefined && v.length > max) fail(at, path, `has ${v.length} items; at most ${max} are allowed`);
  return v;
}

function str(v: unknown, at: string, path: string): string {
  if (typeof v !== 'string' || v === '') fail(at, path, `must be a non-empty string, got ${show(v)}`);
  return v;
}

function optStr(v: unknown, at: string, path: string): string | null {
  return present(v) ? str(v, at, path) : null;
}

function int(v: unknown, at: string, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(at, path, `must be an integer from ${min} to ${max}, got ${show(v)}`);
  return v;
}

function optInt(v: unknown, at: string, path: string, min: number, max: number): number | null {
  return present(v) ? int(v, at, path, min, max) : null;
}

function percentValue(v: unknown, at: string, path: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) fail(at, path, `must be a number from 0 to 100, got ${show(v)}`);
  return v;
}

const DURATION_UNITS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };

/**
 * A duration as Gateway API (`1h`, `30s`, `500ms`, `1m30s`) and Istio (`1.5s`, `100ms`) write it, in
 * milliseconds. Throws ConfigError naming the field.
 */
export function parseDuration(v: unknown, at: string, path: string): number {
  if (typeof v !== 'string' || v === '') fail(at, path, `must be a duration such as "10s" or "250ms", got ${show(v)}`);
  if (v === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/y;
  let ms = 0;
  let i = 0;
  while (i < v.length) {
    re.lastIndex = i;
    const m = re.exec(v);
    if (!m) fail(at, path, `must be a duration such as "10s" or "250ms", got ${show(v)}`);
    ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    i = re.lastIndex;
  }
  return Math.round(ms * 1000) / 1000;
}

function optDuration(v: unknown, at: string, path: string): number | null {
  return present(v) ? parseDuration(v, at, path) : null;
}

function creationTime(o: KubeObject): number | null {
  const ts: unknown = (o.metadata as Record<string, unknown>).creationTimestamp;
  if (ts instanceof Date) return ts.getTime();
  if (typeof ts !== 'string') return null;
  const t = Date.parse(ts);
  return Number.isNaN(t) ? null : t;
}

const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const HOSTNAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];

function headerName(v: unknown, at: string, path: string): string {
  const s = str(v, at, path);
  if (!HEADER_NAME.test(s)) fail(at, path, `: "${s}" is not a valid header name`);
  return s.toLowerCase();
}

function regex(source: string, at: string, path: string): string {
  const err = checkRegex(source);
  if (err !== null) fail(at, path, `: "${source}" is not a valid regular expression (${err})`);
  return source;
}

/** An absolute path as Gateway API validates it. */
function absolutePath(v: unknown, at: string, path: string): string {
  const s = str(v, at, path);
  if (!s.startsWith('/')) fail(at, path, `: "${s}" must start with "/"`);
  if (/\/\/|\/\.\/|\/\.\.\/|%2f|%2F|#/.test(s) || s.endsWith('/..') || s.endsWith('/.')) fail(at, path, `: "${s}" must not contain "//", "/./", "/../", "%2f" or "#"`);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Gateway API: matches, filters, backends

function gatewayPathMatch(raw: unknown, at: string, path: string): PathMatch {
  if (!present(raw)) return { type: 'PathPrefix', value: '/' };
  const p = object(raw, at, path);
  checkKeys(p, ['type', 'value'], at, path);
  const type = p.type ?? 'PathPrefix';
  if (type !== 'Exact' && type !== 'PathPrefix' && type !== 'RegularExpression') fail(at, `${path}.type`, `must be Exact, PathPrefix or RegularExpression, got ${show(type)}`);
  const value = p.value ?? '/';
  if (type === 'RegularExpression') return { type, value: regex(str(value, at, `${path}.value`), at, `${path}.value`) };
  return { type, value: absolutePath(value, at, `${path}.value`) };
}

function gatewayNamedMatches(raw: unknown, at: string, path: string, header: boolean): NamedMatch[] {
  const seen = new Set<string>();
  return list(raw, at, path, 16).map((item, i) => {
    const p = `${path}[${i}]`;
    const h = object(item, at, p);
    checkKeys(h, ['type', 'name', 'value'], at, p);
    const type = h.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') fail(at, `${p}.type`, `must be Exact or RegularExpression, got ${show(type)}`);
    const name = header ? headerName(h.name, at, `${p}.name`) : str(h.name, at, `${p}.name`);
    if (seen.has(name)) fail(at, `${p}.name`, `: "${name}" is matched twice (names must be unique${header ? ', case-insensitively' : ''})`);
    seen.add(name);
    if (typeof h.value !== 'string') fail(at, `${p}.value`, `must be a string, got ${show(h.value)}`);
    const value = type === 'RegularExpression' ? regex(h.value, at, `${p}.value`) : h.value;
    return { type, name, value };
  });
}

function summarize(m: Omit<RouteMatch, 'summary'>): string {
  const parts: string[] = [];
  if (m.path) parts.push(`path ${m.path.type === 'Exact' ? '' : m.path.type === 'RegularExpression' ? '~' : 'prefix '}${m.path.value}`);
  if (m.method) parts.push(`method ${m.method.type === 'Exact' ? '' : m.method.type === 'Prefix' ? 'prefix ' : '~'}${m.method.value}`);
  for (const h of m.headers) parts.push(`header ${h.name}${h.invert ? ' not' : ''}${h.type === 'Exact' ? '=' : h.type === 'Prefix' ? '^=' : '~'}${h.value}`);
  for (const q of m.queryParams) parts.push(`query ${q.name}${q.type === 'Exact' ? '=' : q.type === 'Prefix' ? '^=' : '~'}${q.value}`);
  if (m.port !== null) parts.push(`port ${m.port}`);
  if (m.sourceNamespace !== null) parts.push(`from namespace ${m.sourceNamespace}`);
  return parts.length > 0 ? parts.join(', ') : 'any request';
}

function routeMatch(m: Omit<RouteMatch, 'summary'>): RouteMatch {
  return { ...m, summary: summarize(m) };
}

function httpRouteMatch(raw: unknown, at: string, path: string): RouteMatch {
  const m = object(raw, at, path);
  checkKeys(m, ['path', 'headers', 'queryParams', 'method'], at, path);
  let method: ValueMatch | null = null;
  if (present(m.method)) {
    if (typeof m.method !== 'string' || !METHODS.includes(m.method)) fail(at, `${path}.method`, `must be one of ${METHODS.join(', ')}, got ${show(m.method)}`);
    method = { type: 'Exact', value: m.method };
  }
  return routeMatch({
    path: gatewayPathMatch(m.path, at, `${path}.path`),
    headers: gatewayNamedMatches(m.headers, at, `${path}.headers`, true),
    queryParams: gatewayNamedMatches(m.queryParams, at, `${path}.queryParams`, false),
    method,
    ignoreCase: false,
    port: null,
    sourceNamespace: null,
  });
}

const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** GRPCRoute method match as a path match on `/service/method`. */
function grpcPathMatch(raw: unknown, at: string, path: string): PathMatch | null {
  if (!present(raw)) return null;
  const m = object(raw, at, path);
  checkKeys(m, ['type', 'service', 'method'], at, path);
  const type = m.type ?? 'Exact';
  if (type !== 'Exact' && type !== 'RegularExpression') fail(at, `${path}.type`, `must be Exact or RegularExpression, got ${show(type)}`);
  const service = optStr(m.service, at, `${path}.service`);
  const method = optStr(m.method, at, `${path}.method`);
  if (service === null && method === null) fail(at, path, 'must set service, method or both');
  if (type === 'Exact') {
    if (service !== null && !GRPC_SERVICE.test(service)) fail(at, `${path}.service`, `: "${service}" is not a gRPC service name (package.Service)`);
    if (method !== null && !GRPC_METHOD.test(method)) fail(at, `${path}.method`, `: "${method}" is not a gRPC method name`);
    if (service !== null && method !== null) return { type: 'Exact', value: `/${service}/${method}` };
    if (service !== null) return { type: 'Prefix', value: `/${service}/` };
    return { type: 'RegularExpression', value: `/[^/]+/${escapeRegex(method!)}` };
  }
  const s = service === null ? '[^/]+' : `(?:${regex(service, at, `${path}.service`)})`;
  const me = method === null ? '[^/]+' : `(?:${regex(method, at, `${path}.method`)})`;
  return { type: 'RegularExpression', value: `/${s}/${me}` };
}

function grpcRouteMatch(raw: unknown, at: string, path: string): RouteMatch {
  const m = object(raw, at, path);
  checkKeys(m, ['method', 'headers'], at, path);
  return routeMatch({
    path: grpcPathMatch(m.method, at, `${path}.method`),
    headers: gatewayNamedMatches(m.headers, at, `${path}.headers`, true),
    queryParams: [],
    method: null,
    ignoreCase: false,
    port: null,
    sourceNamespace: null,
  });
}

function headerPairs(raw: unknown, at: string, path: string): HeaderPair[] {
  const seen = new Set<string>();
  return list(raw, at, path, 16).map((item, i) => {
    const p = `${path}[${i}]`;
    const h = object(item, at, p);
    checkKeys(h, ['name', 'value'], at, p);
    const name = headerName(h.name, at, `${p}.name`);
    if (seen.has(name)) fail(at, `${p}.name`, `: "${name}" appears twice`);
    seen.add(name);
    if (typeof h.value !== 'string') fail(at, `${p}.value`, `must be a string, got ${show(h.value)}`);
    return { name, value: h.value };
  });
}

function gatewayHeaderModifier(raw: unknown, at: string, path: string): HeaderModifier {
  const m = object(raw, at, path);
  checkKeys(m, ['set', 'add', 'remove'], at, path);
  const remove = list(m.remove, at, `${path}.remove`, 16).map((n, i) => headerName(n, at, `${path}.remove[${i}]`));
  if (new Set(remove).size !== remove.length) fail(at, `${path}.remove`, 'lists a header twice');
  return { set: headerPairs(m.set, at, `${path}.set`), add: headerPairs(m.add, at, `${path}.add`), remove };
}

function pathModifier(raw: unknown, at: string, path: string): PathModifier | null {
  if (!present(raw)) return null;
  const p = object(raw, at, path);
  checkKeys(p, ['type', 'replaceFullPath', 'replacePrefixMatch'], at, path);
  if (p.type === 'ReplaceFullPath') {
    if (present(p.replacePrefixMatch)) fail(at, path, 'sets replacePrefixMatch with type ReplaceFullPath');
    return { type: 'ReplaceFullPath', value: absolutePath(p.replaceFullPath, at, `${path}.replaceFullPath`) };
  }
  if (p.type === 'ReplacePrefixMatch') {
    if (present(p.replaceFullPath)) fail(at, path, 'sets replaceFullPath with type ReplacePrefixMatch');
    return { type: 'ReplacePrefixMatch', value: absolutePath(p.replacePrefixMatch, at, `${path}.replacePrefixMatch`) };
  }
  return fail(at, `${path}.type`, `must be ReplaceFullPath or ReplacePrefixMatch, got ${show(p.type)}`);
}

function redirectFilter(raw: unknown, at: string, path: string): RequestRedirect {
  const r = object(raw, at, path);
  checkKeys(r, ['scheme', 'hostname', 'path', 'port', 'statusCode'], at, path);
  const scheme = optStr(r.scheme, at, `${path}.scheme`);
  if (scheme !== null && scheme !== 'http' && scheme !== 'https') fail(at, `${path}.scheme`, `must be http or https, got ${show(scheme)}`);
  const hostname = optStr(r.hostname, at, `${path}.hostname`);
  if (hostname !== null && !HOSTNAME.test(hostname)) fail(at, `${path}.hostname`, `: "${hostname}" is not a hostname`);
  const statusCode = present(r.statusCode) ? r.statusCode : 302;
  if (![301, 302, 303, 307, 308].includes(statusCode as number)) fail(at, `${path}.statusCode`, `must be 301, 302, 303, 307 or 308, got ${show(statusCode)}`);
  return { scheme, hostname, path: pathModifier(r.path, at, `${path}.path`), port: optInt(r.port, at, `${path}.port`, 1, 65535), statusCode: statusCode as number };
}

function rewriteFilter(raw: unknown, at: string, path: string): UrlRewrite {
  const r = object(raw, at, path);
  checkKeys(r, ['hostname', 'path'], at, path);
  const hostname = optStr(r.hostname, at, `${path}.hostname`);
  if (hostname !== null && !HOSTNAME.test(hostname)) fail(at, `${path}.hostname`, `: "${hostname}" is not a hostname`);
  return { hostname, path: pathModifier(r.path, at, `${path}.path`) };
}

/** A Gateway API reference to a Service: `{group: "", kind: Service, name, namespace?, port}`. */
interface ServiceReference {
  target: BackendTarget;
  /** why it cannot be used, or null */
  invalid: string | null;
  crossNamespace: boolean;
}

function serviceReference(raw: Raw, routeNs: string, at: string, path: string, requirePort: boolean): ServiceReference {
  const group = raw.group ?? '';
  const kind = raw.kind ?? 'Service';
  if (typeof group !== 'string') fail(at, `${path}.group`, `must be a string, got ${show(group)}`);
  if (typeof kind !== 'string') fail(at, `${path}.kind`, `must be a string, got ${show(kind)}`);
  const name = str(raw.name, at, `${path}.name`);
  const namespace = present(raw.namespace) ? str(raw.namespace, at, `${path}.namespace`) : routeNs;
  const isService = (group === '' || group === 'core') && kind === 'Service';
  const port = present(raw.port) ? int(raw.port, at, `${path}.port`, 1, 65535) : null;
  if (isService && requirePort && port === null) fail(at, `${path}.port`, 'is required when the backend is a Service');
  return {
    target: { service: `${namespace}/${name}`, port, subset: null },
    invalid: isService ? null : `${path} refers to ${group === '' ? '' : `${group}/`}${kind}, only Services are supported`,
    crossNamespace: namespace !== routeNs,
  };
}

function mirrorFilter(raw: unknown, routeNs: string, at: string, path: string, refs: PendingRef[]): RequestMirror {
  const m = object(raw, at, path);
  checkKeys(m, ['backendRef', 'percent', 'fraction'], at, path);
  const br = object(m.backendRef, at, `${path}.backendRef`);
  checkKeys(br, ['group', 'kind', 'name', 'namespace', 'port'], at, `${path}.backendRef`);
  const ref = serviceReference(br, routeNs, at, `${path}.backendRef`, true);
  if (ref.invalid !== null) fail(at, `${path}.backendRef`, `: ${ref.invalid}`);
  if (present(m.percent) && present(m.fraction)) fail(at, path, 'sets both percent and fraction');
  let percent = 100;
  if (present(m.percent)) percent = int(m.percent, at, `${path}.percent`, 0, 100);
  if (present(m.fraction)) {
    const f = object(m.fraction, at, `${path}.fraction`);
    checkKeys(f, ['numerator', 'denominator'], at, `${path}.fraction`);
    const num = int(f.numerator, at, `${path}.fraction.numerator`, 0, 1_000_000);
    const den = present(f.denominator) ? int(f.denominator, at, `${path}.fraction.denominator`, 1, 1_000_000) : 100;
    if (num > den) fail(at, `${path}.fraction`, 'numerator must not exceed denominator');
    percent = (100 * num) / den;
  }
  const mirror: RequestMirror = { backend: ref.target, percent };
  refs.push({ target: ref.target, crossNamespace: ref.crossNamespace, mirror: true, path: `${path}.backendRef` });
  return mirror;
}

/** A backend or mirror reference still to be checked against known Services and ReferenceGrants. */
interface PendingRef {
  target: BackendTarget;
  crossNamespace: boolean;
  mirror: boolean;
  path: string;
  backend?: WeightedBackend;
}

interface RuleFilters {
  requestHeaders: HeaderModifier | null;
  responseHeaders: HeaderModifier | null;
  redirect: RequestRedirect | null;
  rewrite: UrlRewrite | null;
  mirrors: RequestMirror[];
}

function gatewayFilters(raw: unknown, kind: 'HTTPRoute' | 'GRPCRoute', routeNs: string, at: string, path: string, refs: PendingRef[]): RuleFilters {
  const out: RuleFilters = { requestHeaders: null, responseHeaders: null, redirect: null, rewrite: null, mirrors: [] };
  const allowed = kind === 'HTTPRoute' ? ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror'] : ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror'];
  list(raw, at, path, 16).forEach((item, i) => {
    const p = `${path}[${i}]`;
    const f = object(item, at, p);
    const type = f.type;
    if (type === 'ExtensionRef' || type === 'CORS') fail(at, `${p}.type`, `: filter ${type} is not supported by the waypoint`);
    if (typeof type !== 'string' || !allowed.includes(type)) fail(at, `${p}.type`, `must be one of ${allowed.join(', ')}, got ${show(type)}`);
    const field = type === 'URLRewrite' ? 'urlRewrite' : type.charAt(0).toLowerCase() + type.slice(1);
    checkKeys(f, ['type', field], at, p);
    if (!present(f[field])) fail(at, `${p}.${field}`, `must be set for a ${type} filter`);
    const once = (v: unknown): void => {
      if (v !== null) fail(at, p, `: only one ${type} filter is allowed per rule`);
    };
    switch (type) {
      case 'RequestHeaderModifier':
        once(out.requestHeaders);
        out.requestHeaders = gatewayHeaderModifier(f[field], at, `${p}.${field}`);
        break;
      case 'ResponseHeaderModifier':
        once(out.responseHeaders);
        out.responseHeaders = gatewayHeaderModifier(f[field], at, `${p}.${field}`);
        break;
      case 'RequestRedirect':
        once(out.redirect);
        out.redirect = redirectFilter(f[field], at, `${p}.${field}`);
        break;
      case 'URLRewrite':
        once(out.rewrite);
        out.rewrite = rewriteFilter(f[field], at, `${p}.${field}`);
        break;
      case 'RequestMirror':
        out.mirrors.push(mirrorFilter(f[field], routeNs, at, `${p}.${field}`, refs));
        break;
    }
  });
  if (out.redirect !== null && out.rewrite !== null) fail(at, path, 'cannot combine RequestRedirect and URLRewrite in one rule');
  return out;
}

function gatewayBackends(raw: unknown, kind: 'HTTPRoute' | 'GRPCRoute', routeNs: string, at: string, path: string, refs: PendingRef[]): WeightedBackend[] {
  return list(raw, at, path, 16).map((item, i) => {
    const p = `${path}[${i}]`;
    const b = object(item, at, p);
    checkKeys(b, ['group', 'kind', 'name', 'namespace', 'port', 'weight', 'filters'], at, p);
    const ref = serviceReference(b, routeNs, at, p, true);
    const weight = present(b.weight) ? int(b.weight, at, `${p}.weight`, 0, 1_000_000) : 1;
    let requestHeaders: HeaderModifier | null = null;
    let responseHeaders: HeaderModifier | null = null;
    list(b.filters, at, `${p}.filters`, 16).forEach((fi, k) => {
      const fp = `${p}.filters[${k}]`;
      const f = object(fi, at, fp);
      if (f.type === 'RequestHeaderModifier') {
        checkKeys(f, ['type', 'requestHeaderModifier'], at, fp);
        if (requestHeaders !== null) fail(at, fp, ': only one RequestHeaderModifier per backend');
        requestHeaders = gatewayHeaderModifier(f.requestHeaderModifier, at, `${fp}.requestHeaderModifier`);
      } else if (f.type === 'ResponseHeaderModifier') {
        checkKeys(f, ['type', 'responseHeaderModifier'], at, fp);
        if (responseHeaders !== null) fail(at, fp, ': only one ResponseHeaderModifier per backend');
        responseHeaders = gatewayHeaderModifier(f.responseHeaderModifier, at, `${fp}.responseHeaderModifier`);
      } else {
        fail(at, `${fp}.type`, `: per-backend filters of ${kind} may be RequestHeaderModifier or ResponseHeaderModifier, got ${show(f.type)}`);
      }
    });
    const backend: WeightedBackend = { ...ref.target, weight, requestHeaders, responseHeaders, invalid: ref.invalid };
    refs.push({ target: ref.target, crossNamespace: ref.crossNamespace, mirror: false, path: p, backend });
    return backend;
  });
}

function gatewayRetry(raw: unknown, at: string, path: string): RetryPolicy | null {
  if (!present(raw)) return null;
  const r = object(raw, at, path);
  checkKeys(r, ['codes', 'attempts', 'backoff'], at, path);
  const codes = list(r.codes, at, `${path}.codes`).map((c, i) => int(c, at, `${path}.codes[${i}]`, 400, 599));
  const attempts = present(r.attempts) ? int(r.attempts, at, `${path}.attempts`, 0, 100) : 2;
  const backoff = optDuration(r.backoff, at, `${path}.backoff`);
  // Connection failures and resets are retried too: nothing reached the backend.
  const retryOn: RetryCondition[] = ['connect-failure', 'refused-stream', 'reset'];
  if (codes.length > 0) retryOn.push('retriable-status-codes');
  return { attempts, perTryTimeoutMs: null, retryOn, retriableStatusCodes: codes, backoffBaseMs: backoff ?? 25 };
}

function gatewayTimeouts(raw: unknown, at: string, path: string): RouteRule['timeouts'] {
  if (!present(raw)) return { requestMs: null, backendRequestMs: null };
  const t = object(raw, at, path);
  checkKeys(t, ['request', 'backendRequest'], at, path);
  // "0s" disables a timeout, as in Gateway API.
  const request = optDuration(t.request, at, `${path}.request`);
  const backend = optDuration(t.backendRequest, at, `${path}.backendRequest`);
  const requestMs = request === 0 ? null : request;
  const backendRequestMs = backend === 0 ? null : backend;
  if (requestMs !== null && backendRequestMs !== null && backendRequestMs > requestMs) {
    fail(at, `${path}.backendRequest`, `(${String(t.backendRequest)}) must not be longer than request (${String(t.request)})`);
  }
  return { requestMs, backendRequestMs };
}

/** A parentRef that attaches the route to a Service. */
export interface ServiceParent {
  /** namespace/name */
  service: string;
  port: number | null;
}

/** One HTTPRoute or GRPCRoute, before it is attached to its parents. */
export interface TranslatedRoute {
  kind: 'HTTPRoute' | 'GRPCRoute';
  key: string;
  namespace: string;
  created: number | null;
  rules: RouteRule[];
  parents: ServiceParent[];
  warnings: string[];
  /** backend and mirror references, checked by buildRoutingConfig */
  references: PendingRef[];
}

function checkGatewayObject(o: KubeObject, kind: string): string {
  const at = where(o);
  if (o.kind !== kind) throw new ConfigError(`${at}: expected kind ${kind}`);
  if (!o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) throw new ConfigError(`${at}: apiVersion ${o.apiVersion} is not ${GATEWAY_GROUP} (use ${GATEWAY_GROUP}/v1)`);
  return at;
}

function translateGatewayRoute(o: KubeObject, kind: 'HTTPRoute' | 'GRPCRoute'): TranslatedRoute {
  const at = checkGatewayObject(o, kind);
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['parentRefs', 'hostnames', 'rules'], at, 'spec');
  const ns = o.metadata.namespace ?? 'default';
  const warnings: string[] = [];
  const parents: ServiceParent[] = [];
  list(spec.parentRefs, at, 'spec.parentRefs', 32).forEach((item, i) => {
    const p = `spec.parentRefs[${i}]`;
    const r = object(item, at, p);
    checkKeys(r, ['group', 'kind', 'name', 'namespace', 'port', 'sectionName'], at, p);
    const group = r.group ?? GATEWAY_GROUP;
    const pkind = r.kind ?? 'Gateway';
    const name = str(r.name, at, `${p}.name`);
    const namespace = present(r.namespace) ? str(r.namespace, at, `${p}.namespace`) : ns;
    if ((group === '' || group === 'core') && pkind === 'Service') {
      if (present(r.sectionName)) fail(at, `${p}.sectionName`, 'is not supported for a Service parent (use port)');
      parents.push({ service: `${namespace}/${name}`, port: optInt(r.port, at, `${p}.port`, 1, 65535) });
    } else {
      warnings.push(`${at}: ${p} is a ${String(group) || 'core'}/${String(pkind)}, not a Service: ignored by waypoints`);
    }
  });
  if (present(spec.hostnames) && list(spec.hostnames, at, 'spec.hostnames').length > 0 && parents.length > 0) {
    warnings.push(`${at}: spec.hostnames is ignored for Service parents (the Service decides which requests the route sees)`);
  }
  const refs: PendingRef[] = [];
  const rawRules = present(spec.rules) ? list(spec.rules, at, 'spec.rules', 16) : [{}];
  const rules = rawRules.map((item, r): RouteRule => {
    const p = `spec.rules[${r}]`;
    const rule = object(item, at, p);
    const keys = kind === 'HTTPRoute' ? ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry', 'sessionPersistence'] : ['name', 'matches', 'filters', 'backendRefs', 'sessionPersistence'];
    checkKeys(rule, keys, at, p);
    if (present(rule.sessionPersistence)) warnings.push(`${at}: ${p}.sessionPersistence is not supported and is ignored`);
    const rawMatches = list(rule.matches, at, `${p}.matches`, 64);
    let matches: RouteMatch[];
    if (kind === 'HTTPRoute') {
      matches = rawMatches.length === 0 ? [httpRouteMatch({}, at, `${p}.matches`)] : rawMatches.map((m, k) => httpRouteMatch(m, at, `${p}.matches[${k}]`));
    } else {
      matches = rawMatches.map((m, k) => grpcRouteMatch(m, at, `${p}.matches[${k}]`));
    }
    const filters = gatewayFilters(rule.filters, kind, ns, at, `${p}.filters`, refs);
    const backends = gatewayBackends(rule.backendRefs, kind, ns, at, `${p}.backendRefs`, refs);
    if (filters.redirect !== null && backends.length > 0) fail(at, p, 'cannot have backendRefs with a RequestRedirect filter');
    const prefixRewrite = filters.redirect?.path?.type === 'ReplacePrefixMatch' || filters.rewrite?.path?.type === 'ReplacePrefixMatch';
    if (prefixRewrite && (matches.length !== 1 || matches[0]!.path?.type !== 'PathPrefix')) {
      fail(at, p, 'uses ReplacePrefixMatch, which needs exactly one match with a PathPrefix path');
    }
    return {
      name: typeof rule.name === 'string' && rule.name !== '' ? rule.name : `rule ${r}`,
      matches,
      requestHeaders: filters.requestHeaders,
      responseHeaders: filters.responseHeaders,
      redirect: filters.redirect,
      rewrite: filters.rewrite,
      directResponse: null,
      mirrors: filters.mirrors,
      backends,
      timeouts: kind === 'HTTPRoute' ? gatewayTimeouts(rule.timeouts, at, `${p}.timeouts`) : { requestMs: null, backendRequestMs: null },
      retry: kind === 'HTTPRoute' ? gatewayRetry(rule.retry, at, `${p}.retry`) : null,
      fault: null,
    };
  });
  return { kind, key: `${ns}/${o.metadata.name}`, namespace: ns, created: creationTime(o), rules, parents, warnings, references: refs };
}

/** Translates an HTTPRoute; throws ConfigError naming file, object and field. */
export function translateHTTPRoute(o: KubeObject): TranslatedRoute {
  return translateGatewayRoute(o, 'HTTPRoute');
}

/** Translates a GRPCRoute (method matches become `/service/method` path matches). */
export function translateGRPCRoute(o: KubeObject): TranslatedRoute {
  return translateGatewayRoute(o, 'GRPCRoute');
}

/** A ReferenceGrant: who in other namespaces may refer to Services in its namespace. */
interface ReferenceGrant {
  namespace: string;
  from: { kind: string; namespace: string }[];
  /** Service names, or null for every Service */
  to: (string | null)[];
}

function translateReferenceGrant(o: KubeObject): ReferenceGrant {
  const at = where(o);
  if (!o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) throw new ConfigError(`${at}: apiVersion ${o.apiVersion} is not ${GATEWAY_GROUP}`);
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['from', 'to'], at, 'spec');
  const from = list(spec.from, at, 'spec.from').map((item, i) => {
    const f = object(item, at, `spec.from[${i}]`);
    checkKeys(f, ['group', 'kind', 'namespace'], at, `spec.from[${i}]`);
    return { kind: str(f.kind, at, `spec.from[${i}].kind`), namespace: str(f.namespace, at, `spec.from[${i}].namespace`) };
  });
  const to: (string | null)[] = [];
  list(spec.to, at, 'spec.to').forEach((item, i) => {
    const t = object(item, at, `spec.to[${i}]`);
    checkKeys(t, ['group', 'kind', 'name'], at, `spec.to[${i}]`);
    if ((t.group ?? '') === '' && t.kind === 'Service') to.push(present(t.name) ? str(t.name, at, `spec.to[${i}].name`) : null);
  });
  return { namespace: o.metadata.namespace ?? 'default', from, to };
}

// ---------------------------------------------------------------------------------------------
// Istio: VirtualService

/** Resolves an Istio host (`reviews`, `reviews.ns`, `reviews.ns.svc.cluster.local`) to a Service key. */
export type HostResolver = (host: string, namespace: string) => string | null;

/** The usual Kubernetes short forms of a Service hostname. */
export function hostResolver(services: readonly ServiceRef[]): HostResolver {
  const byHost = new Map<string, string>();
  for (const s of services) {
    byHost.set(s.hostname, s.key);
    byHost.set(`${s.name}.${s.namespace}`, s.key);
    byHost.set(`${s.name}.${s.namespace}.svc`, s.key);
  }
  const keys = new Set(services.map((s) => s.key));
  return (host, namespace) => {
    if (!host.includes('.')) return keys.has(`${namespace}/${host}`) ? `${namespace}/${host}` : null;
    return byHost.get(host) ?? null;
  };
}

function istioStringMatch(raw: unknown, at: string, path: string, allowPrefix = true): ValueMatch {
  const m = object(raw, at, path);
  checkKeys(m, ['exact', 'prefix', 'regex'], at, path);
  const set = ['exact', 'prefix', 'regex'].filter((k) => present(m[k]));
  if (set.length !== 1) fail(at, path, 'must set exactly one of exact, prefix or regex');
  if (present(m.exact)) {
    if (typeof m.exact !== 'string') fail(at, `${path}.exact`, `must be a string, got ${show(m.exact)}`);
    return { type: 'Exact', value: m.exact };
  }
  if (present(m.prefix)) {
    if (!allowPrefix) fail(at, `${path}.prefix`, 'is not supported here (use exact or regex)');
    return { type: 'Prefix', value: str(m.prefix, at, `${path}.prefix`) };
  }
  return { type: 'RegularExpression', value: regex(str(m.regex, at, `${path}.regex`), at, `${path}.regex`) };
}

function istioNamedMatches(raw: unknown, at: string, path: string, header: boolean, invert: boolean): NamedMatch[] {
  const m = optObject(raw, at, path);
  if (m === null) return [];
  return Object.entries(m).map(([name, v]) => {
    const n = header ? headerName(name, at, `${path}.${name}`) : name;
    return { name: n, ...istioStringMatch(v, at, `${path}.${name}`, true), ...(invert ? { invert: true } : {}) };
  });
}

const VS_MATCH_FIELDS = ['name', 'uri', 'scheme', 'method', 'authority', 'headers', 'port', 'sourceLabels', 'gateways', 'queryParams', 'ignoreUriCase', 'withoutHeaders', 'sourceNamespace', 'statPrefix'];

/** A VirtualService match; null when it only applies to gateways other than the mesh. */
function vsMatch(raw: unknown, at: string, path: string): RouteMatch | null {
  const m = object(raw, at, path);
  checkKeys(m, VS_MATCH_FIELDS, at, path);
  if (present(m.gateways) && !list(m.gateways, at, `${path}.gateways`).includes('mesh')) return null;
  for (const k of ['scheme', 'authority', 'sourceLabels'] as const) {
    if (present(m[k])) fail(at, `${path}.${k}`, 'is not supported by the waypoint');
  }
  let pathMatch: PathMatch | null = null;
  if (present(m.uri)) {
    const u = istioStringMatch(m.uri, at, `${path}.uri`);
    pathMatch = { type: u.type === 'Prefix' ? 'Prefix' : u.type, value: u.value };
  }
  if (present(m.ignoreUriCase) && typeof m.ignoreUriCase !== 'boolean') fail(at, `${path}.ignoreUriCase`, `must be true or false, got ${show(m.ignoreUriCase)}`);
  return routeMatch({
    path: pathMatch,
    headers: [...istioNamedMatches(m.headers, at, `${path}.headers`, true, false), ...istioNamedMatches(m.withoutHeaders, at, `${path}.withoutHeaders`, true, true)],
    queryParams: istioNamedMatches(m.queryParams, at, `${path}.queryParams`, false, false),
    method: present(m.method) ? istioStringMatch(m.method, at, `${path}.method`) : null,
    ignoreCase: m.ignoreUriCase === true,
    port: optInt(m.port, at, `${path}.port`, 1, 65535),
    sourceNamespace: optStr(m.sourceNamespace, at, `${path}.sourceNamespace`),
  });
}

function istioHeaderModifier(raw: unknown, at: string, path: string): HeaderModifier | null {
  const m = optObject(raw, at, path);
  if (m === null) return null;
  checkKeys(m, ['set', 'add', 'remove'], at, path);
  const pairs = (v: unknown, p: string): HeaderPair[] =>
    Object.entries(optObject(v, at, p) ?? {}).map(([name, value]) => {
      if (typeof value !== 'string') fail(at, `${p}.${name}`, `must be a string, got ${show(value)}`);
      return { name: headerName(name, at, `${p}.${name}`), value };
    });
  return { set: pairs(m.set, `${path}.set`), add: pairs(m.add, `${path}.add`), remove: list(m.remove, at, `${path}.remove`).map((n, i) => headerName(n, at, `${path}.remove[${i}]`)) };
}

function istioHeaders(raw: unknown, at: string, path: string): { request: HeaderModifier | null; response: HeaderModifier | null } {
  const h = optObject(raw, at, path);
  if (h === null) return { request: null, response: null };
  checkKeys(h, ['request', 'response'], at, path);
  return { request: istioHeaderModifier(h.request, at, `${path}.request`), response: istioHeaderModifier(h.response, at, `${path}.response`) };
}

function istioDestination(raw: unknown, ns: string, resolve: HostResolver, at: string, path: string): { target: BackendTarget; invalid: string | null } {
  const d = object(raw, at, path);
  checkKeys(d, ['host', 'subset', 'port'], at, path);
  const host = str(d.host, at, `${path}.host`);
  let port: number | null = null;
  if (present(d.port)) {
    const p = object(d.port, at, `${path}.port`);
    checkKeys(p, ['number'], at, `${path}.port`);
    port = int(p.number, at, `${path}.port.number`, 1, 65535);
  }
  const service = resolve(host, ns);
  return {
    target: { service: service ?? host, port, subset: optStr(d.subset, at, `${path}.subset`) },
    invalid: service === null ? `${path}.host "${host}" is not a known Service` : null,
  };
}

/** Istio's retryOn: Envoy conditions and plain status codes ("5xx,gateway-error,503"). */
const RETRY_CONDITIONS: readonly RetryCondition[] = [
  '5xx',
  'gateway-error',
  'connect-failure',
  'reset',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
];

/** Parses `retryOn` ("5xx,gateway-error,503"); throws ConfigError on unknown words. */
export function parseRetryOn(v: unknown, at: string, path: string): { retryOn: RetryCondition[]; codes: number[] } {
  if (!present(v) || v === '') return { retryOn: [...DEFAULT_RETRY_ON], codes: [503] };
  if (typeof v !== 'string') fail(at, path, `must be a comma-separated string, got ${show(v)}`);
  const retryOn: RetryCondition[] = [];
  const codes: number[] = [];
  for (const word of v.split(',').map((w) => w.trim())) {
    if (word === '') continue;
    if (/^\d{3}$/.test(word) && Number(word) >= 100 && Number(word) <= 599) {
      codes.push(Number(word));
      if (!retryOn.includes('retriable-status-codes')) retryOn.push('retriable-status-codes');
    } else if ((RETRY_CONDITIONS as readonly string[]).includes(word)) {
      if (!retryOn.includes(word as RetryCondition)) retryOn.push(word as RetryCondition);
    } else {
      fail(at, path, `: unknown retry condition "${word}" (one of ${RETRY_CONDITIONS.join(', ')}, or a status code)`);
    }
  }
  return { retryOn, codes };
}

function istioRetries(raw: unknown, at: string, path: string): RetryPolicy | null {
  const r = optObject(raw, at, path);
  if (r === null) return null;
  checkKeys(r, ['attempts', 'perTryTimeout', 'retryOn', 'retryRemoteLocalities', 'retryIgnorePreviousHosts', 'backoff'], at, path);
  const attempts = present(r.attempts) ? int(r.attempts, at, `${path}.attempts`, 0, 100) : 2;
  const perTry = optDuration(r.perTryTimeout, at, `${path}.perTryTimeout`);
  const { retryOn, codes } = parseRetryOn(r.retryOn, at, `${path}.retryOn`);
  const backoff = optDuration(r.backoff, at, `${path}.backoff`);
  return { attempts, perTryTimeoutMs: perTry === 0 ? null : perTry, retryOn, retriableStatusCodes: codes, backoffBaseMs: backoff ?? 25 };
}

export const GRPC_STATUS_CODES: Record<string, number> = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

/** Istio's `percentage: {value}` (or the deprecated integer `percent`); absent: 100. */
function istioPercent(obj: Raw, at: string, path: string): number {
  if (present(obj.percentage)) {
    const p = object(obj.percentage, at, `${path}.percentage`);
    checkKeys(p, ['value'], at, `${path}.percentage`);
    return percentValue(p.value ?? 0, at, `${path}.percentage.value`);
  }
  if (present(obj.percent)) return int(obj.percent, at, `${path}.percent`, 0, 100);
  return 100;
}

function istioFault(raw: unknown, at: string, path: string): FaultPolicy | null {
  const f = optObject(raw, at, path);
  if (f === null) return null;
  checkKeys(f, ['delay', 'abort'], at, path);
  let delay: FaultPolicy['delay'] = null;
  let abort: FaultPolicy['abort'] = null;
  if (present(f.delay)) {
    const d = object(f.delay, at, `${path}.delay`);
    checkKeys(d, ['fixedDelay', 'exponentialDelay', 'percentage', 'percent'], at, `${path}.delay`);
    if (present(d.exponentialDelay)) fail(at, `${path}.delay.exponentialDelay`, 'is not supported (use fixedDelay)');
    delay = { fixedDelayMs: parseDuration(d.fixedDelay, at, `${path}.delay.fixedDelay`), percent: istioPercent(d, at, `${path}.delay`) };
  }
  if (present(f.abort)) {
    const a = object(f.abort, at, `${path}.abort`);
    checkKeys(a, ['httpStatus', 'grpcStatus', 'http2Error', 'percentage', 'percent'], at, `${path}.abort`);
    if (present(a.http2Error)) fail(at, `${path}.abort.http2Error`, 'is not supported (use httpStatus or grpcStatus)');
    const http = optInt(a.httpStatus, at, `${path}.abort.httpStatus`, 200, 599);
    let grpc: number | null = null;
    if (present(a.grpcStatus)) {
      const g = a.grpcStatus;
      if (typeof g === 'string' && g in GRPC_STATUS_CODES) grpc = GRPC_STATUS_CODES[g]!;
      else if (typeof g === 'number' && Number.isInteger(g) && g >= 0 && g <= 16) grpc = g;
      else fail(at, `${path}.abort.grpcStatus`, `must be a gRPC status name (e.g. UNAVAILABLE) or code 0 to 16, got ${show(g)}`);
    }
    if ((http === null) === (grpc === null)) fail(at, `${path}.abort`, 'must set exactly one of httpStatus or grpcStatus');
    abort = { httpStatus: http, grpcStatus: grpc, percent: istioPercent(a, at, `${path}.abort`) };
  }
  if (delay === null && abort === null) fail(at, path, 'must set delay or abort');
  return { delay, abort };
}

function istioMirrors(h: Raw, ns: string, resolve: HostResolver, at: string, path: string, warnings: string[]): RequestMirror[] {
  const out: RequestMirror[] = [];
  const add = (dest: unknown, p: string, percent: number): void => {
    const d = istioDestination(dest, ns, resolve, at, p);
    if (d.invalid !== null) {
      warnings.push(`${at}: ${d.invalid}; mirror ignored`);
      return;
    }
    out.push({ backend: d.target, percent });
  };
  if (present(h.mirror)) {
    let percent = 100;
    if (present(h.mirrorPercentage)) {
      const mp = object(h.mirrorPercentage, at, `${path}.mirrorPercentage`);
      percent = percentValue(mp.value ?? 0, at, `${path}.mirrorPercentage.value`);
    } else if (present(h.mirrorPercent)) {
      percent = int(h.mirrorPercent, at, `${path}.mirrorPercent`, 0, 100);
    }
    add(h.mirror, `${path}.mirror`, percent);
  }
  list(h.mirrors, at, `${path}.mirrors`).forEach((item, i) => {
    const m = object(item, at, `${path}.mirrors[${i}]`);
    checkKeys(m, ['destination', 'percentage'], at, `${path}.mirrors[${i}]`);
    add(m.destination, `${path}.mirrors[${i}].destination`, istioPercent(m, at, `${path}.mirrors[${i}]`));
  });
  return out;
}

const VS_HTTP_FIELDS = [
  'name',
  'match',
  'route',
  'redirect',
  'directResponse',
  'delegate',
  'rewrite',
  'timeout',
  'retries',
  'fault',
  'mirror',
  'mirrors',
  'mirrorPercent',
  'mirrorPercentage',
  'mirror_percent',
  'corsPolicy',
  'headers',
];

/** One VirtualService `http[]` item, translated. */
export interface VirtualServiceRule {
  index: number;
  rule: RouteRule;
  /** VirtualService `timeout` (request timeout), also in rule.timeouts */
  timeoutMs: number | null;
  /** whether the item routes somewhere other than the VirtualService's own host (ignored in overlays) */
  routing: boolean;
}

export interface TranslatedVirtualService {
  key: string;
  namespace: string;
  created: number | null;
  /** Service keys of `hosts` that are Services */
  services: string[];
  rules: VirtualServiceRule[];
  warnings: string[];
}

function checkIstioObject(o: KubeObject, kind: string): string {
  const at = where(o);
  if (o.kind !== kind) throw new ConfigError(`${at}: expected kind ${kind}`);
  if (!o.apiVersion.startsWith('networking.istio.io/')) throw new ConfigError(`${at}: apiVersion ${o.apiVersion} is not networking.istio.io (use networking.istio.io/v1)`);
  return at;
}

/** Translates a VirtualService's `http` routes for the Services among its hosts. */
export function translateVirtualService(o: KubeObject, resolve: HostResolver): TranslatedVirtualService {
  const at = checkIstioObject(o, 'VirtualService');
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['hosts', 'gateways', 'http', 'tls', 'tcp', 'exportTo'], at, 'spec');
  const ns = o.metadata.namespace ?? 'default';
  const warnings: string[] = [];
  const key = `${ns}/${o.metadata.name}`;
  const hosts = list(spec.hosts, at, 'spec.hosts').map((h, i) => str(h, at, `spec.hosts[${i}]`));
  if (hosts.length === 0) fail(at, 'spec.hosts', 'must list at least one host');
  const empty: TranslatedVirtualService = { key, namespace: ns, created: creationTime(o), services: [], rules: [], warnings };
  if (present(spec.gateways) && !list(spec.gateways, at, 'spec.gateways').includes('mesh')) {
    warnings.push(`${at}: spec.gateways does not include "mesh": not applied by waypoints`);
    return empty;
  }
  const services: string[] = [];
  for (const h of hosts) {
    const s = h.includes('*') ? null : resolve(h, ns);
    if (s === null) warnings.push(`${at}: host "${h}" is not a Service known to the mesh; ignored`);
    else if (!services.includes(s)) services.push(s);
  }
  if (present(spec.tcp) || present(spec.tls)) warnings.push(`${at}: spec.tcp and spec.tls routes are not applied by waypoints (HTTP only)`);
  const rules = list(spec.http, at, 'spec.http').map((item, i): VirtualServiceRule | null => {
    const p = `spec.http[${i}]`;
    const h = object(item, at, p);
    checkKeys(h, VS_HTTP_FIELDS, at, p);
    if (present(h.delegate)) fail(at, `${p}.delegate`, 'is not supported by the waypoint');
    if (present(h.corsPolicy)) warnings.push(`${at}: ${p}.corsPolicy is not supported and is ignored`);
    const rawMatches = list(h.match, at, `${p}.match`);
    const matches = rawMatches.map((m, k) => vsMatch(m, at, `${p}.match[${k}]`)).filter((m): m is RouteMatch => m !== null);
    if (rawMatches.length > 0 && matches.length === 0) return null; // only for other gateways
    const headers = istioHeaders(h.headers, at, `${p}.headers`);
    let routing = false;
    const backends: WeightedBackend[] = list(h.route, at, `${p}.route`).map((r, k) => {
      const rp = `${p}.route[${k}]`;
      const rr = object(r, at, rp);
      checkKeys(rr, ['destination', 'weight', 'headers'], at, rp);
      const d = istioDestination(rr.destination, ns, resolve, at, `${rp}.destination`);
      if (d.invalid !== null) warnings.push(`${at}: ${d.invalid}; its share of traffic gets a 500`);
      if (!services.includes(d.target.service) || d.target.subset !== null) routing = true;
      const bh = istioHeaders(rr.headers, at, `${rp}.headers`);
      if (bh.request || bh.response) routing = true;
      return { ...d.target, weight: present(rr.weight) ? int(rr.weight, at, `${rp}.weight`, 0, 100) : -1, requestHeaders: bh.request, responseHeaders: bh.response, invalid: d.invalid };
    });
    // Istio: a single destination may omit its weight (100); with several, an omitted weight is 0.
    for (const b of backends) if (b.weight < 0) b.weight = backends.length === 1 ? 100 : 0;
    let redirect: RequestRedirect | null = null;
    if (present(h.redirect)) {
      const r = object(h.redirect, at, `${p}.redirect`);
      checkKeys(r, ['uri', 'authority', 'port', 'derivePort', 'scheme', 'redirectCode'], at, `${p}.redirect`);
      const code = present(r.redirectCode) ? r.redirectCode : 301;
      if (![301, 302, 303, 307, 308].includes(code as number)) fail(at, `${p}.redirect.redirectCode`, `must be 301, 302, 303, 307 or 308, got ${show(code)}`);
      const uri = optStr(r.uri, at, `${p}.redirect.uri`);
      redirect = {
        scheme: optStr(r.scheme, at, `${p}.redirect.scheme`),
        hostname: optStr(r.authority, at, `${p}.redirect.authority`),
        path: uri === null ? null : { type: 'ReplaceFullPath', value: uri },
        port: optInt(r.port, at, `${p}.redirect.port`, 1, 65535),
        statusCode: code as number,
      };
      routing = true;
    }
    let rewrite: UrlRewrite | null = null;
    if (present(h.rewrite)) {
      const r = object(h.rewrite, at, `${p}.rewrite`);
      checkKeys(r, ['uri', 'authority', 'uriRegexRewrite'], at, `${p}.rewrite`);
      if (present(r.uriRegexRewrite)) fail(at, `${p}.rewrite.uriRegexRewrite`, 'is not supported (use uri)');
      const uri = optStr(r.uri, at, `${p}.rewrite.uri`);
      // Istio replaces the matched prefix when the match was a prefix, else the whole path.
      rewrite = { hostname: optStr(r.authority, at, `${p}.rewrite.authority`), path: uri === null ? null : { type: 'ReplacePrefixMatch', value: uri } };
      routing = true;
    }
    let directResponse: RouteRule['directResponse'] = null;
    if (present(h.directResponse)) {
      const d = object(h.directResponse, at, `${p}.directResponse`);
      checkKeys(d, ['status', 'body'], at, `${p}.directResponse`);
      const status = int(d.status, at, `${p}.directResponse.status`, 200, 599);
      let body = '';
      if (present(d.body)) {
        const b = object(d.body, at, `${p}.directResponse.body`);
        checkKeys(b, ['string', 'bytes'], at, `${p}.directResponse.body`);
        body = present(b.string) ? String(b.string) : present(b.bytes) ? Buffer.from(String(b.bytes), 'base64').toString('utf8') : '';
      }
      directResponse = { status, body };
      routing = true;
    }
    const routes = [backends.length > 0, redirect !== null, directResponse !== null].filter(Boolean).length;
    if (routes !== 1) fail(at, p, 'must set exactly one of route, redirect or directResponse');
    if (headers.request || headers.response) routing = true;
    const timeout = optDuration(h.timeout, at, `${p}.timeout`);
    const timeoutMs = timeout === 0 ? null : timeout;
    const rule: RouteRule = {
      name: typeof h.name === 'string' && h.name !== '' ? h.name : `http[${i}]`,
      matches,
      requestHeaders: headers.request,
      responseHeaders: headers.response,
      redirect,
      rewrite,
      directResponse,
      mirrors: istioMirrors(h, ns, resolve, at, p, warnings),
      backends,
      timeouts: { requestMs: timeoutMs, backendRequestMs: null },
      retry: istioRetries(h.retries, at, `${p}.retries`),
      fault: istioFault(h.fault, at, `${p}.fault`),
    };
    return { index: i, rule, timeoutMs, routing };
  });
  return { ...empty, services, rules: rules.filter((r): r is VirtualServiceRule => r !== null) };
}

// ---------------------------------------------------------------------------------------------
// Istio: DestinationRule

const LB_SIMPLE = ['UNSPECIFIED', 'ROUND_ROBIN', 'LEAST_REQUEST', 'LEAST_CONN', 'RANDOM', 'PASSTHROUGH'];

function loadBalancer(raw: unknown, at: string, path: string, warnings: string[]): LoadBalancerPolicy | null {
  const lb = optObject(raw, at, path);
  if (lb === null) return null;
  checkKeys(lb, ['simple', 'consistentHash', 'localityLbSetting', 'warmupDurationSecs', 'warmup'], at, path);
  if (present(lb.localityLbSetting)) warnings.push(`${at}: ${path}.localityLbSetting is not supported and is ignored`);
  if (present(lb.warmupDurationSecs) || present(lb.warmup)) warnings.push(`${at}: ${path}: warmup is not supported and is ignored`);
  if (present(lb.simple) && present(lb.consistentHash)) fail(at, path, 'must set only one of simple or consistentHash');
  if (present(lb.consistentHash)) {
    const p = `${path}.consistentHash`;
    const c = object(lb.consistentHash, at, p);
    checkKeys(c, ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName', 'ringHash', 'maglev', 'minimumRingSize'], at, p);
    const keys = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'].filter((k) => present(c[k]) && c[k] !== false);
    if (keys.length !== 1) fail(at, p, 'must set exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName');
    if (present(c.httpCookie)) fail(at, `${p}.httpCookie`, 'is not supported (use httpHeaderName, httpQueryParameterName or useSourceIp)');
    if (present(c.httpHeaderName)) return { type: 'CONSISTENT_HASH', hashOn: { header: headerName(c.httpHeaderName, at, `${p}.httpHeaderName`) } };
    if (present(c.httpQueryParameterName)) return { type: 'CONSISTENT_HASH', hashOn: { queryParameter: str(c.httpQueryParameterName, at, `${p}.httpQueryParameterName`) } };
    if (c.useSourceIp !== true) fail(at, `${p}.useSourceIp`, `must be true or false, got ${show(c.useSourceIp)}`);
    return { type: 'CONSISTENT_HASH', hashOn: { sourceIp: true } };
  }
  const simple = lb.simple ?? 'UNSPECIFIED';
  if (typeof simple !== 'string' || !LB_SIMPLE.includes(simple)) fail(at, `${path}.simple`, `must be one of ${LB_SIMPLE.join(', ')}, got ${show(simple)}`);
  if (simple === 'PASSTHROUGH') {
    warnings.push(`${at}: ${path}.simple PASSTHROUGH is not supported by the waypoint; using LEAST_REQUEST`);
    return { type: 'LEAST_REQUEST' };
  }
  if (simple === 'UNSPECIFIED') return null;
  return { type: simple === 'LEAST_CONN' ? 'LEAST_REQUEST' : (simple as 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM') };
}

const MAX_INT32 = 2 ** 31 - 1;

function connectionPool(raw: unknown, at: string, path: string, warnings: string[]): ConnectionPoolPolicy | null {
  const cp = optObject(raw, at, path);
  if (cp === null) return null;
  checkKeys(cp, ['tcp', 'http'], at, path);
  const out: ConnectionPoolPolicy = { maxConnections: null, http1MaxPendingRequests: null, http2MaxRequests: null, maxRequestsPerConnection: null, idleTimeoutMs: null, connectTimeoutMs: null };
  const tcp = optObject(cp.tcp, at, `${path}.tcp`);
  if (tcp !== null) {
    checkKeys(tcp, ['maxConnections', 'connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout'], at, `${path}.tcp`);
    out.maxConnections = optInt(tcp.maxConnections, at, `${path}.tcp.maxConnections`, 1, MAX_INT32);
    out.connectTimeoutMs = optDuration(tcp.connectTimeout, at, `${path}.tcp.connectTimeout`);
    if (present(tcp.tcpKeepalive) || present(tcp.maxConnectionDuration)) warnings.push(`${at}: ${path}.tcp: tcpKeepalive and maxConnectionDuration are not supported and are ignored`);
    if (present(tcp.idleTimeout)) out.idleTimeoutMs = parseDuration(tcp.idleTimeout, at, `${path}.tcp.idleTimeout`);
  }
  const http = optObject(cp.http, at, `${path}.http`);
  if (http !== null) {
    checkKeys(http, ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams'], at, `${path}.http`);
    out.http1MaxPendingRequests = optInt(http.http1MaxPendingRequests, at, `${path}.http.http1MaxPendingRequests`, 1, MAX_INT32);
    out.http2MaxRequests = optInt(http.http2MaxRequests, at, `${path}.http.http2MaxRequests`, 1, MAX_INT32);
    const perConn = optInt(http.maxRequestsPerConnection, at, `${path}.http.maxRequestsPerConnection`, 0, MAX_INT32);
    out.maxRequestsPerConnection = perConn === 0 ? null : perConn; // 0 means unlimited in Istio
    if (present(http.idleTimeout)) out.idleTimeoutMs = parseDuration(http.idleTimeout, at, `${path}.http.idleTimeout`);
    for (const k of ['maxRetries', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams']) {
      if (present(http[k])) warnings.push(`${at}: ${path}.http.${k} is not supported and is ignored`);
    }
  }
  return out;
}

function outlierDetection(raw: unknown, at: string, path: string, warnings: string[]): OutlierDetectionPolicy | null {
  const od = optObject(raw, at, path);
  if (od === null) return null;
  checkKeys(
    od,
    ['consecutiveErrors', 'consecutive5xxErrors', 'consecutiveGatewayErrors', 'consecutiveLocalOriginFailures', 'splitExternalLocalOriginErrors', 'interval', 'baseEjectionTime', 'maxEjectionPercent', 'minHealthPercent'],
    at,
    path,
  );
  for (const k of ['consecutiveLocalOriginFailures', 'splitExternalLocalOriginErrors', 'minHealthPercent']) {
    if (present(od[k])) warnings.push(`${at}: ${path}.${k} is not supported and is ignored`);
  }
  if (present(od.consecutiveErrors)) fail(at, `${path}.consecutiveErrors`, 'is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors');
  const c5 = present(od.consecutive5xxErrors) ? int(od.consecutive5xxErrors, at, `${path}.consecutive5xxErrors`, 0, MAX_INT32) : 5;
  const cg = optInt(od.consecutiveGatewayErrors, at, `${path}.consecutiveGatewayErrors`, 0, MAX_INT32);
  const interval = optDuration(od.interval, at, `${path}.interval`) ?? 10_000;
  if (interval <= 0) fail(at, `${path}.interval`, 'must be longer than 0');
  const base = optDuration(od.baseEjectionTime, at, `${path}.baseEjectionTime`) ?? 30_000;
  if (base <= 0) fail(at, `${path}.baseEjectionTime`, 'must be longer than 0');
  return {
    consecutive5xxErrors: c5 === 0 ? null : c5,
    consecutiveGatewayErrors: cg === 0 ? null : cg,
    intervalMs: interval,
    baseEjectionTimeMs: base,
    maxEjectionPercent: present(od.maxEjectionPercent) ? int(od.maxEjectionPercent, at, `${path}.maxEjectionPercent`, 0, 100) : 10,
  };
}

function trafficPolicy(raw: unknown, at: string, path: string, warnings: string[], portLevel: boolean): TrafficPolicy & { portLevelSettings: unknown[] } {
  const tp = optObject(raw, at, path) ?? {};
  const keys = portLevel ? ['port', 'loadBalancer', 'connectionPool', 'outlierDetection', 'tls'] : ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol'];
  checkKeys(tp, keys, at, path);
  if (present(tp.tls)) {
    const tls = object(tp.tls, at, `${path}.tls`);
    if (tls.mode !== 'ISTIO_MUTUAL') warnings.push(`${at}: ${path}.tls is ignored: the waypoint always uses mesh mTLS (HBONE) to endpoints`);
  }
  if (present(tp.tunnel) || present(tp.proxyProtocol)) warnings.push(`${at}: ${path}: tunnel and proxyProtocol are not supported and are ignored`);
  return {
    loadBalancer: loadBalancer(tp.loadBalancer, at, `${path}.loadBalancer`, warnings),
    connectionPool: connectionPool(tp.connectionPool, at, `${path}.connectionPool`, warnings),
    outlierDetection: outlierDetection(tp.outlierDetection, at, `${path}.outlierDetection`, warnings),
    portLevelSettings: portLevel ? [] : list(tp.portLevelSettings, at, `${path}.portLevelSettings`),
  };
}

export interface TranslatedDestinationRule {
  policy: DestinationPolicy | null;
  created: number | null;
  warnings: string[];
}

/** Translates a DestinationRule for a Service host; policy null when the host is not a Service. */
export function translateDestinationRule(o: KubeObject, resolve: HostResolver): TranslatedDestinationRule {
  const at = checkIstioObject(o, 'DestinationRule');
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector'], at, 'spec');
  const ns = o.metadata.namespace ?? 'default';
  const warnings: string[] = [];
  const host = str(spec.host, at, 'spec.host');
  if (present(spec.workloadSelector)) warnings.push(`${at}: spec.workloadSelector is ignored by waypoints`);
  const { portLevelSettings, ...policy } = trafficPolicy(spec.trafficPolicy, at, 'spec.trafficPolicy', warnings, false);
  const portLevel = portLevelSettings.map((item, i) => {
    const p = `spec.trafficPolicy.portLevelSettings[${i}]`;
    const raw = object(item, at, p);
    const port = object(raw.port, at, `${p}.port`);
    checkKeys(port, ['number'], at, `${p}.port`);
    const number = int(port.number, at, `${p}.port.number`, 1, 65535);
    const { portLevelSettings: _, ...pl } = trafficPolicy(raw, at, p, warnings, true);
    return { port: number, policy: pl };
  });
  const names = new Set<string>();
  const subsets: Subset[] = list(spec.subsets, at, 'spec.subsets').map((item, i) => {
    const p = `spec.subsets[${i}]`;
    const s = object(item, at, p);
    checkKeys(s, ['name', 'labels', 'trafficPolicy'], at, p);
    const name = str(s.name, at, `${p}.name`);
    if (names.has(name)) fail(at, `${p}.name`, `: subset "${name}" is defined twice`);
    names.add(name);
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(optObject(s.labels, at, `${p}.labels`) ?? {})) {
      if (typeof v !== 'string') fail(at, `${p}.labels.${k}`, `must be a string, got ${show(v)}`);
      labels[k] = v;
    }
    let tp: TrafficPolicy | null = null;
    if (present(s.trafficPolicy)) {
      const { portLevelSettings: pls, ...rest } = trafficPolicy(s.trafficPolicy, at, `${p}.trafficPolicy`, warnings, false);
      if (pls.length > 0) warnings.push(`${at}: ${p}.trafficPolicy.portLevelSettings is ignored in subsets`);
      tp = rest;
    }
    return { name, labels, trafficPolicy: tp };
  });
  const service = host.includes('*') ? null : resolve(host, ns);
  if (service === null) {
    warnings.push(`${at}: host "${host}" is not a Service known to the mesh; ignored`);
    return { policy: null, created: creationTime(o), warnings };
  }
  return { policy: { service, source: `${ns}/${o.metadata.name}`, trafficPolicy: policy, portLevel, subsets }, created: creationTime(o), warnings };
}

// ---------------------------------------------------------------------------------------------
// The whole set

function objectName(o: KubeObject): string {
  return `${o.kind} ${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

function olderFirst<T extends { created: number | null; key: string }>(a: T, b: T): number {
  if (a.created !== b.created) {
    if (a.created === null) return 1;
    if (b.created === null) return -1;
    return a.created - b.created;
  }
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

function overlayOf(vs: TranslatedVirtualService, r: VirtualServiceRule): ResilienceOverlay {
  return { source: `${vs.key} http[${r.index}]`, matches: r.rule.matches, timeoutMs: r.timeoutMs, retry: r.rule.retry, fault: r.rule.fault, mirrors: r.rule.mirrors };
}

/**
 * Translates every routing object of a config set against the known Services. Objects that fail
 * are reported in `problems` and left out; the rest still builds.
 */
export function buildRoutingConfig(objects: readonly KubeObject[], services: readonly ServiceRef[]): RoutingBuild {
  const problems: RoutingProblem[] = [];
  const warnings: string[] = [];
  const byKey = new Map(services.map((s) => [s.key, s]));
  const resolve = hostResolver(services);
  const gatewayRoutes: TranslatedRoute[] = [];
  const virtualServices: TranslatedVirtualService[] = [];
  const grants: ReferenceGrant[] = [];
  const destinationRules: (DestinationPolicy & { created: number | null })[] = [];
  for (const o of objects) {
    try {
      if (o.kind === 'HTTPRoute' && o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) gatewayRoutes.push(translateHTTPRoute(o));
      else if (o.kind === 'GRPCRoute' && o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) gatewayRoutes.push(translateGRPCRoute(o));
      else if (o.kind === 'ReferenceGrant' && o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) grants.push(translateReferenceGrant(o));
      else if (o.kind === 'VirtualService' && o.apiVersion.startsWith('networking.istio.io/')) {
        const vs = translateVirtualService(o, resolve);
        warnings.push(...vs.warnings);
        virtualServices.push(vs);
      } else if (o.kind === 'DestinationRule' && o.apiVersion.startsWith('networking.istio.io/')) {
        const dr = translateDestinationRule(o, resolve);
        warnings.push(...dr.warnings);
        if (dr.policy) destinationRules.push({ ...dr.policy, created: dr.created });
      }
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push({ object: objectName(o), error: err });
    }
  }

  const granted = (fromKind: string, fromNs: string, target: BackendTarget): boolean => {
    const [ns, name] = target.service.split('/') as [string, string];
    return grants.some((g) => g.namespace === ns && g.from.some((f) => f.kind === fromKind && f.namespace === fromNs) && g.to.some((t) => t === null || t === name));
  };

  const tables: Record<string, RouteTable> = {};
  const table = (service: string): RouteTable => (tables[service] ??= { service, routes: [], entries: [], overlays: [] });

  for (const tr of gatewayRoutes) {
    warnings.push(...tr.warnings);
    const at = `${tr.kind} ${tr.key}`;
    for (const ref of tr.references) {
      const svc = byKey.get(ref.target.service);
      let invalid: string | null = null;
      if (ref.backend?.invalid) continue;
      if (ref.crossNamespace && !granted(tr.kind, tr.namespace, ref.target)) invalid = `${ref.path}: Service ${ref.target.service} is in another namespace and no ReferenceGrant allows it`;
      else if (!svc) invalid = `${ref.path}: Service ${ref.target.service} does not exist`;
      else if (ref.target.port !== null && !svc.ports.some((p) => p.port === ref.target.port)) invalid = `${ref.path}: Service ${ref.target.service} has no port ${ref.target.port}`;
      if (invalid === null) continue;
      if (ref.backend) {
        ref.backend.invalid = invalid;
        warnings.push(`${at}: ${invalid}; its share of traffic gets a 500`);
      } else {
        warnings.push(`${at}: ${invalid}; mirror ignored`);
      }
    }
    // Mirrors to unusable Services are dropped rather than failing requests.
    const badMirror = (m: RequestMirror): boolean => {
      const svc = byKey.get(m.backend.service);
      return !svc || (m.backend.service.split('/')[0] !== tr.namespace && !granted(tr.kind, tr.namespace, m.backend));
    };
    const rules = tr.rules.map((r) => (r.mirrors.some(badMirror) ? { ...r, mirrors: r.mirrors.filter((m) => !badMirror(m)) } : r));
    for (const parent of tr.parents) {
      const svc = byKey.get(parent.service);
      if (!svc) {
        warnings.push(`${at}: parent Service ${parent.service} does not exist; route not attached`);
        continue;
      }
      if (parent.port !== null && !svc.ports.some((p) => p.port === parent.port)) {
        warnings.push(`${at}: parent Service ${parent.service} has no port ${parent.port}; route not attached`);
        continue;
      }
      const consumerNamespace = svc.namespace === tr.namespace ? null : tr.namespace;
      const route: Route = { kind: tr.kind as RouteKind, key: tr.key, created: tr.created, rules, port: parent.port, consumerNamespace };
      table(parent.service).routes.push(route);
    }
  }

  virtualServices.sort(olderFirst);
  for (const vs of virtualServices) {
    for (const service of vs.services) {
      const t = table(service);
      const hasGatewayRoutes = t.routes.some((r) => r.kind !== 'VirtualService');
      if (hasGatewayRoutes) {
        for (const r of vs.rules) {
          if (r.routing) warnings.push(`VirtualService ${vs.key}: http[${r.index}] routing is ignored for ${service}, which has Gateway API routes; only its timeout, retries, fault and mirror apply`);
          if (r.timeoutMs !== null || r.rule.retry || r.rule.fault || r.rule.mirrors.length > 0) t.overlays.push(overlayOf(vs, r));
        }
      } else if (t.routes.length > 0 && t.routes.every((r) => r.kind === 'VirtualService')) {
        // Istio merges nothing across VirtualServices for one host: the oldest wins.
        warnings.push(`VirtualService ${vs.key}: ${service} already has VirtualService ${t.routes[0]!.key}; this one is ignored for it`);
      } else {
        t.routes.push({ kind: 'VirtualService', key: vs.key, created: vs.created, rules: vs.rules.map((r) => r.rule), port: null, consumerNamespace: null });
      }
    }
  }
  for (const t of Object.values(tables)) t.entries = orderEntries(t.routes);

  const destinations: Record<string, DestinationPolicy> = {};
  destinationRules.sort((a, b) => olderFirst({ created: a.created, key: a.source }, { created: b.created, key: b.source }));
  for (const { created: _, ...dr } of destinationRules) {
    if (destinations[dr.service]) {
      warnings.push(`DestinationRule ${dr.source}: ${dr.service} already has DestinationRule ${destinations[dr.service]!.source}; this one is ignored`);
      continue;
    }
    destinations[dr.service] = dr;
  }
  return { config: { tables, destinations }, problems, warnings };
}
