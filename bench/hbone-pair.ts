/**
 * HBONE data-path micro bench: the cost of shared/hbone alone, without a mesh.
 *
 *   bulk.mjs → [out: TCP listener → pool.open → bridge] → HBONE over TLS on loopback →
 *   [in: HboneServer → TCP to the sink → bridge] → sink
 *
 * Both proxies are separate processes run with ztunnel's V8 flags, so their CPU can be read
 * from /proc like the bench reads the ztunnels'. The figure to compare is CPU seconds per GiB
 * of each proxy (throughput is printed too, but on a shared machine it moves with the load).
 * With --rate, loadgen.mjs sends 1 KiB requests to a 1 KiB request/response server instead, at
 * that rate over 4 connections, and the figure is CPU seconds per 1000 requests (the bench's
 * "@ 1000 rps" rows). --mode tls and --mode tcp replace HBONE with one piped TLS 1.3 or plain
 * TCP connection per client connection: what a Node proxy costs with no HTTP/2, or no crypto.
 *
 *   node dist/bench/hbone-pair.js [--bytes N] [--repeat N] [--dist DIR[,DIR…]] [--prof DIR] [--streams N]
 *                                 [--mode hbone|tls|tcp] [--rate RPS [--seconds S]]
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
  /** the sink's port, or with --rate the request/response server's */
  sinkPort: number;
  inPort: number;
  /** 'tls': the same pair as a plain TLS pipe without HTTP/2, as a floor to compare with */
  mode: 'hbone' | 'tls' | 'tcp';
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

/** Runs one of bench/tools against 127.0.0.1:port; resolves with its last JSON line once it says ok. */
function runTool(name: string, port: number, args: string[]): Promise<Record<string, any>> {
  const tool = resolve(HERE, '..', '..', 'bench', 'tools', `${name}.mjs`);
  return new Promise((r, reject) => {
    const c = spawn(process.execPath, [tool, '--host', '127.0.0.1', '--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('exit', (code) => {
      try {
        const j = JSON.parse(out.trim().split('\n').pop()!);
        if (!j.ok) throw new Error(j.error);
        r(j);
      } catch (e) {
        reject(new Error(`${name} failed (${code}): ${(e as Error).message}`));
      }
    });
  });
}

async function runBulk(port: number, bytes: number): Promise<{ gbps: number; seconds: number }> {
  const j = await runTool('bulk', port, ['--bytes', String(bytes)]);
  return { gbps: j.gbps, seconds: j.seconds };
}

async function runLoad(port: number, rate: number, seconds: number): Promise<{ answered: number; p50: number; p99: number }> {
  const j = await runTool('loadgen', port, ['--rate', String(rate), '--conns', '4', '--duration', String(seconds), '--warmup', '1']);
  if (j.lost || j.errors) throw new Error(`loadgen: ${j.lost} lost, ${j.errors} errors`);
  return { answered: j.answered, p50: j.latencyMs.p50, p99: j.latencyMs.p99 };
}

async function parent(argv: string[]): Promise<void> {
  let bytes = 1024 ** 3;
  let repeat = 3;
  let dists = [resolve(HERE, '..')];
  let prof: string | null = null;
  let streams = 1;
  let mode: Config['mode'] = 'hbone';
  let nodeFlags: string[] = [];
  let rate = 0;
  let seconds = 10;
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
    else if (a === '--mode') {
      const m = v();
      if (m !== 'hbone' && m !== 'tls' && m !== 'tcp') throw new Error(`--mode takes hbone, tls or tcp, not ${m}`);
      mode = m;
    }
    else if (a === '--rate') rate = Number(v());
    else if (a === '--seconds') seconds = Number(v());
    else throw new Error(`unknown flag ${a}; known: --bytes --repeat --dist --prof --streams --mode hbone|tls|tcp --node-flags "FLAGS" --rate RPS --seconds S`);
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
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: 0, inPort: 0}));
        const sink = await startRole(dist, rate ? 'rr' : 'sink', cfgPath, null);
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: sink.port, inPort: 0}));
        const inn = await startRole(dist, 'in', cfgPath, prof, nodeFlags);
        writeFileSync(cfgPath, JSON.stringify({ ...base, sinkPort: sink.port, inPort: inn.port}));
        const out = await startRole(dist, 'out', cfgPath, prof, nodeFlags);
        try {
          if (rate) {
            // request/response: CPU per 1000 requests, the number the bench's 1000 rps rows give
            await runLoad(out.port, rate, 2);
            const c0 = [cpuOf(out.child.pid!), cpuOf(inn.child.pid!)];
            const l = await runLoad(out.port, rate, seconds);
            const c1 = [cpuOf(out.child.pid!), cpuOf(inn.child.pid!)];
            const k = l.answered / 1000;
            const r = (results[dist] ??= { out: [], in: [], gbps: [] });
            r.out.push((c1[0]! - c0[0]!) / k);
            r.in.push((c1[1]! - c0[1]!) / k);
            r.gbps.push(l.p50);
            say(`${dist}  rep ${rep + 1}: ${rate} rps p50 ${l.p50.toFixed(3)} ms p99 ${l.p99.toFixed(3)} ms  CPU-s/1000 req out ${r.out.at(-1)!.toFixed(3)}  in ${r.in.at(-1)!.toFixed(3)}  load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`);
            continue;
          }
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
    if (rate) {
      say(`median ${d}: p50 ${med(r.gbps).toFixed(3)} ms, CPU-s/1000 req out ${med(r.out).toFixed(3)} in ${med(r.in).toFixed(3)} (out ${r.out.map((x) => x.toFixed(3)).join(' ')}; in ${r.in.map((x) => x.toFixed(3)).join(' ')})`);
      continue;
    }
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
  if (name === 'rr') {
    // 1 KiB request → 1 KiB response, as bench/tools/server.mjs --rr-port
    const response = Buffer.alloc(1024, 0x72);
    const s = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
      let pending = 0;
      sock.on('data', (c) => {
        pending += c.length;
        let n = 0;
        for (; pending >= 1024; pending -= 1024) n++;
        if (n === 1) sock.write(response);
        else if (n > 1) sock.write(Buffer.concat(Array(n).fill(response)));
      });
      sock.on('end', () => sock.end());
      sock.on('error', () => sock.destroy());
    });
    s.listen(0, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
    return;
  }
  if (cfg.mode !== 'hbone') return pipeRole(name, cfg);
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

/**
 * The floors: the same two hops as one TLS 1.3 connection per client connection, piped
 * ('tls'), or as plain TCP without encryption ('tcp'), with TCP_NODELAY on every socket as
 * ztunnel sets it (without it, small answers wait for Nagle).
 */
async function pipeRole(name: string, cfg: Config): Promise<void> {
  if (cfg.mode === 'tcp') {
    const upstream = name === 'in' ? cfg.sinkPort : cfg.inPort;
    const s = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => {
      const u = net.connect({ port: upstream, host: '127.0.0.1', allowHalfOpen: true, noDelay: true }, () => {
        c.pipe(u);
        u.pipe(c);
      });
    });
    s.listen(name === 'in' ? cfg.inPort : 0, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
    return;
  }
  const tls = await import('node:tls');
  const opts = { minVersion: 'TLSv1.3' as const, maxVersion: 'TLSv1.3' as const, ca: cfg.server.rootsPem };
  if (name === 'in') {
    const s = tls.createServer({ ...opts, key: cfg.server.keyPem, cert: cfg.server.certChainPem, allowHalfOpen: true, noDelay: true }, (t) => {
      const app = net.connect({ port: cfg.sinkPort, host: '127.0.0.1', allowHalfOpen: true, noDelay: true }, () => {
        t.pipe(app);
        app.pipe(t);
      });
    });
    s.listen(cfg.inPort, '127.0.0.1', () => say(`port ${(s.address() as net.AddressInfo).port}`));
    return;
  }
  const s = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => {
    const t = tls.connect({ ...opts, port: cfg.inPort, host: '127.0.0.1', key: cfg.client.keyPem, cert: cfg.client.certChainPem, checkServerIdentity: () => undefined }, () => {
      t.setNoDelay(true);
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
