/**
 * u64 fields (seqs, versions) as two big-endian u32 halves: seqs stay far below 2^53, and BigInt conversions cost more
 * than the reads and writes themselves. Shared by the store's key records and the wire protocol's frames.
 */
export const TWO_32 = 0x1_0000_0000;

/** Writes a safe integer as a big-endian u64 at `offset`. */
export function writeU64(buffer: Buffer, value: number, offset: number): void {
  buffer.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buffer.writeUInt32BE(value >>> 0, offset + 4);
}

/** Reads a big-endian u64 written by writeU64 (trusted bytes: no check against 2^53). */
export function readU64(buffer: Buffer, offset: number): number {
  return buffer.readUInt32BE(offset) * TWO_32 + buffer.readUInt32BE(offset + 4);
}
