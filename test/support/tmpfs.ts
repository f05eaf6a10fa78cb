/**
 * A small file system to fill up: a tmpfs the test mounts (tests run as root) and unmounts, for disk-full tests.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';

/** Mounts a tmpfs of `bytes` on `dir`; returns why not when this machine does not allow it. */
export function mountTmpfs(dir: string, bytes: number): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `mounting a tmpfs is not permitted here (${String((error as { stderr?: Buffer }).stderr ?? error).trim()})`;
  }
}

/** Writes zeros to `path` until the file system is full, then gives back `leaveBytes` of it (rounded to pages). */
export function fillUp(path: string, leaveBytes = 0): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  }
  try {
    if (leaveBytes > 0) ftruncateSync(fd, Math.max(0, fstatSync(fd).size - leaveBytes));
  } finally {
    closeSync(fd);
  }
}
