/**
 * Workload 5: propagation down a replication tree of the same shape on Redis and on Mercury (default 1 -> 4 -> 16).
 * Writes go to the root one at a time, spread over the run; for each, the time from its acknowledgement until it is
 * visible on every replica. Redis replicas report visibility by keyspace notifications; Mercury replicas by their
 * watch stream (a replica sends an event only once it has applied the entry).
 *
 * The Mercury side uses the replication CLI: `mercury serve ... --replication-listen 127.0.0.1:0
 * --upstream HOST:PORT`, ready line `mercury node listening on http://H:P replication H:RP`. A build without it is
 * reported and skipped; Redis is still measured. With `--tls` the Mercury tree serves TLS everywhere (a certificate
 * made for the run): the cost of TLS, on versus off.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NodeClient, bearer } from '../../../src/client/index.js';
import { CLI_PATH } from '../../support/node-process.js';
import { benchTls } from '../../support/tls.js';
import { benchKey, spacedSequence } from '../driver.js';
import { freePort } from '../../support/free-port.js';
import { ProcessStartError, type ManagedProcess } from '../processes.js';
import { LatencyRecorder, type MetricSpec } from '../stats.js';
import type { KvClient } from '../system.js';
import { connectMercury, connectRedis, openWatchConnection, redisServerArgs, untilApplied } from '../systems/index.js';
import { measureAlternating, type Subject, type SubjectResult, type Workload, type WorkloadContext, type WorkloadResult } from '../workload.js';
import { valueOf } from './writes.js';

/** How long one write may take to reach every replica before the run gives up on it. */
const PROPAGATION_MS_MAX = 10_000;
/**
 * Writes sent back to back before the first measured run, to every system alike. V8 optimizes a Mercury node's hot
 * paths only after some thousands of calls (a 1 -> 1 -> 1 tree at 67 writes/s spent 1.9, 0.84 and 0.75 ms of CPU per
 * write in its first 5 s and 1.3, 0.57 and 0.51 after 40 s, docs/performance.md), and a fleet runs for days: the
 * measured runs should see warmed-up nodes, not the first seconds of each process.
 */
const JIT_WARMUP_WRITES = 3_000;
/** How long a Redis replica may take for its first full sync. */
const REDIS_SYNC_MS_MAX = 30_000;

const METRICS: readonly MetricSpec[] = [
  { key: 'allP50Ms', title: 'all replicas p50 ms', better: 'lower' },
  { key: 'allP99Ms', title: 'all replicas p99 ms', better: 'lower' },
  { key: 'firstP50Ms', title: 'first replica p50 ms', better: 'lower' },
  { key: 'completeFraction', title: 'fraction of writes seen everywhere', better: 'higher', compared: false },
];

/**
 * The parent of every node, level by level, the root (node 0) having -1: [4, 16] gives 1 -> 4 -> 16, four children
 * each.
 */
export function treeParents(fanout: readonly number[]): number[] {
  const parents: number[] = [-1];
  let levelStart = 0;
  let levelSize = 1;
  let next = 1;
  for (const size of fanout) {
    for (let i = 0; i < size; i++) parents[next + i] = levelStart + (i % levelSize);
    levelStart = next;
    next += size;
    levelSize = size;
  }
  return parents;
}

/** A running tree: a client of its root, and how many replicas report writes (through the `seen` callback). */
interface Tree {
  readonly writer: KvClient;
  readonly replicas: number;
  close(): Promise<void>;
}

async function redisTree(context: WorkloadContext, parents: readonly number[], seen: (replica: number, k: number) => void): Promise<Tree> {
  const ports: number[] = [];
  const subscribers: Awaited<ReturnType<typeof connectRedis>>[] = [];
  const processes: ManagedProcess[] = [];
  for (let node = 0; node < parents.length; node++) {
    const port = await freePort();
    ports[node] = port;
    const replicaOf = node === 0 ? [] : ['--replicaof', '127.0.0.1', String(ports[parents[node]!]), '--notify-keyspace-events', 'K$'];
    // No delay before a full sync: Redis waits 5 s by default for more replicas to share one.
    const extra = ['--repl-diskless-sync-delay', '0', ...replicaOf];
    processes.push(
      await context.group.start({
        name: `redis-${node}`,
        command: 'redis-server',
        args: redisServerArgs(port, context.group.tempDir(`redis-tree-${node}`), extra),
        ready: node === 0 ? /Ready to accept connections/ : /MASTER <-> REPLICA sync: Finished with success/,
        readyMsMax: REDIS_SYNC_MS_MAX,
      }),
    );
  }
  for (let replica = 1; replica < parents.length; replica++) {
    const subscriber = await connectRedis(ports[replica]!);
    await subscriber.psubscribe('__keyspace@0__:prop/*');
    subscriber.on('pmessage', (_pattern: string, channel: string) => seen(replica - 1, Number(channel.slice(channel.lastIndexOf('/') + 1))));
    subscribers.push(subscriber);
  }
  const root = await connectRedis(ports[0]!);
  return {
    writer: {
      put: async (key, value) => void (await root.set(key, value)),
      get: () => Promise.reject(new Error('not used')),
      putBatch: () => Promise.reject(new Error('not used')),
      close: () => Promise.resolve(), // the tree closes the connection
    },
    replicas: parents.length - 1,
    async close() {
      await root.quit();
      for (const subscriber of subscribers) subscriber.disconnect();
      await Promise.all(processes.map((process) => process.stop()));
    },
  };
}

async function mercuryTree(context: WorkloadContext, parents: readonly number[], seen: (replica: number, k: number) => void): Promise<Tree> {
  const nodes: { process: ManagedProcess; host: string; port: number; replication: string }[] = [];
  const sockets: { close(): void }[] = [];
  const tls = context.options.tls ? benchTls(context.group.tempDir('mercury-tls')) : undefined;
  // --auth: every node requires tokens; the root's bootstrap admin token makes a replicate token for the replicas and
  // a token for the writer and the watches (read and write on prop/), so every hop pays for its check.
  const auth = context.options.auth;
  let userToken: string | undefined;
  let replicationTokenFile: string | undefined;
  let tokensSeq = 0;
  try {
    // --sign: the root signs (with the key it generates into its data directory) and every replica verifies.
    let rootDir = '';
    for (let node = 0; node < parents.length; node++) {
      const dataDir = context.group.tempDir(`mercury-tree-${node}`);
      if (node === 0) rootDir = dataDir;
      const signing = node === 0 ? (context.options.sign ? [] : ['--unsigned']) : context.options.sign ? ['--trust-key', join(rootDir, 'signing-key.pub.pem')] : [];
      // A verifying replica joins with a snapshot signed by the root, which no relay can make (decision record 25):
      // with --sign the root comes last, where a fresh replica fails over to it once its relay refuses.
      const upstreams = node === 0 ? [] : [...new Set([nodes[parents[node]!]!.replication, ...(context.options.sign ? [nodes[0]!.replication] : [])])];
      const upstream = node === 0 ? [] : ['--upstream', upstreams.join(',')];
      const authArgs = ['--auth', auth ? 'required' : 'off', ...(node > 0 && replicationTokenFile !== undefined ? ['--replication-token-file', replicationTokenFile] : [])];
      const process = await context.group.start({
        name: `mercury-${node}`,
        command: globalThis.process.execPath,
        args: [
          CLI_PATH,
          'serve',
          '--data-dir',
          dataDir,
          '--listen',
          '127.0.0.1:0',
          '--replication-listen',
          '127.0.0.1:0',
          ...authArgs,
          ...upstream,
          ...(tls?.args ?? []),
          ...signing,
        ],
        ready: /listening on https?:\/\/([\d.]+):(\d+) replication (\S+:\d+)/,
      });
      nodes.push({ process, host: process.readyMatch[1]!, port: Number(process.readyMatch[2]), replication: process.readyMatch[3]! });
      if (node === 0 && auth) {
        const admin = new NodeClient(`${tls === undefined ? 'http' : 'https'}://${nodes[0]!.host}:${nodes[0]!.port}`, undefined, tls === undefined ? undefined : { ca: tls.ca }, bearer(readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()));
        userToken = (await admin.createToken('bench-tree', ['read:prop/', 'write:prop/'])).token!;
        replicationTokenFile = join(context.group.tempDir('mercury-tree-tokens'), 'replication-token');
        const replicate = await admin.createToken('bench-replicas', ['replicate']);
        writeFileSync(replicationTokenFile, replicate.token!, { mode: 0o600 });
        tokensSeq = replicate.seq;
      }
    }
    // A replica knows the tokens only once it has applied the root's entries that made them (a replica listens
    // before it has joined): a watch opened earlier would be refused 401.
    if (userToken !== undefined)
      for (let replica = 1; replica < nodes.length; replica++) {
        const { host, port } = nodes[replica]!;
        await untilApplied(new NodeClient(`${tls === undefined ? 'http' : 'https'}://${host}:${port}`, undefined, tls === undefined ? undefined : { ca: tls.ca }, bearer(userToken)), tokensSeq, 'prop/', { deadline: performance.now() + 30_000, retryMs: 50, waitMs: 1_000 });
      }
    for (let replica = 1; replica < nodes.length; replica++) {
      const { host, port } = nodes[replica]!;
      const url = `${tls === undefined ? 'ws' : 'wss'}://${host}:${port}/v1/watch`;
      sockets.push(await openWatchConnection(url, [replica], 'prop/', (_id, key) => seen(replica - 1, Number(key.slice(key.lastIndexOf('/') + 1))), tls?.ca, userToken));
    }
  } catch (error) {
    for (const socket of sockets) socket.close();
    await Promise.all(nodes.map((node) => node.process.stop()));
    throw error;
  }
  const writer = connectMercury(nodes[0]!.host, nodes[0]!.port, tls?.ca, userToken);
  return {
    writer,
    replicas: nodes.length - 1,
    async close() {
      await writer.close();
      for (const socket of sockets) socket.close();
      await Promise.all(nodes.map((node) => node.process.stop()));
    },
  };
}

type TreeStarter = (context: WorkloadContext, parents: readonly number[], seen: (replica: number, k: number) => void) => Promise<Tree>;

async function treeSubject(id: string, title: string, mercury: boolean, start: TreeStarter, context: WorkloadContext, parents: readonly number[]): Promise<Subject> {
  const { options } = context;
  let ackAt: number[] = [];
  let seenCount: number[] = [];
  let firstAt: number[] = [];
  let allAt: number[] = [];
  let replicas = 0;
  const tree = await start(context, parents, (_replica, k) => {
    if (k < 0 || Number.isNaN(k) || seenCount[k] === undefined) return;
    const now = performance.now();
    const count = seenCount[k] + 1;
    seenCount[k] = count;
    if (count === 1) firstAt[k] = now;
    if (count === replicas) allAt[k] = now;
  });
  replicas = tree.replicas;
  let keyBase = 0;
  return {
    id,
    title,
    mercury,
    async runOnce(run) {
      if (run < 0) {
        // Keys that no run counts (seenCount has no entry for them), written back to back.
        const warmBase = keyBase;
        keyBase += JIT_WARMUP_WRITES;
        for (let i = 0; i < JIT_WARMUP_WRITES; i++) await tree.writer.put(benchKey('prop', warmBase + i), valueOf(options.valueBytes));
      }
      const writes = run < 0 ? 20 : options.watchWrites;
      // Fresh key numbers every run, so a late notification of an earlier run cannot count.
      ackAt = [];
      firstAt = [];
      allAt = [];
      seenCount = [];
      const base = keyBase;
      keyBase += writes;
      for (let k = base; k < base + writes; k++) seenCount[k] = 0;
      await spacedSequence(writes, options.seconds, async (i) => {
        await tree.writer.put(benchKey('prop', base + i), valueOf(options.valueBytes));
        ackAt[base + i] = performance.now();
      });
      const deadline = performance.now() + PROPAGATION_MS_MAX;
      while (allAt.filter((at) => at !== undefined).length < writes && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      const all = new LatencyRecorder();
      const first = new LatencyRecorder();
      let complete = 0;
      for (let k = base; k < base + writes; k++) {
        // A replica can see a write before the root's acknowledgement reaches the client: that counts as 0.
        if (allAt[k] !== undefined) {
          all.record(Math.max(0, allAt[k]! - ackAt[k]!));
          complete++;
        }
        if (firstAt[k] !== undefined) first.record(Math.max(0, firstAt[k]! - ackAt[k]!));
      }
      const [allP50, allP99] = all.quantiles([0.5, 0.99]);
      return { allP50Ms: allP50!, allP99Ms: allP99!, firstP50Ms: first.quantile(0.5), completeFraction: complete / writes };
    },
    close: () => tree.close(),
  };
}

export const propagationWorkload: Workload = {
  id: 5,
  title: 'Propagation down a replication tree',
  async run(context: WorkloadContext): Promise<WorkloadResult> {
    const { options } = context;
    const parents = treeParents(options.tree);
    const shape = ['1', ...options.tree.map(String)].join(' -> ');
    const notes: string[] = [];
    const subjects: Subject[] = [];
    try {
      if (options.systems.includes('mercury')) {
        try {
          subjects.push(await treeSubject('mercury', options.tls ? 'Mercury (TLS)' : 'Mercury', true, mercuryTree, context, parents));
        } catch (error) {
          if (!(error instanceof ProcessStartError)) throw error;
          // The node's own complaint (`mercury: ...`) says more than the harness's wrapper around it.
          const complaint = /^mercury: [^\n]*/m.exec(error.message)?.[0].split('. ')[0] ?? error.message.split('\n')[0]!;
          notes.push(`Mercury side not measured: this build's \`mercury serve\` did not start as a replication tree node (it needs \`--replication-listen\` and \`--upstream\`); it said: "${complaint.slice(0, 200)}".`);
          context.log(`workload 5: Mercury tree skipped: ${error.message.split('\n')[0]}`);
        }
      }
      if (options.systems.includes('redis')) subjects.push(await treeSubject('redis', 'Redis', false, redisTree, context, parents));
    } catch (error) {
      await Promise.all(subjects.map((subject) => subject.close()));
      throw error;
    }
    const results: SubjectResult[] = subjects.length === 0 ? [] : await measureAlternating(context, 5, subjects);
    return {
      id: 5,
      title: 'Propagation down a replication tree',
      description: `A tree ${shape} (${parents.length - 1} replicas), each root durable as in workload 1 (Redis's replicas keep the same AOF settings and fsync each write; Mercury's replicas write without fsync and, after a machine crash, fetch their data again from upstream: decision record 7). Before the first run, ${JIT_WARMUP_WRITES.toLocaleString('en-US')} writes back to back warm every system up (V8 optimizes a Mercury node's hot paths only after some thousands of calls; a fleet runs for days). Each run writes ${options.watchWrites} keys of ${options.valueBytes} B to the root, one at a time, spread over ${options.seconds} s; for each write, the time from its acknowledgement until it is visible on every replica (and on the first). Redis replicas report visibility through keyspace notifications, Mercury replicas through their watch stream.`,
      metrics: METRICS,
      subjects: results,
      notes: options.tls ? [...notes, 'Mercury ran with --tls: HTTPS, wss and mutual TLS between the nodes of its tree (Redis without TLS).'] : notes,
      ...(results.length === 0 ? { skipped: notes.join(' ') || 'no system selected for it.' } : {}),
    };
  },
};
