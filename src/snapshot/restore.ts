/**
 * `mercury snapshot restore`: makes a data directory from a snapshot file, for a new root or a new replica (the role
 * is chosen when it is served: `--upstream` or not).
 *
 * - The directory must be empty or missing; `force` allows a non-empty one, whose Mercury files (store-initialised,
 *   data.mdb, lock.mdb, unsynced-guard.json) are replaced. Other files are left alone.
 * - The data directory lock (src/fs/dir-lock.ts) is held throughout, so a node running there is never
 *   overwritten (DATA_DIR_LOCKED).
 * - The new store is made in `DIR/restore.partial/` (inside DIR, so on its file system and a rename away), never in
 *   DIR itself: records go to the store's staging area as they are read, the way a replica receives a snapshot, and
 *   are installed in one write transaction only after the whole file has been read and its checksum matched, then the
 *   replay (if any) is applied and verified. Only then are the files renamed into DIR, data.mdb first (the one rename
 *   that replaces the data: before it DIR holds its old data, after it the new), and DIR is fsynced. The names it
 *   moves are recorded in the partial directory first (`recordRestoreMoves`, src/store/data-files.ts): a kill after
 *   the last rename leaves DIR whole, and the next open finishes the restore; a kill between two is refused. Whatever fails
 *   before (a damaged, truncated or unreadable file: SNAPSHOT_INVALID; a node that cannot replay; a full disk; a
 *   kill), DIR keeps its old data and the partial directory is removed, at the end or by the next restore. The price:
 *   for a moment the disk holds the old data and the new.
 * - Point in time (`toSeq` above the file's seq): the entries from the file's seq + 1 to `toSeq` are fetched from a
 *   node's retained log (`fetchEntries`, GET /v1/snapshot/entries), each verified with `verifyNext` against the chain
 *   from the file's head hash, and applied as a replica applies them. A file cannot go back: `toSeq` below its seq is
 *   refused (INVALID_ARGUMENT) before the directory is touched.
 *
 * The restored node keeps the file's dataset id and continues its chain: a replica restored from it is served by its
 * upstream from seq + 1; a root restored from it commits seq + 1 next (replicas that followed the old root past that
 * seq then find the chain diverged, and are resynced: see "Backup and restore" in the README).
 */
import { existsSync, lstatSync, readdirSync, renameSync, rmdirSync, rmSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { systemClock } from '../clock/index.js';
import { MercuryError } from '../errors/index.js';
import { fsyncPath } from '../fs/durable.js';
import { makeDirectories } from '../fs/make-directories.js';
import { HASH_BYTES, verifyNext, type ChainHead, type EncodedEntry } from '../log/index.js';
import { ENTRY_BYTES_MAX } from '../limits.js';
import {
  completeRestore,
  DATA_DIR_MODE,
  LOCK_FILE,
  lockDataDir,
  recordRestoreMoves,
  RESTORE_PARTIAL_DIR,
  RESTORED_FILES,
  restoreMovedIn,
  Store,
  type SnapshotRecord,
} from '../store/index.js';
import { EntryStreamDecoder, SnapshotDecoder, type SnapshotHeader } from './format.js';

/** Staged per write transaction: few enough fsyncs, bounded memory. */
const RESTORE_STAGE_BYTES = 4 * 1024 * 1024;
/** Entries applied per write transaction during a point-in-time replay. */
const RESTORE_APPLY_ENTRIES = 1_000;
/** An entry record in an entry stream: the largest body, its two hashes, and room for a signature. */
const ENTRY_STREAM_RECORD_BYTES_MAX = ENTRY_BYTES_MAX + 2 * HASH_BYTES + 1024;
/** Where the new store is made (RESTORE_PARTIAL_DIR), inside DIR: on its file system, so that moving it in is a rename. */
export { RESTORE_PARTIAL_DIR };

export interface RestoreProgress {
  readonly phase: 'snapshot' | 'entries';
  /** Snapshot: file bytes read; entries: entries applied. */
  readonly done: number;
}

export interface RestoreOptions {
  readonly dataDir: string;
  readonly force: boolean;
  /** The snapshot file's bytes, in order. */
  readonly file: AsyncIterable<Buffer>;
  /** Replay the log to this seq (point in time); default: the file's seq. */
  readonly toSeq?: number;
  /** The entry stream of seqs from..to (format.ts), from a node's retained log. Needed only with `toSeq` past the file's seq. */
  readonly fetchEntries?: (fromSeq: number, toSeq: number) => Promise<AsyncIterable<Buffer>>;
  readonly onProgress?: (progress: RestoreProgress) => void;
}

export interface RestoreResult {
  readonly header: SnapshotHeader;
  readonly seq: number;
  readonly headHash: string;
  readonly replayedEntries: number;
}

/**
 * Empty or missing. What a killed restore left does not count: its partial store, removed before the next, and the
 * data directory's lock, which the next takes over if its holder is gone (and refuses with DATA_DIR_LOCKED if not).
 */
function isEmptyDir(dir: string): boolean {
  return !existsSync(dir) || readdirSync(dir).every((name) => name === RESTORE_PARTIAL_DIR || name === LOCK_FILE);
}

export async function restoreSnapshot(options: RestoreOptions): Promise<RestoreResult> {
  const { dataDir } = options;
  if (!isEmptyDir(dataDir) && !options.force)
    throw new MercuryError(
      'DATA_DIR_NOT_EMPTY',
      restoreMovedIn(dataDir)
        ? `${dataDir} holds the store of a restore that was stopped after it had moved it in, whole (a node started there finishes that restore); pass --force to replace it`
        : `${dataDir} is not empty; restore into an empty directory, or pass --force to replace the Mercury data in it`,
    );
  const created = !existsSync(dataDir);
  makeDirectories(dataDir, DATA_DIR_MODE);
  const lock = lockDataDir(dataDir, new Date(systemClock.nowMs()).toISOString());
  const partial = join(dataDir, RESTORE_PARTIAL_DIR);
  let installed = false;
  try {
    // What a restore that was killed left behind: never installed, and nobody else's (the lock is held).
    rmSync(partial, { recursive: true, force: true });
    const result = await restoreInto(partial, options);
    moveInto(partial, dataDir);
    installed = true;
    return result;
  } finally {
    rmSync(partial, { recursive: true, force: true });
    lock.release();
    // A failed restore into a directory it made leaves none: an empty one would pass the next restore's check, but
    // a node started on it would begin a new dataset there. rmdir removes only an empty directory.
    if (created && !installed) {
      try {
        rmdirSync(dataDir);
      } catch {
        // not empty (someone wrote into it meanwhile) or gone: left as it is
      }
    }
  }
}

/** Makes the whole store in `dir`: the file staged and installed, then the replay, closed when it returns. */
async function restoreInto(dir: string, options: RestoreOptions): Promise<RestoreResult> {
  const store = Store.open({ path: dir, createDataset: false, lock: false });
  try {
    const header = await stageFile(store, options);
    store.finishSnapshotInstall(header.seq, header.headHash, header.datasetId);
    let replayed = 0;
    if (options.toSeq !== undefined && options.toSeq > header.seq) replayed = await replay(store, header, options.toSeq, options);
    await store.flushed();
    const head = store.head();
    return { header, seq: head.seq, headHash: head.hash.toString('hex'), replayedEntries: replayed };
  } finally {
    await store.close();
  }
}

/** Replaces `dataDir`'s store with the verified one in `partial`, renames only, and makes the renames durable. */
function moveInto(partial: string, dataDir: string): void {
  // Every rename must be able to succeed before the first is made: a directory named store-initialised in DIR failed
  // the last rename after data.mdb had already been replaced (audit, stop 37), against "DIR keeps its old data".
  for (const name of RESTORED_FILES) {
    const target = join(dataDir, name);
    let stats: Stats;
    try {
      stats = lstatSync(target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    if (!stats.isFile()) throw new MercuryError('DATA_DIR_INVALID', `${target} is not a regular file (a directory or a link?); move it out of the way and restore again: the directory keeps its old data`);
  }
  // The data must be on the disk before the rename that names it: a crash between the two would leave DIR an empty file.
  fsyncPath(join(partial, 'data.mdb'));
  const moving = RESTORED_FILES.filter((name) => existsSync(join(partial, name)));
  // Before the first rename: a kill after the last one then leaves a directory the next open knows to be whole.
  recordRestoreMoves(dataDir, moving);
  for (const name of moving) renameSync(join(partial, name), join(dataDir, name));
  completeRestore(dataDir);
}

async function stageFile(store: Store, options: RestoreOptions): Promise<SnapshotHeader> {
  const decoder = new SnapshotDecoder();
  store.beginSnapshotInstall();
  let page: SnapshotRecord[] = [];
  let pageBytes = 0;
  let checkedSeq = false;
  for await (const chunk of options.file) {
    for (const record of decoder.push(chunk)) {
      page.push(record);
      pageBytes += record.key.length + record.value.length;
      if (pageBytes >= RESTORE_STAGE_BYTES) {
        store.stageSnapshotPage(page);
        page = [];
        pageBytes = 0;
      }
    }
    const header = decoder.header;
    if (!checkedSeq && header !== undefined) {
      checkedSeq = true;
      // Before reading the rest: a restore that cannot reach toSeq should not first read gigabytes.
      if (options.toSeq !== undefined && options.toSeq < header.seq)
        throw new MercuryError('INVALID_ARGUMENT', `the file holds seq ${header.seq}; it cannot be restored to the earlier seq ${options.toSeq} (use an older snapshot file)`);
      if (options.toSeq !== undefined && options.toSeq > header.seq && options.fetchEntries === undefined)
        throw new MercuryError('INVALID_ARGUMENT', `the file holds seq ${header.seq}; restoring to seq ${options.toSeq} replays a node's log: give its --url`);
    }
    options.onProgress?.({ phase: 'snapshot', done: decoder.bytesRead });
  }
  const header = decoder.end();
  if (page.length > 0) store.stageSnapshotPage(page);
  return header;
}

async function replay(store: Store, header: SnapshotHeader, toSeq: number, options: RestoreOptions): Promise<number> {
  const stream = await options.fetchEntries!(header.seq + 1, toSeq);
  const decoder = new EntryStreamDecoder(ENTRY_STREAM_RECORD_BYTES_MAX);
  let head: ChainHead = store.head();
  let batch: EncodedEntry[] = [];
  let applied = 0;
  const apply = (): void => {
    store.applyVerified(batch);
    applied += batch.length;
    batch = [];
    options.onProgress?.({ phase: 'entries', done: applied });
  };
  for await (const chunk of stream) {
    for (const record of decoder.push(chunk)) {
      if (head.seq >= toSeq) throw new MercuryError('SNAPSHOT_INVALID', `the node sent entries past seq ${toSeq}`);
      let entry;
      try {
        entry = verifyNext(head, record);
      } catch (error) {
        throw new MercuryError('CHAIN_INVALID', `entry ${head.seq + 1} from the node does not continue the snapshot's chain: ${(error as Error).message}`, { cause: error });
      }
      batch.push({ entry, record });
      head = entry;
      if (batch.length >= RESTORE_APPLY_ENTRIES) apply();
    }
  }
  if (batch.length > 0) apply();
  if (head.seq !== toSeq || decoder.pendingBytes > 0)
    throw new MercuryError('SNAPSHOT_INVALID', `the node's entry stream ended at seq ${head.seq}, before seq ${toSeq} (was the log trimmed meanwhile?)`);
  return applied;
}
