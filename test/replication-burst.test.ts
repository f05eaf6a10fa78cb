/**
 * Replication - bursts. A replica that falls behind, or whose upstream's frames queue in the socket, receives many
 * entries at once; it writes what arrived in one event-loop turn in one transaction (docs/decisions.md, record 33).
 * Real `mercury serve` processes on loopback; a proxy between root and replica keeps the root's bytes and hands them
 * to the replica in one write. Checked: every entry is applied in order, in far fewer transactions than entries,
 * every change reaches the replica's watchers once and in order, and a SIGKILL in the middle of a burst leaves the
 * replica consistent (it resumes from its own log, without a snapshot) and it catches up.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from './support/http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { FlipProxy, assertSameChain, converged, eventually, get, put, statusOf } from './support/tree.js';
import { WatchClient, assertEventsMatchLog, expectedEvents, readLog } from './support/watch.js';

/** Entries per burst: one sequential PUT each. Values of 1 KiB make a burst span many socket reads. */
const BURST_ENTRIES = 300;
const VALUE = 'v'.repeat(1024);
/**
 * The crash's burst: 200 values of 64 KiB, 12.5 MiB, under the root's window for a child (16 MiB) so that the proxy
 * holds all of it, and over the replica's ACK threshold (4 MiB), which ends a batch: the replica writes it in several
 * transactions, and the kill can fall between them.
 */
const CRASH_ENTRIES = 200;
const CRASH_VALUE = 'c'.repeat(64 * 1024);

/** A counter or a histogram's `_count` / `_sum` from a node's /metrics text; 0 while it was never incremented. */
async function metric(node: ServeProcess, name: string): Promise<number> {
  const text = (await request(node.url, 'GET', '/metrics')).body.toString();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

function burstKey(prefix: string, i: number): string {
  return `${prefix}${String(i).padStart(4, '0')}`;
}

/** Writes `count` keys under `prefix` one PUT at a time, so that each is an entry of its own. */
async function writeBurst(root: ServeProcess, prefix: string, count: number, value = VALUE): Promise<void> {
  for (let i = 0; i < count; i++) await put(root, burstKey(prefix, i), `${i}:${value}`);
}

describe('replication - bursts of entries', () => {
  const dir = makeTempDir('repl-burst');
  let root: ServeProcess;
  let replica: ServeProcess;
  let proxy: FlipProxy;

  before(async () => {
    root = await startServe(join(dir, 'root'));
    proxy = await FlipProxy.start(root.replication);
    replica = await startServe(join(dir, 'replica'), ['--upstream', proxy.address]);
    await put(root, 'start', 'x');
    await converged(root, [replica]);
  });
  after(async () => {
    await Promise.all([root, replica].map((node) => stopProcess(node.child)));
    await proxy.close();
    removeDir(dir);
  });

  test('replication: a replica given many entries at once applies them in order, in few transactions, and its watchers see every one', async () => {
    const watch = await WatchClient.connect(replica.url);
    const fromSeq = (await statusOf(replica)).seq + 1;
    assert.equal((await watch.subscribe('burst', ['burst/'], { fromSeq })).type, 'subscribed');
    const batchesBefore = await metric(replica, 'mercury_replication_apply_batch_entries_count');
    const appliedBefore = await metric(replica, 'mercury_replication_entries_applied_total');

    proxy.bursting = true;
    await writeBurst(root, 'burst/', BURST_ENTRIES);
    const released = proxy.releaseBurst();
    assert.ok(released > BURST_ENTRIES * VALUE.length, `the burst carried ${released} bytes`);
    const rootStatus = await converged(root, [replica]);

    await watch.waitForSeq('burst', rootStatus.seq, 10_000);
    const log = await readLog(root.url, fromSeq);
    assert.equal(log.length, BURST_ENTRIES);
    assertEventsMatchLog(watch.eventsOf('burst'), expectedEvents(log, { prefixes: [Buffer.from('burst/')] }), 'watcher on the replica');
    watch.close();

    assert.equal((await metric(replica, 'mercury_replication_entries_applied_total')) - appliedBefore, BURST_ENTRIES);
    const batches = (await metric(replica, 'mercury_replication_apply_batch_entries_count')) - batchesBefore;
    // Heartbeats held in the burst end a batch each (at most one a second); everything else comes in large batches.
    assert.ok(batches <= BURST_ENTRIES / 10, `${BURST_ENTRIES} entries in ${batches} write transactions`);
    await assertSameChain(replica, root);
    assert.equal(await get(replica, burstKey('burst/', BURST_ENTRIES - 1)), `${BURST_ENTRIES - 1}:${VALUE}`);
  });

  test('replication: a replica killed (SIGKILL) in the middle of a burst restarts consistent and catches up from its log', async () => {
    const before = await statusOf(replica);
    proxy.bursting = true;
    await writeBurst(root, 'crash/', CRASH_ENTRIES, CRASH_VALUE);
    proxy.releaseBurst();
    // Killed as soon as part of the burst is written: the rest is in its socket, verified or being written.
    await eventually(
      async () => (await statusOf(replica)).seq > before.seq,
      () => 'the replica never applied any of the burst',
      10_000,
    );
    await stopProcess(replica.child, 'SIGKILL');
    // What the kill left (written without fsync, the process gone mid-apply) is a sound store to `mercury verify`.
    const verified = await runCli(['verify', '--data-dir', join(dir, 'replica')]);
    assert.equal(verified.code, 0, `verify: ${verified.stdout.toString()} ${verified.stderr}`);
    await writeBurst(root, 'after/', 20);

    replica = await startServe(join(dir, 'replica'), ['--upstream', proxy.address]);
    const restarted = await statusOf(replica);
    assert.equal(restarted.nodeId, before.nodeId);
    assert.ok(restarted.seq > before.seq, `restarted at ${restarted.seq}, had ${before.seq} before the burst: what it wrote survived`);
    const rootStatus = await converged(root, [replica]);
    const status = await statusOf(replica);
    assert.equal(status.replication.snapshotsInstalled, 0, 'resumed from its own log, not a snapshot');
    assert.equal(status.keys, rootStatus.keys);
    await assertSameChain(replica, root);
    assert.equal(await get(replica, burstKey('crash/', CRASH_ENTRIES - 1)), `${CRASH_ENTRIES - 1}:${CRASH_VALUE}`);
    assert.equal(await get(replica, burstKey('after/', 19)), `19:${VALUE}`);
  });
});
