#!/usr/bin/env node
import { Command } from 'commander';
import { createLogger, type Logger } from '../shared/telemetry/log.js';
import { summarizeRoot } from '../shared/identity/trust.js';
import { CONTROL_SERVER_NAME } from '../shared/control/protocol.js';
import { ControlServer } from './server.js';
import { ServingCertificate } from './serving.js';
import { loadCaFiles, type CaFiles } from './ca-files.js';
import { FileSource } from '../shared/config/file-source.js';
import { RedirectionFiles, withRedirections } from '../shared/config/redirection-files.js';
import { TokenFileAuthenticator } from './auth.js';
import { runKubeControlPlane } from './kube-mode.js';
import { parseDashboardAddress, startDashboard } from './dashboard/start.js';

const program = new Command()
  .name('ambit-control')
  .description('ambit control plane: serves mesh configuration to ztunnels and signs workload certificates')
  .option('--config <path>', 'folder or file of Kubernetes-style YAML to serve (local mode)')
  .option('--redirection-dir <dir>', "local mode: the node agents' files of pod redirection annotations (a pod is reached over HBONE once its agent says `enabled`)")
  .option('--ca-cert <file>', 'CA certificate (PEM)')
  .option('--ca-key <file>', 'CA private key (PEM)')
  .option('--trusted-roots <file>', 'other roots the mesh trusts besides the signing CA\'s (PEM bundle; root rotation). The CA files are read again on SIGHUP')
  .option('--node-tokens <file>', 'JSON map of node token → node name')
  .option('--source <file|kube>', 'where the mesh comes from: --config files, or the Kubernetes API', 'file')
  .option('--kubeconfig <file>', 'kube: kubeconfig (default: $KUBECONFIG, ~/.kube/config, else the in-cluster ServiceAccount)')
  .option('--context <name>', 'kube: kubeconfig context')
  .option('--trust-domain <domain>', 'kube: trust domain of a newly made CA (default: cluster.local, or the one in the CA Secret)')
  .option('--token-audience <aud>', 'kube: audience of the ztunnel ServiceAccount tokens (TokenReview)', 'ambit-ca')
  .option('--ztunnel-service-account <ns/name>', 'kube: the ServiceAccount ztunnels run as', 'ambit-system/ztunnel')
  .option('--ca-secret <ns/name>', 'kube: Secret holding the CA (made on first start when absent)', 'ambit-system/ambit-ca')
  .option('--ca-reload-interval <seconds>', 'kube: how often the CA Secret is read again (root rotation)', '30')
  .option('--waypoint-image <image>', 'kube: image for waypoint Deployments, or "self" for this pod\'s own (without it, waypoint Gateways are not deployed)')
  .option('--waypoint-control-address <host:port>', 'kube: control plane address waypoints dial')
  .option('--listen <host:port>', 'gRPC listen address', '0.0.0.0:15012')
  .option('--dashboard <host:port|off>', 'the mesh dashboard (a web page); keep it on localhost', '127.0.0.1:15014')
  .option('--ip <ip...>', 'IP addresses to put in the serving certificate', [])
  .option('--cert-ttl <seconds>', 'workload certificate lifetime', '86400')
  .option('--log-level <level>', 'log level', process.env.AMBIT_LOG_LEVEL ?? 'info');

async function main(): Promise<void> {
  const opts = program.parse().opts<KubeFlags & { config: string; redirectionDir?: string; caCert: string; caKey: string; trustedRoots?: string; nodeTokens: string; listen: string; dashboard: string; ip: string[]; certTtl: string; logLevel: string }>();
  const log = createLogger('control', opts.logLevel);
  parseDashboardAddress(opts.dashboard); // a bad flag stops here, before anything listens
  if (opts.source === 'kube') return startKube(opts, log);
  if (opts.source !== 'file') program.error(`error: --source must be file or kube, got "${opts.source}"`);
  for (const [key, flag] of [['config', '--config <path>'], ['caCert', '--ca-cert <file>'], ['caKey', '--ca-key <file>'], ['nodeTokens', '--node-tokens <file>']] as const) {
    if (!opts[key]) program.error(`error: required option '${flag}' not specified`);
  }
  const caFiles: CaFiles = { caCert: opts.caCert, caKey: opts.caKey, ...(opts.trustedRoots ? { trustedRoots: opts.trustedRoots } : {}) };
  const ca = await loadCaFiles(caFiles);
  logCa(log, ca, 'CA loaded');
  const auth = await TokenFileAuthenticator.load(opts.nodeTokens);
  const ttl = Number(opts.certTtl);
  if (!Number.isInteger(ttl) || ttl < 10) throw new Error(`--cert-ttl must be a whole number of seconds ≥ 10, got ${opts.certTtl}`);
  const server = new ControlServer(ca, auth, log, ttl);
  const source = new FileSource(opts.config, log);
  const redirections = opts.redirectionDir ? new RedirectionFiles(opts.redirectionDir, log) : null;
  const objects = await source.start();
  const values = (await redirections?.start()) ?? {};
  server.setObjects(withRedirections(objects, values));
  source.on('change', (o) => server.setObjects(withRedirections(o, redirections?.values ?? {})));
  redirections?.on('change', (v) => server.setObjects(withRedirections(source.objects, v)));
  const serving = new ServingCertificate({ dnsNames: [CONTROL_SERVER_NAME], ipAddresses: opts.ip, ttlSeconds: 365 * 24 * 3600 });
  await serving.issue(ca);
  const port = await server.listen(opts.listen, serving.credentials());
  log.info({ listen: opts.listen, port }, 'control plane serving');
  const dashboard = await startDashboard(opts.dashboard, server, log);
  // SIGHUP: read the CA files again (root rotation); one reload at a time
  let reloading = Promise.resolve();
  process.on('SIGHUP', () => {
    reloading = reloading.then(() => reloadCa(caFiles, server, serving, log));
  });
  const stop = (): void => {
    source.stop();
    redirections?.stop();
    void Promise.all([server.close(), dashboard?.close()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** One line saying which CA signs and which roots are trusted (`ambit local rotate-ca` reads it). */
function logCa(log: Logger, ca: Awaited<ReturnType<typeof loadCaFiles>>, msg: string, extra: Record<string, unknown> = {}): void {
  log.info({ signer: summarizeRoot(ca.certPem).serial, signerRoot: summarizeRoot(ca.signerRootPem()).serial, roots: ca.rootsPem().map((r) => summarizeRoot(r).serial), ...extra }, msg);
}

/** Reads the CA files again and, unless they are broken or refused, signs and serves with them from now on. */
async function reloadCa(files: CaFiles, server: ControlServer, serving: ServingCertificate, log: Logger): Promise<void> {
  try {
    const ca = await loadCaFiles(files);
    const change = server.setCa(ca);
    await serving.issue(ca);
    logCa(log, ca, 'CA reloaded', { added: change.added.map((r) => r.serial), removed: change.removed.map((r) => r.serial), servingSerial: serving.serial });
  } catch (err) {
    log.error({ err: (err as Error).message }, 'CA reload failed; keeping the current CA');
  }
}

interface KubeFlags {
  source: string;
  dashboard: string;
  kubeconfig?: string;
  context?: string;
  trustDomain?: string;
  tokenAudience: string;
  ztunnelServiceAccount: string;
  caSecret: string;
  caReloadInterval: string;
  waypointImage?: string;
  waypointControlAddress?: string;
}

/** `--source kube`: see control/kube-mode.ts. */
async function startKube(opts: KubeFlags & { listen: string; ip: string[]; certTtl: string }, log: ReturnType<typeof createLogger>): Promise<void> {
  const ttl = Number(opts.certTtl);
  if (!Number.isInteger(ttl) || ttl < 10) throw new Error(`--cert-ttl must be a whole number of seconds ≥ 10, got ${opts.certTtl}`);
  const reload = Number(opts.caReloadInterval);
  if (!Number.isFinite(reload) || reload < 1) throw new Error(`--ca-reload-interval must be a number of seconds ≥ 1, got ${opts.caReloadInterval}`);
  const stopKube = await runKubeControlPlane({ ...opts, certTtlSeconds: ttl, caReloadSeconds: reload, controlAddress: opts.waypointControlAddress, dashboard: opts.dashboard }, log);
  const stop = (): void => void stopKube().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  process.stderr.write(`ambit-control: ${err.message}\n`);
  process.exit(1);
});
