/**
 * A test-only preload that puts another process's lock in place of `mercury.lock` at the one moment a stopping node's
 * release has judged the lock its own and not yet removed it: no hook is compiled into Mercury, this patches `node:fs`
 * in the one process it is loaded into (`lockSwapEnv`), as test/support/kill-at.ts does.
 *
 * The moment: just after the node closes the descriptor it read a `mercury.lock*` file through (the release's check;
 * a node that took a free lock reads none before). The lock written then, atomically (a temporary file renamed over the
 * lock's name), holds MERCURY_TEST_LOCK_SWAP, which the test checks is still there once the node has stopped.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { basename, dirname, join } from 'node:path';

const LOCK_FILE = 'mercury.lock';

/** The environment that loads this preload into a child, which swaps `other` in during its release. */
export function lockSwapEnv(other: string): NodeJS.ProcessEnv {
  return { MERCURY_TEST_LOCK_SWAP: other, NODE_OPTIONS: `--import=${import.meta.url}` };
}

const other = process.env.MERCURY_TEST_LOCK_SWAP;
// The test runner imports this module too (lockSwapEnv): only a process started with the variable is patched.
if (other !== undefined) {
  const lockReads = new Map<number, string>();
  let swapped = false;
  const openSync = fs.openSync;
  fs.openSync = ((path: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
    const fd = openSync(path, flags ?? 'r', mode);
    // Opened for reading only (readBounded's flags), not made: the lock's creation opens it 'wx'.
    const readOnly = typeof flags === 'number' && (flags & (fs.constants.O_WRONLY | fs.constants.O_RDWR)) === 0;
    if (readOnly && basename(String(path)).startsWith(LOCK_FILE)) lockReads.set(fd, String(path));
    return fd;
  }) as typeof fs.openSync;
  const closeSync = fs.closeSync;
  fs.closeSync = (fd: number) => {
    closeSync(fd);
    const path = lockReads.get(fd);
    lockReads.delete(fd);
    if (path === undefined || swapped) return;
    swapped = true;
    const lock = join(dirname(path), LOCK_FILE);
    fs.writeFileSync(`${lock}.swap`, other);
    fs.renameSync(`${lock}.swap`, lock);
  };
  syncBuiltinESMExports();
}
