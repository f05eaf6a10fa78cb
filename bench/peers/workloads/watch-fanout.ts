/**
 * Workload 6: watch fan-out on one node. N watchers of one prefix, spread over C connections, on etcd and on
 * Mercury (Redis has no watch of keys with history). Per run, W writes are spread evenly over the run; every
 * delivery to every watcher is timed from the moment its write was sent. Memory per watcher, two ways: idle, the
 * server's resident memory with the watchers open and settled less its memory before they opened, divided by N
 * (measured once per system, before the first write: what holding a watcher costs, as bench:watch measures it); and
 * after each run, the same difference at the run's end, which adds what the server's heap grew by while it fanned the
 * writes out and depends on when its garbage collector last ran (Mercury's grew 0.3 MB in one run and 12 MB in the
 * next, same watchers: docs/performance.md).
 */
import { readFileSync } from 'node:fs';
import { benchKey, makeValue, spacedSequence } from '../driver.js';
import { residentBytes } from '../processes.js';
import { LatencyRecorder, median, type MetricSpec } from '../stats.js';
import type { RunningSystem } from '../system.js';
import { measureAlternating, startAll, type Subject, type Workload, type WorkloadContext, type WorkloadResult } from '../workload.js';

/** How long a run waits for the last deliveries after its last write. */
const WATCH_DRAIN_MS_MAX = 10_000;
/** Samples of the server's resident memory with the watchers idle, and the time before each. */
const IDLE_SAMPLES = 5;
const IDLE_SAMPLE_MS = 200;
/** Writes in the unrecorded warm-up run. */
const WATCH_WARM_UP_WRITES = 20;

const METRICS: readonly MetricSpec[] = [
  { key: 'deliveryP50Ms', title: 'delivery p50 ms', better: 'lower' },
  { key: 'deliveryP99Ms', title: 'delivery p99 ms', better: 'lower' },
  { key: 'bytesPerWatcher', title: 'server bytes/watcher, idle', better: 'lower' },
  { key: 'bytesPerWatcherAfterRuns', title: 'server bytes/watcher after the run', better: 'lower' },
  { key: 'deliveredFraction', title: 'fraction delivered', better: 'higher', compared: false },
];

const sleep = (milliseconds: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, milliseconds));
const rss = (pid: number): number => residentBytes(pid, (path) => readFileSync(path, 'utf8'));

/** A value that carries its write's number in its first bytes, padded to the run's value size. */
export function numberedValue(k: number, bytes: number, padding: Buffer): Buffer {
  const head = Buffer.from(`${k}:`);
  return Buffer.concat([head, padding.subarray(0, Math.max(0, bytes - head.length))]);
}

export function valueNumber(value: Buffer): number {
  return Number.parseInt(value.subarray(0, Math.min(16, value.length)).toString('latin1'), 10);
}

async function watchSubject(system: RunningSystem, title: string, context: WorkloadContext): Promise<Subject> {
  const { options } = context;
  const writer = await system.connect();
  const padding = makeValue(options.valueBytes);
  const baselineBytes = rss(system.pid);
  let sentAt: number[] = [];
  let latencies = new LatencyRecorder();
  let received = 0;
  const watch = await system.watchMany!('wf/', options.watchers, options.watchConnections, (_watcher, _key, value) => {
    const sent = sentAt[valueNumber(value)];
    if (sent === undefined) return; // a write of an earlier run, delivered late
    latencies.record(performance.now() - sent);
    received++;
  });
  const samples: number[] = [];
  for (let sample = 0; sample < IDLE_SAMPLES; sample++) {
    await sleep(IDLE_SAMPLE_MS);
    samples.push(rss(system.pid));
  }
  const bytesPerWatcher = (median(samples) - baselineBytes) / options.watchers;
  return {
    id: system.name,
    title,
    mercury: system.name === 'mercury',
    async runOnce(run) {
      const writes = run < 0 ? WATCH_WARM_UP_WRITES : options.watchWrites;
      sentAt = [];
      latencies = new LatencyRecorder();
      received = 0;
      await spacedSequence(writes, options.seconds, async (k) => {
        sentAt[k] = performance.now();
        await writer.put(benchKey('wf', k % 16), numberedValue(k, options.valueBytes, padding));
      });
      const expected = writes * options.watchers;
      const drainDeadline = performance.now() + WATCH_DRAIN_MS_MAX;
      while (received < expected && performance.now() < drainDeadline) await sleep(5);
      const [p50, p99] = latencies.quantiles([0.5, 0.99]);
      const bytesPerWatcherAfterRuns = (rss(system.pid) - baselineBytes) / options.watchers;
      sentAt = [];
      return { deliveryP50Ms: p50!, deliveryP99Ms: p99!, bytesPerWatcher, bytesPerWatcherAfterRuns, deliveredFraction: received / expected };
    },
    async close() {
      await watch.close();
      await writer.close();
    },
  };
}

export const watchFanoutWorkload: Workload = {
  id: 6,
  title: 'Watch fan-out',
  async run(context: WorkloadContext): Promise<WorkloadResult> {
    const { options } = context;
    const watching = { ...context, adapters: context.adapters.filter((adapter) => adapter.name !== 'redis') };
    const running = await startAll(watching);
    try {
      const subjects: Subject[] = [];
      for (const system of running) {
        subjects.push(await watchSubject(system, watching.adapters.find((adapter) => adapter.name === system.name)!.title, context));
      }
      const results = await measureAlternating(context, 6, subjects);
      return {
        id: 6,
        title: 'Watch fan-out',
        description: `${options.watchers.toLocaleString('en-US')} watchers of one prefix on one node, over ${options.watchConnections} connections (Mercury: WebSocket subscriptions; etcd: etcd3 watchers, one gRPC watch stream per connection). Each run sends ${options.watchWrites} writes of ${options.valueBytes} B evenly over ${options.seconds} s; delivery latency is from the write being sent to each watcher receiving it, measured in the benchmark process (which also decodes every delivery). Memory per watcher, idle: the server's resident memory with the watchers open (the median of ${IDLE_SAMPLES} samples ${IDLE_SAMPLE_MS} ms apart), less its memory before they opened, over the number of watchers, measured once per system before the first write (so the same in every run). After the run: the same difference at the end of each run, which adds what the server's heap grew by while it fanned the writes out, and depends on when its garbage collector last ran.`,
        metrics: METRICS,
        subjects: results,
        notes: ['Redis is not compared here: it has no watch of keys with history (keyspace notifications are fire-and-forget pub/sub).'],
      };
    } finally {
      await Promise.all(running.map((system) => system.stop()));
    }
  },
};
