/**
 * Hostile input - resync: five unauthenticated `POST /v1/replication/resync` at once used to start five full
 * snapshots on the upstream. One runs at a time; the others are refused with 409 RESYNC_IN_PROGRESS until its
 * snapshot is installed, and nothing acknowledged is lost.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { assertError, request } from './support/http.js';
import { MiB, assertHealthzAnswers, assertRssGrowthUnder, rssBytes } from './support/hostile.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { FlipProxy, assertSameChain, converged, eventually, statusOf } from './support/tree.js';

const RESYNC_REQUESTS = 5;
const KEYS = 50;
/**
 * Growth of the replica's and the root's processes over the attack. The dataset is 50 small keys, so one snapshot
 * costs kilobytes; five started at once would cost five sessions and five snapshot readers on the root. 32 MiB is the
 * bound of the whole exchange (JIT and allocator noise of a fresh process included), measured per process.
 */
const RESYNC_RSS_GROWTH_BYTES_MAX = 32 * MiB;

describe('hostile input - resync', () => {
  const dir = makeTempDir('hostile-resync');
  const running: ServeProcess[] = [];
  let proxy: FlipProxy | undefined;
  after(async () => {
    await proxy?.close();
    await Promise.all(running.map((node) => stopProcess(node.child)));
    removeDir(dir);
  });

  test('resync: concurrent requests start one snapshot; the rest get RESYNC_IN_PROGRESS until it is installed', async () => {
    const root = await startServe(join(dir, 'root'));
    running.push(root);
    const acknowledged = new Map<string, string>();
    for (let i = 0; i < KEYS; i++) {
      const response = await request(root.url, 'PUT', `/v1/kv/k-${i}`, { body: `v-${i}` });
      assert.equal(response.status, 200);
      acknowledged.set(`k-${i}`, `v-${i}`);
    }
    proxy = await FlipProxy.start(root.replication);
    const replica = await startServe(join(dir, 'replica'), ['--upstream', proxy.address]);
    running.push(replica);
    await converged(root, [replica]);
    const joined = await statusOf(replica);
    assert.equal(joined.replication.resyncPending, false);
    const connectionsBefore = proxy.accepted;

    // Hold the replica's next connection to its upstream, so the resync is still running whatever the machine's speed.
    proxy.holding = true;
    const replicaPid = replica.child.pid;
    assert.ok(replicaPid !== undefined, 'the replica process runs');
    const [replicaRssBefore, rootRssBefore] = [rssBytes(replica.child.pid), rssBytes(root.child.pid)];
    const [responses] = await Promise.all([
      Promise.all(Array.from({ length: RESYNC_REQUESTS }, () => request(replica.url, 'POST', '/v1/replication/resync'))),
      assertHealthzAnswers(replica.url, 'during the resync requests', replicaPid),
    ]);
    const started = responses.filter((response) => response.status === 202);
    assert.equal(started.length, 1, `statuses: ${responses.map((response) => response.status).join(',')}`);
    for (const response of responses.filter((r) => r.status !== 202)) assertError(response, 'RESYNC_IN_PROGRESS', 409);
    assert.equal((await statusOf(replica)).replication.resyncPending, true);
    assertError(await request(replica.url, 'POST', '/v1/replication/resync'), 'RESYNC_IN_PROGRESS', 409);
    await assertHealthzAnswers(replica.url, 'while the resync waits for its upstream', replicaPid);
    // One resync, one new connection to the upstream (the refused ones did not touch the session).
    await eventually(
      () => Promise.resolve(proxy!.accepted === connectionsBefore + 1),
      () => `${proxy!.accepted - connectionsBefore} new connections`,
    );

    proxy.release();
    await eventually(
      async () => {
        const status = await statusOf(replica);
        return !status.replication.resyncPending && status.replication.snapshotsInstalled === joined.replication.snapshotsInstalled! + 1;
      },
      async () => JSON.stringify((await statusOf(replica)).replication),
    );
    await converged(root, [replica]);
    assert.equal(proxy.accepted, connectionsBefore + 1, 'one snapshot session for five requests');
    assertRssGrowthUnder(replicaRssBefore, RESYNC_RSS_GROWTH_BYTES_MAX, 'the replica, after five resync requests', replica.child.pid);
    assertRssGrowthUnder(rootRssBefore, RESYNC_RSS_GROWTH_BYTES_MAX, 'the root, after serving the resync', root.child.pid);
    for (const [key, value] of acknowledged) {
      const response = await request(replica.url, 'GET', `/v1/kv/${key}`);
      assert.equal(response.body.toString(), value, `acknowledged ${key} on the replica`);
    }
    await assertSameChain(replica, root);
    // Once installed, the next resync is accepted again.
    assert.equal((await request(replica.url, 'POST', '/v1/replication/resync')).status, 202);
    await eventually(
      async () => !(await statusOf(replica)).replication.resyncPending,
      async () => JSON.stringify((await statusOf(replica)).replication),
    );
  });
});
