/**
 * Replication pause - a replica paused by a storage failure whose retry meets damaged data in its store. The retry
 * halts replication (nothing is retried until an operator resyncs or restores), but the pause stayed: status
 * `replication.storagePause` kept the old STORAGE_FULL, and /readyz said "replication paused, retried every second"
 * beside "NOT_JOINED: replication halted on damaged data" (audit-halt).
 *
 * A real root and a real replica, in this process so that its store's `applyVerified` can fail once with the store's
 * own STORAGE_FULL error (as in replication-pause-diverged); the damage is real, a key record of the replica's LMDB
 * whose checksum no longer matches (as in data-corruption), which the retry's put of that key reads.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import type { MercuryNode } from '../src/node/index.js';
import type { MercuryError } from '../src/errors/index.js';
import { request, requestJson } from './support/http.js';
import { rewriteRaw } from './support/lmdb-records.js';
import { diskFullFault, followingReplica } from './support/replica-pause.js';
import { eventually, treeForSuite } from './support/tree.js';

describe('replication pause - a retry that meets damaged data', () => {
  const tree = treeForSuite('replication-pause-halted');
  const { dir, serve } = tree;
  let replica: MercuryNode | undefined;
  // Before the suite's directory is removed (its `after` was registered first, and runs first).
  afterEach(async () => {
    await replica?.close();
    replica = undefined;
  });

  test('replication pause: a halt on damaged data, met by the retry, ends the pause; a resync that cannot be recorded leaves none, one that can follows', async () => {
    const root = await serve('root');
    await requestJson(root.url, 'PUT', '/v1/kv/victim', { body: 'sound' });

    const errors: string[] = [];
    const replicaDir = join(dir, 'replica');
    const following = await followingReplica(replicaDir, root.replication, root.url, errors);
    replica = following.replica;
    const { status } = following;
    const url = replica.url;

    // The store's own error for a full disk (what its write transaction throws), until the test has seen the pause.
    const store = replica.store;
    const apply = store.applyVerified.bind(store);
    let failing = true;
    const faults: MercuryError[] = [];
    store.applyVerified = (entries) => {
      if (failing) {
        const fault = diskFullFault();
        faults.push(fault);
        throw fault;
      }
      apply(entries);
    };

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
    failing = false;
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
  });
});
