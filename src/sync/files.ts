/**
 * The file operations of `mercury sync`: every write is atomic (a temporary file in the same directory, fsynced, then
 * renamed over the target, so a reader sees the old content or the new, never a partial file), deletes prune the
 * directories they empty, and a walk lists the files sync holds (skipping its own `.mercury-sync*` names).
 *
 * Symbolic links: DIR belongs to sync, and sync never follows a link inside it (docs/decisions.md, record 29). Every
 * path is walked from DIR one segment at a time with lstat, directories are made one level at a time, an existing file
 * is read with O_NOFOLLOW, and a walk meets links with readdir's own type: a link anywhere sync looks (a directory on
 * the way, the file itself) is refused with SYMLINK_REFUSED naming it, before anything is written, renamed or
 * deleted. DIR itself may be a link: the operator named it. What this does not cover: a link swapped in between the
 * check and the write by someone racing sync (Node has no openat/renameat); whoever can do that owns DIR already.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fchownSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, rmdirSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { MercuryError } from '../errors/index.js';
import { readFileBounded } from '../fs/bounded-read.js';
import { fsyncPath } from '../fs/durable.js';
import type { SyncedFile } from './budget.js';
import { nameFolding, type NameFolding } from './fold.js';
import { SYNC_RESERVED_PREFIX } from './paths.js';

/** What a write did: wrote new content, found the same content there (nothing touched), or met a conflict. */
export type WriteOutcome = { readonly kind: 'written' | 'unchanged' } | { readonly kind: 'conflict'; readonly reason: string };

/**
 * What a replaced file keeps: its permission bits, and its owner and group when sync runs as root (only root may give
 * a file away). An operator who chmods a synced file (0600 for a key, 0640 for a group) must not find it reset to
 * 0644, readable by everyone, at the next change of its key.
 */
export interface KeptAttributes {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/**
 * Writes `data` to `file` atomically and durably: `mode` for a new file (less the umask), or `keep`'s attributes, set
 * on the temporary file before the rename so the file is never visible with other ones.
 */
export function writeFileAtomic(file: string, data: Buffer, mode = 0o644, keep?: KeptAttributes): void {
  const temporary = join(dirname(file), `${SYNC_RESERVED_PREFIX}-tmp-${randomBytes(6).toString('hex')}`);
  const fd = openSync(temporary, 'wx', keep === undefined ? mode : 0o600);
  try {
    if (keep !== undefined) {
      // Owner first: a chown clears the set-user-ID and set-group-ID bits, which the chmod then puts back.
      if (process.getuid?.() === 0) fchownSync(fd, keep.uid, keep.gid);
      fchmodSync(fd, keep.mode & 0o7777); // fchmod ignores the umask: the mode is the file's own
    }
    for (let at = 0; at < data.length; ) at += writeSync(fd, data, at);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(temporary, file);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
  // The rename is durable only once the directory is.
  fsyncPath(dirname(file));
}

function code(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** What is at a path, without following a link there. */
type EntryKind = 'missing' | 'file' | 'directory' | 'symlink' | 'other';

function entryKind(path: string): EntryKind {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat === undefined) return 'missing';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isDirectory()) return 'directory';
  return stat.isFile() ? 'file' : 'other';
}

/** The refusal for a link at `link` (inside `root`), met while doing `action`. */
export function symlinkRefused(root: string, link: string, action: string): MercuryError {
  let target = '?';
  try {
    target = readlinkSync(link);
  } catch {
    // gone meanwhile: the message still names it
  }
  return new MercuryError(
    'SYMLINK_REFUSED',
    `${link} is a symbolic link (to ${target}); sync never follows links inside ${root}, so it did not ${action}. ` +
      `Remove the link (rm ${link}) and start sync again: it resumes from the change it stopped at`,
    { details: { path: link } },
  );
}

/**
 * Walks the directories on the way to `root/path` (not the last segment), refusing links. `create`: makes the missing
 * ones, one level at a time (mkdir never follows a link it meets: EEXIST). Returns why it stopped, if it did.
 */
function walkParents(root: string, path: string, action: string, create: boolean): 'ok' | 'missing' | 'file' {
  let directory = root;
  for (const segment of path.split('/').slice(0, -1)) {
    directory = join(directory, segment);
    let kind = entryKind(directory);
    if (kind === 'missing' && create) {
      try {
        mkdirSync(directory);
      } catch (error) {
        if (code(error) !== 'EEXIST') throw error;
      }
      kind = entryKind(directory);
    }
    if (kind === 'symlink') throw symlinkRefused(root, directory, action);
    if (kind === 'missing') return 'missing';
    if (kind !== 'directory') return 'file';
  }
  return 'ok';
}

/**
 * Whether the regular file at `file` holds `data`. Files of another size are not read; the others are read bounded
 * and without following a link (O_NOFOLLOW: a link swapped in since the lstat fails; a FIFO is refused, not waited on).
 */
function holds(file: string, size: number, data: Buffer): boolean {
  if (size !== data.length) return false;
  return readFileBounded(file, { what: 'the file', bytesMax: data.length, noFollow: true }).equals(data);
}

/**
 * Puts `data` at `root/path`, making the directories on the way. Throws SYMLINK_REFUSED at a link on the way.
 * `admit` is called once the path is known to take the file, with the size of the file there (undefined: none),
 * before anything is written: it throws to refuse the write (sync's budget, budget.ts).
 */
export function putFile(root: string, path: string, data: Buffer, admit: (previousSize: number | undefined) => void = () => undefined): WriteOutcome {
  const action = `write ${path}`;
  if (walkParents(root, path, action, true) === 'file') return { kind: 'conflict', reason: `a parent of ${path} is a file (another key)` };
  const file = join(root, path);
  let keep: KeptAttributes | undefined;
  switch (entryKind(file)) {
    case 'symlink':
      throw symlinkRefused(root, file, action);
    case 'directory':
      return { kind: 'conflict', reason: `${path} is a directory (other keys are under it)` };
    case 'other':
      return { kind: 'conflict', reason: `${path} is not a regular file (a FIFO, socket or device)` };
    case 'file': {
      const { size, mode, uid, gid } = lstatSync(file);
      admit(size);
      if (holds(file, size, data)) return { kind: 'unchanged' };
      keep = { mode, uid, gid };
      break;
    }
    case 'missing':
      admit(undefined);
      break;
  }
  writeFileAtomic(file, data, 0o644, keep);
  return { kind: 'written' };
}

/**
 * Deletes `root/path` if it is a file, then every directory that this leaves empty, up to (not including) root.
 * Returns the deleted file's size, or undefined if there was no file to delete. Throws SYMLINK_REFUSED at a link on
 * the way or at the file itself.
 */
export function deleteFile(root: string, path: string): number | undefined {
  const action = `delete ${path}`;
  if (walkParents(root, path, action, false) !== 'ok') return undefined;
  const file = join(root, path);
  const stat = lstatSync(file, { throwIfNoEntry: false });
  if (stat?.isSymbolicLink() === true) throw symlinkRefused(root, file, action);
  if (stat?.isFile() !== true) return undefined;
  try {
    unlinkSync(file);
  } catch (error) {
    const reason = code(error);
    if (reason === 'ENOENT' || reason === 'ENOTDIR' || reason === 'EISDIR' || reason === 'EPERM') return undefined;
    throw error;
  }
  // Every directory here was checked to be a real one by walkParents.
  for (let directory = dirname(file); relative(root, directory) !== '' && !relative(root, directory).startsWith('..'); directory = dirname(directory)) {
    try {
      rmdirSync(directory);
    } catch {
      break; // not empty (or gone): the directories above are not empty either
    }
  }
  return stat.size;
}

/**
 * Every file under root, as `/`-separated paths relative to root, skipping sync's own names. Throws SYMLINK_REFUSED at
 * the first link: a walk decides what to delete (range deletes, snapshots), and must not do so through one.
 */
export function listFiles(root: string, action = 'walk the directory'): string[] {
  const files: string[] = [];
  const walk = (directory: string): void => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      if (entry.name.startsWith(SYNC_RESERVED_PREFIX)) continue;
      const full = join(directory, entry.name);
      if (entry.isSymbolicLink()) throw symlinkRefused(root, full, action);
      if (entry.isDirectory()) walk(full);
      else files.push(relative(root, full).split(sep).join('/'));
    }
  };
  walk(root);
  return files;
}

/**
 * `listFiles` with each file's size, for the budget's count at start (budget.ts). The walks that only decide what to
 * delete do without: a stat per file cost a range delete 0.2 to 0.5 s on a DIR of 100,000 files (review, 2026-12-06).
 */
export function measureFiles(root: string, action: string): SyncedFile[] {
  return listFiles(root, action).map((path) => ({ path, size: lstatSync(join(root, path), { throwIfNoEntry: false })?.size ?? 0 }));
}

/**
 * Removes temporary files a killed sync left behind (it never renamed them, so they were never visible as keys).
 * Sync only ever makes files by that name: anything else so named (a directory, a FIFO) is not its own, and is left.
 */
export function removeTemporaryFiles(root: string): void {
  const walk = (directory: string): void => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const full = join(directory, entry.name);
      if (entry.name.startsWith(`${SYNC_RESERVED_PREFIX}-tmp-`)) {
        if (entry.isFile()) rmSync(full, { force: true });
      } else if (entry.isDirectory()) walk(full);
    }
  };
  walk(root);
}

/**
 * Whether DIR's file system folds case and/or Unicode normalisation (fold.ts), found by trying it: a probe file is
 * made under a temporary name of sync's own (a killed sync's is removed by removeTemporaryFiles), then looked up by
 * its folded twin (`a` as `A`; NFC `é` as NFD `e` + U+0301), then removed. Asked of DIR itself: a subdirectory on
 * another mount may fold otherwise, which this does not see.
 */
export function probeNameFolding(root: string): NameFolding | undefined {
  const base = join(root, `${SYNC_RESERVED_PREFIX}-tmp-${randomBytes(6).toString('hex')}-probe-`);
  const folds = (name: string, twin: string): boolean => {
    closeSync(openSync(base + name, 'wx', 0o600));
    try {
      const made = lstatSync(base + name);
      const found = lstatSync(base + twin, { throwIfNoEntry: false });
      return found !== undefined && found.ino === made.ino && found.dev === made.dev;
    } finally {
      rmSync(base + name, { force: true });
    }
  };
  return nameFolding(folds('a', 'A'), folds('\u00e9', 'e\u0301'));
}
