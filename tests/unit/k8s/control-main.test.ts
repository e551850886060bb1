// The real binaries with --source kube against the API server: ambit-control makes its CA
// Secret and roots ConfigMap, serves the cluster's pods to a ztunnel that shows its projected
// token (ztunnel's own ControlLink), deploys waypoints; ambit-cni-agent starts on its node's
// pods. The file mode keeps its required flags.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { FakeApiServer, eventually } from './fake-apiserver.js';
import { captureLogger, namespace, pod, waypointGateway } from './fixtures.js';
import { ControlLink } from '../../../ztunnel/control-client.js';
import type { MeshUpdate } from '../../../shared/model/types.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';

const csrFor = async (id: string): Promise<string> => (await generateKeyAndCsr(Identity.parse(id))).csrPem;

const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

function start(entry: string, args: string[], env: Record<string, string>): { child: ChildProcess; out: () => string; exited: Promise<number> } {
  const child = spawn(process.execPath, [join(DIST, entry), ...args], { env: { PATH: process.env.PATH, ...env } as NodeJS.ProcessEnv });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  return { child, out: () => out, exited };
}

describe('ambit-control --source kube', () => {
  let fake: FakeApiServer;
  let dir: string;
  let control: ReturnType<typeof start>;
  let port = 0;

  before(async () => {
    fake = await FakeApiServer.start();
    dir = await mkdtemp(join(tmpdir(), 'ambit-control-kube-'));
    fake.put(namespace('ambit-system'));
    fake.put(namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    fake.put(pod('ambit-system', 'ztunnel-abcde', { node: 'node-1', sa: 'ztunnel', uid: 'uid-z1' }));
    fake.put(pod('shop', 'web-12345', { node: 'node-1', sa: 'web', ip: '10.244.1.10' }));
    await writeFile(join(dir, 'kubeconfig'), fake.kubeconfig('admin-token'));
    // pick a free port for the gRPC listener
    port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    control = start('control/main.js', ['--source', 'kube', '--kubeconfig', join(dir, 'kubeconfig'), '--listen', `127.0.0.1:${port}`, '--waypoint-image', 'registry.example/ambit:9', '--ca-reload-interval', '1', '--log-level', 'info'], {});
    await eventually(() => control.out().includes('control plane serving (Kubernetes)'), 'the control plane to serve', 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${control.out()}`);
    });
  });

  after(async () => {
    control.child.kill('SIGTERM');
    await control.exited;
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('made the CA Secret and published the roots', async () => {
    const secret = fake.get('v1', 'Secret', 'ambit-system', 'ambit-ca')!;
    assert.ok((secret.data as Record<string, string>)['ca-cert.pem']);
    await eventually(() => fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert'), 'the roots ConfigMap');
  });

  test("a ztunnel with its projected token gets the cluster's pods, then changes; a pod is reached over HBONE once its node agent enrolled it", async () => {
    const roots = (fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert')!.data as Record<string, string>)['root-cert.pem']!;
    const token = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z1', nodeName: 'node-1', audiences: ['ambit-ca'] });
    const link = new ControlLink(`127.0.0.1:${port}`, roots, 'node-1', token, captureLogger().log);
    const updates: MeshUpdate[] = [];
    link.on('update', (u) => updates.push(u));
    link.start();
    try {
      // in an ambient namespace, but no node agent said it serves the pod yet: plain TCP, which works
      const first = await eventually(() => updates.find((u) => u.workloads.some((w) => w.name === 'web-12345')), 'the snapshot with web-12345');
      assert.equal(first.workloads.find((w) => w.name === 'web-12345')!.protocol, 'TCP');
      fake.put(pod('shop', 'web-12345', { node: 'node-1', sa: 'web', ip: '10.244.1.10', annotations: { 'ambient.istio.io/redirection': 'enabled' } }));
      await eventually(() => updates.some((u) => u.type === 'delta' && u.workloads.some((w) => w.name === 'web-12345' && w.protocol === 'HBONE')), 'web-12345 over HBONE once annotated');
      fake.put(pod('shop', 'db-67890', { node: 'node-2', sa: 'db', ip: '10.244.2.10' }));
      await eventually(() => updates.some((u) => u.type === 'delta' && u.workloads.some((w) => w.name === 'db-67890')), 'a delta with db-67890');
      const cert = await link.sign('spiffe://cluster.local/ns/shop/sa/web', await csrFor('spiffe://cluster.local/ns/shop/sa/web'));
      assert.match(cert.certPem, /BEGIN CERTIFICATE/);
      await assert.rejects(link.sign('spiffe://cluster.local/ns/shop/sa/db', await csrFor('spiffe://cluster.local/ns/shop/sa/db')), /no pod with service account shop\/db runs on node node-1/);
    } finally {
      link.stop();
    }
  });

  test('a root added to the CA Secret (root rotation) reaches a connected ztunnel at once and the roots ConfigMap', async () => {
    const roots = (fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert')!.data as Record<string, string>)['root-cert.pem']!;
    const token = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z1', nodeName: 'node-1', audiences: ['ambit-ca'] });
    const link = new ControlLink(`127.0.0.1:${port}`, roots, 'node-1', token, captureLogger().log);
    const updates: MeshUpdate[] = [];
    link.on('update', (u) => updates.push(u));
    link.start();
    try {
      const snap = await eventually(() => updates.find((u) => u.type === 'snapshot'), 'the snapshot');
      assert.equal(snap.roots?.length, 1);
      const next = await CertificateAuthority.generate({ commonName: 'next root' });
      const secret = fake.get('v1', 'Secret', 'ambit-system', 'ambit-ca')!;
      const data = { ...(secret.data as Record<string, string>), 'root-cert.pem': Buffer.from(next.certPem).toString('base64') };
      fake.put({ ...secret, data });
      const pushed = await eventually(() => updates.find((u) => u.type === 'delta' && u.roots?.length === 2), 'the new bundle on the stream');
      assert.ok(pushed.roots!.some((r) => r.trim() === next.certPem.trim()));
      await eventually(() => ((fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert')!.data as Record<string, string>)['root-cert.pem'] ?? '').includes(next.certPem.trim().split('\n')[1]!), 'the ConfigMap with both roots');
    } finally {
      link.stop();
    }
  });

  test('deploys a waypoint Gateway with the given image', async () => {
    fake.put(waypointGateway('shop'));
    const dep = await eventually(() => fake.get('apps/v1', 'Deployment', 'shop', 'waypoint'), 'the waypoint Deployment');
    const c = ((dep.spec as { template: { spec: { containers: { image: string }[] } } }).template.spec.containers)[0]!;
    assert.equal(c.image, 'registry.example/ambit:9');
  });
});

describe('ambit-cni-agent --source kube', () => {
  test('starts on its node\'s pods and stops cleanly', async () => {
    const fake = await FakeApiServer.start();
    const dir = await mkdtemp(join(tmpdir(), 'ambit-cni-kube-'));
    try {
      await writeFile(join(dir, 'kubeconfig'), fake.kubeconfig('admin-token'));
      const agent = start('cni/main.js', ['--source', 'kube', '--kubeconfig', join(dir, 'kubeconfig'), '--node', 'node-1', '--ztunnel-socket', join(dir, 'zt.sock'), '--cni-socket', join(dir, 'cni.sock'), '--state-dir', join(dir, 'state')], {});
      await eventually(() => agent.out().includes('node agent started'), 'the agent to start', 20_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${agent.out()}`);
      });
      assert.ok(fake.audit.some((a) => a.verb === 'list' && a.resource === 'pods'));
      agent.child.kill('SIGTERM');
      assert.equal(await agent.exited, 0);
    } finally {
      await fake.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('file mode is unchanged', () => {
  test('ambit-control without --config says which required option is missing', async () => {
    const p = start('control/main.js', [], {});
    assert.equal(await p.exited, 1);
    assert.match(p.out(), /error: required option '--config <path>' not specified/);
  });

  test('ambit-cni-agent without --config says so too', async () => {
    const p = start('cni/main.js', ['--node', 'n', '--ztunnel-socket', '/tmp/x', '--cni-socket', '/tmp/y', '--state-dir', '/tmp/z'], {});
    assert.equal(await p.exited, 1);
    assert.match(p.out(), /error: required option '--config <path>' not specified/);
  });

  test('an unknown --source is refused', async () => {
    const p = start('control/main.js', ['--source', 'etcd'], {});
    assert.equal(await p.exited, 1);
    assert.match(p.out(), /--source must be file or kube, got "etcd"/);
  });
});
