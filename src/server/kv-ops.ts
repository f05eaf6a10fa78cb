/**
 * The semantics of the single-key operations, shared by the HTTP API (routes/kv.ts) and the wire protocol
 * (src/wire/): which scopes a put or delete needs, the transaction it commits, and the error of a failed `ifModSeq`.
 * One definition, so that both APIs answer the same request the same way.
 */
import { MercuryError } from '../api/index.js';
import { refuseReserved, requireRead, requireWrite, type Principal } from '../auth/index.js';
import type { WriteRequest } from '../commit/index.js';
import type { Store } from '../store/index.js';

/** A put or delete of one key: write on it, and read on it too with `ifModSeq` (a failed compare tells its modSeq). */
export function requireKeyWrite(principal: Principal | undefined, key: Buffer, hasIfModSeq: boolean): void {
  refuseReserved(key);
  requireWrite(principal, key);
  if (hasIfModSeq) requireRead(principal, key);
}

function ifModSeqCompare(key: Buffer, ifModSeq: number | undefined): WriteRequest['compares'] {
  return ifModSeq === undefined ? [] : [{ key, target: 'modSeq', operator: '=', number: ifModSeq }];
}

export function putRequest(key: Buffer, value: Buffer, ifModSeq: number | undefined): WriteRequest {
  return { compares: ifModSeqCompare(key, ifModSeq), success: [{ type: 'put', key, value }], failure: [] };
}

/** Without ifModSeq, delete only when the key exists, so deleting a missing key commits no entry. */
export function deleteRequest(key: Buffer, ifModSeq: number | undefined): WriteRequest {
  const compares = ifModSeqCompare(key, ifModSeq);
  return {
    compares: compares.length > 0 ? compares : [{ key, target: 'exists', exists: true }],
    success: [{ type: 'delete', key }],
    failure: [],
  };
}

/** The answer to a put or delete whose `ifModSeq` did not hold: the key's current modSeq, to read again and retry. */
export function compareFailed(store: Store, key: Buffer, ifModSeq: number, seq: number): MercuryError {
  const current = store.get(key).record;
  return new MercuryError('COMPARE_FAILED', `ifModSeq=${ifModSeq} does not match the key's current modSeq ${current?.modSeq ?? 0}; read it again and retry`, {
    details: { modSeq: current?.modSeq ?? 0, seq },
  });
}
