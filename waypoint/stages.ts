/**
 * The waypoint's request path as small stages, each one concern (linkerd2-proxy's layers):
 *
 *   match → authorize → require a route → fault → local responses → split → mirror → forward
 *
 * and inside `forward`, per attempt: balance → limits → send, with retries and timeouts around.
 * A stage either answers the request itself (a local reply) or calls `next`. Decisions come from
 * the pure functions of shared/routing and shared/policy; stages only apply them.
 */

import type { Logger } from 'pino';
import type { L7PolicyIndex } from '../shared/policy/l7.js';
import { RBAC_DENIED_BODY } from '../shared/policy/l7.js';
import { hashKeyFor, type LoadBalancer } from '../shared/routing/balancer.js';
import { faultDecision } from '../shared/routing/fault.js';
import type { FaultPolicy } from '../shared/routing/types.js';
import { applyHeaderModifier, computeRedirect, computeRewrite, type HeaderMap } from '../shared/routing/filters.js';
import type { RequestLimiter } from '../shared/routing/limits.js';
import { anyMatchApplies, selectRoute, splitPath, type RegexCache, type RouteRequest } from '../shared/routing/match.js';
import { healthSignal, type OutlierTracker } from '../shared/routing/outlier.js';
import { DEFAULT_RETRY, describeOutcome, retryDecision, type AttemptOutcome } from '../shared/routing/retry.js';
import { chance, pickBackend } from '../shared/routing/split.js';
import type { RequestMirror, RouteRule } from '../shared/routing/types.js';
import type { Destination, Endpoint, ServiceDirectory } from './config.js';
import { forwardableHeaders, grpcStatusForHttp } from './downstream.js';
import { DownstreamStalled } from './http1-body.js';
import type { Exchange, ResponseFlag } from './exchange.js';
import { AttemptError, type PendingAttempt, type UpstreamPool, type UpstreamResponse } from './upstream.js';

/** Per destination (Service port and subset): its balancer, outlier detection and limits. */
export interface DestinationState {
  balancer: LoadBalancer;
  tracker: OutlierTracker | null;
  limiter: RequestLimiter;
}

/** What stages use besides the exchange: the config's indexes and the engine's services. */
export interface StageEnv {
  dir: ServiceDirectory;
  policies: L7PolicyIndex;
  regexes: RegexCache;
  waypoint: { name: string; namespace: string; gatewayClass: string };
  pool: UpstreamPool;
  state(d: Destination): DestinationState;
  /** requests in flight per endpoint key */
  active: Map<string, number>;
  now(): number;
  random(): number;
  log: Logger;
  sleep(ms: number): Promise<void>;
}

export type Next = () => Promise<void>;
/** A stage that never waits is a plain function returning `next()` or DONE: no async wrapper (and its promise) per stage and request. */
export type Stage = (x: Exchange, env: StageEnv, next: Next) => Promise<void>;

/** A settled promise, for stages that answer without waiting (they need not be async functions). */
export const DONE: Promise<void> = Promise.resolve();

/** Composes stages into one handler; the last stage gets a `next` that does nothing. */
export function compose(stages: readonly Stage[]): (x: Exchange, env: StageEnv) => Promise<void> {
  return (x, env) => {
    const run = (i: number): Promise<void> => (i >= stages.length ? DONE : stages[i]!(x, env, () => run(i + 1)));
    return run(0);
  };
}

/** Answers the request from the waypoint: plain text, or a gRPC trailers-only reply for gRPC clients. */
export function localReply(x: Exchange, status: number, body: string, opts: { flag?: ResponseFlag; grpcStatus?: number | null; headers?: HeaderMap } = {}): void {
  if (opts.flag) x.flags.add(opts.flag);
  x.detail = body;
  if (x.down.started || x.down.aborted) return;
  if (x.grpc) {
    const code = opts.grpcStatus ?? grpcStatusForHttp(status);
    x.status = 200;
    x.grpcStatus = code;
    x.down.replyGrpc(code, body, opts.headers);
    return;
  }
  x.status = status;
  x.down.reply(status, { 'content-type': 'text/plain', ...opts.headers }, body);
}

function routeRequest(x: Exchange, port: number): RouteRequest {
  const principal = x.ctx.source.identity;
  const ns = principal ? /\/ns\/([^/]+)\/sa\//.exec(principal)?.[1] ?? null : null;
  return { method: x.method, path: x.path, headers: x.headers, port, sourceNamespace: ns };
}

/** The route of a Service without routes: everything to the Service itself. */
function implicitRule(service: string, port: number): RouteRule {
  return {
    name: 'default',
    matches: [],
    requestHeaders: null,
    responseHeaders: null,
    redirect: null,
    rewrite: null,
    directResponse: null,
    mirrors: [],
    backends: [{ service, port, subset: null, weight: 1, requestHeaders: null, responseHeaders: null, invalid: null }],
    timeouts: { requestMs: null, backendRequestMs: null },
    retry: null,
    fault: null,
  };
}

/** Finds the addressed Service or workload and the route rule (recorded; answering waits for authorization). */
export const matchRoute: Stage = (x, env, next) => {
  x.addressed = env.dir.resolve(x.ctx.destination, x.authority, x.ctx.defaultPort ?? 80);
  const a = x.addressed;
  if (a?.kind === 'service') {
    const table = env.dir.table(a.service.key);
    const req = routeRequest(x, a.port);
    if (table && table.entries.length > 0) {
      x.selection = selectRoute(table, req, env.regexes);
      x.rule = x.selection?.rule ?? null;
    } else {
      x.rule = implicitRule(a.service.key, a.port);
    }
    if (table) x.overlay = table.overlays.find((o) => anyMatchApplies(o.matches, req, env.regexes)) ?? null;
  } else if (a?.kind === 'workload') {
    x.rule = { ...implicitRule('', a.port), backends: [] };
  }
  return next();
};

/** L7 AuthorizationPolicy: 403 "RBAC: access denied" (gRPC: PERMISSION_DENIED) when denied. */
export const authorize: Stage = (x, env, next) => {
  const a = x.addressed;
  const service = a?.kind === 'service' ? { namespace: a.service.namespace, name: a.service.name } : null;
  const decision = env.policies.decide(
    { waypoint: env.waypoint, service },
    {
      method: x.method,
      path: x.path,
      host: x.authority,
      port: a?.port ?? x.ctx.destination?.port ?? 0,
      srcIp: x.ctx.source.ip,
      srcIdentity: x.ctx.source.identity,
      dstIp: x.ctx.destination?.ip ?? (a?.kind === 'service' ? a.service.vip ?? '' : a?.workload.ip ?? ''),
      remoteIp: null,
      headers: x.headers,
    },
  );
  x.decision = decision;
  if (!decision.allowed) {
    localReply(x, 403, RBAC_DENIED_BODY, { flag: 'RBAC' });
    return DONE;
  }
  return next();
};

/** 404 when nothing is known at the address, or the Service's routes match nothing. */
export const requireRoute: Stage = (x, _env, next) => {
  if (x.addressed === null) {
    localReply(x, 404, 'no such service', { flag: 'NR' });
    return DONE;
  }
  if (x.rule === null) {
    localReply(x, 404, 'no route matched', { flag: 'NR' });
    return DONE;
  }
  return next();
};

/** Fault injection: delay, then maybe abort with the configured HTTP or gRPC status. */
export const injectFault: Stage = (x, env, next) => {
  const fault = x.rule?.fault ?? x.overlay?.fault ?? null;
  if (fault === null) return next();
  return applyFault(x, env, next, fault);
};

async function applyFault(x: Exchange, env: StageEnv, next: Next, fault: FaultPolicy): Promise<void> {
  const v = faultDecision(fault, env.random);
  if (v.delayMs > 0) {
    x.flags.add('DI');
    await env.sleep(v.delayMs);
    if (x.down.aborted) return;
  }
  if (v.abort !== null) {
    if (v.abort.grpcStatus !== null) {
      x.flags.add('FI');
      x.detail = 'fault filter abort';
      x.status = 200;
      x.grpcStatus = v.abort.grpcStatus;
      x.down.replyGrpc(v.abort.grpcStatus, 'fault filter abort');
      return;
    }
    return localReply(x, v.abort.httpStatus ?? 503, 'fault filter abort', { flag: 'FI' });
  }
  return next();
}

function hostWithoutPort(authority: string): string {
  const m = /^(.*):\d+$/.exec(authority);
  return m && !authority.endsWith(']') ? m[1]! : authority;
}

/** Redirects and Istio direct responses, answered here. */
export const respondLocally: Stage = (x, _env, next) => {
  const rule = x.rule!;
  if (rule.directResponse !== null) {
    x.detail = 'direct response';
    if (x.down.started) return DONE;
    x.status = rule.directResponse.status;
    x.down.reply(rule.directResponse.status, { 'content-type': 'text/plain' }, rule.directResponse.body);
    return DONE;
  }
  if (rule.redirect !== null) {
    const { status, location } = computeRedirect(
      rule.redirect,
      { scheme: x.scheme, host: hostWithoutPort(x.authority), port: x.addressed?.port ?? 80, path: x.path },
      x.selection?.match?.path ?? null,
    );
    x.detail = `redirect to ${location}`;
    x.status = status;
    x.down.reply(status, { location }, '');
    return DONE;
  }
  return next();
};

/** Weighted backend choice (canary), then URL rewrite and request header modifiers. */
export const splitTraffic: Stage = (x, env, next) => {
  const rule = x.rule!;
  const a = x.addressed!;
  if (a.kind === 'workload') {
    x.destination = env.dir.workloadDestination(a.workload, a.port);
  } else {
    const backend = pickBackend(rule.backends, env.random());
    if (backend === null) {
      localReply(x, 500, rule.backends.length === 0 ? 'route has no backends' : 'every backend has weight 0', { flag: 'NC' });
      return DONE;
    }
    x.backend = backend;
    if (backend.invalid !== null) {
      localReply(x, 500, `backend unavailable: ${backend.invalid}`, { flag: 'NC' });
      return DONE;
    }
    const dest = env.dir.destination(backend, a.port);
    if (dest === null) {
      localReply(x, 500, `backend ${backend.service} port ${backend.port ?? a.port} does not exist`, { flag: 'NC' });
      return DONE;
    }
    x.destination = dest;
  }
  const rw = computeRewrite(rule.rewrite, x.path, x.selection?.match?.path ?? null);
  x.path = rw.path;
  if (rw.host !== null) x.upstreamAuthority = rw.host;
  applyHeaderModifier(x.headers, rule.requestHeaders);
  applyHeaderModifier(x.headers, x.backend?.requestHeaders ?? null);
  return next();
};

/**
 * Chooses an endpoint: ejected ones left out, endpoints this request already tried left out while
 * others remain (Istio's default `previous_hosts` retry predicate), then the destination's balancer.
 */
export function chooseEndpoint(x: Exchange, env: StageEnv, d: Destination, st: DestinationState, tried?: ReadonlySet<string>): Endpoint | null {
  let healthy = st.tracker ? st.tracker.available(d.endpoints, (e) => e.key, env.now()) : d.endpoints;
  if (tried && tried.size > 0) {
    const fresh = healthy.filter((e) => !tried.has(e.key));
    if (fresh.length > 0) healthy = fresh;
  }
  const { query } = splitPath(x.path);
  const hashKey = hashKeyFor(d.policy.loadBalancer, { headers: x.headers, query, sourceIp: x.ctx.source.ip });
  return st.balancer.pick(healthy, { random: env.random, active: (k) => env.active.get(k) ?? 0, hashKey });
}

function upstreamProtocol(x: Exchange, d: Destination): 'http1' | 'http2' {
  if (x.grpc) return 'http2';
  if (d.protocol !== 'auto') return d.protocol;
  return x.downstreamProtocol === 'HTTP/2' ? 'http2' : 'http1';
}

/** Fire-and-forget copies: the response is read and dropped, failures only logged. */
function sendMirror(x: Exchange, env: StageEnv, m: RequestMirror): void {
  const a = x.addressed;
  const d = env.dir.destination(m.backend, a?.port ?? 80);
  if (d === null || d.endpoints.length === 0) return;
  const e = chooseEndpoint(x, env, d, env.state(d));
  if (e === null) return;
  const body = x.hasBody ? x.body.tap() : null;
  if (x.hasBody && body === null) return;
  const host = x.upstreamAuthority.replace(/^([^:]+|\[[^\]]+\])(:\d+)?$/, (_all, h: string, p?: string) => `${h}-shadow${p ?? ''}`);
  const attempt = env.pool.send({
    endpoint: e,
    protocol: upstreamProtocol(x, d),
    method: x.method,
    path: x.path,
    authority: host,
    scheme: x.scheme,
    headers: { ...x.headers },
    body,
    maxRequestsPerConnection: d.policy.connectionPool?.maxRequestsPerConnection ?? null,
    idleTimeoutMs: d.policy.connectionPool?.idleTimeoutMs ?? null,
  });
  attempt.response.then(
    (r) => {
      r.body.on('error', () => undefined);
      r.body.resume();
    },
    (err: unknown) => env.log.debug({ 'request.id': x.id, mirror: d.key, err: (err as Error).message }, 'mirror failed'),
  );
}

/** RequestMirror filters and VirtualService mirrors. */
export const mirrorRequest: Stage = (x, env, next) => {
  for (const list of [x.rule?.mirrors, x.overlay?.mirrors]) {
    if (list === undefined || list.length === 0) continue;
    for (const m of list) if (chance(m.percent, env.random())) sendMirror(x, env, m);
  }
  return next();
};

type AttemptResult =
  | { ok: true; response: UpstreamResponse; endpoint: Endpoint; release: () => void; abort: () => void }
  | { ok: false; outcome: AttemptOutcome | { kind: 'no-endpoint' }; endpoint: Endpoint | null; error: string };

/** One try: balance, limits, send, per-try timeout. */
async function attempt(x: Exchange, env: StageEnv, d: Destination, perTryMs: number | null, cancel: { current: (() => void) | null }, tried: Set<string>): Promise<AttemptResult> {
  const st = env.state(d);
  const endpoint = chooseEndpoint(x, env, d, st, tried);
  if (endpoint === null) return { ok: false, outcome: { kind: 'no-endpoint' }, endpoint: null, error: 'no healthy upstream' };
  tried.add(endpoint.key);
  const protocol = upstreamProtocol(x, d);
  // limits: a slot per request in flight to the destination (granted is called only for a queued request, after acquire returned)
  let granted: () => void = () => undefined;
  const { admission, waiter } = st.limiter.acquire(protocol === 'http1', () => granted());
  if (admission === 'overflow') return { ok: false, outcome: { kind: 'overflow' }, endpoint, error: 'upstream overflow (connection pool limits)' };
  if (admission === 'queued') {
    const wait = new Promise<void>((r) => (granted = r));
    let cancelled = false;
    cancel.current = () => {
      cancelled = true;
      waiter?.cancel();
      granted();
    };
    await wait;
    cancel.current = null;
    if (cancelled) return { ok: false, outcome: { kind: 'overflow' }, endpoint, error: 'cancelled while waiting for a connection' };
  }
  let released = false;
  env.active.set(endpoint.key, (env.active.get(endpoint.key) ?? 0) + 1);
  const release = (): void => {
    if (released) return;
    released = true;
    st.limiter.release();
    const n = (env.active.get(endpoint.key) ?? 1) - 1;
    if (n <= 0) env.active.delete(endpoint.key);
    else env.active.set(endpoint.key, n);
  };
  const body = x.hasBody ? x.body.open() : null;
  if (x.hasBody && body === null) {
    release();
    return { ok: false, outcome: { kind: 'reset' }, endpoint, error: 'request body too large to send again' };
  }
  x.endpoint = endpoint;
  const pending: PendingAttempt = env.pool.send({
    endpoint,
    protocol,
    method: x.method,
    path: x.path,
    authority: x.upstreamAuthority,
    scheme: x.scheme,
    // read when the request is made (the pool copies them): not changed after this stage
    headers: x.headers,
    body,
    maxRequestsPerConnection: d.policy.connectionPool?.maxRequestsPerConnection ?? null,
    idleTimeoutMs: d.policy.connectionPool?.idleTimeoutMs ?? null,
  });
  let timer: NodeJS.Timeout | null = null;
  let timedOut = false;
  const timeout =
    perTryMs === null
      ? null
      : new Promise<void>((r) => {
          timer = setTimeout(() => {
            timedOut = true;
            pending.abort();
            r();
          }, perTryMs);
        });
  cancel.current = () => pending.abort();
  try {
    const response = await (timeout === null ? pending.response : Promise.race([pending.response, timeout.then(() => null)]));
    if (response === null || timedOut) {
      release();
      return { ok: false, outcome: { kind: 'timeout' }, endpoint, error: `per-try timeout ${perTryMs} ms` };
    }
    return { ok: true, response, endpoint, release, abort: pending.abort };
  } catch (err) {
    release();
    if (timedOut) return { ok: false, outcome: { kind: 'timeout' }, endpoint, error: `per-try timeout ${perTryMs} ms` };
    const kind = err instanceof AttemptError ? err.kind : 'reset';
    return { ok: false, outcome: { kind }, endpoint, error: (err as Error).message };
  } finally {
    if (timer) clearTimeout(timer);
    cancel.current = null;
  }
}

/** What a failed request reads as when the waypoint gives up. */
function failureReply(x: Exchange, outcome: AttemptOutcome | { kind: 'no-endpoint' }, error: string, retried: boolean): void {
  if (retried) x.flags.add('URX');
  switch (outcome.kind) {
    case 'no-endpoint':
      return localReply(x, 503, 'no healthy upstream', { flag: 'UH' });
    case 'overflow':
      return localReply(x, 503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow', { flag: 'UO' });
    case 'timeout':
      localReply(x, 504, 'upstream request timeout', { flag: 'UT' });
      // which timeout: a per-try timeout, or an endpoint that took none of the request body
      x.detail = error;
      return;
    case 'connect-failure':
      return localReply(x, 503, `upstream connect error or disconnect/reset before headers. reset reason: connection failure (${error})`, { flag: 'UF' });
    default:
      return localReply(x, 503, `upstream connect error or disconnect/reset before headers. reset reason: ${outcome.kind}`, { flag: 'UR' });
  }
}

function recordHealth(env: StageEnv, d: Destination, endpoint: Endpoint | null, outcome: AttemptOutcome): void {
  const tracker = env.state(d).tracker;
  if (tracker === null || endpoint === null) return;
  const ejection = tracker.record(endpoint.key, healthSignal(outcome), env.now(), d.endpoints.length);
  if (ejection) env.log.warn({ 'dst.service': d.key, endpoint: ejection.endpoint, until: ejection.until, reason: ejection.reason }, 'outlier ejected');
}

function grpcStatusFrom(t: Record<string, string | string[]>): number | null {
  const v = t['grpc-status'];
  if (v === undefined) return null;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) ? n : null;
}

/**
 * Sends the request with retries (retryOn, attempts, back-off), per-try and request timeouts, and
 * relays the chosen response with the response header modifiers. Terminal stage.
 */
export const forward: Stage = async (x, env) => {
  const d = x.destination!;
  const rule = x.rule!;
  const retry = rule.retry ?? x.overlay?.retry ?? DEFAULT_RETRY;
  const requestMs = rule.timeouts.requestMs ?? x.overlay?.timeoutMs ?? null;
  const perTryMs = rule.timeouts.backendRequestMs ?? retry.perTryTimeoutMs;
  const cancel: { current: (() => void) | null } = { current: null };
  const tried = new Set<string>();
  let timedOut = false;
  let resolveTimeout!: () => void;
  const expired = new Promise<'timeout'>((r) => (resolveTimeout = () => r('timeout')));
  const timer =
    requestMs === null
      ? null
      : setTimeout(() => {
          timedOut = true;
          cancel.current?.();
          resolveTimeout();
        }, requestMs);
  x.down.onAbort(() => {
    x.flags.add('DC');
    cancel.current?.();
    resolveTimeout();
  });
  try {
    for (let n = 1; ; n++) {
      x.attempts = n;
      const result = await Promise.race([attempt(x, env, d, perTryMs, cancel, tried), expired]);
      if (result === 'timeout' || timedOut || x.down.aborted) {
        if (result !== 'timeout' && result.ok) {
          result.abort();
          result.release();
        }
        if (!x.down.aborted) localReply(x, 504, 'upstream request timeout', { flag: 'UT' });
        return;
      }
      const outcome: AttemptOutcome | { kind: 'no-endpoint' } = result.ok ? { kind: 'response', status: result.response.status, grpcStatus: result.response.grpcStatus } : result.outcome;
      if (outcome.kind !== 'no-endpoint') recordHealth(env, d, result.endpoint, outcome);
      if (outcome.kind === 'no-endpoint') return failureReply(x, outcome, 'no healthy upstream', n > 1);
      const replayable = !x.hasBody || x.body.canReplay;
      const verdict = replayable ? retryDecision(retry, n, outcome, env.random()) : { retry: false, backoffMs: 0, reason: 'body not kept' };
      if (verdict.retry) {
        env.log.debug({ 'request.id': x.id, attempt: n, reason: verdict.reason }, 'retrying');
        if (result.ok) {
          result.response.body.on('error', () => undefined);
          result.abort();
          result.release();
        }
        if (verdict.backoffMs > 0) {
          const slept = await Promise.race([env.sleep(verdict.backoffMs).then(() => 'slept' as const), expired]);
          if (slept === 'timeout') {
            if (!x.down.aborted) localReply(x, 504, 'upstream request timeout', { flag: 'UT' });
            return;
          }
        }
        continue;
      }
      if (!result.ok) return failureReply(x, outcome, `${describeOutcome(outcome)}: ${result.error}`, n > 1);
      // relay the response
      const up = result.response;
      x.status = up.status;
      x.grpcStatus = up.grpcStatus;
      const headers = forwardableHeaders(up.headers);
      applyHeaderModifier(headers, rule.responseHeaders);
      applyHeaderModifier(headers, x.backend?.responseHeaders ?? null);
      try {
        const relay = x.down.relay(up, headers, x.method === 'HEAD');
        const done = await Promise.race([relay, expired]);
        if (done === 'timeout') {
          result.abort();
          if (!x.down.aborted) {
            x.flags.add('UT');
            x.down.reset();
          }
          return;
        }
        if (x.grpcStatus === null) x.grpcStatus = grpcStatusFrom(done);
      } catch (err) {
        if (!x.down.aborted) {
          // a client that stopped taking the response is Envoy's SI (stream idle timeout)
          x.flags.add(err instanceof DownstreamStalled ? 'SI' : 'UC');
          x.detail = (err as Error).message;
          x.down.reset();
        }
        result.abort();
      } finally {
        result.release();
      }
      return;
    }
  } finally {
    if (timer) clearTimeout(timer);
  }
};

/** The full request path, in order. */
export const REQUEST_STAGES: readonly Stage[] = [matchRoute, authorize, requireRoute, injectFault, respondLocally, splitTraffic, mirrorRequest, forward];
