import net from 'node:net';
import { rm } from 'node:fs/promises';
import { checkAgentMessage, encodeFrame, FrameDecoder, type AgentAck } from '../shared/nodeagent/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';
import type { PodProxies } from './pods.js';

/** ztunnel's end of the node-agent socket: pods to capture arrive here, each acknowledged. */
export class NodeAgentServer {
  private server: net.Server | null = null;

  constructor(private readonly path: string, private readonly pods: PodProxies, private readonly log: Logger) {}

  async start(): Promise<void> {
    await rm(this.path, { force: true });
    const server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    this.server = server;
  }

  private serve(sock: net.Socket): void {
    const decoder = new FrameDecoder();
    const seen = new Set<string>();
    // messages of one connection are handled in order
    let chain = Promise.resolve();
    const reply = (ack: AgentAck): void => {
      if (!sock.destroyed) sock.write(encodeFrame(ack));
    };
    sock.on('error', () => undefined);
    sock.on('data', (chunk) => {
      let frames: unknown[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'node-agent message refused; closing that connection');
        sock.destroy();
        return;
      }
      for (const f of frames) {
        const msg = checkAgentMessage(f);
        if (typeof msg === 'string') {
          this.log.warn({ reason: msg }, 'node-agent message refused');
          const id = (f as { id?: unknown } | null)?.id;
          reply({ type: 'ack', id: typeof id === 'number' ? id : -1, ok: false, error: msg });
          continue;
        }
        chain = chain.then(async () => {
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

  close(): void {
    this.server?.close();
  }
}
