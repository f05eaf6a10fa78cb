/**
 * Keeps a replica that skips fsync from ever running on a corrupt file.
 *
 * A replica writes without fsync (it can refetch everything from its upstream). Writes then sit in the kernel's page
 * cache: a process crash loses nothing, but a power loss or kernel crash can lose some of them and, because the
 * kernel may write pages out of order, leave LMDB's B-tree inconsistent. So the guard records, in a small file that
 * is fsynced, whether the directory is "open unsynced" and under which kernel boot (Linux's random boot id):
 *
 *   state file `unsynced-guard.json` = {"bootId": string, "clean": boolean}
 *
 * - open: if the last run did not close cleanly AND the machine has rebooted since (another boot id, or no boot id
 *   available), the page cache that held the unsynced writes is gone: the LMDB files are deleted and the replica
 *   bootstraps again from a snapshot. Otherwise the files are intact. Then {bootId, clean: false} is written.
 * - close: after the environment is closed, the data file is fsynced, and only then {clean: true} is written.
 *
 * The file is replaced whole by a rename, never written in place. A state file that does not hold such an object
 * (torn, damaged into other JSON such as `null`, or larger than STATE_BYTES_MAX, which is not read) says nothing of the
 * last stop, so the data is discarded as after a machine crash. A state path that is not a file (a directory) was not
 * made here: the start is refused, naming it, before anything is touched. The file is judged by its open descriptor
 * (src/fs/bounded-read.ts), never by an earlier look at the path: a FIFO swapped in between would hang the start.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { readBounded, type BoundedRead } from '../fs/bounded-read.js';
import { fileUnusable } from '../fs/dir-lock.js';
import { fsyncPath, writeFileDurably } from '../fs/durable.js';
import { DATA_FILE, INITIALISED_FILE, LMDB_LOCK_FILE, UNSYNCED_GUARD_FILE } from './data-files.js';

const STATE_FILE = UNSYNCED_GUARD_FILE;
/** The marker first: removed with the data, it must not outlive it (data-files.ts). */
const DISCARDED_FILES = [INITIALISED_FILE, DATA_FILE, LMDB_LOCK_FILE];
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';
/** The state file holds about 70 bytes; one larger than this is damaged. */
const STATE_BYTES_MAX = 4096;

interface GuardState {
  readonly bootId: string;
  readonly clean: boolean;
}

function currentBootId(): string {
  try {
    return readFileSync(BOOT_ID_PATH, 'utf8').trim();
  } catch {
    return ''; // unknown: every unclean shutdown then counts as a possible power loss
  }
}

function isGuardState(value: unknown): value is GuardState {
  if (typeof value !== 'object' || value === null) return false;
  const state = value as Record<string, unknown>;
  return typeof state.bootId === 'string' && typeof state.clean === 'boolean';
}

/** The recorded state; what is wrong with it if the file is torn or damaged; 'none' if there is no state file. */
function readState(dir: string, statePath: string): GuardState | { damaged: string } | 'none' {
  let read: BoundedRead;
  try {
    // Opened, then checked: an lstat of the path, then a read, let a FIFO swapped in between the two hang the start.
    read = readBounded(statePath, STATE_BYTES_MAX, { noFollow: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw fileUnusable(error, statePath, { dir, done: 'read' });
  }
  if (read.found === 'other')
    throw new MercuryError(
      'DATA_DIR_INVALID',
      `${statePath} is ${read.kind}, not a file, so whether this replica's data survived its last stop is unknown. With no mercury process on ${dir}, remove it and the data files (data.mdb, lock.mdb: the replica fetches its data again from its upstream), then start again.`,
    );
  // Damaged, whatever it holds (a multi-GB file was read whole, then failed the start naming no file).
  if (read.found === 'too large') return { damaged: `${read.size === undefined ? 'grown, while read,' : `${read.size} bytes,`} over the ${STATE_BYTES_MAX} it may hold` };
  const text = read.bytes.toString('utf8');
  if (text === '') return { damaged: 'empty' };
  try {
    const parsed: unknown = JSON.parse(text);
    return isGuardState(parsed) ? parsed : { damaged: 'JSON, but not the state the guard writes' };
  } catch (error) {
    if (error instanceof SyntaxError) return { damaged: 'not JSON: cut short or overwritten' };
    throw error;
  }
}

/**
 * Replaces the state file whole (a temporary file, fsynced, renamed over it, the directory fsynced): written in place,
 * a power loss during the write could leave it empty, which a start takes for a crash and discards the data of a
 * replica that had closed cleanly.
 */
function writeState(path: string, state: GuardState): void {
  writeFileDurably(path, JSON.stringify(state), 0o600);
}

/**
 * Call before opening LMDB without fsync. Discards the data when the machine went down while the directory held
 * unsynced writes, and returns why (for the node's log line: a damaged state file was logged as "the machine went
 * down", which sent operators looking for a crash that never happened); undefined when the data was kept.
 */
export function openUnsyncedWhy(dir: string): string | undefined {
  const statePath = join(dir, STATE_FILE);
  const bootId = currentBootId();
  const state = readState(dir, statePath);
  // A torn or damaged state file is itself a sign of a crash during open or close.
  const why =
    state === 'none'
      ? undefined
      : 'damaged' in state
        ? `its state file ${statePath} is damaged (${state.damaged}), so whether the data survived the last stop is unknown`
        : !state.clean && (bootId === '' || state.bootId !== bootId)
          ? `the machine went down while it held unsynced writes (${bootId === '' ? 'no boot id to tell a reboot by' : 'another boot since'})`
          : undefined;
  if (why !== undefined) for (const name of DISCARDED_FILES) rmSync(join(dir, name), { force: true });
  writeState(statePath, { bootId, clean: false });
  return why;
}

/** Call after the LMDB environment is closed: makes the data durable, then marks the directory clean. */
export function closeUnsynced(dir: string): void {
  const dataFile = join(dir, DATA_FILE);
  if (existsSync(dataFile)) fsyncPath(dataFile);
  writeState(join(dir, STATE_FILE), { bootId: currentBootId(), clean: true });
}
