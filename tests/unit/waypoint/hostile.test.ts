// Hostile clients against the waypoint engine's HTTP/2 (h2c) side, with raw frames: rapid reset,
// a flood of streams beyond the concurrency limit (then gone with its requests half-sent), a window
// that never opens; and an HTTP/1.1 client that stops reading. Each one is cut off (GOAWAY, a
// reset or a closed connection) or contained, and an honest client on another connection is
// served meanwhile.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { constants as h2c } from 'node:http2';
import { FLAG, FRAME, frame, headerBlock, PREFACE, settingsFrame } from '../../hostile/h2raw.js';
import { bench, get, httpBackend, service, type Backend, type Bench, type Pod } from './harness.js';

/** A raw h2c connection: writes frames as told, reads frames, notes GOAWAY and the close. */
class RawH2c {
  goaway: number | null = null;
  /** RST_STREAM error codes received */
  resets: number[] = [];
  /** the stream ids of HEADERS received (answers), and of RST_STREAM received with their codes */
  answered: number[] = [];
  resetStreams: [number, number][] = [];
  closed = false;
  frames = 0;
  private buf = Buffer.alloc(0);
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      while (this.buf.length >= 9 && this.buf.length >= 9 + this.buf.readUIntBE(0, 3)) {
        const len = this.buf.readUIntBE(0, 3);
        const type = this.buf[3]!;
        if (type === FRAME.GOAWAY && len >= 8) this.goaway = this.buf.readUInt32BE(9 + 4);
        const id = this.buf.readUInt32BE(5) & 0x7fffffff;
        if (type === FRAME.RST_STREAM && len === 4) {
          this.resets.push(this.buf.readUInt32BE(9));
          this.resetStreams.push([id, this.buf.readUInt32BE(9)]);
        }
        if (type === FRAME.HEADERS) this.answered.push(id);
        this.frames++;
        this.buf = this.buf.subarray(9 + len);
      }
    });
    sock.on('close', () => (this.closed = true));
    sock.on('error', () => undefined);
  }

  static connect(port: number, settings: Parameters<typeof settingsFrame>[0] = {}): Promise<RawH2c> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write(Buffer.concat([PREFACE, settingsFrame(settings)]));
        resolve(new RawH2c(s));
      });
      s.once('error', reject);
    });
  }

  write(b: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(b);
  }

  async closedWithin(ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** Ends the write side (a FIN); frames are still read. */
  end(): void {
    this.sock.end();
  }
}

const request = (id: number, path: string, endStream = true): Buffer =>
  frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), id, headerBlock([[':method', endStream ? 'GET' : 'POST'], [':scheme', 'http'], [':path', path], [':authority', 'reviews']]));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const BIG = Buffer.alloc(32 * 1024 * 1024, 0x62);

/** The access-log record of the request to `path`, once written. */
async function accessOf(b: Bench, path: string): Promise<Record<string, unknown> | undefined> {
  for (let i = 0; i < 100; i++) {
    const r = b.logs.find((l) => l.type === 'access' && l.path === path);
    if (r) return r;
    await sleep(50);
  }
  return undefined;
}

describe('hostile HTTP/2 clients against the waypoint', () => {
  let v1: Backend;
  let b: Bench;
  const pods: Pod[] = [];
  before(async () => {
    // /big: a response far larger than any window and socket buffer on the way
    // /slow: answered after 200 ms
    v1 = await httpBackend('v1', (req, res) => {
      if (req.url?.startsWith('/slow')) setTimeout(() => res.end(`v1 ${req.url}`), 200);
      else res.end(req.url?.startsWith('/big') ? BIG : `v1 ${req.url}`);
    });
    pods.push({ name: 'reviews-v1', ip: '10.1.0.11', backend: v1 });
    b = await bench(pods, [service('reviews', '10.96.0.10', pods)], '', { h2MaxStreams: 20, h2IdleMs: 300, sendTimeoutMs: 500 });
  });
  after(async () => {
    await b.close();
    await v1.close();
  });

  test('rapid reset (HEADERS then RST_STREAM, 5,000 times): a GOAWAY, next to nothing reaches the backend, another client is served', async () => {
    const seen0 = v1.seen.length;
    const c = await RawH2c.connect(b.port);
    for (let i = 0, id = 1; i < 5000 && !c.closed; i++, id += 2) {
      c.write(Buffer.concat([request(id, `/rr/${i}`), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, h2c.NGHTTP2_CANCEL]))]));
      if (i % 100 === 0) await new Promise((r) => setImmediate(r));
    }
    const honest = await get(b.port, '/honest', { host: 'reviews' });
    await sleep(200);
    const reached = v1.seen.slice(seen0).filter((r) => r.path.startsWith('/rr/')).length;
    // the flood stopped: the connection, quiet now, is closed after the idle time
    const closed = await c.closedWithin(2000);
    c.destroy();
    assert.equal(closed, true, 'the flooding connection was closed');
    assert.notEqual(c.goaway, null, 'the flood got a GOAWAY');
    assert.ok(reached < 50, `${reached} reset requests reached the backend`);
    assert.equal(honest.status, 200);
  });

  test('a client that ends its side: a request it sent whole is still answered, one still waiting for its body is cancelled, then the session closes', async () => {
    const c = await RawH2c.connect(b.port);
    await sleep(50);
    c.write(Buffer.concat([request(1, '/slow/whole'), request(3, '/slow/unfinished', false)]));
    await sleep(50);
    c.end();
    assert.equal(await c.closedWithin(3000), true, 'the session was closed');
    assert.ok(c.answered.includes(1), `the whole request was answered (answers: ${c.answered.join(',')}; resets: ${JSON.stringify(c.resetStreams)})`);
    assert.ok(!c.resetStreams.some(([id]) => id === 1), 'the whole request was not reset');
    assert.deepEqual(c.resetStreams.filter(([id]) => id === 3), [[3, h2c.NGHTTP2_CANCEL]], 'the unfinished request was cancelled');
    const unfinished = await accessOf(b, '/slow/unfinished');
    assert.ok(String(unfinished?.flags).includes('DC'), `the cancelled request is logged, client gone (DC): ${JSON.stringify(unfinished)}`);
  });

  test('more streams than the limit: the ones beyond it are refused, not sent upstream', async () => {
    const dials0 = b.dials.get('10.1.0.11:8080') ?? 0;
    const c = await RawH2c.connect(b.port, { INITIAL_WINDOW_SIZE: 65535 });
    await sleep(50);
    // requests with a body that never comes: each holds its stream and its upstream request open
    for (let i = 0, id = 1; i < 50; i++, id += 2) c.write(request(id, `/flood/${i}`, false));
    await sleep(500);
    const dialled = (b.dials.get('10.1.0.11:8080') ?? 0) - dials0;
    const refused = c.resets.filter((code) => code === h2c.NGHTTP2_REFUSED_STREAM).length;
    const honest = await get(b.port, '/honest-2', { host: 'reviews' });
    c.destroy();
    assert.ok(dialled <= 20, `${dialled} upstream connections for 50 streams with a limit of 20`);
    assert.ok(refused >= 30, `${refused} streams refused`);
    assert.equal(honest.status, 200);
    // the client is gone: its requests, still waiting for their bodies, are cancelled with their upstream requests
    let busy = -1;
    for (let i = 0; i < 40 && busy !== 0; i++) {
      await sleep(50);
      const up = b.engine.upstreamConnections()['10.1.0.11:8080'];
      busy = up ? up.open - up.idle : 0;
    }
    assert.equal(busy, 0, 'no upstream request left behind the gone client');
    const flooded = b.logs.filter((l) => l.type === 'access' && String(l.path).startsWith('/flood/'));
    assert.ok(flooded.length >= 20 && flooded.every((l) => String(l.flags).includes('DC')), `the cut requests are logged, client gone (DC): ${flooded.length}`);
  });

  test('a window that never opens: the response is cut after the send timeout (SI), the upstream connection is let go, another client is served', async () => {
    const c = await RawH2c.connect(b.port, { INITIAL_WINDOW_SIZE: 0 });
    c.write(request(1, '/big/h2'));
    const honest = await get(b.port, '/honest-3', { host: 'reviews' });
    assert.equal(honest.status, 200);
    const rec = await accessOf(b, '/big/h2');
    for (let i = 0; i < 40 && !c.resets.includes(h2c.NGHTTP2_INTERNAL_ERROR); i++) await sleep(50);
    c.destroy();
    assert.ok(rec, 'the request was logged');
    assert.equal(rec.flags, 'SI');
    assert.match(String(rec.detail), /took none of the response for 500 ms/);
    assert.ok(c.resets.includes(h2c.NGHTTP2_INTERNAL_ERROR), `the stream was reset: ${JSON.stringify(c.resets)}`);
    // the upstream connection that carried the unread response is closed, not pooled
    let up = b.engine.upstreamConnections()['10.1.0.11:8080'];
    for (let i = 0; i < 40 && up && up.open !== up.idle; i++) {
      await sleep(50);
      up = b.engine.upstreamConnections()['10.1.0.11:8080'];
    }
    assert.ok(!up || up.open === up.idle, `no upstream connection still busy: ${JSON.stringify(up)}`);
  });

  test('an HTTP/1.1 client that stops reading: the response is cut after the send timeout (SI)', async () => {
    const sock = net.connect(b.port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.pause();
    sock.write('GET /big/h1 HTTP/1.1\r\nhost: reviews\r\n\r\n');
    const rec = await accessOf(b, '/big/h1');
    const closed = new Promise((r) => sock.once('close', r));
    sock.resume();
    sock.on('data', () => undefined);
    await closed;
    assert.ok(rec, 'the request was logged');
    assert.equal(rec.flags, 'SI');
    assert.ok(Number(rec['bytes.sent']) < BIG.length, `${String(rec['bytes.sent'])} bytes sent`);
  });

  test('an HTTP/2 connection with no stream is closed after the idle time; one with a quiet stream is not', async () => {
    const idle = await RawH2c.connect(b.port);
    const quiet = await RawH2c.connect(b.port);
    quiet.write(request(1, '/quiet', false));
    await sleep(1000);
    assert.equal(idle.closed, true, 'the idle connection was closed');
    assert.equal(quiet.closed, false, 'the connection with a stream open stays');
    // the stream ends: answered, then the connection goes idle and is closed too
    quiet.write(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('done')));
    await sleep(100);
    assert.ok(quiet.frames >= 4, 'the response came (headers and body after the settings)');
    assert.equal(await quiet.closedWithin(1500), true);
    idle.destroy();
    quiet.destroy();
  });
});

describe('endpoints that stop reading the request body', () => {
  // the deaf server accepts connections and never reads from them
  const deafSockets = new Set<net.Socket>();
  const deafServer = net.createServer((s) => {
    s.pause();
    deafSockets.add(s);
    s.on('error', () => undefined);
  });
  const deaf: Backend = { name: 'deaf', port: 0, seen: [], close: async () => undefined };
  let b: Bench;
  before(async () => {
    await new Promise<void>((r) => deafServer.listen(0, '127.0.0.1', r));
    deaf.port = (deafServer.address() as net.AddressInfo).port;
    const h1: Pod = { name: 'deaf-1', ip: '10.1.0.21', backend: deaf };
    const h2: Pod = { name: 'deaf-2', ip: '10.1.0.22', backend: deaf };
    b = await bench([h1, h2], [service('deaf', '10.96.0.21', [h1]), service('deaf-h2', '10.96.0.22', [h2], [{ port: 80, targetPort: 8080, name: 'http2' }])], '', { sendTimeoutMs: 500 });
  });
  after(async () => {
    await b.close();
    for (const s of deafSockets) s.destroy();
    await new Promise((r) => deafServer.close(r));
  });

  /** POSTs BIG; resolves with the status, or 0 when the connection ended without one. */
  const post = (host: string, path: string): Promise<number> =>
    new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: b.port, path, method: 'POST', agent: false, headers: { host, 'content-length': String(BIG.length) } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', () => resolve(0));
      req.end(BIG);
    });

  for (const [host, protocol] of [['deaf', 'HTTP/1.1'], ['deaf-h2', 'HTTP/2']] as const) {
    // without the send timeout the request would wait for ever: the test's own limit turns that into a failure
    test(`${protocol}: after the send timeout the request is answered 504 (UT, and why), and the upstream connection is let go`, { timeout: 15_000 }, async () => {
      const path = `/upload/${host}`;
      const status = await post(host, path);
      const rec = await accessOf(b, path);
      assert.ok(rec, 'the request was logged');
      assert.equal(rec.status, 504, JSON.stringify(rec));
      assert.equal(rec.flags, 'UT');
      assert.match(String(rec.detail), /the upstream took none of the request body for 500 ms/);
      // the client got the 504, or (its body still arriving) the connection closed with it
      assert.ok(status === 504 || status === 0, `client saw ${status}`);
      if (protocol === 'HTTP/1.1') {
        // (the deaf end never reads, so it never sees the close: the waypoint's count says it)
        const open = (): number => b.engine.upstreamConnections()['10.1.0.21:8080']?.open ?? 0;
        for (let i = 0; i < 40 && open() > 0; i++) await sleep(50);
        assert.equal(open(), 0, 'the waypoint closed its connection to the endpoint');
      }
    });
  }
});
