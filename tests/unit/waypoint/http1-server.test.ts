// The waypoint's HTTP/1.1 server side (waypoint/http1-server.ts) on real sockets: keep-alive,
// pipelining, chunked bodies, 100-continue, HTTP/1.0, trailers, early answers, upgrades,
// timeouts, a client that goes away, and bad input answered with its status.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { Http1Server, type Http1Request, type Http1ServerDownstream } from '../../../waypoint/http1-server.js';
import type { UpstreamResponse } from '../../../waypoint/upstream.js';

type Handler = (req: Http1Request, down: Http1ServerDownstream, body: string) => void;

interface Bench {
  port: number;
  server: Http1Server<string>;
  upgrades: { target: string; head: string; socket: net.Socket }[];
  clock: { t: number };
  close(): Promise<void>;
}

/** The default answer: 200 "METHOD target body" once the body arrived. */
const echo: Handler = (req, down, body) => down.reply(200, { 'x-ctx': 'ok' }, `${req.method} ${req.target} ${body}`);

async function bench(handler: Handler = echo, opts: { readBody?: boolean } = {}): Promise<Bench> {
  const clock = { t: 1_000_000 };
  const upgrades: Bench['upgrades'] = [];
  const server = new Http1Server<string>(
    {
      request: (req, down) => {
        if (req.body === null || opts.readBody === false) return handler(req, down, '');
        let b = '';
        req.body.on('data', (c: Buffer) => (b += c.toString()));
        req.body.on('end', () => handler(req, down, b));
        req.body.on('error', () => undefined);
      },
      upgrade: (req, socket, head) => {
        upgrades.push({ target: req.target, head: head.toString(), socket: socket as net.Socket });
        socket.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
        socket.pipe(socket);
        socket.resume();
        if (head.length > 0) socket.write(head);
      },
    },
    () => clock.t,
  );
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    server.serve(s, 'ctx');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    server,
    upgrades,
    clock,
    close: () =>
      new Promise((r) => {
        server.closeAll();
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  };
}

/** Sends `bytes` (pieces sent apart) on a raw connection; resolves with all it received once the server closed or `until` matched. */
function raw(port: number, pieces: (string | Buffer)[], until?: RegExp, ms = 2000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let text = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(() => finish(false), ms);
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (until && until.test(text)) finish(false);
    });
    s.on('end', () => finish(true));
    s.on('error', reject);
    s.once('connect', async () => {
      for (const p of pieces) {
        s.write(p);
        await new Promise((r) => setTimeout(r, 10));
      }
    });
  });
}

function upstream(status: number, headers: Record<string, string>, chunks: string[], trailers: Record<string, string> = {}): UpstreamResponse {
  return { protocol: 'http1', status, headers, grpcStatus: null, endStream: false, body: Readable.from(chunks.map((c) => Buffer.from(c))), trailers: () => trailers };
}

describe('HTTP/1.1 server side', () => {
  test('keep-alive: two requests on one connection; Date added; the handler sees method, target and body', async () => {
    const b = await bench();
    try {
      const r = await raw(b.port, ['GET /a HTTP/1.1\r\nHost: x\r\n\r\n', 'POST /b?q=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc'], /POST \/b\?q=1 abc$/);
      const responses = r.text.split(/(?=HTTP\/1\.1 )/);
      assert.equal(responses.length, 2);
      assert.match(responses[0]!, /^HTTP\/1\.1 200 OK\r\n.*x-ctx: ok\r\n/s);
      assert.match(responses[0]!, /\r\ndate: \w{3}, \d\d \w{3} \d{4} /);
      assert.match(responses[0]!, /\r\ncontent-length: 7\r\n\r\nGET \/a $/);
      assert.equal(r.closed, false);
    } finally {
      await b.close();
    }
  });

  test('pipelined requests in one packet are answered in order, one at a time', async () => {
    let inFlight = 0;
    let most = 0;
    const b = await bench((req, down) => {
      most = Math.max(most, ++inFlight);
      setTimeout(() => {
        inFlight--;
        down.reply(200, {}, req.target);
      }, req.target === '/1' ? 30 : 1);
    });
    try {
      const r = await raw(b.port, ['GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\nGET /3 HTTP/1.1\r\nhost: x\r\n\r\n'], /\/3$/);
      assert.deepEqual([...r.text.matchAll(/\r\n\r\n(\/\d)/g)].map((m) => m[1]), ['/1', '/2', '/3']);
      assert.equal(most, 1);
    } finally {
      await b.close();
    }
  });

  test('a chunked request body arrives whole; 100-continue is answered before it', async () => {
    const b = await bench();
    try {
      const r = await raw(b.port, ['PUT /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n', '3\r\nabc\r\n', '2;x=y\r\nde\r\n0\r\n\r\n'], /PUT \/up abcde$/);
      assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    } finally {
      await b.close();
    }
  });

  test('HTTP/1.0: closed after the response unless keep-alive was asked; a body without length is delimited by the close', async () => {
    const b = await bench((req, down) => {
      if (req.target === '/relay') void down.relay(upstream(200, {}, ['one', 'two']), {}, false);
      else down.reply(200, {}, 'hi');
    });
    try {
      const plain = await raw(b.port, ['GET / HTTP/1.0\r\n\r\n']);
      assert.equal(plain.closed, true);
      assert.match(plain.text, /\r\nconnection: close\r\n\r\nhi$/);
      const kept = await raw(b.port, ['GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n'], /hi$/);
      assert.match(kept.text, /\r\nconnection: keep-alive\r\n/);
      assert.equal(kept.closed, false);
      const relayed = await raw(b.port, ['GET /relay HTTP/1.0\r\nconnection: keep-alive\r\n\r\n']);
      assert.equal(relayed.closed, true);
      assert.match(relayed.text, /\r\nconnection: close\r\n\r\nonetwo$/);
      assert.doesNotMatch(relayed.text, /transfer-encoding|content-length/);
    } finally {
      await b.close();
    }
  });

  test('a relayed response without length is chunked, with its trailers (read by node http)', async () => {
    const b = await bench((_req, down) => void down.relay(upstream(200, { trailer: 'x-sum', 'content-type': 'text/plain' }, ['hello ', 'world']), { 'content-type': 'text/plain' }, false), {});
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ port: b.port, host: '127.0.0.1', path: '/' }, resolve).on('error', reject));
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      await new Promise((r) => res.on('end', r));
      assert.equal(body, 'hello world');
      assert.equal(res.headers['transfer-encoding'], 'chunked');
      assert.deepEqual(res.trailers, {});
    } finally {
      await b.close();
    }
    const t = await bench((_req, down) => void down.relay({ ...upstream(200, { trailer: 'x-sum' }, ['a', 'b']), trailers: () => ({ 'x-sum': '2' }) }, { trailer: 'x-sum' }, false));
    try {
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ port: t.port, host: '127.0.0.1', path: '/' }, resolve).on('error', reject));
      res.resume();
      await new Promise((r) => res.on('end', r));
      assert.deepEqual(res.trailers, { 'x-sum': '2' });
    } finally {
      await t.close();
    }
  });

  test('an answer before the request body was read: the rest of the body is dropped and the connection goes on', async () => {
    const b = await bench((req, down) => down.reply(403, {}, `no ${req.target}`), { readBody: false });
    try {
      const r = await raw(b.port, ['POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 20000\r\n\r\n', Buffer.alloc(10000, 97), Buffer.alloc(10000, 98), 'GET /next HTTP/1.1\r\nhost: x\r\n\r\n'], /no \/next$/);
      assert.match(r.text, /^HTTP\/1\.1 403 Forbidden\r\n.*no \/big.*HTTP\/1\.1 403 Forbidden\r\n.*no \/next$/s);
    } finally {
      await b.close();
    }
  });

  test('HEAD: the content-length of the GET, no body, and the connection is reusable', async () => {
    const b = await bench();
    try {
      const r = await raw(b.port, ['HEAD /h HTTP/1.1\r\nhost: x\r\n\r\nGET /g HTTP/1.1\r\nhost: x\r\n\r\n'], /GET \/g $/);
      assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n.*content-length: 8\r\n\r\nHTTP\/1\.1 200 OK\r\n/s);
    } finally {
      await b.close();
    }
  });

  test('an Upgrade request hands the connection over with the bytes after the head', async () => {
    const b = await bench();
    try {
      const r = await raw(b.port, ['GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\nearly', 'later'], /earlylater$/);
      assert.match(r.text, /^HTTP\/1\.1 101 Switching Protocols\r\n\r\nearlylater$/);
      assert.deepEqual(b.upgrades.map((u) => [u.target, u.head]), [['/ws', 'early']]);
      assert.equal(b.server.size, 0, 'an upgraded connection is no longer the server\'s');
    } finally {
      await b.close();
    }
  });

  test('bad input gets its status and a closed connection', async () => {
    const b = await bench();
    try {
      const cases: [string, RegExp][] = [
        ['GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 Bad Request\r\n.*invalid request line/s],
        ['GET / HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 .*missing host header/s],
        ['POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400 .*both transfer-encoding and content-length/s],
        ['POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabc', /^HTTP\/1\.1 400 .*invalid content-length/s],
        ['GET / HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n', /^HTTP\/1\.1 400 .*invalid header name/s],
        ['POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n', /^HTTP\/1\.1 501 Not Implemented\r\n/],
        ['GET / HTTP/3.0\r\nhost: x\r\n\r\n', /^HTTP\/1\.1 505 HTTP Version Not Supported\r\n/],
        ['POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n', /^HTTP\/1\.1 400 .*invalid chunk size/s],
        [`GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/],
        [`GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(70 * 1024)}`, /^HTTP\/1\.1 431 /],
        [`GET / HTTP/1.1\r\nhost: x\r\n${'x: 1\r\n'.repeat(600)}\r\n`, /^HTTP\/1\.1 431 .*more than 500 header lines/s],
      ];
      for (const [input, want] of cases) {
        const r = await raw(b.port, [input]);
        assert.match(r.text, want, JSON.stringify(input.slice(0, 60)));
        assert.match(r.text, /\r\nconnection: close\r\n/);
        assert.equal(r.closed, true, JSON.stringify(input.slice(0, 60)));
      }
      // the smuggling attempt never reached the handler as two requests
      const r = await raw(b.port, ['POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n']);
      assert.doesNotMatch(r.text, /smuggled/);
    } finally {
      await b.close();
    }
  });

  test('timeouts: a head that does not finish gets 408; an idle keep-alive connection is closed', async () => {
    const b = await bench();
    try {
      const slow = raw(b.port, ['GET / HTTP/1.1\r\nhost: x\r\n'], undefined, 3000);
      const idle = raw(b.port, ['GET /i HTTP/1.1\r\nhost: x\r\n\r\n'], undefined, 3000);
      await new Promise((r) => setTimeout(r, 100));
      b.clock.t += 59_000;
      b.server.sweep();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(b.server.size, 2, 'nothing expires early');
      b.clock.t += 2_000;
      b.server.sweep();
      const [s, i] = await Promise.all([slow, idle]);
      assert.match(s.text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.equal(s.closed, true);
      assert.match(i.text, /^HTTP\/1\.1 200 OK\r\n.*GET \/i $/s);
      assert.equal(i.closed, true);
      assert.equal(b.server.size, 0);
    } finally {
      await b.close();
    }
  });

  test('drain: an idle connection closes now, a busy one after its response (connection: close), a new one after its first', async () => {
    let release: () => void = () => undefined;
    const b = await bench((req, down) => {
      if (req.target === '/slow') release = () => down.reply(200, {}, 'slow done');
      else down.reply(200, {}, req.target);
    });
    try {
      const idle = raw(b.port, ['GET /idle HTTP/1.1\r\nhost: x\r\n\r\n'], undefined, 3000);
      const busy = raw(b.port, ['GET /slow HTTP/1.1\r\nhost: x\r\n\r\n'], undefined, 3000);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(b.server.size, 2);
      b.server.drain();
      const i = await idle;
      assert.match(i.text, /^HTTP\/1\.1 200 OK\r\n(?![^]*connection: close)[^]*\/idle$/, 'answered before the drain, with keep-alive');
      assert.equal(i.closed, true, 'the idle connection is closed at once');
      const late = await raw(b.port, ['GET /late HTTP/1.1\r\nhost: x\r\n\r\n', 'GET /never HTTP/1.1\r\nhost: x\r\n\r\n'], undefined, 3000);
      assert.match(late.text, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n[^]*\/late$/, 'a connection made while draining gets one answer');
      assert.equal(late.closed, true);
      release();
      const s = await busy;
      assert.match(s.text, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n[^]*slow done$/, 'the request under way finishes');
      assert.equal(s.closed, true);
      assert.equal(b.server.size, 0);
    } finally {
      await b.close();
    }
  });

  test('a client that goes away mid-request is seen by onAbort, and its body fails', async () => {
    let aborted!: () => void;
    const seen = new Promise<void>((r) => (aborted = r));
    let bodyError: Error | null = null;
    const b = await bench(
      (req, down) => {
        req.body?.on('error', (e) => (bodyError = e));
        req.body?.resume();
        down.onAbort(aborted);
      },
      { readBody: false },
    );
    try {
      await raw(b.port, ['POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part'], undefined, 100);
      await seen;
      await new Promise((r) => setImmediate(r));
      assert.match(String((bodyError as Error | null)?.message), /client closed the request before its end/);
      assert.equal(b.server.size, 0);
    } finally {
      await b.close();
    }
  });
});
