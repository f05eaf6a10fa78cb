/**
 * Replication - a replica killed in the middle of its first snapshot. A replica that never joined writes the snapshot
 * straight into its key database (docs/decisions.md, record 35), so what it leaves behind mid-install must read as an
 * empty store at seq 0, to the next start and to any other reader of the directory, and the next start must install
 * the snapshot from nothing. Real `mercury serve` processes on loopback; a proxy between root and replica forwards
 * only the first bytes of the snapshot, so the kill always falls inside it. The completed install is then read back
 * whole.
 *
 * And a joined replica killed in the middle of a resync: a replica that holds data stages the new snapshot apart
 * (`staging`) and keeps its old key space and chain until the whole snapshot is verified and switched in one
 * transaction, so the kill must leave its old store whole (head, keys, `mercury verify`), and the next start must drop
 * the staged records and converge to the root's chain.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { Store } from '../src/store/index.js';
import { stallingProxy } from './support/net.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { assertSameChain, converged, eventually, get, statusOf, type StatusJson } from './support/tree.js';

const KEYS = 6_000;
const VALUE = 'j'.repeat(1024);
/** Bytes of the root's stream the proxy forwards before it stops: a few snapshot chunks of the ~6 MB. */
const FORWARD_BYTES = 2.5 * 1024 * 1024;

function joinKey(i: number): string {
  return `join/${String(i).padStart(5, '0')}`;
}

describe('replication - a replica killed during its first snapshot, or during a resync', () => {
  const dir = makeTempDir('repl-join-crash');
  let root: ServeProcess;
  let replica: ServeProcess | undefined;
  let resynced: ServeProcess | undefined;

  before(async () => {
    root = await startServe(join(dir, 'root'));
    const client = new NodeClient(root.url);
    for (let start = 0; start < KEYS; start += 1_000)
      await client.txn({ success: Array.from({ length: 1_000 }, (_, i) => ({ op: 'put' as const, key: joinKey(start + i), value: `${start + i}:${VALUE}` })) });
  });
  after(async () => {
    await stopProcess(root.child);
    if (replica !== undefined) await stopProcess(replica.child);
    if (resynced !== undefined) await stopProcess(resynced.child);
    removeDir(dir);
  });

  test('replication: what a replica killed mid-install leaves reads as an empty store at seq 0, and its next start installs the whole snapshot', async () => {
    const proxy = await stallingProxy(root.replication, FORWARD_BYTES);
    const replicaDir = join(dir, 'replica');
    replica = await startServe(replicaDir, ['--upstream', proxy.address]);
    // Killed once part of the snapshot is written to its key database; the rest never arrives.
    await eventually(
      async () => ((await statusOf(replica!)).replication.snapshot?.keysReceived ?? 0) > 0,
      () => 'the replica never received any of the snapshot',
      20_000,
    );
    await stopProcess(replica.child, 'SIGKILL');
    await proxy.close();

    // Another reader of the directory (openLocal, mercury verify) sees nothing of the half-installed snapshot.
    const reader = Store.open({ path: replicaDir, readOnly: true, lock: false, createDataset: false });
    try {
      assert.equal(reader.head().seq, 0);
      assert.equal(reader.sizes().keys, 0);
      assert.equal(reader.get(Buffer.from(joinKey(0))).record, undefined);
      assert.deepEqual(reader.range(Buffer.from('join/'), Buffer.from('join0'), 10).items, []);
    } finally {
      await reader.close();
    }

    replica = await startServe(replicaDir, ['--upstream', root.replication]);
    assert.equal(await get(replica, joinKey(0)), undefined, 'at seq 0 the restarted replica answers no key');
    const rootStatus = await converged(root, [replica]);
    const status = await statusOf(replica);
    assert.equal(status.keys, rootStatus.keys);
    assert.equal(status.keys, KEYS);
    await assertSameChain(replica, root);
    // Every key and value, not a sample: the replica staged each ~1 MiB chunk from memory its decoder then reused for
    // the next chunk (FrameDecoder.release).
    let seen = 0;
    for await (const item of new NodeClient(replica.url).range('join/', 1_000)) {
      assert.equal(item.key.toString(), joinKey(seen));
      assert.equal(item.value.toString(), `${seen}:${VALUE}`);
      seen++;
    }
    assert.equal(seen, KEYS);
  });

  test('replication: a joined replica killed mid-resync keeps its old store whole, verifies, and its restart converges', async () => {
    const proxy = await stallingProxy(root.replication, Number.MAX_SAFE_INTEGER);
    const resyncedDir = join(dir, 'resynced');
    let joined: StatusJson;
    try {
      resynced = await startServe(resyncedDir, ['--upstream', proxy.address]);
      await converged(root, [resynced]);
      // Entries past the joining snapshot: the replica's own chain, which a resync replaces.
      const client = new NodeClient(root.url);
      for (let i = 0; i < 5; i++) await client.put(`resynced/${i}`, `${i}`);
      joined = await converged(root, [resynced]);

      // The next connection (the resync's) gets only part of the snapshot.
      proxy.setLimit(FORWARD_BYTES);
      await new NodeClient(resynced.url).resync();
      await eventually(
        async () => {
          const status = await statusOf(resynced!);
          return status.replication.resyncPending === true && (status.replication.snapshot?.keysReceived ?? 0) > 0;
        },
        async () => `the replica never received any of the resync's snapshot: ${JSON.stringify((await statusOf(resynced!)).replication)}`,
        20_000,
      );
      await stopProcess(resynced.child, 'SIGKILL');
    } finally {
      await proxy.close();
    }

    // The old store, whole, to another reader of the directory and to verify.
    const reader = Store.open({ path: resyncedDir, readOnly: true, lock: false, createDataset: false });
    try {
      assert.equal(reader.head().seq, joined.seq);
      assert.equal(reader.head().hash.toString('hex'), joined.headHash);
      assert.equal(reader.sizes().keys, joined.keys);
      assert.equal(reader.get(Buffer.from(joinKey(KEYS - 1))).record?.value.toString(), `${KEYS - 1}:${VALUE}`);
    } finally {
      await reader.close();
    }
    const verified = await runCli(['verify', '--data-dir', resyncedDir]);
    assert.equal(verified.code, 0, `verify: ${verified.stdout.toString()} ${verified.stderr}`);

    // Restarted (straight to the root), the replica serves its old data at once, and converges to the root's chain.
    resynced = await startServe(resyncedDir, ['--upstream', root.replication]);
    assert.equal(await get(resynced, 'resynced/4'), '4');
    await new NodeClient(root.url).put('resynced/restart', 'yes');
    const rootStatus = await converged(root, [resynced]);
    assert.equal((await statusOf(resynced)).keys, rootStatus.keys);
    await assertSameChain(resynced, root);
    assert.equal(await get(resynced, 'resynced/restart'), 'yes');
    // A resync asked for again completes.
    await new NodeClient(resynced.url).resync();
    await eventually(
      async () => (await statusOf(resynced!)).replication.resyncPending === false,
      async () => `the second resync did not complete: ${JSON.stringify((await statusOf(resynced!)).replication)}`,
      20_000,
    );
    await converged(root, [resynced]);
    await assertSameChain(resynced, root);
  });
});
