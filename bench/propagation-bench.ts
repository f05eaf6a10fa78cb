/**
 * `npm run bench:propagation`: how fast a write reaches every replica of a tree, and how much write load a tree absorbs.
 *
 * The root is a `mercury serve` process; the replicas run in worker processes (bench/support/replica-host.ts), many
 * per process (default 8 processes: with 4, 250 LMDB environments per process made each transaction twice as
 * expensive and p50 went from ~70 to ~135 ms), each with its own data directory, HTTP and replication ports, connected over real TCP on loopback.
 * The tree is filled level by level with the given fan-out; each replica lists its parent and then its grandparent
 * (and, with --sign, the root last: see below).
 *
 * 1. Latency (default 1,000 replicas): PUTs on the root, one every --interval-ms; per write, the time from the
 *    root's acknowledgement (measured by the client) until the last replica applied it. p50, p99 and max per run,
 *    median and spread over --runs, after one unrecorded warm-up run of 20 writes. CPU time of the replica processes
 *    per applied entry, and, measured once before the runs, their CPU per replica per second with nothing written
 *    (heartbeats, keep-alive ACKs, timers): at one write per --interval-ms, the per-entry figure carries that much
 *    idle cost divided by the writes per second.
 * 2. Sustained (default 100 replicas): --clients concurrent PUT loops on the root for --sustain-seconds; the root's
 *    acknowledged writes/s and log entries/s, the lag sampled every 250 ms, and how long the tree needs after the
 *    load stops to apply the last entry everywhere (drain). A tree that absorbs the load has a drain time near zero
 *    and a lag that does not grow from the first half of the run to the second.
 *
 * With --tls every node serves TLS (replication is mutual TLS, the load generator's connections are TLS), with a
 * certificate made for the run: the cost of TLS, on versus off.
 *
 * Times come from CLOCK_MONOTONIC (process.hrtime), which all processes on the host share.
 *
 * Profiling: BENCH_HOST_PROFILE=DIR runs every replica host under `--cpu-prof` and writes its profile into DIR when
 * it exits (the root is not profiled).
 *
 * --auth: every node runs with auth required; the replicas present a `replicate` token in HELLO and the writes carry
 * a write token, so the figures include token checks (compare with a run without it).
 * --sign: the root signs every entry and every replica verifies (`--trust-key`, the root's public key); without it
 * the root runs `--unsigned` and replicas trust their upstreams, so that the two runs show what signing costs.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { HostReply, HostRequest, HostedNodeSpec } from './support/replica-host.js';
import { RawHttpConnection } from './support/raw-http.js';
import { benchToken, startNodeProcess, type NodeProcess } from './support/node-process.js';
import { formatNumber, formatSummary, quantile, summarize } from './support/stats.js';
import { positiveInteger, readOptions, UsageError } from './support/options.js';
import { benchTls, type BenchTls } from './support/tls.js';

const { values } = readOptions('bench:propagation', () => parseArgs({
  options: {
    replicas: { type: 'string', default: '1000' },
    fanout: { type: 'string', default: '10' },
    workers: { type: 'string', default: '8' },
    writes: { type: 'string', default: '100' },
    'interval-ms': { type: 'string', default: '200' },
    runs: { type: 'string', default: '3' },
    'sustain-replicas': { type: 'string', default: '100' },
    'sustain-seconds': { type: 'string', default: '5' },
    'sustain-runs': { type: 'string', default: '3' },
    clients: { type: 'string', default: '64' },
    skip: { type: 'string', default: '' },
    tls: { type: 'boolean', default: false },
    auth: { type: 'boolean', default: false },
    sign: { type: 'boolean', default: false },
  },
}));
const { REPLICAS, FANOUT, WORKERS, WRITES, INTERVAL_MS, RUNS, SUSTAIN_REPLICAS, SUSTAIN_SECONDS, SUSTAIN_RUNS, CLIENTS, SKIP } = readOptions('bench:propagation', () => {
  /** --skip latency,sustained: the phases not to run. */
  const skip = new Set(values.skip.split(',').filter((name) => name !== ''));
  for (const name of skip) if (name !== 'latency' && name !== 'sustained') throw new UsageError(`--skip takes latency and sustained, got "${name}"`);
  return {
    REPLICAS: positiveInteger('replicas', values.replicas),
    FANOUT: positiveInteger('fanout', values.fanout),
    WORKERS: positiveInteger('workers', values.workers),
    WRITES: positiveInteger('writes', values.writes),
    INTERVAL_MS: positiveInteger('interval-ms', values['interval-ms']),
    RUNS: positiveInteger('runs', values.runs),
    SUSTAIN_REPLICAS: positiveInteger('sustain-replicas', values['sustain-replicas']),
    SUSTAIN_SECONDS: positiveInteger('sustain-seconds', values['sustain-seconds']),
    SUSTAIN_RUNS: positiveInteger('sustain-runs', values['sustain-runs']),
    CLIENTS: positiveInteger('clients', values.clients),
    SKIP: skip,
  };
});
const TLS_DIR = values.tls ? mkdtempSync(join(tmpdir(), 'mercury-propagation-tls-')) : undefined;
const TLS: BenchTls | undefined = TLS_DIR === undefined ? undefined : benchTls(TLS_DIR);
/** --auth: the root and every replica run with auth required; replicas present a replicate token, writes a write token. */
const AUTH = values.auth;
const HOST_PATH = fileURLToPath(new URL('./support/replica-host.js', import.meta.url));
const VALUE = Buffer.alloc(256, 'v');

/** The Authorization header of every request to the root (set by buildTree with --auth). */
let authorization: string | undefined;

/** Every process this benchmark started, so that a stalled run can stop them all. */
const children = new Set<ChildProcess>();

function monotonicNowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One worker process hosting replicas, with a request/reply helper over IPC. */
class Host {
  readonly child: ChildProcess;
  /** Per seq, when every replica in this host had applied it. */
  readonly allAt = new Map<number, number>();
  private readonly replyWaiters: { type: HostReply['type']; resolve: (reply: HostReply) => void }[] = [];

  constructor() {
    this.child = fork(HOST_PATH, [], { execArgv: process.env.BENCH_HOST_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_HOST_PROFILE}`] : [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(this.child);
    this.child.on('message', (reply: HostReply) => {
      if (reply.type === 'all') {
        this.allAt.set(reply.seq, reply.atMs);
        return;
      }
      const index = this.replyWaiters.findIndex((waiter) => waiter.type === reply.type);
      if (index >= 0) this.replyWaiters.splice(index, 1)[0]!.resolve(reply);
    });
  }

  ask<T extends HostReply['type']>(request: HostRequest, replyType: T): Promise<Extract<HostReply, { type: T }>> {
    return new Promise((resolve) => {
      this.replyWaiters.push({ type: replyType, resolve: resolve as (reply: HostReply) => void });
      this.child.send(request);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.send({ type: 'stop' } satisfies HostRequest);
    await exited;
  }
}

interface Tree {
  readonly root: NodeProcess;
  readonly hosts: Host[];
  readonly dir: string;
  readonly replicas: number;
}

/** Builds the tree level by level, waiting for each level to hold the dataset before its children connect. */
async function buildTree(replicas: number, fanout: number, workers: number): Promise<Tree> {
  const dir = mkdtempSync(join(tmpdir(), 'mercury-propagation-'));
  const root = await startNodeProcess(['--replication-listen', '127.0.0.1:0', ...(TLS?.args ?? []), ...(values.sign ? [] : ['--unsigned'])], join(dir, 'root'), { auth: AUTH });
  // The root generated its key into its data directory at start; every replica verifies with its public half.
  const trustKeyFile = values.sign ? join(dir, 'root', 'signing-key.pub.pem') : undefined;
  children.add(root.child);
  let replicationToken: string | undefined;
  if (AUTH) {
    authorization = await benchToken(root, 'bench-writer', ['read:', 'write:'], TLS?.ca);
    replicationToken = (await benchToken(root, 'bench-replicas', ['replicate'], TLS?.ca)).slice('Bearer '.length);
  }
  // One write so that seq 1 exists and every replica's first snapshot is not empty.
  const connection = new RawHttpConnection(root.host, root.port, TLS?.ca, authorization);
  await connection.request('PUT', '/v1/kv/bench-start', VALUE);
  connection.close();
  const hosts = Array.from({ length: Math.min(workers, replicas) }, () => new Host());
  // Node 0 is the root; node i > 0 has parent floor((i - 1) / fanout).
  const addresses = new Map<number, string>([[0, root.replication!]]);
  let levelStart = 1;
  let levelSize = fanout;
  while (levelStart <= replicas) {
    const levelEnd = Math.min(replicas, levelStart + levelSize - 1);
    const perHost = hosts.map((): HostedNodeSpec[] => []);
    for (let id = levelStart; id <= levelEnd; id++) {
      const parent = Math.floor((id - 1) / fanout);
      const upstreams = [addresses.get(parent)!];
      if (parent !== 0) upstreams.push(addresses.get(Math.floor((parent - 1) / fanout))!);
      // A verifying replica joins with a snapshot signed by the root, which no relay can make (decision record 25):
      // with --sign the root comes last, where a fresh replica fails over to it once its relays refuse.
      if (values.sign && !upstreams.includes(root.replication!)) upstreams.push(root.replication!);
      perHost[id % hosts.length]!.push({ id, upstreams });
    }
    const busy = hosts.filter((_, i) => perHost[i]!.length > 0);
    const started = await Promise.all(
      busy.map((host) => host.ask({ type: 'start', dir, nodes: perHost[hosts.indexOf(host)]!, tls: TLS?.paths, replicationToken, trustKeyFile }, 'started')),
    );
    for (const reply of started) for (const node of reply.nodes) addresses.set(node.id, node.replication);
    await Promise.all(hosts.map((host) => host.ask({ type: 'waitSeq', seq: 1 }, 'reached')));
    process.stdout.write(`  level with replicas ${levelStart}..${levelEnd} joined\n`);
    levelStart = levelEnd + 1;
    levelSize *= fanout;
  }
  return { root, hosts, dir, replicas };
}

async function destroyTree(tree: Tree): Promise<void> {
  await Promise.all(tree.hosts.map((host) => host.stop()));
  await tree.root.stop();
  rmSync(tree.dir, { recursive: true, force: true });
}

async function hostsCpuMs(hosts: readonly Host[]): Promise<number> {
  const usages = await Promise.all(hosts.map((host) => host.ask({ type: 'usage' }, 'usage')));
  return usages.reduce((sum, usage) => sum + usage.cpuMs, 0);
}

async function waitAll(hosts: readonly Host[], seq: number, timeoutMs: number): Promise<boolean> {
  const deadline = monotonicNowMs() + timeoutMs;
  while (monotonicNowMs() < deadline) {
    if (hosts.every((host) => host.allAt.has(seq))) return true;
    await sleep(20);
  }
  return false;
}

/** How long the latency phase samples the tree's CPU with no writes. */
const IDLE_SAMPLE_MS = 3_000;

/** Replica CPU per replica per second while nothing is written. */
async function idleCpuPerReplicaSecondUs(tree: Tree, sampleMs: number): Promise<number> {
  const cpuBefore = await hostsCpuMs(tree.hosts);
  const started = monotonicNowMs();
  await sleep(sampleMs);
  const cpuMs = (await hostsCpuMs(tree.hosts)) - cpuBefore;
  return (cpuMs * 1000) / (tree.replicas * ((monotonicNowMs() - started) / 1000));
}

/** Phase 1: writes one at a time at a steady rate; per write, ack -> applied on every replica. */
async function latencyRun(tree: Tree, writes: number, intervalMs: number): Promise<{ latencies: number[]; cpuPerEntryUs: number; missing: number }> {
  const connection = new RawHttpConnection(tree.root.host, tree.root.port, TLS?.ca, authorization);
  const acks: { seq: number; ackMs: number }[] = [];
  const cpuBefore = await hostsCpuMs(tree.hosts);
  let next = monotonicNowMs();
  for (let i = 0; i < writes; i++) {
    next += intervalMs;
    const response = await connection.request('PUT', `/v1/kv/latency-${i % 100}`, VALUE);
    const ackMs = monotonicNowMs();
    if (response.status !== 200) throw new Error(`PUT answered ${response.status}: ${response.body.toString()}`);
    acks.push({ seq: (JSON.parse(response.body.toString()) as { seq: number }).seq, ackMs });
    const wait = next - monotonicNowMs();
    if (wait > 0) await sleep(wait);
  }
  connection.close();
  await waitAll(tree.hosts, acks[acks.length - 1]!.seq, 30_000);
  const cpuMs = (await hostsCpuMs(tree.hosts)) - cpuBefore;
  const latencies: number[] = [];
  let missing = 0;
  for (const { seq, ackMs } of acks) {
    const times = tree.hosts.map((host) => host.allAt.get(seq));
    if (times.some((time) => time === undefined)) missing++;
    else latencies.push(Math.max(...(times as number[])) - ackMs);
  }
  return { latencies, cpuPerEntryUs: (cpuMs * 1000) / (writes * tree.replicas), missing };
}

/** Phase 2: closed-loop load on the root; the tree's lag meanwhile and its drain time afterwards. */
async function sustainedRun(tree: Tree, clients: number, seconds: number): Promise<{ writesPerSecond: number; entriesPerSecond: number; drainMs: number; lagFirstHalf: number; lagSecondHalf: number; cpuPerEntryUs: number }> {
  let statusConnection = new RawHttpConnection(tree.root.host, tree.root.port, TLS?.ca, authorization);
  const rootSeq = async (): Promise<number> => {
    // The sampler may wait longer than the root's keep-alive timeout for busy hosts: reconnect if it closed.
    if (!statusConnection.isOpen) statusConnection = new RawHttpConnection(tree.root.host, tree.root.port, TLS?.ca, authorization);
    return (JSON.parse((await statusConnection.request('GET', '/v1/status')).body.toString()) as { seq: number }).seq;
  };
  const seqBefore = await rootSeq();
  const cpuBefore = await hostsCpuMs(tree.hosts);
  const connections = Array.from({ length: clients }, () => new RawHttpConnection(tree.root.host, tree.root.port, TLS?.ca, authorization));
  const started = monotonicNowMs();
  const deadline = started + seconds * 1000;
  let writes = 0;
  const lags: { atMs: number; entries: number }[] = [];
  const sampler = (async () => {
    while (monotonicNowMs() < deadline) {
      await sleep(250);
      const [seq, usages] = await Promise.all([rootSeq(), Promise.all(tree.hosts.map((host) => host.ask({ type: 'usage' }, 'usage')))]);
      lags.push({ atMs: monotonicNowMs() - started, entries: seq - Math.min(...usages.filter((usage) => usage.minSeq >= 0).map((usage) => usage.minSeq)) });
    }
  })();
  await Promise.all(
    connections.map(async (connection, client) => {
      for (let i = 0; monotonicNowMs() < deadline; i++) {
        const response = await connection.request('PUT', `/v1/kv/sustain-${client}-${i % 100}`, VALUE);
        if (response.status !== 200) throw new Error(`PUT answered ${response.status}`);
        writes++;
      }
    }),
  );
  const loadEndMs = monotonicNowMs();
  const elapsedSeconds = (loadEndMs - started) / 1000;
  await sampler;
  const seqAfter = await rootSeq();
  await Promise.all(tree.hosts.map((host) => host.ask({ type: 'waitSeq', seq: seqAfter }, 'reached')));
  const drainMs = monotonicNowMs() - loadEndMs;
  const cpuMs = (await hostsCpuMs(tree.hosts)) - cpuBefore;
  for (const connection of connections) connection.close();
  statusConnection.close();
  const half = (seconds * 1000) / 2;
  const meanLag = (samples: typeof lags): number => (samples.length === 0 ? 0 : samples.reduce((sum, sample) => sum + sample.entries, 0) / samples.length);
  return {
    writesPerSecond: writes / elapsedSeconds,
    entriesPerSecond: (seqAfter - seqBefore) / elapsedSeconds,
    drainMs,
    lagFirstHalf: meanLag(lags.filter((sample) => sample.atMs < half)),
    lagSecondHalf: meanLag(lags.filter((sample) => sample.atMs >= half)),
    cpuPerEntryUs: (cpuMs * 1000) / ((seqAfter - seqBefore) * tree.replicas),
  };
}

async function main(): Promise<void> {
  const fanout = FANOUT;
  const workers = WORKERS;
  const skip = SKIP;
  if (!skip.has('latency')) {
    const replicas = REPLICAS;
    process.stdout.write(
      `Propagation latency: ${replicas} replicas, fan-out ${fanout}, ${workers} worker processes, ${WRITES} writes per run every ${INTERVAL_MS} ms, TLS ${TLS === undefined ? 'off' : 'on'}\n`,
    );
    const buildStarted = monotonicNowMs();
    const tree = await buildTree(replicas, fanout, workers);
    process.stdout.write(`  tree built in ${formatNumber((monotonicNowMs() - buildStarted) / 1000)} s\n`);
    try {
      // One unrecorded warm-up run: the first writes through a fresh tree pay for JIT compilation in every process.
      await latencyRun(tree, Math.min(20, WRITES), INTERVAL_MS);
      // What the tree costs with nothing written (heartbeats, keep-alive ACKs, timers): the per-entry figure below
      // includes this much per replica-second, spread over the writes of each second.
      const idleUs = await idleCpuPerReplicaSecondUs(tree, IDLE_SAMPLE_MS);
      process.stdout.write(`  idle: ${formatNumber(idleUs)} µs of replica CPU per replica per second (${IDLE_SAMPLE_MS / 1000} s with no writes)\n`);
      const p50s: number[] = [];
      const p99s: number[] = [];
      const maxes: number[] = [];
      const cpus: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        const result = await latencyRun(tree, WRITES, INTERVAL_MS);
        const p50 = quantile(result.latencies, 0.5);
        const p99 = quantile(result.latencies, 0.99);
        const max = Math.max(...result.latencies);
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(max);
        cpus.push(result.cpuPerEntryUs);
        process.stdout.write(
          `  run ${run + 1}: p50 ${formatNumber(p50)} ms, p99 ${formatNumber(p99)} ms, max ${formatNumber(max)} ms, CPU ${formatNumber(result.cpuPerEntryUs)} µs per applied entry${result.missing > 0 ? `, ${result.missing} writes never reached every replica` : ''}\n`,
        );
      }
      process.stdout.write(`  time to all ${replicas} replicas, p50: ${formatSummary(summarize(p50s), 'ms')}\n`);
      process.stdout.write(`  time to all ${replicas} replicas, p99: ${formatSummary(summarize(p99s), 'ms')}\n`);
      process.stdout.write(`  time to all ${replicas} replicas, max: ${formatSummary(summarize(maxes), 'ms')}\n`);
      process.stdout.write(`  replica CPU per applied entry: ${formatSummary(summarize(cpus), 'µs')}\n`);
    } finally {
      await destroyTree(tree);
    }
  }
  if (!skip.has('sustained')) {
    const replicas = SUSTAIN_REPLICAS;
    const clients = CLIENTS;
    const seconds = SUSTAIN_SECONDS;
    process.stdout.write(`Sustained load: ${replicas} replicas, fan-out ${fanout}, ${clients} concurrent PUT clients on the root for ${seconds} s\n`);
    const tree = await buildTree(replicas, fanout, workers);
    try {
      const results = [];
      for (let run = 0; run < SUSTAIN_RUNS; run++) {
        const result = await sustainedRun(tree, clients, seconds);
        results.push(result);
        process.stdout.write(
          `  run ${run + 1}: ${formatNumber(result.writesPerSecond)} writes/s in ${formatNumber(result.entriesPerSecond)} entries/s; lag ${formatNumber(result.lagFirstHalf)} -> ${formatNumber(result.lagSecondHalf)} entries (first -> second half); drain ${formatNumber(result.drainMs)} ms; CPU ${formatNumber(result.cpuPerEntryUs)} µs per applied entry\n`,
        );
      }
      process.stdout.write(`  writes/s absorbed: ${formatSummary(summarize(results.map((result) => result.writesPerSecond)), '/s')}\n`);
      process.stdout.write(`  entries/s absorbed: ${formatSummary(summarize(results.map((result) => result.entriesPerSecond)), '/s')}\n`);
      process.stdout.write(`  drain after load: ${formatSummary(summarize(results.map((result) => result.drainMs)), 'ms')}\n`);
    } finally {
      await destroyTree(tree);
    }
  }
}

// A stalled benchmark must not hang a terminal or a CI job: give up loudly after a bound on the whole run.
const RUN_TIMEOUT_MS = 20 * 60_000;
const watchdog = setTimeout(() => {
  process.stderr.write(`bench:propagation: no result after ${RUN_TIMEOUT_MS / 60_000} minutes; stopping every process it started\n`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(2);
}, RUN_TIMEOUT_MS);
watchdog.unref();
try {
  await main();
} finally {
  if (TLS_DIR !== undefined) rmSync(TLS_DIR, { recursive: true, force: true });
}
