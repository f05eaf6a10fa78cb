/**
 * The space guard (src/store/space-guard.ts) on its own: when it reads the disk's free space again, what it refuses,
 * and the growth it counts for a record. The store under it on a real full disk: test/storage-full.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MercuryError } from '../src/errors/index.js';
import { appendedFootprint, appendedGrowth, branchGrowth, freedPagesGrowth, placedGrowth, recordFootprint, SPACE_HEADROOM_BYTES, SpaceGuard } from '../src/store/space-guard.js';

const MiB = 1024 * 1024;

/** A guard over a disk whose free bytes and clock the test sets, counting its readings. */
function guardOver(initialFree: number | undefined): { guard: SpaceGuard; disk: { free: number | undefined; nowMs: number; readings: number } } {
  const disk = { free: initialFree, nowMs: 0, readings: 0 };
  const guard = new SpaceGuard(
    () => {
      disk.readings++;
      return disk.free;
    },
    () => disk.nowMs,
  );
  return { guard, disk };
}

const refusedFull = (error: unknown): boolean => error instanceof MercuryError && error.code === 'STORAGE_FULL' && error.status === 507 && /free space on its disk/.test(error.message);

test('space guard: a write that would leave less than the headroom free is refused STORAGE_FULL, naming what is free and what it needs', () => {
  const { guard } = guardOver(SPACE_HEADROOM_BYTES + 1000);
  guard.reserve(1000);
  const { guard: fuller } = guardOver(SPACE_HEADROOM_BYTES + 999);
  assert.throws(() => fuller.reserve(1000), (error: MercuryError) => refusedFull(error) && error.message.includes(`has ${SPACE_HEADROOM_BYTES + 999} bytes free`) && error.message.includes(`up to ${SPACE_HEADROOM_BYTES + 1000}`));
});

test('space guard: one reading serves the writes of the next 100 ms while it leaves plenty, less what they may take', () => {
  const { guard, disk } = guardOver(1024 * MiB);
  guard.reserve(MiB);
  guard.reserve(MiB);
  disk.nowMs = 99;
  guard.reserve(MiB);
  assert.equal(disk.readings, 1);
  disk.nowMs = 100;
  guard.reserve(MiB);
  assert.equal(disk.readings, 2, 'read again once 100 ms old');
  // What the writes since may have taken is counted: of the 1 GiB read, 1 MiB and then 955 MiB leave 68 MiB, which
  // after the next write's need (1 MiB and the headroom) is below the 64 MiB a reading must leave to be used again.
  guard.reserve(955 * MiB);
  assert.equal(disk.readings, 2);
  guard.reserve(MiB);
  assert.equal(disk.readings, 3, 'read again when what the reading leaves comes near what a write needs');
});

test('space guard: near a full disk every write reads again, and space freed lets the next write through at once', () => {
  const { guard, disk } = guardOver(SPACE_HEADROOM_BYTES + 10 * MiB);
  guard.reserve(MiB);
  guard.reserve(MiB);
  assert.equal(disk.readings, 2);
  disk.free = 0;
  assert.throws(() => guard.reserve(0), refusedFull);
  assert.throws(() => guard.reserve(0), refusedFull);
  assert.equal(disk.readings, 4);
  disk.free = 1024 * MiB;
  guard.reserve(MiB);
  assert.equal(disk.readings, 5);
});

test('space guard: a disk whose free space cannot be told is not refused, and is asked again at the next write', () => {
  const { guard, disk } = guardOver(undefined);
  guard.reserve(1024 * MiB);
  guard.reserve(1024 * MiB);
  assert.equal(disk.readings, 2);
  disk.free = 0;
  assert.throws(() => guard.reserve(0), refusedFull);
});

test('space guard: a record takes its bytes in a shared page, or whole overflow pages; placed records count twice and two pages, appended ones once', () => {
  const page = 4096;
  assert.equal(recordFootprint(10, 100, page), 8 + 10 + 100);
  // Past half a page, the value goes to overflow pages of its own: 2.1 KiB takes a page.
  assert.equal(recordFootprint(10, 2150, page), page + 8 + 10);
  assert.equal(recordFootprint(10, 600_000, page), Math.ceil((16 + 600_000) / page) * page + 8 + 10);
  assert.equal(placedGrowth(1000, 2, page), 2000 + 4 * page);
  // Branch pages: two for each level above the leaves a change reaches, never more than the tree's.
  assert.equal(branchGrowth(10, 3, 1000, page), 2 * 20 * page);
  assert.equal(branchGrowth(10, 3, 5, page), 2 * 5 * page);
  assert.equal(branchGrowth(10, 1, 0, page), 0);
  assert.equal(appendedGrowth(1000, page), 1000 + page);
  // Appended in order: twice the record's place in its leaf (with its index) and twice its key's node for the branch
  // pages; a record on overflow pages keeps its pages once and its key and a page number in the leaf.
  assert.equal(appendedFootprint(10, 100, page), 2 * (8 + 10 + 100 + 2) + 2 * (8 + 10 + 2));
  assert.equal(appendedFootprint(10, 600_000, page), Math.ceil((16 + 600_000) / page) * page + 2 * (8 + 10 + 2 + 8) + 2 * (8 + 10 + 2));
  // LMDB's list of free pages: a page number for each page freed.
  assert.equal(freedPagesGrowth(1000, page), 8000 + page);
});
