import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { NodeAgentServer } from '../../../ztunnel/inpod.js';
import type { PodProxies } from '../../../ztunnel/pods.js';
import { AgentClient, type PodAdd } from '../../../shared/nodeagent/protocol.js';

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
