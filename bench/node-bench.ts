/**
 * `npm run bench`: throughput of one Mercury node, as median and spread of repeated runs.
 *
 * 1. Durable single-key PUTs/s over HTTP: C concurrent clients (default 64), 256 B values, each client waits for its
 *    acknowledgement (which the node gives only after fsync) before sending the next.
 * 2. Keys/s through POST /v1/txn with 100 puts per transaction (same clients).
 * 3. HTTP GETs/s of existing keys (same clients).
 * 4. In-process Store.get/s on the same data directory, opened read-only in this process while the node runs.
 * 5. The same PUTs and GETs over the wire port (`wire-put`, `wire-get`): Mercury's own client given the node's
 *    `mercury+tcp://` (or with --tls `mercury+tls://`) URL, the C loops sharing its one connection with every request
 *    in flight, as `bench:peers` workloads 1 and 3 drive it. With --compare it shows what TLS costs on a connection
 *    that carries many requests per write, against HTTP's one response per write.
 *
 * For 1-3 and 5 each run also gives the node process's CPU per operation (from /proc), the steadier figure on a shared machine,
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
 * --only put,txn,get,wire-put,wire-get,local runs just those workloads (all by default); `bare-get`, only when named,
 * runs the same GETs against a bare node:http server (https with --tls) in its own process that answers every
 * request with the node's answer to a GET and does nothing else (support/bare-http-server.ts): the floor of Node's HTTP
 * stack on this machine, and with `--compare --tls`, what TLS costs that stack alone, beside what it costs the node. BENCH_NODE_PROFILE=DIR writes a CPU profile of the node process
 * into DIR (`node --cpu-prof`). BENCH_NODE_ARGS='--perf-basic-prof ...' passes node options to the node process and
 * prints its pid, for `perf record -p PID` (V8's builtins, the runtime and the kernel by name).
 *
 * --compare: what the features named by --tls, --auth and --sign cost, as a paired measurement. Two nodes run side by
 * side, one with those features and one with everything off (idle while the other is measured); each round measures
 * both, one after the other, the order swapped every round, and the figure is the median over rounds of the ratio
 * on / off. On a shared machine whose speed drifts by tens of percent within a minute, separate invocations measure
 * the drift as much as the features; a ratio of two runs seconds apart cancels most of it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect, type MercuryClient } from '../src/client/index.js';
import { Store } from '../src/store/index.js';
import { processCpuMicros } from './peers/processes.js';
import { RawHttpConnection } from './support/raw-http.js';
import { benchToken, startNodeProcess, type NodeProcess } from './support/node-process.js';
import { positiveInteger, readOptions, UsageError } from './support/options.js';
import { formatSummary, summarize } from './support/stats.js';
import { benchTls, type BenchTls } from './support/tls.js';

const WORKLOAD_IDS = ['put', 'txn', 'get', 'wire-put', 'wire-get', 'local', 'bare-get'];
const { values, ONLY, RUNS, SECONDS, CLIENTS } = readOptions('bench', () => {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '3' },
      clients: { type: 'string', default: '64' },
      tls: { type: 'boolean', default: false },
      auth: { type: 'boolean', default: false },
      sign: { type: 'boolean', default: false },
      only: { type: 'string' },
      compare: { type: 'boolean', default: false },
    },
  });
  /** --only put,txn,get,wire-put,wire-get,local: run just those workloads (a profile of one workload, say); default all. */
  const only = new Set((values.only ?? WORKLOAD_IDS.filter((id) => id !== 'bare-get').join(',')).split(','));
  for (const id of only) if (!WORKLOAD_IDS.includes(id)) throw new UsageError(`--only takes ${WORKLOAD_IDS.join(', ')}, got "${id}"`);
  if (values.compare && !values.tls && !values.auth && !values.sign) throw new UsageError('--compare measures what --tls, --auth or --sign cost: name at least one of them');
  return {
    values,
    ONLY: only,
    RUNS: positiveInteger('runs', values.runs, 1000),
    SECONDS: positiveInteger('seconds', values.seconds, 3600),
    CLIENTS: positiveInteger('clients', values.clients, 4096),
  };
});
const TLS_DIR = values.tls ? mkdtempSync(join(tmpdir(), 'mercury-bench-tls-')) : undefined;
const VALUE = Buffer.alloc(256, 'v');
const KEYSPACE = 10_000;
const TXN_OPS = 100;

/** A node under test and how its clients reach it. */
interface Target {
  /** "off" or the features it runs with ("tls+auth+sign"). */
  readonly label: string;
  readonly node: NodeProcess;
  /** The CA of its certificate when it serves TLS. */
  readonly ca: Buffer | undefined;
  /** The Authorization header of every request when it requires auth. */
  readonly authorization: string | undefined;
  /** With --only bare-get: a bare node:http(s) server beside the node, TLS when the node has it (support/bare-http-server.ts). */
  readonly bare: BareServer | undefined;
}

/** What the load loops need of a server process: where it listens, and its pid for its CPU time. */
interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly pid: number;
}

interface BareServer extends Endpoint {
  stop(): void;
}

/** Which of the features a node runs with. */
interface Features {
  readonly tls: BenchTls | undefined;
  readonly auth: boolean;
  readonly sign: boolean;
}

const OFF: Features = { tls: undefined, auth: false, sign: false };

function featureLabel(features: Features): string {
  const on = [features.tls && 'tls', features.auth && 'auth', features.sign && 'sign'].filter(Boolean);
  return on.length === 0 ? 'off' : on.join('+');
}

/**
 * One run's figures: operations completed per second, the node process's CPU time per operation, and this process's
 * (the load generator's, which shares the cores) per operation.
 */
interface RunFigures {
  readonly perSecond: number;
  readonly nodeCpuMicrosPerOp: number;
  readonly clientCpuMicrosPerOp: number;
  /** PUT: requests per log entry (group commit's batch size), from the seqs the node answered with; else undefined. */
  readonly requestsPerEntry?: number;
}

const readProc = (path: string): string => readFileSync(path, 'utf8');

/** The key a client's i-th PUT or GET uses: each client walks the loaded keyspace on its own stride. */
function keyOf(client: number, i: number): string {
  return `bench/${(client * 7919 + i) % KEYSPACE}`;
}

/**
 * Runs CLIENTS loops of `operation` over HTTP, each on its own keep-alive connection, for SECONDS.
 *
 * The clients connect before the clock starts: the figure is the throughput of open keep-alive connections, as a
 * configuration client holds them, and with --tls the handshakes of a run's new connections (a key exchange and a
 * signature each, the costliest step of TLS) are not charged to its first requests.
 */
async function drive(target: Target, operation: (connection: RawHttpConnection, client: number, i: number) => Promise<number>, server: Endpoint = target.node): Promise<RunFigures> {
  const connections = Array.from({ length: CLIENTS }, () => new RawHttpConnection(server.host, server.port, target.ca, target.authorization));
  await Promise.all(connections.map((connection) => connection.opened()));
  try {
    return await timeLoops(server, async (client, deadline) => {
      let completed = 0;
      for (let i = 0; performance.now() < deadline; i++) completed += await operation(connections[client]!, client, i);
      return completed;
    });
  } finally {
    for (const connection of connections) connection.close();
  }
}

/**
 * Runs CLIENTS copies of `loop` until SECONDS from now; each returns the operations it completed. Throughput, and the
 * node's and this process's CPU per operation over the same interval. The node's CPU (user + system, from /proc, in
 * 10 ms ticks) is the steadier figure on a shared machine: it does not count the time the node waited for a core.
 */
async function timeLoops(node: Endpoint, loop: (client: number, deadline: number) => Promise<number>): Promise<RunFigures> {
  const deadline = performance.now() + SECONDS * 1000;
  const cpuBefore = processCpuMicros(node.pid, readProc);
  const clientCpuBefore = process.cpuUsage();
  const started = performance.now();
  const counts = await Promise.all(Array.from({ length: CLIENTS }, (_, client) => loop(client, deadline)));
  const elapsed = (performance.now() - started) / 1000;
  const nodeCpuMicros = processCpuMicros(node.pid, readProc) - cpuBefore;
  const clientCpu = process.cpuUsage(clientCpuBefore);
  const completed = counts.reduce((sum, count) => sum + count, 0);
  return { perSecond: completed / elapsed, nodeCpuMicrosPerOp: nodeCpuMicros / completed, clientCpuMicrosPerOp: (clientCpu.user + clientCpu.system) / completed };
}

function expectOk(status: number, what: string): void {
  if (status !== 200) throw new Error(`${what} answered HTTP ${status}`);
}

async function putRun(target: Target): Promise<RunFigures> {
  const entries = new EntrySpan();
  const figures = await drive(target, async (connection, client, i) => {
    const response = await connection.request('PUT', `/v1/kv/${keyOf(client, i)}`, VALUE);
    expectOk(response.status, 'PUT');
    entries.answered(Number(/"seq":(\d+)/.exec(response.body.toString('latin1'))?.[1]));
    return 1;
  });
  return { ...figures, requestsPerEntry: entries.requestsPerEntry() };
}

/** The entries a run's PUTs went into: each is answered with its entry's seq, and nothing else writes meanwhile. */
class EntrySpan {
  private firstSeq = Infinity;
  private lastSeq = 0;
  private requests = 0;

  answered(seq: number): void {
    this.firstSeq = Math.min(this.firstSeq, seq);
    this.lastSeq = Math.max(this.lastSeq, seq);
    this.requests++;
  }

  /** Group commit's batch size: the PUTs answered per entry they made. */
  requestsPerEntry(): number {
    return this.requests / (this.lastSeq - this.firstSeq + 1);
  }
}

function txnBody(client: number, i: number): Buffer {
  const value = VALUE.toString('latin1');
  const success = Array.from({ length: TXN_OPS }, (_, op) => ({ op: 'put', key: `txn/${client}/${(i * TXN_OPS + op) % KEYSPACE}`, value }));
  return Buffer.from(JSON.stringify({ success }));
}

async function txnRun(target: Target): Promise<RunFigures> {
  return drive(target, async (connection, client, i) => {
    const response = await connection.request('POST', '/v1/txn', txnBody(client, i), 'application/json');
    expectOk(response.status, 'POST /v1/txn');
    return TXN_OPS;
  });
}

async function getRun(target: Target): Promise<RunFigures> {
  return drive(target, async (connection, client, i) => {
    const response = await connection.request('GET', `/v1/kv/${keyOf(client, i)}`);
    expectOk(response.status, 'GET');
    return 1;
  });
}

/** The same GETs against the bare server beside the node: Node's HTTP stack (and TLS) alone, the floor under `get`. */
async function bareGetRun(target: Target): Promise<RunFigures> {
  assert.ok(target.bare !== undefined, 'bare-get without a bare server');
  return drive(
    target,
    async (connection, client, i) => {
      expectOk((await connection.request('GET', `/v1/kv/${keyOf(client, i)}`)).status, 'bare GET');
      return 1;
    },
    target.bare,
  );
}

/** Starts the bare server, answering what `node` answers for a GET of bench/0, with the node's TLS certificate if any. */
async function startBareServer(features: Features, answer: Buffer): Promise<BareServer> {
  const script = fileURLToPath(new URL('./support/bare-http-server.js', import.meta.url));
  const tlsArgs = features.tls === undefined ? [] : [features.tls.paths.certPath, features.tls.paths.keyPath];
  const child = spawn(process.execPath, [script, answer.toString('base64'), ...tlsArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<URL>((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (\S+)\n/.exec(output);
      if (match !== null) resolve(new URL(match[1]!));
    });
    child.once('exit', (code) => reject(new Error(`the bare server exited with ${code}: ${output}`)));
  });
  return { host: url.hostname, port: Number(url.port), pid: child.pid!, stop: () => child.kill('SIGTERM') };
}

/**
 * Runs CLIENTS loops of `operation` on one wire client for SECONDS: the wire client multiplexes every loop's requests
 * on its one connection. Its connection opens (and with --tls, its handshake completes) before the clock starts.
 */
async function driveWire(target: Target, operation: (client: MercuryClient, key: string) => Promise<void>): Promise<RunFigures> {
  const { node } = target;
  if (node.wireUrl === undefined) throw new Error('the node printed no wire URL');
  const client = connect(node.wireUrl, {
    ...(target.ca === undefined ? {} : { ca: target.ca }),
    ...(target.authorization === undefined ? {} : { token: target.authorization.slice('Bearer '.length) }),
  });
  try {
    await client.get('bench/0');
    return await timeLoops(node, async (loop, deadline) => {
      let completed = 0;
      for (let i = 0; performance.now() < deadline; i++, completed++) await operation(client, keyOf(loop, i));
      return completed;
    });
  } finally {
    client.close();
  }
}

async function wirePutRun(target: Target): Promise<RunFigures> {
  const entries = new EntrySpan();
  const figures = await driveWire(target, async (client, key) => {
    entries.answered((await client.put(key, VALUE)).seq);
  });
  return { ...figures, requestsPerEntry: entries.requestsPerEntry() };
}

async function wireGetRun(target: Target): Promise<RunFigures> {
  return driveWire(target, async (client, key) => {
    if ((await client.get(key)) === undefined) throw new Error(`wire GET of ${key} found nothing`);
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

/** The figures of repeated runs: throughput, and for runs against a node the node's and the load generator's CPU. */
class Series {
  readonly results: number[] = [];
  readonly cpu: number[] = [];
  readonly clientCpu: number[] = [];
  readonly requestsPerEntry: number[] = [];

  add(figures: RunFigures | number): void {
    this.results.push(typeof figures === 'number' ? figures : figures.perSecond);
    if (typeof figures === 'number') return;
    this.cpu.push(figures.nodeCpuMicrosPerOp);
    this.clientCpu.push(figures.clientCpuMicrosPerOp);
    if (figures.requestsPerEntry !== undefined) this.requestsPerEntry.push(figures.requestsPerEntry);
  }

  print(name: string, unit: string): void {
    process.stdout.write(`${name.padEnd(34)} ${formatSummary(summarize(this.results), unit)}\n`);
    if (this.cpu.length > 0) process.stdout.write(`${'  node CPU per op'.padEnd(34)} ${formatSummary(summarize(this.cpu), 'µs')}\n`);
    if (this.clientCpu.length > 0) process.stdout.write(`${'  load generator CPU per op'.padEnd(34)} ${formatSummary(summarize(this.clientCpu), 'µs')}\n`);
    if (this.requestsPerEntry.length > 0) process.stdout.write(`${'  requests per entry'.padEnd(34)} ${formatSummary(summarize(this.requestsPerEntry), '')}\n`);
  }
}

async function repeat(name: string, unit: string, run: () => Promise<RunFigures | number> | number): Promise<void> {
  const series = new Series();
  for (let i = 0; i < RUNS; i++) series.add(await run());
  series.print(name, unit);
}

/**
 * --compare: runs `run` against both targets in every round, the order swapped each round, and prints each side and
 * the per-round ratios (on / off) of throughput and of the node's and the load generator's CPU per operation.
 */
async function compare(name: string, unit: string, off: Target, on: Target, run: (target: Target) => Promise<RunFigures>): Promise<void> {
  const offSeries = new Series();
  const onSeries = new Series();
  const throughputRatios: number[] = [];
  const cpuRatios: number[] = [];
  const clientCpuRatios: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const order = i % 2 === 0 ? [off, on] : [on, off];
    const figures = new Map<Target, RunFigures>();
    for (const target of order) figures.set(target, await run(target));
    const offFigures = figures.get(off)!;
    const onFigures = figures.get(on)!;
    offSeries.add(offFigures);
    onSeries.add(onFigures);
    throughputRatios.push(onFigures.perSecond / offFigures.perSecond);
    cpuRatios.push(onFigures.nodeCpuMicrosPerOp / offFigures.nodeCpuMicrosPerOp);
    clientCpuRatios.push(onFigures.clientCpuMicrosPerOp / offFigures.clientCpuMicrosPerOp);
  }
  offSeries.print(`${name}, ${off.label}`, unit);
  onSeries.print(`${name}, ${on.label}`, unit);
  process.stdout.write(`${`  throughput ${on.label} / ${off.label}`.padEnd(34)} ${formatSummary(summarize(throughputRatios), 'x')}\n`);
  process.stdout.write(`${'  node CPU per op, ratio'.padEnd(34)} ${formatSummary(summarize(cpuRatios), 'x')}\n`);
  process.stdout.write(`${'  load generator CPU per op, ratio'.padEnd(34)} ${formatSummary(summarize(clientCpuRatios), 'x')}\n`);
}

/** Starts a node with `features`, and fills its keyspace once so that GETs hit and PUTs update existing keys. */
async function startTarget(features: Features): Promise<Target> {
  const profile = process.env.BENCH_NODE_PROFILE;
  const extraNodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');
  const node = await startNodeProcess([...(features.tls?.args ?? []), ...(features.sign ? [] : ['--unsigned'])], undefined, {
    auth: features.auth,
    nodeArgs: [...extraNodeArgs, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [])],
  });
  if (extraNodeArgs.length > 0) process.stdout.write(`node ${featureLabel(features)} pid ${node.pid}\n`);
  const ca = features.tls?.ca;
  const authorization = features.auth ? await benchToken(node, 'bench', ['read:bench/', 'write:bench/', 'read:txn/', 'write:txn/'], ca) : undefined;
  const loader = new RawHttpConnection(node.host, node.port, ca, authorization);
  for (let start = 0; start < KEYSPACE; start += 1000) {
    const success = Array.from({ length: 1000 }, (_, i) => ({ op: 'put', key: `bench/${start + i}`, value: VALUE.toString('latin1') }));
    expectOk((await loader.request('POST', '/v1/txn', Buffer.from(JSON.stringify({ success })), 'application/json')).status, 'load');
  }
  const answer = ONLY.has('bare-get') ? (await loader.request('GET', '/v1/kv/bench/0')).body : undefined;
  loader.close();
  const bare = answer === undefined ? undefined : await startBareServer(features, answer);
  return { label: featureLabel(features), node, ca, authorization, bare };
}

const WORKLOADS: readonly { readonly id: string; readonly name: string; readonly unit: string; readonly run: (target: Target) => Promise<RunFigures> }[] = [
  { id: 'put', name: 'HTTP PUT (durable, 1 key)', unit: 'puts/s', run: putRun },
  { id: 'txn', name: `HTTP POST /v1/txn (${TXN_OPS} ops)`, unit: 'keys/s', run: txnRun },
  { id: 'get', name: 'HTTP GET', unit: 'gets/s', run: getRun },
  { id: 'wire-put', name: 'wire PUT (durable, 1 key)', unit: 'puts/s', run: wirePutRun },
  { id: 'wire-get', name: 'wire GET', unit: 'gets/s', run: wireGetRun },
  { id: 'bare-get', name: 'bare node:http GET (no Mercury)', unit: 'gets/s', run: bareGetRun },
];

async function main(): Promise<void> {
  const features: Features = { tls: TLS_DIR === undefined ? undefined : benchTls(TLS_DIR), auth: values.auth, sign: values.sign };
  process.stdout.write(
    `mercury bench: ${RUNS} runs x ${SECONDS} s, ${CLIENTS} clients, ${VALUE.length} B values, ${values.compare ? `${featureLabel(features)} against off, alternating` : `TLS ${features.tls === undefined ? 'off' : 'on'}, auth ${features.auth ? 'required' : 'off'}, signing ${features.sign ? 'on' : 'off'}`}, node ${process.version}\n`,
  );
  const targets: Target[] = [];
  try {
    const target = await startTarget(features);
    targets.push(target);
    if (values.compare) {
      const off = await startTarget(OFF);
      targets.push(off);
      for (const workload of WORKLOADS) if (ONLY.has(workload.id)) await compare(workload.name, workload.unit, off, target, workload.run);
      return;
    }
    for (const workload of WORKLOADS) if (ONLY.has(workload.id)) await repeat(workload.name, workload.unit, () => workload.run(target));
    if (!ONLY.has('local')) return;
    const store = Store.open({ path: target.node.dataDir, readOnly: true });
    try {
      await repeat('in-process Store.get', 'gets/s', () => inProcessGetRun(store));
    } finally {
      await store.close();
    }
  } finally {
    for (const target of targets) {
      target.bare?.stop();
      await target.node.stop();
    }
    if (TLS_DIR !== undefined) rmSync(TLS_DIR, { recursive: true, force: true });
  }
}

await main();
