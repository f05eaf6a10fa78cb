import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyRecorder, alternatingSchedule, formatRatio, mercuryWins, outcome, ratio, summarizeMetric } from '../bench/peers/stats.js';

test('peers stats: the latency recorder grows past its first block and gives nearest-rank quantiles', () => {
  const recorder = new LatencyRecorder();
  assert.ok(Number.isNaN(recorder.quantile(0.5)));
  for (let i = 10_000; i >= 1; i--) recorder.record(i);
  assert.equal(recorder.count, 10_000);
  assert.deepEqual(recorder.quantiles([0.5, 0.99, 1]), [5000, 9900, 10_000]);
  assert.equal(recorder.quantile(0.99), 9900);
  assert.throws(() => recorder.quantiles([2]), RangeError);
});

test('peers stats: the ratio is Mercury over the peer, and which side wins depends on the metric', () => {
  assert.equal(ratio(30, 10), 3);
  assert.ok(Number.isNaN(ratio(1, 0)));
  assert.ok(Number.isNaN(ratio(Number.NaN, 1)));
  assert.equal(mercuryWins(3, 'higher'), true);
  assert.equal(mercuryWins(3, 'lower'), false);
  assert.equal(mercuryWins(0.5, 'lower'), true);
  assert.equal(mercuryWins(1, 'higher'), false);
  assert.equal(mercuryWins(1, 'lower'), false);
  assert.equal(outcome(1, 'lower'), 'same');
  assert.equal(outcome(0.9, 'lower'), 'better');
  assert.equal(outcome(0.9, 'higher'), 'worse');
});

test('peers stats: ratios read as a person writes them', () => {
  assert.equal(formatRatio(12.4), '12x');
  assert.equal(formatRatio(2.345), '2.35x');
  assert.equal(formatRatio(0.3125), '0.31x');
  assert.equal(formatRatio(Number.NaN), 'n/a');
});

test('peers stats: a metric is summarized over the runs that produced it', () => {
  const runs: Record<string, number>[] = [{ a: 3, b: 1 }, { a: 1, b: Number.NaN }, { a: 2 }];
  assert.deepEqual(summarizeMetric(runs, 'a'), { runs: 3, median: 2, min: 1, max: 3, spread: 1 });
  assert.deepEqual(summarizeMetric(runs, 'b'), { runs: 1, median: 1, min: 1, max: 1, spread: 0 });
  assert.equal(summarizeMetric(runs, 'c'), undefined);
});

test('peers stats: runs alternate between systems', () => {
  const schedule = alternatingSchedule(['A', 'B', 'C'], 2).map(({ subject, run }) => `${subject}${run}`);
  assert.deepEqual(schedule, ['A0', 'B0', 'C0', 'A1', 'B1', 'C1']);
});
