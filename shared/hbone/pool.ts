import http2, { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import tls from 'node:tls';
import type { Socket } from 'node:net';
import { MeshError } from '../errors.js';
import { formatAddress, type SocketAddress } from '../model/types.js';
import { CLIENT_MAX_STREAMS, CONNECTION_WINDOW, MAX_SESSION_MEMORY_MB, PING_INTERVAL_MS, PING_TIMEOUT_MS, POOL_IDLE_MS, hboneSettings } from './settings.js';
import { expectIdentity, tlsOptions, type TlsMaterial } from './tls.js';
import { forgetRequest } from './forget.js';

/** Opens a connected TCP socket to the target (ztunnel makes it inside the source pod's netns, marked). */
export type Dialer = (target: SocketAddress) => Promise<Socket>;

/** Everything needed to open one tunnelled stream. */
export interface TunnelRequest {
  /** the identity presented as client (the source workload's) */
  source: string;
  /** identities the server may present (the destination workload's, or its waypoint's) */
  expected: string[];
  /** HBONE endpoint: destination IP and 15008 */
  target: SocketAddress;
  /** `:authority` of the CONNECT */
  authority: string;
  headers?: OutgoingHttpHeaders;
  dial: Dialer;
  material: () => Promise<TlsMaterial>;
}

interface PooledSession {
  pool: ConnectionPool;
  session: ClientHttp2Session;
  active: number;
  idle: NodeJS.Timeout | null;
  /** made with a certificate or trust bundle since replaced: no new streams, closed once idle */
  retired: boolean;
}

/** A stream the far side did not process; safe to send again on another connection. */
class Unprocessed extends Error {}

interface PoolEntry {
  sessions: PooledSession[];
  /** a connection being opened, and how many streams already wait on it */
  opening: { promise: Promise<PooledSession>; waiting: number } | null;
}

const CONNECT_TIMEOUT_MS = 10_000;
const RESPONSE_TIMEOUT_MS = 15_000;

const ignore = (): void => undefined;

/** What a pooled stream's shared 'close' listener needs: the connection it is on (which knows its pool). */
const kPooled = Symbol('ambit.pooled');
type PooledStream = ClientHttp2Stream & { [kPooled]?: PooledSession };

/**
 * HBONE connections keyed by (source identity, destination identity, destination address).
 * A stream goes on an open connection with room (< 100 streams); one burst opens one
 * connection at a time; idle connections are released after 5 minutes.
 */
export class ConnectionPool {
  private readonly entries = new Map<string, PoolEntry>();
  /** bumped per source identity by retire(): a connection begun before it is retired once made */
  private readonly generations = new Map<string, number>();
  private closed = false;

  /**
   * Opens a CONNECT stream and resolves once the far side answered 200. A stream the far side
   * never processed (its connection was going away: GOAWAY, REFUSED_STREAM) is tried once more
   * on another connection, as HTTP/2 allows: a retired or draining connection fails no one.
   */
  async open(req: TunnelRequest): Promise<ClientHttp2Stream> {
    try {
      return await this.openOnce(req);
    } catch (err) {
      if (!(err instanceof Unprocessed)) throw err;
      try {
        return await this.openOnce(req);
      } catch (again) {
        if (again instanceof Unprocessed) throw new MeshError('CONNECT', again.message);
        throw again;
      }
    }
  }

  private async openOnce(req: TunnelRequest): Promise<ClientHttp2Stream> {
    const pooled = await this.acquire(req);
    pooled.active++;
    if (pooled.idle) {
      clearTimeout(pooled.idle);
      pooled.idle = null;
    }
    let stream: ClientHttp2Stream;
    try {
      if (pooled.session.closed || pooled.session.destroyed) throw new Unprocessed(`connection to ${formatAddress(req.target)} is closing`);
      stream = pooled.session.request({ ':method': 'CONNECT', ':authority': req.authority, ...req.headers }, { endStream: false });
    } catch (err) {
      this.release(pooled);
      if (err instanceof Unprocessed || (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_GOAWAY_SESSION' || (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_INVALID_SESSION') {
        throw new Unprocessed(`tunnel request failed: ${(err as Error).message}`);
      }
      throw new MeshError('CONNECT', `tunnel request failed: ${(err as Error).message}`);
    }
    return this.awaitResponse(stream, pooled, formatAddress(req.target));
  }

  /**
   * Resolves with the stream once the far side answered 200. What only serves the answer (its
   * listeners, timer and messages, and what node keeps of the request) is dropped once it
   * came: an open tunnel keeps one shared 'close' listener and a reference to its connection
   * (memory per idle connection).
   */
  private awaitResponse(stream: ClientHttp2Stream, pooled: PooledSession, target: string): Promise<ClientHttp2Stream> {
    (stream as PooledStream)[kPooled] = pooled;
    stream.on('close', ConnectionPool.releaseStream);
    return new Promise<ClientHttp2Stream>((resolve, reject) => {
      const settle = (err: Error | null): void => {
        clearTimeout(timer);
        // errors after the answer are reported through the stream's close (reset), not here
        stream.on('error', ignore);
        stream.off('error', onError);
        stream.off('close', onClose);
        stream.off('response', onResponse);
        if (err) reject(err);
        else resolve(stream);
      };
      // the far side answers once the app connected (it gives up after 10 s): one that never answers must not hold the client
      const timer = setTimeout(() => {
        settle(new MeshError('TIMEOUT', `tunnel to ${target} not answered within ${RESPONSE_TIMEOUT_MS} ms`));
        stream.close(h2c.NGHTTP2_CANCEL);
      }, RESPONSE_TIMEOUT_MS);
      const onError = (err: NodeJS.ErrnoException): void => {
        if (err.code === 'ERR_HTTP2_GOAWAY_SESSION' || stream.rstCode === h2c.NGHTTP2_REFUSED_STREAM) {
          settle(new Unprocessed(`tunnel to ${target} refused before it was processed: ${err.message}`));
          return;
        }
        settle(new MeshError('CONNECT', `tunnel to ${target} failed: ${err.message}`));
      };
      const onClose = (): void => {
        // refused unprocessed: beyond the last stream a GOAWAY accepted, or refused outright
        if (stream.rstCode === h2c.NGHTTP2_REFUSED_STREAM) {
          settle(new Unprocessed(`tunnel to ${target} refused before it was processed`));
          return;
        }
        settle(new MeshError('UPSTREAM_RESET', `tunnel to ${target} closed before answering`));
      };
      const onResponse = (headers: IncomingHttpHeaders): void => {
        const status = Number(headers[':status']);
        if (status === 200) {
          forgetRequest(stream);
          settle(null);
          return;
        }
        const flag = status === 401 ? 'DENY' : status === 400 ? 'BAD_REQUEST' : 'CONNECT';
        settle(new MeshError(flag, `destination answered ${status}`));
        stream.close(h2c.NGHTTP2_CANCEL);
      };
      stream.on('error', onError);
      stream.on('close', onClose);
      stream.on('response', onResponse);
    });
  }

  /** A pooled stream's 'close': its connection has room for one more. Shared by every stream. */
  private static releaseStream(this: PooledStream): void {
    const p = this[kPooled];
    if (p) p.pool.release(p);
  }

  private key(req: TunnelRequest): string {
    return `${req.source}|${req.expected.join(',')}|${formatAddress(req.target)}`;
  }

  private async acquire(req: TunnelRequest): Promise<PooledSession> {
    if (this.closed) throw new MeshError('CONNECT', 'connection pool is closed');
    const key = this.key(req);
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { sessions: [], opening: null };
      this.entries.set(key, entry);
    }
    for (const s of entry.sessions) {
      if (!s.retired && s.active < CLIENT_MAX_STREAMS && !s.session.closed && !s.session.destroyed) return s;
    }
    // Join a connection being opened while it still has room, so a burst opens one connection.
    if (entry.opening && entry.opening.waiting < CLIENT_MAX_STREAMS) {
      entry.opening.waiting++;
      return entry.opening.promise;
    }
    const opening = { promise: this.connect(req, key, entry), waiting: 1 };
    entry.opening = opening;
    try {
      return await opening.promise;
    } finally {
      if (entry.opening === opening) entry.opening = null;
    }
  }

  private async connect(req: TunnelRequest, key: string, entry: PoolEntry): Promise<PooledSession> {
    const generation = this.generations.get(req.source) ?? 0;
    const material = await req.material();
    let raw: Socket;
    try {
      raw = await req.dial(req.target);
    } catch (err) {
      throw new MeshError('CONNECT', `cannot reach ${formatAddress(req.target)}: ${(err as Error).message}`);
    }
    raw.setNoDelay(true);
    // The HBONE transport is not half-open: HTTP/2 ends streams in frames, and a FIN from the
    // peer (a ztunnel that exited) must close the session. A half-open socket (the dialer's
    // default in the data path) would keep it, and every stream pooled onto it would hang.
    raw.allowHalfOpen = false;
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw, ...tlsOptions(material), checkServerIdentity: expectIdentity(req.expected), servername: undefined });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new MeshError('TIMEOUT', `TLS handshake with ${formatAddress(req.target)} timed out`));
      }, CONNECT_TIMEOUT_MS);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        if (s.alpnProtocol !== 'h2') {
          s.destroy();
          reject(new MeshError('TLS_FAILURE', `${formatAddress(req.target)} did not negotiate h2`));
          return;
        }
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        raw.destroy();
        reject(new MeshError('TLS_FAILURE', `TLS with ${formatAddress(req.target)}: ${err.message}`));
      });
    });
    const session = http2.connect(`https://${formatAddress(req.target)}`, {
      createConnection: () => secure,
      settings: hboneSettings,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
      peerMaxConcurrentStreams: CLIENT_MAX_STREAMS,
    });
    session.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      // a peer that took the handshake but never sends its SETTINGS would hold every stream waiting on this connection
      const timer = setTimeout(() => {
        session.destroy();
        reject(new MeshError('TIMEOUT', `HTTP/2 with ${formatAddress(req.target)} did not start within ${CONNECT_TIMEOUT_MS} ms`));
      }, CONNECT_TIMEOUT_MS);
      session.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      session.once('error', (err) => {
        clearTimeout(timer);
        reject(new MeshError('CONNECT', `HTTP/2 with ${formatAddress(req.target)}: ${err.message}`));
      });
      session.once('close', () => {
        clearTimeout(timer);
        reject(new MeshError('CONNECT', `${formatAddress(req.target)} closed the connection before HTTP/2 started`));
      });
    });
    session.setLocalWindowSize(CONNECTION_WINDOW);
    // made with material retire() has since replaced: serve the streams waiting on it, then close
    const pooled: PooledSession = { pool: this, session, active: 0, idle: null, retired: (this.generations.get(req.source) ?? 0) !== generation };
    entry.sessions.push(pooled);
    this.keepAlive(session);
    const drop = (): void => {
      const i = entry.sessions.indexOf(pooled);
      if (i >= 0) entry.sessions.splice(i, 1);
      if (pooled.idle) clearTimeout(pooled.idle);
      if (entry.sessions.length === 0 && !entry.opening && this.entries.get(key) === entry) this.entries.delete(key);
    };
    session.once('close', drop);
    session.once('goaway', drop);
    return pooled;
  }

  private keepAlive(session: ClientHttp2Session): void {
    let outstanding: number | null = null;
    const timer = setInterval(() => {
      if (session.destroyed) return;
      // closing after a GOAWAY (the server drains it): nghttp2 cancels every PING now, so an
      // unanswered one says nothing; the streams left run to their end
      if (session.closed) {
        clearInterval(timer);
        return;
      }
      if (outstanding !== null && Date.now() - outstanding > PING_TIMEOUT_MS) {
        session.destroy(new Error('HBONE peer stopped answering PING'));
        return;
      }
      if (outstanding === null) {
        outstanding = Date.now();
        session.ping((err) => {
          if (!err) outstanding = null;
        });
      }
    }, PING_INTERVAL_MS);
    timer.unref();
    session.once('close', () => clearInterval(timer));
  }

  private release(pooled: PooledSession): void {
    pooled.active--;
    if (pooled.active > 0 || pooled.session.destroyed) return;
    if (pooled.retired) {
      pooled.session.close();
      return;
    }
    pooled.idle = setTimeout(() => pooled.session.close(), POOL_IDLE_MS);
    pooled.idle.unref();
  }

  /**
   * Stops using the connections a source identity has open for new streams: its certificate or
   * trust bundle was replaced, so new streams go on new connections made with the new material.
   * Streams open on the old connections carry on; each connection closes once its last one ends.
   */
  retire(source: string): number {
    this.generations.set(source, (this.generations.get(source) ?? 0) + 1);
    let n = 0;
    const prefix = `${source}|`;
    for (const [key, e] of this.entries) {
      if (!key.startsWith(prefix)) continue;
      for (const s of e.sessions) {
        if (s.retired) continue;
        s.retired = true;
        n++;
        if (s.active === 0) {
          if (s.idle) clearTimeout(s.idle);
          s.session.close();
        }
      }
    }
    return n;
  }

  /** Connections open now, for the admin view. */
  stats(): { key: string; connections: number; streams: number; retired: number }[] {
    return [...this.entries].map(([key, e]) => ({ key, connections: e.sessions.length, streams: e.sessions.reduce((n, s) => n + s.active, 0), retired: e.sessions.filter((s) => s.retired).length }));
  }

  /** Closes every pooled connection gracefully (GOAWAY; open streams finish). */
  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) for (const s of e.sessions) s.session.close();
  }
}
