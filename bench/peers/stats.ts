/**
 * Statistics of the peer benchmark. Each run yields one value per metric; each figure on the results page is the
 * median of the runs with their min and max, and Mercury's median divided by the peer's.
 */
import { quantile, summarize, type Summary } from '../support/stats.js';

export { median, quantile, summarize, formatNumber, type Summary } from '../support/stats.js';

/**
 * Latencies of one run, in milliseconds. A typed array that doubles when full: a run of 3 s at 100k ops/s records
 * 300k samples, and a number[] of that size costs more than the samples.
 */
export class LatencyRecorder {
  private samples = new Float64Array(4096);
  private length = 0;

  record(milliseconds: number): void {
    if (this.length === this.samples.length) {
      const grown = new Float64Array(this.samples.length * 2);
      grown.set(this.samples);
      this.samples = grown;
    }
    this.samples[this.length++] = milliseconds;
  }

  get count(): number {
    return this.length;
  }

  /** The q-quantile by nearest rank; NaN when nothing was recorded. */
  quantile(q: number): number {
    if (this.length === 0) return Number.NaN;
    return quantile(Array.from(this.samples.subarray(0, this.length)), q);
  }

  /** Several quantiles with one sort. */
  quantiles(qs: readonly number[]): number[] {
    if (this.length === 0) return qs.map(() => Number.NaN);
    const sorted = this.samples.slice(0, this.length).sort();
    return qs.map((q) => {
      if (q < 0 || q > 1) throw new RangeError('q must be within 0..1');
      return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
    });
  }
}

/** Which direction is better for a metric: throughput up, latency and memory down. */
export type Better = 'higher' | 'lower';

export interface MetricSpec {
  /** Key in each run's values, e.g. "opsPerSecond". */
  readonly key: string;
  /** Column title, e.g. "ops/s". */
  readonly title: string;
  readonly better: Better;
  /** False for figures that only show whether a run was sound (e.g. the fraction delivered): no ratio, no chart bar. */
  readonly compared?: boolean;
}

/** Mercury's median over the peer's: > 1 means Mercury's figure is larger (better for throughput, worse for latency). */
export function ratio(mercury: number, peer: number): number {
  if (!Number.isFinite(mercury) || !Number.isFinite(peer) || peer === 0) return Number.NaN;
  return mercury / peer;
}

/** Whether a ratio (Mercury / peer) means Mercury did better on a metric. Equal counts as not winning. */
export function mercuryWins(ratioValue: number, better: Better): boolean {
  return better === 'higher' ? ratioValue > 1 : ratioValue < 1;
}

export type Outcome = 'better' | 'worse' | 'same';

/** How Mercury did against a peer on a metric, from their ratio. */
export function outcome(ratioValue: number, better: Better): Outcome {
  if (ratioValue === 1) return 'same';
  return mercuryWins(ratioValue, better) ? 'better' : 'worse';
}

/** A ratio as a person reads it: "2.4x" or "0.31x". */
export function formatRatio(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value >= 10 ? `${Math.round(value)}x` : value >= 1 ? `${value.toFixed(2)}x` : `${value.toPrecision(2)}x`;
}

/** Summarizes one metric over runs, leaving out runs that did not produce it (NaN). */
export function summarizeMetric(runs: readonly Readonly<Record<string, number>>[], key: string): Summary | undefined {
  const values = runs.map((run) => run[key]).filter((value): value is number => value !== undefined && Number.isFinite(value));
  return values.length === 0 ? undefined : summarize(values);
}

/**
 * The order of runs: run 1 of every system, then run 2 of every system, ... so that drift of a shared machine
 * (another job starting, the page cache filling) hits all systems alike instead of one system's block of runs.
 */
export function alternatingSchedule<T>(subjects: readonly T[], runs: number): { subject: T; run: number }[] {
  const schedule: { subject: T; run: number }[] = [];
  for (let run = 0; run < runs; run++) for (const subject of subjects) schedule.push({ subject, run });
  return schedule;
}
