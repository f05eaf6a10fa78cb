/**
 * Replication - a replica killed in the middle of its first snapshot. A replica that never joined writes the snapshot
 * straight into its key database (docs/decisions.md, record 35), so what it leaves behind mid-install must read as an
 * empty store at seq 0, to the next start and to any other reader of the directory, and the next start must install
 * the snapshot from nothing. Real `mercury serve` processes on loopback; a proxy between root and replica forwards
 * only the first bytes of the snapshot, so the kill always falls inside it. The completed install is then read back
 * whole.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NodeClient } from '../src/client/index.js';
import { Store } from '../src/store/index.js';
import { makeTempDir, removeDir, startServe, stopProcess, type ServeProcess } from './support/process.js';
import { assertSameChain, converged, eventually, get, statusOf } from './support/tree.js';

const KEYS = 6_000;
const VALUE = 'j'.repeat(1024);
/** Bytes of the root's stream the proxy forwards before it stops: a few snapshot chunks of the ~6 MB. */
const FORWARD_BYTES = 2.5 * 1024 * 1024;

function joinKey(i: number): string {
  return `join/${String(i).padStart(5, '0')}`;
}

/** A TCP proxy that forwards everything to the root, but only the first `limit` bytes back. */
async function stallingProxy(target: string, limit: number): Promise<{ address: string; close: () => Promise<void> }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    sockets.add(client).add(upstream);
    let forwarded = 0;
    client.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      const take = Math.min(data.length, limit - forwarded);
      if (take > 0) client.write(data.subarray(0, take));
      forwarded += take;
      if (forwarded >= limit) upstream.pause();
    });
    for (const socket of [client, upstream]) socket.on('error', () => {});
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('replication - a replica killed during its first snapshot', () => {
  const dir = makeTempDir('repl-join-crash');
  let root: ServeProcess;
  let replica: ServeProcess | undefined;

  before(async () => {
    root = await startServe(join(dir, 'root'));
    const client = new NodeClient(root.url);
    for (let start = 0; start < KEYS; start += 1_000)
      await client.txn({ success: Array.from({ length: 1_000 }, (_, i) => ({ op: 'put' as const, key: joinKey(start + i), value: `${start + i}:${VALUE}` })) });
  });
  after(async () => {
    await stopProcess(root.child);
    if (replica !== undefined) await stopProcess(replica.child);
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
});
