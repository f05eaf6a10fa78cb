/**
 * Write requests as the committer takes them, and their validation. Every write path (HTTP, the in-process API,
 * forwarded writes from replicas) funnels through `validateRequest`, so a limit is enforced in exactly one place.
 */
import { MercuryError, TXN_COMPARES_MAX, TXN_OPS_MAX, validateKey, valueTooLarge, type Txn } from '../api/index.js';
import { AUTHOR_BYTES_MAX, opEncodedBytes, type Op } from '../log/index.js';
import { ROOT_KEYS_PREFIX } from '../trust/index.js';

/**
 * A transaction: if every compare holds, apply `success`, otherwise `failure`. A plain put is a txn with one op.
 * `author` is who wrote it (the principal's name: a token name or a client certificate's subject, set by the route,
 * never by the client's body); the entry records it beside the ops (log/entry.ts).
 */
export interface WriteRequest extends Txn {
  readonly author?: string;
}

export interface WriteResult {
  /** Whether the compares held (always true without compares). */
  readonly succeeded: boolean;
  /** The seq of the entry that carries this request, or the head seq it was evaluated at if it changed nothing. */
  readonly seq: number;
  /**
   * The hash of the entry at `seq` as the node that answered holds it, when it still does (node.ts `write`); a
   * replica that forwarded the write checks it against its own entry at `seq`.
   */
  readonly hash?: Buffer;
}

export { validateKey };

export function validateValue(value: Buffer, valueBytesMax: number): void {
  if (value.length > valueBytesMax) throw valueTooLarge(value.length, valueBytesMax);
}

const ROOT_KEYS_END = (() => {
  const end = Buffer.from(ROOT_KEYS_PREFIX);
  end[end.length - 1]!++;
  return end;
})();

function touchesRootKeys(op: Op): boolean {
  if (op.type !== 'deleteRange') return op.key.length >= ROOT_KEYS_PREFIX.length && op.key.subarray(0, ROOT_KEYS_PREFIX.length).equals(ROOT_KEYS_PREFIX);
  return Buffer.compare(op.start, ROOT_KEYS_END) < 0 && (op.end.length === 0 || Buffer.compare(op.end, ROOT_KEYS_PREFIX) > 0);
}

function validateOps(ops: readonly Op[], branch: string, valueBytesMax: number, system: boolean): void {
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
    // The root's signing key and URL are written by the root itself (src/trust/): a client that could write them could
    // make replicas trust its key, or forward their writes to it.
    if (!system && touchesRootKeys(op))
      throw new MercuryError('INVALID_ARGUMENT', `${branch} writes under the reserved prefix ${JSON.stringify(ROOT_KEYS_PREFIX.toString('latin1'))}, which only the root writes`);
  }
}

/**
 * Checks every limit; returns the request's encoded size in bytes (what it adds to an entry). `system`: the root's own
 * write (a key rotation, its URL), the only one allowed under the root's reserved keys.
 */
export function validateRequest(request: WriteRequest, valueBytesMax: number, system = false): number {
  if (request.author !== undefined) {
    const bytes = Buffer.byteLength(request.author, 'utf8');
    if (bytes === 0 || bytes > AUTHOR_BYTES_MAX) throw new MercuryError('INVALID_ARGUMENT', `author of ${bytes} bytes; an author takes 1 to ${AUTHOR_BYTES_MAX} bytes of UTF-8`);
  }
  if (request.compares.length > TXN_COMPARES_MAX)
    throw new MercuryError('TOO_MANY_OPS', `${request.compares.length} compares; a transaction allows at most ${TXN_COMPARES_MAX}`, {
      details: { limit: TXN_COMPARES_MAX },
    });
  for (const compare of request.compares) {
    validateKey(compare.key, 'compare key');
    if (compare.target === 'value') validateValue(compare.value, valueBytesMax);
  }
  validateOps(request.success, 'success', valueBytesMax, system);
  validateOps(request.failure, 'failure', valueBytesMax, system);
  // Each op may start an author run (u32 count, u8 length, the name): counted so that an entry stays within its bytes.
  const authorBytes = request.author === undefined ? 0 : 5 + Buffer.byteLength(request.author, 'utf8');
  let bytes = 0;
  for (const op of request.success) bytes += opEncodedBytes(op);
  let failureBytes = 0;
  for (const op of request.failure) failureBytes += opEncodedBytes(op);
  return Math.max(bytes, failureBytes) + authorBytes;
}
