/**
 * A small CNI runtime: what containerd/CRI-O do with a conflist (CNI spec 1.0 §3, 1.1 STATUS).
 * ambit's local mode creates pods through it exactly as kubelet+containerd would, and tests
 * run real plugins with it. Plugins run as child processes, asynchronously, optionally inside
 * the node's netns (`ip netns exec`), since "the runtime must execute the plugin in the
 * runtime's networking domain".
 */
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';

export interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips: { address: string /* CIDR */; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
  dns?: object;
}

export interface RuntimeOptions {
  /** directories searched for plugin binaries, in order; also CNI_PATH */
  binDirs: string[];
  /** run plugins inside this netns (the node's): a name (`ip netns exec NAME`) or a path (`nsenter --net=PATH`); null = current */
  hostNetns?: string | null;
  /** per plugin invocation; the plugin is killed after it (default 60 s) */
  timeoutMs?: number;
  /** told after every plugin invocation how long it took, from spawn to exit (for benches and tracing) */
  onExec?: (e: PluginExec) => void;
}

/** One plugin invocation as the runtime saw it. */
export interface PluginExec {
  plugin: string;
  command: string;
  ms: number;
  /** exit code; null when the plugin was killed or could not be started */
  code: number | null;
}

/** One plugin entry of a conflist. Unknown keys are passed to the plugin unchanged. */
export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface Conflist {
  cniVersion: string;
  name: string;
  disableCheck: boolean;
  plugins: PluginConf[];
  /** where it came from, for messages */
  source: string;
}

/** The attachment: one container's interface on one network. */
export interface Attachment {
  containerId: string;
  /** netns path, or a bare name meaning /run/netns/NAME */
  netns: string;
  ifname: string;
  /** generic arguments, passed as CNI_ARGS */
  args?: Record<string, string>;
  /** capability arguments, passed as runtimeConfig to plugins declaring the capability */
  capabilityArgs?: Record<string, unknown>;
}

/** Code of failures with no error result from a plugin: not found, killed, timed out, crashed. */
export const RUNTIME_FAILURE = 999;

/** A CNI error result, or a runtime-side failure (code RUNTIME_FAILURE), naming the plugin. */
export class CniError extends Error {
  /** further failures: DELs of an ADD's rollback, or the other plugins of a DEL */
  related: CniError[] = [];
  constructor(
    readonly code: number,
    readonly msg: string,
    readonly plugin: string,
    readonly details?: string,
  ) {
    super(`${plugin ? `CNI plugin ${plugin}: ` : ''}${msg} (code ${code})${details ? `: ${details}` : ''}`);
    this.name = 'CniError';
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const SEMVER = /^(\d+)\.(\d+)\.(\d+)$/;
/** Spec versions this runtime knows how to drive. */
const RUNTIME_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

function versionAtLeast(v: string, min: string): boolean {
  const a = SEMVER.exec(v);
  const b = SEMVER.exec(min);
  if (!a || !b) return false;
  for (let i = 1; i <= 3; i++) {
    if (Number(a[i]) !== Number(b[i])) return Number(a[i]) > Number(b[i]);
  }
  return true;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const configError = (source: string, msg: string): CniError => new CniError(7, `${source}: ${msg}`, '');

function validateList(raw: unknown, source: string): Conflist {
  if (!isObject(raw)) throw configError(source, 'not a JSON object');
  const { name, cniVersion, cniVersions, disableCheck, plugins } = raw;
  if (typeof name !== 'string' || !NAME.test(name)) throw configError(source, `"name" ${JSON.stringify(name ?? null)} is missing or invalid`);
  if (typeof cniVersion !== 'string' || !SEMVER.test(cniVersion)) throw configError(source, `"cniVersion" ${JSON.stringify(cniVersion ?? null)} is missing or not a version`);
  // 1.1: "cniVersions" lets a config offer several; use the newest this runtime drives.
  let version = cniVersion;
  if (Array.isArray(cniVersions)) {
    const usable = cniVersions.filter((v): v is string => typeof v === 'string' && RUNTIME_VERSIONS.includes(v));
    for (const v of usable) if (versionAtLeast(v, version)) version = v;
  }
  if (!Array.isArray(plugins) || plugins.length === 0) throw configError(source, '"plugins" must be a non-empty list');
  plugins.forEach((p, i) => {
    if (!isObject(p) || typeof p.type !== 'string' || p.type === '' || /[/\\]/.test(p.type)) {
      throw configError(source, `plugins[${i}].type is missing or not a plain executable name`);
    }
  });
  return {
    cniVersion: version,
    name,
    disableCheck: disableCheck === true || disableCheck === 'true',
    plugins: plugins as PluginConf[],
    source,
  };
}

/** Parses and validates a conflist: name, cniVersion, plugins[].type. */
export function parseConflist(text: string, source: string): Conflist {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CniError(6, `${source}: invalid JSON: ${(err as Error).message}`, '');
  }
  return validateList(raw, source);
}

function toList(conflist: object | string): Conflist {
  if (typeof conflist === 'string') return parseConflist(conflist, 'conflist');
  const source = typeof (conflist as { source?: unknown }).source === 'string' ? (conflist as Conflist).source : 'conflist';
  return validateList(conflist, source);
}

/** The config a plugin receives on stdin (spec 1.0 §3 "Deriving execution configuration"). */
export function executionConfig(list: Conflist, plugin: PluginConf, prevResult?: CniResult, capabilityArgs?: Record<string, unknown>): Record<string, unknown> {
  const { capabilities, name: _n, cniVersion: _v, ...rest } = plugin;
  const conf: Record<string, unknown> = { cniVersion: list.cniVersion, name: list.name, ...rest };
  const runtimeConfig: Record<string, unknown> = {};
  for (const [cap, supported] of Object.entries(capabilities ?? {})) {
    if (supported && capabilityArgs && Object.hasOwn(capabilityArgs, cap)) runtimeConfig[cap] = capabilityArgs[cap];
  }
  if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  if (prevResult) conf.prevResult = prevResult;
  return conf;
}

const netnsPath = (netns: string): string => (netns.includes('/') ? netns : `/run/netns/${netns}`);

function attachmentEnv(c: Attachment, withNetns: boolean): Record<string, string> {
  if (!NAME.test(c.containerId)) throw new CniError(4, `invalid container ID ${JSON.stringify(c.containerId)}`, '');
  if (!c.ifname || c.ifname.length > 15 || c.ifname === '.' || c.ifname === '..' || /[/:\s]/.test(c.ifname)) {
    throw new CniError(4, `invalid interface name ${JSON.stringify(c.ifname)}`, '');
  }
  const pairs = Object.entries(c.args ?? {});
  for (const [k, v] of pairs) {
    if (!k || /[=;]/.test(k) || v.includes(';')) throw new CniError(4, `CNI_ARGS entry ${JSON.stringify(`${k}=${v}`)} cannot be encoded`, '');
  }
  const env: Record<string, string> = { CNI_CONTAINERID: c.containerId, CNI_IFNAME: c.ifname, CNI_ARGS: pairs.map(([k, v]) => `${k}=${v}`).join(';') };
  if (withNetns && c.netns) env.CNI_NETNS = netnsPath(c.netns);
  return env;
}

async function findPlugin(type: string, binDirs: string[]): Promise<string> {
  for (const dir of binDirs) {
    const path = join(dir, type);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // next dir
    }
  }
  throw new CniError(RUNTIME_FAILURE, `failed to find plugin "${type}" in path [${binDirs.join(' ')}]`, type);
}

/** Runs one plugin command; resolves with its stdout, rejects with a CniError. */
async function execPlugin(type: string, command: string, conf: object, env: Record<string, string>, opts: RuntimeOptions): Promise<string> {
  const path = await findPlugin(type, opts.binDirs);
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('CNI_')) childEnv[k] = v;
  Object.assign(childEnv, env, { CNI_COMMAND: command, CNI_PATH: opts.binDirs.join(':') });
  const host = opts.hostNetns;
  const [file, args] = !host ? [path, []] : host.includes('/') ? ['nsenter', [`--net=${host}`, '--', path]] : ['ip', ['netns', 'exec', host, path]];
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const started = performance.now();

  const { code, signal, stdout, stderr, timedOut } = await new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string; timedOut: boolean }>((resolve, reject) => {
    const child = spawn(file, args, { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdin.on('error', () => undefined); // a plugin may exit without reading stdin
    child.on('error', (e) => {
      clearTimeout(timer);
      opts.onExec?.({ plugin: type, command, ms: performance.now() - started, code: null });
      reject(new CniError(RUNTIME_FAILURE, `cannot run ${file}: ${e.message}`, type));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
    child.stdin.end(JSON.stringify(conf));
  });
  opts.onExec?.({ plugin: type, command, ms: performance.now() - started, code });

  if (timedOut) throw new CniError(RUNTIME_FAILURE, `${command} did not finish within ${timeoutMs} ms`, type, stderr.trim() || undefined);
  if (code === 0) return stdout;
  let result: unknown;
  try {
    result = JSON.parse(stdout);
  } catch {
    result = undefined;
  }
  if (isObject(result) && typeof result.code === 'number') {
    const details = typeof result.details === 'string' && result.details ? result.details : stderr.trim() || undefined;
    throw new CniError(result.code, typeof result.msg === 'string' ? result.msg : '', type, details);
  }
  const how = signal ? `was killed by ${signal}` : `exited with ${code}`;
  throw new CniError(RUNTIME_FAILURE, `${command} ${how} without an error result`, type, (stderr.trim() || stdout.trim()) || undefined);
}

function decodeResult(type: string, stdout: string): CniResult {
  let v: unknown;
  try {
    v = JSON.parse(stdout);
  } catch {
    v = undefined;
  }
  if (!isObject(v)) throw new CniError(6, 'ADD printed no decodable result', type, stdout.slice(0, 200) || '(empty output)');
  if (!Array.isArray(v.ips)) v.ips = [];
  return v as unknown as CniResult;
}

const asCniError = (err: unknown, plugin: string): CniError => (err instanceof CniError ? err : new CniError(RUNTIME_FAILURE, (err as Error).message ?? String(err), plugin));

/** DEL for the given plugins in the given order; returns the failures (it never stops early). */
async function delPlugins(list: Conflist, plugins: PluginConf[], c: Attachment, opts: RuntimeOptions, prevResult?: CniResult): Promise<CniError[]> {
  const env = attachmentEnv(c, true);
  const errors: CniError[] = [];
  for (const plugin of plugins) {
    try {
      await execPlugin(plugin.type, 'DEL', executionConfig(list, plugin, prevResult, c.capabilityArgs), env, opts);
    } catch (err) {
      errors.push(asCniError(err, plugin.type));
    }
  }
  return errors;
}

/**
 * Runs ADD through every plugin of a conflist in order, passing prevResult along, and returns
 * the final result. On failure runs DEL for the plugins already called (including the one that
 * failed, which may have half-applied), in reverse, and throws the ADD's CniError with the
 * rollback's failures in `related`.
 */
export async function cniAdd(conflist: object | string, c: Attachment, opts: RuntimeOptions): Promise<CniResult> {
  const list = toList(conflist);
  const env = attachmentEnv(c, true);
  let prev: CniResult | undefined;
  for (let i = 0; i < list.plugins.length; i++) {
    const plugin = list.plugins[i];
    try {
      const stdout = await execPlugin(plugin.type, 'ADD', executionConfig(list, plugin, prev, c.capabilityArgs), env, opts);
      prev = decodeResult(plugin.type, stdout);
    } catch (err) {
      const failure = asCniError(err, plugin.type);
      failure.related = await delPlugins(list, list.plugins.slice(0, i + 1).reverse(), c, opts, prev);
      throw failure;
    }
  }
  return prev as CniResult; // plugins is never empty
}

/** Runs DEL through every plugin in reverse order; keeps going after failures and throws the first, the others in `related`. */
export async function cniDel(conflist: object | string, c: Attachment, opts: RuntimeOptions, prevResult?: CniResult): Promise<void> {
  const list = toList(conflist);
  const errors = await delPlugins(list, [...list.plugins].reverse(), c, opts, prevResult);
  if (errors.length > 0) {
    const [first, ...rest] = errors;
    first.related = rest;
    throw first;
  }
}

/** Runs CHECK through every plugin in order with the ADD's result; stops at the first error. Skipped when disableCheck. */
export async function cniCheck(conflist: object | string, c: Attachment, opts: RuntimeOptions, prevResult: CniResult): Promise<void> {
  const list = toList(conflist);
  if (list.disableCheck) return;
  if (!versionAtLeast(list.cniVersion, '0.4.0')) throw new CniError(1, `${list.source}: cniVersion ${list.cniVersion} does not support CHECK`, '');
  const env = attachmentEnv(c, true);
  for (const plugin of list.plugins) {
    try {
      await execPlugin(plugin.type, 'CHECK', executionConfig(list, plugin, prevResult, c.capabilityArgs), env, opts);
    } catch (err) {
      throw asCniError(err, plugin.type);
    }
  }
}

/** Asks every plugin whether it can serve ADD (spec 1.1 STATUS); a no-op for configs older than 1.1.0, as in libcni. */
export async function cniStatus(conflist: object | string, opts: RuntimeOptions): Promise<void> {
  const list = toList(conflist);
  if (!versionAtLeast(list.cniVersion, '1.1.0')) return;
  for (const plugin of list.plugins) {
    try {
      await execPlugin(plugin.type, 'STATUS', executionConfig(list, plugin), {}, opts);
    } catch (err) {
      throw asCniError(err, plugin.type);
    }
  }
}
