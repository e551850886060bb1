import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pack, unpack } from 'msgpackr';
import { ConfigError, type KubeObject } from '../../../shared/config/objects.js';
import { evaluateL7, L7PolicyIndex, translateL7AuthorizationPolicy, type L7AuthorizationPolicy, type L7RequestAttributes, type L7Target } from '../../../shared/policy/l7.js';

const FILE = 'policies.yaml (document 1)';
const WEB = 'spiffe://cluster.local/ns/frontend/sa/web';
const SERVICE_REF = [{ group: '', kind: 'Service', name: 'reviews' }];

function object(spec: Record<string, unknown>, opts: { name?: string; namespace?: string; annotations?: Record<string, string> } = {}): KubeObject {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: opts.name ?? 'p', namespace: opts.namespace ?? 'shop', ...(opts.annotations ? { annotations: opts.annotations } : {}) },
    spec,
    source: FILE,
  };
}

function policy(spec: Record<string, unknown>, opts: Parameters<typeof object>[1] = {}): L7AuthorizationPolicy {
  const { policy: p } = translateL7AuthorizationPolicy(object({ targetRefs: SERVICE_REF, ...spec }, opts));
  assert.ok(p, 'expected a waypoint policy');
  return p;
}

function attrs(a: Partial<L7RequestAttributes> = {}): L7RequestAttributes {
  return { method: 'GET', path: '/api/items?x=1', host: 'reviews.shop.svc.cluster.local:9080', port: 9080, srcIp: '10.0.1.5', srcIdentity: WEB, dstIp: '10.96.0.10', remoteIp: null, headers: { 'x-tenant': 'acme' }, ...a };
}

/** Whether a single ALLOW rule allows the request. */
function allows(rule: Record<string, unknown>, a: Partial<L7RequestAttributes> = {}): boolean {
  return evaluateL7([policy({ rules: [rule] })], attrs(a)).allowed;
}

function refuses(spec: Record<string, unknown>, ...fragments: string[]): void {
  assert.throws(
    () => translateL7AuthorizationPolicy(object(spec, { name: 'bad' })),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      for (const f of [FILE, 'AuthorizationPolicy', '"shop/bad"', ...fragments]) assert.ok(err.message.includes(f), `${JSON.stringify(err.message)} should mention ${JSON.stringify(f)}`);
      return true;
    },
  );
}

describe('L7 operation fields', () => {
  const to = (operation: Record<string, unknown>) => ({ to: [{ operation }] });
  const cases: [string, Record<string, unknown>, Partial<L7RequestAttributes>, boolean][] = [
    ['method', to({ methods: ['GET'] }), {}, true],
    ['method miss', to({ methods: ['POST', 'PUT'] }), {}, false],
    ['notMethods', to({ notMethods: ['GET'] }), {}, false],
    ['notMethods lets others', to({ notMethods: ['DELETE'] }), {}, true],
    ['path exact ignores the query', to({ paths: ['/api/items'] }), {}, true],
    ['path exact miss', to({ paths: ['/api'] }), {}, false],
    ['path prefix', to({ paths: ['/api/*'] }), {}, true],
    ['path prefix miss', to({ paths: ['/admin/*'] }), {}, false],
    ['path suffix', to({ paths: ['*/items'] }), {}, true],
    ['path suffix miss', to({ paths: ['*.png'] }), {}, false],
    ['path "*"', to({ paths: ['*'] }), {}, true],
    ['path template {*}: one segment', to({ paths: ['/api/{*}'] }), {}, true],
    ['path template {*} is one segment only', to({ paths: ['/api/{*}'] }), { path: '/api/items/7' }, false],
    ['path template {**}: the rest', to({ paths: ['/api/{**}'] }), { path: '/api/items/7/x' }, true],
    ['path template with literal after {*}', to({ paths: ['/{*}/items'] }), {}, true],
    ['notPaths', to({ notPaths: ['/api/*'] }), {}, false],
    ['paths and notPaths', to({ paths: ['/api/*'], notPaths: ['/api/secret'] }), { path: '/api/secret' }, false],
    ['host with port in the request', to({ hosts: ['reviews.shop.svc.cluster.local'] }), {}, true],
    ['host is case-insensitive', to({ hosts: ['Reviews.Shop.svc.cluster.local'] }), {}, true],
    ['host with port in the policy', to({ hosts: ['reviews.shop.svc.cluster.local:9080'] }), {}, true],
    ['host suffix', to({ hosts: ['*.svc.cluster.local'] }), {}, true],
    ['host miss', to({ hosts: ['ratings'] }), {}, false],
    ['notHosts', to({ notHosts: ['reviews*'] }), {}, false],
    ['port', to({ ports: ['9080'] }), {}, true],
    ['port miss', to({ ports: [80] }), {}, false],
    ['notPorts', to({ notPorts: [9080] }), {}, false],
    ['fields AND', to({ methods: ['GET'], paths: ['/api/*'], ports: [9080] }), {}, true],
    ['fields AND, one misses', to({ methods: ['GET'], paths: ['/other'] }), {}, false],
    ['operations OR', { to: [{ operation: { methods: ['POST'] } }, { operation: { paths: ['/api/*'] } }] }, {}, true],
  ];
  for (const [name, rule, a, expected] of cases) test(`${name} → ${expected ? 'allow' : 'deny'}`, () => assert.equal(allows(rule, a), expected));
});

describe('L7 source fields and conditions', () => {
  const from = (source: Record<string, unknown>) => ({ from: [{ source }] });
  const when = (key: string, values: string[], notValues?: string[]) => ({ when: [{ key, values, ...(notValues ? { notValues } : {}) }] });
  const cases: [string, Record<string, unknown>, Partial<L7RequestAttributes>, boolean][] = [
    ['principal', from({ principals: ['cluster.local/ns/frontend/sa/web'] }), {}, true],
    ['principal of another workload', from({ principals: ['cluster.local/ns/frontend/sa/web'] }), { srcIdentity: 'spiffe://cluster.local/ns/frontend/sa/admin' }, false],
    ['principal needs mTLS', from({ principals: ['*'] }), { srcIdentity: null }, false],
    ['principal written with spiffe://', from({ principals: [WEB] }), {}, true],
    ['namespace', from({ namespaces: ['frontend'] }), {}, true],
    ['namespace miss', from({ namespaces: ['backend'] }), {}, false],
    ['notNamespaces', from({ notNamespaces: ['front*'] }), {}, false],
    ['serviceAccounts', from({ serviceAccounts: ['frontend/web'] }), {}, true],
    ['ipBlocks', from({ ipBlocks: ['10.0.0.0/16'] }), {}, true],
    ['notIpBlocks', from({ notIpBlocks: ['10.0.1.0/24'] }), {}, false],
    ['remoteIpBlocks fall back to the source IP', from({ remoteIpBlocks: ['10.0.1.5'] }), {}, true],
    ['remoteIpBlocks use the original client when known', from({ remoteIpBlocks: ['10.0.1.5'] }), { remoteIp: '192.0.2.1' }, false],
    ['request header', when('request.headers[X-Tenant]', ['acme']), {}, true],
    ['request header prefix', when('request.headers[x-tenant]', ['ac*']), {}, true],
    ['request header miss', when('request.headers[x-tenant]', ['other']), {}, false],
    ['request header missing', when('request.headers[x-missing]', ['*']), {}, false],
    ['request header notValues', when('request.headers[x-tenant]', [], ['acme']), {}, false],
    ['source.principal', when('source.principal', ['cluster.local/ns/frontend/*']), {}, true],
    ['source.namespace', when('source.namespace', ['frontend']), {}, true],
    ['source.ip', when('source.ip', ['10.0.1.0/24']), {}, true],
    ['destination.ip', when('destination.ip', ['10.96.0.0/16']), {}, true],
    ['destination.port', when('destination.port', ['80']), {}, false],
    ['remote.ip', when('remote.ip', ['10.0.1.5']), {}, true],
  ];
  for (const [name, rule, a, expected] of cases) test(`${name} → ${expected ? 'allow' : 'deny'}`, () => assert.equal(allows(rule, a), expected));
});

describe('L7 decision precedence (same as L4)', () => {
  const allowGet = policy({ action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }, { name: 'allow-get' });
  const denyAdmin = policy({ action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }] }, { name: 'deny-admin' });
  const audit = policy({ action: 'AUDIT', rules: [{}] }, { name: 'audit-all' });

  test('no policies: allowed', () => assert.equal(evaluateL7([], attrs()).allowed, true));
  test('ALLOW matches: allowed, with policy and rule', () => {
    const d = evaluateL7([allowGet], attrs());
    assert.deepEqual([d.allowed, d.policy, d.rule, d.action], [true, 'shop/allow-get', 0, 'ALLOW']);
    assert.match(d.reason, /allowed by ALLOW policy shop\/allow-get rule 0: method GET/);
  });
  test('ALLOW policies apply but none matches: denied', () => {
    const d = evaluateL7([allowGet], attrs({ method: 'POST' }));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /ALLOW policies apply \(shop\/allow-get\) but none matched/);
  });
  test('DENY wins over ALLOW', () => {
    const d = evaluateL7([allowGet, denyAdmin], attrs({ path: '/admin/x' }));
    assert.deepEqual([d.allowed, d.policy, d.action], [false, 'shop/deny-admin', 'DENY']);
  });
  test('DENY alone does not restrict the rest', () => assert.equal(evaluateL7([denyAdmin], attrs({ method: 'DELETE' })).allowed, true));
  test('AUDIT only reports', () => {
    const d = evaluateL7([audit], attrs());
    assert.equal(d.allowed, true);
    assert.deepEqual(d.audited, ['shop/audit-all']);
  });
  test('dry-run is reported, never enforced', () => {
    const dry = policy({ action: 'DENY', rules: [{}] }, { name: 'dry', annotations: { 'istio.io/dry-run': 'true' } });
    const d = evaluateL7([dry], attrs());
    assert.equal(d.allowed, true);
    assert.deepEqual(d.audited, ['shop/dry (dry-run DENY)']);
  });
  test('an ALLOW policy without rules allows nothing', () => assert.equal(evaluateL7([policy({ action: 'ALLOW' })], attrs()).allowed, false));
});

describe('L7 translation', () => {
  test('policies without targetRefs belong to ztunnel', () => {
    assert.equal(translateL7AuthorizationPolicy(object({ rules: [{}] })).policy, null);
    assert.equal(translateL7AuthorizationPolicy(object({ selector: { matchLabels: { app: 'x' } }, rules: [{}] })).policy, null);
  });
  test('targets: Service, Gateway, targetRef (singular)', () => {
    assert.deepEqual(policy({}).targets, [{ kind: 'Service', namespace: 'shop', name: 'reviews' }]);
    const gw = translateL7AuthorizationPolicy(object({ targetRef: { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' } })).policy!;
    assert.deepEqual(gw.targets, [{ kind: 'Gateway', namespace: 'shop', name: 'waypoint' }]);
  });
  test('JWT fields: an ALLOW rule is dropped, a DENY rule kept without them', () => {
    const allow = translateL7AuthorizationPolicy(object({ targetRefs: SERVICE_REF, rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }));
    assert.equal(allow.policy!.rules.length, 0);
    assert.match(allow.warnings[0]!, /dropped/);
    const deny = translateL7AuthorizationPolicy(object({ targetRefs: SERVICE_REF, action: 'DENY', rules: [{ to: [{ operation: { methods: ['POST'] } }], when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] }] }));
    assert.equal(deny.policy!.rules.length, 1);
    assert.match(deny.warnings[0]!, /broader than written/);
  });
  test('CUSTOM is not enforced here', () => assert.equal(translateL7AuthorizationPolicy(object({ targetRefs: SERVICE_REF, action: 'CUSTOM', provider: { name: 'ext' } })).policy, null));
  test('survives MessagePack and still decides the same', () => {
    const p = policy({ rules: [{ to: [{ operation: { paths: ['/api/{*}'], methods: ['GET'] } }], when: [{ key: 'request.headers[x-tenant]', values: ['acme'] }] }] });
    const copy = unpack(pack(p)) as L7AuthorizationPolicy;
    assert.deepEqual(copy, p);
    assert.equal(evaluateL7([copy], attrs()).allowed, true);
  });

  test('refuses an unknown operation field (same message as for ztunnel)', () => refuses({ targetRefs: SERVICE_REF, rules: [{ to: [{ operation: { method: ['GET'] } }] }] }, 'spec.rules[0].to[0].operation', 'unknown field "method"'));
  test('refuses a misplaced * in a path', () => refuses({ targetRefs: SERVICE_REF, rules: [{ to: [{ operation: { paths: ['/a*b'] } }] }] }, 'spec.rules[0].to[0].operation.paths[0]', 'unsupported place'));
  test('refuses {**} before the end', () => refuses({ targetRefs: SERVICE_REF, rules: [{ to: [{ operation: { paths: ['/{**}/x'] } }] }] }, 'paths[0]', '{**} must be the last segment'));
  test('refuses a half template', () => refuses({ targetRefs: SERVICE_REF, rules: [{ to: [{ operation: { paths: ['/a/{x}'] } }] }] }, 'paths[0]', 'literal, {*} or {**}'));
  test('refuses a misplaced * in a method', () => refuses({ targetRefs: SERVICE_REF, rules: [{ to: [{ operation: { methods: ['G*T'] } }] }] }, 'methods[0]'));
  test('refuses a target of another kind', () => refuses({ targetRefs: [{ group: 'apps', kind: 'Deployment', name: 'x' }] }, 'spec.targetRefs[0]', 'cannot be targeted'));
  test('refuses a target in another namespace', () => refuses({ targetRefs: [{ group: '', kind: 'Service', name: 'x', namespace: 'other' }] }, 'spec.targetRefs[0].namespace'));
  test('refuses a GatewayClass outside the root namespace', () => refuses({ targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'GatewayClass', name: 'istio-waypoint' }] }, 'root namespace'));
  test('refuses selector with targetRefs', () => refuses({ selector: { matchLabels: { a: 'b' } }, targetRefs: SERVICE_REF }, 'only one of selector, targetRef or targetRefs'));
  test('refuses a bad header condition value', () => refuses({ targetRefs: SERVICE_REF, rules: [{ when: [{ key: 'request.headers[x]', values: ['a*b'] }] }] }, 'spec.rules[0].when[0].values[0]'));
});

describe('which policies apply at the waypoint', () => {
  const onService = policy({ action: 'DENY', rules: [{}] }, { name: 'svc' });
  const onOther = translateL7AuthorizationPolicy(object({ targetRefs: [{ group: '', kind: 'Service', name: 'ratings' }], action: 'DENY', rules: [{}] }, { name: 'other' })).policy!;
  const onGateway = translateL7AuthorizationPolicy(object({ targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' }], rules: [{}] }, { name: 'gw' })).policy!;
  const onClass = translateL7AuthorizationPolicy(object({ targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'GatewayClass', name: 'istio-waypoint' }], rules: [{}] }, { name: 'class', namespace: 'istio-system' })).policy!;
  const index = new L7PolicyIndex([onService, onOther, onGateway, onClass]);
  const target = (service: string | null, waypointNs = 'shop'): L7Target => ({ waypoint: { name: 'waypoint', namespace: waypointNs, gatewayClass: 'istio-waypoint' }, service: service ? { namespace: 'shop', name: service } : null });

  test('the addressed Service, the waypoint and its class', () => {
    assert.deepEqual(index.applicable(target('reviews')).map((p) => p.name), ['svc', 'gw', 'class']);
  });
  test('a policy on another Service does not apply', () => {
    assert.deepEqual(index.applicable(target('productpage')).map((p) => p.name), ['gw', 'class']);
  });
  test('a waypoint of another namespace sees only the class policy', () => {
    assert.deepEqual(index.applicable(target(null, 'other')).map((p) => p.name), ['class']);
  });
  test('decide() = evaluate(applicable())', () => {
    assert.equal(index.decide(target('reviews'), attrs()).allowed, false);
    assert.equal(index.decide(target('productpage'), attrs()).allowed, true);
  });
});
