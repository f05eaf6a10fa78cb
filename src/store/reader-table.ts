/**
 * Gives LMDB's reader table its disk blocks while the disk has room, so that a reader taking a slot on a full disk does
 * not die of SIGBUS.
 *
 * LMDB makes `lock.mdb` with ftruncate, a sparse file, and maps it shared: every read transaction writes its slot (64
 * bytes) into that map. The first write into a page that is still a hole needs a block; on a full disk there is none,
 * and the kernel answers the store with SIGBUS, which kills the process. Measured here (2026-12-07, a 16 MiB tmpfs
 * filled up after the node's first commit): 60 reader processes (`openLocal`'s kind) opened, the 61st to the 90th, whose
 * slots fall in the table's second page, died of SIGBUS; 80 reader threads in one process killed it. A node's own
 * readers come to that page too once it holds as many snapshots at once.
 *
 * Once the blocks are given, a page written later needs none. `fallocate` (util-linux, on every Linux) allocates the
 * holes without changing a byte or the size, safely beside processes that have the file mapped; Node has no call
 * for it. A file with every block already given (each later open of the same store) is left alone without starting
 * the program. Where it cannot be done (no such program, a file system without fallocate, a disk already full) the
 * table stays as LMDB made it: the store opens all the same. docs/decisions.md, record 72.
 */
import { execFileSync } from 'node:child_process';
import { statSync, type Stats } from 'node:fs';

/** How long the allocation may take before the open goes on without it. */
const FALLOCATE_TIMEOUT_MS = 5_000;

/** Whether every byte of `file` has its disk block (stat counts blocks of 512 bytes). */
export function fullyAllocated(file: string): boolean {
  return whole(statSync(file));
}

function whole({ size, blocks }: Stats): boolean {
  return blocks * 512 >= size;
}

/**
 * Allocates the blocks of LMDB's lock file `lockFile` (see above). True if every byte has its block afterwards; false
 * if they could not be given, which the caller may report but need not refuse.
 */
export function allocateReaderTable(lockFile: string): boolean {
  try {
    const stats = statSync(lockFile);
    if (whole(stats)) return true;
    execFileSync('fallocate', ['--offset', '0', '--length', String(stats.size), lockFile], { stdio: 'ignore', timeout: FALLOCATE_TIMEOUT_MS });
    return fullyAllocated(lockFile);
  } catch {
    return false;
  }
}
