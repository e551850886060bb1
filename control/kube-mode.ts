/**
 * The control plane in a cluster (`ambit-control --source kube`): objects from the API server,
 * ztunnels authenticated by TokenReview, the CA from its Secret, and the waypoint controller.
 */
import * as grpc from '@grpc/grpc-js';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { kubeError, loadKubeConfig, withTimeout } from '../shared/config/kube-client.js';
import { KubeSource } from '../shared/config/kube-source.js';
import { CONTROL_SERVER_NAME } from '../shared/control/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';
import { ControlServer } from './server.js';
import { TokenReviewAuthenticator } from './kube-auth.js';
import { CA_SECRET_NAME, CA_SECRET_NAMESPACE, kubeCaSecretApi, loadOrCreateCa, publishRoots } from './ca-secret.js';
import { WaypointController } from './waypoints.js';
import { startDashboard } from './dashboard/start.js';

export interface KubeControlOptions {
  kubeconfig?: string;
  context?: string;
  listen: string;
  ip: string[];
  certTtlSeconds: number;
  trustDomain?: string;
  tokenAudience: string;
  ztunnelServiceAccount: string;
  caSecret: string;
  waypointImage?: string;
  controlAddress?: string;
  /** the dashboard's host:port, or "off" */
  dashboard?: string;
}

function namespacedName(v: string, flag: string): { namespace: string; name: string } {
  const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(v);
  if (!m) throw new Error(`${flag} must be NAMESPACE/NAME, got "${v}"`);
  return { namespace: m[1]!, name: m[2]! };
}

/**
 * The image this control plane runs from (its own pod's first container, found through the
 * downward-API variables POD_NAME and POD_NAMESPACE), so waypoints run the same build however
 * the manifests were rendered.
 */
export async function ownImage(kc: KubeConfig, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const name = env.POD_NAME;
  const namespace = env.POD_NAMESPACE;
  if (!name || !namespace) throw new Error('--waypoint-image=self needs POD_NAME and POD_NAMESPACE (downward API) to find this pod');
  try {
    const pod = await withTimeout(kc.makeApiClient(CoreV1Api).readNamespacedPod({ name, namespace }), 15_000, 'reading the control plane pod');
    const image = pod.spec?.containers?.[0]?.image;
    if (!image) throw new Error(`pod ${namespace}/${name} has no container image`);
    return image;
  } catch (err) {
    throw kubeError(err, kc.getCurrentCluster()?.server);
  }
}

/** Starts everything; resolves with a stop function once the gRPC server listens. */
export async function runKubeControlPlane(o: KubeControlOptions, log: Logger): Promise<() => Promise<void>> {
  const kc = loadKubeConfig({ kubeconfig: o.kubeconfig, context: o.context });
  const secret = namespacedName(o.caSecret, '--ca-secret');
  const sa = namespacedName(o.ztunnelServiceAccount, '--ztunnel-service-account');
  const { ca } = await loadOrCreateCa(kubeCaSecretApi(kc), { ...secret, trustDomain: o.trustDomain, log });

  // Publishing the roots may fail while RBAC or the namespace settle; keep trying in the background.
  let publishTimer: NodeJS.Timeout | null = null;
  const publish = (delay: number): void => {
    publishRoots(kc, ca, { namespace: secret.namespace }).then(
      () => log.info({ configMap: `${secret.namespace}/ambit-root-cert` }, 'mesh roots published'),
      (err: Error) => {
        log.warn({ err: err.message, retryInMs: delay }, 'could not publish the mesh roots; retrying');
        publishTimer = setTimeout(() => publish(Math.min(delay * 2, 60_000)), delay);
      },
    );
  };
  publish(1000);

  const auth = TokenReviewAuthenticator.fromKubeConfig(kc, { audience: o.tokenAudience, serviceAccount: sa, log });
  const server = new ControlServer(ca, auth, log, o.certTtlSeconds);
  const source = new KubeSource({ kubeConfig: kc, log });
  server.setObjects(await source.start());
  source.on('change', (objects) => server.setObjects(objects));

  let waypoints: WaypointController | null = null;
  if (o.waypointImage) {
    const image = o.waypointImage === 'self' ? await ownImage(kc) : o.waypointImage;
    log.info({ image }, 'waypoint controller started');
    waypoints = new WaypointController({
      kubeConfig: kc,
      view: { objects: () => source.objects, on: (e, fn) => source.on(e, fn) },
      log: log.child({ controller: 'waypoints' }),
      image,
      trustDomain: ca.trustDomain,
      tokenAudience: o.tokenAudience,
      rootsPem: ca.rootsPem(),
      ...(o.controlAddress ? { controlAddress: o.controlAddress } : {}),
    });
    await waypoints.start();
  } else {
    log.warn('no --waypoint-image: Gateways of class istio-waypoint are not deployed by this control plane');
  }

  const serving = await ca.issueServing({ dnsNames: [CONTROL_SERVER_NAME, `${CONTROL_SERVER_NAME}.cluster.local`], ipAddresses: o.ip, ttlSeconds: 365 * 24 * 3600 });
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(ca.rootsPem().join('\n')),
    [{ cert_chain: Buffer.from([serving.certPem, ...serving.chainPem].join('\n')), private_key: Buffer.from(serving.keyPem) }],
    false,
  );
  const port = await server.listen(o.listen, creds);
  log.info({ listen: o.listen, port, caSecret: `${CA_SECRET_NAMESPACE}/${CA_SECRET_NAME}` === o.caSecret ? undefined : o.caSecret }, 'control plane serving (Kubernetes)');
  const dashboard = await startDashboard(o.dashboard ?? 'off', server, log);
  return async () => {
    if (publishTimer) clearTimeout(publishTimer);
    waypoints?.stop();
    source.stop();
    await Promise.all([server.close(), dashboard?.close()]);
  };
}
