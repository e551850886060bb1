#!/usr/bin/env node
/**
 * The soak's traffic, run inside the client pod's netns by bench/soak/soak.ts:
 *   - short connections: connect, send 1 KiB that starts with the plaintext marker, half-close,
 *     expect the same bytes back, close (paced to --short-rate per second);
 *   - bulk transfers: --bulk loops of --bulk-mib MiB of random data through the echo, SHA-256 of
 *     what was sent and of what came back must match;
 *   - held connections: --held connections kept open, a ping (with the marker) every
 *     --held-interval seconds must come back; a broken one is counted and reopened.
 * Prints JSON lines: {"event":"fail",…} as they happen, {"event":"stats",…} every 10 s, and
 * {"event":"done",…} at the end.
 */
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    target: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    marker: { type: 'string' },
    'short-concurrency': { type: 'string', default: '8' },
    'short-rate': { type: 'string', default: '50' },
    bulk: { type: 'string', default: '2' },
    'bulk-mib': { type: 'string', default: '64' },
    'bulk-pause': { type: 'string', default: '2' },
    held: { type: 'string', default: '20' },
    'held-interval': { type: 'string', default: '10' },
  },
});
if (!a.target || !a.marker) throw new Error('--target ip:port and --marker are required');
const [host, portText] = [a.target.slice(0, a.target.lastIndexOf(':')), a.target.slice(a.target.lastIndexOf(':') + 1)];
const port = Number(portText);
const marker = Buffer.from(a.marker);
const endAt = Date.now() + Number(a.seconds) * 1000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const running = (): boolean => Date.now() < endAt;

const stats = {
  short: { ok: 0, fail: 0, mismatch: 0, latencies: [] as number[] },
  bulk: { ok: 0, fail: 0, mismatch: 0, bytes: 0 },
  held: { open: 0, pingsOk: 0, pingsFail: 0, breaks: 0, reopened: 0 },
};

function emit(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
}

function fail(kind: string, err: unknown): void {
  emit({ event: 'fail', kind, error: err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`.trim() : String(err) });
}

function connect(timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('connect timeout'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** One short echo round trip; resolves with its latency, rejects on any failure. */
async function shortOnce(): Promise<number> {
  const t0 = performance.now();
  const payload = Buffer.concat([marker, randomBytes(1024 - marker.length)]);
  const s = await connect();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('echo timeout'));
    }, 10_000);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.once('end', () => {
      clearTimeout(timer);
      s.end();
      const got = Buffer.concat(chunks);
      if (!got.equals(payload)) reject(Object.assign(new Error(`echo differs: ${got.length} of ${payload.length} bytes`), { code: 'MISMATCH' }));
      else resolve(performance.now() - t0);
    });
    s.end(payload);
  });
}

async function shortLoop(gapMs: number): Promise<void> {
  while (running()) {
    const started = Date.now();
    try {
      stats.short.latencies.push(await shortOnce());
      stats.short.ok++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'MISMATCH') stats.short.mismatch++;
      stats.short.fail++;
      fail('short', err);
    }
    await sleep(Math.max(0, gapMs - (Date.now() - started)));
  }
}

/** One bulk transfer: random bytes out, SHA-256 of both directions compared. */
async function bulkOnce(bytes: number): Promise<void> {
  const s = await connect();
  const sent = createHash('sha256');
  const recv = createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`bulk stalled at ${received} of ${bytes} bytes`));
    }, 300_000);
    s.on('data', (c: Buffer) => {
      received += c.length;
      recv.update(c);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.once('end', () => {
      clearTimeout(timer);
      s.end();
      resolve();
    });
  });
  done.catch(() => undefined);
  let left = bytes;
  while (left > 0 && !s.destroyed) {
    const chunk = randomBytes(Math.min(256 * 1024, left));
    left -= chunk.length;
    sent.update(chunk);
    if (!s.write(chunk)) {
      await new Promise<void>((r) => {
        const go = (): void => {
          s.off('drain', go);
          s.off('close', go);
          r();
        };
        s.on('drain', go);
        s.on('close', go);
      });
    }
  }
  s.end();
  await done;
  const a1 = sent.digest('hex');
  const a2 = recv.digest('hex');
  if (received !== bytes || a1 !== a2) throw Object.assign(new Error(`SHA-256 differs: sent ${bytes} bytes ${a1.slice(0, 12)}…, got ${received} bytes ${a2.slice(0, 12)}…`), { code: 'MISMATCH' });
  stats.bulk.bytes += bytes;
}

async function bulkLoop(bytes: number, pauseMs: number): Promise<void> {
  while (running()) {
    try {
      await bulkOnce(bytes);
      stats.bulk.ok++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'MISMATCH') stats.bulk.mismatch++;
      stats.bulk.fail++;
      fail('bulk', err);
    }
    await sleep(pauseMs);
  }
}

/** A held connection: a ping every interval must come back; when it breaks, it is reopened. */
async function heldLoop(id: number, intervalMs: number): Promise<void> {
  let first = true;
  while (running()) {
    let s: net.Socket;
    try {
      s = await connect();
    } catch (err) {
      fail('held-connect', err);
      await sleep(1000);
      continue;
    }
    if (!first) stats.held.reopened++;
    first = false;
    stats.held.open++;
    let buf = '';
    let waiting: { text: string; resolve: () => void } | null = null;
    s.setEncoding('utf8');
    s.on('data', (c: string) => {
      buf += c;
      if (waiting && buf.includes(waiting.text)) {
        buf = '';
        waiting.resolve();
      }
    });
    const broken = new Promise<string>((resolve) => {
      s.once('error', (e) => resolve(`${(e as NodeJS.ErrnoException).code ?? ''} ${e.message}`));
      s.once('close', () => resolve('closed'));
    });
    let n = 0;
    let why: string | null = null;
    while (running() && why === null) {
      const text = `${a.marker} held ${id} ping ${++n}\n`;
      const echoed = new Promise<void>((resolve) => (waiting = { text, resolve }));
      s.write(text);
      const r = await Promise.race([echoed.then(() => 'ok'), broken, sleep(5000).then(() => 'ping timeout')]);
      waiting = null;
      if (r === 'ok') {
        stats.held.pingsOk++;
        await Promise.race([sleep(intervalMs), broken.then((b) => (why = b))]);
      } else {
        stats.held.pingsFail++;
        why = r;
      }
    }
    stats.held.open--;
    if (why !== null) {
      stats.held.breaks++;
      fail('held', new Error(`held connection ${id} broke: ${why}`));
    }
    s.destroy();
    await sleep(1000);
  }
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((x, y) => x - y);
  return Number(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!.toFixed(1));
}

function snapshot(): Record<string, unknown> {
  const l = stats.short.latencies;
  stats.short.latencies = [];
  return {
    short: { ok: stats.short.ok, fail: stats.short.fail, mismatch: stats.short.mismatch, p50ms: percentile(l, 50), p99ms: percentile(l, 99) },
    bulk: { ...stats.bulk },
    held: { ...stats.held },
  };
}

async function main(): Promise<void> {
  const conc = Number(a['short-concurrency']);
  const gap = (conc / Number(a['short-rate'])) * 1000;
  const ticker = setInterval(() => emit({ event: 'stats', ...snapshot() }), 10_000);
  await Promise.all([
    ...Array.from({ length: conc }, () => shortLoop(gap)),
    ...Array.from({ length: Number(a.bulk) }, () => bulkLoop(Number(a['bulk-mib']) * 1024 * 1024, Number(a['bulk-pause']) * 1000)),
    ...Array.from({ length: Number(a.held) }, (_, i) => heldLoop(i, Number(a['held-interval']) * 1000)),
  ]);
  clearInterval(ticker);
  emit({ event: 'done', ...snapshot() });
}

main().catch((err: Error) => {
  emit({ event: 'fatal', error: err.message });
  process.exit(1);
});
