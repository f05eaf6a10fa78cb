/**
 * `npm run bench:replica-apply`: a replica's CPU per applied entry, each replica a `mercury serve` process of its own.
 *
 * propagation-bench hosts ~125 replicas per process and its hosts answer the driver over IPC for every seq; with one
 * replica per host that IPC message is about a third of the host's busy time (writeUtf8String in a profile), and with
 * many the LMDB environments of one process slow each other and share its wake-ups (performance.md, "Replica CPU per
 * applied entry" and "A replica's per-entry JavaScript, profiled"). Here the replicas are plain `mercury serve
 * --upstream ROOT` processes and their CPU comes from /proc/PID/stat (user + sys, in 10 ms ticks), so the figure is a
 * replica's own: receive, verify, forward (to no one here), write, hooks.
 *
 * One root (`mercury serve`, --unsigned unless --sign), --replicas replicas of it. Per run: --writes single-key PUTs
 * of 256 bytes on the root, paced at --rate per second at most from one connection (each waits for its durable PUT; keys cycle over 100), then a wait until
 * every replica's /v1/status reports the last seq. Figure per run: the replicas' CPU during the run divided by
 * (writes x replicas), and the same minus the idle CPU (measured once before the runs, 3 s with no writes) for the
 * run's duration. One unrecorded warm-up run first. Medians and spread over --runs.
 *
 * Profiling: BENCH_REPLICA_PROFILE=DIR runs every replica under `--cpu-prof` into DIR (summarise with
 * `node dist/bench/profile-summary.js FILE`). BENCH_REPLICA_NODE_ARGS='--perf-basic-prof ...' passes node options to
 * every replica and prints their pids, for `perf record -p PID` (V8's builtins and runtime functions by name, which a
 * `--cpu-prof` profile folds into the JavaScript that called them).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RawHttpConnection } from './support/raw-http.js';
import { startNodeProcess, type NodeProcess } from './support/node-process.js';
import { formatNumber, formatSummary, summarize } from './support/stats.js';
import { positiveInteger, readOptions } from './support/options.js';

const { values } = readOptions('bench:replica-apply', () => parseArgs({
  options: {
    replicas: { type: 'string', default: '2' },
    writes: { type: 'string', default: '3000' },
    rate: { type: 'string', default: '300' },
    runs: { type: 'string', default: '3' },
    sign: { type: 'boolean', default: false },
  },
}));
const { REPLICAS, WRITES, RATE, RUNS } = readOptions('bench:replica-apply', () => ({
  REPLICAS: positiveInteger('replicas', values.replicas, 64),
  WRITES: positiveInteger('writes', values.writes),
  RATE: positiveInteger('rate', values.rate, 100_000),
  RUNS: positiveInteger('runs', values.runs),
}));
const WARMUP_WRITES = 500;
const IDLE_SAMPLE_MS = 3_000;
const CATCH_UP_TIMEOUT_MS = 60_000;
const VALUE = Buffer.alloc(256, 'v');
/** Clock ticks per second of /proc/PID/stat's utime and stime (USER_HZ, 100 on every Linux Node supports). */
const CLOCK_TICKS_PER_SECOND = 100;

function monotonicNowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** User + system CPU of a process so far, from /proc (fields 14 and 15, counted after the command's closing paren). */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}

function replicasCpuMs(replicas: readonly NodeProcess[]): number {
  return replicas.reduce((sum, replica) => sum + processCpuMs(replica.pid), 0);
}

/** A node's seq, on a connection of its own for each poll (a kept one would outlive the node's keep-alive timeout). */
async function statusSeq(node: NodeProcess): Promise<number> {
  const connection = new RawHttpConnection(node.host, node.port);
  try {
    return (JSON.parse((await connection.request('GET', '/v1/status')).body.toString()) as { seq: number }).seq;
  } finally {
    connection.close();
  }
}

/** Polls every replica until it reports `seq`; the polls are few (every 50 ms, after the writes) and cost little CPU. */
async function waitAll(replicas: readonly NodeProcess[], seq: number): Promise<void> {
  const deadline = monotonicNowMs() + CATCH_UP_TIMEOUT_MS;
  for (const replica of replicas) {
    while ((await statusSeq(replica)) < seq) {
      if (monotonicNowMs() > deadline) throw new Error(`a replica did not reach seq ${seq} within ${CATCH_UP_TIMEOUT_MS} ms`);
      await sleep(50);
    }
  }
}

/** Paced PUTs on the root; returns the last seq written. */
async function writeRun(root: RawHttpConnection, writes: number, rate: number): Promise<number> {
  const intervalMs = 1000 / rate;
  let next = monotonicNowMs();
  let seq = 0;
  for (let i = 0; i < writes; i++) {
    next += intervalMs;
    const response = await root.request('PUT', `/v1/kv/apply-${i % 100}`, VALUE);
    if (response.status !== 200) throw new Error(`PUT answered ${response.status}: ${response.body.toString()}`);
    seq = (JSON.parse(response.body.toString()) as { seq: number }).seq;
    const wait = next - monotonicNowMs();
    if (wait > 0) await sleep(wait);
  }
  return seq;
}

async function main(): Promise<void> {
  const profileDir = process.env.BENCH_REPLICA_PROFILE;
  const extraNodeArgs = (process.env.BENCH_REPLICA_NODE_ARGS ?? '').split(' ').filter((arg) => arg !== '');
  const root = await startNodeProcess(['--replication-listen', '127.0.0.1:0', ...(values.sign ? [] : ['--unsigned'])], undefined, { quiet: true });
  const replicas: NodeProcess[] = [];
  const rootConnection = new RawHttpConnection(root.host, root.port);
  try {
    const trustArgs = values.sign ? ['--trust-key', join(root.dataDir, 'signing-key.pub.pem')] : [];
    for (let i = 0; i < REPLICAS; i++) {
      const replica = await startNodeProcess(['--upstream', root.replication!, ...trustArgs], undefined, {
        quiet: true,
        nodeArgs: [...extraNodeArgs, ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`])],
      });
      replicas.push(replica);
      if (extraNodeArgs.length > 0) process.stdout.write(`replica ${i} pid ${replica.pid}\n`);
    }
    process.stdout.write(`replica-apply: ${REPLICAS} replica process(es), ${WRITES} writes per run at ${RATE}/s, ${RUNS} runs${values.sign ? ', signed' : ''}\n`);
    await waitAll(replicas, await writeRun(rootConnection, WARMUP_WRITES, RATE));

    const idleStartMs = monotonicNowMs();
    const idleCpuBefore = replicasCpuMs(replicas);
    await sleep(IDLE_SAMPLE_MS);
    const idleCpuMsPerReplicaSecond = (replicasCpuMs(replicas) - idleCpuBefore) / REPLICAS / ((monotonicNowMs() - idleStartMs) / 1000);
    process.stdout.write(`  idle: ${formatNumber(idleCpuMsPerReplicaSecond * 1000)} µs of CPU per replica per second\n`);

    const perEntry: number[] = [];
    const perEntryNet: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const startMs = monotonicNowMs();
      const cpuBefore = replicasCpuMs(replicas);
      await waitAll(replicas, await writeRun(rootConnection, WRITES, RATE));
      const cpuMs = replicasCpuMs(replicas) - cpuBefore;
      const seconds = (monotonicNowMs() - startMs) / 1000;
      const us = (cpuMs * 1000) / (WRITES * REPLICAS);
      const netUs = ((cpuMs - idleCpuMsPerReplicaSecond * REPLICAS * seconds) * 1000) / (WRITES * REPLICAS);
      perEntry.push(us);
      perEntryNet.push(netUs);
      process.stdout.write(`  run ${run + 1}: ${formatNumber(us)} µs of replica CPU per applied entry (${formatNumber(netUs)} net of idle), ${formatNumber(seconds)} s\n`);
    }
    process.stdout.write(`  replica CPU per applied entry: ${formatSummary(summarize(perEntry), 'µs')}\n`);
    process.stdout.write(`  net of idle: ${formatSummary(summarize(perEntryNet), 'µs')}\n`);
  } finally {
    rootConnection.close();
    await Promise.all(replicas.map((replica) => replica.stop()));
    await root.stop();
  }
}

await main();
