/**
 * The control plane's own TLS certificate for the control protocol, issued by the mesh CA and
 * issued again whenever the CA changes, without restarting the gRPC server: new connections get
 * the new certificate, open ones keep theirs. ztunnels verify it with the roots they were given.
 */
import type * as grpc from '@grpc/grpc-js';
import type { CertificateAuthority } from '../shared/identity/ca.js';
import { SettableCertificateProvider, settableServerCredentials } from '../shared/control/certificate-provider.js';

export interface ServingNames {
  dnsNames: string[];
  ipAddresses: string[];
  ttlSeconds: number;
}

/** The serving certificate, kept current with the CA. */
export class ServingCertificate {
  private readonly provider = new SettableCertificateProvider();
  /** serial of the certificate presented now */
  serial = '';

  constructor(private readonly names: ServingNames) {}

  /** Issues a certificate from `ca` and presents it to new connections from now on. */
  async issue(ca: CertificateAuthority): Promise<void> {
    const s = await ca.issueServing(this.names);
    this.provider.setRoots(ca.rootsPem());
    this.provider.setIdentity([s.certPem, ...s.chainPem].join('\n'), s.keyPem);
    this.serial = s.serial;
  }

  /** gRPC server credentials that always present the latest certificate. */
  credentials(): grpc.ServerCredentials {
    return settableServerCredentials(this.provider);
  }
}
