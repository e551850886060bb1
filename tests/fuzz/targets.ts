/**
 * One fuzz target per parser that reads input from outside the process. Each documents the
 * errors it may throw; anything else, or a broken invariant (thrown as InvariantError), is a crash.
 */
import { isIP } from 'node:net';
import { Packr } from 'msgpackr';
import { stringify } from 'yaml';
import { formatAddress, parseAddress } from '../../shared/model/types.js';
import { forwardedHost, checkInboundTarget } from '../../ztunnel/inbound.js';
import { controlService } from '../../shared/control/protocol.js';
import { checkAgentMessage, encodeFrame, FrameDecoder, MAX_FRAME } from '../../shared/nodeagent/protocol.js';
import { plan, PluginFailure } from '../../cni/plugin.js';
import { ConfigError, parseObjects, type KubeObject } from '../../shared/config/objects.js';
import { translate } from '../../shared/config/translate.js';
import { translateAuthorizationPolicy, translatePeerAuthentication } from '../../shared/policy/translate.js';
import { evaluateL4, peerAuthMode } from '../../shared/policy/evaluate.js';
import { Http1ProtocolError, RequestParser, ResponseParser } from '../../waypoint/http1.js';
import type { FuzzTarget, Random } from './fuzz.js';

/** A property the parser promises was broken: always a crash. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

function invariant(ok: unknown, message: string): asserts ok {
  if (!ok) throw new InvariantError(message);
}

const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');

// ---------------------------------------------------------------------------------------------
// HBONE request: `:authority` and the `forwarded` header of an inbound CONNECT

const hbone: FuzzTarget = {
  name: 'hbone-request',
  describe: 'HBONE CONNECT request fields: parseAddress(:authority), checkInboundTarget, forwardedHost(forwarded)',
  seeds: ['10.0.1.1:8080', '[fd00::1]:443', '127.0.0.1:15008', 'for="10.0.1.5:42000";host=web.shop.svc.cluster.local', 'for="[fd00::5]:1"', 'host="echo.shop.svc.cluster.local";for=x', '255.255.255.255:65535', '[::ffff:10.0.0.1]:80'].map(utf8),
  dictionary: [':', '[', ']', '::', '.', 'for=', ';host=', '"', '%', '\0', '\r\n', '65535', '65536', '0', '::ffff:', '1.2.3.4', ',', ' '],
  maxLen: 512,
  run(input) {
    const text = input.toString('latin1');
    const a = parseAddress(text);
    let out = 'none';
    if (a) {
      invariant(isIP(a.ip) !== 0, `parseAddress gave a non-IP ${a.ip}`);
      invariant(Number.isInteger(a.port) && a.port >= 1 && a.port <= 65535, `port ${a.port}`);
      // leading zeros in the port and any IPv6 spelling are valid; formatting must be stable
      const again = parseAddress(formatAddress(a));
      invariant(again && again.ip === a.ip && again.port === a.port, `parseAddress(formatAddress(parseAddress(${JSON.stringify(text)}))) differs`);
      const refused = checkInboundTarget({ ip: a.ip }, a);
      out = `${isIP(a.ip)}:${refused ? refused.flag : 'accepted'}:${String(a.port).length}`;
    }
    const h = forwardedHost(text);
    if (h !== null) invariant(/^[A-Za-z0-9.-]+$/.test(h), `forwardedHost gave ${JSON.stringify(h)}`);
    const hs = forwardedHost([text, 'x']);
    invariant(hs === h, 'forwardedHost of a header list reads the first value');
    return `${out}:${h === null ? 'nohost' : `host${Math.min(h.length, 9)}`}`;
  },
  expected: () => false,
};

// ---------------------------------------------------------------------------------------------
// Control protocol: the MessagePack deserializers of every gRPC method, both directions

const packr = new Packr({ useRecords: false, moreTypes: false });
const controlSeeds = [
  { node: 'node-1' },
  { csrPem: '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n', identity: 'spiffe://cluster.local/ns/shop/sa/web' },
  { certPem: 'x', chainPem: ['a'], rootsPem: ['b', 'c'] },
  {
    type: 'snapshot',
    version: 3,
    workloads: [{ uid: 'shop/web', name: 'web', namespace: 'shop', serviceAccount: 'web', node: 'node-1', ip: '10.0.1.1', labels: { app: 'web' }, protocol: 'HBONE', ready: true }],
    services: [{ key: 'shop/web', name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vip: '10.96.0.1', ports: [{ port: 80, targetPort: 8080 }], endpoints: ['shop/web'] }],
    removedWorkloads: [],
    removedServices: ['x/y'],
    policies: [],
  },
  {
    node: 'node-1',
    openConnections: 1,
    connections: [{ direction: 'outbound', src: '10.0.1.1:40000', dst: '10.0.2.1:80', srcWorkload: 'shop/web', dstWorkload: null, srcIdentity: 'spiffe://cluster.local/ns/shop/sa/web', dstIdentity: null, service: null, protocol: 'HBONE', mtls: true, ageMs: 12 }],
    certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', serial: '0a', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', state: 'available' }],
    denies: [{ time: '2026-01-01T00:00:00.000Z', direction: 'inbound', src: '10.0.9.9:1', srcIdentity: null, dst: '10.0.1.1:80', dstWorkload: 'shop/web', policy: 'shop/deny', rule: 0, reason: 'denied' }],
  },
  { nextReportMs: 2000 },
].map((m) => packr.pack(m) as Buffer);
const deserializers = Object.entries(controlService).flatMap(([name, d]) => [
  [`${name} request`, d.requestDeserialize],
  [`${name} response`, d.responseDeserialize],
] as const);

const control: FuzzTarget = {
  name: 'control-messages',
  describe: 'control protocol: requestDeserialize/responseDeserialize of Watch, Sign and Report (MessagePack over gRPC)',
  seeds: controlSeeds,
  dictionary: [Buffer.from([0xc0]), Buffer.from([0xc1]), Buffer.from([0xdc, 0xff, 0xff]), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0xdf, 0x7f, 0xff, 0xff, 0xff]), Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff]), Buffer.from([0xd4, 0xff, 0x00]), Buffer.from([0xc7, 0x04, 0xff]), Buffer.from([0xcb]), Buffer.from('\xa4type', 'latin1'), Buffer.from('\xa7version', 'latin1'), Buffer.from('\xa9__proto__', 'latin1'), Buffer.from([0x90]), Buffer.from([0x80])],
  maxLen: 8192,
  run(input) {
    const outs: string[] = [];
    for (const [, des] of deserializers) {
      try {
        const v = des(input) as unknown;
        invariant(typeof v === 'object' && v !== null, 'a deserializer accepted a non-object');
        outs.push(`ok${Object.keys(v).length}`);
      } catch (err) {
        if (err instanceof InvariantError || !isControlRefusal(err)) throw err;
        // why it was refused, digits folded: inputs failing differently grow the corpus
        outs.push((err as Error).message.replace(/^malformed [a-z ]+ message:? ?/, '').replace(/\d+/g, 'N').slice(0, 40));
      }
    }
    return outs.join('|');
  },
  expected: isControlRefusal,
};

/** What a control deserializer may throw: it refuses with an Error naming the message. */
function isControlRefusal(err: unknown): boolean {
  return err instanceof Error && err.constructor === Error && /^malformed .+ message/.test(err.message);
}

// ---------------------------------------------------------------------------------------------
// Node-agent socket: framing (FrameDecoder) and message validation (checkAgentMessage)

const agentSeeds = [
  [{ type: 'add', id: 1, uid: 'shop/web', name: 'web', namespace: 'shop', serviceAccount: 'web', ip: '10.249.1.11', netns: '/run/netns/ambit-pod-1' }],
  [{ type: 'del', id: 2, uid: 'shop/web' }, { type: 'snapshot-sent', id: 3 }],
  [{ type: 'ack', id: 4, ok: false, error: 'x' }],
].map((msgs) => Buffer.concat(msgs.map((m) => encodeFrame(m))));

/** FrameDecoder refused the byte stream (what ztunnel answers by closing that connection). */
class FrameRefused extends Error {
  constructor(override readonly cause: Error) {
    super(`${cause.constructor.name}: ${cause.message}`);
  }
}

const nodeAgent: FuzzTarget = {
  name: 'nodeagent-frames',
  describe: 'node-agent socket: FrameDecoder.push over random chunkings, then checkAgentMessage on each frame',
  seeds: agentSeeds,
  dictionary: [Buffer.from([0, 0, 0, 0]), Buffer.from([0, 1, 0, 0]), Buffer.from([0, 1, 0, 1]), Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from('\xa4type\xa3add', 'latin1'), Buffer.from('\xa2id', 'latin1'), Buffer.from('\xa2ip', 'latin1'), Buffer.from('\xa5netns\xa1/', 'latin1'), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0xc1]), Buffer.from('\xa4type\xcf\xff\xff\xff\xff\xff\xff\xff\xff', 'latin1'), Buffer.from([0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('\xa4type\xda\xff\x00', 'latin1'), Buffer.from('\xa4type\x81\xa1a\xc0', 'latin1')],
  maxLen: 8192,
  run(input) {
    const d = new FrameDecoder();
    let frames: unknown[] = [];
    // the bytes cut into chunks where the input's first byte says (framing must not depend on it)
    const step = 1 + ((input[0] ?? 0) % 17);
    for (let i = 0; i < input.length; i += step) {
      try {
        frames = frames.concat(d.push(input.subarray(i, i + step)));
      } catch (err) {
        // push refuses a stream it cannot frame or decode: documented, the connection is closed
        if (err instanceof Error && !(err instanceof InvariantError)) throw new FrameRefused(err);
        throw err;
      }
    }
    let outcome = '';
    for (const f of frames) {
      const m = checkAgentMessage(f);
      if (typeof m === 'string') {
        // the refusal goes back in an ack, as inpod.ts sends it
        encodeFrame({ type: 'ack', id: -1, ok: false, error: m.slice(0, 1024) });
        outcome += 'r';
        continue;
      }
      invariant(Number.isInteger(m.id), 'accepted without an integer id');
      if (m.type === 'add') {
        for (const k of ['uid', 'name', 'namespace', 'serviceAccount', 'ip', 'netns'] as const) invariant(typeof m[k] === 'string' && m[k].length > 0, `add.${k}`);
        invariant(isIP(m.ip) !== 0 && m.netns.startsWith('/'), 'add: ip and netns');
      } else if (m.type === 'del') {
        invariant(typeof m.uid === 'string' && m.uid.length > 0, 'del.uid');
      } else {
        invariant(m.type === 'snapshot-sent', `type ${String((m as { type: unknown }).type)}`);
      }
      outcome += m.type[0];
    }
    return outcome;
  },
  // FrameDecoder.push refuses with these two (inpod.ts closes the connection); checkAgentMessage never throws
  expected: (err) => err instanceof FrameRefused && err.cause.constructor === Error && /exceeds|^malformed node-agent frame: /.test(err.cause.message),
};

// ---------------------------------------------------------------------------------------------
// CNI plugin: environment + configuration on stdin

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'VERSION', 'GC', '', 'add'];
const cniSeeds = [
  { cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'ambit-cni', prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.249.1.11/24', interface: 0 }] } },
  { cniVersion: '1.1.0', name: 'n', type: 'ambit-cni', agentSocket: '/run/ambit/cni.sock', timeoutMs: 5000 },
  { cniVersion: '0.4.0', name: 'n', type: 'ambit-cni', prevResult: { ips: [{ version: '6', address: 'fd00::1/64' }, { address: '10.0.0.1/8', interface: 1 }], interfaces: [{ name: 'veth' }, { name: 'eth0', sandbox: '/x' }] } },
].map((c) => utf8(JSON.stringify(c)));

const cni: FuzzTarget = {
  name: 'cni-stdin',
  describe: 'CNI plugin: plan(env, stdin) with the command and CNI_ARGS picked from the input, the rest as stdin',
  seeds: cniSeeds.flatMap((s) => [0, 1, 2, 3].map((c) => Buffer.concat([Buffer.from([c]), s]))),
  dictionary: ['"cniVersion"', '"prevResult"', '"ips"', '"interfaces"', '"sandbox"', '"address"', '"interface"', '"agentSocket"', '"timeoutMs"', '"type"', '"ambit-cni"', '"1.1.0"', '"0.4.0"', 'null', 'true', '[]', '{}', '-1', '1e400', '"/"', '\\u0000', '"__proto__"', '/24', '::', ':'],
  maxLen: 4096,
  run(input) {
    const sel = input[0] ?? 0;
    const env: Record<string, string | undefined> = {
      CNI_COMMAND: COMMANDS[sel % COMMANDS.length],
      CNI_CONTAINERID: sel & 0x08 ? 'ctr-1' : sel & 0x10 ? '../../etc' : undefined,
      CNI_NETNS: sel & 0x20 ? '/var/run/netns/pod' : undefined,
      CNI_IFNAME: 'eth0',
      CNI_ARGS: sel & 0x40 ? 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_UID=u' : sel & 0x80 ? 'IgnoreUnknown=1;bad' : undefined,
    };
    const p = plan(env, input.subarray(1).toString('utf8'));
    invariant(p.kind === 'print' || p.kind === 'call', 'plan kind');
    if (p.kind === 'call') invariant(p.config.agentSocket.startsWith('/') && p.config.timeoutMs > 0 && Number.isFinite(p.config.timeoutMs), 'validated config');
    if (p.kind === 'call' && p.call.body?.ips) for (const ip of p.call.body.ips) invariant(isIP(ip) !== 0, `pod ip ${ip}`);
    return `${p.kind}:${p.kind === 'call' ? p.command : ''}`;
  },
  expected: (err) => err instanceof PluginFailure,
};

// ---------------------------------------------------------------------------------------------
// YAML config: parseObjects, then translate (pods, services, policies) into the mesh model

const yamlSeeds = [
  `apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: shop, labels: { app: web } }
spec: { nodeName: node-1, serviceAccountName: web }
status: { podIP: 10.0.1.1, phase: Running }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.96.0.1, selector: { app: web }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
`,
  `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow, namespace: shop, annotations: { istio.io/dry-run: "true" } }
spec:
  selector: { matchLabels: { app: web } }
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/shop/sa/client", "*/sa/x"], notNamespaces: [legacy] } }]
      to: [{ operation: { ports: ["8080"], methods: [GET] } }]
      when: [{ key: source.ip, values: ["10.0.0.0/8", "fd00::/8"] }, { key: destination.port, notValues: ["22"] }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: shop }
spec: { selector: { matchLabels: { app: web } }, mtls: { mode: STRICT }, portLevelMtls: { "8080": { mode: PERMISSIVE } } }
`,
  `apiVersion: v1
kind: List
items:
  - apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: { name: deny, namespace: istio-system }
    spec: { action: DENY, rules: [{ from: [{ source: { ipBlocks: ["::ffff:10.0.0.0/104"], serviceAccounts: [shop/a] } }] }] }
  - apiVersion: v1
    kind: Pod
    metadata: { name: p, namespace: default, uid: abc }
    spec: { nodeName: n, hostNetwork: false, serviceAccount: "" }
    status: { podIP: "fd00::1", phase: Pending }
`,
].map(utf8);

const yamlConfig: FuzzTarget = {
  name: 'yaml-config',
  describe: 'YAML config: parseObjects (documents, Lists) then translate (Pods, Services, AuthorizationPolicy, PeerAuthentication)',
  seeds: yamlSeeds,
  dictionary: ['---\n', '\n  ', ': ', '- ', '{', '}', '[', ']', '&a ', '*a', '!!binary ', '!!int ', '<<: *a', '? ', '|\n', 'null', '~', '.nan', '0x10', '1e999', 'kind: ', 'apiVersion: ', 'metadata: ', 'spec: ', 'rules: ', 'from: ', 'source: ', 'principals: ', 'ipBlocks: ', 'ports: ', 'when: ', 'key: ', 'values: ', 'selector: ', 'matchLabels: ', 'portLevelMtls: ', 'mtls: ', 'mode: ', 'action: ', 'targetRefs: ', 'namespace: ', 'name: ', '__proto__: ', 'constructor: ', 'creationTimestamp: 2024-01-01T00:00:00Z', 'AuthorizationPolicy', 'PeerAuthentication', 'Service', 'Pod', 'List', 'items: '],
  maxLen: 2048,
  run(input) {
    const objects = parseObjects(input.toString('utf8'), 'fuzz.yaml');
    const problems: { severity: string }[] = [];
    const snap = translate(objects, problems as never);
    for (const p of snap.policies ?? []) invariant(typeof p.key === 'string' && Array.isArray(p.rules), 'policy shape');
    return `${objects.length}:${snap.workloads.length}:${snap.services.length}:${snap.policies?.length}:${problems.length}`;
  },
  expected: (err) => err instanceof ConfigError,
};

// ---------------------------------------------------------------------------------------------
// Policy translation, structure-aware: mutate the object tree of a policy, translate, evaluate

const policySeeds: KubeObject[] = [
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'p', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'web' } },
      action: 'ALLOW',
      rules: [
        { from: [{ source: { principals: ['cluster.local/ns/a/sa/b', 'spiffe://x/*'], notIpBlocks: ['10.1.0.0/16'] } }, { source: { serviceAccounts: ['a', 'ns/b'] } }], to: [{ operation: { ports: [80, '443'], notPorts: ['22'], paths: ['/x'] } }], when: [{ key: 'request.headers[x]', values: ['y'] }, { key: 'source.serviceAccount', values: ['shop/a'] }] },
        {},
      ],
    },
  },
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'd', namespace: 'istio-system' }, spec: { action: 'DENY', rules: [{ from: [{ source: { remoteIpBlocks: ['1.2.3.4'], namespaces: ['*'] } }] }] } },
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 't', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', name: 'web' }], action: 'CUSTOM', provider: { name: 'x' } } },
  { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'pa', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { '8080': { mode: 'STRICT' } } } },
];

const WEIRD: unknown[] = [null, true, false, 0, -1, 1.5, 65536, Number.NaN, Number.POSITIVE_INFINITY, '', '*', '**', 'a*b', '10.0.0.0/33', '::/0', '::ffff:1.2.3.4/96', '1.2.3.4%eth0', '/8', 'spiffe://', 'ALLOW', 'DENY', 'AUDIT', 'CUSTOM', 'STRICT', '99999', '0', '-1', [], {}, [null], [{}], { source: {} }, { operation: {} }, { key: 'destination.port', values: ['x'] }, { key: 'remote.ip', values: ['bad'] }, { key: '' }, 'x'.repeat(300), new Date(0), ['a/b/c'], { matchLabels: { a: 1 } }];

function clone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clone);
  if (v instanceof Date) return new Date(v.getTime());
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clone(x)]));
  return v;
}

/** Every container (object or array) in a tree, with its parent path. */
function containers(v: unknown, out: (Record<string, unknown> | unknown[])[] = []): (Record<string, unknown> | unknown[])[] {
  if (Array.isArray(v)) {
    out.push(v);
    v.forEach((x) => containers(x, out));
  } else if (v && typeof v === 'object' && !(v instanceof Date)) {
    out.push(v as Record<string, unknown>);
    Object.values(v).forEach((x) => containers(x, out));
  }
  return out;
}

const KEYS = ['selector', 'matchLabels', 'action', 'rules', 'from', 'to', 'when', 'source', 'operation', 'principals', 'notPrincipals', 'namespaces', 'serviceAccounts', 'notServiceAccounts', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'requestPrincipals', 'ports', 'notPorts', 'methods', 'hosts', 'key', 'values', 'notValues', 'targetRef', 'targetRefs', 'provider', 'mtls', 'mode', 'portLevelMtls', '8080', '0', '__proto__', 'constructor'];

function treeMutate(o: KubeObject, rnd: Random): KubeObject {
  const root = clone(o) as KubeObject;
  const n = 1 + rnd.int(4);
  for (let k = 0; k < n; k++) {
    const all = containers(root.spec ?? {});
    if (!all.length) break;
    const c = rnd.pick(all);
    if (Array.isArray(c)) {
      const op = rnd.int(4);
      if (op === 0 && c.length) c.splice(rnd.int(c.length), 1);
      else if (op === 1) c.push(clone(rnd.pick(WEIRD)));
      else if (op === 2 && c.length) c[rnd.int(c.length)] = clone(rnd.pick(WEIRD));
      else if (c.length) c.push(clone(c[rnd.int(c.length)]));
    } else {
      const keys = Object.keys(c);
      const op = rnd.int(4);
      if (op === 0 && keys.length) delete c[rnd.pick(keys)];
      else if (op === 1) Object.defineProperty(c, rnd.pick(KEYS), { value: clone(rnd.pick(WEIRD)), enumerable: true, writable: true, configurable: true });
      else if (op === 2 && keys.length) c[rnd.pick(keys)] = clone(rnd.pick(WEIRD));
      else if (keys.length) Object.defineProperty(c, rnd.pick(KEYS), { value: clone(c[rnd.pick(keys)]), enumerable: true, writable: true, configurable: true });
    }
  }
  if (rnd.int(8) === 0) root.metadata = { ...root.metadata, namespace: rnd.pick(['istio-system', 'shop', 'default']) };
  if (rnd.int(16) === 0) (root.metadata as Record<string, unknown>).creationTimestamp = rnd.pick(['2024-01-01T00:00:00Z', 'yesterday', new Date(0), 5]);
  return root;
}

const policy: FuzzTarget = {
  name: 'policy-translation',
  describe: 'translateAuthorizationPolicy / translatePeerAuthentication on mutated object trees (JSON), then evaluateL4 / peerAuthMode on the result',
  seeds: policySeeds.map((p) => utf8(JSON.stringify(p))),
  dictionary: ['null', 'true', '[]', '{}', '"*"', '"10.0.0.0/8"', '"::/0"', '65536', '-1', '"__proto__"', '"ALLOW"', '"DENY"', '"key"', '"values"', '"source"', '"operation"', '"ports"'],
  maxLen: 8192,
  mutate(input, rnd) {
    let o: KubeObject;
    try {
      o = JSON.parse(input.toString('utf8')) as KubeObject;
      if (typeof o !== 'object' || o === null || typeof o.metadata !== 'object' || o.metadata === null) throw new Error('not an object');
    } catch {
      o = rnd.pick(policySeeds);
    }
    return utf8(JSON.stringify(treeMutate(o, rnd)));
  },
  run(input) {
    let o: KubeObject;
    try {
      o = JSON.parse(input.toString('utf8')) as KubeObject;
    } catch {
      return 'json';
    }
    if (typeof o !== 'object' || o === null || typeof o.metadata !== 'object' || o.metadata === null || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof o.metadata.name !== 'string') return 'shape';
    o.source = 'fuzz.json';
    const conn = { srcIp: '10.1.2.3', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/a', dstIp: '10.0.0.1', dstPort: 8080 };
    if (o.kind === 'PeerAuthentication') {
      const t = translatePeerAuthentication(o);
      const mode = peerAuthMode([t.policy], { namespace: 'shop', labels: { app: 'web' } }, 8080);
      return `pa:${mode}`;
    }
    const t = translateAuthorizationPolicy(o);
    if (!t.policy) return 'waypoint';
    const d = evaluateL4([t.policy], conn);
    const plain = evaluateL4([t.policy], { ...conn, srcIdentity: null, srcIp: 'fd00::1' });
    invariant(typeof d.allowed === 'boolean' && typeof plain.allowed === 'boolean', 'decision');
    return `ap:${t.policy.action}:${t.policy.rules.length}:${d.allowed}:${plain.allowed}`;
  },
  expected: (err) => err instanceof ConfigError,
};

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 messages as the waypoint parses them: requests from clients, responses from endpoints

/**
 * Parses `input` as a stream of messages, fed in pieces of `step` bytes (0: whole). Returns the
 * events as text, or the error. A parser must tell the same story however the bytes are split.
 */
function http1Events(kind: 'request' | 'response', input: Buffer, step: number): string {
  const out: string[] = [];
  let body = 0;
  let ended = 0;
  const events = {
    head: (h: { status?: number; method?: string; target?: string; headers: Record<string, unknown>; close: boolean }) => out.push(`head ${h.status ?? `${h.method} ${h.target}`} ${Object.keys(h.headers).length} ${h.close}`),
    data: (c: Buffer) => {
      body += c.length;
      invariant(c.length > 0, 'an empty data event');
    },
    end: (t: Record<string, unknown>) => {
      ended++;
      out.push(`end ${body} ${Object.keys(t).length}`);
      body = 0;
    },
  };
  try {
    if (kind === 'request') {
      const p = new RequestParser(events);
      const feed = (b: Buffer): void => {
        p.feed(b);
        // each answered request lets the next be parsed (a pipelined client)
        while (p.done && p.buffered > 0 && ended > 0) {
          ended--;
          p.next();
        }
      };
      if (step === 0) feed(input);
      else for (let i = 0; i < input.length; i += step) feed(input.subarray(i, i + step));
    } else {
      const p = new ResponseParser(events);
      p.expect('GET');
      if (step === 0) p.feed(input);
      else for (let i = 0; i < input.length; i += step) p.feed(input.subarray(i, i + step));
      p.finish();
    }
  } catch (err) {
    if (!(err instanceof Http1ProtocolError)) throw err;
    // where the split falls may decide whether the limit on a partial head or the parse fails first
    return `${out.join('|')}|error ${/too large|too long/.test(err.message) ? 'size' : 'malformed'}`;
  }
  invariant(body <= input.length, 'more body than input');
  return `${out.join('|')}|ok`;
}

function http1Target(kind: 'request' | 'response', seeds: string[], dictionary: string[]): FuzzTarget {
  return {
    name: `http1-${kind}`,
    describe: `waypoint/http1.ts ${kind === 'request' ? 'RequestParser (client requests, pipelined)' : 'ResponseParser (endpoint responses)'}: the same events whole, byte by byte and in 7-byte pieces`,
    seeds: seeds.map((t) => Buffer.from(t, 'latin1')),
    dictionary,
    maxLen: 2048,
    run(input) {
      const whole = http1Events(kind, input, 0);
      for (const step of [1, 7]) {
        const split = http1Events(kind, input, step);
        // an error found early in one split can be found late in another only at the same place
        invariant(split === whole || (split.endsWith('error size') && whole.endsWith('error malformed')) || (whole.endsWith('error size') && split.endsWith('error malformed')), `split ${step} differs: ${JSON.stringify(split)} vs ${JSON.stringify(whole)}`);
      }
      return whole.replace(/\d+/g, 'n').slice(-60);
    },
    expected: () => false,
  };
}

const HTTP_DICTIONARY = ['\r\n', '\r\n\r\n', ': ', 'HTTP/1.1', 'HTTP/1.0', 'content-length: ', 'Content-Length: 5', 'transfer-encoding: chunked', 'Transfer-Encoding: gzip, chunked', 'connection: close', 'connection: keep-alive, Upgrade', 'upgrade: websocket', 'expect: 100-continue', 'host: x', '0\r\n\r\n', 'ffffffffffff\r\n', '5;a=b\r\n', ' ', '\t', '\0', '\n', 'set-cookie: a', '-1', '00000000000000000001'];

const http1Request = http1Target(
  'request',
  [
    'GET / HTTP/1.1\r\nhost: a\r\n\r\n',
    'POST /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nhost: a\r\n\r\n',
    'PUT /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n',
    'GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nframes',
    'GET / HTTP/1.0\r\n\r\n',
  ],
  HTTP_DICTIONARY,
);

const http1Response = http1Target(
  'response',
  [
    'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello',
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x\r\n\r\n5\r\nhello\r\n0\r\nx: 1\r\n\r\n',
    'HTTP/1.0 200 OK\r\n\r\nuntil the close',
    'HTTP/1.1 204 No Content\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n',
  ],
  HTTP_DICTIONARY,
);

// keep a YAML round trip of the policy seeds in the YAML corpus too
yamlConfig.seeds.push(...policySeeds.map((p) => utf8(stringify(p))));

export const TARGETS: readonly FuzzTarget[] = [hbone, control, nodeAgent, cni, yamlConfig, policy, http1Request, http1Response];

export function targetByName(name: string): FuzzTarget {
  const t = TARGETS.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target "${name}"; one of ${TARGETS.map((x) => x.name).join(', ')}`);
  return t;
}

/** Bytes a frame header claims beyond the limit, for the node-agent dictionary's sake. */
export const OVERSIZED_FRAME_HEADER = (() => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(MAX_FRAME + 1, 0);
  return b;
})();
nodeAgent.dictionary!.push(OVERSIZED_FRAME_HEADER);
