/**
 * Transactions on the client side: the plain-object form (exactly the JSON of `POST /v1/txn`, README
 * "Transactions") and a typed builder that produces it.
 *
 * ```ts
 * const { succeeded } = await client
 *   .txn()
 *   .compare(cmp.value('app/mode', '=', 'blue'), cmp.missing('app/lock'))
 *   .success(op.put('app/mode', 'green'), op.delete('app/old'))
 *   .failure(op.put('app/conflicts', '1'))
 *   .commit();
 * ```
 *
 * `cmp` and `op` turn strings (as UTF-8) and Buffers into bytes and format them with the one formatter of the wire
 * contract (src/api/txn.ts), so they produce exactly the JSON a node shows for the same ops: each byte field as text
 * or base64 with its `keyEncoding`, `valueEncoding`, ...; any bytes survive.
 */
import { formatCompare, formatOp, prefixEnd, type CompareOp, type TxnCompareJson, type TxnJson, type TxnOpJson } from '../api/index.js';

import { toBytes } from './http-client.js';

export type { CompareOp, TxnCompareJson, TxnJson, TxnOpJson };

/** Bytes in a transaction: text as UTF-8, or any bytes as a Buffer. */
export type Bytes = string | Buffer;

/** What `GET /v1/status` answers (fields a node may add later are kept too). */
export interface NodeStatus {
  readonly role: string;
  readonly version: string;
  readonly nodeId: string;
  readonly datasetId: string;
  readonly seq: number;
  /** The hash of entry `seq`; null for a token that does not read every key (it would test guesses of values). */
  readonly headHash: string | null;
  /** The retained log; null when a damaged log key keeps the node from reading its bounds (see `storage`). */
  readonly log: { readonly firstSeq: number; readonly lastSeq: number; readonly entries: number; readonly bytes: number } | null;
  readonly keys: number;
  readonly [field: string]: unknown;
}

/** Compare constructors for `TxnBuilder.compare`. A missing key has modSeq, version and createSeq 0. */
export const cmp = Object.freeze({
  /** The key exists. */
  exists: (key: Bytes): TxnCompareJson => formatCompare({ key: toBytes(key), target: 'exists', exists: true }),
  /** The key does not exist. */
  missing: (key: Bytes): TxnCompareJson => formatCompare({ key: toBytes(key), target: 'exists', exists: false }),
  /** The key's value compares to `value` (bytewise). */
  value: (key: Bytes, operator: CompareOp, value: Bytes): TxnCompareJson => formatCompare({ key: toBytes(key), target: 'value', operator, value: toBytes(value, 'value') }),
  /** The seq of the key's last change compares to `modSeq`. */
  modSeq: (key: Bytes, operator: CompareOp, modSeq: number): TxnCompareJson => formatCompare({ key: toBytes(key), target: 'modSeq', operator, number: modSeq }),
  /** The number of puts since the key was created compares to `version`. */
  version: (key: Bytes, operator: CompareOp, version: number): TxnCompareJson => formatCompare({ key: toBytes(key), target: 'version', operator, number: version }),
  /** The seq that created the key compares to `createSeq`. */
  createSeq: (key: Bytes, operator: CompareOp, createSeq: number): TxnCompareJson =>
    formatCompare({ key: toBytes(key), target: 'createSeq', operator, number: createSeq }),
});

/** Op constructors for `TxnBuilder.success` and `.failure`. */
export const op = Object.freeze({
  put: (key: Bytes, value: Bytes): TxnOpJson => formatOp({ type: 'put', key: toBytes(key), value: toBytes(value, 'value') }),
  delete: (key: Bytes): TxnOpJson => formatOp({ type: 'delete', key: toBytes(key) }),
  /** Every key under a non-empty prefix (sent as the range it covers). */
  deletePrefix: (prefix: Bytes): TxnOpJson => formatOp({ type: 'deleteRange', start: toBytes(prefix, 'prefix'), end: prefixEnd(toBytes(prefix, 'prefix')) }),
  /** Keys k with start <= k < end; without `end`, every key from `start` on. */
  deleteRange: (start: Bytes, end?: Bytes): TxnOpJson => formatOp({ type: 'deleteRange', start: toBytes(start, 'start'), end: end === undefined ? Buffer.alloc(0) : toBytes(end, 'end') }),
});

/**
 * Builds a transaction: compares with `compare`, ops applied when all hold with `success`, ops applied otherwise
 * with `failure` (the JSON form's field names; not `if`/`then`/`else`, because an object with a `then` method is
 * taken for a promise by `await`). Each may be called several times and appends. `commit()` sends it (a write: see
 * `MercuryClient` for when it is retried); `toJSON()` gives the plain-object form.
 */
export class TxnBuilder {
  private readonly compares: TxnCompareJson[] = [];
  private readonly successOps: TxnOpJson[] = [];
  private readonly failureOps: TxnOpJson[] = [];

  constructor(private readonly send: (txn: TxnJson, options?: { signal?: AbortSignal }) => Promise<{ succeeded: boolean; seq: number }>) {}

  /** Conditions that must all hold for `success` to be applied (see `cmp`). */
  compare(...compares: TxnCompareJson[]): this {
    this.compares.push(...compares);
    return this;
  }

  /** Ops applied when every compare holds (see `op`). */
  success(...ops: TxnOpJson[]): this {
    this.successOps.push(...ops);
    return this;
  }

  /** Ops applied when some compare does not hold. */
  failure(...ops: TxnOpJson[]): this {
    this.failureOps.push(...ops);
    return this;
  }

  /** The plain-object (JSON) form. */
  toJSON(): TxnJson {
    return { compare: [...this.compares], success: [...this.successOps], failure: [...this.failureOps] };
  }

  /**
   * Sends the transaction; `succeeded` says which branch was applied, `seq` the entry (or the head if none).
   * `signal` abandons it, as for every call (`CallSignal`).
   */
  commit(options: { signal?: AbortSignal } = {}): Promise<{ succeeded: boolean; seq: number }> {
    return this.send(this.toJSON(), options);
  }
}
