// End to end: a running app is enrolled and released by its namespace label, several times,
// while it keeps opening connections every 5 ms. None of them may fail: the node agent hands
// the pod to ztunnel before redirecting its traffic, and stops redirecting before ztunnel lets
// it go. While enrolled its connections are carried over HBONE, and the server's ztunnel sees
// them arrive over mutual TLS. Then the same for the server's side, with the client meshed:
// other ztunnels switch to HBONE only once the server's node agent has enrolled it. Needs root;
// cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';

interface Probe {
  s: number;
  e: number;
  ok: boolean;
  port: number;
  err?: string;
}

const ROUNDS = 3;
const WINDOW_MS = 1500;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('enrolling a running pod', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`enr${process.pid % 100000}`);
  type Status = Awaited<ReturnType<TestMesh['status']>>;
  let st: Status;
  let prober: ChildProcess | null = null;
  const pod = (key: string) => {
    const p = st.pods.find((x) => `${x.namespace}/${x.name}` === key);
    assert.ok(p, `pod ${key}`);
    return p;
  };
  const node = (name: string) => st.nodes.find((n) => n.name === name)!;
  const ctl = async (...args: string[]) => {
    const r = await ambit(['local', ...args, ...mesh.flags()], 60_000);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
  };
  const redirection = async (): Promise<string | undefined> => {
    const file = join(mesh.stateDir, mesh.name, 'redirection', 'node-1.json');
    const all = JSON.parse(await readFile(file, 'utf8').catch(() => '{}')) as Record<string, string>;
    return all['app/prober'];
  };
  /** Connections node-2's ztunnel delivered to the server over mutual TLS, so far. */
  const mtlsArrivals = async (): Promise<number> => {
    const n = node('node-2');
    const body = (await httpInNetns(`/run/netns/${n.netns}`, { host: n.ip, port: 15020, path: '/metrics' })).body;
    let sum = 0;
    for (const line of body.split('\n')) {
      if (!line.startsWith('istio_tcp_connections_opened_total{')) continue;
      if (line.includes('reporter="destination"') && line.includes('destination_workload="server"') && line.includes('connection_security_policy="mutual_tls"')) sum += Number(line.split(' ').pop());
    }
    return sum;
  };

  /** Starts the app's prober (a connection to the server every 5 ms) once it is seen working. */
  const startProber = async (netns: string, serverIp: string) => {
    const probes: Probe[] = [];
    const child = mesh.spawnIn(netns, [process.execPath, join(FIXTURES, 'apps', 'prober.mjs'), serverIp, '9000', '5']);
    prober = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: child.stdout! }).on('line', (l) => probes.push(JSON.parse(l) as Probe));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    for (let i = 0; i < 100 && probes.filter((p) => p.ok).length < 20; i++) await sleep(100);
    assert.ok(probes.filter((p) => p.ok).length >= 20, `the prober runs: ${JSON.stringify(probes.slice(-3))} ${stderr}`);
    return { probes, child, exited };
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(FIXTURES, 'enroll'));
    st = await mesh.status();
  });
  after(async () => {
    prober?.kill('SIGKILL');
    await mesh.down();
  });

  test('label and unlabel its namespace while it opens a connection every 5 ms: none fails; enrolled, they go over HBONE', async (t) => {
    const client = pod('app/prober');
    const server = pod('srv/server');
    assert.equal(client.captured, false);
    const { probes, child, exited } = await startProber(client.netns, server.ip);

    /** Probes that started and ended inside [from, to]. */
    const within = (from: number, to: number) => probes.filter((p) => p.s >= from && p.e <= to);
    const enrolledWindows: Probe[][] = [];
    const releasedWindows: { from: number; to: number; probes: Probe[] }[] = [];
    const seen = new Set<string>();
    const changes: string[] = [];
    const mark = (what: string) => changes.push(`${Date.now()} ${what}`);
    for (let round = 1; round <= ROUNDS; round++) {
      // enroll, watching the annotation the agent writes: never `pending` for a running pod
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          seen.add(String(await redirection()));
          await sleep(5);
        }
      })();
      mark(`round ${round} label`);
      await ctl('label', 'ns', 'app', 'istio.io/dataplane-mode=ambient');
      mark(`round ${round} labelled`);
      watching = false;
      await watcher;
      st = await mesh.status();
      assert.equal(pod('app/prober').captured, true, `round ${round}: captured`);

      // enrolled: every connection of a steady window reaches the server over mutual TLS
      const m1 = await mtlsArrivals();
      const t1 = Date.now();
      await sleep(WINDOW_MS);
      const t2 = Date.now();
      const m2 = await mtlsArrivals();
      const enrolled = within(t1, t2).filter((p) => p.ok);
      assert.ok(enrolled.length >= 10, `round ${round}: ${enrolled.length} connections while enrolled`);
      assert.ok(m2 - m1 >= enrolled.length, `round ${round}: the server's ztunnel saw ${m2 - m1} mTLS connections, the app made ${enrolled.length}`);
      enrolledWindows.push(enrolled);

      mark(`round ${round} unlabel`);
      await ctl('label', 'ns', 'app', 'istio.io/dataplane-mode-');
      mark(`round ${round} unlabelled`);
      st = await mesh.status();
      assert.equal(pod('app/prober').captured, false, `round ${round}: released`);
      assert.equal(await redirection(), undefined);

      // released: plaintext again, nothing arrives over mTLS any more
      const m3 = await mtlsArrivals();
      const t3 = Date.now();
      await sleep(WINDOW_MS);
      const t4 = Date.now();
      const m4 = await mtlsArrivals();
      const released = within(t3, t4).filter((p) => p.ok);
      assert.ok(released.length >= 10, `round ${round}: ${released.length} connections after release`);
      assert.equal(m4 - m3, 0, `round ${round}: no mTLS arrivals after release`);
      releasedWindows.push({ from: t3, to: t4, probes: released });
    }
    child.kill('SIGTERM');
    await exited;
    prober = null;

    const failed = probes.filter((p) => !p.ok);
    t.diagnostic(`${probes.length} connections, ${failed.length} failed; ${enrolledWindows.flat().length} in the enrolled windows, ${releasedWindows.flatMap((w) => w.probes).length} in the released ones; annotation values seen while enrolling: ${[...seen].join(', ')}`);
    if (failed.length) {
      t.diagnostic(`failed: ${JSON.stringify(failed.slice(0, 20))}`);
      t.diagnostic(`label changes: ${changes.join('; ')}`);
      const from = failed[0]!.s - 300;
      const to = failed.at(-1)!.e + 300;
      for (const f of ['ztunnel-node-1', 'ztunnel-node-2', 'cni-agent-node-1']) {
        const lines = (await readFile(join(mesh.stateDir, mesh.name, 'logs', `${f}.log`), 'utf8')).split('\n').filter((l) => {
          const at = Date.parse((/"time":"([^"]+)"/.exec(l) ?? [])[1] ?? '');
          return at >= from && at <= to && !(l.includes('connection complete') && l.includes('"flags":"-"'));
        });
        t.diagnostic(`${f}: ${lines.slice(0, 40).join('\n')}`);
      }
    }
    assert.deepEqual(failed, [], `${failed.length} of ${probes.length} connections failed`);
    assert.ok(probes.length >= 200, `${probes.length} connections in all`);
    assert.deepEqual([...seen].filter((v) => v === 'pending'), [], `annotation values seen while enrolling: ${[...seen].join(', ')}`);

    // node-1's ztunnel logged each connection of the enrolled windows as outbound HBONE (matched
    // by source port and time: ports are reused over a run), and none from the pod while released
    const logFile = join(mesh.stateDir, mesh.name, 'logs', 'ztunnel-node-1.log');
    let carried: { at: number; port: number; protocol: string }[] = [];
    const logged = (p: Probe) => carried.filter((c) => c.port === p.port && c.at >= p.s && c.at <= p.e + 1000);
    for (let i = 0; i < 50; i++) {
      carried = [];
      for (const line of (await readFile(logFile, 'utf8')).split('\n')) {
        if (!line.includes('connection complete')) continue;
        const r = JSON.parse(line) as { time: string; direction?: string; protocol?: string; 'src.addr'?: string };
        if (r.direction !== 'outbound' || !r['src.addr']?.startsWith(`${client.ip}:`)) continue;
        carried.push({ at: Date.parse(r.time), port: Number(r['src.addr'].split(':').pop()), protocol: r.protocol ?? '' });
      }
      if (enrolledWindows.flat().every((p) => logged(p).length > 0)) break;
      await sleep(100);
    }
    for (const p of enrolledWindows.flat()) assert.ok(logged(p).some((c) => c.protocol === 'HBONE'), `connection from port ${p.port} at ${p.s}: ${JSON.stringify(logged(p))}`);
    for (const w of releasedWindows) assert.deepEqual(carried.filter((c) => c.at >= w.from && c.at <= w.to), [], 'nothing carried by ztunnel while released');
  });

  test("with the client in the mesh, release and enroll the server's namespace while it connects every 5 ms: none fails; enrolled, they arrive over mTLS", async (t) => {
    // a meshed client's ztunnel reaches the server over HBONE only once the server's node agent
    // says ztunnel serves it (its redirection annotation), never on the label alone: before
    // that, nothing would answer on the server's :15008
    await ctl('label', 'ns', 'app', 'istio.io/dataplane-mode=ambient');
    st = await mesh.status();
    const client = pod('app/prober');
    const server = pod('srv/server');
    assert.equal(client.captured, true);
    assert.equal(server.captured, true);
    const { probes, child, exited } = await startProber(client.netns, server.ip);
    const within = (from: number, to: number) => probes.filter((p) => p.s >= from && p.e <= to && p.ok);
    const changes: string[] = [];
    const mark = (what: string) => changes.push(`${Date.now()} ${what}`);
    for (let round = 1; round <= ROUNDS; round++) {
      mark(`round ${round} unlabel srv`);
      await ctl('label', 'ns', 'srv', 'istio.io/dataplane-mode-');
      mark(`round ${round} srv unlabelled`);
      const m1 = await mtlsArrivals();
      const t1 = Date.now();
      await sleep(WINDOW_MS);
      const released = within(t1, Date.now());
      assert.ok(released.length >= 10, `round ${round}: ${released.length} connections while the server is released`);
      assert.equal((await mtlsArrivals()) - m1, 0, `round ${round}: no mTLS arrivals while the server is released`);

      mark(`round ${round} label srv`);
      await ctl('label', 'ns', 'srv', 'istio.io/dataplane-mode=ambient');
      mark(`round ${round} srv labelled`);
      const m3 = await mtlsArrivals();
      const t3 = Date.now();
      await sleep(WINDOW_MS);
      const enrolled = within(t3, Date.now());
      const m4 = await mtlsArrivals();
      assert.ok(enrolled.length >= 10, `round ${round}: ${enrolled.length} connections while the server is enrolled`);
      assert.ok(m4 - m3 >= enrolled.length, `round ${round}: the server's ztunnel saw ${m4 - m3} mTLS connections, the client made ${enrolled.length}`);
    }
    child.kill('SIGTERM');
    await exited;
    prober = null;
    const failed = probes.filter((p) => !p.ok);
    t.diagnostic(`${probes.length} connections, ${failed.length} failed`);
    if (failed.length) {
      t.diagnostic(`failed: ${JSON.stringify(failed.slice(0, 20))}`);
      t.diagnostic(`label changes: ${changes.join('; ')}`);
    }
    assert.deepEqual(failed, [], `${failed.length} of ${probes.length} connections failed`);
    assert.ok(probes.length >= 200, `${probes.length} connections in all`);
  });
});
