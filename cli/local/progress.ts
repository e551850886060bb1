/**
 * Progress of `ambit local up`: nodes, daemons, pods, capture, certificates and readiness as
 * counts. On a terminal, a live status of three lines redrawn in place under the step lines (a
 * spinner, what is being waited for, the counts), kept as a summary at the end; elsewhere (a
 * pipe, a CI log) plain timestamped lines without escape codes. Rendering is pure over the
 * counts, so it is tested without a terminal.
 */

/** n of total. */
export interface Count {
  done: number;
  total: number;
}

/** What `up` has brought up so far. */
export interface UpCounts {
  nodes: Count;
  control: boolean;
  /** ztunnels answering /healthz/ready */
  ztunnels: Count;
  /** node agents with ambit-cni chained */
  agents: Count;
  /** pods created through the CNI chain */
  pods: Count;
  /** pods whose processes run */
  running: Count;
  /** ambient pods captured by their node's ztunnel */
  captured: Count;
  /** identities of captured pods (per node) whose certificate ztunnel holds */
  certificates: Count;
  /** nodes whose ztunnel has every running pod in its config */
  synced: Count;
}

/** A change to report: some counts, and/or what is being done now. */
export type UpProgress = Partial<UpCounts> & { activity?: string };

export function emptyCounts(): UpCounts {
  const z = (): Count => ({ done: 0, total: 0 });
  return { nodes: z(), control: false, ztunnels: z(), agents: z(), pods: z(), running: z(), captured: z(), certificates: z(), synced: z() };
}

/** The counts in two lines: the machinery (nodes, daemons), then the pods and what they need. */
export function countsLines(c: UpCounts): [string, string] {
  const n = (x: Count): string => `${x.done}/${x.total}`;
  return [
    [`nodes ${n(c.nodes)}`, `control ${c.control ? 'up' : 'starting'}`, `ztunnels ${n(c.ztunnels)} ready`, `agents ${n(c.agents)}`].join(' · '),
    [`pods ${n(c.pods)} created`, `${n(c.running)} running`, `captured ${n(c.captured)}`, `certificates ${n(c.certificates)}`, `synced ${n(c.synced)}`].join(' · '),
  ];
}

/** Where a progress display writes (process.stdout, or a buffer in tests). */
export interface ProgressOutput {
  write(s: string): unknown;
  /** terminal width, when known */
  columns?: number;
}

/** What `up` talks to. */
export interface ProgressDisplay {
  /** a step is done: a line that stays */
  say(line: string): void;
  /** counts changed, or what is being waited for */
  update(p: UpProgress): void;
  /** the end: the final counts stay on screen; timers stop */
  finish(ok: boolean): void;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** Local wall-clock time, `HH:MM:SS`. */
export function clockTime(ms: number): string {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function apply(c: UpCounts, p: UpProgress): string | undefined {
  const { activity, ...counts } = p;
  Object.assign(c, counts);
  return activity;
}

/** Not a terminal: each step as `HH:MM:SS line`; the counts once at the end. No escape codes. */
export class PlainProgress implements ProgressDisplay {
  private readonly counts = emptyCounts();
  private finished = false;

  constructor(
    private readonly out: ProgressOutput,
    private readonly now: () => number = Date.now,
  ) {}

  say(line: string): void {
    for (const l of line.split('\n')) this.out.write(`${clockTime(this.now())} ${l}\n`);
  }

  update(p: UpProgress): void {
    apply(this.counts, p);
  }

  finish(ok: boolean): void {
    if (this.finished) return;
    this.finished = true;
    if (this.counts.nodes.total > 0) this.say(`${ok ? 'done' : 'stopped'}: ${countsLines(this.counts).join(' · ')}`);
  }
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const ESC = '\x1b[';

/** ANSI: cursor up n lines, to column 1, and clear from there to the end of the screen. */
export function clearLines(n: number): string {
  return `${n > 0 ? `${ESC}${n}A` : ''}\r${ESC}J`;
}

/**
 * A terminal: step lines scroll above a live block (spinner, activity, elapsed time; two lines of counts)
 * that is redrawn in place. Block lines are cut to the terminal width so the cursor arithmetic
 * holds. `tick` redraws (the spinner); `start` runs it on a timer.
 */
export class TtyProgress implements ProgressDisplay {
  private readonly counts = emptyCounts();
  private activity = 'starting';
  private frame = 0;
  private drawn = 0;
  private timer: NodeJS.Timeout | null = null;
  private finished = false;
  /** nothing is drawn before the first update (an early error shows no empty status) */
  private shown = false;
  private readonly started: number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
  }

  /** Animates the spinner (timer does not keep the process alive). */
  start(everyMs = 100): this {
    this.timer = setInterval(() => this.tick(), everyMs);
    this.timer.unref();
    this.redraw();
    return this;
  }

  tick(): void {
    this.frame = (this.frame + 1) % SPINNER.length;
    this.redraw();
  }

  say(line: string): void {
    if (this.finished) {
      this.out.write(`${line}\n`);
      return;
    }
    this.out.write(`${this.drawn > 0 ? clearLines(this.drawn) : ''}${line}\n`);
    this.drawn = 0;
    this.redraw();
  }

  update(p: UpProgress): void {
    const a = apply(this.counts, p);
    if (a !== undefined) this.activity = a;
    this.shown = true;
    this.redraw();
  }

  finish(ok: boolean): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.shown) return;
    const secs = ((this.now() - this.started) / 1000).toFixed(1);
    const head = ok ? `✓ up in ${secs}s` : `✗ stopped after ${secs}s while ${this.activity}`;
    this.out.write(`${clearLines(this.drawn)}${[head, ...countsLines(this.counts).map((l) => `  ${l}`)].map((l) => this.fit(l)).join('\n')}\n`);
    this.drawn = 0;
  }

  private fit(line: string): string {
    const w = this.out.columns;
    if (!w || w < 10 || [...line].length < w) return line;
    return `${[...line].slice(0, w - 2).join('')}…`;
  }

  private redraw(): void {
    if (this.finished || !this.shown) return;
    const secs = ((this.now() - this.started) / 1000).toFixed(1);
    const lines = [`${SPINNER[this.frame]} ${this.activity} (${secs}s)`, ...countsLines(this.counts).map((l) => `  ${l}`)].map((l) => this.fit(l));
    this.out.write(`${clearLines(this.drawn)}${lines.join('\n')}\n`);
    this.drawn = lines.length;
  }
}

/** The display for an output: live when it is a terminal (and TERM is not dumb), plain otherwise. */
export function progressFor(out: ProgressOutput & { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): ProgressDisplay {
  if (out.isTTY && env.TERM !== 'dumb') return new TtyProgress(out).start();
  return new PlainProgress(out);
}
