// Samples a running Node process with the V8 CPU profiler through its inspector, without
// restarting it (used by `npm run bench:l7 -- --profile DIR` for the waypoint, whose command line
// the mesh owns). Run it in the target's network namespace (the inspector listens on
// 127.0.0.1:--port there) with `node --experimental-websocket` (Node 20's built-in WebSocket):
//   1. sends SIGUSR1 to --pid (node opens its inspector), waits for it;
//   2. starts the profiler (--interval microseconds) and prints {"phase":"profiling"};
//   3. on a line "stop" on stdin (or SIGTERM, or --max-seconds), stops it, writes --out
//      (.cpuprofile: Chrome DevTools, or bench/tools/cpuprofile-top.mjs), closes the
//      inspector again and prints one JSON result line.
import { writeFileSync } from 'node:fs';
import { parseArgs, finish, fail, usage } from './args.mjs';

let o;
try {
  o = parseArgs(process.argv.slice(2), { pid: 0, out: '', port: 9229, interval: 500, maxSeconds: 600 });
  if (!o.pid || !o.out) throw new Error('--pid and --out are required');
  if (typeof WebSocket !== 'function') throw new Error('no WebSocket: run with node --experimental-websocket (Node 20)');
} catch (e) {
  usage('inspector-profile', e.message);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
try {
  process.kill(o.pid, 'SIGUSR1');
} catch (e) {
  fail('inspector-profile', `cannot signal ${o.pid}: ${e.message}`);
}
let target = null;
for (let i = 0; i < 100 && !target; i++) {
  try {
    const list = await (await fetch(`http://127.0.0.1:${o.port}/json/list`)).json();
    target = list.find((t) => t.webSocketDebuggerUrl) ?? null;
  } catch {
    await sleep(100);
  }
}
if (!target) fail('inspector-profile', `process ${o.pid} opened no inspector on 127.0.0.1:${o.port} within 10 s`);

const ws = new WebSocket(target.webSocketDebuggerUrl);
let nextId = 1;
const waiting = new Map();
const call = (method, params = {}) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject, method });
    ws.send(JSON.stringify({ id, method, params }));
  });
ws.onmessage = (ev) => {
  const msg = JSON.parse(String(ev.data));
  const w = msg.id !== undefined ? waiting.get(msg.id) : undefined;
  if (!w) return;
  waiting.delete(msg.id);
  if (msg.error) w.reject(new Error(`${w.method}: ${msg.error.message}`));
  else w.resolve(msg.result);
};
await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = () => reject(new Error(`cannot connect to ${target.webSocketDebuggerUrl}`));
}).catch((e) => fail('inspector-profile', e.message));

await call('Profiler.enable');
await call('Profiler.setSamplingInterval', { interval: o.interval });
await call('Profiler.start');
const started = Date.now();
process.stdout.write(JSON.stringify({ phase: 'profiling', pid: o.pid }) + '\n');

let stopping = false;
async function stop(why) {
  if (stopping) return;
  stopping = true;
  try {
    const { profile } = await call('Profiler.stop');
    writeFileSync(o.out, JSON.stringify(profile));
    // close the inspector again (what inspector.close() does in the target)
    // (the answer may never come: the inspector closes under the call)
    await Promise.race([call('Runtime.evaluate', { expression: 'process._debugEnd && process._debugEnd()' }).catch(() => undefined), sleep(1000)]);
    ws.close();
    finish({ ok: true, out: o.out, seconds: (Date.now() - started) / 1000, samples: profile.samples?.length ?? 0, stoppedBy: why });
  } catch (e) {
    fail('inspector-profile', e.message);
  }
}
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (d.includes('stop')) void stop('stdin');
});
process.stdin.on('end', () => void stop('stdin closed'));
process.on('SIGTERM', () => void stop('SIGTERM'));
setTimeout(() => void stop('--max-seconds'), o.maxSeconds * 1000);
