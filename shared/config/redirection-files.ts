/**
 * Local mode's stand-in for the pod annotation the node agents write in a cluster
 * (`ambient.istio.io/redirection`): each node's agent keeps `<dir>/<node>.json`, a map of
 * `namespace/name` → value, and the control plane lays those values onto the pods it read from
 * the config folder, as the API server would show them.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import type { KubeObject } from './objects.js';
import { REDIRECTION_ANNOTATION } from './translate.js';
import type { Logger } from '../telemetry/log.js';

/** Every node's file in `dir`, merged (`namespace/name` → value). Missing or half-written files count as empty. */
export async function readRedirections(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    try {
      const m = JSON.parse(await readFile(join(dir, name), 'utf8')) as unknown;
      if (m === null || typeof m !== 'object' || Array.isArray(m)) continue;
      for (const [k, v] of Object.entries(m as Record<string, unknown>)) if (typeof v === 'string') out[k] = v;
    } catch {
      /* gone or being replaced: the next change event reads it again */
    }
  }
  return out;
}

/**
 * `objects` with each pod's redirection annotation as the agents wrote it (pure: changed pods
 * are copies). A pod no agent wrote for keeps the annotations it came with.
 */
export function withRedirections(objects: KubeObject[], values: Readonly<Record<string, string>>): KubeObject[] {
  return objects.map((o) => {
    if (o.kind !== 'Pod') return o;
    const v = values[`${o.metadata.namespace ?? 'default'}/${o.metadata.name}`];
    if (v === undefined || o.metadata.annotations?.[REDIRECTION_ANNOTATION] === v) return o;
    return { ...o, metadata: { ...o.metadata, annotations: { ...o.metadata.annotations, [REDIRECTION_ANNOTATION]: v } } };
  });
}

/** The agents' files in `dir`, read again (debounced) whenever one changes. */
export class RedirectionFiles extends EventEmitter<{ change: [Record<string, string>] }> {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading: Promise<void> = Promise.resolve();
  values: Record<string, string> = {};

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {
    super();
  }

  async start(): Promise<Record<string, string>> {
    await mkdir(this.dir, { recursive: true });
    this.watcher = watch(this.dir, { recursive: false }, () => this.schedule());
    this.watcher.on('error', (err) => this.log.error({ err: err.message, dir: this.dir }, 'cannot watch the node agents\' redirection files'));
    this.values = await readRedirections(this.dir);
    return this.values;
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.reading = this.reading.then(async () => {
        const next = await readRedirections(this.dir);
        if (JSON.stringify(next) === JSON.stringify(this.values)) return;
        this.values = next;
        this.emit('change', next);
      });
    }, 20);
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }
}
