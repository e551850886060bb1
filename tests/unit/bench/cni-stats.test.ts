import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pairedDifferences, percentile, summarize } from '../../../bench/cni/stats.js';

test('percentile is nearest-rank: always a sample, p99 of 100 is the second largest', () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100 … 1, unsorted input
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile(xs, 1), 1);
  assert.equal(percentile([7], 99), 7);
  assert.equal(percentile([3, 1, 2], 50), 2);
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([NaN, 4, Infinity], 50), 4);
  assert.throws(() => percentile([1], 0), RangeError);
  assert.throws(() => percentile([1], 101), RangeError);
});

test('summarize and paired differences', () => {
  assert.deepEqual(summarize([4, 1, 3, 2]), { n: 4, min: 1, p50: 2, p90: 4, p99: 4, max: 4, mean: 2.5 });
  assert.deepEqual(summarize([]), { n: 0, min: null, p50: null, p90: null, p99: null, max: null, mean: null });
  assert.deepEqual(pairedDifferences([5, null, 9, 1], [2, 3, 4]), [3, 5]);
});
