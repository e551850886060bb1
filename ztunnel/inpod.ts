import net from 'node:net';
import { statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { checkAgentMessage, encodeFrame, FrameDecoder, type AgentAck } from '../shared/nodeagent/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';
import type { PodProxies } from './pods.js';
import type { ZtunnelMetrics } from './metrics.js';

/** Malformed messages one connection may send before it is closed (a broken or hostile agent). */
const MAX_REFUSED = 100;
/** Longest error text sent back in an ack (frames are capped at 64 KiB). */
const MAX_ACK_ERROR = 1024;

/** ztunnel's end of the node-agent socket: pods to capture arrive here, each acknowledged. */
export class NodeAgentServer {
  private server: net.Server | null = null;
  /** the socket file this server made (a successor replaces it with its own) */
  private inode = -1;
  private readonly connections = new Set<net.Socket>();
  private draining = false;

  constructor(private readonly path: string, private readonly pods: PodProxies, private readonly log: Logger, private readonly metrics?: ZtunnelMetrics) {}

  /** Counts a refused message or connection in ambit_ztunnel_rejected_total{listener="nodeagent"}. */
  private countRefusal(): void {
    this.metrics?.rejected.inc({ reason: 'BAD_REQUEST', listener: 'nodeagent' });
  }

  async start(): Promise<void> {
    await rm(this.path, { force: true });
    const server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    this.server = server;
    this.inode = statSync(this.path).ino;
  }

  private serve(sock: net.Socket): void {
    if (this.draining) {
      sock.destroy();
      return;
    }
    this.connections.add(sock);
    sock.once('close', () => this.connections.delete(sock));
    const decoder = new FrameDecoder();
    const seen = new Set<string>();
    // messages of one connection are handled in order
    let chain = Promise.resolve();
    let refused = 0;
    let waitingForDrain = false;
    const reply = (ack: AgentAck): void => {
      if (sock.destroyed) return;
      const error = ack.error && ack.error.length > MAX_ACK_ERROR ? `${ack.error.slice(0, MAX_ACK_ERROR)}…` : ack.error;
      // an agent that does not read its acks is not read either: ztunnel's memory stays bounded
      if (!sock.write(encodeFrame(error === undefined ? ack : { ...ack, error })) && !waitingForDrain) {
        waitingForDrain = true;
        sock.pause();
        sock.once('drain', () => {
          waitingForDrain = false;
          sock.resume();
        });
      }
    };
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (decoder.pending > 0) {
        this.countRefusal();
        this.log.warn({ bytes: decoder.pending }, 'node-agent connection ended in the middle of a message');
      }
    });
    sock.on('data', (chunk) => {
      let frames: unknown[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.countRefusal();
        this.log.warn({ err: (err as Error).message }, 'node-agent message refused; closing that connection');
        sock.destroy();
        return;
      }
      for (const f of frames) {
        if (sock.destroyed) return;
        const msg = checkAgentMessage(f);
        if (typeof msg === 'string') {
          this.countRefusal();
          if (++refused > MAX_REFUSED) {
            this.log.warn({ refused }, 'node-agent sent too many malformed messages; closing that connection');
            sock.destroy();
            return;
          }
          this.log.warn({ reason: msg }, 'node-agent message refused');
          const id = (f as { id?: unknown } | null)?.id;
          reply({ type: 'ack', id: typeof id === 'number' ? id : -1, ok: false, error: msg });
          continue;
        }
        chain = chain.then(async () => {
          // a draining ztunnel takes no more pods, not even those already asked for
          if (this.draining) return;
          try {
            if (msg.type === 'add') {
              seen.add(msg.uid);
              await this.pods.add(msg);
            } else if (msg.type === 'del') {
              seen.delete(msg.uid);
              await this.pods.remove(msg.uid);
            } else {
              const gone = await this.pods.retainOnly(seen);
              if (gone.length) this.log.info({ pods: gone }, 'dropped pods the node agent no longer lists');
            }
            reply({ type: 'ack', id: msg.id, ok: true });
          } catch (err) {
            this.log.error({ type: msg.type, err: (err as Error).message }, 'node-agent request failed');
            reply({ type: 'ack', id: msg.id, ok: false, error: (err as Error).message });
          }
        });
      }
    });
  }

  /**
   * Lets the node agent go to the next ztunnel: its connection is dropped and no pod is taken
   * any more. The socket file is removed only while it is still this server's: a successor
   * that started meanwhile has replaced it with its own, which closing would delete (the
   * listener removes its file by name).
   */
  drain(): void {
    this.draining = true;
    for (const sock of this.connections) sock.destroy();
    let ours = false;
    try {
      ours = statSync(this.path).ino === this.inode;
    } catch {
      /* gone */
    }
    // the successor's file is left alone: this listener stays, refusing, until the process exits
    if (ours) this.server?.close();
    else this.server?.unref();
  }
}
