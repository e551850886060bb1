import { readFile, readdir, stat } from 'node:fs/promises';
import { join, extname } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes-style object as read from YAML, with where it came from. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; uid?: string };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  /** file and document index, for error messages */
  source?: string;
}

/** A config error that names the file and the object. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function describe(source: string, kind?: unknown, name?: unknown): string {
  const k = typeof kind === 'string' ? kind : '<no kind>';
  const n = typeof name === 'string' ? name : '<no name>';
  return `${source}: ${k} "${n}"`;
}

function checkStringMap(value: unknown, where: string, field: string): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${where}: ${field} must be a map of strings`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new ConfigError(`${where}: ${field}.${k} must be a string, got ${JSON.stringify(v)}`);
  }
}

/** Parses one YAML text (many documents) into objects; throws ConfigError naming file and object. */
export function parseObjects(text: string, source: string): KubeObject[] {
  const docs = parseAllDocuments(text);
  const out: KubeObject[] = [];
  docs.forEach((doc, i) => {
    const where = `${source} (document ${i + 1})`;
    if (doc.errors.length > 0) throw new ConfigError(`${where}: invalid YAML: ${doc.errors[0]!.message}`);
    let value: unknown;
    try {
      value = doc.toJS();
    } catch (err) {
      // unresolved aliases and alias bombs ("billion laughs") fail here, not as parse errors
      throw new ConfigError(`${where}: invalid YAML: ${(err as Error).message}`);
    }
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${where}: expected an object with apiVersion, kind and metadata`);
    const o = value as Record<string, unknown>;
    if (o.kind === 'List' && Array.isArray(o.items)) {
      for (const item of o.items) out.push(validate(item, where));
      return;
    }
    out.push(validate(o, where));
  });
  return out;
}

function validate(value: unknown, where: string): KubeObject {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${where}: expected an object`);
  const o = value as Record<string, unknown>;
  const meta = o.metadata as Record<string, unknown> | undefined;
  const id = describe(where, o.kind, meta?.name);
  if (typeof o.apiVersion !== 'string' || o.apiVersion === '') throw new ConfigError(`${id}: apiVersion is missing`);
  if (typeof o.kind !== 'string' || o.kind === '') throw new ConfigError(`${id}: kind is missing`);
  if (typeof meta !== 'object' || meta === null) throw new ConfigError(`${id}: metadata is missing`);
  if (typeof meta.name !== 'string' || !NAME_RE.test(meta.name)) throw new ConfigError(`${id}: metadata.name must be a lowercase DNS name`);
  if (meta.namespace !== undefined && (typeof meta.namespace !== 'string' || !NAME_RE.test(meta.namespace))) {
    throw new ConfigError(`${id}: metadata.namespace must be a lowercase DNS name`);
  }
  checkStringMap(meta.labels, id, 'metadata.labels');
  checkStringMap(meta.annotations, id, 'metadata.annotations');
  if (o.spec !== undefined && (typeof o.spec !== 'object' || o.spec === null || Array.isArray(o.spec))) throw new ConfigError(`${id}: spec must be an object`);
  return { ...(o as unknown as KubeObject), source: where };
}

/** Files parsed by an earlier readObjects, by path, with the file's identity, size and times when it was read. */
export type ParsedFiles = Map<string, { signature: string; objects: KubeObject[] }>;

/**
 * Reads every .yaml/.yml/.json file of a file or directory (recursively, sorted). With `parsed`,
 * a file that has not changed since the last read is not parsed again (parsing YAML is most of
 * the cost of a re-read), and `parsed` is brought up to date.
 */
export async function readObjects(path: string, parsed?: ParsedFiles): Promise<KubeObject[]> {
  const files: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const s = await stat(p).catch(() => {
      throw new ConfigError(`${p}: no such file or directory`);
    });
    if (s.isDirectory()) {
      for (const e of (await readdir(p)).sort()) {
        if (e.startsWith('.')) continue;
        const child = join(p, e);
        const cs = await stat(child);
        if (cs.isDirectory() || ['.yaml', '.yml', '.json'].includes(extname(e))) await walk(child);
      }
    } else {
      files.push(p);
    }
  };
  await walk(path);
  const out: KubeObject[] = [];
  for (const f of files) {
    if (!parsed) {
      out.push(...parseObjects(await readFile(f, 'utf8'), f));
      continue;
    }
    // stat before reading: a write in between changes the signature, so it is read again next time
    const st = await stat(f, { bigint: true });
    const signature = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    let entry = parsed.get(f);
    if (entry?.signature !== signature) {
      entry = { signature, objects: parseObjects(await readFile(f, 'utf8'), f) };
      parsed.set(f, entry);
    }
    out.push(...entry.objects);
  }
  if (parsed) {
    const now = new Set(files);
    for (const f of parsed.keys()) if (!now.has(f)) parsed.delete(f);
  }
  return out;
}

/** namespace/name key; cluster-scoped objects use their name only. */
export function objectKey(o: KubeObject): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}
