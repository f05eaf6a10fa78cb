/**
 * The pure watch machine (src/watch/machine.ts) driven by hand: a manual clock, connections that read only when told,
 * and an in-memory log. No socket, no LMDB, no real time: each test runs in milliseconds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EncodedEntry, Op } from '../src/log/index.js';
import { KEY_BYTES_MAX } from '../src/limits.js';
import { WATCH_LIMITS_TEST, type WatchLimits } from '../src/watch/index.js';
import { WatchCloseCode, WatchProtocolError, parseClientMessage } from '../src/api/index.js';
import { WatchMachine, type WatchAction } from '../src/watch/index.js';
import { MemoryStore, sortedRecords } from './support/sim/memory-store.js';
import { MemoryWatchReads, SubscriptionHistory, TestConnection, type CheckedSelection, type WatchOracle } from './support/watch-machine.js';
import type { ServerMessage } from './support/watch.js';

class Harness implements WatchOracle {
  nowMs = 1_000;
  readonly store = new MemoryStore('test');
  readonly reads = new MemoryWatchReads(this.store);
  readonly machine: WatchMachine;
  readonly limits: WatchLimits;
  readonly logs: WatchAction[] = [];
  readonly entries: EncodedEntry[] = [];
  private lastConnId = 0;

  constructor(limits: Partial<WatchLimits> = {}, history = 0) {
    this.limits = { ...WATCH_LIMITS_TEST, ...limits };
    for (let i = 0; i < history; i++) this.commit([{ type: 'put', key: Buffer.from(`old/${i % 7}`), value: Buffer.from(`v${i}`) }], false);
    this.machine = new WatchMachine({ reads: this.reads, headSeq: this.store.head().seq, headHash: this.store.head().hash, nowMs: this.nowMs, limits: this.limits });
  }

  get headSeq(): number {
    return this.store.head().seq;
  }

  ops(seq: number): readonly Op[] {
    return this.entries[seq - 1]!.entry.ops;
  }

  kvAt(seq: number): Map<string, import('../src/store/index.js').SnapshotRecord> {
    assert.equal(seq, this.headSeq, 'snapshots in these tests are taken at the head');
    return new Map(this.store.keySpace);
  }

  perform(actions: readonly WatchAction[]): void {
    this.reads.perform(actions);
    for (const action of actions) if (action.type === 'log') this.logs.push(action);
    this.machine.assertInvariants();
  }

  commit(ops: Op[], publish = true): EncodedEntry {
    const encoded = this.store.commit(this.nowMs, ops);
    this.entries.push(encoded);
    if (publish) this.perform(this.machine.published(this.nowMs, [encoded]));
    return encoded;
  }

  put(key: string, value = 'v', publish = true): EncodedEntry {
    return this.commit([{ type: 'put', key: Buffer.from(key), value: Buffer.from(value) }], publish);
  }

  connect<C extends TestConnection = TestConnection>(conn: C = new TestConnection() as C, address = '192.0.2.1'): { id: number; conn: C } {
    const id = ++this.lastConnId;
    this.perform(this.machine.opened(this.nowMs, id, conn, address));
    return { id, conn };
  }

  message(id: number, message: Record<string, unknown>): void {
    let input;
    try {
      input = parseClientMessage(JSON.stringify(message), this.limits);
    } catch (error) {
      assert.ok(error instanceof WatchProtocolError);
      input = { type: 'refused' as const, error };
    }
    this.perform(this.machine.received(this.nowMs, id, input));
  }

  /** Ticks the machine asked for and was given (advance). */
  ticks = 0;

  /** Moves the manual clock on, running every tick the machine asks for on the way. */
  advance(ms: number): void {
    const until = this.nowMs + ms;
    let same = 0;
    while (this.machine.nextTickMs() <= until) {
      const at = Math.max(this.nowMs, this.machine.nextTickMs());
      same = at === this.nowMs ? same + 1 : 0;
      assert.ok(same < 1_000, 'the machine ticks in a busy loop');
      this.nowMs = at;
      this.ticks++;
      this.perform(this.machine.tick(this.nowMs));
    }
    this.nowMs = until;
  }

  /** Client reads everything queued, reporting the drained queue to the machine. */
  read(id: number, conn: TestConnection): ServerMessage[] {
    const messages = conn.read();
    this.perform(this.machine.drained(this.nowMs, id, conn.bufferedBytes));
    return messages;
  }
}

const ofType = <T extends ServerMessage['type']>(messages: readonly ServerMessage[], type: T): (ServerMessage & { type: T })[] =>
  messages.filter((message): message is ServerMessage & { type: T } => message.type === type);

function follow(h: Harness, conn: TestConnection, selection: CheckedSelection, startSeq: number): SubscriptionHistory {
  const history = new SubscriptionHistory('sub', selection, startSeq);
  let checked = 0;
  const original = conn.read.bind(conn);
  conn.read = () => {
    const messages = original();
    for (; checked < conn.received.length; checked++) {
      const message = conn.received[checked]!;
      if (message.type !== 'unsubscribed' && message.type !== 'error') history.check(message, h);
    }
    return messages;
  };
  return history;
}

describe('watch machine', () => {
  test('watch machine: the subscriptions of one address, and of the node, hold a bounded number of prefix bytes over all their connections', () => {
    // The hostile watcher of before: one address opening connection after connection, each holding the full
    // per-connection budget (4,000 x 32 KiB in production, some 720 MB of node memory). Here: budgets of two and three
    // maximal subscriptions, for the address and the node.
    const maximal = (tag: string): string[] => Array.from({ length: WATCH_LIMITS_TEST.prefixesPerSubscriptionMax }, (_, i) => `${tag}/${i}/`.padEnd(KEY_BYTES_MAX, 'x'));
    const full = WATCH_LIMITS_TEST.prefixesPerSubscriptionMax * KEY_BYTES_MAX;
    const h = new Harness({ prefixBytesPerConnectionMax: full, prefixBytesPerAddressMax: 2 * full, prefixBytesMax: 3 * full });
    const answer = (id: number, conn: TestConnection, subscriptionId: string, prefixes: string[]): ServerMessage => {
      h.message(id, { type: 'subscribe', id: subscriptionId, prefixes });
      return conn.received.at(-1)!;
    };
    const refusal = (message: ServerMessage): string => {
      assert.equal(message.type, 'error', JSON.stringify(message).slice(0, 200));
      assert.equal((message as { code: string }).code, 'TOO_MANY_PREFIXES');
      return (message as { message: string }).message;
    };
    const [a1, a2, a3] = [h.connect(undefined, 'a'), h.connect(undefined, 'a'), h.connect(undefined, 'a')];
    assert.equal(answer(a1.id, a1.conn, 's', maximal('a1')).type, 'subscribed');
    assert.equal(answer(a2.id, a2.conn, 's', maximal('a2')).type, 'subscribed');
    // The address's third connection is empty, but the address is full: refused, even a prefix of two bytes.
    assert.match(refusal(answer(a3.id, a3.conn, 's', maximal('a3'))), /subscriptions of your address \(a\) hold 32768 over 3 connections; one address holds at most 32768 bytes/);
    refusal(answer(a3.id, a3.conn, 's', ['x/']));
    // Another address has its own budget, until the node's is spent.
    const [b1, b2] = [h.connect(undefined, 'b'), h.connect(undefined, 'b')];
    assert.equal(answer(b1.id, b1.conn, 's', maximal('b1')).type, 'subscribed');
    assert.match(refusal(answer(b2.id, b2.conn, 's', ['x/'])), /this node's subscriptions hold 49152 of the 49152 bytes of prefixes it holds at most; retry later/);
    // A connection that closes gives its bytes back to its address and the node; an unsubscribe does too.
    h.perform(h.machine.closed(h.nowMs, a1.id));
    assert.equal(answer(b2.id, b2.conn, 's', ['x/']).type, 'subscribed');
    refusal(answer(a3.id, a3.conn, 's', maximal('a3'))); // the node's budget, by the two bytes of x/
    assert.equal(answer(a3.id, a3.conn, 's', ['y/']).type, 'subscribed');
    h.message(a2.id, { type: 'unsubscribe', id: 's' });
    assert.equal(answer(a3.id, a3.conn, 'more', maximal('a3')).type, 'error', 'the connection budget still holds: y/ plus a full one');
    h.message(a3.id, { type: 'unsubscribe', id: 's' });
    assert.equal(answer(a3.id, a3.conn, 'more', maximal('a3')).type, 'subscribed');
    // Every change reaches the subscriptions that were taken; the refused ones hold nothing.
    h.put(maximal('a3')[0]!);
    assert.equal(ofType(a3.conn.received, 'events').length, 1);
    h.machine.assertInvariants();
  });

  test('watch machine: subscribe, live events of the selected prefix only, unsubscribe, refused messages', () => {
    const h = new Harness();
    h.put('a/0');
    const { id, conn } = h.connect();
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['a/'] });
    assert.deepEqual(conn.received, [{ type: 'subscribed', id: 1, fromSeq: 2 }]);
    h.put('a/1', 'one');
    h.put('b/1');
    h.put('a/2', 'two');
    assert.deepEqual(
      ofType(conn.received, 'events').map((message) => [message.seq, message.events.map((event) => event.key)]),
      [
        [2, ['a/1']],
        [4, ['a/2']],
      ],
    );
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['c/'] });
    assert.equal(conn.received.at(-1)!.type === 'error' && conn.received.at(-1)!.type === 'error' ? (conn.received.at(-1) as { code: string }).code : '', 'DUPLICATE_ID');
    h.message(id, { type: 'unsubscribe', id: 1 });
    assert.deepEqual(conn.received.at(-1), { type: 'unsubscribed', id: 1 });
    h.put('a/3');
    h.advance(h.limits.heartbeatIntervalMs * 3);
    assert.equal(ofType(conn.received, 'events').length, 2, 'nothing after unsubscribe');
    assert.equal(ofType(conn.received, 'progress').length, 0, 'no progress for a removed subscription');
    h.message(id, { type: 'unsubscribe', id: 1 });
    assert.equal((conn.received.at(-1) as { code: string }).code, 'UNKNOWN_ID');
    h.message(id, { type: 'subscribe', id: 2, prefixes: [] });
    assert.equal((conn.received.at(-1) as { code: string }).code, 'INVALID_ARGUMENT');
    assert.equal(h.machine.subscriptions, 0);
    h.perform(h.machine.received(h.nowMs, id, { type: 'binary' }));
    assert.equal(conn.closedWith?.code, WatchCloseCode.UNSUPPORTED_DATA);
    // Events for a connection the machine closed, or never knew, are ignored.
    h.message(id, { type: 'subscribe', id: 3, prefixes: ['a/'] });
    h.perform(h.machine.drained(h.nowMs, 99, 0));
    h.perform(h.machine.closed(h.nowMs, id));
    h.perform(h.machine.closed(h.nowMs, id));
    assert.equal(h.machine.connectionCount, 0);
  });

  test('watch machine: a fromSeq in the retained past catches up from the log, in order, then goes live', () => {
    const h = new Harness({}, 40);
    const { id, conn } = h.connect();
    const history = follow(h, conn, { prefix: 'old/3', filters: {} }, 5);
    h.message(id, { type: 'subscribe', id: 's', prefixes: ['old/3'], fromSeq: 5 });
    assert.equal(h.machine.laggingSubscriptions, 1, 'behind: in catch-up');
    assert.equal(ofType(conn.received, 'events').length, 0, 'catch-up runs in a tick of its own, after the live fan-out');
    h.advance(1);
    assert.equal(h.machine.laggingSubscriptions, 0, 'caught up: live');
    assert.deepEqual(
      ofType(conn.received, 'events').map((message) => message.seq),
      [11, 18, 25, 32, 39],
    );
    h.put('old/3', 'live');
    assert.equal(ofType(conn.received, 'events').at(-1)!.seq, 41, 'live: straight from the fan-out');
    assert.equal(history.events, 6);
  });

  test('watch machine: a fromSeq before the retained log gets a snapshot in pages at the head, then the stream', () => {
    const h = new Harness({ snapshotPageBytes: 16 }, 40);
    h.store.trim(5);
    const { id, conn } = h.connect();
    const history = follow(h, conn, { prefix: 'old/', filters: {} }, 1);
    h.message(id, { type: 'subscribe', id: 's', prefixes: ['old/'], fromSeq: 1 });
    h.advance(5);
    const pages = ofType(conn.received, 'snapshot');
    assert.ok(pages.length >= 3, `several pages (${pages.length})`);
    assert.ok(pages.slice(0, -1).every((page) => !page.done) && pages.at(-1)!.done);
    assert.ok(pages.every((page) => page.seq === 40));
    assert.equal(history.snapshots, 1);
    assert.equal(history.cursor, 40);
    assert.equal(h.machine.openSnapshots, 0, 'released once sent');
    assert.equal(h.reads.open.size, 0);
    h.put('old/x');
    assert.equal(ofType(conn.received, 'events').at(-1)!.seq, 41);
  });

  test('watch machine: a replica that installed a snapshot moves live watchers to it at once, without waiting for an entry', () => {
    const h = new Harness({ snapshotPageBytes: 64 }, 10);
    const { id, conn } = h.connect();
    const history = follow(h, conn, { prefix: 'old/', filters: {} }, 11);
    h.message(id, { type: 'subscribe', id: 's', prefixes: ['old/'], fromSeq: 11 });
    h.advance(5);
    h.read(id, conn);
    // The snapshot's state: entries this node never applied one by one, and a log that starts above the watcher.
    for (let i = 0; i < 20; i++) h.put(`old/${i % 7}`, `s${i}`, false);
    h.store.trim(5);
    h.perform(h.machine.chainReplaced(h.nowMs, h.headSeq, h.store.head().hash));
    h.advance(5);
    h.read(id, conn);
    assert.equal(history.snapshots, 1, 'the watcher got the installed state');
    assert.equal(history.cursor, 30);
  });

  test('watch machine: an afterHash is checked where the hash is at hand (the head, the catch-up read, a replica\'s entry when it arrives, across a gap too); another chain\'s gets a reset at the head, the node\'s own streams on', () => {
    const other = 'ab'.repeat(32);
    const hex = (entry: EncodedEntry): string => entry.entry.hash.toString('hex');
    const resets = (conn: TestConnection, id: string): number[] =>
      ofType(conn.received, 'snapshot')
        .filter((message) => message.id === id && message.done)
        .map((message) => message.seq);
    const eventSeqs = (conn: TestConnection, id: string): number[] =>
      ofType(conn.received, 'events')
        .filter((message) => message.id === id)
        .map((message) => message.seq);

    // A replica at seq 4 whose store already holds 5 and 6 (not published yet: it is behind the clients).
    const h = new Harness({ snapshotPageBytes: 64 }, 4);
    const [e5, e6] = [h.put('old/5', 'v', false), h.put('old/6', 'v', false)];
    const { id, conn } = h.connect();
    const subscribe = (name: string, fromSeq: number, afterHash: string): void => h.message(id, { type: 'subscribe', id: name, prefixes: ['old/'], fromSeq, afterHash });
    subscribe('head-same', 5, hex(h.entries[3]!));
    subscribe('head-other', 5, other);
    subscribe('log-same', 3, hex(h.entries[1]!));
    subscribe('log-other', 3, other);
    subscribe('ahead-same', 7, hex(e6));
    subscribe('ahead-other', 7, other);
    h.advance(5);
    h.read(id, conn);
    // The snapshot is of the store, which is at 6 already (a replica applies before it publishes).
    assert.deepEqual(resets(conn, 'head-other'), [6], 'at the head: a reset at once');
    assert.deepEqual(resets(conn, 'log-other'), [6], 'inside the log: a reset from the catch-up read');
    assert.deepEqual(eventSeqs(conn, 'log-same'), [3, 4]);
    for (const name of ['head-same', 'log-same', 'ahead-same', 'ahead-other']) assert.deepEqual(resets(conn, name), [], name);
    const done = ofType(conn.received, 'snapshot').find((message) => message.id === 'head-other' && message.done)!;
    assert.equal(done.hash, hex(e6), 'the done page names the hash of its seq');

    // The replica gets there.
    h.perform(h.machine.published(h.nowMs, [e5, e6]));
    h.advance(5);
    h.read(id, conn);
    assert.deepEqual(resets(conn, 'ahead-other'), [6], 'ahead of the replica: checked when the entry arrives');
    assert.deepEqual(resets(conn, 'ahead-same'), []);
    const e7 = h.put('old/7');
    h.advance(5);
    h.read(id, conn);
    for (const name of ['head-same', 'head-other', 'log-same', 'log-other', 'ahead-same', 'ahead-other'])
      assert.deepEqual(eventSeqs(conn, name).at(-1), e7.entry.seq, `${name} streams on`);
    assert.deepEqual(eventSeqs(conn, 'ahead-same'), [7]);
    assert.ok(ofType(conn.received, 'events').every((message) => message.hash === hex(h.entries[message.seq - 1]!)), 'every events message names its hash');

    // Across a gap: the awaited seq is skipped (the replica installed a snapshot past it), so catch-up checks it.
    const g = new Harness({ snapshotPageBytes: 64 }, 2);
    const skipped = [g.put('old/3', 'v', false), g.put('old/4', 'v', false), g.put('old/5', 'v', false)];
    const gap = g.connect();
    g.message(gap.id, { type: 'subscribe', id: 'same', prefixes: ['old/'], fromSeq: 4, afterHash: hex(skipped[0]!) });
    g.message(gap.id, { type: 'subscribe', id: 'other', prefixes: ['old/'], fromSeq: 4, afterHash: other });
    g.perform(g.machine.published(g.nowMs, [skipped[2]!]));
    g.advance(5);
    g.read(gap.id, gap.conn);
    assert.deepEqual(resets(gap.conn, 'other'), [5]);
    assert.deepEqual(resets(gap.conn, 'same'), []);
    assert.deepEqual(eventSeqs(gap.conn, 'same'), [4, 5]);
  });

  test('watch machine: a chain replaced at or below what watchers were sent resets every watcher to the new state, and the stream goes on from there', () => {
    const h = new Harness({ snapshotPageBytes: 64 }, 6);
    const { id, conn } = h.connect();
    h.message(id, { type: 'subscribe', id: 'live', prefixes: ['old/'] });
    h.message(id, { type: 'subscribe', id: 'ahead', prefixes: ['old/'], fromSeq: 9 });
    h.put('old/forked'); // seq 7, of the chain about to be abandoned
    h.read(id, conn);
    assert.deepEqual(ofType(conn.received, 'events').map((message) => [message.id, message.seq]), [['live', 7]]);
    // The root was restored to an older backup and this replica resynced: the new chain has 4 entries.
    const restored = new MemoryStore('test');
    for (let i = 0; i < 4; i++) restored.commit(h.nowMs, [{ type: 'put', key: Buffer.from(`old/new${i}`), value: Buffer.from('n') }]);
    h.store.beginSnapshot();
    h.store.stageSnapshot(sortedRecords(new Map(restored.keySpace)));
    h.store.finishSnapshot(restored.head().seq, restored.head().hash, 'test');
    h.perform(h.machine.chainReplaced(h.nowMs, 4, restored.head().hash));
    h.advance(5);
    h.read(id, conn);
    for (const subscription of ['live', 'ahead']) {
      const pages = ofType(conn.received, 'snapshot').filter((message) => message.id === subscription);
      assert.ok(pages.length > 0, `${subscription}: reset with a snapshot`);
      assert.equal(pages[0]!.begin, true, `${subscription}: its first page says so`);
      assert.ok(pages.slice(1).every((page) => page.begin === undefined));
      assert.ok(pages.every((page) => page.seq === 4) && pages.at(-1)!.done);
      assert.deepEqual(
        pages.flatMap((page) => page.items.map((item) => item.key)),
        ['old/new0', 'old/new1', 'old/new2', 'old/new3'],
        `${subscription}: the new chain's state, without the forked entry's key`,
      );
    }
    // The new chain's next entry reaches both, and a new subscription starts after the installed seq.
    const next = restored.commit(h.nowMs, [{ type: 'put', key: Buffer.from('old/new4'), value: Buffer.from('n') }]);
    h.store.apply([next]);
    h.perform(h.machine.published(h.nowMs, [next]));
    h.message(id, { type: 'subscribe', id: 'fresh', prefixes: ['old/'] });
    h.read(id, conn);
    assert.deepEqual(
      ofType(conn.received, 'events').map((message) => [message.id, message.seq]),
      [['live', 7], ['live', 5], ['ahead', 5]],
    );
    assert.equal(ofType(conn.received, 'subscribed').find((message) => message.id === 'fresh')?.fromSeq, 6);
  });

  test('watch machine: a consumer with a full queue leaves the fan-out, catches up from the log once it reads, and goes live without a gap', () => {
    const h = new Harness();
    const { id, conn } = h.connect();
    const history = follow(h, conn, { prefix: 'k/', filters: {} }, 1);
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['k/'], fromSeq: 1 });
    conn.paused = true;
    const big = 'x'.repeat(3_000);
    for (let i = 0; i < 12; i++) h.put(`k/${i}`, big);
    assert.ok(conn.bufferedBytes >= h.limits.queueBytesMax);
    assert.equal(h.machine.laggingSubscriptions, 1, 'moved to catch-up when the queue was full');
    h.advance(h.limits.progressIntervalMs * 3); // shorter than the stall time
    assert.equal(conn.closedWith, undefined);
    for (let round = 0; round < 20 && (h.machine.laggingSubscriptions > 0 || conn.bufferedBytes > 0); round++) {
      h.read(id, conn);
      h.advance(1);
    }
    h.read(id, conn);
    assert.equal(h.machine.laggingSubscriptions, 0, 'live again');
    assert.deepEqual(
      ofType(conn.received, 'events').map((message) => message.seq),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
    conn.paused = false;
    h.put('k/last');
    assert.equal(history.cursor, 13);
  });

  // Found by the CPU audit (2026-12-07): with every lagging subscription's queue full, catch-up looked at all of them
  // every catchupPollMs until the stall close (16 ms a round, every 10 ms, at 256,000 subscriptions).
  test('watch machine: catch-up held back only by full queues waits for a drain, not a poll every catchupPollMs; a drain resumes it at once', () => {
    const h = new Harness();
    const { id, conn } = h.connect();
    for (let i = 1; i <= 4; i++) h.message(id, { type: 'subscribe', id: i, prefixes: [`k/${i}/`, 'k/'] });
    conn.paused = true;
    const big = 'x'.repeat(3_000);
    for (let i = 0; i < 12; i++) h.put(`k/${i}`, big);
    assert.equal(h.machine.laggingSubscriptions, 4, 'all in catch-up, their queue full');
    const ticksBefore = h.ticks;
    const span = h.limits.stallMs / 2;
    h.advance(span);
    const ticks = h.ticks - ticksBefore;
    // Progress rounds and the rounds of the pump between them: about two per progress interval, where a poll every
    // catchupPollMs made span / catchupPollMs (100 here).
    assert.ok(ticks <= 2 * (span / h.limits.progressIntervalMs) + 2, `${ticks} ticks in ${span} ms with every queue full`);
    assert.equal(conn.closedWith, undefined);
    h.read(id, conn);
    assert.ok(h.machine.nextTickMs() <= h.nowMs, 'a drain arms the pump at once');
    for (let round = 0; round < 40 && h.machine.laggingSubscriptions > 0; round++) {
      h.read(id, conn);
      h.advance(1);
    }
    h.read(id, conn);
    assert.equal(h.machine.laggingSubscriptions, 0, 'live again');
    for (let i = 1; i <= 4; i++)
      assert.deepEqual(
        ofType(conn.received, 'events').filter((message) => message.id === i).map((message) => message.seq),
        Array.from({ length: 12 }, (_, seq) => seq + 1),
        `subscription ${i} got every entry once`,
      );
  });

  test('watch machine: a queue full and not shrinking for the stall time closes 4008 after a final progress per subscription', () => {
    const h = new Harness();
    const { id, conn } = h.connect();
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['k/'] });
    h.message(id, { type: 'subscribe', id: 2, prefixes: ['other/'] });
    h.put('k/1');
    conn.paused = true;
    conn.bufferedBytes = h.limits.queueBytesMax;
    h.put('k/2');
    h.put('k/3');
    h.advance(h.limits.stallMs - h.limits.progressIntervalMs);
    assert.equal(conn.closedWith, undefined, 'not before the stall time');
    h.advance(h.limits.progressIntervalMs * 2);
    const closed = conn.closedWith as { code: number; reason: string } | undefined;
    assert.equal(closed?.code, WatchCloseCode.SLOW_WATCHER);
    assert.match(closed.reason, /resume each subscription/);
    const messages = conn.read();
    const finals = ofType(messages, 'progress');
    assert.deepEqual(
      finals.slice(-2).map((message) => [message.id, message.seq]),
      [
        [1, 1],
        [2, 3],
      ],
      'each subscription is told exactly where to resume',
    );
    assert.equal(h.machine.subscriptions, 0);
    assert.ok(h.logs.some((log) => log.type === 'log' && log.message.includes('slow watcher')));
  });

  test('watch machine: a 4008 while a snapshot is due names the seq after the last one the client was told, not entries skipped unseen (seed 48062)', () => {
    // Entries 1-6 change old/ keys only: a catch-up of k/ reads past them sending nothing, then finds the log trimmed
    // and is due a snapshot; its queue fills before the snapshot can start, and stays full for the stall time.
    const h = new Harness({ catchupReadEntriesMax: 2 }, 6);
    const { id, conn } = h.connect();
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['k/'], fromSeq: 1 });
    h.perform(h.machine.tick(h.nowMs)); // one catch-up round: entries 1 and 2, nothing selected
    h.store.trim(2);
    h.perform(h.machine.tick(h.nowMs)); // the read at seq 3 finds the log's start above it: a snapshot is due
    assert.equal(h.machine.openSnapshots, 0);
    conn.paused = true;
    conn.bufferedBytes = h.limits.queueBytesMax;
    h.advance(h.limits.stallMs + h.limits.progressIntervalMs * 2);
    const closed = conn.closedWith;
    assert.equal(closed?.code, WatchCloseCode.SLOW_WATCHER);
    assert.ok(!conn.read().some((message) => message.type === 'events' || message.type === 'progress' || message.type === 'snapshot'), 'the client was told nothing past its fromSeq');
    assert.equal(closed.reason, 'slow watcher: resume from seq 1', 'it resumes after the last message it got, as src/api/watch.ts says');
  });

  test('watch machine: a progress round frames each id once and writes that frame to every caught-up watcher; a full queue gets none and is closed', () => {
    /** Keeps the frames it was handed, to compare them by identity. */
    class FrameRecorder extends TestConnection {
      readonly frames: Buffer[] = [];
      override sendFramed(frame: Buffer): void {
        this.frames.push(frame);
        super.sendFramed(frame);
      }
    }
    const h = new Harness();
    const subscribe = (id: string | number): { id: number; conn: FrameRecorder } => {
      const watcher = h.connect(new FrameRecorder());
      h.message(watcher.id, { type: 'subscribe', id, prefixes: ['team/'] });
      return watcher;
    };
    const ones = [1, 2, 3, 4].map(() => subscribe(1));
    const named = subscribe('x');
    const full = subscribe(1);
    full.conn.bufferedBytes = h.limits.queueBytesMax;
    const skipped = h.put('elsewhere/1'); // selects none of them: each must be told by progress
    h.advance(h.limits.progressIntervalMs);
    const shared = ones[0]!.conn.frames.at(-1)!;
    for (const { conn } of ones) assert.equal(conn.frames.at(-1), shared, 'one Buffer written to every watcher with that id');
    assert.deepEqual(ofType(ones[0]!.conn.received, 'progress').at(-1), { type: 'progress', id: 1, seq: skipped.entry.seq, hash: skipped.entry.hash.toString('hex') });
    assert.notEqual(named.conn.frames.at(-1), shared);
    assert.deepEqual(ofType(named.conn.received, 'progress').at(-1), { type: 'progress', id: 'x', seq: skipped.entry.seq, hash: skipped.entry.hash.toString('hex') });
    assert.equal(full.conn.frames.length, 0, 'nothing is queued on a full connection');
    h.advance(h.limits.stallMs);
    assert.equal(full.conn.closedWith?.code, WatchCloseCode.SLOW_WATCHER);
    assert.deepEqual(ofType(full.conn.received, 'progress').at(-1), { type: 'progress', id: 1, seq: skipped.entry.seq, hash: skipped.entry.hash.toString('hex') }, 'told where to resume');
    for (const { conn } of [...ones, named]) assert.equal(conn.closedWith, undefined);
  });

  test('watch machine: progress within one interval when something was skipped, a heartbeat when quiet, nothing in between', () => {
    const h = new Harness();
    const { id, conn } = h.connect();
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['mine/'] });
    const times: [number, number][] = [];
    let seen = 0;
    const record = (): void => {
      for (const message of ofType(conn.received.slice(seen), 'progress')) times.push([h.nowMs, message.seq]);
      seen = conn.received.length;
    };
    const interval = h.limits.progressIntervalMs;
    const start = h.nowMs;
    h.put('theirs/1');
    h.advance(interval);
    record();
    assert.deepEqual(times, [[start + interval, 1]], 'the skipped entry is reported within one interval');
    // Quiet: the next progress is the heartbeat, heartbeatIntervalMs after the last message.
    h.advance(h.limits.heartbeatIntervalMs - interval);
    record();
    assert.equal(times.length, 1, 'nothing before the heartbeat interval');
    h.advance(interval);
    record();
    assert.deepEqual(times.at(-1), [start + interval + h.limits.heartbeatIntervalMs, 1], 'heartbeat');
    // An entry the subscription selects needs no progress after it.
    h.put('mine/1');
    h.advance(interval * 2);
    record();
    assert.equal(times.length, 2);
  });

  test('watch machine: snapshots never exceed their slots; waiting subscriptions get theirs when one is released', () => {
    const h = new Harness({ snapshotsMax: 2, snapshotPageBytes: 8 }, 60);
    h.store.trim(3);
    const consumers = Array.from({ length: 5 }, (_, i) => {
      const { id, conn } = h.connect();
      const history = follow(h, conn, { prefix: 'old/', filters: { keysOnly: i % 2 === 0 } }, 1);
      h.message(id, { type: 'subscribe', id: i, prefixes: ['old/'], fromSeq: 1, filters: { keysOnly: i % 2 === 0 } });
      return history;
    });
    for (let i = 0; i < 40 && consumers.some((history) => history.snapshots === 0); i++) {
      h.advance(1);
      assert.ok(h.machine.openSnapshots <= 2);
    }
    assert.ok(consumers.every((history) => history.snapshots === 1 && history.cursor === 60));
    assert.equal(h.reads.openedMax, 2, 'both slots were used, never more');
    assert.equal(h.machine.openSnapshots, 0);
  });

  test('watch machine: a snapshot still being sent after snapshotMsMax closes its connection 4008 and frees the slot', () => {
    const h = new Harness({ snapshotPageBytes: 8 }, 60);
    h.store.trim(3);
    const { id, conn } = h.connect();
    // The queue fills with the first page and stays full, shrinking a little: never a stall, but the snapshot crawls.
    conn.paused = true;
    conn.bufferedBytes = h.limits.queueBytesMax - 100;
    h.message(id, { type: 'subscribe', id: 1, prefixes: ['old/'], fromSeq: 1 });
    h.advance(1);
    assert.equal(h.machine.openSnapshots, 1);
    assert.ok(conn.bufferedBytes >= h.limits.queueBytesMax);
    for (let t = 0; t <= h.limits.snapshotMsMax && conn.closedWith === undefined; t += h.limits.progressIntervalMs) {
      conn.bufferedBytes -= 1;
      h.advance(h.limits.progressIntervalMs);
    }
    assert.equal((conn.closedWith as { code: number } | undefined)?.code, WatchCloseCode.SLOW_WATCHER);
    assert.ok(h.nowMs - 1_000 >= h.limits.snapshotMsMax);
    assert.equal(h.machine.openSnapshots, 0);
    assert.equal(h.reads.open.size, 0);
    assert.ok(h.logs.some((log) => log.type === 'log' && String(log.fields.why).startsWith('snapshot not received')));
  });

  test('watch machine: shutdown closes every connection 1001, releases snapshots, and refuses later connections', () => {
    const h = new Harness({ snapshotPageBytes: 8 }, 30);
    h.store.trim(3);
    const a = h.connect();
    a.conn.paused = true;
    a.conn.bufferedBytes = h.limits.queueBytesMax - 100;
    h.message(a.id, { type: 'subscribe', id: 1, prefixes: ['old/'], fromSeq: 1 });
    h.advance(1);
    assert.equal(h.reads.open.size, 1);
    h.perform(h.machine.shutdown(h.nowMs));
    assert.equal(a.conn.closedWith?.code, WatchCloseCode.GOING_AWAY);
    assert.equal(h.reads.open.size, 0);
    assert.equal(h.machine.nextTickMs(), Infinity);
    const b = h.connect();
    assert.equal(b.conn.closedWith?.code, WatchCloseCode.GOING_AWAY);
  });
});
