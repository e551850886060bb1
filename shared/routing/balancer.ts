/**
 * Endpoint selection within a destination (Istio DestinationRule `loadBalancer`). Each balancer
 * is small and keeps only its own cursor or ring; what it needs per request (random numbers,
 * requests in flight per endpoint, the hash key) is passed in.
 */

import type { LoadBalancerPolicy } from './types.js';

/** What a balancer needs per pick. */
export interface PickContext {
  random: () => number;
  /** requests in flight to an endpoint */
  active: (key: string) => number;
  /** consistent hash key of the request; null: none (the pick is random) */
  hashKey: string | null;
}

export interface LoadBalancer {
  readonly name: string;
  /** One of `endpoints` (already without ejected ones), or null when there is none. */
  pick<T extends { key: string }>(endpoints: readonly T[], cx: PickContext): T | null;
}

export class RoundRobinBalancer implements LoadBalancer {
  readonly name = 'ROUND_ROBIN';
  private next = 0;

  pick<T extends { key: string }>(endpoints: readonly T[]): T | null {
    if (endpoints.length === 0) return null;
    const e = endpoints[this.next % endpoints.length]!;
    this.next = (this.next + 1) % 1_000_000_007;
    return e;
  }
}

export class RandomBalancer implements LoadBalancer {
  readonly name = 'RANDOM';

  pick<T extends { key: string }>(endpoints: readonly T[], cx: PickContext): T | null {
    if (endpoints.length === 0) return null;
    return endpoints[Math.min(endpoints.length - 1, Math.floor(cx.random() * endpoints.length))]!;
  }
}

/** Envoy's LEAST_REQUEST: the less busy of two endpoints drawn at random (power of two choices). */
export class LeastRequestBalancer implements LoadBalancer {
  readonly name = 'LEAST_REQUEST';

  pick<T extends { key: string }>(endpoints: readonly T[], cx: PickContext): T | null {
    const n = endpoints.length;
    if (n === 0) return null;
    if (n === 1) return endpoints[0]!;
    const i = Math.min(n - 1, Math.floor(cx.random() * n));
    let j = Math.min(n - 2, Math.floor(cx.random() * (n - 1)));
    if (j >= i) j++;
    const a = endpoints[i]!;
    const b = endpoints[j]!;
    return cx.active(b.key) < cx.active(a.key) ? b : a;
  }
}

/** 32-bit FNV-1a with a final avalanche (murmur3 fmix), so near-equal keys spread over the ring. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Ring hash: a key keeps going to the same endpoint while the set of endpoints is stable; few keys move when it changes. */
export class ConsistentHashBalancer implements LoadBalancer {
  readonly name = 'CONSISTENT_HASH';
  private ringFor = '';
  private points: Uint32Array = new Uint32Array(0);
  private owners: string[] = [];
  private readonly fallback = new RandomBalancer();

  constructor(private readonly pointsPerEndpoint = 128) {}

  private build(keys: readonly string[]): void {
    const id = keys.join(',');
    if (id === this.ringFor) return;
    const pts: { h: number; k: string }[] = [];
    for (const k of keys) for (let i = 0; i < this.pointsPerEndpoint; i++) pts.push({ h: hash32(`${k}_${i}`), k });
    pts.sort((a, b) => a.h - b.h || (a.k < b.k ? -1 : 1));
    this.points = Uint32Array.from(pts.map((p) => p.h));
    this.owners = pts.map((p) => p.k);
    this.ringFor = id;
  }

  pick<T extends { key: string }>(endpoints: readonly T[], cx: PickContext): T | null {
    if (endpoints.length === 0) return null;
    if (cx.hashKey === null) return this.fallback.pick(endpoints, cx);
    const keys = endpoints.map((e) => e.key).sort();
    this.build(keys);
    const h = hash32(cx.hashKey);
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const owner = this.owners[lo === this.points.length ? 0 : lo]!;
    return endpoints.find((e) => e.key === owner) ?? null;
  }
}

/** The balancer for a policy; Istio's default is LEAST_REQUEST. */
export function createBalancer(policy: LoadBalancerPolicy | null): LoadBalancer {
  switch (policy?.type ?? 'LEAST_REQUEST') {
    case 'ROUND_ROBIN':
      return new RoundRobinBalancer();
    case 'RANDOM':
      return new RandomBalancer();
    case 'CONSISTENT_HASH':
      return new ConsistentHashBalancer();
    default:
      return new LeastRequestBalancer();
  }
}

/** The consistent-hash key of a request under `policy`; null when the policy does not hash or the value is missing. */
export function hashKeyFor(
  policy: LoadBalancerPolicy | null,
  req: { headers: Readonly<Record<string, string | string[] | undefined>>; query: string; sourceIp: string | null },
): string | null {
  if (policy?.type !== 'CONSISTENT_HASH') return null;
  const on = policy.hashOn;
  if ('header' in on) {
    const v = req.headers[on.header];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(',') : v;
  }
  if ('queryParameter' in on) {
    const v = new URLSearchParams(req.query).get(on.queryParameter);
    return v;
  }
  return req.sourceIp;
}
