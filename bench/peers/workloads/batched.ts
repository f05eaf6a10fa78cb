/** Workload 2: batched writes, one atomic request of B keys (etcd txn, Redis MULTI/EXEC, Mercury POST /v1/txn). */
import { benchKey, keyIndex } from '../driver.js';
import { closedLoopWorkload } from './closed-loop.js';
import { valueOf } from './writes.js';

export const batchedWorkload = closedLoopWorkload({
  id: 2,
  title: 'Batched writes',
  unit: 'keys/s',
  description: ({ options }) =>
    `${options.clients} concurrent clients, each sending atomic batches of ${options.batchOps} puts of ${options.valueBytes} B values (etcd: txn, at most 128 ops; Redis: MULTI/EXEC; Mercury: POST /v1/txn) and waiting for the acknowledgement. Throughput in keys/s; latency per batch.`,
  operation: async (client, clientIndex, iteration, { options }) => {
    const value = valueOf(options.valueBytes);
    const first = keyIndex(clientIndex, iteration, options.keys) * options.batchOps;
    const entries: [string, Buffer][] = [];
    // Distinct keys within a batch (batchOps <= keys): etcd refuses a txn that writes one key twice.
    for (let op = 0; op < options.batchOps; op++) entries.push([benchKey('b', (first + op) % options.keys), value]);
    await client.putBatch(entries);
    return options.batchOps;
  },
});
