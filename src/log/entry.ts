/**
 * Log entries: their canonical binary encoding, their hash, and the one function that verifies an entry against its
 * predecessor. Every crossing (before a write to disk, after a read from disk, on receipt from the network) calls
 * `verifyNext`.
 *
 * ## Encoding (version 1), all integers big-endian
 *
 * ```
 * body:
 *   u8   format           = 1
 *   u64  seq              gap-free from 1
 *   u64  timeMs           root wall clock when the entry was committed
 *   u32  opCount
 *   op * opCount:
 *     u8 type = 1 (put)          u16 keyLength, key bytes, u32 valueLength, value bytes
 *     u8 type = 2 (delete)       u16 keyLength, key bytes
 *     u8 type = 3 (deleteRange)  u16 startLength, start bytes, u16 endLength, end bytes
 *                                deletes every key k with start <= k < end; endLength 0 means "to the end"
 * record = body || prevHash (32 bytes) || hash (32 bytes)
 * hash   = SHA-256(prevHash || body)
 * ```
 *
 * The first entry's prevHash is 32 zero bytes (`GENESIS_HASH`). Because every hash covers the previous one, equal head
 * hashes at equal seqs prove two nodes hold the same history, and a flipped bit anywhere in a record is caught either by
 * the hash of its own entry or by the chain link of the next.
 *
 * The encoding is canonical: one entry has exactly one encoding, so the hash is a function of the entry's content.
 * Decoding rejects trailing bytes, unknown op types and truncated fields.
 */
import { createHash } from 'node:crypto';
import type { TxnOp } from '../api/index.js';
import { KEY_BYTES_MAX } from '../limits.js';

export const ENTRY_FORMAT = 1;
export const HASH_BYTES = 32;
export const GENESIS_HASH: Buffer = Buffer.alloc(HASH_BYTES);

export const OpType = { put: 1, delete: 2, deleteRange: 3 } as const;

/** An op of an entry is an op of the transaction that made it (the wire contract, src/api/txn.ts). */
export type Op = TxnOp;

export interface EntryBody {
  readonly seq: number;
  readonly timeMs: number;
  readonly ops: readonly Op[];
}

export interface Entry extends EntryBody {
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

/** An entry together with its encoded record (what the log stores and the wire carries). */
export interface EncodedEntry {
  readonly entry: Entry;
  readonly record: Buffer;
}

const HEADER_BYTES = 1 + 8 + 8 + 4;
const OP_BYTES_MIN = 1 + 2 + 1;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

export class EntryDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EntryDecodeError';
  }
}

export class ChainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChainError';
  }
}

/** Bytes one op takes in the body encoding. */
export function opEncodedBytes(op: Op): number {
  switch (op.type) {
    case 'put':
      return 1 + 2 + op.key.length + 4 + op.value.length;
    case 'delete':
      return 1 + 2 + op.key.length;
    case 'deleteRange':
      return 1 + 2 + op.start.length + 2 + op.end.length;
  }
}

function encodeBody(body: EntryBody, trailerBytes: number): { buffer: Buffer; bodyBytes: number } {
  let bodyBytes = HEADER_BYTES;
  for (const op of body.ops) bodyBytes += opEncodedBytes(op);
  const buffer = Buffer.allocUnsafe(bodyBytes + trailerBytes);
  buffer.writeUInt8(ENTRY_FORMAT, 0);
  buffer.writeBigUInt64BE(BigInt(body.seq), 1);
  buffer.writeBigUInt64BE(BigInt(body.timeMs), 9);
  buffer.writeUInt32BE(body.ops.length, 17);
  let offset = HEADER_BYTES;
  const writeBytes16 = (bytes: Buffer): void => {
    if (bytes.length > U16_MAX) throw new RangeError(`field of ${bytes.length} bytes exceeds u16 length`);
    offset = buffer.writeUInt16BE(bytes.length, offset);
    offset += bytes.copy(buffer, offset);
  };
  for (const op of body.ops) {
    offset = buffer.writeUInt8(OpType[op.type], offset);
    if (op.type === 'deleteRange') {
      writeBytes16(op.start);
      writeBytes16(op.end);
    } else {
      writeBytes16(op.key);
      if (op.type === 'put') {
        if (op.value.length > U32_MAX) throw new RangeError('value exceeds u32 length');
        offset = buffer.writeUInt32BE(op.value.length, offset);
        offset += op.value.copy(buffer, offset);
      }
    }
  }
  return { buffer, bodyBytes };
}

function hashOf(prevHash: Buffer, body: Buffer): Buffer {
  return createHash('sha256').update(prevHash).update(body).digest();
}

/** Seals a body onto the chain: computes its hash and its record. */
export function sealEntry(body: EntryBody, prevHash: Buffer): EncodedEntry {
  if (prevHash.length !== HASH_BYTES) throw new RangeError('prevHash must be 32 bytes');
  const { buffer, bodyBytes } = encodeBody(body, 2 * HASH_BYTES);
  const hash = hashOf(prevHash, buffer.subarray(0, bodyBytes));
  prevHash.copy(buffer, bodyBytes);
  hash.copy(buffer, bodyBytes + HASH_BYTES);
  return { entry: { seq: body.seq, timeMs: body.timeMs, ops: body.ops, prevHash, hash }, record: buffer };
}

/**
 * Decodes a record. Checks structure only (lengths, op types, no trailing bytes): chain and hash are checked by
 * `verifyNext`, because only the caller knows the predecessor. Ops reference the record's memory, so the record must
 * not be reused afterwards.
 */
export function decodeEntry(record: Buffer): Entry {
  if (record.length < HEADER_BYTES + 2 * HASH_BYTES) throw new EntryDecodeError(`record of ${record.length} bytes is shorter than the minimum`);
  const format = record.readUInt8(0);
  if (format !== ENTRY_FORMAT) throw new EntryDecodeError(`unknown entry format ${format}`);
  const seq = readSafeU64(record, 1, 'seq');
  const timeMs = readSafeU64(record, 9, 'timeMs');
  const opCount = record.readUInt32BE(17);
  const bodyEnd = record.length - 2 * HASH_BYTES;
  // Each op takes at least 4 bytes (a delete of a 1-byte key): reject impossible counts before allocating for them.
  if (opCount > (bodyEnd - HEADER_BYTES) / OP_BYTES_MIN) throw new EntryDecodeError(`op count ${opCount} does not fit the record`);
  let offset = HEADER_BYTES;
  const take = (length: number, what: string): Buffer => {
    if (offset + length > bodyEnd) throw new EntryDecodeError(`${what} runs past the end of the body`);
    const bytes = record.subarray(offset, offset + length);
    offset += length;
    return bytes;
  };
  const takeU16Bytes = (what: string): Buffer => take(take(2, `${what} length`).readUInt16BE(0), what);
  // Keys are checked here as the root checks them, so that a faulty upstream is a typed error, not an LMDB failure.
  const takeKey = (what: string, emptyAllowed = false): Buffer => {
    const key = takeU16Bytes(what);
    if ((key.length === 0 && !emptyAllowed) || key.length > KEY_BYTES_MAX)
      throw new EntryDecodeError(`${what} of ${key.length} bytes at op ${ops.length} is outside 1..${KEY_BYTES_MAX}`);
    return key;
  };
  const ops: Op[] = [];
  for (let i = 0; i < opCount; i++) {
    const type = take(1, 'op type').readUInt8(0);
    if (type === OpType.put) {
      const key = takeKey('key');
      const value = take(take(4, 'value length').readUInt32BE(0), 'value');
      ops.push({ type: 'put', key, value });
    } else if (type === OpType.delete) {
      ops.push({ type: 'delete', key: takeKey('key') });
    } else if (type === OpType.deleteRange) {
      const start = takeKey('range start');
      ops.push({ type: 'deleteRange', start, end: takeKey('range end', true) });
    } else {
      throw new EntryDecodeError(`unknown op type ${type} at op ${i}`);
    }
  }
  if (offset !== bodyEnd) throw new EntryDecodeError(`${bodyEnd - offset} trailing bytes after the last op`);
  return {
    seq,
    timeMs,
    ops,
    prevHash: record.subarray(bodyEnd, bodyEnd + HASH_BYTES),
    hash: record.subarray(bodyEnd + HASH_BYTES),
  };
}

function readSafeU64(buffer: Buffer, offset: number, what: string): number {
  const value = buffer.readBigUInt64BE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new EntryDecodeError(`${what} ${value} exceeds 2^53`);
  return Number(value);
}

/** The chain position an entry must follow: the predecessor's seq and hash (seq 0 and GENESIS_HASH for the first). */
export interface ChainHead {
  readonly seq: number;
  readonly hash: Buffer;
}

export const GENESIS_HEAD: ChainHead = Object.freeze({ seq: 0, hash: GENESIS_HASH });

/**
 * Verifies that `record` is a well-formed entry that directly follows `head`: seq exactly head.seq + 1, prevHash equal
 * to head.hash, and hash equal to SHA-256(prevHash || body). Returns the decoded entry; throws `ChainError` (or
 * `EntryDecodeError` for a malformed record) otherwise. This is the one verification function of the project.
 */
export function verifyNext(head: ChainHead, record: Buffer): Entry {
  const entry = decodeEntry(record);
  if (entry.seq !== head.seq + 1) throw new ChainError(`expected seq ${head.seq + 1}, got ${entry.seq}`);
  if (!entry.prevHash.equals(head.hash)) throw new ChainError(`entry ${entry.seq} does not link to the hash of entry ${head.seq}`);
  const body = record.subarray(0, record.length - 2 * HASH_BYTES);
  if (!hashOf(entry.prevHash, body).equals(entry.hash)) throw new ChainError(`entry ${entry.seq} hash does not match its content`);
  return entry;
}

/** Verifies a record without knowing its predecessor (the first retained entry of a trimmed log). */
export function verifySelf(record: Buffer): Entry {
  const entry = decodeEntry(record);
  const body = record.subarray(0, record.length - 2 * HASH_BYTES);
  if (!hashOf(entry.prevHash, body).equals(entry.hash)) throw new ChainError(`entry ${entry.seq} hash does not match its content`);
  return entry;
}
