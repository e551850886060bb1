/**
 * ztunnel's node-agent socket (ztunnel/inpod.ts NodeAgentServer, shared/nodeagent/protocol.ts
 * framing) against broken and hostile clients: undecodable, truncated, huge and ill-typed
 * frames and floods. Each is refused with a warn line and counted in
 * ambit_ztunnel_rejected_total{listener="nodeagent"}; the server stays up and a good agent on
 * another connection is served meanwhile. PodProxies is a stub that records calls.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { NodeAgentServer } from '../../ztunnel/inpod.js';
import { ZtunnelMetrics } from '../../ztunnel/metrics.js';
import type { PodProxies } from '../../ztunnel/pods.js';
import { AgentClient, encodeFrame, FrameDecoder, MAX_FRAME, type AgentAck, type PodAdd } from '../../shared/nodeagent/protocol.js';

const ADD: PodAdd & { type: 'add' } = { type: 'add', uid: 'shop/web', name: 'web', namespace: 'shop', serviceAccount: 'web', ip: '10.249.1.11', netns: '/run/netns/hz-pod-1' };
const packr = new Packr({ useRecords: false, moreTypes: false });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let dir: string;
let path: string;
let server: NodeAgentServer;
let metrics: ZtunnelMetrics;
const calls: string[] = [];
const logs: Record<string, unknown>[] = [];

/** What PodProxies does, minus the netns: record and succeed. */
const pods = {
  add: async (m: PodAdd) => {
    calls.push(`add ${m.uid}`);
  },
  remove: async (uid: string) => {
    calls.push(`del ${uid}`);
    return true;
  },
  retainOnly: async () => {
    calls.push('snapshot');
    return [];
  },
} as unknown as PodProxies;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hz-agent-'));
  path = join(dir, 'ztunnel.sock');
  metrics = new ZtunnelMetrics();
  const log = pino({ level: 'info', base: {} }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  server = new NodeAgentServer(path, pods, log, metrics);
  await server.start();
});

after(async () => {
  server.drain();
  await rm(dir, { recursive: true, force: true });
});

async function refusals(): Promise<number> {
  const m = await metrics.rejected.get();
  return m.values.filter((v) => v.labels.listener === 'nodeagent').reduce((n, v) => n + v.value, 0);
}

/** A raw connection: bytes out, acks in, and whether the server closed it. */
async function raw(): Promise<{ sock: net.Socket; acks: AgentAck[]; closed: Promise<void> }> {
  const sock = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  sock.on('error', () => undefined);
  const acks: AgentAck[] = [];
  const d = new FrameDecoder();
  sock.on('data', (c: Buffer) => acks.push(...(d.push(c) as AgentAck[])));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  return { sock, acks, closed };
}

/** A good node agent on its own connection: add and del are acknowledged. */
async function goodAgent(tag: string): Promise<void> {
  const c = await AgentClient.connect(path);
  try {
    await c.send({ ...ADD, uid: `good/${tag}` }, 3000);
    await c.send({ type: 'del', uid: `good/${tag}` }, 3000);
  } finally {
    c.close();
  }
  assert.ok(calls.includes(`add good/${tag}`) && calls.includes(`del good/${tag}`));
}

function frameOf(body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function logged(from: number, msg: RegExp): Record<string, unknown>[] {
  return logs.slice(from).filter((l) => msg.test(String(l.msg)));
}

describe('node-agent socket under hostile input', () => {
  test('a good agent is served (baseline)', async () => {
    await goodAgent('baseline');
  });

  const closing: [string, () => Buffer, RegExp][] = [
    ['text that is not a frame', () => Buffer.from('hello ztunnel, please capture everything\n'), /exceeds/],
    ['a frame whose body is not MessagePack', () => frameOf(Buffer.from([0xc1, 0xc1, 0xc1, 0xc1])), /malformed node-agent frame/],
    ['a frame whose MessagePack is cut short', () => frameOf(Buffer.from([0xde, 0x00, 0x05, 0xa4])), /malformed node-agent frame/],
    ['a length of 4 GiB (refused from the header alone)', () => Buffer.from([0xff, 0xff, 0xff, 0xff]), /exceeds/],
    ['a frame one byte over the limit', () => Buffer.concat([frameOf(Buffer.alloc(MAX_FRAME + 1, 0xc0))]), /exceeds/],
  ];
  for (const [name, bytes, reason] of closing) {
    test(`${name}: refused, connection closed, other agents served`, async () => {
      const c0 = await refusals();
      const l0 = logs.length;
      const bad = await raw();
      bad.sock.write(bytes());
      await Promise.all([within(bad.closed, 3000, 'the server closes the connection'), goodAgent(name.slice(0, 8))]);
      assert.equal(bad.acks.length, 0);
      const line = logged(l0, /closing that connection/)[0];
      assert.ok(line, 'a log line');
      assert.equal(line.level, 40);
      assert.match(String(line.err), reason);
      assert.ok((await refusals()) > c0, 'counted in ambit_ztunnel_rejected_total');
    });
  }

  test('a connection cut in the middle of a frame is logged; nothing half-read is acted on', async () => {
    const before = calls.length;
    const l0 = logs.length;
    const c0 = await refusals();
    const bad = await raw();
    const whole = encodeFrame({ ...ADD, id: 1, uid: 'cut/1' });
    bad.sock.end(whole.subarray(0, whole.length - 3));
    await within(bad.closed, 3000, 'closed');
    await sleep(50);
    assert.equal(calls.length, before);
    assert.equal(logged(l0, /ended in the middle of a message/).length, 1);
    assert.ok((await refusals()) > c0);
  });

  test('ill-typed messages each get an error ack saying why; the connection stays usable', async () => {
    const l0 = logs.length;
    const bad: unknown[] = [
      { ...ADD, id: 1, uid: 5 },
      { ...ADD, id: 2, ip: 'not-an-ip' },
      { ...ADD, id: 3, ip: '10.0.0.1\0' },
      { ...ADD, id: 4, netns: 'relative/path' },
      { ...ADD, id: 5, name: 'x'.repeat(513) },
      { ...ADD, id: 6, namespace: '' },
      { type: 'del', id: 7 },
      { type: 'del', id: 8, uid: ['a'] },
      { type: 2n ** 64n - 1n, id: 9 },
      { type: '\u0001'.repeat(20_000), id: 10 },
      { type: { nested: [1, 2, 3] }, id: 11 },
      { type: 'add', id: 1.5 },
      { type: 'snapshot-sent' },
      [1, 2, 3],
      null,
      'add',
      42,
    ];
    const c = await raw();
    c.sock.write(Buffer.concat(bad.map((m) => frameOf(packr.pack(m) as Buffer))));
    c.sock.write(encodeFrame({ ...ADD, id: 100, uid: 'after/bad' }));
    await within((async () => { while (c.acks.length < bad.length + 1) await sleep(10); })(), 3000, 'every message acknowledged');
    const refusedAcks = c.acks.filter((a) => !a.ok);
    assert.equal(refusedAcks.length, bad.length);
    for (const a of refusedAcks) {
      assert.equal(typeof a.error, 'string');
      assert.ok(a.error!.length > 0 && a.error!.length <= 1025, `an error of ${a.error!.length} chars`);
    }
    assert.match(refusedAcks.find((a) => a.id === 9)!.error!, /unknown message type \(bigint\)/);
    assert.match(refusedAcks.find((a) => a.id === 2)!.error!, /not an IP address/);
    assert.deepEqual(c.acks.at(-1), { type: 'ack', id: 100, ok: true });
    assert.ok(calls.includes('add after/bad'));
    assert.equal(logged(l0, /^node-agent message refused$/).length, bad.length);
    c.sock.destroy();
  });

  test('a flood of malformed messages closes that connection after 100, without a log line each', async () => {
    const l0 = logs.length;
    const c = await raw();
    const junk = frameOf(packr.pack({ type: 'nope', id: 1 }) as Buffer);
    c.sock.write(Buffer.concat(Array.from({ length: 5000 }, () => junk)));
    await Promise.all([within(c.closed, 3000, 'closed'), goodAgent('flood-bad')]);
    assert.ok(logs.length - l0 <= 110, `${logs.length - l0} log lines`);
    assert.equal(logged(l0, /too many malformed messages/).length, 1);
  });

  test('a flood of valid messages is served in order, and another agent is not starved', async () => {
    const n = 20_000;
    const c = await raw();
    const start = calls.length;
    c.sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ type: 'del', id: i + 1, uid: `flood/${i}` }))));
    await sleep(20);
    const t0 = Date.now();
    await goodAgent('flood-good');
    assert.ok(Date.now() - t0 < 2000, `the other agent waited ${Date.now() - t0} ms`);
    await within((async () => { while (c.acks.length < n) await sleep(20); })(), 20_000, 'all acks');
    assert.ok(c.acks.every((a, i) => a.ok && a.id === i + 1), 'acks in order');
    const mine = calls.slice(start).filter((x) => x.startsWith('del flood/'));
    assert.equal(mine.length, n);
    assert.equal(mine[n - 1], `del flood/${n - 1}`);
    c.sock.destroy();
  });

  test('an agent that never reads its acks is not read either (bounded memory), and is served once it reads', async () => {
    const n = 200_000;
    const c = await raw();
    c.sock.pause(); // never read
    const start = calls.filter((x) => x.startsWith('del slow/')).length;
    const payload = Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ type: 'del', id: i + 1, uid: `slow/${i}` })));
    c.sock.write(payload);
    await sleep(1500);
    const handled = calls.filter((x) => x.startsWith('del slow/')).length - start;
    assert.ok(handled < n / 2, `${handled} of ${n} handled while the agent read no ack`);
    await goodAgent('while-stalled');
    c.sock.resume();
    await within((async () => { while (c.acks.length < n) await sleep(50); })(), 30_000, 'all acks after reading');
    assert.equal(calls.filter((x) => x.startsWith('del slow/')).length - start, n);
    c.sock.destroy();
  });

  test('after all that, the server still serves', async () => {
    await goodAgent('final');
  });
});
