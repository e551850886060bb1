import http2, { constants as h2c, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { Identity } from '../identity/spiffe.js';
import { MeshError } from '../errors.js';
import { parseAddress, type SocketAddress } from '../model/types.js';
import { CONNECTION_WINDOW, MAX_SESSION_MEMORY_MB, PING_INTERVAL_MS, PING_TIMEOUT_MS, SERVER_MAX_STREAMS, serverSettings } from './settings.js';
import { peerIdentity, tlsOptions, type TlsMaterial } from './tls.js';
import { forgetResponse } from './forget.js';
import { rootOfChain, sameRoots } from '../identity/trust.js';

/** One verified CONNECT request on an inbound HBONE connection. */
export interface InboundConnect {
  stream: ServerHttp2Stream;
  headers: IncomingHttpHeaders;
  /** the `:authority`: where the client wants to go */
  target: SocketAddress;
  /** the client's identity from its verified certificate */
  peer: Identity;
  /** the TCP peer of the HBONE connection */
  peerAddress: SocketAddress;
}

export interface HboneServerEvents {
  /** a CONNECT that passed protocol checks; the handler answers it */
  connect: (req: InboundConnect) => void;
  /** a refused connection or request, for logs and metrics */
  rejected: (flag: MeshError['flag'], reason: string, peer: string) => void;
}

/** Limits of an HBONE server against slow or hostile clients (defaults in HBONE_SERVER_LIMITS). */
export interface HboneServerOptions {
  /** a TCP connection must finish the TLS handshake within this time (slowloris) */
  handshakeTimeoutMs?: number;
  /** PING every this often; a client that does not answer within pingTimeoutMs is dropped */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** streams a client may reset before they were answered: a burst, then so many per second (rapid reset) */
  earlyResetBurst?: number;
  earlyResetPerSecond?: number;
}

export const HBONE_SERVER_LIMITS: Required<HboneServerOptions> = {
  handshakeTimeoutMs: 10_000,
  pingIntervalMs: PING_INTERVAL_MS,
  pingTimeoutMs: PING_TIMEOUT_MS,
  // one full window of concurrent streams, then a steady rate no pool of ours comes near
  earlyResetBurst: SERVER_MAX_STREAMS,
  earlyResetPerSecond: 50,
};

/** Malformed requests (400) a session may send before it is dropped: a mesh peer never sends one. */
const MAX_BAD_REQUESTS = 20;
/** How long a refused client's connection stays open after its GOAWAY, for the client to read it. */
const REFUSED_GRACE_MS = 1000;

/** Errors of streams and sessions are reported through their outcome, not the emitter. */
const ignoreError = (): void => undefined;

/** A session's budget of streams reset before they were answered (token bucket). */
interface ResetLimiter {
  tokens: number;
  last: number;
  resets: number;
  readonly session: ServerHttp2Session;
  readonly exceeded: () => void;
  readonly burst: number;
  readonly rate: number;
}

/** Each stream's limiter (a WeakMap: a property added to node's stream object makes it larger). */
const resetLimiters = new WeakMap<ServerHttp2Stream, ResetLimiter>();

function countEarlyReset(this: ServerHttp2Stream): void {
  const l = resetLimiters.get(this);
  if (!l || this.headersSent || this.rstCode === h2c.NGHTTP2_NO_ERROR || l.session.destroyed) return;
  l.resets++;
  const now = Date.now();
  l.tokens = Math.min(l.burst, l.tokens + ((now - l.last) / 1000) * l.rate) - 1;
  l.last = now;
  if (l.tokens >= 0) return;
  l.exceeded();
}

/**
 * The inbound side of HBONE: TLS 1.3 with client certificates from the mesh roots, ALPN h2,
 * HTTP/2 CONNECT only. Protocol errors are answered here; everything else goes to `connect`.
 */
export class HboneServer {
  readonly server: Http2SecureServer;
  private readonly identities = new WeakMap<ServerHttp2Session, Identity>();

  private readonly limits: Required<HboneServerOptions>;
  private readonly refused = new WeakSet<ServerHttp2Session>();
  private readonly peers = new WeakMap<ServerHttp2Session, string>();
  private readonly badRequests = new WeakMap<ServerHttp2Session, number>();
  private readonly sockets = new Map<string, Socket>();
  /** open client sessions and the certificate chain each client presented (DER, leaf first) */
  private readonly sessions = new Map<ServerHttp2Session, Buffer[]>();
  /** sessions sent a GOAWAY to drain them: PING no longer works on them, and their streams may run on */
  private readonly draining = new WeakSet<ServerHttp2Session>();
  private roots: string[];

  constructor(material: TlsMaterial, private readonly trustDomain: string, private readonly on: HboneServerEvents, options: HboneServerOptions = {}) {
    this.limits = { ...HBONE_SERVER_LIMITS, ...options };
    this.roots = material.rootsPem;
    this.server = http2.createSecureServer({
      ...tlsOptions(material),
      requestCert: true,
      rejectUnauthorized: true,
      allowHTTP1: false,
      settings: serverSettings,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
      // bounded header memory and rapid-reset damage: nghttp2 enforces these per session
      maxHeaderListPairs: 64,
      maxSessionRejectedStreams: 100,
      maxSessionInvalidFrames: 100,
      unknownProtocolTimeout: 5000,
      // node's default is 120 s: a client that never finishes the handshake holds a socket that long
      handshakeTimeout: this.limits.handshakeTimeoutMs,
    });
    // TCP sockets by peer: a refused client's socket is closed even when it does not read
    // (node ends it gracefully, which never finishes then). Reading the address on accept
    // also caches it: a TLS socket that failed its handshake is destroyed before
    // tlsClientError, when it could no longer tell.
    this.server.on('connection', (raw: Socket) => {
      const peer = `${raw.remoteAddress}:${raw.remotePort}`;
      this.sockets.set(peer, raw);
      raw.once('close', () => {
        if (this.sockets.get(peer) === raw) this.sockets.delete(peer);
      });
    });
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, sock: TLSSocket) => {
      if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        on.rejected('TIMEOUT', `TLS handshake not finished within ${this.limits.handshakeTimeoutMs} ms`, tlsPeer(sock));
        return;
      }
      // node refuses a client chain after the handshake by closing, and reports "socket hang up": say why
      const why = sock.authorizationError ? `client certificate refused: ${String(sock.authorizationError)}` : err.message;
      on.rejected('TLS_FAILURE', why, tlsPeer(sock));
    });
    this.server.on('unknownProtocol', (sock: TLSSocket) => {
      on.rejected('BAD_REQUEST', 'client did not negotiate h2', tlsPeer(sock));
      sock.destroy();
    });
    this.server.on('session', (session: ServerHttp2Session) => this.onSession(session));
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('sessionError', (err: Error, session: ServerHttp2Session) => {
      // a broken client session (floods, protocol errors): node destroys it, other clients carry on
      if (this.refused.has(session)) return;
      const peer = this.peers.get(session) ?? 'unknown';
      on.rejected('BAD_REQUEST', `HTTP/2 session error: ${err.message}; connection closed`, peer);
      this.hardClose(peer);
    });
  }

  /**
   * Swaps the certificate and trusted roots for new connections (rotation); open connections
   * keep theirs. When a root was dropped, clients whose certificate chains to no root still
   * trusted are sent a GOAWAY: their open streams finish, new ones must come on a connection
   * made with a certificate from a trusted root.
   */
  setMaterial(material: TlsMaterial): void {
    this.server.setSecureContext({ ...tlsOptions(material) });
    if (sameRoots(this.roots, material.rootsPem)) return;
    this.roots = material.rootsPem;
    for (const [session, chain] of this.sessions) {
      if (session.closed || session.destroyed || rootOfChain(chain, this.roots)) continue;
      const peer = this.peers.get(session) ?? 'unknown';
      this.on.rejected('TLS_FAILURE', 'client certificate chains to a root no longer trusted; connection drained', peer);
      this.draining.add(session);
      try {
        // GOAWAY with the last stream processed: open streams finish, the client opens no more here
        session.goaway(h2c.NGHTTP2_NO_ERROR);
      } catch {
        /* already going */
      }
    }
  }

  private onSession(session: ServerHttp2Session): void {
    const sock = session.socket as unknown as TLSSocket;
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    this.peers.set(session, peer);
    const id = peerIdentity(sock.getPeerCertificate());
    if (!id) {
      this.refuse(session, 'TLS_FAILURE', 'client certificate has no single SPIFFE identity', peer, h2c.NGHTTP2_NO_ERROR);
      return;
    }
    if (id.trustDomain !== this.trustDomain) {
      this.refuse(session, 'TLS_FAILURE', `client identity ${id} is outside trust domain ${this.trustDomain}`, peer, h2c.NGHTTP2_NO_ERROR);
      return;
    }
    this.identities.set(session, id);
    this.sessions.set(session, peerChain(sock));
    session.once('close', () => this.sessions.delete(session));
    session.on('error', () => undefined);
    session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    try {
      session.setLocalWindowSize(CONNECTION_WINDOW);
    } catch {
      /* not connected yet: the connect handler above does it */
    }
    this.keepAlive(session, peer);
    this.limitEarlyResets(session, peer);
  }

  /**
   * Reports and drops a session, with this code in its GOAWAY (node's own error event is then
   * not reported again). The GOAWAY goes right away and the connection closes a second later:
   * closing a socket with input still unread makes the kernel send a reset, and a client that
   * is still writing then sees only "connection reset", never why. Meanwhile nghttp2 reads on
   * and ignores new streams, as after any GOAWAY; the streams already open end with the session.
   */
  private refuse(session: ServerHttp2Session, flag: MeshError['flag'], reason: string, peer: string, code: number): void {
    if (this.refused.has(session)) return;
    this.refused.add(session);
    this.identities.delete(session);
    this.on.rejected(flag, reason, peer);
    if (session.destroyed) return;
    // not from inside node's stream or close events, which run while nghttp2 is still reading
    // the same input: a GOAWAY submitted there aborted the process with a corrupted heap in 3
    // of 6 runs of the hostile HBONE tests (node 20), and in none of 8 when deferred
    setImmediate(() => {
      try {
        session.goaway(code);
      } catch {
        /* already going */
      }
    });
    // the session closes as node closes it (GOAWAY, TLS close); the TCP socket follows if the client does not read
    setTimeout(() => {
      session.destroy(new Error(reason), code);
      this.hardClose(peer);
    }, REFUSED_GRACE_MS).unref();
  }

  /** Closes a refused client's TCP socket after a short grace for the GOAWAY to leave. */
  private hardClose(peer: string): void {
    const raw = this.sockets.get(peer);
    if (!raw || raw.destroyed) return;
    setTimeout(() => raw.destroy(), REFUSED_GRACE_MS).unref();
  }

  /**
   * PINGs the client; one that leaves a PING unanswered too long is dropped. This also ends
   * connections stuck in a partial frame (slowloris) and sessions nghttp2 already sent a
   * GOAWAY on, which node would otherwise keep open for as long as the client likes.
   */
  private keepAlive(session: ServerHttp2Session, peer: string): void {
    let outstanding: number | null = null;
    const timer = setInterval(() => {
      if (session.destroyed || this.refused.has(session)) {
        clearInterval(timer);
        return;
      }
      // a drained session cannot PING (nghttp2 cancels it after a GOAWAY): its streams run to their end
      if (this.draining.has(session)) {
        clearInterval(timer);
        return;
      }
      if (outstanding !== null) {
        if (Date.now() - outstanding < this.limits.pingTimeoutMs) return;
        this.refuse(session, 'TIMEOUT', `client left a PING unanswered for ${this.limits.pingTimeoutMs} ms`, peer, h2c.NGHTTP2_NO_ERROR);
        return;
      }
      outstanding = Date.now();
      try {
        session.ping((err) => {
          if (!err) outstanding = null;
        });
      } catch {
        /* closing: the session goes away by itself */
      }
    }, Math.min(this.limits.pingIntervalMs, this.limits.pingTimeoutMs));
    timer.unref();
    session.on('close', () => clearInterval(timer));
  }

  /** Rapid reset: a client resetting streams before they were answered, faster than the budget allows, is dropped. */
  private limitEarlyResets(session: ServerHttp2Session, peer: string): void {
    const { earlyResetBurst: burst, earlyResetPerSecond: rate } = this.limits;
    const limiter: ResetLimiter = {
      tokens: burst,
      last: Date.now(),
      resets: 0,
      session,
      exceeded: () => this.refuse(session, 'BAD_REQUEST', `client reset ${limiter.resets} streams before they were answered (rapid reset)`, peer, h2c.NGHTTP2_ENHANCE_YOUR_CALM),
      burst,
      rate,
    };
    session.on('stream', (stream: ServerHttp2Stream) => {
      // one shared handler and a reference per stream: an open tunnel holds no closure of its own
      resetLimiters.set(stream, limiter);
      stream.on('close', countEarlyReset);
    });
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', ignoreError);
    const session = stream.session as ServerHttp2Session;
    const sock = session.socket;
    const peerText = `${sock.remoteAddress}:${sock.remotePort}`;
    // none on a session not (or no longer) trusted: it was refused
    const peer = this.identities.get(session);
    if (!peer) {
      stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (headers[':method'] !== 'CONNECT') {
      this.badRequest(session, stream, `method ${String(headers[':method'])} is not CONNECT`, 'only CONNECT is served here', peerText);
      return;
    }
    const target = parseAddress(String(headers[':authority'] ?? ''));
    if (!target) {
      this.badRequest(session, stream, `bad authority ${JSON.stringify(headers[':authority'])}`, 'authority must be ip:port', peerText);
      return;
    }
    const peerAddress = { ip: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
    // A stream reset in the same read as its HEADERS (rapid reset) is gone by now: skip it
    // rather than open a connection to the app for nothing.
    setImmediate(() => {
      if (stream.closed || stream.destroyed) return;
      this.on.connect({ stream, headers, target, peer, peerAddress });
    });
  }

  /** Answers 400; a client that keeps sending bad requests is dropped rather than logged forever. */
  private badRequest(session: ServerHttp2Session, stream: ServerHttp2Stream, reason: string, answer: string, peer: string): void {
    const n = (this.badRequests.get(session) ?? 0) + 1;
    this.badRequests.set(session, n);
    if (n > MAX_BAD_REQUESTS) {
      this.refuse(session, 'BAD_REQUEST', `client sent ${n} malformed requests; last: ${reason}`, peer, h2c.NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    this.on.rejected('BAD_REQUEST', reason, peer);
    respondError(stream, new MeshError('BAD_REQUEST', answer));
  }

  /** Client connections open (refused ones not counted). */
  get openSessions(): number {
    return this.sessions.size;
  }

  /** Serves on an already bound and listening socket fd (made inside a pod's netns). */
  listenFd(fd: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ fd }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /**
   * Stops accepting; open client connections get a GOAWAY: their tunnels may finish, and new
   * tunnels must come on a new connection. (Closing node's server alone would leave them open
   * and taking new streams: a pod released and captured again would get them on the old
   * connection, for the pod as it was.)
   */
  close(): Promise<void> {
    for (const session of this.sessions.keys()) {
      if (session.closed || session.destroyed) continue;
      this.draining.add(session);
      try {
        session.goaway(h2c.NGHTTP2_NO_ERROR);
        session.close();
      } catch {
        /* already going */
      }
    }
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** The certificate chain a TLS peer presented, as verified (DER, leaf first, up to its root). */
function peerChain(sock: TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: DetailedPeerCertificate | undefined = sock.getPeerCertificate(true) as DetailedPeerCertificate;
  const seen = new Set<string>();
  while (c && c.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/** "ip:port" of a TLS client, also after its socket was destroyed (then from the TCP socket underneath). */
function tlsPeer(sock: TLSSocket): string {
  const raw = (sock as TLSSocket & { _parent?: Socket | null })._parent;
  const s = sock.remoteAddress !== undefined ? sock : raw ?? sock;
  return `${s.remoteAddress}:${s.remotePort}`;
}

/** Answers a CONNECT 200: the tunnel is open. The stream then keeps nothing of the answer's headers. */
export function respondConnected(stream: ServerHttp2Stream): void {
  stream.respond({ ':status': 200 }, { endStream: false });
  forgetResponse(stream);
}

/** Ends a CONNECT with the status for this error and no body. */
export function respondError(stream: ServerHttp2Stream, err: MeshError): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) stream.respond({ ':status': err.status }, { endStream: true });
  else stream.close(h2c.NGHTTP2_CONNECT_ERROR);
}
