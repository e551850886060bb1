import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { apply, deleteObjects, down, findPod, label, startDaemon, stopDaemon, netnsPath, readState, redirections, up, PrerequisiteError, checkPrerequisites, type LocalState } from './cluster.js';
import { alive } from './system.js';
import { progressFor } from './progress.js';
import { ROTATION_PHASES, rotateAll, rotateStep, type RotationPhase } from './ca-rotation.js';
import { httpInNetns } from '../../shared/netns/http.js';

const DEFAULT_STATE_ROOT = process.env.AMBIT_STATE_DIR ?? '/run/ambit';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

async function mustState(root: string, name: string): Promise<LocalState> {
  const s = await readState(root, name);
  if (!s) throw new Error(`no local mesh named "${name}" is up; start one with \`ambit local up -f DIR\``);
  return s;
}

/** The status view: nodes, pods and services of a local mesh. */
export function statusView(s: LocalState, redirection: Record<string, string>): { nodes: unknown[]; pods: unknown[]; services: unknown[] } {
  const z = (node: string) => s.processes.find((p) => p.role === 'ztunnel' && p.name === node);
  return {
    nodes: s.plan.nodes.map((n) => ({
      name: n.name,
      netns: n.netns,
      ip: n.ip,
      metrics: `http://${n.ip}:15020/metrics`,
      admin: `http://127.0.0.1:15000 (inside netns ${n.netns})`,
      ztunnel: z(n.name) && alive(z(n.name)!.pid) ? 'running' : 'stopped',
    })),
    pods: s.plan.pods.map((p) => ({
      namespace: p.namespace,
      name: p.name,
      node: p.node,
      ip: p.ip,
      netns: p.netns,
      captured: redirection[p.key] === 'enabled',
      redirection: redirection[p.key] ?? 'none',
      running: s.processes.filter((x) => x.role === 'pod' && x.name.startsWith(`${p.key}/`)).every((x) => alive(x.pid)),
    })),
    services: s.plan.services.map((v) => ({ name: v.key, vip: v.vip, ports: v.ports.map((p) => `${p.port}→${p.targetPort}`).join(','), hostname: v.hostnames[0] })),
  };
}

async function printStatus(s: LocalState): Promise<void> {
  const v = statusView(s, await redirections(s)) as { nodes: Record<string, string>[]; pods: Record<string, unknown>[]; services: Record<string, string>[] };
  console.log(table([['NODE', 'NETNS', 'IP', 'ZTUNNEL', 'METRICS', 'ADMIN'], ...v.nodes.map((n) => [n.name!, n.netns!, n.ip!, n.ztunnel!, n.metrics!, n.admin!])]));
  console.log();
  console.log(table([['NAMESPACE', 'POD', 'NODE', 'IP', 'NETNS', 'CAPTURED', 'RUNNING'], ...v.pods.map((p) => [String(p.namespace), String(p.name), String(p.node), String(p.ip), String(p.netns), p.captured ? 'yes' : p.redirection === 'pending' ? 'pending' : 'no', p.running ? 'yes' : 'no'])]));
  console.log();
  console.log(table([['SERVICE', 'VIP', 'PORTS', 'HOSTNAME'], ...v.services.map((x) => [x.name!, x.vip!, x.ports!, x.hostname!])]));
}

/** Runs a command in a pod's netns with the terminal attached; resolves with its exit code. */
export function execInPod(s: LocalState, ref: string, argv: string[], stdio: 'inherit' | 'pipe' = 'inherit'): Promise<{ code: number; stdout: string }> {
  const pod = findPod(s, ref);
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', pod.netns, ...argv], { stdio: stdio === 'inherit' ? 'inherit' : ['ignore', 'pipe', 'inherit'], cwd: pod.cwd });
    let out = '';
    child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout: out }));
  });
}

/** A short guided look at the sample mesh: traffic through it and where to see it. */
async function tour(s: LocalState): Promise<void> {
  const svc = s.plan.services.find((x) => x.key === 'shop/echo');
  const legacy = s.plan.services.find((x) => x.key === 'legacy/web');
  const client = s.plan.pods.find((p) => p.key === 'shop/client');
  if (!svc || !client) throw new Error('the tour needs the sample mesh from examples/mesh');
  const show = async (title: string, pod: string, argv: string[]): Promise<void> => {
    console.log(`\n$ ambit local exec ${pod} -- ${argv.join(' ')}    # ${title}`);
    const r = await execInPod(s, pod, argv, 'pipe');
    process.stdout.write(r.stdout || `(exit ${r.code})\n`);
  };
  await show('mesh pod → Service VIP, carried over mTLS HBONE (the app sees the client pod IP)', 'shop/client', ['curl', '-sS', '--max-time', '5', 'http://echo.shop/hello']);
  await show('again: the Service balances over its endpoints on both nodes', 'shop/client', ['curl', '-sS', '--max-time', '5', 'http://echo.shop/hello']);
  await show('pod outside the mesh → mesh pod, plaintext accepted (PERMISSIVE)', 'legacy/outsider', ['curl', '-sS', '--max-time', '5', `http://${s.plan.pods.find((p) => p.key === 'shop/echo-1')!.ip}:8080/from-outside`]);
  if (legacy) await show('mesh pod → pod outside the mesh, plain TCP', 'shop/client', ['curl', '-sS', '--max-time', '5', `http://${s.plan.pods.find((p) => p.key === 'legacy/web')!.ip}:8080/to-outside`]);
  const node = s.plan.nodes[0]!;
  const m = await httpInNetns(netnsPath(node.netns), { host: node.ip, port: 15020, path: '/metrics' });
  const lines = m.body.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total{')).slice(0, 3);
  console.log(`\nztunnel metrics on ${node.name} (http://${node.ip}:15020/metrics):`);
  for (const l of lines) console.log(`  ${l}`);
  console.log(`
Look around:
  ambit local status                         nodes, pods, services
  ambit dashboard                            the live mesh graph in a browser (traffic, mTLS, denies)
  ambit local exec shop/client -- curl -s http://echo.shop/
  ip netns exec ${node.netns} curl -s localhost:15000/config_dump   ztunnel's view (workloads, services, certificates)
  ip netns exec ${node.netns} curl -s ${node.ip}:15020/metrics
  logs in ${s.dir}/logs/
  ambit local down                           remove everything`);
}

/** `ambit local …` */
export function localCommand(): Command {
  const local = new Command('local').description('run a whole mesh on this machine: nodes and pods as network namespaces');
  const common = (c: Command): Command =>
    c.addOption(new Option('--name <name>', 'name of the local mesh').default('ambit')).addOption(new Option('--state-dir <dir>', 'where local meshes keep their state').default(DEFAULT_STATE_ROOT));

  common(local.command('up'))
    .description('create nodes, pods and services from Kubernetes-style YAML and start the mesh in the background')
    .requiredOption('-f, --file <path>', 'YAML file or folder (Namespaces, Pods, Services)')
    .option('--nodes <n>', 'number of nodes', '2')
    .option('--replace', 'remove a mesh of the same name first')
    .option('--tour', 'afterwards, show traffic through the sample mesh')
    .option('--cert-ttl <seconds>', 'workload certificate lifetime', '86400')
    .action(async (o: { file: string; nodes: string; name: string; stateDir: string; replace?: boolean; tour?: boolean; certTtl: string }) => {
      const nodes = Number(o.nodes);
      if (!Number.isInteger(nodes)) throw new Error(`--nodes must be a whole number, got "${o.nodes}"`);
      await checkPrerequisites();
      // live status on a terminal, timestamped lines otherwise
      const progress = progressFor(process.stdout);
      let s: LocalState;
      try {
        if (o.replace) await down(o.stateDir, o.name, (l) => progress.say(l));
        s = await up({ file: o.file, nodes, name: o.name, stateRoot: o.stateDir, say: (l) => progress.say(l), progress: (p) => progress.update(p), certTtlSeconds: Number(o.certTtl) });
        progress.finish(true);
      } catch (err) {
        progress.finish(false);
        throw err;
      }
      console.log();
      await printStatus(s);
      if (o.tour) await tour(s);
    });

  common(local.command('apply'))
    .description('create or update objects in a running local mesh (new pods start; running pods may change labels only)')
    .requiredOption('-f, --file <path>', 'YAML file or folder')
    .action(async (o: { file: string; name: string; stateDir: string }) => {
      await apply({ stateRoot: o.stateDir, name: o.name, file: o.file, say: (l) => console.log(l) });
    });

  common(local.command('delete'))
    .description('delete the objects named in a YAML file from a running local mesh (pods are torn down through CNI DEL)')
    .requiredOption('-f, --file <path>', 'YAML file or folder')
    .action(async (o: { file: string; name: string; stateDir: string }) => {
      await deleteObjects({ stateRoot: o.stateDir, name: o.name, file: o.file, say: (l) => console.log(l) });
    });

  common(local.command('label'))
    .description('change labels of a namespace or pod, like kubectl label: `ambit local label ns shop istio.io/dataplane-mode=ambient`')
    .argument('<kind>', 'ns|namespace|pod')
    .argument('<name>', 'NAME for a namespace, NAMESPACE/NAME for a pod')
    .argument('<changes...>', 'key=value to set, key- to remove')
    .action(async (kind: string, name: string, changes: string[], o: { name: string; stateDir: string }) => {
      const k = kind === 'ns' || kind === 'namespace' || kind === 'namespaces' ? 'namespace' : kind === 'pod' || kind === 'pods' || kind === 'po' ? 'pod' : null;
      if (!k) throw new Error(`cannot label "${kind}": use ns or pod`);
      await label({ stateRoot: o.stateDir, name: o.name, kind: k, ref: name, changes, say: (l) => console.log(l) });
    });

  for (const verb of ['stop', 'start', 'restart'] as const) {
    common(local.command(verb))
      .description(`${verb} a daemon of the mesh: control, or a node's ztunnel or agent`)
      .argument('<component>', 'control|ztunnel|agent')
      .option('--node <node>', 'node of the ztunnel or agent', 'node-1')
      .action(async (component: string, o: { name: string; stateDir: string; node: string }) => {
        if (component !== 'control' && component !== 'ztunnel' && component !== 'agent') throw new Error(`unknown component "${component}": control, ztunnel or agent`);
        await checkPrerequisites();
        const args = { stateRoot: o.stateDir, name: o.name, role: component, node: o.node } as const;
        const before = component === 'ztunnel' && verb !== 'stop' ? (await readState(o.stateDir, o.name))?.processes.find((x) => x.role === 'ztunnel' && x.name === o.node) : undefined;
        const p = verb === 'stop' ? await stopDaemon(args) : await startDaemon(args);
        console.log(`${component}${component === 'control' ? '' : ` on ${o.node}`} ${verb === 'stop' ? 'stopped' : `running (pid ${p.pid})`}`);
        if (before && before.pid !== p.pid && alive(before.pid)) console.log(`the ztunnel it replaced (pid ${before.pid}) handed its pods over and lets its open connections finish before it exits (log: ${before.log})`);
      });
  }

  common(local.command('rotate-ca'))
    .description('replace the mesh root CA with a new one while traffic flows: add (both roots trusted), switch (the new root signs), drop (the old root is no longer trusted, once its leaves expired); without --phase, every remaining step with the waits between them')
    .addOption(new Option('--phase <phase>', 'run one step only').choices([...ROTATION_PHASES]))
    .option('--force', 'drop the old root before every leaf it signed has expired (workloads holding one are refused until they renew)')
    .action(async (o: { name: string; stateDir: string; phase?: RotationPhase; force?: boolean }) => {
      await checkPrerequisites();
      const s = await mustState(o.stateDir, o.name);
      const say = (l: string): void => console.log(l);
      if (o.phase) await rotateStep(s, o.phase, { say, ...(o.force ? { force: true } : {}) });
      else await rotateAll(s, { say });
    });

  common(local.command('down'))
    .description('remove every namespace, veth, rule and process of a local mesh')
    .action(async (o: { name: string; stateDir: string }) => {
      await checkPrerequisites();
      if (!(await down(o.stateDir, o.name, (l) => console.log(l)))) console.log(`no local mesh named "${o.name}"; nothing to remove`);
    });

  common(local.command('status'))
    .description('list nodes, pods and services of a local mesh')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(async (o: { name: string; stateDir: string; output: string }) => {
      const s = await mustState(o.stateDir, o.name);
      if (o.output === 'json') console.log(JSON.stringify(statusView(s, await redirections(s)), null, 2));
      else await printStatus(s);
    });

  common(local.command('exec'))
    .description('run a command inside a pod\'s network namespace, like kubectl exec')
    .argument('<pod>', 'NAMESPACE/POD')
    .argument('<command...>', 'command and arguments (after --)')
    .action(async (pod: string, argv: string[], o: { name: string; stateDir: string }) => {
      await checkPrerequisites();
      const s = await mustState(o.stateDir, o.name);
      const r = await execInPod(s, pod, argv);
      process.exitCode = r.code;
    });

  common(local.command('tour'))
    .description('show traffic through the sample mesh (examples/mesh) and where to look')
    .action(async (o: { name: string; stateDir: string }) => {
      await checkPrerequisites();
      await tour(await mustState(o.stateDir, o.name));
    });
  return local;
}

export { PrerequisiteError };
