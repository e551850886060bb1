// End to end: a real local mesh (network namespaces, iptables, ztunnels, control plane)
// with real traffic. Needs root; cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, TestMesh, needsRoot, sh } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';

interface Status {
  nodes: { name: string; netns: string; ip: string }[];
  pods: { namespace: string; name: string; ip: string; netns: string; node: string; captured: boolean }[];
  services: { name: string; vip: string }[];
}

describe('local mesh end to end', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`e2e${process.pid % 100000}`);
  let st: Status;
  const pod = (key: string) => {
    const p = st.pods.find((x) => `${x.namespace}/${x.name}` === key);
    assert.ok(p, `pod ${key} exists`);
    return p;
  };
  const node = (name: string) => st.nodes.find((n) => n.name === name)!;
  const dump = async (nodeName: string) => {
    const n = node(nodeName);
    const r = await httpInNetns(`/run/netns/${n.netns}`, { host: '127.0.0.1', port: 15000, path: '/config_dump' });
    return JSON.parse(r.body) as { capturedPods: { name: string; namespace: string; ip: string; identity: string }[]; certificates: { identity: string; serial: string; notBefore: string; notAfter: string; state: string }[]; workloads: unknown[] };
  };
  const metrics = async (nodeName: string) => {
    const n = node(nodeName);
    return (await httpInNetns(`/run/netns/${n.netns}`, { host: n.ip, port: 15020, path: '/metrics' })).body;
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(FIXTURES, 'mesh'), ['--cert-ttl', '40']);
    st = await mesh.status();
  });

  after(async () => {
    await mesh.down();
  });

  test('ambient pods are captured; the opted-out pod and pods outside the mesh are not', () => {
    assert.equal(pod('mesh/client').captured, true);
    assert.equal(pod('mesh/server-a').captured, true);
    assert.equal(pod('mesh/server-b').captured, true);
    assert.equal(pod('mesh/opted-out').captured, false);
    assert.equal(pod('outside/plain-client').captured, false);
  });

  test('cross-node pod → pod goes through the mesh and the server sees the client pod IP', async () => {
    const r = await mesh.client('mesh/client', ['whoami', pod('mesh/server-a').ip, '9000']);
    assert.equal(r.ok, true, JSON.stringify(r));
    const reply = r.reply as { pod: string; peer: string };
    assert.equal(reply.pod, 'mesh/server-a');
    assert.equal(reply.peer.split(':')[0], pod('mesh/client').ip);
  });

  test('same-node pod → pod works and keeps the client IP', async () => {
    assert.equal(pod('mesh/server-b').node, pod('mesh/client').node);
    const r = await mesh.client('mesh/client', ['whoami', pod('mesh/server-b').ip, '9000']);
    const reply = r.reply as { pod: string; peer: string };
    assert.equal(reply.pod, 'mesh/server-b');
    assert.equal(reply.peer.split(':')[0], pod('mesh/client').ip);
  });

  test('pod → Service (by name and VIP) maps the target port and balances over both endpoints', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await mesh.client('mesh/client', ['whoami', i % 2 ? 'server.mesh' : st.services.find((s) => s.name === 'mesh/server')!.vip, '80']);
      const reply = r.reply as { pod: string; peer: string };
      assert.equal(reply.peer.split(':')[0], pod('mesh/client').ip);
      seen.add(reply.pod);
    }
    assert.deepEqual([...seen].sort(), ['mesh/server-a', 'mesh/server-b']);
  });

  test('a pod outside the mesh reaches a mesh pod in plaintext (PERMISSIVE) with its own IP', async () => {
    const r = await mesh.client('outside/plain-client', ['whoami', pod('mesh/server-a').ip, '9000']);
    const reply = r.reply as { pod: string; peer: string };
    assert.equal(reply.pod, 'mesh/server-a');
    assert.equal(reply.peer.split(':')[0], pod('outside/plain-client').ip);
  });

  test('a mesh pod reaches pods outside the mesh and opted-out pods over plain TCP', async () => {
    for (const target of ['outside/plain-server', 'mesh/opted-out']) {
      const r = await mesh.client('mesh/client', ['whoami', pod(target).ip, '9000']);
      const reply = r.reply as { pod: string; peer: string };
      assert.equal(reply.pod, target);
      assert.equal(reply.peer.split(':')[0], pod('mesh/client').ip);
    }
  });

  test('100 MB each way across nodes arrives intact (SHA-256)', async () => {
    const bytes = 100 * 1024 * 1024;
    const up = await mesh.client('mesh/client', ['upload', pod('mesh/server-a').ip, '9001', String(bytes)]);
    const reply = up.reply as { bytes: number; sha256: string };
    assert.equal(reply.bytes, bytes);
    assert.equal(reply.sha256, up.sentSha);
    const down = await mesh.client('mesh/client', ['download', pod('mesh/server-a').ip, '9002', String(bytes)]);
    assert.equal(down.bytes, bytes);
    assert.equal(down.sha256, down.expected);
  });

  test('half-close: a client that shuts its write side still gets the whole reply', async () => {
    // the sink answers only after it saw EOF; the source answers after the request and our EOF
    const up = await mesh.client('mesh/client', ['upload', 'server.mesh', '9001', '12345']);
    assert.equal((up.reply as { bytes: number }).bytes, 12345);
    const down = await mesh.client('mesh/client', ['download', 'server.mesh', '9002', String(8 * 1024 * 1024)]);
    assert.equal(down.bytes, 8 * 1024 * 1024);
    assert.equal(down.sha256, down.expected);
  });

  test('traffic between nodes carries no plaintext payload (checked against a plaintext control)', async () => {
    const pcap = join(await mkdtemp(join(tmpdir(), 'ambit-pcap-')), 'node1.pcap');
    const dump = mesh.spawnIn(node('node-1').netns, ['tcpdump', '-Z', 'root', '-i', 'eth0', '-U', '-n', '-s', '0', '-w', pcap, 'tcp']);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('tcpdump did not start')), 10_000);
        dump.stderr!.on('data', (c: Buffer) => {
          if (c.toString().includes('listening')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const secret = `ambit-secret-${Date.now()}`;
      const control = `ambit-plain-${Date.now()}`;
      const r1 = await mesh.client('mesh/client', ['send', pod('mesh/server-a').ip, '9003', secret]);
      assert.equal(r1.reply, secret);
      // plaintext control across the same link: outside (node-2) → opted-out pod (node-1)
      const r2 = await mesh.client('outside/plain-client', ['send', pod('mesh/opted-out').ip, '9003', control]);
      assert.equal(r2.reply, control);
      // tcpdump writes each packet as it comes (-U): wait until the control marker is on disk
      let bytes = Buffer.alloc(0);
      for (let i = 0; i < 100 && !bytes.includes(control); i++) {
        await new Promise((r) => setTimeout(r, 100));
        bytes = await readFile(pcap).catch(() => Buffer.alloc(0));
      }
      dump.kill('SIGINT');
      await new Promise((r) => dump.once('close', r));
      bytes = await readFile(pcap);
      assert.ok(bytes.includes(control), 'the capture sees plaintext when there is some');
      assert.ok(!bytes.includes(secret), 'mesh traffic is not readable on the wire');
    } finally {
      dump.kill('SIGKILL');
      await rm(join(pcap, '..'), { recursive: true, force: true });
    }
  });

  test('HBONE port: only mesh certificates get in; bad requests get 400/503; the ztunnel keeps serving', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-probe-'));
    try {
      const caDir = join(mesh.stateDir, mesh.name, 'ca');
      const meshCa = await CertificateAuthority.load(await readFile(join(caDir, 'root-cert.pem'), 'utf8'), await readFile(join(caDir, 'root-key.pem'), 'utf8'));
      const rogueCa = await CertificateAuthority.generate({});
      const id = new Identity('cluster.local', 'outside', 'default');
      for (const [name, ca] of [['good', meshCa], ['rogue', rogueCa]] as const) {
        const { keyPem, csrPem } = await generateKeyAndCsr(id);
        const issued = await ca.signCsr(csrPem, id);
        await sh('mkdir', ['-p', join(dir, name)]);
        await writeFile(join(dir, name, 'key.pem'), keyPem);
        await writeFile(join(dir, name, 'cert.pem'), [issued.certPem, ...issued.chainPem].join('\n'));
        await writeFile(join(dir, name, 'ca.pem'), meshCa.rootsPem().join('\n'));
      }
      const target = pod('mesh/server-a').ip;
      const probe = async (...args: string[]) => {
        const r = await mesh.exec('outside/plain-client', ['node', join(FIXTURES, 'apps', 'hbone-probe.mjs'), ...args]);
        return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
      };
      const good = await probe('tls', join(dir, 'good'), target, `${target}:9000`);
      assert.equal(good.status, 200, JSON.stringify(good));
      assert.match(String(good.body), /mesh\/server-a/);
      const rogue = await probe('tls', join(dir, 'rogue'), target, `${target}:9000`);
      assert.notEqual(rogue.status, 200, JSON.stringify(rogue));
      assert.equal(rogue.status, undefined, 'a foreign certificate never gets an HTTP answer');
      assert.equal((await probe('tls', join(dir, 'good'), target, `${target}:9000`, 'GET')).status, 400);
      assert.equal((await probe('tls', join(dir, 'good'), target, 'not-an-address')).status, 400);
      assert.equal((await probe('tls', join(dir, 'good'), target, `${pod('mesh/server-b').ip}:9000`)).status, 503);
      assert.equal((await probe('tls', join(dir, 'good'), target, `${target}:15001`)).status, 400);
      assert.equal((await probe('tls', join(dir, 'good'), target, `${target}:9999`)).status, 503);
      const old = await probe('tls', join(dir, 'good'), target, `${target}:9000`, 'CONNECT', 'TLSv1.2');
      assert.equal(old.status, undefined, `TLS 1.2 is refused: ${JSON.stringify(old)}`);
      const plain = await probe('plaintext', target);
      assert.ok(!String(plain.got ?? '').startsWith('HTTP/1.1 200'), JSON.stringify(plain));
      // still serving mesh traffic
      const r = await mesh.client('mesh/client', ['whoami', target, '9000']);
      assert.equal((r.reply as { pod: string }).pod, 'mesh/server-a');
      const m = await metrics('node-2');
      assert.match(m, /ambit_ztunnel_rejected_total\{reason="TLS_FAILURE",listener="hbone"\} [1-9]/);
      assert.match(m, /istio_tcp_connections_failed_total\{[^}]*reporter="destination"[^}]*response_flags="NO_WORKLOAD"[^}]*\} [1-9]/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('metrics on :15020 count connections and bytes with Istio labels', async () => {
    const bytes = 3 * 1024 * 1024;
    const before = await metrics('node-1');
    const sentBefore = sumMetric(before, 'istio_tcp_received_bytes_total', { reporter: 'source', source_workload: 'client', destination_workload: 'server-a' });
    await mesh.client('mesh/client', ['upload', pod('mesh/server-a').ip, '9001', String(bytes)]);
    await new Promise((r) => setTimeout(r, 300));
    const m1 = await metrics('node-1');
    const labels = {
      reporter: 'source',
      source_workload: 'client',
      source_workload_namespace: 'mesh',
      source_principal: 'spiffe://cluster.local/ns/mesh/sa/client',
      destination_workload: 'server-a',
      destination_workload_namespace: 'mesh',
      destination_principal: 'spiffe://cluster.local/ns/mesh/sa/server',
      connection_security_policy: 'mutual_tls',
    };
    assert.ok(sumMetric(m1, 'istio_tcp_connections_opened_total', labels) >= 1);
    assert.ok(sumMetric(m1, 'istio_tcp_connections_closed_total', labels) >= 1);
    assert.ok(sumMetric(m1, 'istio_tcp_received_bytes_total', labels) - sentBefore >= bytes, 'the upload is counted');
    assert.ok(sumMetric(m1, 'istio_tcp_connections_opened_total', { ...labels, destination_service: 'server.mesh.svc.cluster.local' }) >= 1, 'service-addressed traffic names the service');
    const m2 = await metrics('node-2');
    assert.ok(sumMetric(m2, 'istio_tcp_received_bytes_total', { ...labels, reporter: 'destination' }) >= bytes);
    const same = await httpInNetns(`/run/netns/${node('node-1').netns}`, { host: node('node-1').ip, port: 15020, path: '/stats/prometheus' });
    assert.match(same.body, /istio_tcp_connections_opened_total/);
  });

  test('config_dump lists captured pods and their certificates with serial and validity', async () => {
    const d = await dump('node-2');
    assert.deepEqual(d.capturedPods.map((p) => `${p.namespace}/${p.name}`).sort(), ['mesh/server-a']);
    const cert = d.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/mesh/sa/server');
    assert.ok(cert, 'certificate for the server identity');
    assert.equal(cert.state, 'available');
    assert.match(cert.serial, /^[0-9a-f]+$/);
    assert.ok(Date.parse(cert.notAfter) > Date.now());
    assert.ok(Date.parse(cert.notBefore) < Date.now());
    assert.equal(d.workloads.length, st.pods.length);
  });

  test('certificates renew at half life without dropping an open connection', async () => {
    const first = (await dump('node-1')).certificates.find((c) => c.identity.endsWith('/sa/client'))!;
    const hold = mesh.client('mesh/client', ['hold', pod('mesh/server-a').ip, '9003', '30'], 90_000);
    let renewed = first.serial;
    const until = Date.now() + 45_000;
    while (renewed === first.serial && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1000));
      renewed = (await dump('node-1')).certificates.find((c) => c.identity.endsWith('/sa/client'))!.serial;
    }
    assert.notEqual(renewed, first.serial, 'the certificate was renewed');
    const held = await hold;
    assert.equal(held.ok, true, `connection survived renewal: ${JSON.stringify(held)}`);
    const r = await mesh.client('mesh/client', ['whoami', pod('mesh/server-a').ip, '9000']);
    assert.equal((r.reply as { pod: string }).pod, 'mesh/server-a', 'new connections use the renewed certificate');
  });

  test('ztunnels keep serving the last known config while the control plane is away', async () => {
    const state = JSON.parse(await readFile(join(mesh.stateDir, mesh.name, 'state.json'), 'utf8')) as { processes: { role: string; pid: number }[] };
    const control = state.processes.find((p) => p.role === 'control')!;
    process.kill(control.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    const r = await mesh.client('mesh/client', ['whoami', 'server.mesh', '80']);
    assert.equal(r.ok, true, JSON.stringify(r));
  });

  test('local down removes every namespace, file and process', async () => {
    const state = JSON.parse(await readFile(join(mesh.stateDir, mesh.name, 'state.json'), 'utf8')) as { processes: { pid: number }[]; netns: string[] };
    const r = await mesh.down();
    assert.equal(r.code, 0, r.stderr);
    const left = (await sh('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`${mesh.name}-`));
    assert.deepEqual(left, []);
    for (const n of state.netns) assert.equal(existsSync(`/etc/netns/${n}`), false, `/etc/netns/${n} removed`);
    assert.equal(existsSync(join(mesh.stateDir, mesh.name)), false);
    for (const p of state.processes) assert.throws(() => process.kill(p.pid, 0), `process ${p.pid} is gone`);
    const etc = existsSync('/etc/netns') ? await readdir('/etc/netns') : [];
    assert.deepEqual(etc.filter((n) => n.startsWith(`${mesh.name}-`)), []);
  });
});

/** Sums the samples of a Prometheus metric whose labels include all of `want`. */
function sumMetric(text: string, name: string, want: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const labels = line.slice(name.length + 1, line.lastIndexOf('}'));
    if (Object.entries(want).every(([k, v]) => labels.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
