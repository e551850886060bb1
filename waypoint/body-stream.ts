/**
 * Message bodies inside the waypoint.
 *
 * `Body` is the part of a node Readable the waypoint's code uses on a body: the 'data', 'end',
 * 'error' and 'close' events, pause/resume and destroy. HTTP/2 streams are node Readables and
 * pass as they are. `BodyStream` is the waypoint's own, for the bodies its HTTP/1.1 server and
 * client parse and for the readers of a kept request body (./body.ts): it delivers synchronously.
 * A node Readable defers its resume, its read-ahead, its end and its close to later ticks (five
 * or more `process.nextTick`s per body), and a request through the waypoint has three such
 * bodies; these were the largest share of the waypoint's own CPU at a fixed request rate.
 *
 * Semantics kept from Readable, which the consumers rely on:
 * - nothing flows until a 'data' listener is added or resume() is called; chunks pushed before
 *   wait in order, and go out on the next tick (one tick, and only when something waits);
 *   after that, a chunk pushed while flowing is delivered within push();
 * - pause() stops 'data' at once; push() returns false once 16 KiB wait, and `wantMore` is
 *   called whenever the consumer (re)starts the flow;
 * - 'end' comes after the last 'data', only while flowing, then 'close' (auto-destroy);
 * - destroy(err) drops what waits, emits 'error' (only to a listener: an unheard body error is
 *   not a reason to stop the process), then 'close'; `readableEnded` tells a close after the
 *   end from a cut one.
 */

import type { Writable } from 'node:stream';

/** What the waypoint needs of a body: a node Readable (an HTTP/2 stream) or a BodyStream. */
export interface Body {
  // listeners as EventEmitter types them, so that a node Readable is a Body as it is
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  on(event: 'data' | 'end' | 'error' | 'close', listener: (...args: any[]) => void): this;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  once(event: 'end' | 'error' | 'close', listener: (...args: any[]) => void): this;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  off(event: string, listener: (...args: any[]) => void): this;
  pause(): this;
  resume(): this;
  isPaused(): boolean;
  destroy(err?: Error): this;
  readonly destroyed: boolean;
  readonly readableEnded: boolean;
  readonly readableLength: number;
}

const HIGH_WATER_MARK = 16 * 1024;

function nothing(): void {}

function flowLater(b: BodyStream): void {
  b.flowNow();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (...args: any[]) => void;

/** A listener, and whether it goes after its first call. */
interface Entry {
  fn: Listener;
  once: boolean;
}

/**
 * The events of a body, as EventEmitter keeps them but without what a body never needs (the
 * 'newListener' and 'removeListener' events, the leak warning, a bound wrapper per once()): a
 * request had three bodies, and node's EventEmitter set-up, once() wrappers and removals were
 * about 5 % of the waypoint's CPU. The order of calls is EventEmitter's: listeners in the order
 * added, those added during an emit not called by it, those removed during it still called.
 */
class BodyEvents {
  private data: Entry[] | null = null;
  private end: Entry[] | null = null;
  private error: Entry[] | null = null;
  private close: Entry[] | null = null;
  /** any other event */
  private other: Map<string | symbol, Entry[]> | null = null;

  private get(event: string | symbol): Entry[] | null {
    switch (event) {
      case 'data':
        return this.data;
      case 'end':
        return this.end;
      case 'error':
        return this.error;
      case 'close':
        return this.close;
      default:
        return this.other?.get(event) ?? null;
    }
  }

  private set(event: string | symbol, list: Entry[] | null): void {
    switch (event) {
      case 'data':
        this.data = list;
        break;
      case 'end':
        this.end = list;
        break;
      case 'error':
        this.error = list;
        break;
      case 'close':
        this.close = list;
        break;
      default:
        if (list !== null) (this.other ??= new Map()).set(event, list);
        else this.other?.delete(event);
    }
  }

  add(event: string | symbol, fn: Listener, once: boolean): void {
    const list = this.get(event);
    if (list === null) this.set(event, [{ fn, once }]);
    else list.push({ fn, once });
  }

  /** Removes the last-added registration of `fn`, as EventEmitter does. */
  remove(event: string | symbol, fn: Listener): void {
    const list = this.get(event);
    if (list === null) return;
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i]!.fn !== fn) continue;
      if (list.length === 1) this.set(event, null);
      else list.splice(i, 1);
      return;
    }
  }

  count(event: string | symbol): number {
    return this.get(event)?.length ?? 0;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  emit(event: string | symbol, a?: any): boolean {
    const list = this.get(event);
    if (list === null) return false;
    if (list.length === 1) {
      const e = list[0]!;
      if (e.once) this.set(event, null);
      e.fn(a);
      return true;
    }
    const calls = list.slice();
    let kept = 0;
    for (const e of list) if (!e.once) list[kept++] = e;
    if (kept === 0) this.set(event, null);
    else list.length = kept;
    for (const e of calls) e.fn(a);
    return true;
  }
}

export class BodyStream implements Body {
  private readonly events = new BodyEvents();
  private queue: Buffer[] = [];
  private head = 0;
  private queued = 0;
  /** 'data' may be emitted */
  private flowing = false;
  /** pause() was called (and no resume() since): a new 'data' listener does not start the flow */
  private paused = false;
  /** push(null) came */
  private ending = false;
  private flushing = false;
  /** a flow is scheduled for the next tick */
  private scheduled = false;
  readableEnded = false;
  destroyed = false;

  /** `wantMore`: the consumer resumed after push() said to stop; the producer may go on. */
  constructor(private readonly wantMore: () => void = nothing) {}

  get readableLength(): number {
    return this.queued;
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** The producer: a chunk (delivered now when flowing and nothing waits), or null for the end. false: stop until `wantMore`. */
  push(chunk: Buffer | null): boolean {
    if (this.destroyed || this.ending) return false;
    if (chunk === null) {
      this.ending = true;
      this.flush();
      return false;
    }
    if (chunk.length > 0) {
      if (this.flowing && this.queued === 0 && !this.flushing) this.emit('data', chunk);
      else {
        this.queue.push(chunk);
        this.queued += chunk.length;
        if (this.flowing) this.flush();
      }
    }
    return !this.destroyed && this.queued < HIGH_WATER_MARK;
  }

  on(event: string | symbol, listener: Listener): this {
    this.events.add(event, listener, false);
    if (event === 'data' && !this.paused) this.resume();
    return this;
  }

  addListener(event: string | symbol, listener: Listener): this {
    return this.on(event, listener);
  }

  once(event: string | symbol, listener: Listener): this {
    this.events.add(event, listener, true);
    if (event === 'data' && !this.paused) this.resume();
    return this;
  }

  off(event: string | symbol, listener: Listener): this {
    this.events.remove(event, listener);
    return this;
  }

  removeListener(event: string | symbol, listener: Listener): this {
    return this.off(event, listener);
  }

  listenerCount(event: string | symbol): number {
    return this.events.count(event);
  }

  /** Calls the listeners of `event` with one argument (a body's events carry at most one). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  emit(event: string | symbol, arg?: any): boolean {
    return this.events.emit(event, arg);
  }

  pause(): this {
    this.paused = true;
    this.flowing = false;
    return this;
  }

  resume(): this {
    this.paused = false;
    if (this.flowing || this.destroyed) return this;
    this.flowing = true;
    // what waits goes out on the next tick, as from a Readable: the consumer adding its 'data'
    // listener has not added its 'end' and 'error' listeners yet
    if (this.queued > 0 || this.ending) {
      if (!this.scheduled) {
        this.scheduled = true;
        process.nextTick(flowLater, this);
      }
    } else this.wantMore();
    return this;
  }

  /** @internal the flow started by resume() */
  flowNow(): void {
    this.scheduled = false;
    if (!this.flowing || this.destroyed) return;
    this.flush();
    if (this.flowing && !this.ending && !this.destroyed) this.wantMore();
  }

  /** Emits what waits while flowing, then the end once everything went out. */
  private flush(): void {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.flowing && !this.destroyed && this.head < this.queue.length) {
        const c = this.queue[this.head]!;
        this.queue[this.head++] = undefined as unknown as Buffer;
        this.queued -= c.length;
        this.emit('data', c);
      }
      if (this.head === this.queue.length && this.head > 0) {
        this.queue = [];
        this.head = 0;
      }
    } finally {
      this.flushing = false;
    }
    if (this.flowing && this.ending && this.queued === 0 && !this.readableEnded && !this.destroyed) {
      this.readableEnded = true;
      this.emit('end');
      this.destroy();
    }
  }

  destroy(err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.flowing = false;
    this.queue = [];
    this.head = 0;
    this.queued = 0;
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('close');
    return this;
  }
}

/**
 * Writes `body` into `dst` (an HTTP/2 stream) with back-pressure and ends it after the body, as
 * `pipe()` would. When `dst` closes first, the body is destroyed: nobody reads it any more.
 * With `stall`, `stall.onStall()` is called (once) when `dst` takes nothing for `stall.ms`.
 */
export function pipeBody(body: Body, dst: Writable, stall?: { ms: number; onStall(): void }): void {
  let timer: NodeJS.Timeout | null = null;
  const stopWaiting = (): void => {
    dst.off('drain', onDrain);
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  const onDrain = (): void => {
    stopWaiting();
    body.resume();
  };
  const stalled = (s: { onStall(): void }): void => {
    timer = null;
    s.onStall();
  };
  const onData = (c: Buffer): void => {
    if (!dst.write(c)) {
      body.pause();
      dst.once('drain', onDrain);
      if (stall !== undefined && timer === null) timer = setTimeout(stalled, stall.ms, stall);
    }
  };
  body.on('data', onData);
  body.once('end', () => {
    stopWaiting();
    if (!dst.destroyed && !dst.writableEnded) dst.end();
  });
  dst.once('close', () => {
    body.off('data', onData);
    stopWaiting();
    if (!body.readableEnded) body.destroy();
  });
}
