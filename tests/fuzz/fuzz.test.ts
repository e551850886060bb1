/**
 * Every fuzz target for a short budget (FUZZ_SECONDS, default 3 s), in a worker with a hang
 * watchdog. A crash fails the test and prints the input (base64) to reproduce it with.
 * Long runs: `node dist/tests/fuzz/run.js --seconds 600 --target all` (bench/fuzz/README.md).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Random, fuzz, mutateBytes, type FuzzTarget } from './fuzz.js';
import { runTarget } from './runner.js';
import { TARGETS } from './targets.js';

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 3);
// a new seed each run finds new inputs; the seed is in the test output to replay a failure
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Date.now() / 1000) % 1_000_000);

describe('the fuzzer itself', () => {
  test('is reproducible from its seed, and finds a planted bug', () => {
    const planted: FuzzTarget = {
      name: 'planted',
      describe: 'throws TypeError on inputs starting "BUG"',
      seeds: [Buffer.from('AUG')],
      run(b) {
        if (b.subarray(0, 3).toString() === 'BUG') throw new TypeError('planted');
        if (b.length > 100) throw new RangeError('too long');
        return b.length > 3 ? 'long' : 'short';
      },
      expected: (e) => e instanceof RangeError,
      dictionary: ['B'],
    };
    const a = fuzz(planted, { seconds: 5, seed: 42, maxExecutions: 20_000 });
    const b = fuzz(planted, { seconds: 5, seed: 42, maxExecutions: 20_000 });
    assert.equal(a.executions, 20_000);
    const same = (x: typeof a) => ({ executions: x.executions, crashes: x.crashes, refused: x.refused, corpus: x.corpus, outcomes: x.outcomes, inputs: x.crashList.map((c) => c.input) });
    assert.deepEqual(same(a), same(b));
    assert.ok(a.crashes > 0, 'the planted TypeError is found');
    assert.equal(a.crashList[0]!.kind, 'exception');
    assert.ok(a.refused > 0, 'documented refusals are not crashes');
  });

  test('mutations stay within the length limit', () => {
    const rnd = new Random(1);
    let b: Buffer = Buffer.from('seed');
    for (let i = 0; i < 10_000; i++) {
      b = mutateBytes(b, rnd, [Buffer.from('other')], [Buffer.from('tok')], 64);
      assert.ok(b.length <= 64);
    }
  });
});

describe(`fuzz targets (${SECONDS} s each, seed ${SEED})`, () => {
  for (const t of TARGETS) {
    test(`${t.name}: no crash`, { timeout: (SECONDS + 60) * 1000 }, async () => {
      const s = await runTarget(t.name, SECONDS, SEED);
      const detail = s.crashList.map((c) => `${c.kind}: ${c.error}\n  input (base64): ${c.input}`).join('\n');
      assert.equal(s.crashes, 0, `${t.name} crashed (seed ${SEED}):\n${detail}`);
      assert.ok(s.executions > 500, `only ${s.executions} executions`);
      console.log(`# ${t.name}: ${s.executions} executions, ${s.execPerSecond}/s, corpus ${s.corpus}, 0 crashes`);
    });
  }
});
