import type { MeshSnapshot, Service, Workload } from '../model/types.js';
import { Identity } from '../identity/spiffe.js';
import { PolicyIndex, peerAuthMode, type Decision } from './evaluate.js';
import { L7PolicyIndex, type L7AuthorizationPolicy } from './l7.js';
import { waypointRefusal } from '../config/waypoint-binding.js';

/** One layer a connection passes, and what it does there. */
export interface ExplainStep {
  layer: 'source ztunnel' | 'waypoint' | 'destination ztunnel' | 'network';
  node: string | null;
  verdict: 'pass' | 'allow' | 'deny' | 'refuse';
  detail: string;
  policy?: string | null;
  rule?: number | null;
}

export interface EndpointExplanation {
  workload: string;
  node: string;
  address: string;
  steps: ExplainStep[];
  allowed: boolean;
}

export interface Explanation {
  from: { workload: string; ip: string; node: string; identity: string | null; captured: boolean };
  to: { kind: 'pod' | 'service'; name: string; port: number };
  endpoints: EndpointExplanation[];
  allowed: boolean;
  summary: string;
}

/** What `--to` names: a pod or a service, in a namespace, at a port. */
export interface ExplainTarget {
  namespace: string;
  name: string;
  port: number;
  /** force a kind when a pod and a service share the name */
  kind?: 'pod' | 'service';
}

/** Parses "NS/NAME:PORT", "svc/NS/NAME:PORT" or "pod/NS/NAME:PORT". */
export function parseTarget(text: string): ExplainTarget {
  const m = /^(?:(pod|svc|service)\/)?([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*):(\d{1,5})$/.exec(text);
  if (!m) throw new Error(`--to must be NAMESPACE/NAME:PORT (optionally prefixed pod/ or svc/), got "${text}"`);
  const port = Number(m[4]);
  if (port < 1 || port > 65535) throw new Error(`port ${port} is out of range`);
  return { namespace: m[2]!, name: m[3]!, port, ...(m[1] ? { kind: m[1] === 'pod' ? ('pod' as const) : ('service' as const) } : {}) };
}

function decisionStep(node: string, d: Decision, what: string): ExplainStep {
  return {
    layer: 'destination ztunnel',
    node,
    verdict: d.allowed ? 'allow' : 'deny',
    detail: `${what}: ${d.reason}${d.audited.length ? ` (audited by ${d.audited.join(', ')})` : ''}`,
    policy: d.policy,
    rule: d.rule,
  };
}

/**
 * Says what would happen to a TCP connection from one pod to a pod or service, layer by
 * layer, with the policy and rule that decide (pure: reads the same model ztunnels get).
 */
/** An HTTP request to check at a waypoint (when the path has one); without it the waypoint's policies are listed, not evaluated. */
export interface ExplainRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
}

export function explain(
  mesh: MeshSnapshot,
  from: { namespace: string; name: string },
  to: ExplainTarget,
  trustDomain = 'cluster.local',
  l7: { policies: readonly L7AuthorizationPolicy[]; request?: ExplainRequest } = { policies: [] },
): Explanation {
  const src = mesh.workloads.find((w) => w.namespace === from.namespace && w.name === from.name);
  if (!src) throw new Error(`no running pod ${from.namespace}/${from.name}`);
  const pod = to.kind === 'service' ? undefined : mesh.workloads.find((w) => w.namespace === to.namespace && w.name === to.name);
  const svc: Service | undefined = pod || to.kind === 'pod' ? undefined : mesh.services.find((s) => s.namespace === to.namespace && s.name === to.name);
  if (!pod && !svc) throw new Error(`no pod or service ${to.namespace}/${to.name}`);
  const srcCaptured = src.protocol === 'HBONE';
  const srcIdentity = srcCaptured ? new Identity(trustDomain, src.namespace, src.serviceAccount).toString() : null;
  const policies = new PolicyIndex(mesh.policies ?? []);
  const peers = mesh.peerAuthentications ?? [];

  let targets: { workload: Workload; port: number }[];
  if (pod) targets = [{ workload: pod, port: to.port }];
  else {
    const sp = svc!.ports.find((p) => p.port === to.port);
    if (!sp) throw new Error(`service ${to.namespace}/${to.name} has no port ${to.port} (ports: ${svc!.ports.map((p) => p.port).join(', ')})`);
    targets = svc!.endpoints.map((uid) => mesh.workloads.find((w) => w.uid === uid)).filter((w): w is Workload => !!w && w.ready).map((w) => ({ workload: w, port: sp.targetPort }));
  }

  // a waypoint on the path: service traffic (or pod traffic, for a waypoint of workloads) from a captured source
  const wpKey = srcCaptured ? (svc ? svc.waypoint : pod?.protocol === 'HBONE' ? pod.waypoint : undefined) : undefined;
  const wp = wpKey ? (mesh.waypoints ?? []).find((w) => w.key === wpKey) : undefined;
  const wpRefusal = wpKey ? waypointRefusal(wpKey, wp, svc ? 'service' : 'workload') : null;
  const wpPod = wp && !wpRefusal ? mesh.workloads.find((w) => w.uid === wp.pods[0]) : undefined;
  const wpIdentity = wpPod ? new Identity(trustDomain, wpPod.namespace, wpPod.serviceAccount).toString() : null;
  const l7index = new L7PolicyIndex(l7.policies);

  const endpoints = targets.map(({ workload: dst, port }): EndpointExplanation => {
    const steps: ExplainStep[] = [];
    const dstCaptured = dst.protocol === 'HBONE';
    if (wpKey && wpRefusal) {
      steps.push({ layer: 'source ztunnel', node: src.node, verdict: 'refuse', detail: `${wpRefusal}: traffic bound to a waypoint is refused, never sent around it` });
      return { workload: `${dst.namespace}/${dst.name}`, node: dst.node, address: `${dst.ip}:${port}`, steps, allowed: false };
    }
    if (wpKey && wpPod) {
      steps.push({ layer: 'source ztunnel', node: src.node, verdict: 'pass', detail: `captured; carried over HBONE (mTLS) as ${srcIdentity} to waypoint ${wpKey} (${wpPod.ip}:15008)` });
      const target = { waypoint: { namespace: wp!.namespace, name: wp!.name, gatewayClass: 'istio-waypoint' }, service: svc ? { namespace: svc.namespace, name: svc.name } : null };
      const applicable = l7index.applicable(target);
      if (l7.request) {
        const d = l7index.decide(target, { method: l7.request.method, path: l7.request.path, host: svc ? svc.hostname : dst.ip, port: to.port, srcIp: src.ip, srcIdentity, dstIp: svc?.vip ?? dst.ip, remoteIp: null, headers: l7.request.headers ?? {} });
        steps.push({ ...decisionStep(wpPod.node, d, `L7 authorization of ${l7.request.method} ${l7.request.path} at waypoint ${wpKey}`), layer: 'waypoint' });
        if (!d.allowed) return { workload: `${dst.namespace}/${dst.name}`, node: dst.node, address: `${dst.ip}:${port}`, steps, allowed: false };
      } else {
        const names = applicable.map((p) => `${p.key} (${p.action})`).join(', ');
        steps.push({ layer: 'waypoint', node: wpPod.node, verdict: 'pass', detail: applicable.length === 0 ? `waypoint ${wpKey}: routes, and no L7 AuthorizationPolicy applies` : `waypoint ${wpKey}: routes, and L7 policies ${names} decide per request (give --method and --path to check one)` });
      }
    } else if (srcCaptured) {
      steps.push({
        layer: 'source ztunnel',
        node: src.node,
        verdict: 'pass',
        detail: dstCaptured ? `captured; carried over HBONE (mTLS) as ${srcIdentity}` : 'captured; destination is outside the mesh, sent as plain TCP',
      });
    } else {
      steps.push({ layer: 'network', node: src.node, verdict: 'pass', detail: 'source is not in the mesh: plaintext, no identity' });
    }
    if (!wpKey) steps.push({ layer: 'waypoint', node: null, verdict: 'pass', detail: 'no waypoint on this path' });
    // behind a waypoint, the destination sees the waypoint's connection and identity
    const hopIdentity = wpPod ? wpIdentity : srcIdentity;
    const hopIp = wpPod ? wpPod.ip : src.ip;
    let allowed = true;
    if (!dstCaptured) {
      steps.push({ layer: 'network', node: dst.node, verdict: 'pass', detail: 'destination is not in the mesh: no policy is enforced' });
    } else {
      const ref = { namespace: dst.namespace, labels: dst.labels };
      if (!hopIdentity && peerAuthMode(peers, ref, port) === 'STRICT') {
        steps.push({ layer: 'destination ztunnel', node: dst.node, verdict: 'refuse', detail: 'PeerAuthentication is STRICT: plaintext from outside the mesh is refused' });
        allowed = false;
      } else {
        const d = policies.evaluate(ref, { srcIp: hopIp, srcIdentity: hopIdentity, dstIp: dst.ip, dstPort: port });
        steps.push(decisionStep(dst.node, d, `L4 authorization for ${dst.namespace}/${dst.name}`));
        allowed = d.allowed;
      }
    }
    return { workload: `${dst.namespace}/${dst.name}`, node: dst.node, address: `${dst.ip}:${port}`, steps, allowed };
  });
  const allowed = endpoints.length > 0 && endpoints.every((e) => e.allowed);
  const denied = endpoints.filter((e) => !e.allowed);
  const deciding = denied[0]?.steps.at(-1);
  const summary =
    endpoints.length === 0
      ? `refused: ${to.namespace}/${to.name} has no ready endpoints`
      : allowed
        ? 'allowed'
        : `${denied.length === endpoints.length ? 'denied' : `denied for ${denied.length} of ${endpoints.length} endpoints`} at the ${deciding!.layer} on ${deciding!.node}${deciding!.policy ? ` by ${deciding!.policy} rule ${deciding!.rule}` : ''}`;
  return {
    from: { workload: `${src.namespace}/${src.name}`, ip: src.ip, node: src.node, identity: srcIdentity, captured: srcCaptured },
    to: { kind: pod ? 'pod' : 'service', name: `${to.namespace}/${to.name}`, port: to.port },
    endpoints,
    allowed,
    summary,
  };
}

/** The explanation as a person reads it. */
export function formatExplanation(e: Explanation): string {
  const lines = [
    `from  ${e.from.workload} (${e.from.ip} on ${e.from.node}${e.from.identity ? `, ${e.from.identity}` : ', not in the mesh'})`,
    `to    ${e.to.kind} ${e.to.name}:${e.to.port}`,
  ];
  for (const ep of e.endpoints) {
    lines.push('', `  → ${ep.workload} at ${ep.address} (${ep.node}): ${ep.allowed ? 'ALLOWED' : 'DENIED'}`);
    ep.steps.forEach((s, i) => lines.push(`    ${i + 1}. ${s.layer}${s.node ? ` (${s.node})` : ''}: ${s.verdict} — ${s.detail}`));
  }
  lines.push('', `verdict: ${e.summary}`);
  return lines.join('\n');
}
