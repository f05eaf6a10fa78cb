/**
 * Workload 3: point reads of existing keys over each system's network API, plus Mercury's in-process reader on the
 * same data (one thread, no network: the read path a Quicksilver consumer uses).
 */
import { benchKey, keyIndex, preload } from '../driver.js';
import { openLocalReader } from '../local-reader.js';
import { LatencyRecorder } from '../stats.js';
import type { Subject } from '../workload.js';
import { closedLoopWorkload } from './closed-loop.js';
import { valueOf } from './writes.js';

/** Gets per latency sample in the in-process loop: timing each ~µs get alone would mostly time the clock. */
const LOCAL_GETS_PER_SAMPLE = 16;

export const readsWorkload = closedLoopWorkload({
  id: 3,
  title: 'Point reads',
  unit: 'reads/s',
  description: ({ options }) =>
    `${options.keys.toLocaleString('en-US')} keys of ${options.valueBytes} B loaded first; ${options.clients} concurrent clients each read one key and wait for the answer before the next. etcd reads are serializable (local, as Mercury's and Redis's are). "Mercury in-process" reads the node's LMDB directly in the benchmark process, one thread.`,
  prepare: (client, { options }) => preload(client, 'r', options.keys, valueOf(options.valueBytes), options.batchOps),
  operation: async (client, clientIndex, iteration, { options }) => {
    const value = await client.get(benchKey('r', keyIndex(clientIndex, iteration, options.keys)));
    if (value === undefined) throw new Error('read missed a loaded key');
    return 1;
  },
  extraSubjects: (running, { options }) => {
    const mercury = running.find((system) => system.name === 'mercury');
    if (mercury === undefined) return Promise.resolve([]);
    const reader = openLocalReader(mercury.dataDir);
    const keys = Array.from({ length: options.keys }, (_, i) => Buffer.from(benchKey('r', i)));
    const subject: Subject = {
      id: 'mercury-local',
      title: 'Mercury in-process',
      mercury: true,
      runOnce(run) {
        const seconds = run < 0 ? Math.min(1, options.seconds) : options.seconds;
        const latencies = new LatencyRecorder();
        const started = performance.now();
        const deadline = started + seconds * 1000;
        let count = 0;
        while (performance.now() < deadline) {
          const sent = performance.now();
          for (let i = 0; i < LOCAL_GETS_PER_SAMPLE; i++) {
            if (reader.get(keys[(count + i * 7919) % keys.length]!) === undefined) throw new Error('in-process read missed a loaded key');
          }
          latencies.record((performance.now() - sent) / LOCAL_GETS_PER_SAMPLE);
          count += LOCAL_GETS_PER_SAMPLE;
        }
        const [p50, p99] = latencies.quantiles([0.5, 0.99]);
        return Promise.resolve({ perSecond: count / ((performance.now() - started) / 1000), p50Ms: p50!, p99Ms: p99! });
      },
      close: () => reader.close(),
    };
    return Promise.resolve([subject]);
  },
  notes: () => [
    `Mercury in-process latencies are the mean of ${LOCAL_GETS_PER_SAMPLE} consecutive gets per sample (a single get is too short to time on its own), so its p99 understates single-get outliers.`,
  ],
});
