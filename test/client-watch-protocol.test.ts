/**
 * TypeScript client against a fake node on port 0 that speaks the watch protocol badly or closes on purpose: a message
 * that breaks the protocol ends the watch with a `WatchError` of code PROTOCOL that names the field (also one that
 * breaks the ordering rules: a `subscribed` that skips entries, seqs that go back, snapshot pages at two seqs, another
 * subscription's id, more events than an entry can give), while a snapshot after events is a reset the consumer is
 * handed as a new snapshot (decision 40), and a watch with `reconnect: false` ends with
 * `WatchClosedError` carrying the close and where to resume (after a heartbeat too). An upgrade answered with an
 * error whose body never ends fails within requestTimeoutMs, reading a few KiB of it.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { waitUntil } from './support/http.js';
import { connect, NoNodeReachableError, UnavailableError, WatchClosedError, WatchError, type WatchEvent } from '../src/index.js';
import { WATCH_HASH_NO_STATE } from '../src/api/index.js';

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

  const put = (seq: number): Record<string, unknown> => ({ type: 'put', key: `k${seq}`, keyEncoding: 'utf8', value: 'v', valueEncoding: 'utf8', modSeq: seq });

  test('client watch: messages that break the ordering rules end the watch with PROTOCOL before anything is delivered out of order', async () => {
    type Message = Record<string, unknown>;
    const subscribed = (fromSeq: number): Message => ({ type: 'subscribed', fromSeq });
    const events = (seq: number): Message => ({ type: 'events', seq, timeMs: 1, events: [put(seq)] });
    // Each case: what the node sends (the subscription's id is added unless the message has one), what it breaks, and
    // what the consumer received before the watch ended.
    const cases: [string, Message[], RegExp, string[]][] = [
      ['subscribed skips', [subscribed(50)], /subscribed\.fromSeq is 50; the subscription asked for 10, so entries would be skipped/, []],
      ['snapshot pages at two seqs', [subscribed(10), { type: 'snapshot', seq: 20, items: [], done: false }, { type: 'snapshot', seq: 21, items: [], done: true }], /snapshot\.seq is 21; the pages before it were at 20/, ['snapshotBegin 20']],
      ['events go back', [subscribed(10), events(60), events(30)], /events\.seq is 30; everything up to 60 was received/, ['put 60']],
      ['progress goes back', [subscribed(10), { type: 'progress', seq: 40 }, events(12)], /events\.seq is 12; everything up to 40 was received/, ['progress 40']],
      ['another id', [subscribed(10), { ...events(11), id: 'someone-else' }], /events\.id is "someone-else"; this connection's only subscription is 1/, []],
      ['events before subscribed', [events(11)], /events came before "subscribed"/, []],
    ];
    for (const [name, messages, pattern, delivered] of cases) {
      script = (socket, subscribe) => {
        for (const message of messages) socket.send(JSON.stringify({ id: subscribe.id, ...message }));
      };
      const events: WatchEvent[] = [];
      const error = await drain(connect([url]).watch({ prefix: 'k', fromSeq: 10, progress: true }), events);
      assert.ok(error instanceof WatchError, `${name}: ${String(error)}`);
      assert.equal(error.code, 'PROTOCOL', name);
      assert.match(error.message, pattern, name);
      assert.deepEqual(events.map((event) => `${event.type} ${event.seq}`), delivered, name);
    }
  });

  test('client watch: a change or snapshot item for a key outside the subscribed prefixes ends the watch with PROTOCOL, before it is delivered (found by audit: it was passed on)', async () => {
    type Message = Record<string, unknown>;
    const change = (type: string, key: string): Message => ({ type, key, keyEncoding: 'utf8', ...(type === 'put' ? { value: 'v', valueEncoding: 'utf8' } : {}), modSeq: 11 });
    const item = { key: 'other/secret', keyEncoding: 'utf8', value: 'v', valueEncoding: 'utf8', createSeq: 1, modSeq: 1, version: 1 };
    const cases: [string, Message, RegExp][] = [
      ['a put', { type: 'events', seq: 11, timeMs: 1, events: [change('put', 'app/a'), change('put', 'other/secret')] }, /events has the key "other\/secret", which is under none of the subscribed prefixes/],
      ['a delete', { type: 'events', seq: 11, timeMs: 1, events: [change('delete', 'ap')] }, /events has the key "ap"/],
      ['a snapshot item', { type: 'snapshot', seq: 11, items: [item], done: true }, /snapshot\.items has the key "other\/secret"/],
    ];
    for (const [name, message, pattern] of cases) {
      script = (socket, subscribe) => {
        socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 10 }));
        socket.send(JSON.stringify({ id: subscribe.id, ...message }));
      };
      const events: WatchEvent[] = [];
      const error = await drain(connect([url]).watch({ prefix: ['app/', Buffer.from('flags/')], fromSeq: 10 }), events);
      assert.ok(error instanceof WatchError, `${name}: ${String(error)}`);
      assert.equal(error.code, 'PROTOCOL', name);
      assert.match(error.message, pattern, name);
      assert.deepEqual(events, [], name);
    }
    // A range delete may reach past the prefix (the consumer clips it), and a key under the second prefix is one of its own.
    script = (socket, subscribe) => {
      socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 10 }));
      socket.send(JSON.stringify({ type: 'events', id: subscribe.id, seq: 10, timeMs: 1, events: [{ type: 'deleteRange', start: 'a', startEncoding: 'utf8', end: null, endEncoding: null, modSeq: 10 }, change('put', 'flags/x')] }));
    };
    const watch = connect([url]).watch({ prefix: ['app/', Buffer.from('flags/')], fromSeq: 10 });
    const received: string[] = [];
    for await (const event of watch) {
      received.push(event.type);
      if (received.length === 2) break;
    }
    assert.deepEqual(received, ['deleteRange', 'put']);
  });

  test('client watch: a node that confirms the subscribe and closes at once is reconnected to with a growing backoff (found by audit: every 50 ms, for ever)', async () => {
    let subscribes = 0;
    script = (socket, subscribe) => {
      subscribes++;
      socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 10 }));
      socket.close(1000);
    };
    // A base of 50 ms: about 100 connections in 3 s without the backoff; with it, the caps double from 50 ms to 3.2 s.
    const watch = connect([url], { watchReconnectDelayMsBase: 50 }).watch({ prefix: 'k', fromSeq: 10 });
    const drained = drain(watch, []);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await watch.return();
    assert.equal(await drained, undefined);
    assert.ok(subscribes >= 2 && subscribes <= 20, `${subscribes} connections in 3 s`);
  });

  test('client watch: a snapshot after events is a reset, at any seq: delivered as a new snapshot, and the cursor moves to it', async () => {
    type Message = Record<string, unknown>;
    const item = (key: string): Message => ({ key: `k${key}`, keyEncoding: 'utf8', value: 'v', valueEncoding: 'utf8', createSeq: 1, modSeq: 1, version: 1 });
    const page = (seq: number, keys: string[], done: boolean, begin?: true): Message => ({ type: 'snapshot', seq, items: keys.map(item), done, ...(begin ? { begin } : {}) });
    // Each case: what the node sends before closing with 1001, what the consumer receives, and where it resumes.
    const cases: [string, Message[], string[], number][] = [
      [
        'below what was received (a replaced chain)',
        [{ type: 'subscribed', fromSeq: 10 }, { type: 'events', seq: 60, timeMs: 1, events: [put(60)] }, page(20, ['a'], false, true), page(20, ['b'], true), { type: 'events', seq: 21, timeMs: 1, events: [put(21)] }],
        ['put 60', 'snapshotBegin 20', 'snapshot 20', 'snapshot 20', 'snapshotEnd 20', 'put 21'],
        22,
      ],
      [
        'above it (a trimmed log), from a node that does not mark first pages',
        [{ type: 'subscribed', fromSeq: 10 }, { type: 'events', seq: 11, timeMs: 1, events: [put(11)] }, page(30, ['a'], true)],
        ['put 11', 'snapshotBegin 30', 'snapshot 30', 'snapshotEnd 30'],
        31,
      ],
      [
        'a snapshot started over inside another',
        [{ type: 'subscribed', fromSeq: 10 }, page(30, ['a'], false, true), page(25, ['b'], true, true)],
        ['snapshotBegin 30', 'snapshot 30', 'snapshotBegin 25', 'snapshot 25', 'snapshotEnd 25'],
        26,
      ],
      [
        'cut off before done',
        [{ type: 'subscribed', fromSeq: 10 }, { type: 'events', seq: 60, timeMs: 1, events: [put(60)] }, page(20, ['a'], false, true)],
        ['put 60', 'snapshotBegin 20', 'snapshot 20'],
        21,
      ],
    ];
    for (const [name, messages, delivered, resumeSeq] of cases) {
      script = (socket, subscribe) => {
        for (const message of messages) socket.send(JSON.stringify({ id: subscribe.id, ...message }));
        socket.close(1001, 'node is shutting down; reconnect and resume');
      };
      const events: WatchEvent[] = [];
      const error = await drain(connect([url]).watch({ prefix: 'k', fromSeq: 10, reconnect: false }), events);
      assert.ok(error instanceof WatchClosedError, `${name}: ${String(error)}`);
      assert.deepEqual(events.map((event) => `${event.type} ${event.seq}`), delivered, name);
      assert.equal(error.resumeSeq, resumeSeq, name);
    }
  });

  test('client watch: the hash of the last seq received is kept from events, progress and snapshots, and sent as afterHash on every resume', async () => {
    const hash = (n: number): string => n.toString(16).padStart(2, '0').repeat(32);
    const page = (seq: number, done: boolean, begin?: true): Record<string, unknown> => ({ type: 'snapshot', seq, items: [], done, ...(begin ? { begin } : {}), ...(done ? { hash: hash(seq) } : {}) });
    // What each connection sends before it closes with 1001; the subscribes the node got record what was resumed with.
    const connections: Record<string, unknown>[][] = [
      [{ type: 'subscribed', fromSeq: 10 }, { type: 'events', seq: 11, timeMs: 1, hash: hash(11), events: [put(11)] }],
      [{ type: 'subscribed', fromSeq: 12 }, { type: 'progress', seq: 14, hash: hash(14) }],
      [{ type: 'subscribed', fromSeq: 15 }, { type: 'progress', seq: 14 }], // a heartbeat of a replica behind: the hash stays
      [{ type: 'subscribed', fromSeq: 15 }, page(7, false, true), page(7, true)], // a reset, below
      [{ type: 'subscribed', fromSeq: 8 }, page(9, false, true)], // cut off before done: a hash no entry has
      [{ type: 'subscribed', fromSeq: 10 }, { type: 'progress', seq: 20 }], // a node that sends no hash: none is known
      [{ type: 'subscribed', fromSeq: 21 }],
    ];
    const subscribes: Record<string, unknown>[] = [];
    script = (socket, subscribe) => {
      subscribes.push(subscribe);
      for (const message of connections[subscribes.length - 1] ?? []) socket.send(JSON.stringify({ id: subscribe.id, ...message }));
      if (subscribes.length < connections.length) socket.close(1001, 'node is shutting down; reconnect and resume');
    };
    const watch = connect([url], { watchReconnectDelayMsBase: 1, watchReconnectDelayMsMax: 5 }).watch({ prefix: 'k', fromSeq: 10, afterHash: hash(9), progress: true });
    const events: WatchEvent[] = [];
    try {
      while (!(events.at(-1)?.type === 'progress' && events.at(-1)?.seq === 20)) {
        const next = await watch.next();
        assert.notEqual(next.done, true);
        events.push(next.value as WatchEvent);
      }
      await waitUntil('the last resume', () => Promise.resolve(subscribes.length === connections.length));
    } finally {
      await watch.return();
    }
    assert.deepEqual(
      subscribes.map((subscribe) => [subscribe.fromSeq, subscribe.afterHash]),
      [
        [10, hash(9)],
        [12, hash(11)],
        [15, hash(14)],
        [15, hash(14)],
        [8, hash(7)],
        [10, WATCH_HASH_NO_STATE],
        [21, undefined],
      ],
    );
    const withHash = events.filter((event) => event.type === 'put' || event.type === 'progress' || event.type === 'snapshotEnd');
    assert.deepEqual(
      withHash.map((event) => [event.type, event.seq, 'hash' in event ? event.hash : undefined]),
      [
        ['put', 11, hash(11)],
        ['progress', 14, hash(14)],
        ['progress', 14, undefined],
        ['snapshotEnd', 7, hash(7)],
        ['progress', 20, undefined],
      ],
    );
    assert.throws(() => connect([url]).watch({ prefix: 'k', fromSeq: 1, afterHash: hash(1) }), /afterHash .* needs a fromSeq >= 2/);
    assert.throws(() => connect([url]).watch({ prefix: 'k', fromSeq: 5, afterHash: hash(10).toUpperCase() }), /afterHash must be an entry hash: 64 lowercase hex digits/);
  });

  test('client watch: a node before record 45, which refuses afterHash as an unknown field, is subscribed again without it, by seq as a client before record 45 would (found by review H: the watch ended with INVALID_ARGUMENT)', async () => {
    const hash = (n: number): string => n.toString(16).padStart(2, '0').repeat(32);
    // Such a node's words for any subscribe with afterHash (src/api/watch.ts at 61d1972); it sends no hash either.
    const refusal = 'subscribe has an unknown field "afterHash"; allowed: type, id, prefixes, prefixesBase64, fromSeq, filters';
    // What the node sends to each subscribe it takes; it closes with 1001 after the first.
    const connections: Record<string, unknown>[][] = [
      [{ type: 'subscribed', fromSeq: 10 }, { type: 'snapshot', seq: 7, items: [], done: false, begin: true }], // cut off before done
      [{ type: 'subscribed', fromSeq: 10 }, { type: 'events', seq: 11, timeMs: 1, events: [put(11)] }],
    ];
    const subscribes: Record<string, unknown>[] = [];
    let taken = 0;
    script = (socket, subscribe) => {
      subscribes.push(subscribe);
      if (subscribe.afterHash !== undefined) return void socket.send(JSON.stringify({ type: 'error', id: subscribe.id, code: 'INVALID_ARGUMENT', message: refusal }));
      for (const message of connections[taken] ?? []) socket.send(JSON.stringify({ id: subscribe.id, ...message }));
      if (++taken < connections.length) socket.close(1001, 'node is shutting down; reconnect and resume');
    };
    // The afterHash a restarted sync passes from its state file, written while it followed a newer node.
    const watch = connect([url], { watchReconnectDelayMsBase: 1, watchReconnectDelayMsMax: 5 }).watch({ prefix: 'k', fromSeq: 10, afterHash: hash(9) });
    const events: WatchEvent[] = [];
    try {
      while (events.at(-1)?.type !== 'put') {
        const next = await watch.next();
        assert.notEqual(next.done, true);
        events.push(next.value as WatchEvent);
      }
    } finally {
      await watch.return();
    }
    assert.deepEqual(
      subscribes.map((subscribe) => [subscribe.fromSeq, subscribe.afterHash]),
      [
        [10, hash(9)],
        [10, undefined],
        // Cut off in a snapshot: a new node gets the hash no entry has, and this one the seq before the snapshot.
        [8, WATCH_HASH_NO_STATE],
        [10, undefined],
      ],
    );
    assert.deepEqual(
      events.map((event) => `${event.type}@${event.seq}`),
      ['snapshotBegin@7', 'put@11'],
    );
  });

  test('client watch: an events message with more events than an entry can give is refused before they are decoded', async () => {
    const one = '{"type":"delete","key":"a","keyEncoding":"utf8","modSeq":2}';
    for (const [prefixes, count, refused] of [
      [['a'], 100_001, true],
      [['a', 'b'], 200_000, false],
    ] as const) {
      script = (socket, subscribe) => {
        socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 2 }));
        socket.send(`{"type":"events","id":${JSON.stringify(subscribe.id)},"seq":2,"timeMs":1,"events":[${Array<string>(count).fill(one).join(',')}]}`);
      };
      const watch = connect([url]).watch({ prefix: [...prefixes], fromSeq: 2 });
      if (refused) {
        const error = await watch.next().then(() => undefined, (caughtError: unknown) => caughtError);
        assert.ok(error instanceof WatchError && error.code === 'PROTOCOL', String(error));
        assert.match(error.message, /events\.events holds 100001 events; one entry gives a subscription of its prefixes at most 100000/);
      } else {
        const first: IteratorResult<WatchEvent> = await watch.next();
        assert.equal(first.done ? undefined : first.value.type, 'delete');
        await watch.return();
      }
    }
  });

  test('client watch: a message of more JSON values than a node can send is refused before JSON.parse builds them', async () => {
    // 400,000 snapshot items of six values each: more than a page of one-byte keys holds (WATCH_SNAPSHOT_ITEMS_MAX).
    // Decoded, such a message cost the client hundreds of bytes per value: one of 200 MiB peaked at 903 MiB of RSS
    // after the events limit, 473 MiB (the message's own bytes, twice) with the check first (review D's script).
    const item = '{"key":"a","keyEncoding":"utf8","createSeq":1,"modSeq":1,"version":1}';
    script = (socket, subscribe) => {
      socket.send(JSON.stringify({ type: 'subscribed', id: subscribe.id, fromSeq: 1 }));
      socket.send(`{"type":"snapshot","id":${JSON.stringify(subscribe.id)},"seq":5,"done":true,"items":[${Array<string>(400_000).fill(item).join(',')}]}`);
    };
    const watch = connect([url]).watch({ prefix: 'a', fromSeq: 1 });
    const error = await watch.next().then(() => undefined, (caughtError: unknown) => caughtError);
    assert.ok(error instanceof WatchError && error.code === 'PROTOCOL', String(error));
    assert.match(error.message, /message refused before parsing: the body holds more than \d+ JSON values/);
  });

  test('client watch: an upgrade answered with an endless error body fails within requestTimeoutMs, or once a few KiB were read', async () => {
    let attempts = 0;
    let mode: 'trickle' | 'flood' = 'trickle';
    const http = createServer();
    http.on('upgrade', (_req, socket: import('node:net').Socket) => {
      attempts++;
      socket.on('error', () => {});
      socket.write('HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
      if (mode === 'trickle') {
        const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write('1\r\n \r\n')), 100);
        return;
      }
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const frame = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
      const pump = (): void => {
        while (!socket.destroyed && socket.write(frame));
        if (!socket.destroyed) socket.once('drain', pump);
      };
      pump();
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const httpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    try {
      const started = Date.now();
      const client = connect([httpUrl], { requestTimeoutMs: 500, watchReconnectAttemptsMax: 2, watchReconnectDelayMsBase: 10, watchReconnectDelayMsMax: 50 });
      const trickled = await client.watch({ prefix: 'a/' }).next().then(() => undefined, (error: unknown) => error);
      assert.ok(trickled instanceof NoNodeReachableError, String(trickled));
      assert.match(trickled.errors[0]!.message, /no WebSocket upgrade within 500 ms/);
      assert.equal(attempts, 2);
      assert.ok(Date.now() - started < 5_000);

      mode = 'flood';
      const flooded = await client.watch({ prefix: 'a/', reconnect: false }).next().then(() => undefined, (error: unknown) => error);
      assert.ok(flooded instanceof UnavailableError, String(flooded));
      assert.match(flooded.message, /Unexpected server response: 503/);
    } finally {
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
    }
  });
});
