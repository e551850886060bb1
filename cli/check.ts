// `ambit check`: what this machine lacks for local mode, found before anything is created.
// The probes that touch the kernel run in a throwaway network namespace that is always removed.
// Deciding and formatting are pure; the system is reached only through `CheckSystem`.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { CommandError, MissingToolError, defaultRunner, type CommandRunner } from '../shared/redirect/apply.js';
import { closeFd, openNetns, socketPair, tcpSocket } from '../shared/native/index.js';

export type CheckStatus = 'pass' | 'fail' | 'skip';

/** The outcome of one check: what was checked, and if it failed, what to do about it. */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  /** a failure of a required check means local mode cannot run */
  required: boolean;
  /** what was found (a version, a path) or why it was skipped */
  detail?: string;
  /** what to do, when it failed */
  fix?: string;
}

/** Debian's containernetworking-plugins, which local mode chains ambit-cni after. */
export const CNI_BIN_DIR = '/usr/lib/cni';
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback'] as const;

/** The Debian package that ships a command or CNI plugin. */
const PACKAGE_OF: Record<string, string> = {
  ip: 'iproute2',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  'iptables-restore': 'iptables',
  nsenter: 'util-linux',
  nft: 'nftables',
  bridge: 'containernetworking-plugins',
  'host-local': 'containernetworking-plugins',
  loopback: 'containernetworking-plugins',
};

/** Debian packages that provide these commands or plugins, each once. */
export function packagesFor(tools: readonly string[]): string[] {
  return [...new Set(tools.map((t) => PACKAGE_OF[t] ?? t))];
}

/** "run `apt-get install -y PKG…`" for the given commands or plugins. */
export function installHint(tools: readonly string[]): string {
  return `run \`apt-get install -y ${packagesFor(tools).join(' ')}\``;
}

/** Kernel features probed in the throwaway namespace, with the module that provides each. */
export const KERNEL_FEATURES = {
  veth: { name: 'kernel: veth pairs', module: 'veth', config: 'CONFIG_VETH' },
  bridge: { name: 'kernel: bridges', module: 'bridge', config: 'CONFIG_BRIDGE' },
  policyRouting: { name: 'kernel: policy routing (ip rule fwmark)', module: null, config: 'CONFIG_IP_MULTIPLE_TABLES' },
  redirect: { name: 'iptables: nat REDIRECT target', module: 'xt_REDIRECT', config: 'CONFIG_NETFILTER_XT_TARGET_REDIRECT' },
  mark: { name: 'iptables: mark match', module: 'xt_mark', config: 'CONFIG_NETFILTER_XT_MATCH_MARK' },
  connmarkTarget: { name: 'iptables: CONNMARK target', module: 'xt_connmark', config: 'CONFIG_NETFILTER_XT_TARGET_CONNMARK' },
  connmarkMatch: { name: 'iptables: connmark match', module: 'xt_connmark', config: 'CONFIG_NETFILTER_XT_MATCH_CONNMARK' },
} as const;
export type KernelFeature = keyof typeof KERNEL_FEATURES;

/** What to do when the kernel refuses a feature: load its module, or rebuild with its option. */
export function kernelHint(feature: KernelFeature): string {
  const f = KERNEL_FEATURES[feature];
  return f.module ? `load the module: \`modprobe ${f.module}\` (kernel option ${f.config})` : `the kernel needs ${f.config}`;
}

/** True when a Node.js version string (process.versions.node) is 20 or newer. */
export function nodeVersionOk(version: string): boolean {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
  return Number.isInteger(major) && major >= 20;
}

export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;

/** The effective capability set from /proc/self/status text, or null when absent. */
export function parseCapEff(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : null;
}

export function hasCap(capEff: bigint, cap: number): boolean {
  return ((capEff >> BigInt(cap)) & 1n) === 1n;
}

/** Root with CAP_NET_ADMIN and CAP_SYS_ADMIN (netns, veth, iptables); `ambit local` itself insists on uid 0. */
export function privilegeCheck(uid: number | undefined, capEff: bigint | null): CheckResult {
  const name = 'root (CAP_NET_ADMIN, CAP_SYS_ADMIN)';
  const caps = capEff === null ? null : { net: hasCap(capEff, CAP_NET_ADMIN), sys: hasCap(capEff, CAP_SYS_ADMIN) };
  if (uid !== 0) {
    const fix = 'run it as root (e.g. with sudo): local mode creates network namespaces, veths and iptables rules';
    // the capabilities would do for the kernel, but `ambit local` checks for uid 0
    return { name, status: 'fail', required: true, fix, ...(caps?.net && caps.sys ? { detail: 'CAP_NET_ADMIN and CAP_SYS_ADMIN are held, but ambit local runs as uid 0' } : {}) };
  }
  if (caps && !(caps.net && caps.sys)) {
    const lacking = [caps.net ? null : 'CAP_NET_ADMIN', caps.sys ? null : 'CAP_SYS_ADMIN'].filter((c) => c !== null).join(' and ');
    return { name, status: 'fail', required: true, detail: `root without ${lacking}`, fix: 'in a container, run it with `--privileged` (or `--cap-add NET_ADMIN --cap-add SYS_ADMIN`)' };
  }
  return { name, status: 'pass', required: true };
}

/** One line per check: `✓ name: found`, `✗ name — what to do (why)`, `- name — not checked: why`. */
export function formatResult(r: CheckResult): string {
  const name = r.required ? r.name : `${r.name} (optional)`;
  if (r.status === 'pass') return `✓ ${name}${r.detail ? `: ${r.detail}` : ''}`;
  if (r.status === 'skip') return `- ${name} — not checked: ${r.detail ?? 'an earlier check failed'}`;
  const what = [r.fix, r.detail && `(${r.detail})`].filter(Boolean).join(' ');
  return `✗ ${name}${what ? ` — ${what}` : ''}`;
}

/** Whether every required check passed (a skipped required check did not). */
export function allRequiredPassed(results: readonly CheckResult[]): boolean {
  return results.every((r) => !r.required || r.status === 'pass');
}

/** Every line, then a verdict. */
export function formatResults(results: readonly CheckResult[]): string {
  const failed = results.filter((r) => r.required && r.status === 'fail').length;
  const skipped = results.filter((r) => r.required && r.status === 'skip').length;
  const verdict =
    failed + skipped === 0
      ? 'ready: this machine can run `ambit local up`'
      : `not ready: ${failed} required check${failed === 1 ? '' : 's'} failed${skipped ? `, ${skipped} could not run` : ''}`;
  return [...results.map(formatResult), '', verdict].join('\n');
}

/** The first line of a command's complaint, for a detail. */
function firstLine(err: unknown): string {
  const text = err instanceof CommandError ? err.stderr.trim() || err.message : err instanceof Error ? err.message : String(err);
  return text.split('\n')[0]!.trim();
}

// ---- probing ----

/** What the checks need from the machine; tests pass a fake. */
export interface CheckSystem {
  platform: string;
  nodeVersion: string;
  uid: number | undefined;
  capEff: bigint | null;
  run: CommandRunner;
  isExecutable(path: string): Promise<boolean>;
  /** loads the native addon; throws its message when it cannot */
  loadNative(): void;
  /** opens a TCP socket with IP_TRANSPARENT bound to a non-local address inside the netns */
  transparentBind(netnsPath: string): void;
  /** name for the throwaway namespace */
  tempNetnsName(): string;
}

const TOOLS: { tool: string; args: string[]; required: boolean }[] = [
  { tool: 'ip', args: ['-V'], required: true },
  { tool: 'iptables', args: ['--version'], required: true },
  { tool: 'iptables-restore', args: ['--version'], required: true },
  { tool: 'iptables-save', args: ['--version'], required: true },
  { tool: 'nsenter', args: ['--version'], required: true },
  { tool: 'nft', args: ['--version'], required: false },
];

async function toolCheck(sys: CheckSystem, t: (typeof TOOLS)[number]): Promise<CheckResult> {
  try {
    const { stdout, stderr } = await sys.run(t.tool, t.args);
    const version = (stdout.trim() || stderr.trim()).split('\n')[0]!.trim();
    return { name: t.tool, status: 'pass', required: t.required, ...(version ? { detail: version } : {}) };
  } catch (err) {
    if (err instanceof MissingToolError) return { name: t.tool, status: 'fail', required: t.required, fix: installHint([t.tool]) };
    return { name: t.tool, status: 'fail', required: t.required, detail: firstLine(err), fix: `\`${t.tool} ${t.args.join(' ')}\` fails; reinstall it: ${installHint([t.tool])}` };
  }
}

/** Runs every check; kernel probes only when the privileges and tools they need are there. */
export async function runChecks(sys: CheckSystem): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const nodeOk = nodeVersionOk(sys.nodeVersion);
  out.push({ name: 'Node.js ≥ 20', status: nodeOk ? 'pass' : 'fail', required: true, detail: `v${sys.nodeVersion.replace(/^v/, '')}`, ...(nodeOk ? {} : { fix: 'install Node.js 20 or newer' }) });
  if (sys.platform !== 'linux') {
    out.push({ name: 'Linux', status: 'fail', required: true, detail: sys.platform, fix: 'local mode needs Linux (network namespaces, iptables); use a Linux machine or VM' });
    return out;
  }
  const priv = privilegeCheck(sys.uid, sys.capEff);
  out.push(priv);

  const tools = new Map<string, CheckResult>();
  for (const t of TOOLS) {
    const r = await toolCheck(sys, t);
    tools.set(t.tool, r);
    out.push(r);
  }

  const missingPlugins: string[] = [];
  for (const p of CNI_PLUGINS) if (!(await sys.isExecutable(join(CNI_BIN_DIR, p)))) missingPlugins.push(p);
  out.push({
    name: `CNI plugins in ${CNI_BIN_DIR} (${CNI_PLUGINS.join(', ')})`,
    required: true,
    ...(missingPlugins.length === 0 ? { status: 'pass' as const } : { status: 'fail' as const, detail: `missing ${missingPlugins.join(', ')}`, fix: installHint(missingPlugins) }),
  });

  let nativeOk = true;
  try {
    sys.loadNative();
    out.push({ name: 'native addon (ambit_net)', status: 'pass', required: true });
  } catch (err) {
    nativeOk = false;
    out.push({ name: 'native addon (ambit_net)', status: 'fail', required: true, detail: firstLine(err).replace(/ Run `npm install`.*$/, ''), fix: 'run `npm install` in the ambit directory to build it (needs a C compiler and python3: `apt-get install -y build-essential python3`)' });
  }

  out.push(...(await kernelChecks(sys, { root: priv.status === 'pass', ip: tools.get('ip')!.status === 'pass', iptables: tools.get('iptables')!.status === 'pass', iptablesRestore: tools.get('iptables-restore')!.status === 'pass' && tools.get('iptables-save')!.status === 'pass', native: nativeOk })));
  return out;
}

const NETNS_CHECK = 'kernel: network namespaces';
const TRANSPARENT_CHECK = 'kernel: IP_TRANSPARENT sockets';
const RESTORE_CHECK = 'iptables-restore and iptables-save in a namespace';

/** iptables rules that use exactly the targets and matches the redirect rule set needs. */
const IPTABLES_PROBES: { feature: KernelFeature; args: string[] }[] = [
  { feature: 'redirect', args: ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--tcp-flags', 'FIN,SYN,RST,ACK', 'SYN', '-j', 'REDIRECT', '--to-ports', '15001'] },
  { feature: 'mark', args: ['-t', 'mangle', '-A', 'OUTPUT', '-m', 'mark', '--mark', '0x539/0xfff', '-j', 'ACCEPT'] },
  { feature: 'connmarkTarget', args: ['-t', 'mangle', '-A', 'PREROUTING', '-j', 'CONNMARK', '--set-xmark', '0x111/0xfff'] },
  { feature: 'connmarkMatch', args: ['-t', 'mangle', '-A', 'OUTPUT', '-m', 'connmark', '--mark', '0x111/0xfff', '-j', 'ACCEPT'] },
];

async function kernelChecks(sys: CheckSystem, have: { root: boolean; ip: boolean; iptables: boolean; iptablesRestore: boolean; native: boolean }): Promise<CheckResult[]> {
  const names = [NETNS_CHECK, KERNEL_FEATURES.veth.name, KERNEL_FEATURES.bridge.name, KERNEL_FEATURES.policyRouting.name, ...IPTABLES_PROBES.map((p) => KERNEL_FEATURES[p.feature].name), RESTORE_CHECK, TRANSPARENT_CHECK];
  const skipAll = (why: string): CheckResult[] => names.map((name) => ({ name, status: 'skip', required: true, detail: why }));
  if (!have.root) return skipAll('needs root');
  if (!have.ip) return skipAll('needs ip');

  const out: CheckResult[] = [];
  const ns = sys.tempNetnsName();
  try {
    await sys.run('ip', ['netns', 'add', ns]);
  } catch (err) {
    return [
      { name: NETNS_CHECK, status: 'fail', required: true, detail: firstLine(err), fix: 'the kernel needs CONFIG_NET_NS; in a container, run it with `--privileged`' },
      ...skipAll('needs a network namespace').slice(1),
    ];
  }
  try {
    // named, so a user (and the e2e test) can see it is gone afterwards
    out.push({ name: NETNS_CHECK, status: 'pass', required: true, detail: `probes ran in ${ns}, removed afterwards` });
    const feature = async (f: KernelFeature, file: string, args: string[]): Promise<void> => {
      try {
        await sys.run(file, args);
        out.push({ name: KERNEL_FEATURES[f].name, status: 'pass', required: true });
      } catch (err) {
        out.push({ name: KERNEL_FEATURES[f].name, status: 'fail', required: true, detail: firstLine(err), fix: kernelHint(f) });
      }
    };
    await feature('veth', 'ip', ['-n', ns, 'link', 'add', 'ambit-ck0', 'type', 'veth', 'peer', 'name', 'ambit-ck1']);
    await feature('bridge', 'ip', ['-n', ns, 'link', 'add', 'ambit-ckbr', 'type', 'bridge']);
    await feature('policyRouting', 'ip', ['-n', ns, 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
    for (const p of IPTABLES_PROBES) {
      if (!have.iptables) out.push({ name: KERNEL_FEATURES[p.feature].name, status: 'skip', required: true, detail: 'needs iptables' });
      else await feature(p.feature, 'ip', ['netns', 'exec', ns, 'iptables', '-w', '5', ...p.args]);
    }
    out.push(await restoreCheck(sys, ns, have.iptablesRestore));
    if (!have.native) out.push({ name: TRANSPARENT_CHECK, status: 'skip', required: true, detail: 'needs the native addon' });
    else {
      try {
        sys.transparentBind(`/run/netns/${ns}`);
        out.push({ name: TRANSPARENT_CHECK, status: 'pass', required: true });
      } catch (err) {
        out.push({ name: TRANSPARENT_CHECK, status: 'fail', required: true, detail: firstLine(err), fix: 'the kernel must allow IP_TRANSPARENT (CAP_NET_ADMIN in the namespace)' });
      }
    }
  } finally {
    try {
      await sys.run('ip', ['netns', 'del', ns]);
    } catch (err) {
      out.push({ name: `remove the temporary namespace ${ns}`, status: 'fail', required: true, detail: firstLine(err), fix: `remove it by hand: \`ip netns del ${ns}\`` });
    }
  }
  return out;
}

/** ambit installs redirect rules with iptables-restore --noflush and reads them back with iptables-save. */
async function restoreCheck(sys: CheckSystem, ns: string, have: boolean): Promise<CheckResult> {
  if (!have) return { name: RESTORE_CHECK, status: 'skip', required: true, detail: 'needs iptables-restore and iptables-save' };
  try {
    await sys.run('ip', ['netns', 'exec', ns, 'iptables-restore', '-w', '5', '--noflush'], '*mangle\n:AMBIT_CHECK - [0:0]\n-A AMBIT_CHECK -j RETURN\nCOMMIT\n');
    const { stdout } = await sys.run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'mangle']);
    if (!stdout.includes('-A AMBIT_CHECK -j RETURN')) return { name: RESTORE_CHECK, status: 'fail', required: true, detail: 'iptables-save did not show the rule iptables-restore added', fix: `make iptables and iptables-save use the same backend: \`update-alternatives --config iptables\`` };
    return { name: RESTORE_CHECK, status: 'pass', required: true };
  } catch (err) {
    return { name: RESTORE_CHECK, status: 'fail', required: true, detail: firstLine(err), fix: `reinstall them: ${installHint(['iptables-restore'])}` };
  }
}

/** The real machine. */
export async function systemProbe(): Promise<CheckSystem> {
  let capEff: bigint | null = null;
  try {
    capEff = parseCapEff(await readFile('/proc/self/status', 'utf8'));
  } catch {
    /* not Linux, or no procfs: the privilege check goes by uid alone */
  }
  return {
    platform: process.platform,
    nodeVersion: process.versions.node,
    uid: process.getuid?.(),
    capEff,
    run: defaultRunner,
    isExecutable: async (path) => {
      try {
        await access(path, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    },
    loadNative: () => {
      const [a, b] = socketPair();
      closeFd(a);
      closeFd(b);
    },
    transparentBind: (path) => {
      const nsFd = openNetns(path);
      try {
        closeFd(tcpSocket({ netnsFd: nsFd, transparent: true, bind: { ip: '10.255.255.1', port: 0 } }));
      } finally {
        closeFd(nsFd);
      }
    },
    tempNetnsName: () => `ambit-check-${randomBytes(4).toString('hex')}`,
  };
}

/** `ambit check`: one line per prerequisite, exit 1 when a required one is missing. */
export function checkCommand(): Command {
  return new Command('check')
    .description('check that this machine can run a local mesh (privileges, tools, CNI plugins, kernel features, native addon); creates nothing that stays')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { output: string }) => {
      const results = await runChecks(await systemProbe());
      const ok = allRequiredPassed(results);
      if (o.output === 'json') console.log(JSON.stringify({ ok, checks: results }, null, 2));
      else console.log(formatResults(results));
      if (!ok) process.exitCode = 1;
    });
}
