import { isDeepStrictEqual } from 'node:util';
import type { MeshSnapshot, MeshUpdate } from '../model/types.js';

/** The full state as an update (what a newly connected ztunnel receives first). */
export function snapshotUpdate(s: MeshSnapshot, version: number): MeshUpdate {
  return { type: 'snapshot', version, workloads: s.workloads, services: s.services, removedWorkloads: [], removedServices: [] };
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
  const empty = update.workloads.length + update.services.length + update.removedWorkloads.length + update.removedServices.length === 0;
  return empty ? null : update;
}
