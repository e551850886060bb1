import type { Socket } from 'node:net';
import { originalDst, socketFd } from '../shared/native/index.js';
import { asMeshError, MeshError } from '../shared/errors.js';
import { constants as h2c } from 'node:http2';
import { bridgeTo } from '../shared/hbone/bridge.js';
import { joinTo } from '../shared/hbone/join.js';
import { HBONE_PORT } from '../shared/hbone/settings.js';
import { pickEndpoint, readyEndpoints } from '../shared/model/endpoints.js';
import { formatAddress, type Service, type SocketAddress, type Workload } from '../shared/model/types.js';
import { flatString, StringTable } from '../shared/model/strings.js';
import { Identity } from '../shared/identity/spiffe.js';
import { waypointRefusal } from '../shared/config/waypoint-binding.js';
import type { Peer } from './connections.js';
import { ZTUNNEL_PORTS, type LocalPodInfo, type ProxyContext } from './context.js';

/** Where an outbound connection goes, decided from the model (pure). */
export type OutboundPlan =
  | {
      kind: 'hbone';
      /** the workload the tunnel ends at: the destination pod, or a pod of its waypoint */
      workload: Workload;
      target: SocketAddress;
      service?: Service;
      identity: string;
      /** the CONNECT `:authority`: `<podIP>:<targetPort>`, or through a waypoint the original `<VIP>:<port>` */
      authority: string;
      /** the waypoint (Gateway key) the connection passes */
      waypoint?: string;
    }
  | { kind: 'plain'; workload?: Workload; target: SocketAddress; service?: Service }
  | { kind: 'refuse'; error: MeshError; service?: Service };

/** Chooses the path for a captured connection to `dst` (service VIP, pod IP or outside the mesh). */
export function planOutbound(ctx: Pick<ProxyContext, 'index' | 'cursors' | 'trustDomain'>, dst: SocketAddress): OutboundPlan {
  // An app connecting straight to 127.0.0.1:15001 reaches ztunnel uncaptured, with that as its
  // original destination: passing it through would connect to ztunnel again, without end.
  if (ZTUNNEL_PORTS.has(dst.port) && isLocalAddress(dst.ip)) return { kind: 'refuse', error: new MeshError('LOOP', `${formatAddress(dst)} is ztunnel's own port`) };
  const d = ctx.index.resolve(dst.ip, dst.port);
  let workload: Workload;
  let port: number;
  let service: Service | undefined;
  if (d.kind === 'service' && d.service.waypoint) return viaWaypoint(ctx, d.service.waypoint, 'service', dst, d.service);
  if (d.kind === 'workload' && d.workload.waypoint && d.workload.protocol === 'HBONE') return viaWaypoint(ctx, d.workload.waypoint, 'workload', dst);
  if (d.kind === 'service') {
    service = d.service;
    const eps = readyEndpoints(d.service, d.port, (uid) => ctx.index.workload(uid));
    const cursor = ctx.cursors.get(d.service.key) ?? 0;
    ctx.cursors.set(d.service.key, cursor + 1);
    const ep = pickEndpoint(eps, cursor);
    if (!ep) return { kind: 'refuse', error: new MeshError('NO_ROUTE', `service ${d.service.hostname}:${dst.port} has no ready endpoints`), service };
    workload = ep.workload;
    port = ep.port;
  } else if (d.kind === 'workload') {
    workload = d.workload;
    port = dst.port;
  } else {
    // Outside the mesh (or not known yet): passthrough, as Istio does.
    return { kind: 'plain', target: dst };
  }
  const target = { ip: workload.ip, port };
  if (workload.protocol !== 'HBONE') return { kind: 'plain', workload, target, ...(service ? { service } : {}) };
  if (ZTUNNEL_PORTS.has(port)) return { kind: 'refuse', error: new MeshError('LOOP', `${formatAddress(target)} is a ztunnel port`), ...(service ? { service } : {}) };
  const identity = identityOf(ctx.trustDomain, workload);
  return { kind: 'hbone', workload, target, identity, authority: formatAddress(target), ...(service ? { service } : {}) };
}

/**
 * Through a waypoint: HBONE to one of its ready pods, `:authority` the original destination.
 * A missing or unready waypoint refuses the connection: never around it.
 */
function viaWaypoint(ctx: Pick<ProxyContext, 'index' | 'cursors' | 'trustDomain'>, key: string, kind: 'service' | 'workload', dst: SocketAddress, service?: Service): OutboundPlan {
  const svc = service ? { service } : {};
  const wp = ctx.index.waypoint(key);
  const refusal = waypointRefusal(key, wp, kind);
  const what = service ? `traffic to service ${service.hostname}:${dst.port}` : `traffic to pod ${formatAddress(dst)}`;
  if (refusal) return { kind: 'refuse', error: new MeshError('NO_WAYPOINT', `${what} is refused: ${refusal}`), ...svc };
  const pods = wp!.pods.map((uid) => ctx.index.workload(uid)).filter((w): w is Workload => w !== undefined && w.ready);
  const cursor = ctx.cursors.get(`waypoint:${key}`) ?? 0;
  ctx.cursors.set(`waypoint:${key}`, cursor + 1);
  const pod = pods.length > 0 ? pods[cursor % pods.length]! : undefined;
  if (!pod) return { kind: 'refuse', error: new MeshError('NO_WAYPOINT', `${what} is refused: waypoint ${key} has no ready pod`), ...svc };
  const identity = identityOf(ctx.trustDomain, pod);
  return { kind: 'hbone', workload: pod, target: { ip: pod.ip, port: HBONE_PORT }, identity, authority: formatAddress(dst), waypoint: key, ...svc };
}

/** Each workload's identity, made once: the connections to it share one URI string. */
const identities = new WeakMap<Workload, Identity>();

function identityOf(trustDomain: string, w: Workload): string {
  let id = identities.get(w);
  if (!id || id.trustDomain !== trustDomain || id.namespace !== w.namespace || id.serviceAccount !== (w.serviceAccount || 'default')) {
    id = new Identity(trustDomain, w.namespace, w.serviceAccount);
    identities.set(w, id);
  }
  return id.toString();
}

/** Destination addresses open connections name (one string per destination, not per connection). */
const addresses = new StringTable();

/** Loopback or unspecified: an address that means "this pod" whatever its IP. */
function isLocalAddress(ip: string): boolean {
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  return v4.startsWith('127.') || v4 === '0.0.0.0' || ip === '::1' || ip === '::';
}

/** Errors are reported through the connection's outcome, not the emitter. */
const ignoreError = (): void => undefined;

/** Serves one connection captured on the pod's outbound port (15001). */
export async function handleOutbound(ctx: ProxyContext, pod: LocalPodInfo, client: Socket): Promise<void> {
  client.pause();
  client.on('error', ignoreError);
  let dst: SocketAddress;
  try {
    dst = originalDst(socketFd(client));
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'outbound connection without original destination');
    client.resetAndDestroy();
    return;
  }
  const self = ctx.index.workload(pod.uid);
  const src: Peer = { address: flatString(`${client.remoteAddress}:${client.remotePort}`), identity: pod.identity, workload: self ?? { name: pod.name, namespace: pod.namespace, labels: {} } };
  const plan = planOutbound(ctx, dst);
  const service = plan.service ? { service: plan.service } : {};
  const dstPeer: Peer =
    plan.kind === 'refuse'
      ? { address: formatAddress(dst) }
      : { address: addresses.get(formatAddress(plan.target)), ...(plan.workload ? { workload: plan.workload } : {}), ...(plan.kind === 'hbone' ? { identity: plan.identity } : {}) };
  const base = { direction: 'outbound' as const, src, dst: dstPeer, ...service };

  if (plan.kind === 'refuse') {
    ctx.tracker.failed({ ...base, protocol: 'TCP', mtls: false }, plan.error.flag, plan.error.message);
    client.resetAndDestroy();
    return;
  }
  if (plan.kind === 'plain') {
    let upstream: Socket;
    try {
      upstream = await pod.net.connect(plan.target);
    } catch (err) {
      ctx.tracker.failed({ ...base, protocol: 'TCP', mtls: false }, 'CONNECT', (err as Error).message);
      client.resetAndDestroy();
      return;
    }
    const t = pod.connections.opened({ ...base, protocol: 'TCP', mtls: false });
    // the join's own 'error' handler takes over (one listener, not an array of two, per socket)
    client.off('error', ignoreError);
    t.link = joinTo(client, upstream, pod.connections.endedClientSocket, t);
    return;
  }
  const headers: Record<string, string> = { forwarded: `for="${formatAddress({ ip: pod.ip, port: client.remotePort ?? 0 })}"` };
  if (plan.service) headers.forwarded += `;host=${plan.service.hostname}`;
  headers.baggage = `k8s.namespace.name=${pod.namespace},k8s.pod.name=${pod.name}`;
  let stream;
  try {
    stream = await ctx.pool.open({
      source: pod.identity,
      expected: [plan.identity],
      target: { ip: plan.target.ip, port: HBONE_PORT },
      authority: plan.authority,
      headers,
      dial: (t) => pod.net.connect(t),
      material: () => ctx.certs.get(pod.identity),
    });
  } catch (err) {
    const e = asMeshError(err, 'CONNECT');
    ctx.tracker.failed({ ...base, protocol: 'HBONE', mtls: true }, e.flag, e.message);
    client.resetAndDestroy();
    return;
  }
  // the connection ends through the pod's shared `ended` function, not this frame: nothing of
  // it (the plan, headers, request) stays with the connection, which may be open for hours
  const t = pod.connections.opened({ ...base, protocol: 'HBONE', mtls: true });
  // the bridge's own 'error' handler takes over (one listener, not an array of two, per socket)
  client.off('error', ignoreError);
  t.link = bridgeTo(client, stream, pod.connections.endedClientSocket, t, h2c.NGHTTP2_CANCEL);
}
