/**
 * The commit section of a node's limits (see src/node/limits.ts, which validates it with the other sections). The
 * group committer never reads module constants: it takes this object, so that tests can run a node with small entries
 * and a short queue.
 */
import { COMPARE_READ_BYTES_MAX, COMMIT_QUEUE_BYTES_MAX, COMMIT_QUEUE_REQUESTS_MAX, ENTRY_BYTES_MAX, ENTRY_OPS_MAX, RANGE_DELETE_KEYS_MAX, VALUE_BYTES_MAX_DEFAULT } from '../limits.js';

export interface CommitLimits {
  /** Largest value a put (or a value compare) may carry; the operator's `--max-value-bytes`. */
  readonly valueBytesMax: number;
  /**
   * Requests waiting for the next entry. When the queue is full new writes are refused with 503 (OVERLOADED) rather
   * than buffered: the client retries, the node stays within memory.
   */
  readonly queueRequestsMax: number;
  readonly queueBytesMax: number;
  /**
   * One entry (one LMDB write transaction) takes queued requests until it holds this many ops or bytes. Requests are
   * never split; one larger than `entryBytesMax` on its own is refused (413), so no entry exceeds it.
   */
  readonly entryOpsMax: number;
  readonly entryBytesMax: number;
  /**
   * Keys the range deletes of one entry may remove together (RANGE_DELETE_KEYS_MAX). A request whose range deletes
   * alone remove more is refused (413); one that would take an entry with range deletes of earlier requests past it
   * waits for the next entry.
   */
  readonly rangeDeleteKeysMax: number;
  /**
   * Bytes of key records the compares of one entry may read (COMPARE_READ_BYTES_MAX), as range deletes' keys: a
   * request whose compares alone read more is refused (413); one that would take an entry past it waits for the next.
   */
  readonly compareReadBytesMax: number;
}

export const COMMIT_LIMITS: CommitLimits = Object.freeze({
  valueBytesMax: VALUE_BYTES_MAX_DEFAULT,
  queueRequestsMax: COMMIT_QUEUE_REQUESTS_MAX,
  queueBytesMax: COMMIT_QUEUE_BYTES_MAX,
  entryOpsMax: ENTRY_OPS_MAX,
  entryBytesMax: ENTRY_BYTES_MAX,
  rangeDeleteKeysMax: RANGE_DELETE_KEYS_MAX,
  compareReadBytesMax: COMPARE_READ_BYTES_MAX,
});
