/**
 * Writes a message body onto an HTTP/1.1 connection, the same for requests (./http1-client.ts)
 * and responses (./http1-server.ts): chunk-framed or as is, with back-pressure (the body pauses
 * while the connection needs to drain). HTTP/2 responses (./downstream.ts) use it as is, on the
 * stream.
 */

import type { Duplex } from 'node:stream';
import { chunkHeader } from './http1.js';
import type { Body } from './body-stream.js';

/**
 * How long a response may wait for the client to take more of it (its TCP or HTTP/2 window
 * closed) before the exchange is cut: nginx's `send_timeout` (60 s). Without it, a client that
 * opens no window ("tiny windows") or stops reading holds the response, and the upstream
 * connection paused behind it, for as long as it likes.
 */
export const SEND_TIMEOUT_MS = 60_000;

/** The client took nothing of the response for `SEND_TIMEOUT_MS`. */
export class DownstreamStalled extends Error {
  constructor(ms: number) {
    super(`the client took none of the response for ${ms} ms`);
    this.name = 'DownstreamStalled';
  }
}

/**
 * The upstream took nothing of the request body for `SEND_TIMEOUT_MS` (nginx's
 * `proxy_send_timeout`): without it, an endpoint that stops reading holds the request, its
 * client and the upstream connection for as long as no route timeout is set.
 */
export class UpstreamStalled extends Error {
  constructor(ms: number) {
    super(`the upstream took none of the request body for ${ms} ms`);
    this.name = 'UpstreamStalled';
  }
}

export interface BodySink {
  /** false: the exchange is over, what still comes is dropped */
  live(): boolean;
  /** the body's bytes as they are written */
  count?(n: number): void;
  /** the connection is full: what is corked must go out now */
  flush(): void;
  /** the body ended (the last chunk is the caller's to write) */
  end(): void;
  fail(err: Error): void;
  /** at most this long waiting for `dst` to drain, then fail with `stalled(ms)` (default: no limit) */
  stallMs?: number;
  /** the error a stall fails with (default: DownstreamStalled) */
  stalled?: (ms: number) => Error;
}

/**
 * Corks `dst` and writes `head`: the head goes out with the first piece of the body (all of it
 * when it is already here). Returns the uncork, which runs once; it also runs on the next turn
 * of the event loop, so a body that is slow to come does not hold the head back.
 */
export function corkHead(dst: Duplex, head: string): () => void {
  dst.cork();
  dst.write(head, 'latin1');
  let corked = true;
  const uncork = (): void => {
    if (corked) {
      corked = false;
      dst.uncork();
    }
  };
  setImmediate(uncork);
  return uncork;
}

/** Writes `body` to `dst` (chunk-framed when `chunked`), pausing it while `dst` needs to drain. */
export function writeBody(dst: Duplex, body: Body, chunked: boolean, sink: BodySink): void {
  let stall: NodeJS.Timeout | null = null;
  const stopWaiting = (): void => {
    dst.off('drain', onDrain);
    if (stall !== null) clearTimeout(stall);
    stall = null;
  };
  const onDrain = (): void => {
    stopWaiting();
    body.resume();
  };
  const stalled = (ms: number): void => {
    stopWaiting();
    sink.fail(sink.stalled ? sink.stalled(ms) : new DownstreamStalled(ms));
    body.destroy();
  };
  body.on('data', (c: Buffer) => {
    if (c.length === 0 || !sink.live()) return;
    sink.count?.(c.length);
    if (chunked) {
      dst.write(chunkHeader(c.length), 'latin1');
      dst.write(c);
      dst.write('\r\n', 'latin1');
    } else dst.write(c);
    if (dst.writableNeedDrain) {
      sink.flush();
      body.pause();
      dst.once('drain', onDrain);
      const ms = sink.stallMs;
      if (ms !== undefined && stall === null) stall = setTimeout(stalled, ms, ms);
    }
  });
  body.once('end', () => {
    stopWaiting();
    if (sink.live()) sink.end();
  });
  body.once('error', (err: Error) => {
    stopWaiting();
    sink.fail(err);
  });
  body.once('close', () => {
    if (body.readableEnded) return;
    stopWaiting();
    sink.fail(new Error('the body closed before its end'));
  });
}
