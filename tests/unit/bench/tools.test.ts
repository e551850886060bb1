// The small benches run and check their own work (no timing is asserted: the bench is not a test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST_BENCH = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench');

test('engine bench: every request through the waypoint engine reaches the backend, over pooled connections, one access-log line each', () => {
  const r = spawnSync(process.execPath, [join(DIST_BENCH, 'l7', 'engine.js'), '--child', '--requests', '300', '--warmup', '100', '--conns', '4'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { cpuUsPerRequest: number; requests: number; logLines: number; dials: number };
  assert.equal(out.requests, 300);
  assert.ok(out.cpuUsPerRequest > 0);
  assert.equal(out.logLines, 400, 'warm-up and measured requests, one line each');
  assert.ok(out.dials >= 1 && out.dials <= 4, `upstream connections are pooled (${out.dials} dialled for 4 client connections)`);
});

test('wakeup bench: both echo servers answer every message', () => {
  const r = spawnSync(process.execPath, [join(DIST_BENCH, 'wakeup.js'), '--rate', '200', '--seconds', '1', '--repeat', '1'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /C \(epoll\): [\d.]+ µs CPU per message .*, 200 messages/);
  assert.match(r.stdout, /Node \(net\): [\d.]+ µs CPU per message .*, 200 messages/);
  assert.match(r.stdout, /median C \(epoll\): [\d.]+ µs/);
  assert.match(r.stdout, /median Node \(net\): [\d.]+ µs/);
});
