/**
 * The one load driver for every system: closed loops (each client waits for its acknowledgement before sending the
 * next request) and a paced writer (requests issued on a schedule of N/s, at most one in flight per client).
 * Every request is timed; a run yields its throughput and latency quantiles.
 */
import { LatencyRecorder } from './stats.js';
import type { KvClient } from './system.js';

export interface LoadResult {
  /** Units completed: operations, or keys for batches. */
  readonly units: number;
  readonly requests: number;
  readonly seconds: number;
  readonly latencies: LatencyRecorder;
  /** CPU time of the benchmark process (all its threads) during the run. */
  readonly driverCpuMicros: number;
}

/**
 * Units per second, p50 and p99 request latency in ms, and the driver's CPU per request: the figures of workloads 1
 * to 3. The driver's CPU shows what each client library costs on a machine where it competes with the server.
 */
export function throughputMetrics(result: LoadResult): Record<string, number> {
  const [p50, p99] = result.latencies.quantiles([0.5, 0.99]);
  return { perSecond: result.units / result.seconds, p50Ms: p50!, p99Ms: p99!, driverCpuUsPerRequest: result.driverCpuMicros / result.requests };
}

function cpuMicrosSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return used.user + used.system;
}

/**
 * Runs one loop per client for `seconds`. `operation` returns the units it completed (1, or the batch size).
 * Errors are not retried: a benchmark that hides failures measures nothing.
 */
export async function closedLoop(
  clients: readonly KvClient[],
  seconds: number,
  operation: (client: KvClient, clientIndex: number, iteration: number) => Promise<number>,
): Promise<LoadResult> {
  const latencies = new LatencyRecorder();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let units = 0;
  let requests = 0;
  await Promise.all(
    clients.map(async (client, clientIndex) => {
      for (let iteration = 0; performance.now() < deadline; iteration++) {
        const sent = performance.now();
        const done = await operation(client, clientIndex, iteration);
        latencies.record(performance.now() - sent);
        units += done;
        requests++;
      }
    }),
  );
  return { units, requests, seconds: (performance.now() - started) / 1000, latencies, driverCpuMicros: cpuMicrosSince(cpu) };
}

const sleep = (milliseconds: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, milliseconds));

/**
 * Offers `rate` operations per second for `seconds`: operation k is due at start + k / rate and sent then, or as soon
 * as a client is free if the system has fallen behind. The achieved rate is `units / seconds` of the result.
 */
export async function pacedLoop(
  clients: readonly KvClient[],
  rate: number,
  seconds: number,
  operation: (client: KvClient, k: number) => Promise<void>,
): Promise<LoadResult> {
  const latencies = new LatencyRecorder();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const total = Math.floor(rate * seconds);
  const deadline = started + seconds * 1000;
  let next = 0;
  let units = 0;
  await Promise.all(
    clients.map(async (client) => {
      for (;;) {
        const k = next++;
        if (k >= total) return;
        const due = started + (k * 1000) / rate;
        const wait = due - performance.now();
        if (wait >= 1) await sleep(wait);
        if (performance.now() >= deadline) return;
        const sent = performance.now();
        await operation(client, k);
        latencies.record(performance.now() - sent);
        units++;
      }
    }),
  );
  return { units, requests: units, seconds: (performance.now() - started) / 1000, latencies, driverCpuMicros: cpuMicrosSince(cpu) };
}

/**
 * Runs `step(i)` for i = 0..count-1, one at a time, step i starting no earlier than i * seconds / count after the
 * start: writes spread evenly over a run, each timed alone (watch delivery, propagation).
 */
export async function spacedSequence(count: number, seconds: number, step: (i: number) => Promise<void>): Promise<void> {
  const intervalMs = (seconds * 1000) / count;
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const wait = started + i * intervalMs - performance.now();
    if (wait >= 1) await sleep(wait);
    await step(i);
  }
}

/** Deterministic printable values of one size, so that every system stores the same bytes. */
export function makeValue(bytes: number, seed = 0): Buffer {
  const value = Buffer.alloc(bytes);
  let state = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < bytes; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    value[i] = 97 + ((state >>> 16) % 26);
  }
  return value;
}

/** The key of index i: short, ASCII, and in the same shape on every system. */
export const benchKey = (prefix: string, i: number): string => `${prefix}/${i}`;

/** Spreads client c's i-th request over the key space so that concurrent clients rarely write the same key at once. */
export const keyIndex = (clientIndex: number, iteration: number, keys: number): number => (clientIndex * 7919 + iteration) % keys;

/** Writes keys 0..keys-1 under `prefix` in batches (how workloads that read start). */
export async function preload(client: KvClient, prefix: string, keys: number, value: Buffer, batchOps: number): Promise<void> {
  for (let start = 0; start < keys; start += batchOps) {
    const entries: [string, Buffer][] = [];
    for (let i = start; i < Math.min(keys, start + batchOps); i++) entries.push([benchKey(prefix, i), value]);
    await client.putBatch(entries);
  }
}
