// Loaded with NODE_OPTIONS=--import=… by `npm run bench -- --profile DIR` (node 20 refuses --cpu-prof in
// NODE_OPTIONS). In a ztunnel process only, it starts the V8 sampling profiler at start-up and writes
// DIR/ztunnel-<node>-<pid>.cpuprofile when the process exits (ztunnel exits cleanly on SIGTERM).
// Other processes that inherit NODE_OPTIONS are left alone.
import inspector from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.env.AMBIT_BENCH_PROFILE_DIR;
const main = process.argv[1] ?? '';
if (dir && /ztunnel[\\/]main\.js$/.test(main)) {
  const nodeFlag = process.argv.indexOf('--node');
  const node = nodeFlag > 0 ? process.argv[nodeFlag + 1] : 'unknown';
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env.AMBIT_BENCH_PROFILE_INTERVAL_US ?? 500) });
  session.post('Profiler.start');
  let written = false;
  // the in-thread inspector session answers synchronously, so this works inside 'exit'
  process.on('exit', () => {
    if (written) return;
    written = true;
    session.post('Profiler.stop', (err, res) => {
      if (err || !res) return;
      writeFileSync(join(dir, `ztunnel-${node}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
