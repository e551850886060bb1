import type { Socket } from 'node:net';

/**
 * Closes a socket with a TCP RST, or with a plain close while its FIN is still on the way.
 * libuv refuses to reset a socket whose shutdown is in flight (EINVAL), and node then drops
 * the handle without closing it: the fd leaks and 'close' never comes.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded && !socket.writableFinished) socket.destroy();
  else socket.resetAndDestroy();
}
