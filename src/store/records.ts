/**
 * On-disk layout of the LMDB environment. One environment per data directory, four sub-databases:
 *
 * ```
 * kv      key bytes -> u32 crc | u64 createSeq | u64 modSeq | u32 version | value bytes     (big-endian)
 *                      crc = CRC-32 (zlib's) over the key bytes, then the record bytes after the crc
 * log     u64 seq (big-endian, so LMDB's byte order is seq order) -> entry record (see log/entry.ts)
 * meta    "format"    -> utf8 decimal   the store format, STORE_FORMAT (below); written when the directory is made
 *         "datasetId" -> utf8 id      random, made when the root's data directory is created (1..255 bytes, decodeId)
 *         "nodeId"    -> utf8 id      random, made when any data directory is created (1..255 bytes, decodeId)
 *         "head"      -> u64 seq | 32-byte hash   the last applied entry; every read checks its size (decodeHeadSeq)
 *         "logBytes"  -> u64          sum of record sizes currently in `log` (for retention by bytes); a cache: an
 *                                     open that finds it damaged (decodeLogBytes) sums the log again
 *         "logBase"   -> u64 seq | 32-byte hash   the entry just before the first retained one (after a trim or a
 *                                                  snapshot install), so that the first retained entry can be verified
 *         "writeProbe"-> 1 byte       rewritten to learn whether the storage takes writes again after a failure
 *         "verified"  -> "1"          a replica's data all came through signature checks (docs/decisions.md, 38)
 *         "resync"    -> "1"          a replica's resync was asked for and no snapshot has completed it yet
 *         "diverged"  -> u64 seq | 32-byte hash | utf8 reason   the head at which a replica stopped following for
 *                                     divergence, until a resync installs its snapshot: both go with that install
 * staging key bytes -> kv record   a snapshot being received, until it is complete and verified
 * ```
 *
 * Applying an entry writes kv changes, its log record, head and logBytes in one write transaction: the head is the log's
 * last entry, or the log base once a snapshot install emptied the log, which a writable open checks (store.ts).
 *
 * Format history: 1 had no crc in kv records (and no "format" key). 2 added the crc, so that a damaged value is never
 * served nor sent in a snapshot: every read checks it (`decodeKeyRecord`). A directory of format 1 is refused at open
 * (Mercury had no released users; a replica refetches everything, see docs/decisions.md, record 14).
 */
import { crc32 } from 'node:zlib';
import { readU64, writeU64 } from '../api/u64.js';
import { HASH_BYTES, type ChainHead } from '../log/index.js';
import { ID_BYTES_MAX } from '../limits.js';

export const STORE_FORMAT = 2;

/** A key's version is a u32 in its record: the number of puts since the key was created, up to this. */
export const KEY_VERSION_MAX = 0xffffffff;

/**
 * The version a put leaves: one more, but never past KEY_VERSION_MAX. A key put more than 4 billion times keeps that
 * version (it is informational: compares use modSeq) rather than fail the write; every node applies the same rule, so
 * replicas stay identical to the root, and a record that already holds the maximum (from a damaged or forged
 * snapshot) cannot make a later put throw.
 */
export function nextVersion(version: number): number {
  return version < KEY_VERSION_MAX ? version + 1 : KEY_VERSION_MAX;
}

const CRC_BYTES = 4;
export const KEY_RECORD_HEADER_BYTES = CRC_BYTES + 8 + 8 + 4;

export interface KeyRecord {
  readonly value: Buffer;
  readonly createSeq: number;
  readonly modSeq: number;
  readonly version: number;
}

/** A key record whose bytes are not those written (its crc does not match, or it is too short to hold one). */
export class KeyRecordDamageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyRecordDamageError';
  }
}

/** Where every record's crc starts: the crc of the key it is stored under. */
function keyCrc(key: Buffer): number {
  return crcOfFewBytes(key, 0, key.length, 0);
}

/** The crc of the first `size` bytes of `record` (all of it by default) under `key`. */
function recordCrc(key: Buffer, record: Buffer, size = record.length): number {
  return crcOfFewBytes(record, CRC_BYTES, size, keyCrc(key));
}

/** zlib's CRC-32 table (polynomial 0xEDB88320, reflected), for crcOfFewBytes. */
const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let bit = 0; bit < 8; bit++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
/** Up to this many bytes, crcOfFewBytes costs less than a call into zlib (measured with bench:local). */
const CRC_JS_BYTES_MAX = 64;

/**
 * zlib's `crc32(bytes.subarray(start, end), crc)`, computed here for a few bytes (a key, a record header), where the
 * call into zlib costs more than the computation; zlib's own above CRC_JS_BYTES_MAX.
 */
function crcOfFewBytes(bytes: Buffer, start: number, end: number, crc: number): number {
  if (end - start > CRC_JS_BYTES_MAX) return crc32(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end), crc);
  let c = ~crc;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

export function encodeKeyRecord(key: Buffer, createSeq: number, modSeq: number, version: number, value: Buffer): Buffer {
  const buffer = Buffer.allocUnsafe(KEY_RECORD_HEADER_BYTES + value.length);
  writeKeyRecord(buffer, key, createSeq, modSeq, version, value);
  return buffer;
}

/**
 * Encodes a key record at the start of `target` (at least KEY_RECORD_HEADER_BYTES + value bytes) and returns the view
 * of it: for a writer that hands the bytes to LMDB, which copies them, and can reuse one buffer for many records.
 */
export function writeKeyRecord(target: Buffer, key: Buffer, createSeq: number, modSeq: number, version: number, value: Buffer): Buffer {
  const record = target.subarray(0, KEY_RECORD_HEADER_BYTES + value.length);
  writeU64(record, createSeq, CRC_BYTES);
  writeU64(record, modSeq, CRC_BYTES + 8);
  record.writeUInt32BE(version, CRC_BYTES + 16);
  value.copy(record, KEY_RECORD_HEADER_BYTES);
  // The crc over the header just written and then `value` itself, which the record's copy of it equals: no view made.
  record.writeUInt32BE(crcOfFewBytes(value, 0, value.length, crcOfFewBytes(record, CRC_BYTES, KEY_RECORD_HEADER_BYTES, keyCrc(key))), 0);
  return record;
}

/** Throws KeyRecordDamageError if the record (the first `size` bytes of `buffer`) is not what was written under `key`. */
export function verifyKeyRecord(key: Buffer, buffer: Buffer, size = buffer.length): void {
  if (size < KEY_RECORD_HEADER_BYTES) throw new KeyRecordDamageError(`record of ${size} bytes is shorter than its header`);
  const stored = buffer.readUInt32BE(0);
  const computed = recordCrc(key, buffer, size);
  if (stored !== computed) throw new KeyRecordDamageError(`checksum ${stored.toString(16)} does not match the record's ${computed.toString(16)}`);
}

/** Takes key records read in place: `bytes[valueStart, valueEnd)` is the value, valid only during the call. */
export interface KeyRecordSink {
  add(key: Buffer, bytes: Buffer, valueStart: number, valueEnd: number, createSeq: number, modSeq: number, version: number): void;
}

/**
 * Checks the first `size` bytes of `buffer`, a record read under `key` into a buffer that the next read overwrites
 * (LMDB's), against its crc (throws KeyRecordDamageError), then hands its fields to `sink` without a copy or a view:
 * for a reader that encodes records straight from LMDB's read buffer (a snapshot chunk for a child).
 */
export function visitKeyRecord(key: Buffer, buffer: Buffer, size: number, sink: KeyRecordSink): void {
  verifyKeyRecord(key, buffer, size);
  sink.add(key, buffer, KEY_RECORD_HEADER_BYTES, size, readU64(buffer, CRC_BYTES), readU64(buffer, CRC_BYTES + 8), buffer.readUInt32BE(CRC_BYTES + 16));
}

/** Decodes a record read under `key`, checking its crc first (throws KeyRecordDamageError). */
export function decodeKeyRecord(key: Buffer, buffer: Buffer): KeyRecord {
  verifyKeyRecord(key, buffer);
  return {
    createSeq: readU64(buffer, CRC_BYTES),
    modSeq: readU64(buffer, CRC_BYTES + 8),
    version: buffer.readUInt32BE(CRC_BYTES + 16),
    value: buffer.subarray(KEY_RECORD_HEADER_BYTES),
  };
}

/**
 * A record's createSeq and version, checked against its crc first (throws KeyRecordDamageError), without copying or
 * viewing its value: for a write that replaces the record.
 */
export function decodeKeyRecordHeader(key: Buffer, buffer: Buffer): { createSeq: number; version: number } {
  verifyKeyRecord(key, buffer);
  return { createSeq: readU64(buffer, CRC_BYTES), version: buffer.readUInt32BE(CRC_BYTES + 16) };
}

/**
 * Decodes the first `size` bytes of `buffer`, a record read under `key` into a buffer that the next read overwrites
 * (lmdb-js's `getBinaryFast`), checking its crc first (throws KeyRecordDamageError). The value is copied out: the one
 * copy a point read makes.
 */
export function copyKeyRecord(key: Buffer, buffer: Buffer, size: number): KeyRecord {
  if (size < KEY_RECORD_HEADER_BYTES) throw new KeyRecordDamageError(`record of ${size} bytes is shorter than its header`);
  // The crc is checked over the copy of the value: the bytes returned are the bytes checked.
  const value = Buffer.allocUnsafe(size - KEY_RECORD_HEADER_BYTES);
  buffer.copy(value, 0, KEY_RECORD_HEADER_BYTES, size);
  const stored = buffer.readUInt32BE(0);
  const computed = crc32(value, crcOfFewBytes(buffer, CRC_BYTES, KEY_RECORD_HEADER_BYTES, keyCrc(key)));
  if (stored !== computed) throw new KeyRecordDamageError(`checksum ${stored.toString(16)} does not match the record's ${computed.toString(16)}`);
  return { createSeq: readU64(buffer, CRC_BYTES), modSeq: readU64(buffer, CRC_BYTES + 8), version: buffer.readUInt32BE(CRC_BYTES + 16), value };
}

/** A log record's key: its seq, 8 bytes big-endian, so that LMDB's order is the log's. */
export const SEQ_KEY_BYTES = 8;

export function seqKey(seq: number): Buffer {
  const buffer = Buffer.allocUnsafe(SEQ_KEY_BYTES);
  buffer.writeBigUInt64BE(BigInt(seq), 0);
  return buffer;
}

export function encodeHead(seq: number, hash: Buffer): Buffer {
  const buffer = Buffer.allocUnsafe(8 + hash.length);
  buffer.writeBigUInt64BE(BigInt(seq), 0);
  hash.copy(buffer, 8);
  return buffer;
}

/** Bytes of a "head" or "logBase" record: u64 seq | 32-byte hash. */
export const HEAD_RECORD_BYTES = 8 + HASH_BYTES;

/**
 * A meta record whose bytes cannot be what was written ("head", "logBase", "logBytes", "nodeId", "datasetId"): another
 * size, a number past what any store reaches, an id that is not one. Its message starts "it ...", for a sentence that
 * names the record.
 */
export class MetaRecordDamageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetaRecordDamageError';
  }
}

/**
 * The seq of a "head" or "logBase" record, the first `size` bytes of `buffer` (lmdb-js's `getBinaryFast` returns its
 * reused read buffer, whose bytes past `size` are those of an earlier read). Throws MetaRecordDamageError unless the
 * record is exactly HEAD_RECORD_BYTES and its seq a safe integer (writeU64 writes no other): a short record read as
 * it stood took the seq from those earlier bytes, so that a node answered "no such key at seq 0" for keys it held.
 */
export function decodeHeadSeq(buffer: Buffer, size = buffer.length): number {
  if (size !== HEAD_RECORD_BYTES) throw new MetaRecordDamageError(`it is ${size} bytes where a u64 seq and a ${HASH_BYTES}-byte hash take ${HEAD_RECORD_BYTES}`);
  const seq = readU64(buffer, 0);
  if (!Number.isSafeInteger(seq)) throw new MetaRecordDamageError(`it holds seq ${buffer.readBigUInt64BE(0)}, past 2^53, which no entry reaches`);
  return seq;
}

/** Decodes a "head" or "logBase" record, checked as `decodeHeadSeq` says (throws MetaRecordDamageError). */
export function decodeHead(buffer: Buffer): ChainHead {
  return { seq: decodeHeadSeq(buffer), hash: Buffer.from(buffer.subarray(8, HEAD_RECORD_BYTES)) };
}

export function encodeU64(value: number): Buffer {
  return seqKey(value);
}

/** Bytes of a key of the log: the entry's seq, a big-endian u64 (so that LMDB's byte order is seq order). */
const LOG_KEY_BYTES = 8;
/** Bytes of a damaged log key shown in its report: enough to tell it, bounded whatever its size. */
const LOG_KEY_SHOWN_BYTES = 32;

/** A key of the log that is not a seq as appendLogRecord writes one. Its message starts "it ...", as MetaRecordDamageError's. */
export class LogKeyDamageError extends Error {
  constructor(
    readonly key: Buffer,
    message: string,
  ) {
    super(message);
    this.name = 'LogKeyDamageError';
  }

  /** "log key 00ff...": what a damage report names. */
  get what(): string {
    return `log key ${this.key.subarray(0, LOG_KEY_SHOWN_BYTES).toString('hex')}${this.key.length > LOG_KEY_SHOWN_BYTES ? '...' : ''}`;
  }
}

/**
 * The seq a log key holds. Throws LogKeyDamageError unless it is exactly a u64 and a safe integer: found, a key of
 * another size (damage) was decoded as it stood, and a shorter one threw a raw RangeError out of a start, status and
 * log reads.
 */
export function decodeLogKey(key: Buffer): number {
  if (key.length !== LOG_KEY_BYTES) throw new LogKeyDamageError(key, `it is ${key.length} bytes where a seq takes ${LOG_KEY_BYTES}`);
  const seq = readU64(key, 0);
  if (!Number.isSafeInteger(seq)) throw new LogKeyDamageError(key, `it holds seq ${key.readBigUInt64BE(0)}, past 2^53, which no entry reaches`);
  return seq;
}

/** Bytes of a "logBytes" record: a u64. */
const LOG_BYTES_RECORD_BYTES = 8;

/**
 * The sum a "logBytes" record holds. Throws MetaRecordDamageError unless the record is exactly a u64 and a safe integer
 * (writeU64 writes no other): found, one cut short made every start throw a bare RangeError.
 */
export function decodeLogBytes(buffer: Buffer): number {
  if (buffer.length !== LOG_BYTES_RECORD_BYTES) throw new MetaRecordDamageError(`it is ${buffer.length} bytes where a u64 takes ${LOG_BYTES_RECORD_BYTES}`);
  const bytes = readU64(buffer, 0);
  if (!Number.isSafeInteger(bytes)) throw new MetaRecordDamageError(`it holds ${buffer.readBigUInt64BE(0)} bytes, past 2^53, which no log reaches`);
  return bytes;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A "nodeId" or "datasetId" record as text. Throws MetaRecordDamageError unless it is 1 to ID_BYTES_MAX bytes of UTF-8,
 * as every id written is. Found: such records were taken as they stood, and a root whose node id record had grown to
 * 300 bytes exited 1 when a replica joined (a RangeError encoding its WELCOME, whose ids are str8s).
 */
export function decodeId(buffer: Buffer): string {
  if (buffer.length === 0 || buffer.length > ID_BYTES_MAX) throw new MetaRecordDamageError(`it is ${buffer.length} bytes where an id takes 1 to ${ID_BYTES_MAX}`);
  try {
    return strictUtf8.decode(buffer);
  } catch {
    throw new MetaRecordDamageError('it is not UTF-8 text');
  }
}

// Which keys a prefix covers is part of the wire contract (deletePrefix, watch prefixes).
export { prefixEnd } from '../api/index.js';
