// Open-loop request/response load generator.
// Requests of --size bytes are scheduled on a fixed timetable (--rate per second, spread round-robin
// over --conns persistent connections) whether or not earlier ones were answered; each latency is
// measured from the request's *scheduled* time to the arrival of the last byte of its --size-byte
// response, so a stall anywhere (including in this process) shows up instead of being hidden.
// Responses on a connection come back in order, so the k-th full response answers the k-th request.
// The first --warmup seconds are sent but not recorded. After the last request, it waits at most
// --drain seconds for answers; unanswered requests are counted as lost. Exits by itself.
// Prints one JSON line: percentiles in milliseconds.
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 9001, rate: 1000, conns: 4, duration: 20, warmup: 1, size: 1024, drain: 5, connectTimeout: 10 });
  if (!o.host) throw new Error('--host is required');
  if (o.rate <= 0 || o.conns < 1 || o.duration <= 0) throw new Error('--rate, --conns and --duration must be positive');
} catch (e) {
  usage('loadgen', e.message);
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const request = Buffer.alloc(o.size, 0x71);
const total = Math.round((o.warmup + o.duration) * o.rate);
const warmupCount = Math.round(o.warmup * o.rate);
const intervalMs = 1000 / o.rate;
const latencies = new Float64Array(total); // recorded requests only, in ms
const sendLag = new Float64Array(total); // how late this process sent (actual - scheduled), ms
let recorded = 0;
let lagCount = 0;
let answered = 0;
let errors = 0;
const errorMessages = new Set();
let sent = 0;
let t0 = 0;

const hardStop = setTimeout(() => report('hard time limit reached'), (o.connectTimeout + o.warmup + o.duration + o.drain + 10) * 1000);
hardStop.unref();

/** per connection: socket, FIFO of [scheduled time, index] still waiting, bytes of the current response */
const conns = [];

function connectOne() {
  return new Promise((resolve, reject) => {
    const c = { sock: null, queue: [], head: 0, pending: 0, dead: false };
    const sock = net.connect({ host: o.host, port: o.port, noDelay: true });
    c.sock = sock;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to ${o.host}:${o.port} timed out after ${o.connectTimeout} s`));
    }, o.connectTimeout * 1000);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(c);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      if (!c.dead) {
        errors++;
        errorMessages.add(e.message);
      }
      c.dead = true;
      reject(e);
    });
    sock.on('close', () => {
      if (!c.dead && !reported) {
        errors++;
        errorMessages.add(`connection closed by the peer with ${c.queue.length - c.head} request(s) unanswered`);
      }
      c.dead = true;
      // nothing left to send on: stop now rather than idle until the end of the timetable
      if (t0 !== 0 && conns.length === o.conns && conns.every((x) => x.dead)) report('every connection was closed');
    });
    sock.on('data', (chunk) => {
      const t = now();
      c.pending += chunk.length;
      while (c.pending >= o.size && c.head < c.queue.length) {
        c.pending -= o.size;
        const [scheduled, index] = c.queue[c.head];
        c.queue[c.head++] = undefined;
        answered++;
        if (index >= warmupCount) latencies[recorded++] = t - scheduled;
      }
      if (c.head > 4096 && c.head * 2 > c.queue.length) {
        c.queue = c.queue.slice(c.head);
        c.head = 0;
      }
      if (sent === total && answered === total) report();
    });
  });
}

function tick() {
  const t = now();
  while (sent < total) {
    const scheduled = t0 + sent * intervalMs;
    if (scheduled > t) break;
    const c = conns[sent % conns.length];
    if (!c.dead) {
      c.queue.push([scheduled, sent]);
      c.sock.write(request);
    }
    sendLag[lagCount++] = t - scheduled;
    sent++;
  }
  if (sent < total) {
    const wait = t0 + sent * intervalMs - now();
    setTimeout(tick, Math.max(0, wait));
  } else {
    // not unref'd: this timer is what ends the run when answers are missing
    setTimeout(() => report(`drain time (${o.drain} s) over`), o.drain * 1000);
  }
}

function pct(sorted, n, p) {
  if (n === 0) return null;
  return sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))];
}

function summary(arr, n) {
  const s = arr.slice(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i];
  return { count: n, mean: n ? sum / n : null, p50: pct(s, n, 50), p90: pct(s, n, 90), p99: pct(s, n, 99), p999: pct(s, n, 99.9), max: n ? s[n - 1] : null };
}

let reported = false;
function report(why) {
  if (reported) return;
  reported = true;
  const wall = (now() - t0) / 1000;
  for (const c of conns) c.sock.destroy();
  const lost = sent - answered;
  const result = {
    ok: lost === 0 && errors === 0 && sent === total,
    ...(why && (lost > 0 || sent < total) ? { stopped: why } : {}),
    rate: o.rate,
    conns: o.conns,
    size: o.size,
    warmupSeconds: o.warmup,
    durationSeconds: o.duration,
    wallSeconds: wall,
    scheduled: total,
    sent,
    answered,
    lost,
    errors,
    errorMessages: [...errorMessages].slice(0, 5),
    latencyMs: summary(latencies, recorded),
    sendLagMs: summary(sendLag, lagCount),
  };
  finish(result, result.ok ? 0 : 1);
}

try {
  for (let i = 0; i < o.conns; i++) conns.push(await connectOne());
} catch (e) {
  fail('loadgen', `${o.host}:${o.port}: ${e.message}`);
}
if (conns.length === o.conns) {
  t0 = now() + 5;
  setTimeout(tick, 5);
}
