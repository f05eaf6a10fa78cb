/** The workloads, by the numbers. */
import type { WorkloadId } from '../args.js';
import type { Workload } from '../workload.js';
import { batchedWorkload } from './batched.js';
import { bootstrapWorkload } from './bootstrap.js';
import { propagationWorkload } from './propagation.js';
import { readUnderWritesWorkload } from './read-under-writes.js';
import { readsWorkload } from './reads.js';
import { watchFanoutWorkload } from './watch-fanout.js';
import { writesWorkload } from './writes.js';

export const WORKLOADS: Readonly<Partial<Record<WorkloadId, Workload>>> = Object.freeze({
  1: writesWorkload,
  2: batchedWorkload,
  3: readsWorkload,
  4: readUnderWritesWorkload,
  5: propagationWorkload,
  6: watchFanoutWorkload,
  7: bootstrapWorkload,
});

/** Titles, also for workloads that did not run. */
export const WORKLOAD_TITLES: Readonly<Record<WorkloadId, string>> = Object.freeze({
  1: 'Durable single-key writes',
  2: 'Batched writes',
  3: 'Point reads',
  4: 'Read latency under writes',
  5: 'Propagation down a replication tree',
  6: 'Watch fan-out',
  7: 'Bootstrap and catch-up of a replica',
});
