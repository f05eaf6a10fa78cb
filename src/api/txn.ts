/**
 * Transactions on the wire: their typed form, the JSON form of `POST /v1/txn` with its one parser and its one
 * formatter. The node parses requests with `parseTxn`; a replica forwards writes, the client's builder sends
 * transactions and `GET /v1/log` shows the ops of entries, all through `formatTxn` / `formatOp`.
 *
 * ```json
 * {
 *   "compare": [ { "key": "a", "version": 3 }, { "key": "b", "exists": false },
 *                { "key": "c", "value": "on" }, { "key": "d", "modSeq": 10, "op": "<" } ],
 *   "success": [ { "op": "put", "key": "a", "value": "1" }, { "op": "delete", "key": "b" },
 *                { "op": "deletePrefix", "prefix": "tmp/" }, { "op": "deleteRange", "start": "x", "end": "y" } ],
 *   "failure": []
 * }
 * ```
 * Any key, value, prefix, start or end is a byte field (src/api/bytes.ts): text, text with `keyEncoding`, or
 * `keyBase64`. A compare has exactly one target (exists, value, modSeq, version, createSeq) and an optional `op`
 * (= != < >, default =; `exists` takes none). A deleteRange without `end` (or with an empty one) has no upper bound;
 * otherwise `end` must sort after `start` (an empty range is refused, not committed as an entry that changes nothing).
 * A field that the op (or a compare) does not have is refused with INVALID_ARGUMENT naming it, as an unknown top-level
 * field is: ignoring a misspelt one would run a different request than the one meant.
 * The formatter writes every byte field as `name` + `nameEncoding`, and deletePrefix as the deleteRange it means,
 * so that `parseTxn(formatTxn(t))` equals `t`.
 */
import { encodeJsonBytes, readJsonBytes, type BytesEncoding } from './bytes.js';
import { MercuryError, valueTooLarge } from './errors.js';
import type { JsonLimits } from './json-validator.js';
import { prefixEnd, validateKey } from './keys.js';
import { JSON_NAME_BYTES_MAX, KEY_BYTES_MAX, TXN_COMPARES_MAX, TXN_OPS_MAX, VALUE_BYTES_CEILING } from './limits.js';

/** A compare operator: `=`, `!=`, `<`, `>`. */
export type CompareOp = '=' | '!=' | '<' | '>';

/** One change: the ops of a transaction and of a log entry. */
export type TxnOp =
  | { readonly type: 'put'; readonly key: Buffer; readonly value: Buffer }
  | { readonly type: 'delete'; readonly key: Buffer }
  /** Deletes every key k with start <= k < end; an empty `end` means no upper bound. */
  | { readonly type: 'deleteRange'; readonly start: Buffer; readonly end: Buffer };

/** A condition of a transaction. A missing key has modSeq, version and createSeq 0. */
export type TxnCompare =
  | { readonly key: Buffer; readonly target: 'exists'; readonly exists: boolean }
  | { readonly key: Buffer; readonly target: 'value'; readonly operator: CompareOp; readonly value: Buffer }
  | { readonly key: Buffer; readonly target: 'modSeq' | 'version' | 'createSeq'; readonly operator: CompareOp; readonly number: number };

/** A transaction: if every compare holds, apply `success`, otherwise `failure`. A plain put is a txn with one op. */
export interface Txn {
  readonly compares: readonly TxnCompare[];
  readonly success: readonly TxnOp[];
  readonly failure: readonly TxnOp[];
}

/** A byte field named N in JSON: `N` (text, or as `NEncoding` says) or `NBase64`. */
export type BytesJson<N extends string> =
  | ({ readonly [K in N]: string } & { readonly [K in `${N}Encoding`]?: BytesEncoding })
  | { readonly [K in `${N}Base64`]: string };

/** A compare of the JSON form. Exactly one target. */
export type TxnCompareJson = BytesJson<'key'> &
  (
    | { readonly exists: boolean }
    | (BytesJson<'value'> & { readonly op?: CompareOp })
    | { readonly modSeq: number; readonly op?: CompareOp }
    | { readonly version: number; readonly op?: CompareOp }
    | { readonly createSeq: number; readonly op?: CompareOp }
  );

/** An op of the JSON form. */
export type TxnOpJson =
  | ({ readonly op: 'put' } & BytesJson<'key'> & BytesJson<'value'>)
  | ({ readonly op: 'delete' } & BytesJson<'key'>)
  | ({ readonly op: 'deletePrefix' } & BytesJson<'prefix'>)
  | ({ readonly op: 'deleteRange' } & BytesJson<'start'> & Partial<BytesJson<'end'>>);

/** The JSON form of a transaction, as `POST /v1/txn` takes it. */
export interface TxnJson {
  readonly compare?: readonly TxnCompareJson[];
  readonly success?: readonly TxnOpJson[];
  readonly failure?: readonly TxnOpJson[];
}

// --- Size of the JSON form ---------------------------------------------------------------------------------------------

/** Containers nested in the JSON form: the transaction object, a branch array, an op or compare object. */
export const TXN_JSON_DEPTH_MAX = 3;
/** Fields of one op or compare at most: a put has op, key, keyEncoding, value, valueEncoding. */
const TXN_ITEM_FIELDS_MAX = 5;
/**
 * JSON values in the largest transaction: the object, its three arrays, and every compare and op of both branches
 * with each of its fields.
 */
export const TXN_JSON_ELEMENTS_MAX = 1 + 3 + (TXN_COMPARES_MAX + 2 * TXN_OPS_MAX) * (1 + TXN_ITEM_FIELDS_MAX);
/**
 * JSON bytes of one op besides the base64 of its keys and value: names, quotes, encodings and base64 padding. The
 * longest, `{"op":"deleteRange","start":"","startEncoding":"base64","end":"","endEncoding":"base64"},`, is 89.
 */
export const TXN_OP_JSON_OVERHEAD_BYTES = 128;

/** Characters of `bytes` bytes in base64. */
export function base64Length(bytes: number): number {
  return Math.ceil(bytes / 3) * 4;
}

/**
 * The structural limits of a transaction body on a node whose values are at most `valueBytesMax`: no legal
 * transaction exceeds them, and a hostile body is refused by them after a bounded prefix (src/api/json-validator.ts).
 * The longest string is a value in base64; the longest member name is a field's name.
 */
export function txnJsonLimits(valueBytesMax: number): JsonLimits {
  return {
    depthMax: TXN_JSON_DEPTH_MAX,
    elementsMax: TXN_JSON_ELEMENTS_MAX,
    stringBytesMax: base64Length(Math.max(valueBytesMax, KEY_BYTES_MAX)),
    nameBytesMax: JSON_NAME_BYTES_MAX,
  };
}

/**
 * The JSON body that the largest transaction a node commits needs: ops that fill one entry of `entryBytesMax` (a
 * transaction is never split across entries), written as the formatter writes binary data (base64, 4/3 of the bytes)
 * with TXN_OPS_MAX ops' worth of JSON around them. A node's body limit must be at least this (src/node/limits.ts).
 */
export function txnBodyBytesFor(entryBytesMax: number): number {
  return base64Length(entryBytesMax) + TXN_OPS_MAX * TXN_OP_JSON_OVERHEAD_BYTES + 64;
}

// --- Parser ----------------------------------------------------------------------------------------------------------

const OPERATORS: ReadonlySet<string> = new Set(['=', '!=', '<', '>']);
const NUMBER_TARGETS = ['modSeq', 'version', 'createSeq'] as const;
const TARGETS = ['exists', 'value', 'valueBase64', ...NUMBER_TARGETS];

/** The JSON names of a byte field N (src/api/bytes.ts). */
function bytesFieldNames(name: string): string[] {
  return [name, `${name}Encoding`, `${name}Base64`];
}

/**
 * The fields each op and a compare may have. Anything else is refused, not ignored: a misspelt field changes what a
 * request does (`"End"` for `"end"` made a deleteRange delete everything from its start on; `"valueEncodng"` stored
 * the base64 text as the value).
 */
const OP_FIELDS: Readonly<Record<string, ReadonlySet<string>>> = {
  put: new Set(['op', ...bytesFieldNames('key'), ...bytesFieldNames('value')]),
  delete: new Set(['op', ...bytesFieldNames('key')]),
  deletePrefix: new Set(['op', ...bytesFieldNames('prefix')]),
  deleteRange: new Set(['op', ...bytesFieldNames('start'), ...bytesFieldNames('end')]),
};
const COMPARE_FIELDS: ReadonlySet<string> = new Set([...bytesFieldNames('key'), ...bytesFieldNames('value'), 'exists', ...NUMBER_TARGETS, 'op']);

function refuseUnknownFields(object: Record<string, unknown>, allowed: ReadonlySet<string>, path: string, what: string): void {
  // for-in: an object from JSON.parse has only its own fields, and no array is made per op.
  for (const field in object)
    if (!allowed.has(field)) throw new MercuryError('INVALID_ARGUMENT', `${path}: unknown field "${field}"; ${what} has ${Array.from(allowed).join(', ')}`);
}

function asObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new MercuryError('INVALID_ARGUMENT', `${path} must be an object`);
  return value as Record<string, unknown>;
}

function asArray(value: unknown, path: string, max: number): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new MercuryError('INVALID_ARGUMENT', `${path} must be an array`);
  if (value.length > max) throw new MercuryError('TOO_MANY_OPS', `${path} has ${value.length} items; at most ${max} are allowed`, { details: { limit: max } });
  return value;
}

/**
 * Limits are checked here too, although the committer checks them again, so that the error names the field: in a
 * transaction of 10,000 ops, "key is 1025 bytes" alone does not say which one.
 */
function readKey(object: Record<string, unknown>, name: string, path: string): Buffer {
  const key = readJsonBytes(object, name, path, true)!;
  validateKey(key, `${path}.${name}`);
  return key;
}

function readValue(object: Record<string, unknown>, path: string, valueBytesMax: number): Buffer {
  const value = readJsonBytes(object, 'value', path, true)!;
  if (value.length > valueBytesMax) throw valueTooLarge(value.length, valueBytesMax, `${path}.value`);
  return value;
}

function parseCompare(raw: unknown, path: string, valueBytesMax: number): TxnCompare {
  const object = asObject(raw, path);
  refuseUnknownFields(object, COMPARE_FIELDS, path, 'a compare');
  const key = readKey(object, 'key', path);
  const targets = TARGETS.filter((name) => object[name] !== undefined);
  if (targets.length !== 1)
    throw new MercuryError('INVALID_ARGUMENT', `${path} needs exactly one of "exists", "value", "modSeq", "version", "createSeq"`);
  const operatorRaw = object.op ?? '=';
  if (typeof operatorRaw !== 'string' || !OPERATORS.has(operatorRaw))
    throw new MercuryError('INVALID_ARGUMENT', `${path}.op must be one of "=", "!=", "<", ">"`);
  const operator = operatorRaw as CompareOp;
  const target = targets[0]!;
  if (target === 'exists') {
    if (typeof object.exists !== 'boolean') throw new MercuryError('INVALID_ARGUMENT', `${path}.exists must be true or false`);
    if (object.op !== undefined) throw new MercuryError('INVALID_ARGUMENT', `${path}: "exists" takes no "op"`);
    return { key, target: 'exists', exists: object.exists };
  }
  if (target === 'value' || target === 'valueBase64') return { key, target: 'value', operator, value: readValue(object, path, valueBytesMax) };
  const number = object[target];
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0)
    throw new MercuryError('INVALID_ARGUMENT', `${path}.${target} must be a non-negative integer`);
  return { key, target: target as (typeof NUMBER_TARGETS)[number], operator, number };
}

function parseOp(raw: unknown, path: string, valueBytesMax: number): TxnOp {
  const object = asObject(raw, path);
  const fields = typeof object.op === 'string' && Object.hasOwn(OP_FIELDS, object.op) ? OP_FIELDS[object.op] : undefined;
  if (fields !== undefined) refuseUnknownFields(object, fields, path, `a ${object.op as string} op`);
  switch (object.op) {
    case 'put':
      return { type: 'put', key: readKey(object, 'key', path), value: readValue(object, path, valueBytesMax) };
    case 'delete':
      return { type: 'delete', key: readKey(object, 'key', path) };
    case 'deletePrefix': {
      const prefix = readKey(object, 'prefix', path);
      return { type: 'deleteRange', start: prefix, end: prefixEnd(prefix) };
    }
    case 'deleteRange': {
      const start = readKey(object, 'start', path);
      const end = readJsonBytes(object, 'end', path, false) ?? Buffer.alloc(0);
      if (end.length > 0) validateKey(end, `${path}.end`);
      // An empty range would commit an entry that changes nothing; start > end is a mistake, not a request.
      if (end.length > 0 && Buffer.compare(start, end) >= 0)
        throw new MercuryError('INVALID_ARGUMENT', `${path}: deleteRange deletes the keys k with start <= k < end, so end must sort after start (byte order); leave end out for no upper bound`);
      return { type: 'deleteRange', start, end };
    }
    default:
      throw new MercuryError('INVALID_ARGUMENT', `${path}.op must be "put", "delete", "deletePrefix" or "deleteRange"`);
  }
}

/**
 * Parses the JSON form (already `JSON.parse`d) with precise errors that name the offending field.
 * `valueBytesMax` bounds put and compare values (a node passes its configured limit; the default is the ceiling).
 */
export function parseTxn(body: unknown, valueBytesMax: number = VALUE_BYTES_CEILING): Txn {
  const object = asObject(body, 'transaction');
  for (const field of Object.keys(object)) {
    if (field !== 'compare' && field !== 'success' && field !== 'failure')
      throw new MercuryError('INVALID_ARGUMENT', `unknown field "${field}"; a transaction has "compare", "success" and "failure"`);
  }
  return {
    compares: asArray(object.compare, 'compare', TXN_COMPARES_MAX).map((raw, i) => parseCompare(raw, `compare[${i}]`, valueBytesMax)),
    success: asArray(object.success, 'success', TXN_OPS_MAX).map((raw, i) => parseOp(raw, `success[${i}]`, valueBytesMax)),
    failure: asArray(object.failure, 'failure', TXN_OPS_MAX).map((raw, i) => parseOp(raw, `failure[${i}]`, valueBytesMax)),
  };
}

// --- Formatter -------------------------------------------------------------------------------------------------------

function bytesJson<N extends string>(name: N, bytes: Buffer): BytesJson<N> {
  const json = encodeJsonBytes(bytes);
  return { [name]: json.text, [`${name}Encoding`]: json.encoding } as BytesJson<N>;
}

/** An op in the JSON form; a deleteRange always names its `end` (empty: no upper bound). */
export function formatOp(op: TxnOp): TxnOpJson {
  switch (op.type) {
    case 'put':
      return { op: 'put', ...bytesJson('key', op.key), ...bytesJson('value', op.value) };
    case 'delete':
      return { op: 'delete', ...bytesJson('key', op.key) };
    case 'deleteRange':
      return { op: 'deleteRange', ...bytesJson('start', op.start), ...bytesJson('end', op.end) };
  }
}

export function formatCompare(compare: TxnCompare): TxnCompareJson {
  const key = bytesJson('key', compare.key);
  switch (compare.target) {
    case 'exists':
      return { ...key, exists: compare.exists };
    case 'value':
      return { ...key, ...bytesJson('value', compare.value), op: compare.operator };
    default:
      return { ...key, [compare.target]: compare.number, op: compare.operator } as TxnCompareJson;
  }
}

/** The JSON form of a transaction. `parseTxn(formatTxn(t))` equals `t`. */
export function formatTxn(txn: Txn): Required<TxnJson> {
  return { compare: txn.compares.map(formatCompare), success: txn.success.map(formatOp), failure: txn.failure.map(formatOp) };
}
