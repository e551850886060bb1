/**
 * Runs one fuzz target in a worker thread. Before each execution the input is copied into
 * shared memory, so when an execution never returns (a hang) the parent can kill the
 * worker and still report the input that hung it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { fuzz, type FuzzOptions } from './fuzz.js';
import { targetByName } from './targets.js';

export interface WorkerJob {
  target: string;
  options: Omit<FuzzOptions, 'onInput'>;
  /** [u32 length][bytes…] of the input being executed */
  current: SharedArrayBuffer;
  /** [u32 executions so far], updated every 1024 executions */
  progress: SharedArrayBuffer;
}

// the yaml library warns through process warnings about odd keys; millions of inputs would flood stderr
process.emitWarning = () => undefined;

const job = workerData as WorkerJob;
const target = targetByName(job.target);
const len = new Uint32Array(job.current, 0, 1);
const bytes = new Uint8Array(job.current, 4);
const progress = new Uint32Array(job.progress);
let n = 0;
const stats = fuzz(target, {
  ...job.options,
  onInput: (input) => {
    const k = Math.min(input.length, bytes.length);
    bytes.set(input.subarray(0, k));
    len[0] = k;
    if ((++n & 1023) === 0) Atomics.store(progress, 0, n);
  },
});
parentPort!.postMessage(stats);
