// Bench server, run as the server pods' command (bench/mesh/bench.yaml):
//   --sink-port: reads and discards everything; when the client half-closes, answers one
//                JSON line {"bytes": N} with the count it received, then closes.
//   --rr-port:   request/response: for every full --size bytes received, sends --size bytes back.
// It exits by itself after --max-seconds (and on SIGTERM/SIGINT from `ambit local down`).
import net from 'node:net';
import { parseArgs } from './args.mjs';

const o = parseArgs(process.argv.slice(2), { sinkPort: 9000, rrPort: 9001, size: 1024, maxSeconds: 6 * 3600 });
const response = Buffer.alloc(o.size, 0x72);

const sink = net.createServer({ allowHalfOpen: true }, (s) => {
  let bytes = 0;
  s.on('data', (c) => {
    bytes += c.length;
  });
  s.on('end', () => s.end(JSON.stringify({ bytes }) + '\n'));
  s.on('error', () => s.destroy());
});

const rr = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  s.setNoDelay(true);
  let pending = 0;
  s.on('data', (c) => {
    pending += c.length;
    let n = 0;
    while (pending >= o.size) {
      pending -= o.size;
      n++;
    }
    if (n === 1) s.write(response);
    else if (n > 1) s.write(Buffer.concat(Array(n).fill(response)));
  });
  s.on('end', () => s.end());
  s.on('error', () => s.destroy());
});

let listening = 0;
const ready = () => {
  if (++listening === 2) console.log(`bench server: sink on :${o.sinkPort}, request/response (${o.size} B) on :${o.rrPort}`);
};
sink.on('error', (e) => {
  console.error(`sink :${o.sinkPort}: ${e.message}`);
  process.exit(1);
});
rr.on('error', (e) => {
  console.error(`rr :${o.rrPort}: ${e.message}`);
  process.exit(1);
});
sink.listen(o.sinkPort, '0.0.0.0', ready);
rr.listen(o.rrPort, '0.0.0.0', ready);

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(() => {
  console.log(`bench server: --max-seconds ${o.maxSeconds} reached, exiting`);
  process.exit(0);
}, o.maxSeconds * 1000).unref();
// keep the process alive until the timer or a signal (servers keep it alive anyway)
