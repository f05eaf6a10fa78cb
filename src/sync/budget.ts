/**
 * How much `mercury sync` lets DIR hold: at most `filesMax` files and `bytesMax` bytes. The node decides what DIR
 * receives, and a node that sends too much (a hostile one, or a prefix far larger than the operator meant) would
 * otherwise fill the disk or its inodes file by file, and sync's memory with a snapshot's paths.
 *
 * - A file counts its content and its path's bytes: the path is what sync keeps in memory for each key of a snapshot,
 *   so the byte limit also bounds that memory.
 * - Each write is judged before it is made. One that would go past a limit throws SYNC_LIMIT_EXCEEDED, which stops
 *   sync as a symbolic link does: the entry is not saved as done, so a restart with a higher limit applies it.
 * - The usage is counted from the walk at start and kept by every put and delete. A DIR over twice a limit at start
 *   (the limit was lowered) is refused before anything is applied. Up to twice is what a snapshot stopped midway
 *   (Ctrl-C, a restart, a limit) leaves, its files beside the old ones, and the next start must take it: the seq is
 *   saved only at the snapshot's end, so that start is sent the snapshot again, and its end deletes the old files.
 *   Outside a snapshot, a DIR over a limit takes no write that adds to what is over it; deletes and shrinks pass.
 * - A snapshot is judged on its own: its files and bytes must fit the limits. The files of keys it does not hold stay
 *   until it ends and are deleted then, so for the time of a snapshot DIR may hold up to twice the limits, and no more
 *   (a snapshot begun again after a reconnect, over the files of the first, is held to that too).
 */
import { MercuryError } from '../errors/index.js';

/** Defaults: far above a configuration tree, far below what would fill a disk or a file system's inodes. */
export const SYNC_FILES_MAX_DEFAULT = 100_000;
export const SYNC_BYTES_MAX_DEFAULT = 1024 ** 3;

export interface SyncLimits {
  readonly filesMax: number;
  readonly bytesMax: number;
}

/** A file of DIR as a walk finds it: its `/`-separated path under DIR and its size. */
export interface SyncedFile {
  readonly path: string;
  readonly size: number;
}

function cost(path: string, size: number): number {
  return size + Buffer.byteLength(path);
}

interface Usage {
  files: number;
  bytes: number;
}

export class SyncBudget {
  private readonly usage: Usage = { files: 0, bytes: 0 };
  /** The snapshot being received: the paths of its keys, and what they take. */
  private snapshot: (Usage & { readonly paths: Set<string> }) | undefined;

  constructor(
    private readonly limits: SyncLimits,
    private readonly dir: string,
  ) {
    // The CLI checks its flags; a library caller's NaN or 0 would switch the budget off, or refuse every file.
    for (const [name, value] of Object.entries(limits))
      if (!Number.isSafeInteger(value) || value < 1) throw new MercuryError('INVALID_ARGUMENT', `sync's ${name} must be a positive integer, got ${String(value)}`);
  }

  /** Counts what DIR holds at start; refuses a DIR already over a limit. */
  start(files: readonly SyncedFile[]): void {
    this.usage.files = files.length;
    this.usage.bytes = files.reduce((sum, file) => sum + cost(file.path, file.size), 0);
    const over = this.over(this.usage, undefined, 2);
    if (over !== undefined)
      throw this.exceeded(`${this.dir} holds ${this.usage.files} files of ${this.usage.bytes} bytes (paths included), over twice ${over} (more than a snapshot stopped midway leaves); sync did not start`, undefined);
  }

  /**
   * Judges a put of `size` bytes at `path` (whose file holds `previousSize` bytes, or is missing) and counts it. Throws
   * SYNC_LIMIT_EXCEEDED, counting nothing, when DIR (or the snapshot being received) would go past a limit.
   */
  admitPut(path: string, size: number, previousSize: number | undefined): void {
    const added = cost(path, size);
    const replaced = previousSize === undefined ? 0 : cost(path, previousSize);
    const usage = { files: this.usage.files + (previousSize === undefined ? 1 : 0), bytes: this.usage.bytes + added - replaced };
    let snapshot: Usage | undefined;
    if (this.snapshot !== undefined) {
      // A key the snapshot sent twice replaces its own file; any other file it meets is an old one it now owns.
      const again = this.snapshot.paths.has(path);
      snapshot = { files: this.snapshot.files + (again ? 0 : 1), bytes: this.snapshot.bytes + added - (again ? replaced : 0) };
      const over = this.over(snapshot, this.snapshot);
      if (over !== undefined) throw this.exceeded(`the node's state under the prefix (a snapshot) goes past ${over} at ${path}; sync stopped before writing it`, path);
      const overDisk = this.over(usage, this.usage, 2);
      if (overDisk !== undefined) throw this.exceeded(`${this.dir} would go past twice ${overDisk} with ${path}, old files and a snapshot's together; sync stopped before writing it`, path);
    } else {
      const over = this.over(usage, this.usage);
      if (over !== undefined) throw this.exceeded(`${this.dir} would go past ${over} with ${path}; sync stopped before writing it`, path);
    }
    Object.assign(this.usage, usage);
    if (this.snapshot !== undefined && snapshot !== undefined) {
      Object.assign(this.snapshot, snapshot);
      this.snapshot.paths.add(path);
    }
  }

  /** Counts a deleted file. */
  deleted(path: string, size: number): void {
    this.usage.files -= 1;
    this.usage.bytes -= cost(path, size);
    if (this.snapshot?.paths.delete(path) === true) {
      this.snapshot.files -= 1;
      this.snapshot.bytes -= cost(path, size);
    }
  }

  snapshotBegin(): void {
    this.snapshot = { files: 0, bytes: 0, paths: new Set() };
  }

  /** Ends the snapshot; returns the paths of its keys (the files to keep). */
  snapshotEnd(): ReadonlySet<string> {
    const paths = this.snapshot?.paths ?? new Set<string>();
    this.snapshot = undefined;
    return paths;
  }

  /**
   * Which limit `usage` is past (`times` the limit), as the flag that sets it, or undefined. With `before` (what a write
   * would change), only a count the write increases is judged: a DIR started over a limit (see start) still takes
   * deletes and replaces that shrink a file.
   */
  private over(usage: Usage, before: Usage | undefined, times = 1): string | undefined {
    if (usage.files > this.limits.filesMax * times && (before === undefined || usage.files > before.files)) return `--max-files ${this.limits.filesMax}`;
    if (usage.bytes > this.limits.bytesMax * times && (before === undefined || usage.bytes > before.bytes)) return `--max-bytes ${this.limits.bytesMax}`;
    return undefined;
  }

  private exceeded(what: string, path: string | undefined): MercuryError {
    return new MercuryError(
      'SYNC_LIMIT_EXCEEDED',
      `${what}. Raise the limit (or delete keys under the prefix) and start sync again: it resumes from the change it stopped at`,
      { details: { filesMax: this.limits.filesMax, bytesMax: this.limits.bytesMax, ...(path === undefined ? {} : { path }) } },
    );
  }
}
