/**
 * Crash - a diverged replica killed in the middle of the resync an operator asked for, and a diverged relay killed
 * before anyone resyncs it (docs/decisions.md, record 58). The root is restored from an older backup and commits past
 * the replica's head, so the replica's chain forks from it and it stops following.
 *
 * The resync's snapshot is staged apart, and the kill falls inside it (a proxy hands over only its first bytes). The
 * request was recorded in the store before it was acknowledged, so the restarted replica, on its old forked store,
 * whole (verify passes), carries the resync on without being asked again and converges to the root's chain; the
 * install removes the record, so the next restart follows without another snapshot. (Before the record, the restarted
 * replica forgot the request and stayed diverged until the operator asked again.)
 *
 * A relay that stopped for divergence and is restarted while its upstream is down stays stopped (phase diverged, not
 * ready) and serves none of its forked chain: a new child is refused UPSTREAM_DIVERGED. (Before the record, it forgot
 * the divergence and gave the child a snapshot of the forked chain.) After a machine crash (simulated: killed, then
 * started under another boot id) the record is gone with the forked chain it describes: the relay starts empty, not
 * diverged, serves nothing of the fork, and joins the root's chain by itself once the root is back (record 58: why the
 * records are not synced).
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { request } from './support/http.js';
import { freePort, stallingProxy } from './support/net.js';
import { runCli, stopProcess, type ServeProcess } from './support/process.js';
import { assertSameChain, converged, eventually, forkRoot, get, statusOf, treeForSuite, type StatusJson } from './support/tree.js';

const KEYS = 6_000;
const VALUE = 'd'.repeat(1024);
/** Bytes of the resync's stream the proxy forwards: a few snapshot chunks of the ~6 MB. */
const FORWARD_BYTES = 2.5 * 1024 * 1024;

describe('crash - a diverged replica killed during its resync', () => {
  const tree = treeForSuite('crash-resync-diverged');
  const { dir, serve } = tree;

  /**
   * A relay (`NAME-relay`, started with `relayArgs` besides its upstream) that followed a root (`NAME-root`) and stopped
   * for divergence once that root was restored from an older backup (`NAME-root2`, at the same ports: `rootArgs`).
   */
  async function divergedRelay(name: string, relayArgs: string[] = []): Promise<{ root: ServeProcess; rootArgs: string[]; relay: ServeProcess; forked: StatusJson }> {
    const rootArgs = ['--listen', `127.0.0.1:${await freePort()}`, '--replication-listen', `127.0.0.1:${await freePort()}`];
    const oldRoot = await serve(`${name}-root`, rootArgs);
    const client = new NodeClient(oldRoot.url);
    for (let i = 0; i < 5; i++) await client.put(`shared/${i}`, 'both');
    const backup = join(dir, `${name}-backup.snap`);
    assert.equal((await runCli(['snapshot', 'save', backup, '--url', oldRoot.url])).code, 0);
    for (let i = 0; i < 3; i++) await client.put(`fork/old${i}`, 'old');
    const relay = await serve(`${name}-relay`, ['--upstream', oldRoot.replication, ...relayArgs]);
    const forked = await converged(oldRoot, [relay]);

    const root = await forkRoot(tree, oldRoot, backup, `${name}-root2`, rootArgs);
    await eventually(
      async () => (await statusOf(relay)).replication.phase === 'diverged',
      async () => `the relay did not find the fork: ${JSON.stringify((await statusOf(relay)).replication)}`,
      20_000,
    );
    return { root, rootArgs, relay, forked };
  }

  /** Waits until `leaf`, which lists only a relay holding the forked chain, is refused UPSTREAM_DIVERGED, having joined nothing. */
  async function refusedByRelay(leaf: ServeProcess, relay: string): Promise<void> {
    await eventually(
      async () => /UPSTREAM_DIVERGED/.test((await statusOf(leaf)).replication.lastFailure ?? ''),
      async () => `the leaf was not refused by the ${relay} relay: ${JSON.stringify((await statusOf(leaf)).replication)}; keys: ${(await statusOf(leaf)).keys}`,
      20_000,
    );
    const leafStatus = await statusOf(leaf);
    assert.equal(leafStatus.datasetId, '', 'the leaf joined nothing');
    assert.equal(leafStatus.keys, 0);
    assert.equal(await get(leaf, 'fork/old0'), undefined, 'the forked chain went to no child');
  }

  test('crash resync diverged: killed mid-resync, the restarted replica carries the resync on and converges without being asked again', async () => {
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
      const root = await forkRoot(tree, oldRoot, backup, 'root2', rootArgs);
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

      // Restarted, on its old forked store: the recorded request carries the resync on, with nobody asking again.
      proxy.setLimit(Number.MAX_SAFE_INTEGER);
      replica = await serve('replica', ['--upstream', proxy.address]);
      await converged(root, [replica]);
      await assertSameChain(replica, root);
      assert.equal(await get(replica, 'fork/old0'), undefined, 'the forked chain is gone');
      assert.equal(await get(replica, 'fork/new5'), 'new');
      const status = await statusOf(replica);
      assert.notEqual(status.headHash, forked.headHash);
      assert.equal(status.keys, KEYS + 6);
      assert.equal(status.replication.resyncPending, false);
      assert.equal((await request(replica.url, 'GET', '/readyz')).status, 200);

      // The install removed the record: the next start follows from its head, without another snapshot.
      await stopProcess(replica.child, 'SIGKILL');
      replica = await serve('replica', ['--upstream', proxy.address]);
      await new NodeClient(root.url).put('fork/after', 'restart');
      await converged(root, [replica]);
      const again = await statusOf(replica);
      assert.equal(again.replication.snapshotsInstalled, 0, 'no resync after the completed one');
      assert.equal(again.replication.resyncPending, false);
    } finally {
      await proxy.close();
    }
  });

  test('crash diverged relay: restarted while its upstream is down, it stays diverged and serves its forked chain to no child', async () => {
    const diverged = await divergedRelay('restart');
    let { root, relay } = diverged;
    const { rootArgs, forked } = diverged;

    // Killed, and restarted while the root is down: nothing can tell it again that its chain forked.
    await stopProcess(relay.child, 'SIGKILL');
    await stopProcess(root.child, 'SIGTERM');
    relay = await serve('restart-relay', ['--upstream', root.replication]);
    const status = await statusOf(relay);
    assert.equal(status.replication.phase, 'diverged', JSON.stringify(status.replication));
    assert.equal(status.seq, forked.seq);
    assert.equal(status.headHash, forked.headHash);
    assert.match(status.replication.divergedReason ?? '', /CHAIN_DIVERGED/);
    assert.equal((await request(relay.url, 'GET', '/readyz')).status, 503);

    const leaf = await serve('restart-leaf', ['--upstream', relay.replication]);
    await refusedByRelay(leaf, 'diverged');

    // A machine crash: killed, and started under another boot id (what a reboot leaves). The unsynced guard discards
    // the store, the record with the forked chain it describes: empty, the relay has nothing of the fork to serve.
    // Its replication port kept: the leaf follows it there.
    const relayReplication = relay.replication;
    await stopProcess(relay.child, 'SIGKILL');
    writeFileSync(join(relay.dataDir, 'unsynced-guard.json'), JSON.stringify({ bootId: 'an-earlier-boot', clean: false }));
    relay = await serve('restart-relay', ['--upstream', root.replication, '--listen', '127.0.0.1:0', '--replication-listen', relayReplication]);
    const rebooted = await statusOf(relay);
    assert.notEqual(rebooted.replication.phase, 'diverged', JSON.stringify(rebooted.replication));
    assert.equal(rebooted.seq, 0);
    assert.equal(rebooted.keys, 0);
    assert.equal(await get(relay, 'fork/old0'), undefined);

    // The root back: the relay joins its chain by itself (the snapshot a resync would have asked for), the leaf too.
    root = await serve('restart-root2', rootArgs);
    await converged(root, [relay, leaf]);
    await assertSameChain(relay, root);
    assert.equal(await get(leaf, 'fork/old0'), undefined);
    assert.equal(await get(leaf, 'fork/new5'), 'new');
    assert.equal((await request(relay.url, 'GET', '/readyz')).status, 200);
  });

  test('crash diverged relay: resynced while its upstream is down, it refuses its children as before, across a restart, until the snapshot installs', async () => {
    const relayArgs = ['--listen', '127.0.0.1:0', '--replication-listen', `127.0.0.1:${await freePort()}`];
    const diverged = await divergedRelay('resync', relayArgs);
    let { root, relay } = diverged;

    // The operator resyncs the relay while the root is down: until a snapshot replaces it, the relay holds the forked
    // chain. (Before, the request alone ended the refusals: a leaf that joined meanwhile took a snapshot of the fork.)
    await stopProcess(root.child, 'SIGTERM');
    await new NodeClient(relay.url).resync();
    const resyncing = await statusOf(relay);
    assert.equal(resyncing.replication.resyncPending, true);
    assert.notEqual(resyncing.replication.phase, 'diverged', 'the relay follows again, for its snapshot');
    const leaf = await serve('resync-leaf', ['--upstream', relay.replication]);
    await refusedByRelay(leaf, 'resyncing');

    // Restarted with the resync still pending (the recorded request carries it on): the same.
    await stopProcess(relay.child, 'SIGKILL');
    relay = await serve('resync-relay', ['--upstream', root.replication, ...relayArgs]);
    assert.equal((await statusOf(relay)).replication.resyncPending, true);
    await stopProcess(leaf.child, 'SIGKILL');
    const leafAgain = await serve('resync-leaf', ['--upstream', relay.replication]);
    await refusedByRelay(leafAgain, 'restarted');

    // The root back: the resync installs the root's snapshot, and the leaf follows the relay on the root's chain.
    root = await serve('resync-root2', diverged.rootArgs);
    await converged(root, [relay, leafAgain]);
    await assertSameChain(leafAgain, root);
    assert.equal(await get(leafAgain, 'fork/old0'), undefined);
    assert.equal(await get(leafAgain, 'fork/new5'), 'new');
  });
});
