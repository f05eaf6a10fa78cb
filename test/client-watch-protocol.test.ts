/**
 * TypeScript client against a fake node on port 0 that speaks the watch protocol badly or closes on purpose: a message
 * that breaks the protocol ends the watch with a `WatchError` of code PROTOCOL that names the field, and a watch with
 * `reconnect: false` ends with `WatchClosedError` carrying the close and where to resume (after a heartbeat too).
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { connect, WatchClosedError, WatchError, type WatchEvent } from '../src/index.js';

/** What the fake node does with each subscribe it receives. */
type Script = (socket: WebSocket, subscribe: Record<string, unknown>) => void;

describe('client watch protocol', () => {
  let server: WebSocketServer;
  let url: string;
  let script: Script = () => {};

  before(async () => {
    server = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/v1/watch' });
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.on('connection', (socket) => socket.on('message', (data: Buffer) => script(socket, JSON.parse(data.toString('utf8')) as Record<string, unknown>)));
  });

  after(async () => {
    for (const socket of server.clients) socket.terminate();
    await new Promise((resolve) => server.close(resolve));
  });

  async function drain(events: AsyncIterable<WatchEvent>, into: WatchEvent[]): Promise<unknown> {
    try {
      for await (const event of events) into.push(event);
    } catch (error) {
      return error;
    }
    return undefined;
  }

  test('client watch: a node that breaks the protocol ends the watch with WatchError PROTOCOL naming the field', async () => {
    script = (socket, subscribe) => {
      socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 7 }));
      socket.send(JSON.stringify({ type: 'events', id: subscribe.id, seq: 7, timeMs: 1, events: [{ type: 'put', key: 'a', keyEncoding: 'utf8', modSeq: 7 }] }));
      socket.send(JSON.stringify({ type: 'events', id: subscribe.id, seq: 8, timeMs: 1, events: [{ type: 'put', key: 'b', keyEncoding: 'rot13', modSeq: 8 }] }));
    };
    const client = connect([url]);
    const events: WatchEvent[] = [];
    const error = await drain(client.watch({ prefix: '' }), events);
    assert.ok(error instanceof WatchError, String(error));
    assert.equal(error.code, 'PROTOCOL');
    assert.equal(error.message, `${url} broke the watch protocol: events.events[0].keyEncoding must be "utf8" or "base64"`);
    assert.deepEqual(events, [{ type: 'put', key: Buffer.from('a'), value: undefined, modSeq: 7, seq: 7, timeMs: 1 }]);
  });

  test('client watch: reconnect: false ends with WatchClosedError saying where to resume', async () => {
    script = (socket, subscribe) => {
      assert.equal(subscribe.fromSeq, 3);
      socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 3 }));
      socket.send(JSON.stringify({ type: 'events', id: subscribe.id, seq: 4, timeMs: 1, events: [{ type: 'delete', key: 'k', keyEncoding: 'utf8', modSeq: 4 }] }));
      socket.send(JSON.stringify({ type: 'progress', id: subscribe.id, seq: 4 }));
      socket.send(JSON.stringify({ type: 'progress', id: subscribe.id, seq: 9 }));
      socket.close(1001, 'node is shutting down; reconnect and resume');
    };
    const client = connect([url]);
    const subscribed: number[] = [];
    const events: WatchEvent[] = [];
    const error = await drain(client.watch({ prefix: 'k', fromSeq: 3, progress: true, reconnect: false, onSubscribed: (fromSeq) => subscribed.push(fromSeq) }), events);
    assert.ok(error instanceof WatchClosedError, String(error));
    assert.equal(error.closeCode, 1001);
    assert.equal(error.reason, 'node is shutting down; reconnect and resume');
    assert.equal(error.resumeSeq, 10);
    assert.deepEqual(subscribed, [3]);
    assert.deepEqual(
      events.map((event) => `${event.type} ${event.seq}`),
      ['delete 4', 'progress 4', 'progress 9'],
    );
  });
});
