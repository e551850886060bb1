/**
 * Waypoints in local mode: what the cluster's waypoint controller does with a Deployment, the
 * local mesh does with a pod. For every Gateway of class istio-waypoint the mesh config gets a
 * pod running the waypoint process (service account = the Gateway's name, not captured) and a
 * Service on 15008; they go away with the Gateway. Each waypoint gets its own control-plane token.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeObject } from '../../shared/config/objects.js';
import { isWaypointGateway } from '../../shared/config/waypoint-binding.js';
import { GATEWAY_NAME_LABEL, MANAGED_LABEL, MANAGED_VALUE, MESH_LISTENER } from '../../shared/config/waypoint-names.js';
import { WAYPOINT_NODE_FLAGS } from '../../shared/node-flags.js';

export interface LocalWaypointOptions {
  /** the mesh's state folder (tokens and roots live in its ca/) */
  dir: string;
  /** control plane host:port as the pods reach it */
  controlAddress: string;
  /** node and the waypoint's main script */
  nodePath: string;
  waypointMain: string;
}

function managedBy(o: KubeObject): string | null {
  if (o.metadata.labels?.[MANAGED_LABEL] !== MANAGED_VALUE) return null;
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.labels?.[GATEWAY_NAME_LABEL] ?? ''}`;
}

export function waypointTokenFile(dir: string, namespace: string, name: string): string {
  return join(dir, 'ca', `waypoint.${namespace}.${name}.token`);
}

/** The pod and Service that run one waypoint Gateway in local mode (pure). */
export function localWaypointObjects(gw: KubeObject, o: LocalWaypointOptions): KubeObject[] {
  const name = gw.metadata.name;
  const namespace = gw.metadata.namespace ?? 'default';
  const labels = { [GATEWAY_NAME_LABEL]: name, [MANAGED_LABEL]: MANAGED_VALUE, 'app.kubernetes.io/component': 'waypoint' };
  const pod: KubeObject = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `${name}-0`, namespace, labels: { ...labels, 'istio.io/dataplane-mode': 'none' } },
    spec: {
      serviceAccountName: name,
      containers: [
        {
          name: 'waypoint',
          command: [o.nodePath, ...WAYPOINT_NODE_FLAGS, o.waypointMain],
          args: ['--name', name, '--namespace', namespace, '--control', o.controlAddress, '--ca-root', join(o.dir, 'ca', 'root-cert.pem'), '--token-file', waypointTokenFile(o.dir, namespace, name)],
        },
      ],
    },
  };
  const service: KubeObject = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, labels },
    spec: { selector: { [GATEWAY_NAME_LABEL]: name }, ports: [{ name: MESH_LISTENER.name, port: MESH_LISTENER.port, targetPort: MESH_LISTENER.port }] },
  };
  return [pod, service];
}

/**
 * The config with each waypoint Gateway's pod and Service added (when missing) and those of
 * Gateways that are gone removed (pure). A user object of the same name is left alone and
 * reported: the waypoint then cannot run, and its status says so.
 */
export function reconcileWaypoints(objects: readonly KubeObject[], o: LocalWaypointOptions): { objects: KubeObject[]; conflicts: string[] } {
  const gateways = new Set(objects.filter(isWaypointGateway).map((g) => `${g.metadata.namespace ?? 'default'}/${g.metadata.name}`));
  const kept = objects.filter((x) => {
    const owner = managedBy(x);
    return owner === null || gateways.has(owner);
  });
  const ids = new Set(kept.map((x) => `${x.kind}/${x.metadata.namespace ?? 'default'}/${x.metadata.name}`));
  const conflicts: string[] = [];
  const out = [...kept];
  for (const gw of objects.filter(isWaypointGateway)) {
    for (const made of localWaypointObjects(gw, o)) {
      const id = `${made.kind}/${made.metadata.namespace ?? 'default'}/${made.metadata.name}`;
      if (!ids.has(id)) {
        out.push(made);
        ids.add(id);
        continue;
      }
      const existing = kept.find((x) => `${x.kind}/${x.metadata.namespace ?? 'default'}/${x.metadata.name}` === id)!;
      if (managedBy(existing) === null) conflicts.push(`${made.kind} ${id.split('/').slice(1).join('/')} exists and is not the waypoint's: Gateway ${gw.metadata.namespace ?? 'default'}/${gw.metadata.name} cannot run`);
    }
  }
  return { objects: out, conflicts };
}

/** Managed objects that belong to the given Gateways (what deleting them removes too). */
export function ownedBy(objects: readonly KubeObject[], gatewayIds: ReadonlySet<string>): KubeObject[] {
  return objects.filter((x) => {
    const owner = managedBy(x);
    return owner !== null && gatewayIds.has(owner);
  });
}

/** Gives every waypoint pod a control-plane token (file beside the node tokens, and an entry in node-tokens.json). */
export async function ensureWaypointTokens(dir: string, objects: readonly KubeObject[]): Promise<void> {
  const tokensPath = join(dir, 'ca', 'node-tokens.json');
  const tokens = JSON.parse(await readFile(tokensPath, 'utf8')) as Record<string, unknown>;
  let changed = false;
  for (const gw of objects.filter(isWaypointGateway)) {
    const ns = gw.metadata.namespace ?? 'default';
    const want = `${ns}/${gw.metadata.name}`;
    const file = waypointTokenFile(dir, ns, gw.metadata.name);
    const have = await readFile(file, 'utf8').catch(() => '');
    if (have && typeof tokens[have] === 'object') continue;
    const t = randomBytes(24).toString('hex');
    tokens[t] = { waypoint: want };
    await writeFile(file, t, { mode: 0o600 });
    changed = true;
  }
  if (changed) await writeFile(tokensPath, JSON.stringify(tokens), { mode: 0o600 });
}
