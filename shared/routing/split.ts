/**
 * Traffic split between a rule's weighted backends (canary). Pure: the caller passes the
 * random number, so tests can walk the whole range.
 */

/** The backend a request goes to: weight / total of the time. null when every weight is 0. */
export function pickBackend<T extends { weight: number }>(backends: readonly T[], rand: number): T | null {
  let total = 0;
  for (let i = 0; i < backends.length; i++) total += Math.max(0, backends[i]!.weight);
  if (total <= 0) return null;
  let point = rand * total;
  for (let i = 0; i < backends.length; i++) {
    const w = Math.max(0, backends[i]!.weight);
    if (point < w) return backends[i]!;
    point -= w;
  }
  // rand == 1 or rounding: the last backend with weight
  for (let i = backends.length - 1; i >= 0; i--) if (backends[i]!.weight > 0) return backends[i]!;
  return null;
}

/** Whether a percentage-gated action happens this time (`percent` 0..100, `rand` in [0, 1)). */
export function chance(percent: number, rand: number): boolean {
  if (percent >= 100) return true;
  if (percent <= 0) return false;
  return rand * 100 < percent;
}
