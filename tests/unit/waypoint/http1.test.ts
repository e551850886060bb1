// The waypoint's HTTP/1.1 client: request heads, the response parser fed in every possible split,
// and the per-endpoint connections against a real node HTTP server (reuse, idle cap, early
// answers, a server that closes, cancellation of a finished request).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import type { Body } from '../../../waypoint/body-stream.js';
import { Http1ProtocolError, MAX_HEAD_BYTES, MAX_HEADER_LINES, ResponseParser, requestHead, type ResponseHead } from '../../../waypoint/http1.js';
import { Http1Endpoint } from '../../../waypoint/http1-client.js';

describe('requestHead', () => {
  test('request line, host first, headers as given, no framing without a body', () => {
    const { head, framing } = requestHead('GET', '/a?b=1', 'svc:80', { accept: '*/*', 'x-two': ['1', '2'] }, false);
    assert.equal(head, 'GET /a?b=1 HTTP/1.1\r\nhost: svc:80\r\naccept: */*\r\nx-two: 1\r\nx-two: 2\r\n\r\n');
    assert.equal(framing, 'none');
  });

  test('a body with content-length is sent as is; without, chunked', () => {
    assert.equal(requestHead('POST', '/', 'h', { 'content-length': '5' }, true).framing, 'length');
    const chunked = requestHead('POST', '/', 'h', {}, true);
    assert.equal(chunked.framing, 'chunked');
    assert.match(chunked.head, /\r\ntransfer-encoding: chunked\r\n\r\n$/);
  });

  test('connection, host and transfer-encoding from the caller are not copied; content-length 0 is kept without a body', () => {
    const { head } = requestHead('POST', '/', 'h', { host: 'other', connection: 'close', 'transfer-encoding': 'chunked', 'content-length': '0' }, false);
    assert.equal(head, 'POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n');
  });

  test('CR/LF or NUL in a value, a bad name, method or path are refused', () => {
    assert.throws(() => requestHead('GET', '/', 'h', { 'x-a': 'ok\r\nx-injected: 1' }, false), Http1ProtocolError);
    assert.throws(() => requestHead('GET', '/', 'h', { 'x-a': ['fine', 'bad\n'] }, false), Http1ProtocolError);
    assert.throws(() => requestHead('GET', '/', 'h', { 'bad name': 'v' }, false), Http1ProtocolError);
    assert.throws(() => requestHead('GE T', '/', 'h', {}, false), Http1ProtocolError);
    assert.throws(() => requestHead('GET', '/a b', 'h', {}, false), Http1ProtocolError);
    assert.throws(() => requestHead('GET', '/', 'h\r\nx: y', {}, false), Http1ProtocolError);
    assert.throws(() => requestHead('GET', '/', 'h', { 'x-a': 'nul\0' }, false), Http1ProtocolError);
  });
});

interface Parsed {
  heads: ResponseHead[];
  body: string;
  ends: Record<string, string | string[]>[];
}

/** Feeds `wire` to a parser in pieces of `step` bytes (0: all at once). */
function parse(wire: string, method = 'GET', step = 0, finish = false): Parsed {
  const out: Parsed = { heads: [], body: '', ends: [] };
  const p = new ResponseParser({
    head: (h) => out.heads.push(h),
    data: (c) => (out.body += c.toString('latin1')),
    end: (t) => out.ends.push(t),
  });
  p.expect(method);
  const buf = Buffer.from(wire, 'latin1');
  if (step === 0) p.feed(buf);
  else for (let i = 0; i < buf.length; i += step) p.feed(buf.subarray(i, i + step));
  if (finish) p.finish();
  return out;
}

const SPLITS = [0, 1, 2, 3, 7];

describe('ResponseParser', () => {
  test('content-length body, in any split', () => {
    for (const step of SPLITS) {
      const r = parse('HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: text/plain\r\n\r\nhello world', 'GET', step);
      assert.equal(r.heads.length, 1);
      assert.equal(r.heads[0]!.status, 200);
      assert.equal(r.heads[0]!.headers['content-type'], 'text/plain');
      assert.equal(r.heads[0]!.close, false);
      assert.equal(r.body, 'hello world', `step ${step}`);
      assert.equal(r.ends.length, 1);
    }
  });

  test('chunked body with extensions and trailers, in any split', () => {
    const wire = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: grpc-status\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\nx-t: a\r\nx-t: b\r\n\r\n';
    for (const step of SPLITS) {
      const r = parse(wire, 'GET', step);
      assert.equal(r.body, 'hello world', `step ${step}`);
      assert.deepEqual(r.ends, [{ 'grpc-status': '0', 'x-t': 'a, b' }]);
    }
  });

  test('no body: HEAD (whatever content-length says), 204, 304, content-length 0', () => {
    assert.deepEqual(parse('HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n', 'HEAD').ends, [{}]);
    assert.deepEqual(parse('HTTP/1.1 204 No Content\r\n\r\n').ends, [{}]);
    assert.deepEqual(parse('HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n').ends, [{}]);
    assert.deepEqual(parse('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n').ends, [{}]);
  });

  test('1xx responses are skipped; 101 is an error outside an upgrade', () => {
    const r = parse('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok', 'POST', 3);
    assert.deepEqual(r.heads.map((h) => h.status), [201]);
    assert.equal(r.body, 'ok');
    assert.throws(() => parse('HTTP/1.1 101 Switching Protocols\r\n\r\n'), /101/);
  });

  test('without length or chunking the body runs to the close, and the connection is not reused', () => {
    const r = parse('HTTP/1.1 200 OK\r\n\r\nsome bytes', 'GET', 4, true);
    assert.equal(r.body, 'some bytes');
    assert.equal(r.heads[0]!.close, true);
    assert.equal(r.ends.length, 1);
  });

  test('keep-alive: connection close, HTTP/1.0 defaults', () => {
    assert.equal(parse('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n').heads[0]!.close, true);
    assert.equal(parse('HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n').heads[0]!.close, true);
    assert.equal(parse('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n').heads[0]!.close, false);
  });

  test('repeated headers are joined; set-cookie stays a list; obs-fold joins with a space', () => {
    const h = parse('HTTP/1.1 200 OK\r\nx-a: 1\r\nX-A: 2\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-f: one\r\n  two\r\ncontent-length: 0\r\n\r\n').heads[0]!.headers;
    assert.equal(h['x-a'], '1, 2');
    assert.deepEqual(h['set-cookie'], ['a=1', 'b=2']);
    assert.equal(h['x-f'], 'one two');
  });

  test('framing that could smuggle a second response is refused', () => {
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n'), /both transfer-encoding and content-length/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n'), /content-length/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n'), /content-length/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ncontent-length : 3\r\n\r\nabc'), /header name/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n'), /chunk size/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY'), /CRLF/);
    assert.equal(parse('HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc').body, 'abc');
  });

  test('a bad status line, an unknown version, bytes after the response', () => {
    assert.throws(() => parse('HTTP/2.0 200 OK\r\n\r\n'), Http1ProtocolError);
    assert.throws(() => parse('HTTP/1.1 20 OK\r\n\r\n'), /status line/);
    assert.throws(() => parse('HTTP/1.1 200OK\r\n\r\n'), /status line/);
    assert.throws(() => parse('ICY 200 OK\r\n\r\n'), /status line/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab'), /after the response/);
    // the status line may end right after the code (no reason phrase)
    assert.equal(parse('HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n').heads[0]!.status, 200);
  });

  test('more header lines than the limit is an error (431); at the limit it parses', () => {
    const lines = (n: number): string => Array.from({ length: n }, (_, i) => `x-${i}: v\r\n`).join('');
    assert.equal(Object.keys(parse(`HTTP/1.1 200 OK\r\n${lines(MAX_HEADER_LINES - 1)}content-length: 0\r\n\r\n`).heads[0]!.headers).length, MAX_HEADER_LINES);
    assert.throws(
      () => parse(`HTTP/1.1 200 OK\r\n${lines(MAX_HEADER_LINES)}content-length: 0\r\n\r\n`),
      (e: unknown) => e instanceof Http1ProtocolError && e.status === 431,
    );
  });

  test('a head over the limit is an error, whether it ends or not', () => {
    const big = `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n`;
    assert.throws(() => parse(`${big}\r\n`), /too large/);
    assert.throws(() => parse(big, 'GET', 4096), /too large/);
  });

  test('the server closing mid-response is an error; closing between responses is not', () => {
    assert.throws(() => parse('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc', 'GET', 0, true), /middle of the body/);
    assert.throws(() => parse('HTTP/1.1 200 OK\r\n', 'GET', 0, true), /before a response/);
    assert.doesNotThrow(() => parse('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n', 'GET', 0, true));
  });
});

interface Server {
  port: number;
  connections: () => number;
  close(): Promise<void>;
}

async function server(handler: http.RequestListener): Promise<Server> {
  const s = http.createServer(handler);
  let n = 0;
  s.on('connection', () => n++);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as net.AddressInfo).port,
    connections: () => n,
    close: () =>
      new Promise((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  };
}

function dialer(port: number): () => Promise<net.Socket> {
  return () =>
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
}

function text(r: Body): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    r.on('data', (c: Buffer) => (s += c.toString()));
    r.once('end', () => resolve(s));
    r.once('error', reject);
  });
}

const asIs = (e: unknown): Error => e as Error;

describe('Http1Endpoint', () => {
  test('sequential requests share one kept-alive connection; bodies, chunked and fixed, go both ways', async () => {
    const srv = await server((req, res) => {
      let b = '';
      req.on('data', (c: Buffer) => (b += c.toString()));
      req.on('end', () => res.end(`${req.method} ${req.url} ${req.headers['transfer-encoding'] ?? 'len'} ${b}`));
    });
    const ep = new Http1Endpoint(dialer(srv.port), 4);
    try {
      const a = await ep.request('GET', '/one', 'x', {}, null, asIs).response;
      assert.equal(a.head.status, 200);
      assert.equal(await text(a.body), 'GET /one len ');
      const b = await ep.request('POST', '/two', 'x', { 'content-length': '3' }, Readable.from([Buffer.from('abc')]), asIs).response;
      assert.equal(await text(b.body), 'POST /two len abc');
      const src = new PassThrough();
      const pending = ep.request('PUT', '/three', 'x', {}, src, asIs);
      src.write('de');
      setTimeout(() => src.end('f'), 20);
      assert.equal(await text((await pending.response).body), 'PUT /three chunked def');
      await new Promise((r) => setImmediate(r));
      assert.equal(srv.connections(), 1);
      assert.deepEqual([ep.size, ep.idleCount], [1, 1]);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('after a burst, at most maxIdle connections stay open', async () => {
    const srv = await server((_req, res) => setTimeout(() => res.end('ok'), 30));
    const ep = new Http1Endpoint(dialer(srv.port), 2);
    try {
      const all = await Promise.all(Array.from({ length: 6 }, () => ep.request('GET', '/', 'x', {}, null, asIs).response.then((r) => text(r.body))));
      assert.deepEqual(all, Array(6).fill('ok'));
      await new Promise((r) => setImmediate(r));
      assert.equal(srv.connections(), 6);
      assert.deepEqual([ep.size, ep.idleCount], [2, 2]);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('maxRequestsPerConnection retires a connection; an expired idle one is not reused', async () => {
    const srv = await server((_req, res) => res.end('ok'));
    let t = 0;
    const ep = new Http1Endpoint(dialer(srv.port), 4, () => t);
    try {
      ep.limits = { maxRequestsPerConnection: 2, idleTimeoutMs: 1000 };
      for (let i = 0; i < 4; i++) await text((await ep.request('GET', '/', 'x', {}, null, asIs).response).body);
      assert.equal(srv.connections(), 2);
      t += 1001;
      await text((await ep.request('GET', '/', 'x', {}, null, asIs).response).body);
      assert.equal(srv.connections(), 3);
      t += 1001;
      ep.sweep();
      assert.equal(ep.size, 0);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('an answer before the request body ended closes the connection (the rest of the body cannot be told from a next request)', async () => {
    const srv = await server((_req, res) => res.end('early'));
    const ep = new Http1Endpoint(dialer(srv.port), 4);
    try {
      const src = new PassThrough();
      src.write('partial');
      const r = await ep.request('POST', '/', 'x', { 'content-length': '100' }, src, asIs).response;
      assert.equal(await text(r.body), 'early');
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(ep.size, 0);
      assert.equal(src.destroyed, true);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('a server closing an idle connection takes it out of the pool; a close before the answer fails the request', async () => {
    const srv = await server((req, res) => {
      if (req.url === '/drop') req.socket.destroy();
      else res.end('ok', () => setTimeout(() => req.socket.end(), 5));
    });
    const ep = new Http1Endpoint(dialer(srv.port), 4);
    try {
      await text((await ep.request('GET', '/', 'x', {}, null, asIs).response).body);
      await new Promise((r) => setTimeout(r, 40));
      assert.equal(ep.size, 0);
      await assert.rejects(ep.request('GET', '/drop', 'x', {}, null, asIs).response, /connection closed before a response|ECONNRESET|upstream connection failed/);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('cancelling a request that already ended leaves the connection to the next request', async () => {
    const srv = await server((req, res) => res.end(req.url));
    const ep = new Http1Endpoint(dialer(srv.port), 4);
    try {
      const first = ep.request('GET', '/first', 'x', {}, null, asIs);
      assert.equal(await text((await first.response).body), '/first');
      const second = ep.request('GET', '/second', 'x', {}, null, asIs);
      first.abort();
      assert.equal(await text((await second.response).body), '/second');
      assert.equal(srv.connections(), 1);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('cancelling mid-response destroys the body and the connection', async () => {
    const srv = await server((_req, res) => {
      res.writeHead(200, { 'content-length': '10' });
      res.write('abc');
    });
    const ep = new Http1Endpoint(dialer(srv.port), 4);
    try {
      const p = ep.request('GET', '/', 'x', {}, null, asIs);
      const r = await p.response;
      const failed = new Promise<Error>((resolve) => r.body.once('error', resolve));
      r.body.resume();
      p.abort();
      assert.match((await failed).message, /cancelled/);
      assert.equal(ep.size, 0);
    } finally {
      ep.close();
      await srv.close();
    }
  });

  test('a dial failure goes through onConnectError; a response that breaks the rules fails the request', async () => {
    const ep = new Http1Endpoint(() => Promise.reject(new Error('refused')), 4);
    await assert.rejects(ep.request('GET', '/', 'x', {}, null, (e) => new Error(`wrapped ${(e as Error).message}`)).response, /wrapped refused/);
    const raw = net.createServer((s) => s.once('data', () => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab')));
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const ep2 = new Http1Endpoint(dialer((raw.address() as net.AddressInfo).port), 4);
    try {
      await assert.rejects(ep2.request('GET', '/', 'x', {}, null, asIs).response, /invalid response: invalid content-length/);
      assert.equal(ep2.size, 0);
    } finally {
      ep2.close();
      await new Promise((r) => raw.close(r));
    }
  });
});
