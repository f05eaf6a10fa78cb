/**
 * `MercuryClient`: the TypeScript client of a set of nodes. It sends each call to one node over `NodeClient` and
 * retries across the URLs it was given, by these rules:
 *
 * - **Reads** (`get`, `range`, `status`) are retried on the next URL when a node cannot be reached, does not answer
 *   within `requestTimeoutMs`, or answers 503 (overloaded, shutting down, no upstream). A read has no effect, so
 *   sending it twice is harmless.
 * - **Writes** (`put`, `delete`, `deletePrefix`, `txn`) are retried only when it is certain the node did not apply
 *   them: the connection was never made (refused, unknown host, a TCP connect or TLS handshake that did not complete), or the node answered 503
 *   `OVERLOADED`, `BODY_BUDGET_EXCEEDED` or `SHUTTING_DOWN`, which it answers only before queueing a write. A write that was sent and got no
 *   answer (timeout, connection cut) may have been applied: it fails with `OutcomeUnknownError` and is not retried,
 *   because a second put could overwrite a newer value and a second transaction could apply twice.
 * - A call that failed on a pooled keep-alive connection is first sent once more to the same node on a fresh
 *   connection, by `NodeClient`, when that is safe (a read; a write none of whose bytes was written; keep-alive.ts),
 *   and only then counts as an attempt here. Writes keep the rule above.
 * - Every other error answer (4xx, 412, 504, ...) is thrown at once as its typed `ServerError`.
 *
 * One call makes at most `attemptsMax` attempts. The first attempt goes to the node that answered last; each retry
 * goes to the next URL. Retries to URLs not yet tried in this call go at once; once every URL was tried, each retry
 * waits a jittered exponential backoff (backoff.ts). When every attempt failed without an answer the call throws
 * `NoNodeReachableError` (its `errors` list each attempt); when the last attempt was a 503, that error.
 */
import { sleep, systemClock, type Clock } from '../clock/index.js';
import { backoffDelayMs } from './backoff.js';
import { ClientOptionsError, NoNodeReachableError, OutcomeUnknownError, ServerError, UnavailableError } from './errors.js';
import { checkSignal, NodeClient, signalProblem, type CallSignal, type KeyValue, type KeyValueAtSeq, type RangePageResult, type ReadOptions, type TxnResult, type WriteOptions, type WriteResult } from './http-client.js';
import { MIN_SEQ_WAIT_MS_MAX, RANGE_LIMIT_MAX } from '../api/index.js';
import { RANGE_PAGE_LIMIT_DEFAULT } from './limits.js';
import { integerOption, validateClientOptions, type ClientOptions, type ValidatedClientOptions } from './options.js';
import { TxnBuilder, type NodeStatus, type TxnJson } from './txn.js';
import { Watch, type WatchOptions } from './watch.js';
import { isWireUrl } from './wire.js';

/** One page of a range: keys in key order, all from one snapshot of one node at `seq`. */
export interface RangePage {
  readonly seq: number;
  readonly items: readonly KeyValue[];
}

/** Options of `range`. */
export interface RangeOptions extends ReadOptions {
  /** Keys per page (1..10,000; default 1,000). */
  readonly pageLimit?: number;
}

type CallKind = 'read' | 'write';

/** Codes of 503 answers that a node gives only for a write it never queued, so sending it again is safe. */
const WRITE_NOT_APPLIED_CODES: ReadonlySet<string> = new Set(['OVERLOADED', 'BODY_BUDGET_EXCEEDED', 'SHUTTING_DOWN']);

function isRetryable(kind: CallKind, error: unknown): boolean {
  if (error instanceof UnavailableError) return kind === 'read' || !error.requestSent;
  if (error instanceof ServerError && error.status === 503) return kind === 'read' || WRITE_NOT_APPLIED_CODES.has(error.code);
  return false;
}

/**
 * What a call its caller abandoned rejects with: the signal's reason, or for a write that may have reached a node
 * (`error`, the attempt's failure, says it was sent) OutcomeUnknownError: the node may still apply it.
 */
function abandonedCall(kind: CallKind, what: string, signal: AbortSignal, error: unknown): Error {
  // A write is retried only while no attempt may have reached a node (isRetryable): the last attempt's error says.
  if (kind === 'write' && error instanceof UnavailableError && error.requestSent)
    return new OutcomeUnknownError(`${what}: abandoned by its caller (its signal aborted) after it was sent; the write may or may not have been applied`, error);
  // The reason as given (AbortSignal.abort() and .timeout() give a DOMException, an Error); anything else is wrapped.
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return Object.assign(new Error(`${what}: abandoned by its caller (its signal aborted: ${String(reason)})`, { cause: reason }), { name: 'AbortError' });
}

/** Waits `ms`, or less when `signal` aborts meanwhile. */
function pause(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return sleep(clock, ms, { keepAlive: true });
  return new Promise((resolve) => {
    const timer = clock.setTimeout(done, ms, { keepAlive: true });
    function done(): void {
      timer.cancel();
      signal!.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The `signal` of a call's options, checked (NodeClient checks the options of get, put and delete itself). */
function signalOf(options: CallSignal): AbortSignal | undefined {
  if (typeof options !== 'object' || options === null) throw new ClientOptionsError('options must be an object');
  checkSignal(options.signal);
  return options.signal;
}

function checkReadOptions(options: ReadOptions): void {
  checkSignal(options.signal);
  integerOption(options, 'minSeq', 0, 0, Number.MAX_SAFE_INTEGER);
  integerOption(options, 'minSeqTimeoutMs', 0, 0, MIN_SEQ_WAIT_MS_MAX);
}

export class MercuryClient {
  /** The validated options this client runs with. */
  readonly options: ValidatedClientOptions;
  private readonly nodes: readonly NodeClient[];
  /** The node that answered last: where the next call starts. */
  private preferred = 0;
  private readonly watches = new Set<Watch>();

  constructor(
    options: ValidatedClientOptions,
    private readonly clock: Clock = systemClock,
  ) {
    this.options = options;
    this.nodes = options.urls.map((url) => new NodeClient(url, options.requestTimeoutMs, options.tls, options.authorization));
  }

  /**
   * One call with its retries. The first attempt goes to the preferred node without the retry loop's async machinery:
   * it is the only one nearly every call makes, and a closed loop of callers pays in garbage for every layer (wire.ts).
   */
  private call<T>(kind: CallKind, what: string, attempt: (node: NodeClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal !== undefined) {
      // Not an AbortSignal: ClientOptionsError, before its `aborted` is believed. Abandoned before it began: nothing sent.
      const problem = signalProblem(signal);
      if (problem !== undefined) return Promise.reject(problem);
      if (signal.aborted) return Promise.reject(abandonedCall(kind, what, signal, undefined));
    }
    const start = this.preferred;
    let first: Promise<T>;
    try {
      first = attempt(this.nodes[start]!);
    } catch (error) {
      return this.retry(kind, what, attempt, start, error, signal);
    }
    return first.then(undefined, (error: unknown) => this.retry(kind, what, attempt, start, error, signal));
  }

  /** Attempts 2 and later, after the first (to `start`) failed with `firstError`. */
  private async retry<T>(kind: CallKind, what: string, attempt: (node: NodeClient) => Promise<T>, start: number, firstError: unknown, signal: AbortSignal | undefined): Promise<T> {
    const errors: Error[] = [];
    const { attemptsMax, retryDelayMsBase, retryDelayMsMax } = this.options;
    let error = firstError;
    for (let i = 1; ; i++) {
      if (signal?.aborted) throw abandonedCall(kind, what, signal, error);
      if (!isRetryable(kind, error)) {
        if (kind === 'write' && error instanceof UnavailableError)
          throw new OutcomeUnknownError(`${what}: ${error.message}; the write may or may not have been applied, so it was not retried`, error);
        throw error;
      }
      errors.push(error as Error);
      if (i >= attemptsMax) break;
      if (i >= this.nodes.length) {
        await pause(this.clock, backoffDelayMs(i - this.nodes.length, retryDelayMsBase, retryDelayMsMax), signal);
        if (signal?.aborted) throw abandonedCall(kind, what, signal, undefined);
      }
      const index = (start + i) % this.nodes.length;
      try {
        const result = await attempt(this.nodes[index]!);
        this.preferred = index;
        return result;
      } catch (failed) {
        error = failed;
      }
    }
    const last = errors[errors.length - 1];
    if (last instanceof ServerError) throw last;
    throw new NoNodeReachableError(`${what}: no node answered in ${errors.length} attempts (${this.options.urls.join(', ')}); last: ${last?.message}`, errors);
  }

  /** The key, or undefined when it does not exist. Retried on another node when one cannot answer. */
  get(key: string | Buffer, options: ReadOptions = {}): Promise<KeyValueAtSeq | undefined> {
    // NodeClient checks the options (minSeq, ...): before anything is sent, on either transport.
    return this.call('read', 'get', (node) => node.get(key, options), options?.signal);
  }

  /**
   * Every key under `prefix` (text; '' for all keys), page by page, in key order. Each page is one snapshot at its
   * `seq`; pages are separate reads, so a write between two pages may show in the second and not the first. A page
   * is retried on another node like `get`, and asks that node for at least the previous page's seq, so a range never
   * goes back in time when it fails over to a replica that is behind.
   */
  async *range(prefix: string, options: RangeOptions = {}): AsyncGenerator<RangePage, void, undefined> {
    checkReadOptions(options);
    const limit = integerOption(options, 'pageLimit', RANGE_PAGE_LIMIT_DEFAULT, 1, RANGE_LIMIT_MAX);
    let cursor: string | null = null;
    let minSeq = options.minSeq;
    do {
      const after: string | null = cursor;
      const pageOptions = { limit, cursor: after, minSeq, minSeqTimeoutMs: options.minSeqTimeoutMs, signal: options.signal };
      const page: RangePageResult = await this.call('read', 'range', (node) => node.rangePage(prefix, pageOptions), options.signal);
      yield { seq: page.seq, items: page.items };
      minSeq = Math.max(minSeq ?? 0, page.seq);
      cursor = page.more ? page.cursor : null;
    } while (cursor !== null);
  }

  /** Sets a key; with `ifModSeq`, only if the key's modSeq is that (0: only if absent), else `CompareFailedError`. */
  put(key: string | Buffer, value: string | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    return this.call('write', 'put', (node) => node.put(key, value, options), options?.signal);
  }

  /** Deletes a key (`deleted: false` when it did not exist; nothing is committed then). `ifModSeq` as for put. */
  delete(key: string | Buffer, options: WriteOptions = {}): Promise<WriteResult & { deleted: boolean }> {
    return this.call('write', 'delete', (node) => node.delete(key, options), options?.signal);
  }

  /** Deletes every key under a non-empty prefix, in one entry. */
  async deletePrefix(prefix: string, options: CallSignal = {}): Promise<WriteResult> {
    if (typeof prefix !== 'string' || prefix.length === 0) throw new ClientOptionsError('deletePrefix needs a non-empty prefix');
    const signal = signalOf(options);
    return await this.call('write', 'deletePrefix', (node) => node.deletePrefix(prefix, options), signal);
  }

  /** A transaction builder (`.compare(...).success(...).failure(...).commit()`), ... */
  txn(): TxnBuilder;
  /** ... or a transaction in its plain-object (JSON) form, sent at once. */
  txn(txn: TxnJson, options?: CallSignal): Promise<TxnResult>;
  txn(txn?: TxnJson, options: CallSignal = {}): TxnBuilder | Promise<TxnResult> {
    // Async: a bad signal rejects, as every call's bad options do.
    const send = async (body: TxnJson, sendOptions: CallSignal = {}): Promise<TxnResult> => {
      const signal = signalOf(sendOptions);
      return await this.call('write', 'txn', (node) => node.txn(body, sendOptions), signal);
    };
    return txn === undefined ? new TxnBuilder(send) : send(txn, options);
  }

  /** The status of a node (the one that answered last, else the next). */
  async status(options: CallSignal = {}): Promise<NodeStatus> {
    const signal = signalOf(options);
    return await this.call('read', 'status', (node) => node.status(options), signal);
  }

  /**
   * Watches keys under one or more prefixes: an async iterator of changes that reconnects and resumes by itself
   * (watch.ts). Close it with `return()` (or `break` out of `for await`), or close the client.
   */
  watch(options: WatchOptions): Watch {
    if (this.options.urls.some(isWireUrl)) throw new ClientOptionsError('watches need the nodes\' http(s):// URLs; a wire URL (mercury+tcp://) carries get, put and delete only');
    const watch = new Watch(this.options, options, this.clock, () => this.watches.delete(watch));
    this.watches.add(watch);
    return watch;
  }

  /** Closes every open watch. HTTP calls need no closing (idle connections close by themselves). */
  close(): void {
    for (const watch of this.watches) void watch.return();
    this.watches.clear();
  }
}

/**
 * A client of the nodes at `urls` (one URL or several: a root and its replicas, in order of preference). Checks the
 * options and throws `ClientOptionsError` naming the first bad one; connects lazily.
 */
export function connect(urls: string | readonly string[], options: ClientOptions = {}): MercuryClient {
  return new MercuryClient(validateClientOptions(urls, options));
}
