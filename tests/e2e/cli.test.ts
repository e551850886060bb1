// The CLI's answers to bad input and missing prerequisites: one clear sentence, nothing half-made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, FIXTURES, ambit, needsRoot, sh } from './harness.js';

const stateFlags = (name: string) => ['--name', name, '--state-dir', '/run/ambit-test'];

async function netnsWith(prefix: string): Promise<string[]> {
  return (await sh('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(prefix));
}

test('malformed YAML: the error names the file and the object, and nothing is created', { skip: needsRoot }, async () => {
  const r = await ambit(['local', 'up', '-f', join(FIXTURES, 'bad'), ...stateFlags('clibad')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /broken\.yaml/);
  assert.match(r.stderr, /Service "fine\/broken-svc"/);
  assert.match(r.stderr, /spec\.ports\[0\]\.port/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(await netnsWith('clibad-'), []);
});

test('invalid YAML syntax and unknown nodes are refused before anything is made', { skip: needsRoot }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-cli-'));
  try {
    await writeFile(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: x\n');
    let r = await ambit(['local', 'up', '-f', dir, ...stateFlags('clibad2')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /a\.yaml \(document 1\): invalid YAML/);
    await writeFile(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {nodeName: node-9, containers: [{name: c, command: [sleep, "1"]}]}\n');
    r = await ambit(['local', 'up', '-f', dir, ...stateFlags('clibad2')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /spec\.nodeName "node-9" is not one of node-1, node-2/);
    r = await ambit(['local', 'up', '-f', join(dir, 'missing.yaml'), ...stateFlags('clibad2')]);
    assert.match(r.stderr, /missing\.yaml: no such file or directory/);
    assert.deepEqual(await netnsWith('clibad2-'), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('status and exec without a mesh say how to start one', async () => {
  const r = await ambit(['local', 'status', ...stateFlags('nosuchmesh')]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), 'ambit: no local mesh named "nosuchmesh" is up; start one with `ambit local up -f DIR`');
});

test('dashboard without a mesh says how to start one, and how to reach a cluster\'s; bad flags are named', async () => {
  const r = await ambit(['dashboard', ...stateFlags('nosuchmesh')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^ambit: no local mesh named "nosuchmesh" is up; start one with `ambit local up -f DIR`\. In a cluster .*kubectl -n ambit-system port-forward deploy\/ambit-control 15014`\n$/);
  const port = await ambit(['dashboard', '--port', 'eighty', ...stateFlags('nosuchmesh')]);
  assert.equal(port.stderr, 'ambit: --port must be a port number, got "eighty"\n');
  const addr = await ambit(['dashboard', '--address', 'example.com', ...stateFlags('nosuchmesh')]);
  assert.equal(addr.stderr, 'ambit: --address must be an IP address, got "example.com"\n');
});

test('without root, local up says so in one sentence', { skip: needsRoot }, async () => {
  const r = await sh('runuser', ['-u', 'nobody', '--', process.execPath, CLI, 'local', 'up', '-f', join(FIXTURES, 'mesh'), '--state-dir', '/tmp/ambit-nobody']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), 'ambit: ambit local needs root to create network namespaces: run it as root (e.g. with sudo).');
});
