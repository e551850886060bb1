/**
 * The node agent in a cluster: its view of the cluster is this node's pods and every namespace,
 * watched from the API server, and the redirection annotation goes onto the pod with a patch.
 */
import { copyFile, mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { kubeError, loadKubeConfig, withTimeout } from '../shared/config/kube-client.js';
import { KubeSource, nodeAgentResources } from '../shared/config/kube-source.js';
import type { Logger } from '../shared/telemetry/log.js';
import type { Annotator, ClusterView } from './agent.js';

import { REDIRECTION_ANNOTATION } from '../shared/config/translate.js';

export { REDIRECTION_ANNOTATION };

/** A KubeSource of this node's pods and all namespaces. */
export function nodeClusterSource(kc: KubeConfig, node: string, log: Logger): KubeSource {
  return new KubeSource({ kubeConfig: kc, log, resources: nodeAgentResources(node) });
}

/** The ClusterView the agent reads, over a started KubeSource. */
export function clusterView(source: KubeSource): ClusterView {
  return { objects: () => source.objects, on: (e, fn) => source.on(e, fn) };
}

/**
 * Writes `ambient.istio.io/redirection` with a JSON merge patch (null removes it). A pod already
 * gone is fine; other failures are logged, never thrown: capture does not wait on an annotation.
 */
export function podAnnotator(kc: KubeConfig, log: Logger, timeoutMs = 10_000): Annotator {
  const core = kc.makeApiClient(CoreV1Api);
  const server = kc.getCurrentCluster()?.server;
  return async (namespace, name, value) => {
    try {
      await withTimeout(
        core.patchNamespacedPod({ namespace, name, body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: value } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
        timeoutMs,
        `annotating pod ${namespace}/${name}`,
      );
    } catch (err) {
      const e = kubeError(err, server);
      if (e.status === 404) return;
      log.warn({ pod: `${namespace}/${name}`, value, err: e.message }, 'could not write the redirection annotation');
    }
  };
}

/** Loads the kubeconfig for the agent (in a pod: its ServiceAccount). */
export function agentKubeConfig(o: { kubeconfig?: string; context?: string }): KubeConfig {
  return loadKubeConfig({ kubeconfig: o.kubeconfig, context: o.context });
}

/**
 * Copies node and the compiled plugin into a host directory mounted at the same path inside the
 * agent's container, so the launcher written into the CNI bin dir works when the container
 * runtime runs it on the host. Returns the paths for the launcher.
 */
export async function copyPluginToHost(hostDir: string, pluginJs: string, nodePath: string = process.execPath): Promise<{ nodePath: string; pluginJs: string }> {
  await mkdir(hostDir, { recursive: true });
  const targets = { nodePath: join(hostDir, 'node'), pluginJs: join(hostDir, 'plugin.js') };
  for (const [from, to] of [[nodePath, targets.nodePath], [pluginJs, targets.pluginJs]] as const) {
    // replace atomically: the runtime may be executing the old copy right now
    await copyFile(from, `${to}.tmp`);
    await rename(`${to}.tmp`, to);
  }
  return targets;
}
