// The node agent's cluster side: its view (this node's pods, all namespaces) decides enrollment
// from real labels, and the redirection annotation is patched onto the pod.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer, eventually } from './fake-apiserver.js';
import { captureLogger, kubeConfigFor, namespace, pod } from './fixtures.js';
import { REDIRECTION_ANNOTATION, clusterView, copyPluginToHost, nodeClusterSource, podAnnotator } from '../../../cni/kube-mode.js';
import { wantsAmbient } from '../../../cni/agent.js';

describe('node agent in a cluster', () => {
  let fake: FakeApiServer;
  before(async () => {
    fake = await FakeApiServer.start();
    fake.put(namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }));
    fake.put(namespace('plain'));
    fake.put(pod('shop', 'web-12345', { node: 'node-1' }));
    fake.put(pod('shop', 'opted-out', { node: 'node-1', labels: { 'istio.io/dataplane-mode': 'none' } }));
    fake.put(pod('plain', 'solo-12345', { node: 'node-1' }));
    fake.put(pod('shop', 'elsewhere', { node: 'node-2' }));
  });
  after(async () => fake.close());

  test('the view holds this node\'s pods and the namespaces, and enrollment follows label changes', async () => {
    const { log } = captureLogger();
    const src = nodeClusterSource(kubeConfigFor(fake), 'node-1', log);
    try {
      await src.start();
      const view = clusterView(src);
      let changes = 0;
      view.on('change', () => changes++);
      assert.equal(wantsAmbient(view.objects(), 'shop', 'web-12345'), true);
      assert.equal(wantsAmbient(view.objects(), 'shop', 'opted-out'), false);
      assert.equal(wantsAmbient(view.objects(), 'plain', 'solo-12345'), false);
      assert.equal(wantsAmbient(view.objects(), 'shop', 'elsewhere'), false, 'not on this node: not in the view');
      fake.put(namespace('plain', { 'istio.io/dataplane-mode': 'ambient' }));
      await eventually(() => wantsAmbient(view.objects(), 'plain', 'solo-12345'), 'enrollment by namespace label');
      assert.ok(changes >= 1);
    } finally {
      src.stop();
    }
  });

  test('the annotator patches ambient.istio.io/redirection, removes it with null, and shrugs at a deleted pod', async () => {
    const { log, lines } = captureLogger();
    const annotate = podAnnotator(kubeConfigFor(fake), log);
    await annotate('shop', 'web-12345', 'pending');
    assert.equal((fake.get('v1', 'Pod', 'shop', 'web-12345')!.metadata.annotations as Record<string, string>)[REDIRECTION_ANNOTATION], 'pending');
    await annotate('shop', 'web-12345', 'enabled');
    assert.equal((fake.get('v1', 'Pod', 'shop', 'web-12345')!.metadata.annotations as Record<string, string>)[REDIRECTION_ANNOTATION], 'enabled');
    assert.ok(fake.audit.some((a) => a.verb === 'patch' && a.resource === 'pods' && a.name === 'web-12345'));
    await annotate('shop', 'web-12345', null);
    assert.equal((fake.get('v1', 'Pod', 'shop', 'web-12345')!.metadata.annotations as Record<string, string> | undefined)?.[REDIRECTION_ANNOTATION], undefined);
    await annotate('shop', 'gone-00000', 'enabled');
    assert.equal(lines.filter((l) => Number(l.level) >= 40).length, 0, 'a pod that is gone is not a warning');
    await fake.stop();
    await annotate('shop', 'web-12345', 'enabled'); // logged, not thrown: capture never waits on an annotation
    assert.ok(lines.some((l) => l.msg === 'could not write the redirection annotation'));
    await fake.restart();
  });

  test('the plugin and node are copied to a host directory for the launcher', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-cni-host-'));
    try {
      const plugin = join(dir, 'src-plugin.js');
      await writeFile(plugin, '// plugin\n');
      const t = await copyPluginToHost(join(dir, 'host'), plugin);
      assert.equal(t.pluginJs, join(dir, 'host', 'plugin.js'));
      assert.equal(await readFile(t.pluginJs, 'utf8'), '// plugin\n');
      assert.ok(((await stat(t.nodePath)).mode & 0o111) !== 0, 'node stays executable');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
