import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chartDomain, escapeXml, renderRatioChart, tickText } from '../bench/peers/chart.js';
import { chartBars, comparisons, lossSentence, rangesOverlap, renderReport, sharedMachineSentence, type RunInfo } from '../bench/peers/report.js';
import type { WorkloadResult } from '../bench/peers/workload.js';

const writes: WorkloadResult = {
  id: 1,
  title: 'Durable single-key writes',
  description: '64 clients.',
  metrics: [
    { key: 'perSecond', title: 'writes/s', better: 'higher' },
    { key: 'p99Ms', title: 'p99 ms', better: 'lower' },
    { key: 'errors', title: 'errors', better: 'lower', compared: false },
  ],
  subjects: [
    { id: 'mercury', title: 'Mercury', mercury: true, runs: [{ perSecond: 100, p99Ms: 4 }, { perSecond: 120, p99Ms: 6 }, { perSecond: 110, p99Ms: 5 }] },
    { id: 'etcd', title: 'etcd', mercury: false, runs: [{ perSecond: 50, p99Ms: 10 }, { perSecond: 55, p99Ms: 12 }, { perSecond: 45, p99Ms: 8 }] },
    { id: 'redis', title: 'Redis', mercury: false, runs: [{ perSecond: 220, p99Ms: 2.5 }, { perSecond: 200, p99Ms: 2 }, { perSecond: 240, p99Ms: 3 }] },
  ],
  notes: ['a note'],
};
const skipped: WorkloadResult = { id: 5, title: 'Propagation', description: '', metrics: [], subjects: [], notes: [], skipped: 'mercury serve rejected --upstream.' };

const info: RunInfo = {
  dateIso: '2026-11-26T23:00:00.000Z',
  command: 'npm run bench:peers -- --workloads 1,5',
  machine: '2 x Test CPU',
  node: 'Node v20.0.0',
  versions: ['Mercury 0.1.0 (abc)', 'etcd 3.4.23', 'Redis 7.0.15'],
  settings: ['**etcd:** defaults.'],
  loadAverageStart: [1.5, 1, 0.5],
  loadAverageEnd: [2, 1.25, 0.75],
  runs: 3,
  seconds: 3,
  chartPath: 'docs/benchmarks-ratios.svg',
};

test('peers report: every Mercury row is compared with every peer on every metric', () => {
  const found = comparisons([writes, skipped]);
  assert.deepEqual(
    found.map((comparison) => `${comparison.peer.id} ${comparison.metricKey} ${comparison.ratio} ${comparison.outcome}`),
    ['etcd perSecond 2.2 better', 'redis perSecond 0.5 worse', 'etcd p99Ms 0.5 better', 'redis p99Ms 2 worse'],
  );
  assert.equal(
    lossSentence(found[1]!),
    'Mercury loses to Redis on writes/s in "Durable single-key writes": 110 against 220 (Mercury / Redis = 0.50x).',
  );
  // Mercury's p99 runs (4-6) and etcd's (8-12) do not overlap; Redis's writes/s runs (200-240) and Mercury's do not
  // either; a pair that does is said to be within the noise.
  assert.deepEqual(
    found.map((comparison) => comparison.rangesOverlap),
    [false, false, false, false],
  );
  assert.match(lossSentence({ ...found[1]!, rangesOverlap: true }), /ranges overlap: within this machine's noise\.$/);
  assert.equal(
    rangesOverlap({ runs: 2, median: 2, min: 1, max: 3, spread: 1 }, { runs: 2, median: 4, min: 3, max: 5, spread: 0.5 }),
    true,
  );
  assert.deepEqual(
    chartBars(found).map((bar) => bar.label),
    ['1. Mercury vs etcd: writes/s', '1. Mercury vs Redis: writes/s', '1. Mercury vs etcd: p99 ms', '1. Mercury vs Redis: p99 ms'],
  );
});

test('peers report: the page names the machine, load, command and versions, and says plainly where Mercury loses', () => {
  const page = renderReport(info, [writes, skipped]);
  for (const expected of [
    '2026-11-26T23:00:00.000Z',
    '`npm run bench:peers -- --workloads 1,5`',
    '2 x Test CPU',
    'Load average (1, 5, 15 min) at the start: 1.50, 1.00, 0.50; at the end: 2.00, 1.25, 0.75',
    '**This machine was shared with other jobs**',
    'etcd 3.4.23',
    '![Mercury / peer ratios](docs/benchmarks-ratios.svg)',
    '**Mercury loses on 2 of 4 comparisons** (each in every run):',
    '| Mercury | 110 (100–120) | 5.00 (4.00–6.00) | n/a |',
    '| Mercury / Redis | 0.50x (worse) | 2.00x (worse) |',
    '| Mercury / etcd | 2.20x (better) | 0.50x (better) |',
    'Note: a note',
    '## 5. Propagation',
    'Not measured: mercury serve rejected --upstream.',
  ]) {
    assert.ok(page.includes(expected), `page lacks: ${expected}\n${page}`);
  }
});

test('peers chart: one bar per ratio on a log scale around 1, coloured by who did better, text escaped', () => {
  assert.equal(chartDomain([]), Math.ceil(Math.log10(2) * 4) / 4);
  assert.equal(chartDomain([0.001, 5]), 3);
  assert.equal(chartDomain([1e9]), 4);
  assert.deepEqual([1e-4, 0.01, 0.5, 1, 2, 1000].map(tickText), ['0.0001x', '0.01x', '0.5x', '1x', '2x', '1000x']);
  assert.equal(escapeXml('a<b & "c">'), 'a&lt;b &amp; &quot;c&quot;&gt;');
  const svg = renderRatioChart('Mercury <vs> peers', [
    { label: 'win', ratio: 2, mercuryBetter: true },
    { label: 'loss', ratio: 0.25, mercuryBetter: false },
    { label: 'dropped', ratio: Number.NaN, mercuryBetter: false },
  ]);
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.ok(svg.includes('Mercury &lt;vs&gt; peers'));
  assert.equal((svg.match(/<rect /g) ?? []).length, 3); // background + two bars
  assert.ok(svg.includes('fill="#2e7d32">2.00x</text>'));
  assert.ok(svg.includes('fill="#c62828">0.25x</text>'));
  assert.ok(!svg.includes('dropped'));
});

test('peers report: the machine is called shared when it was loaded before the harness started anything', () => {
  assert.match(sharedMachineSentence([0.1, 0.2, 0.3]), /looked idle .* 0\.10/);
  assert.match(sharedMachineSentence([3.5, 2, 1]), /shared with other jobs.* 3\.50 before the harness started/);
});
