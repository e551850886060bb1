import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, checkAgentMessage, encodeFrame, FrameDecoder, MAX_FRAME, type AgentAck, type AgentMessage } from '../../../shared/nodeagent/protocol.js';

const ADD = { type: 'add', id: 1, uid: 'shop/web', name: 'web', namespace: 'shop', serviceAccount: 'web', ip: '10.249.1.11', netns: '/run/netns/ambit-pod-1' } as const;

describe('encodeFrame and FrameDecoder', () => {
  test('a frame is a 4-byte big-endian length and a MessagePack body', () => {
    const frame = encodeFrame({ type: 'del', id: 7, uid: 'shop/web' });
    assert.equal(frame.readUInt32BE(0), frame.length - 4);
    assert.deepEqual(new FrameDecoder().push(frame), [{ type: 'del', id: 7, uid: 'shop/web' }]);
  });

  test('frames split across chunks, even byte by byte, come out whole', () => {
    const messages = [ADD, { type: 'del', id: 2, uid: 'x' }, { type: 'snapshot-sent', id: 3 }];
    const bytes = Buffer.concat(messages.map((m) => encodeFrame(m)));
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...d.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(out, messages);
  });

  test('several frames in one chunk, and a frame split over a chunk boundary', () => {
    const messages = Array.from({ length: 5 }, (_, i) => ({ type: 'del', id: i, uid: `uid-${i}` }));
    const bytes = Buffer.concat(messages.map((m) => encodeFrame(m)));
    const d = new FrameDecoder();
    const cut = Math.floor(bytes.length / 2) + 1;
    const first = d.push(bytes.subarray(0, cut));
    const second = d.push(bytes.subarray(cut));
    assert.ok(first.length < 5 && first.length > 0);
    assert.deepEqual([...first, ...second], messages);
    assert.deepEqual(new FrameDecoder().push(bytes), messages);
  });

  test('an oversized frame is refused on both sides', () => {
    assert.throws(() => encodeFrame({ blob: 'x'.repeat(MAX_FRAME + 1) }), /exceeds/);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_FRAME + 1, 0);
    // refused from the header alone, without waiting for the body
    assert.throws(() => new FrameDecoder().push(head), /exceeds/);
    head.writeUInt32BE(0xffffffff, 0);
    assert.throws(() => new FrameDecoder().push(head), /exceeds/);
  });

  test('a body that is not MessagePack throws', () => {
    const frame = (body: Buffer): Buffer => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length, 0);
      return Buffer.concat([head, body]);
    };
    assert.throws(() => new FrameDecoder().push(frame(Buffer.from('hello, ztunnel'))));
    assert.throws(() => new FrameDecoder().push(frame(Buffer.from([0x82, 0x01]))));
    assert.throws(() => new FrameDecoder().push(frame(Buffer.alloc(0))));
  });
});

describe('checkAgentMessage', () => {
  test('accepts add, del and snapshot-sent', () => {
    assert.deepEqual(checkAgentMessage({ ...ADD }), ADD);
    assert.deepEqual(checkAgentMessage({ type: 'del', id: 2, uid: 'shop/web' }), { type: 'del', id: 2, uid: 'shop/web' });
    assert.deepEqual(checkAgentMessage({ type: 'snapshot-sent', id: 3 }), { type: 'snapshot-sent', id: 3 });
    assert.equal(typeof checkAgentMessage({ ...ADD, ip: 'fd00::1' }), 'object');
    assert.equal(typeof checkAgentMessage({ ...ADD, netns: '/proc/1234/ns/net' }), 'object');
  });

  test('refuses anything malformed, saying why', () => {
    const cases: [unknown, RegExp][] = [
      [null, /not a map/],
      ['add', /not a map/],
      [[ADD], /not a map/],
      [{ type: 'del', uid: 'x' }, /integer id/],
      [{ type: 'del', id: '1', uid: 'x' }, /integer id/],
      [{ type: 'del', id: 1.5, uid: 'x' }, /integer id/],
      [{ type: 'reboot', id: 1 }, /unknown message type "reboot"/],
      [{ id: 1 }, /unknown message type/],
      [{ type: 'del', id: 1 }, /del: uid/],
      [{ type: 'del', id: 1, uid: '' }, /del: uid/],
      [{ ...ADD, uid: undefined }, /add: uid/],
      [{ ...ADD, name: '' }, /add: name/],
      [{ ...ADD, namespace: 3 }, /add: namespace/],
      [{ ...ADD, serviceAccount: null }, /add: serviceAccount/],
      [{ ...ADD, ip: undefined }, /add: ip must be/],
      [{ ...ADD, netns: undefined }, /add: netns must be/],
      [{ ...ADD, uid: 'u'.repeat(513) }, /add: uid/],
      [{ ...ADD, ip: '10.0.0.256' }, /not an IP address/],
      [{ ...ADD, ip: 'web.shop' }, /not an IP address/],
      [{ ...ADD, netns: 'run/netns/x' }, /absolute path/],
    ];
    for (const [msg, why] of cases) {
      const r = checkAgentMessage(msg);
      assert.equal(typeof r, 'string', `${JSON.stringify(msg)} should be refused`);
      assert.match(r as string, why);
    }
  });
});

type Behaviour = (msg: AgentMessage, sock: net.Socket) => void;

/** A stand-in for ztunnel's node-agent socket: decodes frames and answers as `behave` says. */
async function fakeZtunnel(t: TestContext, behave: Behaviour): Promise<{ path: string; received: AgentMessage[]; sockets: Set<net.Socket> }> {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-agent-'));
  const path = join(dir, 'ztunnel.sock');
  const received: AgentMessage[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const d = new FrameDecoder();
    sock.on('data', (chunk) => {
      for (const f of d.push(chunk)) {
        const m = checkAgentMessage(f);
        assert.equal(typeof m, 'object', `the client sent a malformed message: ${String(m)}`);
        received.push(m as AgentMessage);
        behave(m as AgentMessage, sock);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { path, received, sockets };
}

const ack = (sock: net.Socket, a: AgentAck): void => {
  sock.write(encodeFrame(a));
};

describe('AgentClient', () => {
  test('each message is numbered and resolves on its ok ack', async (t) => {
    const z = await fakeZtunnel(t, (m, sock) => ack(sock, { type: 'ack', id: m.id, ok: true }));
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    const { id: _id, type: _type, ...pod } = ADD;
    await client.send({ type: 'add', ...pod });
    await client.send({ type: 'del', uid: 'shop/web' });
    await client.send({ type: 'snapshot-sent' });
    assert.deepEqual(
      z.received.map((m) => [m.type, m.id]),
      [
        ['add', 1],
        ['del', 2],
        ['snapshot-sent', 3],
      ],
    );
    assert.equal((z.received[0] as Extract<AgentMessage, { type: 'add' }>).netns, '/run/netns/ambit-pod-1');
  });

  test('acks are matched by id, whatever their order', async (t) => {
    const held: AgentMessage[] = [];
    const z = await fakeZtunnel(t, (m, sock) => {
      held.push(m);
      if (held.length === 2) {
        ack(sock, { type: 'ack', id: held[1]!.id, ok: false, error: 'second refused' });
        ack(sock, { type: 'ack', id: held[0]!.id, ok: true });
      }
    });
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    const first = client.send({ type: 'del', uid: 'a' });
    const second = client.send({ type: 'del', uid: 'b' });
    await first;
    await assert.rejects(second, /refused del: second refused/);
  });

  test('an error ack rejects with ztunnel\'s reason', async (t) => {
    const z = await fakeZtunnel(t, (m, sock) => ack(sock, { type: 'ack', id: m.id, ok: false, error: 'netns /run/netns/x does not exist' }));
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    await assert.rejects(client.send({ type: 'del', uid: 'shop/web' }), /ztunnel refused del: netns \/run\/netns\/x does not exist/);
    const z2 = await fakeZtunnel(t, (m, sock) => ack(sock, { type: 'ack', id: m.id, ok: false }));
    const client2 = await AgentClient.connect(z2.path);
    t.after(() => client2.close());
    await assert.rejects(client2.send({ type: 'snapshot-sent' }), /ztunnel refused snapshot-sent: no reason given/);
  });

  test('no ack within the timeout rejects, and the client keeps working', async (t) => {
    let answer = false;
    const z = await fakeZtunnel(t, (m, sock) => {
      if (answer) ack(sock, { type: 'ack', id: m.id, ok: true });
    });
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    await assert.rejects(client.send({ type: 'del', uid: 'shop/web' }, 50), /did not acknowledge del within 50 ms/);
    answer = true;
    await client.send({ type: 'del', uid: 'shop/web' }, 5000);
  });

  test('ztunnel closing the socket fails the pending message, and later ones', async (t) => {
    const z = await fakeZtunnel(t, (_m, sock) => sock.destroy());
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    await assert.rejects(client.send({ type: 'del', uid: 'shop/web' }, 5000), /closed the node-agent socket/);
    await assert.rejects(client.send({ type: 'del', uid: 'shop/web' }, 5000), /closed the node-agent socket/);
  });

  test('a garbled ack fails the pending message', async (t) => {
    const z = await fakeZtunnel(t, (_m, sock) => sock.write(Buffer.from([0, 0, 0, 5, 0x68, 0x65, 0x6c, 0x6c, 0x6f])));
    const client = await AgentClient.connect(z.path);
    t.after(() => client.close());
    await assert.rejects(client.send({ type: 'del', uid: 'shop/web' }, 5000));
  });

  test('connecting where no ztunnel listens fails clearly', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ambit-agent-'));
    try {
      await assert.rejects(AgentClient.connect(join(dir, 'missing.sock'), 1000), /cannot reach ztunnel at .*missing\.sock/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
