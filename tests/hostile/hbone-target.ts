/**
 * The HBONE server under attack, in its own process so its memory is measured alone and a
 * crash shows as an exit: the real HboneServer wired as ztunnel's pods.ts wires it (rejections
 * to a pino warn line and the ambit_ztunnel_rejected_total counter), with a connect handler
 * like ztunnel/inbound.ts (connect to a local echo app, answer 200, bridge()).
 *
 * Driven over IPC by tests/hostile/hbone.test.ts: `start` → `ready`, `stats` → `stats`.
 */
import net, { type AddressInfo } from 'node:net';
import type { ServerHttp2Session } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { HboneServer, respondError, type HboneServerOptions } from '../../shared/hbone/server.js';
import { bridge } from '../../shared/hbone/bridge.js';
import { MeshError } from '../../shared/errors.js';
import type { TlsMaterial } from '../../shared/hbone/tls.js';
import { createLogger } from '../../shared/telemetry/log.js';
import { ZtunnelMetrics } from '../../ztunnel/metrics.js';

export interface StartMessage {
  type: 'start';
  material: TlsMaterial;
  trustDomain: string;
  options?: HboneServerOptions;
}

export interface TargetStats {
  type: 'stats';
  id: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** HTTP/2 sessions open now */
  sessions: number;
  /** TLS sockets open now (handshaking or not) */
  sockets: number;
  /** connections the echo app holds now, and ever accepted */
  appOpen: number;
  appAccepted: number;
  /** CONNECTs that reached the handler */
  connects: number;
  /** per client identity: CONNECTs handled, app connections made and held now */
  byPeer: Record<string, { connects: number; appOpened: number; appOpen: number }>;
  /** ambit_ztunnel_rejected_total by reason */
  rejected: Record<string, number>;
}

function main(): void {
  const log = createLogger('ztunnel', process.env.HZ_LOG ?? 'warn').child({ node: 'hostile' });
  const metrics = new ZtunnelMetrics();
  let connects = 0;
  const byPeer: TargetStats['byPeer'] = {};
  let appAccepted = 0;
  const appSockets = new Set<net.Socket>();
  const sessions = new Set<ServerHttp2Session>();
  const sockets = new Set<net.Socket>();

  const app = net.createServer({ allowHalfOpen: true }, (sock) => {
    appAccepted++;
    appSockets.add(sock);
    sock.on('close', () => appSockets.delete(sock));
    sock.on('error', () => undefined);
    sock.pipe(sock);
  });

  process.on('message', (raw: unknown) => {
    const msg = raw as { type: string; id?: number };
    if (msg.type === 'start') void start(msg as StartMessage);
    if (msg.type === 'stats') {
      const mem = process.memoryUsage();
      const rejected: Record<string, number> = {};
      void metrics.rejected.get().then((m) => {
        for (const v of m.values) rejected[String(v.labels.reason)] = v.value;
        const stats: TargetStats = {
          type: 'stats',
          id: msg.id ?? 0,
          rss: mem.rss,
          heapUsed: mem.heapUsed,
          external: mem.external,
          arrayBuffers: mem.arrayBuffers,
          sessions: sessions.size,
          sockets: sockets.size,
          appOpen: appSockets.size,
          appAccepted,
          connects,
          rejected,
          byPeer,
        };
        process.send?.(stats);
      });
    }
    // a peer that says goodbye (GOAWAY) and exits with streams still open: the kernel ends its sockets with a FIN
    if (msg.type === 'goaway-exit') {
      void current?.close();
      setTimeout(() => process.exit(0), 100);
    }
    if (msg.type === 'gc') {
      (globalThis as { gc?: () => void }).gc?.();
      process.send?.({ type: 'gc', id: msg.id });
    }
  });
  process.on('disconnect', () => process.exit(0));

  let current: HboneServer | null = null;
  async function start(msg: StartMessage): Promise<void> {
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    const appPort = (app.address() as AddressInfo).port;
    const hbone = new HboneServer(
      msg.material,
      msg.trustDomain,
      {
        connect: (req) => {
          connects++;
          const mine = (byPeer[req.peer.toString()] ??= { connects: 0, appOpened: 0, appOpen: 0 });
          mine.connects++;
          if (req.target.port !== appPort) {
            respondError(req.stream, new MeshError('NO_WORKLOAD', `nothing listens on ${req.target.port}`));
            return;
          }
          const up = net.connect({ host: '127.0.0.1', port: appPort, allowHalfOpen: true });
          const failed = (err: Error): void => respondError(req.stream, new MeshError('CONNECT', `app: ${err.message}`));
          up.once('error', failed);
          up.once('connect', () => {
            up.off('error', failed);
            mine.appOpened++;
            mine.appOpen++;
            up.once('close', () => mine.appOpen--);
            if (req.stream.destroyed) {
              up.destroy();
              return;
            }
            req.stream.respond({ ':status': 200 }, { endStream: false });
            void bridge(up, req.stream);
          });
        },
        rejected: (flag, reason, peer) => {
          metrics.rejected.inc({ reason: flag, listener: 'hbone' });
          log.warn({ pod: 'hostile/echo', 'src.addr': peer, flags: flag, error: reason }, 'inbound HBONE refused');
        },
      },
      msg.options,
    );
    hbone.server.on('connection', (sock: net.Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    hbone.server.on('secureConnection', (sock: TLSSocket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    hbone.server.on('session', (s: ServerHttp2Session) => {
      sessions.add(s);
      s.on('close', () => sessions.delete(s));
    });
    current = hbone;
    await new Promise<void>((resolve) => hbone.server.listen(0, '127.0.0.1', resolve));
    const port = (hbone.server.address() as AddressInfo).port;
    process.send?.({ type: 'ready', port, appPort, pid: process.pid });
  }
}

main();
