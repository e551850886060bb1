import type { PeerCertificate } from 'node:tls';
import { Identity } from '../identity/spiffe.js';
import { spiffeIdFromSubjectAltName } from '../identity/csr.js';

/** What a ztunnel or waypoint presents for one identity: key, leaf + chain, and the roots it trusts. */
export interface TlsMaterial {
  keyPem: string;
  certChainPem: string;
  rootsPem: string[];
}

/** Node TLS options common to both ends of an HBONE connection. */
export function tlsOptions(m: TlsMaterial) {
  return {
    key: m.keyPem,
    cert: m.certChainPem,
    ca: m.rootsPem,
    minVersion: 'TLSv1.3' as const,
    maxVersion: 'TLSv1.3' as const,
    ALPNProtocols: ['h2'],
  };
}

/** The single SPIFFE identity of a verified peer certificate, or null. */
export function peerIdentity(cert: PeerCertificate | null | undefined): Identity | null {
  if (!cert || !cert.subjectaltname) return null;
  return spiffeIdFromSubjectAltName(cert.subjectaltname);
}

/** checkServerIdentity for HBONE clients: the server must present one of the expected identities. */
export function expectIdentity(expected: readonly string[]): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const id = peerIdentity(cert);
    if (!id) return new Error('server certificate has no single SPIFFE identity');
    if (!expected.includes(id.toString())) return new Error(`server identity ${id} is not the expected ${expected.join(' or ')}`);
    return undefined;
  };
}
