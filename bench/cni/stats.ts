/** Percentiles and summaries for the CNI bench (pure). */

/**
 * The p-th percentile (0 < p ≤ 100) by the nearest-rank method: the smallest sample with at
 * least p% of the samples at or below it. Always one of the samples; null for none. With 100
 * samples p99 is the second largest, p50 the 50th smallest.
 */
export function percentile(samples: readonly number[], p: number): number | null {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  const xs = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  return xs[Math.max(0, Math.ceil((p / 100) * xs.length) - 1)]!;
}

export interface Summary {
  n: number;
  min: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

/** n, min, p50, p90, p99, max and mean of the finite samples. */
export function summarize(samples: readonly number[]): Summary {
  const xs = samples.filter((x) => Number.isFinite(x));
  const mean = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
  return {
    n: xs.length,
    min: xs.length ? Math.min(...xs) : null,
    p50: percentile(xs, 50),
    p90: percentile(xs, 90),
    p99: percentile(xs, 99),
    max: xs.length ? Math.max(...xs) : null,
    mean,
  };
}

/** Element-wise a[i] − b[i] of two paired series (pairs with a missing side are left out). */
export function pairedDifferences(a: readonly (number | null)[], b: readonly (number | null)[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (typeof x === 'number' && typeof y === 'number' && Number.isFinite(x) && Number.isFinite(y)) out.push(x - y);
  }
  return out;
}
