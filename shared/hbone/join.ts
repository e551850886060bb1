import type { Socket } from 'node:net';
import { resetSocket } from './reset.js';
import type { BridgeDone } from './bridge.js';

/**
 * Called once both sockets closed, with the value given to joinTo() and what the first socket
 * carried (as a bridge reports its socket's): the same `done` serves bridged and joined connections.
 */
export type JoinDone<T> = BridgeDone<T>;

/**
 * Two joined sockets. Like the bridge's, the handlers are shared by every joined pair (each
 * finds this state on the socket it is called on): an open connection holds no closures.
 */
export class Joined<T = unknown> {
  outcome: 'closed' | 'reset' = 'closed';
  closed = 0;

  constructor(
    readonly a: Socket,
    readonly b: Socket,
    private readonly done: JoinDone<T>,
    private readonly arg: T,
  ) {}

  /** Resets both sockets. */
  abort(): void {
    resetSocket(this.a);
    resetSocket(this.b);
  }

  /** @internal one socket closed */
  closedOne(): void {
    if (++this.closed === 2) this.done(this.arg, { bytesFromSocket: this.a.bytesRead, bytesToSocket: this.a.bytesWritten, outcome: this.outcome });
  }
}

const kJoined = Symbol('ambit.joined');
type Side = Socket & { [kJoined]?: Joined };

function onError(this: Side): void {
  const j = this[kJoined]!;
  j.outcome = 'reset';
  resetSocket(this === j.a ? j.b : j.a);
}

function onClose(this: Side): void {
  this[kJoined]!.closedOne();
}

/**
 * Joins two plain TCP sockets both ways (half-close preserved, reset propagated). Once both
 * closed, `done(arg, result)` is called (once), with the bytes `a` read and wrote; the returned
 * state's abort() resets both.
 */
export function joinTo<T>(a: Socket, b: Socket, done: JoinDone<T>, arg: T): Joined<T> {
  const j = new Joined(a, b, done, arg);
  (a as Side)[kJoined] = j as Joined;
  (b as Side)[kJoined] = j as Joined;
  a.setNoDelay(true);
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  a.on('error', onError);
  b.on('error', onError);
  a.on('close', onClose);
  b.on('close', onClose);
  return j;
}

function settle(resolve: (outcome: 'closed' | 'reset') => void, r: { outcome: 'closed' | 'reset' }): void {
  resolve(r.outcome);
}

/** joinTo(), resolving when both closed. */
export function joinSockets(a: Socket, b: Socket): Promise<'closed' | 'reset'> {
  return new Promise((resolve) => {
    joinTo(a, b, settle, resolve);
  });
}
