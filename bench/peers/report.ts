/**
 * The results page, BENCHMARKS.md: machine, versions, date, the exact command, a table per workload with medians,
 * min and max, the ratio Mercury / peer, and plain sentences wherever Mercury loses.
 */
import type { ChartBar } from './chart.js';
import { formatNumber, formatRatio, outcome, ratio, summarizeMetric, type Outcome, type Summary } from './stats.js';
import type { SubjectResult, WorkloadResult } from './workload.js';

export interface RunInfo {
  readonly dateIso: string;
  readonly command: string;
  readonly machine: string;
  readonly node: string;
  /** "Mercury 0.1.0 (abc123)", "etcd 3.4.23 (client etcd3 1.1.2)", ... */
  readonly versions: readonly string[];
  /** One line per system: its durability settings and client. */
  readonly settings: readonly string[];
  readonly loadAverageStart: readonly number[];
  readonly loadAverageEnd: readonly number[];
  readonly runs: number;
  readonly seconds: number;
  /** Relative path from the page to the chart. */
  readonly chartPath: string;
}

export interface Comparison {
  readonly workload: WorkloadResult;
  readonly metricKey: string;
  readonly metricTitle: string;
  readonly mercury: SubjectResult;
  readonly peer: SubjectResult;
  readonly mercuryMedian: number;
  readonly peerMedian: number;
  readonly ratio: number;
  readonly outcome: Outcome;
  /** The two systems' runs overlap (min of one <= max of the other): the difference is within the machine's noise. */
  readonly rangesOverlap: boolean;
}

/** Whether two sets of runs overlap: then neither system was better in every run. */
export function rangesOverlap(a: Summary, b: Summary): boolean {
  return a.min <= b.max && b.min <= a.max;
}

/** Every Mercury row against every peer row, metric by metric, where both have figures. */
export function comparisons(workloads: readonly WorkloadResult[]): Comparison[] {
  const found: Comparison[] = [];
  for (const workload of workloads) {
    for (const metric of workload.metrics.filter((candidate) => candidate.compared !== false)) {
      for (const mercury of workload.subjects.filter((subject) => subject.mercury)) {
        for (const peer of workload.subjects.filter((subject) => !subject.mercury)) {
          const mine = summarizeMetric(mercury.runs, metric.key);
          const theirs = summarizeMetric(peer.runs, metric.key);
          if (mine === undefined || theirs === undefined) continue;
          const value = ratio(mine.median, theirs.median);
          if (!Number.isFinite(value)) continue;
          found.push({
            workload,
            metricKey: metric.key,
            metricTitle: metric.title,
            mercury,
            peer,
            mercuryMedian: mine.median,
            peerMedian: theirs.median,
            ratio: value,
            outcome: outcome(value, metric.better),
            rangesOverlap: rangesOverlap(mine, theirs),
          });
        }
      }
    }
  }
  return found;
}

export function chartBars(found: readonly Comparison[]): ChartBar[] {
  return found.map((comparison) => ({
    label: `${comparison.workload.id}. ${comparison.mercury.title} vs ${comparison.peer.title}: ${comparison.metricTitle}`,
    ratio: comparison.ratio,
    mercuryBetter: comparison.outcome === 'better',
  }));
}

function cell(summary: Summary | undefined): string {
  if (summary === undefined) return 'n/a';
  return `${formatNumber(summary.median)} (${formatNumber(summary.min)}–${formatNumber(summary.max)})`;
}

/** "Mercury loses to etcd on p99 ms of point reads: 3.1 vs 1.2 (ratio 2.6x)." */
export function lossSentence(comparison: Comparison): string {
  const sentence = `${comparison.mercury.title} loses to ${comparison.peer.title} on ${comparison.metricTitle} in "${comparison.workload.title}": ${formatNumber(comparison.mercuryMedian)} against ${formatNumber(comparison.peerMedian)} (Mercury / ${comparison.peer.title} = ${formatRatio(comparison.ratio)}).`;
  return comparison.rangesOverlap ? `${sentence} The runs' ranges overlap: within this machine's noise.` : sentence;
}

function workloadSection(workload: WorkloadResult, found: readonly Comparison[]): string[] {
  const lines = [`## ${workload.id}. ${workload.title}`, ''];
  if (workload.skipped !== undefined) return [...lines, `Not measured: ${workload.skipped}`, ''];
  lines.push(workload.description, '');
  lines.push(`| System | ${workload.metrics.map((metric) => `${metric.title} (${metric.better} is better)`).join(' | ')} |`);
  lines.push(`| --- | ${workload.metrics.map(() => '---:').join(' | ')} |`);
  for (const subject of workload.subjects) {
    lines.push(`| ${subject.title} | ${workload.metrics.map((metric) => cell(summarizeMetric(subject.runs, metric.key))).join(' | ')} |`);
  }
  lines.push('', 'Median of the runs, (min–max) in brackets.', '');
  const mine = found.filter((comparison) => comparison.workload === workload);
  const compared = workload.metrics.filter((metric) => metric.compared !== false);
  if (mine.length > 0) {
    const pairs = [...new Set(mine.map((comparison) => `${comparison.mercury.title}\u0000${comparison.peer.title}`))];
    lines.push(`| Ratio | ${compared.map((metric) => metric.title).join(' | ')} |`);
    lines.push(`| --- | ${compared.map(() => '---:').join(' | ')} |`);
    for (const pair of pairs) {
      const [mercuryTitle, peerTitle] = pair.split('\u0000') as [string, string];
      const row = compared.map((metric) => {
        const comparison = mine.find((candidate) => candidate.mercury.title === mercuryTitle && candidate.peer.title === peerTitle && candidate.metricKey === metric.key);
        if (comparison === undefined) return 'n/a';
        return `${formatRatio(comparison.ratio)} (${comparison.outcome}${comparison.outcome !== 'same' && comparison.rangesOverlap ? ', ranges overlap' : ''})`;
      });
      lines.push(`| ${mercuryTitle} / ${peerTitle} | ${row.join(' | ')} |`);
    }
    lines.push('');
    const losses = mine.filter((comparison) => comparison.outcome === 'worse');
    if (losses.length > 0) {
      lines.push('**Where Mercury loses here:**', '');
      for (const loss of losses) lines.push(`- ${lossSentence(loss)}`);
      lines.push('');
    }
  }
  for (const note of workload.notes) lines.push(`Note: ${note}`, '');
  return lines;
}

/**
 * A 1-minute load average at least this high before the harness starts anything means other jobs are running. Not
 * lower: `npm run bench:peers` builds first, and the build alone lifts the load average by about 0.3.
 */
export const SHARED_LOAD_AVERAGE_MIN = 1;

/** Whether the machine was shared, judged from the load average before the harness started any process. */
export function sharedMachineSentence(loadAverageStart: readonly number[]): string {
  const oneMinute = loadAverageStart[0] ?? 0;
  return oneMinute >= SHARED_LOAD_AVERAGE_MIN
    ? `**This machine was shared with other jobs** (other engineers' builds, tests and benchmarks): its 1-minute load average was ${oneMinute.toFixed(2)} before the harness started anything, and they may have run throughout. Read the figures as ranges, not points.`
    : `The machine looked idle when the harness started (1-minute load average ${oneMinute.toFixed(2)}).`;
}

export function renderReport(info: RunInfo, workloads: readonly WorkloadResult[]): string {
  const found = comparisons(workloads);
  const load = (values: readonly number[]): string => values.map((value) => value.toFixed(2)).join(', ');
  const lines: string[] = [
    '# Benchmarks: Mercury, etcd and Redis',
    '',
    '<!-- Generated by `npm run bench:peers` (bench/peers/). Do not edit by hand: run it again. -->',
    '',
    `- **Date:** ${info.dateIso}`,
    `- **Command:** \`${info.command}\``,
    `- **Machine:** ${info.machine}; ${info.node}`,
    `- **Load:** ${sharedMachineSentence(info.loadAverageStart)} Load average (1, 5, 15 min) at the start: ${load(info.loadAverageStart)}; at the end: ${load(info.loadAverageEnd)}.`,
    `- **Versions:** ${info.versions.join('; ')}`,
    '',
    'Every system runs on this machine on loopback, in a temp directory, started and stopped by the harness; the load',
    'driver is one Node process for all systems, with the same keys, value sizes, concurrency and duration. The',
    'systems and the driver share the same cores, so a system that needs less CPU per request leaves more to the driver.',
    `Each figure is the median of ${info.runs} runs of ${info.seconds} s (min–max in brackets) after one unrecorded warm-up run;`,
    'runs alternate between systems (A, B, C, A, B, C, ...) so that drift of the machine hits all of them alike.',
    'Ratios are Mercury\'s median divided by the peer\'s. "Server CPU µs/request" is the server process\'s user + system',
    'CPU time during a run (from /proc, in 10 ms ticks) over the requests completed; "driver CPU µs/request" is the',
    'benchmark process\'s, which shows what each client library costs where it competes with the server for 2 cores.',
    '',
    ...info.settings.map((line) => `- ${line}`),
    '',
    '## Summary',
    '',
    `![Mercury / peer ratios](${info.chartPath})`,
    '',
  ];
  const losses = found.filter((comparison) => comparison.outcome === 'worse');
  const wins = found.filter((comparison) => comparison.outcome === 'better');
  if (losses.length > 0) {
    const clear = losses.filter((loss) => !loss.rangesOverlap).length;
    const which = clear === losses.length ? 'each in every run' : `${clear} of them in every run; in the others the runs' ranges overlap`;
    lines.push(`**Mercury loses on ${losses.length} of ${found.length} comparisons** (${which}):`, '');
    for (const loss of losses) lines.push(`- ${lossSentence(loss)}`);
    lines.push('');
  }
  if (wins.length > 0) {
    lines.push(`Mercury does better on ${wins.length} of ${found.length}: ${wins.map((win) => `${win.workload.id}. ${win.metricTitle} vs ${win.peer.title}${win.mercury.id === 'mercury' ? '' : ` (${win.mercury.title})`} ${formatRatio(win.ratio)}`).join('; ')}.`, '');
  }
  for (const workload of workloads) lines.push(...workloadSection(workload, found));
  return `${lines.join('\n').trimEnd()}\n`;
}
