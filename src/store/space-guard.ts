/**
 * Keeps LMDB off a full disk: a write transaction that may grow the data file more than its file system has free is
 * refused with STORAGE_FULL before LMDB begins it, instead of LMDB meeting ENOSPC while it writes the pages.
 *
 * Why not let LMDB fail and report it, as it did: lmdb-js 3.5.6 (its mdb.c, mdb_page_flush) formats every failed page
 * write into `malloc(100)` with sprintf ("Attempting to write page at position %u, size %u, blocks %u, buffer sizes %i
 * %i %i", the last two read from an array it may not have filled). Positions of ten digits (a data file past 1 GB), a
 * write of many pages, or the garbage lengths make the text longer than the buffer: the heap is corrupted, and the
 * process dies at a later allocation (`malloc(): invalid next size`, `free(): invalid size`, SIGSEGV). Measured here on
 * a 16 MiB tmpfs: a 600 KB value put twice on the full disk killed the process 4 times in 4; a trim after a large
 * commit failed, 2 in 6 (audit, 2026-12-07). A node must refuse a write for a full disk and keep serving, so the write
 * must never reach LMDB. See docs/decisions.md, record 69.
 *
 * What it cannot prevent: another process filling the disk between the reading and LMDB's write (a reading is reused
 * for at most REREAD_MS, and only while what it leaves stays above REREAD_BELOW_BYTES), and a failing disk's EIO (the
 * same sprintf). What it costs: a write refused while the disk has less free than the transaction may need, though
 * LMDB could have reused pages freed inside its file. Both are written down in the README ("Disk full and I/O errors").
 */
import { MercuryError } from '../errors/index.js';

/**
 * Added to every transaction's own growth: the pages no estimate below counts (the branch pages of the log and of the
 * small databases, the meta page, the free-page list's entries for the old copies of overwritten records: 4 MiB is the
 * list of 2 GiB freed at once).
 */
export const SPACE_HEADROOM_BYTES = 4 * 1024 * 1024;

/** A reading of free space is used again for at most this long. */
const REREAD_MS = 100;
/** ... and only while it leaves at least this much beyond what the next transaction needs. */
const REREAD_BELOW_BYTES = 64 * 1024 * 1024;

/** LMDB's header of a record (a node) in a page, and of a run of overflow pages. */
const NODE_HEADER_BYTES = 8;
const PAGE_HEADER_BYTES = 16;

/**
 * What one record takes in the data file: its bytes in a shared page, or whole overflow pages when it is too large to
 * share one (LMDB's limit is about half a page): a value of 2.1 KiB takes 4 KiB.
 */
export function recordFootprint(keyBytes: number, valueBytes: number, pageBytes: number): number {
  const size = NODE_HEADER_BYTES + keyBytes + valueBytes;
  return size <= pageBytes / 2 ? size : Math.ceil((PAGE_HEADER_BYTES + valueBytes) / pageBytes) * pageBytes + NODE_HEADER_BYTES + keyBytes;
}

/**
 * How far writing records among others may grow the data file: each record twice over (its key again in the branch
 * page above a split) and two pages: its leaf, copied on write, and the new page a split of that leaf adds, whatever
 * the record's size. A tree filled in order (a snapshot install, MDB_APPEND) has full leaves, so each record placed
 * in another leaf splits it: counting one page, 1,852 small puts into such a tree grew the file 15.2 MB against an
 * estimate of 8.0 MB (audit, 2026-12-07).
 */
export function placedGrowth(footprint: number, records: number, pageBytes: number): number {
  return 2 * footprint + 2 * records * pageBytes;
}

/**
 * How far changing `changes` records of a tree may grow the data file above its leaves: every branch page on the way
 * to each, copied on write and split once (a tree filled in order has full branch pages too), each at most once a
 * transaction, so never more than the tree's `branchPages`. Long keys make deep trees of few keys a branch page: with
 * keys of 1,000 bytes (depth 8), one put every nine leaves grew the file 1.45 times what the leaves alone were
 * counted for (audit, 2026-12-07). A branch page split again in the same transaction is paid for by the separators
 * that fill it, counted with the records (placedGrowth).
 */
export function branchGrowth(changes: number, depth: number, branchPages: number, pageBytes: number): number {
  return 2 * Math.min(changes * Math.max(0, depth - 1), branchPages) * pageBytes;
}

/** LMDB's index of a record in its page, and what a record on overflow pages keeps in its leaf besides its key. */
const NODE_INDEX_BYTES = 2;
const OVERFLOW_PAGE_NUMBER_BYTES = 8;

/**
 * What one record appended in order to a tree (a snapshot staged) may take: its overflow pages, twice what it takes in
 * its leaf, and twice its key and node for the branch pages above. Its bytes alone were not a bound: LMDB closes a
 * leaf when the next record does not fit, so leaves are only sure to be half full (two records always fit), and each
 * leaf's first key goes up to a branch page, which fills the same way (its levels above take half as much again
 * each). Records of 1,000-byte keys took 1.79 times their bytes, records of 1,337-byte values 1.5 times (audit,
 * 2026-12-07): harmless for a chunk of the 1 MiB an upstream sends, not for one as large as a frame (97 MiB).
 */
export function appendedFootprint(keyBytes: number, valueBytes: number, pageBytes: number): number {
  const footprint = recordFootprint(keyBytes, valueBytes, pageBytes);
  const node = NODE_HEADER_BYTES + keyBytes + NODE_INDEX_BYTES;
  const overflow = footprint > pageBytes / 2;
  const inLeaf = overflow ? node + OVERFLOW_PAGE_NUMBER_BYTES : footprint + NODE_INDEX_BYTES;
  return (overflow ? footprint - NODE_HEADER_BYTES - keyBytes : 0) + 2 * inLeaf + 2 * node;
}

/** How far appending records at the end of a tree grows the data file: what they take, in pages filled in order. */
export function appendedGrowth(footprint: number, pageBytes: number): number {
  return footprint + pageBytes;
}

/** What LMDB's list of free pages takes per page a transaction frees, at most (a page number). */
const FREE_PAGE_ENTRY_BYTES = 8;

/**
 * How far freeing `pages` pages may grow the data file: LMDB records every page a transaction frees in its list of
 * free pages, written with the commit (pages freed by a trim, a range delete, an emptied database).
 */
export function freedPagesGrowth(pages: number, pageBytes: number): number {
  return appendedGrowth(FREE_PAGE_ENTRY_BYTES * pages, pageBytes);
}

/** STORAGE_FULL as the guard throws it: the store records it as a storage failure, as it does LMDB's ENOSPC. */
export class DiskSpaceRefusal extends MercuryError {}

export class SpaceGuard {
  private reading: { free: number; atMs: number } | undefined;

  /** `readFree`: the bytes free to this process on the store's file system, undefined if that cannot be told. */
  constructor(
    private readonly readFree: () => number | undefined,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /**
   * Throws STORAGE_FULL unless the file system can take a transaction that grows the data file by up to `growth`
   * bytes, with SPACE_HEADROOM_BYTES to spare; otherwise counts `growth` as spent from the reading. A file system
   * whose free space cannot be told is not refused.
   */
  reserve(growth: number): void {
    const need = growth + SPACE_HEADROOM_BYTES;
    const now = this.nowMs();
    let reading = this.reading;
    if (reading === undefined || now - reading.atMs >= REREAD_MS || reading.free - need < REREAD_BELOW_BYTES) {
      const free = this.readFree();
      if (free === undefined) {
        this.reading = undefined;
        return;
      }
      reading = this.reading = { free, atMs: now };
    }
    if (reading.free < need) {
      // Read again at the next write: space freed meanwhile must let it through at once.
      this.reading = undefined;
      throw new DiskSpaceRefusal(
        'STORAGE_FULL',
        `the write was not applied: this node's storage is full (its disk has ${reading.free} bytes free, and this write may need up to ${need}, which Mercury keeps free so that LMDB never meets a full disk); free space on its disk, then retry`,
      );
    }
    reading.free -= growth;
  }
}
