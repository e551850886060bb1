// End to end: `ambit ztunnel-config` against the sample mesh (examples/mesh), each view checked
// against `ambit local status -o json`. Needs root; the mesh is torn down even when a test fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { parse } from 'yaml';
import { FIXTURES, ROOT, TestMesh, ambit, needsRoot } from './harness.js';
import { describeCertificate } from '../../shared/identity/csr.js';

/** Splits a table into rows of {COLUMN: cell}, by where each header starts (cells may be empty). */
function parseTable(text: string): Record<string, string>[] {
  const [header, ...lines] = text.trimEnd().split('\n');
  const cols = [...header!.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], start: m.index! }));
  return lines.map((line) => Object.fromEntries(cols.map((c, i) => [c.name, line.slice(c.start, cols[i + 1]?.start ?? line.length).trim()])));
}

function headerOf(text: string): string[] {
  return text.split('\n')[0]!.split(/\s{2,}/);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('ambit ztunnel-config', { skip: needsRoot }, () => {
  const mesh = new TestMesh(`zc${process.pid % 100000}`);
  let st: Awaited<ReturnType<TestMesh['status']>>;
  const held: ChildProcess[] = [];

  const zc = async (...args: string[]): Promise<string> => {
    const r = await ambit(['zc', ...args, ...mesh.flags()]);
    assert.equal(r.code, 0, `zc ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  /** Polls a view until `ok` holds for its rows (config and connections reach ztunnels asynchronously). */
  const eventually = async (args: string[], ok: (rows: Record<string, string>[]) => boolean): Promise<Record<string, string>[]> => {
    let rows: Record<string, string>[] = [];
    for (let i = 0; i < 50; i++) {
      rows = parseTable(await zc(...args));
      if (ok(rows)) return rows;
      await sleep(200);
    }
    assert.fail(`zc ${args.join(' ')}: never as expected; last:\n${JSON.stringify(rows, null, 2)}`);
  };

  before(async () => {
    await mesh.down();
    await mesh.up(join(ROOT, 'examples', 'mesh'));
    st = await mesh.status();
  });
  after(async () => {
    for (const p of held) p.kill('SIGKILL');
    await mesh.down();
    await rm(mesh.stateDir, { recursive: true, force: true });
  });

  test('workloads: one row per pod with its namespace, name, IP and node; HBONE exactly for captured pods', async () => {
    const out = await zc('workloads');
    assert.deepEqual(headerOf(out), ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL']);
    const rows = parseTable(out);
    const expected = st.pods
      .map((p) => ({ NAMESPACE: p.namespace, 'POD NAME': p.name, ADDRESS: p.ip, NODE: p.node, WAYPOINT: 'None', PROTOCOL: p.captured ? 'HBONE' : 'TCP' }))
      .sort((a, b) => `${a.NAMESPACE}/${a['POD NAME']}`.localeCompare(`${b.NAMESPACE}/${b['POD NAME']}`));
    assert.deepEqual(rows, expected);

    const client = st.pods.find((p) => p.namespace === 'shop' && p.name === 'client')!;
    assert.deepEqual(parseTable(await zc('workloads', '--address', client.ip)).map((r) => r['POD NAME']), ['client']);
    assert.deepEqual(new Set(parseTable(await zc('workloads', '-n', 'legacy')).map((r) => r.NAMESPACE)), new Set(['legacy']));
    // every ztunnel holds the whole mesh: one node's view is the same list
    assert.deepEqual(parseTable(await zc('workloads', '--node', 'node-2')), rows);
    const json = JSON.parse(await zc('workloads', '-o', 'json')) as { uid: string; ip: string }[];
    assert.deepEqual(json.map((w) => w.ip).sort(), st.pods.map((p) => p.ip).sort());
  });

  test('services: name and VIP as status shows them, endpoints ready/total', async () => {
    const out = await zc('services');
    assert.deepEqual(headerOf(out), ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS']);
    const rows = parseTable(out);
    assert.deepEqual(
      rows.map((r) => ({ name: `${r.NAMESPACE}/${r['SERVICE NAME']}`, vip: r['SERVICE VIP'] })),
      st.services.map((s) => ({ name: s.name, vip: s.vip })).sort((a, b) => a.name.localeCompare(b.name)),
    );
    // examples/mesh: echo is backed by echo-1 and echo-2, web by web
    assert.deepEqual(Object.fromEntries(rows.map((r) => [`${r.NAMESPACE}/${r['SERVICE NAME']}`, `${r.WAYPOINT} ${r.ENDPOINTS}`])), { 'legacy/web': 'None 1/1', 'shop/echo': 'None 2/2' });
  });

  test('policies: none at first, then the applied ones with action and scope', async () => {
    const out = await zc('policies');
    assert.deepEqual(headerOf(out), ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE']);
    assert.equal(parseTable(out).length, 0);
    const r = await ambit(['local', 'apply', '-f', join(FIXTURES, 'ztunnel-config', 'policies.yaml'), ...mesh.flags()]);
    assert.equal(r.code, 0, r.stderr);
    const rows = await eventually(['policies'], (rs) => rs.length === 2);
    assert.deepEqual(rows, [
      { NAMESPACE: 'shop', 'POLICY NAME': 'allow-shop', ACTION: 'Allow', SCOPE: 'WorkloadSelector' },
      { NAMESPACE: 'shop', 'POLICY NAME': 'deny-legacy', ACTION: 'Deny', SCOPE: 'Namespace' },
    ]);
    assert.equal(parseTable(await zc('policies', '-n', 'legacy')).length, 0);
  });

  test('certificates: per node, a valid leaf per identity of its captured pods, and the mesh root', async () => {
    const workloads = JSON.parse(await zc('workloads', '-o', 'json')) as { namespace: string; name: string; serviceAccount: string }[];
    const identity = (ns: string, name: string) => `spiffe://cluster.local/ns/${ns}/sa/${workloads.find((w) => w.namespace === ns && w.name === name)!.serviceAccount}`;
    const expected = new Set(st.pods.filter((p) => p.captured).map((p) => `${p.node} ${identity(p.namespace, p.name)}`));
    const rows = await eventually(['certificates'], (rs) => rs.filter((r) => r.TYPE === 'Leaf' && r.STATUS === 'Available').length === expected.size);
    assert.deepEqual(Object.keys(rows[0]!), ['NODE', 'CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE']);
    const leaves = rows.filter((r) => r.TYPE === 'Leaf');
    assert.deepEqual(new Set(leaves.map((r) => `${r.NODE} ${r['CERTIFICATE NAME']}`)), expected);
    const now = Date.now();
    for (const l of leaves) {
      assert.equal(l['VALID CERT'], 'true');
      assert.match(l['SERIAL NUMBER']!, /^[0-9a-f]+$/);
      assert.ok(Date.parse(l['NOT BEFORE']!) <= now && now < Date.parse(l['NOT AFTER']!), JSON.stringify(l));
    }
    const root = describeCertificate(await readFile(join(mesh.stateDir, mesh.name, 'ca', 'root-cert.pem'), 'utf8'));
    const roots = rows.filter((r) => r.TYPE === 'Root');
    assert.equal(roots.length, leaves.length);
    for (const r of roots) assert.equal(r['SERIAL NUMBER'], root.serial);
    assert.equal(roots[0]!['NOT AFTER'], root.notAfter.toISOString().replace(/\.\d{3}Z$/, 'Z'));

    // one node asked: no NODE column, only that node's identities
    const one = parseTable(await zc('certificates', '--node', 'node-2'));
    assert.ok(!('NODE' in one[0]!));
    assert.deepEqual(new Set(one.filter((r) => r.TYPE === 'Leaf').map((r) => `node-2 ${r['CERTIFICATE NAME']}`)), new Set([...expected].filter((e) => e.startsWith('node-2 '))));
  });

  test('connections: an open connection shows outbound at the client\'s node and inbound at the endpoint\'s', async () => {
    const out = await zc('connections');
    assert.deepEqual(headerOf(out), ['NODE', 'WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL']);
    const client = st.pods.find((p) => p.namespace === 'shop' && p.name === 'client')!;
    const echo = st.services.find((s) => s.name === 'shop/echo')!;
    // a connection the app keeps open without a request (Node's HTTP server waits for one)
    const p = mesh.spawnIn(client.netns, [process.execPath, '-e', `const s=require('net').connect(80,'${echo.vip}');s.on('error',()=>{});setTimeout(()=>s.destroy(),30000)`]);
    held.push(p);
    const rows = await eventually(['connections'], (rs) => rs.some((r) => r.DIRECTION === 'Outbound') && rs.some((r) => r.DIRECTION === 'Inbound'));
    const outbound = rows.find((r) => r.DIRECTION === 'Outbound')!;
    assert.equal(outbound.NODE, client.node);
    assert.equal(outbound.WORKLOAD, 'client.shop');
    assert.ok(outbound.LOCAL!.startsWith(`${client.ip}:`), outbound.LOCAL);
    assert.equal(outbound['REMOTE TARGET'], 'echo.shop.svc.cluster.local');
    assert.equal(outbound.PROTOCOL, 'HBONE');
    const endpoint = st.pods.find((x) => `${x.ip}:8080` === outbound.REMOTE)!;
    assert.ok(endpoint && endpoint.name.startsWith('echo-'), `remote ${outbound.REMOTE} is an echo pod`);
    const inbound = rows.find((r) => r.DIRECTION === 'Inbound')!;
    assert.deepEqual(
      { node: inbound.NODE, workload: inbound.WORKLOAD, local: inbound.LOCAL, target: inbound['REMOTE TARGET'], protocol: inbound.PROTOCOL },
      { node: endpoint.node, workload: `${endpoint.name}.shop`, local: `${endpoint.ip}:8080`, target: 'echo.shop.svc.cluster.local', protocol: 'HBONE' },
    );
    assert.ok(inbound.REMOTE!.startsWith(`${client.ip}:`), inbound.REMOTE);
    p.kill('SIGKILL');
  });

  test('all: every view in order; yaml has a key per view', async () => {
    const sections = (await zc('all')).trimEnd().split('\n\n');
    assert.equal(sections.length, 5);
    assert.deepEqual(sections.map((s) => headerOf(s)[0]), ['NAMESPACE', 'NAMESPACE', 'NAMESPACE', 'NODE', 'NODE']);
    const all = parse(await ambit(['ztunnel-config', 'all', '-o', 'yaml', ...mesh.flags()]).then((r) => r.stdout)) as Record<string, unknown[]>;
    assert.deepEqual(Object.keys(all), ['workloads', 'services', 'policies', 'certificates', 'connections']);
    assert.equal(all.workloads!.length, st.pods.length);
  });

  test('an unknown node or mesh is refused in one sentence', async () => {
    let r = await ambit(['zc', 'workloads', '--node', 'node-9', ...mesh.flags()]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), `ambit: no node "node-9" in mesh "${mesh.name}"; nodes: node-1, node-2`);
    r = await ambit(['zc', 'workloads', '--name', 'zcnosuchmesh', '--state-dir', mesh.stateDir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no local mesh named "zcnosuchmesh" is up/);
  });
});
