/**
 * `npm run bench:local`: reads of one node's data, in-process through `openLocal` versus over HTTP, as median and
 * spread of repeated runs.
 *
 * A node runs in its own process with N keys (default 10,000) of 256 B. This process then reads random keys:
 *
 * 1. `openLocal` `getSync` with `staleMs` 0 (the default: the LMDB snapshot is renewed before every read).
 * 2. `openLocal` `getSync` with `staleMs` 1,000 (renewed by lmdb-js at each event-loop turn, here every 1,000 reads).
 * 3. `openLocal` `get` (async, default options): what an `await`ing caller gets.
 * 4. HTTP GET through `MercuryClient.get` (fetch), C concurrent callers (default 16).
 * 5. HTTP GET over raw keep-alive sockets, C connections: the server's capacity without fetch's client cost.
 *
 * Both processes share the machine's 2 cores. Options: --runs N (default 5), --seconds S (default 2), --keys N,
 * --clients C.
 */
import { parseArgs } from 'node:util';
import { connect, openLocal, type LocalReader } from '../src/index.js';
import { RawHttpConnection } from './support/raw-http.js';
import { positiveInteger, readOptions } from './support/options.js';
import { startNodeProcess, type NodeProcess } from './support/node-process.js';
import { formatSummary, summarize } from './support/stats.js';

const { RUNS, SECONDS, KEYS, CLIENTS } = readOptions('bench:local', () => {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '2' },
      keys: { type: 'string', default: '10000' },
      clients: { type: 'string', default: '16' },
    },
  });
  return {
    RUNS: positiveInteger('runs', values.runs, 1000),
    SECONDS: positiveInteger('seconds', values.seconds, 3600),
    KEYS: positiveInteger('keys', values.keys, 10_000_000),
    CLIENTS: positiveInteger('clients', values.clients, 4096),
  };
});
const VALUE = 'v'.repeat(256);
const BATCH = 1_000;

const keyOf = (i: number): string => `bench/${i}`;
/** A cheap deterministic key order (a stride coprime with most key counts), so runs read the same keys. */
const nth = (i: number): number => (i * 7919) % KEYS;

function localSyncRun(reader: LocalReader): number {
  const keys = Array.from({ length: KEYS }, (_, i) => Buffer.from(keyOf(i)));
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let count = 0;
  while (performance.now() < deadline) {
    for (let i = 0; i < BATCH; i++) if (reader.getSync(keys[nth(count + i)]!) === undefined) throw new Error('local read missed a key');
    count += BATCH;
  }
  return count / ((performance.now() - started) / 1000);
}

async function localAsyncRun(reader: LocalReader): Promise<number> {
  const keys = Array.from({ length: KEYS }, (_, i) => Buffer.from(keyOf(i)));
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let count = 0;
  while (performance.now() < deadline) {
    for (let i = 0; i < BATCH; i++) if ((await reader.get(keys[nth(count + i)]!)) === undefined) throw new Error('local read missed a key');
    count += BATCH;
  }
  return count / ((performance.now() - started) / 1000);
}

async function clientRun(node: NodeProcess): Promise<number> {
  const client = connect(node.url);
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let count = 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, caller) => {
      for (let i = 0; performance.now() < deadline; i++) {
        if ((await client.get(keyOf(nth(caller * 101 + i)))) === undefined) throw new Error('HTTP read missed a key');
        count++;
      }
    }),
  );
  return count / ((performance.now() - started) / 1000);
}

async function rawRun(node: NodeProcess): Promise<number> {
  const connections = Array.from({ length: CLIENTS }, () => new RawHttpConnection(node.host, node.port));
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let count = 0;
  await Promise.all(
    connections.map(async (connection, caller) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const response = await connection.request('GET', `/v1/kv/${keyOf(nth(caller * 101 + i))}`);
        if (response.status !== 200) throw new Error(`GET answered HTTP ${response.status}`);
        count++;
      }
    }),
  );
  for (const connection of connections) connection.close();
  return count / ((performance.now() - started) / 1000);
}

async function repeat(name: string, run: () => Promise<number> | number): Promise<void> {
  const results: number[] = [];
  for (let i = 0; i < RUNS; i++) results.push(await run());
  process.stdout.write(`${name.padEnd(44)} ${formatSummary(summarize(results), 'gets/s')}\n`);
}

async function main(): Promise<void> {
  process.stdout.write(`mercury local-read bench: ${RUNS} runs x ${SECONDS} s, ${KEYS} keys of ${VALUE.length} B, ${CLIENTS} HTTP callers, node ${process.version}\n`);
  const node = await startNodeProcess();
  try {
    const loader = connect(node.url);
    for (let start = 0; start < KEYS; start += 1000) {
      const count = Math.min(1000, KEYS - start);
      await loader.txn({ success: Array.from({ length: count }, (_, i) => ({ op: 'put' as const, key: keyOf(start + i), value: VALUE })) });
    }
    const fresh = await openLocal(node.dataDir);
    const relaxed = await openLocal(node.dataDir, { staleMs: 1_000 });
    try {
      await repeat('openLocal getSync (staleMs 0: renew each read)', () => localSyncRun(fresh));
      await repeat('openLocal getSync (staleMs 1000)', () => localSyncRun(relaxed));
      await repeat('openLocal get (async, staleMs 0)', () => localAsyncRun(fresh));
      await repeat(`HTTP GET, MercuryClient (${CLIENTS} callers)`, () => clientRun(node));
      await repeat(`HTTP GET, raw keep-alive (${CLIENTS} connections)`, () => rawRun(node));
    } finally {
      await fresh.close();
      await relaxed.close();
    }
  } finally {
    await node.stop();
  }
}

await main();
