import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { BodyStream, pipeBody } from '../../../waypoint/body-stream.js';

/** The next tick, when what waited at resume() went out. */
const tick = (): Promise<void> => new Promise((r) => process.nextTick(r));

/** Records the events of a body in order. */
function record(b: BodyStream): string[] {
  const seen: string[] = [];
  b.on('data', (c: Buffer) => seen.push(`data:${c.toString()}`));
  b.on('end', () => seen.push('end'));
  b.on('error', (e: Error) => seen.push(`error:${e.message}`));
  b.on('close', () => seen.push('close'));
  return seen;
}

describe('BodyStream', () => {
  test('chunks pushed before anyone listens wait, in order; a data listener starts the flow on the next tick; end, then close', async () => {
    const b = new BodyStream();
    assert.equal(b.push(Buffer.from('a')), true);
    assert.equal(b.push(Buffer.from('b')), true);
    b.push(null);
    assert.equal(b.readableLength, 2);
    const seen = record(b);
    assert.deepEqual(seen, [], 'the listeners added after the data one are in place first');
    await tick();
    assert.deepEqual(seen, ['data:a', 'data:b', 'end', 'close']);
    assert.equal(b.readableEnded, true);
    assert.equal(b.destroyed, true);
  });

  test('while flowing, a chunk is delivered within push()', () => {
    const b = new BodyStream();
    const seen = record(b);
    b.push(Buffer.from('x'));
    assert.deepEqual(seen, ['data:x']);
    b.push(null);
    assert.deepEqual(seen, ['data:x', 'end', 'close']);
  });

  test('pause() in a data handler stops the rest at once; resume() delivers it', async () => {
    let wanted = 0;
    const b = new BodyStream(() => wanted++);
    b.push(Buffer.from('1'));
    b.push(Buffer.from('2'));
    b.push(Buffer.from('3'));
    const seen: string[] = [];
    b.on('data', (c: Buffer) => {
      seen.push(c.toString());
      if (c.toString() === '1') b.pause();
    });
    await tick();
    assert.deepEqual(seen, ['1']);
    assert.equal(b.isPaused(), true);
    assert.equal(wanted, 0);
    b.push(null);
    let ended = false;
    b.on('end', () => (ended = true));
    assert.equal(ended, false, 'no end while paused, even with the end pushed');
    b.resume();
    await tick();
    assert.deepEqual(seen, ['1', '2', '3']);
    assert.equal(ended, true);
    assert.equal(wanted, 0, 'an ended body asks for nothing');
  });

  test('a paused body does not start again when a data listener is added', async () => {
    const b = new BodyStream();
    b.pause();
    b.push(Buffer.from('a'));
    const seen: string[] = [];
    b.on('data', (c: Buffer) => seen.push(c.toString()));
    await tick();
    assert.deepEqual(seen, []);
    b.resume();
    await tick();
    assert.deepEqual(seen, ['a']);
  });

  test('push() says stop once 16 KiB wait; the flow then calls wantMore', async () => {
    let wanted = 0;
    const b = new BodyStream(() => wanted++);
    assert.equal(b.push(Buffer.alloc(8 * 1024)), true);
    assert.equal(b.push(Buffer.alloc(8 * 1024)), false);
    let got = 0;
    b.on('data', (c: Buffer) => (got += c.length));
    assert.equal(wanted, 0);
    await tick();
    assert.equal(got, 16 * 1024);
    assert.equal(wanted, 1);
    assert.equal(b.push(Buffer.alloc(100)), true);
    assert.equal(got, 16 * 1024 + 100);
  });

  test('a chunk pushed from inside a data handler comes after the one being handled', async () => {
    const b = new BodyStream();
    b.push(Buffer.from('a'));
    b.push(Buffer.from('b'));
    const seen: string[] = [];
    b.on('data', (c: Buffer) => {
      seen.push(c.toString());
      if (c.toString() === 'a') b.push(Buffer.from('c'));
    });
    await tick();
    assert.deepEqual(seen, ['a', 'b', 'c']);
  });

  test('destroy(err) drops what waits and tells listeners: error, then close; no end', () => {
    const b = new BodyStream();
    b.pause();
    b.push(Buffer.from('lost'));
    const seen = record(b);
    b.destroy(new Error('cut'));
    assert.deepEqual(seen, ['error:cut', 'close']);
    assert.equal(b.readableEnded, false);
    assert.equal(b.readableLength, 0);
    assert.equal(b.push(Buffer.from('late')), false);
    b.destroy(new Error('again'));
    assert.deepEqual(seen, ['error:cut', 'close'], 'destroyed once');
  });

  test('an error nobody listens to does not throw', () => {
    const b = new BodyStream();
    let closed = false;
    b.on('close', () => (closed = true));
    assert.doesNotThrow(() => b.destroy(new Error('unheard')));
    assert.equal(closed, true);
  });

  test('once() listeners start the flow like on()', async () => {
    const b = new BodyStream();
    b.push(Buffer.from('a'));
    b.push(Buffer.from('b'));
    const seen: string[] = [];
    b.once('data', (c: Buffer) => seen.push(c.toString()));
    await tick();
    assert.deepEqual(seen, ['a'], 'flowing: b went out to no listener, as with a Readable');
    assert.equal(b.readableLength, 0);
  });

  test('listeners are called as EventEmitter calls them: in order, once() only once, off() removes the last-added registration', () => {
    const b = new BodyStream();
    const seen: string[] = [];
    const a = (): number => seen.push('a');
    b.on('close', a);
    b.once('close', () => seen.push('once'));
    b.on('close', a);
    b.on('close', () => seen.push('c'));
    b.off('close', a);
    assert.equal(b.listenerCount('close'), 3);
    b.emit('close');
    assert.deepEqual(seen, ['a', 'once', 'c']);
    assert.equal(b.listenerCount('close'), 2, 'the once() listener went');
    b.emit('close');
    assert.deepEqual(seen, ['a', 'once', 'c', 'a', 'c']);
    b.off('close', a);
    b.off('close', a);
    assert.equal(b.listenerCount('close'), 1, 'removing a listener that is not there changes nothing');
  });

  test('during an emit, a listener added is not called and one removed still is; other event names work too', () => {
    const b = new BodyStream();
    const seen: string[] = [];
    const second = (): number => seen.push('second');
    b.on('end', () => {
      seen.push('first');
      b.off('end', second);
      b.on('end', () => seen.push('added'));
    });
    b.on('end', second);
    b.emit('end');
    assert.deepEqual(seen, ['first', 'second']);
    b.emit('end');
    assert.deepEqual(seen, ['first', 'second', 'first', 'added']);
    const args: unknown[] = [];
    b.once('custom', (x: unknown) => args.push(x));
    assert.equal(b.emit('custom', 7), true);
    assert.equal(b.emit('custom', 8), false, 'no listener left');
    assert.deepEqual(args, [7]);
  });

  test('a once() listener removed with off() before the event is not called', () => {
    const b = new BodyStream();
    let called = false;
    const f = (): void => void (called = true);
    b.once('error', f);
    b.off('error', f);
    b.destroy(new Error('x'));
    assert.equal(called, false);
  });
});

describe('pipeBody', () => {
  test('writes the body with back-pressure and ends the destination', async () => {
    const got: string[] = [];
    let release: (() => void) | null = null;
    const dst = new Writable({
      highWaterMark: 4,
      write(c: Buffer, _e, cb) {
        got.push(c.toString());
        release = cb;
      },
    });
    const b = new BodyStream();
    pipeBody(b, dst);
    b.push(Buffer.from('hello'));
    assert.equal(b.isPaused(), true, 'the destination is over its high-water mark');
    b.push(Buffer.from('world'));
    b.push(null);
    const finished = new Promise((r) => dst.once('finish', r));
    while (got.length < 2 || release) {
      const r = release as (() => void) | null;
      release = null;
      if (r) r();
      await new Promise((res) => setImmediate(res));
    }
    await finished;
    assert.deepEqual(got, ['hello', 'world']);
  });

  test('a destination that closes first destroys the body', async () => {
    const dst = new Writable({ write: (_c, _e, cb) => cb() });
    const b = new BodyStream();
    pipeBody(b, dst);
    b.push(Buffer.from('part'));
    dst.destroy();
    await new Promise((r) => dst.once('close', r));
    assert.equal(b.destroyed, true);
    assert.equal(b.readableEnded, false);
  });
});
