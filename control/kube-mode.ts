/**
 * The control plane in a cluster (`ambit-control --source kube`): objects from the API server,
 * ztunnels authenticated by TokenReview, the CA from its Secret, and the waypoint controller.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { kubeError, loadKubeConfig, withTimeout } from '../shared/config/kube-client.js';
import { KubeSource } from '../shared/config/kube-source.js';
import { CONTROL_SERVER_NAME } from '../shared/control/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';
import { ControlServer } from './server.js';
import { TokenReviewAuthenticator } from './kube-auth.js';
import { CA_SECRET_NAME, CA_SECRET_NAMESPACE, caFromSecretData, kubeCaSecretApi, loadOrCreateCa, publishRoots } from './ca-secret.js';
import { ServingCertificate } from './serving.js';
import type { CertificateAuthority } from '../shared/identity/ca.js';
import { fingerprintOf, sameRoots, summarizeRoot } from '../shared/identity/trust.js';
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
  /** how often the CA Secret is read again (root rotation); default 30 s */
  caReloadSeconds?: number;
}

/** Whether two CAs sign with the same certificate and trust the same roots. */
function sameCa(a: CertificateAuthority, b: CertificateAuthority): boolean {
  return fingerprintOf(a.certPem) === fingerprintOf(b.certPem) && sameRoots(a.rootsPem(), b.rootsPem());
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
  const secretApi = kubeCaSecretApi(kc);
  const loaded = await loadOrCreateCa(secretApi, { ...secret, trustDomain: o.trustDomain, log });
  let ca = loaded.ca;

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

  const serving = new ServingCertificate({ dnsNames: [CONTROL_SERVER_NAME, `${CONTROL_SERVER_NAME}.cluster.local`], ipAddresses: o.ip, ttlSeconds: 365 * 24 * 3600 });
  await serving.issue(ca);
  const port = await server.listen(o.listen, serving.credentials());
  log.info({ listen: o.listen, port, caSecret: `${CA_SECRET_NAMESPACE}/${CA_SECRET_NAME}` === o.caSecret ? undefined : o.caSecret }, 'control plane serving (Kubernetes)');
  const dashboard = await startDashboard(o.dashboard ?? 'off', server, log);

  // Root rotation edits the Secret: a new root in root-cert.pem, then a new ca-cert.pem/ca-key.pem
  // with the old root kept in root-cert.pem, then the old root removed. Read it again now and then.
  const where = `Secret ${secret.namespace}/${secret.name}`;
  let reloading = false;
  const reload = async (): Promise<void> => {
    if (reloading) return;
    reloading = true;
    try {
      const data = await secretApi.read(secret.namespace, secret.name);
      if (!data) {
        log.warn({ secret: `${secret.namespace}/${secret.name}` }, 'CA Secret is gone; keeping the current CA');
        return;
      }
      const next = await caFromSecretData(data, where, o.trustDomain ?? ca.trustDomain);
      if (sameCa(next, ca)) return;
      const change = server.setCa(next);
      await serving.issue(next);
      ca = next;
      log.info({ signer: summarizeRoot(next.certPem).serial, roots: next.rootsPem().map((r) => summarizeRoot(r).serial), added: change.added.map((r) => r.serial), removed: change.removed.map((r) => r.serial) }, 'CA reloaded');
      if (change.rootsChanged) {
        if (publishTimer) clearTimeout(publishTimer);
        publish(1000);
      }
    } catch (err) {
      log.error({ err: (err as Error).message }, 'CA reload failed; keeping the current CA');
    } finally {
      reloading = false;
    }
  };
  const reloadTimer = setInterval(() => void reload(), (o.caReloadSeconds ?? 30) * 1000);
  reloadTimer.unref();
  return async () => {
    clearInterval(reloadTimer);
    if (publishTimer) clearTimeout(publishTimer);
    waypoints?.stop();
    source.stop();
    await Promise.all([server.close(), dashboard?.close()]);
  };
}
