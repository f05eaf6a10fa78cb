/**
 * `openLocal`: reads straight from a node's data directory, for a process on the same host as the node. No HTTP, no
 * serialisation: a read is an LMDB lookup in shared memory (the figures are in docs/performance.md and
 * `npm run bench:local`).
 *
 * **Consistency.** Every read reflects one committed entry: `get` returns the key and the seq it reflects from one
 * LMDB read transaction, and each `range` page is one snapshot at its `seq`, exactly like the node's own HTTP
 * answers. Reads of one `LocalReader` never go back in time (seqs never decrease).
 *
 * **Freshness.** LMDB gives each reader a snapshot that stays as it was until renewed. lmdb-js renews it by itself at
 * the next event-loop turn (it resets its read transaction with a zero-delay timer), so a read after any `await` sees
 * every entry committed before it. Within one synchronous burst of reads, a read renews the snapshot first when it is
 * older than `staleMs`: with the default 0 before every read, so each read sees every entry the node committed
 * before the read began; a hot loop that can tolerate data some milliseconds old may raise it (the cost of renewing
 * is measured by `npm run bench:local`). `minSeq` waits (polling every `LOCAL_MIN_SEQ_POLL_MS`) until the data
 * directory has that seq: read-your-writes after a write through the HTTP API.
 *
 * The reader never writes: the directory is opened read-only, so it cannot disturb the node.
 *
 * **What it serves** is what the node's KV API serves: keys are checked as the node checks them (KEY_EMPTY,
 * KEY_TOO_LARGE), and Mercury's own records under the reserved prefix (`\0mercury/`: token records with their secret
 * hashes) are never served: a get of one is PERMISSION_DENIED, a range skips them (src/api/keys.ts).
 */
import { MercuryError, RANGE_LIMIT_MAX, isReservedKey, prefixEnd, validateKey, withoutReserved } from '../api/index.js';
// A type only: the store module (and LMDB with it) is loaded when `openLocal` is first called.
import type { Store } from '../store/index.js';
import { sleep, systemClock, type Clock } from '../clock/index.js';
import { ClientOptionsError } from './errors.js';
import { toBytes, type KeyValue, type KeyValueAtSeq } from './http-client.js';
import { LOCAL_MIN_SEQ_POLL_MS, LOCAL_STALE_MS_DEFAULT, MIN_SEQ_WAIT_MS_DEFAULT, RANGE_PAGE_LIMIT_DEFAULT } from './limits.js';
import { integerOption } from './options.js';
import type { RangeOptions, RangePage } from './client.js';

/** Options of `openLocal`. */
export interface LocalOptions {
  /** Renew the read snapshot before a read when it is older than this (ms; default 0: before every read). */
  readonly staleMs?: number;
}

/** Options of local reads. */
export interface LocalReadOptions {
  /** Wait until the data directory holds this seq. */
  readonly minSeq?: number;
  /** How long to wait for `minSeq` (ms; default 5,000), then `SEQ_WAIT_TIMEOUT`. */
  readonly minSeqTimeoutMs?: number;
}

export class LocalReader {
  private renewedMs = -Infinity;
  private lastSeq = 0;

  /** @internal Use `openLocal`. */
  constructor(
    private readonly store: Store,
    private readonly staleMs: number,
    private readonly clock: Clock,
  ) {}

  /** The seq of the latest entry this reader has seen (after renewing its snapshot if it is stale). */
  seq(): number {
    this.renewIfStale();
    return this.seenSeq(this.store.snapshotSeq());
  }

  /**
   * Renews the read snapshot when it is older than `staleMs` (always with 0, the default: then the clock is not read).
   * A renewal is one reset of LMDB's read transaction; the read that follows takes the newest snapshot.
   */
  private renewIfStale(force = false): void {
    if (this.staleMs > 0) {
      const now = this.clock.monotonicMs();
      if (!force && now - this.renewedMs < this.staleMs) return;
      this.renewedMs = now;
    }
    this.store.renewSnapshot();
  }

  /** Records a seq a read reflected; reads of one reader never go back in time. */
  private seenSeq(seq: number): number {
    if (seq > this.lastSeq) this.lastSeq = seq;
    return this.lastSeq;
  }

  /** Renews until the directory holds `minSeq`, or throws SEQ_WAIT_TIMEOUT. */
  private async ready(options: LocalReadOptions): Promise<void> {
    integerOption(options, 'minSeq', 0, 0, Number.MAX_SAFE_INTEGER);
    const timeoutMs = integerOption(options, 'minSeqTimeoutMs', MIN_SEQ_WAIT_MS_DEFAULT, 0, 3_600_000);
    const minSeq = options.minSeq ?? 0;
    if (this.seq() >= minSeq) return;
    const deadline = this.clock.monotonicMs() + timeoutMs;
    while (true) {
      this.renewIfStale(true);
      if (this.seenSeq(this.store.snapshotSeq()) >= minSeq) return;
      if (this.clock.monotonicMs() >= deadline)
        throw new MercuryError('SEQ_WAIT_TIMEOUT', `the data directory did not reach seq ${minSeq} within ${timeoutMs} ms (it is at ${this.lastSeq})`, {
          details: { seq: this.lastSeq },
        });
      await sleep(this.clock, LOCAL_MIN_SEQ_POLL_MS, { keepAlive: true });
    }
  }

  /**
   * The key with the seq the read reflects, or undefined when it does not exist. Synchronous (no waiting), for hot
   * paths; see `get` for `minSeq`.
   */
  getSync(key: string | Buffer): KeyValueAtSeq | undefined {
    const bytes = readableKey(key);
    this.renewIfStale();
    return this.read(bytes);
  }

  /** One key and the seq of the snapshot it was read from (both in one synchronous run: one snapshot). */
  private read(key: Buffer): KeyValueAtSeq | undefined {
    const { record, seq } = this.store.get(key);
    this.seenSeq(seq);
    return record === undefined ? undefined : { key, value: record.value, seq, createSeq: record.createSeq, modSeq: record.modSeq, version: record.version };
  }

  /** The key with the seq the read reflects, or undefined when it does not exist (like `MercuryClient.get`). */
  async get(key: string | Buffer, options: LocalReadOptions = {}): Promise<KeyValueAtSeq | undefined> {
    const bytes = readableKey(key);
    await this.ready(options);
    return this.read(bytes);
  }

  /** Every key under `prefix`, page by page; each page one snapshot at its `seq` (like `MercuryClient.range`). */
  async *range(prefix: string | Buffer, options: RangeOptions = {}): AsyncGenerator<RangePage, void, undefined> {
    const limit = integerOption(options, 'pageLimit', RANGE_PAGE_LIMIT_DEFAULT, 1, RANGE_LIMIT_MAX);
    const bytes = toBytes(prefix, 'prefix');
    if (bytes.length > 0) validateKey(bytes, 'prefix');
    await this.ready(options);
    // The prefix's keys without the reserved ones: at most two ranges, read one after the other. Pages with keys are
    // served; an empty one only when the whole range is empty (one page, as always).
    let served = false;
    for (const { start, end } of withoutReserved(bytes, prefixEnd(bytes))) {
      let after: Buffer | undefined;
      while (true) {
        this.renewIfStale();
        const page = this.store.range(start, end, limit, after);
        this.seenSeq(page.seq);
        const items: KeyValue[] = page.items.map(({ key, record }) => ({ key, value: record.value, createSeq: record.createSeq, modSeq: record.modSeq, version: record.version }));
        if (items.length === 0) break;
        served = true;
        yield { seq: page.seq, items };
        if (!page.more) break;
        after = items[items.length - 1]!.key;
      }
    }
    if (!served) yield { seq: this.seq(), items: [] };
  }

  /** Releases the data directory. */
  close(): Promise<void> {
    return this.store.close();
  }
}

/** A key as the node's KV API takes it for a read: 1 to KEY_BYTES_MAX bytes, outside the reserved key space. */
function readableKey(key: string | Buffer): Buffer {
  const bytes = toBytes(key);
  validateKey(bytes);
  if (isReservedKey(bytes))
    throw new MercuryError('PERMISSION_DENIED', 'key lies under the reserved prefix "\\u0000mercury/" (Mercury\'s own records), which no reader serves; manage tokens with mercury token', {
      details: { needs: 'a key outside "\\u0000mercury/"' },
    });
  return bytes;
}

/**
 * Opens a node's data directory read-only for reads in this process. Async because it loads LMDB on first use (so a
 * program that only talks HTTP never does). Throws `DATA_DIR_INVALID` when the directory is not a Mercury data
 * directory, and `ClientOptionsError` for a bad option.
 */
export async function openLocal(dataDir: string, options: LocalOptions = {}, clock: Clock = systemClock): Promise<LocalReader> {
  if (typeof dataDir !== 'string' || dataDir.length === 0) throw new ClientOptionsError('dataDir must be the path of a node\'s data directory');
  const staleMs = integerOption(options, 'staleMs', LOCAL_STALE_MS_DEFAULT, 0, 3_600_000);
  const store = await import('../store/index.js');
  try {
    return new LocalReader(store.Store.open({ path: dataDir, readOnly: true }), staleMs, clock);
  } catch (error) {
    throw new MercuryError('DATA_DIR_INVALID', `cannot open ${dataDir} for reading: ${(error as Error).message}`, { cause: error });
  }
}
