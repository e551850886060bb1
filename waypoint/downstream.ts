/**
 * The client side of a request, the same for HTTP/1.1 (./http1-server.ts) and HTTP/2
 * (ServerHttp2Stream, here): local replies (plain or gRPC trailers-only), streaming an upstream
 * response with back-pressure and trailers, resets, and noticing a client that went away.
 */

import type { OutgoingHttpHeaders } from 'node:http';
import { constants as h2c, type ServerHttp2Stream } from 'node:http2';
import type { HeaderMap } from '../shared/routing/filters.js';
import type { UpstreamResponse } from './upstream.js';
import { SEND_TIMEOUT_MS, writeBody } from './http1-body.js';

/** Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1, plus HTTP/2's ban list). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authenticate', 'proxy-authorization', 'http2-settings']);

/** Copies headers without pseudo-headers, hop-by-hop headers, and those named in `Connection`. */
export function forwardableHeaders(h: Readonly<HeaderMap>, keepTeTrailers = false): HeaderMap {
  const out: HeaderMap = {};
  const conn = h.connection;
  const named =
    conn === undefined
      ? null
      : new Set(
          (Array.isArray(conn) ? conn.join(',') : conn)
            .split(',')
            .map((s) => s.trim().toLowerCase())
            .filter(Boolean),
        );
  for (const k in h) {
    const v = h[k];
    if (v === undefined || k.charCodeAt(0) === 58 /* ':' */ || named?.has(k) || !Object.prototype.hasOwnProperty.call(h, k)) continue;
    if (HOP_BY_HOP.has(k)) {
      if (k === 'te' && keepTeTrailers && String(v).toLowerCase().includes('trailers')) out.te = 'trailers';
      continue;
    }
    out[k] = v;
  }
  return out;
}

/** Envoy's mapping of a local reply's HTTP status to a gRPC status. */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return 13;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;
    default:
      return 2;
  }
}

/** gRPC's percent-encoding of grpc-message: bytes outside printable ASCII, and '%'. */
export function grpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text)) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export interface Downstream {
  readonly protocol: 'HTTP/1.1' | 'HTTP/2';
  /** response headers went out */
  readonly started: boolean;
  /** the client went away (or the response was reset) before the response ended */
  readonly aborted: boolean;
  /** response body bytes sent */
  readonly bytesSent: number;
  /** A complete response from the waypoint itself. */
  reply(status: number, headers: HeaderMap, body: string): void;
  /** A gRPC trailers-only response (HTTP 200, grpc-status in the headers). */
  replyGrpc(grpcStatus: number, message: string, headers?: HeaderMap): void;
  /** Streams an upstream response; resolves with its trailers when done, rejects when either side broke. */
  relay(res: UpstreamResponse, headers: HeaderMap, headOnly: boolean): Promise<Record<string, string | string[]>>;
  /** Breaks the response (the client sees a reset / a closed connection). */
  reset(): void;
  /** Called once if the client goes away before the response ended. */
  onAbort(cb: () => void): void;
}

export class Http2Downstream implements Downstream {
  readonly protocol = 'HTTP/2' as const;
  bytesSent = 0;
  private abortCbs: (() => void)[] = [];
  private done = false;
  aborted = false;

  constructor(
    readonly stream: ServerHttp2Stream,
    private readonly sendTimeoutMs: number = SEND_TIMEOUT_MS,
  ) {
    stream.on('error', () => undefined);
    stream.once('close', () => {
      if (this.done) return;
      this.aborted = true;
      for (const cb of this.abortCbs.splice(0)) cb();
    });
  }

  get started(): boolean {
    return this.stream.headersSent;
  }

  onAbort(cb: () => void): void {
    if (this.aborted) cb();
    else this.abortCbs.push(cb);
  }

  reply(status: number, headers: HeaderMap, body: string): void {
    const s = this.stream;
    if (s.headersSent || s.destroyed || s.closed) return;
    const buf = Buffer.from(body);
    this.done = true;
    s.respond({ ...(forwardableHeaders(headers) as OutgoingHttpHeaders), ':status': status, 'content-length': buf.length }, { endStream: buf.length === 0 });
    if (buf.length > 0) {
      this.bytesSent += buf.length;
      s.end(buf);
    }
  }

  replyGrpc(grpcStatus: number, message: string, headers: HeaderMap = {}): void {
    const s = this.stream;
    if (s.headersSent || s.destroyed || s.closed) return;
    this.done = true;
    s.respond(
      { ...(forwardableHeaders(headers) as OutgoingHttpHeaders), ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(message) },
      { endStream: true },
    );
  }

  async relay(up: UpstreamResponse, headers: HeaderMap, headOnly: boolean): Promise<Record<string, string | string[]>> {
    const s = this.stream;
    const h = { ...(forwardableHeaders(headers) as OutgoingHttpHeaders), ':status': up.status };
    if (up.endStream || headOnly || up.status === 204 || up.status === 304) {
      up.body.resume();
      this.done = true;
      s.respond(h, { endStream: true });
      return {};
    }
    let trailers: Record<string, string | string[]> = {};
    s.respond(h, { waitForTrailers: true });
    // Always through sendTrailers: with none, node ends the stream with an empty DATA frame
    // carrying END_STREAM. close() would send RST_STREAM(NO_ERROR) instead, and clients that
    // read it in the same packet as the response (curl) drop the response: "Empty reply".
    s.once('wantTrailers', () => {
      // without trailers, an empty trailer section ends the stream: close() sends
      // RST_STREAM(NO_ERROR) and never END_STREAM, so the response does not end properly and
      // clients such as curl sometimes drop it ("Empty reply from server")
      if (s.destroyed || s.closed) return;
      s.sendTrailers(forwardableHeaders(trailers) as OutgoingHttpHeaders);
    });
    await new Promise<void>((resolve, reject) => {
      writeBody(s, up.body, false, {
        live: () => true,
        count: (n) => (this.bytesSent += n),
        // node's HTTP/2 session sends what the stream holds by itself
        flush: () => undefined,
        end: resolve,
        fail: (err) => reject(err.message === 'the body closed before its end' ? new Error('upstream closed the response before its end') : err),
        stallMs: this.sendTimeoutMs,
      });
    });
    trailers = up.trailers();
    this.done = true;
    s.end();
    return trailers;
  }

  reset(): void {
    this.done = true;
    if (!this.stream.destroyed) this.stream.close(h2c.NGHTTP2_INTERNAL_ERROR);
  }
}
