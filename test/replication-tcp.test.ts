/**
 * Replication between real `mercury serve` processes on loopback: a tree three levels deep, failover when an
 * intermediate node dies, a byte flipped in transit, a replica joining after the root trimmed its log, restarts, and
 * a divergence that only the operator's resync ends.
 */
import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { assertError, request, requestJson } from './support/http.js';
import { makeTempDir, removeDir, runCli, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { FlipProxy, assertSameChain, converged, eventually, get, put, statusOf } from './support/tree.js';

describe('replication - a tree of real processes', () => {
  const dir = makeTempDir('repl-tree');
  const running: ServeProcess[] = [];
  const serve = async (name: string, args: string[] = []): Promise<ServeProcess> => {
    const node = await startServe(join(dir, name), args);
    running.push(node);
    return node;
  };
  after(async () => {
    await Promise.all(running.map((node) => stopProcess(node.child)));
    removeDir(dir);
  });

  let root: ServeProcess;
  let mid: ServeProcess;
  let low: ServeProcess;
  let leaf: ServeProcess;
  let side: ServeProcess;

  test('writes on the root and on a leaf reach every node with identical head hashes', async () => {
    root = await serve('root');
    await put(root, 'before-replicas', 'v0');
    mid = await serve('mid', ['--upstream', root.replication]);
    side = await serve('side', ['--upstream', root.replication]);
    await converged(root, [mid, side]);
    low = await serve('low', ['--upstream', `${mid.replication},${root.replication}`]);
    await converged(root, [low]);
    leaf = await serve('leaf', ['--upstream', `${low.replication},${mid.replication},${root.replication}`]);
    const all = [mid, side, low, leaf];
    await converged(root, all);

    for (let i = 0; i < 20; i++) await put(root, `root-${i}`, `value-${i}`);
    // A write on a leaf is forwarded up three hops and answered once the leaf has applied it: read-your-writes.
    const seq = await put(leaf, 'from-leaf', 'hello');
    assert.equal(await get(leaf, 'from-leaf'), 'hello');
    assert.ok((await statusOf(leaf)).seq >= seq);
    const rootStatus = await converged(root, all);
    assert.equal(rootStatus.seq, 22);
    for (const node of all) assert.equal(await get(node, 'from-leaf'), 'hello');

    const leafStatus = await statusOf(leaf);
    const [rootId, midId, lowId] = await Promise.all([root, mid, low].map(async (node) => (await statusOf(node)).nodeId));
    assert.deepEqual(leafStatus.replication.ancestors, [rootId, midId, lowId]);
    assert.equal(leafStatus.role, 'replica');
    assert.equal(leafStatus.datasetId, rootStatus.datasetId);
    assert.equal(leafStatus.replication.lagEntries, 0);
    assert.equal((await statusOf(mid)).replication.children.length, 1);
    // The whole chain is the root's, entry by entry.
    await assertSameChain(leaf, root);
  });

  test('minSeq on a replica waits for the seq, and times out with SEQ_WAIT_TIMEOUT beyond it', async () => {
    const status = await statusOf(side);
    const ok = await request(side.url, 'GET', `/v1/kv/from-leaf?minSeq=${status.seq}`);
    assert.equal(ok.status, 200);
    assertError(await request(side.url, 'GET', `/v1/kv/from-leaf?minSeq=${status.seq + 1000}&timeoutMs=100`), 'SEQ_WAIT_TIMEOUT');
  });

  test('killing an intermediate node makes its children fail over and converge', async () => {
    await stopProcess(mid.child);
    for (let i = 0; i < 10; i++) await put(root, `after-kill-${i}`, `v${i}`);
    await converged(root, [low, leaf, side]);
    const lowStatus = await statusOf(low);
    assert.equal(lowStatus.replication.upstream?.address, root.replication);
    assert.ok((lowStatus.replication.upstreamSwitches ?? 0) >= 1);
    // Writes on the leaf still work: its upstream (low) forwards to its new upstream (the root).
    await put(leaf, 'after-failover', 'yes');
    await converged(root, [low, leaf, side]);
  });

  test('a restarted replica resumes from its stored head without a snapshot or a duplicate', async () => {
    const before = await statusOf(side);
    await stopProcess(side.child, 'SIGTERM');
    for (let i = 0; i < 5; i++) await put(root, `while-down-${i}`, `v${i}`);
    side = await serve('side', ['--upstream', root.replication]);
    await converged(root, [side]);
    const restarted = await statusOf(side);
    assert.equal(restarted.nodeId, before.nodeId);
    assert.equal(restarted.replication.snapshotsInstalled, 0, 'resumed from the log, not a snapshot');
    await assertSameChain(side, root);
  });

  test('resync on the root is refused with NOT_A_REPLICA', async () => {
    assertError(await request(root.url, 'POST', '/v1/replication/resync'), 'NOT_A_REPLICA', 409);
  });
});

describe('replication - faults in transit and trimmed logs', () => {
  const dir = makeTempDir('repl-faults');
  const running: ServeProcess[] = [];
  const proxies: FlipProxy[] = [];
  after(async () => {
    await Promise.all(proxies.map((proxy) => proxy.close()));
    await Promise.all(running.map((node) => stopProcess(node.child)));
    removeDir(dir);
  });
  const serve = async (name: string, args: string[] = []): Promise<ServeProcess> => {
    const node = await startServe(join(dir, name), args);
    running.push(node);
    return node;
  };

  test('a byte flipped in transit is detected and the replica recovers through its next upstream', async () => {
    const root = await serve('root');
    await put(root, 'k', 'v');
    const proxy = await FlipProxy.start(root.replication);
    proxies.push(proxy);
    const replica = await serve('flip-replica', ['--upstream', `${proxy.address},${root.replication}`]);
    await converged(root, [replica]);
    assert.equal((await statusOf(replica)).replication.upstream?.address, proxy.address);
    proxy.flipArmed = true;
    for (let i = 0; i < 10; i++) await put(root, `flip-${i}`, 'x'.repeat(200));
    await eventually(
      async () => proxy.flips === 1 && (await statusOf(replica)).replication.upstream?.address === root.replication,
      async () => `flips ${proxy.flips}, replica: ${JSON.stringify((await statusOf(replica)).replication)}`,
    );
    await converged(root, [replica]);
    const status = await statusOf(replica);
    assert.match(status.replication.lastFailure ?? '', /crc|CRC|checksum|hash|verif/i);
    await assertSameChain(replica, root);
  });

  test('a replica joining after the root trimmed its log bootstraps from a snapshot', async () => {
    const root = await serve('trim-root', ['--log-retain-entries', '10']);
    for (let i = 0; i < 60; i++) await put(root, `key-${i % 25}`, `value-${i}`);
    await eventually(
      async () => (await requestJson<{ log: { firstSeq: number } }>(root.url, 'GET', '/v1/status')).log.firstSeq > 1,
      () => 'the root never trimmed its log',
    );
    const replica = await serve('late-replica', ['--upstream', root.replication]);
    await converged(root, [replica]);
    const status = await statusOf(replica);
    assert.equal(status.replication.snapshotsInstalled, 1);
    assert.equal(status.keys, 25);
    for (let i = 35; i < 60; i++) assert.equal(await get(replica, `key-${i % 25}`), `value-${i}`);
    // And it streams on from there.
    await put(root, 'after-snapshot', 'streamed');
    await converged(root, [replica]);
    assert.equal(await get(replica, 'after-snapshot'), 'streamed');
  });

  test('a replica whose chain diverged stops following until the operator resyncs it', async () => {
    const rootDir = join(dir, 'div-root');
    let root = await serve('div-root');
    for (let i = 0; i < 5; i++) await put(root, `d-${i}`, 'first');
    await stopProcess(root.child, 'SIGTERM');
    cpSync(rootDir, join(dir, 'div-backup'), { recursive: true });
    root = await serve('div-root');
    const replica = await serve('div-replica', ['--upstream', root.replication]);
    for (let i = 5; i < 8; i++) await put(root, `d-${i}`, 'first');
    await converged(root, [replica]);
    // The root is restored from its backup at seq 5 and takes different writes: seq 8 now has another hash.
    await stopProcess(root.child, 'SIGTERM');
    removeDir(rootDir);
    cpSync(join(dir, 'div-backup'), rootDir, { recursive: true });
    const port = Number(root.replication.split(':')[1]);
    root = await serve('div-root', ['--replication-listen', `127.0.0.1:${port}`]);
    for (let i = 5; i < 9; i++) await put(root, `d-${i}`, 'second');
    await eventually(
      async () => (await statusOf(replica)).replication.phase === 'diverged',
      async () => JSON.stringify((await statusOf(replica)).replication),
    );
    assert.match((await statusOf(replica)).replication.divergedReason ?? '', /CHAIN_DIVERGED|diverged/i);
    assert.equal(await get(replica, 'd-5'), 'first', 'a diverged replica keeps serving what it has');

    const resync = await runCli(['resync', '--url', replica.url]);
    assert.equal(resync.code, 0, resync.stderr);
    await converged(root, [replica]);
    assert.equal(await get(replica, 'd-5'), 'second');
    await assertSameChain(replica, root);
  });
});
