/**
 * Hostile input - connections. Found on a real node: 100 TCP connections that never send a byte were never closed
 * (0 of 100 after 28 s), and they share the connection cap with watches. Now a connection that sends nothing within
 * `firstByteTimeoutMs` is closed, and one remote address holds at most `connectionsPerAddressMax` connections,
 * watches included; the node answers everyone else meanwhile.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { validateConfig } from '../src/config/index.js';
import { MercuryNode, NODE_LIMITS_TEST, withLimits } from '../src/node/index.js';
import { request } from './support/http.js';
import { MiB, assertHealthzAnswers, assertRssGrowthUnder, rssBytes } from './support/hostile.js';
import { makeTempDir, removeDir } from './support/process.js';
import { eventually } from './support/tree.js';
import { watchUrl } from './support/watch.js';

const SILENT_CONNECTIONS = 100;
const PER_ADDRESS_MAX = 12;
const limits = withLimits(NODE_LIMITS_TEST, { http: { connectionsPerAddressMax: PER_ADDRESS_MAX } });
/**
 * The node runs in this process, so this is the node's growth plus the test's own sockets. An open connection costs a
 * few KiB on each side (6 KiB per idle watcher, bench:watch), so 100 of them stay under 2 MiB; 16 MiB leaves room for
 * the allocator and GC timing, and fails a node that would buffer per connection (a 64 KiB read buffer each is 6 MiB,
 * a node that never closed them keeps growing with every connection).
 */
const SILENT_RSS_GROWTH_BYTES_MAX = 16 * MiB;

interface Peer {
  readonly socket: net.Socket;
  closed: boolean;
  received: number;
}

function connect(url: string, localAddress: string): Promise<Peer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port), localAddress }, () => resolve(peer));
    const peer: Peer = { socket, closed: false, received: 0 };
    socket.on('data', (chunk: Buffer) => (peer.received += chunk.length));
    socket.on('close', () => (peer.closed = true));
    socket.once('error', reject);
  });
}

function openWatch(url: string, localAddress: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(watchUrl(url), { perMessageDeflate: false, localAddress });
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('hostile input - connections', () => {
  const dir = makeTempDir('hostile-connections');
  let node: MercuryNode;
  const peers: Peer[] = [];
  const watches: WebSocket[] = [];
  after(async () => {
    for (const peer of peers) peer.socket.destroy();
    for (const watch of watches) watch.terminate();
    await node?.close();
    removeDir(dir);
  });

  test('connections: silent connections are closed after the first-byte timeout; the node answers meanwhile', async () => {
    node = await MercuryNode.start(validateConfig({ dataDir: join(dir, 'node'), port: 0 }), { auth: 'off', limits });
    assert.equal((await request(node.url, 'PUT', '/v1/kv/before', { body: 'kept' })).status, 200);
    // Spread over two addresses so the per-address cap is not what closes them.
    const rssBefore = rssBytes();
    const silent: Peer[] = [];
    for (let i = 0; i < SILENT_CONNECTIONS; i++) silent.push(await connect(node.url, i % 2 === 0 ? '127.0.0.3' : '127.0.0.4'));
    peers.push(...silent);
    await assertHealthzAnswers(node.url, `with ${SILENT_CONNECTIONS} silent connections open`);
    assertRssGrowthUnder(rssBefore, SILENT_RSS_GROWTH_BYTES_MAX, `with ${SILENT_CONNECTIONS} silent connections open`);
    await eventually(
      () => Promise.resolve(silent.every((peer) => peer.closed)),
      () => `${silent.filter((peer) => !peer.closed).length} of ${SILENT_CONNECTIONS} still open`,
      10 * limits.http.firstByteTimeoutMs + 5_000,
    );
    assert.ok(silent.every((peer) => peer.received === 0), 'closed without an answer: they asked nothing');
    // A connection that sent its first byte is left to the headers timeout, and can finish its request.
    const slow = await connect(node.url, '127.0.0.1');
    peers.push(slow);
    slow.socket.write('G');
    await new Promise((resolve) => setTimeout(resolve, 2 * limits.http.firstByteTimeoutMs));
    assert.equal(slow.closed, false, 'a connection that spoke is not cut by the first-byte timeout');
    slow.socket.write('ET /v1/kv/before HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    await eventually(
      () => Promise.resolve(slow.closed && slow.received > 0),
      () => 'no answer',
    );
    assert.equal((await request(node.url, 'GET', '/v1/kv/before')).body.toString(), 'kept');
  });

  test('connections: one address holds at most connectionsPerAddressMax connections, watches included', async () => {
    // Half the slots of 127.0.0.2 are watches, half requests whose headers are still coming.
    const rssBefore = rssBytes();
    const held: Peer[] = [];
    for (let i = 0; i < PER_ADDRESS_MAX / 2; i++) watches.push(await openWatch(node.url, '127.0.0.2'));
    for (let i = 0; i < PER_ADDRESS_MAX / 2; i++) {
      const peer = await connect(node.url, '127.0.0.2');
      peer.socket.write('GET /healthz HTTP/1.1\r\n');
      held.push(peer);
    }
    peers.push(...held);
    const refused = await connect(node.url, '127.0.0.2');
    peers.push(refused);
    refused.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await eventually(
      () => Promise.resolve(refused.closed),
      () => 'the connection over the cap stayed open',
    );
    assert.equal(refused.received, 0, 'closed at once, before any answer');
    // Everyone else is served, fast, and writes go on.
    await assertHealthzAnswers(node.url, 'with one address at its cap');
    assertRssGrowthUnder(rssBefore, SILENT_RSS_GROWTH_BYTES_MAX, 'with one address at its cap');
    assert.equal((await request(node.url, 'PUT', '/v1/kv/during', { body: 'yes' })).status, 200);
    // A freed slot is usable again.
    watches.pop()!.terminate();
    await eventually(
      async () => {
        const peer = await connect(node.url, '127.0.0.2');
        peers.push(peer);
        peer.socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
        await eventually(
          () => Promise.resolve(peer.closed),
          () => 'no end',
        );
        return peer.received > 0;
      },
      () => 'no slot came free for 127.0.0.2',
    );
    for (const [key, value] of [['before', 'kept'], ['during', 'yes']]) assert.equal((await request(node.url, 'GET', `/v1/kv/${key}`)).body.toString(), value);
  });
});
