/**
 * Hostile input - watch queues summed over connections. Found on a real node (audit, 2026-12-07): 100 watch
 * connections subscribed to a prefix and reading nothing while 1,000 values of 8,000 bytes were written held 260 KiB
 * each (WATCH_QUEUE_BYTES_MAX, past the kernel's socket buffers): 4.8 GiB over the 19,236 connections a node takes,
 * with no bound over them. Now the queues together hold at most `queueBytesTotalMax` beyond each connection's share
 * (`queueBytesShareMax`): past it, a connection holding more than its share is full, its subscriptions are served from
 * the log once it reads, and it is closed 4008 if it stays full for the stall time.
 *
 * Messages that are not shared (distinct selections of one large value: every prefix of a long key is a selection of
 * its own) escaped it: a connection within its share took any message, 1,000 watchers reading nothing held 997 MiB of
 * 1 MiB events on a real node (decision record 85). Now a message past a connection's share needs room in the budget,
 * and one that does not fit waits in the log; a body shared by many connections counts once. The pure machine (src/watch/machine.ts) with connections whose queues are
 * counted as a socket's, so that no kernel buffer hides them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WatchCloseCode, parseClientMessage } from '../src/api/index.js';
import { WATCH_LIMITS_TEST, WatchMachine, type WatchAction, type WatchLimits } from '../src/watch/index.js';
import { MemoryStore } from './support/sim/memory-store.js';
import { MemoryWatchReads, TestConnection } from './support/watch-machine.js';

const KiB = 1024;
const LIMITS: WatchLimits = { ...WATCH_LIMITS_TEST, queueBytesTotalMax: 64 * KiB, queueBytesShareMax: 1 * KiB };
const IDLE_CONNECTIONS = 32;
const ENTRIES = 200;
/** Events messages of about 900 bytes each, within a connection's share. */
const VALUE = 'x'.repeat(700);
/** A key with a prefix of its own for each idle connection: their selections differ, so no message is shared. */
const LONG_KEY = `k/${'p'.repeat(IDLE_CONNECTIONS)}`;
/** Events messages of about 12 KiB: larger than a share, below a connection's own bound (16 KiB). */
const LARGE_VALUE = 'y'.repeat(12 * KiB);

/** A machine under LIMITS over a store, and the steps of the tests: open and subscribe, write, run the clock. */
function harness() {
  let nowMs = 1_000;
  const store = new MemoryStore('test');
  const reads = new MemoryWatchReads(store);
  const machine = new WatchMachine({ reads, headSeq: store.head().seq, headHash: store.head().hash, nowMs, limits: LIMITS });
  const perform = (actions: readonly WatchAction[]): void => {
    reads.perform(actions);
    machine.assertInvariants();
  };
  return {
    machine,
    store,
    get nowMs() {
      return nowMs;
    },
    subscribe(id: number, conn: TestConnection, address: string, prefix = 'k/', fromSeq?: number): void {
      perform(machine.opened(nowMs, id, conn, address));
      perform(machine.received(nowMs, id, parseClientMessage(JSON.stringify({ type: 'subscribe', id: 1, prefixes: [prefix], fromSeq }), LIMITS)));
    },
    put(key: string, value: string): void {
      perform(machine.published(nowMs, [store.commit(nowMs, [{ type: 'put', key: Buffer.from(key), value: Buffer.from(value) }])]));
    },
    /** Runs the machine's ticks until `untilMs`; a connection the machine closed is closed by its peer at once. */
    runUntil(untilMs: number, connections: readonly [number, TestConnection][]): void {
      while (machine.nextTickMs() <= untilMs) {
        nowMs = Math.max(nowMs, machine.nextTickMs());
        perform(machine.tick(nowMs));
        for (const [id, conn] of connections) if (conn.closedWith !== undefined) perform(machine.closed(nowMs, id));
      }
      nowMs = untilMs;
    },
  };
}

describe('hostile input - watch queues over many connections', () => {
  test('watch queues: connections that read nothing hold the node queue budget, not their own bound each, and readers keep their live events', () => {
    const node = harness();
    const { machine } = node;
    const subscribe = (id: number, conn: TestConnection, address: string): void => node.subscribe(id, conn, address);

    const idle: TestConnection[] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      subscribe(i + 1, conn, `192.0.2.${i + 1}`);
      conn.paused = true;
      idle.push(conn);
    }
    const reader = new TestConnection();
    subscribe(IDLE_CONNECTIONS + 1, reader, '198.51.100.1');

    for (let i = 0; i < ENTRIES; i++) {
      const sentBefore = reader.received.length;
      node.put(`k/${i % 10}`, VALUE);
      assert.ok(Buffer.byteLength(JSON.stringify(reader.received.at(-1))) + 4 <= LIMITS.queueBytesShareMax, 'the messages fit a share');
      assert.equal(reader.received.length, sentBefore + 1, `the reader got entry ${i + 1} live`);
    }

    const held = idle.reduce((sum, conn) => sum + conn.bufferedBytes, 0);
    const bound = LIMITS.queueBytesTotalMax + IDLE_CONNECTIONS * LIMITS.queueBytesShareMax;
    // Before the budget: each queue filled to its own bound, 16 KiB and a message, 32 of them more than 512 KiB.
    assert.ok(IDLE_CONNECTIONS * LIMITS.queueBytesMax > 4 * bound);
    assert.ok(held <= bound, `${IDLE_CONNECTIONS} connections reading nothing hold ${held} bytes of queued messages; the bound is ${bound}`);
    assert.equal(machine.queuedBytes, held, 'the gauge counts what the queues hold');
    assert.equal(machine.laggingSubscriptions, IDLE_CONNECTIONS, 'the idle connections left the live fan-out');

    // Full (past their share while the node's queues are past theirs) and not shrinking: closed at the stall time.
    node.runUntil(node.nowMs + LIMITS.stallMs + LIMITS.progressIntervalMs, []);
    for (const conn of idle) assert.equal(conn.closedWith?.code, WatchCloseCode.SLOW_WATCHER);
    assert.equal(reader.closedWith, undefined);
  });

  test('watch queues: messages that are not shared (a prefix of one long key each) hold the budget and a share per connection, not a message each', () => {
    const node = harness();
    const idle: TestConnection[] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      node.subscribe(i + 1, conn, `192.0.2.${i + 1}`, LONG_KEY.slice(0, 3 + i));
      conn.paused = true;
      idle.push(conn);
    }
    for (let i = 0; i < 4; i++) node.put(LONG_KEY, LARGE_VALUE);

    const held = idle.reduce((sum, conn) => sum + conn.bufferedBytes, 0);
    const bound = LIMITS.queueBytesTotalMax + IDLE_CONNECTIONS * LIMITS.queueBytesShareMax;
    // Before record 85, each connection within its share took a message of 12 KiB: 32 of them some 400 KiB.
    assert.ok(held <= bound, `${IDLE_CONNECTIONS} connections reading nothing, each its own selection of a 12 KiB value, hold ${held} bytes; the bound is ${bound}`);
    assert.equal(node.machine.queuedBytes, held);
    assert.equal(node.machine.laggingSubscriptions, IDLE_CONNECTIONS, 'those whose message did not fit wait in the log');
  });

  // Before record 85 too, few pages went out here: a snapshot keeps its slot (2 under these limits) until its last, empty
  // page is sent, which a full connection is not. The page waits for room now as an event does; this checks the bound.
  test('watch queues: snapshot pages that are not shared (a prefix of one long key each) stay within the budget and a share per connection', () => {
    const node = harness();
    node.put(LONG_KEY, LARGE_VALUE);
    for (let i = 0; i < 4; i++) node.put('other', 'v');
    node.store.trim(1);
    const idle: TestConnection[] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      conn.paused = true;
      // From before the retained log: each is sent the state of its prefix first, a page of the 12 KiB value.
      node.subscribe(i + 1, conn, `192.0.2.${i + 1}`, LONG_KEY.slice(0, 3 + i), 1);
      idle.push(conn);
    }
    node.runUntil(node.nowMs + LIMITS.stallMs / 2, []);
    const held = idle.reduce((sum, conn) => sum + conn.bufferedBytes, 0);
    const bound = LIMITS.queueBytesTotalMax + IDLE_CONNECTIONS * LIMITS.queueBytesShareMax;
    assert.ok(idle.some((conn) => conn.bufferedBytes > LARGE_VALUE.length), 'pages of the value were sent');
    assert.ok(held <= bound, `${IDLE_CONNECTIONS} connections reading nothing, each a snapshot of its own prefix of a 12 KiB value, hold ${held} bytes; the bound is ${bound}`);
  });

  test('watch queues: a large event shared by many connections counts once against the budget, so each of them takes it live', () => {
    const node = harness();
    const idle: TestConnection[] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      node.subscribe(i + 1, conn, `192.0.2.${i + 1}`);
      conn.paused = true;
      idle.push(conn);
    }
    node.put('k/shared', LARGE_VALUE);
    const queued = idle.reduce((sum, conn) => sum + conn.bufferedBytes, 0);
    // Counted per connection, 32 of 12 KiB would pass the 64 KiB budget after five: the rest would catch up.
    assert.ok(queued > 4 * LIMITS.queueBytesTotalMax, `the queues hold the event ${IDLE_CONNECTIONS} times (${queued} bytes)`);
    assert.equal(node.machine.laggingSubscriptions, 0, 'every connection took the event live');
    assert.ok(node.machine.queueBudgetBytes < LARGE_VALUE.length + IDLE_CONNECTIONS * 256, `the budget counts its body once (${node.machine.queueBudgetBytes} bytes)`);
    for (const conn of idle) conn.read();
    assert.equal(node.machine.queuedBytes, 0);
  });

  test('watch queues: a reader receives every event, a value larger than its share included, while connections that read nothing hold the budget', () => {
    const node = harness();
    const all: [number, TestConnection][] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      node.subscribe(i + 1, conn, `192.0.2.${i + 1}`, LONG_KEY.slice(0, 3 + i));
      conn.paused = true;
      all.push([i + 1, conn]);
    }
    const reader = new TestConnection();
    const readerId = IDLE_CONNECTIONS + 1;
    node.subscribe(readerId, reader, '198.51.100.1');
    all.push([readerId, reader]);

    // The idle connections take the budget; the reader's small events stay live, its large ones wait for room.
    const written: string[] = [];
    for (let i = 0; i < 12; i++) {
      const value = i % 3 === 2 ? LARGE_VALUE : VALUE;
      node.put(LONG_KEY, value);
      written.push(value);
    }
    assert.ok(node.machine.queuedBytes > LIMITS.queueBytesTotalMax - 16 * KiB, `the idle connections hold the budget (${node.machine.queuedBytes} bytes)`);
    // Until they are closed as stalled and go: then the reader catches up from the log, nothing lost, in order.
    node.runUntil(node.nowMs + LIMITS.stallMs + LIMITS.closeTimeoutMs + 10 * LIMITS.progressIntervalMs, all);
    for (const [, conn] of all.slice(0, IDLE_CONNECTIONS)) assert.equal(conn.closedWith?.code, WatchCloseCode.SLOW_WATCHER);
    assert.equal(reader.closedWith, undefined);
    const events = reader.received.flatMap((message) => (message.type === 'events' ? message.events : []));
    assert.deepEqual(
      events.map((event) => event.value),
      written,
      'the reader received every value written, in order',
    );
  });
});
