/**
 * How a proxy leaves without cutting what it carries (an upgrade, a node drain, a scale-down).
 *
 * 1. Hand-over: whoever sends connections here is told to go elsewhere (ztunnel: the node
 *    agent hands the pods to the next ztunnel; waypoint: it reports not ready, and the control
 *    plane drops it from the waypoint's addresses). Meanwhile new connections are still served:
 *    those sent before everyone heard must not be refused.
 * 2. Stop accepting: listeners close, HBONE and HTTP/2 clients get a GOAWAY and HTTP/1.1 ones
 *    `connection: close`, so new connections go elsewhere (or are refused, if nobody took
 *    over: fail closed).
 * 3. Drain: open connections finish on their own until the deadline; what is still open
 *    then is reset, so no app reads a cut stream as a complete one.
 */

import type { Logger } from './telemetry/log.js';

export interface DrainTimes {
  /** how long the proxy keeps taking new connections while whoever sends them learns it is going */
  handoverMs: number;
  /** from the start, how long open connections may take to finish */
  deadlineMs: number;
}

/** What draining does to a proxy (each main gives its real steps, tests their own). */
export interface DrainSteps {
  /** starts the hand-over; false when nobody can be sending here, so there is nothing to wait for */
  handOver(): boolean;
  /** closes the listeners and asks clients to go; open connections carry on */
  stopAccepting(): Promise<void>;
  /** connections open or being set up */
  open(): number;
  /** resets every open connection */
  cut(): void;
}

export interface DrainResult {
  /** connections open when the drain started */
  openAtStart: number;
  /** connections reset at the deadline */
  cut: number;
  /** whether it was cut short (a second signal) */
  interrupted: boolean;
  ms: number;
}

/** Polling period for open connections: a draining process has nothing better to do. */
const POLL_MS = 100;

export class Drain {
  private interrupt: () => void = () => undefined;
  private readonly interrupted: Promise<void>;
  private stopped = false;

  constructor(private readonly steps: DrainSteps, private readonly times: DrainTimes) {
    this.interrupted = new Promise((resolve) => {
      this.interrupt = () => {
        this.stopped = true;
        resolve();
      };
    });
  }

  /** Ends the drain now: what is open is cut at once. */
  stopNow(): void {
    this.interrupt();
  }

  /** Waits `ms`, or less if the drain is stopped. */
  private wait(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, ms)))), this.interrupted]).finally(() => clearTimeout(timer));
  }

  async run(): Promise<DrainResult> {
    const { steps, times } = this;
    const started = Date.now();
    const left = (): number => times.deadlineMs - (Date.now() - started);
    const openAtStart = steps.open();
    if (steps.handOver()) await this.wait(Math.min(times.handoverMs, times.deadlineMs));
    await steps.stopAccepting();
    while (!this.stopped && steps.open() > 0 && left() > 0) await this.wait(Math.min(POLL_MS, left()));
    const cut = steps.open();
    if (cut > 0) steps.cut();
    return { openAtStart, cut, interrupted: this.stopped, ms: Date.now() - started };
  }
}

/** Parses a number of seconds given on the command line; the error names the flag. */
export function seconds(v: string, flag: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new Error(`${flag} must be a number of seconds (0 or more), got "${v}"`);
  return n;
}

/** The drain times from `--handover-seconds` and `--drain-seconds` (the hand-over is part of the drain). */
export function drainTimes(o: { handoverSeconds: string; drainSeconds: string }): DrainTimes {
  const handoverMs = seconds(o.handoverSeconds, '--handover-seconds') * 1000;
  const deadlineMs = seconds(o.drainSeconds, '--drain-seconds') * 1000;
  if (handoverMs > deadlineMs) throw new Error(`--handover-seconds (${o.handoverSeconds}) must not be longer than --drain-seconds (${o.drainSeconds})`);
  return { handoverMs, deadlineMs };
}

/** A proxy's ways to stop (see handleStopSignals). */
export interface StopPlan {
  log: Logger;
  times: DrainTimes;
  /** on SIGTERM: starts draining (and says so) and gives the drain's steps */
  drain(): DrainSteps;
  /** on SIGINT: closes the listeners and cuts what is open */
  now(): Promise<void> | void;
  /** after either: lets go of the rest and exits */
  exit(): void;
}

/**
 * SIGTERM drains (an upgrade, a rollout: what the kubelet sends); SIGINT, or a second signal
 * while draining, stops at once. The result says whether a drain has started.
 */
export function handleStopSignals(plan: StopPlan): { readonly draining: boolean } {
  let drain: Drain | null = null;
  let stopping = false;
  const stopNow = (): void => {
    if (drain) {
      drain.stopNow();
      return;
    }
    if (stopping) return;
    stopping = true;
    plan.log.info('stopping now: what is open is cut');
    void Promise.resolve(plan.now()).finally(() => plan.exit());
  };
  const stopGracefully = (): void => {
    if (stopping) {
      stopNow();
      return;
    }
    stopping = true;
    const d = new Drain(plan.drain(), plan.times);
    drain = d;
    void d.run().then((r) => {
      plan.log.info({ connectionsAtStart: r.openAtStart, cut: r.cut, interrupted: r.interrupted, ms: r.ms }, 'drained');
      plan.exit();
    });
  };
  process.on('SIGTERM', stopGracefully);
  process.on('SIGINT', stopNow);
  return {
    get draining() {
      return drain !== null;
    },
  };
}
