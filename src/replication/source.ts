/**
 * What the replication state machines need from a node's storage, as small interfaces. The LMDB adapter implements
 * them with `Store`; the simulation with an in-memory log. The machines call these synchronously while handling an
 * event, so an implementation must answer from one consistent state (LMDB read transactions do).
 */
import type { ChainHead, EncodedEntry } from '../log/index.js';

/** The serving side's view of the node's chain: its head, its retained log and consistent snapshots of its keys. */
export interface LogSource {
  /** The dataset this node holds; '' until it has joined one (it then refuses children). */
  datasetId(): string;
  /** The last entry this node has applied. */
  head(): ChainHead;
  /** The first retained seq; head.seq + 1 when the log is empty (after a snapshot install or a trim to the head). */
  firstSeq(): number;
  /**
   * The hash of the entry at `seq` if this node can still tell: seq 0 (the genesis hash), the retained log, the entry
   * just before the first retained one (the log base), or the head. Undefined otherwise. Throws DATA_CORRUPTED when
   * the log base record is damaged.
   */
  hashAt(seq: number): Buffer | undefined;
  /**
   * Verified records from `fromSeq` on: at most `limitEntries`, and no more once `limitBytes` of records are reached
   * (but at least one, if `fromSeq` is retained and not past the head). [] if `fromSeq` is no longer retained.
   * Throws DATA_CORRUPTED on a damaged record: that session ends, no other.
   */
  readLog(fromSeq: number, limitEntries: number, limitBytes: number): EncodedEntry[];
  /**
   * A consistent view of the whole key space at the current head, held until `close`; undefined when the node holds
   * its most snapshots already (its snapshot readers, shared with backups and watches): the child is sent elsewhere.
   * Throws DATA_CORRUPTED when the head record it would be taken at is damaged: that session ends, no other; and
   * OVERLOADED READERS_FULL when LMDB's reader table is full (other processes' readers): the child is refused
   * UNAVAILABLE naming it.
   */
  openSnapshot(): SnapshotSource | undefined;
}

/** One consistent snapshot being read (an LMDB read transaction in the real adapter). */
export interface SnapshotSource {
  readonly seq: number;
  readonly hash: Buffer;
  readonly keyCount: number;
  /**
   * The next records in key order, about `bytesTarget` of keys and values (at least one), as one sealed SNAPSHOT_CHUNK
   * frame with its record count; undefined at the end. Throws DATA_CORRUPTED on a damaged record, so that damage is
   * never copied to a child.
   */
  nextChunk(bytesTarget: number): { readonly frame: Buffer; readonly count: number } | undefined;
  /** Releases the snapshot. Called exactly once, at the end or when the session closes early. */
  close(): void;
}
