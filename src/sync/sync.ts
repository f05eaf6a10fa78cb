/**
 * `mercury sync PREFIX DIR`: keeps DIR in step with the keys under PREFIX through a watch, for programs in any
 * language that read their configuration from files (what a Kubernetes ConfigMap volume or consul-template gives).
 *
 * - Each put replaces its file atomically (files.ts), each delete removes it (and the directories it empties), a
 *   range delete removes every file whose key is in the range. Keys map to paths by paths.ts; a key that cannot be
 *   a safe path is skipped and reported, never written.
 * - The watch reconnects and resumes by itself (src/client/watch.ts). When the node no longer holds the log from
 *   where DIR is, it sends the current state instead (a snapshot): every file is written, then the files whose keys
 *   are not in it are deleted.
 * - After each complete entry the seq is saved in DIR (state.ts), with the entry's hash, so a restarted sync resumes
 *   where it stopped. A saved seq past the node's head (or another dataset) empties DIR and starts again from the
 *   node's state; a saved hash that is not the node's at that seq (a root restored from an older backup, written past
 *   the seq since) gets the node's state from the watch as a snapshot (docs/decisions.md, record 45).
 * - One sync per DIR: it holds a lock file in DIR (SYNC_LOCK_FILE, src/fs/dir-lock.ts) for the whole run.
 * - `exec`: a command run by `/bin/sh -c` after changes, once they have been quiet for `execDebounceMs`; never two
 *   at a time (changes during a run schedule one more run after it). It gets MERCURY_SYNC_SEQ and MERCURY_SYNC_DIR,
 *   not sync's MERCURY_TOKEN; its output goes to stderr; a failure is reported and sync goes on.
 *
 * - DIR holds at most `filesMax` files and `bytesMax` bytes (budget.ts): a write past them stops sync with
 *   SYNC_LIMIT_EXCEEDED, as a symbolic link does, and a restart with higher limits applies it.
 *
 * - On a DIR that folds case or Unicode normalisation (probed at start, files.ts), two keys that name one file there
 *   share it: the later put takes it and the other key is reported skipped (fold.ts; docs/decisions.md, record 55).
 *
 * A first sync needs an empty (or missing) DIR: DIR belongs to sync, which deletes files whose keys are gone. A
 * symbolic link inside DIR is never followed: sync stops with SYMLINK_REFUSED naming it (files.ts), without saving the
 * entry it was applying, so that a restart after the link is removed applies that entry again.
 */
import { spawn } from 'node:child_process';
import { systemClock, type Clock, type TimerHandle } from '../clock/index.js';
import { connect, SeqWaitTimeoutError, type ClientOptions, type MercuryClient, type WatchEvent } from '../client/index.js';
import { MercuryError } from '../errors/index.js';
import { lockDirectory } from '../fs/dir-lock.js';
import { makeDirectories } from '../fs/make-directories.js';
import { SYNC_BYTES_MAX_DEFAULT, SYNC_FILES_MAX_DEFAULT, SyncBudget } from './budget.js';
import { deleteFile, listFiles, measureFiles, probeNameFolding, putFile, removeTemporaryFiles } from './files.js';
import { FoldedPaths, type NameFolding } from './fold.js';
import { keyToPath, pathToKey, SYNC_RESERVED_PREFIX } from './paths.js';
import { readSyncState, writeSyncState, type SyncState } from './state.js';

/** The lock on DIR (src/fs/dir-lock.ts), one of sync's own names: never a key's file, skipped by every walk. */
export const SYNC_LOCK_FILE = `${SYNC_RESERVED_PREFIX}-lock`;

/** A key to read when the prefix is '' (every key): any one does, only the seq of the read is wanted. */
const SOME_KEY = Buffer.from('mercury-sync');

/** Quiet time before --exec runs, by default: a burst of changes (a transaction, a deploy) runs the command once. */
export const SYNC_EXEC_DEBOUNCE_MS_DEFAULT = 200;

/** What sync did, for the CLI to print. Keys are text when they map to a path, else `key` is base64 in `keyBase64`. */
export type SyncReport =
  | { readonly type: 'start'; readonly dir: string; readonly fromSeq: number; readonly resumed: boolean; readonly folds?: string }
  | { readonly type: 'reset'; readonly reason: string; readonly deleted: number }
  | { readonly type: 'put'; readonly seq: number; readonly path: string }
  | { readonly type: 'delete'; readonly seq: number; readonly path: string }
  | { readonly type: 'skipped'; readonly seq: number; readonly keyBase64: string; readonly reason: string }
  | { readonly type: 'snapshot'; readonly seq: number; readonly files: number; readonly deleted: number }
  | { readonly type: 'exec'; readonly seq: number; readonly exitCode: number | null; readonly signal: string | null; readonly durationMs: number };

export interface SyncOptions {
  readonly urls: readonly string[];
  readonly prefix: Buffer;
  readonly dir: string;
  readonly exec?: string;
  readonly execDebounceMs?: number;
  /** How many files DIR may hold (SYNC_FILES_MAX_DEFAULT), and how many bytes, paths included (SYNC_BYTES_MAX_DEFAULT). */
  readonly filesMax?: number;
  readonly bytesMax?: number;
  /** Options of the client that watches (TLS files, ...). */
  readonly clientOptions?: ClientOptions;
  readonly clock?: Clock;
  /** Finds whether DIR folds names (probeNameFolding by default); a test injects a folding a sandbox cannot mount. */
  readonly probeNameFolding?: (dir: string) => NameFolding | undefined;
  readonly onReport: (report: SyncReport) => void;
}

/**
 * What the command's environment holds: sync's own, less its credentials (a reload script has no need of a token
 * that reads the whole prefix, and a command that logs its environment would leak it), plus the seq and the DIR.
 */
function commandEnvironment(seq: number, dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, MERCURY_SYNC_SEQ: String(seq), MERCURY_SYNC_DIR: dir };
  delete env.MERCURY_TOKEN;
  delete env.MERCURY_REPLICATION_TOKEN;
  return env;
}

/** Runs `command` after changes, debounced, one run at a time. */
class DebouncedCommand {
  private timer: TimerHandle | undefined;
  private running = false;
  private again = false;
  private seq = 0;

  constructor(
    private readonly command: string,
    private readonly dir: string,
    private readonly debounceMs: number,
    private readonly clock: Clock,
    private readonly onReport: (report: SyncReport) => void,
  ) {}

  changed(seq: number): void {
    this.seq = seq;
    if (this.running) {
      this.again = true;
      return;
    }
    this.timer?.cancel();
    this.timer = this.clock.setTimeout(() => this.run(), this.debounceMs);
  }

  cancel(): void {
    this.timer?.cancel();
  }

  private run(): void {
    this.timer = undefined;
    this.running = true;
    const seq = this.seq;
    const started = this.clock.monotonicMs();
    const child = spawn('/bin/sh', ['-c', this.command], {
      stdio: ['ignore', 2, 2],
      env: commandEnvironment(seq, this.dir),
    });
    const finish = (exitCode: number | null, signal: string | null): void => {
      this.onReport({ type: 'exec', seq, exitCode, signal, durationMs: this.clock.monotonicMs() - started });
      this.running = false;
      if (this.again) {
        this.again = false;
        this.changed(this.seq);
      }
    };
    child.once('error', () => finish(127, null));
    child.once('exit', finish);
  }
}

export class DirectorySync {
  private readonly clock: Clock;
  private readonly client: MercuryClient;
  private readonly command: DebouncedCommand | undefined;
  private state!: SyncState;
  private readonly budget: SyncBudget;
  /** The spelling of each file and directory sync holds, by folded name, when DIR folds names (fold.ts); else undefined. */
  private folded: FoldedPaths | undefined;
  /** The seq whose events are being applied: saved as done when a later seq, a progress or a snapshot end arrives. */
  private currentSeq: number | undefined;
  /** The hash of entry currentSeq, as its events carried it. */
  private currentHash: string | undefined;
  private entryDoneTimer: TimerHandle | undefined;
  private stopped = false;
  private watchIterator: AsyncIterator<WatchEvent> | undefined;

  constructor(private readonly options: SyncOptions) {
    this.clock = options.clock ?? systemClock;
    this.client = connect(options.urls, options.clientOptions);
    this.budget = new SyncBudget({ filesMax: options.filesMax ?? SYNC_FILES_MAX_DEFAULT, bytesMax: options.bytesMax ?? SYNC_BYTES_MAX_DEFAULT }, options.dir);
    this.command =
      options.exec === undefined
        ? undefined
        : new DebouncedCommand(options.exec, options.dir, options.execDebounceMs ?? SYNC_EXEC_DEBOUNCE_MS_DEFAULT, this.clock, options.onReport);
  }

  /**
   * Runs until `stop()` (resolves) or a refusal it cannot get past (rejects). Holds the lock on DIR throughout: a second
   * sync on the same DIR fails at once with DATA_DIR_LOCKED.
   */
  async run(): Promise<void> {
    const { dir } = this.options;
    makeDirectories(dir);
    const lock = lockDirectory(dir, new Date(this.clock.nowMs()).toISOString(), { file: SYNC_LOCK_FILE, what: 'sync directory' });
    try {
      await this.runLocked();
    } finally {
      lock.release();
    }
  }

  /**
   * The node's head once it reached `seq` (a read with minSeq: the node waits MIN_SEQ_WAIT_MS_DEFAULT), or `headSeq`
   * when it did not. The read is of the prefix's own key, which a token that may watch the prefix may read.
   */
  private async headReaching(seq: number, headSeq: number): Promise<number> {
    const { prefix } = this.options;
    try {
      const read = await this.client.get(prefix.length > 0 ? prefix : SOME_KEY, { minSeq: seq });
      return read?.seq ?? seq;
    } catch (error) {
      if (error instanceof SeqWaitTimeoutError) return headSeq;
      throw error;
    }
  }

  private async runLocked(): Promise<void> {
    const { dir, prefix } = this.options;
    const saved = readSyncState(dir);
    if (saved !== undefined && !saved.prefix.equals(prefix))
      throw new MercuryError('INVALID_ARGUMENT', `${dir} mirrors the prefix ${JSON.stringify(saved.prefix.toString())}; sync another prefix into another directory`);
    // Walked at every start: a link planted in DIR while sync was down is refused now, before any change is applied.
    const existing = measureFiles(dir, 'start');
    if (saved === undefined && existing.length > 0)
      throw new MercuryError('DATA_DIR_NOT_EMPTY', `${dir} holds files but no sync state; a first sync needs an empty directory (sync deletes files whose keys are gone)`);
    removeTemporaryFiles(dir);
    const folding = (this.options.probeNameFolding ?? probeNameFolding)(dir);
    this.folded = folding === undefined ? undefined : new FoldedPaths(folding);
    const status = await this.client.status();
    const datasetId = String(status.datasetId ?? '');
    if (datasetId === '') throw new MercuryError('UPSTREAM_UNAVAILABLE', 'the node has not joined a dataset yet; sync from a node that has');
    // Another dataset: its seqs mean nothing for what DIR holds. A saved seq past the node's head, still past it after
    // the usual read wait (a replica a few entries behind, or another of the --url nodes, catches up in that time):
    // DIR holds changes the node does not (a damaged state file, a node restored from an older backup, a replica far
    // behind), and a watch from there would wait for seqs that may never come, or come with other changes. Either
    // way, start again from an empty DIR.
    const headSeq = saved !== undefined && saved.datasetId === datasetId && saved.seq > status.seq ? await this.headReaching(saved.seq, status.seq) : status.seq;
    const resetReason =
      saved === undefined
        ? undefined
        : saved.datasetId !== datasetId
          ? `the node holds dataset ${datasetId}, not ${saved.datasetId}`
          : saved.seq > headSeq
            ? `the saved seq ${saved.seq} is past the node's head ${headSeq}`
            : undefined;
    if (resetReason !== undefined) {
      let deleted = 0;
      for (const { path } of existing) if (deleteFile(dir, path) !== undefined) deleted++;
      this.state = { prefix, datasetId, seq: 0, hash: undefined };
      writeSyncState(dir, this.state);
      this.options.onReport({ type: 'reset', reason: resetReason, deleted });
    } else if (saved !== undefined) this.state = saved;
    else {
      // A first sync saves its state (seq 0) before it writes any file: killed in its first snapshot or entry, it left
      // files and no state, and every restart then refused DIR as "not empty" (found by test/crash-sync.test.ts). At
      // seq 0 a restart resumes from seq 1, and the watch's snapshot end (or the log from seq 1) deletes what is stale.
      this.state = { prefix, datasetId, seq: 0, hash: undefined };
      writeSyncState(dir, this.state);
    }
    this.budget.start(resetReason === undefined ? existing : []);
    if (resetReason === undefined) for (const { path } of existing) this.folded?.add(path);
    this.options.onReport({ type: 'start', dir, fromSeq: this.state.seq + 1, resumed: saved !== undefined, ...(folding === undefined ? {} : { folds: folding.what }) });
    // The saved hash proves which chain DIR followed: a node whose entry at the saved seq is another resets DIR.
    const afterHash = this.state.seq >= 1 ? this.state.hash : undefined;
    const watch = this.client.watch({ prefix, fromSeq: this.state.seq + 1, afterHash, progress: true });
    this.watchIterator = watch;
    try {
      for await (const event of watch) {
        if (this.stopped) break;
        try {
          this.apply(event);
        } catch (error) {
          // Refused midway (a symbolic link, a failing disk): the entry must not be saved as done, so that the next
          // run applies it again once the cause is removed.
          this.entryDoneTimer?.cancel();
          this.entryDoneTimer = undefined;
          this.currentSeq = undefined;
          throw error;
        }
      }
    } finally {
      this.command?.cancel();
    }
  }

  /** Ends the watch; `run` then resolves. What was applied stays applied; the next run resumes from the saved seq. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.command?.cancel();
    this.entryDoneTimer?.cancel();
    await this.watchIterator?.return?.();
  }

  private apply(event: WatchEvent): void {
    const { dir, prefix } = this.options;
    switch (event.type) {
      case 'put':
      case 'delete':
      case 'deleteRange':
        if (this.currentSeq !== undefined && event.seq !== this.currentSeq) this.saveSeq(this.currentSeq, this.currentHash);
        this.currentSeq = event.seq;
        this.currentHash = event.hash;
        // The node sends an entry's events in one message and the client queues them together and hands them out
        // without yielding to timers, so by the time a timer runs the whole entry is applied: save its seq then,
        // rather than at the next progress message (which an idle node may send only every heartbeat, 10 s).
        this.entryDoneTimer ??= this.clock.setTimeout(() => {
          this.entryDoneTimer = undefined;
          if (this.currentSeq === undefined || this.stopped) return;
          this.saveSeq(this.currentSeq, this.currentHash);
          this.currentSeq = undefined;
        }, 0);
        break;
      default:
        break;
    }
    switch (event.type) {
      case 'put':
        this.putKey(event.seq, event.key, event.value ?? Buffer.alloc(0));
        return;
      case 'delete': {
        const mapped = keyToPath(event.key, prefix);
        if (mapped.ok) this.deletePath(event.seq, mapped.path);
        return;
      }
      case 'deleteRange':
        for (const path of listFiles(dir, 'delete a range')) {
          const key = pathToKey(path, prefix);
          if (Buffer.compare(key, event.start) >= 0 && (event.end === null || Buffer.compare(key, event.end) < 0)) this.deletePath(event.seq, path);
        }
        return;
      case 'snapshotBegin':
        this.budget.snapshotBegin();
        return;
      case 'snapshot':
        this.putKey(event.seq, event.key, event.value ?? Buffer.alloc(0));
        return;
      case 'snapshotEnd': {
        // The snapshot is the whole state: files of keys it does not hold were deleted while sync could not see it.
        let deleted = 0;
        const keep = this.budget.snapshotEnd();
        for (const path of listFiles(dir, 'delete the files a snapshot no longer holds')) if (!keep.has(path) && this.deletePath(event.seq, path)) deleted++;
        this.options.onReport({ type: 'snapshot', seq: event.seq, files: keep.size, deleted });
        this.currentSeq = undefined;
        // DIR now holds the state at the snapshot's seq, also when that is below the saved one: a reset to a chain
        // that replaced the one sync followed (a root restored from a backup, decision 40). Saving only forward would
        // keep the old chain's seq, and a restart would resume past the new chain's entries up to it.
        this.writeSeq(event.seq, event.hash);
        return;
      }
      case 'progress':
        if (this.currentSeq !== undefined && this.currentSeq <= event.seq) this.currentSeq = undefined;
        this.saveSeq(event.seq, event.hash);
        return;
    }
  }

  /** Writes a key's file, within the budget (a key of a snapshot counts in the snapshot's), or skips the key. */
  private putKey(seq: number, key: Buffer, value: Buffer): void {
    const mapped = keyToPath(key, this.options.prefix);
    if (!mapped.ok) {
      this.skipped(seq, key, mapped.reason);
      return;
    }
    const { path } = mapped;
    const folded = this.folded;
    const clash = folded?.clash(path);
    if (folded !== undefined && clash?.directory === true) {
      this.skipped(seq, key, `${this.options.dir} holds ${JSON.stringify(clash.held)} (on its path, or with other keys under it), which its file system takes for the same name: it folds ${folded.what}`);
      return;
    }
    if (folded !== undefined && clash !== undefined) {
      // Another key's file under another spelling: the later put takes it (a rename that changes only case keeps its
      // file whether the transaction puts or deletes first; docs/decisions.md, record 55). The other key's file is
      // deleted first, so the budget counts one file, and a later delete of that key, no longer holding it, passes.
      this.deletePath(seq, clash.held);
      this.skipped(seq, pathToKey(clash.held, this.options.prefix), `its file is taken by the later key ${JSON.stringify(path)}: ${this.options.dir} folds ${folded.what}, so both name one file`);
    }
    const outcome = putFile(this.options.dir, path, value, (previousSize) => this.budget.admitPut(path, value.length, previousSize));
    if (outcome.kind === 'conflict') this.skipped(seq, key, outcome.reason);
    else {
      this.folded?.add(path);
      if (outcome.kind === 'written') this.changed({ type: 'put', seq, path });
    }
  }

  private skipped(seq: number, key: Buffer, why: string): void {
    this.options.onReport({ type: 'skipped', seq, keyBase64: key.toString('base64'), reason: `key ${JSON.stringify(key.toString('utf8'))} is not synced: ${why}` });
  }

  /** Deletes a key's file if there is one, and reports it. True if it deleted. */
  private deletePath(seq: number, path: string): boolean {
    // On a DIR that folds names, a file spelled otherwise is another key's, which this path would open: not ours.
    if (this.folded !== undefined && !this.folded.holds(path)) return false;
    const size = deleteFile(this.options.dir, path);
    if (size === undefined) return false;
    this.folded?.remove(path);
    this.budget.deleted(path, size);
    this.changed({ type: 'delete', seq, path });
    return true;
  }

  private changed(report: SyncReport & { seq: number }): void {
    this.options.onReport(report);
    this.command?.changed(report.seq);
  }

  /**
   * Saves `seq` (with `hash`, the hash of its entry, when the node sent it) as done if it is past the saved one (events
   * and progress only move forward); a progress at the saved seq may bring the hash it lacked.
   */
  private saveSeq(seq: number, hash: string | undefined): void {
    if (seq > this.state.seq || (seq === this.state.seq && this.state.hash === undefined && hash !== undefined)) this.writeSeq(seq, hash);
  }

  private writeSeq(seq: number, hash: string | undefined): void {
    this.state = { ...this.state, seq, hash };
    writeSyncState(this.options.dir, this.state);
  }
}
