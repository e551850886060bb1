/**
 * The X.509 library the CA signs and checks with (@peculiar/x509 over Node's WebCrypto), and the
 * helpers that need it. Only the control plane (and tests) load this: the data plane's processes
 * use ./csr.ts, which needs nothing but node:crypto.
 */
import type * as X509 from '@peculiar/x509';
import { splitPemCertificates } from './csr.js';

// @peculiar/x509 resolves its internals through tsyringe, which needs the Reflect metadata API
// loaded first; a static import of x509 would be evaluated before it, hence the dynamic one.
await import('reflect-metadata');

/** The @peculiar/x509 module, loaded after reflect-metadata. */
export const x509: typeof X509 = await import('@peculiar/x509');

/** WebCrypto used for every @peculiar/x509 call (Node's own implementation). */
export const webcrypto: Crypto = globalThis.crypto;
// Set once so library internals that take no explicit provider use Node's WebCrypto too.
x509.cryptoProvider.set(webcrypto);

/** Key algorithm of every CA key (design: ECDSA P-256). */
export const EC_P256: Readonly<EcKeyGenParams> = Object.freeze({ name: 'ECDSA', namedCurve: 'P-256' });

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
