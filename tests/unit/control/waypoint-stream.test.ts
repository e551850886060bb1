/**
 * The control plane's waypoint side, through real gRPC over TLS: WatchWaypoint with the token-file
 * authenticator, route updates, last-good routes, and certificates for a waypoint's own identity only.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { ControlServer } from '../../../control/server.js';
import { TokenFileAuthenticator } from '../../../control/auth.js';
import { CertificateAuthority } from '../../../shared/identity/ca.js';
import { generateKeyAndCsr } from '../../../shared/identity/csr.js';
import { Identity } from '../../../shared/identity/spiffe.js';
import { CONTROL_SERVER_NAME, ControlClient, channelOptions, type SignResponse, type WaypointUpdate } from '../../../shared/control/protocol.js';
import type { KubeObject } from '../../../shared/config/objects.js';

const NODE_TOKEN = 'node-1-token-0123456789abcdef';
const WP_TOKEN = 'waypoint-token-0123456789abcdef';
const OTHER_TOKEN = 'other-waypoint-token-0123456789';

const base: KubeObject[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' } } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-v1', namespace: 'shop', labels: { app: 'web', version: 'v1' } }, spec: { nodeName: 'node-1' }, status: { podIP: '10.0.1.5', phase: 'Running' } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop' }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } },
  { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'waypoint-0', namespace: 'shop', labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint', 'istio.io/dataplane-mode': 'none' } }, spec: { nodeName: 'node-2', serviceAccountName: 'waypoint' }, status: { podIP: '10.0.2.9', phase: 'Running' } },
];
const route = (path: string): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'web', namespace: 'shop' },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: path } }], backendRefs: [{ name: 'web', port: 80 }] }] },
});

let dir: string;
let ca: CertificateAuthority;
let control: ControlServer;
let port: number;
let roots: string;
const clients: grpc.Client[] = [];
const logs: Record<string, unknown>[] = [];
type Raw = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function client(): Raw {
  const c = new ControlClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(roots)), channelOptions) as unknown as Raw;
  clients.push(c);
  return c;
}
function md(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${token}`);
  return m;
}

/** Opens WatchWaypoint and collects updates; resolves `first` with the first update or the error. */
function watch(token: string, name = 'waypoint') {
  const updates: WaypointUpdate[] = [];
  const call = client().watchWaypoint!({ namespace: 'shop', name }, md(token)) as grpc.ClientReadableStream<WaypointUpdate>;
  const first = new Promise<WaypointUpdate | grpc.ServiceError>((resolve) => {
    call.on('data', (u: WaypointUpdate) => {
      updates.push(u);
      resolve(u);
    });
    call.on('error', (e: grpc.ServiceError) => resolve(e));
  });
  return { call, updates, first };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function sign(token: string, identity: string): Promise<SignResponse | grpc.ServiceError> {
  return generateKeyAndCsr(Identity.parse(identity)).then(
    ({ csrPem }) => new Promise((resolve) => void client().sign!({ identity, csrPem }, md(token), (err: grpc.ServiceError | null, res: SignResponse) => resolve(err ?? res))),
  );
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-wp-'));
  await writeFile(join(dir, 'tokens.json'), JSON.stringify({ [NODE_TOKEN]: 'node-1', [WP_TOKEN]: { waypoint: 'shop/waypoint' } }));
  ca = await CertificateAuthority.generate();
  roots = ca.rootsPem().join('\n');
  const log = pino({ level: 'info', base: {} }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
  control = new ControlServer(ca, await TokenFileAuthenticator.load(join(dir, 'tokens.json')), log, 3600);
  control.setObjects([...base, route('/v1')]);
  const serving = await ca.issueServing({ dnsNames: [CONTROL_SERVER_NAME], ipAddresses: ['127.0.0.1'], ttlSeconds: 3600 });
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(roots), [{ cert_chain: Buffer.from([serving.certPem, ...serving.chainPem].join('\n')), private_key: Buffer.from(serving.keyPem) }], false);
  port = await control.listen('127.0.0.1:0', creds);
});

after(async () => {
  for (const c of clients) c.close();
  await control.close();
  await rm(dir, { recursive: true, force: true });
});

describe('WatchWaypoint', () => {
  test('a waypoint gets its Gateway, the mesh, its routes; a route change is pushed; a broken route keeps the last good one', async () => {
    const w = watch(WP_TOKEN);
    const first = await w.first;
    assert.ok(!(first instanceof Error), String(first));
    const u = first as WaypointUpdate;
    assert.deepEqual(u.config.waypoint, { name: 'waypoint', namespace: 'shop', gatewayClass: 'istio-waypoint' });
    // the dashboard scrapes it where it connected from
    assert.deepEqual(control.connectedWaypoints(), [{ waypoint: 'shop/waypoint', ip: '127.0.0.1' }]);
    assert.equal(u.config.services.find((s) => s.key === 'shop/web')?.waypoint, 'shop/waypoint');
    const table = u.config.routing.tables['shop/web'];
    assert.ok(table, 'route table for shop/web');
    assert.match(JSON.stringify(table), /"\/v1"/);
    control.setObjects([...base, route('/v2')]);
    await until(() => w.updates.length === 2);
    assert.match(JSON.stringify(w.updates[1]!.config.routing.tables['shop/web']), /"\/v2"/);
    // the same objects again: nothing is sent
    control.setObjects([...base, route('/v2')]);
    const broken = route('/v3');
    (broken.spec!.rules as Record<string, unknown>[])[0]!.matches = [{ path: { type: 'Sideways', value: '/v3' } }];
    control.setObjects([...base, broken]);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(w.updates.length, 2, 'no update: the broken route kept its last good version');
    assert.ok(logs.some((l) => l.object === 'HTTPRoute shop/web' && /previous version stays in force/.test(String(l.problem))), JSON.stringify(logs.slice(-5)));
    w.call.cancel();
    await until(() => control.connectedWaypoints().length === 0);
  });

  test('a node token, an unknown token, or another waypoint are refused', async () => {
    const asNode = (await watch(NODE_TOKEN).first) as grpc.ServiceError;
    assert.equal(asNode.code, grpc.status.UNAUTHENTICATED);
    assert.match(asNode.details, /node token cannot speak for a waypoint/);
    const unknown = (await watch('nobody-0123456789abcdef').first) as grpc.ServiceError;
    assert.equal(unknown.code, grpc.status.UNAUTHENTICATED);
    const other = (await watch(WP_TOKEN, 'other').first) as grpc.ServiceError;
    assert.equal(other.code, grpc.status.PERMISSION_DENIED);
    assert.match(other.details, /runs no pod of waypoint shop\/other/);
    assert.deepEqual(control.connectedWaypoints(), [], 'a refused caller is not scraped');
  });

  test('a waypoint token added to the file later is accepted without a restart', async () => {
    await writeFile(join(dir, 'tokens.json'), JSON.stringify({ [NODE_TOKEN]: 'node-1', [WP_TOKEN]: { waypoint: 'shop/waypoint' }, [OTHER_TOKEN]: { waypoint: 'shop/waypoint' } }));
    await new Promise((r) => setTimeout(r, 1100));
    const u = await watch(OTHER_TOKEN).first;
    assert.ok(!(u instanceof Error), String(u));
  });

  test('a waypoint gets a certificate for its own identity only; ztunnels keep theirs', async () => {
    const own = await sign(WP_TOKEN, 'spiffe://cluster.local/ns/shop/sa/waypoint');
    assert.ok(!(own instanceof Error), String(own));
    const other = (await sign(WP_TOKEN, 'spiffe://cluster.local/ns/shop/sa/default')) as grpc.ServiceError;
    assert.equal(other.code, grpc.status.PERMISSION_DENIED);
    assert.match(other.details, /cannot get a certificate for/);
    const node = await sign(NODE_TOKEN, 'spiffe://cluster.local/ns/shop/sa/default');
    assert.ok(!(node instanceof Error), String(node));
    const nodeForWaypoint = (await sign(NODE_TOKEN, 'spiffe://cluster.local/ns/shop/sa/waypoint')) as grpc.ServiceError;
    assert.equal(nodeForWaypoint.code, grpc.status.PERMISSION_DENIED, 'the waypoint pod runs on node-2, not node-1');
  });
});
