/**
 * A stand-in ztunnel for the control plane bench: one Watch stream over its own gRPC+TLS
 * connection (as separate ztunnels have), with the client, channel options, token metadata and
 * message decoding of ztunnel's ControlLink (ztunnel/control-client.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';
import { ControlClient, channelOptions } from '../../shared/control/protocol.js';
import type { MeshUpdate } from '../../shared/model/types.js';

export interface SnapshotReceipt {
  /** from the Watch call until the snapshot message was received and decoded */
  ms: number;
  version: number;
  workloads: number;
  services: number;
}

export class BenchWatcher {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private call: grpc.ClientReadableStream<MeshUpdate> | null = null;
  /** arrival time (performance.now()) of each delta, by version */
  readonly arrivals = new Map<number, number>();
  private waiters: Array<() => void> = [];
  error: string | null = null;

  constructor(address: string, rootsPem: string, readonly node: string, private readonly token: string) {
    // each watcher its own connection, like ztunnels on separate nodes (grpc-js would otherwise share one)
    const creds = grpc.credentials.createSsl(Buffer.from(rootsPem));
    this.client = new ControlClient(address, creds, { ...channelOptions, 'grpc.use_local_subchannel_pool': 1 }) as unknown as grpc.Client &
      Record<string, (...args: unknown[]) => unknown>;
  }

  /** Opens the stream; resolves when the snapshot has arrived. */
  watch(timeoutMs: number): Promise<SnapshotReceipt> {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${this.token}`);
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const timer = setTimeout(() => reject(new Error(`${this.node}: no snapshot within ${timeoutMs} ms`)), timeoutMs);
      const call = this.client.watch({ node: this.node }, md) as grpc.ClientReadableStream<MeshUpdate>;
      this.call = call;
      let first = true;
      call.on('data', (u: MeshUpdate) => {
        const at = performance.now();
        if (first) {
          first = false;
          clearTimeout(timer);
          if (u.type !== 'snapshot') reject(new Error(`${this.node}: first message is a ${u.type}`));
          else resolve({ ms: at - t0, version: u.version, workloads: u.workloads.length, services: u.services.length });
          return;
        }
        this.arrivals.set(u.version, at);
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
      });
      call.on('error', (err: grpc.ServiceError) => {
        if (err.code === grpc.status.CANCELLED) return;
        this.error = err.details || err.message;
        clearTimeout(timer);
        reject(new Error(`${this.node}: ${this.error}`));
      });
    });
  }

  /** Resolves when a delta of at least `version` has arrived (or after timeoutMs, false). */
  async waitFor(version: number, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!this.has(version)) {
      const left = deadline - performance.now();
      if (left <= 0 || this.error) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  private has(version: number): boolean {
    for (const v of this.arrivals.keys()) if (v >= version) return true;
    return false;
  }

  /** When the first delta with at least `version` arrived. */
  arrivalOf(version: number): number | null {
    let best: number | null = null;
    for (const [v, at] of this.arrivals) if (v >= version && (best === null || at < best)) best = at;
    return best;
  }

  close(): void {
    this.call?.cancel();
    this.client.close();
  }
}
