import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pack, unpack } from 'msgpackr';
import { ConfigError, parseObjects, type KubeObject } from '../../../shared/config/objects.js';
import { ConsistentHashBalancer, createBalancer, hashKeyFor, LeastRequestBalancer, RandomBalancer, RoundRobinBalancer } from '../../../shared/routing/balancer.js';
import { faultDecision } from '../../../shared/routing/fault.js';
import { applyHeaderModifier, computeRedirect, computeRewrite, replacePrefix } from '../../../shared/routing/filters.js';
import { RequestLimiter } from '../../../shared/routing/limits.js';
import { normalizePath, pathPrefixMatches, RegexCache, selectRoute, type RouteRequest } from '../../../shared/routing/match.js';
import { healthSignal, OutlierTracker } from '../../../shared/routing/outlier.js';
import { DEFAULT_RETRY, retryDecision } from '../../../shared/routing/retry.js';
import { chance, pickBackend } from '../../../shared/routing/split.js';
import {
  buildRoutingConfig,
  parseDuration,
  parseRetryOn,
  translateDestinationRule,
  translateGRPCRoute,
  translateHTTPRoute,
  translateVirtualService,
  hostResolver,
  type ServiceRef,
} from '../../../shared/routing/translate.js';
import type { OutlierDetectionPolicy, RetryPolicy, RouteTable } from '../../../shared/routing/types.js';

const FILE = 'routes.yaml (document 1)';

function svc(name: string, namespace = 'default', ports = [80]): ServiceRef {
  return { key: `${namespace}/${name}`, name, namespace, hostname: `${name}.${namespace}.svc.cluster.local`, ports: ports.map((port) => ({ port })) };
}

const SERVICES = [svc('reviews'), svc('reviews-v1'), svc('reviews-v2'), svc('ratings', 'default', [80, 9080]), svc('other', 'shop')];

function obj(apiVersion: string, kind: string, name: string, spec: Record<string, unknown>, extra: { namespace?: string; creationTimestamp?: string } = {}): KubeObject {
  return { apiVersion, kind, metadata: { name, namespace: extra.namespace ?? 'default', ...(extra.creationTimestamp ? { creationTimestamp: extra.creationTimestamp } : {}) } as KubeObject['metadata'], spec, source: FILE };
}

const PARENT = [{ group: '', kind: 'Service', name: 'reviews' }];

function httpRoute(name: string, rules: unknown[], extra: { namespace?: string; creationTimestamp?: string; parentRefs?: unknown[] } = {}): KubeObject {
  return obj('gateway.networking.k8s.io/v1', 'HTTPRoute', name, { parentRefs: extra.parentRefs ?? PARENT, rules }, extra);
}

/** Builds the table of `reviews` from route objects. */
function table(...objects: KubeObject[]): RouteTable {
  const b = buildRoutingConfig(objects, SERVICES);
  assert.deepEqual(b.problems, []);
  return b.config.tables['default/reviews']!;
}

function req(path: string, more: Partial<RouteRequest> = {}): RouteRequest {
  return { method: 'GET', path, headers: {}, port: 80, sourceNamespace: 'default', ...more };
}

/** Which route/rule a request selects: "name/rule" or null. */
function chosen(t: RouteTable, r: RouteRequest): string | null {
  const s = selectRoute(t, r, new RegexCache());
  return s ? `${s.route.key.split('/')[1]}/${s.rule.name}` : null;
}

/** Asserts translation throws a ConfigError that names file, object and every fragment. */
function refuses(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    for (const f of [FILE, ...fragments]) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(f)}`);
    return true;
  });
}

describe('durations', () => {
  const cases: [string, number][] = [
    ['10s', 10_000],
    ['250ms', 250],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0s', 0],
    ['0', 0],
    ['100us', 0.1],
  ];
  for (const [text, ms] of cases) test(`${text} = ${ms} ms`, () => assert.equal(parseDuration(text, 'x', 'f'), ms));
  for (const bad of ['10', 'ten seconds', '1d', '', '-1s', 5]) {
    test(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parseDuration(bad, 'at', 'spec.timeout'), /at: spec\.timeout must be a duration/));
  }
});

describe('route precedence (Gateway API)', () => {
  const rule = (name: string, matches: unknown[]) => ({ name, matches, backendRefs: [{ name: 'reviews', port: 80 }] });

  test('exact path beats any prefix', () => {
    const t = table(httpRoute('r', [rule('prefix', [{ path: { type: 'PathPrefix', value: '/api/items' } }]), rule('exact', [{ path: { type: 'Exact', value: '/api/items' } }])]));
    assert.equal(chosen(t, req('/api/items')), 'r/exact');
    assert.equal(chosen(t, req('/api/items/1')), 'r/prefix');
  });

  test('longer prefix first', () => {
    const t = table(httpRoute('r', [rule('short', [{ path: { type: 'PathPrefix', value: '/api' } }]), rule('long', [{ path: { type: 'PathPrefix', value: '/api/v2' } }])]));
    assert.equal(chosen(t, req('/api/v2/x')), 'r/long');
    assert.equal(chosen(t, req('/api/v1/x')), 'r/short');
  });

  test('prefix beats regular expression (Istio ranks regex after prefix)', () => {
    const t = table(httpRoute('r', [rule('regex', [{ path: { type: 'RegularExpression', value: '/api/.*' } }]), rule('prefix', [{ path: { type: 'PathPrefix', value: '/' } }])]));
    assert.equal(chosen(t, req('/api/x')), 'r/prefix');
  });

  test('at equal paths, a method match wins', () => {
    const t = table(httpRoute('r', [rule('any', [{ path: { value: '/x' } }]), rule('post', [{ path: { value: '/x' }, method: 'POST' }])]));
    assert.equal(chosen(t, req('/x', { method: 'POST' })), 'r/post');
    assert.equal(chosen(t, req('/x')), 'r/any');
  });

  test('then more header matches', () => {
    const t = table(
      httpRoute('r', [
        rule('one', [{ headers: [{ name: 'a', value: '1' }] }]),
        rule('two', [{ headers: [{ name: 'a', value: '1' }, { name: 'B', value: '2' }] }]),
      ]),
    );
    assert.equal(chosen(t, req('/', { headers: { a: '1', b: '2' } })), 'r/two');
    assert.equal(chosen(t, req('/', { headers: { a: '1' } })), 'r/one');
  });

  test('then more query parameter matches', () => {
    const t = table(httpRoute('r', [rule('one', [{ queryParams: [{ name: 'a', value: '1' }] }]), rule('two', [{ queryParams: [{ name: 'a', value: '1' }, { name: 'b', value: '2' }] }])]));
    assert.equal(chosen(t, req('/?a=1&b=2')), 'r/two');
    assert.equal(chosen(t, req('/?b=2&a=1')), 'r/two');
    assert.equal(chosen(t, req('/?a=1')), 'r/one');
  });

  test('method beats headers, headers beat query parameters', () => {
    const t = table(
      httpRoute('r', [
        rule('query', [{ queryParams: [{ name: 'q', value: '1' }, { name: 'p', value: '1' }] }]),
        rule('header', [{ headers: [{ name: 'h', value: '1' }] }]),
        rule('method', [{ method: 'GET' }]),
      ]),
    );
    assert.equal(chosen(t, req('/?q=1&p=1', { headers: { h: '1' } })), 'r/method');
    assert.equal(chosen(t, req('/?q=1&p=1', { headers: { h: '1' }, method: 'PUT' })), 'r/header');
    assert.equal(chosen(t, req('/?q=1&p=1', { method: 'PUT' })), 'r/query');
  });

  test('ties across routes: the oldest route, then namespace/name', () => {
    const m = [rule('x', [{ path: { value: '/' } }])];
    const older = httpRoute('zeta', m, { creationTimestamp: '2024-01-01T00:00:00Z' });
    const newer = httpRoute('alpha', m, { creationTimestamp: '2024-06-01T00:00:00Z' });
    assert.equal(chosen(table(newer, older), req('/')), 'zeta/x');
    assert.equal(chosen(table(httpRoute('beta', m), httpRoute('alpha', m)), req('/')), 'alpha/x');
  });

  test('ties within a route: the first rule in list order', () => {
    const t = table(httpRoute('r', [rule('first', [{ path: { value: '/a' } }]), rule('second', [{ path: { value: '/a' } }])]));
    assert.equal(chosen(t, req('/a')), 'r/first');
  });

  test('a route without matches matches everything, as PathPrefix /', () => {
    const t = table(httpRoute('r', [{ backendRefs: [{ name: 'reviews', port: 80 }] }]));
    assert.equal(chosen(t, req('/anything')), 'r/rule 0');
  });

  test('no match: null (the waypoint answers 404)', () => {
    const t = table(httpRoute('r', [rule('api', [{ path: { value: '/api' } }])]));
    assert.equal(chosen(t, req('/other')), null);
  });

  test('a parentRef with a port attaches the route to that port only', () => {
    const t = buildRoutingConfig([httpRoute('r', [rule('p', [])], { parentRefs: [{ group: '', kind: 'Service', name: 'ratings', port: 9080 }] })], SERVICES).config.tables['default/ratings']!;
    assert.equal(chosen(t, req('/', { port: 9080 })), 'r/p');
    assert.equal(chosen(t, req('/', { port: 80 })), null);
  });

  test('consumer routes (other namespace) apply only to callers from that namespace', () => {
    const r = httpRoute('mine', [rule('c', [])], { namespace: 'shop', parentRefs: [{ group: '', kind: 'Service', name: 'reviews', namespace: 'default' }] });
    const t = table(r);
    assert.equal(chosen(t, req('/', { sourceNamespace: 'shop' })), 'mine/c');
    assert.equal(chosen(t, req('/', { sourceNamespace: 'default' })), null);
  });

  test('the table survives MessagePack unchanged', () => {
    const t = table(httpRoute('r', [rule('regex', [{ path: { type: 'RegularExpression', value: '/u/[0-9]+' }, headers: [{ type: 'RegularExpression', name: 'x', value: 'a.*' }] }])]));
    const copy = unpack(pack(t)) as RouteTable;
    assert.deepEqual(copy, t);
    assert.equal(chosen(copy, req('/u/42', { headers: { x: 'abc' } })), 'r/regex');
    assert.equal(chosen(copy, req('/u/4x2', { headers: { x: 'abc' } })), null);
  });
});

describe('match fields', () => {
  const one = (m: unknown): RouteTable => table(httpRoute('r', [{ name: 'm', matches: [m], backendRefs: [{ name: 'reviews', port: 80 }] }]));
  const cases: [string, unknown, RouteRequest, boolean][] = [
    ['PathPrefix is segment-wise: /api matches /api', { path: { value: '/api' } }, req('/api'), true],
    ['PathPrefix /api matches /api/', { path: { value: '/api' } }, req('/api/'), true],
    ['PathPrefix /api does not match /apix', { path: { value: '/api' } }, req('/apix'), false],
    ['PathPrefix trailing slash ignored: /api/ matches /api', { path: { value: '/api/' } }, req('/api'), true],
    ['PathPrefix ignores the query', { path: { value: '/api' } }, req('/api?x=/y'), true],
    ['Exact ignores the query', { path: { type: 'Exact', value: '/a' } }, req('/a?b=1'), true],
    ['Exact is case-sensitive', { path: { type: 'Exact', value: '/a' } }, req('/A'), false],
    ['regex matches the whole path', { path: { type: 'RegularExpression', value: '/a' } }, req('/a/b'), false],
    ['header names are case-insensitive', { headers: [{ name: 'X-Canary', value: 'true' }] }, req('/', { headers: { 'x-canary': 'true' } }), true],
    ['header values are exact', { headers: [{ name: 'x', value: 'true' }] }, req('/', { headers: { x: 'True' } }), false],
    ['missing header', { headers: [{ name: 'x', value: 'true' }] }, req('/'), false],
    ['header regex', { headers: [{ type: 'RegularExpression', name: 'user', value: 'jason|json' }] }, req('/', { headers: { user: 'json' } }), true],
    ['query parameter: the first value counts', { queryParams: [{ name: 'v', value: '1' }] }, req('/?v=2&v=1'), false],
    ['query parameter decoded', { queryParams: [{ name: 'q', value: 'a b' }] }, req('/?q=a%20b'), true],
    ['method', { method: 'DELETE' }, req('/', { method: 'DELETE' }), true],
    ['method miss', { method: 'DELETE' }, req('/'), false],
  ];
  for (const [name, m, r, expected] of cases) test(name, () => assert.equal(chosen(one(m), r) !== null, expected));
});

describe('GRPCRoute', () => {
  const grpc = (matches: unknown[]) =>
    obj('gateway.networking.k8s.io/v1', 'GRPCRoute', 'g', { parentRefs: PARENT, rules: [{ matches, backendRefs: [{ name: 'reviews', port: 80 }] }] });
  const t = (matches: unknown[]) => table(grpc(matches));
  const post = (path: string, headers: Record<string, string> = {}) => req(path, { method: 'POST', headers: { 'content-type': 'application/grpc', ...headers } });

  test('service and method: exact path', () => {
    assert.notEqual(chosen(t([{ method: { service: 'demo.Greeter', method: 'Hello' } }]), post('/demo.Greeter/Hello')), null);
    assert.equal(chosen(t([{ method: { service: 'demo.Greeter', method: 'Hello' } }]), post('/demo.Greeter/Bye')), null);
  });
  test('service only: every method of it', () => {
    assert.notEqual(chosen(t([{ method: { service: 'demo.Greeter' } }]), post('/demo.Greeter/Bye')), null);
    assert.equal(chosen(t([{ method: { service: 'demo.Greeter' } }]), post('/demo.GreeterX/Bye')), null);
  });
  test('method only: that method of any service', () => {
    assert.notEqual(chosen(t([{ method: { method: 'Hello' } }]), post('/a.B/Hello')), null);
    assert.equal(chosen(t([{ method: { method: 'Hello' } }]), post('/a.B/Hellos')), null);
  });
  test('regular expressions on service and method', () => {
    const table1 = t([{ method: { type: 'RegularExpression', service: 'demo\\..*', method: 'Get.*' } }]);
    assert.notEqual(chosen(table1, post('/demo.Store/GetItem')), null);
    assert.equal(chosen(table1, post('/demo.Store/PutItem')), null);
  });
  test('headers', () => {
    assert.notEqual(chosen(t([{ headers: [{ name: 'x-tenant', value: 'a' }] }]), post('/s.S/M', { 'x-tenant': 'a' })), null);
  });
  test('no matches: everything', () => assert.notEqual(chosen(t([]), post('/x.Y/Z')), null));
  test('refuses a match with neither service nor method', () => refuses(() => translateGRPCRoute(grpc([{ method: {} }])), 'GRPCRoute', 'spec.rules[0].matches[0].method', 'must set service, method or both'));
  test('refuses an invalid Exact service name', () => refuses(() => translateGRPCRoute(grpc([{ method: { service: 'not a name' } }])), 'spec.rules[0].matches[0].method.service'));
  test('refuses URLRewrite on a GRPCRoute', () =>
    refuses(
      () => translateGRPCRoute(obj('gateway.networking.k8s.io/v1', 'GRPCRoute', 'g', { parentRefs: PARENT, rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {} }] }] })),
      'spec.rules[0].filters[0].type',
    ));
});

describe('HTTPRoute translation', () => {
  test('filters, backends with weights and per-backend filters, timeouts, retry', () => {
    const r = translateHTTPRoute(
      httpRoute('r', [
        {
          name: 'main',
          matches: [{ path: { type: 'PathPrefix', value: '/api' } }],
          filters: [
            { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-A', value: '1' }], add: [{ name: 'x-b', value: '2' }], remove: ['X-C'] } },
            { type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'x-r', value: 'y' }] } },
            { type: 'URLRewrite', urlRewrite: { hostname: 'inside', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } },
            { type: 'RequestMirror', requestMirror: { backendRef: { name: 'reviews-v2', port: 80 }, percent: 25 } },
          ],
          backendRefs: [
            { name: 'reviews-v1', port: 80, weight: 90 },
            { name: 'reviews-v2', port: 80, weight: 10, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-canary', value: 'true' }] } }] },
          ],
          timeouts: { request: '10s', backendRequest: '2s' },
          retry: { codes: [503, 504], attempts: 3, backoff: '100ms' },
        },
      ]),
    );
    const rule = r.rules[0]!;
    assert.equal(rule.name, 'main');
    assert.deepEqual(rule.requestHeaders, { set: [{ name: 'x-a', value: '1' }], add: [{ name: 'x-b', value: '2' }], remove: ['x-c'] });
    assert.deepEqual(rule.responseHeaders, { set: [], add: [{ name: 'x-r', value: 'y' }], remove: [] });
    assert.deepEqual(rule.rewrite, { hostname: 'inside', path: { type: 'ReplacePrefixMatch', value: '/v2' } });
    assert.deepEqual(rule.mirrors, [{ backend: { service: 'default/reviews-v2', port: 80, subset: null }, percent: 25 }]);
    assert.deepEqual(
      rule.backends.map((b) => [b.service, b.weight, b.requestHeaders?.set[0]?.name ?? null]),
      [
        ['default/reviews-v1', 90, null],
        ['default/reviews-v2', 10, 'x-canary'],
      ],
    );
    assert.deepEqual(rule.timeouts, { requestMs: 10_000, backendRequestMs: 2000 });
    assert.deepEqual(rule.retry, { attempts: 3, perTryTimeoutMs: null, retryOn: ['connect-failure', 'refused-stream', 'reset', 'retriable-status-codes'], retriableStatusCodes: [503, 504], backoffBaseMs: 100 });
    assert.deepEqual(r.parents, [{ service: 'default/reviews', port: null }]);
  });

  test('defaults: no rules = one rule for "/" without backends; backend weight 1', () => {
    const r = translateHTTPRoute(obj('gateway.networking.k8s.io/v1', 'HTTPRoute', 'r', { parentRefs: PARENT }));
    assert.equal(r.rules.length, 1);
    assert.deepEqual(r.rules[0]!.matches[0]!.path, { type: 'PathPrefix', value: '/' });
    assert.equal(r.rules[0]!.backends.length, 0);
    assert.equal(translateHTTPRoute(httpRoute('r', [{ backendRefs: [{ name: 'x', port: 1 }] }])).rules[0]!.backends[0]!.weight, 1);
  });

  test('fraction mirrors', () => {
    const r = translateHTTPRoute(httpRoute('r', [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'x', port: 80 }, fraction: { numerator: 1, denominator: 4 } } }] }]));
    assert.equal(r.rules[0]!.mirrors[0]!.percent, 25);
  });

  test('a Gateway parent is not for waypoints: warned, not attached', () => {
    const r = translateHTTPRoute(httpRoute('r', [], { parentRefs: [{ name: 'ingress' }] }));
    assert.deepEqual(r.parents, []);
    assert.match(r.warnings[0]!, /not a Service: ignored by waypoints/);
  });

  const errors: [string, unknown[], string[]][] = [
    ['unknown rule field', [{ matchs: [] }], ['spec.rules[0]', 'unknown field "matchs"']],
    ['bad path type', [{ matches: [{ path: { type: 'Prefix', value: '/' } }] }], ['spec.rules[0].matches[0].path.type']],
    ['relative path', [{ matches: [{ path: { value: 'api' } }] }], ['spec.rules[0].matches[0].path.value', 'must start with "/"']],
    ['path with //', [{ matches: [{ path: { value: '/a//b' } }] }], ['spec.rules[0].matches[0].path.value']],
    ['bad regex', [{ matches: [{ path: { type: 'RegularExpression', value: '/(' } }] }], ['spec.rules[0].matches[0].path.value', 'not a valid regular expression']],
    ['bad method', [{ matches: [{ method: 'FETCH' }] }], ['spec.rules[0].matches[0].method']],
    ['duplicate header match', [{ matches: [{ headers: [{ name: 'A', value: '1' }, { name: 'a', value: '2' }] }] }], ['spec.rules[0].matches[0].headers[1].name', 'matched twice']],
    ['header value not a string', [{ matches: [{ headers: [{ name: 'a', value: 1 }] }] }], ['spec.rules[0].matches[0].headers[0].value']],
    ['bad header name', [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a b', value: '1' }] } }] }], ['requestHeaderModifier.set[0].name']],
    ['two RequestHeaderModifiers', [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: {} }, { type: 'RequestHeaderModifier', requestHeaderModifier: {} }] }], ['spec.rules[0].filters[1]', 'only one RequestHeaderModifier']],
    ['filter without its config', [{ filters: [{ type: 'RequestRedirect' }] }], ['spec.rules[0].filters[0].requestRedirect', 'must be set']],
    ['ExtensionRef', [{ filters: [{ type: 'ExtensionRef', extensionRef: {} }] }], ['spec.rules[0].filters[0].type', 'not supported']],
    ['redirect with backends', [{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 301 } }], backendRefs: [{ name: 'x', port: 80 }] }], ['spec.rules[0]', 'backendRefs with a RequestRedirect']],
    ['redirect and rewrite', [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'URLRewrite', urlRewrite: {} }] }], ['cannot combine RequestRedirect and URLRewrite']],
    ['bad redirect status', [{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 300 } }] }], ['requestRedirect.statusCode']],
    ['ReplacePrefixMatch without a PathPrefix match', [{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/b' } } }] }], ['exactly one match with a PathPrefix']],
    ['backend without port', [{ backendRefs: [{ name: 'reviews' }] }], ['spec.rules[0].backendRefs[0].port', 'required']],
    ['negative weight', [{ backendRefs: [{ name: 'reviews', port: 80, weight: -1 }] }], ['spec.rules[0].backendRefs[0].weight']],
    ['per-backend redirect', [{ backendRefs: [{ name: 'reviews', port: 80, filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }], ['backendRefs[0].filters[0].type']],
    ['backendRequest longer than request', [{ timeouts: { request: '1s', backendRequest: '2s' } }], ['spec.rules[0].timeouts.backendRequest', 'must not be longer than request']],
    ['bad timeout', [{ timeouts: { request: 'soon' } }], ['spec.rules[0].timeouts.request', 'must be a duration']],
    ['mirror with percent and fraction', [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'x', port: 1 }, percent: 1, fraction: { numerator: 1 } } }] }], ['sets both percent and fraction']],
    ['mirror to a non-Service', [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { group: 'x.io', kind: 'Thing', name: 'x', port: 1 } } }] }], ['requestMirror.backendRef', 'only Services']],
    ['retry code out of range', [{ retry: { codes: [200] } }], ['spec.rules[0].retry.codes[0]']],
  ];
  for (const [name, rules, fragments] of errors) {
    test(`refuses: ${name}`, () => refuses(() => translateHTTPRoute(httpRoute('bad', rules)), 'HTTPRoute "default/bad"', ...fragments));
  }
  test('refuses a wrong apiVersion', () => refuses(() => translateHTTPRoute(obj('networking.istio.io/v1', 'HTTPRoute', 'x', {})), 'is not gateway.networking.k8s.io'));
  test('refuses an unknown spec field', () => refuses(() => translateHTTPRoute(obj('gateway.networking.k8s.io/v1', 'HTTPRoute', 'x', { parentRef: [] })), 'spec', 'unknown field "parentRef"'));
});

describe('buildRoutingConfig', () => {
  test('a broken object is a problem; the others still build', () => {
    const good = httpRoute('good', [{ backendRefs: [{ name: 'reviews', port: 80 }] }]);
    const bad = httpRoute('bad', [{ matches: [{ method: 'FETCH' }] }]);
    const b = buildRoutingConfig([good, bad], SERVICES);
    assert.equal(b.problems.length, 1);
    assert.equal(b.problems[0]!.object, 'HTTPRoute default/bad');
    assert.ok(b.problems[0]!.error instanceof ConfigError);
    assert.equal(b.config.tables['default/reviews']!.routes.length, 1);
  });

  test('unknown parent Service or port: warned, not attached', () => {
    const b = buildRoutingConfig(
      [httpRoute('r', [], { parentRefs: [{ group: '', kind: 'Service', name: 'ghost' }] }), httpRoute('p', [], { parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 81 }] })],
      SERVICES,
    );
    assert.deepEqual(Object.keys(b.config.tables), []);
    assert.ok(b.warnings.some((w) => w.includes('parent Service default/ghost does not exist')));
    assert.ok(b.warnings.some((w) => w.includes('has no port 81')));
  });

  test('backends that cannot be used are marked invalid (their share gets a 500)', () => {
    const b = buildRoutingConfig(
      [
        httpRoute('r', [
          {
            backendRefs: [
              { name: 'ghost', port: 80 },
              { name: 'reviews', port: 81 },
              { name: 'other', namespace: 'shop', port: 80 },
              { group: 'networking.istio.io', kind: 'Hostname', name: 'example.com', port: 80 },
              { name: 'reviews-v1', port: 80 },
            ],
          },
        ]),
      ],
      SERVICES,
    );
    const backends = b.config.tables['default/reviews']!.routes[0]!.rules[0]!.backends;
    assert.match(backends[0]!.invalid!, /does not exist/);
    assert.match(backends[1]!.invalid!, /has no port 81/);
    assert.match(backends[2]!.invalid!, /no ReferenceGrant/);
    assert.match(backends[3]!.invalid!, /only Services/);
    assert.equal(backends[4]!.invalid, null);
  });

  test('a ReferenceGrant allows a cross-namespace backend', () => {
    const grant = obj('gateway.networking.k8s.io/v1beta1', 'ReferenceGrant', 'g', { from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'default' }], to: [{ group: '', kind: 'Service' }] }, { namespace: 'shop' });
    const b = buildRoutingConfig([grant, httpRoute('r', [{ backendRefs: [{ name: 'other', namespace: 'shop', port: 80 }] }])], SERVICES);
    assert.equal(b.config.tables['default/reviews']!.routes[0]!.rules[0]!.backends[0]!.invalid, null);
  });

  test('VirtualService alone routes in declared order', () => {
    const vs = obj('networking.istio.io/v1', 'VirtualService', 'reviews', {
      hosts: ['reviews'],
      http: [
        { name: 'jason', match: [{ headers: { 'end-user': { exact: 'jason' } } }], route: [{ destination: { host: 'reviews-v2' } }] },
        { name: 'prefix', match: [{ uri: { prefix: '/' } }], route: [{ destination: { host: 'reviews-v1' } }] },
      ],
    });
    const t = table(vs);
    assert.equal(chosen(t, req('/', { headers: { 'end-user': 'jason' } })), 'reviews/jason');
    assert.equal(chosen(t, req('/x')), 'reviews/prefix');
  });

  test('with Gateway API routes, a VirtualService only adds resilience (overlay), its routing is ignored with a warning', () => {
    const route = httpRoute('r', [{ backendRefs: [{ name: 'reviews-v1', port: 80 }] }]);
    const vs = obj('networking.istio.io/v1', 'VirtualService', 'reviews', {
      hosts: ['reviews.default.svc.cluster.local'],
      http: [{ match: [{ uri: { prefix: '/slow' } }], timeout: '3s', retries: { attempts: 4, retryOn: '5xx' }, route: [{ destination: { host: 'reviews-v2' } }] }],
    });
    const b = buildRoutingConfig([route, vs], SERVICES);
    const t = b.config.tables['default/reviews']!;
    assert.equal(t.routes.length, 1);
    assert.equal(t.overlays.length, 1);
    assert.equal(t.overlays[0]!.timeoutMs, 3000);
    assert.equal(t.overlays[0]!.retry!.attempts, 4);
    assert.ok(b.warnings.some((w) => w.includes('routing is ignored')));
  });

  test('two DestinationRules for one host: the oldest wins', () => {
    const a = obj('networking.istio.io/v1', 'DestinationRule', 'a', { host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } }, { creationTimestamp: '2024-02-01T00:00:00Z' });
    const c = obj('networking.istio.io/v1', 'DestinationRule', 'b', { host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }, { creationTimestamp: '2024-01-01T00:00:00Z' });
    const b = buildRoutingConfig([a, c], SERVICES);
    assert.equal(b.config.destinations['default/reviews']!.source, 'default/b');
  });

  test('the whole config survives MessagePack', () => {
    const b = buildRoutingConfig(parseObjects(EXAMPLE, 'x.yaml'), SERVICES);
    assert.deepEqual(b.problems, []);
    assert.deepEqual(unpack(pack(b.config)), b.config);
  });
});

const EXAMPLE = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - backendRefs: [{name: reviews-v1, port: 80, weight: 90}, {name: reviews-v2, port: 80, weight: 10}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5, http2MaxRequests: 100, maxRequestsPerConnection: 1}}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 15s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
`;

describe('VirtualService translation', () => {
  const resolve = hostResolver(SERVICES);
  const vs = (http: unknown[], more: Record<string, unknown> = {}) => obj('networking.istio.io/v1', 'VirtualService', 'v', { hosts: ['reviews'], http, ...more });

  test('retries, timeout, fault, mirror, headers, rewrite', () => {
    const t = translateVirtualService(
      vs([
        {
          match: [{ uri: { prefix: '/api' }, method: { exact: 'GET' }, headers: { 'X-User': { regex: 'a.*' } }, queryParams: { v: { exact: '1' } }, ignoreUriCase: true, port: 80, sourceNamespace: 'web' }],
          route: [{ destination: { host: 'reviews', subset: 'v2', port: { number: 80 } }, weight: 100, headers: { request: { set: { 'x-b': '1' } } } }],
          timeout: '5s',
          retries: { attempts: 3, perTryTimeout: '1s', retryOn: '5xx,gateway-error,connect-failure,reset,retriable-4xx,503' },
          fault: { delay: { fixedDelay: '2s', percentage: { value: 10 } }, abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 5.5 } } },
          mirror: { host: 'reviews-v2' },
          mirrorPercentage: { value: 20 },
          headers: { response: { add: { 'x-r': '1' }, remove: ['server'] } },
          rewrite: { uri: '/v2', authority: 'inner' },
        },
      ]),
      resolve,
    );
    assert.deepEqual(t.services, ['default/reviews']);
    const r = t.rules[0]!.rule;
    assert.equal(r.matches[0]!.summary, 'path prefix /api, method GET, header x-user~a.*, query v=1, port 80, from namespace web');
    assert.equal(r.matches[0]!.ignoreCase, true);
    assert.deepEqual(r.retry, { attempts: 3, perTryTimeoutMs: 1000, retryOn: ['5xx', 'gateway-error', 'connect-failure', 'reset', 'retriable-4xx', 'retriable-status-codes'], retriableStatusCodes: [503], backoffBaseMs: 25 });
    assert.deepEqual(r.timeouts, { requestMs: 5000, backendRequestMs: null });
    assert.deepEqual(r.fault, { delay: { fixedDelayMs: 2000, percent: 10 }, abort: { httpStatus: null, grpcStatus: 14, percent: 5.5 } });
    assert.deepEqual(r.mirrors, [{ backend: { service: 'default/reviews-v2', port: null, subset: null }, percent: 20 }]);
    assert.deepEqual(r.backends[0]!.subset, 'v2');
    assert.deepEqual(r.responseHeaders, { set: [], add: [{ name: 'x-r', value: '1' }], remove: ['server'] });
    assert.deepEqual(r.rewrite, { hostname: 'inner', path: { type: 'ReplacePrefixMatch', value: '/v2' } });
  });

  test('retries without retryOn take Istio\'s default conditions', () => {
    const r = translateVirtualService(vs([{ route: [{ destination: { host: 'reviews' } }], retries: { attempts: 1 } }]), resolve).rules[0]!.rule;
    assert.deepEqual(r.retry!.retryOn, ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes']);
    assert.deepEqual(r.retry!.retriableStatusCodes, [503]);
  });

  test('weights: one destination may omit it; an unknown host is an invalid backend', () => {
    const r = translateVirtualService(vs([{ route: [{ destination: { host: 'reviews' } }] }, { route: [{ destination: { host: 'nowhere.example.com' } }] }]), resolve);
    assert.equal(r.rules[0]!.rule.backends[0]!.weight, 100);
    assert.match(r.rules[1]!.rule.backends[0]!.invalid!, /not a known Service/);
  });

  test('a VirtualService for gateways only is not for waypoints', () => {
    const r = translateVirtualService(vs([{ route: [{ destination: { host: 'reviews' } }] }], { gateways: ['istio-system/ingress'] }), resolve);
    assert.deepEqual(r.rules, []);
  });

  test('redirect defaults to 301 (Istio)', () => {
    const r = translateVirtualService(vs([{ redirect: { uri: '/new', authority: 'x.example' } }]), resolve).rules[0]!.rule;
    assert.deepEqual(r.redirect, { scheme: null, hostname: 'x.example', path: { type: 'ReplaceFullPath', value: '/new' }, port: null, statusCode: 301 });
  });

  test('retryOn words', () => {
    assert.deepEqual(parseRetryOn('5xx, reset ,429', 'a', 'p'), { retryOn: ['5xx', 'reset', 'retriable-status-codes'], codes: [429] });
    assert.throws(() => parseRetryOn('5xx,sometimes', 'at', 'spec.http[0].retries.retryOn'), /unknown retry condition "sometimes"/);
  });

  const errors: [string, unknown[], string[]][] = [
    ['no route, redirect or directResponse', [{ timeout: '1s' }], ['spec.http[0]', 'exactly one of route, redirect or directResponse']],
    ['uri with two kinds', [{ match: [{ uri: { exact: '/a', prefix: '/a' } }], route: [{ destination: { host: 'reviews' } }] }], ['spec.http[0].match[0].uri', 'exactly one of exact, prefix or regex']],
    ['sourceLabels', [{ match: [{ sourceLabels: { app: 'x' } }], route: [{ destination: { host: 'reviews' } }] }], ['spec.http[0].match[0].sourceLabels', 'not supported']],
    ['bad retryOn', [{ route: [{ destination: { host: 'reviews' } }], retries: { retryOn: 'bogus' } }], ['spec.http[0].retries.retryOn', 'unknown retry condition']],
    ['abort with both statuses', [{ route: [{ destination: { host: 'reviews' } }], fault: { abort: { httpStatus: 500, grpcStatus: 'INTERNAL' } } }], ['spec.http[0].fault.abort', 'exactly one of httpStatus or grpcStatus']],
    ['bad grpcStatus', [{ route: [{ destination: { host: 'reviews' } }], fault: { abort: { grpcStatus: 'SLOW' } } }], ['spec.http[0].fault.abort.grpcStatus']],
    ['percentage above 100', [{ route: [{ destination: { host: 'reviews' } }], fault: { delay: { fixedDelay: '1s', percentage: { value: 120 } } } }], ['spec.http[0].fault.delay.percentage.value']],
    ['empty fault', [{ route: [{ destination: { host: 'reviews' } }], fault: {} }], ['spec.http[0].fault', 'must set delay or abort']],
    ['delegate', [{ delegate: { name: 'x' } }], ['spec.http[0].delegate', 'not supported']],
    ['bad perTryTimeout', [{ route: [{ destination: { host: 'reviews' } }], retries: { perTryTimeout: 'fast' } }], ['spec.http[0].retries.perTryTimeout']],
    ['unknown http field', [{ route: [{ destination: { host: 'reviews' } }], retry: {} }], ['spec.http[0]', 'unknown field "retry"']],
  ];
  for (const [name, http, fragments] of errors) {
    test(`refuses: ${name}`, () => refuses(() => translateVirtualService(vs(http), resolve), 'VirtualService "default/v"', ...fragments));
  }
});

describe('DestinationRule translation', () => {
  const resolve = hostResolver(SERVICES);
  const dr = (spec: Record<string, unknown>) => obj('networking.istio.io/v1', 'DestinationRule', 'd', { host: 'reviews', ...spec });

  test('traffic policy, port-level settings and subsets', () => {
    const { policy } = translateDestinationRule(parseObjects(EXAMPLE, FILE)[1]!, resolve);
    assert.deepEqual(policy!.trafficPolicy, {
      loadBalancer: { type: 'CONSISTENT_HASH', hashOn: { header: 'x-user' } },
      connectionPool: { maxConnections: 10, http1MaxPendingRequests: 5, http2MaxRequests: 100, maxRequestsPerConnection: 1, idleTimeoutMs: null, connectTimeoutMs: null },
      outlierDetection: { consecutive5xxErrors: 7, consecutiveGatewayErrors: null, intervalMs: 5000, baseEjectionTimeMs: 15000, maxEjectionPercent: 50 },
    });
    assert.deepEqual(policy!.subsets, [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: null }]);
    const pl = translateDestinationRule(dr({ trafficPolicy: { portLevelSettings: [{ port: { number: 80 }, loadBalancer: { simple: 'LEAST_CONN' } }] } }), resolve).policy!;
    assert.deepEqual(pl.portLevel, [{ port: 80, policy: { loadBalancer: { type: 'LEAST_REQUEST' }, connectionPool: null, outlierDetection: null } }]);
  });

  test('outlier detection defaults are Istio\'s', () => {
    const p = translateDestinationRule(dr({ trafficPolicy: { outlierDetection: {} } }), resolve).policy!;
    assert.deepEqual(p.trafficPolicy.outlierDetection, { consecutive5xxErrors: 5, consecutiveGatewayErrors: null, intervalMs: 10000, baseEjectionTimeMs: 30000, maxEjectionPercent: 10 });
  });

  test('load balancer choices', () => {
    const lb = (loadBalancer: unknown) => translateDestinationRule(dr({ trafficPolicy: { loadBalancer } }), resolve).policy!.trafficPolicy.loadBalancer;
    assert.deepEqual(lb({ simple: 'ROUND_ROBIN' }), { type: 'ROUND_ROBIN' });
    assert.deepEqual(lb({ simple: 'RANDOM' }), { type: 'RANDOM' });
    assert.deepEqual(lb({ simple: 'LEAST_REQUEST' }), { type: 'LEAST_REQUEST' });
    assert.deepEqual(lb({ consistentHash: { useSourceIp: true } }), { type: 'CONSISTENT_HASH', hashOn: { sourceIp: true } });
    assert.deepEqual(lb({ consistentHash: { httpQueryParameterName: 'u' } }), { type: 'CONSISTENT_HASH', hashOn: { queryParameter: 'u' } });
  });

  test('a host that is not a Service: no policy, a warning', () => {
    const t = translateDestinationRule(obj('networking.istio.io/v1', 'DestinationRule', 'd', { host: 'api.example.com' }), resolve);
    assert.equal(t.policy, null);
    assert.match(t.warnings[0]!, /not a Service/);
  });

  const errors: [string, Record<string, unknown>, string[]][] = [
    ['unknown simple', { trafficPolicy: { loadBalancer: { simple: 'FASTEST' } } }, ['spec.trafficPolicy.loadBalancer.simple']],
    ['simple and consistentHash', { trafficPolicy: { loadBalancer: { simple: 'RANDOM', consistentHash: { useSourceIp: true } } } }, ['only one of simple or consistentHash']],
    ['httpCookie', { trafficPolicy: { loadBalancer: { consistentHash: { httpCookie: { name: 'c' } } } } }, ['consistentHash.httpCookie', 'not supported']],
    ['negative maxConnections', { trafficPolicy: { connectionPool: { tcp: { maxConnections: -1 } } } }, ['spec.trafficPolicy.connectionPool.tcp.maxConnections']],
    ['maxEjectionPercent above 100', { trafficPolicy: { outlierDetection: { maxEjectionPercent: 150 } } }, ['outlierDetection.maxEjectionPercent']],
    ['bad baseEjectionTime', { trafficPolicy: { outlierDetection: { baseEjectionTime: '30' } } }, ['outlierDetection.baseEjectionTime', 'must be a duration']],
    ['deprecated consecutiveErrors', { trafficPolicy: { outlierDetection: { consecutiveErrors: 5 } } }, ['consecutiveErrors', 'deprecated']],
    ['duplicate subset', { subsets: [{ name: 'v1' }, { name: 'v1' }] }, ['spec.subsets[1].name', 'defined twice']],
    ['subset label not a string', { subsets: [{ name: 'v1', labels: { version: 1 } }] }, ['spec.subsets[0].labels.version']],
  ];
  for (const [name, spec, fragments] of errors) {
    test(`refuses: ${name}`, () => refuses(() => translateDestinationRule(dr(spec), resolve), 'DestinationRule "default/d"', ...fragments));
  }
});

describe('header modifiers, redirects, rewrites', () => {
  test('set replaces, add appends, remove drops', () => {
    const h = applyHeaderModifier({ a: '1', b: '2', c: '3' }, { set: [{ name: 'a', value: 'x' }], add: [{ name: 'b', value: 'y' }, { name: 'd', value: 'z' }], remove: ['c'] });
    assert.deepEqual(h, { a: 'x', b: '2,y', d: 'z' });
  });

  const prefix = { type: 'PathPrefix' as const, value: '/foo' };
  const cases: [string, string, string][] = [
    ['/foo/bar', '/baz', '/baz/bar'],
    ['/foo', '/baz', '/baz'],
    ['/foo/', '/baz', '/baz/'],
    ['/foo/bar', '/', '/bar'],
    ['/foo', '/', '/'],
    ['/foo/bar', '/baz/', '/baz/bar'],
  ];
  for (const [path, replacement, expected] of cases) test(`ReplacePrefixMatch ${path} (prefix /foo → ${replacement}) = ${expected}`, () => assert.equal(replacePrefix(path, prefix, replacement), expected));
  test('ReplacePrefixMatch with prefix "/"', () => assert.equal(replacePrefix('/x/y', { type: 'PathPrefix', value: '/' }, '/api'), '/api/x/y'));
  test('Istio prefix rewrite replaces characters', () => assert.equal(replacePrefix('/foobar', { type: 'Prefix', value: '/foo' }, '/x'), '/xbar'));
  test('rewrite of an exact match replaces the whole path', () => assert.equal(replacePrefix('/a', { type: 'Exact', value: '/a' }, '/b'), '/b'));

  const url = { scheme: 'http' as const, host: 'reviews', port: 9080, path: '/foo/bar?x=1' };
  test('redirect keeps scheme, host, port and query by default', () => {
    assert.deepEqual(computeRedirect({ scheme: null, hostname: null, path: null, port: null, statusCode: 302 }, url, null), { status: 302, location: 'http://reviews:9080/foo/bar?x=1' });
  });
  test('redirect to https drops the well-known port', () => {
    assert.equal(computeRedirect({ scheme: 'https', hostname: 'example.com', path: null, port: null, statusCode: 301 }, url, null).location, 'https://example.com/foo/bar?x=1');
  });
  test('redirect with a port and a prefix replacement', () => {
    assert.equal(computeRedirect({ scheme: null, hostname: null, path: { type: 'ReplacePrefixMatch', value: '/v2' }, port: 8080, statusCode: 308 }, url, prefix).location, 'http://reviews:8080/v2/bar?x=1');
  });
  test('redirect to port 80 of http omits it', () => {
    assert.equal(computeRedirect({ scheme: null, hostname: null, path: null, port: 80, statusCode: 302 }, url, null).location, 'http://reviews/foo/bar?x=1');
  });
  test('rewrite: path and host', () => {
    assert.deepEqual(computeRewrite({ hostname: 'in', path: { type: 'ReplaceFullPath', value: '/all' } }, '/foo/bar?x=1', prefix), { path: '/all?x=1', host: 'in' });
    assert.deepEqual(computeRewrite(null, '/a', null), { path: '/a', host: null });
  });

  const normal: [string, string][] = [
    ['/a/b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/../a', '/a'],
    ['/a/b/..', '/a/'],
    ['/public/../admin?x=/..', '/admin?x=/..'],
  ];
  for (const [p, expected] of normal) test(`normalizePath ${p} = ${expected}`, () => assert.equal(normalizePath(p), expected));
  test('pathPrefixMatches', () => {
    assert.ok(pathPrefixMatches('/', '/anything'));
    assert.ok(!pathPrefixMatches('/a', '/ab'));
  });
});

describe('traffic split', () => {
  const backends = [
    { name: 'v1', weight: 90 },
    { name: 'v2', weight: 10 },
  ];
  test('walks the range by weight', () => {
    assert.equal(pickBackend(backends, 0)!.name, 'v1');
    assert.equal(pickBackend(backends, 0.8999)!.name, 'v1');
    assert.equal(pickBackend(backends, 0.9)!.name, 'v2');
    assert.equal(pickBackend(backends, 0.99999)!.name, 'v2');
  });
  test('exact proportions over an even sweep', () => {
    let v2 = 0;
    for (let i = 0; i < 1000; i++) if (pickBackend(backends, i / 1000)!.name === 'v2') v2++;
    assert.equal(v2, 100);
  });
  test('zero weights are never picked; all zero is null', () => {
    assert.equal(pickBackend([{ weight: 0, n: 'a' }, { weight: 1, n: 'b' }], 0)!.n, 'b');
    assert.equal(pickBackend([{ weight: 0 }], 0.5), null);
    assert.equal(pickBackend([], 0.5), null);
  });
  test('chance', () => {
    assert.equal(chance(100, 0.9999), true);
    assert.equal(chance(0, 0), false);
    assert.equal(chance(50, 0.49), true);
    assert.equal(chance(50, 0.5), false);
  });
});

describe('retry decisions', () => {
  const policy: RetryPolicy = { attempts: 2, perTryTimeoutMs: null, retryOn: ['5xx', 'connect-failure'], retriableStatusCodes: [], backoffBaseMs: 25 };
  const r = (p: RetryPolicy, attempt: number, outcome: Parameters<typeof retryDecision>[2]) => retryDecision(p, attempt, outcome, 0.5).retry;
  const resp = (status: number, grpcStatus: number | null = null) => ({ kind: 'response' as const, status, grpcStatus });

  test('5xx retried while attempts remain', () => {
    assert.equal(r(policy, 1, resp(500)), true);
    assert.equal(r(policy, 2, resp(503)), true);
    assert.equal(r(policy, 3, resp(503)), false);
  });
  test('success and 4xx are not retried', () => {
    assert.equal(r(policy, 1, resp(200)), false);
    assert.equal(r(policy, 1, resp(404)), false);
  });
  test('5xx covers connect failures, resets and per-try timeouts', () => {
    const only5xx = { ...policy, retryOn: ['5xx' as const] };
    assert.equal(r(only5xx, 1, { kind: 'connect-failure' }), true);
    assert.equal(r(only5xx, 1, { kind: 'reset' }), true);
    assert.equal(r(only5xx, 1, { kind: 'timeout' }), true);
  });
  test('gateway-error: 502, 503, 504 only', () => {
    const gw = { ...policy, retryOn: ['gateway-error' as const] };
    assert.equal(r(gw, 1, resp(502)), true);
    assert.equal(r(gw, 1, resp(504)), true);
    assert.equal(r(gw, 1, resp(500)), false);
    assert.equal(r(gw, 1, { kind: 'timeout' }), true);
  });
  test('connect-failure alone does not retry responses or resets', () => {
    const cf = { ...policy, retryOn: ['connect-failure' as const] };
    assert.equal(r(cf, 1, { kind: 'connect-failure' }), true);
    assert.equal(r(cf, 1, resp(503)), false);
    assert.equal(r(cf, 1, { kind: 'reset' }), false);
  });
  test('reset', () => assert.equal(r({ ...policy, retryOn: ['reset'] }, 1, { kind: 'reset' }), true));
  test('retriable-4xx is 409', () => {
    const p = { ...policy, retryOn: ['retriable-4xx' as const] };
    assert.equal(r(p, 1, resp(409)), true);
    assert.equal(r(p, 1, resp(400)), false);
  });
  test('retriable-status-codes', () => {
    const p = { ...policy, retryOn: ['retriable-status-codes' as const], retriableStatusCodes: [429] };
    assert.equal(r(p, 1, resp(429)), true);
    assert.equal(r(p, 1, resp(503)), false);
  });
  test('gRPC conditions read grpc-status of a trailers-only response', () => {
    const p = { ...policy, retryOn: ['unavailable' as const, 'resource-exhausted' as const] };
    assert.equal(r(p, 1, resp(200, 14)), true);
    assert.equal(r(p, 1, resp(200, 8)), true);
    assert.equal(r(p, 1, resp(200, 5)), false);
    assert.equal(r(p, 1, resp(200, 0)), false);
  });
  test('overflow is never retried', () => assert.equal(r({ ...policy, retryOn: ['5xx', 'reset', 'connect-failure', 'gateway-error'] }, 1, { kind: 'overflow' }), false));
  test('the default policy: 2 retries on connect failure and 503', () => {
    assert.equal(r(DEFAULT_RETRY, 1, resp(503)), true);
    assert.equal(r(DEFAULT_RETRY, 1, resp(500)), false);
    assert.equal(r(DEFAULT_RETRY, 2, { kind: 'connect-failure' }), true);
    assert.equal(r(DEFAULT_RETRY, 3, { kind: 'connect-failure' }), false);
  });
  test('back-off: fully jittered, exponential, capped at 10 × base', () => {
    assert.equal(retryDecision(policy, 1, resp(500), 0.999).backoffMs, 24);
    assert.equal(retryDecision(policy, 2, resp(500), 0.999).backoffMs, 74);
    assert.equal(retryDecision({ ...policy, attempts: 10 }, 8, resp(500), 0.999).backoffMs, 249);
    assert.equal(retryDecision(policy, 1, resp(500), 0).backoffMs, 0);
  });
  test('the reason says why', () => {
    assert.match(retryDecision(policy, 3, resp(500), 0).reason, /retry limit 2 reached/);
    assert.match(retryDecision(policy, 1, resp(404), 0).reason, /status 404 is not in retryOn/);
  });
});

describe('fault decisions', () => {
  const seq = (...v: number[]) => {
    let i = 0;
    return () => v[i++] ?? 0;
  };
  test('no fault: nothing', () => assert.deepEqual(faultDecision(null, Math.random), { delayMs: 0, abort: null }));
  test('delay and abort each draw their own chance', () => {
    const f = { delay: { fixedDelayMs: 100, percent: 50 }, abort: { httpStatus: 503, grpcStatus: null, percent: 10 } };
    assert.deepEqual(faultDecision(f, seq(0.4, 0.05)), { delayMs: 100, abort: { httpStatus: 503, grpcStatus: null } });
    assert.deepEqual(faultDecision(f, seq(0.6, 0.05)), { delayMs: 0, abort: { httpStatus: 503, grpcStatus: null } });
    assert.deepEqual(faultDecision(f, seq(0.4, 0.5)), { delayMs: 100, abort: null });
  });
  test('100% always, 0% never', () => {
    assert.equal(faultDecision({ delay: null, abort: { httpStatus: null, grpcStatus: 14, percent: 100 } }, seq(0.9999)).abort?.grpcStatus, 14);
    assert.equal(faultDecision({ delay: null, abort: { httpStatus: 500, grpcStatus: null, percent: 0 } }, seq(0)).abort, null);
  });
});

describe('outlier detection', () => {
  const policy: OutlierDetectionPolicy = { consecutive5xxErrors: 3, consecutiveGatewayErrors: null, intervalMs: 1000, baseEjectionTimeMs: 10_000, maxEjectionPercent: 50 };

  test('three consecutive 5xx eject for baseEjectionTime; back after it', () => {
    const t = new OutlierTracker(policy);
    assert.equal(t.record('a', '5xx', 0, 4), null);
    assert.equal(t.record('a', '5xx', 1, 4), null);
    const e = t.record('a', '5xx', 2, 4);
    assert.equal(e?.until, 10_002);
    assert.equal(t.isEjected('a', 10_001), true);
    assert.equal(t.isEjected('a', 10_002), false);
  });

  test('a success resets the count', () => {
    const t = new OutlierTracker(policy);
    t.record('a', '5xx', 0, 4);
    t.record('a', '5xx', 0, 4);
    t.record('a', 'success', 0, 4);
    assert.equal(t.record('a', '5xx', 0, 4), null);
    assert.equal(t.isEjected('a', 1), false);
  });

  test('ejection time grows with the number of ejections, and decays while healthy', () => {
    const t = new OutlierTracker(policy);
    const eject = (now: number) => {
      t.record('a', '5xx', now, 4);
      t.record('a', '5xx', now, 4);
      return t.record('a', '5xx', now, 4);
    };
    assert.equal(eject(0)?.until, 10_000);
    assert.equal(t.isEjected('a', 10_000), false);
    assert.equal(eject(10_000)?.until, 30_000, 'second ejection: 2 × base');
    assert.equal(t.isEjected('a', 30_000), false);
    // 2 intervals back in service take the multiplier from 2 down to 0, so the next is 1 × base
    assert.equal(eject(32_000)?.until, 42_000);
  });

  test('never more than maxEjectionPercent at once', () => {
    const t = new OutlierTracker(policy);
    for (const k of ['a', 'b', 'c']) for (let i = 0; i < 3; i++) t.record(k, '5xx', 0, 4);
    assert.equal(t.ejectedCount(0), 2);
    assert.equal(t.isEjected('c', 0), false);
  });

  test('with one endpoint and 50%, nothing is ejected', () => {
    const t = new OutlierTracker(policy);
    for (let i = 0; i < 5; i++) t.record('a', '5xx', 0, 1);
    assert.equal(t.isEjected('a', 0), false);
  });

  test('gateway errors: counted as 5xx, and by their own detector', () => {
    const t = new OutlierTracker({ ...policy, consecutive5xxErrors: null, consecutiveGatewayErrors: 2 });
    t.record('a', '5xx', 0, 4);
    t.record('a', 'gateway-error', 0, 4);
    assert.equal(t.isEjected('a', 0), false);
    t.record('a', 'gateway-error', 0, 4);
    assert.equal(t.isEjected('a', 0), true);
  });

  test('health signals from attempt outcomes', () => {
    assert.equal(healthSignal({ kind: 'response', status: 500, grpcStatus: null }), '5xx');
    assert.equal(healthSignal({ kind: 'response', status: 503, grpcStatus: null }), 'gateway-error');
    assert.equal(healthSignal({ kind: 'response', status: 404, grpcStatus: null }), 'success');
    assert.equal(healthSignal({ kind: 'connect-failure' }), 'gateway-error');
    assert.equal(healthSignal({ kind: 'overflow' }), 'ignore');
  });

  test('available(): ejected endpoints left out; all of them when all are out (panic)', () => {
    const t = new OutlierTracker({ ...policy, maxEjectionPercent: 100 });
    const eps = [{ key: 'a' }, { key: 'b' }];
    for (let i = 0; i < 3; i++) t.record('a', '5xx', 0, 2);
    assert.deepEqual(t.available(eps, (e) => e.key, 1), [{ key: 'b' }]);
    for (let i = 0; i < 3; i++) t.record('b', '5xx', 0, 2);
    assert.deepEqual(t.available(eps, (e) => e.key, 1), eps);
  });
});

describe('load balancers', () => {
  const eps = [{ key: 'a' }, { key: 'b' }, { key: 'c' }];
  const cx = (over: Partial<{ random: () => number; active: (k: string) => number; hashKey: string | null }> = {}) => ({ random: Math.random, active: () => 0, hashKey: null, ...over });

  test('round robin cycles', () => {
    const lb = new RoundRobinBalancer();
    assert.deepEqual([1, 2, 3, 4].map(() => lb.pick(eps)!.key), ['a', 'b', 'c', 'a']);
  });
  test('random follows the draw', () => {
    const lb = new RandomBalancer();
    assert.equal(lb.pick(eps, cx({ random: () => 0 }))!.key, 'a');
    assert.equal(lb.pick(eps, cx({ random: () => 0.99 }))!.key, 'c');
  });
  test('least request picks the less busy of two', () => {
    const lb = new LeastRequestBalancer();
    const draws = [0, 0.5]; // a, then c (second index skips the first)
    let i = 0;
    const pick = lb.pick(eps, cx({ random: () => draws[i++]!, active: (k) => (k === 'a' ? 5 : 1) }));
    assert.equal(pick!.key, 'c');
  });
  test('least request never picks the busiest when it can choose', () => {
    const lb = new LeastRequestBalancer();
    const two = [{ key: 'busy' }, { key: 'idle' }];
    for (let i = 0; i < 50; i++) assert.equal(lb.pick(two, cx({ active: (k) => (k === 'busy' ? 3 : 0) }))!.key, 'idle');
  });
  test('consistent hash: same key, same endpoint; few keys move when one endpoint goes', () => {
    const lb = new ConsistentHashBalancer();
    const five = ['a', 'b', 'c', 'd', 'e'].map((key) => ({ key }));
    const before = new Map<string, string>();
    for (let i = 0; i < 500; i++) before.set(`user-${i}`, lb.pick(five, cx({ hashKey: `user-${i}` }))!.key);
    for (let i = 0; i < 500; i++) assert.equal(lb.pick(five, cx({ hashKey: `user-${i}` }))!.key, before.get(`user-${i}`));
    const four = five.filter((e) => e.key !== 'c');
    let moved = 0;
    for (let i = 0; i < 500; i++) {
      const k = lb.pick(four, cx({ hashKey: `user-${i}` }))!.key;
      if (before.get(`user-${i}`) !== 'c' && k !== before.get(`user-${i}`)) moved++;
    }
    assert.equal(moved, 0, 'keys of the remaining endpoints stay where they were');
    const counts = new Map<string, number>();
    for (const v of before.values()) counts.set(v, (counts.get(v) ?? 0) + 1);
    for (const n of counts.values()) assert.ok(n > 40, `spread: ${[...counts.values()].join(',')}`);
  });
  test('hash keys by header, query parameter or source IP', () => {
    const ch = (hashOn: unknown) => ({ type: 'CONSISTENT_HASH' as const, hashOn }) as Parameters<typeof hashKeyFor>[0];
    const r = { headers: { 'x-user': 'u1' }, query: 'u=q1', sourceIp: '10.0.0.1' };
    assert.equal(hashKeyFor(ch({ header: 'x-user' }), r), 'u1');
    assert.equal(hashKeyFor(ch({ queryParameter: 'u' }), r), 'q1');
    assert.equal(hashKeyFor(ch({ sourceIp: true }), r), '10.0.0.1');
    assert.equal(hashKeyFor({ type: 'ROUND_ROBIN' }, r), null);
  });
  test('default balancer is LEAST_REQUEST', () => assert.equal(createBalancer(null).name, 'LEAST_REQUEST'));
});

describe('connection pool limits', () => {
  const limits = { maxConnections: 1, http1MaxPendingRequests: 1, http2MaxRequests: null, maxRequestsPerConnection: null, idleTimeoutMs: null, connectTimeoutMs: null };
  test('HTTP/1.1: one in flight, one waiting, the next refused; release grants the waiting one', () => {
    const l = new RequestLimiter(limits);
    let granted = 0;
    assert.equal(l.acquire(true, () => granted++).admission, 'granted');
    assert.equal(l.acquire(true, () => granted++).admission, 'queued');
    assert.equal(l.acquire(true, () => granted++).admission, 'overflow');
    l.release();
    assert.equal(granted, 1);
    assert.equal(l.inFlight, 1);
    assert.equal(l.pending, 0);
  });
  test('a cancelled waiter is skipped', () => {
    const l = new RequestLimiter(limits);
    l.acquire(true, () => undefined);
    let granted = false;
    l.acquire(true, () => (granted = true)).waiter!.cancel();
    l.release();
    assert.equal(granted, false);
    assert.equal(l.inFlight, 0);
  });
  test('http2MaxRequests bounds requests in flight', () => {
    const l = new RequestLimiter({ ...limits, maxConnections: null, http2MaxRequests: 2 });
    assert.equal(l.acquire(false, () => undefined).admission, 'granted');
    assert.equal(l.acquire(false, () => undefined).admission, 'granted');
    assert.equal(l.acquire(false, () => undefined).admission, 'overflow');
  });
  test('HTTP/2 upstreams are not bound by maxConnections', () => {
    const l = new RequestLimiter(limits);
    for (let i = 0; i < 5; i++) assert.equal(l.acquire(false, () => undefined).admission, 'granted');
  });
  test('no limits: always granted', () => {
    const l = new RequestLimiter(null);
    for (let i = 0; i < 100; i++) assert.equal(l.acquire(true, () => undefined).admission, 'granted');
  });
});
