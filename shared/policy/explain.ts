import type { MeshSnapshot, Service, Workload } from '../model/types.js';
import { Identity } from '../identity/spiffe.js';
import { PolicyIndex, peerAuthMode, type Decision } from './evaluate.js';

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
export function explain(mesh: MeshSnapshot, from: { namespace: string; name: string }, to: ExplainTarget, trustDomain = 'cluster.local'): Explanation {
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

  const endpoints = targets.map(({ workload: dst, port }): EndpointExplanation => {
    const steps: ExplainStep[] = [];
    const dstCaptured = dst.protocol === 'HBONE';
    if (srcCaptured) {
      steps.push({
        layer: 'source ztunnel',
        node: src.node,
        verdict: 'pass',
        detail: dstCaptured ? `captured; carried over HBONE (mTLS) as ${srcIdentity}` : 'captured; destination is outside the mesh, sent as plain TCP',
      });
    } else {
      steps.push({ layer: 'network', node: src.node, verdict: 'pass', detail: 'source is not in the mesh: plaintext, no identity' });
    }
    steps.push({ layer: 'waypoint', node: null, verdict: 'pass', detail: 'no waypoint on this path' });
    let allowed = true;
    if (!dstCaptured) {
      steps.push({ layer: 'network', node: dst.node, verdict: 'pass', detail: 'destination is not in the mesh: no policy is enforced' });
    } else {
      const ref = { namespace: dst.namespace, labels: dst.labels };
      if (!srcIdentity && peerAuthMode(peers, ref, port) === 'STRICT') {
        steps.push({ layer: 'destination ztunnel', node: dst.node, verdict: 'refuse', detail: 'PeerAuthentication is STRICT: plaintext from outside the mesh is refused' });
        allowed = false;
      } else {
        const d = policies.evaluate(ref, { srcIp: src.ip, srcIdentity, dstIp: dst.ip, dstPort: port });
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
