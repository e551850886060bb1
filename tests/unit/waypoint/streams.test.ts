// dropEmptyWrites: batches of writes on an HTTP/2 stream that end with an empty chunk (what
// node's HTTP/1.1 end() writes) reach the peer intact, and every write callback still runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2, { type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { dropEmptyWrites } from '../../../waypoint/streams.js';

const HEAD = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n';

/** A server stream written in `rounds` corked batches of [string head, Buffer body, ''], and what the client received. */
async function exchange(prepare: (s: ServerHttp2Stream) => ServerHttp2Stream, rounds: number): Promise<{ body: string; callbacks: number }> {
  const server = http2.createServer();
  let callbacks = 0;
  server.on('stream', (raw) => {
    const st = prepare(raw);
    st.respond({ ':status': 200 });
    let n = 0;
    const one = (): void => {
      st.cork();
      st.write(HEAD, 'latin1', () => callbacks++);
      st.write(Buffer.from('hello'), () => callbacks++);
      st.write('', 'latin1', () => callbacks++);
      process.nextTick(() => st.uncork());
      if (++n < rounds) setTimeout(one, 1);
      else setTimeout(() => st.end(), 5);
    };
    one();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    const req = client.request({ ':path': '/' });
    req.setEncoding('latin1');
    let body = '';
    req.on('data', (d: string) => (body += d));
    await new Promise<void>((resolve, reject) => {
      req.once('end', resolve);
      req.once('error', reject);
    });
    return { body, callbacks };
  } finally {
    client.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

test('batches ending with an empty write arrive intact, and every write callback runs', async () => {
  const rounds = 40;
  const r = await exchange((s) => dropEmptyWrites(s), rounds);
  assert.equal(r.body, (HEAD + 'hello').repeat(rounds));
  assert.equal(r.callbacks, 3 * rounds);
});

test('a single empty write completes without reaching the stream', async () => {
  const server = http2.createServer();
  server.on('stream', (raw) => {
    const st = dropEmptyWrites(raw);
    st.respond({ ':status': 200 });
    st.write('', () => st.end('done'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    const req = client.request({ ':path': '/' });
    req.setEncoding('latin1');
    let body = '';
    req.on('data', (d: string) => (body += d));
    await new Promise<void>((resolve) => req.once('end', resolve));
    assert.equal(body, 'done');
  } finally {
    client.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
