/**
 * L7 routing as the waypoint applies it: route tables from Gateway API HTTPRoute/GRPCRoute
 * (and Istio VirtualService), destination traffic policy from Istio DestinationRule.
 *
 * Plain data only (no classes, functions or RegExp): it travels over MessagePack. Regular
 * expressions are kept as source strings, validated at translation and compiled by the
 * engine once per config. Durations are milliseconds; "no limit" is null.
 */

/** How a path is compared. `PathPrefix` is Gateway API's (whole segments), `Prefix` Istio's (characters). */
export type PathMatchType = 'Exact' | 'PathPrefix' | 'Prefix' | 'RegularExpression';

export interface PathMatch {
  type: PathMatchType;
  /** for RegularExpression: the source, matched against the whole path (no query) */
  value: string;
}

/** A header, query parameter or method comparison. Regular expressions match the whole value. */
export type ValueMatchType = 'Exact' | 'Prefix' | 'RegularExpression';

export interface ValueMatch {
  type: ValueMatchType;
  value: string;
}

/** A named value match: header names are lowercase; query parameter names as written. */
export interface NamedMatch extends ValueMatch {
  name: string;
  /** Istio's `withoutHeaders`: the header must be absent or not match */
  invert?: boolean;
}

/** One `matches[]` item: every set field must match (AND). */
export interface RouteMatch {
  /** null: any path */
  path: PathMatch | null;
  headers: NamedMatch[];
  queryParams: NamedMatch[];
  /** null: any method */
  method: ValueMatch | null;
  /** Istio `ignoreUriCase` */
  ignoreCase: boolean;
  /** Istio `port`: the Service port the request was sent to; null: any */
  port: number | null;
  /** Istio `sourceNamespace`: the caller's namespace; null: any */
  sourceNamespace: string | null;
  /** for messages and logs: `path prefix /api, header x-canary=true` */
  summary: string;
}

export interface HeaderPair {
  /** lowercase */
  name: string;
  value: string;
}

/** RequestHeaderModifier / ResponseHeaderModifier (Gateway API), `headers.request|response` (Istio). */
export interface HeaderModifier {
  set: HeaderPair[];
  add: HeaderPair[];
  /** lowercase names */
  remove: string[];
}

/** How a redirect or a rewrite changes the path. */
export type PathModifier = { type: 'ReplaceFullPath'; value: string } | { type: 'ReplacePrefixMatch'; value: string };

export interface RequestRedirect {
  /** null: the request's scheme */
  scheme: string | null;
  /** null: the request's host */
  hostname: string | null;
  path: PathModifier | null;
  /** null: derived from the scheme (or the request's port when the scheme is kept) */
  port: number | null;
  statusCode: number;
}

export interface UrlRewrite {
  hostname: string | null;
  path: PathModifier | null;
}

/** A copy of each request goes here (response discarded). */
export interface RequestMirror {
  backend: BackendTarget;
  /** share of requests mirrored, 0..100 */
  percent: number;
}

/** A Service (namespace/name) and port that receives traffic, optionally an Istio subset. */
export interface BackendTarget {
  /** namespace/name of the Service */
  service: string;
  /** Service port; null: the port the request came in on */
  port: number | null;
  /** DestinationRule subset name (VirtualService routes only) */
  subset: string | null;
}

/** A weighted backend of a rule; `filters` are the per-backend header modifiers. */
export interface WeightedBackend extends BackendTarget {
  weight: number;
  requestHeaders: HeaderModifier | null;
  responseHeaders: HeaderModifier | null;
  /** set when the reference cannot be used (unknown kind, missing Service): its share of traffic gets a 500 */
  invalid: string | null;
}

/** What counts as retryable (Envoy's `retry_on` words, as Istio users write them). */
export type RetryCondition =
  | '5xx'
  | 'gateway-error'
  | 'connect-failure'
  | 'reset'
  | 'retriable-4xx'
  | 'refused-stream'
  | 'retriable-status-codes'
  | 'cancelled'
  | 'deadline-exceeded'
  | 'internal'
  | 'resource-exhausted'
  | 'unavailable';

export interface RetryPolicy {
  /** retries after the first attempt */
  attempts: number;
  /** per attempt; null: bounded only by the request timeout */
  perTryTimeoutMs: number | null;
  retryOn: RetryCondition[];
  /** for `retriable-status-codes` */
  retriableStatusCodes: number[];
  /** base of the fully jittered exponential back-off */
  backoffBaseMs: number;
  /** Istio `retryRemoteLocalities` is not modeled; retries may land on the same endpoint */
}

export interface FaultDelay {
  fixedDelayMs: number;
  /** 0..100 */
  percent: number;
}

export interface FaultAbort {
  /** HTTP status, or null when grpcStatus is set */
  httpStatus: number | null;
  /** gRPC status code (number), for gRPC requests */
  grpcStatus: number | null;
  percent: number;
}

export interface FaultPolicy {
  delay: FaultDelay | null;
  abort: FaultAbort | null;
}

export interface RouteTimeouts {
  /** whole request including retries; null: none */
  requestMs: number | null;
  /** per attempt to a backend; null: none */
  backendRequestMs: number | null;
}

/** What the rule does with a matching request. */
export interface RouteRule {
  /** rule name or `rule N` */
  name: string;
  matches: RouteMatch[];
  requestHeaders: HeaderModifier | null;
  responseHeaders: HeaderModifier | null;
  redirect: RequestRedirect | null;
  rewrite: UrlRewrite | null;
  /** Istio `directResponse`: answered by the waypoint */
  directResponse: { status: number; body: string } | null;
  mirrors: RequestMirror[];
  /** empty: the request gets a 500 unless it is redirected */
  backends: WeightedBackend[];
  timeouts: RouteTimeouts;
  /** null: not set on this rule (a VirtualService overlay or the default applies) */
  retry: RetryPolicy | null;
  fault: FaultPolicy | null;
}

export type RouteKind = 'HTTPRoute' | 'GRPCRoute' | 'VirtualService';

/** A route attached to a Service, with its rules. */
export interface Route {
  kind: RouteKind;
  /** namespace/name */
  key: string;
  /** creationTimestamp (ms since epoch) when known, for precedence; null sorts last */
  created: number | null;
  rules: RouteRule[];
  /** the parent Service port; null: every port */
  port: number | null;
  /**
   * Gateway API consumer route (route namespace differs from the Service's): applies only to
   * callers from this namespace. null: producer route, applies to every caller.
   */
  consumerNamespace: string | null;
}

/** One (route, rule, match) in precedence order; `match` null = the rule has no matches (matches everything). */
export interface RouteEntry {
  route: number;
  rule: number;
  match: number | null;
}

/** Everything that routes requests addressed to one Service. */
export interface RouteTable {
  /** namespace/name of the parent Service */
  service: string;
  routes: Route[];
  /** in precedence order: first matching entry wins */
  entries: RouteEntry[];
  /**
   * VirtualService http[] items that only add resilience (retries, timeout, fault, mirror) on top of
   * Gateway API routes; first matching overlay fills what the selected rule left unset.
   */
  overlays: ResilienceOverlay[];
}

export interface ResilienceOverlay {
  /** namespace/name of the VirtualService and the http[] index */
  source: string;
  matches: RouteMatch[];
  /** VirtualService `timeout`: the request timeout */
  timeoutMs: number | null;
  retry: RetryPolicy | null;
  fault: FaultPolicy | null;
  mirrors: RequestMirror[];
}

// ---------------------------------------------------------------------------------------------
// Destination traffic policy (DestinationRule)

export type SimpleLoadBalancer = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';

export type LoadBalancerPolicy =
  | { type: SimpleLoadBalancer }
  | { type: 'CONSISTENT_HASH'; hashOn: { header: string } | { queryParameter: string } | { sourceIp: true } };

export interface ConnectionPoolPolicy {
  /** TCP connections per endpoint (HTTP/1.1: concurrent requests per endpoint) */
  maxConnections: number | null;
  /** requests waiting for a connection to the destination */
  http1MaxPendingRequests: number | null;
  /** requests in flight to the destination */
  http2MaxRequests: number | null;
  /** after this many requests a connection is closed; null: unlimited */
  maxRequestsPerConnection: number | null;
  /** idle pooled connections are closed after this */
  idleTimeoutMs: number | null;
  connectTimeoutMs: number | null;
}

export interface OutlierDetectionPolicy {
  consecutive5xxErrors: number | null;
  consecutiveGatewayErrors: number | null;
  intervalMs: number;
  baseEjectionTimeMs: number;
  /** 0..100 */
  maxEjectionPercent: number;
}

export interface TrafficPolicy {
  loadBalancer: LoadBalancerPolicy | null;
  connectionPool: ConnectionPoolPolicy | null;
  outlierDetection: OutlierDetectionPolicy | null;
}

export interface Subset {
  name: string;
  labels: Record<string, string>;
  /** merged over the destination's policy */
  trafficPolicy: TrafficPolicy | null;
}

/** Per destination Service: DestinationRule's policy, its port-level overrides and subsets. */
export interface DestinationPolicy {
  /** namespace/name of the Service */
  service: string;
  /** namespace/name of the DestinationRule */
  source: string;
  trafficPolicy: TrafficPolicy;
  portLevel: { port: number; policy: TrafficPolicy }[];
  subsets: Subset[];
}

/** All routing the waypoint needs, keyed by Service namespace/name. */
export interface RoutingConfig {
  tables: Record<string, RouteTable>;
  destinations: Record<string, DestinationPolicy>;
}
