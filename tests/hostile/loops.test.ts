/**
 * Loop protection: nothing a client can name makes ztunnel connect back into its own ports.
 *
 * Pure checks of planOutbound (outbound) and checkInboundTarget (inbound) over hostile
 * destinations and random meshes, then, as root, the case found by these tests: an app that
 * connects straight to 127.0.0.1:15001 inside its pod reaches ztunnel uncaptured, and a
 * passthrough of that destination would connect to ztunnel again, without end.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { planOutbound, type OutboundPlan } from '../../ztunnel/outbound.js';
import { checkInboundTarget } from '../../ztunnel/inbound.js';
import { ZTUNNEL_PORTS } from '../../ztunnel/context.js';
import { WorkloadIndex } from '../../shared/model/index.js';
import { parseAddress, type Service, type SocketAddress, type Workload } from '../../shared/model/types.js';
import { MeshError } from '../../shared/errors.js';
import { ambit, isRoot, needsRoot, ROOT, sh } from '../e2e/harness.js';
import { Random } from '../fuzz/fuzz.js';

const OWN = [...ZTUNNEL_PORTS];

function wl(uid: string, ip: string, over: Partial<Workload> = {}): Workload {
  const [namespace, name] = uid.split('/') as [string, string];
  return { uid, name, namespace, serviceAccount: name, node: 'node-1', ip, labels: {}, protocol: 'HBONE', ready: true, ...over };
}

function context(workloads: Workload[], services: Service[]) {
  const index = new WorkloadIndex();
  index.apply({ type: 'snapshot', version: 1, workloads, services, removedWorkloads: [], removedServices: [] });
  return { index, cursors: new Map<string, number>(), trustDomain: 'cluster.local' };
}

function loop(plan: OutboundPlan): MeshError {
  assert.equal(plan.kind, 'refuse', `expected a refusal, got ${JSON.stringify(plan)}`);
  assert.ok(plan.kind === 'refuse');
  assert.equal(plan.error.flag, 'LOOP');
  return plan.error;
}

describe('outbound loop protection (planOutbound)', () => {
  const ctx = context(
    [wl('shop/web', '10.0.1.1'), wl('legacy/db', '10.0.3.1', { protocol: 'TCP' })],
    [
      { key: 'shop/web', name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vip: '10.96.0.1', ports: [{ port: 80, targetPort: 8080 }, { port: 81, targetPort: 15001 }, { port: 82, targetPort: 15006 }, { port: 83, targetPort: 15008 }], endpoints: ['shop/web'] },
    ],
  );

  test("loopback and unspecified addresses on ztunnel's ports are a loop, in every spelling", () => {
    for (const ip of ['127.0.0.1', '127.1.2.3', '127.255.255.254', '0.0.0.0', '::1', '::', '::ffff:127.0.0.1', '::ffff:0.0.0.0']) {
      for (const port of OWN) assert.match(loop(planOutbound(ctx, { ip, port })).message, /ztunnel's own port/, `${ip}:${port}`);
    }
  });

  test('loopback on other ports is passed through unchanged (the app could reach it anyway)', () => {
    for (const dst of [{ ip: '127.0.0.1', port: 8080 }, { ip: '::1', port: 15000 }, { ip: '127.0.0.1', port: 15020 }]) {
      assert.deepEqual(planOutbound(ctx, dst), { kind: 'plain', target: dst });
    }
  });

  test("a meshed pod's IP, or a service whose targetPort is a ztunnel port, is a loop", () => {
    for (const port of OWN) loop(planOutbound(ctx, { ip: '10.0.1.1', port }));
    for (const port of [81, 82, 83]) loop(planOutbound(ctx, { ip: '10.96.0.1', port }));
    assert.equal(planOutbound(ctx, { ip: '10.96.0.1', port: 80 }).kind, 'hbone');
  });

  test('random meshes and destinations: a plan never targets a ztunnel port over HBONE, nor passes loopback:15001 through', () => {
    const rnd = new Random(0x1007);
    const ports = [80, 443, 8080, 15000, 15020, 15021, ...OWN];
    for (let round = 0; round < 300; round++) {
      const workloads = Array.from({ length: 1 + rnd.int(6) }, (_, i) => wl(`ns${i % 2}/w${i}`, `10.0.${i}.${1 + rnd.int(3)}`, { protocol: rnd.bool() ? 'HBONE' : 'TCP', ready: rnd.int(5) > 0 }));
      const services: Service[] = Array.from({ length: rnd.int(4) }, (_, i) => ({
        key: `ns0/s${i}`,
        name: `s${i}`,
        namespace: 'ns0',
        hostname: `s${i}.ns0.svc.cluster.local`,
        vip: `10.96.0.${i + 1}`,
        ports: Array.from({ length: 1 + rnd.int(3) }, (_, k) => ({ port: 80 + k, targetPort: rnd.pick(ports) })),
        endpoints: workloads.filter(() => rnd.bool()).map((w) => w.uid),
      }));
      const c = context(workloads, services);
      for (let k = 0; k < 40; k++) {
        const ip = rnd.pick([...workloads.map((w) => w.ip), ...services.map((s) => s.vip!), '127.0.0.1', '::1', '0.0.0.0', '192.0.2.7', '::ffff:127.0.0.1']);
        const dst: SocketAddress = { ip, port: rnd.bool() ? rnd.pick(ports) : 80 + rnd.int(3) };
        const plan = planOutbound(c, dst);
        if (plan.kind === 'hbone') assert.ok(!ZTUNNEL_PORTS.has(plan.target.port), `HBONE to ${plan.target.ip}:${plan.target.port}`);
        if (plan.kind === 'plain') {
          const local = /^(127\.|0\.0\.0\.0$|::1$|::$|::ffff:127\.)/.test(plan.target.ip);
          assert.ok(!(local && ZTUNNEL_PORTS.has(plan.target.port)), `passthrough to ${plan.target.ip}:${plan.target.port}`);
        }
      }
    }
  });
});

describe('inbound loop protection (checkInboundTarget on hostile authorities)', () => {
  const pod = { ip: '10.0.1.1' };

  test("every spelling of this pod's ztunnel ports that parses is a LOOP (400); other spellings do not parse or are not this pod", () => {
    const authorities = ['10.0.1.1:15008', '10.0.1.1:15001', '10.0.1.1:15006', '10.0.1.1:015008', '10.0.1.1:0015001', '[::ffff:10.0.1.1]:15008', '010.0.1.1:15008', '10.0.1.1:15008 ', ' 10.0.1.1:15008', '10.0.1.1:15008\0', '10.0.1.1:+15008', '10.0.1.1:1.5008e4', '10.0.1.1:0x3AB0'];
    for (const a of authorities) {
      const target = parseAddress(a);
      if (!target) continue; // 400 from the server: bad authority
      const err = checkInboundTarget(pod, target);
      assert.ok(err, `${JSON.stringify(a)} was accepted`);
      if (target.ip === pod.ip) {
        assert.equal(err.flag, 'LOOP', a);
        assert.equal(err.status, 400);
      } else {
        assert.equal(err.flag, 'NO_WORKLOAD', a);
      }
    }
  });

  test('any port of this pod that is not ztunnel\'s is accepted; every ztunnel port is not', () => {
    for (let port = 1; port <= 65535; port++) {
      const err = checkInboundTarget(pod, { ip: pod.ip, port });
      assert.equal(err?.flag ?? null, ZTUNNEL_PORTS.has(port) ? 'LOOP' : null, `port ${port}`);
    }
  });
});

describe('a pod connecting to 127.0.0.1:15001 in a live mesh', { skip: needsRoot }, () => {
  const name = 'hzloops';
  const flags = ['--name', name, '--state-dir', '/run/ambit-test'];
  after(async () => {
    await ambit(['local', 'down', ...flags]);
  });

  test("ztunnel refuses it as a LOOP and does not connect to itself (its fd count stays flat)", { timeout: 240_000 }, async () => {
    assert.ok(isRoot);
    const up = await ambit(['local', 'up', '-f', join(ROOT, 'examples', 'mesh'), '--replace', ...flags], 200_000);
    assert.equal(up.code, 0, up.stdout + up.stderr);
    const status = JSON.parse((await ambit(['local', 'status', '-o', 'json', ...flags])).stdout) as { pods: { namespace: string; name: string; netns: string }[] };
    const client = status.pods.find((p) => p.namespace === 'shop' && p.name === 'client')!;
    const state = JSON.parse(await readFile(`/run/ambit-test/${name}/state.json`, 'utf8')) as { processes: { role: string; name: string; pid: number }[] };
    const pid = state.processes.find((p) => p.role === 'ztunnel' && p.name === 'node-1')?.pid;
    assert.ok(pid, 'ztunnel of node-1 in the mesh state');
    const fds = async (): Promise<number> => (await readdir(`/proc/${pid}/fd`)).length;
    const before = await fds();
    // hold the connection 2 s: a loop would have opened thousands of sockets by then
    const probe = `const s=require('net').connect(15001,'127.0.0.1');s.on('error',e=>{console.log(e.code);process.exit(0)});s.on('close',()=>{console.log('closed');process.exit(0)});s.on('connect',()=>s.write('x'));setTimeout(()=>{console.log('open');process.exit(0)},2000)`;
    const run = sh('ip', ['netns', 'exec', client.netns, process.execPath, '-e', probe], 20_000);
    await new Promise((r) => setTimeout(r, 1000));
    const during = await fds();
    const r = await run;
    assert.match(r.stdout, /ECONNRESET|closed/, `the probe saw: ${r.stdout} ${r.stderr}`);
    assert.ok(during - before < 20, `ztunnel fds went from ${before} to ${during}`);
    const log = (await sh('grep', ['-c', '"flags":"LOOP"', `/run/ambit-test/${name}/logs/ztunnel-node-1.log`])).stdout.trim();
    assert.ok(Number(log) >= 1, 'a LOOP line in the ztunnel log');
    const metrics = await sh('ip', ['netns', 'exec', `${name}-node-1`, 'curl', '-s', 'http://127.0.0.1:15020/metrics']);
    assert.match(metrics.stdout, /istio_tcp_connections_failed_total\{[^}]*response_flags="LOOP"[^}]*\} [1-9]/);
  });
});
