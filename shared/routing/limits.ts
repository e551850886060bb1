/**
 * Connection-pool limits of a destination (Istio DestinationRule `connectionPool`, Envoy's circuit
 * breakers): requests in flight (`http2MaxRequests`), HTTP/1.1 requests beyond the connection
 * limit wait in a queue of at most `http1MaxPendingRequests`; anything beyond is refused at once
 * (503, response flag UO). No timers: callers cancel a waiting request themselves.
 */

import type { ConnectionPoolPolicy } from './types.js';

export type Admission = 'granted' | 'queued' | 'overflow';

/** A request waiting for a slot: cancel it when the request goes away. */
export interface Waiter {
  cancel(): void;
}

export class RequestLimiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private limits: ConnectionPoolPolicy | null) {}

  setLimits(limits: ConnectionPoolPolicy | null): void {
    this.limits = limits;
    this.drain();
  }

  get inFlight(): number {
    return this.active;
  }

  get pending(): number {
    return this.queue.length;
  }

  /**
   * Asks for a slot. `http1`: the request needs a connection of its own (HTTP/1.1 upstream), so
   * `maxConnections` bounds concurrency and extra requests queue. `granted` calls nothing;
   * `queued` calls `onGranted` later (or never, after cancel); `overflow` means refuse.
   */
  acquire(http1: boolean, onGranted: () => void): { admission: Admission; waiter: Waiter | null } {
    const l = this.limits;
    if (l?.http2MaxRequests != null && this.active >= l.http2MaxRequests) return { admission: 'overflow', waiter: null };
    const connections = http1 ? l?.maxConnections ?? null : null;
    if (connections === null || this.active < connections) {
      this.active++;
      return { admission: 'granted', waiter: null };
    }
    if (l?.http1MaxPendingRequests != null && this.queue.length >= l.http1MaxPendingRequests) return { admission: 'overflow', waiter: null };
    const grant = (): void => {
      this.active++;
      onGranted();
    };
    this.queue.push(grant);
    return {
      admission: 'queued',
      waiter: {
        cancel: () => {
          const i = this.queue.indexOf(grant);
          if (i >= 0) this.queue.splice(i, 1);
        },
      },
    };
  }

  /** Gives a slot back; the oldest waiting request gets it. */
  release(): void {
    if (this.active > 0) this.active--;
    this.drain();
  }

  private drain(): void {
    const connections = this.limits?.maxConnections ?? null;
    const requests = this.limits?.http2MaxRequests ?? null;
    while (this.queue.length > 0 && (connections === null || this.active < connections) && (requests === null || this.active < requests)) this.queue.shift()!();
  }
}
