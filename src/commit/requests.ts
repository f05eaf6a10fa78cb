/**
 * Write requests as the committer takes them, and their validation. Every write path (HTTP, the in-process API,
 * forwarded writes from replicas) funnels through `validateRequest`, so a limit is enforced in exactly one place.
 */
import { MercuryError, TXN_COMPARES_MAX, TXN_OPS_MAX, validateKey, valueTooLarge, type Txn } from '../api/index.js';
import { opEncodedBytes, type Op } from '../log/index.js';

/** A transaction: if every compare holds, apply `success`, otherwise `failure`. A plain put is a txn with one op. */
export type WriteRequest = Txn;

export interface WriteResult {
  /** Whether the compares held (always true without compares). */
  readonly succeeded: boolean;
  /** The seq of the entry that carries this request, or the head seq it was evaluated at if it changed nothing. */
  readonly seq: number;
}

export { validateKey };

export function validateValue(value: Buffer, valueBytesMax: number): void {
  if (value.length > valueBytesMax) throw valueTooLarge(value.length, valueBytesMax);
}

function validateOps(ops: readonly Op[], branch: string, valueBytesMax: number): void {
  if (ops.length > TXN_OPS_MAX)
    throw new MercuryError('TOO_MANY_OPS', `${branch} has ${ops.length} ops; a transaction allows at most ${TXN_OPS_MAX} per branch`, {
      details: { limit: TXN_OPS_MAX },
    });
  for (const op of ops) {
    if (op.type === 'deleteRange') {
      // An empty start is allowed only as "from the first key", which a prefix delete of "" would mean: refuse it, a
      // whole-keyspace wipe must be spelled out as a non-empty range.
      validateKey(op.start, 'range start');
      if (op.end.length > 0) validateKey(op.end, 'range end');
    } else {
      validateKey(op.key);
      if (op.type === 'put') validateValue(op.value, valueBytesMax);
    }
  }
}

/** Checks every limit; returns the request's encoded size in bytes (what it adds to an entry). */
export function validateRequest(request: WriteRequest, valueBytesMax: number): number {
  if (request.compares.length > TXN_COMPARES_MAX)
    throw new MercuryError('TOO_MANY_OPS', `${request.compares.length} compares; a transaction allows at most ${TXN_COMPARES_MAX}`, {
      details: { limit: TXN_COMPARES_MAX },
    });
  for (const compare of request.compares) {
    validateKey(compare.key, 'compare key');
    if (compare.target === 'value') validateValue(compare.value, valueBytesMax);
  }
  validateOps(request.success, 'success', valueBytesMax);
  validateOps(request.failure, 'failure', valueBytesMax);
  let bytes = 0;
  for (const op of request.success) bytes += opEncodedBytes(op);
  let failureBytes = 0;
  for (const op of request.failure) failureBytes += opEncodedBytes(op);
  return Math.max(bytes, failureBytes);
}
