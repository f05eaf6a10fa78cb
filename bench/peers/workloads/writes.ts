/** Workload 1: durable single-key writes. Each client writes one key and waits for the acknowledgement. */
import { benchKey, keyIndex, makeValue } from '../driver.js';
import { closedLoopWorkload } from './closed-loop.js';

export const writesWorkload = closedLoopWorkload({
  id: 1,
  title: 'Durable single-key writes',
  alternativeClients: true,
  unit: 'writes/s',
  description: ({ options }) =>
    `${options.clients} concurrent clients, each writing one ${options.valueBytes} B value to one of ${options.keys.toLocaleString('en-US')} keys and waiting for the durable acknowledgement before the next.`,
  operation: async (client, clientIndex, iteration, { options }) => {
    await client.put(benchKey('w', keyIndex(clientIndex, iteration, options.keys)), valueOf(options.valueBytes));
    return 1;
  },
});

const values = new Map<number, Buffer>();
/** One value per size, made once: the driver should spend its time on requests. */
export function valueOf(bytes: number): Buffer {
  let value = values.get(bytes);
  if (value === undefined) values.set(bytes, (value = makeValue(bytes)));
  return value;
}
