// One-stream bulk sender: connects to the sink (server.mjs --sink-port), writes --bytes over one
// TCP connection in --chunk writes (respecting backpressure), half-closes, and waits for the sink's
// {"bytes": N} answer. Throughput = bytes * 8 / (answer time - connect time).
// Prints one JSON line; exits by itself after --timeout seconds at most.
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 9000, bytes: 1024 ** 3, chunk: 1024 * 1024, timeout: 120 });
  if (!o.host) throw new Error('--host is required');
} catch (e) {
  usage('bulk', e.message);
}

const timer = setTimeout(() => fail('bulk', `timed out after ${o.timeout} s (sent ${sent} of ${o.bytes} bytes)`, 3), o.timeout * 1000);
timer.unref();
const buf = Buffer.alloc(o.chunk, 0x61);
let sent = 0;
let t0 = 0n;
let tEnd = 0n;
const sock = net.connect({ host: o.host, port: o.port, allowHalfOpen: true });
sock.setNoDelay(true);
sock.on('error', (e) => fail('bulk', `${o.host}:${o.port}: ${e.message} (sent ${sent} bytes)`));

function pump() {
  while (sent < o.bytes) {
    const n = Math.min(o.chunk, o.bytes - sent);
    sent += n;
    const more = sock.write(n === o.chunk ? buf : buf.subarray(0, n));
    if (!more) {
      sock.once('drain', pump);
      return;
    }
  }
  tEnd = process.hrtime.bigint();
  sock.end();
}

sock.on('connect', () => {
  t0 = process.hrtime.bigint();
  pump();
});
let answer = '';
sock.on('data', (c) => {
  answer += c.toString();
});
sock.on('end', () => {
  const t1 = process.hrtime.bigint();
  clearTimeout(timer);
  let got;
  try {
    got = JSON.parse(answer).bytes;
  } catch {
    fail('bulk', `sink answered ${JSON.stringify(answer.slice(0, 200))} instead of {"bytes": N}`);
    return;
  }
  if (got !== o.bytes) {
    fail('bulk', `sink received ${got} bytes, ${o.bytes} were sent`);
    return;
  }
  const seconds = Number(t1 - t0) / 1e9;
  sock.destroy();
  finish({ ok: true, bytes: o.bytes, seconds, gbps: (o.bytes * 8) / seconds / 1e9, writeSeconds: Number(tEnd - t0) / 1e9 });
});
