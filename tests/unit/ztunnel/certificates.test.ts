// ztunnel's certificate store across a root rotation: a new trust bundle reaches every holder
// at once (no renewal needed), the admin view says which root each leaf chains to, and the
// bundle from the control plane's stream wins over the one of a signing response.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { fingerprintOf, summarizeRoot } from '../../../shared/identity/trust.js';
import { CertificateStore, type Signer } from '../../../ztunnel/certificates.js';
import type { TlsMaterial } from '../../../shared/hbone/tls.js';

const ID = 'spiffe://cluster.local/ns/shop/sa/web';
let oldCa: CertificateAuthority;
let newCa: CertificateAuthority;
const log = pino({ level: 'silent' });

before(async () => {
  oldCa = await CertificateAuthority.generate({ commonName: 'old root' });
  newCa = await CertificateAuthority.generate({ commonName: 'new root' });
});

/** A signer backed by whichever CA `current()` names, handing out `roots()`. */
function signer(current: () => CertificateAuthority, roots: () => string[]): Signer {
  return async (identity, csrPem) => {
    const c = await current().signCsr(csrPem, Identity.parse(identity), { ttlSeconds: 3600 });
    return { certPem: c.certPem, chainPem: c.chainPem, rootsPem: roots() };
  };
}

const serial = (pem: string): string => summarizeRoot(pem).serial;

describe('CertificateStore and the trust bundle', () => {
  test('a new bundle reaches holders at once; the same bundle again changes nothing', async () => {
    const store = new CertificateStore(signer(() => oldCa, () => [oldCa.certPem]), log);
    store.retain(ID);
    try {
      const first = await store.get(ID);
      assert.deepEqual(first.rootsPem, [oldCa.certPem]);
      assert.equal(store.list()[0]!.root, serial(oldCa.certPem), 'the leaf chains to the old root');
      const told: [string, TlsMaterial][] = [];
      store.on('renewed', (id, m) => told.push([id, m]));

      assert.equal(store.setRoots([oldCa.certPem]), false, 'the bundle it already has');
      assert.equal(told.length, 0);

      assert.equal(store.setRoots([oldCa.certPem, newCa.certPem]), true);
      assert.equal(told.length, 1);
      assert.equal(told[0]![0], ID);
      assert.deepEqual(told[0]![1].rootsPem.map(fingerprintOf), [oldCa.certPem, newCa.certPem].map(fingerprintOf));
      assert.equal(told[0]![1].certChainPem, first.certChainPem, 'same certificate, new roots');
      assert.deepEqual((await store.get(ID)).rootsPem.map(fingerprintOf), [oldCa.certPem, newCa.certPem].map(fingerprintOf));
      assert.deepEqual(store.trustRoots().map(serial), [oldCa.certPem, newCa.certPem].map(serial));

      assert.equal(store.setRoots([newCa.certPem, oldCa.certPem]), false, 'order does not matter');
      assert.equal(store.setRoots([]), false, 'an empty bundle is ignored');
      // after the drop the leaf of the old root chains to nothing trusted, and the view says so
      assert.equal(store.setRoots([newCa.certPem]), true);
      assert.equal(store.list()[0]!.root, undefined);
    } finally {
      store.close();
    }
  });

  test('leaves signed after the switch name the new root; the stream\'s bundle wins over the signing response\'s', async () => {
    let ca = oldCa;
    const store = new CertificateStore(signer(() => ca, () => [ca.certPem]), log);
    store.retain(ID);
    try {
      store.setRoots([oldCa.certPem, newCa.certPem]);
      const m = await store.get(ID);
      assert.equal(m.rootsPem.length, 2, 'the bundle from the stream, though the response carried one root');
      ca = newCa;
      store.release(ID);
      store.retain(ID);
      await store.get(ID);
      assert.equal(store.list()[0]!.root, serial(newCa.certPem));
    } finally {
      store.close();
    }
  });
});
