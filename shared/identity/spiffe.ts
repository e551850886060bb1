/**
 * SPIFFE workload identities in the Istio layout:
 * `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
 */
import { flatString } from '../model/strings.js';

/** Trust domain used when none is configured (Kubernetes' default cluster domain, as in Istio). */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

// SPIFFE spec: trust domains are lowercase letters, digits, '.', '-', '_'.
const TRUST_DOMAIN_RE = /^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/;
// Kubernetes namespaces are DNS-1123 labels.
const NAMESPACE_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
// Kubernetes service accounts are DNS-1123 subdomains.
const SERVICE_ACCOUNT_RE = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;

/** Throws unless `td` is a valid SPIFFE trust domain name; returns it unchanged. */
export function validateTrustDomain(td: string): string {
  if (typeof td !== 'string' || td.length === 0) throw new Error('SPIFFE trust domain must not be empty');
  if (td.length > 255 || !TRUST_DOMAIN_RE.test(td)) {
    throw new Error(
      `invalid SPIFFE trust domain ${JSON.stringify(td)}: use lowercase letters, digits, '.', '-' or '_' (e.g. "cluster.local")`,
    );
  }
  return td;
}

/** Each identity's URI, once made (an identity is frozen: it cannot keep it itself). */
const uris = new WeakMap<Identity, string>();

/** A workload's SPIFFE identity (immutable value object). */
export class Identity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;

  /** Validates each part; an empty service account means `default`, as in Kubernetes. */
  constructor(trustDomain: string, namespace: string, serviceAccount: string) {
    this.trustDomain = validateTrustDomain(trustDomain);
    if (typeof namespace !== 'string' || namespace.length === 0) {
      throw new Error('SPIFFE identity: namespace must not be empty');
    }
    if (namespace.length > 63 || !NAMESPACE_RE.test(namespace)) {
      throw new Error(
        `SPIFFE identity: invalid namespace ${JSON.stringify(namespace)} (must be a DNS label: lowercase letters, digits and '-', at most 63 characters)`,
      );
    }
    this.namespace = namespace;
    const sa = serviceAccount ?? '';
    if (typeof sa !== 'string') throw new Error('SPIFFE identity: service account must be a string');
    const effectiveSa = sa.length === 0 ? 'default' : sa;
    if (effectiveSa.length > 253 || !SERVICE_ACCOUNT_RE.test(effectiveSa)) {
      throw new Error(
        `SPIFFE identity: invalid service account ${JSON.stringify(sa)} (must be a DNS subdomain: lowercase letters, digits, '-' and '.')`,
      );
    }
    this.serviceAccount = effectiveSa;
    Object.freeze(this);
  }

  /** Parses `spiffe://td/ns/NS/sa/SA`; throws a descriptive Error for anything else. */
  static parse(uri: string): Identity {
    if (typeof uri !== 'string') throw new Error('SPIFFE id must be a string');
    const prefix = 'spiffe://';
    if (!uri.startsWith(prefix)) {
      throw new Error(`invalid SPIFFE id ${JSON.stringify(uri)}: must start with "spiffe://"`);
    }
    const rest = uri.slice(prefix.length);
    // Query strings, fragments, ports and user info have no place in a SPIFFE id.
    if (/[?#@:%\s]/.test(rest)) {
      throw new Error(`invalid SPIFFE id ${JSON.stringify(uri)}: unexpected character`);
    }
    const parts = rest.split('/');
    if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') {
      throw new Error(
        `invalid SPIFFE id ${JSON.stringify(uri)}: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
      );
    }
    const [td, , ns, , sa] = parts as [string, string, string, string, string];
    if (td === '' || ns === '' || sa === '') {
      throw new Error(`invalid SPIFFE id ${JSON.stringify(uri)}: empty trust domain, namespace or service account`);
    }
    return new Identity(td, ns, sa);
  }

  /** The SPIFFE URI (made once per identity: the open connections naming it share one string). */
  toString(): string {
    let uri = uris.get(this);
    if (uri === undefined) {
      uri = flatString(`spiffe://${this.trustDomain}/ns/${this.namespace}/sa/${this.serviceAccount}`);
      uris.set(this, uri);
    }
    return uri;
  }

  /** JSON form is the URI, so identities log and serialize readably. */
  toJSON(): string {
    return this.toString();
  }

  /** True when both identities name the same trust domain, namespace and service account. */
  equals(o: Identity): boolean {
    return (
      o != null &&
      o.trustDomain === this.trustDomain &&
      o.namespace === this.namespace &&
      o.serviceAccount === this.serviceAccount
    );
  }
}
