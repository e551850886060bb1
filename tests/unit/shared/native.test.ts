import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';

import {
  closeFd,
  getMark,
  inNetns,
  openNetns,
  originalDst,
  recvFd,
  sendFd,
  setMark,
  socketFd,
  socketPair,
  tcpSocket,
} from '../../../shared/native/index.js';

const isRoot = process.getuid?.() === 0;
const run = promisify(execFile);

// Commands run asynchronously: execSync would freeze the very sockets under test.
async function sh(cmd: string, ...args: string[]): Promise<void> {
  await run(cmd, args);
}

const liveNetns = new Set<string>();

// Safety net: a namespace from a test that crashed mid-way is still removed.
after(async () => {
  for (const name of liveNetns) await sh('ip', 'netns', 'del', name).catch(() => {});
});

/** Runs fn with a fresh netns (lo up) and an open fd to it; always deletes the netns. */
async function withNetns<T>(fn: (name: string, nsfd: number) => Promise<T>): Promise<T> {
  const name = `ambit-t-${randomBytes(4).toString('hex')}`;
  await sh('ip', 'netns', 'add', name);
  liveNetns.add(name);
  let nsfd = -1;
  try {
    await sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
    nsfd = openNetns(`/run/netns/${name}`);
    return await fn(name, nsfd);
  } finally {
    if (nsfd >= 0) closeFd(nsfd);
    await sh('ip', 'netns', 'del', name);
    liveNetns.delete(name);
  }
}

/** Inode of the calling thread's netns, to prove the thread came back home. */
function threadNetnsIno(): number {
  return statSync('/proc/thread-self/ns/net').ino;
}

/** Wraps a listening fd in a Node server; each connection is handed to onConn. */
async function serveFd(fd: number, onConn: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, onConn);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve());
  });
  return server;
}

function echo(s: net.Socket): void {
  s.on('error', () => {});
  s.pipe(s);
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Connects a socket made by tcpSocket() to host:port, sends msg, half-closes, returns the reply. */
function exchange(fd: number, host: string, port: number, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = new net.Socket({ fd, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    sock.on('error', reject);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      sock.end();
      resolve(Buffer.concat(chunks).toString());
    });
    // Writing before 'connect' loses the bytes (DESIGN.md section 5).
    sock.connect(port, host, () => sock.end(msg));
  });
}

function portOf(server: net.Server): number {
  const a = server.address();
  assert.ok(a && typeof a === 'object');
  return a.port;
}

test('listener created inside a netns serves that netns only', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (_name, nsfd) => {
    const home = threadNetnsIno();
    const lfd = tcpSocket({ netnsFd: nsfd, bind: { ip: '127.0.0.1', port: 0 }, listen: 16 });
    assert.equal(threadNetnsIno(), home, 'thread returned to its own netns');

    let accepted = 0;
    const server = await serveFd(lfd, (s) => {
      accepted++;
      echo(s);
    });
    try {
      const port = portOf(server);
      const cfd = tcpSocket({ netnsFd: nsfd });
      assert.equal(await exchange(cfd, '127.0.0.1', port, 'hello from the pod'), 'hello from the pod');
      assert.equal(accepted, 1);

      // Same address and port from the root netns must not reach this server.
      await new Promise<void>((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
        c.on('error', () => resolve());
        c.on('connect', () => {
          c.destroy();
          resolve();
        });
      });
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(accepted, 1, 'root-netns connection did not land on the netns listener');
    } finally {
      await closeServer(server);
    }
  });
});

test('inNetns runs fn inside the namespace and always switches back', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (_name, nsfd) => {
    const home = threadNetnsIno();
    const inside = inNetns(nsfd, () => threadNetnsIno());
    assert.equal(inside, fstatSync(nsfd).ino);
    assert.notEqual(inside, home);
    assert.equal(threadNetnsIno(), home);

    const boom = new Error('boom');
    assert.throws(
      () =>
        inNetns(nsfd, () => {
          throw boom;
        }),
      (e) => e === boom,
    );
    assert.equal(threadNetnsIno(), home, 'restored after fn threw');
  });
});

test('SO_MARK is applied by tcpSocket and setMark, readable with getMark', { skip: !isRoot && 'needs root' }, async () => {
  const fd = tcpSocket({ mark: 0x539 });
  try {
    assert.equal(getMark(fd), 0x539);
    setMark(fd, 0x111);
    assert.equal(getMark(fd), 0x111);
    setMark(fd, 0xffffffff);
    assert.equal(getMark(fd), 0xffffffff, 'full 32-bit marks survive');
  } finally {
    closeFd(fd);
  }

  // On a socket Node owns, via socketFd().
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    const sfd = socketFd(server);
    assert.equal(getMark(sfd), 0);
    setMark(sfd, 0x539);
    assert.equal(getMark(sfd), 0x539);
  } finally {
    await closeServer(server);
  }
});

test('reusePort lets two listeners share a port; without it bind fails', async () => {
  const a = tcpSocket({ reusePort: true, reuseAddr: true, bind: { ip: '127.0.0.1', port: 0 }, listen: 8 });
  const server = await serveFd(a, echo);
  try {
    const port = portOf(server);
    const b = tcpSocket({ reusePort: true, reuseAddr: true, bind: { ip: '127.0.0.1', port }, listen: 8 });
    closeFd(b);
    assert.throws(
      () => tcpSocket({ bind: { ip: '127.0.0.1', port }, listen: 8 }),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE' && e.message === 'bind: Address already in use',
    );
  } finally {
    await closeServer(server);
  }
});

/** Adds interface if0 with the given addresses inside the netns: a dummy, or a veth pair
 * kept wholly inside the netns where the kernel lacks the dummy driver. */
async function addIface(name: string, ...addrs: string[]): Promise<void> {
  try {
    await sh('ip', '-n', name, 'link', 'add', 'if0', 'type', 'dummy');
  } catch {
    await sh('ip', '-n', name, 'link', 'add', 'if0', 'type', 'veth', 'peer', 'name', 'if0p');
    await sh('ip', '-n', name, 'link', 'set', 'if0p', 'up');
  }
  for (const a of addrs) {
    const extra = a.includes(':') ? ['nodad'] : [];
    await sh('ip', '-n', name, 'addr', 'add', a, 'dev', 'if0', ...extra);
  }
  await sh('ip', '-n', name, 'link', 'set', 'if0', 'up');
}

/** Listens on fd, connects a netns socket to host:port, returns originalDst() of the accepted side. */
async function originalDstOf(lfd: number, nsfd: number, family: 4 | 6, host: string, port: number) {
  let dst: { ip: string; port: number } | Error | undefined;
  const server = await serveFd(lfd, (s) => {
    try {
      dst = originalDst(socketFd(s));
    } catch (e) {
      dst = e as Error;
    }
    echo(s);
  });
  try {
    const reply = await exchange(tcpSocket({ netnsFd: nsfd, family }), host, port, 'x');
    assert.equal(reply, 'x');
  } finally {
    await closeServer(server);
  }
  if (dst instanceof Error) throw dst;
  return dst;
}

test('originalDst reports the pre-REDIRECT IPv4 destination', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (name, nsfd) => {
    await addIface(name, '10.77.0.1/24');
    await sh('ip', 'netns', 'exec', name, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.77.0.9', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001');

    const lfd = () => tcpSocket({ netnsFd: nsfd, reuseAddr: true, bind: { ip: '0.0.0.0', port: 15001 }, listen: 16 });
    assert.deepEqual(await originalDstOf(lfd(), nsfd, 4, '10.77.0.9', 80), { ip: '10.77.0.9', port: 80 });
    // A tracked but un-NATed connection reports its own destination.
    assert.deepEqual(await originalDstOf(lfd(), nsfd, 4, '127.0.0.1', 15001), { ip: '127.0.0.1', port: 15001 });
  });
});

test('originalDst reports the pre-REDIRECT IPv6 and IPv4-mapped destinations', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (name, nsfd) => {
    await addIface(name, '10.77.0.1/24', 'fd77::1/64');
    await sh('ip', 'netns', 'exec', name, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.77.0.9', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001');
    await sh('ip', 'netns', 'exec', name, 'ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', 'fd77::9', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '15001');

    // Dual-stack [::]:15001, so IPv4 arrives as ::ffff:a.b.c.d.
    const lfd = () => tcpSocket({ netnsFd: nsfd, family: 6, reuseAddr: true, bind: { ip: '::', port: 15001 }, listen: 16 });
    assert.deepEqual(await originalDstOf(lfd(), nsfd, 6, 'fd77::9', 80), { ip: 'fd77::9', port: 80 });
    assert.deepEqual(await originalDstOf(lfd(), nsfd, 4, '10.77.0.9', 80), { ip: '10.77.0.9', port: 80 });
  });
});

test('IP_TRANSPARENT allows binding a non-local address only when requested', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (_name, nsfd) => {
    for (const [family, ip] of [[4, '10.99.0.5'], [6, 'fd99::5']] as const) {
      assert.throws(
        () => tcpSocket({ netnsFd: nsfd, family, bind: { ip, port: 0 } }),
        (e: NodeJS.ErrnoException) => e.code === 'EADDRNOTAVAIL' && e.message === 'bind: Cannot assign requested address',
        `family ${family} without transparent`,
      );
      const fd = tcpSocket({ netnsFd: nsfd, family, transparent: true, mark: 0x539, bind: { ip, port: 0 } });
      closeFd(fd);
    }
  });
});

test('sendFd/recvFd pass a netns fd across a socketpair', async () => {
  const [a, b] = socketPair();
  const nsfd = openNetns('/proc/self/ns/net');
  try {
    assert.equal(recvFd(b, 64), null, 'nothing queued yet: EAGAIN maps to null');

    sendFd(a, Buffer.from('add pod-1'), nsfd);
    const got = recvFd(b, 64);
    assert.ok(got);
    assert.equal(got.data.toString(), 'add pod-1');
    assert.ok(got.fd !== null && got.fd !== nsfd, 'a new fd was installed');
    assert.equal(fstatSync(got.fd).ino, fstatSync(nsfd).ino, 'same namespace');
    assert.equal(fstatSync(got.fd).dev, fstatSync(nsfd).dev);
    closeFd(got.fd);

    assert.throws(
      () => sendFd(a, Buffer.alloc(0), nsfd),
      (e: NodeJS.ErrnoException) => e.code === 'EINVAL' && /at least 1 byte/.test(e.message),
    );

    closeFd(a);
    const eof = recvFd(b, 64);
    assert.deepEqual(eof && { len: eof.data.length, fd: eof.fd }, { len: 0, fd: null }, 'EOF is empty data');
  } finally {
    closeFd(b);
    closeFd(nsfd);
  }
});

test('a netns fd received over SOCK_SEQPACKET creates sockets in that netns', { skip: !isRoot && 'needs root' }, async () => {
  await withNetns(async (_name, nsfd) => {
    const [a, b] = socketPair(true);
    try {
      sendFd(a, Buffer.from([1]), nsfd);
      const got = recvFd(b, 16);
      assert.ok(got && got.fd !== null);
      assert.equal(fstatSync(got.fd).ino, fstatSync(nsfd).ino);
      const lfd = tcpSocket({ netnsFd: got.fd, bind: { ip: '127.0.0.1', port: 0 }, listen: 4 });
      closeFd(got.fd);
      const server = await serveFd(lfd, echo);
      try {
        const reply = await exchange(tcpSocket({ netnsFd: nsfd }), '127.0.0.1', portOf(server), 'via passed fd');
        assert.equal(reply, 'via passed fd');
      } finally {
        await closeServer(server);
      }
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });
});

test('errors name the call and errno and carry .code', async () => {
  const badFd = 999_999;
  const expectErr = (fn: () => unknown, code: string, message: string | RegExp) =>
    assert.throws(fn, (e: NodeJS.ErrnoException) => {
      assert.ok(e instanceof Error);
      assert.equal(e.code, code);
      if (typeof message === 'string') assert.equal(e.message, message);
      else assert.match(e.message, message);
      return true;
    });

  expectErr(() => tcpSocket({ bind: { ip: '300.1.2.3', port: 80 } }), 'EINVAL', "tcpSocket: invalid IPv4 address '300.1.2.3'");
  expectErr(() => tcpSocket({ bind: { ip: 'not an ip', port: 80 } }), 'EINVAL', "tcpSocket: invalid IPv4 address 'not an ip'");
  expectErr(() => tcpSocket({ family: 6, bind: { ip: '10.0.0.1', port: 80 } }), 'EINVAL', "tcpSocket: invalid IPv6 address '10.0.0.1'");
  expectErr(() => setMark(badFd, 1), 'EBADF', 'setsockopt(SO_MARK): Bad file descriptor');
  expectErr(() => getMark(badFd), 'EBADF', 'getsockopt(SO_MARK): Bad file descriptor');
  expectErr(() => originalDst(badFd), 'EBADF', 'getsockname: Bad file descriptor');
  expectErr(() => closeFd(badFd), 'EBADF', 'close: Bad file descriptor');
  expectErr(() => sendFd(badFd, Buffer.from('x'), 0), 'EBADF', 'sendmsg: Bad file descriptor');
  expectErr(() => recvFd(badFd, 1), 'EBADF', 'recvmsg: Bad file descriptor');
  expectErr(() => openNetns('/nonexistent/ns/net'), 'ENOENT', 'open /nonexistent/ns/net: No such file or directory');

  // Out-of-range / wrongly typed arguments are caught before any syscall.
  assert.throws(() => tcpSocket({ bind: { ip: '127.0.0.1', port: 70000 } }), RangeError);
  assert.throws(() => setMark(-1, 1), RangeError);
  assert.throws(() => tcpSocket({ family: 5 as 4 }), TypeError);

  // Not a socket / not a namespace; the thread must stay in its own netns.
  const file = openSync('/proc/self/status', 'r');
  try {
    expectErr(() => setMark(file, 1), 'ENOTSOCK', 'setsockopt(SO_MARK): Socket operation on non-socket');
    const home = threadNetnsIno();
    expectErr(() => tcpSocket({ netnsFd: file }), 'EINVAL', /^setns: /);
    assert.equal(threadNetnsIno(), home);
  } finally {
    closeSync(file);
  }

  const s = new net.Socket();
  assert.throws(() => socketFd(s), /socketFd: no file descriptor available/);
});
