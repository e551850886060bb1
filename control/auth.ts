import { readFile, stat } from 'node:fs/promises';
import { timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';

/** A waypoint's credentials name its ServiceAccount; the control plane checks a waypoint runs as it. */
export interface WaypointCaller {
  namespace: string;
  serviceAccount: string;
}

/** Who is calling: the node a ztunnel runs on, or (when supported) a waypoint's ServiceAccount. */
export interface NodeAuthenticator {
  authenticate(metadata: Metadata): Promise<string>;
  authenticateWaypoint?(metadata: Metadata): Promise<WaypointCaller>;
}

type Principal = { node: string } | { waypoint: WaypointCaller };

function bearer(metadata: Metadata): string {
  const header = metadata.get('authorization')[0];
  return typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : '';
}

/** How often at most the token file is read again when an unknown token arrives. */
const RELOAD_MIN_MS = 1000;

/**
 * Bearer tokens from a JSON file, local mode's stand-in for ServiceAccount tokens:
 * `{"<token>": "<node>"}` for ztunnels and `{"<token>": {"waypoint": "<ns>/<serviceaccount>"}}`
 * for waypoints. The file is read again (at most once a second) when an unknown token arrives,
 * so waypoints deployed later can be given a token without restarting the control plane.
 */
export class TokenFileAuthenticator implements NodeAuthenticator {
  private loadedMtime = 0;
  private lastReload = 0;

  private constructor(private readonly path: string, private tokens: Map<string, Principal>) {}

  static parse(text: string, path: string): Map<string, Principal> {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new Error(`${path}: not JSON: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${path}: expected an object of token → node`);
    const m = new Map<string, Principal>();
    for (const [t, v] of Object.entries(raw)) {
      if (t.length < 16) continue;
      if (typeof v === 'string') m.set(t, { node: v });
      else if (typeof v === 'object' && v !== null && typeof (v as { waypoint?: unknown }).waypoint === 'string') {
        const [namespace, serviceAccount, extra] = (v as { waypoint: string }).waypoint.split('/');
        if (namespace && serviceAccount && extra === undefined) m.set(t, { waypoint: { namespace, serviceAccount } });
      }
    }
    return m;
  }

  static async load(path: string): Promise<TokenFileAuthenticator> {
    const a = new TokenFileAuthenticator(path, TokenFileAuthenticator.parse(await readFile(path, 'utf8'), path));
    a.loadedMtime = (await stat(path)).mtimeMs;
    return a;
  }

  private find(token: string): Principal | undefined {
    const given = Buffer.from(token);
    let found: Principal | undefined;
    for (const [t, p] of this.tokens) {
      const want = Buffer.from(t);
      if (want.length === given.length && timingSafeEqual(want, given)) found = p;
    }
    return found;
  }

  private reloading: Promise<void> | null = null;

  private async lookup(metadata: Metadata): Promise<Principal | undefined> {
    const token = bearer(metadata);
    if (!token) return undefined;
    const found = this.find(token);
    if (found) return found;
    // concurrent misses share one read; a reload at most once a second
    if (!this.reloading && Date.now() - this.lastReload >= RELOAD_MIN_MS) {
      this.lastReload = Date.now();
      this.reloading = this.reload().finally(() => {
        this.reloading = null;
      });
    }
    if (this.reloading) await this.reloading;
    return this.find(token);
  }

  private async reload(): Promise<void> {
    try {
      const st = await stat(this.path);
      if (st.mtimeMs !== this.loadedMtime) {
        this.tokens = TokenFileAuthenticator.parse(await readFile(this.path, 'utf8'), this.path);
        this.loadedMtime = st.mtimeMs;
      }
    } catch {
      // a broken or missing file keeps the tokens already known
    }
  }

  async authenticate(metadata: Metadata): Promise<string> {
    const p = await this.lookup(metadata);
    if (p && 'node' in p) return p.node;
    throw new Error(p ? 'a waypoint token cannot speak for a node' : 'unknown or missing node token');
  }

  async authenticateWaypoint(metadata: Metadata): Promise<WaypointCaller> {
    const p = await this.lookup(metadata);
    if (p && 'waypoint' in p) return p.waypoint;
    throw new Error(p ? 'a node token cannot speak for a waypoint' : 'unknown or missing waypoint token');
  }
}
