import { before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import http2, { constants as h2c, type ClientHttp2Stream, type ServerHttp2Session } from 'node:http2';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { MeshError, type ErrorFlag } from '../../../shared/errors.js';
import { tlsOptions, type TlsMaterial } from '../../../shared/hbone/tls.js';
import { HboneServer, respondConnected, respondError, type InboundConnect } from '../../../shared/hbone/server.js';
import { bridge, bridgeTo, type BridgeResult } from '../../../shared/hbone/bridge.js';
import { ConnectionPool } from '../../../shared/hbone/pool.js';
import type { SocketAddress } from '../../../shared/model/types.js';

const SERVER_ID = new Identity('cluster.local', 'shop', 'echo');
const CLIENT_ID = new Identity('cluster.local', 'shop', 'client');

async function issue(ca: CertificateAuthority, id: Identity, extraRoots: string[] = []): Promise<TlsMaterial> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const cert = await ca.signCsr(csrPem, id);
  return { keyPem, certChainPem: [cert.certPem, ...cert.chainPem].join('\n'), rootsPem: [...cert.rootsPem, ...extraRoots] };
}

interface Materials {
  server: TlsMaterial;
  client: TlsMaterial;
  /** same identity as the client, signed by a CA the server does not trust */
  strangerClient: TlsMaterial;
  /** a client of trust domain other.local, whose root the server does trust */
  foreignClient: TlsMaterial;
  foreignId: Identity;
}

let m: Materials;

before(async () => {
  const ca = await CertificateAuthority.generate();
  const stranger = await CertificateAuthority.generate({ commonName: 'another mesh' });
  const other = await CertificateAuthority.generate({ trustDomain: 'other.local' });
  const foreignId = new Identity('other.local', 'shop', 'client');
  m = {
    // the server trusts the other trust domain's root, so only the trust-domain check can refuse its clients
    server: await issue(ca, SERVER_ID, other.rootsPem()),
    client: await issue(ca, CLIENT_ID),
    strangerClient: { ...(await issue(stranger, CLIENT_ID)), rootsPem: ca.rootsPem() },
    foreignClient: { ...(await issue(other, foreignId)), rootsPem: ca.rootsPem() },
    foreignId,
  };
});

/** Closes everything a test opened, even when it failed, so the process can exit. */
function closer(t: TestContext): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await fn();
  });
  return (fn) => fns.push(fn);
}

interface App {
  port: number;
  connections: number;
}

/** A plain TCP app on 127.0.0.1 (half-open allowed, as in the data path). */
async function startApp(onClose: (fn: () => unknown) => void, onConnection: (sock: net.Socket) => void): Promise<App> {
  const sockets = new Set<net.Socket>();
  const app: App = { port: 0, connections: 0 };
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    app.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    onConnection(sock);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  app.port = (server.address() as AddressInfo).port;
  onClose(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return app;
}

const echo = (sock: net.Socket): void => {
  sock.on('error', () => undefined);
  sock.pipe(sock);
};

interface Rejection {
  flag: ErrorFlag;
  reason: string;
}

interface Server {
  port: number;
  rejected: Rejection[];
  connects: InboundConnect[];
  sessions: Set<ServerHttp2Session>;
}

/** What ztunnel's inbound does: connect to the app named by the authority, answer 200, bridge. */
function connectToApp(req: InboundConnect): void {
  const app = net.connect({ host: '127.0.0.1', port: req.target.port, allowHalfOpen: true });
  const failed = (err: Error): void => respondError(req.stream, new MeshError('CONNECT', `app: ${err.message}`));
  app.once('error', failed);
  app.once('connect', () => {
    app.off('error', failed);
    if (req.stream.destroyed) {
      app.destroy();
      return;
    }
    respondConnected(req.stream);
    void bridge(app, req.stream);
  });
}

async function startServer(onClose: (fn: () => unknown) => void, handler: (req: InboundConnect) => void = connectToApp, material: TlsMaterial = m.server): Promise<Server> {
  const s: Server = { port: 0, rejected: [], connects: [], sessions: new Set() };
  const hbone = new HboneServer(material, 'cluster.local', {
    connect: (req) => {
      s.connects.push(req);
      handler(req);
    },
    rejected: (flag, reason) => s.rejected.push({ flag, reason }),
  });
  hbone.server.on('session', (session: ServerHttp2Session) => {
    s.sessions.add(session);
    session.on('close', () => s.sessions.delete(session));
  });
  await new Promise<void>((resolve) => hbone.server.listen(0, '127.0.0.1', resolve));
  s.port = (hbone.server.address() as AddressInfo).port;
  onClose(async () => {
    for (const session of s.sessions) session.destroy();
    await hbone.close();
  });
  return s;
}

function dial(target: SocketAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

function newPool(onClose: (fn: () => unknown) => void): ConnectionPool {
  const pool = new ConnectionPool();
  onClose(() => pool.close());
  return pool;
}

function tunnel(
  pool: ConnectionPool,
  server: Server,
  appPort: number,
  opts: { material?: TlsMaterial; expected?: string; source?: string; authority?: string; headers?: Record<string, string> } = {},
): Promise<ClientHttp2Stream> {
  return pool.open({
    source: opts.source ?? CLIENT_ID.toString(),
    expected: [opts.expected ?? SERVER_ID.toString()],
    target: { ip: '127.0.0.1', port: server.port },
    authority: opts.authority ?? `127.0.0.1:${appPort}`,
    ...(opts.headers ? { headers: opts.headers } : {}),
    dial,
    material: async () => opts.material ?? m.client,
  });
}

function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

function closed(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.closed) resolve();
    else stream.once('close', () => resolve());
  });
}

async function refusedWith(p: Promise<unknown>, flag?: ErrorFlag): Promise<MeshError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof MeshError, `expected a MeshError, got ${String(caught)}`);
  if (flag) assert.equal(caught.flag, flag, caught.message);
  return caught;
}

/** A good client can still open a tunnel and get its bytes echoed. */
async function stillServes(onClose: (fn: () => unknown) => void, server: Server, app: App): Promise<void> {
  const pool = newPool(onClose);
  const stream = await tunnel(pool, server, app.port);
  stream.end('still here');
  assert.equal((await readAll(stream)).toString(), 'still here');
}

describe('HBONE over mutual TLS', () => {
  test('bytes go both ways through a CONNECT stream; the server sees who connected', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const stream = await tunnel(pool, server, app.port, { headers: { forwarded: 'for="10.0.0.1:40000"' } });

    // interactive round trip first, then a bulk transfer that ends the client's side
    const first = new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.write('ping');
    assert.equal((await first).toString(), 'ping');
    const payload = randomBytes(256 * 1024);
    const rest = readAll(stream);
    stream.end(payload);
    assert.deepEqual(await rest, payload);

    assert.equal(server.connects.length, 1);
    const req = server.connects[0]!;
    assert.equal(req.peer.toString(), CLIENT_ID.toString());
    assert.deepEqual(req.target, { ip: '127.0.0.1', port: app.port });
    assert.equal(req.peerAddress.ip, '127.0.0.1');
    assert.equal(req.headers.forwarded, 'for="10.0.0.1:40000"');
  });

  test('half-close: a client that ends its side still receives the whole reply', async (t) => {
    const onClose = closer(t);
    const reply = randomBytes(1024 * 1024);
    let request = '';
    const app = await startApp(onClose, (sock) => {
      sock.on('error', () => undefined);
      sock.on('data', (c: Buffer) => (request += c.toString()));
      // answers only once the request is complete (EOF), like an HTTP/1.0 server
      sock.on('end', () => sock.end(reply));
    });
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const stream = await tunnel(pool, server, app.port);
    const got = readAll(stream);
    stream.end('GET /big\n');
    assert.deepEqual(await got, reply);
    assert.equal(request, 'GET /big\n');
  });

  test('the app resetting its connection reaches the client as a reset', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, (sock) => {
      sock.on('error', () => undefined);
      sock.once('data', () => sock.resetAndDestroy());
    });
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const stream = await tunnel(pool, server, app.port);
    const errors: string[] = [];
    stream.on('error', (err: NodeJS.ErrnoException) => errors.push(String(err.code)));
    stream.resume();
    stream.write('hello');
    await closed(stream);
    assert.equal(stream.rstCode, h2c.NGHTTP2_CONNECT_ERROR, 'the stream must be reset, not closed cleanly');
    assert.deepEqual(errors, ['ERR_HTTP2_STREAM_ERROR']);
  });

  test('through ztunnel-like bridges on both ends, an app reset reaches the client app as a reset', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, (sock) => {
      sock.on('error', () => undefined);
      sock.once('data', () => sock.resetAndDestroy());
    });
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    // the client side of ztunnel: a captured plain connection bridged into a tunnel
    const outbound = await startApp(onClose, (sock) => {
      sock.pause();
      sock.on('error', () => undefined);
      tunnel(pool, server, app.port).then(
        (stream) => void bridge(sock, stream),
        () => sock.resetAndDestroy(),
      );
    });
    // an ordinary client app: node's defaults (it closes when it reads EOF)
    const client = net.connect({ host: '127.0.0.1', port: outbound.port });
    onClose(() => client.destroy());
    const outcome = await new Promise<string>((resolve) => {
      let code = 'none';
      client.on('error', (err: NodeJS.ErrnoException) => (code = String(err.code)));
      client.on('end', () => (code === 'none' ? (code = 'end') : undefined));
      client.on('close', () => resolve(code));
      client.resume();
      client.write('hello');
    });
    assert.equal(outcome, 'ECONNRESET', 'the client app must see a reset, not a clean end');
  });

  test('through ztunnel-like bridges on both ends, a client app reset reaches the server app as a reset', async (t) => {
    const onClose = closer(t);
    let appClosed!: Promise<string>;
    let sawData!: () => void;
    const dataSeen = new Promise<void>((resolve) => (sawData = resolve));
    const app = await startApp(onClose, (sock) => {
      appClosed = new Promise((resolve) => {
        let code = 'none';
        sock.on('error', (err: NodeJS.ErrnoException) => (code = String(err.code)));
        sock.on('end', () => (code === 'none' ? (code = 'end') : undefined));
        sock.on('close', () => resolve(code));
      });
      sock.on('data', () => sawData());
    });
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const outbound = await startApp(onClose, (sock) => {
      sock.pause();
      sock.on('error', () => undefined);
      tunnel(pool, server, app.port).then(
        (stream) => void bridge(sock, stream),
        () => sock.resetAndDestroy(),
      );
    });
    const client = net.connect({ host: '127.0.0.1', port: outbound.port });
    onClose(() => client.destroy());
    client.on('error', () => undefined);
    client.write('hello');
    await dataSeen;
    client.resetAndDestroy();
    assert.equal(await appClosed, 'ECONNRESET', 'the server app must see a reset, not a clean end');
  });

  test('an answered tunnel keeps nothing of its request or answer headers, and still carries bytes both ways', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const stream = await tunnel(pool, server, app.port, { headers: { forwarded: 'for="10.0.0.1:40000"', baggage: 'k8s.pod.name=client' } });
    assert.equal(stream.sentHeaders, undefined, 'the client stream forgot the request headers');
    // the client has its 200: the server answered
    const req = server.connects[0]!;
    assert.equal(req.stream.headersSent, true);
    assert.equal(req.stream.sentHeaders, undefined, 'the server stream forgot the answer headers');
    assert.equal(req.headers.forwarded, 'for="10.0.0.1:40000"', 'what the server received is intact');
    assert.deepEqual(pool.stats().map((e) => e.streams), [1]);
    const rest = readAll(stream);
    stream.end('after the answer');
    assert.equal((await rest).toString(), 'after the answer');
    await closed(stream);
    assert.deepEqual(pool.stats().map((e) => e.streams), [0], 'the stream gave its room on the connection back');
  });

  test('bridgeTo reports the end once, with its value; abort() resets both ends', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const ends: [string, BridgeResult][] = [];
    let bridged!: { abort(): void };
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const outbound = await startApp(onClose, (sock) => {
      sock.pause();
      sock.on('error', () => undefined);
      void tunnel(pool, server, app.port).then((stream) => {
        bridged = bridgeTo(sock, stream, (arg: string, r) => ends.push([arg, r]), 'conn-1', h2c.NGHTTP2_CANCEL);
        ready();
      });
    });
    const client = net.connect({ host: '127.0.0.1', port: outbound.port });
    onClose(() => client.destroy());
    const outcome = new Promise<string>((resolve) => {
      let code = 'none';
      client.on('error', (err: NodeJS.ErrnoException) => (code = String(err.code)));
      client.on('close', () => resolve(code));
    });
    const echoed = new Promise<Buffer>((resolve) => client.once('data', resolve));
    client.write('ping');
    assert.equal((await echoed).toString(), 'ping');
    await isReady;
    bridged.abort();
    assert.equal(await outcome, 'ECONNRESET', 'the client sees a reset');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(ends.length, 1);
    assert.equal(ends[0]![0], 'conn-1');
    assert.equal(ends[0]![1].bytesFromSocket, 4);
    assert.equal(ends[0]![1].bytesToSocket, 4);
    assert.equal(ends[0]![1].outcome, 'reset');
  });

  test('one connection carries 50 concurrent streams', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const streams = await Promise.all(Array.from({ length: 50 }, () => tunnel(pool, server, app.port)));
    assert.deepEqual(
      pool.stats().map((s) => [s.connections, s.streams]),
      [[1, 50]],
    );
    assert.equal(server.sessions.size, 1);
    const replies = await Promise.all(
      streams.map((s, i) => {
        const r = readAll(s);
        s.end(`stream ${i}`);
        return r;
      }),
    );
    replies.forEach((r, i) => assert.equal(r.toString(), `stream ${i}`));
    await Promise.all(streams.map(closed));
    assert.equal(pool.stats()[0]?.streams ?? 0, 0);
    // the idle connection is reused by the next stream
    const again = await tunnel(pool, server, app.port);
    assert.deepEqual(
      pool.stats().map((s) => [s.connections, s.streams]),
      [[1, 1]],
    );
    again.end();
    await readAll(again);
  });

  test('a burst of 150 opens opens at most 2 connections', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const streams = await Promise.all(Array.from({ length: 150 }, () => tunnel(pool, server, app.port)));
    const stats = pool.stats();
    assert.equal(stats.length, 1);
    assert.ok(stats[0]!.connections <= 2, `opened ${stats[0]!.connections} connections`);
    assert.equal(stats[0]!.streams, 150);
    assert.ok(server.sessions.size <= 2);
    const replies = await Promise.all(
      streams.map((s, i) => {
        const r = readAll(s);
        s.end(`burst ${i}`);
        return r;
      }),
    );
    replies.forEach((r, i) => assert.equal(r.toString(), `burst ${i}`));
  });

  test('a server presenting another identity is refused by the client (TLS_FAILURE)', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    const err = await refusedWith(tunnel(pool, server, app.port, { expected: 'spiffe://cluster.local/ns/shop/sa/payments' }), 'TLS_FAILURE');
    assert.match(err.message, /spiffe:\/\/cluster\.local\/ns\/shop\/sa\/echo/);
    assert.equal(app.connections, 0);
    assert.equal(server.connects.length, 0);
  });

  test('a client certificate from another CA is refused', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    await refusedWith(tunnel(pool, server, app.port, { material: m.strangerClient }));
    assert.equal(app.connections, 0);
    assert.equal(server.connects.length, 0);
    assert.ok(
      server.rejected.some((r) => r.flag === 'TLS_FAILURE'),
      JSON.stringify(server.rejected),
    );
    await stillServes(onClose, server, app);
  });

  test('a client from another trust domain is refused', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const pool = newPool(onClose);
    await refusedWith(tunnel(pool, server, app.port, { material: m.foreignClient, source: m.foreignId.toString() }));
    assert.equal(app.connections, 0);
    assert.equal(server.connects.length, 0);
    assert.ok(
      server.rejected.some((r) => r.flag === 'TLS_FAILURE' && /outside trust domain cluster\.local/.test(r.reason)),
      JSON.stringify(server.rejected),
    );
    await stillServes(onClose, server, app);
  });

  test('requests that are not CONNECT, or have a bad authority, get 400', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const session = http2.connect(`https://127.0.0.1:${server.port}`, { ...tlsOptions(m.client), checkServerIdentity: () => undefined });
    session.on('error', () => undefined);
    onClose(() => session.destroy());
    const status = (headers: http2.OutgoingHttpHeaders): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = session.request(headers, { endStream: headers[':method'] !== 'CONNECT' });
        req.on('error', reject);
        req.once('response', (h) => {
          resolve(Number(h[':status']));
          req.close();
        });
      });
    assert.equal(await status({ ':method': 'GET', ':path': '/' }), 400);
    assert.equal(await status({ ':method': 'POST', ':path': '/', ':authority': `127.0.0.1:${app.port}` }), 400);
    for (const authority of ['web.shop.svc:80', '127.0.0.1', '127.0.0.1:0', '300.1.1.1:80', '[:]:80']) {
      assert.equal(await status({ ':method': 'CONNECT', ':authority': authority }), 400, authority);
    }
    assert.equal(server.connects.length, 0);
    assert.equal(app.connections, 0);
    assert.ok(server.rejected.every((r) => r.flag === 'BAD_REQUEST'));
    assert.equal(server.rejected.length, 7);

    // the pool reports it with the flag that status maps to
    const pool = newPool(onClose);
    await refusedWith(tunnel(pool, server, app.port, { authority: 'web.shop.svc:80' }), 'BAD_REQUEST');
  });

  test('plaintext on the HBONE port is closed; the server keeps serving', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const raw = net.connect({ host: '127.0.0.1', port: server.port });
    onClose(() => raw.destroy());
    raw.on('error', () => undefined);
    raw.resume();
    const gone = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await gone;
    assert.equal(app.connections, 0);
    await stillServes(onClose, server, app);
  });

  test('a TLS 1.2-only client fails the handshake; the server keeps serving', async (t) => {
    const onClose = closer(t);
    const app = await startApp(onClose, echo);
    const server = await startServer(onClose);
    const outcome = await new Promise<string>((resolve) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port: server.port,
        key: m.client.keyPem,
        cert: m.client.certChainPem,
        ca: m.client.rootsPem,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      onClose(() => s.destroy());
      s.once('secureConnect', () => resolve('connected'));
      s.once('error', (err) => resolve(`error: ${err.message}`));
    });
    assert.match(outcome, /^error: /);
    assert.ok(server.rejected.some((r) => r.flag === 'TLS_FAILURE'));
    await stillServes(onClose, server, app);
  });

  test('a handler refusing with a MeshError sends its status; the client reads the mapped flag', async (t) => {
    const onClose = closer(t);
    const cases: [MeshError, ErrorFlag][] = [
      [new MeshError('NO_WORKLOAD', 'no such pod here'), 'CONNECT'],
      [new MeshError('CONNECT', 'app refused'), 'CONNECT'],
      [new MeshError('DENY', 'policy deny-all'), 'DENY'],
      [new MeshError('LOOP', 'ztunnel port'), 'BAD_REQUEST'],
    ];
    for (const [refusal, flag] of cases) {
      const server = await startServer(onClose, (req) => respondError(req.stream, refusal));
      const pool = newPool(onClose);
      const err = await refusedWith(tunnel(pool, server, 8080), flag);
      assert.match(err.message, new RegExp(`answered ${refusal.status}`));
      // the refused stream is released: nothing stays open on the connection
      await new Promise((r) => setImmediate(r));
      assert.equal(pool.stats().reduce((n, s) => n + s.streams, 0), 0);
    }
  });
});
