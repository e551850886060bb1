/**
 * Summaries of the bench's runs: medians per path, ratios and differences paired per repetition,
 * per-proxy-process CPU and memory, the CPU split per process, the goals of BENCH.md / the issue,
 * and the Markdown that goes to the console, results/latest.md and bench/README.md.
 */

import { statSync } from 'node:fs';

export type PathName = 'direct' | 'ambit' | 'haproxy' | 'naive';
export const PATHS: PathName[] = ['direct', 'ambit', 'haproxy', 'naive'];
export const PATH_LABEL: Record<PathName, string> = { direct: 'direct', ambit: 'ambit L4', haproxy: 'HAProxy pair', naive: 'naive tunnel' };
/** the processes in the proxies' places on each path */
export const PROXY_ROLE: Record<PathName, Tracked['role'] | null> = { direct: null, ambit: 'ztunnel', haproxy: 'haproxy', naive: 'naive' };

export type Kind = 'bulk' | 'latency' | 'churn' | 'idle';

/** A process whose CPU and memory the bench reads. */
export interface Tracked {
  /** e.g. "ztunnel node-1", "haproxy node-2", "naive node-1", "server plain" */
  label: string;
  role: 'ztunnel' | 'haproxy' | 'naive' | 'server';
  node: string;
  pid: number;
}

export interface Run {
  kind: Kind;
  /** latency runs: the request rate */
  rate?: number;
  rep: number;
  path: PathName;
  ok: boolean;
  error?: string;
  /** a result with a caveat (e.g. unanswered requests at a rate the path cannot sustain) */
  warning?: string;
  wallSeconds?: number;
  /** CPU seconds during the run per tracked process label, and "client" (the load tool itself) */
  cpu?: Record<string, number>;
  /** of that, system CPU seconds (stime: syscalls and kernel work done in the process's context) */
  cpuSys?: Record<string, number>;
  /** softirq CPU seconds of the whole machine during the run (packet processing) */
  softirqSeconds?: number;
  /** vCPU used meanwhile by processes outside the bench and the mesh (noise) */
  otherVcpu?: number;
  /** the tool's JSON result */
  tool?: Record<string, unknown>;
  /** idle runs: RSS (MiB) per tracked label before opening and while holding the connections */
  rssBeforeMiB?: Record<string, number>;
  rssHeldMiB?: Record<string, number>;
  held?: number;
}

export interface Workload {
  bulkBytes: number;
  bulkTimeoutS: number;
  size: number;
  conns: number;
  rates: { rate: number; durationS: number; warmupS: number }[];
  churn: { workers: number; durationS: number; warmupS: number };
  idle: { wanted: number; count: number; parallel: number; settleS: number; limitNote: string | null };
}

// ---------------------------------------------------------------- options

/**
 * Why `--out PATH` cannot take the results, or null: the results are PATH (JSON) with a `.md`
 * (and a chart) beside it, so PATH names a `.json` file, not a folder. Checked before the run,
 * so a bad path does not lose a run of several minutes at its end.
 */
export function outPathProblem(path: string): string | null {
  if (!path.endsWith('.json')) return `--out must name a .json file (the Markdown and chart are written beside it), got "${path}"`;
  try {
    if (statSync(path).isDirectory()) return `--out "${path}" is a folder: name a .json file in it`;
  } catch {
    // not there yet: it is written at the end
  }
  return null;
}

// ---------------------------------------------------------------- statistics

export function median(xs: number[]): number | null {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type Getter = (r: Run) => number | undefined;

export class Results {
  constructor(
    readonly runs: Run[],
    readonly w: Workload,
    readonly tracked: Tracked[],
  ) {}

  reps(): number[] {
    return [...new Set(this.runs.map((r) => r.rep))].sort((a, b) => a - b);
  }

  find(kind: Kind, path: PathName, rep: number, rate?: number): Run | undefined {
    return this.runs.find((r) => r.kind === kind && r.path === path && r.rep === rep && r.ok && (rate === undefined || r.rate === rate));
  }

  /** values per repetition on one path */
  values(kind: Kind, path: PathName, get: Getter, rate?: number): Map<number, number> {
    const out = new Map<number, number>();
    for (const rep of this.reps()) {
      const r = this.find(kind, path, rep, rate);
      const v = r ? get(r) : undefined;
      if (v !== undefined && Number.isFinite(v)) out.set(rep, v);
    }
    return out;
  }

  med(kind: Kind, path: PathName, get: Getter, rate?: number): number | null {
    return median([...this.values(kind, path, get, rate).values()]);
  }

  /** median over repetitions of a_i / b_i (or a_i - b_i), where a and b may be different paths and getters */
  paired(a: Map<number, number>, b: Map<number, number>, op: 'ratio' | 'diff'): number | null {
    const xs: number[] = [];
    for (const [rep, va] of a) {
      const vb = b.get(rep);
      if (vb === undefined) continue;
      if (op === 'ratio') {
        if (vb !== 0) xs.push(va / vb);
      } else xs.push(va - vb);
    }
    return median(xs);
  }

  proxies(path: PathName): Tracked[] {
    const role = PROXY_ROLE[path];
    return this.tracked.filter((t) => t.role === role).sort((a, b) => a.node.localeCompare(b.node));
  }

  server(path: PathName): Tracked | undefined {
    return this.tracked.find((t) => t.role === 'server' && t.node === (path === 'ambit' ? 'bench' : 'plain'));
  }
}

export const lat =
  (p: 'p50' | 'p90' | 'p99' | 'max'): Getter =>
  (r) =>
    (r.tool?.latencyMs as Record<string, number | null> | undefined)?.[p] ?? undefined;

export const num =
  (key: string): Getter =>
  (r) => {
    const v = r.tool?.[key];
    return typeof v === 'number' ? v : undefined;
  };

/** CPU seconds of one process (or "client", or "softirq") per unit of work of the run */
export function cpuPer(label: string, kind: Kind, part: 'all' | 'sys' = 'all'): Getter {
  return (r) => {
    const cpu = label === 'softirq' ? r.softirqSeconds : part === 'sys' ? r.cpuSys?.[label] : r.cpu?.[label];
    if (cpu === undefined) return undefined;
    const t = r.tool ?? {};
    if (kind === 'latency') return typeof t.sent === 'number' && t.sent > 0 ? cpu / (t.sent / 1000) : undefined;
    if (kind === 'bulk') return typeof t.bytes === 'number' ? cpu / (t.bytes / 1024 ** 3) : undefined;
    if (kind === 'churn') {
      const n = Number(t.completedAll ?? 0) + Number(t.failuresAll ?? 0);
      return n > 0 ? cpu / (n / 1000) : undefined;
    }
    return undefined;
  };
}

/** bytes (1000-byte kB) of RSS per held idle connection */
export function kbPerConn(label: string): Getter {
  return (r) => {
    const a = r.rssBeforeMiB?.[label];
    const b = r.rssHeldMiB?.[label];
    if (a === undefined || b === undefined || !r.held) return undefined;
    return ((b - a) * 1024 * 1024) / r.held / 1000;
  };
}

// ---------------------------------------------------------------- formatting

export function fmt(v: number | null | undefined, digits: number): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  return v.toFixed(digits);
}

function signed(v: number | null, digits: number): string {
  if (v === null) return 'n/a';
  return `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(digits)}`;
}

function ratio(v: number | null): string {
  return v === null ? 'n/a' : `${v.toFixed(2)}×`;
}

export function sizeLabel(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${bytes / 1024 ** 3} GiB` : `${bytes / 1024 ** 2} MiB`;
}

export function mainTable(res: Results): string {
  const w = res.w;
  const lines = [
    '| measure | unit | direct | ambit L4 | HAProxy pair | naive tunnel | ambit / direct | HAProxy / direct | naive / direct | ambit / HAProxy | ambit / naive |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const row = (label: string, unit: string, kind: Kind, get: Getter, digits: number, rate?: number): void => {
    const v = Object.fromEntries(PATHS.map((p) => [p, res.values(kind, p, get, rate)])) as Record<PathName, Map<number, number>>;
    const m = (p: PathName): number | null => median([...v[p].values()]);
    lines.push(
      `| ${label} | ${unit} | ${fmt(m('direct'), digits)} | ${fmt(m('ambit'), digits)} | ${fmt(m('haproxy'), digits)} | ${fmt(m('naive'), digits)} | ${ratio(res.paired(v.ambit, v.direct, 'ratio'))} | ${ratio(res.paired(v.haproxy, v.direct, 'ratio'))} | ${ratio(res.paired(v.naive, v.direct, 'ratio'))} | ${ratio(res.paired(v.ambit, v.haproxy, 'ratio'))} | ${ratio(res.paired(v.ambit, v.naive, 'ratio'))} |`,
    );
  };
  row(`bulk throughput, one stream, ${sizeLabel(w.bulkBytes)}`, 'Gbit/s', 'bulk', num('gbps'), 2);
  for (const r of w.rates) {
    for (const p of ['p50', 'p90', 'p99', 'max'] as const) row(`latency ${p} @ ${r.rate} rps`, 'ms', 'latency', lat(p), 3, r.rate);
  }
  row(`new connections per second (${w.churn.workers} workers)`, 'conn/s', 'churn', num('connsPerSecond'), 0);
  row('connection time p99 (connect, 1 KiB each way, close)', 'ms', 'churn', (r) => (r.tool?.connMs as Record<string, number> | undefined)?.p99, 2);
  return lines.join('\n');
}

export function addedTable(res: Results): string {
  const lines = ['| added latency over direct | ambit L4 − direct | HAProxy − direct | naive − direct | ambit − HAProxy | ambit − naive |', '|---|---:|---:|---:|---:|---:|'];
  for (const r of res.w.rates) {
    for (const p of ['p50', 'p90', 'p99', 'max'] as const) {
      const v = Object.fromEntries(PATHS.map((x) => [x, res.values('latency', x, lat(p), r.rate)])) as Record<PathName, Map<number, number>>;
      lines.push(
        `| ${p} @ ${r.rate} rps (ms) | ${signed(res.paired(v.ambit, v.direct, 'diff'), 3)} | ${signed(res.paired(v.haproxy, v.direct, 'diff'), 3)} | ${signed(res.paired(v.naive, v.direct, 'diff'), 3)} | ${signed(res.paired(v.ambit, v.haproxy, 'diff'), 3)} | ${signed(res.paired(v.ambit, v.naive, 'diff'), 3)} |`,
      );
    }
  }
  return lines.join('\n');
}

export function proxyTable(res: Results, idleMiB: Record<string, number>): string {
  const zs = res.proxies('ambit');
  const peers = (['haproxy', 'naive'] as const).map((p) => ({ path: p, name: p === 'haproxy' ? 'HAProxy' : 'naive', procs: res.proxies(p) }));
  const cols = [...zs, ...peers.flatMap((p) => p.procs)];
  const pathOf = (t: Tracked): PathName => (Object.keys(PROXY_ROLE) as PathName[]).find((p) => PROXY_ROLE[p] === t.role)!;
  const ratioHeads = peers.flatMap((p) => zs.map((z) => `ztunnel / ${p.name} ${z.node}`));
  const lines = [
    `| per proxy process | unit | ${cols.map((c) => c.label).join(' | ')} | ${ratioHeads.join(' | ')} |`,
    `|---|---|${cols.map(() => '---:').join('|')}|${ratioHeads.map(() => '---:').join('|')}|`,
  ];
  const row = (label: string, unit: string, kind: Kind, get: (t: Tracked) => Getter, digits: number, rate?: number): void => {
    const cells = cols.map((t) => fmt(res.med(kind, pathOf(t), get(t), rate), digits));
    const ratios = peers.flatMap((p) =>
      zs.map((z) => {
        const h = p.procs.find((x) => x.node === z.node);
        if (!h) return 'n/a';
        return ratio(res.paired(res.values(kind, 'ambit', get(z), rate), res.values(kind, p.path, get(h), rate), 'ratio'));
      }),
    );
    lines.push(`| ${label} | ${unit} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`);
  };
  for (const r of res.w.rates) {
    row(`CPU per 1000 requests @ ${r.rate} rps (= vCPU per 1000 rps)`, 'CPU s', 'latency', (t) => cpuPer(t.label, 'latency'), 4, r.rate);
    row(`… of which in the kernel (stime)`, 'CPU s', 'latency', (t) => cpuPer(t.label, 'latency', 'sys'), 4, r.rate);
  }
  row(`CPU per GiB of bulk`, 'CPU s', 'bulk', (t) => cpuPer(t.label, 'bulk'), 3);
  row(`… of which in the kernel (stime)`, 'CPU s', 'bulk', (t) => cpuPer(t.label, 'bulk', 'sys'), 3);
  row(`CPU per 1000 new connections`, 'CPU s', 'churn', (t) => cpuPer(t.label, 'churn'), 3);
  row(`… of which in the kernel (stime)`, 'CPU s', 'churn', (t) => cpuPer(t.label, 'churn', 'sys'), 3);
  const idleRatios = peers.flatMap((p) =>
    zs.map((z) => {
      const h = p.procs.find((x) => x.node === z.node);
      return ratio(h && idleMiB[z.label] !== undefined && idleMiB[h.label] ? idleMiB[z.label]! / idleMiB[h.label]! : null);
    }),
  );
  lines.push(`| RSS idle (just started, no traffic yet) | MiB | ${cols.map((c) => fmt(idleMiB[c.label], 1)).join(' | ')} | ${idleRatios.join(' | ')} |`);
  const held = res.runs.find((r) => r.kind === 'idle' && r.ok && r.held)?.held ?? res.w.idle.count;
  row(`RSS before opening the idle connections`, 'MiB', 'idle', (t) => (r) => r.rssBeforeMiB?.[t.label], 1);
  row(`RSS holding ${held} idle proxied connections`, 'MiB', 'idle', (t) => (r) => r.rssHeldMiB?.[t.label], 1);
  row(`RSS per idle proxied connection`, 'KB', 'idle', (t) => kbPerConn(t.label), 1);
  return lines.join('\n');
}

/** Where the CPU goes, per path: every process on the path, per unit of work. */
export function splitTable(res: Results): string {
  const lines = [
    '| CPU per unit of work | path | load generator | proxy node-1 | proxy node-2 | server | kernel softirq (machine) | sum |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  const work: { label: string; kind: Kind; rate?: number; digits: number }[] = [
    ...res.w.rates.map((r) => ({ label: `CPU s per 1000 requests @ ${r.rate} rps`, kind: 'latency' as Kind, rate: r.rate, digits: 3 })),
    { label: 'CPU s per GiB of bulk', kind: 'bulk', digits: 2 },
    { label: 'CPU s per 1000 new connections', kind: 'churn', digits: 3 },
  ];
  for (const wk of work) {
    for (const p of PATHS) {
      const [p1, p2] = res.proxies(p);
      const srv = res.server(p);
      const labels = ['client', p1?.label, p2?.label, srv?.label, 'softirq'];
      const vals = labels.map((l) => (l === undefined ? null : res.med(wk.kind, p, cpuPer(l, wk.kind), wk.rate)));
      const sum = vals.some((v) => v !== null) ? vals.reduce<number>((a, v) => a + (v ?? 0), 0) : null;
      lines.push(`| ${wk.label} | ${PATH_LABEL[p]} | ${vals.map((v, i) => (labels[i] === undefined ? '—' : fmt(v, wk.digits))).join(' | ')} | ${fmt(sum, wk.digits)} |`);
    }
  }
  return lines.join('\n');
}

/** ambit minus another proxied path, per unit of work, split by process: where the extra CPU of the ambit path goes. */
export function lossTable(res: Results, other: 'haproxy' | 'naive' = 'haproxy'): string {
  const name = other === 'haproxy' ? 'HAProxy' : 'naive';
  const lines = [
    `| ambit L4 − ${PATH_LABEL[other]} | ambit sum | ${name} sum | difference | proxy node-1 | proxy node-2 | kernel softirq | load generator | server |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const work: { label: string; kind: Kind; rate?: number; digits: number }[] = [
    ...res.w.rates.map((r) => ({ label: `CPU s per 1000 requests @ ${r.rate} rps`, kind: 'latency' as Kind, rate: r.rate, digits: 3 })),
    { label: 'CPU s per GiB of bulk', kind: 'bulk', digits: 2 },
    { label: 'CPU s per 1000 new connections', kind: 'churn', digits: 3 },
  ];
  for (const wk of work) {
    const parts = (p: PathName): (number | null)[] => {
      const [p1, p2] = res.proxies(p);
      return [p1?.label, p2?.label, 'softirq', 'client', res.server(p)?.label].map((l) => (l === undefined ? null : res.med(wk.kind, p, cpuPer(l, wk.kind), wk.rate)));
    };
    const a = parts('ambit');
    const h = parts(other);
    if (a.every((v) => v === null) || h.every((v) => v === null)) continue;
    const sa = a.reduce<number>((x, v) => x + (v ?? 0), 0);
    const sh = h.reduce<number>((x, v) => x + (v ?? 0), 0);
    const d = a.map((v, i) => (v === null || h[i] === null ? null : v - h[i]!));
    lines.push(`| ${wk.label} | ${fmt(sa, wk.digits)} | ${fmt(sh, wk.digits)} | ${signed(sa - sh, wk.digits)} | ${d.map((v) => signed(v, wk.digits)).join(' | ')} |`);
  }
  return lines.join('\n');
}

export function runsTable(res: Results): string {
  const r1 = res.w.rates[0]!.rate;
  const r2 = res.w.rates[1]?.rate;
  const lines = [
    `| rep | path | bulk Gbit/s | p50 / p99 ms @ ${r1} | lost | ${r2 ? `p50 / p99 ms @ ${r2} | lost | ` : ''}conn/s | conn failures | other load vCPU (median of the rep's runs) |`,
    `|---:|---|---:|---:|---:|${r2 ? '---:|---:|' : ''}---:|---:|---:|`,
  ];
  for (const rep of res.reps()) {
    for (const p of PATHS) {
      const any = res.runs.filter((r) => r.rep === rep && r.path === p);
      if (any.length === 0) continue;
      const get = (kind: Kind, rate?: number): Run | undefined => any.find((r) => r.kind === kind && (rate === undefined || r.rate === rate));
      const cell = (r: Run | undefined, f: (r: Run) => string): string => (!r ? 'n/a' : r.ok ? f(r) : 'failed');
      const latCell = (r: Run | undefined): string => cell(r, (x) => `${fmt(lat('p50')(x), 3)} / ${fmt(lat('p99')(x), 3)}`);
      const lostCell = (r: Run | undefined): string => cell(r, (x) => String(x.tool?.lost ?? 'n/a'));
      const l1 = get('latency', r1);
      const l2 = r2 ? get('latency', r2) : undefined;
      const ch = get('churn');
      lines.push(
        `| ${rep} | ${PATH_LABEL[p]} | ${cell(get('bulk'), (x) => fmt(num('gbps')(x), 2))} | ${latCell(l1)} | ${lostCell(l1)} | ${r2 ? `${latCell(l2)} | ${lostCell(l2)} | ` : ''}${cell(ch, (x) => fmt(num('connsPerSecond')(x), 0))} | ${cell(ch, (x) => String(x.tool?.failures ?? 'n/a'))} | ${fmt(median(any.map((r) => r.otherVcpu).filter((x): x is number => x !== undefined)), 2)} |`,
      );
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- goals

export interface Goal {
  goal: string;
  target: string;
  measured: string;
  met: boolean | null;
  margin: string;
}

const pct = (x: number): string => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(0)} %`;

function atLeast(goal: string, target: number, v: number | null, unit: (x: number) => string, targetText: string): Goal {
  if (v === null) return { goal, target: targetText, measured: 'n/a', met: null, margin: 'not measured' };
  return {
    goal,
    target: targetText,
    measured: unit(v),
    met: v >= target,
    margin: v >= target ? `${pct(v / target - 1)} above the target` : `${Math.abs((v / target - 1) * 100).toFixed(0)} % below the target (needs ${(target / v).toFixed(2)}× the current figure)`,
  };
}

function atMost(goal: string, target: number, v: number | null, unit: (x: number) => string, targetText: string): Goal {
  if (v === null) return { goal, target: targetText, measured: 'n/a', met: null, margin: 'not measured' };
  const over = v - target;
  return {
    goal,
    target: targetText,
    measured: unit(v),
    met: v <= target,
    margin:
      v <= target
        ? `${unit(-over)} under the target`
        : `${unit(over)} over the target${target > 0 ? ` (${(v / target).toFixed(1)}× the target)` : ''}`,
  };
}

export function goals(res: Results): Goal[] {
  const v = (kind: Kind, p: PathName, g: Getter, rate?: number): Map<number, number> => res.values(kind, p, g, rate);
  const gbps = num('gbps');
  const out: Goal[] = [];
  out.push(atLeast('bulk throughput ≥ 1.0× HAProxy', 1, res.paired(v('bulk', 'ambit', gbps), v('bulk', 'haproxy', gbps), 'ratio'), (x) => `${x.toFixed(2)}× HAProxy`, '1.00× HAProxy'));
  out.push(
    atLeast('bulk throughput ≥ the naive Node HTTP/2 tunnel (issue 2)', 1, res.paired(v('bulk', 'ambit', gbps), v('bulk', 'naive', gbps), 'ratio'), (x) => `${x.toFixed(2)}× naive`, '1.00× naive'),
  );
  out.push(atLeast('bulk throughput ≥ 0.5× direct', 0.5, res.paired(v('bulk', 'ambit', gbps), v('bulk', 'direct', gbps), 'ratio'), (x) => `${x.toFixed(2)}× direct`, '0.50× direct'));
  const r1 = res.w.rates.find((r) => r.rate === 1000) ?? res.w.rates[0]!;
  const p99 = lat('p99');
  const addedA = res.paired(v('latency', 'ambit', p99, r1.rate), v('latency', 'direct', p99, r1.rate), 'diff');
  const addedH = res.paired(v('latency', 'haproxy', p99, r1.rate), v('latency', 'direct', p99, r1.rate), 'diff');
  const ms = (x: number): string => `${x.toFixed(3)} ms`;
  out.push(atMost(`added p99 @ ${r1.rate} rps ≤ 0.2 ms`, 0.2, addedA, ms, '0.200 ms'));
  {
    const g: Goal = { goal: `added p99 @ ${r1.rate} rps ≤ HAProxy's`, target: addedH === null ? 'n/a' : `${addedH.toFixed(3)} ms (HAProxy's)`, measured: addedA === null ? 'n/a' : ms(addedA), met: null, margin: 'not measured' };
    if (addedA !== null && addedH !== null) {
      g.met = addedA <= addedH;
      g.margin = g.met ? `${ms(addedH - addedA)} less than HAProxy's` : `${ms(addedA - addedH)} more than HAProxy's`;
    }
    out.push(g);
  }
  const zs = res.proxies('ambit');
  const cpu = zs.map((z) => ({ z, v: res.med('latency', 'ambit', cpuPer(z.label, 'latency'), r1.rate) }));
  const worstCpu = cpu.filter((c) => c.v !== null).sort((a, b) => b.v! - a.v!)[0];
  out.push(
    atMost(
      `≤ 0.06 vCPU per 1000 rps per ztunnel (@ ${r1.rate} rps)`,
      0.06,
      worstCpu?.v ?? null,
      (x) => `${x.toFixed(3)} vCPU`,
      '0.060 vCPU',
    ),
  );
  if (worstCpu) out[out.length - 1]!.measured += ` (${cpu.map((c) => `${c.z.node} ${fmt(c.v, 3)}`).join(', ')})`;
  const mem = zs.map((z) => ({ z, v: res.med('idle', 'ambit', kbPerConn(z.label)) }));
  const worstMem = mem.filter((c) => c.v !== null).sort((a, b) => b.v! - a.v!)[0];
  out.push(atMost('≤ 4 KB per idle proxied connection (per ztunnel)', 4, worstMem?.v ?? null, (x) => `${x.toFixed(1)} KB`, '4.0 KB'));
  if (worstMem) out[out.length - 1]!.measured += ` (${mem.map((c) => `${c.z.node} ${fmt(c.v, 1)}`).join(', ')})`;
  const cps = num('connsPerSecond');
  out.push(atLeast('new connections/s ≥ HAProxy', 1, res.paired(v('churn', 'ambit', cps), v('churn', 'haproxy', cps), 'ratio'), (x) => `${x.toFixed(2)}× HAProxy`, '1.00× HAProxy'));
  return out;
}

export function goalsTable(gs: Goal[]): string {
  const lines = ['| goal (BENCH.md / issue) | target | measured (ambit L4) | met? | by how much |', '|---|---|---|:---:|---|'];
  for (const g of gs) lines.push(`| ${g.goal} | ${g.target} | ${g.measured} | ${g.met === null ? 'n/a' : g.met ? 'yes' : '**no**'} | ${g.margin} |`);
  return lines.join('\n');
}
