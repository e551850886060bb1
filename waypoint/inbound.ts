/** What the waypoint reads from an inbound HBONE CONNECT (pure). */
import { parseAddress, type Service, type SocketAddress } from '../shared/model/types.js';

/** The client address from `forwarded: for="ip:port"` (what the source ztunnel saw), or null. */
export function forwardedFor(header: string | string[] | undefined): SocketAddress | null {
  const text = Array.isArray(header) ? header[0] : header;
  const m = text ? /(?:^|[;,])\s*for="?(\[[0-9a-fA-F:.]+\]:\d+|[0-9.]+:\d+)"?/.exec(text) : null;
  return m ? parseAddress(m[1]!) : null;
}

/** Port name prefixes Istio treats as opaque TCP (protocol selection by port name). */
const TCP_PREFIXES = new Set(['tcp', 'tls', 'mongo', 'mysql', 'redis']);

/** Whether a Service port carries opaque TCP: passed through, not parsed as HTTP. */
export function isTcpPort(service: Pick<Service, 'ports'>, port: number): boolean {
  const name = service.ports.find((p) => p.port === port)?.name;
  if (!name) return false;
  return TCP_PREFIXES.has(name.split('-')[0]!.toLowerCase());
}
