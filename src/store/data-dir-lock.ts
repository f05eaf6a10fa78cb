/**
 * One writer process per data directory. Two `mercury serve` on one directory would both acknowledge the same seqs and
 * the log would keep only one process's entries, so a writable opener takes this lock first and holds it for the life
 * of the process (resync and snapshot installs run inside that process, under the same lock). Read-only openers
 * (`openLocal`, `mercury verify`) take no lock: LMDB readers are safe beside a writer.
 *
 * Lock file `mercury.lock` in the data directory, created with O_EXCL (`wx`), mode 0600:
 *
 *   {"pid": number, "host": string, "bootId": string, "startTicks": string, "startedAt": ISO-8601 string}
 *
 * `startTicks` is field 22 of /proc/<pid>/stat (the process start time in clock ticks since boot): with pid and boot id
 * it names one process for good, so a pid reused after `kill -9` (a restarted container is pid 1 again) is not taken
 * for the holder. Node has no flock(2); see docs/decisions.md (record 13) for why this and not an fcntl/socket lock.
 *
 * A lock whose holder is gone (same host, and another boot, or no such pid, or that pid started at another time) is
 * stale and taken over. A lock held on another host (a shared volume) cannot be checked and is never taken over: the
 * error says which file to remove once the operator knows that holder is gone.
 */
import { closeSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { MercuryError } from '../errors/index.js';

export const LOCK_FILE = 'mercury.lock';
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';
/** A stale lock is taken over at most this many times in one acquire (each takeover races only with other starters). */
const LOCK_ATTEMPTS_MAX = 5;

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

function readOptional(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Field 22 of /proc/<pid>/stat, or '' when the process does not exist (or /proc is not there). */
export function processStartTicks(pid: number): string {
  const stat = readOptional(`/proc/${pid}/stat`);
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? '';
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
  // The pid exists: it is the holder only if it started when the holder did (pid reuse after a kill -9).
  if (holder.startTicks !== '' && processStartTicks(holder.pid) !== holder.startTicks) return 'stale';
  return 'live';
}

/**
 * Takes the lock on `dir` or throws DATA_DIR_LOCKED naming the holder. `dir` must exist.
 */
export function lockDataDir(dir: string, nowIso: string): DataDirLock {
  const path = join(dir, LOCK_FILE);
  const self: LockHolder = {
    pid: process.pid,
    host: hostname(),
    bootId: readOptional(BOOT_ID_PATH).trim(),
    startTicks: processStartTicks(process.pid),
    startedAt: nowIso,
  };
  const text = JSON.stringify(self);
  for (let attempt = 0; attempt < LOCK_ATTEMPTS_MAX; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, text);
      } finally {
        closeSync(fd);
      }
      return {
        path,
        holder: self,
        release: () => {
          if (readOptional(path) === text) unlinkSync(path);
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const found = readOptional(path);
    if (found === '') continue; // removed meanwhile, or still being written: look again
    const holder = parseHolder(found);
    const state = holder === undefined ? 'stale' : holderState(holder, self);
    if (state === 'live')
      throw new MercuryError('DATA_DIR_LOCKED', `data directory ${dir} is in use by another mercury process (${describe(holder!)}); stop it first`, {
        details: { ...holder },
      });
    if (state === 'unknown')
      throw new MercuryError(
        'DATA_DIR_LOCKED',
        `data directory ${dir} is locked by a process on another host (${describe(holder!)}); if that process is gone, remove ${path}`,
        { details: { ...holder } },
      );
    takeOver(path, found);
  }
  throw new MercuryError('DATA_DIR_LOCKED', `could not lock data directory ${dir}: other processes keep taking ${path}`);
}

/**
 * Removes the stale lock `staleText`. Rename first, then compare: two starters that both judged the same file stale
 * must not both remove it, or the second would remove the first one's fresh lock. Whoever moved a file that is not
 * the stale one (a fresh lock made in between) puts it back.
 */
function takeOver(path: string, staleText: string): void {
  const moved = `${path}.stale.${process.pid}`;
  try {
    renameSync(path, moved);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (readOptional(moved) !== staleText) {
    try {
      linkSync(moved, path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  unlinkSync(moved);
}
