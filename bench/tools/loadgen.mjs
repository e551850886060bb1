// Open-loop request/response load generator.
// Requests of --size bytes are scheduled on a fixed timetable (--rate per second, spread round-robin
// over --conns persistent connections) whether or not earlier ones were answered; each latency is
// measured from the request's *scheduled* time to the arrival of the last byte of its --size-byte
// response, so a stall anywhere (including in this process) shows up instead of being hidden.
// Responses on a connection come back in order, so the k-th full response answers the k-th request.
// The first --warmup seconds are sent but not recorded. After the last request, it waits at most
// --drain seconds for answers; unanswered requests are counted as lost. Exits by itself.
// Prints one JSON line: percentiles in milliseconds.
//
// With --http PATH (the L7 bench), each request is an HTTP/1.1 `POST PATH` with a --size-byte body
// (Host: --host-header, else --host) on keep-alive connections, and a response is complete at the
// last byte of its content-length body; responses other than 200 are counted by status and make
// the run fail. Requests due while earlier ones are unanswered are pipelined on their connection.
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 9001, rate: 1000, conns: 4, duration: 20, warmup: 1, size: 1024, drain: 5, connectTimeout: 10, http: '', hostHeader: '' });
  if (o.http && !o.http.startsWith('/')) throw new Error('--http takes a path starting with /');
  if (!o.host) throw new Error('--host is required');
  if (o.rate <= 0 || o.conns < 1 || o.duration <= 0) throw new Error('--rate, --conns and --duration must be positive');
} catch (e) {
  usage('loadgen', e.message);
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const body = Buffer.alloc(o.size, 0x71);
const request = o.http
  ? Buffer.concat([Buffer.from(`POST ${o.http} HTTP/1.1\r\nhost: ${o.hostHeader || `${o.host}:${o.port}`}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${o.size}\r\n\r\n`, 'latin1'), body])
  : body;
/** HTTP responses by status code (--http) */
const statuses = {};
let badStatus = 0;
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
    const c = { sock: null, queue: [], head: 0, pending: 0, dead: false, http: o.http ? newResponse() : null };
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
      const answer = () => {
        const [scheduled, index] = c.queue[c.head];
        c.queue[c.head++] = undefined;
        answered++;
        if (index >= warmupCount) latencies[recorded++] = t - scheduled;
      };
      if (c.http) {
        let at = 0;
        while (at < chunk.length) {
          const r = c.http;
          at = readResponse(r, chunk, at);
          if (r.error) {
            errors++;
            errorMessages.add(r.error);
            sock.destroy();
            return;
          }
          if (!r.done) break;
          if (c.head >= c.queue.length) {
            errors++;
            errorMessages.add('a response arrived for no request');
            sock.destroy();
            return;
          }
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
          if (r.status !== 200) badStatus++;
          c.http = newResponse();
          answer();
        }
      } else {
        c.pending += chunk.length;
        while (c.pending >= o.size && c.head < c.queue.length) {
          c.pending -= o.size;
          answer();
        }
      }
      if (c.head > 4096 && c.head * 2 > c.queue.length) {
        c.queue = c.queue.slice(c.head);
        c.head = 0;
      }
      if (sent === total && answered === total) report();
    });
  });
}

/** State of one HTTP/1.1 response being read: its head (until the blank line), then its content-length body. */
function newResponse() {
  return { head: '', status: 0, remaining: -1, done: false, error: null };
}

/** Reads what belongs to response `r` from chunk[at…]; returns where it stopped (the next response starts there once r.done). */
function readResponse(r, chunk, at) {
  if (r.remaining < 0) {
    // heads are small: collect them as text (latin1 keeps byte offsets)
    const before = r.head.length;
    r.head += chunk.toString('latin1', at, Math.min(chunk.length, at + 8192));
    const end = r.head.indexOf('\r\n\r\n');
    if (end < 0) {
      if (r.head.length > 16384) r.error = 'response head longer than 16 KiB';
      return chunk.length;
    }
    const used = end + 4 - before;
    const head = r.head.slice(0, end);
    r.head = '';
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!m) {
      r.error = `not an HTTP/1.1 response: ${JSON.stringify(head.slice(0, 40))}`;
      return chunk.length;
    }
    r.status = Number(m[1]);
    const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (!cl) {
      r.error = /\r\ntransfer-encoding:[^\r]*chunked/i.test(head) ? 'chunked response (this generator reads content-length bodies only)' : 'response without content-length';
      return chunk.length;
    }
    r.remaining = Number(cl[1]);
    at += used;
  }
  const take = Math.min(r.remaining, chunk.length - at);
  r.remaining -= take;
  at += take;
  if (r.remaining === 0) r.done = true;
  return at;
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
  if (badStatus > 0) errorMessages.add(`${badStatus} response(s) other than 200: ${JSON.stringify(statuses)}`);
  const result = {
    ok: lost === 0 && errors === 0 && badStatus === 0 && sent === total,
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
    ...(o.http ? { http: o.http, statuses, badStatus } : {}),
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
