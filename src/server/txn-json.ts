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
import { TXN_COMPARES_MAX, TXN_OPS_MAX } from '../limits.js';
import type { Op } from '../log/index.js';
import type { WriteRequest } from '../commit/index.js';
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

function parseCompare(raw: unknown, path: string): Compare {
  const object = asObject(raw, path);
  const key = readJsonBytes(object, 'key', path, true)!;
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
  if (target === 'value' || target === 'valueBase64') return { key, target: 'value', operator, value: readJsonBytes(object, 'value', path, true)! };
  const number = object[target];
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0)
    throw new MercuryError('INVALID_ARGUMENT', `${path}.${target} must be a non-negative integer`);
  return { key, target: target as (typeof NUMBER_TARGETS)[number], operator, number };
}

function parseOp(raw: unknown, path: string): Op {
  const object = asObject(raw, path);
  switch (object.op) {
    case 'put':
      return { type: 'put', key: readJsonBytes(object, 'key', path, true)!, value: readJsonBytes(object, 'value', path, true)! };
    case 'delete':
      return { type: 'delete', key: readJsonBytes(object, 'key', path, true)! };
    case 'deletePrefix': {
      const prefix = readJsonBytes(object, 'prefix', path, true)!;
      return { type: 'deleteRange', start: prefix, end: prefixEnd(prefix) };
    }
    case 'deleteRange':
      return { type: 'deleteRange', start: readJsonBytes(object, 'start', path, true)!, end: readJsonBytes(object, 'end', path, false) ?? Buffer.alloc(0) };
    default:
      throw new MercuryError('INVALID_ARGUMENT', `${path}.op must be "put", "delete", "deletePrefix" or "deleteRange"`);
  }
}

export function parseTxnJson(body: unknown): WriteRequest {
  const object = asObject(body, 'transaction');
  for (const field of Object.keys(object)) {
    if (field !== 'compare' && field !== 'success' && field !== 'failure')
      throw new MercuryError('INVALID_ARGUMENT', `unknown field "${field}"; a transaction has "compare", "success" and "failure"`);
  }
  return {
    compares: asArray(object.compare, 'compare', TXN_COMPARES_MAX).map((raw, i) => parseCompare(raw, `compare[${i}]`)),
    success: asArray(object.success, 'success', TXN_OPS_MAX).map((raw, i) => parseOp(raw, `success[${i}]`)),
    failure: asArray(object.failure, 'failure', TXN_OPS_MAX).map((raw, i) => parseOp(raw, `failure[${i}]`)),
  };
}
