/**
 * What a data directory's files must be before LMDB opens them, beyond their contents (lmdb-meta.ts checks those).
 *
 * - `data.mdb` and `lock.mdb`, where present, are regular files (or symbolic links to regular files). LMDB opens and
 *   maps whatever it finds at those names: a directory, a dangling link or a device there killed `serve` with SIGSEGV
 *   inside LMDB's open, with no word of which file.
 * - `store-initialised`, an empty file, says that the directory's store was once written: it is made right after the
 *   store's first commit (on a root, whose commits are synced, it is fsynced with its directory after it). LMDB takes an empty `data.mdb` for a new
 *   one and initialises it, so a data file truncated to 0 bytes (a bad copy, a full disk during a restore, a file
 *   system that truncates on a crash) would start a new, empty dataset without a word. With the marker present, an
 *   empty data file is refused instead. Without it, an empty data file can only be a first open that stopped before
 *   LMDB wrote its first pages, and is initialised as before. Whoever removes `data.mdb` on purpose (the unsynced
 *   guard) removes the marker first, so that the store made next is not refused; `snapshot restore --force` renames a
 *   complete store's data file in, then its marker.
 *
 * Why a marker and not the other files Mercury writes (signing key, admin token): a root given `--signing-key` and
 * `--admin-token-file`, as the deploy files start it, writes neither, and its empty data file would go unnoticed.
 */
import { existsSync, lstatSync, readlinkSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { fileKind } from '../fs/bounded-read.js';
import { fsyncPath } from '../fs/durable.js';

export const DATA_FILE = 'data.mdb';
export const LMDB_LOCK_FILE = 'lock.mdb';
export const INITIALISED_FILE = 'store-initialised';
/**
 * Where `mercury snapshot restore` makes the new store, inside DIR (src/snapshot/restore.ts); removed when the restore
 * ends, whatever the outcome, unless it was killed.
 */
export const RESTORE_PARTIAL_DIR = 'restore.partial';

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
  if (!entry.isSymbolicLink()) return fileKind(entry);
  const target = readlinkSync(path);
  try {
    const reached = statSync(path);
    return reached.isFile() ? undefined : `a symbolic link to ${target}, ${fileKind(reached)}`;
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return `a symbolic link to ${target}, which does not exist`;
    if (code === 'ELOOP') return `a symbolic link to ${target}, a loop of links`;
    throw error;
  }
}

/**
 * Throws DATA_DIR_INVALID if a `mercury snapshot restore` into `dir` was stopped before it finished: it left its partial
 * store (RESTORE_PARTIAL_DIR) and DIR without the new one (a fresh DIR: no data.mdb at all), and a node started there
 * made a new, empty dataset as if nothing had happened (found by test/crash-restore.test.ts). Asked first by every
 * open of a data directory, a reader's too, so that each says this rather than what else it finds missing.
 */
export function refuseStoppedRestore(dir: string): void {
  const partial = join(dir, RESTORE_PARTIAL_DIR);
  if (existsSync(partial))
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${partial} is there: a \`mercury snapshot restore\` into ${dir} was stopped before it finished, so the directory may hold its old data, part of the restored store, or none. Run the restore again (with --force if ${dir} holds a data.mdb).`,
    );
}

/** Throws DATA_DIR_INVALID, naming the file and what to do, if `dir`'s LMDB files cannot be handed to LMDB. */
export function checkDataFiles(dir: string): void {
  refuseStoppedRestore(dir);
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
  const marker = join(dir, INITIALISED_FILE);
  if (existsSync(dataFile) && statSync(dataFile).size === 0 && existsSync(marker))
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${dataFile} is empty, but ${marker} says this directory's store was written before: the data file was truncated, and LMDB would start a new, empty dataset in it. See "Damaged data" in the README: a replica starts again on an empty directory, a root is restored from a replica or a backup. Only if this directory never held data (a first start cut short), remove ${marker} and start again.`,
    );
}

/**
 * Records that `dir`'s store has been written, once: call after a commit. `durable`: the commit was synced, so the
 * marker is synced too (with its directory entry), after it; a store without fsync (a replica) leaves it to the page
 * cache like its data, and the unsynced guard removes it with the data after a machine crash.
 */
export function markInitialised(dir: string, durable: boolean): void {
  const marker = join(dir, INITIALISED_FILE);
  if (existsSync(marker)) return;
  writeFileSync(marker, '', { mode: 0o600 });
  if (!durable) return;
  fsyncPath(marker);
  fsyncPath(dir);
}

