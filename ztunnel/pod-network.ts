import net from 'node:net';
import { tcpSocket, closeFd, openNetns } from '../shared/native/index.js';
import { ZTUNNEL_MARK } from '../shared/redirect/rules.js';
import { formatAddress, type SocketAddress } from '../shared/model/types.js';

const CONNECT_TIMEOUT_MS = 10_000;

/** Sockets made inside one pod's network namespace, marked so the pod's redirect rules let them through. */
export class PodNetwork {
  private closed = false;

  private constructor(readonly netnsFd: number, readonly netnsPath: string) {}

  // The fd number may be reused once closed; never setns() through a stale one.
  private fd(): number {
    if (this.closed) throw Object.assign(new Error('pod is no longer captured by this ztunnel'), { code: 'ENOTCAPTURED' });
    return this.netnsFd;
  }

  /** Opens the pod's netns (a path like /run/netns/NAME or /proc/PID/ns/net). */
  static open(netnsPath: string): PodNetwork {
    return new PodNetwork(openNetns(netnsPath), netnsPath);
  }

  /** A listening socket fd on 0.0.0.0:port inside the pod. */
  listenFd(port: number): number {
    return tcpSocket({ netnsFd: this.fd(), bind: { ip: '0.0.0.0', port }, listen: 4096, reuseAddr: true, reusePort: true });
  }

  /**
   * Connects from inside the pod, marked. With `from`, the socket is transparent and bound to
   * that (foreign) address, so the app sees the real client; the pod's connmark route brings
   * the replies back to it.
   */
  connect(target: SocketAddress, from?: string): Promise<net.Socket> {
    const fd = tcpSocket({
      netnsFd: this.fd(),
      family: target.ip.includes(':') ? 6 : 4,
      mark: ZTUNNEL_MARK,
      ...(from ? { transparent: true, bind: { ip: from, port: 0 } } : {}),
    });
    const sock = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        clearTimeout(timer);
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(() => {
        sock.destroy();
        reject(Object.assign(new Error(`connect to ${formatAddress(target)} timed out`), { code: 'ETIMEDOUT' }));
      }, CONNECT_TIMEOUT_MS);
      sock.once('error', onError);
      sock.connect(target.port, target.ip, () => {
        clearTimeout(timer);
        // off(), not removeAllListeners(): that deletes the event's key from the socket's
        // listener table, which then becomes a dictionary (~0.45 KB more for as long as the
        // socket is open, and the app's connections may be held for hours)
        sock.off('error', onError);
        resolve(sock);
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.netnsFd);
  }
}
