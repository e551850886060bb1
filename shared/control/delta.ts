import { isDeepStrictEqual } from 'node:util';
import type { MeshSnapshot, MeshUpdate } from '../model/types.js';

/** The full state as an update (what a newly connected ztunnel receives first). */
export function snapshotUpdate(s: MeshSnapshot, version: number): MeshUpdate {
  return {
    type: 'snapshot',
    version,
    workloads: s.workloads,
    services: s.services,
    removedWorkloads: [],
    removedServices: [],
    policies: s.policies ?? [],
    peerAuthentications: s.peerAuthentications ?? [],
    waypoints: s.waypoints ?? [],
  };
}

/** What changed from `prev` to `next`, or null when nothing did. */
export function diffSnapshots(prev: MeshSnapshot, next: MeshSnapshot, version: number): MeshUpdate | null {
  const oldW = new Map(prev.workloads.map((w) => [w.uid, w]));
  const newW = new Map(next.workloads.map((w) => [w.uid, w]));
  const oldS = new Map(prev.services.map((s) => [s.key, s]));
  const newS = new Map(next.services.map((s) => [s.key, s]));
  const update: MeshUpdate = {
    type: 'delta',
    version,
    workloads: next.workloads.filter((w) => !isDeepStrictEqual(oldW.get(w.uid), w)),
    services: next.services.filter((s) => !isDeepStrictEqual(oldS.get(s.key), s)),
    removedWorkloads: [...oldW.keys()].filter((k) => !newW.has(k)),
    removedServices: [...oldS.keys()].filter((k) => !newS.has(k)),
  };
  const [policies, removedPolicies] = diffBy(prev.policies ?? [], next.policies ?? [], (p) => p.key);
  const [peers, removedPeers] = diffBy(prev.peerAuthentications ?? [], next.peerAuthentications ?? [], (p) => p.key);
  if (policies.length || removedPolicies.length) Object.assign(update, { policies, removedPolicies });
  if (peers.length || removedPeers.length) Object.assign(update, { peerAuthentications: peers, removedPeerAuthentications: removedPeers });
  const [waypoints, removedWaypoints] = diffBy(prev.waypoints ?? [], next.waypoints ?? [], (w) => w.key);
  if (waypoints.length || removedWaypoints.length) Object.assign(update, { waypoints, removedWaypoints });
  const empty =
    update.workloads.length + update.services.length + update.removedWorkloads.length + update.removedServices.length + policies.length + removedPolicies.length + peers.length + removedPeers.length + waypoints.length + removedWaypoints.length === 0;
  return empty ? null : update;
}

/** Changed or new items of `next`, and keys gone since `prev`. */
function diffBy<T>(prev: T[], next: T[], key: (t: T) => string): [T[], string[]] {
  const old = new Map(prev.map((t) => [key(t), t]));
  const now = new Set(next.map(key));
  return [next.filter((t) => !isDeepStrictEqual(old.get(key(t)), t)), [...old.keys()].filter((k) => !now.has(k))];
}
