/**
 * Loaded into the control plane process under test (`node --import <this> dist/control/main.js`):
 * times every ControlServer.setObjects and FileSource reload and reports them to the bench over
 * the IPC channel, and applies the bench's changes straight through setObjects (the path an
 * informer takes), so both paths run in the real control plane process.
 */
import { performance } from 'node:perf_hooks';
import { ControlServer } from '../../control/server.js';
import { FileSource } from '../../shared/config/file-source.js';
import type { KubeObject } from '../../shared/config/objects.js';

/** From the bench: put and remove objects, then setObjects. */
export interface ProbeChange {
  op: 'change';
  id: number;
  put: KubeObject[];
  remove: string[];
}

/** From the bench: report the heap. */
export interface ProbeMemoryRequest {
  op: 'memory';
}

/** To the bench: process.memoryUsage() in MiB, and what a full collection leaves (with --expose-gc). */
export interface ProbeMemory {
  event: 'memory';
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
  /** heap and external memory still referenced: after a full garbage collection */
  liveHeapMiB: number | null;
  liveExternalMiB: number | null;
}

/** To the bench, after each setObjects. */
export interface ProbeApplied {
  event: 'applied';
  /** the change id, for a change the bench sent; null for a file reload */
  id: number | null;
  version: number;
  /** building the object list from the change (direct changes) */
  buildMs: number;
  /** FileSource: from the start of the reload (after its debounce) until setObjects (reading and parsing the YAML) */
  readMs: number | null;
  /** setObjects: translate, diff, and the delta handed to every watcher's stream */
  setMs: number;
}

export const objectKey = (o: KubeObject): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

const now = (): number => performance.now();
let server: ControlServer | null = null;
let lastList: KubeObject[] = [];
let byKey: Map<string, KubeObject> | null = null;
let reloadStart: number | null = null;
let changeId: number | null = null;
let buildMs = 0;

const setObjects = ControlServer.prototype.setObjects;
ControlServer.prototype.setObjects = function (this: ControlServer, objects: KubeObject[]): void {
  server = this;
  const readMs = reloadStart === null ? null : now() - reloadStart;
  reloadStart = null;
  const t0 = now();
  setObjects.call(this, objects);
  const setMs = now() - t0;
  if (objects !== lastList) byKey = null;
  lastList = objects;
  const msg: ProbeApplied = { event: 'applied', id: changeId, version: this.current().version, buildMs, readMs, setMs };
  changeId = null;
  buildMs = 0;
  process.send?.(msg);
};

const reload = FileSource.prototype.reload;
FileSource.prototype.reload = function (this: FileSource): Promise<void> {
  reloadStart = now();
  return reload.call(this);
};

const mib = (n: number): number => Math.round((n / 1048576) * 10) / 10;

process.on('message', (m: ProbeChange | ProbeMemoryRequest) => {
  if (m.op === 'memory') {
    const u = process.memoryUsage();
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const live = gc ? process.memoryUsage() : null;
    const msg: ProbeMemory = {
      event: 'memory',
      rssMiB: mib(u.rss),
      heapUsedMiB: mib(u.heapUsed),
      heapTotalMiB: mib(u.heapTotal),
      externalMiB: mib(u.external),
      arrayBuffersMiB: mib(u.arrayBuffers),
      liveHeapMiB: live && mib(live.heapUsed),
      liveExternalMiB: live && mib(live.external),
    };
    process.send?.(msg);
    return;
  }
  if (m.op !== 'change' || !server) return;
  const t0 = now();
  if (!byKey) byKey = new Map(lastList.map((o) => [objectKey(o), o]));
  for (const k of m.remove) byKey.delete(k);
  for (const o of m.put) byKey.set(objectKey(o), o);
  const list = [...byKey.values()];
  lastList = list;
  buildMs = now() - t0;
  changeId = m.id;
  server.setObjects(list);
});
