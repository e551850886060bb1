/**
 * L7 authorization at the waypoint: Istio AuthorizationPolicy with `targetRefs` to a Service, a
 * Gateway (the waypoint) or, in the root namespace, a GatewayClass. Adds what ztunnel cannot see:
 * methods, paths (with `prefix*`, `*suffix` and `{*}`/`{**}` templates), hosts and request
 * headers. Same precedence as L4 (evaluate.ts): any DENY match denies; no ALLOW policy allows;
 * else an ALLOW rule must match. AUDIT and dry-run policies are only reported.
 *
 * Plain data (MessagePack-able): path templates are kept as regular expression sources and
 * compiled by L7PolicyIndex once per config.
 */

import { ConfigError, type KubeObject } from '../config/objects.js';
import { DEFAULT_ROOT_NAMESPACE, ipWords, type Decision } from './evaluate.js';
import { translateAuthorizationPolicy } from './translate.js';
import type { Action, IpBlock, ServiceAccountMatch, StringMatch } from './types.js';

/** Body of the 403 a denied request gets (Envoy's RBAC filter text, which clients and tests know). */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

/** A path matcher: Istio's string forms, or a `{*}` / `{**}` template as a regular expression source. */
export type PathMatcher = StringMatch | { kind: 'template'; value: string };

export interface L7Source {
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  ipBlocks: IpBlock[];
  notIpBlocks: IpBlock[];
  /** the original client (first X-Forwarded-For hop the waypoint trusts; else the source IP) */
  remoteIpBlocks: IpBlock[];
  notRemoteIpBlocks: IpBlock[];
}

export interface L7Operation {
  /** compared case-insensitively, with and without the port */
  hosts: StringMatch[];
  notHosts: StringMatch[];
  /** the Service port the request was sent to */
  ports: number[];
  notPorts: number[];
  methods: StringMatch[];
  notMethods: StringMatch[];
  /** compared with the normalized path, without the query */
  paths: PathMatcher[];
  notPaths: PathMatcher[];
}

export type L7Condition =
  | { key: 'source.ip' | 'destination.ip' | 'remote.ip'; values: IpBlock[]; notValues: IpBlock[] }
  | { key: 'source.principal' | 'source.namespace'; values: StringMatch[]; notValues: StringMatch[] }
  | { key: 'source.serviceAccount'; values: ServiceAccountMatch[]; notValues: ServiceAccountMatch[] }
  | { key: 'destination.port'; values: number[]; notValues: number[] }
  | { key: 'request.headers'; header: string; values: StringMatch[]; notValues: StringMatch[] };

export interface L7Rule {
  index: number;
  from: L7Source[];
  to: L7Operation[];
  when: L7Condition[];
  summary: string;
}

/** What a policy is attached to. */
export interface PolicyTarget {
  kind: 'Service' | 'Gateway' | 'GatewayClass' | 'ServiceEntry';
  namespace: string;
  name: string;
}

export interface L7AuthorizationPolicy {
  /** namespace/name */
  key: string;
  name: string;
  namespace: string;
  action: Action;
  targets: PolicyTarget[];
  rules: L7Rule[];
  dryRun: boolean;
  warnings: string[];
}

export interface TranslatedL7Policy {
  /** null: not a waypoint policy (no targetRefs: ztunnel enforces it), or CUSTOM */
  policy: L7AuthorizationPolicy | null;
  warnings: string[];
}

type Raw = Record<string, unknown>;
const SPIFFE = 'spiffe://';

function where(o: KubeObject): string {
  return `${o.source ?? '<input>'}: ${o.kind} "${o.metadata.namespace ?? 'default'}/${o.metadata.name}"`;
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : [];
}

/** Istio's string forms; the L4 translator has already refused misplaced `*`. */
function compileString(s: string): StringMatch {
  if (s === '*') return { kind: 'any', value: '' };
  if (s.startsWith('*')) return { kind: 'suffix', value: s.slice(1) };
  if (s.endsWith('*')) return { kind: 'prefix', value: s.slice(0, -1) };
  return { kind: 'exact', value: s };
}

/** Istio's string forms for fields only waypoints read (ztunnel's translator does not check them). */
function checkedString(s: string, at: string, path: string): StringMatch {
  const star = s.indexOf('*');
  if (star >= 0 && s !== '*' && !(star === 0 && s.indexOf('*', 1) < 0) && star !== s.length - 1) {
    throw new ConfigError(`${at}: ${path}: "${s}" has "*" in an unsupported place (use "*" alone, "prefix*" or "*suffix")`);
  }
  return compileString(s);
}

function principal(s: string): string {
  return s.startsWith(SPIFFE) ? s.slice(SPIFFE.length) : s;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * A path as Istio reads it: `*`, `prefix*`, `*suffix`, exact, or a template where `{*}` is one
 * segment and `{**}` (last only) any remainder. Throws ConfigError for other uses of braces.
 */
export function compilePath(s: string, at: string, path: string): PathMatcher {
  if (!s.includes('{') && !s.includes('}')) {
    const star = s.indexOf('*');
    if (star > 0 && star < s.length - 1) throw new ConfigError(`${at}: ${path}: "${s}" has "*" in an unsupported place (use "*" alone, "prefix*", "*suffix" or {*} / {**} segments)`);
    return compileString(s);
  }
  if (!s.startsWith('/')) throw new ConfigError(`${at}: ${path}: path template "${s}" must start with "/"`);
  const parts = s.split('/');
  let re = '';
  parts.forEach((seg, i) => {
    if (i === 0) return;
    re += '/';
    if (seg === '{*}') re += '[^/]+';
    else if (seg === '{**}') {
      if (i !== parts.length - 1) throw new ConfigError(`${at}: ${path}: in "${s}", {**} must be the last segment`);
      re += '.*';
    } else if (seg.includes('{') || seg.includes('}') || seg.includes('*')) {
      throw new ConfigError(`${at}: ${path}: in "${s}", a segment must be literal, {*} or {**}, got "${seg}"`);
    } else re += escapeRegex(seg);
  });
  return { kind: 'template', value: re };
}

function ipBlock(text: string): IpBlock {
  // Already validated by the L4 translator; compiled the same way.
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  let words = ipWords(addr)!;
  const max = addr.includes(':') ? 128 : 32;
  let bits = slash < 0 ? max : Number(text.slice(slash + 1));
  if (words.length === 1 && addr.includes(':')) {
    if (bits < 96) words = [0, 0, 0xffff, words[0]!];
    else bits -= 96;
  }
  const mask = (b: number): number => (b <= 0 ? 0 : b >= 32 ? 0xffffffff : (0xffffffff << (32 - b)) >>> 0);
  const masks = words.map((_, k) => mask(bits - 32 * k));
  return { text, family: words.length === 1 ? 4 : 6, words: words.map((w, k) => (w & masks[k]!) >>> 0), masks };
}

function serviceAccount(s: string, ns: string): ServiceAccountMatch {
  const parts = s.split('/');
  return parts.length === 2 ? { namespace: parts[0]!, serviceAccount: parts[1]! } : { namespace: ns, serviceAccount: s };
}

function portList(v: unknown): number[] {
  return Array.isArray(v) ? v.map((p) => Number(p)) : [];
}

function phrase(label: string, values: string[], negative: boolean): string {
  if (!negative) return `${label} ${values.join(' or ')}`;
  return values.length === 1 ? `${label} not ${values[0]}` : `${label} not (${values.join(', ')})`;
}

interface RuleCx {
  at: string;
  namespace: string;
  /** fields the waypoint cannot check (JWT, SNI) */
  unsupported: string[];
}

function translateSource(raw: Raw, path: string, cx: RuleCx): { source: L7Source; words: string[] } {
  const words: string[] = [];
  const list = (k: string, label: string, negative: boolean, map: (s: string) => string = (s) => s): StringMatch[] => {
    const vals = strings(raw[k]).map(map);
    if (vals.length > 0) words.push(phrase(label, vals, negative));
    return vals.map(compileString);
  };
  const ips = (k: string, label: string, negative: boolean): IpBlock[] => {
    const vals = strings(raw[k]);
    if (vals.length > 0) words.push(phrase(label, vals, negative));
    return vals.map(ipBlock);
  };
  const accounts = (k: string, negative: boolean): ServiceAccountMatch[] => {
    const vals = strings(raw[k]).map((s) => serviceAccount(s, cx.namespace));
    if (vals.length > 0) words.push(phrase('source service account', vals.map((m) => `${m.namespace}/${m.serviceAccount}`), negative));
    return vals;
  };
  for (const k of ['requestPrincipals', 'notRequestPrincipals']) if (strings(raw[k]).length > 0) cx.unsupported.push(`${path}.${k}`);
  return {
    source: {
      principals: list('principals', 'source principal', false, principal),
      notPrincipals: list('notPrincipals', 'source principal', true, principal),
      namespaces: list('namespaces', 'source namespace', false),
      notNamespaces: list('notNamespaces', 'source namespace', true),
      serviceAccounts: accounts('serviceAccounts', false),
      notServiceAccounts: accounts('notServiceAccounts', true),
      ipBlocks: ips('ipBlocks', 'source ip', false),
      notIpBlocks: ips('notIpBlocks', 'source ip', true),
      remoteIpBlocks: ips('remoteIpBlocks', 'remote ip', false),
      notRemoteIpBlocks: ips('notRemoteIpBlocks', 'remote ip', true),
    },
    words,
  };
}

function translateOperation(raw: Raw, path: string, cx: RuleCx): { operation: L7Operation; words: string[] } {
  const words: string[] = [];
  const list = (k: string, label: string, negative: boolean, lower = false): StringMatch[] => {
    const vals = strings(raw[k]).map((s) => (lower ? s.toLowerCase() : s));
    if (vals.length > 0) words.push(phrase(label, vals, negative));
    return vals.map((s, i) => checkedString(s, cx.at, `${path}.${k}[${i}]`));
  };
  const paths = (k: string, negative: boolean): PathMatcher[] => {
    const vals = strings(raw[k]);
    if (vals.length > 0) words.push(phrase('path', vals, negative));
    return vals.map((s, i) => compilePath(s, cx.at, `${path}.${k}[${i}]`));
  };
  const ports = (k: string, negative: boolean): number[] => {
    const vals = portList(raw[k]);
    if (vals.length > 0) words.push(phrase('port', vals.map(String), negative));
    return vals;
  };
  return {
    operation: {
      hosts: list('hosts', 'host', false, true),
      notHosts: list('notHosts', 'host', true, true),
      ports: ports('ports', false),
      notPorts: ports('notPorts', true),
      methods: list('methods', 'method', false),
      notMethods: list('notMethods', 'method', true),
      paths: paths('paths', false),
      notPaths: paths('notPaths', true),
    },
    words,
  };
}

function translateCondition(raw: Raw, path: string, cx: RuleCx): { condition: L7Condition | null; words: string[] } {
  const key = String(raw.key);
  const values = key === 'destination.port' ? portList(raw.values).map(String) : strings(raw.values);
  const notValues = key === 'destination.port' ? portList(raw.notValues).map(String) : strings(raw.notValues);
  const words: string[] = [];
  if (values.length > 0) words.push(phrase(key, values, false));
  if (notValues.length > 0) words.push(phrase(key, notValues, true));
  switch (key) {
    case 'source.ip':
    case 'destination.ip':
    case 'remote.ip':
      return { condition: { key, values: values.map(ipBlock), notValues: notValues.map(ipBlock) }, words };
    case 'source.principal':
      return { condition: { key, values: values.map((v) => compileString(principal(v))), notValues: notValues.map((v) => compileString(principal(v))) }, words };
    case 'source.namespace':
      return { condition: { key, values: values.map(compileString), notValues: notValues.map(compileString) }, words };
    case 'source.serviceAccount':
      return { condition: { key, values: values.map((v) => serviceAccount(v, cx.namespace)), notValues: notValues.map((v) => serviceAccount(v, cx.namespace)) }, words };
    case 'destination.port':
      return { condition: { key, values: values.map(Number), notValues: notValues.map(Number) }, words };
  }
  for (const prefix of ['request.headers[', 'request.experimental.inline.headers[']) {
    if (key.startsWith(prefix) && key.endsWith(']')) {
      const header = key.slice(prefix.length, -1).toLowerCase();
      const compile = (field: string) => (v: string, i: number) => checkedString(v, cx.at, `${path}.${field}[${i}]`);
      return { condition: { key: 'request.headers', header, values: values.map(compile('values')), notValues: notValues.map(compile('notValues')) }, words };
    }
  }
  // request.auth.* (JWT), connection.sni, experimental filters: not available at this waypoint
  cx.unsupported.push(`${path} (${key})`);
  return { condition: null, words: [] };
}

function alternatives(parts: string[][]): string {
  const texts = parts.map((p) => p.join(' and '));
  if (texts.length === 1) return texts[0]!;
  return texts.map((t, i) => (parts[i]!.length > 1 ? `(${t})` : t)).join(' or ');
}

function translateRule(raw: unknown, index: number, action: Action, cx: RuleCx, warnings: string[]): L7Rule | null {
  const r = isObject(raw) ? raw : {};
  const path = `spec.rules[${index}]`;
  cx.unsupported = [];
  const from: L7Source[] = [];
  const fromWords: string[][] = [];
  (Array.isArray(r.from) ? r.from : []).forEach((item: unknown, i: number) => {
    const { source, words } = translateSource((item as Raw).source as Raw, `${path}.from[${i}].source`, cx);
    from.push(source);
    fromWords.push(words);
  });
  const to: L7Operation[] = [];
  const toWords: string[][] = [];
  (Array.isArray(r.to) ? r.to : []).forEach((item: unknown, i: number) => {
    const { operation, words } = translateOperation((item as Raw).operation as Raw, `${path}.to[${i}].operation`, cx);
    to.push(operation);
    toWords.push(words);
  });
  const when: L7Condition[] = [];
  const whenWords: string[] = [];
  (Array.isArray(r.when) ? r.when : []).forEach((item: unknown, i: number) => {
    const { condition, words } = translateCondition(item as Raw, `${path}.when[${i}]`, cx);
    if (condition) when.push(condition);
    whenWords.push(...words);
  });
  if (cx.unsupported.length > 0) {
    const what = `${cx.unsupported.join(', ')} cannot be checked by the waypoint (no JWT or SNI here)`;
    if (action === 'ALLOW') {
      warnings.push(`${cx.at}: ${path} dropped: ${what}, so this ALLOW rule never matches (stricter than written)`);
      return null;
    }
    warnings.push(`${cx.at}: ${path}: ${what}; ignored, the rest of the rule still ${action === 'DENY' ? 'denies' : 'audits'} (broader than written)`);
  }
  const summary: string[] = [];
  if (fromWords.length > 0 && fromWords.every((w) => w.length > 0)) summary.push(alternatives(fromWords));
  if (toWords.length > 0 && toWords.every((w) => w.length > 0)) summary.push(alternatives(toWords));
  summary.push(...whenWords);
  return { index, from, to, when, summary: summary.length > 0 ? summary.join(', ') : 'any request' };
}

function translateTargets(spec: Raw, at: string, namespace: string, rootNamespace: string): PolicyTarget[] {
  const raw: unknown[] = Array.isArray(spec.targetRefs) ? spec.targetRefs : isObject(spec.targetRef) ? [spec.targetRef] : [];
  const field = Array.isArray(spec.targetRefs) ? 'spec.targetRefs' : 'spec.targetRef';
  return raw.map((item, i) => {
    const path = Array.isArray(spec.targetRefs) ? `${field}[${i}]` : field;
    if (!isObject(item)) throw new ConfigError(`${at}: ${path} must be an object with group, kind and name`);
    for (const k of Object.keys(item)) {
      if (!['group', 'kind', 'name', 'namespace'].includes(k)) throw new ConfigError(`${at}: ${path}: unknown field "${k}" (expected one of: group, kind, name, namespace)`);
    }
    const { group = '', kind, name } = item;
    if (typeof name !== 'string' || name === '') throw new ConfigError(`${at}: ${path}.name must be a non-empty string`);
    if (item.namespace !== undefined && item.namespace !== namespace) {
      throw new ConfigError(`${at}: ${path}.namespace: a policy can only target objects of its own namespace (${namespace})`);
    }
    const ok =
      (kind === 'Service' && (group === '' || group === 'core')) ||
      ((kind === 'Gateway' || kind === 'GatewayClass') && group === 'gateway.networking.k8s.io') ||
      (kind === 'ServiceEntry' && group === 'networking.istio.io');
    if (!ok) {
      throw new ConfigError(
        `${at}: ${path}: ${JSON.stringify(group)}/${JSON.stringify(kind)} cannot be targeted (use Service with group "", Gateway or GatewayClass with group gateway.networking.k8s.io)`,
      );
    }
    if (kind === 'GatewayClass' && namespace !== rootNamespace) throw new ConfigError(`${at}: ${path}: a GatewayClass can only be targeted from the root namespace ${rootNamespace}`);
    return { kind: kind as PolicyTarget['kind'], namespace, name };
  });
}

/**
 * Translates an AuthorizationPolicy for waypoints. Fields are validated exactly as for ztunnel (the
 * same ConfigError messages); policies without targetRefs belong to ztunnel and give policy null.
 */
export function translateL7AuthorizationPolicy(o: KubeObject, rootNamespace: string = DEFAULT_ROOT_NAMESPACE): TranslatedL7Policy {
  translateAuthorizationPolicy(o, rootNamespace); // throws ConfigError for anything malformed
  const at = where(o);
  const spec: Raw = o.spec ?? {};
  const namespace = o.metadata.namespace ?? 'default';
  const warnings: string[] = [];
  const targets = translateTargets(spec, at, namespace, rootNamespace);
  if (targets.length === 0) return { policy: null, warnings };
  const action = (spec.action ?? 'ALLOW') as Action | 'CUSTOM';
  if (action === 'CUSTOM') {
    warnings.push(`${at}: action CUSTOM (external authorization) is not supported by the waypoint; policy ignored`);
    return { policy: null, warnings };
  }
  const cx: RuleCx = { at, namespace, unsupported: [] };
  const rules: L7Rule[] = [];
  (Array.isArray(spec.rules) ? spec.rules : []).forEach((r: unknown, i: number) => {
    const rule = translateRule(r, i, action, cx, warnings);
    if (rule) rules.push(rule);
  });
  if (!Array.isArray(spec.rules) || spec.rules.length === 0) {
    if (action !== 'ALLOW') warnings.push(`${at}: ${action} policy without rules never matches; add "rules: [{}]" to match every request`);
  }
  const policy: L7AuthorizationPolicy = {
    key: `${namespace}/${o.metadata.name}`,
    name: o.metadata.name,
    namespace,
    action,
    targets,
    rules,
    dryRun: o.metadata.annotations?.['istio.io/dry-run'] === 'true',
    warnings,
  };
  return { policy, warnings: [...warnings] };
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/** What the waypoint knows about one request. */
export interface L7RequestAttributes {
  method: string;
  /** normalized path; a query is ignored */
  path: string;
  /** Host / :authority */
  host: string;
  /** Service port the request was sent to */
  port: number;
  srcIp: string;
  /** `spiffe://…` from the HBONE peer, null for plaintext */
  srcIdentity: string | null;
  dstIp: string;
  /** original client; null: same as srcIp */
  remoteIp: string | null;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** Where the request is going at the waypoint, for choosing the policies that apply. */
export interface L7Target {
  waypoint: { namespace: string; name: string; gatewayClass: string };
  /** the Service addressed; null when not service-addressed */
  service: { namespace: string; name: string } | null;
}

function stringMatches(m: StringMatch, v: string): boolean {
  switch (m.kind) {
    case 'exact':
      return v === m.value;
    case 'prefix':
      return v.startsWith(m.value);
    case 'suffix':
      return v.endsWith(m.value);
    case 'any':
      return v.length > 0;
  }
}

function anyString(ms: readonly StringMatch[], v: string): boolean {
  for (const m of ms) if (stringMatches(m, v)) return true;
  return false;
}

function stringField(pos: readonly StringMatch[], neg: readonly StringMatch[], v: string): boolean {
  return (pos.length === 0 || anyString(pos, v)) && (neg.length === 0 || !anyString(neg, v));
}

function inBlock(b: IpBlock, w: number[]): boolean {
  if (w.length !== b.words.length) return false;
  for (let k = 0; k < w.length; k++) if (((w[k]! & b.masks[k]!) >>> 0) !== b.words[k]) return false;
  return true;
}

function ipField(pos: readonly IpBlock[], neg: readonly IpBlock[], ip: string | null): boolean {
  if (pos.length === 0 && neg.length === 0) return true;
  const w = ip === null ? null : ipWords(ip);
  if (w === null) return pos.length === 0;
  return (pos.length === 0 || pos.some((b) => inBlock(b, w))) && (neg.length === 0 || !neg.some((b) => inBlock(b, w)));
}

function portField(pos: readonly number[], neg: readonly number[], port: number): boolean {
  return (pos.length === 0 || pos.includes(port)) && (neg.length === 0 || !neg.includes(port));
}

/** The request as matchers see it, computed once per evaluation. */
class RequestView {
  readonly principal: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly path: string;
  readonly host: string;
  readonly hostNoPort: string;

  constructor(readonly a: L7RequestAttributes) {
    let p = '';
    let ns = '';
    let sa = '';
    const id = a.srcIdentity;
    if (id !== null && id.length > SPIFFE.length && id.startsWith(SPIFFE)) {
      p = id.slice(SPIFFE.length);
      const m = /\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(p);
      if (m) {
        ns = m[1]!;
        sa = m[2]!;
      }
    }
    this.principal = p;
    this.namespace = ns;
    this.serviceAccount = sa;
    const q = a.path.indexOf('?');
    this.path = q < 0 ? a.path : a.path.slice(0, q);
    this.host = a.host.toLowerCase();
    const colon = this.host.lastIndexOf(':');
    this.hostNoPort = colon > 0 && !this.host.endsWith(']') && /^\d+$/.test(this.host.slice(colon + 1)) ? this.host.slice(0, colon) : this.host;
  }

  header(name: string): string {
    const v = this.a.headers[name];
    if (v === undefined) return '';
    return Array.isArray(v) ? v.join(',') : v;
  }
}

function accountField(pos: readonly ServiceAccountMatch[], neg: readonly ServiceAccountMatch[], r: RequestView): boolean {
  const hit = (ms: readonly ServiceAccountMatch[]): boolean => r.serviceAccount !== '' && ms.some((m) => m.namespace === r.namespace && m.serviceAccount === r.serviceAccount);
  return (pos.length === 0 || hit(pos)) && (neg.length === 0 || !hit(neg));
}

/** Evaluates L7 policies; keeps compiled path templates. Build one per policy set. */
export class L7PolicyIndex {
  private readonly regexes = new Map<string, RegExp>();

  constructor(
    readonly policies: readonly L7AuthorizationPolicy[],
    readonly rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
  ) {}

  /** Policies attached to the addressed Service, to the waypoint, or to its class (root namespace). */
  applicable(t: L7Target): L7AuthorizationPolicy[] {
    return this.policies.filter((p) =>
      p.targets.some((x) => {
        switch (x.kind) {
          case 'Service':
          case 'ServiceEntry':
            return t.service !== null && x.namespace === t.service.namespace && x.name === t.service.name;
          case 'Gateway':
            return x.namespace === t.waypoint.namespace && x.name === t.waypoint.name;
          case 'GatewayClass':
            return p.namespace === this.rootNamespace && x.name === t.waypoint.gatewayClass;
        }
      }),
    );
  }

  private pathMatches(m: PathMatcher, path: string): boolean {
    if (m.kind !== 'template') return stringMatches(m, path);
    let re = this.regexes.get(m.value);
    if (re === undefined) this.regexes.set(m.value, (re = new RegExp(`^${m.value}$`)));
    return re.test(path);
  }

  private pathField(pos: readonly PathMatcher[], neg: readonly PathMatcher[], path: string): boolean {
    return (pos.length === 0 || pos.some((m) => this.pathMatches(m, path))) && (neg.length === 0 || !neg.some((m) => this.pathMatches(m, path)));
  }

  private hostField(pos: readonly StringMatch[], neg: readonly StringMatch[], r: RequestView): boolean {
    const hit = (ms: readonly StringMatch[]): boolean => anyString(ms, r.host) || (r.hostNoPort !== r.host && anyString(ms, r.hostNoPort));
    return (pos.length === 0 || hit(pos)) && (neg.length === 0 || !hit(neg));
  }

  private sourceMatches(s: L7Source, r: RequestView): boolean {
    return (
      stringField(s.principals, s.notPrincipals, r.principal) &&
      stringField(s.namespaces, s.notNamespaces, r.namespace) &&
      accountField(s.serviceAccounts, s.notServiceAccounts, r) &&
      ipField(s.ipBlocks, s.notIpBlocks, r.a.srcIp) &&
      ipField(s.remoteIpBlocks, s.notRemoteIpBlocks, r.a.remoteIp ?? r.a.srcIp)
    );
  }

  private operationMatches(o: L7Operation, r: RequestView): boolean {
    return (
      portField(o.ports, o.notPorts, r.a.port) &&
      stringField(o.methods, o.notMethods, r.a.method) &&
      this.hostField(o.hosts, o.notHosts, r) &&
      this.pathField(o.paths, o.notPaths, r.path)
    );
  }

  private conditionMatches(c: L7Condition, r: RequestView): boolean {
    switch (c.key) {
      case 'source.ip':
        return ipField(c.values, c.notValues, r.a.srcIp);
      case 'destination.ip':
        return ipField(c.values, c.notValues, r.a.dstIp);
      case 'remote.ip':
        return ipField(c.values, c.notValues, r.a.remoteIp ?? r.a.srcIp);
      case 'source.principal':
        return stringField(c.values, c.notValues, r.principal);
      case 'source.namespace':
        return stringField(c.values, c.notValues, r.namespace);
      case 'source.serviceAccount':
        return accountField(c.values, c.notValues, r);
      case 'destination.port':
        return portField(c.values, c.notValues, r.a.port);
      case 'request.headers':
        return stringField(c.values, c.notValues, r.header(c.header));
    }
  }

  private ruleMatches(rule: L7Rule, r: RequestView): boolean {
    if (rule.from.length > 0 && !rule.from.some((s) => this.sourceMatches(s, r))) return false;
    if (rule.to.length > 0 && !rule.to.some((o) => this.operationMatches(o, r))) return false;
    return rule.when.every((c) => this.conditionMatches(c, r));
  }

  private matchingRule(p: L7AuthorizationPolicy, r: RequestView): L7Rule | null {
    for (const rule of p.rules) if (this.ruleMatches(rule, r)) return rule;
    return null;
  }

  /** Decides one request against `policies` (usually `applicable(target)`), with L4's precedence. */
  evaluate(policies: readonly L7AuthorizationPolicy[], attrs: L7RequestAttributes): Decision {
    const none = 'allowed: no ALLOW policy applies';
    if (policies.length === 0) return { allowed: true, policy: null, rule: null, action: null, reason: none, audited: [] };
    const r = new RequestView(attrs);
    const audited: string[] = [];
    let allowPolicies = 0;
    for (const p of policies) {
      if (p.dryRun) {
        if (this.matchingRule(p, r) !== null) audited.push(`${p.key} (dry-run ${p.action})`);
      } else if (p.action === 'AUDIT') {
        if (this.matchingRule(p, r) !== null) audited.push(p.key);
      } else if (p.action === 'ALLOW') allowPolicies++;
    }
    for (const p of policies) {
      if (p.dryRun || p.action !== 'DENY') continue;
      const rule = this.matchingRule(p, r);
      if (rule !== null) {
        return { allowed: false, policy: p.key, rule: rule.index, action: 'DENY', reason: `denied by DENY policy ${p.key} rule ${rule.index}: ${rule.summary}`, audited };
      }
    }
    if (allowPolicies === 0) return { allowed: true, policy: null, rule: null, action: null, reason: none, audited };
    for (const p of policies) {
      if (p.dryRun || p.action !== 'ALLOW') continue;
      const rule = this.matchingRule(p, r);
      if (rule !== null) return { allowed: true, policy: p.key, rule: rule.index, action: 'ALLOW', reason: `allowed by ALLOW policy ${p.key} rule ${rule.index}: ${rule.summary}`, audited };
    }
    const names = policies.filter((p) => p.action === 'ALLOW' && !p.dryRun).map((p) => p.key);
    return { allowed: false, policy: null, rule: null, action: null, reason: `denied: ALLOW policies apply (${names.join(', ')}) but none matched`, audited };
  }

  /** `evaluate(applicable(target), attrs)`. */
  decide(target: L7Target, attrs: L7RequestAttributes): Decision {
    return this.evaluate(this.applicable(target), attrs);
  }
}

/** Decides one request (convenience for tests and `ambit` explain). */
export function evaluateL7(policies: readonly L7AuthorizationPolicy[], attrs: L7RequestAttributes): Decision {
  return new L7PolicyIndex(policies).evaluate(policies, attrs);
}
