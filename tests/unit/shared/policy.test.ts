import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pack, unpack } from 'msgpackr';
import { ConfigError, parseObjects, type KubeObject } from '../../../shared/config/objects.js';
import {
  applicablePolicies,
  evaluateL4,
  ipWords,
  peerAuthMode,
  PolicyIndex,
  type ConnectionAttributes,
  type WorkloadRef,
} from '../../../shared/policy/evaluate.js';
import { translateAuthorizationPolicy, translatePeerAuthentication } from '../../../shared/policy/translate.js';
import type { AuthorizationPolicy, PeerAuthentication } from '../../../shared/policy/types.js';

const FILE = 'mesh/policies.yaml (document 1)';

function object(kind: string, name: string, namespace: string, spec: Record<string, unknown>, annotations?: Record<string, string>): KubeObject {
  return {
    apiVersion: 'security.istio.io/v1',
    kind,
    metadata: { name, namespace, ...(annotations ? { annotations } : {}) },
    spec,
    source: FILE,
  };
}

/** Translates an AuthorizationPolicy spec that ztunnel must enforce. */
function policy(spec: Record<string, unknown>, opts: { name?: string; namespace?: string; annotations?: Record<string, string> } = {}): AuthorizationPolicy {
  const { policy: p } = translateAuthorizationPolicy(object('AuthorizationPolicy', opts.name ?? 'p', opts.namespace ?? 'shop', spec, opts.annotations));
  assert.ok(p, 'expected a policy enforced at L4');
  return p;
}

function warningsOf(spec: Record<string, unknown>, namespace = 'shop'): { policy: AuthorizationPolicy | null; warnings: string[] } {
  return translateAuthorizationPolicy(object('AuthorizationPolicy', 'p', namespace, spec));
}

const WEB = 'spiffe://cluster.local/ns/frontend/sa/web';

function conn(c: Partial<ConnectionAttributes> = {}): ConnectionAttributes {
  return { srcIp: '10.0.1.5', srcIdentity: WEB, dstIp: '10.0.2.7', dstPort: 8080, ...c };
}

/** Whether a single ALLOW rule matches the connection. */
function ruleMatches(rule: Record<string, unknown>, c: ConnectionAttributes): boolean {
  return evaluateL4([policy({ rules: [rule] })], c).allowed;
}

/** Asserts translation throws a ConfigError naming the file, kind, object and every fragment. */
function refuses(kind: string, spec: Record<string, unknown>, ...fragments: string[]): void {
  const o = object(kind, 'bad', 'shop', spec);
  assert.throws(
    () => (kind === 'PeerAuthentication' ? translatePeerAuthentication(o) : translateAuthorizationPolicy(o)),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      for (const f of [FILE, kind, '"shop/bad"', ...fragments]) {
        assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(f)}`);
      }
      return true;
    },
  );
}

describe('source fields (from.source), one ALLOW rule', () => {
  const plain = { srcIdentity: null };
  const cases: Array<[string, Record<string, unknown>, Partial<ConnectionAttributes>, boolean]> = [
    ['principal exact', { principals: ['cluster.local/ns/frontend/sa/web'] }, {}, true],
    ['principal exact, other identity', { principals: ['cluster.local/ns/frontend/sa/web'] }, { srcIdentity: 'spiffe://cluster.local/ns/frontend/sa/admin' }, false],
    ['principal prefix', { principals: ['cluster.local/ns/frontend/*'] }, {}, true],
    ['principal prefix, other namespace', { principals: ['cluster.local/ns/frontend/*'] }, { srcIdentity: 'spiffe://cluster.local/ns/front/sa/web' }, false],
    ['principal suffix', { principals: ['*/sa/web'] }, {}, true],
    ['principal suffix, other sa', { principals: ['*/sa/web'] }, { srcIdentity: 'spiffe://cluster.local/ns/frontend/sa/webx' }, false],
    ['principal "*" over mTLS', { principals: ['*'] }, {}, true],
    ['principal "*" needs mTLS', { principals: ['*'] }, plain, false],
    ['principal exact on plaintext', { principals: ['cluster.local/ns/frontend/sa/web'] }, plain, false],
    ['principal written with spiffe:// still matches', { principals: [WEB] }, {}, true],
    ['principals are OR', { principals: ['cluster.local/ns/a/sa/b', 'cluster.local/ns/frontend/sa/web'] }, {}, true],
    ['identity that is not SPIFFE counts as plaintext', { principals: ['*'] }, { srcIdentity: 'cluster.local/ns/frontend/sa/web' }, false],
    ['notPrincipals excludes', { notPrincipals: ['cluster.local/ns/frontend/sa/web'] }, {}, false],
    ['notPrincipals lets others', { notPrincipals: ['cluster.local/ns/frontend/sa/web'] }, { srcIdentity: 'spiffe://cluster.local/ns/x/sa/y' }, true],
    ['notPrincipals "*" = plaintext only (mTLS)', { notPrincipals: ['*'] }, {}, false],
    ['notPrincipals "*" = plaintext only (plaintext)', { notPrincipals: ['*'] }, plain, true],
    ['namespace exact', { namespaces: ['frontend'] }, {}, true],
    ['namespace exact, other', { namespaces: ['backend'] }, {}, false],
    ['namespace prefix', { namespaces: ['front*'] }, {}, true],
    ['namespace suffix', { namespaces: ['*end'] }, {}, true],
    ['namespace suffix, miss', { namespaces: ['*back'] }, {}, false],
    ['namespace "*" over mTLS', { namespaces: ['*'] }, {}, true],
    ['namespace "*" needs mTLS', { namespaces: ['*'] }, plain, false],
    ['namespace on plaintext', { namespaces: ['frontend'] }, plain, false],
    ['notNamespaces excludes', { notNamespaces: ['frontend'] }, {}, false],
    ['notNamespaces prefix excludes', { notNamespaces: ['front*'] }, {}, false],
    ['notNamespaces lets others', { notNamespaces: ['legacy'] }, {}, true],
    ['notNamespaces lets plaintext through', { notNamespaces: ['legacy'] }, plain, true],
    ['serviceAccounts ns/sa', { serviceAccounts: ['frontend/web'] }, {}, true],
    ['serviceAccounts ignore the trust domain', { serviceAccounts: ['frontend/web'] }, { srcIdentity: 'spiffe://example.org/ns/frontend/sa/web' }, true],
    ['serviceAccounts bare sa = policy namespace (shop)', { serviceAccounts: ['web'] }, {}, false],
    ['serviceAccounts bare sa in policy namespace', { serviceAccounts: ['web'] }, { srcIdentity: 'spiffe://cluster.local/ns/shop/sa/web' }, true],
    ['serviceAccounts on plaintext', { serviceAccounts: ['frontend/web'] }, plain, false],
    ['notServiceAccounts excludes', { notServiceAccounts: ['frontend/web'] }, {}, false],
    ['notServiceAccounts lets others', { notServiceAccounts: ['frontend/admin'] }, {}, true],
    ['notServiceAccounts lets plaintext through', { notServiceAccounts: ['frontend/web'] }, plain, true],
    ['ipBlocks CIDR v4', { ipBlocks: ['10.0.0.0/16'] }, {}, true],
    ['ipBlocks CIDR v4 miss', { ipBlocks: ['10.1.0.0/16'] }, {}, false],
    ['ipBlocks single IP', { ipBlocks: ['10.0.1.5'] }, {}, true],
    ['ipBlocks single IP miss', { ipBlocks: ['10.0.1.6'] }, {}, false],
    ['ipBlocks non-canonical CIDR is masked', { ipBlocks: ['10.0.1.200/24'] }, {}, true],
    ['ipBlocks /0 matches all IPv4', { ipBlocks: ['0.0.0.0/0'] }, {}, true],
    ['ipBlocks /0 v4 does not match IPv6', { ipBlocks: ['0.0.0.0/0'] }, { srcIp: '2001:db8::1' }, false],
    ['ipBlocks high addresses (sign bit)', { ipBlocks: ['192.168.0.0/16'] }, { srcIp: '192.168.255.1' }, true],
    ['ipBlocks odd prefix /23', { ipBlocks: ['10.0.0.0/23'] }, { srcIp: '10.0.1.255' }, true],
    ['ipBlocks odd prefix /23 miss', { ipBlocks: ['10.0.0.0/23'] }, { srcIp: '10.0.2.0' }, false],
    ['ipBlocks CIDR v6', { ipBlocks: ['2001:db8::/32'] }, { srcIp: '2001:db8:1::5' }, true],
    ['ipBlocks CIDR v6 miss', { ipBlocks: ['2001:db8::/32'] }, { srcIp: '2001:db9::5' }, false],
    ['ipBlocks v6 /60 inside word', { ipBlocks: ['fd00:0:0:10::/60'] }, { srcIp: 'fd00:0:0:1f::1' }, true],
    ['ipBlocks v6 /60 inside word miss', { ipBlocks: ['fd00:0:0:10::/60'] }, { srcIp: 'fd00:0:0:20::1' }, false],
    ['ipBlocks v6 single', { ipBlocks: ['fd00::1'] }, { srcIp: 'fd00:0::1' }, true],
    ['ipBlocks v6 does not match IPv4', { ipBlocks: ['::/0'] }, {}, false],
    ['ipBlocks v4 matches an IPv4-mapped source', { ipBlocks: ['10.0.0.0/8'] }, { srcIp: '::ffff:10.9.9.9' }, true],
    ['notIpBlocks excludes', { notIpBlocks: ['10.0.1.0/24'] }, {}, false],
    ['notIpBlocks lets others', { notIpBlocks: ['10.0.9.0/24'] }, {}, true],
    ['notIpBlocks v6 excludes', { notIpBlocks: ['2001:db8::/32'] }, { srcIp: '2001:db8::1' }, false],
    ['ipBlocks and notIpBlocks together', { ipBlocks: ['10.0.0.0/8'], notIpBlocks: ['10.0.1.0/24'] }, {}, false],
    ['fields AND: both match', { namespaces: ['frontend'], ipBlocks: ['10.0.0.0/8'] }, {}, true],
    ['fields AND: one misses', { namespaces: ['frontend'], ipBlocks: ['192.168.0.0/16'] }, {}, false],
    ['positive and negative of one field', { namespaces: ['front*'], notNamespaces: ['frontend'] }, {}, false],
  ];
  for (const [name, source, c, expected] of cases) {
    test(`${name} → ${expected ? 'match' : 'no match'}`, () => {
      assert.equal(ruleMatches({ from: [{ source }] }, conn(c)), expected);
    });
  }
});

describe('operation fields (to.operation)', () => {
  const cases: Array<[string, Record<string, unknown>, number, boolean]> = [
    ['ports as strings (Istio form)', { ports: ['8080'] }, 8080, true],
    ['ports as numbers', { ports: [8080, 9090] }, 9090, true],
    ['ports miss', { ports: ['80', '443'] }, 8080, false],
    ['notPorts excludes', { notPorts: ['8080'] }, 8080, false],
    ['notPorts lets others', { notPorts: ['22'] }, 8080, true],
    ['ports and notPorts', { ports: ['8080', '9090'], notPorts: ['9090'] }, 9090, false],
  ];
  for (const [name, operation, port, expected] of cases) {
    test(`${name} → ${expected ? 'match' : 'no match'}`, () => {
      assert.equal(ruleMatches({ to: [{ operation }] }, conn({ dstPort: port })), expected);
    });
  }
});

describe('conditions (when)', () => {
  const cases: Array<[string, Record<string, unknown>, Partial<ConnectionAttributes>, boolean]> = [
    ['source.ip values', { key: 'source.ip', values: ['10.0.0.0/8'] }, {}, true],
    ['source.ip values miss', { key: 'source.ip', values: ['172.16.0.0/12'] }, {}, false],
    ['source.ip notValues', { key: 'source.ip', notValues: ['10.0.1.5'] }, {}, false],
    ['source.ip v6', { key: 'source.ip', values: ['fd00::/8'] }, { srcIp: 'fd12::3' }, true],
    ['destination.ip values', { key: 'destination.ip', values: ['10.0.2.0/24'] }, {}, true],
    ['destination.ip notValues', { key: 'destination.ip', notValues: ['10.0.2.7'] }, {}, false],
    ['destination.port values', { key: 'destination.port', values: ['8080'] }, {}, true],
    ['destination.port notValues', { key: 'destination.port', notValues: ['8080'] }, {}, false],
    ['source.namespace values prefix', { key: 'source.namespace', values: ['front*'] }, {}, true],
    ['source.namespace notValues', { key: 'source.namespace', notValues: ['frontend'] }, {}, false],
    ['source.namespace on plaintext', { key: 'source.namespace', values: ['frontend'] }, { srcIdentity: null }, false],
    ['source.principal values', { key: 'source.principal', values: ['cluster.local/ns/frontend/sa/web'] }, {}, true],
    ['source.principal suffix', { key: 'source.principal', values: ['*/sa/web'] }, {}, true],
    ['source.principal notValues "*" (plaintext only)', { key: 'source.principal', notValues: ['*'] }, {}, false],
    ['source.serviceAccount values', { key: 'source.serviceAccount', values: ['frontend/web'] }, {}, true],
    ['source.serviceAccount notValues', { key: 'source.serviceAccount', notValues: ['frontend/web'] }, {}, false],
    ['values and notValues both', { key: 'source.ip', values: ['10.0.0.0/8'], notValues: ['10.0.1.0/24'] }, {}, false],
  ];
  for (const [name, condition, c, expected] of cases) {
    test(`${name} → ${expected ? 'match' : 'no match'}`, () => {
      assert.equal(ruleMatches({ when: [condition] }, conn(c)), expected);
    });
  }
});

describe('rule structure', () => {
  test('sources are OR, operations are OR, from/to/when are AND, conditions are AND', () => {
    const rule = {
      from: [{ source: { namespaces: ['legacy'] } }, { source: { ipBlocks: ['10.0.0.0/16'] } }],
      to: [{ operation: { ports: ['80'] } }, { operation: { ports: ['8080'] } }],
      when: [
        { key: 'destination.ip', values: ['10.0.2.0/24'] },
        { key: 'source.principal', values: ['*'] },
      ],
    };
    assert.equal(ruleMatches(rule, conn()), true);
    assert.equal(ruleMatches(rule, conn({ srcIp: '10.9.0.1' })), false, 'no source matches');
    assert.equal(ruleMatches(rule, conn({ srcIp: '10.9.0.1', srcIdentity: 'spiffe://cluster.local/ns/legacy/sa/x' })), true, 'second alternative source');
    assert.equal(ruleMatches(rule, conn({ dstPort: 443 })), false, 'no operation matches');
    assert.equal(ruleMatches(rule, conn({ dstIp: '10.0.3.1' })), false, 'first condition fails');
    assert.equal(ruleMatches(rule, conn({ srcIdentity: null })), false, 'second condition fails');
  });

  test('rules are OR; the first matching rule decides and is reported by index', () => {
    const p = policy({ rules: [{ from: [{ source: { namespaces: ['x'] } }] }, { to: [{ operation: { ports: ['8080'] } }] }] });
    const d = evaluateL4([p], conn());
    assert.equal(d.allowed, true);
    assert.equal(d.rule, 1);
    assert.equal(d.reason, 'allowed by ALLOW policy shop/p rule 1: port 8080');
  });

  test('an empty rule {} matches every connection', () => {
    assert.equal(ruleMatches({}, conn({ srcIdentity: null, srcIp: '192.0.2.1' })), true);
  });

  test('summaries say what the rule checks', () => {
    const p = policy({
      action: 'DENY',
      rules: [
        { from: [{ source: { namespaces: ['legacy', 'old'], notIpBlocks: ['10.0.0.0/8'] } }, { source: { principals: ['cluster.local/ns/a/sa/b'] } }] },
        { to: [{ operation: { notPorts: ['80', '443'] } }], when: [{ key: 'source.ip', values: ['192.0.2.0/24'] }] },
        {},
      ],
    });
    assert.deepEqual(
      p.rules.map((r) => r.summary),
      [
        '(source namespace legacy or old and source ip not 10.0.0.0/8) or source principal cluster.local/ns/a/sa/b',
        'port not (80, 443), source.ip 192.0.2.0/24',
        'any connection',
      ],
    );
  });
});

describe('actions', () => {
  const allowFrontend = policy({ rules: [{ from: [{ source: { namespaces: ['frontend'] } }] }] }, { name: 'allow-frontend' });
  const denyLegacy = policy({ action: 'DENY', rules: [{ from: [{ source: { namespaces: ['legacy'] } }] }] }, { name: 'deny-legacy' });
  const denyAll = policy({ action: 'DENY', rules: [{}] }, { name: 'deny-all' });
  const allowAll = policy({ rules: [{}] }, { name: 'allow-all' });
  const allowNothing = policy({}, { name: 'allow-nothing' });
  const auditAll = policy({ action: 'AUDIT', rules: [{}] }, { name: 'audit-all' });
  const auditLegacy = policy({ action: 'AUDIT', rules: [{ from: [{ source: { namespaces: ['legacy'] } }] }] }, { name: 'audit-legacy' });
  const legacy = conn({ srcIdentity: 'spiffe://cluster.local/ns/legacy/sa/default' });

  const cases: Array<[string, AuthorizationPolicy[], ConnectionAttributes, boolean, string, string[]]> = [
    ['no policies → allow', [], conn(), true, 'allowed: no ALLOW policy applies', []],
    ['only DENY, not matching → allow', [denyLegacy], conn(), true, 'allowed: no ALLOW policy applies', []],
    ['DENY matching → deny', [denyLegacy], legacy, false, 'denied by DENY policy shop/deny-legacy rule 0: source namespace legacy', []],
    ['DENY beats a matching ALLOW', [allowAll, denyLegacy], legacy, false, 'denied by DENY policy shop/deny-legacy rule 0: source namespace legacy', []],
    ['ALLOW matching → allow', [allowFrontend], conn(), true, 'allowed by ALLOW policy shop/allow-frontend rule 0: source namespace frontend', []],
    ['ALLOW present but none matched → deny', [allowFrontend], legacy, false, 'denied: ALLOW policies apply (shop/allow-frontend) but none matched', []],
    ['any ALLOW may match', [allowNothing, allowFrontend], conn(), true, 'allowed by ALLOW policy shop/allow-frontend rule 0: source namespace frontend', []],
    ['allow-nothing ({}) denies everything', [allowNothing], conn(), false, 'denied: ALLOW policies apply (shop/allow-nothing) but none matched', []],
    ['ALLOW rules: [{}] allows everything', [allowAll], conn({ srcIdentity: null }), true, 'allowed by ALLOW policy shop/allow-all rule 0: any connection', []],
    ['DENY rules: [{}] denies everything', [denyAll, allowAll], conn(), false, 'denied by DENY policy shop/deny-all rule 0: any connection', []],
    ['AUDIT never decides (alone)', [auditAll], conn(), true, 'allowed: no ALLOW policy applies', ['shop/audit-all']],
    ['AUDIT never decides (with deny)', [auditAll, auditLegacy, denyLegacy], legacy, false, 'denied by DENY policy shop/deny-legacy rule 0: source namespace legacy', ['shop/audit-all', 'shop/audit-legacy']],
    ['AUDIT does not count as ALLOW', [auditLegacy, allowFrontend], legacy, false, 'denied: ALLOW policies apply (shop/allow-frontend) but none matched', ['shop/audit-legacy']],
    ['non-matching AUDIT is not recorded', [auditLegacy], conn(), true, 'allowed: no ALLOW policy applies', []],
  ];
  for (const [name, policies, c, allowed, reason, audited] of cases) {
    test(name, () => {
      const d = evaluateL4(policies, c);
      assert.equal(d.allowed, allowed);
      assert.equal(d.reason, reason);
      assert.deepEqual(d.audited, audited);
    });
  }

  test('decisions name the deciding policy, rule and action', () => {
    assert.deepEqual(evaluateL4([allowFrontend, denyLegacy], legacy), {
      allowed: false,
      policy: 'shop/deny-legacy',
      rule: 0,
      action: 'DENY',
      reason: 'denied by DENY policy shop/deny-legacy rule 0: source namespace legacy',
      audited: [],
    });
    const allowed = evaluateL4([allowFrontend], conn());
    assert.deepEqual([allowed.policy, allowed.rule, allowed.action], ['shop/allow-frontend', 0, 'ALLOW']);
    const none = evaluateL4([allowFrontend], legacy);
    assert.deepEqual([none.policy, none.rule, none.action], [null, null, null]);
  });

  test('DENY without rules never matches (and says so)', () => {
    const { policy: p, warnings } = warningsOf({ action: 'DENY' });
    assert.ok(p);
    assert.equal(evaluateL4([p], conn()).allowed, true);
    assert.match(warnings.join('\n'), /DENY policy without rules never matches; add "rules: \[\{\}\]"/);
  });

  test('dry-run policies (istio.io/dry-run) are reported, never enforced', () => {
    const dryDeny = policy({ action: 'DENY', rules: [{}] }, { name: 'dry-deny', annotations: { 'istio.io/dry-run': 'true' } });
    const dryAllow = policy({ rules: [{ from: [{ source: { namespaces: ['nobody'] } }] }] }, { name: 'dry-allow', annotations: { 'istio.io/dry-run': 'true' } });
    assert.equal(dryDeny.dryRun, true);
    const d = evaluateL4([dryDeny, dryAllow], conn());
    assert.equal(d.allowed, true);
    assert.equal(d.reason, 'allowed: no ALLOW policy applies');
    assert.deepEqual(d.audited, ['shop/dry-deny (dry-run DENY)']);
  });
});

describe('L7 fields at L4', () => {
  test('ALLOW: a rule with an HTTP field is dropped, with a warning naming the field; other rules stay', () => {
    const { policy: p, warnings } = warningsOf({
      rules: [
        { from: [{ source: { namespaces: ['frontend'] } }], to: [{ operation: { methods: ['GET'] } }] },
        { from: [{ source: { namespaces: ['ops'] } }] },
      ],
    });
    assert.ok(p);
    assert.deepEqual(
      p.rules.map((r) => r.index),
      [1],
    );
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /spec\.rules\[0\] dropped at L4: to\[0\]\.operation\.methods is an L7 attribute ztunnel cannot check, so this ALLOW rule never matches/);
    assert.ok(warnings[0]!.startsWith(`${FILE}: AuthorizationPolicy "shop/p"`));
    assert.deepEqual(p.warnings, warnings);
    // frontend would have been allowed for GET at L7; at L4 the safe answer is no.
    assert.equal(evaluateL4([p], conn()).allowed, false);
    assert.equal(evaluateL4([p], conn({ srcIdentity: 'spiffe://cluster.local/ns/ops/sa/x' })).reason, 'allowed by ALLOW policy shop/p rule 1: source namespace ops');
  });

  test('ALLOW with every rule dropped allows nothing (and says so)', () => {
    const { policy: p, warnings } = warningsOf({ rules: [{ to: [{ operation: { paths: ['/health'] } }] }] });
    assert.ok(p);
    assert.equal(p.rules.length, 0);
    assert.equal(evaluateL4([p], conn()).allowed, false);
    assert.match(warnings.join('\n'), /every rule was dropped at L4, so this ALLOW policy allows nothing/);
  });

  const l7Fields: Array<[string, Record<string, unknown>, string]> = [
    ['hosts', { to: [{ operation: { hosts: ['example.com'] } }] }, 'to[0].operation.hosts'],
    ['notHosts', { to: [{ operation: { notHosts: ['example.com'] } }] }, 'to[0].operation.notHosts'],
    ['methods', { to: [{ operation: { methods: ['GET'] } }] }, 'to[0].operation.methods'],
    ['notMethods', { to: [{ operation: { notMethods: ['DELETE'] } }] }, 'to[0].operation.notMethods'],
    ['paths', { to: [{ operation: { paths: ['/api/*'] } }] }, 'to[0].operation.paths'],
    ['notPaths', { to: [{ operation: { notPaths: ['/admin*'] } }] }, 'to[0].operation.notPaths'],
    ['requestPrincipals', { from: [{ source: { requestPrincipals: ['issuer/sub'] } }] }, 'from[0].source.requestPrincipals'],
    ['notRequestPrincipals', { from: [{ source: { notRequestPrincipals: ['*'] } }] }, 'from[0].source.notRequestPrincipals'],
    ['remoteIpBlocks', { from: [{ source: { remoteIpBlocks: ['203.0.113.0/24'] } }] }, 'from[0].source.remoteIpBlocks'],
    ['notRemoteIpBlocks', { from: [{ source: { notRemoteIpBlocks: ['203.0.113.4'] } }] }, 'from[0].source.notRemoteIpBlocks'],
    ['request.headers[...]', { when: [{ key: 'request.headers[x-user]', values: ['alice'] }] }, 'when[0] (request.headers[x-user])'],
    ['request.auth.claims[...]', { when: [{ key: 'request.auth.claims[iss]', values: ['https://issuer'] }] }, 'when[0] (request.auth.claims[iss])'],
    ['request.auth.principal', { when: [{ key: 'request.auth.principal', values: ['a/b'] }] }, 'when[0] (request.auth.principal)'],
    ['request.auth.audiences', { when: [{ key: 'request.auth.audiences', values: ['x'] }] }, 'when[0] (request.auth.audiences)'],
    ['request.auth.presenter', { when: [{ key: 'request.auth.presenter', values: ['x'] }] }, 'when[0] (request.auth.presenter)'],
    ['remote.ip', { when: [{ key: 'remote.ip', values: ['203.0.113.4'] }] }, 'when[0] (remote.ip)'],
    ['connection.sni', { when: [{ key: 'connection.sni', values: ['www.example.com'] }] }, 'when[0] (connection.sni)'],
    ['experimental.envoy.filters.*', { when: [{ key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]'] }] }, 'when[0] (experimental.envoy.filters.network.mysql_proxy[db.table])'],
  ];
  for (const [name, rule, field] of l7Fields) {
    test(`${name}: ALLOW rule dropped, DENY and AUDIT keep the rest of the rule`, () => {
      const allow = warningsOf({ rules: [rule] });
      assert.equal(allow.policy!.rules.length, 0);
      assert.ok(allow.warnings[0]!.includes(`spec.rules[0] dropped at L4: ${field} is an L7 attribute`), allow.warnings[0]);
      for (const action of ['DENY', 'AUDIT']) {
        const other = warningsOf({ action, rules: [rule] });
        assert.equal(other.policy!.rules.length, 1);
        assert.equal(other.policy!.rules[0]!.summary, 'any connection');
        assert.ok(other.warnings[0]!.includes(`ignored at L4, the rest of the rule still ${action === 'DENY' ? 'denies' : 'audits'} (broader than written)`), other.warnings[0]);
      }
    });
  }

  test('DENY with an HTTP field is broader: denies the rest of the rule for every method', () => {
    const { policy: p, warnings } = warningsOf({
      action: 'DENY',
      rules: [{ from: [{ source: { namespaces: ['legacy'] } }], to: [{ operation: { methods: ['POST'], ports: ['8080'] } }] }],
    });
    assert.ok(p);
    assert.match(warnings[0]!, /spec\.rules\[0\]: to\[0\]\.operation\.methods is an L7 attribute ztunnel cannot check; ignored at L4/);
    const legacy = conn({ srcIdentity: 'spiffe://cluster.local/ns/legacy/sa/default' });
    assert.equal(evaluateL4([p], legacy).reason, 'denied by DENY policy shop/p rule 0: source namespace legacy, port 8080');
    assert.equal(evaluateL4([p], { ...legacy, dstPort: 9090 }).allowed, true, 'ports are still checked');
    assert.equal(evaluateL4([p], conn()).allowed, true, 'namespace is still checked');
  });

  test('DENY whose only field is L7 denies every connection', () => {
    const { policy: p, warnings } = warningsOf({ action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] });
    assert.ok(p);
    assert.equal(warnings.length, 1);
    assert.equal(evaluateL4([p], conn()).reason, 'denied by DENY policy shop/p rule 0: any connection');
  });

  test('DENY: an L7-only source makes the whole from list match any source', () => {
    const { policy: p } = warningsOf({
      action: 'DENY',
      rules: [{ from: [{ source: { requestPrincipals: ['*'] } }, { source: { namespaces: ['legacy'] } }], when: [{ key: 'request.headers[x-debug]', values: ['1'] }, { key: 'destination.port', values: ['9000'] }] }],
    });
    assert.ok(p);
    assert.equal(p.rules[0]!.from.length, 0);
    assert.equal(p.rules[0]!.when.length, 1);
    assert.equal(evaluateL4([p], conn({ dstPort: 9000 })).reason, 'denied by DENY policy shop/p rule 0: destination.port 9000');
    assert.equal(evaluateL4([p], conn()).allowed, true);
  });
});

describe('policies ztunnel does not enforce', () => {
  test('targetRefs → null, enforced by the waypoint', () => {
    const r = warningsOf({ targetRefs: [{ kind: 'Service', group: '', name: 'reviews' }], rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    assert.equal(r.policy, null);
    assert.deepEqual(r.warnings, [`${FILE}: AuthorizationPolicy "shop/p": has targetRefs, so it is enforced by the waypoint, not by ztunnel at L4`]);
  });

  test('targetRef (singular) → null', () => {
    const r = warningsOf({ targetRef: { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }, action: 'DENY', rules: [{}] });
    assert.equal(r.policy, null);
    assert.match(r.warnings[0]!, /enforced by the waypoint/);
  });

  test('CUSTOM → null with a warning', () => {
    const r = warningsOf({ action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] });
    assert.equal(r.policy, null);
    assert.match(r.warnings[0]!, /CUSTOM .* not enforced by ztunnel/);
  });

  test('a waypoint policy is still checked for errors', () => {
    refuses('AuthorizationPolicy', { targetRefs: [{ kind: 'Service', name: 'x' }], rules: 'nope' }, 'spec.rules must be a list');
  });
});

describe('translation', () => {
  test('scope: root namespace without selector is mesh-wide, namespace without selector, selector is workload', () => {
    assert.equal(policy({}, { namespace: 'istio-system' }).scope, 'mesh');
    assert.equal(policy({}, { namespace: 'shop' }).scope, 'namespace');
    assert.equal(policy({ selector: { matchLabels: { app: 'cart' } } }).scope, 'workload');
    assert.deepEqual(policy({ selector: { matchLabels: { app: 'cart' } } }).selector, { app: 'cart' });
    const custom = translateAuthorizationPolicy(object('AuthorizationPolicy', 'p', 'mesh-root', {}), 'mesh-root');
    assert.equal(custom.policy!.scope, 'mesh');
  });

  test('a selector without labels selects the whole namespace, with a warning', () => {
    const r = warningsOf({ selector: {}, rules: [{}] });
    assert.equal(r.policy!.selector, null);
    assert.equal(r.policy!.scope, 'namespace');
    assert.match(r.warnings.join('\n'), /spec\.selector has no labels/);
  });

  test('principals written with spiffe:// are read without it, with a warning', () => {
    const r = warningsOf({ rules: [{ from: [{ source: { principals: [WEB] } }] }] });
    assert.deepEqual(r.policy!.rules[0]!.from[0]!.principals, [{ kind: 'exact', value: 'cluster.local/ns/frontend/sa/web' }]);
    assert.match(r.warnings[0]!, /spec\.rules\[0\]\.from\[0\]\.source\.principals\[0\]: principal "spiffe:\/\/cluster\.local\/ns\/frontend\/sa\/web" is written without "spiffe:\/\/"/);
  });

  test('wildcards compile to exact/prefix/suffix/any', () => {
    const p = policy({ rules: [{ from: [{ source: { namespaces: ['a', 'b*', '*c', '*'] } }] }] });
    assert.deepEqual(p.rules[0]!.from[0]!.namespaces, [
      { kind: 'exact', value: 'a' },
      { kind: 'prefix', value: 'b' },
      { kind: 'suffix', value: 'c' },
      { kind: 'any', value: '' },
    ]);
  });

  test('the model is plain data: it survives MessagePack and JSON and decides the same', () => {
    const p = policy({
      action: 'DENY',
      selector: { matchLabels: { app: 'cart' } },
      rules: [
        { from: [{ source: { ipBlocks: ['10.0.0.0/8', '2001:db8::/32'], namespaces: ['legacy*'] } }], to: [{ operation: { ports: ['8080'] } }], when: [{ key: 'destination.ip', notValues: ['10.9.9.9'] }] },
      ],
    });
    const viaMsgpack = unpack(pack(p)) as AuthorizationPolicy;
    const viaJson = JSON.parse(JSON.stringify(p)) as AuthorizationPolicy;
    assert.deepEqual(viaMsgpack, p);
    assert.deepEqual(viaJson, p);
    const c = conn({ srcIdentity: 'spiffe://cluster.local/ns/legacy-v1/sa/x' });
    for (const copy of [viaMsgpack, viaJson]) assert.deepEqual(evaluateL4([copy], c), evaluateL4([p], c));
    assert.equal(evaluateL4([viaMsgpack], c).allowed, false);
  });
});

describe('translation errors name the file, the object and the field', () => {
  const AP = 'AuthorizationPolicy';
  const cases: Array<[string, Record<string, unknown>, string[]]> = [
    ['unknown action', { action: 'REJECT' }, ['spec.action must be ALLOW, DENY, AUDIT or CUSTOM', '"REJECT"']],
    ['rules not a list', { rules: { from: [] } }, ['spec.rules must be a list']],
    ['rule not an object', { rules: ['x'] }, ['spec.rules[0] must be an object']],
    ['unknown spec field', { rule: [{}] }, ['spec: unknown field "rule"']],
    ['unknown rule field (typo must not widen an ALLOW)', { rules: [{ form: [{ source: { namespaces: ['a'] } }] }] }, ['spec.rules[0]: unknown field "form"']],
    ['from not a list', { rules: [{ from: { source: {} } }] }, ['spec.rules[0].from must be a list']],
    ['from empty', { rules: [{ from: [] }] }, ['spec.rules[0].from must not be empty']],
    ['from without source', { rules: [{ from: [{}] }] }, ['spec.rules[0].from[0].source must be an object']],
    ['empty source', { rules: [{ from: [{ source: {} }] }] }, ['spec.rules[0].from[0].source must not be empty']],
    ['unknown source field', { rules: [{ from: [{ source: { namespace: ['a'] } }] }] }, ['spec.rules[0].from[0].source: unknown field "namespace"']],
    ['principals not strings', { rules: [{ from: [{ source: { principals: [42] } }] }] }, ['spec.rules[0].from[0].source.principals[0] must be a string', '42']],
    ['namespaces not a list', { rules: [{ from: [{ source: { namespaces: 'a' } }] }] }, ['spec.rules[0].from[0].source.namespaces must be a list of strings']],
    ['empty string value', { rules: [{ from: [{ source: { namespaces: [''] } }] }] }, ['spec.rules[0].from[0].source.namespaces[0] must not be empty']],
    ['wildcard in the middle', { rules: [{ from: [{ source: { principals: ['cluster.local/*/sa/x'] } }] }] }, ['source.principals[0]', 'unsupported place']],
    ['bad CIDR', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] }, ['spec.rules[0].from[0].source.ipBlocks[0]', '"10.0.0.0/33"', 'prefix length']],
    ['bad IP', { rules: [{ from: [{ source: { notIpBlocks: ['10.0.0.256'] } }] }] }, ['spec.rules[0].from[0].source.notIpBlocks[0]', 'not an IP address or CIDR']],
    ['bad IPv6 CIDR', { rules: [{ from: [{ source: { ipBlocks: ['2001:db8::/129'] } }] }] }, ['ipBlocks[0]', 'prefix length (0 to 128)']],
    ['bad remoteIpBlocks (checked although L7)', { rules: [{ from: [{ source: { remoteIpBlocks: ['nope'] } }] }] }, ['remoteIpBlocks[0]', 'not an IP address']],
    ['serviceAccounts with namespaces', { rules: [{ from: [{ source: { serviceAccounts: ['a/b'], namespaces: ['a'] } }] }] }, ['serviceAccounts cannot be set with principals or namespaces']],
    ['serviceAccounts bad form', { rules: [{ from: [{ source: { serviceAccounts: ['a/b/c'] } }] }] }, ['serviceAccounts[0]', '"namespace/serviceAccount"']],
    ['serviceAccounts wildcard', { rules: [{ from: [{ source: { serviceAccounts: ['a/*'] } }] }] }, ['serviceAccounts[0]', 'wildcards are not allowed']],
    ['port not a number', { rules: [{ to: [{ operation: { ports: ['http'] } }] }] }, ['spec.rules[0].to[0].operation.ports[0] must be a port number', '"http"']],
    ['port out of range', { rules: [{ to: [{ operation: { notPorts: [70000] } }] }] }, ['spec.rules[0].to[0].operation.notPorts[0] must be a port number', '70000']],
    ['empty operation', { rules: [{ to: [{ operation: {} }] }] }, ['spec.rules[0].to[0].operation must not be empty']],
    ['to item shape', { rules: [{ to: [{ ports: ['80'] }] }] }, ['spec.rules[0].to[0]: unknown field "ports"']],
    ['when not a list', { rules: [{ when: { key: 'source.ip' } }] }, ['spec.rules[0].when must be a list']],
    ['when without key', { rules: [{ when: [{ values: ['a'] }] }] }, ['spec.rules[0].when[0].key must be a non-empty string']],
    ['when without values', { rules: [{ when: [{ key: 'source.ip' }] }] }, ['spec.rules[0].when[0] (source.ip): at least one of values or notValues']],
    ['when unknown key', { rules: [{ when: [{ key: 'source.color', values: ['red'] }] }] }, ['spec.rules[0].when[0] (source.color): unknown attribute "source.color"']],
    ['when request.headers without [name]', { rules: [{ when: [{ key: 'request.headers', values: ['a'] }] }] }, ['unknown attribute "request.headers"']],
    ['when destination.namespace', { rules: [{ when: [{ key: 'destination.namespace', values: ['a'] }] }] }, ['replaced by the policy\'s metadata.namespace']],
    ['when destination.labels', { rules: [{ when: [{ key: 'destination.labels[app]', values: ['a'] }] }] }, ['replaced by the workload selector']],
    ['when source.ip bad value', { rules: [{ when: [{ key: 'source.ip', values: ['10.0.0.0/8', 'x'] }] }] }, ['spec.rules[0].when[0].values[1]', 'not an IP address or CIDR']],
    ['when destination.port bad value', { rules: [{ when: [{ key: 'destination.port', notValues: ['eighty'] }] }] }, ['spec.rules[0].when[0].notValues[0] must be a port number']],
    ['when remote.ip bad value', { rules: [{ when: [{ key: 'remote.ip', values: ['1.2.3'] }] }] }, ['spec.rules[0].when[0].values[0]', 'not an IP address']],
    ['selector not an object', { selector: 'app=web' }, ['spec.selector must be an object with matchLabels']],
    ['selector label not a string', { selector: { matchLabels: { version: 2 } } }, ['spec.selector.matchLabels.version must be a string']],
    ['selector unknown field', { selector: { matchExpressions: [] } }, ['spec.selector: unknown field "matchExpressions"']],
    ['selector and targetRefs', { selector: { matchLabels: { a: 'b' } }, targetRefs: [{ kind: 'Service', name: 'x' }] }, ['only one of selector, targetRef or targetRefs']],
    ['targetRefs not a list', { targetRefs: { kind: 'Service', name: 'x' } }, ['spec.targetRefs must be a list']],
    ['provider without CUSTOM', { provider: { name: 'x' }, rules: [{}] }, ['spec.provider is only for action CUSTOM']],
  ];
  for (const [name, spec, fragments] of cases) {
    test(name, () => refuses(AP, spec, ...fragments));
  }

  test('wrong kind or API group', () => {
    assert.throws(() => translateAuthorizationPolicy(object('PeerAuthentication', 'x', 'shop', {})), /expected kind AuthorizationPolicy/);
    const o = { ...object('AuthorizationPolicy', 'x', 'shop', {}), apiVersion: 'networking.istio.io/v1' };
    assert.throws(() => translateAuthorizationPolicy(o), (e: unknown) => e instanceof ConfigError && e.message.includes('apiVersion networking.istio.io/v1 is not security.istio.io'));
  });
});

describe('which policies apply to a workload', () => {
  const all = [
    policy({ action: 'DENY', rules: [{}] }, { name: 'mesh', namespace: 'istio-system' }),
    policy({ selector: { matchLabels: { tier: 'db' } }, rules: [{}] }, { name: 'mesh-db', namespace: 'istio-system' }),
    policy({ rules: [{}] }, { name: 'ns', namespace: 'shop' }),
    policy({ selector: { matchLabels: { app: 'cart' } }, rules: [{}] }, { name: 'cart', namespace: 'shop' }),
    policy({ selector: { matchLabels: { app: 'cart', version: 'v2' } }, rules: [{}] }, { name: 'cart-v2', namespace: 'shop' }),
    policy({ rules: [{}] }, { name: 'other-ns', namespace: 'bank' }),
    policy({ selector: { matchLabels: { app: 'cart' } }, rules: [{}] }, { name: 'other-cart', namespace: 'bank' }),
  ];
  const cases: Array<[string, WorkloadRef, string[]]> = [
    ['cart v1 in shop', { namespace: 'shop', labels: { app: 'cart', version: 'v1' } }, ['istio-system/mesh', 'shop/ns', 'shop/cart']],
    ['cart v2 in shop', { namespace: 'shop', labels: { app: 'cart', version: 'v2' } }, ['istio-system/mesh', 'shop/ns', 'shop/cart', 'shop/cart-v2']],
    ['web in shop', { namespace: 'shop', labels: { app: 'web' } }, ['istio-system/mesh', 'shop/ns']],
    ['db in shop: a root-namespace selector reaches every namespace', { namespace: 'shop', labels: { tier: 'db' } }, ['istio-system/mesh', 'istio-system/mesh-db', 'shop/ns']],
    ['cart in bank', { namespace: 'bank', labels: { app: 'cart' } }, ['istio-system/mesh', 'bank/other-ns', 'bank/other-cart']],
    ['namespace without policies: mesh-wide only', { namespace: 'empty', labels: {} }, ['istio-system/mesh']],
    ['workload in the root namespace', { namespace: 'istio-system', labels: { tier: 'db' } }, ['istio-system/mesh', 'istio-system/mesh-db']],
  ];
  const index = new PolicyIndex(all);
  for (const [name, w, expected] of cases) {
    test(name, () => {
      assert.deepEqual(
        applicablePolicies(all, w).map((p) => p.key),
        expected,
      );
      assert.deepEqual(
        index.applicable(w).map((p) => p.key),
        expected,
        'PolicyIndex gives the same answer',
      );
    });
  }

  test('a different root namespace changes what is mesh-wide', () => {
    assert.deepEqual(
      applicablePolicies(all, { namespace: 'shop', labels: {} }, 'bank').map((p) => p.key),
      ['shop/ns', 'bank/other-ns'],
    );
    assert.deepEqual(
      new PolicyIndex(all, 'bank').applicable({ namespace: 'shop', labels: {} }).map((p) => p.key),
      ['shop/ns', 'bank/other-ns'],
    );
  });

  test('PolicyIndex.evaluate decides for the workload', () => {
    const idx = new PolicyIndex([
      policy({ selector: { matchLabels: { app: 'cart' } }, rules: [{ from: [{ source: { namespaces: ['frontend'] } }] }] }, { name: 'allow-frontend' }),
      policy({ action: 'DENY', rules: [{ to: [{ operation: { ports: ['22'] } }] }] }, { name: 'no-ssh' }),
    ]);
    const cart = { namespace: 'shop', labels: { app: 'cart' } };
    const web = { namespace: 'shop', labels: { app: 'web' } };
    assert.equal(idx.evaluate(cart, conn()).allowed, true);
    assert.equal(idx.evaluate(cart, conn({ srcIdentity: 'spiffe://cluster.local/ns/x/sa/y' })).allowed, false);
    assert.equal(idx.evaluate(web, conn({ srcIdentity: null })).allowed, true);
    assert.equal(idx.evaluate(web, conn({ dstPort: 22 })).reason, 'denied by DENY policy shop/no-ssh rule 0: port 22');
    assert.equal(idx.size, 2);
  });
});

describe('realistic YAML (Istio documented shapes)', () => {
  const yaml = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: shop
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: shop
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/curl"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/curl"]
    to:
    - operation:
        ports: ["8000"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-legacy
  namespace: shop
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["legacy"]
    - source:
        ipBlocks: ["192.0.2.0/24", "2001:db8:bad::/48"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-plaintext
  namespace: istio-system
spec:
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["*"]
    to:
    - operation:
        notPorts: ["15021"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit-admin
  namespace: shop
spec:
  action: AUDIT
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
        ports: ["8000"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: viewer-waypoint
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin-legacy-port
  namespace: shop
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: UNSET
  portLevelMtls:
    "9000":
      mode: PERMISSIVE
`;
  const objects = parseObjects(yaml, 'examples/policies.yaml');
  const authz = objects.filter((o) => o.kind === 'AuthorizationPolicy').map((o) => translateAuthorizationPolicy(o));
  const policies = authz.flatMap((r) => (r.policy ? [r.policy] : []));
  const peers = objects.filter((o) => o.kind === 'PeerAuthentication').map((o) => translatePeerAuthentication(o).policy);
  const httpbin: WorkloadRef = { namespace: 'shop', labels: { app: 'httpbin', version: 'v1' } };
  const curl = 'spiffe://cluster.local/ns/default/sa/curl';

  test('everything translates; the waypoint policy is left to the waypoint', () => {
    assert.deepEqual(
      policies.map((p) => `${p.key}:${p.action}:${p.scope}`),
      ['shop/allow-nothing:ALLOW:namespace', 'shop/httpbin:ALLOW:workload', 'shop/deny-legacy:DENY:namespace', 'istio-system/deny-plaintext:DENY:mesh', 'shop/audit-admin:AUDIT:namespace'],
    );
    const waypoint = authz[5]!;
    assert.equal(waypoint.policy, null);
    assert.match(waypoint.warnings[0]!, /^examples\/policies\.yaml \(document 6\): AuthorizationPolicy "shop\/viewer-waypoint": has targetRefs/);
  });

  test('the HTTP rule of the httpbin policy is dropped, its port rule kept', () => {
    const p = policies[1]!;
    assert.deepEqual(
      p.rules.map((r) => [r.index, r.summary]),
      [[1, 'source principal cluster.local/ns/default/sa/curl, port 8000']],
    );
    assert.equal(p.warnings.length, 1);
    assert.match(p.warnings[0]!, /spec\.rules\[0\] dropped at L4: to\[0\]\.operation\.methods, to\[0\]\.operation\.paths, to\[1\]\.operation\.methods, to\[1\]\.operation\.paths, when\[0\] \(request\.auth\.claims\[iss\]\) are L7 attributes/);
  });

  const applicable = applicablePolicies(policies, httpbin);
  const cases: Array<[string, Partial<ConnectionAttributes>, boolean, string]> = [
    ['curl to port 8000', { srcIdentity: curl, dstPort: 8000 }, true, 'allowed by ALLOW policy shop/httpbin rule 1: source principal cluster.local/ns/default/sa/curl, port 8000'],
    ['curl to another port', { srcIdentity: curl, dstPort: 8080 }, false, 'denied: ALLOW policies apply (shop/allow-nothing, shop/httpbin) but none matched'],
    ['namespace test (its only rule was HTTP)', { srcIdentity: 'spiffe://cluster.local/ns/test/sa/x', dstPort: 8000 }, false, 'denied: ALLOW policies apply (shop/allow-nothing, shop/httpbin) but none matched'],
    ['plaintext is denied mesh-wide', { srcIdentity: null, dstPort: 8000 }, false, 'denied by DENY policy istio-system/deny-plaintext rule 0: source principal not *, port not 15021'],
    ['plaintext health probe port is not', { srcIdentity: null, dstPort: 15021 }, false, 'denied: ALLOW policies apply (shop/allow-nothing, shop/httpbin) but none matched'],
    ['legacy IPv6 block', { srcIdentity: curl, srcIp: '2001:db8:bad::7', dstPort: 8000 }, false, 'denied by DENY policy shop/deny-legacy rule 0: source namespace legacy or source ip 192.0.2.0/24 or 2001:db8:bad::/48'],
  ];
  for (const [name, c, allowed, reason] of cases) {
    test(name, () => {
      const d = evaluateL4(applicable, conn(c));
      assert.equal(d.allowed, allowed);
      assert.equal(d.reason, reason);
    });
  }

  test('the AUDIT policy records port 8000 (its path is ignored, broader)', () => {
    assert.deepEqual(evaluateL4(applicable, conn({ srcIdentity: curl, dstPort: 8000 })).audited, ['shop/audit-admin']);
  });

  test('PeerAuthentication: mesh STRICT, port 9000 of httpbin PERMISSIVE', () => {
    assert.equal(peerAuthMode(peers, httpbin, 8000), 'STRICT');
    assert.equal(peerAuthMode(peers, httpbin, 9000), 'PERMISSIVE');
    assert.equal(peerAuthMode(peers, { namespace: 'shop', labels: { app: 'web' } }, 9000), 'STRICT');
  });
});

describe('PeerAuthentication', () => {
  function pa(name: string, namespace: string, spec: Record<string, unknown>, created?: string): PeerAuthentication {
    const o = object('PeerAuthentication', name, namespace, spec);
    if (created) (o.metadata as Record<string, unknown>).creationTimestamp = created;
    return translatePeerAuthentication(o).policy;
  }
  const mode = (m: string): Record<string, unknown> => ({ mtls: { mode: m } });
  const sel = { selector: { matchLabels: { app: 'cart' } } };
  const cart: WorkloadRef = { namespace: 'shop', labels: { app: 'cart' } };

  const cases: Array<[string, PeerAuthentication[], number, string]> = [
    ['nothing → PERMISSIVE', [], 80, 'PERMISSIVE'],
    ['mesh STRICT', [pa('m', 'istio-system', mode('STRICT'))], 80, 'STRICT'],
    ['namespace overrides mesh', [pa('m', 'istio-system', mode('STRICT')), pa('n', 'shop', mode('PERMISSIVE'))], 80, 'PERMISSIVE'],
    ['namespace UNSET inherits mesh', [pa('m', 'istio-system', mode('STRICT')), pa('n', 'shop', mode('UNSET'))], 80, 'STRICT'],
    ['no mtls at all = UNSET', [pa('m', 'istio-system', mode('STRICT')), pa('n', 'shop', {})], 80, 'STRICT'],
    ['workload overrides namespace', [pa('n', 'shop', mode('STRICT')), pa('w', 'shop', { ...sel, ...mode('DISABLE') })], 80, 'DISABLE'],
    ['workload UNSET inherits namespace', [pa('n', 'shop', mode('STRICT')), pa('w', 'shop', { ...sel, ...mode('UNSET') })], 80, 'STRICT'],
    ['other namespace does not apply', [pa('n', 'bank', mode('STRICT'))], 80, 'PERMISSIVE'],
    ['selector not matching does not apply', [pa('w', 'shop', { selector: { matchLabels: { app: 'web' } }, ...mode('STRICT') })], 80, 'PERMISSIVE'],
    ['port-level overrides workload', [pa('w', 'shop', { ...sel, ...mode('STRICT'), portLevelMtls: { 9000: { mode: 'PERMISSIVE' } } })], 9000, 'PERMISSIVE'],
    ['port-level for another port', [pa('w', 'shop', { ...sel, ...mode('STRICT'), portLevelMtls: { 9000: { mode: 'PERMISSIVE' } } })], 80, 'STRICT'],
    ['port-level STRICT over PERMISSIVE namespace', [pa('n', 'shop', mode('PERMISSIVE')), pa('w', 'shop', { ...sel, portLevelMtls: { '8443': { mode: 'STRICT' } } })], 8443, 'STRICT'],
    ['port-level UNSET inherits', [pa('n', 'shop', mode('STRICT')), pa('w', 'shop', { ...sel, ...mode('DISABLE'), portLevelMtls: { 80: { mode: 'UNSET' } } })], 80, 'DISABLE'],
    ['root-namespace selector is ignored (as in Istio)', [pa('w', 'istio-system', { ...sel, ...mode('STRICT') })], 80, 'PERMISSIVE'],
    ['oldest mesh policy wins', [pa('b', 'istio-system', mode('PERMISSIVE'), '2024-01-02T00:00:00Z'), pa('a', 'istio-system', mode('STRICT'), '2024-01-01T00:00:00Z')], 80, 'STRICT'],
    ['oldest workload policy wins', [pa('a', 'shop', { ...sel, ...mode('STRICT') }, '2024-03-01T00:00:00Z'), pa('b', 'shop', { ...sel, ...mode('DISABLE') }, '2024-02-01T00:00:00Z')], 80, 'DISABLE'],
    ['without timestamps, the first by name wins', [pa('b', 'shop', mode('DISABLE')), pa('a', 'shop', mode('STRICT'))], 80, 'STRICT'],
  ];
  for (const [name, all, port, expected] of cases) {
    test(name, () => assert.equal(peerAuthMode(all, cart, port), expected));
  }

  test('a workload in the root namespace gets the mesh policy', () => {
    assert.equal(peerAuthMode([pa('m', 'istio-system', mode('STRICT'))], { namespace: 'istio-system', labels: {} }, 80), 'STRICT');
  });

  test('translation: scope, selector, port map, created', () => {
    const p = pa('w', 'shop', { ...sel, ...mode('STRICT'), portLevelMtls: { '9000': { mode: 'DISABLE' } } }, '2024-01-01T00:00:00Z');
    assert.deepEqual(p, {
      key: 'shop/w',
      name: 'w',
      namespace: 'shop',
      scope: 'workload',
      selector: { app: 'cart' },
      mode: 'STRICT',
      portLevelMtls: { 9000: 'DISABLE' },
      created: '2024-01-01T00:00:00Z',
    });
    assert.equal(pa('m', 'istio-system', {}).scope, 'mesh');
    assert.equal(pa('n', 'shop', {}).scope, 'namespace');
    const rootSel = translatePeerAuthentication(object('PeerAuthentication', 'w', 'istio-system', { ...sel, ...mode('STRICT') }));
    assert.match(rootSel.warnings[0]!, /selector in the root namespace istio-system is ignored/);
  });

  const PA = 'PeerAuthentication';
  const errors: Array<[string, Record<string, unknown>, string[]]> = [
    ['unknown mode', { mtls: { mode: 'ON' } }, ['spec.mtls.mode must be one of UNSET, DISABLE, PERMISSIVE, STRICT', '"ON"']],
    ['mtls not an object', { mtls: 'STRICT' }, ['spec.mtls must be an object with mode']],
    ['portLevelMtls without selector', { portLevelMtls: { 80: { mode: 'STRICT' } } }, ['spec.portLevelMtls needs spec.selector']],
    ['portLevelMtls bad port', { ...sel, portLevelMtls: { http: { mode: 'STRICT' } } }, ['spec.portLevelMtls: "http" is not a port number']],
    ['portLevelMtls port 0', { ...sel, portLevelMtls: { 0: { mode: 'STRICT' } } }, ['"0" is not a port number']],
    ['portLevelMtls bad mode', { ...sel, portLevelMtls: { 80: { mode: 'strict' } } }, ['spec.portLevelMtls.80.mode must be one of']],
    ['portLevelMtls empty', { ...sel, portLevelMtls: {} }, ['spec.portLevelMtls, if set, must have at least one port']],
    ['unknown field', { mode: 'STRICT' }, ['spec: unknown field "mode"']],
  ];
  for (const [name, spec, fragments] of errors) {
    test(`error: ${name}`, () => refuses(PA, spec, ...fragments));
  }
});

describe('ipWords', () => {
  const cases: Array<[string, number[] | null]> = [
    ['10.0.0.1', [0x0a000001]],
    ['255.255.255.255', [0xffffffff]],
    ['0.0.0.0', [0]],
    ['::', [0, 0, 0, 0]],
    ['::1', [0, 0, 0, 1]],
    ['2001:db8::1', [0x20010db8, 0, 0, 1]],
    ['2001:DB8:0:0:0:0:0:1', [0x20010db8, 0, 0, 1]],
    ['1:2:3:4:5:6:7::', [0x00010002, 0x00030004, 0x00050006, 0x00070000]],
    ['::ffff:10.1.2.3', [0x0a010203]],
    ['64:ff9b::192.0.2.1', [0x0064ff9b, 0, 0, 0xc0000201]],
    ['fe80::1%eth0', [0xfe800000, 0, 0, 1]],
    ['1.2.3', null],
    ['256.1.1.1', null],
    ['01.2.3.4', null],
    ['1.2.3.4.', null],
    [':::', null],
    ['1:::2', null],
    ['1::2::3', null],
    ['12345::', null],
    ['1:2:3:4:5:6:7:8:9', null],
    ['1:', null],
    ['g::1', null],
    ['', null],
  ];
  for (const [ip, expected] of cases) {
    test(`${JSON.stringify(ip)} → ${JSON.stringify(expected)}`, () => assert.deepEqual(ipWords(ip), expected));
  }
});
