/**
 * Workload 7: bootstrap and catch-up. A primary holds --bootstrap-keys keys of --value-bytes each; every run starts a
 * fresh replica process with an empty data directory and measures the time from its spawn until it holds the
 * primary's whole data set:
 *
 * - Mercury: `mercury serve --upstream` (a snapshot install over the replication protocol); done when a read on the
 *   replica with `minSeq` = the root's seq answers (it waits on the node until that entry is applied).
 * - Redis: `redis-server --replicaof` (a full sync: RDB made by the primary, sent and loaded, diskless on both sides'
 *   defaults but without the 5 s wait for more replicas); done at its log line "MASTER <-> REPLICA sync: Finished with
 *   success", printed once the RDB is loaded.
 *
 * Figures: seconds to join and MB/s of key and value bytes. Then, Mercury only (Redis's partial resync from its
 * backlog has no measure of its own here): catch-up. The replica that just joined is stopped, the root commits
 * --bootstrap-keys / 4 writes (rewrites of existing keys, batched, so that the root's own rate is not the limit and the data set keeps its size), and the replica restarts on its
 * data directory; the writes it replays per second, from its restart until it has applied the root's seq (catch-up),
 * and from its upstream's welcome into the stream, its log line "following upstream", until then (replay).
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { NodeClient } from '../../../src/client/index.js';
import { CLI_PATH } from '../../support/node-process.js';
import { benchKey } from '../driver.js';
import { freePort } from '../../support/free-port.js';
import type { ManagedProcess, ProcessGroup } from '../processes.js';
import type { MetricSpec } from '../stats.js';
import { connectMercury, connectRedis, redisServerArgs, untilApplied } from '../systems/index.js';
import { measureAlternating, type Subject, type Workload, type WorkloadContext, type WorkloadResult } from '../workload.js';
import { valueOf } from './writes.js';

/** Keys per write while the primary is filled (a Mercury txn, a Redis MSET). */
const FILL_BATCH_KEYS = 2_000;
/** How long a replica may take to join or catch up before the run fails. */
const JOIN_MS_MAX = 120_000;

const METRICS: readonly MetricSpec[] = [
  { key: 'joinSeconds', title: 'join s', better: 'lower' },
  { key: 'joinMBps', title: 'join MB/s (key + value bytes)', better: 'higher' },
  { key: 'catchUpWritesPerSecond', title: 'catch-up writes/s (Mercury only)', better: 'higher', compared: false },
  { key: 'replayWritesPerSecond', title: 'replay writes/s (Mercury only)', better: 'higher', compared: false },
];

/**
 * When the replica's upstream welcomed it into a stream (its log line "following upstream", mode "stream"), in ms
 * since the epoch: where replaying the missed entries starts, after the process started, opened and checked its
 * store and connected.
 */
function streamStartedMs(output: string): number {
  const line = output.split('\n').find((text) => text.includes('"following upstream"') && text.includes('"mode":"stream"'));
  const time = line === undefined ? undefined : (JSON.parse(line) as { time?: string }).time;
  if (time === undefined) throw new Error(`the replica did not log "following upstream" in stream mode:\n${output.slice(-2000)}`);
  return Date.parse(time);
}

const READY_MERCURY = /listening on https?:\/\/([\d.]+):(\d+)/;

function keyOf(i: number): string {
  return benchKey('boot', i);
}

/** Writes keys [from, to) in batches through `write`. */
async function fill(from: number, to: number, valueBytes: number, write: (entries: [string, Buffer][]) => Promise<void>): Promise<void> {
  const value = valueOf(valueBytes);
  for (let start = from; start < to; start += FILL_BATCH_KEYS) {
    const entries: [string, Buffer][] = [];
    for (let i = start; i < Math.min(to, start + FILL_BATCH_KEYS); i++) entries.push([keyOf(i), value]);
    await write(entries);
  }
}

async function mercurySubject(context: WorkloadContext, keys: number, dataBytes: number): Promise<Subject> {
  const { group, options } = context;
  const root = await group.start({
    name: 'mercury-boot-root',
    command: process.execPath,
    args: [CLI_PATH, 'serve', '--data-dir', group.tempDir('mercury-boot-root'), '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--auth', 'off', '--unsigned'],
    ready: /listening on (https?:\/\/[\d.]+:\d+) replication (\S+:\d+)/,
  });
  const rootUrl = new URL(root.readyMatch[1]!);
  const rootClient = new NodeClient(rootUrl.origin);
  const writer = connectMercury(rootUrl.hostname, Number(rootUrl.port));
  const replication = root.readyMatch[2]!;
  const putBatch = (entries: [string, Buffer][]): Promise<void> => writer.putBatch(entries);
  await fill(0, keys, options.valueBytes, putBatch);
  const startReplica = (dataDir: string): Promise<ManagedProcess> =>
    group.start({
      name: 'mercury-boot-replica',
      command: process.execPath,
      args: [CLI_PATH, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--replication-listen', '127.0.0.1:0', '--auth', 'off', '--upstream', replication],
      ready: READY_MERCURY,
    });
  /** Spawns (or restarts) a replica and resolves with the seconds until it has applied the root's `seq`. */
  const timeToSeq = async (dataDir: string, seq: number): Promise<{ seconds: number; replica: ManagedProcess; doneMs: number }> => {
    const startedAt = performance.now();
    const replica = await startReplica(dataDir);
    const client = new NodeClient(`http://${replica.readyMatch[1]!}:${replica.readyMatch[2]!}`, JOIN_MS_MAX + 5_000);
    // A replica refuses reads until it has joined: retried every 2 ms, so the join is timed closely.
    await untilApplied(client, seq, keyOf(0), { deadline: startedAt + JOIN_MS_MAX, retryMs: 2, waitMs: 60_000 });
    return { seconds: (performance.now() - startedAt) / 1000, replica, doneMs: Date.now() };
  };
  return {
    id: 'mercury',
    title: 'Mercury',
    mercury: true,
    async runOnce() {
      const dataDir = group.tempDir('mercury-boot-replica');
      const seq = (await rootClient.status()).seq;
      const join = await timeToSeq(dataDir, seq);
      await join.replica.stop();
      // Rewrites of existing keys, so that every run's replica joins the same data set (its size is the figure's).
      const more = Math.max(1, Math.floor(keys / 4));
      await fill(0, more, options.valueBytes, putBatch);
      const catchUp = await timeToSeq(dataDir, (await rootClient.status()).seq);
      await catchUp.replica.stop();
      // Both clocks are this host's wall clock; the log line's time has millisecond precision.
      const replaySeconds = Math.max(0.001, (catchUp.doneMs - streamStartedMs(catchUp.replica.output())) / 1000);
      return {
        joinSeconds: join.seconds,
        joinMBps: dataBytes / 1e6 / join.seconds,
        catchUpWritesPerSecond: more / catchUp.seconds,
        replayWritesPerSecond: more / replaySeconds,
      };
    },
    async close() {
      await writer.close();
      await root.stop();
    },
  };
}

async function redisSubject(context: WorkloadContext, keys: number, dataBytes: number): Promise<Subject> {
  const { group, options } = context;
  const port = await freePort();
  const primary = await group.start({
    name: 'redis-boot-primary',
    command: 'redis-server',
    args: redisServerArgs(port, group.tempDir('redis-boot-primary'), ['--repl-diskless-sync-delay', '0']),
    ready: /Ready to accept connections/,
  });
  const client: Redis = await connectRedis(port);
  await fill(0, keys, options.valueBytes, async (entries) => void (await client.mset(...entries.flat())));
  return {
    id: 'redis',
    title: 'Redis',
    mercury: false,
    async runOnce() {
      const replicaPort = await freePort();
      const startedAt = performance.now();
      const replica = await startRedisReplica(group, replicaPort, port);
      const seconds = (performance.now() - startedAt) / 1000;
      await replica.stop();
      return { joinSeconds: seconds, joinMBps: dataBytes / 1e6 / seconds };
    },
    async close() {
      await client.quit();
      await primary.stop();
    },
  };
}

function startRedisReplica(group: ProcessGroup, port: number, primaryPort: number): Promise<ManagedProcess> {
  return group.start({
    name: 'redis-boot-replica',
    command: 'redis-server',
    args: redisServerArgs(port, group.tempDir('redis-boot-replica'), ['--replicaof', '127.0.0.1', String(primaryPort)]),
    ready: /MASTER <-> REPLICA sync: Finished with success/,
    readyMsMax: JOIN_MS_MAX,
  });
}

export const bootstrapWorkload: Workload = {
  id: 7,
  title: 'Bootstrap and catch-up of a replica',
  async run(context: WorkloadContext): Promise<WorkloadResult> {
    const { options } = context;
    const keys = options.bootstrapKeys;
    const dataBytes = keys * (keyOf(0).length + options.valueBytes);
    const subjects: Subject[] = [];
    const notes: string[] = [];
    try {
      if (options.systems.includes('mercury')) subjects.push(await mercurySubject(context, keys, dataBytes));
      if (options.systems.includes('redis')) subjects.push(await redisSubject(context, keys, dataBytes));
      if (options.systems.includes('etcd')) notes.push('etcd not measured here: a new member joins through Raft membership changes, not a replica bootstrap comparable to these.');
    } catch (error) {
      await Promise.all(subjects.map((subject) => subject.close()));
      throw error;
    }
    const results = await measureAlternating(context, 7, subjects, false);
    return {
      id: 7,
      title: 'Bootstrap and catch-up of a replica',
      description:
        `A primary holds ${keys.toLocaleString('en-US')} keys of ${options.valueBytes} B (${(dataBytes / 1e6).toFixed(1)} MB of key and value bytes). Each run starts a fresh replica process with an empty data directory and times it from spawn until it holds the whole data set (Mercury: a read with minSeq = the root's seq answers; Redis: "MASTER <-> REPLICA sync: Finished with success"). ` +
        `Mercury's catch-up: the joined replica is stopped, the root rewrites ${Math.floor(keys / 4).toLocaleString('en-US')} of the keys in batches, and the replica's restart replays them; catch-up is writes/s from its restart (process start, store open and check included) until it has applied the root's seq, replay the same from its upstream's welcome into the stream.`,
      metrics: METRICS,
      subjects: results,
      notes,
    };
  },
};
