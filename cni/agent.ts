import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeObject } from '../shared/config/objects.js';
import { isAmbient, podInfo } from '../shared/config/translate.js';
import { installPodRules, removePodRules, stopPodCapture, podRulesInstalled } from '../shared/redirect/apply.js';
import { AgentClient } from '../shared/nodeagent/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';

/** What the agent knows of a pod from its CNI ADD (the netns and IP only the runtime knows). */
export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  containerId: string;
  netns: string;
  ip: string;
}

/** The value of `ambient.istio.io/redirection` for a pod, or null when it is not enrolled. */
export type Redirection = 'enabled' | 'pending' | null;

/** Writes a pod's redirection annotation (Kubernetes patch in a cluster, a file in local mode). */
export type Annotator = (namespace: string, name: string, value: Redirection) => Promise<void>;

/** Pods and namespaces as the cluster says they are now. */
export interface ClusterView {
  objects(): KubeObject[];
  on(event: 'change', fn: () => void): unknown;
}

/** Whether a pod should be captured, from the cluster's labels (pure). */
export function wantsAmbient(objects: KubeObject[], namespace: string, name: string): boolean {
  let pod: KubeObject | undefined;
  let nsLabels: Record<string, string> | undefined;
  for (const o of objects) {
    if (o.kind === 'Pod' && o.metadata.name === name && (o.metadata.namespace ?? 'default') === namespace) pod = o;
    else if (o.kind === 'Namespace' && o.metadata.name === namespace) nsLabels = o.metadata.labels ?? {};
  }
  if (!pod) return false;
  return isAmbient(podInfo(pod), nsLabels);
}

type Tracked = PodRecord & { state: Redirection };

const ZTUNNEL_RETRY_MIN_MS = 100;
const ZTUNNEL_RETRY_MAX_MS = 5000;
const ADD_ACK_WAIT_MS = 5000;

class RequestError extends Error {}

/**
 * The node agent: on CNI ADD it decides whether the pod is ambient, installs the redirect
 * rules inside the pod's netns and hands the pod to ztunnel; it follows label changes for
 * running pods (enroll / un-enroll without restart) and re-sends everything to a restarted
 * ztunnel. Pod records survive agent restarts in `stateDir`.
 */
export class NodeAgent {
  private readonly pods = new Map<string, Tracked>();
  private ztunnel: AgentClient | null = null;
  private ztunnelTimer: NodeJS.Timeout | null = null;
  private ztunnelBackoff = ZTUNNEL_RETRY_MIN_MS;
  private server: http.Server | null = null;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly opts: { node: string; stateDir: string; ztunnelSocket: string; cniSocket: string; view: ClusterView; annotate: Annotator; log: Logger },
  ) {}

  /** Loads pod records, serves the CNI socket, reconciles and connects to ztunnel. */
  async start(): Promise<void> {
    const dir = join(this.opts.stateDir, 'pods');
    await mkdir(dir, { recursive: true });
    for (const f of await readdir(dir)) {
      if (!f.endsWith('.json')) continue;
      try {
        const rec = JSON.parse(await readFile(join(dir, f), 'utf8')) as PodRecord;
        if (!existsSync(rec.netns)) {
          await rm(join(dir, f), { force: true });
          continue;
        }
        this.pods.set(`${rec.namespace}/${rec.name}`, { ...rec, state: null });
      } catch (err) {
        this.opts.log.warn({ file: f, err: (err as Error).message }, 'unreadable pod record skipped');
      }
    }
    this.opts.view.on('change', () => void this.serial(() => this.reconcile()));
    await this.serve();
    await this.serial(() => this.reconcile());
    this.connectZtunnel();
  }

  /** Runs agent work one piece at a time, so rules and ztunnel messages never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private recordFile(ns: string, name: string): string {
    return join(this.opts.stateDir, 'pods', `${ns}_${name}.json`);
  }

  private async saveRecord(rec: PodRecord): Promise<void> {
    const file = this.recordFile(rec.namespace, rec.name);
    const { namespace, name, uid, containerId, netns, ip } = rec;
    await writeFile(`${file}.tmp`, JSON.stringify({ namespace, name, uid, containerId, netns, ip }));
    await rename(`${file}.tmp`, file);
  }

  /** Brings every known pod to what its labels ask for. */
  async reconcile(): Promise<void> {
    const objects = this.opts.view.objects();
    for (const [key, rec] of this.pods) {
      const want = wantsAmbient(objects, rec.namespace, rec.name);
      try {
        if (want && rec.state === null) await this.enroll(rec);
        else if (!want && rec.state !== null) await this.unenroll(rec, false);
      } catch (err) {
        this.opts.log.error({ pod: key, err: (err as Error).message }, 'reconcile failed for pod');
      }
    }
  }

  private async enroll(rec: Tracked): Promise<void> {
    await installPodRules(rec.netns); // idempotent: after an agent restart it finds them in place
    rec.state = 'pending';
    await this.opts.annotate(rec.namespace, rec.name, 'pending');
    await this.sendAdd(rec);
  }

  private async sendAdd(rec: Tracked): Promise<void> {
    const z = this.ztunnel;
    if (!z) {
      this.opts.log.warn({ pod: `${rec.namespace}/${rec.name}` }, 'ztunnel not connected: the pod is captured and its traffic refused until ztunnel is back');
      return;
    }
    await z.send({ type: 'add', uid: rec.uid, name: rec.name, namespace: rec.namespace, serviceAccount: this.serviceAccount(rec), ip: rec.ip, netns: rec.netns }, ADD_ACK_WAIT_MS);
    rec.state = 'enabled';
    await this.opts.annotate(rec.namespace, rec.name, 'enabled');
    this.opts.log.info({ pod: `${rec.namespace}/${rec.name}`, ip: rec.ip }, 'pod enrolled');
  }

  private serviceAccount(rec: PodRecord): string {
    const pod = this.opts.view.objects().find((o) => o.kind === 'Pod' && o.metadata.name === rec.name && (o.metadata.namespace ?? 'default') === rec.namespace);
    return pod ? podInfo(pod).serviceAccount : 'default';
  }

  /** Leaves the mesh: new connections are no longer captured; open ones finish through ztunnel. */
  private async unenroll(rec: Tracked, podGone: boolean): Promise<void> {
    if (podGone) {
      if (existsSync(rec.netns)) await removePodRules(rec.netns);
    } else {
      await stopPodCapture(rec.netns);
    }
    try {
      await this.ztunnel?.send({ type: 'del', uid: rec.uid });
    } catch (err) {
      this.opts.log.warn({ pod: `${rec.namespace}/${rec.name}`, err: (err as Error).message }, 'ztunnel did not confirm removal');
    }
    rec.state = null;
    if (!podGone) await this.opts.annotate(rec.namespace, rec.name, null);
    this.opts.log.info({ pod: `${rec.namespace}/${rec.name}` }, 'pod left the mesh');
  }

  private connectZtunnel(): void {
    if (this.stopped) return;
    AgentClient.connect(this.opts.ztunnelSocket, 2000).then(
      (client) => {
        this.ztunnelBackoff = ZTUNNEL_RETRY_MIN_MS;
        client.onClose(() => {
          if (this.ztunnel === client) this.ztunnel = null;
          for (const rec of this.pods.values()) {
            if (rec.state !== 'enabled') continue;
            rec.state = 'pending';
            void this.opts.annotate(rec.namespace, rec.name, 'pending');
          }
          if (!this.stopped) this.opts.log.warn('ztunnel connection lost; captured pods are refused until it is back');
          this.scheduleZtunnel();
        });
        void this.serial(async () => {
          this.ztunnel = client;
          this.opts.log.info('connected to ztunnel; sending the pod snapshot');
          for (const rec of this.pods.values()) {
            if (rec.state === null) continue;
            try {
              await this.sendAdd(rec);
            } catch (err) {
              this.opts.log.error({ pod: `${rec.namespace}/${rec.name}`, err: (err as Error).message }, 'ztunnel refused pod');
            }
          }
          await client.send({ type: 'snapshot-sent' }).catch((err: Error) => this.opts.log.warn({ err: err.message }, 'snapshot marker not acknowledged'));
        });
      },
      () => this.scheduleZtunnel(),
    );
  }

  private scheduleZtunnel(): void {
    if (this.stopped) return;
    const delay = this.ztunnelBackoff;
    this.ztunnelBackoff = Math.min(this.ztunnelBackoff * 2, ZTUNNEL_RETRY_MAX_MS);
    this.ztunnelTimer = setTimeout(() => this.connectZtunnel(), delay);
  }

  /** CNI ADD: record the pod, and capture it before its app starts if it is ambient. */
  cniAdd(req: { containerId: string; netns: string; podNamespace: string; podName: string; podUid?: string; ips: string[] }): Promise<{ ambient: boolean; redirection: Redirection }> {
    return this.serial(async () => {
      const ip = req.ips.find((a) => !a.includes(':')) ?? req.ips[0]!;
      const key = `${req.podNamespace}/${req.podName}`;
      const rec: Tracked = { namespace: req.podNamespace, name: req.podName, uid: req.podUid || key, containerId: req.containerId, netns: req.netns, ip, state: null };
      const old = this.pods.get(key);
      if (old && old.containerId !== req.containerId && old.state !== null) await this.unenroll(old, true);
      this.pods.set(key, rec);
      await this.saveRecord(rec);
      if (!wantsAmbient(this.opts.view.objects(), rec.namespace, rec.name)) return { ambient: false, redirection: null };
      await this.enroll(rec);
      return { ambient: true, redirection: rec.state };
    });
  }

  /** CNI DEL: the pod is going away. */
  cniDel(req: { podNamespace: string; podName: string; containerId: string }): Promise<void> {
    return this.serial(async () => {
      const key = `${req.podNamespace}/${req.podName}`;
      const rec = this.pods.get(key);
      if (!rec || rec.containerId !== req.containerId) return;
      if (rec.state !== null) await this.unenroll(rec, true);
      this.pods.delete(key);
      await rm(this.recordFile(rec.namespace, rec.name), { force: true });
    });
  }

  /** CNI CHECK: an ambient pod must have exactly its rules. */
  async cniCheck(req: { podNamespace: string; podName: string; netns: string }): Promise<string | null> {
    if (!wantsAmbient(this.opts.view.objects(), req.podNamespace, req.podName)) return null;
    return (await podRulesInstalled(req.netns)) ? null : `redirect rules of ${req.podNamespace}/${req.podName} are missing or differ`;
  }

  /** Pods and their redirection state, for status views. */
  list(): Tracked[] {
    return [...this.pods.values()];
  }

  private async serve(): Promise<void> {
    await rm(this.opts.cniSocket, { force: true });
    const server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.cniSocket, () => resolve());
    });
    this.server = server;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    try {
      if (req.method === 'GET' && req.url === '/v1/status') return reply(200, { ready: true, ztunnel: this.ztunnel !== null });
      if (req.method !== 'POST') return reply(405, { error: 'POST /v1/cni/add|del|check, GET /v1/status' });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > 64 * 1024) return reply(413, { error: 'request too large' });
        chunks.push(c);
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        return reply(400, { error: 'body is not JSON' });
      }
      const str = (k: string): string => {
        const v = body[k];
        if (typeof v !== 'string' || v === '') throw new RequestError(`${k} must be a non-empty string`);
        return v;
      };
      switch (req.url) {
        case '/v1/cni/add': {
          const ips = body.ips;
          if (!Array.isArray(ips) || ips.length === 0 || ips.some((x) => typeof x !== 'string')) throw new RequestError('ips must list the pod addresses');
          const netns = str('netns');
          if (!netns.startsWith('/') || !existsSync(netns)) throw new RequestError(`netns ${netns} does not exist`);
          const podUid = typeof body.podUid === 'string' ? body.podUid : '';
          return reply(200, await this.cniAdd({ containerId: str('containerId'), netns, podNamespace: str('podNamespace'), podName: str('podName'), podUid, ips: ips as string[] }));
        }
        case '/v1/cni/del':
          await this.cniDel({ podNamespace: str('podNamespace'), podName: str('podName'), containerId: str('containerId') });
          return reply(200, {});
        case '/v1/cni/check': {
          const problem = await this.cniCheck({ podNamespace: str('podNamespace'), podName: str('podName'), netns: str('netns') });
          return problem ? reply(409, { error: problem }) : reply(200, {});
        }
        default:
          return reply(404, { error: `no such endpoint ${req.url}` });
      }
    } catch (err) {
      if (err instanceof RequestError) return reply(400, { error: err.message });
      this.opts.log.error({ url: req.url, err: (err as Error).message }, 'CNI request failed');
      return reply(500, { error: (err as Error).message });
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.ztunnelTimer) clearTimeout(this.ztunnelTimer);
    this.ztunnel?.close();
    this.server?.close();
  }
}
