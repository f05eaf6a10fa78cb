/**
 * Durability of files the node and the CLI write outside LMDB (markers, guard state, snapshots saved by the CLI, files
 * written by `mercury sync`, the root's signing key and bootstrap admin token): what a rename or a new file needs
 * before it survives a machine crash.
 */
import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { MercuryError } from '../errors/index.js';

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

/**
 * Writes a small file whole or not at all: into `PATH.tmp` (mode `mode`), fsynced, then renamed over `path`, then the
 * directory fsynced, so that neither a crash nor a power loss at any point leaves `path` empty or cut short (a file
 * written in place can be found empty after a power loss even once written: its data was still in the page cache).
 * `exclusive`: linked instead of renamed, so that a file already at `path` is never replaced (EEXIST). A temporary file
 * a crash left behind is replaced by the next write. A full disk is STORAGE_FULL, `path` as it was: the bare "ENOSPC: no
 * space left on device, write" named no file and no code (a replica restarted on a full disk, its unsynced guard's
 * state; audit, 2026-12-07). Any other failure is the system's error, its `path` the file asked for.
 */
export function writeFileDurably(path: string, data: string | Buffer, mode: number, exclusive = false): void {
  const temporary = `${path}.tmp`;
  try {
    rmSync(temporary, { force: true });
    const fd = openSync(temporary, 'wx', mode);
    try {
      try {
        writeFileSync(fd, data);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      if (exclusive) linkSync(temporary, path);
      else renameSync(temporary, path);
    } finally {
      rmSync(temporary, { force: true });
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') {
      // The file asked for, which callers name to the operator ("... cannot be written (EACCES: ..., open
      // '....tmp')"): the demo said `ca-key.pem.tmp cannot be written`, a file it had never mentioned. The message keeps
      // the system call's own path.
      if ((error as NodeJS.ErrnoException).path === temporary) (error as NodeJS.ErrnoException).path = path;
      throw error;
    }
    throw new MercuryError('STORAGE_FULL', `${path} could not be written (${(error as Error).message}): its disk is full, and the file is as it was; free space on it, then try again`, {
      cause: error,
    });
  }
  fsyncPath(dirname(path));
}
