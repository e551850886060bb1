import type { Socket } from 'node:net';
import { constants as h2c, type Http2Stream } from 'node:http2';
import { resetSocket } from './reset.js';

/** Why a bridged connection ended, and how much it carried. */
export interface BridgeResult {
  /** bytes read from the plain socket (sent into the tunnel) */
  bytesFromSocket: number;
  /** bytes written to the plain socket (received from the tunnel) */
  bytesToSocket: number;
  /** 'reset' when either side reset, else 'closed' */
  outcome: 'closed' | 'reset';
}

function isReset(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_HTTP2_STREAM_ERROR';
}

/**
 * Resets a stream. node's close(code) first ends the writable side, so the peer would read
 * END_STREAM (a clean end of data) just before the RST_STREAM; skipping that half-close
 * makes a reset arrive as a reset only.
 */
export function resetStream(stream: Http2Stream, code: number): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.writableEnded) stream._final = (callback) => callback();
  stream.close(code);
}

/**
 * Bytes a socket may hold unsent before the stream feeding it is paused. net.Socket's own
 * high-water mark (16 KiB) would pause the stream at every corked batch, so each loop turn
 * would carry one 16 KiB writev; HTTP/2 flow control (the 4 MiB stream window) still bounds
 * what the peer may send past this.
 */
export const SOCKET_WRITE_BUDGET = 256 * 1024;

/**
 * Pipes an HBONE stream into a socket, writing what arrived in one tick as one writev.
 * HTTP/2 DATA frames (16 KiB, split across TLS records) reach the stream in pieces of
 * about 8 KiB; writing each on its own costs a syscall per piece.
 */
function pumpCoalesced(src: Http2Stream, dst: Socket): void {
  let corked = false;
  let paused = false;
  const uncork = (): void => {
    corked = false;
    dst.uncork();
  };
  src.on('data', (chunk: Buffer) => {
    // the app closed its socket and the peer still sends: as TCP answers data after a close, reset
    if (dst.destroyed) {
      resetStream(src, h2c.NGHTTP2_CONNECT_ERROR);
      return;
    }
    if (!corked) {
      corked = true;
      dst.cork();
      setImmediate(uncork);
    }
    dst.write(chunk);
    if (dst.writableLength >= SOCKET_WRITE_BUDGET && !paused) {
      paused = true;
      src.pause();
    }
  });
  dst.on('drain', () => {
    if (paused) {
      paused = false;
      src.resume();
    }
  });
  src.once('end', () => {
    // node ends the readable side of a stream that was reset or lost with its session too:
    // only an END_STREAM (no rstCode yet) is a half-close; otherwise the app gets the reset
    // from the 'close' handler, not a clean end of a cut stream
    if (!dst.destroyed && !src.rstCode) dst.end();
  });
}

/**
 * Pipes a socket into an HBONE stream. Unlike pipe(), which pauses the socket whenever the
 * stream holds more than its 16 KiB high-water mark, this reads on until the stream holds
 * SOCKET_WRITE_BUDGET: libuv then reads the socket several times per loop turn, and node's
 * HTTP/2 session sends all of it as DATA frames in one TLS write.
 */
function pumpToStream(src: Socket, dst: Http2Stream): void {
  let paused = false;
  src.on('data', (chunk: Buffer) => {
    if (dst.destroyed) return;
    dst.write(chunk);
    if (dst.writableLength >= SOCKET_WRITE_BUDGET && !paused) {
      paused = true;
      src.pause();
    }
  });
  dst.on('drain', () => {
    if (paused) {
      paused = false;
      src.resume();
    }
  });
  src.once('end', () => {
    if (!dst.destroyed && !dst.writableEnded) dst.end();
  });
  // a socket accepted paused (or paused by its owner) does not flow by adding a 'data' listener
  src.resume();
}

/**
 * Joins a plain TCP socket and an HBONE stream in both directions. Half-close travels
 * as END_STREAM / FIN; a reset on one side becomes a reset on the other. Bytes are
 * read from the socket's own counters at the end, so the hot path adds nothing per chunk.
 */
export function bridge(socket: Socket, stream: Http2Stream): Promise<BridgeResult> {
  return new Promise((resolve) => {
    let outcome: BridgeResult['outcome'] = 'closed';
    let finished = 0;
    const finish = (): void => {
      if (++finished < 2) return;
      resolve({ bytesFromSocket: socket.bytesRead, bytesToSocket: socket.bytesWritten, outcome });
    };
    socket.setNoDelay(true);
    pumpToStream(socket, stream);
    pumpCoalesced(stream, socket);
    socket.on('error', (err) => {
      outcome = 'reset';
      resetStream(stream, isReset(err) ? h2c.NGHTTP2_CONNECT_ERROR : h2c.NGHTTP2_INTERNAL_ERROR);
    });
    stream.on('error', () => {
      outcome = 'reset';
    });
    stream.on('close', () => {
      // A stream closed by RST_STREAM (or a dead session) before both ends finished: reset the socket too.
      if (stream.rstCode !== h2c.NGHTTP2_NO_ERROR || !stream.writableFinished) {
        if (stream.rstCode !== h2c.NGHTTP2_NO_ERROR) outcome = 'reset';
        if (!socket.destroyed) {
          if (outcome === 'reset') resetSocket(socket);
          else socket.destroy();
        }
      }
      finish();
    });
    socket.on('close', () => {
      if (!stream.destroyed && !stream.closed) {
        if (outcome === 'reset') resetStream(stream, h2c.NGHTTP2_CONNECT_ERROR);
        else if (!stream.writableEnded) stream.end();
      }
      finish();
    });
  });
}
