import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { ControlClient, channelOptions, type NodeReport, type ReportResponse, type SignResponse } from '../shared/control/protocol.js';
import type { MeshUpdate } from '../shared/model/types.js';
import type { Logger } from '../shared/telemetry/log.js';
import { SettableCertificateProvider, settableChannelCredentials } from '../shared/control/certificate-provider.js';

const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 15_000;

/** Where the node's bearer token for the control plane comes from. */
export interface TokenSource {
  /** The token now; `fresh` skips any cache (the control plane refused the last one). Rejects with a message saying why there is none. */
  read(fresh?: boolean): Promise<string>;
}

/**
 * The token in a file, read when a call needs it and read again only when the file changed (or
 * when asked for a fresh one): in a cluster it is a projected ServiceAccount token, which the
 * kubelet rotates by swapping the file under the mount.
 */
export class TokenFile implements TokenSource {
  private cached: { signature: string; token: string } | null = null;

  constructor(readonly path: string) {}

  async read(fresh = false): Promise<string> {
    let signature: string;
    let text: string;
    try {
      // stat before reading: a rotation in between changes the signature, so the next call reads again
      const st = await stat(this.path, { bigint: true });
      signature = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      if (!fresh && this.cached?.signature === signature) return this.cached.token;
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new Error(e.code === 'ENOENT' ? `token file ${this.path} does not exist` : `token file ${this.path}: ${e.message}`);
    }
    const token = text.trim();
    if (token === '') throw new Error(`token file ${this.path} is empty`);
    this.cached = { signature, token };
    return token;
  }
}

/**
 * A link to the control plane: the config stream (reconnecting with backoff) and certificate
 * signing. ztunnel's stream is Watch (mesh updates for its node); a waypoint's is WatchWaypoint.
 */
export class ControlLink<U = MeshUpdate> extends EventEmitter<{ update: [U]; connected: []; disconnected: [string] }> {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private readonly tokens: TokenSource;
  private call: grpc.ClientReadableStream<U> | null = null;
  /** which stream to open: method of the Control service and its request */
  stream: { method: 'watch' | 'watchWaypoint'; request: unknown } = { method: 'watch', request: null };
  private stopped = false;
  private backoff = BACKOFF_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  /** the control plane refused the token: read the file again, whatever its signature says */
  private tokenRefused = false;
  connected = false;
  /** roots the control plane's serving certificate is verified with, for each new connection */
  private readonly trust = new SettableCertificateProvider();

  /** `token`: the token itself, or where to read it for every call (TokenFile). */
  constructor(address: string, rootsPem: string, private readonly node: string, token: string | TokenSource, private readonly log: Logger) {
    super();
    this.tokens = typeof token === 'string' ? { read: () => Promise.resolve(token) } : token;
    this.trust.setRoots([rootsPem]);
    const creds = settableChannelCredentials(this.trust);
    this.client = new ControlClient(address, creds, channelOptions) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  }

  private metadata(token: string): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    return md;
  }

  /** Starts the config stream; updates arrive as 'update' events. */
  start(): void {
    if (this.stopped) return;
    const fresh = this.tokenRefused;
    this.tokenRefused = false;
    this.tokens.read(fresh).then(
      (token) => this.open(token),
      (err: Error) => {
        this.log.error({ err: err.message }, 'no token for the control plane');
        this.retryLater(err.message);
      },
    );
  }

  private open(token: string): void {
    if (this.stopped) return;
    const { method, request } = this.stream;
    const call = this.client[method]!(request ?? { node: this.node }, this.metadata(token)) as grpc.ClientReadableStream<U>;
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
      this.retryLater(reason);
    };
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.UNAUTHENTICATED) this.tokenRefused = true;
      retry(err.details || err.message);
    });
    call.on('end', () => retry('stream ended'));
  }

  /**
   * Trusts these roots for the control plane from now on (the bundle it sent: during a root
   * rotation its serving certificate moves to the new root, and the old one is dropped).
   */
  setRoots(rootsPem: readonly string[]): void {
    if (rootsPem.length > 0) this.trust.setRoots(rootsPem);
  }

  private retryLater(reason: string): void {
    if (this.stopped) return;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.log.warn({ reason, retryInMs: delay }, 'control plane stream lost; serving the last known config');
    this.retryTimer = setTimeout(() => this.start(), delay * (0.8 + Math.random() * 0.4));
  }

  /** Asks the CA to sign a CSR for an identity; a refused token is read again and tried once more if it changed. */
  async sign(identity: string, csrPem: string, timeoutMs = 10_000): Promise<SignResponse> {
    const fail = (message: string): Error => new Error(`certificate for ${identity}: ${message}`);
    const token = await this.tokens.read().catch((err: Error) => Promise.reject(fail(err.message)));
    try {
      return await this.signWith(token, identity, csrPem, timeoutMs);
    } catch (err) {
      const e = err as grpc.ServiceError;
      if (e.code !== grpc.status.UNAUTHENTICATED) throw fail(e.details || e.message);
      let fresh: string;
      try {
        fresh = await this.tokens.read(true);
      } catch (readErr) {
        throw fail(`${e.details || e.message} (and ${(readErr as Error).message})`);
      }
      if (fresh === token) throw fail(e.details || e.message);
      return this.signWith(fresh, identity, csrPem, timeoutMs).catch((e2: grpc.ServiceError) => Promise.reject(fail(e2.details || e2.message)));
    }
  }

  private signWith(token: string, identity: string, csrPem: string, timeoutMs: number): Promise<SignResponse> {
    return new Promise((resolve, reject) => {
      this.client.sign({ identity, csrPem }, this.metadata(token), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: SignResponse) => {
        if (err) reject(err);
        else resolve(res);
      });
    });
  }

  /** Sends this node's report for the dashboard; rejects with the gRPC status code in `code`. */
  async report(report: NodeReport, timeoutMs = 5_000): Promise<ReportResponse> {
    const token = await this.tokens.read();
    return new Promise((resolve, reject) => {
      this.client.report(report, this.metadata(token), { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: ReportResponse) => {
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
