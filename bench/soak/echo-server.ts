#!/usr/bin/env node
/**
 * The soak mesh's server pods: a TCP echo that keeps half-close (a client that ends its side
 * still gets everything back, then the FIN). Run from bench/soak/soak.yaml.
 */
import net from 'node:net';

const i = process.argv.indexOf('--port');
const port = i >= 0 ? Number(process.argv[i + 1]) : 9000;
let open = 0;
const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  open++;
  s.on('error', () => s.destroy());
  s.on('close', () => open--);
  s.pipe(s);
});
server.listen(port, () => console.log(JSON.stringify({ listening: port })));
setInterval(() => console.log(JSON.stringify({ time: new Date().toISOString(), open })), 60_000).unref();
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
