/**
 * Replication pause - a replica whose record of a divergence failed for the storage. The pause (status
 * `replication.storagePause`, /readyz "replication paused, retried every second") ended only with an apply or a
 * snapshot install; the retry found the fork again and recorded it, but nothing is applied while diverged, so the pause
 * stayed until an operator's resync, with the disk fine and the replica diverged (review, audit-pause).
 *
 * A real root forked as in crash-resync-diverged (restored from an older backup, written past the replica's head) and
 * a real replica, in this process so that its store's `recordDivergence` can fail once with the store's own STORAGE_FULL
 * error: a full disk cannot be made to fail LMDB's small meta write reliably (freed pages are reused).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import type { MercuryNode } from '../src/node/index.js';
import type { MercuryError } from '../src/errors/index.js';
import { request } from './support/http.js';
import { freePort } from './support/net.js';
import { runCli } from './support/process.js';
import { diskFullFault, followingReplica } from './support/replica-pause.js';
import { eventually, forkRoot, treeForSuite } from './support/tree.js';

describe('replication pause - a failed divergence record', () => {
  const tree = treeForSuite('replication-pause-diverged');
  const { dir, serve } = tree;
  let replica: MercuryNode | undefined;
  // Before the suite's directory is removed (its `after` was registered first, and runs first).
  afterEach(async () => {
    await replica?.close();
    replica = undefined;
  });

  test('replication pause: the record of a divergence, written on the retry, ends the pause its failure began', async () => {
    const rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
    const oldRoot = await serve('root', rootArgs);
    for (let i = 0; i < 5; i++) await new NodeClient(oldRoot.url).put(`shared/${i}`, 'both');
    const backup = join(dir, 'backup.snap');
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', oldRoot.url])).code, 0);
    for (let i = 0; i < 3; i++) await new NodeClient(oldRoot.url).put(`fork/old${i}`, 'old');

    const errors: string[] = [];
    const following = await followingReplica(join(dir, 'replica'), oldRoot.replication, oldRoot.url, errors);
    replica = following.replica;
    const { status } = following;
    const url = replica.url;

    // The store's own error for a full disk (what its write transaction throws), until the test has seen the pause.
    const store = replica.store;
    const record = store.recordDivergence.bind(store);
    let failing = true;
    const faults: MercuryError[] = [];
    store.recordDivergence = (head, reason) => {
      if (failing) {
        const fault = diskFullFault();
        faults.push(fault);
        throw fault;
      }
      record(head, reason);
    };

    // The root restored from the backup, past the replica's head: the replica's retry meets the fork again.
    await forkRoot(tree, oldRoot, backup, 'root2', rootArgs);

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
    failing = false;
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
});
