/**
 * Statistics for benchmarks: every figure is reported as the median of repeated runs with its min, max and spread,
 * never as a single run.
 */

export interface Summary {
  readonly runs: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** (max - min) / |median|: how much the runs disagree, as a fraction of the median. */
  readonly spread: number;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** The q-quantile (0..1) by nearest rank of a sample. */
export function quantile(values: readonly number[], q: number): number {
  return quantileOfSorted([...values].sort((a, b) => a - b), q);
}

/** The q-quantile by nearest rank of values sorted ascending (a sorted Float64Array of millions of samples, say). */
export function quantileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) throw new RangeError('quantile of no values');
  if (q < 0 || q > 1) throw new RangeError('q must be within 0..1');
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[rank - 1]!;
}

export function summarize(values: readonly number[]): Summary {
  const mid = median(values);
  const min = Math.min(...values);
  const max = Math.max(...values);
  return { runs: values.length, median: mid, min, max, spread: mid === 0 ? 0 : (max - min) / Math.abs(mid) };
}

export function formatNumber(value: number): string {
  if (value >= 100) return Math.round(value).toLocaleString('en-US');
  if (value >= 1) return value.toFixed(2);
  return value.toPrecision(3);
}

export function formatSummary(summary: Summary, unit: string): string {
  return `${formatNumber(summary.median)} ${unit} (median of ${summary.runs}; min ${formatNumber(summary.min)}, max ${formatNumber(summary.max)}, spread ${(summary.spread * 100).toFixed(1)}%)`;
}
