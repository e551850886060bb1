/**
 * Retry decisions: whether an attempt's outcome is retried under a policy, and after what
 * back-off. Pure: the caller passes the random number used for jitter.
 */

import type { RetryCondition, RetryPolicy } from './types.js';

/** How one attempt to a backend ended. */
export type AttemptOutcome =
  /** response headers arrived (grpcStatus from headers of a trailers-only response, when present) */
  | { kind: 'response'; status: number; grpcStatus: number | null }
  /** no connection to the endpoint */
  | { kind: 'connect-failure' }
  /** the connection or stream was reset before response headers */
  | { kind: 'reset' }
  /** HTTP/2 REFUSED_STREAM: the request was never processed */
  | { kind: 'refused-stream' }
  /** the per-try timeout fired before response headers */
  | { kind: 'timeout' }
  /** the connection pool limits refused the attempt */
  | { kind: 'overflow' };

export interface RetryVerdict {
  retry: boolean;
  /** wait this long before the next attempt */
  backoffMs: number;
  /** why (or why not), for logs */
  reason: string;
}

/** Istio's default retry policy for HTTP routes that set none. */
export const DEFAULT_RETRY_ON: readonly RetryCondition[] = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 2,
  perTryTimeoutMs: null,
  retryOn: [...DEFAULT_RETRY_ON],
  retriableStatusCodes: [503],
  backoffBaseMs: 25,
};

/** Retries switched off. */
export const NO_RETRY: RetryPolicy = { attempts: 0, perTryTimeoutMs: null, retryOn: [], retriableStatusCodes: [], backoffBaseMs: 25 };

const GRPC_CONDITIONS: Partial<Record<RetryCondition, number>> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
};

/** Which retry condition of `on` this outcome meets; null when none does. */
export function retryableBy(on: readonly RetryCondition[], codes: readonly number[], outcome: AttemptOutcome): RetryCondition | null {
  const has = (c: RetryCondition): boolean => on.includes(c);
  switch (outcome.kind) {
    case 'connect-failure':
      if (has('connect-failure')) return 'connect-failure';
      if (has('5xx')) return '5xx';
      if (has('gateway-error')) return 'gateway-error';
      return null;
    case 'reset':
      if (has('reset')) return 'reset';
      if (has('5xx')) return '5xx';
      if (has('gateway-error')) return 'gateway-error';
      return null;
    case 'refused-stream':
      if (has('refused-stream')) return 'refused-stream';
      if (has('reset')) return 'reset';
      if (has('5xx')) return '5xx';
      return null;
    case 'timeout':
      // Envoy answers a per-try timeout as a 504, which these conditions cover.
      if (has('5xx')) return '5xx';
      if (has('gateway-error')) return 'gateway-error';
      return null;
    case 'overflow':
      return null;
    case 'response': {
      const s = outcome.status;
      if (s >= 500 && has('5xx')) return '5xx';
      if ((s === 502 || s === 503 || s === 504) && has('gateway-error')) return 'gateway-error';
      if (s === 409 && has('retriable-4xx')) return 'retriable-4xx';
      if (has('retriable-status-codes') && codes.includes(s)) return 'retriable-status-codes';
      if (outcome.grpcStatus !== null) {
        for (const c of on) if (GRPC_CONDITIONS[c] === outcome.grpcStatus) return c;
      }
      return null;
    }
  }
}

/**
 * Whether to retry after attempt number `attempt` (1 = the first try) ended with `outcome`.
 * Back-off is Envoy's fully jittered exponential: uniform in [0, (2^n - 1) × base], capped at 10 × base.
 */
export function retryDecision(policy: RetryPolicy, attempt: number, outcome: AttemptOutcome, rand: number): RetryVerdict {
  const by = retryableBy(policy.retryOn, policy.retriableStatusCodes, outcome);
  if (by === null) return { retry: false, backoffMs: 0, reason: `${describeOutcome(outcome)} is not in retryOn (${policy.retryOn.join(',') || 'none'})` };
  if (attempt > policy.attempts) return { retry: false, backoffMs: 0, reason: `retry limit ${policy.attempts} reached (${describeOutcome(outcome)})` };
  const cap = 10 * policy.backoffBaseMs;
  const window = Math.min(cap, (2 ** attempt - 1) * policy.backoffBaseMs);
  return { retry: true, backoffMs: Math.floor(rand * window), reason: `retry ${attempt} of ${policy.attempts} on ${by} (${describeOutcome(outcome)})` };
}

export function describeOutcome(o: AttemptOutcome): string {
  switch (o.kind) {
    case 'response':
      return o.grpcStatus !== null ? `status ${o.status} grpc-status ${o.grpcStatus}` : `status ${o.status}`;
    case 'connect-failure':
      return 'connect failure';
    case 'refused-stream':
      return 'refused stream';
    default:
      return o.kind;
  }
}
