// Closed-loop HTTP/1.1 requests/s with h2load (nghttp2-client): --conns keep-alive connections,
// each sending its next request as soon as the previous response arrived (no pipelining). Each
// request is `POST --path` with a --size-byte body (Host: --host-header, else --host:--port).
// First a --warmup-second h2load run that is not counted; then it prints {"phase":"measuring"}
// (the runner reads the processes' CPU there) and runs h2load for --duration seconds.
// Prints one JSON line: requests/s, request counts and status classes of the measured run, h2load's
// mean time per request, and the CPU seconds the measured run's h2load used (measuredCpuSeconds).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { host: '', port: 8080, path: '/', hostHeader: '', conns: 8, duration: 5, warmup: 1, size: 1024, timeout: 60 });
  if (!o.host) throw new Error('--host is required');
  if (o.conns < 1 || o.duration <= 0 || o.warmup < 0) throw new Error('--conns and --duration must be positive, --warmup not negative');
} catch (e) {
  usage('h2load', e.message);
}

const dir = mkdtempSync(join(tmpdir(), 'ambit-h2load-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const bodyFile = join(dir, 'body');
writeFileSync(bodyFile, Buffer.alloc(o.size, 0x71));
const url = `http://${o.host}:${o.port}${o.path}`;

/** CPU seconds of this process's waited-for children (cutime + cstime; USER_HZ 100) */
function childCpu() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[13]) + Number(rest[14])) / 100;
}

/** Runs h2load for `seconds`; resolves with its exit and output. */
function h2load(seconds) {
  const args = ['--h1', '-t', '1', '-c', String(o.conns), '-m', '1', '-D', `${Math.round(seconds * 1000)}ms`, '-d', bodyFile, '-H', 'content-type: application/octet-stream'];
  if (o.hostHeader) args.push('-H', `host: ${o.hostHeader}`);
  args.push(url);
  return new Promise((resolve) => {
    let out = '';
    const child = spawn('h2load', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeout * 1000);
    child.on('error', (e) => fail('h2load', `cannot run h2load (apt-get install nghttp2-client): ${e.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

/** h2load's summary, or an error message. */
function summary({ code, signal, out }) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : null;
  };
  const rps = num(/finished in [\d.]+\w*, ([\d.]+) req\/s/);
  const r = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const st = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (signal || rps === null || !r || !st) return { error: `h2load ${signal ? `was killed (${signal}) after ${o.timeout} s` : `exited with ${code}`} without a summary: ${out.trim().split('\n').slice(-4).join(' | ')}` };
  // "time for request:  min  max  mean  sd  +/- sd", each with a unit
  const tr = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  const ms = (v, u) => Number(v) * (u === 'us' ? 1e-3 : u === 's' ? 1e3 : 1);
  const [total, , done, succeeded, failed, errored, timedOut] = r.slice(1).map(Number);
  const [s2, s3, s4, s5] = st.slice(1).map(Number);
  const ok = code === 0 && failed === 0 && errored === 0 && timedOut === 0 && s2 === done && done > 0;
  return {
    ok,
    ...(ok ? {} : { error: `h2load: ${done} done, ${failed} failed, ${errored} errored, ${timedOut} timed out; status codes ${s2} 2xx ${s3} 3xx ${s4} 4xx ${s5} 5xx${done === 0 ? ' (no request completed: is the path up?)' : ''}` }),
    rps,
    requests: { total, done, succeeded, failed, errored, timeout: timedOut },
    statuses: { '2xx': s2, '3xx': s3, '4xx': s4, '5xx': s5 },
    timeForRequestMs: tr ? { min: ms(tr[1], tr[2]), max: ms(tr[3], tr[4]), mean: ms(tr[5], tr[6]) } : null,
  };
}

const base = { url, conns: o.conns, size: o.size, warmupSeconds: o.warmup, durationSeconds: o.duration };
if (o.warmup > 0) {
  const w = summary(await h2load(o.warmup));
  if (!w.ok) fail('h2load', `warm-up: ${w.error}`);
}
process.stdout.write(JSON.stringify({ phase: 'measuring' }) + '\n');
const cpu0 = childCpu();
const m = summary(await h2load(o.duration));
if (m.error && m.ok === undefined) fail('h2load', m.error);
else finish({ ...m, ...base, measuredCpuSeconds: childCpu() - cpu0 }, m.ok ? 0 : 1);
