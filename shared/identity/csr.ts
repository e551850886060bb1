/**
 * Workload-side certificate helpers: key + CSR generation, reading certificates,
 * and extracting the SPIFFE id of a TLS peer. Also holds the small PEM helpers the
 * CA shares, so both sides parse PEM the same way.
 *
 * Only node:crypto here: ztunnel and the waypoint load this module, and the X.509 library the
 * CA signs with (./x509.ts) would add about 18 MiB to each of those processes.
 */
import { X509Certificate as NodeX509Certificate, generateKeyPair, sign } from 'node:crypto';
import { promisify } from 'node:util';
import { Identity } from './spiffe.js';

const generateKeyPairP = promisify(generateKeyPair);

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

/** Lower-case hex, no leading zero byte: the one serial format used across ambit. */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^(00)+(?=[0-9a-f]{2})/, '');
}

/** A DER length. */
function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One DER element: tag, length, content. */
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const OID_EXTENSION_REQUEST = Buffer.from('06092a864886f70d01090e', 'hex'); // 1.2.840.113549.1.9.14
const OID_SUBJECT_ALT_NAME = Buffer.from('0603551d11', 'hex'); // 2.5.29.17
const OID_ECDSA_WITH_SHA256 = Buffer.from('06082a8648ce3d040302', 'hex'); // 1.2.840.10045.4.3.2
const DER_TRUE = Buffer.from('0101ff', 'hex');
const DER_VERSION_0 = Buffer.from('020100', 'hex');
const DER_EMPTY_NAME = Buffer.from('3000', 'hex');

/**
 * A PKCS#10 request (RFC 2986) signed with ECDSA-SHA256: empty subject, the public key, and one
 * requested extension, a critical subjectAltName holding the SPIFFE id as its only URI (with an
 * empty subject the SAN must be critical, RFC 5280 §4.2.1.6).
 */
export function buildCsr(spkiDer: Buffer, uri: string, signer: (data: Buffer) => Buffer): Buffer {
  const sanValue = der(0x30, der(0x86, Buffer.from(uri, 'ascii'))); // GeneralNames: [6] IA5String
  const extension = der(0x30, OID_SUBJECT_ALT_NAME, DER_TRUE, der(0x04, sanValue));
  const attribute = der(0x30, OID_EXTENSION_REQUEST, der(0x31, der(0x30, extension)));
  const info = der(0x30, DER_VERSION_0, DER_EMPTY_NAME, spkiDer, der(0xa0, attribute));
  const signature = signer(info);
  return der(0x30, info, der(0x30, OID_ECDSA_WITH_SHA256), der(0x03, Buffer.from([0]), signature));
}

/** Generates an ECDSA P-256 key (PKCS#8 PEM) and a CSR carrying the SPIFFE id as its only URI SAN. */
export async function generateKeyAndCsr(identity: Identity): Promise<{ keyPem: string; csrPem: string }> {
  const { publicKey, privateKey } = await generateKeyPairP('ec', { namedCurve: 'prime256v1' });
  const uri = identity.toString();
  if (!/^[\x21-\x7e]+$/.test(uri)) throw new Error(`identity ${JSON.stringify(uri)} is not printable ASCII`);
  const csr = buildCsr(publicKey.export({ type: 'spki', format: 'der' }), uri, (data) => sign('sha256', data, privateKey));
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, csrPem: toPem(csr, 'CERTIFICATE REQUEST') };
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
  const [first] = splitPemCertificates(pem);
  let cert: NodeX509Certificate;
  try {
    cert = new NodeX509Certificate(first!);
  } catch (err) {
    throw new Error(`invalid certificate: malformed X.509 DER (${(err as Error).message})`);
  }
  return {
    serial: normalizeSerial(cert.serialNumber),
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    uriSans: parseSubjectAltName(cert.subjectAltName ?? '')
      .filter(([type]) => type === 'URI')
      .map(([, v]) => v),
    // node prints one attribute per line; one line reads better in tables and logs
    subject: (cert.subject ?? '').split('\n').join(', '),
    issuer: (cert.issuer ?? '').split('\n').join(', '),
    isCa: cert.ca,
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
