import type { ClientHttp2Stream, Http2Stream, ServerHttp2Stream } from 'node:http2';

/*
 * node keeps on every HTTP/2 stream, for the stream's whole life, things only its start needed:
 * the headers it sent (a dictionary object with its strings: 0.2-0.5 KB), and on a client
 * stream the origin string of the request and the async resource its response was delivered
 * in. A CONNECT tunnel may stay open for hours and needs none of them once answered. node
 * keeps them under symbols of its own (found here by their descriptions); after the answer it
 * reads the origin only for a 421 answer and the async resource only to deliver more headers
 * (without it, as for a server stream), and the headers only for `stream.sentHeaders`, which
 * then reads undefined. They are set to undefined, not deleted: deleting a property would
 * turn node's stream object into a slower and larger dictionary. Should node rename them,
 * nothing is found and nothing changes.
 */

const symbols = new Map<string, symbol>();
/** stream classes already searched for the symbols (once each) */
const searched = new WeakSet<object>();

function forget(stream: Http2Stream, descriptions: readonly string[]): void {
  const proto = Object.getPrototypeOf(stream) as object;
  if (!searched.has(proto)) {
    searched.add(proto);
    for (const s of Object.getOwnPropertySymbols(stream)) if (s.description !== undefined && descriptions.includes(s.description)) symbols.set(s.description, s);
  }
  const fields = stream as unknown as Record<symbol, unknown>;
  for (const d of descriptions) {
    const s = symbols.get(d);
    if (s !== undefined && Object.hasOwn(stream, s) && fields[s] !== undefined) fields[s] = undefined;
  }
}

const REQUEST = ['sent-headers', 'origin', 'requestAsyncResource'] as const;
const RESPONSE = ['sent-headers'] as const;

/** Drops what a client stream keeps of its request, once the answer came. */
export function forgetRequest(stream: ClientHttp2Stream): void {
  forget(stream, REQUEST);
}

/** Drops what a server stream keeps of the response headers it sent. */
export function forgetResponse(stream: ServerHttp2Stream): void {
  forget(stream, RESPONSE);
}
