/**
 * One writer process per data directory. Two `mercury serve` on one directory would both acknowledge the same seqs and
 * the log would keep only one process's entries, so a writable opener takes this lock first and holds it for the life
 * of the process (resync and snapshot installs run inside that process, under the same lock). Read-only openers
 * (`openLocal`, `mercury verify`) read through LMDB without it: LMDB readers are safe beside a writer. `mercury verify`
 * takes it only for its walk of the trees with plain reads, which a writer reusing pages would mislead; where it cannot
 * (a directory its user may not write), it walks if `lockSeen` finds no holder, and keeps the walk only if nothing
 * came or went meanwhile (src/cli/verify.ts).
 *
 * Lock file `mercury.lock` in the data directory, created with O_EXCL (`wx`), mode 0600:
 *
 *   {"pid": number, "host": string, "bootId": string, "startTicks": string, "startedAt": ISO-8601 string}
 *
 * `startTicks` is field 22 of /proc/<pid>/stat (the process start time in clock ticks since boot): with pid and boot id
 * it names one process for good, so a pid reused after `kill -9` (a restarted container is pid 1 again) is not taken
 * for the holder. Node has no flock(2); see docs/decisions.md (record 13) for why this and not an fcntl/socket lock.
 *
 * A lock whose holder is gone (same host, and another boot, or no such pid, or that pid started at another time, or
 * that pid is a zombie: exited, not yet reaped) is stale and taken over. A lock held on another host (a shared volume)
 * cannot be checked and is never taken over: the error says which file to remove once the operator knows that holder is
 * gone.
 *
 * An empty lock file is a starter between creating the file and writing it, or what a crash or a power loss left of
 * one (the contents are fsynced, but a power loss between the create and the fsync leaves the file empty). Which of the
 * two, its age tells: older than LOCK_EMPTY_STALE_MS it is stale and taken over; younger, the start is refused, saying
 * so. A lock path that is not a file (a directory, a FIFO, a link), or a file larger than LOCK_BYTES_MAX, was not made
 * by Mercury and is refused, naming it; what is judged is the open descriptor, never an earlier look at the path
 * (readBounded), so a FIFO swapped in meanwhile cannot hang a start or a release. A lock file with other contents (not the JSON above) is damaged: it is refused too, never taken
 * over, since nothing in it says whether its holder still runs (taking it over let a second root write the directory of
 * a live one); the operator removes it once no mercury process uses the directory.
 *
 * `mercury sync` locks its DIR the same way (`lockDirectory`, with its own file name `.mercury-sync-lock`): two syncs
 * on one DIR would overwrite each other's state and delete each other's files.
 */
import { closeSync, fsyncSync, linkSync, lstatSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { readBounded, type BoundedRead } from './bounded-read.js';

export const LOCK_FILE = 'mercury.lock';
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';
/** A stale lock is taken over at most this many times in one acquire (each takeover races only with other starters). */
const LOCK_ATTEMPTS_MAX = 5;
/**
 * An empty lock file older than this is stale. A starter writes its lock right after creating it (microseconds, up to
 * seconds on a stalled machine); one emptied by a power loss is at least a reboot old.
 */
const LOCK_EMPTY_STALE_MS = 10_000;
/** A lock file holds a few hundred bytes (a host name is at most 64); a larger one is not Mercury's. */
const LOCK_BYTES_MAX = 4096;

export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  readonly bootId: string;
  readonly startTicks: string;
  readonly startedAt: string;
}

export interface DataDirLock {
  readonly path: string;
  readonly holder: LockHolder;
  /** Removes the lock file if it is still this process's. */
  release(): void;
}

/** A file of the kernel's (/proc), or '' when it cannot be read. */
function readOptional(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The text of the lock file at `path`, or '' when no lock file of ours can be there (gone, or not a regular file of a
 * lock's size). Read bounded: a FIFO put in its place while this process held the lock hung its release at shutdown.
 */
function lockText(path: string): string {
  try {
    const read = readBounded(path, LOCK_BYTES_MAX, { noFollow: true });
    return read.found === 'file' ? read.bytes.toString('utf8') : '';
  } catch {
    return '';
  }
}

/** The fields of /proc/<pid>/stat from field 3 (the state) on, or [] when the process does not exist (or /proc is not there). */
function statFields(pid: number): string[] {
  const stat = readOptional(`/proc/${pid}/stat`);
  if (stat === '') return [];
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing parenthesis.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Field 22 of /proc/<pid>/stat, or '' when the process does not exist (or /proc is not there). */
export function processStartTicks(pid: number): string {
  return statFields(pid)[19] ?? '';
}

/**
 * Whether `pid` is a zombie (state Z in /proc/<pid>/stat): it has exited, and its files and its LMDB environment are
 * closed; only its exit status waits for a parent that has not reaped it. false where /proc cannot tell.
 */
function isZombie(pid: number): boolean {
  return statFields(pid)[0] === 'Z';
}

function describe(holder: LockHolder): string {
  return `pid ${holder.pid} on host ${holder.host}, started ${holder.startedAt}`;
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<LockHolder>;
    if (typeof parsed.pid !== 'number' || typeof parsed.host !== 'string') return undefined;
    return { pid: parsed.pid, host: parsed.host, bootId: parsed.bootId ?? '', startTicks: parsed.startTicks ?? '', startedAt: parsed.startedAt ?? '?' };
  } catch {
    return undefined;
  }
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** 'live', 'stale', or 'unknown' (another host: cannot be checked from here). */
function holderState(holder: LockHolder, self: LockHolder): 'live' | 'stale' | 'unknown' {
  if (holder.host !== self.host) return 'unknown';
  if (holder.bootId !== '' && self.bootId !== '' && holder.bootId !== self.bootId) return 'stale';
  if (!pidExists(holder.pid)) return 'stale';
  // A holder killed under a parent that does not reap it (a container whose pid 1 is not an init) stays a zombie:
  // kill(pid, 0) still finds it, and every restart was DATA_DIR_LOCKED until it was reaped, in such a container for
  // ever (audit, 2026-12-07). A zombie runs no code and holds nothing open.
  if (isZombie(holder.pid)) return 'stale';
  // The pid exists: it is the holder only if it started when the holder did (pid reuse after a kill -9).
  if (holder.startTicks !== '' && processStartTicks(holder.pid) !== holder.startTicks) return 'stale';
  return 'live';
}

/** This process, as its lock file names it. */
function selfHolder(nowIso: string): LockHolder {
  return { pid: process.pid, host: hostname(), bootId: readOptional(BOOT_ID_PATH).trim(), startTicks: processStartTicks(process.pid), startedAt: nowIso };
}

/**
 * The data directory lock as a process sees it that cannot take it (its user may not write `dir`, or the mount is
 * read-only), for `mercury verify`'s tree walk. `held` unless a starter would take the lock: none there, or a stale
 * holder's. An empty or damaged file, a holder on another host, something that is not a lock file, or a lock file this
 * user may not read (a node's own, 0600) count as held: a node may be writing. `seen` tells this file from any that
 * replaces it, or from none, for a caller that checks that nothing came or went while it read the directory.
 */
export function lockSeen(dir: string): { readonly held: boolean; readonly seen: string } {
  const path = join(dir, LOCK_FILE);
  let found: { entry: Stats; text: string } | undefined;
  try {
    found = readLock(dir, path, 'data directory');
  } catch (error) {
    if (error instanceof MercuryError) return { held: true, seen: error.message };
    throw error;
  }
  if (found === undefined) return { held: false, seen: 'none' };
  const seen = `${found.entry.dev}:${found.entry.ino}:${found.entry.mtimeMs}:${found.text}`;
  const holder = parseHolder(found.text);
  return { held: holder === undefined || holderState(holder, selfHolder('')) !== 'stale', seen };
}

/** Takes the lock on data directory `dir` or throws DATA_DIR_LOCKED naming the holder. `dir` must exist. */
export function lockDataDir(dir: string, nowIso: string): DataDirLock {
  return lockDirectory(dir, nowIso, { file: LOCK_FILE, what: 'data directory' });
}

/**
 * Takes the lock `file` in `dir` or throws DATA_DIR_LOCKED naming the holder. `what` names the directory in errors
 * ("data directory", "sync directory"). `dir` must exist.
 */
export function lockDirectory(dir: string, nowIso: string, { file, what }: { readonly file: string; readonly what: string }): DataDirLock {
  const path = join(dir, file);
  const self = selfHolder(nowIso);
  const text = JSON.stringify(self);
  for (let attempt = 0; attempt < LOCK_ATTEMPTS_MAX; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, text);
        // Once per start: a power loss then leaves a lock naming this boot's process (stale at the next boot), not an
        // empty file.
        fsyncSync(fd);
      } catch (error) {
        // This process's own file, made a moment ago: left empty (a full disk), it refused every start for
        // LOCK_EMPTY_STALE_MS as "another mercury process may be taking the lock" (audit, 2026-12-07).
        try {
          unlinkSync(path);
        } catch {
          // the write's failure is the one to report
        }
        throw error;
      } finally {
        closeSync(fd);
      }
      return {
        path,
        holder: self,
        // Judged after it is moved away (removeIfStill), never compared at the path and then unlinked there: a lock
        // another process put at the path between the two was removed, and a third then took the directory too.
        release: () => {
          if (lockText(path) === text) removeIfStill(path, (moved) => lockText(moved) === text);
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unusable(error, path, dir, what);
    }
    const found = readLock(dir, path, what);
    if (found === undefined) continue; // removed meanwhile: try again
    if (found.text === '') {
      const ageMs = Date.parse(nowIso) - found.entry.mtimeMs;
      // Made later than now by more than the stale time: the wall clock stepped back since (a power loss, then a clock
      // set from a slow RTC before NTP), not a starter at work, whose file is dated now. Refused, it blocked every start
      // until the clock passed the file's time (audit, 2026-12-06).
      if (!(Math.abs(ageMs) > LOCK_EMPTY_STALE_MS))
        throw new MercuryError(
          'DATA_DIR_LOCKED',
          `${path} is empty and was made ${Math.round(ageMs)} ms ago: another mercury process may be taking the lock on ${dir} now. If none is (a crash left it empty), it is taken over once ${LOCK_EMPTY_STALE_MS / 1000} s old, or remove it`,
        );
      takeOver(path, (moved) => sameFile(moved, found.entry), dir, what);
      continue;
    }
    const holder = parseHolder(found.text);
    if (holder === undefined)
      throw new MercuryError(
        'DATA_DIR_LOCKED',
        `${path} is damaged (not the lock Mercury writes), so whether a mercury process still holds ${what} ${dir} cannot be told; if none does (check with ps), remove ${path} and start again`,
      );
    const state = holderState(holder, self);
    if (state === 'live')
      throw new MercuryError('DATA_DIR_LOCKED', `${what} ${dir} is in use by another mercury process (${describe(holder)}); stop it first`, {
        details: { ...holder },
      });
    if (state === 'unknown')
      throw new MercuryError(
        'DATA_DIR_LOCKED',
        `${what} ${dir} is locked by a process on another host (${describe(holder)}); if that process is gone, remove ${path}`,
        { details: { ...holder } },
      );
    takeOver(path, (moved) => lockText(moved) === found.text, dir, what);
  }
  throw new MercuryError('DATA_DIR_LOCKED', `could not lock ${what} ${dir}: other processes keep taking ${path}`);
}

/** The system's refusals of a file in a directory this process may not write, or on a full or read-only disk. */
const UNUSABLE_CODES: ReadonlySet<string> = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOSPC']);

/** Whether `error` is one of those refusals, which fileUnusable says as Mercury's error. */
export function isUnusable(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && UNUSABLE_CODES.has(code);
}

/**
 * Removes a stale lock (removeIfStill). A directory this process may not write refuses the rename as it refuses the
 * lock's creation, and says so the same way: it was the bare "EACCES: permission denied, rename", which `verify` on a
 * read-only copy of a killed node's directory (a stale lock in it) could not tell from a failure (review, 2026-12-07).
 */
function takeOver(path: string, isStale: (moved: string) => boolean, dir: string, what: string): void {
  try {
    removeIfStill(path, isStale);
  } catch (error) {
    if (isUnusable(error)) throw fileUnusable(error, path, { dir, what, done: 'taken over (its holder is gone)' });
    throw error;
  }
}

/**
 * The lock file's entry (its descriptor's fstat) and contents; undefined if it is gone. Throws DATA_DIR_INVALID if it
 * is not a regular file of a lock's size. Opened, then checked: an lstat of the path, then a read, let a FIFO swapped in
 * between the two hang the start in read(2); and a multi-GB file was once read whole, then failed naming no file.
 */
function readLock(dir: string, path: string, what: string): { entry: Stats; text: string } | undefined {
  let read: BoundedRead;
  try {
    read = readBounded(path, LOCK_BYTES_MAX, { noFollow: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unusable(error, path, dir, what);
  }
  if (read.found === 'file') return { entry: read.stat, text: read.bytes.toString('utf8') };
  const kind = read.found === 'other' ? read.kind : read.size === undefined ? `over ${LOCK_BYTES_MAX} bytes` : `${read.size} bytes`;
  throw new MercuryError('DATA_DIR_INVALID', `${path} is ${kind}, not the lock file Mercury makes; with no mercury process on ${dir}, remove it and start again`);
}

/** The lock file could not be made or read (EACCES: a directory or file of another user, EROFS, ENOSPC). */
function unusable(error: unknown, path: string, dir: string, what: string): MercuryError {
  return fileUnusable(error, path, { dir, what, done: 'made or read' });
}

/**
 * The error for a file of a directory Mercury keeps (`what` `dir`: "data directory /d") that the system would not let
 * this process open (EACCES, EPERM: a file or directory of another user, or of the wrong mode; EROFS; ENOSPC): the
 * operating system's error alone was printed (LMDB's "Permission denied: Attempting to open main database file"), with
 * no code, no file for some, and nothing to do (audit, 2026-12-07). `done` is what could not be done to `path`; `needs`
 * what the user must be allowed ("readable" for a reader, which writes nothing). ENOSPC is STORAGE_FULL: no owner or
 * mode to fix (a first start on a full disk was told to fix them; audit, 2026-12-07).
 */
export function fileUnusable(
  error: unknown,
  path: string,
  { dir, what = 'data directory', done = 'opened', needs = 'readable and writable' }: { readonly dir: string; readonly what?: string; readonly done?: string; readonly needs?: string },
): MercuryError {
  if ((error as NodeJS.ErrnoException).code === 'ENOSPC')
    return new MercuryError('STORAGE_FULL', `${path} cannot be ${done} (${(error as Error).message}): the disk that holds ${what} ${dir} is full; free space on it, then try again`, {
      cause: error,
    });
  const uid = process.getuid?.();
  return new MercuryError(
    'DATA_DIR_INVALID',
    `${path} cannot be ${done} (${(error as Error).message}): ${what} ${dir} and the files in it must be ${needs} by the user mercury runs as${uid === undefined ? '' : ` (uid ${uid})`}; fix their owner or mode (or the disk), then try again`,
    { cause: error },
  );
}

/** Whether `path` is still the file `entry` was read from (an empty lock has no contents to compare). */
function sameFile(path: string, entry: Stats): boolean {
  const now = lstatSync(path);
  return now.ino === entry.ino && now.dev === entry.dev && now.mtimeMs === entry.mtimeMs && now.size === 0;
}

/**
 * Removes the lock at `path` if `isStill` recognises it once moved: a stale lock being taken over, or this process's
 * own at release. Rename first, then compare: what was at `path` at the rename is what is judged and removed. Two
 * starters that both judged the same file stale must not both remove it, or the second would remove the first one's
 * fresh lock; a release must not remove a lock another process put in place of its own. Whoever moved a file that
 * is not the one it meant (a lock made in between) links it back. What remains: between the rename and the link, the
 * path is empty, and a starter in that instant makes a lock of its own there (the one moved is then dropped, and two
 * processes believe they hold the directory). It takes two races at once (a lock replaced under its holder, and a
 * start in the microseconds after); comparing at the path, then unlinking, took one (docs/security.md).
 */
function removeIfStill(path: string, isStill: (moved: string) => boolean): void {
  const moved = `${path}.stale.${process.pid}`;
  try {
    renameSync(path, moved);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!isStill(moved)) {
    try {
      linkSync(moved, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  unlinkSync(moved);
}
