/**
 * The LMDB store against a real environment in temp directories: key revisions, deletes, consistent paginated
 * ranges, the verified log, replay on a replica, retention and restart.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { assertProperty } from './support/seed.js';
import { open } from 'lmdb';
import { ChainError, EntryDecodeError, GENESIS_HASH, GENESIS_HEAD, sealEntry, verifyNext, type ChainHead, type EncodedEntry, type Op } from '../src/log/index.js';
import { MercuryError } from '../src/errors/index.js';
import { KEY_VERSION_MAX, Store, prefixEnd, type KeyRecord, type RangeItem } from '../src/store/index.js';
import { SnapshotChunkWriter, encodeMessage } from '../src/replication/protocol.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mercury-store-test-'));
let dirCount = 0;
const openStores: Store[] = [];

/** A fresh store in its own directory. noSync: these tests check logic, not fsync, and stay fast. */
function freshStore(options: { createDataset?: boolean } = {}): Store {
  const store = Store.open({ path: path.join(root, `store-${++dirCount}`), noSync: true, mapBytes: 256 * 1024 * 1024, ...options });
  openStores.push(store);
  return store;
}

async function closeStore(store: Store): Promise<void> {
  await store.close();
  openStores.splice(openStores.indexOf(store), 1);
}

after(async () => {
  for (const store of openStores.splice(0)) await store.close();
  fs.rmSync(root, { recursive: true, force: true });
});

/** The concurrent range test reads until it has seen this many entries go by, for at most this long. */
const CONCURRENT_RANGE_SEQS_MIN = 5;
const CONCURRENT_RANGE_WAIT_MS = 30_000;

const b = (text: string): Buffer => Buffer.from(text);
const put = (key: string | Buffer, value: string | Buffer): Op => ({
  type: 'put',
  key: typeof key === 'string' ? b(key) : key,
  value: typeof value === 'string' ? b(value) : value,
});
const del = (key: string | Buffer): Op => ({ type: 'delete', key: typeof key === 'string' ? b(key) : key });
const deleteRange = (start: Buffer, end: Buffer): Op => ({ type: 'deleteRange', start, end });
const deletePrefix = (prefix: Buffer): Op => deleteRange(prefix, prefixEnd(prefix));

let fakeTimeMs = 1_700_000_000_000;

/** Commits `ops` as one entry; returns its seq. */
function commit(store: Store, ops: readonly Op[]): number {
  const committed = store.commit(++fakeTimeMs, (view) => {
    for (const op of ops) view.apply(op);
  });
  assert.ok(committed !== undefined, 'commit with ops must write an entry');
  return committed.entry.seq;
}

/** Overwrites the first byte of `marker` (a value's text) in the data file, under LMDB's feet. */
function damageDataFile(dir: string, marker: string): void {
  const file = path.join(dir, 'data.mdb');
  const at = fs.readFileSync(file).indexOf(marker);
  assert.ok(at > 0);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from('X'), 0, 1, at);
  fs.closeSync(fd);
}

function record(store: Store, key: string | Buffer): KeyRecord | undefined {
  return store.get(typeof key === 'string' ? b(key) : key).record;
}

function allItems(store: Store): RangeItem[] {
  return store.range(Buffer.from([0]), Buffer.alloc(0), 100_000).items;
}

function keysOf(items: readonly RangeItem[]): string[] {
  return items.map((item) => item.key.toString('hex'));
}

describe('store commits on the write thread', () => {
  test('store: commitAsync leaves this thread free while LMDB writes and syncs the entry, steps other writes aside meanwhile, and resolves once it is durable', async () => {
    const dir = path.join(root, `store-${++dirCount}`);
    // Synced, as the root's store is: the commit's fdatasync and meta-page write run on lmdb-js's write thread.
    const store = Store.open({ path: dir, mapBytes: 256 * 1024 * 1024 });
    openStores.push(store);
    let resolved = false;
    let immediateRanFirst: boolean | undefined;
    const pending = store.commitAsync(++fakeTimeMs, (view) => view.apply(put('thread/k', 'v')));
    setImmediate(() => (immediateRanFirst = !resolved));
    // Under way: the head has not moved; the log readers that feed children do not see the entry; the trimmer and the
    // storage probe step aside (a synchronous write transaction would wait for the write thread's lock); a second
    // commit is refused.
    assert.equal(store.commitUnderWay(), true);
    assert.equal(store.head().seq, 0);
    assert.deepEqual(store.readLog(1, 10), []);
    assert.equal(store.trimLog(0, 0, 10), 0);
    assert.equal(store.probeWritable(), false);
    assert.throws(() => commit(store, [put('thread/other', 'v')]), /already under way/);
    await assert.rejects(store.commitAsync(++fakeTimeMs, () => undefined), /already under way/);
    const committed = await pending;
    resolved = true;
    assert.equal(immediateRanFirst, true, 'the event loop went on (an immediate ran) while the commit was on the write thread');
    assert.equal(store.commitUnderWay(), false);
    assert.equal(committed?.entry.seq, 1);
    assert.equal(store.head().seq, 1);
    assert.equal(record(store, 'thread/k')?.value.toString(), 'v');
    assert.equal(store.readLog(1, 10).length, 1);
    // And the next write goes through again, on this thread as well.
    assert.equal(commit(store, [put('thread/k', 'w')]), 2);
    await closeStore(store);
    const reopened = Store.open({ path: dir, readOnly: true });
    try {
      assert.equal(reopened.head().seq, 2);
      assert.equal(reopened.get(b('thread/k')).record?.value.toString(), 'w');
    } finally {
      await reopened.close();
    }
  });
});

describe('store revisions', () => {
  let store: Store;
  before(() => {
    store = freshStore();
  });

  test('store: a new store is at genesis', () => {
    assert.deepEqual(store.head(), GENESIS_HEAD);
    assert.deepEqual(store.get(b('missing')), { record: undefined, seq: 0 });
    assert.deepEqual(store.logBounds(), { firstSeq: 1, lastSeq: 0, bytes: 0 });
    assert.match(store.datasetId, /^[0-9a-f-]{36}$/);
    assert.match(store.nodeId, /^[0-9a-f-]{36}$/);
  });

  test('store: version increments per put, createSeq stays, modSeq follows the entry', () => {
    const seq1 = commit(store, [put('k', 'v1')]);
    assert.deepEqual(store.get(b('k')), { record: { value: b('v1'), createSeq: seq1, modSeq: seq1, version: 1 }, seq: seq1 });
    const seq2 = commit(store, [put('other', 'x')]);
    // Unrelated writes move the store's seq, not the key's revisions.
    assert.deepEqual(store.get(b('k')), { record: { value: b('v1'), createSeq: seq1, modSeq: seq1, version: 1 }, seq: seq2 });
    const seq3 = commit(store, [put('k', 'v2')]);
    assert.deepEqual(record(store, 'k'), { value: b('v2'), createSeq: seq1, modSeq: seq3, version: 2 });
    const seq4 = commit(store, [put('k', 'v3'), put('k', 'v4')]);
    assert.deepEqual(record(store, 'k'), { value: b('v4'), createSeq: seq1, modSeq: seq4, version: 4 });
  });

  test('store: puts of many sizes in one entry, new keys and rewrites, each keep their own bytes (one encode buffer is reused)', () => {
    // Values larger than the first encode buffer, then smaller ones after it grew, in one transaction and across two.
    const sizes = [10, 5_000, 0, 70_000, 3, 4_093, 200_000, 1];
    const value = (i: number, round: number): Buffer => Buffer.alloc(sizes[i]!, (i * 31 + round) % 251);
    const first = commit(store, sizes.map((_, i) => ({ type: 'put' as const, key: b(`sizes/${i}`), value: value(i, 0) })));
    const second = commit(store, [...sizes.keys()].reverse().map((i) => ({ type: 'put' as const, key: b(`sizes/${i}`), value: value(i, 1) })));
    for (const i of sizes.keys()) assert.deepEqual(record(store, `sizes/${i}`), { value: value(i, 1), createSeq: first, modSeq: second, version: 2 }, `sizes/${i}`);
  });

  test('store: delete removes the key, and recreating it resets version and createSeq', () => {
    commit(store, [put('d', 'one'), put('d', 'two')]);
    assert.equal(record(store, 'd')?.version, 2);
    const deletedAt = commit(store, [del('d')]);
    assert.deepEqual(store.get(b('d')), { record: undefined, seq: deletedAt });
    const recreatedAt = commit(store, [put('d', 'three')]);
    assert.deepEqual(record(store, 'd'), { value: b('three'), createSeq: recreatedAt, modSeq: recreatedAt, version: 1 });
    // Deleting and recreating within one entry also starts a new life.
    const sameEntry = commit(store, [del('d'), put('d', 'four')]);
    assert.deepEqual(record(store, 'd'), { value: b('four'), createSeq: sameEntry, modSeq: sameEntry, version: 1 });
  });

  test('store: deleting a missing key is still an entry, and changes nothing else', () => {
    const before = allItems(store);
    const seq = commit(store, [del('never-existed')]);
    assert.equal(store.head().seq, seq);
    assert.deepEqual(allItems(store), before);
  });

  test('store: empty and binary values are stored exactly', () => {
    const binary = Buffer.from([0x00, 0xff, 0x80, 0x00]);
    commit(store, [put('empty', Buffer.alloc(0)), put(Buffer.from([0xff, 0x00]), binary)]);
    assert.deepEqual(record(store, 'empty')?.value, Buffer.alloc(0));
    assert.deepEqual(record(store, Buffer.from([0xff, 0x00]))?.value, binary);
    const large = Buffer.alloc(1024 * 1024, 0x5a);
    commit(store, [put('large', large)]);
    assert.ok(record(store, 'large')?.value.equals(large));
  });

  test('store: a build that applies nothing writes no entry', () => {
    const head = store.head();
    assert.equal(
      store.commit(++fakeTimeMs, () => {}),
      undefined,
    );
    assert.deepEqual(store.head(), head);
    assert.equal(store.logBounds().lastSeq, head.seq);
  });

  test('store: the write view sees the entry being built', () => {
    const expectedSeq = store.head().seq + 1;
    store.commit(++fakeTimeMs, (view) => {
      assert.equal(view.seq, expectedSeq);
      assert.equal(view.get(b('view')), undefined);
      view.apply(put('view', 'a'));
      assert.deepEqual(view.get(b('view')), { value: b('a'), createSeq: expectedSeq, modSeq: expectedSeq, version: 1 });
      view.apply(del('view'));
      assert.equal(view.get(b('view')), undefined);
    });
  });
});

describe('store deletes by range and prefix', () => {
  let store: Store;
  before(() => {
    store = freshStore();
  });

  test('store: prefixEnd increments the last byte below 0xff and drops the 0xff tail', () => {
    assert.deepEqual(prefixEnd(b('ab')), b('ac'));
    assert.deepEqual(prefixEnd(Buffer.from([0x00])), Buffer.from([0x01]));
    assert.deepEqual(prefixEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]));
    assert.deepEqual(prefixEnd(Buffer.from([0x61, 0xfe, 0xff, 0xff])), Buffer.from([0x61, 0xff]));
    // All 0xff: no key is greater than every key with the prefix, so the range is unbounded (empty end).
    assert.deepEqual(prefixEnd(Buffer.from([0xff])), Buffer.alloc(0));
    assert.deepEqual(prefixEnd(Buffer.from([0xff, 0xff, 0xff])), Buffer.alloc(0));
    assert.deepEqual(prefixEnd(Buffer.alloc(0)), Buffer.alloc(0));
    // It does not modify its argument.
    const prefix = b('ab');
    prefixEnd(prefix);
    assert.deepEqual(prefix, b('ab'));
  });

  test('store: deleteRange removes [start, end) and an empty end means to the last key', () => {
    commit(store, ['a', 'ab', 'abc', 'b', 'ba', 'c'].map((key) => put(key, key)));
    commit(store, [deleteRange(b('ab'), b('b'))]);
    assert.deepEqual(
      allItems(store).map((item) => item.key.toString()),
      ['a', 'b', 'ba', 'c'],
    );
    commit(store, [deleteRange(b('b'), Buffer.alloc(0))]);
    assert.deepEqual(
      allItems(store).map((item) => item.key.toString()),
      ['a'],
    );
    // A range with nothing in it, or with start after end, is a no-op entry.
    commit(store, [deleteRange(b('x'), b('y')), deleteRange(b('z'), b('a'))]);
    assert.deepEqual(
      allItems(store).map((item) => item.key.toString()),
      ['a'],
    );
  });

  test('store: prefix deletes with 0xff bytes remove exactly the keys with the prefix', () => {
    const keys = [
      [0x61],
      [0x61, 0xfe],
      [0x61, 0xff],
      [0x61, 0xff, 0x00],
      [0x61, 0xff, 0xff, 0x01],
      [0x62],
      [0xfe, 0xff],
      [0xff],
      [0xff, 0x00],
      [0xff, 0xff],
      [0xff, 0xff, 0xff],
    ].map((bytes) => Buffer.from(bytes));
    commit(store, [deleteRange(Buffer.from([0]), Buffer.alloc(0)), ...keys.map((key) => put(key, 'v'))]);
    commit(store, [deletePrefix(Buffer.from([0x61, 0xff]))]);
    assert.deepEqual(keysOf(allItems(store)), ['61', '61fe', '62', 'feff', 'ff', 'ff00', 'ffff', 'ffffff']);
    commit(store, [deletePrefix(Buffer.from([0xff, 0xff]))]);
    assert.deepEqual(keysOf(allItems(store)), ['61', '61fe', '62', 'feff', 'ff', 'ff00']);
    commit(store, [deletePrefix(Buffer.from([0xff]))]);
    assert.deepEqual(keysOf(allItems(store)), ['61', '61fe', '62', 'feff']);
  });

  test('store: prefix delete matches a model over random keys near the byte edges', () => {
    const edgeKey = fc.array(fc.constantFrom(0x00, 0x01, 0x61, 0xfe, 0xff), { minLength: 1, maxLength: 4 }).map((bytes) => Buffer.from(bytes));
    assertProperty(
      fc.property(fc.array(edgeKey, { maxLength: 30 }), edgeKey, (keys, prefix) => {
        commit(store, [deleteRange(Buffer.from([0]), Buffer.alloc(0)), ...keys.map((key) => put(key, 'v'))]);
        commit(store, [deletePrefix(prefix)]);
        const expected = [...new Set(keys.filter((key) => !key.subarray(0, prefix.length).equals(prefix)).map((key) => key.toString('hex')))];
        expected.sort((x, y) => Buffer.compare(Buffer.from(x, 'hex'), Buffer.from(y, 'hex')));
        assert.deepEqual(keysOf(allItems(store)), expected);
      }),
      { numRuns: 150 },
    );
  });
});

describe('store range reads', () => {
  let store: Store;
  const keyAt = (i: number): Buffer => b(`r/${String(i).padStart(3, '0')}`);
  before(() => {
    store = freshStore();
    commit(store, [put('q', 'before'), put('s', 'after')]);
    commit(
      store,
      Array.from({ length: 25 }, (_, i) => put(keyAt(i), `v${i}`)),
    );
  });

  test('store: range pages through a prefix with a cursor, in key order, without gaps or repeats', () => {
    const start = b('r/');
    const end = prefixEnd(start);
    const seen: string[] = [];
    let after: Buffer | undefined;
    const mores: boolean[] = [];
    for (;;) {
      const page = store.range(start, end, 10, after);
      assert.equal(page.seq, store.head().seq);
      seen.push(...page.items.map((item) => item.key.toString()));
      mores.push(page.more);
      if (!page.more) break;
      after = page.items[page.items.length - 1]!.key;
    }
    assert.deepEqual(mores, [true, true, false]);
    assert.deepEqual(
      seen,
      Array.from({ length: 25 }, (_, i) => keyAt(i).toString()),
    );
  });

  test('store: range returns records with their revisions and values', () => {
    const page = store.range(keyAt(3), keyAt(5), 10);
    assert.equal(page.more, false);
    assert.deepEqual(
      page.items.map((item) => [item.key.toString(), item.record.value.toString(), item.record.version]),
      [
        ['r/003', 'v3', 1],
        ['r/004', 'v4', 1],
      ],
    );
  });

  test('store: a page that ends exactly at the last key says there is no more', () => {
    const page = store.range(b('r/'), prefixEnd(b('r/')), 25);
    assert.equal(page.items.length, 25);
    assert.equal(page.more, false);
  });

  test('store: a cursor before the start is ignored and a cursor past the end gives an empty page', () => {
    const fromStart = store.range(b('r/'), prefixEnd(b('r/')), 2, b('a'));
    assert.deepEqual(
      fromStart.items.map((item) => item.key.toString()),
      ['r/000', 'r/001'],
    );
    const pastEnd = store.range(b('r/'), prefixEnd(b('r/')), 2, b('r0'));
    assert.deepEqual(pastEnd, { items: [], seq: store.head().seq, more: false });
    // An unbounded end reaches the last key.
    const tail = store.range(b('r/024'), Buffer.alloc(0), 10);
    assert.deepEqual(
      tail.items.map((item) => item.key.toString()),
      ['r/024', 's'],
    );
  });

  test('store: each page reflects one seq while writes happen between pages', () => {
    const start = b('r/');
    const end = prefixEnd(start);
    const first = store.range(start, end, 10);
    const firstSeq = first.seq;
    assert.ok(first.items.every((item) => item.record.modSeq <= firstSeq));
    // Between pages: rewrite every key, add one behind the cursor and one ahead of it, delete one ahead of it.
    const rewriteSeq = commit(store, [
      ...Array.from({ length: 25 }, (_, i) => put(keyAt(i), `w${i}`)),
      put(b('r/000a'), 'behind'),
      put(b('r/0145'), 'ahead'),
      del(keyAt(20)),
    ]);
    const rest: RangeItem[] = [];
    let after = first.items[first.items.length - 1]!.key;
    for (;;) {
      const page = store.range(start, end, 10, after);
      assert.equal(page.seq, rewriteSeq);
      // Every item of the page is as of the page's seq: all rewritten, none older.
      for (const item of page.items) {
        assert.equal(item.record.modSeq, rewriteSeq);
        assert.match(item.record.value.toString(), /^(w\d+|ahead)$/);
      }
      rest.push(...page.items);
      if (!page.more) break;
      after = page.items[page.items.length - 1]!.key;
    }
    const restKeys = rest.map((item) => item.key.toString());
    assert.ok(restKeys.includes('r/0145'));
    assert.ok(!restKeys.includes('r/000a'));
    assert.ok(!restKeys.includes('r/020'));
    // The first page, read before the rewrite, was entirely old values.
    assert.ok(first.items.every((item) => item.record.value.toString().startsWith('v')));
  });

  test('store: pages of a snapshot keep their bytes while later pages are read (no copy is made of what LMDB returns)', () => {
    const store = freshStore();
    const values = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) values.set(`k/${String(i).padStart(3, '0')}`, Buffer.alloc(i % 10 === 3 ? 200 * 1024 : 20 + i, i));
    commit(store, [...values].map(([key, value]) => put(key, value)));
    const reader = store.openSnapshot();
    const pages = [];
    for (let page = reader.nextPage(100); page.length > 0; page = reader.nextPage(100)) pages.push(page);
    reader.close();
    assert.ok(pages.length > 10);
    const read = pages.flat();
    assert.deepStrictEqual(
      read.map((record) => [record.key.toString(), record.value]),
      [...values],
    );
  });

  test('store: chunks written from LMDB\'s read buffer are the frames encodeMessage makes of the same pages, for values of every size', () => {
    const store = freshStore();
    // Sizes around the in-JS crc's limit (64), LMDB's reused read buffer and the overflow pages LMDB maps instead.
    const sizes = [0, 1, 63, 64, 65, 255, 4_000, 70_000, 300_000, 1_200_000];
    const keys: string[] = [];
    for (let i = 0; i < 60; i++) {
      const key = `c/${String(i).padStart(3, '0')}`;
      keys.push(key);
      commit(store, [put(key, Buffer.alloc(sizes[i % sizes.length]!, i + 1))]);
    }
    for (const pageBytes of [1, 1_000, 100_000, 1 << 20]) {
      for (const ranges of [undefined, [{ start: b('c/010'), end: b('c/020') }, { start: b('c/050'), end: Buffer.alloc(0) }]]) {
        const byPages = store.openSnapshot(ranges);
        const byRecords = store.openSnapshot(ranges);
        let chunks = 0;
        for (;;) {
          const page = byPages.nextPage(pageBytes);
          const writer = new SnapshotChunkWriter(pageBytes);
          const count = byRecords.nextRecords(pageBytes, writer);
          assert.equal(count, page.length);
          if (page.length === 0) {
            assert.equal(writer.finish(), undefined);
            break;
          }
          assert.ok(writer.finish()!.equals(encodeMessage({ type: 'snapshotChunk', records: page })), `chunk ${chunks} of ${pageBytes}-byte pages`);
          chunks++;
        }
        byPages.close();
        byRecords.close();
        assert.ok(chunks >= (pageBytes === 1 ? (ranges === undefined ? 60 : 20) : 1));
      }
    }
  });

  test('store: a damaged record fails the chunk being written with DATA_CORRUPTED, naming the key', () => {
    const dir = path.join(root, `store-${++dirCount}`);
    const store = Store.open({ path: dir, noSync: true });
    commit(store, [put('d/1', 'sound'), put('d/2', 'MARKER-damaged-value'), put('d/3', 'sound too')]);
    // Damage the value's bytes in the data file, under LMDB's feet (the in-place reader has to catch it).
    damageDataFile(dir, 'MARKER-damaged-value');
    store.renewSnapshot();
    const reader = store.openSnapshot();
    assert.throws(() => reader.nextRecords(1 << 20, new SnapshotChunkWriter(1 << 20)), (error: unknown) => error instanceof MercuryError && error.code === 'DATA_CORRUPTED' && /d\/2/.test(error.message));
    reader.close();
  });

  test('store: visit hands the record read in place to a sink, with the seq of the read; DATA_CORRUPTED for a damaged one', () => {
    const dir = path.join(root, `store-${++dirCount}`);
    const store = Store.open({ path: dir, noSync: true });
    const seen: { key: string; value: string; createSeq: number; modSeq: number; version: number }[] = [];
    const sink = {
      add(key: Buffer, bytes: Buffer, valueStart: number, valueEnd: number, createSeq: number, modSeq: number, version: number): void {
        seen.push({ key: key.toString(), value: bytes.toString('utf8', valueStart, valueEnd), createSeq, modSeq, version });
      },
    };
    assert.equal(store.visit(b('v/1'), sink), 0);
    commit(store, [put('v/1', 'first')]);
    commit(store, [put('v/1', 'MARKER-visit-value'), put('v/2', 'other')]);
    assert.equal(store.visit(b('v/1'), sink), 2);
    assert.equal(store.visit(b('v/missing'), sink), 2);
    assert.deepEqual(seen, [{ key: 'v/1', value: 'MARKER-visit-value', createSeq: 1, modSeq: 2, version: 2 }]);
    const { record } = store.get(b('v/1'));
    assert.deepEqual({ value: record!.value.toString(), createSeq: record!.createSeq, modSeq: record!.modSeq, version: record!.version }, { value: 'MARKER-visit-value', createSeq: 1, modSeq: 2, version: 2 });
    damageDataFile(dir, 'MARKER-visit-value');
    store.renewSnapshot();
    assert.throws(() => store.visit(b('v/1'), sink), (error: unknown) => error instanceof MercuryError && error.code === 'DATA_CORRUPTED' && /v\/1/.test(error.message));
    assert.equal(seen.length, 1);
  });

  test('store: snapshot pages staged with one reused buffer install every record as sent; a key out of order is refused', () => {
    const store = freshStore({ createDataset: false });
    // A value larger than the staging buffer's first size, so that it grows between records.
    const large = Buffer.alloc(100 * 1024, 7);
    const records = [
      { key: b('a'), value: b('one'), createSeq: 1, modSeq: 4, version: 3 },
      { key: b('b'), value: large, createSeq: 2, modSeq: 2, version: 1 },
      { key: b('c'), value: Buffer.alloc(0), createSeq: 5, modSeq: 6, version: 2 },
      { key: b('d'), value: b('four'), createSeq: 6, modSeq: 6, version: 1 },
    ];
    store.beginSnapshotInstall();
    store.stageSnapshotPage(records.slice(0, 2));
    store.stageSnapshotPage(records.slice(2));
    store.finishSnapshotInstall(6, Buffer.alloc(32, 1), 'dataset-x');
    // Every read checks the record's crc: the records were encoded whole, not over a buffer reused since.
    assert.deepStrictEqual(
      allItems(store).map(({ key, record }) => ({ key, ...record })),
      records,
    );

    store.beginSnapshotInstall();
    store.stageSnapshotPage([records[1]!]);
    assert.throws(() => store.stageSnapshotPage([records[0]!]), /ascending key order/);
  });

  test('store: a snapshot\'s key count (LMDB\'s own, not a walk) matches its records, while an older snapshot stays open', () => {
    const store = freshStore();
    const records = (snapshot: ReturnType<Store['openSnapshot']>): number => {
      let count = 0;
      for (let page = snapshot.nextPage(1 << 12); page.length > 0; page = snapshot.nextPage(1 << 12)) count += page.length;
      return count;
    };
    commit(store, Array.from({ length: 300 }, (_, i) => put(`k/${String(i).padStart(3, '0')}`, 'v')));
    const before = store.openSnapshot();
    commit(store, [deletePrefix(b('k/1')), del('k/000'), put('extra', 'x')]);
    const after = store.openSnapshot();
    // Each counts its own state, whichever was opened first and read last.
    assert.deepStrictEqual([after.keyCount, records(after)], [300 - 100 - 1 + 1, 200]);
    assert.deepStrictEqual([before.keyCount, records(before)], [300, 300]);
    before.close();
    after.close();
  });

  test('store: a put of a key at the largest version keeps that version instead of overflowing its u32', () => {
    // A replica that installed such a record (a snapshot from a forging relay, before the decoder refused it) threw a
    // RangeError on the next put of the key, at every restart.
    const store = freshStore({ createDataset: false });
    const hash = Buffer.alloc(32, 1);
    store.beginSnapshotInstall();
    store.stageSnapshotPage([{ key: b('k'), value: b('v'), createSeq: 1, modSeq: 5, version: KEY_VERSION_MAX }]);
    store.finishSnapshotInstall(5, hash, 'dataset-x');
    store.applyVerified([sealEntry({ seq: 6, timeMs: 1, ops: [put('k', 'v2')] }, hash)]);
    assert.deepEqual(record(store, 'k'), { value: b('v2'), createSeq: 1, modSeq: 6, version: KEY_VERSION_MAX });
  });

  test('store: a first snapshot is installed in place, and no reader sees any of it before it is finished, even after a crash mid-install', async () => {
    const dir = path.join(root, `store-${++dirCount}`);
    const records = ['a', 'b', 'c'].map((key, i) => ({ key: b(key), value: b(`value-${key}`), createSeq: i + 1, modSeq: i + 1, version: 1 }));
    /** Every way a reader looks at the key space, in this handle's current snapshot. */
    const seen = (store: Store) => {
      const snapshot = store.openSnapshot();
      const page = snapshot.nextPage(1 << 20);
      const seenBySnapshot = { keyCount: snapshot.keyCount, records: page.length, dataBytes: snapshot.sizeData(Number.MAX_SAFE_INTEGER) };
      snapshot.close();
      return { get: store.get(b('b')).record, range: allItems(store).length, keys: store.sizes().keys, scanned: [...store.scanKeyRecords()].length, ...seenBySnapshot };
    };
    const nothing = { get: undefined, range: 0, keys: 0, scanned: 0, keyCount: 0, records: 0, dataBytes: 0 };

    let store = Store.open({ path: dir, noSync: true, createDataset: false });
    store.beginSnapshotInstall();
    store.stageSnapshotPage(records.slice(0, 2));
    const reader = Store.open({ path: dir, readOnly: true, lock: false, createDataset: false });
    openStores.push(reader);
    reader.renewSnapshot();
    assert.deepStrictEqual(seen(store), nothing);
    assert.deepStrictEqual(seen(reader), nothing, 'another process (openLocal, verify) sees nothing either');

    // A crash mid-install: the next start is at seq 0 with an empty key space, and a new install starts from nothing.
    await store.close();
    store = Store.open({ path: dir, noSync: true, createDataset: false });
    openStores.push(store);
    assert.equal(store.head().seq, 0);
    assert.deepStrictEqual(seen(store), nothing);
    store.beginSnapshotInstall();
    store.stageSnapshotPage([records[2]!]);
    store.finishSnapshotInstall(3, Buffer.alloc(32, 1), 'dataset-y');
    assert.deepStrictEqual(allItems(store).map(({ key }) => key.toString()), ['c'], 'the records of the interrupted install are gone');
    reader.renewSnapshot();
    assert.equal(reader.get(b('c')).record?.value.toString(), 'value-c');
    assert.equal(reader.get(b('a')).record, undefined);

    // A store that holds data keeps answering with it while the next snapshot arrives, then switches at once.
    store.beginSnapshotInstall();
    store.stageSnapshotPage(records.slice(0, 2));
    assert.deepStrictEqual(allItems(store).map(({ key }) => key.toString()), ['c']);
    assert.equal(store.get(b('a')).record, undefined);
    store.finishSnapshotInstall(9, Buffer.alloc(32, 2), 'dataset-y');
    assert.deepStrictEqual(allItems(store).map(({ key }) => key.toString()), ['a', 'b']);
  });

  // Found in review: a replica stopped mid-way through its first install, then served as a root, made the staged
  // records live with its first commit.
  test('store: records of an install that a stop interrupted are dropped at the next open, so a root started there never serves them', async () => {
    const dir = path.join(root, `store-${++dirCount}`);
    const planted = ['p/1', 'p/2'].map((key) => ({ key: b(key), value: b('unverified'), createSeq: 1, modSeq: 1, version: 1 }));
    const replica = Store.open({ path: dir, noSync: true, createDataset: false });
    replica.beginSnapshotInstall();
    replica.stageSnapshotPage(planted);
    await replica.close();

    const asRoot = Store.open({ path: dir });
    openStores.push(asRoot);
    commit(asRoot, [put('first', 'x')]);
    assert.deepStrictEqual(allItems(asRoot).map(({ key }) => key.toString()), ['first']);
    assert.equal(asRoot.get(b('p/1')).record, undefined);
    assert.equal(asRoot.discardedInstallRecords, 2);
  });

  test('store: staged records of an install into a store that holds data are dropped at the next open; the data stays', async () => {
    const dir = path.join(root, `store-${++dirCount}`);
    const replica = Store.open({ path: dir, noSync: true, createDataset: false });
    replica.beginSnapshotInstall();
    replica.stageSnapshotPage([{ key: b('kept'), value: b('v'), createSeq: 1, modSeq: 1, version: 1 }]);
    replica.finishSnapshotInstall(5, Buffer.alloc(32, 5), 'dataset-z');
    replica.beginSnapshotInstall();
    replica.stageSnapshotPage([{ key: b('staged'), value: b('v'), createSeq: 1, modSeq: 1, version: 1 }]);
    await replica.close();

    const reopened = Store.open({ path: dir, noSync: true, createDataset: false });
    openStores.push(reopened);
    assert.equal(reopened.discardedInstallRecords, 1);
    assert.equal(reopened.head().seq, 5);
    assert.deepStrictEqual(allItems(reopened).map(({ key }) => key.toString()), ['kept']);
  });

  test('store: a range read is one snapshot while another thread commits', async () => {
    // A writer in a worker thread rewrites every key of the range in each entry, with the entry's seq as the value.
    // Every page read meanwhile must hold one value throughout, equal to the page's seq: never a mix of two entries.
    const dir = path.join(root, 'concurrent-range');
    const reader = Store.open({ path: dir, noSync: true });
    openStores.push(reader);
    const keyCount = 300;
    commit(reader, Array.from({ length: keyCount }, (_, i) => put(`c/${String(i).padStart(4, '0')}`, String(reader.head().seq + 1))));
    // The writer runs until the reader has seen enough entries go by, not for a fixed time: under CPU contention the
    // worker may take longer than any fixed window just to start. `stop` is shared memory the reader sets.
    const writerCode = `
      const { workerData } = require('node:worker_threads');
      import(workerData.storeUrl).then(async ({ Store }) => {
        const store = Store.open({ path: workerData.dir, noSync: true, lock: false });
        const stop = new Int32Array(workerData.stop);
        while (Atomics.load(stop, 0) === 0) {
          const value = Buffer.from(String(store.head().seq + 1));
          store.commit(Date.now(), (view) => {
            for (let i = 0; i < workerData.keyCount; i++) view.apply({ type: 'put', key: Buffer.from('c/' + String(i).padStart(4, '0')), value });
          });
        }
        await store.close();
      });`;
    const storeUrl = new URL('../src/store/index.js', import.meta.url).href;
    const stop = new SharedArrayBuffer(4);
    const worker = new Worker(writerCode, { eval: true, workerData: { storeUrl, dir, stop, keyCount } });
    const exited = new Promise((resolve, reject) => {
      worker.once('exit', resolve);
      worker.once('error', reject);
    });
    const seqsSeen = new Set<number>();
    const deadline = Date.now() + CONCURRENT_RANGE_WAIT_MS;
    try {
      while (seqsSeen.size < CONCURRENT_RANGE_SEQS_MIN && Date.now() < deadline) {
        const page = reader.range(b('c/'), prefixEnd(b('c/')), keyCount);
        assert.equal(page.items.length, keyCount);
        for (const item of page.items) {
          assert.equal(item.record.value.toString(), String(page.seq), `page at seq ${page.seq} holds a value of another entry`);
          assert.equal(item.record.modSeq, page.seq);
        }
        seqsSeen.add(page.seq);
        // Let the reader's snapshot be renewed, as it is between requests.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      Atomics.store(new Int32Array(stop), 0, 1);
      await exited;
    }
    // The test only means something if the writer moved on while the reader read.
    assert.ok(seqsSeen.size >= CONCURRENT_RANGE_SEQS_MIN, `only ${seqsSeen.size} distinct seqs observed in ${CONCURRENT_RANGE_WAIT_MS} ms`);
  });
});

describe('store log', () => {
  let store: Store;
  const seqs: number[] = [];
  before(() => {
    store = freshStore();
    for (let i = 0; i < 12; i++) seqs.push(commit(store, [put(`log/${i % 4}`, `value ${i}`), del(`log/${(i + 2) % 4}`)]));
  });

  test('store: readLog returns verified records that chain from genesis', () => {
    const entries = store.readLog(1, 100);
    assert.deepEqual(
      entries.map(({ entry }) => entry.seq),
      seqs,
    );
    let head: ChainHead = GENESIS_HEAD;
    for (const { entry, record } of entries) {
      head = verifyNext(head, record);
      assert.ok(head.hash.equals(entry.hash));
    }
    assert.deepEqual(
      { seq: head.seq, hash: Buffer.from(head.hash) },
      { seq: store.head().seq, hash: Buffer.from(store.head().hash) },
    );
    const bounds = store.logBounds();
    assert.deepEqual(bounds, { firstSeq: 1, lastSeq: 12, bytes: entries.reduce((sum, { record }) => sum + record.length, 0) });
    assert.equal(store.sizes().logEntries, 12);
  });

  test('store: readLog from the middle, with a limit, and past the head', () => {
    assert.deepEqual(
      store.readLog(5, 3).map(({ entry }) => entry.seq),
      [5, 6, 7],
    );
    assert.deepEqual(
      store.readLog(12, 10).map(({ entry }) => entry.seq),
      [12],
    );
    assert.deepEqual(store.readLog(13, 10), []);
    assert.deepEqual(
      store.readLog(1, 1)[0]?.entry.ops,
      [put('log/0', 'value 0'), del('log/2')],
    );
  });

  test('store: hashAt tells the hash of genesis, of retained entries and of the head', () => {
    const entries = store.readLog(1, 100);
    assert.ok(store.hashAt(0)?.equals(GENESIS_HEAD.hash));
    assert.ok(store.hashAt(4)?.equals(entries[3]!.entry.hash));
    assert.ok(store.hashAt(12)?.equals(store.head().hash));
    assert.equal(store.hashAt(13), undefined);
  });
});

describe('store replay on a replica', () => {
  let source: Store;
  before(() => {
    source = freshStore();
    // A workload that exercises every op, revisions and recreation.
    const rounds = 30;
    for (let i = 0; i < rounds; i++) {
      const ops: Op[] = [put(`app/${i % 7}`, `v${i}`), put(Buffer.from([0xff, i % 3]), Buffer.alloc(i % 5, i))];
      if (i % 4 === 3) ops.push(del(`app/${(i + 3) % 7}`));
      if (i % 9 === 8) ops.push(deletePrefix(Buffer.from([0xff])));
      if (i % 11 === 10) ops.push(deleteRange(b('app/2'), b('app/4')));
      commit(source, ops);
    }
  });

  /**
   * What a replica does with records it receives (src/replication/downstream.ts): verify each against the head with
   * `verifyNext`, then apply the verified entries in one write transaction with `applyVerified`.
   */
  function receive(replica: Store, records: readonly Buffer[]): EncodedEntry[] {
    const entries: EncodedEntry[] = [];
    let head: ChainHead = replica.head();
    for (const record of records) {
      const entry = verifyNext(head, record);
      entries.push({ entry, record });
      head = entry;
    }
    replica.applyVerified(entries);
    return entries;
  }

  test('store: a replica applying verified records reaches the same head hash and identical key records', () => {
    const replica = freshStore({ createDataset: false });
    assert.equal(replica.datasetId, '');
    const records = source.readLog(1, 1000).map(({ record }) => record);
    // In a few batches, as a replica receives them.
    for (let i = 0; i < records.length; i += 7) {
      const applied = receive(replica, records.slice(i, i + 7));
      assert.deepEqual(
        applied.map(({ entry }) => entry.seq),
        Array.from({ length: applied.length }, (_, j) => i + j + 1),
      );
      assert.equal(replica.head().seq, i + applied.length);
    }
    assert.equal(replica.head().seq, source.head().seq);
    assert.ok(replica.head().hash.equals(source.head().hash));
    assert.deepEqual(allItems(replica), allItems(source));
    assert.ok(allItems(source).length > 0);
    // The replica's own log verifies and holds the same records.
    assert.deepEqual(
      replica.readLog(1, 1000).map(({ record }) => record),
      records,
    );
    assert.deepEqual(replica.logBounds(), source.logBounds());
    const head = replica.head();
    replica.applyVerified([]);
    assert.deepEqual(replica.head(), head);
  });

  test('store: bad records never reach applyVerified, and entries that do not continue the chain are a bug it refuses', () => {
    const replica = freshStore({ createDataset: false });
    const records = source.readLog(1, 5).map(({ record }) => record);
    const corrupted = Buffer.from(records[3]!);
    corrupted[corrupted.length - 1] = corrupted[corrupted.length - 1]! ^ 1;
    assert.throws(() => receive(replica, [records[0]!, records[1]!, records[2]!, corrupted]), { name: 'ChainError' });
    assert.deepEqual(replica.head(), GENESIS_HEAD);
    assert.deepEqual(allItems(replica), []);
    assert.deepEqual(replica.readLog(1, 10), []);
    assert.deepEqual(replica.logBounds(), { firstSeq: 1, lastSeq: 0, bytes: 0 });
    // Out of order and truncated records are refused the same way.
    assert.throws(() => receive(replica, [records[1]!]), { name: 'ChainError' });
    assert.throws(() => receive(replica, [records[0]!.subarray(0, 40)]), { name: 'EntryDecodeError' });
    assert.deepEqual(replica.head(), GENESIS_HEAD);
    // Then the good records apply.
    receive(replica, records.slice(0, 4));
    assert.equal(replica.head().seq, 4);
    // A caller that skipped verification and hands over a replayed or a gapped entry trips an assertion, and the
    // store is unchanged.
    const [third, sixth] = source.readLog(3, 1).concat(source.readLog(6, 1));
    assert.throws(() => replica.applyVerified([third!]), { name: 'AssertionError' });
    assert.throws(() => replica.applyVerified([sixth!]), { name: 'AssertionError' });
    assert.equal(replica.head().seq, 4);
    assert.equal(replica.logBounds().bytes, records.slice(0, 4).reduce((sum, record) => sum + record.length, 0));
  });

  test('store: a chained record that LMDB refuses to apply leaves the store exactly as it was', () => {
    // A record can be correctly chained and still not applicable (an empty key, which the root never writes but a
    // faulty upstream could). The write transaction aborts; the store's in-memory log size must not drift from disk.
    const replica = freshStore({ createDataset: false });
    const good = sealEntry({ seq: 1, timeMs: 1, ops: [put('a', 'v')] }, GENESIS_HASH);
    const unapplicable = sealEntry({ seq: 2, timeMs: 2, ops: [put(Buffer.alloc(0), 'v')] }, good.entry.hash);
    assert.throws(() => replica.applyVerified([good, unapplicable]));
    assert.deepEqual(replica.head(), GENESIS_HEAD);
    assert.deepEqual(replica.readLog(1, 10), []);
    assert.deepEqual(replica.logBounds(), { firstSeq: 1, lastSeq: 0, bytes: 0 });
  });
});

describe('store log retention', () => {
  function storeWithEntries(count: number): Store {
    const store = freshStore();
    for (let i = 0; i < count; i++) commit(store, [put(`t/${i}`, Buffer.alloc(100, i))]);
    return store;
  }

  function trimFully(store: Store, retainEntries: number, retainBytes: number, batchEntries: number): number[] {
    const removedPerCall: number[] = [];
    for (;;) {
      const removed = store.trimLog(retainEntries, retainBytes, batchEntries);
      if (removed === 0) return removedPerCall;
      assert.ok(removed <= batchEntries, `one call removed ${removed} > ${batchEntries}`);
      removedPerCall.push(removed);
    }
  }

  /** Checks the retained log: bounds, bytes and a chain that verifies from the first retained entry to the head. */
  function assertRetained(store: Store, firstSeq: number): void {
    const head = store.head();
    const entries = store.readLog(firstSeq, 100_000);
    assert.equal(entries[0]?.entry.seq, firstSeq);
    assert.equal(entries[entries.length - 1]?.entry.seq, head.seq);
    assert.ok(entries[entries.length - 1]!.entry.hash.equals(head.hash));
    const bytes = entries.reduce((sum, { record }) => sum + record.length, 0);
    assert.deepEqual(store.logBounds(), { firstSeq, lastSeq: head.seq, bytes });
    // The entry before the first retained one is still known by hash, so the chain stays checkable.
    assert.ok(store.hashAt(firstSeq - 1)?.equals(entries[0].entry.prevHash));
  }

  test('store: trimLog keeps the newest entries by count, in batches', () => {
    const store = storeWithEntries(20);
    assert.deepEqual(trimFully(store, 5, Number.MAX_SAFE_INTEGER, 4), [4, 4, 4, 3]);
    assertRetained(store, 16);
    // Keys are untouched by trimming.
    assert.equal(allItems(store).length, 20);
  });

  test('store: trimLog keeps the newest entries by bytes', () => {
    const store = storeWithEntries(20);
    const recordBytes = store.readLog(1, 1)[0]!.record.length;
    // Room for 6.5 records: 6 are kept.
    trimFully(store, Number.MAX_SAFE_INTEGER, Math.floor(6.5 * recordBytes), 3);
    assertRetained(store, 15);
    assert.ok(store.logBounds().bytes <= 6.5 * recordBytes);
  });

  test('store: trimLog always keeps the head entry', () => {
    const store = storeWithEntries(10);
    trimFully(store, 0, 0, 100);
    assertRetained(store, 10);
    assert.equal(store.trimLog(0, 0, 100), 0);
    // New entries chain on and verify from the retained one.
    commit(store, [put('after-trim', 'x')]);
    assertRetained(store, 10);
  });

  test('store: trimLog does nothing within the limits', () => {
    const store = storeWithEntries(5);
    assert.equal(store.trimLog(5, Number.MAX_SAFE_INTEGER, 100), 0);
    assertRetained(store, 1);
  });

  test('store: trimLog reads the records it removes, not the whole batch it may remove', async () => {
    // Found by audit (2026-12-07): the trimmer copied every record of its batch (up to 1,000) out of LMDB before it
    // chose which to remove, however few it then removed. A root retaining 300 MB of 1 MB entries stalled its event
    // loop up to 1.5 s at each trim under steady writes (a GET /healthz waited that long); here, trimming one entry
    // off 300 of 1 MiB took 250 ms or more without fsync. Reading only the records removed takes a few ms.
    const dir = path.join(root, 'trim-large-entries');
    const store = Store.open({ path: dir, noSync: true, mapBytes: 1024 * 1024 * 1024 });
    openStores.push(store);
    const entries = 300;
    for (let i = 0; i < entries; i++) commit(store, [put(`large/${i % 4}`, Buffer.alloc(1024 * 1024, i))]);
    let fastestMs = Number.POSITIVE_INFINITY;
    for (let round = 0; round < 3; round++) {
      const { bytes } = store.logBounds();
      const startMs = performance.now();
      assert.equal(store.trimLog(Number.MAX_SAFE_INTEGER, bytes - 1, 1_000), 1);
      fastestMs = Math.min(fastestMs, performance.now() - startMs);
    }
    assert.ok(fastestMs < 50, `trimming one entry off ${entries} of 1 MiB took at least ${fastestMs.toFixed(0)} ms`);
    // The retained log still starts from the stored log base (reading it all would cost more than the rest).
    assert.deepEqual(store.logBounds(), { firstSeq: 4, lastSeq: entries, bytes: (entries - 3) * store.readLog(4, 1)[0]!.record.length });
    await closeStore(store);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('store: readLog from a trimmed seq returns nothing', () => {
    // readLog promises "none if fromSeq is not retained": a caller that raced with the trimmer must not receive a
    // different range than it asked for, nor a chain error for a log that is intact.
    const store = storeWithEntries(10);
    trimFully(store, 4, Number.MAX_SAFE_INTEGER, 100);
    assert.equal(store.logBounds().firstSeq, 7);
    assert.deepEqual(store.readLog(3, 10), []);
    assert.deepEqual(store.readLog(1, 10), []);
  });
});

describe('store restart', () => {
  test('store: close and reopen keeps head, dataset id, node id, data and log', async () => {
    const dir = path.join(root, 'restart');
    const first = Store.open({ path: dir });
    openStores.push(first);
    commit(first, [put('keep', 'me'), put('gone', 'soon')]);
    commit(first, [del('gone'), put('keep', 'me too')]);
    await first.flushed();
    const head = { seq: first.head().seq, hash: Buffer.from(first.head().hash) };
    const { datasetId, nodeId } = first;
    const items = allItems(first);
    const bounds = first.logBounds();
    await closeStore(first);

    const second = Store.open({ path: dir });
    openStores.push(second);
    assert.deepEqual({ seq: second.head().seq, hash: Buffer.from(second.head().hash) }, head);
    assert.equal(second.datasetId, datasetId);
    assert.equal(second.nodeId, nodeId);
    assert.deepEqual(allItems(second), items);
    assert.deepEqual(second.logBounds(), bounds);
    assert.deepEqual(record(second, 'keep'), { value: b('me too'), createSeq: 1, modSeq: 2, version: 2 });
    // The chain continues across the restart.
    commit(second, [put('next', 'entry')]);
    assert.deepEqual(
      second.readLog(1, 10).map(({ entry }) => entry.seq),
      [1, 2, 3],
    );
    await closeStore(second);
  });

  test('store: a replica keeps its empty dataset id across a restart', async () => {
    const dir = path.join(root, 'restart-replica');
    const first = Store.open({ path: dir, createDataset: false });
    openStores.push(first);
    const nodeId = first.nodeId;
    await closeStore(first);
    const second = Store.open({ path: dir, createDataset: false });
    openStores.push(second);
    assert.equal(second.datasetId, '');
    assert.equal(second.nodeId, nodeId);
    await closeStore(second);
  });

  test('store: a read-only store catches up with the writer on refresh', async () => {
    const dir = path.join(root, 'read-only');
    const writer = Store.open({ path: dir, noSync: true });
    openStores.push(writer);
    commit(writer, [put('ro', '1')]);
    const reader = Store.open({ path: dir, readOnly: true });
    openStores.push(reader);
    assert.equal(reader.head().seq, 1);
    commit(writer, [put('ro', '2')]);
    reader.refresh();
    assert.deepEqual(reader.get(b('ro')), { record: { value: b('2'), createSeq: 1, modSeq: 2, version: 2 }, seq: 2 });
    assert.equal(reader.head().seq, 2);
    assert.ok(reader.head().hash.equals(writer.head().hash));
    assert.deepEqual(reader.logBounds(), writer.logBounds());
    assert.deepEqual(
      reader.readLog(1, 10).map(({ entry }) => entry.seq),
      [1, 2],
    );
    await closeStore(reader);
    await closeStore(writer);
  });

  test('store: a log record corrupted on disk is caught when read', async () => {
    const dir = path.join(root, 'corrupt');
    const store = Store.open({ path: dir });
    openStores.push(store);
    for (let i = 0; i < 3; i++) commit(store, [put(`c/${i}`, 'v')]);
    await closeStore(store);

    // Flip one bit of entry 2's record directly in LMDB, as a disk fault would.
    const env = open({ path: dir, maxDbs: 8 });
    const log = env.openDB<Buffer, Buffer>({ name: 'log', encoding: 'binary', keyEncoding: 'binary' });
    const seqKey = Buffer.alloc(8);
    seqKey.writeBigUInt64BE(2n);
    const stored = Buffer.from(log.get(seqKey)!);
    stored[30] = stored[30]! ^ 0x10;
    await log.put(seqKey, stored);
    await env.close();

    const reopened = Store.open({ path: dir });
    openStores.push(reopened);
    // The flipped bit may hit a length field (EntryDecodeError) or content (ChainError); either way the reader gets
    // DATA_CORRUPTED naming the entry, with the chain error as its cause, and the store records the damage.
    const caught = (error: unknown): boolean =>
      error instanceof MercuryError && error.code === 'DATA_CORRUPTED' && (error.cause instanceof ChainError || error.cause instanceof EntryDecodeError);
    assert.throws(() => reopened.readLog(1, 10), caught);
    assert.throws(() => reopened.readLog(2, 10), caught);
    // Reading from entry 3 verifies its predecessor first.
    assert.throws(() => reopened.readLog(3, 10), caught);
    assert.equal(reopened.readLog(1, 1).length, 1);
    assert.deepEqual(reopened.damage().reports.map((report) => report.what), ['log entry 2']);
    assert.equal(reopened.damage().count, 3);
    await closeStore(reopened);
  });

  test('store: a head record of the wrong length refuses the open (DATA_DIR_INVALID) instead of starting on a bad hash', async () => {
    const dir = path.join(root, 'damaged-head');
    const store = Store.open({ path: dir });
    openStores.push(store);
    commit(store, [put('h', 'v')]);
    await closeStore(store);
    // A byte more than a seq and a hash: before, it decoded into a 33-byte hash, which the next entry was chained to.
    const env = open({ path: dir, maxDbs: 8 });
    const meta = env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
    await meta.put('head', Buffer.concat([meta.get('head')!, Buffer.from([0])]));
    await env.close();
    assert.throws(
      () => Store.open({ path: dir }),
      (error: unknown) => error instanceof MercuryError && error.code === 'DATA_DIR_INVALID' && /data\.mdb is damaged \(its head record is 41 bytes where a u64 seq and a 32-byte hash take 40\)/.test(error.message),
    );
  });
});

describe('store replication stops', () => {
  test('a recorded divergence is read back at the store head; one naming another head is damaged and stays stopped at the head', async () => {
    const store = freshStore();
    commit(store, [put('a', '1')]);
    const head = store.head();
    store.recordDivergence(head, 'upstream refused the chain');
    assert.deepEqual(store.recordedDivergence(), { head, reason: 'upstream refused the chain' });
    // A record that decodes but names a seq the store is not at (a damaged file, or a bug) keeps the replica stopped,
    // and is reported against the store's head, which children are judged against.
    store.recordDivergence({ seq: head.seq + 5, hash: Buffer.alloc(32, 7) }, 'elsewhere');
    const recorded = store.recordedDivergence();
    assert.equal(recorded?.head.seq, head.seq);
    assert.ok(recorded?.head.hash.equals(head.hash));
    assert.match(recorded?.reason ?? '', /names seq 6, not its head 1 \(damaged\); it stays stopped until resynced/);
    await closeStore(store);
  });
});
