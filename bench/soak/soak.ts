#!/usr/bin/env node
/**
 * Soak test (not in CI; needs root): a local mesh under mixed traffic for --minutes, a
 * ztunnel restarted every --restart-every minutes (alternating nodes), a tcpdump on node-1's
 * eth0 that must never see the plaintext marker, and ztunnel RSS / fd counts every 10 s.
 *
 *   npm run build
 *   node dist/bench/soak/soak.js --minutes 30                    # the real soak
 *   node dist/bench/soak/soak.js --minutes 3 --restart-every 1   # a short run
 *
 * Writes bench/soak/results.json and prints a summary. The mesh (name hzsoak) is always
 * torn down, also on failure or Ctrl-C, unless --keep.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const LOAD = join(ROOT, 'dist', 'bench', 'soak', 'load.js');

const o = new Command()
  .name('soak')
  .option('--minutes <n>', 'how long the traffic runs', '30')
  .option('--restart-every <minutes>', 'restart a ztunnel this often (alternating nodes)', '5')
  .option('--name <name>', 'local mesh name', 'hzsoak')
  .option('-f, --file <path>', 'mesh YAML', join(ROOT, 'bench', 'soak', 'soak.yaml'))
  .option('--short-rate <n>', 'short connections per second', '50')
  .option('--bulk <n>', 'concurrent bulk transfer loops', '2')
  .option('--bulk-mib <n>', 'MiB per bulk transfer', '64')
  .option('--held <n>', 'held connections', '20')
  .option('--out <file>', 'results file', join(ROOT, 'bench', 'soak', 'results.json'))
  .option('--keep', 'leave the mesh up afterwards')
  .parse()
  .opts<{ minutes: string; restartEvery: string; name: string; file: string; shortRate: string; bulk: string; bulkMib: string; held: string; out: string; keep?: boolean }>();

const minutes = Number(o.minutes);
const restartEveryMs = Number(o.restartEvery) * 60_000;
const say = (l: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${l}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function run(file: string, args: string[], timeoutMs = 300_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const ambit = (args: string[], timeoutMs?: number) => run(process.execPath, [CLI, ...args, '--name', o.name], timeoutMs);

interface Status {
  nodes: { name: string; netns: string; ip: string }[];
  pods: { namespace: string; name: string; ip: string; netns: string; node: string; captured: boolean }[];
  services: { name: string; vip: string }[];
}

/** Counts a marker in a byte stream, across chunk boundaries. */
class MarkerScanner {
  hits = 0;
  private tail = Buffer.alloc(0);
  constructor(readonly marker: Buffer) {}
  push(chunk: Buffer): void {
    const b = Buffer.concat([this.tail, chunk]);
    for (let i = b.indexOf(this.marker); i >= 0; i = b.indexOf(this.marker, i + 1)) this.hits++;
    this.tail = b.subarray(Math.max(0, b.length - this.marker.length + 1));
  }
}

interface Sample {
  t: number;
  node: string;
  pid: number;
  rssMiB: number;
  fds: number;
}

async function ztunnelPids(): Promise<Record<string, number>> {
  const state = JSON.parse(await readFile(join('/run/ambit', o.name, 'state.json'), 'utf8')) as { processes: { role: string; name: string; pid: number }[] };
  return Object.fromEntries(state.processes.filter((p) => p.role === 'ztunnel').map((p) => [p.name, p.pid]));
}

async function sample(pids: Record<string, number>): Promise<Sample[]> {
  const out: Sample[] = [];
  for (const [node, pid] of Object.entries(pids)) {
    try {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
      const fds = (await readdir(`/proc/${pid}/fd`)).length;
      out.push({ t: Date.now(), node, pid, rssMiB: Number(rss.toFixed(1)), fds });
    } catch {
      /* restarting */
    }
  }
  return out;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the soak builds network namespaces: run it as root');
  const started = Date.now();
  const children: ChildProcess[] = [];
  let tornDown = false;
  const teardown = async (): Promise<void> => {
    if (tornDown) return;
    tornDown = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGINT');
    if (o.keep) return;
    say(`tearing down mesh ${o.name}`);
    const r = await ambit(['local', 'down']);
    if (r.code !== 0) console.error(r.stdout, r.stderr);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping`);
      void teardown().then(() => process.exit(130));
    });
  }
  try {
    say(`bringing up mesh ${o.name} from ${o.file}`);
    const up = await ambit(['local', 'up', '-f', o.file, '--replace']);
    if (up.code !== 0) throw new Error(`local up failed:\n${up.stdout}\n${up.stderr}`);
    const status = JSON.parse((await ambit(['local', 'status', '-o', 'json'])).stdout) as Status;
    const pod = (ns: string, name: string) => status.pods.find((p) => p.namespace === ns && p.name === name)!;
    const client = pod('soak', 'client');
    const plainClient = pod('soak-plain', 'client');
    const plainServer = pod('soak-plain', 'server');
    const vip = status.services.find((s) => s.name === 'soak/echo')!.vip;
    const node1 = status.nodes.find((n) => n.name === 'node-1')!;
    if (!client.captured) throw new Error('soak/client is not captured by ztunnel');

    // tcpdump on node-1's eth0, scanned as it streams: every mesh byte leaves node-1 there
    const marker = Buffer.from(`HZSOAK-PLAINTEXT-${randomBytes(8).toString('hex')}`);
    const control = Buffer.from(`HZSOAK-CONTROL-${randomBytes(8).toString('hex')}`);
    const meshScan = new MarkerScanner(marker);
    const controlScan = new MarkerScanner(control);
    let captured = 0;
    const dump = spawn('ip', ['netns', 'exec', node1.netns, 'tcpdump', '-i', 'eth0', '-U', '-s', '0', '-w', '-', 'tcp'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(dump);
    dump.stdout!.on('data', (c: Buffer) => {
      captured += c.length;
      meshScan.push(c);
      controlScan.push(c);
    });
    let dumpErr = '';
    dump.stderr!.on('data', (c: Buffer) => (dumpErr += c.toString()));
    await sleep(1500);
    if (dump.exitCode !== null) throw new Error(`tcpdump did not start: ${dumpErr}`);

    // positive control: plain text between pods outside the mesh is seen by this capture
    const probe = `const s=require('net').connect(9000,'${plainServer.ip}',()=>s.end('${control.toString()}'));s.on('data',()=>{});s.on('end',()=>process.exit(0));s.on('error',e=>{console.error(e.message);process.exit(1)})`;
    const pr = await run('ip', ['netns', 'exec', plainClient.netns, process.execPath, '-e', probe], 20_000);
    if (pr.code !== 0) throw new Error(`plain control connection failed: ${pr.stderr}`);
    for (let i = 0; i < 50 && controlScan.hits === 0; i++) await sleep(100);
    if (controlScan.hits === 0) throw new Error('the capture did not see the plaintext control marker: it would not see a leak either');
    say(`capture on ${node1.name} eth0 works: plaintext control marker seen ${controlScan.hits}×`);

    // the load, inside the client pod
    const seconds = Math.round(minutes * 60);
    const load = spawn('ip', ['netns', 'exec', client.netns, process.execPath, LOAD, '--target', `${vip}:80`, '--seconds', String(seconds), '--marker', marker.toString(), '--short-rate', o.shortRate, '--bulk', o.bulk, '--bulk-mib', o.bulkMib, '--held', o.held], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(load);
    const failures: { t: number; kind: string; error: string }[] = [];
    let last: Record<string, unknown> | null = null;
    let done: Record<string, unknown> | null = null;
    let buf = '';
    load.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        const e = JSON.parse(line) as Record<string, unknown> & { event: string; t: number; kind: string; error: string };
        if (e.event === 'fail') failures.push({ t: e.t, kind: e.kind, error: e.error });
        if (e.event === 'stats') {
          last = e;
          const s = e as unknown as { short: { ok: number; fail: number; p99ms: number }; bulk: { ok: number; fail: number; mismatch: number }; held: { open: number; breaks: number } };
          say(`short ${s.short.ok} ok / ${s.short.fail} failed (p99 ${s.short.p99ms} ms), bulk ${s.bulk.ok} ok / ${s.bulk.fail} failed / ${s.bulk.mismatch} SHA mismatches, held ${s.held.open} open / ${s.held.breaks} breaks; marker seen ${meshScan.hits}×; captured ${(captured / 1048576).toFixed(0)} MiB`);
        }
        if (e.event === 'done' || e.event === 'fatal') done = e;
      }
    });
    const loadExit = new Promise<number>((r) => load.once('exit', (code) => r(code ?? 1)));

    // restarts and samples
    const restarts: { node: string; start: number; end: number; ok: boolean; output: string }[] = [];
    const samples: Sample[] = [];
    let pids = await ztunnelPids();
    samples.push(...(await sample(pids)));
    const t0 = Date.now();
    let nextRestart = t0 + restartEveryMs;
    let nextSample = t0 + 10_000;
    let restartNode = 1;
    while (load.exitCode === null) {
      await Promise.race([sleep(500), loadExit]);
      const now = Date.now();
      if (now >= nextSample) {
        nextSample += 10_000;
        samples.push(...(await sample(pids)));
      }
      if (now >= nextRestart && now < t0 + seconds * 1000 - 20_000) {
        nextRestart += restartEveryMs;
        const node = `node-${restartNode}`;
        restartNode = restartNode === 1 ? 2 : 1;
        say(`restarting ztunnel on ${node}`);
        const start = Date.now();
        const r = await ambit(['local', 'restart', 'ztunnel', '--node', node]);
        restarts.push({ node, start, end: Date.now(), ok: r.code === 0, output: (r.stdout + r.stderr).trim() });
        say(`  ${r.code === 0 ? r.stdout.trim() : `FAILED: ${r.stderr.trim()}`} (${Date.now() - start} ms)`);
        pids = await ztunnelPids();
      }
    }
    const loadCode = await loadExit;
    await sleep(1000);
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
    samples.push(...(await sample(pids)));

    // failures inside a restart window (from the restart command to 15 s after it returned) are expected
    const GRACE = 15_000;
    const inWindow = (t: number): boolean => restarts.some((r) => t >= r.start - 1000 && t <= r.end + GRACE);
    const expected = failures.filter((f) => inWindow(f.t));
    const unexpected = failures.filter((f) => !inWindow(f.t));
    const byNode = (node: string) => samples.filter((s) => s.node === node);
    const memory = Object.fromEntries(
      Object.keys(pids).map((node) => {
        const ss = byNode(node);
        const lifetimes = [...new Set(ss.map((s) => s.pid))].map((pid) => {
          const l = ss.filter((s) => s.pid === pid);
          return { pid, samples: l.length, rssMiB: { first: l[0]!.rssMiB, max: Math.max(...l.map((x) => x.rssMiB)), last: l.at(-1)!.rssMiB }, fds: { first: l[0]!.fds, max: Math.max(...l.map((x) => x.fds)), last: l.at(-1)!.fds } };
        });
        return [node, lifetimes];
      }),
    );
    const final = (done ?? last ?? {}) as { short?: { ok: number; fail: number; mismatch: number }; bulk?: { ok: number; fail: number; mismatch: number; bytes: number }; held?: { pingsOk: number; pingsFail: number; breaks: number; reopened: number } };
    const result = {
      run: { minutes, restartEveryMinutes: Number(o.restartEvery), startedAt: new Date(started).toISOString(), finishedAt: new Date().toISOString(), node: process.version, loadExitCode: loadCode, options: { shortRate: Number(o.shortRate), bulk: Number(o.bulk), bulkMiB: Number(o.bulkMib), held: Number(o.held) } },
      traffic: final,
      failures: { total: failures.length, duringRestarts: expected.length, outsideRestarts: unexpected.length, byKind: countBy(failures.map((f) => f.kind)), unexpected: unexpected.slice(0, 50), examples: Object.values(groupBy(expected, (f) => f.kind)).flatMap((fs) => fs.slice(0, 5)) },
      restarts: restarts.map((r) => ({ node: r.node, at: new Date(r.start).toISOString(), ms: r.end - r.start, ok: r.ok })),
      plaintext: { marker: 'HZSOAK-PLAINTEXT-…', capturedMiB: Number((captured / 1048576).toFixed(1)), meshMarkerHits: meshScan.hits, controlMarkerHits: controlScan.hits, interface: `${node1.name} eth0` },
      ztunnelMemory: memory,
      samples,
    };
    await writeFile(o.out, `${JSON.stringify(result, null, 2)}\n`);

    const lines = [
      '',
      `soak: ${minutes} min, ${restarts.length} ztunnel restarts (${restarts.filter((r) => r.ok).length} ok)`,
      `  short connections: ${final.short?.ok ?? 0} ok, ${final.short?.fail ?? 0} failed, ${final.short?.mismatch ?? 0} wrong echoes`,
      `  bulk transfers:    ${final.bulk?.ok ?? 0} ok (${((final.bulk?.bytes ?? 0) / 1073741824).toFixed(2)} GiB each way), ${final.bulk?.fail ?? 0} failed, ${final.bulk?.mismatch ?? 0} SHA-256 mismatches`,
      `  held connections:  ${final.held?.pingsOk ?? 0} pings ok, ${final.held?.pingsFail ?? 0} failed, ${final.held?.breaks ?? 0} breaks, ${final.held?.reopened ?? 0} reopened`,
      `  failures: ${failures.length} total, ${expected.length} within restart windows, ${unexpected.length} outside`,
      `  plaintext marker on ${node1.name} eth0: ${meshScan.hits} hits in ${(captured / 1048576).toFixed(0)} MiB captured (control marker: ${controlScan.hits})`,
      ...Object.entries(memory).flatMap(([node, ls]) => ls.map((l) => `  ztunnel ${node} pid ${l.pid}: RSS ${l.rssMiB.first} → max ${l.rssMiB.max} → ${l.rssMiB.last} MiB, fds ${l.fds.first} → max ${l.fds.max} → ${l.fds.last} (${l.samples} samples)`)),
      `  results: ${o.out}`,
    ];
    console.log(lines.join('\n'));
    const ok = meshScan.hits === 0 && (final.bulk?.mismatch ?? 0) === 0 && (final.short?.mismatch ?? 0) === 0 && unexpected.length === 0 && loadCode === 0 && restarts.every((r) => r.ok);
    console.log(ok ? 'SOAK PASSED' : 'SOAK FAILED');
    if (!ok) process.exitCode = 1;
  } finally {
    await teardown();
  }
}

function groupBy<T>(xs: T[], key: (x: T) => string): Record<string, T[]> {
  const m: Record<string, T[]> = {};
  for (const x of xs) (m[key(x)] ??= []).push(x);
  return m;
}

function countBy(xs: string[]): Record<string, number> {
  const m: Record<string, number> = {};
  for (const x of xs) m[x] = (m[x] ?? 0) + 1;
  return m;
}

main().catch((err: Error) => {
  console.error(`soak: ${err.message}`);
  process.exit(1);
});
