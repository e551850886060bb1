// Root rotation in the control plane, through its real gRPC server and ztunnel's real client:
// the trust bundle goes out in every snapshot and, when it changes, at once on the stream; the
// serving certificate moves to the new root at the switch and stays verifiable by ztunnels that
// were given both roots; a CA of another trust domain is refused. Also the CA files of file mode.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ControlServer } from '../../../control/server.js';
import { ServingCertificate } from '../../../control/serving.js';
import { loadCaFiles } from '../../../control/ca-files.js';
import { TokenFileAuthenticator } from '../../../control/auth.js';
import { ControlLink } from '../../../ztunnel/control-client.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { fingerprintOf, rootOfChain } from '../../../shared/identity/trust.js';
import { CONTROL_SERVER_NAME } from '../../../shared/control/protocol.js';
import { toKubeObject, MESH_RESOURCES } from '../../../shared/config/kube-source.js';
import type { MeshUpdate } from '../../../shared/model/types.js';
import { pod } from '../k8s/fixtures.js';

const TOKEN = 'node-1-token-0123456789abcdef';
const WEB = 'spiffe://cluster.local/ns/shop/sa/web';
const log = pino({ level: 'silent' });

async function eventually<T>(fn: () => T | undefined | false, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const fps = (roots: readonly string[] | undefined): string[] => (roots ?? []).map(fingerprintOf).sort();

describe('control plane CA rotation', () => {
  let dir: string;
  let oldCa: CertificateAuthority;
  let newCa: CertificateAuthority;
  let server: ControlServer;
  let serving: ServingCertificate;
  let address: string;
  const links: ControlLink[] = [];

  /** A ztunnel's link trusting `roots` for the control plane, collecting its updates. */
  const connect = (roots: string[]): { link: ControlLink; updates: MeshUpdate[] } => {
    const link = new ControlLink(address, roots.join(''), 'node-1', TOKEN, log);
    const updates: MeshUpdate[] = [];
    link.on('update', (u) => updates.push(u));
    link.start();
    links.push(link);
    return { link, updates };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ambit-ca-rotation-'));
    oldCa = await CertificateAuthority.generate({ commonName: 'old root' });
    newCa = await CertificateAuthority.generate({ commonName: 'new root' });
    await writeFile(join(dir, 'tokens.json'), JSON.stringify({ [TOKEN]: 'node-1' }));
    server = new ControlServer(oldCa, await TokenFileAuthenticator.load(join(dir, 'tokens.json')), log, 600);
    server.setObjects([toKubeObject(pod('shop', 'web-12345', { node: 'node-1', sa: 'web', ip: '10.244.1.10' }), MESH_RESOURCES.Pod)]);
    serving = new ServingCertificate({ dnsNames: [CONTROL_SERVER_NAME], ipAddresses: ['127.0.0.1'], ttlSeconds: 3600 });
    await serving.issue(oldCa);
    address = `127.0.0.1:${await server.listen('127.0.0.1:0', serving.credentials())}`;
  });

  after(async () => {
    for (const l of links) l.stop();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  const sign = async (link: ControlLink): Promise<string[]> => {
    const { csrPem } = await generateKeyAndCsr(Identity.parse(WEB));
    const r = await link.sign(WEB, csrPem);
    return [r.certPem, ...r.chainPem];
  };

  test('add, switch, drop: bundles on the stream, the signer, and the serving certificate at each step', async () => {
    const a = connect([oldCa.certPem]);
    const snap = await eventually(() => a.updates.find((u) => u.type === 'snapshot'), 'the snapshot');
    assert.deepEqual(fps(snap.roots), fps([oldCa.certPem]), 'the snapshot carries the roots');

    // add: both roots trusted, pushed at once; the old root still signs
    const added = await CertificateAuthority.load(oldCa.certPem, oldCa.keyPem(), { extraRootsPem: [newCa.certPem] });
    const c1 = server.setCa(added);
    assert.deepEqual([c1.rootsChanged, c1.signerChanged, c1.warnings], [true, false, []]);
    const pushed = await eventually(() => a.updates.find((u) => u.type === 'delta' && u.roots), 'the bundle on the stream');
    assert.deepEqual(fps(pushed.roots), fps([oldCa.certPem, newCa.certPem]));
    assert.equal(pushed.version, snap.version + 1, 'a bundle change is a new version');
    a.link.setRoots(pushed.roots!);
    const leaf1 = await sign(a.link);
    assert.equal(rootOfChain(leaf1, [oldCa.certPem, newCa.certPem]), oldCa.certPem);

    // switch: the new root signs and serves; a ztunnel given both roots verifies it, one given
    // only the old root would not (hence add first)
    const switched = await CertificateAuthority.load(newCa.certPem, newCa.keyPem(), { extraRootsPem: [oldCa.certPem] });
    const c2 = server.setCa(switched);
    await serving.issue(switched);
    assert.deepEqual([c2.rootsChanged, c2.signerChanged, c2.warnings], [false, true, []]);
    const leaf2 = await sign(a.link);
    assert.equal(rootOfChain(leaf2, [oldCa.certPem, newCa.certPem]), newCa.certPem, 'leaves are signed under the new root');
    const b = connect([oldCa.certPem, newCa.certPem]);
    const snapB = await eventually(() => b.updates.find((u) => u.type === 'snapshot'), 'a new connection after the switch');
    assert.deepEqual(fps(snapB.roots), fps([oldCa.certPem, newCa.certPem]));
    const stale = connect([oldCa.certPem]);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(stale.updates.length, 0, 'a ztunnel that never learnt the new root cannot verify the control plane after the switch');
    stale.link.stop();

    // drop: the old root goes from every bundle; the open stream hears it at once
    const dropped = await CertificateAuthority.load(newCa.certPem, newCa.keyPem());
    const c3 = server.setCa(dropped);
    assert.deepEqual(c3.removed.map((r) => r.fingerprint), [fingerprintOf(oldCa.certPem)]);
    assert.ok(c3.warnings.some((w) => /leaves it signed are valid until/.test(w)), 'the old root still has live leaves (leaf1): warned');
    const last = await eventually(() => a.updates.filter((u) => u.roots).at(-1)!.roots!.length === 1 && a.updates.filter((u) => u.roots).at(-1), 'the dropped bundle');
    assert.deepEqual(fps(last.roots), fps([newCa.certPem]));
    assert.equal(server.trustedRoots().length, 1);
  });

  test('a CA of another trust domain is refused and the current one stays', async () => {
    const before = server.trustedRoots();
    const other = await CertificateAuthority.generate({ trustDomain: 'other.local' });
    assert.throws(() => server.setCa(other), /trust domain "other.local", the mesh is "cluster.local"/);
    assert.deepEqual(fps(server.trustedRoots()), fps(before));
  });
});

describe('file mode CA files', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let extra: CertificateAuthority;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ambit-ca-files-'));
    ca = await CertificateAuthority.generate();
    extra = await CertificateAuthority.generate({ commonName: 'next root' });
    await writeFile(join(dir, 'cert.pem'), ca.certPem);
    await writeFile(join(dir, 'key.pem'), ca.keyPem());
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const files = (trusted?: string) => ({ caCert: join(dir, 'cert.pem'), caKey: join(dir, 'key.pem'), ...(trusted ? { trustedRoots: join(dir, trusted) } : {}) });

  test('no trusted-roots file, or an empty one: only the signer\'s root', async () => {
    assert.equal((await loadCaFiles(files())).rootsPem().length, 1);
    await writeFile(join(dir, 'empty.pem'), '\n');
    assert.equal((await loadCaFiles(files('empty.pem'))).rootsPem().length, 1);
  });

  test('extra roots are trusted beside the signer\'s, the signer\'s first', async () => {
    await writeFile(join(dir, 'roots.pem'), extra.certPem + ca.certPem);
    const loaded = await loadCaFiles(files('roots.pem'));
    assert.deepEqual(loaded.rootsPem().map(fingerprintOf), [ca.certPem, extra.certPem].map(fingerprintOf));
  });

  test('a broken or missing file is a clear error naming it', async () => {
    await writeFile(join(dir, 'garbage.pem'), 'not a certificate');
    await assert.rejects(loadCaFiles(files('garbage.pem')), /extra root #1: no "-----BEGIN CERTIFICATE-----".*garbage\.pem/);
    await assert.rejects(loadCaFiles(files('missing.pem')), /--trusted-roots .*missing\.pem: no such file/);
    await assert.rejects(loadCaFiles({ caCert: join(dir, 'nope.pem'), caKey: join(dir, 'key.pem') }), /--ca-cert .*nope\.pem: no such file/);
  });
});
