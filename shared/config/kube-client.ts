/**
 * Reaching a Kubernetes API server: finding the kubeconfig the way kubectl does, raw JSON
 * requests where the generated client would get in the way, and one readable error type.
 */
import http from 'node:http';
import https from 'node:https';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

/** Where the in-cluster ServiceAccount token lives (its presence means "running in a pod"). */
export const IN_CLUSTER_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** No kubeconfig anywhere kubectl would look, and not inside a pod. */
export class NoKubeconfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoKubeconfigError';
  }
}

/**
 * Loads a kubeconfig like kubectl: --kubeconfig, else $KUBECONFIG (":"-separated, merged), else
 * ~/.kube/config, else the in-cluster ServiceAccount. `context` switches the current context.
 */
export function loadKubeConfig(opts: { kubeconfig?: string; context?: string; inClusterTokenPath?: string } = {}): KubeConfig {
  const kc = new KubeConfig();
  const envFiles = (process.env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  const home = join(homedir(), '.kube', 'config');
  if (opts.kubeconfig) {
    if (!existsSync(opts.kubeconfig)) throw new NoKubeconfigError(`kubeconfig ${opts.kubeconfig}: no such file`);
    kc.loadFromFile(opts.kubeconfig);
  } else if (envFiles.length > 0) {
    const present = envFiles.filter((f) => existsSync(f));
    if (present.length === 0) throw new NoKubeconfigError(`KUBECONFIG names ${envFiles.join(', ')}, and none of them exists`);
    kc.loadFromFile(present[0]!);
    for (const f of present.slice(1)) {
      const more = new KubeConfig();
      more.loadFromFile(f);
      kc.mergeConfig(more, true);
    }
  } else if (existsSync(home)) {
    kc.loadFromFile(home);
  } else if (existsSync(opts.inClusterTokenPath ?? IN_CLUSTER_TOKEN)) {
    kc.loadFromCluster();
  } else {
    throw new NoKubeconfigError('no kubeconfig found: set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config');
  }
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) {
      const known = kc.getContexts().map((c) => c.name);
      throw new NoKubeconfigError(`context "${opts.context}" is not in the kubeconfig (contexts: ${known.join(', ') || 'none'})`);
    }
    kc.setCurrentContext(opts.context);
  }
  if (!kc.getCurrentCluster()) throw new NoKubeconfigError(`the kubeconfig's current context "${kc.getCurrentContext()}" names no cluster`);
  return kc;
}

/** The namespace of the current context, else "default" (kubectl's rule). */
export function contextNamespace(kc: KubeConfig): string {
  const ctx = kc.getContextObject(kc.getCurrentContext());
  return ctx?.namespace || 'default';
}

/** A failed API call, said the way a user reads it. */
export class KubeApiError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when the server was not reached */
    readonly status: number,
    /** Kubernetes Status reason (NotFound, AlreadyExists, Conflict, Expired, …) */
    readonly reason: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }

  get unreachable(): boolean {
    return this.status === 0;
  }
}

interface StatusBody {
  kind?: string;
  message?: string;
  reason?: string;
  code?: number;
}

function parseStatus(body: unknown): StatusBody | null {
  let v = body;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  return typeof v === 'object' && v !== null ? (v as StatusBody) : null;
}

const REASONS: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 410: 'Expired', 422: 'Invalid', 500: 'InternalError', 503: 'ServiceUnavailable' };

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'UND_ERR_SOCKET']);

/**
 * Turns whatever the client library threw (ApiException, node-fetch FetchError, a socket error)
 * into a KubeApiError; `server` names the API server in "cannot reach" messages.
 */
export function kubeError(err: unknown, server = 'the Kubernetes API server'): KubeApiError {
  if (err instanceof KubeApiError) return err;
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string; type?: string; cause?: { code?: unknown } };
  // ApiException carries `code`; the library's watch sets `statusCode` on a non-200 answer.
  const status = typeof e?.code === 'number' ? e.code : typeof e?.statusCode === 'number' ? e.statusCode : 0;
  if (status >= 100 && status < 600) {
    const s = parseStatus(e.body);
    const reason = s?.reason ?? REASONS[status] ?? '';
    const message = s?.message ?? (typeof e.body === 'string' && e.body !== '' ? e.body : `${e.message && e.message.length < 80 ? e.message : 'HTTP'} (${status})`);
    return new KubeApiError(message, status, reason);
  }
  const code = typeof e?.code === 'string' ? e.code : typeof e?.cause?.code === 'string' ? e.cause.code : '';
  const raw = e?.message ?? String(err);
  if (NETWORK_CODES.has(code) || e?.type === 'system' || /ECONNREFUSED|ECONNRESET|socket hang up|EHOSTUNREACH|ENOTFOUND|timed out/.test(raw)) {
    const why = /reason: (.*)$/.exec(raw)?.[1] ?? raw;
    return new KubeApiError(`cannot reach ${server} (${why})`, 0, 'Unreachable');
  }
  return new KubeApiError(raw, 0, 'Unknown');
}

/** Rejects with a KubeApiError (status 0) when the call takes longer than `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new KubeApiError(`${what}: no answer from the Kubernetes API server within ${Math.round(ms / 1000)}s`, 0, 'Timeout')), ms);
      }),
    ]);
  } finally {
    if (t) clearTimeout(t);
  }
}

/**
 * Raw JSON requests with the kubeconfig's credentials. Lists go through here rather than the
 * generated client: it would turn items into model classes (dates as Date objects, unknown fields
 * dropped), while the mesh reads objects exactly as the API server wrote them.
 */
export class KubeRest {
  constructor(private readonly kc: KubeConfig) {}

  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '(no server)';
  }

  /** Sends one request; resolves with the parsed body on 2xx, rejects with a KubeApiError otherwise. */
  async request<T = unknown>(method: string, path: string, opts: { query?: Record<string, string | undefined>; body?: unknown; contentType?: string; timeoutMs?: number } = {}): Promise<T> {
    const url = new URL(this.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const options: https.RequestOptions = { headers: {} };
    await this.kc.applyToHTTPSOptions(options);
    const payload = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    const headers: Record<string, string> = { accept: 'application/json' };
    for (const [k, v] of Object.entries((options.headers ?? {}) as Record<string, unknown>)) if (typeof v === 'string') headers[k] = v;
    if (payload !== undefined) {
      headers['content-type'] = opts.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    const mod = url.protocol === 'http:' ? http : https;
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(url, { method, agent: options.agent, auth: options.auth, headers, timeout: opts.timeoutMs ?? 60_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(kubeError(err, this.server)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve((text === '' ? {} : JSON.parse(text)) as T);
            } catch (err) {
              reject(new KubeApiError(`${method} ${path}: the API server answered with invalid JSON (${(err as Error).message})`, status, 'InvalidResponse'));
            }
            return;
          }
          reject(kubeError({ code: status, body: text }, this.server));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`timed out after ${Math.round((opts.timeoutMs ?? 60_000) / 1000)}s`)));
      req.on('error', (err) => reject(kubeError(err, this.server)));
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }
}
