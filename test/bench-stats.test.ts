import assert from 'node:assert/strict';
import { test } from 'node:test';
import { median, quantile, summarize } from '../bench/support/stats.js';

test('bench stats: median of odd and even samples', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), RangeError);
});

test('bench stats: quantile by nearest rank', () => {
  const values = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(quantile(values, 0.5), 50);
  assert.equal(quantile(values, 0.99), 99);
  assert.equal(quantile(values, 1), 100);
  assert.equal(quantile([7], 0.99), 7);
  assert.throws(() => quantile(values, 1.5), RangeError);
});

test('bench stats: summary reports min, max and spread relative to the median', () => {
  const summary = summarize([90, 100, 110, 100, 100]);
  assert.deepEqual(summary, { runs: 5, median: 100, min: 90, max: 110, spread: 0.2 });
});
