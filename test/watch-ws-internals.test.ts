/**
 * The watch fan-out's fast path writes frames it built itself straight on the TCP socket under a `ws` WebSocket
 * (src/watch/hub.ts). That depends on internals of `ws`: `WebSocket._socket` (the net.Socket) and
 * `WebSocket._sender._state` (0 while the sender queues nothing of its own). If an upgrade of `ws` renames or changes
 * them, the hub falls back to `ws.send` (slower, still correct); this test fails first, naming the version and what
 * changed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { textFrame } from '../src/watch/frame.js';
import { wsInternalsProblem } from '../src/watch/hub.js';

const WS_VERSION = (JSON.parse(readFileSync(new URL('../../node_modules/ws/package.json', import.meta.url), 'utf8')) as { version: string }).version;

test('watch: the ws internals the pre-framed fan-out writes through are present and behave as the hub expects', async () => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const received: string[] = [];
  const allReceived = new Promise<void>((resolve) =>
    client.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'a hand-made text frame arrives as text');
      received.push((data as Buffer).toString('utf8'));
      if (received.length === 4) resolve();
    }),
  );
  try {
    const socket = await accepted;
    const problem = wsInternalsProblem(socket);
    assert.equal(
      problem,
      undefined,
      `ws ${WS_VERSION}: ${problem}. src/watch/hub.ts writes pre-framed watch messages on WebSocket._socket while ` +
        'WebSocket._sender._state is 0; check those internals in this ws version and update the hub (or pin ws back).',
    );
    const internals = socket as unknown as { _socket: import('node:net').Socket; _sender: { _state: number } };
    assert.equal(internals._sender._state, 0, `ws ${WS_VERSION}: an idle sender's _state is no longer 0 (DEFAULT); the hub would never take the fast path`);
    // Frames with a 7-, 16- and 64-bit payload length, written raw, interleaved with ws's own sends: order kept.
    const medium = 'm'.repeat(300);
    const large = 'l'.repeat(70_000);
    internals._socket.write(textFrame(Buffer.from('{"first":1}')));
    socket.send('second');
    internals._socket.write(textFrame(Buffer.from(medium)));
    internals._socket.write(textFrame(Buffer.from(large)));
    await allReceived;
    assert.deepEqual(received, ['{"first":1}', 'second', medium, large], `ws ${WS_VERSION}: frames written on _socket arrive out of order or altered`);
  } finally {
    client.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
