import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { outPathProblem } from '../../../bench/lib/report.js';

test('--out: a .json file, new or not, is taken; a folder or another name is refused before the run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-bench-out-'));
  try {
    assert.equal(outPathProblem(join(dir, 'results.json')), null);
    mkdirSync(join(dir, 'old.json'));
    assert.match(outPathProblem(join(dir, 'old.json')) ?? '', /is a folder: name a \.json file in it/);
    assert.match(outPathProblem(dir) ?? '', /--out must name a \.json file/);
    assert.match(outPathProblem(join(dir, 'results.md')) ?? '', /--out must name a \.json file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
