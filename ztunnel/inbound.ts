import type { Socket } from 'node:net';
import { originalDst, socketFd } from '../shared/native/index.js';
import { MeshError } from '../shared/errors.js';
import { bridge } from '../shared/hbone/bridge.js';
import { joinSockets } from '../shared/hbone/join.js';
import { respondError, type InboundConnect } from '../shared/hbone/server.js';
import { formatAddress, type SocketAddress } from '../shared/model/types.js';
import type { Peer } from './connections.js';
import { ZTUNNEL_PORTS, type LocalPodInfo, type ProxyContext } from './context.js';

/** Checks an inbound destination is this pod's app port, not ztunnel itself (pure). */
export function checkInboundTarget(pod: Pick<LocalPodInfo, 'ip'>, target: SocketAddress): MeshError | null {
  if (target.ip !== pod.ip) return new MeshError('NO_WORKLOAD', `${target.ip} is not this pod (${pod.ip})`);
  if (ZTUNNEL_PORTS.has(target.port)) return new MeshError('LOOP', `port ${target.port} is ztunnel's own`);
  return null;
}

function dstPeer(ctx: ProxyContext, pod: LocalPodInfo, target: SocketAddress): Peer {
  const w = ctx.index.workload(pod.uid);
  return { address: formatAddress(target), identity: pod.identity, workload: w ?? { name: pod.name, namespace: pod.namespace, labels: {} } };
}

/** The `host=` of a `forwarded` header: the service the client addressed, if it said so. */
export function forwardedHost(header: string | string[] | undefined): string | null {
  const text = Array.isArray(header) ? header[0] : header;
  const m = text ? /(?:^|;)\s*host="?([A-Za-z0-9.-]+)"?/.exec(text) : null;
  return m ? m[1]! : null;
}

/** Serves one HBONE CONNECT addressed to this pod: checks, connects to the app as the client, answers 200, carries bytes. */
export async function handleInboundHbone(ctx: ProxyContext, pod: LocalPodInfo, req: InboundConnect): Promise<void> {
  const srcWorkload = ctx.index.workloadByIp(req.peerAddress.ip);
  const src: Peer = { address: formatAddress(req.peerAddress), identity: req.peer.toString(), ...(srcWorkload ? { workload: srcWorkload } : {}) };
  const host = forwardedHost(req.headers.forwarded);
  const service = host ? ctx.index.serviceByHostname(host) : undefined;
  const base = { direction: 'inbound' as const, src, dst: dstPeer(ctx, pod, req.target), protocol: 'HBONE' as const, mtls: true, ...(service ? { service } : {}) };
  const refused = checkInboundTarget(pod, req.target);
  if (refused) {
    ctx.tracker.failed(base, refused.flag, refused.message);
    respondError(req.stream, refused);
    return;
  }
  let app: Socket;
  try {
    app = await pod.net.connect(req.target, req.peerAddress.ip);
  } catch (err) {
    const e = new MeshError('CONNECT', `app at ${formatAddress(req.target)}: ${(err as Error).message}`);
    ctx.tracker.failed(base, e.flag, e.message);
    respondError(req.stream, e);
    return;
  }
  if (req.stream.destroyed) {
    app.destroy();
    return;
  }
  req.stream.respond({ ':status': 200 }, { endStream: false });
  const t = ctx.tracker.opened(base);
  const r = await bridge(app, req.stream);
  // from the client's side: what the app sent is "sent", what reached the app is "received"
  ctx.tracker.closed(t, r.bytesToSocket, r.bytesFromSocket, r.outcome);
}

/** Serves one plaintext connection redirected to 15006 (from outside the mesh; allowed while PERMISSIVE). */
export async function handleInboundPlain(ctx: ProxyContext, pod: LocalPodInfo, client: Socket): Promise<void> {
  client.pause();
  client.on('error', () => undefined);
  let target: SocketAddress;
  try {
    target = originalDst(socketFd(client));
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'inbound connection without original destination');
    client.resetAndDestroy();
    return;
  }
  const srcIp = client.remoteAddress ?? '';
  const srcWorkload = ctx.index.workloadByIp(srcIp);
  const src: Peer = { address: `${srcIp}:${client.remotePort}`, ...(srcWorkload ? { workload: srcWorkload } : {}) };
  const base = { direction: 'inbound' as const, src, dst: dstPeer(ctx, pod, target), protocol: 'TCP' as const, mtls: false };
  const refused = checkInboundTarget(pod, target);
  if (refused) {
    ctx.tracker.failed(base, refused.flag, refused.message);
    client.resetAndDestroy();
    return;
  }
  let app: Socket;
  try {
    app = await pod.net.connect(target, srcIp);
  } catch (err) {
    ctx.tracker.failed(base, 'CONNECT', (err as Error).message);
    client.resetAndDestroy();
    return;
  }
  const t = ctx.tracker.opened(base);
  const outcome = await joinSockets(client, app);
  ctx.tracker.closed(t, client.bytesRead, client.bytesWritten, outcome);
}
