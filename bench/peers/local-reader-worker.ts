/**
 * Mercury's in-process reader on its own thread, for workload 4: the benchmark's main thread keeps offering writes
 * while this thread reads, as a consumer process reading the node's LMDB would. Posts back throughput and latency.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openLocalReader } from './local-reader.js';
import { LatencyRecorder } from './stats.js';

export interface LocalReadRequest {
  readonly dataDir: string;
  readonly keys: readonly string[];
  readonly seconds: number;
}

export interface LocalReadResult {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** Gets per latency sample: a single get is too short to time on its own. */
export const LOCAL_GETS_PER_SAMPLE = 16;

/** Reads `keys` round-robin for `seconds`, timing each group of LOCAL_GETS_PER_SAMPLE gets. */
export async function readLocally(request: LocalReadRequest): Promise<LocalReadResult> {
  const reader = await openLocalReader(request.dataDir);
  const keys = request.keys.map((key) => Buffer.from(key));
  try {
    const latencies = new LatencyRecorder();
    const started = performance.now();
    const deadline = started + request.seconds * 1000;
    let count = 0;
    while (performance.now() < deadline) {
      const sent = performance.now();
      for (let i = 0; i < LOCAL_GETS_PER_SAMPLE; i++) {
        if (reader.get(keys[((count + i) * 7919) % keys.length]!) === undefined) throw new Error('in-process read missed a loaded key');
      }
      latencies.record((performance.now() - sent) / LOCAL_GETS_PER_SAMPLE);
      count += LOCAL_GETS_PER_SAMPLE;
    }
    const [p50, p99] = latencies.quantiles([0.5, 0.99]);
    return { perSecond: count / ((performance.now() - started) / 1000), p50Ms: p50!, p99Ms: p99! };
  } finally {
    await reader.close();
  }
}

if (parentPort !== null && workerData !== null && typeof workerData === 'object') {
  const port = parentPort;
  readLocally(workerData as LocalReadRequest).then(
    (result) => port.postMessage({ result }),
    (error: unknown) => port.postMessage({ error: String(error) }),
  );
}
