import type { Socket } from 'node:net';
import { constants as h2c } from 'node:http2';
import { originalDst, socketFd } from '../shared/native/index.js';
import { MeshError } from '../shared/errors.js';
import { bridgeTo } from '../shared/hbone/bridge.js';
import { joinTo } from '../shared/hbone/join.js';
import { respondConnected, respondError, type InboundConnect } from '../shared/hbone/server.js';
import { formatAddress, type SocketAddress, type Workload } from '../shared/model/types.js';
import { flatString, StringTable } from '../shared/model/strings.js';
import type { Peer } from './connections.js';
import { peerAuthMode, type ConnectionAttributes, type Decision } from '../shared/policy/evaluate.js';
import { ZTUNNEL_PORTS, type LocalPodInfo, type ProxyContext } from './context.js';

/** Checks an inbound destination is this pod's app port, not ztunnel itself (pure). */
export function checkInboundTarget(pod: Pick<LocalPodInfo, 'ip'>, target: SocketAddress): MeshError | null {
  if (target.ip !== pod.ip) return new MeshError('NO_WORKLOAD', `${target.ip} is not this pod (${pod.ip})`);
  if (ZTUNNEL_PORTS.has(target.port)) return new MeshError('LOOP', `port ${target.port} is ztunnel's own`);
  return null;
}

/** What authorization selects on, per workload (open connections keep it, to be decided again): one object shared by its connections. */
const targets = new WeakMap<Workload, { namespace: string; labels: Record<string, string> }>();

/** The labels authorization selects on for a local pod. */
function targetRef(ctx: ProxyContext, pod: LocalPodInfo): { namespace: string; labels: Record<string, string> } {
  const w = ctx.index.workload(pod.uid);
  if (!w) return { namespace: pod.namespace, labels: {} };
  let t = targets.get(w);
  if (!t || t.namespace !== pod.namespace || t.labels !== w.labels) {
    t = { namespace: pod.namespace, labels: w.labels };
    targets.set(w, t);
  }
  return t;
}

/** Addresses open connections name: HBONE peers (one per connection from a node, not per stream) and local destinations. */
const addresses = new StringTable();

/** Authorization for an inbound connection to a local pod (L4 policies, then PeerAuthentication for plaintext). */
export function authorizeInbound(ctx: Pick<ProxyContext, 'index'>, target: { namespace: string; labels: Record<string, string> }, attrs: ConnectionAttributes): Decision {
  if (attrs.srcIdentity === null && peerAuthMode(ctx.index.peerAuthentications, target, attrs.dstPort) === 'STRICT') {
    return { allowed: false, policy: null, rule: null, action: null, reason: 'denied: PeerAuthentication is STRICT and the connection is plaintext', audited: [] };
  }
  return ctx.index.policies.evaluate(target, attrs);
}

function dstPeer(ctx: ProxyContext, pod: LocalPodInfo, target: SocketAddress): Peer {
  const w = ctx.index.workload(pod.uid);
  return { address: addresses.get(formatAddress(target)), identity: pod.identity, workload: w ?? { name: pod.name, namespace: pod.namespace, labels: {} } };
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
  const src: Peer = { address: addresses.get(formatAddress(req.peerAddress)), identity: req.peer.toString(), ...(srcWorkload ? { workload: srcWorkload } : {}) };
  const host = forwardedHost(req.headers.forwarded);
  const service = host ? ctx.index.serviceByHostname(host) : undefined;
  const base = { direction: 'inbound' as const, src, dst: dstPeer(ctx, pod, req.target), protocol: 'HBONE' as const, mtls: true, ...(service ? { service } : {}) };
  const refused = checkInboundTarget(pod, req.target);
  if (refused) {
    ctx.tracker.failed(base, refused.flag, refused.message);
    respondError(req.stream, refused);
    return;
  }
  const target = targetRef(ctx, pod);
  const attrs: ConnectionAttributes = { srcIp: req.peerAddress.ip, srcIdentity: req.peer.toString(), dstIp: req.target.ip, dstPort: req.target.port };
  const decision = authorizeInbound(ctx, target, attrs);
  if (!decision.allowed) {
    ctx.tracker.denied(base, decision);
    respondError(req.stream, new MeshError('DENY', decision.reason));
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
  respondConnected(req.stream);
  // a reset on both sides: the app sees RST, the client's ztunnel gets RST_STREAM and resets the client;
  // the connection ends through the pod's shared `ended` function, not this frame
  const t = pod.connections.opened({ ...base, attrs, target });
  t.link = bridgeTo(app, req.stream, pod.connections.endedClientStream, t, h2c.NGHTTP2_CONNECT_ERROR);
}

/** Errors are reported through the connection's outcome, not the emitter. */
const ignoreError = (): void => undefined;

/** Serves one plaintext connection redirected to 15006 (from outside the mesh; allowed while PERMISSIVE). */
export async function handleInboundPlain(ctx: ProxyContext, pod: LocalPodInfo, client: Socket): Promise<void> {
  client.pause();
  client.on('error', ignoreError);
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
  const src: Peer = { address: flatString(`${srcIp}:${client.remotePort}`), ...(srcWorkload ? { workload: srcWorkload } : {}) };
  const base = { direction: 'inbound' as const, src, dst: dstPeer(ctx, pod, target), protocol: 'TCP' as const, mtls: false };
  const refused = checkInboundTarget(pod, target);
  if (refused) {
    ctx.tracker.failed(base, refused.flag, refused.message);
    client.resetAndDestroy();
    return;
  }
  const ref = targetRef(ctx, pod);
  const attrs: ConnectionAttributes = { srcIp, srcIdentity: null, dstIp: target.ip, dstPort: target.port };
  const decision = authorizeInbound(ctx, ref, attrs);
  if (!decision.allowed) {
    ctx.tracker.denied(base, decision);
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
  const t = pod.connections.opened({ ...base, attrs, target: ref });
  // the join's own 'error' handler takes over (one listener, not an array of two, per socket)
  client.off('error', ignoreError);
  t.link = joinTo(client, app, pod.connections.endedClientSocket, t);
}

/** After a policy change: decides every open inbound connection again and resets the ones now denied. */
export function recheckOpenConnections(ctx: ProxyContext): number {
  let closed = 0;
  for (const c of [...ctx.tracker.open.values()]) {
    if (c.direction !== 'inbound' || !c.attrs || !c.target || !c.link) continue;
    const d = authorizeInbound(ctx, c.target, c.attrs);
    if (d.allowed) continue;
    ctx.tracker.denies.push({ time: new Date().toISOString(), direction: 'inbound', src: c.src.address, srcIdentity: c.src.identity ?? null, dst: c.dst.address, dstWorkload: c.dst.workload ? `${c.dst.workload.namespace}/${c.dst.workload.name}` : null, policy: d.policy, rule: d.rule, reason: `open connection closed: ${d.reason}` });
    ctx.log.warn({ 'src.addr': c.src.address, 'src.identity': c.src.identity, 'dst.addr': c.dst.address, policy: d.policy, reason: d.reason }, 'open connection closed by a policy change');
    c.link.abort();
    closed++;
  }
  return closed;
}
