// Installs, reads and removes the redirect rule set inside a pod's network namespace.
// Everything runs asynchronously: this code lives in processes that also proxy traffic,
// and a synchronous exec would stall every connection they carry.
import { execFile } from 'node:child_process';
import { isDeepStrictEqual } from 'node:util';
import {
  CHAIN_PREFIX,
  CONNMARK,
  EXPECTED_IP_RULE,
  TABLES,
  MARK_MASK,
  ROUTE_TABLE,
  expectedChainRules,
  ipLines,
  isOurIpRule,
  isOurRoute,
  normaliseRule,
  parseIptablesSave,
  parseSavedTables,
  podRuleSet,
  chainRestoreText,
  removalText,
  tablesEmptyAfterRemoval,
  type ChainRule,
  type Family,
  type RedirectOptions,
  type Table,
} from './rules.js';

export interface CommandRunner {
  (file: string, args: string[], input?: string): Promise<{ stdout: string; stderr: string }>;
}

const PACKAGE_OF: Record<string, string> = {
  iptables: 'iptables',
  'iptables-save': 'iptables',
  'iptables-restore': 'iptables',
  ip6tables: 'iptables',
  'ip6tables-save': 'iptables',
  'ip6tables-restore': 'iptables',
  ip: 'iproute2',
  nsenter: 'util-linux',
  nft: 'nftables',
};

/** The message used whenever a needed command is absent. */
export function missingToolMessage(tool: string): string {
  // iptables-save, ip6tables-restore, ... all come with the iptables package.
  const name = PACKAGE_OF[tool] === 'iptables' ? 'iptables' : tool;
  return `ambit needs ${name}: run \`apt-get install -y ${PACKAGE_OF[tool] ?? tool}\``;
}

/** Error thrown when a required command is not installed. */
export class MissingToolError extends Error {
  constructor(readonly tool: string) {
    super(missingToolMessage(tool));
    this.name = 'MissingToolError';
  }
}

/** Error thrown when a command exits non-zero; carries its stderr for callers that inspect it. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
    readonly code: number | string | null,
  ) {
    super(`${command} failed${code !== null ? ` (exit ${code})` : ''}: ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

/** Default runner: async execFile, stdin fed from `input`, errors name the command and its stderr. */
export const defaultRunner: CommandRunner = (file, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { maxBuffer: 64 * 1024 * 1024, timeout: 30_000, killSignal: 'SIGKILL', encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: number | string };
        if (e.code === 'ENOENT') return reject(new MissingToolError(file));
        // nsenter reports a missing inner command like this, exit 127.
        const inner = /failed to execute (\S+): No such file or directory/.exec(stderr);
        if (inner) return reject(new MissingToolError(inner[1]!));
        const code = typeof e.code === 'number' || typeof e.code === 'string' ? e.code : null;
        reject(new CommandError([file, ...args].join(' '), stderr || e.message, code));
      },
    );
    // Always close stdin so commands that might read it never wait.
    child.stdin?.on('error', () => {
      /* the process may exit before reading; its exit status reports the problem */
    });
    child.stdin?.end(input ?? '');
  });

const ns = (netnsPath: string, file: string, args: string[]): [string, string[]] => [
  'nsenter',
  [`--net=${netnsPath}`, file, ...args],
];

function inNs(run: CommandRunner, netnsPath: string) {
  return (file: string, args: string[], input?: string) => {
    const [f, a] = ns(netnsPath, file, args);
    return run(f, a, input);
  };
}

const iptablesCmd = (family: Family, tool: 'save' | 'restore'): string =>
  `${family === 4 ? 'iptables' : 'ip6tables'}-${tool}`;
const ipFamily = (family: Family): string[] => (family === 4 ? [] : ['-6']);
const errText = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const MARK = `0x${CONNMARK.toString(16)}/0x${MARK_MASK.toString(16)}`;

type Exec = ReturnType<typeof inNs>;

/**
 * When reading or removing, an IPv6 failure means "nothing there" (IPv6 may be off in the
 * pod); when installing with ipv6 requested it is a real error.
 */
const tolerated = (err: unknown, family: Family, lenient: boolean): boolean =>
  lenient && family === 6 && !(err instanceof MissingToolError);

/** Reads iptables-save (or ip6tables-save) in the netns. */
async function save(exec: Exec, family: Family, lenient: boolean): Promise<string | undefined> {
  try {
    return (await exec(iptablesCmd(family, 'save'), [])).stdout;
  } catch (err) {
    if (tolerated(err, family, lenient)) return undefined;
    throw err;
  }
}

/** `ip rule show` lines that are ours; tolerates IPv6 being unavailable. */
async function ourIpRules(exec: Exec, family: Family, lenient: boolean): Promise<string[]> {
  try {
    return ipLines((await exec('ip', [...ipFamily(family), 'rule', 'show'])).stdout).filter(isOurIpRule);
  } catch (err) {
    if (tolerated(err, family, lenient)) return [];
    throw err;
  }
}

/** Routes in our table; a table that does not exist yet is simply empty. */
async function ourTableRoutes(exec: Exec, family: Family, lenient: boolean): Promise<string[]> {
  try {
    return ipLines((await exec('ip', [...ipFamily(family), 'route', 'show', 'table', String(ROUTE_TABLE)])).stdout);
  } catch (err) {
    if (err instanceof MissingToolError) throw err;
    if (/table does not exist/i.test(errText(err)) || tolerated(err, family, lenient)) return [];
    throw err;
  }
}

/**
 * The restore input to send: the full rule set, minus jumps that already exist (so a
 * second install adds none), plus deletions for surplus copies of a jump.
 */
function installText(full: string, existing: ChainRule[]): string {
  const out: string[] = [];
  let table = '';
  for (const line of full.trimEnd().split('\n')) {
    if (line.startsWith('*')) table = line.slice(1);
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (m && !m[1]!.startsWith(CHAIN_PREFIX)) {
      const rule = normaliseRule(m[2]!);
      const copies = existing.filter((r) => r.table === table && r.chain === m[1] && r.rule === rule).length;
      if (copies >= 1) {
        for (let i = 1; i < copies; i++) out.push(`-D ${m[1]} ${m[2]}`);
        continue;
      }
    }
    out.push(line);
  }
  return out.join('\n') + '\n';
}

/**
 * What an install puts in place. The rule set has two layers: the return path (ip rule, route
 * and the mangle connmark rules), which concerns only ztunnel's own marked connections and
 * changes nothing else in the pod, and the capture (the nat redirects to ztunnel's ports).
 */
type Layers = 'all' | 'return-path' | 'capture';

const LAYER_TABLES: Record<Layers, readonly Table[]> = { all: TABLES, 'return-path': ['mangle'], capture: ['nat'] };

async function installFamily(exec: Exec, family: Family, opts: RedirectOptions, layers: Layers = 'all'): Promise<void> {
  const set = podRuleSet({ ...opts, ipv6: family === 6 });
  const restoreInput = chainRestoreText(opts, family, LAYER_TABLES[layers]);
  const pick = (argv: string[]): boolean => (family === 6) === (argv[0] === '-6');
  const before = parseIptablesSave((await save(exec, family, false)) ?? '');

  if (layers !== 'capture') {
    // Routing first, so by the time capture starts the reply path to ztunnel exists.
    for (const argv of set.ipRoutes.filter(pick)) await exec('ip', argv);
    if ((await ourIpRules(exec, family, false)).length === 0) {
      for (const argv of set.ipRules.filter(pick)) {
        try {
          await exec('ip', argv);
        } catch (err) {
          // Someone added the identical rule meanwhile: that is the state we want.
          if (!/File exists/.test(errText(err))) throw err;
        }
      }
    }
  }
  // One restore per family: atomic, so capture switches on complete or not at all.
  await exec(iptablesCmd(family, 'restore'), ['-w', '10', '--noflush'], installText(restoreInput, before));
}

async function removeFamily(exec: Exec, family: Family): Promise<void> {
  const text = await save(exec, family, true);
  if (text !== undefined) {
    const saved = parseSavedTables(text);
    const removal = removalText(saved);
    if (removal) {
      await exec(iptablesCmd(family, 'restore'), ['-w', '10', '--noflush'], removal);
      // With nf_tables, iptables-restore created whole tables that were absent before;
      // drop them when nothing else lives there so the netns is back where it was.
      if (/\(nf_tables\)/.test(text)) {
        for (const table of tablesEmptyAfterRemoval(saved)) {
          try {
            await exec('nft', ['delete', 'table', family === 4 ? 'ip' : 'ip6', table]);
          } catch {
            // Best effort: an empty ACCEPT-only table changes no traffic.
          }
        }
      }
    }
  }
  for (const line of await ourIpRules(exec, family, true)) {
    const pref = /^(\d+):/.exec(line)?.[1];
    const args = [...ipFamily(family), 'rule', 'del', ...(pref ? ['pref', pref] : []), 'fwmark', MARK, 'lookup', String(ROUTE_TABLE)];
    await exec('ip', args);
  }
  if ((await ourTableRoutes(exec, family, true)).some(isOurRoute)) {
    const dst = family === 4 ? '0.0.0.0/0' : '::/0';
    await exec('ip', [...ipFamily(family), 'route', 'del', 'local', dst, 'dev', 'lo', 'table', String(ROUTE_TABLE)]);
  }
}

/** Installs the rule set in the pod netns; idempotent (running twice leaves one copy of every rule, ip rules not duplicated). */
export async function installPodRules(
  netnsPath: string,
  opts: RedirectOptions = {},
  run: CommandRunner = defaultRunner,
): Promise<void> {
  podRuleSet(opts); // validate options before touching anything
  const exec = inNs(run, netnsPath);
  try {
    await installFamily(exec, 4, opts);
    if (opts.ipv6) await installFamily(exec, 6, opts);
  } catch (err) {
    // Never leave a half-installed set: a pod with capture but no return route is broken.
    try {
      await removePodRules(netnsPath, run);
    } catch (rollbackErr) {
      throw new Error(`${errText(err)}; rollback also failed: ${errText(rollbackErr)}`, { cause: err });
    }
    throw err;
  }
}

/** Removes every rule, chain, ip rule and route this module installs; no error when nothing is installed. */
export async function removePodRules(netnsPath: string, run: CommandRunner = defaultRunner): Promise<void> {
  const exec = inNs(run, netnsPath);
  await removeFamily(exec, 4);
  // Always try v6 too: remove takes no options and must also clean up an ipv6 install.
  await removeFamily(exec, 6);
}

export interface InstalledRules {
  chains: ChainRule[];
  ipRules: string[];
  routes: string[];
}

/** Reads back what is installed (our chains, ip rules for our mark, routes in our table); `ipv6` holds the same for IPv6. */
export async function readPodRules(
  netnsPath: string,
  run: CommandRunner = defaultRunner,
): Promise<InstalledRules & { ipv6: InstalledRules }> {
  const exec = inNs(run, netnsPath);
  const read = async (family: Family): Promise<InstalledRules> => ({
    chains: parseIptablesSave((await save(exec, family, true)) ?? ''),
    ipRules: await ourIpRules(exec, family, true),
    routes: await ourTableRoutes(exec, family, true),
  });
  const v4 = await read(4);
  return { ...v4, ipv6: await read(6) };
}

function matches(installed: InstalledRules, opts: RedirectOptions, family: Family): boolean {
  return (
    isDeepStrictEqual(installed.chains, expectedChainRules(opts, family)) &&
    installed.ipRules.length === 1 &&
    installed.ipRules[0] === EXPECTED_IP_RULE &&
    installed.routes.filter(isOurRoute).length === 1
  );
}

/** True when installed rules equal the expected set (used by the CNI CHECK command). */
export async function podRulesInstalled(
  netnsPath: string,
  opts: RedirectOptions = {},
  run: CommandRunner = defaultRunner,
): Promise<boolean> {
  const installed = await readPodRules(netnsPath, run);
  if (!matches(installed, opts, 4)) return false;
  return opts.ipv6 ? matches(installed.ipv6, opts, 6) : true;
}

/** Throws a clear "ambit needs X: run `apt-get install -y PKG`" error when nsenter, iptables or ip is missing. */
export async function checkRedirectTools(run: CommandRunner = defaultRunner): Promise<void> {
  const probes: [string, string[]][] = [
    ['nsenter', ['--version']],
    ['iptables', ['--version']],
    ['iptables-save', ['--version']],
    ['iptables-restore', ['--version']],
    ['ip', ['-V']],
  ];
  for (const [tool, args] of probes) {
    try {
      await run(tool, args);
    } catch (err) {
      if (err instanceof MissingToolError) throw err;
      throw new Error(`${missingToolMessage(tool)} (${tool} ${args.join(' ')}: ${errText(err)})`, { cause: err });
    }
  }
}

/**
 * Installs only the return path (ip rule, route, the mangle connmark rules): what lets ztunnel
 * deliver into the pod and get the replies back. It redirects nothing, so a running pod's
 * traffic is unchanged. With it in place ztunnel can serve the pod; `startPodCapture` then
 * switches capture on. Idempotent; a failed install is rolled back completely.
 */
export async function installReturnPath(
  netnsPath: string,
  opts: RedirectOptions = {},
  run: CommandRunner = defaultRunner,
): Promise<void> {
  podRuleSet(opts);
  const exec = inNs(run, netnsPath);
  try {
    await installFamily(exec, 4, opts, 'return-path');
    if (opts.ipv6) await installFamily(exec, 6, opts, 'return-path');
  } catch (err) {
    try {
      await removePodRules(netnsPath, run);
    } catch (rollbackErr) {
      throw new Error(`${errText(err)}; rollback also failed: ${errText(rollbackErr)}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Switches capture on in a pod whose return path is in place (`installReturnPath`): adds the
 * nat redirects, one atomic restore per family. Afterwards the pod has exactly the full rule
 * set. On failure the redirects are taken out again and the return path stays.
 */
export async function startPodCapture(
  netnsPath: string,
  opts: RedirectOptions = {},
  run: CommandRunner = defaultRunner,
): Promise<void> {
  podRuleSet(opts);
  const exec = inNs(run, netnsPath);
  try {
    await installFamily(exec, 4, opts, 'capture');
    if (opts.ipv6) await installFamily(exec, 6, opts, 'capture');
  } catch (err) {
    try {
      await stopPodCapture(netnsPath, run);
    } catch (rollbackErr) {
      throw new Error(`${errText(err)}; rollback also failed: ${errText(rollbackErr)}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Stops new captures in a pod (its nat redirects go) but keeps the connmark return path,
 * so connections ztunnel already carries for the pod finish normally. Used when a pod
 * leaves the mesh while it runs; removePodRules clears the rest when the pod goes away.
 * Resolves true when there were redirects to remove.
 */
export async function stopPodCapture(netnsPath: string, run: CommandRunner = defaultRunner): Promise<boolean> {
  const exec = inNs(run, netnsPath);
  let removed = false;
  for (const family of [4, 6] as const) {
    const text = await save(exec, family, true);
    if (text === undefined) continue;
    const removal = removalText(parseSavedTables(text).filter((t) => t.table === 'nat'));
    if (!removal) continue;
    await exec(iptablesCmd(family, 'restore'), ['-w', '10', '--noflush'], removal);
    removed = true;
  }
  return removed;
}
