/**
 * The process's open-files limit and how many files it holds, as Linux shows them in /proc. Node raises the soft
 * RLIMIT_NOFILE to the hard one as it starts, so the soft value read here is the limit the node really has; a node
 * fits its caps under it at start (`fitOpenFiles`, record 88) and reports both figures as metrics.
 *
 * /proc/self/limits has a line `Max open files  <soft>  <hard>  files` ("unlimited" for no limit). Elsewhere (not
 * Linux, no /proc) nothing is known: undefined, and the caps stay as they are.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { isOutOfFiles } from '../fs/out-of-files.js';

const LIMITS_PATH = '/proc/self/limits';
const FDS_PATH = '/proc/self/fd';
const OPEN_FILES_LINE = /^Max open files\s+(\d+|unlimited)\s/m;

/** The soft open-files limit of this process; undefined when /proc does not say, or says unlimited. */
export function openFilesLimit(): number | undefined {
  let text: string;
  try {
    text = readFileSync(LIMITS_PATH, 'utf8');
  } catch {
    return undefined;
  }
  const value = OPEN_FILES_LINE.exec(text)?.[1];
  return value === undefined || value === 'unlimited' ? undefined : Number(value);
}

/**
 * Files this process holds now (sockets, LMDB, pipes, eventfds). Linux 6.2 and later give the count as the size of
 * /proc/self/fd, a stat that takes no descriptor and no time; listing the directory instead took 27 to 53 ms with 19,500
 * open (the event loop's, on every scrape), so it is the fallback for older kernels (size 0). The listing takes a
 * descriptor of its own: with none left (EMFILE) the process is at its limit, which is then the answer; -1 where /proc
 * does not say.
 */
export function openFilesHeld(limit: number | undefined): number {
  try {
    const size = statSync(FDS_PATH).size;
    if (size > 0) return size;
    // The listing's own descriptor is among the entries while it is read.
    return readdirSync(FDS_PATH).length - 1;
  } catch (error) {
    return isOutOfFiles(error) && limit !== undefined ? limit : -1;
  }
}
