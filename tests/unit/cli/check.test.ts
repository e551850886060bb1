import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CAP_NET_ADMIN,
  CAP_SYS_ADMIN,
  allRequiredPassed,
  formatResult,
  formatResults,
  hasCap,
  installHint,
  kernelHint,
  nodeVersionOk,
  packagesFor,
  parseCapEff,
  privilegeCheck,
  runChecks,
  type CheckResult,
  type CheckSystem,
} from '../../../cli/check.js';
import { CommandError, MissingToolError } from '../../../shared/redirect/apply.js';

const FULL_CAPS = (1n << BigInt(CAP_NET_ADMIN)) | (1n << BigInt(CAP_SYS_ADMIN));

describe('check: formatting', () => {
  test('one line per check: ✓ with what was found, ✗ with what to do, - when it could not run', () => {
    assert.equal(formatResult({ name: 'ip', status: 'pass', required: true, detail: 'iproute2-6.1.0' }), '✓ ip: iproute2-6.1.0');
    assert.equal(formatResult({ name: 'nsenter', status: 'pass', required: true }), '✓ nsenter');
    assert.equal(formatResult({ name: 'iptables', status: 'fail', required: true, fix: 'run `apt-get install -y iptables`' }), '✗ iptables — run `apt-get install -y iptables`');
    assert.equal(formatResult({ name: 'kernel: veth pairs', status: 'fail', required: true, fix: 'load the module: `modprobe veth` (kernel option CONFIG_VETH)', detail: 'Error: Unknown device type.' }), '✗ kernel: veth pairs — load the module: `modprobe veth` (kernel option CONFIG_VETH) (Error: Unknown device type.)');
    assert.equal(formatResult({ name: 'nft', status: 'fail', required: false, fix: 'run `apt-get install -y nftables`' }), '✗ nft (optional) — run `apt-get install -y nftables`');
    assert.equal(formatResult({ name: 'kernel: bridges', status: 'skip', required: true, detail: 'needs root' }), '- kernel: bridges — not checked: needs root');
  });

  test('the verdict counts failed and unrun required checks; optional failures do not count', () => {
    const pass: CheckResult = { name: 'a', status: 'pass', required: true };
    const optional: CheckResult = { name: 'nft', status: 'fail', required: false, fix: 'x' };
    assert.equal(allRequiredPassed([pass, optional]), true);
    assert.match(formatResults([pass, optional]), /\n\nready: this machine can run `ambit local up`$/);
    const failed: CheckResult = { name: 'b', status: 'fail', required: true };
    const skipped: CheckResult = { name: 'c', status: 'skip', required: true };
    assert.equal(allRequiredPassed([pass, skipped]), false);
    assert.match(formatResults([pass, failed, skipped, skipped]), /not ready: 1 required check failed, 2 could not run$/);
    assert.match(formatResults([failed, failed]), /not ready: 2 required checks failed$/);
  });
});

describe('check: hints', () => {
  test('package hints name the Debian package once', () => {
    assert.equal(installHint(['ip']), 'run `apt-get install -y iproute2`');
    assert.equal(installHint(['iptables-save']), 'run `apt-get install -y iptables`');
    assert.equal(installHint(['nsenter']), 'run `apt-get install -y util-linux`');
    assert.equal(installHint(['nft']), 'run `apt-get install -y nftables`');
    assert.deepEqual(packagesFor(['bridge', 'loopback', 'iptables', 'iptables-restore']), ['containernetworking-plugins', 'iptables']);
  });

  test('kernel hints name the module and the kernel option', () => {
    assert.equal(kernelHint('redirect'), 'load the module: `modprobe xt_REDIRECT` (kernel option CONFIG_NETFILTER_XT_TARGET_REDIRECT)');
    assert.equal(kernelHint('policyRouting'), 'the kernel needs CONFIG_IP_MULTIPLE_TABLES');
  });

  test('node versions', () => {
    assert.equal(nodeVersionOk('20.0.0'), true);
    assert.equal(nodeVersionOk('v22.3.1'), true);
    assert.equal(nodeVersionOk('18.19.0'), false);
    assert.equal(nodeVersionOk('garbage'), false);
  });
});

describe('check: privileges', () => {
  test('capabilities from /proc/self/status', () => {
    const caps = parseCapEff('Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n');
    assert.equal(caps, 0x1ffffffffffn);
    assert.equal(hasCap(caps!, CAP_NET_ADMIN), true);
    assert.equal(hasCap(0x1000n, CAP_NET_ADMIN), true);
    assert.equal(hasCap(0x1000n, CAP_SYS_ADMIN), false);
    assert.equal(parseCapEff('Name:\tnode\n'), null);
  });

  test('root with the capabilities passes; without root, or root without them in a container, fails with what to do', () => {
    assert.equal(privilegeCheck(0, FULL_CAPS).status, 'pass');
    assert.equal(privilegeCheck(0, null).status, 'pass');
    const user = privilegeCheck(1000, 0n);
    assert.equal(user.status, 'fail');
    assert.match(user.fix!, /run it as root/);
    assert.match(privilegeCheck(1000, FULL_CAPS).detail!, /CAP_NET_ADMIN and CAP_SYS_ADMIN are held, but ambit local runs as uid 0/);
    const boxed = privilegeCheck(0, 1n << BigInt(CAP_SYS_ADMIN));
    assert.equal(boxed.status, 'fail');
    assert.equal(boxed.detail, 'root without CAP_NET_ADMIN');
    assert.match(boxed.fix!, /--privileged/);
  });
});

/** A machine where everything is present unless told otherwise; records what ran. */
function fakeSystem(over: { missing?: string[]; failing?: Record<string, string>; uid?: number; native?: string; plugins?: string[] } = {}): CheckSystem & { ran: string[] } {
  const ran: string[] = [];
  return {
    ran,
    platform: 'linux',
    nodeVersion: '20.11.0',
    uid: over.uid ?? 0,
    capEff: FULL_CAPS,
    run: async (file, args) => {
      const line = [file, ...args].join(' ');
      ran.push(line);
      if (over.missing?.includes(file)) throw new MissingToolError(file);
      for (const [pattern, stderr] of Object.entries(over.failing ?? {})) if (line.includes(pattern)) throw new CommandError(line, stderr, 1);
      if (args.includes('iptables-save')) return { stdout: '*mangle\n:AMBIT_CHECK - [0:0]\n-A AMBIT_CHECK -j RETURN\nCOMMIT\n', stderr: '' };
      return { stdout: `${file} 1.0\n`, stderr: '' };
    },
    isExecutable: async (path) => !(over.plugins ?? []).some((p) => path.endsWith(`/${p}`)),
    loadNative: () => {
      if (over.native) throw new Error(over.native);
    },
    transparentBind: () => undefined,
    tempNetnsName: () => 'ambit-check-test',
  };
}

const byName = (rs: CheckResult[], name: string) => rs.find((r) => r.name.startsWith(name));

describe('check: running the checks', () => {
  test('a complete machine passes everything, and the temporary namespace is removed last', async () => {
    const sys = fakeSystem();
    const rs = await runChecks(sys);
    assert.equal(allRequiredPassed(rs), true, formatResults(rs));
    assert.ok(rs.every((r) => r.status === 'pass'));
    assert.equal(sys.ran.filter((l) => l === 'ip netns add ambit-check-test').length, 1);
    assert.equal(sys.ran.at(-1), 'ip netns del ambit-check-test');
    assert.ok(sys.ran.some((l) => l.includes('ip netns exec ambit-check-test iptables -w 5 -t nat -A OUTPUT') && l.includes('-j REDIRECT')));
  });

  test('missing tools and plugins name their package; the iptables probes are then not run', async () => {
    const rs = await runChecks(fakeSystem({ missing: ['iptables', 'nft'], plugins: ['bridge'] }));
    assert.equal(byName(rs, 'iptables')!.fix, 'run `apt-get install -y iptables`');
    assert.equal(byName(rs, 'nft')!.required, false);
    assert.equal(byName(rs, 'CNI plugins')!.fix, 'run `apt-get install -y containernetworking-plugins`');
    assert.equal(byName(rs, 'CNI plugins')!.detail, 'missing bridge');
    assert.equal(byName(rs, 'iptables: nat REDIRECT')!.status, 'skip');
    assert.equal(byName(rs, 'kernel: veth')!.status, 'pass');
    assert.equal(allRequiredPassed(rs), false);
  });

  test('without ip or root nothing is created', async () => {
    for (const sys of [fakeSystem({ missing: ['ip'] }), fakeSystem({ uid: 1000 })]) {
      const rs = await runChecks(sys);
      assert.ok(!sys.ran.some((l) => l.startsWith('ip netns add')));
      assert.equal(byName(rs, 'kernel: network namespaces')!.status, 'skip');
    }
  });

  test('a kernel that refuses a feature gets its module named, and the namespace still goes', async () => {
    const sys = fakeSystem({ failing: { 'type veth': 'Error: Unknown device type.', CONNMARK: "iptables: No chain/target/match by that name." } });
    const rs = await runChecks(sys);
    assert.equal(formatResult(byName(rs, 'kernel: veth')!), '✗ kernel: veth pairs — load the module: `modprobe veth` (kernel option CONFIG_VETH) (Error: Unknown device type.)');
    assert.match(byName(rs, 'iptables: CONNMARK target')!.fix!, /modprobe xt_connmark/);
    assert.equal(byName(rs, 'iptables: connmark match')!.status, 'pass');
    assert.equal(sys.ran.at(-1), 'ip netns del ambit-check-test');
  });

  test('no network namespaces: the namespace probes are skipped; no native addon: IP_TRANSPARENT is skipped', async () => {
    let rs = await runChecks(fakeSystem({ failing: { 'netns add': 'mount --make-shared /run/netns failed: Operation not permitted' } }));
    assert.equal(byName(rs, 'kernel: network namespaces')!.status, 'fail');
    assert.equal(byName(rs, 'kernel: bridges')!.status, 'skip');
    rs = await runChecks(fakeSystem({ native: 'The ambit native addon could not be loaded from /x (nope). Run `npm install` in the ambit directory to build it.' }));
    assert.match(formatResult(byName(rs, 'native addon')!), /^✗ native addon \(ambit_net\) — run `npm install` in the ambit directory/);
    assert.equal(byName(rs, 'kernel: IP_TRANSPARENT')!.status, 'skip');
  });
});
