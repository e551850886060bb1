/**
 * Workload-side certificate helpers: key + CSR generation, reading certificates,
 * and extracting the SPIFFE id of a TLS peer. Also holds the small PEM helpers the
 * CA shares, so both sides parse PEM the same way.
 */
import type * as X509 from '@peculiar/x509';
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { Identity } from './spiffe.js';

// @peculiar/x509 resolves its internals through tsyringe, which needs the Reflect metadata API
// loaded first; a static import of x509 would be evaluated before it, hence the dynamic one.
await import('reflect-metadata');

/** The @peculiar/x509 module, loaded after reflect-metadata. */
export const x509: typeof X509 = await import('@peculiar/x509');

/** WebCrypto used for every @peculiar/x509 call (Node's own implementation). */
export const webcrypto: Crypto = globalThis.crypto;
// Set once so library internals that take no explicit provider use Node's WebCrypto too.
x509.cryptoProvider.set(webcrypto);

/** Key algorithm of every workload key (design: ECDSA P-256). */
export const EC_P256: Readonly<EcKeyGenParams> = Object.freeze({ name: 'ECDSA', namedCurve: 'P-256' });

/** One decoded PEM block. */
export interface PemBlock {
  label: string;
  der: Buffer;
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n?([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;

/** Decodes every PEM block in `text`; throws when a block is malformed. */
export function pemBlocks(text: string): PemBlock[] {
  if (typeof text !== 'string') return [];
  const out: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    const [, label, body, endLabel] = m as unknown as [string, string, string, string];
    if (label !== endLabel) throw new Error(`malformed PEM: BEGIN ${label} closed by END ${endLabel}`);
    if (/:/.test(body)) throw new Error(`PEM ${label} has headers (encrypted?); only unencrypted PEM is supported`);
    const b64 = body.replace(/\s+/g, '');
    if (b64.length === 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) {
      throw new Error(`malformed PEM ${label}: body is not valid base64`);
    }
    out.push({ label, der: Buffer.from(b64, 'base64') });
  }
  return out;
}

/** Encodes DER bytes as PEM with the given label (64-column body, trailing newline). */
export function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Splits a PEM bundle into one normalized PEM string per certificate, in order; throws if it holds none. */
export function splitPemCertificates(text: string, what = 'certificate'): string[] {
  const certs = pemBlocks(text).filter((b) => b.label === 'CERTIFICATE');
  if (certs.length === 0) throw new Error(`invalid ${what}: no "-----BEGIN CERTIFICATE-----" PEM block found`);
  return certs.map((b) => toPem(b.der, 'CERTIFICATE'));
}

/** Parses exactly the first certificate of a PEM (bundle) with @peculiar/x509, with a clear error. */
export function parseCertificate(pem: string, what = 'certificate'): X509.X509Certificate {
  const [first] = splitPemCertificates(pem, what);
  try {
    return new x509.X509Certificate(first!);
  } catch (err) {
    throw new Error(`invalid ${what}: malformed X.509 DER (${(err as Error).message})`);
  }
}

/** URI SANs of a certificate or CSR extension list. */
export function uriSansOf(extensions: readonly X509.Extension[]): string[] {
  const out: string[] = [];
  for (const ext of extensions) {
    if (ext instanceof x509.SubjectAlternativeNameExtension) {
      for (const n of ext.names.items) if (n.type === 'url') out.push(n.value);
    }
  }
  return out;
}

/** Lower-case hex, no leading zero byte: the one serial format used across ambit. */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^(00)+(?=[0-9a-f]{2})/, '');
}

/** Generates an ECDSA P-256 key (PKCS#8 PEM) and a CSR carrying the SPIFFE id as its only URI SAN. */
export async function generateKeyAndCsr(identity: Identity): Promise<{ keyPem: string; csrPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      // Empty subject, identity only in the SAN: the SPIFFE X.509-SVID layout Istio uses.
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity.toString() }], true)],
    },
    webcrypto,
  );
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keyPem: toPem(pkcs8, 'PRIVATE KEY'), csrPem: toPem(csr.rawData, 'CERTIFICATE REQUEST') };
}

/** Reads what operators want to see of a PEM certificate (the first one of a bundle). */
export function describeCertificate(pem: string): {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  uriSans: string[];
  subject: string;
  issuer: string;
  isCa: boolean;
} {
  const cert = parseCertificate(pem);
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  return {
    serial: normalizeSerial(cert.serialNumber),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    uriSans: uriSansOf(cert.extensions),
    subject: cert.subject,
    issuer: cert.issuer,
    isCa: bc?.ca === true,
  };
}

/**
 * Splits Node's `subjectaltname` string ('DNS:a, URI:spiffe://…, IP Address:1.2.3.4')
 * into [type, value] pairs. Node JSON-quotes values that contain separators
 * (CVE-2021-44532), so quoted values are decoded rather than split on.
 */
function parseSubjectAltName(san: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon < 0) break;
    const type = san.slice(i, colon).trim();
    let j = colon + 1;
    let value: string;
    if (san[j] === '"') {
      // Find the closing quote of the JSON string, honouring backslash escapes.
      let k = j + 1;
      while (k < san.length && san[k] !== '"') k += san[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(san.slice(j, k + 1)) as string;
      } catch {
        return out;
      }
      j = k + 1;
    } else {
      const comma = san.indexOf(', ', j);
      const end = comma < 0 ? san.length : comma;
      value = san.slice(j, end);
      j = end;
    }
    out.push([type, value]);
    // Skip the ", " separator.
    while (j < san.length && (san[j] === ',' || san[j] === ' ')) j++;
    i = j;
  }
  return out;
}

/**
 * The single SPIFFE URI SAN of a certificate (from Node's tls peer certificate `subjectaltname`
 * string like 'URI:spiffe://…' or a PEM), or null when there is none, more than one, or it is not
 * a valid workload SPIFFE id.
 */
export function spiffeIdFromSubjectAltName(subjectaltname: string | undefined): Identity | null {
  if (!subjectaltname) return null;
  let san = subjectaltname;
  if (san.includes('-----BEGIN')) {
    try {
      san = new NodeX509Certificate(splitPemCertificates(san)[0]!).subjectAltName ?? '';
    } catch {
      return null;
    }
  }
  const uris = parseSubjectAltName(san).filter(([type]) => type === 'URI');
  // Design: exactly one URI SAN; several would make the peer's identity ambiguous.
  if (uris.length !== 1) return null;
  try {
    return Identity.parse(uris[0]![1]);
  } catch {
    return null;
  }
}
