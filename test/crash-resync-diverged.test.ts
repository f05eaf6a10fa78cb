/**
 * Crash - a diverged replica killed in the middle of the resync an operator asked for. The root is restored from an
 * older backup and commits past the replica's head, so the replica's chain forks from it and it stops following. The
 * resync's snapshot is staged apart, and the kill falls inside it (a proxy hands over only its first bytes). The
 * resync request lives in memory only, so after the restart the replica holds its old, forked store, whole (verify
 * passes): it must find the fork again and say so (phase diverged, /readyz 503), never serve the forked data as ready
 * or follow the new chain on top of it; a resync asked again completes and it converges to the root's chain.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { request } from './support/http.js';
import { freePort, stallingProxy } from './support/net.js';
import { runCli, stopProcess } from './support/process.js';
import { assertSameChain, converged, eventually, get, statusOf, treeForSuite } from './support/tree.js';

const KEYS = 6_000;
const VALUE = 'd'.repeat(1024);
/** Bytes of the resync's stream the proxy forwards: a few snapshot chunks of the ~6 MB. */
const FORWARD_BYTES = 2.5 * 1024 * 1024;

describe('crash - a diverged replica killed during its resync', () => {
  const { dir, serve } = treeForSuite('crash-resync-diverged');

  test('crash resync diverged: killed mid-resync, the replica restarts diverged and not ready, and a resync asked again converges', async () => {
    // Fixed ports: the restored root takes the old one's place, where the proxy points.
    const rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
    const oldRoot = await serve('root', rootArgs);
    const client = new NodeClient(oldRoot.url);
    for (let start = 0; start < KEYS; start += 1_000)
      await client.txn({ success: Array.from({ length: 1_000 }, (_, i) => ({ op: 'put' as const, key: `big/${start + i}`, value: `${start + i}:${VALUE}` })) });
    const backup = join(dir, 'backup.snap');
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', oldRoot.url])).code, 0);
    for (let i = 0; i < 3; i++) await client.put(`fork/old${i}`, 'old');

    const proxy = await stallingProxy(oldRoot.replication, Number.MAX_SAFE_INTEGER);
    try {
      let replica = await serve('replica', ['--upstream', proxy.address]);
      const forked = await converged(oldRoot, [replica]);

      // The root restored from the backup, and written past the replica's head: their chains fork.
      await stopProcess(oldRoot.child, 'SIGTERM');
      const restored = await runCli(['snapshot', 'restore', backup, '--data-dir', join(dir, 'root2')]);
      assert.equal(restored.code, 0, restored.stderr);
      const root = await serve('root2', rootArgs);
      for (let i = 0; i < 6; i++) await new NodeClient(root.url).put(`fork/new${i}`, 'new');
      await eventually(
        async () => (await statusOf(replica)).replication.phase === 'diverged',
        async () => `the replica did not find the fork: ${JSON.stringify((await statusOf(replica)).replication)}`,
        20_000,
      );

      proxy.setLimit(FORWARD_BYTES);
      await new NodeClient(replica.url).resync();
      await eventually(
        async () => ((await statusOf(replica)).replication.snapshot?.keysReceived ?? 0) > 0,
        async () => `the replica received none of the resync's snapshot: ${JSON.stringify((await statusOf(replica)).replication)}`,
        20_000,
      );
      await stopProcess(replica.child, 'SIGKILL');
      const verified = await runCli(['verify', '--data-dir', replica.dataDir]);
      assert.equal(verified.code, 0, `verify: ${verified.stdout.toString()} ${verified.stderr}`);

      // Restarted, on its old forked store: it finds the fork again, says so, and is not ready.
      proxy.setLimit(Number.MAX_SAFE_INTEGER);
      replica = await serve('replica', ['--upstream', proxy.address]);
      await eventually(
        async () => (await statusOf(replica)).replication.phase === 'diverged',
        async () => `the restarted replica did not find the fork again: ${JSON.stringify((await statusOf(replica)).replication)}`,
        20_000,
      );
      const status = await statusOf(replica);
      assert.equal(status.seq, forked.seq, 'it holds its old head');
      assert.equal(status.headHash, forked.headHash);
      assert.equal(await get(replica, 'fork/new0'), undefined, 'nothing of the new chain was applied on the forked one');
      assert.equal((await request(replica.url, 'GET', '/readyz')).status, 503);

      await new NodeClient(replica.url).resync();
      await converged(root, [replica]);
      await assertSameChain(replica, root);
      assert.equal(await get(replica, 'fork/old0'), undefined);
      assert.equal(await get(replica, 'fork/new5'), 'new');
      assert.equal((await statusOf(replica)).keys, KEYS + 6);
      assert.equal((await request(replica.url, 'GET', '/readyz')).status, 200);
    } finally {
      await proxy.close();
    }
  });
});
