#!/usr/bin/env node
import { rename, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createLogger } from '../shared/telemetry/log.js';
import { FileSource } from '../shared/config/file-source.js';
import { NodeAgent, type Redirection } from './agent.js';
import { installIntoConfDir, installPlugin, uninstallFromConfDir } from './install.js';
import { agentKubeConfig, clusterView, copyPluginToHost, nodeClusterSource, podAnnotator } from './kube-mode.js';

const program = new Command()
  .name('ambit-cni-agent')
  .description("ambit's node agent: redirects ambient pods' traffic into ztunnel from inside their network namespace")
  .requiredOption('--node <name>', 'name of this node')
  .option('--config <path>', 'folder of Kubernetes-style YAML with the cluster\'s Namespaces and Pods (local mode)')
  .option('--source <file|kube>', 'where pods and namespaces come from: --config files, or the Kubernetes API', 'file')
  .option('--kubeconfig <file>', 'kube: kubeconfig (default: $KUBECONFIG, ~/.kube/config, else the in-cluster ServiceAccount)')
  .option('--context <name>', 'kube: kubeconfig context')
  .option('--cni-host-dir <dir>', 'copy node and the plugin here (a host directory mounted at the same path) for the launcher to run on the host')
  .requiredOption('--ztunnel-socket <path>', "ztunnel's node-agent socket")
  .requiredOption('--cni-socket <path>', 'unix socket where the ambit-cni plugin asks this agent')
  .requiredOption('--state-dir <dir>', 'where pod records are kept across restarts')
  .option('--cni-conf-dir <dir>', 'chain ambit-cni last into the first conflist found here')
  .option('--cni-bin-dir <dir>', 'install the ambit-cni plugin here')
  .option('--annotations <file>', 'local mode: write pod redirection annotations to this JSON file')
  .option('--log-level <level>', 'log level', process.env.AMBIT_LOG_LEVEL ?? 'info');

async function main(): Promise<void> {
  const o = program.parse().opts<{ source: string; kubeconfig?: string; context?: string; cniHostDir?: string; node: string; config: string; ztunnelSocket: string; cniSocket: string; stateDir: string; cniConfDir?: string; cniBinDir?: string; annotations?: string; logLevel: string }>();
  const log = createLogger('cni-agent', o.logLevel).child({ node: o.node });
  if (o.source !== 'file' && o.source !== 'kube') program.error(`error: --source must be file or kube, got "${o.source}"`);
  if (o.source === 'file' && !o.config) program.error("error: required option '--config <path>' not specified");
  const kc = o.source === 'kube' ? agentKubeConfig(o) : null;
  const source = kc ? nodeClusterSource(kc, o.node, log) : new FileSource(o.config, log);
  await source.start();
  const annotations: Record<string, string> = {};
  let writing = Promise.resolve();
  const annotate = async (ns: string, name: string, value: Redirection): Promise<void> => {
    if (!o.annotations) return;
    if (value) annotations[`${ns}/${name}`] = value;
    else delete annotations[`${ns}/${name}`];
    const file = o.annotations;
    writing = writing.then(async () => {
      await mkdir(dirname(file), { recursive: true });
      await writeFile(`${file}.tmp`, JSON.stringify(annotations, null, 2));
      await rename(`${file}.tmp`, file);
    });
    await writing;
  };
  const view = source instanceof FileSource ? { objects: () => source.objects, on: (e: 'change', fn: () => void) => source.on(e, fn) } : clusterView(source);
  const agent = new NodeAgent({ node: o.node, stateDir: o.stateDir, ztunnelSocket: o.ztunnelSocket, cniSocket: o.cniSocket, view, annotate: kc ? podAnnotator(kc, log) : annotate, log });
  await agent.start();
  if (o.cniBinDir) {
    const pluginJs = fileURLToPath(new URL('./plugin.js', import.meta.url));
    await installPlugin(o.cniBinDir, o.cniHostDir ? await copyPluginToHost(o.cniHostDir, pluginJs) : { pluginJs });
  }
  if (o.cniConfDir) {
    const file = await installIntoConfDir(o.cniConfDir, { type: 'ambit-cni', agentSocket: o.cniSocket });
    log.info({ conflist: file }, 'ambit-cni chained into the node CNI configuration');
  }
  log.info({ cniSocket: o.cniSocket }, 'node agent started');
  const stop = (): void => {
    agent.stop();
    source.stop();
    const done = o.cniConfDir && process.env.AMBIT_CNI_UNINSTALL === '1' ? uninstallFromConfDir(o.cniConfDir) : Promise.resolve();
    void done.finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  process.stderr.write(`ambit-cni-agent: ${err.message}\n`);
  process.exit(1);
});
