/**
 * The JSON form of a transaction (`POST /v1/txn`), parsed into a WriteRequest with precise errors that name the
 * offending field.
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
 * Any key, value, prefix, start or end may instead be given base64-encoded as `keyBase64`, `valueBase64`, ...
 * A compare has exactly one target (exists, value, modSeq, version, createSeq) and an optional `op` (= != < >,
 * default =; `exists` takes none).
 */
import { MercuryError } from '../errors/index.js';
import { TXN_COMPARES_MAX, TXN_OPS_MAX, VALUE_BYTES_CEILING } from '../limits.js';
import type { Op } from '../log/index.js';
import { validateKey, type WriteRequest } from '../commit/index.js';
import { prefixEnd, type Compare, type CompareOperator } from '../store/index.js';
import { readJsonBytes } from './bytes.js';

const OPERATORS: ReadonlySet<string> = new Set(['=', '!=', '<', '>']);
const NUMBER_TARGETS = ['modSeq', 'version', 'createSeq'] as const;
const TARGETS = ['exists', 'value', 'valueBase64', ...NUMBER_TARGETS];

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
  if (value.length > valueBytesMax)
    throw new MercuryError('VALUE_TOO_LARGE', `${path}.value is ${value.length} bytes; this node accepts at most ${valueBytesMax} bytes (server option --max-value-bytes)`, {
      details: { limit: valueBytesMax },
    });
  return value;
}

function parseCompare(raw: unknown, path: string, valueBytesMax: number): Compare {
  const object = asObject(raw, path);
  const key = readKey(object, 'key', path);
  const targets = TARGETS.filter((name) => object[name] !== undefined);
  if (targets.length !== 1)
    throw new MercuryError('INVALID_ARGUMENT', `${path} needs exactly one of "exists", "value", "modSeq", "version", "createSeq"`);
  const operatorRaw = object.op ?? '=';
  if (typeof operatorRaw !== 'string' || !OPERATORS.has(operatorRaw))
    throw new MercuryError('INVALID_ARGUMENT', `${path}.op must be one of "=", "!=", "<", ">"`);
  const operator = operatorRaw as CompareOperator;
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

function parseOp(raw: unknown, path: string, valueBytesMax: number): Op {
  const object = asObject(raw, path);
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
      return { type: 'deleteRange', start, end };
    }
    default:
      throw new MercuryError('INVALID_ARGUMENT', `${path}.op must be "put", "delete", "deletePrefix" or "deleteRange"`);
  }
}

/** `valueBytesMax` bounds put and compare values (a node passes its configured limit; the default is the ceiling). */
export function parseTxnJson(body: unknown, valueBytesMax: number = VALUE_BYTES_CEILING): WriteRequest {
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

function bytesJson(name: string, bytes: Buffer): Record<string, string> {
  return { [`${name}Base64`]: bytes.toString('base64') };
}

function opToJson(op: Op): Record<string, unknown> {
  switch (op.type) {
    case 'put':
      return { op: 'put', ...bytesJson('key', op.key), ...bytesJson('value', op.value) };
    case 'delete':
      return { op: 'delete', ...bytesJson('key', op.key) };
    case 'deleteRange':
      return { op: 'deleteRange', ...bytesJson('start', op.start), ...(op.end.length > 0 ? bytesJson('end', op.end) : {}) };
  }
}

function compareToJson(compare: Compare): Record<string, unknown> {
  const key = bytesJson('key', compare.key);
  switch (compare.target) {
    case 'exists':
      return { ...key, exists: compare.exists };
    case 'value':
      return { ...key, ...bytesJson('value', compare.value), op: compare.operator };
    default:
      return { ...key, [compare.target]: compare.number, op: compare.operator };
  }
}

/** The JSON form of a request, for forwarding a write toward the root. `parseTxnJson(formatTxnJson(r))` equals r. */
export function formatTxnJson(request: WriteRequest): Record<string, unknown> {
  return {
    compare: request.compares.map(compareToJson),
    success: request.success.map(opToJson),
    failure: request.failure.map(opToJson),
  };
}
