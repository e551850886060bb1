/**
 * ambit-cni: the chained CNI plugin. It runs after the interface plugins (bridge, ptp, …)
 * and asks the node agent, over its unix socket, to put the pod's redirect rules in place
 * before the pod starts. It is on every pod's start path: node built-ins only, one HTTP
 * request, and a hard deadline so pod creation never hangs on ambit.
 *
 * The decisions (what to ask, what to answer) are pure functions exported for tests; the
 * process entry at the bottom is thin I/O around them and runs only when executed.
 */
import http from 'node:http';
import { realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';

export const PLUGIN_TYPE = 'ambit-cni';
/** Spec versions this plugin speaks; VERSION reports them. */
export const SUPPORTED_VERSIONS: readonly string[] = ['0.4.0', '1.0.0', '1.1.0'];
export const PLUGIN_CNI_VERSION = '1.1.0';
export const DEFAULT_AGENT_SOCKET = '/var/run/ambit/cni.sock';
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Largest agent answer read; anything bigger is not an answer the protocol defines. */
const MAX_ANSWER_BYTES = 64 * 1024;

/** CNI well-known error codes (spec 1.0 §5 "Error", 1.1 STATUS). */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODING_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  NOT_AVAILABLE: 50,
  NOT_AVAILABLE_LIMITED: 51,
} as const;

/** A failure that is reported as a CNI error result. */
export class PluginFailure extends Error {
  constructor(
    readonly code: number,
    readonly msg: string,
    readonly details?: string,
  ) {
    super(msg);
    this.name = 'PluginFailure';
  }
}

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'VERSION';
const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'VERSION'];
const isCommand = (c: string | undefined): c is Command => (COMMANDS as readonly (string | undefined)[]).includes(c);

/** The plugin's own configuration after validation. */
export interface PluginConfig {
  cniVersion: string;
  name: string;
  agentSocket: string;
  timeoutMs: number;
  prevResult?: Record<string, unknown>;
}

/** The body the node agent receives for ADD and CHECK (DEL omits ifname and ips). */
export interface AgentPodRequest {
  containerId: string;
  netns: string;
  ifname?: string;
  podNamespace: string;
  podName: string;
  podUid: string;
  ips?: string[];
}

export interface AgentCall {
  method: 'GET' | 'POST';
  path: string;
  body?: AgentPodRequest;
}

/** What one invocation will do, decided from env and stdin alone. */
export type Plan =
  | { kind: 'print'; stdout: string; log?: string } // VERSION, or nothing to ask the agent
  | { kind: 'call'; command: Exclude<Command, 'VERSION'>; config: PluginConfig; call: AgentCall; checkNetns?: string; onSuccess: string };

/** How the agent request ended. */
export type AgentOutcome =
  | { kind: 'answer'; status: number; body: string }
  | { kind: 'unreachable'; error: string }
  | { kind: 'timeout' };

/** What the process prints and how it exits. */
export interface Reply {
  stdout: string;
  exitCode: 0 | 1;
  log?: string;
}

type Env = Record<string, string | undefined>;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The cniVersion to stamp on an error: the configuration's if it has one (spec: "same value as provided"). */
export function errorVersion(stdin: string): string {
  try {
    const v: unknown = JSON.parse(stdin);
    if (isObject(v) && typeof v.cniVersion === 'string' && v.cniVersion !== '') return v.cniVersion;
  } catch {
    // undecodable: fall back to ours
  }
  return PLUGIN_CNI_VERSION;
}

/** Formats a CNI error result (stdout, exit 1). */
export function errorResult(cniVersion: string, f: PluginFailure): string {
  const out: Record<string, unknown> = { cniVersion, code: f.code, msg: f.msg };
  if (f.details) out.details = f.details;
  return JSON.stringify(out);
}

/** Parses CNI_ARGS ("K=V;K=V"); an entry without "=" is an invalid environment variable. */
export function parseCniArgs(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new PluginFailure(CniCode.INVALID_ENV, `CNI_ARGS: invalid pair ${JSON.stringify(pair)}`, 'CNI_ARGS must be K=V pairs separated by ";"');
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Validates the configuration read from stdin (everything but prevResult semantics). */
export function parseConfig(stdin: string): PluginConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw new PluginFailure(CniCode.DECODING_FAILURE, 'failed to decode the network configuration on stdin', (err as Error).message);
  }
  if (!isObject(raw)) throw new PluginFailure(CniCode.DECODING_FAILURE, 'the network configuration on stdin is not a JSON object');
  const { cniVersion, name, type, agentSocket, timeoutMs, prevResult } = raw;
  if (typeof cniVersion !== 'string' || !SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw new PluginFailure(
      CniCode.INCOMPATIBLE_VERSION,
      `incompatible CNI version ${JSON.stringify(cniVersion ?? null)}`,
      `ambit-cni supports ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  if (type !== PLUGIN_TYPE) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, `configuration "type" is ${JSON.stringify(type ?? null)}, expected "${PLUGIN_TYPE}"`);
  }
  if (typeof name !== 'string' || name === '') {
    throw new PluginFailure(CniCode.INVALID_CONFIG, 'configuration has no network "name"');
  }
  if (agentSocket !== undefined && (typeof agentSocket !== 'string' || !agentSocket.startsWith('/'))) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, `"agentSocket" must be an absolute path, got ${JSON.stringify(agentSocket)}`);
  }
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, `"timeoutMs" must be a positive number, got ${JSON.stringify(timeoutMs)}`);
  }
  if (prevResult !== undefined && !isObject(prevResult)) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, '"prevResult" is not an object');
  }
  return {
    cniVersion,
    name,
    agentSocket: (agentSocket as string | undefined) ?? DEFAULT_AGENT_SOCKET,
    timeoutMs: (timeoutMs as number | undefined) ?? DEFAULT_TIMEOUT_MS,
    prevResult: prevResult as Record<string, unknown> | undefined,
  };
}

/**
 * The pod's addresses from prevResult, without prefix length. IPs bound to a host-side
 * interface (an `interfaces` entry without `sandbox`) are not the pod's and are left out.
 */
export function podIps(prevResult: Record<string, unknown> | undefined): string[] {
  if (!prevResult) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, 'no prevResult: ambit-cni is a chained plugin and must come after an interface plugin in the conflist');
  }
  const ips = prevResult.ips;
  if (!Array.isArray(ips) || ips.length === 0) {
    throw new PluginFailure(CniCode.INVALID_CONFIG, 'prevResult has no IP addresses', 'the plugins before ambit-cni must assign the pod an IP');
  }
  const interfaces = Array.isArray(prevResult.interfaces) ? (prevResult.interfaces as unknown[]) : [];
  const out: string[] = [];
  for (const ip of ips) {
    const address = isObject(ip) ? ip.address : undefined;
    const addr = typeof address === 'string' ? address.split('/')[0] : '';
    if (!isIP(addr)) throw new PluginFailure(CniCode.INVALID_CONFIG, `prevResult has an invalid IP address ${JSON.stringify(address ?? null)}`);
    const iface = isObject(ip) && typeof ip.interface === 'number' ? interfaces[ip.interface] : undefined;
    if (isObject(iface) && !iface.sandbox) continue; // host-side address
    if (!out.includes(addr)) out.push(addr);
  }
  if (out.length === 0) throw new PluginFailure(CniCode.INVALID_CONFIG, 'prevResult has no IP address on a container interface');
  return out;
}

function requireEnv(env: Env, names: string[]): void {
  const missing = names.filter((n) => !env[n]);
  if (missing.length > 0) throw new PluginFailure(CniCode.INVALID_ENV, `required environment variables missing: ${missing.join(', ')}`);
  if (names.includes('CNI_CONTAINERID') && !CONTAINER_ID.test(env.CNI_CONTAINERID ?? '')) {
    throw new PluginFailure(CniCode.INVALID_ENV, `CNI_CONTAINERID ${JSON.stringify(env.CNI_CONTAINERID)} has invalid characters`);
  }
}

/** Decides what this invocation does; throws PluginFailure for anything invalid. */
export function plan(env: Env, stdin: string): Plan {
  const command = env.CNI_COMMAND;
  if (!isCommand(command)) {
    throw new PluginFailure(
      CniCode.INVALID_ENV,
      command ? `CNI_COMMAND ${JSON.stringify(command)} is not supported` : 'required environment variables missing: CNI_COMMAND',
      `CNI_COMMAND must be one of ${COMMANDS.join(', ')}`,
    );
  }
  if (command === 'VERSION') {
    return { kind: 'print', stdout: JSON.stringify({ cniVersion: PLUGIN_CNI_VERSION, supportedVersions: SUPPORTED_VERSIONS }) };
  }
  const config = parseConfig(stdin);
  if (command === 'STATUS') {
    if (config.cniVersion !== '1.1.0') {
      throw new PluginFailure(CniCode.INCOMPATIBLE_VERSION, `STATUS needs cniVersion 1.1.0, the configuration has ${config.cniVersion}`);
    }
    return { kind: 'call', command, config, call: { method: 'GET', path: '/v1/status' }, onSuccess: '' };
  }

  requireEnv(env, command === 'DEL' ? ['CNI_CONTAINERID', 'CNI_IFNAME'] : ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']);
  const args = parseCniArgs(env.CNI_ARGS);
  const pod = {
    containerId: env.CNI_CONTAINERID as string,
    netns: env.CNI_NETNS ?? '',
    podNamespace: args.K8S_POD_NAMESPACE ?? '',
    podName: args.K8S_POD_NAME ?? '',
    podUid: args.K8S_POD_UID ?? '',
  };
  const passthrough = command === 'ADD' ? JSON.stringify({ ...config.prevResult, cniVersion: config.cniVersion }) : '';
  // Validated before deciding anything else: a broken chain is an error even for non-pods.
  const ips = command === 'DEL' ? undefined : podIps(config.prevResult);
  if (!pod.podNamespace || !pod.podName) {
    // Not a Kubernetes pod (no K8S_POD_* args): nothing for ambient to capture.
    return { kind: 'print', stdout: passthrough, log: `ambit-cni: ${command} ${pod.containerId}: no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS, not a pod; nothing to do` };
  }
  if (command === 'DEL') {
    return { kind: 'call', command, config, call: { method: 'POST', path: '/v1/cni/del', body: pod }, onSuccess: '' };
  }
  const body: AgentPodRequest = { containerId: pod.containerId, netns: pod.netns, ifname: env.CNI_IFNAME, podNamespace: pod.podNamespace, podName: pod.podName, podUid: pod.podUid, ips };
  return {
    kind: 'call',
    command,
    config,
    call: { method: 'POST', path: command === 'ADD' ? '/v1/cni/add' : '/v1/cni/check', body },
    checkNetns: pod.netns,
    onSuccess: passthrough,
  };
}

function agentError(body: string): string | undefined {
  try {
    const v: unknown = JSON.parse(body);
    if (isObject(v) && typeof v.error === 'string') return v.error;
  } catch {
    // not JSON: use the status line
  }
  return undefined;
}

/** Turns the agent's answer into what the plugin prints. */
export function interpret(p: Extract<Plan, { kind: 'call' }>, outcome: AgentOutcome): Reply {
  const { command, config, call } = p;
  const where = `node agent at ${config.agentSocket}`;
  const subject = call.body ? ` for pod ${call.body.podNamespace}/${call.body.podName}` : '';
  const ok: Reply = { stdout: p.onSuccess, exitCode: 0 };
  const fail = (code: number, msg: string, details?: string): Reply => ({
    stdout: errorResult(config.cniVersion, new PluginFailure(code, msg, details)),
    exitCode: 1,
  });

  let problem: { transient: boolean; msg: string; details?: string } | undefined;
  if (outcome.kind === 'timeout') {
    problem = { transient: true, msg: `${where} did not answer ${command}${subject} within ${config.timeoutMs} ms`, details: `${call.method} ${call.path}` };
  } else if (outcome.kind === 'unreachable') {
    problem = { transient: true, msg: `${where} is not reachable: ${outcome.error}`, details: `${call.method} ${call.path}; is the ambit node agent running?` };
  } else if (outcome.status < 200 || outcome.status > 299) {
    const reason = agentError(outcome.body) ?? `HTTP ${outcome.status}`;
    problem = {
      transient: outcome.status === 503 || outcome.status === 429,
      msg: `${where} refused ${command}${subject}: ${reason}`,
      details: `${call.method} ${call.path} answered ${outcome.status}`,
    };
  }

  if (command === 'DEL') {
    // DEL must succeed whatever happens: the agent also reconciles pods it no longer sees.
    return problem ? { ...ok, log: `ambit-cni: DEL${subject}: ${problem.msg} (ignored)` } : ok;
  }
  if (command === 'STATUS') {
    return problem ? fail(CniCode.NOT_AVAILABLE, problem.msg, problem.details) : ok;
  }
  if (problem) return fail(problem.transient ? CniCode.TRY_AGAIN_LATER : CniCode.IO_FAILURE, problem.msg, problem.details);
  if (command === 'ADD' && outcome.kind === 'answer') {
    let answer: unknown;
    try {
      answer = JSON.parse(outcome.body);
    } catch {
      answer = undefined;
    }
    if (!isObject(answer) || typeof answer.ambient !== 'boolean') {
      return fail(CniCode.DECODING_FAILURE, `${where} sent an undecodable answer to ADD${subject}`, 'expected {"ambient": boolean}');
    }
  }
  return ok;
}

/** One HTTP/1.1 request over the agent's unix socket, ended at the deadline whatever happens. */
export function callAgent(socketPath: string, call: AgentCall, timeoutMs: number): Promise<AgentOutcome> {
  return new Promise((resolve) => {
    const payload = call.body ? JSON.stringify(call.body) : '';
    let settled = false;
    const finish = (o: AgentOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(o);
    };
    const req = http.request(
      {
        socketPath,
        method: call.method,
        path: call.path,
        agent: false,
        headers: { host: 'ambit-agent', 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER_BYTES) finish({ kind: 'answer', status: 502, body: JSON.stringify({ error: `answer larger than ${MAX_ANSWER_BYTES} bytes` }) });
          else chunks.push(c);
        });
        res.on('end', () => finish({ kind: 'answer', status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'unreachable', error: e.code ?? e.message }));
      },
    );
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => finish({ kind: 'unreachable', error: e.code ?? e.message }));
    req.end(payload);
  });
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs one invocation: env and stdin in, reply out. */
export async function run(env: Env, stdin: string): Promise<Reply> {
  const version = errorVersion(stdin);
  let p: Plan;
  try {
    p = plan(env, stdin);
    if (p.kind === 'call' && p.checkNetns !== undefined) {
      try {
        await stat(p.checkNetns);
      } catch (err) {
        throw new PluginFailure(CniCode.INVALID_ENV, `CNI_NETNS ${p.checkNetns} does not exist`, (err as NodeJS.ErrnoException).code);
      }
    }
  } catch (err) {
    if (err instanceof PluginFailure) return { stdout: errorResult(version, err), exitCode: 1 };
    throw err;
  }
  if (p.kind === 'print') return { stdout: p.stdout, exitCode: 0, log: p.log };
  return interpret(p, await callAgent(p.config.agentSocket, p.call, p.config.timeoutMs));
}

async function main(): Promise<void> {
  let stdin: string;
  try {
    stdin = await readStdin();
  } catch (err) {
    process.stdout.write(errorResult(PLUGIN_CNI_VERSION, new PluginFailure(CniCode.IO_FAILURE, 'failed to read the network configuration from stdin', (err as Error).message)));
    process.exit(1);
  }
  let reply: Reply;
  try {
    reply = await run(process.env, stdin);
  } catch (err) {
    reply = { stdout: errorResult(errorVersion(stdin), new PluginFailure(CniCode.IO_FAILURE, `ambit-cni failed: ${(err as Error).message}`)), exitCode: 1 };
  }
  if (reply.log) process.stderr.write(reply.log + '\n');
  // stdout is a pipe or file here: writes are synchronous on Linux, exiting right after is safe.
  if (reply.stdout) process.stdout.write(reply.stdout);
  process.exit(reply.exitCode);
}

function isEntry(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntry()) void main();
