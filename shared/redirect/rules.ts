// The in-pod redirect rule set (DESIGN.md §5) as pure data, so tests, install and the
// CNI CHECK command all read one definition. No I/O here.
import { isIPv4, isIPv6 } from 'node:net';

export const ZTUNNEL_MARK = 0x539;
export const CONNMARK = 0x111;
export const MARK_MASK = 0xfff;
export const ROUTE_TABLE = 100;
export const RULE_PRIORITY = 32764;

export const PORTS = { outbound: 15001, inboundPlaintext: 15006, inboundHbone: 15008 } as const;

/** Our dedicated chains; every rule lives in them so removal is exact. */
export const CHAIN_PREROUTING = 'AMBIT_PRERT';
export const CHAIN_OUTPUT = 'AMBIT_OUTPUT';
/** Any chain with this prefix is ours (also stale ones from older versions). */
export const CHAIN_PREFIX = 'AMBIT_';
export const TABLES = ['mangle', 'nat'] as const;
export type Table = (typeof TABLES)[number];

export const DEFAULT_PROBE_SNAT_IP = '169.254.7.127';
/** Istio's IPv6 kubelet-probe SNAT address. */
export const DEFAULT_PROBE_SNAT_IPV6 = 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff';

export interface RedirectOptions {
  /** kubelet probe source, default '169.254.7.127' — bypasses capture */
  probeSnatIp?: string;
  /** IPv6 probe source for the ip6tables set, default Istio's fd16:9254:7127:1337:ffff:ffff:ffff:ffff */
  probeSnatIpv6?: string;
  /** also produce the ip6tables set (and IPv6 ip rule/route) */
  ipv6?: boolean;
}

export interface PodRuleSet {
  /** iptables-restore input (--noflush safe): dedicated chains in nat and mangle, created, flushed and filled, jumped to from PREROUTING/OUTPUT */
  iptables: string;
  ip6tables?: string;
  /** argv for `ip`, e.g. ['rule','add','fwmark','0x111/0xfff','pref','32764','lookup','100'] */
  ipRules: string[][];
  /** argv for `ip`; `replace` so re-running is idempotent */
  ipRoutes: string[][];
}

export interface ChainRule {
  table: string;
  chain: string;
  rule: string;
}

export type Family = 4 | 6;

const hex = (n: number): string => `0x${n.toString(16)}`;
const MARK = `${hex(ZTUNNEL_MARK)}/${hex(MARK_MASK)}`;
const CT_MARK = `${hex(CONNMARK)}/${hex(MARK_MASK)}`;
/** `--syn` as iptables-save prints it */
const SYN = '--tcp-flags FIN,SYN,RST,ACK SYN';

function probeIp(opts: RedirectOptions, family: Family): string {
  if (family === 4) {
    const ip = opts.probeSnatIp ?? DEFAULT_PROBE_SNAT_IP;
    // Validated because it is spliced into iptables-restore input.
    if (!isIPv4(ip)) throw new Error(`probeSnatIp must be an IPv4 address, got ${JSON.stringify(ip)}`);
    return `${ip}/32`;
  }
  const ip = opts.probeSnatIpv6 ?? DEFAULT_PROBE_SNAT_IPV6;
  if (!isIPv6(ip)) throw new Error(`probeSnatIpv6 must be an IPv6 address, got ${JSON.stringify(ip)}`);
  return `${ip.toLowerCase()}/128`;
}

/** The rules in canonical order (tables mangle, nat; builtin jumps first, then our chains). */
export function expectedChainRules(opts: RedirectOptions = {}, family: Family = 4): ChainRule[] {
  const lo = family === 4 ? '127.0.0.1/32' : '::1/128';
  const probe = probeIp(opts, family);
  return [
    { table: 'mangle', chain: 'PREROUTING', rule: `-j ${CHAIN_PREROUTING}` },
    { table: 'mangle', chain: 'OUTPUT', rule: `-j ${CHAIN_OUTPUT}` },
    // ztunnel's marked packets tag their connection so replies can be routed back to it.
    { table: 'mangle', chain: CHAIN_PREROUTING, rule: `-m mark --mark ${MARK} -j CONNMARK --set-xmark ${CT_MARK}` },
    // Replies on such connections get the mark back -> ip rule -> table 100 -> local delivery.
    {
      table: 'mangle',
      chain: CHAIN_OUTPUT,
      rule: `-m connmark --mark ${CT_MARK} -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff`,
    },
    { table: 'nat', chain: 'PREROUTING', rule: `-j ${CHAIN_PREROUTING}` },
    { table: 'nat', chain: 'OUTPUT', rule: `-j ${CHAIN_OUTPUT}` },
    // kubelet probes must reach the app directly, as they do without a mesh.
    { table: 'nat', chain: CHAIN_PREROUTING, rule: `-s ${probe} -p tcp -j ACCEPT` },
    // Only connection-opening SYNs are redirected: when capture starts in a running pod, the
    // kernel begins tracking its open connections mid-stream, and those must not be redirected.
    {
      table: 'nat',
      chain: CHAIN_PREROUTING,
      rule: `! -d ${lo} -p tcp ! --dport ${PORTS.inboundHbone} ${SYN} -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${PORTS.inboundPlaintext}`,
    },
    { table: 'nat', chain: CHAIN_OUTPUT, rule: `-p tcp -m mark --mark ${CT_MARK} -j ACCEPT` },
    // Traffic to the pod's own IP over lo stays in the pod.
    { table: 'nat', chain: CHAIN_OUTPUT, rule: `! -d ${lo} -o lo -j ACCEPT` },
    {
      table: 'nat',
      chain: CHAIN_OUTPUT,
      rule: `! -d ${lo} -p tcp ${SYN} -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${PORTS.outbound}`,
    },
  ];
}

function restoreText(rules: ChainRule[], tables: readonly Table[] = TABLES): string {
  const out: string[] = [];
  for (const table of tables) {
    out.push(`*${table}`);
    // Declaring a chain under --noflush creates it, or flushes it when it exists.
    out.push(`:${CHAIN_PREROUTING} - [0:0]`, `:${CHAIN_OUTPUT} - [0:0]`);
    for (const r of rules) if (r.table === table) out.push(`-A ${r.chain} ${r.rule}`);
    out.push('COMMIT');
  }
  return out.join('\n') + '\n';
}

/** The complete rule set for one pod netns. */
export function podRuleSet(opts: RedirectOptions = {}): PodRuleSet {
  const mark = `${hex(CONNMARK)}/${hex(MARK_MASK)}`;
  const rule = ['rule', 'add', 'fwmark', mark, 'pref', String(RULE_PRIORITY), 'lookup', String(ROUTE_TABLE)];
  const route = ['route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(ROUTE_TABLE)];
  const set: PodRuleSet = { iptables: restoreText(expectedChainRules(opts, 4)), ipRules: [rule], ipRoutes: [route] };
  if (opts.ipv6) {
    set.ip6tables = restoreText(expectedChainRules(opts, 6));
    set.ipRules.push(['-6', ...rule]);
    set.ipRoutes.push(['-6', 'route', 'replace', 'local', '::/0', 'dev', 'lo', 'table', String(ROUTE_TABLE)]);
  }
  return set;
}

/**
 * iptables-restore input (--noflush safe) for some tables of the set. The mangle table is the
 * return path (connmark for ztunnel's own connections): alone it changes none of the pod's
 * traffic. The nat table is the capture itself (the redirects to ztunnel's ports).
 */
export function chainRestoreText(opts: RedirectOptions, family: Family, tables: readonly Table[]): string {
  return restoreText(expectedChainRules(opts, family), tables);
}

/**
 * Normalise one rule as printed by iptables-save: collapse whitespace and drop the bare
 * `-m tcp` that some iptables versions print after `-p tcp` and others omit.
 */
export function normaliseRule(rule: string): string {
  return rule.trim().split(/\s+/).join(' ').replace(/(^|\s)-p tcp -m tcp(?=\s|$)/, '$1-p tcp');
}

const isOurs = (chain: string): boolean => chain.startsWith(CHAIN_PREFIX);
const jumpTarget = (rule: string): string | undefined => /(?:^|\s)-[jg] (\S+)/.exec(rule)?.[1];

function canonicalSort(rules: ChainRule[]): ChainRule[] {
  const tableRank = (t: string): number => {
    const i = (TABLES as readonly string[]).indexOf(t);
    return i < 0 ? TABLES.length : i;
  };
  const chainOrder = ['PREROUTING', 'OUTPUT', CHAIN_PREROUTING, CHAIN_OUTPUT];
  const chainRank = (c: string): number => {
    const i = chainOrder.indexOf(c);
    return i < 0 ? chainOrder.length : i;
  };
  // Stable sort: rule order within a chain is preserved (it matters).
  return rules
    .map((r, i) => ({ r, i }))
    .sort(
      (a, b) =>
        tableRank(a.r.table) - tableRank(b.r.table) ||
        a.r.table.localeCompare(b.r.table) ||
        chainRank(a.r.chain) - chainRank(b.r.chain) ||
        a.r.chain.localeCompare(b.r.chain) ||
        a.i - b.i,
    )
    .map((x) => x.r);
}

/** Rules of our AMBIT_* chains and jumps to them from iptables-save output, normalised, in canonical order. */
export function parseIptablesSave(text: string): ChainRule[] {
  const rules: ChainRule[] = [];
  let table = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) table = line.slice(1);
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (!m || !table) continue;
    const chain = m[1]!;
    const rule = normaliseRule(m[2]!);
    const target = jumpTarget(rule);
    if (isOurs(chain) || (target !== undefined && isOurs(target))) rules.push({ table, chain, rule });
  }
  return canonicalSort(rules);
}

/** Per-table view of iptables-save output, used to remove exactly what is ours. */
export interface SavedTable {
  table: string;
  /** builtin chain -> policy */
  policies: Record<string, string>;
  /** user-defined chains (ours and others) */
  userChains: string[];
  /** every `-A` line as `{chain, rule}` with the rule text as printed (not normalised) */
  rules: { chain: string; rule: string }[];
}

/** Splits iptables-save output into tables with policies, user chains and raw rules. */
export function parseSavedTables(text: string): SavedTable[] {
  const tables: SavedTable[] = [];
  let cur: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      cur = { table: line.slice(1), policies: {}, userChains: [], rules: [] };
      tables.push(cur);
      continue;
    }
    if (!cur) continue;
    const decl = /^:(\S+) (\S+)/.exec(line);
    if (decl) {
      if (decl[2] === '-') cur.userChains.push(decl[1]!);
      else cur.policies[decl[1]!] = decl[2]!;
      continue;
    }
    const m = /^-A (\S+) (.*)$/.exec(line);
    if (m) cur.rules.push({ chain: m[1]!, rule: m[2]!.trim() });
  }
  return tables;
}

/**
 * iptables-restore input (--noflush) that deletes our jumps (every copy) and our chains
 * from the given saved state; '' when nothing of ours is there.
 */
export function removalText(saved: SavedTable[]): string {
  const out: string[] = [];
  for (const t of saved) {
    const jumps = t.rules.filter((r) => !isOurs(r.chain) && isOurs(jumpTarget(r.rule) ?? ''));
    const chains = t.userChains.filter(isOurs);
    if (jumps.length === 0 && chains.length === 0) continue;
    out.push(`*${t.table}`);
    for (const j of jumps) out.push(`-D ${j.chain} ${j.rule}`);
    // Flush all first: our chains may reference each other, and -X needs no references left.
    for (const c of chains) out.push(`-F ${c}`);
    for (const c of chains) out.push(`-X ${c}`);
    out.push('COMMIT');
  }
  return out.length ? out.join('\n') + '\n' : '';
}

/**
 * Tables that will be empty once our chains are removed (no foreign rules or chains,
 * every builtin policy ACCEPT): with the nf_tables backend they did not exist before we
 * created them, and deleting them is a no-op for traffic.
 */
export function tablesEmptyAfterRemoval(saved: SavedTable[]): string[] {
  return saved
    .filter((t) => {
      const foreignChains = t.userChains.filter((c) => !isOurs(c));
      const foreignRules = t.rules.filter((r) => !isOurs(r.chain) && !isOurs(jumpTarget(r.rule) ?? ''));
      const ours = t.userChains.some(isOurs);
      return (
        ours &&
        foreignChains.length === 0 &&
        foreignRules.length === 0 &&
        Object.values(t.policies).every((p) => p === 'ACCEPT')
      );
    })
    .map((t) => t.table);
}

/** True for an `ip rule show` line that is our fwmark rule. */
export function isOurIpRule(line: string): boolean {
  const l = line.trim().split(/\s+/).join(' ');
  return l.includes(`fwmark ${CT_MARK}`) && new RegExp(`lookup ${ROUTE_TABLE}$`).test(l);
}

/** The `ip rule show` line our rule prints as, normalised. */
export const EXPECTED_IP_RULE = `${RULE_PRIORITY}: from all fwmark ${CT_MARK} lookup ${ROUTE_TABLE}`;

/** True for an `ip route show table 100` line that is our local default route. */
export function isOurRoute(line: string): boolean {
  return /^local (default|0\.0\.0\.0\/0|::\/0) dev lo(\s|$)/.test(line.trim());
}

/** Normalises `ip` output lines: trims, collapses whitespace, drops blanks. */
export function ipLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/).join(' '))
    .filter((l) => l.length > 0);
}
