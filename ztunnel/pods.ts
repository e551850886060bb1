import net from 'node:net';
import { HboneServer } from '../shared/hbone/server.js';
import { Identity } from '../shared/identity/spiffe.js';
import { PORTS } from '../shared/redirect/rules.js';
import type { PodAdd } from '../shared/nodeagent/protocol.js';
import { PodNetwork } from './pod-network.js';
import { handleOutbound } from './outbound.js';
import { handleInboundHbone, handleInboundPlain } from './inbound.js';
import { PodConnections } from './connections.js';
import type { LocalPodInfo, ProxyContext } from './context.js';

interface LocalPod {
  info: LocalPodInfo;
  outbound: net.Server;
  inboundPlain: net.Server;
  hbone: HboneServer;
}

/** The pods this ztunnel captures, each with its three listeners inside the pod's netns. */
export class PodProxies {
  private readonly pods = new Map<string, LocalPod>();
  private readonly adding = new Map<string, Promise<void>>();
  /** released pods whose connections are still open */
  private readonly releasing = new Set<LocalPodInfo>();

  constructor(private readonly ctx: ProxyContext) {
    ctx.certs.on('renewed', (identity, material) => {
      for (const p of this.pods.values()) if (p.info.identity === identity) p.hbone.setMaterial(material);
    });
  }

  /** Starts serving a pod (idempotent for the same uid and netns). Resolves once its listeners are up. */
  add(msg: PodAdd): Promise<void> {
    const existing = this.pods.get(msg.uid);
    if (existing && existing.info.net.netnsPath === msg.netns && existing.info.ip === msg.ip) return Promise.resolve();
    const pending = this.adding.get(msg.uid);
    if (pending) return pending;
    const p = (async () => {
      if (existing) await this.remove(msg.uid);
      await this.start(msg);
    })().finally(() => this.adding.delete(msg.uid));
    this.adding.set(msg.uid, p);
    return p;
  }

  private async start(msg: PodAdd): Promise<void> {
    const { ctx } = this;
    const identity = new Identity(ctx.trustDomain, msg.namespace, msg.serviceAccount).toString();
    ctx.certs.retain(identity);
    let podNet: PodNetwork | null = null;
    const servers: { close(): unknown }[] = [];
    let info: LocalPodInfo;
    try {
      const material = await ctx.certs.get(identity);
      podNet = PodNetwork.open(msg.netns);
      const connections = new PodConnections(ctx.tracker, () => this.finishRelease(info));
      const handled = (work: Promise<void>): void => connections.setUp(work);
      info = { uid: msg.uid, name: msg.name, namespace: msg.namespace, serviceAccount: msg.serviceAccount, ip: msg.ip, identity, net: podNet, connections };
      const hbone = new HboneServer(material, ctx.trustDomain, {
        connect: (req) => handled(handleInboundHbone(ctx, info, req)),
        rejected: (flag, reason, peer) => {
          ctx.metrics.rejected.inc({ reason: flag, listener: 'hbone' });
          ctx.log.warn({ pod: `${msg.namespace}/${msg.name}`, 'src.addr': peer, flags: flag, error: reason }, 'inbound HBONE refused');
        },
      });
      servers.push(hbone);
      await hbone.listenFd(podNet.listenFd(PORTS.inboundHbone));
      const outbound = await this.serve(podNet.listenFd(PORTS.outbound), (s) => handled(handleOutbound(ctx, info, s)));
      servers.push(outbound);
      const inboundPlain = await this.serve(podNet.listenFd(PORTS.inboundPlaintext), (s) => handled(handleInboundPlain(ctx, info, s)));
      servers.push(inboundPlain);
      this.pods.set(msg.uid, { info, outbound, inboundPlain, hbone });
      ctx.log.info({ pod: `${msg.namespace}/${msg.name}`, ip: msg.ip, identity, netns: msg.netns }, 'pod captured');
    } catch (err) {
      for (const s of servers) s.close();
      podNet?.close();
      ctx.certs.release(identity);
      throw err;
    }
  }

  private serve(fd: number, onConnection: (s: net.Socket) => void): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onConnection);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.ctx.log.error({ err: err.message }, 'listener error'));
        resolve(server);
      });
    });
  }

  /**
   * Stops capturing a pod: listeners close, open connections carry on until they end (the
   * pod's netns and certificate are kept for them until the last one has).
   */
  async remove(uid: string): Promise<boolean> {
    await this.adding.get(uid)?.catch(() => undefined);
    const p = this.pods.get(uid);
    if (!p) return false;
    this.pods.delete(uid);
    // The node agent removes the pod's redirects before it releases the pod, but connections
    // redirected just before may still wait in a listener's backlog, and closing the listener
    // would reset them. The listener is readable in the same poll as this request: let that
    // poll phase accept them first.
    await new Promise<void>((resolve) => setImmediate(resolve));
    p.outbound.close();
    p.inboundPlain.close();
    void p.hbone.close();
    this.releasing.add(p.info);
    p.info.connections.release();
    this.ctx.log.info({ pod: `${p.info.namespace}/${p.info.name}`, connections: p.info.connections.count }, 'pod released');
    return true;
  }

  /** Closes a released pod's netns and lets its certificate go, once no connection needs them. */
  private finishRelease(info: LocalPodInfo): void {
    this.releasing.delete(info);
    info.net.close();
    this.ctx.certs.release(info.identity);
  }

  /** Removes every pod not in `keep` (after an agent's snapshot). */
  async retainOnly(keep: ReadonlySet<string>): Promise<string[]> {
    const gone = [...this.pods.keys()].filter((uid) => !keep.has(uid));
    for (const uid of gone) await this.remove(uid);
    return gone;
  }

  /** Connections open or being set up, of captured pods and of released ones. */
  connections(): number {
    let n = 0;
    for (const p of this.pods.values()) n += p.info.connections.count;
    for (const info of this.releasing) n += info.connections.count;
    return n;
  }

  list(): LocalPodInfo[] {
    return [...this.pods.values()].map((p) => p.info);
  }

  async close(): Promise<void> {
    for (const uid of [...this.pods.keys()]) await this.remove(uid);
  }
}
