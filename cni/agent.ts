import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeObject } from '../shared/config/objects.js';
import { isAmbient, podInfo } from '../shared/config/translate.js';
import { installPodRules, installReturnPath, removePodRules, startPodCapture, stopPodCapture, podRulesInstalled } from '../shared/redirect/apply.js';
import { AgentClient, type AgentRequest } from '../shared/nodeagent/protocol.js';
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

/** What the agent does to the redirect rules in a pod's netns (shared/redirect/apply.ts). */
export interface PodRules {
  /** the full set: return path and capture */
  install(netns: string): Promise<void>;
  /** the return path only (ip rule, route, connmark): redirects nothing */
  installReturnPath(netns: string): Promise<void>;
  /** the capture (nat redirects), on top of the return path */
  startCapture(netns: string): Promise<void>;
  /** removes the capture and keeps the return path; true when there was a capture */
  stopCapture(netns: string): Promise<boolean>;
  /** removes everything */
  remove(netns: string): Promise<void>;
  /** whether exactly the full set is installed */
  installed(netns: string): Promise<boolean>;
}

/** The rules as the node agent applies them: iptables and ip inside the pod netns. */
export const netnsRules: PodRules = {
  install: (netns) => installPodRules(netns),
  installReturnPath: (netns) => installReturnPath(netns),
  startCapture: (netns) => startPodCapture(netns),
  stopCapture: (netns) => stopPodCapture(netns),
  remove: (netns) => removePodRules(netns),
  installed: (netns) => podRulesInstalled(netns),
};

/**
 * `recovered`: loaded from disk at start, so what is installed in its netns is not known
 * (the agent may have been away while its labels changed).
 */
type Tracked = PodRecord & { state: Redirection; recovered: boolean };

const ZTUNNEL_RETRY_MIN_MS = 100;
/** short: a ztunnel being replaced drops the agent and its successor should get the pods soon after */
const ZTUNNEL_RETRY_MAX_MS = 1000;
const ADD_ACK_WAIT_MS = 5000;

class RequestError extends Error {}

/**
 * The node agent: on CNI ADD it decides whether the pod is ambient, installs the redirect
 * rules inside the pod's netns and hands the pod to ztunnel; it follows label changes for
 * running pods (enroll / un-enroll without restart) and re-sends everything to a restarted
 * ztunnel. Pod records survive agent restarts in `stateDir`.
 *
 * Order matters for a running pod, whose app may open a connection at any moment: it is
 * handed to ztunnel (listeners up in its netns) before its traffic is redirected there, and
 * it stops being redirected before ztunnel lets it go, so no connection meets a port nobody
 * listens on. A new pod (CNI ADD) is captured first: its app has not started, and if ztunnel
 * is away its traffic must be refused rather than leave the mesh in plaintext.
 *
 * `ambient.istio.io/redirection` says what the pod's traffic meets: absent, not redirected;
 * `pending`, redirected but ztunnel does not serve the pod (refused, fail closed); `enabled`,
 * redirected to ztunnel, which serves it.
 */
export class NodeAgent {
  private readonly pods = new Map<string, Tracked>();
  private ztunnel: AgentClient | null = null;
  private ztunnelTimer: NodeJS.Timeout | null = null;
  private ztunnelBackoff = ZTUNNEL_RETRY_MIN_MS;
  private server: http.Server | null = null;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();

  private readonly rules: PodRules;

  constructor(
    private readonly opts: { node: string; stateDir: string; ztunnelSocket: string; cniSocket: string; view: ClusterView; annotate: Annotator; log: Logger; rules?: PodRules },
  ) {
    this.rules = opts.rules ?? netnsRules;
  }

  /** Loads pod records, serves the CNI socket, connects to ztunnel and reconciles. */
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
        this.pods.set(`${rec.namespace}/${rec.name}`, { ...rec, state: null, recovered: true });
      } catch (err) {
        this.opts.log.warn({ file: f, err: (err as Error).message }, 'unreadable pod record skipped');
      }
    }
    await this.serve();
    // ztunnel before the first reconcile, so running pods enrolled now are handed to it before
    // their rules go in; that reconcile also re-sends the pods enrolled before the restart.
    const client = await AgentClient.connect(this.opts.ztunnelSocket, 2000).catch(() => null);
    const first = client ? this.attach(client) : this.serial(() => this.reconcile());
    this.opts.view.on('change', () => {
      if (!this.stopped) void this.serial(() => this.reconcile());
    });
    await first;
    if (!client) this.scheduleZtunnel();
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

  /**
   * Brings every known pod to what its labels ask for. With `resend` (ztunnel just connected)
   * pods already captured are handed to ztunnel again.
   */
  async reconcile(resend = false): Promise<void> {
    const objects = this.opts.view.objects();
    for (const [key, rec] of this.pods) {
      const want = wantsAmbient(objects, rec.namespace, rec.name);
      try {
        if (want) {
          if (rec.state === null) await this.enroll(rec);
          else if (resend) await this.handOver(rec);
        } else if (rec.state !== null) await this.unenroll(rec, false);
        else if (rec.recovered) await this.dropLeftoverCapture(rec);
        rec.recovered = false;
      } catch (err) {
        this.opts.log.error({ pod: key, err: (err as Error).message }, 'reconcile failed for pod');
      }
    }
  }

  /**
   * Enrolls a running pod: return path, then ztunnel (its ack means the pod's listeners are
   * up), then the capture. Without ztunnel, or if it does not take the pod, the pod is
   * captured anyway and stays pending: its new connections are refused until ztunnel takes
   * it, never sent around the mesh.
   */
  private async enroll(rec: Tracked): Promise<void> {
    const pod = `${rec.namespace}/${rec.name}`;
    const z = this.ztunnel;
    if (!z) {
      await this.capture(rec);
      this.opts.log.warn({ pod }, 'ztunnel not connected: the pod is captured and its traffic refused until ztunnel is back');
      return;
    }
    // idempotent: after an agent restart it finds the rules of a pod enrolled before in place
    await this.rules.installReturnPath(rec.netns);
    try {
      await z.send(this.addMessage(rec), ADD_ACK_WAIT_MS);
    } catch (err) {
      this.opts.log.error({ pod, err: (err as Error).message }, 'ztunnel did not take the pod: it is captured and its traffic refused until ztunnel takes it');
      await this.capture(rec);
      return;
    }
    try {
      await this.rules.startCapture(rec.netns);
    } catch (err) {
      // not captured, so ztunnel must not keep serving it either
      await z.send({ type: 'del', uid: rec.uid }).catch(() => undefined);
      throw err;
    }
    await this.enabled(rec);
  }

  /** Redirects the pod's traffic to ztunnel before ztunnel serves it (refused until then). */
  private async capture(rec: Tracked): Promise<void> {
    await this.rules.install(rec.netns); // idempotent
    rec.state = 'pending';
    await this.opts.annotate(rec.namespace, rec.name, 'pending');
  }

  /** Hands a captured pod to ztunnel and waits for its ack (listeners up). */
  private async handOver(rec: Tracked): Promise<void> {
    const z = this.ztunnel;
    if (!z) {
      this.opts.log.warn({ pod: `${rec.namespace}/${rec.name}` }, 'ztunnel not connected: the pod is captured and its traffic refused until ztunnel is back');
      return;
    }
    await z.send(this.addMessage(rec), ADD_ACK_WAIT_MS);
    await this.enabled(rec);
  }

  private addMessage(rec: Tracked): AgentRequest {
    return { type: 'add', uid: rec.uid, name: rec.name, namespace: rec.namespace, serviceAccount: this.serviceAccount(rec), ip: rec.ip, netns: rec.netns };
  }

  private async enabled(rec: Tracked): Promise<void> {
    rec.state = 'enabled';
    await this.opts.annotate(rec.namespace, rec.name, 'enabled');
    this.opts.log.info({ pod: `${rec.namespace}/${rec.name}`, ip: rec.ip }, 'pod enrolled');
  }

  private serviceAccount(rec: PodRecord): string {
    const pod = this.opts.view.objects().find((o) => o.kind === 'Pod' && o.metadata.name === rec.name && (o.metadata.namespace ?? 'default') === rec.namespace);
    return pod ? podInfo(pod).serviceAccount : 'default';
  }

  /**
   * Leaves the mesh: the capture goes first, then ztunnel lets the pod go, so no new
   * connection is redirected to a listener that is closing. A running pod keeps the return
   * path: connections ztunnel already carries for it finish normally.
   */
  private async unenroll(rec: Tracked, podGone: boolean): Promise<void> {
    if (podGone) {
      if (existsSync(rec.netns)) await this.rules.remove(rec.netns);
    } else {
      await this.rules.stopCapture(rec.netns);
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

  /** After a restart: a pod whose labels no longer ask for ambient may still be captured from before. */
  private async dropLeftoverCapture(rec: Tracked): Promise<void> {
    if (!existsSync(rec.netns) || !(await this.rules.stopCapture(rec.netns))) return;
    await this.ztunnel?.send({ type: 'del', uid: rec.uid }).catch(() => undefined);
    await this.opts.annotate(rec.namespace, rec.name, null);
    this.opts.log.info({ pod: `${rec.namespace}/${rec.name}` }, 'pod left the mesh');
  }

  private connectZtunnel(): void {
    if (this.stopped) return;
    AgentClient.connect(this.opts.ztunnelSocket, 2000).then(
      (client) => void this.attach(client),
      () => this.scheduleZtunnel(),
    );
  }

  /**
   * A (re)connected ztunnel: every pod the agent captures is sent, pods enrolled meanwhile
   * are handed over, then the snapshot marker lets ztunnel drop the pods nobody sent.
   */
  private attach(client: AgentClient): Promise<void> {
    this.ztunnelBackoff = ZTUNNEL_RETRY_MIN_MS;
    let closed = false;
    client.onClose(() => {
      closed = true;
      if (this.ztunnel === client) this.ztunnel = null;
      for (const rec of this.pods.values()) {
        if (rec.state !== 'enabled') continue;
        rec.state = 'pending';
        void this.opts.annotate(rec.namespace, rec.name, 'pending');
      }
      if (!this.stopped) this.opts.log.warn('ztunnel connection lost (a ztunnel being replaced serves its pods until its successor takes them; without one they are refused)');
      this.scheduleZtunnel();
    });
    return this.serial(async () => {
      if (closed) return;
      this.ztunnel = client;
      this.opts.log.info('connected to ztunnel; sending the pod snapshot');
      await this.reconcile(true);
      await client.send({ type: 'snapshot-sent' }).catch((err: Error) => this.opts.log.warn({ err: err.message }, 'snapshot marker not acknowledged'));
    });
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
      const rec: Tracked = { namespace: req.podNamespace, name: req.podName, uid: req.podUid || key, containerId: req.containerId, netns: req.netns, ip, state: null, recovered: false };
      const old = this.pods.get(key);
      if (old && old.containerId !== req.containerId && old.state !== null) await this.unenroll(old, true);
      this.pods.set(key, rec);
      await this.saveRecord(rec);
      if (!wantsAmbient(this.opts.view.objects(), rec.namespace, rec.name)) return { ambient: false, redirection: null };
      // the app has not started: capture first, so that without ztunnel nothing leaves in plaintext
      await this.capture(rec);
      await this.handOver(rec);
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
    return (await this.rules.installed(req.netns)) ? null : `redirect rules of ${req.podNamespace}/${req.podName} are missing or differ`;
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
