import type { Socket } from 'node:net';
import { resetSocket } from './reset.js';

/** Joins two plain TCP sockets both ways (half-close preserved, reset propagated); resolves when both closed. */
export function joinSockets(a: Socket, b: Socket): Promise<'closed' | 'reset'> {
  return new Promise((resolve) => {
    let outcome: 'closed' | 'reset' = 'closed';
    let closed = 0;
    const onClose = (): void => {
      if (++closed === 2) resolve(outcome);
    };
    const onError = (other: Socket) => (): void => {
      outcome = 'reset';
      resetSocket(other);
    };
    a.setNoDelay(true);
    b.setNoDelay(true);
    a.pipe(b);
    b.pipe(a);
    a.on('error', onError(b));
    b.on('error', onError(a));
    a.on('close', onClose);
    b.on('close', onClose);
  });
}
