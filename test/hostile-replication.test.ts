/**
 * Hostile input - the replication port. Found on a real node: 96 MiB of one unfinished frame sent before HELLO stayed
 * in memory until the handshake timeout, and 256 fake children that HELLO and ACK held every child slot, so a real
 * replica was refused for as long as they stayed. Now a child's frames are capped at `childFrameBytesMax` (refused
 * from the length, before the body is buffered) and children are capped per remote address. Later: a child that never
 * read but sent ACKs acknowledging nothing kept its session, a full window of frames and its snapshot's read
 * transaction for good; now a window that stays full with nothing acknowledged for childAckTimeoutMs closes it.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { FrameDecoder, PROTOCOL_VERSION, decodeMessage, encodeMessage, type Message } from '../src/replication/index.js';
import { request } from './support/http.js';
import { assertHealthzAnswers, assertRssGrowthUnder, rssBytes } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';

const limits = NODE_LIMITS_TEST.replication;
const MiB = 1024 * 1024;
/** The unfinished frame of the attack as found. */
const ATTACK_FRAME_BYTES = 96 * MiB;
/**
 * The node runs in this process. Buffering the attack's frame would add its 96 MiB; refusing it from the length adds
 * nothing but a socket. 32 MiB is a third of the attack, above the allocator's and GC's noise.
 */
const FRAME_RSS_GROWTH_BYTES_MAX = 32 * MiB;
/**
 * Fake children each hold a slot: a socket and a session, tens of KiB (the dataset is 20 small keys, so no window
 * fills). 2 x childrenPerAddressMax of them stay under a few MiB; 32 MiB catches a node that would buffer megabytes per
 * child, which the production window (16 MiB unacknowledged per child) would allow if the slots were not capped.
 */
const CHILDREN_RSS_GROWTH_BYTES_MAX = 32 * MiB;

/** Writes the body of an announced frame in 1 MiB chunks, waiting for each to drain, until `total` or the socket closes. */
async function streamUntilClosed(child: { socket: net.Socket; closed: boolean }, total: number): Promise<number> {
  const chunk = Buffer.alloc(MiB, 0x5a);
  let sent = 0;
  while (sent < total && !child.closed && !child.socket.destroyed) {
    const drained = child.socket.write(chunk);
    sent += chunk.length;
    if (!drained)
      await new Promise<void>((resolve) => {
        child.socket.once('drain', resolve);
        child.socket.once('close', resolve);
      });
  }
  return sent;
}

/** A peer on the replication port that speaks the protocol by hand: it can HELLO, keep ACKing, or send anything. */
class FakeChild {
  readonly messages: Message[] = [];
  closed = false;
  private receivedBytes = 0;
  private readonly decoder = new FrameDecoder(limits.frameBytesMax);
  private ackTimer: NodeJS.Timeout | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.receivedBytes += chunk.length;
      for (const frame of this.decoder.push(chunk)) this.messages.push(decodeMessage(frame));
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      clearInterval(this.ackTimer);
    });
  }

  static connect(address: string, localAddress: string): Promise<FakeChild> {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, localAddress }, () => resolve(new FakeChild(socket)));
      socket.once('error', reject);
    });
  }

  /** HELLO as a new replica, then an ACK of everything received every ackIntervalMs: a child that holds its slot. */
  holdSlot(nodeId: string): void {
    const hash = Buffer.alloc(32);
    this.socket.write(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId, path: [], head: { seq: 0, hash }, httpUrl: '' }));
    this.ackTimer = setInterval(() => {
      if (!this.closed) this.socket.write(encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: this.receivedBytes }));
    }, limits.ackIntervalMs);
  }

  first(): Message | undefined {
    return this.messages[0];
  }

  /** The first message, which must be a REFUSE. */
  refusal(): { reason: string; message: string } {
    const first = this.messages[0];
    assert.ok(first?.type === 'refuse', `expected a REFUSE, got ${JSON.stringify(first)}`);
    return first;
  }

  close(): void {
    clearInterval(this.ackTimer);
    this.socket.destroy();
  }
}

describe('hostile input - replication port', () => {
  const dir = makeTempDir('hostile-replication');
  const nodes: MercuryNode[] = [];
  const fakes: FakeChild[] = [];
  after(async () => {
    for (const fake of fakes) fake.close();
    for (const node of nodes.reverse()) await node.close();
    removeDir(dir);
  });
  const start = async (name: string, upstreams: string[] = []): Promise<MercuryNode> => {
    const config = validateConfig({ dataDir: join(dir, name), port: 0, upstreams, replicationChildrenMax: 16 });
    const node = await MercuryNode.start(config, { auth: 'off', limits: NODE_LIMITS_TEST });
    nodes.push(node);
    return node;
  };
  const fake = async (root: MercuryNode, localAddress: string): Promise<FakeChild> => {
    const child = await FakeChild.connect(root.replicationAddress, localAddress);
    fakes.push(child);
    return child;
  };

  let root: MercuryNode;
  const acknowledged = new Map<string, string>();

  test('replication port: a frame announced larger than a child may send is refused from its length, before HELLO', async () => {
    root = await start('root');
    for (let i = 0; i < 20; i++) {
      assert.equal((await request(root.url, 'PUT', `/v1/kv/k-${i}`, { body: `v-${i}` })).status, 200);
      acknowledged.set(`k-${i}`, `v-${i}`);
    }
    // The attack as found: the prefix of a 96 MiB frame, then its body streaming in (at the pace the node reads it).
    const rssBefore = rssBytes();
    const attacker = await fake(root, '127.0.0.1');
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(ATTACK_FRAME_BYTES, 0);
    attacker.socket.write(prefix);
    const [sent] = await Promise.all([streamUntilClosed(attacker, ATTACK_FRAME_BYTES), assertHealthzAnswers(root.url, 'during an oversized frame')]);
    assert.ok(sent < ATTACK_FRAME_BYTES, `the node read all ${sent} bytes of the frame`);
    assertRssGrowthUnder(rssBefore, FRAME_RSS_GROWTH_BYTES_MAX, 'after a 96 MiB frame was announced');
    await eventually(
      () => Promise.resolve(attacker.closed),
      () => `still open; received ${JSON.stringify(attacker.messages)}`,
    );
    const refusal = attacker.refusal();
    assert.equal(refusal.reason, 'PROTOCOL_ERROR');
    assert.match(refusal.message, new RegExp(`FRAME_TOO_LARGE.*maximum of ${limits.childFrameBytesMax}`));

    // A frame just above the child limit is refused too, though a full-size frame from an upstream would be accepted.
    const justAbove = await fake(root, '127.0.0.1');
    const header = Buffer.alloc(8);
    header.writeUInt32BE(limits.childFrameBytesMax - 8 + 1, 0);
    justAbove.socket.write(header);
    await eventually(
      () => Promise.resolve(justAbove.closed),
      () => 'still open',
    );
    assert.match(justAbove.refusal().message, /FRAME_TOO_LARGE/);
  });

  test('replication port: fake children from one address hold at most childrenPerAddressMax slots; real replicas still join', async () => {
    const perAddress = limits.childrenPerAddressMax;
    // Fake children from 127.0.0.2 that HELLO and keep ACKing: each holds a slot, up to the per-address cap.
    const rssBefore = rssBytes();
    const held: FakeChild[] = [];
    for (let i = 0; i < perAddress; i++) {
      const child = await fake(root, '127.0.0.2');
      child.holdSlot(`fake-${i}`);
      held.push(child);
    }
    await eventually(
      () => Promise.resolve(held.every((child) => child.first()?.type === 'welcome')),
      () => JSON.stringify(held.map((child) => child.first()?.type)),
    );
    const refused = await fake(root, '127.0.0.2');
    refused.holdSlot('fake-refused');
    await eventually(
      () => Promise.resolve(refused.closed && refused.first() !== undefined),
      () => 'the child over the cap was not refused',
    );
    const refusal = refused.refusal();
    assert.equal(refusal.reason, 'UNAVAILABLE');
    assert.match(refusal.message, new RegExp(`${perAddress} children from 127\\.0\\.0\\.2`));
    await assertHealthzAnswers(root.url, 'with fake children holding slots');
    assertRssGrowthUnder(rssBefore, CHILDREN_RSS_GROWTH_BYTES_MAX, 'with fake children holding slots');

    // A real replica from another address joins while the fakes stay, and has every acknowledged write.
    const replica = await start('replica', [root.replicationAddress]);
    await eventually(
      () => Promise.resolve(replica.store.head().seq === root.store.head().seq && replica.replicationClient!.status().phase === 'streaming'),
      () => `${JSON.stringify(replica.replicationClient!.status())}; root children: ${JSON.stringify(root.replicationServer.children().map((c) => [c.remote, c.phase]))}`,
    );
    for (const [key, value] of acknowledged) assert.equal((await request(replica.url, 'GET', `/v1/kv/${key}`)).body.toString(), value);
    assert.ok(held.every((child) => !child.closed), 'the fakes within the cap keep their slots (ACKing is all a child owes)');

    // From 127.0.0.1, the replica holds one slot; fakes take the rest; the next real replica is refused with a reason
    // it reports, and joins as soon as a slot from its address is free.
    const local: FakeChild[] = [];
    for (let i = 1; i < perAddress; i++) {
      const child = await fake(root, '127.0.0.1');
      child.holdSlot(`local-fake-${i}`);
      local.push(child);
    }
    await eventually(
      () => Promise.resolve(local.every((child) => child.first()?.type === 'welcome')),
      () => JSON.stringify(local.map((child) => child.first()?.type)),
    );
    const late = await start('late-replica', [root.replicationAddress]);
    await eventually(
      () => Promise.resolve(/UNAVAILABLE.*children from 127\.0\.0\.1/.test(late.replicationClient!.status().lastFailure ?? '')),
      () => JSON.stringify(late.replicationClient!.status()),
    );
    // Refused, it has not joined: alive, but not ready (it would serve seq 0, a 404 for every existing key).
    assert.equal((await request(late.url, 'GET', '/healthz')).status, 200);
    const notReady = await request(late.url, 'GET', '/readyz');
    assert.equal(notReady.status, 503);
    assert.match(notReady.body.toString(), /NOT_JOINED/);
    local[0]!.close();
    await eventually(
      () => Promise.resolve(late.store.head().seq === root.store.head().seq && late.replicationClient!.status().phase === 'streaming'),
      () => JSON.stringify(late.replicationClient!.status()),
    );
    for (const [key, value] of acknowledged) assert.equal((await request(late.url, 'GET', `/v1/kv/${key}`)).body.toString(), value);
    assert.equal((await request(late.url, 'GET', '/readyz')).status, 200);
  });

  test('replication port: a child that never reads but ACKs nothing new is closed once its window stayed full childAckTimeoutMs', async () => {
    // More than a window of data, so that the snapshot the child asks for fills its window and stays open.
    for (let i = 0; i < 8; i++) assert.equal((await request(root.url, 'PUT', `/v1/kv/big-${i}`, { body: Buffer.alloc(3000, 0x61 + i) })).status, 200);
    const stalled = await fake(root, '127.0.0.3');
    stalled.socket.once('data', () => stalled.socket.pause());
    const hash = Buffer.alloc(32);
    const nodeId = 'stalled-reader';
    stalled.socket.write(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId, path: [], head: { seq: 0, hash }, httpUrl: '' }));
    const acks = setInterval(() => {
      if (!stalled.closed) stalled.socket.write(encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: 0 }));
    }, limits.ackIntervalMs);
    const child = () => root.replicationServer.children().find((status) => status.childNodeId === nodeId);
    try {
      await eventually(
        () => Promise.resolve(child()?.snapshot !== undefined && child()!.unackedBytes >= limits.childWindowBytesMax),
        () => `the child's window did not fill: ${JSON.stringify(child())}`,
      );
      const filledMs = Date.now();
      await eventually(
        () => Promise.resolve(stalled.closed && child() === undefined),
        () => `the stalled child is still served ${Date.now() - filledMs} ms after its window filled: ${JSON.stringify(child())}`,
        limits.childAckTimeoutMs * 4,
      );
      const elapsedMs = Date.now() - filledMs;
      assert.ok(elapsedMs >= limits.childAckTimeoutMs - 100, `closed after ${elapsedMs} ms, before the timeout`);
    } finally {
      clearInterval(acks);
    }
    await assertHealthzAnswers(root.url, 'after a stalled child');
  });

  // Found by an audit (2026-12-06): a hostile upstream sent heartbeats as fast as it could; a relay queued each for
  // every child, whether it read or not (four children that never read: 61 -> 583 MiB in 14 s).
  const flood = (count: number, node = root): void => {
    for (let i = 0; i < count; i++) node.replicationServer.heartbeat({ rootSeq: 1_000_000 + i, rootTimeMs: Date.now(), path: [] });
  };
  const hello = (child: FakeChild, nodeId: string): void => {
    child.socket.write(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId, path: [], head: { seq: 0, hash: Buffer.alloc(32) } , httpUrl: '' }));
  };
  const childNamed = (nodeId: string, node = root) => node.replicationServer.children().find((status) => status.childNodeId === nodeId);

  // Found by an audit (2026-12-07): any progress restarts the stall clock, so a child that read its snapshot and
  // acknowledged a trickle of it kept the snapshot's read transaction (LMDB reuses no page freed after it began) for
  // as long as it liked: here about two minutes for 120 KB, and without bound for a real dataset.
  test('replication port: a child that acknowledges a snapshot at a trickle is closed once a pace window passes below the floor', async () => {
    const paceWindowMs = 2_000;
    const config = validateConfig({ dataDir: join(dir, 'pace-root'), port: 0 });
    const node = await MercuryNode.start(config, { auth: 'off', limits: withLimits(NODE_LIMITS_TEST, { replication: { snapshotPaceWindowMs: paceWindowMs, snapshotPaceBytesMin: 4 * 1024 } }) });
    nodes.push(node);
    for (let i = 0; i < 40; i++) assert.equal((await request(node.url, 'PUT', `/v1/kv/big-${i}`, { body: Buffer.alloc(3000, 0x61 + (i % 26)) })).status, 200);
    const slow = await fake(node, '127.0.0.6');
    let received = 0;
    let acked = 0;
    slow.socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    hello(slow, 'trickle-reader');
    // Reads everything, acknowledges 100 bytes more every ackIntervalMs: 1 KB/s, progress on every ACK.
    const acks = setInterval(() => {
      if (slow.closed) return;
      acked = Math.min(received, acked + 100);
      slow.socket.write(encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: acked }));
    }, limits.ackIntervalMs);
    try {
      await eventually(() => Promise.resolve(childNamed('trickle-reader', node)?.snapshot !== undefined), () => 'the snapshot never began');
      const startedMs = Date.now();
      await eventually(
        () => Promise.resolve(slow.closed && childNamed('trickle-reader', node) === undefined),
        () => `the trickling child is still sent its snapshot ${Date.now() - startedMs} ms on: ${JSON.stringify(childNamed('trickle-reader', node))}`,
        paceWindowMs * 4,
      );
      assert.ok(Date.now() - startedMs >= paceWindowMs - 200, `closed after ${Date.now() - startedMs} ms, before a pace window passed`);
      assert.ok(acked < 40 * 3000, 'the snapshot was not done');
    } finally {
      clearInterval(acks);
    }
    await assertHealthzAnswers(node.url, 'after a trickling child');
  });

  test('replication port: heartbeats to a child that does not read stop at its window, however many come', async () => {
    const mute = await fake(root, '127.0.0.4');
    mute.socket.pause();
    hello(mute, 'mute-reader');
    await eventually(() => Promise.resolve(childNamed('mute-reader')?.phase === 'streaming' || childNamed('mute-reader')?.phase === 'snapshot'), () => JSON.stringify(childNamed('mute-reader')));
    const heartbeatBytes = encodeMessage({ type: 'heartbeat', rootSeq: 2_000_000, rootTimeMs: Date.now(), path: ['n'.repeat(64)] }).length;
    // Well within childAckTimeoutMs, after which a child whose window stays full is closed anyway.
    flood(2_000);
    const status = childNamed('mute-reader');
    assert.ok(status !== undefined, 'a child within its window is still served');
    assert.ok(status.unackedBytes <= limits.childWindowBytesMax * (1 + 1 / 16) + limits.frameBytesMax + heartbeatBytes, `${status.unackedBytes} bytes sent to a child that reads nothing`);
    await assertHealthzAnswers(root.url, 'after a heartbeat flood');
  });

  test('replication port: a child that acknowledges bytes it never read is dropped, not sent more', async () => {
    // A window of 1 MiB, so that a few rounds pass the kernel's socket buffers (a few MiB on loopback).
    const config = validateConfig({ dataDir: join(dir, 'liar-root'), port: 0 });
    const node = await MercuryNode.start(config, { auth: 'off', limits: withLimits(NODE_LIMITS_TEST, { replication: { childWindowBytesMax: MiB } }) });
    nodes.push(node);
    const liar = await fake(node, '127.0.0.5');
    liar.socket.pause();
    hello(liar, 'lying-reader');
    await eventually(() => Promise.resolve(childNamed('lying-reader', node) !== undefined), () => 'the liar never joined');
    // Each round acknowledges everything sent so far, read or not, which keeps the window open; the flood then fills
    // the kernel's buffers and the socket's queue.
    for (let round = 0; round < 100 && childNamed('lying-reader', node) !== undefined; round++) {
      liar.socket.write(encodeMessage({ type: 'ack', appliedSeq: 0, receivedBytes: childNamed('lying-reader', node)!.sentBytes }));
      await new Promise((resolve) => setTimeout(resolve, 2));
      flood(20_000, node);
    }
    assert.equal(childNamed('lying-reader', node), undefined, 'the lying child is still served');
    await assertHealthzAnswers(node.url, 'after a lying child');
  });
});
