/**
 * Hostile input - replication children summed over connections. Found on a real node (audit, 2026-12-07): 32 peers on
 * the replication port that each sent a HELLO as a new replica (some 300 bytes) and then read nothing made a root with
 * 40 MiB of log grow by 415 MiB of RSS: each child's window (16 MiB) minus what the kernel took stayed queued in the
 * process, 3.3 GiB over the 256 children a node serves. Now a child holding more than its share of
 * `childrenQueuedBytesMax` is sent nothing more while the children together hold more than that, and a real replica
 * beside them still catches up.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect } from '../src/client/index.js';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS, validateNodeLimits, withLimits } from '../src/node/index.js';
import { PROTOCOL_VERSION, encodeMessage } from '../src/replication/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { nodeMetric } from './support/fuzz.js';
import { steadyValue } from './support/hostile.js';
import { eventually } from './support/tree.js';

const MiB = 1024 * 1024;
/** Production windows (16 MiB, past loopback's socket buffers) and a budget that a few children fill. */
const REPLICATION = { ...NODE_LIMITS.replication, childrenQueuedBytesMax: 4 * MiB, childQueuedBytesShare: 64 * 1024 };
const CHILDREN = 8;
const VALUES = 24;


describe('hostile input - replication children over many connections', () => {
  const dir = makeTempDir('hostile-memory-replication');
  const nodes: MercuryNode[] = [];
  const sockets: net.Socket[] = [];
  after(async () => {
    for (const socket of sockets) socket.destroy();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });

  test('replication queues: children that read nothing hold the children budget, not their window each, and a real replica still catches up', async () => {
    const limits = validateNodeLimits(withLimits(NODE_LIMITS, { replication: REPLICATION }));
    const root = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0 }), { auth: 'off', limits });
    nodes.push(root);
    const client = connect(root.url);
    for (let i = 0; i < VALUES; i++) await client.put(`big/${i}`, Buffer.alloc(MiB, 0x61 + (i % 26)));

    const address = root.replicationAddress;
    const port = Number(address.slice(address.lastIndexOf(':') + 1));
    for (let i = 0; i < CHILDREN; i++) {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.on('error', () => {});
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(
        encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId: `silent-${i}`, path: [], head: { seq: 0, hash: Buffer.alloc(32) }, httpUrl: '' }),
      );
      // Reads nothing, acknowledges nothing.
      socket.pause();
      sockets.push(socket);
    }
    // What the root sends them stops growing once the budget (or, before it, their windows) is reached.
    const queued = await steadyValue(() => nodeMetric(root, 'mercury_replication_queued_bytes'), 'bytes queued for children', (bytes) => bytes > 0);
    // The budget, and per child its share and the frame that took it past it (a chunk or a page of about 1 MiB, or one
    // entry of a 1 MiB value, and their framing).
    const bound = REPLICATION.childrenQueuedBytesMax + CHILDREN * (REPLICATION.childQueuedBytesShare + 2 * MiB);
    assert.ok(CHILDREN * (REPLICATION.childWindowBytesMax - 5 * MiB) > 2 * bound, 'without the budget, their windows held far more');
    assert.ok(queued <= bound, `${CHILDREN} children reading nothing: the root holds ${queued} bytes for them; the bound is ${bound}`);

    const replica = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'replica'), port: 0, upstreams: [address] }), { auth: 'off', limits });
    nodes.push(replica);
    await eventually(
      () => Promise.resolve(replica.store.head().seq === root.store.head().seq),
      () => `the replica is at ${replica.store.head().seq}, the root at ${root.store.head().seq}`,
    );
  });
});
