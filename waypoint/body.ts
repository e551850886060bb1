/**
 * A request body read once from the client and handed to several readers: the current attempt
 * (with back-pressure), mirrors (without: a mirror that falls behind is cut off), and later
 * attempts (replayed from memory). Memory is bounded: beyond `limit` bytes the body stops being
 * kept and can no longer be retried, as Envoy's per-request buffer limit does.
 */

import { BodyStream, type Body } from './body-stream.js';

class BodyReader extends BodyStream {
  constructor(private readonly owner: ReplayableBody) {
    super(() => owner.resumeFor(this));
  }

  override destroy(err?: Error): this {
    if (!this.destroyed) {
      super.destroy(err);
      this.owner.detach(this);
    }
    return this;
  }
}

export class ReplayableBody {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private started = false;
  private ended = false;
  private failed: Error | null = null;
  private primary: BodyReader | null = null;
  private readonly mirrors = new Set<BodyReader>();
  /** bytes read from the client */
  bytes = 0;
  /** false once more than `limit` bytes arrived: the body cannot be sent again */
  replayable = true;

  /** `source` null: a request without a body (readers end at once) */
  constructor(
    private readonly source: Body | null,
    private readonly limit: number,
  ) {
    if (source === null) this.ended = true;
  }

  /** Whether the whole body was received. */
  get complete(): boolean {
    return this.ended;
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    if (this.source === null) return;
    this.source.on('data', (c: Buffer | string) => this.onData(typeof c === 'string' ? Buffer.from(c) : c));
    this.source.once('end', () => {
      this.ended = true;
      this.primary?.push(null);
      for (const m of this.mirrors) m.push(null);
    });
    this.source.once('error', (err: Error) => this.onError(err));
    this.source.once('close', () => {
      if (!this.ended) this.onError(new Error('client closed the request before its end'));
    });
  }

  private onError(err: Error): void {
    if (this.failed || this.ended) return;
    this.failed = err;
    this.primary?.destroy(err);
    for (const m of this.mirrors) m.destroy(err);
  }

  private onData(c: Buffer): void {
    this.bytes += c.length;
    if (this.replayable) {
      this.kept += c.length;
      if (this.kept > this.limit) {
        this.replayable = false;
        this.chunks.length = 0;
        this.kept = 0;
      } else {
        this.chunks.push(c);
      }
    }
    for (const m of this.mirrors) {
      if (m.readableLength > this.limit) m.destroy(new Error('mirror fell behind'));
      else m.push(c);
    }
    if (this.primary !== null && !this.primary.push(c)) this.source?.pause();
  }

  /** Called by a reader that wants more. */
  resumeFor(r: BodyReader): void {
    if (r === this.primary && this.source?.isPaused()) this.source.resume();
  }

  detach(r: BodyReader): void {
    if (r === this.primary) {
      this.primary = null;
      // nobody reads now: keep receiving (bounded by `limit`) so a retry or mirror can go on
      if (this.source?.isPaused()) this.source.resume();
    }
    this.mirrors.delete(r);
  }

  /**
   * A reader from the first byte for the next attempt (the previous attempt's reader is
   * dropped). null when the body was too large to keep and reading already began.
   */
  open(): BodyStream | null {
    if (this.started && !this.replayable) return null;
    if (this.primary !== null) {
      const old = this.primary;
      this.primary = null;
      old.destroy();
    }
    const r = new BodyReader(this);
    for (const c of this.chunks) r.push(c);
    if (this.failed) r.destroy(this.failed);
    else if (this.ended) r.push(null);
    else this.primary = r;
    this.start();
    return r;
  }

  /** A reader for a mirror: from the first byte, never slowing the client down. null when the body is no longer kept. */
  tap(): BodyStream | null {
    if (this.started && !this.replayable) return null;
    const r = new BodyReader(this);
    for (const c of this.chunks) r.push(c);
    if (this.ended) r.push(null);
    else this.mirrors.add(r);
    this.start();
    return r;
  }

  /** Whether another attempt can be sent with the whole body. */
  get canReplay(): boolean {
    return this.replayable && this.failed === null;
  }
}
