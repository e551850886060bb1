/**
 * HBONE data-path micro bench: the cost of shared/hbone alone, without a mesh.
 *
 *   bulk.mjs → [out: TCP listener → pool.open → bridge] → HBONE over TLS on loopback →
 *   [in: HboneServer → TCP to the sink → bridge] → sink
 *
 * Both proxies are separate processes run with ztunnel's V8 flags, so their CPU can be read
 * from /proc like the bench reads the ztunnels'. The figure to compare is CPU seconds per GiB
 * of each proxy (throughput is printed too, but on a shared machine it moves with the load).
 *
 *   node dist/bench/hbone-pair.js [--bytes N] [--repeat N] [--dist DIR[,DIR…]] [--prof DIR] [--streams N]
 *
 * With several --dist folders (builds of different trees, e.g. a copy of dist/ from before a
 * change), the runs alternate between them, so an A/B sees the same machine load.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync, mkdirSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import net from 'node:net';

const HERE = dirname(fileURLToPath(import.meta.url));
/** ztunnel's V8 flags (from local mode), loaded by the parent only */
let ZTUNNEL_FLAGS: string[] = [];

interface Config {
  server: { keyPem: string; certChainPem: string; rootsPem: string[] };
  client: { keyPem: string; certChainPem: string; rootsPem: string[] };
  serverId: string;
  clientId: string;
  sinkPort: number;
  inPort: number;
  /** 'tls': the same pair as a plain TLS pipe without HTTP/2, as a floor to compare with */
  mode: 'hbone' | 'tls';
}

/** utime+stime of a process, in seconds. */
function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function say(msg: string): void {
  process.stdout.write(msg + '\n');
}

/** Starts a role of this file from one dist folder; resolves with the process once it printed its port. */
function startRole(dist: string, role: string, configPath: string, prof: string | null, extraFlags: string[] = []): Promise<{ child: ChildProcess; port: number }> {
  const script = join(dist, 'bench', 'hbone-pair.js');
  const flags = [...ZTUNNEL_FLAGS, ...extraFlags, ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`, `--cpu-prof-name=${role}-${Date.now()}.cpuprofile`] : [])];
  const child = spawn(process.execPath, [...flags, script, '--role', role, '--config', configPath], { stdio: ['ignore', 'pipe', process.env.HBONE_PAIR_LOG ? 'pipe' : 'inherit'] });
  // HBONE_PAIR_LOG=PREFIX: each role's output (e.g. --trace-gc) goes to PREFIX-ROLE.log
  const log = process.env.HBONE_PAIR_LOG ? createWriteStream(`${process.env.HBONE_PAIR_LOG}-${role}.log`, { flags: 'a' }) : null;
  if (log) child.stderr!.pipe(log);
  return new Promise((resolvePort, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      log?.write(c);
      out += c.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolvePort({ child, port: Number(m[1]) });
    });
    child.once('exit', (code) => reject(new Error(`${role} exited with ${code} before listening`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (child.exitCode !== null) return r();
    child.once('exit', () => r());
    child.kill('SIGTERM');
  });
}

function runBulk(port: number, bytes: number): Promise<{ gbps: number; seconds: number }> {
  const tool = resolve(HERE, '..', '..', 'bench', 'tools', 'bulk.mjs');
  return new Promise((r, reject) => {
    const c = spawn(process.execPath, [tool, '--host', '127.0.0.1', '--port', String(port), '--bytes', String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (code) => {
      try {
        const j = JSON.parse(out.trim().split('\n').pop()!);
        if (!j.ok) throw new Error(j.error);
        r(j);
      } catch (e) {
        reject(new Error(`bulk failed (${code}): ${(e as Error).message}`));
      }
    });
  });
}

async function parent(argv: string[]): Promise<void> {
  let bytes = 1024 ** 3;
  let repeat = 3;
  let dists = [resolve(HERE, '..')];
  let prof: string | null = null;
  let streams = 1;
  let mode: Config['mode'] = 'hbone';
  let nodeFlags: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--bytes') bytes = Number(v());
    else if (a === '--repeat') repeat = Number(v());
    else if (a === '--dist') dists = v().split(',').map((d) => resolve(d));
    else if (a === '--prof') prof = resolve(v());
    else if (a === '--streams') streams = Number(v());
    else if (a === '--node-flags') nodeFlags = v().split(' ').filter(Boolean);
    else if (a === '--mode') mode = v() === 'tls' ? 'tls' : 'hbone';
    else throw new Error(`unknown flag ${a}; known: --bytes --repeat --dist --prof --streams --mode hbone|tls --node-flags "FLAGS"`);
  }
  if (prof) mkdirSync(prof, { recursive: true });
  ZTUNNEL_FLAGS = [...(await import('../shared/node-flags.js')).ZTUNNEL_NODE_FLAGS];
  const { CertificateAuthority } = await import(pathToFileURL(join(dists[0]!, 'shared/identity/ca.js')).href);
  const { generateKeyAndCsr } = await import(pathToFileURL(join(dists[0]!, 'shared/identity/csr.js')).href);
  const { Identity } = await import(pathToFileURL(join(dists[0]!, 'shared/identity/spiffe.js')).href);
  const ca = await CertificateAuthority.generate();
  const issue = async (id: InstanceType<typeof Identity>) => {
    const { keyPem, csrPem } = await generateKeyAndCsr(id);
    const cert = await ca.signCsr(csrPem, id);
    return { keyPem, certChainPem: [cert.certPem, ...cert.chainPem].join('\n'), rootsPem: cert.rootsPem };
  };
  const serverId = new Identity('cluster.local', 'bench', 'server');
  const clientId = new Identity('cluster.local', 'bench', 'client');
  const dir = mkdtempSync(join(tmpdir(), 'hbone-pair-'));
  const results: Record<string, { out: number[]; in: number[]; gbps: number[] }> = {};
  try {
    const base: Omit<Config, 'sinkPort' | 'inPort'> = { mode, server: await issue(serverId), client: await issue(clientId), serverId: serverId.toString(), clientId: clientId.toString() };
    for (let rep = 0; rep < repeat; rep++) {
      for (const dist of rep % 2 ? [...dists].reverse() : dists) {
        const cfgPath = join(dir, 'config.json');
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: 0, inPort: 0 }));
        const sink = await startRole(dist, 'sink', cfgPath, null);
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: sink.port, inPort: 0 }));
        const inn = await startRole(dist, 'in', cfgPath, prof, nodeFlags);
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: sink.port, inPort: inn.port }));
        const out = await startRole(dist, 'out', cfgPath, prof, nodeFlags);
        try {
          // warm-up: opens the pooled connection and lets V8 compile the hot path
          await runBulk(out.port, 64 * 1024 * 1024);
          const c0 = [cpuOf(out.child.pid!), cpuOf(inn.child.pid!)];
          const per = Math.floor(bytes / streams);
          const rs = await Promise.all(Array.from({ length: streams }, () => runBulk(out.port, per)));
          const c1 = [cpuOf(out.child.pid!), cpuOf(inn.child.pid!)];
          const gib = (per * streams) / 1024 ** 3;
          const gbps = rs.reduce((s, x) => s + x.gbps, 0);
          const r = (results[dist] ??= { out: [], in: [], gbps: [] });
          r.out.push((c1[0]! - c0[0]!) / gib);
          r.in.push((c1[1]! - c0[1]!) / gib);
          r.gbps.push(gbps);
          say(`${dist}  rep ${rep + 1}: ${gbps.toFixed(2)} Gbit/s  CPU-s/GiB out ${r.out.at(-1)!.toFixed(2)}  in ${r.in.at(-1)!.toFixed(2)}  load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
        } finally {
          await Promise.all([stop(out.child), stop(inn.child), stop(sink.child)]);
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  for (const [d, r] of Object.entries(results)) {
    say(`median ${d}: ${med(r.gbps).toFixed(2)} Gbit/s, CPU-s/GiB out ${med(r.out).toFixed(2)} in ${med(r.in).toFixed(2)} (out ${r.out.map((x) => x.toFixed(2)).join(' ')}; in ${r.in.map((x) => x.toFixed(2)).join(' ')})`);
  }
}

async function role(name: string, cfg: Config): Promise<void> {
  process.on('SIGTERM', () => process.exit(0));
  if (name === 'sink') {
    const s = net.createServer({ allowHalfOpen: true }, (sock) => {
      let n = 0;
      sock.on('data', (c) => (n += c.length));
      sock.on('end', () => sock.end(JSON.stringify({ bytes: n }) + '\n'));
      sock.on('error', () => sock.destroy());
    });
    s.listen(cfg.sinkPort, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
    return;
  }
  if (cfg.mode === 'tls') return tlsRole(name, cfg);
  const { bridge } = await import('../shared/hbone/bridge.js');
  if (name === 'in') {
    const { HboneServer } = await import('../shared/hbone/server.js');
    const server = new HboneServer(cfg.server, 'cluster.local', {
      connect: (req) => {
        const app = net.connect({ port: cfg.sinkPort, host: '127.0.0.1', allowHalfOpen: true }, () => {
          req.stream.respond({ ':status': 200 }, { endStream: false });
          void bridge(app, req.stream);
        });
        app.on('error', () => req.stream.close());
      },
      rejected: (flag, reason) => process.stderr.write(`in: rejected ${flag} ${reason}\n`),
    });
    server.server.listen(cfg.inPort, '127.0.0.1', () => say(`port ${(server.server.address() as net.AddressInfo).port}`));
    return;
  }
  const { ConnectionPool } = await import('../shared/hbone/pool.js');
  const pool = new ConnectionPool();
  const s = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, async (client) => {
    client.on('error', () => undefined);
    try {
      const stream = await pool.open({
        source: cfg.clientId,
        expected: [cfg.serverId],
        target: { ip: '127.0.0.1', port: cfg.inPort },
        authority: `127.0.0.1:${cfg.sinkPort}`,
        headers: { forwarded: `for="127.0.0.1:${client.remotePort}"` },
        dial: (t) =>
          new Promise((res, rej) => {
            const sock = new net.Socket({ allowHalfOpen: true });
            sock.once('error', rej);
            sock.connect(t.port, t.ip, () => res(sock));
          }),
        material: async () => cfg.client,
      });
      await bridge(client, stream);
    } catch (err) {
      process.stderr.write(`out: ${(err as Error).message}\n`);
      client.destroy();
    }
  });
  s.listen(0, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
}

/** The floor: the same two hops as one TLS 1.3 connection per client connection, piped. */
async function tlsRole(name: string, cfg: Config): Promise<void> {
  const tls = await import('node:tls');
  const opts = { minVersion: 'TLSv1.3' as const, maxVersion: 'TLSv1.3' as const, ca: cfg.server.rootsPem };
  if (name === 'in') {
    const s = tls.createServer({ ...opts, key: cfg.server.keyPem, cert: cfg.server.certChainPem, allowHalfOpen: true }, (t) => {
      const app = net.connect({ port: cfg.sinkPort, host: '127.0.0.1', allowHalfOpen: true }, () => {
        t.pipe(app);
        app.pipe(t);
      });
    });
    s.listen(cfg.inPort, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
    return;
  }
  const s = net.createServer({ allowHalfOpen: true }, (c) => {
    const t = tls.connect({ ...opts, port: cfg.inPort, host: '127.0.0.1', key: cfg.client.keyPem, cert: cfg.client.certChainPem, checkServerIdentity: () => undefined }, () => {
      c.pipe(t);
      t.pipe(c);
    });
  });
  s.listen(0, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
}

const args = process.argv.slice(2);
if (args[0] === '--role') {
  await role(args[1]!, JSON.parse(readFileSync(args[3]!, 'utf8')) as Config);
} else {
  await parent(args).catch((err: Error) => {
    process.stderr.write(`hbone-pair: ${err.message}\n`);
    process.exit(1);
  });
}
