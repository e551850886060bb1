import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import type { Body } from '../../../waypoint/body-stream.js';
import { ReplayableBody } from '../../../waypoint/body.js';

function read(r: Body): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    r.on('data', (c: Buffer) => (s += c.toString()));
    r.on('end', () => resolve(s));
    r.on('error', reject);
  });
}

describe('request body kept for retries and mirrors', () => {
  test('a second attempt gets the whole body again', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 1024);
    const first = body.open()!;
    const firstText = read(first);
    src.write('hello ');
    src.end('world');
    assert.equal(await firstText, 'hello world');
    assert.equal(await read(body.open()!), 'hello world');
    assert.equal(body.bytes, 11);
    assert.equal(body.canReplay, true);
  });

  test('a retry opened mid-stream replays what came and follows the rest', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 1024);
    const first = body.open()!;
    first.resume();
    src.write('a');
    await new Promise((r) => setImmediate(r));
    const second = body.open()!;
    const text = read(second);
    src.end('b');
    assert.equal(await text, 'ab');
  });

  test('beyond the limit the body is no longer kept: no retry', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 4);
    const first = body.open()!;
    const text = read(first);
    src.end('0123456789');
    assert.equal(await text, '0123456789');
    assert.equal(body.canReplay, false);
    assert.equal(body.open(), null);
  });

  test('a mirror reads the body without holding the client back', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 1024);
    const mirror = body.tap()!;
    const main = body.open()!;
    const texts = Promise.all([read(main), read(mirror)]);
    src.end('copy me');
    assert.deepEqual(await texts, ['copy me', 'copy me']);
  });

  test('a client that goes away fails the readers', async () => {
    const src = new PassThrough();
    const body = new ReplayableBody(src, 1024);
    const r = body.open()!;
    const text = read(r);
    src.write('part');
    src.destroy();
    await assert.rejects(text);
    assert.equal(body.canReplay, false);
  });

  test('a request without a body: every reader ends at once, empty, and can be opened again', async () => {
    const body = new ReplayableBody(null, 1024);
    assert.equal(body.complete, true);
    assert.equal(await read(body.open()!), '');
    assert.equal(await read(body.tap()!), '');
    assert.equal(await read(body.open()!), '');
    assert.equal(body.bytes, 0);
    assert.equal(body.canReplay, true);
  });
});
