/**
 * What a data directory's files must be before LMDB opens them, beyond their contents (lmdb-meta.ts checks those).
 *
 * - `data.mdb` and `lock.mdb`, where present, are regular files (or symbolic links to regular files). LMDB opens and
 *   maps whatever it finds at those names: a directory, a dangling link or a device there killed `serve` with SIGSEGV
 *   inside LMDB's open, with no word of which file.
 */
import { lstatSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';

export const DATA_FILE = 'data.mdb';
export const LMDB_LOCK_FILE = 'lock.mdb';

function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isFIFO()) return 'a named pipe';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** What `path` is if it is there and not a regular file (through links), else undefined. */
function notRegularFile(path: string): string | undefined {
  let entry: Stats;
  try {
    entry = lstatSync(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  if (entry.isFile()) return undefined;
  if (!entry.isSymbolicLink()) return kindOf(entry);
  const target = readlinkSync(path);
  try {
    const reached = statSync(path);
    return reached.isFile() ? undefined : `a symbolic link to ${target}, ${kindOf(reached)}`;
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return `a symbolic link to ${target}, which does not exist`;
    if (code === 'ELOOP') return `a symbolic link to ${target}, a loop of links`;
    throw error;
  }
}

/** Throws DATA_DIR_INVALID, naming the file and what to do, if `dir`'s LMDB files cannot be handed to LMDB. */
export function checkDataFiles(dir: string): void {
  const dataFile = join(dir, DATA_FILE);
  const dataKind = notRegularFile(dataFile);
  if (dataKind !== undefined)
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${dataFile} is ${dataKind}, not the data file LMDB wrote; LMDB cannot open it safely. Put the data file back; without it, see "Damaged data" in the README: a replica starts again on an empty directory, a root is restored from a replica or a backup.`,
    );
  const lockFile = join(dir, LMDB_LOCK_FILE);
  const lockKind = notRegularFile(lockFile);
  // Not removed here, though it holds no data: whatever an operator put at that name is theirs to look at.
  if (lockKind !== undefined)
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${lockFile} is ${lockKind}, not LMDB's lock file; LMDB cannot open the directory with it. It holds no data (LMDB makes it again): with no Mercury process on ${dir}, remove it and start again.`,
    );
}

