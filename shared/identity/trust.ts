/**
 * The mesh trust bundle: the roots a workload certificate may chain to. During a root rotation
 * it holds the old and the new root; these helpers merge bundles, tell which root a chain ends
 * at, and say what a change of CA does to the mesh. All pure: certificates in, data out.
 */
import { X509Certificate } from 'node:crypto';
import { normalizeSerial, splitPemCertificates } from './csr.js';

/** A trusted root as operators see it. */
export interface RootSummary {
  serial: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  /** SHA-256 fingerprint, colon-separated hex (as openssl prints it) */
  fingerprint: string;
}

function parse(pem: string | Buffer): X509Certificate {
  return new X509Certificate(pem);
}

/** Serial, subject, validity and fingerprint of a root certificate. */
export function summarizeRoot(pem: string): RootSummary {
  const c = parse(pem);
  return {
    serial: normalizeSerial(c.serialNumber),
    subject: c.subject.replace(/\n/g, ', '),
    notBefore: new Date(c.validFrom).toISOString(),
    notAfter: new Date(c.validTo).toISOString(),
    fingerprint: c.fingerprint256,
  };
}

/** SHA-256 fingerprint of a certificate. */
export function fingerprintOf(pem: string): string {
  return parse(pem).fingerprint256;
}

/**
 * One bundle from several: every certificate once (by fingerprint), in the order first seen, so
 * the signing root given first stays first. Each input may be a PEM bundle of several
 * certificates; throws on text that holds none.
 */
export function mergeRoots(...bundles: readonly (readonly string[])[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const bundle of bundles) {
    for (const text of bundle) {
      for (const pem of splitPemCertificates(text, 'trusted root')) {
        const fp = fingerprintOf(pem);
        if (seen.has(fp)) continue;
        seen.add(fp);
        out.push(pem);
      }
    }
  }
  return out;
}

/** The roots still valid at `now` (an expired root can verify nothing). */
export function unexpiredRoots(roots: readonly string[], now: Date = new Date()): string[] {
  return roots.filter((r) => Date.parse(parse(r).validTo) > now.getTime());
}

/** Whether two bundles trust the same roots, whatever their order. */
export function sameRoots(a: readonly string[], b: readonly string[]): boolean {
  const fa = new Set(a.map(fingerprintOf));
  const fb = new Set(b.map(fingerprintOf));
  return fa.size === fb.size && [...fa].every((f) => fb.has(f));
}

/**
 * The root that a chain (leaf first, then intermediates; PEM or DER) ends at: each certificate
 * must be issued and signed by the next, and the last by one of `roots`. Null when none does.
 * Validity dates are not checked here; TLS does that at the handshake.
 */
export function rootOfChain(chain: readonly (string | Buffer)[], roots: readonly string[]): string | null {
  if (chain.length === 0) return null;
  const certs = chain.map(parse);
  for (let i = 0; i + 1 < certs.length; i++) {
    if (!issuedBy(certs[i]!, certs[i + 1]!)) return null;
  }
  const top = certs[certs.length - 1]!;
  for (const r of roots) {
    const root = parse(r);
    // a chain that carries its root as its last element ends at that root
    if (top.fingerprint256 === root.fingerprint256 || issuedBy(top, root)) return r;
  }
  return null;
}

function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

/** What replacing the CA (signer and trusted roots) changes, and whether it is safe to do. */
export interface CaChange {
  /** set when the change must not be made (the current CA stays) */
  error?: string;
  warnings: string[];
  added: RootSummary[];
  removed: RootSummary[];
  signerChanged: boolean;
  rootsChanged: boolean;
}

/** A CA as the control plane holds it: trust domain, the root its signer chains to, the roots it hands out. */
export interface CaView {
  trustDomain: string;
  /** the root the signing certificate chains to (itself for a root CA) */
  signerRoot: string;
  /** PEM of the signing certificate */
  signer: string;
  roots: readonly string[];
}

/**
 * Checks a change of CA. Refused: another trust domain (every identity would change). Warned:
 * a new signing root that ztunnels were not given before (they learn it only now, together
 * with leaves that chain to it), and dropping a root that still has unexpired leaves out there
 * (`leavesUntil`: latest expiry of the leaves issued under each root, by fingerprint).
 */
export function checkCaChange(prev: CaView, next: CaView, leavesUntil: ReadonlyMap<string, Date>, now: Date = new Date()): CaChange {
  const prevFp = new Map(prev.roots.map((r) => [fingerprintOf(r), r]));
  const nextFp = new Map(next.roots.map((r) => [fingerprintOf(r), r]));
  const added = [...nextFp].filter(([fp]) => !prevFp.has(fp)).map(([, r]) => summarizeRoot(r));
  const removed = [...prevFp].filter(([fp]) => !nextFp.has(fp)).map(([, r]) => summarizeRoot(r));
  const change: CaChange = {
    warnings: [],
    added,
    removed,
    signerChanged: fingerprintOf(prev.signer) !== fingerprintOf(next.signer),
    rootsChanged: added.length + removed.length > 0,
  };
  if (next.trustDomain !== prev.trustDomain) {
    change.error = `the new CA is for trust domain "${next.trustDomain}", the mesh is "${prev.trustDomain}"; a CA change keeps the trust domain`;
    return change;
  }
  if (!prevFp.has(fingerprintOf(next.signerRoot))) {
    const r = summarizeRoot(next.signerRoot);
    change.warnings.push(
      `the new signing root (serial ${r.serial}) was not trusted before: ztunnels learn it only now, and peers that have not yet may refuse leaves signed by it; add it as a trusted root first and switch once every ztunnel has it`,
    );
  }
  for (const r of removed) {
    const until = leavesUntil.get(r.fingerprint);
    if (until && until.getTime() > now.getTime()) {
      change.warnings.push(`root ${r.serial} is no longer trusted, but leaves it signed are valid until ${until.toISOString()}: workloads still holding one are refused until they renew`);
    }
  }
  return change;
}
