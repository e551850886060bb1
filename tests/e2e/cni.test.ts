// End to end: enrollment through the CNI plugin and node agent, in a real local mesh.
// Needs root; cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { podRulesInstalled, readPodRules } from '../../shared/redirect/apply.js';
import { expectedChainRules } from '../../shared/redirect/rules.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('CNI plugin and node agent', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`cni${process.pid % 100000}`);
  type Status = Awaited<ReturnType<TestMesh['status']>>;
  let st: Status;
  const pod = (key: string) => {
    const p = st.pods.find((x) => `${x.namespace}/${x.name}` === key);
    assert.ok(p, `pod ${key}`);
    return p;
  };
  const ctl = async (...args: string[]) => {
    const r = await ambit(['local', ...args, ...mesh.flags()], 60_000);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const captured = async (nodeName: string) => {
    const n = st.nodes.find((x) => x.name === nodeName)!;
    const r = await httpInNetns(`/run/netns/${n.netns}`, { host: '127.0.0.1', port: 15000, path: '/config_dump' });
    return (JSON.parse(r.body) as { capturedPods: { namespace: string; name: string }[] }).capturedPods.map((p) => `${p.namespace}/${p.name}`).sort();
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(FIXTURES, 'cni'));
    st = await mesh.status();
  });
  after(async () => {
    await mesh.down();
  });

  test('ambient pods get exactly the expected rules; opted-out and other pods none', async () => {
    for (const key of ['mesh/client', 'mesh/server']) {
      const p = pod(key);
      assert.equal(p.captured, true, key);
      const rules = await readPodRules(`/run/netns/${p.netns}`);
      assert.deepEqual(rules.chains, expectedChainRules());
      assert.equal(await podRulesInstalled(`/run/netns/${p.netns}`), true);
    }
    for (const key of ['mesh/loner', 'late/client', 'late/server']) {
      assert.equal(pod(key).captured, false, key);
      assert.deepEqual((await readPodRules(`/run/netns/${pod(key).netns}`)).chains, []);
    }
    assert.deepEqual(await captured('node-2'), ['mesh/server']);
  });

  test('labelling a namespace enrolls its running pods, unlabelling releases them; open connections survive both', async () => {
    const server = pod('late/server').ip;
    // opened before enrollment, held across enrollment and release
    const early = mesh.client('late/client', ['hold', server, '9003', '14'], 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    await ctl('label', 'ns', 'late', 'istio.io/dataplane-mode=ambient');
    st = await mesh.status();
    assert.equal(pod('late/client').captured, true);
    assert.equal(pod('late/server').captured, true);
    assert.deepEqual(await captured('node-2'), ['late/server', 'mesh/server']);
    // opened while enrolled (through the mesh), held across release
    const during = mesh.client('late/client', ['hold', server, '9003', '8'], 60_000);
    const viaMesh = await mesh.client('late/client', ['whoami', server, '9000']);
    assert.equal((viaMesh.reply as { peer: string }).peer.split(':')[0], pod('late/client').ip);
    await new Promise((r) => setTimeout(r, 2500));
    await ctl('label', 'ns', 'late', 'istio.io/dataplane-mode-');
    st = await mesh.status();
    assert.equal(pod('late/client').captured, false);
    assert.deepEqual(await captured('node-2'), ['mesh/server']);
    const [a, b] = await Promise.all([early, during]);
    assert.equal(a.ok, true, `connection from before enrollment: ${JSON.stringify(a)}`);
    assert.equal(b.ok, true, `connection from while enrolled: ${JSON.stringify(b)}`);
    const plain = await mesh.client('late/client', ['whoami', server, '9000']);
    assert.equal((plain.reply as { pod: string }).pod, 'late/server');
  });

  test('a pod label opts a single pod in and out', async () => {
    await ctl('label', 'pod', 'late/server', 'istio.io/dataplane-mode=ambient');
    st = await mesh.status();
    assert.equal(pod('late/server').captured, true);
    assert.equal(pod('late/client').captured, false);
    await ctl('label', 'pod', 'late/server', 'istio.io/dataplane-mode-');
    st = await mesh.status();
    assert.equal(pod('late/server').captured, false);
  });

  test('a new pod in an ambient namespace is captured before its first packet', async () => {
    await ctl('apply', '-f', join(FIXTURES, 'cni-apply'));
    st = await mesh.status();
    assert.equal(pod('mesh/early').captured, true);
    const log = join(mesh.stateDir, mesh.name, 'logs', 'pod-mesh-early-main.log');
    let out = '';
    for (let i = 0; i < 50 && !out.includes('reply'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      out = await readFile(log, 'utf8').catch(() => '');
    }
    const first = JSON.parse(out.trim().split('\n')[0]!) as { reply?: { peer: string } };
    assert.ok(first.reply, `the first connection succeeded: ${out}`);
    const n = st.nodes.find((x) => x.name === 'node-1')!;
    const m = (await httpInNetns(`/run/netns/${n.netns}`, { host: n.ip, port: 15020, path: '/metrics' })).body;
    assert.match(m, /istio_tcp_connections_opened_total\{reporter="source",source_workload="early"[^}]*connection_security_policy="mutual_tls"\} 1/);
  });

  test('node agent restart reconciles without duplicating rules', async () => {
    await ctl('restart', 'agent', '--node', 'node-1');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await podRulesInstalled(`/run/netns/${pod('mesh/client').netns}`), true, 'exactly one copy of each rule');
    const r = await mesh.client('mesh/client', ['whoami', 'server.mesh', '80']);
    assert.equal((r.reply as { pod: string }).pod, 'mesh/server');
  });

  test('a ztunnel restart hands its pods over: an open connection lives on, and no new connection is refused', async () => {
    const server = pod('mesh/server').ip;
    // one echo connection held across the restart, pinging once a second
    const held = mesh.client('mesh/client', ['hold', server, '9003', '9'], 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    // an app opening a new connection every 20 ms, from before the restart until after the old ztunnel stopped accepting
    type Probe = { s: number; e: number; ok: boolean; err?: string };
    const probes: Probe[] = [];
    const prober = mesh.spawnIn(pod('mesh/client').netns, [process.execPath, join(FIXTURES, 'apps', 'prober.mjs'), server, '9000', '20']);
    createInterface({ input: prober.stdout! }).on('line', (l) => probes.push(JSON.parse(l) as Probe));
    const proberExited = new Promise<void>((resolve) => prober.once('exit', () => resolve()));
    let oldPid = 0;
    try {
      await new Promise((r) => setTimeout(r, 500));
      const restartAt = Date.now();
      const out = await ctl('restart', 'ztunnel', '--node', 'node-1');
      oldPid = Number(/the ztunnel it replaced \(pid (\d+)\)/.exec(out)?.[1]);
      assert.ok(oldPid > 0, `the old ztunnel drains: ${out}`);
      assert.deepEqual(await captured('node-1'), ['mesh/client', 'mesh/early'], 'the new ztunnel serves the pods');
      // past the hand-over (5 s): the old ztunnel has closed its listeners
      await new Promise((r) => setTimeout(r, 6000));
      prober.kill('SIGTERM');
      await proberExited;
      const failed = probes.filter((p) => !p.ok);
      assert.deepEqual(failed, [], `of ${probes.length} new connections during the restart, these failed`);
      assert.ok(probes.filter((p) => p.s < restartAt).length >= 5 && probes.filter((p) => p.s > restartAt + 5500).length >= 5, `connections from before the restart until after the hand-over: ${probes.length}`);
    } finally {
      prober.kill('SIGKILL');
    }
    const h = await held;
    assert.equal(h.ok, true, `the connection opened before the restart carried every ping: ${JSON.stringify(h)}`);
    // the old one exits once its last connection ended, long before its drain deadline (25 s)
    const log = join(mesh.stateDir, mesh.name, 'logs', 'ztunnel-node-1.log');
    let drained: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && !drained; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const lines = (await readFile(log, 'utf8')).trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      drained = lines.find((l) => l.msg === 'drained');
    }
    assert.ok(drained, 'the old ztunnel logged the end of its drain');
    assert.equal(drained.cut, 0, `nothing was cut: ${JSON.stringify(drained)}`);
    assert.ok((drained.connectionsAtStart as number) >= 1, JSON.stringify(drained));
    assert.ok((drained.ms as number) < 15_000, JSON.stringify(drained));
    for (let i = 0; i < 20 && isAlive(oldPid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(isAlive(oldPid), false, 'the old ztunnel exited');
  });

  test('while ztunnel is stopped its pods fail closed; after a restart the agent re-sends them', async () => {
    await ctl('stop', 'ztunnel', '--node', 'node-1');
    const refused = await mesh.client('mesh/client', ['whoami', pod('mesh/server').ip, '9000']);
    assert.equal(refused.error, 'ECONNREFUSED', `no bypass around the mesh: ${JSON.stringify(refused)}`);
    await ctl('start', 'ztunnel', '--node', 'node-1');
    let after: Record<string, unknown> = {};
    for (let i = 0; i < 50; i++) {
      after = await mesh.client('mesh/client', ['whoami', pod('mesh/server').ip, '9000']);
      if (after.ok) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal((after.reply as { pod: string } | undefined)?.pod, 'mesh/server', JSON.stringify(after));
    assert.deepEqual(await captured('node-1'), ['mesh/client', 'mesh/early']);
  });
});
