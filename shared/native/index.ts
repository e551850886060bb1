// Typed wrapper around the ambit_net native addon (shared/native/ambit_net.c):
// the Linux socket calls Node lacks (setns-scoped sockets, SO_MARK,
// IP_TRANSPARENT, SO_ORIGINAL_DST, SCM_RIGHTS). See DESIGN.md section 5.
//
// Syscall failures throw Error("<call>: <strerror>") with `.code` set to the
// errno name (e.g. 'EPERM', 'EAGAIN').

import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server, Socket } from 'node:net';

export interface TcpSocketOptions {
  /** Create the socket inside this network namespace (fd of /proc/PID/ns/net or /run/netns/NAME); omitted = current netns. */
  netnsFd?: number;
  /** Address family; default 4. */
  family?: 4 | 6;
  /** SO_MARK. */
  mark?: number;
  /** IP_TRANSPARENT (IPV6_TRANSPARENT for family 6). */
  transparent?: boolean;
  /** SO_REUSEADDR. */
  reuseAddr?: boolean;
  /** SO_REUSEPORT. */
  reusePort?: boolean;
  /** bind() before returning. */
  bind?: { ip: string; port: number };
  /** If set, listen(backlog) after bind. */
  listen?: number;
}

interface NativeBinding {
  openNetns(path: string): number;
  closeFd(fd: number): void;
  tcpSocket(opts: TcpSocketOptions): number;
  originalDst(fd: number): { ip: string; port: number };
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  inNetns<T>(netnsFd: number, fn: () => T): T;
  socketPair(seqpacket?: boolean): [number, number];
  sendFd(unixFd: number, data: Buffer, fd: number): void;
  recvFd(unixFd: number, maxBytes: number): { data: Buffer; fd: number | null } | null;
}

/** Finds the repo root (directory whose package.json is named "ambit"), from both shared/native and dist/shared/native. */
function findRepoRoot(start: string): string | undefined {
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'ambit') return dir;
      } catch {
        // Unreadable or malformed package.json: not ours, keep walking up.
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

let cached: NativeBinding | undefined;

// Loaded lazily so that merely importing this module (e.g. on a machine where
// the addon was not built) does not fail; the first real call reports it.
function native(): NativeBinding {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  const root = findRepoRoot(here);
  const addon = root ? join(root, 'build', 'Release', 'ambit_net.node') : 'build/Release/ambit_net.node';
  try {
    if (!root) throw new Error(`no package.json named "ambit" above ${here}`);
    cached = createRequire(import.meta.url)(addon) as NativeBinding;
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new Error(
      `The ambit native addon could not be loaded from ${addon} (${why}). ` +
        `Run \`npm install\` in the ambit directory to build it (needs Linux, a C compiler and node-gyp).`,
      { cause: err },
    );
  }
  return cached;
}

/** Opens a network namespace file (O_RDONLY|O_CLOEXEC) and returns its fd. */
export function openNetns(path: string): number {
  return native().openNetns(path);
}

/** Closes a raw fd obtained from this module. */
export function closeFd(fd: number): void {
  native().closeFd(fd);
}

/** Creates a non-blocking, close-on-exec TCP socket (inside netnsFd if given; the thread always returns to its own netns), applies options, returns the fd. */
export function tcpSocket(opts: TcpSocketOptions): number {
  return native().tcpSocket(opts);
}

/** SO_ORIGINAL_DST (IPv4) / IP6T_SO_ORIGINAL_DST (IPv6) of an accepted, redirected socket fd (un-NATed tracked sockets report their own address; ENOENT if conntrack has no entry). */
export function originalDst(fd: number): { ip: string; port: number } {
  return native().originalDst(fd);
}

/** Sets SO_MARK on an existing fd. */
export function setMark(fd: number, mark: number): void {
  native().setMark(fd, mark);
}

/** Reads SO_MARK of an fd. */
export function getMark(fd: number): number {
  return native().getMark(fd);
}

/** fd of a connected/listening net.Socket or net.Server handle (reads `_handle.fd`), throws if unavailable. */
export function socketFd(sock: Socket | Server): number {
  // `_handle` is Node-internal but stable for TCP/pipe handles on Unix.
  const fd = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new Error('socketFd: no file descriptor available (socket not yet connected/listening, already closed, or not a TCP/pipe handle)');
  }
  return fd;
}

/** Runs fn with the calling thread switched into netnsFd, switches back afterwards (synchronous only). Prefer tcpSocket. */
export function inNetns<T>(netnsFd: number, fn: () => T): T {
  return native().inNetns(netnsFd, fn);
}

/** Non-blocking, close-on-exec AF_UNIX socket pair (SOCK_STREAM, or SOCK_SEQPACKET if seqpacket). */
export function socketPair(seqpacket = false): [number, number] {
  return native().socketPair(seqpacket);
}

/** Sends data (at least 1 byte) with fd attached as SCM_RIGHTS in one non-blocking sendmsg; throws EAGAIN if the socket is full. */
export function sendFd(unixFd: number, data: Buffer, fd: number): void {
  native().sendFd(unixFd, data, fd);
}

/** Non-blocking recvmsg of up to maxBytes plus a passed fd (null if none); returns null on EAGAIN, empty data on EOF. */
export function recvFd(unixFd: number, maxBytes: number): { data: Buffer; fd: number | null } | null {
  return native().recvFd(unixFd, maxBytes);
}
