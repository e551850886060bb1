/**
 * Outlier detection (Istio DestinationRule `outlierDetection`, Envoy's consecutive 5xx and
 * gateway-error detectors): an endpoint that fails N times in a row is ejected for
 * baseEjectionTime × (times ejected), never more than maxEjectionPercent of the endpoints at
 * once, and comes back when that time is over. Time is passed in, so tests need no clock.
 */

import type { AttemptOutcome } from './retry.js';
import type { OutlierDetectionPolicy } from './types.js';

/** How an attempt counts for outlier detection. */
export type HealthSignal = 'success' | '5xx' | 'gateway-error' | 'ignore';

/** Envoy's view: local failures (connect, reset, timeout) count as gateway errors, and so as 5xx. */
export function healthSignal(o: AttemptOutcome): HealthSignal {
  switch (o.kind) {
    case 'response':
      if (o.status === 502 || o.status === 503 || o.status === 504) return 'gateway-error';
      return o.status >= 500 ? '5xx' : 'success';
    case 'connect-failure':
    case 'reset':
    case 'refused-stream':
    case 'timeout':
      return 'gateway-error';
    case 'overflow':
      return 'ignore';
  }
}

interface EndpointHealth {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** times ejected, decays by one per interval spent back in service */
  ejections: number;
  ejectedUntil: number | null;
  returnedAt: number | null;
}

/** Envoy's default cap on one ejection. */
const MAX_EJECTION_MS = 300_000;

export interface Ejection {
  endpoint: string;
  until: number;
  reason: string;
}

/** Health of the endpoints of one destination. Keys are endpoint addresses ("ip:port"). */
export class OutlierTracker {
  private readonly hosts = new Map<string, EndpointHealth>();

  constructor(private policy: OutlierDetectionPolicy) {}

  /** Applies a changed policy; ejections in progress keep their end time. */
  setPolicy(policy: OutlierDetectionPolicy): void {
    this.policy = policy;
  }

  private state(endpoint: string): EndpointHealth {
    let h = this.hosts.get(endpoint);
    if (h === undefined) {
      h = { consecutive5xx: 0, consecutiveGateway: 0, ejections: 0, ejectedUntil: null, returnedAt: null };
      this.hosts.set(endpoint, h);
    }
    return h;
  }

  /** Brings back an endpoint whose ejection time is over. */
  private settle(h: EndpointHealth, now: number): void {
    if (h.ejectedUntil !== null && now >= h.ejectedUntil) {
      h.ejectedUntil = null;
      h.returnedAt = now;
    }
  }

  /** Whether the endpoint is ejected at `now`. */
  isEjected(endpoint: string, now: number): boolean {
    const h = this.hosts.get(endpoint);
    if (h === undefined) return false;
    this.settle(h, now);
    return h.ejectedUntil !== null;
  }

  /** How many endpoints are ejected at `now`. */
  ejectedCount(now: number): number {
    let n = 0;
    for (const h of this.hosts.values()) {
      this.settle(h, now);
      if (h.ejectedUntil !== null) n++;
    }
    return n;
  }

  /**
   * Records an attempt's result. `total` is the number of endpoints of the destination, for the
   * ejection cap. Returns the ejection when this result caused one.
   */
  record(endpoint: string, signal: HealthSignal, now: number, total: number): Ejection | null {
    if (signal === 'ignore') return null;
    const h = this.state(endpoint);
    this.settle(h, now);
    if (signal === 'success') {
      h.consecutive5xx = 0;
      h.consecutiveGateway = 0;
      return null;
    }
    h.consecutive5xx++;
    if (signal === 'gateway-error') h.consecutiveGateway++;
    else h.consecutiveGateway = 0;
    if (h.ejectedUntil !== null) return null;
    const p = this.policy;
    let reason: string | null = null;
    if (p.consecutive5xxErrors !== null && h.consecutive5xx >= p.consecutive5xxErrors) reason = `${h.consecutive5xx} consecutive 5xx`;
    else if (p.consecutiveGatewayErrors !== null && h.consecutiveGateway >= p.consecutiveGatewayErrors) reason = `${h.consecutiveGateway} consecutive gateway errors`;
    if (reason === null) return null;
    // Never eject beyond the cap: with 4 endpoints and 50%, at most 2 are out at once.
    const after = this.ejectedCount(now) + 1;
    if (total <= 0 || (100 * after) / total > p.maxEjectionPercent) return null;
    if (h.returnedAt !== null && h.ejections > 0) {
      h.ejections = Math.max(0, h.ejections - Math.floor((now - h.returnedAt) / p.intervalMs));
    }
    h.ejections++;
    const duration = Math.min(p.baseEjectionTimeMs * h.ejections, Math.max(MAX_EJECTION_MS, p.baseEjectionTimeMs));
    h.ejectedUntil = now + duration;
    h.returnedAt = null;
    h.consecutive5xx = 0;
    h.consecutiveGateway = 0;
    return { endpoint, until: h.ejectedUntil, reason: `${reason}; ejected for ${duration} ms (ejection ${h.ejections})` };
  }

  /** The endpoints not ejected at `now`; all of them when every one is ejected (Envoy's panic mode). */
  available<T>(endpoints: readonly T[], key: (e: T) => string, now: number): readonly T[] {
    if (this.hosts.size === 0) return endpoints;
    const out = endpoints.filter((e) => !this.isEjected(key(e), now));
    return out.length > 0 ? out : endpoints;
  }

  /** Forgets endpoints that are gone. */
  retain(keys: ReadonlySet<string>): void {
    for (const k of this.hosts.keys()) if (!keys.has(k)) this.hosts.delete(k);
  }

  /** Current ejections, for debugging endpoints. */
  ejections(now: number): Ejection[] {
    const out: Ejection[] = [];
    for (const [endpoint, h] of this.hosts) {
      this.settle(h, now);
      if (h.ejectedUntil !== null) out.push({ endpoint, until: h.ejectedUntil, reason: `ejection ${h.ejections}` });
    }
    return out;
  }
}
