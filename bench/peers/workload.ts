/**
 * What a workload is and what it yields. A workload starts the systems it needs (fresh data directories each time),
 * runs them in alternation, and returns per-run figures; the report turns those into medians and ratios.
 */
import type { PeersOptions, WorkloadId } from './args.js';
import type { ProcessGroup } from './processes.js';
import { alternatingSchedule, type MetricSpec } from './stats.js';
import type { RunningSystem, SystemAdapter } from './system.js';

/** One row of a workload's table: a system, or a Mercury variant such as its in-process reader. */
export interface SubjectResult {
  readonly id: string;
  readonly title: string;
  /** Mercury's rows are divided by every peer row to give the ratios. */
  readonly mercury: boolean;
  readonly runs: Readonly<Record<string, number>>[];
}

export interface WorkloadResult {
  readonly id: WorkloadId;
  readonly title: string;
  /** What was measured, in a sentence or two, for the page. */
  readonly description: string;
  readonly metrics: readonly MetricSpec[];
  readonly subjects: readonly SubjectResult[];
  readonly notes: readonly string[];
  /** Set when the workload could not run at all (the reason). */
  readonly skipped?: string;
}

export interface WorkloadContext {
  readonly options: PeersOptions;
  readonly adapters: readonly SystemAdapter[];
  readonly group: ProcessGroup;
  log(line: string): void;
}

export interface Workload {
  readonly id: WorkloadId;
  readonly title: string;
  run(context: WorkloadContext): Promise<WorkloadResult>;
}

/** A row being measured: how to run it once, and how to release it. */
export interface Subject {
  readonly id: string;
  readonly title: string;
  readonly mercury: boolean;
  runOnce(run: number): Promise<Record<string, number>>;
  close(): Promise<void>;
}

/** Starts every selected system, in the order given. Stops those already started if one fails. */
export async function startAll(context: WorkloadContext): Promise<RunningSystem[]> {
  const running: RunningSystem[] = [];
  try {
    for (const adapter of context.adapters) running.push(await adapter.start(context.group));
  } catch (error) {
    await Promise.all(running.map((system) => system.stop()));
    throw error;
  }
  return running;
}

/**
 * Runs every subject `runs` times in alternation (A, B, C, A, B, C, ...) after one unrecorded warm-up run each, then
 * closes them. Progress goes to the log.
 */
export async function measureAlternating(context: WorkloadContext, workloadId: WorkloadId, subjects: readonly Subject[], warmUp = true): Promise<SubjectResult[]> {
  const runs = new Map<Subject, Record<string, number>[]>(subjects.map((subject) => [subject, []]));
  try {
    if (warmUp) for (const subject of subjects) await subject.runOnce(-1);
    for (const { subject, run } of alternatingSchedule(subjects, context.options.runs)) {
      const figures = await subject.runOnce(run);
      runs.get(subject)!.push(figures);
      const shown = Object.entries(figures)
        .map(([key, value]) => `${key}=${value >= 100 ? Math.round(value) : value.toFixed(3)}`)
        .join(' ');
      context.log(`  workload ${workloadId} run ${run + 1}/${context.options.runs} ${subject.title}: ${shown}`);
    }
  } finally {
    for (const subject of subjects) await subject.close();
  }
  return subjects.map((subject) => ({ id: subject.id, title: subject.title, mercury: subject.mercury, runs: runs.get(subject)! }));
}
