import type { Logger } from '../../shared/telemetry/log.js';
import type { ControlServer } from '../server.js';
import { Dashboard } from './server.js';

/** Reads `--dashboard`: "host:port" (IPv6 in brackets) or "off". */
export function parseDashboardAddress(v: string): { host: string; port: number } | null {
  if (v === 'off') return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`--dashboard must be host:port or "off", got "${v}"`);
  return { host: m[1] ?? m[2]!, port };
}

/**
 * Starts the dashboard next to the control plane's gRPC server. A port that cannot be bound is
 * logged, not fatal: the mesh needs the control plane, not its page.
 */
export async function startDashboard(spec: string, server: ControlServer, log: Logger): Promise<Dashboard | null> {
  const addr = parseDashboardAddress(spec);
  if (!addr) return null;
  const dashboard = new Dashboard(
    { current: () => server.current(), connectedNodes: () => server.connectedNodes(), connectedWaypoints: () => server.connectedWaypoints(), reports: server.reports, trustDomain: server.trustDomain },
    log.child({ part: 'dashboard' }),
  );
  try {
    const port = await dashboard.listen(addr.host, addr.port);
    log.info({ dashboard: `http://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${port}/` }, 'dashboard serving');
    return dashboard;
  } catch (err) {
    log.error({ err: (err as Error).message }, 'dashboard not started; the control plane serves on without it');
    return null;
  }
}
