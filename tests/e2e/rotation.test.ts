// End to end: certificates renew, and the mesh root is rotated, while traffic flows across nodes,
// and no connection fails. Needs root; cleans up after itself even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, TestMesh, ambit, needsRoot } from './harness.js';
import { httpInNetns } from '../../shared/netns/http.js';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';
import { summarizeRoot } from '../../shared/identity/trust.js';

interface Status {
  nodes: { name: string; netns: string; ip: string }[];
  pods: { namespace: string; name: string; ip: string; netns: string; node: string; captured: boolean }[];
  services: { name: string; vip: string }[];
}

interface Dump {
  certificates: { identity: string; serial: string; state: string; root?: string }[];
  trustRoots?: { serial: string; subject: string }[];
}

interface LoadReport {
  seconds: number;
  short: { attempted: number; ok: number; failed: number; errors: unknown[] };
  long: { n: number; sent: number; echoed: number; ok: boolean; openedAtMs: number; lastEchoAtMs: number; error: string | null }[] | string;
}

/** Workload certificate lifetime of this mesh: renewals every ~30 s. */
const TTL = 60;

describe('certificate rotation under load', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`rot${process.pid % 100000}`);
  let st: Status;
  const pod = (key: string) => st.pods.find((x) => `${x.namespace}/${x.name}` === key)!;
  const dump = async (netns: string): Promise<Dump> => {
    const r = await httpInNetns(`/run/netns/${netns}`, { host: '127.0.0.1', port: 15000, path: '/config_dump' });
    return JSON.parse(r.body) as Dump;
  };
  /** Runs the load generator in a pod for `seconds`; resolves with its report. */
  const load = async (from: string, seconds: number, shortTargets: string[], longTarget: string, longCount: number): Promise<LoadReport> => {
    const r = await mesh.exec(from, ['node', join(FIXTURES, 'apps', 'load.mjs'), String(seconds), '20', shortTargets.join(','), longTarget, String(longCount)], (seconds + 60) * 1000);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as LoadReport;
    } catch {
      throw new Error(`load in ${from} printed no report (exit ${r.code}): ${r.stdout} ${r.stderr}`);
    }
  };
  /** Traffic both ways across the nodes (and through the Service), from the client on node-1 and server-a on node-2. */
  const trafficBothWays = (seconds: number): Promise<LoadReport[]> => {
    const a = pod('mesh/server-a').ip;
    const b = pod('mesh/server-b').ip;
    return Promise.all([
      load('mesh/client', seconds, [`${a}:9000`, 'server.mesh:80', `${a}:9003`, `${b}:9000`], `${a}:9003`, 3),
      load('mesh/server-a', seconds, [`${b}:9000`, `${b}:9003`], `${b}:9003`, 2),
    ]);
  };
  const assertNoFailure = (reports: LoadReport[]): void => {
    for (const r of reports) {
      assert.ok(r.short.attempted > r.seconds * 10, `short connections were made: ${r.short.attempted}`);
      assert.equal(r.short.failed, 0, `no short connection failed: ${JSON.stringify(r.short.errors)}`);
      assert.ok(Array.isArray(r.long), String(r.long));
      for (const l of r.long) {
        assert.equal(l.ok, true, `long-lived connection ${l.n} kept working: ${JSON.stringify(l)}`);
        assert.ok(l.lastEchoAtMs >= r.seconds * 1000 - 1000, `long-lived connection ${l.n} still echoed at the end: ${JSON.stringify(l)}`);
      }
    }
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(FIXTURES, 'mesh'), ['--cert-ttl', String(TTL)]);
    st = await mesh.status();
  });

  after(async () => {
    await mesh.down();
  });

  test(`with a ${TTL} s TTL, every ztunnel renews twice under load and no connection fails`, async (t) => {
    // serials each ztunnel held for each identity, sampled through the run
    const seen = new Map<string, Set<string>>();
    let sampling = true;
    const sample = async (): Promise<void> => {
      for (const n of st.nodes) {
        for (const c of (await dump(n.netns)).certificates) {
          if (c.state !== 'available') continue;
          const k = `${n.name} ${c.identity}`;
          if (!seen.has(k)) seen.set(k, new Set());
          seen.get(k)!.add(c.serial);
        }
      }
    };
    const sampler = (async () => {
      while (sampling) {
        await sample();
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    const seconds = Math.ceil(TTL * 1.25);
    let reports: LoadReport[];
    try {
      reports = await trafficBothWays(seconds);
    } finally {
      sampling = false;
      await sampler;
    }
    await sample();
    t.diagnostic(`serials: ${[...seen].map(([k, v]) => `${k} ${v.size}`).join('; ')}`);
    t.diagnostic(`traffic: ${reports.map((r) => `${r.short.ok}/${r.short.attempted} short ok, long ${Array.isArray(r.long) ? r.long.map((l) => `${l.echoed}/${l.sent}`).join(' ') : r.long}`).join('; ')}`);
    assert.ok(seen.size >= 3, `certificates seen on both nodes: ${[...seen.keys()].join(', ')}`);
    for (const [k, serials] of seen) assert.ok(serials.size >= 3, `${k}: certificate changed at least twice (serials ${[...serials].join(', ')})`);
    assertNoFailure(reports);
  });

  test('the root rotates (add, switch, drop) under load with no failed connection; afterwards the old root is refused on 15008', async (t) => {
    const caDir = join(mesh.stateDir, mesh.name, 'ca');
    const loadCa = async (): Promise<CertificateAuthority> => CertificateAuthority.load(await readFile(join(caDir, 'root-cert.pem'), 'utf8'), await readFile(join(caDir, 'root-key.pem'), 'utf8'));
    const oldCa = await loadCa();
    const oldSerial = summarizeRoot(oldCa.certPem).serial;
    const probeDir = await mkdtemp(join(tmpdir(), 'ambit-rotation-'));
    const rotate = async (phase: string): Promise<string> => {
      const r = await ambit(['local', 'rotate-ca', '--phase', phase, ...mesh.flags()], 60_000);
      assert.equal(r.code, 0, `rotate-ca --phase ${phase}: ${r.stdout} ${r.stderr}`);
      t.diagnostic(`rotate-ca --phase ${phase}: ${r.stdout.trim().replace(/\n/g, ' | ')}`);
      return r.stdout;
    };
    /** A leaf for a pod outside the mesh, signed by `ca`, presented on server-a's 15008; resolves with the HTTP status (undefined: refused at TLS). */
    const present = async (name: string, ca: CertificateAuthority, trust: string[]): Promise<unknown> => {
      const id = new Identity('cluster.local', 'outside', 'default');
      const { keyPem, csrPem } = await generateKeyAndCsr(id);
      const issued = await ca.signCsr(csrPem, id);
      const dir = join(probeDir, name);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'key.pem'), keyPem);
      await writeFile(join(dir, 'cert.pem'), [issued.certPem, ...issued.chainPem].join('\n'));
      await writeFile(join(dir, 'ca.pem'), trust.join('\n'));
      const target = pod('mesh/server-a').ip;
      const r = await mesh.exec('outside/plain-client', ['node', join(FIXTURES, 'apps', 'hbone-probe.mjs'), 'tls', dir, target, `${target}:9000`]);
      return (JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { status?: unknown }).status;
    };
    const rootsEverywhere = async (): Promise<string[][]> => Promise.all(st.nodes.map(async (n) => ((await dump(n.netns)).trustRoots ?? []).map((r) => r.serial)));

    // traffic from before the rotation until after the drop (the drop waits a TTL after the switch)
    const seconds = TTL * 2;
    const started = Date.now();
    const traffic = trafficBothWays(seconds);
    try {
      await new Promise((r) => setTimeout(r, 3000));
      await rotate('add');
      const newCa = await CertificateAuthority.load(await readFile(join(caDir, 'next-root-cert.pem'), 'utf8'), await readFile(join(caDir, 'next-root-key.pem'), 'utf8'));
      const newSerial = summarizeRoot(newCa.certPem).serial;
      for (const roots of await rootsEverywhere()) assert.deepEqual([...roots].sort(), [oldSerial, newSerial].sort(), 'every ztunnel trusts both roots after add');
      const both = [oldCa.certPem, newCa.certPem];
      assert.equal(await present('old-overlap', oldCa, both), 200, 'during the overlap a leaf of the old root is accepted');
      assert.equal(await present('new-overlap', newCa, both), 200, 'and one of the new root too, before it signs');

      await new Promise((r) => setTimeout(r, 3000));
      await rotate('switch');
      assert.equal(summarizeRoot((await loadCa()).certPem).serial, newSerial, 'the new root signs');
      // leaves renew at half life: within TTL/2 every ztunnel holds only leaves of the new root
      const until = Date.now() + (TTL / 2 + 15) * 1000;
      let leafRoots: (string | undefined)[] = [];
      while (Date.now() < until) {
        leafRoots = (await Promise.all(st.nodes.map(async (n) => (await dump(n.netns)).certificates.filter((c) => c.state === 'available').map((c) => c.root)))).flat();
        if (leafRoots.every((r) => r === newSerial)) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.ok(leafRoots.length >= 3 && leafRoots.every((r) => r === newSerial), `every leaf chains to the new root: ${leafRoots.join(', ')}`);
      assert.equal(await present('old-after-switch', oldCa, both), 200, 'until the drop, a leaf of the old root is still accepted');

      // the drop is refused until every leaf of the old root has expired, then goes through
      const early = await ambit(['local', 'rotate-ca', '--phase', 'drop', ...mesh.flags()]);
      const rotation = JSON.parse(await readFile(join(caDir, 'rotation.json'), 'utf8').catch(() => '{}')) as { switchedAt?: string };
      assert.ok(rotation.switchedAt, 'the switch time is kept in ca/rotation.json');
      assert.notEqual(early.code, 0, 'drop before the leaf TTL has passed is refused');
      assert.match(early.stderr, /may be valid until/);
      const wait = Date.parse(rotation.switchedAt) + TTL * 1000 + 6000 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await rotate('drop');
      for (const roots of await rootsEverywhere()) assert.deepEqual(roots, [newSerial], 'every ztunnel trusts only the new root after drop');
      assert.ok(Date.now() - started < seconds * 1000 - 5000, 'the drop happened while traffic still flowed');
      assert.equal(await present('old-after-drop', oldCa, both), undefined, 'after the drop a leaf of the old root is refused at the TLS handshake');
      assert.equal(await present('new-after-drop', newCa, [newCa.certPem]), 200, 'and one of the new root accepted');
    } finally {
      const reports = await traffic;
      await rm(probeDir, { recursive: true, force: true });
      t.diagnostic(`traffic: ${reports.map((r) => `${r.short.ok}/${r.short.attempted} short ok, long ${Array.isArray(r.long) ? r.long.map((l) => `${l.echoed}/${l.sent}`).join(' ') : r.long}`).join('; ')}`);
      assertNoFailure(reports);
    }
    const m = (await httpInNetns(`/run/netns/${st.nodes.find((n) => n.name === pod('mesh/server-a').node)!.netns}`, { host: st.nodes.find((n) => n.name === pod('mesh/server-a').node)!.ip, port: 15020, path: '/metrics' })).body;
    assert.match(m, /ambit_ztunnel_rejected_total\{reason="TLS_FAILURE",listener="hbone"\} [1-9]/, 'the refusal is counted');
  });
});
