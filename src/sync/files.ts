/**
 * The file operations of `mercury sync`: every write is atomic (a temporary file in the same directory, fsynced, then
 * renamed over the target, so a reader sees the old content or the new, never a partial file), deletes prune the
 * directories they empty, and a walk lists the files sync holds (skipping its own `.mercury-sync*` names).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { SYNC_RESERVED_PREFIX } from './paths.js';

/** What a write did: wrote new content, found the same content there (nothing touched), or met a conflict. */
export type WriteOutcome = { readonly kind: 'written' | 'unchanged' } | { readonly kind: 'conflict'; readonly reason: string };

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` to `file` atomically and durably (`mode` for a new file). */
export function writeFileAtomic(file: string, data: Buffer, mode = 0o644): void {
  const temporary = join(dirname(file), `${SYNC_RESERVED_PREFIX}-tmp-${randomBytes(6).toString('hex')}`);
  const fd = openSync(temporary, 'wx', mode);
  try {
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

/** Puts `data` at `root/path`, making the directories on the way. */
export function putFile(root: string, path: string, data: Buffer): WriteOutcome {
  const file = join(root, path);
  try {
    if (statSync(file).isDirectory()) return { kind: 'conflict', reason: `${path} is a directory (other keys are under it)` };
    if (readFileSync(file).equals(data)) return { kind: 'unchanged' };
  } catch (error) {
    if (code(error) === 'ENOTDIR') return { kind: 'conflict', reason: `a parent of ${path} is a file (another key)` };
    if (code(error) !== 'ENOENT') throw error;
  }
  try {
    mkdirSync(dirname(file), { recursive: true });
  } catch (error) {
    if (code(error) === 'ENOTDIR' || code(error) === 'EEXIST') return { kind: 'conflict', reason: `a parent of ${path} is a file (another key)` };
    throw error;
  }
  writeFileAtomic(file, data);
  return { kind: 'written' };
}

/** Deletes `root/path` if it is a file, then every directory that this leaves empty, up to (not including) root. True if it deleted. */
export function deleteFile(root: string, path: string): boolean {
  const file = join(root, path);
  try {
    unlinkSync(file);
  } catch (error) {
    const reason = code(error);
    if (reason === 'ENOENT' || reason === 'ENOTDIR' || reason === 'EISDIR' || reason === 'EPERM') return false;
    throw error;
  }
  for (let directory = dirname(file); relative(root, directory) !== '' && !relative(root, directory).startsWith('..'); directory = dirname(directory)) {
    try {
      rmdirSync(directory);
    } catch {
      break; // not empty (or gone): the directories above are not empty either
    }
  }
  return true;
}

/** Every file under root, as `/`-separated paths relative to root, skipping sync's own names. */
export function listFiles(root: string): string[] {
  const files: string[] = [];
  const walk = (directory: string): void => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      if (entry.name.startsWith(SYNC_RESERVED_PREFIX)) continue;
      const full = join(directory, entry.name);
      if (entry.isDirectory()) walk(full);
      else files.push(relative(root, full).split(sep).join('/'));
    }
  };
  walk(root);
  return files;
}

/** Removes temporary files a killed sync left behind (it never renamed them, so they were never visible as keys). */
export function removeTemporaryFiles(root: string): void {
  const walk = (directory: string): void => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const full = join(directory, entry.name);
      if (entry.name.startsWith(`${SYNC_RESERVED_PREFIX}-tmp-`)) rmSync(full, { force: true });
      else if (entry.isDirectory()) walk(full);
    }
  };
  walk(root);
}
