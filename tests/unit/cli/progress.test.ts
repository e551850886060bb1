import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PlainProgress, TtyProgress, clearLines, countsLines, emptyCounts, progressFor, type ProgressDisplay, type UpProgress } from '../../../cli/local/progress.js';
import { readiness, type LocalState } from '../../../cli/local/cluster.js';
import { planMesh } from '../../../cli/local/topology.js';
import type { KubeObject } from '../../../shared/config/objects.js';

/** Collects what a display writes. */
function sink(columns?: number): { write(s: string): void; columns?: number; text: string } {
  const o = { columns, text: '', write: (s: string) => void (o.text += s) };
  return o;
}

/** A fake clock, local time 2024-05-01 10:00:00 plus the steps taken. */
function clock(): { now: () => number; step(ms: number): void } {
  let t = new Date(2024, 4, 1, 10, 0, 0).getTime();
  return { now: () => t, step: (ms) => void (t += ms) };
}

/**
 * What a terminal shows after `text`: handles the escapes the display uses (cursor up n lines,
 * carriage return, clear to the end of the screen) and newlines.
 */
function screen(text: string): string[] {
  const lines: string[] = [''];
  let row = 0;
  const re = /\x1b\[(\d*)([A-Za-z])|\r|\n|[^\x1b\r\n]+/g;
  for (const m of text.matchAll(re)) {
    const t = m[0];
    if (t === '\n') {
      row++;
      if (row >= lines.length) lines.push('');
    } else if (t === '\r') {
      // column 0: the next text overwrites the line (the display clears before it writes)
    } else if (m[2] === 'A') {
      row = Math.max(0, row - Number(m[1] || 1));
    } else if (m[2] === 'J') {
      lines.length = row + 1;
      lines[row] = '';
    } else if (m[2]) {
      throw new Error(`unexpected escape ${JSON.stringify(t)}`);
    } else {
      lines[row] = (lines[row] ?? '') + t;
    }
  }
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

/** `local up` as the display sees it for a 2-node, 3-pod mesh (2 ambient pods, 2 identities). */
function run(d: ProgressDisplay, step: (ms: number) => void): void {
  const c = (done: number, total: number) => ({ done, total });
  const u = (p: UpProgress): void => d.update(p);
  u({ nodes: c(0, 2), ztunnels: c(0, 2), agents: c(0, 2), synced: c(0, 2), pods: c(0, 3), running: c(0, 3), captured: c(0, 2), certificates: c(0, 2), activity: 'creating 2 node(s)' });
  step(300);
  u({ nodes: c(1, 2) });
  u({ nodes: c(2, 2) });
  d.say('nodes: node-1 (10.244.255.2), node-2 (10.244.255.3)');
  u({ activity: 'starting the control plane' });
  u({ control: true });
  d.say('control plane: 10.244.255.1:15012 (pid 100)');
  u({ activity: 'waiting for ztunnel on node-1 to be ready' });
  step(700);
  u({ ztunnels: c(1, 2) });
  u({ ztunnels: c(2, 2) });
  d.say('ztunnels ready on 2 node(s)');
  u({ agents: c(2, 2) });
  d.say("node agents ready; ambit-cni chained into each node's CNI configuration");
  u({ pods: c(3, 3), captured: c(2, 2) });
  d.say('pods: 3 created through the CNI chain, 2 captured by ztunnel');
  step(1000);
  u({ certificates: c(2, 2), synced: c(1, 2), running: c(3, 3), activity: 'waiting for the ztunnels to receive the running pods (1/2 nodes)' });
  u({ synced: c(2, 2), activity: 'ztunnels have every pod' });
  d.say('mesh "demo" is up');
}

describe('local up progress: plain lines when not a terminal', () => {
  test('one timestamped line per step, the counts at the end, no escape codes', () => {
    const out = sink();
    const t = clock();
    const d = new PlainProgress(out, t.now);
    run(d, t.step);
    d.finish(true);
    assert.equal(
      out.text,
      [
        '10:00:00 nodes: node-1 (10.244.255.2), node-2 (10.244.255.3)',
        '10:00:00 control plane: 10.244.255.1:15012 (pid 100)',
        '10:00:01 ztunnels ready on 2 node(s)',
        "10:00:01 node agents ready; ambit-cni chained into each node's CNI configuration",
        '10:00:01 pods: 3 created through the CNI chain, 2 captured by ztunnel',
        '10:00:02 mesh "demo" is up',
        '10:00:02 done: nodes 2/2 · control up · ztunnels 2/2 ready · agents 2/2 · pods 3/3 created · 3/3 running · captured 2/2 · certificates 2/2 · synced 2/2',
        '',
      ].join('\n'),
    );
    assert.doesNotMatch(out.text, /\x1b/);
  });

  test('a multi-line message gets a time on each line; a failure before any count prints no summary', () => {
    const out = sink();
    const t = clock();
    const d = new PlainProgress(out, t.now);
    d.say('last lines of ztunnel node-1 log:\n  boom');
    d.finish(false);
    d.finish(false);
    assert.equal(out.text, '10:00:00 last lines of ztunnel node-1 log:\n10:00:00   boom\n');
  });

  test('a failure after some progress says where it stopped', () => {
    const out = sink();
    const d = new PlainProgress(out, clock().now);
    d.update({ nodes: { done: 1, total: 2 }, activity: 'creating 2 node(s)' });
    d.finish(false);
    assert.match(out.text, /^10:00:00 stopped: nodes 1\/2 · control starting · /);
  });
});

describe('local up progress: a live status on a terminal', () => {
  test('redrawn in place with cursor moves; step lines stay above; the final counts stay', () => {
    const out = sink(200);
    const t = clock();
    const d = new TtyProgress(out, t.now);
    run(d, t.step);
    d.tick();
    d.finish(true);
    // cursor up over the three-line block, back to column 1, clear to the end
    assert.ok(out.text.includes(`${clearLines(3)}`));
    assert.equal(clearLines(3), '\x1b[3A\r\x1b[J');
    assert.deepEqual(screen(out.text), [
      'nodes: node-1 (10.244.255.2), node-2 (10.244.255.3)',
      'control plane: 10.244.255.1:15012 (pid 100)',
      'ztunnels ready on 2 node(s)',
      "node agents ready; ambit-cni chained into each node's CNI configuration",
      'pods: 3 created through the CNI chain, 2 captured by ztunnel',
      'mesh "demo" is up',
      '✓ up in 2.0s',
      '  nodes 2/2 · control up · ztunnels 2/2 ready · agents 2/2',
      '  pods 3/3 created · 3/3 running · captured 2/2 · certificates 2/2 · synced 2/2',
    ]);
  });

  test('while running: spinner, activity and elapsed time over the counts so far', () => {
    const out = sink(200);
    const t = clock();
    const d = new TtyProgress(out, t.now);
    d.update({ nodes: { done: 2, total: 2 }, ztunnels: { done: 1, total: 2 }, activity: 'waiting for ztunnel on node-2 to be ready' });
    t.step(1500);
    d.tick();
    const s = screen(out.text);
    assert.equal(s.length, 3);
    assert.match(s[0]!, /^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] waiting for ztunnel on node-2 to be ready \(1\.5s\)$/);
    assert.equal(s[1], '  nodes 2/2 · control starting · ztunnels 1/2 ready · agents 0/0');
    d.finish(false);
    assert.deepEqual(screen(out.text).slice(0, 1), ['✗ stopped after 1.5s while waiting for ztunnel on node-2 to be ready']);
  });

  test('lines are cut to the terminal width, so the block stays three rows', () => {
    const out = sink(40);
    const d = new TtyProgress(out, clock().now);
    d.update({ activity: 'x'.repeat(100) });
    for (const line of screen(out.text)) assert.ok([...line].length <= 39, line);
  });

  test('nothing drawn before the first count (an early error leaves the screen clean)', () => {
    const out = sink(80);
    const d = new TtyProgress(out, clock().now).start(5);
    d.finish(false);
    assert.equal(out.text, '');
  });

  test('progressFor: live on a terminal, plain on a pipe or a dumb terminal', () => {
    const tty = progressFor({ isTTY: true, columns: 80, write: () => true }, {});
    assert.ok(tty instanceof TtyProgress);
    tty.finish(true);
    assert.ok(progressFor({ isTTY: false, write: () => true }, {}) instanceof PlainProgress);
    assert.ok(progressFor({ isTTY: true, write: () => true }, { TERM: 'dumb' }) instanceof PlainProgress);
  });

  test('countsLines of nothing yet', () => {
    assert.deepEqual(countsLines(emptyCounts()), ['nodes 0/0 · control starting · ztunnels 0/0 ready · agents 0/0', 'pods 0/0 created · 0/0 running · captured 0/0 · certificates 0/0 · synced 0/0']);
  });
});

describe('readiness counts from the ztunnels', () => {
  const objects: KubeObject[] = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
    ...['a', 'b', 'c'].map(
      (n, i): KubeObject => ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: n, namespace: 'shop' },
        spec: { nodeName: i === 2 ? 'node-2' : 'node-1', serviceAccountName: n === 'c' ? 'sa-c' : 'sa-ab', containers: [{ name: 'app', command: ['sleep', '1'] }] },
      }),
    ),
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', namespace: 'default' }, spec: { nodeName: 'node-2', containers: [{ name: 'app', command: ['sleep', '1'] }] } },
  ];
  const plan = planMesh('t', 2, objects, () => '/srv');
  const state = {
    processes: [
      { role: 'pod', name: 'shop/a/app', pid: process.pid, log: '' },
      { role: 'pod', name: 'shop/b/app', pid: process.pid, log: '' },
      { role: 'pod', name: 'shop/c/app', pid: 2 ** 22 + 12345, log: '' },
      { role: 'pod', name: 'default/plain/app', pid: process.pid, log: '' },
    ],
  } as unknown as LocalState;
  const ready = (n: number) => Array.from({ length: n }, () => ({ ready: true }));

  test('certificates per node and identity, nodes with every pod, pods whose processes run', () => {
    const dumps = new Map([
      ['node-1', { workloads: ready(4), certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/sa-ab', state: 'available' }] }],
      ['node-2', { workloads: ready(3), certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/sa-c', state: 'pending' }] }],
    ]);
    assert.deepEqual(readiness(state, plan, dumps), {
      certificates: { done: 1, total: 2 },
      synced: { done: 1, total: 2 },
      running: { done: 3, total: 4 },
      activity: 'waiting for the ztunnels to receive the running pods (1/2 nodes)',
    });
  });

  test('a certificate only counts on the node of the pod that needs it', () => {
    const dumps = new Map([
      ['node-1', { workloads: ready(4), certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/sa-c', state: 'available' }] }],
      ['node-2', { workloads: ready(4), certificates: [{ identity: 'spiffe://cluster.local/ns/shop/sa/sa-c', state: 'available' }] }],
    ]);
    const r = readiness(state, plan, dumps);
    assert.deepEqual(r.certificates, { done: 1, total: 2 });
    assert.deepEqual(r.synced, { done: 2, total: 2 });
    assert.equal(r.activity, 'ztunnels have every pod');
  });

  test('no answer from a node yet: nothing counted for it', () => {
    const r = readiness(state, plan, new Map());
    assert.deepEqual(r.certificates, { done: 0, total: 2 });
    assert.deepEqual(r.synced, { done: 0, total: 2 });
  });
});
