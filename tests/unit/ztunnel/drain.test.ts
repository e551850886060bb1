import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Drain, seconds, type DrainSteps } from '../../../ztunnel/drain.js';
import { NodeAgentServer } from '../../../ztunnel/inpod.js';
import type { PodProxies } from '../../../ztunnel/pods.js';
import { AgentClient, type PodAdd } from '../../../shared/nodeagent/protocol.js';

/** Steps that record what the drain did, with `open` connections that end when told. */
function fakeSteps(o: { pods: number; open: number }): DrainSteps & { calls: string[]; at: Record<string, number>; end(n: number): void } {
  let open = o.open;
  const t0 = Date.now();
  const calls: string[] = [];
  const at: Record<string, number> = {};
  const mark = (name: string): void => {
    calls.push(name);
    at[name] = Date.now() - t0;
  };
  return {
    calls,
    at,
    end: (n) => (open -= n),
    pods: () => o.pods,
    handOver: () => mark('handOver'),
    stopAccepting: async () => mark('stopAccepting'),
    open: () => open,
    cut: () => {
      mark(`cut ${open}`);
      open = 0;
    },
  };
}

describe('Drain', () => {
  test('hands over, keeps accepting for the hand-over time, then waits for open connections to finish', async () => {
    const s = fakeSteps({ pods: 2, open: 3 });
    const drain = new Drain(s, { handoverMs: 200, deadlineMs: 5000 });
    const done = drain.run();
    setTimeout(() => s.end(2), 300);
    setTimeout(() => s.end(1), 500);
    const r = await done;
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting'], 'nothing was cut');
    assert.ok(s.at.handOver! < 50, 'the agent is let go at once');
    assert.ok(s.at.stopAccepting! >= 190, `listeners stay through the hand-over (closed at ${s.at.stopAccepting} ms)`);
    assert.deepEqual([r.openAtStart, r.cut, r.interrupted], [3, 0, false]);
    assert.ok(r.ms >= 490 && r.ms < 1500, `ended when the last connection did (${r.ms} ms)`);
  });

  test('resets what is still open at the deadline', async () => {
    const s = fakeSteps({ pods: 1, open: 2 });
    const r = await new Drain(s, { handoverMs: 50, deadlineMs: 300 }).run();
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting', 'cut 2']);
    assert.ok(s.at['cut 2']! >= 290, `cut at the deadline (${s.at['cut 2']} ms)`);
    assert.deepEqual([r.cut, r.interrupted], [2, false]);
  });

  test('with no pods there is nothing to hand over: no wait; with no connections it ends at once', async () => {
    const s = fakeSteps({ pods: 0, open: 0 });
    const r = await new Drain(s, { handoverMs: 5000, deadlineMs: 25_000 }).run();
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting']);
    assert.ok(r.ms < 100, `${r.ms} ms`);
  });

  test('stopNow (a second signal) ends the hand-over and cuts what is open', async () => {
    const s = fakeSteps({ pods: 1, open: 4 });
    const drain = new Drain(s, { handoverMs: 5000, deadlineMs: 25_000 });
    const done = drain.run();
    setTimeout(() => drain.stopNow(), 100);
    const r = await done;
    assert.deepEqual(s.calls, ['handOver', 'stopAccepting', 'cut 4']);
    assert.ok(r.ms < 1000, `${r.ms} ms`);
    assert.deepEqual([r.cut, r.interrupted], [4, true]);
  });

  test('seconds: flag values are checked', () => {
    assert.equal(seconds('25', '--drain-seconds'), 25);
    assert.equal(seconds('0.5', '--drain-seconds'), 0.5);
    for (const bad of ['', ' ', 'soon', '-1', 'Infinity']) assert.throws(() => seconds(bad, '--drain-seconds'), /--drain-seconds must be a number of seconds/);
  });
});

describe('NodeAgentServer.drain', () => {
  const silent = pino({ level: 'silent' });
  const added: string[] = [];
  const pods = {
    add: async (m: PodAdd) => {
      added.push(m.uid);
    },
    remove: async () => true,
    retainOnly: async () => [],
  } as unknown as PodProxies;
  const add = (uid: string): PodAdd & { type: 'add' } => ({ type: 'add', uid, name: uid, namespace: 'ns', serviceAccount: 'sa', ip: '10.0.0.9', netns: '/run/netns/x' });

  test('drops the agent and takes no more pods; removes its socket file while the file is its own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-drain-'));
    const path = join(dir, 'ztunnel.sock');
    const server = new NodeAgentServer(path, pods, silent);
    await server.start();
    try {
      const client = await AgentClient.connect(path, 1000);
      await client.send(add('a'));
      const closed = new Promise<void>((resolve) => client.onClose(resolve));
      server.drain();
      await closed;
      await assert.rejects(client.send(add('b')), /closed/);
      assert.deepEqual(added, ['a']);
      assert.equal(existsSync(path), false, 'no successor: the agent finds no ztunnel rather than a draining one');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("leaves a successor's socket file alone, and refuses agents that still reach the old one", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-drain-'));
    const path = join(dir, 'ztunnel.sock');
    const old = new NodeAgentServer(path, pods, silent);
    await old.start();
    const next = new NodeAgentServer(path, pods, silent);
    await next.start(); // replaces the file, as a new ztunnel started beside the old one does
    try {
      const ino = statSync(path).ino;
      old.drain();
      assert.equal(existsSync(path), true, "the successor's socket file is still there");
      assert.equal(statSync(path).ino, ino);
      const client = await AgentClient.connect(path, 1000);
      added.length = 0;
      await client.send(add('c'));
      assert.deepEqual(added, ['c'], 'the agent reaches the successor');
      client.close();
    } finally {
      next.drain();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
