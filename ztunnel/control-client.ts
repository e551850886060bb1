import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { ControlClient, channelOptions, type SignResponse } from '../shared/control/protocol.js';
import type { MeshUpdate } from '../shared/model/types.js';
import type { Logger } from '../shared/telemetry/log.js';
import { SettableCertificateProvider, settableChannelCredentials } from '../shared/control/certificate-provider.js';

const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 15_000;

/** ztunnel's link to the control plane: the config stream (reconnecting with backoff) and certificate signing. */
export class ControlLink extends EventEmitter<{ update: [MeshUpdate]; connected: []; disconnected: [string] }> {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private call: grpc.ClientReadableStream<MeshUpdate> | null = null;
  private stopped = false;
  private backoff = BACKOFF_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  connected = false;
  /** roots the control plane's serving certificate is verified with, for each new connection */
  private readonly trust = new SettableCertificateProvider();

  constructor(address: string, rootsPem: string, private readonly node: string, private readonly token: string, private readonly log: Logger) {
    super();
    this.trust.setRoots([rootsPem]);
    const creds = settableChannelCredentials(this.trust);
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
    const call = this.client.watch({ node: this.node }, this.metadata()) as grpc.ClientReadableStream<MeshUpdate>;
    this.call = call;
    call.on('data', (u: MeshUpdate) => {
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

  /**
   * Trusts these roots for the control plane from now on (the bundle it sent: during a root
   * rotation its serving certificate moves to the new root, and the old one is dropped).
   */
  setRoots(rootsPem: readonly string[]): void {
    if (rootsPem.length > 0) this.trust.setRoots(rootsPem);
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

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.call?.cancel();
    this.client.close();
  }
}
