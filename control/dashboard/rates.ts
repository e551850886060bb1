/**
 * Rates from counter scrapes: what a dashboard reads from two scrapes of the same target,
 * the way Prometheus' rate() does (a counter that went down was reset, and counts from zero).
 */
import type { Sample } from '../../shared/telemetry/prometheus-text.js';

/** One scrape of one target. */
export interface Scrape {
  /** ms since the epoch */
  time: number;
  samples: Sample[];
}

/** A counter series: its value now and how fast it grew over the window. */
export interface SeriesRate {
  name: string;
  labels: Record<string, string>;
  total: number;
  perSecond: number;
}

/** Set once per process: when it changes between scrapes, the target restarted and its counters began again. */
const START_TIME = 'process_start_time_seconds';

function seriesKey(s: Sample): string {
  const labels = Object.keys(s.labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(s.labels[k])}`)
    .join(',');
  return `${s.name}{${labels}}`;
}

function startTime(s: Scrape): number | undefined {
  return s.samples.find((x) => x.name === START_TIME)?.value;
}

/**
 * The rate of each counter named in `names` between two scrapes (pure). A series absent
 * before counted from zero (client libraries create a series at its first increment); a
 * series that went down, or a target whose start time changed, was reset. With no earlier
 * scrape, or none earlier in time, every rate is 0.
 */
export function counterRates(before: Scrape | null, after: Scrape, names: ReadonlySet<string>): SeriesRate[] {
  const seconds = before ? (after.time - before.time) / 1000 : 0;
  const restarted = before !== null && startTime(before) !== startTime(after);
  const old = new Map<string, number>();
  if (before && !restarted) for (const s of before.samples) if (names.has(s.name)) old.set(seriesKey(s), s.value);
  const out: SeriesRate[] = [];
  for (const s of after.samples) {
    if (!names.has(s.name) || !Number.isFinite(s.value)) continue;
    let perSecond = 0;
    if (seconds > 0) {
      const was = old.get(seriesKey(s)) ?? 0;
      const grew = s.value >= was ? s.value - was : s.value;
      perSecond = grew / seconds;
    }
    out.push({ name: s.name, labels: s.labels, total: s.value, perSecond });
  }
  return out;
}

/**
 * Recent scrapes of each target, so rates span a steady window however often the page
 * asks: the rate is taken between the newest scrape and the oldest one within the window.
 */
export class ScrapeHistory {
  private readonly byTarget = new Map<string, Scrape[]>();

  constructor(private readonly windowMs: number) {}

  add(target: string, scrape: Scrape): void {
    const list = this.byTarget.get(target) ?? [];
    list.push(scrape);
    const from = scrape.time - this.windowMs;
    while (list.length > 1 && list[0]!.time < from) list.shift();
    this.byTarget.set(target, list);
  }

  /** Forgets targets not in `keep` (nodes that left). */
  retain(keep: ReadonlySet<string>): void {
    for (const t of this.byTarget.keys()) if (!keep.has(t)) this.byTarget.delete(t);
  }

  /** The window's rates of a target, and how many seconds the window spans (0 with a single scrape). */
  rates(target: string, names: ReadonlySet<string>): { rates: SeriesRate[]; seconds: number } {
    const list = this.byTarget.get(target);
    if (!list || list.length === 0) return { rates: [], seconds: 0 };
    const newest = list[list.length - 1]!;
    const oldest = list.length > 1 ? list[0]! : null;
    return { rates: counterRates(oldest, newest, names), seconds: oldest ? (newest.time - oldest.time) / 1000 : 0 };
  }
}
