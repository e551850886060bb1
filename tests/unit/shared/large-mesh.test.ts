// The control plane's work on a large mesh: selector matching through the label index gives
// the endpoints a scan of every workload gives, the diff finds exactly what a deep comparison
// finds, a snapshot and a delta are serialized once for every ztunnel, and a re-read of the
// config folder parses only the files that changed.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { translate } from '../../../shared/config/translate.js';
import { readObjects, type KubeObject, type ParsedFiles } from '../../../shared/config/objects.js';
import { diffSnapshots, snapshotUpdate } from '../../../shared/control/delta.js';
import { controlService } from '../../../shared/control/protocol.js';
import type { MeshSnapshot, MeshUpdate } from '../../../shared/model/types.js';

/** A small deterministic random source, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

function randomLabels(r: () => number): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const k of ['app', 'tier', 'version', 'team']) if (r() < 0.7) labels[k] = pick(r, ['a', 'b', 'c']);
  return labels;
}

function randomMesh(r: () => number): KubeObject[] {
  const namespaces = ['ns-a', 'ns-b', 'ns-c'];
  const out: KubeObject[] = namespaces.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'istio.io/dataplane-mode': 'ambient' } } }));
  for (let i = 0; i < 300; i++) {
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `p-${i}`, namespace: pick(r, namespaces), labels: randomLabels(r) },
      spec: { nodeName: `node-${i % 4}` },
      status: { podIP: `10.0.${i >> 8}.${i & 255}`, phase: r() < 0.8 ? 'Running' : 'Pending' },
    });
  }
  for (let i = 0; i < 60; i++) {
    const selector = r() < 0.1 ? {} : randomLabels(r);
    out.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `s-${i}`, namespace: pick(r, namespaces) }, spec: { selector, ports: [{ port: 80 }] } });
  }
  return out;
}

/** Endpoints the way translate found them before the label index: every workload, in order. */
function scannedEndpoints(objects: KubeObject[], snap: MeshSnapshot): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const o of objects) {
    if (o.kind !== 'Service') continue;
    const ns = o.metadata.namespace ?? 'default';
    const sel = (o.spec!.selector ?? {}) as Record<string, string>;
    const ends = Object.keys(sel).length === 0 ? [] : snap.workloads.filter((w) => w.namespace === ns && Object.entries(sel).every(([k, v]) => w.labels[k] === v)).map((w) => w.uid);
    out.set(`${ns}/${o.metadata.name}`, ends);
  }
  return out;
}

/** The diff the way it was written first, with isDeepStrictEqual on every object. */
function referenceDiff(prev: MeshSnapshot, next: MeshSnapshot): { workloads: string[]; services: string[]; removedWorkloads: string[]; removedServices: string[] } {
  const oldW = new Map(prev.workloads.map((w) => [w.uid, w]));
  const oldS = new Map(prev.services.map((s) => [s.key, s]));
  const newW = new Set(next.workloads.map((w) => w.uid));
  const newS = new Set(next.services.map((s) => s.key));
  return {
    workloads: next.workloads.filter((w) => !isDeepStrictEqual(oldW.get(w.uid), w)).map((w) => w.uid),
    services: next.services.filter((s) => !isDeepStrictEqual(oldS.get(s.key), s)).map((s) => s.key),
    removedWorkloads: [...oldW.keys()].filter((k) => !newW.has(k)),
    removedServices: [...oldS.keys()].filter((k) => !newS.has(k)),
  };
}

describe('translate on a large mesh', () => {
  test('service endpoints are exactly the workloads a scan of the whole mesh selects, in the same order', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const objects = randomMesh(rng(seed));
      const snap = translate(objects);
      const want = scannedEndpoints(objects, snap);
      for (const s of snap.services) assert.deepEqual(s.endpoints, want.get(s.key), `seed ${seed}, service ${s.key}`);
      assert.ok(snap.services.some((s) => s.endpoints.length > 1), 'some services select several workloads');
    }
  });
});

describe('diffSnapshots on a large mesh', () => {
  test('finds exactly the objects a deep comparison finds, over many random changes', () => {
    const r = rng(42);
    let objects = randomMesh(r);
    let prev = translate(objects);
    for (let step = 0; step < 200; step++) {
      objects = objects.map((o) => {
        if (r() > 0.02) return o;
        if (o.kind === 'Pod') {
          const c = r();
          if (c < 0.3) return { ...o, metadata: { ...o.metadata, labels: randomLabels(r) } };
          if (c < 0.6) return { ...o, status: { ...o.status, phase: o.status!.phase === 'Running' ? 'Pending' : 'Running' } };
          // a label set again to the value it had: a new object, the same data
          return { ...o, metadata: { ...o.metadata, labels: { ...o.metadata.labels } } };
        }
        if (o.kind === 'Service') return { ...o, spec: { ...o.spec, ports: r() < 0.5 ? [{ port: 80 }] : [{ port: 80 }, { port: 81, name: 'x' }] } };
        return o;
      });
      if (r() < 0.2) objects = objects.filter((o, i) => !(o.kind === 'Pod' && i % 37 === step % 37));
      const next = translate(objects);
      const d = diffSnapshots(prev, next, step + 2);
      const want = referenceDiff(prev, next);
      const empty = want.workloads.length + want.services.length + want.removedWorkloads.length + want.removedServices.length === 0;
      if (empty) assert.equal(d, null, `step ${step}`);
      else {
        assert.ok(d, `step ${step}`);
        assert.deepEqual(
          { workloads: d.workloads.map((w) => w.uid), services: d.services.map((s) => s.key), removedWorkloads: d.removedWorkloads, removedServices: d.removedServices },
          want,
          `step ${step}`,
        );
      }
      prev = next;
    }
  });

  test('values that only look alike are different: a missing key, undefined, -0, a string number', () => {
    const base = translate(randomMesh(rng(7)));
    const w = base.workloads[0]!;
    const variants = [
      { ...w, labels: { ...w.labels, extra: 'x' } },
      { ...w, labels: Object.fromEntries(Object.entries(w.labels).slice(1)) },
      { ...w, ready: !w.ready },
    ];
    for (const v of variants) {
      const d = diffSnapshots(base, { ...base, workloads: [v, ...base.workloads.slice(1)] }, 2);
      assert.deepEqual(d?.workloads.map((x) => x.uid), [w.uid], JSON.stringify(v.labels));
    }
    const s = base.services[0]!;
    const pairs: Array<[unknown[], unknown[]]> = [
      [[{ port: 80, targetPort: 0 }], [{ port: 80, targetPort: -0 }]],
      [[{ port: 80, targetPort: 80 }], [{ port: 80, targetPort: 80, name: undefined }]],
      [[{ port: 80, targetPort: 80 }], [{ port: 80, targetPort: '80' }]],
      [[{ port: 80, targetPort: 80 }], [{ port: 80, targetPort: 80 }, { port: 80, targetPort: 80 }]],
    ];
    for (const [before, after] of pairs) {
      const prev = { ...base, services: [{ ...s, ports: before as typeof s.ports }] };
      const d = diffSnapshots(prev, { ...base, services: [{ ...s, ports: after as typeof s.ports }] }, 2);
      assert.equal(d?.services.length, 1, JSON.stringify(after));
      assert.equal(diffSnapshots(prev, structuredClone(prev), 2), null);
    }
  });
});

describe('mesh updates are serialized once', () => {
  test('ztunnels connecting at one version get the same snapshot message; a new version gets a new one', () => {
    const snap = translate(randomMesh(rng(9)));
    const a = snapshotUpdate(snap, 3);
    assert.equal(snapshotUpdate(snap, 3), a);
    const b = snapshotUpdate(snap, 4);
    assert.notEqual(b, a);
    assert.equal(b.version, 4);
    assert.equal(snapshotUpdate(translate(randomMesh(rng(9))), 4) === b, false);
  });

  test('the same update gives the same bytes, which decode to it', () => {
    const u = snapshotUpdate(translate(randomMesh(rng(11))), 1);
    const first = controlService.watch.responseSerialize(u);
    assert.equal(controlService.watch.responseSerialize(u), first);
    assert.deepEqual(controlService.watch.responseDeserialize(first), u);
    const other: MeshUpdate = { ...u, version: 2 };
    assert.equal((controlService.watch.responseDeserialize(controlService.watch.responseSerialize(other)) as MeshUpdate).version, 2);
  });
});

describe('readObjects with the files parsed before', () => {
  const pod = (name: string): string => `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: shop\nspec:\n  nodeName: node-1\n`;

  test('parses only the files that changed, forgets removed ones, and refuses a broken one as before', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-parsed-'));
    try {
      await writeFile(join(dir, 'a.yaml'), pod('a'));
      await writeFile(join(dir, 'b.yaml'), pod('b'));
      const parsed: ParsedFiles = new Map();
      const first = await readObjects(dir, parsed);
      assert.deepEqual(first.map((o) => o.metadata.name), ['a', 'b']);
      assert.deepEqual(first, await readObjects(dir), 'the same objects as a read without the cache');

      await writeFile(join(dir, 'b.yaml'), pod('b2'));
      const second = await readObjects(dir, parsed);
      assert.deepEqual(second.map((o) => o.metadata.name), ['a', 'b2']);
      assert.equal(second[0], first[0], 'a.yaml was not parsed again');
      assert.notEqual(second[1], first[1]);

      // same size, same content length: still seen as changed (ctime/mtime)
      await writeFile(join(dir, 'b.yaml'), pod('b3'));
      assert.deepEqual((await readObjects(dir, parsed)).map((o) => o.metadata.name), ['a', 'b3']);

      await unlink(join(dir, 'a.yaml'));
      assert.deepEqual((await readObjects(dir, parsed)).map((o) => o.metadata.name), ['b3']);
      assert.deepEqual([...parsed.keys()], [join(dir, 'b.yaml')]);

      await writeFile(join(dir, 'b.yaml'), 'kind: [');
      const err = await readObjects(dir, parsed).catch((e: Error) => e);
      const plain = await readObjects(dir).catch((e: Error) => e);
      assert.ok(err instanceof Error && plain instanceof Error);
      assert.equal(err.message, plain.message);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
