// End to end: `ambit check` on this machine (CI runs as root): it passes, and leaves no namespace behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { CLI, ambit, needsRoot, sh, type Result } from './harness.js';

async function netns(): Promise<string[]> {
  return (await sh('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** The name of the throwaway namespace the run reports, from its network-namespaces line. */
function tempNetns(out: string): string {
  const m = /probes ran in (ambit-check-[0-9a-f]+)/.exec(out);
  assert.ok(m, `no temporary namespace named in:\n${out}`);
  return m[1]!;
}

test('ambit check passes on this machine, one ✓ line per check, and removes its namespace', { skip: needsRoot }, async () => {
  const r = await ambit(['check']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.at(-1), 'ready: this machine can run `ambit local up`');
  const checks = lines.slice(0, -2);
  for (const l of checks) assert.match(l, /^✓ |^✗ nft \(optional\)/, l);
  for (const name of ['root', 'ip', 'iptables', 'iptables-restore', 'iptables-save', 'nsenter', 'CNI plugins', 'native addon', 'kernel: network namespaces', 'kernel: veth pairs', 'kernel: bridges', 'iptables: nat REDIRECT target', 'iptables: CONNMARK target', 'iptables: mark match', 'kernel: IP_TRANSPARENT sockets']) {
    assert.ok(checks.some((l) => l.startsWith(`✓ ${name}`)), `no passing "${name}" line in:\n${r.stdout}`);
  }
  assert.ok(!(await netns()).includes(tempNetns(r.stdout)));
});

test('ambit check -o json: ok and one entry per check', { skip: needsRoot }, async () => {
  const r = await ambit(['check', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { ok: boolean; checks: { name: string; status: string; required: boolean }[] };
  assert.equal(j.ok, true);
  assert.ok(j.checks.length >= 15);
  assert.ok(j.checks.every((c) => c.status === 'pass' || !c.required));
});

test('without the system tools on PATH: each names its package, exit 1, nothing created', { skip: needsRoot }, async () => {
  const before = await netns();
  const r = await new Promise<Result>((resolve) =>
    execFile(process.execPath, [CLI, 'check'], { env: { ...process.env, PATH: '/nonexistent' }, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0, stdout, stderr }),
    ),
  );
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const lines = r.stdout.split('\n');
  assert.ok(lines.includes('✗ ip — run `apt-get install -y iproute2`'), r.stdout);
  assert.ok(lines.includes('✗ iptables — run `apt-get install -y iptables`'), r.stdout);
  assert.ok(lines.includes('✗ nsenter — run `apt-get install -y util-linux`'), r.stdout);
  assert.ok(lines.includes('- kernel: network namespaces — not checked: needs ip'), r.stdout);
  assert.match(r.stdout, /not ready: \d+ required checks failed, \d+ could not run\n$/);
  assert.deepEqual((await netns()).filter((n) => n.startsWith('ambit-check-') && !before.includes(n)), []);
});
