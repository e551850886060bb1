import type { Server } from 'node:net';

/** Parses a `host:port` flag value (IPv6 in brackets); the error names the flag. */
export function hostPort(v: string, flag: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i <= 0 || v.slice(i + 1) === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag} must be host:port, got "${v}"`);
  return { host: v.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

/** Listens on a `host:port` flag value; a failure names the flag. */
export function listen(server: Server, v: string, flag: string): Promise<void> {
  const { host, port } = hostPort(v, flag);
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`${flag} ${v}: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
}
