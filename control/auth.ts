import { readFile } from 'node:fs/promises';
import { timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';

/** Who is calling: the node a ztunnel runs on. */
export interface NodeAuthenticator {
  authenticate(metadata: Metadata): Promise<string>;
}

/** Bearer tokens per node, from a JSON file {"<token>": "<node>"} (local mode's stand-in for ServiceAccount tokens). */
export class TokenFileAuthenticator implements NodeAuthenticator {
  private constructor(private readonly tokens: Map<string, string>) {}

  static async load(path: string): Promise<TokenFileAuthenticator> {
    const raw: unknown = JSON.parse(await readFile(path, 'utf8'));
    if (typeof raw !== 'object' || raw === null) throw new Error(`${path}: expected an object of token → node`);
    const m = new Map<string, string>();
    for (const [t, n] of Object.entries(raw)) if (typeof n === 'string' && t.length >= 16) m.set(t, n);
    return new TokenFileAuthenticator(m);
  }

  async authenticate(metadata: Metadata): Promise<string> {
    const header = metadata.get('authorization')[0];
    const token = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : '';
    const given = Buffer.from(token);
    for (const [t, node] of this.tokens) {
      const want = Buffer.from(t);
      if (want.length === given.length && timingSafeEqual(want, given)) return node;
    }
    throw new Error('unknown or missing node token');
  }
}
