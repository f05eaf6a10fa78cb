/**
 * The space guard's estimates (src/store/space-guard.ts) against what the data file really grows by, for the shapes
 * of transaction that an audit (2026-12-07) found it undercounted: puts into a tree a snapshot install filled (full
 * leaves and branch pages, each put splits them), the copy of a staged snapshot into `kv`, a root's range delete
 * (counted after it had emptied `kv`), and a large chunk of a snapshot staged (its leaves half full). The guard promises that a transaction grows the file by no more than its
 * estimate and SPACE_HEADROOM_BYTES; a write that grows it more may reach a full disk, where lmdb-js corrupts the heap.
 * Growth is the file's size (LMDB writes pages past its end); these stores reuse few free pages, so it is near the
 * pages the transaction took.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Op } from '../src/log/index.js';
import { SPACE_HEADROOM_BYTES } from '../src/store/space-guard.js';
import { Store, type SnapshotRecord } from '../src/store/index.js';
import { makeTempDir, removeDir } from './support/process.js';

const dirs: string[] = [];
const stores: Store[] = [];
after(async () => {
  for (const store of stores) await store.close();
  for (const dir of dirs) removeDir(dir);
});

/** A new store, and a spy on what its write transactions ask of the guard (the store's private reserveSpace). */
function spiedStore(): { store: Store; estimate: () => number; reset: () => void } {
  const dir = makeTempDir('space-guard-growth');
  dirs.push(dir);
  const store = Store.open({ path: dir, noSync: true });
  stores.push(store);
  const inner = store as unknown as { reserveSpace(growth: number): void };
  const reserve = inner.reserveSpace.bind(store);
  let asked = 0;
  inner.reserveSpace = (growth: number) => {
    asked += growth;
    reserve(growth);
  };
  return { store, estimate: () => asked, reset: () => (asked = 0) };
}

/** What `write` grows the store's data file by, and what it asked of the guard. */
function measure(spied: ReturnType<typeof spiedStore>, write: () => void): { growth: number; estimate: number } {
  const file = join(spied.store.path, 'data.mdb');
  const size = statSync(file).size;
  spied.reset();
  write();
  return { growth: statSync(file).size - size, estimate: spied.estimate() };
}

/** Distinct keys in a reproducible order: `prefix` and a hash of `i`. */
const keyOf = (prefix: string, i: number): Buffer => Buffer.from(prefix + createHash('sha256').update(String(i)).digest('hex').slice(0, 16));

function recordsOf(count: number, key: (i: number) => Buffer, value: (i: number) => Buffer): SnapshotRecord[] {
  const records = Array.from({ length: count }, (_, i) => ({ key: key(i), value: value(i), createSeq: 1, modSeq: 1, version: 1 }));
  return records.sort((a, b) => Buffer.compare(a.key, b.key));
}

/** Installs `records` as a snapshot at `seq`, in pages of about 1 MiB. */
function install(store: Store, records: readonly SnapshotRecord[], seq: number): void {
  store.beginSnapshotInstall();
  let page: SnapshotRecord[] = [];
  let bytes = 0;
  for (const record of records) {
    page.push(record);
    bytes += record.key.length + record.value.length;
    if (bytes < 1024 * 1024) continue;
    store.stageSnapshotPage(page);
    page = [];
    bytes = 0;
  }
  if (page.length > 0) store.stageSnapshotPage(page);
  store.finishSnapshotInstall(seq, Buffer.alloc(32, seq), 'dataset-growth');
}

function commit(store: Store, ops: readonly Op[]): void {
  assert.ok(store.commit(Date.now(), (view) => ops.forEach((op) => view.apply(op))) !== undefined);
}

/** Puts a new key just after every `stride`-th leaf's middle key of a tree that a first install filled (records in key order). */
function onePutPerLeaves(store: Store, sorted: readonly SnapshotRecord[], stride: number, value: Buffer): Op[] {
  const stats = (store as unknown as { kv: { getStats(): { entryCount: number; treeLeafPageCount: number } } }).kv.getStats();
  const perLeaf = Math.floor(stats.entryCount / stats.treeLeafPageCount);
  const ops: Op[] = [];
  for (let i = Math.floor(perLeaf / 2); i < sorted.length; i += perLeaf * stride) ops.push({ type: 'put', key: Buffer.concat([sorted[i]!.key, Buffer.from([0])]), value });
  return ops;
}

const within = ({ growth, estimate }: { growth: number; estimate: number }): boolean => growth <= estimate + SPACE_HEADROOM_BYTES;

test('space guard growth: a put into each leaf of a tree a snapshot install filled splits it, and the estimate covers the split pages', () => {
  const spied = spiedStore();
  const records = recordsOf(100_000, (i) => keyOf('key-', i), () => Buffer.from('small value'));
  install(spied.store, records, 1);
  const ops = onePutPerLeaves(spied.store, records, 1, Buffer.from('small value'));
  const measured = measure(spied, () => commit(spied.store, ops));
  // As found: 1,852 puts grew the file 15.2 MB (two pages each: the leaf's copy and the page its split adds), against an
  // estimate of 8.0 MB (one page each) and 4 MiB of headroom.
  assert.ok(measured.growth > ops.length * 4096 * 1.9, `each put split its leaf (${JSON.stringify(measured)}, ${ops.length} puts)`);
  assert.ok(within(measured), `the data file grew ${measured.growth} bytes, more than the estimate ${measured.estimate} and the headroom`);
});

test('space guard growth: puts under long keys copy and split a deep tree of branch pages, and the estimate covers them', () => {
  const spied = spiedStore();
  // Keys of 1,000 bytes: three to a branch page, a tree of depth 8 for 30,000 keys.
  const records = recordsOf(30_000, (i) => keyOf('k'.repeat(984), i), () => Buffer.from('v'));
  install(spied.store, records, 1);
  const ops = onePutPerLeaves(spied.store, records, 3, Buffer.from('v'));
  const measured = measure(spied, () => commit(spied.store, ops));
  // As found, with the split pages counted: 3,334 puts grew the file 48.9 MB against an estimate of 37.6 MB.
  assert.ok(within(measured), `the data file grew ${measured.growth} bytes, more than the estimate ${measured.estimate} and the headroom`);
});

test('space guard growth: a snapshot staged on a store that holds data is copied into kv with the pages staging took, and the estimate covers them', () => {
  const spied = spiedStore();
  commit(
    spied.store,
    Array.from({ length: 10_000 }, (_, i) => ({ type: 'put', key: keyOf('old-', i), value: Buffer.from('old value') })),
  );
  // Records of 1,337-byte values: two to a leaf, 1.5 times their bytes in pages.
  const records = recordsOf(20_000, (i) => keyOf('key-', i), (i) => Buffer.alloc(1337, i));
  spied.store.beginSnapshotInstall();
  for (let i = 0; i < records.length; i += 700) spied.store.stageSnapshotPage(records.slice(i, i + 700));
  const measured = measure(spied, () => spied.store.finishSnapshotInstall(7, Buffer.alloc(32, 7), 'dataset-growth'));
  // As found: the copy grew the file 41.4 MB against an estimate of 27.9 MB (the records' bytes).
  assert.ok(measured.growth > 20_000 * 1337 * 1.4, `the copy took its pages (${JSON.stringify(measured)})`);
  assert.ok(within(measured), `the data file grew ${measured.growth} bytes, more than the estimate ${measured.estimate} and the headroom`);
});

test("space guard growth: a root's range delete is counted for the pages it frees, as they were before it", () => {
  const spied = spiedStore();
  const values = 500;
  for (let i = 0; i < values; i += 100)
    commit(
      spied.store,
      Array.from({ length: 100 }, (_, j) => ({ type: 'put', key: keyOf('big-', i + j), value: Buffer.alloc(100_000, j) })),
    );
  const measured = measure(spied, () => commit(spied.store, [{ type: 'deleteRange', start: Buffer.from('big-'), end: Buffer.from('big.') }]));
  // Each value takes 25 overflow pages, and LMDB's free-page list a page number (8 bytes) for each page it frees. As
  // found, the estimate was 12 KB: `kv`'s pages were read after the delete had emptied it.
  const freedList = values * 25 * 8;
  assert.ok(measured.estimate >= freedList, `the estimate ${measured.estimate} counts the list of the ${values * 25} pages freed (${freedList} bytes)`);
  assert.ok(within(measured), `the data file grew ${measured.growth} bytes, more than the estimate ${measured.estimate} and the headroom`);
});

test('space guard growth: a large chunk of a snapshot, staged in key order, is counted for half-full leaves and the branch pages above them', () => {
  const spied = spiedStore();
  // One chunk as large as a frame allows takes more pages than its bytes: keys of 1,000 bytes, three to a leaf.
  const records = recordsOf(20_000, (i) => keyOf('k'.repeat(984), i), () => Buffer.from('v'));
  spied.store.beginSnapshotInstall();
  const measured = measure(spied, () => spied.store.stageSnapshotPage(records));
  // As found: it grew the file 36.4 MB against an estimate of 20.7 MB (the records' bytes).
  assert.ok(measured.growth > 20_000 * 1000 * 1.7, `the chunk took its pages (${JSON.stringify(measured)})`);
  assert.ok(within(measured), `the data file grew ${measured.growth} bytes, more than the estimate ${measured.estimate} and the headroom`);
});
