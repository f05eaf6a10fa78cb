/**
 * Group commit on the root. Requests queue while an entry is being committed; when it is durable, everything queued
 * (up to `entryOpsMax` / `entryBytesMax` of its CommitLimits) becomes the next entry in one LMDB write transaction, followed by one fsync,
 * and then every request of that entry is answered. Under light load an entry holds one request and latency is one
 * commit; under heavy load entries grow and the fsync cost is shared, so throughput follows the load.
 *
 * A request is acknowledged only once its entry is durable (its commit resolved, then `Store.flushed`). The batch runs
 * on the node's thread inside the write transaction. When something read through the store since the previous commit,
 * the commit's page writes, fsync and meta page run on lmdb-js's write thread (`Store.commitAsync`), so those readers
 * are served meanwhile; with none, on this thread (`Store.commit`), which costs less per entry (docs/decisions.md,
 * record 37). Entries are not pipelined (the next committed while this one syncs): one commit is under way at a time,
 * and with every client waiting on the same entry there is no next one to build (records 2 and 31).
 */
import assert from 'node:assert/strict';
import type { Clock } from '../clock/index.js';
import { MercuryError, isDataCorrupted } from '../errors/index.js';
import type { EncodedEntry } from '../log/index.js';
import { silentLogger, type Logger } from '../logging/index.js';
import { COUNT_BUCKETS, SECONDS_BUCKETS, type Registry } from '../metrics/index.js';
import { CompareReadLimitExceeded, RangeDeleteLimitExceeded, type Store, type WriteView } from '../store/index.js';
import type { CommitLimits } from './limits.js';
import { validateRequest, type WriteRequest, type WriteResult } from './requests.js';

interface Pending {
  readonly request: WriteRequest;
  readonly bytes: number;
  readonly ops: number;
  readonly resolve: (result: WriteResult) => void;
  readonly reject: (error: unknown) => void;
}

export interface GroupCommitOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly metrics: Registry;
  readonly limits: CommitLimits;
  /** The root's signer: returns the Ed25519 signature of an entry hash (src/trust/). */
  readonly sign?: (hash: Buffer) => Buffer;
  /** Where a step of the wall clock is reported (CLOCK_STEPPED). */
  readonly logger?: Logger;
}

/**
 * How far the wall clock may move apart from the monotonic clock between two commits before it counts as a step: a
 * second, plus 1,000 ppm of the time between them (NTP slews at most 500 ppm, so a long idle gap is not a step).
 */
const CLOCK_STEP_MS_MIN = 1_000;
const CLOCK_STEP_PPM = 1_000;

/**
 * An entry of at least this many bytes of ops is committed on lmdb-js's write thread even when nothing read: writing
 * its pages and syncing them held the node's thread about 0.6 s for a 90 MiB entry (docs/decisions.md, record 43),
 * where the thread crossings cost a few microseconds (record 37).
 */
const OFF_THREAD_ENTRY_BYTES_MIN = 1024 * 1024;

/**
 * Builds one entry from requests in a single write transaction: each request's compares are evaluated against the
 * state left by the requests before it, then its success or failure ops are applied.
 */
async function applyBatch(
  store: Store,
  timeMs: number,
  batch: readonly Pending[],
  sign: ((hash: Buffer) => Buffer) | undefined,
  limits: Pick<CommitLimits, 'rangeDeleteKeysMax' | 'compareReadBytesMax'>,
): Promise<{ committed: EncodedEntry | undefined; succeeded: boolean[]; offThread: boolean }> {
  const succeeded: boolean[] = [];
  const build = (view: WriteView): void => {
    // Keys the range deletes of this entry may still remove: the entry is one write transaction on every node.
    const { rangeDeleteKeysMax, compareReadBytesMax } = limits;
    let rangeKeysLeft = rangeDeleteKeysMax;
    batch.forEach(({ request }, index) => {
      const rangeKeysBefore = rangeKeysLeft;
      const comparedBytesBefore = view.comparedBytes();
      try {
        // Existence reads no record: deleting a key whose record is damaged (DELETE without ifModSeq) still works.
        const holds = request.compares.every((compare) => view.holds(compare, compareReadBytesMax));
        for (const op of holds ? request.success : request.failure) rangeKeysLeft -= view.apply(op, request.author, rangeKeysLeft);
        succeeded.push(holds);
      } catch (error) {
        if (isDataCorrupted(error))
          throw new RequestFailed(
            index,
            new MercuryError('DATA_CORRUPTED', `the write was not applied: ${error.message}`, { cause: error, details: error.details as Record<string, unknown> }),
          );
        if (error instanceof RangeDeleteLimitExceeded) {
          // Within the limit alone, it waits for an entry of its own; beyond it, it can never commit.
          if (rangeKeysBefore < rangeDeleteKeysMax) throw new RequestDeferred(index);
          throw new RequestFailed(index, rangeDeleteTooLarge(rangeDeleteKeysMax));
        }
        if (error instanceof CompareReadLimitExceeded) {
          if (comparedBytesBefore > 0) throw new RequestDeferred(index);
          throw new RequestFailed(index, compareReadTooLarge(compareReadBytesMax));
        }
        throw error;
      }
    });
  };
  // Off this thread when something read since the last commit: readers then go on during the sync; with none, the
  // commit on this thread costs less per entry (docs/decisions.md, record 37), unless the entry is large (record 43).
  const bytes = batch.reduce((sum, pending) => sum + pending.bytes, 0);
  const offThread = store.readSinceLastCommit() || bytes >= OFF_THREAD_ENTRY_BYTES_MIN;
  const committed = offThread ? await store.commitAsync(timeMs, build, sign) : store.commit(timeMs, build, sign);
  return { committed, succeeded, offThread };
}

/**
 * A request of the batch cannot commit: it read a damaged key record (a compare, or a put that carries the old
 * record's createSeq and version on), or its range deletes would remove more keys than one entry may. Thrown out of
 * the write transaction, which aborts it: nothing of the batch was applied.
 */
class RequestFailed extends Error {
  constructor(
    readonly index: number,
    readonly failure: MercuryError,
  ) {
    super(failure.message);
  }
}

/**
 * A request's range deletes fit the entry limit alone but not after the range deletes of the requests before it in
 * the batch: the transaction is aborted, and the batch ends before it.
 */
class RequestDeferred extends Error {
  constructor(readonly index: number) {
    super('deferred to the next entry');
  }
}

function rangeDeleteTooLarge(keysMax: number): MercuryError {
  return new MercuryError(
    'RANGE_DELETE_TOO_LARGE',
    `the transaction's range deletes would remove more than ${keysMax} keys; one transaction removes at most ${keysMax} ` +
      `by range: delete in pieces (narrower ranges, or the keys of one range page at a time)`,
    { details: { limit: keysMax } },
  );
}

function compareReadTooLarge(bytesMax: number): MercuryError {
  return new MercuryError(
    'COMPARE_READ_TOO_LARGE',
    `the transaction's compares would read more than ${bytesMax} bytes of key records (each compared key's value and ` +
      `a 24-byte header, once per key); compare fewer keys that hold large values, or compare their modSeq in pieces`,
    { details: { limit: bytesMax } },
  );
}

export type CommittedListener = (committed: EncodedEntry) => void;

export class GroupCommitter {
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly limits: CommitLimits;
  private readonly sign: ((hash: Buffer) => Buffer) | undefined;
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private running = false;
  private closing = false;
  private idle: Promise<void> = Promise.resolve();
  /**
   * The clocks at the last commit of this process (monotonic undefined before the first: then the wall time is the
   * head entry's), to tell a step of the wall clock.
   */
  private lastClock: { readonly wallMs: number; readonly monotonicMs: number | undefined };
  private readonly logger: Logger;
  /** Requests the next batch may take: set when a request's range deletes did not fit the entry before it. */
  private nextBatchRequestsMax = Number.POSITIVE_INFINITY;
  /** Whether the last entry was committed on lmdb-js's write thread (its requests were answered in a poll phase). */
  private lastOffThread = false;
  private readonly listeners: CommittedListener[] = [];
  private readonly metrics;

  constructor(options: GroupCommitOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.limits = options.limits;
    this.sign = options.sign;
    this.logger = options.logger ?? silentLogger;
    const head = this.store.head();
    this.lastClock = { wallMs: head.seq === 0 ? 0 : (this.store.readLog(head.seq, 1)[0]?.entry.timeMs ?? 0), monotonicMs: undefined };
    const registry = options.metrics;
    this.metrics = {
      commitSeconds: registry.histogram('mercury_commit_seconds', 'Time to commit and fsync one entry.', SECONDS_BUCKETS),
      batchRequests: registry.histogram('mercury_commit_batch_requests', 'Write requests per committed entry.', COUNT_BUCKETS),
      entryOps: registry.histogram('mercury_entry_ops', 'Operations per committed entry.', COUNT_BUCKETS),
      entries: registry.counter('mercury_entries_written_total', 'Entries committed to the log.'),
      bytes: registry.counter('mercury_entry_bytes_written_total', 'Bytes of entry records committed to the log.'),
      refused: registry.counter('mercury_commit_refused_total', 'Write requests refused because the commit queue was full.'),
      clockSteps: registry.counter('mercury_clock_steps_total', 'Steps of the wall clock seen between two commits (entry times follow the wall clock, record 42).'),
      offThread: registry.counter('mercury_entries_committed_off_thread_total', "Entries committed on lmdb-js's write thread, because something read since the previous commit (the rest block the node's thread while they sync)."),
    };
    registry.gauge('mercury_commit_queue_requests', 'Write requests waiting for the next entry.', () => this.queue.length);
  }

  /** Write requests committed since start (each entry carries one or more): a dashboard's writes per second. */
  get writesCommitted(): number {
    return this.metrics.batchRequests.observations.sum;
  }

  /** Called with every entry once it is durable, in seq order. */
  onCommitted(listener: CommittedListener): void {
    this.listeners.push(listener);
  }

  /**
   * Validates a request, queues it for the next entry, and resolves once that entry is durable. `system`: the root's
   * own write under its reserved keys (src/trust/), refused from anyone else.
   */
  submit(request: WriteRequest, system = false): Promise<WriteResult> {
    if (this.closing) return Promise.reject(new MercuryError('SHUTTING_DOWN', 'node is shutting down; retry on another node or later'));
    let bytes: number;
    try {
      bytes = validateRequest(request, this.limits.valueBytesMax, system);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    // Unreachable with the production limits (the largest body fits in an entry, asserted in src/limits.ts), but a
    // smaller entry limit must still bound every entry: replication carries nothing larger (src/node/limits.ts).
    if (bytes > this.limits.entryBytesMax)
      return Promise.reject(
        new MercuryError('BODY_TOO_LARGE', `the transaction's ops take ${bytes} bytes; one entry holds at most ${this.limits.entryBytesMax}; split the transaction`, {
          details: { limit: this.limits.entryBytesMax },
        }),
      );
    if (this.queue.length >= this.limits.queueRequestsMax || this.queuedBytes + bytes > this.limits.queueBytesMax) {
      this.metrics.refused.inc();
      return Promise.reject(
        new MercuryError('OVERLOADED', `commit queue is full (${this.queue.length} requests, ${this.queuedBytes} bytes); retry with backoff`),
      );
    }
    return new Promise<WriteResult>((resolve, reject) => {
      const ops = Math.max(request.success.length, request.failure.length);
      this.queue.push({ request, bytes, ops, resolve, reject });
      this.queuedBytes += bytes;
      if (!this.running) {
        this.running = true;
        this.idle = this.run();
      }
    });
  }

  private takeBatch(): Pending[] {
    let ops = 0;
    let bytes = 0;
    let count = 0;
    const requestsMax = this.nextBatchRequestsMax;
    this.nextBatchRequestsMax = Number.POSITIVE_INFINITY;
    for (const pending of this.queue) {
      if (count > 0 && (count >= requestsMax || ops + pending.ops > this.limits.entryOpsMax || bytes + pending.bytes > this.limits.entryBytesMax)) break;
      ops += pending.ops;
      bytes += pending.bytes;
      count++;
    }
    const batch = this.queue.slice(0, count);
    this.queue = this.queue.slice(count);
    this.queuedBytes -= bytes;
    return batch;
  }

  /** Puts requests of a batch that did not commit back at the front of the queue, in their order. */
  private requeue(requests: readonly Pending[]): void {
    this.queue = [...requests, ...this.queue];
    this.queuedBytes += requests.reduce((sum, pending) => sum + pending.bytes, 0);
  }

  private async run(): Promise<void> {
    do {
      // Take the batch on a check phase of the event loop that follows a poll phase, never at once: every request whose
      // bytes arrived in this turn (or during the previous commit) is then already queued and joins the entry. Starting
      // at once would make the first request of each turn an entry of its own (record 2). A commit on the write thread
      // resolves in a poll phase and its requests are answered there: one immediate would then take the batch in the
      // same turn, before the clients just answered could send their next requests, and they would settle into two
      // halves that alternate, each half an entry; so after one, a turn more (record 37).
      await new Promise((resolve) => setImmediate(this.lastOffThread ? () => setImmediate(resolve) : resolve));
      const batch = this.takeBatch();
      const started = this.clock.monotonicMs();
      let succeeded: boolean[];
      let committed: EncodedEntry | undefined;
      let offThread: boolean;
      try {
        const timeMs = this.entryTimeMs();
        ({ committed, succeeded, offThread } = await applyBatch(this.store, timeMs, batch, this.sign, this.limits));
        this.lastOffThread = offThread;
        await this.store.flushed();
      } catch (error) {
        if (error instanceof RequestFailed) {
          // Only that request fails: its outcome cannot be computed from damaged data (and overwriting the record
          // would give the key a createSeq and version that differ from the sound copies on replicas), or it removes
          // more keys by range than an entry may. The others of the batch go back to the front of the queue, in their
          // order, for the next entry.
          const { index, failure } = error;
          batch[index]!.reject(failure);
          this.requeue(batch.filter((_, i) => i !== index));
          continue;
        }
        if (error instanceof RequestDeferred) {
          // The next entry ends before the request that did not fit; it starts the one after.
          this.requeue(batch);
          this.nextBatchRequestsMax = error.index;
          continue;
        }
        // A storage failure (disk full, I/O error) arrives as its own stable error from the store: the transaction
        // was aborted, so the writes were not applied. Anything else is a bug.
        const failure =
          error instanceof MercuryError && error.code.startsWith('STORAGE_')
            ? error
            : new MercuryError('INTERNAL', 'committing the write failed (see the node log); it may not have been applied', { cause: error });
        for (const pending of batch) pending.reject(failure);
        continue;
      }
      const seq = committed?.entry.seq ?? this.store.head().seq;
      assert.equal(succeeded.length, batch.length);
      batch.forEach((pending, i) => pending.resolve({ succeeded: succeeded[i]!, seq }));
      this.metrics.commitSeconds.observe((this.clock.monotonicMs() - started) / 1000);
      this.metrics.batchRequests.observe(batch.length);
      if (committed !== undefined) {
        if (offThread) this.metrics.offThread.inc();
        this.metrics.entryOps.observe(committed.entry.ops.length);
        this.metrics.entries.inc();
        this.metrics.bytes.inc(committed.record.length);
        for (const listener of this.listeners) listener(committed);
      }
    } while (this.queue.length > 0);
    this.running = false;
  }

  /**
   * The next entry's time: the wall clock as it reads now, even when that is earlier than the last entry's. Holding
   * entry times at the latest one pinned every later entry to a forward step of the clock until real time caught up,
   * across restarts, and blinded replicas' lag meanwhile (docs/decisions.md, record 42); nothing orders entries by
   * time (seq does). A step is logged, with code CLOCK_STEPPED: between two commits of this process, the wall clock
   * moved otherwise than the monotonic clock; at the first commit, the entry is earlier than the head entry.
   */
  private entryTimeMs(): number {
    const wallMs = this.clock.nowMs();
    const monotonicMs = this.clock.monotonicMs();
    const last = this.lastClock;
    const elapsedMs = last.monotonicMs === undefined ? 0 : monotonicMs - last.monotonicMs;
    const stepMs = last.monotonicMs === undefined ? Math.min(0, wallMs - last.wallMs) : wallMs - last.wallMs - elapsedMs;
    if (Math.abs(stepMs) > CLOCK_STEP_MS_MIN + (elapsedMs * CLOCK_STEP_PPM) / 1e6) {
      this.metrics.clockSteps.inc();
      this.logger.log('warn', 'the wall clock stepped; entry times follow it', {
        code: 'CLOCK_STEPPED',
        stepMs: Math.round(stepMs),
        previousWallMs: last.wallMs,
        entryTimeMs: wallMs,
      });
    }
    this.lastClock = { wallMs, monotonicMs };
    // The format's time is a u64: a clock before 1970 stamps 0 rather than failing the commit.
    return Math.max(0, wallMs);
  }

  /** Refuses new requests and waits until everything queued is committed. */
  async close(): Promise<void> {
    this.closing = true;
    await this.idle;
  }
}
