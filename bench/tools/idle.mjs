// Idle connections: opens --count TCP connections to the request/response server (at most
// --parallel connects in flight), sends one --size-byte request on each and waits for its answer
// (so every connection is proven to reach the server through the whole path), then holds them all
// open and idle. When all are established it prints a progress line
//   {"phase":"holding","held":N,...}
// and keeps them open until a line arrives on stdin (the runner reads the proxies' memory in
// between) or --hold seconds pass; then it closes them and prints its result line.
// Needs --count file descriptors: start it with a raised `ulimit -n` (the runner uses prlimit).
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 9001, count: 10000, parallel: 64, size: 1024, hold: 60, connTimeout: 10, openTimeout: 120 });
  if (!o.host) throw new Error('--host is required');
  if (o.count < 1 || o.parallel < 1) throw new Error('--count and --parallel must be positive');
} catch (e) {
  usage('idle', e.message);
}

const now = () => Number(process.hrtime.bigint()) / 1e6;
const request = Buffer.alloc(o.size, 0x69);
const socks = [];
let failures = 0;
const errorCounts = new Map();
let closedWhileHeld = 0;
let holding = false;
let started = 0;

const t0 = now();
const openTimer = setTimeout(() => {
  fail('idle', `could not open ${o.count} connections within ${o.openTimeout} s (${socks.length} open, ${failures} failed: ${[...errorCounts].map(([k, v]) => `${k} ×${v}`).join(', ')})`);
}, o.openTimeout * 1000);

function openOne() {
  return new Promise((resolve) => {
    let got = 0;
    let done = false;
    const sock = net.connect({ host: o.host, port: o.port, noDelay: true });
    const end = (why) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (why) {
        failures++;
        errorCounts.set(why, (errorCounts.get(why) ?? 0) + 1);
        sock.destroy();
      } else socks.push(sock);
      resolve();
    };
    const timer = setTimeout(() => end(`no answer within ${o.connTimeout} s`), o.connTimeout * 1000);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (c) => {
      got += c.length;
      if (got >= o.size) end(null);
    });
    sock.on('error', (e) => {
      if (!done) end(e.code ?? e.message);
    });
    sock.on('close', () => {
      if (!done) end(`closed after ${got} of ${o.size} bytes`);
      else if (holding) closedWhileHeld++;
    });
  });
}

async function opener() {
  while (started < o.count && failures === 0) {
    started++;
    await openOne();
  }
}

await Promise.all(Array.from({ length: Math.min(o.parallel, o.count) }, opener));
clearTimeout(openTimer);
const openSeconds = (now() - t0) / 1000;
if (failures > 0) {
  for (const s of socks) s.destroy();
  fail('idle', `${failures} connection(s) failed while opening (${socks.length} open): ${[...errorCounts].map(([k, v]) => `${k} ×${v}`).join(', ')}`);
} else {
  holding = true;
  const tHold = now();
  process.stdout.write(JSON.stringify({ phase: 'holding', held: socks.length, openSeconds, connsPerSecond: socks.length / openSeconds }) + '\n');
  const release = (why) => {
    const heldSeconds = (now() - tHold) / 1000;
    const stillOpen = socks.filter((s) => !s.destroyed && s.readyState === 'open').length;
    for (const s of socks) s.destroy();
    finish(
      {
        ok: closedWhileHeld === 0,
        ...(closedWhileHeld > 0 ? { error: `${closedWhileHeld} of ${socks.length} connection(s) were closed by the path while held idle` } : {}),
        count: o.count,
        held: socks.length,
        stillOpen,
        closedWhileHeld,
        openSeconds,
        connsPerSecond: socks.length / openSeconds,
        heldSeconds,
        released: why,
      },
      closedWhileHeld === 0 ? 0 : 1,
    );
  };
  const timer = setTimeout(() => release(`--hold ${o.hold} s over`), o.hold * 1000);
  process.stdin.on('data', () => {
    clearTimeout(timer);
    release('released by the runner');
  });
  process.stdin.on('end', () => {
    clearTimeout(timer);
    release('stdin closed');
  });
}
