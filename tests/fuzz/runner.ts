/** Runs fuzz targets in worker threads with a watchdog: a worker that stops making progress has hung. */
import { Worker } from 'node:worker_threads';
import type { FuzzStats } from './fuzz.js';
import { targetByName } from './targets.js';
import type { WorkerJob } from './worker.js';

/** Seconds without 1024 new executions after which a worker is declared hung. */
const HANG_SECONDS = 10;

export function runTarget(name: string, seconds: number, seed: number, slowMs = 1000): Promise<FuzzStats> {
  const maxLen = targetByName(name).maxLen ?? 4096;
  const current = new SharedArrayBuffer(4 + maxLen);
  const progress = new SharedArrayBuffer(4);
  const job: WorkerJob = { target: name, options: { seconds, seed, slowMs }, current, progress };
  const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: job, execArgv: [], resourceLimits: { maxOldGenerationSizeMb: 1024 } });
  return new Promise((resolve, reject) => {
    let last = 0;
    let lastChange = Date.now();
    const started = Date.now();
    const watchdog = setInterval(() => {
      const now = Atomics.load(new Uint32Array(progress), 0);
      if (now !== last) {
        last = now;
        lastChange = Date.now();
        return;
      }
      if (Date.now() - lastChange < HANG_SECONDS * 1000) return;
      clearInterval(watchdog);
      const len = new Uint32Array(current, 0, 1)[0]!;
      const input = Buffer.from(new Uint8Array(current, 4, len)).toString('base64');
      void worker.terminate();
      const secs = (Date.now() - started) / 1000;
      resolve({ target: name, executions: last, seconds: Number(secs.toFixed(2)), execPerSecond: Math.round(last / secs), crashes: 1, crashList: [{ target: name, kind: 'hang', error: `no progress for ${HANG_SECONDS} s`, input }], corpus: 0, outcomes: 0, refused: 0 });
    }, 1000);
    worker.once('message', (stats: FuzzStats) => {
      clearInterval(watchdog);
      resolve(stats);
    });
    worker.once('error', (err) => {
      clearInterval(watchdog);
      const len = new Uint32Array(current, 0, 1)[0]!;
      const input = Buffer.from(new Uint8Array(current, 4, len)).toString('base64');
      const secs = (Date.now() - started) / 1000;
      // out of memory or an error outside the target: a crash, with the input being run
      resolve({ target: name, executions: last, seconds: Number(secs.toFixed(2)), execPerSecond: Math.round(last / secs), crashes: 1, crashList: [{ target: name, kind: 'exception', error: `worker died: ${err.message}`, input }], corpus: 0, outcomes: 0, refused: 0 });
    });
    worker.once('exit', (code) => {
      clearInterval(watchdog);
      if (code !== 0) reject(new Error(`fuzz worker for ${name} exited with ${code}`));
    });
  });
}
