/**
 * Safe writes on HTTP/2 streams used as byte streams (the waypoint's inbound HBONE streams, which
 * carry the HTTP/1.1 or HTTP/2 its clients speak). The waypoint's own HTTP/1.1 code never writes
 * an empty chunk; this guards the streams against any other writer that does (node's HTTP/2
 * server on an h2c connection, node's HTTP/1.1 `end()`, which the waypoint used before).
 *
 * Node 20's Http2Stream completes a corked batch of writes early when the batch ends with an
 * empty chunk, which is what node's HTTP/1.1 `end()` writes after a response or request: the
 * empty chunk carries the batch's completion, nghttp2 drops it as soon as the data before it was
 * framed, and so the batch's memory is released before the session has written that data out.
 * Strings in the batch are copied by node into storage freed at completion (their first 16 bytes
 * were overwritten by the allocator: 400s from endpoints, damaged 403 replies); Buffers are freed
 * by the next garbage collection (under load, clients received other requests' heads and heap
 * bytes instead of responses). Leaving the empty chunks out keeps every batch's completion on its
 * last byte of data.
 */
import type { Duplex } from 'node:stream';

type Chunk = { chunk: Buffer | string; encoding: BufferEncoding };
type Callback = (err?: Error | null) => void;

/** Makes `stream` skip zero-length writes (their callbacks still run, after the writes before them completed). */
export function dropEmptyWrites<T extends Duplex>(stream: T): T {
  const s = stream as unknown as { _write: (c: Buffer | string, e: BufferEncoding, cb: Callback) => void; _writev?: ((cs: Chunk[], cb: Callback) => void) | null };
  const write = s._write.bind(stream);
  // a stream has one write in flight at a time: when this is called, the writes before it completed
  s._write = (c, e, cb) => (c.length === 0 ? process.nextTick(cb) : write(c, e, cb));
  if (typeof s._writev === 'function') {
    const writev = s._writev.bind(stream);
    s._writev = (cs, cb) => {
      const kept = cs.filter((c) => c.chunk.length > 0);
      if (kept.length === cs.length) return writev(cs, cb);
      if (kept.length === 0) return process.nextTick(cb);
      if (kept.length === 1) return write(kept[0]!.chunk, kept[0]!.encoding, cb);
      return writev(kept, cb);
    };
  }
  return stream;
}
