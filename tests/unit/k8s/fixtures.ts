/**
 * Objects shaped as a real cluster returns them (fields and nesting as `kubectl get -o json`
 * shows them), and a logger whose lines tests can read.
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { KubeConfig } from '@kubernetes/client-node';
import type { FakeApiServer } from './fake-apiserver.js';

type Json = Record<string, unknown>;

/** A pino logger that keeps its lines (parsed) in `lines`. */
export function captureLogger(level = 'debug'): { log: Logger; lines: Json[]; has(msg: string | RegExp, fields?: Json): boolean } {
  const lines: Json[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Json);
      cb();
    },
  });
  const log = pino({ level, base: { component: 'test' } }, stream);
  const has = (msg: string | RegExp, fields: Json = {}): boolean =>
    lines.some((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))) && Object.entries(fields).every(([k, v]) => l[k] === v));
  return { log, lines, has };
}

/** A KubeConfig for the fake server with the given bearer token. */
export function kubeConfigFor(fake: FakeApiServer, token = 'admin-token', namespace?: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(fake.kubeconfig(token, namespace ? { namespace } : {}));
  return kc;
}

export function namespace(name: string, labels: Record<string, string> = {}): Json {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } };
}

/** A running pod as kubelet reports it. */
export function pod(ns: string, name: string, opts: { node?: string; ip?: string; sa?: string; labels?: Record<string, string>; annotations?: Record<string, string>; phase?: string; uid?: string } = {}): Json {
  const sa = opts.sa ?? 'default';
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: ns,
      ...(opts.uid ? { uid: opts.uid } : {}),
      labels: { app: name.replace(/-[a-z0-9]{5}$/, ''), 'pod-template-hash': '7d9c6b8f5d', ...(opts.labels ?? {}) },
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-7d9c6b8f5d`, uid: '6c1f0a6e-63a5-4d6c-9b1c-0a4c3f1e2d10', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      nodeName: opts.node ?? 'node-1',
      serviceAccountName: sa,
      serviceAccount: sa,
      restartPolicy: 'Always',
      dnsPolicy: 'ClusterFirst',
      schedulerName: 'default-scheduler',
      terminationGracePeriodSeconds: 30,
      containers: [
        {
          name: 'app',
          image: 'registry.k8s.io/e2e-test-images/agnhost:2.45',
          args: ['netexec', '--http-port=8080'],
          ports: [{ containerPort: 8080, name: 'http', protocol: 'TCP' }],
          resources: {},
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
          volumeMounts: [{ name: 'kube-api-access-x7k2p', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
        },
      ],
      volumes: [{ name: 'kube-api-access-x7k2p', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } }],
      tolerations: [{ key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 }],
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
      priority: 0,
    },
    status: {
      phase: opts.phase ?? 'Running',
      conditions: [
        { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: '2024-05-01T10:00:00Z' },
        { type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: '2024-05-01T10:00:04Z' },
        { type: 'ContainersReady', status: 'True', lastProbeTime: null, lastTransitionTime: '2024-05-01T10:00:04Z' },
        { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: '2024-05-01T10:00:00Z' },
      ],
      hostIP: '172.18.0.3',
      hostIPs: [{ ip: '172.18.0.3' }],
      podIP: opts.ip ?? '10.244.1.7',
      podIPs: [{ ip: opts.ip ?? '10.244.1.7' }],
      startTime: '2024-05-01T10:00:00Z',
      qosClass: 'BestEffort',
      containerStatuses: [
        { name: 'app', ready: true, restartCount: 0, started: true, image: 'registry.k8s.io/e2e-test-images/agnhost:2.45', imageID: 'registry.k8s.io/e2e-test-images/agnhost@sha256:7e8bdd271312fd25fc5ff5a8f04727be84044eb3d7d8d03611972a6752e2e11e', containerID: 'containerd://3f1b2a', state: { running: { startedAt: '2024-05-01T10:00:03Z' } }, lastState: {} },
      ],
    },
  };
}

export function service(ns: string, name: string, opts: { selector?: Record<string, string>; ports?: Json[]; clusterIP?: string } = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns, labels: { app: name } },
    spec: {
      selector: opts.selector ?? { app: name },
      ports: opts.ports ?? [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
      type: 'ClusterIP',
      sessionAffinity: 'None',
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      internalTrafficPolicy: 'Cluster',
      ...(opts.clusterIP ? { clusterIP: opts.clusterIP, clusterIPs: [opts.clusterIP] } : {}),
    },
    status: { loadBalancer: {} },
  };
}

export function endpointSlice(ns: string, svc: string, ips: string[]): Json {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-x2v9q`, namespace: ns, generateName: `${svc}-`, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' }, ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: svc, uid: 'b4d0d0a5-1111-4d3e-8c5e-2c1f3a4b5c6d', controller: true, blockOwnerDeletion: true }] },
    addressType: 'IPv4',
    endpoints: ips.map((ip, i) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: `node-${i + 1}`, targetRef: { kind: 'Pod', namespace: ns, name: `${svc}-${i}` } })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

export function authorizationPolicy(ns: string, name: string): Json {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: ns },
    spec: { selector: { matchLabels: { app: 'echo' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: [`cluster.local/ns/${ns}/sa/client`] } }], to: [{ operation: { ports: ['8080'] } }] }] },
  };
}

export function peerAuthentication(ns: string, name: string, mode = 'STRICT'): Json {
  return { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name, namespace: ns }, spec: { mtls: { mode } } };
}

/** A waypoint Gateway as `istioctl waypoint apply` / `ambit waypoint apply` writes it. */
export function waypointGateway(ns: string, name = 'waypoint', opts: { for?: string; listeners?: Json[]; className?: string; infrastructure?: Json } = {}): Json {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: ns, ...(opts.for ? { labels: { 'istio.io/waypoint-for': opts.for } } : {}) },
    spec: {
      gatewayClassName: opts.className ?? 'istio-waypoint',
      listeners: opts.listeners ?? [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      ...(opts.infrastructure ? { infrastructure: opts.infrastructure } : {}),
    },
  };
}

export function httpRoute(ns: string, name: string, svc: string): Json {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: svc, port: 80 }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: `${svc}-v2`, port: 80, weight: 90 }, { name: `${svc}-v1`, port: 80, weight: 10 }], timeouts: { request: '5s' } },
      ],
    },
  };
}

export function grpcRoute(ns: string, name: string, svc: string): Json {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name, namespace: ns },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: svc, port: 9090 }], rules: [{ matches: [{ method: { service: 'grpc.health.v1.Health', method: 'Check' } }], backendRefs: [{ name: svc, port: 9090 }] }] },
  };
}

/** Deployment status as the deployment controller writes it. */
export function deploymentStatus(available: number, replicas = 1, generation = 1): Json {
  return {
    observedGeneration: generation,
    replicas,
    updatedReplicas: replicas,
    readyReplicas: available,
    availableReplicas: available,
    ...(available < replicas ? { unavailableReplicas: replicas - available } : {}),
    conditions: [
      { type: 'Available', status: available >= 1 ? 'True' : 'False', reason: available >= 1 ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable', message: available >= 1 ? 'Deployment has minimum availability.' : 'Deployment does not have minimum availability.', lastUpdateTime: '2024-05-01T10:00:10Z', lastTransitionTime: '2024-05-01T10:00:10Z' },
      { type: 'Progressing', status: 'True', reason: 'NewReplicaSetAvailable', message: 'ReplicaSet "waypoint-5f7d8c9b6" has successfully progressed.', lastUpdateTime: '2024-05-01T10:00:10Z', lastTransitionTime: '2024-05-01T10:00:00Z' },
    ],
  };
}
