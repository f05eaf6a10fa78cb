/**
 * Replication - a turn's write budget. A replica that catches up writes the entries of one event-loop turn in one
 * transaction (docs/decisions.md, record 33); entries of large range deletes made that one transaction remove the keys
 * of all of them (about 0.5 s per maximal range delete), with the replica's reads, watches, timers and children waiting
 * the whole time. Now a turn writes at most `replication.applyBatchKeysMax` keys past its first entry, and the rest a
 * turn later. A real root process, a proxy that holds its frames and hands them over in one write (as in
 * replication-burst.test.ts), and a replica node in this process, whose event-loop turns are counted (TurnCounter),
 * not timed.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import type { EncodedEntry } from '../src/log/index.js';
import { MercuryNode, NODE_LIMITS, withLimits } from '../src/node/index.js';
import { auditLog, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { FlipProxy, eventually, put } from './support/tree.js';
import { TurnCounter } from './support/turns.js';

/** The replica's budget: the least its limits allow (one ACK's worth of one-op entries, REPLICATION_LIMITS). */
const BATCH_KEYS_MAX = 2_048;
/** Keys each range delete removes: more than the budget, so that each is a transaction of its own. */
const GROUP_KEYS = 3_000;
const GROUPS = 4;

const groupKey = (group: number, i: number): string => `big/${group}/${String(i).padStart(5, '0')}`;

interface Status {
  seq: number;
  headHash: string;
  keys: number;
}

interface Tree {
  readonly root: ServeProcess;
  readonly proxy: FlipProxy;
  readonly replica: MercuryNode;
}

/** A root process holding GROUPS ranges of GROUP_KEYS keys, and a replica node behind a proxy, caught up with it. */
async function startTree(dir: string): Promise<Tree> {
  const root = await startServe(join(dir, 'root'));
  for (let group = 0; group < GROUPS; group++) {
    const success = Array.from({ length: GROUP_KEYS }, (_, i) => ({ op: 'put', key: groupKey(group, i), value: 'v' }));
    await requestJson(root.url, 'POST', '/v1/txn', { body: JSON.stringify({ success }), headers: { 'content-type': 'application/json' } });
  }
  await put(root, 'kept', 'k');
  const proxy = await FlipProxy.start(root.replication);
  const config = validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [proxy.address] });
  const replica = await MercuryNode.start(config, { auth: 'off', limits: withLimits(NODE_LIMITS, { replication: { applyBatchKeysMax: BATCH_KEYS_MAX } }) });
  const tree = { root, proxy, replica };
  await caughtUp(tree);
  return tree;
}

/** Waits until the replica has the root's seq and head hash; returns the root's status. */
async function caughtUp({ root, replica }: Tree): Promise<Status> {
  let rootStatus = await requestJson<Status>(root.url, 'GET', '/v1/status');
  await eventually(
    async () => {
      rootStatus = await requestJson<Status>(root.url, 'GET', '/v1/status');
      const status = await requestJson<Status>(replica.url, 'GET', '/v1/status');
      return status.seq === rootStatus.seq && status.headHash === rootStatus.headHash;
    },
    async () => `root at ${rootStatus.seq}, replica at ${(await requestJson<Status>(replica.url, 'GET', '/v1/status')).seq}`,
  );
  return rootStatus;
}

describe('replication - a turn of range deletes on a catching-up replica', () => {
  const dir = makeTempDir('repl-apply-budget');
  let tree: Tree | undefined;
  before(async () => {
    tree = await startTree(dir);
  });
  after(async () => {
    await tree?.replica.close();
    if (tree !== undefined) await stopProcess(tree.root.child);
    await tree?.proxy.close();
    removeDir(dir);
  });

  test('replication: range deletes that reach a replica in one burst are written a transaction per turn, and it converges', async () => {
    const { root, proxy, replica } = tree!;
    // Counted from here: the replica is caught up, and nothing reaches it until the proxy releases the burst.
    const loop = new TurnCounter();
    const transactions: { turn: number; entries: readonly EncodedEntry[] }[] = [];
    replica.onApplied((entries) => transactions.push({ turn: loop.turns, entries }));

    proxy.bursting = true;
    for (let group = 0; group < GROUPS; group++) await requestJson(root.url, 'DELETE', `/v1/kv?prefix=big/${group}/`);
    await put(root, 'after', 'a');
    proxy.releaseBurst();
    const rootStatus = await caughtUp(tree!);
    loop.stop();

    const rangeDeletes = transactions.filter(({ entries }) => entries.some(({ entry }) => entry.ops.some((op) => op.type === 'deleteRange')));
    const shapes = JSON.stringify(transactions.map(({ turn, entries }) => ({ turn, seqs: entries.map(({ entry }) => entry.seq) })));
    assert.equal(rangeDeletes.reduce((sum, { entries }) => sum + entries.length, 0), GROUPS, `transactions (turn, seqs): ${shapes}`);
    // Each range delete removes more than the budget: one per transaction. Before the budget the burst was one
    // transaction (two if a heartbeat fell in the middle of it).
    assert.equal(rangeDeletes.length, GROUPS, `every range delete in a transaction of its own; transactions (turn, seqs): ${shapes}`);
    // The loop turned between them: timers, reads and other sockets ran in between.
    for (let i = 1; i < rangeDeletes.length; i++) {
      assert.ok(rangeDeletes[i]!.turn > rangeDeletes[i - 1]!.turn, `a turn of the event loop between two range deletes; transactions (turn, seqs): ${shapes}`);
    }

    const status = await requestJson<Status>(replica.url, 'GET', '/v1/status');
    assert.equal(status.keys, rootStatus.keys);
    const remaining = await requestJson<{ items: unknown[] }>(replica.url, 'GET', '/v1/kv?prefix=big/&limit=10');
    assert.equal(remaining.items.length, 0, 'every key of the ranges is gone');
    assert.equal((await request(replica.url, 'GET', '/v1/kv/kept')).body.toString(), 'k');
    assert.equal((await request(replica.url, 'GET', '/v1/kv/after')).body.toString(), 'a');
    const rootLog = new Map((await auditLog(root.url)).map((entry) => [entry.seq, entry]));
    for (const entry of await auditLog(replica.url)) assert.deepEqual(entry, rootLog.get(entry.seq), `entry ${entry.seq} differs from the root's`);
  });

  test('replication: an entry of many range deletes over the same keys costs a replica a count of its budget, not of every op (found by review)', async () => {
    // Found by review: to size a turn, the replica counted the keys of every range delete of an entry against the store
    // as it stood before the entry, so one transaction of TXN_OPS_MAX deletes of one populated prefix (which the root
    // accepts: only the first removes keys) made every replica count the prefix's keys once per op, 10,000 x 20,000
    // keys in one turn, about 12 s with its reads, watches, timers and children waiting. A hostile upstream can send
    // such an entry without a root. Now the count stops once the turn's budget is known to be spent.
    const { root, replica } = tree!;
    const keys = 20_000;
    for (let from = 0; from < keys; from += 10_000) {
      const success = Array.from({ length: 10_000 }, (_, i) => ({ op: 'put', key: `same/${String(from + i).padStart(5, '0')}`, value: 'v' }));
      await requestJson(root.url, 'POST', '/v1/txn', { body: JSON.stringify({ success }), headers: { 'content-type': 'application/json' } });
    }
    await caughtUp(tree!);
    // The longest this process's event loop (the replica's) went without running a timer while it applied the entry.
    let longestGapMs = 0;
    let lastMs = performance.now();
    const probe = setInterval(() => {
      const nowMs = performance.now();
      longestGapMs = Math.max(longestGapMs, nowMs - lastMs);
      lastMs = nowMs;
    }, 10);
    try {
      const success = Array.from({ length: 10_000 }, () => ({ op: 'deletePrefix', prefix: 'same/' }));
      const response = await request(root.url, 'POST', '/v1/txn', { body: JSON.stringify({ success }), headers: { 'content-type': 'application/json' } });
      assert.equal(response.status, 200, response.body.toString());
      await caughtUp(tree!);
    } finally {
      clearInterval(probe);
    }
    const remaining = await requestJson<{ items: unknown[] }>(replica.url, 'GET', '/v1/kv?prefix=same/&limit=10');
    assert.equal(remaining.items.length, 0, 'every key of the prefix is gone');
    // Counting the prefix once per op held the loop for seconds (12 s on the 2-core machine); once is a few ms.
    assert.ok(longestGapMs < 2_000, `the replica's event loop stood still for ${Math.round(longestGapMs)} ms`);
  });
});
