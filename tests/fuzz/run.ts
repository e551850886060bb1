#!/usr/bin/env node
/**
 * Long fuzzing runs by hand:
 *   node dist/tests/fuzz/run.js --seconds 600 --target all
 * Each target runs in a worker thread (a hang is caught by a watchdog) for --seconds, and on
 * in further rounds until it has --min-executions. Writes bench/fuzz/results.json (merged
 * per target, so one target can be re-run alone) and regenerates bench/fuzz/README.md.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import type { Crash, FuzzStats } from './fuzz.js';
import { runTarget } from './runner.js';
import { TARGETS, targetByName } from './targets.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const OUT = join(ROOT, 'bench', 'fuzz');

interface TargetResult {
  target: string;
  describe: string;
  executions: number;
  seconds: number;
  execPerSecond: number;
  crashes: number;
  rounds: number;
  seeds: number[];
  corpus: number;
  outcomes: number;
  refusedShare: number;
  crashList: Crash[];
  finishedAt: string;
}

interface Results {
  node: string;
  machine: string;
  targets: Record<string, TargetResult>;
}

async function fuzzOne(name: string, seconds: number, minExecutions: number, seed: number, log: (l: string) => void): Promise<TargetResult> {
  const rounds: FuzzStats[] = [];
  let total = 0;
  let spent = 0;
  do {
    const roundSeconds = rounds.length === 0 ? seconds : Math.max(60, Math.ceil(((minExecutions - total) / Math.max(1, total / spent)) * 1.1));
    const s = await runTarget(name, roundSeconds, seed + rounds.length * 7919);
    rounds.push(s);
    total += s.executions;
    spent += s.seconds;
    log(`${name}: round ${rounds.length}: ${s.executions.toLocaleString('en-US')} executions in ${s.seconds} s (${s.execPerSecond}/s), ${s.crashes} crashes`);
    if (s.crashList.some((c) => c.kind === 'hang')) break;
  } while (total < minExecutions && rounds.length < 20);
  const crashes = rounds.reduce((n, r) => n + r.crashes, 0);
  const refused = rounds.reduce((n, r) => n + r.refused, 0);
  return {
    target: name,
    describe: targetByName(name).describe,
    executions: total,
    seconds: Number(spent.toFixed(1)),
    execPerSecond: Math.round(total / spent),
    crashes,
    rounds: rounds.length,
    seeds: rounds.map((_, i) => seed + i * 7919),
    corpus: Math.max(...rounds.map((r) => r.corpus)),
    outcomes: Math.max(...rounds.map((r) => r.outcomes)),
    refusedShare: Number((refused / Math.max(1, total)).toFixed(3)),
    crashList: rounds.flatMap((r) => r.crashList).slice(0, 20),
    finishedAt: new Date().toISOString(),
  };
}

function readme(r: Results): string {
  const rows = TARGETS.map((t) => r.targets[t.name]).filter((x): x is TargetResult => x !== undefined);
  const n = (x: number): string => x.toLocaleString('en-US');
  const lines = [
    '# Fuzzing',
    '',
    'Mutational fuzzing of every parser that reads input from outside the process: seeded random,',
    'byte-level mutations of a seed corpus with per-target dictionaries, a structure-aware mutator for',
    'policy objects, and corpus growth on new outcomes (tests/fuzz/). A **crash** is an exception',
    'other than the parser\'s documented refusal (ConfigError, PluginFailure, `malformed … message`,',
    '`malformed node-agent frame` / `exceeds`), a broken invariant, an execution slower than 1 s, or a',
    'worker that stops making progress for 10 s (hang).',
    '',
    '`npm test` runs each target for about 3 s (tests/fuzz/fuzz.test.ts). Long runs, by hand:',
    '',
    '```',
    'npm run build',
    'node dist/tests/fuzz/run.js --seconds 600 --target all      # or --target yaml-config',
    '```',
    '',
    `Last results (${r.node}, ${r.machine}; written by run.js from results.json):`,
    '',
    '| target | what it exercises | executions | seconds | executions/s | crashes |',
    '|---|---|---:|---:|---:|---:|',
    ...rows.map((x) => `| ${x.target} | ${x.describe} | ${n(x.executions)} | ${n(Math.round(x.seconds))} | ${n(x.execPerSecond)} | ${x.crashes} |`),
    '',
    `Total: ${n(rows.reduce((s, x) => s + x.executions, 0))} executions, ${rows.reduce((s, x) => s + x.crashes, 0)} crashes.`,
    '',
  ];
  const crashed = rows.filter((x) => x.crashes > 0);
  if (crashed.length) {
    lines.push('## Crashes', '');
    for (const x of crashed) for (const c of x.crashList) lines.push(`- ${x.target} (${c.kind}): ${c.error.split('\n')[0]} — input (base64) \`${c.input.slice(0, 200)}\``);
    lines.push('');
  }
  lines.push(
    '## Found and fixed while writing these targets',
    '',
    '- yaml-config: `parseObjects` let the yaml library\'s `ReferenceError` (unresolved alias `*a`, alias',
    '  bombs) escape instead of a ConfigError; now wrapped (shared/config/objects.ts).',
    '- control-messages: the MessagePack deserializers let msgpackr\'s `RangeError`/`TypeError`/`Error`',
    '  through (e.g. "Offset is outside the bounds of the DataView", "read(...).map is not a function");',
    '  now one `malformed <what> message: …` refusal (shared/control/protocol.ts).',
    '- nodeagent-frames: the same for node-agent frames: `malformed node-agent frame: …`',
    '  (shared/nodeagent/protocol.ts).',
    '- nodeagent-frames: `checkAgentMessage` threw a TypeError on a message whose `type` is a 64-bit',
    '  integer (msgpackr decodes it as a BigInt, which `JSON.stringify` refuses), outside any try in',
    '  ztunnel\'s socket handler: one 21-byte frame stopped ztunnel. Its refusal text could also exceed',
    '  the 64 KiB frame limit and make the ack throw. Found by tests/hostile/nodeagent.test.ts, fixed in',
    '  shared/nodeagent/protocol.ts and ztunnel/inpod.ts; the dictionary now has 64-bit integers.',
    '- hbone-request: none. Leading zeros in the port (`10.0.1.1:080`) and any IPv6 spelling parse;',
    '  the invariant is that formatting a parsed address parses back to the same address.',
    '- The fuzzer itself: the first long yaml-config run stopped after 4.7 M executions with its worker',
    '  out of memory. yaml errors quote the input, so every outcome looked new and the outcome set grew',
    '  without bound (the input being run was harmless: 3 ms). Outcomes now use the first line of a',
    '  message and are capped at 100,000; the yaml-config row is the re-run.',
    '',
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const o = new Command()
    .name('fuzz')
    .option('--seconds <n>', 'seconds per target (first round)', '600')
    .option('--target <name>', `all, or one of ${TARGETS.map((t) => t.name).join(', ')}`, 'all')
    .option('--seed <n>', 'first seed', String(Date.now() % 1_000_000))
    .option('--min-executions <n>', 'keep going until each target has this many', '1000000')
    .option('--parallel <n>', 'targets at once', String(Math.max(1, availableParallelism())))
    .option('--readme-only', 'only rewrite README.md from results.json')
    .parse()
    .opts<{ seconds: string; target: string; seed: string; minExecutions: string; parallel: string; readmeOnly?: boolean }>();
  const names = o.target === 'all' ? TARGETS.map((t) => t.name) : o.target.split(',').map((n) => targetByName(n).name);
  const seconds = Number(o.seconds);
  const min = Number(o.minExecutions);
  const seed = Number(o.seed);
  await mkdir(OUT, { recursive: true });
  const file = join(OUT, 'results.json');
  const prior = await readFile(file, 'utf8').then((t) => JSON.parse(t) as Results).catch(() => null);
  const results: Results = { node: process.version, machine: `${availableParallelism()} CPUs`, targets: prior?.targets ?? {} };
  if (o.readmeOnly) {
    if (!prior) throw new Error(`${file} does not exist yet`);
    await writeFile(join(OUT, 'README.md'), readme(prior));
    return;
  }
  const queue = [...names];
  const say = (l: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${l}`);
  say(`fuzzing ${names.join(', ')}: ${seconds} s each (then on to ${min.toLocaleString('en-US')} executions), seed ${seed}, ${o.parallel} at a time`);
  const workers = Array.from({ length: Math.min(Number(o.parallel), queue.length) }, async () => {
    for (let name = queue.shift(); name; name = queue.shift()) {
      const r = await fuzzOne(name, seconds, min, seed, say);
      results.targets[name] = r;
      await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
      await writeFile(join(OUT, 'README.md'), readme(results));
      say(`${name}: ${r.executions.toLocaleString('en-US')} executions, ${r.execPerSecond}/s, ${r.crashes} crashes`);
    }
  });
  await Promise.all(workers);
  console.log(`\n${readme(results).split('\n').filter((l) => l.startsWith('|') || l.startsWith('Total')).join('\n')}`);
  const crashed = names.filter((n) => results.targets[n]!.crashes > 0);
  if (crashed.length) {
    console.error(`crashes in ${crashed.join(', ')}; see ${file}`);
    process.exitCode = 1;
  }
}

await main();
