import { watch, type FSWatcher } from 'node:fs';
import { EventEmitter } from 'node:events';
import { readObjects, type KubeObject, type ParsedFiles } from './objects.js';
import type { Logger } from '../telemetry/log.js';

/** Kubernetes-style objects from a folder (or file) of YAML, re-read when it changes. */
export class FileSource extends EventEmitter<{ change: [KubeObject[]] }> {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading: Promise<void> = Promise.resolve();
  /** files as last parsed: a change re-parses only the files that changed */
  private readonly parsed: ParsedFiles = new Map();
  objects: KubeObject[] = [];

  constructor(private readonly path: string, private readonly log: Logger) {
    super();
  }

  /** Reads once (throws on bad input: nothing starts with a broken config), then watches. */
  async start(): Promise<KubeObject[]> {
    this.objects = await readObjects(this.path, this.parsed);
    this.watcher = watch(this.path, { recursive: false }, () => this.schedule());
    return this.objects;
  }

  /** Re-reads now; a bad file keeps the last good objects and logs why. */
  reload(): Promise<void> {
    this.reading = this.reading.then(async () => {
      try {
        this.objects = await readObjects(this.path, this.parsed);
        this.emit('change', this.objects);
      } catch (err) {
        this.log.error({ err: (err as Error).message, path: this.path }, 'config rejected; keeping the last good config');
      }
    });
    return this.reading;
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reload(), 50);
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }
}
