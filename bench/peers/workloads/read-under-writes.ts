/**
 * Workload 4: read latency while the same system absorbs a steady write load. Writers offer `--write-rate` writes/s
 * (paced, at most one in flight per writer client) to the keys that `--readers` closed-loop clients read. Mercury is
 * measured twice: over HTTP, and with its in-process reader on a worker thread of the benchmark process (the way a
 * Quicksilver consumer reads while the node applies writes).
 */
import { Worker } from 'node:worker_threads';
import { benchKey, closedLoop, keyIndex, pacedLoop, preload } from '../driver.js';
import type { LocalReadRequest, LocalReadResult } from '../local-reader-worker.js';
import { formatNumber, summarizeMetric, type MetricSpec } from '../stats.js';
import type { KvClient } from '../system.js';
import { measureAlternating, startAll, type Subject, type SubjectResult, type Workload, type WorkloadContext, type WorkloadResult } from '../workload.js';
import { valueOf } from './writes.js';

const METRICS: readonly MetricSpec[] = [
  { key: 'readP50Ms', title: 'read p50 ms', better: 'lower' },
  { key: 'readP99Ms', title: 'read p99 ms', better: 'lower' },
  { key: 'readsPerSecond', title: 'reads/s', better: 'higher' },
  { key: 'writesPerSecond', title: 'writes/s absorbed', better: 'higher', compared: false },
];

function readOnWorker(request: LocalReadRequest): Promise<LocalReadResult> {
  const worker = new Worker(new URL('../local-reader-worker.js', import.meta.url), { workerData: request });
  return new Promise((resolve, reject) => {
    worker.once('message', (message: { result?: LocalReadResult; error?: string }) => {
      if (message.result !== undefined) resolve(message.result);
      else reject(new Error(`in-process reader: ${message.error}`));
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

/** Absorbing less than this share of the offered writes is called out on the page. */
const ABSORBED_FRACTION_MIN = 0.95;

/** A sentence for each row that did not absorb the offered write rate: its read figures are under a lighter load. */
export function shortfalls(results: readonly SubjectResult[], offered: number): string[] {
  return results.flatMap((subject) => {
    const absorbed = summarizeMetric(subject.runs, 'writesPerSecond');
    if (absorbed === undefined || absorbed.median >= offered * ABSORBED_FRACTION_MIN) return [];
    return [`${subject.title} absorbed ${formatNumber(absorbed.median)} writes/s of the ${formatNumber(offered)} offered (median): its reads ran under that write load, not the full ${formatNumber(offered)}/s.`];
  });
}

export const readUnderWritesWorkload: Workload = {
  id: 4,
  title: 'Read latency under writes',
  async run(context: WorkloadContext): Promise<WorkloadResult> {
    const { options } = context;
    const running = await startAll(context);
    try {
      const value = valueOf(options.valueBytes);
      const write = (client: KvClient, k: number): Promise<void> => client.put(benchKey('r', (k * 7919) % options.keys), value);
      const subjects: Subject[] = [];
      for (const system of running) {
        const adapter = context.adapters.find((candidate) => candidate.name === system.name)!;
        const writers = await Promise.all(Array.from({ length: options.clients }, () => system.connect()));
        const readers = await Promise.all(Array.from({ length: options.readers }, () => system.connect()));
        await preload(writers[0]!, 'r', options.keys, value, options.batchOps);
        const secondsOf = (run: number): number => (run < 0 ? Math.min(1, options.seconds) : options.seconds);
        subjects.push({
          id: system.name,
          title: adapter.title,
          mercury: system.name === 'mercury',
          async runOnce(run) {
            const seconds = secondsOf(run);
            const [writes, reads] = await Promise.all([
              pacedLoop(writers, options.writeRate, seconds, write),
              closedLoop(readers, seconds, async (client, clientIndex, iteration) => {
                if ((await client.get(benchKey('r', keyIndex(clientIndex, iteration, options.keys)))) === undefined) throw new Error('read missed a loaded key');
                return 1;
              }),
            ]);
            const [p50, p99] = reads.latencies.quantiles([0.5, 0.99]);
            return { readP50Ms: p50!, readP99Ms: p99!, readsPerSecond: reads.units / reads.seconds, writesPerSecond: writes.units / writes.seconds };
          },
          close: async () => {
            await Promise.all([...writers, ...readers].map((client) => client.close()));
          },
        });
        if (system.name === 'mercury') {
          const keys = Array.from({ length: options.keys }, (_, i) => benchKey('r', i));
          subjects.push({
            id: 'mercury-local',
            title: 'Mercury in-process',
            mercury: true,
            async runOnce(run) {
              const seconds = secondsOf(run);
              const [writes, reads] = await Promise.all([pacedLoop(writers, options.writeRate, seconds, write), readOnWorker({ dataDir: system.dataDir, keys, seconds })]);
              return { readP50Ms: reads.p50Ms, readP99Ms: reads.p99Ms, readsPerSecond: reads.perSecond, writesPerSecond: writes.units / writes.seconds };
            },
            close: () => Promise.resolve(),
          });
        }
      }
      const results = await measureAlternating(context, 4, subjects);
      return {
        id: 4,
        title: 'Read latency under writes',
        description: `${options.keys.toLocaleString('en-US')} keys of ${options.valueBytes} B loaded first. ${options.clients} writer clients offer ${options.writeRate.toLocaleString('en-US')} writes/s to those keys (paced; a system that cannot keep up absorbs fewer: see "writes/s absorbed") while ${options.readers} clients read them in closed loops. "Mercury in-process" reads the node's LMDB on a worker thread of the benchmark process while the same writes go to the node.`,
        metrics: METRICS,
        subjects: results,
        notes: [...shortfalls(results, options.writeRate), 'In-process read latencies are the mean of 16 consecutive gets per sample, so their p99 understates single-get outliers.'],
      };
    } finally {
      await Promise.all(running.map((system) => system.stop()));
    }
  },
};
