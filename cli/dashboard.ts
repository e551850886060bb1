import net from 'node:net';
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { httpInNetns, socketInNetns } from '../shared/netns/http.js';
import { netnsPath, readState, type LocalState } from './local/cluster.js';
import { DASHBOARD_PORT } from './local/topology.js';
import { alive } from './local/system.js';

const DEFAULT_STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';

/** A TCP connection to host:port made from inside a network namespace. */
function connectInNetns(netns: string, host: string, port: number): net.Socket {
  const sock = socketInNetns(netnsPath(netns));
  sock.connect(port, host);
  return sock;
}

/**
 * Forwards a port on this machine into the control plane's network namespace, where the
 * dashboard listens on localhost. Resolves with the server once it listens.
 */
export function forwardIntoNetns(netns: string, target: { host: string; port: number }, listen: { host: string; port: number }): Promise<net.Server> {
  const server = net.createServer((client) => {
    let upstream: net.Socket;
    try {
      upstream = connectInNetns(netns, target.host, target.port);
    } catch {
      client.destroy();
      return;
    }
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `port ${listen.port} on ${listen.host} is taken; choose another with --port` : `cannot listen on ${listen.host}:${listen.port}: ${err.message}`)),
    );
    server.listen(listen.port, listen.host, () => resolve(server));
  });
}

async function checkDashboard(s: LocalState): Promise<void> {
  const control = s.processes.find((p) => p.role === 'control');
  if (!control || !alive(control.pid)) throw new Error(`the control plane of mesh "${s.name}" is not running; start it with \`ambit local start control${s.name === 'ambit' ? '' : ` --name ${s.name}`}\``);
  try {
    const r = await httpInNetns(netnsPath(s.plan.fabric.netns), { host: '127.0.0.1', port: DASHBOARD_PORT, path: '/api/graph', timeoutMs: 5000 });
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.trim()}`);
  } catch (err) {
    throw new Error(`the control plane of mesh "${s.name}" serves no dashboard on 127.0.0.1:${DASHBOARD_PORT} in ${s.plan.fabric.netns} (${(err as Error).message}); restart it with \`ambit local restart control\``, { cause: err });
  }
}

/** `ambit dashboard`: the mesh dashboard of a local mesh, on a port of this machine. */
export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description('open the live mesh graph (served by the control plane): traffic, mTLS, errors, waypoints; click a workload for its connections, certificates and denies')
    .addOption(new Option('--port <port>', 'port on this machine for the page').default('15014'))
    .addOption(new Option('--address <ip>', 'address on this machine to listen on (keep it local: the page shows who talks to whom)').default('127.0.0.1'))
    .option('--open', 'also open the page in a browser (xdg-open)')
    .addOption(new Option('--name <name>', 'local mesh name').default('ambit'))
    .addOption(new Option('--state-dir <dir>', 'where local meshes keep their state').default(DEFAULT_STATE_ROOT))
    .action(async (o: { port: string; address: string; open?: boolean; name: string; stateDir: string }) => {
      const port = Number(o.port);
      if (!/^\d+$/.test(o.port) || port > 65535) throw new Error(`--port must be a port number, got "${o.port}"`);
      if (net.isIP(o.address) === 0) throw new Error(`--address must be an IP address, got "${o.address}"`);
      const s = await readState(o.stateDir, o.name);
      if (!s) {
        throw new Error(
          `no local mesh named "${o.name}" is up; start one with \`ambit local up -f DIR\`. ` +
            'In a cluster the control plane serves the page on its localhost: `kubectl -n ambit-system port-forward deploy/ambit-control 15014`',
        );
      }
      if (process.getuid?.() !== 0) throw new Error('ambit dashboard needs root to reach the control plane inside its network namespace: run it as root (e.g. with sudo).');
      await checkDashboard(s);
      const server = await forwardIntoNetns(s.plan.fabric.netns, { host: '127.0.0.1', port: DASHBOARD_PORT }, { host: o.address, port });
      const a = server.address() as net.AddressInfo;
      const url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/`;
      console.log(`dashboard of mesh "${s.name}": ${url}`);
      console.log('press Ctrl-C to stop');
      if (o.open) {
        const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
        child.on('error', () => console.log('could not start a browser (xdg-open); open the address above'));
        child.unref();
      }
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          server.close();
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      // open keep-alive connections would hold the process
      process.exit(0);
    });
}
