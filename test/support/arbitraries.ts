/** fast-check generators shared by the log tests. */
import fc from 'fast-check';
import type { Op } from '../../src/log/index.js';

export const bytes = (maxLength: number, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ minLength, maxLength }).map((array) => Buffer.from(array));

/** Keys are 1..KEY_BYTES_MAX bytes; the decoder rejects others. */
export const keyBytes = (maxLength: number): fc.Arbitrary<Buffer> => bytes(maxLength, 1);

/**
 * Any op with keys up to `keyBytesMax` and values up to `valueBytesMax`. fc.record builds null-prototype objects; ops
 * are spread into plain ones so that deepEqual compares like with like.
 */
export function opArbitrary(keyBytesMax: number, valueBytesMax: number): fc.Arbitrary<Op> {
  return fc.oneof(
    fc.record({ type: fc.constant('put' as const), key: keyBytes(keyBytesMax), value: bytes(valueBytesMax) }).map((op): Op => ({ ...op })),
    fc.record({ type: fc.constant('delete' as const), key: keyBytes(keyBytesMax) }).map((op): Op => ({ ...op })),
    fc.record({ type: fc.constant('deleteRange' as const), start: keyBytes(keyBytesMax), end: bytes(keyBytesMax) }).map((op): Op => ({ ...op })),
  );
}
