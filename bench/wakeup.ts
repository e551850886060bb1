/**
 * What it costs a process on this machine to be woken by traffic and answer it, doing next to
 * nothing else: the floor under every proxy's CPU per request at a fixed, low rate.
 *
 * At 1000 requests/s over a few connections, each request wakes a proxy at least twice (the
 * request, then the answer), and in between the process sleeps in epoll_wait. On a virtual
 * machine a wake-up from that sleep is expensive in itself. This bench measures it with two echo
 * servers on loopback, one in C (tools/wakeup-echo.c, compiled here with `cc`) and one in Node
 * (tools/wakeup-echo.mjs), each answering a 64-byte message sent at --rate messages/s (one at a
 * time, open loop: the next is sent when it is due and the last was answered). The figure is each
 * server's CPU (user + system, from /proc) per message: one wake-up, one read, one write.
 *
 *   node dist/bench/wakeup.js [--rate N] [--seconds S] [--repeat N]
 *
 * The servers take turns, --repeat times; the medians are printed. Loopback, not the bench's netns
 * path: what is measured is the process's side of a wake-up, which the path does not change.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clock, cpuSplit } from './lib/proc.js';
import { ROOT } from './lib/runner.js';
import { median } from './lib/report.js';

interface Options {
  rate: number;
  seconds: number;
  repeat: number;
}

function parse(argv: string[]): Options {
  const o: Options = { rate: 1000, seconds: 10, repeat: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const n = Number(argv[++i]);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a whole number ≥ 1`);
    if (a === '--rate') o.rate = n;
    else if (a === '--seconds') o.seconds = n;
    else if (a === '--repeat') o.repeat = n;
    else throw new Error(`unknown flag ${a}`);
  }
  return o;
}

/** Starts a server that prints its port on its first line. */
function start(cmd: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${cmd} exited (${code}) before printing its port`)));
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n')[0]!;
      if (out.includes('\n')) resolve({ child, port: Number(line) });
    });
  });
}

const MESSAGE = Buffer.alloc(64, 0x61);

/** Sends MESSAGE at `rate`/s for `seconds` and waits for each echo; the server's CPU per message. */
async function drive(pid: number, port: number, o: Options): Promise<{ messages: number; userUs: number; sysUs: number }> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // a short warm-up, so the first messages' JIT and page faults are not counted
  const send = async (count: number, rate: number): Promise<number> => {
    let sent = 0;
    let received = 0;
    let waiting = false;
    const t0 = performance.now();
    return new Promise((resolve) => {
      const onData = (c: Buffer): void => {
        received += c.length;
        waiting = received < sent * MESSAGE.length;
        if (sent === count && !waiting) {
          clearInterval(timer);
          socket.off('data', onData);
          resolve(sent);
        }
      };
      socket.on('data', onData);
      const timer = setInterval(() => {
        const due = Math.min(count, Math.floor(((performance.now() - t0) * rate) / 1000));
        if (!waiting && sent < due) {
          sent++;
          waiting = true;
          socket.write(MESSAGE);
        }
      }, 1);
    });
  };
  await send(Math.max(100, o.rate), o.rate);
  const before = cpuSplit(pid);
  const messages = await send(o.rate * o.seconds, o.rate);
  const after = cpuSplit(pid);
  socket.end();
  return { messages, userUs: ((after.user - before.user) * 1e6) / messages, sysUs: ((after.sys - before.sys) * 1e6) / messages };
}


async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const tck = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  if (tck.status === 0 && Number(tck.stdout.trim()) > 0) clock.ticks = Number(tck.stdout.trim());
  const dir = mkdtempSync(join(tmpdir(), 'ambit-wakeup-'));
  try {
    const binary = join(dir, 'wakeup-echo');
    const cc = spawnSync('cc', ['-O2', '-o', binary, join(ROOT, 'bench', 'tools', 'wakeup-echo.c')], { encoding: 'utf8' });
    if (cc.error || cc.status !== 0) throw new Error(`cc could not build tools/wakeup-echo.c (apt-get install -y gcc): ${cc.error?.message ?? cc.stderr}`);
    const servers: { name: string; cmd: string; args: string[] }[] = [
      { name: 'C (epoll)', cmd: binary, args: [] },
      { name: 'Node (net)', cmd: process.execPath, args: [join(ROOT, 'bench', 'tools', 'wakeup-echo.mjs')] },
    ];
    const results = new Map<string, { user: number[]; sys: number[] }>(servers.map((s) => [s.name, { user: [], sys: [] }]));
    process.stdout.write(`wake-up cost: ${o.rate} messages/s for ${o.seconds} s, ${o.repeat} repetition(s)\n`);
    for (let rep = 0; rep < o.repeat; rep++) {
      for (const s of rep % 2 ? [...servers].reverse() : servers) {
        const { child, port } = await start(s.cmd, s.args);
        try {
          const r = await drive(child.pid!, port, o);
          results.get(s.name)!.user.push(r.userUs);
          results.get(s.name)!.sys.push(r.sysUs);
          process.stdout.write(`  ${s.name}: ${(r.userUs + r.sysUs).toFixed(1)} µs CPU per message (user ${r.userUs.toFixed(1)}, system ${r.sysUs.toFixed(1)}), ${r.messages} messages\n`);
        } finally {
          child.kill();
        }
      }
    }
    for (const [name, r] of results) {
      const total = r.user.map((u, i) => u + r.sys[i]!);
      process.stdout.write(`median ${name}: ${(median(total) ?? NaN).toFixed(1)} µs CPU per message (user ${(median(r.user) ?? NaN).toFixed(1)}, system ${(median(r.sys) ?? NaN).toFixed(1)}) = ${((median(total) ?? NaN) / 1000).toFixed(3)} CPU s per 1000\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`wakeup bench: ${(err as Error).message}\n`);
  process.exit(1);
});
