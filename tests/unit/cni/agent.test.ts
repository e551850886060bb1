// The node agent's order of work (cni/agent.ts), against a stand-in ztunnel on a unix socket
// and rules that record what they would do to a pod netns: a running pod is handed to ztunnel
// before its traffic is redirected and stops being redirected before ztunnel lets it go; a new
// pod (CNI ADD) is captured first; without ztunnel everything fails closed (captured, pending);
// agent and ztunnel restarts come back to the same state. No root needed.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { KubeObject } from '../../../shared/config/objects.js';
import { encodeFrame, FrameDecoder, type AgentMessage } from '../../../shared/nodeagent/protocol.js';
import { NodeAgent, type PodRules, type Redirection } from '../../../cni/agent.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** ztunnel's end of the node-agent socket: records each message, acks it (or refuses an add). */
class StubZtunnel {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  readonly refuse = new Set<string>();
  constructor(
    private readonly path: string,
    private readonly events: string[],
  ) {}

  async start(): Promise<void> {
    await rm(this.path, { force: true });
    this.server = net.createServer((sock) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => undefined);
      const decoder = new FrameDecoder();
      sock.on('data', (chunk) => {
        for (const f of decoder.push(chunk)) {
          const m = f as AgentMessage;
          const uid = m.type === 'snapshot-sent' ? '' : ` ${m.uid}`;
          this.events.push(`ztunnel ${m.type}${uid}`);
          const refused = m.type === 'add' && this.refuse.has(m.uid);
          sock.write(encodeFrame({ type: 'ack', id: m.id, ok: !refused, ...(refused ? { error: 'no certificate' } : {}) }));
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(this.path, resolve));
  }

  /** Stops listening and drops the agent's connection, as a ztunnel that exits. */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = null;
  }

  get connected(): boolean {
    return this.sockets.size > 0;
  }
}

/** Rules that keep, per netns, what would be installed, and record every call. */
function recordingRules(events: string[], installed: Map<string, 'return-path' | 'full'>): PodRules {
  const name = (netns: string): string => netns.split('/').pop()!;
  return {
    install: async (n) => {
      events.push(`rules install ${name(n)}`);
      installed.set(n, 'full');
    },
    installReturnPath: async (n) => {
      events.push(`rules return-path ${name(n)}`);
      if (!installed.has(n)) installed.set(n, 'return-path');
    },
    startCapture: async (n) => {
      events.push(`rules capture ${name(n)}`);
      assert.ok(installed.has(n), 'capture only on top of the return path');
      installed.set(n, 'full');
    },
    stopCapture: async (n) => {
      events.push(`rules stop-capture ${name(n)}`);
      const had = installed.get(n) === 'full';
      if (had) installed.set(n, 'return-path');
      return had;
    },
    remove: async (n) => {
      events.push(`rules remove ${name(n)}`);
      installed.delete(n);
    },
    installed: async (n) => installed.get(n) === 'full',
  };
}

const ns = (name: string, ambient: boolean): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: ambient ? { 'istio.io/dataplane-mode': 'ambient' } : {} } });
const pod = (namespace: string, name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, spec: { nodeName: 'node-1' } });

describe('node agent: order of rules and ztunnel', () => {
  let dir: string;
  let events: string[];
  let installed: Map<string, 'return-path' | 'full'>;
  let annotations: Map<string, Redirection>;
  let objects: KubeObject[];
  let view: EventEmitter & { objects(): KubeObject[] };
  let ztunnel: StubZtunnel;
  let agents: NodeAgent[];

  const netns = (name: string): string => join(dir, 'netns', name);
  const relabel = (name: string, ambient: boolean): void => {
    objects = [...objects.filter((o) => !(o.kind === 'Namespace' && o.metadata.name === name)), ns(name, ambient)];
    view.emit('change');
  };
  const startAgent = async (): Promise<NodeAgent> => {
    const agent = new NodeAgent({
      node: 'node-1',
      stateDir: join(dir, 'agent'),
      ztunnelSocket: join(dir, 'ztunnel.sock'),
      cniSocket: join(dir, 'cni.sock'),
      view,
      annotate: async (namespace, name, value) => {
        events.push(`annotate ${namespace}/${name} ${value ?? 'none'}`);
        annotations.set(`${namespace}/${name}`, value);
      },
      log: pino({ level: 'silent' }),
      rules: recordingRules(events, installed),
    });
    agents.push(agent);
    await agent.start();
    return agent;
  };
  const add = (agent: NodeAgent, namespace: string, name: string) =>
    agent.cniAdd({ containerId: `c-${name}`, netns: netns(name), podNamespace: namespace, podName: name, podUid: `uid-${name}`, ips: [`10.0.0.${10 + name.length}`] });
  /** events from index `from` on, without the ones of other pods */
  const since = (from: number, about?: string): string[] => events.slice(from).filter((e) => !about || e.includes(about) || e === 'ztunnel snapshot-sent');

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'agent-order-'));
    await mkdir(join(dir, 'netns'));
    for (const n of ['web', 'api', 'old', 'new', 'plain']) await writeFile(netns(n), '');
    events = [];
    installed = new Map();
    annotations = new Map();
    objects = [ns('shop', true), ns('late', false), pod('shop', 'web'), pod('late', 'api'), pod('late', 'plain')];
    view = Object.assign(new EventEmitter(), { objects: () => objects });
    ztunnel = new StubZtunnel(join(dir, 'ztunnel.sock'), events);
    agents = [];
  });
  afterEach(async () => {
    for (const a of agents) a.stop();
    await ztunnel.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a running pod is handed to ztunnel before it is captured, and released after the capture is gone', async () => {
    await ztunnel.start();
    const agent = await startAgent();
    assert.deepEqual(await add(agent, 'late', 'api'), { ambient: false, redirection: null });
    const from = events.length;
    relabel('late', true);
    await eventually(() => annotations.get('late/api') === 'enabled', 'enrollment');
    assert.deepEqual(since(from, 'api'), ['rules return-path api', 'ztunnel add uid-api', 'rules capture api', 'annotate late/api enabled'], 'never pending: the pod is never redirected to a ztunnel that does not serve it');
    const back = events.length;
    relabel('late', false);
    await eventually(() => annotations.get('late/api') === null, 'release');
    assert.deepEqual(since(back, 'api'), ['rules stop-capture api', 'ztunnel del uid-api', 'annotate late/api none']);
    assert.equal(installed.get(netns('api')), 'return-path', 'the return path stays for connections ztunnel still carries');
    // and again: the return path left behind is simply found in place
    relabel('late', true);
    await eventually(() => annotations.get('late/api') === 'enabled', 'second enrollment');
    assert.equal(installed.get(netns('api')), 'full');
  });

  test('a new pod is captured first, then handed to ztunnel (CNI ADD)', async () => {
    await ztunnel.start();
    const agent = await startAgent();
    const from = events.length;
    assert.deepEqual(await add(agent, 'shop', 'web'), { ambient: true, redirection: 'enabled' });
    assert.deepEqual(since(from), ['rules install web', 'annotate shop/web pending', 'ztunnel add uid-web', 'annotate shop/web enabled']);
  });

  test('without ztunnel both paths fail closed: captured, pending; once ztunnel is there they are handed over', async () => {
    const agent = await startAgent();
    assert.deepEqual(await add(agent, 'shop', 'web'), { ambient: true, redirection: 'pending' });
    await add(agent, 'late', 'api');
    relabel('late', true);
    await eventually(() => annotations.get('late/api') === 'pending', 'the running pod captured without ztunnel');
    assert.equal(installed.get(netns('web')), 'full');
    assert.equal(installed.get(netns('api')), 'full');
    assert.ok(!events.some((e) => e.startsWith('ztunnel')));
    const from = events.length;
    await ztunnel.start();
    await eventually(() => events.slice(from).includes('ztunnel snapshot-sent'), 'the snapshot');
    assert.deepEqual(since(from).sort(), ['annotate late/api enabled', 'annotate shop/web enabled', 'ztunnel add uid-api', 'ztunnel add uid-web', 'ztunnel snapshot-sent'].sort());
    assert.equal(events.at(-1), 'ztunnel snapshot-sent');
    assert.ok(!since(from).some((e) => e.startsWith('rules')), 'the rules were already in place');
  });

  test('a running pod ztunnel does not take is captured anyway and stays pending', async () => {
    await ztunnel.start();
    ztunnel.refuse.add('uid-api');
    const agent = await startAgent();
    await add(agent, 'late', 'api');
    const from = events.length;
    relabel('late', true);
    await eventually(() => annotations.get('late/api') === 'pending', 'pending');
    assert.deepEqual(since(from, 'api'), ['rules return-path api', 'ztunnel add uid-api', 'rules install api', 'annotate late/api pending']);
  });

  test('ztunnel restart: its pods go pending (still captured) and come back enabled without touching the rules', async () => {
    await ztunnel.start();
    const agent = await startAgent();
    await add(agent, 'shop', 'web');
    await add(agent, 'late', 'api');
    relabel('late', true);
    await eventually(() => annotations.get('late/api') === 'enabled', 'enrollment');
    const from = events.length;
    await ztunnel.stop();
    await eventually(() => annotations.get('shop/web') === 'pending' && annotations.get('late/api') === 'pending', 'pending while ztunnel is away');
    await ztunnel.start();
    await eventually(() => events.slice(from).includes('ztunnel snapshot-sent'), 'the snapshot');
    await eventually(() => annotations.get('shop/web') === 'enabled' && annotations.get('late/api') === 'enabled', 'enabled again');
    assert.ok(!since(from).some((e) => e.startsWith('rules')), `rules untouched: ${since(from).join(', ')}`);
    assert.equal(events.at(-1), 'ztunnel snapshot-sent');
  });

  test('agent restart: enrolled pods are re-sent before the snapshot, new ones go ztunnel first, un-labelled ones are released', async () => {
    await ztunnel.start();
    objects.push(pod('shop', 'old'), pod('late', 'new'));
    const first = await startAgent();
    await add(first, 'shop', 'web');
    await add(first, 'shop', 'old');
    await add(first, 'late', 'new');
    await add(first, 'late', 'plain');
    first.stop();
    await eventually(() => !ztunnel.connected && annotations.get('shop/web') === 'pending', 'the old agent gone');
    // while the agent is away: `late` becomes ambient, `old` moves out of the mesh
    objects = objects.filter((o) => !(o.kind === 'Pod' && o.metadata.name === 'old'));
    objects.push({ ...pod('shop', 'old'), metadata: { ...pod('shop', 'old').metadata, labels: { 'istio.io/dataplane-mode': 'none' } } });
    relabel('late', true);
    const from = events.length;
    await startAgent();
    await eventually(() => events.slice(from).includes('ztunnel snapshot-sent'), 'the snapshot');
    const after = since(from);
    const of = (p: string) => after.filter((e) => e.includes(` ${p}`) || e.includes(`uid-${p}`) || e.includes(`/${p} `));
    assert.deepEqual(of('web'), ['rules return-path web', 'ztunnel add uid-web', 'rules capture web', 'annotate shop/web enabled'], 'already captured: nothing changes for its traffic');
    assert.deepEqual(of('new'), ['rules return-path new', 'ztunnel add uid-new', 'rules capture new', 'annotate late/new enabled']);
    assert.deepEqual(of('old'), ['rules stop-capture old', 'ztunnel del uid-old', 'annotate shop/old none']);
    assert.deepEqual(of('plain'), ['rules return-path plain', 'ztunnel add uid-plain', 'rules capture plain', 'annotate late/plain enabled']);
    assert.equal(after.at(-1), 'ztunnel snapshot-sent');
    assert.equal(installed.get(netns('old')), 'return-path');
  });

  test('agent restart: a pod never captured and not ambient is left alone', async () => {
    await ztunnel.start();
    const first = await startAgent();
    await add(first, 'late', 'plain');
    first.stop();
    const from = events.length;
    await startAgent();
    await eventually(() => events.slice(from).includes('ztunnel snapshot-sent'), 'the snapshot');
    assert.deepEqual(since(from), ['rules stop-capture plain', 'ztunnel snapshot-sent'], 'only looked: no annotation, no ztunnel message');
  });
});
