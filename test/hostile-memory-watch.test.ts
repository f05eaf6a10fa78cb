/**
 * Hostile input - watch queues summed over connections. Found on a real node (audit, 2026-12-07): 100 watch
 * connections subscribed to a prefix and reading nothing while 1,000 values of 8,000 bytes were written held 260 KiB
 * each (WATCH_QUEUE_BYTES_MAX, past the kernel's socket buffers): 4.8 GiB over the 19,236 connections a node takes,
 * with no bound over them. Now the queues together hold at most `queueBytesTotalMax` beyond each connection's share
 * (`queueBytesShareMax`) and a message: past it, a connection holding more than its share is full, its subscriptions
 * are served from the log once it reads, and it is closed 4008 if it stays full for the stall time. The pure machine
 * (src/watch/machine.ts) with connections whose queues are counted as a socket's, so that no kernel buffer hides them.
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
/** Events messages of about 1 KiB each. */
const VALUE = 'x'.repeat(900);

describe('hostile input - watch queues over many connections', () => {
  test('watch queues: connections that read nothing hold the node queue budget, not their own bound each, and readers keep their live events', () => {
    let nowMs = 1_000;
    const store = new MemoryStore('test');
    const reads = new MemoryWatchReads(store);
    const machine = new WatchMachine({ reads, headSeq: store.head().seq, headHash: store.head().hash, nowMs, limits: LIMITS });
    const perform = (actions: readonly WatchAction[]): void => {
      reads.perform(actions);
      machine.assertInvariants();
    };
    const subscribe = (id: number, conn: TestConnection, address: string): void => {
      perform(machine.opened(nowMs, id, conn, address));
      perform(machine.received(nowMs, id, parseClientMessage(JSON.stringify({ type: 'subscribe', id: 1, prefixes: ['k/'] }), LIMITS)));
    };

    const idle: TestConnection[] = [];
    for (let i = 0; i < IDLE_CONNECTIONS; i++) {
      const conn = new TestConnection();
      subscribe(i + 1, conn, `192.0.2.${i + 1}`);
      conn.paused = true;
      idle.push(conn);
    }
    const reader = new TestConnection();
    subscribe(IDLE_CONNECTIONS + 1, reader, '198.51.100.1');

    let messageBytesMax = 0;
    for (let i = 0; i < ENTRIES; i++) {
      const sentBefore = reader.received.length;
      perform(machine.published(nowMs, [store.commit(nowMs, [{ type: 'put', key: Buffer.from(`k/${i % 10}`), value: Buffer.from(VALUE) }])]));
      messageBytesMax = Math.max(messageBytesMax, Buffer.byteLength(JSON.stringify(reader.received.at(-1))) + 4);
      assert.equal(reader.received.length, sentBefore + 1, `the reader got entry ${i + 1} live`);
    }

    const held = idle.reduce((sum, conn) => sum + conn.bufferedBytes, 0);
    const bound = LIMITS.queueBytesTotalMax + IDLE_CONNECTIONS * (LIMITS.queueBytesShareMax + messageBytesMax);
    // Before the budget: each queue filled to its own bound, 16 KiB and a message, 32 of them more than 512 KiB.
    assert.ok(IDLE_CONNECTIONS * LIMITS.queueBytesMax > 2 * bound);
    assert.ok(held <= bound, `${IDLE_CONNECTIONS} connections reading nothing hold ${held} bytes of queued messages; the bound is ${bound}`);
    assert.equal(machine.queuedBytes, held, 'the gauge counts what the queues hold');
    assert.equal(machine.laggingSubscriptions, IDLE_CONNECTIONS, 'the idle connections left the live fan-out');

    // Full (past their share while the node's queues are past theirs) and not shrinking: closed at the stall time.
    const until = nowMs + LIMITS.stallMs + LIMITS.progressIntervalMs;
    while (machine.nextTickMs() <= until) {
      nowMs = Math.max(nowMs, machine.nextTickMs());
      perform(machine.tick(nowMs));
    }
    for (const conn of idle) assert.equal(conn.closedWith?.code, WatchCloseCode.SLOW_WATCHER);
    assert.equal(reader.closedWith, undefined);
  });
});
