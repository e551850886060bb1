import type { NodeReport } from '../shared/control/protocol.js';

/** How often ztunnels report while someone looks at the dashboard, and otherwise. */
export const REPORT_ACTIVE_MS = 2_000;
export const REPORT_IDLE_MS = 10_000;
/** The dashboard counts as watched this long after its last request. */
const WATCHED_FOR_MS = 60_000;
/** A node silent this long is forgotten (its ztunnel is gone). */
const FORGET_AFTER_MS = 5 * 60_000;

/** A node's last report and when it arrived. */
export interface StoredReport {
  report: NodeReport;
  receivedAt: number;
}

/**
 * The last report of each node (connections, certificates, denies), for the dashboard.
 * Reports come more often while the dashboard is watched: each answer tells the ztunnel
 * when to report next.
 */
export class NodeReports {
  private readonly byNode = new Map<string, StoredReport>();
  private watchedAt = -Infinity;

  put(report: NodeReport, now: number): void {
    this.byNode.set(report.node, { report, receivedAt: now });
    for (const [node, r] of this.byNode) if (now - r.receivedAt > FORGET_AFTER_MS) this.byNode.delete(node);
  }

  get(node: string): StoredReport | undefined {
    return this.byNode.get(node);
  }

  all(): StoredReport[] {
    return [...this.byNode.values()];
  }

  /** Someone is looking: ask for fresh reports. */
  watched(now: number): void {
    this.watchedAt = now;
  }

  /** When a ztunnel should report next. */
  nextReportMs(now: number): number {
    return now - this.watchedAt <= WATCHED_FOR_MS ? REPORT_ACTIVE_MS : REPORT_IDLE_MS;
  }
}
