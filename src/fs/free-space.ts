/**
 * What a file system has free for this process. statfs's `bavail` leaves out the blocks a file system reserves for
 * root (ext4: 5% by default), which root may write: a node or a `snapshot save` run as root (as in most containers)
 * on a disk inside its reserve was refused with room to write (review, 2026-12-07). So root counts `bfree`.
 */
import { statfsSync } from 'node:fs';

/** Bytes free for this process on the file system that holds `path` (which must exist); throws as statfs does. */
export function freeBytes(path: string): number {
  const stats = statfsSync(path);
  return (process.getuid?.() === 0 ? stats.bfree : stats.bavail) * stats.bsize;
}

/** What the file system that holds `dir` has free for this process (freeBytes), or undefined if it cannot be told. */
export function freeBytesOrUnknown(dir: string): number | undefined {
  try {
    return freeBytes(dir);
  } catch {
    return undefined;
  }
}
