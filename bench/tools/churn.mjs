// Connection churn generator (closed loop): --workers concurrent workers, each in a loop for
// --duration seconds: open a new TCP connection, send one --size-byte request, wait for the
// --size-byte response, half-close, wait for the peer to close, and start over. Counts completed
// connections per second and failures (connect errors, resets, short answers, and connections that
// take longer than --conn-timeout seconds). The first --warmup seconds are run but not counted.
// Prints one JSON line; exits by itself.
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 9001, workers: 8, duration: 8, warmup: 0.5, size: 1024, connTimeout: 5 });
  if (!o.host) throw new Error('--host is required');
  if (o.workers < 1 || o.duration <= 0) throw new Error('--workers and --duration must be positive');
} catch (e) {
  usage('churn', e.message);
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const request = Buffer.alloc(o.size, 0x63);
const t0 = now();
const tCount = t0 + o.warmup * 1000;
const tEnd = tCount + o.duration * 1000;
let completed = 0; // counted (after warm-up)
let completedAll = 0;
let failures = 0;
let failuresAll = 0;
const errorCounts = new Map();
const times = []; // ms per counted connection: connect → response complete → closed
let running = 0;

setTimeout(() => fail('churn', `hard time limit reached (${running} worker(s) still running)`), (o.warmup + o.duration + o.connTimeout + 10) * 1000).unref();

function failed(why, started) {
  failuresAll++;
  if (started >= tCount && started < tEnd) failures++;
  errorCounts.set(why, (errorCounts.get(why) ?? 0) + 1);
}

function once() {
  return new Promise((resolve) => {
    const started = now();
    let got = 0;
    let answered = false;
    let done = false;
    const sock = net.connect({ host: o.host, port: o.port, noDelay: true });
    const end = (why) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (why) {
        failed(why, started);
        sock.destroy();
      } else {
        completedAll++;
        if (started >= tCount && started < tEnd) {
          completed++;
          times.push(now() - started);
        }
      }
      resolve();
    };
    const timer = setTimeout(() => end(`no answer and close within ${o.connTimeout} s`), o.connTimeout * 1000);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (c) => {
      got += c.length;
      if (got >= o.size && !answered) {
        answered = true;
        sock.end();
      }
    });
    sock.on('error', (e) => end(e.code ?? e.message));
    sock.on('close', () => end(answered ? null : `closed after ${got} of ${o.size} response bytes`));
  });
}

async function worker() {
  running++;
  while (now() < tEnd) await once();
  running--;
}

function pct(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

await Promise.all(Array.from({ length: o.workers }, worker));
const wall = (now() - tCount) / 1000;
times.sort((a, b) => a - b);
finish({
  ok: failuresAll === 0 && completed > 0,
  ...(failuresAll > 0 ? { error: `${failuresAll} connection(s) failed: ${[...errorCounts].map(([k, v]) => `${k} ×${v}`).join(', ')}` } : {}),
  workers: o.workers,
  durationSeconds: o.duration,
  countedSeconds: wall,
  completed,
  completedAll,
  failures,
  failuresAll,
  errors: Object.fromEntries(errorCounts),
  connsPerSecond: completed / o.duration,
  connMs: { p50: pct(times, 50), p90: pct(times, 90), p99: pct(times, 99), max: times.length ? times[times.length - 1] : null },
});
