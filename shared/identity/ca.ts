/**
 * The mesh certificate authority: a root (generated for local mode) or a root/intermediate
 * loaded from a Kubernetes Secret, signing workload CSRs into SPIFFE X.509-SVIDs.
 * The CA key stays inside this object; only certificates leave it.
 */
import type * as X509 from '@peculiar/x509';
import { X509Certificate as NodeX509Certificate, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { DEFAULT_TRUST_DOMAIN, Identity, validateTrustDomain } from './spiffe.js';
import { normalizeSerial, pemBlocks, splitPemCertificates, toPem } from './csr.js';
import { EC_P256, parseCertificate, uriSansOf, webcrypto, x509 } from './x509.js';
import { rootOfChain, type CaView } from './trust.js';

/** A certificate issued by the CA, with what a TLS endpoint needs to present and verify it. */
export interface IssuedCertificate {
  certPem: string;
  /** Intermediates between the leaf and the root, leaf-side first; empty when the CA is the root. */
  chainPem: string[];
  rootsPem: string[];
  /** Lower-case hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** Workload leaf TTL when the caller gives none (design §2). */
export const DEFAULT_WORKLOAD_TTL_SECONDS = 24 * 3600;
/** Serving certificate TTL when the caller gives none. */
export const DEFAULT_SERVING_TTL_SECONDS = 90 * 24 * 3600;
// Back-date notBefore so nodes whose clocks run a little behind the control plane accept new certs.
const CLOCK_SKEW_MS = 60_000;
const SAN_OID = '2.5.29.17';

interface SigningSetup {
  importParams: EcKeyImportParams | RsaHashedImportParams;
  signingAlgorithm: EcdsaParams | Algorithm;
}

/** Which WebCrypto algorithm signs with this CA key (EC P-256/P-384/P-521 or RSA PKCS#1 v1.5). */
function signingSetupFor(key: KeyObject): SigningSetup {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const table: Record<string, [string, string]> = {
      prime256v1: ['P-256', 'SHA-256'],
      secp384r1: ['P-384', 'SHA-384'],
      secp521r1: ['P-521', 'SHA-512'],
    };
    const entry = curve ? table[curve] : undefined;
    if (!entry) throw new Error(`CA key uses unsupported EC curve ${curve ?? '(unknown)'}; use P-256, P-384 or P-521`);
    return {
      importParams: { name: 'ECDSA', namedCurve: entry[0] },
      signingAlgorithm: { name: 'ECDSA', hash: entry[1] } as EcdsaParams,
    };
  }
  if (key.asymmetricKeyType === 'rsa') {
    // Many existing mesh CAs (e.g. Istio "plug-in CA" samples) are RSA; accept them.
    return {
      importParams: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    };
  }
  throw new Error(`CA key type ${key.asymmetricKeyType ?? '(unknown)'} is not supported; use an EC or RSA key`);
}

/** 128-bit random positive serial, hex; first byte kept in 0x01..0x7f so DER needs no padding byte. */
function randomSerialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) || 0x01;
  return b.toString('hex');
}

/** Validates a TTL in seconds and returns it in milliseconds. */
function ttlMs(ttlSeconds: number | undefined, fallback: number): number {
  const ttl = ttlSeconds ?? fallback;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 1) {
    throw new Error(`invalid certificate TTL ${String(ttlSeconds)}: must be a number of seconds >= 1`);
  }
  return Math.floor(ttl) * 1000;
}

/** Trust domain of a CA certificate's `spiffe://<td>` URI SAN, if it has one. */
function trustDomainOfCaCert(cert: X509.X509Certificate): string | undefined {
  for (const uri of uriSansOf(cert.extensions)) {
    const m = /^spiffe:\/\/([^/]+)\/?$/.exec(uri);
    if (m) return m[1];
  }
  return undefined;
}

function spkiDer(pem: string): Buffer {
  return new NodeX509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
}

function isSelfIssuedAndSigned(pem: string): boolean {
  const c = new NodeX509Certificate(pem);
  return c.checkIssued(c) && c.verify(c.publicKey);
}

/** Throws unless `pem` is a currently valid CA certificate. */
function requireCaCert(pem: string, what: string): X509.X509Certificate {
  const cert = parseCertificate(pem, what);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw new Error(`${what} is not a CA certificate (basicConstraints CA:TRUE missing): ${cert.subject}`);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new Error(`${what} may not sign certificates (keyUsage lacks keyCertSign): ${cert.subject}`);
  }
  if (cert.notAfter.getTime() <= Date.now()) {
    throw new Error(`${what} expired on ${cert.notAfter.toISOString()}: ${cert.subject}`);
  }
  return cert;
}

function dedupeByFingerprint(pems: string[]): string[] {
  const seen = new Set<string>();
  return pems.filter((p) => {
    const fp = new NodeX509Certificate(p).fingerprint256;
    if (seen.has(fp)) return false;
    seen.add(fp);
    return true;
  });
}

/** The mesh CA: signs workload CSRs and the control plane's serving certificate. */
export class CertificateAuthority {
  readonly trustDomain: string;
  /** The signing CA certificate (root, or intermediate when loaded from a chain). */
  readonly certPem: string;
  readonly #cert: X509.X509Certificate;
  readonly #key: CryptoKey;
  readonly #keyPem: string;
  readonly #signingAlgorithm: EcdsaParams | Algorithm;
  readonly #chainPem: readonly string[];
  readonly #rootsPem: readonly string[];
  readonly #authorityKeyId: string;
  /** Leaves must not outlive any certificate they chain through. */
  readonly #maxNotAfter: Date;

  private constructor(args: {
    trustDomain: string;
    cert: X509.X509Certificate;
    certPem: string;
    key: CryptoKey;
    keyPem: string;
    signingAlgorithm: EcdsaParams | Algorithm;
    chainPem: string[];
    rootsPem: string[];
    authorityKeyId: string;
    maxNotAfter: Date;
  }) {
    this.trustDomain = args.trustDomain;
    this.certPem = args.certPem;
    this.#cert = args.cert;
    this.#key = args.key;
    this.#keyPem = args.keyPem;
    this.#signingAlgorithm = args.signingAlgorithm;
    this.#chainPem = Object.freeze([...args.chainPem]);
    this.#rootsPem = Object.freeze([...args.rootsPem]);
    this.#authorityKeyId = args.authorityKeyId;
    this.#maxNotAfter = args.maxNotAfter;
  }

  /** Generates a self-signed ECDSA P-256 root CA (local mode, tests). */
  static async generate(opts: { trustDomain?: string; commonName?: string; validDays?: number } = {}): Promise<CertificateAuthority> {
    const trustDomain = validateTrustDomain(opts.trustDomain ?? DEFAULT_TRUST_DOMAIN);
    const validDays = opts.validDays ?? 3650;
    if (!Number.isFinite(validDays) || validDays <= 0) throw new Error(`invalid CA validDays ${validDays}: must be > 0`);
    const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerialHex(),
        name: [{ CN: [opts.commonName ?? 'ambit root CA'] }, { O: [trustDomain] }],
        notBefore: new Date(now - CLOCK_SKEW_MS),
        notAfter: new Date(now + validDays * 86_400_000),
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
        extensions: [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(
            x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
            true,
          ),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
          // SPIFFE allows a signing cert to carry its trust domain id; load() reads it back.
          new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }], false),
        ],
      },
      webcrypto,
    );
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    const certPem = toPem(cert.rawData, 'CERTIFICATE');
    return new CertificateAuthority({
      trustDomain,
      cert,
      certPem,
      key: keys.privateKey,
      keyPem: toPem(pkcs8, 'PRIVATE KEY'),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      chainPem: [],
      rootsPem: [certPem],
      authorityKeyId: await CertificateAuthority.#keyIdOf(cert),
      maxNotAfter: cert.notAfter,
    });
  }

  /**
   * Loads a CA from PEM. `certPem` is the signing CA certificate, optionally followed by its
   * chain (intermediates, then the root, as in Istio's `cert-chain.pem`); `extraRootsPem` adds
   * roots trusted alongside it (root rotation overlap, or the root of an intermediate CA).
   * Rejects a key that does not match the certificate, a non-CA or expired certificate, and an
   * intermediate that does not chain to any given root.
   */
  static async load(
    certPem: string,
    keyPem: string,
    opts: { extraRootsPem?: string[]; trustDomain?: string } = {},
  ): Promise<CertificateAuthority> {
    const bundle = splitPemCertificates(certPem, 'CA certificate');
    const signingPem = bundle[0]!;
    const cert = requireCaCert(signingPem, 'CA certificate');

    let keyObj: KeyObject;
    try {
      if (pemBlocks(keyPem).length === 0) throw new Error('no PEM block found');
      keyObj = createPrivateKey(keyPem);
    } catch (err) {
      throw new Error(`invalid CA key: ${(err as Error).message}`);
    }
    if (!createPublicKey(keyObj).export({ type: 'spki', format: 'der' }).equals(spkiDer(signingPem))) {
      throw new Error(`CA key does not match the CA certificate (${cert.subject})`);
    }
    const setup = signingSetupFor(keyObj);
    const pkcs8Der = keyObj.export({ type: 'pkcs8', format: 'der' });
    const key = await webcrypto.subtle.importKey('pkcs8', pkcs8Der, setup.importParams, false, ['sign']);

    // An expired extra root can verify nothing; drop it rather than fail start-up over a stale
    // rotation leftover.
    const extraRoots = (opts.extraRootsPem ?? [])
      .flatMap((p, i) => splitPemCertificates(p, `extra root #${i + 1}`))
      .filter((r, i) => {
        const c = parseCertificate(r, `extra root #${i + 1}`);
        if (c.notAfter.getTime() <= Date.now()) return false;
        requireCaCert(r, `extra root #${i + 1}`);
        return true;
      });

    let chainPem: string[];
    let roots: string[];
    if (isSelfIssuedAndSigned(signingPem)) {
      chainPem = [];
      roots = [signingPem, ...extraRoots];
    } else {
      const rest = bundle.slice(1);
      chainPem = [signingPem, ...rest.filter((p) => !isSelfIssuedAndSigned(p))];
      roots = [...rest.filter((p) => isSelfIssuedAndSigned(p)), ...extraRoots];
      CertificateAuthority.#requireChainsToRoot(chainPem, roots);
    }
    roots = dedupeByFingerprint(roots);

    let trustDomain = opts.trustDomain ?? trustDomainOfCaCert(cert) ?? DEFAULT_TRUST_DOMAIN;
    trustDomain = validateTrustDomain(trustDomain);
    const maxNotAfter = new Date(
      Math.min(...chainPem.concat(signingPem).map((p) => parseCertificate(p).notAfter.getTime())),
    );
    return new CertificateAuthority({
      trustDomain,
      cert,
      certPem: signingPem,
      key,
      keyPem: keyObj.export({ type: 'pkcs8', format: 'pem' }) as string,
      signingAlgorithm: setup.signingAlgorithm,
      chainPem,
      rootsPem: roots,
      authorityKeyId: await CertificateAuthority.#keyIdOf(cert),
      maxNotAfter,
    });
  }

  /** Throws unless each chain element is issued by the next and the last by one of `roots`. */
  static #requireChainsToRoot(chainPem: string[], roots: string[]): void {
    const chain = chainPem.map((p) => new NodeX509Certificate(p));
    for (let i = 0; i + 1 < chain.length; i++) {
      const [child, parent] = [chain[i]!, chain[i + 1]!];
      if (!child.checkIssued(parent) || !child.verify(parent.publicKey)) {
        throw new Error(`CA chain is out of order or broken: "${child.subject}" is not signed by "${parent.subject}"`);
      }
    }
    const top = chain[chain.length - 1]!;
    const ok = roots.some((r) => {
      const root = new NodeX509Certificate(r);
      return top.checkIssued(root) && top.verify(root.publicKey);
    });
    if (!ok) {
      throw new Error(
        `intermediate CA "${top.subject}" does not chain to any given root; append its root to the certificate PEM or pass it in extraRootsPem`,
      );
    }
  }

  /** Key identifier leaves reference in their authorityKeyIdentifier (the CA's SKI when present). */
  static async #keyIdOf(cert: X509.X509Certificate): Promise<string> {
    const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
    if (ski) return ski.keyId;
    return (await x509.SubjectKeyIdentifierExtension.create(cert.publicKey, false, webcrypto)).keyId;
  }

  /** The CA private key as PKCS#8 PEM (for persisting a generated CA into a Secret). */
  keyPem(): string {
    return this.#keyPem;
  }

  /** Trusted roots: the current root plus extra roots kept during rotation. */
  rootsPem(): string[] {
    return [...this.#rootsPem];
  }

  /** The root the signing certificate chains to (the signing certificate itself when it is a root). */
  signerRootPem(): string {
    const root = rootOfChain(this.#chainPem.length > 0 ? this.#chainPem : [this.certPem], this.#rootsPem);
    // load() refuses a chain that reaches no root, and a generated CA is its own root
    if (!root) throw new Error('CA signing certificate chains to none of its roots');
    return root;
  }

  /** What a check of a CA change compares (see checkCaChange). */
  view(): CaView {
    return { trustDomain: this.trustDomain, signer: this.certPem, signerRoot: this.signerRootPem(), roots: this.rootsPem() };
  }

  /** Intermediates to send after a leaf (empty when this CA is the root). */
  chainPem(): string[] {
    return [...this.#chainPem];
  }

  /**
   * Signs a workload CSR: verifies the CSR's self-signature, requires its only URI SAN (if any)
   * equals `identity`, issues an ECDSA P-256 leaf with exactly one URI SAN = identity,
   * digitalSignature+keyEncipherment key usage, serverAuth+clientAuth EKU, CA:false, TTL default
   * 24h (capped at the CA's own expiry), random 128-bit serial.
   */
  async signCsr(csrPem: string, identity: Identity, opts: { ttlSeconds?: number } = {}): Promise<IssuedCertificate> {
    if (!(identity instanceof Identity)) throw new Error('signCsr: identity must be an Identity');
    if (identity.trustDomain !== this.trustDomain) {
      throw new Error(
        `refusing to sign for ${identity.toString()}: trust domain "${identity.trustDomain}" is not this CA's "${this.trustDomain}"`,
      );
    }
    const ttl = ttlMs(opts.ttlSeconds, DEFAULT_WORKLOAD_TTL_SECONDS);

    const blocks = pemBlocks(csrPem ?? '').filter((b) => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST');
    if (blocks.length !== 1) {
      throw new Error(
        blocks.length === 0
          ? 'invalid CSR: no "-----BEGIN CERTIFICATE REQUEST-----" PEM block found'
          : 'invalid CSR: more than one CERTIFICATE REQUEST block',
      );
    }
    let csr: X509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(new Uint8Array(blocks[0]!.der));
    } catch (err) {
      throw new Error(`invalid CSR: malformed PKCS#10 DER (${(err as Error).message})`);
    }

    // Design §2: workload keys are ECDSA P-256, nothing else.
    let keyAlg: { name?: string; namedCurve?: string };
    try {
      keyAlg = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
    } catch (err) {
      throw new Error(`invalid CSR: unreadable public key (${(err as Error).message})`);
    }
    if (keyAlg.name !== 'ECDSA' || keyAlg.namedCurve !== 'P-256') {
      const kind = [keyAlg.name ?? 'unknown', keyAlg.namedCurve].filter(Boolean).join(' ');
      throw new Error(`invalid CSR: key is ${kind}, workload keys must be ECDSA P-256`);
    }
    let signatureOk: boolean;
    try {
      signatureOk = await csr.verify(webcrypto);
    } catch {
      signatureOk = false;
    }
    if (!signatureOk) {
      throw new Error('invalid CSR: signature does not verify with its own public key (tampered or corrupted CSR)');
    }

    let sanExts: X509.SubjectAlternativeNameExtension[];
    try {
      sanExts = csr.extensions
        .filter((e) => e.type === SAN_OID)
        .map((e) => (e instanceof x509.SubjectAlternativeNameExtension ? e : new x509.SubjectAlternativeNameExtension(e.rawData)));
    } catch (err) {
      throw new Error(`invalid CSR: unreadable extensions (${(err as Error).message})`);
    }
    if (sanExts.length > 1) throw new Error('invalid CSR: more than one subjectAltName extension');
    if (sanExts.length === 1) {
      const names = sanExts[0]!.names.items;
      const want = identity.toString();
      const got = names.map((n) => (n.type === 'url' ? n.value : `${n.type}:${n.value}`));
      if (names.length !== 1 || names[0]!.type !== 'url' || names[0]!.value !== want) {
        throw new Error(`CSR identity mismatch: CSR requests [${got.join(', ')}] but the caller may only get ${want}`);
      }
    }

    const now = Date.now();
    const notAfter = new Date(Math.min(now + ttl, this.#maxNotAfter.getTime()));
    const leaf = await x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerialHex(),
        issuer: this.#cert.subjectName,
        notBefore: new Date(now - CLOCK_SKEW_MS),
        notAfter,
        publicKey: csr.publicKey,
        signingKey: this.#key,
        signingAlgorithm: this.#signingAlgorithm,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
          new x509.AuthorityKeyIdentifierExtension(this.#authorityKeyId, false),
          await x509.SubjectKeyIdentifierExtension.create(csr.publicKey, false, webcrypto),
          // Subject is empty, so the SAN must be critical (RFC 5280 §4.2.1.6), as in Istio.
          new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.toString() }], true),
        ],
      },
      webcrypto,
    );
    return this.#issued(leaf);
  }

  /** Issues a serving certificate (key made here) for the control plane's own TLS endpoint, with the given DNS and IP SANs. */
  async issueServing(opts: {
    dnsNames: string[];
    ipAddresses?: string[];
    ttlSeconds?: number;
  }): Promise<IssuedCertificate & { keyPem: string }> {
    const dnsNames = opts.dnsNames ?? [];
    const ips = opts.ipAddresses ?? [];
    if (dnsNames.length === 0 && ips.length === 0) throw new Error('issueServing: give at least one DNS name or IP address');
    for (const d of dnsNames) {
      if (!/^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(d) || d.length > 253) {
        throw new Error(`issueServing: invalid DNS name ${JSON.stringify(d)}`);
      }
    }
    for (const ip of ips) if (isIP(ip) === 0) throw new Error(`issueServing: invalid IP address ${JSON.stringify(ip)}`);
    const ttl = ttlMs(opts.ttlSeconds, DEFAULT_SERVING_TTL_SECONDS);

    const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerialHex(),
        subject: [{ CN: [dnsNames[0] ?? ips[0]!] }, { O: [this.trustDomain] }],
        issuer: this.#cert.subjectName,
        notBefore: new Date(now - CLOCK_SKEW_MS),
        notAfter: new Date(Math.min(now + ttl, this.#maxNotAfter.getTime())),
        publicKey: keys.publicKey,
        signingKey: this.#key,
        signingAlgorithm: this.#signingAlgorithm,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
          new x509.AuthorityKeyIdentifierExtension(this.#authorityKeyId, false),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
          new x509.SubjectAlternativeNameExtension(
            [...dnsNames.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))],
            false,
          ),
        ],
      },
      webcrypto,
    );
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    return { ...this.#issued(cert), keyPem: toPem(pkcs8, 'PRIVATE KEY') };
  }

  #issued(cert: X509.X509Certificate): IssuedCertificate {
    return {
      certPem: toPem(cert.rawData, 'CERTIFICATE'),
      chainPem: [...this.#chainPem],
      rootsPem: [...this.#rootsPem],
      serial: normalizeSerial(cert.serialNumber),
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }
}
