/**
 * Replication pause: a replica whose replication a storage failure paused (status `replication.storagePause`, /readyz
 * "replication paused, retried every second"). The pause ended only with an apply or a snapshot install, so it
 * outlived its cause when the retry reached a state where nothing is applied (audit, 2026-12-07):
 * - a failed record of a divergence: the retry found the fork again and recorded it, but nothing is applied while
 *   diverged, so the pause stayed until an operator's resync, with the disk fine and the replica diverged;
 * - a retry that meets damaged data in the store halts replication (nothing is retried until an operator resyncs or
 *   restores), yet /readyz said "replication paused, retried every second" beside "NOT_JOINED: replication halted".
 * And the other way round: the replication machine made afresh after the failure started its counts from 0, so status
 * and the gauges that are counters fell, and `mercury resync --wait` gave up RESYNC_STALLED on a resync that a failed
 * install delayed (it waits for one install more than it read, and the retry's made 1 again).
 *
 * A real root and a real replica, in this process so that a store method can fail with the store's own STORAGE_FULL
 * error (support/replica-pause.ts: a full disk cannot be made to fail LMDB's small writes reliably). The fork is real
 * (the root restored from an older backup, written past the replica's head, as in crash-resync-diverged); so is the
 * damage (a key record of the replica's LMDB whose checksum no longer matches, as in data-corruption).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import type { MercuryNode } from '../src/node/index.js';
import { metricValue, request, requestJson } from './support/http.js';
import { rewriteRaw } from './support/lmdb-records.js';
import { freePort } from './support/net.js';
import { runCli } from './support/process.js';
import { diskFullFault, failWithFullDisk, followingReplica } from './support/replica-pause.js';
import { eventually, forkRoot, treeForSuite } from './support/tree.js';

describe('replication pause', () => {
  const tree = treeForSuite('replication-pause');
  const { dir, serve } = tree;
  let replica: MercuryNode | undefined;
  // Before the suite's directory is removed (its `after` was registered first, and runs first).
  afterEach(async () => {
    await replica?.close();
    replica = undefined;
  });

  test('replication pause: the record of a divergence, written on the retry, ends the pause its failure began', async () => {
    const rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
    const oldRoot = await serve('fork-root', rootArgs);
    for (let i = 0; i < 5; i++) await new NodeClient(oldRoot.url).put(`shared/${i}`, 'both');
    const backup = join(dir, 'backup.snap');
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', oldRoot.url])).code, 0);
    for (let i = 0; i < 3; i++) await new NodeClient(oldRoot.url).put(`fork/old${i}`, 'old');

    const errors: string[] = [];
    const following = await followingReplica(join(dir, 'fork-replica'), oldRoot.replication, oldRoot.url, errors);
    replica = following.replica;
    const { status } = following;
    const url = replica.url;

    // The store's own error for a full disk (what its write transaction throws), until the test has seen the pause.
    const store = replica.store;
    const { faults, heal } = failWithFullDisk(store, 'recordDivergence');

    // The root restored from the backup, past the replica's head: the replica's retry meets the fork again.
    await forkRoot(tree, oldRoot, backup, 'fork-root2', rootArgs);

    await eventually(
      async () => faults.length > 0 && (await status()).replication.storagePause !== null,
      async () => `the failed record did not pause replication: ${faults.length} attempts; ${JSON.stringify((await status()).replication)}`,
      20_000,
    );
    assert.equal(faults[0]!.code, 'STORAGE_FULL');
    const paused = await status();
    assert.equal(paused.replication.storagePause?.code, 'STORAGE_FULL');
    assert.notEqual(paused.replication.phase, 'diverged', 'nothing recorded: the retry looks again');
    assert.match((await request(url, 'GET', '/readyz')).body.toString(), /STORAGE_FULL: replication paused, retried every second/);
    assert.ok(errors.some((line) => line.startsWith('replication paused: the store cannot write')), errors.join('\n'));

    // The disk is fine again: a retry finds the fork and records it.
    heal();
    await eventually(
      () => Promise.resolve(store.recordedDivergence() !== undefined),
      async () => `the retry did not record the divergence: ${JSON.stringify((await status()).replication)}`,
      20_000,
    );
    const diverged = await status();
    assert.equal(diverged.replication.phase, 'diverged', JSON.stringify(diverged.replication));
    assert.match(diverged.replication.divergedReason ?? '', /CHAIN_DIVERGED/);
    assert.equal(diverged.replication.storagePause, null, 'the pause ended with the record');
    const ready = await request(url, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.doesNotMatch(ready.body.toString(), /replication paused/);
    assert.match(ready.body.toString(), /NOT_JOINED: the replica is diverged/);
  });

  test('replication pause: the replica made afresh keeps its counts, so `mercury resync --wait` sees a resync done across a failed install', async () => {
    const root = await serve('count-root');
    for (let i = 0; i < 3; i++) await requestJson(root.url, 'PUT', `/v1/kv/count/${i}`, { body: 'value' });

    const errors: string[] = [];
    const following = await followingReplica(join(dir, 'count-replica'), root.replication, root.url, errors);
    replica = following.replica;
    const { status } = following;
    const url = replica.url;
    const joined = (await status()).replication;
    assert.equal(joined.snapshotsInstalled, 1, 'joined by a snapshot');
    const switches = joined.upstreamSwitches ?? 0;
    assert.ok(switches >= 1);

    // The resync's snapshot arrives whole, and its install meets a full disk until the test has seen the pause.
    const { faults, heal } = failWithFullDisk(replica.store, 'finishSnapshotInstall');
    const waited = runCli(['resync', '--url', url, '--wait', '--wait-timeout-ms', '4000']);
    await eventually(
      async () => faults.length > 0 && (await status()).replication.storagePause !== null,
      async () => `the failed install did not pause replication: ${faults.length} attempts; ${JSON.stringify((await status()).replication)}`,
    );
    const paused = (await status()).replication;
    const pausedSwitches = await metricValue(url, /^mercury_replication_upstream_switches /);
    heal();
    const result = await waited;

    // `resync --wait` took the installs it had read before it asked, and waits for one more: the machine made afresh
    // after the failure counted from 0, so the retry's install made 1, never more, and it gave up RESYNC_STALLED.
    assert.equal(result.code, 0, `${result.stderr}\n${JSON.stringify((await status()).replication)}`);
    assert.match(result.stdout.toString(), /^resync done in /);
    // Counts since start, in status and in the gauges that are counters: a pause is not a restart.
    assert.equal(paused.snapshotsInstalled, 1, 'the failed install is not counted, the join still is');
    assert.ok((paused.upstreamSwitches ?? 0) >= switches, `upstream switches went from ${switches} to ${paused.upstreamSwitches}`);
    assert.ok(pausedSwitches >= switches, `mercury_replication_upstream_switches went from ${switches} to ${pausedSwitches}`);
    const done = (await status()).replication;
    assert.equal(done.snapshotsInstalled, 2, 'the join and the resync');
    assert.equal(await metricValue(url, /^mercury_replication_snapshots_installed_total /), 2, 'status and the metric agree');
    assert.ok(errors.some((line) => line.startsWith('replication paused: the store cannot write')), errors.join('\n'));
  });

  test('replication pause: a halt on damaged data, met by the retry, ends the pause; a resync that cannot be recorded leaves none, one that can follows', async () => {
    const root = await serve('halt-root');
    await requestJson(root.url, 'PUT', '/v1/kv/victim', { body: 'sound' });

    const errors: string[] = [];
    const replicaDir = join(dir, 'halt-replica');
    const following = await followingReplica(replicaDir, root.replication, root.url, errors);
    replica = following.replica;
    const { status } = following;
    const url = replica.url;

    // The store's own error for a full disk (what its write transaction throws), until the test has seen the pause.
    const store = replica.store;
    const { faults, heal } = failWithFullDisk(store, 'applyVerified');

    const { seq: putSeq } = await requestJson<{ seq: number }>(root.url, 'PUT', '/v1/kv/victim', { body: 'new value' });
    await eventually(
      async () => faults.length > 0 && (await status()).replication.storagePause !== null,
      async () => `the failed apply did not pause replication: ${faults.length} attempts; ${JSON.stringify((await status()).replication)}`,
    );
    assert.equal(faults[0]!.code, 'STORAGE_FULL');
    assert.match((await request(url, 'GET', '/readyz')).body.toString(), /STORAGE_FULL: replication paused, retried every second/);

    // While paused, the key's record is damaged on disk; the disk has room again, and the retry's put reads the record.
    await rewriteRaw(replicaDir, 'kv', 'victim', (stored) => {
      stored[stored.length - 1]! ^= 0x01;
      return stored;
    });
    heal();
    await eventually(
      async () => (await status()).replication.phase === 'halted',
      async () => `the retry did not halt on the damage: ${JSON.stringify((await status()).replication)}`,
    );
    const halted = await status();
    assert.ok(halted.seq < putSeq, 'the put was not applied');
    assert.match(halted.replication.lastFailure ?? '', /^DATA_CORRUPTED: /);
    assert.equal(halted.replication.storagePause, null, 'nothing is retried after a halt: the pause ended with it');
    const ready = await request(url, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.doesNotMatch(ready.body.toString(), /replication paused/);
    assert.match(ready.body.toString(), /NOT_JOINED: replication halted on damaged data/);
    assert.ok(errors.some((line) => line.startsWith('replication paused: the store cannot write')), errors.join('\n'));

    // A resync request whose record cannot be written is answered STORAGE_FULL and changes nothing: the replica stays
    // halted, with no pause (nothing of replication retries it: the operator does).
    const requestResync = store.requestResync.bind(store);
    store.requestResync = () => {
      store.requestResync = requestResync;
      throw diskFullFault();
    };
    assert.equal((await request(url, 'POST', '/v1/replication/resync')).status, 507);
    const refused = await status();
    assert.equal(refused.replication.phase, 'halted');
    assert.equal(refused.replication.resyncPending, false);
    assert.equal(refused.replication.storagePause, null);
    assert.doesNotMatch((await request(url, 'GET', '/readyz')).body.toString(), /replication paused/);

    // The operator's resync: the snapshot replaces the damaged record, and the replica follows, with no pause.
    assert.equal((await request(url, 'POST', '/v1/replication/resync')).status, 202);
    await eventually(
      async () => {
        const { seq, replication } = await status();
        return replication.phase === 'streaming' && seq >= putSeq;
      },
      async () => `the resync did not bring the replica back: ${JSON.stringify((await status()).replication)}`,
    );
    assert.equal((await status()).replication.storagePause, null);
    assert.equal((await request(url, 'GET', '/v1/kv/victim')).body.toString(), 'new value');
    // The snapshot replaced the key space and the log, the damaged record with them: the store is sound again and the
    // replica ready, without the restart it took before (left by the replication audit, 2026-12-07).
    const storage = (await requestJson<{ storage: { sound: boolean; damageMet: number } }>(url, 'GET', '/v1/status')).storage;
    assert.deepEqual([storage.sound, storage.damageMet], [true, 0]);
    const readyAfter = await request(url, 'GET', '/readyz');
    assert.equal(readyAfter.status, 200, readyAfter.body.toString());
  });
});
