// manifests/: they parse, refer to things that exist, grant no wildcard, and every RBAC rule is
// needed — proved by running each component's Kubernetes code paths against an API server that
// enforces exactly these RBAC objects, and checking that nothing is refused and every rule is used.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { FakeApiServer, eventually } from './fake-apiserver.js';
import { captureLogger, kubeConfigFor, namespace, pod, waypointGateway } from './fixtures.js';
import { CONTROL_PLANE_RESOURCES, KubeSource, MESH_RESOURCES, nodeAgentResources } from '../../../shared/config/kube-source.js';
import { CA_SECRET_NAME, CA_SECRET_NAMESPACE, ROOT_CERT_CONFIGMAP, kubeCaSecretApi, loadOrCreateCa, publishRoots } from '../../../control/ca-secret.js';
import { TokenReviewAuthenticator } from '../../../control/kube-auth.js';
import { WaypointController, WAYPOINT_CLASS } from '../../../control/waypoints.js';
import { ownImage } from '../../../control/kube-mode.js';
import { podAnnotator } from '../../../cni/kube-mode.js';
import { CONTROL_SERVER_NAME } from '../../../shared/control/protocol.js';
import * as grpc from '@grpc/grpc-js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const MANIFESTS = join(ROOT, 'manifests');
const DIST = join(ROOT, 'dist');
type Json = Record<string, unknown>;
type Obj = Json & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> } };

/** Every RBAC rule in manifests/, and the code that needs it (kept in step with the manifests). */
const RULE_USES: Record<string, string> = {
  'ClusterRole/ambit-control#0': 'KubeSource (control plane): list/watch Namespaces and Services',
  'ClusterRole/ambit-control#1': 'KubeSource: list/watch Pods; TokenReviewAuthenticator: get the pod a token is bound to; ownImage: get its own pod',
  'ClusterRole/ambit-control#2': 'KubeSource: list/watch EndpointSlices',
  'ClusterRole/ambit-control#3': 'KubeSource: list/watch AuthorizationPolicies and PeerAuthentications',
  'ClusterRole/ambit-control#4': 'KubeSource: list/watch Gateways, HTTPRoutes, GRPCRoutes',
  'ClusterRole/ambit-control#5': 'WaypointController: server-side apply of Gateway status (gateways/status patch)',
  'ClusterRole/ambit-control#6': 'TokenReviewAuthenticator: create TokenReviews',
  'ClusterRole/ambit-control#7': 'WaypointController: list/watch its Deployments, server-side apply them (create + patch)',
  'ClusterRole/ambit-control#8': 'WaypointController: server-side apply of waypoint Services and ServiceAccounts (create + patch)',
  'Role/ambit-system/ambit-control#0': 'loadOrCreateCa: get Secret ambit-ca',
  'Role/ambit-system/ambit-control#1': 'loadOrCreateCa: create Secret ambit-ca on first start',
  'Role/ambit-system/ambit-control#2': 'publishRoots: server-side apply creating ConfigMap ambit-root-cert',
  'Role/ambit-system/ambit-control#3': 'publishRoots: server-side apply of ConfigMap ambit-root-cert (patch)',
  'ClusterRole/ambit-cni#0': 'KubeSource (node agent): list/watch this node\'s Pods; podAnnotator: patch ambient.istio.io/redirection',
  'ClusterRole/ambit-cni#1': 'KubeSource (node agent): list/watch Namespaces',
};

function loadYaml(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  for (const d of docs) assert.deepEqual(d.errors, [], `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
  return docs.map((d) => d.toJS() as Obj).filter((o) => o !== null);
}

function kustomizationResources(dir: string): string[] {
  const k = loadYaml(join(dir, 'kustomization.yaml'))[0]!;
  return (k.resources as string[]).map((r) => join(dir, r));
}

const all = (): Obj[] => kustomizationResources(MANIFESTS).flatMap(loadYaml);
const crds = (): Obj[] => kustomizationResources(join(MANIFESTS, 'crds')).flatMap(loadYaml);
const find = (objs: Obj[], kind: string, name: string, ns?: string): Obj | undefined => objs.find((o) => o.kind === kind && o.metadata.name === name && (ns === undefined || o.metadata.namespace === ns));

function podSpec(o: Obj): Json {
  return ((o.spec as Json).template as Json).spec as Json;
}
function containers(o: Obj): Json[] {
  return podSpec(o).containers as Json[];
}
function flagValue(args: string[], flag: string): string | undefined {
  const a = args.find((x) => x.startsWith(`${flag}=`));
  return a?.slice(flag.length + 1);
}

describe('manifests', () => {
  test('every file parses, kustomization lists files that exist, and everything lives in ambit-system', () => {
    for (const dir of [MANIFESTS, join(MANIFESTS, 'crds')]) for (const r of kustomizationResources(dir)) assert.ok(existsSync(r), r);
    const yamlFiles = readdirSync(MANIFESTS).filter((f) => f.endsWith('.yaml'));
    const listed = new Set(kustomizationResources(MANIFESTS).map((f) => f.split('/').pop()));
    for (const f of yamlFiles) if (f !== 'kustomization.yaml') assert.ok(listed.has(f), `${f} is in kustomization.yaml`);
    const objs = all();
    assert.ok(find(objs, 'Namespace', 'ambit-system'));
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'GatewayClass', 'CustomResourceDefinition']);
    for (const o of objs) {
      if (clusterScoped.has(o.kind)) assert.equal(o.metadata.namespace, undefined, `${o.kind} ${o.metadata.name}`);
      else assert.equal(o.metadata.namespace, 'ambit-system', `${o.kind} ${o.metadata.name}`);
    }
  });

  test('RBAC: no wildcards anywhere, bindings name roles and ServiceAccounts that exist', () => {
    const objs = all();
    for (const o of objs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role')) {
      for (const [i, r] of ((o.rules as Json[]) ?? []).entries()) {
        for (const field of ['verbs', 'resources', 'apiGroups', 'resourceNames'] as const) {
          assert.ok(!((r[field] as string[] | undefined) ?? []).includes('*'), `${o.kind}/${o.metadata.name} rule ${i} has a wildcard in ${field}`);
        }
        for (const v of r.verbs as string[]) assert.ok(['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'].includes(v), `unexpected verb ${v}`);
      }
    }
    for (const b of objs.filter((x) => x.kind === 'ClusterRoleBinding' || x.kind === 'RoleBinding')) {
      const ref = b.roleRef as { kind: string; name: string };
      assert.ok(find(objs, ref.kind, ref.name, ref.kind === 'Role' ? b.metadata.namespace : undefined), `${b.kind} ${b.metadata.name} → ${ref.kind} ${ref.name}`);
      for (const s of b.subjects as { kind: string; name: string; namespace: string }[]) {
        assert.equal(s.kind, 'ServiceAccount');
        assert.ok(find(objs, 'ServiceAccount', s.name, s.namespace), `ServiceAccount ${s.namespace}/${s.name} of ${b.metadata.name}`);
      }
    }
    // ztunnel talks only to the control plane: no binding at all
    assert.ok(!objs.some((b) => (b.subjects as { name: string }[] | undefined)?.some((s) => s.name === 'ztunnel')));
  });

  test('workloads refer to ServiceAccounts, ConfigMaps and Secrets that exist (or that ambit-control makes)', () => {
    const objs = all();
    const madeByCode = { ConfigMap: new Set([ROOT_CERT_CONFIGMAP]), Secret: new Set([CA_SECRET_NAME]) };
    for (const w of objs.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')) {
      const ps = podSpec(w);
      assert.ok(find(objs, 'ServiceAccount', ps.serviceAccountName as string, w.metadata.namespace), `${w.metadata.name}: ServiceAccount ${String(ps.serviceAccountName)}`);
      for (const v of (ps.volumes as Json[] | undefined) ?? []) {
        const cm = (v.configMap as Json | undefined)?.name as string | undefined;
        if (cm) assert.ok(find(objs, 'ConfigMap', cm) || madeByCode.ConfigMap.has(cm), `${w.metadata.name}: ConfigMap ${cm}`);
        const sec = (v.secret as Json | undefined)?.secretName as string | undefined;
        if (sec) assert.ok(find(objs, 'Secret', sec) || madeByCode.Secret.has(sec), `${w.metadata.name}: Secret ${sec}`);
      }
      const selector = ((w.spec as Json).selector as Json).matchLabels as Record<string, string>;
      const labels = (((w.spec as Json).template as Json).metadata as Json).labels as Record<string, string>;
      for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `${w.metadata.name}: selector matches the pod labels`);
    }
    // the control plane's Secret and ConfigMap are the ones its Role may touch
    const control = find(objs, 'Deployment', 'ambit-control')!;
    const args = containers(control)[0]!.args as string[];
    assert.equal(flagValue(args, '--ca-secret'), `${CA_SECRET_NAMESPACE}/${CA_SECRET_NAME}`);
    const role = find(objs, 'Role', 'ambit-control', 'ambit-system')!;
    const names = (role.rules as Json[]).flatMap((r) => (r.resourceNames as string[] | undefined) ?? []);
    assert.ok(names.includes(CA_SECRET_NAME) && names.includes(ROOT_CERT_CONFIGMAP));
    // the gRPC Service is the name in the control plane's certificate
    const svc = find(objs, 'Service', 'ambit-control')!;
    assert.equal(`${svc.metadata.name}.${svc.metadata.namespace}.svc`, CONTROL_SERVER_NAME);
    assert.equal(((svc.spec as Json).ports as Json[])[0]!.port, 15012);
    assert.equal(flagValue(args, '--listen'), '0.0.0.0:15012');
    const ztArgs = containers(find(objs, 'DaemonSet', 'ztunnel')!)[0]!.args as string[];
    assert.equal(flagValue(ztArgs, '--control'), `${CONTROL_SERVER_NAME}:15012`);
  });

  test('every flag in the manifests is one the component accepts', () => {
    const objs = all();
    for (const w of objs.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')) {
      for (const c of containers(w)) {
        // node [V8 flags…] dist/…/main.js
        const entry = (c.command as string[]).find((x) => x.endsWith('.js'))!;
        assert.ok(existsSync(join(DIST, entry.replace(/^dist\//, ''))), `${entry} is built`);
        const help = spawnSync(process.execPath, [join(ROOT, entry), '--help'], { encoding: 'utf8', timeout: 30_000 });
        assert.equal(help.status, 0, help.stderr);
        for (const a of c.args as string[]) {
          const flag = a.split('=')[0]!;
          assert.ok(help.stdout.includes(`${flag} `) || help.stdout.includes(`${flag}\n`), `${w.metadata.name}: ${entry} accepts ${flag}`);
        }
      }
    }
  });

  test('ztunnel: metrics annotations, readiness on 15021, NET_ADMIN + SYS_ADMIN and no more, a projected token for the control plane audience', () => {
    const objs = all();
    const zt = find(objs, 'DaemonSet', 'ztunnel')!;
    const tpl = (zt.spec as Json).template as { metadata: { annotations: Record<string, string> } };
    assert.equal(tpl.metadata.annotations['prometheus.io/scrape'], 'true');
    assert.equal(tpl.metadata.annotations['prometheus.io/port'], '15020');
    const c = containers(zt)[0]!;
    assert.deepEqual((c.readinessProbe as Json).httpGet, { path: '/healthz/ready', port: 15021 });
    const sc = c.securityContext as { privileged: boolean; capabilities: { add: string[]; drop: string[] }; readOnlyRootFilesystem: boolean };
    assert.equal(sc.privileged, false);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    assert.deepEqual([...sc.capabilities.add].sort(), ['NET_ADMIN', 'SYS_ADMIN']);
    assert.equal(podSpec(zt).hostNetwork, undefined, 'ztunnel runs in its own network namespace');
    assert.equal(podSpec(zt).automountServiceAccountToken, false);
    const token = (podSpec(zt).volumes as Json[]).find((v) => v.projected) as { projected: { sources: { serviceAccountToken: { audience: string; path: string } }[] } };
    const audience = token.projected.sources[0]!.serviceAccountToken.audience;
    const control = containers(find(objs, 'Deployment', 'ambit-control')!)[0]!;
    assert.equal(flagValue(control.args as string[], '--token-audience'), audience);
    assert.equal(flagValue(control.args as string[], '--ztunnel-service-account'), `ambit-system/${podSpec(zt).serviceAccountName as string}`);
    assert.ok(flagValue(c.args as string[], '--token-file')!.endsWith(`/${token.projected.sources[0]!.serviceAccountToken.path}`));
  });

  test('ztunnel upgrades hand over: the new one starts beside the old (maxSurge), and the drain ends inside the grace period', () => {
    const zt = find(all(), 'DaemonSet', 'ztunnel')!;
    const rolling = ((zt.spec as Json).updateStrategy as { type: string; rollingUpdate: Json }).rollingUpdate;
    assert.deepEqual(rolling, { maxSurge: 1, maxUnavailable: 0 }, 'never a moment without a ztunnel on the node');
    const args = containers(zt)[0]!.args as string[];
    const handover = Number(flagValue(args, '--handover-seconds'));
    const drain = Number(flagValue(args, '--drain-seconds'));
    assert.ok(handover > 0 && drain >= handover, `hand-over ${handover} s within a drain of ${drain} s`);
    assert.ok(drain < (podSpec(zt).terminationGracePeriodSeconds as number), 'the drain ends before the kubelet kills the pod');
  });

  test('CNI: host network, /etc/cni/net.d and /opt/cni/bin mounted, privileged; the node-agent socket dir is the same hostPath in both DaemonSets', () => {
    const objs = all();
    const cni = find(objs, 'DaemonSet', 'ambit-cni')!;
    const zt = find(objs, 'DaemonSet', 'ztunnel')!;
    assert.equal(podSpec(cni).hostNetwork, true);
    const c = containers(cni)[0]!;
    assert.equal((c.securityContext as Json).privileged, true);
    const hostPaths = (w: Obj): Map<string, string> => {
      const vols = new Map(((podSpec(w).volumes as Json[]) ?? []).filter((v) => v.hostPath).map((v) => [v.name as string, (v.hostPath as Json).path as string]));
      return new Map((containers(w)[0]!.volumeMounts as Json[]).filter((m) => vols.has(m.name as string)).map((m) => [vols.get(m.name as string)!, m.mountPath as string]));
    };
    const cniPaths = hostPaths(cni);
    assert.ok(cniPaths.has('/etc/cni/net.d') && cniPaths.has('/opt/cni/bin'));
    const args = c.args as string[];
    assert.equal(flagValue(args, '--cni-conf-dir'), cniPaths.get('/etc/cni/net.d'));
    assert.equal(flagValue(args, '--cni-bin-dir'), cniPaths.get('/opt/cni/bin'));
    // the launcher runs on the host: what it points to must be at the same path in both
    const hostDir = flagValue(args, '--cni-host-dir')!;
    assert.ok([...cniPaths].some(([h, m]) => h === m && hostDir.startsWith(h)), `${hostDir} is a host path mounted at the same place`);
    const sock = flagValue(args, '--ztunnel-socket')!;
    assert.equal(flagValue(containers(zt)[0]!.args as string[], '--agent-socket'), sock);
    const ztPaths = hostPaths(zt);
    const shared = [...ztPaths].find(([, m]) => sock.startsWith(m + '/'));
    assert.ok(shared, 'the ztunnel socket lives in a hostPath mount of ztunnel');
    assert.equal(cniPaths.get(shared![0]), shared![1], 'and the CNI DaemonSet mounts the same host directory at the same path');
    assert.ok(flagValue(args, '--cni-socket')!.startsWith(shared![1]), 'the CNI socket is there too, where the plugin on the host finds it');
  });

  test('the GatewayClass is the one waypoints use', () => {
    assert.ok(find(all(), 'GatewayClass', WAYPOINT_CLASS));
  });

  test('CRDs: one for each optional kind the mesh reads, structural schemas, free-form only inside spec', () => {
    const defs = crds();
    const byKind = new Map(defs.map((d) => [((d.spec as Json).names as Json).kind as string, d]));
    for (const r of Object.values(MESH_RESOURCES).filter((x) => 'optional' in x && x.optional)) {
      const d = byKind.get(r.kind);
      assert.ok(d, `a CRD for ${r.kind}`);
      const [group, version] = r.apiVersion.split('/');
      const spec = d!.spec as { group: string; names: { plural: string }; scope: string; versions: Json[] };
      assert.equal(spec.group, group);
      assert.equal(spec.names.plural, r.plural);
      assert.equal(d!.metadata.name, `${r.plural}.${group}`);
      assert.equal(spec.scope, 'Namespaced');
      assert.ok(spec.versions.some((v) => v.name === version && v.served && v.storage));
    }
    assert.ok(byKind.has('GatewayClass'));
    const structural = (schema: Json, path: string, depth: number): void => {
      const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
      assert.ok(typeof schema.type === 'string' || preserve, `${path} has a type`);
      // Istio's own CRDs leave status free-form; everything else only below spec's fields
      if (preserve) assert.ok(depth >= 2 || path.endsWith('.status'), `${path}: free-form only inside spec's sub-objects (depth ${depth})`);
      for (const [k, v] of Object.entries((schema.properties as Record<string, Json>) ?? {})) structural(v, `${path}.${k}`, depth + 1);
      if (schema.items) structural(schema.items as Json, `${path}[]`, depth + 1);
      if (typeof schema.additionalProperties === 'object') structural(schema.additionalProperties as Json, `${path}{}`, depth + 1);
    };
    for (const d of defs) {
      for (const v of (d.spec as { versions: { schema: { openAPIV3Schema: Json } }[] }).versions) {
        const s = v.schema.openAPIV3Schema;
        assert.deepEqual(Object.keys(s.properties as Json).sort(), ['apiVersion', 'kind', 'metadata', 'spec', 'status'], d.metadata.name);
        structural(s, d.metadata.name, 0);
      }
    }
  });

  test('Dockerfile: node:20-bookworm-slim, iproute2/iptables/nftables, npm ci, the addon, tsc', () => {
    const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    assert.match(text, /^FROM node:20-bookworm-slim AS build$/m);
    assert.match(text, /^FROM node:20-bookworm-slim$/m);
    assert.match(text, /apt-get install[^\n]*iproute2 iptables nftables/);
    assert.match(text, /npm ci/);
    assert.match(text, /npm run install/);
    assert.match(text, /tsc -p tsconfig.json/);
    assert.match(text, /build\/Release\/ambit_net\.node/);
    assert.match(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.install as string, /node-gyp rebuild/);
  });
});

describe('RBAC: every code path allowed, every rule used (API server enforcing manifests/)', () => {
  let fake: FakeApiServer;
  const sa = (name: string) => ({ username: `system:serviceaccount:ambit-system:${name}`, groups: ['system:serviceaccounts', 'system:serviceaccounts:ambit-system', 'system:authenticated'] });

  before(async () => {
    fake = await FakeApiServer.start({ rbac: all() });
    fake.addUser('control-token', sa('ambit-control'));
    fake.addUser('cni-token', sa('ambit-cni'));
    fake.put(namespace('ambit-system'));
    fake.put(namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    fake.put(pod('ambit-system', 'ambit-control-6d9f8', { node: 'node-1', sa: 'ambit-control', uid: 'uid-control' }));
    fake.put(pod('ambit-system', 'ztunnel-abcde', { node: 'node-1', sa: 'ztunnel', uid: 'uid-z' }));
    fake.put(pod('shop', 'web-12345', { node: 'node-1', sa: 'web' }));
  });
  after(async () => fake.close());

  test('the control plane and the node agent do their work under their own ServiceAccounts', async () => {
    const { log } = captureLogger();
    const fast = { debounceMs: 10, backoffMinMs: 20, backoffMaxMs: 200 };
    // control plane
    const kc = kubeConfigFor(fake, 'control-token');
    const first = await loadOrCreateCa(kubeCaSecretApi(kc));
    assert.equal(first.created, true);
    assert.equal((await loadOrCreateCa(kubeCaSecretApi(kc))).created, false);
    await publishRoots(kc, first.ca);
    await publishRoots(kc, await (await import('../../../shared/identity/ca.js')).CertificateAuthority.generate());
    assert.equal(await ownImage(kc, { POD_NAME: 'ambit-control-6d9f8', POD_NAMESPACE: 'ambit-system' }), 'registry.k8s.io/e2e-test-images/agnhost:2.45');
    const token = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z', audiences: ['ambit-ca'] });
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    assert.equal(await TokenReviewAuthenticator.fromKubeConfig(kc, { audience: 'ambit-ca' }).authenticate(md), 'node-1');
    const source = new KubeSource({ kubeConfig: kc, log, resources: CONTROL_PLANE_RESOURCES, ...fast });
    await source.start();
    const controller = new WaypointController({ kubeConfig: kc, view: { objects: () => source.objects, on: (e, fn) => source.on(e, fn) }, log, image: 'ambit:test' });
    await controller.start();
    fake.put(waypointGateway('shop'));
    await eventually(() => (fake.get('gateway.networking.k8s.io/v1', 'Gateway', 'shop', 'waypoint')?.status as Json | undefined)?.conditions, 'the waypoint status');
    // a second round of applies (patch of existing objects)
    fake.put({ ...waypointGateway('shop'), metadata: { name: 'waypoint', namespace: 'shop', labels: { 'istio.io/waypoint-for': 'all' } }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }], infrastructure: { labels: { team: 'shop' } } } });
    await eventually(() => (fake.get('apps/v1', 'Deployment', 'shop', 'waypoint')?.metadata.labels as Record<string, string> | undefined)?.team === 'shop', 'the re-applied Deployment');
    await controller.settled();
    controller.stop();
    source.stop();
    // node agent
    const ckc = kubeConfigFor(fake, 'cni-token');
    const agentView = new KubeSource({ kubeConfig: ckc, log, resources: nodeAgentResources('node-1'), ...fast });
    const objs = await agentView.start();
    assert.ok(objs.some((o) => o.kind === 'Pod' && o.metadata.name === 'web-12345'));
    await podAnnotator(ckc, log)('shop', 'web-12345', 'enabled');
    assert.equal((fake.get('v1', 'Pod', 'shop', 'web-12345')!.metadata.annotations as Record<string, string>)['ambient.istio.io/redirection'], 'enabled');
    agentView.stop();

    const mine = fake.audit.filter((a) => a.user.startsWith('system:serviceaccount:ambit-system:'));
    const refused = mine.filter((a) => a.status === 403);
    assert.deepEqual(refused.map((a) => `${a.user} ${a.verb} ${a.resource}${a.subresource ? '/' + a.subresource : ''} ${a.namespace}/${a.name}`), [], 'nothing refused');
    const defined = new Set(
      all()
        .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
        .flatMap((o) => (o.rules as Json[]).map((_, i) => (o.kind === 'ClusterRole' ? `ClusterRole/${o.metadata.name}#${i}` : `Role/${o.metadata.namespace}/${o.metadata.name}#${i}`))),
    );
    assert.deepEqual([...defined].sort(), Object.keys(RULE_USES).sort(), 'every rule is in the table of uses');
    const used = new Set(mine.flatMap((a) => a.rules));
    const unused = [...defined].filter((r) => !used.has(r));
    assert.deepEqual(unused, [], `rules no code path used: ${unused.map((r) => `${r} (${RULE_USES[r]})`).join('; ')}`);
  });

  test("ztunnel's ServiceAccount may do nothing at all with the API", async () => {
    const token = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z' });
    const kc = kubeConfigFor(fake, token);
    const src = new KubeSource({ kubeConfig: kc, log: captureLogger().log, resources: [MESH_RESOURCES.Pod], backoffMinMs: 20, backoffMaxMs: 100, startTimeoutMs: 500 });
    await assert.rejects(src.start(), /pods is forbidden: User "system:serviceaccount:ambit-system:ztunnel" cannot list resource "pods"/);
  });
});
