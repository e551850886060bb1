import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { ControlClient, channelOptions, type NodeReport, type ReportResponse, type SignResponse } from '../shared/control/protocol.js';
import type { MeshUpdate } from '../shared/model/types.js';
import type { Logger } from '../shared/telemetry/log.js';

const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 15_000;

/**
 * A link to the control plane: the config stream (reconnecting with backoff) and certificate
 * signing. ztunnel's stream is Watch (mesh updates for its node); a waypoint's is WatchWaypoint.
 */
export class ControlLink<U = MeshUpdate> extends EventEmitter<{ update: [U]; connected: []; disconnected: [string] }> {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private call: grpc.ClientReadableStream<U> | null = null;
  /** which stream to open: method of the Control service and its request */
  stream: { method: 'watch' | 'watchWaypoint'; request: unknown } = { method: 'watch', request: null };
  private stopped = false;
  private backoff = BACKOFF_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  connected = false;

  constructor(address: string, rootsPem: string, private readonly node: string, private readonly token: string, private readonly log: Logger) {
    super();
    const creds = grpc.credentials.createSsl(Buffer.from(rootsPem));
    this.client = new ControlClient(address, creds, channelOptions) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  /** Starts the config stream; updates arrive as 'update' events. */
  start(): void {
    if (this.stopped) return;
    const { method, request } = this.stream;
    const call = this.client[method]!(request ?? { node: this.node }, this.metadata()) as grpc.ClientReadableStream<U>;
    this.call = call;
    call.on('data', (u: U) => {
      if (!this.connected) {
        this.connected = true;
        this.backoff = BACKOFF_MIN_MS;
        this.emit('connected');
      }
      this.emit('update', u);
    });
    const retry = (reason: string): void => {
      if (this.call !== call) return;
      this.call = null;
      if (this.connected) this.emit('disconnected', reason);
      this.connected = false;
      if (this.stopped) return;
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.log.warn({ reason, retryInMs: delay }, 'control plane stream lost; serving the last known config');
      this.retryTimer = setTimeout(() => this.start(), delay * (0.8 + Math.random() * 0.4));
    };
    call.on('error', (err: grpc.ServiceError) => retry(err.details || err.message));
    call.on('end', () => retry('stream ended'));
  }

  /** Asks the CA to sign a CSR for an identity. */
  sign(identity: string, csrPem: string, timeoutMs = 10_000): Promise<SignResponse> {
    return new Promise((resolve, reject) => {
      this.client.sign({ identity, csrPem }, this.metadata(), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: SignResponse) => {
        if (err) reject(new Error(`certificate for ${identity}: ${err.details || err.message}`));
        else resolve(res);
      });
    });
  }

  /** Sends this node's report for the dashboard; rejects with the gRPC status code in `code`. */
  report(report: NodeReport, timeoutMs = 5_000): Promise<ReportResponse> {
    return new Promise((resolve, reject) => {
      this.client.report(report, this.metadata(), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: ReportResponse) => {
        if (err) reject(Object.assign(new Error(`node report: ${err.details || err.message}`), { code: err.code }));
        else resolve(res);
      });
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.client.close();
  }
}
