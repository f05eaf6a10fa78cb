/**
 * Durability of files the node and the CLI write outside LMDB (markers, guard state, snapshots saved by the CLI, files
 * written by `mercury sync`): what a rename or a new file needs before it survives a machine crash.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';

/**
 * Flushes a file's writes, or a directory's entries (a rename or a new file in it), to the disk. Opened read-only:
 * Linux syncs a descriptor of either kind whatever its access mode.
 */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
