import http2, { constants as h2c, type Http2SecureServer, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Identity } from '../identity/spiffe.js';
import { MeshError } from '../errors.js';
import { parseAddress, type SocketAddress } from '../model/types.js';
import { CONNECTION_WINDOW, MAX_SESSION_MEMORY_MB, PING_INTERVAL_MS, serverSettings } from './settings.js';
import { peerIdentity, tlsOptions, type TlsMaterial } from './tls.js';

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

/**
 * The inbound side of HBONE: TLS 1.3 with client certificates from the mesh roots, ALPN h2,
 * HTTP/2 CONNECT only. Protocol errors are answered here; everything else goes to `connect`.
 */
export class HboneServer {
  readonly server: Http2SecureServer;
  private readonly identities = new WeakMap<ServerHttp2Session, Identity>();

  constructor(material: TlsMaterial, private readonly trustDomain: string, private readonly on: HboneServerEvents) {
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
    });
    this.server.on('tlsClientError', (err, sock: TLSSocket) => {
      on.rejected('TLS_FAILURE', err.message, `${sock.remoteAddress}:${sock.remotePort}`);
    });
    this.server.on('unknownProtocol', (sock: TLSSocket) => {
      on.rejected('BAD_REQUEST', 'client did not negotiate h2', `${sock.remoteAddress}:${sock.remotePort}`);
      sock.destroy();
    });
    this.server.on('session', (session: ServerHttp2Session) => this.onSession(session));
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('sessionError', () => {
      /* a broken client session; the session is destroyed, other clients carry on */
    });
  }

  /** Swaps the certificate for new connections (rotation); open connections keep theirs. */
  setMaterial(material: TlsMaterial): void {
    this.server.setSecureContext({ ...tlsOptions(material) });
  }

  private onSession(session: ServerHttp2Session): void {
    const sock = session.socket as unknown as TLSSocket;
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    const id = peerIdentity(sock.getPeerCertificate());
    if (!id) {
      this.on.rejected('TLS_FAILURE', 'client certificate has no single SPIFFE identity', peer);
      session.destroy();
      return;
    }
    if (id.trustDomain !== this.trustDomain) {
      this.on.rejected('TLS_FAILURE', `client identity ${id} is outside trust domain ${this.trustDomain}`, peer);
      session.destroy();
      return;
    }
    this.identities.set(session, id);
    session.on('error', () => undefined);
    session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    try {
      session.setLocalWindowSize(CONNECTION_WINDOW);
    } catch {
      /* not connected yet: the connect handler above does it */
    }
    const ping = setInterval(() => {
      if (!session.destroyed) session.ping(() => undefined);
    }, PING_INTERVAL_MS);
    ping.unref();
    session.on('close', () => clearInterval(ping));
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const session = stream.session as ServerHttp2Session;
    const sock = session.socket;
    const peerText = `${sock.remoteAddress}:${sock.remotePort}`;
    const peer = this.identities.get(session);
    if (!peer) {
      stream.close(h2c.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (headers[':method'] !== 'CONNECT') {
      this.on.rejected('BAD_REQUEST', `method ${String(headers[':method'])} is not CONNECT`, peerText);
      respondError(stream, new MeshError('BAD_REQUEST', 'only CONNECT is served here'));
      return;
    }
    const target = parseAddress(String(headers[':authority'] ?? ''));
    if (!target) {
      this.on.rejected('BAD_REQUEST', `bad authority ${JSON.stringify(headers[':authority'])}`, peerText);
      respondError(stream, new MeshError('BAD_REQUEST', 'authority must be ip:port'));
      return;
    }
    this.on.connect({ stream, headers, target, peer, peerAddress: { ip: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 } });
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

  /** Stops accepting; open tunnels get a GOAWAY and may finish. */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Ends a CONNECT with the status for this error and no body. */
export function respondError(stream: ServerHttp2Stream, err: MeshError): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) stream.respond({ ':status': err.status }, { endStream: true });
  else stream.close(h2c.NGHTTP2_CONNECT_ERROR);
}
