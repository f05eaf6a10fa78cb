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
import { accessSync, constants, existsSync, lstatSync, readlinkSync, renameSync, rmSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { fileKind, readFileBounded } from '../fs/bounded-read.js';
import { fileUnusable } from '../fs/dir-lock.js';
import { fsyncPath, writeFileDurably } from '../fs/durable.js';

export const DATA_FILE = 'data.mdb';
export const LMDB_LOCK_FILE = 'lock.mdb';
export const INITIALISED_FILE = 'store-initialised';
/** A replica's record of its unsynced writes (unsynced-guard.ts). */
export const UNSYNCED_GUARD_FILE = 'unsynced-guard.json';
/**
 * Where `mercury snapshot restore` makes the new store, inside DIR (src/snapshot/restore.ts); removed when the restore
 * ends, whatever the outcome, unless it was killed.
 */
export const RESTORE_PARTIAL_DIR = 'restore.partial';
/**
 * The store's files a restore moves from RESTORE_PARTIAL_DIR into DIR, in this order: data.mdb first, the rename that
 * replaces the data; the store's marker after it, so that it never names a data file that is not there yet.
 */
export const RESTORED_FILES = [DATA_FILE, LMDB_LOCK_FILE, INITIALISED_FILE] as const;
/**
 * What RESTORE_PARTIAL_DIR is renamed to once a restore's store is in DIR, then removed. The rename takes the partial
 * directory away in one step: removed in place, its record (RESTORE_MOVING_FILE) went before the directory, and a kill
 * between the two left an empty partial directory that every open refused as a restore stopped midway, DIR being whole.
 * What a kill leaves under this name holds nothing of the store: a writable open removes it.
 */
export const RESTORE_FINISHED_DIR = 'restore.finished';
/**
 * Written in RESTORE_PARTIAL_DIR, durably, just before a restore's first rename: the names it moves into DIR, one a
 * line (a subset of RESTORED_FILES, data.mdb among them). Renames within one file system are atomic, so once none of
 * those names is left in the partial directory and each is in DIR, every move was made and DIR holds the restored store
 * whole: what a kill then left undone is the cleanup (`finishMovedRestore`). Without it, or with a name still in the
 * partial directory (a kill between two renames), the restore stopped midway.
 */
const RESTORE_MOVING_FILE = 'moving-in';
/** The largest "moving-in" record: the names of RESTORED_FILES, with room to spare; anything larger is not one. */
const RESTORE_MOVING_BYTES_MAX = 256;

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** What `path` is if it is there and not a regular file (through links), else undefined. */
function notRegularFile(dir: string, path: string): string | undefined {
  let entry: Stats;
  try {
    entry = lstatSync(path);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    // EACCES: a directory this user may not search.
    throw fileUnusable(error, path, { dir, done: 'looked at' });
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

/** A restore about to move its store into `dir`: records the names it moves (RESTORE_MOVING_FILE), durably. */
export function recordRestoreMoves(dir: string, names: readonly string[]): void {
  writeFileDurably(join(dir, RESTORE_PARTIAL_DIR, RESTORE_MOVING_FILE), names.join('\n'), 0o600);
}

/**
 * What a restore into `dir` left: `none` (no partial directory), `moved` (killed after its last move: DIR holds the
 * restored store whole), `stopped` (killed before or between its moves, or a record that cannot be read: refused), or
 * something that is not a directory at that name (`foreign`, what it is: refused too), which no restore makes.
 */
function restoreLeft(dir: string): 'none' | 'moved' | 'stopped' | { readonly foreign: string } {
  const partial = join(dir, RESTORE_PARTIAL_DIR);
  let entry: Stats | undefined;
  try {
    entry = lstatSync(partial, { throwIfNoEntry: false });
  } catch (error) {
    // ENOTDIR: `dir` itself is not a directory, which the open says in its own words.
    if (errnoCode(error) === 'ENOTDIR') return 'none';
    throw fileUnusable(error, partial, { dir, done: 'looked at' });
  }
  if (entry === undefined) return 'none';
  if (!entry.isDirectory()) return { foreign: entry.isFile() ? 'a file' : entry.isSymbolicLink() ? 'a symbolic link' : fileKind(entry) };
  let names: string[];
  try {
    names = readFileBounded(join(partial, RESTORE_MOVING_FILE), { what: 'restore record', bytesMax: RESTORE_MOVING_BYTES_MAX, noFollow: true }).toString('utf8').split('\n');
  } catch {
    return 'stopped';
  }
  // Only names a restore moves: a damaged or planted record must not make this judge other paths.
  const known: readonly string[] = RESTORED_FILES;
  if (!names.includes(DATA_FILE) || names.some((name) => !known.includes(name))) return 'stopped';
  const there = (path: string): boolean => lstatSync(path, { throwIfNoEntry: false }) !== undefined;
  const moved = names.every((name) => !there(join(partial, name)) && there(join(dir, name)));
  return moved ? 'moved' : 'stopped';
}

/**
 * Finishes a restore into `dir` that was killed after its last move (`restoreLeft` is `moved`): removes the old data's
 * unsynced-guard state and the partial directory, durably; and whatever a kill left of RESTORE_FINISHED_DIR. The
 * caller holds `dir`'s lock (a writable open, the restore itself). Returns whether there was one to finish.
 */
export function finishMovedRestore(dir: string): boolean {
  // A restore killed while it removed its finished partial directory: nothing in it is the store's.
  rmSync(join(dir, RESTORE_FINISHED_DIR), { recursive: true, force: true });
  if (restoreLeft(dir) !== 'moved') return false;
  completeRestore(dir);
  return true;
}

/** The last steps of a restore, once its store is in `dir`: what describes the old data goes, then the partial directory. */
export function completeRestore(dir: string): void {
  // A replica's record of its unsynced writes (unsynced-guard.ts) describes the old data.
  rmSync(join(dir, UNSYNCED_GUARD_FILE), { force: true });
  fsyncPath(dir);
  // Renamed away first, in one step (RESTORE_FINISHED_DIR): a partial directory is never seen without its record.
  const finished = join(dir, RESTORE_FINISHED_DIR);
  rmSync(finished, { recursive: true, force: true });
  renameSync(join(dir, RESTORE_PARTIAL_DIR), finished);
  rmSync(finished, { recursive: true, force: true });
  fsyncPath(dir);
}

/** Whether a restore into `dir` was killed after its last move: DIR holds its store whole (for a refusal's message). */
export function restoreMovedIn(dir: string): boolean {
  return restoreLeft(dir) === 'moved';
}

/**
 * Whether `dir` holds a data file, for a reader, which makes none. DATA_DIR_INVALID when that cannot be told: a
 * directory this user may not search was taken for one without data.mdb ("its node has not started yet").
 */
export function dataFileFound(dir: string): boolean {
  const path = join(dir, DATA_FILE);
  try {
    lstatSync(path);
    return true;
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw fileUnusable(error, path, { dir, done: 'looked at', needs: 'readable' });
  }
}

/**
 * Throws DATA_DIR_INVALID if a `mercury snapshot restore` into `dir` was stopped before it finished: it left its partial
 * store (RESTORE_PARTIAL_DIR) and DIR without the new one (a fresh DIR: no data.mdb at all), and a node started there
 * made a new, empty dataset as if nothing had happened (found by test/crash-restore.test.ts). Asked first by every
 * open of a data directory, a reader's too, so that each says this rather than what else it finds missing. A restore
 * killed after its last move is not refused: its store is whole (a writable open finishes it first, `finishMovedRestore`).
 */
export function refuseStoppedRestore(dir: string): void {
  const partial = join(dir, RESTORE_PARTIAL_DIR);
  const left = restoreLeft(dir);
  // Reported as a stopped restore, it sent the operator to run a restore again for a file that no restore made.
  if (typeof left === 'object')
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${partial} is ${left.foreign}, not the directory a \`mercury snapshot restore\` makes there while it runs: Mercury did not put it there, and its name is the one that tells whether a restore into ${dir} was stopped. With no mercury process on ${dir}, move it out of the directory (or remove it), then start again.`,
    );
  if (left === 'stopped')
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${partial} is there: a \`mercury snapshot restore\` into ${dir} was stopped before it finished, so the directory may hold its old data, part of the restored store, or none. Run the restore again (with --force if ${dir} holds a data.mdb).`,
    );
}

/** The refusal of a data file that is `kind` ("a FIFO (named pipe)") instead of a regular file. */
export function notDataFile(dataFile: string, kind: string): MercuryError {
  return new MercuryError(
    'DATA_DIR_INVALID',
    `${dataFile} is ${kind}, not the data file LMDB wrote; LMDB cannot open it safely. Put the data file back; without it, see "Damaged data" in the README: a replica starts again on an empty directory, a root is restored from a replica or a backup.`,
  );
}

/**
 * Throws DATA_DIR_INVALID, naming the file, if this process may not use `dir`'s LMDB files as LMDB opens them: read,
 * and written too unless `readOnly` (a reader opens lock.mdb as it can). LMDB's own open said only "Permission denied:
 * Attempting to open main database file" (exit 1, no code, no file), and a lock.mdb that a writer could read but not
 * write killed it with SIGSEGV inside LMDB's open (audit, 2026-12-07: data.mdb of another user, or of mode 000).
 * access(2) is a question, not a guarantee: a mode changed after it still meets LMDB's error (Store wraps it too).
 */
function checkAccess(dir: string, readOnly: boolean): void {
  for (const name of readOnly ? [DATA_FILE] : [DATA_FILE, LMDB_LOCK_FILE]) {
    const path = join(dir, name);
    try {
      accessSync(path, readOnly ? constants.R_OK : constants.R_OK | constants.W_OK);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') continue;
      throw readOnly ? fileUnusable(error, path, { dir, done: 'read', needs: 'readable' }) : fileUnusable(error, path, { dir, done: 'read and written' });
    }
  }
}

/**
 * Throws DATA_DIR_INVALID, naming the file and what to do, if `dir`'s LMDB files cannot be handed to LMDB, or not
 * opened by this process as LMDB will (read and written, only read if `readOnly`).
 */
export function checkDataFiles(dir: string, readOnly: boolean): void {
  refuseStoppedRestore(dir);
  const dataFile = join(dir, DATA_FILE);
  const dataKind = notRegularFile(dir, dataFile);
  if (dataKind !== undefined) throw notDataFile(dataFile, dataKind);
  const lockFile = join(dir, LMDB_LOCK_FILE);
  const lockKind = notRegularFile(dir, lockFile);
  // Not removed here, though it holds no data: whatever an operator put at that name is theirs to look at.
  if (lockKind !== undefined)
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${lockFile} is ${lockKind}, not LMDB's lock file; LMDB cannot open the directory with it. It holds no data (LMDB makes it again): with no Mercury process on ${dir}, remove it and start again.`,
    );
  checkAccess(dir, readOnly);
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

