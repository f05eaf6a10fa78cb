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
 * Strings are sent as UTF-8 text fields (`key`, `value`, ...), Buffers as their base64 twins (`keyBase64`, ...), so
 * any bytes survive.
 */

/** A compare operator: `=`, `!=`, `<`, `>`. */
export type CompareOp = '=' | '!=' | '<' | '>';

/** Bytes in a transaction: text as UTF-8, or any bytes as a Buffer. */
export type Bytes = string | Buffer;

/** A compare of the JSON form. Exactly one target; keys and values either as text or base64. */
export type TxnCompareJson = ({ readonly key: string } | { readonly keyBase64: string }) &
  (
    | { readonly exists: boolean }
    | { readonly value: string; readonly op?: CompareOp }
    | { readonly valueBase64: string; readonly op?: CompareOp }
    | { readonly modSeq: number; readonly op?: CompareOp }
    | { readonly version: number; readonly op?: CompareOp }
    | { readonly createSeq: number; readonly op?: CompareOp }
  );

/** An op of the JSON form. */
export type TxnOpJson =
  | ({ readonly op: 'put' } & ({ readonly key: string } | { readonly keyBase64: string }) & ({ readonly value: string } | { readonly valueBase64: string }))
  | ({ readonly op: 'delete' } & ({ readonly key: string } | { readonly keyBase64: string }))
  | ({ readonly op: 'deletePrefix' } & ({ readonly prefix: string } | { readonly prefixBase64: string }))
  | ({ readonly op: 'deleteRange' } & ({ readonly start: string } | { readonly startBase64: string }) & ({ readonly end?: string } | { readonly endBase64?: string }));

/** The JSON form of a transaction, as `POST /v1/txn` takes it. */
export interface TxnJson {
  readonly compare?: readonly TxnCompareJson[];
  readonly success?: readonly TxnOpJson[];
  readonly failure?: readonly TxnOpJson[];
}

/** What `GET /v1/status` answers (fields a node may add later are kept too). */
export interface NodeStatus {
  readonly role: string;
  readonly version: string;
  readonly nodeId: string;
  readonly datasetId: string;
  readonly seq: number;
  readonly headHash: string;
  readonly log: { readonly firstSeq: number; readonly lastSeq: number; readonly entries: number; readonly bytes: number };
  readonly keys: number;
  readonly [field: string]: unknown;
}

/** `{ name: text }` for a string, `{ nameBase64: base64 }` for a Buffer. */
function bytesField<N extends string>(name: N, bytes: Bytes): Record<N, string> | Record<`${N}Base64`, string> {
  return (typeof bytes === 'string' ? { [name]: bytes } : { [`${name}Base64`]: bytes.toString('base64') }) as Record<N, string>;
}

/** Compare constructors for `TxnBuilder.compare`. A missing key has modSeq, version and createSeq 0. */
export const cmp = Object.freeze({
  /** The key exists. */
  exists: (key: Bytes): TxnCompareJson => ({ ...bytesField('key', key), exists: true }),
  /** The key does not exist. */
  missing: (key: Bytes): TxnCompareJson => ({ ...bytesField('key', key), exists: false }),
  /** The key's value compares to `value` (bytewise). */
  value: (key: Bytes, op: CompareOp, value: Bytes): TxnCompareJson => ({ ...bytesField('key', key), ...bytesField('value', value), op }),
  /** The seq of the key's last change compares to `modSeq`. */
  modSeq: (key: Bytes, op: CompareOp, modSeq: number): TxnCompareJson => ({ ...bytesField('key', key), modSeq, op }),
  /** The number of puts since the key was created compares to `version`. */
  version: (key: Bytes, op: CompareOp, version: number): TxnCompareJson => ({ ...bytesField('key', key), version, op }),
  /** The seq that created the key compares to `createSeq`. */
  createSeq: (key: Bytes, op: CompareOp, createSeq: number): TxnCompareJson => ({ ...bytesField('key', key), createSeq, op }),
});

/** Op constructors for `TxnBuilder.success` and `.failure`. */
export const op = Object.freeze({
  put: (key: Bytes, value: Bytes): TxnOpJson => ({ op: 'put', ...bytesField('key', key), ...bytesField('value', value) }),
  delete: (key: Bytes): TxnOpJson => ({ op: 'delete', ...bytesField('key', key) }),
  /** Every key under a non-empty prefix. */
  deletePrefix: (prefix: Bytes): TxnOpJson => ({ op: 'deletePrefix', ...bytesField('prefix', prefix) }),
  /** Keys k with start <= k < end; without `end`, every key from `start` on. */
  deleteRange: (start: Bytes, end?: Bytes): TxnOpJson =>
    ({ op: 'deleteRange', ...bytesField('start', start), ...(end === undefined ? {} : bytesField('end', end)) }),
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

  constructor(private readonly send: (txn: TxnJson) => Promise<{ succeeded: boolean; seq: number }>) {}

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

  /** Sends the transaction; `succeeded` says which branch was applied, `seq` the entry (or the head if none). */
  commit(): Promise<{ succeeded: boolean; seq: number }> {
    return this.send(this.toJSON());
  }
}
