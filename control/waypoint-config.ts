/**
 * What the control plane sends each waypoint (pure): the mesh's Services and workloads, the
 * route tables built from HTTPRoute/GRPCRoute/VirtualService/DestinationRule, and the
 * AuthorizationPolicies with targetRefs. An object that fails to translate keeps its last good
 * version; the failure is reported so the operator sees it.
 */
import type { KubeObject } from '../shared/config/objects.js';
import type { MeshSnapshot, Waypoint } from '../shared/model/types.js';
import { translateL7AuthorizationPolicy, type L7AuthorizationPolicy } from '../shared/policy/l7.js';
import { DEFAULT_ROOT_NAMESPACE } from '../shared/policy/evaluate.js';
import { buildRoutingConfig } from '../shared/routing/translate.js';
import type { RoutingConfig } from '../shared/routing/types.js';
import type { WaypointConfig } from '../waypoint/config.js';
import type { PolicyProblem } from '../shared/config/translate.js';

const ROUTE_KINDS = new Set(['HTTPRoute', 'GRPCRoute', 'ReferenceGrant', 'VirtualService', 'DestinationRule']);

function id(o: KubeObject): string {
  return `${o.kind} ${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

/** The L7 half of the config, shared by every waypoint. */
export interface L7Config {
  routing: RoutingConfig;
  policies: L7AuthorizationPolicy[];
}

/**
 * Translates routes and waypoint policies. `lastGood` maps object ids to their last version that
 * translated; it is updated in place (objects gone from the input are forgotten).
 */
export function buildL7Config(objects: readonly KubeObject[], snapshot: MeshSnapshot, lastGood: Map<string, KubeObject>, problems: PolicyProblem[], rootNamespace = DEFAULT_ROOT_NAMESPACE): L7Config {
  const present = new Set<string>();
  let routeObjects = objects.filter((o) => ROUTE_KINDS.has(o.kind));
  for (const o of routeObjects) present.add(id(o));
  let build = buildRoutingConfig(routeObjects, snapshot.services);
  if (build.problems.length > 0) {
    const failed = new Set(build.problems.map((p) => p.object));
    for (const p of build.problems) {
      const kept = lastGood.has(p.object);
      problems.push({ object: p.object, severity: 'error', message: `${p.error.message}; ${kept ? 'the previous version stays in force' : 'not applied'}` });
    }
    routeObjects = routeObjects.flatMap((o) => (failed.has(id(o)) ? (lastGood.has(id(o)) ? [lastGood.get(id(o))!] : []) : [o]));
    build = buildRoutingConfig(routeObjects, snapshot.services);
    for (const o of objects) if (ROUTE_KINDS.has(o.kind) && !failed.has(id(o))) lastGood.set(id(o), o);
  } else {
    for (const o of routeObjects) lastGood.set(id(o), o);
  }
  for (const w of build.warnings) problems.push({ object: w.split(':')[0] ?? 'route', severity: 'warning', message: w });

  const policies: L7AuthorizationPolicy[] = [];
  for (const o of objects) {
    if (o.kind !== 'AuthorizationPolicy') continue;
    present.add(id(o));
    let t;
    try {
      t = translateL7AuthorizationPolicy(o, rootNamespace);
      lastGood.set(id(o), o);
      for (const w of t.warnings) problems.push({ object: id(o), severity: 'warning', message: w });
    } catch {
      // the ztunnel side already reported this object; keep its last good waypoint version
      const prev = lastGood.get(id(o));
      if (!prev) continue;
      try {
        t = translateL7AuthorizationPolicy(prev, rootNamespace);
      } catch {
        continue;
      }
    }
    if (t.policy) policies.push(t.policy);
  }
  for (const k of [...lastGood.keys()]) if (!present.has(k)) lastGood.delete(k);
  return { routing: build.config, policies };
}

/** One waypoint's config. Every waypoint gets the whole mesh's Services and workloads: backends may be anywhere. */
export function waypointConfig(w: Pick<Waypoint, 'name' | 'namespace'>, snapshot: MeshSnapshot, l7: L7Config, trustDomain: string, rootNamespace = DEFAULT_ROOT_NAMESPACE): WaypointConfig {
  return {
    waypoint: { name: w.name, namespace: w.namespace, gatewayClass: 'istio-waypoint' },
    trustDomain,
    services: snapshot.services,
    workloads: snapshot.workloads,
    routing: l7.routing,
    policies: l7.policies,
    rootNamespace,
  };
}
