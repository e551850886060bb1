/**
 * The mesh CA in a cluster: its root (or intermediate) and key live in the Secret
 * `ambit-system/ambit-ca`, made on first start when absent. Replicas starting together race
 * to create it; the loser reads back the winner's, so every replica signs with the same key.
 * The roots are published in the ConfigMap `ambit-system/ambit-root-cert` for ztunnels to mount.
 */
import { CoreV1Api, KubernetesObjectApi, PatchStrategy, type KubeConfig } from '@kubernetes/client-node';
import { CertificateAuthority } from '../shared/identity/ca.js';
import { kubeError, withTimeout } from '../shared/config/kube-client.js';
import type { Logger } from '../shared/telemetry/log.js';

export const CA_SECRET_NAMESPACE = 'ambit-system';
export const CA_SECRET_NAME = 'ambit-ca';
export const ROOT_CERT_CONFIGMAP = 'ambit-root-cert';
/** Secret keys (Istio's "plug-in CA" layout, so an existing cacerts Secret can be copied over). */
export const CA_CERT_KEY = 'ca-cert.pem';
export const CA_KEY_KEY = 'ca-key.pem';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const CERT_CHAIN_KEY = 'cert-chain.pem';
export const FIELD_MANAGER = 'ambit';

/** Secret reads and creates (a seam for tests); data values are decoded text. */
export interface CaSecretApi {
  read(namespace: string, name: string): Promise<Record<string, string> | null>;
  /** 'exists' when another writer created it first (409) */
  create(namespace: string, name: string, data: Record<string, string>): Promise<'created' | 'exists'>;
}

/** The Secret through @kubernetes/client-node's CoreV1Api. */
export function kubeCaSecretApi(kc: KubeConfig, timeoutMs = 15_000): CaSecretApi {
  const core = kc.makeApiClient(CoreV1Api);
  const server = kc.getCurrentCluster()?.server;
  return {
    async read(namespace, name) {
      try {
        const s = await withTimeout(core.readNamespacedSecret({ namespace, name }), timeoutMs, `reading Secret ${namespace}/${name}`);
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(s.data ?? {})) out[k] = Buffer.from(v, 'base64').toString('utf8');
        return out;
      } catch (err) {
        const e = kubeError(err, server);
        if (e.status === 404) return null;
        throw e;
      }
    },
    async create(namespace, name, data) {
      const encoded: Record<string, string> = {};
      for (const [k, v] of Object.entries(data)) encoded[k] = Buffer.from(v).toString('base64');
      try {
        await withTimeout(
          core.createNamespacedSecret({
            namespace,
            body: { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'ambit', 'app.kubernetes.io/component': 'ca' } }, data: encoded },
            fieldManager: FIELD_MANAGER,
          }),
          timeoutMs,
          `creating Secret ${namespace}/${name}`,
        );
        return 'created';
      } catch (err) {
        const e = kubeError(err, server);
        if (e.status === 409) return 'exists';
        throw e;
      }
    },
  };
}

function pemCerts(text: string | undefined): string[] {
  return (text ?? '').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => p + '\n') ?? [];
}

/**
 * Builds the CA from Secret data: `ca-cert.pem` (signing certificate, possibly followed by its
 * chain) and `ca-key.pem`; optional `cert-chain.pem` (intermediates) and `root-cert.pem`
 * (the root of an intermediate CA, or extra roots trusted during rotation).
 */
export async function caFromSecretData(data: Record<string, string>, where: string, trustDomain?: string): Promise<CertificateAuthority> {
  const cert = data[CA_CERT_KEY];
  const key = data[CA_KEY_KEY];
  const missing = [!cert && CA_CERT_KEY, !key && CA_KEY_KEY].filter(Boolean);
  if (missing.length > 0) throw new Error(`${where} lacks ${missing.join(' and ')}; it needs ${CA_CERT_KEY} and ${CA_KEY_KEY} (optional ${ROOT_CERT_KEY}, ${CERT_CHAIN_KEY})`);
  const own = pemCerts(cert);
  const seen = new Set(own.map((p) => p.replace(/\s+/g, '')));
  const chain = pemCerts(data[CERT_CHAIN_KEY]).filter((p) => !seen.has(p.replace(/\s+/g, '')));
  const roots = pemCerts(data[ROOT_CERT_KEY]).filter((p) => !seen.has(p.replace(/\s+/g, '')));
  try {
    return await CertificateAuthority.load([...own, ...chain].join(''), key!, { extraRootsPem: roots, ...(trustDomain ? { trustDomain } : {}) });
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

export interface CaSecretOptions {
  namespace?: string;
  name?: string;
  trustDomain?: string;
  log?: Logger;
  /** how a new CA is made (default: a fresh self-signed P-256 root) */
  generate?: () => Promise<CertificateAuthority>;
}

/** Loads the CA from its Secret, creating the Secret with a new root when there is none. */
export async function loadOrCreateCa(api: CaSecretApi, opts: CaSecretOptions = {}): Promise<{ ca: CertificateAuthority; created: boolean }> {
  const ns = opts.namespace ?? CA_SECRET_NAMESPACE;
  const name = opts.name ?? CA_SECRET_NAME;
  const where = `Secret ${ns}/${name}`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const data = await api.read(ns, name);
    if (data) {
      const ca = await caFromSecretData(data, where, opts.trustDomain);
      opts.log?.info({ secret: `${ns}/${name}`, trustDomain: ca.trustDomain }, 'CA loaded from Secret');
      return { ca, created: false };
    }
    const fresh = await (opts.generate ?? (() => CertificateAuthority.generate({ trustDomain: opts.trustDomain, commonName: 'ambit root CA' })))();
    const outcome = await api.create(ns, name, { [CA_CERT_KEY]: fresh.certPem, [CA_KEY_KEY]: fresh.keyPem() });
    if (outcome === 'created') {
      opts.log?.info({ secret: `${ns}/${name}`, trustDomain: fresh.trustDomain }, 'no CA Secret found: created one with a new root');
      return { ca: fresh, created: true };
    }
    // Another replica won the race: use its CA (read again on the next turn).
    opts.log?.info({ secret: `${ns}/${name}` }, 'CA Secret was created by another replica; using it');
  }
  throw new Error(`${where} keeps appearing and disappearing; giving up`);
}

/** Publishes the trusted roots in a ConfigMap (server-side apply) for ztunnels and waypoints to mount. */
export async function publishRoots(kc: KubeConfig, ca: CertificateAuthority, opts: { namespace?: string; name?: string; timeoutMs?: number } = {}): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const body = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: opts.name ?? ROOT_CERT_CONFIGMAP, namespace: opts.namespace ?? CA_SECRET_NAMESPACE, labels: { 'app.kubernetes.io/managed-by': 'ambit' } },
    data: { [ROOT_CERT_KEY]: ca.rootsPem().map((p) => p.trim() + '\n').join('') },
  };
  try {
    await withTimeout(api.patch(body, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply), opts.timeoutMs ?? 15_000, 'publishing the root certificate');
  } catch (err) {
    throw kubeError(err, kc.getCurrentCluster()?.server);
  }
}
