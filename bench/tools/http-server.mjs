// HTTP/1.1 server for the L7 bench (bench/l7), run as the server pods' command: every request is
// read to its end and answered 200 with a --size-byte body (content-length, keep-alive), whatever
// its method and path. It exits by itself after --max-seconds (and on SIGTERM/SIGINT from
// `ambit local down`).
import http from 'node:http';
import { parseArgs } from './args.mjs';

const o = parseArgs(process.argv.slice(2), { port: 8080, size: 1024, maxSeconds: 6 * 3600 });
const body = Buffer.alloc(o.size, 0x72);
const headers = { 'content-type': 'application/octet-stream', 'content-length': String(o.size) };

const server = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, headers);
    res.end(body);
  });
});
// idle keep-alive connections stay open for the length of a run
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.requestTimeout = 0;
server.on('error', (e) => {
  console.error(`http :${o.port}: ${e.message}`);
  process.exit(1);
});
server.listen(o.port, '0.0.0.0', () => console.log(`bench http server: ${o.size} B responses on :${o.port}`));

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(() => {
  console.log(`bench http server: --max-seconds ${o.maxSeconds} reached, exiting`);
  process.exit(0);
}, o.maxSeconds * 1000).unref();
