/**
 * L4 authorization decisions (ztunnel inbound) and PeerAuthentication mode resolution.
 *
 * Runs on every inbound connection: matchers arrive compiled (see types.ts), so this is
 * loops and comparisons. Per call it allocates the decision, one small view of the
 * connection and, only when a policy looks at addresses, the parsed IP words.
 */

import type {
  Action,
  AuthorizationPolicy,
  EffectivePeerAuthMode,
  IpBlock,
  L4Condition,
  L4Operation,
  L4Rule,
  L4Source,
  PeerAuthentication,
  ServiceAccountMatch,
  StringMatch,
} from './types.js';

export const DEFAULT_ROOT_NAMESPACE = 'istio-system';

/** What ztunnel knows about an inbound connection. */
export interface ConnectionAttributes {
  srcIp: string;
  /** peer identity from mTLS (`spiffe://td/ns/NS/sa/SA`), null for plaintext */
  srcIdentity: string | null;
  dstIp: string;
  dstPort: number;
}

/** The destination workload, as far as policy selection cares. */
export interface WorkloadRef {
  namespace: string;
  labels: Record<string, string>;
}

export interface Decision {
  allowed: boolean;
  /** key (ns/name) of the deciding policy; null when no policy decided */
  policy: string | null;
  /** index of the deciding rule in that policy's spec.rules */
  rule: number | null;
  action: Action | null;
  /** one sentence for logs and `ambit` output */
  reason: string;
  /** AUDIT policies that matched, and dry-run policies that matched ("ns/name (dry-run DENY)") */
  audited: string[];
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** Parses dotted IPv4 in [start, end) to an unsigned 32-bit value; -1 if it is not one. */
function parseV4(s: string, start: number, end: number): number {
  let acc = 0;
  let parts = 0;
  let cur = 0;
  let digits = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits > 0 && cur === 0) return -1; // leading zero: "010" is ambiguous (octal), refuse like node:net
      cur = cur * 10 + (c - 48);
      if (cur > 255) return -1;
      digits++;
    } else if (c === 46) {
      if (digits === 0 || parts === 3) return -1;
      acc = acc * 256 + cur;
      parts++;
      cur = 0;
      digits = 0;
    } else {
      return -1;
    }
  }
  if (digits === 0 || parts !== 3) return -1;
  return acc * 256 + cur;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Parses IPv6 text in [0, end) into 4 unsigned 32-bit words; null if it is not one. */
function parseV6(s: string, end: number): number[] | null {
  const g = [0, 0, 0, 0, 0, 0, 0, 0];
  let n = 0; // groups written
  let gap = -1; // group index where "::" stands
  let i = 0;
  if (end >= 2 && s.charCodeAt(0) === 58 && s.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
  } else if (end > 0 && s.charCodeAt(0) === 58) {
    return null;
  }
  while (i < end) {
    if (n >= 8) return null;
    const start = i;
    let v = 0;
    let digits = 0;
    while (i < end) {
      const d = hexDigit(s.charCodeAt(i));
      if (d < 0) break;
      v = v * 16 + d;
      digits++;
      i++;
    }
    if (i < end && s.charCodeAt(i) === 46) {
      // embedded IPv4 in the last 32 bits
      if (n > 6) return null;
      const v4 = parseV4(s, start, end);
      if (v4 < 0) return null;
      g[n++] = Math.floor(v4 / 65536);
      g[n++] = v4 % 65536;
      i = end;
      break;
    }
    if (digits === 0 || digits > 4) return null;
    g[n++] = v;
    if (i === end) break;
    if (s.charCodeAt(i) !== 58) return null;
    i++;
    if (i < end && s.charCodeAt(i) === 58) {
      if (gap >= 0) return null;
      gap = n;
      i++;
    } else if (i === end) {
      return null; // trailing single ':'
    }
  }
  if (gap < 0) {
    if (n !== 8) return null;
  } else {
    if (n > 7) return null;
    const tail = n - gap;
    for (let k = 0; k < tail; k++) g[7 - k] = g[n - 1 - k]!;
    for (let k = gap; k < 8 - tail; k++) g[k] = 0;
  }
  return [g[0]! * 65536 + g[1]!, g[2]! * 65536 + g[3]!, g[4]! * 65536 + g[5]!, g[6]! * 65536 + g[7]!];
}

/**
 * An IP address as unsigned 32-bit words: [v4] or [w0, w1, w2, w3] for IPv6. IPv4-mapped
 * IPv6 (`::ffff:10.0.0.1`, what dual-stack sockets report) becomes IPv4. null if not an IP.
 */
export function ipWords(ip: string): number[] | null {
  let end = ip.length;
  const zone = ip.indexOf('%');
  if (zone >= 0) end = zone;
  if (ip.indexOf(':') < 0) {
    const v = parseV4(ip, 0, end);
    return v < 0 ? null : [v];
  }
  const w = parseV6(ip, end);
  if (w !== null && w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return [w[3]!];
  return w;
}

function inBlock(b: IpBlock, w: number[]): boolean {
  const words = b.words;
  if (w.length !== words.length) return false;
  for (let k = 0; k < words.length; k++) {
    if (((w[k]! & b.masks[k]!) >>> 0) !== words[k]) return false;
  }
  return true;
}

function inAnyBlock(blocks: IpBlock[], w: number[]): boolean {
  for (let i = 0; i < blocks.length; i++) if (inBlock(blocks[i]!, w)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// The connection as the matchers see it

const SPIFFE = 'spiffe://';

/** Peer identity split once per evaluation; addresses parsed on first use. */
class ConnectionView {
  /** identity without `spiffe://`, '' when plaintext (Istio writes principals that way) */
  readonly principal: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly dstPort: number;
  private src: number[] | null | undefined = undefined;
  private dst: number[] | null | undefined = undefined;

  constructor(private readonly conn: ConnectionAttributes) {
    this.dstPort = conn.dstPort;
    const id = conn.srcIdentity;
    let principal = '';
    let namespace = '';
    let serviceAccount = '';
    // Only a SPIFFE identity authenticates; anything else is treated like plaintext (as ztunnel does).
    if (id !== null && id.length > SPIFFE.length && id.startsWith(SPIFFE)) {
      principal = id.slice(SPIFFE.length);
      const ns = principal.indexOf('/ns/');
      const sa = ns < 0 ? -1 : principal.indexOf('/sa/', ns + 4);
      if (sa > ns + 4 && principal.indexOf('/', sa + 4) < 0) {
        namespace = principal.slice(ns + 4, sa);
        serviceAccount = principal.slice(sa + 4);
      }
    }
    this.principal = principal;
    this.namespace = namespace;
    this.serviceAccount = serviceAccount;
  }

  srcWords(): number[] | null {
    if (this.src === undefined) this.src = ipWords(this.conn.srcIp);
    return this.src;
  }

  dstWords(): number[] | null {
    if (this.dst === undefined) this.dst = ipWords(this.conn.dstIp);
    return this.dst;
  }
}

// ---------------------------------------------------------------------------------------------
// Matchers. Every field: (no positive values or one matches) and (no negative value matches).

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

function anyString(ms: StringMatch[], v: string): boolean {
  for (let i = 0; i < ms.length; i++) if (stringMatches(ms[i]!, v)) return true;
  return false;
}

function stringField(pos: StringMatch[], neg: StringMatch[], v: string): boolean {
  return (pos.length === 0 || anyString(pos, v)) && (neg.length === 0 || !anyString(neg, v));
}

function anyServiceAccount(ms: ServiceAccountMatch[], c: ConnectionView): boolean {
  if (c.serviceAccount === '') return false;
  for (let i = 0; i < ms.length; i++) {
    const m = ms[i]!;
    if (m.namespace === c.namespace && m.serviceAccount === c.serviceAccount) return true;
  }
  return false;
}

function serviceAccountField(pos: ServiceAccountMatch[], neg: ServiceAccountMatch[], c: ConnectionView): boolean {
  return (pos.length === 0 || anyServiceAccount(pos, c)) && (neg.length === 0 || !anyServiceAccount(neg, c));
}

function ipField(pos: IpBlock[], neg: IpBlock[], w: number[] | null): boolean {
  if (w === null) return pos.length === 0; // an unreadable address is in no block
  return (pos.length === 0 || inAnyBlock(pos, w)) && (neg.length === 0 || !inAnyBlock(neg, w));
}

function portField(pos: number[], neg: number[], port: number): boolean {
  return (pos.length === 0 || pos.includes(port)) && (neg.length === 0 || !neg.includes(port));
}

function sourceMatches(s: L4Source, c: ConnectionView): boolean {
  return (
    stringField(s.principals, s.notPrincipals, c.principal) &&
    stringField(s.namespaces, s.notNamespaces, c.namespace) &&
    serviceAccountField(s.serviceAccounts, s.notServiceAccounts, c) &&
    (s.ipBlocks.length === 0 && s.notIpBlocks.length === 0 ? true : ipField(s.ipBlocks, s.notIpBlocks, c.srcWords()))
  );
}

function operationMatches(o: L4Operation, c: ConnectionView): boolean {
  return portField(o.ports, o.notPorts, c.dstPort);
}

function conditionMatches(w: L4Condition, c: ConnectionView): boolean {
  switch (w.key) {
    case 'source.ip':
      return ipField(w.values, w.notValues, c.srcWords());
    case 'destination.ip':
      return ipField(w.values, w.notValues, c.dstWords());
    case 'source.principal':
      return stringField(w.values, w.notValues, c.principal);
    case 'source.namespace':
      return stringField(w.values, w.notValues, c.namespace);
    case 'source.serviceAccount':
      return serviceAccountField(w.values, w.notValues, c);
    case 'destination.port':
      return portField(w.values, w.notValues, c.dstPort);
  }
}

function ruleMatches(r: L4Rule, c: ConnectionView): boolean {
  if (r.from.length > 0) {
    let any = false;
    for (let i = 0; i < r.from.length && !any; i++) any = sourceMatches(r.from[i]!, c);
    if (!any) return false;
  }
  if (r.to.length > 0) {
    let any = false;
    for (let i = 0; i < r.to.length && !any; i++) any = operationMatches(r.to[i]!, c);
    if (!any) return false;
  }
  for (let i = 0; i < r.when.length; i++) if (!conditionMatches(r.when[i]!, c)) return false;
  return true;
}

/** The first rule of the policy that matches, or null (always null without rules). */
function matchingRule(p: AuthorizationPolicy, c: ConnectionView): L4Rule | null {
  const rules = p.rules;
  for (let i = 0; i < rules.length; i++) if (ruleMatches(rules[i]!, c)) return rules[i]!;
  return null;
}

// ---------------------------------------------------------------------------------------------
// Selection and decision

function selectorMatches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

/** Whether a policy applies to a workload: root namespace = every namespace; selector must match. */
function appliesTo(p: { namespace: string; selector: Record<string, string> | null }, w: WorkloadRef, rootNamespace: string): boolean {
  if (p.namespace !== w.namespace && p.namespace !== rootNamespace) return false;
  return p.selector === null || selectorMatches(p.selector, w.labels);
}

/** Policies that apply to a workload (mesh-wide, its namespace, its selector), in input order. */
export function applicablePolicies(all: readonly AuthorizationPolicy[], w: WorkloadRef, rootNamespace: string = DEFAULT_ROOT_NAMESPACE): AuthorizationPolicy[] {
  return all.filter((p) => appliesTo(p, w, rootNamespace));
}

const NO_ALLOW_REASON = 'allowed: no ALLOW policy applies';

/**
 * Decides one connection against the policies that apply to its destination: any DENY
 * match denies; else no ALLOW policy allows; else some ALLOW rule must match. AUDIT and
 * dry-run policies are only reported in `audited`.
 */
export function evaluateL4(policies: readonly AuthorizationPolicy[], conn: ConnectionAttributes): Decision {
  if (policies.length === 0) return { allowed: true, policy: null, rule: null, action: null, reason: NO_ALLOW_REASON, audited: [] };
  const c = new ConnectionView(conn);
  const audited: string[] = [];
  let denyPolicy: AuthorizationPolicy | null = null;
  let denyRule: L4Rule | null = null;
  let allowPolicies = 0;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i]!;
    if (p.dryRun) {
      if (matchingRule(p, c) !== null) audited.push(`${p.key} (dry-run ${p.action})`);
    } else if (p.action === 'AUDIT') {
      if (matchingRule(p, c) !== null) audited.push(p.key);
    } else if (p.action === 'DENY') {
      if (denyRule === null) {
        const r = matchingRule(p, c);
        if (r !== null) {
          denyPolicy = p;
          denyRule = r;
        }
      }
    } else {
      allowPolicies++;
    }
  }
  if (denyPolicy !== null && denyRule !== null) {
    return {
      allowed: false,
      policy: denyPolicy.key,
      rule: denyRule.index,
      action: 'DENY',
      reason: `denied by DENY policy ${denyPolicy.key} rule ${denyRule.index}: ${denyRule.summary}`,
      audited,
    };
  }
  if (allowPolicies === 0) return { allowed: true, policy: null, rule: null, action: null, reason: NO_ALLOW_REASON, audited };
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i]!;
    if (p.action !== 'ALLOW' || p.dryRun) continue;
    const r = matchingRule(p, c);
    if (r !== null) {
      return { allowed: true, policy: p.key, rule: r.index, action: 'ALLOW', reason: `allowed by ALLOW policy ${p.key} rule ${r.index}: ${r.summary}`, audited };
    }
  }
  const names: string[] = [];
  for (const p of policies) if (p.action === 'ALLOW' && !p.dryRun) names.push(p.key);
  return { allowed: false, policy: null, rule: null, action: null, reason: `denied: ALLOW policies apply (${names.join(', ')}) but none matched`, audited };
}

interface Indexed {
  order: number;
  policy: AuthorizationPolicy;
}

interface NamespaceBucket {
  /** candidates in input order: root-namespace policies and the namespace's own */
  policies: AuthorizationPolicy[];
  /** false: every candidate applies, so `policies` is the answer as is */
  anySelector: boolean;
}

/**
 * Policies bucketed by namespace, for answering `applicablePolicies` without scanning the
 * whole list. Built once per config change; returned arrays are shared, do not mutate them.
 */
export class PolicyIndex {
  private readonly buckets = new Map<string, NamespaceBucket>();
  private readonly rootOnly: NamespaceBucket;
  readonly size: number;

  constructor(policies: readonly AuthorizationPolicy[], readonly rootNamespace: string = DEFAULT_ROOT_NAMESPACE) {
    this.size = policies.length;
    const root: Indexed[] = [];
    const byNs = new Map<string, Indexed[]>();
    policies.forEach((policy, order) => {
      if (policy.namespace === rootNamespace) {
        root.push({ order, policy });
      } else {
        let list = byNs.get(policy.namespace);
        if (!list) byNs.set(policy.namespace, (list = []));
        list.push({ order, policy });
      }
    });
    this.rootOnly = bucket(root);
    this.buckets.set(rootNamespace, this.rootOnly);
    for (const [ns, own] of byNs) this.buckets.set(ns, bucket([...root, ...own].sort((a, b) => a.order - b.order)));
  }

  /** Same answer as `applicablePolicies(all, w, rootNamespace)`. */
  applicable(w: WorkloadRef): readonly AuthorizationPolicy[] {
    const b = this.buckets.get(w.namespace) ?? this.rootOnly;
    if (!b.anySelector) return b.policies;
    return b.policies.filter((p) => p.selector === null || selectorMatches(p.selector, w.labels));
  }

  /** Decides a connection to workload `w`. */
  evaluate(w: WorkloadRef, conn: ConnectionAttributes): Decision {
    return evaluateL4(this.applicable(w), conn);
  }
}

function bucket(list: Indexed[]): NamespaceBucket {
  const policies = list.map((e) => e.policy);
  return { policies, anySelector: policies.some((p) => p.selector !== null) };
}

// ---------------------------------------------------------------------------------------------
// PeerAuthentication

/** Oldest first (creationTimestamp), then by key, so the choice never depends on input order. */
function older(a: PeerAuthentication, b: PeerAuthentication): boolean {
  if (a.created !== null && b.created !== null && a.created !== b.created) return Date.parse(a.created) < Date.parse(b.created);
  if (a.created !== null && b.created === null) return true;
  if (a.created === null && b.created !== null) return false;
  return a.key < b.key;
}

/**
 * The mTLS mode for a connection to `port` of workload `w`, as Istio composes it: the
 * oldest mesh (root namespace, no selector), namespace and workload policies, each level
 * overriding the one above unless UNSET; port-level modes of the workload policy last
 * (UNSET inherits). Root-namespace policies with a selector are ignored, as in Istio.
 * Nothing set: PERMISSIVE.
 */
export function peerAuthMode(all: readonly PeerAuthentication[], w: WorkloadRef, port: number, rootNamespace: string = DEFAULT_ROOT_NAMESPACE): EffectivePeerAuthMode {
  let mesh: PeerAuthentication | null = null;
  let ns: PeerAuthentication | null = null;
  let wl: PeerAuthentication | null = null;
  for (const p of all) {
    if (p.selector === null) {
      if (p.namespace === rootNamespace) {
        if (mesh === null || older(p, mesh)) mesh = p;
      } else if (p.namespace === w.namespace) {
        if (ns === null || older(p, ns)) ns = p;
      }
    } else if (p.namespace !== rootNamespace && p.namespace === w.namespace && selectorMatches(p.selector, w.labels)) {
      if (wl === null || older(p, wl)) wl = p;
    }
  }
  let mode: EffectivePeerAuthMode = 'PERMISSIVE';
  if (mesh !== null && mesh.mode !== 'UNSET') mode = mesh.mode;
  if (ns !== null && ns.mode !== 'UNSET') mode = ns.mode;
  if (wl !== null) {
    if (wl.mode !== 'UNSET') mode = wl.mode;
    const portMode = wl.portLevelMtls[port];
    if (portMode !== undefined && portMode !== 'UNSET') mode = portMode;
  }
  return mode;
}
