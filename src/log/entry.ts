/**
 * Log entries: their canonical binary encoding, their hash, and the one function that verifies an entry against its
 * predecessor. Every crossing (before a write to disk, after a read from disk, on receipt from the network) calls
 * `verifyNext`.
 *
 * ## Encoding, all integers big-endian
 *
 * ```
 * body (format 2, written since signed entries):
 *   u8   format           = 2
 *   u64  seq              gap-free from 1
 *   u64  timeMs           root wall clock when the entry was committed
 *   u32  opCount
 *   op * opCount:
 *     u8 type = 1 (put)          u16 keyLength, key bytes, u32 valueLength, value bytes
 *     u8 type = 2 (delete)       u16 keyLength, key bytes
 *     u8 type = 3 (deleteRange)  u16 startLength, start bytes, u16 endLength, end bytes
 *                                deletes every key k with start <= k < end; endLength 0 means "to the end"
 *   u32  runCount         who wrote the ops: runs of consecutive ops with one author, in op order
 *   run * runCount:       u32 opCount (>= 1) | u8 authorLength | author bytes (UTF-8; length 0: not recorded)
 *                         the runs' opCounts sum to the entry's opCount (runCount 0: no author recorded at all)
 * record = body || u8 signatureLength (0 or 64) || signature || prevHash (32 bytes) || hash (32 bytes)
 * hash   = SHA-256(prevHash || body)
 * signature = Ed25519 by the root over "mercury entry v1\0" || hash (src/trust/), outside the hash
 *
 * body (format 1, entries written before): the same up to the ops, with no runs;
 * record = body || prevHash || hash (no signature). Still decoded, never written.
 * ```
 *
 * The first entry's prevHash is 32 zero bytes (`GENESIS_HASH`). Because every hash covers the previous one, equal head
 * hashes at equal seqs prove two nodes hold the same history, and a flipped bit anywhere in a record is caught either by
 * the hash of its own entry or by the chain link of the next. The hash stays the record's last 32 bytes in both
 * formats (the store reads it there).
 *
 * The signature is outside the hash on purpose: it signs the hash, so it can only be made once the hash is known, and
 * a valid signature on entry n vouches for every entry up to n through the chain (a receiver of a batch checks the
 * last one's, docs/decisions.md). Whoever relays a record can strip or replace its signature; that is why a receiver
 * that trusts a key checks it, and why the chain never depends on it.
 *
 * The encoding is canonical: one entry has exactly one encoding, so the hash is a function of the entry's content.
 * Decoding rejects trailing bytes, unknown op types and truncated fields.
 */
import { createHash } from 'node:crypto';
import type { TxnOp } from '../api/index.js';
import { KEY_BYTES_MAX } from '../limits.js';

/** The format every new entry is written in; format 1 records (no authors, no signature) still decode. */
export const ENTRY_FORMAT = 2;
export const HASH_BYTES = 32;
export const SIGNATURE_BYTES = 64;
/** Bytes of UTF-8 an author name takes at most (a token name or a certificate subject; u8 length on disk). */
export const AUTHOR_BYTES_MAX = 255;
export const GENESIS_HASH: Buffer = Buffer.alloc(HASH_BYTES);

export const OpType = { put: 1, delete: 2, deleteRange: 3 } as const;

/** An op of an entry is an op of the transaction that made it (the wire contract, src/api/txn.ts). */
export type Op = TxnOp;

/** `opCount` consecutive ops written by `author` ('' when the writer was not recorded). */
export interface AuthorRun {
  readonly author: string;
  readonly opCount: number;
}

export interface EntryBody {
  readonly seq: number;
  readonly timeMs: number;
  readonly ops: readonly Op[];
  /** Who wrote the ops, as runs in op order; empty when nobody was recorded (and always for format 1 entries). */
  readonly authors?: readonly AuthorRun[];
}

export interface Entry extends EntryBody {
  readonly prevHash: Buffer;
  readonly hash: Buffer;
  /** The root's Ed25519 signature of `hash`, as carried in the record; unchecked here (src/trust/ checks it). */
  readonly signature?: Buffer;
}

/** An entry together with its encoded record (what the log stores and the wire carries). */
export interface EncodedEntry {
  readonly entry: Entry;
  readonly record: Buffer;
}

const HEADER_BYTES = 1 + 8 + 8 + 4;
const RUN_BYTES_MIN = 4 + 1;
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

/** Bytes an entry's author runs take in the body. */
function authorsEncodedBytes(authors: readonly AuthorRun[]): number {
  let bytes = 4;
  for (const run of authors) bytes += RUN_BYTES_MIN + Buffer.byteLength(run.author, 'utf8');
  return bytes;
}

function encodeBody(body: EntryBody, trailerBytes: number): { buffer: Buffer; bodyBytes: number } {
  const authors = body.authors ?? [];
  let bodyBytes = HEADER_BYTES + authorsEncodedBytes(authors);
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
  offset = buffer.writeUInt32BE(authors.length, offset);
  let runOps = 0;
  for (const run of authors) {
    const name = Buffer.from(run.author, 'utf8');
    if (name.length > AUTHOR_BYTES_MAX) throw new RangeError(`author of ${name.length} bytes exceeds ${AUTHOR_BYTES_MAX}`);
    if (run.opCount < 1) throw new RangeError('an author run covers at least one op');
    runOps += run.opCount;
    offset = buffer.writeUInt32BE(run.opCount, offset);
    offset = buffer.writeUInt8(name.length, offset);
    offset += name.copy(buffer, offset);
  }
  if (authors.length > 0 && runOps !== body.ops.length) throw new RangeError(`author runs cover ${runOps} ops of ${body.ops.length}`);
  return { buffer, bodyBytes };
}

function hashOf(prevHash: Buffer, body: Buffer): Buffer {
  return createHash('sha256').update(prevHash).update(body).digest();
}

/**
 * Seals a body onto the chain: computes its hash, its signature (when `sign` is given: the root's signer, which
 * returns the 64-byte signature of a hash) and its record.
 */
export function sealEntry(body: EntryBody, prevHash: Buffer, sign?: (hash: Buffer) => Buffer): EncodedEntry {
  if (prevHash.length !== HASH_BYTES) throw new RangeError('prevHash must be 32 bytes');
  const signatureBytes = sign === undefined ? 0 : SIGNATURE_BYTES;
  const { buffer, bodyBytes } = encodeBody(body, 1 + signatureBytes + 2 * HASH_BYTES);
  const hash = hashOf(prevHash, buffer.subarray(0, bodyBytes));
  let offset = buffer.writeUInt8(signatureBytes, bodyBytes);
  let signature: Buffer | undefined;
  if (sign !== undefined) {
    signature = sign(hash);
    if (signature.length !== SIGNATURE_BYTES) throw new RangeError(`signature of ${signature.length} bytes`);
    offset += signature.copy(buffer, offset);
  }
  offset += prevHash.copy(buffer, offset);
  hash.copy(buffer, offset);
  const authors = body.authors !== undefined && body.authors.length > 0 ? body.authors : undefined;
  const entry: Entry = { seq: body.seq, timeMs: body.timeMs, ops: body.ops, prevHash, hash, ...(authors && { authors }), ...(signature && { signature }) };
  return { entry, record: buffer };
}

/**
 * The same record with another signature (or none): what a relay can do to any record without breaking its hash.
 * Tests forge with it; nothing in the node calls it.
 */
export function resignRecord(record: Buffer, signature: Buffer | undefined): Buffer {
  const { bodyBytes } = decodeLayout(record);
  if (signature !== undefined && signature.length !== SIGNATURE_BYTES) throw new RangeError(`signature of ${signature.length} bytes`);
  const signatureBytes = signature?.length ?? 0;
  const out = Buffer.allocUnsafe(bodyBytes + 1 + signatureBytes + 2 * HASH_BYTES);
  record.copy(out, 0, 0, bodyBytes);
  let offset = out.writeUInt8(signatureBytes, bodyBytes);
  if (signature !== undefined) offset += signature.copy(out, offset);
  record.copy(out, offset, record.length - 2 * HASH_BYTES);
  return out;
}

interface DecodedRecord {
  readonly entry: Entry;
  /** Bytes of the body (what the hash covers after prevHash). */
  readonly bodyBytes: number;
}

/**
 * Decodes a record. Checks structure only (lengths, op types, no trailing bytes): chain and hash are checked by
 * `verifyNext`, because only the caller knows the predecessor. Ops reference the record's memory, so the record must
 * not be reused afterwards.
 */
export function decodeEntry(record: Buffer): Entry {
  return decodeLayout(record).entry;
}

function decodeLayout(record: Buffer): DecodedRecord {
  if (record.length < HEADER_BYTES + 2 * HASH_BYTES) throw new EntryDecodeError(`record of ${record.length} bytes is shorter than the minimum`);
  const format = record.readUInt8(0);
  if (format !== 1 && format !== ENTRY_FORMAT) throw new EntryDecodeError(`unknown entry format ${format}`);
  const seq = readSafeU64(record, 1, 'seq');
  const timeMs = readSafeU64(record, 9, 'timeMs');
  const opCount = record.readUInt32BE(17);
  // Format 1 ends its body where the hashes begin; format 2 is read forward (runs, then the signature).
  let limit = format === 1 ? record.length - 2 * HASH_BYTES : record.length - 2 * HASH_BYTES - 1 - 4;
  // Each op takes at least 4 bytes (a delete of a 1-byte key): reject impossible counts before allocating for them.
  if (opCount > (limit - HEADER_BYTES) / OP_BYTES_MIN) throw new EntryDecodeError(`op count ${opCount} does not fit the record`);
  let offset = HEADER_BYTES;
  // Fields are read where they lie: a view is made only of the bytes an op keeps (keys, values), and a field's name
  // becomes text only in an error (a replica decodes every op it applies).
  const need = (length: number, what: string, suffix = ''): void => {
    if (offset + length > limit) throw new EntryDecodeError(`${what}${suffix} runs past the end of the body`);
  };
  const take = (length: number, what: string): Buffer => {
    need(length, what);
    const bytes = record.subarray(offset, offset + length);
    offset += length;
    return bytes;
  };
  const uint = (bytes: 1 | 2 | 4, what: string, suffix = ''): number => {
    need(bytes, what, suffix);
    const value = bytes === 1 ? record[offset]! : bytes === 2 ? record.readUInt16BE(offset) : record.readUInt32BE(offset);
    offset += bytes;
    return value;
  };
  const takeU16Bytes = (what: string): Buffer => take(uint(2, what, ' length'), what);
  // Keys are checked here as the root checks them, so that a faulty upstream is a typed error, not an LMDB failure.
  const takeKey = (what: string, emptyAllowed = false): Buffer => {
    const key = takeU16Bytes(what);
    if ((key.length === 0 && !emptyAllowed) || key.length > KEY_BYTES_MAX)
      throw new EntryDecodeError(`${what} of ${key.length} bytes at op ${ops.length} is outside 1..${KEY_BYTES_MAX}`);
    return key;
  };
  const ops: Op[] = [];
  for (let i = 0; i < opCount; i++) {
    const type = uint(1, 'op type');
    if (type === OpType.put) {
      const key = takeKey('key');
      const value = take(uint(4, 'value length'), 'value');
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
  const bodyEnd = record.length - 2 * HASH_BYTES;
  if (format === 1) {
    if (offset !== bodyEnd) throw new EntryDecodeError(`${bodyEnd - offset} trailing bytes after the last op`);
    return { entry: { seq, timeMs, ops, prevHash: record.subarray(bodyEnd, bodyEnd + HASH_BYTES), hash: record.subarray(bodyEnd + HASH_BYTES) }, bodyBytes: bodyEnd };
  }
  limit += 4;
  const runCount = uint(4, 'author run count');
  if (runCount > opCount) throw new EntryDecodeError(`${runCount} author runs for ${opCount} ops`);
  const authors: AuthorRun[] = [];
  let runOps = 0;
  for (let i = 0; i < runCount; i++) {
    const count = uint(4, 'author run op count');
    if (count < 1 || count > opCount - runOps) throw new EntryDecodeError(`author run ${i} covers ${count} ops, ${opCount - runOps} remain`);
    runOps += count;
    const name = take(uint(1, 'author length'), 'author');
    authors.push({ author: decodeUtf8(name, 'author'), opCount: count });
  }
  if (runCount > 0 && runOps !== opCount) throw new EntryDecodeError(`author runs cover ${runOps} of ${opCount} ops`);
  const bodyBytes = offset;
  limit += 1;
  const signatureBytes = uint(1, 'signature length');
  if (signatureBytes !== 0 && signatureBytes !== SIGNATURE_BYTES) throw new EntryDecodeError(`signature of ${signatureBytes} bytes`);
  limit = bodyEnd;
  const signature = signatureBytes === 0 ? undefined : take(signatureBytes, 'signature');
  if (offset !== bodyEnd) throw new EntryDecodeError(`${bodyEnd - offset} trailing bytes after the signature`);
  const entry: Entry = {
    seq,
    timeMs,
    ops,
    prevHash: record.subarray(bodyEnd, bodyEnd + HASH_BYTES),
    hash: record.subarray(bodyEnd + HASH_BYTES),
    ...(authors.length > 0 && { authors }),
    ...(signature && { signature }),
  };
  return { entry, bodyBytes };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(bytes: Buffer, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new EntryDecodeError(`${what} is not valid UTF-8`);
  }
}

/** The author of each op of an entry, in op order (undefined where none was recorded). */
export function opAuthors(entry: EntryBody): (string | undefined)[] {
  const authors: (string | undefined)[] = [];
  for (const run of entry.authors ?? []) for (let i = 0; i < run.opCount; i++) authors.push(run.author === '' ? undefined : run.author);
  while (authors.length < entry.ops.length) authors.push(undefined);
  return authors;
}

/** Runs of consecutive equal authors for `ops` ops, from one author per op (empty when none is recorded). */
export function authorRuns(perOp: readonly (string | undefined)[]): AuthorRun[] {
  if (perOp.every((author) => author === undefined)) return [];
  const runs: { author: string; opCount: number }[] = [];
  for (const author of perOp) {
    const name = author ?? '';
    const last = runs[runs.length - 1];
    if (last !== undefined && last.author === name) last.opCount++;
    else runs.push({ author: name, opCount: 1 });
  }
  return runs;
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
  const { entry, bodyBytes } = decodeLayout(record);
  if (entry.seq !== head.seq + 1) throw new ChainError(`expected seq ${head.seq + 1}, got ${entry.seq}`);
  if (!entry.prevHash.equals(head.hash)) throw new ChainError(`entry ${entry.seq} does not link to the hash of entry ${head.seq}`);
  const body = record.subarray(0, bodyBytes);
  if (!hashOf(entry.prevHash, body).equals(entry.hash)) throw new ChainError(`entry ${entry.seq} hash does not match its content`);
  return entry;
}

/** Verifies a record without knowing its predecessor (the first retained entry of a trimmed log). */
export function verifySelf(record: Buffer): Entry {
  const { entry, bodyBytes } = decodeLayout(record);
  const body = record.subarray(0, bodyBytes);
  if (!hashOf(entry.prevHash, body).equals(entry.hash)) throw new ChainError(`entry ${entry.seq} hash does not match its content`);
  return entry;
}
