/**
 * The LMDB store: key space, log and metadata of one data directory (layout in records.ts).
 *
 * Writes happen only through `commit` (the root builds a new entry) and `applyVerified` (a replica applies entries it
 * received and verified); both apply an entry's ops with the same function, so root and replicas derive identical key
 * records.
 * Reads use LMDB read transactions and are never blocked by a writer.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../clock/index.js';
import { fileKind } from '../fs/bounded-read.js';
import { fileUnusable, isUnusable, lockDataDir, type DataDirLock } from '../fs/dir-lock.js';
import { freeBytesOrUnknown } from '../fs/free-space.js';
import { makeDirectories, missingDirectoryProblem } from '../fs/make-directories.js';
import { checkDataFiles, DATA_FILE, dataFileFound, finishMovedRestore, INITIALISED_FILE, LMDB_LOCK_FILE, markInitialised, refuseStoppedRestore } from './data-files.js';
import { dataFileDamaged, lmdbMetaProblem, lmdbTreeProblem } from './lmdb-meta.js';
import { open, type Database, type DatabaseOptions, type RootDatabase, type RootDatabaseOptionsWithPath, type Transaction } from 'lmdb';
import { LMDB_MAP_BYTES_DEFAULT, LMDB_READERS_MAX, SNAPSHOT_READERS_MAX } from '../limits.js';
import { SnapshotReaders, snapshotReadersFor, type SnapshotReservation } from './snapshot-readers.js';
import { closeUnsynced, openUnsyncedWhy } from './unsynced-guard.js';
import { allocateReaderTable } from './reader-table.js';
import { appendedFootprint, appendedGrowth, branchGrowth, DiskSpaceRefusal, freedPagesGrowth, placedGrowth, recordFootprint, SPACE_HEADROOM_BYTES, SpaceGuard } from './space-guard.js';
import { DAMAGE_REPORTS_MAX, dataCorrupted, isLmdbDamage, isRecordDamage, keyName, readersFull, storageFault, type DamageReport } from './health.js';
import { MercuryError } from '../errors/index.js';
import { GENESIS_HEAD, HASH_BYTES, authorRuns, sealEntry, verifyNext, verifySelf, type ChainHead, type EncodedEntry, type Entry, type Op } from '../log/index.js';
import {
  copyKeyRecord,
  decodeHead,
  decodeHeadSeq,
  decodeId,
  decodeKeyRecord,
  decodeLogBytes,
  decodeLogKey,
  LogKeyDamageError,
  encodeHead,
  decodeKeyRecordHeader,
  HEAD_RECORD_BYTES,
  encodeU64,
  MetaRecordDamageError,
  KEY_RECORD_HEADER_BYTES,
  SEQ_KEY_BYTES,
  KeyRecordDamageError,
  nextVersion,
  seqKey,
  STORE_FORMAT,
  visitKeyRecord,
  writeKeyRecord,
  type KeyRecord,
  type KeyRecordSink,
} from './records.js';
import { evaluateCompare, type Compare } from './compare.js';

export interface StoreOptions {
  /** Data directory; created if missing. */
  readonly path: string;
  readonly mapBytes?: number;
  /**
   * Slots of LMDB's reader table (default LMDB_READERS_MAX), shared with every process that opens the directory. Set
   * by the first process to open it; a later one takes the size the lock file already has (`lmdbReadersMax`).
   */
  readonly readersMax?: number;
  /** Long-lived snapshot readers at once (default SNAPSHOT_READERS_MAX): see snapshot-readers.ts. */
  readonly snapshotReadersMax?: number;
  /**
   * Skip fsync entirely. Only for nodes that can refetch everything (replicas, never the root). A process crash loses
   * nothing (the writes are in the page cache); a machine crash could corrupt the file, so the unsynced guard
   * (unsynced-guard.ts) discards the data at the next open after one, and the replica bootstraps again.
   */
  readonly noSync?: boolean;
  /** Open an existing data directory read-only (embedded readers). */
  readonly readOnly?: boolean;
  /**
   * Make a new dataset id if the directory has none (a root). A replica passes false: it adopts its upstream's
   * dataset id with its first snapshot, and until then `datasetId` is the empty string.
   */
  readonly createDataset?: boolean;
  /**
   * Take the data directory lock (data-dir-lock.ts); default true when writable. False only for a second writable
   * handle in a process whose first handle holds the lock (a writer thread).
   */
  readonly lock?: boolean;
  /**
   * What the space guard reads as free on the store's disk (space-guard.ts); default the file system's figure. Tests
   * give another to stand for a disk that another process fills between the guard's reading and LMDB's write.
   */
  readonly readFreeBytes?: () => number | undefined;
}

export interface RangeItem {
  readonly key: Buffer;
  readonly record: KeyRecord;
}

export interface RangePage {
  readonly items: RangeItem[];
  /** The seq the page reflects: all items come from one snapshot at this seq. */
  readonly seq: number;
  /** True when more keys follow in the range after the last item. */
  readonly more: boolean;
}

/** One key as a snapshot carries it. */
export interface SnapshotRecord {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/** A consistent view of the whole key space at one seq (one LMDB read transaction), for bootstrapping a replica. */
export interface SnapshotReader {
  readonly seq: number;
  readonly hash: Buffer;
  readonly datasetId: string;
  readonly keyCount: number;
  /** The next records in key order, about `pageBytes` of keys and values at most (at least one); [] at the end. */
  nextPage(pageBytes: number): SnapshotRecord[];
  /**
   * The same records as `nextPage`, handed to `sink` straight from LMDB's read buffer, each checked against its crc
   * first: no record objects, no copies but the sink's. Returns how many; 0 at the end.
   */
  nextRecords(pageBytes: number, sink: KeyRecordSink): number;
  /**
   * Sums the key and value bytes of the snapshot's keys (a snapshot file announces its size before its records:
   * src/snapshot/format.ts) by a walk of the same read transaction, at most `keysMax` keys per call: the total once
   * the walk is done, undefined while it goes on. The caller lets the event loop turn between calls: one walk of
   * millions of keys held it for more than a second. Checks no checksum; `nextPage` does.
   */
  sizeData(keysMax: number): number | undefined;
  /** Ends the read transaction. Must be called, or LMDB keeps the snapshot's pages from being reused. */
  close(): void;
}

/** Keys k with start <= k < end; an empty end means no upper bound. */
export interface KeyRange {
  readonly start: Buffer;
  readonly end: Buffer;
}

/** A log record as the trimmer reads it: its size and its hash, not its bytes. */
interface LogRecordEnd {
  readonly bytes: number;
  readonly hash: Buffer;
}

/** Where a whole-key-space range starts: keys are at least one byte long. */
const FIRST_KEY = Buffer.from([0]);

/** What `kvInPlace` answers for a value: the bytes themselves are in `Store.inPlaceBytes`. */
const IN_PLACE = Symbol('in place');

const EMPTY_KEY = Buffer.alloc(0);
const WHOLE_KEY_SPACE: readonly KeyRange[] = Object.freeze([{ start: EMPTY_KEY, end: EMPTY_KEY }]);

export interface LogBounds {
  /** First retained seq, or head.seq + 1 when the log is empty. */
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly bytes: number;
}

/** What the root's entry builder sees inside one write transaction. */
export interface WriteView {
  /** The seq of the entry being built. */
  readonly seq: number;
  /** Reads a key as it stands after the ops applied so far in this entry. */
  get(key: Buffer): KeyRecord | undefined;
  /** Whether a key exists, without decoding its record (so a damaged record still counts as existing). */
  has(key: Buffer): boolean;
  /**
   * Whether a transaction's compare holds against the key as it stands after the ops applied so far (`exists` as `has`
   * answers it). A key's record is read (copied and checked against its crc) at its first compare in the transaction,
   * and kept until an op writes the key: reading it for every compare made 10,000 compares of one key holding a 1 MiB
   * value (a 340 KB request) copy and checksum 10 GB, 27 s of the node's loop (audit of CPU time, 2026-12-07). Throws
   * CompareReadLimitExceeded when the records read would pass `readBytesMax` bytes in this transaction.
   */
  holds(compare: Compare, readBytesMax?: number): boolean;
  /**
   * Bytes of the records `holds` read so far in this transaction. A method, not a getter: an object literal with an
   * accessor gets a hidden class of its own at each creation (its getter is a new closure), so a view made per entry
   * gave V8 a new map per entry in old space, megamorphic calls on the view, and about 3x the full collections; node
   * CPU per wire PUT rose by about a sixth (2026-12-07, docs/performance.md "A getter on the write view").
   */
  comparedBytes(): number;
  /**
   * Applies an op now and records it in the entry, written by `author` (see WriteRequest) if known. Returns the keys
   * a `deleteRange` removed (0 for other ops); one that would remove more than `rangeKeysMax` throws
   * RangeDeleteLimitExceeded, which must abort the transaction (keys were removed before it was known).
   */
  apply(op: Op, author?: string, rangeKeysMax?: number): number;
}

/** Compares read more bytes of key records than they were allowed to (WriteView.holds' `readBytesMax`). */
export class CompareReadLimitExceeded extends Error {
  constructor(readonly bytesMax: number) {
    super(`the compares read more than ${bytesMax} bytes of key records`);
  }
}

/** A `deleteRange` met more keys than it was allowed to remove (WriteView.apply's `rangeKeysMax`). */
export class RangeDeleteLimitExceeded extends Error {
  constructor(readonly keysMax: number) {
    super(`the range holds more than ${keysMax} keys`);
  }
}

/**
 * Keys a range delete removes per walk of its cursor. lmdb-js does not support removing under a cursor that walks the
 * same tree, so the range is walked in runs: this many keys are read (copied), removed, and the next run starts where
 * the last one ended. Memory stays at one run, however large the range.
 */
const RANGE_DELETE_RUN_KEYS = 1024;

/** Modes of what a writable open creates: owner only. */
export const DATA_DIR_MODE = 0o700;
export const DATA_FILE_MODE = 0o600;
const LMDB_FILES = [DATA_FILE, LMDB_LOCK_FILE];
/** LMDB's open fails with these (lmdb-js gives the errno as a number) when the files' owner or mode, or the disk, forbid it. */
const LMDB_ACCESS_ERRNOS: ReadonlySet<unknown> = new Set([osConstants.errno.EACCES, osConstants.errno.EPERM, osConstants.errno.EROFS]);

/**
 * LMDB's open, its refusals for access named as DATA_DIR_INVALID with what to do: checkDataFiles asks first, but a mode
 * changed since would meet LMDB's bare "Permission denied: Attempting to open main database file".
 */
function openLmdb(options: RootDatabaseOptionsWithPath & { readonly path: string }): RootDatabase {
  try {
    return open(options);
  } catch (error) {
    if (!LMDB_ACCESS_ERRNOS.has((error as { code?: unknown }).code)) throw error;
    throw fileUnusable(error, options.path, { dir: options.path, done: 'opened by LMDB', needs: options.readOnly === true ? 'readable' : 'readable and writable' });
  }
}

/**
 * What a new store needs free before LMDB makes it: its lock file (a table of LMDB_READERS_MAX slots, 64 KiB), its two
 * meta pages and the first commits, with room to spare; and what the space guard keeps free under every write.
 */
const STORE_CREATE_FREE_BYTES_MIN = SPACE_HEADROOM_BYTES + 1024 * 1024;

/**
 * Throws STORAGE_FULL when the disk that holds `dir` cannot take a new store. LMDB initialising a data file on a full
 * disk killed the process with SIGSEGV after its first page write failed (ENOSPC): a first start and `snapshot
 * restore` (its new store in restore.partial) died with no word of why (audit, 2026-12-07).
 */
function refuseFullDisk(dir: string): void {
  const free = freeBytesOrUnknown(dir);
  if (free !== undefined && free < STORE_CREATE_FREE_BYTES_MIN)
    throw new MercuryError(
      'STORAGE_FULL',
      `the disk that holds ${dir} has ${free} bytes free, and a new store needs at least ${STORE_CREATE_FREE_BYTES_MIN}; free space on it, then try again`,
    );
}

const META_DATASET_ID = 'datasetId';
const META_NODE_ID = 'nodeId';
const META_HEAD = 'head';
const META_LOG_BYTES = 'logBytes';
const META_LOG_BASE = 'logBase';
const META_WRITE_PROBE = 'writeProbe';
const META_FORMAT = 'format';
/**
 * Present ("1") while everything this replica holds came through signature checks (--trust-key): a snapshot whose
 * signed head was verified, then verified entries. Absent on data applied without them, which a relay may have forged,
 * keys and root URL included: a replica started with --trust-key on such data does not trust it (src/node/node.ts).
 */
const META_VERIFIED = 'verified';
/**
 * A replica's replication stop, kept across restarts (docs/decisions.md, record 58), both removed by a snapshot install:
 * "resync" is an operator's resync request, written before it is acknowledged; "diverged" the head at which every
 * upstream had refused the chain. Without them a restart forgot a resync half done and followed from the old chain, and
 * a diverged relay served its forked chain to its children until it was refused again.
 */
const META_RESYNC = 'resync';
const META_DIVERGED = 'diverged';
/** The records of the "head" layout (records.ts), by what damage reports call them. */
const HEAD_RECORDS = [
  { key: META_HEAD, what: 'head record' },
  { key: META_LOG_BASE, what: 'log base record' },
] as const;
type HeadRecordName = (typeof HEAD_RECORDS)[number]['what'];

/**
 * Refuses a store of another format than STORE_FORMAT, or one whose format record is damaged. Format 2 writes the
 * record with the node id when the directory is made; format 1 (before the first release) had none. A missing record
 * is format 1 only in a directory never marked initialised: the marker is written by this Mercury only after the
 * format was checked, so with it the record was there and is lost, which is damage (found by review: a data file
 * with damaged bytes was reported as "holds store format 1 ... start on an empty directory and write the keys
 * again", a wrong diagnosis with a destructive remedy). A record that is not a decimal number is damage too. A reader,
 * which does not walk the trees before it opens (readers check the meta pages only), walks them here to name the
 * damage when it can.
 */
function checkFormat(path: string, format: string | undefined, readOnly: boolean): void {
  if (format === String(STORE_FORMAT)) return;
  const initialised = existsSync(join(path, INITIALISED_FILE));
  if (format === undefined ? initialised : !/^[1-9][0-9]{0,5}$/.test(format))
    throw recordDamaged(
      path,
      readOnly,
      format === undefined ? `its store format record is missing, though ${INITIALISED_FILE} says this Mercury wrote the store` : `its store format record reads ${JSON.stringify(format.slice(0, 20))}`,
    );
  throw new MercuryError(
    'DATA_DIR_INVALID',
    `${path} holds store format ${format ?? '1'}; this Mercury reads format ${STORE_FORMAT} only (key records carry checksums since format 2). A replica: move the directory aside and start empty, it refetches everything. A root: start on an empty directory and write the keys again (format 1 predates the first release).`,
  );
}

/**
 * Refuses a store whose head or log base record is damaged (records.ts, decodeHeadSeq). The head is where the next
 * entry continues the chain and the seq every read reports; the log base is what the first retained entry is checked
 * against. Found: a head record cut short made the start throw a bare RangeError.
 */
function checkHeadRecords(path: string, meta: Database<Buffer, string>, readOnly: boolean): void {
  for (const { key, what } of HEAD_RECORDS) {
    const stored = meta.get(key);
    if (stored === undefined) continue;
    try {
      decodeHeadSeq(stored);
    } catch (error) {
      if (!(error instanceof MetaRecordDamageError)) throw error;
      throw recordDamaged(path, readOnly, recordProblem(what, error), 'Mercury cannot tell where its chain ends');
    }
  }
}

/** "its <what> ...": a MetaRecordDamageError's message ("it ...") about the record named `what`. */
function recordProblem(what: string, error: MetaRecordDamageError): string {
  return `its ${what} ${error.message.replace(/^it /, '')}`;
}

/** What damage reports call the id records, and what a start cannot do without them. */
const ID_RECORDS = {
  [META_DATASET_ID]: { what: 'dataset id record', consequence: 'Mercury cannot tell which dataset it holds' },
  [META_NODE_ID]: { what: 'node id record', consequence: 'Mercury cannot tell which node this is' },
} as const;

/**
 * The "nodeId" or "datasetId" record as text, or undefined when there is none; refuses a damaged one (records.ts,
 * decodeId). Both are read at open only: the node holds them in memory while it serves.
 */
function readId(path: string, meta: Database<Buffer, string>, key: keyof typeof ID_RECORDS, readOnly: boolean): string | undefined {
  const stored = meta.get(key);
  if (stored === undefined) return undefined;
  try {
    return decodeId(stored);
  } catch (error) {
    if (!(error instanceof MetaRecordDamageError)) throw error;
    const { what, consequence } = ID_RECORDS[key];
    throw recordDamaged(path, readOnly, recordProblem(what, error), consequence);
  }
}

/** The hash of a log record: its last HASH_BYTES (log/entry.ts); a copy, off LMDB's reused buffer. */
function entryRecordHash(record: Uint8Array): Buffer {
  return Buffer.from(record.subarray(Math.max(0, record.length - HASH_BYTES)));
}

/**
 * Refuses a writable store whose head record (sound in size, checkHeadRecords) and log disagree on the last entry. They
 * are written in one transaction, and the head entry stays in the log (trimLog keeps it) unless a snapshot install
 * emptied the log, which sets the log base to the head. A flipped bit within the record reads as another seq or hash:
 * found, a root started on one and chained its next entries to an entry it did not hold, at a seq it did not reach,
 * which broke its own log for good (every read across it DATA_CORRUPTED, every streaming child refusing it). A reader
 * does not check: it writes nothing, and `verify` reports the disagreement with the rest.
 */
function checkHeadAgainstLog(path: string, meta: Database<Buffer, string>, log: Database<Buffer, Buffer>): void {
  const stored = meta.get(META_HEAD);
  if (stored === undefined) return;
  const head = decodeHead(stored);
  let last: ChainHead | undefined;
  let lastNamed = 'the log is empty, and there is no log base';
  for (const { key, value } of log.getRange({ reverse: true, limit: 1 })) {
    last = { seq: startLogKey(path, key), hash: entryRecordHash(value) };
    lastNamed = `the last log entry is ${last.seq} (hash ${last.hash.toString('hex')})`;
  }
  // The first key too: the log's bounds start there (logBounds), read by status and the trimmer from the start on.
  for (const key of log.getKeys({ limit: 1 })) startLogKey(path, key);
  const base = meta.get(META_LOG_BASE);
  if (last === undefined && base !== undefined) {
    last = decodeHead(base);
    lastNamed = `the log is empty after the log base, entry ${last.seq} (hash ${last.hash.toString('hex')})`;
  }
  if (last !== undefined && last.seq === head.seq && last.hash.equals(head.hash)) return;
  throw recordDamaged(path, false, `its head record names entry ${head.seq} (hash ${head.hash.toString('hex')}), but ${lastNamed}`, 'Mercury cannot tell where its chain ends');
}

/** A log key read by a start: a damaged one refuses it, naming the key. */
function startLogKey(path: string, key: Buffer): number {
  try {
    return decodeLogKey(key);
  } catch (error) {
    if (!(error instanceof LogKeyDamageError)) throw error;
    throw recordDamaged(path, false, `its log holds key ${error.what.slice('log key '.length)}, ${error.message.slice('it is '.length)}`, 'Mercury cannot tell where its chain ends');
  }
}

/** Why a data directory could not be made, by errno, for the ones that mean its path is wrong. */
const DATA_DIR_PATH_PROBLEMS: Readonly<Record<string, string>> = {
  ENOTDIR: 'a part of its path is not a directory',
};

/**
 * Makes the data directory and its parents, 0700: the key space and the log are nobody else's to read (mkdir leaves an
 * existing directory's mode alone). What stands in the way is named: the system's error alone was printed, exit 1 and
 * no code ("EEXIST: file already exists, mkdir" for a --data-dir naming a file; audit, 2026-12-07).
 */
function makeDataDir(path: string): void {
  try {
    makeDirectories(path, DATA_DIR_MODE);
    return;
  } catch (error) {
    if (isUnusable(error)) throw fileUnusable(error, path, { dir: path, done: 'made' });
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const give = 'give the path of a data directory, or of one to be made';
    if (code === 'EEXIST') {
      // Followed: a link to a file is refused as the file is; one to nothing says so.
      const stat = statSync(path, { throwIfNoEntry: false });
      const kind = stat === undefined ? 'a link to nothing' : stat.isFile() ? 'a regular file' : fileKind(stat);
      throw new MercuryError('DATA_DIR_INVALID', `--data-dir ${path} is ${kind}, not a directory; ${give}`, { cause: error });
    }
    const problem = code === 'ENOENT' ? missingDirectoryProblem(error as NodeJS.ErrnoException) : DATA_DIR_PATH_PROBLEMS[code];
    if (problem !== undefined) throw new MercuryError('DATA_DIR_INVALID', `--data-dir ${path} cannot be made (${(error as Error).message}): ${problem}; ${give}`, { cause: error });
    throw error;
  }
}

/**
 * The DATA_DIR_INVALID for a damaged record of the store. A reader, which does not walk the trees before it opens
 * (readers check the meta pages only), walks them here to name damaged pages when there are some: they would explain
 * the record, and LMDB's consequence then replaces `consequence`.
 */
function recordDamaged(path: string, readOnly: boolean, problem: string, consequence?: string): MercuryError {
  const dataFile = join(path, DATA_FILE);
  const treeProblem = readOnly ? lmdbTreeProblem(dataFile) : undefined;
  return treeProblem === undefined ? dataFileDamaged(dataFile, problem, consequence) : dataFileDamaged(dataFile, treeProblem);
}

export class Store {
  readonly path: string;
  readonly nodeId: string;
  private currentDatasetId: string;
  private readonly env: RootDatabase;
  /**
   * Long-lived snapshot readers held now, of `snapshotReadersMax`, or fewer when LMDB's reader table in force is
   * smaller than configured (snapshot-readers.ts).
   */
  readonly snapshotReaders: SnapshotReaders;
  /** Slots of LMDB's reader table in force: the size the first process to open the directory gave it (see open). */
  readonly lmdbReadersMax: number;
  /** Slots of LMDB's reader table this store asked for (`readersMax`). */
  readonly lmdbReadersMaxConfigured: number;
  private readonly kv: Database<Buffer, Buffer>;
  /** `kv` read without copies (see IN_PLACE): for nextRecords only. */
  private readonly kvInPlace: Database<typeof IN_PLACE, Buffer>;
  /** What IN_PLACE's decoder was last given: the record's bytes in LMDB's read buffer, and its length. */
  private inPlaceBytes: Buffer = Buffer.alloc(0);
  private inPlaceSize = 0;
  private readonly log: Database<Buffer, Buffer>;
  /** `log`, each record read as its size only (see readLogBytes). */
  private readonly logRecordSizes: Database<number, Buffer>;
  /** `log`, each record read as its size and hash only (see trimLog). */
  private readonly logRecordEnds: Database<LogRecordEnd, Buffer>;
  private readonly meta: Database<Buffer, string>;
  /** Snapshot records received so far, kept apart until the whole snapshot is verified (see beginSnapshotInstall). */
  private readonly staging: Database<Buffer, Buffer>;
  /**
   * Where the snapshot being installed goes: `staging`, or `kv` itself when the store is at seq 0 (see
   * beginSnapshotInstall); undefined outside an install.
   */
  private installTarget: Database<Buffer, Buffer> | undefined;
  private cachedHead: ChainHead;
  private cachedLogBytes: number;
  private closed = false;
  private readonly unsynced: boolean;
  private readonly lock: DataDirLock | undefined;
  private readonly damageReports: DamageReport[] = [];
  private damageCount = 0;
  /** Where applyOp and stageSnapshotPage encode key records before LMDB copies them (recordScratch). */
  private scratch = Buffer.allocUnsafe(64 * 1024);
  private readonly damageListeners: ((report: DamageReport) => void)[] = [];
  /** The last write failure that was the storage's (disk full, I/O error), until a write succeeds again. */
  private currentWriteFault: MercuryError | undefined;
  /** Keeps write transactions off a full disk (space-guard.ts); none for a read-only store. */
  private readonly space: SpaceGuard | undefined;
  /** LMDB's page size for this environment, for the guard's estimates. */
  private readonly pageBytes: number;
  /** `kv`'s tree figures as last read for the guard, and when (kvTree). */
  private kvTreeReading: { readonly tree: TreeFigures; readonly atMs: number } | undefined;
  /** What the write transactions since that reading asked of the guard (reserveSpace). */
  private growthSinceKvTree = 0;
  /** While the root's commit is under way on lmdb-js's write thread (commitAsync): resolves when it has settled. */
  private asyncCommit: Promise<void> | undefined;
  /** Whether anything read through this handle since the last commit began: a commit that blocks this thread would hold it up. */
  private readSinceCommit = false;
  private readonly writeFaultListeners: ((fault: MercuryError | undefined) => void)[] = [];
  /** Why the unsynced guard discarded the data at open (src/store/unsynced-guard.ts), when it did. */
  readonly discardReason: string | undefined;
  /** How many records of a snapshot install that a stop interrupted were dropped at open (unverified: never live). */
  readonly discardedInstallRecords: number;
  /**
   * Whether LMDB's reader table has its disk blocks (reader-table.ts): false when a writable open could not give them,
   * so that a reader whose slot falls in a hole dies of SIGBUS if the disk fills. True for a read-only open.
   */
  readonly readerTableAllocated: boolean;
  /**
   * What was wrong with the "logBytes" record at open, when it was damaged and the log's size was summed again instead
   * (readLogBytes; a writable open wrote the sum back); undefined when it was sound.
   */
  readonly summedLogBytes: string | undefined;
  /** Set by a trim that found the log size too low and counted it again; taken by takeLogBytesCorrection. */
  private logBytesCorrection: string | undefined;

  private constructor(options: StoreOptions, lock: DataDirLock | undefined) {
    this.path = options.path;
    this.lock = lock;
    this.unsynced = options.noSync === true && options.readOnly !== true;
    // First: LMDB crashes on a data or lock file that is not a file, and the unsynced guard cannot remove a directory.
    checkDataFiles(options.path, options.readOnly === true);
    this.discardReason = this.unsynced ? openUnsyncedWhy(options.path) : undefined;
    const created = !options.readOnly && !existsSync(join(options.path, DATA_FILE));
    // LMDB trusts its meta pages and its B-trees: damaged meta pages crash the process (SIGSEGV) inside open, a damaged
    // tree on the first read that meets it (SIGBUS, SIGABRT), before anything can be said. A writer walks every tree
    // first: it holds the directory's lock, so nothing changes the file under the walk. Readers (openLocal, verify
    // beside a running node) check the meta pages only: a writer may reuse pages while they walk.
    const dataFile = join(options.path, DATA_FILE);
    this.lmdbReadersMaxConfigured = options.readersMax ?? LMDB_READERS_MAX;
    // An empty data file is one LMDB has yet to initialise: a writer does that, but a reader cannot, and LMDB reading
    // it read-only dies of SIGSEGV. A reader meets one when it opens a node's directory in the node's first instants.
    if (options.readOnly === true && existsSync(dataFile) && statSync(dataFile).size === 0)
      throw new MercuryError(
        'DATA_DIR_INVALID',
        `${dataFile} is empty: its node has not written its first pages yet; open it again once the node has started (or, if no node is starting, the file was cut to nothing: see "Damaged data" in the README)`,
      );
    if (!options.readOnly && (created || statSync(dataFile).size === 0)) refuseFullDisk(options.path);
    const metaProblem = options.readOnly === true ? lmdbMetaProblem(dataFile) : lmdbTreeProblem(dataFile);
    if (metaProblem !== undefined) throw dataFileDamaged(dataFile, metaProblem);
    this.env = openLmdb({
      path: options.path,
      mapSize: options.mapBytes ?? LMDB_MAP_BYTES_DEFAULT,
      // Explicit: lmdb-js's default table of 126 readers was filled by slow snapshot clients (snapshot-readers.ts).
      maxReaders: this.lmdbReadersMaxConfigured,
      maxDbs: 8,
      noSync: options.noSync ?? false,
      // The root's commits run on lmdb-js's write thread (commitAsync). With overlappingSync (lmdb-js's default) that
      // thread commits without a sync and syncs later; off, its commit is LMDB's own durable one (pages, fdatasync,
      // meta page), done before the commit's promise resolves (docs/decisions.md, record 37).
      overlappingSync: false,
      // lmdb-js would otherwise open a batch of its own each event turn that has async writes, with a promise nothing
      // awaits: a failed commit (a full disk) rejects it too, unhandled, and that ends the process.
      eventTurnBatching: false,
      // lmdb-js takes a path with a dot in its last part ("/tmp/tmp.x1") for a file, not a directory, unless told.
      noSubdir: false,
      readOnly: options.readOnly ?? false,
    });
    // LMDB sizes its reader table when it makes the lock file, and grows it later only for a process that has the
    // directory to itself: a process that opened it first with fewer slots (lmdb-js's default 126, a backup tool's 16)
    // and still holds it open gave this node its table, whatever it asked for. The snapshot readers, held for minutes,
    // then get their usual share of the table in force, so that point reads still find slots.
    const stats = this.env.getStats() as { maxReaders: number; pageSize: number };
    this.lmdbReadersMax = stats.maxReaders;
    this.pageBytes = stats.pageSize;
    this.space = options.readOnly === true ? undefined : new SpaceGuard(options.readFreeBytes ?? (() => freeBytesOrUnknown(options.path)));
    this.readerTableAllocated = options.readOnly === true || allocateReaderTable(join(options.path, LMDB_LOCK_FILE));
    this.snapshotReaders = new SnapshotReaders(snapshotReadersFor(options.snapshotReadersMax ?? SNAPSHOT_READERS_MAX, this.lmdbReadersMax));
    // LMDB creates its files 0644 (less the umask); the data is nobody else's to read.
    if (created) for (const name of LMDB_FILES) chmodSync(join(options.path, name), DATA_FILE_MODE);
    this.kv = this.env.openDB<Buffer, Buffer>({ name: 'kv', encoding: 'binary', keyEncoding: 'binary' });
    // lmdb-js hands a custom decoder its reused read buffer (or a view of the map) instead of a copy of the value: the
    // decoder keeps where the bytes are, and the reader uses them before the iterator moves on.
    const decodeInPlace = (bytes: Uint8Array, size: number): typeof IN_PLACE => {
      // A value on overflow pages may come as a plain Uint8Array over the map (see toBuffer).
      this.inPlaceBytes = toBuffer(bytes);
      this.inPlaceSize = size;
      return IN_PLACE;
    };
    // `encoder` is a database option in lmdb-js's README; its types declare it on the root's options only.
    const inPlaceOptions: DatabaseOptions & { name: string; encoder: object } = {
      name: 'kv',
      keyEncoding: 'binary',
      encoder: { encode: () => assert.fail('kvInPlace is read-only'), decode: decodeInPlace },
    };
    this.kvInPlace = this.env.openDB<typeof IN_PLACE, Buffer>(inPlaceOptions);
    this.log = this.env.openDB<Buffer, Buffer>({ name: 'log', encoding: 'binary', keyEncoding: 'binary' });
    const logSizeOptions: DatabaseOptions & { name: string; encoder: object } = {
      name: 'log',
      keyEncoding: 'binary',
      encoder: { encode: () => assert.fail('logRecordSizes is read-only'), decode: (_bytes: Uint8Array, size: number) => size },
    };
    this.logRecordSizes = this.env.openDB<number, Buffer>(logSizeOptions);
    // The hash is the record's last HASH_BYTES (log/entry.ts), copied off the reused buffer; the rest is never read.
    const decodeLogRecordEnd = (bytes: Uint8Array, size: number): LogRecordEnd => ({ bytes: size, hash: Buffer.from(bytes.subarray(Math.max(0, size - HASH_BYTES), size)) });
    const logEndOptions: DatabaseOptions & { name: string; encoder: object } = {
      name: 'log',
      keyEncoding: 'binary',
      encoder: { encode: () => assert.fail('logRecordEnds is read-only'), decode: decodeLogRecordEnd },
    };
    this.logRecordEnds = this.env.openDB<LogRecordEnd, Buffer>(logEndOptions);
    this.meta = this.env.openDB<Buffer, string>({ name: 'meta', encoding: 'binary' });
    this.staging = this.env.openDB<Buffer, Buffer>({ name: 'staging', encoding: 'binary', keyEncoding: 'binary' });
    // A reader cannot create a database: lmdb-js gives undefined for one the main tree does not name (a damaged main
    // tree, or a node in its first instants), and every read would then fail with a TypeError.
    for (const [name, db] of [['kv', this.kv], ['log', this.log], ['meta', this.meta]] as const)
      if (db === undefined) throw dataFileDamaged(dataFile, `its main tree names no database "${name}"`, 'a reader cannot read it (if its node is starting for the first time, open it again once the node has started)');
    let discardedInstallRecords = 0;
    if (!options.readOnly) {
      this.writeSync(() => {
        // The space guard is asked only before something is written (most starts write nothing), so that a node whose
        // disk is full still starts and serves reads.
        //
        // A first snapshot goes straight into `kv` at seq 0 (beginSnapshotInstall), and only its last transaction
        // moves the head. A stop before that leaves records that no digest or signature has checked; readers ignore
        // them at seq 0, but the first entry committed (this directory served as a root) or applied would make them
        // live. At seq 0 the key space is empty, so whatever `kv` holds is such a leftover. A later install's
        // `staging` is as unverified, and would otherwise hold its pages until the next install.
        const leftovers = [...(this.meta.get(META_HEAD) === undefined ? [this.kv] : []), this.staging];
        for (const db of leftovers) {
          const count = db.getKeysCount();
          if (count === 0) continue;
          discardedInstallRecords += count;
          this.reserveSpace(this.smallWriteGrowth() + freedPagesGrowth(this.pagesOf(db), this.pageBytes));
          this.removeAll(db);
        }
        if (this.meta.get(META_DATASET_ID) === undefined && options.createDataset !== false) {
          this.reserveSpace(this.smallWriteGrowth());
          this.meta.putSync(META_DATASET_ID, Buffer.from(randomUUID()));
        }
        if (this.meta.get(META_NODE_ID) === undefined) {
          this.reserveSpace(this.smallWriteGrowth());
          this.meta.putSync(META_NODE_ID, Buffer.from(randomUUID()));
          this.meta.putSync(META_FORMAT, Buffer.from(String(STORE_FORMAT)));
        }
      }, undefined);
    }
    // Before the marker: a directory this Mercury refuses for its format is never marked, so that a marked directory
    // without a format record is known to be damaged (see checkFormat).
    let datasetId: string | undefined;
    let nodeId: string | undefined;
    try {
      datasetId = readId(options.path, this.meta, META_DATASET_ID, options.readOnly === true);
      nodeId = readId(options.path, this.meta, META_NODE_ID, options.readOnly === true);
      // A replica that has not joined yet (no snapshot installed: it never reached its upstream, or stopped mid-join)
      // has a node id and no dataset; a read-only open (verify, openLocal) sees it as it is: empty, at seq 0.
      if (nodeId === undefined || (datasetId === undefined && options.createDataset !== false && options.readOnly !== true))
        throw new Error(`${options.path} is not a Mercury data directory`);
      checkFormat(options.path, this.meta.get(META_FORMAT)?.toString(), options.readOnly === true);
      checkHeadRecords(options.path, this.meta, options.readOnly === true);
      if (options.readOnly !== true) checkHeadAgainstLog(options.path, this.meta, this.log);
    } catch (error) {
      // lmdb-js keeps one environment per path in the process: a refused one left open would be the next open's.
      void this.env.close();
      throw error;
    }
    // After that commit: from now on an empty data file is damage, not a new store (data-files.ts).
    if (!options.readOnly) markInitialised(options.path, options.noSync !== true);
    this.discardedInstallRecords = discardedInstallRecords;
    this.currentDatasetId = datasetId ?? '';
    this.nodeId = nodeId;
    this.cachedHead = this.readHead();
    const logBytes = this.readLogBytes();
    this.cachedLogBytes = logBytes.bytes;
    this.summedLogBytes = logBytes.damage;
    // Written back, so that readers (verify, an embedded reader) and the next start read a sound record. A reader
    // writes nothing: it sums the log again at each open until its node has started once.
    if (logBytes.damage !== undefined && !options.readOnly) this.writeSync(() => this.meta.putSync(META_LOG_BYTES, encodeU64(logBytes.bytes)), this.smallWriteGrowth());
  }

  /**
   * The "logBytes" record, or, when it is damaged (or lost, with entries in the log), the sum of the log's record
   * sizes and what was wrong with the record. Summed rather than refused: the record is only a cache of that sum
   * (written with each log record, for retention by bytes and status), derived wholly from the log, which is checked
   * on its own; refusing would send the operator to a backup or a resync for a figure the node can count. Counting
   * is cheap enough for a damage that is rare: one walk of the log's leaf pages, values read for their size only (on
   * overflow pages, not read at all), bounded by the log's retention, where a writable open already reads every page
   * of the file (lmdbTreeProblem).
   */
  private readLogBytes(): { bytes: number; damage: string | undefined } {
    const stored = this.meta.get(META_LOG_BYTES);
    let damage: string;
    if (stored !== undefined) {
      try {
        return { bytes: decodeLogBytes(stored), damage: undefined };
      } catch (error) {
        if (!(error instanceof MetaRecordDamageError)) throw error;
        damage = recordProblem('log size record', error);
      }
    } else {
      // Every log record is written with the record in the same transaction: none is a store whose log is empty.
      if (Array.from(this.log.getKeys({ limit: 1 })).length === 0) return { bytes: 0, damage: undefined };
      damage = 'its log size record is missing, though the log holds entries';
    }
    return { bytes: this.sumLogBytes(), damage };
  }

  /** The sum of the log's record sizes (what the "logBytes" record caches): one walk of the log's leaf pages. */
  private sumLogBytes(): number {
    let bytes = 0;
    for (const { value } of this.logRecordSizes.getRange({})) bytes += value;
    return bytes;
  }

  /**
   * What the trimmer found wrong with the log size it was given and corrected (see trimLog), once: the node says so.
   */
  takeLogBytesCorrection(): string | undefined {
    const correction = this.logBytesCorrection;
    this.logBytesCorrection = undefined;
    return correction;
  }

  static open(options: StoreOptions): Store {
    if (!options.readOnly) makeDataDir(options.path);
    // A reader opens what a node wrote, and never makes anything: LMDB would create a missing directory (and say only
    // "No such file or directory" of the missing data file). A restore stopped midway is named as such first.
    else refuseStoppedRestore(options.path);
    if (options.readOnly && !dataFileFound(options.path))
      throw new MercuryError(
        'DATA_DIR_INVALID',
        existsSync(options.path)
          ? `${options.path} holds no ${DATA_FILE}: it is not a Mercury data directory, or its node has not started yet; give the --data-dir of a node`
          : `${options.path} does not exist; give the --data-dir of a node`,
      );
    // Before anything touches the files: the unsynced guard may delete them.
    const lock = !options.readOnly && options.lock !== false ? lockDataDir(options.path, new Date(systemClock.nowMs()).toISOString()) : undefined;
    try {
      // A restore killed after its last move left DIR whole: finished under the lock, before anything reads the files.
      if (lock !== undefined) finishMovedRestore(options.path);
      return new Store(options, lock);
    } catch (error) {
      lock?.release();
      throw error;
    }
  }

  /** Whether the unsynced guard discarded the data at open (the machine went down, or its state file was damaged). */
  get discardedAfterCrash(): boolean {
    return this.discardReason !== undefined;
  }

  /** Random id made when the root's data directory was created; '' on a replica that has not joined a dataset yet. */
  get datasetId(): string {
    return this.currentDatasetId;
  }

  /** The last applied entry (as of the last write through this handle, or the last `refresh`). */
  head(): ChainHead {
    return this.cachedHead;
  }

  /**
   * Catches up with writes made through another handle (another process, such as the node an embedded reader follows): renews this thread's
   * LMDB read snapshot (lmdb-js renews it by itself only after its own writes) and re-reads head and log size.
   */
  refresh(): void {
    this.env.resetReadTxn();
    this.cachedHead = this.readHead();
    this.cachedLogBytes = this.readLogBytes().bytes;
  }

  private readHead(): ChainHead {
    const stored = this.meta.get(META_HEAD);
    return stored === undefined ? GENESIS_HEAD : this.headRecord(stored, 'head record');
  }

  /**
   * A "head" or "logBase" record read while serving, checked (records.ts, decodeHeadSeq): a damaged one fails the
   * reader with DATA_CORRUPTED and is recorded, as a damaged key record does. The start refuses both (checkHeadRecords);
   * this is for damage that arrives while the node runs.
   */
  private headRecord(stored: Buffer, what: HeadRecordName): ChainHead {
    try {
      return decodeHead(stored);
    } catch (error) {
      throw this.headDamage(what, error);
    }
  }

  /** `headRecord`'s seq only, from LMDB's reused read buffer (`getBinaryFast`): what each point read reports. */
  private headSeq(stored: Uint8Array): number {
    try {
      return decodeHeadSeq(toBuffer(stored), stored.length);
    } catch (error) {
      throw this.headDamage('head record', error);
    }
  }

  private headDamage(what: HeadRecordName, error: unknown): unknown {
    return error instanceof MetaRecordDamageError ? this.damaged(what, error) : error;
  }

  /**
   * Renews this thread's LMDB read snapshot, nothing else (`refresh` also re-reads head and log size): the embedded
   * reader's renewal before a read, so that the read sees every entry committed before it began.
   */
  renewSnapshot(): void {
    this.env.resetReadTxn();
  }

  /** The seq of the last entry applied in this thread's current read snapshot. */
  snapshotSeq(): number {
    const head = this.meta.getBinaryFast(META_HEAD);
    return head === undefined ? 0 : this.headSeq(head);
  }

  /**
   * A key in this thread's current read snapshot, its crc checked, its value copied out of LMDB's read buffer. With
   * `snapshotSeq` in the same synchronous run it reads one snapshot: lmdb-js renews its read transaction only between
   * event-loop turns, after a write through this handle, or on `renewSnapshot`. Only `get` calls it: at seq 0 it
   * answers "no key" without reading.
   */
  private readKey(key: Buffer): KeyRecord | undefined {
    const stored = this.lmdbRead(`the pages that hold key ${keyName(key)}`, () => this.kv.getBinaryFast(key));
    return stored === undefined ? undefined : this.keyRecord(key, stored, true);
  }

  /**
   * A key as of the latest committed entry, with the seq that read reflects (both from one snapshot, see readKey). At
   * seq 0 the key space is empty, whatever `kv` holds: a first snapshot is installed into it (beginSnapshotInstall).
   */
  get(key: Buffer): { record: KeyRecord | undefined; seq: number } {
    this.readSinceCommit = true;
    const seq = this.snapshotSeq();
    return { record: seq === 0 ? undefined : this.readKey(key), seq };
  }

  /**
   * `get` without a copy, for a reader that encodes the record at once (the wire port's VALUE frame): when the key
   * exists, `sink.add` sees its record in LMDB's read buffer, checked against its crc, valid only during the call.
   * Returns the seq the read reflects (the same snapshot, as for get; at seq 0 nothing exists).
   */
  visit(key: Buffer, sink: KeyRecordSink): number {
    this.readSinceCommit = true;
    const seq = this.snapshotSeq();
    if (seq === 0) return 0;
    const stored = this.lmdbRead(`the pages that hold key ${keyName(key)}`, () => this.kv.getBinaryFast(key));
    if (stored === undefined) return seq;
    try {
      visitKeyRecord(key, toBuffer(stored), stored.length, sink);
    } catch (error) {
      throw this.keyDamage(key, error);
    }
    return seq;
  }

  /**
   * Reads keys in [start, end) (empty end: unbounded), after `after` when given (pagination cursor), at most `limit`
   * items and, beyond the first item, at most `bytesMax` bytes of keys and values, all from one snapshot. `more` says
   * whether items remain after the page, whichever limit ended it.
   */
  range(start: Buffer, end: Buffer, limit: number, after?: Buffer, bytesMax = Infinity): RangePage {
    this.readSinceCommit = true;
    assert.ok(limit >= 1);
    const txn = this.env.useReadTransaction();
    try {
      const head = this.meta.get(META_HEAD, { transaction: txn });
      // At seq 0 the key space is empty (see get).
      if (head === undefined) return { items: [], seq: 0, more: false };
      const seq = this.headSeq(head);
      const from = after !== undefined && Buffer.compare(after, start) >= 0 ? after : start;
      const items: RangeItem[] = [];
      let more = false;
      let bytes = 0;
      for (const { key, value } of this.kv.getRange({
        start: from,
        end: end.length === 0 ? undefined : end,
        exclusiveStart: from === after,
        limit: limit + 1,
        transaction: txn,
      })) {
        // The stored record's length stands for the value's: read no value that the page would not return.
        const itemBytes = key.length + value.length;
        if (items.length === limit || (items.length > 0 && bytes + itemBytes > bytesMax)) {
          more = true;
          break;
        }
        bytes += itemBytes;
        const copy = Buffer.from(key);
        items.push({ key: copy, record: this.keyRecord(copy, value) });
      }
      return { items, seq, more };
    } catch (error) {
      throw this.lmdbDamage(`the pages of keys from ${keyName(start)}`, error);
    } finally {
      txn.done();
    }
  }

  /** Number of keys and on-disk sizes, for status. */
  sizes(): { keys: number; logEntries: number; logBytes: number; dataFileBytes: number } {
    const bounds = this.logBounds();
    return { ...this.dataSizes(), logEntries: bounds.lastSeq - bounds.firstSeq + 1, logBytes: bounds.bytes };
  }

  /** The keys held and the data file's size: `sizes` without the log, which a damaged log key keeps from being read. */
  dataSizes(): { keys: number; dataFileBytes: number } {
    const stats = this.env.getStats() as { pageSize?: number; lastPageNumber?: number };
    const kvStats = this.kv.getStats() as { entryCount?: number };
    const head = this.meta.getBinaryFast(META_HEAD);
    let empty: boolean;
    try {
      empty = head === undefined || decodeHeadSeq(toBuffer(head), head.length) === 0;
    } catch (error) {
      // Status answers on a damaged head record, counting what `kv` holds: it is where the damage is shown (recorded
      // by the reads that met it), and a poll must not log and count it again each time.
      if (!(error instanceof MetaRecordDamageError)) throw error;
      empty = false;
    }
    return {
      // At seq 0 the key space is empty (see get).
      keys: empty ? 0 : (kvStats.entryCount ?? 0),
      dataFileBytes: (stats.pageSize ?? 0) * ((stats.lastPageNumber ?? 0) + 1),
    };
  }

  logBounds(): LogBounds {
    const head = this.cachedHead;
    let firstSeq = head.seq + 1;
    for (const key of this.log.getKeys({ limit: 1 })) firstSeq = this.logSeq(key);
    return { firstSeq, lastSeq: head.seq, bytes: this.cachedLogBytes };
  }

  /** The seq a log key holds; a damaged key fails the reader with DATA_CORRUPTED naming it, and is recorded. */
  private logSeq(key: Buffer): number {
    try {
      return decodeLogKey(key);
    } catch (error) {
      if (!(error instanceof LogKeyDamageError)) throw error;
      throw this.damaged(error.what, error);
    }
  }

  /** The entry before the first retained one: the chain link that the first retained entry must verify against. */
  private logBase(): ChainHead {
    const stored = this.meta.get(META_LOG_BASE);
    return stored === undefined ? GENESIS_HEAD : this.headRecord(stored, 'log base record');
  }

  /**
   * Reads up to `limit` log records from `fromSeq`, verifying each against its predecessor (or, for the first
   * retained entry, against the stored log base), and stops once `bytesMax` of records are read (at least one).
   * Returns fewer when the log ends; none if fromSeq is not retained. Never beyond `head()`: on the root, the entry
   * that the write thread is committing can be in LMDB before it is durable (commitAsync), and what is read here
   * goes to children and watchers.
   */
  readLog(fromSeq: number, limit: number, bytesMax = Infinity): EncodedEntry[] {
    this.readSinceCommit = true;
    let bytes = 0;
    const result: EncodedEntry[] = [];
    const txn = this.env.useReadTransaction();
    let reading = fromSeq - 1;
    try {
      let previous: ChainHead | undefined;
      if (fromSeq > 1) {
        const before = this.log.get(seqKey(fromSeq - 1), { transaction: txn });
        if (before !== undefined) previous = verifySelf(before);
        else {
          const base = this.logBase();
          if (base.seq === fromSeq - 1) previous = base;
        }
      } else previous = GENESIS_HEAD;
      for (const { key, value } of this.log.getRange({ start: seqKey(fromSeq), limit, transaction: txn })) {
        const seq = this.logSeq(key);
        if (result.length === 0 && seq !== fromSeq) break; // fromSeq was trimmed: none, not a later range
        reading = seq;
        if (reading > this.cachedHead.seq) break;
        const record = Buffer.from(value);
        const entry = previous === undefined ? verifySelf(record) : verifyNext(previous, record);
        assert.equal(entry.seq, seq, 'log key and entry seq disagree');
        result.push({ entry, record });
        previous = entry;
        bytes += record.length;
        if (bytes >= bytesMax) break;
      }
    } catch (error) {
      // Only this read fails: the caller (an HTTP request, a watch, a child session) ends with DATA_CORRUPTED.
      if (isRecordDamage(error)) throw this.damaged(`log entry ${reading}`, error);
      throw this.lmdbDamage(`the log's pages after entry ${reading}`, error);
    } finally {
      txn.done();
    }
    return result;
  }

  /**
   * Decodes a key record, checking its crc: a damaged one fails the reader with DATA_CORRUPTED and is recorded. With
   * `copy`, `stored` is LMDB's reused read buffer (`getBinaryFast`: its `length` is the record's) and the value is
   * copied out of it.
   */
  private keyRecord(key: Buffer, stored: Buffer, copy = false): KeyRecord {
    try {
      return copy ? copyKeyRecord(key, toBuffer(stored), stored.length) : decodeKeyRecord(key, stored);
    } catch (error) {
      throw this.keyDamage(key, error);
    }
  }

  /**
   * The record that a put of `value` at `seq` leaves under `key`, whose current record is `stored` (checked against its
   * crc first: a damaged record fails the write, as a read of it would), encoded into the scratch buffer.
   */
  private nextKeyRecord(key: Buffer, stored: Buffer, seq: number, value: Buffer): Buffer {
    let header: { createSeq: number; version: number };
    try {
      header = decodeKeyRecordHeader(key, stored);
    } catch (error) {
      throw this.keyDamage(key, error);
    }
    return writeKeyRecord(this.recordScratch(value.length), key, header.createSeq, seq, nextVersion(header.version), value);
  }

  /** What a failed decode of `key`'s record throws: a damaged record is recorded and becomes DATA_CORRUPTED. */
  private keyDamage(key: Buffer, error: unknown): unknown {
    return error instanceof KeyRecordDamageError ? this.damaged(keyName(key), error) : error;
  }

  /**
   * A buffer for one key record of `valueBytes` (grown to the largest record), reused by every write of this store:
   * putSync inside a write transaction copies the bytes into LMDB before it returns.
   */
  private recordScratch(valueBytes: number): Buffer {
    const bytes = KEY_RECORD_HEADER_BYTES + valueBytes;
    if (this.scratch.length < bytes) this.scratch = Buffer.allocUnsafe(Math.max(bytes, 2 * this.scratch.length));
    return this.scratch;
  }

  /**
   * Every key record in key order, each checked against its crc, from one read transaction; for the offline
   * verifier, which wants every damaged key named rather than the first read failing. Exhaust it (or return early
   * from the loop, which ends the transaction).
   */
  *scanKeyRecords(): Generator<{ key: Buffer; record?: KeyRecord; damage?: string }> {
    for (const { key, record, damage } of this.checkedRecords(EMPTY_KEY, EMPTY_KEY)) yield damage === undefined ? { key, record } : { key, damage: damage.message };
  }

  /**
   * The key records of [start, end) (an empty end: unbounded), from one read transaction, for a reader that must go on
   * past a damaged record rather than fail at it: the token registry, where one damaged token record must not take
   * every other token with it. A damaged record is recorded as any read of it is (counted, logged, failing readiness)
   * and yielded as the DATA_CORRUPTED error such a read throws. Exhaust it (or return early from the loop).
   */
  *readRangeChecked(start: Buffer, end: Buffer): Generator<{ key: Buffer; record: KeyRecord; damage?: undefined } | { key: Buffer; record?: undefined; damage: Error }> {
    this.readSinceCommit = true;
    for (const { key, record, damage } of this.checkedRecords(start, end)) yield damage === undefined ? { key, record } : { key, damage: this.damaged(keyName(key), damage) };
  }

  /** Each key record of [start, end), checked against its crc; a damaged one comes with its error instead. */
  private *checkedRecords(start: Buffer, end: Buffer): Generator<{ key: Buffer; record: KeyRecord; damage?: undefined } | { key: Buffer; record?: undefined; damage: KeyRecordDamageError }> {
    const txn = this.env.useReadTransaction();
    try {
      // At seq 0 the key space is empty (see get).
      if (this.meta.get(META_HEAD, { transaction: txn }) === undefined) return;
      for (const { key, value } of this.kv.getRange({ start: start.length === 0 ? undefined : start, end: end.length === 0 ? undefined : end, transaction: txn })) {
        const keyCopy = Buffer.from(key);
        let record: KeyRecord;
        try {
          record = decodeKeyRecord(keyCopy, Buffer.from(value));
        } catch (error) {
          if (!(error instanceof KeyRecordDamageError)) throw error;
          yield { key: keyCopy, damage: error };
          continue;
        }
        yield { key: keyCopy, record };
      }
    } catch (error) {
      throw this.lmdbDamage(`the pages of keys from ${keyName(start)}`, error);
    } finally {
      txn.done();
    }
  }

  /** Calls `listener` each time a read meets damaged data (the node logs and counts it). */
  onDamage(listener: (report: DamageReport) => void): void {
    this.damageListeners.push(listener);
  }

  /** Damage met through this handle since it opened or a snapshot install replaced the data: how many times, and the first distinct reports. */
  damage(): { readonly count: number; readonly reports: readonly DamageReport[] } {
    return { count: this.damageCount, reports: this.damageReports };
  }

  /** `read`'s result; a damaged page LMDB meets on the way fails the reader with DATA_CORRUPTED, recorded (lmdbDamage). */
  private lmdbRead<T>(what: string, read: () => T): T {
    try {
      return read();
    } catch (error) {
      throw this.lmdbDamage(what, error);
    }
  }

  /**
   * What a failed LMDB read throws: LMDB's own errors for a page it cannot follow become DATA_CORRUPTED, recorded as
   * a damaged record is; anything else is returned as it is. LMDB has no page checksums: damage it does not notice
   * (a flipped flag that hides a subtree) reads as fewer keys, which only the writer's walk at start finds.
   */
  private lmdbDamage(what: string, error: unknown): unknown {
    return isLmdbDamage(error) ? this.damaged(what, error) : error;
  }

  /** Records damage met while reading `what`, and returns the error that fails the reader. */
  private damaged(what: string, cause: unknown): Error {
    const error = dataCorrupted(what, cause);
    const report: DamageReport = { what, message: error.message };
    this.damageCount++;
    if (this.damageReports.length < DAMAGE_REPORTS_MAX && !this.damageReports.some((known) => known.what === what)) this.damageReports.push(report);
    for (const listener of this.damageListeners) listener(report);
    return error;
  }

  /**
   * Root only: builds and commits the next entry in one write transaction. `build` evaluates requests against the
   * WriteView and applies their ops; if it applies none, nothing is written and undefined is returned. `sign` (the
   * root's signer, src/trust/) signs the entry's hash.
   */
  commit(timeMs: number, build: (view: WriteView) => void, sign?: (hash: Buffer) => Buffer): EncodedEntry | undefined {
    this.assertWritable();
    assert.equal(this.asyncCommit, undefined, 'a commit is already under way on the write thread');
    this.readSinceCommit = false;
    const { seq, write } = this.entryWriter(timeMs, build, sign);
    const sealed = this.writeTransaction(write, undefined);
    if (sealed !== undefined) this.cachedHead = { seq, hash: sealed.entry.hash };
    return sealed;
  }

  /**
   * `commit`, with the commit itself on lmdb-js's write thread: `build` runs on this thread inside the write
   * transaction (a child transaction, so that a throw aborts all of it, as in `commit`), then LMDB writes the pages,
   * `fdatasync`s them and writes the meta page on a libuv thread while this one goes on serving reads. Resolves once
   * the entry is durable. One at a time; no other write transaction starts meanwhile (trimLog and probeWritable wait
   * for the next turn), since a synchronous one would wait for the write lock that thread holds (record 37).
   */
  async commitAsync(timeMs: number, build: (view: WriteView) => void, sign?: (hash: Buffer) => Buffer): Promise<EncodedEntry | undefined> {
    this.assertWritable();
    assert.equal(this.asyncCommit, undefined, 'a commit is already under way on the write thread');
    this.readSinceCommit = false;
    const { seq, write } = this.entryWriter(timeMs, build, sign);
    const logBytesBefore = this.cachedLogBytes;
    let settle!: () => void;
    this.asyncCommit = new Promise<void>((resolve) => (settle = resolve));
    let sealed: EncodedEntry | undefined;
    try {
      sealed = await this.env.childTransaction<EncodedEntry | undefined>(write);
    } catch (error) {
      this.cachedLogBytes = logBytesBefore;
      throw this.writeFailed(await commitFailureCause(error));
    } finally {
      this.asyncCommit = undefined;
      settle();
    }
    this.writeSucceeded();
    if (sealed !== undefined) this.cachedHead = { seq, hash: sealed.entry.hash };
    return sealed;
  }

  /** Whether a commit is under way on lmdb-js's write thread (commitAsync): no other write transaction may start. */
  commitUnderWay(): boolean {
    return this.asyncCommit !== undefined;
  }

  /**
   * Resolves once the commit under way on the write thread has settled, `commitUnderWay` false again (at once if none):
   * for a writer that must let it finish first (the log trimmer), which then runs before the committer's next turn.
   */
  commitSettled(): Promise<void> {
    return this.asyncCommit ?? Promise.resolve();
  }

  /**
   * Whether anything read through this handle (a key, a range, the log, a snapshot) since the last commit began: the
   * group committer then commits on the write thread (commitAsync), so that such readers are not held up by the sync;
   * with no reader it commits on this thread (commit), which costs less per entry (record 37).
   */
  readSinceLastCommit(): boolean {
    return this.readSinceCommit;
  }

  /** The write transaction's body for the next entry of the root: `build` chooses its ops, which are applied, sealed and appended. */
  private entryWriter(timeMs: number, build: (view: WriteView) => void, sign: ((hash: Buffer) => Buffer) | undefined): { seq: number; write: () => EncodedEntry | undefined } {
    const head = this.cachedHead;
    const seq = head.seq + 1;
    const write = (): EncodedEntry | undefined => {
      const ops: Op[] = [];
      const authors: (string | undefined)[] = [];
      // The tree the entry's ops change, read before them for the guard (entriesGrowth): read once the entry was
      // sealed, after its ops, it counted a range delete that emptied `kv` as freeing none of its pages.
      const kvTree = this.kvTree();
      // The records compares of this transaction read (undefined: no such key), by key as latin1, until an op writes the
      // key; and the bytes of all they read.
      const compared = new Map<string, KeyRecord | undefined>();
      let comparedBytes = 0;
      const view: WriteView = {
        seq,
        get: (key) => {
          const stored = this.kv.get(key);
          return stored === undefined ? undefined : this.keyRecord(key, stored);
        },
        has: (key) => this.kv.doesExist(key),
        holds: (compare, readBytesMax = Number.POSITIVE_INFINITY) => {
          if (compare.target === 'exists') return this.kv.doesExist(compare.key) === compare.exists;
          const text = compare.key.toString('latin1');
          let record = compared.get(text);
          if (record === undefined && !compared.has(text)) {
            const stored = this.kv.getBinaryFast(compare.key);
            if (stored !== undefined) {
              if (comparedBytes + stored.length > readBytesMax) throw new CompareReadLimitExceeded(readBytesMax);
              comparedBytes += stored.length;
              record = this.keyRecord(compare.key, stored, true);
            }
            compared.set(text, record);
          }
          return evaluateCompare(compare, record);
        },
        comparedBytes: () => comparedBytes,
        apply: (op, author, rangeKeysMax) => {
          // A key written is read again at its next compare; a range delete forgets every record read.
          // Only when a compare read something: a plain put paid a key-to-text conversion for it.
          if (compared.size > 0) {
            if (op.type === 'deleteRange') compared.clear();
            else compared.delete(op.key.toString('latin1'));
          }
          const removed = this.applyOp(seq, op, rangeKeysMax);
          ops.push(op);
          authors.push(author);
          return removed;
        },
      };
      build(view);
      if (ops.length === 0) return undefined;
      // Signed inside the transaction: the entry is never stored, nor sent, without its signature.
      const encoded = sealEntry({ seq, timeMs, ops, authors: authorRuns(authors) }, head.hash, sign);
      // Only now is the entry's size known; a refusal aborts the transaction, and nothing of it is written.
      this.reserveSpace(this.entriesGrowth([encoded], kvTree));
      this.appendLogRecord(encoded.entry, encoded.record);
      return encoded;
    };
    return { seq, write };
  }

  /**
   * Replica: how many of `entries`, from the first, one write transaction may apply to write or remove about `keysMax`
   * keys, and how many keys they come to. The first entry is always counted in (an entry is never split across
   * transactions), so `keys` may exceed `keysMax` for it; a later one is left out if it would take the sum past it.
   * A put or a delete is one key; a range delete the keys its range holds now (LMDB counts them natively, 30-40 ns a
   * key on the 2-core machine of record 41, where removing one took 1.3-1.8 µs), so a transaction's work is known
   * before its entries are forwarded and written. Keys put by an earlier entry of the same transaction are counted as its puts,
   * not again in a later range delete, which can thus remove up to the transaction's puts more than counted.
   * Counting stops once the sum passes `keysMax` (`keys` is then only known to exceed it): each range is counted in the
   * store as it stands before the entries, so an entry of many range deletes over the same keys (the root accepts
   * TXN_OPS_MAX deletes of one prefix: only the first removes anything) was counted once per op, 10,000 times 20,000
   * keys in one turn of 5 s, where applying it took a few ms (found by review, test/replication-apply-budget.test.ts).
   */
  keysToApply(entries: readonly EncodedEntry[], keysMax: number): { entries: number; keys: number } {
    let keys = 0;
    let count = 0;
    for (const { entry } of entries) {
      let entryKeys = 0;
      for (const op of entry.ops) {
        entryKeys += op.type === 'deleteRange' ? this.rangeKeysCount(op.start, op.end) : 1;
        // Past the budget: the entry is left out, or, the first, taken whole and the turn spent; either way the rest
        // of its ops change nothing.
        if (keys + entryKeys > keysMax) break;
      }
      if (count > 0 && keys + entryKeys > keysMax) break;
      keys += entryKeys;
      count++;
      if (keys >= keysMax) break;
    }
    return { entries: count, keys };
  }

  /** Keys of [start, end) (an empty end: no upper bound), as `removeRange` would walk them. */
  private rangeKeysCount(start: Buffer, end: Buffer): number {
    return this.kv.getKeysCount({ start, end: end.length === 0 ? undefined : end });
  }

  /**
   * Replica: applies entries that the caller has just verified with `verifyNext` against this store's head (the
   * replication client does, on receipt), in one write transaction. The links are asserted again, cheaply: a gap
   * here is a bug, not bad input.
   */
  applyVerified(entries: readonly EncodedEntry[]): void {
    this.assertWritable();
    if (entries.length === 0) return;
    let head = this.cachedHead;
    for (const { entry } of entries) {
      assert.equal(entry.seq, head.seq + 1, 'entries must continue the chain');
      assert.ok(entry.prevHash.equals(head.hash), `entry ${entry.seq} does not link to the head`);
      head = entry;
    }
    this.writeTransaction(() => {
      // Inside the transaction, before anything is written: the estimate reads `kv`'s statistics (kvTree, pagesOf).
      this.reserveSpace(this.entriesGrowth(entries));
      const last = entries.length - 1;
      entries.forEach(({ entry, record }, i) => {
        for (const op of entry.ops) this.applyOp(entry.seq, op);
        this.appendLogRecord(entry, record, i === last);
      });
    }, undefined);
    this.cachedHead = { seq: head.seq, hash: Buffer.from(head.hash) };
  }

  /**
   * Runs `write` in one LMDB write transaction. If it throws, LMDB rolls the transaction back, and so must the
   * in-memory figures that the transaction updated as it went.
   */
  private writeTransaction<T>(write: () => T, growth: number | undefined): T {
    const logBytesBefore = this.cachedLogBytes;
    try {
      return this.writeSync(write, growth);
    } catch (error) {
      this.cachedLogBytes = logBytesBefore;
      throw error;
    }
  }

  /**
   * Every write transaction goes through here: a failure that is the storage's (disk full, I/O error) becomes its
   * stable error (STORAGE_FULL, STORAGE_IO_ERROR) and is recorded until a write succeeds again. LMDB aborted the
   * transaction, so nothing of it was applied and the store stays as it was; reads go on. `growth`: how far the
   * transaction may grow the data file (space-guard.ts), asked of the space guard before it begins; undefined when
   * `write` asks the guard itself, once it knows (reserveSpace).
   */
  private writeSync<T>(write: () => T, growth: number | undefined): T {
    // It would wait for the write lock that the write thread holds, while that thread waits for this one: a deadlock.
    assert.equal(this.asyncCommit, undefined, 'a synchronous write transaction while a commit is under way on the write thread');
    let result: T;
    try {
      if (growth !== undefined) this.reserveSpace(growth);
      result = this.env.transactionSync(write);
    } catch (error) {
      throw this.writeFailed(error);
    }
    this.writeSucceeded();
    return result;
  }

  /**
   * Throws STORAGE_FULL (DiskSpaceRefusal) unless the disk can take a write transaction that grows the data file by up
   * to `growth` bytes (space-guard.ts: lmdb-js corrupts the heap on a failed page write).
   */
  private reserveSpace(growth: number): void {
    this.space?.reserve(growth);
    this.growthSinceKvTree += growth;
  }

  /** How far a transaction that writes a few small records (metadata) may grow the data file. */
  private smallWriteGrowth(): number {
    return placedGrowth(0, 2, this.pageBytes);
  }

  /**
   * How far a transaction that applies `entries` may grow the data file: each entry's record appended to the log, each
   * put's key record placed in `kv`, a leaf copied for each delete, the branch pages above them. `kv`: that tree before
   * the entries (the root asks once its ops are applied, so it reads it before).
   */
  private entriesGrowth(entries: readonly EncodedEntry[], kv = this.kvTree()): number {
    const page = this.pageBytes;
    let growth = 0;
    let changes = 0;
    let rangeDeletes = false;
    for (const { entry, record } of entries) {
      growth += appendedGrowth(recordFootprint(SEQ_KEY_BYTES, record.length, page), page);
      for (const op of entry.ops) {
        growth += op.type === 'put' ? placedGrowth(recordFootprint(op.key.length, KEY_RECORD_HEADER_BYTES + op.value.length, page), 1, page) : page;
        if (op.type === 'deleteRange') rangeDeletes = true;
        else changes++;
      }
    }
    growth += branchGrowth(changes, kv.depth, kv.branchPages, page);
    // A range delete may free every page of `kv`.
    return rangeDeletes ? growth + freedPagesGrowth(kv.pages, page) : growth;
  }

  /**
   * What finishSnapshotInstall adds beyond its metadata: the staged records copied into `kv` (none on a first install,
   * which wrote them there), and the free-page list of what it empties (the old `kv`, `staging`, the log). The copy
   * appends the records `staging` received, in the same order, so it takes the pages `staging` takes: the records'
   * bytes undercounted them, by the leaves' room left unfilled and the branch pages (records of 1,337-byte values, two
   * to a leaf, took 1.5 times their bytes; records of 1,000-byte keys, 1.75 times; audit, 2026-12-07).
   */
  private installGrowth(target: Database<Buffer, Buffer>): number {
    const staged = target === this.staging;
    const stagedPages = staged ? this.pagesOf(this.staging) : 0;
    const emptied = this.pagesOf(this.log) + (staged ? this.pagesOf(this.kv) + stagedPages : 0);
    return stagedPages * this.pageBytes + freedPagesGrowth(emptied, this.pageBytes);
  }

  /**
   * The pages a database holds (LMDB's statistics of its tree): what emptying it frees. Asked inside a write
   * transaction only: lmdb-js reads the statistics in the transaction it is in, or else takes a read transaction,
   * whose slot a full reader table refuses (MDB_READERS_FULL thrown from a replica's apply ended its process).
   */
  private pagesOf(db: Database<Buffer, Buffer>): number {
    return this.treeOf(db).pages;
  }

  /**
   * LMDB's statistics of a database's tree: its pages, its depth and its branch pages (lmdb-js's getStats, 8.5 µs
   * measured here, of which the tree's own figures are about 1.6; for entries, through kvTree).
   */
  private treeOf(db: Database<Buffer, Buffer>): TreeFigures {
    const stats = db.getStats() as { treeDepth: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
    return { pages: stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages, depth: stats.treeDepth, branchPages: stats.treeBranchPageCount };
  }

  /**
   * `kv`'s tree figures for the estimates of entries (treeOf), read again once KV_TREE_REREAD_MS old or once the
   * transactions since may have grown the file by KV_TREE_REREAD_GROWTH_BYTES: read for every transaction, they cost a
   * replica 8.5 µs (18 under load) of its 100-250 µs an entry. Between readings the tree has grown by at most about
   * that many bytes of pages (a branch page or two, a few hundred pages that a range delete would free), which the
   * headroom covers.
   */
  private kvTree(): TreeFigures {
    const now = performance.now();
    let reading = this.kvTreeReading;
    if (reading === undefined || now - reading.atMs >= KV_TREE_REREAD_MS || this.growthSinceKvTree >= KV_TREE_REREAD_GROWTH_BYTES) {
      reading = this.kvTreeReading = { tree: this.treeOf(this.kv), atMs: now };
      this.growthSinceKvTree = 0;
    }
    return reading.tree;
  }

  /** What a failed write transaction throws: a storage failure as its stable error, recorded; anything else as itself. */
  private writeFailed(error: unknown): unknown {
    const fault = error instanceof DiskSpaceRefusal ? error : storageFault(error, () => freeBytesOrUnknown(this.path));
    if (fault === undefined) return error;
    this.setWriteFault(fault);
    return fault;
  }

  /** After a write transaction that went through: the storage takes writes again. */
  private writeSucceeded(): void {
    if (this.currentWriteFault !== undefined) this.setWriteFault(undefined);
  }

  private setWriteFault(fault: MercuryError | undefined): void {
    this.currentWriteFault = fault;
    for (const listener of this.writeFaultListeners) listener(fault);
  }

  /** The storage failure of the last write, or undefined when the last write succeeded. */
  writeFault(): MercuryError | undefined {
    return this.currentWriteFault;
  }

  /** Calls `listener` with each storage write failure, and with undefined when writes succeed again. */
  onWriteFault(listener: (fault: MercuryError | undefined) => void): void {
    this.writeFaultListeners.push(listener);
  }

  /**
   * After a storage failure: tries a small write (a few bytes of metadata, one page of LMDB) to learn whether writes
   * go through again, so that readiness recovers once space is freed even while no client writes. True if it did.
   */
  probeWritable(): boolean {
    this.assertWritable();
    // A commit on the write thread holds the write lock: it will tell (the next probe runs after it).
    if (this.asyncCommit !== undefined) return false;
    try {
      this.writeSync(() => this.meta.putSync(META_WRITE_PROBE, Buffer.from([1])), this.smallWriteGrowth());
      return true;
    } catch (error) {
      if (error === this.currentWriteFault) return false; // still failing, recorded by writeSync
      throw error;
    }
  }

  /**
   * Appends an entry to the log. Head and log size are written for the transaction's last entry only (`last`): a
   * batch of entries is one transaction, so no reader ever sees the values of the entries before it.
   */
  private appendLogRecord(entry: Entry, record: Buffer, last = true): void {
    this.log.putSync(seqKey(entry.seq), record, { append: true });
    this.cachedLogBytes += record.length;
    if (!last) return;
    this.meta.putSync(META_LOG_BYTES, encodeU64(this.cachedLogBytes));
    this.meta.putSync(META_HEAD, encodeHead(entry.seq, entry.hash));
  }

  /**
   * Applies one op at `seq` inside the current write transaction. The same on root and replicas; only the root bounds
   * a range delete (`rangeKeysMax`, WriteView.apply): an entry it committed is applied whatever its size. Returns the
   * keys a range delete removed.
   */
  private applyOp(seq: number, op: Op, rangeKeysMax = Number.POSITIVE_INFINITY): number {
    switch (op.type) {
      case 'put': {
        // The previous record is read in place (lmdb-js's reused buffer, no copy) for its createSeq and version, checked
        // against its crc; the new one is encoded into the store's scratch buffer, which LMDB copies in putSync.
        const stored = this.kv.getBinaryFast(op.key);
        const record =
          stored === undefined
            ? writeKeyRecord(this.recordScratch(op.value.length), op.key, seq, seq, 1, op.value)
            : this.nextKeyRecord(op.key, toBuffer(stored), seq, op.value);
        this.kv.putSync(op.key, record);
        return 0;
      }
      case 'delete':
        this.kv.removeSync(op.key);
        return 0;
      case 'deleteRange':
        return this.removeRange(op.start, op.end, rangeKeysMax);
    }
  }

  /** Removes the keys of [start, end) (an empty end: no upper bound) in runs of RANGE_DELETE_RUN_KEYS; see there. */
  private removeRange(start: Buffer, end: Buffer, keysMax: number): number {
    const upper = end.length === 0 ? undefined : end;
    let from = start;
    let removed = 0;
    for (;;) {
      // One key past the limit is enough to know it is exceeded.
      const limit = Math.min(RANGE_DELETE_RUN_KEYS, keysMax - removed + 1);
      const run = Array.from(this.kv.getKeys({ start: from, end: upper, limit }), (key) => Buffer.from(key));
      if (removed + run.length > keysMax) throw new RangeDeleteLimitExceeded(keysMax);
      for (const key of run) this.kv.removeSync(key);
      removed += run.length;
      if (run.length < limit) return removed;
      // The next run starts at the last key removed: it is gone, so the walk resumes just after it.
      from = run[run.length - 1]!;
    }
  }

  /**
   * Deletes the oldest log entries beyond the retention limits, at most `batchEntries` per call (one short write
   * transaction), so the trimmer never holds the writer for long. Returns how many entries it removed. The head entry
   * is always kept, so a replica can always be told the head hash from the log.
   */
  trimLog(retainEntries: number, retainBytes: number, batchEntries: number): number {
    this.assertWritable();
    // A commit on the write thread holds the write lock; the trimmer comes back on its next tick.
    if (this.asyncCommit !== undefined) return 0;
    const bounds = this.logBounds();
    const count = bounds.lastSeq - bounds.firstSeq + 1;
    if (count <= 1 || (count <= retainEntries && bounds.bytes <= retainBytes)) return 0;
    let removed = 0;
    let bytes = this.cachedLogBytes;
    this.writeSync(() => {
      let base: ChainHead | undefined;
      // Collect first: removing while a cursor walks the same tree is not supported by lmdb-js. Only the records to
      // remove (and the one after them, which ends the walk), as sizes and hashes: collecting a whole batch of
      // records (up to 1,000, however few were removed) copied them all out of LMDB, and a root retaining 300 MB of
      // 1 MB entries stalled its event loop up to 1.5 s at each trim under steady writes.
      const doomed: Buffer[] = [];
      let doomedBytes = 0;
      for (const { key, value } of this.logRecordEnds.getRange({ start: seqKey(bounds.firstSeq), limit: batchEntries })) {
        const remaining = count - doomed.length;
        if (remaining <= 1 || (remaining <= retainEntries && bytes <= retainBytes)) break;
        const seq = this.logSeq(key);
        if (seq >= bounds.lastSeq) break;
        base = { seq, hash: value.hash };
        if (bytes < value.bytes) {
          // The log holds more than the size it was given: a "logBytes" record sound in form but too low (damage; or
          // written by a build whose failed trims lowered it). Subtracting went below zero, every trim threw from
          // then on and the log grew without bound (audit, 2026-12-07). The sum is counted again, as at an open that
          // finds the record damaged, and written back with this trim.
          const summed = this.sumLogBytes();
          this.logBytesCorrection = `the log size was ${this.cachedLogBytes} bytes, but the log holds ${summed}`;
          bytes = summed - doomedBytes;
        }
        bytes -= value.bytes;
        doomedBytes += value.bytes;
        doomed.push(Buffer.from(key));
      }
      // What a trim writes: the leaves at the edge of what it removes, and the list of the pages it frees (8 bytes each).
      this.reserveSpace(this.smallWriteGrowth() + freedPagesGrowth(Math.ceil(doomedBytes / this.pageBytes) + doomed.length, this.pageBytes));
      for (const key of doomed) this.log.removeSync(key);
      removed = doomed.length;
      if (base !== undefined) {
        this.meta.putSync(META_LOG_BASE, encodeHead(base.seq, base.hash));
        this.meta.putSync(META_LOG_BYTES, encodeU64(bytes));
      }
    }, undefined);
    // Only once committed: a commit the disk refuses (full) removes nothing, and a size lowered anyway went below
    // zero at the next try, failing every trim after it, and the next entry wrote it to disk.
    this.cachedLogBytes = bytes;
    return removed;
  }

  /** The hash of the entry at `seq`, if this node can still tell (head, retained log, log base, or genesis). */
  hashAt(seq: number): Buffer | undefined {
    if (seq === 0) return GENESIS_HEAD.hash;
    if (seq === this.cachedHead.seq) return this.cachedHead.hash;
    const record = this.log.get(seqKey(seq));
    if (record !== undefined) return entryRecordHash(record);
    const base = this.logBase();
    return base.seq === seq ? base.hash : undefined;
  }

  /**
   * The keys of `kv` as `txn` sees it, its head record being `headRecord`. LMDB keeps the count in the tree (mdb_stat,
   * O(1)), but lmdb-js reads it only in the current shared read transaction, not in a given one: it is taken from there
   * when that transaction sees the same head record (every commit that changes `kv` moves the head), and counted by
   * walking the keys otherwise (O(keys): 30-50 ms of the loop at 400,000 keys, at every snapshot a child or a watch
   * asked for).
   */
  private keyCountIn(txn: Transaction, headRecord: Buffer): number {
    const current = this.meta.get(META_HEAD);
    if (current !== undefined && current.equals(headRecord)) {
      const { entryCount } = this.kv.getStats() as { entryCount?: number };
      if (entryCount !== undefined) return entryCount;
    }
    return this.kv.getKeysCount({ transaction: txn });
  }

  /**
   * Opens a consistent snapshot of the key space at the current head. With `ranges` (sorted, non-overlapping, each
   * [start, end) with an empty end meaning unbounded), pages hold only the keys inside them, still in key order: a
   * watch that resumes from before the retained log reads just its own prefixes (src/watch).
   *
   * The snapshot holds one of the node's snapshot readers (`snapshotReaders`) until it is closed: `reservation`, taken
   * beforehand from `snapshotReaders` (`tryReserve`), or one taken here. Throws OVERLOADED when none is free, or when LMDB's
   * reader table is full.
   */
  openSnapshot(ranges: readonly KeyRange[] = WHOLE_KEY_SPACE, reservation?: SnapshotReservation): SnapshotReader {
    const slot = reservation ?? this.snapshotReaders.tryReserve();
    if (slot === undefined) throw this.snapshotReaders.busy();
    this.readSinceCommit = true;
    let txn;
    try {
      txn = this.env.useReadTransaction();
    } catch (error) {
      slot.release();
      throw readersFull(error) ?? error;
    }
    let headRecord: Buffer | undefined;
    let head: ChainHead;
    let keyCount: number;
    try {
      headRecord = this.meta.get(META_HEAD, { transaction: txn });
      head = headRecord === undefined ? GENESIS_HEAD : this.headRecord(headRecord, 'head record');
      // At seq 0 the key space is empty (see get).
      keyCount = headRecord === undefined ? 0 : this.keyCountIn(txn, headRecord);
    } catch (error) {
      // Nobody gets a reader to close: given back here (DATA_CORRUPTED for the child, watch or backup that asked), or
      // every snapshot of a damaged store would keep its reader and its slot of LMDB's table, until the budget was
      // spent and every snapshot was refused OVERLOADED instead.
      txn.done();
      slot.release();
      throw error;
    }
    const empty = headRecord === undefined;
    let rangeIndex = 0;
    let after: Buffer | undefined;
    let done = empty;
    let closed = false;
    /** Where `sizeData` is in its walk: the range, the last key it counted in it, and the bytes so far. */
    const sizing = { rangeIndex: 0, after: undefined as Buffer | undefined, bytes: 0 };
    /**
     * Visits the next records of the ranges in key order until their key and stored bytes reach `pageBytes` (at least
     * one record); returns how many it visited, 0 at the end. `visit` answers a record's stored bytes.
     */
    const walk = <V>(db: Database<V, Buffer>, pageBytes: number, visit: (key: Buffer, value: V) => number): number => {
      let count = 0;
      let bytes = 0;
      while (!done && rangeIndex < ranges.length) {
        const range = ranges[rangeIndex]!;
        let lastKey: Buffer | undefined;
        // An explicit first key: lmdb-js starts a range without one at 0x05 for a custom encoder (its own metadata
        // lies below), and keys here are any bytes.
        for (const { key, value } of db.getRange({
          start: after ?? (range.start.length === 0 ? FIRST_KEY : range.start),
          end: range.end.length === 0 ? undefined : range.end,
          exclusiveStart: after !== undefined,
          transaction: txn,
        })) {
          const keyBytes = toBuffer(key);
          bytes += keyBytes.length + visit(keyBytes, value);
          count++;
          if (bytes >= pageBytes) {
            lastKey = keyBytes;
            break;
          }
        }
        if (lastKey !== undefined) {
          after = lastKey;
          break;
        }
        rangeIndex++;
        after = undefined;
      }
      if (count === 0) done = true;
      return count;
    };
    return {
      seq: head.seq,
      hash: head.hash,
      datasetId: this.currentDatasetId,
      keyCount,
      nextPage: (pageBytes) => {
        const page: SnapshotRecord[] = [];
        walk(this.kv, pageBytes, (key, value) => {
          // Checked here so that a damaged value is never sent to a watcher or a child (whose snapshot digest would be
          // computed over the bad bytes and agree with them). No copies: for binary encodings lmdb-js 3.5's range
          // iterator returns each key and value as a fresh slice (read.js, keys.js), never its reused read buffer, so a
          // page's records stay valid after the next read (tested: "pages of a snapshot keep their bytes").
          const record = this.keyRecord(key, toBuffer(value));
          page.push({ key, value: record.value, createSeq: record.createSeq, modSeq: record.modSeq, version: record.version });
          return value.length;
        });
        return page;
      },
      nextRecords: (pageBytes, sink) =>
        walk(this.kvInPlace, pageBytes, (key) => {
          try {
            visitKeyRecord(key, this.inPlaceBytes, this.inPlaceSize, sink);
          } catch (error) {
            throw this.keyDamage(key, error);
          }
          return this.inPlaceSize;
        }),
      sizeData: (keysMax) => {
        assert.ok(!closed, 'snapshot reader is closed');
        if (empty) return 0;
        let keys = 0;
        while (sizing.rangeIndex < ranges.length) {
          const range = ranges[sizing.rangeIndex]!;
          let lastKey: Uint8Array | undefined;
          // In place (kvInPlace): the values' sizes without a copy of each value. An explicit first key, as in walk.
          for (const { key } of this.kvInPlace.getRange({
            start: sizing.after ?? (range.start.length === 0 ? FIRST_KEY : range.start),
            end: range.end.length === 0 ? undefined : range.end,
            exclusiveStart: sizing.after !== undefined,
            limit: keysMax,
            transaction: txn,
          })) {
            sizing.bytes += key.length + this.inPlaceSize - KEY_RECORD_HEADER_BYTES;
            lastKey = key;
            keys++;
          }
          // A full step may have stopped inside the range: the next call goes on after its last key.
          if (keys >= keysMax && lastKey !== undefined) {
            sizing.after = Buffer.from(lastKey);
            return undefined;
          }
          sizing.rangeIndex++;
          sizing.after = undefined;
          keysMax -= keys;
          keys = 0;
        }
        return sizing.bytes;
      },
      close: () => {
        if (closed) return;
        closed = true;
        done = true;
        txn.done();
        slot.release();
      },
    };
  }

  /**
   * Replica: starts receiving a snapshot; forgets any partly received one. A store at seq 0 has an empty key space, so
   * the snapshot goes straight into `kv`: every reader answers "empty" at seq 0 whatever `kv` holds (get, range,
   * openSnapshot, sizes, scanKeyRecords), and the head only moves in finishSnapshotInstall's transaction, so readers
   * see all of it or none, and a start after a crash mid-install finds seq 0 and drops what was installed (see the
   * constructor), whatever role it starts in. That saves writing every
   * record twice (to `staging`, then to `kv`): a fleet's joins are all first installs. A store that holds data keeps it
   * readable until the new snapshot is complete and verified, in `staging`.
   */
  beginSnapshotInstall(): void {
    this.assertWritable();
    this.installTarget = this.cachedHead.seq === 0 ? this.kv : this.staging;
    this.writeSync(() => {
      const emptied = this.pagesOf(this.staging) + (this.installTarget === this.kv ? this.pagesOf(this.kv) : 0);
      this.reserveSpace(this.smallWriteGrowth() + freedPagesGrowth(emptied, this.pageBytes));
      this.removeAll(this.staging);
      if (this.installTarget === this.kv) this.removeAll(this.kv);
    }, undefined);
  }

  /** Replica: keeps a page of snapshot records aside (not visible to readers) until the snapshot is complete. */
  stageSnapshotPage(records: readonly SnapshotRecord[]): void {
    this.assertWritable();
    const target = this.installTarget;
    assert.ok(target !== undefined, 'beginSnapshotInstall comes first');
    let footprint = 0;
    for (const record of records) footprint += appendedFootprint(record.key.length, KEY_RECORD_HEADER_BYTES + record.value.length, this.pageBytes);
    this.writeSync(() => {
      for (const record of records) {
        // The records come in strictly ascending key order (the replication client refuses others) into a database
        // emptied by beginSnapshotInstall, so MDB_APPEND adds each at the end without a search. lmdb-js answers a key
        // out of order with false (MDB_KEYEXIST), not an error: that would be a bug upstream of here.
        const stored = writeKeyRecord(this.recordScratch(record.value.length), record.key, record.createSeq, record.modSeq, record.version, record.value);
        assert.ok(target.putSync(record.key, stored, { append: true }), 'snapshot records are staged in strictly ascending key order');
      }
    }, appendedGrowth(footprint, this.pageBytes));
  }

  /**
   * Whether everything this store holds came through signature checks: installed from a snapshot whose signed head was
   * verified (`finishSnapshotInstall(..., verified)`), and followed since only under them (META_VERIFIED).
   */
  get verified(): boolean {
    return this.meta.get(META_VERIFIED) !== undefined;
  }

  /** Data is about to be applied without signature checks: the store no longer holds only verified data. */
  markUnverified(): void {
    this.assertWritable();
    if (this.verified) this.writeSync(() => void this.meta.removeSync(META_VERIFIED), this.smallWriteGrowth());
  }

  /** Replica: an operator asked for a resync that no snapshot install has completed yet (META_RESYNC). */
  get resyncRequested(): boolean {
    return this.meta.get(META_RESYNC) !== undefined;
  }

  /**
   * Replica: records an operator's resync request, before it is acknowledged, so that a restart carries it on. A
   * divergence recorded before stays until the snapshot install that completes the resync removes both: until then the
   * store holds the condemned chain, and a relay restarted meanwhile refuses its children by it as before.
   */
  requestResync(): void {
    this.assertWritable();
    this.writeSync(() => void this.meta.putSync(META_RESYNC, Buffer.from('1')), this.smallWriteGrowth());
  }

  /** Replica: records that it stopped following at `head` because its chain diverged, so that a restart stays stopped. */
  recordDivergence(head: ChainHead, reason: string): void {
    this.assertWritable();
    this.writeSync(() => void this.meta.putSync(META_DIVERGED, Buffer.concat([encodeHead(head.seq, head.hash), Buffer.from(reason, 'utf8')])), this.smallWriteGrowth());
  }

  /**
   * Replica: the divergence recorded by `recordDivergence`, undefined when none is. A damaged record still stops the
   * replica, at its current head: following on a chain that may be the condemned one, or serving it to children, is
   * worse than waiting for the operator's resync.
   */
  recordedDivergence(): { readonly head: ChainHead; readonly reason: string } | undefined {
    const stored = this.meta.get(META_DIVERGED);
    if (stored === undefined) return undefined;
    let head: ChainHead;
    try {
      head = decodeHead(stored.subarray(0, HEAD_RECORD_BYTES));
    } catch (error) {
      if (!(error instanceof MetaRecordDamageError)) throw error;
      return { head: this.cachedHead, reason: `the record of this replica's divergence is damaged (${error.message}); it stays stopped until resynced` };
    }
    // Nothing is applied while diverged, so the record names the store's head; one that does not is damaged, and
    // children judged against its head would be told the wrong thing (abstain instead of CHAIN_DIVERGED).
    if (head.seq !== this.cachedHead.seq || !head.hash.equals(this.cachedHead.hash))
      return { head: this.cachedHead, reason: `the record of this replica's divergence names seq ${head.seq}, not its head ${this.cachedHead.seq} (damaged); it stays stopped until resynced` };
    return { head, reason: stored.subarray(HEAD_RECORD_BYTES).toString('utf8') };
  }

  /**
   * Replica: switches to the staged snapshot in one write transaction, once the caller has verified its digest. The
   * key space becomes the snapshot's, the log restarts empty after `seq` (whose hash becomes the log base), and the
   * node adopts the snapshot's dataset id.
   */
  finishSnapshotInstall(seq: number, hash: Buffer, datasetId: string, verified = false): void {
    this.assertWritable();
    assert.ok(datasetId.length > 0);
    const target = this.installTarget;
    assert.ok(target !== undefined, 'beginSnapshotInstall comes first');
    this.writeSync(() => {
      this.reserveSpace(this.smallWriteGrowth() + this.installGrowth(target));
      if (target === this.staging) {
        this.removeAll(this.kv);
        // The staged records come in key order into an empty tree: MDB_APPEND adds each at the end without a search.
        // putSync copies key and value into the transaction before the iterator moves on, so no copy is made here.
        for (const { key, value } of this.staging.getRange({})) this.kv.putSync(key, value, { append: true });
        this.removeAll(this.staging);
      }
      this.removeAll(this.log);
      this.meta.putSync(META_HEAD, encodeHead(seq, hash));
      this.meta.putSync(META_LOG_BASE, encodeHead(seq, hash));
      this.meta.putSync(META_LOG_BYTES, encodeU64(0));
      this.meta.putSync(META_DATASET_ID, Buffer.from(datasetId));
      if (verified) this.meta.putSync(META_VERIFIED, Buffer.from('1'));
      else this.meta.removeSync(META_VERIFIED);
      // The snapshot replaces the chain: a resync asked for is done, and a divergence is over.
      this.meta.removeSync(META_RESYNC);
      this.meta.removeSync(META_DIVERGED);
    }, undefined);
    this.installTarget = undefined;
    // `kv` is another tree now: its figures are read again at the next write.
    this.kvTreeReading = undefined;
    this.cachedHead = { seq, hash: Buffer.from(hash) };
    this.cachedLogBytes = 0;
    this.currentDatasetId = datasetId;
    // The damage met was in what the snapshot replaced (key records, log entries and keys, the head record): none of
    // it is left, so the store is sound again, and /readyz clears without the restart it took before (replication
    // audit, 2026-12-07). The node's counter of damage met (mercury_data_corruption_total) keeps its total.
    this.damageCount = 0;
    this.damageReports.length = 0;
  }

  /**
   * Empties a database inside the current write transaction: lmdb-js runs `clearSync` in the transaction it is
   * called from (mdb_drop without deleting the handle), which frees its pages in C instead of one removal per key
   * (a quarter of a snapshot install's time on 100,000 keys).
   */
  private removeAll(db: Database<Buffer, Buffer>): void {
    db.clearSync();
  }

  /**
   * Resolves once every transaction committed so far is on disk. With overlappingSync off, every commit is on disk when
   * it returns (commit) or resolves (commitAsync); this stays for an lmdb that would sync later (record 2). lmdb-js keeps
   * the promise of its last asynchronous commit until its next one, and `env.flushed` waits on it: after a commit on
   * the write thread failed, which commitAsync reported to its caller, it stays rejected with that failure and would
   * fail every commit after it on this thread (found in review). So a rejection here is that old failure and ignored.
   */
  async flushed(): Promise<void> {
    try {
      await this.env.flushed;
    } catch {
      // The last commit on the write thread failed, and said so where it happened.
    }
  }

  private assertWritable(): void {
    assert.ok(!this.closed, 'store is closed');
  }

  /**
   * Closes the environment. Waits one timer turn first: lmdb 3.5 can hang forever when close() follows a
   * transactionSync in the same event-loop turn.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Its caller (the committer) failing or not, the write thread finishes it before the environment closes.
    await this.commitSettled();
    await this.flushed();
    await new Promise((resolve) => setTimeout(resolve, 1));
    await this.env.close();
    try {
      if (this.unsynced) closeUnsynced(this.path);
    } finally {
      // A guard state the full disk would not take (the data is then discarded after a reboot, as after a crash) must
      // not keep the lock too: a node stopped on a full disk left it naming itself (audit, 2026-12-07).
      this.lock?.release();
    }
  }
}

/**
 * What made a commit on lmdb-js's write thread fail. lmdb-js rejects the commit's promise with a generic "Commit
 * failed" error whose `commitError` is a promise of the cause (LMDB's or the system's error, with its code), rejected
 * once the write thread has reported it; a throw inside the transaction's callback arrives as itself.
 */
async function commitFailureCause(error: unknown): Promise<unknown> {
  const cause = (error as { commitError?: unknown } | undefined)?.commitError;
  if (!(cause instanceof Promise)) return error;
  // lmdb-js rejects it only for some failure codes (write.js, the `default` of its status switch): bounded, so that a
  // commit whose cause never comes still fails instead of holding the committer forever.
  let timer: NodeJS.Timeout | undefined;
  const unreported = new Promise<unknown>((resolve) => (timer = setTimeout(() => resolve(error), COMMIT_CAUSE_WAIT_MS)));
  try {
    return await Promise.race([cause.then(() => error, (reported: unknown) => reported), unreported]);
  } finally {
    clearTimeout(timer);
  }
}

/** How long, and for how much growth, `kv`'s tree figures serve the space guard's estimates (Store.kvTree). */
const KV_TREE_REREAD_MS = 100;
const KV_TREE_REREAD_GROWTH_BYTES = 1024 * 1024;

/** A database's tree as LMDB counts it: all its pages, its depth, its branch pages. */
interface TreeFigures {
  readonly pages: number;
  readonly depth: number;
  readonly branchPages: number;
}

/** How long a failed commit waits for lmdb-js to report its cause. */
const COMMIT_CAUSE_WAIT_MS = 1_000;

/**
 * lmdb-js's `getBinaryFast` returns its reused Buffer, or for a large value a Uint8Array over the memory map
 * (typed Buffer all the same): view either as a Buffer, without copying.
 */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}
