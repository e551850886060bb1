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

/** Called once both ends of a bridged connection closed, with the value given to bridgeTo(). */
export type BridgeDone<T> = (arg: T, result: BridgeResult) => void;

/**
 * One bridged connection. The event handlers below are shared by every connection (each
 * finds its state on the emitter it is called on), and the end is reported through a shared
 * function given this state's `arg`, so an open connection holds this object and node's own
 * socket and stream, not a dozen closures or a chain of promises: ztunnel may hold tens of
 * thousands idle.
 */
export class Bridged<T = unknown> {
  outcome: BridgeResult['outcome'] = 'closed';
  finished = 0;
  /** the socket is corked until the next check phase (stream → socket) */
  corked = false;
  /** the stream is paused: the socket holds SOCKET_WRITE_BUDGET unsent */
  streamPaused = false;
  /** the socket is paused: the stream holds SOCKET_WRITE_BUDGET unsent */
  socketPaused = false;

  constructor(
    readonly socket: Socket,
    readonly stream: Http2Stream,
    /** the RST_STREAM code abort() sends */
    private readonly abortCode: number,
    private readonly done: BridgeDone<T>,
    private readonly arg: T,
  ) {}

  /** Resets both ends: RST_STREAM with the abort code on the tunnel, a TCP RST on the socket. */
  abort(): void {
    resetStream(this.stream, this.abortCode);
    resetSocket(this.socket);
  }

  /** @internal both sides closed */
  end(): void {
    this.done(this.arg, { bytesFromSocket: this.socket.bytesRead, bytesToSocket: this.socket.bytesWritten, outcome: this.outcome });
  }
}

const kBridged = Symbol('ambit.bridged');
type Side<T> = T & { [kBridged]?: Bridged };

function stateOf(emitter: Side<Socket> | Side<Http2Stream>): Bridged {
  return emitter[kBridged]!;
}

function finish(b: Bridged): void {
  if (++b.finished < 2) return;
  b.end();
}

function uncork(b: Bridged): void {
  b.corked = false;
  b.socket.uncork();
}

/*
 * Stream → socket, writing what arrived in one tick as one writev. HTTP/2 DATA frames (16 KiB,
 * split across TLS records) reach the stream in pieces of about 8 KiB; writing each on its own
 * costs a syscall per piece.
 */
function onStreamData(this: Side<Http2Stream>, chunk: Buffer): void {
  const b = stateOf(this);
  const dst = b.socket;
  // the app closed its socket and the peer still sends: as TCP answers data after a close, reset
  if (dst.destroyed) {
    resetStream(this, h2c.NGHTTP2_CONNECT_ERROR);
    return;
  }
  if (!b.corked) {
    b.corked = true;
    dst.cork();
    setImmediate(uncork, b);
  }
  dst.write(chunk);
  if (dst.writableLength >= SOCKET_WRITE_BUDGET && !b.streamPaused) {
    b.streamPaused = true;
    this.pause();
  }
}

function onSocketDrain(this: Side<Socket>): void {
  const b = stateOf(this);
  if (b.streamPaused) {
    b.streamPaused = false;
    b.stream.resume();
  }
}

function onStreamEnd(this: Side<Http2Stream>): void {
  const b = stateOf(this);
  // node ends the readable side of a stream that was reset or lost with its session too:
  // only an END_STREAM (no rstCode yet) is a half-close; otherwise the app gets the reset
  // from the 'close' handler, not a clean end of a cut stream
  if (!b.socket.destroyed && !this.rstCode) b.socket.end();
}

/*
 * Socket → stream. Unlike pipe(), which pauses the socket whenever the stream holds more than
 * its 16 KiB high-water mark, this reads on until the stream holds SOCKET_WRITE_BUDGET: libuv
 * then reads the socket several times per loop turn, and node's HTTP/2 session sends all of it
 * as DATA frames in one TLS write.
 */
function onSocketData(this: Side<Socket>, chunk: Buffer): void {
  const b = stateOf(this);
  const dst = b.stream;
  if (dst.destroyed) return;
  dst.write(chunk);
  if (dst.writableLength >= SOCKET_WRITE_BUDGET && !b.socketPaused) {
    b.socketPaused = true;
    this.pause();
  }
}

function onStreamDrain(this: Side<Http2Stream>): void {
  const b = stateOf(this);
  if (b.socketPaused) {
    b.socketPaused = false;
    b.socket.resume();
  }
}

function onSocketEnd(this: Side<Socket>): void {
  const dst = stateOf(this).stream;
  if (!dst.destroyed && !dst.writableEnded) dst.end();
}

function onSocketError(this: Side<Socket>, err: Error): void {
  const b = stateOf(this);
  b.outcome = 'reset';
  resetStream(b.stream, isReset(err) ? h2c.NGHTTP2_CONNECT_ERROR : h2c.NGHTTP2_INTERNAL_ERROR);
}

function onStreamError(this: Side<Http2Stream>): void {
  stateOf(this).outcome = 'reset';
}

function onStreamClose(this: Side<Http2Stream>): void {
  const b = stateOf(this);
  const socket = b.socket;
  // A stream closed by RST_STREAM (or a dead session) before both ends finished: reset the socket too.
  if (this.rstCode !== h2c.NGHTTP2_NO_ERROR || !this.writableFinished) {
    if (this.rstCode !== h2c.NGHTTP2_NO_ERROR) b.outcome = 'reset';
    if (!socket.destroyed) {
      if (b.outcome === 'reset') resetSocket(socket);
      else socket.destroy();
    }
  }
  finish(b);
}

function onSocketClose(this: Side<Socket>): void {
  const b = stateOf(this);
  const stream = b.stream;
  if (!stream.destroyed && !stream.closed) {
    if (b.outcome === 'reset') resetStream(stream, h2c.NGHTTP2_CONNECT_ERROR);
    else if (!stream.writableEnded) stream.end();
  }
  finish(b);
}

/**
 * Joins a plain TCP socket and an HBONE stream in both directions. Half-close travels
 * as END_STREAM / FIN; a reset on one side becomes a reset on the other. Bytes are
 * read from the socket's own counters at the end, so the hot path adds nothing per chunk.
 * Once both ends closed, `done(arg, result)` is called (once); `done` is meant to be one
 * function shared by many connections, `arg` what tells them apart. The returned state's
 * abort() resets both ends, RST_STREAM carrying `abortCode`.
 */
export function bridgeTo<T>(socket: Socket, stream: Http2Stream, done: BridgeDone<T>, arg: T, abortCode: number = h2c.NGHTTP2_CONNECT_ERROR): Bridged<T> {
  const b = new Bridged(socket, stream, abortCode, done, arg);
  (socket as Side<Socket>)[kBridged] = b as Bridged;
  (stream as Side<Http2Stream>)[kBridged] = b as Bridged;
  socket.setNoDelay(true);
  socket.on('data', onSocketData);
  stream.on('drain', onStreamDrain);
  socket.on('end', onSocketEnd);
  stream.on('data', onStreamData);
  socket.on('drain', onSocketDrain);
  stream.on('end', onStreamEnd);
  socket.on('error', onSocketError);
  stream.on('error', onStreamError);
  stream.on('close', onStreamClose);
  socket.on('close', onSocketClose);
  // a socket accepted paused (or paused by its owner) does not flow by adding a 'data' listener
  socket.resume();
  return b;
}

function settle(resolve: (r: BridgeResult) => void, r: BridgeResult): void {
  resolve(r);
}

/** bridgeTo(), resolving once both ends closed: for a few connections (tools, tests), not for many held open. */
export function bridge(socket: Socket, stream: Http2Stream): Promise<BridgeResult> {
  return new Promise((resolve) => {
    bridgeTo(socket, stream, settle, resolve);
  });
}
