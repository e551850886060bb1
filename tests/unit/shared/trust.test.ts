// The mesh trust bundle and root rotation, without sockets: merging bundles, which root a chain
// ends at, which root signs at each step of a rotation, and when the old root may go.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { checkCaChange, fingerprintOf, mergeRoots, rootOfChain, sameRoots, summarizeRoot, unexpiredRoots } from '../../../shared/identity/trust.js';
import { DROP_MARGIN_MS, dropAllowedAt, nextPhase, planStep, type CaFileSet } from '../../../cli/local/ca-rotation.js';

const ID = new Identity('cluster.local', 'shop', 'web');
let oldCa: CertificateAuthority;
let newCa: CertificateAuthority;
let otherTd: CertificateAuthority;

async function leaf(ca: CertificateAuthority): Promise<string[]> {
  const { csrPem } = await generateKeyAndCsr(ID);
  const c = await ca.signCsr(csrPem, ID);
  return [c.certPem, ...c.chainPem];
}

before(async () => {
  oldCa = await CertificateAuthority.generate({ commonName: 'old root' });
  newCa = await CertificateAuthority.generate({ commonName: 'new root' });
  otherTd = await CertificateAuthority.generate({ trustDomain: 'other.local', commonName: 'other root' });
});

describe('trust bundle', () => {
  test('mergeRoots keeps each root once, in the order first seen, and splits PEM bundles', () => {
    const bundle = oldCa.certPem + newCa.certPem;
    const merged = mergeRoots([newCa.certPem], [bundle], [oldCa.certPem]);
    assert.deepEqual(merged.map(fingerprintOf), [newCa.certPem, oldCa.certPem].map(fingerprintOf));
    assert.throws(() => mergeRoots(['not a certificate']), /no "-----BEGIN CERTIFICATE-----" PEM block/);
    assert.deepEqual(mergeRoots(), []);
  });

  test('sameRoots ignores order, not content', () => {
    assert.ok(sameRoots([oldCa.certPem, newCa.certPem], [newCa.certPem, oldCa.certPem]));
    assert.ok(!sameRoots([oldCa.certPem], [oldCa.certPem, newCa.certPem]));
    assert.ok(!sameRoots([oldCa.certPem], [newCa.certPem]));
  });

  test('unexpiredRoots drops the roots past their notAfter', () => {
    const notAfter = new Date(new X509Certificate(oldCa.certPem).validTo);
    assert.equal(unexpiredRoots([oldCa.certPem], new Date(notAfter.getTime() - 1000)).length, 1);
    assert.equal(unexpiredRoots([oldCa.certPem], new Date(notAfter.getTime() + 1000)).length, 0);
  });

  test('rootOfChain names the root a leaf chains to, also through an intermediate, and null for a stranger', async () => {
    const oldLeaf = await leaf(oldCa);
    const newLeaf = await leaf(newCa);
    const both = [oldCa.certPem, newCa.certPem];
    assert.equal(rootOfChain(oldLeaf, both), oldCa.certPem);
    assert.equal(rootOfChain(newLeaf, both), newCa.certPem);
    assert.equal(rootOfChain(oldLeaf, [newCa.certPem]), null, 'after the drop the old leaf chains to nothing trusted');
    assert.equal(rootOfChain([], both), null);
    // DER (as a TLS peer chain arrives), with the root itself at the end
    const der = [...oldLeaf, oldCa.certPem].map((p) => new X509Certificate(p).raw);
    assert.equal(rootOfChain(der, both), oldCa.certPem);
    assert.equal(rootOfChain(der, [newCa.certPem]), null);
    // an intermediate CA signed by the new root
    const inter = await intermediateUnder(newCa);
    const interLeaf = await leaf(inter);
    assert.equal(rootOfChain(interLeaf, both), newCa.certPem);
    assert.equal(summarizeRoot(inter.signerRootPem()).serial, summarizeRoot(newCa.certPem).serial);
    // a broken chain (leaf, then an unrelated CA) is no chain
    assert.equal(rootOfChain([interLeaf[0]!, oldCa.certPem], both), null);
  });

  test('summarizeRoot gives serial, subject, validity and fingerprint', () => {
    const s = summarizeRoot(oldCa.certPem);
    assert.match(s.serial, /^[0-9a-f]+$/);
    assert.match(s.subject, /CN=old root/);
    assert.ok(Date.parse(s.notAfter) > Date.now());
    assert.equal(s.fingerprint, fingerprintOf(oldCa.certPem));
  });
});

/** An intermediate CA whose certificate the root signs (load() with root as extra). */
async function intermediateUnder(root: CertificateAuthority): Promise<CertificateAuthority> {
  const { toPem } = await import('../../../shared/identity/csr.js');
  const { x509, webcrypto } = await import('../../../shared/identity/x509.js');
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const rootCert = new x509.X509Certificate(root.certPem);
  const rootKey = await webcrypto.subtle.importKey('pkcs8', pemDer(root.keyPem()), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: '0a0b0c',
      subject: 'CN=intermediate',
      issuer: rootCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: keys.publicKey,
      signingKey: rootKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams,
      extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    },
    webcrypto,
  );
  const keyPem = toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return CertificateAuthority.load(toPem(cert.rawData, 'CERTIFICATE'), keyPem, { extraRootsPem: [root.certPem] });
}

function pemDer(pem: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64'));
}

describe('a change of CA', () => {
  test('adding a root: roots change, the signer does not, nothing to warn about', async () => {
    const added = await CertificateAuthority.load(oldCa.certPem, oldCa.keyPem(), { extraRootsPem: [newCa.certPem] });
    const c = checkCaChange(oldCa.view(), added.view(), new Map());
    assert.equal(c.error, undefined);
    assert.deepEqual(c.warnings, []);
    assert.deepEqual(c.added.map((r) => r.fingerprint), [fingerprintOf(newCa.certPem)]);
    assert.deepEqual(c.removed, []);
    assert.equal(c.rootsChanged, true);
    assert.equal(c.signerChanged, false);
    assert.equal(summarizeRoot(added.certPem).serial, summarizeRoot(oldCa.certPem).serial, 'the old root still signs');
  });

  test('switching to a root already trusted: the signer changes, the roots do not', async () => {
    const added = await CertificateAuthority.load(oldCa.certPem, oldCa.keyPem(), { extraRootsPem: [newCa.certPem] });
    const switched = await CertificateAuthority.load(newCa.certPem, newCa.keyPem(), { extraRootsPem: [oldCa.certPem] });
    const c = checkCaChange(added.view(), switched.view(), new Map());
    assert.deepEqual([c.error, c.warnings, c.rootsChanged, c.signerChanged], [undefined, [], false, true]);
    assert.equal(fingerprintOf(switched.signerRootPem()), fingerprintOf(newCa.certPem), 'the new root signs');
    assert.equal(fingerprintOf(switched.rootsPem()[0]!), fingerprintOf(newCa.certPem), 'and comes first in the bundle');
  });

  test('switching to a root nobody was given first is warned about', () => {
    const c = checkCaChange(oldCa.view(), newCa.view(), new Map());
    assert.equal(c.error, undefined);
    assert.ok(c.warnings.some((w) => /was not trusted before/.test(w)), c.warnings.join('; '));
  });

  test('dropping a root whose leaves are still valid is warned about; once they expired it is not', async () => {
    const switched = await CertificateAuthority.load(newCa.certPem, newCa.keyPem(), { extraRootsPem: [oldCa.certPem] });
    const now = new Date();
    const live = new Map([[fingerprintOf(oldCa.certPem), new Date(now.getTime() + 30_000)]]);
    const c = checkCaChange(switched.view(), newCa.view(), live, now);
    assert.deepEqual(c.removed.map((r) => r.fingerprint), [fingerprintOf(oldCa.certPem)]);
    assert.ok(c.warnings.some((w) => /leaves it signed are valid until/.test(w)));
    const expired = new Map([[fingerprintOf(oldCa.certPem), new Date(now.getTime() - 1)]]);
    assert.deepEqual(checkCaChange(switched.view(), newCa.view(), expired, now).warnings, []);
  });

  test('another trust domain is refused', () => {
    const c = checkCaChange(oldCa.view(), otherTd.view(), new Map());
    assert.match(c.error ?? '', /trust domain "other.local", the mesh is "cluster.local"/);
  });
});

describe('local root rotation steps (planStep)', () => {
  const pair = (ca: CertificateAuthority) => ({ certPem: ca.certPem, keyPem: ca.keyPem() });
  const start = (): CaFileSet => ({ signer: pair(oldCa), trusted: [] });
  const t0 = new Date('2030-01-01T00:00:00Z');
  const signerFp = (f: CaFileSet): string => fingerprintOf(f.signer.certPem);
  const trustedFps = (f: CaFileSet): string[] => [f.signer.certPem, ...f.trusted].map(fingerprintOf).sort();

  test('add, switch, drop: who signs and who is trusted after each step', () => {
    const s0 = start();
    assert.equal(nextPhase(s0), 'add');
    const s1 = planStep(s0, 'add', { now: t0, leafTtlSeconds: 60, newRoot: pair(newCa) });
    assert.equal(signerFp(s1), fingerprintOf(oldCa.certPem), 'after add the old root still signs');
    assert.deepEqual(trustedFps(s1), [oldCa.certPem, newCa.certPem].map(fingerprintOf).sort(), 'and both are trusted');
    assert.equal(nextPhase(s1), 'switch');

    const s2 = planStep(s1, 'switch', { now: t0, leafTtlSeconds: 60 });
    assert.equal(signerFp(s2), fingerprintOf(newCa.certPem), 'after switch the new root signs');
    assert.deepEqual(trustedFps(s2), [oldCa.certPem, newCa.certPem].map(fingerprintOf).sort(), 'and both are still trusted');
    assert.equal(s2.next, undefined);
    assert.equal(fingerprintOf(s2.previous!), fingerprintOf(oldCa.certPem));
    assert.equal(s2.switchedAt, t0.toISOString());
    assert.equal(nextPhase(s2), 'drop');

    const at = dropAllowedAt(s2.switchedAt!, 60);
    assert.equal(at.getTime(), t0.getTime() + 60_000 + DROP_MARGIN_MS);
    const s3 = planStep(s2, 'drop', { now: at, leafTtlSeconds: 60 });
    assert.equal(signerFp(s3), fingerprintOf(newCa.certPem));
    assert.deepEqual(trustedFps(s3), [fingerprintOf(newCa.certPem)], 'after drop only the new root is trusted');
    assert.equal(s3.previous, undefined);
    assert.equal(nextPhase(s3), 'add', 'and the next rotation may start');
  });

  test('the drop waits for the old root\'s leaves to expire, unless forced', () => {
    const s1 = planStep(start(), 'add', { now: t0, leafTtlSeconds: 3600, newRoot: pair(newCa) });
    const s2 = planStep(s1, 'switch', { now: t0, leafTtlSeconds: 3600 });
    const early = new Date(t0.getTime() + 3600_000);
    assert.throws(() => planStep(s2, 'drop', { now: early, leafTtlSeconds: 3600 }), /may be valid until 2030-01-01T01:00:05.000Z \(5 s from now/);
    const forced = planStep(s2, 'drop', { now: early, leafTtlSeconds: 3600, force: true });
    assert.deepEqual(trustedFps(forced), [fingerprintOf(newCa.certPem)]);
  });

  test('steps out of order are refused and say what comes next', () => {
    assert.throws(() => planStep(start(), 'switch', { now: t0, leafTtlSeconds: 60 }), /cannot switch now: no rotation is under way; start with `--phase add`/);
    assert.throws(() => planStep(start(), 'drop', { now: t0, leafTtlSeconds: 60 }), /cannot drop now/);
    const s1 = planStep(start(), 'add', { now: t0, leafTtlSeconds: 60, newRoot: pair(newCa) });
    assert.throws(() => planStep(s1, 'add', { now: t0, leafTtlSeconds: 60, newRoot: pair(otherTd) }), /cannot add now: a new root was added and waits for `--phase switch`/);
    assert.throws(() => planStep(s1, 'drop', { now: t0, leafTtlSeconds: 60 }), /cannot drop now/);
    const s2 = planStep(s1, 'switch', { now: t0, leafTtlSeconds: 60 });
    assert.throws(() => planStep(s2, 'add', { now: t0, leafTtlSeconds: 60, newRoot: pair(otherTd) }), /waits for `--phase drop`/);
    assert.throws(() => planStep(start(), 'add', { now: t0, leafTtlSeconds: 60, newRoot: pair(oldCa) }), /the new root is the current one/);
  });
});
