/**
 * Range deletes against many watch prefixes (audit of CPU time, 2026-12-07): an entry's range deletes were clipped to
 * every prefix of every selection, live and in catch-up, whether they covered it or not. Against one connection's
 * 64 subscriptions of 16 prefixes (4 connections: 4,096 prefixes), a transaction of 10,000 range deletes that covered
 * none (a 538 KB body) blocked the node's loop 17.5 s. The work is counted here, not timed: how often the machine
 * reads a range delete's start, which it did once per op and prefix, and now a few times per op plus once per prefix
 * the op covers. The pure watch machine over an in-memory log, no socket.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GENESIS_HASH, type EncodedEntry, type Entry, type Op } from '../src/log/index.js';
import { canonicalSelection, EventCache, SelectionIndex, WATCH_LIMITS, WatchMachine, type Selection, type WatchAction } from '../src/watch/index.js';
import { selectEvents } from './support/select-events.js';
import { DEFAULT_FILTERS, parseClientMessage } from '../src/api/index.js';
import { MemoryStore } from './support/sim/memory-store.js';
import { MemoryWatchReads, TestConnection } from './support/watch-machine.js';
import type { ServerMessage } from './support/watch.js';

const SUBSCRIPTIONS = WATCH_LIMITS.subscriptionsPerConnectionMax;
const PREFIXES = WATCH_LIMITS.prefixesPerSubscriptionMax;
const RANGE_DELETES = 2_000;

/** The entry with each range delete's `start` behind a getter that counts its reads. */
function counted(entry: Entry, reads: { starts: number }): Entry {
  const ops = entry.ops.map((op): Op => {
    if (op.type !== 'deleteRange') return op;
    const { start, end } = op;
    return {
      type: 'deleteRange',
      end,
      get start() {
        reads.starts++;
        return start;
      },
    };
  });
  return { ...entry, ops };
}

class CountingReads extends MemoryWatchReads {
  readonly reads = { starts: 0 };
  override readLog(fromSeq: number, limitEntries: number): readonly EncodedEntry[] {
    return super.readLog(fromSeq, limitEntries).map((encoded) => ({ ...encoded, entry: counted(encoded.entry, this.reads) }));
  }
}

function setUp(): { store: MemoryStore; reads: CountingReads; machine: WatchMachine; perform(actions: readonly WatchAction[]): void } {
  const store = new MemoryStore('test');
  const reads = new CountingReads(store);
  const machine = new WatchMachine({ reads, headSeq: 0, headHash: store.head().hash, nowMs: 0, limits: WATCH_LIMITS });
  return { store, reads, machine, perform: (actions) => reads.perform(actions) };
}

/** One connection's subscriptions at the limits: each of its own 16 prefixes, none of them under "zz/". */
function subscribeAll(h: ReturnType<typeof setUp>, connId: number, conn: TestConnection, fromSeq?: number): void {
  h.perform(h.machine.opened(0, connId, conn, '192.0.2.1'));
  for (let s = 0; s < SUBSCRIPTIONS; s++) {
    const prefixes = Array.from({ length: PREFIXES }, (_, i) => `p${connId}.${s}.${i}/`);
    const message = parseClientMessage(JSON.stringify({ type: 'subscribe', id: s, prefixes, ...(fromSeq === undefined ? {} : { fromSeq }) }), WATCH_LIMITS);
    h.perform(h.machine.received(0, connId, message));
  }
  assert.equal(conn.received.filter((message) => message.type === 'subscribed').length, SUBSCRIPTIONS);
}

/** RANGE_DELETES range deletes of keys no subscription watches, and one of the keys under the first prefix of subscription 0. */
function rangeDeletes(connId: number): Op[] {
  const ops: Op[] = Array.from({ length: RANGE_DELETES }, (_, i) => ({ type: 'deleteRange', start: Buffer.from(`zz/${i}/`), end: Buffer.from(`zz/${i}0`) }));
  ops.push({ type: 'deleteRange', start: Buffer.from(`p${connId}.0.0/a`), end: Buffer.from(`p${connId}.0.0/b`) });
  return ops;
}

function eventsOf(conn: TestConnection): Extract<ServerMessage, { type: 'events' }>[] {
  return conn.received.filter((message): message is Extract<ServerMessage, { type: 'events' }> => message.type === 'events');
}

// Before the fix each range delete's start was read once per prefix of every selection: 2,001 x 1,024.
const STARTS_PER_OP_MAX = 4;

test('watch ranges: the live fan-out of range deletes reads each op a few times, not once per prefix of every selection', () => {
  const h = setUp();
  const conn = new TestConnection();
  subscribeAll(h, 1, conn);
  const encoded = h.store.commit(0, rangeDeletes(1));
  const reads = { starts: 0 };
  h.perform(h.machine.published(0, [{ ...encoded, entry: counted(encoded.entry, reads) }]));
  const events = eventsOf(conn);
  assert.equal(events.length, 1, 'one subscription selects one event');
  assert.equal(events[0]!.id, 0);
  assert.deepEqual(
    events[0]!.events.map((event) => [event.type, 'start' in event ? event.start : undefined]),
    [['deleteRange', 'p1.0.0/a']],
  );
  const ops = RANGE_DELETES + 1;
  assert.ok(reads.starts <= STARTS_PER_OP_MAX * ops, `${reads.starts} reads of a range delete's start for ${ops} ops and ${SUBSCRIPTIONS * PREFIXES} prefixes`);
});

test('watch ranges: catching up over range deletes reads each op a few times, not once per prefix of every selection', () => {
  const h = setUp();
  const encoded = h.store.commit(0, rangeDeletes(1));
  h.perform(h.machine.published(0, [encoded]));
  const conn = new TestConnection();
  subscribeAll(h, 1, conn, encoded.entry.seq);
  // The subscriptions start behind the head: the pump serves them from the log.
  for (let round = 0; round < 10 && h.machine.laggingSubscriptions > 0; round++) h.perform(h.machine.tick(h.machine.nextTickMs()));
  assert.equal(h.machine.laggingSubscriptions, 0, 'every subscription caught up');
  const events = eventsOf(conn);
  assert.equal(events.length, 1, 'one subscription selects one event');
  assert.equal(events[0]!.id, 0);
  const ops = RANGE_DELETES + 1;
  assert.ok(h.reads.reads.starts <= STARTS_PER_OP_MAX * ops, `${h.reads.reads.starts} reads of a range delete's start for ${ops} ops and ${SUBSCRIPTIONS * PREFIXES} prefixes`);
});

test('watch ranges: the index agrees with each selection alone through many subscribes and unsubscribes', () => {
  // Enough prefixes that the index's sorted list merges its additions and removals many times over.
  const alphabet = [0x61, 0x62, 0x2f, 0xff, 0x00];
  const bytesOf = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => alphabet[random(alphabet.length)]!));
  let seed = 7;
  const random = (n: number): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed % n;
  };
  const index = new SelectionIndex<{ selection: Selection }>();
  const groups: { selection: Selection }[] = [];
  for (let round = 0; round < 300; round++) {
    for (let i = 0; i < 8; i++) {
      const group = { selection: canonicalSelection(Array.from({ length: 1 + random(4) }, () => bytesOf(random(5))), DEFAULT_FILTERS) };
      groups.push(group);
      index.add(group);
    }
    for (let i = 0; i < 6 && groups.length > 0; i++) index.remove(groups.splice(random(groups.length), 1)[0]!);
    const ops: Op[] = Array.from({ length: 4 }, () => {
      const start = bytesOf(random(4));
      const end = random(4) === 0 ? Buffer.alloc(0) : Buffer.concat([start, bytesOf(1 + random(3))]);
      return { type: 'deleteRange', start, end };
    });
    const entry: Entry = { seq: round + 1, timeMs: 1, ops, prevHash: GENESIS_HASH, hash: GENESIS_HASH };
    const live = index.match(entry, () => true);
    const cache = new EventCache(entry);
    for (const group of groups) assert.deepEqual(live.get(group) ?? [], selectEvents(entry, group.selection, cache), `round ${round}`);
  }
});
