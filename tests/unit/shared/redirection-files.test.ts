import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubeObject } from '../../../shared/config/objects.js';
import { readRedirections, RedirectionFiles, withRedirections } from '../../../shared/config/redirection-files.js';
import { translate } from '../../../shared/config/translate.js';
import { captureLogger } from '../k8s/fixtures.js';

const ANNOTATION = 'ambient.istio.io/redirection';

const objects: KubeObject[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop' }, spec: { nodeName: 'node-1' }, status: { podIP: '10.0.0.1', phase: 'Running' } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db', namespace: 'shop', annotations: { other: 'x' } }, spec: { nodeName: 'node-2' }, status: { podIP: '10.0.0.2', phase: 'Running' } },
];

describe('redirection annotations in local mode', () => {
  test('withRedirections lays the agents\' values onto the pods, copying only the pods it changes', () => {
    const out = withRedirections(objects, { 'shop/web': 'enabled', 'shop/db': 'pending', 'shop/gone': 'enabled' });
    assert.equal(out[0], objects[0]);
    assert.deepEqual(out[1]!.metadata.annotations, { [ANNOTATION]: 'enabled' });
    assert.deepEqual(out[2]!.metadata.annotations, { other: 'x', [ANNOTATION]: 'pending' });
    assert.equal(objects[1]!.metadata.annotations, undefined, 'the input is left as it was');
    assert.deepEqual(
      translate(out).workloads.map((w) => [w.name, w.protocol]),
      [
        ['web', 'HBONE'],
        ['db', 'TCP'],
      ],
    );
    const same = withRedirections(out, { 'shop/web': 'enabled' });
    assert.equal(same[1], out[1], 'a pod that already has the value is not copied');
  });

  test('readRedirections merges every node file; a broken or missing one counts as empty', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-redir-'));
    try {
      assert.deepEqual(await readRedirections(join(dir, 'missing')), {});
      await writeFile(join(dir, 'node-1.json'), JSON.stringify({ 'shop/web': 'enabled' }));
      await writeFile(join(dir, 'node-2.json'), JSON.stringify({ 'shop/db': 'pending', 'shop/odd': 3 }));
      await writeFile(join(dir, 'node-3.json'), '{"half');
      await writeFile(join(dir, 'node-4.json.tmp'), JSON.stringify({ 'shop/tmp': 'enabled' }));
      assert.deepEqual(await readRedirections(dir), { 'shop/web': 'enabled', 'shop/db': 'pending' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('RedirectionFiles reports a change when an agent replaces its file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-redir-'));
    const files = new RedirectionFiles(join(dir, 'redirection'), captureLogger().log);
    try {
      assert.deepEqual(await files.start(), {});
      const changed = new Promise<Record<string, string>>((resolve) => files.once('change', resolve));
      // as the agent writes it: a temporary file renamed over the real one
      await writeFile(join(dir, 'redirection', 'node-1.json.tmp'), JSON.stringify({ 'shop/web': 'enabled' }));
      await rename(join(dir, 'redirection', 'node-1.json.tmp'), join(dir, 'redirection', 'node-1.json'));
      assert.deepEqual(await changed, { 'shop/web': 'enabled' });
      assert.deepEqual(files.values, { 'shop/web': 'enabled' });
    } finally {
      files.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
