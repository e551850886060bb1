import { createHash } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { AuthenticationV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { NodeAuthenticator, WaypointCaller } from './auth.js';
import { kubeError, withTimeout } from '../shared/config/kube-client.js';
import type { Logger } from '../shared/telemetry/log.js';

/** Token extras the API server puts on pod-bound ServiceAccount tokens. */
export const EXTRA_NODE_NAME = 'authentication.kubernetes.io/node-name';
export const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
export const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';

/** The part of a TokenReview's status the authenticator reads. */
export interface ReviewResult {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** What the authenticator needs from the API server (a seam for tests). */
export interface TokenReviewApi {
  review(token: string, audiences: string[]): Promise<ReviewResult>;
  /** the node a pod is scheduled on, and its uid; null when there is no such pod */
  pod(namespace: string, name: string): Promise<{ nodeName: string | null; uid: string } | null>;
}

/** TokenReview and pod reads through @kubernetes/client-node. */
export function kubeTokenReviewApi(kc: KubeConfig, timeoutMs = 10_000): TokenReviewApi {
  const auth = kc.makeApiClient(AuthenticationV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const server = kc.getCurrentCluster()?.server;
  return {
    async review(token, audiences) {
      try {
        const r = await withTimeout(auth.createTokenReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences } } }), timeoutMs, 'TokenReview');
        return (r.status ?? {}) as ReviewResult;
      } catch (err) {
        throw kubeError(err, server);
      }
    },
    async pod(namespace, name) {
      try {
        const p = await withTimeout(core.readNamespacedPod({ namespace, name }), timeoutMs, 'reading the caller pod');
        return { nodeName: p.spec?.nodeName ?? null, uid: p.metadata?.uid ?? '' };
      } catch (err) {
        const e = kubeError(err, server);
        if (e.status === 404) return null;
        throw e;
      }
    },
  };
}

export interface TokenReviewOptions {
  /** audience the ztunnel's projected token is minted for */
  audience: string;
  /** the only ServiceAccount allowed to speak for a node */
  serviceAccount?: { namespace: string; name: string };
  /** how long an accepted token is trusted without asking again (capped by the token's own expiry) */
  cacheTtlMs?: number;
  /** how long a refused token is refused without asking again */
  refusedTtlMs?: number;
  maxEntries?: number;
  log?: Logger;
  now?: () => number;
}

/** A refused credential: the message says why, without echoing the token. */
export class AuthenticationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthenticationError';
  }
}

interface Entry {
  node: string | null;
  /** a ServiceAccount other than ztunnel's: a waypoint, if a waypoint pod runs as it (the control plane checks) */
  waypoint?: WaypointCaller | null;
  refusal: string | null;
  expires: number;
}

/** The `exp` claim of a JWT, read without verifying it (only to bound how long a review is cached). */
function jwtExpiryMs(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Authenticates ztunnels by their projected ServiceAccount token (`authorization: Bearer …`):
 * a TokenReview for the configured audience must accept it, it must belong to the ztunnel
 * ServiceAccount, and the node comes from the token's node-name extra — or, on clusters that do
 * not put it there, from the spec.nodeName of the pod the token is bound to (same uid). Answers
 * are cached briefly; API server failures are not cached.
 */
export class TokenReviewAuthenticator implements NodeAuthenticator {
  private readonly cache = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Entry>>();
  private readonly sa: { namespace: string; name: string };
  private readonly now: () => number;

  constructor(private readonly api: TokenReviewApi, private readonly opts: TokenReviewOptions) {
    this.sa = opts.serviceAccount ?? { namespace: 'ambit-system', name: 'ztunnel' };
    this.now = opts.now ?? Date.now;
  }

  static fromKubeConfig(kc: KubeConfig, opts: TokenReviewOptions): TokenReviewAuthenticator {
    return new TokenReviewAuthenticator(kubeTokenReviewApi(kc), opts);
  }

  get username(): string {
    return `system:serviceaccount:${this.sa.namespace}:${this.sa.name}`;
  }

  private async entry(metadata: Metadata, what: string): Promise<Entry> {
    const header = metadata.get('authorization')[0];
    const token = typeof header === 'string' && /^Bearer\s+/i.test(header) ? header.replace(/^Bearer\s+/i, '').trim() : '';
    if (!token) throw new AuthenticationError(`missing bearer token (the ${what} ServiceAccount token)`);
    const key = createHash('sha256').update(token).digest('hex');
    const now = this.now();
    let entry = this.cache.get(key);
    if (!entry || entry.expires <= now) {
      this.cache.delete(key);
      let pending = this.inflight.get(key);
      if (!pending) {
        pending = this.review(token).finally(() => this.inflight.delete(key));
        this.inflight.set(key, pending);
      }
      entry = await pending;
    }
    if (entry.refusal !== null) throw new AuthenticationError(entry.refusal);
    return entry;
  }

  async authenticate(metadata: Metadata): Promise<string> {
    const e = await this.entry(metadata, 'ztunnel');
    if (e.node === null) throw new AuthenticationError(`${e.waypoint ? `system:serviceaccount:${e.waypoint.namespace}:${e.waypoint.serviceAccount}` : 'the caller'} is not the ztunnel ServiceAccount (${this.username})`);
    return e.node;
  }

  /** A waypoint's projected token: any ServiceAccount but ztunnel's; the control plane then checks a waypoint pod runs as it. */
  async authenticateWaypoint(metadata: Metadata): Promise<WaypointCaller> {
    const e = await this.entry(metadata, 'waypoint');
    if (!e.waypoint) throw new AuthenticationError('the ztunnel ServiceAccount cannot speak for a waypoint');
    return e.waypoint;
  }

  private remember(key: string, e: Entry): Entry {
    if (this.cache.size >= (this.opts.maxEntries ?? 10_000)) {
      // drop the oldest insertions first (Map keeps insertion order)
      for (const k of this.cache.keys()) {
        this.cache.delete(k);
        if (this.cache.size < (this.opts.maxEntries ?? 10_000) * 0.9) break;
      }
    }
    this.cache.set(key, e);
    return e;
  }

  private async review(token: string): Promise<Entry> {
    const key = createHash('sha256').update(token).digest('hex');
    const now = this.now();
    const refuse = (why: string): Entry => {
      this.opts.log?.warn({ reason: why }, 'ztunnel credential refused');
      return this.remember(key, { node: null, refusal: why, expires: now + (this.opts.refusedTtlMs ?? 5_000) });
    };
    // API server trouble is thrown, not cached: the next call asks again.
    const status = await this.api.review(token, [this.opts.audience]);
    if (!status.authenticated) return refuse(`token refused by the API server: ${status.error || 'not authenticated'}`);
    // An API server that ignored the requested audience would answer with none: refuse rather than assume.
    if (!status.audiences?.includes(this.opts.audience)) {
      return refuse(`token is not meant for audience "${this.opts.audience}"`);
    }
    const username = status.user?.username ?? '';
    const exp = jwtExpiryMs(token);
    const ttl = this.opts.cacheTtlMs ?? 60_000;
    if (username !== this.username) {
      const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(username);
      if (!m) return refuse(`${username || 'the caller'} is not the ztunnel ServiceAccount (${this.username}) nor another ServiceAccount`);
      return this.remember(key, { node: null, waypoint: { namespace: m[1]!, serviceAccount: m[2]! }, refusal: null, expires: Math.min(now + ttl, exp ?? Infinity) });
    }
    const extra = status.user?.extra ?? {};
    let node = extra[EXTRA_NODE_NAME]?.[0] ?? '';
    if (!node) {
      const podName = extra[EXTRA_POD_NAME]?.[0];
      if (!podName) return refuse('token is not bound to a pod, so it names no node (use a projected ServiceAccount token)');
      const pod = await this.api.pod(this.sa.namespace, podName);
      if (!pod) return refuse(`the pod ${this.sa.namespace}/${podName} the token is bound to no longer exists`);
      const uid = extra[EXTRA_POD_UID]?.[0];
      if (uid && pod.uid && uid !== pod.uid) return refuse(`the pod ${this.sa.namespace}/${podName} the token was issued to has been replaced`);
      if (!pod.nodeName) return refuse(`the pod ${this.sa.namespace}/${podName} is not scheduled on a node`);
      node = pod.nodeName;
    }
    return this.remember(key, { node, refusal: null, expires: Math.min(now + ttl, exp ?? Infinity) });
  }
}
