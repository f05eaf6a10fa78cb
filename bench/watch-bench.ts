/**
 * `npm run bench:watch`: how many idle watchers a node holds, what each costs it in memory, and how long a change
 * takes to reach all of them, as median and spread of repeated runs.
 *
 * Single-node mode (default): one `mercury serve` process; N watchers (default 19,000, what the open-files limit of
 * 20,000 leaves room for) connect from client processes of a few thousand sockets each (bench/support/
 * watch-client-process.ts), each watcher one connection with one subscription. Most watchers (`--shared`, default
 * 0.9) watch the shared prefix `cfg/`; the others `cfg/team<i>/` for one of `--teams` teams. Then:
 *
 * 1. Memory per idle watcher: the node's RSS (/proc/PID/status VmRSS, median of several samples after a settle)
 *    with the watchers connected, minus its RSS before they connected, divided by N.
 * 2. Delivery: `--changes` PUTs of `cfg/team<c % teams>/flag` (so each reaches the shared watchers and one team's),
 *    one every `--interval-ms`, each after the previous one's acknowledgement. Every client process stamps each
 *    events message with `performance.timeOrigin + performance.now()` (one clock for the whole host); the parent
 *    subtracts the entry's commit timestamp (its `timeMs`, read back from `GET /v1/log`), the time it received the
 *    PUT's acknowledgement, and the time it sent the PUT. "To all" is the last watcher's time per change; "per
 *    watcher" is every (watcher, change) delivery. The root answers the PUT before it fans the entry out (decision
 *    32), but a PUT sent during a fan-out waits for it, and the acknowledgement's time has no part in when the watchers
 *    get the change: "from the commit" is the figure to read. Also printed: the PUT's round trip, and the node's CPU
 *    time per change (user + system, from /proc), which the machine's other load disturbs less than the latencies.
 *
 * Multi-process mode (`--nodes K`, default 17,000 watchers per node): K node processes. When `mercury serve` accepts
 * `--replication-listen` and `--upstream`, node 0 is the root, the others replicate from it, and changes are written to
 * the root only (times from the root's acknowledgement). Otherwise every node is independent and receives the same
 * PUTs (times from each node's own acknowledgement). The mode that ran is printed.
 *
 * Everything shares the machine's cores with whatever else runs: the load average is printed with the figures.
 *
 * Options: --watchers N, --nodes K, --runs R (default 3), --changes C (default 300), --interval-ms T (default 50),
 * --shared F, --teams M (default 10), --watchers-per-process W (default 3000), --value-bytes B (default 64),
 * --replicas (require replication; fail instead of falling back), --heapsnapshot (the node writes a heap snapshot
 * on SIGUSR2 once the watchers are idle, into the current directory), --node-arg ARG (repeatable: an option for the
 * node processes, e.g. --node-arg=--cpu-prof).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HTTP_CONNECTIONS_MAX } from '../src/limits.js';
import { startNodeProcess, type NodeProcess } from './support/node-process.js';
import { numberWithin, positiveInteger, readOptions } from './support/options.js';
import { RawHttpConnection } from './support/raw-http.js';
import { formatSummary, quantileOfSorted, summarize } from './support/stats.js';
import type { FromClient, ToClient, WatcherSpec } from './support/watch-client-process.js';

const values = readOptions('bench:watch', () => parseArgs({
  options: {
    watchers: { type: 'string' },
    nodes: { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    changes: { type: 'string', default: '300' },
    'interval-ms': { type: 'string', default: '50' },
    shared: { type: 'string', default: '0.9' },
    teams: { type: 'string', default: '10' },
    'watchers-per-process': { type: 'string', default: '3000' },
    'value-bytes': { type: 'string', default: '64' },
    replicas: { type: 'boolean', default: false },
    heapsnapshot: { type: 'boolean', default: false },
    'node-arg': { type: 'string', multiple: true, default: [] },
  },
}).values);

const { NODES, WATCHERS, RUNS, CHANGES, INTERVAL_MS, SHARED_FRACTION, TEAMS, WATCHERS_PER_PROCESS, VALUE_BYTES } = readOptions('bench:watch', () => {
  const nodes = positiveInteger('nodes', values.nodes ?? '', 64);
  return {
    NODES: nodes,
    WATCHERS: positiveInteger('watchers', values.watchers ?? String(nodes === 1 ? 19_000 : 17_000 * nodes)),
    RUNS: positiveInteger('runs', values.runs, 1000),
    CHANGES: positiveInteger('changes', values.changes),
    INTERVAL_MS: positiveInteger('interval-ms', values['interval-ms']),
    SHARED_FRACTION: numberWithin('shared', values.shared, 0, 1),
    TEAMS: positiveInteger('teams', values.teams),
    WATCHERS_PER_PROCESS: positiveInteger('watchers-per-process', values['watchers-per-process']),
    VALUE_BYTES: positiveInteger('value-bytes', values['value-bytes'], 1024 * 1024),
  };
});
const VALUE = Buffer.alloc(VALUE_BYTES, 'v');
/** Changes before the measured ones, so that the node's and the clients' code is compiled when timing starts. */
const WARMUP_CHANGES = 20;
/** Connection attempts in flight per client process: the node's accept backlog is 511. */
const OPEN_CONCURRENCY = 48;
/** A client process stays well below the open-files limit of 20,000. */
const WATCHERS_PER_PROCESS_MAX = 18_000;
const RSS_SETTLE_MS = 3_000;
const RSS_SAMPLES = 5;
const DRAIN_TIMEOUT_MS = 60_000;

if (!(SHARED_FRACTION >= 0 && SHARED_FRACTION <= 1)) throw new Error('--shared must be a fraction within 0..1');
if (WATCHERS_PER_PROCESS > WATCHERS_PER_PROCESS_MAX) throw new Error(`--watchers-per-process is at most ${WATCHERS_PER_PROCESS_MAX}`);
if (Math.ceil(WATCHERS / NODES) > HTTP_CONNECTIONS_MAX - 10)
  throw new Error(`${Math.ceil(WATCHERS / NODES)} watchers per node: a node takes at most ${HTTP_CONNECTIONS_MAX} connections (HTTP_CONNECTIONS_MAX), the writer's included`);

const CLIENT_PATH = fileURLToPath(new URL('./support/watch-client-process.js', import.meta.url));
const nowMs = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** Progress of a run, on stderr (the figures go to stdout). */
const phase = (text: string): boolean => process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${text}\n`);

// --- Nodes --------------------------------------------------------------------------------------------------------

type Topology = 'single' | 'replicas' | 'independent';

interface Cluster {
  readonly topology: Topology;
  readonly nodes: NodeProcess[];
  stop(): Promise<void>;
}

async function stopAll(nodes: readonly NodeProcess[]): Promise<void> {
  await Promise.all(nodes.map((node) => node.stop()));
}

/** Starts the nodes; in multi-process mode tries replication first (see the header), else independent nodes. */
async function startCluster(): Promise<Cluster> {
  const nodeArgs = [...(values.heapsnapshot ? ['--heapsnapshot-signal=SIGUSR2'] : []), ...values['node-arg']];
  // Every watcher connects from loopback: lift the per-address cap to the whole connection cap.
  const oneAddress = ['--max-connections-per-address', String(HTTP_CONNECTIONS_MAX)];
  if (NODES === 1) {
    const nodes = [await startNodeProcess(oneAddress, undefined, { nodeArgs })];
    return { topology: 'single', nodes, stop: () => stopAll(nodes) };
  }
  let root: NodeProcess | undefined;
  try {
    root = await startNodeProcess([...oneAddress, '--replication-listen', '127.0.0.1:0'], undefined, { nodeArgs, quiet: true });
  } catch (error) {
    if (values.replicas) throw new Error('--replicas: this mercury serve does not take --replication-listen', { cause: error });
  }
  if (root !== undefined && root.replication === undefined) {
    await root.stop();
    if (values.replicas) throw new Error('--replicas: mercury serve took --replication-listen but printed no replication address');
    root = undefined;
  }
  if (root !== undefined) {
    const nodes = [root];
    try {
      for (let i = 1; i < NODES; i++)
        nodes.push(await startNodeProcess([...oneAddress, '--replication-listen', '127.0.0.1:0', '--upstream', root.replication!], undefined, { nodeArgs }));
    } catch (error) {
      await stopAll(nodes);
      throw error;
    }
    return { topology: 'replicas', nodes, stop: () => stopAll(nodes) };
  }
  const nodes: NodeProcess[] = [];
  for (let i = 0; i < NODES; i++) nodes.push(await startNodeProcess(oneAddress, undefined, { nodeArgs }));
  return { topology: 'independent', nodes, stop: () => stopAll(nodes) };
}

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * CPU time the process has used so far (user + system, /proc/PID/stat fields 14 and 15, in clock ticks of 10 ms) and
 * its involuntary context switches (/proc/PID/status): the node's CPU per change is less disturbed by other load on
 * the machine than wall-clock latency, and the switches say how often the clients it wakes preempted it.
 */
function cpuUsage(pid: number): { cpuMs: number; systemMs: number; preempted: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const switches = /nonvoluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  // Fields from the third on (state is field 3): utime is field 14, stime field 15.
  return { cpuMs: (Number(fields[11]) + Number(fields[12])) * 10, systemMs: Number(fields[12]) * 10, preempted: Number(switches?.[1] ?? 0) };
}

/** Median of a few RSS samples, after letting the node settle (no hook to force its GC: it is sampled as it runs). */
async function settledRss(pid: number): Promise<number> {
  await sleep(RSS_SETTLE_MS);
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i++) {
    samples.push(rssBytes(pid));
    await sleep(500);
  }
  return summarize(samples).median;
}

async function status(node: NodeProcess): Promise<{ seq: number }> {
  const connection = new RawHttpConnection(node.host, node.port);
  try {
    const response = await connection.request('GET', '/v1/status');
    return JSON.parse(response.body.toString()) as { seq: number };
  } finally {
    connection.close();
  }
}

/** Waits until every replica has applied the root's seq. */
async function waitForReplicas(cluster: Cluster): Promise<void> {
  if (cluster.topology !== 'replicas') return;
  const target = (await status(cluster.nodes[0]!)).seq;
  const deadline = Date.now() + 30_000;
  for (const node of cluster.nodes.slice(1))
    while ((await status(node)).seq < target) {
      if (Date.now() > deadline) throw new Error(`replica ${node.url} did not reach seq ${target} within 30 s`);
      await sleep(50);
    }
}

// --- Client processes ---------------------------------------------------------------------------------------------

class ClientProcess {
  private readonly child: ChildProcess;
  private waiting: ((message: FromClient) => void) | undefined;

  constructor() {
    this.child = fork(CLIENT_PATH, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (message: FromClient) => {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.(message);
    });
  }

  ask<T extends FromClient['type']>(message: ToClient, answer: T): Promise<Extract<FromClient, { type: T }>> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`watch client process exited with ${code}`));
      this.child.once('exit', onExit);
      this.waiting = (reply) => {
        this.child.off('exit', onExit);
        if (reply.type !== answer) reject(new Error(`expected ${answer} from a client process, got ${reply.type}`));
        else resolve(reply as Extract<FromClient, { type: T }>);
      };
      this.child.send(message);
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || !this.child.connected) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.send({ type: 'close' } satisfies ToClient);
    await exited;
  }
}

/** The prefix of watcher i: the first (1 - shared) of the watchers are spread over the teams, the rest share `cfg/`. */
function teamOf(index: number): number | undefined {
  return index < Math.round(WATCHERS * (1 - SHARED_FRACTION)) ? index % TEAMS : undefined;
}

function prefixOf(index: number): string {
  const team = teamOf(index);
  return team === undefined ? 'cfg/' : `cfg/team${team}/`;
}

// --- One run ------------------------------------------------------------------------------------------------------

interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

interface RunResult {
  readonly idleBytesPerWatcher: number;
  readonly subscribed: number;
  readonly toAllFromCommitMs: Percentiles;
  readonly toAllFromAckMs: Percentiles;
  readonly toAllFromSendMs: Percentiles;
  /** The PUT's round trip (sent to acknowledged; the root's, with replicas): what a writer waits for. */
  readonly putMs: Percentiles;
  readonly perWatcherFromCommitMs: Percentiles;
  readonly perWatcherFromAckMs: Percentiles;
  readonly missing: number;
  readonly closes: number;
  readonly changesPerSecond: number;
  /** The nodes' CPU time (user + system) during the measured changes, per change, summed over the nodes. */
  readonly nodeCpuMsPerChange: number;
  /** Of which in the kernel (system time: the socket writes). */
  readonly nodeSystemMsPerChange: number;
  /** The nodes' involuntary context switches during the measured changes, per change. */
  readonly nodePreemptionsPerChange: number;
  readonly load: string;
}

interface Change {
  readonly team: number;
  sentMs: number;
  /** Per node: the seq of the change and when its acknowledgement arrived (replicas: the root's, for every node). */
  readonly seq: number[];
  readonly ackMs: number[];
  /** Per node: the entry's timestamp (`timeMs`, taken on the root as its commit starts; ms resolution). */
  readonly commitMs: number[];
}

/** Reads the measured entries' timestamps from each node's log (replicas carry the root's). */
async function readCommitTimes(cluster: Cluster, changes: Change[]): Promise<void> {
  for (const [n, node] of cluster.nodes.entries()) {
    const times = new Map<number, number>();
    const connection = new RawHttpConnection(node.host, node.port);
    try {
      for (let from = changes[0]!.seq[n]!; from <= changes[changes.length - 1]!.seq[n]!; ) {
        const response = await connection.request('GET', `/v1/log?from=${from}&limit=1000`);
        const { entries } = JSON.parse(response.body.toString()) as { entries: { seq: number; timeMs: number }[] };
        if (entries.length === 0) throw new Error(`node ${node.url} returned no log entries from seq ${from}`);
        for (const entry of entries) times.set(entry.seq, entry.timeMs);
        from = entries[entries.length - 1]!.seq + 1;
      }
    } finally {
      connection.close();
    }
    for (const change of changes) change.commitMs[n] = times.get(change.seq[n]!)!;
  }
}

function loadText(): string {
  return loadavg()
    .map((load) => load.toFixed(2))
    .join(' ');
}

function percentiles(values: number[] | Float64Array): Percentiles {
  const sorted = Float64Array.from(values).sort();
  return { p50: quantileOfSorted(sorted, 0.5), p99: quantileOfSorted(sorted, 0.99), max: sorted[sorted.length - 1]! };
}

async function writeChanges(cluster: Cluster, count: number, key: (c: number) => string, changes: Change[] | undefined): Promise<void> {
  // Replicas: the root takes the write and the others follow; independent nodes each take the same write. New
  // connections each time: the node closes keep-alive connections idle for 5 s.
  const targets = (cluster.topology === 'replicas' ? cluster.nodes.slice(0, 1) : cluster.nodes).map((node) => new RawHttpConnection(node.host, node.port));
  try {
    await writeEach(cluster, targets, count, key, changes);
  } finally {
    for (const target of targets) target.close();
  }
}

async function writeEach(cluster: Cluster, targets: RawHttpConnection[], count: number, key: (c: number) => string, changes: Change[] | undefined): Promise<void> {
  const started = performance.now();
  for (let c = 0; c < count; c++) {
    const wait = started + c * INTERVAL_MS - performance.now();
    if (wait > 0) await sleep(wait);
    const change: Change = { team: c % TEAMS, sentMs: nowMs(), seq: [], ackMs: [], commitMs: [] };
    await Promise.all(
      targets.map(async (writer, n) => {
        const response = await writer.request('PUT', `/v1/kv/${key(c)}`, VALUE);
        const ackMs = nowMs();
        if (response.status !== 200) throw new Error(`PUT answered HTTP ${response.status}: ${response.body.toString()}`);
        change.seq[n] = (JSON.parse(response.body.toString()) as { seq: number }).seq;
        change.ackMs[n] = ackMs;
      }),
    );
    if (targets.length === 1)
      for (let n = 1; n < cluster.nodes.length; n++) {
        change.seq[n] = change.seq[0]!;
        change.ackMs[n] = change.ackMs[0]!;
      }
    changes?.push(change);
  }
}

async function run(runIndex: number): Promise<RunResult> {
  const cluster = await startCluster();
  const clients: ClientProcess[] = [];
  try {
    if (runIndex === 0) process.stdout.write(`mode: ${describeTopology(cluster.topology)}\n`);
    phase('warm-up writes');
    await writeChanges(cluster, WARMUP_CHANGES, (c) => `warmup/${c}`, undefined);
    await waitForReplicas(cluster);
    phase('node RSS before watchers');
    const rssBefore = await Promise.all(cluster.nodes.map((node) => settledRss(node.pid)));

    // Watchers: watcher i is on node i % K and in client process i % P; each process has its own source address so
    // that the runs never compete for ephemeral ports (or with TIME_WAIT of the run before).
    const processes = Math.ceil(WATCHERS / WATCHERS_PER_PROCESS);
    const specs: WatcherSpec[][] = Array.from({ length: processes }, () => []);
    for (let i = 0; i < WATCHERS; i++) {
      const node = cluster.nodes[i % cluster.nodes.length]!;
      specs[i % processes]!.push({ index: i, url: `ws://${node.host}:${node.port}/v1/watch`, prefix: prefixOf(i) });
    }
    phase(`opening ${WATCHERS} watchers from ${processes} processes`);
    for (let p = 0; p < processes; p++) clients.push(new ClientProcess());
    const opened = await Promise.all(
      clients.map((client, p) =>
        client.ask({ type: 'open', watchers: specs[p]!, localAddress: `127.${1 + (runIndex % 250)}.${p >> 8}.${(p & 255) + 1}`, concurrency: OPEN_CONCURRENCY }, 'opened'),
      ),
    );
    const subscribed = opened.reduce((sum, reply) => sum + reply.subscribed, 0);
    const failed = opened.reduce((sum, reply) => sum + reply.failed, 0);
    if (failed > 0) process.stdout.write(`  run ${runIndex + 1}: ${failed} watchers failed to connect (first: ${opened.find((reply) => reply.firstError)?.firstError})\n`);
    phase(`${subscribed} watchers subscribed; node RSS`);
    const rssAfter = await Promise.all(cluster.nodes.map((node) => settledRss(node.pid)));
    if (values.heapsnapshot) {
      for (const node of cluster.nodes) node.child.kill('SIGUSR2');
      await sleep(20_000);
    }
    const growth = rssAfter.reduce((sum, rss, n) => sum + rss - rssBefore[n]!, 0);

    // Changes.
    phase(`${CHANGES} changes`);
    const changes: Change[] = [];
    const writeStarted = performance.now();
    const cpuBefore = cluster.nodes.map((node) => cpuUsage(node.pid));
    await writeChanges(cluster, CHANGES, (c) => `cfg/team${c % TEAMS}/flag`, changes);
    const changesPerSecond = CHANGES / ((performance.now() - writeStarted) / 1000);
    const load = loadText();

    // Expected deliveries: every subscribed watcher of the change's node whose prefix selects it.
    const watchersOfTeam = new Array<number>(TEAMS).fill(0);
    let shared = 0;
    for (let i = 0; i < WATCHERS; i++) {
      const team = teamOf(i);
      if (team === undefined) shared++;
      else watchersOfTeam[team]!++;
    }
    const expected = changes.reduce((sum, change) => sum + shared + watchersOfTeam[change.team]!, 0) - failed * CHANGES;
    phase('waiting for every delivery');
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    let received = 0;
    do {
      await sleep(200);
      received = (await Promise.all(clients.map((client) => client.ask({ type: 'count' }, 'count')))).reduce((sum, reply) => sum + reply.received, 0);
    } while (received < expected && Date.now() < deadline);
    const cpuAfter = cluster.nodes.map((node) => cpuUsage(node.pid));
    const nodeCpuMs = cpuAfter.reduce((sum, usage, n) => sum + usage.cpuMs - cpuBefore[n]!.cpuMs, 0);
    const nodeSystemMs = cpuAfter.reduce((sum, usage, n) => sum + usage.systemMs - cpuBefore[n]!.systemMs, 0);
    const nodePreemptions = cpuAfter.reduce((sum, usage, n) => sum + usage.preempted - cpuBefore[n]!.preempted, 0);

    // Per change and node: the last arrival; per delivery: its latency from the acknowledgement and from the commit.
    const K = cluster.nodes.length;
    const changeBySeq = cluster.nodes.map(() => new Map<number, number>());
    changes.forEach((change, c) => change.seq.forEach((seq, n) => changeBySeq[n]!.set(seq, c)));
    await readCommitTimes(cluster, changes);
    const lastMs = new Float64Array(CHANGES * K).fill(-Infinity);
    const fromAck: number[] = [];
    const fromCommit: number[] = [];
    let closes = 0;
    let counted = 0;
    for (const client of clients) {
      const records = await client.ask({ type: 'collect' }, 'records');
      closes += records.closes;
      for (let r = 0; r < records.seq.length; r++) {
        const n = records.watcher[r]! % K;
        const c = changeBySeq[n]!.get(records.seq[r]!);
        if (c === undefined) continue; // a warm-up change
        counted++;
        const timeMs = records.timeMs[r]!;
        if (timeMs > lastMs[c * K + n]!) lastMs[c * K + n] = timeMs;
        fromAck.push(timeMs - changes[c]!.ackMs[n]!);
        fromCommit.push(timeMs - changes[c]!.commitMs[n]!);
      }
    }
    // "To all": the latest of the change's nodes (independent nodes each count from their own ack and commit).
    const toAll = (from: (change: Change, n: number) => number): number[] =>
      changes.map((change, c) => Math.max(...cluster.nodes.map((_, n) => lastMs[c * K + n]! - from(change, n))));
    const toAllFromCommit = toAll((change, n) => change.commitMs[n]!);
    const perWatcherFromCommit = percentiles(fromCommit);
    const perWatcherFromAck = percentiles(fromAck);
    return {
      idleBytesPerWatcher: growth / Math.max(1, subscribed),
      subscribed,
      toAllFromCommitMs: percentiles(toAllFromCommit),
      toAllFromAckMs: percentiles(toAll((change, n) => change.ackMs[n]!)),
      toAllFromSendMs: percentiles(toAll((change) => change.sentMs)),
      putMs: percentiles(changes.map((change) => Math.max(...change.ackMs) - change.sentMs)),
      perWatcherFromCommitMs: perWatcherFromCommit,
      perWatcherFromAckMs: perWatcherFromAck,
      missing: expected - counted,
      closes,
      changesPerSecond,
      nodeCpuMsPerChange: nodeCpuMs / CHANGES,
      nodeSystemMsPerChange: nodeSystemMs / CHANGES,
      nodePreemptionsPerChange: nodePreemptions / CHANGES,
      load,
    };
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await cluster.stop();
  }
}

function describeTopology(topology: Topology): string {
  switch (topology) {
    case 'single':
      return 'single node';
    case 'replicas':
      return `${NODES} nodes, node 0 the root and ${NODES - 1} replicas of it; changes written to the root`;
    case 'independent':
      return `${NODES} independent nodes (this mercury serve has no --replication-listen/--upstream), each receiving the same writes`;
  }
}

async function main(): Promise<void> {
  process.stdout.write(
    `mercury watch bench: ${WATCHERS.toLocaleString('en-US')} watchers on ${NODES} node(s) from ${Math.ceil(WATCHERS / WATCHERS_PER_PROCESS)} client processes, ` +
      `${Math.round(SHARED_FRACTION * 100)}% on one prefix, ${CHANGES} changes every ${INTERVAL_MS} ms, ${VALUE.length} B values, ${RUNS} runs, node ${process.version}\n`,
  );
  const results: RunResult[] = [];
  for (let i = 0; i < RUNS; i++) {
    const result = await run(i);
    results.push(result);
    process.stdout.write(
      `  run ${i + 1}: ${result.subscribed} watchers, ${(result.idleBytesPerWatcher / 1024).toFixed(2)} KiB/watcher, to all from commit p50 ${result.toAllFromCommitMs.p50.toFixed(1)} ` +
        `p99 ${result.toAllFromCommitMs.p99.toFixed(1)} max ${result.toAllFromCommitMs.max.toFixed(1)} ms, ${result.changesPerSecond.toFixed(1)} changes/s, ` +
        `node CPU ${result.nodeCpuMsPerChange.toFixed(1)} ms/change (system ${result.nodeSystemMsPerChange.toFixed(1)}, ${result.nodePreemptionsPerChange.toFixed(0)} preemptions/change), ` +
        `missing ${result.missing}, closed ${result.closes}, load ${result.load}\n`,
    );
  }
  const line = (name: string, pick: (result: RunResult) => number, unit: string): void => {
    process.stdout.write(`${name.padEnd(44)} ${formatSummary(summarize(results.map(pick)), unit)}\n`);
  };
  line('node memory per idle watcher', (result) => result.idleBytesPerWatcher / 1024, 'KiB');
  line('node CPU per change (user + system)', (result) => result.nodeCpuMsPerChange, 'ms');
  for (const [from, pick] of [
    ['commit', (result: RunResult) => result.toAllFromCommitMs],
    ['ack', (result: RunResult) => result.toAllFromAckMs],
    ['PUT sent', (result: RunResult) => result.toAllFromSendMs],
  ] as const)
    for (const q of ['p50', 'p99', 'max'] as const) line(`to all watchers ${q} (from ${from})`, (result) => pick(result)[q], 'ms');
  for (const q of ['p50', 'p99'] as const) line(`PUT acknowledged ${q} (from PUT sent)`, (result) => result.putMs[q], 'ms');
  for (const [from, pick] of [
    ['commit', (result: RunResult) => result.perWatcherFromCommitMs],
    ['ack', (result: RunResult) => result.perWatcherFromAckMs],
  ] as const)
    for (const q of ['p50', 'p99'] as const) line(`per-watcher delivery ${q} (from ${from})`, (result) => pick(result)[q], 'ms');
  process.stdout.write(`load average (1, 5, 15 min) at the end: ${loadText()}\n`);
}

await main();
