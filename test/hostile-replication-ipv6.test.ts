/**
 * Hostile input - the replication port over IPv6. Found by an audit: children were capped per remote address, and an
 * IPv6 address is one of the 2^64 a host with a /64 may bind as its source (a cloud instance or a LAN is given one), so
 * one such host could hold every child slot with fake children, each from an address of its own, and keep real
 * replicas out. Now an IPv6 peer counts as its /64 (hostSlotKey). This machine binds no more than ::1, so the grouping
 * is checked on addresses, and a real node shows that its replication port counts IPv6 peers by it.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { validateConfig } from '../src/config/index.js';
import { hostSlotKey } from '../src/net/index.js';
import { MercuryNode, NODE_LIMITS_TEST } from '../src/node/index.js';
import { FrameDecoder, PROTOCOL_VERSION, decodeMessage, encodeMessage, type Message } from '../src/replication/index.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';
import { RawWire } from './support/wire.js';

const limits = NODE_LIMITS_TEST.replication;

describe('hostile input - replication port over IPv6', () => {
  test('hostSlotKey: IPv6 addresses of one /64 share a key, other /64s and IPv4 addresses do not', () => {
    const one = ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:DB8:1:2:ffff:ffff:ffff:ffff', '2001:0db8:0001:0002:0:0:0:9', '2001:db8:1:2::1%eth0'];
    assert.deepStrictEqual(new Set(one.map(hostSlotKey)), new Set(['2001:db8:1:2::/64']));
    assert.equal(hostSlotKey('2001:db8:1:3::1'), '2001:db8:1:3::/64');
    assert.equal(hostSlotKey('::1'), '0:0:0:0::/64');
    assert.equal(hostSlotKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64');
    // IPv4, native or seen through a dual-stack socket, is one address per host as before.
    assert.equal(hostSlotKey('127.0.0.2'), '127.0.0.2');
    assert.equal(hostSlotKey('::ffff:127.0.0.2'), '127.0.0.2');
    assert.equal(hostSlotKey(undefined), '?');
  });

  const dir = makeTempDir('hostile-replication-ipv6');
  const sockets: net.Socket[] = [];
  let node: MercuryNode | undefined;
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await node?.close();
    removeDir(dir);
  });

  test('replication port: children from ::1 are counted as its /64, and the one over the cap is told so', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'root'), port: 0, replicationHost: '::1', replicationChildrenMax: 16 }), {
      auth: 'off',
      limits: NODE_LIMITS_TEST,
    });
    const port = Number(node.replicationAddress.slice(node.replicationAddress.lastIndexOf(':') + 1));
    const children: { messages: Message[]; closed: boolean }[] = [];
    for (let i = 0; i <= limits.childrenPerAddressMax; i++) {
      const socket = net.connect({ host: '::1', port });
      sockets.push(socket);
      const child = { messages: [] as Message[], closed: false };
      children.push(child);
      const decoder = new FrameDecoder(limits.frameBytesMax);
      socket.on('data', (chunk: Buffer) => {
        for (const frame of decoder.push(chunk)) child.messages.push(decodeMessage(frame));
      });
      socket.on('error', () => {});
      socket.on('close', () => (child.closed = true));
      const hash = Buffer.alloc(32);
      socket.write(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, resync: false, datasetId: '', nodeId: `v6-${i}`, path: [], head: { seq: 0, hash }, httpUrl: '' }));
      await eventually(
        () => Promise.resolve(child.messages.length > 0),
        () => `child ${i} heard nothing`,
      );
    }
    const last = children.pop()!;
    assert.ok(
      children.every((child) => child.messages[0]?.type === 'welcome'),
      JSON.stringify(children.map((child) => child.messages[0]?.type)),
    );
    const refusal = last.messages[0];
    assert.ok(refusal?.type === 'refuse', `expected a REFUSE, got ${JSON.stringify(refusal)}`);
    assert.equal(refusal.reason, 'UNAVAILABLE');
    assert.match(refusal.message, new RegExp(`${limits.childrenPerAddressMax} children from 0:0:0:0::/64 \\(the most per address\\)`));
  });

  test('wire port: connections from ::1 are counted as its /64 too, and the one over the cap is told so', async () => {
    const wireNode = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'wire'), port: 0, wireHost: '::1' }), { auth: 'off', limits: NODE_LIMITS_TEST });
    const wires: RawWire[] = [];
    try {
      for (let i = 0; i < NODE_LIMITS_TEST.wire.connectionsPerAddressMax; i++) wires.push(await RawWire.ready(wireNode.wireUrl));
      const over = await RawWire.open(wireNode.wireUrl);
      wires.push(over);
      const refusal = JSON.stringify(await over.next());
      assert.match(refusal, new RegExp(`0:0:0:0::/64 holds ${NODE_LIMITS_TEST.wire.connectionsPerAddressMax} wire connections`));
    } finally {
      for (const wire of wires) wire.socket.destroy();
      await wireNode.close();
    }
  });
});
