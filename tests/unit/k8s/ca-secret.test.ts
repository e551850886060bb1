// The CA from Secret ambit-system/ambit-ca: created on first start, reused after, one winner
// when replicas race (create → 409 AlreadyExists → read back), plug-in CAs (intermediate +
// root-cert.pem), clear errors for a broken Secret, roots published in a ConfigMap.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { FakeApiServer } from './fake-apiserver.js';
import { captureLogger, kubeConfigFor, namespace } from './fixtures.js';
import { CA_CERT_KEY, CA_KEY_KEY, ROOT_CERT_KEY, caFromSecretData, kubeCaSecretApi, loadOrCreateCa, publishRoots, type CaSecretApi } from '../../../control/ca-secret.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr, toPem } from '../../../shared/identity/csr.js';
import { x509, webcrypto, EC_P256 } from '../../../shared/identity/x509.js';
import { Identity } from '../../../shared/identity/spiffe.js';

const secretText = (fake: FakeApiServer, name = 'ambit-ca'): Record<string, string> => {
  const s = fake.get('v1', 'Secret', 'ambit-system', name)!;
  return Object.fromEntries(Object.entries(s.data as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
};

/** An intermediate CA signed by a separate root (an operator's "plug-in" CA). */
async function pluginCa(): Promise<{ root: CertificateAuthority; certPem: string; keyPem: string }> {
  const root = await CertificateAuthority.generate({ commonName: 'corp root' });
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const rootCert = new x509.X509Certificate(root.certPem);
  const rootKey = await webcrypto.subtle.importKey('pkcs8', Buffer.from(root.keyPem().replace(/-----[^-]+-----|\s/g, ''), 'base64'), EC_P256 as EcKeyImportParams, false, ['sign']);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '0a1b2c',
      subject: 'CN=ambit intermediate',
      issuer: rootCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * 86_400_000),
      publicKey: keys.publicKey,
      signingKey: rootKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto)],
    },
    webcrypto,
  );
  return { root, certPem: toPem(cert.rawData, 'CERTIFICATE'), keyPem: toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY') };
}

describe('CA Secret', () => {
  let fake: FakeApiServer;
  before(async () => {
    fake = await FakeApiServer.start();
    fake.put(namespace('ambit-system'));
  });
  after(async () => fake.close());

  test('first start creates the Secret with ca-cert.pem and ca-key.pem; the next start loads the same CA', async () => {
    const api = kubeCaSecretApi(kubeConfigFor(fake));
    const { log, has } = captureLogger();
    const first = await loadOrCreateCa(api, { log });
    assert.equal(first.created, true);
    assert.ok(has('no CA Secret found: created one with a new root'));
    const data = secretText(fake);
    assert.deepEqual(Object.keys(data).sort(), [CA_CERT_KEY, CA_KEY_KEY]);
    assert.equal(data[CA_CERT_KEY], first.ca.certPem);
    assert.equal(fake.get('v1', 'Secret', 'ambit-system', 'ambit-ca')!.type, 'Opaque');
    const second = await loadOrCreateCa(api);
    assert.equal(second.created, false);
    assert.equal(second.ca.certPem, first.ca.certPem);
    // the loaded CA signs leaves that chain to the same root
    const { csrPem } = await generateKeyAndCsr(new Identity('cluster.local', 'shop', 'web'));
    const leaf = await second.ca.signCsr(csrPem, new Identity('cluster.local', 'shop', 'web'));
    assert.ok(new X509Certificate(leaf.certPem).verify(new X509Certificate(first.ca.certPem).publicKey));
  });

  test('replicas starting together: exactly one creates it, every one ends with the same CA', async () => {
    fake.remove('v1', 'Secret', 'ambit-system', 'ambit-ca');
    // all replicas read "absent" before any of them creates it
    const real = kubeCaSecretApi(kubeConfigFor(fake));
    let readers = 0;
    let release!: () => void;
    const allRead = new Promise<void>((r) => (release = r));
    const racing: CaSecretApi = {
      async read(ns, name) {
        const v = await real.read(ns, name);
        if (v === null && readers < 4) {
          readers++;
          if (readers === 4) release();
          await allRead;
        }
        return v;
      },
      create: (ns, name, data) => real.create(ns, name, data),
    };
    const results = await Promise.all([1, 2, 3, 4].map(() => loadOrCreateCa(racing)));
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal(new Set(results.map((r) => r.ca.certPem)).size, 1, 'one CA for all');
    assert.equal(results[0]!.ca.certPem, secretText(fake)[CA_CERT_KEY]);
    assert.equal(fake.audit.filter((a) => a.verb === 'create' && a.resource === 'secrets' && a.status === 409).length, 3, 'the losers got 409 AlreadyExists');
  });

  test('a plug-in intermediate CA with its root in root-cert.pem: leaves chain through it', async () => {
    const { root, certPem, keyPem } = await pluginCa();
    fake.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'plugged', namespace: 'ambit-system' }, type: 'Opaque', stringData: { [CA_CERT_KEY]: certPem, [CA_KEY_KEY]: keyPem, [ROOT_CERT_KEY]: root.certPem } });
    const { ca, created } = await loadOrCreateCa(kubeCaSecretApi(kubeConfigFor(fake)), { name: 'plugged' });
    assert.equal(created, false);
    assert.deepEqual(ca.rootsPem().map((p) => p.trim()), [root.certPem.trim()]);
    assert.equal(ca.chainPem().length, 1);
  });

  test('extra roots in root-cert.pem are trusted alongside a self-signed CA (rotation)', async () => {
    const oldRoot = await CertificateAuthority.generate({ commonName: 'old root' });
    const current = await CertificateAuthority.generate({ commonName: 'new root' });
    const ca = await caFromSecretData({ [CA_CERT_KEY]: current.certPem, [CA_KEY_KEY]: current.keyPem(), [ROOT_CERT_KEY]: oldRoot.certPem }, 'Secret x/y');
    assert.equal(ca.rootsPem().length, 2);
  });

  test('a Secret without the key, or with a key that does not match, is a clear error (and is never overwritten)', async () => {
    const good = await CertificateAuthority.generate();
    const other = await CertificateAuthority.generate();
    fake.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'broken', namespace: 'ambit-system' }, stringData: { [CA_CERT_KEY]: good.certPem } });
    const api = kubeCaSecretApi(kubeConfigFor(fake));
    await assert.rejects(loadOrCreateCa(api, { name: 'broken' }), /Secret ambit-system\/broken lacks ca-key\.pem/);
    fake.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'broken', namespace: 'ambit-system' }, stringData: { [CA_CERT_KEY]: good.certPem, [CA_KEY_KEY]: other.keyPem() } });
    await assert.rejects(loadOrCreateCa(api, { name: 'broken' }), /Secret ambit-system\/broken: CA key does not match the CA certificate/);
    assert.equal(fake.get('v1', 'Secret', 'ambit-system', 'broken')!.metadata.resourceVersion !== undefined, true);
  });

  test('a missing namespace: the API error says so', async () => {
    const api = kubeCaSecretApi(kubeConfigFor(fake));
    await assert.rejects(loadOrCreateCa(api, { namespace: 'nowhere' }), /namespaces "nowhere" not found/);
  });

  test('the roots are published in ConfigMap ambit-root-cert by server-side apply, idempotently', async () => {
    const kc = kubeConfigFor(fake);
    const { ca } = await loadOrCreateCa(kubeCaSecretApi(kc));
    await publishRoots(kc, ca);
    const cm = fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert')!;
    assert.equal((cm.data as Record<string, string>)[ROOT_CERT_KEY]!.trim(), ca.rootsPem().join('').trim());
    assert.ok((cm.metadata.managedFields as { manager: string; operation: string }[]).some((m) => m.manager === 'ambit' && m.operation === 'Apply'));
    const rv = cm.metadata.resourceVersion;
    await publishRoots(kc, ca);
    assert.equal(fake.get('v1', 'ConfigMap', 'ambit-system', 'ambit-root-cert')!.metadata.resourceVersion, rv, 'no change, no new version');
  });
});
