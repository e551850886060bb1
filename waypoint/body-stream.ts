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

import { EventEmitter } from 'node:events';
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

export class BodyStream extends EventEmitter implements Body {
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
  constructor(private readonly wantMore: () => void = nothing) {
    super();
  }

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

  override on(event: string | symbol, listener: (...args: never[]) => void): this {
    super.on(event, listener as (...args: unknown[]) => void);
    if (event === 'data' && !this.paused) this.resume();
    return this;
  }

  override addListener(event: string | symbol, listener: (...args: never[]) => void): this {
    return this.on(event, listener);
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
 */
export function pipeBody(body: Body, dst: Writable): void {
  const onDrain = (): void => {
    body.resume();
  };
  const onData = (c: Buffer): void => {
    if (!dst.write(c)) {
      body.pause();
      dst.once('drain', onDrain);
    }
  };
  body.on('data', onData);
  body.once('end', () => {
    dst.off('drain', onDrain);
    if (!dst.destroyed && !dst.writableEnded) dst.end();
  });
  dst.once('close', () => {
    body.off('data', onData);
    dst.off('drain', onDrain);
    if (!body.readableEnded) body.destroy();
  });
}
