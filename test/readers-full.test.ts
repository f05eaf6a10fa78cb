/**
 * A node whose LMDB reader table is full (other processes reading the data directory, `openLocal` or `mercury verify`,
 * hold the slots): HTTP reads already answered 503 OVERLOADED (snapshot-readers.test.ts). Found by review G, the other
 * readers threw LMDB's raw error out of a timer or a socket handler, and the process exited: a watch that needed a log
 * read or a snapshot, a child replica's handshake or catch-up. And a replica that forwarded a write answered it 503
 * OVERLOADED (which promises nothing was done) when the read of its own entry's hash after the commit found no reader.
 * Now a watch waits and polls, a child is refused UNAVAILABLE and tries again, and the write is answered 200.
 *
 * The slots are filled in this process, through the node's own environment: a read transaction taken after every
 * commit, each then holding a slot of its own, until LMDB refuses one.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { assertError, request } from './support/http.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';
import { WatchClient } from './support/watch.js';

/** Read transactions held open on a node's environment (lmdb-js's `useReadTransaction`, released with `done`). */
type HeldReaders = { done(): void }[];

/** The node's LMDB environment, private to its store: taken here only to hold its readers. */
function environment(node: MercuryNode): { useReadTransaction(): { done(): void } } {
  return (node.store as unknown as { env: { useReadTransaction(): { done(): void } } }).env;
}

/**
 * Fills `node`'s reader table: `commit` makes the read transaction current until then stale, so the next one takes a
 * new slot. Ends with one more commit, so that the node's next read needs a slot of its own too.
 */
async function fillReaderTable(node: MercuryNode, commit: () => Promise<void>): Promise<HeldReaders> {
  const held: HeldReaders = [];
  for (;;) {
    await commit();
    try {
      held.push(environment(node).useReadTransaction());
    } catch (error) {
      assert.match((error as Error).message, /MDB_READERS_FULL/);
      break;
    }
    assert.ok(held.length <= NODE_LIMITS_TEST.store.readersMax, 'the reader table is bounded');
  }
  await commit();
  return held;
}

describe('a full LMDB reader table', () => {
  const dir = makeTempDir('readers-full');
  const nodes: MercuryNode[] = [];
  const watches: WatchClient[] = [];
  const held: HeldReaders = [];
  const release = (): void => {
    for (const txn of held.splice(0)) txn.done();
  };
  after(async () => {
    release();
    for (const watch of watches) watch.terminate();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  const start = async (name: string, upstreams: string[] = []): Promise<MercuryNode> => {
    const node = await MercuryNode.start(validateConfig({ dataDir: join(dir, name), port: 0, upstreams }), { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(node);
    return node;
  };
  /** Until `replica`'s last failure is its upstream's refusal for want of a reader slot. */
  const refusedForReaders = (replica: MercuryNode): Promise<void> =>
    eventually(
      () => Promise.resolve(/UNAVAILABLE: .*no free reader slot/.test(replica.replicationClient!.status().lastFailure ?? '')),
      () => JSON.stringify(replica.replicationClient!.status()),
    );
  /** Until `replica` streams from `root` at its head. */
  const caughtUp = (replica: MercuryNode, root: MercuryNode): Promise<void> =>
    eventually(
      () => Promise.resolve(replica.replicationClient!.status().phase === 'streaming' && replica.store.head().seq === root.store.head().seq),
      () => JSON.stringify(replica.replicationClient!.status()),
    );
  const put = async (node: MercuryNode, key: string, value: string): Promise<void> => {
    assert.equal((await request(node.url, 'PUT', `/v1/kv/${key}`, { body: value })).status, 200);
  };

  test('readers full: a watch that needs the log or a snapshot waits, the node lives on, and both are served once readers are free', async () => {
    const root = await start('watch-root');
    for (let i = 0; i < 5; i++) await put(root, `k/${i}`, 'v');
    let ticks = 0;
    held.push(...(await fillReaderTable(root, () => put(root, 'tick', String(ticks++)))));
    assertError(await request(root.url, 'GET', '/v1/kv/k/1'), 'OVERLOADED', 503);

    const watch = await WatchClient.connect(root.url);
    watches.push(watch);
    // From seq 1: a log read. Past the head: a reset, i.e. a snapshot of the current state.
    assert.deepEqual(await watch.subscribe('log', ['k/'], { fromSeq: 1 }), { type: 'subscribed', id: 'log', fromSeq: 1 });
    const head = root.store.head().seq;
    await watch.subscribe('reset', ['k/'], { fromSeq: head + 10 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(
      watch.messages.filter((message) => message.type === 'events' || message.type === 'snapshot'),
      [],
      'nothing read while no reader is free',
    );
    assert.equal((await request(root.url, 'GET', '/healthz')).status, 200, 'the node lives on');

    release();
    const first = await watch.waitFor((message) => message.type === 'events' && message.id === 'log', 10_000);
    assert.equal((first as { seq: number }).seq, 1);
    await watch.waitFor((message) => message.type === 'snapshot' && message.id === 'reset' && message.done, 10_000);
  });

  test('readers full: a replica that catches up is refused UNAVAILABLE, the root lives on, and it catches up once readers are free', async () => {
    const root = await start('child-root');
    await put(root, 'a', '1');
    const replica = await start('child-replica', [root.replicationAddress]);
    await eventually(
      () => Promise.resolve(replica.store.head().seq === root.store.head().seq),
      () => JSON.stringify(replica.replicationClient!.status()),
    );
    await replica.close();
    nodes.splice(nodes.indexOf(replica), 1);

    let ticks = 0;
    held.push(...(await fillReaderTable(root, () => put(root, 'tick', String(ticks++)))));
    const behind = await start('child-replica', [root.replicationAddress]);
    await refusedForReaders(behind);
    assert.equal((await request(root.url, 'GET', '/healthz')).status, 200, 'the root lives on');

    release();
    await caughtUp(behind, root);
  });

  test('readers full: a joining replica is refused UNAVAILABLE naming the full reader table, not a spent snapshot budget, and joins once readers are free', async () => {
    const root = await start('join-root');
    await put(root, 'a', '1');
    let ticks = 0;
    held.push(...(await fillReaderTable(root, () => put(root, 'tick', String(ticks++)))));
    const joining = await start('join-replica', [root.replicationAddress]);
    await refusedForReaders(joining);
    // Before: "this node is sending its most snapshots at once", with every snapshot reader free.
    assert.doesNotMatch(joining.replicationClient!.status().lastFailure ?? '', /most snapshots/);
    assert.equal(root.store.snapshotReaders.inUse, 0, 'no snapshot reader is held by the refusal');
    release();
    await caughtUp(joining, root);
  });

  test('readers full on a replica: a forwarded write the root committed is answered 200, not 503 OVERLOADED', async () => {
    const root = await start('forward-root');
    const replica = await start('forward-replica', [root.replicationAddress]);
    const caughtUp = async (): Promise<void> => {
      const seq = root.store.head().seq;
      await eventually(
        () => Promise.resolve(replica.store.head().seq >= seq),
        () => `replica at ${replica.store.head().seq}, root at ${seq}`,
      );
    };
    let ticks = 0;
    held.push(
      ...(await fillReaderTable(replica, async () => {
        await put(root, 'tick', String(ticks++));
        await caughtUp();
      })),
    );
    // The replica applies the write's entry together with the next (as whenever entries arrive together), so its head
    // is past the write's seq and the hash of its own entry there is read from the log: here, with no reader free.
    // Made certain by one more write at the root before the replica's wait for the seq returns.
    const waiter = (replica as unknown as { seqWaiter: { wait(seq: number, timeoutMs: number): Promise<void> } }).seqWaiter;
    const wait = waiter.wait.bind(waiter);
    waiter.wait = async (seq, timeoutMs) => {
      await wait(seq, timeoutMs);
      await put(root, `other/${seq}`, 'o');
      await caughtUp();
    };
    const answer = await request(replica.url, 'PUT', '/v1/kv/forwarded', { body: 'v' });
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal((await request(root.url, 'GET', '/v1/kv/forwarded')).status, 200, 'committed at the root');
    release();
  });
});
