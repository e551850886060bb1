import { EventEmitter } from 'node:events';
import { generateKeyAndCsr, describeCertificate } from '../shared/identity/csr.js';
import type { TlsMaterial } from '../shared/hbone/tls.js';
import type { Logger } from '../shared/telemetry/log.js';
import { Identity } from '../shared/identity/spiffe.js';
import { rootOfChain, sameRoots, summarizeRoot } from '../shared/identity/trust.js';

/** Signs a CSR for an identity (the control plane's CA). */
export type Signer = (identity: string, csrPem: string) => Promise<{ certPem: string; chainPem: string[]; rootsPem: string[] }>;

export interface CertificateInfo {
  identity: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  state: 'available' | 'pending' | 'failed';
  error?: string;
  /** serial of the trusted root the certificate chains to (during a root rotation: old or new) */
  root?: string;
}

interface Entry {
  material: TlsMaterial | null;
  /** leaf then intermediates, PEM */
  chain: string[];
  info: CertificateInfo;
  pending: Promise<TlsMaterial> | null;
  renew: NodeJS.Timeout | null;
  users: number;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

/**
 * Workload certificates this ztunnel holds, one per identity of its local pods. The key
 * never leaves ztunnel; certificates are renewed at half life, and holders are told so they
 * swap contexts for new connections while open ones keep going. The roots peers are verified
 * with are the bundle the control plane last sent (it changes during a root rotation, without
 * waiting for a renewal); before the first one, those of the signing response.
 */
export class CertificateStore extends EventEmitter<{ renewed: [string, TlsMaterial] }> {
  private readonly entries = new Map<string, Entry>();
  private roots: string[] | null = null;

  constructor(private readonly sign: Signer, private readonly log: Logger) {
    super();
  }

  /** The material for an identity, fetching it on first use. */
  get(identity: string): Promise<TlsMaterial> {
    const e = this.entry(identity);
    if (e.material && e.info.notAfter.getTime() > Date.now()) return Promise.resolve(e.material);
    return e.pending ?? this.fetch(identity, e);
  }

  /** Keeps an identity's certificate warm while a local pod uses it. */
  retain(identity: string): void {
    this.entry(identity).users++;
  }

  /** Drops an identity once no local pod uses it any more. */
  release(identity: string): void {
    const e = this.entries.get(identity);
    if (!e) return;
    if (--e.users > 0) return;
    if (e.renew) clearTimeout(e.renew);
    this.entries.delete(identity);
  }

  private entry(identity: string): Entry {
    let e = this.entries.get(identity);
    if (!e) {
      e = { material: null, chain: [], info: { identity, serial: '', notBefore: new Date(0), notAfter: new Date(0), state: 'pending' }, pending: null, renew: null, users: 0 };
      this.entries.set(identity, e);
    }
    return e;
  }

  private fetch(identity: string, e: Entry): Promise<TlsMaterial> {
    const p = (async () => {
      const { keyPem, csrPem } = await generateKeyAndCsr(Identity.parse(identity));
      const res = await this.sign(identity, csrPem);
      const rootsPem = this.roots ?? res.rootsPem;
      const material: TlsMaterial = { keyPem, certChainPem: [res.certPem, ...res.chainPem].join('\n'), rootsPem };
      const d = describeCertificate(res.certPem);
      e.material = material;
      e.chain = [res.certPem, ...res.chainPem];
      e.info = { identity, serial: d.serial, notBefore: d.notBefore, notAfter: d.notAfter, state: 'available', ...rootField(e.chain, rootsPem) };
      this.scheduleRenewal(identity, e, new Date(), d.notAfter);
      this.log.info({ identity, serial: d.serial, notAfter: d.notAfter.toISOString() }, 'certificate ready');
      return material;
    })();
    e.pending = p;
    p.then(
      () => {
        e.pending = null;
      },
      (err: Error) => {
        e.pending = null;
        if (!e.material) e.info = { ...e.info, state: 'failed', error: err.message };
        this.log.warn({ identity, err: err.message }, 'certificate request failed');
      },
    );
    return p;
  }

  /** Renews at half of the remaining life from when it arrived (the CA back-dates notBefore for clock skew). */
  private scheduleRenewal(identity: string, e: Entry, received: Date, notAfter: Date, attempt = 0): void {
    if (e.renew) clearTimeout(e.renew);
    const half = received.getTime() + (notAfter.getTime() - received.getTime()) / 2;
    const delay = attempt === 0 ? Math.max(0, half - Date.now()) : Math.min(RETRY_MIN_MS * 2 ** attempt, RETRY_MAX_MS);
    e.renew = setTimeout(() => {
      if (this.entries.get(identity) !== e) return;
      this.fetch(identity, e).then(
        (m) => this.emit('renewed', identity, m),
        () => this.scheduleRenewal(identity, e, received, notAfter, attempt + 1),
      );
    }, delay);
    e.renew.unref();
  }

  /**
   * Trusts this bundle from now on: every held certificate's holders are given it (as
   * 'renewed'), so new connections are verified with it. Returns whether holders were told.
   */
  setRoots(roots: readonly string[]): boolean {
    if (roots.length === 0) return false;
    const current = this.trustRoots();
    this.roots = [...roots];
    // the first bundle, or the same roots again: no holder has anything to change
    if (current.length === 0 || sameRoots(current, roots)) return false;
    for (const [identity, e] of this.entries) {
      if (!e.material) continue;
      e.material = { ...e.material, rootsPem: this.roots };
      e.info = { ...e.info, root: undefined, ...rootField(e.chain, this.roots) };
      this.emit('renewed', identity, e.material);
    }
    return true;
  }

  /** The roots peers are verified with now. */
  trustRoots(): string[] {
    if (this.roots) return [...this.roots];
    for (const e of this.entries.values()) if (e.material) return [...e.material.rootsPem];
    return [];
  }

  /** What the admin endpoint shows. */
  list(): CertificateInfo[] {
    return [...this.entries.values()].map((e) => e.info);
  }

  close(): void {
    for (const e of this.entries.values()) if (e.renew) clearTimeout(e.renew);
    this.entries.clear();
  }
}

/** `{ root: serial }` of the trusted root a chain ends at, or nothing when none of them. */
function rootField(chain: string[], roots: readonly string[]): { root?: string } {
  try {
    const root = rootOfChain(chain, roots);
    return root ? { root: summarizeRoot(root).serial } : {};
  } catch {
    return {};
  }
}
