// HBONE while certificates and roots change: the pool stops putting new streams on connections
// made with a replaced certificate, streams open on them carry on; a server whose trust bundle
// lost a root drains the connections of clients from that root without cutting their streams;
// a stream the server refused unprocessed is sent again.
import { before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import http2, { constants as h2c, type ClientHttp2Stream, type ServerHttp2Session } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr, normalizeSerial } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { tlsOptions, type TlsMaterial } from '../../../shared/hbone/tls.js';
import { HboneServer, type InboundConnect } from '../../../shared/hbone/server.js';
import { bridge } from '../../../shared/hbone/bridge.js';
import { ConnectionPool } from '../../../shared/hbone/pool.js';
import type { SocketAddress } from '../../../shared/model/types.js';

const SERVER_ID = new Identity('cluster.local', 'shop', 'echo');
const CLIENT_ID = new Identity('cluster.local', 'shop', 'client');
let oldCa: CertificateAuthority;
let newCa: CertificateAuthority;

async function issue(ca: CertificateAuthority, id: Identity, roots: string[]): Promise<TlsMaterial & { serial: string }> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const c = await ca.signCsr(csrPem, id);
  return { keyPem, certChainPem: [c.certPem, ...c.chainPem].join('\n'), rootsPem: roots, serial: c.serial };
}

before(async () => {
  oldCa = await CertificateAuthority.generate({ commonName: 'old root' });
  newCa = await CertificateAuthority.generate({ commonName: 'new root' });
});

function cleanup(t: TestContext): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await fn();
  });
  return (fn) => fns.push(fn);
}

/** An echo app on 127.0.0.1. */
async function echoApp(onClose: (fn: () => unknown) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  onClose(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return (server.address() as AddressInfo).port;
}

interface Inbound {
  hbone: HboneServer;
  port: number;
  /** serial of the client certificate of each session, in arrival order */
  clientSerials: string[];
  sessions: Set<ServerHttp2Session>;
  rejected: { flag: string; reason: string }[];
}

async function inbound(onClose: (fn: () => unknown) => void, material: TlsMaterial): Promise<Inbound> {
  const s: Omit<Inbound, 'hbone'> = { port: 0, clientSerials: [], sessions: new Set(), rejected: [] };
  const hbone = new HboneServer(material, 'cluster.local', {
    connect: (req: InboundConnect) => {
      const app = net.connect({ host: '127.0.0.1', port: req.target.port, allowHalfOpen: true });
      app.once('connect', () => {
        req.stream.respond({ ':status': 200 }, { endStream: false });
        void bridge(app, req.stream);
      });
      app.on('error', () => undefined);
    },
    rejected: (flag, reason) => s.rejected.push({ flag, reason }),
  }, { pingIntervalMs: 100, pingTimeoutMs: 300 });
  hbone.server.on('session', (session: ServerHttp2Session) => {
    s.sessions.add(session);
    session.on('close', () => s.sessions.delete(session));
    const cert = (session.socket as unknown as TLSSocket).getPeerCertificate();
    if (cert?.serialNumber) s.clientSerials.push(normalizeSerial(cert.serialNumber));
  });
  await new Promise<void>((r) => hbone.server.listen(0, '127.0.0.1', r));
  onClose(async () => {
    for (const x of s.sessions) x.destroy();
    await hbone.close();
  });
  return { ...s, hbone, port: (hbone.server.address() as AddressInfo).port };
}

function dial(target: SocketAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
    sock.once('connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

function open(pool: ConnectionPool, port: number, appPort: number, material: () => TlsMaterial): Promise<ClientHttp2Stream> {
  return pool.open({ source: CLIENT_ID.toString(), expected: [SERVER_ID.toString()], target: { ip: '127.0.0.1', port }, authority: `127.0.0.1:${appPort}`, dial, material: async () => material() });
}

/** Writes a line and resolves with what comes back; rejects when the stream ends first or nothing comes within 3 s. */
function roundTrip(stream: ClientHttp2Stream, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    if (stream.closed || stream.destroyed) return reject(new Error(`stream already closed (code ${stream.rstCode})`));
    let got = '';
    const done = (): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('close', onClose);
    };
    const onData = (c: Buffer): void => {
      got += c.toString();
      if (got.length >= line.length) {
        done();
        resolve(got);
      }
    };
    const onClose = (): void => {
      done();
      reject(new Error(`stream closed (code ${stream.rstCode}) before its echo`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error('no echo within 3 s'));
    }, 3000);
    stream.on('data', onData);
    stream.once('close', onClose);
    stream.write(line);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('HBONE across certificate renewal and root rotation', () => {
  test('after retire, new streams go on a new connection with the new certificate; the open stream carries on', async (t) => {
    const onClose = cleanup(t);
    const app = await echoApp(onClose);
    const srv = await inbound(onClose, await issue(oldCa, SERVER_ID, [oldCa.certPem]));
    const pool = new ConnectionPool();
    onClose(() => pool.close());
    const v1 = await issue(oldCa, CLIENT_ID, [oldCa.certPem]);
    const v2 = await issue(oldCa, CLIENT_ID, [oldCa.certPem]);
    let current: TlsMaterial = v1;
    const long = await open(pool, srv.port, app, () => current);
    assert.equal(await roundTrip(long, 'one;'), 'one;');
    const again = await open(pool, srv.port, app, () => current);
    assert.deepEqual(srv.clientSerials, [v1.serial], 'a second stream shares the pooled connection');
    again.close();

    current = v2;
    assert.equal(pool.retire(CLIENT_ID.toString()), 1, 'one connection retired');
    assert.equal(pool.retire('spiffe://cluster.local/ns/shop/sa/other'), 0);
    const fresh = await open(pool, srv.port, app, () => current);
    assert.deepEqual(srv.clientSerials, [v1.serial, v2.serial], 'the new stream came on a connection made with the renewed certificate');
    assert.equal(await roundTrip(fresh, 'two;'), 'two;');
    await sleep(800); // beyond the server's PING deadline: the retired connection is alive, not dropped
    assert.equal(await roundTrip(long, 'three;'), 'three;', 'the stream on the retired connection still works');
    assert.equal(srv.sessions.size, 2);
    long.close();
    await waitUntil(() => srv.sessions.size === 1, 'the retired connection to close once its last stream ended');
    fresh.close();
  });

  test('a root dropped from the server\'s bundle: clients of it are drained, their open streams carry on, new connections are refused', async (t) => {
    const onClose = cleanup(t);
    const app = await echoApp(onClose);
    const both = [oldCa.certPem, newCa.certPem];
    const server = await issue(newCa, SERVER_ID, both);
    const srv = await inbound(onClose, server);
    const oldClient = await issue(oldCa, CLIENT_ID, both);
    const pool = new ConnectionPool();
    onClose(() => pool.close());
    const long = await open(pool, srv.port, app, () => oldClient);
    assert.equal(await roundTrip(long, 'a;'), 'a;');

    srv.hbone.setMaterial({ ...server, rootsPem: [newCa.certPem] });
    assert.ok(srv.rejected.some((r) => r.flag === 'TLS_FAILURE' && /no longer trusted; connection drained/.test(r.reason)), JSON.stringify(srv.rejected));
    await sleep(1000); // several PING deadlines of this server
    assert.equal(await roundTrip(long, 'b;'), 'b;', 'the drained connection\'s stream still works');

    // the pool does not reuse the drained connection: a new one with the old leaf is refused at TLS
    await assert.rejects(open(pool, srv.port, app, () => oldClient), /TLS|closed|refused|socket hang up/i);
    assert.deepEqual(srv.clientSerials, [oldClient.serial], 'no session was accepted with the old leaf after the drop');
    const newClient = await issue(newCa, CLIENT_ID, [newCa.certPem]);
    const ok = await open(pool, srv.port, app, () => newClient);
    assert.equal(await roundTrip(ok, 'c;'), 'c;');
    long.close();
    ok.close();
  });

  test('a stream the server refuses unprocessed (REFUSED_STREAM) is sent once more', async (t) => {
    const onClose = cleanup(t);
    const server = await issue(oldCa, SERVER_ID, [oldCa.certPem]);
    const client = await issue(oldCa, CLIENT_ID, [oldCa.certPem]);
    let streams = 0;
    const h2 = http2.createSecureServer({ ...tlsOptions(server), requestCert: true, rejectUnauthorized: true });
    h2.on('stream', (stream) => {
      stream.on('error', () => undefined);
      if (++streams === 1) stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      else stream.respond({ ':status': 200 });
    });
    await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
    const sessions = new Set<ServerHttp2Session>();
    h2.on('session', (s: ServerHttp2Session) => sessions.add(s));
    onClose(() => new Promise<void>((r) => {
      for (const s of sessions) s.destroy();
      h2.close(() => r());
    }));
    const pool = new ConnectionPool();
    onClose(() => pool.close());
    const s = await open(pool, (h2.address() as AddressInfo).port, 9, () => client);
    assert.equal(streams, 2, 'refused once, answered the second time');
    s.close();
  });
});

async function waitUntil(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
