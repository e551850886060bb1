/**
 * A raw HTTP/2 client over mutual TLS for hostile tests: it writes frames exactly as told
 * (no flow control, no stream limits, no HPACK state) and reports what the server answers.
 */
import tls from 'node:tls';
import type { TlsMaterial } from '../../shared/hbone/tls.js';

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;
export const SETTING = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** One frame: 9-byte header and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

export function settingsFrame(values: Partial<Record<keyof typeof SETTING, number>> = {}): Buffer {
  const entries = Object.entries(values) as [keyof typeof SETTING, number][];
  const p = Buffer.alloc(6 * entries.length);
  entries.forEach(([k, v], i) => {
    p.writeUInt16BE(SETTING[k], 6 * i);
    p.writeUInt32BE(v >>> 0, 6 * i + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, p);
}

function hpackInt(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Buffer.from(out);
}

function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

/** An HPACK block of "literal without indexing, new name" fields (no dynamic table, no Huffman). */
export function headerBlock(fields: [string, string | Buffer][]): Buffer {
  return Buffer.concat(fields.flatMap(([n, v]) => [Buffer.from([0x00]), hpackString(n), hpackString(v)]));
}

/** The HPACK block of a CONNECT to `authority`, plus extra fields. */
export function connectBlock(authority: string, extra: [string, string | Buffer][] = []): Buffer {
  return headerBlock([[':method', 'CONNECT'], [':authority', authority], ...extra]);
}

export interface ReceivedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A connected raw client: frames in, frames out, and how the connection ended. */
export class RawH2 {
  readonly frames: ReceivedFrame[] = [];
  /** GOAWAY error code, once received */
  goaway: number | null = null;
  /** RST_STREAM codes by stream */
  readonly resets = new Map<number, number>();
  /** HEADERS received, by stream (":status" not decoded: the first byte of the block) */
  readonly answered = new Set<number>();
  closed = false;
  readonly closedAt: Promise<void>;
  private buf: Buffer = Buffer.alloc(0);
  private reading = true;

  private constructor(readonly sock: tls.TLSSocket) {
    this.closedAt = new Promise((resolve) => sock.once('close', () => {
      this.closed = true;
      resolve();
    }));
    sock.on('error', () => undefined);
    sock.on('data', (c: Buffer) => this.onData(c));
  }

  /** TLS 1.3 + ALPN h2 with a mesh certificate, then the preface and SETTINGS (unless told not to). */
  static connect(port: number, material: TlsMaterial, opts: { settings?: Partial<Record<keyof typeof SETTING, number>>; preface?: boolean } = {}): Promise<RawH2> {
    return new Promise((resolve, reject) => {
      const sock = tls.connect({
        host: '127.0.0.1',
        port,
        key: material.keyPem,
        cert: material.certChainPem,
        ca: material.rootsPem,
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
        checkServerIdentity: () => undefined,
      });
      sock.once('secureConnect', () => {
        sock.off('error', reject);
        const c = new RawH2(sock);
        if (opts.preface !== false) sock.write(Buffer.concat([PREFACE, settingsFrame(opts.settings)]));
        resolve(c);
      });
      sock.once('error', reject);
    });
  }

  /** Stops reading from the socket (the server's writes pile up in the kernel, then in the server). */
  stopReading(): void {
    this.reading = false;
    this.sock.pause();
  }

  write(b: Buffer): boolean {
    if (this.sock.destroyed) return false;
    return this.sock.write(b);
  }

  private onData(c: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const f: ReceivedFrame = { type: this.buf[3]!, flags: this.buf[4]!, streamId: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
      this.buf = this.buf.subarray(9 + len);
      this.onFrame(f);
    }
  }

  private onFrame(f: ReceivedFrame): void {
    if (this.frames.length < 10_000) this.frames.push(f);
    if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)) this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
    if (f.type === FRAME.PING && !(f.flags & FLAG.ACK) && this.reading) this.write(frame(FRAME.PING, FLAG.ACK, 0, f.payload));
    if (f.type === FRAME.GOAWAY) this.goaway = f.payload.readUInt32BE(4);
    if (f.type === FRAME.RST_STREAM) this.resets.set(f.streamId, f.payload.readUInt32BE(0));
    if (f.type === FRAME.HEADERS) this.answered.add(f.streamId);
  }

  /** Resolves when the server closed the connection, or with false after `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.closedAt.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.sock.destroy();
  }
}
