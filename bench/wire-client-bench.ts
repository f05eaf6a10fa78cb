/**
 * `npm run bench:wire-client`: what Mercury's own client costs the process that calls it, over the wire port.
 *
 * C clients (default 64) in closed loops of `get` (or `put` with --op put, 256 B values) against one node in its own
 * process, for S seconds per run. Each run reports throughput, latency p50/p99, the calling process's CPU per request,
 * its JavaScript heap allocated per request, and the stalls: groups of slow requests (slower than the run's p99) that
 * finished within the same 10 ms, the signature of a pause that held every request in flight at once.
 *
 * Heap per request comes from V8's sampling heap profiler with collected objects counted too
 * (`includeObjectsCollectedByMinorGC` / `ByMajorGC`), so it is what the calls allocate, not what stays alive; the
 * profiler itself costs some throughput, so a run measures either allocation (--heap) or speed (default), not both.
 *
 * Why it exists: the read p99 of `bench:peers` workload 3 is set by the calling process's garbage collection, which
 * stalls every request in flight (docs/performance.md, 2026-12-03).
 *
 * Options: --runs N (default 3), --seconds S (default 3), --clients C (default 64), --op get|put, --heap.
 */
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { connect, type MercuryClient } from '../src/index.js';
import { startNodeProcess } from './support/node-process.js';
import { positiveInteger, readOptions, UsageError } from './support/options.js';
import { formatSummary, quantileOfSorted, summarize } from './support/stats.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '64' },
    op: { type: 'string', default: 'get' },
    heap: { type: 'boolean', default: false },
  },
});
const OPTIONS = readOptions('bench:wire-client', () => {
  if (values.op !== 'get' && values.op !== 'put') throw new UsageError(`--op must be get or put, got "${values.op}"`);
  return {
    runs: positiveInteger('runs', values.runs),
    seconds: positiveInteger('seconds', values.seconds, 600),
    clients: positiveInteger('clients', values.clients, 4096),
    op: values.op,
    heap: values.heap,
  };
});
const KEYS = Array.from({ length: 1000 }, (_, i) => Buffer.from(`bench/k${i}`));
const VALUE = Buffer.alloc(256, 'v');
/** Slow requests finishing within one window of this length count as one stall. */
const STALL_WINDOW_MS = 10;

interface RunFigures {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuMicrosPerRequest: number;
  /** Windows of STALL_WINDOW_MS holding at least a quarter of the clients' requests slower than p99. */
  readonly stallsPerSecond: number;
  readonly heapBytesPerRequest: number | undefined;
}

async function run(clients: readonly MercuryClient[], seconds: number, session: Session | undefined): Promise<RunFigures> {
  const capacity = 4_000_000;
  const finishedAt = new Float64Array(capacity);
  const latencies = new Float64Array(capacity);
  let count = 0;
  if (session !== undefined) {
    await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true });
  }
  const cpu = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    clients.map(async (client, clientIndex) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const key = KEYS[(clientIndex * 7919 + i) % KEYS.length]!;
        const sent = performance.now();
        if (OPTIONS.op === 'get') await client.get(key);
        else await client.put(key, VALUE);
        const done = performance.now();
        if (count < capacity) {
          finishedAt[count] = done - started;
          latencies[count++] = done - sent;
        }
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  let heapBytesPerRequest: number | undefined;
  if (session !== undefined) {
    const { profile } = await session.post('HeapProfiler.stopSampling');
    let bytes = 0;
    const walk = (node: typeof profile.head): void => {
      bytes += node.selfSize;
      for (const child of node.children) walk(child);
    };
    walk(profile.head);
    heapBytesPerRequest = bytes / count;
  }
  const sorted = latencies.slice(0, count).sort();
  const p99Ms = quantileOfSorted(sorted, 0.99);
  const slowPerWindow = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    if (latencies[i]! <= p99Ms) continue;
    const window = Math.floor(finishedAt[i]! / STALL_WINDOW_MS);
    slowPerWindow.set(window, (slowPerWindow.get(window) ?? 0) + 1);
  }
  const stalls = [...slowPerWindow.values()].filter((slow) => slow >= clients.length / 4).length;
  return {
    perSecond: (count / elapsedMs) * 1000,
    p50Ms: quantileOfSorted(sorted, 0.5),
    p99Ms,
    cpuMicrosPerRequest: (used.user + used.system) / count,
    stallsPerSecond: stalls / (elapsedMs / 1000),
    heapBytesPerRequest,
  };
}

async function main(): Promise<void> {
  const node = await startNodeProcess([], undefined, { quiet: true });
  const clients: MercuryClient[] = [];
  try {
    if (node.wireUrl === undefined) throw new Error('the node did not print its wire URL');
    for (let i = 0; i < OPTIONS.clients; i++) clients.push(connect(node.wireUrl));
    for (const key of KEYS) await clients[0]!.put(key, VALUE);
    // Warm-up: compiled code and an open connection before the first measured run.
    await run(clients, 1, undefined);
    let session: Session | undefined;
    if (OPTIONS.heap) {
      session = new Session();
      session.connect();
      await session.post('HeapProfiler.enable');
    }
    const figures: RunFigures[] = [];
    for (let i = 0; i < OPTIONS.runs; i++) figures.push(await run(clients, OPTIONS.seconds, session));
    session?.disconnect();
    const line = (title: string, values: number[], unit: string): void => console.log(`${title.padEnd(34)} ${formatSummary(summarize(values), unit)}`);
    console.log(`bench:wire-client: ${OPTIONS.clients} clients, ${OPTIONS.op}, ${OPTIONS.runs} runs of ${OPTIONS.seconds} s${OPTIONS.heap ? ', heap sampling on' : ''}`);
    line(`${OPTIONS.op}s/s`, figures.map((f) => f.perSecond), `${OPTIONS.op}s/s`);
    line('p50', figures.map((f) => f.p50Ms), 'ms');
    line('p99', figures.map((f) => f.p99Ms), 'ms');
    line('calling process CPU per request', figures.map((f) => f.cpuMicrosPerRequest), 'µs');
    line('stalls per s', figures.map((f) => f.stallsPerSecond), '/s');
    if (OPTIONS.heap) line('heap allocated per request', figures.map((f) => f.heapBytesPerRequest!), 'bytes');
  } finally {
    for (const client of clients) client.close();
    await node.stop();
  }
}

await main();
