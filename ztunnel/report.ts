import {
  MAX_REPORTED_CERTIFICATES,
  MAX_REPORTED_CONNECTIONS,
  MAX_REPORTED_DENIES,
  type NodeReport,
  type ReportResponse,
} from '../shared/control/protocol.js';
import type { Logger } from '../shared/telemetry/log.js';
import type { CertificateInfo } from './certificates.js';
import type { DenyRecord, TrackedConnection } from './connections.js';

const workloadKey = (w?: { namespace: string; name: string }): string | null => (w ? `${w.namespace}/${w.name}` : null);

/**
 * This node's report for the dashboard (pure): the newest open connections (`open` in the
 * order they opened, as the tracker keeps them), the certificates
 * (identity, serial, validity: no key material) and the recent denies — what the admin
 * endpoint shows, cut to the protocol's limits.
 */
export function nodeReport(node: string, open: Iterable<TrackedConnection>, certificates: CertificateInfo[], denies: DenyRecord[], now: number): NodeReport {
  // the tracker keeps connections in the order they opened: the newest are last
  const all = [...open];
  const newest = all.slice(-MAX_REPORTED_CONNECTIONS).reverse();
  return {
    node,
    openConnections: all.length,
    connections: newest.map((c) => ({
      direction: c.direction,
      src: c.src.address,
      dst: c.dst.address,
      srcWorkload: workloadKey(c.src.workload),
      dstWorkload: workloadKey(c.dst.workload),
      srcIdentity: c.src.identity ?? null,
      dstIdentity: c.dst.identity ?? null,
      service: c.service?.hostname ?? null,
      protocol: c.protocol,
      mtls: c.mtls,
      ageMs: Math.max(0, Math.round(now - c.started)),
    })),
    certificates: certificates.slice(0, MAX_REPORTED_CERTIFICATES).map((c) => ({
      identity: c.identity,
      serial: c.serial,
      notBefore: c.notBefore.toISOString(),
      notAfter: c.notAfter.toISOString(),
      state: c.state,
      ...(c.error !== undefined ? { error: c.error } : {}),
    })),
    denies: denies.slice(-MAX_REPORTED_DENIES).map((d) => ({ ...d })),
  };
}

/** Sends a report; resolves with the control plane's answer. Rejects with the gRPC code when known. */
export type ReportSender = (report: NodeReport) => Promise<ReportResponse>;

/** Waits used when the control plane gives no answer (down, or too old to know reports). */
const RETRY_MS = 10_000;
const UNSUPPORTED_RETRY_MS = 5 * 60_000;
/** Bounds on what the control plane may ask for, so a bad answer cannot make ztunnel spin or stall. */
const MIN_INTERVAL_MS = 500;
const MAX_INTERVAL_MS = 5 * 60_000;

/**
 * Reports this node to the control plane now and then, as often as the control plane asks
 * (often while the dashboard is watched, seldom otherwise).
 */
export class NodeReporter {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private warnedUnsupported = false;

  constructor(
    private readonly build: () => NodeReport,
    private readonly send: ReportSender,
    private readonly log: Logger,
  ) {}

  start(firstInMs = 1000): void {
    this.schedule(firstInMs);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    let next = RETRY_MS;
    try {
      const r = await this.send(this.build());
      next = Math.min(MAX_INTERVAL_MS, Math.max(MIN_INTERVAL_MS, r.nextReportMs));
    } catch (err) {
      const e = err as Error & { code?: number };
      // 12 = UNIMPLEMENTED: a control plane from before reports; nothing to fix, ask seldom
      if (e.code === 12) {
        next = UNSUPPORTED_RETRY_MS;
        if (!this.warnedUnsupported) this.log.info('the control plane takes no node reports (older version); the dashboard will not show this node\'s connections');
        this.warnedUnsupported = true;
      } else {
        this.log.debug({ err: e.message }, 'node report not delivered');
      }
    }
    this.schedule(next);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
