import * as grpc from '@grpc/grpc-js';
import { controlService, type NodeReport, type ReportResponse, type SignRequest, type SignResponse, type WatchRequest, type WaypointUpdate, type WaypointWatchRequest } from '../shared/control/protocol.js';
import { diffSnapshots, snapshotUpdate } from '../shared/control/delta.js';
import type { MeshSnapshot, MeshUpdate } from '../shared/model/types.js';
import { podInfo, translate, type PolicyProblem } from '../shared/config/translate.js';
import type { KubeObject } from '../shared/config/objects.js';
import { Identity } from '../shared/identity/spiffe.js';
import type { CertificateAuthority } from '../shared/identity/ca.js';
import type { NodeAuthenticator, WaypointCaller } from './auth.js';
import { buildL7Config, waypointConfig, type L7Config } from './waypoint-config.js';
import { GATEWAY_NAME_LABEL } from '../shared/config/waypoint-names.js';
import { checkCaChange, fingerprintOf, type CaChange } from '../shared/identity/trust.js';
import type { Logger } from '../shared/telemetry/log.js';
import { NodeReports } from './node-reports.js';

interface Subscriber {
  node: string;
  /** the address the ztunnel connected from (its metrics listen there) */
  ip: string | null;
  call: grpc.ServerWritableStream<WatchRequest, MeshUpdate>;
}

interface WaypointSubscriber {
  /** namespace/name of the waypoint's Gateway */
  key: string;
  /** the address the waypoint connected from (its metrics listen there) */
  ip: string | null;
  call: grpc.ServerWritableStream<WaypointWatchRequest, WaypointUpdate>;
  /** what it was last sent, to send only changes */
  sent: string;
}

/** The IP of a gRPC peer ("1.2.3.4:5678", "::ffff:1.2.3.4:5678", "::1:5678"), or null. */
export function peerIp(peer: string): string | null {
  const i = peer.lastIndexOf(':');
  if (i <= 0) return null;
  const ip = peer.slice(0, i).replace(/^\[|\]$/g, '');
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return v4 ? v4[1]! : ip;
}

/** Serves the mesh to ztunnels (snapshot, then deltas) and waypoints (their config), signs workload certificates and keeps ztunnels' reports. */
export class ControlServer {
  private snapshot: MeshSnapshot = { workloads: [], services: [] };
  /** what the last translation could not honour */
  problems: PolicyProblem[] = [];
  /** node|namespace|serviceAccount of every pod scheduled on a node, IP or not yet (CNI runs before the pod has one) */
  private entitlements = new Set<string>();
  private version = 0;
  private readonly subscribers = new Set<Subscriber>();
  private readonly waypointSubscribers = new Set<WaypointSubscriber>();
  /** `namespace|serviceAccount|gateway` of every scheduled waypoint pod */
  private waypointPods = new Set<string>();
  private l7: L7Config = { routing: { tables: {}, destinations: {} }, policies: [] };
  private readonly lastGoodL7 = new Map<string, KubeObject>();
  private server: grpc.Server | null = null;
  /** what each node's ztunnel last reported (connections, certificates, denies) */
  readonly reports = new NodeReports();
  /** the roots every ztunnel is given (Sign responses and the Watch stream) */
  private roots: string[];
  private signerRoot: string;
  /** latest expiry of the leaves issued under each root (by fingerprint), to warn before dropping a root still in use */
  private readonly leavesUntil = new Map<string, Date>();

  constructor(
    private ca: CertificateAuthority,
    private readonly auth: NodeAuthenticator,
    private readonly log: Logger,
    private readonly certTtlSeconds = 24 * 3600,
  ) {
    this.roots = ca.rootsPem();
    this.signerRoot = fingerprintOf(ca.signerRootPem());
  }

  /**
   * Replaces the CA (root rotation): leaves are signed by the new one from now on, and when the
   * trusted roots changed every connected ztunnel is sent the new bundle at once, without
   * waiting for a renewal. Throws, keeping the current CA, when the change is refused.
   */
  setCa(next: CertificateAuthority): CaChange {
    const change = checkCaChange(this.ca.view(), next.view(), this.leavesUntil);
    if (change.error) throw new Error(change.error);
    this.ca = next;
    this.signerRoot = fingerprintOf(next.signerRootPem());
    for (const w of change.warnings) this.log.warn({ warning: w }, 'CA change');
    if (change.rootsChanged) {
      this.roots = next.rootsPem();
      this.version++;
      const update: MeshUpdate = { type: 'delta', version: this.version, workloads: [], services: [], removedWorkloads: [], removedServices: [], roots: this.roots };
      for (const s of this.subscribers) s.call.write(update);
      for (const w of this.waypointSubscribers) this.sendWaypoint(w);
    }
    return change;
  }

  /** The roots ztunnels are given now. */
  trustedRoots(): string[] {
    return [...this.roots];
  }

  /** Replaces the desired state; connected ztunnels get only what changed. */
  setObjects(objects: KubeObject[]): void {
    let next: MeshSnapshot;
    const problems: PolicyProblem[] = [];
    try {
      next = translate(objects, problems, this.snapshot);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'config rejected; keeping the last good config');
      return;
    }
    try {
      this.l7 = buildL7Config(objects, next, this.lastGoodL7, problems);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'routes rejected; waypoints keep the last good routes');
    }
    const seen = new Set(this.problems.map((p) => `${p.object}|${p.message}`));
    for (const p of problems) {
      if (seen.has(`${p.object}|${p.message}`)) continue;
      const line = { object: p.object, problem: p.message };
      if (p.severity === 'error') this.log.error(line, 'policy not honoured as written');
      else this.log.warn(line, 'policy partly honoured');
    }
    this.problems = problems;
    const update = diffSnapshots(this.snapshot, next, this.version + 1);
    this.snapshot = next;
    this.entitlements = scheduledIdentities(objects);
    this.waypointPods = scheduledWaypoints(objects);
    for (const w of this.waypointSubscribers) this.sendWaypoint(w);
    if (!update) return;
    this.version = update.version;
    this.log.info({ version: this.version, workloads: next.workloads.length, services: next.services.length }, 'config changed');
    for (const s of this.subscribers) s.call.write(update);
  }

  current(): { version: number; snapshot: MeshSnapshot } {
    return { version: this.version, snapshot: this.snapshot };
  }

  /** The CA's trust domain (workload identities are spiffe://<it>/ns/…/sa/…). */
  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** Nodes whose ztunnel holds a config stream now, with the address it connected from. */
  connectedNodes(): { node: string; ip: string | null }[] {
    const out = new Map<string, string | null>();
    for (const s of this.subscribers) out.set(s.node, s.ip);
    return [...out].map(([node, ip]) => ({ node, ip })).sort((a, b) => a.node.localeCompare(b.node));
  }

  /** Waypoint pods holding a config stream now (one entry per pod), with the address each connected from. */
  connectedWaypoints(): { waypoint: string; ip: string | null }[] {
    return [...this.waypointSubscribers]
      .map((w) => ({ waypoint: w.key, ip: w.ip }))
      .sort((a, b) => a.waypoint.localeCompare(b.waypoint) || String(a.ip).localeCompare(String(b.ip)));
  }

  /** Starts serving on host:port with TLS (certificate issued by the mesh CA). Returns the bound port. */
  async listen(address: string, creds: grpc.ServerCredentials): Promise<number> {
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 1024 * 1024 });
    server.addService(this.refusingService(), {
      watch: (call: grpc.ServerWritableStream<WatchRequest, MeshUpdate>) => void this.watch(call),
      watchWaypoint: (call: grpc.ServerWritableStream<WaypointWatchRequest, WaypointUpdate>) => void this.watchWaypoint(call),
      sign: (call: grpc.ServerUnaryCall<SignRequest, SignResponse>, cb: grpc.sendUnaryData<SignResponse>) => void this.sign(call, cb),
      report: (call: grpc.ServerUnaryCall<NodeReport, ReportResponse>, cb: grpc.sendUnaryData<ReportResponse>) => void this.report(call, cb),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.server = server;
    return port;
  }

  /**
   * The service, with request deserializers that log what they refuse: grpc-js answers a
   * malformed message with INTERNAL and says nothing, so the operator would never know.
   */
  private refusingService(): typeof controlService {
    const logged = <T>(method: string, deserialize: (b: Buffer) => T) => (b: Buffer): T => {
      try {
        return deserialize(b);
      } catch (err) {
        this.log.warn({ method, bytes: b.length, err: (err as Error).message }, 'control request refused: malformed message');
        throw err;
      }
    };
    return {
      watch: { ...controlService.watch, requestDeserialize: logged('Watch', controlService.watch.requestDeserialize) },
      watchWaypoint: { ...controlService.watchWaypoint, requestDeserialize: logged('WatchWaypoint', controlService.watchWaypoint.requestDeserialize) },
      sign: { ...controlService.sign, requestDeserialize: logged('Sign', controlService.sign.requestDeserialize) },
      report: { ...controlService.report, requestDeserialize: logged('Report', controlService.report.requestDeserialize) },
    };
  }

  private async watch(call: grpc.ServerWritableStream<WatchRequest, MeshUpdate>): Promise<void> {
    let node: string;
    try {
      node = await this.auth.authenticate(call.metadata);
    } catch (err) {
      this.log.warn({ node: call.request.node, peer: call.getPeer(), reason: (err as Error).message }, 'config stream refused');
      // emit, not destroy: a destroyed stream never sends its status, and the ztunnel would wait forever
      call.emit('error', Object.assign(new Error((err as Error).message), { code: grpc.status.UNAUTHENTICATED }));
      return;
    }
    if (call.request.node !== node) {
      this.log.warn({ node: call.request.node, peer: call.getPeer(), reason: `token is for node ${node}` }, 'config stream refused');
      call.emit('error', Object.assign(new Error(`token is for node ${node}, not ${call.request.node}`), { code: grpc.status.PERMISSION_DENIED }));
      return;
    }
    const sub: Subscriber = { node, ip: peerIp(call.getPeer()), call };
    this.subscribers.add(sub);
    this.log.info({ node, peer: call.getPeer() }, 'ztunnel connected');
    call.write({ ...snapshotUpdate(this.snapshot, this.version), roots: this.roots });
    const done = (): void => {
      if (this.subscribers.delete(sub)) this.log.info({ node }, 'ztunnel disconnected');
    };
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
  }

  /** The config of the waypoint a subscriber runs, sent when it differs from what it has. */
  private sendWaypoint(w: WaypointSubscriber): void {
    const [namespace, name] = w.key.split('/') as [string, string];
    const config = waypointConfig({ namespace, name }, this.snapshot, this.l7, this.ca.trustDomain);
    const text = JSON.stringify([config, this.roots]);
    if (text === w.sent) return;
    w.sent = text;
    w.call.write({ version: this.version, config, roots: this.roots });
  }

  /** Authenticates a waypoint's call, or answers it with the refusal and returns null. */
  private async waypointCaller(metadata: grpc.Metadata, peer: string, what: string, refuse: (code: grpc.status, message: string) => void): Promise<WaypointCaller | null> {
    if (!this.auth.authenticateWaypoint) {
      refuse(grpc.status.UNIMPLEMENTED, 'this control plane does not authenticate waypoints');
      return null;
    }
    try {
      return await this.auth.authenticateWaypoint(metadata);
    } catch (err) {
      this.log.warn({ peer, reason: (err as Error).message }, `${what} refused`);
      refuse(grpc.status.UNAUTHENTICATED, (err as Error).message);
      return null;
    }
  }

  private async watchWaypoint(call: grpc.ServerWritableStream<WaypointWatchRequest, WaypointUpdate>): Promise<void> {
    const { namespace, name } = call.request;
    const refuse = (code: grpc.status, message: string): void => void call.emit('error', Object.assign(new Error(message), { code }));
    const caller = await this.waypointCaller(call.metadata, call.getPeer(), 'waypoint config stream', refuse);
    if (!caller) return;
    if (caller.namespace !== namespace || !this.waypointPods.has(`${namespace}|${caller.serviceAccount}|${name}`)) {
      const message = `service account ${caller.namespace}/${caller.serviceAccount} runs no pod of waypoint ${namespace}/${name}`;
      this.log.warn({ waypoint: `${namespace}/${name}`, peer: call.getPeer(), reason: message }, 'waypoint config stream refused');
      return refuse(grpc.status.PERMISSION_DENIED, message);
    }
    const sub: WaypointSubscriber = { key: `${namespace}/${name}`, ip: peerIp(call.getPeer()), call, sent: '' };
    this.waypointSubscribers.add(sub);
    this.log.info({ waypoint: sub.key, peer: call.getPeer() }, 'waypoint connected');
    this.sendWaypoint(sub);
    const done = (): void => {
      if (this.waypointSubscribers.delete(sub)) this.log.info({ waypoint: sub.key }, 'waypoint disconnected');
    };
    call.on('cancelled', done);
    call.on('close', done);
    call.on('error', done);
  }

  private async sign(call: grpc.ServerUnaryCall<SignRequest, SignResponse>, cb: grpc.sendUnaryData<SignResponse>): Promise<void> {
    const fail = (code: grpc.status, message: string): void => {
      this.log.warn({ identity: call.request.identity, peer: call.getPeer(), reason: message }, 'certificate request refused');
      cb({ code, details: message });
    };
    let node: string | null = null;
    let waypoint: WaypointCaller | null = null;
    try {
      node = await this.auth.authenticate(call.metadata);
    } catch (err) {
      if (!this.auth.authenticateWaypoint) return fail(grpc.status.UNAUTHENTICATED, (err as Error).message);
      try {
        waypoint = await this.auth.authenticateWaypoint(call.metadata);
      } catch {
        return fail(grpc.status.UNAUTHENTICATED, (err as Error).message);
      }
    }
    let id: Identity;
    try {
      id = Identity.parse(call.request.identity);
    } catch (err) {
      return fail(grpc.status.INVALID_ARGUMENT, (err as Error).message);
    }
    if (id.trustDomain !== this.ca.trustDomain) return fail(grpc.status.PERMISSION_DENIED, `identity ${id} is not in trust domain ${this.ca.trustDomain}`);
    if (waypoint) {
      // a waypoint gets only its own identity, and only while a waypoint pod runs as it
      if (id.namespace !== waypoint.namespace || id.serviceAccount !== waypoint.serviceAccount) return fail(grpc.status.PERMISSION_DENIED, `a waypoint running as ${waypoint.namespace}/${waypoint.serviceAccount} cannot get a certificate for ${id}`);
      if (![...this.waypointPods].some((k) => k.startsWith(`${id.namespace}|${id.serviceAccount}|`))) return fail(grpc.status.PERMISSION_DENIED, `no waypoint pod runs as service account ${id.namespace}/${id.serviceAccount}`);
    } else if (!this.entitlements.has(`${node}|${id.namespace}|${id.serviceAccount}`)) return fail(grpc.status.PERMISSION_DENIED, `no pod with service account ${id.namespace}/${id.serviceAccount} runs on node ${node}`);
    try {
      const signerRoot = this.signerRoot;
      const issued = await this.ca.signCsr(call.request.csrPem, id, { ttlSeconds: this.certTtlSeconds });
      if (issued.notAfter > (this.leavesUntil.get(signerRoot) ?? new Date(0))) this.leavesUntil.set(signerRoot, issued.notAfter);
      this.log.info({ identity: id.toString(), ...(waypoint ? { waypoint: `${waypoint.namespace}/${waypoint.serviceAccount}` } : { node }), serial: issued.serial, notAfter: issued.notAfter.toISOString() }, 'certificate issued');
      cb(null, { certPem: issued.certPem, chainPem: issued.chainPem, rootsPem: issued.rootsPem });
    } catch (err) {
      fail(grpc.status.INVALID_ARGUMENT, (err as Error).message);
    }
  }

  /** A ztunnel's report for the dashboard: kept only from the node its token names. */
  private async report(call: grpc.ServerUnaryCall<NodeReport, ReportResponse>, cb: grpc.sendUnaryData<ReportResponse>): Promise<void> {
    let node: string;
    try {
      node = await this.auth.authenticate(call.metadata);
    } catch (err) {
      this.log.warn({ node: call.request.node, peer: call.getPeer(), reason: (err as Error).message }, 'node report refused');
      return cb({ code: grpc.status.UNAUTHENTICATED, details: (err as Error).message });
    }
    if (call.request.node !== node) {
      this.log.warn({ node: call.request.node, peer: call.getPeer(), reason: `token is for node ${node}` }, 'node report refused');
      return cb({ code: grpc.status.PERMISSION_DENIED, details: `token is for node ${node}, not ${call.request.node}` });
    }
    const now = Date.now();
    this.reports.put(call.request, now);
    cb(null, { nextReportMs: this.reports.nextReportMs(now) });
  }

  async close(): Promise<void> {
    for (const s of this.subscribers) s.call.end();
    this.subscribers.clear();
    for (const s of this.waypointSubscribers) s.call.end();
    this.waypointSubscribers.clear();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** Which identities each node may hold: those of the pods scheduled on it and not finished. */
export function scheduledIdentities(objects: KubeObject[]): Set<string> {
  const out = new Set<string>();
  for (const o of objects) {
    if (o.kind !== 'Pod') continue;
    const p = podInfo(o);
    if (!p.nodeName || p.hostNetwork || p.phase === 'Succeeded' || p.phase === 'Failed') continue;
    out.add(`${p.nodeName}|${p.namespace}|${p.serviceAccount}`);
  }
  return out;
}

/** `namespace|serviceAccount|gateway` of every waypoint pod scheduled and not finished. */
export function scheduledWaypoints(objects: KubeObject[]): Set<string> {
  const out = new Set<string>();
  for (const o of objects) {
    if (o.kind !== 'Pod') continue;
    const p = podInfo(o);
    const gw = p.labels[GATEWAY_NAME_LABEL];
    if (gw === undefined || !p.nodeName || p.phase === 'Succeeded' || p.phase === 'Failed') continue;
    out.add(`${p.namespace}|${p.serviceAccount}|${gw}`);
  }
  return out;
}
