import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { DEFAULT_TRUST_DOMAIN, Identity } from '../../../shared/identity/spiffe.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import {
  describeCertificate,
  generateKeyAndCsr,
  spiffeIdFromSubjectAltName,
  toPem,
} from '../../../shared/identity/csr.js';
import { x509 } from '../../../shared/identity/x509.js';

const execFileP = promisify(execFile);

interface Creds {
  keyPem: string;
  certPem: string;
  chainPem: string[];
}

async function workload(ca: CertificateAuthority, id: Identity, ttlSeconds?: number): Promise<Creds> {
  const { keyPem, csrPem } = await generateKeyAndCsr(id);
  const issued = await ca.signCsr(csrPem, id, ttlSeconds === undefined ? {} : { ttlSeconds });
  return { keyPem, certPem: issued.certPem, chainPem: issued.chainPem };
}

interface HandshakeResult {
  ok: boolean;
  /** What the server saw of the client (only when the handshake completed on the server). */
  serverSawPeer: Identity | null;
  /** What the client saw of the server. */
  clientSawPeer: Identity | null;
  alpn: string | false | null;
  protocol: string | null;
  clientError?: string;
  serverError?: string;
  /** Why the server's chain check failed (only observable with `observeOnly`). */
  serverAuthorizationError?: string;
}

/**
 * A real HBONE-style mTLS handshake on 127.0.0.1: TLS 1.3 only, ALPN h2, the server requires
 * and verifies the client chain, the client checks the server's SPIFFE id.
 */
async function handshake(opts: {
  server: Creds;
  serverRoots: string[];
  client: Creds;
  clientRoots: string[];
  expectServer: Identity;
  /** Server lets unverified clients finish the handshake so the test can read why they failed. */
  observeOnly?: boolean;
}): Promise<HandshakeResult> {
  let serverSawPeer: Identity | null = null;
  let serverError: string | undefined;
  let serverAuthorizationError: string | undefined;
  let serverDone!: () => void;
  const serverOutcome = new Promise<void>((resolve) => (serverDone = resolve));
  const server = tls.createServer({
    key: opts.server.keyPem,
    cert: opts.server.certPem + opts.server.chainPem.join(''),
    ca: opts.serverRoots,
    requestCert: true,
    rejectUnauthorized: !opts.observeOnly,
    minVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
  });
  server.on('secureConnection', (s) => {
    if (s.authorizationError) serverAuthorizationError = String(s.authorizationError);
    serverSawPeer = spiffeIdFromSubjectAltName(s.getPeerCertificate().subjectaltname);
    s.end('ok');
    serverDone();
  });
  server.on('tlsClientError', (err) => {
    serverError = err.message;
    serverDone();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const client = await new Promise<Omit<HandshakeResult, 'serverSawPeer' | 'serverError'>>((resolve) => {
      let clientSawPeer: Identity | null = null;
      let alpn: string | false | null = null;
      let protocol: string | null = null;
      let data = '';
      let settled = false;
      const finish = (ok: boolean, clientError?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        resolve({ ok, clientSawPeer, alpn, protocol, ...(clientError === undefined ? {} : { clientError }) });
      };
      const sock = tls.connect({
        host: '127.0.0.1',
        port,
        key: opts.client.keyPem,
        cert: opts.client.certPem + opts.client.chainPem.join(''),
        ca: opts.clientRoots,
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
        // No DNS SANs in workload certs: the server is authenticated by its SPIFFE id.
        checkServerIdentity: (_host, cert) => {
          const id = spiffeIdFromSubjectAltName(cert.subjectaltname);
          return id?.equals(opts.expectServer) ? undefined : new Error(`unexpected server identity ${String(id)}`);
        },
      });
      const timer = setTimeout(() => finish(false, 'timeout'), 5000);
      sock.on('secureConnect', () => {
        clientSawPeer = spiffeIdFromSubjectAltName(sock.getPeerCertificate().subjectaltname);
        alpn = sock.alpnProtocol;
        protocol = sock.getProtocol();
      });
      sock.on('data', (d: Buffer) => (data += d.toString()));
      // TLS 1.3: a client refused by the server only learns it on its first read.
      sock.on('end', () => finish(data === 'ok'));
      sock.on('error', (err) => finish(false, err.message));
    });
    // The client may give up before the server reports its side of a failed handshake.
    await Promise.race([serverOutcome, new Promise((r) => setTimeout(r, 1000))]);
    return {
      ...client,
      serverSawPeer,
      ...(serverError === undefined ? {} : { serverError }),
      ...(serverAuthorizationError === undefined ? {} : { serverAuthorizationError }),
    };
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Re-encodes a CSR with one byte of its SPIFFE id changed, keeping the DER well-formed. */
function tamperCsr(csrPem: string, from: string, to: string): string {
  const b64 = csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Buffer.from(b64, 'base64');
  const at = der.indexOf(Buffer.from(from));
  assert.ok(at >= 0, 'identity bytes present in CSR');
  Buffer.from(to).copy(der, at);
  return toPem(der, 'CERTIFICATE REQUEST');
}

describe('Identity', () => {
  test('builds the Istio-style URI; empty service account means default', () => {
    const id = new Identity('cluster.local', 'shop', '');
    assert.equal(id.serviceAccount, 'default');
    assert.equal(id.toString(), 'spiffe://cluster.local/ns/shop/sa/default');
    assert.equal(DEFAULT_TRUST_DOMAIN, 'cluster.local');
  });

  test('parse round-trips and equals compares every part', () => {
    const uri = 'spiffe://example.org/ns/prod-1/sa/payments.api';
    const id = Identity.parse(uri);
    assert.equal(id.trustDomain, 'example.org');
    assert.equal(id.namespace, 'prod-1');
    assert.equal(id.serviceAccount, 'payments.api');
    assert.equal(id.toString(), uri);
    assert.ok(id.equals(Identity.parse(uri)));
    assert.ok(!id.equals(new Identity('example.org', 'prod-1', 'other')));
    assert.ok(!id.equals(new Identity('other.org', 'prod-1', 'payments.api')));
    assert.ok(!id.equals(new Identity('example.org', 'prod-2', 'payments.api')));
  });

  test('parse rejects anything that is not spiffe://td/ns/NS/sa/SA', () => {
    for (const bad of [
      'spiffe://td/ns/a',
      'http://td/ns/a/sa/b',
      'spiffe://td/ns/a/sa/b/extra',
      'spiffe://td/ns//sa/b',
      'spiffe:///ns/a/sa/b',
      'spiffe://td/ns/a/sa/',
      'spiffe://td/namespace/a/sa/b',
      'spiffe://td/ns/a/sa/b?x=1',
      'spiffe://td:8080/ns/a/sa/b',
      'spiffe://TD/ns/a/sa/b',
      'spiffe://td/ns/A/sa/b',
      '',
    ]) {
      assert.throws(() => Identity.parse(bad), /invalid SPIFFE id|SPIFFE identity|trust domain/, bad);
    }
  });

  test('constructor rejects invalid names with a clear message', () => {
    assert.throws(() => new Identity('cluster.local', '', 'sa'), /namespace must not be empty/);
    assert.throws(() => new Identity('cluster.local', 'Bad_NS', 'sa'), /invalid namespace "Bad_NS"/);
    assert.throws(() => new Identity('cluster.local', 'ns', 'a/b'), /invalid service account "a\/b"/);
    assert.throws(() => new Identity('', 'ns', 'sa'), /trust domain must not be empty/);
    assert.throws(() => new Identity('a b', 'ns', 'sa'), /invalid SPIFFE trust domain/);
  });
});

describe('spiffeIdFromSubjectAltName', () => {
  test('finds the single URI SAN among other names, accepts a PEM, and refuses ambiguity', async () => {
    const id = 'spiffe://cluster.local/ns/a/sa/b';
    assert.equal(spiffeIdFromSubjectAltName(`URI:${id}`)?.toString(), id);
    assert.equal(spiffeIdFromSubjectAltName(`DNS:foo.example, URI:${id}, IP Address:10.0.0.1`)?.toString(), id);
    // Node JSON-quotes values that contain separators.
    assert.equal(spiffeIdFromSubjectAltName(`DNS:"a,b", URI:"${id}"`)?.toString(), id);
    assert.equal(spiffeIdFromSubjectAltName(undefined), null);
    assert.equal(spiffeIdFromSubjectAltName(''), null);
    assert.equal(spiffeIdFromSubjectAltName('DNS:foo.example'), null);
    assert.equal(spiffeIdFromSubjectAltName(`URI:${id}, URI:spiffe://cluster.local/ns/c/sa/d`), null);
    assert.equal(spiffeIdFromSubjectAltName('URI:https://example.com/'), null);
    assert.equal(spiffeIdFromSubjectAltName('URI:spiffe://cluster.local/ns/a'), null);

    const ca = await CertificateAuthority.generate({});
    const creds = await workload(ca, Identity.parse(id));
    assert.equal(spiffeIdFromSubjectAltName(creds.certPem)?.toString(), id);
  });
});

describe('CertificateAuthority', () => {
  test('generate makes a self-signed P-256 root for the trust domain', async () => {
    const ca = await CertificateAuthority.generate({ trustDomain: 'example.org', commonName: 'test root' });
    assert.equal(ca.trustDomain, 'example.org');
    assert.deepEqual(ca.rootsPem(), [ca.certPem]);
    const root = new X509Certificate(ca.certPem);
    assert.ok(root.ca);
    assert.ok(root.checkIssued(root) && root.verify(root.publicKey));
    assert.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(root.checkPrivateKey(createPrivateKey(ca.keyPem())));
    const d = describeCertificate(ca.certPem);
    assert.ok(d.isCa);
    assert.match(d.subject, /CN=test root/);
    assert.ok(d.notAfter.getTime() - Date.now() > 3649 * 86_400_000);
  });

  test('signCsr issues a leaf users can rely on', async () => {
    const ca = await CertificateAuthority.generate({});
    const id = new Identity(DEFAULT_TRUST_DOMAIN, 'shop', 'checkout');
    const { keyPem, csrPem } = await generateKeyAndCsr(id);
    const before = Date.now();
    const issued = await ca.signCsr(csrPem, id);
    const root = new X509Certificate(ca.certPem);
    const leaf = new X509Certificate(issued.certPem);

    assert.ok(leaf.verify(root.publicKey), 'signed by the root key');
    assert.ok(leaf.checkIssued(root), 'issuer matches the root');
    assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), 'leaf carries the CSR key');
    assert.equal(leaf.ca, false);
    assert.equal(leaf.subjectAltName, `URI:${id.toString()}`, 'exactly one SAN, the SPIFFE URI');
    assert.deepEqual(describeCertificate(issued.certPem).uriSans, [id.toString()]);
    assert.equal(leaf.publicKey.asymmetricKeyType, 'ec');
    assert.equal(leaf.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(createPrivateKey(keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);

    const ttl = issued.notAfter.getTime() - issued.notBefore.getTime();
    assert.ok(Math.abs(issued.notAfter.getTime() - (before + 24 * 3600_000)) < 5_000, 'expires 24h from now');
    assert.ok(ttl >= 24 * 3600_000 && ttl <= 24 * 3600_000 + 120_000, `validity ~24h (got ${ttl} ms)`);
    assert.ok(issued.notBefore.getTime() <= before, 'valid immediately');
    assert.match(issued.serial, /^[0-9a-f]{32}$/);
    assert.equal(issued.serial, leaf.serialNumber.toLowerCase());
    assert.deepEqual(issued.rootsPem, [ca.certPem]);
    assert.deepEqual(issued.chainPem, []);

    const d = describeCertificate(issued.certPem);
    assert.equal(d.serial, issued.serial);
    assert.equal(d.isCa, false);
    assert.equal(d.notAfter.getTime(), issued.notAfter.getTime());

    const short = await ca.signCsr(csrPem, id, { ttlSeconds: 3600 });
    const shortTtl = short.notAfter.getTime() - Date.now();
    assert.ok(shortTtl > 3590_000 && shortTtl <= 3600_000, `custom TTL honoured (${shortTtl} ms)`);
    assert.notEqual(short.serial, issued.serial, 'serials are random');
  });

  test('mTLS handshake (TLS 1.3, ALPN h2) succeeds and each side sees the other SPIFFE id', async () => {
    const ca = await CertificateAuthority.generate({});
    const serverId = new Identity('cluster.local', 'shop', 'backend');
    const clientId = new Identity('cluster.local', 'shop', 'frontend');
    const r = await handshake({
      server: await workload(ca, serverId),
      serverRoots: ca.rootsPem(),
      client: await workload(ca, clientId),
      clientRoots: ca.rootsPem(),
      expectServer: serverId,
    });
    assert.deepEqual([r.clientError, r.serverError], [undefined, undefined]);
    assert.ok(r.ok);
    assert.equal(r.protocol, 'TLSv1.3');
    assert.equal(r.alpn, 'h2');
    assert.ok(r.serverSawPeer?.equals(clientId), `server saw ${String(r.serverSawPeer)}`);
    assert.ok(r.clientSawPeer?.equals(serverId), `client saw ${String(r.clientSawPeer)}`);
  });

  test('the server refuses a client whose certificate comes from another CA', async () => {
    const ca = await CertificateAuthority.generate({});
    const rogue = await CertificateAuthority.generate({});
    const serverId = new Identity('cluster.local', 'shop', 'backend');
    const clientId = new Identity('cluster.local', 'shop', 'frontend');
    const server = await workload(ca, serverId);
    const client = await workload(rogue, clientId);
    const opts = { server, serverRoots: ca.rootsPem(), client, clientRoots: ca.rootsPem(), expectServer: serverId };
    const r = await handshake(opts);
    assert.equal(r.ok, false, 'client got no data');
    assert.equal(r.serverSawPeer, null, 'server never accepted the connection');
    assert.ok(r.serverError, 'server reported the failed handshake');
    // Same handshake with verification only observed: the client chain is the reason.
    const seen = await handshake({ ...opts, observeOnly: true });
    assert.match(seen.serverAuthorizationError ?? '', /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_SIGNATURE_FAILURE/);
  });

  test('the client refuses a server with an unexpected SPIFFE id', async () => {
    const ca = await CertificateAuthority.generate({});
    const r = await handshake({
      server: await workload(ca, new Identity('cluster.local', 'shop', 'impostor')),
      serverRoots: ca.rootsPem(),
      client: await workload(ca, new Identity('cluster.local', 'shop', 'frontend')),
      clientRoots: ca.rootsPem(),
      expectServer: new Identity('cluster.local', 'shop', 'backend'),
    });
    assert.equal(r.ok, false);
    assert.match(r.clientError ?? '', /unexpected server identity spiffe:\/\/cluster.local\/ns\/shop\/sa\/impostor/);
  });

  test('signCsr refuses a CSR asking for a different identity', async () => {
    const ca = await CertificateAuthority.generate({});
    const { csrPem } = await generateKeyAndCsr(new Identity('cluster.local', 'shop', 'admin'));
    await assert.rejects(
      ca.signCsr(csrPem, new Identity('cluster.local', 'shop', 'frontend')),
      /CSR identity mismatch: CSR requests \[spiffe:\/\/cluster.local\/ns\/shop\/sa\/admin\] but the caller may only get spiffe:\/\/cluster.local\/ns\/shop\/sa\/frontend/,
    );
  });

  test('signCsr refuses a tampered CSR', async () => {
    const ca = await CertificateAuthority.generate({});
    const id = new Identity('cluster.local', 'shop', 'frontend');
    const { csrPem } = await generateKeyAndCsr(id);
    // Rewrite the requested SAN to another identity of the same length: DER stays valid.
    const tampered = tamperCsr(csrPem, '/sa/frontend', '/sa/frontenx');
    await assert.rejects(
      ca.signCsr(tampered, new Identity('cluster.local', 'shop', 'frontenx')),
      /signature does not verify/,
    );
  });

  test('signCsr gives clear errors for garbage input', async () => {
    const ca = await CertificateAuthority.generate({});
    const id = new Identity('cluster.local', 'shop', 'frontend');
    await assert.rejects(ca.signCsr('hello world', id), /invalid CSR: no "-----BEGIN CERTIFICATE REQUEST-----" PEM block found/);
    await assert.rejects(ca.signCsr('', id), /invalid CSR: no/);
    await assert.rejects(
      ca.signCsr('-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n', id),
      /invalid CSR: malformed PKCS#10 DER/,
    );
    await assert.rejects(
      ca.signCsr('-----BEGIN CERTIFICATE REQUEST-----\n!!!not base64!!!\n-----END CERTIFICATE REQUEST-----\n', id),
      /malformed PEM CERTIFICATE REQUEST: body is not valid base64/,
    );
  });

  test('signCsr refuses identities outside its trust domain and non-P-256 keys', async () => {
    const ca = await CertificateAuthority.generate({ trustDomain: 'cluster.local' });
    const foreign = new Identity('evil.example', 'shop', 'frontend');
    const { csrPem } = await generateKeyAndCsr(foreign);
    await assert.rejects(ca.signCsr(csrPem, foreign), /trust domain "evil.example" is not this CA's "cluster.local"/);

    const id = new Identity('cluster.local', 'shop', 'frontend');
    const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const p384 = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }])],
    });
    await assert.rejects(ca.signCsr(p384.toString('pem'), id), /workload keys must be ECDSA P-256/);
  });

  test('load accepts a persisted CA and rejects mismatched keys, non-CA certificates and garbage', async () => {
    const a = await CertificateAuthority.generate({ trustDomain: 'example.org' });
    const b = await CertificateAuthority.generate({});
    const loaded = await CertificateAuthority.load(a.certPem, a.keyPem());
    assert.equal(loaded.trustDomain, 'example.org', 'trust domain read back from the root');
    const id = new Identity('example.org', 'ns1', 'sa1');
    const creds = await workload(loaded, id);
    assert.ok(new X509Certificate(creds.certPem).verify(new X509Certificate(a.certPem).publicKey));

    await assert.rejects(CertificateAuthority.load(a.certPem, b.keyPem()), /CA key does not match the CA certificate/);
    await assert.rejects(CertificateAuthority.load(creds.certPem, creds.keyPem), /is not a CA certificate/);
    await assert.rejects(CertificateAuthority.load('garbage', a.keyPem()), /invalid CA certificate: no "-----BEGIN CERTIFICATE-----"/);
    await assert.rejects(CertificateAuthority.load(a.certPem, 'garbage'), /invalid CA key/);
    // SEC1 ("EC PRIVATE KEY") keys, as openssl writes them, load too.
    const sec1 = createPrivateKey(a.keyPem()).export({ type: 'sec1', format: 'pem' }) as string;
    assert.ok(await CertificateAuthority.load(a.certPem, sec1));
  });

  test('root rotation: old and new roots are both trusted during the overlap', async () => {
    const oldCa = await CertificateAuthority.generate({ commonName: 'old root' });
    const newCa = await CertificateAuthority.generate({ commonName: 'new root' });
    const rotated = await CertificateAuthority.load(newCa.certPem, newCa.keyPem(), { extraRootsPem: [oldCa.certPem] });
    assert.deepEqual(rotated.rootsPem(), [newCa.certPem, oldCa.certPem]);

    const serverId = new Identity('cluster.local', 'shop', 'backend');
    const clientId = new Identity('cluster.local', 'shop', 'frontend');
    // A workload still holding a leaf from the old root talks to one already renewed under the new root.
    const oldLeaf = await workload(oldCa, serverId);
    const newLeaf = await workload(rotated, clientId);
    assert.deepEqual((await rotated.signCsr((await generateKeyAndCsr(clientId)).csrPem, clientId)).rootsPem, rotated.rootsPem());
    for (const [server, client, sId] of [
      [oldLeaf, newLeaf, serverId],
      [newLeaf, oldLeaf, clientId],
    ] as const) {
      const r = await handshake({
        server,
        serverRoots: rotated.rootsPem(),
        client,
        clientRoots: rotated.rootsPem(),
        expectServer: sId,
      });
      assert.deepEqual([r.clientError, r.serverError], [undefined, undefined]);
      assert.ok(r.ok);
    }
    // Control: trusting only the new root, the old leaf is refused — the extra root is what carries the overlap.
    const without = await handshake({
      server: oldLeaf,
      serverRoots: [newCa.certPem],
      client: newLeaf,
      clientRoots: [newCa.certPem],
      expectServer: serverId,
    });
    assert.equal(without.ok, false);
  });

  test('issueServing makes a cert Node verifies by DNS name and IP', async () => {
    const ca = await CertificateAuthority.generate({});
    const s = await ca.issueServing({ dnsNames: ['ambit-control.ambit-system.svc', 'localhost'], ipAddresses: ['127.0.0.1'] });
    const cert = new X509Certificate(s.certPem);
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey));
    assert.ok(cert.checkPrivateKey(createPrivateKey(s.keyPem)));
    assert.equal(cert.checkHost('ambit-control.ambit-system.svc'), 'ambit-control.ambit-system.svc');
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(cert.ca, false);

    const server = tls.createServer({ key: s.keyPem, cert: s.certPem, minVersion: 'TLSv1.3' }, (sock) => sock.end('hi'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      // Node's default hostname check against the IP SAN, trusting only the mesh root.
      const got = await new Promise<string>((resolve, reject) => {
        const c = tls.connect({ host: '127.0.0.1', port, ca: s.rootsPem }, () => undefined);
        let d = '';
        c.on('data', (b: Buffer) => (d += b.toString()));
        c.on('end', () => resolve(d));
        c.on('error', reject);
      });
      assert.equal(got, 'hi');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await assert.rejects(ca.issueServing({ dnsNames: [] }), /at least one DNS name or IP/);
    await assert.rejects(ca.issueServing({ dnsNames: ['ok'], ipAddresses: ['999.1.1.1'] }), /invalid IP address/);
  });

  test('an intermediate CA made with openssl (RSA root, Istio plug-in style) signs leaves that verify over TLS', async (t) => {
    try {
      await execFileP('openssl', ['version']);
    } catch {
      t.skip('openssl not installed');
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'ambit-ca-'));
    try {
      const o = (...args: string[]) => execFileP('openssl', args, { cwd: dir });
      await writeFile(
        join(dir, 'openssl.cnf'),
        '[req]\ndistinguished_name=dn\n[dn]\n' +
          '[root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n' +
          '[inter]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n' +
          'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=URI:spiffe://cluster.local\n',
      );
      await o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'root-key.pem', '-out', 'root-cert.pem',
        '-days', '30', '-subj', '/O=Istio/CN=Root CA', '-config', 'openssl.cnf', '-extensions', 'root');
      await o('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca-key.pem');
      await o('req', '-new', '-key', 'ca-key.pem', '-out', 'ca.csr', '-subj', '/O=Istio/CN=Intermediate CA/L=node-1');
      await o('x509', '-req', '-in', 'ca.csr', '-CA', 'root-cert.pem', '-CAkey', 'root-key.pem', '-CAcreateserial',
        '-out', 'ca-cert.pem', '-days', '20', '-extfile', 'openssl.cnf', '-extensions', 'inter');
      const rootPem = await readFile(join(dir, 'root-cert.pem'), 'utf8');
      const interPem = await readFile(join(dir, 'ca-cert.pem'), 'utf8');
      const keyPem = await readFile(join(dir, 'ca-key.pem'), 'utf8'); // SEC1 "EC PRIVATE KEY"

      // Without its root the intermediate cannot be trusted by anyone: refuse early.
      await assert.rejects(CertificateAuthority.load(interPem, keyPem), /does not chain to any given root/);

      const ca = await CertificateAuthority.load(interPem + rootPem, keyPem);
      assert.equal(ca.trustDomain, 'cluster.local');
      assert.equal(ca.rootsPem().length, 1);
      assert.equal(new X509Certificate(ca.rootsPem()[0]!).fingerprint256, new X509Certificate(rootPem).fingerprint256);

      const serverId = new Identity('cluster.local', 'shop', 'backend');
      const clientId = new Identity('cluster.local', 'shop', 'frontend');
      const server = await workload(ca, serverId);
      const client = await workload(ca, clientId);
      assert.equal(server.chainPem.length, 1, 'leaf is sent with the intermediate');
      assert.ok(new X509Certificate(server.certPem).checkIssued(new X509Certificate(interPem)));
      // Peers trust only the root: the intermediate must travel in the handshake.
      const r = await handshake({ server, serverRoots: [rootPem], client, clientRoots: [rootPem], expectServer: serverId });
      assert.deepEqual([r.clientError, r.serverError], [undefined, undefined]);
      assert.ok(r.ok);
      assert.ok(r.serverSawPeer?.equals(clientId));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('generateKeyAndCsr + signCsr issue valid certificates in a loop (time reported, not asserted)', async (t) => {
    const ca = await CertificateAuthority.generate({});
    const id = new Identity('cluster.local', 'shop', 'frontend');
    await ca.signCsr((await generateKeyAndCsr(id)).csrPem, id); // warm-up
    const n = 100;
    let keyMs = 0;
    let signMs = 0;
    const serials = new Set<string>();
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const { csrPem } = await generateKeyAndCsr(id);
      const t1 = performance.now();
      const issued = await ca.signCsr(csrPem, id);
      const t2 = performance.now();
      assert.ok(new X509Certificate(issued.certPem).verify(new X509Certificate(ca.certPem).publicKey));
      serials.add(issued.serial);
      keyMs += t1 - t0;
      signMs += t2 - t1;
    }
    assert.equal(serials.size, n, 'every certificate has its own serial');
    t.diagnostic(
      `generateKeyAndCsr ${(keyMs / n).toFixed(2)} ms + signCsr ${(signMs / n).toFixed(2)} ms = ${((keyMs + signMs) / n).toFixed(2)} ms per certificate (mean of ${n})`,
    );
  });
});
