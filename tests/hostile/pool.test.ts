/**
 * The HBONE client (shared/hbone/pool.ts ConnectionPool) against servers that misbehave
 * after the TLS handshake: one that closes before HTTP/2 starts, one that never answers, and
 * one that dies (SIGKILL, as a ztunnel restart does) under an open tunnel. Opening a tunnel
 * must fail within bounds and the next open must dial again; a dead peer must end the
 * tunnels on it at once, rather than every stream pooled onto it hanging.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';
import { tlsOptions, type TlsMaterial } from '../../shared/hbone/tls.js';
import { ConnectionPool } from '../../shared/hbone/pool.js';
import { bridge } from '../../shared/hbone/bridge.js';
import { MeshError } from '../../shared/errors.js';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SERVER = new Identity('cluster.local', 'shop', 'echo');
const CLIENT = new Identity('cluster.local', 'shop', 'client');
let server: TlsMaterial;
let client: TlsMaterial;

async function issue(ca: CertificateAuthority, id: Identity): Promise<TlsMaterial> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const c = await ca.signCsr(csrPem, id);
  return { keyPem, certChainPem: [c.certPem, ...c.chainPem].join('\n'), rootsPem: c.rootsPem };
}

before(async () => {
  const ca = await CertificateAuthority.generate();
  server = await issue(ca, SERVER);
  client = await issue(ca, CLIENT);
});

/** A TLS server speaking h2 ALPN that does `after` with each handshaken socket instead of HTTP/2. */
async function badServer(after: (s: tls.TLSSocket) => void): Promise<{ port: number; accepted: () => number; close: () => void }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const srv = tls.createServer({ ...tlsOptions(server), requestCert: true, rejectUnauthorized: true }, (s) => {
    n++;
    sockets.add(s);
    s.on('error', () => undefined);
    after(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as AddressInfo).port, accepted: () => n, close: () => { for (const s of sockets) s.destroy(); srv.close(); } };
}

function open(pool: ConnectionPool, port: number, authority = '127.0.0.1:8080') {
  return pool.open({
    source: CLIENT.toString(),
    expected: [SERVER.toString()],
    target: { ip: '127.0.0.1', port },
    authority,
    dial: (t) =>
      new Promise((resolve, reject) => {
        // half-open, as the data path's dialer (ztunnel/pod-network.ts) makes its sockets
        const s = net.connect({ port: t.port, host: t.ip, allowHalfOpen: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    material: async () => client,
  });
}

async function settle(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.then(() => 'opened', (e: unknown) => e), new Promise((r) => (timer = setTimeout(() => r('still waiting'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('HBONE client against servers that fail after the handshake', () => {
  test('a server that closes before HTTP/2 starts: the open fails at once, and the next open dials again', async () => {
    const bad = await badServer((s) => setTimeout(() => s.end(), 50));
    const pool = new ConnectionPool();
    try {
      const burst = await Promise.all(Array.from({ length: 5 }, () => settle(open(pool, bad.port), 3000)));
      for (const r of burst) {
        assert.ok(r instanceof MeshError, `expected a MeshError, got ${String(r)}`);
        assert.match(r.message, /closed|HTTP\/2/);
      }
      const again = await settle(open(pool, bad.port), 3000);
      assert.ok(again instanceof MeshError);
      assert.ok(bad.accepted() >= 2, 'a later open makes a new connection');
    } finally {
      pool.close();
      bad.close();
    }
  });

  test('a server that takes the handshake and then says nothing: the open fails at the response deadline', { timeout: 40_000 }, async () => {
    const bad = await badServer(() => undefined); // holds the socket, says nothing
    const pool = new ConnectionPool();
    try {
      const started = Date.now();
      const r = await settle(open(pool, bad.port), 25_000);
      assert.ok(r instanceof MeshError, `expected a MeshError, got ${String(r)}`);
      assert.equal(r.flag, 'TIMEOUT');
      assert.ok(Date.now() - started < 20_000);
    } finally {
      pool.close();
      bad.close();
    }
  });

  test('a peer that dies under an open tunnel ends it at once, and the pool forgets the connection', async () => {
    const child = fork(fileURLToPath(new URL('./hbone-target.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const pool = new ConnectionPool();
    try {
      child.send({ type: 'start', material: server, trustDomain: 'cluster.local' });
      const ready = await new Promise<{ port: number; appPort: number }>((r) => child.once('message', (m) => r(m as { port: number; appPort: number })));
      const stream = await open(pool, ready.port, `127.0.0.1:${ready.appPort}`);
      stream.on('error', () => undefined);
      stream.resume();
      const ended = new Promise<number>((r) => stream.once('close', () => r(Date.now())));
      const killed = Date.now();
      child.kill('SIGKILL');
      const at = await Promise.race([ended, new Promise<null>((r) => setTimeout(() => r(null), 5000).unref())]);
      assert.notEqual(at, null, 'the tunnel ended within 5 s');
      assert.ok(at! - killed < 2000, `ended ${at! - killed} ms after the peer died`);
      assert.deepEqual(pool.stats(), [], 'no dead connection left in the pool');
    } finally {
      pool.close();
      child.kill('SIGKILL');
    }
  });

  for (const [how, kill] of [['is killed', (c: ChildProcess) => c.kill('SIGKILL')], ['sends GOAWAY and exits', (c: ChildProcess) => c.send({ type: 'goaway-exit' })]] as const) {
  test(`the app bridged to a tunnel whose peer ${how} sees a reset, never a clean end of a cut stream`, async () => {
    const child = fork(fileURLToPath(new URL('./hbone-target.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const pool = new ConnectionPool();
    const app = net.createServer({ allowHalfOpen: true });
    try {
      child.send({ type: 'start', material: server, trustDomain: 'cluster.local' });
      const ready = await new Promise<{ port: number; appPort: number }>((r) => child.once('message', (m) => r(m as { port: number; appPort: number })));
      // ztunnel's outbound: the app's socket on one side, the tunnel on the other
      await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
      const accepted = new Promise<net.Socket>((r) => app.once('connection', r));
      const appSide = net.connect({ port: (app.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
      const ztunnelSide = await accepted;
      const stream = await open(pool, ready.port, `127.0.0.1:${ready.appPort}`);
      void bridge(ztunnelSide, stream);
      const seen = new Promise<string>((resolve) => {
        appSide.on('data', () => undefined);
        appSide.once('end', () => resolve('clean end'));
        appSide.once('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
      });
      appSide.write('some bytes of a longer stream');
      await new Promise((r) => setTimeout(r, 200));
      kill(child);
      const r = await Promise.race([seen, new Promise<string>((res) => setTimeout(() => res('nothing within 5 s'), 5000).unref())]);
      assert.equal(r, 'error ECONNRESET');
      appSide.destroy();
    } finally {
      pool.close();
      app.close();
      child.kill('SIGKILL');
    }
  });
}
});

