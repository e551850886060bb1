/**
 * The control plane's gRPC server (control/server.ts ControlServer, MessagePack deserializers
 * of shared/control/protocol.ts) against malformed, huge, truncated and unauthenticated calls.
 * Each is refused with a gRPC status (and a warn line where ambit sees it); the server stays
 * up and a good ztunnel keeps its config stream and gets certificates signed meanwhile.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { Packr } from 'msgpackr';
import { pino } from 'pino';
import { ControlServer } from '../../control/server.js';
import type { NodeAuthenticator } from '../../control/auth.js';
import { CertificateAuthority } from '../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../shared/identity/csr.js';
import { Identity } from '../../shared/identity/spiffe.js';
import { CONTROL_SERVER_NAME, ControlClient, MAX_REPORTED_CONNECTIONS, channelOptions, controlService, type NodeReport, type ReportResponse, type SignResponse } from '../../shared/control/protocol.js';
import { REPORT_IDLE_MS } from '../../control/node-reports.js';
import type { KubeObject } from '../../shared/config/objects.js';
import type { MeshUpdate } from '../../shared/model/types.js';

const TOKENS: Record<string, string> = { 'token-of-node-1-0123456789': 'node-1', 'token-of-node-2-0123456789': 'node-2' };
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Bearer tokens from a map, like the token-file authenticator. */
const auth: NodeAuthenticator = {
  async authenticate(md) {
    const h = md.get('authorization')[0];
    const node = typeof h === 'string' && h.startsWith('Bearer ') ? TOKENS[h.slice(7)] : undefined;
    if (!node) throw new Error('unknown or missing node token');
    return node;
  },
};

const OBJECTS: KubeObject[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop' }, spec: { nodeName: 'node-1', serviceAccountName: 'web' }, status: { podIP: '10.0.1.1', phase: 'Running' } },
];

let ca: CertificateAuthority;
let control: ControlServer;
let port: number;
let roots: string;
const logs: Record<string, unknown>[] = [];
const clients: grpc.Client[] = [];

before(async () => {
  ca = await CertificateAuthority.generate();
  roots = ca.rootsPem().join('\n');
  const log = pino({ level: 'info', base: {} }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  control = new ControlServer(ca, auth, log, 3600);
  control.setObjects(OBJECTS);
  const serving = await ca.issueServing({ dnsNames: [CONTROL_SERVER_NAME], ipAddresses: ['127.0.0.1'], ttlSeconds: 3600 });
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(roots), [{ cert_chain: Buffer.from([serving.certPem, ...serving.chainPem].join('\n')), private_key: Buffer.from(serving.keyPem) }], false);
  port = await control.listen('127.0.0.1:0', creds);
});

after(async () => {
  for (const c of clients) c.close();
  await control.close();
});

type Raw = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function client(): Raw {
  const c = new ControlClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(roots)), channelOptions) as unknown as Raw;
  clients.push(c);
  return c;
}

/** A client that sends raw bytes as the request message (no serialization). */
function rawClient(): Raw {
  const service = {
    watch: { ...controlService.watch, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
    sign: { ...controlService.sign, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
    report: { ...controlService.report, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
  };
  const Ctor = grpc.makeGenericClientConstructor(service, 'Control');
  const c = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(roots)), { ...channelOptions, 'grpc.max_send_message_length': -1 }) as unknown as Raw;
  clients.push(c);
  return c;
}

function md(token?: string): grpc.Metadata {
  const m = new grpc.Metadata();
  if (token) m.set('authorization', `Bearer ${token}`);
  return m;
}

function unary(c: Raw, request: unknown, meta: grpc.Metadata): Promise<{ err: grpc.ServiceError | null; res: unknown }> {
  return new Promise((resolve) => c.sign(request, meta, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: unknown) => resolve({ err, res })));
}

function report(c: Raw, request: unknown, meta: grpc.Metadata): Promise<{ err: grpc.ServiceError | null; res: unknown }> {
  return new Promise((resolve) => c.report(request, meta, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: unknown) => resolve({ err, res })));
}

/** First message or status of a Watch stream. */
function watchOnce(c: Raw, request: unknown, meta: grpc.Metadata): Promise<{ update?: MeshUpdate; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const call = c.watch(request, meta) as grpc.ClientReadableStream<MeshUpdate>;
    const timer = setTimeout(() => {
      call.cancel();
      resolve({ err: Object.assign(new Error('no answer within 5 s'), { code: -1 }) as unknown as grpc.ServiceError });
    }, 5000);
    call.once('data', (update: MeshUpdate) => {
      clearTimeout(timer);
      call.cancel();
      resolve({ update });
    });
    call.once('error', (err: grpc.ServiceError) => {
      clearTimeout(timer);
      resolve({ err });
    });
  });
}

/** A good ztunnel: its config stream opens with a snapshot and its CSR is signed. */
async function goodZtunnel(): Promise<void> {
  const c = client();
  const w = await watchOnce(c, { node: 'node-1' }, md('token-of-node-1-0123456789'));
  assert.equal(w.err, undefined, w.err?.message);
  assert.equal(w.update!.type, 'snapshot');
  assert.equal(w.update!.workloads.length, 1);
  const id = new Identity('cluster.local', 'shop', 'web');
  const { csrPem } = await generateKeyAndCsr(id);
  const r = await unary(c, { csrPem, identity: id.toString() }, md('token-of-node-1-0123456789'));
  assert.equal(r.err, null, r.err?.message);
  assert.match((r.res as SignResponse).certPem, /BEGIN CERTIFICATE/);
}

function logged(from: number, msg: RegExp): Record<string, unknown>[] {
  return logs.slice(from).filter((l) => msg.test(String(l.msg)));
}

describe('control plane under hostile calls', () => {
  test('a good ztunnel gets its snapshot and a certificate (baseline)', async () => {
    await goodZtunnel();
  });

  test('calls without a token, with a wrong token or for another node are refused, and logged', async () => {
    const l0 = logs.length;
    const c = client();
    const { csrPem } = await generateKeyAndCsr(new Identity('cluster.local', 'shop', 'web'));
    const sign = { csrPem, identity: 'spiffe://cluster.local/ns/shop/sa/web' };
    const cases = await Promise.all([
      watchOnce(c, { node: 'node-1' }, md()),
      watchOnce(c, { node: 'node-1' }, md('not-a-token-at-all-000000')),
      watchOnce(c, { node: 'node-1' }, md('token-of-node-2-0123456789')),
      unary(c, sign, md()),
      unary(c, sign, md('token-of-node-2-0123456789')), // node-2 runs no pod with that service account
      unary(c, { ...sign, identity: 'spiffe://other.domain/ns/shop/sa/web' }, md('token-of-node-1-0123456789')),
      goodZtunnel(),
    ]);
    assert.equal(cases[0].err?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(cases[1].err?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(cases[2].err?.code, grpc.status.PERMISSION_DENIED);
    assert.equal((cases[3] as { err: grpc.ServiceError }).err.code, grpc.status.UNAUTHENTICATED);
    assert.equal((cases[4] as { err: grpc.ServiceError }).err.code, grpc.status.PERMISSION_DENIED);
    assert.equal((cases[5] as { err: grpc.ServiceError }).err.code, grpc.status.PERMISSION_DENIED);
    assert.equal(logged(l0, /^config stream refused$/).length, 3);
    assert.equal(logged(l0, /^certificate request refused$/).length, 3);
  });

  test('malformed request messages are refused (INTERNAL, logged) and the server keeps serving', async () => {
    const l0 = logs.length;
    const c = rawClient();
    const bodies: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from([0xc1]),
      Buffer.from([0xde, 0x00, 0x05]), // a map of 5 with nothing in it
      Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // an array claiming 4 G entries
      Buffer.from('{"node":"node-1"}'),
      packr.pack({ node: 5 }) as Buffer,
      packr.pack({ csrPem: ['x'], identity: 'spiffe://cluster.local/ns/shop/sa/web' }) as Buffer,
      packr.pack([1, 2, 3]) as Buffer,
      Buffer.from([0xd4, 0x72, 0x00]), // a msgpackr record extension
      Buffer.from([0xc7, 0x04, 0x73, 0x01, 0x02, 0x03, 0x04]), // a Set extension with garbage
    ];
    const results = await Promise.all([
      ...bodies.map((b) => unary(c, b, md('token-of-node-1-0123456789'))),
      ...bodies.map((b) => watchOnce(c, b, md('token-of-node-1-0123456789'))),
      goodZtunnel(),
    ]);
    for (const r of results.slice(0, 2 * bodies.length)) {
      assert.equal((r as { err?: grpc.ServiceError }).err?.code, grpc.status.INTERNAL, JSON.stringify(r));
    }
    const lines = logged(l0, /control request refused: malformed message/);
    assert.equal(lines.length, 2 * bodies.length);
    assert.ok(lines.every((l) => l.level === 40 && /^malformed (watch|sign) request message/.test(String(l.err))), JSON.stringify(lines[0]));
    await goodZtunnel();
  });

  test('a message over 1 MiB is refused (RESOURCE_EXHAUSTED) before it is decoded', async () => {
    const c = rawClient();
    const huge = packr.pack({ csrPem: 'x'.repeat(4 * 1024 * 1024), identity: 'spiffe://cluster.local/ns/shop/sa/web' }) as Buffer;
    const [r] = await Promise.all([unary(c, huge, md('token-of-node-1-0123456789')), goodZtunnel()]);
    assert.equal(r.err?.code, grpc.status.RESOURCE_EXHAUSTED);
    await goodZtunnel();
  });

  test('a truncated gRPC message (length prefix longer than the body) ends the call with an error status', async () => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: roots, servername: CONTROL_SERVER_NAME, checkServerIdentity: () => undefined } as http2.SecureClientSessionOptions);
    session.on('error', () => undefined);
    const outcome = await new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'POST', ':path': '/ambit.control.v1.Control/Sign', 'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer token-of-node-1-0123456789' });
      req.on('error', (e) => resolve(`reset ${e.message}`));
      req.on('trailers', (t) => resolve(`grpc-status ${String(t['grpc-status'])}`));
      req.on('response', (h) => {
        if (h['grpc-status'] !== undefined) resolve(`grpc-status ${String(h['grpc-status'])}`);
      });
      req.resume();
      const head = Buffer.alloc(5);
      head.writeUInt32BE(1000, 1);
      req.end(Buffer.concat([head, Buffer.from('0123456789')]));
      setTimeout(() => resolve('no answer'), 5000);
    });
    session.destroy();
    assert.match(outcome, /^grpc-status [1-9]\d*$|^reset /, outcome);
    await goodZtunnel();
  });

  test('plaintext and non-gRPC HTTP/2 on the control port are refused; the server keeps serving', async () => {
    const plain = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => resolve('error'));
      s.on('data', () => undefined);
      s.on('close', () => resolve('closed'));
      s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      setTimeout(() => resolve('open'), 5000);
    });
    assert.notEqual(plain, 'open');
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: roots, servername: CONTROL_SERVER_NAME, checkServerIdentity: () => undefined } as http2.SecureClientSessionOptions);
    session.on('error', () => undefined);
    const status = await new Promise<string>((resolve) => {
      const req = session.request({ ':method': 'GET', ':path': '/../../etc/passwd' });
      req.on('response', (h) => resolve(`${String(h[':status'])} ${String(h['grpc-status'] ?? '')}`));
      req.on('error', (e) => resolve(`reset ${e.message}`));
      req.resume();
      req.end();
    });
    session.destroy();
    assert.doesNotMatch(status, /^200 $/);
    await goodZtunnel();
  });

  test('node reports: kept only from the node the token names and only of the right shape; the rest refused and logged', async () => {
    const l0 = logs.length;
    const c = client();
    const good: NodeReport = {
      node: 'node-1',
      openConnections: 1,
      connections: [{ direction: 'outbound', src: '10.0.1.1:4000', dst: '10.0.2.1:80', srcWorkload: 'shop/web', dstWorkload: null, srcIdentity: null, dstIdentity: null, service: null, protocol: 'TCP', mtls: false, ageMs: 5 }],
      certificates: [],
      denies: [],
    };
    const cases = await Promise.all([
      report(c, good, md()),
      report(c, good, md('not-a-token-at-all-000000')),
      report(c, good, md('token-of-node-2-0123456789')), // node-2 speaking for node-1
    ]);
    assert.equal(cases[0].err?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(cases[1].err?.code, grpc.status.UNAUTHENTICATED);
    assert.equal(cases[2].err?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(logged(l0, /^node report refused$/).length, 3);
    assert.equal(control.reports.get('node-1'), undefined);

    const raw = rawClient();
    const bodies = [
      packr.pack({ ...good, connections: 'many' }) as Buffer,
      packr.pack({ ...good, connections: [{ ...good.connections[0], ageMs: -1 }] }) as Buffer,
      packr.pack({ ...good, connections: Array.from({ length: MAX_REPORTED_CONNECTIONS + 1 }, () => good.connections[0]) }) as Buffer,
      packr.pack({ ...good, certificates: [{ identity: 'x' }] }) as Buffer,
      Buffer.from([0xc1]),
    ];
    const l1 = logs.length;
    for (const b of bodies) assert.equal((await report(raw, b, md('token-of-node-1-0123456789'))).err?.code, grpc.status.INTERNAL);
    assert.equal(logged(l1, /control request refused: malformed message/).filter((l) => /^malformed node report message/.test(String(l.err))).length, bodies.length);
    assert.equal(control.reports.get('node-1'), undefined);

    const ok = await report(c, good, md('token-of-node-1-0123456789'));
    assert.equal(ok.err, null, ok.err?.message);
    assert.deepEqual(ok.res as ReportResponse, { nextReportMs: REPORT_IDLE_MS });
    assert.deepEqual(control.reports.get('node-1')?.report, good);
    await goodZtunnel();
  });

  test('a TLS client that never finishes its handshake does not block others', async () => {
    const socks = Array.from({ length: 50 }, () => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
      return s;
    });
    try {
      await goodZtunnel();
    } finally {
      for (const s of socks) s.destroy();
    }
    const t = tls.connect({ host: '127.0.0.1', port, ca: roots, servername: CONTROL_SERVER_NAME, ALPNProtocols: ['h2'] });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    t.destroy();
  });
});
