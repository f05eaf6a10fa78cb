/**
 * `npm run bench`: throughput of one Mercury node, as median and spread of repeated runs.
 *
 * 1. Durable single-key PUTs/s over HTTP: C concurrent clients (default 64), 256 B values, each client waits for its
 *    acknowledgement (which the node gives only after fsync) before sending the next.
 * 2. Keys/s through POST /v1/txn with 100 puts per transaction (same clients).
 * 3. HTTP GETs/s of existing keys (same clients).
 * 4. In-process Store.get/s on the same data directory, opened read-only in this process while the node runs.
 *
 * For 1-3 each run also gives the node process's CPU per operation (from /proc), the steadier figure on a shared machine,
 * and the load generator's (this process): both share the 2 cores, so a cost on either side lowers the throughput.
 *
 * The node runs in its own process; the load generator in this one. Both share the machine's 2 cores, as a client and
 * a server on one host do.
 *
 * Options: --runs N (default 5), --seconds S per run (default 3), --clients C (default 64), --tls (the node serves
 * HTTPS with a certificate made for the run, and every client connection is TLS: the cost of TLS, on versus off).
 * --auth (the node runs with
 * auth required, and every request carries a token scoped to read and write `bench/` and `txn/`, so each pays for
 * authentication and the prefix checks; without it, --auth off). --sign (the root signs every entry, as it does by
 * default outside benchmarks; without it the node runs `--unsigned`, to measure the cost).
 * --only put,txn,get,local runs just those workloads. BENCH_NODE_PROFILE=DIR writes a CPU profile of the node process
 * into DIR (`node --cpu-prof`).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Store } from '../src/store/index.js';
import { processCpuMicros } from './peers/processes.js';
import { RawHttpConnection } from './support/raw-http.js';
import { benchToken, startNodeProcess, type NodeProcess } from './support/node-process.js';
import { formatSummary, summarize } from './support/stats.js';
import { benchTls, type BenchTls } from './support/tls.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    clients: { type: 'string', default: '64' },
    tls: { type: 'boolean', default: false },
    auth: { type: 'boolean', default: false },
    sign: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
/** --only put,txn,get,local: run just those workloads (a profile of one workload, say); default all. */
const ONLY = new Set((values.only ?? 'put,txn,get,local').split(','));
const TLS_DIR = values.tls ? mkdtempSync(join(tmpdir(), 'mercury-bench-tls-')) : undefined;
const TLS: BenchTls | undefined = TLS_DIR === undefined ? undefined : benchTls(TLS_DIR);
const AUTH = values.auth;
/** The Authorization header of every request (set in main with --auth). */
let authorization: string | undefined;
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);
const CLIENTS = Number(values.clients);
const VALUE = Buffer.alloc(256, 'v');
const KEYSPACE = 10_000;
const TXN_OPS = 100;

/**
 * One run's figures: operations completed per second, the node process's CPU time per operation, and this process's
 * (the load generator's, which shares the cores) per operation.
 */
interface RunFigures {
  readonly perSecond: number;
  readonly nodeCpuMicrosPerOp: number;
  readonly clientCpuMicrosPerOp: number;
}

const readProc = (path: string): string => readFileSync(path, 'utf8');

/**
 * Runs `clients` loops of `operation` for `seconds`. The node's CPU per operation (user + system, from /proc, in 10 ms
 * ticks) is the steadier figure on a shared machine: it does not count the time the node waited for a core.
 *
 * The clients connect before the clock starts: the figure is the throughput of open keep-alive connections, as a
 * configuration client holds them, and with --tls the handshakes of a run's new connections (a key exchange and a
 * signature each, the costliest step of TLS) are not charged to its first requests.
 */
async function drive(node: NodeProcess, seconds: number, operation: (connection: RawHttpConnection, client: number, i: number) => Promise<number>): Promise<RunFigures> {
  const connections = Array.from({ length: CLIENTS }, () => new RawHttpConnection(node.host, node.port, TLS?.ca, authorization));
  await Promise.all(connections.map((connection) => connection.opened()));
  const deadline = performance.now() + seconds * 1000;
  let completed = 0;
  const cpuBefore = processCpuMicros(node.pid, readProc);
  const clientCpuBefore = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    connections.map(async (connection, client) => {
      for (let i = 0; performance.now() < deadline; i++) {
        // Not `completed += await ...`: that reads `completed` before the await and loses the other clients' counts.
        const done = await operation(connection, client, i);
        completed += done;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const nodeCpuMicros = processCpuMicros(node.pid, readProc) - cpuBefore;
  const clientCpu = process.cpuUsage(clientCpuBefore);
  for (const connection of connections) connection.close();
  return { perSecond: completed / elapsed, nodeCpuMicrosPerOp: nodeCpuMicros / completed, clientCpuMicrosPerOp: (clientCpu.user + clientCpu.system) / completed };
}

function expectOk(status: number, what: string): void {
  if (status !== 200) throw new Error(`${what} answered HTTP ${status}`);
}

async function putRun(node: NodeProcess): Promise<RunFigures> {
  return drive(node, SECONDS, async (connection, client, i) => {
    const response = await connection.request('PUT', `/v1/kv/bench/${(client * 7919 + i) % KEYSPACE}`, VALUE);
    expectOk(response.status, 'PUT');
    return 1;
  });
}

function txnBody(client: number, i: number): Buffer {
  const value = VALUE.toString('latin1');
  const success = Array.from({ length: TXN_OPS }, (_, op) => ({ op: 'put', key: `txn/${client}/${(i * TXN_OPS + op) % KEYSPACE}`, value }));
  return Buffer.from(JSON.stringify({ success }));
}

async function txnRun(node: NodeProcess): Promise<RunFigures> {
  return drive(node, SECONDS, async (connection, client, i) => {
    const response = await connection.request('POST', '/v1/txn', txnBody(client, i), 'application/json');
    expectOk(response.status, 'POST /v1/txn');
    return TXN_OPS;
  });
}

async function getRun(node: NodeProcess): Promise<RunFigures> {
  return drive(node, SECONDS, async (connection, client, i) => {
    const response = await connection.request('GET', `/v1/kv/bench/${(client * 7919 + i) % KEYSPACE}`);
    expectOk(response.status, 'GET');
    return 1;
  });
}

function inProcessGetRun(store: Store): number {
  const keys = Array.from({ length: KEYSPACE }, (_, i) => Buffer.from(`bench/${i}`));
  const deadline = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let count = 0;
  while (performance.now() < deadline) {
    for (let i = 0; i < 1000; i++) {
      if (store.get(keys[(count + i) % KEYSPACE]!).record === undefined) throw new Error('in-process get missed a key');
    }
    count += 1000;
  }
  return count / ((performance.now() - started) / 1000);
}

async function repeat(name: string, unit: string, run: () => Promise<RunFigures | number> | number): Promise<void> {
  const results: number[] = [];
  const cpu: number[] = [];
  const clientCpu: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const figures = await run();
    results.push(typeof figures === 'number' ? figures : figures.perSecond);
    if (typeof figures !== 'number') {
      cpu.push(figures.nodeCpuMicrosPerOp);
      clientCpu.push(figures.clientCpuMicrosPerOp);
    }
  }
  process.stdout.write(`${name.padEnd(34)} ${formatSummary(summarize(results), unit)}\n`);
  if (cpu.length > 0) process.stdout.write(`${'  node CPU per op'.padEnd(34)} ${formatSummary(summarize(cpu), 'µs')}\n`);
  if (clientCpu.length > 0) process.stdout.write(`${'  load generator CPU per op'.padEnd(34)} ${formatSummary(summarize(clientCpu), 'µs')}\n`);
}

async function main(): Promise<void> {
  process.stdout.write(
    `mercury bench: ${RUNS} runs x ${SECONDS} s, ${CLIENTS} clients, ${VALUE.length} B values, TLS ${TLS === undefined ? 'off' : 'on'}, auth ${AUTH ? 'required' : 'off'}, signing ${values.sign ? 'on' : 'off'}, node ${process.version}\n`,
  );
  const node = await startNodeProcess([...(TLS?.args ?? []), ...(values.sign ? [] : ['--unsigned'])], undefined, { auth: AUTH, nodeArgs: process.env.BENCH_NODE_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_NODE_PROFILE}`] : [] });
  try {
    if (AUTH) authorization = await benchToken(node, 'bench', ['read:bench/', 'write:bench/', 'read:txn/', 'write:txn/'], TLS?.ca);
    // Fill the keyspace once so that GETs hit and PUTs update existing keys, as a configuration store's do.
    const loader = new RawHttpConnection(node.host, node.port, TLS?.ca, authorization);
    for (let start = 0; start < KEYSPACE; start += 1000) {
      const success = Array.from({ length: 1000 }, (_, i) => ({ op: 'put', key: `bench/${start + i}`, value: VALUE.toString('latin1') }));
      expectOk((await loader.request('POST', '/v1/txn', Buffer.from(JSON.stringify({ success })), 'application/json')).status, 'load');
    }
    loader.close();
    if (ONLY.has('put')) await repeat('HTTP PUT (durable, 1 key)', 'puts/s', () => putRun(node));
    if (ONLY.has('txn')) await repeat(`HTTP POST /v1/txn (${TXN_OPS} ops)`, 'keys/s', () => txnRun(node));
    if (ONLY.has('get')) await repeat('HTTP GET', 'gets/s', () => getRun(node));
    if (!ONLY.has('local')) return;
    const store = Store.open({ path: node.dataDir, readOnly: true });
    try {
      await repeat('in-process Store.get', 'gets/s', () => inProcessGetRun(store));
    } finally {
      await store.close();
    }
  } finally {
    await node.stop();
    if (TLS_DIR !== undefined) rmSync(TLS_DIR, { recursive: true, force: true });
  }
}

await main();
