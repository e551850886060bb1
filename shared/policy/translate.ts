/**
 * Istio `security.istio.io` AuthorizationPolicy and PeerAuthentication objects into the
 * L4 policy model ztunnel enforces (types.ts).
 *
 * Wrong types and values throw ConfigError naming the file, the object and the field.
 * Attributes ztunnel cannot see at L4 (HTTP fields, JWT principals, remote.ip,
 * connection.sni) are handled the safe way, with a warning: an ALLOW rule using them is
 * dropped (it can never allow), a DENY or AUDIT rule is kept without them (broader).
 */

import { ConfigError, type KubeObject } from '../config/objects.js';
import { DEFAULT_ROOT_NAMESPACE, ipWords } from './evaluate.js';
import type {
  Action,
  AuthorizationPolicy,
  IpBlock,
  L4Condition,
  L4Operation,
  L4Rule,
  L4Source,
  PeerAuthentication,
  PeerAuthMode,
  PolicyScope,
  ServiceAccountMatch,
  StringMatch,
} from './types.js';

type Raw = Record<string, unknown>;

/** The result of translating one AuthorizationPolicy: null when ztunnel does not enforce it. */
export interface TranslatedAuthorizationPolicy {
  policy: AuthorizationPolicy | null;
  warnings: string[];
}

export interface TranslatedPeerAuthentication {
  policy: PeerAuthentication;
  warnings: string[];
}

/** Annotation that makes a policy report-only (Istio's dry-run). */
export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';

const SPIFFE = 'spiffe://';

function where(o: KubeObject): string {
  return `${o.source ?? '<input>'}: ${o.kind} "${o.metadata.namespace ?? 'default'}/${o.metadata.name}"`;
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/** Refuses fields the schema does not know: a typo ("form:") must not silently widen a rule. */
function checkKeys(obj: Raw, allowed: readonly string[], at: string, path: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new ConfigError(`${at}: ${path}: unknown field "${k}" (expected one of: ${allowed.join(', ')})`);
  }
}

/** A list of non-empty strings; absent or null is an empty list. */
function stringList(v: unknown, at: string, path: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(`${at}: ${path} must be a list of strings, got ${show(v)}`);
  return v.map((s: unknown, i: number) => {
    if (typeof s !== 'string') throw new ConfigError(`${at}: ${path}[${i}] must be a string, got ${show(s)}`);
    if (s === '') throw new ConfigError(`${at}: ${path}[${i}] must not be empty`);
    return s;
  });
}

/** Istio's string match: "a" exact, "a*" prefix, "*a" suffix, "*" any non-empty value. */
function compileString(s: string, at: string, path: string): StringMatch {
  if (s === '*') return { kind: 'any', value: '' };
  const star = s.indexOf('*');
  if (star < 0) return { kind: 'exact', value: s };
  if (star === 0 && s.indexOf('*', 1) < 0) return { kind: 'suffix', value: s.slice(1) };
  if (star === s.length - 1) return { kind: 'prefix', value: s.slice(0, -1) };
  throw new ConfigError(`${at}: ${path}: "${s}" has "*" in an unsupported place (use "*" alone, "prefix*" or "*suffix")`);
}

/** Principals are written without "spiffe://"; strip it when given, so the policy means what it says. */
function principalText(s: string, at: string, path: string, warnings: string[]): string {
  if (!s.startsWith(SPIFFE)) return s;
  const rest = s.slice(SPIFFE.length);
  if (rest === '') throw new ConfigError(`${at}: ${path}: "${s}" is not a principal`);
  warnings.push(`${at}: ${path}: principal "${s}" is written without "spiffe://" in Istio; read as "${rest}"`);
  return rest;
}

function maskWord(bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

/** A single IP or CIDR ("10.0.0.0/8", "2001:db8::/32", "10.1.2.3") into masked words. */
function compileIpBlock(text: string, at: string, path: string): IpBlock {
  const bad = (why: string): never => {
    throw new ConfigError(`${at}: ${path}: "${text}" ${why}`);
  };
  if (text.includes('%')) bad('is not an IP address or CIDR (zones are not allowed)');
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  let words = ipWords(addr);
  if (words === null) return bad('is not an IP address or CIDR');
  const mapped = words.length === 1 && addr.includes(':');
  const max = addr.includes(':') ? 128 : 32;
  let bits = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) bad(`has a bad prefix length (0 to ${max})`);
    bits = Number(p);
  }
  if (mapped) {
    // "::ffff:a.b.c.d/n" is how IPv4 looks on dual-stack sockets; connections are compared as IPv4.
    if (bits < 96) {
      words = [0, 0, 0xffff, words[0]!];
    } else {
      bits -= 96;
    }
  }
  const masks = words.map((_, k) => maskWord(bits - 32 * k));
  return { text, family: words.length === 1 ? 4 : 6, words: words.map((w, k) => (w & masks[k]!) >>> 0), masks };
}

/** Port numbers: numbers or strings of digits, 0 to 65535 (as Istio validates them). */
function portList(v: unknown, at: string, path: string): number[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(`${at}: ${path} must be a list of port numbers, got ${show(v)}`);
  return v.map((p: unknown, i: number) => {
    const n = typeof p === 'number' ? p : typeof p === 'string' && /^\d{1,5}$/.test(p) ? Number(p) : NaN;
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${at}: ${path}[${i}] must be a port number (0 to 65535), got ${show(p)}`);
    return n;
  });
}

/** Istio's serviceAccounts: "sa" (the policy's namespace) or "ns/sa"; no wildcards. */
function compileServiceAccount(s: string, policyNamespace: string, at: string, path: string): ServiceAccountMatch {
  if (s.includes('*')) throw new ConfigError(`${at}: ${path}: "${s}": wildcards are not allowed in serviceAccounts`);
  const parts = s.split('/');
  if (parts.length > 2 || parts.some((x) => x === '')) throw new ConfigError(`${at}: ${path}: "${s}" must be "serviceAccount" or "namespace/serviceAccount"`);
  return parts.length === 2 ? { namespace: parts[0]!, serviceAccount: parts[1]! } : { namespace: policyNamespace, serviceAccount: s };
}

function serviceAccountList(v: unknown, policyNamespace: string, at: string, path: string): { raw: string[]; compiled: ServiceAccountMatch[] } {
  const raw = stringList(v, at, path);
  if (raw.length > 16) throw new ConfigError(`${at}: ${path}: at most 16 service accounts (Istio's limit), got ${raw.length}`);
  return { raw, compiled: raw.map((s, i) => compileServiceAccount(s, policyNamespace, at, `${path}[${i}]`)) };
}

/** "label a", "label a or b", "label not a", "label not (a, b)" */
function phrase(label: string, values: string[], negative: boolean): string {
  if (!negative) return `${label} ${values.join(' or ')}`;
  return values.length === 1 ? `${label} not ${values[0]}` : `${label} not (${values.join(', ')})`;
}

/** Per-rule translation context. */
interface RuleContext {
  at: string;
  namespace: string;
  /** field paths ztunnel cannot check (L7), collected for the drop/ignore decision */
  l7: string[];
  warnings: string[];
}

const SOURCE_FIELDS = [
  'principals',
  'notPrincipals',
  'requestPrincipals',
  'notRequestPrincipals',
  'namespaces',
  'notNamespaces',
  'serviceAccounts',
  'notServiceAccounts',
  'ipBlocks',
  'notIpBlocks',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const;

function translateSource(raw: Raw, path: string, cx: RuleContext): { source: L4Source; words: string[] } {
  const { at } = cx;
  checkKeys(raw, SOURCE_FIELDS, at, path);
  const has = (k: string): boolean => raw[k] !== undefined && raw[k] !== null && !(Array.isArray(raw[k]) && (raw[k] as unknown[]).length === 0);
  if (!SOURCE_FIELDS.some(has)) throw new ConfigError(`${at}: ${path} must not be empty (set at least one field)`);
  if ((has('serviceAccounts') || has('notServiceAccounts')) && (has('principals') || has('notPrincipals') || has('namespaces') || has('notNamespaces'))) {
    throw new ConfigError(`${at}: ${path}: serviceAccounts cannot be set with principals or namespaces`);
  }
  // Fields ztunnel cannot see: JWT principals (HTTP) and remote IPs (X-Forwarded-For / PROXY protocol).
  for (const k of ['requestPrincipals', 'notRequestPrincipals'] as const) {
    if (stringList(raw[k], at, `${path}.${k}`).length > 0) cx.l7.push(`${path}.${k}`);
  }
  for (const k of ['remoteIpBlocks', 'notRemoteIpBlocks'] as const) {
    const list = stringList(raw[k], at, `${path}.${k}`);
    list.forEach((s, i) => compileIpBlock(s, at, `${path}.${k}[${i}]`));
    if (list.length > 0) cx.l7.push(`${path}.${k}`);
  }
  const words: string[] = [];
  const strings = (k: string, label: string, negative: boolean, principal: boolean): StringMatch[] => {
    const list = stringList(raw[k], at, `${path}.${k}`).map((s, i) => (principal ? principalText(s, at, `${path}.${k}[${i}]`, cx.warnings) : s));
    if (list.length > 0) words.push(phrase(label, list, negative));
    return list.map((s, i) => compileString(s, at, `${path}.${k}[${i}]`));
  };
  const ips = (k: string, negative: boolean): IpBlock[] => {
    const list = stringList(raw[k], at, `${path}.${k}`);
    if (list.length > 0) words.push(phrase('source ip', list, negative));
    return list.map((s, i) => compileIpBlock(s, at, `${path}.${k}[${i}]`));
  };
  const accounts = (k: string, negative: boolean): ServiceAccountMatch[] => {
    const { compiled } = serviceAccountList(raw[k], cx.namespace, at, `${path}.${k}`);
    if (compiled.length > 0) words.push(phrase('source service account', compiled.map((m) => `${m.namespace}/${m.serviceAccount}`), negative));
    return compiled;
  };
  const source: L4Source = {
    principals: strings('principals', 'source principal', false, true),
    notPrincipals: strings('notPrincipals', 'source principal', true, true),
    namespaces: strings('namespaces', 'source namespace', false, false),
    notNamespaces: strings('notNamespaces', 'source namespace', true, false),
    serviceAccounts: accounts('serviceAccounts', false),
    notServiceAccounts: accounts('notServiceAccounts', true),
    ipBlocks: ips('ipBlocks', false),
    notIpBlocks: ips('notIpBlocks', true),
  };
  return { source, words };
}

const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;

function translateOperation(raw: Raw, path: string, cx: RuleContext): { operation: L4Operation; words: string[] } {
  const { at } = cx;
  checkKeys(raw, OPERATION_FIELDS, at, path);
  for (const k of ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const) {
    if (stringList(raw[k], at, `${path}.${k}`).length > 0) cx.l7.push(`${path}.${k}`);
  }
  const ports = portList(raw.ports, at, `${path}.ports`);
  const notPorts = portList(raw.notPorts, at, `${path}.notPorts`);
  const l7Here = cx.l7.some((p) => p.startsWith(`${path}.`));
  if (ports.length === 0 && notPorts.length === 0 && !l7Here) throw new ConfigError(`${at}: ${path} must not be empty (set at least one field)`);
  const words: string[] = [];
  if (ports.length > 0) words.push(phrase('port', ports.map(String), false));
  if (notPorts.length > 0) words.push(phrase('port', notPorts.map(String), true));
  return { operation: { ports, notPorts }, words };
}

/** Condition keys Istio accepts that ztunnel cannot evaluate from a connection. */
function isL7Key(key: string): boolean {
  const mapKey = (prefix: string): boolean => key.startsWith(`${prefix}[`) && key.endsWith(']') && key.length > prefix.length + 2;
  return (
    key === 'remote.ip' || // from X-Forwarded-For or PROXY protocol
    key === 'connection.sni' || // inside the tunneled stream, ztunnel does not look
    key === 'request.auth.principal' ||
    key === 'request.auth.audiences' ||
    key === 'request.auth.presenter' ||
    mapKey('request.headers') ||
    mapKey('request.experimental.inline.headers') ||
    mapKey('request.auth.claims') ||
    (key.startsWith('experimental.envoy.filters.') && key.endsWith(']') && key.indexOf('[') > 0)
  );
}

function translateCondition(raw: Raw, path: string, cx: RuleContext): { condition: L4Condition | null; words: string[] } {
  const { at } = cx;
  checkKeys(raw, ['key', 'values', 'notValues'], at, path);
  const key = raw.key;
  if (typeof key !== 'string' || key === '') throw new ConfigError(`${at}: ${path}.key must be a non-empty string, got ${show(key)}`);
  const kp = `${path} (${key})`;
  const values = key === 'destination.port' ? portList(raw.values, at, `${path}.values`).map(String) : stringList(raw.values, at, `${path}.values`);
  const notValues = key === 'destination.port' ? portList(raw.notValues, at, `${path}.notValues`).map(String) : stringList(raw.notValues, at, `${path}.notValues`);
  if (values.length === 0 && notValues.length === 0) throw new ConfigError(`${at}: ${kp}: at least one of values or notValues must be set`);
  const words: string[] = [];
  if (values.length > 0) words.push(phrase(key, values, false));
  if (notValues.length > 0) words.push(phrase(key, notValues, true));
  const ips = (list: string[], field: string): IpBlock[] => list.map((s, i) => compileIpBlock(s, at, `${path}.${field}[${i}]`));
  const strs = (list: string[], field: string, principal: boolean): StringMatch[] =>
    list.map((s, i) => compileString(principal ? principalText(s, at, `${path}.${field}[${i}]`, cx.warnings) : s, at, `${path}.${field}[${i}]`));
  const accounts = (list: string[], field: string): ServiceAccountMatch[] => serviceAccountList(list, cx.namespace, at, `${path}.${field}`).compiled;
  switch (key) {
    case 'source.ip':
    case 'destination.ip':
      return { condition: { key, values: ips(values, 'values'), notValues: ips(notValues, 'notValues') }, words };
    case 'source.principal':
    case 'source.namespace': {
      const principal = key === 'source.principal';
      return { condition: { key, values: strs(values, 'values', principal), notValues: strs(notValues, 'notValues', principal) }, words };
    }
    case 'source.serviceAccount':
      return { condition: { key, values: accounts(values, 'values'), notValues: accounts(notValues, 'notValues') }, words };
    case 'destination.port':
      return { condition: { key, values: values.map(Number), notValues: notValues.map(Number) }, words };
    case 'destination.namespace':
      throw new ConfigError(`${at}: ${kp}: attribute destination.namespace is replaced by the policy's metadata.namespace`);
    case 'destination.name':
    case 'destination.user':
      throw new ConfigError(`${at}: ${kp}: attribute ${key} is deprecated (only in v1alpha1)`);
  }
  if (key.startsWith('destination.labels[')) throw new ConfigError(`${at}: ${kp}: attribute destination.labels is replaced by the workload selector`);
  if (!isL7Key(key)) throw new ConfigError(`${at}: ${kp}: unknown attribute "${key}"`);
  if (key === 'remote.ip') {
    ips(values, 'values');
    ips(notValues, 'notValues');
  }
  cx.l7.push(kp);
  return { condition: null, words: [] };
}

/** A list field of a rule (`from`, `to`, `when`): absent/null = none; present must be a non-empty list. */
function ruleList(v: unknown, at: string, path: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(`${at}: ${path} must be a list, got ${show(v)}`);
  if (v.length === 0) throw new ConfigError(`${at}: ${path} must not be empty (omit it to match anything)`);
  return v;
}

/** The single-key wrapper of from/to items: `{source: {...}}`, `{operation: {...}}`. */
function unwrap(item: unknown, field: 'source' | 'operation', at: string, path: string): Raw {
  if (!isObject(item)) throw new ConfigError(`${at}: ${path} must be an object with "${field}", got ${show(item)}`);
  checkKeys(item, [field], at, path);
  const inner = item[field];
  if (!isObject(inner)) throw new ConfigError(`${at}: ${path}.${field} must be an object, got ${show(inner)}`);
  return inner;
}

/** Joins alternatives ("a or b"), parenthesized when an alternative has several parts. */
function alternatives(parts: string[][]): string {
  const texts = parts.map((p) => p.join(' and '));
  if (texts.length === 1) return texts[0]!;
  return texts.map((t, i) => (parts[i]!.length > 1 ? `(${t})` : t)).join(' or ');
}

function translateRule(raw: unknown, index: number, action: Action, cx: RuleContext): L4Rule | null {
  const { at } = cx;
  const path = `spec.rules[${index}]`;
  if (!isObject(raw)) throw new ConfigError(`${at}: ${path} must be an object (use {} to match every connection), got ${show(raw)}`);
  checkKeys(raw, ['from', 'to', 'when'], at, path);
  cx.l7 = [];
  let from: L4Source[] = [];
  const fromWords: string[][] = [];
  ruleList(raw.from, at, `${path}.from`).forEach((item, i) => {
    const p = `${path}.from[${i}].source`;
    const { source, words } = translateSource(unwrap(item, 'source', at, `${path}.from[${i}]`), p, cx);
    from.push(source);
    fromWords.push(words);
  });
  let to: L4Operation[] = [];
  const toWords: string[][] = [];
  ruleList(raw.to, at, `${path}.to`).forEach((item, i) => {
    const { operation, words } = translateOperation(unwrap(item, 'operation', at, `${path}.to[${i}]`), `${path}.to[${i}].operation`, cx);
    to.push(operation);
    toWords.push(words);
  });
  const when: L4Condition[] = [];
  const whenWords: string[] = [];
  ruleList(raw.when, at, `${path}.when`).forEach((item, i) => {
    if (!isObject(item)) throw new ConfigError(`${at}: ${path}.when[${i}] must be an object with key and values, got ${show(item)}`);
    const { condition, words } = translateCondition(item, `${path}.when[${i}]`, cx);
    if (condition) when.push(condition);
    whenWords.push(...words);
  });
  const l7 = cx.l7;
  if (l7.length > 0) {
    const fields = l7.map((f) => (f.startsWith(`${path}.`) ? f.slice(path.length + 1) : f));
    const what = `${fields.join(', ')} ${fields.length === 1 ? 'is an L7 attribute' : 'are L7 attributes'} ztunnel cannot check`;
    if (action === 'ALLOW') {
      cx.warnings.push(`${at}: ${path} dropped at L4: ${what}, so this ALLOW rule never matches here (stricter than written); enforce it with a waypoint (targetRefs)`);
      return null;
    }
    const verb = action === 'DENY' ? 'denies' : 'audits';
    cx.warnings.push(`${at}: ${path}: ${what}; ignored at L4, the rest of the rule still ${verb} (broader than written); enforce it with a waypoint (targetRefs)`);
  }
  // A source or operation left without L4 fields matches anything, so the whole list does.
  if (fromWords.some((w) => w.length === 0)) {
    from = [];
    fromWords.length = 0;
  }
  if (toWords.some((w) => w.length === 0)) {
    to = [];
    toWords.length = 0;
  }
  const summary: string[] = [];
  if (fromWords.length > 0) summary.push(alternatives(fromWords));
  if (toWords.length > 0) summary.push(alternatives(toWords));
  summary.push(...whenWords);
  return { index, from, to, when, summary: summary.length > 0 ? summary.join(', ') : 'any connection' };
}

/** `selector.matchLabels`; null when absent or without labels (then the whole namespace is selected). */
function translateSelector(v: unknown, at: string, warnings: string[]): Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw new ConfigError(`${at}: spec.selector must be an object with matchLabels, got ${show(v)}`);
  checkKeys(v, ['matchLabels'], at, 'spec.selector');
  const ml = v.matchLabels;
  if (ml !== undefined && ml !== null && !isObject(ml)) throw new ConfigError(`${at}: spec.selector.matchLabels must be a map of strings, got ${show(ml)}`);
  const labels: Record<string, string> = {};
  for (const [k, val] of Object.entries(ml ?? {})) {
    if (typeof val !== 'string') throw new ConfigError(`${at}: spec.selector.matchLabels.${k} must be a string, got ${show(val)}`);
    if (k === '') throw new ConfigError(`${at}: spec.selector.matchLabels: empty label key`);
    if (k.includes('*') || val.includes('*')) throw new ConfigError(`${at}: spec.selector.matchLabels.${k}: wildcards are not supported in selectors`);
    labels[k] = val;
  }
  if (Object.keys(labels).length === 0) {
    warnings.push(`${at}: spec.selector has no labels; it selects every workload of the namespace`);
    return null;
  }
  return labels;
}

function checkObject(o: KubeObject, kind: string): string {
  const at = where(o);
  if (o.kind !== kind) throw new ConfigError(`${at}: expected kind ${kind}`);
  if (!o.apiVersion.startsWith('security.istio.io/')) throw new ConfigError(`${at}: apiVersion ${o.apiVersion} is not security.istio.io (use security.istio.io/v1)`);
  if (o.spec !== undefined && !isObject(o.spec)) throw new ConfigError(`${at}: spec must be an object`);
  return at;
}

function scopeOf(namespace: string, selector: Record<string, string> | null, rootNamespace: string): PolicyScope {
  if (selector !== null) return 'workload';
  return namespace === rootNamespace ? 'mesh' : 'namespace';
}

/**
 * Translates an AuthorizationPolicy for ztunnel. Returns policy null (with a warning)
 * when ztunnel does not enforce it: targetRef(s) (the waypoint does) or CUSTOM.
 */
export function translateAuthorizationPolicy(o: KubeObject, rootNamespace: string = DEFAULT_ROOT_NAMESPACE): TranslatedAuthorizationPolicy {
  const at = checkObject(o, 'AuthorizationPolicy');
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['selector', 'targetRef', 'targetRefs', 'action', 'rules', 'provider'], at, 'spec');
  const warnings: string[] = [];
  const namespace = o.metadata.namespace ?? 'default';

  const rawAction = spec.action ?? 'ALLOW';
  if (rawAction !== 'ALLOW' && rawAction !== 'DENY' && rawAction !== 'AUDIT' && rawAction !== 'CUSTOM') {
    throw new ConfigError(`${at}: spec.action must be ALLOW, DENY, AUDIT or CUSTOM, got ${show(rawAction)}`);
  }
  if (spec.provider !== undefined && spec.provider !== null && rawAction !== 'CUSTOM') throw new ConfigError(`${at}: spec.provider is only for action CUSTOM, found with ${rawAction}`);

  const selector = translateSelector(spec.selector, at, []);
  const hasSelector = spec.selector !== undefined && spec.selector !== null;
  if (spec.targetRef !== undefined && spec.targetRef !== null && !isObject(spec.targetRef)) throw new ConfigError(`${at}: spec.targetRef must be an object, got ${show(spec.targetRef)}`);
  if (spec.targetRefs !== undefined && spec.targetRefs !== null && !Array.isArray(spec.targetRefs)) throw new ConfigError(`${at}: spec.targetRefs must be a list, got ${show(spec.targetRefs)}`);
  const targeted = (isObject(spec.targetRef) ? 1 : 0) + (Array.isArray(spec.targetRefs) && spec.targetRefs.length > 0 ? 1 : 0);
  if (targeted + (hasSelector ? 1 : 0) > 1) throw new ConfigError(`${at}: spec: only one of selector, targetRef or targetRefs can be set`);

  const rawRules = spec.rules;
  if (rawRules !== undefined && rawRules !== null && !Array.isArray(rawRules)) throw new ConfigError(`${at}: spec.rules must be a list, got ${show(rawRules)}`);
  const ruleItems: unknown[] = rawRules ?? [];

  // Checked in full even when ztunnel will not enforce it, so a broken policy fails loudly.
  const checkAction: Action = rawAction === 'CUSTOM' ? 'AUDIT' : rawAction;
  const cx: RuleContext = { at, namespace, l7: [], warnings: [] };
  const rules: L4Rule[] = [];
  ruleItems.forEach((r, i) => {
    const rule = translateRule(r, i, checkAction, cx);
    if (rule) rules.push(rule);
  });

  if (targeted > 0) {
    warnings.push(`${at}: has targetRefs, so it is enforced by the waypoint, not by ztunnel at L4`);
    return { policy: null, warnings };
  }
  if (rawAction === 'CUSTOM') {
    warnings.push(`${at}: action CUSTOM (external authorization) is not enforced by ztunnel at L4; attach it to a waypoint with targetRefs`);
    return { policy: null, warnings };
  }
  translateSelector(spec.selector, at, warnings); // for its warning, now that the policy is kept
  warnings.push(...cx.warnings);
  if (ruleItems.length === 0 && rawAction !== 'ALLOW') {
    warnings.push(`${at}: ${rawAction} policy without rules never matches; add "rules: [{}]" to match every connection`);
  }
  if (rawAction === 'ALLOW' && ruleItems.length > 0 && rules.length === 0) {
    warnings.push(`${at}: every rule was dropped at L4, so this ALLOW policy allows nothing to the workloads it selects`);
  }
  const policy: AuthorizationPolicy = {
    key: `${namespace}/${o.metadata.name}`,
    name: o.metadata.name,
    namespace,
    action: rawAction,
    scope: scopeOf(namespace, selector, rootNamespace),
    selector,
    rules,
    dryRun: o.metadata.annotations?.[DRY_RUN_ANNOTATION] === 'true',
    warnings,
  };
  return { policy, warnings: [...warnings] };
}

const MODES: readonly PeerAuthMode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

function mtlsMode(v: unknown, at: string, path: string): PeerAuthMode {
  if (v === undefined || v === null) return 'UNSET';
  if (!isObject(v)) throw new ConfigError(`${at}: ${path} must be an object with mode, got ${show(v)}`);
  checkKeys(v, ['mode'], at, path);
  const mode = v.mode ?? 'UNSET';
  if (typeof mode !== 'string' || !MODES.includes(mode as PeerAuthMode)) throw new ConfigError(`${at}: ${path}.mode must be one of ${MODES.join(', ')}, got ${show(mode)}`);
  return mode as PeerAuthMode;
}

function creationTimestamp(o: KubeObject): string | null {
  const ts: unknown = (o.metadata as Record<string, unknown>).creationTimestamp;
  if (ts instanceof Date) return ts.toISOString();
  return typeof ts === 'string' && !Number.isNaN(Date.parse(ts)) ? ts : null;
}

/** Translates a PeerAuthentication (mTLS mode, optionally per port for selected workloads). */
export function translatePeerAuthentication(o: KubeObject, rootNamespace: string = DEFAULT_ROOT_NAMESPACE): TranslatedPeerAuthentication {
  const at = checkObject(o, 'PeerAuthentication');
  const spec: Raw = o.spec ?? {};
  checkKeys(spec, ['selector', 'mtls', 'portLevelMtls'], at, 'spec');
  const warnings: string[] = [];
  const namespace = o.metadata.namespace ?? 'default';
  const selector = translateSelector(spec.selector, at, warnings);
  const mode = mtlsMode(spec.mtls, at, 'spec.mtls');
  const portLevelMtls: Record<number, PeerAuthMode> = {};
  const pl = spec.portLevelMtls;
  if (pl !== undefined && pl !== null) {
    if (!isObject(pl)) throw new ConfigError(`${at}: spec.portLevelMtls must be a map from port to {mode}, got ${show(pl)}`);
    const entries = Object.entries(pl);
    if (entries.length === 0) throw new ConfigError(`${at}: spec.portLevelMtls, if set, must have at least one port`);
    if (selector === null) throw new ConfigError(`${at}: spec.portLevelMtls needs spec.selector (mesh and namespace PeerAuthentication cannot have port-level mTLS)`);
    for (const [k, v] of entries) {
      const port = /^\d{1,5}$/.test(k) ? Number(k) : NaN;
      if (!(port >= 1 && port <= 65535)) throw new ConfigError(`${at}: spec.portLevelMtls: "${k}" is not a port number (1 to 65535)`);
      portLevelMtls[port] = mtlsMode(v, at, `spec.portLevelMtls.${k}`);
    }
  }
  if (selector !== null && namespace === rootNamespace) {
    warnings.push(`${at}: a selector in the root namespace ${rootNamespace} is ignored (as in Istio); put the policy in the workload's namespace`);
  }
  const policy: PeerAuthentication = {
    key: `${namespace}/${o.metadata.name}`,
    name: o.metadata.name,
    namespace,
    scope: scopeOf(namespace, selector, rootNamespace),
    selector,
    mode,
    portLevelMtls,
    created: creationTimestamp(o),
  };
  return { policy, warnings };
}
