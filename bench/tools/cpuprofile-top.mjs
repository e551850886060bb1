// Summarizes a V8 .cpuprofile (from `npm run bench -- --profile DIR`, or node --cpu-prof):
// the functions with the most self time, and self time grouped by where the code lives.
//   node bench/tools/cpuprofile-top.mjs FILE.cpuprofile [--top N]
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node bench/tools/cpuprofile-top.mjs FILE.cpuprofile [--top N]');
  process.exit(2);
}
const top = Number(process.argv[process.argv.indexOf('--top') + 1]) || 25;
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const self = new Map();
// timeDeltas[i] is the time before sample i
for (let i = 0; i < p.samples.length; i++) {
  const id = p.samples[i];
  self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const fnKey = (n) => {
  const c = n.callFrame;
  const where = c.url ? `${c.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${c.lineNumber + 1}` : '';
  return `${c.functionName || '(anonymous)'} ${where}`.trim();
};
const area = (n) => {
  const u = n.callFrame.url;
  const f = n.callFrame.functionName;
  if (f === '(garbage collector)') return 'GC';
  if (f === '(idle)') return 'idle';
  if (f === '(program)') return '(program: native, not attributed)';
  if (!u) return `native: ${f}`;
  if (u.startsWith('node:')) return u.replace(/^node:internal\//, 'node:').split('/').slice(0, 2).join('/');
  const m = /\/dist\/([^/]+)\//.exec(u);
  if (m) return `ambit ${m[1]}`;
  if (u.includes('node_modules')) return `dep ${/node_modules\/((@[^/]+\/)?[^/]+)/.exec(u)?.[1]}`;
  return u;
};
const agg = (key) => {
  const m = new Map();
  for (const [id, t] of self) {
    const k = key(byId.get(id));
    m.set(k, (m.get(k) ?? 0) + t);
  }
  return [...m].sort((a, b) => b[1] - a[1]);
};
const idle = agg(area).find(([k]) => k === 'idle')?.[1] ?? 0;
const busy = total - idle;
console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (not idle)\n`);
console.log('self time by area (% of busy):');
for (const [k, t] of agg(area).filter(([k]) => k !== 'idle').slice(0, 15)) console.log(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${k}`);
console.log(`\ntop ${top} functions by self time (% of busy):`);
for (const [k, t] of agg(fnKey).filter(([k]) => !k.startsWith('(idle)')).slice(0, top)) console.log(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${k}`);
