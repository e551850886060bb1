/**
 * Summaries of the L7 bench's runs: medians per path, differences and ratios paired per
 * repetition, CPU per 1,000 requests per proxy process, the waypoint's goals, and the Markdown
 * that goes to the console, the .md beside the JSON and bench/l7/README.md.
 */
import { fmt, median } from '../lib/report.js';

export type L7Path = 'direct' | 'ambitL4' | 'ambitL7' | 'haproxyL4' | 'haproxyL7';
export const L7_PATHS: L7Path[] = ['direct', 'ambitL4', 'ambitL7', 'haproxyL4', 'haproxyL7'];
export const LABEL: Record<L7Path, string> = {
  direct: 'direct',
  ambitL4: 'ambit L4',
  ambitL7: 'ambit L7 (waypoint)',
  haproxyL4: 'HAProxy L4 pair',
  haproxyL7: 'HAProxy L7',
};
/** the tracked process labels on each path, in path order (the server last) */
export const PATH_PROCS: Record<L7Path, string[]> = {
  direct: ['server plain'],
  ambitL4: ['ztunnel node-1', 'ztunnel node-2', 'server bench'],
  ambitL7: ['ztunnel node-1', 'waypoint', 'ztunnel node-2', 'server bench'],
  haproxyL4: ['haproxy node-1', 'haproxy node-2', 'server plain'],
  haproxyL7: ['haproxy node-1', 'haproxy middle', 'haproxy node-2', 'server plain'],
};

export type Kind = 'closed' | 'latency';

export interface Run {
  kind: Kind;
  /** latency runs: the request rate */
  rate?: number;
  rep: number;
  path: L7Path;
  ok: boolean;
  error?: string;
  warning?: string;
  wallSeconds?: number;
  /** CPU seconds during the measured window per tracked process label, and "client" (the load tool) */
  cpu?: Record<string, number>;
  /** of that, system CPU seconds (stime) */
  cpuSys?: Record<string, number>;
  /** softirq CPU seconds of the whole machine during the window */
  softirqSeconds?: number;
  /** vCPU used meanwhile by processes outside the bench and the mesh (noise) */
  otherVcpu?: number;
  /** seconds waited before the run for the bench's processes to go quiet */
  settleSeconds?: number;
  tool?: Record<string, unknown>;
}

export interface Workload {
  size: number;
  closed: { conns: number; durationS: number; warmupS: number };
  openConns: number;
  rates: { rate: number; durationS: number; warmupS: number }[];
}

export const GOALS = { waypointVcpuPer1000: 0.25, addedP99Ms: 1 } as const;

type Getter = (r: Run) => number | undefined;

export class L7Results {
  constructor(
    readonly runs: Run[],
    readonly w: Workload,
    readonly paths: L7Path[],
  ) {}

  reps(): number[] {
    return [...new Set(this.runs.map((r) => r.rep))].sort((a, b) => a - b);
  }

  values(kind: Kind, path: L7Path, get: Getter, rate?: number): Map<number, number> {
    const out = new Map<number, number>();
    for (const rep of this.reps()) {
      const r = this.runs.find((x) => x.kind === kind && x.path === path && x.rep === rep && x.ok && (rate === undefined || x.rate === rate));
      const v = r ? get(r) : undefined;
      if (v !== undefined && Number.isFinite(v)) out.set(rep, v);
    }
    return out;
  }

  med(kind: Kind, path: L7Path, get: Getter, rate?: number): number | null {
    return median([...this.values(kind, path, get, rate).values()]);
  }

  /** median over repetitions of a_i / b_i or a_i - b_i */
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

  has(p: L7Path): boolean {
    return this.paths.includes(p);
  }
}

// ---------------------------------------------------------------- getters

export const rps: Getter = (r) => {
  const v = r.tool?.rps;
  return typeof v === 'number' ? v : undefined;
};

export const lat =
  (p: 'p50' | 'p90' | 'p99' | 'max'): Getter =>
  (r) =>
    (r.tool?.latencyMs as Record<string, number | null> | undefined)?.[p] ?? undefined;

/** requests the CPU of a run is divided by: closed loop, those of the measured window; open loop, all sent (with the warm-up, as the CPU is read around the whole run) */
function requestsOf(r: Run): number | undefined {
  const t = r.tool ?? {};
  if (r.kind === 'closed') {
    const done = (t.requests as Record<string, number> | undefined)?.done;
    return typeof done === 'number' && done > 0 ? done : undefined;
  }
  return typeof t.sent === 'number' && t.sent > 0 ? t.sent : undefined;
}

/** CPU seconds of one process label (or "client", "softirq") per 1000 requests */
export function cpuPer(label: string, part: 'all' | 'sys' = 'all'): Getter {
  return (r) => {
    const cpu = label === 'softirq' ? r.softirqSeconds : part === 'sys' ? r.cpuSys?.[label] : r.cpu?.[label];
    const n = requestsOf(r);
    return cpu === undefined || n === undefined ? undefined : cpu / (n / 1000);
  };
}

/** CPU seconds of every proxy on the path per 1000 requests */
export function proxiesPer(path: L7Path): Getter {
  const labels = PATH_PROCS[path].filter((l) => !l.startsWith('server'));
  return (r) => {
    const n = requestsOf(r);
    if (n === undefined || labels.some((l) => r.cpu?.[l] === undefined)) return undefined;
    return labels.reduce((a, l) => a + r.cpu![l]!, 0) / (n / 1000);
  };
}

// ---------------------------------------------------------------- formatting

function signed(v: number | null, digits: number): string {
  if (v === null) return 'n/a';
  return `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(digits)}`;
}

function ratio(v: number | null): string {
  return v === null ? 'n/a' : `${v.toFixed(2)}×`;
}

/** the measures, in table order: [label, unit, kind, getter, digits, rate] */
function measures(w: Workload): [string, string, Kind, Getter, number, number | undefined][] {
  const out: [string, string, Kind, Getter, number, number | undefined][] = [[`requests/s, closed loop (${w.closed.conns} connections)`, 'req/s', 'closed', rps, 0, undefined]];
  for (const r of w.rates) for (const p of ['p50', 'p90', 'p99', 'max'] as const) out.push([`latency ${p} @ ${r.rate} rps`, 'ms', 'latency', lat(p), 3, r.rate]);
  return out;
}

export function mainTable(res: L7Results): string {
  const ps = res.paths;
  const lines = [
    `| measure | unit | ${ps.map((p) => LABEL[p]).join(' | ')} | ambit L7 / HAProxy L7 | ambit L7 / direct | HAProxy L7 / direct |`,
    `|---|---|${ps.map(() => '---:').join('|')}|---:|---:|---:|`,
  ];
  for (const [label, unit, kind, get, digits, rate] of measures(res.w)) {
    const v = Object.fromEntries(L7_PATHS.map((p) => [p, res.values(kind, p, get, rate)])) as Record<L7Path, Map<number, number>>;
    lines.push(
      `| ${label} | ${unit} | ${ps.map((p) => fmt(median([...v[p].values()]), digits)).join(' | ')} | ${ratio(res.paired(v.ambitL7, v.haproxyL7, 'ratio'))} | ${ratio(res.paired(v.ambitL7, v.direct, 'ratio'))} | ${ratio(res.paired(v.haproxyL7, v.direct, 'ratio'))} |`,
    );
  }
  return lines.join('\n');
}

/** pairs of paths whose per-repetition latency differences are shown */
function diffPairs(res: L7Results): [L7Path, L7Path, string][] {
  const all: [L7Path, L7Path, string][] = [
    ['ambitL7', 'direct', 'ambit L7 − direct'],
    ['haproxyL7', 'direct', 'HAProxy L7 − direct'],
    ['ambitL7', 'haproxyL7', 'ambit L7 − HAProxy L7'],
    ['ambitL7', 'ambitL4', 'waypoint alone: ambit L7 − ambit L4'],
    ['haproxyL7', 'haproxyL4', 'middle HAProxy alone: HAProxy L7 − HAProxy L4'],
  ];
  return all.filter(([a, b]) => res.has(a) && res.has(b));
}

export function addedTable(res: L7Results): string {
  const pairs = diffPairs(res);
  const lines = [`| added latency (ms) | ${pairs.map(([, , l]) => l).join(' | ')} |`, `|---|${pairs.map(() => '---:').join('|')}|`];
  for (const r of res.w.rates) {
    for (const p of ['p50', 'p90', 'p99', 'max'] as const) {
      const cells = pairs.map(([a, b]) => signed(res.paired(res.values('latency', a, lat(p), r.rate), res.values('latency', b, lat(p), r.rate), 'diff'), 3));
      lines.push(`| ${p} @ ${r.rate} rps | ${cells.join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

function kinds(w: Workload): { label: string; kind: Kind; rate?: number }[] {
  return [{ label: 'closed loop (saturated)', kind: 'closed' }, ...w.rates.map((r) => ({ label: `@ ${r.rate} rps`, kind: 'latency' as const, rate: r.rate }))];
}

/** The L7 proxies side by side, then each whole path's proxies. */
export function proxyTable(res: L7Results): string {
  const lines = [
    '| CPU s per 1000 requests | waypoint | HAProxy middle | waypoint / HAProxy middle | ztunnels (node-1 + node-2) on the L7 path | HAProxy node-1 + node-2 on the L7 path | all proxies, ambit L7 | all proxies, HAProxy L7 | ambit L7 / HAProxy L7 (all proxies) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const both = (a: string, b: string): Getter => (r) => {
    const x = cpuPer(a)(r);
    const y = cpuPer(b)(r);
    return x === undefined || y === undefined ? undefined : x + y;
  };
  for (const k of kinds(res.w)) {
    const wp = res.values(k.kind, 'ambitL7', cpuPer('waypoint'), k.rate);
    const mid = res.values(k.kind, 'haproxyL7', cpuPer('haproxy middle'), k.rate);
    const allA = res.values(k.kind, 'ambitL7', proxiesPer('ambitL7'), k.rate);
    const allH = res.values(k.kind, 'haproxyL7', proxiesPer('haproxyL7'), k.rate);
    const m = (x: Map<number, number>): number | null => median([...x.values()]);
    lines.push(
      `| ${k.label} | ${fmt(m(wp), 4)} | ${fmt(m(mid), 4)} | ${ratio(res.paired(wp, mid, 'ratio'))} | ${fmt(res.med(k.kind, 'ambitL7', both('ztunnel node-1', 'ztunnel node-2'), k.rate), 4)} | ${fmt(res.med(k.kind, 'haproxyL7', both('haproxy node-1', 'haproxy node-2'), k.rate), 4)} | ${fmt(m(allA), 4)} | ${fmt(m(allH), 4)} | ${ratio(res.paired(allA, allH, 'ratio'))} |`,
    );
    const wpSys = res.med(k.kind, 'ambitL7', cpuPer('waypoint', 'sys'), k.rate);
    const midSys = res.med(k.kind, 'haproxyL7', cpuPer('haproxy middle', 'sys'), k.rate);
    lines.push(`| … of which in the kernel (stime) | ${fmt(wpSys, 4)} | ${fmt(midSys, 4)} | ${wpSys !== null && midSys ? ratio(wpSys / midSys) : 'n/a'} | | | | | |`);
  }
  return lines.join('\n');
}

/** CPU of every process on each path per 1000 requests. */
export function splitTable(res: L7Results): string {
  const lines = ['| CPU s per 1000 requests | path | load generator | proxies (in path order) | server | kernel softirq (machine) | sum |', '|---|---|---:|---|---:|---:|---:|'];
  for (const k of kinds(res.w)) {
    for (const p of res.paths) {
      const procs = PATH_PROCS[p];
      const proxies = procs.filter((l) => !l.startsWith('server'));
      const server = procs.find((l) => l.startsWith('server'))!;
      const c = res.med(k.kind, p, cpuPer('client'), k.rate);
      const s = res.med(k.kind, p, cpuPer(server), k.rate);
      const irq = res.med(k.kind, p, cpuPer('softirq'), k.rate);
      const px = proxies.map((l) => [l, res.med(k.kind, p, cpuPer(l), k.rate)] as const);
      const sum = res.med(k.kind, p, (r) => {
        const parts = ['client', ...procs, 'softirq'].map((l) => cpuPer(l)(r));
        return parts.some((x) => x === undefined) ? undefined : parts.reduce((a, b) => a! + b!, 0);
      }, k.rate);
      lines.push(`| ${k.label} | ${LABEL[p]} | ${fmt(c, 3)} | ${px.length ? px.map(([l, v]) => `${l} ${fmt(v, 3)}`).join(', ') : '—'} | ${fmt(s, 3)} | ${fmt(irq, 3)} | ${fmt(sum, 3)} |`);
    }
  }
  return lines.join('\n');
}

export interface GoalRow {
  goal: string;
  target: string;
  measured: string;
  met: boolean | null;
  note: string;
}

export function goals(res: L7Results): GoalRow[] {
  const r1000 = res.w.rates.find((r) => r.rate === 1000)?.rate ?? res.w.rates[0]?.rate;
  const out: GoalRow[] = [];
  const wp = res.med('latency', 'ambitL7', cpuPer('waypoint'), r1000);
  const mid = res.med('latency', 'haproxyL7', cpuPer('haproxy middle'), r1000);
  out.push({
    goal: `vCPU per 1000 rps, waypoint process (CPU s per 1000 requests @ ${r1000} rps)`,
    target: `≤ ${GOALS.waypointVcpuPer1000}`,
    measured: fmt(wp, 3),
    met: wp === null ? null : wp <= GOALS.waypointVcpuPer1000,
    note: `HAProxy middle: ${fmt(mid, 3)}`,
  });
  const p99 = (a: L7Path, b: L7Path): number | null => res.paired(res.values('latency', a, lat('p99'), r1000), res.values('latency', b, lat('p99'), r1000), 'diff');
  const whole = p99('ambitL7', 'direct');
  out.push({
    goal: `added p99 @ ${r1000} rps, whole ambit L7 path (ztunnels + waypoint) over direct`,
    target: `≤ +${GOALS.addedP99Ms} ms`,
    measured: `${signed(whole, 3)} ms`,
    met: whole === null ? null : whole <= GOALS.addedP99Ms,
    note: `HAProxy L7 over direct: ${signed(p99('haproxyL7', 'direct'), 3)} ms`,
  });
  if (res.has('ambitL4')) {
    const own = p99('ambitL7', 'ambitL4');
    out.push({
      goal: `added p99 @ ${r1000} rps, the waypoint alone (ambit L7 − ambit L4)`,
      target: `≤ +${GOALS.addedP99Ms} ms`,
      measured: `${signed(own, 3)} ms`,
      met: own === null ? null : own <= GOALS.addedP99Ms,
      note: res.has('haproxyL4') ? `middle HAProxy alone: ${signed(p99('haproxyL7', 'haproxyL4'), 3)} ms` : '',
    });
  }
  return out;
}

export function goalsTable(gs: GoalRow[]): string {
  return ['| goal | target | measured | met | for comparison |', '|---|---|---:|---|---|', ...gs.map((g) => `| ${g.goal} | ${g.target} | ${g.measured} | ${g.met === null ? 'n/a' : g.met ? 'yes' : '**no**'} | ${g.note} |`)].join('\n');
}

export function memoryTable(start: Record<string, number>, end: Record<string, number>): string {
  const labels = ['waypoint', 'haproxy middle', 'ztunnel node-1', 'ztunnel node-2', 'haproxy node-1', 'haproxy node-2'];
  return ['| RSS (MiB) | ' + labels.join(' | ') + ' |', '|---|' + labels.map(() => '---:').join('|') + '|', `| before the runs | ${labels.map((l) => fmt(start[l], 1)).join(' | ')} |`, `| after the runs | ${labels.map((l) => fmt(end[l], 1)).join(' | ')} |`].join('\n');
}

export function runsTable(res: L7Results): string {
  const w = res.w;
  const lines = [
    `| rep | path | req/s closed loop | ${w.rates.map((r) => `p50 / p99 ms @ ${r.rate} | lost / not 200`).join(' | ')} | other load vCPU (median of the rep's runs) |`,
    `|---:|---|---:|${w.rates.map(() => '---:|---:').join('|')}|---:|`,
  ];
  for (const rep of res.reps()) {
    for (const p of res.paths) {
      const rs = res.runs.filter((r) => r.rep === rep && r.path === p);
      const closed = rs.find((r) => r.kind === 'closed');
      const cells = w.rates.map((rt) => {
        const r = rs.find((x) => x.kind === 'latency' && x.rate === rt.rate);
        if (!r) return 'n/a | n/a';
        if (!r.ok) return 'failed | n/a';
        return `${fmt(lat('p50')(r), 3)} / ${fmt(lat('p99')(r), 3)} | ${String(r.tool?.lost ?? 'n/a')} / ${String(r.tool?.badStatus ?? 'n/a')}`;
      });
      const other = median(rs.map((r) => r.otherVcpu).filter((x): x is number => x !== undefined));
      lines.push(`| ${rep} | ${LABEL[p]} | ${closed ? (closed.ok ? fmt(rps(closed), 0) : 'failed') : 'n/a'} | ${cells.join(' | ')} | ${fmt(other, 2)} |`);
    }
  }
  return lines.join('\n');
}
