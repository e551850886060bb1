/**
 * How a ztunnel leaves its node without cutting what it carries (an upgrade, a node drain).
 *
 * 1. Hand-over: the node agent's connection is dropped, so the agent hands the pods to the
 *    next ztunnel. Meanwhile this one keeps its listeners in the pods' netns: both ztunnels
 *    listen there (SO_REUSEPORT) and new connections are served by either, never refused.
 * 2. Stop accepting: the pods' listeners close and HBONE clients get a GOAWAY, so new
 *    connections go to the next ztunnel only (or are refused, if none came: fail closed).
 * 3. Drain: open connections finish on their own until the deadline; what is still open
 *    then is reset, so no app reads a cut stream as a complete one.
 */

export interface DrainTimes {
  /** how long this ztunnel keeps serving new connections beside its successor */
  handoverMs: number;
  /** from the start, how long open connections may take to finish */
  deadlineMs: number;
}

/** What draining does to a ztunnel (ztunnel/main.ts gives the real steps, tests their own). */
export interface DrainSteps {
  /** pods this ztunnel captures: with none there is nothing to hand over */
  pods(): number;
  /** drops the node agent, so the pods go to the next ztunnel */
  handOver(): void;
  /** closes the pods' listeners; open connections carry on */
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
    const hadPods = steps.pods() > 0;
    steps.handOver();
    if (hadPods) await this.wait(Math.min(times.handoverMs, times.deadlineMs));
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
