import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Registry } from 'prom-client';
import { collectProcessMetrics } from '../../../shared/telemetry/process-metrics.js';

const MODULE = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared', 'telemetry', 'process-metrics.js')).href;

/** Times the main thread of `pid` went to sleep (each one a wake-up later). */
function sleeps(pid: number): number {
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'));
  assert.ok(m, 'voluntary_ctxt_switches in /proc');
  return Number(m[1]);
}

/** An idle process with the process metrics of `code`: how often its main thread woke in 2 s. */
async function idleWakeups(code: string): Promise<number> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`exited ${c} before it was ready`)));
    });
    const before = sleeps(child.pid!);
    await new Promise((r) => setTimeout(r, 2000));
    return sleeps(child.pid!) - before;
  } finally {
    child.kill();
  }
}

test('the process metrics are there: nodejs_eventloop_lag_* and process_cpu_*', async () => {
  const registry = new Registry();
  collectProcessMetrics(registry);
  const text = await registry.metrics();
  assert.match(text, /^nodejs_eventloop_lag_p99_seconds \d/m);
  assert.match(text, /^nodejs_eventloop_lag_seconds \d/m);
  assert.match(text, /^process_cpu_seconds_total \d/m);
});

test('an idle process with them does not wake 100 times a second (prom-client samples the event loop every 10 ms by default)', async () => {
  const idle = `import { Registry } from 'prom-client'; const m = await import(${JSON.stringify(MODULE)}); m.collectProcessMetrics(new Registry()); process.stdout.write('ready\\n'); setInterval(() => {}, 60_000);`;
  const ours = await idleWakeups(idle);
  assert.ok(ours < 20, `${ours} wake-ups in 2 s`);
  // the same with prom-client's default, so the count above is known to see the sampling timer
  const defaults = `import { Registry, collectDefaultMetrics } from 'prom-client'; collectDefaultMetrics({ register: new Registry() }); process.stdout.write('ready\\n'); setInterval(() => {}, 60_000);`;
  const theirs = await idleWakeups(defaults);
  assert.ok(theirs > 100, `${theirs} wake-ups in 2 s with a 10 ms sampling timer`);
});
