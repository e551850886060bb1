#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { createLogger } from '../shared/telemetry/log.js';
import { WorkloadIndex } from '../shared/model/index.js';
import { ConnectionPool } from '../shared/hbone/pool.js';
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/spiffe.js';
import { ControlLink, TokenFile } from './control-client.js';
import { CertificateStore } from './certificates.js';
import { ConnectionTracker } from './connections.js';
import { ZtunnelMetrics } from './metrics.js';
import { PodProxies } from './pods.js';
import { NodeAgentServer } from './inpod.js';
import { adminServer, metricsServer, readinessServer } from './admin.js';
import type { ProxyContext } from './context.js';
import { recheckOpenConnections } from './inbound.js';
import { listen } from '../shared/net/listen.js';
import { NodeReporter, nodeReport } from './report.js';
import { drainTimes, handleStopSignals } from '../shared/drain.js';

const program = new Command()
  .name('ztunnel')
  .description("ambit's node proxy: carries captured pods' TCP over mTLS HBONE")
  .requiredOption('--node <name>', 'name of this node')
  .requiredOption('--control <host:port>', 'control plane address')
  .requiredOption('--ca-root <file>', 'mesh root certificate(s), PEM, to trust the control plane')
  .requiredOption('--token-file <file>', "this node's token for the control plane")
  .requiredOption('--agent-socket <path>', 'unix socket where the node agent hands over pods')
  .option('--trust-domain <domain>', 'trust domain', DEFAULT_TRUST_DOMAIN)
  .option('--admin <host:port>', 'admin endpoint (keep it on localhost)', '127.0.0.1:15000')
  .option('--metrics <host:port>', 'Prometheus metrics', '0.0.0.0:15020')
  .option('--readiness <host:port>', 'readiness probe', '0.0.0.0:15021')
  .option('--handover-seconds <s>', 'on SIGTERM, how long to keep serving new connections beside the next ztunnel', '5')
  .option('--drain-seconds <s>', 'on SIGTERM, how long open connections may take to finish before they are reset', '25')
  .option('--log-level <level>', 'log level', process.env.AMBIT_LOG_LEVEL ?? 'info');

async function main(): Promise<void> {
  const o = program.parse().opts<{
    node: string; control: string; caRoot: string; tokenFile: string; agentSocket: string; trustDomain: string; admin: string; metrics: string; readiness: string;
    handoverSeconds: string; drainSeconds: string; logLevel: string;
  }>();
  const { handoverMs, deadlineMs } = drainTimes(o);
  // the pid tells two ztunnels of one node apart while one hands over to the other (local mode: one log file)
  const log = createLogger('ztunnel', o.logLevel).child({ node: o.node, pid: process.pid });
  const roots = await readFile(o.caRoot, 'utf8');
  // read for every call, not once: in a cluster the kubelet rotates this projected token
  const link = new ControlLink(o.control, roots, o.node, new TokenFile(o.tokenFile), log);
  const metrics = new ZtunnelMetrics();
  const ctx: ProxyContext = {
    index: new WorkloadIndex(),
    pool: new ConnectionPool(),
    certs: new CertificateStore((id, csr) => link.sign(id, csr), log),
    tracker: new ConnectionTracker(metrics, log.child({ access: true })),
    metrics,
    log,
    trustDomain: o.trustDomain,
    cursors: new Map(),
  };
  // a renewed certificate or a new trust bundle: new HBONE connections are made with it
  ctx.certs.on('renewed', (identity) => ctx.pool.retire(identity));
  let configured = false;
  link.on('update', (u) => {
    if (u.roots) {
      link.setRoots(u.roots);
      if (ctx.certs.setRoots(u.roots)) log.info({ roots: u.roots.length }, 'trust bundle changed');
    }
    ctx.index.apply(u);
    if (ctx.index.lastPoliciesChanged && configured) {
      const closed = recheckOpenConnections(ctx);
      log.info({ version: u.version, policies: ctx.index.policies.size, closed }, 'policies changed; open connections re-checked');
    }
    if (!configured) log.info({ version: u.version, workloads: u.workloads.length }, 'configuration received');
    configured = true;
  });
  link.start();
  const reporter = new NodeReporter(
    () => nodeReport(o.node, ctx.tracker.open.values(), ctx.certs.list(), ctx.tracker.denies, Date.now()),
    (r) => link.report(r),
    log,
  );
  reporter.start();
  const pods = new PodProxies(ctx);
  const sources = { ctx, pods, node: o.node, ready: () => configured, log };
  const servers = [adminServer(sources), metricsServer(sources), readinessServer(sources)];
  await listen(servers[0]!, o.admin, '--admin');
  await listen(servers[1]!, o.metrics, '--metrics');
  await listen(servers[2]!, o.readiness, '--readiness');
  const agent = new NodeAgentServer(o.agentSocket, pods, log, metrics);
  await agent.start();
  log.info({ admin: o.admin, metrics: o.metrics, agentSocket: o.agentSocket }, 'ztunnel started');

  const exit = (): void => {
    reporter.stop();
    link.stop();
    ctx.pool.close();
    for (const s of servers) s.close();
    ctx.certs.close();
    setTimeout(() => process.exit(0), 200).unref();
  };
  // what is still open is cut: reset it, so no app reads a cut stream as a complete one
  // (an exiting process ends an idle socket with a FIN)
  const cut = (): void => {
    for (const c of [...ctx.tracker.open.values()]) c.link?.abort();
  };
  handleStopSignals({
    log,
    times: { handoverMs, deadlineMs },
    now: async () => {
      agent.drain();
      await pods.close();
      cut();
    },
    // an upgrade, a node drain: hand the pods over, then let open connections finish
    drain: () => {
      log.info({ pods: pods.list().length, connections: pods.connections(), handoverSeconds: handoverMs / 1000, drainSeconds: deadlineMs / 1000 }, 'draining: pods go to the next ztunnel, open connections may finish');
      // the next ztunnel reports for this node and may need the ports: in local mode ztunnels share the node's netns
      reporter.stop();
      for (const s of servers) s.close();
      return {
        // with no pod captured, nobody sends here
        handOver: () => {
          agent.drain();
          return pods.list().length > 0;
        },
        stopAccepting: async () => {
          await pods.close();
          log.info({ connections: pods.connections() }, 'draining: no longer accepting connections');
        },
        open: () => pods.connections(),
        cut,
      };
    },
    exit,
  });
}

main().catch((err: Error) => {
  process.stderr.write(`ztunnel: ${err.message}\n`);
  process.exit(1);
});
