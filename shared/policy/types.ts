/**
 * Authorization and peer-authentication policy as ztunnel enforces it at L4.
 *
 * Plain data only (no classes, functions or RegExp): it travels to ztunnels over
 * MessagePack. Matchers are compiled at translation time (wildcards into
 * exact/prefix/suffix/any, CIDRs into masked 32-bit words) so evaluation per
 * connection is comparisons only.
 */

/** What a policy does when one of its rules matches. */
export type Action = 'ALLOW' | 'DENY' | 'AUDIT';

/** Where a policy applies: mesh-wide (root namespace, no selector), a namespace, or selected workloads. */
export type PolicyScope = 'mesh' | 'namespace' | 'workload';

/**
 * One value of an Istio string list, compiled: `"a"` exact, `"a*"` prefix, `"*a"` suffix,
 * `"*"` any non-empty value (so a principal or namespace only matches over mTLS).
 */
export interface StringMatch {
  kind: 'exact' | 'prefix' | 'suffix' | 'any';
  /** the text to compare with (without the `*`); '' for `any` */
  value: string;
}

/** A CIDR (or a single IP as /32, /128), as masked 32-bit words: 1 word for IPv4, 4 for IPv6. */
export interface IpBlock {
  /** as written in the policy, for messages */
  text: string;
  family: 4 | 6;
  /** network address & mask, unsigned 32-bit words, most significant first */
  words: number[];
  /** mask per word, unsigned 32-bit */
  masks: number[];
}

/** A service account of a peer: `ns/sa`, or `sa` in the policy's namespace. Any trust domain. */
export interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/**
 * One `from[].source`: every non-empty field must match (AND); within a field, any
 * value (OR); a `not*` field must match none of its values. All empty = any source.
 */
export interface L4Source {
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  ipBlocks: IpBlock[];
  notIpBlocks: IpBlock[];
}

/** One `to[].operation`, L4 part: destination ports. All empty = any operation. */
export interface L4Operation {
  ports: number[];
  notPorts: number[];
}

/** One `when[]` condition on an attribute ztunnel knows; `values` any-of, `notValues` none-of. */
export type L4Condition =
  | { key: 'source.ip' | 'destination.ip'; values: IpBlock[]; notValues: IpBlock[] }
  | { key: 'source.principal' | 'source.namespace'; values: StringMatch[]; notValues: StringMatch[] }
  | { key: 'source.serviceAccount'; values: ServiceAccountMatch[]; notValues: ServiceAccountMatch[] }
  | { key: 'destination.port'; values: number[]; notValues: number[] };

/** When-condition keys ztunnel can evaluate from a connection. */
export type L4ConditionKey = L4Condition['key'];

/**
 * A rule: some source (if any listed) AND some operation (if any listed) AND every
 * condition. An empty rule matches every connection.
 */
export interface L4Rule {
  /** index in the policy's `spec.rules`, kept when other rules were dropped */
  index: number;
  from: L4Source[];
  to: L4Operation[];
  when: L4Condition[];
  /** what the rule checks, in words, for decisions and logs: 'source namespace legacy' */
  summary: string;
}

/** An AuthorizationPolicy ztunnel enforces (selector or namespace/mesh-wide; never targetRefs). */
export interface AuthorizationPolicy {
  /** namespace/name */
  key: string;
  name: string;
  namespace: string;
  action: Action;
  scope: PolicyScope;
  /** matchLabels; null = every workload of the scope */
  selector: Record<string, string> | null;
  /** no rules: matches nothing (an ALLOW policy without rules therefore allows nothing) */
  rules: L4Rule[];
  /** annotation istio.io/dry-run=true: evaluated and reported, never enforced */
  dryRun: boolean;
  /** what translation dropped or ignored (L7 fields), for status and logs */
  warnings: string[];
}

/** mTLS mode of a PeerAuthentication; UNSET inherits from the enclosing level. */
export type PeerAuthMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE' | 'UNSET';

/** The mode that applies to a connection once inheritance is resolved. */
export type EffectivePeerAuthMode = Exclude<PeerAuthMode, 'UNSET'>;

export interface PeerAuthentication {
  /** namespace/name */
  key: string;
  name: string;
  namespace: string;
  scope: PolicyScope;
  selector: Record<string, string> | null;
  mode: PeerAuthMode;
  /** per workload port (target port); only on workload-scoped policies */
  portLevelMtls: Record<number, PeerAuthMode>;
  /** metadata.creationTimestamp when known: among conflicting policies the oldest wins */
  created: string | null;
}
