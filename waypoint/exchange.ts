/**
 * One request as it passes the waypoint's stages: what arrived, what each stage decided, and
 * what is reported at the end (status, flags, bytes). Stages read and fill it; the engine owns it.
 */

import type { Decision } from '../shared/policy/evaluate.js';
import type { Workload } from '../shared/model/types.js';
import type { HeaderMap } from '../shared/routing/filters.js';
import type { RouteSelection } from '../shared/routing/match.js';
import type { ResilienceOverlay, RouteRule, WeightedBackend } from '../shared/routing/types.js';
import type { ReplayableBody } from './body.js';
import type { Addressed, Destination, Endpoint } from './config.js';
import type { Downstream } from './downstream.js';
import type { RequestTrace } from './tracing.js';

/** What the transport knows about a request's connection. */
export interface RequestContext {
  /** the client: for HBONE, from the `forwarded` header (address) and the peer certificate (identity) */
  source: { ip: string; port: number; identity: string | null };
  /** the original destination: the HBONE `:authority` (Service VIP:port or workload IP:port); null: use the Host header */
  destination: { ip: string; port: number } | null;
  /** the Service port assumed when the Host header has none (default 80) */
  defaultPort?: number;
}

/** Envoy's response flags, so logs and `response_flags` read as Istio users know them. */
export type ResponseFlag = 'NR' | 'UH' | 'UF' | 'UO' | 'URX' | 'UT' | 'UC' | 'UR' | 'DC' | 'DI' | 'FI' | 'NC' | 'RBAC' | 'SI';

export interface Exchange {
  readonly id: string;
  readonly start: number;
  readonly ctx: RequestContext;
  readonly down: Downstream;
  readonly downstreamProtocol: 'HTTP/1.1' | 'HTTP/2';
  method: string;
  /** path and query, dot segments removed */
  path: string;
  /** Host / :authority as received (rewrites change `upstreamAuthority`) */
  authority: string;
  upstreamAuthority: string;
  scheme: 'http' | 'https';
  /** headers to send upstream: lowercase, no pseudo or hop-by-hop headers */
  headers: HeaderMap;
  /** content-type application/grpc */
  grpc: boolean;
  /** the request has a body (else upstream requests end with their headers) */
  hasBody: boolean;
  body: ReplayableBody;
  sourceWorkload: Workload | null;

  addressed: Addressed | null;
  selection: RouteSelection | null;
  /** the rule in effect (the selected one, or the implicit route to the addressed Service) */
  rule: RouteRule | null;
  overlay: ResilienceOverlay | null;
  decision: Decision | null;
  backend: WeightedBackend | null;
  destination: Destination | null;
  endpoint: Endpoint | null;
  attempts: number;

  status: number;
  grpcStatus: number | null;
  flags: Set<ResponseFlag>;
  /** why the waypoint answered itself, for the access log */
  detail: string | null;
  /** the waypoint's span (null: tracing off, trace headers passed on untouched) */
  readonly trace: RequestTrace | null;
}

/** Envoy's order, so the same failure always reads the same. */
const FLAG_ORDER: readonly ResponseFlag[] = ['UH', 'UF', 'UO', 'NR', 'URX', 'DI', 'FI', 'UT', 'UC', 'SI', 'UR', 'DC', 'NC', 'RBAC'];

export function flagsText(flags: ReadonlySet<ResponseFlag>): string {
  return flags.size === 0 ? '-' : FLAG_ORDER.filter((f) => flags.has(f)).join(',');
}
