/**
 * On-disk layout of the LMDB environment. One environment per data directory, four sub-databases:
 *
 * ```
 * kv    key bytes -> u64 createSeq | u64 modSeq | u32 version | value bytes     (big-endian)
 * log   u64 seq (big-endian, so LMDB's byte order is seq order) -> entry record (see log/entry.ts)
 * meta  "datasetId" -> utf8 id      random, made when the root's data directory is created
 *       "nodeId"    -> utf8 id      random, made when any data directory is created
 *       "head"      -> u64 seq | 32-byte hash   the last applied entry
 *       "logBytes"  -> u64          sum of record sizes currently in `log` (for retention by bytes)
 *       "logBase"   -> u64 seq | 32-byte hash   the entry just before the first retained one (after a trim or a
 *                                                snapshot install), so that the first retained entry can be verified
 * staging  key bytes -> key record as in kv   a snapshot being received, invisible to readers until it is complete;
 *                                              emptied when the snapshot is installed or a new one begins
 * ```
 *
 * Applying an entry writes kv changes, its log record, head and logBytes in one write transaction.
 */

export const KEY_RECORD_HEADER_BYTES = 8 + 8 + 4;

export interface KeyRecord {
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

export function encodeKeyRecord(createSeq: number, modSeq: number, version: number, value: Buffer): Buffer {
  const buffer = Buffer.allocUnsafe(KEY_RECORD_HEADER_BYTES + value.length);
  buffer.writeBigUInt64BE(BigInt(createSeq), 0);
  buffer.writeBigUInt64BE(BigInt(modSeq), 8);
  buffer.writeUInt32BE(version, 16);
  value.copy(buffer, KEY_RECORD_HEADER_BYTES);
  return buffer;
}

export function decodeKeyRecord(buffer: Buffer): KeyRecord {
  return {
    createSeq: Number(buffer.readBigUInt64BE(0)),
    modSeq: Number(buffer.readBigUInt64BE(8)),
    version: buffer.readUInt32BE(16),
    value: buffer.subarray(KEY_RECORD_HEADER_BYTES),
  };
}

export function seqKey(seq: number): Buffer {
  const buffer = Buffer.allocUnsafe(8);
  buffer.writeBigUInt64BE(BigInt(seq), 0);
  return buffer;
}

export function encodeHead(seq: number, hash: Buffer): Buffer {
  const buffer = Buffer.allocUnsafe(8 + hash.length);
  buffer.writeBigUInt64BE(BigInt(seq), 0);
  hash.copy(buffer, 8);
  return buffer;
}

export function decodeHead(buffer: Buffer): { seq: number; hash: Buffer } {
  return { seq: Number(buffer.readBigUInt64BE(0)), hash: Buffer.from(buffer.subarray(8)) };
}

export function encodeU64(value: number): Buffer {
  return seqKey(value);
}

export function decodeU64(buffer: Buffer): number {
  return Number(buffer.readBigUInt64BE(0));
}

/** The smallest key greater than every key that starts with `prefix`, or an empty buffer if there is none. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.alloc(0);
}
