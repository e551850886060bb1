/** Fault injection (Istio VirtualService `fault`): whether to delay and whether to abort a request. */

import { chance } from './split.js';
import type { FaultPolicy } from './types.js';

export interface FaultVerdict {
  /** wait this long before going on (0: no delay) */
  delayMs: number;
  /** answer with this instead of forwarding; null: forward */
  abort: { httpStatus: number | null; grpcStatus: number | null } | null;
}

const NONE: FaultVerdict = { delayMs: 0, abort: null };

/** Decides delay and abort independently, each with its own random draw, as Envoy does. */
export function faultDecision(fault: FaultPolicy | null, rand: () => number): FaultVerdict {
  if (fault === null) return NONE;
  const delayMs = fault.delay !== null && chance(fault.delay.percent, rand()) ? fault.delay.fixedDelayMs : 0;
  const abort = fault.abort !== null && chance(fault.abort.percent, rand()) ? { httpStatus: fault.abort.httpStatus, grpcStatus: fault.abort.grpcStatus } : null;
  if (delayMs === 0 && abort === null) return NONE;
  return { delayMs, abort };
}
