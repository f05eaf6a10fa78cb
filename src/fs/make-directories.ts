/**
 * `mkdir -p` without Node's recursive mkdir: `mkdirSync(path, { recursive: true })` under a directory that exists but
 * refuses new entries with ENOENT (/proc: `mercury serve --data-dir /proc/x`) retries for ever at 80% of a core (Node
 * 20's own loop; reproduced with a bare `node -e`), so a wrong --data-dir hung the node instead of failing. Here each
 * missing directory is made by one mkdir of its own, from the nearest existing ancestor down, and the first refusal is
 * thrown as the system gave it (its `path` names the directory that could not be made).
 */
import { lstatSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** Makes `path` and its missing parents (`mode` for each one made); nothing if it exists. Throws mkdir's errors. */
export function makeDirectories(path: string, mode?: number): void {
  const missing: string[] = [];
  // statSync follows links, as mkdir -p does: a link to a directory counts as the directory.
  let dir = resolve(path);
  let found = statSync(dir, { throwIfNoEntry: false });
  while (found === undefined) {
    // A link to nothing cannot be made into a directory: ENOENT, as a recursive mkdir through it says.
    if (lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink() === true)
      throw Object.assign(new Error(`ENOENT: no such file or directory, mkdir '${dir}'`), { code: 'ENOENT', errno: -2, syscall: 'mkdir', path: dir });
    missing.push(dir);
    if (dirname(dir) === dir) break;
    dir = dirname(dir);
    found = statSync(dir, { throwIfNoEntry: false });
  }
  // The path, or the nearest part of it that exists, is not a directory: mkdir says so as the system words it (EEXIST
  // for the path itself, ENOTDIR for a directory under a file).
  if (found !== undefined && !found.isDirectory()) mkdirSync(missing.at(-1) ?? dir);
  for (const made of missing.reverse()) {
    try {
      mkdirSync(made, mode === undefined ? undefined : { mode });
    } catch (error) {
      // Made meanwhile by someone else: as mkdir -p, go on.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && statSync(made, { throwIfNoEntry: false })?.isDirectory() === true) continue;
      throw error;
    }
  }
}

/**
 * Why makeDirectories failed with ENOENT: a part of the path is a link to nothing, or the directory's parent exists and
 * still refused it (a pseudo-file system such as /proc), or a parent was removed meanwhile.
 */
export function missingDirectoryProblem(error: NodeJS.ErrnoException): string {
  const made = error.path;
  if (made !== undefined && lstatSync(made, { throwIfNoEntry: false })?.isSymbolicLink() !== true && statSync(dirname(made), { throwIfNoEntry: false })?.isDirectory() === true)
    return `${dirname(made)} exists but takes no new directory (a pseudo-file system such as /proc or /sys?)`;
  return 'a part of its path is a link to nothing, or a directory removed meanwhile';
}
