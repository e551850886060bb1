// Readiness probe for a bench path: retries until the request/response server answers one
// --size-byte request (or --timeout seconds pass), then opens and closes the sink once.
// Used before measuring, which also warms ztunnel's HBONE connection on the ambit path.
import net from 'node:net';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', rrPort: 9001, sinkPort: 9000, size: 1024, timeout: 20 });
  if (!o.host) throw new Error('--host is required');
} catch (e) {
  usage('probe', e.message);
}
const deadline = Date.now() + o.timeout * 1000;
setTimeout(() => fail('probe', `no answer from ${o.host}:${o.rrPort} within ${o.timeout} s (last error: ${last})`), o.timeout * 1000 + 2000).unref();
let last = 'none';

function once(fn) {
  return new Promise((resolve) => fn(resolve));
}

function rrOnce() {
  return once((resolve) => {
    const t = process.hrtime.bigint();
    const s = net.connect({ host: o.host, port: o.rrPort, noDelay: true });
    let got = 0;
    const timer = setTimeout(() => {
      last = 'timed out';
      s.destroy();
      resolve(null);
    }, 2000);
    s.on('connect', () => s.write(Buffer.alloc(o.size, 0x70)));
    s.on('data', (c) => {
      got += c.length;
      if (got >= o.size) {
        clearTimeout(timer);
        s.destroy();
        resolve(Number(process.hrtime.bigint() - t) / 1e6);
      }
    });
    s.on('error', (e) => {
      last = e.message;
      clearTimeout(timer);
      s.destroy();
      resolve(null);
    });
  });
}

function sinkOnce() {
  return once((resolve) => {
    const s = net.connect({ host: o.host, port: o.sinkPort, allowHalfOpen: true });
    let answer = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(`timed out`);
    }, 3000);
    s.on('connect', () => s.end('x'));
    s.on('data', (c) => (answer += c));
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(answer.includes('"bytes":1') ? null : `sink answered ${JSON.stringify(answer)}`);
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      resolve(e.message);
    });
  });
}

let tries = 0;
let firstMs = null;
while (Date.now() < deadline) {
  tries++;
  const ms = await rrOnce();
  if (ms !== null) {
    firstMs = ms;
    break;
  }
  await new Promise((r) => setTimeout(r, 200));
}
if (firstMs === null) fail('probe', `no answer from ${o.host}:${o.rrPort} within ${o.timeout} s (last error: ${last})`);
else {
  const sinkErr = await sinkOnce();
  if (sinkErr) fail('probe', `sink ${o.host}:${o.sinkPort}: ${sinkErr}`);
  else finish({ ok: true, tries, firstMs });
}
