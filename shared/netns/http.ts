import http from 'node:http';
import net from 'node:net';
import { closeFd, openNetns, tcpSocket } from '../native/index.js';

/** An unconnected TCP socket made inside a network namespace (connect it with `sock.connect(port, host)`). */
export function socketInNetns(netnsPath: string): net.Socket {
  const nsFd = openNetns(netnsPath);
  let fd: number;
  try {
    fd = tcpSocket({ netnsFd: nsFd });
  } finally {
    closeFd(nsFd);
  }
  return new net.Socket({ fd, readable: true, writable: true });
}

/** A plain HTTP request made from inside another network namespace (admin and readiness endpoints live there). */
export async function httpInNetns(
  netnsPath: string,
  req: { host: string; port: number; path: string; method?: string; timeoutMs?: number },
): Promise<{ status: number; body: string }> {
  const sock = socketInNetns(netnsPath);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`http://${req.host}:${req.port}${req.path} in ${netnsPath}: timed out`));
    }, req.timeoutMs ?? 5000);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(`http://${req.host}:${req.port}${req.path} in ${netnsPath}: ${err.message}`));
    };
    sock.once('error', fail);
    sock.connect(req.port, req.host, () => {
      const r = http.request({ method: req.method ?? 'GET', path: req.path, host: req.host, port: req.port, createConnection: () => sock }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          sock.destroy();
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', fail);
      });
      r.on('error', fail);
      r.end();
    });
  });
}
