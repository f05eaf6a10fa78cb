/**
 * A benchmark worker process that hosts many replicas in-process (the open-files limit is per process, so a tree of
 * a thousand replicas is spread over several of these). The parent drives it over the IPC channel:
 *
 *   parent -> worker  { type: 'start', dir, nodes: [{ id, upstreams }], tls?, replicationToken?, trustKeyFile? }
 *                                                                           start replicas (port 0 everywhere; with
 *                                                                           `tls`, the --tls-* files; with
 *                                                                           `trustKeyFile`, verifying signatures)
 *   worker -> parent  { type: 'started', nodes: [{ id, replication }] }
 *   parent -> worker  { type: 'waitSeq', seq }                             answer once every replica applied `seq`
 *   worker -> parent  { type: 'reached', seq }
 *   worker -> parent  { type: 'all', seq, atMs }                           every replica here has applied `seq`
 *                                                                           (atMs: the last of them, monotonic clock)
 *   parent -> worker  { type: 'usage' } -> { type: 'usage', cpuMs, rssBytes, minSeq }   (minSeq -1: no replicas here)
 *   parent -> worker  { type: 'stop' }                                     close every replica and exit
 *
 * Times are `process.hrtime` (CLOCK_MONOTONIC), which every process on the host shares.
 */
import { join } from 'node:path';
import { validateConfig } from '../../src/config/index.js';
import type { TlsPaths } from '../../src/net/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../../src/node/index.js';

export interface HostedNodeSpec {
  readonly id: number;
  readonly upstreams: readonly string[];
}

export type HostRequest =
  /** `replicationToken`: replicas run with auth required and present it to their upstreams; absent: auth off. */
  | {
      readonly type: 'start';
      readonly dir: string;
      readonly nodes: readonly HostedNodeSpec[];
      readonly tls?: TlsPaths;
      readonly replicationToken?: string;
      readonly trustKeyFile?: string;
    }
  | { readonly type: 'waitSeq'; readonly seq: number }
  | { readonly type: 'usage' }
  | { readonly type: 'stop' };

export type HostReply =
  | { readonly type: 'started'; readonly nodes: readonly { id: number; replication: string }[] }
  | { readonly type: 'reached'; readonly seq: number }
  | { readonly type: 'all'; readonly seq: number; readonly atMs: number }
  | { readonly type: 'usage'; readonly cpuMs: number; readonly rssBytes: number; readonly minSeq: number };

/** LMDB map per replica: the benchmark's data is small, and hundreds of 64 GiB maps would exhaust address space. */
const BENCH_MAP_BYTES = 256 * 1024 * 1024;

function monotonicNowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function send(reply: HostReply): void {
  process.send!(reply);
}

const nodes: MercuryNode[] = [];
/** Per seq: how many hosted replicas applied it so far, and when the last one did. */
const pending = new Map<number, number>();
const waiters: { seq: number; resolve: () => void }[] = [];

function minSeq(): number {
  let min = Infinity;
  for (const node of nodes) min = Math.min(min, node.store.head().seq);
  // A host without replicas (yet) holds nothing that could be behind.
  return min;
}

function onApplied(fromSeq: number, toSeq: number): void {
  const atMs = monotonicNowMs();
  for (let seq = fromSeq; seq <= toSeq; seq++) {
    const count = (pending.get(seq) ?? 0) + 1;
    if (count === nodes.length) {
      pending.delete(seq);
      send({ type: 'all', seq, atMs });
    } else pending.set(seq, count);
  }
  checkWaiters();
}

function checkWaiters(): void {
  if (waiters.length === 0) return;
  const seq = minSeq();
  for (let i = waiters.length - 1; i >= 0; i--) {
    if (seq >= waiters[i]!.seq) {
      waiters[i]!.resolve();
      waiters.splice(i, 1);
    }
  }
}

// The parent is gone (it crashed or gave up): nobody will ever ask this host to stop.
process.on('disconnect', () => process.exit(1));

// A snapshot install moves a head without an apply: check the waiters on a timer as well.
setInterval(checkWaiters, 20);

async function start(
  dir: string,
  specs: readonly HostedNodeSpec[],
  tls: TlsPaths | undefined,
  replicationToken: string | undefined,
  trustKeyFile: string | undefined,
): Promise<void> {
  const started = await Promise.all(
    specs.map(async (spec) => {
      const config = validateConfig({
        dataDir: join(dir, `replica-${spec.id}`),
        port: 0,
        upstreams: spec.upstreams,
        tls,
        trustKeyFiles: trustKeyFile === undefined ? [] : [trustKeyFile],
      });
      const node = await MercuryNode.start(config, {
        auth: replicationToken === undefined ? 'off' : 'required',
        replicationToken,
        limits: withLimits(NODE_LIMITS, { store: { mapBytes: BENCH_MAP_BYTES } }),
      });
      node.onApplied((entries) => onApplied(entries[0]!.entry.seq, entries[entries.length - 1]!.entry.seq));
      return { node, id: spec.id };
    }),
  );
  // Counting starts now: seqs applied before every node of this batch existed are not measured.
  pending.clear();
  for (const { node } of started) nodes.push(node);
  send({ type: 'started', nodes: started.map(({ node, id }) => ({ id, replication: node.replicationAddress })) });
}

process.on('message', (message: HostRequest) => {
  switch (message.type) {
    case 'start':
      void start(message.dir, message.nodes, message.tls, message.replicationToken, message.trustKeyFile);
      return;
    case 'waitSeq':
      if (minSeq() >= message.seq) send({ type: 'reached', seq: message.seq });
      else waiters.push({ seq: message.seq, resolve: () => send({ type: 'reached', seq: message.seq }) });
      return;
    case 'usage': {
      const usage = process.cpuUsage();
      send({ type: 'usage', cpuMs: (usage.user + usage.system) / 1000, rssBytes: process.memoryUsage.rss(), minSeq: nodes.length === 0 ? -1 : minSeq() });
      return;
    }
    case 'stop':
      void Promise.all(nodes.map((node) => node.close())).finally(() => process.exit(0));
      return;
  }
});
