/**
 * Workload 3: point reads of existing keys over each system's network API, plus Mercury's in-process reader on the
 * same data (one thread, no network: the read path a Quicksilver consumer uses).
 */
import { benchKey, keyIndex, preload } from '../driver.js';
import { LOCAL_GETS_PER_SAMPLE, readLocally } from '../local-reader-worker.js';
import type { Subject } from '../workload.js';
import { closedLoopWorkload } from './closed-loop.js';
import { valueOf } from './writes.js';

export const readsWorkload = closedLoopWorkload({
  id: 3,
  title: 'Point reads',
  alternativeClients: true,
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
    const keys = Array.from({ length: options.keys }, (_, i) => benchKey('r', i));
    const subject: Subject = {
      id: 'mercury-local',
      title: 'Mercury in-process',
      mercury: true,
      // On this thread: nothing else runs during workload 3's runs.
      runOnce: (run) => readLocally({ dataDir: mercury.dataDir, keys, seconds: run < 0 ? Math.min(1, options.seconds) : options.seconds }).then((result) => ({ ...result })),
      close: () => Promise.resolve(),
    };
    return Promise.resolve([subject]);
  },
  notes: () => [
    `Mercury in-process latencies are the mean of ${LOCAL_GETS_PER_SAMPLE} consecutive gets per sample (a single get is too short to time on its own), so its p99 understates single-get outliers.`,
  ],
});
