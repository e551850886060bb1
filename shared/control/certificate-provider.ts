/**
 * Certificates for the control protocol's TLS that can change while it runs: the control plane
 * re-issues its serving certificate when its CA changes, and ztunnels trust the roots the control
 * plane last sent them. grpc-js reads both through its certificate-provider interface, for each
 * new connection; open connections keep what they were made with.
 */
import * as grpc from '@grpc/grpc-js';

type CaListener = (update: grpc.experimental.CaCertificateUpdate | null) => void;
type IdentityListener = (update: grpc.experimental.IdentityCertificateUpdate | null) => void;

/** A grpc-js certificate provider fed by the caller rather than by files. */
export class SettableCertificateProvider implements grpc.experimental.CertificateProvider {
  private ca: grpc.experimental.CaCertificateUpdate | null = null;
  private identity: grpc.experimental.IdentityCertificateUpdate | null = null;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();

  /** Replaces the trusted roots (PEM). */
  setRoots(rootsPem: readonly string[]): void {
    this.ca = { caCertificate: Buffer.from(rootsPem.map((p) => p.trim() + '\n').join('')) };
    for (const l of this.caListeners) l(this.ca);
  }

  /** Replaces the certificate chain and key presented to the peer. */
  setIdentity(certChainPem: string, keyPem: string): void {
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(keyPem) };
    for (const l of this.identityListeners) l(this.identity);
  }

  // A new listener is told what there is on the next microtask, not at once: grpc-js's server
  // registers its own watcher only after adding the listener, and would miss a synchronous call.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.ca && this.caListeners.has(listener)) listener(this.ca);
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identity && this.identityListeners.has(listener)) listener(this.identity);
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

/** Server credentials presenting whatever the provider holds now (no client certificates asked). */
export function settableServerCredentials(provider: SettableCertificateProvider): grpc.ServerCredentials {
  // grpc-js names the parameters (ca, identity) but uses them as (identity, ca); one provider
  // serving both kinds makes the order moot. A null CA provider means no client certificates.
  return grpc.experimental.createCertificateProviderServerCredentials(provider, null, false);
}

/** Channel credentials trusting whatever roots the provider holds now. */
export function settableChannelCredentials(provider: SettableCertificateProvider): grpc.ChannelCredentials {
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, null);
}
