/** The workloads, by the numbers. */
import type { WorkloadId } from '../args.js';
import type { Workload } from '../workload.js';
import { batchedWorkload } from './batched.js';
import { readsWorkload } from './reads.js';
import { writesWorkload } from './writes.js';

export const WORKLOADS: Readonly<Partial<Record<WorkloadId, Workload>>> = Object.freeze({
  1: writesWorkload,
  2: batchedWorkload,
  3: readsWorkload,
});

/** Which systems a workload compares: etcd and Mercury only for watches (Redis has no watch of keys). */
export const WORKLOAD_TITLES: Readonly<Record<WorkloadId, string>> = Object.freeze({
  1: 'Durable single-key writes',
  2: 'Batched writes',
  3: 'Point reads',
  4: 'Read latency under 10,000 writes/s',
  5: 'Propagation down a replication tree',
  6: 'Watch fan-out',
});
