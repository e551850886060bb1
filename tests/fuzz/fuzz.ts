/**
 * A small mutational fuzzer: seeded random, byte-level mutations of a seed corpus (plus an
 * optional structure-aware mutator per target), run in-process with a time budget.
 *
 * There is no coverage feedback; as a stand-in, an input whose outcome is new (a return
 * shape or an error message never seen, digits folded) joins the corpus, so inputs that
 * get further into a parser are mutated further.
 *
 * A crash is an exception the target does not document (`expected` says which it does),
 * or a single execution slower than `slowMs` (a hang shows as a dead worker: see worker.ts).
 */

/** mulberry32: small, fast, and reproducible from its seed. */
export class Random {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** 0 ≤ n < max */
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  bool(): boolean {
    return this.next() < 0.5;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** What a fuzz target is: seeds, the function under test, and the errors it may throw. */
export interface FuzzTarget {
  name: string;
  /** what it exercises, for the report */
  describe: string;
  seeds: Buffer[];
  /** tokens worth splicing in (keywords, magic numbers, delimiters) */
  dictionary?: (string | Buffer)[];
  /** runs one input; returns a short outcome label (for corpus growth) or throws */
  run(input: Buffer): string | void;
  /** documented failures: these are refusals, not crashes */
  expected(err: unknown): boolean;
  /** a structure-aware mutation (e.g. of a parsed object tree); used for some inputs */
  mutate?(input: Buffer, rnd: Random): Buffer;
  maxLen?: number;
}

export interface Crash {
  target: string;
  kind: 'exception' | 'slow' | 'hang';
  error: string;
  /** the input, base64 */
  input: string;
}

export interface FuzzStats {
  target: string;
  executions: number;
  seconds: number;
  execPerSecond: number;
  crashes: number;
  /** distinct crash signatures, with one input each */
  crashList: Crash[];
  corpus: number;
  outcomes: number;
  refused: number;
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a, 0x22, 0x5c, 0x3a, 0x2d, 0x7b, 0x5b];
const INTERESTING_NUM = ['0', '-1', '1', '65535', '65536', '4294967296', '1e309', '-0', '0.5', 'NaN', '99999999999999999999', '00', '0x10', '1_000'];

function writeInteresting(b: Buffer, rnd: Random): void {
  if (b.length === 0) return;
  const at = rnd.int(b.length);
  const width = rnd.pick([1, 2, 4]);
  const values = [0, 1, -1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000, 0x40000];
  const v = rnd.pick(values) >>> 0;
  for (let i = 0; i < width && at + i < b.length; i++) b[at + i] = (v >>> (8 * (rnd.bool() ? i : width - 1 - i))) & 0xff;
}

/** One random byte-level mutation. */
export function mutateBytes(input: Buffer, rnd: Random, corpus: Buffer[], dictionary: Buffer[], maxLen: number): Buffer {
  let b = Buffer.from(input);
  switch (rnd.int(12)) {
    case 0: // flip a bit
      if (b.length) b[rnd.int(b.length)]! ^= 1 << rnd.int(8);
      break;
    case 1: // an interesting byte
      if (b.length) b[rnd.int(b.length)] = rnd.pick(INTERESTING_8);
      break;
    case 2: // a random byte
      if (b.length) b[rnd.int(b.length)] = rnd.int(256);
      break;
    case 3: // interesting integer
      writeInteresting(b, rnd);
      break;
    case 4: {
      // delete a range
      if (!b.length) break;
      const at = rnd.int(b.length);
      const n = 1 + rnd.int(Math.min(32, b.length - at));
      b = Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
      break;
    }
    case 5: {
      // insert random bytes
      const at = rnd.int(b.length + 1);
      b = Buffer.concat([b.subarray(0, at), rnd.bytes(1 + rnd.int(8)), b.subarray(at)]);
      break;
    }
    case 6: {
      // duplicate a range (repetition finds length and nesting bugs)
      if (!b.length) break;
      const at = rnd.int(b.length);
      const n = 1 + rnd.int(Math.min(64, b.length - at));
      const piece = b.subarray(at, at + n);
      const times = 1 + rnd.int(rnd.bool() ? 4 : 64);
      const to = rnd.int(b.length + 1);
      b = Buffer.concat([b.subarray(0, to), ...Array.from({ length: times }, () => piece), b.subarray(to)]);
      break;
    }
    case 7:
    case 8: {
      // a dictionary token, inserted or overwriting
      if (!dictionary.length) break;
      const tok = rnd.pick(dictionary);
      const at = rnd.int(b.length + 1);
      b = rnd.bool() ? Buffer.concat([b.subarray(0, at), tok, b.subarray(at)]) : Buffer.concat([b.subarray(0, at), tok, b.subarray(Math.min(b.length, at + tok.length))]);
      break;
    }
    case 9: {
      // splice with another corpus entry
      const other = rnd.pick(corpus);
      const a = rnd.int(b.length + 1);
      const o = rnd.int(other.length + 1);
      b = Buffer.concat([b.subarray(0, a), other.subarray(o)]);
      break;
    }
    case 10: {
      // replace a run of digits with an interesting number
      const text = b.toString('latin1');
      const runs = [...text.matchAll(/\d+/g)];
      if (!runs.length) break;
      const r = rnd.pick(runs);
      b = Buffer.from(text.slice(0, r.index) + rnd.pick(INTERESTING_NUM) + text.slice(r.index! + r[0].length), 'latin1');
      break;
    }
    default: {
      // truncate
      if (b.length) b = b.subarray(0, rnd.int(b.length));
    }
  }
  return b.length > maxLen ? b.subarray(0, maxLen) : b;
}

/** A short, digit-free signature of an outcome or error, so "port 80" and "port 81" count once. */
export function signature(x: unknown): string {
  // first line only: parsers quote the input in later lines, which would make every outcome new
  const text = x instanceof Error ? `${x.constructor.name}:${x.message.split('\n')[0]}` : String(x);
  return text.replace(/\d+/g, 'N').replace(/"[^"]*"/g, 'S').slice(0, 80);
}

/** Where an error was thrown (constructor and first stack frame): one entry per bug, not per input. */
export function crashSignature(err: unknown): string {
  if (!(err instanceof Error)) return `non-error:${typeof err}`;
  const frame = err.stack?.split('\n').find((l) => l.trim().startsWith('at ')) ?? '';
  return `${err.constructor.name}@${frame.trim().replace(/^at /, '')}${err.name === 'InvariantError' ? `:${signature(err.message)}` : ''}`;
}

export interface FuzzOptions {
  seconds: number;
  seed: number;
  /** an execution slower than this is a crash ("slow") */
  slowMs?: number;
  /** called before each execution with the input (the worker records it for hang reports) */
  onInput?: (input: Buffer) => void;
  /** stop after this many executions (tests) */
  maxExecutions?: number;
}

const MAX_CORPUS = 2000;
/** Outcomes remembered for corpus growth; bounded, so a long run's memory is too. */
const MAX_OUTCOMES = 100_000;

/** Fuzzes one target for the time budget; returns what happened. */
export function fuzz(target: FuzzTarget, opts: FuzzOptions): FuzzStats {
  const rnd = new Random(opts.seed);
  const maxLen = target.maxLen ?? 4096;
  const dictionary = (target.dictionary ?? []).map((d) => (typeof d === 'string' ? Buffer.from(d, 'latin1') : d));
  const corpus: Buffer[] = target.seeds.length ? target.seeds.map((s) => Buffer.from(s)) : [Buffer.alloc(0)];
  const seen = new Set<string>();
  const crashes = new Map<string, Crash>();
  let crashCount = 0;
  let refused = 0;
  let executions = 0;
  const slowMs = opts.slowMs ?? 1000;
  const started = performance.now();
  const deadline = started + opts.seconds * 1000;
  const exec = (input: Buffer): void => {
    opts.onInput?.(input);
    const t0 = performance.now();
    let outcome: string;
    try {
      outcome = `ok:${target.run(input) ?? ''}`;
    } catch (err) {
      if (target.expected(err)) {
        refused++;
        outcome = `refused:${signature(err)}`;
      } else {
        crashCount++;
        const sig = `exception:${crashSignature(err)}`;
        if (!crashes.has(sig)) crashes.set(sig, { target: target.name, kind: 'exception', error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack?.split('\n').slice(1, 6).join('\n')}` : String(err), input: input.toString('base64') });
        outcome = sig;
      }
    }
    executions++;
    const ms = performance.now() - t0;
    if (ms > slowMs) {
      crashCount++;
      const sig = `slow:${target.name}`;
      if (!crashes.has(sig)) crashes.set(sig, { target: target.name, kind: 'slow', error: `one execution took ${ms.toFixed(0)} ms (limit ${slowMs})`, input: input.toString('base64') });
    }
    if (!seen.has(outcome) && seen.size < MAX_OUTCOMES) {
      seen.add(outcome);
      if (corpus.length < MAX_CORPUS) corpus.push(input);
      else corpus[rnd.int(corpus.length)] = input;
    }
  };
  for (const s of corpus.slice()) exec(s);
  // check the clock every few executions: performance.now() is cheap, but not free
  outer: for (;;) {
    for (let i = 0; i < 64; i++) {
      if (opts.maxExecutions !== undefined && executions >= opts.maxExecutions) break outer;
      const base = rnd.pick(corpus);
      let input: Buffer;
      if (target.mutate && rnd.int(3) === 0) {
        input = target.mutate(base, rnd);
      } else {
        input = base;
        const n = 1 + (rnd.bool() ? 0 : rnd.int(6));
        for (let k = 0; k < n; k++) input = mutateBytes(input, rnd, corpus, dictionary, maxLen);
      }
      exec(input);
    }
    if (performance.now() >= deadline) break;
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    target: target.name,
    executions,
    seconds: Number(seconds.toFixed(2)),
    execPerSecond: Math.round(executions / seconds),
    crashes: crashCount,
    crashList: [...crashes.values()],
    corpus: corpus.length,
    outcomes: seen.size,
    refused,
  };
}
