/**
 * `npm run bench:wire-client`: what Mercury's own client costs the process that calls it, over the wire port.
 *
 * C clients (default 64) in closed loops of `get` (or `put` with --op put, 256 B values) against one node in its own
 * process, for S seconds per run. Each run reports throughput, latency p50/p99, the calling process's CPU per request,
 * its JavaScript heap allocated per request, and the stalls: 10 ms windows in which a quarter of the clients' requests
 * finished slower than 2 ms, the signature of a pause that held every request in flight at once.
 *
 * Heap per request comes from V8's sampling heap profiler with collected objects counted too
 * (`includeObjectsCollectedByMinorGC` / `ByMajorGC`), so it is what the calls allocate, not what stays alive; the
 * profiler itself costs some throughput, so a run measures either allocation (--heap) or speed (default), not both.
 *
 * Why it exists: the read p99 of `bench:peers` workload 3 is set by the calling process's garbage collection, which
 * stalls every request in flight (docs/performance.md, 2026-12-03).
 *
 * Options: --runs N (default 3), --seconds S (default 3), --clients C (default 64), --op get|put, --heap, --node-arg ARG
 * (repeatable: a Node.js option for the node's process, e.g. --node-arg=--trace-gc).
 */
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { connect, type MercuryClient } from '../src/index.js';
import { startNodeProcess } from './support/node-process.js';
import { positiveInteger, readOptions, UsageError } from './support/options.js';
import { formatSummary, summarize } from './support/stats.js';

const { values } = readOptions('bench:wire-client', () => parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '64' },
    op: { type: 'string', default: 'get' },
    heap: { type: 'boolean', default: false },
    'node-arg': { type: 'string', multiple: true, default: [] },
  },
}));
const OPTIONS = readOptions('bench:wire-client', () => {
  if (values.op !== 'get' && values.op !== 'put') throw new UsageError(`--op must be get or put, got "${values.op}"`);
  return {
    runs: positiveInteger('runs', values.runs),
    seconds: positiveInteger('seconds', values.seconds, 600),
    clients: positiveInteger('clients', values.clients, 4096),
    op: values.op,
    heap: values.heap,
    nodeArgs: values['node-arg'],
  };
});
const KEYS = Array.from({ length: 1000 }, (_, i) => Buffer.from(`bench/k${i}`));
const VALUE = Buffer.alloc(256, 'v');
/** Latencies go into a histogram of 10 µs bins up to 100 ms (and one bin above). */
const BIN_MS = 0.01;
const BINS = 10_000;
/** A request slower than this counts towards a stall... */
const STALL_LATENCY_MS = 2;
/** ...and a window of this length in which a quarter of the clients' requests finish that slowly is one stall. */
const STALL_WINDOW_MS = 10;

interface RunFigures {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuMicrosPerRequest: number;
  readonly stallsPerSecond: number;
  readonly heapBytesPerRequest: number | undefined;
}

/** The q-quantile of the histogram: the upper edge of the bin that holds it. */
function histogramQuantile(bins: Uint32Array, count: number, q: number): number {
  const rank = Math.ceil(q * count);
  let seen = 0;
  for (let bin = 0; bin < bins.length; bin++) {
    seen += bins[bin]!;
    if (seen >= rank) return (bin + 1) * BIN_MS;
  }
  return Number.POSITIVE_INFINITY;
}

/**
 * One run. The recording is small on purpose (a 40 KB histogram and a map of slow windows): tens of megabytes of
 * latency arrays in the calling process change how V8 schedules its major GC, which changes the very pauses measured.
 */
async function run(clients: readonly MercuryClient[], seconds: number, session: Session | undefined): Promise<RunFigures> {
  const bins = new Uint32Array(BINS + 1);
  const slowPerWindow = new Map<number, number>();
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
        const latencyMs = done - sent;
        bins[Math.min(BINS, Math.floor(latencyMs / BIN_MS))]!++;
        count++;
        if (latencyMs > STALL_LATENCY_MS) {
          const window = Math.floor((done - started) / STALL_WINDOW_MS);
          slowPerWindow.set(window, (slowPerWindow.get(window) ?? 0) + 1);
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
  const stalls = [...slowPerWindow.values()].filter((slow) => slow >= clients.length / 4).length;
  return {
    perSecond: (count / elapsedMs) * 1000,
    p50Ms: histogramQuantile(bins, count, 0.5),
    p99Ms: histogramQuantile(bins, count, 0.99),
    cpuMicrosPerRequest: (used.user + used.system) / count,
    stallsPerSecond: stalls / (elapsedMs / 1000),
    heapBytesPerRequest,
  };
}

async function main(): Promise<void> {
  const node = await startNodeProcess([], undefined, { quiet: true, nodeArgs: OPTIONS.nodeArgs });
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
