// ztunnels authenticated by their projected ServiceAccount token through a TokenReview, end to
// end through the control plane's gRPC server: a ztunnel gets certificates only for pods on its
// own node; forged, expired, foreign-audience and non-ztunnel tokens are refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { FakeApiServer } from './fake-apiserver.js';
import { captureLogger, kubeConfigFor, namespace, pod } from './fixtures.js';
import { ControlServer } from '../../../control/server.js';
import { TokenReviewAuthenticator, kubeTokenReviewApi, type TokenReviewApi } from '../../../control/kube-auth.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { ControlClient, CONTROL_SERVER_NAME, channelOptions, type SignResponse } from '../../../shared/control/protocol.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { toKubeObject, MESH_RESOURCES } from '../../../shared/config/kube-source.js';
import type { MeshUpdate } from '../../../shared/model/types.js';

const AUDIENCE = 'ambit-ca';
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function md(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${token}`);
  return m;
}

describe('TokenReviewAuthenticator with the control plane', () => {
  let fake: FakeApiServer;
  let ca: CertificateAuthority;
  let server: ControlServer;
  let client: Client;
  const tokens: Record<string, string> = {};
  const { log } = captureLogger();

  before(async () => {
    fake = await FakeApiServer.start();
    fake.put(namespace('ambit-system'));
    fake.put(namespace('shop'));
    fake.put(pod('ambit-system', 'ztunnel-abcde', { node: 'node-1', sa: 'ztunnel', uid: 'uid-z1', ip: '10.244.1.2' }));
    fake.put(pod('ambit-system', 'ztunnel-fghij', { node: 'node-2', sa: 'ztunnel', uid: 'uid-z2', ip: '10.244.2.2' }));
    fake.put(pod('shop', 'web-12345', { node: 'node-1', sa: 'web', uid: 'uid-web' }));
    // Kubernetes ≥ 1.30 puts the node in the token; older clusters only the pod
    tokens.node1 = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z1', nodeName: 'node-1', audiences: [AUDIENCE] });
    tokens.node2PodOnly = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-fghij', podUid: 'uid-z2', audiences: [AUDIENCE] });
    tokens.expired = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z1', nodeName: 'node-1', audiences: [AUDIENCE], expiresAt: new Date(Date.now() - 1000) });
    tokens.otherAudience = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-abcde', podUid: 'uid-z1', nodeName: 'node-1', audiences: ['https://kubernetes.default.svc.cluster.local'] });
    tokens.app = fake.issueToken({ namespace: 'shop', serviceAccount: 'web', podName: 'web-12345', podUid: 'uid-web', nodeName: 'node-1', audiences: [AUDIENCE] });
    const [h, p] = tokens.node1!.split('.');
    tokens.forged = `${h}.${p}.${Buffer.from('not the signature').toString('base64url')}`;

    ca = await CertificateAuthority.generate();
    const auth = TokenReviewAuthenticator.fromKubeConfig(kubeConfigFor(fake), { audience: AUDIENCE, log });
    server = new ControlServer(ca, auth, log, 3600);
    // the pods the control plane knows of (as its KubeSource would hand them over)
    server.setObjects(
      [pod('shop', 'web-12345', { node: 'node-1', sa: 'web', ip: '10.244.1.10' }), pod('shop', 'db-67890', { node: 'node-2', sa: 'db', ip: '10.244.2.10' })].map((o) => toKubeObject(o, MESH_RESOURCES.Pod)),
    );
    const serving = await ca.issueServing({ dnsNames: [CONTROL_SERVER_NAME], ipAddresses: ['127.0.0.1'] });
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(ca.rootsPem().join('\n')), [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], false);
    const port = await server.listen('127.0.0.1:0', creds);
    client = new ControlClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca.rootsPem().join('\n'))), channelOptions) as unknown as Client;
  });

  after(async () => {
    client.close();
    await server.close();
    await fake.close();
  });

  const sign = async (token: string, ns: string, sa: string): Promise<SignResponse> => {
    const id = new Identity('cluster.local', ns, sa);
    const { csrPem } = await generateKeyAndCsr(id);
    return new Promise((resolve, reject) => {
      client.sign({ identity: id.toString(), csrPem }, md(token), { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res: SignResponse) => (err ? reject(err) : resolve(res)));
    });
  };
  const refused = async (p: Promise<unknown>, code: grpc.status, detail: RegExp): Promise<void> => {
    await assert.rejects(p, (err: grpc.ServiceError) => {
      assert.equal(err.code, code, `code ${err.code} (${err.details})`);
      assert.match(err.details, detail);
      return true;
    });
  };

  test('a ztunnel gets a certificate for a service account running on its node', async () => {
    const res = await sign(tokens.node1!, 'shop', 'web');
    assert.match(res.certPem, /BEGIN CERTIFICATE/);
    const reviews = fake.audit.filter((a) => a.resource === 'tokenreviews');
    assert.ok(reviews.length >= 1, 'the token was reviewed by the API server');
  });

  test('…and is refused one for a pod on another node', async () => {
    await refused(sign(tokens.node1!, 'shop', 'db'), grpc.status.PERMISSION_DENIED, /no pod with service account shop\/db runs on node node-1/);
  });

  test('on clusters without node info in tokens, the node comes from the bound pod (spec.nodeName)', async () => {
    const res = await sign(tokens.node2PodOnly!, 'shop', 'db');
    assert.match(res.certPem, /BEGIN CERTIFICATE/);
    assert.ok(fake.audit.some((a) => a.verb === 'get' && a.resource === 'pods' && a.name === 'ztunnel-fghij'), 'the pod was read');
    await refused(sign(tokens.node2PodOnly!, 'shop', 'web'), grpc.status.PERMISSION_DENIED, /node node-2/);
  });

  test('a forged token (signature changed) is refused', async () => {
    await refused(sign(tokens.forged!, 'shop', 'web'), grpc.status.UNAUTHENTICATED, /token refused by the API server: .*invalid bearer token/);
  });

  test('an expired token is refused', async () => {
    await refused(sign(tokens.expired!, 'shop', 'web'), grpc.status.UNAUTHENTICATED, /expired/);
  });

  test('a token minted for another audience is refused', async () => {
    await refused(sign(tokens.otherAudience!, 'shop', 'web'), grpc.status.UNAUTHENTICATED, /audiences/);
  });

  test("another ServiceAccount's valid token does not speak for a node, nor as a waypoint unless a waypoint pod runs as it", async () => {
    await refused(sign(tokens.app!, 'shop', 'web'), grpc.status.PERMISSION_DENIED, /no waypoint pod runs as service account shop\/web/);
    await refused(sign(tokens.app!, 'shop', 'other'), grpc.status.PERMISSION_DENIED, /a waypoint running as shop\/web cannot get a certificate for spiffe:\/\/cluster.local\/ns\/shop\/sa\/other/);
  });

  test('no token at all is refused', async () => {
    const id = new Identity('cluster.local', 'shop', 'web');
    const { csrPem } = await generateKeyAndCsr(id);
    const p = new Promise((resolve, reject) => client.sign({ identity: id.toString(), csrPem }, new grpc.Metadata(), (err: grpc.ServiceError | null, r: unknown) => (err ? reject(err) : resolve(r))));
    await refused(p, grpc.status.UNAUTHENTICATED, /missing bearer token/);
  });

  test('a token bound to a pod that was deleted is refused', async () => {
    fake.put(pod('ambit-system', 'ztunnel-gone1', { node: 'node-1', sa: 'ztunnel', uid: 'uid-gone' }));
    const t = fake.issueToken({ namespace: 'ambit-system', serviceAccount: 'ztunnel', podName: 'ztunnel-gone1', podUid: 'uid-gone', nodeName: 'node-1', audiences: [AUDIENCE] });
    fake.remove('v1', 'Pod', 'ambit-system', 'ztunnel-gone1');
    await refused(sign(t, 'shop', 'web'), grpc.status.UNAUTHENTICATED, /invalidated/);
  });

  test('the config stream is refused (not left hanging) for a forged token', async () => {
    const call = client.watch({ node: 'node-1' }, md(tokens.forged!)) as grpc.ClientReadableStream<MeshUpdate>;
    const st = await new Promise<{ code: grpc.status; details: string }>((resolve) => {
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', (s: grpc.StatusObject) => resolve(s));
    });
    assert.equal(st.code, grpc.status.UNAUTHENTICATED);
    assert.match(st.details, /invalid bearer token/);
  });

  test('the config stream is refused for a node the token does not name', async () => {
    const call = client.watch({ node: 'node-2' }, md(tokens.node1!)) as grpc.ClientReadableStream<MeshUpdate>;
    const err = await new Promise<{ code: grpc.status; details: string }>((resolve) => {
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', (s: grpc.StatusObject) => resolve(s));
    });
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /token is for node node-1, not node-2/);
  });
});

describe('TokenReviewAuthenticator caching', () => {
  function counting(result: () => Promise<Awaited<ReturnType<TokenReviewApi['review']>>>): TokenReviewApi & { reviews: number; pods: number } {
    const api = {
      reviews: 0,
      pods: 0,
      async review() {
        api.reviews++;
        return result();
      },
      async pod() {
        api.pods++;
        return { nodeName: 'node-9', uid: 'u' };
      },
    };
    return api;
  }
  const ok = { authenticated: true, audiences: [AUDIENCE], user: { username: 'system:serviceaccount:ambit-system:ztunnel', extra: { 'authentication.kubernetes.io/node-name': ['node-1'] } } };

  test('an accepted token is reviewed once, then again after the cache time; concurrent calls share one review', async () => {
    let now = 1_000_000;
    const api = counting(async () => ok);
    const auth = new TokenReviewAuthenticator(api, { audience: AUDIENCE, cacheTtlMs: 30_000, now: () => now });
    const results = await Promise.all([1, 2, 3].map(() => auth.authenticate(md('tok-a'))));
    assert.deepEqual(results, ['node-1', 'node-1', 'node-1']);
    assert.equal(api.reviews, 1);
    now += 29_000;
    await auth.authenticate(md('tok-a'));
    assert.equal(api.reviews, 1);
    now += 2_000;
    await auth.authenticate(md('tok-a'));
    assert.equal(api.reviews, 2);
  });

  test("the cache never outlives the token's own expiry (JWT exp)", async () => {
    let now = Date.now();
    const api = counting(async () => ok);
    const auth = new TokenReviewAuthenticator(api, { audience: AUDIENCE, cacheTtlMs: 600_000, now: () => now });
    const exp = Math.floor(now / 1000) + 5;
    const jwt = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.sig`;
    await auth.authenticate(md(jwt));
    now += 6_000;
    await auth.authenticate(md(jwt));
    assert.equal(api.reviews, 2);
  });

  test('refusals are cached briefly; API server failures are not cached at all', async () => {
    let now = 0;
    let fail = true;
    const api = counting(async () => {
      if (fail) throw new Error('cannot reach the Kubernetes API server');
      return { authenticated: false, error: '[invalid bearer token]' };
    });
    const auth = new TokenReviewAuthenticator(api, { audience: AUDIENCE, refusedTtlMs: 5_000, now: () => now });
    await assert.rejects(auth.authenticate(md('t')), /cannot reach/);
    await assert.rejects(auth.authenticate(md('t')), /cannot reach/);
    assert.equal(api.reviews, 2, 'an outage is asked about again');
    fail = false;
    await assert.rejects(auth.authenticate(md('t')), /invalid bearer token/);
    await assert.rejects(auth.authenticate(md('t')), /invalid bearer token/);
    assert.equal(api.reviews, 3, 'a refusal is remembered');
    now += 6_000;
    await assert.rejects(auth.authenticate(md('t')), /invalid bearer token/);
    assert.equal(api.reviews, 4);
  });

  test('a review that ignored the requested audience is refused', async () => {
    const auth = new TokenReviewAuthenticator(counting(async () => ({ ...ok, audiences: [] })), { audience: AUDIENCE });
    await assert.rejects(auth.authenticate(md('x')), /not meant for audience "ambit-ca"/);
  });

  test('the API server being away is an error the caller sees (not a refusal), through the real client', async () => {
    const fake = await FakeApiServer.start();
    const kc = kubeConfigFor(fake);
    await fake.stop();
    const auth = new TokenReviewAuthenticator(kubeTokenReviewApi(kc, 2000), { audience: AUDIENCE });
    await assert.rejects(auth.authenticate(md('x')), /cannot reach/);
    await fake.close();
  });
});
