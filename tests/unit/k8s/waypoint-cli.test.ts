// `ambit waypoint …` run as a user runs it: a subprocess with a kubeconfig pointing at the API
// server. Every command and flag, the tables as istioctl prints them, and the error messages.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { FakeApiServer, eventually } from './fake-apiserver.js';
import { namespace, waypointGateway } from './fixtures.js';
import { parseDuration, tabwrite } from '../../../cli/waypoint.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'cli', 'main.js');
const GW = 'gateway.networking.k8s.io/v1';
type Json = Record<string, unknown>;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string | undefined>): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, 'waypoint', ...args], { env: { PATH: process.env.PATH, ...env } as NodeJS.ProcessEnv });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

const programmed = (status: 'True' | 'False', reason = status === 'True' ? 'Programmed' : 'Pending', message = ''): Json => ({
  conditions: [
    { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'accepted as a waypoint (ambit)', lastTransitionTime: '2024-05-01T10:00:00Z' },
    { type: 'Programmed', status, reason, message, lastTransitionTime: '2024-05-01T10:00:00Z' },
  ],
});

describe('ambit waypoint', () => {
  let fake: FakeApiServer;
  let dir: string;
  let env: Record<string, string>;
  const ambit = (...args: string[]): Promise<Run> => run(args, env);

  before(async () => {
    fake = await FakeApiServer.start();
    dir = await mkdtemp(join(tmpdir(), 'ambit-waypoint-cli-'));
    await mkdir(join(dir, 'home'));
    await writeFile(join(dir, 'kubeconfig'), fake.kubeconfig('admin-token'));
    env = { KUBECONFIG: join(dir, 'kubeconfig'), HOME: join(dir, 'home') };
    for (const ns of ['shop', 'apply', 'enroll', 'listing', 'other', 'stat', 'del', 'conflict', 'waits', 'empty']) fake.put(namespace(ns));
  });
  after(async () => {
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('generate', { concurrency: true }, () => {
    test('prints the Gateway YAML as istioctl does (no namespace unless -n)', async () => {
      const r = await ambit('generate');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, ['apiVersion: gateway.networking.k8s.io/v1', 'kind: Gateway', 'metadata:', '  name: waypoint', 'spec:', '  gatewayClassName: istio-waypoint', '  listeners:', '  - name: mesh', '    port: 15008', '    protocol: HBONE', ''].join('\n'));
    });

    test('-n, --name, --for and --revision', async () => {
      const r = await ambit('generate', '-n', 'shop', '--name', 'reviews-wp', '--for', 'workload', '-r', 'canary');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        ['apiVersion: gateway.networking.k8s.io/v1', 'kind: Gateway', 'metadata:', '  labels:', '    istio.io/rev: canary', '    istio.io/waypoint-for: workload', '  name: reviews-wp', '  namespace: shop', 'spec:', '  gatewayClassName: istio-waypoint', '  listeners:', '  - name: mesh', '    port: 15008', '    protocol: HBONE', ''].join('\n'),
      );
      // group options before the subcommand work too
      const r2 = await ambit('--namespace', 'shop', 'generate', '--for', 'all');
      assert.match(r2.stdout, /namespace: shop\n/);
      assert.match(r2.stdout, /istio.io\/waypoint-for: all\n/);
    });

    test('an unknown --for and the reserved name "none" are refused', async () => {
      let r = await ambit('generate', '--for', 'pods');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: invalid traffic type: pods. Valid options are: [all none service workload]\n');
      r = await ambit('generate', '--name', 'none');
      assert.equal(r.stderr, "ambit: invalid name provided for waypoint, 'none' is a reserved value\n");
      r = await ambit('generate', '--name', 'Bad_Name');
      assert.match(r.stderr, /"Bad_Name" is not a lowercase DNS label/);
    });
  });

  describe('apply', () => {
    test('server-side applies the Gateway (field manager ambit) into -n', async () => {
      const r = await ambit('apply', '-n', 'apply');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '✅ waypoint apply/waypoint applied\n');
      const g = fake.get(GW, 'Gateway', 'apply', 'waypoint')!;
      assert.deepEqual(g.spec, { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] });
      assert.ok((g.metadata.managedFields as { manager: string; operation: string }[]).some((m) => m.manager === 'ambit' && m.operation === 'Apply'));
      assert.ok(fake.audit.some((a) => a.verb === 'patch' && a.resource === 'gateways' && a.namespace === 'apply' && a.status === 201));
      // again: idempotent
      const again = await ambit('apply', '-n', 'apply');
      assert.equal(again.code, 0, again.stderr);
    });

    test('--for and --revision label the Gateway; --name names it', async () => {
      const r = await ambit('apply', '-n', 'apply', '--name', 'wl', '--for', 'workload', '--revision', 'canary');
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(fake.get(GW, 'Gateway', 'apply', 'wl')!.metadata.labels, { 'istio.io/waypoint-for': 'workload', 'istio.io/rev': 'canary' });
    });

    test('without -n, the namespace of the kubeconfig context (else default)', async () => {
      const kc = join(dir, 'kc-ns');
      await writeFile(kc, fake.kubeconfig('admin-token', { namespace: 'shop' }));
      let r = await run(['apply'], { ...env, KUBECONFIG: kc });
      assert.equal(r.stdout, '✅ waypoint shop/waypoint applied\n');
      r = await ambit('apply', '--name', 'in-default');
      assert.equal(r.stdout, '✅ waypoint default/in-default applied\n');
    });

    test('--enroll-namespace labels the namespace after applying, and warns when the namespace is not ambient', async () => {
      const r = await ambit('apply', '-n', 'enroll', '--enroll-namespace');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        '⚠️ Warning: namespace is not enrolled in ambient. Consider running\t`kubectl label namespace enroll istio.io/dataplane-mode=ambient`\n✅ waypoint enroll/waypoint applied\n✅ namespace enroll labeled with "istio.io/use-waypoint: waypoint"\n',
      );
      assert.equal((fake.get('v1', 'Namespace', undefined, 'enroll')!.metadata.labels as Record<string, string>)['istio.io/use-waypoint'], 'waypoint');
    });

    test('a namespace already using another waypoint is not switched without --overwrite (nothing is applied)', async () => {
      let r = await ambit('apply', '-n', 'enroll', '--name', 'second', '--enroll-namespace');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: namespace enroll already uses waypoint "waypoint" (istio.io/use-waypoint=waypoint); add --overwrite to switch it to "second"\n');
      assert.equal(fake.get(GW, 'Gateway', 'enroll', 'second'), undefined);
      r = await ambit('apply', '-n', 'enroll', '--name', 'second', '--enroll-namespace', '--overwrite');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /✅ namespace enroll labeled with "istio.io\/use-waypoint: second"/);
      assert.equal((fake.get('v1', 'Namespace', undefined, 'enroll')!.metadata.labels as Record<string, string>)['istio.io/use-waypoint'], 'second');
      // the same waypoint again is fine without --overwrite, and an ambient namespace gets no warning
      fake.put({ ...fake.get('v1', 'Namespace', undefined, 'enroll')!, metadata: { ...fake.get('v1', 'Namespace', undefined, 'enroll')!.metadata, labels: { 'istio.io/use-waypoint': 'second', 'istio.io/dataplane-mode': 'ambient' } } });
      r = await ambit('apply', '-n', 'enroll', '--name', 'second', '--enroll-namespace');
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /Warning/);
    });

    test('--wait waits for Programmed=True', async () => {
      const pending = ambit('apply', '-n', 'waits', '--name', 'quick', '--wait');
      await eventually(() => fake.get(GW, 'Gateway', 'waits', 'quick'), 'the Gateway');
      fake.setStatus(GW, 'Gateway', 'waits', 'quick', programmed('True'));
      const r = await pending;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '✅ waypoint waits/quick applied\n✅ waypoint waits/quick is ready!\n');
    });

    test('--wait with --waypoint-timeout gives up, saying what the waypoint waits for', async () => {
      const pending = ambit('apply', '-n', 'waits', '--name', 'slow', '-w', '--waypoint-timeout', '1500ms');
      await eventually(() => fake.get(GW, 'Gateway', 'waits', 'slow'), 'the Gateway');
      fake.setStatus(GW, 'Gateway', 'waits', 'slow', programmed('False', 'Pending', 'waiting for the waypoint Deployment to be ready (0/1 replicas available)'));
      const r = await pending;
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '✅ waypoint waits/slow applied\n');
      assert.equal(r.stderr, 'ambit: timed out while waiting for waypoint\twaits/slow: Programmed=False Pending: waiting for the waypoint Deployment to be ready (0/1 replicas available)\n');
    });

    test('a namespace that does not exist', async () => {
      const r = await ambit('apply', '-n', 'nowhere');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: namespace: nowhere not found\n');
    });

    test('a Gateway of another class with that name is left alone', async () => {
      fake.put(waypointGateway('conflict', 'ingress', { className: 'istio', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }));
      const r = await ambit('apply', '-n', 'conflict', '--name', 'ingress');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: gateway conflict/ingress already exists with gatewayClassName "istio"; it is not a waypoint, so it is left alone: choose another --name\n');
    });

    test('fields another tool manages are not taken over without --overwrite', async () => {
      // made with kubectl, for workloads
      fake.put(waypointGateway('conflict', 'waypoint', { for: 'workload' }), 'kubectl-client-side-apply');
      let r = await ambit('apply', '-n', 'conflict', '--for', 'service');
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^ambit: waypoint conflict\/waypoint exists and another tool manages some of its fields \(Apply failed with 1 conflict: conflict with "kubectl-client-side-apply": \.metadata\.labels\.istio\.io\/waypoint-for\); re-run with --overwrite to take them over\n$/);
      r = await ambit('apply', '-n', 'conflict', '--for', 'service', '--overwrite');
      assert.equal(r.code, 0, r.stderr);
      assert.equal((fake.get(GW, 'Gateway', 'conflict', 'waypoint')!.metadata.labels as Record<string, string>)['istio.io/waypoint-for'], 'service');
    });

    test('a cluster without the Gateway API CRDs', async () => {
      const bare = await FakeApiServer.start();
      bare.disabledGroups.add('gateway.networking.k8s.io');
      const kc = join(dir, 'kc-bare');
      await writeFile(kc, bare.kubeconfig('admin-token'));
      try {
        const r = await run(['apply'], { ...env, KUBECONFIG: kc });
        assert.equal(r.code, 1);
        assert.match(r.stderr, /^ambit: missing Kubernetes Gateway CRDs need to be installed before applying a waypoint: .*\(install them with: kubectl apply -k manifests\/crds\)\n$/);
        const l = await run(['list'], { ...env, KUBECONFIG: kc });
        assert.equal(l.stderr, 'ambit: the cluster has no Kubernetes Gateway API CRDs, so it has no waypoints; install them first (kubectl apply -k manifests/crds)\n');
      } finally {
        await bare.close();
      }
    });
  });

  describe('list', { concurrency: true }, () => {
    before(() => {
      fake.put({ ...waypointGateway('listing', 'waypoint'), status: programmed('True') });
      fake.put({ ...waypointGateway('listing', 'wl', { for: 'workload' }), metadata: { name: 'wl', namespace: 'listing', labels: { 'istio.io/waypoint-for': 'workload', 'istio.io/rev': 'canary' } }, status: programmed('False') });
      fake.put(waypointGateway('listing', 'ingress', { className: 'istio', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }));
      fake.put({ ...waypointGateway('other', 'ns-wide', { for: 'all' }), status: programmed('True') });
    });

    test('the waypoints of a namespace, as istioctl prints them (other classes left out)', async () => {
      const r = await ambit('list', '-n', 'listing');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, ['NAME         REVISION     TRAFFIC TYPE     PROGRAMMED', 'waypoint     default      service          True', 'wl           canary       workload         False', ''].join('\n'));
    });

    test('-A / --all-namespaces adds the NAMESPACE column', async () => {
      for (const flag of ['-A', '--all-namespaces']) {
        const r = await ambit('list', flag);
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.split('\n');
        assert.match(lines[0]!, /^NAMESPACE\s+NAME\s+REVISION\s+TRAFFIC TYPE\s+PROGRAMMED$/);
        assert.ok(lines.some((l) => /^listing\s+waypoint\s+default\s+service\s+True$/.test(l)), r.stdout);
        assert.ok(lines.some((l) => /^listing\s+wl\s+canary\s+workload\s+False$/.test(l)), r.stdout);
        assert.ok(lines.some((l) => /^other\s+ns-wide\s+default\s+all\s+True$/.test(l)), r.stdout);
        // sorted by namespace, then name; every column starts where its header does
        const rows = lines.filter((l) => l !== '').slice(1).map((l) => l.split(/\s+/));
        assert.deepEqual(rows, [...rows].sort((x, y) => x[0]!.localeCompare(y[0]!) || x[1]!.localeCompare(y[1]!)));
        const col = lines[0]!.indexOf('PROGRAMMED');
        for (const l of lines.slice(1, -1)) assert.match(l.slice(col), /^(True|False)$/);
        assert.ok(!r.stdout.includes('ingress'));
      }
    });

    test('no waypoints', async () => {
      const r = await ambit('list', '-n', 'empty');
      assert.equal(r.stdout, 'No waypoints found.\n');
    });
  });

  describe('status', () => {
    before(() => {
      fake.put({ ...waypointGateway('stat', 'ready'), status: programmed('True', 'Programmed', 'waypoint ready at 10.96.0.50:15008') });
      fake.put({ ...waypointGateway('stat', 'pending'), status: programmed('False', 'Pending', 'waiting for the waypoint Deployment to be ready (0/1 replicas available)') });
      fake.put({
        ...waypointGateway('stat', 'wrong', { listeners: [{ name: 'mesh', port: 80, protocol: 'HBONE' }] }),
        status: { conditions: [{ type: 'Accepted', status: 'False', reason: 'ListenersNotValid', message: 'listener "mesh" has port 80 (must be 15008)', lastTransitionTime: '2024-05-01T10:00:00Z' }] },
      });
    });

    test('-n: NAME STATUS TYPE REASON MESSAGE; a refused Gateway shows why', async () => {
      const r = await ambit('status', '-n', 'stat');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        [
          'NAME        STATUS     TYPE           REASON                MESSAGE',
          'pending     False      Programmed     Pending               waiting for the waypoint Deployment to be ready (0/1 replicas available)',
          'ready       True       Programmed     Programmed            waypoint ready at 10.96.0.50:15008',
          'wrong       False      Accepted       ListenersNotValid     listener "mesh" has port 80 (must be 15008)',
          '',
        ].join('\n'),
      );
    });

    test('--name shows one waypoint; without -n the NAMESPACE column is added (as istioctl does)', async () => {
      const kc = join(dir, 'kc-stat');
      await writeFile(kc, fake.kubeconfig('admin-token', { namespace: 'stat' }));
      const r = await run(['status', '--name', 'ready'], { ...env, KUBECONFIG: kc });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, ['NAMESPACE     NAME      STATUS     TYPE           REASON         MESSAGE', 'stat          ready     True       Programmed     Programmed     waypoint ready at 10.96.0.50:15008', ''].join('\n'));
    });

    test('a waypoint nobody reported on says so', async () => {
      fake.put(waypointGateway('stat', 'fresh'));
      const r = await ambit('status', '-n', 'stat', '--name', 'fresh');
      assert.equal(r.stdout, ['NAME      STATUS      TYPE           REASON      MESSAGE', 'fresh     Unknown     Programmed     Pending     no controller has reported on this waypoint yet (is ambit-control running?)', ''].join('\n'));
    });

    test('--wait waits for Programmed, and times out with istioctl\'s message', async () => {
      const pending = ambit('status', '-n', 'stat', '--name', 'pending', '--wait', '--waypoint-timeout', '5s');
      await new Promise((r) => setTimeout(r, 300));
      fake.setStatus(GW, 'Gateway', 'stat', 'pending', programmed('True', 'Programmed', 'waypoint ready at 10.96.0.51:15008'));
      const ok = await pending;
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^pending\s+True\s+Programmed\s+Programmed\s+waypoint ready at 10.96.0.51:15008$/m);
      const late = await ambit('status', '-n', 'stat', '--name', 'wrong', '-w', '--waypoint-timeout', '1s');
      assert.equal(late.code, 1);
      assert.match(late.stdout, /^wrong\s+False\s+Accepted\s+ListenersNotValid/m);
      assert.equal(late.stderr, 'ambit: timed out while retrieving status for waypoint\tstat/wrong\n');
    });

    test('an unknown --name, and a namespace without waypoints', async () => {
      let r = await ambit('status', '-n', 'stat', '--name', 'ghost');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: waypoint stat/ghost not found\n');
      r = await ambit('status', '-n', 'empty');
      assert.equal(r.stdout, 'No waypoints found.\n');
    });
  });

  describe('delete', () => {
    before(() => {
      for (const n of ['a', 'b', 'c']) fake.put(waypointGateway('del', n));
      fake.put({ ...waypointGateway('del', 'r1'), metadata: { name: 'r1', namespace: 'del', labels: { 'istio.io/rev': 'canary' } } });
      fake.put(waypointGateway('del', 'ingress', { className: 'istio', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }));
    });

    test('by name, saying which were not found (and never touching other classes)', async () => {
      const r = await ambit('delete', 'a', 'ghost', 'ingress', '-n', 'del');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'waypoint del/ghost not found\nwaypoint del/ingress not found\nwaypoint del/a deleted\n');
      assert.equal(fake.get(GW, 'Gateway', 'del', 'a'), undefined);
      assert.ok(fake.get(GW, 'Gateway', 'del', 'ingress'));
    });

    test('--revision deletes the waypoints of one revision', async () => {
      const r = await ambit('delete', '-n', 'del', '-r', 'canary');
      assert.equal(r.stdout, 'waypoint del/r1 deleted\n');
      assert.ok(fake.get(GW, 'Gateway', 'del', 'b'));
    });

    test('--all, with a warning when the namespace still points at a deleted waypoint', async () => {
      fake.put(namespace('del', { 'istio.io/use-waypoint': 'b' }));
      const r = await ambit('delete', '--all', '-n', 'del');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'waypoint del/b deleted\nwaypoint del/c deleted\n');
      assert.equal(r.stderr, '⚠️ Warning: namespace del still has istio.io/use-waypoint=b: its traffic is refused until a waypoint named "b" is back (remove the label with `kubectl label namespace del istio.io/use-waypoint-`)\n');
      assert.ok(fake.get(GW, 'Gateway', 'del', 'ingress'), 'not a waypoint: kept');
    });

    test('names and --all together, or neither, are refused', async () => {
      let r = await ambit('delete', '-n', 'del');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: must specify a waypoint name or delete all using --all or delete specific revision using --revision\n');
      r = await ambit('delete', 'x', '--all', '-n', 'del');
      assert.equal(r.stderr, 'ambit: cannot specify waypoint names when deleting all waypoints\n');
    });
  });

  describe('kubeconfig and errors', { concurrency: true }, () => {
    test('--kubeconfig and --context pick the cluster, user and namespace, like kubectl', async () => {
      fake.addUser('beta-token', { username: 'beta', groups: ['system:masters'] });
      const kc = {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: (parse(fake.kubeconfig('x')) as { clusters: { cluster: Json }[] }).clusters[0]!.cluster }],
        users: [{ name: 'alpha', user: { token: 'admin-token' } }, { name: 'beta', user: { token: 'beta-token' } }],
        contexts: [{ name: 'alpha', context: { cluster: 'c', user: 'alpha', namespace: 'listing' } }, { name: 'beta', context: { cluster: 'c', user: 'beta', namespace: 'other' } }],
        'current-context': 'alpha',
      };
      const file = join(dir, 'two-contexts.yaml');
      await writeFile(file, stringify(kc));
      const noEnv = { HOME: join(dir, 'home') };
      let r = await run(['list', '--kubeconfig', file], noEnv);
      assert.match(r.stdout, /^waypoint\s+default\s+service\s+True$/m, r.stderr);
      r = await run(['list', '--kubeconfig', file, '--context', 'beta'], noEnv);
      assert.match(r.stdout, /^ns-wide\s+default\s+all\s+True$/m, r.stderr);
      r = await run(['list', '--kubeconfig', file, '--context', 'gamma'], noEnv);
      assert.equal(r.stderr, 'ambit: context "gamma" is not in the kubeconfig (contexts: alpha, beta)\n');
    });

    test('~/.kube/config is used when KUBECONFIG is unset', async () => {
      const home = join(dir, 'home2');
      await mkdir(join(home, '.kube'), { recursive: true });
      await writeFile(join(home, '.kube', 'config'), fake.kubeconfig('admin-token', { namespace: 'listing' }));
      const r = await run(['list'], { HOME: home });
      assert.match(r.stdout, /^wl\s+canary\s+workload\s+False$/m, r.stderr);
    });

    test('no kubeconfig anywhere', async () => {
      // no local mesh either (one would be used when no kubeconfig exists)
      const r = await run(['list'], { HOME: join(dir, 'home'), AMBIT_STATE_DIR: join(dir, 'no-meshes') });
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'ambit: no kubeconfig found: set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config\n');
      const r2 = await run(['list'], { HOME: join(dir, 'home'), AMBIT_STATE_DIR: join(dir, 'no-meshes'), KUBECONFIG: join(dir, 'missing.yaml') });
      assert.equal(r2.stderr, `ambit: KUBECONFIG names ${join(dir, 'missing.yaml')}, and none of them exists\n`);
    });

    test('no cluster reachable: one sentence naming the server and the context', async () => {
      const gone = await FakeApiServer.start();
      const kc = join(dir, 'kc-gone');
      await writeFile(kc, gone.kubeconfig('admin-token'));
      await gone.close();
      for (const cmd of [['list'], ['apply'], ['status'], ['delete', '--all']]) {
        const r = await run(cmd, { ...env, KUBECONFIG: kc });
        assert.equal(r.code, 1, cmd.join(' '));
        assert.match(r.stderr, new RegExp(`^ambit: cannot reach the Kubernetes API server at https://127\\.0\\.0\\.1:${gone.port} \\(.*ECONNREFUSED.*\\); is the cluster running, and is kubeconfig context "fake" the right one\\?\\n$`), r.stderr);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      }
    });

    test('credentials the cluster refuses', async () => {
      const kc = join(dir, 'kc-bad');
      await writeFile(kc, fake.kubeconfig('stolen-token'));
      const r = await run(['list'], { ...env, KUBECONFIG: kc });
      assert.equal(r.stderr, 'ambit: the Kubernetes API server refused the credentials of kubeconfig context "fake" (401 Unauthorized)\n');
    });

    test('RBAC refusals are passed on as the API server words them', async () => {
      const strict = await FakeApiServer.start({ rbac: [] });
      strict.addUser('viewer-token', { username: 'jane', groups: ['system:authenticated'] });
      const kc = join(dir, 'kc-viewer');
      await writeFile(kc, strict.kubeconfig('viewer-token'));
      try {
        const r = await run(['list', '-n', 'default'], { ...env, KUBECONFIG: kc });
        assert.equal(r.stderr, 'ambit: gateways.gateway.networking.k8s.io is forbidden: User "jane" cannot list resource "gateways" in API group "gateway.networking.k8s.io" in the namespace "default"\n');
      } finally {
        await strict.close();
      }
    });
  });
});

describe('waypoint CLI helpers', () => {
  test('durations as Go writes them, or seconds', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('2h'), 7_200_000);
    assert.equal(parseDuration('3'), 3000);
    assert.throws(() => parseDuration('soon'), /invalid duration "soon"/);
    assert.throws(() => parseDuration('5x'), /invalid duration/);
  });

  test("tabwrite lines columns up like Go's tabwriter with padding 5 (istioctl's testdata)", () => {
    assert.equal(
      tabwrite([
        ['NAMESPACE', 'NAME', 'STATUS', 'TYPE', 'REASON', 'MESSAGE'],
        ['fake1', 'waypoint', 'True', 'Programmed', '', ''],
      ]),
      'NAMESPACE     NAME         STATUS     TYPE           REASON     MESSAGE\nfake1         waypoint     True       Programmed                \n',
    );
  });
});
