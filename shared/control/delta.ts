import { isDeepStrictEqual } from 'node:util';
import type { MeshSnapshot, MeshUpdate } from '../model/types.js';

/**
 * The last snapshot update made for each snapshot: ztunnels connecting to the same version get the
 * same message object, which the protocol then serializes once (shared/control/protocol.ts).
 */
const snapshotUpdates = new WeakMap<MeshSnapshot, MeshUpdate>();

/** The full state as an update (what a newly connected ztunnel receives first). */
export function snapshotUpdate(s: MeshSnapshot, version: number): MeshUpdate {
  const made = snapshotUpdates.get(s);
  if (made?.version === version) return made;
  const update = makeSnapshotUpdate(s, version);
  snapshotUpdates.set(s, update);
  return update;
}

function makeSnapshotUpdate(s: MeshSnapshot, version: number): MeshUpdate {
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
    workloads: next.workloads.filter((w) => !sameData(oldW.get(w.uid), w)),
    services: next.services.filter((s) => !sameData(oldS.get(s.key), s)),
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
  return [next.filter((t) => !sameData(old.get(key(t)), t)), [...old.keys()].filter((k) => !now.has(k))];
}

/**
 * isDeepStrictEqual for the plain data of the mesh model, several times faster on it (the diff
 * compares every workload on every change). Plain objects and arrays are compared here, anything
 * else is left to isDeepStrictEqual. Not looked at: symbol keys, array holes and extra array
 * properties, which translated config never has.
 */
function sameData(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const pa = Object.getPrototypeOf(a) as unknown;
  if (pa !== Object.getPrototypeOf(b)) return false;
  if (pa === Array.prototype) {
    const x = a as unknown[];
    const y = b as unknown[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!sameData(x[i], y[i])) return false;
    return true;
  }
  if (pa !== Object.prototype && pa !== null) return isDeepStrictEqual(a, b);
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const keys = Object.keys(x);
  if (keys.length !== Object.keys(y).length) return false;
  for (const k of keys) if (!Object.hasOwn(y, k) || !sameData(x[k], y[k])) return false;
  return true;
}
