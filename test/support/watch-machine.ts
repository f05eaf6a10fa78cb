/**
 * Test doubles for the pure watch machine (src/watch/machine.ts): a connection that records what the machine sends
 * and models a client's receive queue, reads over an in-memory log, and a checker that holds a subscription's history
 * to the protocol's promises against the log: ordered, gap-free (no selected change missed, also across resumes),
 * free of duplicates, snapshots equal to the key space at their seq, and resumable from the last seq received.
 */
import assert from 'node:assert/strict';
import type { EncodedEntry, Op } from '../../src/log/index.js';
import type { SnapshotRecord } from '../../src/store/index.js';
import { framePayload } from '../../src/watch/frame.js';
import type { WatchAction, WatchConnection, WatchReads, WatchSnapshotPage } from '../../src/watch/machine.js';
import { sortedRecords, type KeySpace } from './sim/memory-store.js';
import { bytesJson, expectedEntryEvents, type Filters, type ServerMessage } from './watch.js';

/**
 * A connection whose client reads only when told to: what the machine sends waits in `pending` and counts in
 * `bufferedBytes` until `read()`, as bytes wait in a socket's queue for a client that does not read.
 */
export class TestConnection implements WatchConnection {
  bufferedBytes = 0;
  writtenBytes = 0;
  /** A client that answers every ping at once is always heard; a test of a vanished one sets a time. */
  heardMs = Infinity;
  pings = 0;
  /** Read as soon as sent (a client that keeps up), unless paused. */
  paused = false;
  readonly received: ServerMessage[] = [];
  private pending: string[] = [];
  closedWith: { readonly code: number; readonly reason: string } | undefined;

  send(text: string): void {
    this.queue(text);
  }

  sendFramed(frame: Buffer): void {
    assert.equal(frame[0], 0x81, 'a complete text frame');
    this.queue(framePayload(frame).toString('utf8'));
  }

  sendFragments(head: string, body: Buffer): void {
    this.queue(head + body.toString('utf8'));
  }

  ping(): void {
    this.pings++;
  }

  close(code: number, reason: string): void {
    assert.equal(this.closedWith, undefined, 'closed twice');
    assert.ok(Buffer.byteLength(reason) <= 123, 'a close reason fits a close frame');
    this.closedWith = { code, reason };
  }

  /** Reads everything queued; returns what was read. */
  read(): ServerMessage[] {
    const texts = this.pending;
    this.pending = [];
    this.bufferedBytes = 0;
    const messages = texts.map((text) => JSON.parse(text) as ServerMessage);
    this.received.push(...messages);
    return messages;
  }

  private queue(text: string): void {
    assert.equal(this.closedWith, undefined, 'sent after close');
    this.pending.push(text);
    this.bufferedBytes += Buffer.byteLength(text) + 4;
    this.writtenBytes += Buffer.byteLength(text) + 4;
    if (!this.paused) this.read();
  }
}

/** What the watch reads need from a log: the simulation's MemoryStore satisfies it. */
export interface WatchedStore {
  head(): { readonly seq: number; readonly hash: Buffer };
  readLog(fromSeq: number, limitEntries: number, limitBytes: number): EncodedEntry[];
  readonly keySpace: ReadonlyMap<string, SnapshotRecord>;
}

interface OpenSnapshot {
  readonly seq: number;
  readonly hash: Buffer;
  readonly records: readonly SnapshotRecord[];
  next: number;
}

/** `WatchReads` over an in-memory store; `perform` carries out the machine's snapshot actions. */
export class MemoryWatchReads implements WatchReads {
  readonly open = new Map<number, OpenSnapshot>();
  openedMax = 0;

  constructor(private readonly store: WatchedStore) {}

  readLog(fromSeq: number, limitEntries: number): readonly EncodedEntry[] {
    return this.store.readLog(fromSeq, limitEntries, Infinity);
  }

  snapshotPage(snapshotId: number, pageBytes: number): WatchSnapshotPage {
    const snapshot = this.open.get(snapshotId);
    assert.ok(snapshot !== undefined, `snapshot ${snapshotId} read while not open`);
    const records: SnapshotRecord[] = [];
    let bytes = 0;
    while (snapshot.next < snapshot.records.length && (records.length === 0 || bytes < pageBytes)) {
      const record = snapshot.records[snapshot.next++]!;
      records.push(record);
      bytes += record.key.length + record.value.length;
    }
    return { seq: snapshot.seq, hash: snapshot.hash, records };
  }

  perform(actions: readonly WatchAction[]): void {
    for (const action of actions) {
      if (action.type === 'openSnapshot') {
        assert.ok(!this.open.has(action.snapshotId), 'snapshot opened twice');
        const inRanges = (key: Buffer): boolean =>
          action.ranges.some((range) => Buffer.compare(key, range.start) >= 0 && (range.end.length === 0 || Buffer.compare(key, range.end) < 0));
        const records = sortedRecords(new Map(this.store.keySpace)).filter((record) => inRanges(record.key));
        this.open.set(action.snapshotId, { ...this.store.head(), records, next: 0 });
        this.openedMax = Math.max(this.openedMax, this.open.size);
      } else if (action.type === 'releaseSnapshot') {
        assert.ok(this.open.delete(action.snapshotId), 'a snapshot released that is not open');
      }
    }
  }
}

/** The log as the checker knows it: every entry ever committed, and the key space at any seq. */
export interface WatchOracle {
  readonly headSeq: number;
  ops(seq: number): readonly Op[];
  kvAt(seq: number): KeySpace;
}

export interface CheckedSelection {
  readonly prefix: string;
  readonly filters: Filters;
}

/**
 * One client subscription followed across connections: `cursor` is the last seq it knows it has every selected change
 * up to; it resumes from `cursor + 1`. Every message it reads is checked against the oracle.
 */
export class SubscriptionHistory {
  cursor: number;
  events = 0;
  progress = 0;
  snapshots = 0;
  resumes = 0;
  private snapshotItems: Record<string, unknown>[] | undefined;

  constructor(
    readonly label: string,
    readonly selection: CheckedSelection,
    startSeq: number,
  ) {
    this.cursor = startSeq - 1;
  }

  /** The `fromSeq` to subscribe with on a new connection. */
  resumeSeq(): number {
    // A snapshot cut short is started again: its pages do not move the cursor until done.
    this.snapshotItems = undefined;
    return this.cursor + 1;
  }

  check(message: ServerMessage, oracle: WatchOracle): void {
    const at = `${this.label} (cursor ${this.cursor})`;
    switch (message.type) {
      case 'subscribed':
        assert.equal(message.fromSeq, this.cursor + 1, `${at}: subscribed at ${message.fromSeq}, asked ${this.cursor + 1}`);
        return;
      case 'events': {
        assert.ok(message.seq > this.cursor, `${at}: events of seq ${message.seq} (ordered, no duplicates)`);
        assert.ok(message.seq <= oracle.headSeq, `${at}: events of seq ${message.seq}, past the root's ${oracle.headSeq}`);
        this.assertNothingSelected(this.cursor + 1, message.seq - 1, oracle, `${at}: events of seq ${message.seq}`);
        assert.deepEqual(message.events, this.expected(message.seq, oracle), `${at}: events of seq ${message.seq}`);
        assert.equal(this.snapshotItems, undefined, `${at}: events in the middle of a snapshot`);
        this.cursor = message.seq;
        this.events++;
        return;
      }
      case 'progress':
        assert.ok(message.seq >= this.cursor, `${at}: progress ${message.seq} goes back`);
        assert.ok(message.seq <= oracle.headSeq, `${at}: progress ${message.seq}, past the root's ${oracle.headSeq}`);
        assert.equal(this.snapshotItems, undefined, `${at}: progress in the middle of a snapshot`);
        this.assertNothingSelected(this.cursor + 1, message.seq, oracle, `${at}: progress ${message.seq}`);
        this.cursor = message.seq;
        this.progress++;
        return;
      case 'snapshot': {
        // A page marked begin starts a snapshot over. A snapshot that began so may be below the cursor (a reset): it
        // replaces the client's state, and is checked against the key space at its seq like any other (src/api/watch.ts).
        if (message.begin === true) this.snapshotItems = undefined;
        const resetPage = message.begin === true || this.snapshotItems !== undefined;
        assert.ok(message.seq >= this.cursor || resetPage, `${at}: a snapshot at ${message.seq} goes back`);
        this.snapshotItems = [...(this.snapshotItems ?? []), ...(message.items as unknown as Record<string, unknown>[])];
        if (!message.done) return;
        const keysOnly = this.selection.filters.keysOnly ?? false;
        const want = sortedRecords(oracle.kvAt(message.seq))
          .filter((record) => record.key.toString('latin1').startsWith(this.selection.prefix))
          .map((record) => {
            const key = bytesJson(record.key);
            const value = bytesJson(record.value);
            return keysOnly
              ? { key: key.text, keyEncoding: key.encoding, createSeq: record.createSeq, modSeq: record.modSeq, version: record.version }
              : { key: key.text, keyEncoding: key.encoding, value: value.text, valueEncoding: value.encoding, createSeq: record.createSeq, modSeq: record.modSeq, version: record.version };
          });
        assert.deepEqual(this.snapshotItems, want, `${at}: snapshot at ${message.seq} differs from the key space there`);
        this.snapshotItems = undefined;
        this.cursor = message.seq;
        this.snapshots++;
        return;
      }
      default:
        assert.fail(`${at}: unexpected ${JSON.stringify(message)}`);
    }
  }

  private expected(seq: number, oracle: WatchOracle): unknown {
    return expectedEntryEvents(seq, oracle.ops(seq), { prefixes: [Buffer.from(this.selection.prefix)], filters: this.selection.filters });
  }

  /** Gap-free: no entry in [from, to] selects anything, or its events would have come first. */
  private assertNothingSelected(from: number, to: number, oracle: WatchOracle, what: string): void {
    for (let seq = from; seq <= to; seq++)
      assert.equal((this.expected(seq, oracle) as unknown[]).length, 0, `${what}: seq ${seq} selects changes that were never sent (a gap)`);
  }
}
