// ambit-cni as a container runtime runs it: a real process, env + stdin in, JSON out, against a
// fake node agent on a unix socket; then chained after the real reference plugins (bridge,
// host-local, loopback) through shared/cni/runtime.ts in real network namespaces.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { installPlugin } from '../../../cni/install.js';
import { CniError, cniAdd, cniCheck, cniDel, cniStatus, type CniResult, type PluginExec, type RuntimeOptions } from '../../../shared/cni/runtime.js';

const needsRoot = process.getuid?.() === 0 ? false : 'needs root (network namespaces)';
const REFERENCE_PLUGINS = '/usr/lib/cni';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

interface Recorded {
  method: string;
  url: string;
  body: unknown;
}

type Behaviour = (r: Recorded) => { status: number; body: string } | 'hang';

/** A node agent stand-in: HTTP on a unix socket, recording every request. */
class FakeAgent {
  readonly requests: Recorded[] = [];
  behaviour: Behaviour = () => ({ status: 200, body: JSON.stringify({ ambient: true }) });
  private server?: http.Server;
  private readonly sockets = new Set<Socket>();
  constructor(readonly socketPath: string) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let raw = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (raw += c));
      req.on('end', () => {
        const r: Recorded = { method: req.method ?? '', url: req.url ?? '', body: raw ? JSON.parse(raw) : undefined };
        this.requests.push(r);
        const answer = this.behaviour(r);
        if (answer === 'hang') return;
        res.writeHead(answer.status, { 'content-type': 'application/json' });
        res.end(answer.body);
      });
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.socketPath, resolve);
    });
  }

  reset(behaviour?: Behaviour): void {
    this.requests.length = 0;
    this.behaviour = behaviour ?? (() => ({ status: 200, body: JSON.stringify({ ambient: true }) }));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

function sh(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function mustSh(file: string, args: string[]): Promise<string> {
  const r = await sh(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

let dir = '';
let binDir = '';
let plugin = '';
let agent: FakeAgent;
const madeNetns: string[] = [];

// One temp dir holds the bin dir (the launcher), the agent socket and the IPAM data.
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-cni-'));
  binDir = join(dir, 'bin');
  await mkdir(binDir);
  plugin = await installPlugin(binDir);
  agent = new FakeAgent(join(dir, 'agent.sock'));
  await agent.start();
});

after(async () => {
  await agent?.stop();
  for (const ns of madeNetns) await sh('ip', ['netns', 'del', ns]);
  await rm(dir, { recursive: true, force: true });
  if (process.getuid?.() === 0) {
    const left = (await mustSh('ip', ['netns', 'list'])).split('\n').filter((l) => madeNetns.some((ns) => l.startsWith(ns)));
    assert.deepEqual(left, [], 'every test netns is gone');
  }
});

/** Runs the installed plugin as a runtime would: env + stdin, waits for exit. */
function runPlugin(env: Record<string, string>, stdin: string, killAfterMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(plugin, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

const NETNS = '/proc/self/ns/net'; // exists for any process; real netns come later
const POD_ARGS = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=5f0c-uid';
const PREV: CniResult & Record<string, unknown> = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '0a:58:0a:5b:00:01' },
    { name: 'veth1234', mac: '5e:aa:bb:cc:dd:ee' },
    { name: 'eth0', mac: '0a:58:0a:5b:00:05', sandbox: NETNS },
  ],
  ips: [{ address: '10.91.0.5/24', gateway: '10.91.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.91.0.1' }],
  dns: { nameservers: ['10.96.0.10'] },
};

function conf(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'ambit-cni', agentSocket: agent.socketPath, timeoutMs: 3000, prevResult: PREV, ...extra };
}

function env(command: string, extra: Record<string, string> = {}): Record<string, string> {
  return { CNI_COMMAND: command, CNI_CONTAINERID: 'abc123', CNI_NETNS: NETNS, CNI_IFNAME: 'eth0', CNI_ARGS: POD_ARGS, CNI_PATH: binDir, ...extra };
}

/** Asserts a CNI error result: exit 1, exactly the spec's keys, the code, and a message matching. */
function assertCniError(r: Run, code: number, msg: RegExp, cniVersion = '1.0.0'): Record<string, unknown> {
  assert.equal(r.code, 1, `exit code (stdout ${r.stdout}, stderr ${r.stderr})`);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  for (const k of Object.keys(out)) assert.ok(['cniVersion', 'code', 'msg', 'details'].includes(k), `unexpected key ${k}`);
  assert.equal(out.cniVersion, cniVersion);
  assert.equal(out.code, code, `code of ${r.stdout}`);
  assert.equal(typeof out.msg, 'string');
  assert.match(out.msg as string, msg);
  if ('details' in out) assert.equal(typeof out.details, 'string');
  return out;
}

const ADD_BODY = { containerId: 'abc123', netns: NETNS, ifname: 'eth0', podNamespace: 'shop', podName: 'cart-7d9', podUid: '5f0c-uid', ips: ['10.91.0.5'] };

test('VERSION reports the spec versions it speaks', async () => {
  const r = await runPlugin({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }));
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.1.0', supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] });
});

test('ADD asks the agent with the pod from CNI_ARGS and passes prevResult through unchanged', async () => {
  agent.reset();
  const r = await runPlugin(env('ADD'), JSON.stringify(conf()));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), PREV);
  assert.deepEqual(agent.requests, [{ method: 'POST', url: '/v1/cni/add', body: ADD_BODY }]);
});

test('ADD answers with the configuration cniVersion, whatever prevResult carried; 0.4.0 results pass through', async () => {
  agent.reset(() => ({ status: 200, body: JSON.stringify({ ambient: false }) }));
  let r = await runPlugin(env('ADD'), JSON.stringify(conf({ cniVersion: '1.1.0' })));
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), { ...PREV, cniVersion: '1.1.0' });

  const prev04 = { cniVersion: '0.4.0', interfaces: [{ name: 'eth0', sandbox: NETNS }], ips: [{ version: '4', address: '10.91.0.9/24', interface: 0 }] };
  r = await runPlugin(env('ADD'), JSON.stringify(conf({ cniVersion: '0.4.0', prevResult: prev04 })));
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), prev04);
  assert.deepEqual((agent.requests[1].body as { ips: string[] }).ips, ['10.91.0.9']);
});

test('ADD sends only the pod-side addresses, without prefix length, IPv6 included', async () => {
  agent.reset();
  const prev = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'cni0' }, { name: 'eth0', sandbox: NETNS }],
    ips: [
      { address: '10.91.0.1/24', interface: 0 }, // the bridge's own address: not the pod's
      { address: '10.91.0.5/24', interface: 1 },
      { address: 'fd00:91::5/64', interface: 1 },
      { address: '192.168.7.7/32' }, // no interface: assumed the pod's
    ],
  };
  const r = await runPlugin(env('ADD'), JSON.stringify(conf({ prevResult: prev })));
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual((agent.requests[0].body as { ips: string[] }).ips, ['10.91.0.5', 'fd00:91::5', '192.168.7.7']);
});

test('ADD for a sandbox without Kubernetes pod args passes through without asking the agent', async () => {
  agent.reset();
  const r = await runPlugin(env('ADD', { CNI_ARGS: 'IgnoreUnknown=1' }), JSON.stringify(conf()));
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), PREV);
  assert.deepEqual(agent.requests, []);
  assert.match(r.stderr, /not a pod/);
});

test('invalid invocations get the spec error codes and the agent is never asked', async (t) => {
  agent.reset();
  const cases: { name: string; env: Record<string, string>; stdin: string; code: number; msg: RegExp; version?: string }[] = [
    { name: 'malformed stdin', env: env('ADD'), stdin: '{"cniVersion": "1.0.0", ', code: 6, msg: /decode/, version: '1.1.0' },
    { name: 'stdin not an object', env: env('ADD'), stdin: '[1,2]', code: 6, msg: /not a JSON object/, version: '1.1.0' },
    { name: 'unknown command', env: env('FROB'), stdin: JSON.stringify(conf()), code: 4, msg: /CNI_COMMAND "FROB"/ },
    { name: 'no command', env: { ...env('ADD'), CNI_COMMAND: '' }, stdin: JSON.stringify(conf()), code: 4, msg: /CNI_COMMAND/ },
    { name: 'missing CNI_NETNS', env: { ...env('ADD'), CNI_NETNS: '' }, stdin: JSON.stringify(conf()), code: 4, msg: /CNI_NETNS/ },
    { name: 'nonexistent CNI_NETNS', env: env('ADD', { CNI_NETNS: '/run/netns/ambit-t-nope' }), stdin: JSON.stringify(conf()), code: 4, msg: /CNI_NETNS \/run\/netns\/ambit-t-nope does not exist/ },
    { name: 'nonexistent CNI_NETNS on CHECK', env: env('CHECK', { CNI_NETNS: '/run/netns/ambit-t-nope' }), stdin: JSON.stringify(conf()), code: 4, msg: /CNI_NETNS/ },
    { name: 'missing container id', env: { ...env('ADD'), CNI_CONTAINERID: '' }, stdin: JSON.stringify(conf()), code: 4, msg: /CNI_CONTAINERID/ },
    { name: 'bad container id', env: env('ADD', { CNI_CONTAINERID: '-x/y' }), stdin: JSON.stringify(conf()), code: 4, msg: /CNI_CONTAINERID/ },
    { name: 'malformed CNI_ARGS', env: env('ADD', { CNI_ARGS: 'K8S_POD_NAME=a;garbage' }), stdin: JSON.stringify(conf()), code: 4, msg: /CNI_ARGS/ },
    { name: 'unsupported cniVersion', env: env('ADD'), stdin: JSON.stringify(conf({ cniVersion: '0.3.1' })), code: 1, msg: /incompatible CNI version "0.3.1"/, version: '0.3.1' },
    { name: 'no cniVersion', env: env('ADD'), stdin: JSON.stringify(conf({ cniVersion: undefined })), code: 1, msg: /incompatible CNI version/, version: '1.1.0' },
    { name: 'wrong type', env: env('ADD'), stdin: JSON.stringify(conf({ type: 'istio-cni' })), code: 7, msg: /"istio-cni", expected "ambit-cni"/ },
    { name: 'no name', env: env('ADD'), stdin: JSON.stringify(conf({ name: '' })), code: 7, msg: /name/ },
    { name: 'relative agentSocket', env: env('ADD'), stdin: JSON.stringify(conf({ agentSocket: 'cni.sock' })), code: 7, msg: /agentSocket/ },
    { name: 'bad timeoutMs', env: env('ADD'), stdin: JSON.stringify(conf({ timeoutMs: -5 })), code: 7, msg: /timeoutMs/ },
    { name: 'no prevResult', env: env('ADD'), stdin: JSON.stringify(conf({ prevResult: undefined })), code: 7, msg: /no prevResult/ },
    { name: 'prevResult without IPs', env: env('ADD'), stdin: JSON.stringify(conf({ prevResult: { cniVersion: '1.0.0', interfaces: [], ips: [] } })), code: 7, msg: /no IP/ },
    { name: 'prevResult with only host IPs', env: env('ADD'), stdin: JSON.stringify(conf({ prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'cni0' }], ips: [{ address: '10.91.0.1/24', interface: 0 }] } })), code: 7, msg: /container interface/ },
    { name: 'prevResult with a bad address', env: env('ADD'), stdin: JSON.stringify(conf({ prevResult: { cniVersion: '1.0.0', ips: [{ address: 'ten.0.0.1/8' }] } })), code: 7, msg: /invalid IP/ },
    { name: 'CHECK without prevResult', env: env('CHECK'), stdin: JSON.stringify(conf({ prevResult: undefined })), code: 7, msg: /prevResult/ },
    { name: 'STATUS before 1.1.0', env: { CNI_COMMAND: 'STATUS' }, stdin: JSON.stringify(conf()), code: 1, msg: /STATUS needs cniVersion 1.1.0/ },
    { name: 'DEL with malformed stdin', env: env('DEL'), stdin: 'nope', code: 6, msg: /decode/, version: '1.1.0' },
  ];
  for (const c of cases) {
    const r = await runPlugin(c.env, c.stdin);
    await t.test(c.name, () => {
      assertCniError(r, c.code, c.msg, c.version ?? '1.0.0');
    });
  }
  assert.deepEqual(agent.requests, []);
});

test('ADD with the agent down fails with code 11 naming the socket', async () => {
  const missing = join(dir, 'no-agent.sock');
  const r = await runPlugin(env('ADD'), JSON.stringify(conf({ agentSocket: missing, timeoutMs: 2000 })));
  assertCniError(r, 11, new RegExp(`node agent at ${missing} is not reachable: ENOENT`));
  assert.ok(r.ms < 2000 + 2000, `returned in ${r.ms} ms`);
});

test('ADD with an agent that never answers fails with code 11 at the deadline, not later', async () => {
  agent.reset(() => 'hang');
  const timeoutMs = 400;
  const r = await runPlugin(env('ADD'), JSON.stringify(conf({ timeoutMs })), timeoutMs + 10_000);
  assertCniError(r, 11, new RegExp(`node agent at ${agent.socketPath} did not answer ADD for pod shop/cart-7d9 within 400 ms`));
  assert.ok(r.ms < timeoutMs + 2000, `returned in ${r.ms} ms`);
  assert.equal(agent.requests.length, 1);
});

test('agent errors: its reason reaches the runtime; 503 means try again later; a garbled answer is a decoding failure', async () => {
  agent.reset(() => ({ status: 500, body: JSON.stringify({ error: 'iptables-restore: line 3 failed' }) }));
  let r = await runPlugin(env('ADD'), JSON.stringify(conf()));
  const out = assertCniError(r, 5, /refused ADD for pod shop\/cart-7d9: iptables-restore: line 3 failed/);
  assert.match(out.details as string, /POST \/v1\/cni\/add answered 500/);

  agent.reset(() => ({ status: 503, body: JSON.stringify({ error: 'ztunnel not connected yet' }) }));
  r = await runPlugin(env('ADD'), JSON.stringify(conf()));
  assertCniError(r, 11, /ztunnel not connected yet/);

  agent.reset(() => ({ status: 502, body: '<html>bad gateway</html>' }));
  r = await runPlugin(env('ADD'), JSON.stringify(conf()));
  assertCniError(r, 5, /HTTP 502/);

  agent.reset(() => ({ status: 200, body: 'ok' }));
  r = await runPlugin(env('ADD'), JSON.stringify(conf()));
  assertCniError(r, 6, /undecodable answer/);
});

test('DEL tells the agent and prints nothing; it succeeds with the agent down, failing or hung, and the netns gone', async () => {
  agent.reset();
  const delBody = { containerId: 'abc123', netns: NETNS, podNamespace: 'shop', podName: 'cart-7d9', podUid: '5f0c-uid' };
  let r = await runPlugin(env('DEL'), JSON.stringify(conf()));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.deepEqual(agent.requests, [{ method: 'POST', url: '/v1/cni/del', body: delBody }]);

  agent.reset();
  r = await runPlugin(env('DEL', { CNI_NETNS: '/run/netns/ambit-t-gone' }), JSON.stringify(conf({ prevResult: undefined })));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.deepEqual(agent.requests[0].body, { ...delBody, netns: '/run/netns/ambit-t-gone' });

  const noNetns = { ...env('DEL') } as Record<string, string>;
  delete noNetns.CNI_NETNS;
  r = await runPlugin(noNetns, JSON.stringify(conf()));
  assert.equal(r.code, 0);

  const missing = join(dir, 'no-agent.sock');
  r = await runPlugin(env('DEL'), JSON.stringify(conf({ agentSocket: missing })));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, new RegExp(`${missing} is not reachable`));

  agent.reset(() => ({ status: 500, body: JSON.stringify({ error: 'boom' }) }));
  r = await runPlugin(env('DEL'), JSON.stringify(conf()));
  assert.equal(r.code, 0);
  assert.match(r.stderr, /boom/);

  agent.reset(() => 'hang');
  r = await runPlugin(env('DEL'), JSON.stringify(conf({ timeoutMs: 300 })));
  assert.equal(r.code, 0);
  assert.ok(r.ms < 300 + 2000, `returned in ${r.ms} ms`);
});

test('CHECK asks the agent with the ADD body; its reason is reported when redirection is not in place', async () => {
  agent.reset(() => ({ status: 200, body: '{}' }));
  let r = await runPlugin(env('CHECK'), JSON.stringify(conf()));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.deepEqual(agent.requests, [{ method: 'POST', url: '/v1/cni/check', body: ADD_BODY }]);

  agent.reset(() => ({ status: 409, body: JSON.stringify({ error: 'redirect chain AMBIT_OUTPUT missing in pod netns' }) }));
  r = await runPlugin(env('CHECK'), JSON.stringify(conf()));
  assertCniError(r, 5, /refused CHECK for pod shop\/cart-7d9: redirect chain AMBIT_OUTPUT missing/);

  r = await runPlugin(env('CHECK'), JSON.stringify(conf({ agentSocket: join(dir, 'no-agent.sock') })));
  assertCniError(r, 11, /not reachable/);
});

test('STATUS (1.1.0): silent success when the agent is ready, code 50 otherwise', async () => {
  agent.reset(() => ({ status: 200, body: JSON.stringify({ ready: true }) }));
  const status = { cniVersion: '1.1.0', name: 'k8s-pod-network', type: 'ambit-cni', agentSocket: agent.socketPath };
  let r = await runPlugin({ CNI_COMMAND: 'STATUS', CNI_PATH: binDir }, JSON.stringify(status));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.deepEqual(agent.requests, [{ method: 'GET', url: '/v1/status', body: undefined }]);

  agent.reset(() => ({ status: 503, body: JSON.stringify({ error: 'not connected to ztunnel' }) }));
  r = await runPlugin({ CNI_COMMAND: 'STATUS' }, JSON.stringify(status));
  assertCniError(r, 50, /not connected to ztunnel/, '1.1.0');

  r = await runPlugin({ CNI_COMMAND: 'STATUS' }, JSON.stringify({ ...status, agentSocket: join(dir, 'no-agent.sock') }));
  assertCniError(r, 50, /not reachable/, '1.1.0');
});

test('ADD wall time against a fake agent (reported, not asserted)', async (t) => {
  agent.reset();
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await runPlugin(env('ADD'), JSON.stringify(conf()));
    assert.equal(r.code, 0);
    times.push(r.ms);
  }
  times.sort((a, b) => a - b);
  t.diagnostic(`ambit-cni ADD wall time over 10 runs: min ${times[0].toFixed(1)} ms, median ${times[5].toFixed(1)} ms, max ${times[9].toFixed(1)} ms`);
});

// ---- chained after the real reference plugins, in real namespaces ----

async function newNetns(kind: string): Promise<string> {
  const name = `ambit-t-${kind}-${randomBytes(3).toString('hex')}`;
  await mustSh('ip', ['netns', 'add', name]);
  madeNetns.push(name);
  return name;
}

async function reservations(dataDir: string, network: string): Promise<string[]> {
  const d = join(dataDir, network);
  if (!existsSync(d)) return [];
  return (await readdir(d)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
}

function podNetwork(bridge: string, dataDir: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'ambit-t-net',
    plugins: [
      { type: 'bridge', bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', subnet: '10.91.0.0/24', dataDir } },
      { type: 'ambit-cni', agentSocket: agent.socketPath, timeoutMs: 3000 },
    ],
  };
}

// containerd sets up the loopback as its own single-plugin network before the pod network.
const LOOPBACK = { cniVersion: '1.0.0', name: 'cni-loopback', plugins: [{ type: 'loopback' }] };

test('chained after bridge + host-local: the agent learns the pod, the pod gets its IP, DEL releases it', { skip: needsRoot }, async () => {
  agent.reset();
  const host = await newNetns('host');
  const pod = await newNetns('pod');
  const opts: RuntimeOptions = { binDirs: [binDir, REFERENCE_PLUGINS], hostNetns: host, timeoutMs: 20_000 };
  const dataDir = join(dir, 'ipam-ok');
  const network = podNetwork(`ambt${randomBytes(3).toString('hex')}`, dataDir);
  const att = {
    containerId: 'c0ffee01',
    netns: pod,
    ifname: 'eth0',
    args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'cart-7d9', K8S_POD_UID: '5f0c-uid' },
  };

  await cniAdd(LOOPBACK, { ...att, ifname: 'lo' }, opts);
  const execs: PluginExec[] = [];
  const result = await cniAdd(network, att, { ...opts, onExec: (e) => execs.push(e) });
  // the runtime reports each plugin it ran, in order, with its exit code and how long it took
  assert.deepEqual(execs.map((e) => `${e.command} ${e.plugin} ${e.code}`), ['ADD bridge 0', 'ADD ambit-cni 0']);
  assert.ok(execs.every((e) => e.ms > 0));

  const podIp = result.ips[0]?.address ?? '';
  assert.match(podIp, /^10\.91\.0\.\d+\/24$/);
  assert.equal(result.cniVersion, '1.0.0');
  assert.ok(result.interfaces?.some((i) => i.name === 'eth0' && i.sandbox === `/run/netns/${pod}`));
  const ip = podIp.split('/')[0];
  assert.deepEqual(agent.requests, [
    {
      method: 'POST',
      url: '/v1/cni/add',
      body: { containerId: 'c0ffee01', netns: `/run/netns/${pod}`, ifname: 'eth0', podNamespace: 'shop', podName: 'cart-7d9', podUid: '5f0c-uid', ips: [ip] },
    },
  ]);
  const addrs = JSON.parse(await mustSh('ip', ['-n', pod, '-j', 'addr', 'show', 'dev', 'eth0'])) as { addr_info: { local: string; prefixlen: number }[] }[];
  assert.ok(addrs[0].addr_info.some((a) => a.local === ip && a.prefixlen === 24), `eth0 has ${ip}`);
  const lo = JSON.parse(await mustSh('ip', ['-n', pod, '-j', 'link', 'show', 'dev', 'lo'])) as { flags: string[] }[];
  assert.ok(lo[0].flags.includes('UP'), 'loopback is up');
  assert.deepEqual(await reservations(dataDir, 'ambit-t-net'), [ip]);

  // CHECK runs bridge's and ambit-cni's checks; STATUS is a no-op below 1.1.0, as in libcni.
  agent.reset(() => ({ status: 200, body: '{}' }));
  await cniCheck(network, att, opts, result);
  assert.deepEqual(agent.requests.map((r) => r.url), ['/v1/cni/check']);
  agent.reset();
  await cniStatus(network, opts);
  assert.equal(agent.requests.length, 0);
  await cniStatus({ cniVersion: '1.1.0', name: 'ambit-t-status', plugins: [{ type: 'ambit-cni', agentSocket: agent.socketPath }] }, opts);
  assert.deepEqual(agent.requests.map((r) => `${r.method} ${r.url}`), ['GET /v1/status']);

  agent.reset();
  await cniDel(network, att, opts, result);
  assert.deepEqual(agent.requests, [
    { method: 'POST', url: '/v1/cni/del', body: { containerId: 'c0ffee01', netns: `/run/netns/${pod}`, podNamespace: 'shop', podName: 'cart-7d9', podUid: '5f0c-uid' } },
  ]);
  assert.deepEqual(await reservations(dataDir, 'ambit-t-net'), [], 'IPAM released');
  assert.notEqual((await sh('ip', ['-n', pod, 'link', 'show', 'dev', 'eth0'])).code, 0, 'eth0 is gone');

  // DEL is idempotent, and still succeeds once the pod netns and the agent are gone.
  await cniDel(network, att, opts, result);
  await mustSh('ip', ['netns', 'del', pod]);
  await agent.stop();
  try {
    await cniDel(network, att, opts);
    await cniDel(LOOPBACK, { ...att, ifname: 'lo' }, opts);
  } finally {
    await agent.start();
  }
});

test('a failing agent fails the pod ADD and rolls the bridge back (IP released)', { skip: needsRoot }, async () => {
  agent.reset((r) => (r.url === '/v1/cni/add' ? { status: 500, body: JSON.stringify({ error: 'cannot enter pod netns' }) } : { status: 200, body: '{}' }));
  const host = await newNetns('host');
  const pod = await newNetns('pod');
  // The node's netns given as a path this time (nsenter rather than ip netns exec).
  const opts: RuntimeOptions = { binDirs: [binDir, REFERENCE_PLUGINS], hostNetns: `/run/netns/${host}`, timeoutMs: 20_000 };
  const dataDir = join(dir, 'ipam-fail');
  const network = podNetwork(`ambt${randomBytes(3).toString('hex')}`, dataDir);
  const att = { containerId: 'c0ffee02', netns: `/run/netns/${pod}`, ifname: 'eth0', args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'shop', K8S_POD_NAME: 'cart-x', K8S_POD_UID: 'u2' } };

  await assert.rejects(cniAdd(network, att, opts), (err: unknown) => {
    assert.ok(err instanceof CniError);
    assert.equal(err.code, 5, err.message);
    assert.equal(err.plugin, 'ambit-cni');
    assert.match(err.msg, /cannot enter pod netns/);
    assert.deepEqual(err.related, [], 'rollback DELs succeeded');
    return true;
  });
  assert.deepEqual(agent.requests.map((r) => r.url), ['/v1/cni/add', '/v1/cni/del'], 'the rollback tells the agent too');
  assert.deepEqual(await reservations(dataDir, 'ambit-t-net'), [], 'IPAM released by the rollback');
  assert.notEqual((await sh('ip', ['-n', pod, 'link', 'show', 'dev', 'eth0'])).code, 0, 'eth0 removed by the rollback');
});

test('runtime errors: a missing plugin and a plugin error name the plugin', { skip: needsRoot }, async () => {
  const host = await newNetns('host');
  const pod = await newNetns('pod');
  const opts: RuntimeOptions = { binDirs: [binDir, REFERENCE_PLUGINS], hostNetns: host };
  const att = { containerId: 'c0ffee03', netns: pod, ifname: 'eth0' };
  await assert.rejects(cniAdd({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'no-such-plugin' }] }, att, opts), /failed to find plugin "no-such-plugin"/);
  // bridge without IPAM config: its own error result comes back as a CniError.
  await assert.rejects(
    cniAdd({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge', bridge: 'ambtbad0', ipam: { type: 'host-local' } }] }, att, opts),
    (err: unknown) => err instanceof CniError && err.plugin === 'bridge' && err.code !== 0,
  );
  // ambit-cni alone has no prevResult: code 7 from the plugin.
  await assert.rejects(
    cniAdd({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'ambit-cni', agentSocket: agent.socketPath }] }, att, opts),
    (err: unknown) => err instanceof CniError && err.plugin === 'ambit-cni' && err.code === 7,
  );
});
